//! Hostile traffic through the real XDP object (BPF_PROG_TEST_RUN): frames built from
//! every fixture case (the half-open table's too) and from the builder, then mutated at random — truncated, bytes
//! flipped, lengths and versions made bogus, VLAN stacks and IPv6 extension chains made
//! odd, frames spliced, pure noise — arriving on random NICs. Every frame must get an
//! allowed verdict; a frame sent on must go where its service allows (checked by an
//! independent parser of this file against the service listing); and the verdict
//! counters must add up exactly: one per frame, of the verdict's kind.
//!
//! `XLB_FUZZ_FRAMES` sets how many frames (default 200 000, a few seconds);
//! `cargo xtask fuzz` runs millions. `XLB_FUZZ_SEED` replays a run.
mod common;

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
};

use common::Instance;
use lb_common::counter;
use xlb_core::ops::{self, ForwardMethod, NextHop, Proto, RealAddr, RealOptions, Service, ServiceId};
use xlb_testkit::fixtures::{self, DirectorNet, ETH_P_8021AD, ETH_P_8021Q, Frame, Icmp, PRIVATE_IFINDEX, PRIVATE_NIC, PUBLIC_IFINDEX, VIP, VIP6, XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX};

/// A VIP of services with a real each, every real its own MAC and address: a frame
/// sent to the wrong one of them cannot pass for right.
const FUZZ_VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 200);
const FUZZ_PORTS: std::ops::Range<u16> = 1000..1012;

fn install_distinct_services(maps: &mut xlb_core::maps::Maps) {
    for (i, port) in FUZZ_PORTS.enumerate() {
        let forward = [ForwardMethod::Route, ForwardMethod::Masq, ForwardMethod::Tunnel][i % 3];
        let svc = ServiceId::Addr(Service { proto: Proto::Tcp, vip: FUZZ_VIP.into(), port });
        ops::add_service(maps, svc, fixtures::rr()).unwrap();
        let ip = Ipv4Addr::new(10, 0, 1, i as u8 + 1);
        let hop = NextHop { egress: Some(PRIVATE_NIC), mac: Some([0x02, 0xf0, 0, 0, 0, i as u8 + 1]) };
        let real = RealAddr { ip: ip.into(), port: (forward == ForwardMethod::Masq).then_some(2000 + port) };
        ops::add_real(maps, svc, real, RealOptions { forward, ..Default::default() }, hop).unwrap();
    }
}

/// xorshift64*: deterministic, seedable, fast.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

/// What a frame is, as this file's own parser reads it (any number of VLAN tags, any
/// number of IPv6 extension headers: it need not be bounded).
#[derive(Clone, Debug, Default)]
struct Parsed {
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: Option<IpAddr>,
    dst: Option<IpAddr>,
    proto: u8,
    sport: u16,
    dport: u16,
    /// ICMP type; for an ICMP error, the quoted packet's addresses, ports and protocol.
    icmp_type: Option<u8>,
    quoted: Option<(IpAddr, IpAddr, u16, u16, u8)>,
    /// For IPIP / IPv6-in-IPv6, the inner packet.
    inner: Option<Box<Parsed>>,
    /// A fragment: its datagram's identification, and whether it is a later one (no
    /// ports: `sport` and `dport` are unknown).
    frag: Option<(u32, bool)>,
}

impl Parsed {
    fn later_fragment(&self) -> bool {
        matches!(self.frag, Some((_, true)))
    }
}

/// A datagram (source, destination, identification, protocol) → the ports of every
/// first fragment of it seen: where its later fragments may follow.
type FirstFragments = BTreeMap<(IpAddr, IpAddr, u32, u8), Vec<(u16, u16)>>;

/// `fragments`: whether fragment headers count (not in an ICMP error's quote, which
/// the fast path reads as it is).
fn ip_packet(b: &[u8], out: &mut Parsed, fragments: bool) -> Option<()> {
    let version = b.first()? >> 4;
    let (mut proto, l4, src, dst) = if version == 4 {
        let ihl = (b[0] & 0x0f) as usize * 4;
        // Under 20 bytes the next header would start inside this one (an IPIP packet
        // with IHL 0 would contain itself): not a packet.
        if ihl < 20 {
            return None;
        }
        let frag = u16::from_be_bytes(b.get(6..8)?.try_into().ok()?);
        if fragments && frag & 0x3fff != 0 {
            out.frag = Some((u16::from_be_bytes(b.get(4..6)?.try_into().ok()?) as u32, frag & 0x1fff != 0));
        }
        let s: [u8; 4] = b.get(12..16)?.try_into().ok()?;
        let d: [u8; 4] = b.get(16..20)?.try_into().ok()?;
        (*b.get(9)?, ihl, IpAddr::V4(s.into()), IpAddr::V4(d.into()))
    } else {
        let s: [u8; 16] = b.get(8..24)?.try_into().ok()?;
        let d: [u8; 16] = b.get(24..40)?.try_into().ok()?;
        (*b.get(6)?, 40, IpAddr::V6(s.into()), IpAddr::V6(d.into()))
    };
    let mut l4 = l4;
    while version == 6 && matches!(proto, 0 | 43 | 44 | 51 | 60) {
        let (next, len) = (*b.get(l4)?, *b.get(l4 + 1)? as usize);
        if proto == 44 {
            // Offset and M; an atomic fragment (neither) is a whole packet.
            let off = u16::from_be_bytes(b.get(l4 + 2..l4 + 4)?.try_into().ok()?);
            if fragments && off & 0xfff9 != 0 {
                out.frag = Some((u32::from_be_bytes(b.get(l4 + 4..l4 + 8)?.try_into().ok()?), off & 0xfff8 != 0));
            }
            l4 += 8;
            proto = next;
            if out.later_fragment() {
                break;
            }
            continue;
        }
        // The authentication header counts 4-byte units less two; the others 8-byte units less one.
        l4 += if proto == 51 { (len + 2) * 4 } else { (len + 1) * 8 };
        proto = next;
    }
    out.src = Some(src);
    out.dst = Some(dst);
    out.proto = proto;
    if out.later_fragment() {
        return Some(());
    }
    let rest = b.get(l4..)?;
    match proto {
        4 | 41 => {
            let mut inner = Parsed::default();
            ip_packet(rest, &mut inner, true)?;
            out.inner = Some(Box::new(inner));
        }
        1 | 58 => {
            out.icmp_type = Some(*rest.first()?);
            let mut q = Parsed::default();
            if ip_packet(rest.get(8..)?, &mut q, false).is_some() {
                out.quoted = Some((q.src?, q.dst?, q.sport, q.dport, q.proto));
            }
        }
        _ => {
            out.sport = u16::from_be_bytes(rest.get(0..2)?.try_into().ok()?);
            out.dport = u16::from_be_bytes(rest.get(2..4)?.try_into().ok()?);
        }
    }
    Some(())
}

fn parse(frame: &[u8]) -> Option<Parsed> {
    let mut p = Parsed { dst_mac: frame.get(0..6)?.try_into().ok()?, src_mac: frame.get(6..12)?.try_into().ok()?, ..Default::default() };
    let mut at = 12;
    while matches!(u16::from_be_bytes(frame.get(at..at + 2)?.try_into().ok()?), ETH_P_8021Q | ETH_P_8021AD) {
        at += 4;
    }
    ip_packet(frame.get(at + 2..)?, &mut p, true)?;
    Some(p)
}

/// The services as listed: frontend (VIP, port, protocol) → reals (address, port, MAC, method).
struct Model {
    reals: BTreeMap<(IpAddr, u16, u8), Vec<(IpAddr, u16, [u8; 6], ops::ForwardMethod)>>,
}

impl Model {
    fn of(inst: &Instance) -> Self {
        let mut reals = BTreeMap::new();
        for svc in ops::snapshot(&inst.maps).unwrap() {
            let list: Vec<_> = svc
                .reals
                .iter()
                .map(|r| (r.address, r.port, r.mac.as_deref().map_or([0; 6], |m| parse_mac(m)), r.forward))
                .collect();
            for f in &svc.frontends {
                reals.insert((f.vip, f.port, f.proto.number()), list.clone());
            }
        }
        Self { reals }
    }

    /// Whether `out`, sent on for `input`, goes where `input`'s service allows; a later
    /// fragment (no ports), where some first fragment of its datagram would be allowed.
    fn allows_fragment(&self, input: &Parsed, out: &Parsed, firsts: &FirstFragments) -> Result<(), String> {
        let Some((id, true)) = input.frag else { return self.allows(input, out) };
        let (Some(src), Some(dst)) = (input.src, input.dst) else { return Err("forwarded, yet no IP packet".into()) };
        let Some(ports) = firsts.get(&(src, dst, id, input.proto)) else {
            return Err("a later fragment sent on, yet no first fragment of its datagram came".into());
        };
        let mut why = String::new();
        for &(sport, dport) in ports {
            let as_first = Parsed { sport, dport, frag: None, ..input.clone() };
            match self.allows(&as_first, out) {
                Ok(()) => return Ok(()),
                Err(e) => why = e,
            }
        }
        Err(format!("a later fragment, where none of its first fragments may go: {why}"))
    }

    /// Whether `out`, sent on for `input`, goes where `input`'s service allows.
    fn allows(&self, input: &Parsed, out: &Parsed) -> Result<(), String> {
        // Back to the sender: an ICMP echo reply, too-big or port-unreachable error from the
        // address it was sent to.
        if out.dst_mac == input.src_mac && out.src == input.dst && matches!(out.icmp_type, Some(0 | 3 | 129 | 2 | 1)) {
            return Ok(());
        }
        let (Some(dst), Some(src)) = (input.dst, input.src) else { return Err("forwarded, yet no IP packet".into()) };
        if let Some(reals) = self.reals.get(&(dst, input.dport, input.proto)) {
            // A client's packet to a frontend: to one of that service's reals.
            let real = match &out.inner {
                Some(inner) if inner.dst == input.dst => out.dst,
                _ if out.dst == input.dst => None,
                _ => out.dst,
            };
            let ok = reals.iter().any(|&(address, port, mac, _)| {
                mac == out.dst_mac
                    && real.is_none_or(|r| r == address && (out.inner.is_some() || out.later_fragment() || out.dport == port || port == 0))
            });
            return if ok { Ok(()) } else { Err(format!("to a real outside {dst}:{}'s service", input.dport)) };
        }
        if let Some((q_src, q_dst, q_sport, q_dport, q_proto)) = input.quoted {
            // An ICMP error about a packet a real sent from a VIP: to a real of that service.
            if let Some(reals) = self.reals.get(&(q_src, q_sport, q_proto)) {
                if reals.iter().any(|&(_, _, mac, _)| mac == out.dst_mac) {
                    return Ok(());
                }
            }
            // From a NAT real about a client's packet: to the client, from a VIP of a service with that real.
            if self.is_nat_real_of_a_service(q_dst, q_dport, out.src) {
                return Ok(());
            }
            return Err(format!("an ICMP error about {q_src}:{q_sport} → {q_dst}:{q_dport} sent elsewhere"));
        }
        // A NAT real's reply: from the VIP:port of a service that real is in.
        if self.reals.iter().any(|((vip, vport, proto), reals)| {
            Some(*vip) == out.src
                && (*vport == out.sport || out.later_fragment())
                && *proto == input.proto
                && reals.iter().any(|&(a, p, _, m)| m == ops::ForwardMethod::Masq && a == src && (p == input.sport || p == 0))
        }) {
            return Ok(());
        }
        Err("sent on, yet neither to a service nor a NAT reply".into())
    }

    fn is_nat_real_of_a_service(&self, real: IpAddr, port: u16, vip: Option<IpAddr>) -> bool {
        self.reals.iter().any(|((v, _, _), reals)| {
            Some(*v) == vip && reals.iter().any(|&(a, p, _, m)| m == ops::ForwardMethod::Masq && a == real && (p == port || p == 0))
        })
    }
}

fn parse_mac(s: &str) -> [u8; 6] {
    let v: Vec<u8> = s.split(':').map(|b| u8::from_str_radix(b, 16).unwrap()).collect();
    v.try_into().unwrap()
}

/// The seeds: every fixture case's input and builder frames of every kind.
fn corpus() -> Vec<Vec<u8>> {
    let mut frames: Vec<Vec<u8>> =
        [
            fixtures::dr_cases(),
            fixtures::nat_cases(),
            fixtures::tun_cases(),
            fixtures::icmp_cases(),
            fixtures::fragment_cases(),
            fixtures::half_open_cases().into_iter().map(|c| c.case).collect(),
        ]
        .into_iter()
        .flatten()
        .map(|c| c.input)
        .collect();
    let ping = Icmp { kind: 8, code: 0, rest: [0, 1, 0, 1] };
    for dst in [IpAddr::V4(VIP), IpAddr::V6(VIP6)] {
        for port in [53, 54, 80, 81, 82, 85, 8080] {
            frames.push(Frame::tcp(dst, port, 1024).bytes());
            frames.push(Frame::udp(dst, port, 1024).bytes());
            frames.push(Frame { vlan: vec![(ETH_P_8021AD, 7), (ETH_P_8021Q, 8)], ..Frame::tcp(dst, port, 1025) }.bytes());
        }
        frames.push(Frame::icmp(dst, Icmp { kind: if dst.is_ipv4() { 8 } else { 128 }, ..ping }, vec![1; 32]).bytes());
        frames.push(Frame { ipv6_extensions: vec![0, 60, 43], ..Frame::tcp(IpAddr::V6(VIP6), 80, 1026) }.bytes());
    }
    for port in FUZZ_PORTS {
        frames.push(Frame::tcp(FUZZ_VIP, port, 1024).bytes());
    }
    frames
}

/// One mutation of `seed` (and `other`, for splices).
fn mutate(rng: &mut Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut f = seed.to_vec();
    // Where the network header of the seed starts (after its tags), for targeted edits.
    let mut l3 = 14;
    while f.len() >= l3 && matches!(u16::from_be_bytes([f[l3 - 2], f[l3 - 1]]), ETH_P_8021Q | ETH_P_8021AD) {
        l3 += 4;
    }
    let rounds = 1 + rng.below(3);
    for _ in 0..rounds {
        match rng.below(10) {
            0 => f.truncate(14 + rng.below(f.len().saturating_sub(13))),
            1 => {
                for _ in 0..1 + rng.below(8) {
                    let i = rng.below(f.len());
                    f[i] ^= 1 << rng.below(8);
                }
            }
            2 => {
                // Lengths: IPv4 IHL and total length, IPv6 payload length, UDP length.
                let at = [l3, l3 + 2, l3 + 3, l3 + 4, l3 + 5, l3 + 24, l3 + 25, l3 + 44, l3 + 45][rng.below(9)];
                if at < f.len() {
                    f[at] = rng.byte();
                }
            }
            3 => {
                // Versions: IPv4 with IHL < 5, IPv6 under the IPv4 ethertype, nonsense.
                if l3 < f.len() {
                    f[l3] = [0x44, 0x40, 0x65, 0x60, 0x46, rng.byte()][rng.below(6)];
                }
            }
            4 => {
                // TCP data offset, if it is TCP (IPv4 IHL 5 or IPv6 with no extensions).
                for at in [l3 + 20 + 12, l3 + 40 + 12] {
                    if at < f.len() {
                        f[at] = rng.byte();
                    }
                }
            }
            5 => {
                // Odd VLAN stacks: up to 4 tags of common or random TPIDs, inserted.
                for _ in 0..1 + rng.below(4) {
                    let tpid = [ETH_P_8021Q, ETH_P_8021AD, rng.next() as u16][rng.below(3)];
                    let tag = [(tpid >> 8) as u8, tpid as u8, rng.byte(), rng.byte()];
                    if f.len() >= 12 {
                        f.splice(12..12, tag);
                    }
                }
            }
            6 => {
                // An IPv6 next-header chain sent astray.
                let at = l3 + 6;
                if at < f.len() {
                    f[at] = [0, 43, 44, 51, 60, 59, 6, 17, 58, rng.byte()][rng.below(10)];
                }
            }
            7 => {
                // A splice: this frame's start, another's end.
                let cut = rng.below(f.len());
                let from = rng.below(other.len());
                f.truncate(cut);
                f.extend_from_slice(&other[from..]);
            }
            8 => {
                // Noise behind a plausible link-layer header.
                let ethertype = [0x0800u16, 0x86dd, 0x8100][rng.below(3)];
                f.truncate(12.min(f.len()));
                f.extend_from_slice(&ethertype.to_be_bytes());
                for _ in 0..rng.below(200) {
                    f.push(rng.byte());
                }
            }
            _ => {
                // Random bytes overwritten in the headers' region.
                for _ in 0..1 + rng.below(16) {
                    let i = rng.below(f.len().min(120));
                    f[i] = rng.byte();
                }
            }
        }
    }
    // BPF_PROG_TEST_RUN takes no frame shorter than an Ethernet header.
    while f.len() < 14 {
        f.push(rng.byte());
    }
    f
}

#[test]
fn hostile_frames_get_allowed_verdicts_go_where_their_service_allows_and_are_counted() {
    common::require_root();
    let frames: u64 = std::env::var("XLB_FUZZ_FRAMES").map_or(200_000, |v| v.parse().expect("XLB_FUZZ_FRAMES is a number"));
    let seed: u64 = std::env::var("XLB_FUZZ_SEED").map_or(0x5eed_0f_a11, |v| v.parse().expect("XLB_FUZZ_SEED is a number"));
    let net = DirectorNet::create().expect("create the fixture namespace");
    let _inside = net.enter().unwrap();
    let mut inst = Instance::empty();
    fixtures::install_services(&mut inst.maps).unwrap();
    fixtures::install_nat_tun_services(&mut inst.maps).unwrap();
    install_distinct_services(&mut inst.maps);
    let mut settings = ops::settings(&inst.maps).unwrap();
    settings.icmp_echo = 1;
    ops::set_settings(&mut inst.maps, settings).unwrap();
    let model = Model::of(&inst);
    let corpus = corpus();
    let mut rng = Rng(seed | 1);
    let mut by_verdict: BTreeMap<u32, u64> = BTreeMap::new();
    let mut firsts = FirstFragments::new();
    let mut followed = 0u64;
    let nics = [0, PUBLIC_IFINDEX, PRIVATE_IFINDEX];
    for n in 0..frames {
        let a = &corpus[rng.below(corpus.len())];
        let b = &corpus[rng.below(corpus.len())];
        // Some frames unchanged (they open connections the replies and errors need).
        let frame = if rng.below(8) == 0 { a.clone() } else { mutate(&mut rng, a, b) };
        let ingress = nics[rng.below(nics.len())];
        // Every first fragment's ports, whatever becomes of it: the fast path records
        // those it sends on, and a record may outlive later first fragments it passes.
        if let Some(p) = parse(&frame).filter(|p| matches!(p.frag, Some((_, false)))) {
            if let (Some(src), Some(dst), Some((id, _))) = (p.src, p.dst, p.frag) {
                firsts.entry((src, dst, id, p.proto)).or_default().push((p.sport, p.dport));
            }
        }
        let (verdict, out) = inst.run_on(ingress, &frame);
        let context = || format!("frame {n} (seed {seed}) on NIC {ingress}: {}", common::hex(&frame));
        assert!(matches!(verdict, XDP_PASS | XDP_DROP | XDP_TX | XDP_REDIRECT), "verdict {verdict} for {}", context());
        *by_verdict.entry(verdict).or_default() += 1;
        if verdict == XDP_PASS || verdict == XDP_DROP {
            continue;
        }
        let input = parse(&frame).unwrap_or_else(|| panic!("sent on, yet unparseable: {}", context()));
        let output = parse(&out).unwrap_or_else(|| panic!("sent on as an unparseable frame {}: {}", common::hex(&out), context()));
        if let Err(why) = model.allows_fragment(&input, &output, &firsts) {
            panic!("{why}: {}\nsent as {}", context(), common::hex(&out));
        }
        followed += input.later_fragment() as u64;
    }
    // Every frame is counted once, in a counter of its verdict's kind.
    let counters = ops::counters(&inst.maps).unwrap();
    let verdicts = &counters[..counter::VERDICTS as usize];
    let kind = |prefix: &str| verdicts.iter().filter(|(name, _)| name.starts_with(prefix)).map(|(_, v)| v).sum::<u64>();
    let seen = |v: u32| by_verdict.get(&v).copied().unwrap_or(0);
    assert_eq!(verdicts.iter().map(|(_, v)| v).sum::<u64>(), frames, "{counters:?}");
    assert_eq!(kind("pass_"), seen(XDP_PASS), "{counters:?}");
    assert_eq!(kind("drop_"), seen(XDP_DROP), "{counters:?}");
    assert_eq!(kind("tx_"), seen(XDP_TX) + seen(XDP_REDIRECT), "{counters:?}");
    // The run reached the interesting places, not only the parser's refusals.
    // Including the half-open table: SYNs put there, handshakes completed out of it.
    for name in [
        "tx_dr",
        "tx_nat",
        "tx_nat_reply",
        "tx_tun",
        "tx_icmp_error",
        "tx_icmp_echo_reply",
        "pass_truncated",
        "pass_bad_header",
        "pass_vlan_stack",
        "pass_fragment",
        "half_open_created",
        "half_open_promoted",
    ] {
        let value = counters.iter().find(|(n, _)| *n == name).unwrap().1;
        assert!(value > 0, "no frame counted as {name} in {frames}: {counters:?}");
    }
    assert!(followed > 0, "no later fragment followed its first in {frames} frames");
    eprintln!("fuzz: {frames} frames, {followed} later fragments followed, seed {seed}: {by_verdict:?} (2 pass, 1 drop, 3 tx, 4 redirect)");
}
