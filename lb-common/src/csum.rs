//! Internet checksums (RFC 1071), their incremental update (RFC 1624), and the headers
//! the fast path builds (the IPIP outer header, ICMP errors). Pure functions, so the host
//! tests check them against checksums computed from scratch.
//!
//! A checksum value here is the header field read big-endian (`u16::from_be_bytes`).

/// Folds a 32-bit one's-complement sum to 16 bits (two folds always suffice).
#[inline(always)]
pub const fn fold(sum: u32) -> u16 {
    let s = (sum & 0xffff) + (sum >> 16);
    ((s & 0xffff) + (s >> 16)) as u16
}

/// The one's-complement sum of `bytes` as big-endian 16-bit words (an odd last byte is
/// padded with zero), not folded, not complemented.
#[inline(always)]
pub fn sum_words(bytes: &[u8]) -> u32 {
    let mut sum = 0u32;
    let mut i = 0;
    while i + 1 < bytes.len() {
        sum += u16::from_be_bytes([bytes[i], bytes[i + 1]]) as u32;
        i += 2;
    }
    if i < bytes.len() {
        sum += (bytes[i] as u32) << 8;
    }
    sum
}

/// The RFC 1071 checksum of `bytes` (what goes in the header field).
#[inline(always)]
pub fn checksum(bytes: &[u8]) -> u16 {
    !fold(sum_words(bytes))
}

/// The one's-complement difference a 16-bit word's change from `old` to `new` makes to
/// a sum (RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'), this is ~m + m'). Differences add
/// up; [`apply`] puts their total into a checksum, so one pass over a changed field
/// serves every checksum covering it.
#[inline(always)]
pub const fn diff16(old: u16, new: u16) -> u32 {
    (!old) as u32 + new as u32
}

/// A checksum after changes whose differences ([`diff16`]) total `diff` (at most a few
/// thousand words' worth: the total stays far below u32::MAX).
#[inline(always)]
pub const fn apply(check: u16, diff: u32) -> u16 {
    !fold(fold((!check) as u32 + diff) as u32)
}

/// A UDP checksum after an update: 0 means "no checksum" on the wire, so a computed 0
/// is sent as 0xffff (RFC 768).
#[inline(always)]
pub const fn udp_nonzero(check: u16) -> u16 {
    if check == 0 { 0xffff } else { check }
}

pub const IPV4_HEADER_LEN: usize = 20;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_IPIP: u8 = 4;
/// The IPv4 "don't fragment" bit of the flags/fragment-offset field.
pub const IP_DF: u16 = 0x4000;
/// TTL of headers the director originates (the IPIP outer header, ICMP errors).
pub const DEFAULT_TTL: u8 = 64;

/// The fields of an IPv4 header [`ipv4_header`] builds (no options, TTL [`DEFAULT_TTL`]).
pub struct Ipv4Fields {
    pub tos: u8,
    pub total_len: u16,
    pub id: u16,
    /// Flags and fragment offset (for example [`IP_DF`]).
    pub frag: u16,
    pub proto: u8,
    pub src: [u8; 4],
    pub dst: [u8; 4],
}

/// Writes an IPv4 header without options, with its checksum, into `h`. The builders
/// write in place (into the frame, in the fast path): a header built on the BPF stack
/// and copied costs stack room the call chain has not.
#[inline(always)]
pub fn ipv4_header(h: &mut [u8; IPV4_HEADER_LEN], f: &Ipv4Fields) {
    let (len, id, frag) = (f.total_len.to_be_bytes(), f.id.to_be_bytes(), f.frag.to_be_bytes());
    h[0] = 0x45;
    h[1] = f.tos;
    h[2] = len[0];
    h[3] = len[1];
    h[4] = id[0];
    h[5] = id[1];
    h[6] = frag[0];
    h[7] = frag[1];
    h[8] = DEFAULT_TTL;
    h[9] = f.proto;
    h[10] = 0;
    h[11] = 0;
    let mut i = 0;
    while i < 4 {
        h[12 + i] = f.src[i];
        h[16 + i] = f.dst[i];
        i += 1;
    }
    let c = checksum(h).to_be_bytes();
    h[10] = c[0];
    h[11] = c[1];
}

pub const IPV6_HEADER_LEN: usize = 40;
pub const PROTO_IPV6: u8 = 41;
pub const PROTO_ICMPV6: u8 = 58;

/// Writes an IPv6 header (flow label 0, hop limit [`DEFAULT_TTL`]) into `h`.
#[inline(always)]
pub fn ipv6_header(h: &mut [u8; IPV6_HEADER_LEN], traffic_class: u8, payload_len: u16, next_header: u8, src: &[u8; 16], dst: &[u8; 16]) {
    let len = payload_len.to_be_bytes();
    h[0] = 0x60 | (traffic_class >> 4);
    h[1] = traffic_class << 4;
    h[2] = 0;
    h[3] = 0;
    h[4] = len[0];
    h[5] = len[1];
    h[6] = next_header;
    h[7] = DEFAULT_TTL;
    let mut i = 0;
    while i < 16 {
        h[8 + i] = src[i];
        h[24 + i] = dst[i];
        i += 1;
    }
}

pub const ICMP_HEADER_LEN: usize = 8;
/// Bytes of the offending packet an ICMP error built by the fast path quotes: enough for
/// an IPv4 header with the longest options and 8 bytes of its transport header (what a
/// host needs to find the socket), and a multiple of 4.
pub const ICMP_QUOTE_LEN: usize = 128;

/// The quote of an ICMP port unreachable the fast path sends (see
/// [`icmp_error`]): an IPv4 header without options and 8 bytes of the transport
/// header, RFC 792's minimum (a packet with options is not answered).
pub const PORT_UNREACHABLE_QUOTE_V4: usize = IPV4_HEADER_LEN + 8;
/// ICMPv6's: the IPv6 header and the 8 bytes after it (RFC 4443 2.4 (c) allows less
/// than the most that fits).
pub const PORT_UNREACHABLE_QUOTE_V6: usize = IPV6_HEADER_LEN + 8;
/// ICMP destination unreachable / port unreachable (type 3 code 3), the rest zero.
pub const ICMP_PORT_UNREACHABLE: [u8; ICMP_HEADER_LEN] = [3, 3, 0, 0, 0, 0, 0, 0];
/// ICMPv6 destination unreachable / port unreachable (type 1 code 4), the rest zero.
pub const ICMPV6_PORT_UNREACHABLE: [u8; ICMP_HEADER_LEN] = [1, 4, 0, 0, 0, 0, 0, 0];

/// Writes the ICMP header `head` (type, code, zero checksum, the rest) into `h`,
/// checksummed over itself and a quote whose [`sum_words`] is `quote_sum`.
#[inline(always)]
pub fn icmp_error(h: &mut [u8; ICMP_HEADER_LEN], head: [u8; ICMP_HEADER_LEN], quote_sum: u32) {
    *h = head;
    let c = (!fold(sum_words(h) + fold(quote_sum) as u32)).to_be_bytes();
    h[2] = c[0];
    h[3] = c[1];
}

/// Writes the ICMPv6 header `head` into `h`, checksummed over the pseudo-header
/// (`src` → `dst`, the message's length: the header and `quote_len` bytes of quote), itself
/// and a quote whose [`sum_words`] is `quote_sum`.
#[inline(always)]
pub fn icmp6_error(h: &mut [u8; ICMP_HEADER_LEN], head: [u8; ICMP_HEADER_LEN], quote_len: usize, src: &[u8; 16], dst: &[u8; 16], quote_sum: u32) {
    *h = head;
    let len = (ICMP_HEADER_LEN + quote_len) as u32;
    let pseudo = sum_words(src) + sum_words(dst) + (len >> 16) + (len & 0xffff) + PROTO_ICMPV6 as u32;
    let c = (!fold(fold(pseudo) as u32 + sum_words(h) + fold(quote_sum) as u32)).to_be_bytes();
    h[2] = c[0];
    h[3] = c[1];
}

/// Writes ICMP destination unreachable / fragmentation needed (type 3 code 4) with the
/// next-hop MTU into `h`, checksummed over itself and a quote whose [`sum_words`] is
/// `quote_sum`.
#[inline(always)]
pub fn icmp_frag_needed(h: &mut [u8; ICMP_HEADER_LEN], mtu: u16, quote_sum: u32) {
    icmp_error(h, frag_needed_head(mtu), quote_sum);
}

/// ICMP fragmentation needed's header (type 3 code 4, RFC 1191's next-hop MTU), checksum zero.
#[inline(always)]
pub fn frag_needed_head(mtu: u16) -> [u8; ICMP_HEADER_LEN] {
    let m = mtu.to_be_bytes();
    [3, 4, 0, 0, 0, 0, m[0], m[1]]
}

/// ICMPv6 packet-too-big's header (type 2, RFC 4443 3.2's MTU), checksum zero.
#[inline(always)]
pub fn packet_too_big_head(mtu: u32) -> [u8; ICMP_HEADER_LEN] {
    let m = mtu.to_be_bytes();
    [2, 0, 0, 0, m[0], m[1], m[2], m[3]]
}

/// Writes ICMPv6 packet-too-big (type 2) with `mtu` into `h`, checksummed over the
/// pseudo-header (`src` → `dst`, the message's length) and a quote of
/// [`ICMP_QUOTE_LEN`] bytes whose [`sum_words`] is `quote_sum`.
#[inline(always)]
pub fn icmp6_packet_too_big(h: &mut [u8; ICMP_HEADER_LEN], mtu: u32, src: &[u8; 16], dst: &[u8; 16], quote_sum: u32) {
    icmp6_error(h, packet_too_big_head(mtu), ICMP_QUOTE_LEN, src, dst, quote_sum);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The IPv4 header of the usual worked example (UDP 192.168.0.1 → 192.168.0.199),
    /// checksum 0xb861.
    const HEADER: [u8; 20] = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00,
        0xc7,
    ];

    #[test]
    fn checksum_of_a_known_header() {
        let mut h = HEADER;
        h[10] = 0;
        h[11] = 0;
        assert_eq!(checksum(&h), 0xb861);
        assert_eq!(checksum(&HEADER), 0, "a header with its checksum sums to zero");
        assert_eq!(sum_words(&[0x01]), 0x0100, "an odd byte is the high half of a word");
    }

    #[test]
    fn incremental_update_matches_recomputing() {
        // Change the destination address of HEADER, as NAT does, both ways.
        let mut state = 0x1234_5678u32;
        for _ in 0..2000 {
            let mut h = HEADER;
            let mut new = [0u8; 4];
            for b in &mut new {
                state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                *b = (state >> 16) as u8;
            }
            let old: [u8; 4] = h[16..20].try_into().unwrap();
            let diff = diff16(u16::from_be_bytes([old[0], old[1]]), u16::from_be_bytes([new[0], new[1]]))
                + diff16(u16::from_be_bytes([old[2], old[3]]), u16::from_be_bytes([new[2], new[3]]));
            let updated = apply(u16::from_be_bytes([h[10], h[11]]), diff);
            h[16..20].copy_from_slice(&new);
            h[10] = 0;
            h[11] = 0;
            assert_eq!(updated, checksum(&h), "to {new:?}");
        }
    }

    #[test]
    fn update_handles_the_ones_complement_corner() {
        // RFC 1624's example: a field going from 0x5555 to 0x3285 with checksum 0xdd2f
        // gives 0x0000 by eqn. 3 (eqn. 2 gave the wrong 0xffff).
        assert_eq!(apply(0xdd2f, diff16(0x5555, 0x3285)), 0x0000);
        assert_eq!(udp_nonzero(0), 0xffff);
        assert_eq!(udp_nonzero(7), 7);
    }

    #[test]
    fn built_ipv4_header_is_valid() {
        let mut h = [0xaa; IPV4_HEADER_LEN];
        ipv4_header(&mut h, &Ipv4Fields {
            tos: 0x10,
            total_len: 1500,
            id: 0xbeef,
            frag: IP_DF,
            proto: PROTO_IPIP,
            src: [10, 0, 0, 2],
            dst: [10, 0, 0, 11],
        });
        assert_eq!(checksum(&h), 0);
        assert_eq!(h[0], 0x45);
        assert_eq!(u16::from_be_bytes([h[2], h[3]]), 1500);
        assert_eq!(u16::from_be_bytes([h[4], h[5]]), 0xbeef);
        assert_eq!(u16::from_be_bytes([h[6], h[7]]), IP_DF);
        assert_eq!((h[1], h[8], h[9]), (0x10, DEFAULT_TTL, PROTO_IPIP));
        assert_eq!(h[12..16], [10, 0, 0, 2]);
        assert_eq!(h[16..20], [10, 0, 0, 11]);
    }

    #[test]
    fn differences_add_up_to_what_updates_give() {
        let old = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x64];
        let new = [0xfd, 0, 0, 0x98, 0, 0, 0, 0, 0, 0, 0, 0, 0xde, 0xad, 0, 0x11];
        let mut diff = 0;
        for i in (0..16).step_by(2) {
            diff += diff16(u16::from_be_bytes([old[i], old[i + 1]]), u16::from_be_bytes([new[i], new[i + 1]]));
        }
        diff += diff16(80, 8080);
        let data = |a: &[u8; 16], port: u16| [&a[..], &port.to_be_bytes()[..], &[0xab, 0xcd]].concat();
        assert_eq!(apply(checksum(&data(&old, 80)), diff), checksum(&data(&new, 8080)));
    }

    #[test]
    fn ipv6_header_and_packet_too_big() {
        let (src, dst) = ([0xfd; 16], [0x20; 16]);
        let mut h = [0xaa; IPV6_HEADER_LEN];
        ipv6_header(&mut h, 0xb8, 1240, PROTO_IPV6, &src, &dst);
        assert_eq!(h[..8], [0x6b, 0x80, 0, 0, 0x04, 0xd8, PROTO_IPV6, DEFAULT_TTL]);
        assert_eq!((&h[8..24], &h[24..40]), (&src[..], &dst[..]));
        let mut message = [0u8; ICMP_HEADER_LEN + ICMP_QUOTE_LEN];
        for (i, b) in message[ICMP_HEADER_LEN..].iter_mut().enumerate() {
            *b = (i * 13 + 1) as u8;
        }
        let mut icmp = [0xaa; ICMP_HEADER_LEN];
        icmp6_packet_too_big(&mut icmp, 1460, &src, &dst, sum_words(&message[ICMP_HEADER_LEN..]));
        message[..ICMP_HEADER_LEN].copy_from_slice(&icmp);
        assert_eq!(icmp[..2], [2, 0]);
        assert_eq!(u32::from_be_bytes(icmp[4..8].try_into().unwrap()), 1460);
        let mut pseudo = [&src[..], &dst[..]].concat();
        pseudo.extend_from_slice(&(message.len() as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, PROTO_ICMPV6]);
        pseudo.extend_from_slice(&message);
        assert_eq!(checksum(&pseudo), 0);
    }

    #[test]
    fn icmp_checksum_covers_header_and_quote() {
        let mut message = [0u8; ICMP_HEADER_LEN + ICMP_QUOTE_LEN];
        for (i, b) in message[ICMP_HEADER_LEN..].iter_mut().enumerate() {
            *b = (i * 7 + 3) as u8;
        }
        let mut h = [0xaa; ICMP_HEADER_LEN];
        icmp_frag_needed(&mut h, 1480, sum_words(&message[ICMP_HEADER_LEN..]));
        assert_eq!(h[..2], [3, 4]);
        assert_eq!(u16::from_be_bytes([h[6], h[7]]), 1480);
        message[..ICMP_HEADER_LEN].copy_from_slice(&h);
        assert_eq!(checksum(&message), 0);
    }
}
