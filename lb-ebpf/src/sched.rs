//! IPVS's schedulers: choose a real server for a new connection.
//!
//! Table schedulers (rr, wrr, sh, dh, mh) look up a table the controller precomputed,
//! O(1) per connection. The least-connection family (lc, wlc, sed, nq) and fo/ovf scan
//! the service's reals with their live counts, as IPVS does, for new connections only.
use core::{
    ffi::c_void,
    intrinsics::{AtomicOrdering, atomic_xadd},
};

use aya_ebpf::helpers::bpf_loop;
use lb_common::{FlowKey, MAX_REALS_PER_SERVICE, RealEntry, RealLoad, ServiceInfo, addr, hash, sched, svc_flags};

use crate::{
    atomic,
    maps::{POOL, REAL_LOAD, REALS, RR_CURSORS},
};

/// Table entries a round-robin pick may skip over (overloaded reals) before giving up.
const RR_MAX_PROBES: u32 = 64;
/// Rehash rounds of mh-fallback.
const MH_FALLBACK_ROUNDS: u32 = 16;

#[inline(always)]
fn load(real_id: u32) -> RealLoad {
    REAL_LOAD.get(real_id).copied().unwrap_or_default()
}

/// A real can take a new connection: not removed, healthy, weight > 0, under its upper
/// threshold.
#[inline(always)]
fn available(real: &RealEntry, load: &RealLoad) -> bool {
    !real.removed()
        && !real.health_down()
        && real.weight > 0
        && (real.u_threshold == 0 || load.active + load.inactive < real.u_threshold as u64)
}

/// The id of the real at pool slot `slot`, if it can take a connection.
#[inline(always)]
fn available_at(slot: u32) -> Option<u32> {
    let real_id = *POOL.get(slot)?;
    let real = unsafe { REALS.get(&real_id) }?;
    if available(real, &load(real_id)) { Some(real_id) } else { None }
}

/// The id of the real a new connection goes to. Ids, not entries, are passed around:
/// the BPF stack is too small for copies of real entries in every walk. A separate BPF
/// function: the walks' state gets its own stack frame.
#[inline(never)]
pub fn schedule(svc: &ServiceInfo, flow: &FlowKey) -> Option<u32> {
    match svc.scheduler {
        sched::RR | sched::WRR => round_robin(svc),
        sched::SH => source_hash(svc, flow),
        sched::DH => {
            if svc.table_len == 0 {
                return None;
            }
            let bucket = hash::dh_bucket(addr::fold(&flow.dst)) % svc.table_len;
            available_at(svc.table_off + bucket)
        }
        sched::MH => maglev(svc, flow),
        _ => scan(svc),
    }
}

/// Calls `step(i, ctx)` for i in 0..n until it returns 1, through the bpf_loop
/// helper: the verifier checks `step` once instead of every iteration.
#[inline(always)]
fn bpf_for<C>(n: u32, ctx: &mut C, step: extern "C" fn(u64, *mut c_void) -> i64) {
    unsafe { bpf_loop(n, step as usize as *mut c_void, (ctx as *mut C).cast(), 0) };
}

/// rr and wrr: walk the precomputed sequence (wrr's is the smooth weighted order, so
/// the long-run ratios are exact and no real gets a burst). The cursor is one per
/// service, shared by every CPU and advanced atomically (compare-and-swap), so new
/// connections follow one order whichever CPU their first packet lands on, as IPVS's
/// single rr/wrr position does (ip_vs_rr.c, ip_vs_wrr.c, under the service's lock).
#[inline(always)]
fn round_robin(svc: &ServiceInfo) -> Option<u32> {
    if svc.table_len == 0 {
        return None;
    }
    let cursor = RR_CURSORS.get_ptr_mut(svc.id)?;
    // Losing every attempt to other CPUs (each of which advanced it) still leaves a
    // valid position.
    let ticket = match atomic::update(cursor, |t| Some(t.wrapping_add(1))) {
        Some((taken, _)) => taken,
        None => unsafe { *cursor },
    };
    let start = (ticket % svc.table_len as u64) as u32;
    let mut walk = TableWalk { table_off: svc.table_off, table_len: svc.table_len, pos: start, found: Found::default() };
    bpf_for(RR_MAX_PROBES, &mut walk, rr_step);
    // Entries skipped over (overloaded reals) are skipped for the next connection too,
    // as IPVS leaves its position on the real it chose.
    let advanced = walk.pos.wrapping_sub(start).wrapping_add(svc.table_len) % svc.table_len;
    if walk.found.ok && advanced > 1 {
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(cursor, (advanced - 1) as u64) };
    }
    walk.found.get()
}

/// What a bpf_loop step found. Plain fields, not an Option: a callback storing `None`
/// would leave the payload bytes undefined, which the verifier rejects.
#[derive(Default)]
struct Found {
    ok: bool,
    real_id: u32,
}

impl Found {
    /// Records `candidate` if there is one. Returns bpf_loop's verdict: 1 (stop) when
    /// it did, else 0 — constants, which the verifier can bound.
    #[inline(always)]
    fn take(&mut self, candidate: Option<u32>) -> i64 {
        match candidate {
            Some(real_id) => {
                *self = Found { ok: true, real_id };
                1
            }
            None => 0,
        }
    }
    #[inline(always)]
    fn get(&self) -> Option<u32> {
        if self.ok { Some(self.real_id) } else { None }
    }
}

struct TableWalk {
    table_off: u32,
    table_len: u32,
    pos: u32,
    found: Found,
}

extern "C" fn rr_step(_: u64, ctx: *mut c_void) -> i64 {
    let w = unsafe { &mut *(ctx as *mut TableWalk) };
    if w.pos >= w.table_len {
        w.pos = 0;
    }
    let slot = w.table_off + w.pos;
    w.pos += 1;
    w.found.take(available_at(slot))
}

struct HashWalk {
    table_off: u32,
    table_len: u32,
    /// The client's address, folded to 32 bits.
    client: u32,
    port: u16,
    start: u32,
    found: Found,
}

#[inline(always)]
fn source_hash(svc: &ServiceInfo, flow: &FlowKey) -> Option<u32> {
    if svc.table_len != hash::SH_TABLE_SIZE {
        return None;
    }
    let client = addr::fold(&flow.src);
    let port = if svc.flags & svc_flags::SH_PORT != 0 { u16::from_be_bytes(flow.sport) } else { 0 };
    let bucket = hash::sh_bucket(client, port, 0);
    if let Some(found) = available_at(svc.table_off + bucket) {
        return Some(found);
    }
    if svc.flags & svc_flags::SH_FALLBACK == 0 {
        return None;
    }
    // IPVS's ip_vs_sh_get_fallback: walk the whole table from the hashed bucket.
    let mut walk =
        HashWalk { table_off: svc.table_off, table_len: svc.table_len, client, port, start: bucket, found: Found::default() };
    bpf_for(hash::SH_TABLE_SIZE, &mut walk, sh_fallback_step);
    walk.found.get()
}

extern "C" fn sh_fallback_step(offset: u64, ctx: *mut c_void) -> i64 {
    let w = unsafe { &mut *(ctx as *mut HashWalk) };
    let b = hash::sh_bucket(w.client, w.port, (offset as u32 + w.start) & (hash::SH_TABLE_SIZE - 1));
    w.found.take(available_at(w.table_off + b))
}

#[inline(always)]
fn maglev(svc: &ServiceInfo, flow: &FlowKey) -> Option<u32> {
    let len = svc.table_len;
    if len == 0 {
        return None;
    }
    let client = addr::fold(&flow.src);
    let port = if svc.flags & svc_flags::MH_PORT != 0 { u16::from_be_bytes(flow.sport) } else { 0 };
    if let Some(found) = available_at(svc.table_off + hash::mh_hash(client, port, 0) % len) {
        return Some(found);
    }
    if svc.flags & svc_flags::MH_FALLBACK == 0 {
        return None;
    }
    let mut walk = HashWalk { table_off: svc.table_off, table_len: len, client, port, start: 0, found: Found::default() };
    bpf_for(MH_FALLBACK_ROUNDS, &mut walk, mh_fallback_step);
    walk.found.get()
}

extern "C" fn mh_fallback_step(round: u64, ctx: *mut c_void) -> i64 {
    let w = unsafe { &mut *(ctx as *mut HashWalk) };
    if w.table_len == 0 {
        return 1;
    }
    w.found.take(available_at(w.table_off + hash::mh_hash(w.client, w.port, round as u32 + 1) % w.table_len))
}

struct Scan {
    reals_off: u32,
    scheduler: u32,
    best: Found,
    /// best's overhead for lc/wlc/sed/nq (lower wins); its weight for all.
    best_cost: u64,
    best_weight: u64,
}

/// lc, wlc, sed, nq, fo and ovf: one pass over the service's reals, IPVS's comparisons
/// (the first real wins ties).
#[inline(always)]
fn scan(svc: &ServiceInfo) -> Option<u32> {
    let mut s =
        Scan { reals_off: svc.reals_off, scheduler: svc.scheduler, best: Found::default(), best_cost: 0, best_weight: 0 };
    bpf_for(svc.reals_len.min(MAX_REALS_PER_SERVICE), &mut s, scan_step);
    s.best.get()
}

extern "C" fn scan_step(i: u64, ctx: *mut c_void) -> i64 {
    let s = unsafe { &mut *(ctx as *mut Scan) };
    let Some(&real_id) = POOL.get(s.reals_off + i as u32) else { return 1 };
    let Some(real) = (unsafe { REALS.get(&real_id) }) else { return 0 };
    let l = load(real_id);
    if !available(real, &l) {
        return 0;
    }
    let weight = real.weight as u64;
    let first = !s.best.ok;
    let (better, cost) = match s.scheduler {
        sched::LC => {
            let cost = l.overhead();
            (first || cost < s.best_cost, cost)
        }
        sched::WLC | sched::SED | sched::NQ => {
            if s.scheduler == sched::NQ && l.active == 0 {
                // nq: an idle real is taken at once.
                return s.best.take(Some(real_id));
            }
            let cost = if s.scheduler == sched::WLC { l.overhead() } else { l.active + 1 };
            // cost/weight < best_cost/best_weight, without division.
            (first || s.best_cost * weight > cost * s.best_weight, cost)
        }
        sched::FO => (first || weight > s.best_weight, 0),
        sched::OVF => (l.active <= weight && (first || weight > s.best_weight), 0),
        _ => (false, 0),
    };
    if better {
        let _ = s.best.take(Some(real_id));
        s.best_cost = cost;
        s.best_weight = weight;
    }
    0
}
