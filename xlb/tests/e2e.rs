//! End to end through real namespaces: real HTTP servers, real curl, xlb attached to a
//! veth in native and in SKB mode. Needs root; fails (never skips) without it.
use std::{path::Path, process::Command};

use xlb_core::loader::AttachMode;
use xlb_testkit::testbed::{self, DrCluster, VIP};

const XLB: &str = env!("CARGO_BIN_EXE_xlb");

fn cluster(mode: AttachMode) -> DrCluster {
    assert_eq!(unsafe { libc::geteuid() }, 0, "the end-to-end tests create namespaces and attach XDP: run them as root (cargo xtask test)");
    DrCluster::build(Path::new(XLB), 2, mode).expect("build the namespace cluster")
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("bad JSON ({e}): {text}"))
}

fn xdp_attached(cluster: &DrCluster) -> bool {
    cluster.director.ip(&["link", "show", "eth0"]).unwrap().contains("xdp")
}

fn dr_round_robin(mode: AttachMode) {
    let mut c = cluster(mode);
    let lines = c.start_balancer().expect("start xlb run");
    let attach_line = format!("attached to eth0 in {} mode", mode.name());
    assert!(lines.iter().any(|l| l.contains(&attach_line)), "xlb run said {lines:?}");
    assert!(xdp_attached(&c));
    c.configure_service().expect("configure the service");

    let answers: Vec<String> = (0..6).map(|_| c.curl("/").expect("curl through the VIP").trim().to_string()).collect();
    assert_eq!(answers, ["rs1", "rs2", "rs1", "rs2", "rs1", "rs2"], "round robin over new connections");

    // A multi-segment transfer: every request segment and ACK goes through the fast path.
    let big = c.curl("/bytes/3000000").expect("3 MB transfer");
    assert_eq!(big.len(), 3_000_000);
    assert!(big.bytes().enumerate().all(|(i, b)| b == b'a' + (i % 26) as u8), "body corrupted");

    let list = json(&c.xlb(&["--output", "json", "list"]).unwrap());
    let reals = list[0]["reals"].as_array().unwrap();
    assert_eq!(list[0]["frontends"][0]["vip"], VIP.to_string());
    assert_eq!(reals.len(), 2);
    let conns: Vec<u64> = reals.iter().map(|r| r["conns"].as_u64().unwrap()).collect();
    assert_eq!(conns.iter().sum::<u64>(), 7, "{list}");
    assert!(conns.iter().all(|&n| n >= 3), "{list}");
    for r in reals {
        assert!(r["packets"].as_u64().unwrap() >= 3 * 5, "each connection is several packets: {r}");
        assert!(r["mac"].is_string(), "MAC resolved from the kernel: {r}");
    }
    let counters = json(&c.xlb(&["--output", "json", "counters"]).unwrap());
    let routed: u64 = reals.iter().map(|r| r["packets"].as_u64().unwrap()).sum();
    assert_eq!(counters["tx_dr"].as_u64().unwrap(), routed, "{counters}");

    let status = c.stop_balancer().unwrap();
    assert!(status.success(), "xlb run exit status {status}");
    // The kernel releases the link when the last fd closes; allow it a moment under load.
    let detached = (0..40).any(|_| {
        let gone = !xdp_attached(&c);
        if !gone {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        gone
    });
    assert!(detached, "xlb run must detach on Ctrl-C");
    assert!(!c.pin_dir.exists(), "xlb run must remove its pins");
}

#[test]
fn dr_round_robin_native_mode() {
    dr_round_robin(AttachMode::Native);
}

#[test]
fn dr_round_robin_skb_mode() {
    dr_round_robin(AttachMode::Skb);
}

#[test]
fn config_file_is_applied_at_start() {
    let mut c = cluster(AttachMode::Skb);
    let dir = tempdir();
    let cfg = dir.join("xlb.toml");
    std::fs::write(
        &cfg,
        format!("[[service]]\nvip = \"{VIP}\"\nport = 80\nscheduler = \"rr\"\nreals = [\"10.99.0.11\", \"10.99.0.12\"]\n"),
    )
    .unwrap();
    c.start_balancer_with(&["--config", cfg.to_str().unwrap()]).expect("xlb run --config");
    let answers: Vec<String> = (0..4).map(|_| c.curl("/").unwrap().trim().to_string()).collect();
    assert_eq!(answers, ["rs1", "rs2", "rs1", "rs2"]);
}

#[test]
fn bad_config_is_rejected_before_anything_is_attached() {
    let c = cluster(AttachMode::Skb);
    let dir = tempdir();
    let cfg = dir.join("bad.toml");
    std::fs::write(&cfg, "[[service]]\nvip = \"10.99.0.100\"\nport = 80\nreals = [\"10.99.0.11\", \"10.99.0.300\"]\n").unwrap();
    let out = c.xlb_command(&["run", "--iface", "eth0", "--config", cfg.to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`10.99.0.300` is not an IP address") && err.contains("bad.toml"), "{err}");
    assert!(!xdp_attached(&c));
    assert!(!c.pin_dir.exists());
}

#[test]
fn cli_errors_are_clear_and_change_nothing() {
    let mut c = cluster(AttachMode::Skb);
    let err = |args: &[&str]| {
        let out = c.xlb_command(args).output().unwrap();
        assert!(!out.status.success(), "{args:?} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(err(&["list"]).contains("no running xlb found"));
    c.start_balancer().unwrap();
    c.configure_service().unwrap();
    let before = c.xlb(&["--output", "json", "list"]).unwrap();
    let err = |args: &[&str]| {
        let out = c.xlb_command(args).output().unwrap();
        assert!(!out.status.success(), "{args:?} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(err(&["service", "add", "tcp", "10.99.0.100:80"]).contains("Service already exists"));
    assert!(err(&["service", "add", "tcp", "10.99.0.100"]).contains("not VIP:PORT"));
    assert!(err(&["service", "add", "tcp", "10.99.0.100:99999"]).contains("not a port"));
    assert!(err(&["service", "add", "sctp", "10.99.0.100:80"]).contains("unknown protocol"));
    assert!(err(&["service", "add", "tcp", "10.99.0.100:81", "-s", "fancy"]).contains("unknown scheduler"));
    assert!(err(&["real", "add", "tcp", "10.99.0.100:80", "10.99.0.11"]).contains("Destination already exists"));
    assert!(err(&["real", "add", "tcp", "10.99.0.100:81", "10.99.0.11"]).contains("Service not defined"));
    assert!(err(&["real", "del", "tcp", "10.99.0.100:80", "10.99.0.99"]).contains("No such destination"));
    assert!(err(&["real", "add", "tcp", "10.99.0.100:80", "10.99.0.256"]).contains("invalid"));
    assert_eq!(c.xlb(&["--output", "json", "list"]).unwrap(), before, "failed commands must change nothing");
    // Removing a real takes it out of rotation at once.
    c.xlb(&["real", "del", "tcp", "10.99.0.100:80", "10.99.0.11"]).unwrap();
    let answers: Vec<String> = (0..3).map(|_| c.curl("/").unwrap().trim().to_string()).collect();
    assert_eq!(answers, ["rs2", "rs2", "rs2"]);
}

#[test]
fn demo_runs_non_interactively_and_cleans_up() {
    let out = Command::new(xlb_testkit::binary(xlb_testkit::TESTKIT).unwrap()).args(["demo", "--requests", "4"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "demo failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let answers: Vec<&str> = stdout.lines().filter_map(|l| l.split("answered by ").nth(1)).collect();
    assert_eq!(answers, ["rs1", "rs2", "rs1", "rs2"], "{stdout}");
    assert!(stdout.contains("Route"), "the demo lists per-real counters: {stdout}");
    let ns = stdout.split("(namespace ").nth(1).and_then(|s| s.split(')').next()).expect("namespace name in output");
    let listed = String::from_utf8_lossy(&Command::new("ip").args(["netns", "list"]).output().unwrap().stdout).into_owned();
    assert!(!listed.contains(ns), "demo left namespace {ns} behind");
}

/// A scratch directory removed on drop.
struct TempDir(std::path::PathBuf);
impl std::ops::Deref for TempDir {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
fn tempdir() -> TempDir {
    let dir = std::env::temp_dir().join(format!("xlb-test-{}", xlb_core::netns::run_id()));
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

#[test]
fn weighted_round_robin_as_in_the_seeds() {
    // The seeds: ipvsadm -A -t VIP:80 -s wrr; -a … -w 2; -a … -w 3.
    let mut c = cluster(AttachMode::Skb);
    c.start_balancer().unwrap();
    let service = format!("{VIP}:80");
    c.xlb(&["service", "add", "tcp", &service, "-s", "wrr"]).unwrap();
    c.xlb(&["real", "add", "tcp", &service, "10.99.0.11", "-w", "2"]).unwrap();
    c.xlb(&["real", "add", "tcp", &service, "10.99.0.12", "-w", "3"]).unwrap();
    let answers: Vec<String> = (0..10).map(|_| c.curl("/").unwrap().trim().to_string()).collect();
    assert_eq!(answers.iter().filter(|a| *a == "rs1").count(), 4, "{answers:?}");
    assert_eq!(answers.iter().filter(|a| *a == "rs2").count(), 6, "{answers:?}");
    let listing = c.xlb(&["list"]).unwrap();
    assert!(listing.contains("TCP  10.99.0.100:80 wrr"), "{listing}");
    assert!(listing.lines().any(|l| l.contains("10.99.0.12:80") && l.contains("Route   3")), "{listing}");
    // The connection table shows the finished connections, as ipvsadm -L -c does.
    let conns = json(&c.xlb(&["--output", "json", "conns"]).unwrap());
    assert_eq!(conns.as_array().unwrap().len(), 10, "{conns}");
    assert!(conns.as_array().unwrap().iter().all(|e| e["state"] != "ESTABLISHED"), "{conns}");
}

/// `curl http://VIP/` from the client, from `source`, optionally on CPU `cpu`: the
/// real's name, or "FAILED".
fn get(c: &DrCluster, source: &str, cpu: Option<usize>) -> String {
    let url = format!("http://{VIP}/");
    let mut args = vec!["--silent", "--max-time", "2", "--interface", source, url.as_str()];
    let cpu_arg = cpu.map(|n| n.to_string());
    let out = match &cpu_arg {
        Some(n) => {
            let mut all = vec!["-c", n.as_str(), "curl"];
            all.append(&mut args);
            c.client.exec("taskset", &all)
        }
        None => c.client.exec("curl", &args),
    };
    out.map(|b| b.trim().to_string()).unwrap_or_else(|_| "FAILED".to_string())
}

#[test]
fn sequential_curls_alternate_whatever_cpu_they_run_on() {
    // IPVS keeps one rr position per service. First with no pinning at all, then each
    // curl moved to the next CPU in turn, so that consecutive SYNs surely arrive on
    // different CPUs.
    let mut c = cluster(AttachMode::Auto);
    c.start_balancer().unwrap();
    c.configure_service().unwrap();
    let cpus = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
    assert!(cpus >= 2, "this test needs two CPUs to show one order across them (found {cpus})");
    let src = testbed::CIP.to_string();
    let free: Vec<String> = (0..20).map(|_| get(&c, &src, None)).collect();
    let spread: Vec<String> = (0..20).map(|i| get(&c, &src, Some(i % cpus))).collect();
    for answers in [&free, &spread] {
        let want: Vec<&str> = (0..20).map(|i| if i % 2 == 0 { "rs1" } else { "rs2" }).collect();
        assert_eq!(answers.iter().map(String::as_str).collect::<Vec<_>>(), want, "free: {free:?}; spread over CPUs: {spread:?}");
    }
}

/// Polls `xlb --output json list` until `want(service)` holds (up to 10 s).
fn wait_for(c: &DrCluster, what: &str, want: impl Fn(&serde_json::Value) -> bool) {
    for _ in 0..100 {
        let list = json(&c.xlb(&["--output", "json", "list"]).unwrap());
        if want(&list[0]) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("{what}: {}", c.xlb(&["list"]).unwrap());
}

fn health_is(svc: &serde_json::Value, addr: &str, state: &str) -> bool {
    svc["reals"].as_array().unwrap().iter().any(|r| r["address"] == addr && r["health"] == state)
}

#[test]
fn persistence_follows_health_checks_and_leaves_the_sorry_server() {
    // Field case 04: ipvsadm -A -t VIP:80 -s rr -p 300, two reals, a TCP check, a sorry
    // server. IPVS drops a template whose real is gone (keepalived removes a failed real,
    // and the sorry server once the reals are back): the client is scheduled afresh.
    let mut c = DrCluster::build(Path::new(XLB), 3, AttachMode::Auto).expect("build the namespace cluster");
    c.start_balancer().unwrap();
    let svc = format!("{VIP}:80");
    let (rs1, rs2, sorry) = (testbed::rip(0).to_string(), testbed::rip(1).to_string(), testbed::rip(2).to_string());
    c.xlb(&["service", "add", "tcp", &svc, "-s", "rr", "-p", "300"]).unwrap();
    c.xlb(&["real", "add", "tcp", &svc, &rs1]).unwrap();
    c.xlb(&["real", "add", "tcp", &svc, &rs2]).unwrap();
    c.xlb(&["health", "set", "tcp", &svc, "--type", "tcp", "--interval", "0.5", "--timeout", "0.4", "--fall", "1", "--rise", "1"])
        .unwrap();
    c.xlb(&["sorry", "set", "tcp", &svc, &sorry]).unwrap();
    wait_for(&c, "both reals up", |s| health_is(s, &rs1, "up") && health_is(s, &rs2, "up"));
    let newcomer = format!("{}.51", testbed::SUBNET_PREFIX);
    c.client.ip(&["addr", "add", &format!("{newcomer}/24"), "dev", testbed::NIC]).unwrap();
    let me = testbed::CIP.to_string();

    let first = get(&c, &me, None);
    let (r1, other, r1_index) = match first.as_str() {
        "rs1" => (&rs1, "rs2", 0),
        "rs2" => (&rs2, "rs1", 1),
        _ => panic!("first request answered {first:?}"),
    };
    // A: the template's real fails.
    c.stop_http(r1_index).unwrap();
    wait_for(&c, "the template's real down", |s| health_is(s, r1, "down"));
    let a: Vec<String> = (0..5).map(|_| get(&c, &me, None)).collect();
    assert_eq!(a, vec![other; 5], "the template's real failed: the other real serves");
    // B: both fail; the sorry server serves old and new clients.
    c.stop_http(1 - r1_index).unwrap();
    wait_for(&c, "sorry server active", |s| s["sorry_active"] == true);
    let b: Vec<String> = (0..5).map(|_| get(&c, &me, None)).chain([get(&c, &newcomer, None)]).collect();
    assert_eq!(b, vec!["rs3"; 6], "all reals down: the sorry server");
    // C: both recover; the sorry server's template holder returns to the reals.
    c.start_http(0).unwrap();
    c.start_http(1).unwrap();
    wait_for(&c, "reals back, sorry server standing by", |s| {
        health_is(s, &rs1, "up") && health_is(s, &rs2, "up") && s["sorry_active"] == false
    });
    let after: Vec<String> = (0..5).map(|_| get(&c, &newcomer, None)).collect();
    assert!(after.iter().all(|w| w == "rs1" || w == "rs2"), "reals recovered, yet: {after:?}");
    assert!(after.iter().all(|w| *w == after[0]), "one template again: {after:?}");
}

#[test]
fn dr_connection_counts_stay_exact_over_many_short_connections() {
    // DR sees only the client's packets, several of which may be handled on two CPUs
    // at once (no pinning here): the counts must still match the connection table.
    let mut c = cluster(AttachMode::Auto);
    c.start_balancer().unwrap();
    c.configure_service().unwrap();
    const N: u64 = 300;
    // Each from its own source port: a port the kernel hands out again (it is free at
    // once when the server closes first) would find its old connection's entry still in
    // FIN_WAIT and follow it, as IPVS does (conn_reuse_mode 1 reschedules TIME_WAIT only),
    // making fewer connections than curls.
    let url = format!("http://{VIP}/");
    for i in 0..N {
        let port = (40000 + i).to_string();
        c.client
            .exec("curl", &["--silent", "--show-error", "--fail", "--max-time", "10", "--local-port", &port, &url])
            .unwrap_or_else(|e| panic!("curl {i}: {e:#}"));
    }
    let mut last = String::new();
    for _ in 0..20 {
        std::thread::sleep(std::time::Duration::from_millis(250));
        let list = json(&c.xlb(&["--output", "json", "list"]).unwrap());
        let conns = json(&c.xlb(&["--output", "json", "conns"]).unwrap());
        let conns = conns.as_array().unwrap();
        let mut exact = true;
        for r in list[0]["reals"].as_array().unwrap() {
            let mine: Vec<_> = conns.iter().filter(|e| e["real"] == r["address"]).collect();
            let established = mine.iter().filter(|e| e["state"] == "ESTABLISHED").count() as u64;
            let counts = (r["active_conns"].as_u64().unwrap(), r["inactive_conns"].as_u64().unwrap());
            // Every connection closed: none active. Each is counted once while it is in
            // the table (FIN_WAIT, 120 s; one ended by a reset is CLOSE, 10 s, and may
            // have expired already on a slow run).
            exact &= counts == (established, mine.len() as u64 - established) && counts.0 == 0;
            assert_eq!(r["conns"].as_u64(), Some(N / 2), "{list}");
        }
        if exact {
            return;
        }
        let mut states = std::collections::BTreeMap::new();
        for e in conns {
            *states.entry(format!("{} {}", e["real"], e["state"])).or_insert(0) += 1;
        }
        last = format!("{}connection table: {states:?}", c.xlb(&["list", "--stats"]).unwrap());
    }
    panic!("ActiveConn/InActConn differ from the connection table after {N} connections:\n{last}");
}

/// The fast path balances a frame for the VIP only when it is addressed to a MAC of the
/// director's NIC, as the kernel receives only those: the client sending the VIP's
/// frames to a MAC nobody holds (the switch floods them) gets no answer, and the
/// director counts them as `pass_other_host`. A macvlan made on the NIC while the daemon
/// runs (keepalived's `use_vmac` VRRP MAC) is registered by the daemon's link watch, and
/// the frames to its MAC are balanced from then on.
#[test]
fn only_frames_for_the_directors_macs_are_balanced_and_a_new_vrrp_mac_joins_them() {
    let mut c = cluster(AttachMode::Skb);
    c.start_balancer().expect("start xlb run");
    c.configure_service().expect("configure the service");
    assert!(c.curl("/").is_ok(), "by the director's own MAC");
    let passed = |c: &DrCluster| json(&c.xlb(&["--output", "json", "counters"]).unwrap())["pass_other_host"].as_u64().unwrap();
    assert_eq!(passed(&c), 0);
    let vmac = "00:00:5e:00:01:33";
    c.client.ip(&["neigh", "replace", &VIP.to_string(), "lladdr", vmac, "dev", testbed::NIC, "nud", "permanent"]).unwrap();
    let url = format!("http://{VIP}/");
    let quick = |c: &DrCluster| c.client.exec("curl", &["--silent", "--fail", "--max-time", "1", &url]);
    assert!(quick(&c).is_err(), "a frame for another MAC must not be balanced");
    assert!(passed(&c) > 0, "the SYNs flooded for {vmac} are counted as pass_other_host");

    c.director.ip(&["link", "add", "vrrp.51", "link", testbed::NIC, "address", vmac, "type", "macvlan", "mode", "private"]).unwrap();
    c.director.ip(&["link", "set", "vrrp.51", "up"]).unwrap();
    let made = std::time::Instant::now();
    // Well before the 30 s resync: the link notification brings it.
    let answer = loop {
        match quick(&c) {
            Ok(body) => break body,
            Err(e) if made.elapsed() > std::time::Duration::from_secs(8) => panic!("{vmac} not balanced {:?} after its macvlan: {e:#}", made.elapsed()),
            Err(_) => {}
        }
    };
    assert!(answer.starts_with("rs"), "{answer}");
}

#[test]
fn a_service_with_no_real_refuses_at_once_as_ipvs() {
    // IPVS answers a new flow for a service with no available real with ICMP port
    // unreachable (ip_vs_leave): the client's connect fails at once ("Connection
    // refused"), a connected UDP socket gets ECONNREFUSED, instead of a silent drop and
    // the client's timeout.
    let mut c = cluster(AttachMode::Auto);
    c.start_balancer().unwrap();
    c.xlb(&["service", "add", "tcp", &format!("{VIP}:80"), "-s", "rr"]).unwrap();
    c.xlb(&["service", "add", "udp", &format!("{VIP}:53"), "-s", "rr"]).unwrap();
    let url = format!("http://{VIP}/");
    let out = c.client.command("curl").args(["--silent", "--show-error", "--max-time", "10", &url]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // curl: 7 = could not connect (the ICMP error ends the connect); 28 would be its
    // timeout. The counters below show the answer was xlb's.
    assert_eq!(out.status.code(), Some(7), "curl {url}: {stderr}");
    let udp = {
        let _inside = c.client.enter().unwrap();
        let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        socket.connect((VIP, 53)).unwrap();
        socket.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        socket.send(b"query").unwrap();
        socket.recv(&mut [0u8; 64]).map(|_| ()).unwrap_err().kind()
    };
    assert_eq!(udp, std::io::ErrorKind::ConnectionRefused);
    let counters = json(&c.xlb(&["--output", "json", "counters"]).unwrap());
    let count = |name: &str| counters[name].as_u64();
    assert_eq!(count("drop_no_real"), Some(0), "{counters}");
    assert!(count("tx_icmp_unreachable").unwrap() >= 2, "{counters}");
}
