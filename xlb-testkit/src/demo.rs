//! `xlb-testkit demo`: an LVS-DR cluster in namespaces, balanced by xlb, answering curl.
use std::{path::Path, time::Duration};

use anyhow::Result;

use crate::testbed::{CIP, DIP, DrCluster, VIP};
use xlb_core::{
    loader::AttachMode,
    run::{install_stop_handler, stop_requested},
};

pub struct DemoOptions {
    /// Requests to send before exiting; None: one a second until Ctrl-C.
    pub requests: Option<u32>,
    pub mode: AttachMode,
    pub reals: usize,
}

pub fn demo(xlb: &Path, opts: DemoOptions) -> Result<()> {
    install_stop_handler();
    println!("== building the cluster (network namespaces)");
    let mut cluster = DrCluster::build(xlb, opts.reals, opts.mode)?;
    // Ctrl-C goes to the whole foreground process group: the balancer must outlive it
    // to be asked for the counters below.
    cluster.balancer_outside_the_terminal_group();
    println!("   client    {CIP}");
    println!("   director  {DIP}, VIP {VIP}  (namespace {})", cluster.director.name);
    for rs in &cluster.reals {
        println!("   {}       {}, VIP {VIP} on lo, arp_ignore=1 arp_announce=2, HTTP on :80", rs.name, rs.ip);
    }
    match opts.mode {
        AttachMode::Auto => println!("== starting xlb on the director: xlb run --iface eth0"),
        mode => println!("== starting xlb on the director: xlb run --iface eth0 --mode {}", mode.name()),
    }
    for line in cluster.start_balancer()? {
        println!("   {line}");
    }
    println!("== configuring DR round robin");
    let service = format!("{VIP}:80");
    println!("   $ xlb service add tcp {service} --scheduler rr");
    cluster.xlb(&["service", "add", "tcp", &service, "--scheduler", "rr"])?;
    for rs in &cluster.reals {
        println!("   $ xlb real add tcp {service} {}", rs.ip);
        cluster.xlb(&["real", "add", "tcp", &service, &rs.ip.to_string()])?;
    }
    match opts.requests {
        Some(n) => println!("== {n} requests from the client: curl http://{VIP}/"),
        None => println!("== a request a second from the client: curl http://{VIP}/  (Ctrl-C to stop)"),
    }
    let mut sent = 0;
    while opts.requests.is_none_or(|n| sent < n) && !stop_requested() {
        sent += 1;
        let body = match cluster.curl("/") {
            Ok(body) => body,
            Err(e) => {
                // A Ctrl-C during the request also interrupts curl (same process group).
                std::thread::sleep(Duration::from_millis(200));
                if stop_requested() {
                    break;
                }
                return Err(e);
            }
        };
        println!("   request {sent}: answered by {}", body.trim());
        if opts.requests.is_none() {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    for (title, args) in [("connections per real: xlb list", &["list"][..]), ("traffic per real: xlb list --stats", &["list", "--stats"][..])] {
        println!("== {title}");
        for line in cluster.xlb(args)?.lines() {
            println!("   {line}");
        }
    }
    println!("== cleaning up");
    let status = cluster.stop_balancer()?;
    drop(cluster);
    println!("   xlb run exited ({status}); namespaces removed");
    Ok(())
}

/// `xlb-testkit demo --cluster`: three xlb directors behind a router spreading flows by
/// ECMP (BGP and BFD through BIRD), long-lived connections across them, one director
/// killed and brought back.
pub struct ClusterDemoOptions {
    /// Long-lived connections the client keeps open (each echoes a line every 200 ms).
    pub connections: usize,
    pub mode: AttachMode,
}

pub fn cluster_demo(xlb: &Path, opts: ClusterDemoOptions) -> Result<()> {
    use crate::cluster::{
        BFD_INTERVAL_MS, BFD_MULTIPLIER, CLUSTER_CIP, CLUSTER_PORT, CLUSTER_VIP, EchoLoad, EcmpCluster, ROUTER_CLIENT_IP,
        ROUTER_LAN_IP, wait_new_connections, wait_next_hops,
    };
    use std::time::Instant;
    const DIRECTORS: usize = 3;
    const REALS: usize = 3;
    const GAP: Duration = Duration::from_millis(2500);
    let shares = |carried: &[usize]| carried.iter().enumerate().map(|(d, n)| format!("dir{} {n}", d + 1)).collect::<Vec<_>>().join(", ");
    let route = |c: &EcmpCluster| -> Result<()> {
        let text = c.router.ip(&["route", "show", &format!("{CLUSTER_VIP}/32")])?;
        println!("   router $ ip route show {CLUSTER_VIP}");
        for line in text.lines() {
            println!("     {line}");
        }
        Ok(())
    };

    println!("== building the ECMP cluster (network namespaces)");
    let mut c = EcmpCluster::build(xlb, DIRECTORS, REALS, opts.mode)?;
    println!("   client    {CLUSTER_CIP}, default route via the router {ROUTER_CLIENT_IP}");
    println!("   router    {ROUTER_CLIENT_IP} / {ROUTER_LAN_IP}: BIRD, BGP with BFD ({BFD_MULTIPLIER} x {BFD_INTERVAL_MS} ms) to each director, ECMP by the L4 hash");
    for d in &c.directors {
        println!("   {}      {}: BIRD announcing what xlb writes, xlb daemon (mh, DR)", d.name, d.ip);
    }
    for rs in &c.reals {
        println!("   {}       {}, VIP {CLUSTER_VIP} on lo, echo server on :{CLUSTER_PORT}, default route via the router", rs.name, rs.ip);
    }
    println!("== starting BIRD and xlb on each director");
    let starting = Instant::now();
    for d in 0..DIRECTORS {
        c.start_director(d)?;
        let dir = &c.directors[d];
        let order: Vec<&str> = dir.order.iter().map(|&r| c.reals[r].name.as_str()).collect();
        println!(
            "   {}: xlb daemon --iface eth0 --bird-vips {} --bird-socket {}",
            dir.name,
            dir.vips_file.display(),
            dir.bird_socket.display()
        );
        println!("        xlb service add tcp {CLUSTER_VIP}:{CLUSTER_PORT} --scheduler mh --sched-flags mh-port; reals added in the order {}", order.join(", "));
    }
    let routed = wait_next_hops(&c.router, &c.director_ips(), starting, Duration::from_secs(30))?;
    println!("   the router has a route over all three {routed:.1?} after the start:");
    route(&c)?;

    println!("== {} long-lived connections from the client to {CLUSTER_VIP}:{CLUSTER_PORT}, a line each every 200 ms", opts.connections);
    let load = EchoLoad::start(&c.client, c.target(), opts.connections, Duration::from_millis(200))?;
    println!("   per real server:  {:?}", load.per_real());
    println!("   per director:     {}  (xlb conns on each, busy entries)", shares(&c.carried(GAP)?));

    let victim = 1;
    let name = c.directors[victim].name.clone();
    println!("== killing {name}: its link down, xlb and BIRD killed (SIGKILL), its pins gone as at a reboot");
    let survivors: Vec<_> = c.director_ips().into_iter().filter(|&ip| ip != c.directors[victim].ip).collect();
    let killed_at = Instant::now();
    let (dropped, new_ok) = std::thread::scope(|s| -> Result<_> {
        let router = &c.router;
        let watch = s.spawn(|| wait_next_hops(router, &survivors, killed_at, Duration::from_secs(10)));
        c.directors[victim].kill()?;
        let new_ok = wait_new_connections(&c.client, c.target(), killed_at, 24, Duration::from_millis(400), Duration::from_secs(10))?;
        Ok((watch.join().expect("route watcher")?, new_ok))
    })?;
    let progress = load.wait_progress(killed_at + dropped, Duration::from_secs(15));
    println!("   the router dropped {name} after {dropped:.0?} (BFD, then BGP); new connections all succeed after {new_ok:.0?}");
    route(&c)?;
    println!(
        "   connections kept: {} of {} (broken {}: {} failed, {} stalled); all answering again {:.0?} after the kill",
        opts.connections - progress.broken(),
        opts.connections,
        progress.broken(),
        progress.failed,
        progress.stalled,
        killed_at.elapsed()
    );
    println!("   per director:     {}", shares(&c.carried(GAP)?));

    println!("== bringing {name} back: link up, BIRD and xlb started again");
    let all = c.director_ips();
    let revived_at = Instant::now();
    let (back, revived) = std::thread::scope(|s| {
        let router = &c.router;
        let watch = s.spawn(|| wait_next_hops(router, &all, revived_at, Duration::from_secs(20)));
        let revived = c.directors[victim].revive(&c.switch, &c.reals);
        (watch.join().expect("route watcher"), revived)
    });
    revived?;
    let back = back?;
    let progress = load.wait_progress(revived_at + back, Duration::from_secs(15));
    println!("   the router routes over {name} again {back:.1?} after its restart began");
    println!(
        "   connections kept: {} of {} (broken {}); per director: {}",
        opts.connections - progress.broken(),
        opts.connections,
        progress.broken(),
        shares(&c.carried(GAP)?)
    );
    println!("   failed connections over the whole demo: {}", load.failed());
    println!("== cleaning up");
    drop(load);
    drop(c);
    println!("   BIRD and xlb stopped, namespaces removed");
    Ok(())
}
