//! Connection synchronisation: the events the master sync daemon sends to its backups
//! (IPVS's `ip_vs_sync_conn`). Written where a connection enters CONNS
//! (`conntrack::create`) and where a TCP connection's state moves (`conntrack::advance`),
//! only when `Settings::sync_master` is on: a packet that changes nothing never gets
//! here, so the established path pays nothing, with the daemon on or off.
use lb_common::{ConnEntry, FlowKey, SyncEvent};

use crate::maps::SYNC_EVENTS;

/// Writes one event: `flow`'s connection `c`, in `state`. Field by field into the ring
/// buffer (an event built on the stack would take 72 bytes of the chain's 512). None
/// when the ring is full: the daemon reads too slowly, and the connection is synced at
/// its next state change.
#[inline(always)]
pub fn emit(flow: &FlowKey, c: &ConnEntry, state: u8) {
    let Some(mut entry) = SYNC_EVENTS.reserve::<SyncEvent>(0) else { return };
    let e = entry.as_mut_ptr();
    unsafe {
        (*e).flow = *flow;
        (*e).real_ip = c.real_ip;
        (*e).service_id = c.service_id;
        (*e).real_id = c.real_id;
        (*e).real_port = c.real_port;
        (*e).forward = c.forward;
        (*e).state = state;
        (*e)._pad = 0;
    }
    entry.submit(0);
}
