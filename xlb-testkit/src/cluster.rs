//! An active/active cluster of xlb directors behind a router spreading flows over them by
//! ECMP, in network namespaces: the scale-out layout of issue 15 (and of Katran, GLB,
//! Maglev: BGP announces the VIP from every director, the router hashes each flow's
//! 5-tuple onto one of the equal-cost next hops, BFD takes a dead director out).
//!
//! ```text
//!  client 172.31.0.10 ──veth── router (BIRD: BGP+BFD to the directors, ECMP, L4 hash)
//!                               │ 10.97.0.1
//!                  bridge br0 in the switch namespace (one LAN, one-armed LVS-DR)
//!          ┌──────────┬─────────┼─────────┬──────────┬──────────┐
//!        dir1       dir2      dir3       rs1        rs2  …      (VIP on lo, arp_ignore)
//!      10.97.0.2  10.97.0.3  10.97.0.4  10.97.0.11  10.97.0.12
//!      BIRD + xlb daemon (mh, DR)       default route via the router
//! ```
//!
//! Each director runs `xlb daemon` (Maglev `mh` scheduler, DR) with the same real servers
//! added in a different order, and BIRD announcing the VIP /32 to the router over eBGP
//! with BFD: xlb writes the `route VIP/32 blackhole;` lines BIRD's static protocol
//! includes (`--bird-vips`) and tells BIRD to reconfigure (`--bird-socket`). The router's
//! BIRD merges the three BGP routes into one multipath kernel route (`merge paths on`),
//! and the kernel picks a next hop by the L4 hash (fib_multipath_hash_policy=1). Real
//! servers answer the client directly through the router (their default gateway).
//! Everything is removed on drop.
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::Write as _,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use xlb_core::{
    loader::AttachMode,
    netns::{self, Netns},
    ops::ConnView,
};

use crate::testbed::{
    ChildGuard, Director, ECHO_PORT, NIC, RealServer, bridge, checksums_in_software, host, plug, start_http_servers,
};

/// The cluster's VIP: outside every connected subnet, reachable only through the routes
/// the directors announce.
pub const CLUSTER_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 100);
/// The router's address on the directors' LAN (10.97.0.0/24): the real servers' gateway.
pub const ROUTER_LAN_IP: Ipv4Addr = Ipv4Addr::new(10, 97, 0, 1);
/// The router's address on the client's link (172.31.0.0/24): the client's gateway.
pub const ROUTER_CLIENT_IP: Ipv4Addr = Ipv4Addr::new(172, 31, 0, 1);
pub const CLUSTER_CIP: Ipv4Addr = Ipv4Addr::new(172, 31, 0, 10);
/// The router's AS and the directors' (eBGP, one AS for all directors so their routes
/// are equal and merge into one multipath route).
pub const ROUTER_AS: u32 = 65000;
pub const DIRECTOR_AS: u32 = 65001;
/// The router's NIC toward the client.
pub const CLIENT_SIDE_NIC: &str = "eth1";
/// The service every director balances: TCP VIP:ECHO_PORT (the reals' line echo servers).
pub const CLUSTER_PORT: u16 = ECHO_PORT;
/// BFD's transmit and receive interval (ms) and detection multiplier: a director that
/// goes silent is declared down after interval × multiplier = 300 ms.
pub const BFD_INTERVAL_MS: u32 = 100;
pub const BFD_MULTIPLIER: u32 = 3;

/// Director `i`'s address (0-based): 10.97.0.2, .3, .4, …
pub fn director_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 97, 0, 2 + i as u8)
}

/// Real server `i`'s address (0-based): 10.97.0.11, .12, …
pub fn cluster_rip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 97, 0, 11 + i as u8)
}

/// The order director `d` adds the `n` real servers in: director 0 in order, the others
/// rotated by `d` and every other one reversed, so no two of the first directors agree
/// (1 2 3, 3 1 2 reversed = 2 1 3 …). The Maglev tables must come out the same anyway.
pub fn real_order(d: usize, n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).map(|j| (j + d) % n).collect();
    if d % 2 == 1 {
        order.reverse();
    }
    order
}

/// One director: its namespace, BIRD and xlb.
pub struct ClusterDirector {
    pub name: String,
    pub ip: Ipv4Addr,
    /// The order its real servers were added in (indexes into [`EcmpCluster::reals`]).
    pub order: Vec<usize>,
    /// The bridge port its NIC is plugged into (in the switch namespace).
    pub port: String,
    /// BIRD's config, control socket, log, and the include file xlb writes the VIP routes to.
    pub bird_conf: PathBuf,
    pub bird_socket: PathBuf,
    pub bird_log: PathBuf,
    pub vips_file: PathBuf,
    bird: Option<ChildGuard>,
    /// xlb daemon and the XDP stub on its switch port.
    processes: Director,
    pub ns: Netns,
}

impl ClusterDirector {
    /// Runs `xlb ARGS` on this director (its own pin dir); returns stdout.
    pub fn xlb(&self, args: &[&str]) -> Result<String> {
        netns::run(&mut self.processes.command(&self.ns, args)).with_context(|| format!("xlb on {}", self.name))
    }

    /// The connection entries of the cluster's service (not persistence templates), any
    /// state.
    pub fn conns(&self) -> Result<Vec<ConnView>> {
        let text = self.xlb(&["--output", "json", "conns"])?;
        let conns: Vec<ConnView> = serde_json::from_str(&text).with_context(|| format!("parsing `xlb conns` of {}: {text}", self.name))?;
        let vip = format!("{CLUSTER_VIP}:{CLUSTER_PORT}");
        Ok(conns.into_iter().filter(|c| !c.template && c.virtual_address == vip).collect())
    }

    /// `birdc -s SOCKET ARGS` (the control socket is a path: no namespace needed).
    pub fn birdc(&self, args: &[&str]) -> Result<String> {
        birdc(&self.bird_socket, args)
    }

    /// Starts this director: an empty VIP include file if none exists yet, BIRD, then
    /// `xlb daemon` on its NIC, writing the VIP routes to that file and reconfiguring
    /// BIRD. On a first start it adds the mh DR service and the real servers in the
    /// director's own order; on a restart the daemon brings them back from its saved
    /// state. Returns xlb's lines.
    pub fn start(&mut self, switch: &Netns, reals: &[RealServer]) -> Result<Vec<String>> {
        if self.bird.is_none() {
            std::fs::write(&self.bird_conf, director_bird_conf(self.ip, &self.vips_file))?;
            self.bird = Some(start_bird(&format!("BIRD on {}", self.name), &self.ns, &self.bird_conf, &self.bird_socket, &self.bird_log)?);
        }
        let vips = self.vips_file.display().to_string();
        let socket = self.bird_socket.display().to_string();
        let extra = ["--bird-vips", vips.as_str(), "--bird-socket", socket.as_str()];
        let port = self.port.clone();
        let lines = self.processes.start("daemon", &self.ns, switch, &[NIC], &[port.as_str()], &extra)?;
        let service = format!("{CLUSTER_VIP}:{CLUSTER_PORT}");
        if !self.xlb(&["list"])?.contains(&service) {
            // mh-port: the client's port is hashed too, so one client's flows spread over
            // the reals (IPVS's mh hashes the address alone by default).
            self.xlb(&["service", "add", "tcp", &service, "--scheduler", "mh", "--sched-flags", "mh-port"])?;
            for &r in &self.order {
                self.xlb(&["real", "add", "tcp", &service, &reals[r].ip.to_string(), "-g"])?;
            }
        }
        Ok(lines)
    }

    /// This director dies as a machine does: its NIC goes down, and xlb and BIRD are
    /// killed (SIGKILL). Then, as its reboot would, the fast path's pins go (`xlb stop`
    /// from the pins alone: program detached, connection table gone); the saved state
    /// (its services) stays, as on disk. The XDP stub on its switch port stays.
    pub fn kill(&mut self) -> Result<()> {
        self.ns.ip(&["link", "set", NIC, "down"])?;
        if self.xlb_running() {
            self.processes.kill()?;
        }
        if let Some(mut bird) = self.bird.take() {
            bird.kill_hard()?;
        }
        let _ = std::fs::remove_file(&self.bird_socket);
        self.xlb(&["stop"])?;
        Ok(())
    }

    /// Brings the director back after [`ClusterDirector::kill`]: NIC up, then BIRD and
    /// xlb as at a first start.
    pub fn revive(&mut self, switch: &Netns, reals: &[RealServer]) -> Result<Vec<String>> {
        self.ns.ip(&["link", "set", NIC, "up"])?;
        self.start(switch, reals)
    }

    /// Whether its xlb runs.
    pub fn xlb_running(&self) -> bool {
        self.processes.children.iter().any(|c| c.what.starts_with("xlb run"))
    }
}

/// An ECMP cluster of xlb directors (see the module's documentation).
pub struct EcmpCluster {
    pub id: String,
    pub xlb: PathBuf,
    /// Where the BIRD configs, sockets, logs and VIP include files live (removed on drop).
    pub dir: PathBuf,
    pub router_conf: PathBuf,
    pub router_socket: PathBuf,
    pub router_log: PathBuf,
    router_bird: Option<ChildGuard>,
    /// Echo and HTTP servers on the real servers.
    servers: Vec<ChildGuard>,
    pub directors: Vec<ClusterDirector>,
    pub reals: Vec<RealServer>,
    pub client: Netns,
    pub router: Netns,
    pub switch: Netns,
}

/// How long BIRD gets to open its control socket.
const BIRD_START: Duration = Duration::from_secs(10);

fn birdc(socket: &Path, args: &[&str]) -> Result<String> {
    netns::run(Command::new("birdc").arg("-s").arg(socket).args(args))
}

/// Starts `bird -f` in `ns` and waits until its control socket answers. Its log (stderr)
/// goes to `log`, which a failure quotes.
fn start_bird(what: &str, ns: &Netns, conf: &Path, socket: &Path, log: &Path) -> Result<ChildGuard> {
    let log_file = std::fs::OpenOptions::new().create(true).append(true).open(log).with_context(|| format!("opening {}", log.display()))?;
    let mut cmd = ns.command("bird");
    cmd.arg("-f").arg("-c").arg(conf).arg("-s").arg(socket);
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .with_context(|| format!("starting {what} (is bird2 installed? cargo xtask installs it)"))?;
    let mut guard = ChildGuard::new(what, child);
    let deadline = Instant::now() + BIRD_START;
    loop {
        if let Some(status) = guard.try_wait()? {
            bail!("{what} exited ({status}): {}", std::fs::read_to_string(log).unwrap_or_default().trim());
        }
        if socket.exists() && birdc(socket, &["show", "status"]).is_ok() {
            return Ok(guard);
        }
        if Instant::now() > deadline {
            bail!("{what} did not answer on {} within {BIRD_START:?}: {}", socket.display(), std::fs::read_to_string(log).unwrap_or_default().trim());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The shipped BIRD configurations (packaging/bird/), which the cluster runs with only
/// its addresses, file names and VIP range put in.
pub const SHIPPED_DIRECTOR_CONF: &str = include_str!("../../packaging/bird/xlb-director.conf");
pub const SHIPPED_ROUTER_CONF: &str = include_str!("../../packaging/bird/router-ecmp.conf");

/// The router's BIRD: the shipped router-ecmp.conf (a BGP session with BFD to every
/// director, their routes merged into one multipath kernel route) for `directors`
/// directors at [`director_ip`], the VIP range 10.96.0.0/24.
pub fn router_bird_conf(directors: usize) -> String {
    let cut = SHIPPED_ROUTER_CONF.find("protocol bgp director1").expect("router-ecmp.conf has `protocol bgp director1`");
    let mut conf = format!("log stderr all;\n{}", &SHIPPED_ROUTER_CONF[..cut])
        .replace("192.0.2.1", &ROUTER_LAN_IP.to_string())
        .replace("198.51.100.0/24{32,32}", &format!("{}/24{{32,32}}", Ipv4Addr::from(u32::from(CLUSTER_VIP) & 0xffff_ff00)));
    for d in 0..directors {
        let _ = writeln!(conf, "protocol bgp director{} from xlb_director {{\n  neighbor {} as {DIRECTOR_AS};\n}}", d + 1, director_ip(d));
    }
    conf
}

/// A director's BIRD: the shipped xlb-director.conf (the VIP routes xlb writes to
/// `vips_file`, announced to the router with BFD) for the director at `ip`.
pub fn director_bird_conf(ip: Ipv4Addr, vips_file: &Path) -> String {
    // The shipped file's trick: a pattern matching the one file lets BIRD start before
    // xlb first wrote it ("….conf" as "….con[f]").
    let file = vips_file.display().to_string();
    let pattern = match file.strip_suffix('f') {
        Some(stem) => format!("{stem}[f]"),
        None => file,
    };
    let vips6 = vips_file.with_extension("v6.con[f]");
    format!("log stderr all;\n{SHIPPED_DIRECTOR_CONF}")
        .replace("192.0.2.11", &ip.to_string())
        .replace("192.0.2.1", &ROUTER_LAN_IP.to_string())
        .replace("/run/bird/xlb-vips.con[f]", &pattern)
        .replace("/run/bird/xlb-vips6.con[f]", &vips6.display().to_string())
}

impl EcmpCluster {
    /// Builds the namespaces and links, starts the real servers' echo (and HTTP)
    /// servers and the router's BIRD. The directors are wired but idle: see
    /// [`EcmpCluster::start_director`]. `mode`: xlb's attach mode (auto: native, with an
    /// XDP stub on each director's switch port).
    pub fn build(xlb: &Path, directors: usize, real_count: usize, mode: AttachMode) -> Result<Self> {
        netns::require_root("the ECMP cluster")?;
        if !(1..=9).contains(&directors) || !(1..=50).contains(&real_count) {
            bail!("the ECMP cluster takes 1 to 9 directors and 1 to 50 real servers");
        }
        let id = netns::run_id();
        let ns = |role: &str| host(&format!("xlb-{id}-{role}"));
        let switch = ns("sw")?;
        let router = ns("router")?;
        let client = ns("client")?;
        let dir = PathBuf::from(format!("/tmp/xlb-{id}-ecmp"));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut reals = Vec::new();
        for i in 0..real_count {
            let name = format!("rs{}", i + 1);
            reals.push(RealServer { ns: ns(&name)?, ip: cluster_rip(i), ip6: std::net::Ipv6Addr::UNSPECIFIED, name });
        }
        let mut members = Vec::new();
        for d in 0..directors {
            let name = format!("dir{}", d + 1);
            let pin_dir = PathBuf::from(format!("/sys/fs/bpf/xlb-{id}-{name}"));
            let processes = Director { xlb: xlb.to_owned(), pin_dir, mode, children: Vec::new(), peer_stubs: true, own_process_group: false };
            members.push(ClusterDirector {
                ip: director_ip(d),
                order: real_order(d, real_count),
                port: format!("p-{name}"),
                bird_conf: dir.join(format!("{name}-bird.conf")),
                bird_socket: dir.join(format!("{name}-bird.ctl")),
                bird_log: dir.join(format!("{name}-bird.log")),
                vips_file: dir.join(format!("{name}-vips.conf")),
                bird: None,
                processes,
                ns: ns(&name)?,
                name,
            });
        }
        let mut cluster = Self {
            router_conf: dir.join("router-bird.conf"),
            router_socket: dir.join("router-bird.ctl"),
            router_log: dir.join("router-bird.log"),
            id,
            xlb: xlb.to_owned(),
            dir,
            router_bird: None,
            servers: Vec::new(),
            directors: members,
            reals,
            client,
            router,
            switch,
        };
        cluster.wire()?;
        start_http_servers(&cluster.reals, 80, &mut cluster.servers)?;
        std::fs::write(&cluster.router_conf, router_bird_conf(directors))?;
        cluster.router_bird = Some(start_bird("BIRD on the router", &cluster.router, &cluster.router_conf, &cluster.router_socket, &cluster.router_log)?);
        Ok(cluster)
    }

    fn wire(&mut self) -> Result<()> {
        bridge(&self.switch, "br0")?;
        // Client <-> router: a point-to-point link.
        netns::veth(&self.client, NIC, &self.router, CLIENT_SIDE_NIC)?;
        self.client.ip(&["addr", "add", &format!("{CLUSTER_CIP}/24"), "dev", NIC])?;
        self.client.ip(&["link", "set", NIC, "up"])?;
        self.client.ip(&["route", "add", "default", "via", &ROUTER_CLIENT_IP.to_string()])?;
        // What the client sends reaches a director's XDP through the router unchanged:
        // its checksums must be complete (see checksums_in_software).
        checksums_in_software(&self.client)?;
        self.router.ip(&["addr", "add", &format!("{ROUTER_CLIENT_IP}/24"), "dev", CLIENT_SIDE_NIC])?;
        self.router.ip(&["link", "set", CLIENT_SIDE_NIC, "up"])?;
        plug(&self.switch, "br0", &self.router, NIC, "p-router", &format!("{ROUTER_LAN_IP}/24"))?;
        self.router.sysctl("net.ipv4.ip_forward", "1")?;
        // ECMP by the L4 hash (addresses, protocol, ports): one client's flows spread
        // over every director (policy 0 hashes the addresses only).
        self.router.sysctl("net.ipv4.fib_multipath_hash_policy", "1")?;
        for d in &self.directors {
            // The bridge floods unknown unicast as a switch does: when a director's port
            // goes down it forgets the MAC and floods what the router still sends there
            // to every port. The other directors' XDP sees those frames (a veth does not
            // filter by MAC) and passes them (pass_other_host): the kernel drops them,
            // as it does before IPVS, and the dead director's flows do not carry on
            // before the router's route changes.
            plug(&self.switch, "br0", &d.ns, NIC, &d.port, &format!("{}/24", d.ip))?;
        }
        for rs in &self.reals {
            plug(&self.switch, "br0", &rs.ns, NIC, &format!("p-{}", rs.name), &format!("{}/24", rs.ip))?;
            // Replies go straight back to the client through the router.
            rs.ns.ip(&["route", "add", "default", "via", &ROUTER_LAN_IP.to_string()])?;
            netns::run(rs.ns.command(&self.xlb).args(["realserver", "setup", "--vip", &CLUSTER_VIP.to_string()]))?;
        }
        Ok(())
    }

    /// Starts director `d` (see [`ClusterDirector::start`]).
    pub fn start_director(&mut self, d: usize) -> Result<Vec<String>> {
        let Self { directors, switch, reals, .. } = self;
        directors[d].start(switch, reals)
    }

    /// Starts every director.
    pub fn start_all(&mut self) -> Result<()> {
        for d in 0..self.directors.len() {
            self.start_director(d)?;
        }
        Ok(())
    }

    /// The next hops of the router's kernel route to the VIP (see [`next_hops`]).
    pub fn router_next_hops(&self) -> Result<Vec<Ipv4Addr>> {
        next_hops(&self.router)
    }

    /// Every director's address.
    pub fn director_ips(&self) -> Vec<Ipv4Addr> {
        self.directors.iter().map(|d| d.ip).collect()
    }

    /// The addresses of the directors whose xlb is running.
    pub fn live_director_ips(&self) -> Vec<Ipv4Addr> {
        self.directors.iter().filter(|d| d.xlb_running()).map(|d| d.ip).collect()
    }

    /// The address client connections go to: VIP:CLUSTER_PORT.
    pub fn target(&self) -> SocketAddrV4 {
        SocketAddrV4::new(CLUSTER_VIP, CLUSTER_PORT)
    }

    /// How many connections each director carries now, from two listings `gap` apart: an
    /// entry idle all along has its `expires_in` (whole seconds) fall by about `gap`, a
    /// busy one's stays at its state's timeout (or one less after a hiccup); entries
    /// new in the second listing count. This leaves out the entries of flows ECMP has
    /// moved to another director. Give `gap` 2.5 s or more. A dead director counts 0.
    pub fn carried(&self, gap: Duration) -> Result<Vec<usize>> {
        let listing = |d: &ClusterDirector| -> Result<BTreeMap<String, u64>> {
            if !d.xlb_running() {
                return Ok(BTreeMap::new());
            }
            Ok(d.conns()?.into_iter().map(|c| (c.client, c.expires_in)).collect())
        };
        let first = self.directors.iter().map(listing).collect::<Result<Vec<_>>>()?;
        std::thread::sleep(gap);
        let second = self.directors.iter().map(listing).collect::<Result<Vec<_>>>()?;
        Ok(first
            .iter()
            .zip(&second)
            .map(|(before, now)| now.iter().filter(|(client, left)| before.get(*client).is_none_or(|was| *left + 1 >= *was)).count())
            .collect())
    }
}

impl Drop for EcmpCluster {
    fn drop(&mut self) {
        // Processes first (BIRD, xlb and its pins, servers), then the real servers'
        // setup state in the host's /run/xlb, then the files; the namespaces go last.
        for d in &mut self.directors {
            d.bird.take();
            if d.xlb_running() {
                let _ = d.processes.stop();
            }
        }
        self.router_bird.take();
        self.servers.clear();
        for rs in &self.reals {
            let _ = netns::run(rs.ns.command(&self.xlb).args(["realserver", "teardown"]));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The next hops of `router`'s kernel route to the VIP (empty: no route).
pub fn next_hops(router: &Netns) -> Result<Vec<Ipv4Addr>> {
    let text = router.ip(&["route", "show", &format!("{CLUSTER_VIP}/32")])?;
    let words: Vec<&str> = text.split_whitespace().collect();
    Ok(words.windows(2).filter(|w| w[0] == "via").filter_map(|w| w[1].parse().ok()).collect())
}

/// Waits until `router`'s route to the VIP has exactly `want` as next hops (in any
/// order), polling every 5 ms; returns the time from `since`. Errors: not so within
/// `timeout` of `since` (the message shows the route).
pub fn wait_next_hops(router: &Netns, want: &[Ipv4Addr], since: Instant, timeout: Duration) -> Result<Duration> {
    let mut want = want.to_vec();
    want.sort();
    loop {
        let mut have = next_hops(router)?;
        have.sort();
        if have == want {
            return Ok(since.elapsed());
        }
        if since.elapsed() > timeout {
            bail!("the router's route to {CLUSTER_VIP} is via {have:?}, not {want:?}, {timeout:?} on");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Long-lived TCP connections from the client, each sending a numbered line every
/// `interval` and checking the echo ("NAME: N") comes back from the same real server.
/// Runs on a thread of its own inside the client's namespace (a tokio runtime) until
/// dropped.
pub struct EchoLoad {
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Shared {
    start: Instant,
    conns: Vec<ConnSlot>,
}

#[derive(Default)]
struct ConnSlot {
    /// The real server that answered the first line.
    real: Mutex<String>,
    /// Time of the last answered line, µs since `Shared::start`.
    last_ok_us: AtomicU64,
    rounds: AtomicU64,
    /// Why the connection broke (reset, closed, another real answered), if it did.
    error: Mutex<Option<String>>,
}

/// Where a connection stands.
#[derive(Clone, Debug)]
pub struct ConnStatus {
    pub real: String,
    pub last_ok: Instant,
    pub rounds: u64,
    pub error: Option<String>,
}

/// The outcome of [`EchoLoad::wait_progress`].
#[derive(Clone, Debug, Default)]
pub struct Progress {
    /// Connections that answered a line after the instant asked about.
    pub ok: usize,
    /// Connections that failed (reset, closed by the peer, answered by another real).
    pub failed: usize,
    /// Connections still open but with no answer since that instant.
    pub stalled: usize,
    /// How long until every connection still open had answered (or the timeout).
    pub waited: Duration,
    /// The first few failures' reasons.
    pub reasons: Vec<String>,
}

impl Progress {
    pub fn broken(&self) -> usize {
        self.failed + self.stalled
    }
}

impl EchoLoad {
    /// Opens `count` connections from `client` to `target` (at most 64 handshakes at a
    /// time, each within 5 s) and starts their loops; returns once every connection has
    /// had its first echo. Errors: a connection could not be opened or answered.
    pub fn start(client: &Netns, target: SocketAddrV4, count: usize, interval: Duration) -> Result<Self> {
        let shared = Arc::new(Shared { start: Instant::now(), conns: (0..count).map(|_| ConnSlot::default()).collect() });
        let ns_file = std::fs::File::open(client.path()).with_context(|| format!("opening {}", client.path().display()))?;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread_shared = shared.clone();
        let ns_name = client.name.clone();
        let thread = std::thread::Builder::new().name("echo-load".into()).spawn(move || {
            let run = || -> Result<tokio::runtime::Runtime> {
                nix::sched::setns(&ns_file, nix::sched::CloneFlags::CLONE_NEWNET).with_context(|| format!("entering {ns_name}"))?;
                Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
            };
            let rt = match run() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            rt.block_on(async move {
                let streams = match open_all(&thread_shared, target, count).await {
                    Ok(streams) => streams,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                for (i, stream) in streams.into_iter().enumerate() {
                    // Spread the rounds over the interval.
                    let phase = interval.mul_f64(i as f64 / count as f64);
                    tokio::spawn(echo_loop(thread_shared.clone(), i, stream, interval, phase));
                }
                let _ = ready_tx.send(Ok(()));
                let _ = stop_rx.await;
            });
        })?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Self { shared, stop: Some(stop_tx), thread: Some(thread) }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => bail!("the echo client thread ended before opening its connections"),
        }
    }

    /// Every connection's state now.
    pub fn snapshot(&self) -> Vec<ConnStatus> {
        self.shared
            .conns
            .iter()
            .map(|c| ConnStatus {
                real: c.real.lock().unwrap().clone(),
                last_ok: self.shared.start + Duration::from_micros(c.last_ok_us.load(Ordering::Relaxed)),
                rounds: c.rounds.load(Ordering::Relaxed),
                error: c.error.lock().unwrap().clone(),
            })
            .collect()
    }

    /// Connections per real server (the real that answered their first line).
    pub fn per_real(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for c in self.snapshot() {
            *out.entry(c.real).or_default() += 1;
        }
        out
    }

    /// Failed connections so far.
    pub fn failed(&self) -> usize {
        self.snapshot().iter().filter(|c| c.error.is_some()).count()
    }

    /// Waits until every connection not failed has answered a line after `after`, or
    /// `timeout` passed; says how many did, failed, or stalled.
    pub fn wait_progress(&self, after: Instant, timeout: Duration) -> Progress {
        let begin = Instant::now();
        loop {
            let snap = self.snapshot();
            let failed: Vec<&ConnStatus> = snap.iter().filter(|c| c.error.is_some()).collect();
            let ok = snap.iter().filter(|c| c.error.is_none() && c.last_ok > after).count();
            let stalled = snap.len() - failed.len() - ok;
            if stalled == 0 || begin.elapsed() > timeout {
                let reasons = failed.iter().take(5).map(|c| format!("{}: {}", c.real, c.error.as_deref().unwrap_or(""))).collect();
                return Progress { ok, failed: failed.len(), stalled, waited: begin.elapsed(), reasons };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for EchoLoad {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

type Lines = tokio::io::Lines<tokio::io::BufReader<tokio::net::tcp::OwnedReadHalf>>;

/// Opens the connections and reads each one's first echo (which names its real).
async fn open_all(shared: &Arc<Shared>, target: SocketAddrV4, count: usize) -> Result<Vec<(Lines, tokio::net::tcp::OwnedWriteHalf)>> {
    let permits = Arc::new(tokio::sync::Semaphore::new(64));
    let mut set = tokio::task::JoinSet::new();
    for i in 0..count {
        let permits = permits.clone();
        set.spawn(async move {
            let _permit = permits.acquire_owned().await?;
            let opened = tokio::time::timeout(Duration::from_secs(5), open_one(target)).await;
            let (lines, write, real) = opened.map_err(|_| anyhow::anyhow!("connection {i} to {target}: no echo within 5 s"))??;
            anyhow::Ok((i, lines, write, real))
        });
    }
    let mut streams: Vec<Option<(Lines, tokio::net::tcp::OwnedWriteHalf)>> = (0..count).map(|_| None).collect();
    while let Some(joined) = set.join_next().await {
        let (i, lines, write, real) = joined??;
        *shared.conns[i].real.lock().unwrap() = real;
        shared.conns[i].last_ok_us.store(shared.start.elapsed().as_micros() as u64, Ordering::Relaxed);
        streams[i] = Some((lines, write));
    }
    Ok(streams.into_iter().map(|s| s.expect("every connection opened")).collect())
}

async fn open_one(target: SocketAddrV4) -> Result<(Lines, tokio::net::tcp::OwnedWriteHalf, String)> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(SocketAddr::V4(target)).await.with_context(|| format!("connecting to {target}"))?;
    stream.set_nodelay(true)?;
    let (read, mut write) = stream.into_split();
    let mut lines = tokio::io::BufReader::new(read).lines();
    write.write_all(b"0\n").await?;
    let line = lines.next_line().await?.context("closed before the first echo")?;
    let real = line.strip_suffix(": 0").with_context(|| format!("unexpected first echo {line:?}"))?.to_string();
    Ok((lines, write, real))
}

async fn echo_loop(shared: Arc<Shared>, i: usize, stream: (Lines, tokio::net::tcp::OwnedWriteHalf), interval: Duration, phase: Duration) {
    use tokio::io::AsyncWriteExt;
    let (mut lines, mut write) = stream;
    let slot = &shared.conns[i];
    let real = slot.real.lock().unwrap().clone();
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + phase, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for seq in 1u64.. {
        ticks.tick().await;
        let result: Result<()> = async {
            write.write_all(format!("{seq}\n").as_bytes()).await.context("sending")?;
            let line = lines.next_line().await.context("receiving")?.context("closed by the peer")?;
            if line != format!("{real}: {seq}") {
                bail!("sent {seq} to {real}, got {line:?}");
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => {
                slot.last_ok_us.store(shared.start.elapsed().as_micros() as u64, Ordering::Relaxed);
                slot.rounds.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                *slot.error.lock().unwrap() = Some(format!("{e:#}"));
                return;
            }
        }
    }
}

/// Opens `count` new connections from `client` to `target` at once, each given `timeout`
/// to connect and echo a line; returns how many made it.
pub fn probe_new_connections(client: &Netns, target: SocketAddrV4, count: usize, timeout: Duration) -> Result<usize> {
    let ns_file = std::fs::File::open(client.path())?;
    let name = client.name.clone();
    std::thread::spawn(move || -> Result<usize> {
        nix::sched::setns(&ns_file, nix::sched::CloneFlags::CLONE_NEWNET).with_context(|| format!("entering {name}"))?;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async move {
            let mut set = tokio::task::JoinSet::new();
            for _ in 0..count {
                set.spawn(async move { matches!(tokio::time::timeout(timeout, open_one(target)).await, Ok(Ok(_))) });
            }
            let mut ok = 0;
            while let Some(r) = set.join_next().await {
                ok += r.map_or(0, usize::from);
            }
            Ok(ok)
        })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the probe thread panicked"))?
}

/// Repeats [`probe_new_connections`] (`count` at a time, `timeout` each) until one round
/// has every connection succeed; returns the time from `since` to the end of that round.
pub fn wait_new_connections(client: &Netns, target: SocketAddrV4, since: Instant, count: usize, timeout: Duration, give_up: Duration) -> Result<Duration> {
    loop {
        let ok = probe_new_connections(client, target, count, timeout)?;
        if ok == count {
            return Ok(since.elapsed());
        }
        if since.elapsed() > give_up {
            bail!("new connections to {target} still fail {give_up:?} on ({ok} of {count} in the last round)");
        }
    }
}

/// Writes `text` to stdout at once (the summary block stays together in a test's output).
pub fn print_block(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}
