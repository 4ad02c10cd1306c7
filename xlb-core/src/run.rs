//! What long-running xlb processes share: stop signals, and real servers' MACs taken
//! from (and kept in step with) the kernel's neighbour table.
use std::{
    collections::HashSet,
    net::IpAddr,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use anyhow::Result;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

use crate::{maps::Maps, nexthop, ops};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Makes SIGINT and SIGTERM set a flag instead of killing the process (the test
/// servers and the XDP stub, which are not async; the daemon uses tokio's signals).
pub fn install_stop_handler() {
    let action = SigAction::new(SigHandler::Handler(on_signal), SaFlags::SA_RESTART, SigSet::empty());
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        if let Err(e) = unsafe { sigaction(sig, &action) } {
            tracing::warn!("installing the {sig} handler: {e}");
        }
    }
}

pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// How long an API request that added a real waits (outside the state owner: other
/// requests go on) for its next hop's MAC before it answers.
pub const RESOLVE_WAIT: Duration = Duration::from_secs(2);

/// Adds a real server, its next hop taken from the kernel's routes and neighbours. An
/// unresolved real is added at once: its frames go to the kernel until the daemon
/// learns its MAC from the kernel's neighbour notifications.
pub fn add_real_resolving(maps: &mut Maps, svc: ops::ServiceId, real: ops::RealAddr, opts: ops::RealOptions) -> Result<u32> {
    let hop = nexthop::lookup_soliciting(real.ip)?;
    if hop.egress.is_none() {
        tracing::warn!("no route to {}; it is added, and its traffic is passed to the kernel until there is one", real.ip);
    }
    ops::add_real(maps, svc, real, opts, hop)
}

/// What [`refresh_next_hops`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NextHops {
    /// Reals with a route but no MAC yet (asked for).
    pub unresolved: HashSet<IpAddr>,
    /// The neighbours (routers, or reals on the link) whose MACs the reals use: a
    /// change of another neighbour changes no real's next hop.
    pub neighbours: HashSet<IpAddr>,
    /// The reals' addresses these were found for.
    pub reals: HashSet<IpAddr>,
}

/// Looks every real's next hop up again and updates those that changed; asks the kernel
/// to resolve the ones still without a MAC.
pub fn refresh_next_hops(maps: &mut Maps) -> Result<NextHops> {
    let mut found = NextHops::default();
    for (real_id, ip, known) in ops::next_hops(maps)? {
        // One real the kernel cannot route to (say, an address of this host) must not
        // keep the others from being refreshed.
        let (current, neighbour) = match nexthop::lookup_via(ip) {
            Ok(hop) => hop,
            Err(e) => {
                tracing::warn!("real server {ip}: {e:#}");
                continue;
            }
        };
        if current != known {
            ops::set_real_target(maps, real_id, current)?;
        }
        found.neighbours.extend(neighbour);
        found.reals.insert(ip);
        if current.mac.is_none() && current.egress.is_some() {
            nexthop::solicit(ip);
            found.unresolved.insert(ip);
        }
    }
    Ok(found)
}

/// After a change of the reals: the unresolved ones as the maps hold them (no lookup),
/// and the neighbours of reals not seen before (one route lookup each).
pub fn note_reals(maps: &mut Maps, found: &mut NextHops) -> Result<()> {
    found.unresolved.clear();
    for (_, ip, hop) in ops::next_hops(maps)? {
        if found.reals.insert(ip) {
            if let Ok((_, Some(neighbour))) = nexthop::lookup_via(ip) {
                found.neighbours.insert(neighbour);
            }
        }
        if hop.egress.is_some() && hop.mac.is_none() {
            found.unresolved.insert(ip);
        }
    }
    Ok(())
}
