//! Control operations on the fast path's maps: the only code that writes services and
//! real servers, used by the CLI, the config loader and the tests alike.
//!
//! Every change that affects scheduling rebuilds the service's real list and table into
//! fresh pool slots and then replaces the service entry whole, so the fast path always
//! sees either the old or the new table, never a mix.
//!
//! Identities outlive removals while connections may use them, as IPVS's destination
//! trash does (ip_vs_ctl.c ip_vs_trash_get_dest): a removed real stays in the maps, marked
//! removed, and a service removed with connections stays, marked trashed, until its last
//! connection is gone (see [`sweep`]). So the maps themselves remember (service key → id)
//! and (service id, real address, port → real id) for removed entries, pinned across
//! daemon restarts, and adding the same service or real again takes that id back, with
//! its connections (which compare the ids).
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use anyhow::{Result, bail};
use aya::maps::PerCpuValues;
use lb_common::{
    ConnEntry, FlowKey, PROTO_TCP, PROTO_UDP, RealEntry, RealStats, ServiceInfo, ServiceKey, Settings, addr, counter, forward,
    real_flags, sched, svc_flags, tcp,
};
use serde::{Deserialize, Serialize};

use crate::{
    maps::Maps,
    model::{Limits, Model},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub const fn number(self) -> u8 {
        match self {
            Proto::Tcp => PROTO_TCP,
            Proto::Udp => PROTO_UDP,
        }
    }
    pub const fn from_number(n: u8) -> Option<Self> {
        match n {
            PROTO_TCP => Some(Proto::Tcp),
            PROTO_UDP => Some(Proto::Udp),
            _ => None,
        }
    }
    pub const fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
        }
    }
}

impl std::str::FromStr for Proto {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            _ => bail!("unknown protocol `{s}` (expected tcp or udp)"),
        }
    }
}

/// One frontend: protocol, VIP (IPv4 or IPv6) and port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Service {
    pub proto: Proto,
    pub vip: IpAddr,
    pub port: u16,
}

impl Service {
    pub fn key(&self) -> ServiceKey {
        ServiceKey::new(addr::from_ip(self.vip), self.port, self.proto.number())
    }
    pub(crate) fn from_key(key: &ServiceKey) -> Option<Self> {
        Some(Self { proto: Proto::from_number(key.proto)?, vip: addr::to_ip(key.vip), port: key.port() })
    }
    /// "VIP:PORT", the IPv6 address in brackets.
    pub fn endpoint(&self) -> String {
        SocketAddr::new(self.vip, self.port).to_string()
    }
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.proto.name(), self.endpoint())
    }
}

/// An IPv4 or IPv6 address (an IPv6 one may be in brackets). IPv4-mapped IPv6 is
/// refused: xlb keeps IPv4 in that form itself, so it would stand for the IPv4 address.
pub fn parse_ip(s: &str) -> Result<IpAddr> {
    let bare = s.strip_prefix('[').and_then(|v| v.strip_suffix(']')).unwrap_or(s);
    match bare.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_some() => {
            bail!("`{s}` is an IPv4-mapped IPv6 address: write it as IPv4 ({})", v6.to_ipv4_mapped().unwrap())
        }
        Ok(ip) => Ok(ip),
        Err(_) => bail!("`{s}` is not an IP address"),
    }
}

/// Splits "HOST:PORT" where HOST is IPv4 or a bracketed IPv6 address.
fn split_endpoint<'a>(s: &'a str, example: &str) -> Result<(&'a str, &'a str)> {
    let split = match s.strip_prefix('[') {
        Some(rest) => rest.split_once("]:"),
        None => s.rsplit_once(':').filter(|(host, _)| !host.contains(':')),
    };
    match split {
        Some(parts) => Ok(parts),
        None if s.contains("::") || s.matches(':').count() > 1 => {
            bail!("`{s}` is not {example}: an IPv6 address takes brackets, as in [2001:db8::1]:80")
        }
        None => bail!("`{s}` is not {example} (for example 10.0.0.100:80)"),
    }
}

/// A virtual service as the user names it: one VIP:port, or a firewall-mark group
/// (xlb's equivalent of IPVS's `-f MARK` services: frontends added with `xlb frontend`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceId {
    Addr(Service),
    Fwmark(u32),
}

impl std::fmt::Display for ServiceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServiceId::Addr(s) => s.fmt(f),
            ServiceId::Fwmark(m) => write!(f, "FWM {m}"),
        }
    }
}

impl ServiceId {
    /// `tcp 10.0.0.1:80`, `udp 10.0.0.1:53` or `fwm 1`.
    pub fn parse(kind: &str, addr: &str) -> Result<Self> {
        if kind.eq_ignore_ascii_case("fwm") || kind.eq_ignore_ascii_case("fwmark") {
            return match addr.parse::<u32>() {
                Ok(m) if m > 0 => Ok(ServiceId::Fwmark(m)),
                _ => bail!("`{addr}` is not a firewall mark (1-4294967295)"),
            };
        }
        let proto: Proto = kind.parse()?;
        let (vip, port) = parse_vip_port(addr)?;
        Ok(ServiceId::Addr(Service { proto, vip, port }))
    }
}

/// Parses "VIP:PORT" ("[VIP]:PORT" for IPv6).
pub fn parse_vip_port(s: &str) -> Result<(IpAddr, u16)> {
    let (ip, port) = split_endpoint(s, "VIP:PORT")?;
    Ok((parse_ip(ip)?, parse_port(port)?))
}

pub fn parse_port(port: &str) -> Result<u16> {
    match port.parse::<u16>() {
        Ok(p) if p != 0 => Ok(p),
        _ => bail!("`{port}` is not a port (1-65535)"),
    }
}

/// Parses "VIP:PORT" or "VIP:FIRST-LAST" (IPv6 in brackets) into frontends of `proto`.
pub fn parse_frontends(proto: Proto, s: &str) -> Result<Vec<Service>> {
    let (ip, ports) = split_endpoint(s, "VIP:PORT or VIP:FIRST-LAST")?;
    let vip = parse_ip(ip)?;
    let (first, last) = match ports.split_once('-') {
        Some((a, b)) => (parse_port(a)?, parse_port(b)?),
        None => (parse_port(ports)?, parse_port(ports)?),
    };
    if first > last {
        bail!("port range {first}-{last} is empty");
    }
    Ok((first..=last).map(|port| Service { proto, vip, port }).collect())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheduler {
    Rr,
    Wrr,
    Sh,
    Dh,
    Lc,
    Wlc,
    Sed,
    Nq,
    Mh,
    Fo,
    Ovf,
}

const SCHEDULERS: [(Scheduler, &str, u32); 11] = [
    (Scheduler::Rr, "rr", sched::RR),
    (Scheduler::Wrr, "wrr", sched::WRR),
    (Scheduler::Sh, "sh", sched::SH),
    (Scheduler::Dh, "dh", sched::DH),
    (Scheduler::Lc, "lc", sched::LC),
    (Scheduler::Wlc, "wlc", sched::WLC),
    (Scheduler::Sed, "sed", sched::SED),
    (Scheduler::Nq, "nq", sched::NQ),
    (Scheduler::Mh, "mh", sched::MH),
    (Scheduler::Fo, "fo", sched::FO),
    (Scheduler::Ovf, "ovf", sched::OVF),
];

impl std::str::FromStr for Scheduler {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match SCHEDULERS.iter().find(|(_, name, _)| *name == s) {
            Some((sched, _, _)) => Ok(*sched),
            None => bail!("unknown scheduler `{s}` (rr, wrr, sh, dh, lc, wlc, sed, nq, mh, fo, ovf)"),
        }
    }
}

impl Scheduler {
    fn entry(self) -> &'static (Scheduler, &'static str, u32) {
        SCHEDULERS.iter().find(|(s, _, _)| *s == self).expect("every scheduler is listed")
    }
    pub fn id(self) -> u32 {
        self.entry().2
    }
    pub fn name(self) -> &'static str {
        self.entry().1
    }
    pub fn from_id(id: u32) -> Option<Self> {
        SCHEDULERS.iter().find(|(_, _, i)| *i == id).map(|(s, _, _)| *s)
    }
}

/// IPVS's --sched-flags: sh-port, sh-fallback, mh-port, mh-fallback.
pub const SCHED_FLAG_NAMES: [(&str, u32); 4] = [
    ("sh-fallback", svc_flags::SH_FALLBACK),
    ("sh-port", svc_flags::SH_PORT),
    ("mh-fallback", svc_flags::MH_FALLBACK),
    ("mh-port", svc_flags::MH_PORT),
];

pub fn parse_sched_flags(list: &str) -> Result<u32> {
    let mut flags = 0;
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some((_, f)) = SCHED_FLAG_NAMES.iter().find(|(n, _)| *n == name) else {
            bail!("unknown scheduler flag `{name}` (sh-fallback, sh-port, mh-fallback, mh-port)");
        };
        flags |= f;
    }
    Ok(flags)
}

pub fn sched_flag_names(flags: u32) -> Vec<&'static str> {
    SCHED_FLAG_NAMES.iter().filter(|(_, f)| flags & f != 0).map(|(n, _)| *n).collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Persistence {
    /// Seconds a client's template lives after its last connection (IPVS default 300).
    pub timeout: u32,
    /// Clients in one network share a real: an IPv4 netmask, or an IPv6 one for IPv6
    /// services (255.255.255.255, the default, is one client for either family).
    pub netmask: IpAddr,
}

/// The default persistence granularity: each client on its own.
pub const ONE_CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::BROADCAST);

/// ipvsadm's -M: an IPv4 netmask, an IPv6 one, or an IPv6 prefix length (as ipvsadm
/// takes IPv6 netmasks).
pub fn parse_netmask(s: &str) -> Result<IpAddr> {
    if let Ok(len) = s.trim_start_matches('/').parse::<u32>() {
        if !(1..=128).contains(&len) {
            bail!("`{s}` is not an IPv6 prefix length (1-128)");
        }
        return Ok(IpAddr::V6(Ipv6Addr::from(u128::MAX << (128 - len))));
    }
    s.parse::<IpAddr>().map_err(|_| anyhow::anyhow!("`{s}` is not a netmask"))
}

/// Whether `m`'s ones come first and its zeros last.
fn contiguous(m: IpAddr) -> bool {
    match m {
        IpAddr::V4(a) => {
            let m = u32::from(a);
            m.leading_ones() + m.trailing_zeros() == 32
        }
        IpAddr::V6(a) => {
            let m = u128::from(a);
            m.leading_ones() + m.trailing_zeros() == 128
        }
    }
}

pub const DEFAULT_PERSISTENCE_TIMEOUT: u32 = 300;

/// How a service schedules (ipvsadm -A/-E's options).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceOptions {
    pub scheduler: Scheduler,
    /// svc_flags::SH_* / MH_* bits.
    pub sched_flags: u32,
    pub persistence: Option<Persistence>,
    /// One-packet scheduling (UDP).
    pub one_packet: bool,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        // IPVS's default scheduler.
        Self { scheduler: Scheduler::Wlc, sched_flags: 0, persistence: None, one_packet: false }
    }
}

impl ServiceOptions {
    fn flags(&self) -> u32 {
        let mut f = self.sched_flags;
        if self.persistence.is_some() {
            f |= svc_flags::PERSISTENT;
        }
        if self.one_packet {
            f |= svc_flags::ONE_PACKET;
        }
        f
    }
    pub(crate) fn from_info(info: &ServiceInfo) -> Self {
        Self {
            scheduler: Scheduler::from_id(info.scheduler).unwrap_or(Scheduler::Wlc),
            sched_flags: info.flags & (svc_flags::SH_PORT | svc_flags::SH_FALLBACK | svc_flags::MH_PORT | svc_flags::MH_FALLBACK),
            persistence: (info.flags & svc_flags::PERSISTENT != 0).then(|| {
                let m = info.persist_mask;
                // An IPv4 mask keeps the IPv4-mapped prefix whole.
                let netmask = if m[..12].iter().all(|&b| b == 0xff) {
                    IpAddr::V4(Ipv4Addr::from(addr::v4(&m)))
                } else {
                    IpAddr::V6(Ipv6Addr::from(m))
                };
                Persistence { timeout: info.persist_timeout, netmask }
            }),
            one_packet: info.flags & svc_flags::ONE_PACKET != 0,
        }
    }
}

/// How frames reach a real server (ipvsadm's -g, -m, -i).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForwardMethod {
    /// Direct routing: MAC rewrite (-g, the default).
    #[default]
    Route,
    /// NAT / masquerading (-m).
    Masq,
    /// IPIP tunnel (-i).
    Tunnel,
}

impl ForwardMethod {
    /// The Forward column of ipvsadm's listing.
    pub const fn name(self) -> &'static str {
        match self {
            ForwardMethod::Route => "Route",
            ForwardMethod::Masq => "Masq",
            ForwardMethod::Tunnel => "Tunnel",
        }
    }
    /// The fast path's code (lb_common::forward).
    pub const fn code(self) -> u8 {
        match self {
            ForwardMethod::Route => forward::DR,
            ForwardMethod::Masq => forward::NAT,
            ForwardMethod::Tunnel => forward::TUN,
        }
    }
    pub const fn from_code(code: u8) -> Self {
        match code {
            forward::NAT => ForwardMethod::Masq,
            forward::TUN => ForwardMethod::Tunnel,
            _ => ForwardMethod::Route,
        }
    }
    /// The config file's name (`forward = "nat"`).
    pub const fn config_name(self) -> &'static str {
        match self {
            ForwardMethod::Route => "dr",
            ForwardMethod::Masq => "nat",
            ForwardMethod::Tunnel => "tun",
        }
    }
    /// ipvsadm's switch (-g, -m, -i), as -S writes it.
    pub const fn switch(self) -> &'static str {
        match self {
            ForwardMethod::Route => "-g",
            ForwardMethod::Masq => "-m",
            ForwardMethod::Tunnel => "-i",
        }
    }
}

impl std::str::FromStr for ForwardMethod {
    type Err = anyhow::Error;
    /// ipvsadm's and LVS's names: route/dr/gatewaying, masq/nat/masquerading, tunnel/tun/ipip.
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "route" | "dr" | "gatewaying" => Ok(ForwardMethod::Route),
            "masq" | "nat" | "masquerading" => Ok(ForwardMethod::Masq),
            "tunnel" | "tun" | "ipip" => Ok(ForwardMethod::Tunnel),
            _ => bail!("unknown forwarding method `{s}` (dr, nat or tun)"),
        }
    }
}

/// A real server as ipvsadm's `-r` names it: an address, and a port that only NAT may
/// choose (None: the service's port).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RealAddr {
    pub ip: IpAddr,
    pub port: Option<u16>,
}

impl RealAddr {
    /// The same real as configs name it: the port only where it differs from the
    /// service's (a NAT port mapping), so a config and the maps compare equal.
    pub fn canonical(self, id: ServiceId) -> Self {
        let service_port = match id {
            ServiceId::Addr(a) => a.port,
            ServiceId::Fwmark(_) => 0,
        };
        Self { ip: self.ip, port: self.port.filter(|p| *p != service_port && *p != 0) }
    }
}

impl From<IpAddr> for RealAddr {
    fn from(ip: IpAddr) -> Self {
        Self { ip, port: None }
    }
}

impl From<Ipv4Addr> for RealAddr {
    fn from(ip: Ipv4Addr) -> Self {
        IpAddr::V4(ip).into()
    }
}

impl From<Ipv6Addr> for RealAddr {
    fn from(ip: Ipv6Addr) -> Self {
        IpAddr::V6(ip).into()
    }
}

impl std::str::FromStr for RealAddr {
    type Err = anyhow::Error;
    /// "RIP" or "RIP:PORT" (IPv6: "RIP" or "[RIP]:PORT").
    fn from_str(s: &str) -> Result<Self> {
        let with_port = if s.starts_with('[') { s.contains("]:") } else { s.matches(':').count() == 1 };
        if with_port {
            let (ip, port) = split_endpoint(s, "RIP:PORT")?;
            return Ok(Self { ip: parse_ip(ip)?, port: Some(parse_port(port)?) });
        }
        Ok(Self { ip: parse_ip(s)?, port: None })
    }
}

impl std::fmt::Display for RealAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.port {
            Some(port) => SocketAddr::new(self.ip, port).fmt(f),
            None => self.ip.fmt(f),
        }
    }
}

/// A real server's options (ipvsadm -a/-e's -g/-m/-i, -w, -x, -y).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RealOptions {
    pub forward: ForwardMethod,
    pub weight: u32,
    pub u_threshold: u32,
    pub l_threshold: u32,
}

impl Default for RealOptions {
    fn default() -> Self {
        Self { forward: ForwardMethod::Route, weight: 1, u_threshold: 0, l_threshold: 0 }
    }
}

pub const MAX_WEIGHT: u32 = 65_535;

/// The director's side of the route to a real server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Egress {
    /// The interface frames leave by, and its MAC.
    pub ifindex: u32,
    pub mac: [u8; 6],
    /// The path MTU (TUN's encapsulated frames must fit it).
    pub mtu: u32,
    /// The director's address on that route (TUN's outer source address).
    pub src: IpAddr,
}

/// Where frames for a real server go, as the kernel resolves it (see `nexthop`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NextHop {
    /// None while there is no route to the real.
    pub egress: Option<Egress>,
    /// The next hop's MAC (the real's own, or a router's); None while unresolved.
    pub mac: Option<[u8; 6]>,
}

impl NextHop {
    /// Writes the next hop into a real's entry (a MAC without a route means nothing).
    pub(crate) fn apply(&self, real: &mut RealEntry) {
        real.flags &= !(real_flags::MAC_VALID | real_flags::ROUTE_VALID);
        (real.mac, real.src_mac, real.ifindex, real.mtu, real.src_ip) = ([0; 6], [0; 6], 0, 0, [0; 16]);
        if let Some(e) = self.egress {
            real.flags |= real_flags::ROUTE_VALID;
            (real.src_mac, real.ifindex, real.mtu, real.src_ip) = (e.mac, e.ifindex, e.mtu, addr::from_ip(e.src));
            if let Some(mac) = self.mac {
                real.flags |= real_flags::MAC_VALID;
                real.mac = mac;
            }
        }
    }

    pub(crate) fn of(real: &RealEntry) -> Self {
        let egress = real.route_valid().then(|| Egress {
            ifindex: real.ifindex,
            mac: real.src_mac,
            mtu: real.mtu,
            src: addr::to_ip(real.src_ip),
        });
        Self { egress, mac: real.mac_valid().then_some(real.mac) }
    }
}

/// A refused operation, in libipvs's words (what ipvsadm prints) plus the details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub ipvs: &'static str,
    pub detail: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.detail.is_empty() { f.write_str(self.ipvs) } else { write!(f, "{}: {}", self.ipvs, self.detail) }
    }
}

impl std::error::Error for Refusal {}

/// libipvs's messages (ipvs_strerror).
pub mod ipvs_msg {
    pub const SERVICE_EXISTS: &str = "Service already exists";
    pub const NO_SERVICE: &str = "No such service";
    pub const SERVICE_NOT_DEFINED: &str = "Service not defined";
    pub const DEST_EXISTS: &str = "Destination already exists";
    pub const NO_DEST: &str = "No such destination";
    pub const NO_MEMORY: &str = "Memory allocation problem";
    pub const INVALID: &str = "Invalid operation";
}

pub(crate) fn refuse(ipvs: &'static str, detail: impl Into<String>) -> anyhow::Error {
    Refusal { ipvs, detail: detail.into() }.into()
}

/// The model's id limits: the sizes the maps got at load (`--max-services`,
/// `--max-reals`), not the object's compile-time ones.
fn map_limits(maps: &Maps) -> Limits {
    Limits { services: maps.rr_cursors.len(), reals: maps.real_load.len(), ..Limits::default() }
}

fn per_cpu<T: aya::Pod + Default>() -> Result<PerCpuValues<T>> {
    let cpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))?;
    Ok(PerCpuValues::try_from(vec![T::default(); cpus])?)
}

/// The live services (not those kept in the trash for their connections).
fn services(maps: &Maps) -> Result<Vec<ServiceInfo>> {
    Ok(all_services(maps)?.into_iter().filter(|s| !trashed(s)).collect())
}

/// Every service entry, the trashed ones too (they hold their ids and frontends).
fn all_services(maps: &Maps) -> Result<Vec<ServiceInfo>> {
    let mut v = Vec::new();
    for entry in maps.service_info.iter() {
        v.push(entry?.1);
    }
    Ok(v)
}

pub(crate) fn trashed(info: &ServiceInfo) -> bool {
    info.flags & svc_flags::TRASHED != 0
}

fn frontends(maps: &Maps) -> Result<Vec<(ServiceKey, u32)>> {
    let mut v = Vec::new();
    for entry in maps.services.iter() {
        v.push(entry?);
    }
    Ok(v)
}

fn reals(maps: &Maps) -> Result<Vec<(u32, RealEntry)>> {
    let mut v = Vec::new();
    for entry in maps.reals.iter() {
        v.push(entry?);
    }
    v.sort_by_key(|(id, _)| *id);
    Ok(v)
}

/// The model of the controller's tables, restored from the maps at the first change.
fn model(maps: &mut Maps) -> Result<&mut Model> {
    if maps.model.is_none() {
        maps.model = Some(Model::restore(maps, map_limits(maps))?);
    }
    Ok(maps.model.as_mut().expect("restored above"))
}

/// Runs one change on the model and commits it to the maps (inside [`batch`], at the
/// batch's end). A failed change writes nothing; if it left the model changed, or the
/// commit failed, the model is dropped and restored from the maps at the next change.
fn change<T>(maps: &mut Maps, f: impl FnOnce(&mut Model) -> Result<T>) -> Result<T> {
    let result = f(model(maps)?);
    if maps.batch_depth > 0 {
        return result; // the batch commits, or rolls the model back
    }
    let mut model = maps.model.take().expect("restored above");
    match result {
        Ok(v) => match model.commit(maps) {
            Ok(w) => {
                maps.last_commit_entries = w.entries();
                maps.model = Some(model);
                Ok(v)
            }
            Err(e) => Err(e),
        },
        Err(e) => {
            if !model.has_pending() {
                maps.model = Some(model);
            }
            Err(e)
        }
    }
}

/// Runs `f`'s changes as one batch: nothing reaches the maps until it returns Ok, then
/// every change is written at once (one rebuild per service changed, batched map
/// writes); if it fails, the model goes back to where it was and nothing is written.
/// Batches nest (the outermost commits). Settings are not part of the batch.
pub fn batch<T>(maps: &mut Maps, f: impl FnOnce(&mut Maps) -> Result<T>) -> Result<T> {
    let saved = batch_begin(maps)?;
    let result = f(maps);
    batch_end(maps, saved, result.is_ok())?;
    result
}

/// Opens a batch (see [`batch`]) for callers that cannot pass a closure; returns the
/// model to go back to, for [`batch_end`].
pub fn batch_begin(maps: &mut Maps) -> Result<Model> {
    let saved = model(maps)?.clone();
    maps.batch_depth += 1;
    Ok(saved)
}

/// Closes a batch: with `ok`, the outermost batch commits its changes; without, the
/// model goes back to `saved` and nothing is written.
pub fn batch_end(maps: &mut Maps, saved: Model, ok: bool) -> Result<()> {
    maps.batch_depth = maps.batch_depth.saturating_sub(1);
    if !ok {
        maps.model = Some(saved);
        return Ok(());
    }
    if maps.batch_depth > 0 {
        return Ok(());
    }
    let Some(mut model) = maps.model.take() else { return Ok(()) };
    maps.last_commit_entries = model.commit(maps)?.entries();
    maps.model = Some(model);
    Ok(())
}

/// The real ids among `ids` that have connections.
pub fn connected_reals(maps: &Maps, ids: impl IntoIterator<Item = u32>) -> std::collections::BTreeSet<u32> {
    ids.into_iter().filter(|id| has_conns(maps, *id)).collect()
}

/// The configured services as the model holds them, if this process has one (None
/// before its first change: read the maps).
pub fn model_services(maps: &Maps) -> Option<Vec<crate::config::ServiceConfig>> {
    maps.model.as_ref().map(Model::services)
}

/// The real ids of every real (removed ones too) of the live services `ids` names.
pub fn reals_of_services(maps: &mut Maps, ids: &[ServiceId]) -> Result<Vec<u32>> {
    let m = model(maps)?;
    Ok(ids.iter().filter_map(|id| m.real_ids_of(*id).ok()).flatten().collect())
}

/// The model, for code that drives it directly (reconcile).
pub(crate) fn with_model<T>(maps: &mut Maps, f: impl FnOnce(&mut Model) -> Result<T>) -> Result<T> {
    change(maps, f)
}

/// The VIPs with `quorum` reals taking new connections in one of their services (see
/// [`Model::vips_with_quorum`]), from the model, or without one read from the maps.
pub fn vips_with_quorum(maps: &Maps, quorum: u32) -> Result<std::collections::BTreeSet<IpAddr>> {
    match &maps.model {
        Some(m) => Ok(m.vips_with_quorum(quorum)),
        None => Ok(Model::restore(maps, map_limits(maps))?.vips_with_quorum(quorum)),
    }
}

/// The service entry for `id` (from the model, or without one read from the maps).
pub fn find_service(maps: &Maps, id: ServiceId) -> Result<ServiceInfo> {
    match &maps.model {
        Some(m) => m.find_service(id),
        None => Model::restore(maps, map_limits(maps))?.find_service(id),
    }
}

pub fn check_options(id: ServiceId, opts: &ServiceOptions) -> Result<()> {
    if opts.one_packet && !matches!(id, ServiceId::Addr(Service { proto: Proto::Udp, .. }) | ServiceId::Fwmark(_)) {
        return Err(refuse(ipvs_msg::INVALID, "one-packet scheduling (-o) is for UDP services only"));
    }
    if let Some(p) = opts.persistence {
        if p.timeout == 0 {
            bail!("persistence timeout must be at least 1 second");
        }
        if !contiguous(p.netmask) {
            bail!("`{}` is not a netmask", p.netmask);
        }
        if let ServiceId::Addr(svc) = id {
            if p.netmask.is_ipv4() != svc.vip.is_ipv4() && p.netmask != ONE_CLIENT {
                bail!("netmask {} is for the other address family than {id}", p.netmask);
            }
        }
    }
    Ok(())
}

/// Flags the health machinery owns, kept across option edits.
const HEALTH_FLAGS: u32 = svc_flags::INHIBIT_ON_FAILURE | svc_flags::SORRY_ACTIVE;

pub(crate) fn info_with(base: ServiceInfo, opts: &ServiceOptions) -> ServiceInfo {
    let p = opts.persistence.unwrap_or(Persistence { timeout: 0, netmask: ONE_CLIENT });
    let persist_mask = match p.netmask {
        IpAddr::V4(m) => addr::v4_mask(m.octets()),
        IpAddr::V6(m) => m.octets(),
    };
    ServiceInfo {
        scheduler: opts.scheduler.id(),
        flags: opts.flags() | (base.flags & HEALTH_FLAGS) | if opts.scheduler == Scheduler::Mh { svc_flags::MID_FLOW_PICKUP } else { 0 },
        persist_timeout: p.timeout,
        persist_mask,
        ..base
    }
}

/// ipvsadm -A. A service removed while it had connections, added again before they
/// expired, gets its internal id back, so its connections carry on.
pub fn add_service(maps: &mut Maps, id: ServiceId, opts: ServiceOptions) -> Result<()> {
    change(maps, |m| m.add_service(id, opts).map(drop))
}

/// ipvsadm -E.
pub fn edit_service(maps: &mut Maps, id: ServiceId, opts: ServiceOptions) -> Result<()> {
    change(maps, |m| m.edit_service(id, opts))
}

/// Whether a real has connections (IPVS keeps it, and its service, in the trash then).
fn has_conns(maps: &Maps, real_id: u32) -> bool {
    maps.real_load.get(&real_id, 0).is_ok_and(|l| l.active != 0 || l.inactive != 0)
}

/// ipvsadm -D. The reals are marked removed. A service with connections goes to the
/// trash (IPVS keeps its destinations there while connections use them): its packets
/// are dropped, not passed to the director's stack (which would reset them), until the
/// connections expire or the service is added back and takes them over.
pub fn remove_service(maps: &mut Maps, id: ServiceId) -> Result<()> {
    let ids = model(maps)?.real_ids_of(id)?;
    let connected: std::collections::BTreeSet<u32> = ids.into_iter().filter(|r| has_conns(maps, *r)).collect();
    change(maps, |m| m.remove_service(id, &mut |r| connected.contains(&r)))
}

/// Adds frontends (VIP:port entries) to a firewall-mark service.
pub fn add_frontends(maps: &mut Maps, mark: u32, list: &[Service]) -> Result<()> {
    change(maps, |m| m.add_frontends(mark, list))
}

pub fn remove_frontends(maps: &mut Maps, mark: u32, list: &[Service]) -> Result<()> {
    change(maps, |m| m.remove_frontends(mark, list))
}

pub fn check_real_options(opts: &RealOptions) -> Result<()> {
    if opts.weight > MAX_WEIGHT {
        bail!("weight {} is out of range (0-{MAX_WEIGHT})", opts.weight);
    }
    if opts.u_threshold != 0 && opts.l_threshold > opts.u_threshold {
        bail!("lower threshold {} is above upper threshold {}", opts.l_threshold, opts.u_threshold);
    }
    Ok(())
}

/// Checks a real for service `id` and returns its port (None: the service's own; a
/// fwmark service's is 0, "the port the client connected to"). Only NAT maps ports: DR
/// and TUN leave the packet's port as the client sent it.
pub fn check_real(id: ServiceId, real: RealAddr, opts: &RealOptions) -> Result<u16> {
    check_real_options(opts)?;
    if let ServiceId::Addr(svc) = id {
        check_family(id, svc.vip, real.ip)?;
    }
    let forward = opts.forward;
    let service_port = match id {
        ServiceId::Addr(s) => s.port,
        ServiceId::Fwmark(_) => 0,
    };
    match real.port {
        None => Ok(service_port),
        Some(p) if p == service_port || forward == ForwardMethod::Masq => Ok(p),
        Some(p) => bail!(
            "{real} in {id}: only NAT (-m) maps ports; {} keeps the port the client connected to{}",
            forward.name(),
            if service_port == 0 { String::new() } else { format!(" ({service_port}), not {p}") }
        ),
    }
}

/// A real server serves its service's address family (a fwmark group's frontends and
/// reals are all of one family too).
pub(crate) fn check_family(id: ServiceId, service: IpAddr, real: IpAddr) -> Result<()> {
    if service.is_ipv4() != real.is_ipv4() {
        let family = |ip: IpAddr| if ip.is_ipv4() { "IPv4" } else { "IPv6" };
        bail!("{real} is {} and {id} is {}: a real server serves its service's address family", family(real), family(service));
    }
    Ok(())
}

/// One-packet scheduling keeps no connection entry, which a NAT real's replies need.
pub fn check_one_packet(id: ServiceId, one_packet: bool, forward: ForwardMethod) -> Result<()> {
    if one_packet && forward == ForwardMethod::Masq {
        bail!("{id} schedules one packet at a time (-o): NAT (-m) reals need connection entries for their replies");
    }
    Ok(())
}

/// ipvsadm -a. A real removed earlier but still draining is brought back with its flows.
pub fn add_real(maps: &mut Maps, id: ServiceId, real: impl Into<RealAddr>, opts: RealOptions, hop: NextHop) -> Result<u32> {
    let real = real.into();
    change(maps, |m| m.add_real(id, real, opts, hop))
}

/// ipvsadm -e.
pub fn edit_real(maps: &mut Maps, id: ServiceId, real: impl Into<RealAddr>, opts: RealOptions) -> Result<()> {
    let real = real.into();
    change(maps, |m| m.edit_real(id, real, opts))
}

/// ipvsadm -d: no new flows; the packets of established ones are dropped until the real
/// is added back (taking them back) or they expire (at once with expire_nodest_conn).
pub fn remove_real(maps: &mut Maps, id: ServiceId, real: impl Into<RealAddr>) -> Result<()> {
    let real = real.into();
    change(maps, |m| m.remove_real(id, real))
}

/// Updates a real's next hop (after the route or neighbour entry changed).
pub fn set_real_target(maps: &mut Maps, real_id: u32, hop: NextHop) -> Result<()> {
    change(maps, |m| m.set_real_target(real_id, hop))
}

/// Every real in the maps (draining ones too: their flows still go somewhere) with its
/// address and current next hop, for the controller's refresh.
pub fn next_hops(maps: &mut Maps) -> Result<Vec<(u32, IpAddr, NextHop)>> {
    Ok(model(maps)?.next_hops())
}

/// Marks a real (address and port: two NAT reals may share an address) up or down by
/// its health check and reschedules around it.
pub fn set_real_health(maps: &mut Maps, id: ServiceId, real: impl Into<RealAddr>, up: bool) -> Result<()> {
    let real = real.into();
    change(maps, |m| m.set_real_health(id, real, up))
}

/// Whether a failed real stays in the tables with weight 0 (inhibit) or leaves them.
pub fn set_inhibit_on_failure(maps: &mut Maps, id: ServiceId, inhibit: bool) -> Result<()> {
    change(maps, |m| m.set_service_flag(id, svc_flags::INHIBIT_ON_FAILURE, inhibit).map(drop))
}

/// Sends new connections to the sorry server (or back to the reals). True if it changed.
pub fn set_sorry_active(maps: &mut Maps, id: ServiceId, active: bool) -> Result<bool> {
    change(maps, |m| m.set_service_flag(id, svc_flags::SORRY_ACTIVE, active))
}

/// Sets or clears a service's sorry server (keepalived's sorry_server).
pub fn set_sorry_server(maps: &mut Maps, id: ServiceId, sorry: Option<(IpAddr, NextHop)>) -> Result<()> {
    change(maps, |m| m.set_sorry_server(id, sorry))
}

pub fn settings(maps: &Maps) -> Result<Settings> {
    Ok(maps.settings.get(&0, 0)?)
}

/// Writes the settings; the sync master's switch (`sync_master`, the daemon's, not
/// configuration) keeps its value.
pub fn set_settings(maps: &mut Maps, mut s: Settings) -> Result<()> {
    s.sync_master = settings(maps)?.sync_master;
    maps.settings.set(0, s, 0)?;
    Ok(())
}

/// Switches the fast path's sync events on or off (a master sync daemon runs or not).
pub fn set_sync_master(maps: &mut Maps, on: bool) -> Result<()> {
    let mut s = settings(maps)?;
    s.sync_master = on as u32;
    maps.settings.set(0, s, 0)?;
    Ok(())
}

/// The firewall mark of service id `sid` (0: a plain VIP:port service), None if there
/// is no such service: a master sync daemon's translation.
pub fn service_fwmark(maps: &mut Maps, sid: u32) -> Result<Option<u32>> {
    Ok(model(maps)?.info(sid).map(|i| i.fwmark))
}

/// A backup sync daemon's lookups in this director's tables: the service by its
/// frontend (what the fast path finds a client's packet by), the real by address.
pub struct SyncLookup<'a>(pub &'a mut Maps);

impl crate::sync::Lookup for SyncLookup<'_> {
    fn service(&mut self, vip: IpAddr, port: u16, proto: u8) -> Option<u32> {
        let key = ServiceKey::new(addr::from_ip(vip), port, proto);
        let sid = self.0.services.get(&key, 0).ok()?;
        let info = *model(self.0).ok()?.info(sid)?;
        (!trashed(&info)).then_some(sid)
    }

    fn real(&mut self, sid: u32, ip: IpAddr, port: u16, vport: u16) -> Option<u32> {
        model(self.0).ok()?.real_at(sid, addr::from_ip(ip), port, vport)
    }
}

/// A real server as listed: address, options, where frames go, counts and counters.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RealView {
    pub id: u32,
    pub address: IpAddr,
    /// The port frames reach it on (0 in a fwmark service: the client's).
    pub port: u16,
    pub forward: ForwardMethod,
    pub weight: u32,
    pub u_threshold: u32,
    pub l_threshold: u32,
    /// The next hop's MAC "aa:bb:cc:dd:ee:ff", or None while unresolved.
    pub mac: Option<String>,
    /// The interface towards it (0: no route).
    pub ifindex: u32,
    pub active_conns: u64,
    pub inactive_conns: u64,
    pub packets: u64,
    pub bytes: u64,
    pub conns: u64,
    /// Failed its health check (no new connections).
    #[serde(default)]
    pub health_down: bool,
    /// "up", "down", or "-" (no check), with the last reason and state changes, as the
    /// daemon's checker knows them.
    #[serde(default)]
    pub health: String,
    #[serde(default)]
    pub health_reason: String,
    #[serde(default)]
    pub health_changes: u64,
    /// NAT replies translated back to clients.
    pub out_packets: u64,
    pub out_bytes: u64,
    /// Rates over the daemon's last sampling interval (0 outside the daemon).
    #[serde(default)]
    pub cps: u64,
    #[serde(default)]
    pub in_pps: u64,
    #[serde(default)]
    pub in_bps: u64,
}

impl RealView {
    /// A real as configured (`address`, `port`, `forward`, `weight`), with no next hop,
    /// no counts and no health verdict: what a listing shows before any traffic.
    pub fn configured(address: IpAddr, port: u16, forward: ForwardMethod, weight: u32) -> Self {
        RealView {
            id: 0,
            address,
            port,
            forward,
            weight,
            u_threshold: 0,
            l_threshold: 0,
            mac: None,
            ifindex: 0,
            active_conns: 0,
            inactive_conns: 0,
            packets: 0,
            bytes: 0,
            conns: 0,
            health_down: false,
            health: String::new(),
            health_reason: String::new(),
            health_changes: 0,
            out_packets: 0,
            out_bytes: 0,
            cps: 0,
            in_pps: 0,
            in_bps: 0,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServiceView {
    pub id: ServiceId,
    /// The VIP:port entries that lead to this service.
    pub frontends: Vec<Service>,
    pub scheduler: String,
    pub sched_flags: Vec<String>,
    pub persistence: Option<Persistence>,
    pub one_packet: bool,
    pub reals: Vec<RealView>,
    #[serde(default)]
    pub sorry_server: Option<IpAddr>,
    /// New connections go to the sorry server (too few healthy reals).
    #[serde(default)]
    pub sorry_active: bool,
    /// Failed reals keep weight 0 in the tables (keepalived's inhibit_on_failure).
    #[serde(default)]
    pub inhibit_on_failure: bool,
}

impl ServiceView {
    /// The port shown for real servers (DR keeps the virtual port).
    pub fn port(&self) -> u16 {
        match self.id {
            ServiceId::Addr(s) => s.port,
            ServiceId::Fwmark(_) => 0,
        }
    }
}

/// Zeroes the traffic counters of a service's reals, or of every real (ipvsadm -Z).
pub fn zero(maps: &mut Maps, id: Option<ServiceId>) -> Result<()> {
    let only = id.map(|id| find_service(maps, id)).transpose()?.map(|i| i.id);
    for (real_id, r) in reals(maps)? {
        if only.is_none_or(|sid| sid == r.service_id) {
            maps.real_stats.set(real_id, per_cpu()?, 0)?;
        }
    }
    Ok(())
}

/// Every service with its frontends, reals, counts and counters, sorted.
pub fn snapshot(maps: &Maps) -> Result<Vec<ServiceView>> {
    let mut by_service: BTreeMap<u32, Vec<Service>> = BTreeMap::new();
    for (key, sid) in frontends(maps)? {
        if let Some(f) = Service::from_key(&key) {
            by_service.entry(sid).or_default().push(f);
        }
    }
    // Reals grouped by service once (not one scan of every real per service).
    let mut reals_by_service: BTreeMap<u32, Vec<(u32, RealEntry)>> = BTreeMap::new();
    for (id, r) in reals(maps)? {
        reals_by_service.entry(r.service_id).or_default().push((id, r));
    }
    let mut out = Vec::new();
    for info in services(maps)? {
        let all_reals = reals_by_service.get(&info.id).map_or(&[][..], Vec::as_slice);
        let mut fronts = by_service.remove(&info.id).unwrap_or_default();
        fronts.sort();
        let id = if info.fwmark != 0 {
            ServiceId::Fwmark(info.fwmark)
        } else {
            match fronts.first() {
                Some(f) => ServiceId::Addr(*f),
                None => continue, // being created or removed by another command
            }
        };
        let opts = ServiceOptions::from_info(&info);
        let mut reals = Vec::new();
        let sorry_server = all_reals
            .iter()
            .find(|(_, r)| r.service_id == info.id && r.sorry() && !r.removed())
            .map(|(_, r)| addr::to_ip(r.ip));
        for (real_id, r) in all_reals.iter().filter(|(_, r)| r.service_id == info.id && !r.removed() && !r.sorry()) {
            let mut stats = RealStats::default();
            for cpu in maps.real_stats.get(real_id, 0)?.iter() {
                stats.add(cpu);
            }
            let load = maps.real_load.get(real_id, 0)?;
            reals.push(RealView {
                id: *real_id,
                address: addr::to_ip(r.ip),
                port: u16::from_be_bytes(r.port),
                forward: ForwardMethod::from_code(r.forward),
                weight: r.weight,
                u_threshold: r.u_threshold,
                l_threshold: r.l_threshold,
                mac: r.mac_valid().then(|| format_mac(&r.mac)),
                ifindex: r.ifindex,
                active_conns: load.active,
                inactive_conns: load.inactive,
                packets: stats.packets,
                bytes: stats.bytes,
                conns: stats.conns,
                health_down: r.health_down(),
                health: if r.health_down() { "down" } else { "-" }.to_string(),
                health_reason: String::new(),
                health_changes: 0,
                out_packets: stats.out_packets,
                out_bytes: stats.out_bytes,
                cps: 0,
                in_pps: 0,
                in_bps: 0,
            });
        }
        reals.sort_by_key(|r| (r.address, r.port));
        out.push(ServiceView {
            id,
            frontends: fronts,
            scheduler: opts.scheduler.name().to_string(),
            sched_flags: sched_flag_names(opts.sched_flags).iter().map(|f| f.to_string()).collect(),
            persistence: opts.persistence,
            one_packet: opts.one_packet,
            reals,
            sorry_server,
            sorry_active: info.flags & svc_flags::SORRY_ACTIVE != 0,
            inhibit_on_failure: info.flags & svc_flags::INHIBIT_ON_FAILURE != 0,
        });
    }
    out.sort_by_key(|s| s.id);
    Ok(out)
}

/// The fast path's verdict counters, summed over CPUs, in `counter::NAMES` order.
pub fn counters(maps: &Maps) -> Result<Vec<(&'static str, u64)>> {
    (0..counter::COUNT)
        .map(|i| Ok((counter::NAMES[i as usize], maps.counters.get(&i, 0)?.iter().sum())))
        .collect()
}

pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// One entry of the connection table, as `xlb conns` lists it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConnView {
    pub proto: String,
    pub client: String,
    pub virtual_address: String,
    pub real: IpAddr,
    pub real_port: u16,
    pub forward: ForwardMethod,
    pub state: String,
    /// Seconds until the entry expires if idle.
    pub expires_in: u64,
    /// A persistence template, not a connection (IPVS lists both in its connection
    /// table: the client network with port 0, state NONE).
    #[serde(default)]
    pub template: bool,
}

/// The connection tables' clock now, nanoseconds: CLOCK_MONOTONIC (bpf_ktime_get_ns's
/// clock) + `lb_common::CLOCK_BASE_NS`, as the fast path stamps entries.
pub fn table_clock_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64 + lb_common::CLOCK_BASE_NS
}

fn idle_limit_ns(state: u8, s: &Settings) -> u64 {
    s.timeout_secs(state) as u64 * 1_000_000_000
}

pub fn connections(maps: &Maps) -> Result<Vec<ConnView>> {
    let s = settings(maps)?;
    let now = table_clock_ns();
    let mut out = Vec::new();
    // Half-open connections too (IPVS lists its SYN_RECV ones); an idle one the fast
    // path has not met again is left out.
    let half_open = maps.half_open.iter().filter_map(|e| e.ok()).filter(|(_, c)| now.saturating_sub(c.last_seen_ns) <= idle_limit_ns(c.state, &s));
    for entry in maps.conns.iter().map(|e| e.map_err(anyhow::Error::from)).chain(half_open.map(Ok)) {
        let (k, c): (FlowKey, ConnEntry) = entry?;
        if c.state == tcp::GONE {
            continue; // being removed by the fast path
        }
        let left = (c.last_seen_ns + idle_limit_ns(c.state, &s)).saturating_sub(now) / 1_000_000_000;
        out.push(ConnView {
            proto: Proto::from_number(k.proto).map_or("?", Proto::name).to_string(),
            client: SocketAddr::new(addr::to_ip(k.src), u16::from_be_bytes(k.sport)).to_string(),
            virtual_address: SocketAddr::new(addr::to_ip(k.dst), u16::from_be_bytes(k.dport)).to_string(),
            real: addr::to_ip(c.real_ip),
            real_port: u16::from_be_bytes(c.real_port),
            forward: ForwardMethod::from_code(c.forward),
            state: tcp::STATE_NAMES.get(c.state as usize).copied().unwrap_or("?").to_string(),
            expires_in: left,
            template: false,
        });
    }
    out.sort_by(|a, b| (&a.client, &a.virtual_address).cmp(&(&b.client, &b.virtual_address)));
    Ok(out)
}

/// The persistence templates, listed as IPVS lists them among its connections
/// (ip_vs_sched_persist): `<proto, client network:0, VIP:port, RIP:rport>`, and for a
/// fwmark service `<IP, client network:0, mark as an address:0, RIP:rport>`; state NONE;
/// the time left before the template expires if no connection renews it.
pub fn templates(maps: &Maps) -> Result<Vec<ConnView>> {
    let now = table_clock_ns();
    let infos: BTreeMap<u32, ServiceInfo> = services(maps)?.into_iter().map(|i| (i.id, i)).collect();
    let own: BTreeMap<u32, Service> = frontends(maps)?
        .iter()
        .filter(|(_, sid)| infos.get(sid).is_some_and(|i| i.fwmark == 0))
        .filter_map(|(k, sid)| Some((*sid, Service::from_key(k)?)))
        .collect();
    let reals: BTreeMap<u32, RealEntry> = reals(maps)?.into_iter().collect();
    let mut out = Vec::new();
    for entry in maps.persist.iter() {
        let (k, e) = entry?;
        let Some(info) = infos.get(&k.service_id) else { continue };
        let client = addr::to_ip(k.client);
        let (proto, vip) = match own.get(&k.service_id) {
            Some(svc) => (svc.proto.name(), SocketAddr::new(svc.vip, svc.port)),
            None => {
                // IPVS puts the mark in the address's first 32 bits.
                let mark = info.fwmark.to_be_bytes();
                let vaddr = if client.is_ipv4() {
                    IpAddr::V4(Ipv4Addr::from(mark))
                } else {
                    let mut b = [0u8; 16];
                    b[..4].copy_from_slice(&mark);
                    IpAddr::V6(Ipv6Addr::from(b))
                };
                ("IP", SocketAddr::new(vaddr, 0))
            }
        };
        let (real_port, forward) =
            reals.get(&e.real_id).map_or((0, ForwardMethod::Route), |r| (u16::from_be_bytes(r.port), ForwardMethod::from_code(r.forward)));
        let left = (e.last_seen_ns + info.persist_timeout as u64 * 1_000_000_000).saturating_sub(now) / 1_000_000_000;
        out.push(ConnView {
            proto: proto.to_string(),
            client: SocketAddr::new(client, 0).to_string(),
            virtual_address: vip.to_string(),
            real: addr::to_ip(e.real_ip),
            real_port,
            forward,
            state: "NONE".to_string(),
            expires_in: left,
            template: true,
        });
    }
    out.sort_by(|a, b| (&a.client, &a.virtual_address).cmp(&(&b.client, &b.virtual_address)));
    Ok(out)
}

/// What one sweep removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepReport {
    pub conns_expired: u64,
    pub templates_expired: u64,
    pub reals_freed: u64,
    /// Trashed services (removed with connections) whose last connection is gone.
    #[serde(default)]
    pub services_freed: u64,
}

/// Expires idle connections and persistence templates and frees removed reals that
/// have no connection left. `expire` removes one connection in the kernel (the
/// `xlb_expire` program) so the shared counts stay exact; it returns whether it did.
pub fn sweep(maps: &mut Maps, expire: &mut dyn FnMut(&FlowKey) -> Result<bool>) -> Result<SweepReport> {
    let s = settings(maps)?;
    let now = table_clock_ns();
    let mut report = SweepReport::default();
    let mut idle = Vec::new();
    // Templates that placed a connection still in the table: IPVS keeps a template
    // while it controls connections.
    let mut controlling = std::collections::BTreeSet::new();
    for entry in maps.conns.iter() {
        let (k, c) = entry?;
        if now.saturating_sub(c.last_seen_ns) > idle_limit_ns(c.state, &s) {
            idle.push(k);
        } else if c.template != 0 {
            controlling.insert(c.template);
        }
    }
    // Idle half-open entries go (they are in no count, so a plain delete is exact);
    // the live ones keep their templates.
    let mut idle_half_open = Vec::new();
    for entry in maps.half_open.iter() {
        let (k, c) = entry?;
        if now.saturating_sub(c.last_seen_ns) > idle_limit_ns(c.state, &s) {
            idle_half_open.push(k);
        } else if c.template != 0 {
            controlling.insert(c.template);
        }
    }
    for k in idle_half_open {
        let _ = maps.half_open.remove(&k);
    }
    for k in idle {
        if expire(&k)? {
            report.conns_expired += 1;
        }
    }
    let timeouts: BTreeMap<u32, u64> =
        all_services(maps)?.iter().map(|i| (i.id, i.persist_timeout as u64 * 1_000_000_000)).collect();
    let mut stale = Vec::new();
    for entry in maps.persist.iter() {
        let (k, e) = entry?;
        // A template of a removed service goes at once; others once idle past their
        // timeout and placing no live connection. The fast path's own count
        // (n_control) re-arms a template when its last connection goes; the table
        // decides here, so a count that went astray (the service's netmask edited
        // under its connections) cannot keep a template for ever.
        let Some(&limit) = timeouts.get(&k.service_id) else {
            stale.push(k);
            continue;
        };
        if now.saturating_sub(e.last_seen_ns) > limit && !controlling.contains(&e.tag) {
            stale.push(k);
        }
    }
    for k in stale {
        if maps.persist.remove(&k).is_ok() {
            report.templates_expired += 1;
        }
    }
    // Removed reals with no connection left are freed; a trashed service leaves with
    // its last real (its last connection). One batch.
    let idle: Vec<u32> = model(maps)?.removed_reals().into_iter().filter(|id| !has_conns(maps, *id)).collect();
    let (freed, purged) = change(maps, |m| {
        let freed = idle.iter().filter(|id| m.free_real(**id)).count() as u64;
        Ok((freed, m.purge_empty_trash()))
    })?;
    report.reals_freed += freed;
    report.services_freed += purged;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vip_port_parsing_accepts_and_rejects() {
        assert_eq!(parse_vip_port("10.0.0.1:80").unwrap(), (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 80));
        assert_eq!(parse_vip_port("[2001:db8::1]:443").unwrap(), ("2001:db8::1".parse().unwrap(), 443));
        assert!(parse_vip_port("10.0.0.1").unwrap_err().to_string().contains("not VIP:PORT"));
        assert!(parse_vip_port("2001:db8::1:80").unwrap_err().to_string().contains("takes brackets"));
        assert!(parse_vip_port("[::ffff:10.0.0.1]:80").unwrap_err().to_string().contains("write it as IPv4 (10.0.0.1)"));
        assert!(parse_vip_port("10.0.0.300:80").unwrap_err().to_string().contains("not an IP address"));
        assert!(parse_vip_port("10.0.0.1:0").unwrap_err().to_string().contains("not a port"));
        assert!(parse_vip_port("10.0.0.1:70000").unwrap_err().to_string().contains("not a port"));
    }

    #[test]
    fn service_ids_and_frontend_ranges() {
        assert_eq!(ServiceId::parse("fwm", "7").unwrap(), ServiceId::Fwmark(7));
        assert!(ServiceId::parse("fwm", "0").is_err());
        assert!(matches!(ServiceId::parse("udp", "10.0.0.1:53").unwrap(), ServiceId::Addr(Service { proto: Proto::Udp, .. })));
        let r = parse_frontends(Proto::Tcp, "10.0.0.1:8000-8002").unwrap();
        assert_eq!(r.iter().map(|s| s.port).collect::<Vec<_>>(), vec![8000, 8001, 8002]);
        let r6 = parse_frontends(Proto::Udp, "[2001:db8::1]:53-54").unwrap();
        assert_eq!(r6[1].to_string(), "UDP [2001:db8::1]:54");
        assert!(parse_frontends(Proto::Tcp, "10.0.0.1:9-8").unwrap_err().to_string().contains("empty"));
    }

    #[test]
    fn real_addresses_parse_both_families() {
        let r = |s: &str| s.parse::<RealAddr>().map(|r| r.to_string()).map_err(|e| e.to_string());
        assert_eq!(r("10.0.0.11"), Ok("10.0.0.11".into()));
        assert_eq!(r("10.0.0.11:8080"), Ok("10.0.0.11:8080".into()));
        assert_eq!(r("2001:db8::11"), Ok("2001:db8::11".into()));
        assert_eq!(r("[2001:db8::11]"), Ok("2001:db8::11".into()));
        assert_eq!(r("[2001:db8::11]:8080"), Ok("[2001:db8::11]:8080".into()));
        assert!(r("10.0.0.256").unwrap_err().contains("not an IP address"));
        assert!(r("10.0.0.11:0").unwrap_err().contains("not a port"));
    }

    #[test]
    fn netmasks_for_both_families() {
        assert_eq!(parse_netmask("255.255.255.0").unwrap(), "255.255.255.0".parse::<IpAddr>().unwrap());
        assert_eq!(parse_netmask("64").unwrap(), "ffff:ffff:ffff:ffff::".parse::<IpAddr>().unwrap());
        assert_eq!(parse_netmask("/128").unwrap(), "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse::<IpAddr>().unwrap());
        assert!(parse_netmask("129").is_err());
        let v6 = ServiceId::Addr(Service { proto: Proto::Tcp, vip: "2001:db8::1".parse().unwrap(), port: 80 });
        let with = |m: &str| ServiceOptions { persistence: Some(Persistence { timeout: 1, netmask: parse_netmask(m).unwrap() }), ..Default::default() };
        assert!(check_options(v6, &with("64")).is_ok());
        assert!(check_options(v6, &with("255.255.255.255")).is_ok(), "one client, either family");
        assert!(check_options(v6, &with("255.255.0.0")).unwrap_err().to_string().contains("other address family"));
        assert!(check_options(v6, &with("ffff::ff")).unwrap_err().to_string().contains("not a netmask"));
    }

    #[test]
    fn names_round_trip() {
        for (s, name, id) in SCHEDULERS {
            assert_eq!(name.parse::<Scheduler>().unwrap(), s);
            assert_eq!(Scheduler::from_id(id), Some(s));
        }
        assert!("fancy".parse::<Scheduler>().unwrap_err().to_string().contains("unknown scheduler"));
        assert_eq!(parse_sched_flags("sh-port,sh-fallback").unwrap(), svc_flags::SH_PORT | svc_flags::SH_FALLBACK);
        assert!(parse_sched_flags("sh-sideways").is_err());
        assert_eq!(sched_flag_names(svc_flags::MH_PORT), vec!["mh-port"]);
        assert_eq!("TCP".parse::<Proto>().unwrap(), Proto::Tcp);
        assert_eq!(format_mac(&[0xaa, 0, 1, 2, 3, 0xff]), "aa:00:01:02:03:ff");
    }

    #[test]
    fn option_checks() {
        let udp = ServiceId::Addr(Service { proto: Proto::Udp, vip: IpAddr::V4(Ipv4Addr::LOCALHOST), port: 53 });
        let tcp_svc = ServiceId::Addr(Service { proto: Proto::Tcp, vip: IpAddr::V4(Ipv4Addr::LOCALHOST), port: 80 });
        let ops = ServiceOptions { one_packet: true, ..Default::default() };
        assert!(check_options(udp, &ops).is_ok());
        assert!(check_options(tcp_svc, &ops).unwrap_err().to_string().contains("UDP"));
        let bad_mask = ServiceOptions {
            persistence: Some(Persistence { timeout: 300, netmask: IpAddr::V4(Ipv4Addr::new(255, 0, 255, 0)) }),
            ..Default::default()
        };
        assert!(check_options(tcp_svc, &bad_mask).unwrap_err().to_string().contains("not a netmask"));
        assert!(check_real_options(&RealOptions { weight: 65536, ..Default::default() }).unwrap_err().to_string().contains("out of range"));
        assert!(check_real_options(&RealOptions { weight: 1, u_threshold: 5, l_threshold: 9, ..Default::default() }).is_err());
    }
}
