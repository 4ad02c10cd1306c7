//! Toolchain and package bootstrap: everything `cargo xtask` needs before it can build
//! the eBPF object or run the tests. Every step checks first and only installs what is
//! missing, printing what it installs.

use std::collections::BTreeSet;
use std::env;
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use anyhow::{Context, Result, bail};

/// The bpf-linker release the eBPF build is pinned to.
const BPF_LINKER_VERSION: &str = "0.10.3";

/// (command, Debian package providing it) for the tools the tests and the demo call.
const PACKAGES: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("nsenter", "util-linux"),
    ("taskset", "util-linux"),
    ("ethtool", "ethtool"),
    ("curl", "curl"),
    ("bpftool", "bpftool"),
    ("nft", "nftables"),
    ("wrk", "wrk"),
    // Only `systemd-analyze verify` of the unit files in packaging/systemd.
    ("systemd-analyze", "systemd"),
    // Headless screenshots and DOM dumps of the daemon's status page.
    ("chromium", "chromium"),
    // The bench's real servers and its userspace balancer to compare with.
    ("nginx", "nginx-light"),
    ("haproxy", "haproxy"),
    // VIP announcement by BGP (xlb/tests/bgp.rs runs a router's and a director's BIRD).
    ("bird", "bird2"),
    ("birdc", "bird2"),
];

/// (file, Debian package providing it) for data files the tests read.
const FILES: &[(&str, &str)] = &[
    // Service names in ipvsadm-save files (`-t VIP:http`).
    ("/etc/services", "netbase"),
    // Text in the status page's screenshots.
    ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "fonts-dejavu-core"),
];

/// Directories searched for commands besides PATH: a non-login root shell often lacks
/// the sbin directories where ip, nft and bpftool live.
const EXTRA_BIN_DIRS: &[&str] = &["/usr/sbin", "/sbin"];

/// A `Command` for `program` whose PATH includes cargo's bin directory.
///
/// bpf-linker is installed there and the eBPF build invokes it by name; we can't change
/// our own PATH (`set_var` is unsafe in edition 2024), so every child gets it instead.
pub fn cmd(program: &str) -> Command {
    let mut command = Command::new(program);
    command.env("PATH", child_path());
    command
}

/// Our PATH with `$CARGO_HOME/bin` (default `$HOME/.cargo/bin`) prepended if missing.
fn child_path() -> &'static OsString {
    static PATH: OnceLock<OsString> = OnceLock::new();
    PATH.get_or_init(|| {
        let current = env::var_os("PATH").unwrap_or_default();
        let Some(cargo_bin) = cargo_bin_dir() else {
            return current;
        };
        let mut dirs: Vec<PathBuf> = env::split_paths(&current).collect();
        if !dirs.contains(&cargo_bin) {
            dirs.insert(0, cargo_bin);
        }
        env::join_paths(dirs).unwrap_or(current)
    })
}

fn cargo_bin_dir() -> Option<PathBuf> {
    let home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")))?;
    Some(home.join("bin"))
}

/// Whether this process runs as root (needed to load XDP programs and install packages).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Makes sure the nightly toolchain, rust-src, bpf-linker and the Debian packages the
/// tests and demo use are present, installing whatever is missing.
pub fn ensure_setup() -> Result<()> {
    ensure_nightly()?;
    ensure_rust_src()?;
    ensure_bpf_linker()?;
    ensure_packages()?;
    // A missing bpffs at /sys/fs/bpf is handled by xlb itself.
    Ok(())
}

/// Runs `command` and returns its stdout, or None if it could not run or failed.
fn output_of(command: &mut Command) -> Option<String> {
    let output = command.stderr(Stdio::null()).output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs `command` with inherited stdio; Ok(false) if it ran and failed.
fn succeeds(command: &mut Command) -> Result<bool> {
    let status = command
        .status()
        .with_context(|| format!("failed to start {:?}", command.get_program()))?;
    Ok(status.success())
}

/// The eBPF crate is built with `-Z build-std`, which only nightly offers.
fn ensure_nightly() -> Result<()> {
    let toolchains = output_of(cmd("rustup").args(["toolchain", "list"])).context(
        "`rustup toolchain list` failed: the eBPF build needs rustup (https://rustup.rs) \
         and its nightly toolchain",
    )?;
    if toolchains.lines().any(|line| line.starts_with("nightly")) {
        return Ok(());
    }
    println!("xtask: installing the nightly Rust toolchain (needed to build the eBPF program)");
    let installed =
        succeeds(cmd("rustup").args(["toolchain", "install", "nightly", "--profile", "minimal"]))?;
    if !installed {
        bail!(
            "the eBPF build needs the nightly toolchain; install it with: rustup toolchain install nightly"
        );
    }
    Ok(())
}

/// build-std compiles core for the BPF target from source, which needs rust-src.
fn ensure_rust_src() -> Result<()> {
    let components = output_of(cmd("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))
    .unwrap_or_default();
    if components.lines().any(|line| line.contains("rust-src")) {
        return Ok(());
    }
    println!("xtask: adding the rust-src component to the nightly toolchain");
    let added =
        succeeds(cmd("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))?;
    if !added {
        bail!(
            "the eBPF build needs nightly's rust-src; add it with: rustup component add rust-src --toolchain nightly"
        );
    }
    Ok(())
}

/// rustc links BPF objects through bpf-linker; the version is pinned so the generated
/// object (and its BTF) is the one the tests were written against.
fn ensure_bpf_linker() -> Result<()> {
    let version = output_of(cmd("bpf-linker").arg("--version")).unwrap_or_default();
    if version.contains(BPF_LINKER_VERSION) {
        return Ok(());
    }
    let spec = format!("bpf-linker@{BPF_LINKER_VERSION}");
    match version.trim() {
        "" => println!("xtask: installing {spec} (links the eBPF program)"),
        found => println!("xtask: found {found}, installing {spec} (links the eBPF program)"),
    }
    let installed = succeeds(cmd("cargo").args(["+nightly", "install", &spec, "--locked"]))?;
    if !installed {
        bail!(
            "installing bpf-linker failed; the eBPF build needs it: \
             cargo +nightly install {spec} --locked"
        );
    }
    Ok(())
}

/// The cargo-fuzz release the parser fuzz targets (fuzz/) are built and run with.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// cargo-fuzz builds and runs the parser fuzz targets (libFuzzer) on nightly; installed
/// only when they run (`cargo xtask fuzz --parsers`, the full `cargo xtask test`).
pub fn ensure_cargo_fuzz() -> Result<()> {
    let version = output_of(cmd("cargo").args(["+nightly", "fuzz", "--version"])).unwrap_or_default();
    if version.contains(CARGO_FUZZ_VERSION) {
        return Ok(());
    }
    let spec = format!("cargo-fuzz@{CARGO_FUZZ_VERSION}");
    println!("xtask: installing {spec} (runs the parser fuzz targets)");
    let installed = succeeds(cmd("cargo").args(["+nightly", "install", &spec, "--locked"]))?;
    if !installed {
        bail!("installing cargo-fuzz failed; the parser fuzzing needs it: cargo +nightly install {spec} --locked");
    }
    Ok(())
}

/// Whether `name` is an executable file in our (child) PATH or the sbin directories.
fn command_exists(name: &str) -> bool {
    env::split_paths(child_path())
        .chain(EXTRA_BIN_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .any(|path| {
            path.metadata()
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
}

/// Installs (via apt-get, as root) the packages whose commands are missing.
fn ensure_packages() -> Result<()> {
    let missing: BTreeSet<&str> = PACKAGES
        .iter()
        .filter(|(command, _)| !command_exists(command))
        .chain(FILES.iter().filter(|(file, _)| !std::path::Path::new(file).exists()))
        .map(|&(_, package)| package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let packages: Vec<&str> = missing.into_iter().collect();
    let install_line = format!(
        "apt-get install -y --no-install-recommends {}",
        packages.join(" ")
    );
    if !is_root() {
        bail!(
            "the tests and the demo need these packages: {}; install them as root with: \
             apt-get update && {install_line}",
            packages.join(", ")
        );
    }
    println!("xtask: installing {}", packages.join(" "));
    let apt = |args: &[&str]| {
        succeeds(
            cmd("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    };
    if !apt(&["update"])? {
        bail!("`apt-get update` failed; then run: {install_line}");
    }
    let mut install = vec!["install", "-y", "--no-install-recommends"];
    install.extend(&packages);
    if !apt(&install)? {
        bail!("`{install_line}` failed");
    }
    Ok(())
}
