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

use lb_common::{ConnEntry, FlowKey, TraceConfig, TraceEvent, addr, counter, trace};

use crate::{
    maps::{CONNS, HALF_OPEN, HALF_OPEN_REPLIES, NAT_REPLIES, TRACE, TRACE_EVENTS},
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
            && let Some(back) = unsafe { NAT_REPLIES.get(&s.pkt.flow).or_else(|| HALF_OPEN_REPLIES.get(&s.pkt.flow)) }
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
    // A SYN's connection is half-open (HALF_OPEN) until the client's handshake ends.
    let conn = if parsed { unsafe { CONNS.get(client).or_else(|| HALF_OPEN.get(client)) } } else { None };
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

/// An IPv4 address in the 16-byte form as the word aya-log prints as IPv4 (`{:i}` on a
/// u32). A register value: an `IpAddr` built on the stack would be stored at an odd
/// offset (its payload follows a one-byte tag), which the verifier refuses now that the
/// object allows misaligned access.
#[inline(always)]
fn v4_word(a: &[u8; 16]) -> u32 {
    u32::from_be_bytes(addr::v4(a))
}

/// One record in the flow's own family: addresses written `[expr]` (a `&[u8; 16]`) are
/// shown as IPv4 (a u32) for an IPv4 flow and as IPv6 (the 16 bytes) otherwise.
macro_rules! by_family {
    ($v4:expr, $level:ident, $fmt:literal $(, $arg:tt)*) => {
        if $v4 {
            $level!(&(), $fmt $(, by_family!(@4 $arg))*)
        } else {
            $level!(&(), $fmt $(, by_family!(@6 $arg))*)
        }
    };
    (@4 [$a:expr]) => { v4_word($a) };
    (@6 [$a:expr]) => { *$a };
    (@4 $e:tt) => { $e };
    (@6 $e:tt) => { $e };
}

/// The aya-log records: drops (warn), passes that need the operator's attention and new
/// connections (info), every other verdict (debug). Few arguments each: every one is
/// copied into the record by the program.
#[inline(always)]
fn log(reason: u32, parsed: bool, new_conn: bool, client: &FlowKey, conn: Option<&ConnEntry>) {
    let port = u16::from_be_bytes(client.dport);
    let sport = u16::from_be_bytes(client.sport);
    let v4 = addr::is_v4(&client.src);
    // The real's address (none known: the unspecified address of the flow's family).
    const NONE: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0];
    let real: &[u8; 16] = match conn {
        Some(c) => &c.real_ip,
        None => &NONE,
    };
    match reason {
        counter::DROP_NO_REAL => by_family!(v4, warn, "drop_no_real: no available real server for {:i}:{} (client {:i})", [&client.dst], port, [&client.src]),
        counter::TX_ICMP_UNREACHABLE => by_family!(
            v4,
            warn,
            "tx_icmp_unreachable: no available real server for {:i}:{} (client {:i} answered with port unreachable)",
            [&client.dst],
            port,
            [&client.src]
        ),
        counter::DROP_CONN_TABLE_FULL => by_family!(v4, warn, "drop_conn_table_full: new connection from {:i} to {:i}:{} dropped", [&client.src], [&client.dst], port),
        counter::DROP_NODEST => by_family!(v4, warn, "drop_nodest: the real of {:i} -> {:i}:{} is gone (expire_nodest_conn)", [&client.src], [&client.dst], port),
        counter::DROP_TOO_BIG => by_family!(v4, warn, "drop_too_big: frame from {:i} to {:i}:{} too big for the tunnel", [&client.src], [&client.dst], port),
        counter::DROP_NAT_CLASH | counter::DROP_CONN_RACE => by_family!(v4, warn, "drop (counter {}): {:i} -> {:i}:{}", reason, [&client.src], [&client.dst], port),
        counter::PASS_NEIGH_UNRESOLVED => {
            by_family!(v4, info, "pass_neigh_unresolved: real {:i} has no MAC yet; {:i} -> {:i}:{} passed to the kernel", [real], [&client.src], [&client.dst], port)
        }
        counter::PASS_NO_ROUTE => by_family!(v4, info, "pass_no_route: no route to the tunnel real yet; {:i} -> {:i}:{} passed", [&client.src], [&client.dst], port),
        counter::PASS_BAD_HEADER | counter::PASS_TRUNCATED => info!(&(), "pass_bad_header: malformed or truncated headers (counter {}): passed to the kernel", reason),
        _ if new_conn => {
            by_family!(v4, info, "new connection {:i}:{} -> {:i}:{} scheduled to real {:i}", [&client.src], sport, [&client.dst], port, [real])
        }
        _ if parsed => by_family!(v4, debug, "verdict (counter {}): {:i} -> {:i}:{}", reason, [&client.src], [&client.dst], port),
        _ => debug!(&(), "verdict {} for a frame not parsed", reason),
    }
}
