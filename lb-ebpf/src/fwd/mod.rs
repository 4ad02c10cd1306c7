//! Forwarding methods (DR is only `send`: the frame is re-addressed, nothing else
//! changes), and sending a frame to its next hop.
pub mod nat;
pub mod tun;

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_redirect, bpf_xdp_adjust_head},
    programs::XdpContext,
};
use lb_common::NatReply;
use network_types::eth::EthHdr;

use crate::parse::{ETH_P_IP, ETH_P_IPV6, ptr_at};

/// Addresses the frame to the next hop and sends it: XDP_TX when it leaves by the NIC it
/// came in on, else XDP_REDIRECT to `ifindex`.
#[inline(always)]
pub fn send(ctx: &XdpContext, dst_mac: &[u8; 6], src_mac: &[u8; 6], ifindex: u32) -> Result<u32, ()> {
    let eth: *mut EthHdr = ptr_at(ctx, 0)?;
    unsafe {
        (*eth).dst_addr = *dst_mac;
        (*eth).src_addr = *src_mac;
    }
    Ok(out_of(ctx, ifindex))
}

/// XDP_TX when `ifindex` is the NIC the frame came in on, else XDP_REDIRECT there.
#[inline(always)]
fn out_of(ctx: &XdpContext, ifindex: u32) -> u32 {
    if ifindex == ctx.ingress_ifindex() as u32 {
        xdp_action::XDP_TX
    } else {
        (unsafe { bpf_redirect(ifindex, 0) }) as u32
    }
}

/// Sends a frame whose IP header is at `l3` back the way `back` recorded: its MACs,
/// its VLAN tags (replacing the frame's own), out of its NIC.
#[inline(always)]
pub fn send_back(ctx: &XdpContext, l3: usize, v4: bool, back: &NatReply) -> Result<u32, ()> {
    let count = back.vlan_count.min(2) as usize;
    let want = EthHdr::LEN + 4 * count;
    if want != l3 && unsafe { bpf_xdp_adjust_head(ctx.ctx, l3 as i32 - want as i32) } != 0 {
        return Err(());
    }
    let v = back.vlan;
    unsafe {
        let macs: *mut [u8; 12] = ptr_at(ctx, 0)?;
        let mut m = [0u8; 12];
        m[..6].copy_from_slice(&back.client_mac);
        m[6..].copy_from_slice(&back.local_mac);
        *macs = m;
        if count >= 1 {
            *ptr_at::<[u8; 4]>(ctx, 12)? = [v[0], v[1], v[2], v[3]];
        }
        if count == 2 {
            *ptr_at::<[u8; 4]>(ctx, 16)? = [v[4], v[5], v[6], v[7]];
        }
        // At a constant offset per case: the verifier refuses writes before a
        // variable-offset packet pointer the compiler would otherwise form.
        let ethertype = if v4 { ETH_P_IP } else { ETH_P_IPV6 }.to_be_bytes();
        let at = match count {
            0 => 12,
            1 => 16,
            _ => 20,
        };
        *ptr_at::<[u8; 2]>(ctx, at)? = ethertype;
    }
    Ok(out_of(ctx, back.ifindex))
}
