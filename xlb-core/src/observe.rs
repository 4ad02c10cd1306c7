//! What the operator's views share — the metrics endpoint, the status page and
//! `xlb top`: a real's health, how services are named, and per-real traffic rates
//! measured between successive snapshots.
use std::{
    collections::{HashMap, VecDeque},
    time::Instant,
};

use serde::Serialize;

use crate::{
    loader::{self, AttachMode},
    ops::{RealView, ServiceId, ServiceView},
};

/// A real server's health, as the views show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Up,
    /// Reported by health checks; nothing derives it from the fast path's maps.
    Down,
    Unknown,
}

impl Health {
    pub const ALL: [Health; 3] = [Health::Up, Health::Down, Health::Unknown];

    pub const fn name(self) -> &'static str {
        match self {
            Health::Up => "up",
            Health::Down => "down",
            Health::Unknown => "unknown",
        }
    }
}

/// The health of `real`: its check's verdict; without a check, the neighbour table's
/// (a real whose MAC is resolved receives frames).
pub fn real_health(real: &RealView) -> Health {
    match real.health.as_str() {
        "up" => Health::Up,
        "down" => Health::Down,
        _ if real.health_down => Health::Down,
        _ if real.mac.is_some() => Health::Up,
        _ => Health::Unknown,
    }
}

/// A service's name in metric labels and on the pages: `tcp:VIP:PORT` or `fwm:MARK`,
/// as frontends are written in the config file.
pub fn service_label(id: &ServiceId) -> String {
    match id {
        ServiceId::Addr(s) => format!("{}:{}:{}", s.proto.name().to_ascii_lowercase(), s.vip, s.port),
        ServiceId::Fwmark(mark) => format!("fwm:{mark}"),
    }
}

/// An interface the fast path is attached to, and how (native or SKB; None if the
/// kernel could not be asked).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Interface {
    pub name: String,
    pub mode: Option<AttachMode>,
}

impl Interface {
    /// `name` with the mode the kernel reports for the balancer on it, which a daemon
    /// that took over a pinned link did not choose itself.
    pub fn attached(name: &str) -> Self {
        let mode = loader::attached_mode(name)
            .inspect_err(|e| tracing::warn!("finding the XDP mode of {name}: {e:#}"))
            .ok()
            .flatten();
        Self { name: name.to_string(), mode }
    }

    /// The mode's name, or "unknown".
    pub fn mode_name(&self) -> &'static str {
        self.mode.map_or("unknown", AttachMode::name)
    }
}

/// Everything the metrics and the status page show, read at one moment.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub interfaces: Vec<Interface>,
    pub services: Vec<ServiceView>,
    /// The fast path's verdict counters, named as `xlb counters` names them.
    pub counters: Vec<(&'static str, u64)>,
    pub conntrack_entries: u64,
    pub conntrack_capacity: u64,
    /// The VIP announcement through BIRD (None: not configured).
    pub bgp: Option<crate::bgp::BgpStatus>,
}

/// A real server's traffic over one interval between two snapshots, per second.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Rate {
    /// New connections.
    pub cps: f64,
    /// Packets from clients.
    pub pps: f64,
    /// Bytes from clients.
    pub bps: f64,
}

type RealKey = (ServiceId, std::net::IpAddr);

/// Per-real rates over the last `capacity` intervals, newest last. A real gets its
/// first rate at the second snapshot that lists it; counters that went down (zeroed)
/// count as no traffic.
pub struct TrafficHistory {
    capacity: usize,
    last_at: Option<Instant>,
    /// (conns, packets, bytes) at the last snapshot.
    totals: HashMap<RealKey, (u64, u64, u64)>,
    series: HashMap<RealKey, VecDeque<Rate>>,
}

impl TrafficHistory {
    pub fn new(capacity: usize) -> Self {
        Self { capacity, last_at: None, totals: HashMap::new(), series: HashMap::new() }
    }

    /// Adds one interval ending at `now`, with `services` as the fast path counted them.
    pub fn record(&mut self, services: &[ServiceView], now: Instant) {
        let secs = self.last_at.map(|t| now.duration_since(t).as_secs_f64()).filter(|&s| s > 0.0);
        let mut totals = HashMap::new();
        for service in services {
            for real in &service.reals {
                let key = (service.id, real.address);
                let now_totals = (real.conns, real.packets, real.bytes);
                if let (Some(secs), Some(before)) = (secs, self.totals.get(&key)) {
                    let per_sec = |now: u64, before: u64| now.saturating_sub(before) as f64 / secs;
                    let rate = Rate {
                        cps: per_sec(now_totals.0, before.0),
                        pps: per_sec(now_totals.1, before.1),
                        bps: per_sec(now_totals.2, before.2),
                    };
                    let series = self.series.entry(key).or_default();
                    if series.len() == self.capacity {
                        series.pop_front();
                    }
                    series.push_back(rate);
                }
                totals.insert(key, now_totals);
            }
        }
        // Reals no longer listed are forgotten.
        self.series.retain(|key, _| totals.contains_key(key));
        self.totals = totals;
        self.last_at = Some(now);
    }

    /// The rates of `address` in `service`, oldest first (empty until its second snapshot).
    pub fn series(&self, service: ServiceId, address: std::net::IpAddr) -> Vec<Rate> {
        self.series.get(&(service, address)).map_or_else(Vec::new, |s| s.iter().copied().collect())
    }

    /// The latest rates of `address` in `service` (zero until its second snapshot).
    pub fn latest(&self, service: ServiceId, address: std::net::IpAddr) -> Rate {
        self.series.get(&(service, address)).and_then(|s| s.back()).copied().unwrap_or_default()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Duration;

    use super::*;
    use crate::ops::{Proto, Service};

    pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 100);

    pub fn real(last_octet: u8, conns: u64, packets: u64, bytes: u64) -> RealView {
        let address = Ipv4Addr::new(10, 99, 0, last_octet).into();
        RealView {
            id: last_octet as u32,
            mac: Some("02:00:00:00:00:01".into()),
            ifindex: 2,
            health: "-".into(),
            active_conns: 1,
            inactive_conns: 2,
            packets,
            bytes,
            conns,
            ..RealView::configured(address, 80, crate::ops::ForwardMethod::Route, 1)
        }
    }

    pub fn web_service(reals: Vec<RealView>) -> ServiceView {
        ServiceView {
            id: ServiceId::Addr(Service { proto: Proto::Tcp, vip: IpAddr::V4(VIP), port: 80 }),
            frontends: vec![Service { proto: Proto::Tcp, vip: IpAddr::V4(VIP), port: 80 }],
            scheduler: "rr".into(),
            sched_flags: Vec::new(),
            persistence: None,
            one_packet: false,
            reals,
            sorry_server: None,
            sorry_active: false,
            inhibit_on_failure: false,
        }
    }

    #[test]
    fn service_labels_are_config_file_frontends() {
        assert_eq!(service_label(&web_service(Vec::new()).id), "tcp:10.99.0.100:80");
        assert_eq!(service_label(&ServiceId::Fwmark(7)), "fwm:7");
    }

    #[test]
    fn health_is_the_checks_verdict_else_the_neighbour_tables() {
        let mut r = real(11, 0, 0, 0);
        assert_eq!(real_health(&r), Health::Up);
        r.mac = None;
        assert_eq!(real_health(&r), Health::Unknown);
        r.health = "down".into();
        assert_eq!(real_health(&r), Health::Down);
        r.health = "up".into();
        assert_eq!(real_health(&r), Health::Up);
    }

    #[test]
    fn rates_are_deltas_per_second_and_keep_the_last_capacity_intervals() {
        let t0 = Instant::now();
        let id = web_service(Vec::new()).id;
        let rs1: std::net::IpAddr = Ipv4Addr::new(10, 99, 0, 11).into();
        let mut h = TrafficHistory::new(2);
        h.record(&[web_service(vec![real(11, 0, 0, 0)])], t0);
        assert_eq!(h.series(id, rs1).len(), 0, "one snapshot is no interval");
        h.record(&[web_service(vec![real(11, 4, 20, 2000)])], t0 + Duration::from_secs(2));
        assert_eq!(h.latest(id, rs1), Rate { cps: 2.0, pps: 10.0, bps: 1000.0 });
        h.record(&[web_service(vec![real(11, 4, 20, 2000)])], t0 + Duration::from_secs(3));
        // Zeroed counters (xlb zero) are no traffic, not a negative rate.
        h.record(&[web_service(vec![real(11, 0, 0, 0)])], t0 + Duration::from_secs(4));
        let pps: Vec<f64> = h.series(id, rs1).iter().map(|r| r.pps).collect();
        assert_eq!(pps, [0.0, 0.0], "capacity 2 keeps the two newest intervals");
        h.record(&[web_service(Vec::new())], t0 + Duration::from_secs(5));
        assert_eq!(h.series(id, rs1).len(), 0, "a removed real is forgotten");
    }
}
