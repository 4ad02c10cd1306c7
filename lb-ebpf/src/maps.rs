//! Every map of the fast path, declared together. Layouts live in lb-common.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
};
use lb_common::{
    ConnEntry, FlowKey, MAX_CONNS, MAX_REALS, MAX_REALS_PER_SERVICE, MAX_SERVICES, RealEntry,
    RealStats, ServiceInfo, ServiceKey, counter,
};

/// VIP:port:protocol → service.
#[map]
pub static SERVICES: HashMap<ServiceKey, ServiceInfo> = HashMap::with_max_entries(MAX_SERVICES, 0);

/// Row `service id` holds the real ids the scheduler picks from (`real_count` of them).
#[map]
pub static REAL_SLOTS: Array<u32> =
    Array::with_max_entries(MAX_SERVICES * MAX_REALS_PER_SERVICE, 0);

/// Real id → real server.
#[map]
pub static REALS: Array<RealEntry> = Array::with_max_entries(MAX_REALS, 0);

/// Client flow → chosen real (flow affinity). Shared by all CPUs: a flow's packets
/// may arrive on any of them.
#[map]
pub static CONNS: LruHashMap<FlowKey, ConnEntry> = LruHashMap::with_max_entries(MAX_CONNS, 0);

/// Round-robin position per service, one per CPU: no shared counter to contend on.
#[map]
pub static RR_CURSORS: PerCpuArray<u32> = PerCpuArray::with_max_entries(MAX_SERVICES, 0);

/// Real id → traffic counters.
#[map]
pub static REAL_STATS: PerCpuArray<RealStats> = PerCpuArray::with_max_entries(MAX_REALS, 0);

/// Verdict reason → frames (see `lb_common::counter`).
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);
