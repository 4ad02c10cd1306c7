//! Control operations on the fast path's maps: the only code that writes services and
//! real servers, used by the CLI, the config loader and the tests alike.
//!
//! Update order keeps the fast path consistent at every step: a real's entry is written
//! before its slot becomes visible (count incremented), and a removed real leaves the
//! slot table before its entry is cleared.
use std::net::Ipv4Addr;

use anyhow::{Result, bail};
use aya::maps::PerCpuValues;
use lb_common::{
    MAX_REALS, MAX_REALS_PER_SERVICE, MAX_SERVICES, PROTO_TCP, PROTO_UDP, REAL_IN_USE,
    REAL_MAC_VALID, RealEntry, RealStats, SCHED_RR, ServiceInfo, ServiceKey, counter, slot_index,
};
use serde::Serialize;

use crate::maps::Maps;

/// A virtual service as the user names it: protocol, VIP and port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Service {
    pub proto: Proto,
    pub vip: Ipv4Addr,
    pub port: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
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

impl Service {
    pub fn key(&self) -> ServiceKey {
        ServiceKey::new(self.vip.octets(), self.port, self.proto.number())
    }
    fn from_key(key: &ServiceKey) -> Option<Self> {
        Some(Self { proto: Proto::from_number(key.proto)?, vip: Ipv4Addr::from(key.vip), port: key.port() })
    }
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}:{}", self.proto.name(), self.vip, self.port)
    }
}

/// Parses "VIP:PORT".
pub fn parse_vip_port(s: &str) -> Result<(Ipv4Addr, u16)> {
    let Some((ip, port)) = s.rsplit_once(':') else { bail!("`{s}` is not VIP:PORT (for example 10.0.0.100:80)") };
    let Ok(ip) = ip.parse::<Ipv4Addr>() else { bail!("`{ip}` is not an IPv4 address") };
    let port = match port.parse::<u16>() {
        Ok(p) if p != 0 => p,
        _ => bail!("`{port}` is not a port (1-65535)"),
    };
    Ok((ip, port))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheduler {
    Rr,
}

impl std::str::FromStr for Scheduler {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "rr" => Ok(Scheduler::Rr),
            _ => bail!("unknown scheduler `{s}` (supported: rr)"),
        }
    }
}

impl Scheduler {
    const fn id(self) -> u32 {
        match self {
            Scheduler::Rr => SCHED_RR,
        }
    }
    fn from_id(id: u32) -> Option<Self> {
        (id == SCHED_RR).then_some(Scheduler::Rr)
    }
    pub const fn name(self) -> &'static str {
        match self {
            Scheduler::Rr => "rr",
        }
    }
}

/// Where frames for a real server go: its MAC (None while unresolved) and interface.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct L2Target {
    pub mac: Option<[u8; 6]>,
    pub ifindex: u32,
}

pub fn add_service(maps: &mut Maps, svc: Service, sched: Scheduler) -> Result<()> {
    let key = svc.key();
    if maps.services.get(&key, 0).is_ok() {
        bail!("Service already exists: {svc}");
    }
    let mut used = vec![false; MAX_SERVICES as usize];
    for entry in maps.services.iter() {
        let (_, info) = entry?;
        used[info.id as usize] = true;
    }
    let Some(id) = used.iter().position(|u| !u) else {
        bail!("too many services (at most {MAX_SERVICES})");
    };
    let id = id as u32;
    maps.rr_cursors.set(id, zeroed_per_cpu()?, 0)?;
    let info = ServiceInfo { id, real_count: 0, scheduler: sched.id(), flags: 0 };
    maps.services.insert(key, info, 0)?;
    Ok(())
}

pub fn remove_service(maps: &mut Maps, svc: Service) -> Result<()> {
    let key = svc.key();
    let info = service_info(maps, svc)?;
    maps.services.remove(&key)?;
    // The service is gone from the fast path; now free its reals.
    for real_id in real_ids(maps, &info)? {
        maps.reals.set(real_id, RealEntry::default(), 0)?;
    }
    Ok(())
}

pub fn add_real(maps: &mut Maps, svc: Service, rip: Ipv4Addr, target: L2Target) -> Result<u32> {
    let mut info = service_info(maps, svc)?;
    for real_id in real_ids(maps, &info)? {
        if maps.reals.get(&real_id, 0)?.ip == rip.octets() {
            bail!("Destination already exists: {rip} in {svc}");
        }
    }
    if info.real_count >= MAX_REALS_PER_SERVICE {
        bail!("too many real servers in {svc} (at most {MAX_REALS_PER_SERVICE})");
    }
    let real_id = free_real_id(maps)?;
    maps.real_stats.set(real_id, zeroed_per_cpu()?, 0)?;
    maps.reals.set(real_id, real_entry(info.id, rip, target), 0)?;
    maps.real_slots.set(slot_index(info.id, info.real_count), real_id, 0)?;
    info.real_count += 1;
    maps.services.insert(svc.key(), info, 0)?;
    Ok(real_id)
}

pub fn remove_real(maps: &mut Maps, svc: Service, rip: Ipv4Addr) -> Result<()> {
    let mut info = service_info(maps, svc)?;
    let ids = real_ids(maps, &info)?;
    let mut found = None;
    for (slot, &real_id) in ids.iter().enumerate() {
        if maps.reals.get(&real_id, 0)?.ip == rip.octets() {
            found = Some((slot as u32, real_id));
        }
    }
    let Some((slot, real_id)) = found else { bail!("No such destination: {rip} in {svc}") };
    let last = info.real_count - 1;
    if slot != last {
        maps.real_slots.set(slot_index(info.id, slot), ids[last as usize], 0)?;
    }
    info.real_count = last;
    maps.services.insert(svc.key(), info, 0)?;
    // Flows pinned to this real see it gone and are scheduled afresh.
    maps.reals.set(real_id, RealEntry::default(), 0)?;
    Ok(())
}

/// Updates a real's MAC and interface (after the neighbour entry changed).
pub fn set_real_target(maps: &mut Maps, real_id: u32, target: L2Target) -> Result<()> {
    let entry = maps.reals.get(&real_id, 0)?;
    if !entry.in_use() {
        bail!("real id {real_id} is not in use");
    }
    maps.reals.set(real_id, real_entry(entry.service_id, Ipv4Addr::from(entry.ip), target), 0)?;
    Ok(())
}

fn real_entry(service_id: u32, rip: Ipv4Addr, target: L2Target) -> RealEntry {
    RealEntry {
        ip: rip.octets(),
        service_id,
        mac: target.mac.unwrap_or_default(),
        flags: REAL_IN_USE | if target.mac.is_some() { REAL_MAC_VALID } else { 0 },
        ifindex: target.ifindex,
    }
}

fn service_info(maps: &Maps, svc: Service) -> Result<ServiceInfo> {
    match maps.services.get(&svc.key(), 0) {
        Ok(info) => Ok(info),
        Err(_) => bail!("No such service: {svc}"),
    }
}

fn real_ids(maps: &Maps, info: &ServiceInfo) -> Result<Vec<u32>> {
    (0..info.real_count.min(MAX_REALS_PER_SERVICE))
        .map(|slot| Ok(maps.real_slots.get(&slot_index(info.id, slot), 0)?))
        .collect()
}

fn free_real_id(maps: &Maps) -> Result<u32> {
    for id in 0..MAX_REALS {
        if !maps.reals.get(&id, 0)?.in_use() {
            return Ok(id);
        }
    }
    bail!("too many real servers (at most {MAX_REALS})")
}

fn zeroed_per_cpu<T: aya::Pod + Default>() -> Result<PerCpuValues<T>> {
    let cpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))?;
    Ok(PerCpuValues::try_from(vec![T::default(); cpus])?)
}

/// A real server as listed: address, where frames go, and counters summed over CPUs.
#[derive(Clone, Debug, Serialize)]
pub struct RealView {
    pub id: u32,
    pub address: Ipv4Addr,
    /// "aa:bb:cc:dd:ee:ff", or None while the neighbour is unresolved.
    pub mac: Option<String>,
    pub ifindex: u32,
    pub packets: u64,
    pub bytes: u64,
    pub conns: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ServiceView {
    #[serde(flatten)]
    pub service: Service,
    pub scheduler: &'static str,
    pub reals: Vec<RealView>,
}

/// Every service with its reals and counters, sorted for stable output.
pub fn snapshot(maps: &Maps) -> Result<Vec<ServiceView>> {
    let mut services = Vec::new();
    for entry in maps.services.iter() {
        let (key, info) = entry?;
        let Some(service) = Service::from_key(&key) else { continue };
        let mut reals = Vec::new();
        for real_id in real_ids(maps, &info)? {
            let e = maps.reals.get(&real_id, 0)?;
            let mut stats = RealStats::default();
            for cpu in maps.real_stats.get(&real_id, 0)?.iter() {
                stats.add(cpu);
            }
            reals.push(RealView {
                id: real_id,
                address: Ipv4Addr::from(e.ip),
                mac: e.mac_valid().then(|| format_mac(&e.mac)),
                ifindex: e.ifindex,
                packets: stats.packets,
                bytes: stats.bytes,
                conns: stats.conns,
            });
        }
        reals.sort_by_key(|r| r.address);
        let scheduler = Scheduler::from_id(info.scheduler).map_or("?", Scheduler::name);
        services.push(ServiceView { service, scheduler, reals });
    }
    services.sort_by_key(|s| s.service);
    Ok(services)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vip_port_parsing_accepts_and_rejects() {
        assert_eq!(parse_vip_port("10.0.0.1:80").unwrap(), (Ipv4Addr::new(10, 0, 0, 1), 80));
        assert!(parse_vip_port("10.0.0.1").unwrap_err().to_string().contains("not VIP:PORT"));
        assert!(parse_vip_port("10.0.0.300:80").unwrap_err().to_string().contains("not an IPv4"));
        assert!(parse_vip_port("10.0.0.1:0").unwrap_err().to_string().contains("not a port"));
        assert!(parse_vip_port("10.0.0.1:70000").unwrap_err().to_string().contains("not a port"));
    }

    #[test]
    fn proto_and_scheduler_names() {
        assert_eq!("TCP".parse::<Proto>().unwrap(), Proto::Tcp);
        assert!("sctp".parse::<Proto>().is_err());
        assert!("wrr".parse::<Scheduler>().unwrap_err().to_string().contains("unknown scheduler"));
        assert_eq!(format_mac(&[0xaa, 0, 1, 2, 3, 0xff]), "aa:00:01:02:03:ff");
    }
}
