//! Fixture frames for the fast path, in the style of Katran's test fixtures: one table
//! of cases (name, input frame, expected verdict, expected output, expected counter)
//! shared by the BPF_PROG_TEST_RUN tests and, later, the benchmarks.
//!
//! Expected outputs are built independently from the inputs (the builder is called again
//! with the MACs the fast path should write), never by patching bytes with the code under test.
use std::net::Ipv4Addr;

use anyhow::Result;
use lb_common::{PROTO_TCP, PROTO_UDP, counter};

use crate::{
    maps::Maps,
    ops::{self, L2Target, Proto, RealOptions, Scheduler, Service, ServiceId, ServiceOptions},
};

pub use crate::loader::{XDP_DROP, XDP_PASS, XDP_TX};

pub const CLIENT_MAC: [u8; 6] = [0x02, 0xc1, 0, 0, 0, 0x10];
pub const DIRECTOR_MAC: [u8; 6] = [0x02, 0xd1, 0, 0, 0, 0x02];
pub const RS1_MAC: [u8; 6] = [0x02, 0x5e, 0, 0, 0, 0x11];
pub const RS2_MAC: [u8; 6] = [0x02, 0x5e, 0, 0, 0, 0x12];
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 50);
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
pub const RS1_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 11);
pub const RS2_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 12);

/// TCP VIP:80 → rs1 only (exact outputs do not depend on scheduling order).
pub const WEB: Service = Service { proto: Proto::Tcp, vip: VIP, port: 80 };
/// UDP VIP:53 → rs2 only.
pub const DNS: Service = Service { proto: Proto::Udp, vip: VIP, port: 53 };
/// TCP VIP:8080 → rs1 and rs2, round robin (affinity and distribution tests).
pub const POOL: Service = Service { proto: Proto::Tcp, vip: VIP, port: 8080 };

pub const RS1: L2Target = L2Target { mac: Some(RS1_MAC), ifindex: 1 };
pub const RS2: L2Target = L2Target { mac: Some(RS2_MAC), ifindex: 1 };

/// A round-robin service option set.
pub fn rr() -> ServiceOptions {
    ServiceOptions { scheduler: Scheduler::Rr, ..Default::default() }
}

/// Installs the fixture services in a fresh instance's maps.
pub fn install_services(maps: &mut Maps) -> Result<()> {
    let one = RealOptions::default();
    ops::add_service(maps, ServiceId::Addr(WEB), rr())?;
    ops::add_real(maps, ServiceId::Addr(WEB), RS1_IP, one, RS1)?;
    ops::add_service(maps, ServiceId::Addr(DNS), rr())?;
    ops::add_real(maps, ServiceId::Addr(DNS), RS2_IP, one, RS2)?;
    ops::add_service(maps, ServiceId::Addr(POOL), rr())?;
    ops::add_real(maps, ServiceId::Addr(POOL), RS1_IP, one, RS1)?;
    ops::add_real(maps, ServiceId::Addr(POOL), RS2_IP, one, RS2)?;
    Ok(())
}

/// RFC 1071 internet checksum.
pub fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = if chunk.len() == 2 { u16::from_be_bytes([chunk[0], chunk[1]]) } else { u16::from_be_bytes([chunk[0], 0]) };
        sum += word as u32;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An Ethernet/IPv4/TCP-or-UDP frame, with valid IP and L4 checksums.
#[derive(Clone, Debug)]
pub struct Frame {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    /// IPv4 options (padded to a multiple of 4 bytes by the caller).
    pub ip_options: Vec<u8>,
    /// Flags and fragment offset field of the IPv4 header.
    pub frag: u16,
    /// TCP flags (SYN = 0x02, ACK = 0x10, …).
    pub tcp_flags: u8,
    pub payload: Vec<u8>,
}

impl Frame {
    /// A client's TCP SYN to `dst:dport` from `sport`.
    pub fn tcp(dst: Ipv4Addr, dport: u16, sport: u16) -> Self {
        Self {
            dst_mac: DIRECTOR_MAC,
            src_mac: CLIENT_MAC,
            src: CLIENT_IP,
            dst,
            proto: PROTO_TCP,
            sport,
            dport,
            ip_options: Vec::new(),
            frag: 0x4000, // DF
            tcp_flags: 0x02,
            payload: Vec::new(),
        }
    }

    pub fn udp(dst: Ipv4Addr, dport: u16, sport: u16) -> Self {
        Self { proto: PROTO_UDP, tcp_flags: 0, payload: b"query".to_vec(), ..Self::tcp(dst, dport, sport) }
    }

    /// The same frame as direct routing should emit it towards `real_mac`.
    pub fn routed_to(&self, real_mac: [u8; 6]) -> Self {
        Self { dst_mac: real_mac, src_mac: self.dst_mac, ..self.clone() }
    }

    pub fn bytes(&self) -> Vec<u8> {
        let l4 = self.l4_bytes();
        let ihl = 20 + self.ip_options.len();
        let mut ip = Vec::with_capacity(ihl);
        ip.push(0x40 | (ihl / 4) as u8);
        ip.push(0);
        ip.extend_from_slice(&((ihl + l4.len()) as u16).to_be_bytes());
        ip.extend_from_slice(&0x1234u16.to_be_bytes());
        ip.extend_from_slice(&self.frag.to_be_bytes());
        ip.push(64);
        ip.push(self.proto);
        ip.extend_from_slice(&[0, 0]);
        ip.extend_from_slice(&self.src.octets());
        ip.extend_from_slice(&self.dst.octets());
        ip.extend_from_slice(&self.ip_options);
        let check = internet_checksum(&ip);
        ip[10..12].copy_from_slice(&check.to_be_bytes());
        ethernet(self.dst_mac, self.src_mac, 0x0800, &[ip, l4].concat())
    }

    fn l4_bytes(&self) -> Vec<u8> {
        let mut l4 = Vec::new();
        l4.extend_from_slice(&self.sport.to_be_bytes());
        l4.extend_from_slice(&self.dport.to_be_bytes());
        let check_at = if self.proto == PROTO_TCP {
            l4.extend_from_slice(&1000u32.to_be_bytes()); // seq
            l4.extend_from_slice(&0u32.to_be_bytes()); // ack
            l4.push(5 << 4);
            l4.push(self.tcp_flags);
            l4.extend_from_slice(&64240u16.to_be_bytes());
            l4.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent
            16
        } else {
            l4.extend_from_slice(&((8 + self.payload.len()) as u16).to_be_bytes());
            l4.extend_from_slice(&[0, 0]);
            6
        };
        l4.extend_from_slice(&self.payload);
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&self.src.octets());
        pseudo.extend_from_slice(&self.dst.octets());
        pseudo.push(0);
        pseudo.push(self.proto);
        pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        pseudo.extend_from_slice(&l4);
        let check = internet_checksum(&pseudo);
        l4[check_at..check_at + 2].copy_from_slice(&check.to_be_bytes());
        l4
    }
}

pub fn ethernet(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// What the fast path must do with a case's frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expected {
    /// The frame leaves exactly as it came.
    Unchanged,
    /// The frame leaves as these bytes.
    Frame(Vec<u8>),
}

#[derive(Clone, Debug)]
pub struct Case {
    pub name: &'static str,
    pub input: Vec<u8>,
    pub verdict: u32,
    pub output: Expected,
    /// The verdict counter (lb_common::counter) this frame must increment by one.
    pub counter: u32,
}

/// Every fixture table, in the order the bench replays them (later cases may rely on
/// state earlier ones leave, as in one test run). New tables are added here.
pub fn all_cases() -> Vec<Case> {
    dr_cases()
}

/// The direct-routing fixture table, against [`install_services`].
pub fn dr_cases() -> Vec<Case> {
    let syn = Frame::tcp(VIP, 80, 40000);
    let with_options = Frame {
        ip_options: vec![0x01, 0x01, 0x01, 0x00, 0x94, 0x04, 0x00, 0x00, 0x01, 0x01, 0x01, 0x00],
        ..Frame::tcp(VIP, 80, 40001)
    };
    let stray_ack = Frame { tcp_flags: 0x10, payload: b"GET / HTTP/1.0\r\n\r\n".to_vec(), ..Frame::tcp(VIP, 80, 40005) };
    let dns = Frame::udp(VIP, 53, 5353);
    let pass = |name, input: Vec<u8>, counter| Case { name, input, verdict: XDP_PASS, output: Expected::Unchanged, counter };
    let mut bad_ihl = Frame::tcp(VIP, 80, 40002).bytes();
    bad_ihl[14] = 0x44;
    let mut bad_version = Frame::tcp(VIP, 80, 40003).bytes();
    bad_version[14] = 0x65;
    let mut icmp = Frame::tcp(VIP, 80, 40004).bytes();
    icmp[14 + 9] = 1;
    vec![
        Case {
            name: "tcp syn to VIP:80 is routed to rs1",
            input: syn.bytes(),
            verdict: XDP_TX,
            output: Expected::Frame(syn.routed_to(RS1_MAC).bytes()),
            counter: counter::TX_DR,
        },
        Case {
            name: "tcp syn with 12 bytes of IP options (IHL 8) is routed to rs1",
            input: with_options.bytes(),
            verdict: XDP_TX,
            output: Expected::Frame(with_options.routed_to(RS1_MAC).bytes()),
            counter: counter::TX_DR,
        },
        Case {
            name: "udp to VIP:53 is routed to rs2",
            input: dns.bytes(),
            verdict: XDP_TX,
            output: Expected::Frame(dns.routed_to(RS2_MAC).bytes()),
            counter: counter::TX_DR,
        },
        pass("tcp data with no connection passes to the kernel (which resets it)", stray_ack.bytes(), counter::PASS_NO_CONN),
        pass("tcp to another address passes", Frame::tcp(Ipv4Addr::new(10, 0, 0, 2), 80, 40010).bytes(), counter::PASS_NOT_VIP),
        pass("tcp to VIP on a port with no service passes", Frame::tcp(VIP, 443, 40011).bytes(), counter::PASS_NOT_VIP),
        pass("udp to a tcp-only VIP:port passes", Frame::udp(VIP, 80, 40012).bytes(), counter::PASS_NOT_VIP),
        pass(
            "ARP request passes",
            ethernet([0xff; 6], CLIENT_MAC, 0x0806, &[0, 1, 8, 0, 6, 4, 0, 1, 2, 0xc1, 0, 0, 0, 0x10, 172, 30, 0, 50, 0, 0, 0, 0, 0, 0, 10, 0, 0, 100]),
            counter::PASS_NOT_IPV4,
        ),
        pass("IPv6 frame passes", ethernet(DIRECTOR_MAC, CLIENT_MAC, 0x86dd, &[0x60; 60]), counter::PASS_NOT_IPV4),
        pass("ICMP to VIP passes", icmp, counter::PASS_NOT_TCP_UDP),
        pass("IHL 4 passes", bad_ihl, counter::PASS_BAD_HEADER),
        pass("IP version 6 under ethertype IPv4 passes", bad_version, counter::PASS_BAD_HEADER),
        pass("first fragment (MF) to VIP:80 passes", Frame { frag: 0x2000, ..Frame::tcp(VIP, 80, 40020) }.bytes(), counter::PASS_FRAGMENT),
        pass("non-first fragment to VIP passes", Frame { frag: 0x00b9, ..Frame::tcp(VIP, 80, 40021) }.bytes(), counter::PASS_FRAGMENT),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_verify_to_zero() {
        let f = Frame::tcp(VIP, 80, 1234).bytes();
        // A header that carries its checksum sums to zero.
        assert_eq!(internet_checksum(&f[14..34]), 0);
        let f = Frame::udp(VIP, 53, 1234);
        let b = f.bytes();
        assert_eq!(internet_checksum(&b[14..34]), 0);
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&b[26..34]);
        pseudo.extend_from_slice(&[0, PROTO_UDP, 0, (b.len() - 34) as u8]);
        pseudo.extend_from_slice(&b[34..]);
        assert_eq!(internet_checksum(&pseudo), 0);
    }

    #[test]
    fn routed_frame_differs_only_in_macs() {
        let f = Frame::tcp(VIP, 80, 1234);
        let (a, b) = (f.bytes(), f.routed_to(RS1_MAC).bytes());
        assert_eq!(a[12..], b[12..]);
        assert_eq!(b[0..6], RS1_MAC);
        assert_eq!(b[6..12], DIRECTOR_MAC);
    }
}
