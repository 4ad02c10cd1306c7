//! The checks keepalived has and xlb's first checkers lacked: several URLs per HTTP
//! check with status code ranges and `virtualhost` (Host header and TLS SNI), `retry`
//! with `delay_before_retry`, a source address (`bindto`), UDP checks of either address
//! family (with keepalived's reply-optional mode), and the DNS_CHECK, SMTP_CHECK and
//! PING_CHECK kinds (keepalived/check/check_{http,dns,smtp,ping,udp}.c).
use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader},
    net::{TcpSocket, TcpStream, UdpSocket},
};

use super::{CheckKind, HealthConfig, Target};
use crate::ops::ServiceId;

pub(crate) fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// One URL of an HTTP(S) check (keepalived's `url { path digest status_code virtualhost }`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Url {
    pub path: String,
    /// Accepted statuses: codes and ranges, as `"200-299,302"` (keepalived's
    /// `status_code 200-299 302`). Default: any 2xx, as keepalived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// MD5 of the body, 32 hex digits (keepalived's `digest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
    /// The body contains this text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<String>,
    /// Host header and TLS server name for this URL (overrides the check's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtualhost: Option<String>,
}

/// Parses a status list: codes and FIRST-LAST ranges separated by commas or spaces.
pub fn parse_status_codes(s: &str) -> Result<Vec<(u16, u16)>> {
    let mut out = Vec::new();
    for part in s.split([',', ' ']).filter(|p| !p.is_empty()) {
        let code = |c: &str| match c.parse::<u16>() {
            Ok(v) if (100..=599).contains(&v) => Ok(v),
            _ => bail!("`{c}` is not an HTTP status code (100-599)"),
        };
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (code(a)?, code(b)?),
            None => (code(part)?, code(part)?),
        };
        if a > b {
            bail!("status range {part} is empty");
        }
        out.push((a, b));
    }
    if out.is_empty() {
        bail!("an empty status code list");
    }
    Ok(out)
}

/// The record types DNS_CHECK knows (keepalived's check_dns.c table), and their codes.
const DNS_TYPES: [(&str, u16); 8] =
    [("A", 1), ("NS", 2), ("CNAME", 5), ("SOA", 6), ("PTR", 12), ("MX", 15), ("TXT", 16), ("AAAA", 28)];

pub(super) fn validate(h: &HealthConfig, service: ServiceId) -> Result<()> {
    for (i, a) in h.also.iter().enumerate() {
        if !a.also.is_empty() {
            bail!("health `also` checks have no `also` of their own");
        }
        a.validate(service).with_context(|| format!("health `also` #{}", i + 1))?;
    }
    let http = matches!(h.kind, CheckKind::Http | CheckKind::Https);
    for (field, set, allowed) in [
        ("urls", !h.urls.is_empty(), http),
        ("virtualhost", h.virtualhost.is_some(), http),
        ("dns_type", h.dns_type.is_some(), h.kind == CheckKind::Dns),
        ("dns_name", h.dns_name.is_some(), h.kind == CheckKind::Dns),
        ("helo_name", h.helo_name.is_some(), h.kind == CheckKind::Smtp),
        ("bind_port", h.bind_port.is_some(), h.bindto.is_some()),
        ("reply_optional", h.reply_optional, h.kind == CheckKind::Udp && h.expect.is_none()),
    ] {
        if set && !allowed {
            let why = match field {
                "bind_port" => " without `bindto`",
                "reply_optional" => " with `expect`",
                _ => "",
            };
            bail!("health `{field}` does not apply to a {:?} check{why}", h.kind);
        }
    }
    if !h.urls.is_empty() && (h.path.is_some() || h.status.is_some() || h.contains.is_some() || h.md5.is_some()) {
        bail!("health `urls` replaces `path`, `status`, `contains` and `md5`: give one or the other");
    }
    for u in &h.urls {
        if !u.path.starts_with('/') {
            bail!("health url `{}`: the path must start with /", u.path);
        }
        if let Some(s) = &u.status {
            parse_status_codes(s).with_context(|| format!("health url {}", u.path))?;
        }
        if let Some(md5) = &u.md5
            && (md5.len() != 32 || !md5.chars().all(|c| c.is_ascii_hexdigit()))
        {
            bail!("health url {}: `md5` must be 32 hex digits", u.path);
        }
    }
    if let Some(t) = &h.dns_type
        && !DNS_TYPES.iter().any(|(n, _)| n.eq_ignore_ascii_case(t))
    {
        bail!("health `dns_type` {t} is not one of A, NS, CNAME, SOA, PTR, MX, TXT, AAAA");
    }
    if let Some(d) = h.delay_before_retry
        && !(d > 0.0 && d <= 86_400.0)
    {
        bail!("health `delay_before_retry` must be a number of seconds above 0");
    }
    if let (Some(b), Some(a)) = (h.bindto, h.address)
        && a.is_ipv4() != b.is_ipv4()
    {
        bail!("health `bindto` {b} is of another address family than the checked address {a}");
    }
    Ok(())
}

/// One attempt, bounded by the check's timeout (and those of its `also` checks).
async fn attempt(t: &Target) -> Result<Option<u32>> {
    let budget = t.config.timeout + t.config.also.iter().map(|a| a.timeout).sum::<f64>();
    match tokio::time::timeout(Duration::from_secs_f64(budget), super::check_once(t)).await {
        Ok(r) => r,
        Err(_) => Err(anyhow::anyhow!("no answer within {budget} s")),
    }
}

/// The check, then its `also` checks in turn, each within its own timeout; the first
/// failure fails the whole. The dynamic weight is the first one an exec check set.
async fn with_also(t: &Target) -> Result<Option<u32>> {
    let mut main = t.clone();
    let also = std::mem::take(&mut main.config.also);
    let mut weight = Box::pin(super::check_once(&main)).await?;
    for a in also {
        let addr = std::net::SocketAddr::new(a.address.unwrap_or(t.real), a.port.unwrap_or(t.addr.port()));
        let kind = a.kind;
        let timeout = a.timeout;
        let sub = Target { service: t.service, real: t.real, port: t.port, addr, source: t.source, config: a };
        let r = match tokio::time::timeout(Duration::from_secs_f64(timeout), Box::pin(super::check_once(&sub))).await {
            Ok(r) => r,
            Err(_) => Err(anyhow::anyhow!("no answer within {timeout} s")),
        };
        let w = r.with_context(|| format!("{kind:?} check"))?;
        weight = weight.or(w);
    }
    Ok(weight)
}

/// One check as keepalived counts it: a failed attempt on an up real is tried again
/// `retry` times, `delay_before_retry` seconds apart, before it counts (check_api.c's
/// retry_it). A down real gets one attempt per interval.
pub(super) async fn with_retries(t: &Target, up: bool) -> Result<Option<u32>> {
    let mut outcome = attempt(t).await;
    if up {
        for _ in 0..t.config.retry {
            if outcome.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_secs_f64(t.config.delay_before_retry.unwrap_or(1.0))).await;
            outcome = attempt(t).await;
        }
    }
    outcome
}

/// The checks this module runs; None leaves the check to health.rs's own.
pub(super) async fn check(t: &Target) -> Option<Result<Option<u32>>> {
    let c = &t.config;
    if !c.also.is_empty() {
        return Some(with_also(t).await);
    }
    let r = match c.kind {
        CheckKind::Dns => dns(t).await,
        CheckKind::Smtp => smtp(t).await,
        CheckKind::Ping => ping(t).await,
        CheckKind::Http | CheckKind::Https if !c.urls.is_empty() || c.virtualhost.is_some() || c.bindto.is_some() => {
            http(t).await
        }
        CheckKind::Tcp if c.bindto.is_some() => connect(t).await.map(drop),
        // Every UDP check: the socket takes the real's address family (IPv6 reals too).
        CheckKind::Udp => udp(t).await,
        _ => return None,
    };
    Some(r.map(|()| None))
}

/// A TCP connection to the check's address, from `bindto` if set.
async fn connect(t: &Target) -> Result<TcpStream> {
    let c = &t.config;
    // Without bindto, the source the daemon chose (never a VIP the real holds too).
    let Some(src) = c.bindto else { return crate::health::tcp_connect(t).await };
    let sock = if t.addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    sock.set_reuseaddr(true)?;
    let from = SocketAddr::new(src, c.bind_port.unwrap_or(0));
    sock.bind(from).with_context(|| format!("bind to {from}"))?;
    sock.connect(t.addr).await.with_context(|| format!("connect to {} from {from}", t.addr))
}

async fn http(t: &Target) -> Result<()> {
    let c = &t.config;
    let urls = if c.urls.is_empty() {
        vec![Url {
            path: c.path.clone().unwrap_or_else(|| "/".into()),
            status: Some(c.status.unwrap_or(200).to_string()),
            md5: c.md5.clone(),
            contains: c.contains.clone(),
            virtualhost: None,
        }]
    } else {
        c.urls.clone()
    };
    // keepalived fetches each URL on a connection of its own, in order; all must pass.
    for u in &urls {
        let host = u.virtualhost.as_deref().or(c.virtualhost.as_deref());
        let stream = connect(t).await?;
        let (status, body) = if c.kind == CheckKind::Https {
            let connector = tokio_rustls::TlsConnector::from(super::tls_config());
            let name = match host {
                Some(h) => rustls::pki_types::ServerName::try_from(h.to_string())
                    .with_context(|| format!("virtualhost `{h}` is not a TLS server name"))?,
                None => rustls::pki_types::ServerName::IpAddress(t.addr.ip().into()),
            };
            let tls = connector.connect(name, stream).await.context("TLS handshake")?;
            fetch(tls, t.addr, &u.path, host).await?
        } else {
            fetch(stream, t.addr, &u.path, host).await?
        };
        let ranges = parse_status_codes(u.status.as_deref().unwrap_or("200-299"))?;
        if !ranges.iter().any(|(a, b)| (*a..=*b).contains(&status)) {
            bail!("{}: HTTP status {status}, expected {}", u.path, u.status.as_deref().unwrap_or("200-299"));
        }
        if let Some(needle) = &u.contains
            && !String::from_utf8_lossy(&body).contains(needle.as_str())
        {
            bail!("{}: body does not contain {needle:?}", u.path);
        }
        if let Some(md5) = &u.md5 {
            use md5::Digest;
            let got: String = md5::Md5::digest(&body).iter().map(|b| format!("{b:02x}")).collect();
            if !got.eq_ignore_ascii_case(md5) {
                bail!("{}: body digest {got}, expected {md5}", u.path);
            }
        }
    }
    Ok(())
}

/// GET `path` (HTTP/1.0, as keepalived); returns the status and the body.
async fn fetch<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, addr: SocketAddr, path: &str, host: Option<&str>) -> Result<(u16, Vec<u8>)> {
    let host = match host {
        Some(h) => h.to_string(),
        None => addr.to_string(),
    };
    let req = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: xlb-health\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut response = Vec::new();
    let _ = (&mut s).take(8 << 20).read_to_end(&mut response).await;
    let Some(i) = response.windows(4).position(|w| w == b"\r\n\r\n") else { bail!("{path}: not an HTTP response") };
    let head = String::from_utf8_lossy(&response[..i]);
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("{path}: no HTTP status line"))?;
    Ok((status, response[i + 4..].to_vec()))
}

/// A DNS query over UDP (RFC 1035 4.1); up when the answer carries the query's id and
/// RCODE 0 (NOERROR), as keepalived's dns_final.
async fn dns(t: &Target) -> Result<()> {
    let c = &t.config;
    let qtype = c.dns_type.as_deref().unwrap_or("SOA");
    let code = DNS_TYPES.iter().find(|(n, _)| n.eq_ignore_ascii_case(qtype)).map(|(_, v)| *v).context("unknown dns_type")?;
    let name = c.dns_name.as_deref().unwrap_or(".");
    let id: u16 = (std::process::id() as u16) ^ (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.subsec_nanos() as u16);
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&0x0100u16.to_be_bytes()); // RD, as keepalived
    q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.').filter(|l| !l.is_empty()) {
        if label.len() > 63 {
            bail!("DNS label `{label}` is longer than 63 bytes");
        }
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&code.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes()); // IN
    let sock = udp_socket(t).await?;
    sock.send(&q).await.with_context(|| format!("sending a DNS query to {}", t.addr))?;
    let mut buf = [0u8; 4096];
    loop {
        let n = sock.recv(&mut buf).await.with_context(|| format!("no DNS answer from {}", t.addr))?;
        if n < 12 || buf[..2] != id.to_be_bytes() {
            continue; // not our answer
        }
        let flags = u16::from_be_bytes([buf[2], buf[3]]);
        if flags & 0x8000 == 0 {
            bail!("DNS: the reply is not a response");
        }
        match flags & 0xf {
            0 => return Ok(()),
            rcode => bail!("DNS {qtype} {name}: RCODE {rcode}"),
        }
    }
}

/// A UDP request (keepalived's UDP_CHECK): the reply must start with `expect`; with
/// `reply_optional`, no reply within the timeout is health, an ICMP error is not.
async fn udp(t: &Target) -> Result<()> {
    let c = &t.config;
    let sock = udp_socket(t).await?;
    sock.send(c.send.as_deref().unwrap_or_default().as_bytes()).await.with_context(|| format!("sending to {}", t.addr))?;
    let mut buf = vec![0u8; 65_536];
    // Leave a little of the check's time to tell silence from an error.
    let wait = Duration::from_secs_f64(c.timeout * 0.9);
    match tokio::time::timeout(wait, sock.recv(&mut buf)).await {
        Ok(Ok(n)) => {
            if let Some(expect) = &c.expect
                && !buf[..n].starts_with(expect.as_bytes())
            {
                bail!("UDP answer does not start with {expect:?}");
            }
            Ok(())
        }
        // A connected socket reports the ICMP port unreachable its datagram got.
        Ok(Err(e)) => Err(e).with_context(|| format!("no UDP answer from {}", t.addr)),
        Err(_) if c.reply_optional => Ok(()),
        Err(_) => bail!("no answer within {:.1} s from {}", wait.as_secs_f64(), t.addr),
    }
}

async fn udp_socket(t: &Target) -> Result<UdpSocket> {
    let from = match t.config.bindto {
        Some(b) => SocketAddr::new(b, t.config.bind_port.unwrap_or(0)),
        // The source the daemon chose (never a VIP the real holds too), else any.
        None => t.local(),
    };
    let sock = UdpSocket::bind(from).await.with_context(|| format!("bind to {from}"))?;
    sock.connect(t.addr).await?;
    Ok(sock)
}

/// SMTP: the server's 220 greeting, then HELO answered 250, then QUIT (keepalived's
/// check_smtp.c does the same exchange).
async fn smtp(t: &Target) -> Result<()> {
    let stream = connect(t).await?;
    let (r, mut w) = tokio::io::split(stream);
    let mut r = BufReader::new(r);
    let greeting = smtp_reply(&mut r).await?;
    if greeting != 220 {
        bail!("SMTP greeting {greeting}, expected 220");
    }
    let helo = t.config.helo_name.clone().unwrap_or_else(hostname);
    w.write_all(format!("HELO {helo}\r\n").as_bytes()).await?;
    let code = smtp_reply(&mut r).await?;
    if code != 250 {
        bail!("SMTP HELO answered {code}, expected 250");
    }
    let _ = w.write_all(b"QUIT\r\n").await;
    Ok(())
}

/// A reply is lines "NNN-…" ending with "NNN …" (RFC 5321 4.2): its code.
async fn smtp_reply<R: AsyncRead + Unpin>(r: &mut BufReader<R>) -> Result<u16> {
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            bail!("SMTP: connection closed");
        }
        let code: u16 = line.get(..3).and_then(|c| c.parse().ok()).context("SMTP: not a reply line")?;
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok(code);
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "localhost".into())
}

/// ICMP echo: through an unprivileged ping socket where the host allows it
/// (net.ipv4.ping_group_range), else a raw socket (root).
async fn ping(t: &Target) -> Result<()> {
    let dst = t.addr.ip();
    let src = t.config.bindto.or(t.source);
    // A little under the check's timeout, so that the ICMP error is the one reported.
    let wait = Duration::from_secs_f64(t.config.timeout * 0.9);
    tokio::task::spawn_blocking(move || ping_blocking(dst, src, wait)).await?
}

fn ping_blocking(dst: IpAddr, src: Option<IpAddr>, wait: Duration) -> Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let (family, proto) = match dst {
        IpAddr::V4(_) => (libc::AF_INET, libc::IPPROTO_ICMP),
        IpAddr::V6(_) => (libc::AF_INET6, libc::IPPROTO_ICMPV6),
    };
    // SAFETY: plain socket(2) calls; the fd is owned right away.
    let mut raw = false;
    let mut fd = unsafe { libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, proto) };
    if fd < 0 {
        raw = true;
        fd = unsafe { libc::socket(family, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto) };
    }
    if fd < 0 {
        bail!("no ICMP socket (unprivileged ping not allowed and not root): {}", std::io::Error::last_os_error());
    }
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let tv = libc::timeval { tv_sec: wait.as_secs() as _, tv_usec: wait.subsec_micros() as _ };
    // SAFETY: setsockopt with a timeval of the right size.
    unsafe {
        libc::setsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv as *const _ as *const _, size_of_val(&tv) as u32)
    };
    let (sa, len) = sockaddr(SocketAddr::new(dst, 0));
    if let Some(src) = src {
        let (ssa, slen) = sockaddr(SocketAddr::new(src, 0));
        // SAFETY: ssa is a sockaddr_storage of slen valid bytes.
        if unsafe { libc::bind(fd.as_raw_fd(), &ssa as *const _ as *const _, slen) } < 0 {
            bail!("bind to {src}: {}", std::io::Error::last_os_error());
        }
    }
    let ident = (std::process::id() as u16).to_be_bytes();
    let seq = 1u16.to_be_bytes();
    let (req_type, reply_type) = if dst.is_ipv4() { (8u8, 0u8) } else { (128u8, 129u8) };
    let mut pkt = vec![req_type, 0, 0, 0, ident[0], ident[1], seq[0], seq[1]];
    pkt.extend_from_slice(b"xlb-health-ping");
    if dst.is_ipv4() {
        // The kernel fills in ICMPv6 checksums itself, and those of ping sockets.
        let sum = checksum(&pkt);
        pkt[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    // SAFETY: sendto with a buffer and a sockaddr of the stated lengths.
    if unsafe { libc::sendto(fd.as_raw_fd(), pkt.as_ptr() as *const _, pkt.len(), 0, &sa as *const _ as *const _, len) } < 0 {
        bail!("ICMP echo to {dst}: {}", std::io::Error::last_os_error());
    }
    let deadline = std::time::Instant::now() + wait;
    let mut buf = [0u8; 1500];
    while std::time::Instant::now() < deadline {
        let mut from: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut flen = size_of::<libc::sockaddr_storage>() as u32;
        // SAFETY: recvfrom into buf and from, with their sizes.
        let n = unsafe {
            libc::recvfrom(fd.as_raw_fd(), buf.as_mut_ptr() as *mut _, buf.len(), 0, &mut from as *mut _ as *mut _, &mut flen)
        };
        if n < 0 {
            bail!("no ICMP echo reply from {dst} within {} s", wait.as_secs_f64());
        }
        let mut icmp = &buf[..n as usize];
        // A raw IPv4 socket hands over the IP header too.
        if raw && dst.is_ipv4() {
            let ihl = icmp.first().map_or(0, |b| (b & 0xf) as usize * 4);
            if icmp.len() < ihl + 8 || icmp[12..16] != match dst { IpAddr::V4(a) => a.octets(), _ => unreachable!() } {
                continue;
            }
            icmp = &icmp[ihl..];
        }
        if icmp.len() >= 8 && icmp[0] == reply_type && icmp[6..8] == seq && (!raw || icmp[4..6] == ident) {
            if raw && dst.is_ipv6() && from_addr(&from) != Some(dst) {
                continue;
            }
            return Ok(());
        }
    }
    bail!("no ICMP echo reply from {dst} within {} s", wait.as_secs_f64())
}

fn from_addr(ss: &libc::sockaddr_storage) -> Option<IpAddr> {
    match ss.ss_family as i32 {
        libc::AF_INET6 => {
            // SAFETY: the family says it is a sockaddr_in6.
            let sin6 = unsafe { &*(ss as *const _ as *const libc::sockaddr_in6) };
            Some(IpAddr::from(sin6.sin6_addr.s6_addr))
        }
        libc::AF_INET => {
            let sin = unsafe { &*(ss as *const _ as *const libc::sockaddr_in) };
            Some(IpAddr::from(u32::from_be(sin.sin_addr.s_addr).to_be_bytes()))
        }
        _ => None,
    }
}

fn sockaddr(a: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is large enough for either family.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match a {
        SocketAddr::V4(v4) => {
            let sin = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as _;
            sin.sin_port = v4.port().to_be();
            sin.sin_addr.s_addr = u32::from_ne_bytes(v4.ip().octets());
            (ss, size_of::<libc::sockaddr_in>() as _)
        }
        SocketAddr::V6(v6) => {
            let sin6 = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as _;
            sin6.sin6_port = v6.port().to_be();
            sin6.sin6_addr.s6_addr = v6.ip().octets();
            sin6.sin6_scope_id = v6.scope_id();
            (ss, size_of::<libc::sockaddr_in6>() as _)
        }
    }
}

/// The Internet checksum (RFC 1071).
fn checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = b.chunks(2).map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_code_lists_and_ranges() {
        assert_eq!(parse_status_codes("200-299,302").unwrap(), vec![(200, 299), (302, 302)]);
        assert_eq!(parse_status_codes("200 301").unwrap(), vec![(200, 200), (301, 301)]);
        assert!(parse_status_codes("299-200").is_err());
        assert!(parse_status_codes("abc").is_err());
        assert!(parse_status_codes("").is_err());
    }

    #[test]
    fn icmp_checksum() {
        // An echo request with id 0x1234, seq 1 and no payload.
        let pkt = [8u8, 0, 0, 0, 0x12, 0x34, 0, 1];
        assert_eq!(checksum(&pkt), 0xe5ca);
    }
}
