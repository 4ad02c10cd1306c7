//! The daemon as one state owner on one tokio runtime, through real namespaces: a real
//! whose next hop never answers ARP holds up no other request; a change of a real's
//! neighbour entry reaches the maps through the netlink subscription, not a poll; an
//! API client that predates protocol versions gets a clear version mismatch.
use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use xlb_core::{
    api::{PROTOCOL_VERSION, Paths, Request, Response},
    loader::AttachMode,
};
use xlb_testkit::testbed::{DrCluster, VIP};

const XLB: &str = env!("CARGO_BIN_EXE_xlb");

fn cluster(reals: usize) -> DrCluster {
    assert_eq!(unsafe { libc::geteuid() }, 0, "these tests create namespaces and attach XDP: run them as root (cargo xtask test)");
    DrCluster::build(Path::new(XLB), reals, AttachMode::Skb).expect("build the namespace cluster")
}

/// The MAC the maps hold for real `ip` of any service (`xlb list` in JSON).
fn mac_in_maps(c: &DrCluster, ip: &str) -> Option<String> {
    let out = c.xlb(&["--output", "json", "list"]).expect("xlb list");
    let services: serde_json::Value = serde_json::from_str(&out).expect("JSON listing");
    services.as_array()?.iter().flat_map(|s| s["reals"].as_array().cloned().unwrap_or_default()).find_map(|r| {
        (r["address"] == ip).then(|| r["mac"].as_str().map(String::from)).flatten()
    })
}

#[test]
fn a_real_whose_next_hop_never_answers_holds_up_no_other_request() {
    let mut c = cluster(1);
    c.start_daemon(&[]).expect("start the daemon");
    let svc = format!("{VIP}:80");
    c.xlb(&["service", "add", "tcp", &svc, "-s", "rr"]).unwrap();
    // On the director's link, and nobody has it: ARP is asked and never answered.
    let silent = "10.99.0.250";
    let started = Instant::now();
    let mut real_add = c.xlb_command(&["real", "add", "tcp", &svc, silent]);
    let mut real_add = real_add.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn xlb real add");
    // Once the daemon has the real (listed), its caller is waiting for the MAC: the
    // next request must be answered while that caller still waits.
    while !c.xlb(&["list"]).unwrap().contains(&format!("{silent}:80")) {
        assert!(real_add.try_wait().unwrap().is_none(), "xlb real add ended before its real was listed");
        std::thread::sleep(Duration::from_millis(10));
    }
    let t0 = Instant::now();
    c.xlb(&["service", "add", "tcp", &format!("{VIP}:81"), "-s", "rr"]).expect("a service added meanwhile");
    let service_add = t0.elapsed();
    let real_add_still_waiting = real_add.try_wait().unwrap().is_none();
    let out = real_add.wait_with_output().unwrap();
    let real_add_took = started.elapsed();
    println!("xlb service add took {service_add:?} while xlb real add of an unanswering real took {real_add_took:?}");
    assert!(out.status.success(), "xlb real add: {}", String::from_utf8_lossy(&out.stderr));
    assert!(
        real_add_still_waiting,
        "xlb service add was answered only after xlb real add of a real without a MAC ({service_add:?}, {real_add_took:?})"
    );
    let list = c.xlb(&["list"]).unwrap();
    assert!(list.contains(&format!("{VIP}:81")) && list.contains(&format!("{silent}:80")), "{list}");
    assert_eq!(mac_in_maps(&c, silent), None, "nobody answered for {silent}");
}

#[test]
fn a_neighbour_change_reaches_the_maps_by_subscription() {
    let mut c = cluster(1);
    c.start_daemon(&[]).expect("start the daemon");
    let svc = format!("{VIP}:80");
    let rip = c.reals[0].ip.to_string();
    c.xlb(&["service", "add", "tcp", &svc, "-s", "rr"]).unwrap();
    c.xlb(&["real", "add", "tcp", &svc, &rip]).unwrap();
    let before = mac_in_maps(&c, &rip).expect("the real's MAC is known once xlb real add returns");
    // The real's MAC changes (a NIC swapped, a VM moved): the director's neighbour entry
    // says so, and the kernel announces it.
    let new_mac = if before == "02:00:00:00:77:01" { "02:00:00:00:77:02" } else { "02:00:00:00:77:01" };
    let t0 = Instant::now();
    c.director.ip(&["neigh", "replace", &rip, "lladdr", new_mac, "dev", "eth0", "nud", "permanent"]).unwrap();
    // Well inside the periodic resync (30 s): only the subscription can bring it.
    let deadline = t0 + Duration::from_secs(10);
    loop {
        if mac_in_maps(&c, &rip).as_deref() == Some(new_mac) {
            break;
        }
        assert!(Instant::now() < deadline, "the new MAC {new_mac} of {rip} did not reach the maps (they hold {:?})", mac_in_maps(&c, &rip));
        std::thread::sleep(Duration::from_millis(5));
    }
    println!("the neighbour change of {rip} reached the maps after {:?} (it was {before})", t0.elapsed());
}

#[test]
fn a_cli_from_before_protocol_versions_gets_a_version_mismatch() {
    let mut c = cluster(0);
    c.start_daemon(&[]).expect("start the daemon");
    c.xlb(&["service", "add", "tcp", &format!("{VIP}:80"), "-s", "rr"]).unwrap();
    let socket = Paths::for_pin_dir(&c.pin_dir).socket;
    // What an older xlb sent: a bare request, no version. A change, which must not be done.
    let old = serde_json::to_string(&Request::Clear).unwrap();
    let mut s = UnixStream::connect(&socket).expect("the daemon's API socket");
    s.write_all(format!("{old}\n").as_bytes()).unwrap();
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).unwrap();
    // ... and what it reads back: a bare response it understands.
    let Response::Err { message, .. } = serde_json::from_str::<Response>(&line).expect("a response an old CLI reads") else {
        panic!("the old request was accepted: {line}")
    };
    assert!(message.starts_with("version mismatch:"), "{message}");
    assert!(message.contains("protocol 1") && message.contains(&format!("speaks protocol {PROTOCOL_VERSION}")), "{message}");
    assert!(message.contains("nothing was changed"), "{message}");
    assert!(c.xlb(&["list"]).unwrap().contains(&format!("{VIP}:80")), "the old CLI's -C was not done");
}
