//! The operator's views against real traffic through an LVS-DR namespace cluster: the
//! Prometheus endpoint's exact values, the Grafana dashboard's queries, `xlb top` on a
//! live daemon, and the status page as headless Chromium draws it.
//!
//! The daemon listens on 127.0.0.1 inside the director's namespace, so the scrapes
//! (curl) and Chromium run there too, through nsenter: nothing is exposed on the host.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use lb_common::counter;
use xlb_core::{api::Paths, loader::AttachMode, top::Top};
use xlb_testkit::testbed::{DrCluster, rip};
use ratatui::{Terminal, backend::TestBackend};

const XLB: &str = env!("CARGO_BIN_EXE_xlb");
/// Inside the director's namespace, whose loopback is its own.
const METRICS: &str = "127.0.0.1:9810";
const STATUS: &str = "127.0.0.1:9811";
const SERVICE: &str = "tcp:10.99.0.100:80";
const DASHBOARD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/grafana/xlb-dashboard.json");

fn cluster() -> DrCluster {
    assert_eq!(unsafe { libc::geteuid() }, 0, "these tests create namespaces and attach XDP: run them as root (cargo xtask test)");
    DrCluster::build(Path::new(XLB), 2, AttachMode::Skb).expect("build the namespace cluster")
}

/// GET `url` from inside the director's namespace.
fn get(c: &DrCluster, url: &str) -> String {
    c.director.exec("curl", &["--silent", "--show-error", "--fail", "--max-time", "10", url]).unwrap()
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("bad JSON ({e}): {text}"))
}

/// Polls `condition` every 100 ms until it holds; panics with `what` after 30 s.
fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(Instant::now() < deadline, "gave up waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The exposition's samples: `name{labels}` → value.
fn samples(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample line: {l}"));
            (name.to_string(), value.parse().unwrap_or_else(|_| panic!("not an integer value: {l}")))
        })
        .collect()
}

/// `# TYPE` lines: family → type.
fn types(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let (name, kind) = l.split_once(' ').unwrap();
            (name.to_string(), kind.to_string())
        })
        .collect()
}

fn real_sample(family: &str, real: usize, extra: &str) -> String {
    format!("{family}{{service=\"{SERVICE}\",real=\"{}\"{extra}}}", rip(real))
}

/// Every metric name in the dashboard's queries.
fn dashboard_metric_names() -> BTreeSet<String> {
    let text = std::fs::read_to_string(DASHBOARD).unwrap();
    let dashboard = json(&text);
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().expect("a PromQL expr").to_string());
        }
    }
    for variable in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        if let Some(q) = variable["query"]["query"].as_str().or(variable["query"].as_str()) {
            exprs.push(q.to_string());
        }
    }
    assert!(exprs.len() >= 8, "the dashboard has queries: {exprs:?}");
    exprs
        .iter()
        .flat_map(|e| {
            e.split(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
                .filter(|w| w.starts_with("xlb_"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn metrics_count_real_traffic_and_cover_the_dashboard() {
    let mut c = cluster();
    let lines = c.start_daemon(&["--metrics-listen", METRICS]).unwrap();
    assert!(lines.iter().any(|l| l.contains("serving the metrics on http://127.0.0.1:9810/")), "{lines:?}");
    c.configure_service().unwrap();
    const REQUESTS: u64 = 8;
    for _ in 0..REQUESTS {
        c.curl("/").unwrap();
    }
    // The client's last packets may follow curl's exit: wait until the table holds
    // every connection and none is still established.
    wait_for("every connection has left ESTABLISHED", || {
        let conns = json(&c.xlb(&["--output", "json", "conns"]).unwrap());
        let conns = conns.as_array().unwrap();
        conns.len() == REQUESTS as usize && conns.iter().all(|c| c["state"] != "ESTABLISHED")
    });
    // Frames that are not ours (ARP, IPv6 neighbour discovery) may arrive at any time:
    // the scrape's pass counters lie between a reading before and one after it.
    let counters_before = json(&c.xlb(&["--output", "json", "counters"]).unwrap());
    let text = get(&c, &format!("http://{METRICS}/metrics"));
    let list = json(&c.xlb(&["--output", "json", "list"]).unwrap());
    let counters = json(&c.xlb(&["--output", "json", "counters"]).unwrap());
    let s = samples(&text);
    let value = |name: &str| *s.get(name).unwrap_or_else(|| panic!("no sample {name} in:\n{text}"));

    // Round robin over 8 new connections: 4 each, none established any more.
    for real in 0..2 {
        assert_eq!(value(&real_sample("xlb_real_connections_total", real, "")), REQUESTS / 2, "{text}");
        assert_eq!(value(&real_sample("xlb_real_active_connections", real, "")), 0, "{text}");
        assert_eq!(value(&real_sample("xlb_real_inactive_connections", real, "")), REQUESTS / 2, "{text}");
        assert_eq!(value(&real_sample("xlb_real_weight", real, "")), 1);
        assert_eq!(value(&real_sample("xlb_real_health", real, ",state=\"up\"")), 1, "MAC resolved: {text}");
        assert_eq!(value(&real_sample("xlb_real_health", real, ",state=\"unknown\"")), 0);
        let listed = &list[0]["reals"][real];
        let packets_in = value(&real_sample("xlb_real_packets_total", real, ",direction=\"in\""));
        assert_eq!(packets_in, listed["packets"].as_u64().unwrap(), "as `xlb list` counts: {listed}");
        assert!(packets_in >= REQUESTS / 2 * 4, "each connection is several packets: {text}");
        assert_eq!(value(&real_sample("xlb_real_bytes_total", real, ",direction=\"in\"")), listed["bytes"].as_u64().unwrap());
        assert_eq!(value(&real_sample("xlb_real_packets_total", real, ",direction=\"out\"")), 0, "DR: replies bypass the director");
    }
    let svc = |family: &str, extra: &str| value(&format!("{family}{{service=\"{SERVICE}\"{extra}}}"));
    assert_eq!(svc("xlb_service_connections_total", ""), REQUESTS);
    assert_eq!(svc("xlb_service_inactive_connections", ""), REQUESTS);
    assert_eq!(svc("xlb_service_reals", ",state=\"up\""), 2);
    let routed = svc("xlb_service_packets_total", ",direction=\"in\"");
    assert_eq!(value("xlb_verdicts_total{reason=\"tx_dr\"}"), routed, "every routed frame went to a real: {text}");
    for name in counter::NAMES {
        let scraped = value(&format!("xlb_verdicts_total{{reason=\"{name}\"}}"));
        let (before, after) = (counters_before[name].as_u64().unwrap(), counters[name].as_u64().unwrap());
        assert!((before..=after).contains(&scraped), "{name}: {scraped} not within {before}..={after}");
    }
    assert_eq!(value("xlb_conntrack_entries"), REQUESTS);
    assert_eq!(value("xlb_conntrack_capacity"), u64::from(lb_common::MAX_CONNS));
    assert_eq!(value("xlb_attach_mode{interface=\"eth0\",mode=\"skb\"}"), 1);

    let families = types(&text);
    for (family, kind) in [
        ("xlb_real_connections", "counter"),
        ("xlb_real_active_connections", "gauge"),
        ("xlb_real_inactive_connections", "gauge"),
        ("xlb_real_packets", "counter"),
        ("xlb_real_bytes", "counter"),
        ("xlb_real_weight", "gauge"),
        ("xlb_real_health", "gauge"),
        ("xlb_service_connections", "counter"),
        ("xlb_service_active_connections", "gauge"),
        ("xlb_service_inactive_connections", "gauge"),
        ("xlb_service_packets", "counter"),
        ("xlb_service_bytes", "counter"),
        ("xlb_service_reals", "gauge"),
        ("xlb_verdicts", "counter"),
        ("xlb_conntrack_entries", "gauge"),
        ("xlb_conntrack_capacity", "gauge"),
        ("xlb_attach_mode", "gauge"),
    ] {
        assert_eq!(families.get(family).map(String::as_str), Some(kind), "{family}:\n{text}");
    }
    assert!(text.ends_with("# EOF\n"));

    // Every metric the Grafana dashboard queries is exposed.
    let exposed: BTreeSet<&str> = s.keys().map(|k| k.split('{').next().unwrap()).collect();
    let used = dashboard_metric_names();
    let missing: Vec<&String> = used.iter().filter(|m| !exposed.contains(m.as_str())).collect();
    assert!(missing.is_empty(), "the dashboard queries metrics that are not exposed: {missing:?}; exposed: {exposed:?}");
    assert!(used.len() >= 8, "the dashboard uses most families: {used:?}");

    // `xlb top` on the live daemon, through its API, rendered on a test terminal:
    // two refreshes with traffic between them give every real a rate and a sparkline.
    let socket = Paths::for_pin_dir(&c.pin_dir).socket;
    let mut top = Top::new(Duration::from_secs(1));
    top.refresh(&socket).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..4 {
        c.curl("/").unwrap();
    }
    top.refresh(&socket).unwrap();
    let mut terminal = Terminal::new(TestBackend::new(110, 8)).unwrap();
    terminal.draw(|f| top.draw(f)).unwrap();
    let buffer = terminal.backend().buffer();
    let screen: Vec<String> = (0..8).map(|y| (0..110).map(|x| buffer[(x, y)].symbol()).collect::<String>()).collect();
    let text = screen.join("\n");
    assert!(screen[0].starts_with("xlb top · 1 service, 2 reals · frames/s: forwarded "), "{text}");
    assert!(screen[3].starts_with("tcp:10.99.0.100:80 rr    2/2 up"), "{text}");
    for (row, real) in [(4, 0), (5, 1)] {
        let line = &screen[row];
        assert!(line.starts_with(&format!("  → {:<21}up      1      0       6", rip(real))), "{text}");
        let spark = line.chars().skip(81).collect::<String>();
        assert!(spark.trim_end().ends_with('█'), "the newest refresh is this real's busiest: {text}");
    }
    // Off a terminal, top says what to use instead.
    let err = c.xlb(&["top"]).unwrap_err().to_string();
    assert!(err.contains("xlb top needs a terminal"), "{err}");
}

/// Two NAT reals on one address (ports 8080 and 8081) are two series, labelled
/// `address:port` as configs name them; `xlb_build_info` names the build.
#[test]
fn metrics_tell_nat_reals_on_one_address_apart_and_name_the_build() {
    let mut c = cluster();
    c.start_daemon(&["--metrics-listen", METRICS]).unwrap();
    c.xlb(&["service", "add", "tcp", "10.99.0.100:80"]).unwrap();
    for (port, weight) in [(8080, "2"), (8081, "5")] {
        c.xlb(&["real", "add", "tcp", "10.99.0.100:80", &format!("{}:{port}", rip(0)), "-m", "-w", weight]).unwrap();
    }
    let text = get(&c, &format!("http://{METRICS}/metrics"));
    let s = samples(&text);
    let weights: BTreeMap<&str, u64> =
        s.iter().filter(|(k, _)| k.starts_with("xlb_real_weight{")).map(|(k, v)| (k.as_str(), *v)).collect();
    let label = |port: u16| format!("xlb_real_weight{{service=\"{SERVICE}\",real=\"{}:{port}\"}}", rip(0));
    assert_eq!(weights, BTreeMap::from([(label(8080).as_str(), 2), (label(8081).as_str(), 5)]), "{text}");

    // The revision is the commit this binary was built from (HEAD: cargo rebuilds on a
    // new commit), "unknown" outside a git checkout.
    let head = std::process::Command::new("git").args(["-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "HEAD"]).output().unwrap();
    let revision = if head.status.success() { String::from_utf8(head.stdout).unwrap().trim().to_string() } else { "unknown".into() };
    let build = format!(
        "xlb_build_info{{version=\"{}\",revision=\"{revision}\",aya_version=\"0.14.0\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(s.get(&build), Some(&1), "{build}:\n{text}");
    assert_eq!(types(&text).get("xlb_build").map(String::as_str), Some("info"), "OpenMetrics info family:\n{text}");
    assert_eq!(s.keys().filter(|k| k.starts_with("xlb_build")).count(), 1, "{text}");
}

/// A directory under cargo's test scratch space, removed on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(name: &str) -> Self {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Headless Chromium in the director's namespace, loading `url` with `action`
/// (`--screenshot=FILE` or `--dump-dom`); virtual time lets the page's polls run.
fn chromium(c: &DrCluster, profile: &Path, action: &str, url: &str) -> String {
    let mut cmd = c.director.command("chromium");
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--window-size=1200,900",
        "--virtual-time-budget=5000",
    ]);
    cmd.arg(format!("--user-data-dir={}", profile.display())).arg(action).arg(url);
    xlb_core::netns::run(&mut cmd).unwrap_or_else(|e| panic!("chromium {action}: {e:#}"))
}

/// (r, g, b) of "#rrggbb".
fn rgb(hex: &str) -> [u8; 3] {
    let byte = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).unwrap();
    [byte(1), byte(3), byte(5)]
}

#[test]
fn status_page_graphs_live_per_real_traffic_in_headless_chromium() {
    let mut c = cluster();
    let lines = c.start_daemon(&["--status-listen", STATUS]).unwrap();
    assert!(lines.iter().any(|l| l.contains("serving the status page on http://127.0.0.1:9811/")), "{lines:?}");
    // Weights 1 and 3: the two reals' lines differ, neither hides the other.
    c.xlb(&["service", "add", "tcp", "10.99.0.100:80", "-s", "wrr"]).unwrap();
    for (real, weight) in [(0, "1"), (1, "3")] {
        c.xlb(&["real", "add", "tcp", "10.99.0.100:80", &rip(real).to_string(), "-w", weight]).unwrap();
    }
    let status = || json(&get(&c, &format!("http://{STATUS}/status.json")));
    // Rates are differences between samples: traffic counts once the sampler has seen the reals.
    wait_for("the status page's sampler has seen both reals", || {
        status()["services"][0]["reals"].as_array().is_some_and(|r| r.len() == 2 && r.iter().all(|r| r["pps"].as_array().is_some_and(|p| !p.is_empty())))
    });
    for _ in 0..20 {
        c.curl("/").unwrap();
    }
    wait_for("both reals' traffic is in the history", || {
        status()["services"][0]["reals"].as_array().unwrap().iter().all(|r| r["pps"].as_array().unwrap().iter().any(|v| v.as_f64().unwrap() > 0.0))
    });
    let doc = status();
    let colours: Vec<[u8; 3]> = doc["services"][0]["reals"].as_array().unwrap().iter().map(|r| rgb(r["color"].as_str().unwrap())).collect();

    let profile = ScratchDir::new("status-page-chromium");
    let url = format!("http://{STATUS}/");
    // The page as a person sees it, kept in cargo's test scratch space to look at.
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    chromium(&c, &profile.0, &format!("--screenshot={}", shot.display()), &url);
    let png_bytes = std::fs::read(&shot).expect("chromium wrote the screenshot");
    assert!(png_bytes.len() > 20_000, "a screenshot of a drawn page, not a blank one: {} bytes", png_bytes.len());
    let decoder = png::Decoder::new(std::io::Cursor::new(&png_bytes));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut pixels).unwrap();
    assert_eq!((frame.width, frame.height), (1200, 900));
    let channels = frame.color_type.samples();
    let width = frame.width as usize;
    for (i, colour) in colours.iter().enumerate() {
        // Rows holding this real's colour (only its line and its legend swatch have it):
        // a line that rises from zero to a peak crosses dozens of rows; a flat line at
        // zero and the swatch together cover fewer than 10.
        let rows: BTreeSet<usize> = pixels[..frame.buffer_size()]
            .chunks(channels)
            .enumerate()
            .filter(|(_, px)| px[..3].iter().zip(colour).all(|(a, b)| a.abs_diff(*b) <= 24))
            .map(|(n, _)| n / width)
            .collect();
        assert!(rows.len() >= 15, "real {} ({colour:?}) is drawn over only {} rows of {}", rip(i), rows.len(), shot.display());
    }

    let dom = chromium(&c, &profile.0, "--dump-dom", &url);
    for expected in [
        "tcp:10.99.0.100:80 (wrr)",
        "attached to eth0 (skb)",
        "connections 20 / 262144",
        "tcp:10.99.0.100:80 → 10.99.0.11",
        "tcp:10.99.0.100:80 → 10.99.0.12",
        "<td class=\"up\">up</td>",
    ] {
        assert!(dom.contains(expected), "the page shows {expected:?}:\n{dom}");
    }
    assert!(dom.contains("<div id=\"error\"></div>"), "no error shown: {dom}");
}
