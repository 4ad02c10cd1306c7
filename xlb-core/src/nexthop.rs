//! Where frames for a real server go, always from the kernel, never from the user: the
//! route to it (interface, router, source address, MTU) and the next hop's MAC from the
//! neighbour table.
use std::net::{IpAddr, UdpSocket};

use anyhow::{Result, bail};

use crate::{
    ops::{Egress, NextHop},
    rtnl,
};

/// The next hop towards `rip` as the kernel knows it now (no route, or no MAC yet, is
/// not an error: the fields stay None).
pub fn lookup(rip: IpAddr) -> Result<NextHop> {
    lookup_via(rip).map(|(hop, _)| hop)
}

/// [`lookup`], and the neighbour whose MAC it is (the router, or `rip` on the link):
/// a change of that neighbour changes the next hop.
pub fn lookup_via(rip: IpAddr) -> Result<(NextHop, Option<IpAddr>)> {
    let Some(route) = rtnl::route_get(rip)? else { return Ok((NextHop::default(), None)) };
    let link = rtnl::link(route.oif)?;
    let src = match route.prefsrc {
        Some(a) if a.is_ipv4() == rip.is_ipv4() => a,
        other => bail!("the route to {rip} via {} has no source address of its family ({other:?})", link.name),
    };
    let egress = Egress { ifindex: route.oif, mac: link.mac, mtu: route.mtu.unwrap_or(link.mtu), src };
    let neighbour = route.next_hop(rip);
    let mac = rtnl::neighbour(route.oif, neighbour)?;
    Ok((NextHop { egress: Some(egress), mac }, Some(neighbour)))
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

/// Looks `rip` up and, when the route is known but the MAC is not, asks the kernel to
/// resolve it, without waiting: whoever needs the MAC learns it from the kernel's
/// neighbour notifications (the daemon's subscription, [`crate::rtnl::Monitor`]).
pub fn lookup_soliciting(rip: IpAddr) -> Result<NextHop> {
    let hop = lookup(rip)?;
    if hop.mac.is_none() && hop.egress.is_some() {
        solicit(rip);
    }
    Ok(hop)
}

/// [`lookup_soliciting`] for many reals. A real that cannot be looked up gets no next
/// hop (its frames go to the kernel).
pub fn lookup_many_soliciting(ips: &[IpAddr]) -> Vec<NextHop> {
    ips.iter().map(|ip| lookup_soliciting(*ip).unwrap_or_default()).collect()
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
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else { return Vec::new() };
    addrs
        .filter(|ifa| ifa.interface_name == name)
        .filter_map(|ifa| {
            let (addr, mask) = (ifa.address?, ifa.netmask?);
            if let (Some(a), Some(m)) = (addr.as_sockaddr_in(), mask.as_sockaddr_in()) {
                return Some((IpAddr::V4(a.ip()), u32::from(m.ip()).leading_ones()));
            }
            let (a, m) = (addr.as_sockaddr_in6()?, mask.as_sockaddr_in6()?);
            Some((IpAddr::V6(a.ip()), u128::from(m.ip()).leading_ones()))
        })
        .collect()
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
