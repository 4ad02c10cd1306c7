//! Human listings, in ipvsadm's layout where ipvsadm has one.
use std::fmt::Write;

use crate::ops::ServiceView;

/// `xlb list`: ipvsadm -L -n's layout with xlb's per-real counters.
pub fn table(services: &[ServiceView]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Prot LocalAddress:Port Scheduler");
    let _ = writeln!(out, "  -> RemoteAddress:Port           Forward Conns      Packets    Bytes      MAC");
    for s in services {
        let svc = &s.service;
        let _ = writeln!(out, "{:<4} {}:{} {}", svc.proto.name(), svc.vip, svc.port, s.scheduler);
        for r in &s.reals {
            let _ = writeln!(
                out,
                "  -> {:<28} {:<7} {:<10} {:<10} {:<10} {}",
                format!("{}:{}", r.address, svc.port),
                "Route",
                r.conns,
                r.packets,
                r.bytes,
                r.mac.as_deref().unwrap_or("unresolved"),
            );
        }
    }
    out
}
