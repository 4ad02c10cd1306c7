//! Per-CPU working memory for the structures of one frame's processing too large for
//! BPF's 512-byte stack: functions down the call chain take it by reference instead of
//! copying. XDP processes one frame at a time on a CPU, so one slot per CPU serves.
use lb_common::{ConnEntry, FlowKey, FragEntry, NatReply};

use crate::{icmp::Inner, maps::SCRATCH, parse::Packet};

pub struct Scratch {
    /// The frame being processed.
    pub pkt: Packet,
    /// A new connection's entry and, for NAT, its reply entry, built before they are
    /// stored; or the connection an ICMP error is about.
    pub conn: ConnEntry,
    pub back: NatReply,
    /// An ICMP error's quoted packet, and its flow turned around.
    pub inner: Inner,
    pub turned: FlowKey,
    /// A later fragment's record of its datagram (see `frag`).
    pub frag: FragEntry,
    /// `conntrack::coarse_now`'s value and the tick (jiffies) it was read in.
    pub clock_tick: u64,
    pub clock_ns: u64,
    /// The ICMP rate limit's credit and when it was last counted (`icmp_allowed`).
    pub icmp_credit_ns: u64,
    pub icmp_stamp_ns: u64,
    /// The frame's verdict counter, for the diagnostics (see `diag`).
    #[cfg(feature = "diagnostics")]
    pub verdict: u32,
}

/// This CPU's scratch memory (an array's only slot: always there).
#[inline(always)]
pub fn get() -> Option<&'static mut Scratch> {
    SCRATCH.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}
