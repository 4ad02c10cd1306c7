//! Human listings in ipvsadm's exact layouts (ipvsadm.c's print_title and
//! print_service_entry), shared by `xlb list` and `xlb ipvsadm -L`.
use std::fmt::Write;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::ops::{ConnView, ForwardMethod, RealView, Service, ServiceId, ServiceView};

/// How commands print: human tables or JSON (`--output`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    #[default]
    Text,
    Json,
}

/// Which columns a listing shows (ipvsadm's FMT_* formats).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Plain,
    Stats,
    Rate,
    Thresholds,
    /// `--persistent-conn`: each real's weight and persistence templates.
    PersistentConn,
    /// `--tun-info`: each real's tunnel type.
    TunInfo,
}

/// Whether a service is IPv6 (ipvsadm's `af`): its VIP's family; for a fwmark group
/// (`-f MARK -6` in ipvsadm) the family of its reals and frontends, else of its
/// persistence netmask. xlb keeps a group's family in its members.
pub fn is_ipv6(s: &ServiceView) -> bool {
    match s.id {
        ServiceId::Addr(a) => a.vip.is_ipv6(),
        ServiceId::Fwmark(_) => s
            .reals
            .iter()
            .map(|r| r.address)
            .chain(s.frontends.iter().map(|f| f.vip))
            .next()
            .map_or(s.persistence.is_some_and(|p| p.netmask.is_ipv6()), |ip| ip.is_ipv6()),
    }
}

/// The persistence granularity as ipvsadm prints it after `mask` / `-M`: an IPv4
/// netmask in dotted form, an IPv6 one as a prefix length; None for one client per
/// template (255.255.255.255, /128: ipvsadm prints nothing then).
pub fn netmask_text(s: &ServiceView) -> Option<String> {
    let p = s.persistence?;
    match p.netmask {
        IpAddr::V4(m) if m == Ipv4Addr::BROADCAST => None,
        // The maps keep masks IPv4-mapped, so an IPv6 one of /96 or longer reads back
        // as IPv4 (ServiceOptions::from_info): an IPv6 service's is still a prefix
        // length, the only form ipvsadm -M takes for IPv6.
        IpAddr::V4(m) if is_ipv6(s) => Some((96 + u32::from(m).leading_ones()).to_string()),
        IpAddr::V4(m) => Some(m.to_string()),
        IpAddr::V6(m) => match u128::from(m).leading_ones() {
            128 => None,
            len => Some(len.to_string()),
        },
    }
}

/// The virtual address a service's persistence templates carry (ip_vs_sched_persist):
/// VIP:port, or for a fwmark service the mark in the address's first 32 bits, port 0.
fn template_vaddr(s: &ServiceView) -> String {
    match s.id {
        ServiceId::Addr(a) => a.endpoint(),
        ServiceId::Fwmark(m) => {
            let vaddr = if is_ipv6(s) {
                let mut b = [0u8; 16];
                b[..4].copy_from_slice(&m.to_be_bytes());
                IpAddr::V6(Ipv6Addr::from(b))
            } else {
                IpAddr::V4(Ipv4Addr::from(m))
            };
            SocketAddr::new(vaddr, 0).to_string()
        }
    }
}

/// ipvsadm's print_largenum: 9 columns, abbreviated with K/M/G/T unless exact.
pub fn largenum(i: u64, exact: bool) -> String {
    if exact {
        let s = i.to_string();
        let width = if s.len() <= 8 { 9 } else { s.len() + 1 };
        return format!("{s:>width$}");
    }
    match i {
        _ if i < 100_000_000 => format!("{i:>9}"),
        _ if i < 1_000_000_000 => format!("{:>8}K", i / 1000),
        _ if i < 100_000_000_000 => format!("{:>8}M", i / 1_000_000),
        _ if i < 100_000_000_000_000 => format!("{:>8}G", i / 1_000_000_000),
        _ => format!("{:>8}T", i / 1_000_000_000_000),
    }
}

/// "TCP  10.0.0.1:80" / "FWM  1", cut to 33 characters as ipvsadm does.
fn service_name(s: &ServiceView) -> String {
    let mut name = match s.id {
        ServiceId::Addr(a) => format!("{}  {}", a.proto.name(), a.endpoint()),
        ServiceId::Fwmark(m) if is_ipv6(s) => format!("FWM  {m} IPv6"),
        ServiceId::Fwmark(m) => format!("FWM  {m}"),
    };
    // ipvsadm cuts IPv4 names only.
    if !matches!(s.id, ServiceId::Addr(a) if a.vip.is_ipv6()) {
        name.truncate(33);
    }
    name
}

fn real_name(r: &RealView) -> String {
    let mut name = std::net::SocketAddr::new(r.address, r.port).to_string();
    if r.address.is_ipv4() {
        name.truncate(28);
    }
    name
}

/// Totals of a service (sum of its reals), as IPVS keeps them per service.
fn totals(s: &ServiceView) -> RealView {
    let mut t = RealView::configured(std::net::Ipv4Addr::UNSPECIFIED.into(), 0, crate::ops::ForwardMethod::Route, 0);
    for r in &s.reals {
        t.packets += r.packets;
        t.bytes += r.bytes;
        t.out_packets += r.out_packets;
        t.out_bytes += r.out_bytes;
        t.conns += r.conns;
        t.cps += r.cps;
        t.in_pps += r.in_pps;
        t.in_bps += r.in_bps;
    }
    t
}

fn title(format: Format) -> String {
    let cols = |a: &str, b: &str, c: &str, d: &str, e: &str| {
        format!("{:<33} {a:>8} {b:>8} {c:>8} {d:>8} {e:>8}\n  -> RemoteAddress:Port\n", "Prot LocalAddress:Port")
    };
    match format {
        Format::Stats => cols("Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"),
        Format::Rate => cols("CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"),
        Format::Thresholds => format!(
            "{:<33} {:<10} {:<10} {:<10} {:<10}\n  -> RemoteAddress:Port\n",
            "Prot LocalAddress:Port", "Uthreshold", "Lthreshold", "ActiveConn", "InActConn"
        ),
        Format::PersistentConn => format!(
            "{:<33} {:<9} {:<11} {:<10} {:<10}\n  -> RemoteAddress:Port\n",
            "Prot LocalAddress:Port", "Weight", "PersistConn", "ActiveConn", "InActConn"
        ),
        Format::TunInfo => "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn\n".to_string(),
        Format::Plain => {
            "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"
                .to_string()
        }
    }
}

/// `ipvsadm -L -n`: title, then each service and its reals, as IPVS would hold them
/// with keepalived's checks: a failed real is gone (or shown with weight 0 under
/// inhibit_on_failure), and a sorry server shows while it serves. The out direction
/// (OutPkts, OutBytes, …) is 0: in DR the director never sees it. A fwmark group's
/// frontends are not printed (ipvsadm has no such lines; `xlb list` shows them).
/// `templates` are the persistence templates (`--persistent-conn` counts them).
pub fn table(services: &[ServiceView], format: Format, exact: bool, templates: &[ConnView]) -> String {
    let as_ipvs: Vec<ServiceView> = services
        .iter()
        .map(|s| {
            let mut s = s.clone();
            s.reals.retain(|r| !r.health_down || s.inhibit_on_failure);
            for r in s.reals.iter_mut().filter(|r| r.health_down) {
                r.weight = 0;
            }
            // keepalived adds the sorry server to IPVS while it serves.
            if let (Some(sorry), true) = (s.sorry_server, s.sorry_active) {
                let mut r = totals(&s);
                (r.address, r.weight, r.port) = (sorry, 1, s.port());
                (r.packets, r.bytes, r.conns, r.cps, r.in_pps, r.in_bps) = (0, 0, 0, 0, 0, 0);
                s.reals.push(r);
            }
            s
        })
        .collect();
    render(&as_ipvs, format, exact, false, templates)
}

/// `xlb list`: ipvsadm's layout with every configured real and a Health column.
pub fn table_with_health(services: &[ServiceView], format: Format, exact: bool) -> String {
    render(services, format, exact, true, &[])
}

fn render(services: &[ServiceView], format: Format, exact: bool, health: bool, templates: &[ConnView]) -> String {
    let mut out = title(format);
    if health && format == Format::Plain {
        out = out.replacen("InActConn\n", "InActConn  Health\n", 1);
    }
    let n = |i| largenum(i, exact);
    for s in services {
        let t = totals(s);
        let _ = match format {
            Format::Stats => {
                writeln!(out, "{:<33}{}{}{}{}{}", service_name(s), n(t.conns), n(t.packets), n(t.out_packets), n(t.bytes), n(t.out_bytes))
            }
            Format::Rate => {
                writeln!(out, "{:<33}{}{}{}{}{}", service_name(s), n(t.cps), n(t.in_pps), n(0), n(t.in_bps), n(0))
            }
            Format::Plain | Format::Thresholds | Format::PersistentConn | Format::TunInfo => {
                writeln!(out, "{}", service_line(s))
            }
        };
        let vaddr = template_vaddr(s);
        if let ServiceId::Fwmark(_) = s.id {
            if format == Format::Plain && health {
                for f in fold_frontends(&s.frontends) {
                    let _ = writeln!(out, "  <- {f}");
                }
            }
        }
        for r in &s.reals {
            let name = real_name(r);
            let _ = match format {
                Format::Stats => {
                    writeln!(out, "  -> {name:<28}{}{}{}{}{}", n(r.conns), n(r.packets), n(r.out_packets), n(r.bytes), n(r.out_bytes))
                }
                Format::Rate => writeln!(out, "  -> {name:<28} {:>8} {:>8} {:>8}{}{}", r.cps, r.in_pps, 0, n(r.in_bps), n(0)),
                Format::Thresholds => writeln!(
                    out,
                    "  -> {name:<28} {:<10} {:<10} {:<10} {:<10}",
                    r.u_threshold, r.l_threshold, r.active_conns, r.inactive_conns
                ),
                Format::PersistentConn => {
                    let persist = templates
                        .iter()
                        .filter(|t| t.template && t.real == r.address && t.real_port == r.port && t.virtual_address == vaddr)
                        .count();
                    writeln!(out, "  -> {name:<28} {:<9} {:<11} {:<10} {:<10}", r.weight, persist, r.active_conns, r.inactive_conns)
                }
                Format::TunInfo => {
                    let info = if r.forward == ForwardMethod::Tunnel { "ipip" } else { "-" };
                    writeln!(
                        out,
                        "  -> {name:<28} {:<7} {info:<13} {:<6} {:<10} {:<10}",
                        r.forward.name(), r.weight, r.active_conns, r.inactive_conns
                    )
                }
                Format::Plain if health => writeln!(
                    out,
                    "  -> {name:<28} {:<7} {:<6} {:<10} {:<10} {}",
                    r.forward.name(), r.weight, r.active_conns, r.inactive_conns, r.health
                ),
                Format::Plain => writeln!(
                    out,
                    "  -> {name:<28} {:<7} {:<6} {:<10} {:<10}",
                    r.forward.name(), r.weight, r.active_conns, r.inactive_conns
                ),
            };
        }
        if let (Some(sorry), true) = (s.sorry_server, health) {
            let state = if s.sorry_active { "serving" } else { "standby" };
            let _ = writeln!(out, "  -> {:<28} sorry server, {state}", format!("{sorry}:{}", s.port()));
        }
    }
    out
}

fn service_line(s: &ServiceView) -> String {
    let mut line = format!("{} {}", service_name(s), s.scheduler);
    if !s.sched_flags.is_empty() {
        let _ = write!(line, " ({})", s.sched_flags.join(","));
    }
    if let Some(p) = s.persistence {
        let _ = write!(line, " persistent {}", p.timeout);
        if let Some(mask) = netmask_text(s) {
            let _ = write!(line, " mask {mask}");
        }
    }
    if s.one_packet {
        line.push_str(" ops");
    }
    line
}

/// Frontends of a group, consecutive ports folded into ranges.
pub fn fold_frontends(list: &[Service]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < list.len() {
        let first = list[i];
        let mut j = i;
        while j + 1 < list.len()
            && list[j + 1].proto == first.proto
            && list[j + 1].vip == first.vip
            && list[j + 1].port == list[j].port + 1
        {
            j += 1;
        }
        let ports = if j > i { format!("{}-{}", first.port, list[j].port) } else { first.port.to_string() };
        let vip = if first.vip.is_ipv4() { first.vip.to_string() } else { format!("[{}]", first.vip) };
        out.push(format!("{} {vip}:{ports}", first.proto.name()));
        i = j + 1;
    }
    out
}

/// `xlb conns` and `ipvsadm -L -c -n`: the connection table.
pub fn conns_table(conns: &[ConnView]) -> String {
    let mut out = String::from("IPVS connection entries\npro expire state       source             virtual            destination\n");
    for c in conns {
        let _ = writeln!(
            out,
            "{:<3} {:02}:{:02}  {:<11} {:<18} {:<18} {}",
            c.proto,
            c.expires_in / 60,
            c.expires_in % 60,
            c.state,
            c.client,
            c.virtual_address,
            std::net::SocketAddr::new(c.real, c.real_port)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::Proto;

    #[test]
    fn frontends_fold_into_ranges() {
        let vip = "10.0.0.1".parse().unwrap();
        let f = |proto, port| Service { proto, vip, port };
        let list = [f(Proto::Tcp, 80), f(Proto::Tcp, 443), f(Proto::Tcp, 444), f(Proto::Tcp, 445), f(Proto::Udp, 446)];
        assert_eq!(fold_frontends(&list), vec!["TCP 10.0.0.1:80", "TCP 10.0.0.1:443-445", "UDP 10.0.0.1:446"]);
        let vip6 = "2001:db8::1".parse().unwrap();
        let list6 = [Service { proto: Proto::Tcp, vip: vip6, port: 80 }, Service { proto: Proto::Tcp, vip: vip6, port: 81 }];
        assert_eq!(fold_frontends(&list6), vec!["TCP [2001:db8::1]:80-81"]);
    }

    #[test]
    fn ipvsadm_listing_of_ipv6_groups_masks_and_templates() {
        use crate::ipvsadm::tests::{real, view};
        use crate::ops::{Persistence, ServiceOptions};
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let sticky = |mask: &str| ServiceOptions {
            persistence: Some(Persistence { timeout: 60, netmask: crate::ops::parse_netmask(mask).unwrap() }),
            ..Default::default()
        };
        let mut group = view(ServiceId::Fwmark(7), sticky("48"), vec![real(ip("fd00::7"), 0, ForwardMethod::Route, 1)]);
        group.frontends = vec![Service { proto: Proto::Tcp, vip: ip("fd00::100"), port: 443 }];
        let web6 = view(
            ServiceId::Addr(Service { proto: Proto::Tcp, vip: ip("fd00::100"), port: 80 }),
            sticky("128"),
            vec![real(ip("fd00::7"), 80, ForwardMethod::Tunnel, 2)],
        );
        let web4 = view(
            ServiceId::Addr(Service { proto: Proto::Tcp, vip: ip("10.0.0.1"), port: 80 }),
            sticky("255.255.255.0"),
            vec![real(ip("10.0.0.7"), 80, ForwardMethod::Route, 1)],
        );
        let services = [group.clone(), web6, web4];
        let plain = table(&services, Format::Plain, false, &[]);
        assert_eq!(
            plain,
            "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
             FWM  7 IPv6 wlc persistent 60 mask 48\n  -> [fd00::7]:0                  Route   1      0          0         \n\
             TCP  [fd00::100]:80 wlc persistent 60\n  -> [fd00::7]:80                 Tunnel  2      0          0         \n\
             TCP  10.0.0.1:80 wlc persistent 60 mask 255.255.255.0\n  -> 10.0.0.7:80                  Route   1      0          0         \n"
        );
        // The frontends are xlb's: `xlb list` shows them, ipvsadm's listing does not.
        assert!(table_with_health(&[group], Format::Plain, false).contains("  <- TCP [fd00::100]:443\n"));
        // --persistent-conn counts each real's templates (ip_vs_sched_persist's form).
        let template = |vaddr: &str, real: &str, port| ConnView {
            proto: "TCP".into(),
            client: "10.0.0.0:0".into(),
            virtual_address: vaddr.into(),
            real: ip(real),
            real_port: port,
            forward: ForwardMethod::Route,
            state: "NONE".into(),
            expires_in: 60,
            template: true,
        };
        let templates = [template("10.0.0.1:80", "10.0.0.7", 80), template("10.0.0.1:80", "10.0.0.7", 80), template("[0:7::]:0", "fd00::7", 0)];
        let persist = table(&services, Format::PersistentConn, false, &templates);
        assert!(persist.contains("  -> 10.0.0.7:80                  1         2           0          0         \n"), "{persist}");
        assert!(persist.contains("  -> [fd00::7]:0                  1         1           0          0         \n"), "{persist}");
        assert!(persist.contains("  -> [fd00::7]:80                 2         0           0          0         \n"), "{persist}");
        let tun = table(&services, Format::TunInfo, false, &[]);
        assert!(tun.contains("  -> [fd00::7]:80                 Tunnel  ipip          2      0          0         \n"), "{tun}");
    }

    #[test]
    fn large_numbers_as_ipvsadm_prints_them() {
        assert_eq!(largenum(42, false), "       42");
        assert_eq!(largenum(123_456_789, false), "  123456K");
        assert_eq!(largenum(12_345_678_901, false), "   12345M");
        assert_eq!(largenum(123_456_789, true), " 123456789");
        assert_eq!(largenum(1234, true), "     1234");
    }
}
