//! `xlb realserver`: prepares a real server as the seeds' LVS-DR real-server script does —
//! each VIP as a /32 (IPv6: /128) on `lo` (brought up), ARP for it neither answered
//! (`arp_ignore=1`) nor announced (`arp_announce=2`) for `all` and `lo` — but
//! idempotently and reversibly. (IPv6 needs no such sysctl: the kernel answers neighbour
//! solicitations only for addresses on the interface asked.)
//!
//! Two lines of that script are left out on purpose:
//! - `route add -host VIP dev lo:10`: adding the /32 makes the kernel put a `local` route
//!   for it in the local table, which is looked up before the main table, so the extra
//!   host route changes nothing. `status` checks that the VIP routes locally instead.
//! - `eth0/arp_ignore`, `eth0/arp_announce`: the kernel uses the larger of `all` and the
//!   interface's own value for both, so `all` covers every NIC, also ones added later.
//!
//! Setup records the sysctl values it found and the addresses it added in a state file
//! under /run/xlb, one per network namespace, so that teardown puts back exactly that.
//!
//! TUN mode (`--mode tun --iface NIC`) also attaches xlb's IPIP decapsulator to the NICs
//! the director's tunnelled packets arrive on (see `decap`): the kernel needs no ipip
//! module. Teardown of the last VIP detaches it.
use std::{
    collections::BTreeMap,
    fmt, fs,
    io::ErrorKind,
    net::IpAddr,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::fs::MetadataExt,
    },
    path::{Path, PathBuf},
};

use crate::listing::Output;
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::{decap, rtnl};

/// Where setup keeps what teardown must restore (emptied at boot, like what it records).
pub const STATE_DIR: &str = "/run/xlb";

#[derive(clap::Subcommand)]
pub enum RealserverCmd {
    /// Put the VIPs on lo and suppress ARP for them (running it again changes nothing).
    Setup {
        #[command(flatten)]
        target: Target,
    },
    /// Undo setup: remove the addresses it added; restore the ARP sysctls once no VIP is left.
    Teardown {
        /// VIP to tear down (repeat, or separate with commas; default: every VIP set up here).
        #[arg(long = "vip", value_name = "VIP", value_delimiter = ',')]
        vips: Vec<IpAddr>,
    },
    /// Check every part of the setup; exits non-zero if any is missing.
    Status {
        #[command(flatten)]
        target: Target,
    },
}

#[derive(clap::Args)]
pub struct Target {
    /// Virtual IP this real server serves (repeat, or separate with commas).
    #[arg(long = "vip", value_name = "VIP", required = true, value_delimiter = ',')]
    pub vips: Vec<IpAddr>,
    /// How the director forwards to this real server.
    #[arg(long, value_enum, default_value = "dr")]
    pub mode: Mode,
    /// TUN: a NIC the director's IPIP packets arrive on, to attach the decapsulator to
    /// (repeat, or separate with commas; setup adds to those already attached).
    #[arg(long = "iface", value_name = "IFACE", value_delimiter = ',', env = "XLB_DECAP_IFACE")]
    pub ifaces: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Direct routing: the director rewrites the MAC address.
    Dr,
    /// IP-in-IP tunnel: the director encapsulates; xlb's XDP decapsulator unwraps.
    Tun,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Mode::Dr => "DR",
            Mode::Tun => "TUN",
        })
    }
}

/// Runs one `xlb realserver` subcommand; `output` is the global --output.
pub fn command(cmd: RealserverCmd, output: Output) -> Result<()> {
    match cmd {
        RealserverCmd::Setup { target } => setup(&target.vips, target.mode, &target.ifaces),
        RealserverCmd::Teardown { vips } => teardown(&vips),
        RealserverCmd::Status { target } => {
            let status = status(&target.vips, target.mode)?;
            match output {
                Output::Text => print!("{}", status.text()),
                Output::Json => println!("{}", serde_json::to_string_pretty(&status)?),
            }
            let failed = status.checks.iter().filter(|c| !c.ok).count();
            if failed > 0 {
                bail!(
                    "this real server is not set up for {}: {failed} of {} checks failed",
                    status.mode,
                    status.checks.len()
                );
            }
            Ok(())
        }
    }
}

/// One ARP sysctl of the seeds' script and the value a real server needs.
struct ArpSysctl {
    iface: &'static str,
    name: &'static str,
    value: &'static str,
}

const ARP_SYSCTLS: [ArpSysctl; 4] = [
    ArpSysctl { iface: "all", name: "arp_ignore", value: "1" },
    ArpSysctl { iface: "all", name: "arp_announce", value: "2" },
    ArpSysctl { iface: "lo", name: "arp_ignore", value: "1" },
    ArpSysctl { iface: "lo", name: "arp_announce", value: "2" },
];

impl ArpSysctl {
    fn key(&self) -> String {
        format!("net.ipv4.conf.{}.{}", self.iface, self.name)
    }

    /// /proc/sys/net belongs to the network namespace of the process opening it: ours.
    fn path(&self) -> PathBuf {
        Path::new("/proc/sys/net/ipv4/conf").join(self.iface).join(self.name)
    }

    fn read(&self) -> Result<String> {
        let path = self.path();
        let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        Ok(text.trim().to_string())
    }

    fn write(&self, value: &str) -> Result<()> {
        let path = self.path();
        fs::write(&path, format!("{value}\n")).map_err(|e| {
            let hint = if e.kind() == ErrorKind::PermissionDenied { " (it needs root)" } else { "" };
            anyhow::anyhow!("setting {} to {value} (writing {}): {e}{hint}", self.key(), path.display())
        })
    }
}

/// The VIPs given, each once, refusing addresses no VIP can be.
fn checked_vips(vips: &[IpAddr]) -> Result<Vec<IpAddr>> {
    let mut checked = Vec::new();
    for &vip in vips {
        let why = if vip.is_unspecified() {
            "the unspecified address"
        } else if vip.is_loopback() {
            if vip.is_ipv4() { "a loopback address (127.0.0.0/8)" } else { "the loopback address" }
        } else if vip.is_multicast() {
            "a multicast address"
        } else if matches!(vip, IpAddr::V4(v) if v.is_broadcast()) {
            "the broadcast address"
        } else if matches!(vip, IpAddr::V6(v) if v.is_unicast_link_local()) {
            "a link-local address (fe80::/10)"
        } else if matches!(vip, IpAddr::V6(v) if v.to_ipv4_mapped().is_some()) {
            "IPv4-mapped: give the IPv4 address"
        } else {
            if !checked.contains(&vip) {
                checked.push(vip);
            }
            continue;
        };
        bail!("{vip} cannot be a VIP: it is {why}");
    }
    Ok(checked)
}

/// The addresses of this namespace's interfaces (rtnetlink, as `ip addr show`).
struct Addresses {
    lo_up: bool,
    /// (interface, address, prefix length)
    addrs: Vec<(String, IpAddr, u8)>,
}

impl Addresses {
    fn read() -> Result<Self> {
        let lo_up = rtnl::links()?.iter().any(|(_, name, up)| name == "lo" && *up);
        let addrs = rtnl::addresses()?.into_iter().map(|a| (a.ifname, a.address, a.prefix_len)).collect();
        Ok(Self { lo_up, addrs })
    }

    fn on_lo_as_host(&self, vip: IpAddr) -> bool {
        self.addrs.iter().any(|(iface, addr, prefix)| iface == "lo" && *addr == vip && *prefix == host_prefix(vip))
    }

    /// Where `vip` is that a real server must not have it: on lo with a wider prefix
    /// (that makes the whole subnet local) or on any other interface (where ARP answers it).
    fn misplaced(&self, vip: IpAddr) -> Vec<String> {
        self.addrs
            .iter()
            .filter(|(iface, addr, prefix)| *addr == vip && (iface != "lo" || *prefix != host_prefix(vip)))
            .map(|(iface, addr, prefix)| format!("{addr}/{prefix} on {iface}"))
            .collect()
    }
}

/// The prefix length of a host address: 32, or 128 for IPv6.
fn host_prefix(vip: IpAddr) -> u8 {
    if vip.is_ipv4() { 32 } else { 128 }
}

/// "VIP/32" or "VIP/128".
fn host(vip: IpAddr) -> String {
    format!("{vip}/{}", host_prefix(vip))
}

/// The route type `ip route get` reports for `vip` ("local" when it is delivered here).
fn route_type(vip: IpAddr) -> String {
    rtnl::route_type(vip)
}

/// What setup changed, so that teardown can put it back.
#[derive(Default, Serialize, Deserialize)]
struct State {
    /// Sysctl key → its value before the first setup.
    previous_sysctls: BTreeMap<String, String>,
    vips: Vec<VipRecord>,
    /// NICs the IPIP decapsulator is attached to (TUN mode).
    #[serde(default)]
    decap_ifaces: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct VipRecord {
    vip: IpAddr,
    /// Whether setup added the address; one that was there before stays after teardown.
    added: bool,
}

/// This namespace's state file, locked against concurrent `xlb realserver` runs.
struct StateFile {
    path: PathBuf,
    _lock: fs::File,
}

impl StateFile {
    fn lock() -> Result<Self> {
        fs::create_dir_all(STATE_DIR).with_context(|| format!("creating {STATE_DIR}"))?;
        let dir = fs::File::open(STATE_DIR).with_context(|| format!("opening {STATE_DIR}"))?;
        dir.lock().with_context(|| format!("locking {STATE_DIR}"))?;
        let path = Path::new(STATE_DIR).join(format!("realserver-{}.json", netns_key()?));
        Ok(Self { path, _lock: dir })
    }

    fn load(&self) -> Result<Option<State>> {
        match fs::read_to_string(&self.path) {
            Ok(text) => serde_json::from_str(&text).map(Some).with_context(|| format!("reading {}", self.path.display())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", self.path.display())),
        }
    }

    /// Writes a whole new file and renames it over the old one: never half a state.
    fn save(&self, state: &State) -> Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        fs::write(&tmp, serde_json::to_string_pretty(state)?).with_context(|| format!("writing {}", tmp.display()))?;
        fs::rename(&tmp, &self.path).with_context(|| format!("renaming {} to {}", tmp.display(), self.path.display()))
    }

    fn remove(&self) -> Result<()> {
        fs::remove_file(&self.path).with_context(|| format!("removing {}", self.path.display()))
    }
}

/// Names this network namespace for its state file. /run/xlb is shared by every
/// namespace on the host (nsenter --net keeps the mounts). The netns cookie is never
/// reused while the machine is up, unlike the namespace's inode number; kernels before
/// 5.14 have no cookie, and there the inode is the best name available.
pub(crate) fn netns_key() -> Result<String> {
    if let Some(cookie) = netns_cookie() {
        return Ok(format!("netns-{cookie}"));
    }
    let inode = fs::metadata("/proc/self/ns/net").context("reading /proc/self/ns/net")?.ino();
    Ok(format!("netns-inode-{inode}"))
}

fn netns_cookie() -> Option<u64> {
    // Any socket lives in the namespace of the process that made it.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return None;
    }
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut cookie = 0u64;
    let mut len = size_of::<u64>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&raw mut cookie).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(cookie)
}

fn comma_list(vips: &[IpAddr]) -> String {
    vips.iter().map(IpAddr::to_string).collect::<Vec<_>>().join(", ")
}

pub fn setup(vips: &[IpAddr], mode: Mode, ifaces: &[String]) -> Result<()> {
    let vips = checked_vips(vips)?;
    if mode == Mode::Dr && !ifaces.is_empty() {
        bail!("--iface names the NICs of TUN mode's decapsulator: DR needs none");
    }
    for iface in ifaces {
        crate::rtnl::ifindex(iface).with_context(|| format!("--iface {iface}"))?;
    }
    if mode == Mode::Tun {
        // Refused before anything changes when the decapsulator could not stay attached.
        decap::pin_root()?;
    }
    let addresses = Addresses::read()?;
    for &vip in &vips {
        let misplaced = addresses.misplaced(vip);
        if !misplaced.is_empty() {
            bail!(
                "{vip} is already configured as {}: a real server must hold it only as {} on lo \
                 (elsewhere it answers ARP for it or makes a whole subnet local); remove it with \
                 `ip addr del ADDRESS/PREFIX dev IFACE` and run setup again",
                misplaced.join(", "),
                host(vip)
            );
        }
    }

    let state_file = StateFile::lock()?;
    let mut state = state_file.load()?.unwrap_or_default();
    let mut to_add = Vec::new();
    for &vip in &vips {
        let pos = match state.vips.iter().position(|r| r.vip == vip) {
            Some(pos) => pos,
            None => {
                state.vips.push(VipRecord { vip, added: false });
                state.vips.len() - 1
            }
        };
        if !addresses.on_lo_as_host(vip) {
            state.vips[pos].added = true;
            to_add.push(vip);
        }
    }
    if mode == Mode::Tun {
        for iface in ifaces {
            if !state.decap_ifaces.contains(iface) {
                state.decap_ifaces.push(iface.clone());
            }
        }
        if state.decap_ifaces.is_empty() {
            bail!("TUN mode needs --iface: the NIC(s) the director's IPIP packets arrive on");
        }
    }
    let mut to_change = Vec::new();
    for sysctl in &ARP_SYSCTLS {
        let current = sysctl.read()?;
        // Only the first setup's values count: they are what this host had.
        state.previous_sysctls.entry(sysctl.key()).or_insert_with(|| current.clone());
        if current != sysctl.value {
            to_change.push((sysctl, current));
        }
    }
    // Saved before anything changes, so that teardown also undoes a setup that failed half way.
    state_file.save(&state)?;

    if !addresses.lo_up {
        rtnl::set_up(rtnl::ifindex("lo")?).context("bringing lo up")?;
        info!("brought lo up");
    }
    for vip in to_add {
        rtnl::add_address(rtnl::ifindex("lo")?, vip, host_prefix(vip)).with_context(|| format!("adding {} to lo", host(vip)))?;
        info!("added {} to lo", host(vip));
    }
    for (sysctl, old) in to_change {
        sysctl.write(sysctl.value)?;
        info!("{}: {old} -> {}", sysctl.key(), sysctl.value);
    }
    if mode == Mode::Tun {
        setup_ipip_decapsulator(&state)?;
        println!(
            "real server set up for TUN: {} on lo, ARP for them suppressed, IPIP decapsulated on {}",
            comma_list(&vips),
            state.decap_ifaces.join(", ")
        );
    } else {
        println!("real server set up for {mode}: {} on lo, ARP for them suppressed", comma_list(&vips));
    }
    Ok(())
}

/// TUN mode's hook: this real server decapsulates the director's IPIP packets for
/// every VIP set up here, on the recorded NICs.
fn setup_ipip_decapsulator(state: &State) -> Result<()> {
    let vips: Vec<IpAddr> = state.vips.iter().map(|r| r.vip).collect();
    let ifaces = state.decap_ifaces.iter().cloned().collect();
    decap::ensure(&decap::pin_dir(&netns_key()?)?, &vips, &ifaces)
}

/// TUN mode's status: the decapsulator attached to NICs, and serving each VIP.
fn check_ipip_decapsulator(vips: &[IpAddr]) -> Result<Vec<Check>> {
    let dir = decap::pin_dir(&netns_key()?)?;
    let ifaces = decap::attached(&dir)?;
    if ifaces.is_empty() {
        return Ok(vec![Check { check: "IPIP decapsulator attached".into(), ok: false, found: "not attached".into() }]);
    }
    let mut checks = Vec::new();
    for iface in &ifaces {
        let program = xdp_program_on(iface);
        checks.push(Check {
            check: format!("IPIP decapsulator on {iface}"),
            ok: program == crate::loader::DECAP_PROGRAM,
            found: program,
        });
    }
    let served = decap::vips(&dir)?;
    for vip in vips {
        let ok = served.contains(vip);
        checks.push(Check {
            check: format!("{vip} decapsulated"),
            ok,
            found: if ok { "yes" } else { "no" }.into(),
        });
    }
    Ok(checks)
}

/// The name of the XDP program on `iface` (rtnetlink's IFLA_XDP, as `ip link show`),
/// or what is there instead.
fn xdp_program_on(iface: &str) -> String {
    let info = match rtnl::ifindex(iface).and_then(|i| rtnl::link_info(i, None)) {
        Ok(info) => info,
        Err(e) => return format!("{e:#}"),
    };
    let Some(id) = info.xdp_prog_id else { return "no XDP program".into() };
    aya::programs::loaded_programs()
        .flatten()
        .find(|p| p.id() == id)
        .and_then(|p| p.name_as_str().map(String::from))
        .unwrap_or_else(|| format!("XDP program id {id}"))
}

/// Undoes setup for `vips` (all recorded VIPs if empty).
pub fn teardown(vips: &[IpAddr]) -> Result<()> {
    let state_file = StateFile::lock()?;
    let Some(mut state) = state_file.load()? else {
        println!("nothing to tear down: no `xlb realserver setup` recorded for this network namespace");
        return Ok(());
    };
    let selected: Vec<IpAddr> = if vips.is_empty() { state.vips.iter().map(|r| r.vip).collect() } else { vips.to_vec() };
    let addresses = Addresses::read()?;
    for vip in &selected {
        let Some(pos) = state.vips.iter().position(|r| r.vip == *vip) else {
            warn!("{vip} was not set up by `xlb realserver setup` in this network namespace; left as it is");
            continue;
        };
        let record = state.vips.remove(pos);
        if record.added && addresses.on_lo_as_host(record.vip) {
            rtnl::del_address(rtnl::ifindex("lo")?, *vip, host_prefix(*vip))
                .with_context(|| format!("removing {} from lo", host(*vip)))?;
            info!("removed {} from lo", host(*vip));
        } else if !record.added {
            info!("kept {} on lo: it was there before setup", host(*vip));
        }
        state_file.save(&state)?;
    }
    if !state.vips.is_empty() {
        if !state.decap_ifaces.is_empty() {
            setup_ipip_decapsulator(&state)?;
        }
        let left: Vec<IpAddr> = state.vips.iter().map(|r| r.vip).collect();
        println!("ARP suppression kept: {} still set up", comma_list(&left));
        return Ok(());
    }
    if !state.decap_ifaces.is_empty() {
        decap::remove(&decap::pin_dir(&netns_key()?)?)?;
        state.decap_ifaces.clear();
        state_file.save(&state)?;
    }
    // lo stays up: it was either up before or is needed by everything else anyway.
    for sysctl in &ARP_SYSCTLS {
        if let Some(previous) = state.previous_sysctls.get(&sysctl.key()) {
            sysctl.write(previous)?;
            info!("restored {} to {previous}", sysctl.key());
        }
    }
    state_file.remove()?;
    println!("real server torn down: addresses removed, ARP sysctls restored");
    Ok(())
}

#[derive(Serialize)]
pub struct Status {
    pub mode: Mode,
    pub vips: Vec<IpAddr>,
    pub complete: bool,
    pub checks: Vec<Check>,
    /// TUN: the decapsulator's counters (decapsulated, pass_not_for_vip), when attached.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub decap_counters: BTreeMap<&'static str, u64>,
}

#[derive(Serialize)]
pub struct Check {
    pub check: String,
    pub ok: bool,
    /// What was found (the wanted value when `ok`).
    pub found: String,
}

impl Status {
    pub fn text(&self) -> String {
        let mut text = String::new();
        for c in &self.checks {
            if c.ok {
                text += &format!("ok    {}\n", c.check);
            } else {
                text += &format!("FAIL  {}: found {}\n", c.check, c.found);
            }
        }
        for (name, value) in &self.decap_counters {
            text += &format!("decapsulator {name} {value}\n");
        }
        text
    }
}

/// Checks, without changing anything, every part of what setup does.
pub fn status(vips: &[IpAddr], mode: Mode) -> Result<Status> {
    let vips = checked_vips(vips)?;
    let addresses = Addresses::read()?;
    let mut checks = vec![Check {
        check: "lo is up".into(),
        ok: addresses.lo_up,
        found: if addresses.lo_up { "up" } else { "down" }.into(),
    }];
    for &vip in &vips {
        let on_lo = addresses.on_lo_as_host(vip);
        checks.push(Check {
            check: format!("{} on lo", host(vip)),
            ok: on_lo,
            found: if on_lo { "present" } else { "missing" }.into(),
        });
        let misplaced = addresses.misplaced(vip);
        checks.push(Check {
            check: format!("{vip} held nowhere else"),
            ok: misplaced.is_empty(),
            found: if misplaced.is_empty() { "none".into() } else { misplaced.join(", ") },
        });
        let route = route_type(vip);
        checks.push(Check { check: format!("{vip} routes locally"), ok: route == "local", found: route });
    }
    for sysctl in &ARP_SYSCTLS {
        let value = sysctl.read()?;
        checks.push(Check { check: format!("{} = {}", sysctl.key(), sysctl.value), ok: value == sysctl.value, found: value });
    }
    let mut decap_counters = BTreeMap::new();
    if mode == Mode::Tun {
        checks.extend(check_ipip_decapsulator(&vips)?);
        let dir = decap::pin_dir(&netns_key()?)?;
        if !decap::attached(&dir)?.is_empty() {
            decap_counters = decap::counters(&dir)?.into_iter().collect();
        }
    }
    let complete = checks.iter().all(|c| c.ok);
    Ok(Status { mode, vips, complete, checks, decap_counters })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vips_are_checked_and_deduplicated() {
        let vip: IpAddr = "192.168.1.200".parse().unwrap();
        assert_eq!(checked_vips(&[vip, vip]).unwrap(), [vip]);
        let err = |v: &str| checked_vips(&[v.parse().unwrap()]).unwrap_err().to_string();
        assert_eq!(err("127.0.0.1"), "127.0.0.1 cannot be a VIP: it is a loopback address (127.0.0.0/8)");
        assert_eq!(err("0.0.0.0"), "0.0.0.0 cannot be a VIP: it is the unspecified address");
        assert_eq!(err("224.0.0.1"), "224.0.0.1 cannot be a VIP: it is a multicast address");
        assert_eq!(err("255.255.255.255"), "255.255.255.255 cannot be a VIP: it is the broadcast address");
        assert_eq!(err("::1"), "::1 cannot be a VIP: it is the loopback address");
        assert_eq!(err("fe80::1"), "fe80::1 cannot be a VIP: it is a link-local address (fe80::/10)");
        assert_eq!(err("::ffff:10.0.0.1"), "::ffff:10.0.0.1 cannot be a VIP: it is IPv4-mapped: give the IPv4 address");
        assert!(checked_vips(&["2001:db8::100".parse().unwrap()]).is_ok());
    }
}
