//! The declarative config file `xlb run --config FILE` loads:
//!
//! ```toml
//! [settings]                 # optional; ipvsadm --set and IPVS's sysctls
//! tcp = 900                  # ESTABLISHED idle timeout, seconds
//! tcpfin = 120               # FIN_WAIT idle timeout
//! udp = 300
//! expire_nodest_conn = false
//! sloppy_tcp = false
//! expire_quiescent_template = false  # true: weight 0 ends persistence templates
//! icmp_echo = false          # true: the fast path answers ping to VIPs itself
//! conn_reuse_mode = 1        # IPVS's sysctl, 0 to 3 (default 1)
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
//!
//! [bgp]                      # optional: announce VIPs with quorum through BIRD 2 (see `bgp`)
//! bird_vips = "/run/bird/xlb-vips.conf"   # the include file xlb writes (required here)
//! bird_vips6 = "/run/bird/xlb-vips6.conf" # optional: IPv6 VIPs go here instead
//! bird_socket = "/run/bird/bird.ctl"       # BIRD's control socket (this default)
//! quorum = 1                 # reals taking new connections a service needs (default 1)
//! ```
//!
//! `[bgp]` is read when the daemon starts (`--bird-vips`, `--bird-vips6`,
//! `--bird-socket` and `--bgp-quorum` override it); it is not part of the saved state.
//!
//! The whole file is parsed and checked before anything is applied.
use std::{collections::HashSet, ops::Range, path::Path};

use anyhow::{Context, Result, ensure};
use lb_common::{Settings, tcp};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::health::HealthConfig;
use crate::ops::{
    self, ForwardMethod, Persistence, Proto, RealAddr, RealOptions, Scheduler, Service, ServiceId, ServiceOptions,
};

/// The file as written. Values a later check may refuse keep their place in the file
/// (`Spanned`), so that the refusal names its line and column as toml's own errors do.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct File {
    settings: Option<SettingsSection>,
    #[serde(default)]
    service: Vec<Spanned<ServiceSection>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bgp: Option<BgpSection>,
}

/// `[bgp]`: VIP announcement through BIRD (see [`crate::bgp`]). The daemon's command
/// line options override each field.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BgpSection {
    /// The BIRD include file xlb writes (`route VIP/32 blackhole;` lines).
    pub bird_vips: Option<std::path::PathBuf>,
    /// IPv6 VIPs go to this file instead of `bird_vips` (a static protocol takes one
    /// address family).
    pub bird_vips6: Option<std::path::PathBuf>,
    /// BIRD's control socket (default /run/bird/bird.ctl).
    pub bird_socket: Option<std::path::PathBuf>,
    /// Reals taking new connections a service needs for its VIPs to be announced
    /// (default 1; 0 is refused).
    pub quorum: Option<u32>,
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
    expire_quiescent_template: bool,
    #[serde(default)]
    icmp_echo: bool,
    conn_reuse_mode: Option<u32>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct ServiceSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    proto: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    vip: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<Spanned<u16>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fwmark: Option<Spanned<u32>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    frontends: Vec<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scheduler: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    sched_flags: Vec<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    persistent: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    netmask: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    one_packet: bool,
    #[serde(default)]
    reals: Vec<Spanned<RealSection>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sorry_server: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    health: Option<Spanned<HealthConfig>>,
}

/// A value made here (for [`to_toml`]): it has no place in any file.
fn unplaced<T>(value: T) -> Spanned<T> {
    Spanned::new(0..0, value)
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
    /// `[bgp]`, as the file has it (the daemon reads it at start).
    pub bgp: Option<BgpSection>,
}

/// The config as TOML that [`parse`] reads back to the same config.
pub fn to_toml(cfg: &Config) -> String {
    let settings = cfg.settings.map(|s| SettingsSection {
        tcp: Some(s.tcp_timeouts[tcp::ESTABLISHED as usize]),
        tcpfin: Some(s.tcp_timeouts[tcp::FIN_WAIT as usize]),
        udp: Some(s.udp_timeout),
        expire_nodest_conn: s.expire_nodest_conn != 0,
        sloppy_tcp: s.sloppy_tcp != 0,
        expire_quiescent_template: s.expire_quiescent_template != 0,
        icmp_echo: s.icmp_echo != 0,
        conn_reuse_mode: Some(s.conn_reuse_mode),
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
            unplaced(ServiceSection {
                proto: proto.map(unplaced),
                vip: vip.map(unplaced),
                port: port.map(unplaced),
                fwmark: fwmark.map(unplaced),
                frontends: crate::listing::fold_frontends(&svc.frontends)
                    .iter()
                    .map(|f| {
                        let (proto, addr) = f.split_once(' ').unwrap_or(("", f));
                        unplaced(format!("{}:{addr}", proto.to_ascii_lowercase()))
                    })
                    .collect(),
                scheduler: Some(unplaced(o.scheduler.name().to_string())),
                sched_flags: ops::sched_flag_names(o.sched_flags).iter().map(|f| unplaced(f.to_string())).collect(),
                persistent: o.persistence.map(|p| p.timeout),
                netmask: o.persistence.filter(|p| p.netmask != ops::ONE_CLIENT).map(|p| unplaced(p.netmask.to_string())),
                one_packet: o.one_packet,
                reals: svc
                    .reals
                    .iter()
                    .map(|(rip, ro)| {
                        let health = svc.real_health.get(rip).cloned().map(Box::new);
                        unplaced(if *ro == RealOptions::default() && health.is_none() {
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
                        })
                    })
                    .collect(),
                sorry_server: svc.sorry_server.map(|s| unplaced(s.to_string())),
                health: svc.health.clone().map(unplaced),
            })
        })
        .collect();
    toml::to_string(&File { settings, service, bgp: cfg.bgp.clone() }).expect("a config always serialises")
}

pub fn load(path: &Path) -> Result<Config> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text).with_context(|| format!("in {}", path.display()))
}

/// Parses and checks a whole config. Every error names its line and column in `text`:
/// toml's own for syntax, types and unknown keys, and the place of the refused value
/// for the checks made here (a bad address, method, flag, …).
pub fn parse(text: &str) -> Result<Config> {
    let file: File = toml::from_str(text)?;
    if let Some(mode) = file.settings.as_ref().and_then(|s| s.conn_reuse_mode) {
        ensure!(mode <= 3, "settings: conn_reuse_mode {mode} is not 0 to 3 (IPVS's bits 1 and 2)");
    }
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
        out.expire_quiescent_template = s.expire_quiescent_template as u32;
        out.icmp_echo = s.icmp_echo as u32;
        out.conn_reuse_mode = s.conn_reuse_mode.unwrap_or(out.conn_reuse_mode);
        out
    });
    let mut services = Vec::new();
    let mut seen_ids = HashSet::new();
    let mut seen_frontends = HashSet::new();
    for (i, s) in file.service.iter().enumerate() {
        let refused = |span: Range<usize>, e: anyhow::Error| {
            let (line, column) = position(text, span.start);
            e.context(format!("line {line}, column {column}: service #{}", i + 1))
        };
        let svc = service(s.get_ref(), s.span()).map_err(|(span, e)| refused(span, e))?;
        if !seen_ids.insert(svc.id) {
            return Err(refused(s.span(), anyhow::anyhow!("Service already exists: {}", svc.id)));
        }
        let own = match svc.id {
            ServiceId::Addr(a) => vec![a],
            ServiceId::Fwmark(_) => svc.frontends.clone(),
        };
        for f in own {
            if !seen_frontends.insert(f) {
                return Err(refused(s.span(), anyhow::anyhow!("Service already exists: {f} (a VIP:port belongs to one service)")));
            }
        }
        services.push(svc);
    }
    if let Some(bgp) = &file.bgp {
        ensure!(bgp.quorum != Some(0), "bgp: quorum 0 would announce VIPs with no real server; give 1 or more");
        ensure!(
            bgp.bird_vips.is_some() || (bgp.bird_vips6.is_none() && bgp.bird_socket.is_none() && bgp.quorum.is_none()),
            "bgp: give `bird_vips`, the file BIRD includes (or --bird-vips)"
        );
    }
    Ok(Config { settings, services, bgp: file.bgp })
}

/// Line and column (both from 1; the column in characters) of byte `offset` of `text`.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (before.matches('\n').count() + 1, before[line_start..].chars().count() + 1)
}

/// A check's refusal and the place in the file of what it refused.
type Placed<T> = std::result::Result<T, (Range<usize>, anyhow::Error)>;

trait At<T> {
    /// Places an error at `span`.
    fn at(self, span: Range<usize>) -> Placed<T>;
}

impl<T, E: Into<anyhow::Error>> At<T> for std::result::Result<T, E> {
    fn at(self, span: Range<usize>) -> Placed<T> {
        self.map_err(|e| (span, e.into()))
    }
}

fn refuse<T>(span: Range<usize>, message: String) -> Placed<T> {
    Err((span, anyhow::anyhow!(message)))
}

/// Checks one `[[service]]` table (at `whole` in the file).
fn service(s: &ServiceSection, whole: Range<usize>) -> Placed<ServiceConfig> {
    let (id, frontends) = match (&s.fwmark, &s.vip, &s.port) {
        (Some(mark), None, None) => {
            if *mark.get_ref() == 0 {
                return refuse(mark.span(), "fwmark 0 is not a firewall mark".into());
            }
            if let Some(proto) = &s.proto {
                return refuse(proto.span(), "a fwmark service takes its protocols from `frontends`, not `proto`".into());
            }
            let mut list = Vec::new();
            for f in &s.frontends {
                let Some((proto, addr)) = f.get_ref().split_once(':') else {
                    return refuse(f.span(), format!("frontend `{}` is not PROTO:VIP:PORT (for example tcp:10.0.0.100:443)", f.get_ref()));
                };
                let proto: Proto = proto.parse().at(f.span())?;
                list.extend(ops::parse_frontends(proto, addr).at(f.span())?);
            }
            (ServiceId::Fwmark(*mark.get_ref()), list)
        }
        (None, Some(vip), Some(port)) => {
            if let Some(f) = s.frontends.first() {
                return refuse(f.span(), "`frontends` belong to fwmark services".into());
            }
            let proto: Proto = match &s.proto {
                Some(p) => p.get_ref().parse().at(p.span())?,
                None => "tcp".parse().at(whole.clone())?,
            };
            let vip_ip = ops::parse_ip(vip.get_ref()).at(vip.span())?;
            let port = ops::parse_port(&port.get_ref().to_string()).at(port.span())?;
            (ServiceId::Addr(Service { proto, vip: vip_ip, port }), Vec::new())
        }
        _ => return refuse(whole, "a service needs either `vip` and `port`, or `fwmark` (with `frontends`)".into()),
    };
    let scheduler: Scheduler = match &s.scheduler {
        Some(name) => name.get_ref().parse().at(name.span())?,
        None => "wlc".parse().at(whole.clone())?,
    };
    let mut sched_flags = 0;
    for flag in &s.sched_flags {
        sched_flags |= ops::parse_sched_flags(flag.get_ref()).at(flag.span())?;
    }
    let netmask = match &s.netmask {
        Some(m) => {
            if s.persistent.is_none() {
                return refuse(m.span(), "`netmask` needs `persistent`".into());
            }
            Some((ops::parse_netmask(m.get_ref()).at(m.span())?, m.span()))
        }
        None => None,
    };
    let persistence = s.persistent.map(|timeout| Persistence { timeout, netmask: netmask.as_ref().map_or(ops::ONE_CLIENT, |m| m.0) });
    let options = ServiceOptions { scheduler, sched_flags, persistence, one_packet: s.one_packet };
    // Most of what check_options refuses is about the netmask (its family).
    ops::check_options(id, &options).at(netmask.map_or(whole.clone(), |m| m.1))?;
    let mut reals: Vec<(RealAddr, RealOptions)> = Vec::new();
    let mut real_health = std::collections::BTreeMap::new();
    for r in &s.reals {
        let at = r.span();
        let (real, opts, health) = match r.get_ref() {
            RealSection::Address(a) => (a.parse::<RealAddr>().at(at.clone())?, RealOptions::default(), None),
            RealSection::Full(t) => {
                let forward = t.forward.as_deref().map(str::parse::<ForwardMethod>).transpose().at(at.clone())?.unwrap_or_default();
                let opts =
                    RealOptions { forward, weight: t.weight, u_threshold: t.u_threshold, l_threshold: t.l_threshold };
                (t.address.parse::<RealAddr>().at(at.clone())?, opts, t.health.as_deref())
            }
        };
        if let Some(h) = health {
            h.validate(id).with_context(|| format!("the health check of real server {real}")).at(at.clone())?;
        }
        ops::check_real(id, real, &opts).with_context(|| format!("real server {real}")).at(at.clone())?;
        ops::check_one_packet(id, options.one_packet, opts.forward).at(at.clone())?;
        // As the maps will list it, so that a reload compares like with like.
        let real = real.canonical(id);
        if reals.iter().any(|(r, _)| *r == real) {
            return refuse(at, format!("Destination already exists: {real}"));
        }
        if let Some(h) = health {
            real_health.insert(real, h.clone());
        }
        reals.push((real, opts));
    }
    let sorry_server = match &s.sorry_server {
        Some(ip) => Some(ops::parse_ip(ip.get_ref()).context("sorry_server").at(ip.span())?),
        None => None,
    };
    if let Some(h) = &s.health {
        h.get_ref().validate(id).at(h.span())?;
    }
    Ok(ServiceConfig {
        id,
        options,
        frontends,
        reals,
        sorry_server,
        health: s.health.as_ref().map(|h| h.get_ref().clone()),
        real_health,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conn_reuse_mode_is_read_written_back_and_checked() {
        let cfg = parse("[settings]\nconn_reuse_mode = 3\n").unwrap();
        assert_eq!(cfg.settings.unwrap().conn_reuse_mode, 3);
        assert_eq!(parse(&to_toml(&cfg)).unwrap().settings.unwrap().conn_reuse_mode, 3);
        let err = parse("[settings]\nconn_reuse_mode = 4\n").unwrap_err();
        assert!(format!("{err:#}").contains("conn_reuse_mode 4 is not 0 to 3"), "{err:#}");
    }

    #[test]
    fn parses_a_full_file() {
        let cfg = parse(
            r#"
            [settings]
            tcp = 600
            udp = 30
            expire_nodest_conn = true
            expire_quiescent_template = true
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
        assert_eq!(s.expire_quiescent_template, 1);
        assert_eq!(s.conn_reuse_mode, 1, "IPVS's default when the file says nothing");
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
    fn the_bgp_section_is_read_and_checked() {
        let cfg = parse(
            "[bgp]\nbird_vips = \"/run/bird/xlb-vips.conf\"\nbird_socket = \"/tmp/b.ctl\"\nquorum = 2\n[[service]]\nvip = \"10.0.0.100\"\nport = 80\n",
        )
        .unwrap();
        let bgp = cfg.bgp.clone().unwrap();
        assert_eq!(bgp.bird_vips.as_deref(), Some(Path::new("/run/bird/xlb-vips.conf")));
        assert_eq!((bgp.bird_socket.as_deref(), bgp.quorum, bgp.bird_vips6), (Some(Path::new("/tmp/b.ctl")), Some(2), None));
        assert_eq!(parse(&to_toml(&cfg)).unwrap(), cfg, "written back as read");
        assert_eq!(parse("[[service]]\nvip = \"10.0.0.100\"\nport = 80\n").unwrap().bgp, None);
        for (text, why) in [
            ("[bgp]\nbird_vips = \"/x\"\nquorum = 0\n", "quorum 0"),
            ("[bgp]\nquorum = 2\n", "give `bird_vips`"),
            ("[bgp]\nbird_vips = \"/x\"\nneighbor = \"10.0.0.1\"\n", "unknown field"),
        ] {
            let e = format!("{:#}", parse(text).unwrap_err());
            assert!(e.contains(why), "{text}: {e}");
        }
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

    /// The README's example with one mistake: the refusal names the mistake's line and
    /// column, as toml's own errors do, whichever check refuses it.
    #[test]
    fn refusals_of_checks_name_line_and_column() {
        let file = |vip: &str, forward: &str, flag: &str, netmask: &str| {
            format!(
                "[settings]\ntcp = 900\n\n[[service]]\nproto = \"tcp\"\nvip = \"{vip}\"\nport = 80\npersistent = 300\nnetmask = \"{netmask}\"\n\
                 reals = [\"192.168.1.11\", {{ address = \"192.168.1.12\", forward = \"{forward}\" }}]\n\n\
                 [[service]]\nfwmark = 1\nfrontends = [\"tcp:192.168.1.200:443\"]\nscheduler = \"sh\"\nsched_flags = [\"sh-port\", \"{flag}\"]\n"
            )
        };
        let good = file("192.168.1.200", "nat", "sh-fallback", "255.255.255.0");
        parse(&good).expect("the example itself is good");
        let err = |text: String| format!("{:#}", parse(&text).unwrap_err());
        assert_eq!(
            err(file("10.66.0.311", "nat", "sh-fallback", "255.255.255.0")),
            "line 6, column 7: service #1: `10.66.0.311` is not an IP address"
        );
        let forward = err(file("192.168.1.200", "nta", "sh-fallback", "255.255.255.0"));
        assert!(forward.starts_with("line 10, column 26: service #1: unknown forwarding method"), "{forward}");
        let flag = err(file("192.168.1.200", "nat", "sh-prot", "255.255.255.0"));
        assert!(flag.starts_with("line 16, column 27: service #2: unknown scheduler flag `sh-prot`"), "{flag}");
        let mask = err(file("192.168.1.200", "nat", "sh-fallback", "64"));
        assert!(mask.starts_with("line 9, column 11: service #1: "), "{mask}");
        // Refusals of a whole service point at its table.
        let dup = "[[service]]\nvip = \"10.0.0.1\"\nport = 80\n\n[[service]]\nvip = \"10.0.0.1\"\nport = 80\n";
        assert!(err(dup.into()).starts_with("line 5, column 1: service #2: Service already exists"), "{}", err(dup.into()));
        let health = "[[service]]\nvip = \"10.0.0.1\"\nport = 80\n[service.health]\ntype = \"udp\"\n";
        assert!(err(health.into()).starts_with("line 4, column 1: service #1: "), "{}", err(health.into()));
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
