//! The xlb daemon: owns the fast path's pinned maps and links and the desired state,
//! serves the local API, keeps MACs current, expires idle connections, measures rates.
//!
//! Restart safety: maps and XDP links are pinned in bpffs. A daemon that starts and finds
//! them adopts them — its freshly loaded program takes over each pinned link atomically
//! and works on the same maps — so a restart, an upgrade or a kill -9 neither detaches
//! the fast path nor forgets a connection. Only `xlb stop` (or `xlb run`'s Ctrl-C)
//! detaches and removes the pins. The desired state is saved (write, fsync, rename)
//! after every change and restored at start.
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fs,
    io::Write,
    net::{IpAddr, SocketAddr},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use aya::Ebpf;
use lb_common::{RealStats, SyncEvent, map_names, tcp};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    signal::unix::{SignalKind, signal},
    sync::{mpsc, oneshot, watch},
};

use crate::{
    api::{self, Paths, Reply, Request, Response, SettingsChange, SettingsView, StatusView},
    bgp,
    sizes::{self, MapMemory, TableSizes},
    config::{self, Config},
    health::{self, Checker, HealthConfig, OnFailure, RealKey, Verdict},
    l2,
    loader::{self, AttachMode},
    maps::{self, Maps},
    nexthop, observe,
    ops::{self, RealAddr, RealOptions, Refusal, ServiceId},
    reconcile::{self, Changes},
    rtnl, run, sd_notify,
    sync::{self, Role},
    web,
};

const TICK: Duration = Duration::from_secs(2);
/// How often every real's next hop is looked up again although no neighbour or route
/// change was announced (one could have been lost: a full netlink socket drops them).
const RESYNC: Duration = Duration::from_secs(30);

pub struct DaemonOptions {
    pub ifaces: Vec<String>,
    pub mode: AttachMode,
    /// Config file: applied at start when there is no saved state, and on reload.
    pub config: Option<PathBuf>,
    /// `config` is a keepalived.conf (`--keepalived-conf`), imported on every read.
    pub keepalived: bool,
    pub paths: Paths,
    /// Detach and remove the pins when the process is asked to stop (`xlb run`);
    /// otherwise a SIGTERM/SIGINT leaves the fast path running for the next daemon.
    pub detach_on_exit: bool,
    /// Metrics endpoint and status page (none by default).
    pub web: web::WebOptions,
    /// The fast path's aya-log level (`--fastpath-log`): its records go to tracing.
    pub fastpath_log: loader::LogLevel,
    /// Table sizes for maps created at this start (`--max-conns` …).
    pub sizes: TableSizes,
    /// VIP announcement through BIRD from the command line (`--bird-vips` …): each
    /// field given overrides the config file's `[bgp]`.
    pub bgp: config::BgpSection,
    /// Connection sync daemons to start with the daemon (`--sync-daemon` …).
    pub sync: Vec<sync::DaemonConfig>,
    /// How often a master sends its active connections again (`--sync-refresh-period`).
    pub sync_refresh: Duration,
}

/// Per-real rates over the last sampling interval.
#[derive(Default)]
struct Rates {
    last: HashMap<u32, RealStats>,
    last_at: Option<Instant>,
    per_real: HashMap<u32, (u64, u64, u64)>,
}

impl Rates {
    fn sample(&mut self, maps: &Maps) -> Result<()> {
        let now = Instant::now();
        let secs = self.last_at.map(|t| now.duration_since(t).as_secs_f64());
        let mut current = HashMap::new();
        for svc in ops::snapshot(maps)? {
            for r in svc.reals {
                let s = RealStats { packets: r.packets, bytes: r.bytes, conns: r.conns, ..Default::default() };
                if let (Some(secs), Some(prev)) = (secs, self.last.get(&r.id)) {
                    let per_sec = |now: u64, before: u64| (now.saturating_sub(before) as f64 / secs).round() as u64;
                    self.per_real
                        .insert(r.id, (per_sec(s.conns, prev.conns), per_sec(s.packets, prev.packets), per_sec(s.bytes, prev.bytes)));
                }
                current.insert(r.id, s);
            }
        }
        self.last = current;
        self.last_at = Some(now);
        Ok(())
    }

    fn fill(&self, services: &mut [ops::ServiceView]) {
        for r in services.iter_mut().flat_map(|s| s.reals.iter_mut()) {
            if let Some(&(cps, pps, bps)) = self.per_real.get(&r.id) {
                (r.cps, r.in_pps, r.in_bps) = (cps, pps, bps);
            }
        }
    }

    fn reset(&mut self) {
        *self = Rates::default();
    }
}

/// What the checker last said about a real: its verdict, kept across reloads, edits of
/// the check and daemon restarts until a check says otherwise.
#[derive(Clone, Debug)]
struct RealHealth {
    up: bool,
    reason: String,
    changes: u64,
    /// The weight a dynamic exec check set (None: the configured weight).
    weight: Option<u32>,
}

/// The health key of a real as a config names it (the port only where NAT maps it).
fn real_key(id: ServiceId, real: RealAddr) -> RealKey {
    let service_port = match id {
        ServiceId::Addr(a) => a.port,
        ServiceId::Fwmark(_) => 0,
    };
    (id, real.ip, real.port.unwrap_or(service_port))
}

struct Engine {
    maps: Maps,
    ebpf: Ebpf,
    rates: Rates,
    /// Health checks by service: part of the desired state, kept here (not in maps).
    health: BTreeMap<ServiceId, HealthConfig>,
    /// Reals with a check of their own (keepalived checks per real_server).
    real_checks: BTreeMap<(ServiceId, RealAddr), HealthConfig>,
    /// Services that lost their quorum (keepalived's quorum_state_up false).
    quorum_lost: HashSet<ServiceId>,
    checker: Checker,
    real_health: HashMap<RealKey, RealHealth>,
    /// The configured weight of each real whose weight in the maps a dynamic check set:
    /// the maps hold the effective weight, the saved state and reconciles the configured
    /// one (keepalived's iweight and effective_weight).
    configured_weight: HashMap<RealKey, u32>,
    opts_ifaces: Vec<String>,
    paths: Paths,
    config: Option<PathBuf>,
    keepalived: bool,
    /// Set by `Stop`: detach and unpin on the way out.
    stop_and_detach: bool,
    /// Each map's size and estimated memory, as loaded (pinned sizes kept).
    tables: Vec<MapMemory>,
    /// Next hops of the reals a batch adds, looked up together before it (each address
    /// once) instead of one by one.
    batch_hops: HashMap<IpAddr, ops::NextHop>,
    /// What the last lookup of every real's next hop found.
    next_hops: run::NextHops,
    /// The VIP announcement through BIRD, if configured, and its quorum.
    bgp: Option<(bgp::Announcer, u32)>,
    /// The config file's `[bgp]` at start (read only then).
    file_bgp: Option<config::BgpSection>,
    /// The connection sync daemons (IPVS's master and backup).
    sync: sync::Daemons,
}

fn link_pin(pin_dir: &Path, iface: &str) -> PathBuf {
    pin_dir.join(format!("link-{iface}"))
}

/// Saves `text` at `path` so that a crash leaves either the old or the new file.
pub fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let dir = path.parent().context("state file has no directory")?;
    fs::create_dir_all(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    fs::File::open(dir)?.sync_all()?;
    Ok(())
}

impl Engine {
    /// The desired state: the maps' configuration with configured (not dynamic) weights,
    /// plus the health checks.
    fn desired(&self) -> Result<Config> {
        let mut cfg = reconcile::current(&self.maps)?;
        for s in &mut cfg.services {
            s.health = self.health.get(&s.id).cloned();
            for (addr, opts) in &mut s.reals {
                if let Some(w) = self.configured_weight.get(&real_key(s.id, *addr)) {
                    opts.weight = *w;
                }
            }
            s.real_health =
                self.real_checks.iter().filter(|((id, _), _)| *id == s.id).map(|((_, r), h)| (*r, h.clone())).collect();
        }
        Ok(cfg)
    }

    /// `cfg` as the maps must hold it: a real whose dynamic check set a weight keeps that
    /// weight. Also returns the configured weights so overridden.
    fn effective(&self, cfg: &Config) -> (Config, HashMap<RealKey, u32>) {
        let mut eff = cfg.clone();
        let mut configured = HashMap::new();
        for s in &mut eff.services {
            if !s.health.as_ref().is_some_and(|h| h.dynamic) {
                continue;
            }
            for (addr, opts) in &mut s.reals {
                let key = real_key(s.id, *addr);
                if let Some(w) = self.real_health.get(&key).and_then(|h| h.weight) {
                    configured.insert(key, opts.weight);
                    opts.weight = w;
                }
            }
        }
        (eff, configured)
    }

    /// Brings the maps to `cfg` (apply, reload, start), keeping the weights dynamic checks
    /// set and the health verdicts; takes its health checks.
    fn apply_config(&mut self, cfg: &Config) -> Result<Changes> {
        let (eff, configured) = self.effective(cfg);
        let mut changes = reconcile::apply(&mut self.maps, &eff)?;
        self.configured_weight = configured;
        changes.health_checks_changed = self.adopt_health(cfg);
        Ok(changes)
    }

    /// At start on a running fast path: the verdicts the previous daemon left in the maps
    /// (a real down stays down, a weight a dynamic check set stays) stand until the
    /// checks say otherwise. `desired` holds the configured weights.
    fn restore_health(&mut self, desired: &Config) -> Result<()> {
        let running = ops::snapshot(&self.maps)?;
        for s in &desired.services {
            let Some(view) = running.iter().find(|v| v.id == s.id) else { continue };
            for (addr, opts) in &s.reals {
                // The real's own check (keepalived's per-real checkers), else its service's.
                let Some(h) = s.real_health.get(addr).or(s.health.as_ref()) else { continue };
                let key = real_key(s.id, *addr);
                let Some(r) = view.reals.iter().find(|r| r.address == key.1 && r.port == key.2) else { continue };
                let weight = (h.dynamic && r.weight != opts.weight).then_some(r.weight);
                let reason = "as the running fast path had it at start".to_string();
                self.real_health.insert(key, RealHealth { up: !r.health_down, reason, changes: 0, weight });
            }
        }
        Ok(())
    }

    /// The listed real `real` names in service `id` (without a port: the one real at
    /// that address).
    fn view_real(&self, id: ServiceId, real: RealAddr) -> Option<ops::RealView> {
        let service = ops::snapshot(&self.maps).ok()?.into_iter().find(|s| s.id == id)?;
        let mut found = service.reals.into_iter().filter(|r| r.address == real.ip && real.port.is_none_or(|p| p == r.port));
        let one = found.next()?;
        found.next().is_none().then_some(one)
    }

    /// The weight a real's dynamic check set, if its check is dynamic and set one.
    fn dynamic_weight(&self, key: &RealKey) -> Option<u32> {
        self.health.get(&key.0).filter(|h| h.dynamic)?;
        self.real_health.get(key)?.weight
    }

    /// Brings a real's weight in the maps to its effective weight: the one its dynamic
    /// check set, else the configured one. Recomputed from these two, never from what
    /// the maps hold (keepalived #187, #2720). True if the maps changed.
    fn apply_weight(&mut self, key: RealKey) -> Result<bool> {
        let (id, ip, port) = key;
        let Some(r) = self.view_real(id, RealAddr { ip, port: Some(port) }) else { return Ok(false) };
        let verdict = self.dynamic_weight(&key);
        let configured = self.configured_weight.get(&key).copied().unwrap_or(r.weight);
        match verdict {
            Some(_) => self.configured_weight.insert(key, configured),
            None => self.configured_weight.remove(&key),
        };
        let effective = verdict.unwrap_or(configured);
        if r.weight == effective {
            return Ok(false);
        }
        let opts = RealOptions { forward: r.forward, weight: effective, u_threshold: r.u_threshold, l_threshold: r.l_threshold };
        ops::edit_real(&mut self.maps, id, RealAddr { ip, port: Some(port) }, opts)?;
        Ok(true)
    }

    /// Takes the health checks of `cfg`; returns how many services' checks changed.
    fn adopt_health(&mut self, cfg: &Config) -> usize {
        let new: BTreeMap<ServiceId, HealthConfig> =
            cfg.services.iter().filter_map(|s| s.health.clone().map(|h| (s.id, h))).collect();
        let changed = new.iter().filter(|(id, h)| self.health.get(id) != Some(h)).count()
            + self.health.keys().filter(|id| !new.contains_key(id)).count();
        self.health = new;
        let per_real: BTreeMap<(ServiceId, RealAddr), HealthConfig> = cfg
            .services
            .iter()
            .flat_map(|s| s.real_health.iter().map(move |(r, h)| ((s.id, *r), h.clone())))
            .collect();
        let changed = changed
            + per_real.iter().filter(|(k, h)| self.real_checks.get(k) != Some(h)).count()
            + self.real_checks.keys().filter(|k| !per_real.contains_key(k)).count();
        self.real_checks = per_real;
        changed
    }

    /// The check of one real: its own, else its service's.
    fn check_of(&self, id: ServiceId, ip: IpAddr, port: u16) -> Option<&HealthConfig> {
        let real = RealAddr { ip, port: Some(port) }.canonical(id);
        self.real_checks.get(&(id, real)).or_else(|| self.health.get(&id))
    }

    /// A service's quorum settings (and failure policy): its check's, else the first of
    /// its reals' own (an import from keepalived gives them all the same).
    fn policy(&self, id: ServiceId) -> Option<&HealthConfig> {
        self.health.get(&id).or_else(|| self.real_checks.iter().find(|((s, _), _)| *s == id).map(|(_, h)| h))
    }

    /// Runs exactly the checks the desired state asks for, and brings the maps' health
    /// flags and weights in line with the verdicts.
    ///
    /// A real keeps its verdict when its check is restarted (a reload that changed the
    /// check, `xlb health set` again, a daemon restart): a real that is down stays down
    /// until the check passes `rise` times, one that is up stays up until it fails `fall`
    /// times. keepalived keeps the state of a checker whose identity is unchanged
    /// (check_daemon's migrate_checkers) but brings a down real up at once when its
    /// checker changed; a change of the check is not a recovery, so xlb keeps it down.
    /// A new real begins up (down with `alpha`), as in keepalived.
    fn sync_health(&mut self) -> Result<()> {
        let services = ops::snapshot(&self.maps)?;
        self.health.retain(|id, _| services.iter().any(|s| s.id == *id));
        self.real_checks.retain(|(id, _), _| services.iter().any(|s| s.id == *id));
        self.quorum_lost.retain(|id| services.iter().any(|s| s.id == *id));
        let mut targets = Vec::new();
        let vips: Vec<IpAddr> = services.iter().flat_map(|s| s.frontends.iter().map(|f| f.vip)).collect();
        let mut sources: HashMap<IpAddr, Option<IpAddr>> = HashMap::new();
        for s in &services {
            let inhibit = self.policy(s.id).is_some_and(|h| h.on_failure == OnFailure::Inhibit);
            ops::set_inhibit_on_failure(&mut self.maps, s.id, inhibit)?;
            for r in &s.reals {
                match self.check_of(s.id, r.address, r.port) {
                    Some(h) => {
                        let addr = SocketAddr::new(h.address.unwrap_or(r.address), h.port.unwrap_or(r.port));
                        let source = *sources.entry(addr.ip()).or_insert_with(|| nexthop::check_source(addr.ip(), &vips));
                        let config = h.clone();
                        targets.push(health::Target { service: s.id, real: r.address, port: r.port, addr, source, config });
                    }
                    // No check (any more): nobody may hold the real down.
                    None if r.health_down => {
                        ops::set_real_health(&mut self.maps, s.id, RealAddr { ip: r.address, port: Some(r.port) }, true)?
                    }
                    None => {}
                }
            }
        }
        self.real_health.retain(|k, _| targets.iter().any(|t| t.key() == *k));
        // A real no longer checked gets its configured weight back.
        let unchecked: Vec<(RealKey, u32)> =
            self.configured_weight.iter().filter(|(k, _)| !targets.iter().any(|t| t.key() == **k)).map(|(k, w)| (*k, *w)).collect();
        for ((id, ip, port), weight) in unchecked {
            self.configured_weight.remove(&(id, ip, port));
            let real = RealAddr { ip, port: Some(port) };
            if let Some(r) = self.view_real(id, real).filter(|r| r.weight != weight) {
                let opts = RealOptions { forward: r.forward, weight, u_threshold: r.u_threshold, l_threshold: r.l_threshold };
                ops::edit_real(&mut self.maps, id, real, opts)?;
            }
        }
        let Self { checker, real_health, .. } = self;
        let known: &HashMap<RealKey, RealHealth> = real_health;
        let started = checker.sync(targets, &|t| match known.get(&t.key()) {
            Some(h) => Verdict { up: h.up, weight: h.weight.filter(|_| t.config.dynamic) },
            None => Verdict { up: !t.config.alpha, weight: None },
        });
        for (t, begin) in started {
            let reason = if t.config.alpha { "waiting for its first checks (alpha)" } else { "not checked yet" };
            self.real_health
                .entry(t.key())
                .or_insert_with(|| RealHealth { up: begin.up, reason: reason.into(), changes: 0, weight: None });
            ops::set_real_health(&mut self.maps, t.service, RealAddr { ip: t.real, port: Some(t.port) }, begin.up)?;
        }
        // Only reals a dynamic check has set a weight for, or had: the others' weight is
        // the configured one already.
        let keys: Vec<RealKey> = self
            .real_health
            .iter()
            .filter(|(k, h)| h.weight.is_some() || self.configured_weight.contains_key(k))
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            self.apply_weight(key)?;
        }
        for s in &services {
            self.evaluate_sorry(s.id)?;
        }
        Ok(())
    }

    /// Sends new connections to the sorry server while fewer reals than the quorum are
    /// healthy, and back to the reals when enough are.
    fn evaluate_sorry(&mut self, id: ServiceId) -> Result<()> {
        let Some(view) = ops::snapshot(&self.maps)?.into_iter().find(|s| s.id == id) else { return Ok(()) };
        let policy = self.policy(id).cloned();
        let by_weight = policy.as_ref().is_some_and(|h| h.quorum_weight);
        let healthy: u32 = view.reals.iter().filter(|r| !r.health_down).map(|r| if by_weight { r.weight } else { 1 }).sum();
        let (quorum, hysteresis) = policy.as_ref().map_or((1, 0), |h| (h.quorum.max(1), h.hysteresis));
        // keepalived's update_quorum_state: lost below quorum - hysteresis (or with no
        // real left), regained at quorum + hysteresis.
        let was_lost = self.quorum_lost.contains(&id);
        let lost = if was_lost { healthy < quorum + hysteresis } else { healthy == 0 || healthy < quorum.saturating_sub(hysteresis) };
        if lost != was_lost {
            if lost {
                self.quorum_lost.insert(id);
            } else {
                self.quorum_lost.remove(&id);
            }
            let cmd = policy.as_ref().and_then(|h| if lost { h.quorum_down.clone() } else { h.quorum_up.clone() });
            if let Some(cmd) = cmd {
                notify_quorum(&cmd, id, if lost { "DOWN" } else { "UP" });
            }
        }
        let active = view.sorry_server.is_some() && lost;
        if ops::set_sorry_active(&mut self.maps, id, active)? {
            let sorry = view.sorry_server.map_or("-".into(), |s| s.to_string());
            if active {
                let unit = if by_weight { "of healthy reals' weight" } else { "healthy real(s)" };
                tracing::warn!("{id}: {healthy} {unit}, quorum {quorum}: sorry server {sorry} takes new connections");
            } else {
                tracing::info!("{id}: quorum regained: new connections go to the reals again");
            }
        }
        Ok(())
    }

    /// Applies what the checker reported: state changes, dynamic weights, notifications.
    fn process_health_events(&mut self, events: Vec<health::Event>) {
        let mut weight_changed = false;
        for ev in events {
            // A replaced or stopped check's late result says nothing about the real now.
            if !self.checker.is_current(&ev) {
                continue;
            }
            let key = ev.key();
            let entry = self.real_health.entry(key).or_insert_with(|| RealHealth {
                up: true,
                reason: String::new(),
                changes: 0,
                weight: None,
            });
            let changed = entry.up != ev.up;
            entry.up = ev.up;
            entry.reason = ev.reason.clone();
            if changed {
                entry.changes += 1;
            }
            // Only a passing check has a say on the weight.
            if ev.up {
                entry.weight = ev.weight;
            }
            let real = RealAddr { ip: ev.real, port: Some(ev.port) };
            let shown = SocketAddr::new(ev.real, ev.port);
            if let Err(e) = ops::set_real_health(&mut self.maps, ev.service, real, ev.up) {
                tracing::warn!("{shown} of {}: {e:#}", ev.service);
                continue;
            }
            if ev.up {
                match self.apply_weight(key) {
                    Ok(true) => {
                        let w = self.view_real(ev.service, real).map_or(0, |r| r.weight);
                        tracing::info!("{shown} of {}: weight {w} ({})", ev.service, if ev.weight.is_some() { "set by its check" } else { "configured" });
                        weight_changed = true;
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!("{shown} of {}: weight: {e:#}", ev.service),
                }
            }
            if changed {
                let state = if ev.up { "UP" } else { "DOWN" };
                tracing::warn!("{shown} of {} is {state}: {}", ev.service, ev.reason);
                let check = self.check_of(ev.service, ev.real, ev.port);
                let cmd = check.and_then(|h| if ev.up { h.notify_up.clone() } else { h.notify_down.clone() });
                if let Some(cmd) = cmd {
                    notify(&cmd, ev.service, ev.real, ev.port, state);
                }
            }
            if let Err(e) = self.evaluate_sorry(ev.service) {
                tracing::warn!("{}: {e:#}", ev.service);
            }
        }
        if weight_changed {
            if let Err(e) = self.save_state() {
                tracing::warn!("saving the state: {e:#}");
            }
        }
    }

    fn fill_health(&self, services: &mut [ops::ServiceView]) {
        for s in services {
            for r in &mut s.reals {
                let checked = self.check_of(s.id, r.address, r.port).is_some();
                match self.real_health.get(&(s.id, r.address, r.port)).filter(|_| checked) {
                    Some(h) => {
                        r.health = if h.up { "up" } else { "down" }.into();
                        r.health_reason = h.reason.clone();
                        r.health_changes = h.changes;
                    }
                    None => r.health = "-".into(),
                }
            }
        }
    }

    fn save_state(&self) -> Result<()> {
        let text = config::to_toml(&self.desired()?);
        write_atomically(&self.paths.state, &format!("# xlb's saved state: rewritten on every change\n{text}"))
    }

    fn handle(&mut self, req: Request) -> Result<Reply, Failure> {
        let mutating = req.changes_services();
        let reply = match req {
            Request::Batch { requests } => {
                // One batch: the maps see every request's changes at once, or none.
                let ips: std::collections::BTreeSet<IpAddr> = requests
                    .iter()
                    .filter_map(|r| match r {
                        Request::AddReal { address, .. } => Some(address.ip),
                        _ => None,
                    })
                    .collect();
                let ips: Vec<IpAddr> = ips.into_iter().collect();
                // No wait here (the state owner never waits): the connection's task waits for
                // the MACs still missing, the neighbour subscription brings them.
                self.batch_hops = ips.iter().copied().zip(nexthop::lookup_many_soliciting(&ips)).collect();
                let saved = ops::batch_begin(&mut self.maps)?;
                let settings = ops::settings(&self.maps)?;
                let (health, weights) = (self.health.clone(), self.configured_weight.clone());
                for (i, r) in requests.into_iter().enumerate() {
                    if let Err(e) = self.apply_one(r) {
                        self.batch_hops.clear();
                        ops::batch_end(&mut self.maps, saved, false)?;
                        ops::set_settings(&mut self.maps, settings).context("restoring the settings before the failed batch")?;
                        (self.health, self.configured_weight) = (health, weights);
                        return Err(Failure { error: e, failed_request: Some(i) });
                    }
                }
                self.batch_hops.clear();
                ops::batch_end(&mut self.maps, saved, true)?;
                Reply::Done
            }
            other => self.apply_one(other)?,
        };
        if mutating {
            if let Err(e) = self.sync_health() {
                tracing::warn!("health checks: {e:#}");
            }
            self.save_state()?;
        }
        Ok(reply)
    }

    fn apply_one(&mut self, req: Request) -> Result<Reply> {
        if let Request::EditReal { service, address, mut options } = req {
            // The configured weight changes; a weight a dynamic check set stays in force.
            if let Some(key) = self.view_real(service, address).map(|r| (service, r.address, r.port)) {
                if let Some(w) = self.dynamic_weight(&key) {
                    self.configured_weight.insert(key, options.weight);
                    options.weight = w;
                }
            }
            ops::edit_real(&mut self.maps, service, address, options)?;
            return Ok(Reply::Done);
        }
        let maps = &mut self.maps;
        match req {
            Request::AddService { service, options } => ops::add_service(maps, service, options)?,
            Request::EditService { service, options } => ops::edit_service(maps, service, options)?,
            Request::DelService { service } => ops::remove_service(maps, service)?,
            Request::AddFrontends { mark, frontends } => ops::add_frontends(maps, mark, &frontends)?,
            Request::DelFrontends { mark, frontends } => ops::remove_frontends(maps, mark, &frontends)?,
            Request::AddReal { service, address, options } => match self.batch_hops.get(&address.ip) {
                Some(hop) => drop(ops::add_real(maps, service, address, options, *hop)?),
                None => drop(run::add_real_resolving(maps, service, address, options)?),
            },
            Request::EditReal { .. } => unreachable!("handled above"),
            Request::DelReal { service, address } => ops::remove_real(maps, service, address)?,
            Request::Batch { .. } => bail!("batches do not nest"),
            Request::Clear => {
                let settings = Some(ops::settings(maps)?);
                // Services with connections go to the trash (ops::remove_service): an -R
                // soon after gives them back their ids and connections.
                let changes = reconcile::apply(maps, &Config { settings, services: Vec::new(), bgp: None })?;
                self.health.clear();
                self.configured_weight.clear();
                self.real_checks.clear();
                return Ok(Reply::Changes(changes));
            }
            Request::SetHealth { service, health } => {
                ops::find_service(maps, service)?;
                match health {
                    Some(h) => {
                        h.validate(service)?;
                        self.health.insert(service, h);
                    }
                    None => {
                        self.health.remove(&service);
                    }
                }
            }
            Request::SetSorry { service, address } => {
                let target = match address {
                    Some(ip) => Some((ip, nexthop::lookup_soliciting(ip)?)),
                    None => None,
                };
                ops::set_sorry_server(maps, service, target)?;
            }
            Request::Zero { service } => {
                ops::zero(maps, service)?;
                self.rates.reset();
            }
            Request::SetSettings { change } => {
                let mut s = ops::settings(maps)?;
                apply_settings_change(&mut s, change);
                ops::set_settings(maps, s)?;
            }
            Request::Apply { config, origin } => {
                let cfg = config::parse(&config).with_context(|| format!("in {origin}"))?;
                return Ok(Reply::Changes(self.apply_config(&cfg)?));
            }
            Request::Reload => {
                let Some(path) = &self.config else {
                    bail!("xlb was started without --config or --keepalived-conf: there is no file to reload (use `xlb apply FILE`)")
                };
                let cfg = load_config(path, self.keepalived)?;
                if cfg.bgp != self.file_bgp {
                    tracing::warn!(
                        "{}: [bgp] changed; it is read at start only: restart the daemon to apply it (a SIGTERM keeps the fast path and the announcement)",
                        path.display()
                    );
                }
                return Ok(Reply::Changes(self.apply_config(&cfg)?));
            }
            Request::List => {
                let mut services = ops::snapshot(maps)?;
                self.rates.fill(&mut services);
                self.fill_health(&mut services);
                return Ok(Reply::Services(services));
            }
            Request::Conns => {
                // IPVS's connection table lists the persistence templates too.
                let mut conns = ops::connections(maps)?;
                conns.extend(ops::templates(maps)?);
                return Ok(Reply::Conns(conns));
            }
            Request::Counters => {
                let fast_path = ops::counters(maps)?.into_iter();
                let sync = self.sync.counters.list().into_iter();
                return Ok(Reply::Counters(fast_path.chain(sync).map(|(k, v)| (k.to_string(), v)).collect()));
            }
            Request::StartSyncDaemon { config } => self.start_sync(&config)?,
            Request::StopSyncDaemon { role } => self.stop_sync(role)?,
            Request::SyncDaemons => return Ok(Reply::SyncDaemons(self.sync.views())),
            Request::Settings => return Ok(Reply::Settings(settings_view(&ops::settings(maps)?))),
            Request::Status => {
                return Ok(Reply::Status(StatusView {
                    pid: std::process::id(),
                    interfaces: self.opts_ifaces.clone(),
                    pin_dir: self.paths.pin_dir.clone(),
                    state_file: self.paths.state.clone(),
                    config_file: self.config.clone(),
                    services: ops::snapshot(maps)?.len(),
                    connections: maps.conns.iter().count(),
                    half_open_connections: maps.half_open.iter().count(),
                    tables: self.tables.clone(),
                    bgp: self.bgp.as_ref().map(|(a, _)| a.status()),
                }));
            }
            Request::Stop => self.stop_and_detach = true,
        }
        Ok(Reply::Done)
    }

    /// Hands the VIPs that have quorum now to the BGP announcer (which rewrites BIRD's
    /// file and reconfigures it only if they changed). Called after every change of the
    /// model and every health event.
    fn update_bgp(&self) {
        let Some((announcer, quorum)) = &self.bgp else { return };
        match ops::vips_with_quorum(&self.maps, *quorum) {
            Ok(vips) => announcer.set(vips),
            Err(e) => tracing::warn!("bgp: reading the services' quorum: {e:#}"),
        }
    }

    /// Starts a connection sync daemon; a master switches the fast path's sync events on.
    fn start_sync(&mut self, cfg: &sync::DaemonConfig) -> Result<()> {
        let view = self.sync.start(cfg)?;
        if cfg.role == Role::Master {
            if let Err(e) = ops::set_sync_master(&mut self.maps, true) {
                let _ = self.sync.stop(Role::Master);
                return Err(e.context("switching the fast path's sync events on"));
            }
        }
        tracing::info!(target: "xlb_console", "xlb: started the {}", view.line());
        Ok(())
    }

    /// Stops a connection sync daemon (a master's events go off first).
    fn stop_sync(&mut self, role: Role) -> Result<()> {
        if role == Role::Master && self.sync.master_running() {
            ops::set_sync_master(&mut self.maps, false)?;
        }
        self.sync.stop(role)?;
        tracing::info!(target: "xlb_console", "xlb: stopped the {} sync daemon", role.name());
        Ok(())
    }

    /// The fast path's sync events, into the master's messages.
    fn sync_events(&mut self, events: Vec<SyncEvent>) {
        let settings = match ops::settings(&self.maps) {
            Ok(s) => s,
            Err(e) => return tracing::warn!("sync master: reading the settings: {e:#}"),
        };
        let Self { maps, sync, .. } = self;
        sync.add_events(&events, &settings, &mut |sid| ops::service_fwmark(maps, sid).ok().flatten());
    }

    /// A datagram the backup received: its connections installed in the fast path.
    fn sync_receive(&mut self, datagram: &[u8]) {
        let conns = self.sync.receive(datagram);
        if conns.is_empty() {
            return;
        }
        let settings = match ops::settings(&self.maps) {
            Ok(s) => s,
            Err(e) => return tracing::warn!("sync backup: reading the settings: {e:#}"),
        };
        let now = ops::table_clock_ns();
        for c in &conns {
            let v = sync::verdict(c, &mut ops::SyncLookup(&mut self.maps), &settings, now);
            let answer = match &v {
                sync::Verdict::Install(flow, entry) => match loader::install_conn(&mut self.ebpf, &sync::install_arg(*flow, *entry)) {
                    Ok(a) => Some(a),
                    Err(e) => {
                        tracing::warn!("sync backup: installing a connection: {e:#}");
                        None
                    }
                },
                _ => None,
            };
            self.sync.count(&v, answer);
        }
    }

    /// Looks every real's next hop up again (after a neighbour or route change, and
    /// as a periodic resync); returns the reals still without a MAC.
    fn refresh_next_hops(&mut self) -> HashSet<IpAddr> {
        match run::refresh_next_hops(&mut self.maps) {
            Ok(found) => self.next_hops = found,
            Err(e) => tracing::warn!("refreshing real servers' MACs: {e:#}"),
        }
        self.next_hops.unresolved.clone()
    }

    /// Registers the attached NICs' MACs again (after a link change, and as a periodic
    /// resync): a NIC's new MAC, a keepalived VMAC link made or removed.
    fn refresh_macs(&mut self) {
        if let Err(e) = l2::register(&mut self.maps, &self.opts_ifaces) {
            tracing::warn!("registering the NICs' MACs for the fast path: {e:#}");
        }
    }

    /// Whether kernel notifications may change a real's next hop: a route changed, a
    /// neighbour the reals use changed, or some neighbour was resolved while a real
    /// waits for its MAC (its router's address is not known yet).
    fn concerns_reals(&self, changes: &[rtnl::Change]) -> bool {
        changes.iter().any(|c| match c {
            rtnl::Change::Route => true,
            rtnl::Change::Link => false,
            rtnl::Change::Neighbour { address, mac, .. } => {
                self.next_hops.neighbours.contains(address)
                    || self.next_hops.unresolved.contains(address)
                    || (mac.is_some() && !self.next_hops.unresolved.is_empty())
            }
        })
    }

    /// After a change of the reals: which have no MAC yet (as the maps say), and the
    /// neighbours of new ones. Returns the unresolved reals.
    fn note_reals(&mut self) -> HashSet<IpAddr> {
        if let Err(e) = run::note_reals(&mut self.maps, &mut self.next_hops) {
            tracing::warn!("reading real servers' next hops: {e:#}");
        }
        self.next_hops.unresolved.clone()
    }

    /// Expires idle connections, frees what removed reals and services left, samples rates.
    fn periodic(&mut self) {
        let Self { maps, ebpf, .. } = self;
        match ops::sweep(maps, &mut |flow| loader::expire_flow(ebpf, flow)) {
            Ok(r) if r.reals_freed + r.services_freed > 0 => tracing::info!(
                "freed {} removed real server(s) and {} removed service(s) with no connection left",
                r.reals_freed,
                r.services_freed
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!("expiring idle connections: {e:#}"),
        }
        if let Err(e) = self.rates.sample(&self.maps) {
            tracing::warn!("sampling rates: {e:#}");
        }
        if let Some(window) = self.sync.refresh_due() {
            self.sync_refresh(window);
        }
    }

    /// The master's refresh round: the connections with packets in the last `window_ns`
    /// nanoseconds are sent again, so the backup's entries of long-lived connections do
    /// not expire there while they live here.
    fn sync_refresh(&mut self, window_ns: u64) {
        let now = ops::table_clock_ns();
        let active: Vec<SyncEvent> = self
            .maps
            .conns
            .iter()
            .filter_map(|e| e.ok())
            .filter(|(_, c)| c.state != tcp::GONE && now.saturating_sub(c.last_seen_ns) <= window_ns)
            .map(|(flow, c)| sync::event_of(&flow, &c))
            .collect();
        if !active.is_empty() {
            tracing::debug!("sync master: refreshing {} active connection(s)", active.len());
            self.sync_events(active);
        }
    }
}

/// Runs a quorum_up / quorum_down command (XLB_SERVICE and XLB_STATE UP or DOWN set)
/// without waiting for it.
fn notify_quorum(cmd: &str, service: ServiceId, state: &str) {
    spawn_detached("quorum", cmd, &[("XLB_SERVICE", service.to_string()), ("XLB_STATE", state.to_string())]);
}

/// Runs a notify command (keepalived's notify_up/notify_down) without waiting for it.
fn notify(cmd: &str, service: ServiceId, real: IpAddr, port: u16, state: &str) {
    let env = [
        ("XLB_SERVICE", service.to_string()),
        ("XLB_REAL", real.to_string()),
        ("XLB_PORT", port.to_string()),
        ("XLB_STATE", state.to_string()),
    ];
    spawn_detached("notify", cmd, &env);
}

/// `sh -c cmd` with `env` set, reaped by a task of its own: the daemon never waits for
/// an operator's script.
fn spawn_detached(what: &str, cmd: &str, env: &[(&str, String)]) {
    let spawned = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(std::process::Stdio::null())
        .spawn();
    match spawned {
        Ok(mut child) => {
            tokio::spawn(async move { child.wait().await });
        }
        Err(e) => tracing::warn!("{what} command `{cmd}`: {e}"),
    }
}

pub fn apply_settings_change(s: &mut lb_common::Settings, c: SettingsChange) {
    // As ipvsadm --set: 0 leaves a timeout unchanged.
    if let Some(t) = c.tcp.filter(|&t| t > 0) {
        s.tcp_timeouts[tcp::ESTABLISHED as usize] = t;
    }
    if let Some(t) = c.tcpfin.filter(|&t| t > 0) {
        s.tcp_timeouts[tcp::FIN_WAIT as usize] = t;
    }
    if let Some(t) = c.udp.filter(|&t| t > 0) {
        s.udp_timeout = t;
    }
    if let Some(on) = c.expire_nodest_conn {
        s.expire_nodest_conn = on as u32;
    }
    if let Some(on) = c.sloppy_tcp {
        s.sloppy_tcp = on as u32;
    }
    if let Some(on) = c.expire_quiescent_template {
        s.expire_quiescent_template = on as u32;
    }
    if let Some(on) = c.icmp_echo {
        s.icmp_echo = on as u32;
    }
    // Only 0..=3 gets here (the CLI and the config file check it); more bits mean nothing.
    if let Some(mode) = c.conn_reuse_mode {
        s.conn_reuse_mode = mode & 3;
    }
}

pub fn settings_view(s: &lb_common::Settings) -> SettingsView {
    SettingsView {
        tcp: s.tcp_timeouts[tcp::ESTABLISHED as usize],
        tcpfin: s.tcp_timeouts[tcp::FIN_WAIT as usize],
        udp: s.udp_timeout,
        expire_nodest_conn: s.expire_nodest_conn != 0,
        sloppy_tcp: s.sloppy_tcp != 0,
        icmp_echo: s.icmp_echo != 0,
        expire_quiescent_template: s.expire_quiescent_template != 0,
        conn_reuse_mode: s.conn_reuse_mode,
    }
}

/// Says `xlb: …` on the daemon's standard output (start-up, reload and stop lines an
/// operator or a supervisor reads), through tracing: the `xlb_console` target is
/// printed plainly on stdout (see main.rs's logging set-up), not on stderr's log.
macro_rules! say {
    ($($arg:tt)*) => { tracing::info!(target: "xlb_console", $($arg)*) };
}

/// A failed request: the error and, for a batch, which of its requests failed.
struct Failure {
    error: anyhow::Error,
    failed_request: Option<usize>,
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Self { error, failed_request: None }
    }
}

/// The wire form of a request's result. A refusal keeps libipvs's words for ipvsadm's
/// output (ipvs_strerror). ops returns its refusals inside anyhow errors: they are
/// found there, at this one boundary.
fn response(result: Result<Reply, Failure>) -> Response {
    match result {
        Ok(reply) => Response::Ok(reply),
        Err(Failure { error, failed_request }) => Response::Err {
            message: format!("{error:#}"),
            ipvs: error.chain().find_map(|c| c.downcast_ref::<Refusal>()).map(|r| r.ipvs.to_string()),
            failed_request,
        },
    }
}

/// What the state owner is asked to do. Everything that reads or changes the engine
/// goes through here: one task owns it, nothing locks it.
enum Command {
    /// An API request, answered with its response and the reals still waiting for
    /// their next hop's MAC.
    Api { request: Request, reply: oneshot::Sender<(Response, HashSet<IpAddr>)> },
    /// The services as the status page samples them.
    Services(oneshot::Sender<Result<Vec<ops::ServiceView>>>),
    /// Everything the metrics and status page show.
    Snapshot(oneshot::Sender<Result<observe::Snapshot>>),
}

/// What the metrics and the status page read: the engine, through its owner.
struct OwnerView {
    commands: mpsc::Sender<Command>,
}

impl OwnerView {
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T>>) -> Command) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).await.map_err(|_| anyhow::anyhow!("the daemon is stopping"))?;
        rx.await.map_err(|_| anyhow::anyhow!("the daemon is stopping"))?
    }
}

impl web::Source for OwnerView {
    fn services(&self) -> web::Reading<'_, Vec<ops::ServiceView>> {
        Box::pin(self.ask(Command::Services))
    }

    fn snapshot(&self) -> web::Reading<'_, observe::Snapshot> {
        Box::pin(self.ask(Command::Snapshot))
    }
}

impl Engine {
    fn services_view(&self) -> Result<Vec<ops::ServiceView>> {
        let mut services = ops::snapshot(&self.maps)?;
        self.fill_health(&mut services);
        Ok(services)
    }

    fn snapshot(&self, interfaces: &[observe::Interface]) -> Result<observe::Snapshot> {
        Ok(observe::Snapshot {
            interfaces: interfaces.to_vec(),
            services: self.services_view()?,
            counters: ops::counters(&self.maps)?,
            sync: self.sync.counters.list(),
            conntrack_entries: self.maps.conns.keys().count() as u64,
            conntrack_capacity: conns_capacity(&self.tables),
            bgp: self.bgp.as_ref().map(|(a, _)| a.status()),
        })
    }
}

/// Waits until `deadline`, or for ever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// Binds the API socket, refusing if another daemon answers on it.
fn bind_socket(path: &Path) -> Result<std::os::unix::net::UnixListener> {
    let dir = path.parent().context("socket path has no directory")?;
    fs::create_dir_all(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!("another xlb daemon is running (its API answers on {})", path.display());
        }
        fs::remove_file(path)?; // left by a killed daemon
    }
    let listener = std::os::unix::net::UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Accepts API connections, each served by a task of its own.
async fn serve_api(listener: UnixListener, commands: mpsc::Sender<Command>, unresolved: watch::Receiver<HashSet<IpAddr>>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve_client(stream, commands.clone(), unresolved.clone()));
            }
            Err(e) => {
                // Out of file descriptors and the like: the next accept may do better.
                tracing::warn!("API accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One request, one response. A request that added reals whose next hop has no MAC yet
/// waits here, outside the state owner, until the neighbour subscription brings their
/// MACs or [`run::RESOLVE_WAIT`] passes: other requests go on meanwhile.
async fn serve_client(stream: UnixStream, commands: mpsc::Sender<Command>, mut unresolved: watch::Receiver<HashSet<IpAddr>>) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(api::MAX_MESSAGE));
    let answer = match tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)).await {
        Err(_) => api::encode_response(&Response::Err {
            message: format!("no request within {} s", REQUEST_TIMEOUT.as_secs()),
            ipvs: None,
            failed_request: None,
        }),
        Ok(Err(e)) => {
            tracing::warn!("API: reading a request: {e}");
            return;
        }
        Ok(Ok(_)) => match api::decode_request(&line) {
            Err(answer) => answer,
            Ok(request) => {
                let (tx, rx) = oneshot::channel();
                if commands.send(Command::Api { request, reply: tx }).await.is_err() {
                    return; // stopping
                }
                let Ok((response, pending)) = rx.await else { return };
                if !pending.is_empty() {
                    let started = Instant::now();
                    let resolved =
                        tokio::time::timeout(run::RESOLVE_WAIT, unresolved.wait_for(|now| pending.is_disjoint(now))).await.is_ok();
                    match resolved {
                        true => tracing::debug!("next hops of {pending:?} resolved after {:?}", started.elapsed()),
                        false => {
                            let still: Vec<IpAddr> = unresolved.borrow().intersection(&pending).copied().collect();
                            tracing::warn!(
                                "the next hop towards {still:?} did not answer ARP/ND within {:?}; their traffic is passed to the kernel until their MACs are known",
                                run::RESOLVE_WAIT
                            );
                        }
                    }
                }
                api::encode_response(&response)
            }
        },
    };
    let _ = write.write_all(answer.as_bytes()).await;
    let _ = write.shutdown().await;
}

/// Reads the kernel's neighbour and route notifications and hands them to the state
/// owner, several at once when they come together.
async fn watch_next_hops(mut monitor: rtnl::Monitor, changes: mpsc::UnboundedSender<Vec<rtnl::Change>>) {
    loop {
        match monitor.next().await {
            Ok(batch) => {
                if changes.send(batch).is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!("neighbour and route notifications: {e:#}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Loads against the pins (reusing what is there), then takes over pinned links or
/// attaches and pins new ones. Returns the engine parts and whether maps were fresh.
fn attach_or_adopt(opts: &DaemonOptions) -> Result<(Ebpf, Maps, bool)> {
    let pin_dir = &opts.paths.pin_dir;
    maps::prepare_pin_dir(pin_dir)?;
    let fresh = !pin_dir.join(map_names::SERVICES).exists();
    let mut ebpf = loader::load_pinned_logging(pin_dir, &opts.sizes, opts.fastpath_log)?;
    if opts.fastpath_log != loader::LogLevel::Off {
        crate::trace::forward_fastpath_log(&mut ebpf)?;
    }
    let mut maps = if fresh { Maps::take(&mut ebpf, None)? } else { Maps::take_existing(&mut ebpf)? };
    // Before the program runs on them: which MACs are this host's on each NIC.
    l2::register(&mut maps, &opts.ifaces).context("registering the NICs' MACs for the fast path")?;
    for iface in &opts.ifaces {
        let pin = link_pin(pin_dir, iface);
        if pin.exists() {
            loader::adopt_pinned(&mut ebpf, &pin)?;
            say!("xlb: took over the running fast path on {iface} (connections kept)");
        } else {
            let used = loader::attach_pinned(&mut ebpf, iface, opts.mode, &pin)?;
            say!("xlb: attached to {iface} in {} mode", used.name());
        }
    }
    Ok((ebpf, maps, fresh))
}

/// Prints each map's size and estimated memory, and says which maps kept the size they
/// were pinned with (a restart adopts the running tables, connections and all: the
/// kernel cannot resize a map; `xlb stop` and a new start apply new sizes).
fn report_tables(pin_dir: &Path, asked: &TableSizes) -> Result<Vec<MapMemory>> {
    let tables = sizes::pinned_memory(pin_dir)?;
    say!("xlb: tables (entries, estimated kernel memory):");
    for line in sizes::report_lines(&tables) {
        say!("{line}");
    }
    for (name, pinned, want) in sizes::pinned_size_differences(&tables, asked) {
        say!(
            "xlb: {name} keeps its pinned size of {pinned} entries, not the {want} asked for: the running tables \
             (and their connections) were adopted; `xlb stop` then a new start applies the new size"
        );
    }
    Ok(tables)
}

/// The connection table's size, as loaded.
fn conns_capacity(tables: &[MapMemory]) -> u64 {
    tables.iter().find(|m| m.name == map_names::CONNS).map_or(0, |m| m.max_entries.into())
}

/// Removes the link pins (detaching the program once our fds close) and the map pins.
pub fn detach_and_unpin(pin_dir: &Path) {
    if let Ok(entries) = fs::read_dir(pin_dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with("link-") {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    maps::unpin_all(pin_dir);
}

/// The announcement's options: the command line's fields over the config file's
/// `[bgp]`; None without a file to write.
fn bgp_options(cli: &config::BgpSection, file: Option<&config::BgpSection>) -> Option<bgp::BgpOptions> {
    let file = file.cloned().unwrap_or_default();
    Some(bgp::BgpOptions {
        bird_vips: cli.bird_vips.clone().or(file.bird_vips)?,
        bird_vips6: cli.bird_vips6.clone().or(file.bird_vips6),
        bird_socket: cli.bird_socket.clone().or(file.bird_socket).unwrap_or_else(|| bgp::DEFAULT_BIRD_SOCKET.into()),
        quorum: cli.quorum.or(file.quorum).unwrap_or(1).max(1),
    })
}

/// The config file: xlb's TOML, or a keepalived.conf imported (its notes logged).
fn load_config(path: &Path, keepalived: bool) -> Result<Config> {
    if !keepalived {
        return config::load(path);
    }
    let import = crate::keepalived::load(path)?;
    for w in &import.warnings {
        tracing::warn!("{w}");
    }
    Ok(import.config)
}

/// Tells systemd `state`; a failure is only logged: the service itself works on, and
/// systemd's start timeout reports a missing READY=1.
fn sd_notify_or_warn(state: &str) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!("could not notify systemd of {:?}: {e}", state.lines().next().unwrap_or_default());
    }
}

/// Runs the daemon until SIGTERM/SIGINT or `xlb stop`, on one tokio runtime: this
/// thread's task owns the engine; the API, the HTTP side, the health checks and the
/// netlink subscription run as tasks beside it and talk to it over channels.
pub fn run(opts: DaemonOptions) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("xlb")
        .enable_all()
        .build()
        .context("starting the daemon's runtime")?;
    runtime.block_on(run_owner(opts))
}

async fn run_owner(opts: DaemonOptions) -> Result<()> {
    // Signals first: from here on SIGTERM/SIGINT/SIGHUP are the daemon's to handle.
    let mut sigterm = signal(SignalKind::terminate()).context("handling SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("handling SIGINT")?;
    let mut sighup = signal(SignalKind::hangup()).context("handling SIGHUP")?;
    // Parse the config before touching anything: a bad file changes nothing.
    let file_config = opts.config.as_deref().map(|p| load_config(p, opts.keepalived)).transpose()?;
    let file_bgp = file_config.as_ref().and_then(|c| c.bgp.clone());
    let saved = if opts.paths.state.exists() {
        Some(config::load(&opts.paths.state).context("the saved state is unreadable; fix or remove it")?)
    } else {
        None
    };
    let listener = bind_socket(&opts.paths.socket)?;
    let web_listeners = web::bind(&opts.web).inspect_err(|_| drop(fs::remove_file(&opts.paths.socket)))?;
    // Subscribed before the first lookups, so that no change between them is missed.
    let monitor = rtnl::Monitor::open().inspect_err(|_| drop(fs::remove_file(&opts.paths.socket)))?;
    let (ebpf, maps, fresh) = match attach_or_adopt(&opts) {
        Ok(parts) => parts,
        Err(e) => {
            let _ = fs::remove_file(&opts.paths.socket);
            if !opts.paths.pin_dir.join(map_names::SERVICES).exists() || opts.detach_on_exit {
                detach_and_unpin(&opts.paths.pin_dir);
            }
            return Err(e);
        }
    };
    // The saved state is the latest word (it includes API changes); the config file
    // is the start-up state only when nothing was saved.
    let state = opts.paths.state.display();
    let desired = match (saved, file_config, &opts.config) {
        (Some(saved), Some(_), Some(file)) => {
            say!(
                "xlb: restoring the saved state {state}; {} is not applied at start (`xlb reload` or SIGHUP applies it)",
                file.display()
            );
            Some(saved)
        }
        (Some(saved), _, _) => {
            say!("xlb: restoring the saved state {state}");
            Some(saved)
        }
        (None, Some(file_config), Some(file)) => {
            say!("xlb: nothing saved yet: starting from {}", file.display());
            Some(file_config)
        }
        (None, file_config, _) => file_config,
    };
    let tables = report_tables(&opts.paths.pin_dir, &opts.sizes)?;
    let (checker, mut health_events) = Checker::new(tokio::runtime::Handle::current());
    let (sync_events_tx, mut sync_events) = mpsc::channel::<Vec<SyncEvent>>(64);
    let (sync_in_tx, mut sync_in) = mpsc::channel::<Vec<u8>>(1024);
    let mut engine = Engine {
        maps,
        ebpf,
        rates: Rates::default(),
        health: BTreeMap::new(),
        real_checks: BTreeMap::new(),
        quorum_lost: HashSet::new(),
        checker,
        real_health: HashMap::new(),
        configured_weight: HashMap::new(),
        opts_ifaces: opts.ifaces.clone(),
        paths: opts.paths.clone(),
        config: opts.config.clone(),
        keepalived: opts.keepalived,
        stop_and_detach: false,
        tables,
        batch_hops: HashMap::new(),
        next_hops: run::NextHops::default(),
        bgp: None,
        file_bgp: file_bgp.clone(),
        sync: sync::Daemons::new(&opts.paths.pin_dir, sync_events_tx, sync_in_tx),
    };
    engine.sync.set_refresh_period(opts.sync_refresh);
    // No master runs yet: a previous daemon's switch goes off.
    ops::set_sync_master(&mut engine.maps, false)?;
    if let Some(desired) = &desired {
        if !fresh {
            // Health verdicts and dynamic weights carry over a restart.
            engine.restore_health(desired)?;
        }
        let mut changes = engine.apply_config(desired)?;
        changes.health_checks_changed = 0;
        if !fresh && !changes.is_empty() {
            say!("xlb: brought the running fast path to the saved state: {changes:?}");
        }
    }
    engine.sync_health()?;
    engine.save_state()?;
    let bgp_opts = bgp_options(&opts.bgp, file_bgp.as_ref());
    bgp::record(&opts.paths, bgp_opts.as_ref())?;
    if let Some(opts) = bgp_opts {
        let vips = ops::vips_with_quorum(&engine.maps, opts.quorum)?;
        say!(
            "xlb: announcing VIPs with {} or more reals through BIRD: {} ({} now), control socket {}",
            opts.quorum,
            opts.bird_vips.display(),
            vips.len(),
            opts.bird_socket.display()
        );
        let quorum = opts.quorum;
        engine.bgp = Some((bgp::Announcer::start(opts, vips), quorum));
    }
    for cfg in &opts.sync {
        engine.start_sync(cfg).with_context(|| format!("starting the {} sync daemon", cfg.role.name()))?;
    }

    let (net_tx, mut net_changes) = mpsc::unbounded_channel();
    let net_task = tokio::spawn(watch_next_hops(monitor, net_tx));
    // Before answering anyone: the reals of the start-up state get their MACs (or
    // RESOLVE_WAIT passes), so the first connections go straight to them.
    let mut unresolved = engine.refresh_next_hops();
    let deadline = tokio::time::sleep(run::RESOLVE_WAIT);
    tokio::pin!(deadline);
    while !unresolved.is_empty() {
        tokio::select! {
            _ = &mut deadline => break,
            Some(changes) = net_changes.recv() => {
                if changes.contains(&rtnl::Change::Link) {
                    engine.refresh_macs();
                }
                if engine.concerns_reals(&changes) {
                    unresolved = engine.refresh_next_hops();
                }
            }
        }
    }
    let (unresolved_tx, unresolved_rx) = watch::channel(unresolved);

    let (commands, mut requests) = mpsc::channel::<Command>(64);
    let api_task = tokio::spawn(serve_api(UnixListener::from_std(listener)?, commands.clone(), unresolved_rx));
    let interfaces: Vec<observe::Interface> = opts.ifaces.iter().map(|i| observe::Interface::attached(i)).collect();
    for (addr, what) in web_listeners.addresses() {
        // The metrics are at /metrics: that is the address to give Prometheus.
        match what {
            "metrics" => say!("xlb: serving the metrics on http://{addr}/metrics"),
            _ if what.starts_with("metrics") => say!("xlb: serving the {what} on http://{addr}/ (metrics at /metrics)"),
            _ => say!("xlb: serving the {what} on http://{addr}/"),
        }
    }
    let web_server = web_listeners.serve(Arc::new(OwnerView { commands: commands.clone() }))?;
    drop(commands);
    say!(
        "xlb: ready; maps pinned in {}, API on {}, state in {}",
        opts.paths.pin_dir.display(),
        opts.paths.socket.display(),
        opts.paths.state.display()
    );
    // systemd's Type=notify: the unit is started only now, with the fast path attached,
    // the configuration applied and the API answering (sd_notify(3)).
    let status = format!("STATUS=attached to {}", opts.ifaces.join(", "));
    sd_notify_or_warn(&format!("READY=1\n{status}"));

    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut resync = tokio::time::interval(RESYNC);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    resync.tick().await; // the first tick is now: next hops were just looked up
    let detach = loop {
        tokio::select! {
            Some(command) = requests.recv() => match command {
                Command::Api { request, reply } => {
                    let mutating = request.changes_services();
                    let before = engine.next_hops.unresolved.clone();
                    let result = response(engine.handle(request));
                    // A change may have added reals whose MAC is not known yet (the
                    // kernel was asked): their caller waits for them, not this task.
                    let pending = if mutating && matches!(result, Response::Ok(_)) {
                        let unresolved = engine.note_reals();
                        unresolved_tx.send_replace(unresolved.clone());
                        &unresolved - &before
                    } else {
                        HashSet::new()
                    };
                    let _ = reply.send((result, pending));
                    if mutating {
                        engine.update_bgp();
                    }
                    if engine.stop_and_detach {
                        break true;
                    }
                }
                Command::Services(reply) => drop(reply.send(engine.services_view())),
                Command::Snapshot(reply) => drop(reply.send(engine.snapshot(&interfaces))),
            },
            Some(first) = health_events.recv() => {
                let mut events = vec![first];
                while let Ok(ev) = health_events.try_recv() {
                    events.push(ev);
                }
                engine.process_health_events(events);
                engine.update_bgp();
            }
            Some(mut changes) = net_changes.recv() => {
                let started = Instant::now();
                while let Ok(more) = net_changes.try_recv() {
                    changes.extend(more);
                }
                if changes.contains(&rtnl::Change::Link) {
                    engine.refresh_macs();
                }
                if engine.concerns_reals(&changes) {
                    unresolved_tx.send_replace(engine.refresh_next_hops());
                    tracing::debug!("{} neighbour/route change(s): next hops looked up again in {:?}", changes.len(), started.elapsed());
                }
            }
            Some(events) = sync_events.recv() => engine.sync_events(events),
            Some(datagram) = sync_in.recv() => {
                engine.sync_receive(&datagram);
                // What else came meanwhile, at once.
                while let Ok(more) = sync_in.try_recv() {
                    engine.sync_receive(&more);
                }
            }
            _ = sleep_until(engine.sync.flush_deadline()) => engine.sync.flush(),
            _ = tick.tick() => engine.periodic(),
            _ = resync.tick() => {
                engine.refresh_macs();
                unresolved_tx.send_replace(engine.refresh_next_hops());
            }
            _ = sighup.recv() => match engine.handle(Request::Reload) {
                Ok(Reply::Changes(c)) => {
                    say!("xlb: reloaded {}: {c:?}", opts.config.as_deref().map_or("?".into(), |p| p.display().to_string()));
                    unresolved_tx.send_replace(engine.refresh_next_hops());
                    engine.update_bgp();
                }
                Ok(_) => {}
                Err(f) => tracing::error!("reload refused, nothing changed: {:#}", f.error),
            },
            _ = sigterm.recv() => break opts.detach_on_exit,
            _ = sigint.recv() => break opts.detach_on_exit,
        }
    };
    sd_notify_or_warn("STOPPING=1");
    if engine.sync.master_running() {
        let _ = engine.stop_sync(Role::Master);
    }
    api_task.abort();
    net_task.abort();
    drop(web_server);
    let _ = fs::remove_file(&opts.paths.socket);
    if detach {
        // The fast path goes: so do its routes (first, so that routers stop sending).
        if let Some((announcer, _)) = engine.bgp.take() {
            match announcer.withdraw().await {
                Ok(()) => say!("xlb: withdrew every VIP from BIRD"),
                Err(e) => tracing::warn!("bgp: withdrawing the VIPs from BIRD failed: {e:#}"),
            }
            if let Err(e) = bgp::record(&opts.paths, None) {
                tracing::warn!("bgp: {e:#}");
            }
        }
        detach_and_unpin(&opts.paths.pin_dir);
        drop(engine); // closes the last link fds: the program is detached
        // A link held only by its pin goes when the pin's inode is freed, after an RCU
        // grace period: wait (a little) until the kernel shows it gone, so that whoever
        // waits for this process finds the interfaces detached.
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut check = tokio::time::interval(Duration::from_millis(10));
        while Instant::now() < deadline && opts.ifaces.iter().any(|i| matches!(loader::attached_mode(i), Ok(Some(_)))) {
            check.tick().await;
        }
        say!("xlb: detached from {}; stopped", opts.ifaces.join(", "));
    } else {
        say!("xlb: exiting; the fast path keeps running from its pins (restart xlb to manage it, `xlb stop` to detach)");
    }
    Ok(())
}
