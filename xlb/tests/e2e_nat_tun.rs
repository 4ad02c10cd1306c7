//! LVS-NAT and LVS-TUN end to end through real namespaces: real HTTP servers, real curl
//! (short requests, multi-megabyte downloads and uploads), xlb attached to veths in
//! native and SKB mode. Needs root; fails (never skips) without it.
use std::path::{Path, PathBuf};

use xlb_core::loader::AttachMode;
use xlb_testkit::{
    httpd,
    testbed::{DrCluster, NAT_REAL_PORT, NatCluster, NatLayout, nat_rip},
};

const XLB: &str = env!("CARGO_BIN_EXE_xlb");

fn require_root() {
    assert_eq!(unsafe { libc::geteuid() }, 0, "the end-to-end tests create namespaces and attach XDP: run them as root (cargo xtask test)");
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("bad JSON ({e}): {text}"))
}

/// A file of `len` pseudo-random bytes, removed on drop.
struct UploadFile {
    path: PathBuf,
    fnv1a: u64,
}

impl UploadFile {
    fn new(len: usize) -> Self {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let path = std::env::temp_dir().join(format!("xlb-upload-{}", xlb_core::netns::run_id()));
        std::fs::write(&path, &bytes).unwrap();
        Self { path, fnv1a: httpd::fnv1a(&bytes) }
    }
}

impl Drop for UploadFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The real server's answer to an upload of `file` names it and what it received.
fn assert_uploaded(answer: &str, file: &UploadFile, len: usize) {
    let want = format!("received {len} bytes, fnv1a {:016x}", file.fnv1a);
    assert!(answer.contains(&want), "upload answered {answer:?}, expected {want:?}");
}

fn counters(text: &str) -> serde_json::Value {
    json(text)
}

fn attached(director: &xlb_core::netns::Netns, nic: &str) -> bool {
    director.ip(&["link", "show", nic]).unwrap().contains("xdp")
}

fn nat(mode: AttachMode, layout: NatLayout) {
    require_root();
    let mut c = NatCluster::build(Path::new(XLB), 2, mode, layout).expect("build the NAT cluster");
    let lines = c.start_balancer().expect("start xlb run");
    let nics: &[&str] = if layout == NatLayout::TwoNics { &["eth0", "eth1"] } else { &["eth0"] };
    for nic in nics {
        let line = format!("attached to {nic} in {} mode", mode.name());
        assert!(lines.iter().any(|l| l.contains(&line)), "xlb run said {lines:?}");
    }
    // ipvsadm -A -t VIP:80 -s rr; ipvsadm -a -t VIP:80 -r RIP:8080 -m
    c.configure_service().expect("configure the service");

    let answers: Vec<String> = (0..4).map(|_| c.curl("/").expect("curl through the VIP").trim().to_string()).collect();
    assert_eq!(answers, ["rs1", "rs2", "rs1", "rs2"], "round robin over new connections");
    // Multi-megabyte both ways: every segment and ACK of both directions is translated.
    let big = c.curl("/bytes/4000000").expect("4 MB download");
    assert!(big.as_bytes() == httpd::body_of(4_000_000), "download corrupted ({} bytes)", big.len());
    let file = UploadFile::new(3_000_000);
    assert_uploaded(&c.upload(&file.path).expect("3 MB upload"), &file, 3_000_000);

    let list = json(&c.xlb(&["--output", "json", "list"]).unwrap());
    let reals = list[0]["reals"].as_array().unwrap();
    assert_eq!(reals.len(), 2, "{list}");
    for r in reals {
        assert_eq!((r["port"].as_u64(), r["forward"].as_str()), (Some(NAT_REAL_PORT as u64), Some("masq")), "{r}");
        assert!(r["out_packets"].as_u64().unwrap() >= 4, "replies counted: {r}");
    }
    let sum = |field: &str| reals.iter().map(|r| r[field].as_u64().unwrap()).sum::<u64>();
    let count = counters(&c.xlb(&["--output", "json", "counters"]).unwrap());
    assert_eq!(count["tx_nat"].as_u64().unwrap(), sum("packets"), "{count}");
    assert_eq!(count["tx_nat_reply"].as_u64().unwrap(), sum("out_packets"), "{count}");
    assert!(sum("out_bytes") > 4_000_000 && sum("bytes") > 3_000_000, "{list}");
    let listing = c.xlb(&["list"]).unwrap();
    assert!(listing.lines().any(|l| l.contains(&format!("{}:{NAT_REAL_PORT}", nat_rip(0))) && l.contains("Masq")), "{listing}");
    // Both directions tracked: server-closed connections end in TIME_WAIT, as IPVS's
    // INPUT/OUTPUT tables have them.
    let conns = json(&c.xlb(&["--output", "json", "conns"]).unwrap());
    let conns = conns.as_array().unwrap();
    assert_eq!(conns.len(), 6, "{conns:?}");
    assert!(conns.iter().all(|e| e["real_port"] == NAT_REAL_PORT && e["state"] == "TIME_WAIT"), "{conns:?}");

    // The director still routes what it does not balance: the client reaching a real
    // server directly, through the director's kernel (ip_forward), both ways.
    let before = count["pass_not_vip"].as_u64().unwrap();
    let direct = c.curl_url(&format!("http://{}:{NAT_REAL_PORT}/", nat_rip(1))).expect("curl a real server directly");
    assert_eq!(direct.trim(), "rs2");
    let after = counters(&c.xlb(&["--output", "json", "counters"]).unwrap())["pass_not_vip"].as_u64().unwrap();
    assert!(after >= before + 2, "passed to the kernel: {before} -> {after}");

    let status = c.stop_balancer().unwrap();
    assert!(status.success(), "xlb run exit status {status}");
    for nic in nics {
        assert!(!attached(&c.director, nic), "xlb run must detach from {nic}");
    }
    assert!(!c.pin_dir().exists(), "xlb run must remove its pins");
}

#[test]
fn nat_two_nics_with_port_mapping_native_mode() {
    nat(AttachMode::Native, NatLayout::TwoNics);
}

#[test]
fn nat_two_nics_with_port_mapping_skb_mode() {
    nat(AttachMode::Skb, NatLayout::TwoNics);
}

#[test]
fn nat_one_arm_native_mode() {
    nat(AttachMode::Native, NatLayout::OneArm);
}

fn tun(mode: AttachMode) {
    require_root();
    let mut c = DrCluster::build_tun(Path::new(XLB), 2, mode).expect("build the TUN cluster");
    c.start_balancer().expect("start xlb run");
    c.configure_service().expect("configure the service");
    let answers: Vec<String> = (0..4).map(|_| c.curl("/").expect("curl through the VIP").trim().to_string()).collect();
    assert_eq!(answers, ["rs1", "rs2", "rs1", "rs2"], "round robin over new connections");
    let big = c.curl("/bytes/4000000").expect("4 MB download");
    assert!(big.as_bytes() == httpd::body_of(4_000_000), "download corrupted ({} bytes)", big.len());
    // Full-size segments do not fit the tunnel: the director answers the first with
    // ICMP fragmentation-needed, the client lowers its path MTU and the upload goes on.
    let file = UploadFile::new(3_000_000);
    assert_uploaded(&c.upload(&file.path).expect("3 MB upload through the tunnel"), &file, 3_000_000);

    let count = counters(&c.xlb(&["--output", "json", "counters"]).unwrap());
    assert!(count["tx_icmp_too_big"].as_u64().unwrap() >= 1, "{count}");
    assert_eq!(count["drop_too_big"], 0, "{count}");
    let list = json(&c.xlb(&["--output", "json", "list"]).unwrap());
    let reals = list[0]["reals"].as_array().unwrap();
    assert!(reals.iter().all(|r| r["forward"] == "tunnel"), "{list}");
    let sent: u64 = reals.iter().map(|r| r["packets"].as_u64().unwrap()).sum();
    assert_eq!(count["tx_tun"].as_u64().unwrap(), sent, "{count}");
    // Every tunnelled packet was unwrapped by a real server's decapsulator.
    let mut decapsulated = 0;
    for rs in &c.reals {
        let out = rs.ns.command(XLB).args(["realserver", "status", "--vip", "10.99.0.100", "--mode", "tun", "--output", "json"]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let status = json(&String::from_utf8_lossy(&out.stdout));
        decapsulated += status["decap_counters"]["decapsulated"].as_u64().unwrap();
    }
    assert_eq!(decapsulated, sent, "the directors' IPIP packets, all decapsulated by the real servers");
}

#[test]
fn tun_with_the_xdp_decapsulator_native_mode() {
    tun(AttachMode::Native);
}

#[test]
fn tun_with_the_xdp_decapsulator_skb_mode() {
    tun(AttachMode::Skb);
}

/// (active, inactive) per real as `xlb list` shows them, and as the connection table
/// has them (ESTABLISHED entries, other entries), keyed by the real's address.
fn counts_and_table(c: &NatCluster) -> (Vec<(String, u64, u64)>, Vec<(String, u64, u64)>) {
    let list = json(&c.xlb(&["--output", "json", "list"]).unwrap());
    let conns = json(&c.xlb(&["--output", "json", "conns"]).unwrap());
    let mut listed = Vec::new();
    let mut table = Vec::new();
    for r in list[0]["reals"].as_array().unwrap() {
        let addr = r["address"].as_str().unwrap().to_string();
        listed.push((addr.clone(), r["active_conns"].as_u64().unwrap(), r["inactive_conns"].as_u64().unwrap()));
        let mine: Vec<_> = conns.as_array().unwrap().iter().filter(|e| e["real"] == addr.as_str()).collect();
        let established = mine.iter().filter(|e| e["state"] == "ESTABLISHED").count() as u64;
        table.push((addr, established, mine.len() as u64 - established));
    }
    (listed, table)
}

#[test]
fn nat_connection_counts_stay_exact_over_many_short_connections() {
    // README walk-through M1: curl closes as soon as it has the response, so the
    // client's FIN and the real's FIN cross the director at once, often on two CPUs;
    // both moved the counts, and ActiveConn went below zero. No CPU pinning here: the
    // connections land wherever the kernel puts them.
    require_root();
    let mut c = NatCluster::build(Path::new(XLB), 2, AttachMode::Auto, NatLayout::TwoNics).expect("build the NAT cluster");
    c.start_balancer().expect("start xlb run");
    c.configure_service().expect("configure the service");
    const N: usize = 300;
    for i in 0..N {
        c.curl("/").unwrap_or_else(|e| panic!("curl {i}: {e:#}"));
    }
    // The last connection's closing packets are in flight for a moment.
    let mut seen = None;
    for _ in 0..20 {
        std::thread::sleep(std::time::Duration::from_millis(250));
        let (listed, table) = counts_and_table(&c);
        if listed == table {
            seen = Some(listed);
            break;
        }
        seen = None;
        eprintln!("listed {listed:?}, table {table:?}");
    }
    let listed = seen.expect("ActiveConn/InActConn equal the connection table's ESTABLISHED and other entries");
    let list = json(&c.xlb(&["--output", "json", "list"]).unwrap());
    let made: u64 = list[0]["reals"].as_array().unwrap().iter().map(|r| r["conns"].as_u64().unwrap()).sum();
    assert_eq!(made, N as u64, "{list}");
    // Every connection closed: none active, and each counted once as inactive while it
    // is in the table (TIME_WAIT and friends outlast the test; one ended by a reset is
    // CLOSE, 10 s, and may have expired on a slow run).
    for (addr, active, inactive) in &listed {
        assert!(*active == 0 && *inactive <= (N / 2) as u64, "{addr}: {listed:?}");
    }
}
