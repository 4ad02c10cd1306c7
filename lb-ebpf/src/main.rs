//! xlb's XDP fast path: Ethernet (VLAN tags) / IPv4 or IPv6 / TCP or UDP → service
//! lookup → connection table, persistence template or scheduler → forward to the real
//! server by DR, NAT or TUN; a NAT real's replies are translated back; ICMP errors
//! about balanced flows follow them, echo to a VIP may be answered. Anything else is
//! passed untouched. Also the real server's tunnel decapsulator (`xlb_decap`).
#![no_std]
#![no_main]
// atomic_xadd, atomic_cxchg: core's atomics have no read-modify-write on the BPF target.
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod atomic;
mod bench;
mod conntrack;
mod decap;
#[cfg(feature = "diagnostics")]
mod diag;
mod filter;
mod frag;
mod fwd;
mod icmp;
mod l2;
mod maps;
mod parse;
mod persist;
mod scratch;
mod sched;
mod stats;
mod sync;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use lb_common::{
    ConnEntry, FlowKey, addr, addr_filter, csum, FragEntry, NatReply, PROTO_TCP, PROTO_UDP, RealEntry, ServiceInfo, ServiceKey, Settings, SyncInstall, counter, forward, svc_flags, tcp,
};

use crate::{
    conntrack::{Created, HalfOpen, Lookup},
    fwd::{nat, tun},
    maps::{CONNS, HALF_OPEN_REPLIES, NAT_REPLIES, REALS, SERVICE_INFO, SERVICES, SETTINGS},
    parse::Packet,
    scratch::Scratch,
};

/// The load balancer, attached to the director's NICs.
#[xdp]
pub fn xlb_balance(ctx: XdpContext) -> u32 {
    let verdict = balance(&ctx);
    // Fast-path log and `xlb trace` (off: one load and a branch).
    #[cfg(feature = "diagnostics")]
    diag::after_frame();
    verdict
}

/// The whole balancing decision for one frame: the verdict, with the frame rewritten
/// when it is forwarded. Wrappers (benchmarks) call this too.
#[inline(always)]
pub fn balance(ctx: &XdpContext) -> u32 {
    try_balance(ctx).unwrap_or_else(|()| {
        stats::count(counter::PASS_ERROR);
        xdp_action::XDP_PASS
    })
}

/// XDP_PASS stub for the peer of a veth: native XDP_TX on a veth is only delivered
/// when the peer has an XDP program.
#[xdp]
pub fn xlb_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// A TUN real server's decapsulator (attached by `xlb realserver setup --mode tun`).
#[xdp]
pub fn xlb_decap(ctx: XdpContext) -> u32 {
    decap::decapsulate(&ctx)
}

/// Expires one connection for the controller's sweep, run through BPF_PROG_TEST_RUN
/// with the FlowKey as the "frame": removing the entry and its count in the kernel keeps
/// the shared counts exact. XDP_PASS: expired and removed; XDP_DROP: kept.
#[xdp]
pub fn xlb_expire(ctx: XdpContext) -> u32 {
    let Ok(key) = parse::ptr_at::<FlowKey>(&ctx, 0) else { return xdp_action::XDP_ABORTED };
    let flow = unsafe { *key };
    let Some(settings) = SETTINGS.get(0) else { return xdp_action::XDP_ABORTED };
    let Some(c) = (unsafe { CONNS.get(&flow) }) else { return xdp_action::XDP_DROP };
    let c = *c;
    let now = conntrack::clock_ns();
    if now.saturating_sub(c.last_seen_ns) > conntrack::timeout_ns(c.state, settings) && conntrack::expire(&flow) {
        xdp_action::XDP_PASS
    } else {
        xdp_action::XDP_DROP
    }
}

/// Installs one connection a backup sync daemon received (`conntrack::install`), run
/// through BPF_PROG_TEST_RUN with a `SyncInstall` as the "frame": made in the kernel,
/// the entry enters the reals' shared counts exactly as the fast path's own do.
/// Returns a `lb_common::sync::INSTALL_*` answer; XDP_ABORTED for a short "frame".
#[xdp]
pub fn xlb_sync_install(ctx: XdpContext) -> u32 {
    let Ok(p) = parse::ptr_at::<SyncInstall>(&ctx, 0) else { return xdp_action::XDP_ABORTED };
    let inst = unsafe { *p };
    let back = NatReply::default();
    conntrack::install(&inst.flow, &inst.entry, &back)
}

fn try_balance(ctx: &XdpContext) -> Result<u32, ()> {
    let s = scratch::get().ok_or(())?;
    let parsed = parse::parse(ctx, &mut s.pkt);
    if parsed != parse::PARSED {
        stats::count(parsed);
        return Ok(xdp_action::XDP_PASS);
    }
    // An array's only entry: always there.
    let settings = SETTINGS.get(0).ok_or(())?;
    if s.pkt.later_fragment() {
        if !frag::follow(&mut s.pkt, &mut s.frag) {
            stats::count(counter::PASS_FRAGMENT);
            return Ok(xdp_action::XDP_PASS);
        }
        // A client's datagram follows its first fragment to its real; a NAT real's
        // reply, now with its ports, is translated back as any reply is.
        if s.frag.to_real != 0 {
            return Ok(follow_fragment(ctx, s));
        }
    }
    if s.pkt.is_icmp() {
        return Ok(icmp::handle(ctx, s, settings));
    }
    let verdict = balance_flow(ctx, s, settings);
    if verdict == NO_REAL {
        return Ok(port_unreachable(ctx, s));
    }
    Ok(verdict)
}

/// A new flow for a service with no available real: as IPVS
/// (ip_vs_leave: "the TCP socket is not actually created ... ICMP_PORT_UNREACH is sent
/// here no matter it is TCP/UDP"), answered with ICMP port unreachable, or ICMPv6's for
/// IPv6, so the client fails at once. Not for an IPv4 header with options, a later
/// fragment, a multicast, broadcast or unspecified source (RFC 1122 3.2.2), nor past
/// the CPU's rate limit (`lb_common::ICMP_UNREACHABLE_PER_SEC`). A separate BPF
/// function, called from the top: under `balance_flow` the chain would pass BPF's 512
/// bytes of stack.
#[inline(never)]
fn port_unreachable(ctx: &XdpContext, s: &mut Scratch) -> u32 {
    let pkt = &s.pkt;
    let answerable = if pkt.v4 {
        let src = addr::v4(&pkt.flow.src);
        pkt.l4() - pkt.l3() == csum::IPV4_HEADER_LEN && src[0] < 224 && src != [0; 4] && !pkt.later_fragment()
    } else {
        pkt.flow.src[0] != 0xff && pkt.flow.src != [0; 16] && !pkt.later_fragment()
    };
    if !answerable || !icmp_allowed(s) {
        stats::count(counter::DROP_NO_REAL);
        return xdp_action::XDP_DROP;
    }
    let pkt = &s.pkt;
    let made = if pkt.v4 {
        tun::icmp_error_reply::<{ csum::PORT_UNREACHABLE_QUOTE_V4 }>(ctx, pkt, csum::ICMP_PORT_UNREACHABLE, csum::ICMPV6_PORT_UNREACHABLE)
    } else {
        tun::icmp_error_reply::<{ csum::PORT_UNREACHABLE_QUOTE_V6 }>(ctx, pkt, csum::ICMP_PORT_UNREACHABLE, csum::ICMPV6_PORT_UNREACHABLE)
    };
    if made.is_err() {
        // The frame may be half rewritten: dropped, as it was before the answer.
        stats::count(counter::DROP_NO_REAL);
        return xdp_action::XDP_DROP;
    }
    stats::count(counter::TX_ICMP_UNREACHABLE);
    xdp_action::XDP_TX
}

/// The CPU's ICMP rate limit: a token bucket of `ICMP_UNREACHABLE_BURST` answers
/// refilled at `ICMP_UNREACHABLE_PER_SEC`, kept in nanoseconds of credit in the scratch.
#[inline(always)]
fn icmp_allowed(s: &mut Scratch) -> bool {
    const COST_NS: u64 = 1_000_000_000 / lb_common::ICMP_UNREACHABLE_PER_SEC;
    let now = conntrack::coarse_now();
    let credit = (s.icmp_credit_ns + now.saturating_sub(s.icmp_stamp_ns)).min(COST_NS * lb_common::ICMP_UNREACHABLE_BURST);
    s.icmp_stamp_ns = now;
    if credit < COST_NS {
        s.icmp_credit_ns = credit;
        return false;
    }
    s.icmp_credit_ns = credit - COST_NS;
    true
}

/// A TCP/UDP frame: a client's (to a service) or a NAT real's reply. A separate BPF
/// function, as are the steps it calls: each gets its own stack frame, and no call
/// chain exceeds BPF's 512 bytes.
#[inline(never)]
fn balance_flow(ctx: &XdpContext, s: &mut Scratch, settings: &Settings) -> u32 {
    match try_balance_flow(ctx, s, settings) {
        Ok(verdict) => verdict,
        Err(()) => {
            stats::count(counter::PASS_ERROR);
            xdp_action::XDP_PASS
        }
    }
}

#[inline(always)]
fn try_balance_flow(ctx: &XdpContext, s: &mut Scratch, settings: &Settings) -> Result<u32, ()> {
    let pkt = &s.pkt;
    // Not for a VIP (the address filter, tested by the parser): a NAT real's reply, or
    // none of ours, found without a service lookup.
    if !pkt.to_vip {
        return Ok(reply_or_pass(ctx, s, settings));
    }
    // For a VIP: balanced only if addressed to this host's MAC (a frame a switch flooded
    // is not), checked before the connection's state can move.
    if !l2::for_this_host(pkt) {
        return Ok(l2::pass_other_host());
    }
    // The connection first, as IPVS (ip_vs_in: conn_in_get, then conn_schedule): a
    // known flow's packet never looks at the service.
    let lookup = conntrack::lookup(pkt, conntrack::FLAGS_UNKNOWN, settings);
    if let Lookup::Hit(c, real) = lookup {
        if c.forward != forward::NAT && c.forward != forward::TUN && pkt.fragment == parse::WHOLE && real.mac_valid() {
            // DR's common packet, sent from here: to_real's call and return cost more
            // than the work (to_real's DR branch does the same).
            let bytes = (ctx.data_end() - ctx.data()) as u64;
            let verdict = fwd::send(ctx, &real.mac, &real.src_mac, real.ifindex)?;
            stats::count_real(c.real_id, bytes, false);
            stats::count(counter::TX_DR);
            return Ok(verdict);
        }
        return Ok(send_to_real(ctx, pkt, real, &Target::following(&c)));
    }
    if let Lookup::NoDest = lookup {
        stats::count(counter::DROP_NODEST);
        return Ok(xdp_action::XDP_DROP);
    }
    // 8-byte aligned on the stack, the key is built with word stores (its own type is
    // byte-aligned, which makes the compiler copy the address a byte at a time).
    let key = Aligned(ServiceKey { vip: pkt.flow.dst, port: pkt.flow.dport, proto: pkt.flow.proto, _pad: 0 });
    let Some(&service_id) = (unsafe { SERVICES.get(&key.0) }) else {
        return Ok(reply_or_pass(ctx, s, settings));
    };
    // A new flow, or a half-open one's (rarer).
    let Some(svc) = (unsafe { SERVICE_INFO.get(&service_id) }) else {
        stats::count(counter::PASS_NOT_VIP);
        return Ok(xdp_action::XDP_PASS);
    };
    // The fine clock for a new connection: its persistence template's tag is
    // made from it.
    let now = conntrack::clock_ns();
    // A half-open TCP connection's packet: its retransmitted SYN, or the one
    // completing its handshake (promotion to CONNS). Followed here, not in a
    // function of its own: another frame in the chain to `to_real` would pass
    // BPF's 512 bytes of stack.
    let tcp = s.pkt.flow.proto == PROTO_TCP;
    let mut raced = false;
    if tcp {
        match conntrack::half_open(s, svc, settings, now) {
            HalfOpen::None => {}
            HalfOpen::Follow(real) => return Ok(send_to_real(ctx, &s.pkt, real, &Target::following(&s.conn))),
            HalfOpen::Raced => raced = true,
            HalfOpen::Drop(reason) => {
                stats::count(reason);
                return Ok(xdp_action::XDP_DROP);
            }
        }
    }
    if !raced {
        if svc.flags & svc_flags::TRASHED != 0 {
            // Kept only for its connections: a new flow finds no service (IPVS).
            stats::count(counter::PASS_NOT_VIP);
            return Ok(xdp_action::XDP_PASS);
        }
        let mut target = Target { real_id: 0, method: 0, real_port: [0; 2], new_conn: true };
        let verdict = open_connection(svc, s, settings, now, &mut target);
        if verdict != RACED {
            if verdict != SCHEDULED {
                return Ok(verdict);
            }
            let real = unsafe { REALS.get(&target.real_id) }.ok_or(())?;
            return Ok(send_to_real(ctx, &s.pkt, real, &target));
        }
    }
    // Another CPU created this flow's entry first (its connection, or its
    // half-open entry): follow it.
    if let Lookup::Hit(c, real) = conntrack::lookup(&s.pkt, svc.flags as u64, settings) {
        return Ok(send_to_real(ctx, &s.pkt, real, &Target::following(&c)));
    }
    if tcp && !raced && let HalfOpen::Follow(real) = conntrack::half_open(s, svc, settings, now) {
        return Ok(send_to_real(ctx, &s.pkt, real, &Target::following(&s.conn)));
    }
    stats::count(counter::DROP_CONN_RACE);
    Ok(xdp_action::XDP_DROP)
}

/// A frame for no service: a NAT real's reply, or (most such frames) none of ours,
/// which the address filter's source half passes without a lookup. A frame not to a
/// VIP had its source tested by the parser (or is a later fragment, looked up).
#[inline(always)]
fn reply_or_pass(ctx: &XdpContext, s: &mut Scratch, settings: &Settings) -> u32 {
    let pkt = &s.pkt;
    let mut back = None;
    if !pkt.to_vip || filter::holds(addr_filter::SRC, &pkt.flow.src) {
        back = unsafe { NAT_REPLIES.get(&pkt.flow) };
        if back.is_none() && pkt.flow.proto == PROTO_TCP && pkt.tcp_flags & tcp::FLAG_SYN != 0 {
            // A real's SYN-ACK to a half-open connection (only a SYN-ACK looks further).
            back = unsafe { HALF_OPEN_REPLIES.get(&pkt.flow) };
        }
    }
    let Some(back) = back else {
        stats::count(counter::PASS_NOT_VIP);
        return xdp_action::XDP_PASS;
    };
    if !l2::for_this_host(pkt) {
        return l2::pass_other_host();
    }
    nat_reply(ctx, pkt, &mut s.frag, settings, back)
}

/// A stack value at an 8-byte boundary.
#[repr(C, align(8))]
struct Aligned<T>(T);

/// A later fragment of a client's datagram to a service: to the real its first
/// fragment went to, by the same method (`s.frag`, filled by `frag::follow`). A
/// separate BPF function, called from the top: under `balance_flow` the chain would
/// pass BPF's 512 bytes of stack.
#[inline(never)]
fn follow_fragment(ctx: &XdpContext, s: &Scratch) -> u32 {
    let f = &s.frag;
    let real = if f.to_real != 0 { unsafe { REALS.get(&f.real_id) } } else { None };
    let Some(real) = real.filter(|r| r.ip == f.real_ip) else {
        stats::count(counter::PASS_FRAGMENT);
        return xdp_action::XDP_PASS;
    };
    let target = Target { real_id: f.real_id, method: f.forward, real_port: f.real_port, new_conn: false };
    send_to_real(ctx, &s.pkt, real, &target)
}

/// Where a client's frame goes.
struct Target {
    real_id: u32,
    /// The forwarding method and the real's port, as the connection recorded them.
    method: u8,
    real_port: [u8; 2],
    new_conn: bool,
}

impl Target {
    /// Where a known connection's packets go: as its entry recorded.
    #[inline(always)]
    fn following(c: &ConnEntry) -> Self {
        Target { real_id: c.real_id, method: c.forward, real_port: c.real_port, new_conn: false }
    }
}

/// [`open_connection`]'s answer when it filled the target (not an XDP verdict).
const SCHEDULED: u32 = u32::MAX;
/// [`open_connection`]'s answer when another CPU created the flow's entry first.
const RACED: u32 = u32::MAX - 1;
/// [`balance_flow`]'s answer when the scheduler found no available real: the top
/// answers it with [`port_unreachable`] (not an XDP verdict).
const NO_REAL: u32 = u32::MAX - 2;

/// A new connection: its real from the persistence template or the scheduler, and its
/// connection entry. Returns [`SCHEDULED`] with `target` filled, or the frame's
/// verdict (counted) when it goes no further. A separate BPF function.
#[inline(never)]
fn open_connection(svc: &ServiceInfo, s: &mut Scratch, settings: &Settings, now: u64, target: &mut Target) -> u32 {
    let Scratch { pkt, conn, back, .. } = s;
    let flow = &pkt.flow;
    // Only a SYN opens a TCP connection (unless sloppy_tcp); anything else goes to the
    // kernel, which holds the VIP and answers with a reset. An mh service picks a
    // mid-flow packet up (svc_flags::MID_FLOW_PICKUP): its Maglev table, the same on
    // every director, gives the real the flow already uses where it came from (ECMP
    // moved it); a RST of a flow it does not know opens nothing (its bit, moved onto the
    // flag's, clears it). Tested in one expression: a branch or a counter more takes
    // stack the chain has not.
    let syn_only = pkt.tcp_flags & (tcp::FLAG_SYN | tcp::FLAG_ACK | tcp::FLAG_RST) == tcp::FLAG_SYN;
    let rst_bit = ((pkt.tcp_flags & tcp::FLAG_RST) as u32) << (svc_flags::MID_FLOW_PICKUP.trailing_zeros() - tcp::FLAG_RST.trailing_zeros());
    if pkt.flow.proto == PROTO_TCP && !syn_only && settings.sloppy_tcp | (svc.flags & svc_flags::MID_FLOW_PICKUP & !rst_bit) == 0 {
        stats::count(counter::PASS_NO_CONN);
        return xdp_action::XDP_PASS;
    }
    // A TCP SYN opens a half-open entry (see conntrack): CONNS gets the connection when
    // the client completes the handshake. Sloppy TCP's mid-stream packets and UDP go to
    // CONNS at once.
    let half_open = pkt.flow.proto == PROTO_TCP && syn_only;
    let persistent = svc.flags & svc_flags::PERSISTENT != 0;
    let mut template = if persistent { persist::lookup(svc, &pkt.flow.src, settings, now) } else { None };
    let chosen = match template {
        Some(t) => Some(t.real_id),
        None => sched::schedule(svc, flow),
    };
    let Some(mut real_id) = chosen else {
        // Counted and answered from the program's top (port_unreachable).
        return NO_REAL;
    };
    // A half-open connection's template is made at its promotion (a spoofed SYN makes none).
    if persistent && template.is_none() && !half_open {
        // IPVS makes the template before the connection (ip_vs_sched_persist).
        let Some(real) = (unsafe { REALS.get(&real_id) }) else {
            stats::count(counter::DROP_NO_REAL);
            return xdp_action::XDP_DROP;
        };
        let t = persist::remember(svc, &pkt.flow.src, real_id, &real.ip, now);
        real_id = t.real_id;
        template = Some(t);
    }
    let Some(real) = (unsafe { REALS.get(&real_id) }) else {
        stats::count(counter::DROP_NO_REAL);
        return xdp_action::XDP_DROP;
    };
    let tag = match template {
        Some(t) => t.tag,
        None => 0,
    };
    // A fwmark service's real without a port keeps the port the client chose.
    let real_port = if real.port == [0, 0] { pkt.flow.dport } else { real.port };
    let one_packet = svc.flags & svc_flags::ONE_PACKET != 0 && pkt.flow.proto == PROTO_UDP;
    if !one_packet {
        conntrack::new_entry(conn, flow, pkt.tcp_flags, svc.id, real_id, real, real_port, now);
        conn.template = tag;
        // Field by field: built whole, it would take stack room the chain has not.
        back.flow = *flow;
        back.client_mac = pkt.src_mac;
        back.local_mac = pkt.dst_mac;
        back.ifindex = pkt.ingress;
        back.vlan = pkt.vlan;
        back.vlan_count = pkt.vlan_count;
        if half_open {
            // The template is held at the promotion (an evicted entry could not give it back).
            match conntrack::create_half_open(flow, conn, back) {
                Created::Ok => {}
                Created::Exists => return RACED,
                Created::Full => {
                    stats::count(counter::DROP_CONN_TABLE_FULL);
                    return xdp_action::XDP_DROP;
                }
                Created::Clash => {
                    stats::count(counter::DROP_NAT_CLASH);
                    return xdp_action::XDP_DROP;
                }
            }
            *target = Target { real_id, method: real.forward, real_port, new_conn: true };
            return SCHEDULED;
        }
        // The template counts the connection before it is visible (another CPU may
        // expire it), and gets it back if it is not made.
        persist::hold(svc, &pkt.flow.src, tag);
        match conntrack::create(flow, conn, back) {
            Created::Ok => {}
            Created::Exists => {
                persist::release(svc.id, &pkt.flow.src, tag);
                return RACED;
            }
            Created::Full => {
                persist::release(svc.id, &pkt.flow.src, tag);
                stats::count(counter::DROP_CONN_TABLE_FULL);
                return xdp_action::XDP_DROP;
            }
            Created::Clash => {
                // The entry's removal gave its template count back.
                stats::count(counter::DROP_NAT_CLASH);
                return xdp_action::XDP_DROP;
            }
        }
    }
    *target = Target { real_id, method: real.forward, real_port, new_conn: true };
    SCHEDULED
}

/// Sends a client's frame to its real server, or answers that it is too big for the
/// tunnel: [`to_real`] and [`too_big`] are called from here, one after the other, not
/// one from the other, so that their stack frames do not add up.
#[inline(always)]
fn send_to_real(ctx: &XdpContext, pkt: &Packet, real: &RealEntry, t: &Target) -> u32 {
    if t.method == forward::TUN && real.route_valid() && !tun::fits(pkt, real.mtu) {
        return too_big(ctx, pkt, real.mtu);
    }
    to_real(ctx, pkt, real, t)
}

/// Sends a client's frame to its real server by the connection's method. A separate
/// BPF function (not inlined): its locals get their own stack frame.
#[inline(never)]
fn to_real(ctx: &XdpContext, pkt: &Packet, real: &RealEntry, t: &Target) -> u32 {
    match try_to_real(ctx, pkt, real, t) {
        Ok(verdict) => verdict,
        Err(()) => {
            stats::count(counter::PASS_ERROR);
            xdp_action::XDP_PASS
        }
    }
}

#[inline(always)]
fn try_to_real(ctx: &XdpContext, pkt: &Packet, real: &RealEntry, t: &Target) -> Result<u32, ()> {
    if pkt.fragment == parse::FIRST_FRAGMENT {
        // Here, not in balance_flow: its frame is at the stack budget's edge.
        let mut f = FragEntry { real_id: t.real_id, real_ip: real.ip, real_port: t.real_port, forward: t.method, to_real: 1, ..Default::default() };
        frag::remember(pkt, &mut f);
    }
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    let sent = match t.method {
        forward::NAT => {
            nat::rewrite(ctx, pkt, nat::End::Destination, &real.ip, t.real_port)?;
            // Unresolved: the translated packet is routed by the kernel, which resolves.
            if !real.mac_valid() {
                stats::count(counter::PASS_NEIGH_UNRESOLVED);
                return Ok(xdp_action::XDP_PASS);
            }
            counter::TX_NAT
        }
        forward::TUN => {
            if !real.route_valid() {
                stats::count(counter::PASS_NO_ROUTE);
                return Ok(xdp_action::XDP_PASS);
            }
            // Too big for the tunnel was answered before (send_to_real).
            tun::encapsulate(ctx, pkt, &real.src_ip, &real.ip)?;
            if !real.mac_valid() {
                stats::count(counter::PASS_NEIGH_UNRESOLVED);
                return Ok(xdp_action::XDP_PASS);
            }
            counter::TX_TUN
        }
        _ => {
            // DR leaves the packet as it is: unresolved, the kernel (which holds the VIP)
            // answers or drops it, while the controller resolves the real.
            if !real.mac_valid() {
                stats::count(counter::PASS_NEIGH_UNRESOLVED);
                return Ok(xdp_action::XDP_PASS);
            }
            counter::TX_DR
        }
    };
    let verdict = fwd::send(ctx, &real.mac, &real.src_mac, real.ifindex)?;
    stats::count_real(t.real_id, bytes, t.new_conn);
    stats::count_sent(sent, t.new_conn);
    Ok(verdict)
}

/// A packet too big for a TUN real's path (`mtu`) once encapsulated: ICMP
/// fragmentation-needed (IPv4 with DF) or ICMPv6 packet-too-big back to the client, as
/// IPVS (ip_vs_xmit.c `ensure_mtu_is_adequate`), which sends packet-too-big for a
/// first fragment only: a later fragment that gets here (its first fit) is dropped
/// unanswered. IPv4 without DF (fragments
/// among them) is dropped where IPVS would fragment the outer packet: XDP sends at most
/// one frame for one.
#[inline(never)]
fn too_big(ctx: &XdpContext, pkt: &Packet, mtu: u32) -> u32 {
    if (pkt.v4 && pkt.frag & lb_common::csum::IP_DF == 0) || pkt.later_fragment() || !tun::quotable(pkt) {
        stats::count(counter::DROP_TOO_BIG);
        return xdp_action::XDP_DROP;
    }
    // The MTU left for the client's packets once the tunnel's header is added.
    let overhead = tun::overhead(pkt.v4) as u32;
    if tun::too_big_reply(ctx, pkt, mtu.max(overhead) - overhead).is_err() {
        stats::count(counter::PASS_ERROR);
        return xdp_action::XDP_PASS;
    }
    stats::count(counter::TX_ICMP_TOO_BIG);
    xdp_action::XDP_TX
}

/// A frame for no service: if it is a NAT real server's reply, its source becomes the
/// VIP and virtual port again and it goes back the way the client's first packet came
/// (that NIC, that MAC, those VLAN tags). Not inlined: its locals get their own stack frame.
#[inline(never)]
fn nat_reply(ctx: &XdpContext, pkt: &Packet, frag: &mut FragEntry, settings: &Settings, back: &'static NatReply) -> u32 {
    match try_nat_reply(ctx, pkt, frag, settings, back) {
        Ok(verdict) => verdict,
        Err(()) => {
            stats::count(counter::PASS_ERROR);
            xdp_action::XDP_PASS
        }
    }
}

#[inline(always)]
fn try_nat_reply(ctx: &XdpContext, pkt: &Packet, frag: &mut FragEntry, settings: &Settings, back: &'static NatReply) -> Result<u32, ()> {
    let Some(real_id) = conntrack::lookup_reply(back, pkt.tcp_flags, settings) else {
        stats::count(counter::PASS_NOT_VIP);
        return Ok(xdp_action::XDP_PASS);
    };
    if pkt.fragment == parse::FIRST_FRAGMENT {
        // A reply's later fragments need only its ports: they find the connection.
        frag.to_real = 0;
        frag::remember(pkt, frag);
    }
    nat::rewrite(ctx, pkt, nat::End::Source, &back.flow.dst, back.flow.dport)?;
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    let verdict = fwd::send_back(ctx, pkt.l3(), pkt.v4, back)?;
    stats::count_real_out(real_id, bytes);
    stats::count(counter::TX_NAT_REPLY);
    Ok(verdict)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
