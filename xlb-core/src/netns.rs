//! Network namespaces the project creates for its demo and tests, removed on drop.
use std::{
    path::PathBuf,
    process::{Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail};

/// A short id unique to this run, for namespace and interface names.
pub fn run_id() -> String {
    // Tests build several clusters in one process at once: a counter keeps them apart.
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seq = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let mixed = (std::process::id() << 4) ^ (nanos >> 10) ^ seq.wrapping_mul(0x9e37);
    format!("{:05x}{:x}", mixed & 0xfffff, seq & 0xf)
}

/// Runs a command and returns its stdout; a failure carries the command and its stderr.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.stdin(Stdio::null()).output().with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Fails with a clear message unless we can create namespaces and load BPF.
pub fn require_root(what: &str) -> Result<()> {
    if unsafe { libc::geteuid() } != 0 {
        bail!("{what} needs root (network namespaces, XDP): run it as root");
    }
    Ok(())
}

pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn create(name: &str) -> Result<Self> {
        run(Command::new("ip").args(["netns", "add", name]))?;
        let ns = Self { name: name.to_string() };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// A command run inside the namespace. nsenter (not `ip netns exec`) keeps /sys and
    /// bpffs as they are, which the loader needs.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.path().display())).arg(program);
        cmd
    }

    /// Runs `program args…` inside the namespace, returning stdout.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String> {
        run(self.command(program).args(args))
    }

    /// `ip -n NAME args…`
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        run(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.exec("sysctl", &["-q", "-w", &format!("{key}={value}")]).map(drop)
    }
}

/// The calling thread inside a namespace until dropped (then back where it was).
pub struct Entered {
    previous: std::fs::File,
}

impl Netns {
    /// Moves the calling thread (only it) into the namespace: sockets it opens, netlink
    /// requests, route lookups and BPF_PROG_TEST_RUN's helpers then see this namespace.
    pub fn enter(&self) -> Result<Entered> {
        let previous = std::fs::File::open("/proc/thread-self/ns/net").context("opening this thread's namespace")?;
        let target = std::fs::File::open(self.path()).with_context(|| format!("opening {}", self.path().display()))?;
        setns(&target).with_context(|| format!("entering namespace {}", self.name))?;
        Ok(Entered { previous })
    }
}

fn setns(ns: &std::fs::File) -> std::io::Result<()> {
    nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
}

impl Drop for Entered {
    fn drop(&mut self) {
        // Failing to go back would leave this thread in a namespace about to be deleted.
        setns(&self.previous).expect("returning to the previous network namespace");
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).stderr(Stdio::null()).status();
    }
}

/// Creates a veth pair with one end (`a`) in `ns_a` and the other (`b`) in `ns_b`.
pub fn veth(ns_a: &Netns, a: &str, ns_b: &Netns, b: &str) -> Result<()> {
    run(Command::new("ip").args([
        "link", "add", a, "netns", &ns_a.name, "type", "veth", "peer", "name", b, "netns", &ns_b.name,
    ]))
    .map(drop)
}
