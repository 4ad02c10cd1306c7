//! The declarative config file `xlb run --config FILE` loads:
//!
//! ```toml
//! [settings]                 # optional; ipvsadm --set and IPVS's sysctls
//! tcp = 900                  # ESTABLISHED idle timeout, seconds
//! tcpfin = 120               # FIN_WAIT idle timeout
//! udp = 300
//! expire_nodest_conn = false
//! sloppy_tcp = false
//! icmp_echo = false          # true: the fast path answers ping to VIPs itself
//!
//! [[service]]
//! proto = "tcp"              # tcp (default) or udp
//! vip = "10.0.0.100"
//! port = 80
//! scheduler = "wrr"          # IPVS's default: wlc
//! sched_flags = []           # sh-port, sh-fallback, mh-port, mh-fallback
//! persistent = 300           # optional: persistence timeout (seconds)
//! netmask = "255.255.255.0"  # persistence granularity (default /32)
//! reals = ["10.0.0.11", { address = "10.0.0.12", weight = 3 }]
//!
//! [[service]]                # NAT with port mapping: VIP:80 → RIP:8080
//! vip = "10.0.0.100"
//! port = 81
//! reals = [{ address = "192.168.1.11:8080", forward = "nat" }]   # dr (default), nat, tun
//!
//! [[service]]                # IPv6: DR to IPv6 real servers
//! vip = "2001:db8::100"
//! port = 80
//! persistent = 300
//! netmask = "64"             # IPv6: a prefix length (or an IPv6 netmask)
//! reals = ["2001:db8::11", { address = "[2001:db8::12]:80" }]
//!
//! [[service]]                # a real with a check of its own (keepalived: per real_server)
//! vip = "10.0.0.100"
//! port = 25
//! reals = [{ address = "10.0.0.31", health = { type = "exec", command = "/etc/xlb/mx 10.0.0.31", dynamic = true } }]
//!
//! [[service]]                # a group: several VIP:ports, one set of reals
//! fwmark = 1
//! frontends = ["tcp:10.0.0.100:80", "tcp:10.0.0.100:443", "udp:10.0.0.100:8000-8010"]
//! persistent = 600
//! reals = ["10.0.0.11"]
//! ```
//!
//! The whole file is parsed and checked before anything is applied.
use std::{collections::HashSet, path::Path};

use anyhow::{Context, Result, bail};
use lb_common::{Settings, tcp};
use serde::{Deserialize, Serialize};

use crate::health::HealthConfig;
use crate::ops::{
    self, ForwardMethod, Persistence, Proto, RealAddr, RealOptions, Scheduler, Service, ServiceId, ServiceOptions,
};

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct File {
    settings: Option<SettingsSection>,
    #[serde(default)]
    service: Vec<ServiceSection>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct SettingsSection {
    tcp: Option<u32>,
    tcpfin: Option<u32>,
    udp: Option<u32>,
    #[serde(default)]
    expire_nodest_conn: bool,
    #[serde(default)]
    sloppy_tcp: bool,
    #[serde(default)]
    icmp_echo: bool,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct ServiceSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    proto: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    vip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fwmark: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    frontends: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scheduler: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    sched_flags: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    persistent: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    netmask: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    one_packet: bool,
    #[serde(default)]
    reals: Vec<RealSection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sorry_server: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    health: Option<HealthConfig>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(untagged)]
enum RealSection {
    Address(String),
    Full(RealTable),
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RealTable {
    /// "RIP" or "RIP:PORT" (NAT only).
    address: String,
    /// dr (default), nat or tun; ipvsadm's names route, masq, tunnel also do.
    forward: Option<String>,
    #[serde(default = "one")]
    weight: u32,
    #[serde(default)]
    u_threshold: u32,
    #[serde(default)]
    l_threshold: u32,
    /// This real's own check, instead of the service's (keepalived checks per
    /// real_server: its own connect_ip, misc_path, notify commands…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    health: Option<Box<HealthConfig>>,
}

fn one() -> u32 {
    1
}

/// One checked service of a config.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    pub id: ServiceId,
    pub options: ServiceOptions,
    /// Frontends of a firewall-mark service.
    pub frontends: Vec<Service>,
    pub reals: Vec<(RealAddr, RealOptions)>,
    /// Takes new connections when fewer reals than the health quorum are healthy.
    pub sorry_server: Option<std::net::IpAddr>,
    pub health: Option<HealthConfig>,
    /// Reals with a check of their own (it replaces `health` for them).
    pub real_health: std::collections::BTreeMap<RealAddr, HealthConfig>,
}

/// A checked config: also the daemon's desired state, which it saves in this format.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    pub settings: Option<Settings>,
    pub services: Vec<ServiceConfig>,
}

/// The config as TOML that [`parse`] reads back to the same config.
pub fn to_toml(cfg: &Config) -> String {
    let settings = cfg.settings.map(|s| SettingsSection {
        tcp: Some(s.tcp_timeouts[tcp::ESTABLISHED as usize]),
        tcpfin: Some(s.tcp_timeouts[tcp::FIN_WAIT as usize]),
        udp: Some(s.udp_timeout),
        expire_nodest_conn: s.expire_nodest_conn != 0,
        sloppy_tcp: s.sloppy_tcp != 0,
        icmp_echo: s.icmp_echo != 0,
    });
    let service = cfg
        .services
        .iter()
        .map(|svc| {
            let (proto, vip, port, fwmark) = match svc.id {
                ServiceId::Addr(a) => (Some(a.proto.name().to_ascii_lowercase()), Some(a.vip.to_string()), Some(a.port), None),
                ServiceId::Fwmark(m) => (None, None, None, Some(m)),
            };
            let o = &svc.options;
            ServiceSection {
                proto,
                vip,
                port,
                fwmark,
                frontends: crate::listing::fold_frontends(&svc.frontends)
                    .iter()
                    .map(|f| {
                        let (proto, addr) = f.split_once(' ').unwrap_or(("", f));
                        format!("{}:{addr}", proto.to_ascii_lowercase())
                    })
                    .collect(),
                scheduler: Some(o.scheduler.name().to_string()),
                sched_flags: ops::sched_flag_names(o.sched_flags).iter().map(|f| f.to_string()).collect(),
                persistent: o.persistence.map(|p| p.timeout),
                netmask: o.persistence.filter(|p| p.netmask != ops::ONE_CLIENT).map(|p| p.netmask.to_string()),
                one_packet: o.one_packet,
                reals: svc
                    .reals
                    .iter()
                    .map(|(rip, ro)| {
                        let health = svc.real_health.get(rip).cloned().map(Box::new);
                        if *ro == RealOptions::default() && health.is_none() {
                            RealSection::Address(rip.to_string())
                        } else {
                            RealSection::Full(RealTable {
                                address: rip.to_string(),
                                forward: (ro.forward != ForwardMethod::Route).then(|| ro.forward.config_name().to_string()),
                                weight: ro.weight,
                                u_threshold: ro.u_threshold,
                                l_threshold: ro.l_threshold,
                                health,
                            })
                        }
                    })
                    .collect(),
                sorry_server: svc.sorry_server.map(|s| s.to_string()),
                health: svc.health.clone(),
            }
        })
        .collect();
    toml::to_string(&File { settings, service }).expect("a config always serialises")
}

pub fn load(path: &Path) -> Result<Config> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text).with_context(|| format!("in {}", path.display()))
}

pub fn parse(text: &str) -> Result<Config> {
    // toml's errors carry line and column.
    let file: File = toml::from_str(text)?;
    let settings = file.settings.map(|s| {
        let mut out = Settings::default();
        if let Some(t) = s.tcp {
            out.tcp_timeouts[tcp::ESTABLISHED as usize] = t;
        }
        if let Some(t) = s.tcpfin {
            out.tcp_timeouts[tcp::FIN_WAIT as usize] = t;
        }
        if let Some(t) = s.udp {
            out.udp_timeout = t;
        }
        out.expire_nodest_conn = s.expire_nodest_conn as u32;
        out.sloppy_tcp = s.sloppy_tcp as u32;
        out.icmp_echo = s.icmp_echo as u32;
        out
    });
    let mut services = Vec::new();
    let mut seen_ids = HashSet::new();
    let mut seen_frontends = HashSet::new();
    for (i, s) in file.service.iter().enumerate() {
        let at = || format!("service #{}", i + 1);
        let svc = service(s).with_context(at)?;
        if !seen_ids.insert(svc.id) {
            bail!("{}: Service already exists: {}", at(), svc.id);
        }
        let own = match svc.id {
            ServiceId::Addr(a) => vec![a],
            ServiceId::Fwmark(_) => svc.frontends.clone(),
        };
        for f in own {
            if !seen_frontends.insert(f) {
                bail!("{}: Service already exists: {f} (a VIP:port belongs to one service)", at());
            }
        }
        services.push(svc);
    }
    Ok(Config { settings, services })
}

fn service(s: &ServiceSection) -> Result<ServiceConfig> {
    let (id, frontends) = match (s.fwmark, &s.vip, s.port) {
        (Some(mark), None, None) => {
            if mark == 0 {
                bail!("fwmark 0 is not a firewall mark");
            }
            if s.proto.is_some() {
                bail!("a fwmark service takes its protocols from `frontends`, not `proto`");
            }
            let mut list = Vec::new();
            for f in &s.frontends {
                let Some((proto, addr)) = f.split_once(':') else {
                    bail!("frontend `{f}` is not PROTO:VIP:PORT (for example tcp:10.0.0.100:443)");
                };
                list.extend(ops::parse_frontends(proto.parse()?, addr)?);
            }
            (ServiceId::Fwmark(mark), list)
        }
        (None, Some(vip), Some(port)) => {
            if !s.frontends.is_empty() {
                bail!("`frontends` belong to fwmark services");
            }
            let proto: Proto = s.proto.as_deref().unwrap_or("tcp").parse()?;
            (ServiceId::Addr(Service { proto, vip: ops::parse_ip(vip)?, port: ops::parse_port(&port.to_string())? }), Vec::new())
        }
        _ => bail!("a service needs either `vip` and `port`, or `fwmark` (with `frontends`)"),
    };
    let scheduler: Scheduler = s.scheduler.as_deref().unwrap_or("wlc").parse()?;
    let sched_flags = ops::parse_sched_flags(&s.sched_flags.join(","))?;
    let netmask = s.netmask.as_deref().map(ops::parse_netmask).transpose()?;
    if netmask.is_some() && s.persistent.is_none() {
        bail!("`netmask` needs `persistent`");
    }
    let persistence = s.persistent.map(|timeout| Persistence { timeout, netmask: netmask.unwrap_or(ops::ONE_CLIENT) });
    let options = ServiceOptions { scheduler, sched_flags, persistence, one_packet: s.one_packet };
    ops::check_options(id, &options)?;
    let mut reals: Vec<(RealAddr, RealOptions)> = Vec::new();
    let mut real_health = std::collections::BTreeMap::new();
    for r in &s.reals {
        let (real, opts, health) = match r {
            RealSection::Address(a) => (a.parse::<RealAddr>()?, RealOptions::default(), None),
            RealSection::Full(t) => {
                let forward = t.forward.as_deref().map(str::parse::<ForwardMethod>).transpose()?.unwrap_or_default();
                let opts =
                    RealOptions { forward, weight: t.weight, u_threshold: t.u_threshold, l_threshold: t.l_threshold };
                (t.address.parse::<RealAddr>()?, opts, t.health.as_deref())
            }
        };
        if let Some(h) = health {
            h.validate(id).with_context(|| format!("the health check of real server {real}"))?;
        }
        ops::check_real(id, real, &opts).with_context(|| format!("real server {real}"))?;
        ops::check_one_packet(id, options.one_packet, opts.forward)?;
        // As the maps will list it, so that a reload compares like with like.
        let real = real.canonical(id);
        if reals.iter().any(|(r, _)| *r == real) {
            bail!("Destination already exists: {real}");
        }
        if let Some(h) = health {
            real_health.insert(real, h.clone());
        }
        reals.push((real, opts));
    }
    let sorry_server = s.sorry_server.as_deref().map(ops::parse_ip).transpose().context("sorry_server")?;
    if let Some(h) = &s.health {
        h.validate(id)?;
    }
    Ok(ServiceConfig { id, options, frontends, reals, sorry_server, health: s.health.clone(), real_health })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_file() {
        let cfg = parse(
            r#"
            [settings]
            tcp = 600
            udp = 30
            expire_nodest_conn = true
            [[service]]
            vip = "10.0.0.100"
            port = 80
            scheduler = "wrr"
            persistent = 300
            netmask = "255.255.255.0"
            reals = ["10.0.0.11", { address = "10.0.0.12", weight = 3 }]
            [[service]]
            fwmark = 7
            frontends = ["tcp:10.0.0.100:443", "udp:10.0.0.100:8000-8002"]
            scheduler = "sh"
            sched_flags = ["sh-port", "sh-fallback"]
            "#,
        )
        .unwrap();
        let s = cfg.settings.unwrap();
        assert_eq!(s.tcp_timeouts[tcp::ESTABLISHED as usize], 600);
        assert_eq!(s.tcp_timeouts[tcp::FIN_WAIT as usize], 120);
        assert_eq!((s.udp_timeout, s.expire_nodest_conn, s.sloppy_tcp), (30, 1, 0));
        let web = &cfg.services[0];
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert_eq!(web.id, ServiceId::Addr(Service { proto: Proto::Tcp, vip: ip("10.0.0.100"), port: 80 }));
        assert_eq!(web.options.scheduler, Scheduler::Wrr);
        assert_eq!(web.options.persistence, Some(Persistence { timeout: 300, netmask: ip("255.255.255.0") }));
        assert_eq!(web.reals[1], (ip("10.0.0.12").into(), RealOptions { weight: 3, ..Default::default() }));
        let group = &cfg.services[1];
        assert_eq!(group.id, ServiceId::Fwmark(7));
        assert_eq!(group.frontends.len(), 4);
        assert_eq!(group.options.sched_flags, lb_common::svc_flags::SH_PORT | lb_common::svc_flags::SH_FALLBACK);
    }

    #[test]
    fn toml_round_trip() {
        let text = r#"
            [settings]
            tcp = 600
            udp = 30
            [[service]]
            vip = "10.0.0.100"
            port = 80
            scheduler = "wrr"
            persistent = 300
            netmask = "255.255.255.0"
            reals = ["10.0.0.11", { address = "10.0.0.12", weight = 3, u_threshold = 10 }]
            [[service]]
            fwmark = 7
            frontends = ["tcp:10.0.0.100:443", "udp:10.0.0.100:8000-8002"]
            scheduler = "sh"
            sched_flags = ["sh-port"]
            one_packet = true
            sorry_server = "10.0.0.200"
            [service.health]
            type = "http"
            port = 443
            path = "/health"
            contains = "ok"
            interval = 1.5
            fall = 3
            on_failure = "inhibit"
            "#;
        let cfg = parse(text).unwrap();
        let again = parse(&to_toml(&cfg)).unwrap();
        assert_eq!(again, cfg);
        assert!(to_toml(&cfg).contains("udp:10.0.0.100:8000-8002"));
        assert_eq!(parse(&to_toml(&Config::default())).unwrap(), Config::default());
    }

    #[test]
    fn reals_take_a_port_and_a_forwarding_method() {
        let cfg = parse(
            r#"
            [[service]]
            vip = "10.0.0.100"
            port = 80
            reals = [{ address = "10.0.0.12:8080", forward = "nat" }, { address = "10.0.0.13", forward = "tun" }, "10.0.0.14:80"]
            "#,
        )
        .unwrap();
        let reals = &cfg.services[0].reals;
        assert_eq!(reals[0].0, RealAddr { ip: "10.0.0.12".parse().unwrap(), port: Some(8080) });
        assert_eq!(reals[0].1.forward, ForwardMethod::Masq);
        assert_eq!(reals[1].1.forward, ForwardMethod::Tunnel);
        assert_eq!(reals[2].1.forward, ForwardMethod::Route);
        let err = |text: &str| format!("{:#}", parse(text).unwrap_err());
        let svc = "[[service]]\nvip = \"10.0.0.1\"\nport = 80\n";
        assert!(err(&format!("{svc}reals = [\"10.0.0.2:8080\"]\n")).contains("only NAT (-m) maps ports"));
        assert!(err(&format!("{svc}reals = [{{ address = \"10.0.0.2\", forward = \"fancy\" }}]\n")).contains("unknown forwarding method"));
        let ops = "[[service]]\nproto = \"udp\"\nvip = \"10.0.0.1\"\nport = 53\none_packet = true\n";
        assert!(err(&format!("{ops}reals = [{{ address = \"10.0.0.2\", forward = \"nat\" }}]\n")).contains("one packet at a time"));
    }

    #[test]
    fn ipv6_services_reals_and_netmasks() {
        let cfg = parse(
            r#"
            [settings]
            icmp_echo = true
            [[service]]
            vip = "2001:db8::100"
            port = 80
            persistent = 300
            netmask = "64"
            reals = ["2001:db8::11", { address = "[2001:db8::12]:8080", forward = "nat" }]
            [[service]]
            fwmark = 2
            frontends = ["tcp:[2001:db8::100]:443"]
            "#,
        )
        .unwrap();
        assert_eq!(cfg.settings.unwrap().icmp_echo, 1);
        let svc = &cfg.services[0];
        assert_eq!(svc.id.to_string(), "TCP [2001:db8::100]:80");
        assert_eq!(svc.options.persistence.unwrap().netmask, "ffff:ffff:ffff:ffff::".parse::<std::net::IpAddr>().unwrap());
        assert_eq!(svc.reals[1].0.to_string(), "[2001:db8::12]:8080");
        assert_eq!(cfg.services[1].frontends[0].to_string(), "TCP [2001:db8::100]:443");
        let err = |text: &str| format!("{:#}", parse(text).unwrap_err());
        let v6 = "[[service]]\nvip = \"2001:db8::100\"\nport = 80\n";
        assert!(err(&format!("{v6}reals = [\"10.0.0.2\"]\n")).contains("a real server serves its service's address family"));
        assert!(err(&format!("{v6}persistent = 60\nnetmask = \"255.255.255.0\"\n")).contains("other address family"));
    }

    #[test]
    fn reals_may_have_a_check_of_their_own() {
        let text = r#"
            [[service]]
            vip = "10.0.0.100"
            port = 25
            reals = ["10.0.0.30", { address = "10.0.0.31", health = { type = "exec", command = "/etc/xlb/mx 10.0.0.31", dynamic = true } }]
            "#;
        let cfg = parse(text).unwrap();
        let svc = &cfg.services[0];
        assert!(svc.health.is_none());
        let real: RealAddr = "10.0.0.31".parse().unwrap();
        assert_eq!(svc.real_health.keys().collect::<Vec<_>>(), [&real]);
        assert!(svc.real_health[&real].dynamic);
        assert_eq!(parse(&to_toml(&cfg)).unwrap(), cfg);
        let bad = "[[service]]\nvip = \"10.0.0.1\"\nport = 80\nreals = [{ address = \"10.0.0.2\", health = { type = \"exec\" } }]\n";
        let e = format!("{:#}", parse(bad).unwrap_err());
        assert!(e.contains("the health check of real server 10.0.0.2") && e.contains("needs `command`"), "{e}");
    }

    #[test]
    fn default_scheduler_is_wlc_as_in_ipvs() {
        let cfg = parse("[[service]]\nvip = \"10.0.0.1\"\nport = 80\n").unwrap();
        assert_eq!(cfg.services[0].options.scheduler, Scheduler::Wlc);
        assert_eq!(cfg.settings, None);
    }

    #[test]
    fn rejects_bad_files_with_location() {
        let err = |text: &str| format!("{:#}", parse(text).unwrap_err());
        assert!(err("[[service]]\nvip = \"10.0.0.1\"\nport = 99999\n").contains("line 3"));
        assert!(err("[[service]]\nvip = \"10.0.0.1\"\nport = 80\ncolour = 1\n").contains("unknown field `colour`"));
        assert!(err("[[service]]\nvip = \"10.0.0.300\"\nport = 80\n").contains("not an IP address"));
        assert!(err("[[service]]\nvip = \"10.0.0.1\"\nport = 80\nscheduler = \"xx\"\n").contains("unknown scheduler"));
        let dup = "[[service]]\nvip = \"10.0.0.1\"\nport = 80\n[[service]]\nvip = \"10.0.0.1\"\nport = 80\n";
        assert!(err(dup).contains("Service already exists"));
        let dup_real = "[[service]]\nvip = \"10.0.0.1\"\nport = 80\nreals = [\"10.0.0.2\", \"10.0.0.2\"]\n";
        assert!(err(dup_real).contains("Destination already exists"));
        let heavy = "[[service]]\nvip = \"10.0.0.1\"\nport = 80\nreals = [{ address = \"10.0.0.2\", weight = 70000 }]\n";
        assert!(err(heavy).contains("out of range"));
        assert!(err("[[service]]\nvip = \"10.0.0.1\"\n").contains("either `vip` and `port`, or `fwmark`"));
        let overlap = "[[service]]\nvip = \"10.0.0.1\"\nport = 80\n[[service]]\nfwmark = 1\nfrontends = [\"tcp:10.0.0.1:79-81\"]\n";
        let health = |extra: &str| format!("[[service]]\nvip = \"10.0.0.1\"\nport = 80\n[service.health]\n{extra}\n");
        assert!(err(&health("type = \"udp\"")).contains("needs `send`"));
        assert!(err(&health("type = \"tcp\"\npath = \"/\"")).contains("does not apply"));
        assert!(err(&health("type = \"http\"\ninterval = 0")).contains("above 0"));
        assert!(err(&health("type = \"icmp\"")).contains("unknown variant `icmp`"));
        assert!(err("[[service]]\nfwmark = 2\n[service.health]\ntype = \"tcp\"\n").contains("needs a `port`"));
        assert!(err(overlap).contains("belongs to one service"));
        assert!(err("[[service]]\nvip = \"10.0.0.1\"\nport = 80\nproto = \"tcp\"\none_packet = true\n").contains("UDP"));
    }
}
