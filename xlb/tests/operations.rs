//! Operating xlb as the README says, where the README walkthrough found it did not: `xlb
//! stop`/`status` after the daemon exited, the demo's Ctrl-C, a TUN real server set up
//! through `ip netns exec`, which state a daemon starts from, and the health of reals
//! without checks. Real binary, real namespaces; needs root and fails (never skips)
//! without it.
use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use xlb_core::{
    api::Paths,
    loader::AttachMode,
    netns::{self, Netns},
};
use xlb_testkit::testbed::{DrCluster, VIP};

const XLB: &str = env!("CARGO_BIN_EXE_xlb");

fn require_root() {
    assert_eq!(unsafe { libc::geteuid() }, 0, "these tests create namespaces and attach XDP: run them as root (cargo xtask test)");
}

fn cluster() -> DrCluster {
    require_root();
    DrCluster::build(Path::new(XLB), 2, AttachMode::Skb).expect("build the namespace cluster")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("run xlb")
}

fn xdp_on_eth0(c: &DrCluster) -> bool {
    c.director.ip(&["link", "show", "eth0"]).unwrap().contains("xdp")
}

/// Waits until the daemon's API socket is gone (it removes it on its way out).
fn wait_for_exit(c: &DrCluster) {
    let socket = Paths::for_pin_dir(&c.pin_dir).socket;
    let deadline = Instant::now() + Duration::from_secs(10);
    while socket.exists() {
        assert!(Instant::now() < deadline, "the daemon did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn stop_and_status_work_from_the_pins_once_the_daemon_has_exited() {
    let mut c = cluster();
    for how in ["SIGTERM", "kill -9"] {
        c.start_daemon(&[]).expect("start the daemon");
        if how == "SIGTERM" {
            c.configure_service().unwrap(); // the second start restores it from the saved state
        }
        assert!(c.curl("/").unwrap().starts_with("rs"));
        if how == "SIGTERM" {
            c.signal_balancer(libc::SIGTERM).unwrap();
            wait_for_exit(&c);
            c.stop_balancer().unwrap(); // reaped
        } else {
            c.kill_balancer().unwrap(); // leaves its socket file behind
        }
        assert!(xdp_on_eth0(&c), "{how}: the fast path runs on without its daemon");
        assert!(c.curl("/").unwrap().starts_with("rs"), "{how}: and still forwards");

        let status = run(&mut c.xlb_command(&["status"]));
        assert_eq!(status.status.code(), Some(1), "{how}: status without a daemon fails");
        let out = text(&status.stdout);
        assert!(out.starts_with("daemon not running ("), "{how}: {out}");
        assert!(out.contains("interfaces eth0 (attached through pinned links)\n"), "{how}: {out}");
        assert!(out.contains("services 1\n"), "{how}: {out}");
        // The fast path counts on: its counters are read from the pins.
        let counters = run(&mut c.xlb_command(&["counters"]));
        assert!(counters.status.success(), "{how}: {}", text(&counters.stderr));
        let tx_dr = text(&counters.stdout).lines().find(|l| l.starts_with("tx_dr ")).map(|l| l.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap());
        assert!(tx_dr.is_some_and(|n| n > 0), "{how}: {}", text(&counters.stdout));
        assert!(text(&counters.stderr).contains("counters read from the pins"), "{how}: {}", text(&counters.stderr));
        let json = run(&mut c.xlb_command(&["--output", "json", "status"]));
        let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
        assert_eq!((json["daemon"].as_bool(), json["interfaces"][0].as_str()), (Some(false), Some("eth0")), "{json}");

        let stop = run(&mut c.xlb_command(&["stop"]));
        let out = text(&stop.stdout);
        assert!(stop.status.success(), "{how}: xlb stop failed: {}{}", out, text(&stop.stderr));
        assert!(out.starts_with("no daemon was running ("), "{how}: {out}");
        assert!(out.contains("detached from eth0 (removed its pinned link)\n"), "{how}: {out}");
        assert!(out.contains("removed the maps' pins"), "{how}: {out}");
        assert!(!out.contains("still attached"), "{how}: {out}");
        assert!(!xdp_on_eth0(&c), "{how}: stop must detach");
        assert!(!c.pin_dir.exists(), "{how}: stop must remove the pins");
        assert!(!Paths::for_pin_dir(&c.pin_dir).socket.exists(), "{how}: the dead daemon's socket goes too");

        let again = run(&mut c.xlb_command(&["stop"]));
        assert!(again.status.success());
        assert!(text(&again.stdout).starts_with("nothing to stop: no daemon answers"), "{}", text(&again.stdout));
    }
}

/// The demo in a process group of its own, as a shell runs a foreground job; killed
/// (the whole group) if the test fails half way.
struct DemoGroup(std::process::Child);

impl Drop for DemoGroup {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
            let _ = self.0.wait();
        }
    }
}

#[test]
fn demo_prints_the_counters_on_ctrl_c_and_exits_0() {
    require_root();
    let mut cmd = Command::new(xlb_testkit::binary(xlb_testkit::TESTKIT).unwrap());
    cmd.arg("demo").stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut demo = DemoGroup(cmd.spawn().expect("start xlb-testkit demo"));
    let stdout = demo.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    while !lines.iter().any(|l: &String| l.contains("request 3: answered by")) {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => lines.push(line),
            Err(_) => panic!("the demo did not answer 3 requests: {lines:?}"),
        }
    }
    // Ctrl-C in a terminal: SIGINT to every process of the foreground group.
    unsafe { libc::kill(-(demo.0.id() as i32), libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = demo.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the demo did not end after Ctrl-C: {lines:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    lines.extend(rx.try_iter());
    let mut stderr = String::new();
    std::io::Read::read_to_string(demo.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    let all = lines.join("\n");
    assert!(status.success(), "the demo exited with {status} after Ctrl-C: {all}\n{stderr}");
    let listed = all.split("== connections per real: xlb list").nth(1).unwrap_or_else(|| panic!("no counters: {all}"));
    for rip in ["10.99.0.11:80", "10.99.0.12:80"] {
        assert!(listed.lines().any(|l| l.contains(rip) && l.contains("Route")), "no line for {rip}: {all}");
    }
    assert!(all.contains("== traffic per real: xlb list --stats"), "{all}");
    assert!(all.contains("namespaces removed"), "{all}");
    let ns = all.split("(namespace ").nth(1).and_then(|s| s.split(')').next()).expect("namespace name in output");
    let netns = text(&Command::new("ip").args(["netns", "list"]).output().unwrap().stdout);
    assert!(!netns.contains(ns), "demo left namespace {ns} behind");
}

/// A namespace with a veth standing for a TUN real server's NIC; torn down on drop.
struct TunRealServer(Netns);

impl TunRealServer {
    fn new() -> Self {
        require_root();
        let ns = Netns::create(&format!("xlb-{}-tun", netns::run_id())).expect("create a namespace");
        ns.ip(&["link", "add", "nic0", "type", "veth", "peer", "name", "nic1"]).unwrap();
        ns.ip(&["link", "set", "nic0", "up"]).unwrap();
        Self(ns)
    }

    /// `xlb ARGS…` entered as `how`: "ip netns exec" (a mount namespace of its own, /sys
    /// remounted) or "nsenter" (the host's mounts).
    fn xlb(&self, how: &str, args: &[&str]) -> Output {
        let mut cmd = match how {
            "ip netns exec" => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &self.0.name, XLB]);
                c
            }
            _ => self.0.command(XLB),
        };
        run(cmd.args(args))
    }

    fn decap_attached(&self) -> bool {
        self.0.ip(&["-d", "link", "show", "nic0"]).unwrap().contains("name xlb_decap")
    }
}

impl Drop for TunRealServer {
    fn drop(&mut self) {
        let _ = self.xlb("nsenter", &["realserver", "teardown"]);
    }
}

#[test]
fn tun_setup_stays_attached_however_the_namespace_is_entered() {
    for (setup_by, check_by) in [("ip netns exec", "nsenter"), ("nsenter", "ip netns exec")] {
        let rs = TunRealServer::new();
        let out = rs.xlb(setup_by, &["realserver", "setup", "--mode", "tun", "--vip", "10.77.2.1", "--iface", "nic0"]);
        assert!(out.status.success(), "setup by {setup_by}: {}", text(&out.stderr));
        // Setup has exited: its links must still hold the program.
        std::thread::sleep(Duration::from_millis(300));
        assert!(rs.decap_attached(), "set up by {setup_by}, the decapsulator must stay attached");
        let status = rs.xlb(check_by, &["realserver", "status", "--mode", "tun", "--vip", "10.77.2.1"]);
        assert!(status.status.success(), "set up by {setup_by}, status by {check_by}: {}{}", text(&status.stdout), text(&status.stderr));
        assert!(text(&status.stdout).contains("ok    IPIP decapsulator on nic0\n"), "{}", text(&status.stdout));
        let down = rs.xlb(check_by, &["realserver", "teardown"]);
        assert!(down.status.success(), "teardown by {check_by}: {}", text(&down.stderr));
        std::thread::sleep(Duration::from_millis(300));
        assert!(!rs.decap_attached(), "teardown by {check_by} detaches what {setup_by} attached");
    }
}

#[test]
fn the_daemon_says_which_state_it_starts_from() {
    let mut c = cluster();
    let file = std::env::temp_dir().join(format!("xlb-test-{}.toml", netns::run_id()));
    std::fs::write(&file, format!("[[service]]\nvip = \"{VIP}\"\nport = 80\nscheduler = \"rr\"\nreals = [\"10.99.0.11\"]\n")).unwrap();
    let config = file.to_str().unwrap();
    let first = c.start_daemon(&["--config", config]).expect("start the daemon");
    assert!(first.iter().any(|l| l == &format!("xlb: nothing saved yet: starting from {config}")), "{first:?}");
    c.xlb(&["real", "add", "tcp", &format!("{VIP}:80"), "10.99.0.12"]).unwrap();
    c.signal_balancer(libc::SIGTERM).unwrap();
    wait_for_exit(&c);
    c.stop_balancer().unwrap(); // reaped
    let second = c.start_daemon(&["--config", config]).expect("restart the daemon");
    let state = Paths::for_pin_dir(&c.pin_dir).state;
    let said = format!(
        "xlb: restoring the saved state {}; {config} is not applied at start (`xlb reload` or SIGHUP applies it)",
        state.display()
    );
    assert!(second.iter().any(|l| l == &said), "{second:?}");
    // And it did what it said: the real added through the API is still there.
    assert!(c.xlb(&["list"]).unwrap().contains("10.99.0.12:80"));
    // `xlb apply` says what it changed in words, not as a debug dump.
    assert_eq!(c.xlb(&["apply", config]).unwrap(), "applied: reals removed 1\n");
    assert_eq!(c.xlb(&["apply", config]).unwrap(), "no changes\n");
    // `xlb set` with nothing to set shows the timeouts and every switch.
    c.xlb(&["set", "--icmp-echo", "on"]).unwrap();
    assert_eq!(
        c.xlb(&["set"]).unwrap(),
        "Timeout (tcp tcpfin udp): 900 120 300\nexpire-nodest-conn off\nsloppy-tcp off\nexpire-quiescent-template off\nicmp-echo on\nconn-reuse-mode 1\n"
    );
    let _ = std::fs::remove_file(&file);
}

#[test]
fn reals_without_checks_show_one_health_in_list_and_metrics() {
    let mut c = cluster();
    let lines = c.start_balancer_with(&["--metrics-listen", "127.0.0.1:9810"]).expect("start xlb run");
    // The start-up line gives the address to scrape, not a page that is not there.
    assert!(lines.iter().any(|l| l == "xlb: serving the metrics on http://127.0.0.1:9810/metrics"), "{lines:?}");
    c.configure_service().unwrap();
    // Traffic resolves the reals' MACs.
    for _ in 0..2 {
        c.curl("/").unwrap();
    }
    let list: serde_json::Value = serde_json::from_str(&c.xlb(&["--output", "json", "list"]).unwrap()).unwrap();
    let metrics = c.director.exec("curl", &["-s", "http://127.0.0.1:9810/metrics"]).unwrap();
    for real in list[0]["reals"].as_array().unwrap() {
        let health = real["health"].as_str().unwrap();
        let address = real["address"].as_str().unwrap();
        let sample = metrics
            .lines()
            .find(|l| l.starts_with("xlb_real_health{") && l.contains(&format!("real=\"{address}")) && l.ends_with(" 1"))
            .unwrap_or_else(|| panic!("no health of {address} in the metrics: {metrics}"));
        assert!(sample.contains(&format!("state=\"{health}\"")), "list says {health}, metrics say {sample}");
        assert_eq!(health, "up", "a real whose MAC is known, without a check");
    }
    let table = c.xlb(&["list"]).unwrap();
    assert!(table.lines().filter(|l| l.contains("Route")).all(|l| l.trim_end().ends_with(" up")), "{table}");
}
