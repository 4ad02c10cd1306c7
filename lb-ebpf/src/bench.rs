//! Benchmark-only programs (`cargo xtask bench`, fast-path section), loaded only by the
//! bench. BPF_PROG_TEST_RUN runs a program `repeat` times on one buffer and never restores
//! it, so a path that rewrites the frame would see its own output from iteration 2 on.
//! `xlb_bench_balance` restores the original frame from BENCH_FRAME before every
//! `balance()`; `xlb_bench_restore` does exactly the same restoring and the same tail call
//! (into a bare XDP_DROP), so the bench subtracts both. Two bare programs give the scale.
use aya_ebpf::{
    bindings::xdp_action,
    helpers::generated::{bpf_xdp_adjust_head, bpf_xdp_store_bytes},
    macros::{map, xdp},
    maps::{Array, HashMap, LruHashMap, ProgramArray},
    programs::XdpContext,
};
use lb_common::{
    ConnEntry, FlowKey,
    bench::{BALANCER_SLOT, BenchFrame, FRAME_MAX, RESTORE_SLOT},
};
use network_types::eth::EthHdr;

use crate::parse::ptr_at;

#[map]
static BENCH_FRAME: Array<BenchFrame> = Array::with_max_entries(1, 0);

/// Slot [`BALANCER_SLOT`]: the balancer timed (xlb's `xlb_balance`, or Katran's), which
/// the wrapper tail-calls: a tail call replaces the wrapper's frame, so the balancer keeps
/// its whole 512-byte stack budget. Slot [`RESTORE_SLOT`]: a bare XDP_DROP, which the
/// restore-only program tail-calls, so the tail call is subtracted with the restoring.
#[map]
static BENCH_BALANCER: ProgramArray = ProgramArray::with_max_entries(2, 0);

#[xdp]
pub fn xlb_bench_drop(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_DROP
}

#[xdp]
pub fn xlb_bench_swap_tx(ctx: XdpContext) -> u32 {
    let Ok(eth) = ptr_at::<EthHdr>(&ctx, 0) else { return xdp_action::XDP_ABORTED };
    unsafe {
        let dst = (*eth).dst_addr;
        (*eth).dst_addr = (*eth).src_addr;
        (*eth).src_addr = dst;
    }
    xdp_action::XDP_TX
}

/// The wrapper without the balancer: the same restoring and the same one tail call, into
/// a bare XDP_DROP.
#[xdp]
pub fn xlb_bench_restore(ctx: XdpContext) -> u32 {
    if restore(&ctx).is_err() {
        return xdp_action::XDP_ABORTED;
    }
    unsafe { BENCH_BALANCER.tail_call(&ctx, RESTORE_SLOT) };
    // Reached only if the slot is empty.
    xdp_action::XDP_ABORTED
}

#[xdp]
pub fn xlb_bench_balance(ctx: XdpContext) -> u32 {
    if restore(&ctx).is_err() {
        return xdp_action::XDP_ABORTED;
    }
    unsafe { BENCH_BALANCER.tail_call(&ctx, BALANCER_SLOT) };
    // Reached only if the slot is empty: the bench checks every iteration's path.
    xdp_action::XDP_ABORTED
}

/// Puts the original frame back: its length (a path that encapsulated grew the frame at
/// its head, so the head gives the bytes back) and its bytes, then the varied field.
/// Every step runs on every iteration, changed or not, so the cost is the same for
/// every path and for the restore-only program. Not inlined: its stack must not add to
/// the balancer's call chain (the verifier allows 512 bytes over a whole chain).
#[inline(never)]
fn restore(ctx: &XdpContext) -> Result<(), ()> {
    let frame = BENCH_FRAME.get_ptr_mut(0).ok_or(())?;
    let frame = unsafe { &mut *frame };
    let result = restore_from(ctx, frame);
    if result.is_err() {
        frame.restore_failures += 1;
    }
    frame.iterations = frame.iterations.wrapping_add(1);
    result
}

#[inline(always)]
fn restore_from(ctx: &XdpContext, frame: &mut BenchFrame) -> Result<(), ()> {
    let len = frame.len as usize;
    if len < EthHdr::LEN || len > FRAME_MAX {
        return Err(());
    }
    let current = ctx.data_end() - ctx.data();
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, current as i32 - len as i32) } != 0 {
        return Err(());
    }
    // Bounded in [1, FRAME_MAX] in a form the verifier follows.
    let copy = ((len - 1) & (FRAME_MAX - 1)) + 1;
    let bytes = frame.bytes.as_mut_ptr().cast();
    if unsafe { bpf_xdp_store_bytes(ctx.ctx, 0, bytes, copy as u32) } != 0 {
        return Err(());
    }
    let offset = frame.vary_offset;
    if offset != 0 {
        let step = match frame.vary_count {
            0 => frame.iterations,
            count => frame.iterations % count,
        };
        let mut value = frame.vary_base.wrapping_add(step).to_be_bytes();
        if unsafe { bpf_xdp_store_bytes(ctx.ctx, offset, value.as_mut_ptr().cast(), 4) } != 0 {
            return Err(());
        }
    }
    Ok(())
}

/// The kernel primitives' tables (see `lb_common::bench::FLOW_LOOKUP_PROGRAM`): one entry
/// each in the object, resized by the bench at load.
#[map]
static BENCH_FLOWS: HashMap<FlowKey, ConnEntry> = HashMap::with_max_entries(1, 0);
#[map]
static BENCH_COMPACT: HashMap<[u64; 2], ConnEntry> = HashMap::with_max_entries(1, 0);
#[map]
static BENCH_LRU: LruHashMap<FlowKey, ConnEntry> = LruHashMap::with_max_entries(1, 0);

/// A stack value at an 8-byte boundary (the kernel reads keys from the stack).
#[repr(C, align(8))]
struct Aligned<T>(T);

/// The frame's first bytes as a `T`, copied to the stack as a key is.
#[inline(always)]
fn key_of<T: Copy>(ctx: &XdpContext) -> Option<Aligned<T>> {
    let p = ptr_at::<T>(ctx, 0).ok()?;
    Some(Aligned(unsafe { core::ptr::read_unaligned(p) }))
}

/// One flow-table lookup: XDP_DROP on a hit, XDP_PASS on a miss.
#[xdp]
pub fn xlb_bench_flow_lookup(ctx: XdpContext) -> u32 {
    let Some(key) = key_of::<FlowKey>(&ctx) else { return xdp_action::XDP_ABORTED };
    if unsafe { BENCH_FLOWS.get(&key.0) }.is_some() { xdp_action::XDP_DROP } else { xdp_action::XDP_PASS }
}

/// One lookup of a 16-byte key: XDP_DROP on a hit, XDP_PASS on a miss.
#[xdp]
pub fn xlb_bench_compact_lookup(ctx: XdpContext) -> u32 {
    let Some(key) = key_of::<[u64; 2]>(&ctx) else { return xdp_action::XDP_ABORTED };
    if unsafe { BENCH_COMPACT.get(&key.0) }.is_some() { xdp_action::XDP_DROP } else { xdp_action::XDP_PASS }
}

/// One LRU insert of the frame's flow key (the wrapper makes every iteration's key new):
/// XDP_DROP when inserted.
#[xdp]
pub fn xlb_bench_lru_insert(ctx: XdpContext) -> u32 {
    let Some(key) = key_of::<FlowKey>(&ctx) else { return xdp_action::XDP_ABORTED };
    let entry = Aligned(ConnEntry::default());
    match BENCH_LRU.insert(&key.0, &entry.0, 0) {
        Ok(()) => xdp_action::XDP_DROP,
        Err(_) => xdp_action::XDP_ABORTED,
    }
}
