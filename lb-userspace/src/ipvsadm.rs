//! `xlb ipvsadm` / `xlbadm`: ipvsadm's command line and output, on top of the daemon's
//! API. Every ipvsadm command in an LVS script runs unchanged once `ipvsadm` is replaced
//! by `xlb ipvsadm`. Messages are ipvsadm's (its `fail()` texts and libipvs's
//! ipvs_strerror), and `-S` writes lines that `-R` and the real ipvsadm-restore accept.
use std::{
    ffi::CString,
    io::Read,
    net::{Ipv4Addr, ToSocketAddrs},
};

use anyhow::Result;

use crate::{
    api::{self, DaemonError, Paths, Reply, Request, SettingsChange},
    listing::{self, Format},
    ops::{
        self, ForwardMethod, Persistence, Proto, RealAddr, RealOptions, Scheduler, Service, ServiceId, ServiceOptions,
        ServiceView,
    },
};

/// An ipvsadm usage error: printed as is, exit status 2 (ipvsadm's fail(2, …)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

fn fail<T>(msg: impl Into<String>) -> Result<T, UsageError> {
    Err(UsageError(msg.into()))
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
    Restore,
    Save,
    Zero,
}

impl Command {
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
            Command::Restore => "restore",
            Command::Save => "save",
            Command::Zero => "zero",
        }
    }
}

/// One parsed ipvsadm command line.
#[derive(Clone, Debug, PartialEq)]
pub struct Invocation {
    pub command: Command,
    pub service: Option<ServiceId>,
    pub options: ServiceOptions,
    pub real: Option<RealAddr>,
    pub real_options: RealOptions,
    pub numeric: bool,
    pub connections: bool,
    pub timeout_listing: bool,
    pub format: Format,
    pub exact: bool,
    pub timeouts: Option<(u32, u32, u32)>,
    /// Options given, by ipvsadm's option names (for the command/option checks).
    given: Vec<&'static str>,
}

/// Options that take an argument, by short and long name.
const WITH_ARG: [(char, &str); 10] = [
    ('t', "tcp-service"),
    ('u', "udp-service"),
    ('f', "fwmark-service"),
    ('s', "scheduler"),
    ('M', "netmask"),
    ('r', "real-server"),
    ('w', "weight"),
    ('x', "u-threshold"),
    ('y', "l-threshold"),
    ('b', "sched-flags"),
];

const FLAGS: [(char, &str); 23] = [
    ('A', "add-service"),
    ('E', "edit-service"),
    ('D', "delete-service"),
    ('C', "clear"),
    ('R', "restore"),
    ('S', "save"),
    ('a', "add-server"),
    ('e', "edit-server"),
    ('d', "delete-server"),
    ('L', "list"),
    ('l', "list"),
    ('Z', "zero"),
    ('m', "masquerading"),
    ('i', "ipip"),
    ('g', "gatewaying"),
    ('n', "numeric"),
    ('c', "connection"),
    ('X', "exact"),
    ('o', "ops"),
    ('h', "help"),
    ('p', "persistent"),
    ('\0', "set"),
    ('\0', "timeout"),
];

const LONG_ONLY_FLAGS: [&str; 6] = ["stats", "rate", "thresholds", "persistent-conn", "nosort", "sort"];

/// Splits argv into (option name, argument) pairs the way popt does: clustered short
/// flags (`-Ln`), attached arguments (`-w3`, `--weight=3`), `-p` with an optional value.
fn tokens(args: &[String]) -> Result<(Vec<(String, Option<String>)>, Vec<String>), UsageError> {
    let mut out = Vec::new();
    let mut positional = Vec::new();
    let mut i = 0;
    let takes_arg = |name: &str| WITH_ARG.iter().any(|(_, l)| *l == name);
    let optional_value = |args: &[String], i: usize| {
        args.get(i + 1).filter(|v| !v.starts_with('-') && v.parse::<u32>().is_ok()).cloned()
    };
    while i < args.len() {
        let a = &args[i];
        if let Some(long) = a.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (long.to_string(), None),
            };
            let known = takes_arg(&name)
                || FLAGS.iter().any(|(_, l)| *l == name)
                || LONG_ONLY_FLAGS.contains(&name.as_str());
            if !known {
                return fail(format!("invalid option `{a}'"));
            }
            if takes_arg(&name) {
                let value = match inline {
                    Some(v) => v,
                    None => {
                        i += 1;
                        match args.get(i) {
                            Some(v) => v.clone(),
                            None => return fail(format!("--{name}: missing argument")),
                        }
                    }
                };
                out.push((name, Some(value)));
            } else if name == "persistent" {
                let value = inline.or_else(|| optional_value(args, i));
                if value.is_some() && !long.contains('=') {
                    i += 1;
                }
                out.push((name, value));
            } else {
                out.push((name, None));
            }
        } else if a.len() > 1 && a.starts_with('-') {
            let chars: Vec<char> = a[1..].chars().collect();
            let mut j = 0;
            while j < chars.len() {
                let c = chars[j];
                let rest: String = chars[j + 1..].iter().collect();
                if let Some((_, long)) = WITH_ARG.iter().find(|(s, _)| *s == c) {
                    let value = if !rest.is_empty() {
                        rest
                    } else {
                        i += 1;
                        match args.get(i) {
                            Some(v) => v.clone(),
                            None => return fail(format!("-{c}: missing argument")),
                        }
                    };
                    out.push((long.to_string(), Some(value)));
                    break;
                } else if c == 'p' {
                    let value = if !rest.is_empty() {
                        Some(rest)
                    } else {
                        let v = optional_value(args, i);
                        if v.is_some() {
                            i += 1;
                        }
                        v
                    };
                    out.push(("persistent".into(), value));
                    break;
                } else if let Some((_, long)) = FLAGS.iter().find(|(s, _)| *s == c && c != '\0') {
                    out.push((long.to_string(), None));
                    j += 1;
                } else {
                    return fail(format!("invalid option `-{c}'"));
                }
            }
        } else {
            positional.push(a.clone());
        }
        i += 1;
    }
    Ok((out, positional))
}

fn number(v: &str, min: u64, max: u64) -> Option<u64> {
    v.parse::<u64>().ok().filter(|n| (min..=max).contains(n))
}

/// A host name or dotted quad (resolved as ipvsadm does, through the system resolver).
fn host(name: &str) -> Option<Ipv4Addr> {
    if let Ok(ip) = name.parse() {
        return Some(ip);
    }
    (name, 0).to_socket_addrs().ok()?.find_map(|a| match a.ip() {
        std::net::IpAddr::V4(v4) => Some(v4),
        _ => None,
    })
}

/// A port number or a service name from /etc/services.
fn port(name: &str, proto: Proto) -> Option<u16> {
    if let Ok(p) = name.parse::<u16>() {
        return Some(p);
    }
    let (n, p) = (CString::new(name).ok()?, CString::new(proto.name().to_ascii_lowercase()).ok()?);
    let ent = unsafe { libc::getservbyname(n.as_ptr(), p.as_ptr()) };
    if ent.is_null() { None } else { Some(u16::from_be(unsafe { (*ent).s_port } as u16)) }
}

/// "addr[:port]": (address, port if given).
fn addr_port(s: &str, proto: Proto) -> Option<(Ipv4Addr, Option<u16>)> {
    match s.rsplit_once(':') {
        Some((a, p)) => Some((host(a)?, Some(port(p, proto)?))),
        None => Some((host(s)?, None)),
    }
}

/// Which options each command accepts ('+': required, 'x': illegal), from ipvsadm's
/// commands_v_options table for the options xlb supports.
fn check(cmd: Command, given: &[&'static str]) -> Result<(), UsageError> {
    use Command::*;
    let service_cmds = [AddService, EditService, DelService];
    let server_cmds = [AddServer, EditServer, DelServer];
    let required: &[&str] = match cmd {
        AddService | EditService | DelService => &["service-address"],
        AddServer | EditServer | DelServer => &["service-address", "real-server"],
        _ => &[],
    };
    for r in required {
        if !given.contains(r) {
            return fail(format!("You need to supply the '{r}' option for the '{}' command", cmd.name()));
        }
    }
    let illegal: Vec<&str> = match cmd {
        _ if service_cmds.contains(&cmd) => {
            let mut v = vec!["real-server", "forwarding-method", "weight", "u-threshold", "l-threshold"];
            v.extend(["numeric", "connection", "timeout", "stats", "rate", "thresholds", "exact"]);
            if cmd == DelService {
                v.extend(["scheduler", "persistent", "netmask", "ops", "sched-flags"]);
            }
            v
        }
        _ if server_cmds.contains(&cmd) => {
            let mut v = vec!["scheduler", "persistent", "netmask", "ops", "sched-flags"];
            v.extend(["numeric", "connection", "timeout", "stats", "rate", "thresholds", "exact"]);
            if cmd == DelServer {
                v.extend(["forwarding-method", "weight", "u-threshold", "l-threshold"]);
            }
            v
        }
        List => vec!["scheduler", "persistent", "netmask", "real-server", "forwarding-method", "weight", "u-threshold", "l-threshold", "ops", "sched-flags"],
        Flush | Restore | Save | Set | Zero => {
            let mut v = vec!["scheduler", "persistent", "netmask", "real-server", "forwarding-method", "weight"];
            v.extend(["u-threshold", "l-threshold", "connection", "timeout", "stats", "rate", "thresholds", "ops", "sched-flags"]);
            if cmd != Zero {
                v.push("service-address");
            }
            if cmd != Save {
                v.push("numeric");
            }
            v
        }
        _ => vec![],
    };
    for g in given {
        if illegal.contains(g) {
            return fail(format!("Illegal '{g}' option with the '{}' command", cmd.name()));
        }
    }
    Ok(())
}

/// Parses one ipvsadm command line.
pub fn parse(args: &[String]) -> Result<Invocation, UsageError> {
    let (toks, positional) = tokens(args)?;
    let mut inv = Invocation {
        command: Command::List,
        service: None,
        options: ServiceOptions::default(),
        real: None,
        real_options: RealOptions::default(),
        numeric: false,
        connections: false,
        timeout_listing: false,
        format: Format::Plain,
        exact: false,
        timeouts: None,
        given: Vec::new(),
    };
    let mut command = None;
    for (name, value) in &toks {
        let v = value.as_deref().unwrap_or("");
        let cmd = match name.as_str() {
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
            _ => None,
        };
        if let Some(c) = cmd {
            if command.is_some_and(|prev| prev != c) {
                return fail("multiple commands specified");
            }
            command = Some(c);
            continue;
        }
        let given = match name.as_str() {
            "tcp-service" | "udp-service" => {
                let proto = if name == "tcp-service" { Proto::Tcp } else { Proto::Udp };
                let Some((vip, p)) = addr_port(v, proto) else {
                    return fail("illegal virtual server address[:port] specified");
                };
                let Some(p) = p.filter(|p| *p != 0) else {
                    return fail("illegal virtual server address[:port] specified: xlb needs a port (for all ports use a firewall-mark group: `xlb frontend add MARK tcp VIP:1-65535`)");
                };
                inv.service = Some(ServiceId::Addr(Service { proto, vip: vip.into(), port: p }));
                "service-address"
            }
            "fwmark-service" => {
                let Some(m) = number(v, 1, u32::MAX as u64) else { return fail("illegal fwmark specified") };
                inv.service = Some(ServiceId::Fwmark(m as u32));
                "service-address"
            }
            "scheduler" => {
                inv.options.scheduler = match v.parse::<Scheduler>() {
                    Ok(s) => s,
                    // libipvs's words when the kernel has no such scheduler module.
                    Err(_) => return fail(format!("Scheduler not found: ip_vs_{v}.ko")),
                };
                "scheduler"
            }
            "persistent" => {
                let timeout = match value {
                    None => ops::DEFAULT_PERSISTENCE_TIMEOUT,
                    Some(t) => match number(t, 1, 31 * 24 * 3600) {
                        Some(t) => t as u32,
                        None => return fail(format!("illegal timeout value `{t}' specified")),
                    },
                };
                let mask = inv.options.persistence.map_or(ops::ONE_CLIENT, |p| p.netmask);
                inv.options.persistence = Some(Persistence { timeout, netmask: mask });
                "persistent"
            }
            "netmask" => {
                let Ok(mask) = ops::parse_netmask(v) else {
                    return fail("illegal virtual server persistent mask specified");
                };
                let timeout = inv.options.persistence.map_or(ops::DEFAULT_PERSISTENCE_TIMEOUT, |p| p.timeout);
                inv.options.persistence = Some(Persistence { timeout, netmask: mask });
                "netmask"
            }
            "real-server" => {
                let Some((ip, port)) = addr_port(v, Proto::Tcp) else {
                    return fail("illegal real server address[:port] specified");
                };
                inv.real = Some(RealAddr { ip: ip.into(), port });
                "real-server"
            }
            "gatewaying" | "masquerading" | "ipip" => {
                inv.real_options.forward = match name.as_str() {
                    "masquerading" => ForwardMethod::Masq,
                    "ipip" => ForwardMethod::Tunnel,
                    _ => ForwardMethod::Route,
                };
                "forwarding-method"
            }
            "weight" => {
                let Some(w) = number(v, 0, 65535) else { return fail("illegal weight specified") };
                inv.real_options.weight = w as u32;
                "weight"
            }
            "u-threshold" => {
                let Some(x) = number(v, 0, i32::MAX as u64) else { return fail("illegal u_threshold specified") };
                inv.real_options.u_threshold = x as u32;
                "u-threshold"
            }
            "l-threshold" => {
                let Some(y) = number(v, 0, i32::MAX as u64) else { return fail("illegal l_threshold specified") };
                inv.real_options.l_threshold = y as u32;
                "l-threshold"
            }
            "sched-flags" => {
                inv.options.sched_flags = match ops::parse_sched_flags(v) {
                    Ok(f) => f,
                    Err(_) => return fail(format!("invalid scheduler flag `{v}'")),
                };
                "sched-flags"
            }
            "ops" => {
                inv.options.one_packet = true;
                "ops"
            }
            "numeric" => {
                inv.numeric = true;
                "numeric"
            }
            "connection" => {
                inv.connections = true;
                "connection"
            }
            "timeout" => {
                inv.timeout_listing = true;
                "timeout"
            }
            "stats" => {
                inv.format = Format::Stats;
                "stats"
            }
            "rate" => {
                inv.format = Format::Rate;
                "rate"
            }
            "thresholds" => {
                inv.format = Format::Thresholds;
                "thresholds"
            }
            "exact" => {
                inv.exact = true;
                "exact"
            }
            "persistent-conn" | "nosort" | "sort" => continue,
            "help" => return fail(USAGE),
            other => return fail(format!("invalid option `--{other}'")),
        };
        inv.given.push(given);
    }
    let Some(command) = command else { return fail(USAGE) };
    inv.command = command;
    if command == Command::Set {
        let [tcp, fin, udp] = positional.as_slice() else { return fail("--set option requires 3 timeout values") };
        let t = |s: &String| number(s, 0, 31 * 24 * 3600).map(|n| n as u32);
        match (t(tcp), t(fin), t(udp)) {
            (Some(a), Some(b), Some(c)) => inv.timeouts = Some((a, b, c)),
            _ => {
                let bad = [tcp, fin, udp].into_iter().find(|s| t(s).is_none()).expect("one is bad");
                return fail(format!("illegal timeout value `{bad}' specified"));
            }
        }
    } else if let Some(extra) = positional.first() {
        return fail(format!("unexpected argument {extra}"));
    }
    check(command, &inv.given)?;
    Ok(inv)
}

const USAGE: &str = "Usage:
  xlb ipvsadm -A|E virtual-service [-s scheduler] [-p [timeout]] [-M netmask] [-b sched-flags] [-o]
  xlb ipvsadm -D virtual-service
  xlb ipvsadm -C
  xlb ipvsadm -R
  xlb ipvsadm -S [-n]
  xlb ipvsadm -a|e virtual-service -r server-address [options]
  xlb ipvsadm -d virtual-service -r server-address
  xlb ipvsadm -L|l [virtual-service] [options]
  xlb ipvsadm -Z [virtual-service]
  xlb ipvsadm --set tcp tcpfin udp
virtual-service:
  --tcp-service|-t  service-address   service-address is host[:port]
  --udp-service|-u  service-address   service-address is host[:port]
  --fwmark-service|-f fwmark          fwmark is an integer greater than zero";

/// The request an add/edit/delete invocation makes.
fn mutation(inv: &Invocation) -> Option<Request> {
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

fn service_arg(id: &ServiceId) -> String {
    match id {
        ServiceId::Addr(a) => format!("{} {}:{}", if a.proto == Proto::Tcp { "-t" } else { "-u" }, a.vip, a.port),
        ServiceId::Fwmark(m) => format!("-f {m}"),
    }
}

/// `ipvsadm -S -n`: rules that ipvsadm-restore (real or ours) reads back.
pub fn save(services: &[ServiceView]) -> String {
    let mut out = String::new();
    for s in services {
        let svc = service_arg(&s.id);
        out.push_str(&format!("-A {svc} -s {}", s.scheduler));
        if let Some(p) = s.persistence {
            out.push_str(&format!(" -p {}", p.timeout));
            if p.netmask != ops::ONE_CLIENT {
                out.push_str(&format!(" -M {}", p.netmask));
            }
        }
        if !s.sched_flags.is_empty() {
            out.push_str(&format!(" -b {}", s.sched_flags.join(",")));
        }
        if s.one_packet {
            out.push_str(" -o");
        }
        out.push('\n');
        for r in &s.reals {
            out.push_str(&format!("-a {svc} -r {}:{} {} -w {}", r.address, r.port, r.forward.switch(), r.weight));
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
/// number; line numbers in errors.
pub fn restore_requests(text: &str) -> Result<Vec<(usize, Request)>, UsageError> {
    let mut requests = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // Older ipvsadm-save wrote the one-packet flag as a bare word.
        let args: Vec<String> = line.split_whitespace().map(|w| if w == "ops" { "-o".into() } else { w.to_string() }).collect();
        let inv = parse(&args).map_err(|e| UsageError(format!("line {}: {}", n + 1, e.0)))?;
        match mutation(&inv) {
            Some(r) => requests.push((n + 1, r)),
            None => return Err(UsageError(format!("line {}: only -A, -E, -D, -a, -e and -d can be restored", n + 1))),
        }
    }
    Ok(requests)
}

fn print_daemon_error(e: &anyhow::Error) {
    match e.downcast_ref::<DaemonError>() {
        // What ipvsadm prints: libipvs's words alone.
        Some(DaemonError { ipvs: Some(msg), .. }) => eprintln!("{msg}"),
        _ => eprintln!("{e:#}"),
    }
}

/// A restore line that the daemon refused: "line N: message".
#[derive(Debug)]
struct RestoreFailure {
    line: usize,
    message: String,
}

impl std::fmt::Display for RestoreFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for RestoreFailure {}

/// Runs one ipvsadm command line against the daemon at `paths`; returns the exit status.
pub fn main(args: &[String], paths: &Paths) -> i32 {
    let inv = match parse(args) {
        Ok(inv) => inv,
        Err(UsageError(msg)) => {
            eprintln!("{msg}");
            return 2;
        }
    };
    match execute(&inv, paths) {
        Ok(()) => 0,
        Err(e) => {
            print_daemon_error(&e);
            1
        }
    }
}

fn list(paths: &Paths) -> Result<Vec<ServiceView>> {
    match api::call(&paths.socket, &Request::List)? {
        Reply::Services(s) => Ok(s),
        other => anyhow::bail!("unexpected reply {other:?}"),
    }
}

fn execute(inv: &Invocation, paths: &Paths) -> Result<()> {
    let call = |r: Request| api::call(&paths.socket, &r);
    if let Some(req) = mutation(inv) {
        call(req)?;
        return Ok(());
    }
    match inv.command {
        Command::Flush => {
            call(Request::Clear)?;
        }
        Command::Zero => {
            call(Request::Zero { service: inv.service })?;
        }
        Command::Set => {
            let (tcp, tcpfin, udp) = inv.timeouts.expect("parsed with --set");
            let change = SettingsChange { tcp: Some(tcp), tcpfin: Some(tcpfin), udp: Some(udp), ..Default::default() };
            call(Request::SetSettings { change })?;
        }
        Command::Save => print!("{}", save(&list(paths)?)),
        Command::Restore => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text)?;
            let numbered = restore_requests(&text).map_err(|e| anyhow::anyhow!(e.0))?;
            let lines: Vec<usize> = numbered.iter().map(|(n, _)| *n).collect();
            let requests = numbered.into_iter().map(|(_, r)| r).collect();
            if let Err(e) = call(Request::Batch { requests }) {
                let Some(d) = e.downcast_ref::<DaemonError>() else { return Err(e) };
                let Some(line) = d.failed_request.and_then(|i| lines.get(i)) else { return Err(e) };
                let message = d.ipvs.clone().unwrap_or_else(|| d.message.clone());
                return Err(RestoreFailure { line: *line, message }.into());
            }
        }
        Command::List if inv.timeout_listing => {
            if let Reply::Settings(s) = call(Request::Settings)? {
                println!("Timeout (tcp tcpfin udp): {} {} {}", s.tcp, s.tcpfin, s.udp);
            }
        }
        Command::List if inv.connections => {
            if let Reply::Conns(c) = call(Request::Conns)? {
                print!("{}", listing::conns_table(&c));
            }
        }
        Command::List => {
            let mut services = list(paths)?;
            if let Some(id) = inv.service {
                services.retain(|s| s.id == id);
                if services.is_empty() {
                    anyhow::bail!(DaemonError {
                        message: format!("No such service: {id}"),
                        ipvs: Some(ops::ipvs_msg::NO_SERVICE.into()),
                        failed_request: None,
                    });
                }
            } else {
                // As ipvsadm; xlb holds up to MAX_CONNS connections, not IPVS's hash size.
                println!("IP Virtual Server version 1.2.1 (size=4096)");
            }
            print!("{}", listing::table(&services, inv.format, inv.exact));
        }
        _ => unreachable!("mutations handled above"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(line: &str) -> Result<Invocation, UsageError> {
        parse(&line.split_whitespace().map(String::from).collect::<Vec<_>>())
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
    fn persistence_and_flags() {
        let i = p("-A -t 10.0.0.1:80 -s wlc -p").unwrap();
        assert_eq!(i.options.persistence.unwrap().timeout, 300);
        let i = p("-A -t 10.0.0.1:80 -p 600 -M 255.255.255.0").unwrap();
        assert_eq!(i.options.persistence, Some(Persistence { timeout: 600, netmask: Ipv4Addr::new(255, 255, 255, 0).into() }));
        let i = p("-A -u 10.0.0.1:53 -s sh -b sh-port,sh-fallback -o").unwrap();
        assert!(i.options.one_packet);
        assert_eq!(i.options.sched_flags, lb_common::svc_flags::SH_PORT | lb_common::svc_flags::SH_FALLBACK);
        let i = p("--add-service --tcp-service=10.0.0.1:http --scheduler=wrr").unwrap();
        assert_eq!(i.service, Some(ServiceId::Addr(Service { proto: Proto::Tcp, vip: Ipv4Addr::new(10, 0, 0, 1).into(), port: 80 })));
        assert_eq!(p("-A -f 3 -s rr").unwrap().service, Some(ServiceId::Fwmark(3)));
        assert_eq!(p("-a -t 10.0.0.1:80 -r 10.0.0.2 -w3").unwrap().real_options.weight, 3);
    }

    #[test]
    fn errors_are_ipvsadms() {
        let e = |l: &str| p(l).unwrap_err().0;
        assert_eq!(e("-A -t 10.0.0.300:80"), "illegal virtual server address[:port] specified");
        assert_eq!(e("-a -t 10.0.0.1:80 -r nowhere.invalid.:80"), "illegal real server address[:port] specified");
        assert_eq!(e("-a -t 10.0.0.1:80 -r 10.0.0.2 -w 70000"), "illegal weight specified");
        assert_eq!(e("-A -t 10.0.0.1:80 -s fancy"), "Scheduler not found: ip_vs_fancy.ko");
        assert_eq!(e("-A -a -t 10.0.0.1:80"), "multiple commands specified");
        assert_eq!(e("-A -s rr"), "You need to supply the 'service-address' option for the 'add-service' command");
        assert_eq!(e("-a -t 10.0.0.1:80"), "You need to supply the 'real-server' option for the 'add-server' command");
        assert_eq!(e("-A -t 10.0.0.1:80 -w 2"), "Illegal 'weight' option with the 'add-service' command");
        assert_eq!(e("-D -t 10.0.0.1:80 -s rr"), "Illegal 'scheduler' option with the 'delete-service' command");
        assert_eq!(e("--set 900 120"), "--set option requires 3 timeout values");
        assert_eq!(e("--set 900 x 300"), "illegal timeout value `x' specified");
        assert_eq!(e("-A -t 10.0.0.1:80 -M 255.0.0"), "illegal virtual server persistent mask specified");
        assert_eq!(e("-L -q"), "invalid option `-q'");
        assert_eq!(e("-L extra"), "unexpected argument extra");
    }

    #[test]
    fn restore_reads_ipvsadm_save_files_and_reports_lines() {
        let file = "-A -t 192.168.1.200:http -s wrr -p 300 -M 255.255.255.0\n\
                    -a -t 192.168.1.200:http -r 192.168.1.11:http -g -w 2\n\
                    -A -u 192.168.1.200:domain -s rr ops\n";
        let reqs = restore_requests(file).unwrap();
        assert_eq!(reqs.len(), 3);
        assert!(matches!(reqs[2], (3, Request::AddService { options: ServiceOptions { one_packet: true, .. }, .. })));
        let bad = restore_requests("-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 10.0.0.2 -w -1\n").unwrap_err();
        assert_eq!(bad.0, "line 2: illegal weight specified");
        assert!(restore_requests("-L -n\n").unwrap_err().0.contains("line 1"));
    }
}
