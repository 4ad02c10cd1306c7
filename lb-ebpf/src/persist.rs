//! Persistence (`-p timeout -M netmask`): a client network keeps its real across
//! connections and across every frontend of its service, as IPVS's connection templates
//! do (net/netfilter/ipvs/ip_vs_core.c ip_vs_sched_persist, ip_vs_conn.c
//! ip_vs_check_template and ip_vs_conn_expire).
use core::intrinsics::{AtomicOrdering, atomic_xadd};

use lb_common::{PersistEntry, PersistKey, RealEntry, ServiceInfo, Settings, addr, counter, svc_flags};

use crate::{
    atomic,
    maps::{PERSIST, REALS, SERVICE_INFO},
    stats,
};

/// BPF_NOEXIST: insert only if the key is absent.
const NOEXIST: u64 = 1;
/// Re-arms a template at most this often (a write to a shared entry).
const REFRESH_NS: u64 = 1_000_000_000;

/// A template a new connection follows: its real, and its tag for
/// [`lb_common::ConnEntry::template`] (0: no template, nothing to give back).
#[derive(Clone, Copy)]
pub struct Template {
    pub real_id: u32,
    pub tag: u32,
}

#[inline(always)]
fn key(svc: &ServiceInfo, client: &[u8; 16]) -> PersistKey {
    PersistKey { service_id: svc.id, client: addr::masked(client, &svc.persist_mask) }
}

/// IPVS's ip_vs_check_template: a template may place a connection only on a real that
/// still is the one it named, is in this service (not removed: keepalived removes a
/// failed real), has not failed its health check, and is on the side now serving (the
/// sorry server while it is active, the reals otherwise: keepalived removes the one
/// that is not). With expire_quiescent_template a weight-0 real ends its templates too.
#[inline(always)]
fn usable(svc: &ServiceInfo, entry: &PersistEntry, real: &RealEntry, settings: &Settings) -> bool {
    let sorry_active = svc.flags & svc_flags::SORRY_ACTIVE != 0;
    real.ip == entry.real_ip
        && real.service_id == svc.id
        && !real.removed()
        && !real.health_down()
        && real.sorry() == sorry_active
        && !(settings.expire_quiescent_template != 0 && real.weight == 0)
}

/// The client's live, usable template, re-armed (IPVS restarts a template's timer each
/// time it places a connection). A stale template (idle past the timeout and placing no
/// live connection) or an unusable one is removed: the client is scheduled afresh.
#[inline(always)]
pub fn lookup(svc: &ServiceInfo, client: &[u8; 16], settings: &Settings, now: u64) -> Option<Template> {
    let k = key(svc, client);
    let e = PERSIST.get_ptr_mut(&k)?;
    let entry = unsafe { *e };
    let idle = now.saturating_sub(entry.last_seen_ns) > svc.persist_timeout as u64 * 1_000_000_000;
    let live = match unsafe { REALS.get(&entry.real_id) } {
        Some(real) => (!idle || entry.n_control > 0) && usable(svc, &entry, real, settings),
        None => false,
    };
    if !live {
        let _ = PERSIST.remove(&k);
        return None;
    }
    if now.saturating_sub(entry.last_seen_ns) > REFRESH_NS {
        unsafe { (*e).last_seen_ns = now };
    }
    Some(Template { real_id: entry.real_id, tag: entry.tag })
}

/// Makes the client's template for `real_id`. If another CPU made one for this client
/// meanwhile, that one wins and is returned: both connections go to its real. With the
/// table full, the connection goes to `real_id` without a template (counted).
#[inline(always)]
pub fn remember(svc: &ServiceInfo, client: &[u8; 16], real_id: u32, real_ip: &[u8; 16], now: u64) -> Template {
    // Low bits of the clock: a key's successive templates get different tags.
    let tag = (now as u32) | 1;
    let entry = PersistEntry { real_id, real_ip: *real_ip, last_seen_ns: now, n_control: 0, tag };
    let k = key(svc, client);
    if PERSIST.insert(&k, &entry, NOEXIST).is_ok() {
        return Template { real_id, tag };
    }
    if let Some(other) = unsafe { PERSIST.get(&k) } {
        return Template { real_id: other.real_id, tag: other.tag };
    }
    stats::count(counter::PERSIST_TABLE_FULL);
    Template { real_id, tag: 0 }
}

/// The template `tag` places one more connection (IPVS's ip_vs_control_add).
#[inline(always)]
pub fn hold(svc: &ServiceInfo, client: &[u8; 16], tag: u32) {
    if tag == 0 {
        return;
    }
    if let Some(e) = PERSIST.get_ptr_mut(&key(svc, client)) {
        unsafe {
            if (*e).tag == tag {
                atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*e).n_control, 1);
            }
        }
    }
}

/// A connection template `tag` placed has gone (IPVS's ip_vs_control_del). When it was
/// the last one, the template is re-armed: it lives its timeout from now. A template
/// that has since been replaced or removed is left alone.
#[inline(always)]
pub fn release(service_id: u32, client: &[u8; 16], tag: u32) {
    if tag == 0 {
        return;
    }
    let Some(svc) = (unsafe { SERVICE_INFO.get(&service_id) }) else { return };
    if let Some(e) = PERSIST.get_ptr_mut(&key(svc, client)) {
        unsafe {
            if (*e).tag != tag {
                return;
            }
            // Never below zero.
            if let Some((1, _)) = atomic::update(&raw mut (*e).n_control, |n| n.checked_sub(1)) {
                (*e).last_seen_ns = crate::conntrack::clock_ns();
            }
        }
    }
}
