//! xlb's XDP fast path: Ethernet/IPv4/TCP/UDP → service lookup → connection table,
//! persistence template or scheduler → forward to the real server. Anything not for a
//! VIP is passed untouched.
#![no_std]
#![no_main]
// atomic_xadd: core's atomics have no read-modify-write on the BPF target.
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod bench;
mod conntrack;
mod fwd;
mod maps;
mod parse;
mod persist;
mod sched;
mod stats;

use aya_ebpf::{bindings::xdp_action, helpers::bpf_ktime_get_ns, macros::xdp, programs::XdpContext};
use lb_common::{FlowKey, PROTO_TCP, PROTO_UDP, ServiceKey, Settings, counter, svc_flags, tcp};

use crate::{
    conntrack::Lookup,
    maps::{CONNS, SERVICE_INFO, SERVICES, SETTINGS},
};

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

/// Expires one connection for the controller's sweep, run through BPF_PROG_TEST_RUN
/// with the FlowKey as the "frame": removing the entry and its count in the kernel keeps
/// the shared counts exact. XDP_PASS: expired and removed; XDP_DROP: kept.
#[xdp]
pub fn xlb_expire(ctx: XdpContext) -> u32 {
    let Ok(key) = parse::ptr_at::<FlowKey>(&ctx, 0) else { return xdp_action::XDP_ABORTED };
    let flow = unsafe { *key };
    let Some(settings) = SETTINGS.get(0) else { return xdp_action::XDP_ABORTED };
    let Some(c) = (unsafe { CONNS.get(&flow) }) else { return xdp_action::XDP_DROP };
    let c = *c;
    let now = unsafe { bpf_ktime_get_ns() };
    if now.saturating_sub(c.last_seen_ns) > conntrack::timeout_ns(c.state, settings) && conntrack::expire(&flow, &c) {
        xdp_action::XDP_PASS
    } else {
        xdp_action::XDP_DROP
    }
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
    let Some(&service_id) = (unsafe { SERVICES.get(&key) }) else {
        stats::count(counter::PASS_NOT_VIP);
        return Ok(xdp_action::XDP_PASS);
    };
    let Some(svc) = (unsafe { SERVICE_INFO.get(&service_id) }) else {
        stats::count(counter::PASS_NOT_VIP);
        return Ok(xdp_action::XDP_PASS);
    };
    let svc = *svc;
    let default_settings = Settings::default();
    let settings = SETTINGS.get(0).unwrap_or(&default_settings);
    let now = unsafe { bpf_ktime_get_ns() };
    let flow = FlowKey {
        src: pkt.src,
        dst: pkt.dst,
        sport: pkt.sport,
        dport: pkt.dport,
        proto: pkt.proto,
        _pad: [0; 3],
    };
    let persistent = svc.flags & svc_flags::PERSISTENT != 0;
    let one_packet = svc.flags & svc_flags::ONE_PACKET != 0 && pkt.proto == PROTO_UDP;

    let lookup = if one_packet { Lookup::Miss } else { conntrack::lookup(&flow, pkt.tcp_flags, svc.id, settings, now) };
    let (real_id, real, new_conn) = match lookup {
        Lookup::Hit(real_id, real) => {
            if persistent {
                persist::touch(&svc, pkt.src, now);
            }
            (real_id, real, false)
        }
        Lookup::NoDest => {
            stats::count(counter::DROP_NODEST);
            return Ok(xdp_action::XDP_DROP);
        }
        Lookup::Miss => {
            // Only a SYN opens a TCP connection (unless sloppy_tcp); anything else goes
            // to the kernel, which holds the VIP and answers with a reset.
            let syn_only = pkt.tcp_flags & (tcp::FLAG_SYN | tcp::FLAG_ACK | tcp::FLAG_RST) == tcp::FLAG_SYN;
            if pkt.proto == PROTO_TCP && !syn_only && settings.sloppy_tcp == 0 {
                stats::count(counter::PASS_NO_CONN);
                return Ok(xdp_action::XDP_PASS);
            }
            let templated = if persistent { persist::lookup(&svc, pkt.src, now) } else { None };
            let chosen = match templated {
                Some(found) => Some(found),
                None => sched::schedule(&svc, &flow),
            };
            let Some((real_id, real)) = chosen else {
                stats::count(counter::DROP_NO_REAL);
                return Ok(xdp_action::XDP_DROP);
            };
            if !one_packet && !conntrack::create(&flow, pkt.tcp_flags, svc.id, real_id, &real, now) {
                stats::count(counter::DROP_CONN_TABLE_FULL);
                return Ok(xdp_action::XDP_DROP);
            }
            if persistent && templated.is_none() {
                persist::remember(&svc, pkt.src, real_id, &real, now);
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
