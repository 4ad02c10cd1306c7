//! Connection reuse and fragments end to end through real namespaces, xlb attached in
//! the default (auto) mode: a client reusing its source port after a NAT connection
//! ended in TIME_WAIT reaches the other real at once when the first is quiesced or
//! removed (IPVS's conn_reuse_mode); 3000-byte UDP datagrams, which the client's kernel
//! cuts into fragments for a 1500-byte MTU, reach one real whole and are answered, over
//! IPv4 and IPv6. Needs root; fails (never skips) without it.
use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use xlb_core::{loader::AttachMode, netns::Netns};
use xlb_testkit::testbed::{DrCluster, NAT_REAL_PORT, NAT_VIP, NatCluster, NatLayout, VIP, VIP6, nat_rip};

const XLB: &str = env!("CARGO_BIN_EXE_xlb");

fn require_root() {
    assert_eq!(unsafe { libc::geteuid() }, 0, "the end-to-end tests create namespaces and attach XDP: run them as root (cargo xtask test)");
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("bad JSON ({e}): {text}"))
}

/// `curl --local-port PORT http://VIP/` from the client: the answering real's name and
/// the seconds the TCP handshake took (`time_connect`).
fn curl_from_port(c: &NatCluster, port: u16) -> (String, f64) {
    let port = port.to_string();
    let url = format!("http://{NAT_VIP}/");
    let args = ["--silent", "--show-error", "--fail", "--max-time", "5", "--local-port", &port, "-w", " %{time_connect}", &url];
    let out = c.client.exec("curl", &args).unwrap_or_else(|e| panic!("curl from port {port}: {e:#}"));
    let (name, connect) = out.trim().rsplit_once(' ').unwrap_or_else(|| panic!("curl said {out:?}"));
    (name.trim().to_string(), connect.parse().unwrap())
}

/// The connection table's entry of client port `port`: (state, real).
fn entry(c: &NatCluster, port: u16) -> Option<(String, String)> {
    let conns = json(&c.xlb(&["--output", "json", "conns"]).unwrap());
    conns.as_array().unwrap().iter().find(|e| e["client"].as_str().is_some_and(|s| s.ends_with(&format!(":{port}")))).map(|e| {
        (e["state"].as_str().unwrap().to_string(), e["real"].as_str().unwrap().to_string())
    })
}

#[test]
fn nat_port_reuse_after_time_wait_goes_to_the_other_real_at_once() {
    require_root();
    let mut c = NatCluster::build(Path::new(XLB), 2, AttachMode::Auto, NatLayout::TwoNics).expect("build the NAT cluster");
    c.start_balancer().expect("start xlb run");
    c.configure_service().expect("configure the service");
    let service = format!("{NAT_VIP}:80");
    for (variant, ports) in [("quiesced", 40000u16..40010), ("removed", 40010..40020)] {
        // The case needs the server to close first (HTTP/1.0), so that the client holds
        // no TIME_WAIT of its own on the port; curl may close at the same instant, and
        // then its kernel keeps the port: try the next one.
        let (port, first) = ports
            .clone()
            .find_map(|port| {
                let (first, _) = curl_from_port(&c, port);
                let held = c.client.exec("ss", &["-Htan", "state", "time-wait", "sport", "=", &format!(":{port}")]).unwrap();
                held.trim().is_empty().then_some((port, first))
            })
            .unwrap_or_else(|| panic!("{variant}: the client kept TIME_WAIT on every port of {ports:?}"));
        let (ip, other) = match first.as_str() {
            "rs1" => (nat_rip(0), "rs2"),
            "rs2" => (nat_rip(1), "rs1"),
            _ => panic!("{variant}: answered {first:?}"),
        };
        // The server closes first (HTTP/1.0): the director saw both FINs.
        assert_eq!(entry(&c, port), Some(("TIME_WAIT".into(), ip.to_string())), "{variant}");
        let real = format!("{ip}:{NAT_REAL_PORT}");
        if variant == "quiesced" {
            c.xlb(&["ipvsadm", "-e", "-t", &service, "-r", &real, "-m", "-w", "0"]).unwrap();
        } else {
            c.xlb(&["ipvsadm", "-d", "-t", &service, "-r", &real]).unwrap();
        }
        let (second, connect) = curl_from_port(&c, port);
        assert_eq!(second, other, "{variant}: the reused port is scheduled afresh");
        // No SYN dropped and retransmitted (a second at least).
        assert!(connect < 0.5, "{variant}: connect took {connect} s");
        let (_, now) = entry(&c, port).expect("the new connection's entry");
        assert_ne!(now, ip.to_string(), "{variant}: the old entry was replaced");
        // Both reals back at weight 1 for the next variant.
        if variant == "quiesced" {
            c.xlb(&["ipvsadm", "-e", "-t", &service, "-r", &real, "-m", "-w", "1"]).unwrap();
        }
    }
    let counters = json(&c.xlb(&["--output", "json", "counters"]).unwrap());
    assert_eq!(counters["drop_nodest"], 0, "{counters}");
    // The sysctl's range is checked, and a bad value changes nothing.
    let timeouts = || json(&c.xlb(&["--output", "json", "timeout"]).unwrap());
    assert_eq!(timeouts()["conn_reuse_mode"], 1, "IPVS's default");
    let bad = c.xlb_command(&["set", "--conn-reuse-mode", "4"]).output().unwrap();
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("0..=3"), "{bad:?}");
    assert_eq!(timeouts()["conn_reuse_mode"], 1);
    c.xlb(&["set", "--conn-reuse-mode", "3"]).unwrap();
    assert_eq!(timeouts()["conn_reuse_mode"], 3);
    assert!(c.stop_balancer().unwrap().success());
}

/// A UDP responder on a real server: for each datagram to `addr`, "NAME BYTES" back
/// from `addr` (bound to the VIP, so DR's answer comes from it). Runs until `stop`.
fn udp_responder(ns: &Netns, name: String, addr: SocketAddr, stop: Arc<AtomicBool>) -> thread::JoinHandle<()> {
    let file = std::fs::File::open(ns.path()).unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = thread::spawn(move || {
        assert_eq!(unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) }, 0, "setns: {}", std::io::Error::last_os_error());
        let socket = UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        ready_tx.send(()).unwrap();
        let mut buf = vec![0u8; 65536];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((n, from)) = socket.recv_from(&mut buf) {
                socket.send_to(format!("{name} {n}").as_bytes(), from).unwrap();
            }
        }
    });
    ready_rx.recv_timeout(Duration::from_secs(5)).expect("UDP responder ready");
    handle
}

/// Sends `count` datagrams of `size` bytes to `to` from the client, each from a new
/// socket (a new source port: a new flow). Returns the answers ("no answer" on a
/// timeout).
fn udp_client(ns: &Netns, to: SocketAddr, size: usize, count: usize) -> Vec<String> {
    let file = std::fs::File::open(ns.path()).unwrap();
    thread::spawn(move || {
        assert_eq!(unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) }, 0, "setns: {}", std::io::Error::last_os_error());
        (0..count)
            .map(|_| {
                let any: SocketAddr = if to.is_ipv4() { "0.0.0.0:0".parse().unwrap() } else { "[::]:0".parse().unwrap() };
                let s = UdpSocket::bind(any).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                s.connect(to).unwrap();
                s.send(&vec![b'x'; size]).unwrap();
                let mut buf = [0u8; 100];
                match s.recv(&mut buf) {
                    Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
                    Err(e) => format!("no answer ({e})"),
                }
            })
            .collect()
    })
    .join()
    .expect("client thread")
}

#[test]
fn udp_datagrams_over_the_mtu_reach_one_real_whole_ipv4_and_ipv6() {
    require_root();
    let mut c = DrCluster::build(Path::new(XLB), 2, AttachMode::Auto).expect("build the DR cluster");
    c.start_balancer().expect("start xlb run");
    let stop = Arc::new(AtomicBool::new(false));
    let mut responders = Vec::new();
    for vip in [IpAddr::V4(VIP), IpAddr::V6(VIP6)] {
        let service = SocketAddr::new(vip, 5353).to_string();
        c.xlb(&["service", "add", "udp", &service, "--scheduler", "rr"]).unwrap();
        for rs in &c.reals {
            let rip = if vip.is_ipv4() { IpAddr::V4(rs.ip) } else { IpAddr::V6(rs.ip6) };
            c.xlb(&["real", "add", "udp", &service, &SocketAddr::new(rip, 5353).to_string(), "-g"]).unwrap();
            responders.push(udp_responder(&rs.ns, rs.name.clone(), SocketAddr::new(vip, 5353), stop.clone()));
        }
    }
    let names: Vec<String> = c.reals.iter().map(|r| r.name.clone()).collect();
    // More new flows than CPUs: some CPU schedules two of them (see below).
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize;
    let flows = (cpus + 1).max(4);
    for vip in [IpAddr::V4(VIP), IpAddr::V6(VIP6)] {
        for size in [1000, 3000] {
            let answers = udp_client(&c.client, SocketAddr::new(vip, 5353), size, flows);
            for a in &answers {
                assert!(names.iter().any(|n| *a == format!("{n} {size}")), "{vip}, {size} bytes: answered {answers:?}");
            }
            // Round robin alternates on each CPU: of more new flows than CPUs, some CPU
            // schedules two, to both reals — so datagrams to either real are in this
            // run, each one's fragments all to one real.
            for n in &names {
                assert!(answers.iter().any(|a| a.starts_with(&format!("{n} "))), "{vip}, {size} bytes: {n} never answered: {answers:?}");
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for r in responders {
        r.join().unwrap();
    }
    let counters = json(&c.xlb(&["--output", "json", "counters"]).unwrap());
    assert_eq!(counters["pass_fragment"], 0, "every fragment followed its first: {counters}");
    // Whole 1000-byte datagrams, and 3000-byte ones in three fragments each.
    let want = (2 + 2 * 3) * flows as u64;
    assert!(counters["tx_dr"].as_u64().unwrap() >= want, "{want} frames: {counters}");
    assert!(c.stop_balancer().unwrap().success());
}
