//! Section 1: the fast path through BPF_PROG_TEST_RUN, every path xlb forwards, passes or
//! drops, against a bare XDP_DROP, a bare "swap MACs, XDP_TX" program (the floor) and
//! Katran's `balancer_ingress` ([`super::katran`]), all measured in the same rounds.
//!
//! A test run repeats the program on one buffer without restoring it, so every case runs
//! under the bench wrapper (`xlb_bench_balance`: restore the original frame, then
//! tail-call the timed slot of its program array), and the restore-only program's time is
//! subtracted: ns/packet = wrapper − restore-only + bare XDP_DROP. The timed slot holds
//! xlb's `xlb_balance` for xlb's rows and Katran's `balancer_ingress` for Katran's; the
//! restore-only program makes the same one tail call, into a bare XDP_DROP, so the tail
//! call cancels out for both (checked each round with a bare XDP_DROP in the timed slot).
//! Counters read around every measured run prove that every
//! iteration took the intended path: xlb's verdict counters, per-real new connections and
//! connection entries; Katran's own `stats`, `reals_stats` and LRUs.
//!
//! Established rows time a packet of an ESTABLISHED connection entry: the handshake (the
//! client's SYN, the real's SYN-ACK where the director sees it, the client's ACK) is run
//! once before the rounds, then a data segment is timed; the entry must be ESTABLISHED
//! before and after every measured run, and no connection may be scheduled.
use std::{
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    time::Instant,
};

use anyhow::{Context, Result, bail};
use aya::{
    Ebpf,
    maps::{Array, MapData, ProgramArray},
    programs::{ProgramFd, TestRun, TestRunOptions},
};
use lb_common::{
    FlowKey, MAX_CONNS, addr,
    bench::{self as names, BenchFrame, FRAME_MAX},
    counter, tcp,
};
use serde::{Deserialize, Serialize};

use super::{
    katran::{self, Katran, KatranCounts},
    median,
};
use xlb_core::{
    loader,
    maps::Maps,
    ops::{self, Proto, Scheduler, Service},
};
use xlb_testkit::fixtures::{self, CLIENT_MAC, Case, DIP, DIP6, DIRECTOR_MAC, DIRECTOR_PRIVATE_MAC, ETH_P_8021AD, ETH_P_8021Q, Expected, Frame, PRIVATE_IFINDEX, PUBLIC_IFINDEX, RS1_IP, RS1_IP6, RS1_MAC, RS2_IP, RS2_MAC, VIP, VIP6, XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX};

/// Every scheduler ops knows, by its ipvsadm name (ipvsadm(8)); each gets a new-flow row.
pub const SCHEDULERS: [&str; 11] = ["rr", "wrr", "lc", "wlc", "sh", "dh", "mh", "sed", "nq", "fo", "ovf"];
/// First port of the bench's per-scheduler services (VIP:port → rs1, rs2).
const SCHEDULER_PORT_BASE: u16 = 9100;
/// Iterations of an xlb new-flow run at most: 100,000 as Katran's, but never more than a
/// quarter of the connection table, so its LRU never has to evict. The run's flows are
/// taken out of the table after it.
pub const NEW_FLOW_ITERATIONS: u32 = if MAX_CONNS / 4 < 100_000 { MAX_CONNS / 4 } else { 100_000 };
/// Iterations of a Katran new-flow run: under its flood guard's 125,000 per second per
/// CPU (past it Katran stops inserting, another path), as its own bench does.
pub const KATRAN_NEW_FLOW_ITERATIONS: u32 = 100_000;
/// Source addresses of the flows the wrapper makes up start here (11.0.0.0, or the low 32
/// bits of the client's IPv6 address), away from the fixtures' client.
pub const NEW_FLOW_BASE: u32 = 0x0b00_0000;
/// Client ports of the bench's own flows (established rows), away from the fixtures'.
const BENCH_SPORT: u16 = 45_000;
/// Payload of the timed data segments: 16 bytes, as in Katran's bench.
const PAYLOAD: &[u8; 16] = b"xlb-bench-16byte";
/// TCP flags of the frames the bench builds.
const ACK: u8 = 0x10;
const PSH_ACK: u8 = 0x18;
const SYN_ACK: u8 = 0x12;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PathKind {
    /// Every iteration is a flow the connection table has never seen: the scheduler runs.
    NewFlow,
    /// Every iteration is a packet of an ESTABLISHED connection entry (UDP: of a known flow).
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
    /// New-flow rows: the run's flows found in the connection table afterwards (None:
    /// not looked up).
    pub flows_in_table: Option<u64>,
    pub restore_failures: u64,
    /// The last iteration's verdict and output frame were the expected ones.
    pub output_matches: bool,
    /// Established rows: the connection entry was in the expected state (ESTABLISHED; UDP
    /// for a UDP flow) with the same real before and after every run.
    pub entry_holds: bool,
}

impl Proof {
    pub fn holds(&self) -> bool {
        self.counted == self.iterations
            && self.other_counters == 0
            && self.new_conns == self.expected_new_conns
            && self.flows_in_table.is_none_or(|n| n == self.expected_new_conns)
            && self.restore_failures == 0
            && self.output_matches
            && self.entry_holds
    }

    /// Adds another run's counts (the first run sets the counter's name).
    pub fn add(&mut self, run: &Proof) {
        self.counter.clone_from(&run.counter);
        self.iterations += run.iterations;
        self.counted += run.counted;
        self.other_counters += run.other_counters;
        self.new_conns += run.new_conns;
        self.expected_new_conns += run.expected_new_conns;
        self.flows_in_table = match (self.flows_in_table, run.flows_in_table) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        self.restore_failures += run.restore_failures;
        self.output_matches &= run.output_matches;
        self.entry_holds &= run.entry_holds;
    }

    /// Nothing counted yet, nothing contradicted.
    pub fn empty() -> Self {
        Self { output_matches: true, entry_holds: true, ..Default::default() }
    }

    pub fn summary(&self) -> String {
        let mark = if self.holds() { "✓" } else { "✗" };
        let mut s = format!("{mark} {} +{}/{}, new conns +{}/{}", self.counter, self.counted, self.iterations, self.new_conns, self.expected_new_conns);
        if let Some(n) = self.flows_in_table {
            s += &format!(", flows in the table {n}");
        }
        s += &format!(", other +{}, restore failures {}", self.other_counters, self.restore_failures);
        if !self.entry_holds {
            s += ", CONNECTION ENTRY NOT AS EXPECTED";
        }
        if !self.output_matches {
            s += ", OUTPUT DIFFERS";
        }
        s
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Row {
    /// What was measured (service, family, tags, direction).
    pub case: String,
    pub path: PathKind,
    /// Verdict counter name, for grouping (tx_dr, pass_not_vip, …).
    pub counter: String,
    /// IPv6 frame.
    pub ipv6: bool,
    /// Cost of the program alone: wrapper − restore-only + bare XDP_DROP (the test run's
    /// own per-iteration cost, which a program that does nothing pays too). Median of rounds.
    pub ns_per_packet: f64,
    /// × the bare swap-MACs-XDP_TX program (the floor of any forwarder), median of the
    /// per-round ratios.
    pub x_floor: f64,
    /// × Katran's same kind of path (established / new flow, same family) in the same
    /// rounds, median of the per-round ratios; None for a path Katran has no row of.
    pub x_katran: Option<f64>,
    pub vs_drop: f64,
    /// balance() over the restore-only program: wrapper − restore-only. Median of rounds.
    pub added_ns: f64,
    pub wrapper_ns: f64,
    pub restore_ns: f64,
    pub proof: Proof,
}

/// Katran's kind of path: the family, and an LRU hit or a SYN of a new flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KatranKind {
    pub ipv6: bool,
    pub new_flow: bool,
}

impl KatranKind {
    pub fn label(self) -> String {
        let family = if self.ipv6 { "IPv6" } else { "IPv4" };
        if self.new_flow { format!("{family} TCP SYN, new flow every iteration") } else { format!("{family} TCP established (LRU hit)") }
    }
}

/// What Katran's own counters showed over every measured run of a row (its README's
/// proof).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct KatranProof {
    pub iterations: u64,
    pub xdp_tx: u64,
    pub other_verdicts: u64,
    pub lru_hits: u64,
    pub lru_misses: u64,
    pub syn_misses: u64,
    pub non_syn_misses: u64,
    /// Packets counted for the VIP and for its reals.
    pub vip_packets: u64,
    pub real_packets: u64,
    pub fallback_lru: u64,
    pub encap_failures: u64,
    pub ring_drops: u64,
    /// New-flow rows: the run's flows found in the LRU afterwards.
    pub flows_in_lru: u64,
    /// New-flow rows: the flood guard's window counted exactly the run's flows.
    pub flood_guard_never_hit: bool,
    pub restore_failures: u64,
    /// The last output is the input encapsulated towards the LRU's real.
    pub output_matches: bool,
}

impl KatranProof {
    fn empty() -> Self {
        Self { flood_guard_never_hit: true, output_matches: true, ..Default::default() }
    }

    pub fn holds(&self, new_flow: bool) -> bool {
        let n = self.iterations;
        let common = self.xdp_tx == n
            && self.other_verdicts == 0
            && self.vip_packets == n
            && self.real_packets == n
            && self.fallback_lru == 0
            && self.encap_failures == 0
            && self.ring_drops == 0
            && self.non_syn_misses == 0
            && self.restore_failures == 0
            && self.output_matches;
        if new_flow {
            common && self.lru_misses == n && self.syn_misses == n && self.flows_in_lru == n && self.flood_guard_never_hit
        } else {
            common && self.lru_hits == n && self.lru_misses == 0
        }
    }

    pub fn summary(&self, new_flow: bool) -> String {
        let mark = if self.holds(new_flow) { "✓" } else { "✗" };
        let lru = if new_flow {
            format!(
                "SYN misses +{}, flows in the LRU {}, flood guard {}",
                self.syn_misses,
                self.flows_in_lru,
                if self.flood_guard_never_hit { "never hit" } else { "HIT" }
            )
        } else {
            format!("LRU hits +{}, misses +{}", self.lru_hits, self.lru_misses)
        };
        format!(
            "{mark} XDP_TX +{}/{}, other verdicts +{}, {lru}, VIP +{}, reals +{}, fallback LRU +{}, encap failures +{}, restore failures {}{}",
            self.xdp_tx,
            self.iterations,
            self.other_verdicts,
            self.vip_packets,
            self.real_packets,
            self.fallback_lru,
            self.encap_failures,
            self.restore_failures,
            if self.output_matches { "" } else { ", OUTPUT DIFFERS" }
        )
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KatranRow {
    pub case: String,
    pub kind: KatranKind,
    pub ns_per_packet: f64,
    pub x_floor: f64,
    pub vs_drop: f64,
    /// balancer_ingress over the restore-only program.
    pub added_ns: f64,
    pub proof: KatranProof,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KatranResults {
    pub object: PathBuf,
    /// balancer_ingress as the kernel has it.
    pub xlated_insns: u32,
    pub jited_bytes: u32,
    /// Entries of each per-CPU LRU.
    pub lru_entries: u32,
    pub new_flow_repeat: u32,
    pub rows: Vec<KatranRow>,
}

/// A requested row of the issue and what covers it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Coverage {
    pub requested: String,
    /// Index into `rows`, or None: not measured in this run (a --case run leaves it out).
    pub row: Option<usize>,
}

/// One target of issue 12 point 2, as a ratio measured in this run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Target {
    pub target: String,
    /// The limit, as a ratio.
    pub limit: f64,
    /// The measured ratio (the worst row's), None when this run does not measure it.
    pub measured: Option<f64>,
    /// The row that decides it, or why it is not measured.
    pub note: String,
    /// Why the target is missed whatever the ratio (xlb cannot hold a million flows).
    #[serde(default)]
    pub blocker: Option<String>,
    /// Why the measured ratio misses the limit, from this run's figures (what the limit
    /// leaves for the path against what its kernel primitives cost alone).
    #[serde(default)]
    pub cause: Option<String>,
}

impl Target {
    pub fn met(&self) -> Option<bool> {
        if self.blocker.is_some() {
            return Some(false);
        }
        self.measured.map(|m| m <= self.limit)
    }

    /// "met", "missed by N×" (measured over the limit), or "not measured".
    pub fn verdict(&self) -> String {
        let ratio = match self.measured {
            Some(m) if m <= self.limit => format!("met ({m:.2}× ≤ {:.2}×)", self.limit),
            Some(m) => format!("missed by {:.2}× ({m:.2}× against ≤ {:.2}×)", m / self.limit, self.limit),
            None => "not measured".into(),
        };
        match &self.blocker {
            Some(why) => format!("missed: {why}; {ratio}"),
            None => ratio,
        }
    }
}

/// Established DR (Katran: an LRU hit) with few and with many live flows, each timed
/// packet one of them in turn.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GrowthRow {
    /// "xlb" or "Katran".
    pub balancer: String,
    pub flows: u32,
    pub repeat: u32,
    pub ns_per_packet: f64,
    pub proof_holds: bool,
    pub proof: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Growth {
    pub rows: Vec<GrowthRow>,
    /// ns/packet with many flows over ns/packet with few, median of per-round ratios.
    pub xlb_growth: f64,
    pub katran_growth: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FastpathResults {
    pub repeat: u32,
    pub new_flow_repeat: u32,
    pub rounds: usize,
    pub bare_drop_ns: f64,
    pub bare_swap_tx_ns: f64,
    /// The method's check: the same arithmetic with the bare XDP_DROP program in the timed
    /// slot; it should give `bare_drop_ns` (the tail call cancels out).
    pub method_check_drop_ns: f64,
    pub rows: Vec<Row>,
    pub katran: KatranResults,
    pub coverage: Vec<Coverage>,
    pub growth: Growth,
    pub targets: Vec<Target>,
    /// What the fast path's diagnostics cost on the established DR row.
    #[serde(default)]
    pub diagnostics: DiagnosticsCost,
    /// The kernel primitives in the same rounds (see `primitives`).
    #[serde(default)]
    pub primitives: Vec<super::primitives::PrimitiveRow>,
}

/// The fast path's diagnostics (aya-log, `xlb trace`'s hook) on one row, in the same
/// rounds: the object built without their code, the object as xlb loads it (log off,
/// trace off), and with `xlb trace` on but its filter matching no frame (what a killed
/// trace leaves).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DiagnosticsCost {
    pub case: String,
    pub rows: Vec<DiagnosticsRow>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DiagnosticsRow {
    pub variant: String,
    pub ns_per_packet: f64,
    pub x_floor: f64,
    /// × the object without the diagnostics code, median of per-round ratios.
    pub x_without: f64,
    pub proof: Proof,
}

/// The variants of [`DiagnosticsCost`], in its rows' order.
pub const DIAGNOSTICS_VARIANTS: [&str; 3] = [
    "without the diagnostics code (lb-ebpf built without its `diagnostics` feature)",
    "with them, off (as xlb loads it: --fastpath-log off, no trace)",
    "xlb trace on, its filter matching no frame",
];

/// Measures [`DIAGNOSTICS_VARIANTS`] on one established row, a round at a time.
struct DiagnosticsBench {
    without: Harness,
    trace: xlb_core::trace::Session,
    times: [Vec<RoundTimes>; 3],
    proofs: [Proof; 3],
}

impl DiagnosticsBench {
    /// `item` primed in a harness of the object without diagnostics too.
    fn new(h: &mut Harness, item: &Item) -> Result<Self> {
        let mut without = Harness::load_without_diagnostics()?;
        prime(&mut without, item)?;
        let trace = xlb_core::trace::Session::take(&mut h.ebpf)?;
        Ok(Self { without, trace, times: Default::default(), proofs: [Proof::empty(), Proof::empty(), Proof::empty()] })
    }

    fn round(&mut self, h: &mut Harness, item: &Item, repeat: u32, round: usize, drop: f64, swap_tx: f64) -> Result<()> {
        // No variant always runs first.
        for v in (0..3).map(|v| (v + round) % 3) {
            let (timed, proof) = match v {
                0 => measure_item(&mut self.without, item, repeat)?,
                1 => measure_item(h, item, repeat)?,
                _ => {
                    // TEST-NET-1 (RFC 5737): no frame of the bench comes from it.
                    let nobody = xlb_core::trace::Filter { client: Some(Ipv4Addr::new(192, 0, 2, 1).into()), service: None };
                    self.trace.start(&nobody)?;
                    let result = measure_item(h, item, repeat);
                    self.trace.off()?;
                    if self.trace.next_event().is_some() {
                        bail!("xlb trace's filter matched a bench frame");
                    }
                    result?
                }
            };
            self.times[v].push(RoundTimes { drop, swap_tx, ..timed });
            self.proofs[v].add(&proof);
        }
        Ok(())
    }

    fn finish(self, item: &Item) -> DiagnosticsCost {
        let without = &self.times[0];
        let rows = self
            .times
            .iter()
            .zip(self.proofs)
            .zip(DIAGNOSTICS_VARIANTS)
            .map(|((t, proof), variant)| DiagnosticsRow {
                variant: variant.into(),
                ns_per_packet: RoundTimes::median_of(t, |t| t.ns_per_packet()),
                x_floor: RoundTimes::median_of(t, |t| t.ns_per_packet() / t.swap_tx),
                x_without: median(&t.iter().zip(without).map(|(a, w)| a.ns_per_packet() / w.ns_per_packet()).collect::<Vec<_>>()),
                proof,
            })
            .collect();
        DiagnosticsCost { case: format!("{}, {}", item.case, item.path.label()), rows }
    }
}

#[derive(Clone, Debug)]
pub struct FastpathOptions {
    /// Iterations per test run.
    pub repeat: u32,
    pub rounds: usize,
    /// Katran's `balancer.bpf.o` ([`katran::object_path`]); the section fails without it.
    pub katran: Option<PathBuf>,
    /// Entries of each of Katran's per-CPU LRUs.
    pub katran_lru_entries: u32,
    /// Live flows of the growth rows: few, and many ([`MANY_FLOWS`]; xlb: at most what
    /// its connection table holds without evicting).
    pub few_flows: u32,
    pub many_flows: u32,
    /// Only the rows whose "case (path)" label contains one of these (empty: every row);
    /// a filtered run skips the live-flows rows too (profiling one path quickly).
    pub cases: Vec<String>,
}

impl FastpathOptions {
    fn wants(&self, item: &Item) -> bool {
        let label = format!("{} ({})", item.case, item.path.label());
        self.cases.is_empty() || self.cases.iter().any(|c| label.contains(c.as_str()))
    }
}

/// The growth target's live flows (issue 12 point 2).
pub const FEW_FLOWS: u32 = 1_000;
pub const MANY_FLOWS: u32 = 1_000_000;
/// Most flows the growth rows put in xlb's connection table (a plain hash of
/// [`MAX_CONNS`], `--max-conns`' default, filled to the last entry if need be): all but
/// room for the other rows' connections.
pub const XLB_MOST_FLOWS: u32 = MAX_CONNS - 32_768;
/// Flows made half-open then promoted at a time while filling (the half-open table is
/// an LRU: all of a million SYNs before their ACKs would evict some).
const FILL_CHUNK: u32 = 65_536;
/// Source addresses of the growth rows' flows: 12.0.0.0 (few) and 13.0.0.0 (many).
const GROWTH_BASES: [u32; 2] = [0x0c00_0000, 0x0d00_0000];

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

/// Offset of the low 32 bits of a built frame's source address, after its VLAN tags.
fn source_offset(f: &Frame) -> u32 {
    let link = 14 + 4 * f.vlan.len() as u32;
    if f.src.is_ipv4() { link + 12 } else { link + 8 + 12 }
}

/// The source address of the `i`th flow a varied run makes up from `f`.
fn varied_source(f: &Frame, i: u32) -> IpAddr {
    varied_source_from(f, NEW_FLOW_BASE, i)
}

fn varied_source_from(f: &Frame, base: u32, i: u32) -> IpAddr {
    let low = base.wrapping_add(i);
    match f.src {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(low)),
        IpAddr::V6(a) => {
            let mut o = a.octets();
            o[12..].copy_from_slice(&low.to_be_bytes());
            IpAddr::V6(o.into())
        }
    }
}

/// The connection table's key of a client's frame.
fn flow_key(f: &Frame) -> FlowKey {
    FlowKey { src: addr::from_ip(f.src), dst: addr::from_ip(f.dst), sport: f.sport.to_be_bytes(), dport: f.dport.to_be_bytes(), proto: f.proto, _pad: [0; 3] }
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
/// (rs1, rs2) per scheduler.
pub struct Harness {
    ebpf: Ebpf,
    pub maps: Maps,
    frame: Array<MapData, BenchFrame>,
    /// The wrapper's tail-call slot. Kept open: the kernel empties a program array when
    /// its last user fd closes.
    slot: ProgramArray<MapData>,
    /// xlb's balancer, what the timed slot holds unless another program is being timed.
    balancer: ProgramFd,
    /// The bare XDP_DROP program (the restore-only program's tail call; the method check).
    pub drop: ProgramFd,
    /// (scheduler name, its service) for each scheduler.
    pub scheduler_services: Vec<(&'static str, Service)>,
}

impl Harness {
    /// The direct-routing fixture services, checked against the DR fixture table.
    pub fn load() -> Result<Self> {
        Self::load_with(false, xlb_core::ebpf::OBJECT)
    }

    /// As [`Self::load_with_nat_tun`] (any row can be the diagnostics' row: a filtered
    /// run's first may be NAT's), from the object built without the fast path's
    /// diagnostics.
    pub fn load_without_diagnostics() -> Result<Self> {
        Self::load_with(true, xlb_core::ebpf::OBJECT_NODIAG)
    }

    /// With the NAT and TUN services too, checked against every fixture table: the
    /// calling thread must be inside a [`fixtures::DirectorNet`].
    pub fn load_with_nat_tun() -> Result<Self> {
        Self::load_with(true, xlb_core::ebpf::OBJECT)
    }

    fn load_with(nat_tun: bool, object: &[u8]) -> Result<Self> {
        xlb_core::netns::require_root("the fast-path bench (BPF_PROG_TEST_RUN)")?;
        // The tables at the daemon's default sizes (`xlb run` without --max-conns …).
        let sizes = xlb_core::sizes::TableSizes::default();
        // The kernel primitives' tables at CONNS's size (see `primitives`).
        let bench_tables = [(names::FLOWS_MAP, sizes.max_conns), (names::COMPACT_MAP, sizes.max_conns), (names::LRU_MAP, sizes.max_conns)];
        let mut ebpf = loader::load_object_sized_with(object, &sizes, &bench_tables)?;
        for program in [names::DROP_PROGRAM, names::SWAP_TX_PROGRAM, names::RESTORE_PROGRAM, names::BALANCE_PROGRAM] {
            loader::xdp(&mut ebpf, program)?.load().with_context(|| format!("loading {program}"))?;
        }
        let mut maps = Maps::take(&mut ebpf, None)?;
        let frame = ebpf.take_map(names::FRAME_MAP).context("the object has no bench frame map")?.try_into()?;
        let mut slot: ProgramArray<MapData> =
            ebpf.take_map(names::BALANCER_SLOT_MAP).context("the object has no bench balancer slot")?.try_into()?;
        let balancer = loader::xdp(&mut ebpf, loader::BALANCE_PROGRAM)?.fd()?.try_clone()?;
        slot.set(names::BALANCER_SLOT, &balancer, 0)?;
        let drop = loader::xdp(&mut ebpf, names::DROP_PROGRAM)?.fd()?.try_clone()?;
        slot.set(names::RESTORE_SLOT, &drop, 0)?;
        fixtures::install_services(&mut maps)?;
        let mut tables = fixtures::all_cases();
        if nat_tun {
            fixtures::install_nat_tun_services(&mut maps)?;
            tables.extend(fixtures::nat_cases());
            tables.extend(fixtures::tun_cases());
        }
        let mut scheduler_services = Vec::new();
        for (i, name) in SCHEDULERS.into_iter().enumerate() {
            let scheduler: Scheduler = name.parse()?;
            let svc = Service { proto: Proto::Tcp, vip: VIP.into(), port: SCHEDULER_PORT_BASE + i as u16 };
            let id = ops::ServiceId::Addr(svc);
            ops::add_service(&mut maps, id, ops::ServiceOptions { scheduler, ..Default::default() })?;
            let one = ops::RealOptions::default();
            ops::add_real(&mut maps, id, RS1_IP, one, fixtures::RS1)?;
            ops::add_real(&mut maps, id, RS2_IP, one, fixtures::RS2)?;
            scheduler_services.push((name, svc));
        }
        let mut harness = Self { ebpf, maps, frame, slot, balancer, drop, scheduler_services };
        harness.replay(&tables)?;
        Ok(harness)
    }

    /// Loads one of the object's bench programs and gives its descriptor.
    pub fn load_program(&mut self, name: &str) -> Result<ProgramFd> {
        let prog = loader::xdp(&mut self.ebpf, name)?;
        prog.load().with_context(|| format!("loading {name}"))?;
        Ok(prog.fd()?.try_clone()?)
    }

    /// Takes one of the object's maps (once).
    pub fn take_map(&mut self, name: &str) -> Result<aya::maps::Map> {
        self.ebpf.take_map(name).with_context(|| format!("the object has no map {name}"))
    }

    /// Puts `program` in the wrapper's tail-call slot (None: xlb's balancer).
    pub fn tail_call(&mut self, program: Option<&ProgramFd>) -> Result<()> {
        let program = program.unwrap_or(&self.balancer);
        self.slot.set(names::BALANCER_SLOT, program, 0).context("setting the bench wrapper's tail-call slot")?;
        Ok(())
    }

    /// Runs `program` `repeat` times on `input`, the wrapper restoring it as `vary` says.
    pub fn run(&mut self, program: &str, input: &[u8], vary: Vary, repeat: u32) -> Result<Run> {
        self.run_on(program, 0, input, vary, repeat)
    }

    /// [`Self::run`] with the frame arriving on interface `ingress` (0: none given).
    pub fn run_on(&mut self, program: &str, ingress: u32, input: &[u8], vary: Vary, repeat: u32) -> Result<Run> {
        if input.len() > FRAME_MAX {
            bail!("a {}-byte frame is longer than the bench wrapper restores ({FRAME_MAX})", input.len());
        }
        let mut frame = BenchFrame { len: input.len() as u32, vary_offset: vary.offset, vary_base: vary.base, vary_count: vary.count, ..Default::default() };
        frame.bytes[..input.len()].copy_from_slice(input);
        self.frame.set(0, frame, 0)?;
        let prog = loader::xdp(&mut self.ebpf, program)?;
        // Room for a path that encapsulates.
        let mut output = vec![0u8; input.len() + FRAME_MAX];
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
        let md: Vec<u8> = [0, input.len() as u32, 0, ingress, 0, 0].iter().flat_map(|v| v.to_ne_bytes()).collect();
        let ctx_in = (ingress != 0).then_some(&md[..]);
        let opts = TestRunOptions { data_in: Some(input), data_out: Some(&mut output), ctx_in, repeat, ..Default::default() };
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
        let keys: Vec<_> = self.maps.half_open.keys().collect::<Result<_, _>>()?;
        for key in keys {
            let _ = self.maps.half_open.remove(&key);
        }
        Ok(())
    }

    /// Takes a flow's entry (and its NAT reply entry) out of the tables; whether it was there.
    fn take_flow(&mut self, key: &FlowKey) -> bool {
        if let Ok(entry) = self.maps.conns.get(key, 0) {
            let _ = self.maps.nat_replies.remove(&entry.reply_key(key));
            let _ = self.maps.conns.remove(key);
            return true;
        }
        // A SYN's flow is half-open (an LRU table; its NAT reply entry is in another LRU,
        // which evicts by itself) until the client's handshake ends.
        self.maps.half_open.remove(key).is_ok()
    }

    /// Runs the DR fixture table once, in order, as the fixture test does.
    pub fn replay_fixtures(&mut self) -> Result<()> {
        self.replay(&fixtures::all_cases())
    }

    /// Runs fixture tables once, in order, through the balancer, as the fixture tests do:
    /// the state later cases rely on is there afterwards. Every case must still pass.
    fn replay(&mut self, cases: &[Case]) -> Result<()> {
        for case in cases {
            let (verdict, output) = self.once(case.ingress, &case.input)?;
            if verdict != case.verdict || !output_is(&case.output, &case.input, &output) {
                bail!("fixture case `{}` fails (verdict {verdict}); fix the fast path before benchmarking it", case.name);
            }
        }
        Ok(())
    }

    /// One run of xlb's balancer itself (not under the wrapper): (verdict, output).
    fn once(&mut self, ingress: u32, input: &[u8]) -> Result<(u32, Vec<u8>)> {
        let prog = loader::xdp(&mut self.ebpf, loader::BALANCE_PROGRAM)?;
        let mut output = vec![0u8; input.len() + FRAME_MAX];
        let md: Vec<u8> = [0, input.len() as u32, 0, ingress, 0, 0].iter().flat_map(|v| v.to_ne_bytes()).collect();
        let ctx_in = (ingress != 0).then_some(&md[..]);
        let opts = TestRunOptions { data_in: Some(input), data_out: Some(&mut output), ctx_in, repeat: 1, ..Default::default() };
        let result = prog.test_run(opts)?;
        output.truncate(result.data_size_out as usize);
        Ok((result.return_value, output))
    }

    /// Runs the wrapper with the counters read around it: the run, and what the counters
    /// show about this run alone (its output frame is the caller's to check).
    pub fn measured(&mut self, input: &[u8], vary: Vary, repeat: u32, counter: u32, expect_new_conns: bool) -> Result<(Run, Proof)> {
        self.measured_on(0, input, vary, repeat, counter, expect_new_conns)
    }

    /// [`Self::measured`] with the frame arriving on interface `ingress`.
    pub fn measured_on(&mut self, ingress: u32, input: &[u8], vary: Vary, repeat: u32, counter: u32, expect_new_conns: bool) -> Result<(Run, Proof)> {
        let before = self.counts()?;
        let failures_before = self.restore_failures()?;
        let run = self.run_on(names::BALANCE_PROGRAM, ingress, input, vary, repeat)?;
        let after = self.counts()?;
        let failures = self.restore_failures()? - failures_before;
        let moved: Vec<u64> = after.counters.iter().zip(&before.counters).map(|(a, b)| a - b).collect();
        let proof = Proof {
            counter: counter::NAMES.get(counter as usize).copied().unwrap_or("?").to_string(),
            iterations: repeat as u64,
            counted: moved.get(counter as usize).copied().unwrap_or(0),
            // Verdicts only: events (a half-open entry made or promoted …) go with verdicts.
            other_counters: moved.iter().enumerate().filter(|(i, _)| *i != counter as usize && (*i as u32) < counter::VERDICTS).map(|(_, m)| m).sum(),
            new_conns: after.conns - before.conns,
            expected_new_conns: if expect_new_conns { repeat as u64 } else { 0 },
            restore_failures: failures,
            ..Proof::empty()
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

/// A frame run once, unwrapped, before the rounds: a step of a connection's handshake.
struct Step {
    ingress: u32,
    frame: Vec<u8>,
    verdict: u32,
}

/// One xlb thing measured each round.
struct Item {
    case: String,
    path: PathKind,
    /// The frame timed.
    input: Vec<u8>,
    ipv6: bool,
    /// New flows: the frame whose source the wrapper varies per iteration.
    syn: Option<Frame>,
    ingress: u32,
    verdict: u32,
    counter: u32,
    /// Exact output of the last iteration, when the frame is the same every iteration.
    output: Option<Expected>,
    /// The handshake that makes the connection entry (established rows).
    prime: Vec<Step>,
    /// The client's flow whose entry must be in this state (established rows).
    entry: Option<(FlowKey, u8)>,
}

impl Item {
    fn vary(&self) -> Vary {
        match &self.syn {
            Some(f) => Vary { offset: source_offset(f), base: NEW_FLOW_BASE, count: 0 },
            None => Vary::default(),
        }
    }

    fn katran_kind(&self) -> Option<KatranKind> {
        match self.path {
            PathKind::NewFlow => Some(KatranKind { ipv6: self.ipv6, new_flow: true }),
            PathKind::Established => Some(KatranKind { ipv6: self.ipv6, new_flow: false }),
            _ => None,
        }
    }
}

fn tcp_flags(f: &Frame, flags: u8) -> Frame {
    Frame { tcp_flags: flags, ..f.clone() }
}

/// The client's data segment of `syn`'s connection.
fn data_of(syn: &Frame) -> Frame {
    Frame { tcp_flags: PSH_ACK, payload: PAYLOAD.to_vec(), ..syn.clone() }
}

/// `f` as DNAT sends it to `rs:rport` by the private NIC.
fn dnat(f: &Frame, rs: IpAddr, rport: u16) -> Vec<u8> {
    Frame { dst: rs, dport: rport, dst_mac: RS1_MAC, src_mac: DIRECTOR_PRIVATE_MAC, ..f.clone() }.bytes()
}

/// A real's reply `r` as the director sends it back from `vip:vport` to the client, with
/// the client's tags.
fn snat(r: &Frame, vip: IpAddr, vport: u16, tags: &[(u16, u16)]) -> Vec<u8> {
    Frame { src: vip, sport: vport, dst_mac: CLIENT_MAC, src_mac: DIRECTOR_MAC, vlan: tags.to_vec(), ..r.clone() }.bytes()
}

/// Established DR/TUN (the director sees the client only): SYN, ACK, then data.
fn one_way_established(case: &str, syn: Frame, ingress: u32, verdict: u32, counter: u32, output: impl Fn(&Frame) -> Vec<u8>) -> Item {
    let data = data_of(&syn);
    Item {
        case: case.into(),
        path: PathKind::Established,
        ingress,
        verdict,
        counter,
        output: Some(Expected::Frame(output(&data))),
        prime: vec![
            Step { ingress, frame: syn.bytes(), verdict },
            Step { ingress, frame: tcp_flags(&syn, ACK).bytes(), verdict },
        ],
        entry: Some((flow_key(&syn), tcp::ESTABLISHED)),
        input: data.bytes(),
        ipv6: syn.dst.is_ipv6(),
        syn: None,
    }
}

fn new_flow(case: &str, syn: Frame, ingress: u32, verdict: u32, counter: u32) -> Item {
    Item { case: case.into(), path: PathKind::NewFlow, input: syn.bytes(), ipv6: syn.dst.is_ipv6(), syn: Some(syn), ingress, verdict, counter, output: None, prime: Vec::new(), entry: None }
}

/// NAT's handshake for `syn` to a real at `rs:rport`: the client's SYN, the real's SYN-ACK
/// (which the director translates back), the client's ACK.
fn nat_handshake(syn: &Frame, rs: IpAddr, rport: u16) -> (Vec<Step>, Frame) {
    let syn_ack = Frame { vlan: Vec::new(), tcp_flags: SYN_ACK, ..syn.reply_from(rs, rport, RS1_MAC, DIRECTOR_PRIVATE_MAC) };
    let prime = vec![
        Step { ingress: PUBLIC_IFINDEX, frame: syn.bytes(), verdict: XDP_REDIRECT },
        Step { ingress: PRIVATE_IFINDEX, frame: syn_ack.bytes(), verdict: XDP_REDIRECT },
        Step { ingress: PUBLIC_IFINDEX, frame: tcp_flags(syn, ACK).bytes(), verdict: XDP_REDIRECT },
    ];
    (prime, syn_ack)
}

/// NAT, established: the client's data inbound, and the real's data back.
fn nat_established(name: &str, syn: Frame, rs: IpAddr, rport: u16, vport: u16) -> [Item; 2] {
    let (prime, _) = nat_handshake(&syn, rs, rport);
    let data = data_of(&syn);
    let inbound = Item {
        case: format!("{name}, inbound"),
        path: PathKind::Established,
        ingress: PUBLIC_IFINDEX,
        verdict: XDP_REDIRECT,
        counter: counter::TX_NAT,
        output: Some(Expected::Frame(dnat(&data, rs, rport))),
        prime,
        entry: Some((flow_key(&syn), tcp::ESTABLISHED)),
        input: data.bytes(),
        ipv6: syn.dst.is_ipv6(),
        syn: None,
    };
    // The reply's connection is another client port's, so each row has its own entry.
    let syn = Frame { sport: syn.sport + 1, ..syn };
    let (prime, syn_ack) = nat_handshake(&syn, rs, rport);
    let answer = Frame { tcp_flags: PSH_ACK, payload: PAYLOAD.to_vec(), ..syn_ack };
    let reply = Item {
        case: format!("{name}, reply"),
        path: PathKind::Established,
        ingress: PRIVATE_IFINDEX,
        verdict: XDP_REDIRECT,
        counter: counter::TX_NAT_REPLY,
        output: Some(Expected::Frame(snat(&answer, syn.dst, vport, &syn.vlan))),
        prime,
        entry: Some((flow_key(&syn), tcp::ESTABLISHED)),
        input: answer.bytes(),
        ipv6: syn.dst.is_ipv6(),
        syn: None,
    };
    [inbound, reply]
}

/// Every path measured, named by what the row shows. Runs against [`Harness::load_with_nat_tun`].
fn items(schedulers: &[(&'static str, Service)]) -> Vec<Item> {
    let mut port = BENCH_SPORT;
    let mut sport = || {
        port += 2;
        port
    };
    let (rs1, rs1_6) = (IpAddr::V4(RS1_IP), IpAddr::V6(RS1_IP6));
    let dr = |f: &Frame, mac| f.routed_to(mac).bytes();
    let tunnel = |f: &Frame| if f.dst.is_ipv4() { f.tunnelled(DIP, RS1_IP, RS1_MAC, DIRECTOR_PRIVATE_MAC) } else { f.tunnelled(DIP6, RS1_IP6, RS1_MAC, DIRECTOR_PRIVATE_MAC) };
    let tag = vec![(ETH_P_8021Q, 10)];
    let qinq = vec![(ETH_P_8021AD, 100), (ETH_P_8021Q, 10)];
    let web = fixtures::WEB.port;
    let mut items = vec![
        // The rows Katran's are compared with first: the same frames as Katran's rows.
        one_way_established("DR, IPv4 TCP", Frame::tcp(VIP, web, BENCH_SPORT), 0, XDP_TX, counter::TX_DR, |f| dr(f, RS1_MAC)),
        one_way_established("DR, IPv6 TCP", Frame::tcp(VIP6, web, BENCH_SPORT), 0, XDP_TX, counter::TX_DR, |f| dr(f, RS1_MAC)),
        one_way_established("DR, IPv4 TCP, 802.1Q-tagged", Frame { vlan: tag.clone(), ..Frame::tcp(VIP, web, sport()) }, 0, XDP_TX, counter::TX_DR, |f| {
            dr(f, RS1_MAC)
        }),
        one_way_established("DR, IPv4 TCP, QinQ", Frame { vlan: qinq.clone(), ..Frame::tcp(VIP, web, sport()) }, 0, XDP_TX, counter::TX_DR, |f| {
            dr(f, RS1_MAC)
        }),
        one_way_established("DR, IPv6 TCP, 802.1Q-tagged", Frame { vlan: tag.clone(), ..Frame::tcp(VIP6, web, sport()) }, 0, XDP_TX, counter::TX_DR, |f| {
            dr(f, RS1_MAC)
        }),
        one_way_established(
            "DR to a real behind another NIC (redirect), IPv4 TCP",
            Frame::tcp(VIP, fixtures::DR_OTHER_NIC.port, sport()),
            PUBLIC_IFINDEX,
            XDP_REDIRECT,
            counter::TX_DR,
            |f| Frame { dst_mac: RS1_MAC, src_mac: DIRECTOR_PRIVATE_MAC, ..f.clone() }.bytes(),
        ),
        one_way_established("TUN, IPv4 TCP", Frame::tcp(VIP, fixtures::TUN_WEB.port, sport()), PUBLIC_IFINDEX, XDP_REDIRECT, counter::TX_TUN, tunnel),
        one_way_established("TUN, IPv6 TCP", Frame::tcp(VIP6, fixtures::TUN_WEB6.port, sport()), PUBLIC_IFINDEX, XDP_REDIRECT, counter::TX_TUN, tunnel),
        one_way_established(
            "TUN, IPv4 TCP, 802.1Q-tagged",
            Frame { vlan: tag.clone(), ..Frame::tcp(VIP, fixtures::TUN_WEB.port, sport()) },
            PUBLIC_IFINDEX,
            XDP_REDIRECT,
            counter::TX_TUN,
            tunnel,
        ),
    ];
    items.extend(nat_established("NAT, IPv4 TCP", Frame::tcp(VIP, fixtures::NAT_WEB.port, sport()), rs1, 8080, fixtures::NAT_WEB.port));
    let _ = sport();
    items.extend(nat_established("NAT, IPv6 TCP", Frame::tcp(VIP6, fixtures::NAT_WEB6.port, sport()), rs1_6, 8080, fixtures::NAT_WEB6.port));
    let _ = sport();
    items.extend(nat_established(
        "NAT, IPv4 TCP, 802.1Q-tagged",
        Frame { vlan: tag.clone(), ..Frame::tcp(VIP, fixtures::NAT_WEB.port, sport()) },
        rs1,
        8080,
        fixtures::NAT_WEB.port,
    ));
    let _ = sport();
    // UDP: a datagram of a flow already in the table, each way.
    let dns = Frame::udp(VIP, fixtures::DNS.port, sport());
    items.push(Item {
        case: "DR, IPv4 UDP".into(),
        path: PathKind::Established,
        ingress: 0,
        verdict: XDP_TX,
        counter: counter::TX_DR,
        output: Some(Expected::Frame(dns.routed_to(RS2_MAC).bytes())),
        prime: vec![Step { ingress: 0, frame: dns.bytes(), verdict: XDP_TX }],
        entry: Some((flow_key(&dns), tcp::UDP)),
        input: dns.bytes(),
        ipv6: false,
        syn: None,
    });
    let nat_dns = Frame::udp(VIP, fixtures::NAT_DNS.port, sport());
    let rs2 = IpAddr::V4(RS2_IP);
    let first = || vec![Step { ingress: PUBLIC_IFINDEX, frame: nat_dns.bytes(), verdict: XDP_REDIRECT }];
    let answer = Frame { payload: b"answer".to_vec(), ..nat_dns.reply_from(rs2, 5353, RS2_MAC, DIRECTOR_PRIVATE_MAC) };
    items.push(Item {
        case: "NAT, IPv4 UDP, inbound".into(),
        path: PathKind::Established,
        ingress: PUBLIC_IFINDEX,
        verdict: XDP_REDIRECT,
        counter: counter::TX_NAT,
        output: Some(Expected::Frame(Frame { dst: rs2, dport: 5353, dst_mac: RS2_MAC, src_mac: DIRECTOR_PRIVATE_MAC, ..nat_dns.clone() }.bytes())),
        prime: first(),
        entry: Some((flow_key(&nat_dns), tcp::UDP)),
        input: nat_dns.bytes(),
        ipv6: false,
        syn: None,
    });
    items.push(Item {
        case: "NAT, IPv4 UDP, reply".into(),
        path: PathKind::Established,
        ingress: PRIVATE_IFINDEX,
        verdict: XDP_REDIRECT,
        counter: counter::TX_NAT_REPLY,
        output: Some(Expected::Frame(snat(&answer, IpAddr::V4(VIP), fixtures::NAT_DNS.port, &[]))),
        // The inbound row primed this flow already.
        prime: Vec::new(),
        entry: Some((flow_key(&nat_dns), tcp::UDP)),
        input: answer.bytes(),
        ipv6: false,
        syn: None,
    });
    // New flows: every iteration a client address the table has never seen.
    let syn = |dst: IpAddr, port| Frame::tcp(dst, port, 40000);
    items.extend([
        new_flow("DR, IPv4 TCP", syn(VIP.into(), web), 0, XDP_TX, counter::TX_DR),
        new_flow("DR, IPv6 TCP", syn(VIP6.into(), web), 0, XDP_TX, counter::TX_DR),
        new_flow("DR, IPv4 TCP, 802.1Q-tagged", Frame { vlan: tag.clone(), ..syn(VIP.into(), web) }, 0, XDP_TX, counter::TX_DR),
        new_flow("DR, IPv4 UDP", Frame::udp(VIP, fixtures::DNS.port, 40000), 0, XDP_TX, counter::TX_DR),
        new_flow("NAT, IPv4 TCP, inbound", syn(VIP.into(), fixtures::NAT_WEB.port), PUBLIC_IFINDEX, XDP_REDIRECT, counter::TX_NAT),
        new_flow("NAT, IPv6 TCP, inbound", syn(VIP6.into(), fixtures::NAT_WEB6.port), PUBLIC_IFINDEX, XDP_REDIRECT, counter::TX_NAT),
        new_flow("TUN, IPv4 TCP", syn(VIP.into(), fixtures::TUN_WEB.port), PUBLIC_IFINDEX, XDP_REDIRECT, counter::TX_TUN),
        new_flow("TUN, IPv6 TCP", syn(VIP6.into(), fixtures::TUN_WEB6.port), PUBLIC_IFINDEX, XDP_REDIRECT, counter::TX_TUN),
    ]);
    for (name, svc) in schedulers {
        items.push(new_flow(&format!("DR, IPv4 TCP, scheduler {name}, 2 reals"), syn(svc.vip, svc.port), 0, XDP_TX, counter::TX_DR));
    }
    // Frames for no connection, passed or dropped: the DR table's, which leave no state.
    for case in fixtures::dr_cases().into_iter().filter(|c| c.verdict == XDP_PASS || c.verdict == XDP_DROP) {
        items.push(Item {
            case: case.name.into(),
            path: if case.verdict == XDP_DROP { PathKind::Dropped } else { PathKind::Passed },
            ipv6: case.input.get(12..14) == Some(&[0x86, 0xdd]),
            input: case.input,
            syn: None,
            ingress: case.ingress,
            verdict: case.verdict,
            counter: case.counter,
            output: Some(case.output.clone()),
            prime: Vec::new(),
            entry: None,
        });
    }
    items
}

/// One of Katran's rows: the same frames as xlb's "DR, IPv4/IPv6 TCP" rows.
struct KatranItem {
    kind: KatranKind,
    /// The SYN (new flows: varied; established: run once before to fill the LRU).
    syn: Frame,
    /// The frame timed.
    input: Vec<u8>,
}

impl KatranItem {
    fn new(kind: KatranKind) -> Self {
        let vip: IpAddr = if kind.ipv6 { VIP6.into() } else { VIP.into() };
        let syn = Frame::tcp(vip, katran::VIP_PORT, BENCH_SPORT);
        let input = if kind.new_flow { syn.bytes() } else { data_of(&syn).bytes() };
        Self { kind, syn, input }
    }

    fn vary(&self) -> Vary {
        if self.kind.new_flow { Vary { offset: source_offset(&self.syn), base: NEW_FLOW_BASE, count: 0 } } else { Vary::default() }
    }

    /// Katran's LRU key of the `i`th made-up flow, or of the established one.
    fn lru_key(&self, i: Option<u32>) -> [u8; 40] {
        let src = i.map_or(self.syn.src, |i| varied_source(&self.syn, i));
        katran::flow_key(src, self.syn.dst, self.syn.sport, self.syn.dport, self.syn.proto)
    }

    /// The frame of the `i`th iteration, as the wrapper writes it: the source address's
    /// low 32 bits replaced, nothing else (the IP checksum is left as it was, which
    /// neither balancer checks).
    fn frame_of(&self, i: u32) -> Vec<u8> {
        let mut frame = self.input.clone();
        let vary = self.vary();
        if vary.offset != 0 {
            let at = vary.offset as usize;
            frame[at..at + 4].copy_from_slice(&vary.base.wrapping_add(i).to_be_bytes());
        }
        frame
    }
}

pub fn run(opts: &FastpathOptions) -> Result<FastpathResults> {
    let object = opts.katran.clone().map(|o| o.canonicalize().unwrap_or(o)).context(format!(
        "the fast-path bench times Katran beside xlb: give it Katran's balancer.bpf.o (cargo xtask bench passes {}; or set {})",
        katran::OBJECT_FROM_WORKSPACE,
        katran::OBJECT_ENV
    ))?;
    let net = fixtures::DirectorNet::create()?;
    // The whole section runs on this thread, inside the namespace whose NICs the NAT and
    // TUN services use, on the CPU it is on (per-CPU state and caches stay the same for
    // every run of a round; Katran's LRU of that CPU is the one used).
    let _inside = net.enter()?;
    let mut h = Harness::load_with_nat_tun()?;
    let mut katran = Katran::load(&object, opts.katran_lru_entries)?;
    let katran_fd = katran.prog.fd()?.try_clone()?;
    let _pin = super::CpuPin::current()?;
    let items: Vec<Item> = items(&h.scheduler_services).into_iter().filter(|i| opts.wants(i)).collect();
    if items.is_empty() {
        bail!("no fast-path row matches {:?}", opts.cases);
    }
    for item in &items {
        prime(&mut h, item)?;
    }
    let mut diagnostics = DiagnosticsBench::new(&mut h, &items[0])?;
    // The many live entries only in a full run (a filtered one skips the live-flows rows).
    let many_entries = if opts.cases.is_empty() { opts.many_flows.min(XLB_MOST_FLOWS) } else { 0 };
    let mut primitives = super::primitives::PrimitiveBench::new(&mut h, many_entries)?;
    let katran_items: Vec<KatranItem> = [(false, false), (false, true), (true, false), (true, true)]
        .into_iter()
        .map(|(ipv6, new_flow)| KatranItem::new(KatranKind { ipv6, new_flow }))
        .collect();
    for k in katran_items.iter().filter(|k| !k.kind.new_flow) {
        katran.reset_conn_rate()?;
        let (verdict, output) = katran.run_once(&k.syn.bytes())?;
        let real = katran.flow(&k.lru_key(None)).and_then(|id| katran_real(k.kind.ipv6, id));
        match real {
            Some(real) if verdict == XDP_TX && katran::is_encapsulated(&k.syn.bytes(), &output, real) => {}
            _ => bail!("Katran's {}: its SYN gave verdict {verdict} and no LRU entry for a real of the VIP", k.kind.label()),
        }
    }
    let new_flow_repeat = opts.repeat.min(NEW_FLOW_ITERATIONS);
    let katran_new_flow_repeat = opts.repeat.min(KATRAN_NEW_FLOW_ITERATIONS);
    let probe = h.run(names::DROP_PROGRAM, &items[0].input, Vary::default(), 1)?;
    if probe.verdict != XDP_DROP {
        bail!("the bare XDP_DROP program returned {}", probe.verdict);
    }

    let mut bare = Vec::new();
    let mut times: Vec<Vec<RoundTimes>> = vec![Vec::new(); items.len()];
    let mut proofs: Vec<Proof> = vec![Proof::empty(); items.len()];
    let mut katran_times: Vec<Vec<RoundTimes>> = vec![Vec::new(); katran_items.len()];
    let mut katran_proofs: Vec<KatranProof> = vec![KatranProof::empty(); katran_items.len()];
    let units = katran_items.len() + items.len();
    for round in 0..opts.rounds {
        let drop = h.run(names::DROP_PROGRAM, &items[0].input, Vary::default(), opts.repeat)?.ns;
        let swap_tx = h.run(names::SWAP_TX_PROGRAM, &items[0].input, Vary::default(), opts.repeat)?.ns;
        let drop_fd = h.drop.try_clone()?;
        h.tail_call(Some(&drop_fd))?;
        let check_restore = h.run(names::RESTORE_PROGRAM, &items[0].input, Vary::default(), opts.repeat);
        let check = h.run(names::BALANCE_PROGRAM, &items[0].input, Vary::default(), opts.repeat);
        h.tail_call(None)?;
        let (check_restore, check) = (check_restore?, check?);
        if check.verdict != XDP_DROP {
            bail!("the wrapper with a bare XDP_DROP in its slot returned {}", check.verdict);
        }
        bare.push(RoundTimes { wrapper: check.ns, restore: check_restore.ns, drop, swap_tx });
        // Each round starts elsewhere in the list, so no row always follows the same one.
        for u in (0..units).map(|u| (u + round * 5) % units) {
            if u < katran_items.len() {
                let k = &katran_items[u];
                let repeat = if k.kind.new_flow { katran_new_flow_repeat } else { opts.repeat };
                h.tail_call(Some(&katran_fd))?;
                let result = measure_katran(&mut h, &mut katran, k, repeat);
                h.tail_call(None)?;
                let (timed, proof) = result?;
                katran_times[u].push(RoundTimes { drop, swap_tx, ..timed });
                add_katran_proof(&mut katran_proofs[u], &proof);
            } else {
                let i = u - katran_items.len();
                let item = &items[i];
                let repeat = if item.path == PathKind::NewFlow { new_flow_repeat } else { opts.repeat };
                let (timed, proof) = measure_item(&mut h, item, repeat)?;
                times[i].push(RoundTimes { drop, swap_tx, ..timed });
                proofs[i].add(&proof);
            }
        }
        diagnostics.round(&mut h, &items[0], opts.repeat, round, drop, swap_tx)?;
        primitives.round(&mut h, new_flow_repeat, drop, swap_tx)?;
    }
    let primitives = primitives.finish();
    let katran_rows: Vec<KatranRow> = katran_items
        .iter()
        .zip(&katran_times)
        .zip(katran_proofs)
        .map(|((k, t), proof)| KatranRow {
            case: k.kind.label(),
            kind: k.kind,
            ns_per_packet: RoundTimes::median_of(t, |t| t.ns_per_packet()),
            x_floor: RoundTimes::median_of(t, |t| t.ns_per_packet() / t.swap_tx),
            vs_drop: RoundTimes::median_of(t, |t| t.ns_per_packet() / t.drop),
            added_ns: RoundTimes::median_of(t, |t| t.wrapper - t.restore),
            proof,
        })
        .collect();
    let rows: Vec<Row> = items
        .iter()
        .zip(&times)
        .zip(proofs)
        .map(|((item, t), proof)| {
            let katran_rounds = item.katran_kind().and_then(|kind| katran_items.iter().position(|k| k.kind == kind)).map(|k| &katran_times[k]);
            row(item, t, katran_rounds, proof)
        })
        .collect();
    let growth = if opts.cases.is_empty() {
        growth(&mut h, &mut katran, &katran_fd, opts)?
    } else {
        Growth { rows: Vec::new(), xlb_growth: f64::NAN, katran_growth: f64::NAN }
    };
    let coverage = coverage(&rows);
    let mut targets = targets(&rows, &growth, opts);
    explain_misses(&mut targets, &rows, &growth, &primitives, RoundTimes::median_of(&bare, |t| t.drop), RoundTimes::median_of(&bare, |t| t.swap_tx));
    let (xlated_insns, jited_bytes) = katran.size;
    Ok(FastpathResults {
        repeat: opts.repeat,
        new_flow_repeat,
        rounds: opts.rounds,
        bare_drop_ns: RoundTimes::median_of(&bare, |t| t.drop),
        bare_swap_tx_ns: RoundTimes::median_of(&bare, |t| t.swap_tx),
        method_check_drop_ns: RoundTimes::median_of(&bare, |t| t.ns_per_packet()),
        rows,
        katran: KatranResults {
            object,
            xlated_insns,
            jited_bytes,
            lru_entries: opts.katran_lru_entries,
            new_flow_repeat: katran_new_flow_repeat,
            rows: katran_rows,
        },
        coverage,
        growth,
        targets,
        diagnostics: diagnostics.finish(&items[0]),
        primitives,
    })
}

fn katran_real(ipv6: bool, id: u32) -> Option<IpAddr> {
    katran::reals(ipv6).into_iter().find(|(i, _)| *i == id).map(|(_, a)| a)
}

/// Runs an established row's handshake once and checks the entry it leaves.
fn prime(h: &mut Harness, item: &Item) -> Result<()> {
    for (i, step) in item.prime.iter().enumerate() {
        let before = xlb_core::ops::counters(&h.maps)?;
        let (verdict, _) = h.once(step.ingress, &step.frame)?;
        if verdict != step.verdict {
            // The counters it moved say why.
            let after = xlb_core::ops::counters(&h.maps)?;
            let moved: Vec<String> =
                after.iter().zip(&before).filter(|(a, b)| a.1 != b.1).map(|(a, b)| format!("{} +{}", a.0, a.1 - b.1)).collect();
            bail!("{}: handshake frame {} of {} got verdict {verdict}, not {} (counted: {})", item.case, i + 1, item.prime.len(), step.verdict, moved.join(", "));
        }
    }
    if let Some((key, state)) = &item.entry {
        let entry = h.maps.conns.get(key, 0).with_context(|| format!("{}: no connection entry after the handshake", item.case))?;
        if entry.state != *state {
            bail!("{}: the entry is {} after the handshake, not {}", item.case, state_name(entry.state), state_name(*state));
        }
    }
    Ok(())
}

fn state_name(state: u8) -> &'static str {
    tcp::STATE_NAMES.get(state as usize).copied().unwrap_or("?")
}

/// One round of one xlb row: restore-only, then the wrapper with the proofs.
fn measure_item(h: &mut Harness, item: &Item, repeat: u32) -> Result<(RoundTimes, Proof)> {
    let vary = item.vary();
    let entry_before = item.entry.as_ref().map(|(key, _)| h.maps.conns.get(key, 0).ok());
    let restore = h.run_on(names::RESTORE_PROGRAM, item.ingress, &item.input, vary, repeat)?.ns;
    let new_flow = item.path == PathKind::NewFlow;
    let (run, mut proof) = h.measured_on(item.ingress, &item.input, vary, repeat, item.counter, new_flow)?;
    proof.output_matches = run.verdict == item.verdict && item.output.as_ref().is_none_or(|e| output_is(e, &item.input, &run.output));
    if let (Some((key, state)), Some(before)) = (&item.entry, entry_before) {
        let after = h.maps.conns.get(key, 0).ok();
        proof.entry_holds = match (before, after) {
            (Some(b), Some(a)) => b.state == *state && a.state == *state && a.real_id == b.real_id && a.real_ip == b.real_ip,
            _ => false,
        };
    }
    if let Some(syn) = &item.syn {
        // Every made-up flow must be in the table; they are taken out so the table never
        // fills and the established rows' entries stay.
        let template = flow_key(syn);
        let mut found = 0;
        for i in 0..repeat {
            let key = FlowKey { src: addr::from_ip(varied_source(syn, i)), ..template };
            found += u64::from(h.take_flow(&key));
        }
        proof.flows_in_table = Some(found);
    }
    // The round's baselines are the caller's to fill in.
    Ok((RoundTimes { wrapper: run.ns, restore, drop: f64::NAN, swap_tx: f64::NAN }, proof))
}

/// One round of one Katran row, with its own counters as the proof (its README's).
fn measure_katran(h: &mut Harness, katran: &mut Katran, k: &KatranItem, repeat: u32) -> Result<(RoundTimes, KatranProof)> {
    let vary = k.vary();
    let restore = h.run(names::RESTORE_PROGRAM, &k.input, vary, repeat)?.ns;
    if k.kind.new_flow {
        katran.reset_conn_rate()?;
    }
    let before = katran.counts()?;
    let failures_before = h.restore_failures()?;
    let run = h.run(names::BALANCE_PROGRAM, &k.input, vary, repeat)?;
    let d: KatranCounts = katran.counts()?.delta(&before);
    let reals = katran::reals(k.kind.ipv6);
    let vip = usize::from(k.kind.ipv6);
    let mut proof = KatranProof {
        iterations: repeat as u64,
        xdp_tx: d.xdp_tx,
        other_verdicts: d.xdp_total - d.xdp_tx,
        lru_hits: d.lru_lookups - d.lru_misses,
        lru_misses: d.lru_misses,
        syn_misses: d.syn_misses,
        non_syn_misses: d.non_syn_misses,
        vip_packets: d.vip_packets[vip],
        real_packets: reals.iter().map(|(id, _)| d.real_packets[*id as usize]).sum(),
        fallback_lru: d.fallback_lru,
        encap_failures: d.encap_failures,
        ring_drops: d.ring_drops,
        restore_failures: h.restore_failures()? - failures_before,
        ..KatranProof::empty()
    };
    let last = repeat - 1;
    let last_key = k.lru_key(k.kind.new_flow.then_some(last));
    let real = katran.flow(&last_key).and_then(|id| katran_real(k.kind.ipv6, id));
    proof.output_matches = run.verdict == XDP_TX && real.is_some_and(|real| katran::is_encapsulated(&k.frame_of(last), &run.output, real));
    if k.kind.new_flow {
        proof.flood_guard_never_hit = katran.conn_rate()? == repeat as u64 && repeat <= katran::MAX_CONN_RATE;
        for i in 0..repeat {
            if let Some(id) = katran.take_flow(&k.lru_key(Some(i)))? {
                proof.flows_in_lru += u64::from(reals.iter().any(|(r, _)| *r == id));
            }
        }
    }
    // The round's baselines are the caller's to fill in.
    Ok((RoundTimes { wrapper: run.ns, restore, drop: f64::NAN, swap_tx: f64::NAN }, proof))
}

fn add_katran_proof(sum: &mut KatranProof, run: &KatranProof) {
    sum.iterations += run.iterations;
    sum.xdp_tx += run.xdp_tx;
    sum.other_verdicts += run.other_verdicts;
    sum.lru_hits += run.lru_hits;
    sum.lru_misses += run.lru_misses;
    sum.syn_misses += run.syn_misses;
    sum.non_syn_misses += run.non_syn_misses;
    sum.vip_packets += run.vip_packets;
    sum.real_packets += run.real_packets;
    sum.fallback_lru += run.fallback_lru;
    sum.encap_failures += run.encap_failures;
    sum.ring_drops += run.ring_drops;
    sum.flows_in_lru += run.flows_in_lru;
    sum.flood_guard_never_hit &= run.flood_guard_never_hit;
    sum.restore_failures += run.restore_failures;
    sum.output_matches &= run.output_matches;
}

fn row(item: &Item, rounds: &[RoundTimes], katran: Option<&Vec<RoundTimes>>, proof: Proof) -> Row {
    let pick = |f: fn(&RoundTimes) -> f64| RoundTimes::median_of(rounds, f);
    let x_katran = katran.map(|k| median(&rounds.iter().zip(k).map(|(x, k)| x.ns_per_packet() / k.ns_per_packet()).collect::<Vec<_>>()));
    Row {
        case: item.case.clone(),
        path: item.path,
        counter: counter::NAMES.get(item.counter as usize).copied().unwrap_or("?").to_string(),
        ipv6: item.ipv6,
        ns_per_packet: pick(|t| t.ns_per_packet()),
        x_floor: pick(|t| t.ns_per_packet() / t.swap_tx),
        x_katran,
        vs_drop: pick(|t| t.ns_per_packet() / t.drop),
        added_ns: pick(|t| t.wrapper - t.restore),
        wrapper_ns: pick(|t| t.wrapper),
        restore_ns: pick(|t| t.restore),
        proof,
    }
}

/// The paths issue 12 asks to be measured, and the row that measures each.
fn coverage(rows: &[Row]) -> Vec<Coverage> {
    let find = |case: &str, path: PathKind| rows.iter().position(|r| r.case == case && r.path == path);
    let (est, new) = (PathKind::Established, PathKind::NewFlow);
    let mut wanted: Vec<(String, String, PathKind)> = [
        ("DR, established flow", "DR, IPv4 TCP", est),
        ("DR, new flow", "DR, IPv4 TCP", new),
        ("DR, IPv6, established flow", "DR, IPv6 TCP", est),
        ("DR, IPv6, new flow", "DR, IPv6 TCP", new),
        ("DR, 802.1Q-tagged, established flow", "DR, IPv4 TCP, 802.1Q-tagged", est),
        ("DR, UDP, established flow", "DR, IPv4 UDP", est),
        ("NAT, inbound, established flow", "NAT, IPv4 TCP, inbound", est),
        ("NAT, reply, established flow", "NAT, IPv4 TCP, reply", est),
        ("NAT, inbound, new flow", "NAT, IPv4 TCP, inbound", new),
        ("NAT, IPv6, inbound, established flow", "NAT, IPv6 TCP, inbound", est),
        ("NAT, IPv6, reply, established flow", "NAT, IPv6 TCP, reply", est),
        ("TUN, established flow", "TUN, IPv4 TCP", est),
        ("TUN, new flow", "TUN, IPv4 TCP", new),
        ("TUN, IPv6, established flow", "TUN, IPv6 TCP", est),
    ]
    .into_iter()
    .map(|(a, b, p)| (a.to_string(), b.to_string(), p))
    .collect();
    for name in SCHEDULERS {
        wanted.push((format!("DR, new flow, scheduler {name}"), format!("DR, IPv4 TCP, scheduler {name}, 2 reals"), new));
    }
    let mut out: Vec<Coverage> = wanted.into_iter().map(|(requested, case, path)| Coverage { requested, row: find(&case, path) }).collect();
    let not_vip = counter::NAMES[counter::PASS_NOT_VIP as usize];
    out.push(Coverage {
        requested: "non-VIP frame, passed".into(),
        row: rows.iter().position(|r| r.counter == not_vip && r.case.contains("another address") && r.path == PathKind::Passed),
    });
    out
}

/// Issue 12 point 2's targets, as ratios of this run. Each takes the worst row it covers.
fn targets(rows: &[Row], growth: &Growth, opts: &FastpathOptions) -> Vec<Target> {
    let worst = |pred: &dyn Fn(&Row) -> bool, ratio: &dyn Fn(&Row) -> Option<f64>| {
        rows.iter().filter(|r| pred(r)).filter_map(|r| ratio(r).map(|x| (x, r))).max_by(|a, b| a.0.total_cmp(&b.0))
    };
    let target = |name: &str, limit: f64, found: Option<(f64, &Row)>, what: &str| Target {
        target: name.into(),
        limit,
        measured: found.map(|(x, _)| x),
        note: found.map_or_else(|| format!("no {what} row measured"), |(_, r)| format!("{} ({})", r.case, r.path.label())),
        blocker: None,
        cause: None,
    };
    let forwarded = |r: &Row| r.counter.starts_with("tx_");
    let not_vip = counter::NAMES[counter::PASS_NOT_VIP as usize];
    vec![
        target(
            "established IPv4 TCP DR ≤ 2.0× the floor (swap-MACs XDP_TX)",
            2.0,
            worst(&|r| r.case == "DR, IPv4 TCP" && r.path == PathKind::Established, &|r| Some(r.x_floor)),
            "DR established",
        ),
        target(
            "every established path (DR/NAT/TUN, v4/v6) ≤ 0.5× Katran's established path",
            0.5,
            worst(&|r| forwarded(r) && r.path == PathKind::Established, &|r| r.x_katran),
            "established",
        ),
        target(
            "every new-flow path ≤ 0.5× Katran's SYN path",
            0.5,
            worst(&|r| forwarded(r) && r.path == PathKind::NewFlow, &|r| r.x_katran),
            "new-flow",
        ),
        target(
            "a frame for no VIP ≤ 1.5× the floor",
            1.5,
            worst(&|r| r.counter == not_vip && r.case.contains("another address"), &|r| Some(r.x_floor)),
            "non-VIP",
        ),
        growth_target(growth, opts),
    ]
}

fn growth_target(g: &Growth, opts: &FastpathOptions) -> Target {
    let flows = |who: &str| g.rows.iter().filter(|r| r.balancer == who).map(|r| r.flows).max().unwrap_or(0);
    let (xlb_many, katran_many) = (flows("xlb"), flows("Katran"));
    let target = "with 1M live flows, established DR grows no more than Katran's from 1k to 1M flows (ratio of the growths)";
    if g.rows.is_empty() {
        return Target { target: target.into(), limit: 1.0, measured: None, note: "live flows not measured in this run".into(), blocker: None, cause: None };
    }
    Target {
        target: target.into(),
        limit: 1.0,
        measured: Some(g.xlb_growth / g.katran_growth),
        note: format!(
            "xlb {:.2}× from {} to {xlb_many} flows, Katran {:.2}× from {} to {katran_many} flows",
            g.xlb_growth, opts.few_flows, g.katran_growth, opts.few_flows
        ),
        blocker: (xlb_many < opts.many_flows).then(|| format!("xlb's connection table holds {MAX_CONNS} flows, so it was filled to {xlb_many}, not {}", opts.many_flows)),
        cause: None,
    }
}

/// Fills in [`Target::cause`] of each missed target from this run's figures: the time
/// the limit leaves the whole path beyond the test run's own cost (`drop`), against
/// what the path's unavoidable kernel primitives cost alone (`primitives`).
fn explain_misses(targets: &mut [Target], rows: &[Row], growth: &Growth, primitives: &[super::primitives::PrimitiveRow], drop: f64, floor: f64) {
    use super::primitives::{COMPACT_HIT, FLOW_HIT, FLOW_HIT_MANY, FLOW_MISS, LRU_INSERT};
    let alone = |name: &str| primitives.iter().find(|p| p.primitive == name).map(|p| p.ns_alone);
    let row_alone = |pred: &dyn Fn(&Row) -> bool| rows.iter().find(|r| pred(r)).map(|r| r.ns_per_packet - drop);
    let (Some(hit), Some(miss), Some(compact), Some(insert)) = (alone(FLOW_HIT), alone(FLOW_MISS), alone(COMPACT_HIT), alone(LRU_INSERT)) else {
        return;
    };
    // The deciding row (the target's note names it) and Katran's time it was compared with.
    let decider = |t: &Target| rows.iter().find(|r| format!("{} ({})", r.case, r.path.label()) == t.note);
    let katran = |t: &Target| -> Option<(f64, f64)> {
        let r = decider(t)?;
        t.measured.filter(|m| *m > 0.0).map(|m| (r.ns_per_packet / m, r.ns_per_packet - drop))
    };
    for (i, t) in targets.iter_mut().enumerate() {
        if t.met() != Some(false) || t.blocker.is_some() {
            continue;
        }
        let cause = match i {
            0 => {
                let budget = t.limit * floor - drop;
                let path = row_alone(&|r| r.case == "DR, IPv4 TCP" && r.path == PathKind::Established);
                Some(format!(
                    "{:.1}× the floor leaves {budget:.1} ns beyond the test run's own {drop:.1} ns; the path needs one flow-table lookup, which alone costs {hit:.1} ns ({compact:.1} ns with a compact 16-byte IPv4 key), and its real's; the whole path costs {:.1} ns",
                    t.limit,
                    path.unwrap_or(f64::NAN)
                ))
            }
            1 => katran(t).map(|(k, path)| {
                let budget = t.limit * k - drop;
                format!(
                    "{:.1}× Katran's {k:.1} ns leaves {budget:.1} ns beyond the test run's own cost; that path costs {path:.1} ns alone, of which one flow-table lookup alone is {hit:.1} ns (a miss {miss:.1} ns)",
                    t.limit
                )
            }),
            2 => katran(t).map(|(k, path)| {
                let budget = t.limit * k - drop;
                format!(
                    "{:.1}× Katran's SYN ({k:.1} ns) leaves {budget:.1} ns beyond the test run's own cost; that path costs {path:.1} ns alone and needs a flow-table miss ({miss:.1} ns alone) and an LRU insert of the half-open entry ({insert:.1} ns alone), as Katran's SYN needs its LRU insert",
                    t.limit
                )
            }),
            3 => {
                let budget = t.limit * floor - drop;
                let arp = row_alone(&|r| r.case == "ARP request passes");
                Some(format!(
                    "{:.1}× the floor leaves {budget:.1} ns beyond the test run's own cost; the program's fixed part (an ARP frame, passed after its ethertype) costs {:.1} ns alone",
                    t.limit,
                    arp.unwrap_or(f64::NAN)
                ))
            }
            4 => alone(FLOW_HIT_MANY).filter(|_| !growth.rows.is_empty()).map(|many| {
                let ns = |who: &str, most: bool| {
                    let mut r: Vec<&GrowthRow> = growth.rows.iter().filter(|r| r.balancer == who).collect();
                    r.sort_by_key(|r| r.flows);
                    (if most { r.last() } else { r.first() }).map_or(f64::NAN, |r| r.ns_per_packet)
                };
                let (xlb_added, katran_added) = (ns("xlb", true) - ns("xlb", false), ns("Katran", true) - ns("Katran", false));
                format!(
                    "xlb's packet grows by {xlb_added:.1} ns, Katran's by {katran_added:.1} ns; one flow-table lookup alone grows by {:.1} ns ({hit:.1} → {many:.1} ns) from a hot entry to the many live entries in turn: cache misses of the larger table, {:.0} % of xlb's growth",
                    many - hit,
                    100.0 * (many - hit) / xlb_added
                )
            }),
            _ => None,
        };
        t.cause = cause;
    }
}

/// Fills the live flows of the growth rows: `n` flows from `base`, each made by a SYN
/// and (xlb) made ESTABLISHED by the client's ACK; the timed frame is a data segment of
/// each flow in turn.
pub fn fill_xlb(h: &mut Harness, syn: &Frame, base: u32, n: u32) -> Result<()> {
    let mut done = 0;
    while done < n {
        let count = FILL_CHUNK.min(n - done);
        let vary = Vary { offset: source_offset(syn), base: base + done, count: 0 };
        let (run, proof) = h.measured(&syn.bytes(), vary, count, counter::TX_DR, true)?;
        if run.verdict != XDP_TX || !(proof.counted == count as u64 && proof.new_conns == count as u64) {
            bail!("filling xlb's table with {n} flows, SYNs {done}..: {}", proof.summary());
        }
        let (run, proof) = h.measured(&tcp_flags(syn, ACK).bytes(), vary, count, counter::TX_DR, false)?;
        if run.verdict != XDP_TX || !proof.holds() {
            bail!("the ACKs of {n} flows, {done}..: {}", proof.summary());
        }
        done += count;
    }
    Ok(())
}

/// "A million live flows work": fills `n` established DR flows into xlb's connection
/// table (at its default size, as the growth rows do: SYN, then the ACK that promotes
/// it) and checks every 997th and the last is ESTABLISHED in CONNS.
pub fn fill_live_flows(h: &mut Harness, n: u32) -> Result<()> {
    let syn = Frame::tcp(VIP, fixtures::WEB.port, BENCH_SPORT + 1000);
    fill_xlb(h, &syn, GROWTH_BASES[1], n)?;
    let template = flow_key(&syn);
    for i in (0..n).step_by(997).chain(n.checked_sub(1)) {
        let key = FlowKey { src: addr::from_ip(varied_source_from(&syn, GROWTH_BASES[1], i)), ..template };
        if !h.maps.conns.get(&key, 0).is_ok_and(|e| e.state == tcp::ESTABLISHED) {
            bail!("flow {i} of {n} is not ESTABLISHED in the connection table");
        }
    }
    Ok(())
}

fn fill_katran(h: &mut Harness, katran: &mut Katran, syn: &Frame, base: u32, n: u32) -> Result<()> {
    let chunk = KATRAN_NEW_FLOW_ITERATIONS;
    let mut done = 0;
    while done < n {
        let count = chunk.min(n - done);
        katran.reset_conn_rate()?;
        let before = katran.counts()?;
        let vary = Vary { offset: source_offset(syn), base: base + done, count: 0 };
        let run = h.run(names::BALANCE_PROGRAM, &syn.bytes(), vary, count)?;
        let d = katran.counts()?.delta(&before);
        if run.verdict != XDP_TX || d.xdp_tx != count as u64 || d.syn_misses != count as u64 || katran.conn_rate()? != count as u64 {
            bail!("filling Katran's LRU with {n} flows: XDP_TX +{}, SYN misses +{} of {count}", d.xdp_tx, d.syn_misses);
        }
        done += count;
    }
    Ok(())
}

/// Established DR with few and many live flows, xlb and Katran, interleaved by round.
fn growth(h: &mut Harness, katran: &mut Katran, katran_fd: &ProgramFd, opts: &FastpathOptions) -> Result<Growth> {
    let syn = Frame::tcp(VIP, fixtures::WEB.port, BENCH_SPORT + 1000);
    let data = data_of(&syn).bytes();
    let xlb_many = opts.many_flows.min(XLB_MOST_FLOWS);
    // (balancer, flows, base)
    let sets = [("xlb", opts.few_flows, GROWTH_BASES[0]), ("xlb", xlb_many, GROWTH_BASES[1]), ("Katran", opts.few_flows, GROWTH_BASES[0]), ("Katran", opts.many_flows, GROWTH_BASES[1])];
    for (who, n, base) in sets {
        if who == "xlb" {
            fill_xlb(h, &syn, base, n)?;
        } else {
            h.tail_call(Some(katran_fd))?;
            let filled = fill_katran(h, katran, &syn, base, n);
            h.tail_call(None)?;
            filled?;
        }
    }
    let mut times: Vec<Vec<RoundTimes>> = vec![Vec::new(); sets.len()];
    let mut holds = [true; 4];
    let mut proofs = vec![String::new(); sets.len()];
    for _ in 0..opts.rounds {
        let drop = h.run(names::DROP_PROGRAM, &data, Vary::default(), opts.repeat)?.ns;
        for (i, (who, n, base)) in sets.into_iter().enumerate() {
            // Every flow of the set at least once.
            let repeat = opts.repeat.max(n);
            let vary = Vary { offset: source_offset(&syn), base, count: n };
            let restore = h.run(names::RESTORE_PROGRAM, &data, vary, repeat)?.ns;
            let wrapper = if who == "xlb" {
                let (run, proof) = h.measured(&data, vary, repeat, counter::TX_DR, false)?;
                holds[i] &= run.verdict == XDP_TX && proof.holds();
                proofs[i] = proof.summary();
                run.ns
            } else {
                h.tail_call(Some(katran_fd))?;
                let before = katran.counts();
                let run = h.run(names::BALANCE_PROGRAM, &data, vary, repeat);
                h.tail_call(None)?;
                let (before, run) = (before?, run?);
                let d = katran.counts()?.delta(&before);
                let ok = run.verdict == XDP_TX && d.xdp_tx == repeat as u64 && d.lru_lookups == repeat as u64 && d.lru_misses == 0;
                holds[i] &= ok;
                proofs[i] = format!("{} XDP_TX +{}/{repeat}, LRU hits +{}, misses +{}", if ok { "✓" } else { "✗" }, d.xdp_tx, d.lru_lookups - d.lru_misses, d.lru_misses);
                run.ns
            };
            times[i].push(RoundTimes { wrapper, restore, drop, swap_tx: f64::NAN });
        }
    }
    // A sample of xlb's many flows is still ESTABLISHED, none evicted.
    let template = flow_key(&syn);
    for i in (0..xlb_many).step_by(997) {
        let key = FlowKey { src: addr::from_ip(varied_source_from(&syn, GROWTH_BASES[1], i)), ..template };
        holds[1] &= h.maps.conns.get(&key, 0).is_ok_and(|e| e.state == tcp::ESTABLISHED);
    }
    let growth_of = |few: usize, many: usize| median(&times[few].iter().zip(&times[many]).map(|(f, m)| m.ns_per_packet() / f.ns_per_packet()).collect::<Vec<_>>());
    let rows = sets
        .iter()
        .enumerate()
        .map(|(i, (who, n, _))| GrowthRow {
            balancer: who.to_string(),
            flows: *n,
            repeat: opts.repeat.max(*n),
            ns_per_packet: RoundTimes::median_of(&times[i], |t| t.ns_per_packet()),
            proof_holds: holds[i],
            proof: proofs[i].clone(),
        })
        .collect();
    Ok(Growth { rows, xlb_growth: growth_of(0, 1), katran_growth: growth_of(2, 3) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(measured: Option<f64>, blocker: Option<&str>) -> Target {
        Target { target: "t".into(), limit: 0.5, measured, note: String::new(), blocker: blocker.map(String::from), cause: None }
    }

    #[test]
    fn targets_say_met_or_by_how_much_they_are_missed() {
        assert_eq!(target(Some(0.4), None).met(), Some(true));
        assert!(target(Some(0.4), None).verdict().starts_with("met (0.40×"));
        assert_eq!(target(Some(1.5), None).met(), Some(false));
        assert!(target(Some(1.5), None).verdict().starts_with("missed by 3.00× (1.50×"));
        assert_eq!(target(None, None).met(), None);
        assert_eq!(target(Some(0.1), Some("too small")).met(), Some(false));
        assert!(target(Some(0.1), Some("too small")).verdict().starts_with("missed: too small; met"));
    }

    #[test]
    fn varied_flows_are_the_wrappers_addresses() {
        let syn4 = Frame::tcp(VIP, 80, 1);
        assert_eq!(source_offset(&syn4), 26);
        assert_eq!(varied_source(&syn4, 5), IpAddr::V4(Ipv4Addr::new(11, 0, 0, 5)));
        let tagged6 = Frame { vlan: vec![(ETH_P_8021Q, 10)], ..Frame::tcp(VIP6, 80, 1) };
        assert_eq!(source_offset(&tagged6), 14 + 4 + 8 + 12);
        let IpAddr::V6(a) = varied_source(&tagged6, 1) else { panic!("IPv6") };
        assert_eq!(a.octets()[12..], (NEW_FLOW_BASE + 1).to_be_bytes());
        // The bytes the wrapper writes are those of the address computed here.
        let frame = tagged6.bytes();
        let at = source_offset(&tagged6) as usize;
        assert_eq!(frame[at - 12..at], a.octets()[..12]);
    }
}

