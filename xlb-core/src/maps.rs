//! Typed handles on the fast path's maps, either taken from a freshly loaded object
//! (and optionally pinned) or reopened from their pins by another `xlb` process.
use std::{fs, path::Path};

use anyhow::{Context, Result, bail};
use aya::{
    Ebpf,
    maps::{Array, HashMap, Map, MapData, PerCpuArray},
};
use lb_common::{
    ConnEntry, FlowKey, NatReply, PersistEntry, PersistKey, RealEntry, RealLoad, RealStats, ServiceInfo, ServiceKey, Settings,
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
        Ok(Self {
            services: get(map_names::SERVICES)?.try_into()?,
            service_info: get(map_names::SERVICE_INFO)?.try_into()?,
            pool: get(map_names::POOL)?.try_into()?,
            reals: get(map_names::REALS)?.try_into()?,
            real_load: get(map_names::REAL_LOAD)?.try_into()?,
            conns: get(map_names::CONNS)?.try_into()?,
            persist: get(map_names::PERSIST)?.try_into()?,
            settings: get(map_names::SETTINGS)?.try_into()?,
            rr_cursors: get(map_names::RR_CURSORS)?.try_into()?,
            real_stats: get(map_names::REAL_STATS)?.try_into()?,
            counters: get(map_names::COUNTERS)?.try_into()?,
            nat_replies: get(map_names::NAT_REPLIES)?.try_into()?,
            vips: get(map_names::VIPS)?.try_into()?,
        })
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
