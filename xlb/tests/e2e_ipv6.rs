//! IPv6 end to end through real namespaces: real curl over IPv6 to an IPv6 VIP, by DR
//! (real servers with the VIP on lo) and by NAT (the director as their IPv6 gateway,
//! port mapping), with multi-megabyte transfers. Needs root; fails (never skips)
//! without it.
use std::path::Path;

use xlb_core::loader::AttachMode;
use xlb_testkit::{
    httpd,
    testbed::{DrCluster, NAT_REAL_PORT, NAT_VIP6, NatCluster, NatLayout, VIP6},
};

const XLB: &str = env!("CARGO_BIN_EXE_xlb");

fn require_root() {
    assert_eq!(unsafe { libc::geteuid() }, 0, "the end-to-end tests create namespaces and attach XDP: run them as root (cargo xtask test)");
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("bad JSON ({e}): {text}"))
}

/// A file of `len` pseudo-random bytes to upload (the caller removes it).
fn upload_file(len: u32) -> (std::path::PathBuf, Vec<u8>) {
    let path = std::env::temp_dir().join(format!("xlb-upload6-{}", xlb_core::netns::run_id()));
    let bytes: Vec<u8> = (0..len).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(&path, &bytes).unwrap();
    (path, bytes)
}

fn ipv6_dr(mode: AttachMode) {
    require_root();
    let mut c = DrCluster::build(Path::new(XLB), 2, mode).expect("build the cluster");
    c.start_balancer().expect("start xlb run");
    c.configure_service6().expect("configure the IPv6 service");
    let answers: Vec<String> = (0..4).map(|_| c.curl6("/").expect("curl through the IPv6 VIP").trim().to_string()).collect();
    assert_eq!(answers, ["rs1", "rs2", "rs1", "rs2"], "round robin over new connections");
    let big = c.curl6("/bytes/3000000").expect("3 MB over IPv6");
    assert!(big.as_bytes() == httpd::body_of(3_000_000), "download corrupted ({} bytes)", big.len());
    let listing = c.xlb(&["list"]).unwrap();
    assert!(listing.contains(&format!("TCP  [{VIP6}]:80 rr")), "{listing}");
    assert!(listing.contains("[fd00:99::11]:80") && listing.contains("Route"), "{listing}");
    let list = json(&c.xlb(&["--output", "json", "list"]).unwrap());
    let packets: u64 = list[0]["reals"].as_array().unwrap().iter().map(|r| r["packets"].as_u64().unwrap()).sum();
    let counters = json(&c.xlb(&["--output", "json", "counters"]).unwrap());
    assert_eq!(counters["tx_dr"].as_u64().unwrap(), packets, "{counters}");
    let conns = json(&c.xlb(&["--output", "json", "conns"]).unwrap());
    assert!(conns.as_array().unwrap().iter().all(|e| e["virtual_address"] == format!("[{VIP6}]:80")), "{conns}");
}

#[test]
fn ipv6_dr_native_mode() {
    ipv6_dr(AttachMode::Native);
}

fn ipv6_nat(mode: AttachMode) {
    require_root();
    let mut c = NatCluster::build(Path::new(XLB), 2, mode, NatLayout::TwoNics).expect("build the NAT cluster");
    c.start_balancer().expect("start xlb run");
    c.configure_service6().expect("configure the IPv6 service");
    let answers: Vec<String> = (0..4).map(|_| c.curl6("/").expect("curl through the IPv6 VIP").trim().to_string()).collect();
    assert_eq!(answers, ["rs1", "rs2", "rs1", "rs2"], "round robin over new connections");
    let big = c.curl6("/bytes/4000000").expect("4 MB over IPv6 NAT");
    assert!(big.as_bytes() == httpd::body_of(4_000_000), "download corrupted ({} bytes)", big.len());
    let (path, bytes) = upload_file(3_000_000);
    let answer = c.upload6(&path);
    let _ = std::fs::remove_file(&path);
    let want = format!("received 3000000 bytes, fnv1a {:016x}", httpd::fnv1a(&bytes));
    assert!(answer.expect("3 MB upload over IPv6 NAT").contains(&want), "{want}");
    let list = json(&c.xlb(&["--output", "json", "list"]).unwrap());
    let reals = list[0]["reals"].as_array().unwrap();
    assert!(reals.iter().all(|r| r["port"] == NAT_REAL_PORT && r["forward"] == "masq"), "{list}");
    let sum = |field: &str| reals.iter().map(|r| r[field].as_u64().unwrap()).sum::<u64>();
    let counters = json(&c.xlb(&["--output", "json", "counters"]).unwrap());
    assert_eq!(counters["tx_nat"].as_u64().unwrap(), sum("packets"), "{counters}");
    assert_eq!(counters["tx_nat_reply"].as_u64().unwrap(), sum("out_packets"), "{counters}");
    let conns = json(&c.xlb(&["--output", "json", "conns"]).unwrap());
    assert!(conns.as_array().unwrap().iter().all(|e| e["virtual_address"] == format!("[{NAT_VIP6}]:80") && e["state"] == "TIME_WAIT"), "{conns}");
}

#[test]
fn ipv6_nat_two_nics_native_mode() {
    ipv6_nat(AttachMode::Native);
}

#[test]
fn ipv6_nat_two_nics_skb_mode() {
    ipv6_nat(AttachMode::Skb);
}

#[test]
fn ipv6_tun_with_the_xdp_decapsulator_native_mode() {
    require_root();
    let mut c = DrCluster::build_tun(Path::new(XLB), 2, AttachMode::Native).expect("build the TUN cluster");
    c.start_balancer().expect("start xlb run");
    c.configure_service6().expect("configure the IPv6 service");
    let answers: Vec<String> = (0..4).map(|_| c.curl6("/").expect("curl through the IPv6 VIP").trim().to_string()).collect();
    assert_eq!(answers, ["rs1", "rs2", "rs1", "rs2"], "round robin over new connections");
    let big = c.curl6("/bytes/3000000").expect("3 MB over IPv6 TUN");
    assert!(big.as_bytes() == httpd::body_of(3_000_000), "download corrupted ({} bytes)", big.len());
    // Full-size segments do not fit the tunnel: ICMPv6 packet-too-big, and the upload goes on.
    let (path, bytes) = upload_file(2_000_000);
    let answer = c.upload6(&path);
    let _ = std::fs::remove_file(&path);
    let want = format!("received 2000000 bytes, fnv1a {:016x}", httpd::fnv1a(&bytes));
    assert!(answer.expect("2 MB upload over IPv6 TUN").contains(&want), "{want}");
    let counters = json(&c.xlb(&["--output", "json", "counters"]).unwrap());
    assert!(counters["tx_icmp_too_big"].as_u64().unwrap() >= 1, "{counters}");
    let list = json(&c.xlb(&["--output", "json", "list"]).unwrap());
    let sent: u64 = list[0]["reals"].as_array().unwrap().iter().map(|r| r["packets"].as_u64().unwrap()).sum();
    assert_eq!(counters["tx_tun"].as_u64().unwrap(), sent, "{counters}");
    let mut decapsulated = 0;
    for rs in &c.reals {
        let out = rs.ns.command(XLB).args(["realserver", "status", "--vip", &VIP6.to_string(), "--mode", "tun", "--output", "json"]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        decapsulated += json(&String::from_utf8_lossy(&out.stdout))["decap_counters"]["decapsulated"].as_u64().unwrap();
    }
    assert_eq!(decapsulated, sent, "every IPv6-in-IPv6 packet decapsulated by a real server");
}
