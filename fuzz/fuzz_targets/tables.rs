//! The scheduling tables the controller precomputes (xlb-core/src/tables.rs).
//!
//! Properties:
//! - mh (Maglev): every one of the MH_TABLE_SIZE slots is filled with a real of weight
//!   > 0; per round each real claims weight/gcd slots, so after k full rounds of T slots
//!   real i holds between floor(M/T)·tᵢ and ceil(M/T)·tᵢ slots (shares proportional to
//!   the weights within one round); all weights 0: an empty table;
//! - wrr: over one cycle each real appears exactly weight/gcd times (exact ratios) when
//!   the cycle fits `max_len`; scaled down otherwise, every real of weight > 0 still
//!   appears, as many times as its scaled weight; weight 0 never;
//! - rr: the reals of weight > 0, once each, in order;
//! - sh: SH_TABLE_SIZE buckets of valid reals, each real's buckets consecutive, in order;
//!   dh: SH_TABLE_SIZE buckets, reals in turn;
//! - allocate: a placement lies inside the pool and overlaps no used region; None only
//!   when no gap of that length exists.
#![no_main]

use arbitrary::Arbitrary;
use lb_common::hash::{MH_TABLE_SIZE, SH_TABLE_SIZE};
use xlb_core::tables;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    /// (key, weight) per real; weights up to ipvsadm's 65535.
    reals: Vec<(u32, u16)>,
    max_len: u16,
    regions: Vec<(u16, u16)>,
    len: u16,
    capacity: u16,
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn counts(table: &[u32], n: usize) -> Vec<u64> {
    let mut c = vec![0u64; n];
    for &i in table {
        c[i as usize] += 1;
    }
    c
}

fuzz_target!(|input: Input| {
    // A service has few reals; Maglev builds 65537 slots per call.
    let reals = &input.reals[..input.reals.len().min(64)];
    let keys: Vec<u32> = reals.iter().map(|r| r.0).collect();
    let weights: Vec<u32> = reals.iter().map(|r| u32::from(r.1)).collect();
    let n = weights.len();
    let g = weights.iter().map(|&w| u64::from(w)).filter(|&w| w > 0).fold(0, gcd);

    // mh
    let mh = tables::maglev_table(&keys, &weights);
    if g == 0 {
        assert!(mh.is_empty(), "no real of weight > 0: no table");
    } else {
        assert_eq!(mh.len(), MH_TABLE_SIZE as usize);
        assert!(mh.iter().all(|&i| (i as usize) < n && weights[i as usize] > 0), "every slot holds a real of weight > 0");
        let c = counts(&mh, n);
        let turns: Vec<u64> = weights.iter().map(|&w| u64::from(w) / g).collect();
        let t: u64 = turns.iter().sum();
        let m = u64::from(MH_TABLE_SIZE);
        for i in 0..n {
            let (lo, hi) = (m / t * turns[i], m.div_ceil(t) * turns[i]);
            assert!((lo..=hi).contains(&c[i]), "real {i} (weight {}) holds {} slots, not within {lo}..={hi}", weights[i], c[i]);
        }
    }

    // wrr
    let max_len = usize::from(input.max_len).max(1);
    let seq = tables::wrr_sequence(&weights, max_len);
    if g == 0 {
        assert!(seq.is_empty());
    } else {
        let c = counts(&seq, n);
        let total: u64 = weights.iter().map(|&w| u64::from(w) / g).sum();
        for i in 0..n {
            let w = u64::from(weights[i]) / g;
            let expected = if total <= max_len as u64 {
                w
            } else if w == 0 {
                0
            } else {
                (w * max_len as u64 / total).max(1)
            };
            assert_eq!(c[i], expected, "real {i} of weights {weights:?} (max_len {max_len})");
        }
        if total <= max_len as u64 {
            assert_eq!(seq.len() as u64, total, "one cycle of exact ratios");
        }
    }

    // rr
    let rr = tables::rr_table(&weights);
    let expected: Vec<u32> = (0..n as u32).filter(|&i| weights[i as usize] > 0).collect();
    assert_eq!(rr, expected);

    // sh / dh
    let sh = tables::sh_buckets(&weights);
    let dh = tables::dh_buckets(n);
    if n == 0 {
        assert!(sh.is_empty() && dh.is_empty());
    } else {
        assert_eq!(sh.len(), SH_TABLE_SIZE as usize);
        assert!(sh.iter().all(|&i| (i as usize) < n));
        assert_eq!(sh[0], 0, "sh starts with the first real");
        for pair in sh.windows(2) {
            assert!(pair[1] == pair[0] || pair[1] as usize == (pair[0] as usize + 1) % n, "sh takes reals in order: {pair:?}");
        }
        assert_eq!(dh.len(), SH_TABLE_SIZE as usize);
        assert!(dh.iter().enumerate().all(|(b, &i)| i as usize == b % n));
    }

    // allocate: regions the pool has placed lie inside it.
    let capacity = u32::from(input.capacity);
    let used: Vec<(u32, u32)> = input
        .regions
        .iter()
        .take(32)
        .map(|&(off, len)| {
            let off = u32::from(off).min(capacity);
            (off, u32::from(len).min(capacity - off))
        })
        .collect();
    let len = u32::from(input.len);
    let overlaps = |start: u32| used.iter().any(|&(o, l)| l > 0 && start < o + l && o < start + len);
    match tables::allocate(&used, len, capacity) {
        Some(start) => {
            assert!(start + len <= capacity, "placed at {start}+{len} past {capacity}");
            assert!(!overlaps(start), "placed at {start}+{len} over {used:?}");
        }
        None => {
            assert!((0..=capacity.saturating_sub(len)).all(|s| len > capacity || overlaps(s)), "a gap of {len} exists in {used:?}");
        }
    }
});
