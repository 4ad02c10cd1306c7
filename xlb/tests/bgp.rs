//! VIP announcement by BGP through BIRD 2, end to end: a router namespace and the
//! director of a DR cluster joined by a veth, each running a real BIRD with the shipped
//! configurations (packaging/bird/), the director's BIRD fed by `xlb daemon
//! --bird-vips`. The VIP's /32 must be in the router's kernel table exactly while the
//! service has quorum, stay across a SIGTERM and restart of the daemon, and go on
//! `xlb stop`.
use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use xlb_core::{
    loader::AttachMode,
    netns::{self, Netns},
};
use xlb_testkit::testbed::{ChildGuard, DrCluster, VIP};

const XLB: &str = env!("CARGO_BIN_EXE_xlb");
const ROUTER_IP: &str = "192.0.2.1";
const DIRECTOR_IP: &str = "192.0.2.11";
/// The shipped configurations, run as they are but for file names and the VIP range.
const DIRECTOR_CONF: &str = include_str!("../../packaging/bird/xlb-director.conf");
const ROUTER_CONF: &str = include_str!("../../packaging/bird/router-ecmp.conf");

/// A directory of the test's own, removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// BIRD in a namespace, with its own configuration and control socket.
struct Bird {
    socket: PathBuf,
    _process: ChildGuard,
}

impl Bird {
    fn start(ns: &Netns, what: &str, dir: &Path, conf: &str) -> Bird {
        let conf_path = dir.join(format!("{what}.conf"));
        let log = dir.join(format!("{what}.log"));
        std::fs::write(&conf_path, format!("log \"{}\" all;\n{conf}", log.display())).unwrap();
        let socket = dir.join(format!("{what}.ctl"));
        let mut cmd = ns.command("bird");
        cmd.arg("-f").arg("-c").arg(&conf_path).arg("-s").arg(&socket).arg("-P").arg(dir.join(format!("{what}.pid")));
        let mut process = ChildGuard::spawn(&format!("BIRD on the {what}"), cmd).expect("start bird (Debian package bird2)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(process.running(), "BIRD on the {what} exited; its log: {}", std::fs::read_to_string(&log).unwrap_or_default());
            assert!(Instant::now() < deadline, "BIRD on the {what} made no control socket in 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        Bird { socket, _process: process }
    }

    fn birdc(&self, args: &[&str]) -> String {
        netns::run(Command::new("birdc").arg("-s").arg(&self.socket).args(args)).expect("birdc")
    }
}

/// The router's kernel route to the VIP ("" if none).
fn kernel_route(router: &Netns) -> String {
    router.ip(&["-4", "route", "show", &format!("{VIP}/32")]).expect("ip route").trim().to_string()
}

/// Polls the router's kernel table until the VIP's route is there (or gone); returns
/// how long that took from `since`.
fn wait_route(router: &Netns, present: bool, since: Instant, what: &str) -> Duration {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let route = kernel_route(router);
        if route.is_empty() != present {
            if present {
                assert!(route.contains(&format!("via {DIRECTOR_IP}")) && route.contains("proto bird"), "{what}: {route}");
            }
            let took = since.elapsed();
            println!("{what}: the route {} the router's kernel table {took:?} after the change", if present { "reached" } else { "left" });
            return took;
        }
        assert!(Instant::now() < deadline, "{what}: the VIP's route is still {}", if present { "missing" } else { "there" });
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn status_json(c: &DrCluster) -> serde_json::Value {
    serde_json::from_str(&c.xlb(&["--output", "json", "status"]).expect("xlb status")).expect("status JSON")
}

/// Waits until the daemon says BIRD holds exactly what has quorum; returns that list.
fn wait_in_sync(c: &DrCluster) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = status_json(c);
        let bgp = &s["bgp"];
        if bgp["in_sync"] == true {
            return bgp["announced"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
        }
        assert!(Instant::now() < deadline, "the announcement is not in sync: {bgp}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_vip_is_announced_by_bird_exactly_while_its_service_has_quorum() {
    assert_eq!(unsafe { libc::geteuid() }, 0, "this test creates namespaces and attaches XDP: run it as root (cargo xtask test)");
    let mut c = DrCluster::build(Path::new(XLB), 2, AttachMode::Skb).expect("build the namespace cluster");
    let router = Netns::create(&format!("xlb-{}-rtr", c.id)).expect("router namespace");
    netns::veth(&router, "eth0", &c.director, "eth1").expect("veth router-director");
    router.ip(&["addr", "add", &format!("{ROUTER_IP}/24"), "dev", "eth0"]).unwrap();
    router.ip(&["link", "set", "eth0", "up"]).unwrap();
    c.director.ip(&["addr", "add", &format!("{DIRECTOR_IP}/24"), "dev", "eth1"]).unwrap();
    c.director.ip(&["link", "set", "eth1", "up"]).unwrap();
    let tmp = TempDir(std::env::temp_dir().join(format!("xlb-bgp-{}", c.id)));
    std::fs::create_dir_all(&tmp.0).unwrap();
    let vips = tmp.0.join("xlb-vips.conf");

    let director_conf = DIRECTOR_CONF.replace("/run/bird/", &format!("{}/", tmp.0.display()));
    assert!(director_conf.contains(&format!("include \"{}.con[f]\";", vips.with_extension("").display())), "{director_conf}");
    let router_conf = ROUTER_CONF.replace("198.51.100.0/24{32,32}", "10.99.0.0/24{32,32}");
    assert!(router_conf.contains("10.99.0.0/24{32,32}"), "the shipped router-ecmp.conf has no XLB_VIPS define any more");
    let router_bird = Bird::start(&router, "router", &tmp.0, &router_conf);
    let director_bird = Bird::start(&c.director, "director", &tmp.0, &director_conf);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !router_bird.birdc(&["show", "protocols", "director1"]).contains("Established") {
        assert!(Instant::now() < deadline, "no BGP session: {}", router_bird.birdc(&["show", "protocols", "all", "director1"]));
        std::thread::sleep(Duration::from_millis(100));
    }

    let socket = director_bird.socket.display().to_string();
    let daemon_args = ["--bird-vips", vips.to_str().unwrap(), "--bird-socket", &socket, "--bgp-quorum", "2"];
    c.start_daemon(&daemon_args).expect("start the daemon");
    let svc = format!("{VIP}:80");
    let (rs1, rs2) = (c.reals[0].ip.to_string(), c.reals[1].ip.to_string());
    c.xlb(&["service", "add", "tcp", &svc, "-s", "rr"]).unwrap();
    c.xlb(&["real", "add", "tcp", &svc, &rs1, "-g"]).unwrap();
    // One real, quorum 2: nothing announced.
    assert_eq!(wait_in_sync(&c), Vec::<String>::new());
    assert_eq!(std::fs::read_to_string(&vips).unwrap(), "");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(kernel_route(&router), "", "announced below quorum");

    let mut times = Vec::new();
    let t = Instant::now();
    c.xlb(&["real", "add", "tcp", &svc, &rs2, "-g"]).unwrap();
    times.push(("second real added (quorum reached)", wait_route(&router, true, t, "quorum reached"), true));
    assert_eq!(std::fs::read_to_string(&vips).unwrap(), format!("route {VIP}/32 blackhole;\n"));
    assert!(router_bird.birdc(&["show", "route", &format!("{VIP}/32")]).contains(&format!("{VIP}/32")));
    assert_eq!(wait_in_sync(&c), vec![VIP.to_string()]);
    let status = c.xlb(&["status"]).unwrap();
    assert!(status.contains(&format!("bgp announced {VIP}\n")) && status.contains("bgp last BIRD reply 0003 Reconfigured"), "{status}");

    // Weight 0: the real takes no new connections, below quorum.
    let t = Instant::now();
    c.xlb(&["real", "edit", "tcp", &svc, &rs2, "-g", "-w", "0"]).unwrap();
    times.push(("weight 0", wait_route(&router, false, t, "weight 0"), false));
    c.xlb(&["real", "edit", "tcp", &svc, &rs2, "-g", "-w", "1"]).unwrap();
    wait_route(&router, true, Instant::now(), "weight 1 again");

    // Removed: below quorum; added back: announced again.
    let t = Instant::now();
    c.xlb(&["real", "del", "tcp", &svc, &rs2]).unwrap();
    times.push(("real removed", wait_route(&router, false, t, "real removed"), false));
    c.xlb(&["real", "add", "tcp", &svc, &rs2, "-g"]).unwrap();
    wait_route(&router, true, Instant::now(), "real added back");

    // Failed by its health check: below quorum until it passes again.
    c.xlb(&["health", "set", "tcp", &svc, "--type", "tcp", "--interval", "0.2", "--timeout", "0.2", "--fall", "1", "--rise", "1"]).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(!kernel_route(&router).is_empty(), "both reals pass their check");
    let t = Instant::now();
    c.stop_http(1).unwrap();
    let failed = wait_route(&router, false, t, "health check failed (includes the check's detection)");
    c.start_http(1).unwrap();
    let t = Instant::now();
    let passed = wait_route(&router, true, t, "health check passed again (includes the check's detection)");
    println!("health: withdrawn {failed:?} after the real's server died, announced {passed:?} after it came back");

    // SIGTERM and a new daemon: the fast path runs on, and so does the route, throughout.
    let gone = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(AtomicU64::new(0));
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = {
        let (gone, samples, watching, name) = (gone.clone(), samples.clone(), watching.clone(), router.name.clone());
        std::thread::spawn(move || {
            let router = std::mem::ManuallyDrop::new(Netns { name }); // the test's; not deleted here
            while watching.load(Ordering::Relaxed) {
                if kernel_route(&router).is_empty() {
                    gone.store(true, Ordering::Relaxed);
                }
                samples.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let since_before = router_bird.birdc(&["show", "route", &format!("{VIP}/32")]);
    c.signal_balancer(libc::SIGTERM).unwrap();
    c.stop_balancer().unwrap(); // reaped
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(std::fs::read_to_string(&vips).unwrap(), format!("route {VIP}/32 blackhole;\n"), "SIGTERM leaves the file");
    c.start_daemon(&daemon_args).expect("restart the daemon");
    assert_eq!(wait_in_sync(&c), vec![VIP.to_string()]);
    std::thread::sleep(Duration::from_millis(500));
    watching.store(false, Ordering::Relaxed);
    watcher.join().unwrap();
    assert!(!gone.load(Ordering::Relaxed), "the route left the router's table during the restart");
    assert!(samples.load(Ordering::Relaxed) > 20, "the route was watched throughout the restart");
    assert_eq!(
        router_bird.birdc(&["show", "route", &format!("{VIP}/32")]),
        since_before,
        "the router's route (and its age) is the one from before the restart: no flap"
    );

    // xlb stop: the fast path goes, so does the route.
    let t = Instant::now();
    c.xlb(&["stop"]).unwrap();
    times.push(("xlb stop", wait_route(&router, false, t, "xlb stop"), false));
    assert_eq!(std::fs::read_to_string(&vips).unwrap(), "", "xlb stop leaves an empty file");
    c.stop_balancer().unwrap(); // reaps the daemon `xlb stop` ended
    // `xlb run` (restoring the saved state: quorum again) and its Ctrl-C, which detaches.
    let t = Instant::now();
    c.start_balancer_with(&daemon_args).expect("xlb run");
    times.push(("xlb run started with the saved state", wait_route(&router, true, t, "xlb run started"), true));
    let t = Instant::now();
    c.stop_balancer().unwrap(); // SIGINT, as Ctrl-C
    times.push(("xlb run's Ctrl-C", wait_route(&router, false, t, "xlb run's Ctrl-C"), false));
    assert_eq!(std::fs::read_to_string(&vips).unwrap(), "", "Ctrl-C leaves an empty file");
    for (what, took, announced) in &times {
        println!("{what}: route {} in {took:?}", if *announced { "announced" } else { "withdrawn" });
        assert!(*took < Duration::from_secs(5), "{what} took {took:?}");
    }
}
