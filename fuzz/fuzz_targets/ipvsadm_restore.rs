//! ipvsadm restore files (`xlb ipvsadm -R`, ipvsadm-save's output).
//!
//! Properties:
//! - a refused file names its first bad line: every line before it restores on its own,
//!   that line alone is refused with the same words, and nothing is returned to apply
//!   (the daemon applies the requests as one batch: all or nothing);
//! - `-S` output restores to the same state: the accepted requests are applied to a
//!   model of the daemon's table (with ops' own checks, and the netmask as the maps store
//!   it), the model is saved with `ipvsadm::save`, the saved text is restored into an
//!   empty model, and both models are equal; saving that again gives the same text.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use xlb_core::{
    api::Request,
    ipvsadm::{restore_requests, save},
    ops::{self, ForwardMethod, Persistence, RealAddr, RealOptions, RealView, ServiceId, ServiceOptions, ServiceView},
};
use libfuzzer_sys::fuzz_target;

/// One service as the daemon keeps it: options, and reals in the order they came.
#[derive(Clone, Debug, PartialEq)]
struct ModelService {
    options: ServiceOptions,
    reals: Vec<(RealAddr, RealOptions)>,
}

/// The daemon's table: services in the order they were added.
#[derive(Clone, Debug, Default, PartialEq)]
struct Model {
    services: Vec<(ServiceId, ModelService)>,
}

/// The netmask as the maps keep it and `ops::snapshot` reads it back (ServiceOptions::
/// from_info): 16 bytes, IPv4 whenever the IPv4-mapped prefix is all ones.
fn stored(options: ServiceOptions) -> ServiceOptions {
    let persistence = options.persistence.map(|p| {
        let bytes = match p.netmask {
            IpAddr::V4(m) => lb_common::addr::v4_mask(m.octets()),
            IpAddr::V6(m) => m.octets(),
        };
        let netmask = if bytes[..12].iter().all(|&b| b == 0xff) {
            IpAddr::V4(Ipv4Addr::from(lb_common::addr::v4(&bytes)))
        } else {
            IpAddr::V6(Ipv6Addr::from(bytes))
        };
        Persistence { timeout: p.timeout, netmask }
    });
    ServiceOptions { persistence, ..options }
}

impl Model {
    fn find(&mut self, id: ServiceId) -> Option<&mut ModelService> {
        self.services.iter_mut().find(|(s, _)| *s == id).map(|(_, m)| m)
    }

    /// Applies what the daemon would accept; what it would refuse leaves the model as it
    /// was (ops' checks are pure functions; lookups are the model's).
    fn apply(&mut self, request: &Request) {
        match *request {
            Request::AddService { service, options } => {
                if ops::check_options(service, &options).is_ok() && self.find(service).is_none() {
                    self.services.push((service, ModelService { options: stored(options), reals: Vec::new() }));
                }
            }
            Request::EditService { service, options } => {
                if ops::check_options(service, &options).is_err() {
                    return;
                }
                if let Some(s) = self.find(service) {
                    let masq = s.reals.iter().any(|(_, o)| o.forward == ForwardMethod::Masq);
                    if !(options.one_packet && masq) {
                        s.options = stored(options);
                    }
                }
            }
            Request::DelService { service } => self.services.retain(|(s, _)| *s != service),
            Request::AddReal { service, address, options } | Request::EditReal { service, address, options } => {
                let add = matches!(request, Request::AddReal { .. });
                if ops::check_real(service, address, &options).is_err() {
                    return;
                }
                let key = address.canonical(service);
                let Some(s) = self.find(service) else { return };
                if ops::check_one_packet(service, s.options.one_packet, options.forward).is_err() {
                    return;
                }
                // A fwmark group's reals share the family of the first one.
                if s.reals.first().is_some_and(|(r, _)| r.ip.is_ipv4() != key.ip.is_ipv4()) {
                    return;
                }
                match (s.reals.iter_mut().find(|(r, _)| *r == key), add) {
                    (None, true) => s.reals.push((key, options)),
                    (Some(existing), false) => existing.1 = options,
                    _ => {}
                }
            }
            Request::DelReal { service, address } => {
                let key = address.canonical(service);
                if let Some(s) = self.find(service) {
                    s.reals.retain(|(r, _)| *r != key);
                }
            }
            // Counters and timeouts are not part of what -S saves.
            _ => {}
        }
    }

    /// What `ops::snapshot` lists for this table (counters zero).
    fn views(&self) -> Vec<ServiceView> {
        self.services
            .iter()
            .map(|(id, s)| {
                let service_port = match id {
                    ServiceId::Addr(a) => a.port,
                    ServiceId::Fwmark(_) => 0,
                };
                ServiceView {
                    id: *id,
                    frontends: Vec::new(),
                    scheduler: s.options.scheduler.name().to_string(),
                    sched_flags: ops::sched_flag_names(s.options.sched_flags).iter().map(|f| f.to_string()).collect(),
                    persistence: s.options.persistence,
                    one_packet: s.options.one_packet,
                    reals: s
                        .reals
                        .iter()
                        .enumerate()
                        .map(|(i, (r, o))| RealView {
                            id: i as u32,
                            u_threshold: o.u_threshold,
                            l_threshold: o.l_threshold,
                            health: "-".into(),
                            ..RealView::configured(r.ip, r.port.unwrap_or(service_port), o.forward, o.weight)
                        })
                        .collect(),
                    sorry_server: None,
                    sorry_active: false,
                    inhibit_on_failure: false,
                }
            })
            .collect()
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let requests = match restore_requests(text) {
        Ok(requests) => requests,
        Err(e) => {
            // "line N: …", N a line of the file; the lines before it restore, that one
            // alone does not, for the same reason.
            let (n, words) = e.message.split_once(": ").expect("a restore error names its line");
            let n: usize = n.strip_prefix("line ").and_then(|n| n.parse().ok()).expect("a restore error names its line");
            let lines: Vec<&str> = text.lines().collect();
            assert!((1..=lines.len()).contains(&n), "line {n} of a {}-line file", lines.len());
            let before = lines[..n - 1].join("\n");
            assert!(restore_requests(&before).is_ok(), "the lines before the refused line {n} restore");
            let alone = restore_requests(lines[n - 1]).expect_err("the refused line is refused on its own");
            assert_eq!(alone.message, format!("line 1: {words}"));
            assert_eq!(alone.status, e.status);
            return;
        }
    };
    let mut model = Model::default();
    for (_, request) in &requests {
        model.apply(request);
    }
    let saved = save(&model.views());
    let again = restore_requests(&saved).unwrap_or_else(|e| panic!("-S output does not restore: {}\n{saved}", e.message));
    let mut restored = Model::default();
    for (_, request) in &again {
        restored.apply(request);
    }
    assert_eq!(restored, model, "-S output restores to another state:\n{saved}");
    assert_eq!(save(&restored.views()), saved);
});
