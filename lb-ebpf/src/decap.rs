//! The real server's side of LVS-TUN: IPIP packets whose inner destination is one of
//! this real server's VIPs lose their outer header and go up the stack as if they had
//! arrived plain, so TUN needs no kernel tunnel (no ipip module).
use aya_ebpf::{bindings::xdp_action, helpers::bpf_xdp_adjust_head, programs::XdpContext};
use lb_common::{csum::PROTO_IPIP, decap_counter};
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

use crate::{
    maps::{DECAP_STATS, DECAP_VIPS},
    parse::{L3, ptr_at},
};

const ETH_P_IP: u16 = 0x0800;
const IP_MF_AND_OFFSET: u16 = 0x3fff;

#[inline(always)]
fn count(index: u32) {
    if let Some(c) = DECAP_STATS.get_ptr_mut(index) {
        unsafe { *c += 1 };
    }
}

/// The verdict for one frame: XDP_PASS always (decapsulated or untouched).
#[inline(always)]
pub fn decapsulate(ctx: &XdpContext) -> u32 {
    let _ = try_decapsulate(ctx);
    xdp_action::XDP_PASS
}

fn try_decapsulate(ctx: &XdpContext) -> Result<(), ()> {
    let eth: *const EthHdr = ptr_at(ctx, 0)?;
    if u16::from_be(unsafe { (*eth).ether_type }) != ETH_P_IP {
        return Ok(());
    }
    let outer: *const Ipv4Hdr = ptr_at(ctx, L3)?;
    let vihl = unsafe { (*outer).vihl };
    let outer_len = ((vihl & 0x0f) as usize) * 4;
    let frag = u16::from_be_bytes(unsafe { (*outer).frags });
    if vihl >> 4 != 4 || outer_len < Ipv4Hdr::LEN || unsafe { (*outer).proto } != PROTO_IPIP || frag & IP_MF_AND_OFFSET != 0 {
        return Ok(());
    }
    let inner: *const Ipv4Hdr = ptr_at(ctx, L3 + outer_len)?;
    if unsafe { (*inner).vihl } >> 4 != 4 || unsafe { DECAP_VIPS.get(&(*inner).dst_addr) }.is_none() {
        count(decap_counter::PASS_NOT_FOR_VIP);
        return Ok(());
    }
    // The Ethernet header moves up to just before the inner packet; the front goes.
    let eth_copy = unsafe { *eth };
    unsafe { *ptr_at::<EthHdr>(ctx, outer_len)? = eth_copy };
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, outer_len as i32) } != 0 {
        return Err(());
    }
    count(decap_counter::DECAPSULATED);
    Ok(())
}
