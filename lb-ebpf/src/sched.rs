//! Schedulers: choose a real server for a new flow.
use lb_common::{MAX_REALS_PER_SERVICE, RealEntry, ServiceInfo, slot_index};

use crate::maps::{REAL_SLOTS, REALS, RR_CURSORS};

/// Round robin over the service's real slots. The cursor is per CPU, so CPUs never
/// contend on one counter; each CPU's sequence is an exact rotation.
#[inline(always)]
pub fn round_robin(svc: &ServiceInfo) -> Option<(u32, RealEntry)> {
    let count = svc.real_count;
    if count == 0 || count > MAX_REALS_PER_SERVICE {
        return None;
    }
    let cursor = RR_CURSORS.get_ptr_mut(svc.id)?;
    let mut slot = unsafe { *cursor };
    if slot >= count {
        // The service shrank since this CPU last scheduled: start over.
        slot = 0;
    }
    unsafe { *cursor = if slot + 1 >= count { 0 } else { slot + 1 } };
    let real_id = *REAL_SLOTS.get(slot_index(svc.id, slot))?;
    let real = REALS.get(real_id)?;
    if !real.in_use() || real.service_id != svc.id {
        return None;
    }
    Some((real_id, *real))
}
