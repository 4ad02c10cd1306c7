//! ICMP and ICMPv6 reaching the director: echo to a VIP (answered here or passed, as
//! the settings say); errors (destination unreachable, fragmentation-needed /
//! packet-too-big, time exceeded) about a balanced flow, which go to that flow's real
//! server as IPVS and Katran send them (translated for NAT), or, from a NAT real about
//! a client's packet, to the client; everything else (neighbour discovery, …) passed.
use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use lb_common::{ConnEntry, FlowKey, PROTO_TCP, PROTO_UDP, RealEntry, Settings, addr, counter, csum, forward};
use network_types::ip::Ipv4Hdr;

use crate::{
    fwd::{
        self,
        nat::{self, End, Quoted},
        tun,
    },
    l2,
    maps::{CONNS, HALF_OPEN, HALF_OPEN_REPLIES, NAT_REPLIES, REALS, VIPS},
    parse::{IPV6_HEADER_LEN, Packet, ptr_at},
    scratch::Scratch,
    stats,
};

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMPV6_DEST_UNREACH: u8 = 1;
const ICMPV6_PACKET_TOO_BIG: u8 = 2;
const ICMPV6_TIME_EXCEEDED: u8 = 3;
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;
/// Where an ICMP error's quoted packet starts, after type, code, checksum and 4 bytes.
const QUOTE_AT: usize = 8;

/// The verdict for an ICMP/ICMPv6 frame (counted). A separate BPF function.
#[inline(never)]
pub fn handle(ctx: &XdpContext, s: &mut Scratch, settings: &Settings) -> u32 {
    match try_handle(ctx, s, settings) {
        Ok(verdict) => verdict,
        Err(()) => {
            stats::count(counter::PASS_ERROR);
            xdp_action::XDP_PASS
        }
    }
}

#[inline(always)]
fn pass(reason: u32) -> Result<u32, ()> {
    stats::count(reason);
    Ok(xdp_action::XDP_PASS)
}

#[inline(always)]
fn try_handle(ctx: &XdpContext, s: &mut Scratch, settings: &Settings) -> Result<u32, ()> {
    let pkt = &s.pkt;
    let head = unsafe { *ptr_at::<[u8; 2]>(ctx, pkt.l4())? };
    let (kind, code) = (head[0], head[1]);
    let (echo, error) = if pkt.v4 {
        (kind == ICMP_ECHO_REQUEST, kind == ICMP_DEST_UNREACH || kind == ICMP_TIME_EXCEEDED)
    } else {
        (
            kind == ICMPV6_ECHO_REQUEST,
            kind == ICMPV6_DEST_UNREACH || kind == ICMPV6_PACKET_TOO_BIG || kind == ICMPV6_TIME_EXCEEDED,
        )
    };
    if echo && code == 0 && settings.icmp_echo != 0 && unsafe { VIPS.get(&pkt.flow.dst) }.is_some() {
        if !l2::for_this_host(pkt) {
            return Ok(l2::pass_other_host());
        }
        return echo_reply(ctx, pkt, kind);
    }
    if error {
        // Two calls one after the other, not one inside the other: their stack frames
        // do not add up.
        let verdict = icmp_error(ctx, s);
        if verdict != TO_REAL {
            return Ok(verdict);
        }
        let real = unsafe { REALS.get(&s.conn.real_id) }.ok_or(())?;
        return Ok(to_real(ctx, &s.pkt, &s.inner.quoted, &s.conn, real));
    }
    pass(counter::PASS_ICMP)
}

/// [`icmp_error`]'s answer when the error goes to a real server: `conn` holds its
/// connection (not an XDP verdict).
const TO_REAL: u32 = u32::MAX;

/// Answers an echo request in place: addresses and MACs swapped, type reply, TTL 64.
#[inline(always)]
fn echo_reply(ctx: &XdpContext, pkt: &Packet, request: u8) -> Result<u32, ()> {
    let reply = if pkt.v4 { ICMP_ECHO_REPLY } else { ICMPV6_ECHO_REPLY };
    if pkt.v4 {
        let ip: *mut Ipv4Hdr = ptr_at(ctx, pkt.l3())?;
        unsafe {
            let (src, dst, ttl) = ((*ip).src_addr, (*ip).dst_addr, (*ip).ttl);
            (*ip).src_addr = dst;
            (*ip).dst_addr = src;
            (*ip).ttl = csum::DEFAULT_TTL;
            // Swapping addresses keeps the sum; the TTL shares a word with the protocol.
            let check = u16::from_be_bytes((*ip).check);
            let proto = (*ip).proto as u16;
            let check = csum::apply(check, csum::diff16((ttl as u16) << 8 | proto, (csum::DEFAULT_TTL as u16) << 8 | proto));
            (*ip).check = check.to_be_bytes();
        }
    } else {
        let ip: *mut [u8; IPV6_HEADER_LEN] = ptr_at(ctx, pkt.l3())?;
        unsafe {
            (*ip)[7] = csum::DEFAULT_TTL;
            let mut i = 0;
            while i < 16 {
                (*ip)[8 + i] = pkt.flow.dst[i];
                (*ip)[24 + i] = pkt.flow.src[i];
                i += 1;
            }
        }
    }
    // The type shares a word with the code; ICMPv6's pseudo-header sum is unchanged by
    // the swap.
    let icmp: *mut [u8; 4] = ptr_at(ctx, pkt.l4())?;
    unsafe {
        let code = (*icmp)[1] as u16;
        let check = u16::from_be_bytes([(*icmp)[2], (*icmp)[3]]);
        let check = csum::apply(check, csum::diff16((request as u16) << 8 | code, (reply as u16) << 8 | code)).to_be_bytes();
        (*icmp)[0] = reply;
        (*icmp)[2] = check[0];
        (*icmp)[3] = check[1];
    }
    let verdict = fwd::send(ctx, &pkt.src_mac, &pkt.dst_mac, pkt.ingress)?;
    stats::count(counter::TX_ICMP_ECHO_REPLY);
    Ok(verdict)
}

/// The packet an ICMP error quotes, as far as the error carries it.
pub struct Inner {
    quoted: Quoted,
    src: [u8; 16],
    dst: [u8; 16],
    sport: [u8; 2],
    dport: [u8; 2],
}

/// Parses the quoted packet into `inner`: an IP header of the error's family (IPv6
/// without extension headers) and the first 4 bytes of its TCP/UDP header, the ports.
/// False if the quote is not such a packet.
#[inline(always)]
fn quoted(ctx: &XdpContext, pkt: &Packet, inner: &mut Inner) -> bool {
    let l3 = pkt.l4() + QUOTE_AT;
    let l4;
    let proto;
    if pkt.v4 {
        let Ok(ip) = ptr_at::<Ipv4Hdr>(ctx, l3) else { return false };
        let vihl = unsafe { (*ip).vihl };
        let ihl = (vihl & 0x0f) as usize * 4;
        if vihl >> 4 != 4 || ihl < Ipv4Hdr::LEN {
            return false;
        }
        unsafe {
            inner.src = addr::from_v4((*ip).src_addr);
            inner.dst = addr::from_v4((*ip).dst_addr);
            proto = (*ip).proto;
        }
        l4 = l3 + ihl;
    } else {
        let Ok(ip) = ptr_at::<[u8; IPV6_HEADER_LEN]>(ctx, l3) else { return false };
        let h = unsafe { &*ip };
        if h[0] >> 4 != 6 {
            return false;
        }
        let mut i = 0;
        while i < 16 {
            inner.src[i] = h[8 + i];
            inner.dst[i] = h[24 + i];
            i += 1;
        }
        proto = h[6];
        l4 = l3 + IPV6_HEADER_LEN;
    }
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return false;
    }
    let Ok(ports) = ptr_at::<[u8; 4]>(ctx, l4) else { return false };
    let p = unsafe { *ports };
    inner.quoted = Quoted::new(l3, l4, proto);
    inner.sport = [p[0], p[1]];
    inner.dport = [p[2], p[3]];
    true
}

/// An ICMP error: its verdict (counted), or [`TO_REAL`]. A separate BPF function.
#[inline(never)]
fn icmp_error(ctx: &XdpContext, s: &mut Scratch) -> u32 {
    match try_icmp_error(ctx, s) {
        Ok(verdict) => verdict,
        Err(()) => {
            stats::count(counter::PASS_ERROR);
            xdp_action::XDP_PASS
        }
    }
}

#[inline(always)]
fn try_icmp_error(ctx: &XdpContext, s: &mut Scratch) -> Result<u32, ()> {
    let Scratch { pkt, inner, turned, conn, .. } = s;
    if !quoted(ctx, pkt, inner) {
        return pass(counter::PASS_ICMP_NO_FLOW);
    }
    // The quoted packet went the other way: its destination is our flow's source.
    *turned = FlowKey { src: inner.dst, dst: inner.src, sport: inner.dport, dport: inner.sport, proto: inner.quoted.proto, _pad: [0; 3] };
    if unsafe { VIPS.get(&pkt.flow.dst) }.is_some() {
        if !l2::for_this_host(pkt) {
            return Ok(l2::pass_other_host());
        }
        // About a packet a real server sent from the VIP: `turned` is the client's flow
        // (a connection, or a half-open one: IPVS relates errors to SYN_RECV ones too).
        let Some(c) = (unsafe { CONNS.get(&*turned).or_else(|| HALF_OPEN.get(&*turned)) }) else { return pass(counter::PASS_ICMP_NO_FLOW) };
        let Some(real) = (unsafe { REALS.get(&c.real_id) }) else { return pass(counter::PASS_ICMP_NO_FLOW) };
        if real.ip != c.real_ip {
            return pass(counter::PASS_ICMP_NO_FLOW);
        }
        *conn = *c;
        return Ok(TO_REAL);
    }
    // From a NAT real about a client's packet it got: `turned` is its reply tuple.
    let back = unsafe { NAT_REPLIES.get(&*turned).or_else(|| HALF_OPEN_REPLIES.get(&*turned)) };
    let Some(back) = back else { return pass(counter::PASS_ICMP_NO_FLOW) };
    if !l2::for_this_host(pkt) {
        return Ok(l2::pass_other_host());
    }
    let Some(c) = (unsafe { CONNS.get(&back.flow).or_else(|| HALF_OPEN.get(&back.flow)) }) else { return pass(counter::PASS_ICMP_NO_FLOW) };
    let real_id = c.real_id;
    nat::rewrite_icmp_error(ctx, pkt, &inner.quoted, End::Source, &back.flow.dst, back.flow.dport)?;
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    let verdict = fwd::send_back(ctx, pkt.l3(), pkt.v4, back)?;
    stats::count_real_out(real_id, bytes);
    stats::count(counter::TX_ICMP_ERROR);
    Ok(verdict)
}

/// Sends an error about connection `c` to its real server by the connection's method.
/// A separate BPF function.
#[inline(never)]
fn to_real(ctx: &XdpContext, pkt: &Packet, quoted: &Quoted, c: &ConnEntry, real: &RealEntry) -> u32 {
    match try_to_real(ctx, pkt, quoted, c, real) {
        Ok(verdict) => verdict,
        Err(()) => {
            stats::count(counter::PASS_ERROR);
            xdp_action::XDP_PASS
        }
    }
}

#[inline(always)]
fn try_to_real(ctx: &XdpContext, pkt: &Packet, quoted: &Quoted, c: &ConnEntry, real: &RealEntry) -> Result<u32, ()> {
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    match c.forward {
        forward::TUN => {
            if !real.route_valid() {
                return pass(counter::PASS_NO_ROUTE);
            }
            if !tun::fits(pkt, real.mtu) {
                // No ICMP error about an ICMP error.
                stats::count(counter::DROP_TOO_BIG);
                return Ok(xdp_action::XDP_DROP);
            }
            if !real.mac_valid() {
                return pass(counter::PASS_NEIGH_UNRESOLVED);
            }
            tun::encapsulate(ctx, pkt, &real.src_ip, &real.ip)?;
        }
        method => {
            if !real.mac_valid() {
                return pass(counter::PASS_NEIGH_UNRESOLVED);
            }
            if method == forward::NAT {
                // The error's destination (the VIP) and the quoted packet's source
                // (VIP:port, as the real's reply left the director) become the real's.
                nat::rewrite_icmp_error(ctx, pkt, quoted, End::Destination, &real.ip, c.real_port)?;
            }
        }
    }
    let verdict = fwd::send(ctx, &real.mac, &real.src_mac, real.ifindex)?;
    stats::count_real(c.real_id, bytes, false);
    stats::count(counter::TX_ICMP_ERROR);
    Ok(verdict)
}
