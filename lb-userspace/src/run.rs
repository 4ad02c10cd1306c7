//! What long-running xlb processes share: stop signals, and real servers' MACs taken
//! from (and kept in step with) the kernel's neighbour table.
use std::{
    net::Ipv4Addr,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use anyhow::Result;

use crate::{maps::Maps, neigh, ops};

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

/// How long commands wait for a real server's MAC before adding it unresolved.
pub const RESOLVE_WAIT: Duration = Duration::from_secs(2);

/// Adds a real server, taking its MAC from the kernel's neighbour table. An unresolved
/// real is added anyway: its frames go to the kernel until `xlb run` resolves it.
pub fn add_real_resolving(maps: &mut Maps, svc: ops::ServiceId, rip: Ipv4Addr, opts: ops::RealOptions) -> Result<u32> {
    let target = neigh::resolve(rip, RESOLVE_WAIT)?;
    if target.is_none() {
        tracing::warn!("{rip} did not answer ARP yet; it is added, and its traffic is passed to the kernel until its MAC is known");
    }
    ops::add_real(maps, svc, rip, opts, target.unwrap_or_default())
}

/// Re-reads every real's neighbour entry and updates MACs that changed or appeared.
pub fn refresh_neighbours(maps: &mut Maps) -> Result<()> {
    for svc in ops::snapshot(maps)? {
        for real in svc.reals {
            let current = neigh::lookup(real.address)?;
            let known = real.mac.as_deref().and_then(neigh::parse_mac);
            match current {
                Some(t) if t.mac != known || t.ifindex != real.ifindex => ops::set_real_target(maps, real.id, t)?,
                Some(_) => {}
                None => {
                    neigh::solicit(real.address);
                }
            }
        }
    }
    Ok(())
}
