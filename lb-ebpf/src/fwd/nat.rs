//! NAT (masquerading): the client's packets get the real's address and port as
//! destination, the real's replies the VIP and virtual port as source; ICMP errors
//! about them get the same translation inside (the quoted packet) and out. Checksums
//! are updated incrementally (RFC 1624): each rewrite totals the one's-complement
//! difference it makes, and every checksum covering the changed words takes that total
//! — the IPv4 header's, TCP/UDP's (their pseudo-header covers the addresses), ICMP's
//! (it covers the quoted packet) and ICMPv6's (the quote and the pseudo-header).
use aya_ebpf::programs::XdpContext;
use lb_common::{PROTO_TCP, PROTO_UDP, csum};

use crate::parse::{L4_MASK, Packet, ptr_at};

/// Which end of a packet a rewrite changes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum End {
    Source,
    Destination,
}

impl End {
    #[inline(always)]
    const fn other(self) -> Self {
        match self {
            End::Source => End::Destination,
            End::Destination => End::Source,
        }
    }
}

/// Reads the big-endian word at `at`, writes `new` there, and returns the difference.
#[inline(always)]
fn swap_word(ctx: &XdpContext, at: usize, new: [u8; 2]) -> Result<u32, ()> {
    let w: *mut [u8; 2] = ptr_at(ctx, at)?;
    let old = u16::from_be_bytes(unsafe { *w });
    unsafe { *w = new };
    Ok(csum::diff16(old, u16::from_be_bytes(new)))
}

/// Replaces the address of `end` in the IP header at `l3` with `ip` (16-byte form; its
/// last 4 bytes for IPv4) and returns the difference it makes to sums covering it.
#[inline(always)]
fn swap_address(ctx: &XdpContext, l3: usize, v4: bool, end: End, ip: &[u8; 16]) -> Result<u32, ()> {
    if v4 {
        let field: *mut [u8; 4] = ptr_at(ctx, l3 + if end == End::Source { 12 } else { 16 })?;
        let old = unsafe { *field };
        unsafe { *field = [ip[12], ip[13], ip[14], ip[15]] };
        return Ok(csum::diff16(u16::from_be_bytes([old[0], old[1]]), u16::from_be_bytes([ip[12], ip[13]]))
            + csum::diff16(u16::from_be_bytes([old[2], old[3]]), u16::from_be_bytes([ip[14], ip[15]])));
    }
    let field: *mut [u8; 16] = ptr_at(ctx, l3 + if end == End::Source { 8 } else { 24 })?;
    let f = unsafe { &mut *field };
    let mut diff = 0;
    let mut i = 0;
    while i < 16 {
        diff += csum::diff16(u16::from_be_bytes([f[i], f[i + 1]]), u16::from_be_bytes([ip[i], ip[i + 1]]));
        f[i] = ip[i];
        f[i + 1] = ip[i + 1];
        i += 2;
    }
    Ok(diff)
}

/// Applies `diff` to the checksum at `at`; returns the checksum's own difference (for
/// an enclosing checksum). `udp`: a 0 checksum is "none" and stays, a computed 0 is
/// sent as 0xffff.
#[inline(always)]
fn fix_checksum(ctx: &XdpContext, at: usize, diff: u32, udp: bool) -> Result<u32, ()> {
    let c: *mut [u8; 2] = ptr_at(ctx, at)?;
    let old = u16::from_be_bytes(unsafe { *c });
    if udp && old == 0 {
        return Ok(0);
    }
    let mut new = csum::apply(old, diff);
    if udp {
        new = csum::udp_nonzero(new);
    }
    unsafe { *c = new.to_be_bytes() };
    Ok(csum::diff16(old, new))
}

/// Rewrites `end` of the IP header at `l3` and of the TCP/UDP header at `l4` to
/// `ip`:`port`, with the IPv4 header checksum and the transport checksum. Returns the
/// difference made to sums covering both headers (an enclosing ICMP checksum's).
/// `whole`: the transport checksum must be there (false inside an ICMP quote, which may
/// stop before it).
#[inline(always)]
fn rewrite_at(ctx: &XdpContext, l3: usize, l4: usize, proto: u8, v4: bool, end: End, ip: &[u8; 16], port: [u8; 2], whole: bool) -> Result<u32, ()> {
    let address = swap_address(ctx, l3, v4, end, ip)?;
    let mut outer = address;
    if v4 {
        outer += fix_checksum(ctx, l3 + 10, address, false)?;
    }
    let port_diff = swap_word(ctx, l4 + if end == End::Source { 0 } else { 2 }, port)?;
    outer += port_diff;
    let check_at = l4 + if proto == PROTO_TCP { 16 } else { 6 };
    match fix_checksum(ctx, check_at, address + port_diff, proto == PROTO_UDP) {
        Ok(d) => outer += d,
        Err(()) if !whole => {}
        Err(()) => return Err(()),
    }
    Ok(outer)
}

/// Rewrites one end of a TCP/UDP packet to `ip`:`port`. A later fragment has no
/// transport header: only its address changes (and the IPv4 header checksum); the
/// transport checksum, in the first fragment, was updated there for the whole datagram.
#[inline(always)]
pub fn rewrite(ctx: &XdpContext, pkt: &Packet, end: End, ip: &[u8; 16], port: [u8; 2]) -> Result<(), ()> {
    if pkt.later_fragment() {
        let diff = swap_address(ctx, pkt.l3(), pkt.v4, end, ip)?;
        if pkt.v4 {
            fix_checksum(ctx, pkt.l3() + 10, diff, false)?;
        }
        return Ok(());
    }
    rewrite_at(ctx, pkt.l3(), pkt.l4(), pkt.flow.proto, pkt.v4, end, ip, port, true)?;
    Ok(())
}

/// The packet an ICMP error quotes: where its headers are and its protocol.
pub struct Quoted {
    l3: u16,
    l4: u16,
    pub proto: u8,
}

impl Quoted {
    pub fn new(l3: usize, l4: usize, proto: u8) -> Self {
        Self { l3: l3 as u16, l4: l4 as u16, proto }
    }
    /// Offsets bounded for the verifier (see `parse::L4_MASK`).
    #[inline(always)]
    pub fn l3(&self) -> usize {
        (self.l3 & L4_MASK) as usize
    }
    #[inline(always)]
    pub fn l4(&self) -> usize {
        (self.l4 & L4_MASK) as usize
    }
}

/// Translates an ICMP error: the outer header's `end` becomes `ip`, and the quoted
/// packet's other end `ip`:`port` (the quote is the packet the error is about, which
/// went the other way). Every checksum the changes touch is updated.
#[inline(always)]
pub fn rewrite_icmp_error(ctx: &XdpContext, pkt: &Packet, quoted: &Quoted, end: End, ip: &[u8; 16], port: [u8; 2]) -> Result<(), ()> {
    let v4 = pkt.v4;
    let outer = swap_address(ctx, pkt.l3(), v4, end, ip)?;
    let mut icmp = rewrite_at(ctx, quoted.l3(), quoted.l4(), quoted.proto, v4, end.other(), ip, port, false)?;
    if v4 {
        fix_checksum(ctx, pkt.l3() + 10, outer, false)?;
    } else {
        // ICMPv6's checksum covers the outer addresses too (its pseudo-header).
        icmp += outer;
    }
    fix_checksum(ctx, pkt.l4() + 2, icmp, false)?;
    Ok(())
}
