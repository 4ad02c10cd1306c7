//! `xlb trace` beside `xlb run` in real namespaces: the lines it prints while curl
//! connects through the VIP, and the switch it leaves off when stopped. Needs root;
//! fails (never skips) without it.
use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Stdio},
    sync::{Arc, Mutex, mpsc},
    time::{Duration, Instant},
};

use xlb_core::{loader::AttachMode, trace::Session};
use xlb_testkit::testbed::{CIP, DrCluster, VIP, rip};

const XLB: &str = env!("CARGO_BIN_EXE_xlb");

/// A running `xlb trace`: its stdout lines arrive on a channel; SIGINT'd and reaped on drop.
struct Trace {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Trace {
    fn start(c: &DrCluster, args: &[&str]) -> Trace {
        let mut cmd = c.xlb_command(&[&["trace"], args].concat());
        let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start xlb trace");
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        // It says so on stderr once the switch is on.
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut first = String::new();
        stderr.read_line(&mut first).unwrap();
        assert!(first.contains("tracing the fast path"), "xlb trace said: {first}");
        std::thread::spawn(move || for _ in stderr.lines() {});
        Trace { child, lines }
    }

    /// Stops it as Ctrl-C would; returns every line it printed and its exit status.
    fn stop(mut self) -> (Vec<String>, std::process::ExitStatus) {
        // The ring buffer is read every 200 ms at most: let the last events arrive.
        std::thread::sleep(Duration::from_millis(500));
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let status = self.child.wait().unwrap();
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut lines = Vec::new();
        while let Ok(l) = self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            lines.push(l);
        }
        (lines, status)
    }
}

impl Drop for Trace {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
            let _ = self.child.wait();
        }
    }
}

/// `xlb run --fastpath-log info` on the director, its log (stderr) collected.
struct Balancer {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Balancer {
    fn start(c: &DrCluster) -> Balancer {
        let mut cmd = c.xlb_command(&["run", "--iface", "eth0", "--mode", "skb", "--fastpath-log", "info"]);
        let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start xlb run");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let (tx, rx) = mpsc::channel();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let balancer = Balancer { child, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) if line.contains("ready") => break,
                Ok(_) => {}
                Err(_) => panic!("xlb run did not become ready; its log: {:#?}", balancer.log.lock().unwrap()),
            }
        }
        balancer
    }

    /// Waits up to 5 s for a log line containing every one of `parts`.
    fn wait_for(&self, parts: &[&str]) -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Some(l) = self.log.lock().unwrap().iter().find(|l| parts.iter().all(|p| l.contains(p))) {
                return Some(l.clone());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
            let _ = self.child.wait();
        }
    }
}

/// The value of `key=` in a trace line.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split(' ').find_map(|f| f.strip_prefix(key).and_then(|v| v.strip_prefix('='))).unwrap_or_else(|| panic!("no {key} in {line}"))
}

#[test]
fn trace_prints_a_clients_decisions_beside_xlb_run() {
    assert_eq!(unsafe { libc::geteuid() }, 0, "this test creates namespaces and attaches XDP: run it as root (cargo xtask test)");
    let c = DrCluster::build(Path::new(XLB), 2, AttachMode::Skb).expect("build the namespace cluster");
    let balancer = Balancer::start(&c);
    c.configure_service().expect("configure the service");

    let trace = Trace::start(&c, &["--client", &CIP.to_string()]);
    let answers: Vec<String> = (0..2).map(|_| c.curl("/").expect("curl through the VIP").trim().to_string()).collect();
    assert_eq!(answers, ["rs1", "rs2"]);
    let (lines, status) = trace.stop();
    assert!(status.success(), "xlb trace exit status {status}");

    // Every line is about this client's flows to the VIP, sent to a real by DR.
    assert!(lines.len() >= 2 * 3, "a connection is several packets each way: {lines:#?}");
    for l in &lines {
        assert!(field(l, "client").starts_with(&format!("{CIP}:")), "{l}");
        assert_eq!(field(l, "service"), format!("{VIP}:80"), "{l}");
        assert_eq!(field(l, "proto"), "tcp", "{l}");
        assert_eq!((field(l, "verdict"), field(l, "reason")), ("tx", "tx_dr"), "{l}");
        assert_ne!(field(l, "state"), "-", "{l}");
    }
    // Each curl opened one connection, to rs1 then rs2, and later packets followed it.
    let new: Vec<&String> = lines.iter().filter(|l| l.ends_with(" new")).collect();
    assert_eq!(new.len(), 2, "{lines:#?}");
    assert_eq!(field(new[0], "real"), format!("{}:80", rip(0)));
    assert_eq!(field(new[1], "real"), format!("{}:80", rip(1)));
    for conn in &new {
        let client = field(conn, "client");
        let later: Vec<&String> = lines.iter().filter(|l| field(l, "client") == client && !l.ends_with(" new")).collect();
        assert!(!later.is_empty(), "no later packet of {client}: {lines:#?}");
        assert!(later.iter().all(|l| field(l, "real") == field(conn, "real")), "{lines:#?}");
        assert!(later.iter().any(|l| field(l, "state") == "ESTABLISHED"), "{lines:#?}");
    }
    // The fast path's own records, in xlb run's log: each new connection and its real.
    for (conn, real) in new.iter().zip([rip(0), rip(1)]) {
        let want = format!("new connection {} -> {VIP}:80 scheduled to real {real}", field(conn, "client"));
        let line = balancer.wait_for(&["INFO", "fastpath: ", &want]);
        assert!(line.is_some(), "no `{want}` in xlb run's log: {:#?}", balancer.log.lock().unwrap());
    }
    // Stopped, it left the switch off.
    let session = Session::open(&c.pin_dir).expect("the pinned trace maps");
    assert_eq!(session.current().unwrap().enabled, 0, "xlb trace left tracing on");
    drop(session);

    // JSON, one object a line, for another client: nothing from this one.
    let trace = Trace::start(&c, &["--output", "json", "--client", "10.99.0.99"]);
    c.curl("/").expect("curl through the VIP");
    let (lines, status) = trace.stop();
    assert!(status.success());
    assert!(lines.is_empty(), "{lines:#?}");
    let trace = Trace::start(&c, &["--output", "json", "--service", &format!("{VIP}:80")]);
    c.curl("/").expect("curl through the VIP");
    let (lines, _) = trace.stop();
    assert!(!lines.is_empty());
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert_eq!(v["service"], format!("{VIP}:80"), "{l}");
        assert_eq!(v["reason"], "tx_dr", "{l}");
        assert!(v["time"].as_str().unwrap().ends_with('Z'), "{l}");
    }
    drop(balancer);
}
