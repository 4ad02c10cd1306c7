//! Read-modify-write on shared map values. The object is built for BPF's generic CPU:
//! it has 64-bit compare-and-swap, and atomic adds whose result is unused, but no
//! fetch-and-add; a fetch-and-add is a compare-and-swap loop here.
use core::intrinsics::{AtomicOrdering, atomic_cxchg};

/// Attempts before giving up when other CPUs keep changing the word.
pub const TRIES: u32 = 8;

/// 64-bit compare-and-swap: the value found, and whether it was `old` (and is now `new`).
#[inline(always)]
pub fn cas(word: *mut u64, old: u64, new: u64) -> (u64, bool) {
    unsafe { atomic_cxchg::<u64, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(word, old, new) }
}

/// Replaces `*word` by `f(*word)` atomically unless `f` declines (None). Returns the
/// value it replaced and the value it wrote, or None if `f` declined or [`TRIES`]
/// attempts lost to other CPUs.
#[inline(always)]
pub fn update(word: *mut u64, f: impl Fn(u64) -> Option<u64>) -> Option<(u64, u64)> {
    let mut seen = unsafe { core::ptr::read_volatile(word) };
    for _ in 0..TRIES {
        let new = f(seen)?;
        let (found, swapped) = cas(word, seen, new);
        if swapped {
            return Some((seen, new));
        }
        seen = found;
    }
    None
}
