//! Real servers' MAC addresses come from the kernel's neighbour table, never from the user.
use std::{
    ffi::CString,
    net::{Ipv4Addr, UdpSocket},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use crate::ops::L2Target;

/// ATF_COM: the entry is complete (the MAC is known).
const ATF_COM: u32 = 0x2;

/// One row of /proc/net/arp.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArpEntry {
    pub ip: Ipv4Addr,
    pub mac: [u8; 6],
    pub complete: bool,
    pub device: String,
}

/// Parses /proc/net/arp text: `IP address  HW type  Flags  HW address  Mask  Device`.
pub fn parse_proc_net_arp(text: &str) -> Vec<ArpEntry> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 6 {
                return None;
            }
            let flags = u32::from_str_radix(f[2].trim_start_matches("0x"), 16).ok()?;
            Some(ArpEntry {
                ip: f[0].parse().ok()?,
                mac: parse_mac(f[3])?,
                complete: flags & ATF_COM != 0,
                device: f[5].to_string(),
            })
        })
        .collect()
}

pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// The complete neighbour entry for `ip` in this network namespace, if any.
pub fn lookup(ip: Ipv4Addr) -> Result<Option<L2Target>> {
    let text = std::fs::read_to_string("/proc/net/arp").context("reading /proc/net/arp")?;
    for e in parse_proc_net_arp(&text) {
        if e.ip == ip && e.complete && e.mac != [0; 6] {
            return Ok(Some(L2Target { mac: Some(e.mac), ifindex: ifindex(&e.device)? }));
        }
    }
    Ok(None)
}

/// Asks the kernel to resolve `ip`: an empty UDP datagram to the discard port makes it
/// send an ARP request (the datagram itself is harmless if it ever arrives). False when
/// there is no route to `ip` at all: then no answer can come, so nobody should wait.
pub fn solicit(ip: Ipv4Addr) -> bool {
    UdpSocket::bind("0.0.0.0:0").and_then(|sock| sock.send_to(&[], (ip, 9))).is_ok()
}

/// Looks `ip` up, soliciting and waiting up to `wait` if it is not resolved yet.
pub fn resolve(ip: Ipv4Addr, wait: Duration) -> Result<Option<L2Target>> {
    if let Some(t) = lookup(ip)? {
        return Ok(Some(t));
    }
    if !solicit(ip) {
        return Ok(None);
    }
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        if let Some(t) = lookup(ip)? {
            return Ok(Some(t));
        }
    }
    Ok(None)
}

/// Resolves many addresses with one solicitation round and at most `wait` in all.
pub fn resolve_many(ips: &[Ipv4Addr], wait: Duration) -> Vec<Option<L2Target>> {
    let mut found: Vec<Option<L2Target>> = ips.iter().map(|ip| lookup(*ip).ok().flatten()).collect();
    let waiting: Vec<bool> = ips.iter().zip(&found).map(|(ip, f)| f.is_none() && solicit(*ip)).collect();
    let deadline = Instant::now() + wait;
    let pending = |found: &[Option<L2Target>]| found.iter().zip(&waiting).any(|(f, w)| f.is_none() && *w);
    while pending(&found) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        for ((ip, f), w) in ips.iter().zip(found.iter_mut()).zip(&waiting) {
            if f.is_none() && *w {
                *f = lookup(*ip).ok().flatten();
            }
        }
    }
    found
}

pub fn ifindex(name: &str) -> Result<u32> {
    let c = CString::new(name)?;
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => anyhow::bail!("no interface named {name}"),
        i => Ok(i),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_net_arp() {
        let text = "IP address       HW type     Flags       HW address            Mask     Device\n\
                    10.0.0.11        0x1         0x2         52:54:00:12:34:56     *        eth0\n\
                    10.0.0.12        0x1         0x0         00:00:00:00:00:00     *        eth0\n";
        let rows = parse_proc_net_arp(text);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].ip, Ipv4Addr::new(10, 0, 0, 11));
        assert_eq!(rows[0].mac, [0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        assert!(rows[0].complete);
        assert!(!rows[1].complete);
        assert_eq!(rows[1].device, "eth0");
    }

    #[test]
    fn mac_parsing_is_strict() {
        assert_eq!(parse_mac("aa:bb:cc:dd:ee:ff"), Some([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]));
        assert_eq!(parse_mac("aa:bb:cc:dd:ee"), None);
        assert_eq!(parse_mac("aa:bb:cc:dd:ee:ff:00"), None);
        assert_eq!(parse_mac("zz:bb:cc:dd:ee:ff"), None);
    }
}
