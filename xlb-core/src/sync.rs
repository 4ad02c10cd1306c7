//! Connection synchronisation: xlb's IPVS sync daemon (`ipvsadm --start-daemon`,
//! net/netfilter/ipvs/ip_vs_sync.c), so that the connections of any scheduler survive
//! a director failover.
//!
//! The master reads the fast path's [`SyncEvent`]s (a connection entered the table, a
//! TCP connection's state moved: `lb-ebpf/src/sync.rs`) from the SYNC_EVENTS ring
//! buffer, names the service and real by address (ids differ between directors),
//! batches them into messages of IPVS's sync protocol version 1 and multicasts them
//! (224.0.0.81:8848 by default, TTL 1) out of the sync interface. A message goes when
//! it is full (`--sync-maxlen`, by default the interface's MTU less the IP and UDP
//! headers) or [`FLUSH_DELAY`] after its first entry, at most [`MAX_MESSAGES_PER_SEC`]
//! a second (beyond that messages are dropped and counted).
//!
//! The backup joins the group on its interface, checks each message's syncid (0 takes
//! any, as IPVS), drops malformed messages (counted), looks up the service by the
//! connection's VIP, port and protocol and the real by address and port in its own
//! tables, and installs the connection in the connection table with that real, the
//! forwarding method, the state and the timeout the master sent (`xlb_sync_install`,
//! run through BPF_PROG_TEST_RUN, so the reals' shared counts stay exact), updating an
//! entry it has. DR and TUN connections are installed; NAT ones are refused (counted):
//! a NAT reply needs the client's L2 path (NIC, MAC, VLAN tags), which only the
//! client's own packets show, so after a failover a NAT connection is not kept.
//! Persistence templates (IPVS sends them with IP_VS_CONN_F_TEMPLATE) are neither sent
//! nor installed: a persistent service's established connections are kept, and a
//! client's new connections after a failover are scheduled afresh.
//!
//! The wire format is IPVS's version 1, byte for byte (`struct ip_vs_sync_mesg`,
//! `struct ip_vs_sync_v4`, `struct ip_vs_sync_v6`, network order): an xlb director
//! and an IPVS one speak the same protocol. xlb's TCP states are numbered as IPVS's
//! (`IP_VS_TCP_S_*`), so a state crosses unchanged; a UDP connection is IPVS's
//! `IP_VS_UDP_S_NORMAL` (0).
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use lb_common::{ConnEntry, FlowKey, PROTO_TCP, PROTO_UDP, Settings, SyncEvent, SyncInstall, addr, forward, map_names, tcp};
use serde::{Deserialize, Serialize};
use tokio::{io::unix::AsyncFd, sync::mpsc, task::JoinHandle};

/// IPVS's default multicast group (IP_VS_SYNC_GROUP) and port (IP_VS_SYNC_PORT).
pub const DEFAULT_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 81);
pub const DEFAULT_PORT: u16 = 8848;
/// IPVS's default multicast TTL.
pub const DEFAULT_TTL: u8 = 1;
/// SYNC_PROTO_VER.
pub const VERSION: u8 = 1;
/// `struct ip_vs_sync_mesg`: reserved (0), syncid, size (be16), nr_conns, version, spare.
pub const HEADER_LEN: usize = 8;
/// `struct ip_vs_sync_v4` and `struct ip_vs_sync_v6`.
pub const V4_LEN: usize = 36;
pub const V6_LEN: usize = 72;
/// STYPE_F_INET6: the entry's addresses are IPv6.
const TYPE_INET6: u8 = 1;
/// The version in the top 4 bits of `ver_size` (SVER_SHIFT), the size below (SVER_MASK).
const SVER_SHIFT: u16 = 12;
const SVER_MASK: u16 = 0x0fff;
/// Optional parameters (IPVS_OPT_*): sequence data, persistence engine data and name;
/// IPVS_OPT_F_PARAM marks one a receiver may skip.
pub const OPT_SEQ_DATA: u8 = 1;
pub const OPT_PE_DATA: u8 = 2;
pub const OPT_PE_NAME: u8 = 3;
pub const OPT_F_PARAM: u8 = 1 << 6;
/// `struct ip_vs_sync_conn_options`: two `struct ip_vs_seq` of three be32.
const SEQ_DATA_LEN: usize = 24;
/// IP_VS_PEDATA_MAXLEN, IP_VS_PENAME_MAXLEN.
const PE_DATA_MAX: usize = 255;
const PE_NAME_MAX: usize = 16;
/// IP and UDP headers, taken off the MTU for the default `--sync-maxlen`.
const V4_HEADERS: u32 = 20 + 8;
const V6_HEADERS: u32 = 40 + 8;

/// How often, by default, the master sends again the connections that had packets
/// since its last round (`xlb daemon --sync-refresh-period`; IPVS resends a connection
/// every `sync_period` packets, or every `sync_refresh_period`): the backup's entry of a
/// long-lived connection is renewed before its timeout, though no state changes.
pub const REFRESH_PERIOD: Duration = Duration::from_secs(60);

/// How long a message waits for more entries after its first (IPVS waits up to 2 s;
/// a failover soon after a connection opens should find it synced).
pub const FLUSH_DELAY: Duration = Duration::from_millis(30);
/// The master sends at most this many messages a second; the messages beyond are
/// dropped and counted (`sync_refused_rate`). 40 IPv4 connections fit a message of
/// the default size.
pub const MAX_MESSAGES_PER_SEC: u32 = 5000;

/// `IP_VS_CONN_F_*` (include/uapi/linux/ip_vs.h).
pub mod conn_flags {
    pub const FWD_MASK: u32 = 0x0007;
    pub const MASQ: u32 = 0x0000;
    pub const LOCALNODE: u32 = 0x0001;
    pub const TUNNEL: u32 = 0x0002;
    pub const DROUTE: u32 = 0x0003;
    pub const BYPASS: u32 = 0x0004;
    pub const SYNC: u32 = 0x0020;
    pub const HASHED: u32 = 0x0040;
    pub const NOOUTPUT: u32 = 0x0080;
    pub const INACTIVE: u32 = 0x0100;
    pub const SEQ_MASK: u32 = 0x0600;
    pub const NO_CPORT: u32 = 0x0800;
    pub const TEMPLATE: u32 = 0x1000;
    pub const ONE_PACKET: u32 = 0x2000;
}

/// One connection of a sync message (`union ip_vs_sync_conn`), in host order. The
/// three addresses are of one family (the entry's type).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncConn {
    pub protocol: u8,
    /// `IP_VS_CONN_F_*` bits.
    pub flags: u32,
    /// IPVS's state number for the protocol (`IP_VS_TCP_S_*`, UDP's 0).
    pub state: u16,
    pub cport: u16,
    pub vport: u16,
    pub dport: u16,
    pub fwmark: u32,
    /// The connection's timeout in its state, seconds.
    pub timeout: u32,
    pub caddr: IpAddr,
    pub vaddr: IpAddr,
    pub daddr: IpAddr,
    /// Optional parameters as received: (type, data).
    pub options: Vec<(u8, Vec<u8>)>,
}

impl SyncConn {
    fn v6(&self) -> bool {
        self.caddr.is_ipv6()
    }

    /// The entry's size on the wire (without the padding before the next).
    pub fn wire_len(&self) -> usize {
        let base = if self.v6() { V6_LEN } else { V4_LEN };
        base + self.options.iter().map(|(_, d)| 2 + d.len()).sum::<usize>()
    }
}

/// A sync message: its syncid and connections.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncMessage {
    pub syncid: u8,
    pub conns: Vec<SyncConn>,
}

/// Why a received message is dropped whole (`ip_vs_process_message`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message header too short ({0} bytes)")]
    TooShort(usize),
    #[error("bogus message size: the header says {said}, {got} bytes came")]
    SizeMismatch { said: usize, got: usize },
    #[error("not a version 1 message (version {version}, reserved {reserved}, spare {spare}): xlb speaks IPVS's sync protocol version 1 only")]
    NotVersion1 { version: u8, reserved: u8, spare: u16 },
    #[error("connection {0} is cut short by the message's end")]
    Truncated(usize),
    #[error("connection {index} has entry version {version} (only 0 is known)")]
    EntryVersion { index: usize, version: u16 },
    #[error("connection {index} has type {kind:#x}")]
    EntryType { index: usize, kind: u8 },
    #[error("connection {index}: malformed optional parameter ({why})")]
    Option { index: usize, why: &'static str },
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn ip_at(b: &[u8], at: usize, v6: bool) -> IpAddr {
    if v6 {
        let mut a = [0u8; 16];
        a.copy_from_slice(&b[at..at + 16]);
        IpAddr::V6(Ipv6Addr::from(a))
    } else {
        IpAddr::V4(Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3]))
    }
}

/// Decodes a version 1 message as IPVS's backup does (`ip_vs_process_message`,
/// `ip_vs_proc_sync_conn`): the header's size must be the datagram's, entries are
/// 32-bit aligned, each entry's size (the low 12 bits of `ver_size`) covers its
/// optional parameters, whose type and length are checked. Version 0 messages
/// (IPVS's `sync_version=0`) are refused.
pub fn decode(buf: &[u8]) -> Result<SyncMessage, DecodeError> {
    if buf.len() < HEADER_LEN {
        return Err(DecodeError::TooShort(buf.len()));
    }
    let size = be16(buf, 2) as usize;
    if size != buf.len() {
        return Err(DecodeError::SizeMismatch { said: size, got: buf.len() });
    }
    let (reserved, syncid, nr_conns, version, spare) = (buf[0], buf[1], buf[4], buf[5], be16(buf, 6));
    if version != VERSION || reserved != 0 || spare != 0 {
        return Err(DecodeError::NotVersion1 { version, reserved, spare });
    }
    let mut conns = Vec::with_capacity(nr_conns as usize);
    let mut at = HEADER_LEN;
    for index in 0..nr_conns as usize {
        if at + V4_LEN > buf.len() {
            return Err(DecodeError::Truncated(index));
        }
        let ver_size = be16(buf, at + 2);
        let entry_len = (ver_size & SVER_MASK) as usize;
        let end = at + entry_len;
        if end > buf.len() {
            return Err(DecodeError::Truncated(index));
        }
        if ver_size >> SVER_SHIFT != 0 {
            return Err(DecodeError::EntryVersion { index, version: ver_size >> SVER_SHIFT });
        }
        let kind = buf[at];
        let v6 = match kind {
            0 => false,
            TYPE_INET6 => true,
            _ => return Err(DecodeError::EntryType { index, kind }),
        };
        let base = if v6 { V6_LEN } else { V4_LEN };
        if at + base > end {
            return Err(DecodeError::Truncated(index));
        }
        let e = &buf[..end];
        let alen = if v6 { 16 } else { 4 };
        let addrs = at + 24;
        let mut conn = SyncConn {
            protocol: e[at + 1],
            flags: be32(e, at + 4),
            state: be16(e, at + 8),
            cport: be16(e, at + 10),
            vport: be16(e, at + 12),
            dport: be16(e, at + 14),
            fwmark: be32(e, at + 16),
            timeout: be32(e, at + 20),
            caddr: ip_at(e, addrs, v6),
            vaddr: ip_at(e, addrs + alen, v6),
            daddr: ip_at(e, addrs + 2 * alen, v6),
            options: Vec::new(),
        };
        let mut p = at + base;
        let mut seen = 0u8;
        while p < end {
            let bad = |why| DecodeError::Option { index, why };
            if p + 2 > end {
                return Err(bad("no room for its type and length"));
            }
            let (ptype, plen) = (e[p], e[p + 1] as usize);
            if plen == 0 || p + 2 + plen > end {
                return Err(bad("its length runs past the entry"));
            }
            let base_type = ptype & !OPT_F_PARAM;
            let (max, bit) = match base_type {
                OPT_SEQ_DATA if plen != SEQ_DATA_LEN => return Err(bad("sequence data of the wrong length")),
                OPT_SEQ_DATA => (SEQ_DATA_LEN, 1),
                OPT_PE_DATA => (PE_DATA_MAX, 2),
                OPT_PE_NAME => (PE_NAME_MAX, 4),
                _ => (usize::MAX, 0),
            };
            if plen > max {
                return Err(bad("longer than IPVS allows"));
            }
            if seen & bit != 0 {
                return Err(bad("given twice"));
            }
            seen |= bit;
            conn.options.push((ptype, e[p + 2..p + 2 + plen].to_vec()));
            p += 2 + plen;
        }
        conns.push(conn);
        // The next entry starts 32-bit aligned.
        at += (entry_len + 3) & !3;
    }
    Ok(SyncMessage { syncid, conns })
}

/// Appends one entry (its padding first, if the message so far is not 32-bit
/// aligned, as `ip_vs_sync_conn` pads).
fn put_conn(out: &mut Vec<u8>, c: &SyncConn) {
    while out.len() % 4 != 0 {
        out.push(0);
    }
    let len = c.wire_len() as u16;
    out.push(if c.v6() { TYPE_INET6 } else { 0 });
    out.push(c.protocol);
    out.extend_from_slice(&(len & SVER_MASK).to_be_bytes());
    out.extend_from_slice(&c.flags.to_be_bytes());
    out.extend_from_slice(&c.state.to_be_bytes());
    out.extend_from_slice(&c.cport.to_be_bytes());
    out.extend_from_slice(&c.vport.to_be_bytes());
    out.extend_from_slice(&c.dport.to_be_bytes());
    out.extend_from_slice(&c.fwmark.to_be_bytes());
    out.extend_from_slice(&c.timeout.to_be_bytes());
    for a in [c.caddr, c.vaddr, c.daddr] {
        match a {
            IpAddr::V4(v4) if !c.v6() => out.extend_from_slice(&v4.octets()),
            IpAddr::V6(v6) if c.v6() => out.extend_from_slice(&v6.octets()),
            // Mixed families cannot be sent: the client's family decides.
            IpAddr::V4(v4) => out.extend_from_slice(&v4.to_ipv6_mapped().octets()),
            IpAddr::V6(v6) => out.extend_from_slice(&v6.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED).octets()),
        }
    }
    for (t, d) in &c.options {
        out.push(*t);
        out.push(d.len() as u8);
        out.extend_from_slice(d);
    }
}

/// Encodes a version 1 message (at most 255 connections: `nr_conns` is one byte).
pub fn encode(m: &SyncMessage) -> Vec<u8> {
    let mut out = vec![0, m.syncid, 0, 0, m.conns.len().min(255) as u8, VERSION, 0, 0];
    for c in m.conns.iter().take(255) {
        put_conn(&mut out, c);
    }
    let size = out.len() as u16;
    out[2..4].copy_from_slice(&size.to_be_bytes());
    out
}

/// A message being filled by the master.
#[derive(Debug)]
pub struct MessageBuilder {
    buf: Vec<u8>,
    maxlen: usize,
}

impl MessageBuilder {
    pub fn new(syncid: u8, maxlen: usize) -> Self {
        Self { buf: vec![0, syncid, 0, HEADER_LEN as u8, 0, VERSION, 0, 0], maxlen }
    }

    pub fn is_empty(&self) -> bool {
        self.buf[4] == 0
    }

    pub fn conns(&self) -> usize {
        self.buf[4] as usize
    }

    /// Whether `c` still fits (an empty message takes any one entry, as IPVS grows its
    /// buffer for it).
    pub fn fits(&self, c: &SyncConn) -> bool {
        let padded = (self.buf.len() + 3) & !3;
        self.is_empty() || (self.conns() < 255 && padded + c.wire_len() <= self.maxlen)
    }

    /// Adds `c`; the caller checked [`MessageBuilder::fits`].
    pub fn push(&mut self, c: &SyncConn) {
        put_conn(&mut self.buf, c);
        self.buf[4] += 1;
        let size = self.buf.len() as u16;
        self.buf[2..4].copy_from_slice(&size.to_be_bytes());
    }

    /// The message's bytes; the builder starts a new message.
    pub fn take(&mut self) -> Vec<u8> {
        let fresh = Self::new(self.buf[1], self.maxlen);
        std::mem::replace(self, fresh).buf
    }
}

/// IPVS's connection flags for an xlb connection: its forwarding method, and
/// IP_VS_CONN_F_INACTIVE unless it is an established TCP connection (IPVS keeps UDP
/// connections inactive).
pub fn flags_of(method: u8, proto: u8, state: u8) -> u32 {
    let fwd = match method {
        forward::NAT => conn_flags::MASQ,
        forward::TUN => conn_flags::TUNNEL,
        _ => conn_flags::DROUTE,
    };
    let inactive = if proto == PROTO_TCP && state == tcp::ESTABLISHED { 0 } else { conn_flags::INACTIVE };
    fwd | inactive
}

/// IPVS's state number of an xlb state: TCP's are the same numbers; a UDP connection
/// is IP_VS_UDP_S_NORMAL (0).
pub fn to_ipvs_state(proto: u8, state: u8) -> u16 {
    if proto == PROTO_UDP || state == tcp::UDP { 0 } else { state as u16 }
}

/// xlb's state of IPVS's state `state` of a `proto` connection; None for a state IPVS
/// would refuse too (past IP_VS_TCP_S_LAST, or UDP's past NORMAL).
pub fn from_ipvs_state(proto: u8, state: u16) -> Option<u8> {
    match proto {
        PROTO_TCP if (state as usize) < tcp::STATE_COUNT => Some(state as u8),
        PROTO_UDP if state == 0 => Some(tcp::UDP),
        _ => None,
    }
}

/// The sync entry of a fast-path event: `fwmark` is the service's mark (0 for a plain
/// VIP:port service), `timeout` the state's timeout in seconds.
pub fn conn_of_event(e: &SyncEvent, fwmark: u32, timeout: u32) -> SyncConn {
    let f = &e.flow;
    SyncConn {
        protocol: f.proto,
        flags: flags_of(e.forward, f.proto, e.state),
        state: to_ipvs_state(f.proto, e.state),
        cport: u16::from_be_bytes(f.sport),
        vport: u16::from_be_bytes(f.dport),
        dport: u16::from_be_bytes(e.real_port),
        fwmark,
        timeout,
        caddr: addr::to_ip(f.src),
        vaddr: addr::to_ip(f.dst),
        daddr: addr::to_ip(e.real_ip),
        options: Vec::new(),
    }
}

/// A sync daemon's role (ipvsadm's `--start-daemon master|backup`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Master,
    Backup,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Backup => "backup",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "master" => Ok(Role::Master),
            "backup" => Ok(Role::Backup),
            _ => bail!("a sync daemon is `master` or `backup`, not `{s}`"),
        }
    }
}

/// A sync daemon as asked for (ipvsadm's daemon options; None: IPVS's default).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonConfig {
    pub role: Role,
    /// The interface the messages go out of (master) or are received on (backup).
    pub mcast_interface: String,
    /// 0..=255; a backup with 0 takes messages of any syncid.
    #[serde(default)]
    pub syncid: u8,
    /// Largest message, bytes (UDP payload); default the interface's MTU less the IP
    /// and UDP headers.
    #[serde(default)]
    pub sync_maxlen: Option<u16>,
    #[serde(default)]
    pub mcast_group: Option<IpAddr>,
    #[serde(default)]
    pub mcast_port: Option<u16>,
    #[serde(default)]
    pub mcast_ttl: Option<u8>,
}

/// A running sync daemon, as `ipvsadm -L --daemon` lists it: every value resolved,
/// and which of them were given.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonView {
    pub role: Role,
    pub mcast_interface: String,
    pub syncid: u8,
    pub sync_maxlen: u16,
    pub mcast_group: IpAddr,
    pub mcast_port: u16,
    pub mcast_ttl: u8,
    /// The daemon as it was asked for (its options left out take IPVS's defaults).
    pub config: DaemonConfig,
}

impl DaemonView {
    /// ipvsadm's line: `master sync daemon (mcast=eth0, syncid=1)`, followed, as
    /// ipvsadm 1.31 prints what the kernel reports, by the options given:
    /// `, maxlen=L`, `, group=A`, `, port=P`, `, ttl=T`.
    pub fn line(&self) -> String {
        let c = &self.config;
        let mut line = format!("{} sync daemon (mcast={}, syncid={}", self.role.name(), self.mcast_interface, self.syncid);
        if c.sync_maxlen.is_some() {
            line.push_str(&format!(", maxlen={}", self.sync_maxlen));
        }
        if let Some(g) = c.mcast_group {
            line.push_str(&format!(", group={g}"));
        }
        if c.mcast_port.is_some() {
            line.push_str(&format!(", port={}", self.mcast_port));
        }
        if c.mcast_ttl.is_some() {
            line.push_str(&format!(", ttl={}", self.mcast_ttl));
        }
        line.push(')');
        line
    }
}

/// The sync daemons' counters, since the xlb daemon started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Master: messages and connection entries sent.
    pub sent_messages: u64,
    pub sent_conns: u64,
    /// Master: messages the kernel would not send (its buffer full, no route).
    pub send_errors: u64,
    /// Master: messages dropped by the rate cap ([`MAX_MESSAGES_PER_SEC`]).
    pub refused_rate: u64,
    /// Master: events of a service no longer there.
    pub events_unknown_service: u64,
    /// Backup: messages and connection entries received (of this syncid).
    pub received_messages: u64,
    pub received_conns: u64,
    /// Backup: connections created, and connections updated (their state, timeout).
    pub installed_conns: u64,
    pub updated_conns: u64,
    /// Backup: messages of another syncid, and malformed messages (dropped whole).
    pub refused_syncid: u64,
    pub refused_malformed: u64,
    /// Backup: connections of a service, or to a real, this director does not have.
    pub refused_unknown_service: u64,
    pub refused_unknown_real: u64,
    /// Backup: NAT connections (see the module's notes).
    pub refused_nat: u64,
    /// Backup: templates, other protocols, unknown states or mandatory parameters,
    /// local-node and bypass connections.
    pub refused_unsupported: u64,
    /// Backup: the connection table was full.
    pub refused_table_full: u64,
}

impl Counters {
    /// Name and value of each, as `xlb counters` and the metrics list them.
    pub fn list(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("sync_sent_messages", self.sent_messages),
            ("sync_sent_conns", self.sent_conns),
            ("sync_send_errors", self.send_errors),
            ("sync_refused_rate", self.refused_rate),
            ("sync_events_unknown_service", self.events_unknown_service),
            ("sync_received_messages", self.received_messages),
            ("sync_received_conns", self.received_conns),
            ("sync_installed_conns", self.installed_conns),
            ("sync_updated_conns", self.updated_conns),
            ("sync_refused_syncid", self.refused_syncid),
            ("sync_refused_malformed", self.refused_malformed),
            ("sync_refused_unknown_service", self.refused_unknown_service),
            ("sync_refused_unknown_real", self.refused_unknown_real),
            ("sync_refused_nat", self.refused_nat),
            ("sync_refused_unsupported", self.refused_unsupported),
            ("sync_refused_table_full", self.refused_table_full),
        ]
    }
}

/// What the backup makes of one received connection, before installing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Install this entry for this flow.
    Install(FlowKey, ConnEntry),
    UnknownService,
    UnknownReal,
    Nat,
    Unsupported,
}

/// How the backup finds a connection's service and real in its own tables.
pub trait Lookup {
    /// The service id of the frontend (VIP, port, protocol), if it has a live one.
    fn service(&mut self, vip: IpAddr, port: u16, proto: u8) -> Option<u32>;
    /// The real of service `sid` at `ip`:`port` (`vport`: the port the client
    /// addressed, which a fwmark service's portless real takes): its id and address
    /// bytes.
    fn real(&mut self, sid: u32, ip: IpAddr, port: u16, vport: u16) -> Option<u32>;
}

/// The backup's entry for received connection `c` (IPVS's `ip_vs_proc_conn`), its
/// idle stamp set so that it expires `c.timeout` seconds from `now_ns` (never later
/// than this director's own timeout of the state: the stamp cannot be in the future).
pub fn verdict(c: &SyncConn, lookup: &mut dyn Lookup, settings: &Settings, now_ns: u64) -> Verdict {
    if c.flags & conn_flags::TEMPLATE != 0 || c.options.iter().any(|(t, _)| *t & OPT_F_PARAM == 0 && *t != OPT_SEQ_DATA) {
        return Verdict::Unsupported;
    }
    let Some(state) = from_ipvs_state(c.protocol, c.state) else { return Verdict::Unsupported };
    let method = match c.flags & conn_flags::FWD_MASK {
        conn_flags::DROUTE => forward::DR,
        conn_flags::TUNNEL => forward::TUN,
        conn_flags::MASQ => return Verdict::Nat,
        _ => return Verdict::Unsupported,
    };
    if c.caddr.is_ipv6() != c.vaddr.is_ipv6() {
        return Verdict::Unsupported;
    }
    let Some(sid) = lookup.service(c.vaddr, c.vport, c.protocol) else { return Verdict::UnknownService };
    let Some(real_id) = lookup.real(sid, c.daddr, c.dport, c.vport) else { return Verdict::UnknownReal };
    let local = settings.timeout_secs(state) as u64;
    let wanted = if c.timeout == 0 { local } else { (c.timeout as u64).min(local) };
    let flow = FlowKey {
        src: addr::from_ip(c.caddr),
        dst: addr::from_ip(c.vaddr),
        sport: c.cport.to_be_bytes(),
        dport: c.vport.to_be_bytes(),
        proto: c.protocol,
        _pad: [0; 3],
    };
    let entry = ConnEntry {
        last_seen_ns: now_ns.saturating_sub((local - wanted) * 1_000_000_000),
        real_ip: addr::from_ip(c.daddr),
        real_id,
        state,
        forward: method,
        real_port: c.dport.to_be_bytes(),
        service_id: sid,
        template: 0,
    };
    Verdict::Install(flow, entry)
}

// ---- the daemons at work, on the xlb daemon's runtime ----

/// The interface's index and MTU, and its first address of `v6`'s family.
fn interface(name: &str, v6: bool) -> Result<(u32, u32, Option<IpAddr>)> {
    let index = nix::net::if_::if_nametoindex(name).map_err(|_| {
        anyhow::Error::from(crate::ops::Refusal { ipvs: NO_DEVICE, detail: format!("no interface {name} (--mcast-interface)") })
    })?;
    let mtu = std::fs::read_to_string(format!("/sys/class/net/{name}/mtu"))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(1500);
    let address = nix::ifaddrs::getifaddrs().ok().and_then(|mut all| {
        all.find_map(|ifa| {
            if ifa.interface_name != name {
                return None;
            }
            let a = ifa.address?;
            match (a.as_sockaddr_in(), a.as_sockaddr_in6()) {
                (Some(s), _) if !v6 => Some(IpAddr::V4(s.ip())),
                (_, Some(s)) if v6 => Some(IpAddr::V6(s.ip())),
                _ => None,
            }
        })
    });
    Ok((index, mtu, address))
}

/// libipvs's words (ipvs_strerror) for a daemon already running, none running, and
/// the kernel's for an unknown interface.
pub const ALREADY_RUNNING: &str = "Daemon has already run";
pub const NOT_RUNNING: &str = "No daemon is running";
pub const NO_DEVICE: &str = "No such device";

/// `cfg` with IPVS's defaults filled in (start_sync_thread): the group and port,
/// TTL 1, and the message length from the interface's MTU.
pub fn resolve(cfg: &DaemonConfig) -> Result<(DaemonView, u32, Option<IpAddr>)> {
    let group = cfg.mcast_group.unwrap_or(IpAddr::V4(DEFAULT_GROUP));
    if !group.is_multicast() {
        bail!("{group} is no multicast group (--mcast-group)");
    }
    let (index, mtu, local) = interface(&cfg.mcast_interface, group.is_ipv6())?;
    let headers = if group.is_ipv6() { V6_HEADERS } else { V4_HEADERS };
    let maxlen = match cfg.sync_maxlen {
        Some(l) => (l as u32).clamp(1, 65535 - headers),
        None => mtu.clamp(576, 65535) - headers,
    };
    let view = DaemonView {
        role: cfg.role,
        mcast_interface: cfg.mcast_interface.clone(),
        syncid: cfg.syncid,
        sync_maxlen: maxlen as u16,
        mcast_group: group,
        mcast_port: cfg.mcast_port.filter(|p| *p != 0).unwrap_or(DEFAULT_PORT),
        mcast_ttl: cfg.mcast_ttl.filter(|t| *t != 0).unwrap_or(DEFAULT_TTL),
        config: cfg.clone(),
    };
    Ok((view, index, local))
}

/// The master's sending socket: out of the interface (bound to it, and to its address
/// as IPVS binds), to the group, multicast loop off, the TTL set.
fn send_socket(view: &DaemonView, index: u32, local: Option<IpAddr>) -> Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let v6 = view.mcast_group.is_ipv6();
    let s = Socket::new(if v6 { Domain::IPV6 } else { Domain::IPV4 }, Type::DGRAM, Some(Protocol::UDP))?;
    s.bind_device(Some(view.mcast_interface.as_bytes())).with_context(|| format!("binding to {}", view.mcast_interface))?;
    if v6 {
        s.set_multicast_if_v6(index)?;
        s.set_multicast_hops_v6(view.mcast_ttl as u32)?;
        s.set_multicast_loop_v6(false)?;
    } else {
        if let Some(IpAddr::V4(a)) = local {
            s.set_multicast_if_v4(&a)?;
            s.bind(&SocketAddr::new(IpAddr::V4(a), 0).into())?;
        }
        s.set_multicast_ttl_v4(view.mcast_ttl as u32)?;
        s.set_multicast_loop_v4(false)?;
    }
    s.connect(&SocketAddr::new(view.mcast_group, view.mcast_port).into())
        .with_context(|| format!("connecting to {}:{}", view.mcast_group, view.mcast_port))?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// The backup's receiving socket: bound to the group's port on the interface, the
/// group joined there.
fn receive_socket(view: &DaemonView, index: u32) -> Result<tokio::net::UdpSocket> {
    use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};
    let s = match view.mcast_group {
        IpAddr::V4(g) => {
            let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
            s.set_reuse_address(true)?;
            s.bind_device(Some(view.mcast_interface.as_bytes()))?;
            s.bind(&SocketAddr::new(IpAddr::V4(g), view.mcast_port).into())?;
            s.join_multicast_v4_n(&g, &InterfaceIndexOrAddress::Index(index))
                .with_context(|| format!("joining {g} on {}", view.mcast_interface))?;
            s
        }
        IpAddr::V6(g) => {
            let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
            s.set_reuse_address(true)?;
            s.set_only_v6(true)?;
            s.bind_device(Some(view.mcast_interface.as_bytes()))?;
            s.bind(&SocketAddr::new(IpAddr::V6(g), view.mcast_port).into())?;
            s.join_multicast_v6(&g, index).with_context(|| format!("joining {g} on {}", view.mcast_interface))?;
            s
        }
    };
    s.set_recv_buffer_size(1 << 20).ok();
    s.set_nonblocking(true)?;
    Ok(tokio::net::UdpSocket::from_std(s.into())?)
}

/// Reads the fast path's events as they come (the ring buffer's descriptor is
/// readable), handing them over in batches.
async fn read_events(mut ring: AsyncFd<aya::maps::RingBuf<aya::maps::MapData>>, to: mpsc::Sender<Vec<SyncEvent>>) {
    loop {
        let mut guard = match ring.readable_mut().await {
            Ok(g) => g,
            Err(e) => {
                tracing::error!("sync master: waiting for events: {e}");
                return;
            }
        };
        let mut batch = Vec::new();
        while let Some(item) = guard.get_inner_mut().next() {
            if item.len() >= size_of::<SyncEvent>() {
                batch.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<SyncEvent>()) });
            }
            if batch.len() >= 4096 {
                break;
            }
        }
        if batch.len() < 4096 {
            guard.clear_ready();
        }
        drop(guard);
        if !batch.is_empty() && to.send(batch).await.is_err() {
            return;
        }
    }
}

/// Receives the group's datagrams, handing each over.
async fn receive(socket: tokio::net::UdpSocket, to: mpsc::Sender<Vec<u8>>) {
    let mut buf = vec![0u8; 65536];
    loop {
        match socket.recv(&mut buf).await {
            Ok(n) => {
                if to.send(buf[..n].to_vec()).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!("sync backup: receiving: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

struct Master {
    view: DaemonView,
    socket: UdpSocket,
    message: MessageBuilder,
    /// When the message's first entry came.
    first_at: Option<Instant>,
    reader: JoinHandle<()>,
    /// The rate cap: this second's start and the messages sent in it.
    second: Instant,
    in_second: u32,
    /// The last refresh round.
    refreshed: Instant,
}

struct Backup {
    view: DaemonView,
    receiver: JoinHandle<()>,
}

/// The sync daemons of one xlb daemon, owned by its state owner.
pub struct Daemons {
    pin_dir: PathBuf,
    master: Option<Master>,
    backup: Option<Backup>,
    pub counters: Counters,
    events: mpsc::Sender<Vec<SyncEvent>>,
    datagrams: mpsc::Sender<Vec<u8>>,
    /// The master's refresh period ([`REFRESH_PERIOD`] by default).
    refresh_period: Duration,
}

impl Drop for Daemons {
    fn drop(&mut self) {
        if let Some(m) = &self.master {
            m.reader.abort();
        }
        if let Some(b) = &self.backup {
            b.receiver.abort();
        }
    }
}

impl Daemons {
    /// No daemon running; their events and datagrams will be sent to `events` and
    /// `datagrams` (the state owner's channels).
    pub fn new(pin_dir: &Path, events: mpsc::Sender<Vec<SyncEvent>>, datagrams: mpsc::Sender<Vec<u8>>) -> Self {
        Self {
            pin_dir: pin_dir.to_owned(),
            master: None,
            backup: None,
            counters: Counters::default(),
            events,
            datagrams,
            refresh_period: REFRESH_PERIOD,
        }
    }

    /// Sets the master's refresh period (the daemon's ticks, every 2 s, bound it below).
    pub fn set_refresh_period(&mut self, period: Duration) {
        self.refresh_period = period;
    }

    pub fn views(&self) -> Vec<DaemonView> {
        self.master.iter().map(|m| m.view.clone()).chain(self.backup.iter().map(|b| b.view.clone())).collect()
    }

    pub fn master_running(&self) -> bool {
        self.master.is_some()
    }

    /// Starts a daemon (on the current tokio runtime). The caller switches the fast
    /// path's events on for a master.
    pub fn start(&mut self, cfg: &DaemonConfig) -> Result<DaemonView> {
        let running = match cfg.role {
            Role::Master => self.master.is_some(),
            Role::Backup => self.backup.is_some(),
        };
        if running {
            return Err(crate::ops::Refusal { ipvs: ALREADY_RUNNING, detail: format!("a {} sync daemon runs", cfg.role.name()) }.into());
        }
        let (view, index, local) = resolve(cfg)?;
        match cfg.role {
            Role::Master => {
                let socket = send_socket(&view, index, local)?;
                let path = self.pin_dir.join(map_names::SYNC_EVENTS);
                let data = aya::maps::MapData::from_pin(&path)
                    .with_context(|| format!("opening {} (an xlb older than the sync daemon pins none: `xlb stop` first)", path.display()))?;
                let mut ring: aya::maps::RingBuf<aya::maps::MapData> = aya::maps::Map::from_map_data(data)?.try_into()?;
                // Events left from an earlier master are not this one's.
                while ring.next().is_some() {}
                // SAFETY: the AsyncFd owns the ring and with it the descriptor, which is
                // closed only after the AsyncFd has deregistered it (its Drop).
                let fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
                    .map_err(|e| anyhow::anyhow!("watching the sync event ring buffer: {e}"))?;
                let reader = tokio::spawn(read_events(fd, self.events.clone()));
                let message = MessageBuilder::new(view.syncid, view.sync_maxlen as usize);
                tracing::info!("sync master started: {}", view.line());
                let now = Instant::now();
                self.master = Some(Master {
                    view: view.clone(),
                    socket,
                    message,
                    first_at: None,
                    reader,
                    second: now,
                    in_second: 0,
                    refreshed: now,
                });
            }
            Role::Backup => {
                let socket = receive_socket(&view, index)?;
                let receiver = tokio::spawn(receive(socket, self.datagrams.clone()));
                tracing::info!("sync backup started: {}", view.line());
                self.backup = Some(Backup { view: view.clone(), receiver });
            }
        }
        Ok(view)
    }

    /// Stops a daemon (a master sends what it has first).
    pub fn stop(&mut self, role: Role) -> Result<()> {
        match role {
            Role::Master => {
                if self.master.is_none() {
                    return Err(crate::ops::Refusal { ipvs: NOT_RUNNING, detail: "no master sync daemon runs".into() }.into());
                }
                self.flush();
                if let Some(m) = self.master.take() {
                    m.reader.abort();
                }
            }
            Role::Backup => match self.backup.take() {
                Some(b) => b.receiver.abort(),
                None => return Err(crate::ops::Refusal { ipvs: NOT_RUNNING, detail: "no backup sync daemon runs".into() }.into()),
            },
        }
        tracing::info!("{} sync daemon stopped", role.name());
        Ok(())
    }

    /// Whether the master's refresh round is due (its refresh period passed); if so, it starts
    /// now and the caller sends the connections active since `ns_ago` nanoseconds.
    pub fn refresh_due(&mut self) -> Option<u64> {
        let period = self.refresh_period;
        let m = self.master.as_mut()?;
        let since = m.refreshed.elapsed();
        if since < period {
            return None;
        }
        m.refreshed = Instant::now();
        Some(since.as_nanos() as u64)
    }

    /// When the master's message must go (None: nothing waits).
    pub fn flush_deadline(&self) -> Option<Instant> {
        self.master.as_ref()?.first_at.map(|t| t + FLUSH_DELAY)
    }

    /// Adds the fast path's events to the master's messages, sending each full one.
    /// `fwmark` gives a service id's firewall mark (0: a plain service; None: the
    /// service is gone).
    pub fn add_events(&mut self, events: &[SyncEvent], settings: &Settings, fwmark: &mut dyn FnMut(u32) -> Option<u32>) {
        let mut marks: BTreeMap<u32, Option<u32>> = BTreeMap::new();
        for e in events {
            if self.master.is_none() {
                return;
            }
            let Some(mark) = *marks.entry(e.service_id).or_insert_with(|| fwmark(e.service_id)) else {
                self.counters.events_unknown_service += 1;
                continue;
            };
            let conn = conn_of_event(e, mark, settings.timeout_secs(e.state));
            let m = self.master.as_mut().expect("checked above");
            if !m.message.fits(&conn) {
                self.flush();
            }
            let m = self.master.as_mut().expect("checked above");
            m.message.push(&conn);
            m.first_at.get_or_insert_with(Instant::now);
        }
    }

    /// Sends the master's message, if it has entries.
    pub fn flush(&mut self) {
        let Some(m) = self.master.as_mut() else { return };
        if m.message.is_empty() {
            m.first_at = None;
            return;
        }
        let conns = m.message.conns() as u64;
        let bytes = m.message.take();
        m.first_at = None;
        let now = Instant::now();
        if now.duration_since(m.second) >= Duration::from_secs(1) {
            (m.second, m.in_second) = (now, 0);
        }
        if m.in_second >= MAX_MESSAGES_PER_SEC {
            self.counters.refused_rate += 1;
            return;
        }
        m.in_second += 1;
        match m.socket.send(&bytes) {
            Ok(_) => {
                self.counters.sent_messages += 1;
                self.counters.sent_conns += conns;
            }
            Err(e) => {
                self.counters.send_errors += 1;
                tracing::debug!("sync master: sending to {}:{}: {e}", m.view.mcast_group, m.view.mcast_port);
            }
        }
    }

    /// A received datagram: the connections to install, if the backup runs and the
    /// message is of its syncid and well formed (counted either way).
    pub fn receive(&mut self, datagram: &[u8]) -> Vec<SyncConn> {
        let Some(b) = &self.backup else { return Vec::new() };
        let msg = match decode(datagram) {
            Ok(m) => m,
            Err(e) => {
                self.counters.refused_malformed += 1;
                tracing::debug!("sync backup: dropped a malformed message: {e}");
                return Vec::new();
            }
        };
        if b.view.syncid != 0 && msg.syncid != b.view.syncid {
            self.counters.refused_syncid += 1;
            return Vec::new();
        }
        self.counters.received_messages += 1;
        self.counters.received_conns += msg.conns.len() as u64;
        msg.conns
    }

    /// Counts what became of one received connection (`answer`: `xlb_sync_install`'s,
    /// for an installed one).
    pub fn count(&mut self, v: &Verdict, answer: Option<u32>) {
        let c = &mut self.counters;
        match (v, answer) {
            (Verdict::Install(..), Some(lb_common::sync::INSTALL_CREATED)) => c.installed_conns += 1,
            (Verdict::Install(..), Some(lb_common::sync::INSTALL_UPDATED)) => c.updated_conns += 1,
            (Verdict::Install(..), _) => c.refused_table_full += 1,
            (Verdict::UnknownService, _) => c.refused_unknown_service += 1,
            (Verdict::UnknownReal, _) => c.refused_unknown_real += 1,
            (Verdict::Nat, _) => c.refused_nat += 1,
            (Verdict::Unsupported, _) => c.refused_unsupported += 1,
        }
    }
}

/// The event that sends connection `c` of `flow` again (a refresh round).
pub fn event_of(flow: &FlowKey, c: &ConnEntry) -> SyncEvent {
    SyncEvent {
        flow: *flow,
        real_ip: c.real_ip,
        service_id: c.service_id,
        real_id: c.real_id,
        real_port: c.real_port,
        forward: c.forward,
        state: c.state,
        _pad: 0,
    }
}

/// The installer's argument for a verdict's entry.
pub fn install_arg(flow: FlowKey, entry: ConnEntry) -> SyncInstall {
    SyncInstall { flow, entry }
}

/// Keeps `AsRawFd` in use for the ring (AsyncFd needs it).
#[allow(dead_code)]
fn _fd_of(r: &aya::maps::RingBuf<aya::maps::MapData>) -> i32 {
    r.as_raw_fd()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4conn() -> SyncConn {
        SyncConn {
            protocol: PROTO_TCP,
            flags: conn_flags::DROUTE,
            state: tcp::ESTABLISHED as u16,
            cport: 40000,
            vport: 80,
            dport: 80,
            fwmark: 0,
            timeout: 900,
            caddr: "10.0.0.1".parse().unwrap(),
            vaddr: "10.0.0.100".parse().unwrap(),
            daddr: "10.0.0.11".parse().unwrap(),
            options: Vec::new(),
        }
    }

    fn v6conn() -> SyncConn {
        SyncConn {
            protocol: PROTO_UDP,
            flags: conn_flags::TUNNEL | conn_flags::INACTIVE,
            state: 0,
            cport: 5353,
            vport: 53,
            dport: 53,
            fwmark: 7,
            timeout: 300,
            caddr: "2001:db8::1".parse().unwrap(),
            vaddr: "2001:db8::100".parse().unwrap(),
            daddr: "2001:db8::11".parse().unwrap(),
            options: Vec::new(),
        }
    }

    /// The bytes `struct ip_vs_sync_mesg` + `struct ip_vs_sync_v4` hold for
    /// `v4conn()`, as IPVS's ip_vs_sync_conn writes them (network order).
    const GOLDEN_V4: [u8; 44] = [
        0, 5, 0, 44, 1, 1, 0, 0, // reserved, syncid 5, size 44, nr_conns 1, version 1, spare
        0, 6, 0, 36, // type (IPv4), protocol TCP, ver_size: version 0, size 36
        0, 0, 0, 3, // flags: IP_VS_CONN_F_DROUTE
        0, 1, 0x9c, 0x40, // state ESTABLISHED, cport 40000
        0, 80, 0, 80, // vport, dport
        0, 0, 0, 0, // fwmark
        0, 0, 3, 0x84, // timeout 900 s
        10, 0, 0, 1, 10, 0, 0, 100, 10, 0, 0, 11, // caddr, vaddr, daddr
    ];

    #[test]
    fn a_v4_entry_is_ipvs_s_bytes() {
        let m = SyncMessage { syncid: 5, conns: vec![v4conn()] };
        assert_eq!(encode(&m), GOLDEN_V4);
        assert_eq!(decode(&GOLDEN_V4).unwrap(), m);
    }

    #[test]
    fn a_v6_entry_is_ipvs_s_bytes() {
        let m = SyncMessage { syncid: 0, conns: vec![v6conn()] };
        let bytes = encode(&m);
        let mut golden = vec![0, 0, 0, 80, 1, 1, 0, 0];
        golden.extend_from_slice(&[1, 17, 0, 72]); // type INET6, UDP, size 72
        golden.extend_from_slice(&[0, 0, 0x01, 0x02]); // TUNNEL | INACTIVE
        golden.extend_from_slice(&[0, 0, 0x14, 0xe9, 0, 53, 0, 53]); // state 0, cport 5353, vport, dport
        golden.extend_from_slice(&[0, 0, 0, 7, 0, 0, 1, 0x2c]); // fwmark 7, timeout 300
        for a in ["2001:db8::1", "2001:db8::100", "2001:db8::11"] {
            golden.extend_from_slice(&a.parse::<Ipv6Addr>().unwrap().octets());
        }
        assert_eq!(bytes, golden);
        assert_eq!(decode(&bytes).unwrap(), m);
    }

    #[test]
    fn messages_round_trip_with_padding_and_options() {
        let mut a = v4conn();
        a.options.push((OPT_SEQ_DATA, vec![9; 24]));
        a.options.push((OPT_F_PARAM | 9, vec![1]));
        let m = SyncMessage { syncid: 200, conns: vec![a, v6conn(), v4conn()] };
        let bytes = encode(&m);
        // 36 + 26 + 3 = 65: the next entry starts at the 4-byte boundary after it.
        assert_eq!(bytes.len(), HEADER_LEN + 68 + V6_LEN + V4_LEN);
        assert_eq!(decode(&bytes).unwrap(), m);
    }

    #[test]
    fn malformed_messages_are_refused() {
        let good = encode(&SyncMessage { syncid: 1, conns: vec![v4conn(), v4conn()] });
        assert_eq!(decode(&good[..5]), Err(DecodeError::TooShort(5)));
        assert!(matches!(decode(&good[..good.len() - 1]), Err(DecodeError::SizeMismatch { .. })));
        // The header's size and nr_conns promise a second entry the datagram cuts short.
        let mut cut = good[..good.len() - 4].to_vec();
        let n = cut.len() as u16;
        cut[2..4].copy_from_slice(&n.to_be_bytes());
        assert_eq!(decode(&cut), Err(DecodeError::Truncated(1)));
        let mut v0 = good.clone();
        v0[5] = 0;
        assert!(matches!(decode(&v0), Err(DecodeError::NotVersion1 { .. })));
        let mut bad_type = good.clone();
        bad_type[HEADER_LEN] = 2;
        assert!(matches!(decode(&bad_type), Err(DecodeError::EntryType { index: 0, kind: 2 })));
        let mut bad_ver = good.clone();
        bad_ver[HEADER_LEN + 2] = 0x10;
        assert!(matches!(decode(&bad_ver), Err(DecodeError::EntryVersion { index: 0, .. })));
        // An entry size below the fixed part.
        let mut small = good.clone();
        small[HEADER_LEN + 3] = 20;
        assert!(decode(&small).is_err());
        // An option whose length runs past the entry.
        let mut a = v4conn();
        a.options.push((OPT_PE_DATA, vec![1, 2, 3]));
        let mut opt = encode(&SyncMessage { syncid: 1, conns: vec![a] });
        opt[HEADER_LEN + V4_LEN + 1] = 9;
        assert!(matches!(decode(&opt), Err(DecodeError::Option { .. })));
    }

    struct Fixed;
    impl Lookup for Fixed {
        fn service(&mut self, vip: IpAddr, port: u16, proto: u8) -> Option<u32> {
            (vip == "10.0.0.100".parse::<IpAddr>().unwrap() && port == 80 && proto == PROTO_TCP).then_some(3)
        }
        fn real(&mut self, sid: u32, ip: IpAddr, port: u16, _vport: u16) -> Option<u32> {
            (sid == 3 && ip == "10.0.0.11".parse::<IpAddr>().unwrap() && port == 80).then_some(17)
        }
    }

    #[test]
    fn the_backup_names_service_and_real_by_address_and_keeps_the_timeout() {
        let s = Settings::default();
        let now = 10_000_000_000_000;
        let mut c = v4conn();
        c.timeout = 600;
        let Verdict::Install(flow, e) = verdict(&c, &mut Fixed, &s, now) else { panic!() };
        assert_eq!((e.service_id, e.real_id, e.state, e.forward), (3, 17, tcp::ESTABLISHED, forward::DR));
        assert_eq!(flow.sport, 40000u16.to_be_bytes());
        // 900 s here, 600 s left by the master: it expires 600 s from now.
        assert_eq!(now - e.last_seen_ns, 300 * 1_000_000_000);
        let mut other = v4conn();
        other.vport = 81;
        assert_eq!(verdict(&other, &mut Fixed, &s, now), Verdict::UnknownService);
        other = v4conn();
        other.daddr = "10.0.0.12".parse().unwrap();
        assert_eq!(verdict(&other, &mut Fixed, &s, now), Verdict::UnknownReal);
        other = v4conn();
        other.flags = conn_flags::MASQ;
        assert_eq!(verdict(&other, &mut Fixed, &s, now), Verdict::Nat);
        other = v4conn();
        other.flags |= conn_flags::TEMPLATE;
        assert_eq!(verdict(&other, &mut Fixed, &s, now), Verdict::Unsupported);
        other = v4conn();
        other.state = 11;
        assert_eq!(verdict(&other, &mut Fixed, &s, now), Verdict::Unsupported);
    }

    #[test]
    fn states_cross_unchanged_and_udp_is_normal() {
        for s in 0..tcp::STATE_COUNT as u8 {
            assert_eq!(from_ipvs_state(PROTO_TCP, to_ipvs_state(PROTO_TCP, s)), Some(s));
        }
        assert_eq!(to_ipvs_state(PROTO_UDP, tcp::UDP), 0);
        assert_eq!(from_ipvs_state(PROTO_UDP, 0), Some(tcp::UDP));
        assert_eq!(from_ipvs_state(PROTO_UDP, 1), None);
        assert_eq!(flags_of(forward::DR, PROTO_TCP, tcp::ESTABLISHED), conn_flags::DROUTE);
        assert_eq!(flags_of(forward::TUN, PROTO_TCP, tcp::FIN_WAIT), conn_flags::TUNNEL | conn_flags::INACTIVE);
        assert_eq!(flags_of(forward::NAT, PROTO_UDP, tcp::UDP), conn_flags::MASQ | conn_flags::INACTIVE);
    }

    #[test]
    fn the_builder_fills_to_maxlen_and_counts() {
        let mut b = MessageBuilder::new(9, HEADER_LEN + 2 * V4_LEN);
        assert!(b.is_empty());
        b.push(&v4conn());
        assert!(b.fits(&v4conn()));
        b.push(&v4conn());
        assert!(!b.fits(&v4conn()));
        let bytes = b.take();
        assert!(b.is_empty());
        assert_eq!(decode(&bytes).unwrap(), SyncMessage { syncid: 9, conns: vec![v4conn(), v4conn()] });
        // An empty message takes one entry whatever its size.
        let tiny = MessageBuilder::new(0, 10);
        assert!(tiny.fits(&v6conn()));
    }

    /// The fuzz target's seeds (fuzz/seeds/sync_message) are what they say: the
    /// malformed ones are refused, the others round-trip.
    #[test]
    fn the_fuzz_seeds_decode_as_named() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/sync_message");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            match name.as_str() {
                "version-0" | "truncated" => assert!(decode(&bytes).is_err(), "{name}"),
                _ => {
                    let m = decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
                    assert_eq!(encode(&m), bytes, "{name}");
                }
            }
            seen += 1;
        }
        assert!(seen >= 5, "{seen} seeds");
        assert_eq!(std::fs::read(dir.join("v4-dr-established")).unwrap(), GOLDEN_V4);
    }

    #[test]
    fn the_daemon_line_is_ipvsadm_s() {
        let config = DaemonConfig {
            role: Role::Master,
            mcast_interface: "eth0".into(),
            syncid: 1,
            sync_maxlen: None,
            mcast_group: None,
            mcast_port: None,
            mcast_ttl: None,
        };
        let mut v = DaemonView {
            role: Role::Master,
            mcast_interface: "eth0".into(),
            syncid: 1,
            sync_maxlen: 1472,
            mcast_group: IpAddr::V4(DEFAULT_GROUP),
            mcast_port: 8848,
            mcast_ttl: 1,
            config,
        };
        assert_eq!(v.line(), "master sync daemon (mcast=eth0, syncid=1)");
        (v.role, v.config.sync_maxlen, v.config.mcast_port, v.mcast_port) = (Role::Backup, Some(1000), Some(8849), 8849);
        v.sync_maxlen = 1000;
        assert_eq!(v.line(), "backup sync daemon (mcast=eth0, syncid=1, maxlen=1000, port=8849)");
    }
}
