//! Every map of the fast path, declared together. Layouts live in lb-common.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use lb_common::{
    ConnEntry, FlowKey, FragEntry, FragKey, INGRESS_MAC_SLOTS, IngressMac, MAX_DECAP_VIPS, MAX_EXTRA_MACS, MAX_FRAGS, MAX_FRONTENDS, MAX_PERSIST, OBJECT_MAX_CONNS, OBJECT_MAX_REALS,
    OBJECT_MAX_SERVICES,
    NatReply, POOL_SLOTS, PersistEntry, PersistKey, RealEntry, RealLoad, RealStats, ServiceInfo, ServiceKey, Settings, TraceConfig,
    addr_filter, counter, decap_counter, sync, trace,
};

use crate::scratch::Scratch;

/// VIP:port:protocol → service id. Several frontends may share a service (a group).
#[map]
pub static SERVICES: HashMap<ServiceKey, u32> = HashMap::with_max_entries(MAX_FRONTENDS, 0);

/// Every VIP with a frontend (16-byte form) → how many frontends it has: ICMP to a VIP
/// (echo, errors about its flows) is recognised by it.
#[map]
pub static VIPS: HashMap<[u8; 16], u32> = HashMap::with_max_entries(MAX_FRONTENDS, 0);

/// The address filter (see `lb_common::addr_filter`): tested before any hash lookup.
#[map]
pub static ADDR_FILTER: Array<u64> = Array::with_max_entries(addr_filter::WORDS, 0);

/// Service id → service. Replaced whole on every change (atomic for the fast path).
#[map]
pub static SERVICE_INFO: HashMap<u32, ServiceInfo> = HashMap::with_max_entries(OBJECT_MAX_SERVICES, 0);

/// Real-id lists and scheduling tables of every service, at the offsets ServiceInfo names.
#[map]
pub static POOL: Array<u32> = Array::with_max_entries(POOL_SLOTS, 0);

/// Real id → real server (a hash map: updates replace the entry atomically).
#[map]
pub static REALS: HashMap<u32, RealEntry> = HashMap::with_max_entries(OBJECT_MAX_REALS, 0);

/// Real id → live connection counts, shared by all CPUs (atomic adds).
#[map]
pub static REAL_LOAD: Array<RealLoad> = Array::with_max_entries(OBJECT_MAX_REALS, 0);

/// Client flow → its real and TCP state. A plain hash, not LRU: when full, new
/// connections are refused rather than established ones evicted and misrouted.
#[map]
pub static CONNS: HashMap<FlowKey, ConnEntry> = HashMap::with_max_entries(OBJECT_MAX_CONNS, 0);

/// NAT: a real server's reply 5-tuple (RIP:port → client) → the client's flow in CONNS
/// and the way back to the client. Written and removed with the connection entry.
#[map]
pub static NAT_REPLIES: HashMap<FlowKey, NatReply> = HashMap::with_max_entries(OBJECT_MAX_CONNS, 0);

/// Half-open TCP connections: a client's SYN was scheduled, its handshake not completed
/// yet. LRU: a flood of spoofed SYNs evicts only other half-open entries, never an
/// established connection (CONNS gets the entry when the client's next packet
/// completes the handshake). Not in the reals' ActiveConn/InActConn counts (an
/// eviction could not take a count back).
#[map]
pub static HALF_OPEN: LruHashMap<FlowKey, ConnEntry> = LruHashMap::with_max_entries(OBJECT_MAX_CONNS, 0);

/// NAT: the reply entries of half-open connections (the real's SYN-ACK finds its
/// client by it), LRU as HALF_OPEN; moved to NAT_REPLIES with the connection.
#[map]
pub static HALF_OPEN_REPLIES: LruHashMap<FlowKey, NatReply> = LruHashMap::with_max_entries(OBJECT_MAX_CONNS, 0);

/// Fragmented datagrams: (source, destination, IP id, protocol) → what their first
/// fragment was (its ports, and the real it went to), for the later fragments, which
/// carry no ports, to follow (Cilium's IPV4_FRAG_DATAGRAMS_MAP). LRU: bounded, the
/// oldest datagrams forgotten first.
#[map]
pub static FRAGS: LruHashMap<FragKey, FragEntry> = LruHashMap::with_max_entries(MAX_FRAGS, 0);

/// Persistence templates: client network within a service → real.
#[map]
pub static PERSIST: HashMap<PersistKey, PersistEntry> = HashMap::with_max_entries(MAX_PERSIST, 0);

/// Slot `ifindex & 255` → the MAC of the NIC `ifindex` the balancer runs on (see
/// `l2`): frames for a VIP addressed to another unicast MAC are passed.
#[map]
pub static INGRESS_MACS: Array<IngressMac> = Array::with_max_entries(INGRESS_MAC_SLOTS, 0);

/// (NIC, MAC) → 1: further unicast MACs the kernel accepts on that NIC (its macvlan
/// uppers, such as keepalived's VRRP virtual MAC; the own MAC of a NIC whose
/// INGRESS_MACS slot another holds).
#[map]
pub static EXTRA_MACS: HashMap<IngressMac, u8> = HashMap::with_max_entries(MAX_EXTRA_MACS, 0);

/// Timeouts and IPVS-style switches (one entry).
#[map]
pub static SETTINGS: Array<Settings> = Array::with_max_entries(1, 0);

/// Round-robin position per service, shared by every CPU (compare-and-swap): one
/// order of new connections, as IPVS has.
#[map]
pub static RR_CURSORS: Array<u64> = Array::with_max_entries(OBJECT_MAX_SERVICES, 0);

/// Real id → traffic counters.
#[map]
pub static REAL_STATS: PerCpuArray<RealStats> = PerCpuArray::with_max_entries(OBJECT_MAX_REALS, 0);

/// Per-CPU scratch memory for what the stack cannot hold (see `scratch`).
#[map]
pub static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// Verdict reason → frames (see `lb_common::counter`).
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// A TUN real server's VIPs (16-byte form): a tunnelled packet whose inner destination
/// is one of them is decapsulated.
#[map]
pub static DECAP_VIPS: HashMap<[u8; 16], u8> = HashMap::with_max_entries(MAX_DECAP_VIPS, 0);

/// The decapsulator's counters (see `lb_common::decap_counter`).
#[map]
pub static DECAP_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(decap_counter::COUNT, 0);

/// `xlb trace`'s switch and filter (one entry; see `lb_common::trace`).
#[map]
pub static TRACE: Array<TraceConfig> = Array::with_max_entries(1, 0);

/// `xlb trace`'s events, written only while TRACE is on and a frame matches it.
#[map]
pub static TRACE_EVENTS: RingBuf = RingBuf::with_byte_size(trace::RING_BYTES, 0);

/// Connection synchronisation events for the master sync daemon, written only while
/// `Settings::sync_master` is on (see `sync`).
#[map]
pub static SYNC_EVENTS: RingBuf = RingBuf::with_byte_size(sync::RING_BYTES, 0);
