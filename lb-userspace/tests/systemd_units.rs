//! The systemd units in packaging/systemd: the keys they need, `systemd-analyze verify`,
//! and the real-server unit's commands run (as systemd would expand them from the
//! shipped /etc/default file) by the real binary in a fresh network namespace.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use lb_userspace::netns::{self, Netns};

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
    assert_eq!(value(&director, "Service", "Type"), "simple");
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
