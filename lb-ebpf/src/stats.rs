//! Counters. Traffic counters are per CPU (no atomics; the controller sums the CPUs);
//! connection counts are shared because schedulers read them (atomic adds).
use core::intrinsics::{AtomicOrdering, atomic_xadd};

use lb_common::tcp;

use crate::maps::{COUNTERS, REAL_LOAD, REAL_STATS};

/// Counts a frame's verdict (or an event), and notes the verdict for the diagnostics
/// (aya-log, `xlb trace`), which look at it once the frame is done.
#[inline(always)]
pub fn count(reason: u32) {
    if let Some(c) = COUNTERS.get_ptr_mut(reason) {
        unsafe { *c += 1 };
    }
    #[cfg(feature = "diagnostics")]
    crate::diag::verdict(reason, false);
}

/// [`count`] for a frame sent to a real server; `new_conn`: it opened the connection.
#[inline(always)]
pub fn count_sent(reason: u32, new_conn: bool) {
    if let Some(c) = COUNTERS.get_ptr_mut(reason) {
        unsafe { *c += 1 };
    }
    #[cfg(feature = "diagnostics")]
    crate::diag::verdict(reason, new_conn);
    #[cfg(not(feature = "diagnostics"))]
    let _ = new_conn;
}

#[inline(always)]
pub fn count_real(real_id: u32, bytes: u64, new_conn: bool) {
    if let Some(s) = REAL_STATS.get_ptr_mut(real_id) {
        unsafe {
            (*s).packets += 1;
            (*s).bytes += bytes;
            if new_conn {
                (*s).conns += 1;
            }
        }
    }
}

/// A NAT reply translated back to the client.
#[inline(always)]
pub fn count_real_out(real_id: u32, bytes: u64) {
    if let Some(s) = REAL_STATS.get_ptr_mut(real_id) {
        unsafe {
            (*s).out_packets += 1;
            (*s).out_bytes += bytes;
        }
    }
}

/// Adds `delta` (wrapping: -1 is u64::MAX) to the real's active or inactive count,
/// whichever `state` belongs to.
#[inline(always)]
pub fn load_add(real_id: u32, state: u8, delta: u64) {
    if let Some(load) = REAL_LOAD.get_ptr_mut(real_id) {
        unsafe {
            let field = if tcp::is_active(state) { &raw mut (*load).active } else { &raw mut (*load).inactive };
            atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(field, delta);
        }
    }
}

/// Moves a connection's count from its old state's column to its new state's.
#[inline(always)]
pub fn load_move(real_id: u32, from: u8, to: u8) {
    if tcp::is_active(from) != tcp::is_active(to) {
        load_add(real_id, from, u64::MAX);
        load_add(real_id, to, 1);
    }
}
