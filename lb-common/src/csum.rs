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

/// RFC 1624 eqn. 3: the checksum after one 16-bit word of the covered data changes
/// from `old` to `new`: HC' = ~(~HC + ~m + m').
#[inline(always)]
pub const fn update16(check: u16, old: u16, new: u16) -> u16 {
    !fold((!check) as u32 + (!old) as u32 + new as u32)
}

/// As [`update16`] for a 4-byte field (an IPv4 address) given in wire order.
#[inline(always)]
pub const fn update32(check: u16, old: [u8; 4], new: [u8; 4]) -> u16 {
    let c = update16(check, u16::from_be_bytes([old[0], old[1]]), u16::from_be_bytes([new[0], new[1]]));
    update16(c, u16::from_be_bytes([old[2], old[3]]), u16::from_be_bytes([new[2], new[3]]))
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

/// An IPv4 header without options, with its checksum.
#[inline(always)]
pub fn ipv4_header(f: &Ipv4Fields) -> [u8; IPV4_HEADER_LEN] {
    let (len, id, frag, src, dst) = (f.total_len.to_be_bytes(), f.id.to_be_bytes(), f.frag.to_be_bytes(), f.src, f.dst);
    let mut h = [
        0x45, f.tos, len[0], len[1], id[0], id[1], frag[0], frag[1], DEFAULT_TTL, f.proto, 0, 0, src[0], src[1], src[2],
        src[3], dst[0], dst[1], dst[2], dst[3],
    ];
    let c = checksum(&h).to_be_bytes();
    h[10] = c[0];
    h[11] = c[1];
    h
}

pub const ICMP_HEADER_LEN: usize = 8;
/// Bytes of the offending packet an ICMP error built by the fast path quotes: enough for
/// an IPv4 header with the longest options and 8 bytes of its transport header (what a
/// host needs to find the socket), and a multiple of 4.
pub const ICMP_QUOTE_LEN: usize = 128;

/// ICMP destination unreachable / fragmentation needed (type 3 code 4) with the next-hop
/// MTU, checksummed over itself and a quote whose [`sum_words`] is `quote_sum`.
#[inline(always)]
pub fn icmp_frag_needed(mtu: u16, quote_sum: u32) -> [u8; ICMP_HEADER_LEN] {
    let m = mtu.to_be_bytes();
    let mut h = [3, 4, 0, 0, 0, 0, m[0], m[1]];
    let c = (!fold(sum_words(&h) + fold(quote_sum) as u32)).to_be_bytes();
    h[2] = c[0];
    h[3] = c[1];
    h
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
            let updated = update32(u16::from_be_bytes([h[10], h[11]]), old, new);
            h[16..20].copy_from_slice(&new);
            h[10] = 0;
            h[11] = 0;
            assert_eq!(updated, checksum(&h), "to {new:?}");
        }
    }

    #[test]
    fn update_handles_the_ones_complement_corner() {
        // RFC 1624's example: a field going from 0x5555 to 0x3285 with checksum 0xdd2f.
        assert_eq!(update16(0xdd2f, 0x5555, 0x3285), 0x0000);
        assert_eq!(udp_nonzero(0), 0xffff);
        assert_eq!(udp_nonzero(7), 7);
    }

    #[test]
    fn built_ipv4_header_is_valid() {
        let h = ipv4_header(&Ipv4Fields {
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
    fn icmp_checksum_covers_header_and_quote() {
        let mut message = [0u8; ICMP_HEADER_LEN + ICMP_QUOTE_LEN];
        for (i, b) in message[ICMP_HEADER_LEN..].iter_mut().enumerate() {
            *b = (i * 7 + 3) as u8;
        }
        let h = icmp_frag_needed(1480, sum_words(&message[ICMP_HEADER_LEN..]));
        assert_eq!(h[..2], [3, 4]);
        assert_eq!(u16::from_be_bytes([h[6], h[7]]), 1480);
        message[..ICMP_HEADER_LEN].copy_from_slice(&h);
        assert_eq!(checksum(&message), 0);
    }
}
