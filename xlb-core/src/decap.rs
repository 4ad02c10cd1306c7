//! The TUN real server's decapsulator: the `xlb_decap` XDP program on the NICs the
//! director's tunnelled packets (IPIP, IPv6-in-IPv6) arrive on, decapsulating those
//! whose inner destination is one of this real server's VIPs. With it, LVS-TUN needs no
//! kernel tunnel support (no ipip or ip6_tunnel module, no tunl0).
//!
//! `xlb realserver setup --mode tun` attaches it and exits: the program stays attached
//! because its links are pinned in bpffs, with its VIP map, under
//! `/sys/fs/bpf/xlb-realserver/netns-*` (one directory per network namespace).
//! Teardown removes the pins, which detaches it.
//!
//! The pins must be in the host's bpffs. `ip netns exec` runs a command in a mount
//! namespace of its own with /sys remounted, where /sys/fs/bpf is no bpffs: one mounted
//! there would vanish with the command, and the pinned links (so the decapsulator) with
//! it. There the host's bpffs is reached through the root of a process outside that
//! mount namespace (`/proc/PID/root`, see `maps::host_bpffs`).
use std::{
    collections::BTreeSet,
    fs,
    net::IpAddr,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use aya::{
    maps::{HashMap, Map, MapData, PerCpuArray},
    programs::links::{FdLink, PinnedLink},
};
use lb_common::{addr, decap_counter, map_names};
use tracing::info;

use crate::{
    loader::{self, AttachMode},
    maps,
};

const BPFFS: &str = "/sys/fs/bpf";
const PIN_SUBDIR: &str = "xlb-realserver";
const LINK_PREFIX: &str = "link-";

/// The director's maps are not used here: loaded at one entry each, not at full size.
const SHRUNK: [(&str, u32); 10] = [
    (map_names::SERVICES, 1),
    (map_names::SERVICE_INFO, 1),
    (map_names::POOL, 1),
    (map_names::REALS, 1),
    (map_names::REAL_LOAD, 1),
    (map_names::CONNS, 1),
    (map_names::PERSIST, 1),
    (map_names::RR_CURSORS, 1),
    (map_names::REAL_STATS, 1),
    (map_names::NAT_REPLIES, 1),
];

/// The directory holding every namespace's decapsulator pins, in the host's bpffs.
/// Errors when pins made here would not outlive this command.
pub fn pin_root() -> Result<PathBuf> {
    let local = Path::new(BPFFS);
    if maps::is_bpffs(local) || !maps::in_own_mount_namespace() {
        // bpffs here (or the host's mount namespace, where setup mounts it): it stays.
        return Ok(local.join(PIN_SUBDIR));
    }
    if let Some(host) = maps::host_bpffs() {
        return Ok(host.join(PIN_SUBDIR));
    }
    bail!(
        "this command runs in a mount namespace of its own (as `ip netns exec` runs it) where {BPFFS} is not \
         the host's BPF filesystem, and no host bpffs at {BPFFS} can be reached: pins made here would vanish \
         when the command exits, and the decapsulator with them. Mount it on the host \
         (`mount -t bpf bpf {BPFFS}`), or run the command with `nsenter --net=/run/netns/NAME`, which keeps \
         the host's mounts"
    )
}

/// This network namespace's pin directory (`key` names the namespace).
pub fn pin_dir(key: &str) -> Result<PathBuf> {
    Ok(pin_root()?.join(key))
}

fn link_pin(dir: &Path, iface: &str) -> PathBuf {
    dir.join(format!("{LINK_PREFIX}{iface}"))
}

/// The interfaces the decapsulator is attached to, from its link pins.
pub fn attached(dir: &Path) -> Result<BTreeSet<String>> {
    let mut ifaces = BTreeSet::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ifaces),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Some(iface) = name.strip_prefix(LINK_PREFIX) {
            ifaces.insert(iface.to_string());
        }
    }
    Ok(ifaces)
}

fn vip_map(dir: &Path) -> Result<HashMap<MapData, [u8; 16], u8>> {
    let path = dir.join(map_names::DECAP_VIPS);
    let data = MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
    Ok(Map::from_map_data(data)?.try_into()?)
}

/// Makes the decapsulator serve exactly `vips` on exactly `ifaces`. With the same
/// interfaces as now only the VIP map changes; otherwise it is loaded afresh and
/// attached in place of the old one (a NIC takes one XDP program).
pub fn ensure(dir: &Path, vips: &[IpAddr], ifaces: &BTreeSet<String>) -> Result<()> {
    if ifaces.is_empty() {
        bail!("the decapsulator needs at least one interface");
    }
    if &attached(dir)? == ifaces {
        return sync_vips(&mut vip_map(dir)?, vips);
    }
    maps::prepare_pin_dir(dir)?;
    let mut ebpf = loader::load_with_sizes(&SHRUNK)?;
    let mut vip_map: HashMap<MapData, [u8; 16], u8> =
        ebpf.take_map(map_names::DECAP_VIPS).context("the XDP object has no DECAP_VIPS")?.try_into()?;
    sync_vips(&mut vip_map, vips)?;
    let stats = ebpf.take_map(map_names::DECAP_STATS).context("the XDP object has no DECAP_STATS")?;
    remove(dir)?;
    maps::prepare_pin_dir(dir)?;
    for iface in ifaces {
        let used = loader::attach(&mut ebpf, loader::DECAP_PROGRAM, iface, AttachMode::Auto)?;
        let link: FdLink = loader::xdp(&mut ebpf, loader::DECAP_PROGRAM)?
            .take_link(used.link)?
            .try_into()
            .context("this kernel attaches XDP by netlink only (before 5.9): the decapsulator cannot stay attached")?;
        link.pin(link_pin(dir, iface)).with_context(|| format!("pinning the decapsulator's link on {iface}"))?;
        info!("IPIP decapsulator attached to {iface} in {} mode", used.mode.name());
    }
    vip_map.pin(dir.join(map_names::DECAP_VIPS)).context("pinning DECAP_VIPS")?;
    stats.pin(dir.join(map_names::DECAP_STATS)).context("pinning DECAP_STATS")?;
    Ok(())
}

fn sync_vips(map: &mut HashMap<MapData, [u8; 16], u8>, vips: &[IpAddr]) -> Result<()> {
    let wanted: BTreeSet<[u8; 16]> = vips.iter().map(|&v| addr::from_ip(v)).collect();
    let present: BTreeSet<[u8; 16]> = map.keys().collect::<Result<_, _>>()?;
    for vip in present.difference(&wanted) {
        map.remove(vip)?;
    }
    for vip in wanted.difference(&present) {
        map.insert(vip, 1, 0)?;
    }
    Ok(())
}

/// Detaches the decapsulator (its link pins go) and removes its maps' pins.
pub fn remove(dir: &Path) -> Result<()> {
    for iface in attached(dir)? {
        let pinned = PinnedLink::from_pin(link_pin(dir, &iface)).with_context(|| format!("opening the link on {iface}"))?;
        drop(pinned.unpin().with_context(|| format!("removing the link pin of {iface}"))?);
        info!("IPIP decapsulator detached from {iface}");
    }
    for name in [map_names::DECAP_VIPS, map_names::DECAP_STATS] {
        match fs::remove_file(dir.join(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e).with_context(|| format!("removing {name}")),
            _ => {}
        }
    }
    // Each goes only if empty: other namespaces' decapsulators may still be pinned.
    let _ = fs::remove_dir(dir);
    if let Some(root) = dir.parent() {
        let _ = fs::remove_dir(root);
    }
    Ok(())
}

/// The VIPs the decapsulator serves now.
pub fn vips(dir: &Path) -> Result<BTreeSet<IpAddr>> {
    let map = vip_map(dir)?;
    Ok(map.keys().map(|k| k.map(addr::to_ip)).collect::<Result<_, _>>()?)
}

/// Its counters, summed over CPUs, in `decap_counter::NAMES` order.
pub fn counters(dir: &Path) -> Result<Vec<(&'static str, u64)>> {
    let path = dir.join(map_names::DECAP_STATS);
    let data = MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
    let stats: PerCpuArray<MapData, u64> = Map::from_map_data(data)?.try_into()?;
    (0..decap_counter::COUNT)
        .map(|i| Ok((decap_counter::NAMES[i as usize], stats.get(&i, 0)?.iter().sum())))
        .collect()
}
