//! xlb's XDP fast path: Ethernet/IPv4/TCP/UDP → service lookup → connection table or
//! scheduler → forward to the real server. Anything not for a VIP is passed untouched.
#![no_std]
#![no_main]

mod bench;
mod conntrack;
mod fwd;
mod maps;
mod parse;
mod sched;
mod stats;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use lb_common::{FlowKey, ServiceKey, counter};

use crate::maps::SERVICES;

/// The load balancer, attached to the director's NIC.
#[xdp]
pub fn xlb_balance(ctx: XdpContext) -> u32 {
    balance(&ctx)
}

/// The whole balancing decision for one frame: the verdict, with the frame rewritten
/// when it is forwarded. Wrappers (benchmarks) call this too.
#[inline(always)]
pub fn balance(ctx: &XdpContext) -> u32 {
    try_balance(ctx).unwrap_or(xdp_action::XDP_PASS)
}

/// XDP_PASS stub for the peer of a veth: native XDP_TX on a veth is only delivered
/// when the peer has an XDP program.
#[xdp]
pub fn xlb_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

fn try_balance(ctx: &XdpContext) -> Result<u32, ()> {
    let pkt = match parse::parse_ipv4_flow(ctx) {
        Ok(pkt) => pkt,
        Err(reason) => {
            stats::count(reason);
            return Ok(xdp_action::XDP_PASS);
        }
    };
    let key = ServiceKey { vip: pkt.dst, port: pkt.dport, proto: pkt.proto, _pad: 0 };
    let Some(svc) = (unsafe { SERVICES.get(&key) }) else {
        stats::count(counter::PASS_NOT_VIP);
        return Ok(xdp_action::XDP_PASS);
    };
    let svc = *svc;
    let flow = FlowKey {
        src: pkt.src,
        dst: pkt.dst,
        sport: pkt.sport,
        dport: pkt.dport,
        proto: pkt.proto,
        _pad: [0; 3],
    };
    let (real_id, real, new_conn) = match conntrack::lookup(&flow, &svc) {
        Some((real_id, real)) => (real_id, real, false),
        None => {
            let Some((real_id, real)) = sched::round_robin(&svc) else {
                stats::count(counter::DROP_NO_REAL);
                return Ok(xdp_action::XDP_DROP);
            };
            if !conntrack::insert(&flow, real_id, &real) {
                stats::count(counter::CONN_INSERT_FAILED);
            }
            (real_id, real, true)
        }
    };
    if !real.mac_valid() {
        // The kernel holds the VIP and will answer or drop; the controller resolves the MAC.
        stats::count(counter::PASS_NEIGH_UNRESOLVED);
        return Ok(xdp_action::XDP_PASS);
    }
    fwd::dr::rewrite(ctx, &real.mac)?;
    stats::count_real(real_id, (ctx.data_end() - ctx.data()) as u64, new_conn);
    stats::count(counter::TX_DR);
    Ok(xdp_action::XDP_TX)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
