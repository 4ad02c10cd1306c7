//! Section 2: real TCP through namespaces, measured with wrk. Each request is a new TCP
//! connection (`Connection: close`), so every balancer schedules a new flow per request.
//!
//! The LVS-DR test bed (testbed.rs) is reused: client, director with the VIP, real servers
//! with the VIP on lo, one bridge. Real servers run nginx (one worker) on BACKEND_PORT.
//! Each kind of path has its own client namespace (its own address): a real server never
//! sees one client address both balanced and direct (TCP timestamps would clash in
//! TIME_WAIT), and replies to NAT clients are routed back through the director.
//!
//! Targets, interleaved round by round: direct to one real server (no balancer, the
//! ceiling); xlb DR in native and SKB mode (xlb NAT once it exists); an nftables DNAT
//! balancer (numgen round robin); HAProxy in TCP mode; kernel IPVS DR and NAT when the
//! kernel has it.
use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::{TempDir, median};
use xlb_core::{
    loader::AttachMode,
    netns::{self, Netns},
};
use xlb_testkit::testbed::{self, ChildGuard, DIP, DrCluster, VIP};

/// Port the real servers' nginx listens on, and the balanced services' port.
pub const BACKEND_PORT: u16 = 8080;
/// Port HAProxy listens on (on the director's own address).
pub const HAPROXY_PORT: u16 = 8081;
const NFT_TABLE: &str = "xlb_bench";

#[derive(Clone, Copy, Debug)]
pub struct E2eOptions {
    /// Seconds per wrk run.
    pub seconds: u32,
    pub rounds: usize,
    /// wrk's open connections.
    pub connections: u32,
    /// Whether to try kernel IPVS (`modprobe ip_vs`).
    pub ipvs: bool,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct E2eRow {
    pub target: String,
    pub requests_per_sec: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    /// Machine-wide busy CPU time per request (client, balancer, servers, kernel).
    pub cpu_us_per_request: f64,
    /// Per-round ratios to "direct", median of rounds.
    pub rps_vs_direct: f64,
    /// Lowest and highest per-round requests/s ratio: how much the rounds disagreed.
    #[serde(default)]
    pub rps_vs_direct_range: (f64, f64),
    pub cpu_vs_direct: f64,
    /// Failed requests (socket errors, non-2xx) over all rounds.
    pub errors: u64,
    /// What shows the requests went through this balancer and over both real servers.
    pub evidence: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct E2eResults {
    pub seconds: u32,
    pub rounds: usize,
    pub connections: u32,
    pub rows: Vec<E2eRow>,
    /// Requested targets not measured, and why.
    pub notes: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Direct,
    Xlb { mode: AttachMode, nat: bool },
    Nftables,
    Haproxy,
    Ipvs { nat: bool },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Client {
    Direct,
    Dr,
    Nat,
    Proxy,
}

struct Target {
    label: String,
    kind: Kind,
    client: Client,
    url: String,
}

/// One wrk run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WrkRun {
    pub requests: u64,
    pub requests_per_sec: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
}

/// Reads wrk's `--latency` report.
pub fn parse_wrk(text: &str) -> Result<WrkRun> {
    let mut run = WrkRun::default();
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", v] => run.requests_per_sec = v.parse()?,
            ["50%", v] => run.p50_ms = duration_ms(v)?,
            ["90%", v] => run.p90_ms = duration_ms(v)?,
            ["99%", v] => run.p99_ms = duration_ms(v)?,
            [n, "requests", "in", ..] => run.requests = n.parse()?,
            ["Socket", "errors:", rest @ ..] => {
                run.errors += rest.iter().filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok()).sum::<u64>()
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => run.errors += n.parse::<u64>()?,
            _ => {}
        }
    }
    if run.requests_per_sec == 0.0 {
        bail!("wrk reported no requests:\n{text}");
    }
    Ok(run)
}

fn duration_ms(v: &str) -> Result<f64> {
    let split = v.find(|c: char| c.is_ascii_alphabetic()).with_context(|| format!("no unit in `{v}`"))?;
    let (n, unit) = v.split_at(split);
    let n: f64 = n.parse()?;
    Ok(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => bail!("unknown unit in `{v}`"),
    })
}

/// Busy and total jiffies of all CPUs (/proc/stat).
fn cpu_jiffies() -> Result<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|w| w.parse().ok()).collect();
    if v.len() < 8 {
        bail!("unexpected /proc/stat line: {line}");
    }
    // user nice system idle iowait irq softirq steal
    let busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
    Ok((busy, busy + v[3] + v[4]))
}

/// Whether xlb's config accepts NAT services (the NAT forwarding method exists).
fn xlb_has_nat() -> bool {
    xlb_core::config::parse("[[service]]\nvip = \"10.0.0.1\"\nport = 80\nmethod = \"nat\"\n").is_ok()
}

/// The namespaces, servers and balancers' configs. Removed on drop.
struct Bed {
    cluster: DrCluster,
    /// Client namespaces besides the cluster's own (used for Direct).
    dr_client: Netns,
    nat_client: Netns,
    proxy_client: Netns,
    servers: Vec<ChildGuard>,
    dir: TempDir,
}

const DR_CLIENT: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 20);
const NAT_CLIENT: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 21);
const PROXY_CLIENT: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 22);

impl Bed {
    fn build(xlb: &Path) -> Result<Self> {
        let cluster = DrCluster::build(xlb, 2, AttachMode::Skb)?;
        let dir = TempDir::new("e2e")?;
        let client = |role: &str, ip: Ipv4Addr| -> Result<Netns> {
            let ns = Netns::create(&format!("xlb-{}-{role}", cluster.id))?;
            cluster.plug(&ns, &format!("p-{role}"), ip)?;
            // XDP_TX leaves checksums the sender left to offload unfilled.
            ns.exec("ethtool", &["-K", testbed::NIC, "tx", "off"])?;
            Ok(ns)
        };
        let dr_client = client("cdr", DR_CLIENT)?;
        let nat_client = client("cnat", NAT_CLIENT)?;
        let proxy_client = client("cpx", PROXY_CLIENT)?;
        let mut bed = Self { cluster, dr_client, nat_client, proxy_client, servers: Vec::new(), dir };
        bed.configure()?;
        Ok(bed)
    }

    fn client(&self, client: Client) -> &Netns {
        match client {
            Client::Direct => &self.cluster.client,
            Client::Dr => &self.dr_client,
            Client::Nat => &self.nat_client,
            Client::Proxy => &self.proxy_client,
        }
    }

    fn configure(&mut self) -> Result<()> {
        for ns in [&self.cluster.client, &self.dr_client, &self.nat_client, &self.proxy_client] {
            // A new connection per request: reuse TIME_WAIT ports, use them all.
            ns.sysctl("net.ipv4.tcp_tw_reuse", "1")?;
            ns.sysctl("net.ipv4.ip_local_port_range", "1024 65535")?;
        }
        let director = &self.cluster.director;
        director.sysctl("net.ipv4.ip_forward", "1")?;
        // A one-armed NAT director forwards out of the interface it received on; an ICMP
        // redirect would send the real servers' replies around it.
        for iface in ["all", "default", testbed::NIC] {
            director.sysctl(&format!("net.ipv4.conf.{iface}.send_redirects"), "0")?;
        }
        for rs in &self.cluster.reals {
            rs.ns.ip(&["route", "add", &format!("{NAT_CLIENT}/32"), "via", &DIP.to_string()])?;
            rs.ns.sysctl("net.ipv4.conf.all.accept_redirects", "0")?;
        }
        self.start_nginx()?;
        self.start_haproxy()?;
        Ok(())
    }

    fn start_nginx(&mut self) -> Result<()> {
        for rs in &self.cluster.reals {
            let root = self.dir.join(format!("www-{}", rs.name));
            std::fs::create_dir_all(&root)?;
            std::fs::write(root.join("index.html"), format!("{}\n", rs.name))?;
            let conf = self.dir.join(format!("nginx-{}.conf", rs.name));
            let d = self.dir.display();
            std::fs::write(
                &conf,
                format!(
                    "worker_processes 1; daemon off; pid {d}/nginx-{n}.pid; error_log {d}/nginx-{n}.err;\n\
                     events {{ worker_connections 4096; }}\n\
                     http {{ access_log off; keepalive_timeout 30;\n\
                       client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};\n\
                       server {{ listen {BACKEND_PORT} reuseport; root {root}; }} }}\n",
                    n = rs.name,
                    root = root.display()
                ),
            )?;
            let guard = spawn_server(&rs.ns, &format!("nginx on {}", rs.name), &["nginx", "-c", &conf.display().to_string()])?;
            self.servers.push(guard);
            // From the director: it also learns the real's MAC before xlb asks for it.
            wait_listening(&self.cluster.director, rs.ip, BACKEND_PORT)?;
        }
        Ok(())
    }

    fn start_haproxy(&mut self) -> Result<()> {
        let mut conf = format!(
            "global\n  maxconn 4096\ndefaults\n  mode tcp\n  timeout connect 2s\n  timeout client 10s\n  timeout server 10s\n\
             listen vip\n  bind {DIP}:{HAPROXY_PORT}\n  balance roundrobin\n"
        );
        for rs in &self.cluster.reals {
            conf += &format!("  server {} {}:{BACKEND_PORT}\n", rs.name, rs.ip);
        }
        let path = self.dir.join("haproxy.cfg");
        std::fs::write(&path, conf)?;
        let director = &self.cluster.director;
        let guard = spawn_server(director, "haproxy on the director", &["haproxy", "-db", "-f", &path.display().to_string()])?;
        self.servers.push(guard);
        wait_listening(director, DIP, HAPROXY_PORT)
    }

    fn xlb_config(&self, nat: bool) -> Result<PathBuf> {
        let reals: Vec<String> = self.cluster.reals.iter().map(|r| format!("\"{}\"", r.ip)).collect();
        let method = if nat { "method = \"nat\"\n" } else { "" };
        let path = self.dir.join(if nat { "xlb-nat.toml" } else { "xlb-dr.toml" });
        std::fs::write(
            &path,
            format!("[[service]]\nvip = \"{VIP}\"\nport = {BACKEND_PORT}\nscheduler = \"rr\"\n{method}reals = [{}]\n", reals.join(", ")),
        )?;
        Ok(path)
    }

    /// Puts the target's balancer in place.
    fn set_up(&mut self, kind: Kind) -> Result<()> {
        match kind {
            Kind::Direct | Kind::Haproxy => Ok(()),
            Kind::Xlb { mode, nat } => {
                let config = self.xlb_config(nat)?;
                self.cluster.mode = mode;
                self.cluster.start_balancer_with(&["--config", &config.display().to_string()]).map(drop)
            }
            Kind::Nftables => {
                let reals: Vec<String> = self.cluster.reals.iter().enumerate().map(|(i, r)| format!("{i} : {}", r.ip)).collect();
                let rules = format!(
                    "table ip {NFT_TABLE} {{\n chain prerouting {{\n  type nat hook prerouting priority dstnat;\n  \
                     ip daddr {VIP} tcp dport {BACKEND_PORT} counter dnat to numgen inc mod {} map {{ {} }}\n }}\n}}\n",
                    reals.len(),
                    reals.join(", ")
                );
                let path = self.dir.join("nft.rules");
                std::fs::write(&path, rules)?;
                self.cluster.director.exec("nft", &["-f", &path.display().to_string()]).map(drop)
            }
            Kind::Ipvs { nat } => {
                let service = format!("{VIP}:{BACKEND_PORT}");
                let director = &self.cluster.director;
                director.exec("ipvsadm", &["-A", "-t", &service, "-s", "rr"])?;
                for rs in &self.cluster.reals {
                    let real = format!("{}:{BACKEND_PORT}", rs.ip);
                    director.exec("ipvsadm", &["-a", "-t", &service, "-r", &real, if nat { "-m" } else { "-g" }])?;
                }
                Ok(())
            }
        }
    }

    /// Evidence the requests went through the balancer, then removes it.
    fn tear_down(&mut self, kind: Kind) -> Result<String> {
        match kind {
            Kind::Direct => Ok(String::new()),
            Kind::Haproxy => Ok("proxy: clients connect to it".into()),
            Kind::Xlb { .. } => {
                let list: serde_json::Value = serde_json::from_str(&self.cluster.xlb(&["--output", "json", "list"])?)?;
                let conns: Vec<String> = list[0]["reals"]
                    .as_array()
                    .map(|reals| reals.iter().map(|r| r["conns"].to_string()).collect())
                    .unwrap_or_default();
                self.cluster.stop_balancer()?;
                Ok(format!("xlb conns per real: {}", conns.join(" / ")))
            }
            Kind::Nftables => {
                let table = self.cluster.director.exec("nft", &["list", "table", "ip", NFT_TABLE])?;
                self.cluster.director.exec("nft", &["delete", "table", "ip", NFT_TABLE])?;
                let packets = table.split("counter packets ").nth(1).and_then(|s| s.split_whitespace().next()).unwrap_or("?");
                Ok(format!("DNAT rule hit by {packets} new connections"))
            }
            Kind::Ipvs { .. } => {
                // IPVS sums its per-CPU counters every 2 s.
                std::thread::sleep(Duration::from_millis(2200));
                let stats = self.cluster.director.exec("ipvsadm", &["-Ln", "--stats", "--exact"])?;
                self.cluster.director.exec("ipvsadm", &["-C"])?;
                let conns: Vec<&str> =
                    stats.lines().filter(|l| l.trim_start().starts_with("->")).filter_map(|l| l.split_whitespace().nth(2)).collect();
                Ok(format!("IPVS conns per real: {}", conns.join(" / ")))
            }
        }
    }
}

/// Starts a foreground server in `ns`; it is stopped (SIGINT) on drop.
fn spawn_server(ns: &Netns, what: &str, argv: &[&str]) -> Result<ChildGuard> {
    // `exec` keeps the server's pid, so the guard's SIGINT reaches it.
    let mut cmd = ns.command("sh");
    cmd.arg("-c").arg("echo ready; exec \"$@\"").arg("sh").args(argv);
    Ok(testbed::spawn_until_ready(what, cmd, Duration::from_secs(10))?.0)
}

fn wait_listening(ns: &Netns, ip: Ipv4Addr, port: u16) -> Result<()> {
    let connected = super::in_netns(ns, move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if std::net::TcpStream::connect((ip, port)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    })?;
    if !connected {
        bail!("nothing listens on {ip}:{port} in {} after 10 s", ns.name);
    }
    Ok(())
}

fn targets(ipvs: bool, xlb_nat: bool) -> Vec<Target> {
    let vip = format!("http://{VIP}:{BACKEND_PORT}/");
    let mut t = vec![Target {
        label: "direct to one real server (no balancer)".into(),
        kind: Kind::Direct,
        client: Client::Direct,
        url: format!("http://{}:{BACKEND_PORT}/", testbed::rip(0)),
    }];
    for mode in [AttachMode::Native, AttachMode::Skb] {
        t.push(Target { label: format!("xlb DR, {}", mode.name()), kind: Kind::Xlb { mode, nat: false }, client: Client::Dr, url: vip.clone() });
        if xlb_nat {
            t.push(Target { label: format!("xlb NAT, {}", mode.name()), kind: Kind::Xlb { mode, nat: true }, client: Client::Nat, url: vip.clone() });
        }
    }
    t.push(Target { label: "nftables DNAT, numgen rr".into(), kind: Kind::Nftables, client: Client::Nat, url: vip.clone() });
    t.push(Target {
        label: "HAProxy, TCP mode, roundrobin".into(),
        kind: Kind::Haproxy,
        client: Client::Proxy,
        url: format!("http://{DIP}:{HAPROXY_PORT}/"),
    });
    if ipvs {
        t.push(Target { label: "IPVS DR, rr".into(), kind: Kind::Ipvs { nat: false }, client: Client::Dr, url: vip.clone() });
        t.push(Target { label: "IPVS NAT, rr".into(), kind: Kind::Ipvs { nat: true }, client: Client::Nat, url: vip });
    }
    t
}

/// Whether kernel IPVS can be used here; Err says why not.
fn ipvs_available() -> Result<()> {
    netns::run(std::process::Command::new("modprobe").args(["ip_vs"])).context("modprobe ip_vs")?;
    netns::run(std::process::Command::new("modprobe").args(["ip_vs_rr"])).context("modprobe ip_vs_rr")?;
    netns::run(std::process::Command::new("ipvsadm").arg("--version")).context("ipvsadm")?;
    Ok(())
}

pub fn run(xlb: &Path, opts: E2eOptions) -> Result<E2eResults> {
    netns::require_root("the end-to-end bench")?;
    let mut notes = Vec::new();
    let ipvs = if opts.ipvs {
        match ipvs_available() {
            Ok(()) => true,
            Err(e) => {
                notes.push(format!(
                    "kernel IPVS: not measured, this kernel ({}) has no IPVS ({:#}); `cargo xtask bench --ipvs-vm` measures it in a VM",
                    super::Machine::current().kernel,
                    e
                ));
                false
            }
        }
    } else {
        false
    };
    let xlb_nat = xlb_has_nat();
    if !xlb_nat {
        notes.push("xlb NAT (native and SKB): not measured end to end here (this section times DR; the fast-path section times NAT)".into());
    }
    let targets = targets(ipvs, xlb_nat);
    let mut bed = Bed::build(xlb)?;
    let clk_tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    // Per target, per round: (wrk run, CPU µs per request).
    let mut runs: Vec<Vec<(WrkRun, f64)>> = vec![Vec::new(); targets.len()];
    let mut evidence = vec![String::new(); targets.len()];
    for round in 0..opts.rounds {
        // Each round starts at another target, so no target always runs first.
        for k in 0..targets.len() {
            let i = (round + k) % targets.len();
            let target = &targets[i];
            bed.set_up(target.kind).with_context(|| format!("setting up {}", target.label))?;
            let (busy0, _) = cpu_jiffies()?;
            let out = bed.client(target.client).exec(
                "wrk",
                &[
                    "-t1",
                    &format!("-c{}", opts.connections),
                    &format!("-d{}s", opts.seconds),
                    "--latency",
                    "-H",
                    "Connection: close",
                    &target.url,
                ],
            );
            let (busy1, _) = cpu_jiffies()?;
            let shown = bed.tear_down(target.kind)?;
            let wrk = parse_wrk(&out?).with_context(|| format!("wrk against {}", target.label))?;
            let cpu_us = (busy1 - busy0) as f64 * 1e6 / clk_tck / wrk.requests.max(1) as f64;
            evidence[i] = shown;
            runs[i].push((wrk, cpu_us));
        }
    }
    let direct = &runs[0];
    let rows = targets
        .iter()
        .zip(&runs)
        .zip(evidence)
        .map(|((target, runs), evidence)| {
            let m = |f: &dyn Fn(&(WrkRun, f64)) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
            let ratios = |f: &dyn Fn(&(WrkRun, f64)) -> f64| runs.iter().zip(direct).map(|(r, d)| f(r) / f(d)).collect::<Vec<_>>();
            let rps_ratios = ratios(&|r| r.0.requests_per_sec);
            E2eRow {
                target: target.label.clone(),
                requests_per_sec: m(&|r| r.0.requests_per_sec),
                p50_ms: m(&|r| r.0.p50_ms),
                p90_ms: m(&|r| r.0.p90_ms),
                p99_ms: m(&|r| r.0.p99_ms),
                cpu_us_per_request: m(&|r| r.1),
                rps_vs_direct: median(&rps_ratios),
                rps_vs_direct_range: (rps_ratios.iter().copied().fold(f64::INFINITY, f64::min), rps_ratios.iter().copied().fold(0.0, f64::max)),
                cpu_vs_direct: median(&ratios(&|r| r.1)),
                errors: runs.iter().map(|r| r.0.errors).sum(),
                evidence,
            }
        })
        .collect();
    Ok(E2eResults { seconds: opts.seconds, rounds: opts.rounds, connections: opts.connections, rows, notes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_report_is_read() {
        let text = "Running 1s test @ http://10.99.0.100:8080/\n  1 threads and 8 connections\n  Latency Distribution\n     50%  403.00us\n     75%  600.00us\n     90%    1.20ms\n     99%    2.00s\n  1234 requests in 1.00s, 300.00KB read\n  Socket errors: connect 0, read 2, write 1, timeout 0\n  Non-2xx or 3xx responses: 3\nRequests/sec:   1234.50\nTransfer/sec:    300.00KB\n";
        let run = parse_wrk(text).unwrap();
        assert_eq!(run, WrkRun { requests: 1234, requests_per_sec: 1234.5, p50_ms: 0.403, p90_ms: 1.2, p99_ms: 2000.0, errors: 6 });
        assert!(parse_wrk("nothing").is_err());
    }
}
