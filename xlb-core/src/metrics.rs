//! The Prometheus endpoint's content: a [`Snapshot`] in the OpenMetrics text format
//! (which Prometheus scrapes natively), encoded by the `prometheus-client` crate.
//!
//! The fast path's counters live in BPF maps, so every scrape builds a fresh registry
//! from one snapshot instead of keeping metric objects in step with the maps.
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge, info::Info},
    registry::Registry,
};

use crate::observe::{Health, Snapshot, real_health, service_label};

/// The Content-Type of [`exposition`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(&'static str, String)>;

/// `xlb_build_info`'s labels: `version` (the crate's), `revision` (the git commit built,
/// "unknown" outside a git checkout; Prometheus's own build_info names it so) and
/// `aya_version` (the aya crate that loads the fast path, from Cargo.lock).
pub fn build_info() -> [(&'static str, &'static str); 3] {
    let revision = match env!("XLB_GIT_COMMIT") {
        "" => "unknown",
        commit => commit,
    };
    [("version", env!("CARGO_PKG_VERSION")), ("revision", revision), ("aya_version", env!("XLB_AYA_VERSION"))]
}

/// Counters and gauges registered under one name (counters get `_total` appended).
struct Families<'r> {
    registry: &'r mut Registry,
}

impl Families<'_> {
    fn counter(&mut self, name: &str, help: &str) -> Family<Labels, Counter> {
        let family = Family::default();
        self.registry.register(name, help, family.clone());
        family
    }

    fn gauge(&mut self, name: &str, help: &str) -> Family<Labels, Gauge> {
        let family = Family::default();
        self.registry.register(name, help, family.clone());
        family
    }

    /// A gauge without labels.
    fn single_gauge(&mut self, name: &str, help: &str, value: u64) {
        let gauge = Gauge::<i64>::default();
        gauge.set(gauge_value(value));
        self.registry.register(name, help, gauge);
    }
}

fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// (direction, packets, bytes) from the inbound counts. Under direct routing the
/// replies go from the real server straight to the client, so, as IPVS does for DR,
/// the director counts nothing outbound.
fn by_direction(packets: u64, bytes: u64, out_packets: u64, out_bytes: u64) -> [(&'static str, u64, u64); 2] {
    [("in", packets, bytes), ("out", out_packets, out_bytes)]
}

/// The whole exposition of `snapshot`, ending with `# EOF`.
pub fn exposition(snapshot: &Snapshot) -> String {
    let mut registry = Registry::default();
    let mut f = Families { registry: &mut registry };
    let real_conns = f.counter("xlb_real_connections", "Connections scheduled to the real server");
    let real_active = f.gauge("xlb_real_active_connections", "The real server's established connections (ipvsadm ActiveConn)");
    let real_inactive = f.gauge("xlb_real_inactive_connections", "The real server's other tracked connections (ipvsadm InActConn)");
    let real_packets = f.counter("xlb_real_packets", "Packets forwarded to (in) or from (out) the real server");
    let real_bytes = f.counter("xlb_real_bytes", "Bytes forwarded to (in) or from (out) the real server");
    let real_weight = f.gauge("xlb_real_weight", "The real server's weight (0: quiesced)");
    let real_health_state = f.gauge("xlb_real_health", "1 for the real server's current health state (up, down, unknown), 0 for the others");
    let svc_conns = f.counter("xlb_service_connections", "Connections scheduled by the service");
    let svc_active = f.gauge("xlb_service_active_connections", "The service's established connections");
    let svc_inactive = f.gauge("xlb_service_inactive_connections", "The service's other tracked connections");
    let svc_packets = f.counter("xlb_service_packets", "Packets forwarded by the service, by direction");
    let svc_bytes = f.counter("xlb_service_bytes", "Bytes forwarded by the service, by direction");
    let svc_reals = f.gauge("xlb_service_reals", "The service's real servers by health state");
    let verdicts = f.counter("xlb_verdicts", "Frames passed, dropped or sent by the fast path, by reason (as `xlb counters`)");
    f.single_gauge("xlb_conntrack_entries", "Entries in the connection table", snapshot.conntrack_entries);
    f.single_gauge(
        "xlb_conntrack_capacity",
        "Size of the connection table (new connections are dropped when full)",
        snapshot.conntrack_capacity,
    );
    // An OpenMetrics info family: `# TYPE xlb_build info`, sample `xlb_build_info{…} 1`
    // (Prometheus stores it as a gauge of 1, as its own *_build_info).
    let build: Vec<(&str, String)> = build_info().iter().map(|&(k, v)| (k, v.to_string())).collect();
    f.registry.register("xlb_build", "The running xlb's version, git revision and aya version", Info::new(build));
    let attach = f.gauge("xlb_attach_mode", "1 per interface the fast path is attached to, labelled with the XDP mode (native, skb)");

    for service in &snapshot.services {
        let name = service_label(&service.id);
        let svc = |extra: &[(&'static str, &str)]| -> Labels {
            let mut l = vec![("service", name.clone())];
            l.extend(extra.iter().map(|&(k, v)| (k, v.to_string())));
            l
        };
        let mut by_health = [0i64; Health::ALL.len()];
        for real in &service.reals {
            // As configs name reals: the port only where NAT maps it, so two NAT reals on
            // one address are two series.
            let address = crate::ops::RealAddr { ip: real.address, port: Some(real.port) }.canonical(service.id).to_string();
            let labels = svc(&[("real", &address)]);
            real_conns.get_or_create(&labels).inc_by(real.conns);
            real_active.get_or_create(&labels).set(gauge_value(real.active_conns));
            real_inactive.get_or_create(&labels).set(gauge_value(real.inactive_conns));
            real_weight.get_or_create(&labels).set(real.weight.into());
            for (direction, packets, bytes) in by_direction(real.packets, real.bytes, real.out_packets, real.out_bytes) {
                let labels = svc(&[("real", &address), ("direction", direction)]);
                real_packets.get_or_create(&labels).inc_by(packets);
                real_bytes.get_or_create(&labels).inc_by(bytes);
            }
            let health = real_health(real);
            for (i, state) in Health::ALL.into_iter().enumerate() {
                real_health_state.get_or_create(&svc(&[("real", &address), ("state", state.name())])).set((state == health).into());
                by_health[i] += i64::from(state == health);
            }
        }
        let sum = |field: fn(&crate::ops::RealView) -> u64| service.reals.iter().map(field).sum::<u64>();
        svc_conns.get_or_create(&svc(&[])).inc_by(sum(|r| r.conns));
        svc_active.get_or_create(&svc(&[])).set(gauge_value(sum(|r| r.active_conns)));
        svc_inactive.get_or_create(&svc(&[])).set(gauge_value(sum(|r| r.inactive_conns)));
        for (direction, packets, bytes) in by_direction(sum(|r| r.packets), sum(|r| r.bytes), sum(|r| r.out_packets), sum(|r| r.out_bytes)) {
            svc_packets.get_or_create(&svc(&[("direction", direction)])).inc_by(packets);
            svc_bytes.get_or_create(&svc(&[("direction", direction)])).inc_by(bytes);
        }
        for (state, count) in Health::ALL.into_iter().zip(by_health) {
            svc_reals.get_or_create(&svc(&[("state", state.name())])).set(count);
        }
    }
    for &(reason, count) in &snapshot.counters {
        verdicts.get_or_create(&vec![("reason", reason.to_string())]).inc_by(count);
    }
    for iface in &snapshot.interfaces {
        attach.get_or_create(&vec![("interface", iface.name.clone()), ("mode", iface.mode_name().to_string())]).set(1);
    }
    if let Some(bgp) = &snapshot.bgp {
        // Every VIP of a service, and any still announced: 1 while BIRD holds its route.
        let announced: std::collections::BTreeSet<std::net::IpAddr> = bgp.announced.iter().flatten().copied().collect();
        let vips: std::collections::BTreeSet<std::net::IpAddr> =
            snapshot.services.iter().flat_map(|s| s.frontends.iter().map(|f| f.vip)).chain(announced.iter().copied()).collect();
        let vip_announced = f.gauge("xlb_bgp_vip_announced", "1 while the VIP's route is in BIRD's include file and BIRD took it, else 0");
        for vip in vips {
            vip_announced.get_or_create(&vec![("vip", vip.to_string())]).set(announced.contains(&vip).into());
        }
        f.single_gauge("xlb_bgp_in_sync", "1 when BIRD holds exactly the VIPs that have quorum", bgp.in_sync.into());
        let failures = Counter::<u64>::default();
        failures.inc_by(bgp.failures);
        f.registry.register("xlb_bgp_bird_failures", "Failed writes of BIRD's include file or reconfigurations of BIRD", failures);
    }

    let mut text = String::new();
    encode(&mut text, &registry).expect("encoding into a String cannot fail");
    text
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{
        loader::AttachMode,
        observe::{
            Interface,
            tests::{real, web_service},
        },
    };

    fn snapshot() -> Snapshot {
        let mut unresolved = real(12, 3, 30, 3000);
        unresolved.mac = None;
        Snapshot {
            interfaces: vec![Interface { name: "eth0".into(), mode: Some(AttachMode::Skb) }],
            services: vec![web_service(vec![real(11, 5, 50, 5000), unresolved])],
            counters: vec![("tx_dr", 80), ("drop_no_real", 2)],
            conntrack_entries: 8,
            conntrack_capacity: 262_144,
            bgp: Some(crate::bgp::BgpStatus {
                announced: Some(vec!["10.99.0.100".parse().unwrap()]),
                in_sync: true,
                failures: 2,
                ..Default::default()
            }),
        }
    }

    /// Sample lines as a map from `name{labels}` to value.
    fn samples(text: &str) -> BTreeMap<String, String> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let (name, value) = l.rsplit_once(' ').expect("sample line");
                (name.to_string(), value.to_string())
            })
            .collect()
    }

    #[test]
    fn exposition_has_every_family_with_its_type_and_values() {
        let text = exposition(&snapshot());
        assert!(text.ends_with("# EOF\n"), "{text}");
        for (family, kind) in [
            ("xlb_real_connections", "counter"),
            ("xlb_real_active_connections", "gauge"),
            ("xlb_real_packets", "counter"),
            ("xlb_real_health", "gauge"),
            ("xlb_service_reals", "gauge"),
            ("xlb_verdicts", "counter"),
            ("xlb_conntrack_capacity", "gauge"),
            ("xlb_attach_mode", "gauge"),
            ("xlb_build", "info"),
        ] {
            assert!(text.contains(&format!("# TYPE {family} {kind}\n")), "{family} {kind}:\n{text}");
        }
        let s = samples(&text);
        let rs1 = r#"service="tcp:10.99.0.100:80",real="10.99.0.11""#;
        let rs2 = r#"service="tcp:10.99.0.100:80",real="10.99.0.12""#;
        for (sample, value) in [
            (format!("xlb_real_connections_total{{{rs1}}}"), "5"),
            (format!("xlb_real_connections_total{{{rs2}}}"), "3"),
            (format!("xlb_real_active_connections{{{rs1}}}"), "1"),
            (format!("xlb_real_inactive_connections{{{rs1}}}"), "2"),
            (format!("xlb_real_packets_total{{{rs1},direction=\"in\"}}"), "50"),
            (format!("xlb_real_packets_total{{{rs1},direction=\"out\"}}"), "0"),
            (format!("xlb_real_bytes_total{{{rs2},direction=\"in\"}}"), "3000"),
            (format!("xlb_real_weight{{{rs1}}}"), "1"),
            (format!("xlb_real_health{{{rs1},state=\"up\"}}"), "1"),
            (format!("xlb_real_health{{{rs2},state=\"up\"}}"), "0"),
            (format!("xlb_real_health{{{rs2},state=\"unknown\"}}"), "1"),
            (r#"xlb_service_connections_total{service="tcp:10.99.0.100:80"}"#.into(), "8"),
            (r#"xlb_service_packets_total{service="tcp:10.99.0.100:80",direction="in"}"#.into(), "80"),
            (r#"xlb_service_active_connections{service="tcp:10.99.0.100:80"}"#.into(), "2"),
            (r#"xlb_service_reals{service="tcp:10.99.0.100:80",state="up"}"#.into(), "1"),
            (r#"xlb_service_reals{service="tcp:10.99.0.100:80",state="down"}"#.into(), "0"),
            (r#"xlb_verdicts_total{reason="tx_dr"}"#.into(), "80"),
            (r#"xlb_verdicts_total{reason="drop_no_real"}"#.into(), "2"),
            ("xlb_conntrack_entries".into(), "8"),
            ("xlb_conntrack_capacity".into(), "262144"),
            (r#"xlb_attach_mode{interface="eth0",mode="skb"}"#.into(), "1"),
            (r#"xlb_bgp_vip_announced{vip="10.99.0.100"}"#.into(), "1"),
            ("xlb_bgp_in_sync".into(), "1"),
            ("xlb_bgp_bird_failures_total".into(), "2"),
            (
                format!(
                    r#"xlb_build_info{{version="{}",revision="{}",aya_version="0.14.0"}}"#,
                    env!("CARGO_PKG_VERSION"),
                    build_info()[1].1
                ),
                "1",
            ),
        ] {
            assert_eq!(s.get(&sample).map(String::as_str), Some(value), "{sample}:\n{text}");
        }
    }
}

#[cfg(test)]
mod nat_port_tests {
    use super::*;
    use crate::observe::tests::{real, web_service};

    #[test]
    fn two_nat_reals_on_one_address_are_two_series() {
        let (mut a, mut b) = (real(11, 1, 10, 100), real(11, 2, 20, 200));
        (a.port, b.port) = (8080, 8081);
        b.health_down = true;
        b.health = "down".into();
        let snap = Snapshot {
            interfaces: Vec::new(),
            services: vec![web_service(vec![a, b])],
            counters: Vec::new(),
            conntrack_entries: 0,
            conntrack_capacity: 1,
            bgp: None,
        };
        let text = exposition(&snap);
        for line in [
            r#"xlb_real_connections_total{service="tcp:10.99.0.100:80",real="10.99.0.11:8080"} 1"#,
            r#"xlb_real_connections_total{service="tcp:10.99.0.100:80",real="10.99.0.11:8081"} 2"#,
            r#"xlb_real_health{service="tcp:10.99.0.100:80",real="10.99.0.11:8081",state="down"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line}:\n{text}");
        }
    }
}
