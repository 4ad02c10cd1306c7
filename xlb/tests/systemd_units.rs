//! The systemd units in packaging/systemd: the keys they need, `systemd-analyze verify`,
//! and the real-server unit's commands run (as systemd would expand them from the
//! shipped /etc/default file) by the real binary in a fresh network namespace.
use std::{
    fs, io,
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use xlb_core::{
    loader::AttachMode,
    netns::{self, Netns},
};
use xlb_testkit::testbed::{DrCluster, rip};

const XLB: &str = env!("CARGO_BIN_EXE_xlb");
/// Where README.md's "Install as a service" puts the binary.
const INSTALLED_XLB: &str = "/usr/local/bin/xlb";
const UNITS: [&str; 2] = ["xlb.service", "xlb-realserver.service"];

fn packaging() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/systemd")
}

/// (section, key, value) of every setting in a unit file, in order.
fn unit(name: &str) -> Vec<(String, String, String)> {
    let path = packaging().join(name);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut section = String::new();
    let mut settings = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with(['#', ';'])) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
        } else {
            let (key, value) = line.split_once('=').unwrap_or_else(|| panic!("{name}: not KEY=VALUE: {line}"));
            settings.push((section.clone(), key.trim().to_string(), value.trim().to_string()));
        }
    }
    settings
}

fn values(settings: &[(String, String, String)], section: &str, key: &str) -> Vec<String> {
    settings.iter().filter(|(s, k, _)| s == section && k == key).map(|(_, _, v)| v.clone()).collect()
}

/// The one value of `key`, which must be set exactly once.
fn value(settings: &[(String, String, String)], section: &str, key: &str) -> String {
    let found = values(settings, section, key);
    assert_eq!(found.len(), 1, "[{section}] {key} must be set once, is {found:?}");
    found[0].clone()
}

#[test]
fn units_have_their_keys_and_the_documented_binary() {
    let readme = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap();
    assert!(readme.contains(&format!("install -m 0755 target/release/xlb {INSTALLED_XLB}")), "README documents the install path");
    for name in UNITS {
        let u = unit(name);
        assert!(!value(&u, "Unit", "Description").is_empty());
        assert_eq!(value(&u, "Install", "WantedBy"), "multi-user.target", "{name}");
        let env_file = value(&u, "Service", "EnvironmentFile");
        let default = env_file.strip_prefix("/etc/default/").unwrap_or_else(|| panic!("{name}: EnvironmentFile {env_file}"));
        assert!(packaging().join(format!("{default}.default")).exists(), "{name}: template for {env_file} shipped");
        for key in ["ExecStart", "ExecStop"] {
            for command in values(&u, "Service", key) {
                assert!(command.starts_with(&format!("{INSTALLED_XLB} ")), "{name}: {key}={command}");
            }
        }
    }
    let director = unit("xlb.service");
    // Readiness by sd_notify (tests/observability.rs receives it from a real daemon);
    // the default NotifyAccess=main takes it from the daemon only, not from its checks.
    assert_eq!(value(&director, "Service", "Type"), "notify");
    assert!(values(&director, "Service", "NotifyAccess").iter().all(|v| v == "main"), "NotifyAccess stays main");
    assert!(value(&director, "Service", "ExecStart").starts_with("/usr/local/bin/xlb daemon --iface ${IFACE} --config ${CONFIG}"));
    let real = unit("xlb-realserver.service");
    assert_eq!(value(&real, "Service", "Type"), "oneshot");
    assert_eq!(value(&real, "Service", "RemainAfterExit"), "yes");
    assert!(value(&real, "Service", "ExecStart").starts_with("/usr/local/bin/xlb realserver setup "));
    assert!(value(&real, "Service", "ExecStop").starts_with("/usr/local/bin/xlb realserver teardown "));
}

#[test]
fn systemd_analyze_verifies_the_units() {
    let analyze = which("systemd-analyze")
        .expect("systemd-analyze is missing: install Debian's `systemd` package (cargo xtask test installs it)");
    // A scratch root holding the host's units (for the targets ours name), ours and the
    // binary at its install path, which verify checks is executable.
    let root = std::env::temp_dir().join(format!("xlb-units-{}", netns::run_id()));
    let _cleanup = RemoveDir(root.clone());
    let copy = |from: &Path, to: &str| {
        let to = root.join(to);
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        netns::run(Command::new("cp").arg("-a").arg(from).arg(&to)).unwrap();
    };
    copy(Path::new("/usr/lib/systemd/system"), "usr/lib/systemd/system");
    std::os::unix::fs::symlink("usr/lib", root.join("lib")).unwrap();
    copy(Path::new(XLB), INSTALLED_XLB.trim_start_matches('/'));
    let mut args = vec!["verify".to_string(), "--man=no".into(), format!("--root={}", root.display())];
    for name in UNITS {
        copy(&packaging().join(name), &format!("etc/systemd/system/{name}"));
        args.push(format!("/etc/systemd/system/{name}"));
    }
    let out = Command::new(analyze).args(&args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Unknown keys are only warned about: any output is a finding.
    assert!(out.status.success() && stderr.trim().is_empty(), "systemd-analyze {args:?} ({}): {stderr}", out.status);
}

struct RemoveDir(PathBuf);
impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn which(program: &str) -> Option<PathBuf> {
    ["/usr/bin", "/bin", "/usr/sbin", "/sbin"].iter().map(|d| Path::new(d).join(program)).find(|p| p.exists())
}

/// KEY=VALUE lines of an environment file (quotes around the value removed).
fn environment_file(name: &str) -> Vec<(String, String)> {
    let text = fs::read_to_string(packaging().join(name)).unwrap();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or_else(|| panic!("{name}: not KEY=VALUE: {l}"));
            (k.to_string(), v.trim_matches('"').to_string())
        })
        .collect()
}

/// A command line as systemd expands it: `${X}` in place, a lone `$X` split into words.
fn expand(command: &str, env: &[(String, String)]) -> Vec<String> {
    let lookup = |name: &str| env.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_default();
    let mut words = Vec::new();
    for word in command.split_whitespace() {
        if let Some(name) = word.strip_prefix('$').filter(|n| !n.starts_with('{')) {
            words.extend(lookup(name).split_whitespace().map(String::from));
        } else {
            let mut expanded = word.to_string();
            for (key, _) in env {
                expanded = expanded.replace(&format!("${{{key}}}"), &lookup(key));
            }
            assert!(!expanded.contains('$'), "unset variable in {command}");
            words.push(expanded);
        }
    }
    words
}

#[test]
fn realserver_unit_sets_up_and_tears_down_with_the_shipped_defaults() {
    assert_eq!(unsafe { libc::geteuid() }, 0, "this test creates a network namespace: run it as root (cargo xtask test)");
    let u = unit("xlb-realserver.service");
    let mut env: Vec<(String, String)> = values(&u, "Service", "Environment")
        .iter()
        .map(|e| e.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).unwrap())
        .collect();
    env.extend(environment_file("xlb-realserver.default"));
    let vip = env.iter().find(|(k, _)| k == "VIP").unwrap().1.clone();

    let ns = Netns::create(&format!("xlb-{}-unit", netns::run_id())).unwrap();
    let _teardown = TeardownOnDrop(&ns);
    let run = |key: &str| {
        let words = expand(&value(&u, "Service", key), &env);
        assert_eq!(words[0], INSTALLED_XLB);
        netns::run(ns.command(XLB).args(&words[1..])).unwrap_or_else(|e| panic!("{key}: {e:#}"))
    };
    let status = || ns.command(XLB).args(["realserver", "status", "--vip", &vip]).output().unwrap().status;
    run("ExecStart");
    assert!(status().success(), "after ExecStart the real server is set up");
    run("ExecStop");
    assert!(!status().success(), "after ExecStop it is not");
}

/// Removes the setup's state file from the host's /run/xlb even if the test fails.
struct TeardownOnDrop<'a>(&'a Netns);
impl Drop for TeardownOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.command(XLB).args(["realserver", "teardown"]).output();
    }
}

/// One sd_notify datagram, as text.
fn receive(socket: &UnixDatagram, what: &str) -> String {
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).unwrap_or_else(|e| panic!("no {what} from the daemon on its NOTIFY_SOCKET: {e}"));
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

/// `Type=notify` as systemd runs it: the daemon started with $NOTIFY_SOCKET naming a
/// datagram socket this test owns. READY=1 must come once the service from --config is
/// in the maps (listed the moment READY=1 arrives), STOPPING=1 on SIGTERM; a config
/// file that is refused sends nothing.
#[test]
fn daemon_notifies_ready_once_the_config_is_applied_and_stopping_on_sigterm() {
    assert_eq!(unsafe { libc::geteuid() }, 0, "this test creates namespaces and attaches XDP: run it as root (cargo xtask test)");
    let c = DrCluster::build(Path::new(XLB), 1, AttachMode::Skb).expect("build the namespace cluster");
    let dir = std::env::temp_dir().join(format!("xlb-notify-{}", netns::run_id()));
    fs::create_dir_all(&dir).unwrap();
    let _cleanup = RemoveDir(dir.clone());
    let notify_socket = dir.join("notify");
    let socket = UnixDatagram::bind(&notify_socket).unwrap();
    let daemon = |config: &Path| {
        let mut cmd = c.xlb_command(&["daemon", "--iface", "eth0", "--mode", "skb", "--config", config.to_str().unwrap()]);
        cmd.env("NOTIFY_SOCKET", &notify_socket).stdin(Stdio::null()).stdout(Stdio::null());
        cmd
    };

    let bad = dir.join("bad.toml");
    fs::write(&bad, "[[service]]\nvip = \"10.99.0.100\"\nport = \"eighty\"\nreals = [\"10.99.0.11\"]\n").unwrap();
    let out = daemon(&bad).output().unwrap();
    assert!(!out.status.success(), "a bad config file is refused");
    socket.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    let err = socket.recv(&mut buf).map(|n| String::from_utf8_lossy(&buf[..n]).into_owned());
    assert!(matches!(&err, Err(e) if e.kind() == io::ErrorKind::WouldBlock), "a refused start notifies nothing: {err:?}");
    socket.set_nonblocking(false).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(30))).unwrap();

    let config = dir.join("xlb.toml");
    fs::write(&config, format!("[[service]]\nvip = \"10.99.0.100\"\nport = 80\nscheduler = \"rr\"\nreals = [\"{}\"]\n", rip(0))).unwrap();
    let mut child = Stopped(daemon(&config).spawn().unwrap());
    let ready = receive(&socket, "READY=1");
    // Listed before anything else happens: READY=1 came after the configuration was applied.
    let list: serde_json::Value = serde_json::from_str(&c.xlb(&["--output", "json", "list"]).unwrap()).unwrap();
    let lines: Vec<&str> = ready.lines().collect();
    assert_eq!(lines.first(), Some(&"READY=1"), "{ready:?}");
    assert!(lines.contains(&"STATUS=attached to eth0"), "{ready:?}");
    let reals = list[0]["reals"].as_array().unwrap_or_else(|| panic!("the configured service is listed at READY=1: {list}"));
    assert_eq!(reals.iter().map(|r| r["address"].as_str().unwrap()).collect::<Vec<_>>(), [rip(0).to_string()], "{list}");
    assert!(c.director.ip(&["link", "show", "eth0"]).unwrap().contains("xdp"), "the fast path is attached at READY=1");

    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    assert_eq!(receive(&socket, "STOPPING=1"), "STOPPING=1");
    let status = child.0.wait().unwrap();
    assert!(status.success(), "the daemon stops cleanly on SIGTERM: {status}");
}

/// The daemon, stopped with SIGINT and reaped if the test ends early.
struct Stopped(Child);
impl Drop for Stopped {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
            let _ = self.0.wait();
        }
    }
}
