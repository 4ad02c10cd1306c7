//! An LVS-DR cluster in network namespaces, as in the seeds' notes: a client, a director
//! holding the VIP, and real servers with the VIP on lo and ARP suppressed
//! (arp_ignore=1, arp_announce=2, by `xlb realserver setup`), all on one switch (a bridge in its own namespace).
//! Used by `xlb demo` and the end-to-end tests. Everything is removed on drop.
use std::{
    io::{BufRead, BufReader},
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::{Context, Result, bail};

use crate::{
    loader::AttachMode,
    netns::{self, Netns},
};

pub const SUBNET_PREFIX: &str = "10.99.0";
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 100);
pub const DIP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
pub const CIP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 10);
/// Interface name of every host's NIC inside its namespace.
pub const NIC: &str = "eth0";
/// Port of the real servers' line echo servers.
pub const ECHO_PORT: u16 = 7000;

pub fn rip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 99, 0, 11 + i as u8)
}

pub struct RealServer {
    pub name: String,
    pub ip: Ipv4Addr,
    pub ns: Netns,
}

/// A child process killed (and reaped) on drop.
pub struct ChildGuard {
    pub what: String,
    child: Child,
}

impl ChildGuard {
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

/// What the XDP_PASS stub on the director's switch port is called among the children
/// (it stays when the balancer is stopped and started again).
const PASS_STUB: &str = "XDP pass stub on the switch port";

pub struct DrCluster {
    pub id: String,
    pub xlb: PathBuf,
    pub pin_dir: PathBuf,
    pub mode: AttachMode,
    /// Processes (xlb run, HTTP servers, XDP stub); stopped before the namespaces go.
    children: Vec<ChildGuard>,
    pub client: Netns,
    pub director: Netns,
    pub reals: Vec<RealServer>,
    pub switch: Netns,
}

impl DrCluster {
    /// Builds the namespaces and links and starts an HTTP server on each real server.
    /// `xlb` is the binary used for the servers and, later, the balancer.
    pub fn build(xlb: &Path, real_count: usize, mode: AttachMode) -> Result<Self> {
        netns::require_root("the namespace cluster")?;
        let id = netns::run_id();
        let ns = |role: &str| Netns::create(&format!("xlb-{id}-{role}"));
        let switch = ns("sw")?;
        switch.ip(&["link", "add", "br0", "type", "bridge"])?;
        switch.ip(&["link", "set", "br0", "up"])?;
        let client = ns("client")?;
        let director = ns("dir")?;
        let mut reals = Vec::new();
        for i in 0..real_count {
            let name = format!("rs{}", i + 1);
            reals.push(RealServer { ns: ns(&name)?, ip: rip(i), name });
        }
        let mut cluster = Self {
            pin_dir: PathBuf::from(format!("/sys/fs/bpf/xlb-{id}")),
            id,
            xlb: xlb.to_owned(),
            mode,
            children: Vec::new(),
            client,
            director,
            reals,
            switch,
        };
        cluster.wire()?;
        cluster.start_http_servers()?;
        Ok(cluster)
    }

    /// Connects a host's eth0 to the bridge through a switch port named `port`.
    pub fn plug(&self, host: &Netns, port: &str, addr: Ipv4Addr) -> Result<()> {
        netns::veth(host, NIC, &self.switch, port)?;
        self.switch.ip(&["link", "set", port, "master", "br0"])?;
        self.switch.ip(&["link", "set", port, "up"])?;
        host.ip(&["addr", "add", &format!("{addr}/24"), "dev", NIC])?;
        host.ip(&["link", "set", NIC, "up"])?;
        Ok(())
    }

    fn wire(&mut self) -> Result<()> {
        self.plug(&self.client, "p-client", CIP)?;
        // XDP_TX leaves frames whose checksums the sender left to offload unfilled: the
        // client computes them in software.
        self.client.exec("ethtool", &["-K", NIC, "tx", "off"])?;
        self.plug(&self.director, "p-dir", DIP)?;
        // The director holds the VIP and answers ARP for it (ifconfig ens33:0 VIP/32 in the seeds).
        self.director.ip(&["addr", "add", &format!("{VIP}/32"), "dev", NIC])?;
        for rs in &self.reals {
            self.plug(&rs.ns, &format!("p-{}", rs.name), rs.ip)?;
            // The seeds' real-server script: VIP on lo, and never answer or announce it by ARP.
            netns::run(rs.ns.command(&self.xlb).args(["realserver", "setup", "--vip", &VIP.to_string()]))?;
        }
        Ok(())
    }

    /// On every real server: HTTP on :80 and a line echo on ECHO_PORT (long-lived
    /// connections), both naming the server.
    fn start_http_servers(&mut self) -> Result<()> {
        for rs in &self.reals {
            for (kind, port) in [("http-serve", 80), ("echo-serve", ECHO_PORT)] {
                let mut cmd = rs.ns.command(&self.xlb);
                cmd.args([kind, "--name", &rs.name, "--listen", &format!("0.0.0.0:{port}")]);
                let (guard, _) = spawn_until_ready(&format!("{kind} on {}", rs.name), cmd, Duration::from_secs(10))?;
                self.children.push(guard);
            }
        }
        Ok(())
    }

    /// Stops real server `index`'s HTTP server (as if the service died).
    pub fn stop_http(&mut self, index: usize) -> Result<()> {
        let what = format!("http-serve on {}", self.reals[index].name);
        let pos = self.children.iter().position(|c| c.what == what).with_context(|| format!("{what} is not running"))?;
        self.children.remove(pos).kill_hard()
    }

    /// Starts real server `index`'s HTTP server again.
    pub fn start_http(&mut self, index: usize) -> Result<()> {
        let rs = &self.reals[index];
        let mut cmd = rs.ns.command(&self.xlb);
        cmd.args(["http-serve", "--name", &rs.name, "--listen", "0.0.0.0:80"]);
        let (guard, _) = spawn_until_ready(&format!("http-serve on {}", rs.name), cmd, Duration::from_secs(10))?;
        self.children.push(guard);
        Ok(())
    }

    /// A TCP connection from the client namespace to VIP:`port` (the socket belongs to
    /// the client's namespace, whichever thread uses it).
    pub fn connect_from_client(&self, port: u16) -> Result<std::net::TcpStream> {
        let ns = std::fs::File::open(self.client.path())?;
        std::thread::scope(|s| {
            s.spawn(|| {
                use std::os::fd::AsRawFd;
                // On CPU 0 like curl(): round robin's cursor is per CPU.
                unsafe {
                    let mut set: libc::cpu_set_t = std::mem::zeroed();
                    libc::CPU_SET(0, &mut set);
                    libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
                }
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    bail!("entering {}: {}", self.client.name, std::io::Error::last_os_error());
                }
                let stream = std::net::TcpStream::connect_timeout(&(VIP, port).into(), Duration::from_secs(5))?;
                stream.set_read_timeout(Some(Duration::from_secs(5)))?;
                Ok(stream)
            })
            .join()
            .expect("connect thread")
        })
    }

    /// The director's `xlb` command line for `args` (what a user would type there).
    pub fn xlb_command(&self, args: &[&str]) -> Command {
        let mut cmd = self.director.command(&self.xlb);
        cmd.arg("--pin-dir").arg(&self.pin_dir).args(args);
        cmd
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
        self.start_xlb("run", extra)
    }

    /// `xlb daemon`: like `run`, but a stop signal leaves the fast path running.
    pub fn start_daemon(&mut self, extra: &[&str]) -> Result<Vec<String>> {
        self.start_xlb("daemon", extra)
    }

    /// Kills `xlb run`/`xlb daemon` with SIGKILL (no cleanup of any kind).
    pub fn kill_balancer(&mut self) -> Result<()> {
        let pos = self.children.iter().position(|c| c.what.starts_with("xlb run")).context("xlb is not running")?;
        let mut child = self.children.remove(pos);
        child.kill_hard()
    }

    /// Sends `signal` to the running `xlb run`/`xlb daemon`.
    pub fn signal_balancer(&self, signal: i32) -> Result<()> {
        let child = self.children.iter().find(|c| c.what.starts_with("xlb run")).context("xlb is not running")?;
        unsafe { libc::kill(child.pid() as i32, signal) };
        Ok(())
    }

    fn start_xlb(&mut self, how: &str, extra: &[&str]) -> Result<Vec<String>> {
        let stub_running = self.children.iter().any(|c| c.what == PASS_STUB);
        if self.mode != AttachMode::Skb && !stub_running {
            // Native XDP_TX on a veth is delivered only if the peer runs XDP too.
            let mut stub = self.switch.command(&self.xlb);
            stub.args(["xdp-pass-stub", "--iface", "p-dir"]);
            let (guard, _) = spawn_until_ready(PASS_STUB, stub, Duration::from_secs(20))?;
            self.children.push(guard);
        }
        let mut args = vec![how, "--iface", NIC, "--mode", self.mode.name()];
        args.extend_from_slice(extra);
        let cmd = self.xlb_command(&args);
        let (guard, lines) = spawn_until_ready("xlb run on the director", cmd, Duration::from_secs(30))?;
        self.children.push(guard);
        Ok(lines)
    }

    /// Stops `xlb run` with SIGINT (as Ctrl-C would) and returns its exit status.
    pub fn stop_balancer(&mut self) -> Result<std::process::ExitStatus> {
        let pos = self
            .children
            .iter()
            .position(|c| c.what.starts_with("xlb run"))
            .context("xlb run is not running")?;
        self.children.remove(pos).interrupt()
    }

    /// Adds the DR round-robin service VIP:80 with every real server.
    pub fn configure_service(&self) -> Result<()> {
        let service = format!("{VIP}:80");
        self.xlb(&["service", "add", "tcp", &service, "--scheduler", "rr"])?;
        for rs in &self.reals {
            self.xlb(&["real", "add", "tcp", &service, &rs.ip.to_string()])?;
        }
        Ok(())
    }

    /// `curl http://VIP/path` from the client, on CPU 0 so that round robin's per-CPU
    /// cursor sees every new connection. Returns the body.
    pub fn curl(&self, path: &str) -> Result<String> {
        self.client.exec(
            "taskset",
            &["-c", "0", "curl", "--silent", "--show-error", "--fail", "--max-time", "5", &format!("http://{VIP}{path}")],
        )
    }
}

impl Drop for DrCluster {
    fn drop(&mut self) {
        // Stop xlb run first (it detaches and unpins), then the rest; the namespaces
        // (and their veths) go when the Netns fields drop.
        while let Some(child) = self.children.pop() {
            drop(child);
        }
        // Setup's state file lives in the host's /run/xlb, which outlives the namespaces.
        for rs in &self.reals {
            let _ = netns::run(rs.ns.command(&self.xlb).args(["realserver", "teardown"]));
        }
        crate::daemon::detach_and_unpin(&self.pin_dir);
        let paths = crate::api::Paths::for_pin_dir(&self.pin_dir);
        let _ = std::fs::remove_file(paths.state);
        let _ = std::fs::remove_file(paths.socket);
    }
}
