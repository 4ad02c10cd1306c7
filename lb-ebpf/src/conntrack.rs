//! Flow affinity: the connection table maps a client flow to its real server.
use lb_common::{ConnEntry, FlowKey, RealEntry, ServiceInfo};

use crate::maps::{CONNS, REALS};

/// The real this flow was scheduled to, if that real still serves the service.
/// A removed real, or a real id since reused by another server, yields `None` so the
/// flow is scheduled afresh rather than sent to the wrong machine.
#[inline(always)]
pub fn lookup(flow: &FlowKey, svc: &ServiceInfo) -> Option<(u32, RealEntry)> {
    let conn = unsafe { CONNS.get(flow) }?;
    let real_id = conn.real_id;
    let real_ip = conn.real_ip;
    let real = REALS.get(real_id)?;
    if real.in_use() && real.service_id == svc.id && real.ip == real_ip {
        Some((real_id, *real))
    } else {
        None
    }
}

/// Records the flow's real. Returns false when the table refused the entry.
#[inline(always)]
pub fn insert(flow: &FlowKey, real_id: u32, real: &RealEntry) -> bool {
    let entry = ConnEntry { real_id, real_ip: real.ip };
    CONNS.insert(flow, &entry, 0).is_ok()
}
