//! `xlb-bench`, behind `cargo xtask bench`: measurements whose ratios hold on a noisy
//! shared machine. Everything compared is measured in the same run, interleaved round
//! by round, and reported as the median of the rounds.
//!
//! - [`fastpath`]: every path of the XDP program through BPF_PROG_TEST_RUN, beside
//!   Katran's ([`katran`]) in the same rounds.
//! - [`e2e`]: real TCP through namespaces with wrk, xlb against the usual alternatives.
//! - [`scale`]: connection-table size, service loading, control-plane delay, map memory.
//! - [`control`]: the controller at scale: apply, restore, real add, Maglev rebuild.
//! - [`report`]: the markdown results file, its SVG chart and the README table.
pub mod control;
pub mod e2e;
pub mod fastpath;
pub mod primitives;
pub mod katran;
pub mod report;
pub mod scale;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use xlb_core::netns::Netns;

/// Everything one `xlb-bench` run measured; sections not run are None. Written as JSON by
/// [`to_json`]; read back only for the end-to-end section (the IPVS VM's results).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Results {
    pub machine: Machine,
    pub quick: bool,
    #[serde(default, skip_deserializing)]
    pub fastpath: Option<fastpath::FastpathResults>,
    pub e2e: Option<e2e::E2eResults>,
    pub scale: Option<scale::ScaleResults>,
    /// Section 5: the controller at scale.
    #[serde(default)]
    pub control: Option<control::ControlResults>,
    /// Section 3: section 2 run inside a VM whose kernel has IPVS.
    pub ipvs_vm: Option<VmResults>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct VmResults {
    /// "KVM" or "TCG".
    pub accel: String,
    /// Why that accelerator.
    pub accel_note: String,
    pub kernel: String,
    pub e2e: e2e::E2eResults,
}

/// Where the figures were measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Machine {
    pub kernel: String,
    pub cpu: String,
    pub cpus: usize,
    /// 1-minute load average when the run started (others share this machine).
    pub load_at_start: f64,
}

impl Machine {
    pub fn current() -> Self {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim().to_string()))
            .unwrap_or_default();
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        Self {
            kernel,
            cpu,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            load_at_start: load.split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or(0.0),
        }
    }
}

/// Which sections to run and how long; `quick` is the smoke test's tiny version.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub fastpath: Option<fastpath::FastpathOptions>,
    pub e2e: Option<e2e::E2eOptions>,
    pub scale: Option<scale::ScaleOptions>,
    pub control: Option<control::ControlOptions>,
    pub quick: bool,
}

impl BenchOptions {
    /// Every section, full length (`quick`: tiny counts, figures not meaningful).
    pub fn all(quick: bool) -> Self {
        let lru_entries = if quick { 65_536 } else { katran_default_lru_entries() };
        let fastpath = fastpath::FastpathOptions {
            repeat: if quick { 2_000 } else { 200_000 },
            rounds: if quick { 1 } else { 7 },
            katran: katran::object_path(None),
            katran_lru_entries: lru_entries,
            few_flows: fastpath::FEW_FLOWS,
            many_flows: if quick { 20_000 } else { fastpath::MANY_FLOWS },
            cases: Vec::new(),
        };
        // Short runs, many rounds: the interleaving follows the load of a shared machine closely.
        let e2e = e2e::E2eOptions { seconds: if quick { 1 } else { 3 }, rounds: if quick { 1 } else { 7 }, connections: 8, ipvs: true };
        let (services, reals) = scale::largest_load(100);
        let scale = scale::ScaleOptions {
            repeat: fastpath.repeat,
            rounds: if quick { 1 } else { 5 },
            flow_counts: if quick { vec![1_000] } else { vec![1_000, 100_000, fastpath::MANY_FLOWS] },
            load_sizes: if quick { vec![(2, 10)] } else { vec![(10, 100), (services, reals)] },
            add_real_trials: if quick { 1 } else { 5 },
        };
        let control = if quick { control::ControlOptions::quick() } else { control::ControlOptions::full() };
        Self { fastpath: Some(fastpath), e2e: Some(e2e), scale: Some(scale), control: Some(control), quick }
    }
}

/// Katran's own per-CPU LRU size: 8,000,000 entries shared by the forwarding CPUs
/// (KatranLb::initLrus), here every online CPU.
fn katran_default_lru_entries() -> u32 {
    let cpus = aya::util::online_cpus().map_or(1, |c| c.len().max(1));
    8_000_000 / cpus as u32
}

/// Runs the chosen sections; `xlb` is the binary the namespaces' servers and balancer use.
pub fn run(xlb: &Path, opts: &BenchOptions) -> Result<Results> {
    let machine = Machine::current();
    let say = |what: &str| println!("xlb bench: {what}");
    let mut results = Results { machine, quick: opts.quick, ..Default::default() };
    if let Some(o) = &opts.fastpath {
        say("1. fast path, BPF_PROG_TEST_RUN of every path, Katran beside it");
        results.fastpath = Some(fastpath::run(o)?);
    }
    if let Some(o) = opts.e2e {
        say("2. end to end, wrk through namespaces");
        let e2e = e2e::run(xlb, o)?;
        for note in &e2e.notes {
            say(&format!("note: {note}"));
        }
        results.e2e = Some(e2e);
    }
    if let Some(o) = &opts.scale {
        say("4. scale: live flows, service loading, xlb real add, map memory");
        results.scale = Some(scale::run(xlb, o)?);
    }
    if let Some(o) = &opts.control {
        say("5. control: xlb apply, ipvsadm -R, real add, Maglev rebuild at scale");
        let control = control::run(o)?;
        for r in &control.rows {
            say(&format!("{}: {:.4} s (target {} s{})", r.what, r.seconds, r.target_seconds, if r.met { "" } else { ", MISSED" }));
        }
        results.control = Some(control);
    }
    Ok(results)
}

/// Writes `<dir>/<date>.md`, its chart `<date>.svg` and the raw figures `<date>.json`;
/// with `readme`, replaces its table.
pub fn write_report(results: &Results, dir: &Path, date: &str, readme: Option<&Path>) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join(format!("{date}.json")), to_json(results)?)?;
    let chart = format!("{date}.svg");
    std::fs::write(dir.join(&chart), report::svg(results))?;
    let md = dir.join(format!("{date}.md"));
    std::fs::write(&md, report::markdown(results, date, &chart))?;
    if let Some(readme) = readme {
        let base = readme.parent().unwrap_or(Path::new("."));
        let linked = md.strip_prefix(base).unwrap_or(&md).display().to_string();
        let text = std::fs::read_to_string(readme).with_context(|| format!("reading {}", readme.display()))?;
        std::fs::write(readme, report::update_readme(&text, &report::readme_table_keeping(results, &linked, &text)))?;
    }
    Ok(md)
}

/// The results as JSON: as [`Results`] serializes, except that `fastpath` is the array of
/// xlb's fast-path rows (`case`, `path`, `ns_per_packet`, `x_floor`, `x_katran`, …) and
/// the rest of the section (baselines, Katran's rows, targets) is `fastpath_summary`.
pub fn to_json(results: &Results) -> Result<String> {
    let mut value = serde_json::to_value(results)?;
    if let Some(obj) = value.as_object_mut()
        && let Some(serde_json::Value::Object(section)) = obj.get_mut("fastpath")
    {
        let rows = section.remove("rows").unwrap_or_default();
        let summary = std::mem::take(section);
        obj.insert("fastpath".into(), rows);
        obj.insert("fastpath_summary".into(), serde_json::Value::Object(summary));
    }
    Ok(serde_json::to_string_pretty(&value)?)
}

/// Today's date (UTC) as YYYY-MM-DD.
pub fn today() -> String {
    let days = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() / 86_400) as i64;
    let (year, month, day) = xlb_core::trace::civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02}")
}

/// Median of the values (NaN for none).
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let mid = v.len() / 2;
    if v.len() % 2 == 1 { v[mid] } else { (v[mid - 1] + v[mid]) / 2.0 }
}

/// Keeps this thread on the CPU it is on while it lives, so per-CPU state (round robin's
/// cursor) and caches stay the same for every run of a round. The thread's CPUs are
/// given back on drop: processes started later (wrk, servers) inherit them.
pub struct CpuPin {
    original: libc::cpu_set_t,
}

impl CpuPin {
    pub fn current() -> Result<Self> {
        let size = std::mem::size_of::<libc::cpu_set_t>();
        unsafe {
            let mut original: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, size, &mut original) != 0 {
                bail!("sched_getaffinity: {}", std::io::Error::last_os_error());
            }
            let mut one: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(libc::sched_getcpu().max(0) as usize, &mut one);
            if libc::sched_setaffinity(0, size, &one) != 0 {
                bail!("sched_setaffinity: {}", std::io::Error::last_os_error());
            }
            Ok(Self { original })
        }
    }
}

impl Drop for CpuPin {
    fn drop(&mut self) {
        unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &self.original) };
    }
}

/// Runs `f` on a thread inside network namespace `ns` and returns its result: sockets
/// it opens live in that namespace.
pub fn in_netns<T: Send + 'static>(ns: &Netns, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let path = ns.path();
    let thread = std::thread::spawn(move || -> Result<T> {
        let file = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).with_context(|| format!("setns into {}", path.display()))?;
        Ok(f())
    });
    thread.join().map_err(|_| anyhow::anyhow!("thread in namespace {} panicked", ns.name))?
}

/// A scratch directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(what: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("xlb-bench-{what}-{}", xlb_core::netns::run_id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn json_without_the_fast_path_reads_back() {
        let results = Results { quick: true, ..Default::default() };
        let json = to_json(&results).unwrap();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert!(value["fastpath"].is_null() && value.get("fastpath_summary").is_none());
        let back: Results = serde_json::from_str(&json).unwrap();
        assert!(back.quick && back.fastpath.is_none());
    }

    #[test]
    fn today_is_a_date() {
        let d = today();
        assert_eq!(d.len(), 10);
        assert!(d.starts_with("20"));
    }
}
