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

/// Makes sure bpffs is mounted at /sys/fs/bpf and `dir` exists on it.
pub fn prepare_pin_dir(dir: &Path) -> Result<()> {
    let bpffs = Path::new("/sys/fs/bpf");
    if dir.starts_with(bpffs) && !is_bpffs(bpffs) {
        fs::create_dir_all(bpffs).ok();
        let status = std::process::Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]).status()?;
        if !status.success() {
            bail!("/sys/fs/bpf is not a BPF filesystem and `mount -t bpf bpf /sys/fs/bpf` failed");
        }
    }
    fs::create_dir_all(dir).with_context(|| format!("creating pin directory {}", dir.display()))?;
    Ok(())
}

fn is_bpffs(path: &Path) -> bool {
    const BPF_FS_MAGIC: i64 = 0xcafe4a11;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else { return false };
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC }
}
