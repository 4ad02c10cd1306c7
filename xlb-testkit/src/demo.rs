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
