//! Fast-path diagnostics, both about the verdict counted for a frame (`stats::count`):
//! aya-log records of the decisions an operator cares about, and
//! `xlb trace`'s per-packet events.
//!
//! Off, they cost (almost) nothing: the counted verdict is noted in the CPU's scratch
//! (one store); after the frame, the log level is aya-log's load-time global
//! `AYA_LOG_LEVEL` (read-only data: the loader sets 0, and the verifier removes every
//! log call as dead code), and the trace switch is one load of the TRACE array's
//! `enabled` word and a branch. Everything else runs in [`report`], a separate BPF
//! function called from the program's top (its frame and aya-log's would not fit under
//! the balancing chain's 512 bytes), only when one of them is on.
use aya_ebpf::helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns};
use aya_log_ebpf::{debug, info, macro_support::{Level, level_enabled}, warn};
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_common::{ConnEntry, FlowKey, TraceConfig, TraceEvent, addr, counter, trace};

use crate::{
    maps::{CONNS, NAT_REPLIES, TRACE, TRACE_EVENTS},
    scratch,
};

/// [`crate::scratch::Scratch::verdict`]: the frame opened a connection (above the counter).
const NEW_CONN_BIT: u32 = 1 << 8;

/// Called where a frame's verdict (or an event counter) is counted: `reason` is the
/// counter, `new_conn` whether the frame opened a connection. Only remembered here, in
/// this CPU's scratch: the diagnostics run once the frame's processing is over
/// ([`after_frame`]), from the program's top, where the stack has room for them (deep in
/// the balancing chain it has none).
#[inline(always)]
pub fn verdict(reason: u32, new_conn: bool) {
    if reason >= counter::VERDICTS {
        return;
    }
    if let Some(s) = scratch::get() {
        s.verdict = reason | if new_conn { NEW_CONN_BIT } else { 0 };
    }
}

/// After a frame's verdict: the one check per frame of whether anything is on.
#[inline(always)]
pub fn after_frame() {
    let tracing = match TRACE.get(0) {
        Some(c) => c.enabled != 0,
        None => false,
    };
    if tracing || level_enabled(Level::Error) {
        report();
    }
}

/// Verdicts of frames whose headers were not parsed (the scratch flow is not theirs).
#[inline(always)]
fn unparsed(reason: u32) -> bool {
    matches!(
        reason,
        counter::PASS_NOT_IP
            | counter::PASS_NOT_TCP_UDP
            | counter::PASS_TRUNCATED
            | counter::PASS_BAD_HEADER
            | counter::PASS_VLAN_STACK
            | counter::PASS_IPV6_EXTENSIONS
    )
}

/// The event and the log record of one verdict. A separate BPF function: its locals
/// (and aya-log's) get their own frame, never the balancing chain's.
#[inline(never)]
fn report() {
    let Some(s) = scratch::get() else { return };
    let reason = s.verdict & 0xff;
    let new_conn = s.verdict & NEW_CONN_BIT != 0;
    let parsed = !unparsed(reason);
    let mut flags = if new_conn { trace::NEW_CONN } else { 0 };
    // The client's flow: the frame's own, or for a NAT real's reply the flow it answers.
    let mut client: &FlowKey = &s.pkt.flow;
    if parsed {
        flags |= trace::FLOW;
        if reason == counter::TX_NAT_REPLY
            && let Some(back) = unsafe { NAT_REPLIES.get(&s.pkt.flow) }
        {
            client = &back.flow;
            flags |= trace::REPLY;
        }
    }
    let traced = match TRACE.get(0) {
        Some(cfg) => cfg.enabled != 0 && matches(cfg, parsed, client),
        None => false,
    };
    // A frame the trace's filter leaves out costs no more (a killed trace leaves the
    // switch on): no connection lookup unless a record is written.
    if !traced && !level_enabled(Level::Error) {
        return;
    }
    let conn = if parsed { unsafe { CONNS.get(client) } } else { None };
    if conn.is_some() {
        flags |= trace::CONN;
    }
    if traced {
        emit(reason, flags, client, conn);
    }
    log(reason, parsed, new_conn, client, conn);
}

/// Whether the frame passes `xlb trace`'s filters. A frame whose headers could not be
/// read matches only when there is no filter.
#[inline(always)]
fn matches(cfg: &TraceConfig, parsed: bool, client: &FlowKey) -> bool {
    if cfg.filter == 0 {
        return true;
    }
    if !parsed {
        return false;
    }
    if cfg.filter & trace::FILTER_CLIENT != 0 && client.src != cfg.client {
        return false;
    }
    if cfg.filter & trace::FILTER_SERVICE != 0 && (client.dst != cfg.vip || client.dport != cfg.port || (cfg.proto != 0 && client.proto != cfg.proto)) {
        return false;
    }
    true
}

/// Writes one event to the ring buffer (none when it is full: `xlb trace` reads too slowly).
#[inline(always)]
fn emit(reason: u32, flags: u8, client: &FlowKey, conn: Option<&ConnEntry>) {
    let Some(mut entry) = TRACE_EVENTS.reserve::<TraceEvent>(0) else { return };
    // Field by field into the ring buffer: a whole event built first would take 80
    // bytes of stack.
    let e = entry.as_mut_ptr();
    unsafe {
        (*e).time_ns = bpf_ktime_get_ns();
        (*e).flow = *client;
        (*e).reason = reason as u8;
        (*e).flags = flags;
        (*e)._pad = [0; 2];
        (*e).cpu = bpf_get_smp_processor_id();
        match conn {
            Some(c) => {
                (*e).real_ip = c.real_ip;
                (*e).real_port = c.real_port;
                (*e).state = c.state;
                (*e).forward = c.forward;
                (*e).real_id = c.real_id;
            }
            None => {
                (*e).real_ip = [0; 16];
                (*e).real_port = [0; 2];
                (*e).state = 0;
                (*e).forward = 0;
                (*e).real_id = 0;
            }
        }
    }
    entry.submit(0);
}

/// An address in the 16-byte form as the record shows it: IPv4 as IPv4.
#[inline(always)]
fn ip(a: &[u8; 16]) -> IpAddr {
    if addr::is_v4(a) { IpAddr::V4(Ipv4Addr::from(addr::v4(a))) } else { IpAddr::V6(Ipv6Addr::from(*a)) }
}

/// The aya-log records: drops (warn), passes that need the operator's attention and new
/// connections (info), every other verdict (debug). Few arguments each: every one is
/// copied into the record by the program.
#[inline(always)]
fn log(reason: u32, parsed: bool, new_conn: bool, client: &FlowKey, conn: Option<&ConnEntry>) {
    let port = u16::from_be_bytes(client.dport);
    match reason {
        counter::DROP_NO_REAL => warn!(&(), "drop_no_real: no available real server for {:i}:{} (client {:i})", ip(&client.dst), port, ip(&client.src)),
        counter::DROP_CONN_TABLE_FULL => warn!(&(), "drop_conn_table_full: new connection from {:i} to {:i}:{} dropped", ip(&client.src), ip(&client.dst), port),
        counter::DROP_NODEST => warn!(&(), "drop_nodest: the real of {:i} -> {:i}:{} is gone (expire_nodest_conn)", ip(&client.src), ip(&client.dst), port),
        counter::DROP_TOO_BIG => warn!(&(), "drop_too_big: frame from {:i} to {:i}:{} too big for the tunnel", ip(&client.src), ip(&client.dst), port),
        counter::DROP_NAT_CLASH | counter::DROP_CONN_RACE => warn!(&(), "drop (counter {}): {:i} -> {:i}:{}", reason, ip(&client.src), ip(&client.dst), port),
        counter::PASS_NEIGH_UNRESOLVED => {
            let real = match conn {
                Some(c) => ip(&c.real_ip),
                None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            };
            info!(&(), "pass_neigh_unresolved: real {:i} has no MAC yet; {:i} -> {:i}:{} passed to the kernel", real, ip(&client.src), ip(&client.dst), port)
        }
        counter::PASS_NO_ROUTE => info!(&(), "pass_no_route: no route to the tunnel real yet; {:i} -> {:i}:{} passed", ip(&client.src), ip(&client.dst), port),
        counter::PASS_BAD_HEADER | counter::PASS_TRUNCATED => info!(&(), "pass_bad_header: malformed or truncated headers (counter {}): passed to the kernel", reason),
        _ if new_conn => {
            let real = match conn {
                Some(c) => ip(&c.real_ip),
                None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            };
            info!(&(), "new connection {:i}:{} -> {:i}:{} scheduled to real {:i}", ip(&client.src), u16::from_be_bytes(client.sport), ip(&client.dst), port, real)
        }
        _ if parsed => debug!(&(), "verdict (counter {}): {:i} -> {:i}:{}", reason, ip(&client.src), ip(&client.dst), port),
        _ => debug!(&(), "verdict {} for a frame not parsed", reason),
    }
}
