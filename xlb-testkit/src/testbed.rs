//! LVS clusters in network namespaces, as in the seeds' notes, each host a namespace and
//! each LAN a bridge in a switch namespace. Used by `xlb-testkit demo` and the end-to-end tests.
//! Everything is removed on drop.
//!
//! - [`DrCluster`]: LVS-DR (or LVS-TUN) on one LAN: a client, a director holding the VIP,
//!   real servers with the VIP on lo and ARP suppressed (arp_ignore=1, arp_announce=2, by
//!   `xlb realserver setup`; for TUN also xlb's IPIP decapsulator on their NIC).
//! - [`NatCluster`]: LVS-NAT: the director is the real servers' gateway, with the VIP on
//!   its public NIC and the DIP on its private one (the seeds' two-NIC director), or both
//!   on one NIC (one arm).
//!
//! Both are dual-stack: every host has an IPv6 address beside its IPv4 one, and each
//! cluster an IPv6 VIP (the `*6` constants).
use std::{
    io::{BufRead, BufReader},
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::{Context, Result, bail};

pub mod vrrp;

use xlb_core::{
    loader::AttachMode,
    netns::{self, Netns},
    ops::ForwardMethod,
};

pub const SUBNET_PREFIX: &str = "10.99.0";
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 100);
pub const DIP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
pub const CIP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 10);
/// The standby director's own address ([`DrCluster::build_with_backup`]).
pub const DIP2: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 3);
/// Interface name of every host's NIC inside its namespace.
pub const NIC: &str = "eth0";
/// Port of the real servers' line echo servers.
pub const ECHO_PORT: u16 = 7000;

pub fn rip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 99, 0, 11 + i as u8)
}

/// The DR/TUN cluster's IPv6 side (fd00:99::/64).
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x99, 0, 0, 0, 0, 0, 0x100);
pub const DIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x99, 0, 0, 0, 0, 0, 0x2);
pub const CIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x99, 0, 0, 0, 0, 0, 0x10);
pub const DIP2_6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x99, 0, 0, 0, 0, 0, 0x3);

pub fn rip6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x99, 0, 0, 0, 0, 0, 0x11 + i as u16)
}

/// LVS-NAT addresses: the public side (clients, VIP) and the private one (DIP, reals).
pub const NAT_VIP: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 200);
pub const NAT_CIP: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 10);
/// The director's own public address.
pub const NAT_PUBLIC_IP: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 2);
/// The director's private address: the real servers' default gateway.
pub const NAT_DIP: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 1);
/// The port NAT real servers listen on (the service is VIP:80: port mapping).
pub const NAT_REAL_PORT: u16 = 8080;
/// The director's private NIC in the two-NIC layout.
pub const PRIVATE_NIC: &str = "eth1";

pub fn nat_rip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 98, 0, 11 + i as u8)
}

/// The NAT cluster's IPv6 side: public fd00:30::/64, private fd00:98::/64.
pub const NAT_VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x30, 0, 0, 0, 0, 0, 0x200);
pub const NAT_CIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x30, 0, 0, 0, 0, 0, 0x10);
pub const NAT_PUBLIC_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x30, 0, 0, 0, 0, 0, 0x2);
pub const NAT_DIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x98, 0, 0, 0, 0, 0, 0x1);

pub fn nat_rip6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x98, 0, 0, 0, 0, 0, 0x11 + i as u16)
}

pub struct RealServer {
    pub name: String,
    pub ip: Ipv4Addr,
    pub ip6: Ipv6Addr,
    pub ns: Netns,
}

/// A host's namespace. Duplicate address detection is off: the addresses the test bed
/// gives are unique, and a tentative address would hold traffic up for a second.
pub(crate) fn host(name: &str) -> Result<Netns> {
    let ns = Netns::create(name)?;
    ns.sysctl("net.ipv6.conf.all.accept_dad", "0")?;
    ns.sysctl("net.ipv6.conf.default.accept_dad", "0")?;
    Ok(ns)
}

/// Adds an IPv6 address (no duplicate address detection) to `nic` of `host`.
fn add_ip6(host: &Netns, nic: &str, cidr: &str) -> Result<()> {
    host.ip(&["-6", "addr", "add", cidr, "dev", nic, "nodad"]).map(drop)
}

/// A child process killed (and reaped) on drop.
pub struct ChildGuard {
    pub what: String,
    child: Child,
}

impl ChildGuard {
    /// The process's exit status if it has ended (reaping it), None while it runs.
    pub fn try_wait(&mut self) -> Result<Option<std::process::ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// Spawns `cmd` (stdin and stdout closed, stderr inherited) without waiting for it
    /// to say anything: for daemons that print nothing when ready (BIRD with `-f`).
    pub fn spawn(what: &str, mut cmd: Command) -> Result<Self> {
        let child =
            cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::inherit()).spawn().with_context(|| format!("starting {what}"))?;
        Ok(Self { what: what.to_string(), child })
    }

    /// Guards a child started elsewhere (one that prints no ready line).
    pub fn new(what: &str, child: Child) -> Self {
        Self { what: what.to_string(), child }
    }

    /// Whether the process is still running (not yet exited).
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL and reap.
    pub fn kill_hard(&mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Asks the process to stop with SIGINT and waits for it; returns its stdout rest.
    pub fn interrupt(mut self) -> Result<std::process::ExitStatus> {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        Ok(self.child.wait()?)
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
            for _ in 0..50 {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Spawns `cmd` with piped stdout and waits until it prints a line containing "ready".
/// Returns the guard and every line printed up to then.
pub fn spawn_until_ready(what: &str, mut cmd: Command, timeout: Duration) -> Result<(ChildGuard, Vec<String>)> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let stdout = child.stdout.take().context("child stdout")?;
    let guard = ChildGuard { what: what.to_string(), child };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                // Nobody listens any more: keep draining so the child never blocks on a full pipe.
                continue;
            }
        }
    });
    let mut lines = Vec::new();
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let ready = line.contains("ready");
                lines.push(line);
                if ready {
                    return Ok((guard, lines));
                }
            }
            Err(_) => bail!("{what} did not become ready within {timeout:?}; it printed: {lines:?}"),
        }
    }
}

/// Plugs `host`'s NIC `nic` into bridge `bridge` of `switch` through port `port`, with
/// address `cidr`.
pub(crate) fn plug(switch: &Netns, bridge: &str, host: &Netns, nic: &str, port: &str, cidr: &str) -> Result<()> {
    netns::veth(host, nic, switch, port)?;
    switch.ip(&["link", "set", port, "master", bridge])?;
    switch.ip(&["link", "set", port, "up"])?;
    host.ip(&["addr", "add", cidr, "dev", nic])?;
    host.ip(&["link", "set", nic, "up"])?;
    Ok(())
}

pub(crate) fn bridge(switch: &Netns, name: &str) -> Result<()> {
    switch.ip(&["link", "add", name, "type", "bridge"])?;
    switch.ip(&["link", "set", name, "up"]).map(drop)
}

/// The host sends frames with complete checksums. On veths a sender leaves TCP/UDP
/// checksums to "offload", which never happens once XDP sends the frame on (XDP_TX or a
/// redirect) or rewrites it; a real NIC fills them in before the wire.
pub(crate) fn checksums_in_software(host: &Netns) -> Result<()> {
    host.exec("ethtool", &["-K", NIC, "tx", "off"]).map(drop)
}

/// Starts real server `rs`'s HTTP server on `port` (it names itself).
fn start_http(rs: &RealServer, port: u16) -> Result<ChildGuard> {
    let mut cmd = rs.ns.command(crate::binary(crate::TESTKIT)?);
    // [::] takes IPv4 too (as IPv4-mapped): one server for both families.
    cmd.args(["http-serve", "--name", &rs.name, "--listen", &format!("[::]:{port}")]);
    spawn_until_ready(&format!("HTTP server on {}", rs.name), cmd, Duration::from_secs(10)).map(|(g, _)| g)
}

/// Starts, on every real server, an HTTP server on `port` and a line echo server on
/// ECHO_PORT (long-lived connections), both naming the server.
pub(crate) fn start_http_servers(reals: &[RealServer], port: u16, children: &mut Vec<ChildGuard>) -> Result<()> {
    for rs in reals {
        children.push(start_http(rs, port)?);
        let mut cmd = rs.ns.command(crate::binary(crate::TESTKIT)?);
        cmd.args(["echo-serve", "--name", &rs.name, "--listen", &format!("[::]:{ECHO_PORT}")]);
        let (guard, _) = spawn_until_ready(&format!("echo server on {}", rs.name), cmd, Duration::from_secs(10))?;
        children.push(guard);
    }
    Ok(())
}

/// The parts every cluster has: the `xlb` binary, the director's pins, the processes.
pub(crate) struct Director {
    pub(crate) xlb: PathBuf,
    pub(crate) pin_dir: PathBuf,
    pub(crate) mode: AttachMode,
    /// Processes (xlb run, HTTP servers, XDP stubs); stopped before the namespaces go.
    pub(crate) children: Vec<ChildGuard>,
    /// XDP stubs on the switch ports facing the director in native/auto mode (off: the
    /// seeds' hand-built lab, whose veth peers run nothing).
    pub(crate) peer_stubs: bool,
    /// `xlb run` in a process group of its own, so that a terminal's Ctrl-C (sent to the
    /// whole foreground group) reaches the demo but not the balancer it still asks.
    pub(crate) own_process_group: bool,
}

impl Director {
    pub(crate) fn command(&self, ns: &Netns, args: &[&str]) -> Command {
        let mut cmd = ns.command(&self.xlb);
        cmd.arg("--pin-dir").arg(&self.pin_dir).args(args);
        cmd
    }

    /// `xlb run` (or `how`: `daemon`) on `nics` of `director`, with XDP stubs on the
    /// switch ports facing them (native XDP_TX or a redirect into a veth is delivered only
    /// if its peer runs XDP too); the stubs stay when the balancer stops and starts again.
    pub(crate) fn start(&mut self, how: &str, director: &Netns, switch: &Netns, nics: &[&str], ports: &[&str], extra: &[&str]) -> Result<Vec<String>> {
        let stubs_running = self.children.iter().any(|c| c.what.starts_with("XDP pass stub"));
        if self.mode != AttachMode::Skb && self.peer_stubs && !stubs_running {
            for port in ports {
                let mut stub = switch.command(crate::binary(crate::TESTKIT)?);
                stub.args(["xdp-pass-stub", "--iface", port]);
                let (guard, _) = spawn_until_ready(&format!("XDP pass stub on switch port {port}"), stub, Duration::from_secs(20))?;
                self.children.push(guard);
            }
        }
        let mut args = vec![how];
        for nic in nics {
            args.extend(["--iface", nic]);
        }
        // Auto is xlb's default: left out, as a user would.
        if self.mode != AttachMode::Auto {
            args.extend(["--mode", self.mode.name()]);
        }
        args.extend_from_slice(extra);
        let mut cmd = self.command(director, &args);
        if self.own_process_group {
            std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        }
        let (guard, lines) = spawn_until_ready("xlb run on the director", cmd, Duration::from_secs(30))?;
        self.children.push(guard);
        Ok(lines)
    }

    pub(crate) fn stop(&mut self) -> Result<std::process::ExitStatus> {
        let pos = self.children.iter().position(|c| c.what.starts_with("xlb run")).context("xlb run is not running")?;
        self.children.remove(pos).interrupt()
    }

    /// SIGKILL to `xlb run`/`xlb daemon`: no cleanup of any kind.
    pub(crate) fn kill(&mut self) -> Result<()> {
        let pos = self.children.iter().position(|c| c.what.starts_with("xlb run")).context("xlb is not running")?;
        self.children.remove(pos).kill_hard()
    }

    fn signal(&self, signal: i32) -> Result<()> {
        let child = self.children.iter().find(|c| c.what.starts_with("xlb run")).context("xlb is not running")?;
        unsafe { libc::kill(child.pid() as i32, signal) };
        Ok(())
    }
}

impl Drop for Director {
    fn drop(&mut self) {
        // xlb first (`run` detaches and unpins), then the rest; a `daemon` leaves its
        // pins, so they go here, with its socket and saved state.
        while let Some(child) = self.children.pop() {
            drop(child);
        }
        xlb_core::daemon::detach_and_unpin(&self.pin_dir);
        let paths = xlb_core::api::Paths::for_pin_dir(&self.pin_dir);
        let _ = std::fs::remove_file(xlb_core::bgp::record_path(&paths));
        let _ = std::fs::remove_file(paths.state);
        let _ = std::fs::remove_file(paths.socket);
    }
}

/// A TCP connection from namespace `ns` to `to`, with a 5 s read timeout (the socket
/// belongs to `ns`, whichever thread uses it).
fn connect_in(ns: &Netns, to: std::net::SocketAddr) -> Result<std::net::TcpStream> {
    let file = std::fs::File::open(ns.path())?;
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).with_context(|| format!("entering {}", ns.name))?;
            let stream = std::net::TcpStream::connect_timeout(&to, Duration::from_secs(5))?;
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            Ok(stream)
        })
        .join()
        .expect("connect thread")
    })
}

/// `curl ARGS… URL` from `client`, on whatever CPU the scheduler picks. Returns the body.
fn curl(client: &Netns, url: &str, args: &[&str]) -> Result<String> {
    // --globoff: an IPv6 URL's brackets are brackets, not a pattern.
    let mut all = vec!["--globoff", "--silent", "--show-error", "--fail", "--max-time", "10"];
    all.extend_from_slice(args);
    all.push(url);
    client.exec("curl", &all)
}

/// `curl --data-binary @FILE URL/upload`: the real's answer (its name, the length and hash it received).
fn upload(client: &Netns, url: &str, file: &Path) -> Result<String> {
    let data = format!("@{}", file.display());
    curl(client, &format!("{url}/upload"), &["--data-binary", &data, "-H", "Content-Type: application/octet-stream"])
}

/// An LVS-DR cluster, or LVS-TUN on the same single LAN ([`DrCluster::build_tun`]).
pub struct DrCluster {
    pub id: String,
    pub xlb: PathBuf,
    pub pin_dir: PathBuf,
    pub mode: AttachMode,
    /// Route (DR) or Tunnel (TUN).
    pub method: ForwardMethod,
    director_processes: Director,
    /// The standby director of [`DrCluster::build_with_backup`] (None otherwise).
    pub backup: Option<StandbyDirector>,
    pub client: Netns,
    pub director: Netns,
    pub reals: Vec<RealServer>,
    pub switch: Netns,
}

/// A second director on the cluster's LAN (active/standby pairs: connection sync,
/// failover). It holds no VIP until [`DrCluster::move_vip_to_backup`] gives it the VIP.
pub struct StandbyDirector {
    /// Its `xlb daemon` and the XDP stub on its switch port (stopped first).
    processes: Director,
    pub ns: Netns,
    pub pin_dir: PathBuf,
}

impl DrCluster {
    /// Builds the namespaces and links and starts an HTTP server on each real server.
    /// `xlb` is the balancer's binary; the servers are `xlb-testkit`'s ([`crate::binary`]).
    pub fn build(xlb: &Path, real_count: usize, mode: AttachMode) -> Result<Self> {
        Self::build_with(xlb, real_count, mode, ForwardMethod::Route)
    }

    /// LVS-TUN: as DR, and each real server decapsulates IPIP with xlb's XDP decapsulator
    /// (this kernel has no ipip module).
    pub fn build_tun(xlb: &Path, real_count: usize, mode: AttachMode) -> Result<Self> {
        Self::build_with(xlb, real_count, mode, ForwardMethod::Tunnel)
    }

    fn build_with(xlb: &Path, real_count: usize, mode: AttachMode, method: ForwardMethod) -> Result<Self> {
        netns::require_root("the namespace cluster")?;
        let id = netns::run_id();
        let ns = |role: &str| host(&format!("xlb-{id}-{role}"));
        let switch = ns("sw")?;
        bridge(&switch, "br0")?;
        let client = ns("client")?;
        let director = ns("dir")?;
        let mut reals = Vec::new();
        for i in 0..real_count {
            let name = format!("rs{}", i + 1);
            reals.push(RealServer { ns: ns(&name)?, ip: rip(i), ip6: rip6(i), name });
        }
        let pin_dir = PathBuf::from(format!("/sys/fs/bpf/xlb-{id}"));
        let director_processes = Director { xlb: xlb.to_owned(), pin_dir: pin_dir.clone(), mode, children: Vec::new(), peer_stubs: true, own_process_group: false };
        let mut cluster =
            Self { pin_dir, id, xlb: xlb.to_owned(), mode, method, director_processes, backup: None, client, director, reals, switch };
        cluster.wire()?;
        start_http_servers(&cluster.reals, 80, &mut cluster.director_processes.children)?;
        Ok(cluster)
    }

    fn wire(&mut self) -> Result<()> {
        plug(&self.switch, "br0", &self.client, NIC, "p-client", &format!("{CIP}/24"))?;
        add_ip6(&self.client, NIC, &format!("{CIP6}/64"))?;
        checksums_in_software(&self.client)?;
        plug(&self.switch, "br0", &self.director, NIC, "p-dir", &format!("{DIP}/24"))?;
        add_ip6(&self.director, NIC, &format!("{DIP6}/64"))?;
        // The director holds the VIP and answers ARP for it (ifconfig ens33:0 VIP/32 in
        // the seeds); the IPv6 VIP likewise, answering neighbour solicitations.
        self.director.ip(&["addr", "add", &format!("{VIP}/32"), "dev", NIC])?;
        add_ip6(&self.director, NIC, &format!("{VIP6}/128"))?;
        for rs in &self.reals {
            plug_dr_real(&self.switch, rs, &self.xlb, self.method, &format!("{VIP},{VIP6}"))?;
        }
        Ok(())
    }

    /// A DR cluster with a standby director beside the active one ([`DIP2`], no VIP):
    /// its own pins, API socket and `xlb daemon` ([`DrCluster::start_backup_daemon`]).
    pub fn build_with_backup(xlb: &Path, real_count: usize, mode: AttachMode) -> Result<Self> {
        Self::build_pair(xlb, real_count, mode, ForwardMethod::Route)
    }

    /// [`DrCluster::build_with_backup`] for DR (`Route`) or TUN (`Tunnel`).
    pub fn build_pair(xlb: &Path, real_count: usize, mode: AttachMode, method: ForwardMethod) -> Result<Self> {
        let mut cluster = Self::build_with(xlb, real_count, mode, method)?;
        let ns = host(&format!("xlb-{}-dir2", cluster.id))?;
        plug(&cluster.switch, "br0", &ns, NIC, "p-dir2", &format!("{DIP2}/24"))?;
        add_ip6(&ns, NIC, &format!("{DIP2_6}/64"))?;
        let pin_dir = PathBuf::from(format!("/sys/fs/bpf/xlb-{}-b", cluster.id));
        let processes =
            Director { xlb: xlb.to_owned(), pin_dir: pin_dir.clone(), mode, children: Vec::new(), peer_stubs: true, own_process_group: false };
        cluster.backup = Some(StandbyDirector { processes, ns, pin_dir });
        Ok(cluster)
    }

    fn standby(&self) -> Result<&StandbyDirector> {
        self.backup.as_ref().context("the cluster has no standby director (DrCluster::build_with_backup)")
    }

    /// `xlb daemon` on the standby director's NIC, with `extra` arguments.
    pub fn start_backup_daemon(&mut self, extra: &[&str]) -> Result<Vec<String>> {
        let b = self.backup.as_mut().context("the cluster has no standby director (DrCluster::build_with_backup)")?;
        b.processes.start("daemon", &b.ns, &self.switch, &[NIC], &["p-dir2"], extra)
    }

    /// The standby director's `xlb` command line for `args`.
    pub fn backup_xlb_command(&self, args: &[&str]) -> Result<Command> {
        let b = self.standby()?;
        Ok(b.processes.command(&b.ns, args))
    }

    /// Runs an `xlb` command on the standby director and returns its stdout.
    pub fn backup_xlb(&self, args: &[&str]) -> Result<String> {
        netns::run(&mut self.backup_xlb_command(args)?)
    }

    /// Failover by hand (what keepalived's VRRP does): the VIPs leave the active
    /// director and go to the standby, and the client forgets the old director's MAC
    /// (keepalived's gratuitous ARP and unsolicited neighbour advertisements).
    pub fn move_vip_to_backup(&self) -> Result<()> {
        let b = self.standby()?;
        self.director.ip(&["addr", "del", &format!("{VIP}/32"), "dev", NIC])?;
        self.director.ip(&["-6", "addr", "del", &format!("{VIP6}/128"), "dev", NIC])?;
        b.ns.ip(&["addr", "add", &format!("{VIP}/32"), "dev", NIC])?;
        add_ip6(&b.ns, NIC, &format!("{VIP6}/128"))?;
        self.client.ip(&["neigh", "flush", "dev", NIC])?;
        self.client.ip(&["-6", "neigh", "flush", "dev", NIC])?;
        Ok(())
    }

    /// No XDP stubs on the switch ports: the director's veth peer runs nothing, as in the
    /// seeds' lab built by hand (call before starting the balancer).
    pub fn without_peer_xdp(&mut self) {
        self.director_processes.peer_stubs = false;
    }

    /// Starts the balancer in a process group of its own: a terminal's Ctrl-C then
    /// reaches only the caller, which still asks the balancer for its counters (the demo).
    pub fn balancer_outside_the_terminal_group(&mut self) {
        self.director_processes.own_process_group = true;
    }

    /// The director's `xlb` command line for `args` (what a user would type there).
    pub fn xlb_command(&self, args: &[&str]) -> Command {
        self.director_processes.command(&self.director, args)
    }

    /// Runs an `xlb` command on the director and returns its stdout.
    pub fn xlb(&self, args: &[&str]) -> Result<String> {
        netns::run(&mut self.xlb_command(args))
    }

    /// Starts `xlb run` on the director's NIC; returns the lines it printed (attach mode).
    pub fn start_balancer(&mut self) -> Result<Vec<String>> {
        self.start_balancer_with(&[])
    }

    /// `xlb run` with extra arguments (for example `--config FILE`).
    pub fn start_balancer_with(&mut self, extra: &[&str]) -> Result<Vec<String>> {
        self.director_processes.start("run", &self.director, &self.switch, &[NIC], &["p-dir"], extra)
    }

    /// `xlb daemon`: like `run`, but a stop signal leaves the fast path running.
    pub fn start_daemon(&mut self, extra: &[&str]) -> Result<Vec<String>> {
        self.director_processes.start("daemon", &self.director, &self.switch, &[NIC], &["p-dir"], extra)
    }

    /// Stops `xlb run` with SIGINT (as Ctrl-C would) and returns its exit status.
    pub fn stop_balancer(&mut self) -> Result<std::process::ExitStatus> {
        self.director_processes.stop()
    }

    /// Kills `xlb run`/`xlb daemon` with SIGKILL (no cleanup of any kind).
    pub fn kill_balancer(&mut self) -> Result<()> {
        self.director_processes.kill()
    }

    /// Sends `signal` to the running `xlb run`/`xlb daemon`.
    pub fn signal_balancer(&self, signal: i32) -> Result<()> {
        self.director_processes.signal(signal)
    }

    /// Connects another host's eth0 to the cluster's switch through port `port`.
    pub fn plug(&self, host: &Netns, port: &str, addr: Ipv4Addr) -> Result<()> {
        plug(&self.switch, "br0", host, NIC, port, &format!("{addr}/24"))
    }

    /// Stops real server `index`'s HTTP server (as if the service died).
    pub fn stop_http(&mut self, index: usize) -> Result<()> {
        let what = format!("HTTP server on {}", self.reals[index].name);
        let children = &mut self.director_processes.children;
        let pos = children.iter().position(|c| c.what == what).with_context(|| format!("{what} is not running"))?;
        children.remove(pos).kill_hard()
    }

    /// Starts real server `index`'s HTTP server again.
    pub fn start_http(&mut self, index: usize) -> Result<()> {
        let guard = start_http(&self.reals[index], 80)?;
        self.director_processes.children.push(guard);
        Ok(())
    }

    /// A TCP connection from the client namespace to VIP:`port` (the socket belongs to
    /// the client's namespace, whichever thread uses it).
    pub fn connect_from_client(&self, port: u16) -> Result<std::net::TcpStream> {
        connect_in(&self.client, (VIP, port).into())
    }

    /// Adds the round-robin service VIP:80 with every real server, by the cluster's method.
    pub fn configure_service(&self) -> Result<()> {
        let service = format!("{VIP}:80");
        self.xlb(&["service", "add", "tcp", &service, "--scheduler", "rr"])?;
        let flag = if self.method == ForwardMethod::Tunnel { "-i" } else { "-g" };
        for rs in &self.reals {
            self.xlb(&["real", "add", "tcp", &service, &rs.ip.to_string(), flag])?;
        }
        Ok(())
    }

    /// Adds the round-robin service [VIP6]:80 with every real server's IPv6 address.
    pub fn configure_service6(&self) -> Result<()> {
        let service = format!("[{VIP6}]:80");
        self.xlb(&["service", "add", "tcp", &service, "--scheduler", "rr"])?;
        let flag = if self.method == ForwardMethod::Tunnel { "-i" } else { "-g" };
        for rs in &self.reals {
            self.xlb(&["real", "add", "tcp", &service, &rs.ip6.to_string(), flag])?;
        }
        Ok(())
    }

    /// `curl http://VIP/path` from the client. Returns the body.
    pub fn curl(&self, path: &str) -> Result<String> {
        curl(&self.client, &format!("http://{VIP}{path}"), &[])
    }

    /// `curl http://[VIP6]/path` from the client.
    pub fn curl6(&self, path: &str) -> Result<String> {
        curl(&self.client, &format!("http://[{VIP6}]{path}"), &[])
    }

    /// Uploads `file` to a real server through the VIP; returns its answer.
    pub fn upload(&self, file: &Path) -> Result<String> {
        upload(&self.client, &format!("http://{VIP}"), file)
    }

    pub fn upload6(&self, file: &Path) -> Result<String> {
        upload(&self.client, &format!("http://[{VIP6}]"), file)
    }
}

impl Drop for DrCluster {
    fn drop(&mut self) {
        teardown_dr_reals(&self.xlb, &self.reals);
    }
}

/// Plugs DR (or TUN) real server `rs` into the switch's br0 (its IPv4 and IPv6 address)
/// and sets it up with `xlb realserver setup --vip VIPS` (comma-separated).
fn plug_dr_real(switch: &Netns, rs: &RealServer, xlb: &Path, method: ForwardMethod, vips: &str) -> Result<()> {
    plug(switch, "br0", &rs.ns, NIC, &format!("p-{}", rs.name), &format!("{}/24", rs.ip))?;
    add_ip6(&rs.ns, NIC, &format!("{}/64", rs.ip6))?;
    // The seeds' real-server script: VIP on lo, and never answer or announce it by
    // ARP; for TUN also the decapsulator on the NIC the tunnelled packets arrive on.
    let mut setup = rs.ns.command(xlb);
    setup.args(["realserver", "setup", "--vip", vips]);
    if method == ForwardMethod::Tunnel {
        setup.args(["--mode", "tun", "--iface", NIC]);
    }
    netns::run(&mut setup).map(drop)
}

/// `xlb realserver teardown` on every real: setup's state file lives in the host's
/// /run/xlb, which outlives the namespaces, and the decapsulator's pins in the host's bpffs.
fn teardown_dr_reals(xlb: &Path, reals: &[RealServer]) {
    for rs in reals {
        let _ = netns::run(rs.ns.command(xlb).args(["realserver", "teardown"]));
    }
}

/// The director's NICs in an LVS-NAT cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatLayout {
    /// The seeds' director: VIP on the public NIC (eth0, with the clients), DIP on the
    /// private NIC (eth1, with the real servers). Frames cross between NICs (redirect).
    TwoNics,
    /// One NIC on one LAN holding both the public and the private addresses; frames
    /// leave by the NIC they came in on (XDP_TX).
    OneArm,
}

/// An LVS-NAT cluster: the real servers' default gateway is the director's DIP, the
/// director forwards (ip_forward=1), and they serve HTTP on [`NAT_REAL_PORT`] while the
/// service is VIP:80.
pub struct NatCluster {
    pub id: String,
    pub layout: NatLayout,
    director_processes: Director,
    pub client: Netns,
    pub director: Netns,
    pub reals: Vec<RealServer>,
    pub switch: Netns,
}

impl NatCluster {
    pub fn build(xlb: &Path, real_count: usize, mode: AttachMode, layout: NatLayout) -> Result<Self> {
        netns::require_root("the namespace cluster")?;
        let id = netns::run_id();
        let ns = |role: &str| host(&format!("xlb-{id}-{role}"));
        let switch = ns("sw")?;
        let client = ns("client")?;
        let director = ns("dir")?;
        let mut reals = Vec::new();
        for i in 0..real_count {
            let name = format!("rs{}", i + 1);
            reals.push(RealServer { ns: ns(&name)?, ip: nat_rip(i), ip6: nat_rip6(i), name });
        }
        let pin_dir = PathBuf::from(format!("/sys/fs/bpf/xlb-{id}"));
        let director_processes = Director { xlb: xlb.to_owned(), pin_dir, mode, children: Vec::new(), peer_stubs: true, own_process_group: false };
        let mut cluster = Self { id, layout, director_processes, client, director, reals, switch };
        cluster.wire()?;
        start_http_servers(&cluster.reals, NAT_REAL_PORT, &mut cluster.director_processes.children)?;
        Ok(cluster)
    }

    /// The bridges the public and the private sides are plugged into (one in one arm).
    fn bridges(&self) -> (&'static str, &'static str) {
        match self.layout {
            NatLayout::TwoNics => ("br-pub", "br-priv"),
            NatLayout::OneArm => ("br0", "br0"),
        }
    }

    fn wire(&mut self) -> Result<()> {
        let (public, private) = self.bridges();
        bridge(&self.switch, public)?;
        if private != public {
            bridge(&self.switch, private)?;
        }
        plug(&self.switch, public, &self.client, NIC, "p-client", &format!("{NAT_CIP}/24"))?;
        add_ip6(&self.client, NIC, &format!("{NAT_CIP6}/64"))?;
        checksums_in_software(&self.client)?;
        // The seeds: the clients' gateway is the director too (the "firewall" in front).
        self.client.ip(&["route", "add", "default", "via", &NAT_PUBLIC_IP.to_string()])?;
        self.client.ip(&["-6", "route", "add", "default", "via", &NAT_PUBLIC_IP6.to_string()])?;
        plug(&self.switch, public, &self.director, NIC, "p-dir", &format!("{NAT_PUBLIC_IP}/24"))?;
        add_ip6(&self.director, NIC, &format!("{NAT_PUBLIC_IP6}/64"))?;
        self.director.ip(&["addr", "add", &format!("{NAT_VIP}/32"), "dev", NIC])?;
        add_ip6(&self.director, NIC, &format!("{NAT_VIP6}/128"))?;
        let private_nic = match self.layout {
            NatLayout::TwoNics => {
                plug(&self.switch, private, &self.director, PRIVATE_NIC, "p-dir-priv", &format!("{NAT_DIP}/24"))?;
                PRIVATE_NIC
            }
            NatLayout::OneArm => {
                self.director.ip(&["addr", "add", &format!("{NAT_DIP}/24"), "dev", NIC])?;
                NIC
            }
        };
        add_ip6(&self.director, private_nic, &format!("{NAT_DIP6}/64"))?;
        // The seeds: `sysctl -w net.ipv4.ip_forward=1`, or the replies never leave; and
        // the same for IPv6.
        self.director.sysctl("net.ipv4.ip_forward", "1")?;
        self.director.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        // One arm: what the kernel forwards back out of the same NIC is no reason to
        // tell hosts to go round the director.
        self.director.sysctl("net.ipv4.conf.all.send_redirects", "0")?;
        self.director.sysctl(&format!("net.ipv4.conf.{private_nic}.send_redirects"), "0")?;
        for rs in &self.reals {
            plug(&self.switch, private, &rs.ns, NIC, &format!("p-{}", rs.name), &format!("{}/24", rs.ip))?;
            add_ip6(&rs.ns, NIC, &format!("{}/64", rs.ip6))?;
            checksums_in_software(&rs.ns)?;
            // `ip route add default dev eth0 via DIP`: the replies go through the director.
            rs.ns.ip(&["route", "add", "default", "via", &NAT_DIP.to_string()])?;
            rs.ns.ip(&["-6", "route", "add", "default", "via", &NAT_DIP6.to_string()])?;
        }
        Ok(())
    }

    pub fn xlb_command(&self, args: &[&str]) -> Command {
        self.director_processes.command(&self.director, args)
    }

    pub fn xlb(&self, args: &[&str]) -> Result<String> {
        netns::run(&mut self.xlb_command(args))
    }

    /// Where `xlb run` pins its maps.
    pub fn pin_dir(&self) -> &Path {
        &self.director_processes.pin_dir
    }

    /// `xlb run` on the director's NIC(s).
    pub fn start_balancer(&mut self) -> Result<Vec<String>> {
        let (nics, ports): (&[&str], &[&str]) = match self.layout {
            NatLayout::TwoNics => (&[NIC, PRIVATE_NIC], &["p-dir", "p-dir-priv"]),
            NatLayout::OneArm => (&[NIC], &["p-dir"]),
        };
        self.director_processes.start("run", &self.director, &self.switch, nics, ports, &[])
    }

    pub fn stop_balancer(&mut self) -> Result<std::process::ExitStatus> {
        self.director_processes.stop()
    }

    /// `xlb run` with extra arguments (for example `--keepalived-conf FILE`).
    pub fn start_balancer_with(&mut self, extra: &[&str]) -> Result<Vec<String>> {
        let (nics, ports): (&[&str], &[&str]) = match self.layout {
            NatLayout::TwoNics => (&[NIC, PRIVATE_NIC], &["p-dir", "p-dir-priv"]),
            NatLayout::OneArm => (&[NIC], &["p-dir"]),
        };
        self.director_processes.start("run", &self.director, &self.switch, nics, ports, extra)
    }

    /// Sends `signal` to the running `xlb run`.
    pub fn signal_balancer(&self, signal: i32) -> Result<()> {
        self.director_processes.signal(signal)
    }

    /// Stops real server `index`'s HTTP server (as if the service died).
    pub fn stop_http(&mut self, index: usize) -> Result<()> {
        let what = format!("HTTP server on {}", self.reals[index].name);
        let children = &mut self.director_processes.children;
        let pos = children.iter().position(|c| c.what == what).with_context(|| format!("{what} is not running"))?;
        children.remove(pos).kill_hard()
    }

    /// Starts real server `index`'s HTTP server again (on NAT_REAL_PORT).
    pub fn start_http(&mut self, index: usize) -> Result<()> {
        let guard = start_http(&self.reals[index], NAT_REAL_PORT)?;
        self.director_processes.children.push(guard);
        Ok(())
    }

    /// ipvsadm -A -t VIP:80 -s rr; ipvsadm -a -t VIP:80 -r RIP:8080 -m for each real.
    pub fn configure_service(&self) -> Result<()> {
        let service = format!("{NAT_VIP}:80");
        self.xlb(&["service", "add", "tcp", &service, "--scheduler", "rr"])?;
        for rs in &self.reals {
            self.xlb(&["real", "add", "tcp", &service, &format!("{}:{NAT_REAL_PORT}", rs.ip), "-m"])?;
        }
        Ok(())
    }

    /// The same for IPv6: [VIP6]:80 → [RIP6]:8080.
    pub fn configure_service6(&self) -> Result<()> {
        let service = format!("[{NAT_VIP6}]:80");
        self.xlb(&["service", "add", "tcp", &service, "--scheduler", "rr"])?;
        for rs in &self.reals {
            self.xlb(&["real", "add", "tcp", &service, &format!("[{}]:{NAT_REAL_PORT}", rs.ip6), "-m"])?;
        }
        Ok(())
    }

    /// `curl http://VIP/path` from the client.
    pub fn curl(&self, path: &str) -> Result<String> {
        curl(&self.client, &format!("http://{NAT_VIP}{path}"), &[])
    }

    /// `curl http://[VIP6]/path` from the client.
    pub fn curl6(&self, path: &str) -> Result<String> {
        curl(&self.client, &format!("http://[{NAT_VIP6}]{path}"), &[])
    }

    pub fn upload6(&self, file: &Path) -> Result<String> {
        upload(&self.client, &format!("http://[{NAT_VIP6}]"), file)
    }

    /// `curl URL` from the client, to anything.
    pub fn curl_url(&self, url: &str) -> Result<String> {
        curl(&self.client, url, &[])
    }

    pub fn upload(&self, file: &Path) -> Result<String> {
        upload(&self.client, &format!("http://{NAT_VIP}"), file)
    }
}
