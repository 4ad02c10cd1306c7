//! Whether a frame is for this host at layer 2. A NIC drops frames for another MAC
//! before XDP sees them only when it filters (a veth, a bridge port, a NIC in
//! promiscuous mode does not), and a switch floods unknown-unicast frames (the owner's
//! MAC aged out of its table, its port went down) to every port: a director then gets
//! frames addressed to another director. The kernel never hands those to IPVS:
//! eth_type_trans marks them PACKET_OTHERHOST and ip_rcv_core drops them. The fast path
//! does the same before it balances: a frame for a VIP whose destination MAC this host
//! does not own is passed (counted as `pass_other_host`), and the kernel drops it.
//!
//! Checked only once a frame is known to be for a VIP or a NAT reply: every other
//! frame pays nothing. The controller registers the NICs it attaches to (INGRESS_MACS,
//! slot `ifindex & 255`) and their macvlan uppers' MACs (EXTRA_MACS); a slot with
//! nothing registered (an object loaded without the controller) checks nothing.
use lb_common::IngressMac;

use crate::{
    maps::{EXTRA_MACS, INGRESS_MACS},
    parse::{Packet, load},
};

/// True if the frame's destination MAC is one the kernel accepts on its ingress NIC:
/// the NIC's own, a group address (broadcast, multicast: received too), or a registered
/// extra MAC; also true when nothing is registered in the NIC's slot (an object loaded
/// without the controller). A slot another NIC holds (indexes equal modulo 256) sends
/// the check to EXTRA_MACS, where the controller put this NIC's own MAC. Inlined, with
/// no locals on the stack: the EXTRA_MACS key is built only on the rare path, in a
/// frame of its own.
#[inline(always)]
pub fn for_this_host(pkt: &Packet) -> bool {
    let Some(slot) = INGRESS_MACS.get(pkt.ingress & (lb_common::INGRESS_MAC_SLOTS - 1)) else { return true };
    if slot.ifindex == pkt.ingress {
        // The MACs as a 4-byte and a 2-byte load each (map memory: misaligned access
        // allowed, see parse::load).
        let dst = pkt.dst_mac.as_ptr() as usize;
        let own = slot.mac.as_ptr() as usize;
        if unsafe { load::<u32>(dst) == load::<u32>(own) && load::<u16>(dst + 4) == load::<u16>(own + 4) } {
            return true;
        }
    } else if slot.ifindex == 0 {
        return true;
    }
    // I/G bit: a group address (broadcast or multicast).
    if pkt.dst_mac[0] & 1 != 0 {
        return true;
    }
    extra(pkt)
}

/// The EXTRA_MACS lookup: a separate BPF function, its key on a stack frame of its own.
#[inline(never)]
fn extra(pkt: &Packet) -> bool {
    let key = IngressMac { ifindex: pkt.ingress, mac: pkt.dst_mac, _pad: [0; 2] };
    unsafe { EXTRA_MACS.get(&key) }.is_some()
}

/// The verdict for a frame [`for_this_host`] refused: passed (the kernel drops it as
/// PACKET_OTHERHOST), counted.
#[inline(always)]
pub fn pass_other_host() -> u32 {
    crate::stats::count(lb_common::counter::PASS_OTHER_HOST);
    aya_ebpf::bindings::xdp_action::XDP_PASS
}
