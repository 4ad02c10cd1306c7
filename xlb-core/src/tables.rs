//! Scheduling tables the controller precomputes so the fast path does O(1) work per
//! new connection, and the pool allocator that places them. Pure functions: every
//! builder takes the reals' weights (in the service's order) and returns indices into
//! that list.
use lb_common::hash::{MH_TABLE_SIZE, SH_TABLE_SIZE, mix32};

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// rr: every real with weight > 0, once, in order.
pub fn rr_table(weights: &[u32]) -> Vec<u32> {
    (0..weights.len() as u32).filter(|&i| weights[i as usize] > 0).collect()
}

/// wrr: the smooth weighted round-robin order (nginx's): over one cycle each real
/// appears weight/gcd times, spread as evenly as possible, so long-run ratios are exact
/// and no real gets a burst. Cycles longer than `max_len` are scaled down (ratios then
/// exact to within one part in `max_len`).
pub fn wrr_sequence(weights: &[u32], max_len: usize) -> Vec<u32> {
    let g = weights.iter().copied().filter(|&w| w > 0).fold(0, gcd);
    if g == 0 {
        return Vec::new();
    }
    let mut w: Vec<u64> = weights.iter().map(|&x| (x / g) as u64).collect();
    let total: u64 = w.iter().sum();
    if total > max_len as u64 {
        for x in w.iter_mut().filter(|x| **x > 0) {
            *x = (*x * max_len as u64 / total).max(1);
        }
    }
    let total: i64 = w.iter().sum::<u64>() as i64;
    let mut current = vec![0i64; w.len()];
    let mut seq = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = usize::MAX;
        for i in 0..w.len() {
            if w[i] == 0 {
                continue;
            }
            current[i] += w[i] as i64;
            if best == usize::MAX || current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        seq.push(best as u32);
    }
    seq
}

/// sh: IPVS's 256 buckets (ip_vs_sh_reassign): reals in order, each taking `weight`
/// consecutive buckets (a weight-0 real takes one, and is skipped at lookup).
pub fn sh_buckets(weights: &[u32]) -> Vec<u32> {
    if weights.is_empty() {
        return Vec::new();
    }
    let mut buckets = Vec::with_capacity(SH_TABLE_SIZE as usize);
    let (mut p, mut taken) = (0usize, 0u32);
    for _ in 0..SH_TABLE_SIZE {
        buckets.push(p as u32);
        taken += 1;
        if taken >= weights[p] {
            p = (p + 1) % weights.len();
            taken = 0;
        }
    }
    buckets
}

/// dh: IPVS's 256 buckets, reals in turn (dh ignores weights, except 0 at lookup).
pub fn dh_buckets(n: usize) -> Vec<u32> {
    if n == 0 {
        return Vec::new();
    }
    (0..SH_TABLE_SIZE).map(|i| i % n as u32).collect()
}

/// mh: a Maglev lookup table of `MH_TABLE_SIZE` slots. Each real has a permutation of
/// the slots derived from its `key` (address and port), so adding or removing one real
/// moves only about 1/N of the slots. Per round a real claims weight/gcd slots, so its
/// share follows its weight. Reals of weight 0 take no slots.
pub fn maglev_table(keys: &[u32], weights: &[u32]) -> Vec<u32> {
    maglev_table_sized(keys, weights, MH_TABLE_SIZE)
}

fn maglev_table_sized(keys: &[u32], weights: &[u32], size: u32) -> Vec<u32> {
    let g = weights.iter().copied().filter(|&w| w > 0).fold(0, gcd);
    if g == 0 {
        return Vec::new();
    }
    let m = size as u64;
    let perm: Vec<(u64, u64)> = keys
        .iter()
        .map(|&k| {
            let offset = mix32(k ^ 0x5bd1_e995) as u64 % m;
            let skip = mix32(k ^ 0x1b87_3593) as u64 % (m - 1) + 1;
            (offset, skip)
        })
        .collect();
    let turns: Vec<u32> = weights.iter().map(|&w| w / g).collect();
    let mut next = vec![0u64; keys.len()];
    let mut table = vec![u32::MAX; size as usize];
    let mut filled = 0u64;
    'fill: loop {
        for i in 0..keys.len() {
            for _ in 0..turns[i] {
                let (offset, skip) = perm[i];
                let mut slot = (offset + next[i] * skip) % m;
                while table[slot as usize] != u32::MAX {
                    next[i] += 1;
                    slot = (offset + next[i] * skip) % m;
                }
                table[slot as usize] = i as u32;
                next[i] += 1;
                filled += 1;
                if filled == m {
                    break 'fill;
                }
            }
        }
    }
    table
}

/// First-fit placement of `len` slots in a pool of `capacity`, avoiding `used`
/// (offset, length) regions. None when no gap is large enough.
pub fn allocate(used: &[(u32, u32)], len: u32, capacity: u32) -> Option<u32> {
    let mut regions: Vec<(u32, u32)> = used.iter().copied().filter(|&(_, l)| l > 0).collect();
    regions.sort_unstable();
    let mut start = 0u32;
    for (off, l) in regions {
        if off >= start && off - start >= len {
            return Some(start);
        }
        start = start.max(off + l);
    }
    (capacity - start.min(capacity) >= len).then_some(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(seq: &[u32], n: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        for &i in seq {
            c[i as usize] += 1;
        }
        c
    }

    #[test]
    fn rr_skips_quiescent_reals() {
        assert_eq!(rr_table(&[1, 0, 5, 1]), vec![0, 2, 3]);
        assert!(rr_table(&[0, 0]).is_empty());
    }

    #[test]
    fn wrr_has_exact_ratios_and_no_bursts() {
        // The seeds' -w 2 / -w 3.
        let seq = wrr_sequence(&[2, 3], 1000);
        assert_eq!(seq.len(), 5);
        assert_eq!(counts(&seq, 2), vec![2, 3]);
        assert_eq!(seq, vec![1, 0, 1, 0, 1]);
        // Large common factor: the cycle is reduced by the gcd.
        assert_eq!(wrr_sequence(&[200, 300], 1000).len(), 5);
        // No real appears twice in a row unless it outweighs the rest together.
        let seq = wrr_sequence(&[5, 4, 3, 1], 1000);
        assert_eq!(counts(&seq, 4), vec![5, 4, 3, 1]);
        for w in seq.windows(2) {
            assert_ne!(w[0], w[1], "{seq:?}");
        }
        // A dominant real is spread out: 1 of weight 1 sits in the middle of the 9s.
        let seq = wrr_sequence(&[9, 1], 1000);
        assert_eq!(seq.iter().position(|&i| i == 1), Some(5));
        assert!(wrr_sequence(&[0, 0], 10).is_empty());
        assert_eq!(counts(&wrr_sequence(&[0, 7], 10), 2), vec![0, 1]);
    }

    #[test]
    fn wrr_scales_long_cycles() {
        let seq = wrr_sequence(&[65535, 65534, 1], 4096);
        assert!(seq.len() <= 4096 + 3);
        let c = counts(&seq, 3);
        assert!(c[2] >= 1);
        assert!((c[0] as f64 / c[1] as f64 - 1.0).abs() < 0.01, "{c:?}");
    }

    #[test]
    fn sh_buckets_follow_ipvs_reassign() {
        let b = sh_buckets(&[1, 1]);
        assert_eq!(b.len(), 256);
        assert_eq!(&b[..4], &[0, 1, 0, 1]);
        let b = sh_buckets(&[3, 1]);
        assert_eq!(&b[..8], &[0, 0, 0, 1, 0, 0, 0, 1]);
        assert_eq!(counts(&b, 2), vec![192, 64]);
        // Weight 0 still takes one bucket (the lookup finds it unavailable).
        let b = sh_buckets(&[0, 1]);
        assert_eq!(&b[..4], &[0, 1, 0, 1]);
        assert!(sh_buckets(&[]).is_empty());
    }

    #[test]
    fn dh_buckets_cycle_the_reals() {
        let b = dh_buckets(3);
        assert_eq!(&b[..6], &[0, 1, 2, 0, 1, 2]);
        assert_eq!(b.len(), 256);
    }

    fn keys(n: u32) -> Vec<u32> {
        (0..n).map(|i| u32::from_be_bytes([10, 0, (i >> 8) as u8, i as u8]) ^ 80).collect()
    }

    #[test]
    fn maglev_fills_every_slot_and_honours_weights() {
        let t = maglev_table(&keys(3), &[1, 1, 2]);
        assert_eq!(t.len(), MH_TABLE_SIZE as usize);
        let c = counts(&t, 3);
        let m = MH_TABLE_SIZE as f64;
        assert!((c[0] as f64 / m - 0.25).abs() < 0.01, "{c:?}");
        assert!((c[2] as f64 / m - 0.5).abs() < 0.01, "{c:?}");
        // Weight 0 takes nothing.
        let c = counts(&maglev_table(&keys(3), &[1, 0, 1]), 3);
        assert_eq!(c[1], 0);
        assert!(maglev_table(&keys(2), &[0, 0]).is_empty());
    }

    #[test]
    fn maglev_removal_moves_about_one_nth() {
        for n in [5u32, 10, 50] {
            let k = keys(n);
            let before = maglev_table(&k, &vec![1; n as usize]);
            // Remove the last real: the others keep their indices.
            let after = maglev_table(&k[..n as usize - 1], &vec![1; n as usize - 1]);
            let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count() as f64;
            let share = moved / MH_TABLE_SIZE as f64;
            let ideal = 1.0 / n as f64;
            // Slots of the removed real must move; few others may.
            assert!(share >= ideal * 0.95 && share <= ideal * 1.35, "n={n}: moved {share:.4}, ideal {ideal:.4}");
            // No slot of a surviving real moved to another survivor's... except a few.
            let kept_moved = before.iter().zip(&after).filter(|(b, a)| **b != n - 1 && b != a).count() as f64;
            assert!(kept_moved / MH_TABLE_SIZE as f64 <= ideal * 0.35, "n={n}: {kept_moved}");
        }
    }

    #[test]
    fn maglev_small_table_is_a_permutation_fill() {
        let t = maglev_table_sized(&keys(2), &[1, 1], 7);
        assert_eq!(t.len(), 7);
        assert!(t.iter().all(|&i| i < 2));
    }

    #[test]
    fn allocation_is_first_fit_and_bounded() {
        assert_eq!(allocate(&[], 10, 100), Some(0));
        assert_eq!(allocate(&[(0, 10)], 5, 100), Some(10));
        assert_eq!(allocate(&[(0, 10), (20, 5)], 10, 100), Some(10));
        assert_eq!(allocate(&[(0, 10), (20, 5)], 11, 100), Some(25));
        assert_eq!(allocate(&[(20, 5), (0, 10)], 11, 100), Some(25));
        assert_eq!(allocate(&[(0, 95)], 10, 100), None);
        assert_eq!(allocate(&[(0, 90)], 10, 100), Some(90));
        assert_eq!(allocate(&[(5, 0)], 3, 3), Some(0));
    }
}
