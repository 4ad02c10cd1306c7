//! `xlb ipvsadm` / `xlbadm`: ipvsadm's command line and output, on top of the daemon's
//! API. Every ipvsadm command in an LVS script runs unchanged once `ipvsadm` is replaced
//! by `xlb ipvsadm`. Options, messages and exit statuses are ipvsadm 1.31's (ipvsadm.c:
//! parse_options, process_options, generic_opt_check, and libipvs's ipvs_strerror);
//! addresses are read as its parse_service reads them (IPv6 in brackets), and `-S`
//! writes what its print_service_entry writes with FMT_RULE, so that `-R` and the real
//! ipvsadm-restore read it back.
use std::{
    ffi::CString,
    io::Read,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs},
};

use anyhow::Result;

use crate::{
    api::{self, ApiError, Paths, Reply, Request, SettingsChange},
    listing::{self, Format, Output},
    ops::{
        self, ConnView, ForwardMethod, Persistence, Proto, RealAddr, RealOptions, Scheduler, Service, ServiceId,
        ServiceOptions, ServiceView,
    },
};

/// Exit status of a command line ipvsadm refuses (its `fail(2, …)`).
pub const EXIT_USAGE: i32 = 2;
/// Exit status when the change itself fails: libipvs returns -1, which ipvsadm's main
/// returns (255). xlb also gives it for what it cannot do (SCTP, GUE, sync daemons…).
pub const EXIT_FAILURE: i32 = 255;
/// Exit status of a listing that fails (ipvsadm's `exit(1)` in list_service).
pub const EXIT_LIST_FAILURE: i32 = 1;

/// A command line ipvsadm would refuse: the message, and the exit status to leave with
/// ([`EXIT_USAGE`] for ipvsadm's checks, [`EXIT_FAILURE`] for popt's errors and for what
/// xlb does not do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError {
    pub message: String,
    pub status: i32,
}

fn fail<T>(msg: impl Into<String>) -> Result<T, UsageError> {
    Err(UsageError { message: msg.into(), status: EXIT_USAGE })
}

fn unsupported<T>(msg: impl Into<String>) -> Result<T, UsageError> {
    Err(UsageError { message: msg.into(), status: EXIT_FAILURE })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    AddService,
    EditService,
    DelService,
    Flush,
    List,
    AddServer,
    DelServer,
    EditServer,
    Set,
    StartDaemon,
    StopDaemon,
    Restore,
    Save,
    Zero,
    Help,
    Version,
}

impl Command {
    /// ipvsadm's cmdnames[].
    fn name(self) -> &'static str {
        match self {
            Command::AddService => "add-service",
            Command::EditService => "edit-service",
            Command::DelService => "delete-service",
            Command::Flush => "flush",
            Command::List => "list",
            Command::AddServer => "add-server",
            Command::DelServer => "delete-server",
            Command::EditServer => "edit-server",
            Command::Set => "set",
            Command::StartDaemon => "start-daemon",
            Command::StopDaemon => "stop-daemon",
            Command::Restore => "restore",
            Command::Save => "save",
            Command::Zero => "zero",
            Command::Help => "help",
            Command::Version => "version",
        }
    }
}

/// One parsed ipvsadm command line.
#[derive(Clone, Debug, PartialEq)]
pub struct Invocation {
    pub command: Command,
    pub service: Option<ServiceId>,
    /// `-6`: the fwmark service is IPv6.
    pub ipv6: bool,
    pub options: ServiceOptions,
    pub real: Option<RealAddr>,
    pub real_options: RealOptions,
    pub numeric: bool,
    pub connections: bool,
    pub timeout_listing: bool,
    pub daemon_listing: bool,
    pub format: Format,
    pub exact: bool,
    /// `--set tcp tcpfin udp`; 0 keeps the current value (ipvsadm(8)).
    pub timeouts: Option<(u32, u32, u32)>,
    /// `--start-daemon`/`--stop-daemon`'s role and the daemon options (ipvsadm(8):
    /// `--mcast-interface`, `--syncid`, `--sync-maxlen`, `--mcast-group`,
    /// `--mcast-port`, `--mcast-ttl`).
    pub daemon: Option<crate::sync::DaemonConfig>,
    /// Options given, by ipvsadm's option names (for the command/option checks).
    given: Vec<&'static str>,
}

/// Whether an option takes an argument (popt's POPT_ARG_NONE / STRING / OPTIONAL).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Takes {
    Nothing,
    Value,
    MaybeValue,
}

/// ipvsadm 1.31's options_table: short name ('\0': long only), long name, argument.
const OPTIONS: &[(char, &str, Takes)] = &[
    ('A', "add-service", Takes::Nothing),
    ('E', "edit-service", Takes::Nothing),
    ('D', "delete-service", Takes::Nothing),
    ('C', "clear", Takes::Nothing),
    ('L', "list", Takes::Nothing),
    ('l', "list", Takes::Nothing),
    ('Z', "zero", Takes::Nothing),
    ('a', "add-server", Takes::Nothing),
    ('e', "edit-server", Takes::Nothing),
    ('d', "delete-server", Takes::Nothing),
    ('\0', "set", Takes::Nothing),
    ('h', "help", Takes::Nothing),
    ('v', "version", Takes::Nothing),
    ('R', "restore", Takes::Nothing),
    ('S', "save", Takes::Nothing),
    ('\0', "start-daemon", Takes::Value),
    ('\0', "stop-daemon", Takes::Value),
    ('t', "tcp-service", Takes::Value),
    ('u', "udp-service", Takes::Value),
    ('\0', "sctp-service", Takes::Value),
    ('f', "fwmark-service", Takes::Value),
    ('s', "scheduler", Takes::Value),
    ('p', "persistent", Takes::MaybeValue),
    ('M', "netmask", Takes::Value),
    ('\0', "pe", Takes::Value),
    ('b', "sched-flags", Takes::Value),
    ('r', "real-server", Takes::Value),
    ('m', "masquerading", Takes::Nothing),
    ('i', "ipip", Takes::Nothing),
    ('g', "gatewaying", Takes::Nothing),
    ('\0', "tun-type", Takes::Value),
    ('\0', "tun-port", Takes::Value),
    ('\0', "tun-nocsum", Takes::Nothing),
    ('\0', "tun-csum", Takes::Nothing),
    ('\0', "tun-remcsum", Takes::Nothing),
    ('w', "weight", Takes::Value),
    ('x', "u-threshold", Takes::Value),
    ('y', "l-threshold", Takes::Value),
    ('n', "numeric", Takes::Nothing),
    ('c', "connection", Takes::Nothing),
    ('\0', "mcast-interface", Takes::Value),
    ('\0', "mcast-group", Takes::Value),
    ('\0', "mcast-port", Takes::Value),
    ('\0', "mcast-ttl", Takes::Value),
    ('\0', "sync-maxlen", Takes::Value),
    ('\0', "syncid", Takes::Value),
    ('\0', "timeout", Takes::Nothing),
    ('\0', "daemon", Takes::Nothing),
    ('\0', "stats", Takes::Nothing),
    ('\0', "rate", Takes::Nothing),
    ('\0', "thresholds", Takes::Nothing),
    ('\0', "persistent-conn", Takes::Nothing),
    ('\0', "tun-info", Takes::Nothing),
    ('\0', "nosort", Takes::Nothing),
    ('\0', "sort", Takes::Nothing),
    ('X', "exact", Takes::Nothing),
    ('6', "ipv6", Takes::Nothing),
    ('o', "ops", Takes::Nothing),
];

/// ipvsadm's optnames[], in its order (the order generic_opt_check reports in).
const OPTNAMES: &[&str] = &[
    "numeric",
    "connection",
    "service-address",
    "scheduler",
    "persistent",
    "netmask",
    "real-server",
    "forwarding-method",
    "weight",
    "u-threshold",
    "l-threshold",
    "mcast-interface",
    "timeout",
    "daemon",
    "stats",
    "rate",
    "thresholds",
    "persistent-conn",
    "nosort",
    "syncid",
    "exact",
    "ops",
    "pe",
    "sched-flags",
    "mcast-group",
    "mcast-port",
    "mcast-ttl",
    "sync-maxlen",
    "tun-info",
    "tun-type",
    "tun-port",
    "tun-nocsum",
    "tun-csum",
    "tun-remcsum",
];

/// Splits argv into (long option name, argument, as written) the way popt does:
/// clustered short flags (`-Ln`), attached arguments (`-w3`, `--weight=3`), `-p` with an
/// optional value. popt's own errors leave with status 255, as ipvsadm's do.
#[allow(clippy::type_complexity)]
fn tokens(args: &[String]) -> Result<(Vec<(&'static str, Option<String>, String)>, Vec<String>), UsageError> {
    let popt = |msg: String| Err(UsageError { message: msg, status: EXIT_FAILURE });
    let mut out = Vec::new();
    let mut positional = Vec::new();
    // -p's optional timeout: the next word when it is a number (popt takes any word
    // not starting with '-'; a number is what ipvsadm would accept).
    let optional_value =
        |args: &[String], i: usize| args.get(i + 1).filter(|v| v.parse::<u32>().is_ok()).cloned();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if let Some(long) = a.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (long, None),
            };
            let Some(&(_, name, takes)) = OPTIONS.iter().find(|(_, l, _)| *l == name) else {
                return popt(format!("{a}: unknown option"));
            };
            let value = match takes {
                Takes::Nothing if inline.is_some() => return popt(format!("{a}: option does not take an argument")),
                Takes::Nothing => None,
                Takes::Value => match inline {
                    Some(v) => Some(v),
                    None => {
                        i += 1;
                        match args.get(i) {
                            Some(v) => Some(v.clone()),
                            None => return popt(format!("{a}: missing argument")),
                        }
                    }
                },
                Takes::MaybeValue => match inline {
                    Some(v) => Some(v),
                    None => {
                        let v = optional_value(args, i);
                        if v.is_some() {
                            i += 1;
                        }
                        v
                    }
                },
            };
            out.push((name, value, a.clone()));
        } else if a.len() > 1 && a.starts_with('-') {
            let chars: Vec<char> = a[1..].chars().collect();
            let mut j = 0;
            while j < chars.len() {
                let c = chars[j];
                let rest: String = chars[j + 1..].iter().collect();
                let Some(&(_, name, takes)) = OPTIONS.iter().find(|(s, _, _)| *s == c && c != '\0') else {
                    return popt(format!("-{c}: unknown option"));
                };
                match takes {
                    Takes::Nothing => {
                        out.push((name, None, format!("-{c}")));
                        j += 1;
                        continue;
                    }
                    Takes::Value => {
                        let value = if !rest.is_empty() {
                            rest
                        } else {
                            i += 1;
                            match args.get(i) {
                                Some(v) => v.clone(),
                                None => return popt(format!("-{c}: missing argument")),
                            }
                        };
                        out.push((name, Some(value), format!("-{c}")));
                    }
                    Takes::MaybeValue => {
                        let value = if !rest.is_empty() {
                            Some(rest)
                        } else {
                            let v = optional_value(args, i);
                            if v.is_some() {
                                i += 1;
                            }
                            v
                        };
                        out.push((name, value, format!("-{c}")));
                    }
                }
                break;
            }
        } else {
            positional.push(a.clone());
        }
        i += 1;
    }
    Ok((out, positional))
}

/// ipvsadm's string_to_number: a decimal number within [min, max].
fn number(v: &str, min: u64, max: u64) -> Option<u64> {
    v.parse::<u64>().ok().filter(|n| (min..=max).contains(n))
}

/// An IPv4 host: a dotted quad or a name resolved as ipvsadm's host_to_addr does
/// (gethostbyname, IPv4 only).
fn host_v4(name: &str) -> Option<Ipv4Addr> {
    if let Ok(ip) = name.parse() {
        return Some(ip);
    }
    (name, 0).to_socket_addrs().ok()?.find_map(|a| match a.ip() {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(_) => None,
    })
}

/// A port number or a service name from /etc/services (ipvsadm's service_to_port).
fn port(name: &str, proto: Proto) -> Option<u16> {
    if let Some(p) = number(name, 0, 65535) {
        return Some(p as u16);
    }
    let (n, p) = (CString::new(name).ok()?, CString::new(proto.name().to_ascii_lowercase()).ok()?);
    // getservbyname's result is one static servent shared by every thread (a daemon
    // serving requests, tests running in parallel): one caller at a time.
    static SERVICES_DB: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = SERVICES_DB.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: both strings are NUL-terminated and live across the call; the result
    // points into libc's static servent, read while the lock is held.
    let ent = unsafe { libc::getservbyname(n.as_ptr(), p.as_ptr()) };
    if ent.is_null() { None } else { Some(u16::from_be(unsafe { (*ent).s_port } as u16)) }
}

/// `host[:port]` as ipvsadm's parse_service reads it: `[IPv6]:port` (the port is then
/// required), a bare IPv6 address (no port), or an IPv4 address or host name with an
/// optional `:port`. A bare number is no address. Returns (address, port if given).
pub fn parse_service_address(s: &str, proto: Proto) -> Option<(IpAddr, Option<u16>)> {
    if s.is_empty() || s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if let Some(inner) = s.strip_prefix('[') {
        let (addr, rest) = inner.split_once(']')?;
        let p = rest.strip_prefix(':')?;
        let ip: Ipv6Addr = addr.parse().ok()?;
        return Some((IpAddr::V6(ip), Some(port(p, proto)?)));
    }
    if let Ok(ip) = s.parse::<Ipv6Addr>() {
        return Some((IpAddr::V6(ip), None));
    }
    match s.rsplit_once(':') {
        Some((a, p)) => Some((IpAddr::V4(host_v4(a)?), Some(port(p, proto)?))),
        None => Some((IpAddr::V4(host_v4(s)?), None)),
    }
}

/// Which options each command takes: (required, optional, exclusive group '1');
/// everything else is illegal. ipvsadm 1.31's commands_v_options.
fn rules(cmd: Command) -> (&'static [&'static str], &'static [&'static str], &'static [&'static str]) {
    use Command::*;
    match cmd {
        AddService | EditService => (&["service-address"], &["scheduler", "persistent", "netmask", "ops", "pe", "sched-flags"], &[]),
        DelService => (&["service-address"], &[], &[]),
        List => (
            &[],
            &["numeric", "stats", "rate", "thresholds", "persistent-conn", "nosort", "exact", "tun-info"],
            &["connection", "service-address", "timeout", "daemon"],
        ),
        AddServer | EditServer => (
            &["service-address", "real-server"],
            &["forwarding-method", "weight", "u-threshold", "l-threshold", "tun-type", "tun-port", "tun-nocsum", "tun-csum", "tun-remcsum"],
            &[],
        ),
        DelServer => (&["service-address", "real-server"], &[], &[]),
        StartDaemon => (&[], &["mcast-interface", "syncid", "mcast-group", "mcast-port", "mcast-ttl", "sync-maxlen"], &[]),
        StopDaemon => (&[], &["syncid"], &[]),
        Save => (&[], &["numeric"], &[]),
        Zero => (&[], &["service-address"], &[]),
        Flush | Set | Restore | Help | Version => (&[], &[], &[]),
    }
}

/// ipvsadm's generic_opt_check.
fn check(cmd: Command, given: &[&'static str]) -> Result<(), UsageError> {
    let (required, optional, exclusive) = rules(cmd);
    let mut first_exclusive: Option<&str> = None;
    for name in OPTNAMES {
        let is_given = given.contains(name);
        if !is_given {
            if required.contains(name) {
                return fail(format!("You need to supply the '{name}' option for the '{}' command", cmd.name()));
            }
            continue;
        }
        if exclusive.contains(name) {
            if let Some(last) = first_exclusive {
                return fail(format!("The option '{name}' conflicts with the '{last}' option in the '{}' command", cmd.name()));
            }
            first_exclusive = Some(name);
        } else if !required.contains(name) && !optional.contains(name) {
            return fail(format!("Illegal '{name}' option with the '{}' command", cmd.name()));
        }
    }
    Ok(())
}

/// `-M` for an IPv4 service: a netmask in dotted form (ipvsadm's parse_netmask).
fn netmask_v4(v: &str) -> Option<IpAddr> {
    let m: Ipv4Addr = v.parse().ok()?;
    Some(IpAddr::V4(m))
}

/// `-M` for an IPv6 service: a prefix length from 1 to 128 (ipvsadm(8)).
fn netmask_v6(v: &str) -> Option<IpAddr> {
    let len = number(v, 1, 128)? as u32;
    Some(IpAddr::V6(Ipv6Addr::from(u128::MAX << (128 - len))))
}

/// Parses one ipvsadm command line. No arguments at all lists the table, as ipvsadm's
/// main does (`argc == 1`).
pub fn parse(args: &[String]) -> Result<Invocation, UsageError> {
    let mut inv = Invocation {
        command: Command::List,
        service: None,
        ipv6: false,
        options: ServiceOptions::default(),
        real: None,
        real_options: RealOptions::default(),
        numeric: false,
        connections: false,
        timeout_listing: false,
        daemon_listing: false,
        format: Format::Plain,
        exact: false,
        timeouts: None,
        daemon: None,
        given: Vec::new(),
    };
    if args.is_empty() {
        return Ok(inv);
    }
    let (toks, positional) = tokens(args)?;
    let mut command = None;
    let mut persistent: Option<u32> = None;
    let mut netmask: Option<String> = None;
    let mut daemon = crate::sync::DaemonConfig {
        role: crate::sync::Role::Master,
        mcast_interface: String::new(),
        syncid: 0,
        sync_maxlen: None,
        mcast_group: None,
        mcast_port: None,
        mcast_ttl: None,
    };
    for (name, value, spelled) in &toks {
        let v = value.as_deref().unwrap_or("");
        let cmd = match *name {
            "add-service" => Some(Command::AddService),
            "edit-service" => Some(Command::EditService),
            "delete-service" => Some(Command::DelService),
            "clear" => Some(Command::Flush),
            "restore" => Some(Command::Restore),
            "save" => Some(Command::Save),
            "add-server" => Some(Command::AddServer),
            "edit-server" => Some(Command::EditServer),
            "delete-server" => Some(Command::DelServer),
            "list" => Some(Command::List),
            "zero" => Some(Command::Zero),
            "set" => Some(Command::Set),
            "help" => Some(Command::Help),
            "version" => Some(Command::Version),
            "start-daemon" | "stop-daemon" => {
                if v != "master" && v != "backup" {
                    return fail(if *name == "start-daemon" {
                        "illegal start-daemon parameter specified"
                    } else {
                        "illegal start_daemon specified"
                    });
                }
                daemon.role = if v == "master" { crate::sync::Role::Master } else { crate::sync::Role::Backup };
                Some(if *name == "start-daemon" { Command::StartDaemon } else { Command::StopDaemon })
            }
            _ => None,
        };
        if let Some(c) = cmd {
            if command.is_some() {
                return fail("multiple commands specified");
            }
            command = Some(c);
            continue;
        }
        let given: Option<&'static str> = match *name {
            "tcp-service" | "udp-service" => {
                let proto = if *name == "tcp-service" { Proto::Tcp } else { Proto::Udp };
                let Some((vip, p)) = parse_service_address(v, proto) else {
                    return fail("illegal virtual server address[:port] specified");
                };
                inv.service = Some(ServiceId::Addr(Service { proto, vip, port: p.unwrap_or(0) }));
                Some("service-address")
            }
            "sctp-service" => return unsupported("SCTP services are not supported: xlb balances TCP and UDP"),
            "fwmark-service" => {
                let Some(m) = number(v, 1, u32::MAX as u64) else {
                    return fail(format!("invalid fwmark value `{v}' specified"));
                };
                inv.service = Some(ServiceId::Fwmark(m as u32));
                Some("service-address")
            }
            "ipv6" => {
                // As ipvsadm: -6 qualifies a -f given before it.
                if !matches!(inv.service, Some(ServiceId::Fwmark(_))) {
                    return fail("-6 used before -f");
                }
                inv.ipv6 = true;
                None
            }
            "scheduler" => {
                inv.options.scheduler = match v.parse::<Scheduler>() {
                    Ok(s) => s,
                    // libipvs's words when the kernel has no such scheduler module.
                    Err(_) => return unsupported(format!("Scheduler not found: ip_vs_{v}.ko")),
                };
                Some("scheduler")
            }
            "persistent" => {
                persistent = Some(match value {
                    None => ops::DEFAULT_PERSISTENCE_TIMEOUT,
                    Some(t) => match number(t, 1, 31 * 24 * 3600) {
                        Some(t) => t as u32,
                        None => return fail(format!("invalid timeout value `{t}' specified")),
                    },
                });
                Some("persistent")
            }
            "netmask" => {
                netmask = Some(v.to_string());
                Some("netmask")
            }
            "pe" => {
                return unsupported(format!("persistence engine `{v}' is not supported: xlb has no persistence engines (sip)"));
            }
            "real-server" => {
                // Port names resolve for the service's protocol, as ipvsadm's copy of
                // the service does (TCP for a fwmark service).
                let proto = match inv.service {
                    Some(ServiceId::Addr(s)) => s.proto,
                    _ => Proto::Tcp,
                };
                let Some((ip, port)) = parse_service_address(v, proto) else {
                    return fail("illegal real server address[:port] specified");
                };
                inv.real = Some(RealAddr { ip, port });
                Some("real-server")
            }
            "gatewaying" | "masquerading" | "ipip" => {
                inv.real_options.forward = match *name {
                    "masquerading" => ForwardMethod::Masq,
                    "ipip" => ForwardMethod::Tunnel,
                    _ => ForwardMethod::Route,
                };
                Some("forwarding-method")
            }
            "tun-type" => {
                match v {
                    "ipip" => {}
                    "gue" | "gre" => return unsupported(format!("tunnel type {v} is not supported: xlb tunnels with IPIP (and IPv6-in-IPv6)")),
                    _ => return fail("illegal tunnel type specified"),
                }
                Some("tun-type")
            }
            "tun-port" => {
                if number(v, 1, 65535).is_none() {
                    return fail("illegal tunnel port specified");
                }
                Some("tun-port")
            }
            "tun-nocsum" => Some("tun-nocsum"),
            "tun-csum" => Some("tun-csum"),
            "tun-remcsum" => Some("tun-remcsum"),
            "weight" => {
                let Some(w) = number(v, 0, 65535) else { return fail("illegal weight specified") };
                inv.real_options.weight = w as u32;
                Some("weight")
            }
            "u-threshold" => {
                let Some(x) = number(v, 0, i32::MAX as u64) else { return fail("illegal u_threshold specified") };
                inv.real_options.u_threshold = x as u32;
                Some("u-threshold")
            }
            "l-threshold" => {
                let Some(y) = number(v, 0, i32::MAX as u64) else { return fail("illegal l_threshold specified") };
                inv.real_options.l_threshold = y as u32;
                Some("l-threshold")
            }
            "sched-flags" => {
                inv.options.sched_flags = match ops::parse_sched_flags(v) {
                    Ok(f) => f,
                    Err(_) => return fail(format!("invalid scheduler flag `{v}'")),
                };
                Some("sched-flags")
            }
            "ops" => {
                inv.options.one_packet = true;
                Some("ops")
            }
            "numeric" => {
                inv.numeric = true;
                Some("numeric")
            }
            "connection" => {
                inv.connections = true;
                Some("connection")
            }
            "timeout" => {
                inv.timeout_listing = true;
                Some("timeout")
            }
            "daemon" => {
                inv.daemon_listing = true;
                Some("daemon")
            }
            "stats" | "rate" | "thresholds" | "persistent-conn" | "tun-info" => {
                // ipvsadm ORs the formats and prints the first of these it tests.
                let f = match *name {
                    "stats" => Format::Stats,
                    "rate" => Format::Rate,
                    "thresholds" => Format::Thresholds,
                    "persistent-conn" => Format::PersistentConn,
                    _ => Format::TunInfo,
                };
                let rank = |f: Format| [Format::Stats, Format::Rate, Format::Thresholds, Format::PersistentConn, Format::TunInfo, Format::Plain].iter().position(|x| *x == f);
                if rank(f) < rank(inv.format) {
                    inv.format = f;
                }
                Some(match *name {
                    "stats" => "stats",
                    "rate" => "rate",
                    "thresholds" => "thresholds",
                    "persistent-conn" => "persistent-conn",
                    _ => "tun-info",
                })
            }
            "exact" => {
                inv.exact = true;
                Some("exact")
            }
            // xlb's listings are always sorted (services by protocol, address, port;
            // reals by address, port), which is ipvsadm's default.
            "nosort" => Some("nosort"),
            "sort" => None,
            "syncid" => {
                let Some(id) = number(v, 0, 255) else { return fail("illegal syncid specified") };
                daemon.syncid = id as u8;
                Some("syncid")
            }
            "sync-maxlen" => {
                let Some(l) = number(v, 1, 65535 - 20 - 8) else { return fail("illegal sync-maxlen specified") };
                daemon.sync_maxlen = Some(l as u16);
                Some("sync-maxlen")
            }
            "mcast-interface" => {
                // IP_VS_IFNAME_MAXLEN: ipvsadm keeps 15 characters.
                daemon.mcast_interface = v.chars().take(15).collect();
                Some("mcast-interface")
            }
            "mcast-group" => {
                let Some(group) = v.parse::<IpAddr>().ok().filter(|ip| ip.is_multicast()) else {
                    return fail("illegal IPv4/IPv6 multicast address specified");
                };
                daemon.mcast_group = Some(group);
                Some("mcast-group")
            }
            "mcast-port" => {
                let Some(port) = number(v, 1, 65535) else { return fail("illegal mcast-port specified") };
                daemon.mcast_port = Some(port as u16);
                Some("mcast-port")
            }
            "mcast-ttl" => {
                let Some(ttl) = number(v, 1, 255) else { return fail("illegal mcast-ttl specified") };
                daemon.mcast_ttl = Some(ttl as u8);
                Some("mcast-ttl")
            }
            other => return Err(UsageError { message: format!("{spelled}: unknown option ({other})"), status: EXIT_FAILURE }),
        };
        if let Some(g) = given {
            // ipvsadm's set_option.
            if inv.given.contains(&g) {
                return fail(format!("multiple '{g}' options specified"));
            }
            inv.given.push(g);
        }
    }
    let Some(command) = command else {
        // ipvsadm's first option must be a command (tryhelp_exit(argv[0], -1)).
        return Err(UsageError {
            message: "Try `xlb ipvsadm -h' or 'xlb ipvsadm --help' for more information.".into(),
            status: EXIT_FAILURE,
        });
    };
    inv.command = command;
    if matches!(command, Command::StartDaemon | Command::StopDaemon) {
        inv.daemon = Some(daemon);
    }
    if command == Command::Set {
        let [tcp, fin, udp] = positional.as_slice() else { return fail("--set option requires 3 timeout values") };
        let t = |s: &String| number(s, 0, 31 * 24 * 3600).map(|n| n as u32);
        for x in [tcp, fin, udp] {
            if t(x).is_none() {
                return fail(format!("invalid timeout value `{x}' specified"));
            }
        }
        inv.timeouts = Some((t(tcp).unwrap_or(0), t(fin).unwrap_or(0), t(udp).unwrap_or(0)));
    } else if let Some(extra) = positional.first() {
        return fail(format!("unexpected argument {extra}"));
    }
    check(command, &inv.given)?;
    // The service's family decides how -M reads (ipvsadm: a prefix length for IPv6).
    let v6 = match inv.service {
        Some(ServiceId::Addr(a)) => a.vip.is_ipv6(),
        Some(ServiceId::Fwmark(_)) => inv.ipv6,
        None => false,
    };
    let mask = match netmask.as_deref() {
        None => ops::ONE_CLIENT,
        Some(m) if v6 => match netmask_v6(m) {
            Some(mask) => mask,
            None => return fail("illegal ipv6 netmask specified"),
        },
        Some(m) => match netmask_v4(m) {
            Some(mask) => mask,
            None => return fail("illegal virtual server persistent mask specified"),
        },
    };
    // As IPVS: the netmask only matters to a persistent service.
    inv.options.persistence = persistent.map(|timeout| Persistence { timeout, netmask: mask });
    if matches!(command, Command::AddService | Command::EditService) {
        if let Some(ServiceId::Addr(svc)) = inv.service {
            if svc.port == 0 && inv.options.persistence.is_none() {
                return fail("Zero port specified for non-persistent service");
            }
            if svc.port == 0 {
                return unsupported("a port-0 (all ports) persistent service is not supported: use a firewall-mark group with `xlb frontend add MARK tcp VIP:1-65535`");
            }
            if inv.options.one_packet && svc.proto != Proto::Udp {
                return fail("One-Packet Scheduling is only for UDP virtual services");
            }
        }
    }
    if matches!(command, Command::AddServer | Command::EditServer | Command::DelServer) {
        if let (Some(service), Some(real)) = (inv.service, inv.real) {
            if let ServiceId::Addr(svc) = service {
                if svc.port == 0 {
                    return unsupported("a port-0 (all ports) service is not supported: use a firewall-mark group");
                }
            }
            if command != Command::DelServer {
                let tunnel = inv.real_options.forward == ForwardMethod::Tunnel;
                if real.ip.is_ipv6() != v6 && !tunnel {
                    return fail("Different address family is allowed only for tunneling servers");
                }
                let tun_opts = ["tun-type", "tun-port", "tun-nocsum", "tun-csum", "tun-remcsum"];
                if inv.given.iter().any(|g| tun_opts.contains(g)) && !tunnel {
                    return fail("Tunnel options conflict with forward method");
                }
                // ipip, the only type here, takes no GUE/GRE options (tunnel_opt_check).
                if let Some(o) = ["tun-port", "tun-nocsum", "tun-csum", "tun-remcsum"].iter().find(|o| inv.given.contains(o)) {
                    return fail(format!("Illegal '{o}' option with the 'ipip' tunnel type"));
                }
            }
        }
    }
    if command == Command::List
        && (inv.connections || inv.timeout_listing || inv.daemon_listing)
        && inv.given.iter().any(|g| ["stats", "persistent-conn", "rate", "thresholds"].contains(g))
    {
        return fail("options conflicts in the list command");
    }
    Ok(inv)
}

const USAGE: &str = "Usage:
  xlb ipvsadm -A|E virtual-service [-s scheduler] [-p [timeout]] [-M netmask] [-b sched-flags] [-o]
  xlb ipvsadm -D virtual-service
  xlb ipvsadm -C
  xlb ipvsadm -R
  xlb ipvsadm -S [-n]
  xlb ipvsadm -a|e virtual-service -r server-address [-g|i|m] [-w weight] [-x upper] [-y lower]
  xlb ipvsadm -d virtual-service -r server-address
  xlb ipvsadm -L|l [virtual-service] [options]
  xlb ipvsadm -Z [virtual-service]
  xlb ipvsadm --set tcp tcpfin udp
  xlb ipvsadm --start-daemon {master|backup} [daemon-options]
  xlb ipvsadm --stop-daemon {master|backup}
  xlb ipvsadm -h

Commands:
Either long or short options are allowed.
  --add-service     -A        add virtual service with options
  --edit-service    -E        edit virtual service with options
  --delete-service  -D        delete virtual service
  --clear           -C        clear the whole table
  --restore         -R        restore rules from stdin
  --save            -S        save rules to stdout
  --add-server      -a        add real server with options
  --edit-server     -e        edit real server with options
  --delete-server   -d        delete real server
  --list            -L|-l     list the table
  --zero            -Z        zero counters in a service or all services
  --set tcp tcpfin udp        set connection timeout values (0 keeps a value)
  --start-daemon              start connection sync daemon
  --stop-daemon               stop connection sync daemon
  --help            -h        display this help message
  --version         -v        display the version

virtual-service:
  --tcp-service|-t  service-address   service-address is host[:port], IPv6 as [addr]:port
  --udp-service|-u  service-address   service-address is host[:port], IPv6 as [addr]:port
  --fwmark-service|-f fwmark          fwmark is an integer greater than zero
  --ipv6         -6                   fwmark entry uses IPv6

Options:
  --scheduler    -s scheduler         rr|wrr|lc|wlc|sed|nq|sh|dh|mh|fo|ovf (default wlc)
  --persistent   -p [timeout]         persistent service (default 300 s)
  --netmask      -M netmask           persistent granularity mask (IPv6: prefix length)
  --sched-flags  -b flags             scheduler flags (comma-separated)
  --real-server  -r server-address    server-address is host (and port)
  --gatewaying   -g                   gatewaying (direct routing) (default)
  --ipip         -i                   ipip encapsulation (tunneling)
  --masquerading -m                   masquerading (NAT)
  --tun-type      ipip                the only tunnel type xlb has
  --weight       -w weight            capacity of real server
  --u-threshold  -x uthreshold        upper threshold of connections
  --l-threshold  -y lthreshold        lower threshold of connections
  --connection   -c                   output of current IPVS connections (and templates)
  --timeout                           output of timeout (tcp tcpfin udp)
  --daemon                            output of daemon information
  --stats                             output of statistics information
  --rate                              output of rate information
  --exact                             expand numbers (display exact values)
  --thresholds                        output of thresholds information
  --persistent-conn                   output of persistent connection info
  --tun-info                          output of tunnel information
  --sort / --nosort                   listings are always sorted
  --ops          -o                   one-packet scheduling
  --numeric      -n                   numeric output (xlb's listings always are)

Daemon Options:
  --syncid sid                        syncid for connection sync (default=0: a backup takes any)
  --sync-maxlen length                Max sync message length (default: the interface's MTU - 28)
  --mcast-interface interface         multicast interface for connection sync
  --mcast-group address               IPv4/IPv6 group (default=224.0.0.81)
  --mcast-port port                   UDP port (default=8848)
  --mcast-ttl ttl                     Multicast TTL (default=1)

Not supported (exit status 255): --sctp-service, --pe, --tun-type gue|gre.
Connection sync speaks IPVS's sync protocol version 1; NAT connections and
persistence templates are not installed on a backup (see the README).";

/// What `-v` prints: ipvsadm's version line, naming xlb.
fn version() -> String {
    format!(
        "ipvsadm v1.31 (command line of xlb {}; IPVS v1.2.1 layouts)",
        env!("CARGO_PKG_VERSION")
    )
}

/// The request an add/edit/delete (or a restore line's -C, -Z, --set) makes.
fn mutation(inv: &Invocation) -> Option<Request> {
    match inv.command {
        Command::Flush => return Some(Request::Clear),
        Command::Zero => return Some(Request::Zero { service: inv.service }),
        Command::Set => {
            let (tcp, tcpfin, udp) = inv.timeouts?;
            let keep = |t: u32| (t != 0).then_some(t);
            let change = SettingsChange { tcp: keep(tcp), tcpfin: keep(tcpfin), udp: keep(udp), ..Default::default() };
            return Some(Request::SetSettings { change });
        }
        _ => {}
    }
    let service = inv.service?;
    Some(match inv.command {
        Command::AddService => Request::AddService { service, options: inv.options },
        Command::EditService => Request::EditService { service, options: inv.options },
        Command::DelService => Request::DelService { service },
        Command::AddServer => Request::AddReal { service, address: inv.real?, options: inv.real_options },
        Command::EditServer => Request::EditReal { service, address: inv.real?, options: inv.real_options },
        Command::DelServer => Request::DelReal { service, address: inv.real? },
        _ => return None,
    })
}

/// `-t VIP:port` / `-u VIP:port` (an IPv6 VIP in brackets) / `-f MARK` (`-f MARK -6`
/// for an IPv6 group), as print_service_entry names a service with FMT_RULE.
fn service_arg(s: &ServiceView) -> String {
    match s.id {
        ServiceId::Addr(a) => format!("{} {}", if a.proto == Proto::Tcp { "-t" } else { "-u" }, a.endpoint()),
        ServiceId::Fwmark(m) if listing::is_ipv6(s) => format!("-f {m} -6"),
        ServiceId::Fwmark(m) => format!("-f {m}"),
    }
}

/// `ipvsadm -S -n`: rules that ipvsadm-restore (real or ours) reads back, in
/// print_service_entry's FMT_RULE form: `-A SVC -s SCHED [-b FLAGS] [-p T [-M MASK]]`
/// (MASK a dotted netmask, or a prefix length for IPv6) `[-o]`, then
/// `-a SVC -r RIP:PORT -g|-m|-i -w W` per real (`--tun-type ipip` after `-i`, as 1.31
/// writes it). xlb adds `-x`/`-y` when a threshold is set, so they survive a round trip.
pub fn save(services: &[ServiceView]) -> String {
    let mut out = String::new();
    for s in services {
        let svc = service_arg(s);
        out.push_str(&format!("-A {svc} -s {}", s.scheduler));
        if !s.sched_flags.is_empty() {
            out.push_str(&format!(" -b {}", s.sched_flags.join(",")));
        }
        if let Some(p) = s.persistence {
            out.push_str(&format!(" -p {}", p.timeout));
            if let Some(mask) = listing::netmask_text(s) {
                out.push_str(&format!(" -M {mask}"));
            }
        }
        if s.one_packet {
            out.push_str(" -o");
        }
        out.push('\n');
        for r in &s.reals {
            let rip = SocketAddr::new(r.address, r.port);
            out.push_str(&format!("-a {svc} -r {rip} {} -w {}", r.forward.switch(), r.weight));
            if r.forward == ForwardMethod::Tunnel {
                out.push_str(" --tun-type ipip");
            }
            if r.u_threshold != 0 {
                out.push_str(&format!(" -x {}", r.u_threshold));
            }
            if r.l_threshold != 0 {
                out.push_str(&format!(" -y {}", r.l_threshold));
            }
            out.push('\n');
        }
    }
    out
}

/// Parses a restore file (ipvsadm-save's or ours) into requests, each with its line
/// number; line numbers in errors. As ipvsadm -R, each line is one command line,
/// optionally starting with `ipvsadm`; -A/-E/-D/-a/-e/-d, -Z and --set are taken. A
/// `-C` line is refused: the file is applied whole or not at all, and a clear inside it
/// could not be undone with the health checks it removes (run `-C` before `-R`).
/// Older ipvsadm-save wrote the one-packet flag as a bare `ops`, and a persistence
/// engine as `pe NAME`.
pub fn restore_requests(text: &str) -> Result<Vec<(usize, Request)>, UsageError> {
    let mut requests = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words: Vec<&str> = line.split_whitespace().collect();
        if words.first() == Some(&"ipvsadm") {
            words.remove(0);
        }
        let args: Vec<String> = words
            .iter()
            .map(|w| match *w {
                "ops" => "-o".to_string(),
                "pe" => "--pe".to_string(),
                w => w.to_string(),
            })
            .collect();
        let at = |e: UsageError| UsageError { message: format!("line {}: {}", n + 1, e.message), status: e.status };
        if args.is_empty() {
            continue;
        }
        let inv = parse(&args).map_err(at)?;
        if inv.command == Command::Flush {
            return Err(at(UsageError {
                message: "-C in a restore file is not taken (the file applies whole or not at all); run `xlb ipvsadm -C` before -R".into(),
                status: EXIT_USAGE,
            }));
        }
        match mutation(&inv) {
            Some(r) => requests.push((n + 1, r)),
            None => {
                return Err(at(UsageError {
                    message: "only -A, -E, -D, -a, -e, -d, -Z and --set can be restored".into(),
                    status: EXIT_USAGE,
                }));
            }
        }
    }
    Ok(requests)
}

/// A restore line that the daemon refused: "line N: message".
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {message}")]
struct RestoreFailure {
    line: usize,
    message: String,
}

/// Why an ipvsadm command failed: what it prints and its exit status.
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// A listing that failed (exit status 1, as ipvsadm's list functions exit).
    #[error(transparent)]
    List(ApiError),
    /// A restore line ipvsadm refuses: it leaves with that line's status (ipvsadm -R
    /// runs each line through process_options, whose `fail(2, …)` exits).
    #[error("{}", .0.message)]
    RestoreRefused(UsageError),
    /// A change the daemon refused or could not do.
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Restore(#[from] RestoreFailure),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// What ipvsadm prints for a failed call: libipvs's words alone for a refused change.
fn print_api_error(e: &ApiError) {
    match e {
        ApiError::Daemon { ipvs: Some(msg), .. } => eprintln!("{msg}"),
        _ => eprintln!("{e}"),
    }
}

/// Runs one ipvsadm command line against the daemon at `paths` and returns the exit
/// status: 0; 2 for a command line ipvsadm refuses; 255 when the change fails (libipvs's
/// -1) or xlb cannot do it; 1 when a listing fails. With `output` JSON, listings print
/// the daemon's JSON (services, connections, timeouts) and changes `{"ok": true}`.
pub fn main(args: &[String], paths: &Paths, output: Output) -> i32 {
    let inv = match parse(args) {
        Ok(inv) => inv,
        Err(UsageError { message, status }) => {
            eprintln!("{message}");
            return status;
        }
    };
    match execute(&inv, paths, output) {
        Ok(()) => 0,
        Err(Failure::List(e)) => {
            print_api_error(&e);
            EXIT_LIST_FAILURE
        }
        Err(Failure::RestoreRefused(u)) => {
            eprintln!("{}", u.message);
            u.status
        }
        Err(Failure::Api(e)) => {
            print_api_error(&e);
            EXIT_FAILURE
        }
        Err(e @ (Failure::Restore(_) | Failure::Other(_))) => {
            eprintln!("{e:#}");
            EXIT_FAILURE
        }
    }
}

/// The connection table's size (its pinned map's entries), or IPVS's default 4096
/// when the pin cannot be read.
fn conn_table_size(paths: &Paths) -> u32 {
    aya::maps::MapInfo::from_pin(paths.pin_dir.join(lb_common::map_names::CONNS)).map_or(4096, |info| info.max_entries())
}

fn list(paths: &Paths) -> Result<Vec<ServiceView>, ApiError> {
    match api::call(&paths.socket, &Request::List)? {
        Reply::Services(s) => Ok(s),
        other => Err(ApiError::Malformed(format!("unexpected reply {other:?}"))),
    }
}

fn conns(paths: &Paths) -> Result<Vec<ConnView>, ApiError> {
    match api::call(&paths.socket, &Request::Conns)? {
        Reply::Conns(c) => Ok(c),
        other => Err(ApiError::Malformed(format!("unexpected reply {other:?}"))),
    }
}

fn json(value: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn execute(inv: &Invocation, paths: &Paths, output: Output) -> Result<(), Failure> {
    let call = |r: Request| api::call(&paths.socket, &r);
    let done = || -> Result<(), Failure> { if output == Output::Json { Ok(json(&serde_json::json!({ "ok": true }))?) } else { Ok(()) } };
    match inv.command {
        Command::Help => {
            println!("{USAGE}");
            return Ok(());
        }
        Command::Version => {
            println!("{}", version());
            return Ok(());
        }
        Command::StartDaemon | Command::StopDaemon => {
            let Some(config) = inv.daemon.clone() else { return Err(anyhow::anyhow!("no daemon role given").into()) };
            let request = if inv.command == Command::StartDaemon {
                Request::StartSyncDaemon { config }
            } else {
                Request::StopSyncDaemon { role: config.role }
            };
            call(request)?;
            return done();
        }
        _ => {}
    }
    if let Some(req) = mutation(inv) {
        call(req)?;
        return done();
    }
    match inv.command {
        Command::Save => print!("{}", save(&list(paths)?)),
        Command::Restore => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).map_err(anyhow::Error::from)?;
            let numbered = restore_requests(&text).map_err(Failure::RestoreRefused)?;
            let lines: Vec<usize> = numbered.iter().map(|(n, _)| *n).collect();
            let requests = numbered.into_iter().map(|(_, r)| r).collect();
            match call(Request::Batch { requests }) {
                Err(ApiError::Daemon { message, ipvs, failed_request: Some(i) }) if i < lines.len() => {
                    return Err(RestoreFailure { line: lines[i], message: ipvs.unwrap_or(message) }.into());
                }
                Err(e) => return Err(e.into()),
                Ok(_) => {}
            }
            return done();
        }
        Command::List if inv.timeout_listing => match call(Request::Settings).map_err(Failure::List)? {
            Reply::Settings(s) if output == Output::Json => json(&s)?,
            Reply::Settings(s) => println!("Timeout (tcp tcpfin udp): {} {} {}", s.tcp, s.tcpfin, s.udp),
            other => return Err(anyhow::anyhow!("unexpected reply {other:?}").into()),
        },
        // ipvsadm lists the kernel's master/backup sync daemons: xlb's daemon's.
        Command::List if inv.daemon_listing => match call(Request::SyncDaemons).map_err(Failure::List)? {
            Reply::SyncDaemons(views) if output == Output::Json => json(&views)?,
            Reply::SyncDaemons(views) => {
                for v in views {
                    println!("{}", v.line());
                }
            }
            other => return Err(anyhow::anyhow!("unexpected reply {other:?}").into()),
        },
        Command::List if inv.connections => {
            let c = conns(paths).map_err(Failure::List)?;
            if output == Output::Json {
                json(&c)?;
            } else {
                print!("{}", listing::conns_table(&c));
            }
        }
        Command::List => {
            let mut services = list(paths).map_err(Failure::List)?;
            if let Some(id) = inv.service {
                services.retain(|s| s.id == id);
                if services.is_empty() {
                    return Err(Failure::List(ApiError::Daemon {
                        message: format!("No such service: {id}"),
                        ipvs: Some(ops::ipvs_msg::NO_SERVICE.into()),
                        failed_request: None,
                    }));
                }
            }
            if output == Output::Json {
                return Ok(json(&services)?);
            }
            let templates = if inv.format == Format::PersistentConn { conns(paths).map_err(Failure::List)? } else { Vec::new() };
            if inv.service.is_none() {
                // ipvsadm prints IPVS's connection table size here; xlb's is the
                // connection table's as loaded (`--max-conns`).
                println!("IP Virtual Server version 1.2.1 (size={})", conn_table_size(paths));
            }
            print!("{}", listing::table(&services, inv.format, inv.exact, &templates));
        }
        _ => unreachable!("mutations handled above"),
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ops::RealView;

    fn p(line: &str) -> Result<Invocation, UsageError> {
        parse(&line.split_whitespace().map(String::from).collect::<Vec<_>>())
    }

    fn e(line: &str) -> String {
        p(line).unwrap_err().message
    }

    fn status(line: &str) -> i32 {
        p(line).unwrap_err().status
    }

    fn v6(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_seeds_commands_parse() {
        let i = p("-A -t 172.30.0.200:80 -s rr").unwrap();
        assert_eq!(i.command, Command::AddService);
        assert_eq!(i.options.scheduler, Scheduler::Rr);
        let i = p("-a -t 172.30.0.200:80 -r 10.0.0.7:80 -m").unwrap();
        assert_eq!((i.command, i.real, i.real_options.forward), (Command::AddServer, Some(RealAddr { ip: Ipv4Addr::new(10, 0, 0, 7).into(), port: Some(80) }), ForwardMethod::Masq));
        let i = p("-a -t 10.0.0.200:80 -r 10.0.0.14:80 -g -w 3").unwrap();
        assert_eq!(i.real_options.weight, 3);
        assert_eq!(p("-Ln").unwrap().command, Command::List);
        assert!(p("-Ln").unwrap().numeric);
        assert_eq!(p("-L -n --stats").unwrap().format, Format::Stats);
        assert!(p("-Lnc").unwrap().connections);
        assert_eq!(p("-C").unwrap().command, Command::Flush);
        assert_eq!(p("-Z").unwrap().command, Command::Zero);
        assert_eq!(p("--set 900 120 300").unwrap().timeouts, Some((900, 120, 300)));
    }

    #[test]
    fn bare_ipvsadm_lists_the_table() {
        // ipvsadm.c main(): `if (argc == 1) list_all(FMT_NONE)`.
        let i = parse(&[]).unwrap();
        assert_eq!((i.command, i.service, i.format, i.connections, i.timeout_listing), (Command::List, None, Format::Plain, false, false));
    }

    #[test]
    fn persistence_and_flags() {
        let i = p("-A -t 10.0.0.1:80 -s wlc -p").unwrap();
        assert_eq!(i.options.persistence.unwrap().timeout, 300);
        let i = p("-A -t 10.0.0.1:80 -p 600 -M 255.255.255.0").unwrap();
        assert_eq!(i.options.persistence, Some(Persistence { timeout: 600, netmask: Ipv4Addr::new(255, 255, 255, 0).into() }));
        // -M alone does not make a service persistent (IPVS ignores the mask then).
        assert_eq!(p("-A -t 10.0.0.1:80 -M 255.255.255.0").unwrap().options.persistence, None);
        let i = p("-A -u 10.0.0.1:53 -s sh -b sh-port,sh-fallback -o").unwrap();
        assert!(i.options.one_packet);
        assert_eq!(i.options.sched_flags, lb_common::svc_flags::SH_PORT | lb_common::svc_flags::SH_FALLBACK);
        let i = p("--add-service --tcp-service=10.0.0.1:http --scheduler=wrr").unwrap();
        assert_eq!(i.service, Some(ServiceId::Addr(Service { proto: Proto::Tcp, vip: Ipv4Addr::new(10, 0, 0, 1).into(), port: 80 })));
        assert_eq!(p("-A -f 3 -s rr").unwrap().service, Some(ServiceId::Fwmark(3)));
        assert_eq!(p("-a -t 10.0.0.1:80 -r 10.0.0.2 -w3").unwrap().real_options.weight, 3);
        // ipvsadm 1.31 saves tunnel reals with --tun-type ipip.
        let i = p("-a -t 10.0.0.1:80 -r 10.0.0.2:80 -i -w 1 --tun-type ipip").unwrap();
        assert_eq!(i.real_options.forward, ForwardMethod::Tunnel);
    }

    #[test]
    fn ipv6_in_ipvsadms_notation() {
        let i = p("-A -t [fd00:77::200]:80 -s rr").unwrap();
        assert_eq!(i.service, Some(ServiceId::Addr(Service { proto: Proto::Tcp, vip: v6("fd00:77::200"), port: 80 })));
        let i = p("-a -t [fd00:77::200]:80 -r [fd00:77::7]:80 -g").unwrap();
        assert_eq!(i.real, Some(RealAddr { ip: v6("fd00:77::7"), port: Some(80) }));
        // A bare IPv6 address has no port (parse_service: inet_pton before the ':' split).
        assert_eq!(p("-a -t [fd00:77::200]:80 -r fd00:77::7").unwrap().real, Some(RealAddr { ip: v6("fd00:77::7"), port: None }));
        let i = p("--add-service --udp-service=[2001:db8::1]:domain").unwrap();
        assert_eq!(i.service, Some(ServiceId::Addr(Service { proto: Proto::Udp, vip: v6("2001:db8::1"), port: 53 })));
        // -M is a prefix length for IPv6.
        let i = p("-A -t [fd00:77::200]:443 -s wlc -p 300 -M 64").unwrap();
        assert_eq!(i.options.persistence, Some(Persistence { timeout: 300, netmask: v6("ffff:ffff:ffff:ffff::") }));
        assert_eq!(e("-A -t [fd00::1]:80 -p -M 255.255.255.0"), "illegal ipv6 netmask specified");
        assert_eq!(e("-A -t [fd00::1]:80 -p -M 129"), "illegal ipv6 netmask specified");
        // fwmark services take -6, after -f.
        let i = p("-A -f 7 -6 -s rr").unwrap();
        assert_eq!((i.service, i.ipv6), (Some(ServiceId::Fwmark(7)), true));
        let i = p("-A -f 7 -6 -s rr -p 60 -M 48").unwrap();
        assert_eq!(i.options.persistence.unwrap().netmask, v6("ffff:ffff:ffff::"));
        assert_eq!(e("-A -6 -f 7"), "-6 used before -f");
        assert_eq!(e("-A -t 10.0.0.1:80 -6"), "-6 used before -f");
        assert_eq!(p("-a -f 7 -6 -r [fd00::7]:0 -g -w 1").unwrap().real, Some(RealAddr { ip: v6("fd00::7"), port: Some(0) }));
        // What ipvsadm refuses.
        assert_eq!(e("-A -t [fd00::1] -s rr"), "illegal virtual server address[:port] specified");
        assert_eq!(e("-A -t [fd00::1]80 -s rr"), "illegal virtual server address[:port] specified");
        assert_eq!(e("-A -t fd00::1:80 -s rr"), "Zero port specified for non-persistent service");
        assert_eq!(e("-a -t [fd00::1]:80 -r 10.0.0.1 -g"), "Different address family is allowed only for tunneling servers");
        assert_eq!(e("-a -f 7 -r [fd00::7]:0 -g"), "Different address family is allowed only for tunneling servers");
    }

    #[test]
    fn errors_are_ipvsadms() {
        assert_eq!(e("-A -t 10.0.0.300:80"), "illegal virtual server address[:port] specified");
        assert_eq!(e("-A -t 80"), "illegal virtual server address[:port] specified");
        assert_eq!(e("-a -t 10.0.0.1:80 -r nowhere.invalid.:80"), "illegal real server address[:port] specified");
        assert_eq!(e("-a -t 10.0.0.1:80 -r 10.0.0.2 -w 70000"), "illegal weight specified");
        assert_eq!(e("-A -t 10.0.0.1:80 -s fancy"), "Scheduler not found: ip_vs_fancy.ko");
        assert_eq!(e("-A -a -t 10.0.0.1:80"), "multiple commands specified");
        assert_eq!(e("-A -t 10.0.0.1:80 -u 10.0.0.1:53"), "multiple 'service-address' options specified");
        assert_eq!(e("-A -s rr"), "You need to supply the 'service-address' option for the 'add-service' command");
        assert_eq!(e("-a -t 10.0.0.1:80"), "You need to supply the 'real-server' option for the 'add-server' command");
        assert_eq!(e("-A -t 10.0.0.1:80 -w 2"), "Illegal 'weight' option with the 'add-service' command");
        assert_eq!(e("-D -t 10.0.0.1:80 -s rr"), "Illegal 'scheduler' option with the 'delete-service' command");
        assert_eq!(e("-L -c --timeout"), "The option 'timeout' conflicts with the 'connection' option in the 'list' command");
        assert_eq!(e("-L -c --stats"), "options conflicts in the list command");
        assert_eq!(e("--set 900 120"), "--set option requires 3 timeout values");
        assert_eq!(e("--set 900 x 300"), "invalid timeout value `x' specified");
        assert_eq!(e("-A -t 10.0.0.1:80 -p x1"), "unexpected argument x1");
        assert_eq!(e("-A -t 10.0.0.1:80 -p -M 255.0.0"), "illegal virtual server persistent mask specified");
        assert_eq!(e("-A -f 0"), "invalid fwmark value `0' specified");
        assert_eq!(e("-A -t 10.0.0.1:80 -o"), "One-Packet Scheduling is only for UDP virtual services");
        assert_eq!(e("-a -t 10.0.0.1:80 -r 10.0.0.2 -g --tun-type ipip"), "Tunnel options conflict with forward method");
        assert_eq!(e("-a -t 10.0.0.1:80 -r 10.0.0.2 -i --tun-port 6080"), "Illegal 'tun-port' option with the 'ipip' tunnel type");
        assert_eq!(e("--start-daemon primary"), "illegal start-daemon parameter specified");
        assert_eq!(e("-L extra"), "unexpected argument extra");
        assert_eq!(e("-L -q"), "-q: unknown option");
    }

    #[test]
    fn exit_statuses_are_ipvsadms() {
        // fail(2, …) for what ipvsadm's checks refuse.
        for line in ["-A -s rr", "-a -t 10.0.0.1:80 -r 10.0.0.2 -w 70000", "-A -a -t 10.0.0.1:80", "--set 1 2"] {
            assert_eq!(status(line), EXIT_USAGE, "{line}");
        }
        // popt's errors and what xlb cannot do leave with 255, as a libipvs failure.
        for line in ["-L -q", "--frobnicate", "-n", "-A --sctp-service 10.0.0.1:80", "-A -t 10.0.0.1:80 --pe sip", "-a -t 10.0.0.1:80 -r 10.0.0.2 -i --tun-type gue"] {
            assert_eq!(status(line), EXIT_FAILURE, "{line}");
        }
        let i = p("--start-daemon master --mcast-interface eth0 --syncid 3").unwrap();
        assert_eq!(i.command, Command::StartDaemon);
        let d = i.daemon.unwrap();
        assert_eq!((d.role, d.mcast_interface.as_str(), d.syncid, d.sync_maxlen), (crate::sync::Role::Master, "eth0", 3, None));
        let d = p("--start-daemon backup --mcast-interface br0 --sync-maxlen 1000 --mcast-group 239.1.2.3 --mcast-port 9000 --mcast-ttl 2")
            .unwrap()
            .daemon
            .unwrap();
        assert_eq!(d.role, crate::sync::Role::Backup);
        assert_eq!((d.sync_maxlen, d.mcast_group, d.mcast_port, d.mcast_ttl), (Some(1000), Some("239.1.2.3".parse().unwrap()), Some(9000), Some(2)));
        let i = p("--stop-daemon backup").unwrap();
        assert_eq!((i.command, i.daemon.unwrap().role), (Command::StopDaemon, crate::sync::Role::Backup));
        assert_eq!(e("--start-daemon master --syncid 256"), "illegal syncid specified");
        assert_eq!(e("--start-daemon master --mcast-group 10.0.0.1"), "illegal IPv4/IPv6 multicast address specified");
        assert_eq!(e("--stop-daemon master --mcast-interface eth0"), "Illegal 'mcast-interface' option with the 'stop-daemon' command");
        assert!(p("-L --daemon").unwrap().daemon_listing);
        assert_eq!(p("-h").unwrap().command, Command::Help);
        // With no daemon to talk to: a change fails with 255 (a sync daemon's start too),
        // a listing with 1.
        let paths = Paths::for_pin_dir(std::path::Path::new("/sys/fs/bpf/xlb-no-such-instance-for-tests"));
        let args = |l: &str| l.split_whitespace().map(String::from).collect::<Vec<_>>();
        assert_eq!(main(&args("-A -t 10.0.0.1:80 -s rr"), &paths, Output::Text), EXIT_FAILURE);
        assert_eq!(main(&args("-C"), &paths, Output::Text), EXIT_FAILURE);
        assert_eq!(main(&args("--start-daemon master"), &paths, Output::Text), EXIT_FAILURE);
        assert_eq!(main(&args("-L -n"), &paths, Output::Text), EXIT_LIST_FAILURE);
        assert_eq!(main(&args("-A -s rr"), &paths, Output::Text), EXIT_USAGE);
        assert_eq!(main(&args("-h"), &paths, Output::Text), 0);
    }

    #[test]
    fn restore_reads_ipvsadm_save_files_and_reports_lines() {
        let file = "-A -t 192.168.1.200:http -s wrr -p 300 -M 255.255.255.0\n\
                    -a -t 192.168.1.200:http -r 192.168.1.11:http -g -w 2\n\
                    -A -u 192.168.1.200:domain -s rr ops\n\
                    ipvsadm -a -u 192.168.1.200:domain -r 192.168.1.11:domain -i -w 1 --tun-type ipip\n";
        let reqs = restore_requests(file).unwrap();
        assert_eq!(reqs.len(), 4);
        assert!(matches!(reqs[2], (3, Request::AddService { options: ServiceOptions { one_packet: true, .. }, .. })));
        assert!(matches!(reqs[3], (4, Request::AddReal { options: RealOptions { forward: ForwardMethod::Tunnel, .. }, .. })));
        let bad = restore_requests("-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 10.0.0.2 -w -1\n").unwrap_err();
        assert_eq!(bad.message, "line 2: illegal weight specified");
        let bad = restore_requests("-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 10.0.0.2 -w 99999\n").unwrap_err();
        assert_eq!(bad.message, "line 2: illegal weight specified");
        assert!(restore_requests("-L -n\n").unwrap_err().message.contains("line 1"));
        // A persistence engine (`pe sip`, as ipvsadm-save writes it) is refused by name.
        assert!(restore_requests("-A -t 10.0.0.1:5060 -s rr -p 60 pe sip\n").unwrap_err().message.contains("persistence engine `sip'"));
        // -Z and --set run in a restore as ipvsadm -R runs every line; -C is refused.
        let reqs = restore_requests("--set 0 120 0\n-Z\n").unwrap();
        assert!(matches!(&reqs[0].1, Request::SetSettings { change } if change.tcp.is_none() && change.tcpfin == Some(120) && change.udp.is_none()));
        assert!(matches!(reqs[1].1, Request::Zero { service: None }));
        assert!(restore_requests("-A -t 10.0.0.1:80\n-C\n").unwrap_err().message.starts_with("line 2: -C in a restore file"));
    }

    /// The dual-stack file of a real ipvsadm-save (>= 1.26): every line taken.
    #[test]
    fn restore_reads_a_dual_stack_ipvsadm_save_file() {
        let file = "-A -t 10.77.0.200:80 -s rr\n\
                    -a -t 10.77.0.200:80 -r 10.77.0.7:80 -g -w 1\n\
                    -a -t 10.77.0.200:80 -r 10.77.0.14:80 -g -w 1\n\
                    -A -t [fd00:77::200]:80 -s rr\n\
                    -a -t [fd00:77::200]:80 -r [fd00:77::7]:80 -g -w 1\n\
                    -a -t [fd00:77::200]:80 -r [fd00:77::14]:80 -g -w 1\n\
                    -A -t [fd00:77::200]:443 -s wlc -p 300 -M 64\n\
                    -A -f 7 -6 -s rr\n";
        let reqs = restore_requests(file).unwrap();
        assert_eq!(reqs.len(), 8);
        let services: Vec<ServiceId> = reqs
            .iter()
            .filter_map(|(_, r)| match r {
                Request::AddService { service, .. } => Some(*service),
                _ => None,
            })
            .collect();
        assert_eq!(services.len(), 4);
        assert_eq!(services[3], ServiceId::Fwmark(7));
    }

    pub(crate) fn real(address: IpAddr, port: u16, forward: ForwardMethod, weight: u32) -> RealView {
        RealView::configured(address, port, forward, weight)
    }

    pub(crate) fn view(id: ServiceId, opts: ServiceOptions, reals: Vec<RealView>) -> ServiceView {
        ServiceView {
            id,
            frontends: Vec::new(),
            scheduler: opts.scheduler.name().to_string(),
            sched_flags: ops::sched_flag_names(opts.sched_flags).iter().map(|f| f.to_string()).collect(),
            persistence: opts.persistence,
            one_packet: opts.one_packet,
            reals,
            sorry_server: None,
            sorry_active: false,
            inhibit_on_failure: false,
        }
    }

    #[test]
    fn save_writes_what_ipvsadm_save_writes() {
        let vip = v6("fd00:77::200");
        let web = ServiceId::Addr(Service { proto: Proto::Tcp, vip, port: 80 });
        let tls = ServiceId::Addr(Service { proto: Proto::Tcp, vip, port: 443 });
        let rr = ServiceOptions { scheduler: Scheduler::Rr, ..Default::default() };
        let sticky = ServiceOptions { persistence: Some(Persistence { timeout: 300, netmask: v6("ffff:ffff:ffff:ffff::") }), ..Default::default() };
        let v4 = ServiceId::Addr(Service { proto: Proto::Udp, vip: "10.0.0.1".parse().unwrap(), port: 53 });
        let v4opts = ServiceOptions {
            scheduler: Scheduler::Sh,
            sched_flags: lb_common::svc_flags::SH_PORT,
            persistence: Some(Persistence { timeout: 60, netmask: "255.255.255.0".parse().unwrap() }),
            one_packet: true,
        };
        let services = vec![
            view(web, rr, vec![real(v6("fd00:77::7"), 80, ForwardMethod::Route, 1), real(v6("fd00:77::14"), 80, ForwardMethod::Route, 1)]),
            view(tls, sticky, vec![real(v6("fd00:77::7"), 443, ForwardMethod::Route, 2)]),
            view(ServiceId::Fwmark(7), rr, vec![real(v6("fd00:77::7"), 0, ForwardMethod::Tunnel, 1)]),
            view(v4, v4opts, vec![real("10.0.0.2".parse().unwrap(), 5353, ForwardMethod::Masq, 3)]),
        ];
        assert_eq!(
            save(&services),
            "-A -t [fd00:77::200]:80 -s rr\n\
             -a -t [fd00:77::200]:80 -r [fd00:77::7]:80 -g -w 1\n\
             -a -t [fd00:77::200]:80 -r [fd00:77::14]:80 -g -w 1\n\
             -A -t [fd00:77::200]:443 -s wlc -p 300 -M 64\n\
             -a -t [fd00:77::200]:443 -r [fd00:77::7]:443 -g -w 2\n\
             -A -f 7 -6 -s rr\n\
             -a -f 7 -6 -r [fd00:77::7]:0 -i -w 1 --tun-type ipip\n\
             -A -u 10.0.0.1:53 -s sh -b sh-port -p 60 -M 255.255.255.0 -o\n\
             -a -u 10.0.0.1:53 -r 10.0.0.2:5353 -m -w 3\n"
        );
    }

    /// Found by the ipvsadm_restore fuzz target (fuzz/): the maps keep an IPv6 mask of
    /// /96 or longer IPv4-mapped, so `-M 99` listed back as 224.0.0.0 and -S wrote
    /// `-M 224.0.0.0` for an IPv6 service, a line -R refuses.
    #[test]
    fn save_writes_a_long_ipv6_netmask_as_a_prefix_length() {
        let tls = ServiceId::Addr(Service { proto: Proto::Tcp, vip: v6("fd00:77::200"), port: 443 });
        // What ops::snapshot lists after `-A -t [fd00:77::200]:443 -p 299 -M 99`.
        let listed = ServiceOptions { persistence: Some(Persistence { timeout: 299, netmask: "224.0.0.0".parse().unwrap() }), ..Default::default() };
        let saved = save(&[view(tls, listed, vec![real(v6("fd00:77::7"), 443, ForwardMethod::Route, 1)])]);
        assert_eq!(saved, "-A -t [fd00:77::200]:443 -s wlc -p 299 -M 99\n-a -t [fd00:77::200]:443 -r [fd00:77::7]:443 -g -w 1\n");
        let restored = restore_requests(&saved).expect("-S output restores");
        match &restored[0] {
            (1, Request::AddService { service, options }) => {
                assert_eq!(*service, tls);
                assert_eq!(options.persistence, Some(Persistence { timeout: 299, netmask: IpAddr::V6(Ipv6Addr::from(u128::MAX << 29)) }));
            }
            other => panic!("line 1 restores to {other:?}"),
        }
        // /96 exactly is 0.0.0.0 in the IPv4-mapped form.
        let slash96 = ServiceOptions { persistence: Some(Persistence { timeout: 1, netmask: "0.0.0.0".parse().unwrap() }), ..Default::default() };
        assert_eq!(save(&[view(tls, slash96, vec![])]), "-A -t [fd00:77::200]:443 -s wlc -p 1 -M 96\n");
    }

    /// A small deterministic generator (xorshift64*), so failures reproduce.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn chance(&mut self) -> bool {
            self.below(2) == 0
        }
    }

    /// A random configuration of the kinds ipvsadm can hold: IPv4 and IPv6 TCP/UDP
    /// services and fwmark groups of either family, persistence with netmasks and prefix
    /// lengths, scheduler flags, one-packet UDP, DR/NAT (port mapping)/TUN reals,
    /// weights and thresholds.
    fn random_config(rng: &mut Rng) -> Vec<ServiceView> {
        let schedulers = [Scheduler::Rr, Scheduler::Wrr, Scheduler::Lc, Scheduler::Wlc, Scheduler::Sh, Scheduler::Mh, Scheduler::Sed, Scheduler::Nq, Scheduler::Dh, Scheduler::Fo, Scheduler::Ovf];
        let mut out: Vec<ServiceView> = Vec::new();
        for n in 0..rng.below(6) + 1 {
            let ipv6 = rng.chance();
            let addr = |rng: &mut Rng, net: u8| -> IpAddr {
                if ipv6 {
                    IpAddr::V6(Ipv6Addr::new(0xfd00, net as u16, 0, 0, 0, 0, rng.below(4) as u16, rng.below(60000) as u16 + 1))
                } else {
                    IpAddr::V4(Ipv4Addr::new(10, net, rng.below(250) as u8, rng.below(250) as u8 + 1))
                }
            };
            let fwmark = rng.below(4) == 0;
            let proto = if rng.chance() { Proto::Tcp } else { Proto::Udp };
            let id = if fwmark {
                ServiceId::Fwmark(n as u32 + 1 + rng.below(1000) as u32 * 8)
            } else {
                ServiceId::Addr(Service { proto, vip: addr(rng, 1), port: n as u16 * 1000 + rng.below(999) as u16 + 1 })
            };
            let scheduler = schedulers[rng.below(schedulers.len() as u64) as usize];
            let sched_flags = match scheduler {
                Scheduler::Sh if rng.chance() => lb_common::svc_flags::SH_PORT | lb_common::svc_flags::SH_FALLBACK,
                Scheduler::Mh if rng.chance() => lb_common::svc_flags::MH_PORT,
                _ => 0,
            };
            let persistence = rng.chance().then(|| {
                let netmask = match rng.below(3) {
                    0 => ops::ONE_CLIENT,
                    _ if ipv6 => IpAddr::V6(Ipv6Addr::from(u128::MAX << (128 - (rng.below(127) as u32 + 1)))),
                    _ => IpAddr::V4(Ipv4Addr::from(u32::MAX << (32 - (rng.below(31) as u32 + 1)))),
                };
                Persistence { timeout: rng.below(86400) as u32 + 1, netmask }
            });
            let one_packet = matches!(id, ServiceId::Addr(Service { proto: Proto::Udp, .. })) && rng.below(4) == 0;
            let opts = ServiceOptions { scheduler, sched_flags, persistence, one_packet };
            let service_port = match id {
                ServiceId::Addr(s) => s.port,
                ServiceId::Fwmark(_) => 0,
            };
            // xlb keeps a group's family in its members: an IPv6 group has a real.
            let reals = if fwmark && ipv6 { rng.below(3) + 1 } else { rng.below(4) };
            let mut list: Vec<RealView> = Vec::new();
            for _ in 0..reals {
                let forward = [ForwardMethod::Route, ForwardMethod::Masq, ForwardMethod::Tunnel][rng.below(3) as usize];
                let port = if forward == ForwardMethod::Masq { rng.below(65000) as u16 + 1 } else { service_port };
                let mut r = real(addr(rng, 2), port, forward, rng.below(65536) as u32);
                if rng.below(3) == 0 {
                    r.u_threshold = rng.below(1000) as u32 + 1;
                    r.l_threshold = rng.below(r.u_threshold as u64) as u32;
                }
                if !list.iter().any(|x| (x.address, x.port) == (r.address, r.port)) {
                    list.push(r);
                }
            }
            if !out.iter().any(|s| s.id == id) {
                out.push(view(id, opts, list));
            }
        }
        out
    }

    /// What the requests of a restore make, as the daemon keeps it (a model of -R).
    fn apply(requests: &[(usize, Request)]) -> Vec<ServiceView> {
        let mut out: Vec<ServiceView> = Vec::new();
        for (_, r) in requests {
            match r {
                Request::AddService { service, options } => out.push(view(*service, *options, Vec::new())),
                Request::AddReal { service, address, options } => {
                    let s = out.iter_mut().find(|s| s.id == *service).expect("service added first");
                    let port = address.port.unwrap_or(s.port());
                    let mut r = real(address.ip, port, options.forward, options.weight);
                    (r.u_threshold, r.l_threshold) = (options.u_threshold, options.l_threshold);
                    s.reals.push(r);
                }
                other => panic!("a saved configuration restores with -A and -a only, not {other:?}"),
            }
        }
        out
    }

    /// What a service is to ipvsadm, field by field.
    fn essence(s: &ServiceView) -> String {
        let reals: Vec<String> = s
            .reals
            .iter()
            .map(|r| format!("{} {:?} w{} x{} y{}", SocketAddr::new(r.address, r.port), r.forward, r.weight, r.u_threshold, r.l_threshold))
            .collect();
        let persistence = s.persistence.map(|p| (p.timeout, listing::netmask_text(s)));
        format!(
            "{} v6={} {} {:?} {:?} ops={} [{}]",
            s.id,
            listing::is_ipv6(s),
            s.scheduler,
            s.sched_flags,
            persistence,
            s.one_packet,
            reals.join(", ")
        )
    }

    #[test]
    fn save_then_restore_gives_back_every_generated_configuration() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..500 {
            let config = random_config(&mut rng);
            let rules = save(&config);
            let requests = restore_requests(&rules).unwrap_or_else(|e| panic!("round {round}: {}\n{rules}", e.message));
            let back = apply(&requests);
            let want: Vec<String> = config.iter().map(essence).collect();
            let got: Vec<String> = back.iter().map(essence).collect();
            assert_eq!(got, want, "round {round}:\n{rules}");
            assert_eq!(save(&back), rules, "round {round}");
        }
    }
}
