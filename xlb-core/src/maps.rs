//! Typed handles on the fast path's maps, either taken from a freshly loaded object
//! (and optionally pinned) or reopened from their pins by another `xlb` process.
use std::{
    fs,
    os::fd::{AsFd, OwnedFd},
    path::Path,
};

use anyhow::{Context, Result, bail};
use aya::{
    Ebpf,
    maps::{Array, HashMap, Map, MapData, PerCpuArray},
};
use lb_common::{
    ConnEntry, FlowKey, IngressMac, NatReply, PersistEntry, PersistKey, RealEntry, RealLoad, RealStats, ServiceInfo, ServiceKey, Settings,
    map_names,
};

/// Where `xlb run` pins its maps unless told otherwise.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/xlb";

pub struct Maps {
    pub services: HashMap<MapData, ServiceKey, u32>,
    pub service_info: HashMap<MapData, u32, ServiceInfo>,
    pub pool: Array<MapData, u32>,
    pub reals: HashMap<MapData, u32, RealEntry>,
    pub real_load: Array<MapData, RealLoad>,
    pub conns: HashMap<MapData, FlowKey, ConnEntry>,
    pub persist: HashMap<MapData, PersistKey, PersistEntry>,
    pub settings: Array<MapData, Settings>,
    /// Service id → its rr/wrr position, shared by all CPUs.
    pub rr_cursors: Array<MapData, u64>,
    pub real_stats: PerCpuArray<MapData, RealStats>,
    pub counters: PerCpuArray<MapData, u64>,
    /// NAT reply 5-tuple → the client's flow and the way back (written by the fast path only).
    pub nat_replies: HashMap<MapData, FlowKey, NatReply>,
    /// VIP (16-byte form) → its number of frontends (written by `ops` only).
    pub vips: HashMap<MapData, [u8; 16], u32>,
    /// The address filter's words (see `lb_common::addr_filter`; written by `store` only).
    pub addr_filter: Array<MapData, u64>,
    /// Half-open TCP connections (LRU, written by the fast path; the sweep removes idle ones).
    pub half_open: HashMap<MapData, FlowKey, ConnEntry>,
    /// The attached NICs' MACs and their further unicast MACs (see `l2`; not pinned).
    pub ingress_macs: Array<MapData, IngressMac>,
    pub extra_macs: HashMap<MapData, IngressMac, u8>,
    /// Descriptors of the maps the controller writes in batches (aya 0.14 has no batch
    /// operations: `store` issues them with bpf(2)).
    pub(crate) fds: BatchFds,
    /// The controller's model of what it wrote, restored from these maps at the first
    /// change (see `ops`).
    pub(crate) model: Option<crate::model::Model>,
    /// Nesting of `ops::batch`: inside one, changes are committed at its end.
    pub(crate) batch_depth: u32,
    /// Map entries the last commit wrote (see `store::Writes::entries`).
    pub(crate) last_commit_entries: usize,
}

pub(crate) struct BatchFds {
    pub services: OwnedFd,
    pub service_info: OwnedFd,
    pub pool: OwnedFd,
    pub reals: OwnedFd,
    pub vips: OwnedFd,
    pub addr_filter: OwnedFd,
    pub real_load: OwnedFd,
    pub real_stats: OwnedFd,
    pub rr_cursors: OwnedFd,
}

/// A duplicate of a map's descriptor, taken before aya's typed wrapper hides it.
fn dup_fd(map: &Map) -> Result<OwnedFd> {
    let data = match map {
        Map::Array(d) | Map::HashMap(d) | Map::PerCpuArray(d) => d,
        _ => bail!("not an array or hash map"),
    };
    Ok(data.fd().as_fd().try_clone_to_owned()?)
}

impl Maps {
    /// Takes the maps out of a freshly loaded object and writes the default settings
    /// (IPVS's timeouts); with `pin_dir`, pins each map there first.
    pub fn take(ebpf: &mut Ebpf, pin_dir: Option<&Path>) -> Result<Self> {
        let mut take = |name: &str| -> Result<Map> {
            let map = ebpf.take_map(name).with_context(|| format!("eBPF object has no map {name}"))?;
            if let Some(dir) = pin_dir {
                map.pin(dir.join(name)).with_context(|| format!("pinning {name} in {}", dir.display()))?;
            }
            Ok(map)
        };
        let mut maps = Self::from_maps(&mut take)?;
        maps.settings.set(0, Settings::default(), 0)?;
        Ok(maps)
    }

    /// Takes the maps out of an object loaded against existing pins (their contents and
    /// settings are kept).
    pub fn take_existing(ebpf: &mut Ebpf) -> Result<Self> {
        let mut take = |name: &str| ebpf.take_map(name).with_context(|| format!("eBPF object has no map {name}"));
        Self::from_maps(&mut take)
    }

    fn from_maps(get: &mut dyn FnMut(&str) -> Result<Map>) -> Result<Self> {
        let (services, service_info, pool, reals, vips) =
            (get(map_names::SERVICES)?, get(map_names::SERVICE_INFO)?, get(map_names::POOL)?, get(map_names::REALS)?, get(map_names::VIPS)?);
        let (real_load, real_stats, rr_cursors, addr_filter) =
            (get(map_names::REAL_LOAD)?, get(map_names::REAL_STATS)?, get(map_names::RR_CURSORS)?, get(map_names::ADDR_FILTER)?);
        let fds = BatchFds {
            services: dup_fd(&services)?,
            service_info: dup_fd(&service_info)?,
            pool: dup_fd(&pool)?,
            reals: dup_fd(&reals)?,
            vips: dup_fd(&vips)?,
            addr_filter: dup_fd(&addr_filter)?,
            real_load: dup_fd(&real_load)?,
            real_stats: dup_fd(&real_stats)?,
            rr_cursors: dup_fd(&rr_cursors)?,
        };
        Ok(Self {
            services: services.try_into()?,
            service_info: service_info.try_into()?,
            pool: pool.try_into()?,
            reals: reals.try_into()?,
            real_load: real_load.try_into()?,
            conns: get(map_names::CONNS)?.try_into()?,
            persist: get(map_names::PERSIST)?.try_into()?,
            settings: get(map_names::SETTINGS)?.try_into()?,
            rr_cursors: rr_cursors.try_into()?,
            real_stats: real_stats.try_into()?,
            counters: get(map_names::COUNTERS)?.try_into()?,
            nat_replies: get(map_names::NAT_REPLIES)?.try_into()?,
            vips: vips.try_into()?,
            addr_filter: addr_filter.try_into()?,
            fds,
            model: None,
            batch_depth: 0,
            last_commit_entries: 0,
            half_open: get(map_names::HALF_OPEN)?.try_into()?,
            ingress_macs: get(map_names::INGRESS_MACS)?.try_into()?,
            extra_macs: get(map_names::EXTRA_MACS)?.try_into()?,
        })
    }
}

impl Maps {
    /// Map entries the controller's last commit wrote or deleted (a diff's size).
    pub fn last_commit_entries(&self) -> usize {
        self.last_commit_entries
    }
}

/// Removes the pins `Maps::take` made, and the directory if it is then empty.
pub fn unpin_all(dir: &Path) {
    for name in map_names::ALL {
        let _ = fs::remove_file(dir.join(name));
    }
    let _ = fs::remove_dir(dir);
}

/// The mount namespace of process `pid` ("self" for this one), as (device, inode); None
/// if the kernel does not let us look (no ptrace access to it).
fn mount_ns(pid: &str) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(format!("/proc/{pid}/ns/mnt")).ok().map(|m| (m.dev(), m.ino()))
}

/// This process's ancestors, nearest first, ending with PID 1.
fn ancestors() -> Vec<u32> {
    let parent_of = |pid: u32| -> Option<u32> {
        // /proc/PID/stat: "pid (comm) state ppid …"; comm may hold spaces and parentheses.
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
    };
    let mut chain = Vec::new();
    let mut pid = std::os::unix::process::parent_id();
    while pid > 1 && chain.len() < 64 {
        chain.push(pid);
        pid = parent_of(pid).unwrap_or(0);
    }
    chain.push(1);
    chain
}

/// Whether this process has a mount namespace other than the host's (`ip netns exec`,
/// `unshare -m`): a filesystem it mounts is gone when its last process exits. The host's
/// is PID 1's, or, where PID 1 is out of reach (a container), that of any ancestor.
pub fn in_own_mount_namespace() -> bool {
    let Some(mine) = mount_ns("self") else { return false };
    match mount_ns("1") {
        Some(init) => mine != init,
        None => ancestors().iter().any(|pid| mount_ns(&pid.to_string()).is_some_and(|ns| ns != mine)),
    }
}

/// The host's /sys/fs/bpf as a path usable from a mount namespace of our own (where
/// `ip netns exec` runs a command): through the root of the nearest ancestor process in
/// another mount namespace (the shell that ran `ip netns exec`), else of PID 1 — if
/// bpffs is mounted there and the kernel lets us look (ptrace access to that process).
pub fn host_bpffs() -> Option<std::path::PathBuf> {
    let mine = mount_ns("self")?;
    ancestors().into_iter().find_map(|pid| {
        let theirs = mount_ns(&pid.to_string())?;
        let bpffs = Path::new("/proc").join(pid.to_string()).join("root/sys/fs/bpf");
        (theirs != mine && is_bpffs(&bpffs)).then_some(bpffs)
    })
}

/// Makes sure bpffs is mounted at /sys/fs/bpf and `dir` exists on it.
pub fn prepare_pin_dir(dir: &Path) -> Result<()> {
    let bpffs = Path::new("/sys/fs/bpf");
    if dir.starts_with(bpffs) && !is_bpffs(bpffs) {
        if in_own_mount_namespace() {
            tracing::warn!(
                "/sys/fs/bpf is not the host's BPF filesystem in this mount namespace (`ip netns exec` makes one \
                 per command): what is pinned in {} goes when this process exits; start xlb with \
                 `nsenter --net=/run/netns/NAME` to keep the host's mounts",
                dir.display()
            );
        }
        fs::create_dir_all(bpffs).ok();
        let status = std::process::Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]).status()?;
        if !status.success() {
            bail!("/sys/fs/bpf is not a BPF filesystem and `mount -t bpf bpf /sys/fs/bpf` failed");
        }
    }
    fs::create_dir_all(dir).with_context(|| format!("creating pin directory {}", dir.display()))?;
    Ok(())
}

/// Whether `path` is (the root of or inside) a BPF filesystem.
pub fn is_bpffs(path: &Path) -> bool {
    const BPF_FS_MAGIC: i64 = 0xcafe4a11;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else { return false };
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC }
}
