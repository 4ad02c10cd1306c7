//! Header parsing with a bounds check before every read.
use core::mem;

use aya_ebpf::programs::XdpContext;
use lb_common::{FlowKey, PROTO_TCP, PROTO_UDP, counter};
use network_types::{eth::EthHdr, ip::Ipv4Hdr, tcp::TcpHdr, udp::UdpHdr};

const ETH_P_IP: u16 = 0x0800;
/// IPv4 "more fragments" flag and fragment-offset bits of the `frags` field.
const IP_MF_AND_OFFSET: u16 = 0x3fff;

/// Pointer to a `T` at `offset` into the frame, or `Err` if the frame is too short.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Result<*mut T, ()> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + mem::size_of::<T>() > end {
        return Err(());
    }
    Ok((start + offset) as *mut T)
}

/// Offset of the IPv4 header in the frame.
pub const L3: usize = EthHdr::LEN;

/// The fields of an IPv4 TCP/UDP frame the balancer needs.
pub struct Ipv4Flow {
    /// The frame's source and destination MACs, and the NIC it arrived on: the way
    /// back to the sender (NAT replies go back that way).
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub ingress: u32,
    /// Offset of the TCP/UDP header in the frame.
    pub l4: usize,
    /// The IPv4 header's total length, type of service, identification and
    /// flags/fragment field.
    pub tot_len: u16,
    pub tos: u8,
    pub id: u16,
    pub frag: u16,
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    pub proto: u8,
    /// TCP flags byte (0 for UDP).
    pub tcp_flags: u8,
}

impl Ipv4Flow {
    /// The flow's 5-tuple as sent.
    #[inline(always)]
    pub fn key(&self) -> FlowKey {
        FlowKey { src: self.src, dst: self.dst, sport: self.sport, dport: self.dport, proto: self.proto, _pad: [0; 3] }
    }
}

/// Parses Ethernet / IPv4 (any IHL) / TCP or UDP. `Err` carries the counter index of
/// the reason the frame is not balanced.
#[inline(always)]
pub fn parse_ipv4_flow(ctx: &XdpContext) -> Result<Ipv4Flow, u32> {
    let eth: *const EthHdr = ptr_at(ctx, 0).map_err(|()| counter::PASS_TRUNCATED)?;
    if u16::from_be(unsafe { (*eth).ether_type }) != ETH_P_IP {
        return Err(counter::PASS_NOT_IPV4);
    }
    let ip: *const Ipv4Hdr = ptr_at(ctx, L3).map_err(|()| counter::PASS_TRUNCATED)?;
    let vihl = unsafe { (*ip).vihl };
    let ihl_bytes = ((vihl & 0x0f) as usize) * 4;
    if vihl >> 4 != 4 || ihl_bytes < Ipv4Hdr::LEN {
        return Err(counter::PASS_BAD_HEADER);
    }
    let proto = unsafe { (*ip).proto };
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return Err(counter::PASS_NOT_TCP_UDP);
    }
    let frag = u16::from_be_bytes(unsafe { (*ip).frags });
    if frag & IP_MF_AND_OFFSET != 0 {
        return Err(counter::PASS_FRAGMENT);
    }
    let l4 = L3 + ihl_bytes;
    let (sport, dport, tcp_flags) = if proto == PROTO_TCP {
        let tcp: *const TcpHdr = ptr_at(ctx, l4).map_err(|()| counter::PASS_TRUNCATED)?;
        // Byte 13 of the TCP header holds CWR..FIN.
        unsafe { ((*tcp).source, (*tcp).dest, *(tcp as *const u8).add(13)) }
    } else {
        let udp: *const UdpHdr = ptr_at(ctx, l4).map_err(|()| counter::PASS_TRUNCATED)?;
        unsafe { ((*udp).src, (*udp).dst, 0) }
    };
    // Checked after the transport header is read: had the compiler seen this first, it
    // would drop that read's own bounds check as implied, and the verifier, which cannot
    // follow the inference, would refuse the program.
    let tot_len = u16::from_be_bytes(unsafe { (*ip).tot_len });
    let l4_min = if proto == PROTO_TCP { TcpHdr::LEN } else { UdpHdr::LEN };
    if (tot_len as usize) < ihl_bytes + l4_min {
        return Err(counter::PASS_BAD_HEADER);
    }
    // The frame may be longer (Ethernet padding), never shorter.
    if ctx.data() + L3 + tot_len as usize > ctx.data_end() {
        return Err(counter::PASS_TRUNCATED);
    }
    Ok(Ipv4Flow {
        src_mac: unsafe { (*eth).src_addr },
        dst_mac: unsafe { (*eth).dst_addr },
        ingress: ctx.ingress_ifindex() as u32,
        l4,
        tot_len,
        tos: unsafe { (*ip).tos },
        id: u16::from_be_bytes(unsafe { (*ip).id }),
        frag,
        src: unsafe { (*ip).src_addr },
        dst: unsafe { (*ip).dst_addr },
        sport,
        dport,
        proto,
        tcp_flags,
    })
}
