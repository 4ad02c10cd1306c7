//! rtnetlink through the netlink-packet-route crate: the kernel's route to an address
//! (what `ip route get` asks), its neighbour entries, an interface's name, MAC, MTU and
//! XDP attachment, and a subscription to neighbour and route changes. Everything is
//! answered for the network namespace of the calling thread (unlike /sys, which shows
//! the namespace it was mounted in).
//!
//! Queries are synchronous (one request, one answer on a socket of their own): they are
//! short and are called from synchronous code. The subscription ([`Monitor`]) is async.
use std::{io, net::IpAddr};

use anyhow::{Context, Result, bail};
use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    address::{AddressAttribute, AddressMessage},
    link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo as NlLinkInfo, LinkMessage, LinkXdp, XdpAttached},
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState},
    route::{RouteAddress, RouteAttribute, RouteMessage, RouteMetric, RouteType},
};
use netlink_sys::{AsyncSocket, AsyncSocketExt, Socket, SocketAddr, TokioSocket, protocols::NETLINK_ROUTE};

/// The kernel's route to an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// Output interface.
    pub oif: u32,
    /// The router to go through; None when the address is on the link.
    pub gateway: Option<IpAddr>,
    /// The source address the kernel would use.
    pub prefsrc: Option<IpAddr>,
    /// The route's MTU, if it sets one (otherwise the interface's applies).
    pub mtu: Option<u32>,
}

impl Route {
    /// The neighbour frames to `dst` are sent to.
    pub fn next_hop(&self, dst: IpAddr) -> IpAddr {
        self.gateway.unwrap_or(dst)
    }
}

fn family(addr: IpAddr) -> AddressFamily {
    match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// Sends one request and returns the kernel's answers; Err(errno) when it answered
/// with an error.
fn request(msg: RouteNetlinkMessage) -> Result<Vec<RouteNetlinkMessage>, io::Error> {
    exchange(msg, NLM_F_REQUEST)
}

/// Sends `msg` with `flags`: a dump (NLM_F_DUMP) returns every answer up to NLMSG_DONE,
/// a change (NLM_F_ACK) nothing but its acknowledgement, a query its one answer.
fn exchange(msg: RouteNetlinkMessage, flags: u16) -> Result<Vec<RouteNetlinkMessage>, io::Error> {
    let mut sock = Socket::new(NETLINK_ROUTE)?;
    sock.bind_auto()?;
    sock.connect(&SocketAddr::new(0, 0))?;
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = 1;
    let mut nl = NetlinkMessage::new(header, NetlinkPayload::from(msg));
    nl.finalize();
    let mut buf = vec![0u8; nl.buffer_len()];
    nl.serialize(&mut buf);
    sock.send(&buf, 0)?;
    let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
    let mut answers = Vec::new();
    loop {
        let (data, _) = sock.recv_from_full()?;
        let mut offset = 0;
        while offset < data.len() {
            let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[offset..])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("malformed netlink answer: {e}")))?;
            let len = msg.header.length as usize;
            if len == 0 {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "netlink message of length 0"));
            }
            offset += len.next_multiple_of(4);
            match msg.payload {
                NetlinkPayload::Error(e) => {
                    return match e.code {
                        Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                        None => Ok(answers), // the acknowledgement
                    };
                }
                NetlinkPayload::Done(_) => return Ok(answers),
                NetlinkPayload::InnerMessage(m) => {
                    answers.push(m);
                    if !dump {
                        return Ok(answers);
                    }
                }
                _ => {}
            }
        }
    }
}

/// The route the kernel uses to send to `dst` (`ip route get DST`). None when there is
/// no route, or `dst` is not reachable by unicast (unreachable, blackhole, …).
pub fn route_get(dst: IpAddr) -> Result<Option<Route>> {
    let mut msg = RouteMessage::default();
    msg.header.address_family = family(dst);
    msg.header.destination_prefix_length = if dst.is_ipv4() { 32 } else { 128 };
    msg.attributes.push(RouteAttribute::Destination(dst.into()));
    let answers = match request(RouteNetlinkMessage::GetRoute(msg)) {
        Ok(a) => a,
        Err(e) if [libc::ENETUNREACH, libc::EHOSTUNREACH, libc::EINVAL, libc::EACCES].contains(&e.raw_os_error().unwrap_or(0)) => {
            return Ok(None);
        }
        Err(e) => return Err(e).with_context(|| format!("route lookup for {dst}")),
    };
    let Some(RouteNetlinkMessage::NewRoute(answer)) = answers.into_iter().next() else { bail!("no route answer for {dst}") };
    if answer.header.kind == RouteType::Local {
        bail!("{dst} is an address of this host");
    }
    if answer.header.kind != RouteType::Unicast {
        return Ok(None);
    }
    let mut route = Route { oif: 0, gateway: None, prefsrc: None, mtu: None };
    for attr in &answer.attributes {
        match attr {
            RouteAttribute::Oif(i) => route.oif = *i,
            RouteAttribute::Gateway(a) => route.gateway = route_ip(a),
            RouteAttribute::PrefSource(a) => route.prefsrc = route_ip(a),
            RouteAttribute::Metrics(m) => {
                route.mtu = m.iter().find_map(|m| if let RouteMetric::Mtu(v) = m { Some(*v) } else { None }).filter(|&m| m > 0)
            }
            _ => {}
        }
    }
    if route.oif == 0 {
        return Ok(None);
    }
    Ok(Some(route))
}

/// Neighbour states whose MAC can be used (NUD_REACHABLE, STALE, DELAY, PROBE, NOARP,
/// PERMANENT; not INCOMPLETE or FAILED).
fn usable(state: NeighbourState) -> bool {
    matches!(
        state,
        NeighbourState::Reachable
            | NeighbourState::Stale
            | NeighbourState::Delay
            | NeighbourState::Probe
            | NeighbourState::Noarp
            | NeighbourState::Permanent
    )
}

/// The MAC of `addr`'s neighbour entry on interface `ifindex`, if the entry is usable.
pub fn neighbour(ifindex: u32, addr: IpAddr) -> Result<Option<[u8; 6]>> {
    let mut msg = NeighbourMessage::default();
    msg.header.family = family(addr);
    msg.header.ifindex = ifindex;
    let dst = match addr {
        IpAddr::V4(a) => NeighbourAddress::Inet(a),
        IpAddr::V6(a) => NeighbourAddress::Inet6(a),
    };
    msg.attributes.push(NeighbourAttribute::Destination(dst));
    let answers = match request(RouteNetlinkMessage::GetNeighbour(msg)) {
        Ok(a) => a,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("neighbour lookup for {addr}")),
    };
    let Some(RouteNetlinkMessage::NewNeighbour(answer)) = answers.into_iter().next() else { return Ok(None) };
    if !usable(answer.header.state) {
        return Ok(None);
    }
    Ok(answer
        .attributes
        .iter()
        .find_map(|a| if let NeighbourAttribute::LinkLocalAddress(m) = a { <[u8; 6]>::try_from(&m[..]).ok() } else { None })
        .filter(|m| *m != [0; 6]))
}

/// What rtnetlink says about an interface (`ip -d link show`): its kind, its peer or
/// parent, and its XDP attachment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    /// IFLA_INFO_KIND: "veth", "bridge", …; None for a plain NIC.
    pub kind: Option<String>,
    /// IFLA_LINK: for a veth, its peer's ifindex (in the peer's namespace).
    pub link: Option<u32>,
    /// IFLA_LINK_NETNSID: the namespace of that peer, as an id of the asking namespace;
    /// None when it is the same namespace.
    pub link_netnsid: Option<i32>,
    /// IFLA_XDP_ATTACHED: 0 none, 1 native (driver), 2 SKB (generic), 3 offloaded,
    /// 4 several (linux/if_link.h).
    pub xdp_attached: u8,
    /// IFLA_XDP_PROG_ID: the program attached (in whichever mode), if any.
    pub xdp_prog_id: Option<u32>,
}

/// XDP_ATTACHED_DRV (linux/if_link.h).
pub const XDP_ATTACHED_DRV: u8 = 1;
/// XDP_ATTACHED_SKB (linux/if_link.h).
pub const XDP_ATTACHED_SKB: u8 = 2;
/// XDP_ATTACHED_HW (linux/if_link.h).
pub const XDP_ATTACHED_HW: u8 = 3;
/// XDP_ATTACHED_MULTI: programs in more than one mode, native among them possibly.
pub const XDP_ATTACHED_MULTI: u8 = 4;

/// RTM_GETLINK for interface `ifindex`, in this namespace or (`netnsid`, as a peer's
/// IFLA_LINK_NETNSID gives it) in another one (IFLA_TARGET_NETNSID, Linux 4.20+).
fn get_link(ifindex: u32, netnsid: Option<i32>) -> Result<LinkMessage> {
    let mut msg = LinkMessage::default();
    msg.header.index = ifindex;
    if let Some(id) = netnsid {
        // IFLA_IF_NETNSID is IFLA_TARGET_NETNSID's first name (same number, 46).
        msg.attributes.push(LinkAttribute::IfNetnsId(id));
    }
    let answers = request(RouteNetlinkMessage::GetLink(msg)).with_context(|| format!("link lookup for ifindex {ifindex}"))?;
    match answers.into_iter().next() {
        Some(RouteNetlinkMessage::NewLink(m)) => Ok(m),
        _ => bail!("no answer to RTM_GETLINK for ifindex {ifindex}"),
    }
}

pub fn link_info(ifindex: u32, netnsid: Option<i32>) -> Result<LinkInfo> {
    let answer = get_link(ifindex, netnsid)?;
    let mut info = LinkInfo { kind: None, link: None, link_netnsid: None, xdp_attached: 0, xdp_prog_id: None };
    for attr in &answer.attributes {
        match attr {
            LinkAttribute::Link(l) => info.link = Some(*l),
            LinkAttribute::LinkNetNsId(id) => info.link_netnsid = Some(*id).filter(|&v| v >= 0),
            LinkAttribute::LinkInfo(infos) => {
                info.kind = infos.iter().find_map(|i| match i {
                    NlLinkInfo::Kind(InfoKind::Other(k)) => Some(k.clone()),
                    NlLinkInfo::Kind(k) => Some(k.to_string()),
                    _ => None,
                })
            }
            LinkAttribute::Xdp(xdp) => {
                for x in xdp {
                    match x {
                        LinkXdp::Attached(a) => {
                            info.xdp_attached = match a {
                                XdpAttached::None => 0,
                                XdpAttached::Driver => XDP_ATTACHED_DRV,
                                XdpAttached::SocketBuffer => XDP_ATTACHED_SKB,
                                XdpAttached::Hardware => XDP_ATTACHED_HW,
                                XdpAttached::Multiple => XDP_ATTACHED_MULTI,
                                XdpAttached::Other(v) => *v,
                                _ => 0,
                            }
                        }
                        LinkXdp::ProgId(id) if *id != 0 => info.xdp_prog_id = Some(*id),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(info)
}

/// The index of the interface named `name`.
pub fn ifindex(name: &str) -> Result<u32> {
    nix::net::if_::if_nametoindex(name).map_err(|_| anyhow::anyhow!("no interface named {name}"))
}

/// An interface's name, MAC and MTU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub name: String,
    pub mac: [u8; 6],
    pub mtu: u32,
}

pub fn link(ifindex: u32) -> Result<Link> {
    let answer = get_link(ifindex, None).with_context(|| format!("no interface with index {ifindex}"))?;
    let mut link = Link { name: String::new(), mac: [0; 6], mtu: 0 };
    for attr in &answer.attributes {
        match attr {
            LinkAttribute::IfName(n) => link.name = n.clone(),
            LinkAttribute::Address(a) => link.mac = <[u8; 6]>::try_from(&a[..]).unwrap_or([0; 6]),
            LinkAttribute::Mtu(m) => link.mtu = *m,
            _ => {}
        }
    }
    Ok(link)
}

/// What the layer-2 check needs of an interface (see [`crate::l2`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkAddress {
    pub index: u32,
    /// IFLA_ADDRESS when it is a 6-byte (Ethernet) address.
    pub mac: Option<[u8; 6]>,
    /// IFLA_INFO_KIND: "macvlan", "vlan", "bridge", …; None for a plain NIC.
    pub kind: Option<String>,
    /// IFLA_LINK: the lower device of a macvlan/macvtap/VLAN link, when it is in this
    /// namespace (IFLA_LINK_NETNSID absent).
    pub lower: Option<u32>,
    /// IFLA_MASTER: the bridge (or bond …) the interface is a port of.
    pub master: Option<u32>,
}

/// Every interface of this namespace with its MAC, kind, lower device and master
/// (one RTM_GETLINK dump).
pub fn link_addresses() -> Result<Vec<LinkAddress>> {
    Ok(link_dump()?
        .into_iter()
        .filter_map(|l| {
            let mut a = LinkAddress { index: l.header.index, mac: None, kind: None, lower: None, master: None };
            let mut other_netns = false;
            for attr in &l.attributes {
                match attr {
                    LinkAttribute::Address(m) => a.mac = <[u8; 6]>::try_from(&m[..]).ok(),
                    LinkAttribute::Link(i) if *i > 0 => a.lower = Some(*i),
                    LinkAttribute::LinkNetNsId(id) if *id >= 0 => other_netns = true,
                    LinkAttribute::Controller(i) if *i > 0 => a.master = Some(*i),
                    LinkAttribute::LinkInfo(infos) => {
                        a.kind = infos.iter().find_map(|i| match i {
                            NlLinkInfo::Kind(InfoKind::Other(k)) => Some(k.clone()),
                            NlLinkInfo::Kind(k) => Some(k.to_string()),
                            _ => None,
                        })
                    }
                    _ => {}
                }
            }
            if other_netns {
                a.lower = None;
            }
            Some(a)
        })
        .collect())
}

/// An address of an interface of this namespace (`ip addr show`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IfAddress {
    pub ifname: String,
    pub address: IpAddr,
    pub prefix_len: u8,
}

/// Every address of this namespace's interfaces (RTM_GETADDR dump).
pub fn addresses() -> Result<Vec<IfAddress>> {
    let names: std::collections::HashMap<u32, String> = links()?.into_iter().map(|(index, name, _)| (index, name)).collect();
    let answers = exchange(RouteNetlinkMessage::GetAddress(AddressMessage::default()), NLM_F_REQUEST | NLM_F_DUMP)
        .context("listing addresses")?;
    let mut out = Vec::new();
    for m in answers {
        let RouteNetlinkMessage::NewAddress(a) = m else { continue };
        // IFA_LOCAL is the interface's own address (IFA_ADDRESS the peer's on a
        // point-to-point link); IPv6 gives only IFA_ADDRESS.
        let local = a.attributes.iter().find_map(|x| if let AddressAttribute::Local(ip) = x { Some(*ip) } else { None });
        let addr = a.attributes.iter().find_map(|x| if let AddressAttribute::Address(ip) = x { Some(*ip) } else { None });
        let Some(address) = local.or(addr) else { continue };
        let ifname = names.get(&a.header.index).cloned().unwrap_or_else(|| a.header.index.to_string());
        out.push(IfAddress { ifname, address, prefix_len: a.header.prefix_len });
    }
    Ok(out)
}

/// Every interface of this namespace, as one RTM_GETLINK dump answers.
fn link_dump() -> Result<Vec<LinkMessage>> {
    let answers =
        exchange(RouteNetlinkMessage::GetLink(LinkMessage::default()), NLM_F_REQUEST | NLM_F_DUMP).context("listing interfaces")?;
    Ok(answers.into_iter().filter_map(|m| if let RouteNetlinkMessage::NewLink(l) = m { Some(l) } else { None }).collect())
}

/// Every interface of this namespace: (index, name, up) (RTM_GETLINK dump).
pub fn links() -> Result<Vec<(u32, String, bool)>> {
    Ok(link_dump()?
        .into_iter()
        .filter_map(|l| {
            let name = l.attributes.iter().find_map(|a| if let LinkAttribute::IfName(n) = a { Some(n.clone()) } else { None })?;
            Some((l.header.index, name, l.header.flags.contains(LinkFlags::Up)))
        })
        .collect())
}

/// Brings interface `ifindex` up (`ip link set IFACE up`).
pub fn set_up(ifindex: u32) -> Result<()> {
    let mut msg = LinkMessage::default();
    msg.header.index = ifindex;
    msg.header.flags = LinkFlags::Up;
    msg.header.change_mask = LinkFlags::Up;
    exchange(RouteNetlinkMessage::SetLink(msg), NLM_F_REQUEST | NLM_F_ACK).with_context(|| format!("bringing ifindex {ifindex} up"))?;
    Ok(())
}

fn address_message(ifindex: u32, address: IpAddr, prefix_len: u8) -> AddressMessage {
    let mut msg = AddressMessage::default();
    msg.header.family = family(address);
    msg.header.prefix_len = prefix_len;
    msg.header.index = ifindex;
    if address.is_ipv4() {
        msg.attributes.push(AddressAttribute::Local(address));
    }
    msg.attributes.push(AddressAttribute::Address(address));
    msg
}

/// Adds `address/prefix_len` to interface `ifindex` (`ip addr add`); an address it
/// already has is an error (EEXIST), as there.
pub fn add_address(ifindex: u32, address: IpAddr, prefix_len: u8) -> Result<()> {
    let msg = address_message(ifindex, address, prefix_len);
    exchange(RouteNetlinkMessage::NewAddress(msg), NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)
        .with_context(|| format!("adding {address}/{prefix_len}"))?;
    Ok(())
}

/// Removes `address/prefix_len` from interface `ifindex` (`ip addr del`).
pub fn del_address(ifindex: u32, address: IpAddr, prefix_len: u8) -> Result<()> {
    let msg = address_message(ifindex, address, prefix_len);
    exchange(RouteNetlinkMessage::DelAddress(msg), NLM_F_REQUEST | NLM_F_ACK).with_context(|| format!("removing {address}/{prefix_len}"))?;
    Ok(())
}

/// The type of the kernel's route to `dst` as `ip route get` names it ("local" when it
/// is delivered here, "unicast", "unreachable", …), or why there is none.
pub fn route_type(dst: IpAddr) -> String {
    let mut msg = RouteMessage::default();
    msg.header.address_family = family(dst);
    msg.header.destination_prefix_length = if dst.is_ipv4() { 32 } else { 128 };
    msg.attributes.push(RouteAttribute::Destination(dst.into()));
    match request(RouteNetlinkMessage::GetRoute(msg)) {
        Ok(answers) => match answers.into_iter().next() {
            Some(RouteNetlinkMessage::NewRoute(r)) => match r.header.kind {
                RouteType::Unicast => "unicast".into(),
                RouteType::Local => "local".into(),
                RouteType::Broadcast => "broadcast".into(),
                RouteType::Anycast => "anycast".into(),
                RouteType::Multicast => "multicast".into(),
                RouteType::BlackHole => "blackhole".into(),
                RouteType::Unreachable => "unreachable".into(),
                RouteType::Prohibit => "prohibit".into(),
                RouteType::Throw => "throw".into(),
                other => format!("{other:?}").to_lowercase(),
            },
            _ => "unknown".into(),
        },
        Err(e) => format!("no route ({e})"),
    }
}

/// A change the kernel announced: which neighbour (address and MAC, None when the
/// entry went or is not usable), or that a route changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Neighbour { ifindex: u32, address: IpAddr, mac: Option<[u8; 6]> },
    Route,
    /// An interface was added, removed or changed (its MAC among what may change).
    Link,
}

/// A subscription to the kernel's neighbour, route and link changes (RTNLGRP_NEIGH,
/// RTNLGRP_IPV4_ROUTE, RTNLGRP_IPV6_ROUTE, RTNLGRP_LINK) in the namespace of the thread
/// that opens it.
pub struct Monitor {
    socket: TokioSocket,
}

impl Monitor {
    /// Must be called inside a tokio runtime.
    pub fn open() -> Result<Self> {
        let mut socket = TokioSocket::new(NETLINK_ROUTE).context("opening a netlink socket")?;
        socket.socket_mut().bind_auto().context("binding a netlink socket")?;
        for group in [libc::RTNLGRP_NEIGH, libc::RTNLGRP_IPV4_ROUTE, libc::RTNLGRP_IPV6_ROUTE, libc::RTNLGRP_LINK] {
            socket.socket_mut().add_membership(group).context("subscribing to neighbour, route and link changes")?;
        }
        Ok(Self { socket })
    }

    /// The next batch of changes (at least one). An overrun socket (ENOBUFS: changes
    /// were lost) is reported as a route and a link change, which makes the reader look
    /// everything up again.
    pub async fn next(&mut self) -> Result<Vec<Change>> {
        loop {
            let data = match self.socket.recv_from_full().await {
                Ok((data, _)) => data,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => return Ok(vec![Change::Route, Change::Link]),
                Err(e) => return Err(e).context("reading netlink notifications"),
            };
            let changes = parse_changes(&data);
            if !changes.is_empty() {
                return Ok(changes);
            }
        }
    }
}

fn parse_changes(mut data: &[u8]) -> Vec<Change> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let Ok(msg) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(data) else { break };
        let len = (msg.header.length as usize).next_multiple_of(4);
        if len == 0 {
            break;
        }
        data = &data[len.min(data.len())..];
        let NetlinkPayload::InnerMessage(m) = msg.payload else { continue };
        let is_new = matches!(m, RouteNetlinkMessage::NewNeighbour(_));
        match m {
            RouteNetlinkMessage::NewNeighbour(n) | RouteNetlinkMessage::DelNeighbour(n) => {
                let new = is_new && live(&n);
                let address = n.attributes.iter().find_map(|a| match a {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => Some(IpAddr::V4(*v4)),
                    NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => Some(IpAddr::V6(*v6)),
                    _ => None,
                });
                let mac = n
                    .attributes
                    .iter()
                    .find_map(|a| if let NeighbourAttribute::LinkLocalAddress(m) = a { <[u8; 6]>::try_from(&m[..]).ok() } else { None })
                    .filter(|_| new && usable(n.header.state));
                if let Some(address) = address {
                    out.push(Change::Neighbour { ifindex: n.header.ifindex, address, mac });
                }
            }
            RouteNetlinkMessage::NewRoute(_) | RouteNetlinkMessage::DelRoute(_) => {
                if out.last() != Some(&Change::Route) {
                    out.push(Change::Route)
                }
            }
            RouteNetlinkMessage::NewLink(_) | RouteNetlinkMessage::DelLink(_) => {
                if out.last() != Some(&Change::Link) {
                    out.push(Change::Link)
                }
            }
            _ => {}
        }
    }
    out
}

/// Whether a neighbour message is a live entry (not a FAILED or INCOMPLETE one).
fn live(n: &NeighbourMessage) -> bool {
    !matches!(n.header.state, NeighbourState::Failed | NeighbourState::Incomplete)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn the_loopback_interface_of_this_namespace() {
        let lo = link(1).unwrap();
        assert_eq!(lo.name, "lo");
        assert_eq!(lo.mac, [0; 6]);
        assert!(lo.mtu >= 1500);
        assert_eq!(ifindex("lo").unwrap(), 1);
    }

    #[test]
    fn dumps_list_loopback_and_its_address() {
        assert!(links().unwrap().iter().any(|(i, name, _)| *i == 1 && name == "lo"));
        let lo = addresses().unwrap();
        assert!(
            lo.iter().any(|a| a.ifname == "lo" && a.address == IpAddr::from(Ipv4Addr::LOCALHOST) && a.prefix_len == 8),
            "{lo:?}"
        );
        assert_eq!(route_type(Ipv4Addr::LOCALHOST.into()), "local");
    }

    #[test]
    fn a_route_to_loopback_is_local() {
        let err = route_get("127.0.0.1".parse().unwrap()).unwrap_err().to_string();
        assert!(err.contains("is an address of this host"), "{err}");
    }

    #[test]
    fn notifications_are_parsed() {
        let mut n = NeighbourMessage::default();
        n.header.family = AddressFamily::Inet;
        n.header.ifindex = 7;
        n.header.state = NeighbourState::Reachable;
        n.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::Inet(Ipv4Addr::new(10, 0, 0, 2))));
        n.attributes.push(NeighbourAttribute::LinkLocalAddress(vec![2, 0, 0, 0, 0, 9]));
        let mut nl = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(RouteNetlinkMessage::NewNeighbour(n)));
        nl.finalize();
        let mut buf = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut buf);
        let mut r = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(RouteNetlinkMessage::NewRoute(RouteMessage::default())));
        r.finalize();
        let mut rbuf = vec![0u8; r.buffer_len()];
        r.serialize(&mut rbuf);
        buf.extend_from_slice(&rbuf);
        let mut l = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(RouteNetlinkMessage::NewLink(LinkMessage::default())));
        l.finalize();
        let mut lbuf = vec![0u8; l.buffer_len()];
        l.serialize(&mut lbuf);
        buf.extend_from_slice(&lbuf);
        assert_eq!(
            parse_changes(&buf),
            vec![
                Change::Neighbour { ifindex: 7, address: "10.0.0.2".parse().unwrap(), mac: Some([2, 0, 0, 0, 0, 9]) },
                Change::Route,
                Change::Link
            ]
        );
    }
}
