//! A SYN flood through real namespaces: `xlb run --max-conns 4096` (default attach mode,
//! every CPU), spoofed SYNs from random sources twice the tables' size sent from the
//! client's namespace by a raw socket, while a long-lived connection keeps uploading
//! and the client keeps opening new connections. Every legitimate connection must
//! succeed, the long-lived one arrive whole, and the counters show the flood. Needs
//! root; fails (never skips) without it.
use std::{
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr},
    os::fd::AsRawFd,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use xlb_core::loader::AttachMode;
use xlb_testkit::{
    fixtures::Frame,
    testbed::{DrCluster, VIP},
};

const XLB: &str = env!("CARGO_BIN_EXE_xlb");
const TABLE: u32 = 4096;

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("bad JSON ({e}): {text}"))
}

/// 64-bit FNV-1a, as the test HTTP server hashes an upload.
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Sends `count` TCP SYNs to VIP:80 from random sources in 198.18.0.0/15 (RFC 2544's
/// benchmarking range, routed nowhere), from inside the namespace at `ns_path`, through
/// a raw IPv4 socket (IPPROTO_RAW: the packets as built, checksums and all). Paced in
/// bursts so that the flood overlaps the legitimate traffic. Returns how many were sent.
fn flood(ns_path: &Path, count: u32, done: &AtomicBool) -> std::io::Result<u32> {
    let ns = std::fs::File::open(ns_path)?;
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let socket = RawSocket::open()?;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(std::process::id());
    let mut next = || {
        // xorshift64*: enough for addresses nobody must guess.
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        seed.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let mut sent = 0;
    while sent < count {
        for _ in 0..256.min(count - sent) {
            let r = next();
            let src = Ipv4Addr::from(0xc612_0000 | (r as u32 & 0x1_ffff)); // 198.18.0.0/15
            let sport = 1024 + (r >> 32) as u16 % 60000;
            let syn = Frame { src: IpAddr::V4(src), ..Frame::tcp(VIP, 80, sport) };
            // The frame without its Ethernet header: the IPv4 packet.
            socket.send_to_vip(&syn.bytes()[14..])?;
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    done.store(true, Ordering::SeqCst);
    Ok(sent)
}

/// A raw IPv4 socket (IPPROTO_RAW: IP_HDRINCL, packets sent as built), closed on drop.
struct RawSocket(std::os::fd::OwnedFd);

impl RawSocket {
    fn open() -> std::io::Result<Self> {
        use std::os::fd::FromRawFd;
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::IPPROTO_RAW) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }))
    }

    fn send_to_vip(&self, packet: &[u8]) -> std::io::Result<()> {
        let to = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(VIP.octets()) },
            sin_zero: [0; 8],
        };
        let n = unsafe {
            libc::sendto(
                self.0.as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&raw const to).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if n < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
    }
}

#[test]
fn syn_flood_twice_the_table_neither_stops_new_connections_nor_breaks_established_ones() {
    assert_eq!(unsafe { libc::geteuid() }, 0, "the end-to-end tests create namespaces and attach XDP: run them as root (cargo xtask test)");
    let mut c = DrCluster::build(Path::new(XLB), 2, AttachMode::Auto).expect("build the namespace cluster");
    let table = TABLE.to_string();
    let lines = c.start_balancer_with(&["--max-conns", &table]).expect("start xlb run --max-conns 4096");
    assert!(
        lines.iter().any(|l| l.trim_start().starts_with("CONNS") && l.contains(&table)),
        "xlb run prints each table's size and memory: {lines:?}"
    );
    c.configure_service().expect("configure the service");
    let status = json(&c.xlb(&["--output", "json", "status"]).unwrap());
    let size_of = |name: &str| status["tables"].as_array().unwrap().iter().find(|t| t["name"] == name).map(|t| t["max_entries"].as_u64().unwrap());
    for name in ["CONNS", "NAT_REPLIES", "HALF_OPEN", "HALF_OPEN_REPLIES"] {
        assert_eq!(size_of(name), Some(u64::from(TABLE)), "{name} in {status}");
    }
    assert!(status["tables"].as_array().unwrap().iter().all(|t| t["bytes"].as_u64().unwrap() > 0), "{status}");

    // (a) The long-lived connection: an upload whose body is written throughout the flood.
    let body: Vec<u8> = (0..2_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut long = c.connect_from_client(80).expect("the long-lived connection");
    write!(long, "POST /upload HTTP/1.1\r\nHost: vip\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n", body.len()).unwrap();
    let mut chunks = body.chunks(20_000);
    long.write_all(chunks.next().unwrap()).unwrap();

    // The flood, twice the table, from the client's namespace.
    let done = Arc::new(AtomicBool::new(false));
    let ns_path = c.client.path();
    let flooder = {
        let done = done.clone();
        std::thread::spawn(move || flood(&ns_path, 2 * TABLE, &done))
    };
    // (b) New connections all along, and the upload goes on.
    let started = Instant::now();
    let mut answers = Vec::new();
    while !done.load(Ordering::SeqCst) || answers.len() < 10 {
        assert!(started.elapsed() < Duration::from_secs(120), "the flood did not end");
        answers.push(c.curl("/").expect("a new connection during the flood").trim().to_string());
        if let Some(chunk) = chunks.next() {
            long.write_all(chunk).expect("the long-lived connection keeps sending");
        }
    }
    let sent = flooder.join().expect("flood thread").expect("send the flood");
    assert_eq!(sent, 2 * TABLE);
    for chunk in chunks {
        long.write_all(chunk).expect("the long-lived connection keeps sending");
    }
    let mut answer = String::new();
    long.read_to_string(&mut answer).expect("the upload's answer");
    let want = format!("received {} bytes, fnv1a {:016x}", body.len(), fnv1a(&body));
    assert!(answer.contains(&want), "the long-lived connection arrived whole: {answer}");
    assert!(answers.iter().all(|a| a == "rs1" || a == "rs2"), "{answers:?}");
    // And after the flood.
    for _ in 0..4 {
        c.curl("/").expect("a new connection after the flood");
    }

    let counters = json(&c.xlb(&["--output", "json", "counters"]).unwrap());
    let n = |name: &str| counters[name].as_u64().unwrap_or_else(|| panic!("counter {name} in {counters}"));
    assert!(n("half_open_created") >= u64::from(2 * TABLE), "the flood is counted: {counters}");
    assert!(n("half_open_promoted") >= answers.len() as u64 + 5, "every legitimate connection was promoted: {counters}");
    assert_eq!(n("drop_conn_table_full"), 0, "{counters}");
    assert_eq!(n("drop_conn_race"), 0, "{counters}");
    // The half-open table is full of the flood (LRU), the connection table holds only
    // the legitimate connections.
    let status = json(&c.xlb(&["--output", "json", "status"]).unwrap());
    let conns = status["connections"].as_u64().unwrap();
    assert!(conns <= answers.len() as u64 + 5, "only legitimate connections are established: {status}");
    assert!(status["half_open_connections"].as_u64().unwrap() > u64::from(TABLE) / 2, "{status}");
    eprintln!(
        "flood of {sent} SYNs: {} new connections during it, half_open_created {}, promoted {}, connections {conns}, half-open {}",
        answers.len(),
        n("half_open_created"),
        n("half_open_promoted"),
        status["half_open_connections"]
    );
    c.stop_balancer().expect("stop xlb run");
}

/// Sizes apply to tables made at start: a restart adopting the pinned tables (and their
/// connections) keeps their sizes and says so; a size out of range is refused before
/// anything is attached.
#[test]
fn a_restart_keeps_the_pinned_table_sizes_and_says_so() {
    assert_eq!(unsafe { libc::geteuid() }, 0, "the end-to-end tests create namespaces and attach XDP: run them as root (cargo xtask test)");
    let mut c = DrCluster::build(Path::new(XLB), 1, AttachMode::Auto).expect("build the namespace cluster");
    let refused = c.xlb_command(&["run", "--iface", "eth0", "--max-conns", "0"]).output().unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--max-conns 0 is out of range"), "{refused:?}");
    assert!(!c.director.ip(&["link", "show", "eth0"]).unwrap().contains("xdp"), "nothing attached");

    c.start_daemon(&["--max-conns", "4096", "--max-reals", "1024"]).expect("start xlb daemon");
    c.configure_service().unwrap();
    assert_eq!(c.curl("/").unwrap().trim(), "rs1");
    c.kill_balancer().unwrap();
    let lines = c.start_daemon(&["--max-conns", "8192"]).expect("restart xlb daemon");
    for (map, pinned, asked) in [("CONNS", 4096, 8192), ("HALF_OPEN", 4096, 8192), ("REALS", 1024, 131_072)] {
        let said = format!("{map} keeps its pinned size of {pinned} entries, not the {asked} asked for");
        assert!(lines.iter().any(|l| l.contains(&said)), "{said:?} in {lines:?}");
    }
    let status = json(&c.xlb(&["--output", "json", "status"]).unwrap());
    let conns = status["tables"].as_array().unwrap().iter().find(|t| t["name"] == "CONNS").unwrap().clone();
    assert_eq!(conns["max_entries"], 4096, "{status}");
    // 4096 entries of a 40-byte key and value, plus the kernel's 48-byte element.
    assert_eq!(conns["bytes"], 4096 * (48 + 40 + 40), "{status}");
    assert_eq!(c.curl("/").unwrap().trim(), "rs1", "the adopted tables serve");
    c.xlb(&["stop"]).unwrap();
}
