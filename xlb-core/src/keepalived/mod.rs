//! keepalived.conf as xlb's config: `virtual_server` and `virtual_server_group` blocks
//! become services, `real_server` blocks reals, and their checkers xlb's health checks
//! (keepalived/check/check_parser.c's keywords, with keepalived's defaults).
//!
//! VRRP (`vrrp_*`), `global_defs` and `static_*` stay keepalived's job: one note says
//! so. A keyword xlb does not know is a warning naming file, line and keyword; a
//! syntax error or a value xlb cannot honour refuses the whole file (nothing changes).
pub mod parser;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::Path,
};

use anyhow::{Context, Result, bail};
pub use parser::{Loc, Node, Warning};

use crate::{
    config::{self, Config, ServiceConfig},
    health::{CheckKind, HealthConfig, OnFailure, checkers::Url},
    ops::{self, ForwardMethod, Persistence, Proto, RealAddr, RealOptions, Scheduler, Service, ServiceId, ServiceOptions},
};

/// keepalived's defaults (check_data.c alloc_vs, check_api.c queue_checker).
const DEFAULT_DELAY_LOOP: f64 = 60.0;
const DEFAULT_CONNECT_TIMEOUT: f64 = 5.0;
/// IPVS_SVC_PERSISTENT_TIMEOUT: `persistence_timeout` with no value.
const DEFAULT_PERSISTENCE: u32 = 360;

/// What an import gives: the config, and the notes for the operator.
#[derive(Debug)]
pub struct Import {
    pub config: Config,
    pub warnings: Vec<Warning>,
}

impl Import {
    /// The config as TOML `xlb apply` takes.
    pub fn toml(&self) -> String {
        config::to_toml(&self.config)
    }
}

/// Reads keepalived.conf at `path` (and its includes) into an xlb config.
pub fn load(path: &Path) -> Result<Import> {
    let (nodes, mut warnings) = parser::read(path)?;
    let mut imp = Importer { warnings: Vec::new(), groups: BTreeMap::new() };
    let config = imp.file(&nodes)?;
    warnings.append(&mut imp.warnings);
    // The import's result must be what `xlb apply` reads back: check it the same way.
    let again = config::parse(&config::to_toml(&config)).context("the imported config does not read back (a bug)")?;
    debug_assert_eq!(again, config);
    Ok(Import { config, warnings })
}

struct Importer {
    warnings: Vec<Warning>,
    /// virtual_server_group name → its frontends (and fwmark entries).
    groups: BTreeMap<String, Group>,
}

#[derive(Clone, Default)]
struct Group {
    /// (VIP, port); the protocol comes from the virtual_server.
    addrs: Vec<(IpAddr, u16)>,
    fwmarks: Vec<u32>,
}

fn err(at: &Loc, msg: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{at}: {msg}")
}

fn arg<'a>(n: &'a Node, i: usize, what: &str) -> Result<&'a str> {
    n.args.get(i).map(String::as_str).ok_or_else(|| err(&n.at, format!("`{}` needs {what}", n.keyword)))
}

fn uint(n: &Node, i: usize) -> Result<u32> {
    let s = arg(n, i, "a number")?;
    s.parse::<u32>().map_err(|_| err(&n.at, format!("`{} {s}`: not a whole number", n.keyword)))
}

/// Seconds, with a fraction (keepalived's read_decimal_unsigned_strvec for timers).
fn seconds(n: &Node, i: usize) -> Result<f64> {
    let s = arg(n, i, "a number of seconds")?;
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(err(&n.at, format!("`{} {s}`: not a number of seconds", n.keyword))),
    }
}

fn ip(n: &Node, s: &str) -> Result<IpAddr> {
    ops::parse_ip(s).map_err(|e| err(&n.at, e))
}

fn port(n: &Node, s: &str) -> Result<u16> {
    ops::parse_port(s).map_err(|e| err(&n.at, format!("`{}`: {e}", n.keyword)))
}

/// Blocks keepalived runs itself (VRRP, its own addresses and routes, global settings).
fn left_to_keepalived(kw: &str) -> bool {
    kw == "global_defs"
        || kw.starts_with("vrrp_")
        || kw.starts_with("static_")
        || matches!(kw, "linkbeat_interfaces" | "track_file" | "track_process" | "bfd_instance" | "garp_group" | "net_namespace" | "instance")
}

/// Settings of a virtual_server that its checkers inherit (check_parser.c: a real's
/// or a checker's own value wins).
#[derive(Clone)]
struct Inherit {
    delay_loop: f64,
    connect_timeout: Option<f64>,
    retry: Option<u32>,
    delay_before_retry: Option<f64>,
    warmup: Option<f64>,
    alpha: bool,
    inhibit: bool,
    virtualhost: Option<String>,
}

struct VsPolicy {
    quorum: u32,
    hysteresis: u32,
    quorum_up: Option<String>,
    quorum_down: Option<String>,
}

impl Importer {
    fn warn(&mut self, at: &Loc, message: impl Into<String>) {
        self.warnings.push(Warning { at: at.clone(), message: message.into() });
    }

    fn unknown(&mut self, n: &Node, within: &str) {
        self.warn(&n.at, format!("unknown keyword `{}` in {within}: ignored", n.keyword));
    }

    fn file(&mut self, nodes: &[Node]) -> Result<Config> {
        let mut left: Vec<&Node> = Vec::new();
        for n in nodes.iter().filter(|n| n.keyword == "virtual_server_group") {
            let name = arg(n, 0, "a name")?.to_string();
            let g = self.group(n)?;
            if self.groups.insert(name.clone(), g).is_some() {
                bail!("{}: virtual_server_group {name} is defined twice", n.at);
            }
        }
        let mut services: Vec<ServiceConfig> = Vec::new();
        let mut settings = None;
        for n in nodes {
            match n.keyword.as_str() {
                "global_defs" => {
                    // IPVS's timeouts are xlb's business; the rest of global_defs is not.
                    for g in n.block.as_deref().unwrap_or_default().iter().filter(|g| g.keyword == "lvs_timeouts") {
                        settings = Some(self.lvs_timeouts(g, settings.unwrap_or_default())?);
                    }
                    left.push(n);
                }
                "virtual_server_group" => {}
                "virtual_server" => {
                    let used: BTreeSet<u32> = services
                        .iter()
                        .filter_map(|s| if let ServiceId::Fwmark(m) = s.id { Some(m) } else { None })
                        .collect();
                    services.push(self.virtual_server(n, &used, nodes)?);
                }
                kw if left_to_keepalived(kw) => left.push(n),
                _ => self.unknown(n, "the top level"),
            }
        }
        if let Some(first) = left.first() {
            let kinds: BTreeSet<&str> = left.iter().map(|n| n.keyword.as_str()).collect();
            let kinds: Vec<&str> = kinds.into_iter().collect();
            self.warn(
                &first.at,
                format!(
                    "{} left to keepalived: xlb balances and checks; VRRP and the addresses stay keepalived's job{}",
                    kinds.join(", "),
                    if cfg_has_timeouts(nodes) { " (global_defs' lvs_timeouts are imported as settings)" } else { "" }
                ),
            );
        }
        // The same checks as `xlb apply`: duplicate services, overlapping frontends.
        let cfg = Config { settings, services, bgp: None };
        let text = config::to_toml(&cfg);
        config::parse(&text)?;
        Ok(cfg)
    }

    /// `virtual_server_group NAME { VIP PORT | VIP-LAST PORT | fwmark N }`: a range
    /// varies the address's last part (keepalived's inet_stor: 10.0.0.1-10, 2001:db8::1-a).
    fn group(&mut self, n: &Node) -> Result<Group> {
        let mut g = Group::default();
        for e in n.block.as_deref().unwrap_or_default() {
            if e.keyword == "fwmark" {
                g.fwmarks.push(uint(e, 0)?);
                continue;
            }
            let p = port(e, arg(e, 0, "a port")?)?;
            let (first, last) = match e.keyword.rsplit_once('-') {
                Some((base, end)) if !end.contains(['.', ':']) => {
                    let first = ip(e, base)?;
                    let last = match first {
                        IpAddr::V4(a) => {
                            let end: u8 = end.parse().map_err(|_| err(&e.at, format!("range end `{end}` is not 0-255")))?;
                            let mut o = a.octets();
                            if end < o[3] {
                                bail!("{}: address range {} ends before it starts", e.at, e.keyword);
                            }
                            o[3] = end;
                            IpAddr::from(o)
                        }
                        IpAddr::V6(a) => {
                            let end = u16::from_str_radix(end, 16).map_err(|_| err(&e.at, format!("range end `{end}` is not 0-ffff")))?;
                            let mut s = a.segments();
                            if end < s[7] {
                                bail!("{}: address range {} ends before it starts", e.at, e.keyword);
                            }
                            s[7] = end;
                            IpAddr::from(s)
                        }
                    };
                    (first, last)
                }
                _ => {
                    let a = ip(e, &e.keyword)?;
                    (a, a)
                }
            };
            let mut a = first;
            loop {
                g.addrs.push((a, p));
                if a == last {
                    break;
                }
                a = match a {
                    IpAddr::V4(v) => IpAddr::V4((u32::from(v) + 1).into()),
                    IpAddr::V6(v) => IpAddr::V6((u128::from(v) + 1).into()),
                };
            }
        }
        Ok(g)
    }

    fn virtual_server(&mut self, n: &Node, used_marks: &BTreeSet<u32>, all: &[Node]) -> Result<ServiceConfig> {
        let body = n.block.as_deref().unwrap_or_default();
        let proto = match body.iter().rev().find(|c| c.keyword == "protocol") {
            Some(p) => match arg(p, 0, "TCP or UDP")?.to_ascii_uppercase().as_str() {
                "TCP" => Proto::Tcp,
                "UDP" => Proto::Udp,
                other => bail!("{}: protocol {other}: xlb balances TCP and UDP", p.at),
            },
            None => Proto::Tcp,
        };
        let (id, frontends) = match n.args.first().map(String::as_str) {
            Some("fwmark") => {
                let mark = uint(n, 1)?;
                if mark == 0 {
                    bail!("{}: fwmark 0 is not a firewall mark", n.at);
                }
                self.warn(
                    &n.at,
                    format!("virtual_server fwmark {mark}: the mark is set by firewall rules outside keepalived.conf; list the VIP:ports it covers as the service's `frontends`"),
                );
                (ServiceId::Fwmark(mark), Vec::new())
            }
            Some("group") => {
                let name = arg(n, 1, "a group name")?;
                let Some(g) = self.groups.get(name).cloned() else {
                    bail!("{}: virtual_server group {name}: no virtual_server_group {name}", n.at);
                };
                if !g.fwmarks.is_empty() {
                    self.warn(&n.at, format!("virtual_server_group {name}: its fwmark entries are set by firewall rules; add their VIP:ports to the service's `frontends`"));
                }
                // xlb's form of a group: one firewall-mark service whose frontends are the
                // group's VIP:ports. Its number: the group's own mark, else the first free one.
                let mark = match g.fwmarks.first() {
                    Some(m) => *m,
                    None => (1..).find(|m| !used_marks.contains(m) && !mark_taken(all, *m)).unwrap_or(1),
                };
                let frontends = g.addrs.iter().map(|(vip, p)| Service { proto, vip: *vip, port: *p }).collect();
                (ServiceId::Fwmark(mark), frontends)
            }
            Some(addr) => {
                let vip = ip(n, addr)?;
                let p = port(n, arg(n, 1, "a port")?)?;
                (ServiceId::Addr(Service { proto, vip, port: p }), Vec::new())
            }
            None => bail!("{}: virtual_server needs IP PORT, fwmark N or group NAME", n.at),
        };
        let mut options = ServiceOptions { scheduler: Scheduler::Wlc, sched_flags: 0, persistence: None, one_packet: false };
        let mut timeout: Option<u32> = None;
        let mut granularity: Option<IpAddr> = None;
        let mut forward: Option<ForwardMethod> = None;
        let mut sorry: Option<IpAddr> = None;
        let mut inherit = Inherit {
            delay_loop: DEFAULT_DELAY_LOOP,
            connect_timeout: None,
            retry: None,
            delay_before_retry: None,
            warmup: None,
            alpha: false,
            inhibit: false,
            virtualhost: None,
        };
        let mut policy = VsPolicy { quorum: 1, hysteresis: 0, quorum_up: None, quorum_down: None };
        let mut flags = Vec::new();
        let mut real_nodes = Vec::new();
        for c in body {
            match c.keyword.as_str() {
                "delay_loop" => inherit.delay_loop = seconds(c, 0)?,
                "lb_algo" | "lvs_sched" => {
                    let name = arg(c, 0, "a scheduler")?;
                    options.scheduler = name.parse().map_err(|_| {
                        err(&c.at, format!("lb_algo {name}: xlb schedules with rr, wrr, lc, wlc, sh, dh, mh, sed, nq, fo, ovf (not lblc, lblcr, twos)"))
                    })?;
                }
                "lb_kind" | "lvs_method" => forward = Some(self.method(c)?),
                "persistence_timeout" => {
                    timeout = Some(if c.args.is_empty() { DEFAULT_PERSISTENCE } else { uint(c, 0)? });
                }
                "persistence_granularity" => {
                    granularity = Some(ops::parse_netmask(arg(c, 0, "a netmask")?).map_err(|e| err(&c.at, e))?);
                }
                "protocol" => {}
                "ops" => options.one_packet = true,
                "sh-port" | "sh-fallback" | "mh-port" | "mh-fallback" => flags.push(c.keyword.clone()),
                "flag-1" | "flag-2" => flags.push(
                    match (options.scheduler, c.keyword.as_str()) {
                        (Scheduler::Mh, "flag-1") => "mh-fallback",
                        (Scheduler::Mh, _) => "mh-port",
                        (_, "flag-1") => "sh-fallback",
                        _ => "sh-port",
                    }
                    .into(),
                ),
                "sorry_server" => {
                    let a = ip(c, arg(c, 0, "an address")?)?;
                    if let (Some(p), ServiceId::Addr(s)) = (c.args.get(1), id)
                        && port(c, p)? != s.port
                    {
                        self.warn(&c.at, format!("sorry_server port {p}: xlb's sorry server takes the service's port ({})", s.port));
                    }
                    sorry = Some(a);
                }
                // xlb's sorry server only ever takes new connections; the ones it has
                // stay until they end, which is what sorry_server_inhibit asks for.
                "sorry_server_inhibit" => {}
                "quorum" => policy.quorum = uint(c, 0)?,
                "hysteresis" => policy.hysteresis = uint(c, 0)?,
                "quorum_up" => policy.quorum_up = Some(script(c)?),
                "quorum_down" => policy.quorum_down = Some(script(c)?),
                "alpha" => inherit.alpha = true,
                "omega" => self.warn(&c.at, "omega: xlb does not run notify_down / quorum_down when it stops"),
                "inhibit_on_failure" => inherit.inhibit = true,
                "connect_timeout" => inherit.connect_timeout = Some(seconds(c, 0)?),
                "retry" => inherit.retry = Some(uint(c, 0)?),
                "delay_before_retry" => inherit.delay_before_retry = Some(seconds(c, 0)?),
                "warmup" => inherit.warmup = Some(seconds(c, 0)?),
                "virtualhost" => inherit.virtualhost = Some(arg(c, 0, "a host name")?.to_string()),
                "real_server" => real_nodes.push(c),
                "ha_suspend" | "smtp_alert" | "ip_family" => {
                    self.warn(&c.at, format!("{}: left to keepalived (no effect on xlb)", c.keyword))
                }
                _ => self.unknown(c, "virtual_server"),
            }
        }
        if !flags.is_empty() {
            options.sched_flags = ops::parse_sched_flags(&flags.join(",")).map_err(|e| err(&n.at, e))?;
        }
        if granularity.is_some() && timeout.is_none() {
            self.warn(&n.at, "persistence_granularity without persistence_timeout: ignored, as IPVS does");
        }
        options.persistence = timeout.map(|t| Persistence { timeout: t, netmask: granularity.unwrap_or(ops::ONE_CLIENT) });
        ops::check_options(id, &options).map_err(|e| err(&n.at, e))?;
        // keepalived's default method (check_data.c): NAT.
        let forward = forward.unwrap_or(ForwardMethod::Masq);
        let mut reals = Vec::new();
        let mut checks: Vec<Option<HealthConfig>> = Vec::new();
        for r in real_nodes {
            let (addr, opts, check) = self.real_server(r, id, forward, &inherit, &policy)?;
            if reals.iter().any(|(a, _)| *a == addr) {
                // As keepalived: "real server is duplicated - removing second rs".
                self.warn(&r.at, format!("real_server {addr} is listed twice: the second is ignored, as keepalived does"));
                continue;
            }
            reals.push((addr, opts));
            checks.push(check);
        }
        // One check for all reals where keepalived's are all alike (the usual case); else
        // a check per real.
        let (health, real_health) = match checks.first() {
            Some(Some(first)) if checks.iter().all(|c| c.as_ref() == Some(first)) => (Some(first.clone()), BTreeMap::new()),
            _ => (None, reals.iter().zip(&checks).filter_map(|((a, _), c)| c.clone().map(|c| (*a, c))).collect()),
        };
        let policies: BTreeSet<bool> = checks.iter().flatten().map(|h| h.on_failure == OnFailure::Inhibit).collect();
        if policies.len() > 1 {
            self.warn(&n.at, "inhibit_on_failure on some reals only: xlb sets it per service, from the first checked real");
        }
        if sorry.is_some() && forward != ForwardMethod::Route {
            self.warn(&n.at, "sorry_server: xlb reaches its sorry server by direct routing (it holds the VIP, on the service's port), not by this service's NAT or TUN");
        }
        if health.is_none() && real_health.is_empty() {
            if sorry.is_some() {
                self.warn(&n.at, "a sorry_server without checkers: it takes over only when no real is left");
            }
            if policy.quorum != 1 || policy.quorum_up.is_some() || policy.quorum_down.is_some() {
                self.warn(&n.at, "quorum settings without checkers: ignored");
            }
        }
        Ok(ServiceConfig { id, options, frontends, reals, sorry_server: sorry, health, real_health })
    }

    /// `lvs_timeouts tcp N tcpfin N udp N` (global_defs): ipvsadm --set's timeouts.
    fn lvs_timeouts(&mut self, g: &Node, mut s: lb_common::Settings) -> Result<lb_common::Settings> {
        let mut words = g.args.iter();
        while let Some(k) = words.next() {
            let v = words.next().ok_or_else(|| err(&g.at, format!("lvs_timeouts {k} needs a number of seconds")))?;
            let secs: u32 = v.parse().map_err(|_| err(&g.at, format!("lvs_timeouts {k} {v}: not a whole number of seconds")))?;
            match k.as_str() {
                "tcp" => s.tcp_timeouts[lb_common::tcp::ESTABLISHED as usize] = secs,
                "tcpfin" => s.tcp_timeouts[lb_common::tcp::FIN_WAIT as usize] = secs,
                "udp" => s.udp_timeout = secs,
                other => bail!("{}: lvs_timeouts {other}: tcp, tcpfin or udp", g.at),
            }
        }
        Ok(s)
    }

    fn method(&mut self, c: &Node) -> Result<ForwardMethod> {
        match arg(c, 0, "NAT, DR or TUN")?.to_ascii_uppercase().as_str() {
            "NAT" => Ok(ForwardMethod::Masq),
            "DR" => Ok(ForwardMethod::Route),
            "TUN" => {
                if c.args.len() > 1 && !(c.args.get(1).map(String::as_str) == Some("type") && c.args.get(2).map(String::as_str) == Some("ipip")) {
                    bail!("{}: lb_kind {}: xlb tunnels in IPIP only", c.at, c.args.join(" "));
                }
                Ok(ForwardMethod::Tunnel)
            }
            other => bail!("{}: lb_kind {other}: NAT, DR or TUN", c.at),
        }
    }

    fn real_server(
        &mut self,
        r: &Node,
        id: ServiceId,
        vs_forward: ForwardMethod,
        vs: &Inherit,
        policy: &VsPolicy,
    ) -> Result<(RealAddr, RealOptions, Option<HealthConfig>)> {
        let rip = ip(r, arg(r, 0, "an address")?)?;
        let rport = match r.args.get(1) {
            Some(p) => Some(port(r, p)?),
            None => None,
        };
        let mut opts = RealOptions { forward: vs_forward, ..RealOptions::default() };
        let mut inherit = vs.clone();
        let mut notify_up = None;
        let mut notify_down = None;
        let mut checkers: Vec<&Node> = Vec::new();
        for c in r.block.as_deref().unwrap_or_default() {
            match c.keyword.as_str() {
                "weight" => {
                    let w: i64 = arg(c, 0, "a weight")?.parse().map_err(|_| err(&c.at, "weight: not a number"))?;
                    if !(0..=ops::MAX_WEIGHT as i64).contains(&w) {
                        bail!("{}: weight {w}: 0 to {}", c.at, ops::MAX_WEIGHT);
                    }
                    opts.weight = w as u32;
                }
                "uthreshold" => opts.u_threshold = uint(c, 0)?,
                "lthreshold" => opts.l_threshold = uint(c, 0)?,
                "lvs_method" | "lb_kind" => opts.forward = self.method(c)?,
                "inhibit_on_failure" => inherit.inhibit = !matches!(c.args.first().map(String::as_str), Some("false" | "off" | "no")),
                "notify_up" => notify_up = Some(script(c)?),
                "notify_down" => notify_down = Some(script(c)?),
                "alpha" => inherit.alpha = true,
                "delay_loop" => inherit.delay_loop = seconds(c, 0)?,
                "connect_timeout" => inherit.connect_timeout = Some(seconds(c, 0)?),
                "retry" => inherit.retry = Some(uint(c, 0)?),
                "delay_before_retry" => inherit.delay_before_retry = Some(seconds(c, 0)?),
                "warmup" => inherit.warmup = Some(seconds(c, 0)?),
                "virtualhost" => inherit.virtualhost = Some(arg(c, 0, "a host name")?.to_string()),
                "TCP_CHECK" | "HTTP_GET" | "SSL_GET" | "MISC_CHECK" | "DNS_CHECK" | "SMTP_CHECK" | "PING_CHECK" | "UDP_CHECK" => {
                    checkers.push(c)
                }
                "BFD_CHECK" | "FILE_CHECK" => self.warn(&c.at, format!("{}: xlb has no such check; ignored", c.keyword)),
                "smtp_alert" => self.warn(&c.at, "smtp_alert: left to keepalived (no effect on xlb)"),
                _ => self.unknown(c, "real_server"),
            }
        }
        // Only NAT rewrites the port: for DR and TUN IPVS keeps the service's, and the
        // real's port is only where its checks connect (as keepalived's do).
        let addr = match (opts.forward, rport) {
            (ForwardMethod::Masq, Some(p)) => RealAddr { ip: rip, port: Some(p) }.canonical(id),
            _ => RealAddr::from(rip),
        };
        ops::check_real(id, addr, &opts).map_err(|e| err(&r.at, format!("real_server {addr}: {e:#}")))?;
        let xlb_port = match id {
            ServiceId::Addr(s) => Some(addr.port.unwrap_or(s.port)),
            ServiceId::Fwmark(_) => None,
        };
        let check = match checkers.first() {
            Some(c) => {
                let mut h = self.checker(c, rport, xlb_port, &inherit)?;
                // Further checkers run after the first, at its interval; each names its
                // port, as an `also` check cannot know the real's.
                for extra in checkers.iter().skip(1) {
                    let mut a = self.checker(extra, rport, xlb_port, &inherit)?;
                    if a.port.is_none() && !matches!(a.kind, CheckKind::Exec | CheckKind::Ping) {
                        a.port = xlb_port;
                    }
                    if a.interval != h.interval {
                        self.warn(&extra.at, format!("{}: its delay_loop differs from {}'s; xlb runs both at {}'s", extra.keyword, c.keyword, c.keyword));
                    }
                    h.also.push(a);
                }
                h.notify_up = notify_up;
                h.notify_down = notify_down;
                h.quorum = policy.quorum.max(1);
                h.hysteresis = policy.hysteresis;
                h.quorum_weight = true;
                h.quorum_up = policy.quorum_up.clone();
                h.quorum_down = policy.quorum_down.clone();
                h.validate(id).map_err(|e| err(&c.at, format!("{}: {e:#}", c.keyword)))?;
                Some(h)
            }
            None => {
                if notify_up.is_some() || notify_down.is_some() {
                    self.warn(&r.at, "notify_up/notify_down without a checker: never run");
                }
                None
            }
        };
        Ok((addr, opts, check))
    }

    /// A checker block as an xlb health check. `rport`: the real's port, where
    /// keepalived's checks connect unless `connect_port` says otherwise.
    /// `xlb_port`: the port xlb checks by default (None for a fwmark service's real).
    fn checker(&mut self, c: &Node, rport: Option<u16>, xlb_port: Option<u16>, vs: &Inherit) -> Result<HealthConfig> {
        let kind = match c.keyword.as_str() {
            "TCP_CHECK" => CheckKind::Tcp,
            "HTTP_GET" => CheckKind::Http,
            "SSL_GET" => CheckKind::Https,
            "MISC_CHECK" => CheckKind::Exec,
            "DNS_CHECK" => CheckKind::Dns,
            "SMTP_CHECK" => CheckKind::Smtp,
            "PING_CHECK" => CheckKind::Ping,
            _ => CheckKind::Udp,
        };
        let mut h = HealthConfig::new(kind);
        let mut inherit = vs.clone();
        let mut connect_port = None;
        let mut misc_timeout = None;
        let mut payload = None;
        let mut reply = None;
        for k in c.block.as_deref().unwrap_or_default() {
            match (kind, k.keyword.as_str()) {
                (_, "connect_ip") => h.address = Some(ip(k, arg(k, 0, "an address")?)?),
                (_, "connect_port") => connect_port = Some(port(k, arg(k, 0, "a port")?)?),
                (_, "bindto") => h.bindto = Some(ip(k, arg(k, 0, "an address")?)?),
                (_, "bind_port") => h.bind_port = Some(port(k, arg(k, 0, "a port")?)?),
                (_, "connect_timeout") => inherit.connect_timeout = Some(seconds(k, 0)?),
                (_, "retry" | "nb_get_retry") => inherit.retry = Some(uint(k, 0)?),
                (_, "delay_before_retry") => inherit.delay_before_retry = Some(seconds(k, 0)?),
                (_, "warmup") => inherit.warmup = Some(seconds(k, 0)?),
                (_, "delay_loop") => inherit.delay_loop = seconds(k, 0)?,
                (_, "alpha") => inherit.alpha = true,
                (_, "fwmark" | "bind_if" | "log_all_failures" | "dont_track_primary") => {
                    self.warn(&k.at, format!("{}: not supported by xlb's checks; ignored", k.keyword))
                }
                (CheckKind::Http | CheckKind::Https, "url") => h.urls.push(self.url(k)?),
                (CheckKind::Http | CheckKind::Https, "virtualhost") => inherit.virtualhost = Some(arg(k, 0, "a host name")?.to_string()),
                (CheckKind::Http | CheckKind::Https, "http_protocol" | "enable_sni" | "fast_recovery" | "tls_compliant") => {}
                (CheckKind::Exec, "misc_path") => h.command = Some(script(k)?),
                (CheckKind::Exec, "misc_timeout") => misc_timeout = Some(seconds(k, 0)?),
                (CheckKind::Exec, "misc_dynamic") => h.dynamic = true,
                (CheckKind::Exec, "user") => self.warn(&k.at, "user: xlb runs MISC_CHECK scripts as itself"),
                (CheckKind::Dns, "type") => h.dns_type = Some(arg(k, 0, "a record type")?.to_ascii_uppercase()),
                (CheckKind::Dns, "name") => h.dns_name = Some(arg(k, 0, "a name")?.to_string()),
                (CheckKind::Smtp, "helo_name") => h.helo_name = Some(arg(k, 0, "a name")?.to_string()),
                // keepalived before 2.0 put the connection of SMTP_CHECK in a `host` block.
                (CheckKind::Smtp, "host") => {
                    for hk in k.block.as_deref().unwrap_or_default() {
                        match hk.keyword.as_str() {
                            "connect_ip" => h.address = Some(ip(hk, arg(hk, 0, "an address")?)?),
                            "connect_port" => connect_port = Some(port(hk, arg(hk, 0, "a port")?)?),
                            "bindto" => h.bindto = Some(ip(hk, arg(hk, 0, "an address")?)?),
                            "connect_timeout" => inherit.connect_timeout = Some(seconds(hk, 0)?),
                            _ => self.unknown(hk, "SMTP_CHECK host"),
                        }
                    }
                }
                (CheckKind::Udp, "payload") => payload = Some(hex(k)?),
                (CheckKind::Udp, "require_reply") => reply = Some(hex(k)?),
                (CheckKind::Udp, "min_reply_length" | "max_reply_length") => {
                    self.warn(&k.at, format!("{}: xlb's UDP check compares the reply's start (require_reply)", k.keyword))
                }
                _ => self.unknown(k, &c.keyword),
            }
        }
        h.interval = if inherit.delay_loop > 0.0 { inherit.delay_loop } else { DEFAULT_DELAY_LOOP };
        h.timeout = match kind {
            // misc_timeout defaults to delay_loop (check_misc.c).
            CheckKind::Exec => misc_timeout.unwrap_or(h.interval),
            _ => inherit.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
        };
        if h.timeout <= 0.0 {
            h.timeout = DEFAULT_CONNECT_TIMEOUT;
        }
        // keepalived's defaults: retry 1 (DNS 3, MISC 0); delay_before_retry 1 s
        // (HTTP/SSL 3 s, DNS delay_loop).
        h.retry = inherit.retry.unwrap_or(match kind {
            CheckKind::Exec => 0,
            CheckKind::Dns => 3,
            _ => 1,
        });
        if h.retry > 0 {
            h.delay_before_retry = Some(inherit.delay_before_retry.unwrap_or(match kind {
                CheckKind::Http | CheckKind::Https => 3.0,
                CheckKind::Dns => h.interval,
                _ => 1.0,
            }));
        }
        if let Some(w) = inherit.warmup {
            h.warmup = w;
        }
        h.alpha = inherit.alpha;
        h.on_failure = if inherit.inhibit { OnFailure::Inhibit } else { OnFailure::Remove };
        if matches!(kind, CheckKind::Http | CheckKind::Https) {
            h.virtualhost = inherit.virtualhost.clone();
            if h.urls.is_empty() {
                bail!("{}: {} needs at least one `url` block", c.at, c.keyword);
            }
        }
        if kind == CheckKind::Exec && h.command.is_none() {
            bail!("{}: MISC_CHECK needs `misc_path`", c.at);
        }
        if kind == CheckKind::Udp {
            // keepalived sends an empty datagram without `payload`.
            h.send = Some(text(&c.at, payload.unwrap_or_default())?);
            h.expect = reply.map(|r| text(&c.at, r)).transpose()?;
            // Without require_reply keepalived fails a real only on an ICMP error.
            h.reply_optional = h.expect.is_none();
        }
        // Where keepalived's check connects: connect_port, else the real's port. xlb's
        // check goes to the real's port in the maps (a NAT real's own, else the
        // service's) unless `port` says otherwise.
        if !matches!(kind, CheckKind::Exec | CheckKind::Ping) {
            let target = connect_port.or(rport);
            h.port = target.filter(|t| Some(*t) != xlb_port);
            if target.is_none() && xlb_port.is_none() {
                bail!("{}: {} of a fwmark service needs a port (connect_port or the real_server's)", c.at, c.keyword);
            }
        }
        Ok(h)
    }

    fn url(&mut self, k: &Node) -> Result<Url> {
        let mut u = Url { path: String::new(), status: None, md5: None, contains: None, virtualhost: None };
        for f in k.block.as_deref().unwrap_or_default() {
            match f.keyword.as_str() {
                "path" => u.path = arg(f, 0, "a path")?.to_string(),
                "digest" => u.md5 = Some(arg(f, 0, "an MD5 digest")?.to_ascii_lowercase()),
                "status_code" => {
                    if f.args.is_empty() {
                        bail!("{}: status_code needs codes", f.at);
                    }
                    let list = f.args.join(",");
                    crate::health::checkers::parse_status_codes(&list).map_err(|e| err(&f.at, e))?;
                    u.status = Some(list);
                }
                "virtualhost" => u.virtualhost = Some(arg(f, 0, "a host name")?.to_string()),
                "regex" | "regex_no_match" | "regex_options" | "regex_stack" | "regex_min_offset" | "regex_max_offset" => {
                    self.warn(&f.at, format!("{}: xlb matches no regular expressions; ignored", f.keyword))
                }
                _ => self.unknown(f, "url"),
            }
        }
        if u.path.is_empty() {
            bail!("{}: url needs a `path`", k.at);
        }
        Ok(u)
    }
}

fn cfg_has_timeouts(nodes: &[Node]) -> bool {
    nodes.iter().filter(|n| n.keyword == "global_defs").any(|n| n.block.as_deref().unwrap_or_default().iter().any(|g| g.keyword == "lvs_timeouts"))
}

/// Whether a `virtual_server fwmark M` anywhere in the file uses mark `m`.
fn mark_taken(all: &[Node], m: u32) -> bool {
    all.iter().any(|n| {
        n.keyword == "virtual_server"
            && n.args.first().map(String::as_str) == Some("fwmark")
            && n.args.get(1).and_then(|v| v.parse::<u32>().ok()) == Some(m)
    })
}

/// A script with its arguments: the rest of the line (keepalived re-splits it with
/// quotes, so the words are kept as written).
fn script(n: &Node) -> Result<String> {
    if n.args.is_empty() {
        bail!("{}: `{}` needs a command", n.at, n.keyword);
    }
    Ok(n.args.iter().map(|a| if a.contains(char::is_whitespace) && n.args.len() > 1 { format!("'{a}'") } else { a.clone() }).collect::<Vec<_>>().join(" "))
}

/// keepalived's UDP_CHECK payloads are hex strings.
fn hex(n: &Node) -> Result<Vec<u8>> {
    let s: String = n.args.concat();
    if !s.len().is_multiple_of(2) || !s.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!("{}: {} `{s}` is not a string of hex digits", n.at, n.keyword);
    }
    Ok((0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("checked")).collect())
}

fn text(at: &Loc, b: Vec<u8>) -> Result<String> {
    String::from_utf8(b).map_err(|_| err(at, "the UDP payload is binary: xlb's UDP check sends text"))
}
