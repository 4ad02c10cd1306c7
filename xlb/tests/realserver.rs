//! `xlb realserver` through the real binary, run by nsenter inside fresh network
//! namespaces (each test its own: sysctls and setup state are per namespace). Needs root;
//! fails (never skips) without it.
use std::process::Output;

use xlb_core::netns::{self, Netns};

const XLB: &str = env!("CARGO_BIN_EXE_xlb");

/// A fresh namespace standing for a real server. On drop, tears xlb's setup down before
/// the namespace goes: its state file is in the host's /run/xlb.
struct RealServerNs(Netns);

impl RealServerNs {
    fn new() -> Self {
        assert_eq!(unsafe { libc::geteuid() }, 0, "the realserver tests create network namespaces: run them as root (cargo xtask test)");
        Self(Netns::create(&format!("xlb-{}-rs", netns::run_id())).expect("create a namespace"))
    }

    fn xlb(&self, args: &[&str]) -> Output {
        self.0.command(XLB).args(args).output().expect("run xlb")
    }

    /// Runs xlb, asserting success; returns stdout.
    fn xlb_ok(&self, args: &[&str]) -> String {
        let out = self.xlb(args);
        assert!(out.status.success(), "xlb {args:?} failed ({}): {}", out.status, stderr(&out));
        String::from_utf8(out.stdout).unwrap()
    }

    /// all.arp_ignore, all.arp_announce, lo.arp_ignore, lo.arp_announce, read inside the namespace.
    fn arp_sysctls(&self) -> [String; 4] {
        ["all/arp_ignore", "all/arp_announce", "lo/arp_ignore", "lo/arp_announce"].map(|s| {
            self.0.exec("cat", &[&format!("/proc/sys/net/ipv4/conf/{s}")]).unwrap().trim().to_string()
        })
    }

    fn lo(&self) -> String {
        self.0.ip(&["addr", "show", "lo"]).unwrap()
    }
}

impl Drop for RealServerNs {
    fn drop(&mut self) {
        let _ = self.xlb(&["realserver", "teardown"]);
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(out: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad JSON ({e}): {text}"))
}

const SET_UP: [&str; 4] = ["1", "2", "1", "2"];

#[test]
fn setup_is_idempotent_and_teardown_restores_what_it_changed() {
    let rs = RealServerNs::new();
    // Non-default values before setup, a VIP already on lo, and lo down: teardown must
    // bring back exactly these values and keep the address it did not add.
    for (key, value) in [("all.arp_ignore", "2"), ("all.arp_announce", "1"), ("lo.arp_ignore", "3"), ("lo.arp_announce", "1")] {
        rs.0.sysctl(&format!("net.ipv4.conf.{key}"), value).unwrap();
    }
    let before = ["2", "1", "3", "1"];
    rs.0.ip(&["addr", "add", "10.77.0.2/32", "dev", "lo"]).unwrap();
    rs.0.ip(&["link", "set", "lo", "down"]).unwrap();

    let said = rs.xlb_ok(&["realserver", "setup", "--vip", "10.77.0.1", "--vip", "10.77.0.2"]);
    assert_eq!(said, "real server set up for DR: 10.77.0.1, 10.77.0.2 on lo, ARP for them suppressed\n");
    assert_eq!(rs.arp_sysctls(), SET_UP);
    let lo = rs.lo();
    assert!(lo.contains("<LOOPBACK,UP,LOWER_UP>"), "setup brings lo up: {lo}");
    assert!(lo.contains("inet 10.77.0.1/32 scope global lo") && lo.contains("inet 10.77.0.2/32"), "{lo}");

    // Again, with the VIPs comma-separated: the same state, no error.
    rs.xlb_ok(&["realserver", "setup", "--vip", "10.77.0.1,10.77.0.2"]);
    assert_eq!(rs.arp_sysctls(), SET_UP);
    assert_eq!(rs.lo(), lo);

    let text = rs.xlb_ok(&["realserver", "status", "--vip", "10.77.0.1,10.77.0.2"]);
    assert_eq!(text.lines().count(), 11, "{text}");
    assert!(text.lines().all(|l| l.starts_with("ok    ")), "{text}");
    assert!(text.contains("ok    10.77.0.1 routes locally\n"), "{text}");
    let out = rs.xlb(&["realserver", "status", "--vip", "10.77.0.1", "--output", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let status = json(&out);
    assert_eq!(status["complete"], true, "{status}");
    assert_eq!(status["mode"], "dr");
    let check = |name: &str| status["checks"].as_array().unwrap().iter().find(|c| c["check"] == name).cloned();
    assert_eq!(check("net.ipv4.conf.all.arp_ignore = 1").unwrap()["found"], "1", "{status}");
    assert_eq!(check("10.77.0.1/32 on lo").unwrap()["ok"], true, "{status}");

    // Another namespace knows nothing of this setup.
    let other = RealServerNs::new();
    assert!(!other.xlb(&["realserver", "status", "--vip", "10.77.0.1"]).status.success());
    assert_eq!(
        other.xlb_ok(&["realserver", "teardown"]),
        "nothing to tear down: no `xlb realserver setup` recorded for this network namespace\n"
    );
    drop(other);
    assert!(rs.xlb(&["realserver", "status", "--vip", "10.77.0.1"]).status.success());

    // One VIP goes; ARP stays suppressed for the other.
    assert_eq!(rs.xlb_ok(&["realserver", "teardown", "--vip", "10.77.0.1"]), "ARP suppression kept: 10.77.0.2 still set up\n");
    assert_eq!(rs.arp_sysctls(), SET_UP);
    assert!(!rs.lo().contains("10.77.0.1/32"), "{}", rs.lo());

    assert_eq!(rs.xlb_ok(&["realserver", "teardown"]), "real server torn down: addresses removed, ARP sysctls restored\n");
    assert_eq!(rs.arp_sysctls(), before);
    assert!(rs.lo().contains("inet 10.77.0.2/32"), "an address setup did not add stays: {}", rs.lo());

    let out = rs.xlb(&["realserver", "status", "--vip", "10.77.0.1"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("FAIL  10.77.0.1/32 on lo: found missing\n"), "{text}");
    assert!(text.contains("FAIL  net.ipv4.conf.all.arp_ignore = 1: found 2\n"), "{text}");
    assert_eq!(stderr(&out), "xlb: this real server is not set up for DR: 6 of 8 checks failed\n");
    assert_eq!(json(&rs.xlb(&["realserver", "status", "--vip", "10.77.0.1", "--output", "json"]))["complete"], false);

    assert!(rs.xlb_ok(&["realserver", "teardown"]).starts_with("nothing to tear down"), "teardown twice is no error");
}

#[test]
fn tun_mode_attaches_the_decapsulator_and_teardown_detaches_it() {
    let rs = RealServerNs::new();
    rs.0.ip(&["link", "add", "nic0", "type", "veth", "peer", "name", "nic1"]).unwrap();
    rs.0.ip(&["link", "set", "nic0", "up"]).unwrap();
    let xdp_on_nic0 = || rs.0.ip(&["-d", "link", "show", "nic0"]).unwrap();
    let defaults = rs.arp_sysctls();

    let out = rs.xlb(&["realserver", "setup", "--vip", "10.77.1.1", "--mode", "tun"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "xlb: TUN mode needs --iface: the NIC(s) the director's IPIP packets arrive on\n");
    assert_eq!(rs.arp_sysctls(), defaults, "a refused setup changes nothing");

    let said = rs.xlb_ok(&["realserver", "setup", "--vip", "10.77.1.1", "--mode", "tun", "--iface", "nic0"]);
    assert_eq!(said, "real server set up for TUN: 10.77.1.1 on lo, ARP for them suppressed, IPIP decapsulated on nic0\n");
    assert_eq!(rs.arp_sysctls(), SET_UP);
    assert!(rs.lo().contains("inet 10.77.1.1/32"), "{}", rs.lo());
    assert!(xdp_on_nic0().contains("name xlb_decap"), "{}", xdp_on_nic0());

    // A second VIP: the same program, attached once, now serves both.
    rs.xlb_ok(&["realserver", "setup", "--vip", "10.77.1.2", "--mode", "tun"]);
    let out = rs.xlb(&["realserver", "status", "--vip", "10.77.1.1,10.77.1.2", "--mode", "tun", "--output", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let status = json(&out);
    let check = |name: &str| status["checks"].as_array().unwrap().iter().find(|c| c["check"] == name).cloned().unwrap();
    assert_eq!(check("IPIP decapsulator on nic0")["found"], "xlb_decap", "{status}");
    assert_eq!(check("10.77.1.2 decapsulated")["ok"], true, "{status}");
    assert_eq!(status["decap_counters"]["decapsulated"], 0, "{status}");

    // One VIP torn down: the decapsulator stays, for the other only.
    rs.xlb_ok(&["realserver", "teardown", "--vip", "10.77.1.1"]);
    let out = rs.xlb(&["realserver", "status", "--vip", "10.77.1.1", "--mode", "tun"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("FAIL  10.77.1.1 decapsulated: found no\n"), "{text}");
    assert!(text.contains("ok    IPIP decapsulator on nic0\n"), "{text}");
    rs.xlb_ok(&["realserver", "status", "--vip", "10.77.1.2", "--mode", "tun"]);

    // The last one: detached, ARP restored.
    rs.xlb_ok(&["realserver", "teardown"]);
    assert!(!xdp_on_nic0().contains("xdp"), "{}", xdp_on_nic0());
    assert_eq!(rs.arp_sysctls(), defaults);
    let out = rs.xlb(&["realserver", "status", "--vip", "10.77.1.2", "--mode", "tun"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAIL  IPIP decapsulator attached: found not attached\n"));
}

#[test]
fn ipv6_vips_go_on_lo_as_hosts() {
    let rs = RealServerNs::new();
    let said = rs.xlb_ok(&["realserver", "setup", "--vip", "10.77.4.1,fd00:77::1"]);
    assert_eq!(said, "real server set up for DR: 10.77.4.1, fd00:77::1 on lo, ARP for them suppressed\n");
    assert!(rs.lo().contains("inet6 fd00:77::1/128"), "{}", rs.lo());
    let text = rs.xlb_ok(&["realserver", "status", "--vip", "fd00:77::1"]);
    assert!(text.contains("ok    fd00:77::1/128 on lo\n") && text.contains("ok    fd00:77::1 routes locally\n"), "{text}");
    rs.xlb_ok(&["realserver", "teardown", "--vip", "fd00:77::1"]);
    assert!(!rs.lo().contains("fd00:77::1"), "{}", rs.lo());
    let out = rs.xlb(&["realserver", "setup", "--vip", "fe80::1"]);
    assert_eq!(stderr(&out), "xlb: fe80::1 cannot be a VIP: it is a link-local address (fe80::/10)\n");
}

#[test]
fn bad_input_gives_exact_errors_and_changes_nothing() {
    let rs = RealServerNs::new();
    let defaults = rs.arp_sysctls();
    let fails = |args: &[&str], code: i32| {
        let out = rs.xlb(args);
        assert_eq!(out.status.code(), Some(code), "xlb {args:?}: {}", stderr(&out));
        stderr(&out)
    };
    let err = fails(&["realserver", "setup", "--vip", "10.0.0.300"], 2);
    assert!(err.starts_with("error: invalid value '10.0.0.300' for '--vip <VIP>': invalid IP address syntax\n"), "{err}");
    let err = fails(&["realserver", "setup", "--vip", "10.0.0.1", "--mode", "nat"], 2);
    assert!(err.starts_with("error: invalid value 'nat' for '--mode <MODE>'\n  [possible values: dr, tun]\n"), "{err}");
    let err = fails(&["realserver", "status"], 2);
    assert!(err.starts_with("error: the following required arguments were not provided:\n  --vip <VIP>\n"), "{err}");
    let err = fails(&["realserver", "setup", "--vip", "10.0.0.1", "--iface", "eth0"], 1);
    assert_eq!(err, "xlb: --iface names the NICs of TUN mode's decapsulator: DR needs none\n");
    let err = fails(&["realserver", "setup", "--vip", "10.0.0.1", "--mode", "tun", "--iface", "nosuch0"], 1);
    assert_eq!(err, "xlb: --iface nosuch0: no interface named nosuch0\n");
    let err = fails(&["realserver", "setup", "--vip", "127.0.0.5"], 1);
    assert_eq!(err, "xlb: 127.0.0.5 cannot be a VIP: it is a loopback address (127.0.0.0/8)\n");

    // A VIP on a NIC (where ARP answers it) or on lo with a subnet prefix is refused.
    rs.0.ip(&["link", "add", "nic0", "type", "veth", "peer", "name", "nic1"]).unwrap();
    rs.0.ip(&["addr", "add", "10.77.2.5/24", "dev", "nic0"]).unwrap();
    rs.0.ip(&["addr", "add", "10.77.3.5/24", "dev", "lo"]).unwrap();
    let err = fails(&["realserver", "setup", "--vip", "10.77.2.5"], 1);
    assert_eq!(
        err,
        "xlb: 10.77.2.5 is already configured as 10.77.2.5/24 on nic0: a real server must hold it only as \
         10.77.2.5/32 on lo (elsewhere it answers ARP for it or makes a whole subnet local); remove it with \
         `ip addr del ADDRESS/PREFIX dev IFACE` and run setup again\n"
    );
    let err = fails(&["realserver", "setup", "--vip", "10.77.3.5"], 1);
    assert!(err.starts_with("xlb: 10.77.3.5 is already configured as 10.77.3.5/24 on lo: "), "{err}");
    let out = rs.xlb(&["realserver", "status", "--vip", "10.77.2.5"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAIL  10.77.2.5 held nowhere else: found 10.77.2.5/24 on nic0\n"));

    assert_eq!(rs.arp_sysctls(), defaults, "a refused setup changes nothing");
    assert!(rs.xlb_ok(&["realserver", "teardown"]).starts_with("nothing to tear down"));
}
