//! The real server's side of LVS-TUN: IPIP or IPv6-in-IPv6 packets whose inner
//! destination is one of this real server's VIPs lose their outer header and go up the
//! stack as if they had arrived plain, so TUN needs no kernel tunnel (no ipip or
//! ip6_tunnel module). VLAN tags in front stay.
use aya_ebpf::{bindings::xdp_action, helpers::bpf_xdp_adjust_head, programs::XdpContext};
use lb_common::{
    addr,
    csum::{IPV6_HEADER_LEN, PROTO_IPIP, PROTO_IPV6},
    decap_counter,
};
use network_types::ip::Ipv4Hdr;

use crate::{
    maps::{DECAP_STATS, DECAP_VIPS},
    parse::{self, ETH_P_IP, ETH_P_IPV6, ptr_at},
};

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
    let (ethertype, l3, tags, tag_count) = parse::link(ctx).map_err(|_| ())?;
    // The outer header's length, and the inner destination in the 16-byte form.
    let (outer_len, inner_dst) = match ethertype {
        ETH_P_IP => {
            let outer: *const Ipv4Hdr = ptr_at(ctx, l3)?;
            let vihl = unsafe { (*outer).vihl };
            let len = ((vihl & 0x0f) as usize) * 4;
            let frag = u16::from_be_bytes(unsafe { (*outer).frags });
            if vihl >> 4 != 4 || len < Ipv4Hdr::LEN || unsafe { (*outer).proto } != PROTO_IPIP || frag & IP_MF_AND_OFFSET != 0 {
                return Ok(());
            }
            let inner: *const Ipv4Hdr = ptr_at(ctx, l3 + len)?;
            if unsafe { (*inner).vihl } >> 4 != 4 {
                return Ok(());
            }
            (len, addr::from_v4(unsafe { (*inner).dst_addr }))
        }
        ETH_P_IPV6 => {
            let outer: *const [u8; IPV6_HEADER_LEN] = ptr_at(ctx, l3)?;
            if unsafe { (*outer)[0] >> 4 != 6 || (*outer)[6] != PROTO_IPV6 } {
                return Ok(());
            }
            let inner: *const [u8; IPV6_HEADER_LEN] = ptr_at(ctx, l3 + IPV6_HEADER_LEN)?;
            if unsafe { (*inner)[0] >> 4 } != 6 {
                return Ok(());
            }
            let h = unsafe { &*inner };
            let mut dst = [0u8; 16];
            let mut i = 0;
            while i < 16 {
                dst[i] = h[24 + i];
                i += 1;
            }
            (IPV6_HEADER_LEN, dst)
        }
        _ => return Ok(()),
    };
    if unsafe { DECAP_VIPS.get(&inner_dst) }.is_none() {
        count(decap_counter::PASS_NOT_FOR_VIP);
        return Ok(());
    }
    // The link-layer header moves up to just before the inner packet; the front goes.
    // Read before any write (with QinQ it is longer than an IPv4 header, so the two
    // places overlap), written in pieces at constant offsets: MACs, tags, ethertype.
    unsafe {
        let macs = *ptr_at::<[u8; 12]>(ctx, 0)?;
        *ptr_at::<[u8; 12]>(ctx, outer_len)? = macs;
        if tag_count >= 1 {
            *ptr_at::<[u8; 4]>(ctx, outer_len + 12)? = [tags[0], tags[1], tags[2], tags[3]];
        }
        if tag_count >= 2 {
            *ptr_at::<[u8; 4]>(ctx, outer_len + 16)? = [tags[4], tags[5], tags[6], tags[7]];
        }
        let at = match tag_count {
            0 => 12,
            1 => 16,
            _ => 20,
        };
        *ptr_at::<[u8; 2]>(ctx, outer_len + at)? = ethertype.to_be_bytes();
    }
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, outer_len as i32) } != 0 {
        return Err(());
    }
    count(decap_counter::DECAPSULATED);
    Ok(())
}
