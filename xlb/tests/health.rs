//! Built-in health checks through real namespaces: a real server's HTTP service killed
//! and restarted while a client loops requests; a drain around a long-lived connection;
//! all reals down and a sorry server; notify commands.
use std::{
    io::{BufRead, BufReader, Write},
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use xlb_core::loader::AttachMode;
use xlb_testkit::testbed::{DrCluster, ECHO_PORT, VIP};

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
    let log = std::env::temp_dir().join(format!("xlb-notify-{}", xlb_core::netns::run_id()));
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

/// The listed real `addr` (with `port`) of the service on `vip`:`service_port`.
fn listed(c: &DrCluster, vip: &str, service_port: u16, addr: &str, port: u16) -> serde_json::Value {
    let list = json(&c.xlb(&["--output", "json", "list"]).unwrap());
    let service = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"]["addr"]["vip"] == vip && s["id"]["addr"]["port"] == service_port)
        .unwrap_or_else(|| panic!("no service {vip}:{service_port} in {list}"));
    service["reals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["address"] == addr && r["port"] == port)
        .unwrap_or_else(|| panic!("no real {addr}:{port} in {service}"))
        .clone()
}

/// Waits up to `limit` for `ok` to hold; false if it never did.
fn wait_for(limit: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    ok()
}

fn vip() -> String {
    VIP.to_string()
}

/// README walk-through M3: setting a down real's check again (a new interval, or only
/// new notify commands) is not a recovery: the real stays down until the check passes.
#[test]
fn a_down_real_stays_down_when_its_check_is_set_again() {
    let mut c = cluster(2);
    c.start_balancer().unwrap();
    let svc = web(&c, &["10.99.0.11", "10.99.0.12"]);
    c.stop_http(1).unwrap();
    assert!(wait_for(secs(6.0), || listed(&c, &vip(), 80, "10.99.0.12", 80)["health"] == "down"), "rs2 goes down");
    let i = INTERVAL.to_string();
    for extra in [vec!["--interval", "3", "--fall", "3"], vec!["--interval", "3", "--fall", "3", "--notify-up", "true", "--notify-down", "true"]] {
        let mut args = vec!["health", "set", "tcp", &svc, "--type", "http", "--contains", "rs", "--timeout", "0.4", "--rise", "1"];
        args.extend(extra);
        c.xlb(&args).unwrap();
        let rs2 = listed(&c, &vip(), 80, "10.99.0.12", 80);
        assert_eq!(rs2["health"], "down", "a new check of a down real begins down: {rs2}");
        for _ in 0..4 {
            assert_eq!(sample(&c).1.as_deref(), Some("rs1"), "no new connection for the dead rs2");
        }
    }
    // It returns as soon as the check passes.
    c.xlb(&["health", "set", "tcp", &svc, "--type", "http", "--contains", "rs", "--interval", &i, "--timeout", "0.4", "--rise", "1"]).unwrap();
    c.start_http(1).unwrap();
    assert!(wait_for(secs(4.0), || listed(&c, &vip(), 80, "10.99.0.12", 80)["health"] == "up"), "rs2 returns when its check passes");
}

/// README walk-through M2: a failing check, then a passing one, applied back to back: the
/// replaced check's late verdict must not count, and the reals follow the check in force.
/// The two applies go straight to the API, a few milliseconds apart: after the failing
/// check's first verdict, before the daemon's loop has taken it in.
#[test]
fn two_applies_in_quick_succession_leave_health_to_the_checks() {
    use xlb_core::api::{self, Paths, Request};
    let mut c = cluster(2);
    c.start_balancer().unwrap();
    let config = |status: u16| {
        format!(
            "[[service]]\nvip = \"{VIP}\"\nport = 80\nscheduler = \"rr\"\nreals = [\"10.99.0.11\", \"10.99.0.12\"]\n\
             [service.health]\ntype = \"http\"\nstatus = {status}\ninterval = {INTERVAL}\ntimeout = 0.4\nfall = 1\nrise = 2\n"
        )
    };
    let socket = Paths::for_pin_dir(&c.pin_dir).socket;
    let apply = |status: u16| {
        let request = Request::Apply { config: config(status), origin: format!("status {status}") };
        api::call(&socket, &request).unwrap_or_else(|e| panic!("apply: {e:#}"));
    };
    apply(200);
    let both_up = |c: &DrCluster| ["10.99.0.11", "10.99.0.12"].iter().all(|r| listed(c, &vip(), 80, r, 80)["health"] == "up");
    assert!(wait_for(secs(3.0), || both_up(&c)));
    for gap_ms in [5, 15, 25, 35, 45] {
        apply(599);
        std::thread::sleep(Duration::from_millis(gap_ms));
        apply(200);
        assert!(wait_for(secs(2.0 * INTERVAL * 2.0 + 2.0), || both_up(&c)), "{gap_ms} ms apart: both reals follow the passing check");
        let answers: Vec<Option<String>> = (0..4).map(|_| sample(&c).1).collect();
        assert!(answers.iter().all(|a| a.is_some()), "{gap_ms} ms apart: {answers:?}");
    }
}

/// keepalived #187/#2720 (case 11): a weight a dynamic exec check set survives a reload of
/// an unchanged file and a restart of the daemon; health verdicts survive both; the
/// effective weight always comes from the configured weight and the check's verdict.
#[test]
fn dynamic_weights_and_verdicts_survive_reload_and_restart() {
    let mut c = cluster(2);
    let dir = std::env::temp_dir().join(format!("xlb-dynamic-{}", xlb_core::netns::run_id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exit_code = |real: &str, code: u32| std::fs::write(dir.join(format!("exit-{real}")), code.to_string()).unwrap();
    exit_code("10.99.0.11", 7); // up, weight 5
    exit_code("10.99.0.12", 0); // up, its configured weight
    let cfg = dir.join("xlb.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[service]]\nvip = \"{VIP}\"\nport = 80\nscheduler = \"wrr\"\n\
             reals = [{{ address = \"10.99.0.11\", weight = 1 }}, {{ address = \"10.99.0.12\", weight = 1 }}]\n\
             [service.health]\ntype = \"exec\"\ncommand = \"exit $(cat {}/exit-$XLB_REAL)\"\ndynamic = true\ninterval = {INTERVAL}\ntimeout = 0.4\n",
            dir.display()
        ),
    )
    .unwrap();
    let cfg_arg = cfg.to_str().unwrap().to_string();
    c.start_daemon(&["--config", &cfg_arg]).unwrap();
    let weight = |c: &DrCluster, r: &str| listed(c, &vip(), 80, r, 80)["weight"].as_u64().unwrap();
    assert!(wait_for(secs(4.0), || weight(&c, "10.99.0.11") == 5), "the check sets weight 5");

    c.xlb(&["reload"]).unwrap();
    let changes = json(&c.xlb(&["--output", "json", "apply", &cfg_arg]).unwrap());
    assert_eq!(changes["reals_changed"], 0, "an unchanged file changes nothing: {changes}");
    for _ in 0..10 {
        assert_eq!((weight(&c, "10.99.0.11"), weight(&c, "10.99.0.12")), (5, 1), "after the reload");
        std::thread::sleep(Duration::from_millis(150));
    }

    // rs2 fails; the daemon is killed and started again: rs2 stays down (no check has
    // passed) and rs1 keeps the weight its check set.
    exit_code("10.99.0.12", 1);
    assert!(wait_for(secs(4.0), || listed(&c, &vip(), 80, "10.99.0.12", 80)["health"] == "down"));
    c.kill_balancer().unwrap();
    c.start_daemon(&["--config", &cfg_arg]).unwrap();
    let rs2 = listed(&c, &vip(), 80, "10.99.0.12", 80);
    assert_eq!(rs2["health"], "down", "a down real stays down over a restart: {rs2}");
    assert_eq!(weight(&c, "10.99.0.11"), 5, "the dynamic weight stays over a restart");
    for _ in 0..4 {
        assert_eq!(sample(&c).1.as_deref(), Some("rs1"));
    }
    // The check's verdict changes: the weight follows, down to the configured one.
    exit_code("10.99.0.11", 4);
    assert!(wait_for(secs(3.0), || weight(&c, "10.99.0.11") == 2), "weight 2 from exit 4");
    exit_code("10.99.0.11", 0);
    assert!(wait_for(secs(3.0), || weight(&c, "10.99.0.11") == 1), "exit 0: the configured weight again");
    exit_code("10.99.0.12", 0);
    assert!(wait_for(secs(3.0), || listed(&c, &vip(), 80, "10.99.0.12", 80)["health"] == "up"));
    // With its check gone, a real has its configured weight.
    exit_code("10.99.0.11", 9);
    assert!(wait_for(secs(3.0), || weight(&c, "10.99.0.11") == 7), "weight 7 from exit 9");
    c.xlb(&["health", "del", "tcp", &format!("{VIP}:80")]).unwrap();
    assert_eq!(weight(&c, "10.99.0.11"), 1, "no check: the configured weight");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Two NAT reals on one address with different ports are two reals: checked, reported and
/// taken out apart.
#[test]
fn two_nat_reals_on_one_address_are_checked_apart() {
    let mut c = cluster(1);
    c.start_balancer().unwrap();
    let svc = format!("{VIP}:80");
    c.xlb(&["service", "add", "tcp", &svc, "-s", "rr"]).unwrap();
    c.xlb(&["real", "add", "tcp", &svc, "10.99.0.11:80", "-m"]).unwrap();
    c.xlb(&["real", "add", "tcp", &svc, "10.99.0.11:81", "-m"]).unwrap(); // nothing listens on 81
    let i = INTERVAL.to_string();
    c.xlb(&["health", "set", "tcp", &svc, "--type", "tcp", "--interval", &i, "--timeout", "0.4", "--fall", "1", "--rise", "1"]).unwrap();
    assert!(wait_for(secs(3.0), || listed(&c, &vip(), 80, "10.99.0.11", 81)["health"] == "down"), "port 81 fails");
    std::thread::sleep(secs(2.0 * INTERVAL));
    let (good, bad) = (listed(&c, &vip(), 80, "10.99.0.11", 80), listed(&c, &vip(), 80, "10.99.0.11", 81));
    assert_eq!((&good["health"], &good["health_changes"], &good["health_down"]), (&"up".into(), &0.into(), &false.into()), "{good}");
    assert_eq!((&bad["health_changes"], &bad["health_down"]), (&1.into(), &true.into()), "{bad}");
    assert!(bad["health_reason"].as_str().unwrap().contains(":81"), "{bad}");
}

/// Case 10 (keepalived #1462): UDP and HTTP checks of IPv6 reals. The director's IPv6 VIP
/// is the kernel's preferred source towards the reals (a /128 beats the /64), and the
/// reals hold the VIP: checks must come from the director's own address.
#[test]
fn udp_and_http_checks_reach_ipv6_reals() {
    use xlb_testkit::testbed::{VIP6, spawn_until_ready};
    let mut c = cluster(2);
    c.start_balancer().unwrap();
    let responder = "import signal,socket,sys\nsignal.signal(signal.SIGINT,signal.SIG_DFL)\n\
                     s=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM)\ns.bind(('::',5353))\nprint('ready',flush=True)\n\
                     while True:\n  d,p=s.recvfrom(2048)\n  s.sendto((sys.argv[1]+' '+str(len(d))).encode(),p)\n";
    let mut responders: Vec<_> = c
        .reals
        .iter()
        .map(|rs| {
            let mut cmd = rs.ns.command("python3");
            cmd.args(["-c", responder, &rs.name]);
            spawn_until_ready(&format!("UDP responder on {}", rs.name), cmd, Duration::from_secs(10)).unwrap().0
        })
        .collect();
    let (udp, web6) = (format!("[{VIP6}]:5353"), format!("[{VIP6}]:80"));
    let i = INTERVAL.to_string();
    for (proto, svc) in [("udp", &udp), ("tcp", &web6)] {
        c.xlb(&["service", "add", proto, svc, "-s", "rr"]).unwrap();
        for rs in &c.reals {
            c.xlb(&["real", "add", proto, svc, &rs.ip6.to_string()]).unwrap();
        }
    }
    let common = ["--interval", &i, "--timeout", "0.4", "--fall", "1", "--rise", "1"];
    c.xlb(&[&["health", "set", "udp", &udp, "--type", "udp", "--send", "ping", "--expect", "rs"][..], &common].concat()).unwrap();
    c.xlb(&[&["health", "set", "tcp", &web6, "--type", "http", "--contains", "rs"][..], &common].concat()).unwrap();
    std::thread::sleep(secs(4.0 * INTERVAL + 0.5));
    let vip6 = VIP6.to_string();
    for port in [5353, 80] {
        for rs in &c.reals {
            let r = listed(&c, &vip6, port, &rs.ip6.to_string(), port);
            assert_eq!((&r["health"], &r["health_changes"]), (&"up".into(), &0.into()), "port {port}: {r}");
        }
    }
    drop(responders.remove(0));
    let rs1 = c.reals[0].ip6.to_string();
    assert!(wait_for(secs(3.0), || listed(&c, &vip6, 5353, &rs1, 5353)["health"] == "down"), "rs1's UDP service died");
    assert_eq!(listed(&c, &vip6, 5353, &c.reals[1].ip6.to_string(), 5353)["health"], "up");
    assert_eq!(listed(&c, &vip6, 80, &rs1, 80)["health"], "up", "its HTTP is fine");
}

/// Health state survives a restart: with every real down, the sorry server keeps serving
/// from the first request after the daemon is back, until a check says otherwise.
#[test]
fn the_sorry_server_keeps_serving_over_a_restart() {
    let mut c = cluster(3);
    c.start_daemon(&[]).unwrap();
    let svc = web(&c, &["10.99.0.11", "10.99.0.12"]);
    c.xlb(&["sorry", "set", "tcp", &svc, "10.99.0.13"]).unwrap();
    c.stop_http(0).unwrap();
    c.stop_http(1).unwrap();
    assert!(wait_for(secs(4.0), || sample(&c).1.as_deref() == Some("rs3")), "all reals down: the sorry server serves");
    c.kill_balancer().unwrap();
    c.start_daemon(&[]).unwrap();
    for _ in 0..6 {
        assert_eq!(sample(&c).1.as_deref(), Some("rs3"), "right after the restart the reals are still down");
    }
    let list = json(&c.xlb(&["--output", "json", "list"]).unwrap());
    assert_eq!(list[0]["sorry_active"], true, "{list}");
    c.start_http(0).unwrap();
    assert!(wait_for(secs(4.0), || sample(&c).1.as_deref() == Some("rs1")), "rs1 recovers and serves again");
}
