//! The connection table: flow affinity, IPVS's TCP states and idle timeouts, and the
//! live connection counts the least-connection schedulers read.
use lb_common::{ConnEntry, FlowKey, PROTO_TCP, RealEntry, Settings, tcp};

use crate::{
    maps::{CONNS, REALS},
    stats,
};

pub enum Lookup {
    /// The flow is known: forward to this real.
    Hit(u32, RealEntry),
    /// No live entry: a new connection.
    Miss,
    /// The flow's real was removed and expire_nodest_conn is set.
    NoDest,
}

#[inline(always)]
pub fn timeout_ns(state: u8, settings: &Settings) -> u64 {
    let secs = if state == tcp::UDP {
        settings.udp_timeout
    } else if (state as usize) < tcp::STATE_COUNT {
        settings.tcp_timeouts[state as usize]
    } else {
        0
    };
    secs as u64 * 1_000_000_000
}

/// Finds the flow, expiring it if idle too long, and advances its TCP state.
#[inline(always)]
pub fn lookup(flow: &FlowKey, tcp_flags: u8, service_id: u32, settings: &Settings, now: u64) -> Lookup {
    let Some(conn) = CONNS.get_ptr_mut(flow) else { return Lookup::Miss };
    let c = unsafe { *conn };
    if now.saturating_sub(c.last_seen_ns) > timeout_ns(c.state, settings) || c.service_id != service_id {
        expire(flow, &c);
        return Lookup::Miss;
    }
    let Some(real) = (unsafe { REALS.get(&c.real_id) }) else {
        expire(flow, &c);
        return Lookup::Miss;
    };
    if real.ip != c.real_ip {
        // The id now names another server: never send this flow there.
        expire(flow, &c);
        return Lookup::Miss;
    }
    if real.removed() && settings.expire_nodest_conn != 0 {
        expire(flow, &c);
        return Lookup::NoDest;
    }
    if flow.proto == PROTO_TCP {
        let next = tcp::next_state(c.state, tcp_flags);
        if next != c.state {
            stats::load_move(c.real_id, c.state, next);
            unsafe { (*conn).state = next };
        }
    }
    unsafe { (*conn).last_seen_ns = now };
    Lookup::Hit(c.real_id, *real)
}

/// Records a new flow. `false` when the table is full.
#[inline(always)]
pub fn create(flow: &FlowKey, tcp_flags: u8, service_id: u32, real_id: u32, real: &RealEntry, now: u64) -> bool {
    let state = if flow.proto == PROTO_TCP { tcp::next_state(tcp::NONE, tcp_flags) } else { tcp::UDP };
    let entry = ConnEntry { real_id, real_ip: real.ip, last_seen_ns: now, state, _pad: [0; 3], service_id };
    if CONNS.insert(flow, &entry, 0).is_err() {
        return false;
    }
    stats::load_add(real_id, state, 1);
    true
}

/// Removes an entry; whoever removes it (this CPU, another, or the controller's sweep
/// through `xlb_expire`) takes its connection off the real's count, exactly once.
#[inline(always)]
pub fn expire(flow: &FlowKey, c: &ConnEntry) -> bool {
    if CONNS.remove(flow).is_ok() {
        stats::load_add(c.real_id, c.state, u64::MAX);
        true
    } else {
        false
    }
}
