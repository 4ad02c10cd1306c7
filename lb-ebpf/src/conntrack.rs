//! The connection table: flow affinity, IPVS's TCP states and idle timeouts, the live
//! connection counts the least-connection schedulers read, and for NAT the reply table
//! that leads a real server's replies back to their connection.
//!
//! A flow's packets may be handled on several CPUs at once (NAT: the client's on one,
//! the real's replies on another). IPVS serialises them with the connection's lock;
//! here the state moves by compare-and-swap, and only the CPU whose swap succeeded moves
//! the real's ActiveConn/InActConn counts, so they stay exact. Removal first swaps the
//! state to [`tcp::GONE`]: exactly one remover wins and learns the state the counts hold.
//!
//! SYN flood: a TCP connection is half-open from the client's SYN until its next packet
//! (the handshake's ACK, or data) and lives meanwhile in the LRU table HALF_OPEN (NAT:
//! its reply entry in HALF_OPEN_REPLIES), as Katran and Cilium keep new flows in LRU
//! tables. Spoofed SYNs, which never complete a handshake, evict only each other (and
//! at worst a real client's half-open entry, whose retransmitted SYN is scheduled
//! again); CONNS, a plain hash, gets the entry when the handshake completes
//! ([`half_open`], "promotion", keeping the real), so an established connection is
//! never evicted or misrouted. Half-open entries are not in the reals'
//! ActiveConn/InActConn counts: an eviction is not seen, so it could not take a count
//! back. IPVS counts a SYN_RECV connection as InActConn; here it is counted from its
//! promotion on (lc/wlc see only connections whose client answered). UDP has no
//! handshake: its flows go to CONNS at once, as before.
use aya_ebpf::helpers::generated::{bpf_jiffies64, bpf_ktime_get_coarse_ns, bpf_ktime_get_ns};
use lb_common::{
    CLOCK_BASE_NS, CONN_STATE_IN_WORD, CONN_STATE_WORD, ConnEntry, FlowKey, NatReply, PROTO_TCP, RealEntry, ServiceInfo, Settings, counter, forward,
    svc_flags, tcp,
};

use crate::{
    atomic,
    maps::{CONNS, HALF_OPEN, HALF_OPEN_REPLIES, NAT_REPLIES, REALS, SCRATCH, SERVICE_INFO, SETTINGS},
    parse::Packet,
    persist,
    scratch::Scratch,
    stats, sync,
};

/// BPF_NOEXIST: insert only if the key is absent.
const NOEXIST: u64 = 1;
/// The kernel's EEXIST, as map helpers return it (negated).
const EEXIST: i32 = 17;

pub enum Lookup {
    /// The flow is known: forward it as its entry says, to this real.
    Hit(ConnEntry, &'static RealEntry),
    /// No live entry: a new connection. Also a SYN whose old entry was just expired to
    /// be scheduled afresh ([`reschedules`]).
    Miss,
    /// The flow's real was removed (or, with expire_nodest_conn, failed its check and
    /// left the tables): drop the packet (the flow is forgotten too if
    /// expire_nodest_conn is set).
    NoDest,
}

pub enum Created {
    Ok,
    /// Another CPU created this flow's entry first: look it up and follow it.
    Exists,
    /// The connection table is full.
    Full,
    /// NAT: another live connection holds this one's reply tuple.
    Clash,
}

/// The tables' clock (`CLOCK_BASE_NS` + CLOCK_MONOTONIC) now: a new flow's stamp.
#[inline(always)]
pub fn clock_ns() -> u64 {
    unsafe { bpf_ktime_get_ns() + CLOCK_BASE_NS }
}

/// The tables' clock at the kernel's last tick (bpf_ktime_get_coarse_ns): the clock of a
/// known flow's packets. It moves once per tick (1–10 ms), so a flow's idle stamp is
/// rewritten at most once per tick ([`advance`]): no write to the shared entry on every
/// packet. Each CPU keeps the value with the tick it was read in (jiffies, which the
/// verifier inlines to one load): within a tick no helper is called at all. Idle
/// timeouts are in seconds; a stamp a tick old changes none of them.
#[inline(always)]
pub fn coarse_now() -> u64 {
    let tick = unsafe { bpf_jiffies64() };
    // Through a raw pointer: callers hold a reference to another part of the scratch.
    let Some(s) = SCRATCH.get_ptr_mut(0) else { return unsafe { bpf_ktime_get_coarse_ns() } + CLOCK_BASE_NS };
    unsafe {
        if (*s).clock_tick != tick || (*s).clock_ns == 0 {
            (*s).clock_ns = bpf_ktime_get_coarse_ns() + CLOCK_BASE_NS;
            (*s).clock_tick = tick;
        }
        (*s).clock_ns
    }
}

#[inline(always)]
pub fn timeout_ns(state: u8, settings: &Settings) -> u64 {
    settings.timeout_secs(state) as u64 * 1_000_000_000
}

/// The transition table of a client packet: in NAT the director also sees the replies.
#[inline(always)]
fn client_dir(c: &ConnEntry) -> u8 {
    if c.forward == forward::NAT { tcp::dir::INPUT } else { tcp::dir::INPUT_ONLY }
}

/// The entry's 8-byte word holding its state, the unit of the compare-and-swap (see
/// [`lb_common::CONN_STATE_WORD`]).
#[inline(always)]
fn state_word(conn: *mut ConnEntry) -> *mut u64 {
    unsafe { conn.cast::<u8>().add(CONN_STATE_WORD).cast::<u64>() }
}

#[inline(always)]
fn state_of(word: u64) -> u8 {
    word.to_ne_bytes()[CONN_STATE_IN_WORD]
}

#[inline(always)]
fn with_state(word: u64, state: u8) -> u64 {
    let mut b = word.to_ne_bytes();
    b[CONN_STATE_IN_WORD] = state;
    u64::from_ne_bytes(b)
}

/// Moves `conn` to the state after a packet with `tcp_flags` through table `dir`. The
/// move is a compare-and-swap from the state this CPU read; if another CPU moved it
/// first, the transition is taken again from the state it left (as if the packets had
/// come one after the other). Only a successful swap moves the counts, and, with the
/// master sync daemon on, tells it (`flow` is the connection's key).
#[inline(always)]
fn advance(conn: *mut ConnEntry, c: &ConnEntry, flow: &FlowKey, dir: u8, tcp_flags: u8, now: u64, settings: &Settings) {
    let proto = flow.proto;
    if proto == PROTO_TCP {
        let moved = atomic::update(state_word(conn), |word| {
            // Through memory: LLVM would otherwise test the state's range on the whole
            // word and index the transition table with the extracted byte, a link the
            // verifier cannot follow.
            let mut from = state_of(word);
            let from = unsafe { core::ptr::read_volatile(&raw mut from) };
            if from as usize >= tcp::STATE_COUNT {
                return None; // GONE: being removed
            }
            let next = tcp::next_state(dir, from, tcp_flags);
            if next == from { None } else { Some(with_state(word, next)) }
        });
        if let Some((before, after)) = moved {
            stats::load_move(c.real_id, state_of(before), state_of(after));
            if settings.sync_master != 0 {
                sync::emit(flow, c, state_of(after));
            }
        }
    }
    // Only when the (coarse) clock moved past the stamp: most packets of a busy flow
    // leave the entry's cache line unwritten.
    if now > c.last_seen_ns {
        unsafe { (*conn).last_seen_ns = now };
    }
}

/// Claims an entry for removal: swaps its state to [`tcp::GONE`]. Returns the entry with the
/// state it was claimed in, or None if another remover has it.
#[inline(always)]
fn claim(conn: *mut ConnEntry) -> Option<ConnEntry> {
    let (word, _) =
        atomic::update(state_word(conn), |word| if state_of(word) == tcp::GONE { None } else { Some(with_state(word, tcp::GONE)) })?;
    // Everything but the state and the idle stamp is fixed at creation.
    let mut c = unsafe { *conn };
    c.state = state_of(word);
    Some(c)
}

/// Whether a real is out of its service for good, as IPVS's destination without
/// IP_VS_DEST_F_AVAILABLE: removed, or failed its health check and taken out of the
/// tables (keepalived removes it; with inhibit_on_failure it only gets weight 0).
#[inline(always)]
fn gone(real: &RealEntry, flags: u32) -> bool {
    real.removed() || (real.health_down() && flags & svc_flags::INHIBIT_ON_FAILURE == 0)
}

/// Whether a packet on the tuple of entry `c` starts a new connection, scheduled
/// afresh, rather than following `c` (ip_vs_core.c `ip_vs_in_hook`). A new SYN (`syn`:
/// SYN without ACK or RST) does with expire_nodest_conn when `c`'s real takes no new
/// connections (weight 0, failed or removed), and with conn_reuse_mode when `c` is
/// finished (`is_new_conn_expected`: TIME_WAIT or CLOSE; bit 2 adds FIN_WAIT for DR and
/// TUN, whose directors never see TIME_WAIT) and not persistent (IPVS leaves
/// connections a template controls alone). A UDP datagram does with
/// expire_nodest_conn when `c`'s real is gone (IPVS expires the entry and schedules
/// the datagram as a new one).
#[inline(always)]
fn reschedules(c: &ConnEntry, real: &RealEntry, flags: u32, syn: bool, settings: &Settings) -> bool {
    if settings.expire_nodest_conn != 0 && c.state == tcp::UDP && gone(real, flags) {
        return true;
    }
    if !syn {
        return false;
    }
    // Weight 0, failed (inhibited or not) or removed: the real takes no new connections.
    if settings.expire_nodest_conn != 0 && (real.weight == 0 || real.health_down() || real.removed()) {
        return true;
    }
    let mode = settings.conn_reuse_mode;
    mode != 0
        && flags & svc_flags::PERSISTENT == 0
        && (c.state == tcp::TIME_WAIT
            || c.state == tcp::CLOSE
            || (mode & 2 != 0 && c.state == tcp::FIN_WAIT && c.forward != forward::NAT))
}

/// The flags of service `service_id` (0 if it has just gone).
#[inline(always)]
fn service_flags(service_id: u32) -> u32 {
    match unsafe { SERVICE_INFO.get(&service_id) } {
        Some(svc) => svc.flags,
        None => 0,
    }
}

/// [`lookup`]'s `flags` when the caller has not read the service.
pub const FLAGS_UNKNOWN: u64 = u64::MAX;

/// Finds the client's flow, expiring it if idle too long or if a new SYN
/// [`reschedules`] it, and advances its TCP state (clock: [`coarse_now`]). Looked up
/// before the service, as IPVS's `ip_vs_in` looks up the connection before scheduling
/// (`conn_in_get`, then `conn_schedule`): a known flow's packet costs this table's
/// lookup and its real's, not the service's. An entry whose real now belongs to another
/// service (the real id was given to another service's real) is expired: the flow is
/// scheduled afresh. `flags`: the service's flags when the caller has them, else
/// [`FLAGS_UNKNOWN`]: they are then read (by the entry's service id) only when they
/// can matter (a SYN, a real failed by its health check). A separate BPF function.
#[inline(never)]
pub fn lookup(pkt: &Packet, flags: u64, settings: &Settings) -> Lookup {
    let now = coarse_now();
    let (flow, tcp_flags) = (&pkt.flow, pkt.tcp_flags);
    let Some(conn) = CONNS.get_ptr_mut(flow) else { return Lookup::Miss };
    let c = unsafe { *conn };
    if c.state == tcp::GONE {
        // Being removed by another CPU.
        return Lookup::Miss;
    }
    if now.saturating_sub(c.last_seen_ns) > timeout_ns(c.state, settings) {
        expire(flow);
        return Lookup::Miss;
    }
    let Some(real) = (unsafe { REALS.get(&c.real_id) }) else {
        expire(flow);
        return Lookup::Miss;
    };
    if real.ip != c.real_ip || real.service_id != c.service_id {
        // The id now names another server, or another service's real: never send
        // this flow there.
        expire(flow);
        return Lookup::Miss;
    }
    let syn = flow.proto == PROTO_TCP && tcp_flags & (tcp::FLAG_SYN | tcp::FLAG_ACK | tcp::FLAG_RST) == tcp::FLAG_SYN;
    // `gone` reads the flags only for a failed real, `reschedules` only for a SYN.
    let flags = if flags != FLAGS_UNKNOWN {
        flags as u32
    } else if syn || real.health_down() {
        service_flags(c.service_id)
    } else {
        0
    };
    if reschedules(&c, real, flags, syn, settings) {
        // The old entry's count leaves with it, before the new one is counted.
        expire(flow);
        return Lookup::Miss;
    }
    if real.removed() {
        // IPVS (ip_vs_in): a destination that is not available drops its connections'
        // packets silently, without restarting their timers; expire_nodest_conn also
        // forgets them. Added back, the real takes them back.
        if settings.expire_nodest_conn != 0 {
            expire(flow);
        }
        return Lookup::NoDest;
    }
    if gone(real, flags) && settings.expire_nodest_conn != 0 {
        expire(flow);
        return Lookup::NoDest;
    }
    advance(conn, &c, flow, client_dir(&c), tcp_flags, now, settings);
    Lookup::Hit(c, real)
}

/// The connection of a NAT real server's reply, whose entry in the reply table is
/// `back` (the client's flow, the way back): advances its state through IPVS's OUTPUT
/// table. Returns the real's id, or None if the connection has gone or is idle too long.
#[inline(always)]
pub fn lookup_reply(back: &NatReply, tcp_flags: u8, settings: &Settings) -> Option<u32> {
    let now = coarse_now();
    let Some(conn) = CONNS.get_ptr_mut(&back.flow) else {
        // A half-open connection's reply entry (the real's SYN-ACK).
        return lookup_half_open_reply(back, tcp_flags, settings, now);
    };
    let c = unsafe { *conn };
    if c.state == tcp::GONE {
        return None;
    }
    if now.saturating_sub(c.last_seen_ns) > timeout_ns(c.state, settings) {
        expire(&back.flow);
        return None;
    }
    advance(conn, &c, &back.flow, tcp::dir::OUTPUT, tcp_flags, now, settings);
    Some(c.real_id)
}

/// The entry of a new flow of `service_id` to `real` (at `real_port`, wire order), its
/// TCP state after the client's first packet.
#[inline(always)]
pub fn new_entry(entry: &mut ConnEntry, flow: &FlowKey, tcp_flags: u8, service_id: u32, real_id: u32, real: &RealEntry, real_port: [u8; 2], now: u64) {
    entry.last_seen_ns = now;
    entry.real_id = real_id;
    entry.real_ip = real.ip;
    entry.forward = real.forward;
    entry.real_port = real_port;
    entry.service_id = service_id;
    entry.template = 0;
    entry.state = if flow.proto == PROTO_TCP { tcp::next_state(client_dir(entry), tcp::NONE, tcp_flags) } else { tcp::UDP };
}

/// Records a new flow's entry; for NAT also its reply entry `back` (the client's flow
/// and the way back to the client). Inserted only if absent: of two first packets of a
/// flow racing on two CPUs, one creates the entry and the other follows it
/// ([`Created::Exists`]). With the master sync daemon on (`Settings::sync_master`,
/// read here: a value kept live across the call would take stack the chain has not)
/// the new connection is told to it. A separate BPF function.
#[inline(never)]
pub fn create(flow: &FlowKey, entry: &ConnEntry, back: &NatReply) -> Created {
    let sync = matches!(SETTINGS.get(0), Some(s) if s.sync_master != 0);
    create_with(flow, entry, back, sync)
}

/// [`create`] without telling a master sync daemon (an entry a backup received).
#[inline(never)]
fn create_quiet(flow: &FlowKey, entry: &ConnEntry, back: &NatReply) -> Created {
    create_with(flow, entry, back, false)
}

#[inline(always)]
fn create_with(flow: &FlowKey, entry: &ConnEntry, back: &NatReply, sync: bool) -> Created {
    // Counted before it is visible: a packet on another CPU may move its state (and
    // the counts) as soon as it is in the table.
    stats::load_add(entry.real_id, entry.state, 1);
    if let Err(e) = CONNS.insert(flow, entry, NOEXIST) {
        stats::load_add(entry.real_id, entry.state, u64::MAX);
        return if e == -EEXIST { Created::Exists } else { Created::Full };
    }
    if entry.forward == forward::NAT && NAT_REPLIES.insert(&entry.reply_key(flow), back, NOEXIST).is_err() {
        // Take it back, through the claim: its state may have moved already. The reply
        // entry is the other connection's, and stays.
        if let Some(conn) = CONNS.get_ptr_mut(flow) {
            if let Some(c) = claim(conn) {
                release(flow, &c, false);
            }
        }
        return Created::Clash;
    }
    if sync {
        sync::emit(flow, entry, entry.state);
    }
    Created::Ok
}

/// Removes an entry (and its NAT reply entry); whoever removes it (this CPU, another,
/// or the controller's sweep through `xlb_expire`) takes its connection off the real's
/// count and its template's, exactly once: the remover is the CPU whose claim swapped
/// the state to [`tcp::GONE`], and the count comes off the state it swapped from.
#[inline(always)]
pub fn expire(flow: &FlowKey) -> bool {
    let Some(conn) = CONNS.get_ptr_mut(flow) else { return false };
    match claim(conn) {
        Some(c) => {
            release(flow, &c, true);
            true
        }
        None => false,
    }
}

/// The claimed entry `c` leaves the tables and the counts.
#[inline(always)]
fn release(flow: &FlowKey, c: &ConnEntry, with_reply: bool) {
    let _ = CONNS.remove(flow);
    if with_reply && c.forward == forward::NAT {
        let _ = NAT_REPLIES.remove(&c.reply_key(flow));
    }
    stats::load_add(c.real_id, c.state, u64::MAX);
    persist::release(c.service_id, &flow.src, c.template);
}

/// A backup director's entry for `flow`, received from the master sync daemon
/// (IPVS's `ip_vs_proc_conn`): an entry of the flow with the same real takes the
/// received state (the counts move with it) and idle stamp; one with another real
/// (the master scheduled the flow afresh) goes, and the received one is created, as is
/// one for a flow not known here. Never told back to a master ([`create`]'s `sync`
/// off): a director running both daemons does not echo what it received. Returns a
/// `lb_common::sync::INSTALL_*` answer.
#[inline(always)]
pub fn install(flow: &FlowKey, e: &ConnEntry, back: &NatReply) -> u32 {
    if let Some(conn) = CONNS.get_ptr_mut(flow) {
        let c = unsafe { *conn };
        let same = c.real_ip == e.real_ip && c.real_port == e.real_port && c.real_id == e.real_id && c.service_id == e.service_id;
        if c.state != tcp::GONE && same && c.forward == e.forward {
            let to = e.state;
            let moved = atomic::update(state_word(conn), |word| {
                let from = state_of(word);
                if from == tcp::GONE || from == to { None } else { Some(with_state(word, to)) }
            });
            if let Some((before, after)) = moved {
                stats::load_move(c.real_id, state_of(before), state_of(after));
            }
            if e.last_seen_ns > c.last_seen_ns {
                unsafe { (*conn).last_seen_ns = e.last_seen_ns };
            }
            return lb_common::sync::INSTALL_UPDATED;
        }
        expire(flow);
    }
    // A half-open entry this director made for the flow is superseded.
    if let Some(h) = unsafe { HALF_OPEN.get(flow) } {
        let h = *h;
        forget_half_open(flow, &h);
    }
    match create_quiet(flow, e, back) {
        Created::Ok => lb_common::sync::INSTALL_CREATED,
        _ => lb_common::sync::INSTALL_REFUSED,
    }
}

/// What [`half_open`] found for a client packet that has no connection entry.
pub enum HalfOpen {
    /// No half-open entry (or a stale one, now forgotten): a new flow.
    None,
    /// Forward to the entry's real: a retransmitted SYN, or the packet that completed
    /// the handshake (the connection is in CONNS now). The entry is in `Scratch::conn`
    /// (returned by value it would take stack room the chain has not).
    Follow(&'static RealEntry),
    /// Another CPU promoted this flow first: follow its CONNS entry.
    Raced,
    /// Drop the packet, counted under this reason.
    Drop(u32),
}

/// The way back to the client (NAT's reply entry) from the client's packet.
#[inline(always)]
fn way_back(pkt: &Packet, back: &mut NatReply) {
    // Field by field: built whole, it would take stack room the chain has not.
    back.flow = pkt.flow;
    back.client_mac = pkt.src_mac;
    back.local_mac = pkt.dst_mac;
    back.ifindex = pkt.ingress;
    back.vlan = pkt.vlan;
    back.vlan_count = pkt.vlan_count;
}

/// Records a new TCP connection's SYN in the half-open table (NAT: and its reply entry,
/// overwriting an older one of the same tuple: the latest SYN's). Never full: the LRU
/// evicts its oldest half-open entry. [`Created::Exists`]: another CPU's SYN of the
/// same flow came first. A separate BPF function.
#[inline(never)]
pub fn create_half_open(flow: &FlowKey, entry: &ConnEntry, back: &NatReply) -> Created {
    let nat = entry.forward == forward::NAT;
    if nat && holds_reply(&entry.reply_key(flow), flow) {
        return Created::Clash;
    }
    if let Err(e) = HALF_OPEN.insert(flow, entry, NOEXIST) {
        return if e == -EEXIST { Created::Exists } else { Created::Full };
    }
    if nat {
        let _ = HALF_OPEN_REPLIES.insert(&entry.reply_key(flow), back, 0);
    }
    stats::count(counter::HALF_OPEN_CREATED);
    Created::Ok
}

/// NAT: whether another live connection, or half-open one, than `flow`'s holds the
/// reply tuple `reply` (the same client port to two VIPs sharing a NAT real).
#[inline(always)]
fn holds_reply(reply: &FlowKey, flow: &FlowKey) -> bool {
    if unsafe { NAT_REPLIES.get(reply) }.is_some() {
        return true;
    }
    let Some(other) = (unsafe { HALF_OPEN_REPLIES.get(reply) }) else { return false };
    let o = &other.flow;
    if o.src == flow.src && o.dst == flow.dst && o.sport == flow.sport && o.dport == flow.dport {
        return false; // its own, left by an earlier SYN
    }
    unsafe { HALF_OPEN.get(o) }.is_some_and(|h| h.real_ip == reply.src && h.real_port == reply.sport)
}

#[inline(always)]
fn forget_half_open(flow: &FlowKey, c: &ConnEntry) {
    let _ = HALF_OPEN.remove(flow);
    if c.forward == forward::NAT {
        let _ = HALF_OPEN_REPLIES.remove(&c.reply_key(flow));
    }
}

/// A client packet with no connection entry: its half-open entry, if it has one. A
/// retransmitted SYN follows it; any other packet completes the handshake and moves the
/// entry to CONNS with the same real (counted in the real's load from now on; a
/// persistent service's template is made now, if the SYN found none, so spoofed SYNs
/// make no templates). An entry idle past its state's timeout, of another service, or
/// whose real is gone or is another server now, is forgotten. A separate BPF function.
#[inline(never)]
pub fn half_open(s: &mut Scratch, svc: &ServiceInfo, settings: &Settings, now: u64) -> HalfOpen {
    let Scratch { pkt, back, conn, .. } = s;
    let (flow, tcp_flags) = (&pkt.flow, pkt.tcp_flags);
    let Some(e) = HALF_OPEN.get_ptr_mut(flow) else { return HalfOpen::None };
    let mut c = unsafe { *e };
    let live = now.saturating_sub(c.last_seen_ns) <= timeout_ns(c.state, settings) && c.service_id == svc.id;
    let real = if live { unsafe { REALS.get(&c.real_id) } } else { None };
    let Some(real) = real.filter(|r| r.ip == c.real_ip && !gone(r, svc.flags)) else {
        forget_half_open(flow, &c);
        stats::count(counter::HALF_OPEN_STALE);
        return HalfOpen::None;
    };
    if c.forward == forward::NAT {
        way_back(pkt, back);
    }
    if tcp_flags & (tcp::FLAG_SYN | tcp::FLAG_ACK | tcp::FLAG_RST) == tcp::FLAG_SYN {
        unsafe { (*e).last_seen_ns = now };
        if c.forward == forward::NAT {
            // Its reply entry may have been evicted apart from it.
            let _ = HALF_OPEN_REPLIES.insert(&c.reply_key(flow), back, 0);
        }
        stats::count(counter::HALF_OPEN_SYN_AGAIN);
        *conn = c;
        return HalfOpen::Follow(real);
    }
    c.state = tcp::next_state(client_dir(&c), c.state, tcp_flags);
    c.last_seen_ns = now;
    if svc.flags & svc_flags::PERSISTENT != 0 && c.template == 0 {
        // IPVS makes the template at the SYN; here at the handshake's end, so that
        // spoofed SYNs neither fill the template table nor pin clients. If another
        // connection of this client made one for another real meanwhile, this one
        // stays on its real, outside the template.
        let t = persist::remember(svc, &flow.src, c.real_id, &c.real_ip, now);
        c.template = if t.real_id == c.real_id { t.tag } else { 0 };
    }
    persist::hold(svc, &flow.src, c.template);
    match create(flow, &c, back) {
        Created::Ok => {
            forget_half_open(flow, &c);
            stats::count(counter::HALF_OPEN_PROMOTED);
            *conn = c;
            HalfOpen::Follow(real)
        }
        Created::Exists => {
            persist::release(svc.id, &flow.src, c.template);
            HalfOpen::Raced
        }
        Created::Full => {
            persist::release(svc.id, &flow.src, c.template);
            HalfOpen::Drop(counter::DROP_CONN_TABLE_FULL)
        }
        Created::Clash => {
            // The entry's removal gave its template count back.
            forget_half_open(flow, &c);
            HalfOpen::Drop(counter::DROP_NAT_CLASH)
        }
    }
}

/// A NAT real's reply whose reply entry is a half-open connection's (the real's
/// SYN-ACK). Its state moves, uncounted (half-open entries are not in the reals'
/// counts). A separate BPF function.
#[inline(never)]
fn lookup_half_open_reply(back: &NatReply, tcp_flags: u8, settings: &Settings, now: u64) -> Option<u32> {
    let e = HALF_OPEN.get_ptr_mut(&back.flow)?;
    let c = unsafe { *e };
    if now.saturating_sub(c.last_seen_ns) > timeout_ns(c.state, settings) {
        return None;
    }
    unsafe {
        (*e).state = tcp::next_state(tcp::dir::OUTPUT, c.state, tcp_flags);
        (*e).last_seen_ns = now;
    }
    Some(c.real_id)
}
