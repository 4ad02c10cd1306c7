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

/// The address the director's own traffic to `dst` (its health checks) must come from,
/// when the kernel's choice will not do: None to let the kernel choose.
///
/// The kernel's choice will not do when it is a VIP (`vips`): a DR or TUN real holds the
/// VIP too, so it answers the VIP to itself and the check never sees the answer. That is
/// the usual case for IPv6, where a VIP on the director's NIC is a longer prefix match for
/// a real than the director's own address (RFC 6724 rule 8, capped by each address's
/// prefix length: a /128 VIP beats a /64). Then another address of the route's interface
/// is taken, of `dst`'s family, not a VIP, on `dst`'s subnet if one is.
pub fn check_source(dst: IpAddr, vips: &[IpAddr]) -> Option<IpAddr> {
    let route = rtnl::route_get(dst).ok()??;
    if !route.prefsrc.is_some_and(|src| vips.contains(&src)) {
        return None;
    }
    let link = rtnl::link(route.oif).ok()?;
    let link_local = |ip: &IpAddr| matches!(ip, IpAddr::V6(v6) if v6.is_unicast_link_local());
    let mut candidates: Vec<(IpAddr, u32)> = interface_addresses(&link.name)
        .into_iter()
        .filter(|(a, _)| a.is_ipv4() == dst.is_ipv4() && !vips.contains(a) && link_local(a) == link_local(&dst))
        .collect();
    candidates.sort_by_key(|(a, len)| !same_subnet(*a, dst, *len));
    candidates.first().map(|(a, _)| *a)
}

fn same_subnet(a: IpAddr, b: IpAddr, len: u32) -> bool {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => len == 0 || (u32::from(a) ^ u32::from(b)) >> (32 - len.min(32)) == 0,
        (IpAddr::V6(a), IpAddr::V6(b)) => len == 0 || (u128::from(a) ^ u128::from(b)) >> (128 - len.min(128)) == 0,
        _ => false,
    }
}

/// The addresses of interface `name` with their prefix lengths (getifaddrs(3)).
fn interface_addresses(name: &str) -> Vec<(IpAddr, u32)> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we only read and then free.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_netmask.is_null() {
            continue;
        }
        // SAFETY: the name is a NUL-terminated string of the node.
        if unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) }.to_bytes() != name.as_bytes() {
            continue;
        }
        // SAFETY: non-null socket addresses of the node, read by their family.
        if let (Some(addr), Some(mask)) = unsafe { (sockaddr_ip(ifa.ifa_addr), sockaddr_ip(ifa.ifa_netmask)) } {
            let len = match mask {
                IpAddr::V4(m) => u32::from(m).leading_ones(),
                IpAddr::V6(m) => u128::from(m).leading_ones(),
            };
            out.push((addr, len));
        }
    }
    // SAFETY: the list getifaddrs returned, freed once.
    unsafe { libc::freeifaddrs(head) };
    out
}

/// # Safety
/// `sa` points to a valid socket address of its `sa_family`.
unsafe fn sockaddr_ip(sa: *const libc::sockaddr) -> Option<IpAddr> {
    unsafe {
        match (*sa).sa_family as i32 {
            libc::AF_INET => {
                let sin = &*(sa as *const libc::sockaddr_in);
                Some(IpAddr::V4(std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))))
            }
            libc::AF_INET6 => {
                let sin6 = &*(sa as *const libc::sockaddr_in6);
                Some(IpAddr::V6(std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(same_subnet(ip("fd00:77::2"), ip("fd00:77::7"), 64));
        assert!(!same_subnet(ip("fd00:77::200"), ip("fd00:77::7"), 128));
        assert!(same_subnet(ip("10.0.0.2"), ip("10.0.0.7"), 24));
        assert!(!same_subnet(ip("10.0.1.2"), ip("10.0.0.7"), 24));
        assert!(!same_subnet(ip("10.0.0.2"), ip("fd00::2"), 0));
    }
}
