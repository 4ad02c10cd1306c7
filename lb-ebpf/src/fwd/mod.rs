//! Forwarding methods (DR is only `send`: the frame is re-addressed, nothing else
//! changes), and sending a frame to its next hop.
pub mod nat;
pub mod tun;

use aya_ebpf::{bindings::xdp_action, helpers::bpf_redirect, programs::XdpContext};
use network_types::eth::EthHdr;

use crate::parse::ptr_at;

/// Addresses the frame to the next hop and sends it: XDP_TX when it leaves by the NIC it
/// came in on, else XDP_REDIRECT to `ifindex`.
#[inline(always)]
pub fn send(ctx: &XdpContext, dst_mac: &[u8; 6], src_mac: &[u8; 6], ifindex: u32) -> Result<u32, ()> {
    let eth: *mut EthHdr = ptr_at(ctx, 0)?;
    unsafe {
        (*eth).dst_addr = *dst_mac;
        (*eth).src_addr = *src_mac;
    }
    if ifindex == ctx.ingress_ifindex() as u32 {
        Ok(xdp_action::XDP_TX)
    } else {
        Ok(unsafe { bpf_redirect(ifindex, 0) } as u32)
    }
}
