//! `cargo xtask`: builds, runs, demos and tests xlb, bootstrapping the eBPF toolchain
//! (nightly, rust-src, bpf-linker) and the system packages first.

mod bench;
mod setup;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};

use setup::{cmd, ensure_setup, is_root};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Build, run, demo and test xlb, the XDP layer-4 load balancer",
    long_about = "Build, run, demo and test xlb, the XDP layer-4 load balancer.\n\n\
        Every subcommand first checks the build prerequisites and installs what is missing: \
        the nightly toolchain with rust-src, bpf-linker 0.10.3 and (as root, via apt-get) \
        the tools the tests, demo and bench use: iproute2, util-linux, ethtool, curl, \
        bpftool, nftables, wrk, systemd (for systemd-analyze), chromium, nginx-light, haproxy \
        and bird2."
)]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build xlb (and its eBPF program) in release mode: target/release/xlb, with the test
    /// kit (xlb-testkit) and the bench (xlb-bench) beside it
    Build,
    /// Build xlb, then load it on the given interfaces until Ctrl-C (needs root)
    Run {
        /// Interface to attach the XDP program to (repeat for several)
        #[arg(long, value_name = "IFACE", required = true)]
        iface: Vec<String>,
        /// Services and real servers to configure at startup (TOML)
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// XDP attach mode (xlb's default: auto)
        #[arg(long, value_enum)]
        mode: Option<Mode>,
    },
    /// Build xlb, then run its self-contained demo in network namespaces (needs root)
    Demo {
        /// Number of client requests the demo sends (with --cluster: long-lived connections, default 300)
        #[arg(long, value_name = "N", conflicts_with = "iface")]
        requests: Option<u64>,
        /// Three xlb directors behind a router spreading flows by ECMP (BIRD: BGP, BFD);
        /// one is killed and brought back while connections run
        #[arg(long, conflicts_with = "iface")]
        cluster: bool,
        /// XDP attach mode (xlb's default: auto)
        #[arg(long, value_enum)]
        mode: Option<Mode>,
        /// Demo on a real NIC instead: same as `cargo xtask run --iface IFACE [--config FILE]`
        #[arg(long, value_name = "IFACE")]
        iface: Option<String>,
        /// With --iface: services and real servers to configure (TOML)
        #[arg(long, value_name = "FILE", requires = "iface")]
        config: Option<PathBuf>,
    },
    /// Build xlb, run its benchmarks and write bench/results/<date>.md, its chart and
    /// README's table (needs root)
    Bench {
        /// Tiny counts, to check the bench works (results go to target/bench-quick)
        #[arg(long)]
        quick: bool,
        /// Also compare with kernel IPVS inside a VM whose Debian kernel has it (builds
        /// and caches the VM in /var/tmp/xlb-ipvs-vm; installs qemu and debootstrap)
        #[arg(long)]
        ipvs_vm: bool,
        /// Run only this section: fastpath (xlb and Katran through BPF_PROG_TEST_RUN),
        /// e2e, scale or control (the controller's load times against issue 13's targets;
        /// its report goes to bench/results/control/). The results file is written;
        /// README's table is left alone.
        #[arg(long, value_name = "SECTION", value_parser = ["fastpath", "e2e", "scale", "control"])]
        only: Option<String>,
    },
    /// Run the test suite in release mode (needs root: it loads XDP programs and creates
    /// network namespaces)
    #[command(after_help = "Arguments after `--` go to `cargo test`, e.g.\n  \
                      cargo xtask test -- maglev -- --nocapture")]
    Test {
        /// Extra arguments for `cargo test`
        #[arg(last = true, value_name = "CARGO_TEST_ARGS")]
        args: Vec<String>,
    },
    /// Fuzz the fast path: millions of random and mutated frames through the real XDP
    /// object (BPF_PROG_TEST_RUN), every verdict, destination and counter checked
    /// (needs root; the test suite runs a short version of the same). With --parsers:
    /// coverage-guided fuzzing (cargo-fuzz, libFuzzer) of every parser instead
    #[command(after_help = "Parser targets (fuzz/fuzz_targets): ipvsadm_args, ipvsadm_restore, \
                      config_toml, api_request, packet_logic, tables")]
    Fuzz {
        /// Frames to send
        #[arg(long, default_value_t = 10_000_000)]
        frames: u64,
        /// Random seed (a failure prints the seed that replays it)
        #[arg(long)]
        seed: Option<u64>,
        /// Run the parser fuzz targets (fuzz/) instead of the fast path's frames
        #[arg(long, conflicts_with_all = ["frames", "seed"])]
        parsers: bool,
        /// With --parsers: seconds each target runs
        #[arg(long, default_value_t = 60, requires = "parsers")]
        seconds: u64,
        /// With --parsers: only this target (repeat for several)
        #[arg(long = "target", value_name = "TARGET", requires = "parsers")]
        targets: Vec<String>,
    },
}

/// XDP attach mode, passed through to `xlb --mode`.
#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    /// Native (driver) mode if the NIC supports it and would deliver (not on a veth whose
    /// peer runs no native XDP program), else generic
    Auto,
    /// Driver mode only
    Native,
    /// Generic (skb) mode, works on any interface
    Skb,
}

impl Mode {
    fn as_arg(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Native => "native",
            Mode::Skb => "skb",
        }
    }
}

fn main() -> Result<()> {
    // Parsing first: `--help` and `help` must answer without bootstrapping anything.
    let cli = Cli::parse();
    ensure_setup()?;
    match cli.command {
        Task::Build => {
            build()?;
            Ok(())
        }
        Task::Run {
            iface,
            config,
            mode,
        } => run(&iface, config.as_deref(), mode),
        // clap rejects --requests together with --iface.
        Task::Demo {
            mode,
            iface: Some(iface),
            config,
            ..
        } => {
            let mut hint = format!("cargo xtask run --iface {iface}");
            match &config {
                Some(file) => hint += &format!(" --config {}", file.display()),
                None => hint += " --config FILE",
            }
            println!("xtask: a demo on a real NIC is `{hint}`; running that");
            run(&[iface], config.as_deref(), mode)
        }
        Task::Demo {
            requests,
            mode,
            cluster,
            iface: None,
            ..
        } => demo(requests, mode, cluster),
        Task::Bench { quick, ipvs_vm, only } => {
            require_root_for_xlb("bench")?;
            let xlb = build()?;
            let command = bench::bench(workspace_root(), &xlb, quick, ipvs_vm, only.as_deref())?;
            exit_like(wait_through_ctrl_c(command)?)
        }
        Task::Test { args } => test(&args),
        Task::Fuzz { parsers: true, seconds, targets, .. } => fuzz_parsers(seconds, &targets),
        Task::Fuzz { frames, seed, .. } => fuzz(frames, seed),
    }
}

/// The workspace root: xtask lives at <root>/xtask.
fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask's manifest dir has a parent")
}

/// Builds the binaries in release mode (xlb-core's build.rs builds the eBPF object): the
/// product (xlb, xlbadm), the test kit (xlb-testkit) and the bench (xlb-bench), side by
/// side in target/release. Returns the path of the xlb binary.
fn build() -> Result<PathBuf> {
    let root = workspace_root();
    let status = cmd("cargo")
        .args(["build", "--release", "-p", "xlb", "-p", "xlb-testkit", "-p", "xlb-bench"])
        .current_dir(root)
        .status()
        .context("failed to start cargo")?;
    if !status.success() {
        bail!("building xlb failed");
    }
    let xlb = root.join("target/release/xlb");
    println!("xtask: built {}", xlb.display());
    Ok(xlb)
}

fn require_root(message: &str) -> Result<()> {
    if !is_root() {
        bail!("{message}");
    }
    Ok(())
}

/// xlb loads XDP programs and pins maps: checked before the (long) build so a non-root
/// user learns it right away.
fn require_root_for_xlb(subcommand: &str) -> Result<()> {
    require_root(&format!(
        "xlb {subcommand} needs root (CAP_BPF and CAP_NET_ADMIN): run as root or with sudo"
    ))
}

fn run(ifaces: &[String], config: Option<&Path>, mode: Option<Mode>) -> Result<()> {
    require_root_for_xlb("run")?;
    let xlb = build()?;
    let mut command = Command::new(xlb);
    command.arg("run");
    for iface in ifaces {
        command.args(["--iface", iface]);
    }
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    if let Some(mode) = mode {
        command.args(["--mode", mode.as_arg()]);
    }
    exit_like(wait_through_ctrl_c(command)?)
}

fn demo(requests: Option<u64>, mode: Option<Mode>, cluster: bool) -> Result<()> {
    require_root_for_xlb("demo")?;
    let xlb = build()?;
    // The demo is the test kit's: it needs test servers and namespaces, not the product.
    let mut command = Command::new(xlb.with_file_name("xlb-testkit"));
    command.arg("demo");
    if cluster {
        command.arg("--cluster");
    }
    if let Some(requests) = requests {
        command.args(["--requests", &requests.to_string()]);
    }
    if let Some(mode) = mode {
        command.args(["--mode", mode.as_arg()]);
    }
    exit_like(wait_through_ctrl_c(command)?)
}

/// Seconds each parser fuzz target runs in the full test suite (`cargo xtask test`
/// without arguments, as CI runs it).
const CI_PARSER_FUZZ_SECONDS: u64 = 20;

/// libFuzzer's seed in CI (env CI set): a CI failure then replays with the same
/// mutations, and a merge is not refused for a bug an earlier run's mutations happened
/// not to reach. `cargo xtask fuzz --parsers` on a workstation takes a fresh seed each run
/// (the way new inputs are found; they become seeds and unit tests).
const CI_PARSER_FUZZ_SEED: u64 = 20261130;

fn test(args: &[String]) -> Result<()> {
    require_root(
        "the test suite loads XDP programs and creates network namespaces: run it as root",
    )?;
    // The tests spawn xlb-testkit (test servers, XDP stubs): `cargo test` builds it in the
    // same invocation because xlb-testkit has integration tests of its own (a separate
    // `cargo build` first would compile xlb-core a second time, with other features).
    // A filtered run (`-- --test NAME`) selects no xlb-testkit test, so build the
    // binaries first there.
    if !args.is_empty() {
        build()?;
    }
    // The default members already leave out lb-ebpf, which only builds for BPF.
    let mut command = cmd("cargo");
    command
        .args(["test", "--release"])
        .args(args)
        .current_dir(workspace_root())
        .env("RUST_BACKTRACE", "1");
    let status = wait_through_ctrl_c(command)?;
    if !status.success() || !args.is_empty() {
        return exit_like(status);
    }
    // The whole suite (CI) also runs every parser fuzz target for a bounded time.
    fuzz_parsers(CI_PARSER_FUZZ_SECONDS, &[])
}

/// The parser fuzz targets, fuzz/fuzz_targets/NAME.rs (fuzz/Cargo.toml's [[bin]]s).
/// A new parser adds a target file, its [[bin]], seeds in fuzz/seeds/NAME/ and its name
/// here.
const PARSER_TARGETS: &[&str] = &[
    "ipvsadm_args",
    "ipvsadm_restore",
    "config_toml",
    "api_request",
    "packet_logic",
    "tables",
    "keepalived_conf",
    "sync_message",
];

/// Where the fuzz targets are built: outside the checkout, so that a fresh clone (CI)
/// on the same machine reuses the instrumented dependencies (a cold build is the
/// longest part of a short fuzzing run).
const FUZZ_TARGET_DIR: &str = "/var/tmp/xlb-fuzz-target";

/// cargo-fuzz's options for every build and run: no sanitizer (safe Rust: ASan finds
/// nothing the borrow checker has not, and costs time) and debug assertions on, so an
/// arithmetic overflow is a crash.
const CARGO_FUZZ_FLAGS: &[&str] = &["--sanitizer", "none", "--debug-assertions"];

/// Builds the parser fuzz targets, then runs each for `seconds` with its checked-in
/// seeds (fuzz/seeds/TARGET, read-only) and the corpus it grows (fuzz/corpus/TARGET).
/// A failing input lands in fuzz/artifacts/TARGET/; every target runs even when one
/// fails, and the command fails if any did.
///
/// Each target runs in a network namespace of its own with no interfaces up: ipvsadm's
/// grammar resolves host names (gethostbyname), and names the fuzzer invents must not
/// become DNS queries. /etc/hosts and /etc/services still answer, as on a director.
fn fuzz_parsers(seconds: u64, only: &[String]) -> Result<()> {
    require_root(
        "the parser fuzzers run in a network namespace of their own (host names never leave \
         the machine): run as root",
    )?;
    setup::ensure_cargo_fuzz()?;
    for name in only {
        if !PARSER_TARGETS.contains(&name.as_str()) {
            bail!("no parser fuzz target `{name}`; the targets: {}", PARSER_TARGETS.join(", "));
        }
    }
    let targets: Vec<&str> = PARSER_TARGETS
        .iter()
        .copied()
        .filter(|t| only.is_empty() || only.iter().any(|o| o == t))
        .collect();
    let root = workspace_root();
    let fuzz_dir = root.join("fuzz");
    // xlb-core's build.rs would build the eBPF object with the fuzzer's flags; the
    // parsers do not need it (an empty object keeps include_bytes! compiling).
    let cargo_fuzz = |args: &[&str]| {
        let mut command = cmd("cargo");
        command
            .args(["+nightly", "fuzz"])
            .args(args)
            .args(CARGO_FUZZ_FLAGS)
            .args(["--target-dir", FUZZ_TARGET_DIR])
            .current_dir(root)
            .env("AYA_BUILD_SKIP", "1");
        command
    };
    let started = std::time::Instant::now();
    if !cargo_fuzz(&["build"]).status().context("failed to start cargo fuzz")?.success() {
        bail!("building the parser fuzz targets failed");
    }
    println!("xtask: fuzz targets built in {:.0?}", started.elapsed());
    let mut failed = Vec::new();
    for target in &targets {
        let corpus = fuzz_dir.join("corpus").join(target);
        let seeds = fuzz_dir.join("seeds").join(target);
        std::fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
        println!("xtask: fuzzing {target} for {seconds} s (seeds: {})", seeds.display());
        let artifacts = fuzz_dir.join("artifacts").join(target);
        std::fs::create_dir_all(&artifacts).with_context(|| format!("creating {}", artifacts.display()))?;
        // cargo-fuzz's layout: <target dir>/<host triple>/release/TARGET.
        let binary = Path::new(FUZZ_TARGET_DIR)
            .join(format!("{}-unknown-linux-gnu", std::env::consts::ARCH))
            .join("release")
            .join(target);
        let mut command = cmd("unshare");
        command
            .args(["--net", "--"])
            .arg(&binary)
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            .arg(&corpus)
            .arg(&seeds)
            .arg(format!("-max_total_time={seconds}"))
            // An input that takes seconds is a hang worth reporting.
            .arg("-timeout=10")
            .arg("-max_len=16384")
            .arg("-print_final_stats=1");
        if std::env::var_os("CI").is_some() {
            command.arg(format!("-seed={CI_PARSER_FUZZ_SEED}"));
        }
        let status = wait_through_ctrl_c(command)?;
        // libFuzzer's exit status after Ctrl-C (its -interrupted_exitcode).
        if status.code() == Some(72) {
            bail!("interrupted while fuzzing {target}");
        }
        if !status.success() {
            println!("xtask: {target} FAILED; the input is in fuzz/artifacts/{target}/");
            failed.push(*target);
        }
    }
    println!("xtask: parser fuzzing took {:.0?}", started.elapsed());
    if !failed.is_empty() {
        bail!(
            "parser fuzz targets failed: {}; replay one with `unshare --net \
             {FUZZ_TARGET_DIR}/{}-unknown-linux-gnu/release/TARGET fuzz/artifacts/TARGET/crash-…`",
            failed.join(", "),
            std::env::consts::ARCH
        );
    }
    Ok(())
}

fn fuzz(frames: u64, seed: Option<u64>) -> Result<()> {
    require_root("the fuzzer loads XDP programs and creates a network namespace: run it as root")?;
    let seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    });
    println!("xtask: fuzzing with {frames} frames, seed {seed}");
    let mut command = cmd("cargo");
    command
        .args(["test", "--release", "--test", "fuzz", "--", "--nocapture"])
        .current_dir(workspace_root())
        .env("XLB_FUZZ_FRAMES", frames.to_string())
        .env("XLB_FUZZ_SEED", seed.to_string())
        .env("RUST_BACKTRACE", "1");
    exit_like(wait_through_ctrl_c(command)?)
}

/// Spawns `command` and waits for it with SIGINT ignored here.
///
/// Ctrl-C reaches the whole foreground process group; the child handles it (xlb detaches
/// its programs and prints a summary) while we stay alive to report its exit status.
/// SIGINT is ignored only after the spawn, since an ignored signal would be inherited.
fn wait_through_ctrl_c(mut command: Command) -> Result<ExitStatus> {
    let mut child = command.spawn().with_context(|| {
        format!(
            "failed to start {}",
            command.get_program().to_string_lossy()
        )
    })?;
    // SAFETY: installing SIG_IGN involves no handler code, so nothing can be unsound.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    let status = child
        .wait()
        .context("waiting for the child process failed");
    // Back to the default, so that the next child (the parser fuzz targets run one
    // after another) does not inherit an ignored SIGINT.
    // SAFETY: as above, no handler code.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_DFL) };
    status
}

/// Exits with the child's status: its exit code, or 128+N if signal N killed it.
fn exit_like(status: ExitStatus) -> Result<()> {
    if status.success() {
        return Ok(());
    }
    let code = status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(1);
    std::process::exit(code);
}
