//! A minimal rtnetlink client: the kernel's route to an address (what `ip route get`
//! asks) and its neighbour entries, plus an interface's MAC and MTU. Everything is
//! answered for the network namespace of the calling thread (unlike /sys, which shows
//! the namespace it was mounted in).
use std::{
    ffi::CStr,
    io,
    mem::size_of,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use anyhow::{Context, Result, bail};

const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;

const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PREFSRC: u16 = 7;
const RTA_METRICS: u16 = 8;
const RTAX_MTU: u16 = 2;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;

const RTN_UNICAST: u8 = 1;
const RTN_LOCAL: u8 = 2;

/// Neighbour states whose MAC can be used (NUD_REACHABLE, STALE, DELAY, PROBE,
/// NOARP, PERMANENT).
const NUD_USABLE: u16 = 0x02 | 0x04 | 0x08 | 0x10 | 0x40 | 0x80;

const NLMSG_HDRLEN: usize = 16;
/// struct rtmsg and struct ndmsg are both 12 bytes.
const RTMSG_LEN: usize = 12;
const NDMSG_LEN: usize = 12;

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

fn family(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => libc::AF_INET as u8,
        IpAddr::V6(_) => libc::AF_INET6 as u8,
    }
}

fn octets(addr: IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn addr_from(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?))),
        16 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?))),
        _ => None,
    }
}

fn push_attr(msg: &mut Vec<u8>, kind: u16, data: &[u8]) {
    let len = 4 + data.len();
    msg.extend_from_slice(&(len as u16).to_ne_bytes());
    msg.extend_from_slice(&kind.to_ne_bytes());
    msg.extend_from_slice(data);
    msg.resize(msg.len().next_multiple_of(4), 0);
}

/// (type, payload) of each attribute in `data`.
fn attrs(mut data: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while data.len() >= 4 {
        let len = u16::from_ne_bytes([data[0], data[1]]) as usize;
        let kind = u16::from_ne_bytes([data[2], data[3]]) & 0x3fff; // without NLA_F_NESTED / BYTEORDER
        if len < 4 || len > data.len() {
            break;
        }
        out.push((kind, &data[4..len]));
        data = &data[len.next_multiple_of(4).min(data.len())..];
    }
    out
}

fn u32_of(data: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(data.get(..4)?.try_into().ok()?))
}

/// Sends one request (`header` then attributes already in `body`) and returns the
/// payload of the answer of type `answer`; Ok(None) if the kernel answered with
/// `absent` as the error (for example ENOENT: no such neighbour).
fn request(kind: u16, body: &[u8], answer: u16, absent: &[i32]) -> Result<Option<Vec<u8>>> {
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
    if fd < 0 {
        return Err(io::Error::last_os_error()).context("opening a netlink socket");
    }
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let seq = 1u32;
    let mut msg = Vec::with_capacity(NLMSG_HDRLEN + body.len());
    msg.extend_from_slice(&((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes());
    msg.extend_from_slice(&kind.to_ne_bytes());
    msg.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    msg.extend_from_slice(&seq.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(body);
    let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as u16;
    let sent = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&raw const kernel).cast(),
            size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error()).context("sending a netlink request");
    }
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error()).context("reading a netlink answer");
        }
        let mut data = &buf[..n as usize];
        while data.len() >= NLMSG_HDRLEN {
            let len = u32::from_ne_bytes(data[0..4].try_into().unwrap()) as usize;
            let kind = u16::from_ne_bytes([data[4], data[5]]);
            let msg_seq = u32::from_ne_bytes(data[8..12].try_into().unwrap());
            if len < NLMSG_HDRLEN || len > data.len() {
                bail!("malformed netlink answer");
            }
            let payload = &data[NLMSG_HDRLEN..len];
            if msg_seq == seq {
                if kind == NLMSG_ERROR {
                    let errno = -i32::from_ne_bytes(payload.get(..4).context("short netlink error")?.try_into().unwrap());
                    if absent.contains(&errno) {
                        return Ok(None);
                    }
                    return Err(io::Error::from_raw_os_error(errno).into());
                }
                if kind == answer {
                    return Ok(Some(payload.to_vec()));
                }
            }
            data = &data[len.next_multiple_of(4).min(data.len())..];
        }
    }
}

/// The route the kernel uses to send to `dst` (`ip route get DST`). None when there is
/// no route, or `dst` is not reachable by unicast (unreachable, blackhole, …).
pub fn route_get(dst: IpAddr) -> Result<Option<Route>> {
    let mut body = vec![family(dst), if dst.is_ipv4() { 32 } else { 128 }];
    body.resize(RTMSG_LEN, 0);
    push_attr(&mut body, RTA_DST, &octets(dst));
    let absent = [libc::ENETUNREACH, libc::EHOSTUNREACH, libc::EINVAL, libc::EACCES];
    let Some(answer) = request(RTM_GETROUTE, &body, RTM_NEWROUTE, &absent).with_context(|| format!("route lookup for {dst}"))? else {
        return Ok(None);
    };
    let Some(rtm) = answer.get(..RTMSG_LEN) else { bail!("short route answer for {dst}") };
    // rtm_type is the last byte before rtm_flags.
    let kind = rtm[7];
    if kind == RTN_LOCAL {
        bail!("{dst} is an address of this host");
    }
    if kind != RTN_UNICAST {
        return Ok(None);
    }
    let mut route = Route { oif: 0, gateway: None, prefsrc: None, mtu: None };
    for (kind, data) in attrs(&answer[RTMSG_LEN..]) {
        match kind {
            RTA_OIF => route.oif = u32_of(data).unwrap_or(0),
            RTA_GATEWAY => route.gateway = addr_from(data),
            RTA_PREFSRC => route.prefsrc = addr_from(data),
            RTA_METRICS => {
                route.mtu = attrs(data).into_iter().find(|(k, _)| *k == RTAX_MTU).and_then(|(_, d)| u32_of(d)).filter(|&m| m > 0)
            }
            _ => {}
        }
    }
    if route.oif == 0 {
        return Ok(None);
    }
    Ok(Some(route))
}

/// The MAC of `addr`'s neighbour entry on interface `ifindex`, if the entry is usable.
pub fn neighbour(ifindex: u32, addr: IpAddr) -> Result<Option<[u8; 6]>> {
    let mut body = vec![family(addr), 0, 0, 0];
    body.extend_from_slice(&(ifindex as i32).to_ne_bytes());
    body.resize(NDMSG_LEN, 0);
    push_attr(&mut body, NDA_DST, &octets(addr));
    let Some(answer) = request(RTM_GETNEIGH, &body, RTM_NEWNEIGH, &[libc::ENOENT]).with_context(|| format!("neighbour lookup for {addr}"))?
    else {
        return Ok(None);
    };
    let Some(ndm) = answer.get(..NDMSG_LEN) else { bail!("short neighbour answer for {addr}") };
    let state = u16::from_ne_bytes([ndm[8], ndm[9]]);
    if state & NUD_USABLE == 0 {
        return Ok(None);
    }
    let mac = attrs(&answer[NDMSG_LEN..])
        .into_iter()
        .find(|(k, _)| *k == NDA_LLADDR)
        .and_then(|(_, d)| <[u8; 6]>::try_from(d).ok())
        .filter(|m| *m != [0; 6]);
    Ok(mac)
}

const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
/// struct ifinfomsg.
const IFINFOMSG_LEN: usize = 16;
const IFLA_LINK: u16 = 5;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_LINK_NETNSID: u16 = 37;
const IFLA_XDP: u16 = 43;
const IFLA_XDP_ATTACHED: u16 = 2;
const IFLA_TARGET_NETNSID: u16 = 46;

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
}

/// XDP_ATTACHED_DRV (linux/if_link.h).
pub const XDP_ATTACHED_DRV: u8 = 1;
/// XDP_ATTACHED_MULTI: programs in more than one mode, native among them possibly.
pub const XDP_ATTACHED_MULTI: u8 = 4;

/// RTM_GETLINK for interface `ifindex`, in this namespace or (`netnsid`, as a peer's
/// IFLA_LINK_NETNSID gives it) in another one (IFLA_TARGET_NETNSID, Linux 4.20+).
pub fn link_info(ifindex: u32, netnsid: Option<i32>) -> Result<LinkInfo> {
    let mut body = vec![libc::AF_UNSPEC as u8, 0, 0, 0];
    body.extend_from_slice(&(ifindex as i32).to_ne_bytes());
    body.resize(IFINFOMSG_LEN, 0);
    if let Some(id) = netnsid {
        push_attr(&mut body, IFLA_TARGET_NETNSID, &id.to_ne_bytes());
    }
    let answer = request(RTM_GETLINK, &body, RTM_NEWLINK, &[])
        .with_context(|| format!("link lookup for ifindex {ifindex}"))?
        .context("no answer to RTM_GETLINK")?;
    let mut info = LinkInfo { kind: None, link: None, link_netnsid: None, xdp_attached: 0 };
    for (kind, data) in attrs(answer.get(IFINFOMSG_LEN..).context("short link answer")?) {
        match kind {
            IFLA_LINK => info.link = u32_of(data),
            IFLA_LINK_NETNSID => info.link_netnsid = u32_of(data).map(|v| v as i32).filter(|&v| v >= 0),
            IFLA_LINKINFO => {
                info.kind = attrs(data)
                    .into_iter()
                    .find(|(k, _)| *k == IFLA_INFO_KIND)
                    .map(|(_, d)| String::from_utf8_lossy(d).trim_end_matches('\0').to_string())
            }
            IFLA_XDP => {
                info.xdp_attached = attrs(data).into_iter().find(|(k, _)| *k == IFLA_XDP_ATTACHED).and_then(|(_, d)| d.first().copied()).unwrap_or(0)
            }
            _ => {}
        }
    }
    Ok(info)
}

/// The index of the interface named `name`.
pub fn ifindex(name: &str) -> Result<u32> {
    let c = std::ffi::CString::new(name)?;
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => bail!("no interface named {name}"),
        i => Ok(i),
    }
}

/// An interface's name, MAC and MTU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub name: String,
    pub mac: [u8; 6],
    pub mtu: u32,
}

pub fn link(ifindex: u32) -> Result<Link> {
    let mut name = [0 as libc::c_char; libc::IF_NAMESIZE];
    if unsafe { libc::if_indextoname(ifindex, name.as_mut_ptr()) }.is_null() {
        return Err(io::Error::last_os_error()).with_context(|| format!("no interface with index {ifindex}"));
    }
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error()).context("opening a socket");
    }
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    req.ifr_name = name;
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) } != 0 {
        return Err(io::Error::last_os_error()).context("reading an interface's MAC");
    }
    let hw = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    let mac = [hw[0], hw[1], hw[2], hw[3], hw[4], hw[5]].map(|b| b as u8);
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFMTU, &mut req) } != 0 {
        return Err(io::Error::last_os_error()).context("reading an interface's MTU");
    }
    let mtu = unsafe { req.ifr_ifru.ifru_mtu } as u32;
    let name = unsafe { CStr::from_ptr(name.as_ptr()) }.to_string_lossy().into_owned();
    Ok(Link { name, mac, mtu })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_parsed_with_padding_and_nesting() {
        let mut msg = Vec::new();
        push_attr(&mut msg, RTA_OIF, &7u32.to_ne_bytes());
        push_attr(&mut msg, RTA_GATEWAY, &[10, 0, 0, 1]);
        push_attr(&mut msg, 99, &[1, 2, 3]); // padded to 8 bytes
        let mut metrics = Vec::new();
        push_attr(&mut metrics, RTAX_MTU, &1400u32.to_ne_bytes());
        push_attr(&mut msg, RTA_METRICS | 0x8000, &metrics); // NLA_F_NESTED set
        let parsed = attrs(&msg);
        assert_eq!(parsed.len(), 4);
        assert_eq!(u32_of(parsed[0].1), Some(7));
        assert_eq!(addr_from(parsed[1].1), Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))));
        assert_eq!(parsed[2], (99, &[1u8, 2, 3][..]));
        assert_eq!(parsed[3].0, RTA_METRICS);
        assert_eq!(attrs(parsed[3].1)[0], (RTAX_MTU, &1400u32.to_ne_bytes()[..]));
        // A truncated attribute ends the list instead of reading past it.
        assert_eq!(attrs(&msg[..6]).len(), 0);
    }

    #[test]
    fn the_loopback_interface_of_this_namespace() {
        let lo = link(1).unwrap();
        assert_eq!(lo.name, "lo");
        assert_eq!(lo.mac, [0; 6]);
        assert!(lo.mtu >= 1500);
    }
}
