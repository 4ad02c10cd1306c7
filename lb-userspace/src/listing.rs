//! Human listings, in ipvsadm's layout where ipvsadm has one.
use std::fmt::Write;

use crate::ops::{ConnView, Service, ServiceId, ServiceView};

fn service_line(s: &ServiceView) -> String {
    let mut line = match s.id {
        ServiceId::Addr(a) => format!("{:<4} {} {}", a.proto.name(), a.endpoint(), s.scheduler),
        ServiceId::Fwmark(m) => format!("FWM  {m} {}", s.scheduler),
    };
    if !s.sched_flags.is_empty() {
        let _ = write!(line, " ({})", s.sched_flags.join(","));
    }
    if let Some(p) = s.persistence {
        let _ = write!(line, " persistent {}", p.timeout);
        if p.netmask != crate::ops::ONE_CLIENT {
            let _ = write!(line, " mask {}", p.netmask);
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

fn real_address(r: &crate::ops::RealView) -> String {
    std::net::SocketAddr::new(r.address, r.port).to_string()
}

/// `xlb list`: ipvsadm -L -n's layout.
pub fn table(services: &[ServiceView]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Prot LocalAddress:Port Scheduler Flags");
    let _ = writeln!(out, "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn");
    for s in services {
        let _ = writeln!(out, "{}", service_line(s));
        if let ServiceId::Fwmark(_) = s.id {
            for f in fold_frontends(&s.frontends) {
                let _ = writeln!(out, "  <- {f}");
            }
        }
        for r in &s.reals {
            let unresolved = if r.mac.is_none() { "  (MAC unresolved)" } else { "" };
            let _ = writeln!(
                out,
                "  -> {:<28} {:<7} {:<6} {:<10} {:<10}{unresolved}",
                real_address(r),
                r.forward.name(),
                r.weight,
                r.active_conns,
                r.inactive_conns,
            );
        }
    }
    out
}

/// `xlb list --stats`: ipvsadm -L -n --stats's layout. In DR and TUN the director sees
/// only the inbound half, so their Out columns stay 0; NAT's count the replies.
pub fn stats_table(services: &[ServiceView]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes");
    let _ = writeln!(out, "  -> RemoteAddress:Port");
    for s in services {
        let (conns, pkts, bytes, out_pkts, out_bytes) = s.reals.iter().fold((0, 0, 0, 0, 0), |a, r| {
            (a.0 + r.conns, a.1 + r.packets, a.2 + r.bytes, a.3 + r.out_packets, a.4 + r.out_bytes)
        });
        let name = match s.id {
            ServiceId::Addr(a) => format!("{:<4} {}", a.proto.name(), a.endpoint()),
            ServiceId::Fwmark(m) => format!("FWM  {m}"),
        };
        let _ = writeln!(out, "{name:<33} {conns:>8} {pkts:>8} {out_pkts:>8} {bytes:>8} {out_bytes:>8}");
        for r in &s.reals {
            let _ = writeln!(
                out,
                "  -> {:<29} {:>8} {:>8} {:>8} {:>8} {:>8}",
                real_address(r),
                r.conns,
                r.packets,
                r.out_packets,
                r.bytes,
                r.out_bytes
            );
        }
    }
    out
}

/// `xlb conns`: ipvsadm -L -c -n's layout.
pub fn conns_table(conns: &[ConnView]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "pro expire state       source                virtual               destination");
    for c in conns {
        let expire = format!("{:02}:{:02}", c.expires_in / 60, c.expires_in % 60);
        let _ = writeln!(
            out,
            "{:<3} {expire:<6} {:<11} {:<21} {:<21} {}",
            c.proto,
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
}
