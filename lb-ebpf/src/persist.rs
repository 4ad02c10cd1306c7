//! Persistence (`-p timeout -M netmask`): a client network keeps its real across
//! connections and across every frontend of its service.
use lb_common::{PersistEntry, PersistKey, ServiceInfo, addr, counter};

use crate::{
    maps::{PERSIST, REALS},
    stats,
};

/// Writes a template at most this often for an active client, to keep it alive.
const REFRESH_NS: u64 = 1_000_000_000;

#[inline(always)]
fn key(svc: &ServiceInfo, client: &[u8; 16]) -> PersistKey {
    PersistKey { service_id: svc.id, client: addr::masked(client, &svc.persist_mask) }
}

/// The client's template real's id, if it is live and its real still serves (a
/// quiescent, weight-0 real keeps its clients, as IPVS does by default).
#[inline(always)]
pub fn lookup(svc: &ServiceInfo, client: &[u8; 16], now: u64) -> Option<u32> {
    let k = key(svc, client);
    let entry = unsafe { *PERSIST.get(&k)? };
    if now.saturating_sub(entry.last_seen_ns) > svc.persist_timeout as u64 * 1_000_000_000 {
        let _ = PERSIST.remove(&k);
        return None;
    }
    let real = unsafe { REALS.get(&entry.real_id) }?;
    if real.ip != entry.real_ip || real.removed() {
        let _ = PERSIST.remove(&k);
        return None;
    }
    if now.saturating_sub(entry.last_seen_ns) > REFRESH_NS {
        remember(svc, client, entry.real_id, &real.ip, now);
    }
    Some(entry.real_id)
}

#[inline(always)]
pub fn remember(svc: &ServiceInfo, client: &[u8; 16], real_id: u32, real_ip: &[u8; 16], now: u64) {
    let entry = PersistEntry { real_id, real_ip: *real_ip, last_seen_ns: now, _pad: 0 };
    if PERSIST.insert(&key(svc, client), &entry, 0).is_err() {
        stats::count(counter::PERSIST_TABLE_FULL);
    }
}

/// Keeps the template of a client with traffic alive (IPVS keeps a template while
/// connections it controls exist).
#[inline(always)]
pub fn touch(svc: &ServiceInfo, client: &[u8; 16], now: u64) {
    if let Some(e) = PERSIST.get_ptr_mut(&key(svc, client)) {
        unsafe {
            if now.saturating_sub((*e).last_seen_ns) > REFRESH_NS {
                (*e).last_seen_ns = now;
            }
        }
    }
}
