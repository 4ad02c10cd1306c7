//! Header parsing with a bounds check before every read: Ethernet with up to two VLAN
//! tags (802.1Q, 802.1ad QinQ), IPv4 (any IHL) or IPv6 (extension headers skipped, a
//! bounded number), then TCP/UDP ports or the start of an ICMP/ICMPv6 message. Every
//! length a header announces is checked against the others and against the frame.
use core::mem;

use aya_ebpf::programs::XdpContext;
use lb_common::{
    FlowKey, PROTO_TCP, PROTO_UDP, addr,
    csum::{PROTO_ICMP, PROTO_ICMPV6},
    counter,
};
use network_types::{eth::EthHdr, ip::Ipv4Hdr, tcp::TcpHdr, udp::UdpHdr};

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
/// Tags read: one (802.1Q) or two (QinQ).
pub const MAX_VLAN_TAGS: usize = 2;
/// IPv4 "more fragments" flag and fragment-offset bits of the `frags` field.
const IP_MF_AND_OFFSET: u16 = 0x3fff;
pub const IPV6_HEADER_LEN: usize = 40;
/// IPv6 extension headers skipped before the transport header, at most.
const MAX_IPV6_EXTENSIONS: usize = 4;
const IPV6_HOP_BY_HOP: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_AUTH: u8 = 51;
const IPV6_DEST_OPTS: u8 = 60;

/// [`Packet::fragment`]: a whole packet (IPv6 atomic fragments included).
pub const WHOLE: u8 = 0;
/// The first fragment of a datagram: offset 0, more to come; it carries the ports.
pub const FIRST_FRAGMENT: u8 = 1;
/// A later fragment: no transport header; its ports come from the fragment table.
pub const LATER_FRAGMENT: u8 = 2;
/// IPv4 "more fragments" flag and fragment offset, within their 16-bit field.
const IP_OFFSET: u16 = 0x1fff;
/// IPv6 Fragment header: offset (13 bits, in 8-byte units) and M flag, in bytes 2-3.
const IPV6_FRAG_OFFSET: u16 = 0xfff8;
const IPV6_FRAG_MORE: u16 = 0x0001;

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

/// The fields of a frame the balancer needs.
pub struct Packet {
    /// The frame's source and destination MACs, its VLAN tags (outermost first, as on
    /// the wire: TPID, TCI) and the NIC it arrived on: the way back to the sender.
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub vlan: [u8; 8],
    pub vlan_count: u8,
    pub ingress: u32,
    /// Offsets of the IP header (14, 18 or 22) and of the TCP/UDP/ICMP header: read
    /// through [`Packet::l3`] and [`Packet::l4`].
    l3: u16,
    l4: u16,
    pub v4: bool,
    /// The IP packet's length (IPv4 total length; IPv6 40 + payload length).
    pub ip_len: u16,
    /// Type of service / traffic class.
    pub tos: u8,
    /// IPv4 identification and flags/fragment field (0 for IPv6).
    pub id: u16,
    pub frag: u16,
    /// The 5-tuple as sent: addresses in the 16-byte form; protocol TCP, UDP, ICMP or
    /// ICMPv6; ports zero for ICMP. The connection table's key.
    pub flow: FlowKey,
    /// TCP flags (zero for UDP and ICMP, and for a later fragment).
    pub tcp_flags: u8,
    /// [`WHOLE`], [`FIRST_FRAGMENT`] or [`LATER_FRAGMENT`]; for a later fragment the
    /// ports in `flow` are zero until the fragment table fills them in.
    pub fragment: u8,
    /// The datagram's identification (IPv4's 16 bits, or the IPv6 Fragment header's
    /// 32) when `fragment` is not [`WHOLE`].
    pub frag_id: u32,
}

/// Masks for offsets read back from scratch memory: values loaded from a map are
/// unbounded to the verifier, which allows no packet pointer arithmetic with them; the
/// masks keep every real offset (IP ≤ 22, transport ≤ 22 + 40 + 4 × 2048) unchanged.
pub const L3_MASK: u16 = 0x1f;
pub const L4_MASK: u16 = 0x3fff;

impl Packet {
    #[inline(always)]
    pub fn l3(&self) -> usize {
        (self.l3 & L3_MASK) as usize
    }
    #[inline(always)]
    pub fn l4(&self) -> usize {
        (self.l4 & L4_MASK) as usize
    }

    #[inline(always)]
    pub fn is_icmp(&self) -> bool {
        self.flow.proto == PROTO_ICMP || self.flow.proto == PROTO_ICMPV6
    }

    #[inline(always)]
    pub fn later_fragment(&self) -> bool {
        self.fragment == LATER_FRAGMENT
    }
}

/// [`parse`]'s answer when the packet is filled in (not a counter index).
pub const PARSED: u32 = u32::MAX;

/// Ethernet and VLAN tags: (ethertype, offset of the network header, tags, tag count).
#[inline(always)]
pub fn link(ctx: &XdpContext) -> Result<(u16, usize, [u8; 8], u8), u32> {
    let eth: *const EthHdr = ptr_at(ctx, 0).map_err(|()| counter::PASS_TRUNCATED)?;
    let mut ethertype = u16::from_be(unsafe { (*eth).ether_type });
    let mut l3 = EthHdr::LEN;
    let mut tags = [0u8; 8];
    let mut count = 0u8;
    let mut i = 0;
    while i < MAX_VLAN_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        // The tag's TPID is the ethertype just read; its TCI and the next ethertype follow.
        let tag: *const [u8; 4] = ptr_at(ctx, l3 - 2).map_err(|()| counter::PASS_TRUNCATED)?;
        let next: *const [u8; 2] = ptr_at(ctx, l3 + 2).map_err(|()| counter::PASS_TRUNCATED)?;
        let t = unsafe { *tag };
        tags[i * 4] = t[0];
        tags[i * 4 + 1] = t[1];
        tags[i * 4 + 2] = t[2];
        tags[i * 4 + 3] = t[3];
        ethertype = u16::from_be_bytes(unsafe { *next });
        l3 += 4;
        count += 1;
        i += 1;
    }
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        return Err(counter::PASS_VLAN_STACK);
    }
    Ok((ethertype, l3, tags, count))
}

/// Parses a frame down to its TCP/UDP ports or its ICMP header, into `pkt` (per-CPU
/// scratch memory: too large for the stack). Returns [`PARSED`], or the counter index of
/// the reason the frame is not balanced. A separate BPF function: its temporaries get
/// their own stack frame.
#[inline(never)]
pub fn parse(ctx: &XdpContext, pkt: &mut Packet) -> u32 {
    match try_parse(ctx, pkt) {
        Ok(()) => PARSED,
        Err(reason) => reason,
    }
}

#[inline(always)]
fn try_parse(ctx: &XdpContext, pkt: &mut Packet) -> Result<(), u32> {
    let (ethertype, l3, vlan, vlan_count) = link(ctx)?;
    let eth: *const EthHdr = ptr_at(ctx, 0).map_err(|()| counter::PASS_TRUNCATED)?;
    pkt.src_mac = unsafe { (*eth).src_addr };
    pkt.dst_mac = unsafe { (*eth).dst_addr };
    pkt.vlan = vlan;
    pkt.vlan_count = vlan_count;
    pkt.ingress = ctx.ingress_ifindex() as u32;
    pkt.l3 = l3 as u16;
    pkt.v4 = ethertype == ETH_P_IP;
    pkt.tos = 0;
    pkt.id = 0;
    pkt.frag = 0;
    pkt.tcp_flags = 0;
    pkt.fragment = WHOLE;
    pkt.frag_id = 0;
    pkt.flow = FlowKey::default();
    let header_len = match ethertype {
        ETH_P_IP => ipv4(ctx, pkt)?,
        ETH_P_IPV6 => ipv6(ctx, pkt)?,
        _ => return Err(counter::PASS_NOT_IP),
    };
    // ICMP errors are matched by their quote, which a fragment may not hold whole.
    if pkt.fragment != WHOLE && pkt.is_icmp() {
        return Err(counter::PASS_FRAGMENT);
    }
    if pkt.fragment == LATER_FRAGMENT {
        return fragment_data(ctx, pkt, header_len);
    }
    transport(ctx, pkt, header_len)
}

/// A later fragment's data: no transport header to read, only the lengths to check.
#[inline(always)]
fn fragment_data(ctx: &XdpContext, pkt: &Packet, header_len: usize) -> Result<(), u32> {
    if (pkt.ip_len as usize) < header_len {
        return Err(counter::PASS_BAD_HEADER);
    }
    if ctx.data() + pkt.l3() + pkt.ip_len as usize > ctx.data_end() {
        return Err(counter::PASS_TRUNCATED);
    }
    Ok(())
}

/// The IPv4 header at `pkt.l3()`; returns its length.
#[inline(always)]
fn ipv4(ctx: &XdpContext, pkt: &mut Packet) -> Result<usize, u32> {
    let ip: *const Ipv4Hdr = ptr_at(ctx, pkt.l3()).map_err(|()| counter::PASS_TRUNCATED)?;
    let vihl = unsafe { (*ip).vihl };
    let ihl_bytes = ((vihl & 0x0f) as usize) * 4;
    if vihl >> 4 != 4 || ihl_bytes < Ipv4Hdr::LEN {
        return Err(counter::PASS_BAD_HEADER);
    }
    let proto = unsafe { (*ip).proto };
    if proto != PROTO_TCP && proto != PROTO_UDP && proto != PROTO_ICMP {
        return Err(counter::PASS_NOT_TCP_UDP);
    }
    let frag = u16::from_be_bytes(unsafe { (*ip).frags });
    pkt.flow.proto = proto;
    pkt.frag = frag;
    pkt.id = u16::from_be_bytes(unsafe { (*ip).id });
    if frag & IP_MF_AND_OFFSET != 0 {
        pkt.fragment = if frag & IP_OFFSET != 0 { LATER_FRAGMENT } else { FIRST_FRAGMENT };
        pkt.frag_id = pkt.id as u32;
    }
    pkt.tos = unsafe { (*ip).tos };
    pkt.ip_len = u16::from_be_bytes(unsafe { (*ip).tot_len });
    pkt.flow.src = addr::from_v4(unsafe { (*ip).src_addr });
    pkt.flow.dst = addr::from_v4(unsafe { (*ip).dst_addr });
    pkt.l4 = (pkt.l3() + ihl_bytes) as u16;
    Ok(ihl_bytes)
}

/// The IPv6 header at `pkt.l3()` and the extension headers after it; returns their
/// length together.
#[inline(always)]
fn ipv6(ctx: &XdpContext, pkt: &mut Packet) -> Result<usize, u32> {
    let ip: *const [u8; IPV6_HEADER_LEN] = ptr_at(ctx, pkt.l3()).map_err(|()| counter::PASS_TRUNCATED)?;
    let h = unsafe { &*ip };
    if h[0] >> 4 != 6 {
        return Err(counter::PASS_BAD_HEADER);
    }
    pkt.tos = (h[0] << 4) | (h[1] >> 4);
    pkt.ip_len = (u16::from_be_bytes([h[4], h[5]]) as usize + IPV6_HEADER_LEN).min(u16::MAX as usize) as u16;
    let mut i = 0;
    while i < 16 {
        pkt.flow.src[i] = h[8 + i];
        pkt.flow.dst[i] = h[24 + i];
        i += 1;
    }
    let mut next = h[6];
    let mut len = IPV6_HEADER_LEN;
    let mut skipped = 0;
    while skipped < MAX_IPV6_EXTENSIONS {
        let unit = match next {
            IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS => 8,
            IPV6_AUTH => 4,
            IPV6_FRAGMENT => 0,
            _ => break,
        };
        if unit == 0 {
            // RFC 8200 4.5: next header, reserved, offset and M, identification.
            let fh: *const [u8; 8] = ptr_at(ctx, pkt.l3() + len).map_err(|()| counter::PASS_TRUNCATED)?;
            let f = unsafe { *fh };
            let offset_more = u16::from_be_bytes([f[2], f[3]]);
            next = f[0];
            len += 8;
            skipped += 1;
            // Offset 0 without M is an atomic fragment (RFC 6946): a whole packet.
            if offset_more & (IPV6_FRAG_OFFSET | IPV6_FRAG_MORE) != 0 {
                pkt.frag_id = u32::from_be_bytes([f[4], f[5], f[6], f[7]]);
                if offset_more & IPV6_FRAG_OFFSET != 0 {
                    pkt.fragment = LATER_FRAGMENT;
                    break;
                }
                pkt.fragment = FIRST_FRAGMENT;
            }
            continue;
        }
        let ext: *const [u8; 2] = ptr_at(ctx, pkt.l3() + len).map_err(|()| counter::PASS_TRUNCATED)?;
        let e = unsafe { *ext };
        next = e[0];
        // Hop-by-hop, routing, destination options: (length + 1) × 8 bytes; AH: (length + 2) × 4.
        len += (e[1] as usize + if unit == 8 { 1 } else { 2 }) * unit;
        skipped += 1;
    }
    // A later fragment's next header is that of the data it carries (the transport's).
    let later = pkt.fragment == LATER_FRAGMENT;
    match next {
        PROTO_TCP | PROTO_UDP | PROTO_ICMPV6 => {}
        _ if later => return Err(counter::PASS_FRAGMENT),
        IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS | IPV6_AUTH => return Err(counter::PASS_IPV6_EXTENSIONS),
        IPV6_FRAGMENT => return Err(counter::PASS_FRAGMENT),
        _ => return Err(counter::PASS_NOT_TCP_UDP),
    }
    pkt.flow.proto = next;
    pkt.l4 = (pkt.l3() + len) as u16;
    Ok(len)
}

/// The transport header at `pkt.l4()`, checked against the IP length and the frame.
#[inline(always)]
fn transport(ctx: &XdpContext, pkt: &mut Packet, header_len: usize) -> Result<(), u32> {
    // Read before the length checks below: had the compiler seen those first, it would
    // drop this read's own bounds check as implied, and the verifier, which cannot
    // follow the inference, would refuse the program.
    let min_len = if pkt.flow.proto == PROTO_TCP {
        let tcp: *const TcpHdr = ptr_at(ctx, pkt.l4()).map_err(|()| counter::PASS_TRUNCATED)?;
        let t = tcp as *const u8;
        unsafe {
            pkt.flow.sport = (*tcp).source;
            pkt.flow.dport = (*tcp).dest;
            // Byte 13 holds CWR..FIN; the data offset is byte 12's high nibble.
            pkt.tcp_flags = *t.add(13);
        }
        let data_offset = unsafe { (*t.add(12) >> 4) as usize * 4 };
        if data_offset < TcpHdr::LEN {
            return Err(counter::PASS_BAD_HEADER);
        }
        data_offset
    } else if pkt.flow.proto == PROTO_UDP {
        let udp: *const UdpHdr = ptr_at(ctx, pkt.l4()).map_err(|()| counter::PASS_TRUNCATED)?;
        unsafe {
            pkt.flow.sport = (*udp).src;
            pkt.flow.dport = (*udp).dst;
        }
        UdpHdr::LEN
    } else {
        // ICMP: type, code, checksum and 4 more bytes.
        let _: *const [u8; 8] = ptr_at(ctx, pkt.l4()).map_err(|()| counter::PASS_TRUNCATED)?;
        8
    };
    if (pkt.ip_len as usize) < header_len + min_len {
        return Err(counter::PASS_BAD_HEADER);
    }
    // The frame may be longer (Ethernet padding), never shorter.
    if ctx.data() + pkt.l3() + pkt.ip_len as usize > ctx.data_end() {
        return Err(counter::PASS_TRUNCATED);
    }
    Ok(())
}
