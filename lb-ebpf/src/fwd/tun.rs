//! IPIP tunnelling (LVS-TUN): the client's packet, untouched, inside an IPv4 header from
//! the director to the real server. A packet that would not fit the path's MTU once
//! encapsulated is answered with ICMP fragmentation-needed, as IPVS does.
use aya_ebpf::{
    helpers::{bpf_csum_diff, bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use lb_common::csum::{self, ICMP_HEADER_LEN, ICMP_QUOTE_LEN, IP_DF, IPV4_HEADER_LEN, Ipv4Fields, PROTO_ICMP, PROTO_IPIP};
use network_types::eth::EthHdr;

use crate::parse::{Ipv4Flow, L3, ptr_at};

/// Type of service of the ICMP errors the director sends (internetwork control, as Linux).
const ICMP_TOS: u8 = 0xc0;

/// Whether the packet, encapsulated, fits a path of `mtu` bytes.
#[inline(always)]
pub fn fits(pkt: &Ipv4Flow, mtu: u32) -> bool {
    pkt.tot_len as u32 + IPV4_HEADER_LEN as u32 <= mtu.min(u16::MAX as u32)
}

/// Puts an IPv4 header `src` → `dst` (protocol 4) in front of the packet. The Ethernet
/// header moves to the new front unchanged; the caller addresses it.
#[inline(always)]
pub fn encapsulate(ctx: &XdpContext, pkt: &Ipv4Flow, src: [u8; 4], dst: [u8; 4]) -> Result<(), ()> {
    let eth = unsafe { *ptr_at::<EthHdr>(ctx, 0)? };
    // The type of service and DF are copied from the inner header (as IPVS does), and the
    // identification too: distinct per packet as the sender chose, should a router
    // fragment a packet without DF.
    let outer = csum::ipv4_header(&Ipv4Fields {
        tos: pkt.tos,
        total_len: pkt.tot_len + IPV4_HEADER_LEN as u16,
        id: pkt.id,
        frag: pkt.frag & IP_DF,
        proto: PROTO_IPIP,
        src,
        dst,
    });
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(IPV4_HEADER_LEN as i32)) } != 0 {
        return Err(());
    }
    unsafe {
        *ptr_at::<EthHdr>(ctx, 0)? = eth;
        *ptr_at::<[u8; IPV4_HEADER_LEN]>(ctx, L3)? = outer;
    }
    Ok(())
}

/// Whether the packet is long enough to be quoted by [`frag_needed`] (always, for any
/// real MTU: only a packet too big for the tunnel gets there).
#[inline(always)]
pub fn quotable(pkt: &Ipv4Flow) -> bool {
    pkt.tot_len as usize >= ICMP_QUOTE_LEN
}

/// Turns the frame into an ICMP fragmentation-needed error to its sender, from the
/// address it was sent to, quoting its first [`ICMP_QUOTE_LEN`] bytes, with `mtu` as
/// the next-hop MTU. The caller sends it back with XDP_TX.
#[inline(always)]
pub fn frag_needed(ctx: &XdpContext, pkt: &Ipv4Flow, mtu: u16) -> Result<(), ()> {
    let eth = unsafe { *ptr_at::<EthHdr>(ctx, 0)? };
    // Keep the quote, then make room in front of it for the new IPv4 and ICMP headers.
    let len = (ctx.data_end() - ctx.data()) as i32;
    if unsafe { bpf_xdp_adjust_tail(ctx.ctx, (L3 + ICMP_QUOTE_LEN) as i32 - len) } != 0 {
        return Err(());
    }
    const ROOM: usize = IPV4_HEADER_LEN + ICMP_HEADER_LEN;
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(ROOM as i32)) } != 0 {
        return Err(());
    }
    let quote: *mut [u8; ICMP_QUOTE_LEN] = ptr_at(ctx, L3 + ROOM)?;
    // bpf_csum_diff sums the quote as little-endian words: byte-swapped, it is the
    // big-endian sum (one's-complement sums commute with swapping).
    let raw = unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, quote.cast(), ICMP_QUOTE_LEN as u32, 0) };
    let quote_sum = csum::fold(raw as u32).swap_bytes() as u32;
    let icmp = csum::icmp_frag_needed(mtu, quote_sum);
    let ip = csum::ipv4_header(&Ipv4Fields {
        tos: ICMP_TOS,
        total_len: (ROOM + ICMP_QUOTE_LEN) as u16,
        id: 0,
        frag: 0,
        proto: PROTO_ICMP,
        src: pkt.dst,
        dst: pkt.src,
    });
    unsafe {
        *ptr_at::<EthHdr>(ctx, 0)? = EthHdr { dst_addr: eth.src_addr, src_addr: eth.dst_addr, ether_type: eth.ether_type };
        *ptr_at::<[u8; IPV4_HEADER_LEN]>(ctx, L3)? = ip;
        *ptr_at::<[u8; ICMP_HEADER_LEN]>(ctx, L3 + IPV4_HEADER_LEN)? = icmp;
    }
    Ok(())
}
