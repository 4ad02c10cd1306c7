//! Map keys, values and constants shared by the XDP fast path (`lb-ebpf`) and the
//! controller (`lb-userspace`), plus the pure logic both must agree on (TCP state
//! transitions, scheduler hashes). Everything here is `#[repr(C)]` plain old data.
//!
//! Addresses and ports are stored exactly as they appear on the wire (network byte
//! order in memory), so the fast path can build keys from packet bytes with no swaps.
#![no_std]

pub mod hash;
pub mod tcp;

/// Frontend keys (VIP:port:protocol entries), over all services.
pub const MAX_FRONTENDS: u32 = 65_536;
/// Virtual services (a plain VIP:port service, or a group sharing reals and persistence).
pub const MAX_SERVICES: u32 = 4096;
/// Real servers in one service.
pub const MAX_REALS_PER_SERVICE: u32 = 1024;
/// Real-server ids over all services.
pub const MAX_REALS: u32 = 65_536;
/// Entries in the connection table. When it is full, new connections are dropped and
/// counted; established ones are never evicted.
pub const MAX_CONNS: u32 = 262_144;
/// Persistence templates (client network → real).
pub const MAX_PERSIST: u32 = 65_536;
/// u32 slots shared by every service's real list and scheduling table.
pub const POOL_SLOTS: u32 = 1 << 22;
/// Longest weighted round-robin sequence; weights are scaled down beyond it.
pub const WRR_MAX_SEQUENCE: u32 = 65_536;

pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// Scheduler ids ([`ServiceInfo::scheduler`]), IPVS's set.
pub mod sched {
    pub const RR: u32 = 0;
    pub const WRR: u32 = 1;
    pub const SH: u32 = 2;
    pub const DH: u32 = 3;
    pub const LC: u32 = 4;
    pub const WLC: u32 = 5;
    pub const SED: u32 = 6;
    pub const NQ: u32 = 7;
    pub const MH: u32 = 8;
    pub const FO: u32 = 9;
    pub const OVF: u32 = 10;
}

/// [`ServiceInfo::flags`].
pub mod svc_flags {
    /// Persistent service: a client network keeps its real across connections and ports.
    pub const PERSISTENT: u32 = 1;
    /// One-packet scheduling (UDP): every datagram is scheduled, no connection entry.
    pub const ONE_PACKET: u32 = 2;
    /// sh: hash the source port too.
    pub const SH_PORT: u32 = 4;
    /// sh: if the hashed real is unavailable, try the next buckets.
    pub const SH_FALLBACK: u32 = 8;
    /// mh: hash the source port too.
    pub const MH_PORT: u32 = 16;
    /// mh: if the hashed real is unavailable, rehash.
    pub const MH_FALLBACK: u32 = 32;
    /// Health: a failed real keeps its place in the tables with weight 0
    /// (keepalived's inhibit_on_failure) instead of leaving them.
    pub const INHIBIT_ON_FAILURE: u32 = 64;
    /// Health: too few reals are healthy; the sorry server takes new connections.
    pub const SORRY_ACTIVE: u32 = 128;
}

/// [`RealEntry::flags`].
pub mod real_flags {
    /// `mac` holds the real server's resolved MAC address.
    pub const MAC_VALID: u16 = 1;
    /// Removed from its service: no new flows; its flows continue or are dropped as
    /// `expire_nodest_conn` says, and the id is freed once it has no connections.
    pub const REMOVED: u16 = 2;
    /// Failed its health check: no new flows (established ones continue).
    pub const HEALTH_DOWN: u16 = 4;
    /// The service's sorry server: scheduled only while SORRY_ACTIVE.
    pub const SORRY: u16 = 8;
}

/// Frontend key: one VIP:port:protocol. Several may lead to one service.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    /// Virtual IPv4 address, wire order.
    pub vip: [u8; 4],
    /// Virtual port, wire order (big endian).
    pub port: [u8; 2],
    pub proto: u8,
    pub _pad: u8,
}

impl ServiceKey {
    pub const fn new(vip: [u8; 4], port: u16, proto: u8) -> Self {
        Self { vip, port: port.to_be_bytes(), proto, _pad: 0 }
    }
    pub const fn port(&self) -> u16 {
        u16::from_be_bytes(self.port)
    }
}

/// A service: how it schedules, and where its real list and scheduling table are in the
/// pool. Replaced whole (a hash-map update is atomic), so the fast path never sees a
/// half-updated table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceInfo {
    pub id: u32,
    pub scheduler: u32,
    pub flags: u32,
    /// Persistence timeout in seconds (with [`svc_flags::PERSISTENT`]).
    pub persist_timeout: u32,
    /// Persistence netmask, wire order.
    pub persist_mask: [u8; 4],
    /// Firewall mark of a group service (0: a plain VIP:port service).
    pub fwmark: u32,
    /// Pool slots listing every real id of the service (schedulers that scan).
    pub reals_off: u32,
    pub reals_len: u32,
    /// Pool slots of the scheduling table (rr/wrr sequence, sh/dh buckets, mh table).
    pub table_off: u32,
    pub table_len: u32,
}

/// One real server, keyed by its real id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RealEntry {
    /// Real server IPv4 address, wire order.
    pub ip: [u8; 4],
    pub service_id: u32,
    pub mac: [u8; 6],
    pub flags: u16,
    /// Interface the real server is reached through.
    pub ifindex: u32,
    /// 0..=65535; 0 is quiescent: no new flows, established flows continue.
    pub weight: u32,
    /// Upper connection threshold (0: none): at or above it the real takes no new flows.
    pub u_threshold: u32,
    /// Lower threshold, kept for listings and save files (IPVS's hysteresis bound).
    pub l_threshold: u32,
}

impl RealEntry {
    pub const fn mac_valid(&self) -> bool {
        self.flags & real_flags::MAC_VALID != 0
    }
    pub const fn removed(&self) -> bool {
        self.flags & real_flags::REMOVED != 0
    }
    pub const fn health_down(&self) -> bool {
        self.flags & real_flags::HEALTH_DOWN != 0
    }
    pub const fn sorry(&self) -> bool {
        self.flags & real_flags::SORRY != 0
    }
}

/// Live connection counts of a real, shared by all CPUs (atomic adds).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RealLoad {
    /// Connections in ESTABLISHED (IPVS's ActiveConn).
    pub active: u64,
    /// Connections in any other state, and UDP flows (IPVS's InActConn).
    pub inactive: u64,
}

impl RealLoad {
    /// IPVS's ip_vs_dest_conn_overhead: an active connection weighs 256 inactive ones.
    pub const fn overhead(&self) -> u64 {
        (self.active << 8) + self.inactive
    }
}

/// Key of the connection table: a flow as the client sends it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// Value of the connection table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnEntry {
    pub real_id: u32,
    /// The real's address when the flow was scheduled; a real id since reused by another
    /// server no longer matches, so the flow is never sent to the wrong machine.
    pub real_ip: [u8; 4],
    /// CLOCK_MONOTONIC (bpf_ktime_get_ns) of the last packet.
    pub last_seen_ns: u64,
    /// [`tcp`] state, or [`tcp::UDP`].
    pub state: u8,
    pub _pad: [u8; 3],
    pub service_id: u32,
}

/// Key of the persistence table: a client network within a service.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PersistKey {
    pub service_id: u32,
    /// Client address masked with the service's persistence netmask, wire order.
    pub client: [u8; 4],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PersistEntry {
    pub real_id: u32,
    pub real_ip: [u8; 4],
    pub last_seen_ns: u64,
}

/// Global settings (one entry): timeouts as `ipvsadm --set` and IPVS's sysctls.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Idle timeout per TCP state, seconds, indexed by [`tcp`] state.
    pub tcp_timeouts: [u32; tcp::STATE_COUNT],
    pub udp_timeout: u32,
    /// IPVS's expire_nodest_conn: 0 keeps forwarding a removed real's flows to it,
    /// 1 drops their packets and forgets them.
    pub expire_nodest_conn: u32,
    /// IPVS's sloppy_tcp: 1 lets a TCP packet other than SYN start a connection.
    pub sloppy_tcp: u32,
    pub _pad: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            tcp_timeouts: tcp::DEFAULT_TIMEOUTS,
            udp_timeout: 300,
            expire_nodest_conn: 0,
            sloppy_tcp: 0,
            _pad: 0,
        }
    }
}

/// Per-real, per-CPU traffic counters.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RealStats {
    pub packets: u64,
    pub bytes: u64,
    /// New connections scheduled to this real.
    pub conns: u64,
}

impl RealStats {
    pub fn add(&mut self, other: &RealStats) {
        self.packets += other.packets;
        self.bytes += other.bytes;
        self.conns += other.conns;
    }
}

/// Indexes of the per-CPU verdict counters: why a frame was passed, dropped or sent.
pub mod counter {
    /// Not IPv4 (ARP, IPv6, VLAN-tagged, …).
    pub const PASS_NOT_IPV4: u32 = 0;
    /// IPv4 but not TCP or UDP.
    pub const PASS_NOT_TCP_UDP: u32 = 1;
    /// TCP/UDP whose destination is no service.
    pub const PASS_NOT_VIP: u32 = 2;
    /// Frame too short for the headers it announces.
    pub const PASS_TRUNCATED: u32 = 3;
    /// Malformed IPv4 header (IHL < 5, wrong version).
    pub const PASS_BAD_HEADER: u32 = 4;
    /// IPv4 fragment: ports are not in every fragment, so the kernel handles it.
    pub const PASS_FRAGMENT: u32 = 5;
    /// The chosen real's MAC address is not resolved yet.
    pub const PASS_NEIGH_UNRESOLVED: u32 = 6;
    /// The scheduler found no available real (none, all quiescent or overloaded).
    pub const DROP_NO_REAL: u32 = 7;
    /// Forwarded to a real server by direct routing (XDP_TX).
    pub const TX_DR: u32 = 8;
    /// The connection table is full: a new connection was dropped.
    pub const DROP_CONN_TABLE_FULL: u32 = 9;
    /// A TCP packet other than SYN with no connection: left to the kernel (which resets it).
    pub const PASS_NO_CONN: u32 = 10;
    /// A packet of a flow whose real was removed, with expire_nodest_conn set.
    pub const DROP_NODEST: u32 = 11;
    /// The persistence table is full: the connection was scheduled without a template.
    pub const PERSIST_TABLE_FULL: u32 = 12;
    pub const COUNT: u32 = 13;

    /// Names in index order, for listings and metrics.
    pub const NAMES: [&str; COUNT as usize] = [
        "pass_not_ipv4",
        "pass_not_tcp_udp",
        "pass_not_vip",
        "pass_truncated",
        "pass_bad_header",
        "pass_fragment",
        "pass_neigh_unresolved",
        "drop_no_real",
        "tx_dr",
        "drop_conn_table_full",
        "pass_no_conn",
        "drop_nodest",
        "persist_table_full",
    ];
}

/// Names of the maps in the eBPF object (and of their pins in bpffs).
pub mod map_names {
    pub const SERVICES: &str = "SERVICES";
    pub const SERVICE_INFO: &str = "SERVICE_INFO";
    pub const POOL: &str = "POOL";
    pub const REALS: &str = "REALS";
    pub const REAL_LOAD: &str = "REAL_LOAD";
    pub const CONNS: &str = "CONNS";
    pub const PERSIST: &str = "PERSIST";
    pub const SETTINGS: &str = "SETTINGS";
    pub const RR_CURSORS: &str = "RR_CURSORS";
    pub const REAL_STATS: &str = "REAL_STATS";
    pub const COUNTERS: &str = "COUNTERS";
    pub const ALL: [&str; 11] =
        [SERVICES, SERVICE_INFO, POOL, REALS, REAL_LOAD, CONNS, PERSIST, SETTINGS, RR_CURSORS, REAL_STATS, COUNTERS];
}

/// Benchmark support (`cargo xtask bench`). BPF_PROG_TEST_RUN repeats a program on one
/// buffer without restoring it, so the bench wrapper program restores the original frame
/// from this map before every iteration.
pub mod bench {
    /// Largest frame the wrapper can restore.
    pub const FRAME_MAX: usize = 256;

    /// Value of the bench frame map (one entry).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct BenchFrame {
        /// Length of the original frame in `bytes`.
        pub len: u32,
        /// Offset of a 4-byte field (a client's source address) overwritten every
        /// iteration with `vary_base + (iteration % vary_count)`, so iterations are
        /// distinct flows; 0: the frame is restored as it is.
        pub vary_offset: u32,
        pub vary_base: u32,
        /// Distinct values before the field repeats (0: never repeats).
        pub vary_count: u32,
        /// Iterations so far (the wrapper counts them to vary the field).
        pub iterations: u32,
        /// Iterations whose frame could not be restored.
        pub restore_failures: u32,
        pub bytes: [u8; FRAME_MAX],
    }

    impl Default for BenchFrame {
        fn default() -> Self {
            Self { len: 0, vary_offset: 0, vary_base: 0, vary_count: 0, iterations: 0, restore_failures: 0, bytes: [0; FRAME_MAX] }
        }
    }

    /// The bench frame map's name in the eBPF object.
    pub const FRAME_MAP: &str = "BENCH_FRAME";
    /// A bare XDP_DROP program (the cheapest XDP program).
    pub const DROP_PROGRAM: &str = "xlb_bench_drop";
    /// A bare "swap MACs, XDP_TX" program (the cheapest forwarder).
    pub const SWAP_TX_PROGRAM: &str = "xlb_bench_swap_tx";
    /// Restores the frame only: the wrapper's own cost, subtracted from it.
    pub const RESTORE_PROGRAM: &str = "xlb_bench_restore";
    /// Restores the frame, then runs the balancer on it.
    pub const BALANCE_PROGRAM: &str = "xlb_bench_balance";
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    unsafe impl aya::Pod for ServiceKey {}
    unsafe impl aya::Pod for ServiceInfo {}
    unsafe impl aya::Pod for RealEntry {}
    unsafe impl aya::Pod for RealLoad {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for ConnEntry {}
    unsafe impl aya::Pod for PersistKey {}
    unsafe impl aya::Pod for PersistEntry {}
    unsafe impl aya::Pod for Settings {}
    unsafe impl aya::Pod for RealStats {}
    unsafe impl aya::Pod for bench::BenchFrame {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        // The kernel compares keys bytewise: hidden padding would make equal keys differ.
        assert_eq!(size_of::<ServiceKey>(), 8);
        assert_eq!(size_of::<FlowKey>(), 16);
        assert_eq!(size_of::<PersistKey>(), 8);
        assert_eq!(size_of::<RealEntry>(), 32);
        assert_eq!(size_of::<ConnEntry>(), 24);
        assert_eq!(size_of::<ServiceInfo>(), 40);
        assert_eq!(size_of::<Settings>(), 4 * (tcp::STATE_COUNT + 4));
        assert_eq!(size_of::<bench::BenchFrame>(), 24 + bench::FRAME_MAX);
    }

    #[test]
    fn service_key_port_is_wire_order() {
        let k = ServiceKey::new([10, 0, 0, 1], 80, PROTO_TCP);
        assert_eq!(k.port, [0, 80]);
        assert_eq!(k.port(), 80);
    }

    #[test]
    fn counter_names_cover_every_counter() {
        assert_eq!(counter::NAMES.len(), counter::COUNT as usize);
        assert_eq!(counter::NAMES[counter::TX_DR as usize], "tx_dr");
        assert_eq!(counter::NAMES[counter::PERSIST_TABLE_FULL as usize], "persist_table_full");
    }

    #[test]
    fn overhead_weighs_active_connections_256_times() {
        assert_eq!(RealLoad { active: 2, inactive: 3 }.overhead(), 515);
    }
}
