//! Map keys, values and constants shared by the XDP fast path (`lb-ebpf`) and the
//! controller (`lb-userspace`). Everything here is `#[repr(C)]` and plain old data.
//!
//! Addresses and ports are stored exactly as they appear on the wire (network byte
//! order in memory), so the fast path can build keys from packet bytes with no swaps.
#![no_std]

/// Largest number of services (VIP:port:protocol entries).
pub const MAX_SERVICES: u32 = 1024;
/// Largest number of real servers in one service.
pub const MAX_REALS_PER_SERVICE: u32 = 256;
/// Largest number of real-server entries over all services.
pub const MAX_REALS: u32 = 16384;
/// Entries in the connection table (LRU: the least recently used flow is evicted).
pub const MAX_CONNS: u32 = 262_144;

pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// Scheduler ids stored in [`ServiceInfo::scheduler`].
pub const SCHED_RR: u32 = 0;

/// [`RealEntry::flags`]: the slot is used by a real server.
pub const REAL_IN_USE: u16 = 1;
/// [`RealEntry::flags`]: `mac` holds the real server's resolved MAC address.
pub const REAL_MAC_VALID: u16 = 2;

/// Key of the service map: one virtual service.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
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

/// Value of the service map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceInfo {
    /// Index of this service's row in the real-slot table and the scheduler cursors.
    pub id: u32,
    /// Number of valid entries in this service's row of the real-slot table.
    pub real_count: u32,
    pub scheduler: u32,
    pub flags: u32,
}

/// One real server, indexed by its real id in the reals array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RealEntry {
    /// Real server IPv4 address, wire order.
    pub ip: [u8; 4],
    /// The service this real belongs to (its [`ServiceInfo::id`]).
    pub service_id: u32,
    pub mac: [u8; 6],
    pub flags: u16,
    /// Interface the real server is reached through.
    pub ifindex: u32,
}

impl RealEntry {
    pub const fn in_use(&self) -> bool {
        self.flags & REAL_IN_USE != 0
    }
    pub const fn mac_valid(&self) -> bool {
        self.flags & REAL_MAC_VALID != 0
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

/// Value of the connection table: where the flow goes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnEntry {
    pub real_id: u32,
    /// The real's address when the flow was scheduled; a real id reused by another
    /// real server no longer matches, so the flow is rescheduled instead of misrouted.
    pub real_ip: [u8; 4],
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
    /// Service has no real server to send to.
    pub const DROP_NO_REAL: u32 = 7;
    /// Forwarded to a real server by direct routing (XDP_TX).
    pub const TX_DR: u32 = 8;
    /// Connection-table insert failed; the packet was still forwarded.
    pub const CONN_INSERT_FAILED: u32 = 9;
    pub const COUNT: u32 = 10;

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
        "conn_insert_failed",
    ];
}

/// Index into the real-slot table for slot `slot` of service `service_id`.
pub const fn slot_index(service_id: u32, slot: u32) -> u32 {
    service_id * MAX_REALS_PER_SERVICE + slot
}

/// Names of the maps in the eBPF object (and of their pins in bpffs).
pub mod map_names {
    pub const SERVICES: &str = "SERVICES";
    pub const REAL_SLOTS: &str = "REAL_SLOTS";
    pub const REALS: &str = "REALS";
    pub const CONNS: &str = "CONNS";
    pub const RR_CURSORS: &str = "RR_CURSORS";
    pub const REAL_STATS: &str = "REAL_STATS";
    pub const COUNTERS: &str = "COUNTERS";
    pub const ALL: [&str; 7] = [SERVICES, REAL_SLOTS, REALS, CONNS, RR_CURSORS, REAL_STATS, COUNTERS];
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
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for ConnEntry {}
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
        assert_eq!(size_of::<RealEntry>(), 20);
        assert_eq!(size_of::<ConnEntry>(), 8);
        assert_eq!(size_of::<ServiceInfo>(), 16);
        assert_eq!(size_of::<bench::BenchFrame>(), 24 + bench::FRAME_MAX);
    }

    #[test]
    fn service_key_port_is_wire_order() {
        let k = ServiceKey::new([10, 0, 0, 1], 80, PROTO_TCP);
        assert_eq!(k.port, [0, 80]);
        assert_eq!(k.port(), 80);
    }

    #[test]
    fn slot_index_rows_do_not_overlap() {
        assert_eq!(slot_index(0, MAX_REALS_PER_SERVICE - 1) + 1, slot_index(1, 0));
        assert!(slot_index(MAX_SERVICES - 1, MAX_REALS_PER_SERVICE - 1) < MAX_SERVICES * MAX_REALS_PER_SERVICE);
    }

    #[test]
    fn counter_names_cover_every_counter() {
        assert_eq!(counter::NAMES.len(), counter::COUNT as usize);
        assert_eq!(counter::NAMES[counter::TX_DR as usize], "tx_dr");
    }
}
