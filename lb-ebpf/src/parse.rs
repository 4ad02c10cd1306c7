//! Header parsing with a bounds check before every read: Ethernet with up to two VLAN
//! tags (802.1Q, 802.1ad QinQ), IPv4 (any IHL) or IPv6 (extension headers skipped, a
//! bounded number), then TCP/UDP ports or the start of an ICMP/ICMPv6 message. Every
//! length a header announces is checked against the others and against the frame.
use core::mem;

use aya_ebpf::programs::XdpContext;
use lb_common::{
    FlowKey, PROTO_TCP, PROTO_UDP, addr_filter,
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
    /// The destination is in the address filter's VIP half (maybe a VIP; if not, surely
    /// none): tested once here, read by the balancer.
    pub to_vip: bool,
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
/// the reason the frame is not balanced. A separate BPF function: inlined, its
/// temporaries would take stack room the deepest call chain (new connections) has not.
#[inline(never)]
pub fn parse(ctx: &XdpContext, pkt: &mut Packet) -> u32 {
    match try_parse(ctx, pkt) {
        Ok(()) => PARSED,
        Err(reason) => reason,
    }
}

/// A `T` read at address `at` (packet or map memory), unaligned: one load of its size,
/// not a byte at a time (the object is built with misaligned access allowed, see
/// lb-ebpf/build.rs; the kernel allows it on packet and map memory, not on the stack).
/// The caller has checked the bounds.
#[inline(always)]
pub unsafe fn load<T: Copy>(at: usize) -> T {
    unsafe { core::ptr::read_unaligned(at as *const T) }
}

/// Writes `v` at `to`, unaligned (see [`load`]).
#[inline(always)]
pub unsafe fn store<T: Copy>(to: *mut u8, v: T) {
    unsafe { core::ptr::write_unaligned(to.cast::<T>(), v) }
}

/// The 16-byte form of an IPv4 address (`a`: its 4 bytes as read from the wire), written
/// in three stores (see `lb_common::addr::from_v4`).
#[inline(always)]
fn set_v4(to: &mut [u8; 16], a: u32) {
    let p = to.as_mut_ptr();
    unsafe {
        store(p, 0u64);
        store(p.add(8), u32::from_ne_bytes([0, 0, 0xff, 0xff]));
        store(p.add(12), a);
    }
}

/// Copies 16 bytes from packet address `at` (checked by the caller): two 8-byte loads.
#[inline(always)]
fn set_v6(to: &mut [u8; 16], at: usize) {
    let p = to.as_mut_ptr();
    unsafe {
        store(p, load::<u64>(at));
        store(p.add(8), load::<u64>(at + 8));
    }
}

#[inline(always)]
fn is_vlan(ethertype_be: u16) -> bool {
    ethertype_be == ETH_P_8021Q.to_be() || ethertype_be == ETH_P_8021AD.to_be()
}

// try_parse zeroes the ports, protocol and padding with one 8-byte store, and TCP/UDP
// write both ports with one 4-byte store.
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(offset_of!(FlowKey, dport) == offset_of!(FlowKey, sport) + 2);
    assert!(size_of::<FlowKey>() == offset_of!(FlowKey, sport) + 8);
};

/// [`link`] and the frame's MACs into `pkt`, with word loads and stores: this runs for
/// every frame the NIC receives.
#[inline(always)]
fn try_parse(ctx: &XdpContext, pkt: &mut Packet) -> Result<(), u32> {
    let data = ctx.data();
    let end = ctx.data_end();
    if data + EthHdr::LEN > end {
        return Err(counter::PASS_TRUNCATED);
    }
    // Ethertypes compared in wire order: no byte swap.
    let mut ethertype = unsafe { load::<u16>(data + 12) };
    let mut l3 = EthHdr::LEN;
    let (mut tag0, mut tag1, mut count) = (0u32, 0u32, 0u8);
    if is_vlan(ethertype) {
        // The tag's TPID is the ethertype just read; its TCI and the next ethertype follow.
        if data + 18 > end {
            return Err(counter::PASS_TRUNCATED);
        }
        tag0 = unsafe { load::<u32>(data + 12) };
        ethertype = unsafe { load::<u16>(data + 16) };
        l3 = 18;
        count = 1;
        if is_vlan(ethertype) {
            if data + 22 > end {
                return Err(counter::PASS_TRUNCATED);
            }
            tag1 = unsafe { load::<u32>(data + 16) };
            ethertype = unsafe { load::<u16>(data + 20) };
            l3 = 22;
            count = 2;
            if is_vlan(ethertype) {
                return Err(counter::PASS_VLAN_STACK);
            }
        }
    }
    let v4 = ethertype == ETH_P_IP.to_be();
    if !v4 && ethertype != ETH_P_IPV6.to_be() {
        return Err(counter::PASS_NOT_IP);
    }
    unsafe {
        let dst = pkt.dst_mac.as_mut_ptr();
        store(dst, load::<u32>(data));
        store(dst.add(4), load::<u16>(data + 4));
        let src = pkt.src_mac.as_mut_ptr();
        store(src, load::<u32>(data + 6));
        store(src.add(4), load::<u16>(data + 10));
        let v = pkt.vlan.as_mut_ptr();
        store(v, tag0);
        store(v.add(4), tag1);
        // Ports, protocol and padding of the flow: zero until read below.
        store((&raw mut pkt.flow.sport).cast::<u8>(), 0u64);
    }
    pkt.vlan_count = count;
    pkt.ingress = ctx.ingress_ifindex() as u32;
    pkt.l3 = l3 as u16;
    pkt.v4 = v4;
    pkt.tos = 0;
    pkt.id = 0;
    pkt.frag = 0;
    pkt.tcp_flags = 0;
    pkt.fragment = WHOLE;
    pkt.frag_id = 0;
    let header_len = if v4 { ipv4(ctx, pkt)? } else { ipv6(ctx, pkt)? };
    // ICMP errors are matched by their quote, which a fragment may not hold whole.
    if pkt.fragment != WHOLE && pkt.is_icmp() {
        return Err(counter::PASS_FRAGMENT);
    }
    // (ICMP is matched by its quote, never by this: not looked up for it.)
    pkt.to_vip = !pkt.is_icmp() && crate::filter::holds(addr_filter::DST, &pkt.flow.dst);
    if pkt.fragment == LATER_FRAGMENT {
        return fragment_data(ctx, pkt, header_len);
    }
    // Neither to a VIP nor from a real server (the address filter): passed before the
    // transport header is read, as most frames a director's NIC carries are. ICMP goes
    // on (an error about a balanced flow may come from anywhere).
    if !pkt.is_icmp() && !pkt.to_vip && !crate::filter::holds(addr_filter::SRC, &pkt.flow.src) {
        return Err(counter::PASS_NOT_VIP);
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
    let at = ip as usize;
    // Version/IHL, TOS and total length in one load; identification and flags/offset in another.
    let w0 = unsafe { load::<u32>(at) }.to_ne_bytes();
    let vihl = w0[0];
    let ihl_bytes = ((vihl & 0x0f) as usize) * 4;
    if vihl >> 4 != 4 || ihl_bytes < Ipv4Hdr::LEN {
        return Err(counter::PASS_BAD_HEADER);
    }
    let proto = unsafe { load::<u8>(at + 9) };
    if proto != PROTO_TCP && proto != PROTO_UDP && proto != PROTO_ICMP {
        return Err(counter::PASS_NOT_TCP_UDP);
    }
    let w1 = unsafe { load::<u32>(at + 4) }.to_ne_bytes();
    let frag = u16::from_be_bytes([w1[2], w1[3]]);
    pkt.flow.proto = proto;
    pkt.frag = frag;
    pkt.id = u16::from_be_bytes([w1[0], w1[1]]);
    if frag & IP_MF_AND_OFFSET != 0 {
        pkt.fragment = if frag & IP_OFFSET != 0 { LATER_FRAGMENT } else { FIRST_FRAGMENT };
        pkt.frag_id = pkt.id as u32;
    }
    pkt.tos = w0[1];
    pkt.ip_len = u16::from_be_bytes([w0[2], w0[3]]);
    set_v4(&mut pkt.flow.src, unsafe { load::<u32>(at + 12) });
    set_v4(&mut pkt.flow.dst, unsafe { load::<u32>(at + 16) });
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
    set_v6(&mut pkt.flow.src, ip as usize + 8);
    set_v6(&mut pkt.flow.dst, ip as usize + 24);
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
        // Ports in one load, data offset and flags (byte 12's high nibble; CWR..FIN) in another.
        let ports = unsafe { load::<u32>(t as usize) };
        let off_flags = unsafe { load::<u16>(t as usize + 12) }.to_ne_bytes();
        unsafe { store((&raw mut pkt.flow.sport).cast::<u8>(), ports) };
        pkt.tcp_flags = off_flags[1];
        let data_offset = (off_flags[0] >> 4) as usize * 4;
        if data_offset < TcpHdr::LEN {
            return Err(counter::PASS_BAD_HEADER);
        }
        data_offset
    } else if pkt.flow.proto == PROTO_UDP {
        let udp: *const UdpHdr = ptr_at(ctx, pkt.l4()).map_err(|()| counter::PASS_TRUNCATED)?;
        unsafe { store((&raw mut pkt.flow.sport).cast::<u8>(), load::<u32>(udp as usize)) };
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
