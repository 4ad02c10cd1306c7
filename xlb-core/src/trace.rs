//! Fast-path diagnostics on the controller's side: the fast path's aya-log records
//! forwarded to tracing (`xlb run/daemon --fastpath-log LEVEL`), and `xlb trace`, which
//! switches the fast path's per-packet events on through the pinned TRACE map and
//! prints them from the TRACE_EVENTS ring buffer until it is stopped.
//!
//! The events need no reload: the fast path checks TRACE's `enabled` word once per
//! frame, where the frame's verdict is counted. A trace that is killed (SIGKILL) leaves
//! it on; the fast path then compares each frame with the filter and writes the matching
//! ones into a ring buffer nobody reads (a full ring buffer takes no more); the next
//! `xlb trace` refuses to start until `xlb trace --off` clears it.
use std::{
    fmt::Write as _,
    net::{IpAddr, SocketAddr},
    os::fd::AsRawFd,
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail};
use aya::{
    Ebpf,
    maps::{Array, Map, MapData, RingBuf},
};
use lb_common::{PROTO_TCP, PROTO_UDP, TraceConfig, TraceEvent, addr, counter, map_names, tcp, trace};
use serde::Serialize;

/// Forwards the fast path's aya-log records (the AYA_LOGS ring buffer of `ebpf`) to
/// tracing, target `fastpath`, from a thread of their own, for as long as the process runs.
pub fn forward_fastpath_log(ebpf: &mut Ebpf) -> Result<()> {
    let mut logger = aya_log::EbpfLogger::init_with_logger(ebpf, TracingLog).context("reading the fast path's log ring buffer (AYA_LOGS)")?;
    std::thread::Builder::new().name("fastpath-log".into()).spawn(move || {
        loop {
            wait_readable(logger.as_raw_fd(), Duration::from_millis(500));
            logger.flush();
        }
    })?;
    Ok(())
}

/// A `log::Log` that hands aya-log's records to tracing at their own level.
pub struct TracingLog;

impl log::Log for TracingLog {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let message = record.args();
        match record.level() {
            // "fastpath:" in the text too: the daemon's log shows no targets.
            log::Level::Error => tracing::error!(target: "fastpath", "fastpath: {message}"),
            log::Level::Warn => tracing::warn!(target: "fastpath", "fastpath: {message}"),
            log::Level::Info => tracing::info!(target: "fastpath", "fastpath: {message}"),
            log::Level::Debug => tracing::debug!(target: "fastpath", "fastpath: {message}"),
            log::Level::Trace => tracing::trace!(target: "fastpath", "fastpath: {message}"),
        }
    }

    fn flush(&self) {}
}

/// Waits until `fd` is readable or `timeout` passes (poll(2)); an interrupted wait
/// returns early, which the callers' loops absorb.
fn wait_readable(fd: i32, timeout: Duration) {
    let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as libc::c_int) };
}

/// Which frames `xlb trace` reports: all, or those of one client and/or one service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub client: Option<IpAddr>,
    /// VIP:port (either protocol).
    pub service: Option<SocketAddr>,
}

impl Filter {
    /// The TRACE map's entry that switches tracing on with this filter.
    pub fn config(&self) -> TraceConfig {
        let mut c = TraceConfig { enabled: 1, ..Default::default() };
        if let Some(ip) = self.client {
            c.filter |= trace::FILTER_CLIENT;
            c.client = addr::from_ip(ip);
        }
        if let Some(s) = self.service {
            c.filter |= trace::FILTER_SERVICE;
            c.vip = addr::from_ip(s.ip());
            c.port = s.port().to_be_bytes();
        }
        c
    }
}

/// A running trace: the fast path's switch and its event ring buffer.
pub struct Session {
    config: Array<MapData, TraceConfig>,
    events: RingBuf<MapData>,
    on: bool,
}

impl Session {
    /// From the maps a running `xlb run` / `xlb daemon` pinned in `pin_dir`.
    pub fn open(pin_dir: &Path) -> Result<Self> {
        let open = |name: &str| -> Result<Map> {
            let path = pin_dir.join(name);
            if !path.exists() {
                bail!(
                    "{} is not pinned: no fast path runs from {} (start `xlb run` or `xlb daemon`; an xlb older than `xlb trace` pins no TRACE map)",
                    path.display(),
                    pin_dir.display()
                );
            }
            let data = MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
            Ok(Map::from_map_data(data)?)
        };
        Self::from_maps(open(map_names::TRACE)?, open(map_names::TRACE_EVENTS)?)
    }

    /// From a loaded object's maps (taken out of it: tests).
    pub fn take(ebpf: &mut Ebpf) -> Result<Self> {
        let mut take = |name: &str| ebpf.take_map(name).with_context(|| format!("the object has no map {name}"));
        let config = take(map_names::TRACE)?;
        Self::from_maps(config, take(map_names::TRACE_EVENTS)?)
    }

    fn from_maps(config: Map, events: Map) -> Result<Self> {
        Ok(Session { config: config.try_into()?, events: events.try_into()?, on: false })
    }

    /// The switch as it is now.
    pub fn current(&self) -> Result<TraceConfig> {
        Ok(self.config.get(&0, 0)?)
    }

    /// Switches the events on for `filter`. Refused when they are on already: another
    /// `xlb trace` runs (or one was killed; [`Session::off`] clears it).
    pub fn start(&mut self, filter: &Filter) -> Result<()> {
        if self.current()?.enabled != 0 {
            bail!("tracing is already on: another `xlb trace` runs, or one was killed (`xlb trace --off` switches it off)");
        }
        // Events a previous trace left unread are not this trace's.
        while self.events.next().is_some() {}
        self.config.set(0, filter.config(), 0)?;
        self.on = true;
        Ok(())
    }

    /// Switches the events off.
    pub fn off(&mut self) -> Result<()> {
        self.config.set(0, TraceConfig::default(), 0)?;
        self.on = false;
        Ok(())
    }

    /// The next event already written, if any.
    pub fn next_event(&mut self) -> Option<TraceEvent> {
        let item = self.events.next()?;
        (item.len() >= size_of::<TraceEvent>()).then(|| unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<TraceEvent>()) })
    }

    /// Waits up to `timeout` for an event to be written.
    pub fn wait(&self, timeout: Duration) {
        wait_readable(self.events.as_raw_fd(), timeout);
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.on {
            let _ = self.off();
        }
    }
}

/// One event as `xlb trace` prints it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Line {
    /// Wall-clock time (UTC, RFC 3339, microseconds).
    pub time: String,
    /// CLOCK_MONOTONIC nanoseconds, as the kernel stamped the event.
    pub time_ns: u64,
    pub cpu: u32,
    /// tcp, udp, icmp, icmpv6 or the protocol number; None for a frame whose headers
    /// could not be read.
    pub proto: Option<String>,
    /// The client's address:port (a NAT reply's: the client it goes back to).
    pub client: Option<String>,
    /// The VIP:port the client addressed.
    pub service: Option<String>,
    /// The connection's real server address:port.
    pub real: Option<String>,
    /// tx (sent out), pass (to the kernel) or drop.
    pub verdict: &'static str,
    /// The verdict counter's name (as `xlb counters` lists it).
    pub reason: &'static str,
    /// The connection's state after this frame (ipvsadm -L -c's names).
    pub state: Option<&'static str>,
    /// The frame opened the connection.
    pub new_conn: bool,
    /// A NAT real server's reply.
    pub reply: bool,
}

impl Line {
    /// `e` for printing; `clock_offset_ns` is CLOCK_REALTIME − CLOCK_MONOTONIC.
    pub fn new(e: &TraceEvent, clock_offset_ns: i128) -> Self {
        let flow = (e.flags & trace::FLOW != 0).then_some(&e.flow);
        let conn = e.flags & trace::CONN != 0;
        let reason = counter::NAMES.get(e.reason as usize).copied().unwrap_or("unknown");
        let verdict = match reason.split('_').next() {
            Some("tx") => "tx",
            Some("drop") => "drop",
            _ => "pass",
        };
        let sock = |a: [u8; 16], port: [u8; 2]| SocketAddr::new(addr::to_ip(a), u16::from_be_bytes(port)).to_string();
        let state = conn.then(|| tcp::STATE_NAMES.get(e.state as usize).copied().unwrap_or("GONE"));
        Line {
            time: rfc3339(e.time_ns as i128 + clock_offset_ns),
            time_ns: e.time_ns,
            cpu: e.cpu,
            proto: flow.map(|f| proto_name(f.proto)),
            client: flow.map(|f| sock(f.src, f.sport)),
            service: flow.map(|f| sock(f.dst, f.dport)),
            real: conn.then(|| sock(e.real_ip, e.real_port)),
            verdict,
            reason,
            state,
            new_conn: e.flags & trace::NEW_CONN != 0,
            reply: e.flags & trace::REPLY != 0,
        }
    }

    /// One line, `key=value` fields in a fixed order, `-` for what is unknown.
    pub fn text(&self) -> String {
        let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        let mut s = format!(
            "{} cpu={} proto={} client={} service={} real={} verdict={} reason={} state={}",
            self.time,
            self.cpu,
            or_dash(&self.proto),
            or_dash(&self.client),
            or_dash(&self.service),
            or_dash(&self.real),
            self.verdict,
            self.reason,
            self.state.unwrap_or("-")
        );
        if self.new_conn {
            s += " new";
        }
        if self.reply {
            s += " reply";
        }
        s
    }
}

fn proto_name(p: u8) -> String {
    match p {
        PROTO_TCP => "tcp".into(),
        PROTO_UDP => "udp".into(),
        lb_common::csum::PROTO_ICMP => "icmp".into(),
        lb_common::csum::PROTO_ICMPV6 => "icmpv6".into(),
        other => other.to_string(),
    }
}

/// CLOCK_REALTIME − CLOCK_MONOTONIC now, nanoseconds: turns the events' stamps into
/// wall-clock time.
pub fn clock_offset_ns() -> i128 {
    let mut mono = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut mono) };
    let real = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i128);
    real - (mono.tv_sec as i128 * 1_000_000_000 + mono.tv_nsec as i128)
}

/// Days since 1970-01-01 as a civil (year, month, day), proleptic Gregorian calendar
/// (H. Hinnant's `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// `ns` since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
pub fn rfc3339(ns: i128) -> String {
    let secs = ns.div_euclid(1_000_000_000) as i64;
    let micros = ns.rem_euclid(1_000_000_000) / 1000;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    let mut s = String::with_capacity(27);
    let _ = write!(s, "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}Z", rem / 3600, rem % 3600 / 60, rem % 60);
    s
}

/// `xlb trace`: prints every matching frame's decision, one line each (text, or JSON
/// objects with `json`), until SIGINT/SIGTERM; then switches the events off.
pub fn run(pin_dir: &Path, filter: &Filter, json: bool) -> Result<()> {
    crate::run::install_stop_handler();
    let mut session = Session::open(pin_dir)?;
    session.start(filter)?;
    let offset = clock_offset_ns();
    eprintln!("xlb: tracing the fast path's decisions (Ctrl-C stops)");
    while !crate::run::stop_requested() {
        session.wait(Duration::from_millis(200));
        while let Some(e) = session.next_event() {
            let line = Line::new(&e, offset);
            if json {
                println!("{}", serde_json::to_string(&line)?);
            } else {
                println!("{}", line.text());
            }
        }
    }
    session.off()
}

/// `xlb trace --off`: switches the events off (after a trace was killed).
pub fn off(pin_dir: &Path) -> Result<()> {
    Session::open(pin_dir)?.off()
}
