//! Brings the maps to a desired state (a [`Config`]) by applying only the differences:
//! what stays the same is not touched, so established flows to unchanged services and
//! reals carry on. Used for config reloads, `xlb apply`, restores and daemon restarts.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::{
    config::{Config, ServiceConfig},
    maps::Maps,
    model::Model,
    nexthop,
    ops::{self, NextHop, Persistence, RealAddr, RealOptions, ServiceId, ServiceOptions},
};

/// The maps' current state, in config form (from the model when this process has
/// one, else read from the maps).
pub fn current(maps: &Maps) -> Result<Config> {
    if let Some(services) = ops::model_services(maps) {
        return Ok(Config { settings: Some(ops::settings(maps)?), services, bgp: None });
    }
    let services = ops::snapshot(maps)?
        .into_iter()
        .map(|v| ServiceConfig {
            id: v.id,
            options: ServiceOptions {
                scheduler: v.scheduler.parse().expect("snapshot names a known scheduler"),
                sched_flags: ops::parse_sched_flags(&v.sched_flags.join(",")).expect("known flags"),
                persistence: v.persistence.map(|p| Persistence { timeout: p.timeout, netmask: p.netmask }),
                one_packet: v.one_packet,
            },
            frontends: if matches!(v.id, ServiceId::Fwmark(_)) { v.frontends } else { Vec::new() },
            reals: v
                .reals
                .iter()
                .map(|r| {
                    let opts = RealOptions { forward: r.forward, weight: r.weight, u_threshold: r.u_threshold, l_threshold: r.l_threshold };
                    (RealAddr { ip: r.address, port: Some(r.port) }.canonical(v.id), opts)
                })
                .collect(),
            sorry_server: v.sorry_server,
            // Health checks live in the daemon, which adds them to its saved state.
            health: None,
            real_health: Default::default(),
        })
        .collect();
    Ok(Config { settings: Some(ops::settings(maps)?), services, bgp: None })
}

/// What a reconcile changed, for the operator.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changes {
    pub services_added: usize,
    pub services_removed: usize,
    pub services_changed: usize,
    pub reals_added: usize,
    pub reals_removed: usize,
    pub reals_changed: usize,
    pub frontends_added: usize,
    pub frontends_removed: usize,
    pub sorry_servers_changed: usize,
    pub health_checks_changed: usize,
    pub settings_changed: bool,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        *self == Changes::default()
    }
}

/// Applies `target` as one batch: the model takes every change, then one commit writes
/// them (each changed service's tables rebuilt once). On failure nothing is written and
/// the error says what failed: a bad change is all or nothing.
pub fn apply(maps: &mut Maps, target: &Config) -> Result<Changes> {
    // The model's view (restored from the maps if this process has none yet).
    let services = ops::with_model(maps, |m| Ok(m.services()))?;
    let before = Config { settings: Some(ops::settings(maps)?), services, bgp: None };
    let new: BTreeMap<ServiceId, &ServiceConfig> = target.services.iter().map(|s| (s.id, s)).collect();
    let leaving: Vec<ServiceId> = before.services.iter().map(|s| s.id).filter(|id| !new.contains_key(id)).collect();
    let reals = ops::reals_of_services(maps, &leaving)?;
    let connected = ops::connected_reals(maps, reals);
    let mut ch = ops::batch(maps, |maps| {
        ops::with_model(maps, |m| {
            apply_to_model(m, &before.services, &target.services, &mut resolve_all, &mut |id| connected.contains(&id))
        })
    })
    .map_err(|e| e.context("nothing was changed"))?;
    let target_settings = target.settings.unwrap_or_default();
    if before.settings != Some(target_settings) {
        ops::set_settings(maps, target_settings)?;
        ch.settings_changed = true;
    }
    Ok(ch)
}

/// Brings the model from the services `from` to `to` by the differences: what stays
/// the same is not touched (a service whose key stays keeps its id). `resolve` gives
/// the next hops of the reals added; `connected` says which real ids have connections
/// (a service removed with some goes to the trash). Settings are the caller's.
pub fn apply_to_model(
    model: &mut Model,
    from: &[ServiceConfig],
    to: &[ServiceConfig],
    resolve: &mut dyn FnMut(&[IpAddr]) -> Vec<NextHop>,
    connected: &mut dyn FnMut(u32) -> bool,
) -> Result<Changes> {
    let mut ch = Changes::default();
    let old: BTreeMap<ServiceId, &ServiceConfig> = from.iter().map(|s| (s.id, s)).collect();
    let new: BTreeMap<ServiceId, &ServiceConfig> = to.iter().map(|s| (s.id, s)).collect();

    // Removals first, so frontends and addresses they free can be reused below.
    for id in old.keys().filter(|id| !new.contains_key(id)) {
        model.remove_service(*id, connected)?;
        ch.services_removed += 1;
    }
    for (id, want) in &new {
        let Some(have) = old.get(id) else { continue };
        if let ServiceId::Fwmark(mark) = id {
            let gone: Vec<_> = have.frontends.iter().filter(|f| !want.frontends.contains(f)).copied().collect();
            if !gone.is_empty() {
                model.remove_frontends(*mark, &gone)?;
                ch.frontends_removed += gone.len();
            }
        }
        let wanted: BTreeSet<&RealAddr> = want.reals.iter().map(|(r, _)| r).collect();
        for (rip, _) in have.reals.iter().filter(|(rip, _)| !wanted.contains(rip)) {
            model.remove_real(*id, *rip)?;
            ch.reals_removed += 1;
        }
        if have.options != want.options {
            model.edit_service(*id, want.options)?;
            ch.services_changed += 1;
        }
    }
    // Additions and changes.
    let mut to_resolve = Vec::new();
    for (id, want) in &new {
        let have = old.get(id);
        if have.is_none() {
            model.add_service(*id, want.options)?;
            ch.services_added += 1;
        }
        if let ServiceId::Fwmark(mark) = id {
            let added: Vec<_> =
                want.frontends.iter().filter(|f| have.is_none_or(|h| !h.frontends.contains(f))).copied().collect();
            if !added.is_empty() {
                model.add_frontends(*mark, &added)?;
                ch.frontends_added += added.len();
            }
        }
        let had: BTreeMap<&RealAddr, &RealOptions> = have.map(|h| h.reals.iter().map(|(r, o)| (r, o)).collect()).unwrap_or_default();
        for (rip, opts) in &want.reals {
            match had.get(rip) {
                None => to_resolve.push((*id, *rip, *opts)),
                Some(o) if *o != opts => {
                    model.edit_real(*id, *rip, *opts)?;
                    ch.reals_changed += 1;
                }
                Some(_) => {}
            }
        }
    }
    let ips: Vec<IpAddr> = to_resolve.iter().map(|(_, real, _)| real.ip).collect();
    let targets = resolve(&ips);
    for ((id, rip, opts), target) in to_resolve.iter().zip(targets) {
        model.add_real(*id, *rip, *opts, target)?;
        ch.reals_added += 1;
    }
    for (id, want) in &new {
        if old.get(id).map_or(None, |h| h.sorry_server) != want.sorry_server {
            let target = want.sorry_server.map(|ip| (ip, resolve(&[ip])[0]));
            model.set_sorry_server(*id, target)?;
            ch.sorry_servers_changed += 1;
        }
    }
    Ok(ch)
}

/// Next hops for many reals at once: one solicitation round, no wait (the daemon
/// learns the MACs still missing from its neighbour subscription). Each address is
/// looked up once, however many services share it.
fn resolve_all(ips: &[IpAddr]) -> Vec<NextHop> {
    if ips.is_empty() {
        return Vec::new();
    }
    let unique: Vec<IpAddr> = ips.iter().copied().collect::<BTreeSet<_>>().into_iter().collect();
    let hops: BTreeMap<IpAddr, NextHop> = unique.iter().copied().zip(nexthop::lookup_many_soliciting(&unique)).collect();
    ips.iter().map(|ip| hops[ip]).collect()
}
