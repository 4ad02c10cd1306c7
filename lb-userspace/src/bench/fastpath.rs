//! Section 1: the fast path through BPF_PROG_TEST_RUN, per fixture case, against a bare
//! XDP_DROP and a bare "swap MACs, XDP_TX" program measured in the same rounds.
//!
//! A test run repeats the program on one buffer without restoring it, so every case runs
//! under the bench wrapper (`xlb_bench_balance`: restore the original frame, then
//! `balance()`), and the restore-only program's time is subtracted. Counters read around
//! every measured run prove that every iteration took the intended path.
use std::time::Instant;

use anyhow::{Context, Result, bail};
use aya::{
    Ebpf,
    maps::{Array, MapData},
    programs::{TestRun, TestRunOptions},
};
use lb_common::{
    bench::{self as names, BenchFrame, FRAME_MAX},
    counter,
};
use serde::{Deserialize, Serialize};

use super::median;
use crate::{
    fixtures::{self, Case, Expected, Frame, RS1_IP, RS2_IP, VIP, XDP_DROP, XDP_PASS},
    loader,
    maps::Maps,
    ops::{self, Proto, Scheduler, Service},
};

/// Schedulers the bench asks for, by their ipvsadm names; the ones `ops` does not know
/// yet are reported as not implemented.
pub const REQUESTED_SCHEDULERS: [&str; 7] = ["rr", "wrr", "lc", "wlc", "sh", "dh", "mh"];
/// First port of the bench's per-scheduler services (VIP:port → rs1, rs2).
const SCHEDULER_PORT_BASE: u16 = 9100;
/// Iterations of a new-flow run at most: the connection table goes from empty to this
/// many flows, a fifth of its capacity, so the LRU never has to evict.
pub const NEW_FLOW_ITERATIONS: u32 = 50_000;
/// Source addresses of the flows the wrapper makes up start here (11.0.0.0), away from
/// the fixtures' client.
pub const NEW_FLOW_BASE: u32 = 0x0b00_0000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PathKind {
    /// Every iteration is a flow the connection table has never seen: the scheduler runs.
    NewFlow,
    /// Every iteration belongs to a flow already in the connection table.
    Established,
    /// The frame is passed to the kernel.
    Passed,
    /// The frame is dropped.
    Dropped,
}

impl PathKind {
    pub const fn label(self) -> &'static str {
        match self {
            PathKind::NewFlow => "new flow",
            PathKind::Established => "established flow",
            PathKind::Passed => "passed",
            PathKind::Dropped => "dropped",
        }
    }
}

/// What the counters showed over every measured run of a row.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Proof {
    /// The verdict counter the case must move (lb_common::counter name).
    pub counter: String,
    /// Iterations measured (repeat × rounds).
    pub iterations: u64,
    /// How much `counter` moved.
    pub counted: u64,
    /// Movement of every other verdict counter.
    pub other_counters: u64,
    /// New connections scheduled (per-real `conns`), and how many the path must schedule.
    pub new_conns: u64,
    pub expected_new_conns: u64,
    pub restore_failures: u64,
    /// The last iteration's verdict and output frame were the fixture's.
    pub output_matches: bool,
}

impl Proof {
    pub fn holds(&self) -> bool {
        self.counted == self.iterations
            && self.other_counters == 0
            && self.new_conns == self.expected_new_conns
            && self.restore_failures == 0
            && self.output_matches
    }

    /// Adds another run's counts (the first run sets the counter's name).
    pub fn add(&mut self, run: &Proof) {
        self.counter.clone_from(&run.counter);
        self.iterations += run.iterations;
        self.counted += run.counted;
        self.other_counters += run.other_counters;
        self.new_conns += run.new_conns;
        self.expected_new_conns += run.expected_new_conns;
        self.restore_failures += run.restore_failures;
        self.output_matches &= run.output_matches;
    }

    /// Nothing counted yet, nothing contradicted.
    pub fn empty() -> Self {
        Self { output_matches: true, ..Default::default() }
    }

    pub fn summary(&self) -> String {
        let mark = if self.holds() { "✓" } else { "✗" };
        format!(
            "{mark} {} +{}/{}, conns +{}/{}, other +{}, restore failures {}",
            self.counter, self.counted, self.iterations, self.new_conns, self.expected_new_conns, self.other_counters, self.restore_failures
        )
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Row {
    /// The fixture case (or bench service) measured.
    pub case: String,
    pub path: PathKind,
    /// Verdict counter name, for grouping (tx_dr, pass_not_vip, …).
    pub counter: String,
    /// IPv6 frame (by ethertype).
    pub ipv6: bool,
    /// Cost of the program alone: wrapper − restore-only + bare XDP_DROP (the test run's
    /// own per-iteration cost, which a program that does nothing pays too). Median of rounds.
    pub ns_per_packet: f64,
    /// balance() over the restore-only program: wrapper − restore-only. Median of rounds.
    pub added_ns: f64,
    /// Per-round ratios to the bare programs, median of rounds.
    pub vs_swap_tx: f64,
    pub vs_drop: f64,
    pub wrapper_ns: f64,
    pub restore_ns: f64,
    pub proof: Proof,
}

/// A requested row of the issue and what covers it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Coverage {
    pub requested: String,
    /// Index into `rows`, or None: not implemented yet.
    pub row: Option<usize>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FastpathResults {
    pub repeat: u32,
    pub rounds: usize,
    pub bare_drop_ns: f64,
    pub bare_swap_tx_ns: f64,
    pub rows: Vec<Row>,
    pub coverage: Vec<Coverage>,
}

#[derive(Clone, Copy, Debug)]
pub struct FastpathOptions {
    /// Iterations per test run.
    pub repeat: u32,
    pub rounds: usize,
}

/// Which 4-byte field the wrapper varies to make every iteration a new flow.
#[derive(Clone, Copy, Debug, Default)]
pub struct Vary {
    pub offset: u32,
    pub base: u32,
    /// Distinct values (0: all different).
    pub count: u32,
}

/// Offset of the low 32 bits of the source address (IPv4 or IPv6 after Ethernet), or
/// None for a frame of another kind.
pub fn source_address_offset(frame: &[u8]) -> Option<u32> {
    match frame.get(12..14)? {
        [0x08, 0x00] => Some(14 + 12),
        [0x86, 0xdd] => Some(14 + 8 + 12),
        _ => None,
    }
}

/// One round's times (ns per iteration) for one measured thing.
#[derive(Clone, Copy, Debug)]
pub struct RoundTimes {
    pub wrapper: f64,
    pub restore: f64,
    /// The bare XDP_DROP program: the test run's own cost per iteration.
    pub drop: f64,
    /// The bare swap-MACs-XDP_TX program.
    pub swap_tx: f64,
}

impl RoundTimes {
    /// The program alone: the wrapper without its restoring, plus what any program
    /// (a bare XDP_DROP) costs the test run.
    pub fn ns_per_packet(&self) -> f64 {
        self.wrapper - self.restore + self.drop
    }

    /// Median over rounds of `f`.
    pub fn median_of(rounds: &[RoundTimes], f: impl Fn(&RoundTimes) -> f64) -> f64 {
        median(&rounds.iter().map(f).collect::<Vec<_>>())
    }
}

/// One test run: verdict, mean kernel-timed ns per iteration, output frame.
pub struct Run {
    pub verdict: u32,
    pub ns: f64,
    pub output: Vec<u8>,
}

/// Verdict counters and per-real new connections, summed over CPUs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counts {
    pub counters: Vec<u64>,
    pub conns: u64,
}

/// A loaded object with every bench program, the fixture services, and one service
/// (rs1, rs2) per implemented scheduler.
pub struct Harness {
    ebpf: Ebpf,
    pub maps: Maps,
    frame: Array<MapData, BenchFrame>,
    /// Kept open: the kernel empties a program array when its last user fd closes.
    _balancer_slot: aya::maps::ProgramArray<MapData>,
    /// (scheduler name, its service) for each requested scheduler ops implements.
    pub scheduler_services: Vec<(&'static str, Service)>,
}

impl Harness {
    pub fn load() -> Result<Self> {
        crate::netns::require_root("the fast-path bench (BPF_PROG_TEST_RUN)")?;
        let mut ebpf = loader::load()?;
        for program in [names::DROP_PROGRAM, names::SWAP_TX_PROGRAM, names::RESTORE_PROGRAM, names::BALANCE_PROGRAM] {
            loader::xdp(&mut ebpf, program)?.load().with_context(|| format!("loading {program}"))?;
        }
        let mut maps = Maps::take(&mut ebpf, None)?;
        let frame = ebpf.take_map(names::FRAME_MAP).context("the object has no bench frame map")?.try_into()?;
        let mut slot: aya::maps::ProgramArray<MapData> =
            ebpf.take_map(names::BALANCER_SLOT_MAP).context("the object has no bench balancer slot")?.try_into()?;
        let balancer = loader::xdp(&mut ebpf, loader::BALANCE_PROGRAM)?.fd()?.try_clone()?;
        slot.set(0, &balancer, 0)?;
        fixtures::install_services(&mut maps)?;
        let mut scheduler_services = Vec::new();
        for (i, name) in REQUESTED_SCHEDULERS.into_iter().enumerate() {
            let Ok(scheduler) = name.parse::<Scheduler>() else { continue };
            let svc = Service { proto: Proto::Tcp, vip: VIP.into(), port: SCHEDULER_PORT_BASE + i as u16 };
            let id = ops::ServiceId::Addr(svc);
            ops::add_service(&mut maps, id, ops::ServiceOptions { scheduler, ..Default::default() })?;
            let one = ops::RealOptions::default();
            ops::add_real(&mut maps, id, RS1_IP, one, fixtures::RS1)?;
            ops::add_real(&mut maps, id, RS2_IP, one, fixtures::RS2)?;
            scheduler_services.push((name, svc));
        }
        let mut harness = Self { ebpf, maps, frame, _balancer_slot: slot, scheduler_services };
        harness.replay_fixtures()?;
        Ok(harness)
    }

    /// Runs `program` `repeat` times on `input`, the wrapper restoring it as `vary` says.
    pub fn run(&mut self, program: &str, input: &[u8], vary: Vary, repeat: u32) -> Result<Run> {
        if input.len() > FRAME_MAX {
            bail!("a {}-byte frame is longer than the bench wrapper restores ({FRAME_MAX})", input.len());
        }
        let mut frame = BenchFrame { len: input.len() as u32, vary_offset: vary.offset, vary_base: vary.base, vary_count: vary.count, ..Default::default() };
        frame.bytes[..input.len()].copy_from_slice(input);
        self.frame.set(0, frame, 0)?;
        let prog = loader::xdp(&mut self.ebpf, program)?;
        // Room for a path that encapsulates.
        let mut output = vec![0u8; input.len() + FRAME_MAX];
        let opts = TestRunOptions { data_in: Some(input), data_out: Some(&mut output), repeat, ..Default::default() };
        let start = Instant::now();
        let result = prog.test_run(opts).with_context(|| format!("BPF_PROG_TEST_RUN of {program}"))?;
        let wall = start.elapsed().as_nanos() as f64 / repeat as f64;
        output.truncate(result.data_size_out as usize);
        Ok(Run { verdict: result.return_value, ns: per_iteration_ns(result.duration.as_nanos() as f64, wall), output })
    }

    pub fn restore_failures(&self) -> Result<u64> {
        Ok(self.frame.get(&0, 0)?.restore_failures as u64)
    }

    pub fn counts(&self) -> Result<Counts> {
        let counters = ops::counters(&self.maps)?.into_iter().map(|(_, v)| v).collect();
        let conns = ops::snapshot(&self.maps)?.iter().flat_map(|s| &s.reals).map(|r| r.conns).sum();
        Ok(Counts { counters, conns })
    }

    /// Empties the connection table.
    pub fn flush_conns(&mut self) -> Result<()> {
        let keys: Vec<_> = self.maps.conns.keys().collect::<Result<_, _>>()?;
        for key in keys {
            // An entry the LRU evicted meanwhile is gone anyway.
            let _ = self.maps.conns.remove(&key);
        }
        Ok(())
    }

    /// Runs the whole fixture table once, in order, through the balancer, as the
    /// fixture test does: the state later cases rely on (a NAT reply's connection, an
    /// established flow) is there afterwards. Every case must still pass.
    pub fn replay_fixtures(&mut self) -> Result<()> {
        for case in fixtures::all_cases() {
            let prog = loader::xdp(&mut self.ebpf, loader::BALANCE_PROGRAM)?;
            let mut output = vec![0u8; case.input.len() + FRAME_MAX];
            let opts = TestRunOptions { data_in: Some(&case.input), data_out: Some(&mut output), repeat: 1, ..Default::default() };
            let result = prog.test_run(opts)?;
            output.truncate(result.data_size_out as usize);
            if result.return_value != case.verdict || !output_is(&case.output, &case.input, &output) {
                bail!("fixture case `{}` fails (verdict {}); fix the fast path before benchmarking it", case.name, result.return_value);
            }
        }
        Ok(())
    }

    /// Runs the wrapper with the counters read around it: the run, and what the counters
    /// show about this run alone (its output frame is the caller's to check).
    pub fn measured(&mut self, input: &[u8], vary: Vary, repeat: u32, counter: u32, expect_new_conns: bool) -> Result<(Run, Proof)> {
        let before = self.counts()?;
        let failures_before = self.restore_failures()?;
        let run = self.run(names::BALANCE_PROGRAM, input, vary, repeat)?;
        let after = self.counts()?;
        let failures = self.restore_failures()? - failures_before;
        let moved: Vec<u64> = after.counters.iter().zip(&before.counters).map(|(a, b)| a - b).collect();
        let proof = Proof {
            counter: counter::NAMES.get(counter as usize).copied().unwrap_or("?").to_string(),
            iterations: repeat as u64,
            counted: moved.get(counter as usize).copied().unwrap_or(0),
            other_counters: moved.iter().enumerate().filter(|(i, _)| *i != counter as usize).map(|(_, m)| m).sum(),
            new_conns: after.conns - before.conns,
            expected_new_conns: if expect_new_conns { repeat as u64 } else { 0 },
            restore_failures: failures,
            output_matches: true,
        };
        Ok((run, proof))
    }
}

/// Nanoseconds per iteration from the kernel's figure (whole ns, rounded down, time the
/// CPU spent on other tasks left out) and the wall clock around the syscall (fractions,
/// but counts any preemption). The wall clock is taken when it agrees with the kernel's
/// figure, i.e. the run was not interrupted; otherwise the middle of the kernel's 1-ns step.
pub fn per_iteration_ns(kernel: f64, wall: f64) -> f64 {
    if wall >= kernel && wall < kernel + 1.0 { wall } else { kernel + 0.5 }
}

fn output_is(expected: &Expected, input: &[u8], output: &[u8]) -> bool {
    match expected {
        Expected::Unchanged => output == input,
        Expected::Frame(want) => output == want.as_slice(),
    }
}

/// One thing measured each round.
struct Item {
    case: String,
    path: PathKind,
    input: Vec<u8>,
    verdict: u32,
    counter: u32,
    vary: Vary,
    /// Exact output of the last iteration, when the frame is the same every iteration.
    output: Option<Expected>,
}

impl Item {
    fn from_case(case: &Case, path: PathKind) -> Self {
        let new_flow = path == PathKind::NewFlow;
        let vary = match source_address_offset(&case.input) {
            Some(offset) if new_flow => Vary { offset, base: NEW_FLOW_BASE, count: 0 },
            _ => Vary::default(),
        };
        Item {
            case: case.name.to_string(),
            path,
            input: case.input.clone(),
            verdict: case.verdict,
            counter: case.counter,
            vary,
            output: (!new_flow).then(|| case.output.clone()),
        }
    }
}

fn is_forwarded(case: &Case) -> bool {
    case.verdict != XDP_PASS && case.verdict != XDP_DROP
}

/// Builds the measured items: every fixture case (forwarded ones as established flows,
/// and as new flows when the path schedules them), and a new flow per scheduler.
fn items(h: &mut Harness, probe_repeat: u32) -> Result<Vec<Item>> {
    let mut items = Vec::new();
    for case in fixtures::all_cases() {
        if !is_forwarded(&case) {
            let path = if case.verdict == XDP_DROP { PathKind::Dropped } else { PathKind::Passed };
            items.push(Item::from_case(&case, path));
            continue;
        }
        items.push(Item::from_case(&case, PathKind::Established));
        // A reply (NAT) has no new-flow path: varying its source finds no connection.
        let new_flow = Item::from_case(&case, PathKind::NewFlow);
        if new_flow.vary.offset != 0 {
            let (run, proof) = h.measured(&new_flow.input, new_flow.vary, probe_repeat, new_flow.counter, true)?;
            h.flush_conns()?;
            h.replay_fixtures()?;
            if run.verdict == new_flow.verdict && proof.holds() {
                items.push(new_flow);
            }
        }
    }
    for (name, svc) in h.scheduler_services.clone() {
        let syn = Frame::tcp(svc.vip, svc.port, 40000).bytes();
        items.push(Item {
            case: format!("DR, scheduler {name}, 2 reals"),
            path: PathKind::NewFlow,
            vary: Vary { offset: source_address_offset(&syn).unwrap_or(0), base: NEW_FLOW_BASE, count: 0 },
            input: syn,
            verdict: fixtures::XDP_TX,
            counter: counter::TX_DR,
            output: None,
        });
    }
    Ok(items)
}

pub fn run(opts: FastpathOptions) -> Result<FastpathResults> {
    let mut h = Harness::load()?;
    let _pin = super::CpuPin::current()?;
    let items = items(&mut h, opts.repeat.min(1000))?;
    let syn = Frame::tcp(VIP, fixtures::WEB.port, 40000).bytes();
    let mut bare = Vec::new();
    // Per item: its times in every round, and its proof summed over the rounds.
    let mut rounds: Vec<Vec<RoundTimes>> = vec![Vec::new(); items.len()];
    let mut proofs: Vec<Proof> = vec![Proof::empty(); items.len()];
    for _ in 0..opts.rounds {
        let drop = h.run(names::DROP_PROGRAM, &syn, Vary::default(), opts.repeat)?.ns;
        let swap_tx = h.run(names::SWAP_TX_PROGRAM, &syn, Vary::default(), opts.repeat)?.ns;
        bare.push(RoundTimes { wrapper: 0.0, restore: 0.0, drop, swap_tx });
        for (i, item) in items.iter().enumerate() {
            let new_flow = item.path == PathKind::NewFlow;
            let repeat = if new_flow { opts.repeat.min(NEW_FLOW_ITERATIONS) } else { opts.repeat };
            let restore = h.run(names::RESTORE_PROGRAM, &item.input, item.vary, repeat)?.ns;
            let (run, mut proof) = h.measured(&item.input, item.vary, repeat, item.counter, new_flow)?;
            if new_flow {
                h.flush_conns()?;
                h.replay_fixtures()?;
            }
            proof.output_matches = run.verdict == item.verdict && item.output.as_ref().is_none_or(|e| output_is(e, &item.input, &run.output));
            proofs[i].add(&proof);
            rounds[i].push(RoundTimes { wrapper: run.ns, restore, drop, swap_tx });
        }
    }
    let rows: Vec<Row> = items
        .iter()
        .zip(rounds)
        .zip(proofs)
        .map(|((item, times), proof)| row(item, &times, proof))
        .collect();
    let coverage = coverage(&rows, &h.scheduler_services);
    Ok(FastpathResults {
        repeat: opts.repeat,
        rounds: opts.rounds,
        bare_drop_ns: RoundTimes::median_of(&bare, |t| t.drop),
        bare_swap_tx_ns: RoundTimes::median_of(&bare, |t| t.swap_tx),
        rows,
        coverage,
    })
}

fn row(item: &Item, rounds: &[RoundTimes], proof: Proof) -> Row {
    let pick = |f: fn(&RoundTimes) -> f64| RoundTimes::median_of(rounds, f);
    Row {
        case: item.case.clone(),
        path: item.path,
        counter: counter::NAMES.get(item.counter as usize).copied().unwrap_or("?").to_string(),
        ipv6: item.input.get(12..14) == Some(&[0x86, 0xdd]),
        ns_per_packet: pick(|t| t.ns_per_packet()),
        added_ns: pick(|t| t.wrapper - t.restore),
        vs_swap_tx: pick(|t| t.ns_per_packet() / t.swap_tx),
        vs_drop: pick(|t| t.ns_per_packet() / t.drop),
        wrapper_ns: pick(|t| t.wrapper),
        restore_ns: pick(|t| t.restore),
        proof,
    }
}

/// Maps the requested rows onto measured rows; what is not there yet is
/// reported as such instead of being faked.
fn coverage(rows: &[Row], schedulers: &[(&'static str, Service)]) -> Vec<Coverage> {
    let find = |pred: &dyn Fn(&Row) -> bool| rows.iter().position(pred);
    let forwarded_by = |r: &Row, method: &str| r.counter.starts_with("tx_") && r.counter.contains(method) && !r.ipv6;
    let mut out = vec![Coverage {
        requested: "DR, established flow".into(),
        row: find(&|r| forwarded_by(r, "dr") && r.path == PathKind::Established),
    }];
    for name in REQUESTED_SCHEDULERS {
        let implemented = schedulers.iter().any(|(n, _)| *n == name);
        out.push(Coverage {
            requested: format!("DR, new flow, scheduler {name}"),
            row: implemented.then(|| find(&|r| r.case == format!("DR, scheduler {name}, 2 reals"))).flatten(),
        });
    }
    let is_reply = |r: &Row| r.case.contains("reply");
    out.push(Coverage {
        requested: "NAT, inbound (new flow)".into(),
        row: find(&|r| forwarded_by(r, "nat") && !is_reply(r) && r.path == PathKind::NewFlow),
    });
    out.push(Coverage { requested: "NAT, reply".into(), row: find(&|r| forwarded_by(r, "nat") && is_reply(r)) });
    out.push(Coverage {
        requested: "TUN (IPIP), new flow".into(),
        row: find(&|r| (forwarded_by(r, "tun") || forwarded_by(r, "ipip")) && r.path == PathKind::NewFlow),
    });
    out.push(Coverage { requested: "IPv6, forwarded".into(), row: find(&|r| r.ipv6 && r.counter.starts_with("tx_")) });
    out.push(Coverage {
        requested: "non-VIP frame, passed".into(),
        row: find(&|r| r.counter == counter::NAMES[counter::PASS_NOT_VIP as usize] && r.path == PathKind::Passed),
    });
    out
}
