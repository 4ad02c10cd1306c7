//! The attach mode that cannot blackhole: on a veth, native XDP_TX and redirects are
//! delivered only when the peer runs a native XDP program, so `--mode auto` (the
//! default) must take SKB mode there. Real namespaces and veths; needs root and fails
//! (never skips) without it.
use std::{path::Path, process::Command, time::Duration};

use xlb_core::{
    loader::{self, AttachMode},
    netns::{self, Netns},
};
use xlb_testkit::testbed::{DrCluster, spawn_until_ready};

const XLB: &str = env!("CARGO_BIN_EXE_xlb");

fn require_root() {
    assert_eq!(unsafe { libc::geteuid() }, 0, "these tests create namespaces and attach XDP: run them as root (cargo xtask test)");
}

/// `loader::native_blackholes(iface)` asked from inside `ns`.
fn blackholes(ns: &Netns, iface: &str) -> Option<String> {
    let _inside = ns.enter().unwrap();
    loader::native_blackholes(iface).unwrap()
}

fn pass_stub(ns: &Netns, iface: &str) -> xlb_testkit::testbed::ChildGuard {
    let mut cmd = ns.command(xlb_testkit::binary(xlb_testkit::TESTKIT).unwrap());
    cmd.args(["xdp-pass-stub", "--iface", iface]);
    spawn_until_ready("XDP pass stub", cmd, Duration::from_secs(20)).unwrap().0
}

#[test]
fn native_mode_blackholes_on_a_veth_until_its_peer_runs_native_xdp() {
    require_root();
    let id = netns::run_id();
    let a = Netns::create(&format!("xlb-{id}-a")).unwrap();
    let b = Netns::create(&format!("xlb-{id}-b")).unwrap();
    // Peer in another namespace (the seeds' lab: the bridge's port), and in the same one.
    netns::veth(&a, "a0", &b, "b0").unwrap();
    a.ip(&["link", "add", "a1", "type", "veth", "peer", "name", "a2"]).unwrap();
    for (ns, nic) in [(&a, "a0"), (&b, "b0"), (&a, "a1"), (&a, "a2")] {
        ns.ip(&["link", "set", nic, "up"]).unwrap();
    }
    let why = blackholes(&a, "a0").expect("a veth whose peer runs nothing: native mode drops what it sends");
    assert!(why.contains("a0 is a veth whose peer runs no native XDP program"), "{why}");
    assert!(blackholes(&a, "a1").is_some());
    assert_eq!(blackholes(&a, "lo"), None, "not a veth: nothing says native mode fails");

    let stub_b0 = pass_stub(&b, "b0");
    let stub_a2 = pass_stub(&a, "a2");
    assert_eq!(blackholes(&a, "a0"), None, "the peer in another namespace runs native XDP");
    assert_eq!(blackholes(&a, "a1"), None, "the peer in this namespace runs native XDP");
    drop((stub_b0, stub_a2));
    std::thread::sleep(Duration::from_millis(300));
    assert!(blackholes(&a, "a0").is_some(), "the stub is gone: native mode would drop again");
}

#[test]
fn auto_mode_forwards_in_the_seeds_hand_built_lab() {
    require_root();
    // The seeds' lab: veths into a bridge, nothing on the bridge's ports.
    let mut c = DrCluster::build(Path::new(XLB), 2, AttachMode::Auto).expect("build the namespace cluster");
    c.without_peer_xdp();
    let lines = c.start_balancer().expect("xlb run --iface eth0");
    assert!(lines.iter().any(|l| l.contains("attached to eth0 in skb mode")), "auto must pick SKB mode here: {lines:?}");
    assert_eq!(loader_mode(&c), "xdpgeneric", "the kernel's view");
    c.configure_service().unwrap();
    let answers: Vec<String> = (0..4).map(|i| c.curl("/").unwrap_or_else(|e| panic!("request {i} got no answer: {e:#}"))).collect();
    let mut names: Vec<&str> = answers.iter().map(|a| a.trim()).collect();
    names.sort();
    assert_eq!(names, ["rs1", "rs1", "rs2", "rs2"]);
    let counters = c.xlb(&["counters"]).unwrap();
    assert!(counters.lines().any(|l| l.starts_with("tx_dr") && !l.trim_end().ends_with(" 0")), "{counters}");
}

/// `xdp` (native) or `xdpgeneric` (SKB), as `ip link show` names the attachment.
fn loader_mode(c: &DrCluster) -> &'static str {
    let out = Command::new("ip").args(["-n", &c.director.name, "link", "show", "eth0"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("xdpgeneric") { "xdpgeneric" } else if text.contains("xdp") { "xdp" } else { "none" }
}
