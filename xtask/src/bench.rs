//! `cargo xtask bench`: runs `xlb-bench` (every section, or `--only SECTION`) and writes
//! bench/results/<date>.md, its chart, <date>.json and (full runs) README's table. With `--ipvs-vm` it first runs
//! section 2 inside a VM whose Debian kernel has IPVS (bench/ipvs-vm/), so xlb and IPVS
//! are compared in the same VM boot.

use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Where the VM's kernel, root filesystem and initramfs are cached between runs.
const VM_CACHE: &str = "/var/tmp/xlb-ipvs-vm";
/// A VM that has not printed VM-READY by then is not booting under this accelerator.
const BOOT_LIMIT: Duration = Duration::from_secs(90);
/// The whole VM run, boot to power-off.
const VM_TIMEOUT_SECS: u32 = 900;

/// Katran's object (GPL-2.0), loaded from the shared anchors at bench time only: beside
/// the checkout or a folder above it, else the machine's /work/shared (the bench reads
/// XLB_KATRAN_OBJ instead when it is set; xlb-bench's `katran::locate_object`
/// looks in the same places).
fn katran_object(root: &Path) -> std::path::PathBuf {
    const BELOW_SHARED: &str = "shared/anchors/katran/balancer.bpf.o";
    let root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    root.ancestors()
        .map(|dir| dir.join(BELOW_SHARED))
        .chain(std::iter::once(Path::new("/work").join(BELOW_SHARED)))
        .find(|p| p.is_file())
        .unwrap_or_else(|| root.join("..").join(BELOW_SHARED))
}

pub fn bench(root: &Path, xlb: &Path, quick: bool, ipvs_vm: bool, only: Option<&str>) -> Result<Command> {
    if ipvs_vm && only.is_some_and(|s| s != "e2e") {
        bail!("--ipvs-vm runs the end-to-end section in a VM: it goes with all sections or --only e2e");
    }
    let mut command = Command::new(xlb.with_file_name("xlb-bench"));
    command.arg("--xlb").arg(xlb);
    if quick {
        command.arg("--quick");
    }
    if let Some(section) = only {
        command.arg("--sections").arg(section);
    }
    command.arg("--katran-obj").arg(katran_object(root));
    if ipvs_vm {
        let (results, accel, note) = run_ipvs_vm(root, xlb, quick)?;
        command
            .arg("--vm-json")
            .arg(results)
            .arg("--vm-accel")
            .arg(accel)
            .arg("--vm-accel-note")
            .arg(note);
    }
    if quick {
        // A smoke run's figures mean nothing: they stay out of bench/results and README.
        command.arg("--report").arg(root.join("target/bench-quick"));
    } else {
        // The control section alone gets a directory of its own: its report must not
        // replace the day's full (or fast-path) one.
        let dir = if only == Some("control") { "bench/results/control" } else { "bench/results" };
        command.arg("--report").arg(root.join(dir));
        // README's table: a full run replaces it; a fast-path run replaces its fast-path
        // rows and keeps the end-to-end ones of the run before.
        if only.is_none() || only == Some("fastpath") {
            command.arg("--readme").arg(root.join("README.md"));
        }
    }
    Ok(command)
}

/// KVM only when /dev/kvm opens and the CPU shows hardware virtualisation: a /dev/kvm
/// without vmx/svm (a paravirtual KVM such as PVM) cannot boot Debian's stock kernel.
fn choose_accel() -> (&'static str, String) {
    if OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        return (
            "tcg",
            "software emulation, /dev/kvm cannot be opened".into(),
        );
    }
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let hw = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    if !hw {
        return (
            "tcg",
            "software emulation, /dev/kvm exists but the CPU shows no vmx/svm, so it cannot boot a stock kernel".into(),
        );
    }
    ("kvm", "hardware virtualisation".into())
}

/// Builds the cache if needed, boots the VM with `xlb`, and returns the results file,
/// the accelerator (KVM or TCG) and why.
fn run_ipvs_vm(root: &Path, xlb: &Path, quick: bool) -> Result<(PathBuf, String, String)> {
    let scripts = root.join("bench/ipvs-vm");
    println!("xtask: preparing the IPVS VM (Debian kernel, root filesystem) in {VM_CACHE}");
    let status = Command::new("bash")
        .arg(scripts.join("setup.sh"))
        .env("D", VM_CACHE)
        .status()
        .context("running bench/ipvs-vm/setup.sh")?;
    if !status.success() {
        bail!("bench/ipvs-vm/setup.sh failed");
    }
    let (mut accel, mut why) = choose_accel();
    println!(
        "xtask: booting the IPVS VM under {} ({why})",
        accel.to_uppercase()
    );
    let log = root.join("target/bench-ipvs-vm.log");
    let mut booted = boot(&scripts, xlb, accel, quick, &log)?;
    if !booted && accel == "kvm" {
        why = "software emulation, the VM did not boot under KVM".into();
        accel = "tcg";
        println!("xtask: no boot under KVM; booting under TCG");
        booted = boot(&scripts, xlb, accel, quick, &log)?;
    }
    if !booted {
        bail!(
            "the IPVS VM did not boot under {accel}; its console is in {}",
            log.display()
        );
    }
    let results = Path::new(VM_CACHE).join("rootfs/root/results.json");
    let kept = root.join("target/bench-ipvs-vm.json");
    fs::copy(&results, &kept).with_context(|| {
        format!(
            "the VM job left no results ({}); see {}",
            results.display(),
            log.display()
        )
    })?;
    Ok((kept, accel.to_uppercase(), why))
}

/// One VM run, its console echoed and kept in `log`. Ok(false): it never booted.
fn boot(scripts: &Path, xlb: &Path, accel: &str, quick: bool, log: &Path) -> Result<bool> {
    let _ = fs::remove_file(Path::new(VM_CACHE).join("rootfs/root/results.json"));
    let mut child = Command::new("bash")
        .arg(scripts.join("run.sh"))
        .arg(xlb)
        .env("D", VM_CACHE)
        .env("ACCEL", accel)
        .env("TIMEOUT", VM_TIMEOUT_SECS.to_string())
        .env("QUICK", if quick { "1" } else { "" })
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting bench/ipvs-vm/run.sh")?;
    let stdout = child.stdout.take().context("VM console")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let (mut console, mut ready, mut exit) = (String::new(), false, None);
    loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(line) => {
                println!("  vm| {line}");
                ready |= line.contains("VM-READY");
                if let Some(rc) = line.split("VM-JOB-EXIT rc=").nth(1) {
                    exit = rc.split_whitespace().next().map(str::to_string);
                }
                console.push_str(&line);
                console.push('\n');
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if !ready && started.elapsed() > BOOT_LIMIT {
                    // SIGTERM: `timeout` (what run.sh became) passes it on to qemu.
                    // SAFETY: kill(2) on our own child's pid.
                    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let _ = child.wait();
    fs::write(log, &console)?;
    if !ready {
        return Ok(false);
    }
    match exit.as_deref() {
        Some("0") => Ok(true),
        Some(rc) => bail!(
            "the bench inside the VM failed (exit {rc}); its console is in {}",
            log.display()
        ),
        None => bail!(
            "the VM stopped before its job finished (timeout {VM_TIMEOUT_SECS} s?); its console is in {}",
            log.display()
        ),
    }
}
