//! The controller's model: what it has written to the fast path's service, real, VIP and
//! pool tables, held in memory with the indexes its operations need (frontends by
//! service, reals by service, services by firewall mark) and free lists of ids, so no
//! operation reads a whole map. Changes accumulate as a diff; [`Model::commit`] rebuilds
//! the scheduling tables of the services that changed and writes only changed entries
//! (as Katran's `modifyRealsForVip` and `programHashRing` do), in one batch.
//!
//! The model is restored from the maps ([`Model::restore`]): service ids, real ids and
//! pool regions are what the previous process left, so a restart disturbs no flow. The
//! semantics are IPVS's (and those `ops` documents): a service or real removed with
//! connections stays in the trash under its id until they end or it is added back.
use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result, bail};
use lb_common::{
    MAX_REALS, MAX_REALS_PER_SERVICE, MAX_SERVICES, POOL_SLOTS, RealEntry, ServiceInfo, ServiceKey, WRR_MAX_SEQUENCE, addr,
    forward, hash, real_flags, svc_flags,
};

use crate::{
    config::ServiceConfig,
    ops::{
        self, ForwardMethod, NextHop, RealAddr, RealOptions, Scheduler, Service, ServiceId, ServiceOptions, info_with,
        ipvs_msg, refuse, trashed,
    },
    store::{Contents, MapStore, Writes},
    tables,
};

/// Tables at least this long (Maglev's, long wrr cycles) are double-buffered.
const SPARE_MIN_SLOTS: u32 = 4096;

/// Table sizes the model keeps within (the maps' sizes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Service ids: 0..services (SERVICE_INFO's size).
    pub services: u32,
    /// Real ids: 0..reals (REALS' size).
    pub reals: u32,
    /// Live reals in one service.
    pub reals_per_service: u32,
    /// POOL's slots.
    pub pool_slots: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self { services: MAX_SERVICES, reals: MAX_REALS, reals_per_service: MAX_REALS_PER_SERVICE, pool_slots: POOL_SLOTS }
    }
}

/// Ids given out lowest first from a free list (the lowest free id, as the map scan
/// this replaces chose).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Ids {
    /// Free ids below `next`.
    free: BTreeSet<u32>,
    /// Every id from here up is free.
    next: u32,
    limit: u32,
}

impl Ids {
    fn from_used(used: impl Iterator<Item = u32>, limit: u32) -> Self {
        let used: BTreeSet<u32> = used.collect();
        let next = used.last().map_or(0, |l| l + 1);
        let free = (0..next).filter(|i| !used.contains(i)).collect();
        Self { free, next, limit }
    }

    fn take(&mut self) -> Option<u32> {
        if let Some(id) = self.free.pop_first() {
            return Some(id);
        }
        (self.next < self.limit).then(|| {
            self.next += 1;
            self.next - 1
        })
    }

    fn give(&mut self, id: u32) {
        self.free.insert(id);
        while self.next > 0 && self.free.remove(&(self.next - 1)) {
            self.next -= 1;
        }
    }
}

/// The pool's free extents (first slot → slots), first fit.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Pool {
    free: BTreeMap<u32, u32>,
}

impl Pool {
    fn new(capacity: u32, used: impl Iterator<Item = (u32, u32)>) -> Self {
        let mut used: Vec<(u32, u32)> = used.filter(|&(_, l)| l > 0).collect();
        used.sort_unstable();
        let (mut free, mut start) = (BTreeMap::new(), 0u32);
        for (off, len) in used {
            if off > start {
                free.insert(start, off - start);
            }
            start = start.max(off.saturating_add(len));
        }
        if start < capacity {
            free.insert(start, capacity - start);
        }
        Self { free }
    }

    fn alloc(&mut self, len: u32) -> Option<u32> {
        if len == 0 {
            return Some(0);
        }
        let (&off, &have) = self.free.iter().find(|(_, l)| **l >= len)?;
        self.free.remove(&off);
        if have > len {
            self.free.insert(off + len, have - len);
        }
        Some(off)
    }

    /// Free slots in all.
    fn free_slots(&self) -> u64 {
        self.free.values().map(|&l| l as u64).sum()
    }

    fn release(&mut self, off: u32, len: u32) {
        if len == 0 {
            return;
        }
        let (mut off, mut len) = (off, len);
        if let Some((&prev, &plen)) = self.free.range(..off).next_back() {
            if prev + plen == off {
                self.free.remove(&prev);
                (off, len) = (prev, plen + len);
            }
        }
        if let Some(next_len) = self.free.remove(&(off + len)) {
            len += next_len;
        }
        self.free.insert(off, len);
    }
}

/// Keys touched since the last commit.
#[derive(Clone, Debug, Default)]
struct Pending {
    fronts: BTreeSet<ServiceKey>,
    infos: BTreeSet<u32>,
    reals: BTreeSet<u32>,
    vips: BTreeSet<[u8; 16]>,
    rebuild: BTreeSet<u32>,
    fresh_reals: BTreeSet<u32>,
    fresh_services: BTreeSet<u32>,
    /// Pool regions to free once the commit has flipped the services off them.
    freed: Vec<(u32, u32)>,
}

#[derive(Clone, Debug)]
pub struct Model {
    limits: Limits,
    fronts: BTreeMap<ServiceKey, u32>,
    fronts_of: BTreeMap<u32, BTreeSet<ServiceKey>>,
    infos: BTreeMap<u32, ServiceInfo>,
    /// Firewall mark → its service (live or trashed: one per mark).
    marks: BTreeMap<u32, u32>,
    reals: BTreeMap<u32, RealEntry>,
    reals_of: BTreeMap<u32, BTreeSet<u32>>,
    vips: BTreeMap<[u8; 16], u32>,
    /// ADDR_FILTER as last written (see `lb_common::addr_filter`), and whether it must
    /// be recounted from every address (at the first commit after a restore).
    filter: Vec<u64>,
    filter_dirty: bool,
    /// How many counted addresses set each filter bit (bit index over both halves:
    /// the source half's start at `SRC * 64`; bits at 0 left out), and the addresses
    /// counted: each real's (by id) and each VIP. A commit recounts only the addresses
    /// it changed and rewrites only their words.
    filter_counts: BTreeMap<u32, u32>,
    counted_reals: BTreeMap<u32, [u8; 16]>,
    counted_vips: BTreeSet<[u8; 16]>,
    /// What each service's pool regions hold (real ids, table), when this process wrote
    /// them: an unchanged rebuild writes nothing.
    tables: BTreeMap<u32, (Vec<u32>, Vec<u32>)>,
    /// Large tables are double-buffered: the region a service's table left at its last
    /// flip stays allocated, holding that older table, and the next rebuild of the same
    /// size writes only the slots that differ into it before flipping (Katran writes
    /// only a ring's changed positions; here the flip stays atomic).
    spares: BTreeMap<u32, (u32, Vec<u32>)>,
    service_ids: Ids,
    real_ids: Ids,
    pool: Pool,
    pending: Pending,
}

impl Default for Model {
    fn default() -> Self {
        Self::from_contents(Contents::default(), Limits::default())
    }
}

impl Model {
    /// An empty model within `limits`.
    pub fn new(limits: Limits) -> Self {
        Self::from_contents(Contents::default(), limits)
    }

    /// The model of what `store` holds (at start, over pinned maps).
    pub fn restore(store: &dyn MapStore, limits: Limits) -> Result<Self> {
        Ok(Self::from_contents(store.read().context("reading the maps back")?, limits))
    }

    fn from_contents(c: Contents, limits: Limits) -> Self {
        let mut fronts_of: BTreeMap<u32, BTreeSet<ServiceKey>> = BTreeMap::new();
        for (k, sid) in &c.frontends {
            fronts_of.entry(*sid).or_default().insert(*k);
        }
        let mut reals_of: BTreeMap<u32, BTreeSet<u32>> = BTreeMap::new();
        for (id, r) in &c.reals {
            reals_of.entry(r.service_id).or_default().insert(*id);
        }
        let marks = c.infos.values().filter(|i| i.fwmark != 0).map(|i| (i.fwmark, i.id)).collect();
        let pool = Pool::new(limits.pool_slots, c.infos.values().flat_map(|i| [(i.reals_off, i.reals_len), (i.table_off, i.table_len)]));
        // VIP counts are derived: recount them all at the first commit (a process that
        // died between writes left them stale at worst).
        let vips_to_check = c.frontends.keys().map(|k| k.vip).chain(c.vips.keys().copied()).collect();
        Self {
            limits,
            service_ids: Ids::from_used(c.infos.keys().copied(), limits.services),
            real_ids: Ids::from_used(c.reals.keys().copied(), limits.reals),
            fronts: c.frontends,
            fronts_of,
            infos: c.infos,
            marks,
            reals: c.reals,
            reals_of,
            vips: c.vips,
            // Rebuilt at the first commit (`filter_dirty`): a map left by an older
            // process, or by one that died mid-commit, is brought to the model.
            filter: if c.filter.len() == lb_common::addr_filter::WORDS as usize { c.filter } else { vec![0; lb_common::addr_filter::WORDS as usize] },
            filter_dirty: true,
            filter_counts: BTreeMap::new(),
            counted_reals: BTreeMap::new(),
            counted_vips: BTreeSet::new(),
            tables: BTreeMap::new(),
            spares: BTreeMap::new(),
            pool,
            pending: Pending { vips: vips_to_check, ..Default::default() },
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The tables as the maps hold them once every change is committed.
    pub fn contents(&self) -> Contents {
        // An all-zero filter is an empty one (as a fresh store has it).
        let filter = if self.filter.iter().all(|w| *w == 0) { Vec::new() } else { self.filter.clone() };
        Contents { frontends: self.fronts.clone(), infos: self.infos.clone(), reals: self.reals.clone(), vips: self.vips.clone(), filter }
    }

    /// Whether changes wait for [`Model::commit`].
    pub fn has_pending(&self) -> bool {
        let p = &self.pending;
        !(p.fronts.is_empty()
            && p.infos.is_empty()
            && p.reals.is_empty()
            && p.rebuild.is_empty()
            && p.fresh_reals.is_empty()
            && p.fresh_services.is_empty()
            && p.freed.is_empty())
            || p.vips.iter().any(|v| self.vip_count(v) != self.vips.get(v).copied())
    }

    // ---- low-level changes: indexes and the diff kept in step ----

    fn set_front(&mut self, key: ServiceKey, sid: u32) {
        if let Some(old) = self.fronts.insert(key, sid) {
            if old == sid {
                return;
            }
            if let Some(set) = self.fronts_of.get_mut(&old) {
                set.remove(&key);
            }
        }
        self.fronts_of.entry(sid).or_default().insert(key);
        self.pending.fronts.insert(key);
        self.pending.vips.insert(key.vip);
    }

    fn del_front(&mut self, key: ServiceKey) {
        if let Some(old) = self.fronts.remove(&key) {
            if let Some(set) = self.fronts_of.get_mut(&old) {
                set.remove(&key);
            }
            self.pending.fronts.insert(key);
            self.pending.vips.insert(key.vip);
        }
    }

    fn set_info(&mut self, info: ServiceInfo) {
        let old = self.infos.insert(info.id, info);
        if old == Some(info) {
            return;
        }
        if let Some(o) = old {
            if o.fwmark != 0 && self.marks.get(&o.fwmark) == Some(&o.id) {
                self.marks.remove(&o.fwmark);
            }
        }
        if info.fwmark != 0 {
            self.marks.insert(info.fwmark, info.id);
        }
        if old.is_none_or(|o| trashed(&o) != trashed(&info)) {
            // Trashed services' frontends count for no VIP.
            let vips: Vec<[u8; 16]> = self.fronts_of.get(&info.id).into_iter().flatten().map(|k| k.vip).collect();
            self.pending.vips.extend(vips);
        }
        self.pending.infos.insert(info.id);
    }

    /// Forgets a service entry (its frontends must be gone) and frees its id and regions.
    fn del_info(&mut self, sid: u32) {
        let Some(info) = self.infos.remove(&sid) else { return };
        if info.fwmark != 0 && self.marks.get(&info.fwmark) == Some(&sid) {
            self.marks.remove(&info.fwmark);
        }
        self.free_regions(&info);
        self.pending.infos.insert(sid);
        self.pending.rebuild.remove(&sid);
        self.service_ids.give(sid);
    }

    fn free_regions(&mut self, info: &ServiceInfo) {
        self.pending.freed.push((info.reals_off, info.reals_len));
        self.pending.freed.push((info.table_off, info.table_len));
        self.tables.remove(&info.id);
        if let Some((off, t)) = self.spares.remove(&info.id) {
            self.pending.freed.push((off, t.len() as u32));
        }
    }

    fn set_real(&mut self, id: u32, entry: RealEntry) {
        let old = self.reals.insert(id, entry);
        if old == Some(entry) {
            return;
        }
        if let Some(o) = old {
            if o.service_id != entry.service_id {
                if let Some(set) = self.reals_of.get_mut(&o.service_id) {
                    set.remove(&id);
                }
            }
        }
        self.reals_of.entry(entry.service_id).or_default().insert(id);
        self.pending.reals.insert(id);
    }

    fn del_real(&mut self, id: u32) {
        if let Some(old) = self.reals.remove(&id) {
            if let Some(set) = self.reals_of.get_mut(&old.service_id) {
                set.remove(&id);
            }
            self.pending.reals.insert(id);
            self.real_ids.give(id);
        }
    }

    fn reals_in(&self, sid: u32) -> impl Iterator<Item = (u32, &RealEntry)> {
        self.reals_of.get(&sid).into_iter().flatten().filter_map(move |id| self.reals.get(id).map(|r| (*id, r)))
    }

    // ---- queries ----

    /// The live service `id` names; `missing` is the refusal when there is none.
    pub fn lookup(&self, id: ServiceId, missing: &'static str) -> Result<ServiceInfo> {
        let sid = match id {
            ServiceId::Addr(svc) => self.fronts.get(&svc.key()),
            ServiceId::Fwmark(mark) => self.marks.get(&mark),
        };
        sid.and_then(|sid| self.infos.get(sid)).filter(|i| !trashed(i)).copied().ok_or_else(|| refuse(missing, id.to_string()))
    }

    pub fn find_service(&self, id: ServiceId) -> Result<ServiceInfo> {
        self.lookup(id, ipvs_msg::NO_SERVICE)
    }

    /// The trashed service that `id` named, if it is still in the trash.
    fn trashed_service(&self, id: ServiceId) -> Option<ServiceInfo> {
        let sid = match id {
            ServiceId::Addr(svc) => self.fronts.get(&svc.key()),
            ServiceId::Fwmark(mark) => self.marks.get(&mark),
        }?;
        let info = self.infos.get(sid)?;
        (trashed(info) && (info.fwmark == 0) == matches!(id, ServiceId::Addr(_))).then_some(*info)
    }

    /// The service entry of id `sid` (trashed ones too).
    pub fn info(&self, sid: u32) -> Option<&ServiceInfo> {
        self.infos.get(&sid)
    }

    /// The real of service `sid` at address `ip` (16-byte form) and port `port`, a
    /// portless real (a fwmark service's) taking `vport` (the client's): a backup sync
    /// daemon's lookup. Removed reals are not found.
    pub fn real_at(&self, sid: u32, ip: [u8; 16], port: u16, vport: u16) -> Option<u32> {
        self.reals_in(sid)
            .find(|(_, r)| {
                let rp = u16::from_be_bytes(r.port);
                r.ip == ip && !r.removed() && (rp == port || (rp == 0 && port == vport))
            })
            .map(|(id, _)| id)
    }

    /// Every real entry, with its address and next hop (draining ones too).
    pub fn next_hops(&self) -> Vec<(u32, std::net::IpAddr, NextHop)> {
        self.reals.iter().map(|(id, r)| (*id, addr::to_ip(r.ip), NextHop::of(r))).collect()
    }

    /// Real ids of the reals removed from their services (draining or done).
    pub fn removed_reals(&self) -> Vec<u32> {
        self.reals.iter().filter(|(_, r)| r.removed()).map(|(id, _)| *id).collect()
    }

    /// Real ids of a live service's reals, removed (draining) ones and the sorry
    /// server included.
    pub fn real_ids_of(&self, id: ServiceId) -> Result<Vec<u32>> {
        let info = self.find_service(id)?;
        Ok(self.reals_in(info.id).map(|(id, _)| id).collect())
    }

    /// The VIPs to announce by BGP with `quorum` (at least 1): those of every live
    /// service (a virtual service, or a firewall-mark group through its frontends, any
    /// port and protocol) that has at least `quorum` reals able to take new connections
    /// (weight above 0, not failed by its health check, not removed; the sorry server
    /// does not count). A VIP is announced if any one of its services has quorum.
    pub fn vips_with_quorum(&self, quorum: u32) -> BTreeSet<std::net::IpAddr> {
        let quorum = quorum.max(1);
        let mut out = BTreeSet::new();
        for info in self.infos.values().filter(|i| !trashed(i)) {
            let able = self
                .reals_in(info.id)
                .filter(|(_, r)| !r.removed() && !r.sorry() && r.weight > 0 && r.flags & real_flags::HEALTH_DOWN == 0)
                .count();
            if (able as u64) < u64::from(quorum) {
                continue;
            }
            out.extend(self.fronts_of.get(&info.id).into_iter().flatten().filter_map(Service::from_key).map(|f| f.vip));
        }
        out
    }

    /// The configuration the model holds (services sorted by id, reals by address and
    /// port; health checks are the daemon's, not here).
    pub fn services(&self) -> Vec<ServiceConfig> {
        let mut out = Vec::new();
        for info in self.infos.values().filter(|i| !trashed(i)) {
            let fronts: Vec<Service> =
                self.fronts_of.get(&info.id).into_iter().flatten().filter_map(ops::Service::from_key).collect();
            let id = if info.fwmark != 0 {
                ServiceId::Fwmark(info.fwmark)
            } else {
                match fronts.iter().min() {
                    Some(f) => ServiceId::Addr(*f),
                    None => continue,
                }
            };
            let mut reals: Vec<(std::net::IpAddr, u16, RealOptions)> = self
                .reals_in(info.id)
                .filter(|(_, r)| !r.removed() && !r.sorry())
                .map(|(_, r)| {
                    let opts = RealOptions {
                        forward: ForwardMethod::from_code(r.forward),
                        weight: r.weight,
                        u_threshold: r.u_threshold,
                        l_threshold: r.l_threshold,
                    };
                    (addr::to_ip(r.ip), u16::from_be_bytes(r.port), opts)
                })
                .collect();
            reals.sort_by_key(|(ip, port, _)| (*ip, *port));
            let mut frontends = if info.fwmark != 0 { fronts } else { Vec::new() };
            frontends.sort();
            out.push(ServiceConfig {
                id,
                options: ServiceOptions::from_info(info),
                frontends,
                reals: reals.into_iter().map(|(ip, port, o)| (RealAddr { ip, port: Some(port) }.canonical(id), o)).collect(),
                sorry_server: self.reals_in(info.id).find(|(_, r)| r.sorry() && !r.removed()).map(|(_, r)| addr::to_ip(r.ip)),
                health: None,
                real_health: Default::default(),
            });
        }
        out.sort_by_key(|s| s.id);
        out
    }

    // ---- operations (ops' semantics; each checks everything before it changes anything) ----

    /// ipvsadm -A. A trashed service added again takes its id back, with its connections.
    pub fn add_service(&mut self, id: ServiceId, opts: ServiceOptions) -> Result<u32> {
        ops::check_options(id, &opts)?;
        if self.lookup(id, ipvs_msg::NO_SERVICE).is_ok() {
            return Err(refuse(ipvs_msg::SERVICE_EXISTS, id.to_string()));
        }
        let fwmark = match id {
            ServiceId::Fwmark(m) => m,
            ServiceId::Addr(_) => 0,
        };
        let sid = match self.trashed_service(id) {
            Some(old) => {
                if fwmark != 0 {
                    // A firewall-mark group's frontends are given again with it.
                    for key in self.fronts_of.get(&old.id).cloned().unwrap_or_default() {
                        self.del_front(key);
                    }
                }
                old.id
            }
            None => {
                if self.service_ids.free.is_empty() && self.service_ids.next >= self.limits.services {
                    // Every id taken: the trash gives way to a new service.
                    match self.infos.values().find(|s| trashed(s)).map(|s| s.id) {
                        Some(old) => self.purge(old),
                        None => {
                            return Err(refuse(
                                ipvs_msg::NO_MEMORY,
                                format!("too many services (at most {}, xlb run --max-services)", self.limits.services),
                            ));
                        }
                    }
                }
                let sid = self.service_ids.take().expect("an id was freed above");
                self.pending.fresh_services.insert(sid);
                sid
            }
        };
        // A trashed service's regions went with it to the trash.
        self.set_info(info_with(ServiceInfo { id: sid, fwmark, ..Default::default() }, &opts));
        if let ServiceId::Addr(svc) = id {
            // Also takes the VIP:port over from a trashed firewall-mark group that held it.
            self.set_front(svc.key(), sid);
        }
        Ok(sid)
    }

    /// Empties a service out of the tables (its frontends, its entry); its reals, all
    /// removed, stay until their connections are gone (see [`Model::free_real`]).
    fn purge(&mut self, sid: u32) {
        for key in self.fronts_of.remove(&sid).unwrap_or_default() {
            self.del_front(key);
        }
        self.del_info(sid);
    }

    /// ipvsadm -E.
    pub fn edit_service(&mut self, id: ServiceId, opts: ServiceOptions) -> Result<()> {
        ops::check_options(id, &opts)?;
        let info = self.find_service(id)?;
        if opts.one_packet && self.reals_in(info.id).any(|(_, r)| !r.removed() && r.forward == forward::NAT) {
            bail!("{id} has NAT (-m) reals, whose replies need connection entries: no one-packet scheduling (-o)");
        }
        self.set_info(info_with(info, &opts));
        self.pending.rebuild.insert(info.id);
        Ok(())
    }

    /// ipvsadm -D. Its reals are marked removed; with connections (`connected(real id)`)
    /// it goes to the trash, else it is gone.
    pub fn remove_service(&mut self, id: ServiceId, connected: &mut dyn FnMut(u32) -> bool) -> Result<()> {
        let info = self.find_service(id)?;
        let mut any = false;
        let mine: Vec<(u32, RealEntry)> = self.reals_in(info.id).map(|(id, r)| (id, *r)).collect();
        for (real_id, mut real) in mine {
            any |= connected(real_id);
            if !real.removed() {
                real.flags |= real_flags::REMOVED;
                self.set_real(real_id, real);
            }
        }
        if any {
            self.free_regions(&info);
            self.pending.rebuild.remove(&info.id);
            self.set_info(ServiceInfo { flags: svc_flags::TRASHED, reals_len: 0, table_len: 0, reals_off: 0, table_off: 0, ..info });
        } else {
            self.purge(info.id);
        }
        Ok(())
    }

    /// Adds frontends (VIP:port entries) to a firewall-mark service.
    pub fn add_frontends(&mut self, mark: u32, list: &[Service]) -> Result<()> {
        let id = ServiceId::Fwmark(mark);
        let info = self.find_service(id)?;
        for f in list {
            let holder = self.fronts.get(&f.key()).and_then(|sid| self.infos.get(sid));
            if holder.is_some_and(|h| !trashed(h)) {
                return Err(refuse(ipvs_msg::SERVICE_EXISTS, format!("{f} (a VIP:port belongs to one service)")));
            }
            self.check_group_family(&info, id, f.vip)?;
            if let Some(first) = list.first() {
                ops::check_family(id, first.vip, f.vip)?;
            }
        }
        for f in list {
            self.set_front(f.key(), info.id);
        }
        Ok(())
    }

    pub fn remove_frontends(&mut self, mark: u32, list: &[Service]) -> Result<()> {
        let info = self.find_service(ServiceId::Fwmark(mark))?;
        for f in list {
            if self.fronts.get(&f.key()) != Some(&info.id) {
                return Err(refuse(ipvs_msg::NO_SERVICE, format!("{f} is not a frontend of FWM {mark}")));
            }
        }
        for f in list {
            self.del_front(f.key());
        }
        Ok(())
    }

    /// In a fwmark group, every frontend and real has the family of the first one there.
    fn check_group_family(&self, info: &ServiceInfo, id: ServiceId, candidate: std::net::IpAddr) -> Result<()> {
        let first = self
            .reals_in(info.id)
            .filter(|(_, r)| !r.removed())
            .map(|(_, r)| addr::to_ip(r.ip))
            .chain(self.fronts_of.get(&info.id).into_iter().flatten().map(|k| addr::to_ip(k.vip)))
            .next();
        match first {
            Some(ip) => ops::check_family(id, ip, candidate),
            None => Ok(()),
        }
    }

    /// ipvsadm -a. A real removed earlier but still draining is brought back with its
    /// flows (its id again). Returns the real's id.
    pub fn add_real(&mut self, id: ServiceId, real: RealAddr, opts: RealOptions, hop: NextHop) -> Result<u32> {
        let info = self.lookup(id, ipvs_msg::SERVICE_NOT_DEFINED)?;
        let port = ops::check_real(id, real, &opts)?;
        ops::check_one_packet(id, info.flags & svc_flags::ONE_PACKET != 0, opts.forward)?;
        if let ServiceId::Fwmark(_) = id {
            self.check_group_family(&info, id, real.ip)?;
        }
        let key = (addr::from_ip(real.ip), port.to_be_bytes());
        let mut revived = None;
        let mut live = 0;
        for (rid, r) in self.reals_in(info.id).filter(|(_, r)| !r.sorry()) {
            if (r.ip, r.port) == key {
                if !r.removed() {
                    return Err(refuse(ipvs_msg::DEST_EXISTS, format!("{}:{port} in {id}", real.ip)));
                }
                revived = revived.or(Some(rid));
            }
            live += u32::from(!r.removed());
        }
        if live >= self.limits.reals_per_service {
            return Err(refuse(
                ipvs_msg::NO_MEMORY,
                format!("too many real servers in {id} (at most {})", self.limits.reals_per_service),
            ));
        }
        let mut entry = RealEntry {
            ip: key.0,
            port: key.1,
            forward: opts.forward.code(),
            service_id: info.id,
            weight: opts.weight,
            u_threshold: opts.u_threshold,
            l_threshold: opts.l_threshold,
            ..Default::default()
        };
        hop.apply(&mut entry);
        let real_id = match revived {
            Some(rid) => rid,
            None => self.new_real_id()?,
        };
        self.set_real(real_id, entry);
        self.pending.rebuild.insert(info.id);
        Ok(real_id)
    }

    /// The lowest free real id; its counters are zeroed at the commit.
    fn new_real_id(&mut self) -> Result<u32> {
        let id = self
            .real_ids
            .take()
            .ok_or_else(|| refuse(ipvs_msg::NO_MEMORY, format!("too many real servers (at most {}, xlb run --max-reals)", self.limits.reals)))?;
        self.pending.fresh_reals.insert(id);
        Ok(id)
    }

    /// The live real `real` names in the service; without a port, the one real at that
    /// address.
    fn find_real(&self, info: &ServiceInfo, id: ServiceId, real: RealAddr) -> Result<(u32, RealEntry)> {
        let ip = addr::from_ip(real.ip);
        let found: Vec<(u32, RealEntry)> = self
            .reals_in(info.id)
            .filter(|(_, r)| r.ip == ip && !r.removed() && !r.sorry())
            .filter(|(_, r)| real.port.is_none_or(|p| r.port == p.to_be_bytes()))
            .map(|(id, r)| (id, *r))
            .collect();
        match found[..] {
            [one] => Ok(one),
            [] => Err(refuse(ipvs_msg::NO_DEST, format!("{real} in {id}"))),
            _ => bail!("{} has several ports in {id}: name one as {}:PORT", real.ip, real.ip),
        }
    }

    /// ipvsadm -e.
    pub fn edit_real(&mut self, id: ServiceId, real: RealAddr, opts: RealOptions) -> Result<()> {
        let info = self.lookup(id, ipvs_msg::SERVICE_NOT_DEFINED)?;
        ops::check_one_packet(id, info.flags & svc_flags::ONE_PACKET != 0, opts.forward)?;
        let (real_id, mut entry) = self.find_real(&info, id, real)?;
        ops::check_real(id, RealAddr { ip: real.ip, port: Some(u16::from_be_bytes(entry.port)) }, &opts)?;
        entry.forward = opts.forward.code();
        entry.weight = opts.weight;
        entry.u_threshold = opts.u_threshold;
        entry.l_threshold = opts.l_threshold;
        if self.reals.get(&real_id) != Some(&entry) {
            self.set_real(real_id, entry);
            self.pending.rebuild.insert(info.id);
        }
        Ok(())
    }

    /// ipvsadm -d.
    pub fn remove_real(&mut self, id: ServiceId, real: RealAddr) -> Result<()> {
        let info = self.lookup(id, ipvs_msg::SERVICE_NOT_DEFINED)?;
        let (real_id, mut entry) = self.find_real(&info, id, real)?;
        entry.flags |= real_flags::REMOVED;
        self.set_real(real_id, entry);
        self.pending.rebuild.insert(info.id);
        Ok(())
    }

    /// A real's next hop (after the route or neighbour entry changed).
    pub fn set_real_target(&mut self, real_id: u32, hop: NextHop) -> Result<()> {
        let mut real = *self.reals.get(&real_id).with_context(|| format!("real id {real_id} is not in use"))?;
        hop.apply(&mut real);
        self.set_real(real_id, real);
        Ok(())
    }

    /// A real up or down by its health check.
    pub fn set_real_health(&mut self, id: ServiceId, real: RealAddr, up: bool) -> Result<()> {
        let info = self.find_service(id)?;
        let (real_id, mut entry) = self.find_real(&info, id, real)?;
        let flags = if up { entry.flags & !real_flags::HEALTH_DOWN } else { entry.flags | real_flags::HEALTH_DOWN };
        if flags != entry.flags {
            entry.flags = flags;
            self.set_real(real_id, entry);
            self.pending.rebuild.insert(info.id);
        }
        Ok(())
    }

    /// Sets or clears one of the health machinery's service flags. True if it changed.
    pub fn set_service_flag(&mut self, id: ServiceId, flag: u32, on: bool) -> Result<bool> {
        let mut info = self.find_service(id)?;
        let flags = if on { info.flags | flag } else { info.flags & !flag };
        if flags == info.flags {
            return Ok(false);
        }
        info.flags = flags;
        self.set_info(info);
        self.pending.rebuild.insert(info.id);
        Ok(true)
    }

    /// Sets or clears a service's sorry server (keepalived's sorry_server).
    pub fn set_sorry_server(&mut self, id: ServiceId, sorry: Option<(std::net::IpAddr, NextHop)>) -> Result<()> {
        let info = self.find_service(id)?;
        let current = self.reals_in(info.id).find(|(_, r)| r.sorry() && !r.removed()).map(|(id, r)| (id, *r));
        if current.as_ref().map(|(_, r)| addr::to_ip(r.ip)) == sorry.map(|(ip, _)| ip) {
            return Ok(());
        }
        let free = match sorry {
            Some(_) => Some(self.new_real_id()?),
            None => None,
        };
        if let Some((real_id, mut r)) = current {
            r.flags |= real_flags::REMOVED;
            self.set_real(real_id, r);
        }
        if let (Some((ip, target)), Some(free)) = (sorry, free) {
            // The sorry server listens on the service's port (DR).
            let port = match id {
                ServiceId::Addr(a) => a.port,
                ServiceId::Fwmark(_) => 0,
            };
            let mut entry = RealEntry {
                ip: addr::from_ip(ip),
                port: port.to_be_bytes(),
                service_id: info.id,
                flags: real_flags::SORRY,
                weight: 1,
                ..Default::default()
            };
            target.apply(&mut entry);
            self.set_real(free, entry);
        }
        self.pending.rebuild.insert(info.id);
        Ok(())
    }

    /// Frees a removed real whose last connection is gone; false if it is not removed.
    pub fn free_real(&mut self, real_id: u32) -> bool {
        if !self.reals.get(&real_id).is_some_and(|r| r.removed()) {
            return false;
        }
        self.del_real(real_id);
        true
    }

    /// Frees the trashed services that have no real left (their last connection is
    /// gone); returns how many.
    pub fn purge_empty_trash(&mut self) -> u64 {
        let empty: Vec<u32> =
            self.infos.values().filter(|i| trashed(i) && self.reals_in(i.id).next().is_none()).map(|i| i.id).collect();
        for sid in &empty {
            self.purge(*sid);
        }
        empty.len() as u64
    }

    // ---- commit ----

    /// Rebuilds a service's real list and scheduling table; places them in fresh pool
    /// regions (written before the entry that points at them) unless they are unchanged.
    fn rebuild(&mut self, sid: u32, w: &mut Writes) -> Result<()> {
        let Some(&info) = self.infos.get(&sid) else { return Ok(()) };
        if trashed(&info) {
            return Ok(());
        }
        let inhibit = info.flags & svc_flags::INHIBIT_ON_FAILURE != 0;
        let sorry = info.flags & svc_flags::SORRY_ACTIVE != 0;
        let live: Vec<(u32, RealEntry)> = self
            .reals_in(sid)
            .filter(|(_, r)| !r.removed())
            .filter(|(_, r)| if sorry { r.sorry() } else { !r.sorry() && (!r.health_down() || inhibit) })
            .map(|(id, r)| (id, *r))
            .collect();
        let ids: Vec<u32> = live.iter().map(|(id, _)| *id).collect();
        let weights: Vec<u32> = live.iter().map(|(_, r)| if r.health_down() { 0 } else { r.weight }).collect();
        let positions = match Scheduler::from_id(info.scheduler) {
            Some(Scheduler::Rr) => tables::rr_table(&weights),
            Some(Scheduler::Wrr) => tables::wrr_sequence(&weights, WRR_MAX_SEQUENCE as usize),
            Some(Scheduler::Sh) => tables::sh_buckets(&weights),
            Some(Scheduler::Dh) => tables::dh_buckets(weights.len()),
            Some(Scheduler::Mh) => {
                // Built over the reals in address order, not id order: every director
                // with the same reals and weights then has the same table, whatever order
                // the reals were added in and whatever ids they got, so a flow that ECMP
                // moves to another director meets the same real there (issue 15).
                let mut order: Vec<usize> = (0..live.len()).collect();
                order.sort_by_key(|&i| (live[i].1.ip, live[i].1.port));
                let keys: Vec<u32> = order
                    .iter()
                    .map(|&i| hash::real_key(addr::fold(&live[i].1.ip), u16::from_be_bytes(live[i].1.port)))
                    .collect();
                let sorted_weights: Vec<u32> = order.iter().map(|&i| weights[i]).collect();
                tables::maglev_table(&keys, &sorted_weights).into_iter().map(|p| order[p as usize] as u32).collect()
            }
            _ => Vec::new(), // scanning schedulers use the real list only
        };
        let table: Vec<u32> = positions.iter().map(|&p| ids[p as usize]).collect();
        if self.tables.get(&sid).is_some_and(|(i, t)| *i == ids && *t == table) {
            return Ok(());
        }
        let full = || {
            refuse(
                ipvs_msg::NO_MEMORY,
                format!("scheduling-table pool is full ({} slots): remove services or use smaller tables", self.limits.pool_slots),
            )
        };
        // The real list stays where it is when only the table changed (a weight).
        let same_list = self.tables.get(&sid).is_some_and(|(i, _)| *i == ids) && info.reals_len == ids.len() as u32;
        let reals_off = if same_list {
            info.reals_off
        } else {
            let off = self.pool.alloc(ids.len() as u32).ok_or_else(full)?;
            if !ids.is_empty() {
                w.pool.push((off, ids.clone()));
            }
            self.pending.freed.push((info.reals_off, info.reals_len));
            off
        };
        // The table: into the spare region when it has this size (only the slots that
        // differ from what it holds), else into a fresh one.
        let table_off = match self.spares.remove(&sid) {
            Some((off, old)) if old.len() == table.len() && !table.is_empty() => {
                w.pool_slots.extend(
                    old.iter().zip(&table).enumerate().filter(|(_, (a, b))| a != b).map(|(i, (_, b))| (off + i as u32, *b)),
                );
                off
            }
            other => {
                if let Some((off, t)) = other {
                    self.pending.freed.push((off, t.len() as u32));
                }
                let Some(off) = self.pool.alloc(table.len() as u32) else {
                    return Err(full()); // the model is dropped: nothing to give back
                };
                if !table.is_empty() {
                    w.pool.push((off, table.clone()));
                }
                off
            }
        };
        // The table region left behind becomes the spare when it is large, the same size,
        // and the pool has room to spare; else it is freed after the flip.
        let old_table = self.tables.get(&sid).map(|(_, t)| t.clone());
        match old_table {
            Some(old)
                if old.len() == table.len()
                    && table.len() as u32 >= SPARE_MIN_SLOTS
                    && info.table_len == table.len() as u32
                    && self.pool.free_slots() >= self.limits.pool_slots as u64 / 4 =>
            {
                self.spares.insert(sid, (info.table_off, old));
            }
            _ => self.pending.freed.push((info.table_off, info.table_len)),
        }
        let updated = ServiceInfo { reals_off, reals_len: ids.len() as u32, table_off, table_len: table.len() as u32, ..info };
        self.infos.insert(sid, updated);
        self.pending.infos.insert(sid);
        self.tables.insert(sid, (ids, table));
        Ok(())
    }

    fn vip_count(&self, vip: &[u8; 16]) -> Option<u32> {
        let lo = ServiceKey { vip: *vip, port: [0; 2], proto: 0, _pad: 0 };
        let hi = ServiceKey { vip: *vip, port: [0xff; 2], proto: 0xff, _pad: 0xff };
        let n = self.fronts.range(lo..=hi).filter(|(_, sid)| self.infos.get(sid).is_some_and(|i| !trashed(i))).count() as u32;
        (n > 0).then_some(n)
    }

    /// The diff since the last commit, with the tables rebuilt. On error (the pool is
    /// full) nothing is written and the model must be dropped (restored again).
    pub fn prepare(&mut self) -> Result<Writes> {
        let mut w = Writes::default();
        for sid in std::mem::take(&mut self.pending.rebuild) {
            self.rebuild(sid, &mut w)?;
        }
        let p = std::mem::take(&mut self.pending);
        self.pending.freed = p.freed;
        for vip in &p.vips {
            let want = self.vip_count(vip);
            if want == self.vips.get(vip).copied() {
                continue;
            }
            match want {
                Some(n) => {
                    self.vips.insert(*vip, n);
                    w.vips.push((*vip, n));
                }
                None => {
                    self.vips.remove(vip);
                    w.del_vips.push(*vip);
                }
            }
        }
        self.refilter(&p.reals, p.fronts.iter().map(|k| k.vip).chain(p.vips.iter().copied()), &mut w);
        w.fresh_reals = p.fresh_reals.iter().copied().filter(|id| self.reals.contains_key(id)).collect();
        w.fresh_services = p.fresh_services.iter().copied().filter(|id| self.infos.contains_key(id)).collect();
        for id in p.reals {
            match self.reals.get(&id) {
                Some(r) => w.reals.push((id, *r)),
                None => w.del_reals.push(id),
            }
        }
        for id in p.infos {
            match self.infos.get(&id) {
                Some(i) => w.infos.push((id, *i)),
                None => w.del_infos.push(id),
            }
        }
        for k in p.fronts {
            match self.fronts.get(&k) {
                Some(sid) => w.frontends.push((k, *sid)),
                None => w.del_frontends.push(k),
            }
        }
        Ok(w)
    }

    /// The address filter for the model's VIPs (every frontend's, live or trashed
    /// service: a trashed one's connections still come) and real addresses (every
    /// real's, removed ones too while they are kept for their connections): recounts the
    /// changed reals and VIPs (after a restore, all of them) and writes the words whose
    /// bits changed, as diffs against the ones last written: words gaining bits first,
    /// words losing bits last.
    fn refilter(&mut self, reals: &BTreeSet<u32>, vips: impl Iterator<Item = [u8; 16]>, w: &mut Writes) {
        use lb_common::addr_filter::{SRC, WORDS, bit};
        let src_base = SRC * 64;
        let mut words = BTreeSet::new();
        // One address more (`up`) or less on bit `at`; its word is rewritten.
        fn count(counts: &mut BTreeMap<u32, u32>, words: &mut BTreeSet<u32>, at: u32, up: bool) {
            let n = counts.entry(at).or_insert(0);
            *n = if up { *n + 1 } else { n.saturating_sub(1) };
            if *n == 0 {
                counts.remove(&at);
            }
            words.insert(at >> 6);
        }
        let (all_reals, all_vips): (BTreeSet<u32>, BTreeSet<[u8; 16]>);
        let (reals, vips): (&BTreeSet<u32>, Box<dyn Iterator<Item = [u8; 16]>>) = if self.filter_dirty {
            // Everything counted afresh, every word compared with the map's.
            self.filter_dirty = false;
            self.filter_counts.clear();
            self.counted_reals.clear();
            self.counted_vips.clear();
            all_reals = self.reals.keys().copied().collect();
            all_vips = self.fronts.keys().map(|k| k.vip).chain(self.vips.keys().copied()).collect();
            words.extend(0..WORDS);
            (&all_reals, Box::new(all_vips.into_iter()))
        } else {
            (reals, Box::new(vips))
        };
        for id in reals {
            let (old, new) = (self.counted_reals.get(id).copied(), self.reals.get(id).map(|r| r.ip));
            if old == new {
                continue;
            }
            if let Some(ip) = old {
                count(&mut self.filter_counts, &mut words, src_base + bit(&ip), false);
                self.counted_reals.remove(id);
            }
            if let Some(ip) = new {
                count(&mut self.filter_counts, &mut words, src_base + bit(&ip), true);
                self.counted_reals.insert(*id, ip);
            }
        }
        for vip in vips {
            let lo = ServiceKey { vip, port: [0; 2], proto: 0, _pad: 0 };
            let hi = ServiceKey { vip, port: [0xff; 2], proto: 0xff, _pad: 0xff };
            let present = self.vips.contains_key(&vip) || self.fronts.range(lo..=hi).next().is_some();
            if present != self.counted_vips.contains(&vip) {
                count(&mut self.filter_counts, &mut words, bit(&vip), present);
                if present {
                    self.counted_vips.insert(vip);
                } else {
                    self.counted_vips.remove(&vip);
                }
            }
        }
        for i in words {
            let new = self.filter_counts.range(i * 64..(i + 1) * 64).fold(0u64, |acc, (at, _)| acc | 1 << (at & 63));
            let old = self.filter[i as usize];
            if old | new != old {
                w.filter_before.push((i, old | new));
            }
            if new != old | new {
                w.filter_after.push((i, new));
            }
            self.filter[i as usize] = new;
        }
    }

    /// Writes everything changed since the last commit to `store`, in one batch, then
    /// frees the pool regions the services left. On error the model no longer matches
    /// the store: drop it and restore.
    pub fn commit(&mut self, store: &mut dyn MapStore) -> Result<Writes> {
        let w = self.prepare()?;
        if !w.is_empty() {
            store.write(&w)?;
        }
        for (off, len) in std::mem::take(&mut self.pending.freed) {
            self.pool.release(off, len);
        }
        Ok(w)
    }

    /// Checks the model's own consistency: indexes match the tables, ids unique and
    /// within limits, regions disjoint and inside the pool. For tests.
    pub fn check_invariants(&self) -> Result<()> {
        for (k, sid) in &self.fronts {
            if !self.fronts_of.get(sid).is_some_and(|s| s.contains(k)) {
                bail!("frontend {k:?} missing from its service's index");
            }
            if !self.infos.contains_key(sid) {
                bail!("frontend {k:?} leads to no service {sid}");
            }
        }
        let indexed: usize = self.fronts_of.values().map(|s| s.len()).sum();
        if indexed != self.fronts.len() {
            bail!("frontend index holds {indexed}, table {}", self.fronts.len());
        }
        for (id, r) in &self.reals {
            if !self.reals_of.get(&r.service_id).is_some_and(|s| s.contains(id)) {
                bail!("real {id} missing from its service's index");
            }
            if *id >= self.limits.reals || self.real_ids.free.contains(id) || *id >= self.real_ids.next {
                bail!("real id {id} is also free or out of range");
            }
        }
        if self.reals_of.values().map(|s| s.len()).sum::<usize>() != self.reals.len() {
            bail!("real index size differs from the table");
        }
        let mut regions = Vec::new();
        for (sid, i) in &self.infos {
            if *sid != i.id || self.service_ids.free.contains(sid) || *sid >= self.service_ids.next {
                bail!("service id {sid} is also free or mismatched");
            }
            if i.fwmark != 0 && self.marks.get(&i.fwmark) != Some(sid) {
                bail!("fwmark {} not indexed", i.fwmark);
            }
            let live = self.reals_in(*sid).filter(|(_, r)| !r.removed()).count() as u32;
            if live > self.limits.reals_per_service + 1 {
                bail!("service {sid} has {live} live reals");
            }
            regions.extend([(i.reals_off, i.reals_len), (i.table_off, i.table_len)].into_iter().filter(|r| r.1 > 0));
        }
        regions.extend(self.spares.values().map(|(off, t)| (*off, t.len() as u32)));
        regions.sort_unstable();
        for pair in regions.windows(2) {
            if pair[0].0 + pair[0].1 > pair[1].0 {
                bail!("pool regions {:?} and {:?} overlap", pair[0], pair[1]);
            }
        }
        for (off, len) in &regions {
            if off + len > self.limits.pool_slots {
                bail!("region {off}+{len} is outside the pool");
            }
            if self.pool.free.range(..off + len).next_back().is_some_and(|(f, fl)| f + fl > *off) {
                bail!("region {off}+{len} is also free");
            }
        }
        for vip in self.vips.keys().chain(self.fronts.keys().map(|k| &k.vip)) {
            if self.vip_count(vip) != self.vips.get(vip).copied() && !self.pending.vips.contains(vip) {
                bail!("VIP count of {vip:?} is stale");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "model_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "model_props.rs"]
mod props;
