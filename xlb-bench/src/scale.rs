//! Section 4: how xlb behaves as tables grow. Fast-path cost with many live flows,
//! time to load many services, delay from an `xlb real add` to the fast path using the
//! new real, Maglev table rebuilds (once Maglev exists) and the maps' memory.
use std::{
    io::{Read, Write},
    net::TcpStream,
    os::fd::AsFd,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use aya::maps::{IterableMap, MapData};
use lb_common::{MAX_CONNS, MAX_REALS, MAX_REALS_PER_SERVICE, MAX_SERVICES, bench as names, counter};
use serde::{Deserialize, Serialize};

use super::{
    fastpath::{Harness, Proof, RoundTimes, Vary, source_address_offset},
    median,
};
use xlb_core::{
    loader,
    maps::Maps,
    ops::{self, Proto, Scheduler, Service},
};
use xlb_testkit::{
    fixtures::{self, Frame, VIP},
    testbed::{self, DrCluster},
};

/// Source addresses of the flows that fill the connection table (12.0.0.0…).
const FILL_BASE: u32 = 0x0c00_0000;

#[derive(Clone, Debug)]
pub struct ScaleOptions {
    pub repeat: u32,
    pub rounds: usize,
    /// Live flows in the connection table while the fast path is timed.
    pub flow_counts: Vec<u32>,
    /// (services, reals per service) loaded through ops.
    pub load_sizes: Vec<(u32, u32)>,
    /// `xlb real add` delay trials (0: skip, it needs namespaces).
    pub add_real_trials: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FlowScaleRow {
    pub flows: u32,
    /// Established flows taken in turn from all `flows` live ones; same arithmetic as
    /// section 1 (wrapper − restore-only + bare XDP_DROP), median of rounds.
    pub ns_per_packet: f64,
    pub vs_drop: f64,
    /// Flows actually in the table after filling it (the LRU may evict early).
    pub flows_in_table: u64,
    pub proof: Proof,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoadRow {
    pub services: u32,
    pub reals_per_service: u32,
    pub seconds: f64,
    pub us_per_real: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AddRealDelay {
    pub trials: usize,
    /// `xlb real add` from start to exit (the map update is visible when it exits).
    pub command_ms: f64,
    /// From the command's start to the first new connection the fast path sent to the
    /// new real (a client opens connections back to back meanwhile).
    pub first_use_ms: f64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ScaleResults {
    pub flows: Vec<FlowScaleRow>,
    pub load: Vec<LoadRow>,
    pub add_real: Option<AddRealDelay>,
    pub maglev: String,
    /// (map, bytes charged to it by the kernel: fdinfo memlock).
    pub map_memory: Vec<(String, u64)>,
    pub notes: Vec<String>,
}

pub fn run(xlb: &Path, opts: &ScaleOptions) -> Result<ScaleResults> {
    let mut notes = vec![format!("connection table: {MAX_CONNS} entries (--max-conns' default); flows made by SYN and ACK, timed by their ACKs")];
    let flows = flow_scale(opts)?;
    let load = load_times(&opts.load_sizes)?;
    if let [small, .., large] = load.as_slice()
        && large.us_per_real > 3.0 * small.us_per_real
    {
        notes.push(format!(
                "service loading grows faster than the number of reals ({:.0} µs per real at {} reals, {:.0} at {}): ops looks for a free real id by reading REALS from slot 0 up, one map lookup per slot",
                small.us_per_real,
                small.services * small.reals_per_service,
                large.us_per_real,
                large.services * large.reals_per_service
        ));
    }
    let largest = largest_load(100);
    notes.push(format!(
        "service loading: 10k services × 100 reals is beyond the limits (MAX_SERVICES {MAX_SERVICES}, MAX_REALS_PER_SERVICE {MAX_REALS_PER_SERVICE}, MAX_REALS {MAX_REALS} in all); the largest at 100 reals per service is {} × 100",
        largest.0
    ));
    let add_real = if opts.add_real_trials > 0 { Some(add_real_delay(xlb, opts.add_real_trials)?) } else { None };
    let maglev = maglev_rebuilds(&[10, 100, 1000]);
    let harness = Harness::load()?;
    let map_memory = map_memory(&harness.maps)?;
    Ok(ScaleResults { flows, load, add_real, maglev, map_memory, notes })
}

/// The largest (services, reals per service) the limits allow at `per_service` reals.
pub fn largest_load(per_service: u32) -> (u32, u32) {
    ((MAX_REALS / per_service).min(MAX_SERVICES), per_service.min(MAX_REALS_PER_SERVICE))
}

fn flow_scale(opts: &ScaleOptions) -> Result<Vec<FlowScaleRow>> {
    let mut h = Harness::load()?;
    let _pin = super::CpuPin::current()?;
    let syn_frame = Frame::tcp(VIP, fixtures::WEB.port, 40000);
    let syn = syn_frame.bytes();
    // The timed packet: an ACK of an established flow (each flow made by SYN and ACK).
    let ack = Frame { tcp_flags: lb_common::tcp::FLAG_ACK, ..syn_frame.clone() }.bytes();
    let offset = source_address_offset(&syn).context("the fixture SYN has a source address")?;
    let mut rows: Vec<FlowScaleRow> = opts
        .flow_counts
        .iter()
        .map(|&flows| FlowScaleRow { flows, ns_per_packet: 0.0, vs_drop: 0.0, flows_in_table: 0, proof: Proof::empty() })
        .collect();
    let mut times: Vec<Vec<RoundTimes>> = vec![Vec::new(); rows.len()];
    for _ in 0..opts.rounds {
        for (i, &flows) in opts.flow_counts.iter().enumerate() {
            h.flush_conns()?;
            super::fastpath::fill_xlb(&mut h, &syn_frame, FILL_BASE, flows).with_context(|| format!("filling the table with {flows} flows"))?;
            let in_table = h.maps.conns.keys().count() as u64;
            let established = Vary { offset, base: FILL_BASE, count: flows };
            let drop = h.run(names::DROP_PROGRAM, &ack, Vary::default(), opts.repeat)?.ns;
            let restore = h.run(names::RESTORE_PROGRAM, &ack, established, opts.repeat)?.ns;
            let (run, mut proof) = h.measured(&ack, established, opts.repeat, counter::TX_DR, false)?;
            proof.output_matches = run.verdict == fixtures::XDP_TX;
            times[i].push(RoundTimes { wrapper: run.ns, restore, drop, swap_tx: f64::NAN });
            rows[i].proof.add(&proof);
            rows[i].flows_in_table = in_table;
        }
    }
    h.flush_conns()?;
    for (row, times) in rows.iter_mut().zip(&times) {
        row.ns_per_packet = RoundTimes::median_of(times, |t| t.ns_per_packet());
        row.vs_drop = RoundTimes::median_of(times, |t| t.ns_per_packet() / t.drop);
    }
    Ok(rows)
}

/// Time to build the 65537-slot Maglev table for n reals of equal weight (the
/// controller's share of a rebuild; writing it to the pool is in `load_times`).
fn maglev_rebuilds(sizes: &[u32]) -> String {
    sizes
        .iter()
        .map(|&n| {
            let keys: Vec<u32> = (0..n).map(|i| 0x0a00_0000 + i + 1).collect();
            let weights = vec![1; n as usize];
            let rounds = 5;
            let start = Instant::now();
            for _ in 0..rounds {
                std::hint::black_box(xlb_core::tables::maglev_table(&keys, &weights));
            }
            format!("{n} reals {:.2} ms", start.elapsed().as_secs_f64() * 1e3 / rounds as f64)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Time to add `services` services of `reals` reals each through ops, into a fresh
/// instance (MACs given, as the config loader has them once resolved).
fn load_times(sizes: &[(u32, u32)]) -> Result<Vec<LoadRow>> {
    let mut rows = Vec::new();
    for &(services, reals) in sizes {
        let mut ebpf = loader::load_sized(&xlb_core::sizes::TableSizes::default())?;
        let mut maps = Maps::take(&mut ebpf, None)?;
        let target = fixtures::RS1;
        let start = Instant::now();
        for s in 0..services {
            let svc = Service { proto: Proto::Tcp, vip: std::net::Ipv4Addr::from(0x0a64_0000 + s).into(), port: 80 };
            let id = ops::ServiceId::Addr(svc);
            ops::add_service(&mut maps, id, ops::ServiceOptions { scheduler: Scheduler::Rr, ..Default::default() })?;
            for r in 0..reals {
                ops::add_real(&mut maps, id, std::net::Ipv4Addr::from(0x0a00_0000 + r + 1), ops::RealOptions::default(), target)?;
            }
        }
        let seconds = start.elapsed().as_secs_f64();
        rows.push(LoadRow { services, reals_per_service: reals, seconds, us_per_real: seconds * 1e6 / (services * reals).max(1) as f64 });
    }
    Ok(rows)
}

fn map_memory(maps: &Maps) -> Result<Vec<(String, u64)>> {
    let all: [(&str, &MapData); 11] = [
        ("SERVICES", maps.services.map()),
        ("SERVICE_INFO", maps.service_info.map()),
        ("POOL", maps.pool.map()),
        ("REALS", maps.reals.map()),
        ("REAL_LOAD", maps.real_load.map()),
        ("CONNS", maps.conns.map()),
        ("PERSIST", maps.persist.map()),
        ("SETTINGS", maps.settings.map()),
        ("RR_CURSORS", maps.rr_cursors.map()),
        ("REAL_STATS", maps.real_stats.map()),
        ("COUNTERS", maps.counters.map()),
    ];
    all.iter().map(|(name, map)| Ok((name.to_string(), memlock(map)?))).collect()
}

/// Bytes the kernel charges to a map (fdinfo's `memlock`).
fn memlock(map: &MapData) -> Result<u64> {
    use std::os::fd::AsRawFd;
    let fd = map.fd().as_fd().as_raw_fd();
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))?;
    info.lines()
        .find_map(|l| l.strip_prefix("memlock:").map(|v| v.trim().parse::<u64>()))
        .context("no memlock in the map's fdinfo")?
        .context("memlock is not a number")
}

/// Delay from `xlb real add` to the fast path sending new connections to the new real,
/// in the namespace test bed (SKB mode, HTTP servers naming themselves).
fn add_real_delay(xlb: &Path, trials: usize) -> Result<AddRealDelay> {
    let mut cluster = DrCluster::build(xlb, 2, xlb_core::loader::AttachMode::Skb)?;
    cluster.start_balancer()?;
    let service = format!("{}:80", testbed::VIP);
    let (rs1, rs2) = (cluster.reals[0].ip.to_string(), cluster.reals[1].ip.to_string());
    cluster.xlb(&["service", "add", "tcp", &service])?;
    cluster.xlb(&["real", "add", "tcp", &service, &rs1])?;
    // The director knows rs2's MAC already: the figure is xlb's, not ARP's.
    let rs2_ip = cluster.reals[1].ip;
    super::in_netns(&cluster.director, move || TcpStream::connect((rs2_ip, 80)).map(drop))??;
    let mut command_ms = Vec::new();
    let mut first_use_ms = Vec::new();
    for _ in 0..trials {
        let stop = Arc::new(AtomicBool::new(false));
        let start = Instant::now();
        let prober = {
            let (stop, ns) = (stop.clone(), cluster.client.path());
            std::thread::spawn(move || probe_until_rs2(&ns, start, &stop))
        };
        let t0 = Instant::now();
        let out = cluster.xlb_command(&["real", "add", "tcp", &service, &rs2]).output()?;
        let command = t0.elapsed();
        if !out.status.success() {
            stop.store(true, Ordering::SeqCst);
            bail!("xlb real add failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let seen = prober.join().map_err(|_| anyhow::anyhow!("prober panicked"))??;
        command_ms.push(command.as_secs_f64() * 1e3);
        first_use_ms.push(seen.saturating_sub(t0 - start).as_secs_f64() * 1e3);
        cluster.xlb(&["real", "del", "tcp", &service, &rs2])?;
    }
    Ok(AddRealDelay { trials, command_ms: median(&command_ms), first_use_ms: median(&first_use_ms) })
}

/// Opens connections to the VIP back to back from the client namespace until rs2
/// answers; returns when (since `start`) the connection rs2 answered was opened.
fn probe_until_rs2(netns: &Path, start: Instant, stop: &AtomicBool) -> Result<Duration> {
    let file = std::fs::File::open(netns)?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).context("setns")?;
    let deadline = start + Duration::from_secs(10);
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        let opened = start.elapsed();
        let mut conn = TcpStream::connect((testbed::VIP, 80))?;
        conn.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
        let mut reply = String::new();
        conn.read_to_string(&mut reply)?;
        if reply.ends_with("rs2\n") {
            return Ok(opened);
        }
    }
    bail!("rs2 got no connection within 10 s of `xlb real add`")
}
