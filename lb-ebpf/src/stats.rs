//! Per-CPU counters: no atomics needed, the controller sums the CPUs.
use crate::maps::{COUNTERS, REAL_STATS};

#[inline(always)]
pub fn count(reason: u32) {
    if let Some(c) = COUNTERS.get_ptr_mut(reason) {
        unsafe { *c += 1 };
    }
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
