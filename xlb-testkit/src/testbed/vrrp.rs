//! The classic LVS active/standby pair in namespaces: two LVS-DR directors on one LAN
//! with the client and the real servers (as [`super::DrCluster`]), neither holding the
//! VIP by hand. keepalived runs on each (VRRP only, `keepalived --vrrp`: no virtual_server,
//! xlb is the balancer) with one vrrp_instance owning the VIP; its notify scripts
//! (packaging/keepalived/xlb-vrrp-notify) record the state and start xlb's connection
//! sync daemons, master and backup roles on the LAN NIC, on both directors. Both run
//! `xlb daemon` with the same round-robin service VIP:80 and the same reals, added in
//! opposite orders (what the director picks for a new connection differs: only a synced
//! connection entry makes the backup send a connection to the master's real).
//!
//! Director 0 ("dira", 10.99.0.2) has priority 150 and starts as MASTER; director 1
//! ("dirb", 10.99.0.3) priority 100, BACKUP. [`FailoverCluster::kill_director`] is a
//! director's death: its links go down, keepalived and xlb are killed (SIGKILL).
//! Everything is removed on drop (processes, pins, namespaces, the scratch directory).
use std::{
    fs::File,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use xlb_core::{
    loader::AttachMode,
    netns::{self, Netns},
    ops::ForwardMethod,
};

use super::{
    CIP, ChildGuard, Director, NIC, RealServer, VIP, bridge, checksums_in_software, connect_in, host, plug, plug_dr_real, rip,
    rip6, start_http_servers, teardown_dr_reals,
};

/// The directors' own addresses (DIPs): 10.99.0.2 and 10.99.0.3.
pub fn director_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 99, 0, 2 + i as u8)
}

/// VRRP priorities: director 0 the master (150), director 1 the backup (100).
pub const PRIORITIES: [u8; 2] = [150, 100];
/// The vrrp_instance's name and virtual router id.
pub const INSTANCE: &str = "VI_XLB";
pub const VIRTUAL_ROUTER_ID: u8 = 51;

/// The notify script the test bed runs, from the source tree.
pub fn notify_script() -> Result<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/keepalived/xlb-vrrp-notify");
    path.canonicalize().with_context(|| format!("the notify script {}", path.display()))
}

/// keepalived's binary: on PATH, or in /usr/sbin or /sbin (a non-login root shell's PATH
/// often lacks them). Errors: not installed (Debian package keepalived; every `cargo xtask`
/// command installs it).
pub fn keepalived_binary() -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join("keepalived"))
        .find(|p| p.is_file())
        .context("keepalived is not installed (Debian package keepalived; `cargo xtask test` installs it)")
}

/// How the pair is set up.
#[derive(Clone, Debug)]
pub struct FailoverOptions {
    pub real_count: usize,
    pub mode: AttachMode,
    /// VRRP advertisement interval in seconds (keepalived's advert_int). Below 1 s the
    /// instance speaks VRRPv3 (RFC 5798: centiseconds), else VRRPv2 (RFC 3768: seconds).
    pub advert_int: f64,
    /// The sync daemons' syncid on each director (the notify script starts both roles
    /// with it); None: no connection sync at all.
    pub sync_ids: Option<[u8; 2]>,
}

impl Default for FailoverOptions {
    fn default() -> Self {
        Self { real_count: 2, mode: AttachMode::Auto, advert_int: 1.0, sync_ids: Some([1, 1]) }
    }
}

/// keepalived on a director: the parent (`-n`: in the foreground) and its VRRP child,
/// both stopped on drop.
struct Keepalived {
    /// None once killed.
    parent: Option<ChildGuard>,
    /// The VRRP child's pid, from its pid file (`-r`).
    vrrp_pid: i32,
}

impl Keepalived {
    /// SIGKILL to the VRRP child and the parent: no priority-0 advertisement, no VIP
    /// removed, as when the machine dies.
    fn kill_hard(&mut self) -> Result<()> {
        unsafe { libc::kill(self.vrrp_pid, libc::SIGKILL) };
        match self.parent.take() {
            Some(mut parent) => parent.kill_hard(),
            None => Ok(()),
        }
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        // The parent stops its VRRP child on SIGINT (the guard's signal); if the parent
        // had to be killed instead, the child goes by its pid.
        drop(self.parent.take());
        if process_alive(self.vrrp_pid) {
            unsafe { libc::kill(self.vrrp_pid, libc::SIGKILL) };
        }
    }
}

fn process_alive(pid: i32) -> bool {
    // Reaped or not ours any more: /proc/PID gone, or a zombie.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| stat.rsplit(')').next().map_or(false, |rest| !rest.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

/// One director of the pair.
pub struct VrrpDirector {
    /// "dira" or "dirb" (also in its namespace's and switch port's names).
    pub name: String,
    pub ip: Ipv4Addr,
    pub priority: u8,
    /// The files of this director: keepalived.conf, notify settings, state, log.
    pub keepalived_conf: PathBuf,
    pub notify_conf: PathBuf,
    pub state_file: PathBuf,
    pub keepalived_log: PathBuf,
    pid_file: PathBuf,
    vrrp_pid_file: PathBuf,
    port: String,
    // Drop order: keepalived, then xlb (and the XDP stubs, the pins), then the namespace.
    keepalived: Option<Keepalived>,
    processes: Director,
    pub ns: Netns,
}

impl VrrpDirector {
    /// The director's `xlb` command line for `args`.
    pub fn xlb_command(&self, args: &[&str]) -> Command {
        self.processes.command(&self.ns, args)
    }

    /// Runs `xlb ARGS…` on the director; its stdout.
    pub fn xlb(&self, args: &[&str]) -> Result<String> {
        netns::run(&mut self.xlb_command(args))
    }

    pub fn pin_dir(&self) -> &Path {
        &self.processes.pin_dir
    }

    /// The VRRP state the notify script last wrote (MASTER, BACKUP, FAULT) and when
    /// (seconds since the epoch); None before the first transition.
    pub fn vrrp_state(&self) -> Option<(String, f64)> {
        let text = std::fs::read_to_string(&self.state_file).ok()?;
        let mut words = text.split_whitespace();
        Some((words.next()?.to_string(), words.next()?.parse().ok()?))
    }

    /// Whether the VIP is on the director's NIC (keepalived's virtual_ipaddress).
    pub fn holds_vip(&self) -> Result<bool> {
        let addrs = self.ns.ip(&["-4", "-o", "addr", "show", "dev", NIC])?;
        Ok(addrs.split_whitespace().any(|w| w == format!("{VIP}/32")))
    }

    /// keepalived's log so far (console logging, `-l -D`).
    pub fn keepalived_log(&self) -> String {
        std::fs::read_to_string(&self.keepalived_log).unwrap_or_default()
    }

    /// `xlb ipvsadm -L --daemon`: the sync daemons running.
    pub fn sync_daemons(&self) -> Result<String> {
        self.xlb(&["ipvsadm", "-L", "--daemon"])
    }

    /// Starts keepalived (VRRP only) with this director's files, in its namespace.
    fn start_keepalived(&mut self) -> Result<()> {
        let log = File::create(&self.keepalived_log).with_context(|| format!("creating {}", self.keepalived_log.display()))?;
        let mut cmd = self.ns.command(keepalived_binary()?);
        // -n: stay in the foreground; -l -D: detailed log on the console (the log file);
        // -G: not to the host's syslog; -P: VRRP only; own pid files, so that several
        // keepalived can run on one host.
        cmd.args(["-n", "-l", "-D", "-G", "-P", "-f"])
            .arg(&self.keepalived_conf)
            .arg("-p")
            .arg(&self.pid_file)
            .arg("-r")
            .arg(&self.vrrp_pid_file)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = cmd.spawn().context("starting keepalived (Debian package keepalived)")?;
        let mut parent = ChildGuard::new(&format!("keepalived on {}", self.name), child);
        let deadline = Instant::now() + Duration::from_secs(10);
        let vrrp_pid = loop {
            if let Some(pid) = std::fs::read_to_string(&self.vrrp_pid_file).ok().and_then(|t| t.trim().parse::<i32>().ok()) {
                break pid;
            }
            if !parent.running() || Instant::now() > deadline {
                bail!("keepalived on {} started no VRRP process; its log:\n{}", self.name, self.keepalived_log());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.keepalived = Some(Keepalived { parent: Some(parent), vrrp_pid });
        Ok(())
    }
}

/// The active/standby pair with its client and real servers.
pub struct FailoverCluster {
    pub id: String,
    pub options: FailoverOptions,
    xlb: PathBuf,
    // Drop order: directors (keepalived, xlb, namespaces), servers, hosts, switch, files.
    pub directors: Vec<VrrpDirector>,
    servers: Vec<ChildGuard>,
    pub client: Netns,
    pub reals: Vec<RealServer>,
    pub switch: Netns,
    scratch: Scratch,
}

/// A directory removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl FailoverCluster {
    /// Builds the pair and starts everything: HTTP servers on the reals, `xlb daemon`
    /// with the service on both directors, keepalived on director 0 (until it is MASTER
    /// and holds the VIP), then on director 1 (until BACKUP); with sync, waits until both
    /// directors run both sync roles.
    pub fn build(xlb: &Path, options: FailoverOptions) -> Result<Self> {
        netns::require_root("the VRRP pair")?;
        let script = notify_script()?;
        let id = netns::run_id();
        let ns = |role: &str| host(&format!("xlb-{id}-{role}"));
        let scratch = Scratch(std::env::temp_dir().join(format!("xlb-vrrp-{id}")));
        std::fs::create_dir_all(&scratch.0).with_context(|| format!("creating {}", scratch.0.display()))?;
        let switch = ns("sw")?;
        bridge(&switch, "br0")?;
        let client = ns("client")?;
        let mut reals = Vec::new();
        for i in 0..options.real_count {
            let name = format!("rs{}", i + 1);
            reals.push(RealServer { ns: ns(&name)?, ip: rip(i), ip6: rip6(i), name });
        }
        let mut directors = Vec::new();
        for (i, priority) in PRIORITIES.into_iter().enumerate() {
            let name = ["dira", "dirb"][i].to_string();
            let file = |ext: &str| scratch.0.join(format!("{name}.{ext}"));
            let processes = Director {
                xlb: xlb.to_owned(),
                pin_dir: PathBuf::from(format!("/sys/fs/bpf/xlb-{id}-{name}")),
                mode: options.mode,
                children: Vec::new(),
                peer_stubs: true,
                own_process_group: false,
            };
            directors.push(VrrpDirector {
                ip: director_ip(i),
                priority,
                keepalived_conf: file("keepalived.conf"),
                notify_conf: file("notify.conf"),
                state_file: file("state"),
                keepalived_log: file("keepalived.log"),
                pid_file: file("keepalived.pid"),
                vrrp_pid_file: file("vrrp.pid"),
                port: format!("p-{name}"),
                keepalived: None,
                processes,
                ns: ns(&name)?,
                name,
            });
        }
        let mut cluster = Self { id, options, xlb: xlb.to_owned(), directors, servers: Vec::new(), client, reals, switch, scratch };
        cluster.wire()?;
        start_http_servers(&cluster.reals, 80, &mut cluster.servers)?;
        for i in 0..2 {
            cluster.start_xlb(i)?;
        }
        for i in 0..2 {
            cluster.write_configs(i, &script)?;
        }
        cluster.directors[0].start_keepalived()?;
        cluster.wait_for_state(0, "MASTER", Duration::from_secs(10))?;
        cluster.directors[1].start_keepalived()?;
        cluster.wait_for_state(1, "BACKUP", Duration::from_secs(10))?;
        if cluster.options.sync_ids.is_some() {
            for i in 0..2 {
                let d = &cluster.directors[i];
                wait_until(&format!("both sync daemons on {}", d.name), Duration::from_secs(10), || {
                    let listed = d.sync_daemons()?;
                    Ok(listed.contains("master sync daemon") && listed.contains("backup sync daemon"))
                })?;
            }
        }
        Ok(cluster)
    }

    fn wire(&mut self) -> Result<()> {
        plug(&self.switch, "br0", &self.client, NIC, "p-client", &format!("{CIP}/24"))?;
        checksums_in_software(&self.client)?;
        for d in &self.directors {
            // Only the director's own address: the VIP is keepalived's to add.
            // The bridge floods unknown unicast: when the master's port goes down it
            // forgets its MAC and floods the frames still sent to it (the client's, until
            // the VIP's gratuitous ARP) to every port. The backup's XDP sees them (a veth
            // does not filter by MAC) and passes them (pass_other_host), for its kernel
            // to drop, rather than forward them before VRRP moved the VIP.
            plug(&self.switch, "br0", &d.ns, NIC, &d.port, &format!("{}/24", d.ip))?;
        }
        for rs in &self.reals {
            plug_dr_real(&self.switch, rs, &self.xlb, ForwardMethod::Route, &VIP.to_string())?;
        }
        Ok(())
    }

    /// `xlb daemon` on director `i`'s NIC, and the service: `ipvsadm -A -t VIP:80 -s rr`,
    /// then `-a … -g` for each real, in the reals' order on director 0 and the reverse on
    /// director 1.
    fn start_xlb(&mut self, i: usize) -> Result<()> {
        let d = &mut self.directors[i];
        d.processes.start("daemon", &d.ns, &self.switch, &[NIC], &[d.port.as_str()], &[])?;
        let service = format!("{VIP}:80");
        d.xlb(&["ipvsadm", "-A", "-t", &service, "-s", "rr"])?;
        let mut order: Vec<&RealServer> = self.reals.iter().collect();
        if i == 1 {
            order.reverse();
        }
        for rs in order {
            d.xlb(&["ipvsadm", "-a", "-t", &service, "-r", &format!("{}:80", rs.ip), "-g"])?;
        }
        Ok(())
    }

    /// Director `i`'s keepalived.conf and the notify script's settings.
    fn write_configs(&self, i: usize, script: &Path) -> Result<()> {
        let d = &self.directors[i];
        std::fs::write(&d.keepalived_conf, self.keepalived_conf(i, script))?;
        let (sync_iface, sync_id) = match self.options.sync_ids {
            Some(ids) => (NIC, ids[i]),
            None => ("", 0),
        };
        let settings = format!(
            "# xlb-vrrp-notify settings for {} (test bed {})\nXLB=\"{} --pin-dir {}\"\nSYNC_IFACE={sync_iface}\nSYNC_ID={sync_id}\nSTATE_FILE={}\n",
            d.name,
            self.id,
            self.xlb.display(),
            d.pin_dir().display(),
            d.state_file.display()
        );
        std::fs::write(&d.notify_conf, settings)?;
        Ok(())
    }

    /// keepalived.conf for director `i`: VRRP only, one instance owning VIP/32 on the
    /// LAN NIC, notify scripts at every transition.
    pub fn keepalived_conf(&self, i: usize, script: &Path) -> String {
        let d = &self.directors[i];
        let state = if i == 0 { "MASTER" } else { "BACKUP" };
        // VRRPv2 counts the interval in whole seconds, VRRPv3 in centiseconds.
        let version = if self.options.advert_int < 1.0 { "    version 3\n" } else { "" };
        let notify = |s: &str| format!("    notify_{} \"{} -c {} {s}\"\n", s.to_lowercase(), script.display(), d.notify_conf.display());
        format!(
            "! keepalived for xlb director {name} (test bed {id}): VRRP only, xlb balances.\n\
             global_defs {{\n    router_id xlb-{id}-{name}\n    script_user root\n}}\n\n\
             vrrp_instance {INSTANCE} {{\n{version}    state {state}\n    interface {NIC}\n    virtual_router_id {VIRTUAL_ROUTER_ID}\n\
             \x20   priority {priority}\n    advert_int {advert}\n    virtual_ipaddress {{\n        {VIP}/32 dev {NIC}\n    }}\n{master}{backup}{fault}}}\n",
            name = d.name,
            id = self.id,
            priority = d.priority,
            advert = self.options.advert_int,
            master = notify("MASTER"),
            backup = notify("BACKUP"),
            fault = notify("FAULT"),
        )
    }

    /// Waits until director `i`'s notify script has written `state` (and, for MASTER,
    /// the VIP is on its NIC).
    pub fn wait_for_state(&self, i: usize, state: &str, timeout: Duration) -> Result<()> {
        let d = &self.directors[i];
        wait_until(&format!("{} in VRRP state {state}", d.name), timeout, || {
            let entered = d.vrrp_state().is_some_and(|(s, _)| s == state);
            Ok(entered && (state != "MASTER" || d.holds_vip()?))
        })
        .with_context(|| format!("keepalived's log on {}:\n{}", d.name, d.keepalived_log()))
    }

    /// Director `i` dies: its NIC goes down (nothing more leaves it: no priority-0
    /// advertisement, no sync message), then keepalived and xlb get SIGKILL. Returns the
    /// instant the link went down.
    pub fn kill_director(&mut self, i: usize) -> Result<Instant> {
        let d = &mut self.directors[i];
        d.ns.ip(&["link", "set", NIC, "down"])?;
        let down = Instant::now();
        if let Some(keepalived) = d.keepalived.as_mut() {
            keepalived.kill_hard()?;
        }
        d.processes.kill()?;
        Ok(down)
    }

    /// A TCP connection from the client to VIP:`port`, with a 5 s read timeout.
    pub fn connect_from_client(&self, port: u16) -> Result<std::net::TcpStream> {
        connect_in(&self.client, SocketAddr::from((VIP, port)))
    }

    /// Where the test bed keeps its files.
    pub fn scratch_dir(&self) -> &Path {
        &self.scratch.0
    }
}

impl Drop for FailoverCluster {
    fn drop(&mut self) {
        teardown_dr_reals(&self.xlb, &self.reals);
    }
}

/// Polls `check` every 20 ms until it says true; an error of `check` ends the wait.
pub fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if check()? {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
