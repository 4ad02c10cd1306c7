//! Direct routing through the real XDP object (BPF_PROG_TEST_RUN): the fixture table's
//! exact output bytes, verdicts and counters, truncation, affinity, round robin.
mod common;

use common::Instance;
use lb_common::counter;
use xlb_core::ops::{self, NextHop, RealOptions, ServiceId};
use xlb_testkit::fixtures::{self, Frame, POOL, RS1_MAC, RS2_MAC, VIP, XDP_PASS, XDP_TX};

fn instance() -> Instance {
    let mut inst = Instance::empty();
    fixtures::install_services(&mut inst.maps).expect("install fixture services");
    inst
}

/// The MAC each new flow of POOL is routed to.
fn pool_macs(inst: &mut Instance, sports: impl Iterator<Item = u16>) -> Vec<[u8; 6]> {
    sports.map(|sport| inst.forwarded_to(&Frame::tcp(VIP, POOL.port, sport))).collect()
}

#[test]
fn fixture_table() {
    instance().check_cases(&fixtures::dr_cases());
}

#[test]
fn truncated_frames_pass_untouched() {
    let mut inst = instance();
    let udp = Frame::udp(VIP, 53, 5353).bytes();
    let tcp = Frame { ip_options: vec![1, 1, 1, 0], ..Frame::tcp(VIP, 80, 40000) }.bytes();
    let mut expected_truncated = 0;
    for full in [&tcp, &udp] {
        // Shorter than the L4 header: nothing may be read past the end, nothing forwarded.
        let l4_end = if full == &tcp { 14 + 24 + 20 } else { 14 + 20 + 8 };
        // BPF_PROG_TEST_RUN needs at least an Ethernet header.
        for len in 14..l4_end {
            let frame = &full[..len];
            let (verdict, out) = inst.run(frame);
            assert_eq!(verdict, XDP_PASS, "{len}-byte prefix");
            assert_eq!(out, frame, "{len}-byte prefix must pass untouched");
            if len >= 14 + 20 {
                expected_truncated += 1; // IP header complete, L4 header cut
            }
        }
    }
    let counters = inst.counters();
    assert_eq!(counters[counter::PASS_TRUNCATED as usize], expected_truncated + 2 * 20);
    assert_eq!(counters[counter::TX_DR as usize], 0);
}

#[test]
fn a_flow_keeps_its_real_server() {
    let mut inst = instance();
    for sport in [41000u16, 41001, 41002, 41003] {
        let first = pool_macs(&mut inst, std::iter::once(sport))[0];
        // Later packets of the same flow (ACKs, data) go to the same real, even though
        // round robin has moved on for new flows in between.
        let _other = pool_macs(&mut inst, std::iter::once(sport + 1000));
        for flags in [0x10u8, 0x18, 0x11] {
            let pkt = Frame { tcp_flags: flags, ..Frame::tcp(VIP, POOL.port, sport) };
            assert_eq!(inst.forwarded_to(&pkt), first, "flow {sport} moved to another real");
        }
    }
    let pool = inst.service(ServiceId::Addr(POOL));
    assert_eq!(pool.reals.iter().map(|r| r.conns).sum::<u64>(), 8, "4 flows + 4 interleaved flows");
    assert_eq!(pool.reals.iter().map(|r| r.packets).sum::<u64>(), 8 + 4 * 3);
}

#[test]
fn round_robin_alternates_over_new_flows() {
    let mut inst = instance();
    let macs = pool_macs(&mut inst, 42000..42010);
    for pair in macs.windows(2) {
        assert_ne!(pair[0], pair[1], "consecutive new flows went to the same real: {macs:02x?}");
    }
    assert!(macs.iter().all(|m| *m == RS1_MAC || *m == RS2_MAC));
    let pool = inst.service(ServiceId::Addr(POOL));
    assert_eq!(pool.reals.iter().map(|r| r.conns).collect::<Vec<_>>(), vec![5, 5]);
}

#[test]
fn service_without_reals_answers_port_unreachable_and_counts() {
    let mut inst = instance();
    ops::remove_real(&mut inst.maps, ServiceId::Addr(fixtures::WEB), fixtures::RS1_IP).unwrap();
    ops::remove_real(&mut inst.maps, ServiceId::Addr(fixtures::WEB6), fixtures::RS1_IP6).unwrap();
    // As IPVS (ip_vs_leave): ICMP port unreachable for TCP too, ICMPv6's for IPv6, VLAN
    // tags kept; the client fails at once instead of waiting for its timeout.
    let syn = Frame::tcp(VIP, 80, 44000);
    let tagged = Frame { vlan: vec![(fixtures::ETH_P_8021Q, 7)], ..syn.clone() };
    let syn6 = Frame::tcp(fixtures::VIP6, 80, 44000);
    for frame in [&syn, &tagged, &syn6] {
        let (verdict, out) = inst.run(&frame.bytes());
        assert_eq!(verdict, fixtures::XDP_TX, "{frame:?}");
        assert_eq!(out, frame.port_unreachable_reply(), "{frame:?}");
    }
    assert_eq!(inst.counter(counter::TX_ICMP_UNREACHABLE), 3);
    // No answer to an IPv4 header with options (it is not quoted whole), nor to a
    // broadcast source (RFC 1122 3.2.2): dropped.
    let with_options = Frame { ip_options: vec![1, 1, 1, 0], ..syn.clone() }.bytes();
    let broadcast = Frame { src: std::net::Ipv4Addr::BROADCAST.into(), ..syn.clone() };
    for input in [with_options, broadcast.bytes()] {
        assert_eq!(inst.run(&input), (fixtures::XDP_DROP, input.clone()));
    }
    assert_eq!(inst.counter(counter::DROP_NO_REAL), 2);
    assert_eq!(inst.counter(counter::TX_ICMP_UNREACHABLE), 3);
}

#[test]
fn port_unreachable_answers_are_rate_limited_per_cpu() {
    let mut inst = instance();
    ops::remove_real(&mut inst.maps, ServiceId::Addr(fixtures::WEB), fixtures::RS1_IP).unwrap();
    let frames: Vec<Vec<u8>> = (0..2000u16).map(|p| Frame { sport: 10000 + p, ..Frame::tcp(VIP, 80, 0) }.bytes()).collect();
    let started = std::time::Instant::now();
    let answered = frames.iter().filter(|f| inst.run(f).0 == fixtures::XDP_TX).count() as u64;
    let elapsed_ms = started.elapsed().as_millis() as u64;
    // Each CPU the test ran on: a burst, then one an elapsed millisecond (and a tick
    // of the coarse clock's slack).
    let cpus = std::thread::available_parallelism().unwrap().get() as u64;
    let most = cpus * (lb_common::ICMP_UNREACHABLE_BURST + (elapsed_ms + 10) * lb_common::ICMP_UNREACHABLE_PER_SEC / 1000);
    assert!(answered >= lb_common::ICMP_UNREACHABLE_BURST, "{answered} answered");
    assert!(answered <= most, "{answered} answered in {elapsed_ms} ms on at most {cpus} CPUs (at most {most})");
    assert_eq!(inst.counter(counter::TX_ICMP_UNREACHABLE), answered);
    assert_eq!(inst.counter(counter::DROP_NO_REAL), 2000 - answered);
}

#[test]
fn unresolved_real_passes_to_the_kernel() {
    let mut inst = instance();
    let svc = ServiceId::Addr(ops::Service { port: 9000, ..POOL });
    ops::add_service(&mut inst.maps, svc, fixtures::rr()).unwrap();
    let unresolved = NextHop { mac: None, ..fixtures::RS1 };
    let real_id = ops::add_real(&mut inst.maps, svc, fixtures::RS1_IP, RealOptions::default(), unresolved).unwrap();
    let frame = Frame::tcp(VIP, 9000, 45000).bytes();
    let (verdict, out) = inst.run(&frame);
    assert_eq!(verdict, XDP_PASS);
    assert_eq!(out, frame);
    assert_eq!(inst.counter(counter::PASS_NEIGH_UNRESOLVED), 1);
    // Once the MAC is known, the same flow is routed.
    ops::set_real_target(&mut inst.maps, real_id, fixtures::RS2).unwrap();
    let (verdict, out) = inst.run(&frame);
    assert_eq!(verdict, XDP_TX);
    assert_eq!(out[0..6], RS2_MAC);
}
