//! `xlb-bench`: the benchmarks behind `cargo xtask bench`, kept out of the product.
use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context, Result};
use clap::Parser;
use xlb_bench as bench;

#[derive(Parser)]
#[command(name = "xlb-bench", version, about = "xlb's benchmarks (run by `cargo xtask bench`)")]
struct Cli {
    /// Tiny counts (a smoke run; figures not meaningful).
    #[arg(long)]
    quick: bool,
    /// Sections to run (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    sections: Vec<BenchSection>,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write <date>.md and its <date>.svg chart in this directory.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Replace the benchmark table in this README (with --report).
    #[arg(long, requires = "report")]
    readme: Option<PathBuf>,
    /// Katran's balancer.bpf.o, timed beside xlb in the fast-path section
    /// (XLB_KATRAN_OBJ overrides it).
    #[arg(long, value_name = "FILE")]
    katran_obj: Option<PathBuf>,
    /// Fast path: only the rows whose "case (path)" contains TEXT (repeatable; skips
    /// the live-flows rows). For profiling one path.
    #[arg(long = "case", value_name = "TEXT")]
    cases: Vec<String>,
    /// Fast path: rounds (default 7; --quick 1).
    #[arg(long)]
    rounds: Option<usize>,
    /// Fast path: iterations per test run (default 200000; --quick 2000).
    #[arg(long)]
    repeat: Option<u32>,
    /// Section 3: the JSON a run inside the IPVS VM wrote.
    #[arg(long, requires_all = ["vm_accel", "vm_accel_note"])]
    vm_json: Option<PathBuf>,
    /// How the VM ran: KVM or TCG.
    #[arg(long)]
    vm_accel: Option<String>,
    /// Why it ran so.
    #[arg(long)]
    vm_accel_note: Option<String>,
    /// The `xlb` binary the namespaces' balancer runs (default: the one beside xlb-bench).
    #[arg(long, value_name = "FILE")]
    xlb: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BenchSection {
    Fastpath,
    E2e,
    Scale,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xlb-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let Cli { quick, sections, json, report, readme, katran_obj, cases, rounds, repeat, vm_json, vm_accel, vm_accel_note, xlb } = cli;
    let xlb = match xlb {
        Some(xlb) => xlb,
        None => xlb_testkit::binary("xlb").context("locating the xlb binary")?,
    };
    let mut opts = bench::BenchOptions::all(quick);
    if let Some(f) = opts.fastpath.as_mut() {
        f.katran = bench::katran::object_path(katran_obj);
        f.cases = cases;
        f.rounds = rounds.unwrap_or(f.rounds).max(1);
        f.repeat = repeat.unwrap_or(f.repeat).max(1);
    }
    let wanted = |s: BenchSection| sections.is_empty() || sections.contains(&s);
    opts.fastpath = opts.fastpath.filter(|_| wanted(BenchSection::Fastpath));
    opts.e2e = opts.e2e.filter(|_| wanted(BenchSection::E2e));
    opts.scale = opts.scale.filter(|_| wanted(BenchSection::Scale));
    let mut results = bench::run(&xlb, &opts)?;
    if let (Some(path), Some(accel), Some(accel_note)) = (vm_json, vm_accel, vm_accel_note) {
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let vm: bench::Results = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let e2e = vm.e2e.with_context(|| format!("{} holds no end-to-end results", path.display()))?;
        results.ipvs_vm = Some(bench::VmResults { accel, accel_note, kernel: vm.machine.kernel, e2e });
    }
    if let Some(path) = json {
        std::fs::write(&path, bench::to_json(&results)?).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(dir) = report {
        let md = bench::write_report(&results, &dir, &bench::today(), readme.as_deref())?;
        println!("xlb bench: wrote {}", md.display());
    }
    Ok(())
}
