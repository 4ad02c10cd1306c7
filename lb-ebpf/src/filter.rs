//! The address filter's test (see `lb_common::addr_filter`, whose `slot` this is, with
//! word loads).
use lb_common::{addr_filter, hash::hash_32};

use crate::{maps::ADDR_FILTER, parse::load};

/// Whether `addr`'s bit is set in the half starting at word `half`: false proves the
/// address is in no table of that half.
#[inline(always)]
pub fn holds(half: u32, addr: &[u8; 16]) -> bool {
    let at = addr.as_ptr() as usize;
    // SAFETY: 16 bytes of map memory (the scratch's flow); unaligned loads are allowed there.
    let folded = unsafe { load::<u32>(at) ^ load::<u32>(at + 4) ^ load::<u32>(at + 8) ^ load::<u32>(at + 12) };
    let bit = hash_32(folded, addr_filter::BITS_LOG2);
    match ADDR_FILTER.get(half + (bit >> 6)) {
        Some(word) => *word & (1u64 << (bit & 63)) != 0,
        None => true,
    }
}
