//! Hashes the hashing schedulers use, shared so the controller's tables and tests agree
//! with the fast path.

/// Buckets of the sh and dh tables (IPVS's IP_VS_SH_TAB_SIZE / IP_VS_DH_TAB_SIZE).
pub const SH_TABLE_SIZE: u32 = 256;
const SH_TABLE_BITS: u32 = 8;
/// Maglev table size (prime).
pub const MH_TABLE_SIZE: u32 = 65_537;

const GOLDEN_RATIO_32: u32 = 0x61C8_8647;

/// The kernel's hash_32.
#[inline(always)]
pub const fn hash_32(val: u32, bits: u32) -> u32 {
    val.wrapping_mul(GOLDEN_RATIO_32) >> (32 - bits)
}

/// IPVS sh bucket: `addr` and `port` in host order (port 0 unless sh-port), `offset`
/// for the fallback walk.
#[inline(always)]
pub const fn sh_bucket(addr: u32, port: u16, offset: u32) -> u32 {
    (offset.wrapping_add(hash_32((port as u32).wrapping_add(addr), SH_TABLE_BITS))) & (SH_TABLE_SIZE - 1)
}

/// IPVS dh bucket for a destination address in host order.
#[inline(always)]
pub const fn dh_bucket(addr: u32) -> u32 {
    addr.wrapping_mul(2_654_435_761) & (SH_TABLE_SIZE - 1)
}

/// A 32-bit mix (murmur3's finaliser): good avalanche, cheap in BPF.
#[inline(always)]
pub const fn mix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

/// Maglev lookup hash of a client (address host order; port 0 unless mh-port), with
/// `round` > 0 for the fallback rehash.
#[inline(always)]
pub const fn mh_hash(addr: u32, port: u16, round: u32) -> u32 {
    mix32(addr ^ mix32((port as u32) ^ round.wrapping_mul(0x9e37_79b9)))
}

/// A real server's Maglev key: its address and port (as IPVS's mh hashes both, so one
/// address with two NAT ports is two distinct reals), address and port in host order.
#[inline(always)]
pub const fn real_key(addr: u32, port: u16) -> u32 {
    mix32(addr ^ mix32(port as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_32_matches_the_kernel() {
        // hash_32(1, 8) = (0x61C88647 >> 24)
        assert_eq!(hash_32(1, 8), 0x61);
        assert_eq!(hash_32(0, 8), 0);
    }

    #[test]
    fn sh_buckets_spread_and_offset_wraps() {
        let mut seen = [false; SH_TABLE_SIZE as usize];
        for a in 0..4096u32 {
            seen[sh_bucket(0x0a00_0000 + a, 0, 0) as usize] = true;
        }
        assert!(seen.iter().filter(|s| **s).count() > 200);
        let b = sh_bucket(0x0a00_0001, 0, 0);
        assert_eq!(sh_bucket(0x0a00_0001, 0, 256), b);
        assert_eq!(sh_bucket(0x0a00_0001, 0, 1), (b + 1) & 255);
    }

    #[test]
    fn mh_hash_depends_on_port_and_round() {
        assert_ne!(mh_hash(1, 0, 0), mh_hash(1, 1, 0));
        assert_ne!(mh_hash(1, 0, 0), mh_hash(1, 0, 1));
        assert_eq!(mh_hash(7, 9, 0), mh_hash(7, 9, 0));
    }

    #[test]
    fn real_keys_differ_by_port() {
        assert_ne!(real_key(0x0a00_000b, 80), real_key(0x0a00_000b, 8080));
        assert_ne!(real_key(0x0a00_000b, 80), real_key(0x0a00_000c, 80));
    }
}
