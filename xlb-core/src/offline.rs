//! The fast path without its daemon. After SIGTERM (`systemctl stop xlb`), `kill -9` or
//! a crash, the XDP program keeps running from the links and maps the daemon pinned (see
//! `daemon`); `xlb stop` and `xlb status` must still work then, so they fall back to
//! reading and removing those pins when no daemon answers on the API socket.
use std::{
    fs,
    io::ErrorKind,
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use aya::maps::{HashMap, Map, MapData, PerCpuArray};
use lb_common::{ConnEntry, FlowKey, ServiceInfo, counter, map_names};
use serde::Serialize;

use crate::{api::Paths, loader, maps};

/// Why no daemon answers on `socket` (no socket file, or one a killed daemon left); None
/// when one answers, or when connecting failed otherwise (the API call then says how).
pub fn daemon_absent(socket: &Path) -> Option<String> {
    match UnixStream::connect(socket) {
        Ok(_) => None,
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused) => {
            Some(format!("{}: {e}", socket.display()))
        }
        Err(_) => None,
    }
}

/// The interfaces with a pinned balancer link (`link-IFACE`) in `pin_dir`.
pub fn pinned_links(pin_dir: &Path) -> Result<Vec<String>> {
    let entries = match fs::read_dir(pin_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", pin_dir.display())),
    };
    let mut ifaces = Vec::new();
    for entry in entries {
        if let Some(iface) = entry?.file_name().to_string_lossy().strip_prefix("link-") {
            ifaces.push(iface.to_string());
        }
    }
    ifaces.sort();
    Ok(ifaces)
}

/// What `xlb status` shows when no daemon runs: what the pins hold.
#[derive(Debug, Serialize)]
pub struct PinnedStatus {
    /// Always false here (the daemon's own status has its pid instead).
    pub daemon: bool,
    /// Why no daemon answered.
    pub reason: String,
    pub pin_dir: PathBuf,
    /// Interfaces the fast path stays attached to through pinned links.
    pub interfaces: Vec<String>,
    /// Services and connection entries in the pinned maps (None: no maps pinned).
    pub services: Option<usize>,
    pub connections: Option<usize>,
    pub state_file: PathBuf,
}

impl PinnedStatus {
    pub fn text(&self) -> String {
        let mut text = format!("daemon not running ({})\npin dir {}\n", self.reason, self.pin_dir.display());
        if self.interfaces.is_empty() {
            text += "interfaces - (no pinned link: the fast path is detached)\n";
        } else {
            text += &format!("interfaces {} (attached through pinned links)\n", self.interfaces.join(", "));
        }
        let count = |n: Option<usize>| n.map_or("-".to_string(), |n| n.to_string());
        text += &format!("state file {}\nservices {}\nconnections {}\n", self.state_file.display(), count(self.services), count(self.connections));
        if !self.interfaces.is_empty() {
            text += "`xlb daemon --iface …` takes the running fast path over (connections kept); `xlb stop` detaches it\n";
        }
        text
    }
}

fn pinned_hash<K: aya::Pod, V: aya::Pod>(pin_dir: &Path, name: &str) -> Result<Option<HashMap<MapData, K, V>>> {
    let path = pin_dir.join(name);
    if !path.exists() {
        return Ok(None);
    }
    let data = MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
    Ok(Some(Map::from_map_data(data)?.try_into()?))
}

/// The pins' view for `xlb status` without a daemon.
pub fn status(paths: &Paths, reason: String) -> Result<PinnedStatus> {
    let services = pinned_hash::<u32, ServiceInfo>(&paths.pin_dir, map_names::SERVICE_INFO)?.map(|m| m.keys().count());
    let connections = pinned_hash::<FlowKey, ConnEntry>(&paths.pin_dir, map_names::CONNS)?.map(|m| m.keys().count());
    Ok(PinnedStatus {
        daemon: false,
        reason,
        pin_dir: paths.pin_dir.clone(),
        interfaces: pinned_links(&paths.pin_dir)?,
        services,
        connections,
        state_file: paths.state.clone(),
    })
}

/// What `xlb stop` did without a daemon.
#[derive(Debug, Serialize)]
pub struct Stopped {
    pub daemon: bool,
    pub reason: String,
    pub pin_dir: PathBuf,
    /// Interfaces the fast path was detached from.
    pub detached: Vec<String>,
    /// Whether map pins were removed.
    pub maps_unpinned: bool,
    /// Interfaces where the balancer is still attached afterwards (another process holds
    /// its link), as far as this network namespace can see.
    pub still_attached: Vec<String>,
    /// What became of the VIPs the last daemon announced through BIRD (None: it
    /// announced none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bgp: Option<String>,
}

impl Stopped {
    pub fn text(&self) -> String {
        if self.detached.is_empty() && !self.maps_unpinned {
            return format!(
                "nothing to stop: no daemon answers ({}) and nothing is pinned in {}\n",
                self.reason,
                self.pin_dir.display()
            );
        }
        let mut text = format!("no daemon was running ({}); working from the pins in {}\n", self.reason, self.pin_dir.display());
        for iface in &self.detached {
            text += &format!("detached from {iface} (removed its pinned link)\n");
        }
        if self.maps_unpinned {
            text += "removed the maps' pins (the saved state stays for the next start)\n";
        }
        for iface in &self.still_attached {
            text += &format!("warning: xlb_balance is still attached to {iface}: another process holds its link\n");
        }
        if let Some(bgp) = &self.bgp {
            text += &format!("{bgp}\n");
        }
        text
    }
}

/// `xlb stop` with no daemon: removes the pinned links, which detaches the program (the
/// pin is the link's last reference once the daemon is gone), and the map pins.
pub fn stop(paths: &Paths, reason: String) -> Result<Stopped> {
    let pin_dir = &paths.pin_dir;
    let detached = pinned_links(pin_dir)?;
    for iface in &detached {
        let pin = pin_dir.join(format!("link-{iface}"));
        fs::remove_file(&pin).with_context(|| format!("removing the pinned link {}", pin.display()))?;
    }
    let maps_unpinned = map_names::ALL.iter().any(|name| pin_dir.join(name).exists());
    maps::unpin_all(pin_dir);
    // A killed daemon's socket file: nobody listens on it.
    let _ = fs::remove_file(&paths.socket);
    // bpffs releases an unlinked pin's reference after an RCU grace period: give the
    // kernel a moment before saying the program is still there.
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut still_attached: Vec<String> = detached.clone();
    while !still_attached.is_empty() && Instant::now() < deadline {
        // An interface this namespace cannot see (the daemon ran in another one) is not
        // reported: its lookup fails.
        still_attached.retain(|iface| matches!(loader::attached_mode(iface), Ok(Some(_))));
        if !still_attached.is_empty() {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // The VIPs the last daemon announced through BIRD go with the fast path.
    let bgp = crate::bgp::withdraw_recorded(paths).unwrap_or_else(|e| Some(format!("warning: {e:#}")));
    Ok(Stopped { daemon: false, reason, pin_dir: pin_dir.clone(), detached, maps_unpinned, still_attached, bgp })
}

/// The fast path's verdict counters read from their pin (summed over CPUs, in
/// `counter::NAMES` order), for `xlb counters` with no daemon; None if nothing is pinned.
pub fn counters(paths: &Paths) -> Result<Option<Vec<(&'static str, u64)>>> {
    let path = paths.pin_dir.join(map_names::COUNTERS);
    if !path.exists() {
        return Ok(None);
    }
    let data = MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
    let stats: PerCpuArray<MapData, u64> = Map::from_map_data(data)?.try_into()?;
    let all = (0..counter::COUNT).map(|i| Ok((counter::NAMES[i as usize], stats.get(&i, 0)?.iter().sum()))).collect::<Result<_>>()?;
    Ok(Some(all))
}
