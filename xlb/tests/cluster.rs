//! Scale-out (issue 15, active/active): three xlb directors announce the VIP over BGP
//! (BIRD, BFD) to a router that spreads flows over them by ECMP; 1,000 long-lived TCP
//! connections keep echoing while one director dies and comes back. Real namespaces,
//! BIRD and XDP: needs root and bird2, and fails (never skips) without them.
use std::{
    net::Ipv4Addr,
    path::Path,
    time::{Duration, Instant},
};

use xlb_core::loader::AttachMode;
use xlb_testkit::cluster::{EchoLoad, EcmpCluster, print_block, wait_new_connections, wait_next_hops};

const XLB: &str = env!("CARGO_BIN_EXE_xlb");
const CONNECTIONS: usize = 1000;
/// Each connection sends a line this often.
const INTERVAL: Duration = Duration::from_millis(200);
/// New connections tried at once when checking that new connections succeed, each
/// given PROBE_TIMEOUT (a lost SYN is retried by TCP only after a second).
const PROBES: usize = 24;
const PROBE_TIMEOUT: Duration = Duration::from_millis(400);
/// The gap between the two connection listings that tell a director's busy entries
/// from idle ones (see EcmpCluster::carried).
const RECENT: Duration = Duration::from_millis(2500);

fn require_root() {
    assert_eq!(unsafe { libc::geteuid() }, 0, "this test creates namespaces, runs BIRD and attaches XDP: run it as root (cargo xtask test)");
}

/// A director's `pass_other_host` counter: frames for the VIP flooded to it for another
/// director's MAC, passed (the kernel drops them) rather than balanced.
fn passed_other_host(c: &EcmpCluster, d: usize) -> u64 {
    let text = c.directors[d].xlb(&["--output", "json", "counters"]).expect("xlb counters");
    let v: serde_json::Value = serde_json::from_str(&text).expect("counters as JSON");
    v["pass_other_host"].as_u64().unwrap_or_else(|| panic!("no pass_other_host in {text}"))
}

fn shares(carried: &[usize]) -> String {
    carried.iter().enumerate().map(|(d, n)| format!("dir{} {n}", d + 1)).collect::<Vec<_>>().join(", ")
}

#[test]
fn ecmp_cluster_keeps_connections_when_a_director_dies_and_returns() {
    require_root();
    let began = Instant::now();
    let mut c = EcmpCluster::build(Path::new(XLB), 3, 3, AttachMode::Auto).expect("build the ECMP cluster");
    let starting = Instant::now();
    c.start_all().expect("start BIRD and xlb on every director");
    let all = c.director_ips();
    let announced = wait_next_hops(&c.router, &all, starting, Duration::from_secs(20)).expect("the router routes the VIP over all three directors");
    let orders: Vec<String> = c.directors.iter().map(|d| format!("{}: {:?}", d.name, d.order.iter().map(|&r| c.reals[r].name.as_str()).collect::<Vec<_>>())).collect();

    let load = EchoLoad::start(&c.client, c.target(), CONNECTIONS, INTERVAL).expect("open the long-lived connections");
    let opened = began.elapsed();
    let before = c.carried(RECENT).unwrap();
    let per_real = load.per_real();
    let carried_sum = before.iter().sum::<usize>();
    assert!(
        (CONNECTIONS - CONNECTIONS / 100..=CONNECTIONS).contains(&carried_sum),
        "every connection is carried by one director: {} (sum {carried_sum})",
        shares(&before)
    );
    for (d, &n) in before.iter().enumerate() {
        assert!(n >= CONNECTIONS / 6, "ECMP spreads the flows: dir{} carries only {n} ({})", d + 1, shares(&before));
    }
    assert_eq!(per_real.len(), 3, "mh spreads the connections over every real: {per_real:?}");

    // dir1 dies. With hash-threshold ECMP, taking out the first next hop also moves some
    // flows between the two survivors: they must pick up flows they never saw.
    let victim = 0;
    let survivors: Vec<Ipv4Addr> = all.iter().copied().filter(|&ip| ip != all[victim]).collect();
    let flooded_before: u64 = (0..3).filter(|&d| d != victim).map(|d| passed_other_host(&c, d)).sum();
    let killed_at = Instant::now();
    let (route_dropped, new_ok) = std::thread::scope(|s| {
        let router = &c.router;
        let route = s.spawn(|| wait_next_hops(router, &survivors, killed_at, Duration::from_secs(10)));
        c.directors[victim].kill().expect("kill dir1");
        let new_ok = wait_new_connections(&c.client, c.target(), killed_at, PROBES, PROBE_TIMEOUT, Duration::from_secs(10));
        (route.join().unwrap(), new_ok)
    });
    let route_dropped = route_dropped.expect("the router drops the dead director");
    let new_ok = new_ok.expect("new connections succeed again");
    let failover = load.wait_progress(killed_at + route_dropped, Duration::from_secs(15));
    let all_flowing_after_kill = killed_at.elapsed();
    let during = c.carried(RECENT).unwrap();
    // The bridge forgot dir1's MAC with its port and flooded what the router still sent
    // there (until BFD took the route away) to the survivors, whose fast path passed it.
    let flooded = (0..3).filter(|&d| d != victim).map(|d| passed_other_host(&c, d)).sum::<u64>() - flooded_before;

    // dir1 comes back (BIRD and xlb restart; its connection table is empty).
    let revived_at = Instant::now();
    let (route_back, revive) = std::thread::scope(|s| {
        let router = &c.router;
        let route = s.spawn(|| wait_next_hops(router, &all, revived_at, Duration::from_secs(15)));
        let revive = c.directors[victim].revive(&c.switch, &c.reals);
        (route.join().unwrap(), revive)
    });
    revive.expect("restart dir1");
    let route_back = route_back.expect("the router routes over dir1 again");
    let failback = load.wait_progress(revived_at + route_back, Duration::from_secs(15));
    let new_after_back = wait_new_connections(&c.client, c.target(), Instant::now(), PROBES, PROBE_TIMEOUT, Duration::from_secs(5));
    let after = c.carried(RECENT).unwrap();
    let failed_total = load.failed();
    drop(load);

    let mut summary = String::new();
    summary += "==== ECMP cluster scale-out summary ====\n";
    summary += &format!("directors 3 (BIRD eBGP + BFD {}x{} ms), reals 3 (mh with mh-port, DR), connections {CONNECTIONS}, a line each every {} ms\n", xlb_testkit::cluster::BFD_MULTIPLIER, xlb_testkit::cluster::BFD_INTERVAL_MS, INTERVAL.as_millis());
    summary += &format!("real order per director: {}\n", orders.join("; "));
    summary += &format!("VIP routed over the 3 directors {announced:.1?} after their BIRD and xlb started; {CONNECTIONS} connections open {opened:.1?} into the test\n");
    summary += &format!("connections per real: {per_real:?}\n");
    summary += &format!("carried before:           {}\n", shares(&before));
    summary += &format!("dir1 killed: route via dir1 dropped after {route_dropped:.0?}; all {PROBES} new connections succeed after {new_ok:.0?}\n");
    summary += &format!(
        "  broken {} of {CONNECTIONS} ({} failed, {} stalled); every other one echoed again {:.0?} after the kill {:?}\n",
        failover.broken(),
        failover.failed,
        failover.stalled,
        all_flowing_after_kill,
        failover.reasons
    );
    summary += &format!("  frames for dir1's MAC flooded to the survivors and passed (pass_other_host), not balanced: {flooded}\n");
    summary += &format!("carried with dir1 dead:   {}\n", shares(&during));
    summary += &format!("dir1 back: route via dir1 again after {route_back:.1?} (BIRD + xlb restart included)\n");
    summary += &format!("  broken {} of {CONNECTIONS} ({} failed, {} stalled), waited {:.0?} {:?}\n", failback.broken(), failback.failed, failback.stalled, failback.waited, failback.reasons);
    summary += &format!("carried after dir1 back:  {}\n", shares(&after));
    summary += &format!("failed connections over the whole run: {failed_total}; test time {:.1?}\n", began.elapsed());
    summary += "========================================\n";
    print_block(&summary);

    let limit = CONNECTIONS / 100;
    assert!(failover.broken() < limit, "{} connections broke when dir1 died (limit < {limit})\n{summary}", failover.broken());
    assert!(failback.broken() < limit, "{} connections broke when dir1 came back (limit < {limit})\n{summary}", failback.broken());
    assert!(new_after_back.is_ok(), "new connections fail after dir1 came back: {new_after_back:?}");
    assert_eq!(during[victim], 0, "{summary}");
    assert!(flooded > 0, "the survivors saw the frames flooded for dir1's MAC and passed them\n{summary}");
    assert!(during.iter().sum::<usize>() + failover.broken() >= CONNECTIONS, "the survivors carry every unbroken connection\n{summary}");
    assert!(after[victim] > 0, "ECMP gives dir1 flows again once it is back\n{summary}");
}
