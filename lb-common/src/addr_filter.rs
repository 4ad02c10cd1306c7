//! The address filter: two bitmaps the fast path tests before any hash-map lookup, so
//! a frame that is not for a VIP and not from a real server — most of what a
//! director's NIC carries — is passed after two array reads (the verifier inlines an
//! array lookup) instead of the connection, service and NAT-reply tables' lookups.
//!
//! One bit per hash of an address (16-byte form, see [`crate::addr`]): the destination
//! half holds every VIP with a frontend, the source half every real server's address
//! (a NAT real's replies come through the director). A clear bit proves the address is
//! none of them; a set bit may be another address's (the tables then decide), so the
//! filter is never wrong, only less useful when very full. The controller writes it
//! from its model: bits an address gains before the tables that name the address,
//! bits it loses after them.

/// Bits per half, log2: 65,536 bits (8 KiB) each.
pub const BITS_LOG2: u32 = 16;
/// 64-bit words per half.
pub const HALF_WORDS: u32 = 1 << (BITS_LOG2 - 6);
/// Words of the ADDR_FILTER array: the destination half, then the source half.
pub const WORDS: u32 = 2 * HALF_WORDS;
/// First word of the half for destinations (VIPs).
pub const DST: u32 = 0;
/// First word of the half for sources (real servers).
pub const SRC: u32 = HALF_WORDS;

/// The bit of `addr` within a half: the four 32-bit words of the 16-byte form folded
/// by XOR (an IPv4 address: its own 4 bytes with the mapped prefix's constant), then the
/// kernel's hash_32.
#[inline(always)]
pub fn bit(addr: &[u8; 16]) -> u32 {
    let w = |i: usize| u32::from_ne_bytes([addr[i], addr[i + 1], addr[i + 2], addr[i + 3]]);
    crate::hash::hash_32(w(0) ^ w(4) ^ w(8) ^ w(12), BITS_LOG2)
}

/// The word (within a half) and the bit mask of `addr` ([`bit`]).
#[inline(always)]
pub fn slot(addr: &[u8; 16]) -> (u32, u64) {
    let bit = bit(addr);
    (bit >> 6, 1u64 << (bit & 63))
}

/// The whole filter for these VIPs and real addresses, `WORDS` words.
pub fn build<'a>(vips: impl IntoIterator<Item = &'a [u8; 16]>, reals: impl IntoIterator<Item = &'a [u8; 16]>) -> FilterWords {
    let mut words = [0u64; WORDS as usize];
    for a in vips {
        let (w, m) = slot(a);
        words[(DST + w) as usize] |= m;
    }
    for a in reals {
        let (w, m) = slot(a);
        words[(SRC + w) as usize] |= m;
    }
    words
}

/// The filter's words, as the ADDR_FILTER array holds them.
pub type FilterWords = [u64; WORDS as usize];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_sets_one_bit_in_its_half_only() {
        let vip = crate::addr::from_v4([10, 0, 0, 100]);
        let rip = crate::addr::from_v4([192, 168, 10, 2]);
        let f = build([&vip], [&rip]);
        let (w, m) = slot(&vip);
        assert_eq!(f[(DST + w) as usize] & m, m);
        let (w, m) = slot(&rip);
        assert_eq!(f[(SRC + w) as usize] & m, m);
        assert_eq!(f.iter().map(|w| w.count_ones()).sum::<u32>(), 2);
    }

    #[test]
    fn neighbouring_ipv4_addresses_spread_over_the_words() {
        let mut seen = [false; HALF_WORDS as usize];
        for i in 0..256u32 {
            seen[slot(&crate::addr::from_v4([10, 0, (i >> 8) as u8, i as u8])).0 as usize] = true;
        }
        let words = seen.iter().filter(|s| **s).count();
        assert!(words > 200, "{words} words for 256 addresses");
    }
}
