//! `xlb run`: load, pin the maps, apply the config, attach, keep real servers' MACs
//! current, and detach cleanly on SIGINT/SIGTERM.
use std::{
    io::Write,
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use lb_common::map_names;

use crate::{
    config::Config,
    loader::{self, AttachMode},
    maps::{self, Maps, PinDirLock},
    nexthop, ops,
};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Makes SIGINT and SIGTERM set a flag instead of killing the process.
pub fn install_stop_handler() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// How long commands wait for a real server's next hop before adding it unresolved.
pub const RESOLVE_WAIT: Duration = Duration::from_secs(2);
const REFRESH_EVERY: Duration = Duration::from_secs(2);

/// Removes the pins when `run` ends, however it ends.
struct PinGuard(PathBuf);
impl Drop for PinGuard {
    fn drop(&mut self) {
        maps::unpin_all(&self.0);
    }
}

pub struct RunOptions {
    pub ifaces: Vec<String>,
    pub mode: AttachMode,
    pub config: Option<Config>,
    pub pin_dir: PathBuf,
}

pub fn run(opts: RunOptions) -> Result<()> {
    install_stop_handler();
    maps::prepare_pin_dir(&opts.pin_dir)?;
    if opts.pin_dir.join(map_names::SERVICES).exists() {
        bail!(
            "{} already holds xlb's maps: another `xlb run` is using it (stop it, or give this one another --pin-dir)",
            opts.pin_dir.display()
        );
    }
    let mut ebpf = loader::load()?;
    let _pins = PinGuard(opts.pin_dir.clone());
    let mut maps = Maps::take(&mut ebpf, Some(&opts.pin_dir))?;
    if let Some(cfg) = &opts.config {
        apply_config(&mut maps, cfg)?;
    }
    for iface in &opts.ifaces {
        let used = loader::attach(&mut ebpf, loader::BALANCE_PROGRAM, iface, opts.mode)?;
        println!("xlb: attached to {iface} in {} mode", used.mode.name());
    }
    println!("xlb: ready; maps pinned in {} (Ctrl-C to stop)", opts.pin_dir.display());
    std::io::stdout().flush()?;

    let mut next_refresh = Instant::now() + REFRESH_EVERY;
    while !stop_requested() {
        std::thread::sleep(Duration::from_millis(100));
        if Instant::now() >= next_refresh {
            let _lock = PinDirLock::acquire(&opts.pin_dir)?;
            if let Err(e) = refresh_next_hops(&mut maps) {
                eprintln!("xlb: refreshing real servers' next hops: {e:#}");
            }
            if let Err(e) = ops::sweep(&mut maps, &mut |flow| loader::expire_flow(&mut ebpf, flow)) {
                eprintln!("xlb: expiring idle connections: {e:#}");
            }
            next_refresh = Instant::now() + REFRESH_EVERY;
        }
    }
    drop(ebpf); // detaches every link
    println!("xlb: detached from {}; stopped", opts.ifaces.join(", "));
    Ok(())
}

/// Applies a checked config to empty maps.
pub fn apply_config(maps: &mut Maps, cfg: &Config) -> Result<()> {
    if let Some(s) = cfg.settings {
        ops::set_settings(maps, s)?;
    }
    for svc in &cfg.services {
        ops::add_service(maps, svc.id, svc.options)?;
        if let ops::ServiceId::Fwmark(mark) = svc.id {
            ops::add_frontends(maps, mark, &svc.frontends)?;
        }
        for (real, opts) in &svc.reals {
            add_real_resolving(maps, svc.id, *real, *opts)?;
        }
    }
    Ok(())
}

/// Adds a real server, its next hop taken from the kernel's routes and neighbours. An
/// unresolved real is added anyway: its frames go to the kernel until `xlb run`
/// resolves it.
pub fn add_real_resolving(maps: &mut Maps, svc: ops::ServiceId, real: ops::RealAddr, opts: ops::RealOptions) -> Result<u32> {
    let hop = nexthop::resolve(real.ip, RESOLVE_WAIT)?;
    if hop.egress.is_none() {
        eprintln!("xlb: warning: no route to {}; it is added, and its traffic is passed to the kernel until there is one", real.ip);
    } else if hop.mac.is_none() {
        eprintln!(
            "xlb: warning: the next hop towards {} did not answer ARP yet; it is added, and its traffic is passed to the kernel until its MAC is known",
            real.ip
        );
    }
    ops::add_real(maps, svc, real, opts, hop)
}

/// Looks every real's next hop up again and updates those that changed; asks the kernel
/// to resolve the ones still without a MAC.
pub fn refresh_next_hops(maps: &mut Maps) -> Result<()> {
    for (real_id, ip, known) in ops::next_hops(maps)? {
        // One real the kernel cannot route to (say, an address of this host) must not
        // keep the others from being refreshed.
        let current = match nexthop::lookup(ip) {
            Ok(hop) => hop,
            Err(e) => {
                eprintln!("xlb: real server {ip}: {e:#}");
                continue;
            }
        };
        if current != known {
            ops::set_real_target(maps, real_id, current)?;
        }
        if current.mac.is_none() {
            nexthop::solicit(ip);
        }
    }
    Ok(())
}

/// Opens the maps of a running `xlb run` and locks them for one command.
pub fn open(pin_dir: &Path) -> Result<(Maps, PinDirLock)> {
    let lock = PinDirLock::acquire(pin_dir).with_context(|| {
        format!("no running xlb found at {} (start one with `xlb run --iface IFACE`)", pin_dir.display())
    })?;
    Ok((Maps::open_pinned(pin_dir)?, lock))
}
