//! lb-common's pure packet logic, the code the XDP fast path runs, checked on the host
//! against computations from scratch.
//!
//! Properties:
//! - `csum::checksum` equals RFC 1071's definition computed naively (one's-complement
//!   sum of big-endian words in 64 bits, odd byte padded); a buffer with its checksum
//!   written in sums to zero;
//! - RFC 1624 incremental updates (`diff16` + `apply`, several words at once) give a
//!   checksum that verifies over the changed buffer;
//! - the headers the fast path builds (`ipv4_header`, `icmp_frag_needed`,
//!   `icmp6_packet_too_big`) carry checksums that verify;
//! - addresses: the 16-byte form round-trips through `IpAddr`, `is_v4` is exactly
//!   "IPv4-mapped" (RFC 4291 §2.5.5.2), `masked` is a bytewise AND, `fold` is IPVS's;
//! - TCP states: every transition stays a TCP state, flags without RST/SYN/FIN/ACK keep
//!   the state, and RST wins over SYN over FIN over ACK (ip_vs_proto_tcp.c).
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use arbitrary::Arbitrary;
use lb_common::{addr, csum, tcp};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    bytes: Vec<u8>,
    /// (word index, new value) changes for the incremental update.
    changes: Vec<(u16, u16)>,
    a: [u8; 16],
    mask: [u8; 16],
    v4: bool,
    tos: u8,
    total_len: u16,
    id: u16,
    frag: u16,
    proto: u8,
    mtu: u32,
    quote: [u8; 32],
    tcp: Vec<(u8, u8)>,
}

/// RFC 1071 §4.1, as written there: a wide sum, then folded until it fits.
fn reference_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u64 = bytes.chunks(2).map(|c| u64::from(c[0]) << 8 | u64::from(*c.get(1).unwrap_or(&0))).sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn verifies(bytes: &[u8]) -> bool {
    reference_checksum(bytes) == 0
}

fuzz_target!(|input: Input| {
    let Input { mut bytes, changes, a, mask, v4, tos, total_len, id, frag, proto, mtu, quote, tcp: packets } = input;
    bytes.truncate(4096);

    // Checksums against the reference.
    assert_eq!(csum::checksum(&bytes), reference_checksum(&bytes), "checksum of {bytes:02x?}");
    assert_eq!(!csum::fold(csum::sum_words(&bytes)), reference_checksum(&bytes));

    // A buffer with its checksum in an (even-aligned) field verifies; an incremental
    // update of some of its words keeps it verifying.
    if bytes.len() >= 2 {
        bytes[0] = 0;
        bytes[1] = 0;
        let c = csum::checksum(&bytes).to_be_bytes();
        bytes[..2].copy_from_slice(&c);
        assert!(verifies(&bytes), "a written checksum verifies");
        let words = bytes.len() / 2;
        if words > 1 {
            let mut check = u16::from_be_bytes([bytes[0], bytes[1]]);
            let mut diff = 0u32;
            for &(i, new) in changes.iter().take(64) {
                let i = 1 + usize::from(i) % (words - 1);
                let old = u16::from_be_bytes([bytes[2 * i], bytes[2 * i + 1]]);
                diff += csum::diff16(old, new);
                bytes[2 * i..2 * i + 2].copy_from_slice(&new.to_be_bytes());
            }
            check = csum::apply(check, diff);
            bytes[..2].copy_from_slice(&check.to_be_bytes());
            if bytes[2..].iter().all(|&b| b == 0) {
                // Data summing to +0 happens only when every word is zero, which no
                // header the fast path updates is (version, protocol): RFC 1624 eqn. 3
                // then gives -0's checksum, 0x0000, for +0's 0xffff (RFC 1624 §3-§5).
                assert!(check == 0 || check == 0xffff, "all-zero data: checksum {check:#06x}");
            } else {
                assert!(verifies(&bytes), "an RFC 1624 update verifies");
            }
        }
    }

    // Headers the fast path originates.
    let (src4, dst4) = ([a[0], a[1], a[2], a[3]], [a[4], a[5], a[6], a[7]]);
    let mut h = [0u8; csum::IPV4_HEADER_LEN];
    csum::ipv4_header(&mut h, &csum::Ipv4Fields { tos, total_len, id, frag, proto, src: src4, dst: dst4 });
    assert!(verifies(&h), "IPv4 header {h:02x?}");
    assert_eq!((h[0], h[9], &h[12..16], &h[16..20]), (0x45, proto, &src4[..], &dst4[..]));
    let mut icmp = [0u8; csum::ICMP_HEADER_LEN];
    csum::icmp_frag_needed(&mut icmp, mtu as u16, csum::sum_words(&quote));
    assert!(verifies(&[&icmp[..], &quote[..]].concat()), "ICMP fragmentation needed");
    let mut quote6 = [0u8; csum::ICMP_QUOTE_LEN];
    quote6[..quote.len()].copy_from_slice(&quote);
    csum::icmp6_packet_too_big(&mut icmp, mtu, &a, &mask, csum::sum_words(&quote6));
    let len = (csum::ICMP_HEADER_LEN + csum::ICMP_QUOTE_LEN) as u32;
    // RFC 8200 §8.1's pseudo-header: source, destination, upper-layer length, next header.
    let pseudo = [&a[..], &mask[..], &len.to_be_bytes(), &[0, 0, 0, csum::PROTO_ICMPV6], &icmp[..], &quote6[..]].concat();
    assert!(verifies(&pseudo), "ICMPv6 packet too big");

    // Addresses.
    let mapped = a[..10].iter().all(|&b| b == 0) && a[10] == 0xff && a[11] == 0xff;
    assert_eq!(addr::is_v4(&a), mapped);
    let ip = addr::to_ip(a);
    assert_eq!(addr::from_ip(ip), a, "the 16-byte form round-trips");
    assert_eq!(ip.is_ipv4(), mapped);
    let v4addr = IpAddr::V4(Ipv4Addr::from(src4));
    assert_eq!(addr::to_ip(addr::from_ip(v4addr)), v4addr);
    assert_eq!(addr::to_ip(addr::from_ip(IpAddr::V6(Ipv6Addr::from(a)))), ip);
    let and: Vec<u8> = a.iter().zip(&mask).map(|(x, m)| x & m).collect();
    assert_eq!(&addr::masked(&a, &mask)[..], &and[..]);
    let word = |i: usize| u32::from_be_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]);
    let fold = if mapped { word(12) } else { word(0) ^ word(4) ^ word(8) ^ word(12) };
    assert_eq!(addr::fold(&a), fold);
    if v4 {
        let m = [mask[0], mask[1], mask[2], mask[3]];
        let kept = addr::masked(&addr::from_v4(src4), &addr::v4_mask(m));
        assert!(addr::is_v4(&kept), "an IPv4 mask keeps the mapped prefix");
        assert_eq!(addr::v4(&kept), [src4[0] & m[0], src4[1] & m[1], src4[2] & m[2], src4[3] & m[3]]);
    }

    // TCP state transitions from every reachable state.
    let mut state = tcp::NONE;
    for &(dir, flags) in packets.iter().take(256) {
        let dir = dir % 3;
        let next = tcp::next_state(dir, state, flags);
        assert!((next as usize) < tcp::STATE_COUNT, "state {next} after {state} {flags:#x}");
        let events = flags & (tcp::FLAG_RST | tcp::FLAG_SYN | tcp::FLAG_FIN | tcp::FLAG_ACK);
        if events == 0 {
            assert_eq!(next, state, "no event keeps the state");
        }
        // Priority: the highest event decides alone.
        let top = [tcp::FLAG_RST, tcp::FLAG_SYN, tcp::FLAG_FIN, tcp::FLAG_ACK].into_iter().find(|f| events & f != 0);
        if let Some(top) = top {
            assert_eq!(next, tcp::next_state(dir, state, top), "{flags:#x} acts as its first event");
        }
        assert_eq!(tcp::is_active(next), next == tcp::ESTABLISHED);
        state = next;
    }
    // Out-of-range inputs keep the state instead of reading past the tables.
    assert_eq!(tcp::next_state(3, state, tcp::FLAG_SYN), state);
    assert_eq!(tcp::next_state(0, tcp::UDP, tcp::FLAG_SYN), tcp::UDP);
});
