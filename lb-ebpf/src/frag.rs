//! Fragments (Cilium's approach, bpf/lib/ipfrag.h, with no reassembly): a datagram's
//! first fragment carries the ports and is balanced as a whole packet is; its ports
//! and the real it went to are recorded under (source, destination, IP id, protocol),
//! and the later fragments, which carry no ports, follow that record. A later fragment
//! that arrives before its first (no record) goes to the kernel, counted pass_fragment.
use lb_common::{FragEntry, FragKey};

use crate::{maps::FRAGS, parse::Packet};

#[inline(always)]
fn key(pkt: &Packet) -> FragKey {
    FragKey { src: pkt.flow.src, dst: pkt.flow.dst, id: pkt.frag_id, proto: pkt.flow.proto, _pad: [0; 3] }
}

/// Records a first fragment's datagram: its ports (set here) with the rest of `entry`
/// (the real it went to, or `to_real` 0 for a NAT real's reply), which the caller
/// fills in scratch memory. A separate BPF function, its key on its own stack.
#[inline(never)]
pub fn remember(pkt: &Packet, entry: &mut FragEntry) {
    entry.sport = pkt.flow.sport;
    entry.dport = pkt.flow.dport;
    // Any flag: a datagram id the sender reuses replaces the old record.
    let _ = FRAGS.insert(&key(pkt), entry, 0);
}

/// A later fragment: fills in its datagram's ports from the record into `pkt` and
/// copies the record to `out`. False when there is none. A separate BPF function:
/// its key stays off the entry point's stack, which every call chain includes.
#[inline(never)]
pub fn follow(pkt: &mut Packet, out: &mut FragEntry) -> bool {
    let Some(entry) = (unsafe { FRAGS.get(&key(pkt)) }) else { return false };
    *out = *entry;
    pkt.flow.sport = out.sport;
    pkt.flow.dport = out.dport;
    true
}
