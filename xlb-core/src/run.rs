//! What long-running xlb processes share: stop signals, and real servers' MACs taken
//! from (and kept in step with) the kernel's neighbour table.
use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use anyhow::Result;

use crate::{maps::Maps, nexthop, ops};

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

/// Adds a real server, its next hop taken from the kernel's routes and neighbours. An
/// unresolved real is added anyway: its frames go to the kernel until `xlb run`
/// resolves it.
pub fn add_real_resolving(maps: &mut Maps, svc: ops::ServiceId, real: ops::RealAddr, opts: ops::RealOptions) -> Result<u32> {
    let hop = nexthop::resolve(real.ip, RESOLVE_WAIT)?;
    if hop.egress.is_none() {
        tracing::warn!("no route to {}; it is added, and its traffic is passed to the kernel until there is one", real.ip);
    } else if hop.mac.is_none() {
        tracing::warn!(
            "the next hop towards {} did not answer ARP yet; it is added, and its traffic is passed to the kernel until its MAC is known",
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
                tracing::warn!("real server {ip}: {e:#}");
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
