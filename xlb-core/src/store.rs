//! Where the controller's model ([`crate::model`]) is written: the fast path's maps
//! behind a trait, as Cilium's `pkg/loadbalancer` writes its tables through a map
//! interface. [`Maps`] is the kernel's store (batched `bpf(2)` updates where the kernel
//! has them); [`MemStore`] holds the same tables in memory for tests without root.
//!
//! A [`Writes`] is one commit's diff, written in an order that never lets the fast path
//! see a reference to something not yet written: pool slots and reals before the service
//! entries that point at them, service entries before the frontends that lead to them;
//! deletions in the reverse order.
use std::{
    collections::BTreeMap,
    os::fd::{AsRawFd, OwnedFd},
};

use anyhow::{Context, Result};
use aya::maps::PerCpuValues;
use lb_common::{RealEntry, RealLoad, RealStats, ServiceInfo, ServiceKey};

use crate::maps::Maps;

/// The tables the controller owns, as read back at start (the model is restored from
/// them: a restart disturbs nothing). The pool is not read: each service's regions are
/// known from its entry, and its tables are rewritten at its next change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Contents {
    /// SERVICES: frontend → service id.
    pub frontends: BTreeMap<ServiceKey, u32>,
    /// SERVICE_INFO: service id → entry.
    pub infos: BTreeMap<u32, ServiceInfo>,
    /// REALS: real id → entry.
    pub reals: BTreeMap<u32, RealEntry>,
    /// VIPS: VIP → its number of frontends of live services.
    pub vips: BTreeMap<[u8; 16], u32>,
    /// ADDR_FILTER's words (`lb_common::addr_filter::WORDS` of them; empty: all zero).
    pub filter: Vec<u64>,
}

/// One commit's changes. Every list holds each key once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Writes {
    /// Real ids newly given out: their load and traffic counters start at zero.
    pub fresh_reals: Vec<u32>,
    /// Service ids newly given out: their rr/wrr cursor starts at zero.
    pub fresh_services: Vec<u32>,
    /// Pool regions written whole: (first slot, slots). Each is a fresh region no
    /// service entry points at yet.
    pub pool: Vec<(u32, Vec<u32>)>,
    /// Single pool slots (slot, real id): the changed slots of a double-buffered table,
    /// in a region no service entry points at.
    pub pool_slots: Vec<(u32, u32)>,
    pub reals: Vec<(u32, RealEntry)>,
    pub infos: Vec<(u32, ServiceInfo)>,
    pub frontends: Vec<(ServiceKey, u32)>,
    pub vips: Vec<([u8; 16], u32)>,
    pub del_frontends: Vec<ServiceKey>,
    pub del_vips: Vec<[u8; 16]>,
    pub del_infos: Vec<u32>,
    pub del_reals: Vec<u32>,
    /// ADDR_FILTER words (index, value) written first: the bits of addresses this
    /// commit brings, added to the old ones.
    pub filter_before: Vec<(u32, u64)>,
    /// ADDR_FILTER words written last: the bits of addresses gone, cleared.
    pub filter_after: Vec<(u32, u64)>,
}

impl Writes {
    pub fn is_empty(&self) -> bool {
        *self == Writes::default()
    }
    /// Map entries this commit writes or deletes (pool slots one each).
    pub fn entries(&self) -> usize {
        self.fresh_reals.len() * 2
            + self.fresh_services.len()
            + self.pool.iter().map(|(_, v)| v.len()).sum::<usize>()
            + self.pool_slots.len()
            + self.reals.len()
            + self.infos.len()
            + self.frontends.len()
            + self.vips.len()
            + self.del_frontends.len()
            + self.del_vips.len()
            + self.del_infos.len()
            + self.del_reals.len()
            + self.filter_before.len()
            + self.filter_after.len()
    }
}

/// The controller's tables, wherever they are.
pub trait MapStore {
    /// Everything the model is restored from.
    fn read(&self) -> Result<Contents>;
    /// Writes one commit, in [`Writes`]' order.
    fn write(&mut self, w: &Writes) -> Result<()>;
}

/// The same tables in memory (tests, and what a kernel store must equal after a commit).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemStore {
    pub contents: Contents,
    /// POOL slots ever written (slot → real id).
    pub pool: BTreeMap<u32, u32>,
    /// Ids whose counters were reset, in order (a check that fresh ids start clean).
    pub reset_reals: Vec<u32>,
    pub reset_services: Vec<u32>,
    /// Commits and the entries they wrote, for checks that a change writes only its diff.
    pub commits: usize,
    pub entries_written: usize,
}

impl MemStore {
    /// The slots of a service's real list and table, as the fast path reads them.
    pub fn service_tables(&self, sid: u32) -> Option<(Vec<u32>, Vec<u32>)> {
        let info = self.contents.infos.get(&sid)?;
        let slots = |off: u32, len: u32| (off..off + len).map(|s| self.pool.get(&s).copied().unwrap_or(u32::MAX)).collect();
        Some((slots(info.reals_off, info.reals_len), slots(info.table_off, info.table_len)))
    }
}

impl MapStore for MemStore {
    fn read(&self) -> Result<Contents> {
        Ok(self.contents.clone())
    }

    fn write(&mut self, w: &Writes) -> Result<()> {
        let c = &mut self.contents;
        if c.filter.is_empty() {
            c.filter = vec![0; lb_common::addr_filter::WORDS as usize];
        }
        for (i, v) in w.filter_before.iter().chain(&w.filter_after) {
            c.filter[*i as usize] = *v;
        }
        if c.filter.iter().all(|w| *w == 0) {
            c.filter.clear();
        }
        self.reset_reals.extend(&w.fresh_reals);
        self.reset_services.extend(&w.fresh_services);
        for (off, slots) in &w.pool {
            for (i, v) in slots.iter().enumerate() {
                self.pool.insert(off + i as u32, *v);
            }
        }
        self.pool.extend(w.pool_slots.iter().copied());
        c.reals.extend(w.reals.iter().copied());
        c.infos.extend(w.infos.iter().copied());
        c.frontends.extend(w.frontends.iter().copied());
        c.vips.extend(w.vips.iter().copied());
        for k in &w.del_frontends {
            c.frontends.remove(k);
        }
        for k in &w.del_vips {
            c.vips.remove(k);
        }
        for k in &w.del_infos {
            c.infos.remove(k);
        }
        for k in &w.del_reals {
            c.reals.remove(k);
        }
        self.commits += 1;
        self.entries_written += w.entries();
        Ok(())
    }
}

/// BPF_MAP_UPDATE_BATCH and BPF_MAP_DELETE_BATCH (include/uapi/linux/bpf.h, Linux 5.6+).
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;

/// `union bpf_attr`'s `batch` member.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Entries per batch syscall: bounded so a huge commit does not make the kernel
/// allocate (and the fast path wait on) one huge copy.
const BATCH_CHUNK: usize = 8192;

/// Updates (or with `values` None, deletes) `keys` in the map `fd` with batch syscalls,
/// `BATCH_CHUNK` at a time. Where the kernel refuses batching (EINVAL/ENOTSUPP), returns
/// false with nothing written, for the caller to write one at a time.
fn batch<K: Copy, V: Copy>(fd: &OwnedFd, keys: &[K], values: Option<&[V]>) -> Result<bool> {
    // Values per key: 1, or one per possible CPU for a per-CPU map.
    let per = values.map_or(1, |v| (v.len() / keys.len().max(1)).max(1));
    let mut done = 0;
    while done < keys.len() {
        let n = (keys.len() - done).min(BATCH_CHUNK);
        let mut attr = BatchAttr {
            keys: keys[done..].as_ptr() as u64,
            values: values.map_or(0, |v| v[done * per..].as_ptr() as u64),
            count: n as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..Default::default()
        };
        let cmd = if values.is_some() { BPF_MAP_UPDATE_BATCH } else { BPF_MAP_DELETE_BATCH };
        // SAFETY: attr points at `n` keys (and values) that outlive the call; the kernel
        // reads at most size_of::<BatchAttr>() bytes of attr.
        let rc = unsafe {
            libc::syscall(libc::SYS_bpf, cmd, &mut attr as *mut BatchAttr, std::mem::size_of::<BatchAttr>() as u32)
        };
        if rc < 0 {
            let err = std::io::Error::last_os_error();
            // 524: the kernel's ENOTSUPP (no batch operation for this map type).
            if done == 0 && matches!(err.raw_os_error(), Some(libc::EINVAL) | Some(524)) {
                return Ok(false);
            }
            return Err(err).context(if values.is_some() { "BPF_MAP_UPDATE_BATCH" } else { "BPF_MAP_DELETE_BATCH" });
        }
        done += n;
    }
    Ok(true)
}

fn per_cpu<T: aya::Pod + Default>() -> Result<PerCpuValues<T>> {
    let cpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))?;
    Ok(PerCpuValues::try_from(vec![T::default(); cpus])?)
}

impl MapStore for Maps {
    fn read(&self) -> Result<Contents> {
        let mut c = Contents::default();
        for e in self.services.iter() {
            let (k, v) = e?;
            c.frontends.insert(k, v);
        }
        for e in self.service_info.iter() {
            let (k, v) = e?;
            c.infos.insert(k, v);
        }
        for e in self.reals.iter() {
            let (k, v) = e?;
            c.reals.insert(k, v);
        }
        for e in self.vips.iter() {
            let (k, v) = e?;
            c.vips.insert(k, v);
        }
        c.filter = (0..lb_common::addr_filter::WORDS).map(|i| self.addr_filter.get(&i, 0)).collect::<Result<_, _>>()?;
        if c.filter.iter().all(|w| *w == 0) {
            c.filter.clear();
        }
        Ok(c)
    }

    fn write(&mut self, w: &Writes) -> Result<()> {
        self.write_filter(&w.filter_before)?;
        if !w.fresh_reals.is_empty() {
            // Zeroed counts and per-CPU counters (a per-CPU value is one 8-byte-aligned
            // copy per possible CPU).
            let loads = vec![RealLoad::default(); w.fresh_reals.len()];
            let cpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))?;
            let stats = vec![RealStats::default(); w.fresh_reals.len() * cpus];
            const _: () = assert!(std::mem::size_of::<RealStats>() % 8 == 0);
            if !batch(&self.fds.real_load, &w.fresh_reals, Some(&loads))? {
                for &id in &w.fresh_reals {
                    self.real_load.set(id, RealLoad::default(), 0)?;
                }
            }
            if !batch(&self.fds.real_stats, &w.fresh_reals, Some(&stats))? {
                for &id in &w.fresh_reals {
                    self.real_stats.set(id, per_cpu::<RealStats>()?, 0)?;
                }
            }
        }
        let cursors = vec![0u64; w.fresh_services.len()];
        if !batch(&self.fds.rr_cursors, &w.fresh_services, Some(&cursors))? {
            for &sid in &w.fresh_services {
                self.rr_cursors.set(sid, 0, 0)?;
            }
        }
        // Regions placed side by side (a load fills the pool in order) go in one batch.
        let mut runs: Vec<(u32, Vec<u32>)> = Vec::new();
        for (off, slots) in &w.pool {
            match runs.last_mut() {
                Some((o, v)) if *o + v.len() as u32 == *off => v.extend_from_slice(slots),
                _ => runs.push((*off, slots.clone())),
            }
        }
        for (off, slots) in &runs {
            let keys: Vec<u32> = (*off..*off + slots.len() as u32).collect();
            if !batch(&self.fds.pool, &keys, Some(slots))? {
                for (k, v) in keys.iter().zip(slots) {
                    self.pool.set(*k, v, 0)?;
                }
            }
        }
        let (k, v): (Vec<u32>, Vec<u32>) = w.pool_slots.iter().copied().unzip();
        if !batch(&self.fds.pool, &k, Some(&v))? {
            for (k, v) in &w.pool_slots {
                self.pool.set(*k, v, 0)?;
            }
        }
        let split = |v: &[(u32, RealEntry)]| -> (Vec<u32>, Vec<RealEntry>) { v.iter().copied().unzip() };
        let (k, v) = split(&w.reals);
        if !batch(&self.fds.reals, &k, Some(&v))? {
            for (k, v) in &w.reals {
                self.reals.insert(k, v, 0)?;
            }
        }
        let (k, v): (Vec<u32>, Vec<ServiceInfo>) = w.infos.iter().copied().unzip();
        if !batch(&self.fds.service_info, &k, Some(&v))? {
            for (k, v) in &w.infos {
                self.service_info.insert(k, v, 0)?;
            }
        }
        let (k, v): (Vec<ServiceKey>, Vec<u32>) = w.frontends.iter().copied().unzip();
        if !batch(&self.fds.services, &k, Some(&v))? {
            for (k, v) in &w.frontends {
                self.services.insert(k, v, 0)?;
            }
        }
        let (k, v): (Vec<[u8; 16]>, Vec<u32>) = w.vips.iter().copied().unzip();
        if !batch(&self.fds.vips, &k, Some(&v))? {
            for (k, v) in &w.vips {
                self.vips.insert(k, v, 0)?;
            }
        }
        // The model deletes only keys it wrote, and the fast path never deletes these,
        // so a batch delete (which stops at a missing key) finds every one.
        if !batch::<_, u8>(&self.fds.services, &w.del_frontends, None)? {
            for k in &w.del_frontends {
                self.services.remove(k)?;
            }
        }
        if !batch::<_, u8>(&self.fds.vips, &w.del_vips, None)? {
            for k in &w.del_vips {
                self.vips.remove(k)?;
            }
        }
        if !batch::<_, u8>(&self.fds.service_info, &w.del_infos, None)? {
            for k in &w.del_infos {
                self.service_info.remove(k)?;
            }
        }
        if !batch::<_, u8>(&self.fds.reals, &w.del_reals, None)? {
            for k in &w.del_reals {
                self.reals.remove(k)?;
            }
        }
        self.write_filter(&w.filter_after)?;
        Ok(())
    }
}

impl Maps {
    /// ADDR_FILTER words, in one batch where the kernel has it.
    fn write_filter(&mut self, words: &[(u32, u64)]) -> Result<()> {
        let (k, v): (Vec<u32>, Vec<u64>) = words.iter().copied().unzip();
        if !batch(&self.fds.addr_filter, &k, Some(&v))? {
            for (k, v) in words {
                self.addr_filter.set(*k, v, 0)?;
            }
        }
        Ok(())
    }
}
