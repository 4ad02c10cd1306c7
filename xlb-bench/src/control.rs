//! Section 5: the controller at scale (issue 13 point 2), each figure against its
//! target: `xlb apply` of 10,000 services × 10 reals and of 1,000 × 100, `ipvsadm -R` of
//! a 100,000-line save file, a real added until the fast path can schedule it, and a
//! Maglev rebuild of 1,000 reals. Measured in this process on freshly loaded maps (the
//! daemon's work for each request: parse, model, one batched commit), in a network
//! namespace of its own with no routes, so next-hop resolution answers at once: the
//! figures are the controller's, not ARP's.
use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr},
    time::Instant,
};

use anyhow::{Context, Result, bail};
use lb_common::{MAX_REALS, MAX_SERVICES};
use serde::{Deserialize, Serialize};

use crate::median;
use xlb_core::{
    api::Request,
    config::{self, Config, ServiceConfig},
    ipvsadm, loader,
    maps::Maps,
    netns::Netns,
    nexthop,
    ops::{self, NextHop, Proto, RealAddr, RealOptions, Scheduler, Service, ServiceId, ServiceOptions},
    reconcile,
};

#[derive(Clone, Debug)]
pub struct ControlOptions {
    /// `xlb apply` sizes: (services, reals per service).
    pub apply_sizes: Vec<(u32, u32)>,
    /// Lines of the `ipvsadm -R` save file (one -A per 10 lines, then nine -a).
    pub restore_lines: u32,
    /// Trials of the real-add and Maglev measurements (medians).
    pub trials: usize,
    pub maglev_reals: u32,
    /// Rounds of the apply and restore measurements (median).
    pub rounds: usize,
}

impl ControlOptions {
    pub fn full() -> Self {
        Self { apply_sizes: vec![(10_000, 10), (1_000, 100)], restore_lines: 100_000, trials: 21, maglev_reals: 1_000, rounds: 3 }
    }
    pub fn quick() -> Self {
        Self { apply_sizes: vec![(20, 10), (5, 20)], restore_lines: 200, trials: 3, maglev_reals: 50, rounds: 1 }
    }
}

/// One figure and its target.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ControlRow {
    pub what: String,
    /// Median over the rounds or trials, seconds.
    pub seconds: f64,
    pub target_seconds: f64,
    pub met: bool,
    /// Map writes the measured commit made, for the reader to see it is a diff.
    pub detail: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ControlResults {
    pub rows: Vec<ControlRow>,
    pub notes: Vec<String>,
}

fn row(what: String, seconds: f64, target_seconds: f64, detail: String) -> ControlRow {
    ControlRow { what, seconds, target_seconds, met: seconds <= target_seconds, detail }
}

pub fn run(opts: &ControlOptions) -> Result<ControlResults> {
    let ns = Netns::create(&format!("xlb-ctl-{}", xlb_core::netns::run_id()))?;
    let opts = opts.clone();
    crate::in_netns(&ns, move || measure(&opts))?
}

fn measure(opts: &ControlOptions) -> Result<ControlResults> {
    let mut rows = Vec::new();
    let mut notes = vec![format!("limits: {MAX_SERVICES} services, {MAX_REALS} reals (lb_common::MAX_SERVICES, MAX_REALS)")];
    for &(services, reals) in &opts.apply_sizes {
        let (seconds, detail) = apply_time(services, reals, opts.rounds)?;
        rows.push(row(format!("xlb apply, {services} services × {reals} reals"), seconds, 1.0, detail));
    }
    let (seconds, detail) = restore_time(opts.restore_lines, opts.rounds)?;
    rows.push(row(format!("xlb ipvsadm -R, {} lines", opts.restore_lines), seconds, 2.0, detail));
    let (seconds, detail) = add_real_time(&opts.apply_sizes[0], opts.trials)?;
    rows.push(row("xlb real add → schedulable (controller side, median)".into(), seconds, 0.001, detail));
    let (seconds, detail) = maglev_time(opts.maglev_reals, opts.trials)?;
    rows.push(row(format!("Maglev rebuild, {} reals (table, pool write, flip; median)", opts.maglev_reals), seconds, 0.005, detail));
    notes.push("next hops: each address is resolved once per apply or restore (one wait for all), as the daemon does".into());
    Ok(ControlResults { rows, notes })
}

fn fresh_maps() -> Result<(aya::Ebpf, Maps)> {
    // The tables at the daemon's default sizes (`xlb run` without --max-services …).
    let mut ebpf = loader::load_sized(&xlb_core::sizes::TableSizes::default())?;
    let maps = Maps::take(&mut ebpf, None)?;
    Ok((ebpf, maps))
}

fn vip(s: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a64_0000 + s))
}

fn real_ip(r: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a01_0000 + r + 1))
}

fn config_of(services: u32, reals: u32, scheduler: Scheduler) -> Config {
    let services = (0..services)
        .map(|s| ServiceConfig {
            id: ServiceId::Addr(Service { proto: Proto::Tcp, vip: vip(s), port: 80 }),
            options: ServiceOptions { scheduler, ..Default::default() },
            frontends: Vec::new(),
            reals: (0..reals).map(|r| (RealAddr { ip: real_ip(r), port: None }, RealOptions::default())).collect(),
            sorry_server: None,
            health: None,
            real_health: Default::default(),
        })
        .collect();
    Config { settings: None, services, bgp: None }
}

/// The daemon's `Apply`: parse the TOML, reconcile (one batch), save the state file's text.
fn apply_time(services: u32, reals: u32, rounds: usize) -> Result<(f64, String)> {
    let text = config::to_toml(&config_of(services, reals, Scheduler::Rr));
    let mut times = Vec::new();
    let mut detail = String::new();
    for _ in 0..rounds {
        let (_ebpf, mut maps) = fresh_maps()?;
        let start = Instant::now();
        let cfg = config::parse(&text)?;
        let changes = reconcile::apply(&mut maps, &cfg)?;
        let saved = config::to_toml(&reconcile::current(&maps)?);
        times.push(start.elapsed().as_secs_f64());
        if changes.reals_added != (services * reals) as usize || saved.is_empty() {
            bail!("apply added {} reals, not {}", changes.reals_added, services * reals);
        }
        let listed = ops::snapshot(&maps)?;
        if listed.len() != services as usize || listed.iter().any(|s| s.reals.len() != reals as usize) {
            bail!("after apply the maps list {} services", listed.len());
        }
        detail = format!("{} services, {} reals in the maps", listed.len(), listed.iter().map(|s| s.reals.len()).sum::<usize>());
    }
    Ok((median(&times), detail))
}

/// An ipvsadm-save file of `lines` lines: one -A then nine -a per service.
fn save_file(lines: u32) -> String {
    let mut text = String::new();
    for s in 0..lines.div_ceil(10) {
        let v = vip(s);
        let _ = writeln!(text, "-A -t {v}:80 -s rr");
        for r in 0..9 {
            let _ = writeln!(text, "-a -t {v}:80 -r {}:80 -g -w 1", real_ip(r));
        }
    }
    text.lines().take(lines as usize).map(|l| format!("{l}\n")).collect()
}

/// `ipvsadm -R`: parse the file, then every request in one batch (the daemon's `Batch`).
fn restore_time(lines: u32, rounds: usize) -> Result<(f64, String)> {
    let text = save_file(lines);
    let mut times = Vec::new();
    let mut detail = String::new();
    for _ in 0..rounds {
        let (_ebpf, mut maps) = fresh_maps()?;
        let start = Instant::now();
        let requests = ipvsadm::restore_requests(&text).map_err(|e| anyhow::anyhow!("{}", e.message))?;
        let ips: Vec<IpAddr> = requests
            .iter()
            .filter_map(|(_, r)| match r {
                Request::AddReal { address, .. } => Some(address.ip),
                _ => None,
            })
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let hops: std::collections::BTreeMap<IpAddr, NextHop> =
            ips.iter().copied().zip(nexthop::lookup_many_soliciting(&ips)).collect();
        let n = requests.len();
        ops::batch(&mut maps, |maps| {
            for (line, req) in requests {
                match req {
                    Request::AddService { service, options } => ops::add_service(maps, service, options),
                    Request::AddReal { service, address, options } => {
                        ops::add_real(maps, service, address, options, hops[&address.ip]).map(drop)
                    }
                    other => bail!("line {line}: the bench's save file holds only -A and -a, not {other:?}"),
                }
                .with_context(|| format!("line {line}"))?;
            }
            Ok(())
        })?;
        times.push(start.elapsed().as_secs_f64());
        let listed = ops::snapshot(&maps)?;
        detail = format!("{n} requests: {} services, {} reals", listed.len(), listed.iter().map(|s| s.reals.len()).sum::<usize>());
        if listed.iter().map(|s| s.reals.len() + 1).sum::<usize>() != lines as usize {
            bail!("after -R the maps hold {detail}, not {lines} lines' worth");
        }
    }
    Ok((median(&times), detail))
}

/// With `size` loaded, a real added to one rr service until its entry is flipped (the
/// fast path schedules the new real from the next connection on); then removed and
/// freed again for the next trial.
fn add_real_time(size: &(u32, u32), trials: usize) -> Result<(f64, String)> {
    let (services, reals) = *size;
    let (_ebpf, mut maps) = fresh_maps()?;
    reconcile::apply(&mut maps, &config_of(services, reals, Scheduler::Rr))?;
    let id = ServiceId::Addr(Service { proto: Proto::Tcp, vip: vip(services / 2), port: 80 });
    let new = RealAddr { ip: real_ip(reals), port: None };
    let mut times = Vec::new();
    for _ in 0..trials {
        let start = Instant::now();
        let real_id = ops::add_real(&mut maps, id, new, RealOptions::default(), NextHop::default())?;
        times.push(start.elapsed().as_secs_f64());
        let info = ops::find_service(&mut maps, id)?;
        let table: Vec<u32> = (info.table_off..info.table_off + info.table_len).map(|s| maps.pool.get(&s, 0)).collect::<Result<_, _>>()?;
        if !table.contains(&real_id) {
            bail!("the new real {real_id} is not in its service's table");
        }
        ops::remove_real(&mut maps, id, new)?;
        ops::sweep(&mut maps, &mut |_| Ok(false))?;
    }
    Ok((median(&times), format!("{services} services × {reals} reals loaded; {trials} trials")))
}

/// A Maglev service of `reals` reals; one real's weight changed per trial: the table
/// computed, written to fresh pool slots (batched) and flipped.
fn maglev_time(reals: u32, trials: usize) -> Result<(f64, String)> {
    let (_ebpf, mut maps) = fresh_maps()?;
    reconcile::apply(&mut maps, &config_of(1, reals, Scheduler::Mh))?;
    let id = ServiceId::Addr(Service { proto: Proto::Tcp, vip: vip(0), port: 80 });
    let mut times = Vec::new();
    let mut written = Vec::new();
    // One real's weight changes per trial, a different real each time (a health check's
    // dynamic weight, say): the first rebuild writes a fresh table, the next ones only
    // the slots that differ in the double-buffered region.
    for t in 0..trials as u32 {
        let opts = RealOptions { weight: 2 + t % 3, ..Default::default() };
        let start = Instant::now();
        ops::edit_real(&mut maps, id, RealAddr { ip: real_ip(t % reals), port: None }, opts)?;
        times.push(start.elapsed().as_secs_f64());
        written.push(maps.last_commit_entries() as f64);
    }
    let info = ops::find_service(&mut maps, id)?;
    if info.table_len != lb_common::hash::MH_TABLE_SIZE {
        bail!("the Maglev table has {} slots", info.table_len);
    }
    Ok((median(&times), format!("{} slots per table; map entries written per rebuild: median {:.0}, first {:.0}", info.table_len, median(&written), written[0])))
}
