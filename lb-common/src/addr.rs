//! The 16-byte address form of every key and value: an IPv6 address as it is, an IPv4
//! address IPv4-mapped (`::ffff:a.b.c.d`, RFC 4291 §2.5.5.2). One form for both
//! families keeps one map per table and one code path per lookup.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// `ip` in the 16-byte form.
pub const fn from_ip(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(a) => from_v4(a.octets()),
        IpAddr::V6(a) => a.octets(),
    }
}

/// The address a 16-byte form stands for (IPv4-mapped is IPv4).
pub fn to_ip(a: [u8; 16]) -> IpAddr {
    if is_v4(&a) { IpAddr::V4(Ipv4Addr::from(v4(&a))) } else { IpAddr::V6(Ipv6Addr::from(a)) }
}

/// `a` (wire order) IPv4-mapped.
#[inline(always)]
pub const fn from_v4(a: [u8; 4]) -> [u8; 16] {
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3]]
}

/// Whether `a` is an IPv4 address (IPv4-mapped).
#[inline(always)]
pub fn is_v4(a: &[u8; 16]) -> bool {
    // Byte by byte: a slice comparison would be a memcmp call, which BPF has not.
    (a[0] | a[1] | a[2] | a[3] | a[4] | a[5] | a[6] | a[7] | a[8] | a[9]) == 0 && a[10] == 0xff && a[11] == 0xff
}

/// The IPv4 address in `a` (its last 4 bytes; meaningful when [`is_v4`]).
#[inline(always)]
pub const fn v4(a: &[u8; 16]) -> [u8; 4] {
    [a[12], a[13], a[14], a[15]]
}

/// A 32-bit fold of the address for the hashing schedulers, in host order: an IPv4
/// address itself (so IPv4 hashes as IPVS's do), an IPv6 address its four words XORed
/// (IPVS's ip_vs_sh_hashkey fold).
#[inline(always)]
pub fn fold(a: &[u8; 16]) -> u32 {
    let w = |i: usize| u32::from_be_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]);
    if is_v4(a) { w(12) } else { w(0) ^ w(4) ^ w(8) ^ w(12) }
}

/// `a` with only the bits of `mask` kept. A word at a time: done byte by byte, the BPF
/// backend keeps every byte in its own register and spills most of them.
#[inline(always)]
pub fn masked(a: &[u8; 16], mask: &[u8; 16]) -> [u8; 16] {
    let mut out = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        let w = u32::from_ne_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]) & u32::from_ne_bytes([mask[i], mask[i + 1], mask[i + 2], mask[i + 3]]);
        let b = w.to_ne_bytes();
        out[i] = b[0];
        out[i + 1] = b[1];
        out[i + 2] = b[2];
        out[i + 3] = b[3];
        i += 4;
    }
    out
}

/// The 16-byte mask for an IPv4 netmask (wire order): the mapped prefix is kept whole.
#[inline(always)]
pub const fn v4_mask(m: [u8; 4]) -> [u8; 16] {
    [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, m[0], m[1], m[2], m[3]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_round_trips_through_the_mapped_form() {
        let a = from_v4([10, 0, 0, 1]);
        assert!(is_v4(&a));
        assert_eq!(v4(&a), [10, 0, 0, 1]);
        assert_eq!(fold(&a), 0x0a00_0001, "IPv4 folds to itself");
        let v6 = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        assert!(!is_v4(&v6));
        assert_eq!(fold(&v6), 0x2001_0db8 ^ 1);
    }

    #[test]
    fn ip_addresses_convert_both_ways() {
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(from_ip(v4), from_v4([10, 0, 0, 1]));
        assert_eq!(to_ip(from_ip(v4)), v4);
        assert_eq!(to_ip(from_ip(v6)), v6);
    }

    #[test]
    fn masks_keep_the_family() {
        let a = from_v4([192, 168, 7, 9]);
        assert_eq!(masked(&a, &v4_mask([255, 255, 255, 0])), from_v4([192, 168, 7, 0]));
        let v6 = [0x20, 0x01, 0x0d, 0xb8, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
        let mut slash64 = [0u8; 16];
        slash64[..8].fill(0xff);
        assert_eq!(masked(&v6, &slash64), [0x20, 0x01, 0x0d, 0xb8, 1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0]);
    }
}
