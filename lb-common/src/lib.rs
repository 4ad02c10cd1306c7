//! Map keys, values and constants shared by the XDP fast path (`lb-ebpf`) and the
//! controller (`xlb-core`), plus the pure logic both must agree on (TCP state
//! transitions, scheduler hashes). Everything here is `#[repr(C)]` plain old data.
//!
//! Addresses and ports are stored exactly as they appear on the wire (network byte
//! order in memory), so the fast path can build keys from packet bytes with no swaps.
//! Every address is 16 bytes: an IPv6 address, or an IPv4 address as IPv4-mapped IPv6
//! (`::ffff:a.b.c.d`, see [`addr`]), so one key type serves both families.
#![no_std]

pub mod addr;
pub mod addr_filter;
pub mod csum;
pub mod hash;
pub mod tcp;

/// Frontend keys (VIP:port:protocol entries), over all services.
pub const MAX_FRONTENDS: u32 = 65_536;
/// Virtual services (a plain VIP:port service, or a group sharing reals and persistence):
/// the default of `--max-services`, the size the service-id maps (SERVICE_INFO,
/// RR_CURSORS) get at load. Ids run from 0 to the size less one; the fast path never
/// compares an id with this constant (an id past a map's size misses its lookup).
pub const MAX_SERVICES: u32 = 16_384;

/// What the connection tables' clock adds to CLOCK_MONOTONIC, nanoseconds (2^46, about
/// 19.5 hours): idle stamps (`last_seen_ns`) are CLOCK_MONOTONIC + this, so a stamp
/// older than the host's uptime exists (a synced connection on a backup booted a
/// minute ago, an entry aged by a test) instead of being clipped at zero, for the same
/// reason the kernel starts jiffies at INITIAL_JIFFIES rather than at 0.
pub const CLOCK_BASE_NS: u64 = 1 << 46;

/// ICMP port unreachable answers (see `counter::TX_ICMP_UNREACHABLE`) each CPU may
/// send a second, and how many at once after a quiet spell: the kernel's defaults for
/// all its ICMP errors (net.ipv4.icmp_msgs_per_sec, icmp_msgs_burst).
pub const ICMP_UNREACHABLE_PER_SEC: u64 = 1000;
pub const ICMP_UNREACHABLE_BURST: u64 = 50;
/// Real servers in one service.
pub const MAX_REALS_PER_SERVICE: u32 = 1024;
/// Real-server ids over all services: the default of `--max-reals`, the size of the
/// real-id maps (REALS, REAL_LOAD, REAL_STATS), enough for 10,000 services × 10 reals
/// and 1,000 × 100.
pub const MAX_REALS: u32 = 131_072;
/// Entries in the connection table: the default of `--max-conns`, the size of CONNS,
/// NAT_REPLIES and the half-open tables (HALF_OPEN, HALF_OPEN_REPLIES). When CONNS is
/// full, new connections are dropped at their handshake's end and counted; established
/// ones are never evicted. Half-open entries (a SYN seen, the client's handshake not
/// completed) live in LRU tables, so a SYN flood evicts only other half-open entries.
pub const MAX_CONNS: u32 = 1 << 20;
/// The sizes the object declares (and tests get from a plain load): smaller than the
/// daemon's defaults, which it sets at load (`--max-conns` …), so a test that loads the
/// object does not preallocate a million entries.
pub const OBJECT_MAX_CONNS: u32 = 262_144;
pub const OBJECT_MAX_SERVICES: u32 = 4096;
pub const OBJECT_MAX_REALS: u32 = 65_536;
/// Persistence templates (client network → real).
pub const MAX_PERSIST: u32 = 65_536;
/// Fragmented datagrams tracked at once (an LRU map: the oldest are forgotten).
pub const MAX_FRAGS: u32 = 8192;
/// VIPs one TUN real server decapsulates for.
pub const MAX_DECAP_VIPS: u32 = 1024;
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
    /// Removed while it still had connections (IPVS's destination trash): its frontends
    /// stay only so that its connections' packets are dropped, not passed to the
    /// director's stack, until they expire or the service is added back under its id.
    /// New flows to it are passed, as to no service at all.
    pub const TRASHED: u32 = 256;
    /// A TCP packet other than a SYN of no known connection is scheduled (its entry
    /// made) instead of passed to the kernel: set by the controller on mh services, whose
    /// Maglev table every director with the same reals shares, so a flow ECMP moves
    /// between directors keeps its real (IPVS's sloppy_tcp with mh; Katran does the same).
    /// Such a connection starts in CLOSE as under IPVS's sloppy_tcp (tcp_states: sNO +
    /// ack → sCL), kept while its packets flow.
    pub const MID_FLOW_PICKUP: u32 = 512;
}

/// How frames reach a real server ([`RealEntry::forward`], [`ConnEntry::forward`]):
/// ipvsadm's -g, -m and -i.
pub mod forward {
    /// Direct routing: the frame is re-addressed to the real's MAC, IP and ports unchanged.
    pub const DR: u8 = 0;
    /// NAT (masquerading): destination rewritten to RIP:port, replies rewritten back.
    pub const NAT: u8 = 1;
    /// IPIP tunnel: the packet is encapsulated in an IPv4 header to the real.
    pub const TUN: u8 = 2;
}

/// [`RealEntry::flags`].
pub mod real_flags {
    /// The next hop's MAC is resolved: `mac` is valid (and so is the route).
    pub const MAC_VALID: u16 = 1;
    /// Removed from its service: no new flows; its flows' packets are dropped (and with
    /// `expire_nodest_conn` the flows forgotten), as IPVS does for a destination in its
    /// trash; added back, it takes its flows back. The id is freed once it has no
    /// connections.
    pub const REMOVED: u16 = 2;
    /// The route to the real server is known: `src_mac`, `ifindex`, `mtu` and `src_ip`
    /// are valid.
    pub const ROUTE_VALID: u16 = 4;
    /// Failed its health check: no new flows (established ones continue).
    pub const HEALTH_DOWN: u16 = 8;
    /// The service's sorry server: scheduled only while SORRY_ACTIVE.
    pub const SORRY: u16 = 16;
}

/// Frontend key: one VIP:port:protocol. Several may lead to one service.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    /// Virtual address (16 bytes, see [`addr`]).
    pub vip: [u8; 16],
    /// Virtual port, wire order (big endian).
    pub port: [u8; 2],
    pub proto: u8,
    pub _pad: u8,
}

impl ServiceKey {
    pub const fn new(vip: [u8; 16], port: u16, proto: u8) -> Self {
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
    /// Persistence netmask over the 16-byte client address (an IPv4 mask keeps the
    /// IPv4-mapped prefix: its first 12 bytes are 0xff).
    pub persist_mask: [u8; 16],
    /// Firewall mark of a group service (0: a plain VIP:port service).
    pub fwmark: u32,
    /// Pool slots listing every real id of the service (schedulers that scan).
    pub reals_off: u32,
    pub reals_len: u32,
    /// Pool slots of the scheduling table (rr/wrr sequence, sh/dh buckets, mh table).
    pub table_off: u32,
    pub table_len: u32,
}

/// One real server, keyed by its real id, with the next hop the controller resolved
/// for it from the kernel's routes and neighbours.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RealEntry {
    /// Real server address (16 bytes, see [`addr`]).
    pub ip: [u8; 16],
    /// The real's port, wire order: the service's port for DR and TUN, the mapped port
    /// for NAT (0: the port the client connected to, for a fwmark service).
    pub port: [u8; 2],
    /// [`forward`] method.
    pub forward: u8,
    pub _pad: u8,
    pub service_id: u32,
    pub flags: u16,
    /// Next hop's MAC: the real's own, or the router's when the real is routed.
    pub mac: [u8; 6],
    /// MAC of the director's interface towards the next hop.
    pub src_mac: [u8; 6],
    pub _pad2: [u8; 2],
    /// That interface.
    pub ifindex: u32,
    /// MTU of the path to the real (TUN checks the encapsulated size against it).
    pub mtu: u32,
    /// The director's address towards the real: the tunnel's outer source.
    pub src_ip: [u8; 16],
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
    pub const fn route_valid(&self) -> bool {
        self.flags & real_flags::ROUTE_VALID != 0
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
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// Value of the connection table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnEntry {
    /// The tables' clock ([`CLOCK_BASE_NS`] + CLOCK_MONOTONIC) at the last packet.
    pub last_seen_ns: u64,
    /// The real's address when the flow was scheduled; a real id since reused by another
    /// server no longer matches, so the flow is never sent to the wrong machine. At an
    /// 8-byte offset: the fast path copies and compares it a word at a time.
    pub real_ip: [u8; 16],
    pub real_id: u32,
    /// [`tcp`] state, or [`tcp::UDP`].
    pub state: u8,
    /// [`forward`] method the flow was scheduled with (a real's method may be edited).
    pub forward: u8,
    /// The real's port the flow goes to, wire order (NAT's translated port).
    pub real_port: [u8; 2],
    pub service_id: u32,
    /// The persistence template that placed this connection ([`PersistEntry::tag`]),
    /// 0 for none: the template's controlled-connection count is given back when the
    /// connection goes (IPVS's ip_vs_control_del).
    pub template: u32,
}

/// Offset of the 8-byte word the fast path compare-and-swaps to move a connection's
/// state (BPF's cmpxchg takes 64-bit words on every CPU version): `real_id`, then
/// `state`, `forward` and `real_port`. All but `state` are fixed once the entry is
/// made; `state` is byte [`CONN_STATE_IN_WORD`] of the word.
pub const CONN_STATE_WORD: usize = core::mem::offset_of!(ConnEntry, state) - 4;
pub const CONN_STATE_IN_WORD: usize = 4;
const _: () = {
    use core::mem::offset_of;
    assert!(CONN_STATE_WORD % 8 == 0);
    assert!(offset_of!(ConnEntry, real_ip) % 8 == 0);
    assert!(offset_of!(ConnEntry, real_id) + 4 == offset_of!(ConnEntry, state));
    assert!(offset_of!(ConnEntry, forward) == offset_of!(ConnEntry, state) + 1);
    assert!(offset_of!(ConnEntry, real_port) == offset_of!(ConnEntry, state) + 2);
};

impl ConnEntry {
    /// The key of the real server's replies in the NAT reply table: the real's
    /// address and port to the client's.
    pub const fn reply_key(&self, flow: &FlowKey) -> FlowKey {
        FlowKey {
            src: self.real_ip,
            dst: flow.src,
            sport: self.real_port,
            dport: flow.sport,
            proto: flow.proto,
            _pad: [0; 3],
        }
    }
}

/// Value of the NAT reply table (keyed by a real server's reply 5-tuple): the client's
/// flow, and the way back to the client as its first packet came in — the director
/// sends the translated replies out of that NIC to that MAC.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatReply {
    /// The client's flow (the connection table's key).
    pub flow: FlowKey,
    /// The MAC the client's frames come from (the client's, or its router's).
    pub client_mac: [u8; 6],
    /// The director's MAC they were sent to.
    pub local_mac: [u8; 6],
    /// The NIC they arrived on.
    pub ifindex: u32,
    /// Their 802.1Q/802.1ad tags, outermost first, as on the wire (TPID, TCI), and
    /// how many (0 to 2): the replies are tagged the same.
    pub vlan: [u8; 8],
    pub vlan_count: u8,
    pub _pad: [u8; 7],
}

/// Key of the persistence table: a client network within a service.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PersistKey {
    pub service_id: u32,
    /// Client address masked with the service's persistence netmask.
    pub client: [u8; 16],
}

/// A persistence template (IPVS's connection template): where a client network's new
/// connections go. It lives `persist_timeout` seconds after it last placed a connection,
/// and beyond that while connections it placed are alive (`n_control`, IPVS's
/// n_control); it is re-armed when the last of them goes (ip_vs_conn_expire).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PersistEntry {
    /// The tables' clock ([`CLOCK_BASE_NS`] + CLOCK_MONOTONIC) at the last connection it
    /// placed (or at its re-arming).
    pub last_seen_ns: u64,
    /// Live connections this template placed (atomic adds in the fast path).
    pub n_control: u64,
    pub real_id: u32,
    /// Non-zero, different for every template a key has had: a connection gives its
    /// count back only to the template that placed it, not to a later one.
    pub tag: u32,
    pub real_ip: [u8; 16],
}

/// Key of the fragment table: one fragmented IP datagram, as RFC 791 / RFC 8200 name
/// it (source, destination, protocol, identification; IPv4's 16-bit id is widened).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// IPv4 identification or IPv6 Fragment header identification, host order.
    pub id: u32,
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// Value of the fragment table: what the datagram's first fragment (the one with the
/// ports) was found to be, for the later fragments to follow (as Cilium's
/// `ipv4_frag_l4ports`, plus the decision when it went to a real server).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragEntry {
    /// The first fragment's ports, wire order.
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    /// The real's port and [`forward`] method the first fragment was sent with (a
    /// client's datagram to a service; unused for a NAT real's reply).
    pub real_port: [u8; 2],
    pub forward: u8,
    /// 1: a client's datagram sent to `real_id`; 0: a NAT real's reply.
    pub to_real: u8,
    pub real_id: u32,
    /// The real's address, so a real id since reused is never followed.
    pub real_ip: [u8; 16],
}

/// Global settings (one entry): timeouts as `ipvsadm --set` and IPVS's sysctls.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Idle timeout per TCP state, seconds, indexed by [`tcp`] state.
    pub tcp_timeouts: [u32; tcp::STATE_COUNT],
    pub udp_timeout: u32,
    /// IPVS's expire_nodest_conn: 0 keeps forwarding a removed real's flows to it,
    /// 1 drops their packets and forgets them (a real failed by its health check and
    /// out of the tables too), and schedules afresh a SYN on an entry whose real is
    /// removed, failed or at weight 0 (ip_vs_core.c `ip_vs_in_hook`).
    pub expire_nodest_conn: u32,
    /// IPVS's sloppy_tcp: 1 lets a TCP packet other than SYN start a connection.
    pub sloppy_tcp: u32,
    /// 1: the fast path answers ICMP echo (ping) to a VIP itself; 0: passes it to the
    /// kernel (which answers if it holds the VIP).
    pub icmp_echo: u32,
    /// IPVS's expire_quiescent_template: 1 drops a persistence template whose real has
    /// weight 0, so its clients are scheduled afresh; 0 (IPVS's default) keeps sending
    /// them to the quiescent real.
    pub expire_quiescent_template: u32,
    /// IPVS's conn_reuse_mode (ipvs-sysctl.txt, ip_vs_core.c `is_new_conn_expected`):
    /// a SYN on the tuple of a non-persistent connection in TIME_WAIT or CLOSE is
    /// scheduled afresh when bit 1 (value 1) is set; with bit 2 (value 2) too, also one
    /// in FIN_WAIT when the director sees only the client's side (DR, TUN). 0: the SYN
    /// follows the old entry. Default 1, as IPVS.
    pub conn_reuse_mode: u32,
    /// Non-zero while a master sync daemon runs (`xlb ipvsadm --start-daemon master`):
    /// the fast path writes a [`SyncEvent`] to SYNC_EVENTS when a connection enters
    /// the connection table and when a TCP connection's state changes. 0: nothing is
    /// written (the check sits behind those events, never on a packet that changes
    /// nothing).
    pub sync_master: u32,
}

impl Settings {
    /// The idle timeout of a connection in `state` ([`tcp`] state or [`tcp::UDP`]),
    /// seconds: `udp_timeout` for UDP, `tcp_timeouts[state]` for TCP, 0 for a state
    /// out of range (such an entry is expired at once). One rule for the fast path's
    /// expiry, the controller's sweep and listings, and the sync daemon's timeouts.
    #[inline(always)]
    pub fn timeout_secs(&self, state: u8) -> u32 {
        if state == tcp::UDP {
            self.udp_timeout
        } else if (state as usize) < tcp::STATE_COUNT {
            self.tcp_timeouts[state as usize]
        } else {
            0
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            tcp_timeouts: tcp::DEFAULT_TIMEOUTS,
            udp_timeout: 300,
            expire_nodest_conn: 0,
            sloppy_tcp: 0,
            icmp_echo: 0,
            expire_quiescent_template: 0,
            conn_reuse_mode: 1,
            sync_master: 0,
        }
    }
}

/// Per-real, per-CPU traffic counters.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RealStats {
    /// Client frames sent to this real.
    pub packets: u64,
    pub bytes: u64,
    /// New connections scheduled to this real.
    pub conns: u64,
    /// Reply frames from this real translated back to clients (NAT only: in DR and TUN
    /// replies bypass the director).
    pub out_packets: u64,
    pub out_bytes: u64,
}

impl RealStats {
    pub fn add(&mut self, other: &RealStats) {
        self.packets += other.packets;
        self.bytes += other.bytes;
        self.conns += other.conns;
        self.out_packets += other.out_packets;
        self.out_bytes += other.out_bytes;
    }
}

/// Indexes of the per-CPU counters. The first [`counter::VERDICTS`] say why a frame was
/// passed, dropped or sent: every frame counts in exactly one of them. The rest count
/// events on the way.
pub mod counter {
    /// Not IP (ARP, LLDP, …): passed.
    pub const PASS_NOT_IP: u32 = 0;
    /// IP but neither TCP, UDP nor ICMP/ICMPv6.
    pub const PASS_NOT_TCP_UDP: u32 = 1;
    /// TCP/UDP whose destination is no service (and not a NAT real's reply).
    pub const PASS_NOT_VIP: u32 = 2;
    /// Frame too short for the headers it announces.
    pub const PASS_TRUNCATED: u32 = 3;
    /// Malformed IP or transport header (IHL < 5, a version not matching the
    /// ethertype, lengths that contradict each other, a TCP data offset under 5 or past
    /// the packet).
    pub const PASS_BAD_HEADER: u32 = 4;
    /// A fragment the fast path cannot place: a later fragment (no ports) whose
    /// datagram's first fragment was not seen first (the fragment table has no entry),
    /// or a fragment of ICMP. Passed to the kernel. First fragments (which carry the
    /// ports) are balanced as whole packets are, and record their decision for the
    /// later ones, which follow it.
    pub const PASS_FRAGMENT: u32 = 5;
    /// The next hop's MAC is not resolved yet. DR passes the frame unchanged (the
    /// controller resolves the real); NAT and TUN pass the translated or encapsulated
    /// frame, which the kernel forwards, resolving the neighbour on the way.
    pub const PASS_NEIGH_UNRESOLVED: u32 = 6;
    /// The scheduler found no available real (none, all quiescent or overloaded), and
    /// the frame was not answered ([`TX_ICMP_UNREACHABLE`] says when it is): dropped.
    pub const DROP_NO_REAL: u32 = 7;
    /// Sent to a real server by direct routing (XDP_TX, or XDP_REDIRECT to another NIC:
    /// likewise for every tx_ counter).
    pub const TX_DR: u32 = 8;
    /// The connection table is full: a new connection was dropped.
    pub const DROP_CONN_TABLE_FULL: u32 = 9;
    /// A TCP packet other than SYN with no connection: left to the kernel (which resets it).
    pub const PASS_NO_CONN: u32 = 10;
    /// A TCP packet other than a SYN of a flow whose real was removed (or failed its
    /// health check and left the tables), with expire_nodest_conn set: the flow is
    /// forgotten. (A SYN there, or a UDP datagram, is scheduled afresh instead.)
    pub const DROP_NODEST: u32 = 11;
    /// A client frame translated to a NAT real server and sent.
    pub const TX_NAT: u32 = 12;
    /// A NAT real server's reply translated back (source VIP:port) and sent to the client.
    pub const TX_NAT_REPLY: u32 = 13;
    /// Encapsulated (IPIP, or IPv6-in-IPv6) and sent to a TUN real server.
    pub const TX_TUN: u32 = 14;
    /// Too big for the path to a TUN real once encapsulated: answered with ICMP
    /// fragmentation-needed (IPv4 with DF) or ICMPv6 packet-too-big back to the client,
    /// with the MTU left after encapsulation.
    pub const TX_ICMP_TOO_BIG: u32 = 15;
    /// Too big for the path to a TUN real once encapsulated, IPv4 without DF (fragments
    /// among them): dropped (IPVS fragments the outer packet; XDP sends at most one frame
    /// for one). Also a later IPv6 fragment whose first fit but which does not (IPVS
    /// answers only a first fragment with packet-too-big).
    pub const DROP_TOO_BIG: u32 = 16;
    /// No route to a TUN real yet: passed unchanged, while the controller looks for one.
    pub const PASS_NO_ROUTE: u32 = 17;
    /// A new NAT connection whose reply tuple (RIP:port to client:port) another live
    /// connection holds (the same client port to two VIPs sharing a NAT real): dropped.
    pub const DROP_NAT_CLASH: u32 = 18;
    /// The kernel refused to resize the frame (to encapsulate it, retag it or turn it
    /// into an ICMP error): passed as it is.
    pub const PASS_ERROR: u32 = 19;
    /// More VLAN tags than the two (QinQ) the fast path reads: passed.
    pub const PASS_VLAN_STACK: u32 = 20;
    /// More IPv6 extension headers than the fast path skips: passed.
    pub const PASS_IPV6_EXTENSIONS: u32 = 21;
    /// An ICMP/ICMPv6 error (destination unreachable, fragmentation-needed or
    /// packet-too-big, time exceeded) about a balanced flow: sent to that flow's real
    /// server (translated for NAT), or for a NAT real's error about a client's packet,
    /// translated and sent to the client.
    pub const TX_ICMP_ERROR: u32 = 22;
    /// An ICMP error about no balanced flow: passed.
    pub const PASS_ICMP_NO_FLOW: u32 = 23;
    /// An ICMP echo request to a VIP answered by the fast path (settings.icmp_echo).
    pub const TX_ICMP_ECHO_REPLY: u32 = 24;
    /// Any other ICMP/ICMPv6 (echo with icmp_echo off, neighbour discovery, …): passed.
    pub const PASS_ICMP: u32 = 25;
    /// A flow's first packet lost the race to create its entry to another CPU, and
    /// that entry was being removed when it looked again: dropped (the client
    /// retransmits).
    pub const DROP_CONN_RACE: u32 = 26;
    /// A frame for a VIP (or a NAT real's reply, or an ICMP message about a balanced
    /// flow) addressed to another host's unicast MAC: passed untouched, and the kernel
    /// drops it as PACKET_OTHERHOST (ip_rcv_core), as it does before IPVS sees it. A
    /// switch floods such frames to every port (unknown unicast: the owner's MAC aged
    /// out, or its port went down); without this check every director reached would
    /// balance them. Checked against the MACs of the NIC the frame came in by (see
    /// [`super::IngressMac`]), only for NICs the controller registered.
    pub const PASS_OTHER_HOST: u32 = 27;
    /// The scheduler found no available real for a new flow: as IPVS (ip_vs_leave), the
    /// frame is answered with ICMP port unreachable (ICMPv6's for IPv6, for TCP too), so
    /// the client fails at once instead of waiting for its timeout. At most
    /// [`super::ICMP_UNREACHABLE_PER_SEC`] a second on each CPU (burst
    /// [`super::ICMP_UNREACHABLE_BURST`]), as the kernel limits the ICMP errors it sends
    /// (net.ipv4.icmp_msgs_per_sec); never for an IPv4 header with options or a
    /// multicast, broadcast or unspecified source (RFC 1122 3.2.2): those count in
    /// [`DROP_NO_REAL`].
    pub const TX_ICMP_UNREACHABLE: u32 = 28;
    /// Verdict counters: indexes below this.
    pub const VERDICTS: u32 = 29;

    /// Event: the persistence table is full: a connection was scheduled without a template.
    pub const PERSIST_TABLE_FULL: u32 = 29;
    /// Event: a TCP SYN opened a half-open entry (in the LRU half-open table, not yet
    /// in the connection table or the real's counts). A SYN flood shows here.
    pub const HALF_OPEN_CREATED: u32 = 30;
    /// Event: a client completed its handshake (its first packet after the SYN): the
    /// half-open entry moved to the connection table, keeping its real.
    pub const HALF_OPEN_PROMOTED: u32 = 31;
    /// Event: a retransmitted SYN followed its half-open entry to the same real.
    pub const HALF_OPEN_SYN_AGAIN: u32 = 32;
    /// Event: a half-open entry found idle past its state's timeout or with its real
    /// gone: forgotten, the packet treated as a new flow's. (Entries the LRU evicts
    /// under a flood are not seen again: a late ACK of one counts as pass_no_conn.)
    pub const HALF_OPEN_STALE: u32 = 33;
    pub const COUNT: u32 = 34;

    /// Names in index order, for listings and metrics.
    pub const NAMES: [&str; COUNT as usize] = [
        "pass_not_ip",
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
        "tx_nat",
        "tx_nat_reply",
        "tx_tun",
        "tx_icmp_too_big",
        "drop_too_big",
        "pass_no_route",
        "drop_nat_clash",
        "pass_error",
        "pass_vlan_stack",
        "pass_ipv6_extensions",
        "tx_icmp_error",
        "pass_icmp_no_flow",
        "tx_icmp_echo_reply",
        "pass_icmp",
        "drop_conn_race",
        "pass_other_host",
        "tx_icmp_unreachable",
        "persist_table_full",
        "half_open_created",
        "half_open_promoted",
        "half_open_syn_again",
        "half_open_stale",
    ];
}

/// Indexes of the tunnel decapsulator's per-CPU counters (a real server's `xlb_decap`).
pub mod decap_counter {
    /// IPIP or IPv6-in-IPv6 for one of this real server's VIPs: decapsulated and passed
    /// to the kernel.
    pub const DECAPSULATED: u32 = 0;
    /// A tunnelled packet whose inner destination is no VIP set up here: passed
    /// untouched (the kernel drops it, having no tunnel).
    pub const PASS_NOT_FOR_VIP: u32 = 1;
    pub const COUNT: u32 = 2;
    pub const NAMES: [&str; COUNT as usize] = ["decapsulated", "pass_not_for_vip"];
}

/// Slots of the INGRESS_MACS array: a NIC's slot is `ifindex & (INGRESS_MAC_SLOTS - 1)`.
pub const INGRESS_MAC_SLOTS: u32 = 256;
/// Entries of EXTRA_MACS: further unicast MACs of the NICs the fast path runs on.
pub const MAX_EXTRA_MACS: u32 = 1024;

/// A unicast MAC the kernel accepts on NIC `ifindex` (its frames are PACKET_HOST there,
/// not PACKET_OTHERHOST). The value of the INGRESS_MACS array (slot `ifindex & 255`:
/// the NIC's own address, IFLA_ADDRESS) and the key of the EXTRA_MACS hash (the MACs
/// of the macvlan/macvtap links on that NIC, such as keepalived's `use_vmac` VRRP MAC
/// 00:00:5e:00:01:VRID, RFC 5798 §7.3, whose frames arrive on the lower NIC; and the
/// own MAC of a NIC whose slot another NIC holds: its frames are checked against
/// EXTRA_MACS only). A slot with `ifindex` 0 registers nothing: the fast path then
/// checks no MAC (an object loaded without the controller). The controller fills both
/// (`xlb_core::l2`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IngressMac {
    pub ifindex: u32,
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
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
    pub const NAT_REPLIES: &str = "NAT_REPLIES";
    pub const VIPS: &str = "VIPS";
    /// The address filter (see [`crate::addr_filter`]).
    pub const ADDR_FILTER: &str = "ADDR_FILTER";
    /// `xlb trace`'s switch and filter ([`crate::TraceConfig`], one entry) and its
    /// event ring buffer ([`crate::TraceEvent`] records).
    pub const TRACE: &str = "TRACE";
    pub const TRACE_EVENTS: &str = "TRACE_EVENTS";
    /// The connection synchronisation events ([`crate::SyncEvent`] records, read by the
    /// master sync daemon).
    pub const SYNC_EVENTS: &str = "SYNC_EVENTS";
    /// Half-open TCP connections (LRU) and, for NAT, their reply entries (LRU).
    pub const HALF_OPEN: &str = "HALF_OPEN";
    pub const HALF_OPEN_REPLIES: &str = "HALF_OPEN_REPLIES";
    /// The fragment table: not pinned (a restart forgets datagrams in flight).
    pub const FRAGS: &str = "FRAGS";
    /// The MACs of the NICs the balancer runs on ([`crate::IngressMac`]): not pinned
    /// (every daemon start fills its object's own from the kernel's links).
    pub const INGRESS_MACS: &str = "INGRESS_MACS";
    pub const EXTRA_MACS: &str = "EXTRA_MACS";
    /// The director's maps (pinned by `xlb run`).
    pub const ALL: [&str; 19] = [
        SERVICES, SERVICE_INFO, POOL, REALS, REAL_LOAD, CONNS, PERSIST, SETTINGS, RR_CURSORS, REAL_STATS, COUNTERS,
        NAT_REPLIES, VIPS, TRACE, TRACE_EVENTS, HALF_OPEN, HALF_OPEN_REPLIES, SYNC_EVENTS, ADDR_FILTER,
    ];
    /// Maps sized by `--max-conns`.
    pub const BY_CONNS: [&str; 4] = [CONNS, NAT_REPLIES, HALF_OPEN, HALF_OPEN_REPLIES];
    /// Maps indexed by service id, sized by `--max-services`.
    pub const BY_SERVICES: [&str; 2] = [SERVICE_INFO, RR_CURSORS];
    /// Maps indexed by real id, sized by `--max-reals`.
    pub const BY_REALS: [&str; 3] = [REALS, REAL_LOAD, REAL_STATS];
    /// A TUN real server's decapsulator maps (pinned by `xlb realserver setup --mode tun`).
    pub const DECAP_VIPS: &str = "DECAP_VIPS";
    pub const DECAP_STATS: &str = "DECAP_STATS";
}

/// `xlb trace`: per-packet decision events. The fast path reads [`TraceConfig`] once per
/// frame, where its verdict is counted; only when `enabled` and the frame matches the
/// filters does it write a [`TraceEvent`] to the ring buffer. `xlb trace` switches it on
/// and off through the pinned map.
pub mod trace {
    /// [`super::TraceConfig::filter`]: match the client address.
    pub const FILTER_CLIENT: u32 = 1;
    /// [`super::TraceConfig::filter`]: match the service (VIP, port, protocol).
    pub const FILTER_SERVICE: u32 = 2;
    /// [`super::TraceEvent::flags`]: `flow` holds the frame's 5-tuple (not set when the
    /// headers could not be parsed: the event then carries only the verdict).
    pub const FLOW: u8 = 1;
    /// A connection entry was found: `state`, `real_*` and `forward` come from it.
    pub const CONN: u8 = 2;
    /// A NAT real server's reply: `flow` is the client's flow it belongs to.
    pub const REPLY: u8 = 4;
    /// The frame opened a new connection (scheduled now).
    pub const NEW_CONN: u8 = 8;
    /// Size of the event ring buffer, bytes (a power of two, a multiple of the page size):
    /// about 3000 events between two reads.
    pub const RING_BYTES: u32 = 1 << 18;
}

/// `xlb trace`'s switch and filter (the one entry of the TRACE map).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceConfig {
    /// Non-zero: events are written.
    pub enabled: u32,
    /// [`trace`]`::FILTER_*` bits.
    pub filter: u32,
    /// The client address (16-byte form) to match.
    pub client: [u8; 16],
    /// The service to match: VIP (16-byte form), port (wire order), protocol.
    pub vip: [u8; 16],
    pub port: [u8; 2],
    pub proto: u8,
    pub _pad: u8,
}

/// One frame's decision, as `xlb trace` receives it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceEvent {
    /// CLOCK_MONOTONIC (bpf_ktime_get_ns) when the verdict was reached.
    pub time_ns: u64,
    /// The client's flow (for a NAT reply, the flow it answers): client, VIP, ports.
    pub flow: FlowKey,
    /// The real server of the connection (when [`trace::CONN`]).
    pub real_ip: [u8; 16],
    pub real_port: [u8; 2],
    /// The verdict's [`counter`] index (`counter::NAMES`).
    pub reason: u8,
    /// [`tcp`] state after this frame (when [`trace::CONN`]).
    pub state: u8,
    /// [`trace`] flags.
    pub flags: u8,
    /// [`forward`] method of the connection.
    pub forward: u8,
    pub _pad: [u8; 2],
    pub real_id: u32,
    /// The CPU that processed the frame.
    pub cpu: u32,
}

/// Connection synchronisation (IPVS's sync daemon, `xlb ipvsadm --start-daemon`).
pub mod sync {
    /// Size of the SYNC_EVENTS ring buffer, bytes (a power of two, a multiple of the
    /// page size): about 13,000 events between two reads.
    pub const RING_BYTES: u32 = 1 << 20;
    /// `xlb_sync_install`'s answers (the XDP verdict of its test run): the entry was
    /// created.
    pub const INSTALL_CREATED: u32 = 2; // XDP_PASS
    /// The flow's entry was there with the same real: its state and idle stamp were
    /// updated.
    pub const INSTALL_UPDATED: u32 = 3; // XDP_TX
    /// Not installed: the connection table is full, or (NAT) another connection holds
    /// the reply tuple.
    pub const INSTALL_REFUSED: u32 = 1; // XDP_DROP
}

/// One event of the connection synchronisation: a connection entered the connection
/// table (a TCP handshake completed, a UDP or sloppy-TCP flow was scheduled) or a TCP
/// connection's state moved. The address family is the flow's (IPv4-mapped or not).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncEvent {
    /// The client's flow: client address and port, VIP and port, protocol.
    pub flow: FlowKey,
    /// The real server's address (16-byte form).
    pub real_ip: [u8; 16],
    pub service_id: u32,
    pub real_id: u32,
    /// The real's port, wire order.
    pub real_port: [u8; 2],
    /// [`forward`] method.
    pub forward: u8,
    /// [`tcp`] state after the event, or [`tcp::UDP`].
    pub state: u8,
    pub _pad: u32,
}

/// What `xlb_sync_install` is given (its test run's "frame"): a backup director's
/// connection entry for `flow`, made from a sync message. `entry.last_seen_ns` is set
/// so that the entry expires when the master's timeout says.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncInstall {
    pub flow: FlowKey,
    pub entry: ConnEntry,
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
    /// The program array the wrapper and the restore-only program tail-call.
    pub const BALANCER_SLOT_MAP: &str = "BENCH_BALANCER";
    /// Its slot the wrapper tail-calls: the balancer timed (xlb's or Katran's).
    pub const BALANCER_SLOT: u32 = 0;
    /// Its slot the restore-only program tail-calls: a bare XDP_DROP, so the one tail
    /// call is in the subtracted program too and cancels out.
    pub const RESTORE_SLOT: u32 = 1;
    /// A bare XDP_DROP program (the cheapest XDP program).
    pub const DROP_PROGRAM: &str = "xlb_bench_drop";
    /// A bare "swap MACs, XDP_TX" program (the cheapest forwarder).
    pub const SWAP_TX_PROGRAM: &str = "xlb_bench_swap_tx";
    /// Restores the frame only: the wrapper's own cost, subtracted from it.
    pub const RESTORE_PROGRAM: &str = "xlb_bench_restore";
    /// Restores the frame, then runs the balancer on it.
    pub const BALANCE_PROGRAM: &str = "xlb_bench_balance";

    /// Kernel primitives, timed under the same wrapper as the balancer to say what a
    /// path's parts cost: the "frame" is the key (its first bytes). One lookup in a hash
    /// of `FlowKey` → `ConnEntry` (CONNS's layout): XDP_DROP on a hit, XDP_PASS on a miss.
    pub const FLOW_LOOKUP_PROGRAM: &str = "xlb_bench_flow_lookup";
    /// One lookup in a hash of a 16-byte key (an IPv4 flow's compact key) → `ConnEntry`.
    pub const COMPACT_LOOKUP_PROGRAM: &str = "xlb_bench_compact_lookup";
    /// One insert of the frame's `FlowKey` into an LRU hash (HALF_OPEN's layout):
    /// XDP_DROP when inserted.
    pub const LRU_INSERT_PROGRAM: &str = "xlb_bench_lru_insert";
    /// Their maps: one entry in the object (the product never fills them), sized by
    /// the bench at load as CONNS is.
    pub const FLOWS_MAP: &str = "BENCH_FLOWS";
    pub const COMPACT_MAP: &str = "BENCH_COMPACT";
    pub const LRU_MAP: &str = "BENCH_LRU";
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
    unsafe impl aya::Pod for NatReply {}
    unsafe impl aya::Pod for PersistKey {}
    unsafe impl aya::Pod for PersistEntry {}
    unsafe impl aya::Pod for Settings {}
    unsafe impl aya::Pod for FragKey {}
    unsafe impl aya::Pod for FragEntry {}
    unsafe impl aya::Pod for RealStats {}
    unsafe impl aya::Pod for TraceConfig {}
    unsafe impl aya::Pod for TraceEvent {}
    unsafe impl aya::Pod for SyncEvent {}
    unsafe impl aya::Pod for SyncInstall {}
    unsafe impl aya::Pod for IngressMac {}
    unsafe impl aya::Pod for bench::BenchFrame {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        // The kernel compares keys bytewise: hidden padding would make equal keys differ.
        assert_eq!(size_of::<ServiceKey>(), 20);
        assert_eq!(size_of::<FlowKey>(), 40);
        assert_eq!(size_of::<PersistKey>(), 20);
        assert_eq!(size_of::<PersistEntry>(), 40);
        assert_eq!(size_of::<RealEntry>(), 76);
        assert_eq!(size_of::<ConnEntry>(), 40);
        assert_eq!(size_of::<NatReply>(), 72);
        assert_eq!(size_of::<ServiceInfo>(), 52);
        assert_eq!(size_of::<Settings>(), 4 * (tcp::STATE_COUNT + 7));
        assert_eq!(size_of::<SyncEvent>(), 72);
        assert_eq!(size_of::<SyncInstall>(), 80);
        assert_eq!(size_of::<FragKey>(), 40);
        assert_eq!(size_of::<FragEntry>(), 28);
        assert_eq!(size_of::<IngressMac>(), 12);
        assert_eq!(size_of::<bench::BenchFrame>(), 24 + bench::FRAME_MAX);
    }

    #[test]
    fn service_key_port_is_wire_order() {
        let k = ServiceKey::new(addr::from_v4([10, 0, 0, 1]), 80, PROTO_TCP);
        assert_eq!(k.port, [0, 80]);
        assert_eq!(k.port(), 80);
    }

    #[test]
    fn counter_names_cover_every_counter() {
        assert_eq!(counter::NAMES.len(), counter::COUNT as usize);
        assert_eq!(counter::NAMES[counter::TX_DR as usize], "tx_dr");
        assert_eq!(counter::NAMES[counter::PERSIST_TABLE_FULL as usize], "persist_table_full");
        assert_eq!(counter::NAMES[counter::DROP_NAT_CLASH as usize], "drop_nat_clash");
        assert_eq!(counter::NAMES[counter::PASS_ICMP as usize], "pass_icmp");
        assert_eq!(counter::NAMES[counter::PASS_OTHER_HOST as usize], "pass_other_host");
        assert_eq!(counter::VERDICTS, counter::PERSIST_TABLE_FULL, "events follow the verdicts");
        assert_eq!(decap_counter::NAMES.len(), decap_counter::COUNT as usize);
    }

    #[test]
    fn reply_key_swaps_the_client_for_the_real() {
        let (client, vip, real) = (addr::from_v4([1, 2, 3, 4]), addr::from_v4([10, 0, 0, 100]), addr::from_v4([10, 0, 0, 11]));
        let flow = FlowKey { src: client, dst: vip, sport: [0x9c, 0x40], dport: [0, 80], proto: PROTO_TCP, _pad: [0; 3] };
        let c = ConnEntry { real_ip: real, real_port: [0x1f, 0x90], ..Default::default() };
        let r = c.reply_key(&flow);
        assert_eq!((r.src, r.sport, r.dst, r.dport, r.proto), (real, [0x1f, 0x90], client, [0x9c, 0x40], PROTO_TCP));
    }

    #[test]
    fn overhead_weighs_active_connections_256_times() {
        assert_eq!(RealLoad { active: 2, inactive: 3 }.overhead(), 515);
    }
}
