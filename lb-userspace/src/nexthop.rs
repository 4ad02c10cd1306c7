//! Where frames for a real server go, always from the kernel, never from the user: the
//! route to it (interface, router, source address, MTU) and the next hop's MAC from the
//! neighbour table.
use std::{
    net::{IpAddr, UdpSocket},
    time::{Duration, Instant},
};

use anyhow::{Result, bail};

use crate::{
    ops::{Egress, NextHop},
    rtnl,
};

/// The next hop towards `rip` as the kernel knows it now (no route, or no MAC yet, is
/// not an error: the fields stay None).
pub fn lookup(rip: IpAddr) -> Result<NextHop> {
    let Some(route) = rtnl::route_get(rip)? else { return Ok(NextHop::default()) };
    let link = rtnl::link(route.oif)?;
    let src = match route.prefsrc {
        Some(a) if a.is_ipv4() == rip.is_ipv4() => a,
        other => bail!("the route to {rip} via {} has no source address of its family ({other:?})", link.name),
    };
    let egress = Egress { ifindex: route.oif, mac: link.mac, mtu: route.mtu.unwrap_or(link.mtu), src };
    let mac = rtnl::neighbour(route.oif, route.next_hop(rip))?;
    Ok(NextHop { egress: Some(egress), mac })
}

/// Asks the kernel to resolve the next hop towards `ip`: an empty UDP datagram to the
/// discard port makes it route and send an ARP request or neighbour solicitation (the
/// datagram itself is harmless if it ever arrives).
pub fn solicit(ip: IpAddr) {
    let any = if ip.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    if let Ok(sock) = UdpSocket::bind(any) {
        let _ = sock.send_to(&[], (ip, 9));
    }
}

/// Looks `rip` up, soliciting and waiting up to `wait` if its MAC is not known yet
/// (not at all when there is no route: no answer could come).
pub fn resolve(rip: IpAddr, wait: Duration) -> Result<NextHop> {
    let hop = lookup(rip)?;
    if hop.mac.is_some() || hop.egress.is_none() {
        return Ok(hop);
    }
    solicit(rip);
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        let hop = lookup(rip)?;
        if hop.mac.is_some() {
            return Ok(hop);
        }
    }
    lookup(rip)
}

/// Next hops of many reals: one solicitation round, at most `wait` in all. A real that
/// cannot be looked up gets no next hop (its frames go to the kernel).
pub fn resolve_many(ips: &[IpAddr], wait: Duration) -> Vec<NextHop> {
    let mut hops: Vec<NextHop> = ips.iter().map(|ip| lookup(*ip).unwrap_or_default()).collect();
    let pending = |hops: &[NextHop]| hops.iter().any(|h| h.mac.is_none() && h.egress.is_some());
    for (ip, h) in ips.iter().zip(&hops) {
        if h.mac.is_none() && h.egress.is_some() {
            solicit(*ip);
        }
    }
    let deadline = Instant::now() + wait;
    while pending(&hops) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        for (ip, h) in ips.iter().zip(hops.iter_mut()) {
            if h.mac.is_none() && h.egress.is_some() {
                *h = lookup(*ip).unwrap_or_default();
            }
        }
    }
    hops
}
