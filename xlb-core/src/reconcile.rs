//! Brings the maps to a desired state (a [`Config`]) by applying only the differences:
//! what stays the same is not touched, so established flows to unchanged services and
//! reals carry on. Used for config reloads, `xlb apply`, restores and daemon restarts.
use std::{collections::BTreeMap, net::IpAddr};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::{
    config::{Config, ServiceConfig},
    maps::Maps,
    nexthop,
    ops::{self, NextHop, Persistence, RealAddr, RealOptions, ServiceId, ServiceOptions},
};

/// The maps' current state, in config form.
pub fn current(maps: &Maps) -> Result<Config> {
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
    Ok(Config { settings: Some(ops::settings(maps)?), services })
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

/// Applies `target`. On failure the maps are brought back to where they were and the
/// error says what failed: a bad change is all or nothing.
pub fn apply(maps: &mut Maps, target: &Config) -> Result<Changes> {
    let before = current(maps)?;
    match apply_diff(maps, &before, target) {
        Ok(changes) => Ok(changes),
        Err(e) => {
            let now = current(maps)?;
            apply_diff(maps, &now, &before).context("restoring the previous state after a failed change")?;
            Err(e.context("nothing was changed"))
        }
    }
}

fn apply_diff(maps: &mut Maps, from: &Config, to: &Config) -> Result<Changes> {
    let mut ch = Changes::default();
    let target_settings = to.settings.unwrap_or_default();
    if from.settings != Some(target_settings) {
        ops::set_settings(maps, target_settings)?;
        ch.settings_changed = true;
    }
    let old: BTreeMap<ServiceId, &ServiceConfig> = from.services.iter().map(|s| (s.id, s)).collect();
    let new: BTreeMap<ServiceId, &ServiceConfig> = to.services.iter().map(|s| (s.id, s)).collect();

    // Removals first, so frontends and addresses they free can be reused below.
    for id in old.keys().filter(|id| !new.contains_key(id)) {
        ops::remove_service(maps, *id)?;
        ch.services_removed += 1;
    }
    for (id, want) in &new {
        let Some(have) = old.get(id) else { continue };
        if let ServiceId::Fwmark(mark) = id {
            let gone: Vec<_> = have.frontends.iter().filter(|f| !want.frontends.contains(f)).copied().collect();
            if !gone.is_empty() {
                ops::remove_frontends(maps, *mark, &gone)?;
                ch.frontends_removed += gone.len();
            }
        }
        for (rip, _) in have.reals.iter().filter(|(rip, _)| !want.reals.iter().any(|(r, _)| r == rip)) {
            ops::remove_real(maps, *id, *rip)?;
            ch.reals_removed += 1;
        }
        if have.options != want.options {
            ops::edit_service(maps, *id, want.options)?;
            ch.services_changed += 1;
        }
    }
    // Additions and changes.
    let mut to_resolve = Vec::new();
    for (id, want) in &new {
        let have = old.get(id);
        if have.is_none() {
            ops::add_service(maps, *id, want.options)?;
            ch.services_added += 1;
        }
        if let ServiceId::Fwmark(mark) = id {
            let added: Vec<_> =
                want.frontends.iter().filter(|f| have.is_none_or(|h| !h.frontends.contains(f))).copied().collect();
            if !added.is_empty() {
                ops::add_frontends(maps, *mark, &added)?;
                ch.frontends_added += added.len();
            }
        }
        for (rip, opts) in &want.reals {
            match have.and_then(|h| h.reals.iter().find(|(r, _)| r == rip)) {
                None => to_resolve.push((*id, *rip, *opts)),
                Some((_, o)) if o != opts => {
                    ops::edit_real(maps, *id, *rip, *opts)?;
                    ch.reals_changed += 1;
                }
                Some(_) => {}
            }
        }
    }
    let targets = resolve_all(to_resolve.iter().map(|(_, real, _): &(ServiceId, RealAddr, RealOptions)| real.ip));
    for ((id, rip, opts), target) in to_resolve.iter().zip(targets) {
        ops::add_real(maps, *id, *rip, *opts, target)?;
        ch.reals_added += 1;
    }
    for (id, want) in &new {
        if old.get(id).map_or(None, |h| h.sorry_server) != want.sorry_server {
            let target = want.sorry_server.map(|ip| (ip, resolve_all(std::iter::once(ip))[0]));
            ops::set_sorry_server(maps, *id, target)?;
            ch.sorry_servers_changed += 1;
        }
    }
    Ok(ch)
}

/// Next hops for many reals at once: one solicitation round, no wait (the daemon
/// learns the MACs still missing from its neighbour subscription).
fn resolve_all(ips: impl Iterator<Item = IpAddr>) -> Vec<NextHop> {
    let ips: Vec<IpAddr> = ips.collect();
    nexthop::lookup_many_soliciting(&ips)
}
