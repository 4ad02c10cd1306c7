//! Tunnelling (LVS-TUN): the client's packet, untouched, inside an IPv4 header (IPIP)
//! or an IPv6 header (IPv6-in-IPv6) from the director to the real server. A packet that
//! would not fit the path's MTU once encapsulated is answered with ICMP
//! fragmentation-needed or ICMPv6 packet-too-big, as IPVS does.
use aya_ebpf::{
    helpers::{bpf_csum_diff, bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use lb_common::{
    addr,
    csum::{
        self, ICMP_HEADER_LEN, ICMP_QUOTE_LEN, IP_DF, IPV4_HEADER_LEN, IPV6_HEADER_LEN, Ipv4Fields, PROTO_ICMP,
        PROTO_ICMPV6, PROTO_IPIP, PROTO_IPV6,
    },
};

use crate::parse::{Packet, ptr_at};

/// Type of service of the ICMP errors the director sends (internetwork control, as Linux).
const ICMP_TOS: u8 = 0xc0;
/// The link-layer header (Ethernet, two VLAN tags at most) is copied whole this long:
/// a fixed size the verifier can check, longer than any real one.
const LINK_COPY: usize = 22;

/// The outer header's length for a packet of this family.
#[inline(always)]
pub const fn overhead(v4: bool) -> usize {
    if v4 { IPV4_HEADER_LEN } else { IPV6_HEADER_LEN }
}

/// Whether the packet, encapsulated, fits a path of `mtu` bytes.
#[inline(always)]
pub fn fits(pkt: &Packet, mtu: u32) -> bool {
    pkt.ip_len as u32 + overhead(pkt.v4) as u32 <= mtu.min(u16::MAX as u32)
}

/// Makes `room` bytes of space between the link-layer header and the IP header: the
/// link-layer header moves to the new front unchanged (the caller addresses it).
#[inline(always)]
fn open_room(ctx: &XdpContext, room: usize) -> Result<(), ()> {
    // The copy may take bytes past the link-layer header; they land where the caller's
    // new header goes, and are overwritten.
    let link = unsafe { *ptr_at::<[u8; LINK_COPY]>(ctx, 0)? };
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(room as i32)) } != 0 {
        return Err(());
    }
    unsafe { *ptr_at::<[u8; LINK_COPY]>(ctx, 0)? = link };
    Ok(())
}

/// Puts a header `src` → `dst` of the packet's family in front of it.
#[inline(always)]
pub fn encapsulate(ctx: &XdpContext, pkt: &Packet, src: &[u8; 16], dst: &[u8; 16]) -> Result<(), ()> {
    if pkt.v4 {
        // The type of service and DF are copied from the inner header (as IPVS does), and
        // the identification too: distinct per packet as the sender chose, should a
        // router fragment a packet without DF.
        let fields = Ipv4Fields {
            tos: pkt.tos,
            total_len: pkt.ip_len + IPV4_HEADER_LEN as u16,
            id: pkt.id,
            frag: pkt.frag & IP_DF,
            proto: PROTO_IPIP,
            src: addr::v4(src),
            dst: addr::v4(dst),
        };
        open_room(ctx, IPV4_HEADER_LEN)?;
        csum::ipv4_header(unsafe { &mut *ptr_at::<[u8; IPV4_HEADER_LEN]>(ctx, pkt.l3())? }, &fields);
    } else {
        open_room(ctx, IPV6_HEADER_LEN)?;
        let h = unsafe { &mut *ptr_at::<[u8; IPV6_HEADER_LEN]>(ctx, pkt.l3())? };
        csum::ipv6_header(h, pkt.tos, pkt.ip_len, PROTO_IPV6, src, dst);
    }
    Ok(())
}

/// Whether the packet is long enough to be quoted by [`too_big_reply`] (always, for any
/// real MTU: only a packet too big for the tunnel gets there).
#[inline(always)]
pub fn quotable(pkt: &Packet) -> bool {
    pkt.ip_len as usize >= ICMP_QUOTE_LEN
}

/// Turns the frame into an ICMP fragmentation-needed (IPv4) or ICMPv6 packet-too-big
/// error to its sender, from the address it was sent to, quoting its first
/// [`ICMP_QUOTE_LEN`] bytes, with `mtu` as the MTU to use. The caller sends it back by
/// XDP_TX; the VLAN tags stay, the MACs are swapped.
#[inline(always)]
pub fn too_big_reply(ctx: &XdpContext, pkt: &Packet, mtu: u32) -> Result<(), ()> {
    let head4 = csum::frag_needed_head(mtu.min(u16::MAX as u32) as u16);
    icmp_error_reply::<ICMP_QUOTE_LEN>(ctx, pkt, head4, csum::packet_too_big_head(mtu))
}

/// Turns the frame into an ICMP error to its sender (`head4`, or for IPv6 the ICMPv6
/// `head6`: type, code, zero checksum, the rest), from the address it was sent to,
/// quoting its first `QUOTE` bytes (a multiple of 4; the caller checks the packet has
/// them). The caller sends it back by XDP_TX; the VLAN tags stay, the MACs are swapped.
#[inline(always)]
pub fn icmp_error_reply<const QUOTE: usize>(ctx: &XdpContext, pkt: &Packet, head4: [u8; ICMP_HEADER_LEN], head6: [u8; ICMP_HEADER_LEN]) -> Result<(), ()> {
    let ip_len = if pkt.v4 { IPV4_HEADER_LEN } else { IPV6_HEADER_LEN };
    let room = ip_len + ICMP_HEADER_LEN;
    // Keep the quote, then make room in front of it for the new IP and ICMP headers.
    let len = (ctx.data_end() - ctx.data()) as i32;
    if unsafe { bpf_xdp_adjust_tail(ctx.ctx, (pkt.l3() + QUOTE) as i32 - len) } != 0 {
        return Err(());
    }
    open_room(ctx, room)?;
    let quote: *mut [u8; QUOTE] = ptr_at(ctx, pkt.l3() + room)?;
    // bpf_csum_diff sums the quote as little-endian words: byte-swapped, it is the
    // big-endian sum (one's-complement sums commute with swapping).
    let raw = unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, quote.cast(), QUOTE as u32, 0) };
    let quote_sum = csum::fold(raw as u32).swap_bytes() as u32;
    let macs: *mut [u8; 12] = ptr_at(ctx, 0)?;
    unsafe {
        let mut m = [0u8; 12];
        m[..6].copy_from_slice(&pkt.src_mac);
        m[6..].copy_from_slice(&pkt.dst_mac);
        *macs = m;
    }
    if pkt.v4 {
        let icmp = unsafe { &mut *ptr_at::<[u8; ICMP_HEADER_LEN]>(ctx, pkt.l3() + IPV4_HEADER_LEN)? };
        csum::icmp_error(icmp, head4, quote_sum);
        let fields = Ipv4Fields {
            tos: ICMP_TOS,
            total_len: (room + QUOTE) as u16,
            id: 0,
            frag: 0,
            proto: PROTO_ICMP,
            src: addr::v4(&pkt.flow.dst),
            dst: addr::v4(&pkt.flow.src),
        };
        csum::ipv4_header(unsafe { &mut *ptr_at::<[u8; IPV4_HEADER_LEN]>(ctx, pkt.l3())? }, &fields);
    } else {
        let icmp = unsafe { &mut *ptr_at::<[u8; ICMP_HEADER_LEN]>(ctx, pkt.l3() + IPV6_HEADER_LEN)? };
        csum::icmp6_error(icmp, head6, QUOTE, &pkt.flow.dst, &pkt.flow.src, quote_sum);
        let ip = unsafe { &mut *ptr_at::<[u8; IPV6_HEADER_LEN]>(ctx, pkt.l3())? };
        csum::ipv6_header(ip, ICMP_TOS, (ICMP_HEADER_LEN + QUOTE) as u16, PROTO_ICMPV6, &pkt.flow.dst, &pkt.flow.src);
    }
    Ok(())
}
