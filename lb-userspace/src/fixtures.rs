//! Fixture frames for the fast path, in the style of Katran's test fixtures: tables of
//! cases (name, input frame, expected verdict, expected output, expected counter)
//! shared by the BPF_PROG_TEST_RUN tests and the benchmarks.
//!
//! Expected outputs are built independently from the inputs (the builders are called
//! again with the addresses the fast path should write, and every checksum is computed
//! from scratch here), never by patching bytes with the code under test.
//!
//! [`dr_cases`] run in any namespace. [`nat_cases`] and [`tun_cases`] give frames
//! arrival NICs, which must exist: the test thread enters a [`DirectorNet`] first.
use std::net::Ipv4Addr;

use anyhow::Result;
use lb_common::{PROTO_TCP, PROTO_UDP, counter};

use crate::{
    maps::Maps,
    netns::{self, Entered, Netns},
    ops::{self, Egress, ForwardMethod, NextHop, Proto, RealAddr, RealOptions, Scheduler, Service, ServiceId, ServiceOptions},
};

pub use crate::loader::{XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX};

pub const CLIENT_MAC: [u8; 6] = [0x02, 0xc1, 0, 0, 0, 0x10];
/// The director's MAC on its public NIC (where clients' frames arrive).
pub const DIRECTOR_MAC: [u8; 6] = [0x02, 0xd1, 0, 0, 0, 0x02];
/// The director's MAC on its private NIC (the NAT real servers' side).
pub const DIRECTOR_PRIVATE_MAC: [u8; 6] = [0x02, 0xd1, 0, 0, 0, 0x03];
pub const RS1_MAC: [u8; 6] = [0x02, 0x5e, 0, 0, 0, 0x11];
pub const RS2_MAC: [u8; 6] = [0x02, 0x5e, 0, 0, 0, 0x12];
/// A router in front of the director, on the public side.
pub const ROUTER_MAC: [u8; 6] = [0x02, 0x6a, 0, 0, 0, 0x01];
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 50);
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
pub const RS1_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 11);
pub const RS2_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 12);
/// A real whose next hop is not resolved, and one with no route at all.
pub const RS3_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 13);
pub const RS4_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 14);
/// The director's address on the private NIC (the NAT reals' gateway, TUN's outer source).
pub const DIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
/// The director's address on the public NIC.
pub const PUBLIC_IP: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 2);
/// A client the director has no route to.
pub const UNROUTABLE_CLIENT_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

/// In a [`DirectorNet`]: the public NIC (clients) and the private NIC (NAT and TUN reals).
pub const PUBLIC_IFINDEX: u32 = 10;
pub const PRIVATE_IFINDEX: u32 = 20;
/// MTU of the private NIC: the TUN cases' limit.
pub const PRIVATE_MTU: u32 = 1500;

/// TCP VIP:80 → rs1 only (exact outputs do not depend on scheduling order).
pub const WEB: Service = Service { proto: Proto::Tcp, vip: VIP, port: 80 };
/// UDP VIP:53 → rs2 only.
pub const DNS: Service = Service { proto: Proto::Udp, vip: VIP, port: 53 };
/// TCP VIP:8080 → rs1 and rs2, round robin (affinity and distribution tests).
pub const POOL: Service = Service { proto: Proto::Tcp, vip: VIP, port: 8080 };

/// The NIC test runs without an ingress interface arrive on (the namespace's lo):
/// frames to reals reached through it leave by XDP_TX.
pub const LOOPBACK_IFINDEX: u32 = 1;
const SAME_NIC: Egress = Egress { ifindex: LOOPBACK_IFINDEX, mac: DIRECTOR_MAC, mtu: 1500, src: DIP };
pub const RS1: NextHop = NextHop { egress: Some(SAME_NIC), mac: Some(RS1_MAC) };
pub const RS2: NextHop = NextHop { egress: Some(SAME_NIC), mac: Some(RS2_MAC) };

/// Next hops in a [`DirectorNet`].
pub const PRIVATE_NIC: Egress = Egress { ifindex: PRIVATE_IFINDEX, mac: DIRECTOR_PRIVATE_MAC, mtu: PRIVATE_MTU, src: DIP };
pub const PUBLIC_NIC: Egress = Egress { ifindex: PUBLIC_IFINDEX, mac: DIRECTOR_MAC, mtu: 1500, src: PUBLIC_IP };

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

const fn tcp_service(port: u16) -> Service {
    Service { proto: Proto::Tcp, vip: VIP, port }
}

/// NAT, two NICs (the seeds' director): VIP:81 → rs1:8080 through the private NIC.
pub const NAT_WEB: Service = tcp_service(81);
/// NAT UDP: VIP:54 → rs2:5353 through the private NIC.
pub const NAT_DNS: Service = Service { proto: Proto::Udp, vip: VIP, port: 54 };
/// NAT, one arm: VIP:85 → rs2:8080 through the NIC clients arrive on.
pub const NAT_ONE_ARM: Service = tcp_service(85);
/// NAT to rs3, whose MAC is unresolved.
pub const NAT_UNRESOLVED: Service = tcp_service(88);
/// TUN: VIP:82 → rs1 through the private NIC (MTU [`PRIVATE_MTU`]).
pub const TUN_WEB: Service = tcp_service(82);
/// TUN to rs3 (MAC unresolved) and to rs4 (no route).
pub const TUN_UNRESOLVED: Service = tcp_service(86);
pub const TUN_NO_ROUTE: Service = tcp_service(87);
/// DR to rs1 through the private NIC: redirected.
pub const DR_OTHER_NIC: Service = tcp_service(83);
/// NAT VIP:89 → rs1:8080, the same real port as [`NAT_WEB`].
pub const NAT_CLASH: Service = tcp_service(89);

/// Installs the NAT, TUN and multi-NIC services of [`nat_cases`] and [`tun_cases`].
pub fn install_nat_tun_services(maps: &mut Maps) -> Result<()> {
    let via = |egress: Egress, mac: Option<[u8; 6]>| NextHop { egress: Some(egress), mac };
    let nat = RealOptions { forward: ForwardMethod::Masq, ..Default::default() };
    let tun = RealOptions { forward: ForwardMethod::Tunnel, ..Default::default() };
    let dr = RealOptions::default();
    let add = |maps: &mut Maps, svc: Service, real: RealAddr, opts: RealOptions, hop: NextHop| -> Result<()> {
        ops::add_service(maps, ServiceId::Addr(svc), rr())?;
        ops::add_real(maps, ServiceId::Addr(svc), real, opts, hop)?;
        Ok(())
    };
    let at = |ip, port| RealAddr { ip, port: Some(port) };
    add(maps, NAT_WEB, at(RS1_IP, 8080), nat, via(PRIVATE_NIC, Some(RS1_MAC)))?;
    add(maps, NAT_DNS, at(RS2_IP, 5353), nat, via(PRIVATE_NIC, Some(RS2_MAC)))?;
    add(maps, NAT_ONE_ARM, at(RS2_IP, 8080), nat, via(PUBLIC_NIC, Some(RS2_MAC)))?;
    add(maps, NAT_UNRESOLVED, at(RS3_IP, 8080), nat, via(PRIVATE_NIC, None))?;
    add(maps, NAT_CLASH, at(RS1_IP, 8080), nat, via(PRIVATE_NIC, Some(RS1_MAC)))?;
    add(maps, TUN_WEB, RS1_IP.into(), tun, via(PRIVATE_NIC, Some(RS1_MAC)))?;
    add(maps, TUN_UNRESOLVED, RS3_IP.into(), tun, via(PRIVATE_NIC, None))?;
    add(maps, TUN_NO_ROUTE, RS4_IP.into(), tun, NextHop::default())?;
    add(maps, DR_OTHER_NIC, RS1_IP.into(), dr, via(PRIVATE_NIC, Some(RS1_MAC)))?;
    Ok(())
}

/// A namespace standing for a two-NIC director: the public NIC (index
/// [`PUBLIC_IFINDEX`], MAC [`DIRECTOR_MAC`], 172.30.0.2/24) and the private one
/// ([`PRIVATE_IFINDEX`], [`DIRECTOR_PRIVATE_MAC`], 10.0.0.2/24), no default route. Both
/// are veths whose peers stay here.
pub struct DirectorNet {
    pub ns: Netns,
}

impl DirectorNet {
    pub fn create() -> Result<Self> {
        netns::require_root("the fixture namespace")?;
        let ns = Netns::create(&format!("xlb-{}-fx", netns::run_id()))?;
        for (nic, index, mac, addr) in [
            ("pub0", PUBLIC_IFINDEX, DIRECTOR_MAC, "172.30.0.2/24"),
            ("priv0", PRIVATE_IFINDEX, DIRECTOR_PRIVATE_MAC, "10.0.0.2/24"),
        ] {
            let (index, peer, peer_index, mac) = (index.to_string(), format!("{nic}p"), (index + 1).to_string(), ops::format_mac(&mac));
            ns.ip(&["link", "add", nic, "index", &index, "address", &mac, "type", "veth", "peer", "name", &peer, "index", &peer_index])?;
            ns.ip(&["addr", "add", addr, "dev", nic])?;
            ns.ip(&["link", "set", nic, "mtu", "1500", "up"])?;
            ns.ip(&["link", "set", &peer, "up"])?;
        }
        Ok(Self { ns })
    }

    /// Moves the calling thread in (for as long as the guard lives).
    pub fn enter(&self) -> Result<Entered> {
        self.ns.enter()
    }
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
    /// Type of service byte of the IPv4 header.
    pub tos: u8,
    /// UDP sent with checksum 0 ("none computed").
    pub udp_without_checksum: bool,
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
            tos: 0,
            udp_without_checksum: false,
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

    /// A reply from `src:sport` (a real server's MAC) to this frame's sender, as it
    /// arrives at the director's `dst_mac`.
    pub fn reply_from(&self, src: Ipv4Addr, sport: u16, src_mac: [u8; 6], dst_mac: [u8; 6]) -> Self {
        Self { src, sport, dst: self.src, dport: self.sport, src_mac, dst_mac, ..self.clone() }
    }

    /// The IP packet: the frame without its Ethernet header.
    pub fn packet(&self) -> Vec<u8> {
        self.bytes()[14..].to_vec()
    }

    /// This packet as LVS-TUN sends it: inside an IPv4 header `src` → `dst` (protocol 4,
    /// TTL 64, with this packet's type of service, identification and DF).
    pub fn tunnelled(&self, src: Ipv4Addr, dst: Ipv4Addr, dst_mac: [u8; 6], src_mac: [u8; 6]) -> Vec<u8> {
        let inner = self.packet();
        let mut outer = vec![0x45, self.tos];
        outer.extend_from_slice(&((20 + inner.len()) as u16).to_be_bytes());
        outer.extend_from_slice(&inner[4..6]);
        outer.extend_from_slice(&(self.frag & 0x4000).to_be_bytes());
        outer.extend_from_slice(&[64, 4, 0, 0]);
        outer.extend_from_slice(&src.octets());
        outer.extend_from_slice(&dst.octets());
        let check = internet_checksum(&outer);
        outer[10..12].copy_from_slice(&check.to_be_bytes());
        ethernet(dst_mac, src_mac, 0x0800, &[outer, inner].concat())
    }

    /// The ICMP fragmentation-needed error (next-hop MTU `mtu`) the director answers this
    /// frame with: from the address it was sent to, back to its sender's MAC, quoting its
    /// first 128 bytes.
    pub fn frag_needed_reply(&self, mtu: u16) -> Vec<u8> {
        let packet = self.packet();
        let mut icmp = vec![3, 4, 0, 0, 0, 0];
        icmp.extend_from_slice(&mtu.to_be_bytes());
        icmp.extend_from_slice(&packet[..128]);
        let check = internet_checksum(&icmp);
        icmp[2..4].copy_from_slice(&check.to_be_bytes());
        let mut ip = vec![0x45, 0xc0];
        ip.extend_from_slice(&((20 + icmp.len()) as u16).to_be_bytes());
        ip.extend_from_slice(&[0, 0, 0, 0, 64, 1, 0, 0]);
        ip.extend_from_slice(&self.dst.octets());
        ip.extend_from_slice(&self.src.octets());
        let check = internet_checksum(&ip);
        ip[10..12].copy_from_slice(&check.to_be_bytes());
        ethernet(self.src_mac, self.dst_mac, 0x0800, &[ip, icmp].concat())
    }

    pub fn bytes(&self) -> Vec<u8> {
        let l4 = self.l4_bytes();
        let ihl = 20 + self.ip_options.len();
        let mut ip = Vec::with_capacity(ihl);
        ip.push(0x40 | (ihl / 4) as u8);
        ip.push(self.tos);
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
        let check = match internet_checksum(&pseudo) {
            _ if self.proto == PROTO_UDP && self.udp_without_checksum => 0,
            // RFC 768: a computed UDP checksum of 0 is sent as all ones.
            0 if self.proto == PROTO_UDP => 0xffff,
            c => c,
        };
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
    /// The interface the frame arrives on (0: none given, the namespace's lo).
    pub ingress: u32,
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
    let pass = |name, input: Vec<u8>, counter| Case { name, input, ingress: 0, verdict: XDP_PASS, output: Expected::Unchanged, counter };
    let sent = |name, input: &Frame, mac| Case {
        name,
        input: input.bytes(),
        ingress: 0,
        verdict: XDP_TX,
        output: Expected::Frame(input.routed_to(mac).bytes()),
        counter: counter::TX_DR,
    };
    let mut bad_ihl = Frame::tcp(VIP, 80, 40002).bytes();
    bad_ihl[14] = 0x44;
    let mut bad_version = Frame::tcp(VIP, 80, 40003).bytes();
    bad_version[14] = 0x65;
    let mut icmp = Frame::tcp(VIP, 80, 40004).bytes();
    icmp[14 + 9] = 1;
    let mut short_total_length = Frame::tcp(VIP, 80, 40006).bytes();
    short_total_length[16..18].copy_from_slice(&39u16.to_be_bytes()); // 20 + 19: no room for TCP
    let mut long_total_length = Frame::tcp(VIP, 80, 40007).bytes();
    long_total_length[16..18].copy_from_slice(&41u16.to_be_bytes()); // one byte past the frame
    let mut padded = Frame::tcp(VIP, 80, 40008);
    let padded_input = [padded.bytes(), vec![0; 6]].concat(); // Ethernet's 60-byte minimum
    padded.dst_mac = RS1_MAC;
    padded.src_mac = DIRECTOR_MAC;
    vec![
        sent("tcp syn to VIP:80 is routed to rs1", &syn, RS1_MAC),
        sent("tcp syn with 12 bytes of IP options (IHL 8) is routed to rs1", &with_options, RS1_MAC),
        sent("udp to VIP:53 is routed to rs2", &dns, RS2_MAC),
        Case {
            name: "a frame with Ethernet padding past the IP packet is routed, padding and all",
            input: padded_input.clone(),
            ingress: 0,
            verdict: XDP_TX,
            output: Expected::Frame([padded.bytes(), vec![0; 6]].concat()),
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
        pass("a total length with no room for the TCP header passes", short_total_length, counter::PASS_BAD_HEADER),
        pass("a total length past the end of the frame passes", long_total_length, counter::PASS_TRUNCATED),
        pass("first fragment (MF) to VIP:80 passes", Frame { frag: 0x2000, ..Frame::tcp(VIP, 80, 40020) }.bytes(), counter::PASS_FRAGMENT),
        pass("non-first fragment to VIP passes", Frame { frag: 0x00b9, ..Frame::tcp(VIP, 80, 40021) }.bytes(), counter::PASS_FRAGMENT),
    ]
}

/// A frame sent, expected as `output`.
fn sent(name: &'static str, input: &Frame, ingress: u32, verdict: u32, output: Vec<u8>, counter: u32) -> Case {
    Case { name, input: input.bytes(), ingress, verdict, output: Expected::Frame(output), counter }
}

/// The NAT table, against [`install_nat_tun_services`] in a [`DirectorNet`]. In order:
/// the replies belong to connections earlier cases open.
pub fn nat_cases() -> Vec<Case> {
    let (public, private) = (PUBLIC_IFINDEX, PRIVATE_IFINDEX);
    // The client's frame, and as the director sends it to rs at port `rport` by `src_mac`.
    let dnat = |f: &Frame, rs: Ipv4Addr, rport: u16, rs_mac, src_mac| Frame { dst: rs, dport: rport, dst_mac: rs_mac, src_mac, ..f.clone() };
    // The real's reply, and as the director sends it back from the VIP to the client.
    let snat = |r: &Frame, vport: u16| Frame { src: VIP, sport: vport, dst_mac: CLIENT_MAC, src_mac: DIRECTOR_MAC, ..r.clone() };
    let syn = Frame::tcp(VIP, NAT_WEB.port, 40000);
    let data = Frame { tcp_flags: 0x18, payload: b"GET / HTTP/1.1\r\n\r\n".to_vec(), ..syn.clone() };
    let syn_ack = Frame { tcp_flags: 0x12, ..syn.reply_from(RS1_IP, 8080, RS1_MAC, DIRECTOR_PRIVATE_MAC) };
    let answer = Frame { tcp_flags: 0x18, payload: vec![b'x'; 1400], ..syn_ack.clone() };
    let one_arm = Frame::tcp(VIP, NAT_ONE_ARM.port, 40001);
    let one_arm_reply = Frame { tcp_flags: 0x12, ..one_arm.reply_from(RS2_IP, 8080, RS2_MAC, DIRECTOR_MAC) };
    let dns = Frame::udp(VIP, NAT_DNS.port, 5353);
    let dns_reply = Frame { payload: b"answer".to_vec(), ..dns.reply_from(RS2_IP, 5353, RS2_MAC, DIRECTOR_PRIVATE_MAC) };
    let dns_unchecked = Frame { udp_without_checksum: true, ..Frame::udp(VIP, NAT_DNS.port, 5354) };
    let dns_to_ffff = udp_whose_translation_sums_to_zero();
    let unroutable_client = Frame { src: UNROUTABLE_CLIENT_IP, src_mac: ROUTER_MAC, ..Frame::tcp(VIP, NAT_WEB.port, 40003) };
    let unroutable_reply = Frame { tcp_flags: 0x12, ..unroutable_client.reply_from(RS1_IP, 8080, RS1_MAC, DIRECTOR_PRIVATE_MAC) };
    let stranger = Frame { tcp_flags: 0x12, ..Frame::tcp(VIP, NAT_WEB.port, 40099).reply_from(RS1_IP, 8080, RS1_MAC, DIRECTOR_PRIVATE_MAC) };
    let to_unresolved_real = Frame::tcp(VIP, NAT_UNRESOLVED.port, 40004);
    let clash = Frame::tcp(VIP, NAT_CLASH.port, 40000);
    vec![
        sent(
            "NAT: a syn to VIP:81 goes to rs1:8080 by the private NIC",
            &syn,
            public,
            XDP_REDIRECT,
            dnat(&syn, RS1_IP, 8080, RS1_MAC, DIRECTOR_PRIVATE_MAC).bytes(),
            counter::TX_NAT,
        ),
        sent(
            "NAT: the client's data follows its connection",
            &data,
            public,
            XDP_REDIRECT,
            dnat(&data, RS1_IP, 8080, RS1_MAC, DIRECTOR_PRIVATE_MAC).bytes(),
            counter::TX_NAT,
        ),
        sent(
            "NAT: rs1's syn-ack leaves as VIP:81's, to the client by the public NIC",
            &syn_ack,
            private,
            XDP_REDIRECT,
            snat(&syn_ack, NAT_WEB.port).bytes(),
            counter::TX_NAT_REPLY,
        ),
        sent("NAT: a full-size reply segment too", &answer, private, XDP_REDIRECT, snat(&answer, NAT_WEB.port).bytes(), counter::TX_NAT_REPLY),
        sent(
            "NAT, one arm: a syn to VIP:85 goes to rs2:8080 back out of the NIC it came in by",
            &one_arm,
            public,
            XDP_TX,
            dnat(&one_arm, RS2_IP, 8080, RS2_MAC, DIRECTOR_MAC).bytes(),
            counter::TX_NAT,
        ),
        sent(
            "NAT, one arm: rs2's reply goes back out of the same NIC",
            &one_arm_reply,
            public,
            XDP_TX,
            snat(&one_arm_reply, NAT_ONE_ARM.port).bytes(),
            counter::TX_NAT_REPLY,
        ),
        sent(
            "NAT: a UDP datagram to VIP:54 goes to rs2:5353",
            &dns,
            public,
            XDP_REDIRECT,
            dnat(&dns, RS2_IP, 5353, RS2_MAC, DIRECTOR_PRIVATE_MAC).bytes(),
            counter::TX_NAT,
        ),
        sent("NAT: rs2's UDP answer leaves as VIP:54's", &dns_reply, private, XDP_REDIRECT, snat(&dns_reply, NAT_DNS.port).bytes(), counter::TX_NAT_REPLY),
        sent(
            "NAT: a UDP datagram without a checksum is translated without one",
            &dns_unchecked,
            public,
            XDP_REDIRECT,
            dnat(&dns_unchecked, RS2_IP, 5353, RS2_MAC, DIRECTOR_PRIVATE_MAC).bytes(),
            counter::TX_NAT,
        ),
        sent(
            "NAT: a UDP checksum that becomes 0 is sent as 0xffff",
            &dns_to_ffff,
            public,
            XDP_REDIRECT,
            dnat(&dns_to_ffff, RS2_IP, 5353, RS2_MAC, DIRECTOR_PRIVATE_MAC).bytes(),
            counter::TX_NAT,
        ),
        sent(
            "NAT: a syn from a client the director has no route to, by way of a router, goes to rs1",
            &unroutable_client,
            public,
            XDP_REDIRECT,
            dnat(&unroutable_client, RS1_IP, 8080, RS1_MAC, DIRECTOR_PRIVATE_MAC).bytes(),
            counter::TX_NAT,
        ),
        sent(
            "NAT: the reply goes back the way the client's syn came: that router's MAC, the public NIC",
            &unroutable_reply,
            private,
            XDP_REDIRECT,
            Frame { dst_mac: ROUTER_MAC, ..snat(&unroutable_reply, NAT_WEB.port) }.bytes(),
            counter::TX_NAT_REPLY,
        ),
        Case {
            name: "NAT: a frame from rs1:8080 that belongs to no connection passes untouched",
            input: stranger.bytes(),
            ingress: private,
            verdict: XDP_PASS,
            output: Expected::Unchanged,
            counter: counter::PASS_NOT_VIP,
        },
        Case {
            name: "NAT to an unresolved real: translated and passed to the kernel, which resolves it",
            input: to_unresolved_real.bytes(),
            ingress: public,
            verdict: XDP_PASS,
            output: Expected::Frame(Frame { dst: RS3_IP, dport: 8080, ..to_unresolved_real.clone() }.bytes()),
            counter: counter::PASS_NEIGH_UNRESOLVED,
        },
        Case {
            name: "NAT: a connection whose reply tuple another connection holds is dropped",
            input: clash.bytes(),
            ingress: public,
            verdict: XDP_DROP,
            output: Expected::Unchanged,
            counter: counter::DROP_NAT_CLASH,
        },
    ]
}

/// A UDP datagram to [`NAT_DNS`] whose translated checksum computes to 0 (found by
/// trying payloads with the independent builder).
fn udp_whose_translation_sums_to_zero() -> Frame {
    (0..=u16::MAX)
        .map(|p| Frame { payload: p.to_be_bytes().to_vec(), ..Frame::udp(VIP, NAT_DNS.port, 5355) })
        .find(|f| {
            let translated = Frame { dst: RS2_IP, dport: 5353, ..f.clone() }.bytes();
            let mut pseudo = translated[26..34].to_vec();
            pseudo.extend_from_slice(&[0, PROTO_UDP, 0, (translated.len() - 34) as u8]);
            pseudo.extend_from_slice(&translated[34..40]);
            pseudo.extend_from_slice(&translated[42..]);
            internet_checksum(&pseudo) == 0
        })
        .expect("some 2-byte payload makes the checksum 0")
}

/// The TUN table (and DR through another NIC), against [`install_nat_tun_services`] in a
/// [`DirectorNet`].
pub fn tun_cases() -> Vec<Case> {
    let public = PUBLIC_IFINDEX;
    let tunnelled = |f: &Frame, rs: Ipv4Addr, mac| f.tunnelled(DIP, rs, mac, DIRECTOR_PRIVATE_MAC);
    let syn = Frame::tcp(VIP, TUN_WEB.port, 41000);
    let marked = Frame { tos: 0x28, ..Frame::tcp(VIP, TUN_WEB.port, 41001) };
    // IP length 1480: 1500 once encapsulated, exactly the private NIC's MTU.
    let largest = Frame { payload: vec![b'a'; 1480 - 40], ..Frame::tcp(VIP, TUN_WEB.port, 41002) };
    let too_big = Frame { payload: vec![b'a'; 1481 - 40], ..Frame::tcp(VIP, TUN_WEB.port, 41003) };
    let too_big_no_df = Frame { frag: 0, ..too_big.clone() };
    let no_df = Frame { frag: 0, ..Frame::tcp(VIP, TUN_WEB.port, 41004) };
    let to_unresolved = Frame::tcp(VIP, TUN_UNRESOLVED.port, 41005);
    let to_no_route = Frame::tcp(VIP, TUN_NO_ROUTE.port, 41006);
    let other_nic = Frame::tcp(VIP, DR_OTHER_NIC.port, 41007);
    vec![
        sent("TUN: a syn to VIP:82 goes to rs1 inside IPIP", &syn, public, XDP_REDIRECT, tunnelled(&syn, RS1_IP, RS1_MAC), counter::TX_TUN),
        sent("TUN: the outer header keeps the type of service", &marked, public, XDP_REDIRECT, tunnelled(&marked, RS1_IP, RS1_MAC), counter::TX_TUN),
        sent("TUN: without DF, the outer header has none either", &no_df, public, XDP_REDIRECT, tunnelled(&no_df, RS1_IP, RS1_MAC), counter::TX_TUN),
        sent(
            "TUN: a 1480-byte packet fits a 1500-byte MTU encapsulated",
            &largest,
            public,
            XDP_REDIRECT,
            tunnelled(&largest, RS1_IP, RS1_MAC),
            counter::TX_TUN,
        ),
        sent(
            "TUN: a 1481-byte packet with DF is answered with ICMP fragmentation-needed, MTU 1480",
            &too_big,
            public,
            XDP_TX,
            too_big.frag_needed_reply(1480),
            counter::TX_ICMP_FRAG_NEEDED,
        ),
        Case {
            name: "TUN: a 1481-byte packet without DF is dropped",
            input: too_big_no_df.bytes(),
            ingress: public,
            verdict: XDP_DROP,
            output: Expected::Unchanged,
            counter: counter::DROP_TOO_BIG,
        },
        Case {
            name: "TUN to an unresolved real: encapsulated and passed to the kernel, which resolves it",
            input: to_unresolved.bytes(),
            ingress: public,
            verdict: XDP_PASS,
            output: Expected::Frame(to_unresolved.tunnelled(DIP, RS3_IP, DIRECTOR_MAC, CLIENT_MAC)),
            counter: counter::PASS_NEIGH_UNRESOLVED,
        },
        Case {
            name: "TUN to a real with no route: passed unchanged",
            input: to_no_route.bytes(),
            ingress: public,
            verdict: XDP_PASS,
            output: Expected::Unchanged,
            counter: counter::PASS_NO_ROUTE,
        },
        sent(
            "DR to a real behind another NIC: redirected there, from that NIC's MAC",
            &other_nic,
            public,
            XDP_REDIRECT,
            Frame { dst_mac: RS1_MAC, src_mac: DIRECTOR_PRIVATE_MAC, ..other_nic.clone() }.bytes(),
            counter::TX_DR,
        ),
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
    fn tunnelled_frame_wraps_the_packet_in_a_valid_header() {
        let f = Frame { tos: 0x28, ..Frame::tcp(VIP, 82, 1234) };
        let t = f.tunnelled(DIP, RS1_IP, RS1_MAC, DIRECTOR_PRIVATE_MAC);
        assert_eq!(internet_checksum(&t[14..34]), 0);
        assert_eq!((t[15], t[22], t[23]), (0x28, 64, 4), "tos, ttl, protocol");
        assert_eq!(t[18..20], [0x12, 0x34], "the inner identification");
        assert_eq!(t[20..22], [0x40, 0], "DF copied");
        assert_eq!(u16::from_be_bytes([t[16], t[17]]) as usize, t.len() - 14);
        assert_eq!(t[34..], f.packet()[..]);
    }

    #[test]
    fn frag_needed_reply_is_valid_icmp() {
        let f = Frame { payload: vec![7; 200], ..Frame::tcp(VIP, 82, 1234) };
        let r = f.frag_needed_reply(1480);
        assert_eq!(r.len(), 14 + 20 + 8 + 128);
        assert_eq!(internet_checksum(&r[14..34]), 0);
        assert_eq!(internet_checksum(&r[34..]), 0);
        assert_eq!((r[34], r[35], u16::from_be_bytes([r[40], r[41]])), (3, 4, 1480));
        assert_eq!(r[26..30], VIP.octets(), "from the address the packet was sent to");
        assert_eq!(r[42..], f.packet()[..128]);
    }

    #[test]
    fn udp_without_checksum_has_none() {
        let b = Frame { udp_without_checksum: true, ..Frame::udp(VIP, 53, 1234) }.bytes();
        assert_eq!(b[40..42], [0, 0]);
        let f = udp_whose_translation_sums_to_zero();
        assert_eq!(Frame { dst: RS2_IP, dport: 5353, ..f }.bytes()[40..42], [0xff, 0xff]);
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
