//! Built-in health checks through real namespaces: a real server's HTTP service killed
//! and restarted while a client loops requests; a drain around a long-lived connection;
//! all reals down and a sorry server; notify commands.
use std::{
    io::{BufRead, BufReader, Write},
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use lb_userspace::{
    loader::AttachMode,
    testbed::{DrCluster, ECHO_PORT, VIP},
};

const XLB: &str = env!("CARGO_BIN_EXE_xlb");
/// Check timing used here: a check every INTERVAL, FALL failures to go down, RISE
/// successes to come up.
const INTERVAL: f64 = 0.5;
const FALL: u32 = 2;
const RISE: u32 = 2;

fn cluster(reals: usize) -> DrCluster {
    assert_eq!(unsafe { libc::geteuid() }, 0, "these tests create namespaces and attach XDP: run them as root (cargo xtask test)");
    DrCluster::build(Path::new(XLB), reals, AttachMode::Skb).expect("build the namespace cluster")
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("bad JSON ({e}): {text}"))
}

fn web(c: &DrCluster, reals: &[&str]) -> String {
    let svc = format!("{VIP}:80");
    c.xlb(&["service", "add", "tcp", &svc, "-s", "rr"]).unwrap();
    for r in reals {
        c.xlb(&["real", "add", "tcp", &svc, r]).unwrap();
    }
    let (i, f, r) = (INTERVAL.to_string(), FALL.to_string(), RISE.to_string());
    c.xlb(&["health", "set", "tcp", &svc, "--type", "http", "--contains", "rs", "--interval", &i, "--timeout", "0.4", "--fall", &f, "--rise", &r])
        .unwrap();
    svc
}

/// (when sent, who answered or None if the request failed)
type Sample = (Instant, Option<String>);

fn sample(c: &DrCluster) -> Sample {
    let at = Instant::now();
    (at, c.curl("/").ok().map(|b| b.trim().to_string()))
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

#[test]
fn a_dead_real_leaves_rotation_and_returns_when_it_recovers() {
    let mut c = cluster(2);
    c.start_balancer().unwrap();
    web(&c, &["10.99.0.11", "10.99.0.12"]);
    // Both healthy: both serve.
    let warm: Vec<Sample> = (0..4).map(|_| sample(&c)).collect();
    assert!(warm.iter().all(|(_, r)| r.is_some()), "{warm:?}");

    c.stop_http(1).unwrap();
    let killed = Instant::now();
    let mut samples = Vec::new();
    while killed.elapsed() < secs(FALL as f64 * INTERVAL + INTERVAL + 1.5) {
        samples.push(sample(&c));
        std::thread::sleep(Duration::from_millis(50));
    }
    let deadline = killed + secs(FALL as f64 * INTERVAL + INTERVAL);
    let late: Vec<&Sample> = samples.iter().filter(|(at, _)| *at >= deadline).collect();
    assert!(late.len() >= 5, "enough requests after the deadline: {}", late.len());
    for (at, who) in &late {
        assert_eq!(who.as_deref(), Some("rs1"), "request {:?} after the kill went to a dead server", at.duration_since(killed));
    }
    let list = json(&c.xlb(&["--output", "json", "list"]).unwrap());
    let rs2 = list[0]["reals"].as_array().unwrap().iter().find(|r| r["address"] == "10.99.0.12").unwrap().clone();
    assert_eq!(rs2["health"], "down", "{list}");
    assert!(rs2["health_reason"].as_str().unwrap().contains("connect"), "{rs2}");
    assert_eq!(rs2["health_changes"], 1);
    // ipvsadm's view, as with keepalived: the failed real is gone.
    let ipvs = c.xlb(&["ipvsadm", "-L", "-n"]).unwrap();
    assert!(!ipvs.contains("10.99.0.12:80"), "{ipvs}");

    c.start_http(1).unwrap();
    let restarted = Instant::now();
    let mut back = None;
    while restarted.elapsed() < secs((RISE + 1) as f64 * INTERVAL + 3.0) {
        let (at, who) = sample(&c);
        if who.as_deref() == Some("rs2") {
            back = Some(at.duration_since(restarted));
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let back = back.expect("rs2 is used again after it recovers");
    assert!(back >= secs((RISE - 1) as f64 * INTERVAL), "rs2 came back after {back:?}, before {RISE} passed checks could have happened");
}

#[test]
fn drain_waits_for_a_long_lived_connection_then_removes_the_real() {
    let mut c = cluster(2);
    c.start_balancer().unwrap();
    let svc = format!("{VIP}:{ECHO_PORT}");
    c.xlb(&["service", "add", "tcp", &svc, "-s", "rr"]).unwrap();
    c.xlb(&["real", "add", "tcp", &svc, "10.99.0.11"]).unwrap();
    c.xlb(&["real", "add", "tcp", &svc, "10.99.0.12"]).unwrap();
    let stream = c.connect_from_client(ECHO_PORT).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut echo = |line: &str| {
        writeln!(writer, "{line}").unwrap();
        let mut answer = String::new();
        reader.read_line(&mut answer).unwrap();
        assert!(answer.ends_with(&format!(": {line}\n")), "{answer:?}");
        answer.split(':').next().unwrap().to_string()
    };
    let server = echo("start");
    let rip = if server == "rs1" { "10.99.0.11" } else { "10.99.0.12" };
    let other = if server == "rs1" { "rs2" } else { "rs1" };

    let mut drain = c.xlb_command(&["real", "drain", "tcp", &svc, rip, "--timeout", "30"]);
    let child = drain.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    // While draining: the connection carries on, new connections go elsewhere.
    for i in 0..5 {
        assert_eq!(echo(&format!("during drain {i}")), server);
    }
    let new = c.connect_from_client(ECHO_PORT).unwrap();
    let mut r = BufReader::new(new.try_clone().unwrap());
    writeln!(&new, "hello").unwrap();
    let mut answer = String::new();
    r.read_line(&mut answer).unwrap();
    assert!(answer.starts_with(other), "a new connection during the drain went to {answer:?}");
    drop((new, r));
    // The client finishes: its FIN ends the active connection, and the drain completes.
    drop(echo);
    writer.shutdown(std::net::Shutdown::Both).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("draining {rip}")) && stdout.contains("1 active"), "progress is shown: {stdout}");
    assert!(stdout.contains(&format!("drained {rip}")) && stdout.contains("removed"), "{stdout}");
    let list = json(&c.xlb(&["--output", "json", "list"]).unwrap());
    let reals: Vec<&str> = list[0]["reals"].as_array().unwrap().iter().map(|r| r["address"].as_str().unwrap()).collect();
    assert_eq!(reals.len(), 1);
    assert_ne!(reals[0], rip);
}

#[test]
fn the_sorry_server_serves_while_no_real_is_healthy() {
    let mut c = cluster(3);
    c.start_balancer().unwrap();
    let svc = web(&c, &["10.99.0.11", "10.99.0.12"]);
    c.xlb(&["sorry", "set", "tcp", &svc, "10.99.0.13"]).unwrap();
    let log = std::env::temp_dir().join(format!("xlb-notify-{}", lb_userspace::netns::run_id()));
    let notify = format!("echo \"$XLB_REAL $XLB_STATE\" >> {}", log.display());
    // Same check, now with notify commands.
    let i = INTERVAL.to_string();
    c.xlb(&["health", "set", "tcp", &svc, "--type", "http", "--interval", &i, "--timeout", "0.4", "--fall", "1", "--rise", "1", "--notify-down", &notify, "--notify-up", &notify])
        .unwrap();
    assert_ne!(sample(&c).1.as_deref(), Some("rs3"), "the sorry server waits while reals are healthy");

    c.stop_http(0).unwrap();
    c.stop_http(1).unwrap();
    std::thread::sleep(secs(3.0 * INTERVAL + 0.5));
    for _ in 0..4 {
        assert_eq!(sample(&c).1.as_deref(), Some("rs3"), "all reals down: the sorry server answers");
    }
    let list = json(&c.xlb(&["--output", "json", "list"]).unwrap());
    assert_eq!(list[0]["sorry_active"], true, "{list}");
    let ipvs = c.xlb(&["ipvsadm", "-L", "-n"]).unwrap();
    assert!(ipvs.contains("10.99.0.13:80"), "keepalived puts the sorry server into IPVS: {ipvs}");

    c.start_http(0).unwrap();
    std::thread::sleep(secs(3.0 * INTERVAL + 0.5));
    for _ in 0..4 {
        assert_eq!(sample(&c).1.as_deref(), Some("rs1"), "rs1 recovered: it takes the new connections");
    }
    let events = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    for line in ["10.99.0.11 DOWN", "10.99.0.12 DOWN", "10.99.0.11 UP"] {
        assert!(events.contains(line), "notify ran for {line}: {events:?}");
    }
}

#[test]
fn a_real_that_recovered_while_the_daemon_was_away_serves_again() {
    let mut c = cluster(2);
    c.start_daemon(&[]).unwrap();
    web(&c, &["10.99.0.11", "10.99.0.12"]);
    c.stop_http(1).unwrap();
    std::thread::sleep(secs((FALL + 1) as f64 * INTERVAL + 0.5));
    assert!((0..4).all(|_| sample(&c).1.as_deref() == Some("rs1")), "rs2 is down");
    // The daemon dies with rs2 marked down in the pinned maps; rs2 recovers meanwhile.
    c.kill_balancer().unwrap();
    c.start_http(1).unwrap();
    c.start_daemon(&[]).unwrap();
    let back = Instant::now();
    let mut seen = false;
    while back.elapsed() < secs((RISE + 2) as f64 * INTERVAL + 2.0) && !seen {
        seen = sample(&c).1.as_deref() == Some("rs2");
    }
    assert!(seen, "rs2 must not stay down after the restart");
}
