//! The half-open table through the real XDP object (BPF_PROG_TEST_RUN): a TCP SYN is
//! half-open in an LRU table, its handshake's end promotes it to the connection table
//! with its real, a SYN flood twice the tables' size evicts only half-open entries (an
//! established connection keeps its entry and its real, a new client still connects),
//! NAT's reply entry of a half-open connection, and persistence templates made at the
//! handshake's end (spoofed SYNs make none).
mod common;

use std::net::Ipv4Addr;

use common::{HALF_OPEN_EVENTS, Instance, client, syn_from};
use lb_common::{FlowKey, PROTO_TCP, addr, counter, map_names, tcp};
use xlb_core::ops::{self, Persistence, Proto, RealOptions, Scheduler, Service, ServiceId, ServiceOptions};
use xlb_testkit::fixtures::{
    self, DIRECTOR_PRIVATE_MAC, DirectorNet, Frame, NAT_WEB, PRIVATE_IFINDEX, PUBLIC_IFINDEX, RS1, RS1_IP, RS1_MAC, RS2, RS2_IP, VIP, XDP_PASS,
    XDP_REDIRECT, XDP_TX,
};

fn web() -> ServiceId {
    ServiceId::Addr(Service { proto: Proto::Tcp, vip: VIP.into(), port: 80 })
}

fn key(src: Ipv4Addr, sport: u16, dport: u16) -> FlowKey {
    FlowKey {
        src: addr::from_v4(src.octets()),
        dst: addr::from_v4(VIP.octets()),
        sport: sport.to_be_bytes(),
        dport: dport.to_be_bytes(),
        proto: PROTO_TCP,
        _pad: [0; 3],
    }
}

/// rr over rs1 and rs2 on VIP:80, in an instance whose connection tables have `size`
/// entries each.
fn rr_pair(size: u32) -> Instance {
    let sizes: Vec<(&'static str, u32)> = map_names::BY_CONNS.iter().map(|&n| (n, size)).collect();
    let mut inst = Instance::with_sizes(&sizes);
    ops::add_service(&mut inst.maps, web(), ServiceOptions { scheduler: Scheduler::Rr, ..Default::default() }).unwrap();
    for (ip, hop) in [(RS1_IP, RS1), (RS2_IP, RS2)] {
        ops::add_real(&mut inst.maps, web(), ip, RealOptions { weight: 1, ..Default::default() }, hop).unwrap();
    }
    inst
}

fn ack_from(src: Ipv4Addr, sport: u16) -> Frame {
    Frame { tcp_flags: tcp::FLAG_ACK, ..syn_from(src, sport, VIP, 80) }
}

fn events(inst: &Instance) -> Vec<u64> {
    let all = inst.counters();
    HALF_OPEN_EVENTS.iter().map(|&e| all[e as usize]).collect()
}

#[test]
fn half_open_fixture_table() {
    let mut inst = Instance::empty();
    fixtures::install_services(&mut inst.maps).unwrap();
    let flow = FlowKey { src: addr::from_v4(fixtures::CLIENT_IP.octets()), ..key(Ipv4Addr::UNSPECIFIED, 47000, 80) };
    for (i, step) in fixtures::half_open_cases().iter().enumerate() {
        let before = events(&inst);
        inst.check_cases(std::slice::from_ref(&step.case));
        let after = events(&inst);
        for (j, e) in HALF_OPEN_EVENTS.iter().enumerate() {
            let want = before[j] + u64::from(step.events.contains(e));
            assert_eq!(after[j], want, "{}: event {}", step.case.name, counter::NAMES[*e as usize]);
        }
        match i {
            // The SYN: half-open, in no count, not in CONNS.
            0 => {
                assert!(inst.maps.half_open.get(&flow, 0).is_ok());
                assert!(inst.maps.conns.get(&flow, 0).is_err());
                assert_eq!(inst.load(ServiceId::Addr(fixtures::WEB), fixtures::RS1_IP), (0, 0));
            }
            // The ACK: promoted, ESTABLISHED and counted, gone from the half-open table.
            2 => {
                assert!(inst.maps.half_open.get(&flow, 0).is_err());
                assert_eq!(inst.maps.conns.get(&flow, 0).unwrap().state, tcp::ESTABLISHED);
                assert_eq!(inst.load(ServiceId::Addr(fixtures::WEB), fixtures::RS1_IP), (1, 0));
            }
            _ => {}
        }
    }
}

/// The namespace test's (tests/e2e_flood.rs) situation in one program: tables of 256,
/// an established connection and a handshake in progress, then 512 spoofed SYNs.
#[test]
fn syn_flood_twice_the_table_evicts_only_half_open_entries() {
    const SIZE: u32 = 256;
    let mut inst = rr_pair(SIZE);
    let alice = client(1);
    // Alice's connection is established, on rs1 (rr's first).
    assert_eq!(inst.forwarded_to(&syn_from(alice, 1000, VIP, 80)), RS1_MAC);
    assert_eq!(inst.forwarded_to(&ack_from(alice, 1000)), RS1_MAC);
    // The flood: spoofed sources, never an ACK.
    let spoofed = |i: u32| Ipv4Addr::from(0x0a40_0000 + i); // 10.64.x.y
    for i in 0..2 * SIZE {
        let (verdict, _) = inst.run(&syn_from(spoofed(i), 5000, VIP, 80).bytes());
        assert_eq!(verdict, XDP_TX, "spoofed SYN {i}");
    }
    assert_eq!(inst.counter(counter::HALF_OPEN_CREATED), 1 + 2 * u64::from(SIZE));
    assert!(inst.maps.half_open.keys().count() <= SIZE as usize);
    assert!(inst.maps.half_open.get(&key(spoofed(0), 5000, 80), 0).is_err(), "the oldest spoofed SYN was evicted");
    // Alice's connection kept its entry and its real (rr has moved on many times).
    assert_eq!(inst.maps.conns.keys().count(), 1);
    for _ in 0..3 {
        let data = Frame { tcp_flags: tcp::FLAG_ACK | 0x08, payload: vec![1; 100], ..syn_from(alice, 1000, VIP, 80) };
        assert_eq!(inst.forwarded_to(&data), RS1_MAC);
    }
    assert_eq!(inst.load(web(), RS1_IP), (1, 0), "the flood is in no count");
    assert_eq!(inst.load(web(), RS2_IP), (0, 0));
    // A new client still connects: its SYN evicts a spoofed one, its ACK promotes it.
    let bob = client(2);
    let mac = inst.forwarded_to(&syn_from(bob, 2000, VIP, 80));
    assert_eq!(inst.forwarded_to(&ack_from(bob, 2000)), mac);
    assert_eq!(inst.maps.conns.keys().count(), 2);
    // A late ACK of an evicted spoofed handshake goes to the kernel (which resets it).
    assert_eq!(inst.run(&ack_from(spoofed(0), 5000).bytes()).0, XDP_PASS);
    assert_eq!(inst.counter(counter::PASS_NO_CONN), 1);
    assert_eq!(inst.counter(counter::DROP_CONN_TABLE_FULL), 0);
    assert_eq!(inst.counter(counter::HALF_OPEN_PROMOTED), 2);
}

#[test]
fn nat_half_open_reply_then_promotion() {
    common::require_root();
    let net = DirectorNet::create().expect("create the fixture namespace");
    let _inside = net.enter().unwrap();
    let mut inst = Instance::empty();
    fixtures::install_services(&mut inst.maps).unwrap();
    fixtures::install_nat_tun_services(&mut inst.maps).unwrap();
    let client_frame = |flags| Frame { tcp_flags: flags, ..Frame::tcp(VIP, NAT_WEB.port, 47100) };
    let real_frame = |flags| Frame { tcp_flags: flags, ..client_frame(0).reply_from(RS1_IP, 8080, RS1_MAC, DIRECTOR_PRIVATE_MAC) };
    let id = ServiceId::Addr(NAT_WEB);
    assert_eq!(inst.run_on(PUBLIC_IFINDEX, &client_frame(tcp::FLAG_SYN).bytes()).0, XDP_REDIRECT);
    assert_eq!(inst.maps.nat_replies.keys().count(), 0, "half-open: its reply entry is in the half-open replies");
    // rs1's SYN-ACK finds the half-open connection and goes back as the VIP's.
    let (verdict, out) = inst.run_on(PRIVATE_IFINDEX, &real_frame(tcp::FLAG_SYN | tcp::FLAG_ACK).bytes());
    assert_eq!(verdict, XDP_REDIRECT);
    assert_eq!(out[26..30], VIP.octets(), "source translated to the VIP");
    assert_eq!(inst.counter(counter::TX_NAT_REPLY), 1);
    assert_eq!(inst.load(id, RS1_IP), (0, 0));
    // The client's ACK: promoted, with its reply entry.
    assert_eq!(inst.run_on(PUBLIC_IFINDEX, &client_frame(tcp::FLAG_ACK).bytes()).0, XDP_REDIRECT);
    assert_eq!(inst.maps.nat_replies.keys().count(), 1);
    assert_eq!(inst.maps.half_open.keys().count(), 0);
    assert_eq!(inst.load(id, RS1_IP), (1, 0));
    let conns = ops::connections(&inst.maps).unwrap();
    assert_eq!(conns.iter().map(|c| c.state.as_str()).collect::<Vec<_>>(), ["ESTABLISHED"]);
    // rs1's data follows the promoted connection back.
    let (verdict, out) = inst.run_on(PRIVATE_IFINDEX, &Frame { payload: vec![7; 64], ..real_frame(tcp::FLAG_ACK | 0x08) }.bytes());
    assert_eq!(verdict, XDP_REDIRECT);
    assert_eq!(out[26..30], VIP.octets());
    assert_eq!(inst.counter(counter::TX_NAT_REPLY), 2);
}

#[test]
fn persistence_templates_are_made_when_the_handshake_completes() {
    let mut inst = Instance::empty();
    let opts = ServiceOptions {
        scheduler: Scheduler::Rr,
        persistence: Some(Persistence { timeout: 300, netmask: Ipv4Addr::BROADCAST.into() }),
        ..Default::default()
    };
    ops::add_service(&mut inst.maps, web(), opts).unwrap();
    for (ip, hop) in [(RS1_IP, RS1), (RS2_IP, RS2)] {
        ops::add_real(&mut inst.maps, web(), ip, RealOptions { weight: 1, ..Default::default() }, hop).unwrap();
    }
    // Spoofed SYNs make no template (they would fill the table and pin networks).
    for i in 0..100 {
        assert_eq!(inst.run(&syn_from(Ipv4Addr::from(0x0a40_0000 + i), 5000, VIP, 80).bytes()).0, XDP_TX);
    }
    assert_eq!(inst.maps.persist.keys().count(), 0);
    // A client that completes its handshake gets one, holding its connection.
    let alice = client(1);
    let first = inst.forwarded_to(&syn_from(alice, 1000, VIP, 80));
    assert_eq!(inst.maps.persist.keys().count(), 0);
    assert_eq!(inst.forwarded_to(&ack_from(alice, 1000)), first);
    let templates: Vec<_> = inst.maps.persist.iter().map(|e| e.unwrap().1.n_control).collect();
    assert_eq!(templates, [1]);
    // Her next connection follows the template (rr alone would alternate).
    for sport in 1001..1005 {
        assert_eq!(inst.forwarded_to(&syn_from(alice, sport, VIP, 80)), first);
        assert_eq!(inst.forwarded_to(&ack_from(alice, sport)), first);
    }
    assert_eq!(inst.maps.persist.iter().map(|e| e.unwrap().1.n_control).collect::<Vec<_>>(), [5]);
}
