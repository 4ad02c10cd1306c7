//! IPVS scheduling and connection semantics through the real XDP object
//! (BPF_PROG_TEST_RUN): schedulers over many synthetic flows, weights and quiescence,
//! persistence across ports and connections, TCP states and timeouts, a full
//! connection table, and flows whose real server was removed.
mod common;

use std::net::Ipv4Addr;

use common::{Instance, client, pin_to_cpu0, syn_from};
use lb_common::{counter, tcp};
use lb_userspace::{
    fixtures::{Frame, RS1, RS1_IP, RS1_MAC, RS2, RS2_IP, RS2_MAC, VIP, XDP_DROP, XDP_PASS, XDP_TX},
    ops::{self, NextHop, Persistence, Proto, RealOptions, Scheduler, Service, ServiceId, ServiceOptions},
};

const RS3_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 13);
const RS3_MAC: [u8; 6] = [0x02, 0x5e, 0, 0, 0, 0x13];
const RS3: NextHop = NextHop { mac: Some(RS3_MAC), ..RS1 };

fn web(port: u16) -> ServiceId {
    ServiceId::Addr(Service { proto: Proto::Tcp, vip: VIP.into(), port })
}

fn sched(scheduler: Scheduler) -> ServiceOptions {
    ServiceOptions { scheduler, ..Default::default() }
}

fn weight(w: u32) -> RealOptions {
    RealOptions { weight: w, ..Default::default() }
}

/// An instance with service `id` scheduled by `opts` over rs1 and rs2 with `weights`.
fn two_reals(id: ServiceId, opts: ServiceOptions, weights: [u32; 2]) -> Instance {
    let mut inst = Instance::empty();
    ops::add_service(&mut inst.maps, id, opts).unwrap();
    ops::add_real(&mut inst.maps, id, RS1_IP, weight(weights[0]), RS1).unwrap();
    ops::add_real(&mut inst.maps, id, RS2_IP, weight(weights[1]), RS2).unwrap();
    inst
}

/// Opens a connection (SYN, then ACK) from `src:sport`; returns its real's MAC.
fn establish(inst: &mut Instance, src: Ipv4Addr, sport: u16, port: u16) -> [u8; 6] {
    let mac = inst.forwarded_to(&syn_from(src, sport, VIP, port));
    let ack = Frame { tcp_flags: tcp::FLAG_ACK, ..syn_from(src, sport, VIP, port) };
    assert_eq!(inst.forwarded_to(&ack), mac, "the ACK follows the SYN");
    mac
}

fn share(macs: &[[u8; 6]], mac: [u8; 6]) -> f64 {
    macs.iter().filter(|m| **m == mac).count() as f64 / macs.len() as f64
}

#[test]
fn wrr_two_to_three_is_exact_and_interleaved() {
    pin_to_cpu0();
    let mut inst = two_reals(web(80), sched(Scheduler::Wrr), [2, 3]);
    let macs: Vec<[u8; 6]> = (0..5000u32).map(|i| inst.forwarded_to(&syn_from(client(i), 1024, VIP, 80))).collect();
    assert_eq!(macs.iter().filter(|m| **m == RS1_MAC).count(), 2000);
    assert_eq!(macs.iter().filter(|m| **m == RS2_MAC).count(), 3000);
    // Smooth order: rs1 never twice in a row, rs2 at most twice.
    let longest = |mac| macs.split(|m| *m != mac).map(<[_]>::len).max().unwrap();
    assert_eq!(longest(RS1_MAC), 1);
    assert_eq!(longest(RS2_MAC), 2);
}

#[test]
fn weight_zero_is_quiescent() {
    pin_to_cpu0();
    let mut inst = two_reals(web(80), sched(Scheduler::Rr), [1, 1]);
    let first = establish(&mut inst, client(1), 1000, 80);
    assert_eq!(first, RS1_MAC);
    ops::edit_real(&mut inst.maps, web(80), RS1_IP, weight(0)).unwrap();
    for i in 2..20 {
        assert_eq!(inst.forwarded_to(&syn_from(client(i), 1000, VIP, 80)), RS2_MAC, "no new flow to a quiescent real");
    }
    // The established flow carries on.
    let data = Frame { tcp_flags: tcp::FLAG_ACK | 0x08, ..syn_from(client(1), 1000, VIP, 80) };
    assert_eq!(inst.forwarded_to(&data), RS1_MAC);
    assert_eq!(inst.load(web(80), RS1_IP), (1, 0));
}

#[test]
fn source_hashing_is_sticky_and_weighted() {
    let mut inst = two_reals(web(80), sched(Scheduler::Sh), [3, 1]);
    let mut first = Vec::new();
    for i in 0..2000 {
        let mac = inst.forwarded_to(&syn_from(client(i * 7919), 1000, VIP, 80));
        for sport in [2000, 3000] {
            assert_eq!(inst.forwarded_to(&syn_from(client(i * 7919), sport, VIP, 80)), mac, "client {i} moved");
        }
        first.push(mac);
    }
    let s1 = share(&first, RS1_MAC);
    assert!((s1 - 0.75).abs() < 0.05, "weights 3:1 gave rs1 {s1:.3}");
}

#[test]
fn source_hashing_port_and_fallback_flags() {
    // sh-port: a client's connections spread over the reals by source port.
    let mut inst = two_reals(web(80), ServiceOptions { sched_flags: ops::parse_sched_flags("sh-port").unwrap(), ..sched(Scheduler::Sh) }, [1, 1]);
    let macs: Vec<_> = (0..64).map(|p| inst.forwarded_to(&syn_from(client(5), 1000 + p, VIP, 80))).collect();
    assert!(macs.contains(&RS1_MAC) && macs.contains(&RS2_MAC));

    // Without sh-fallback a client hashed to a quiescent real is dropped; with it, served.
    let clients: Vec<Ipv4Addr> = (0..200).map(|i| client(i * 31)).collect();
    for (flags, dropped_expected) in [("", true), ("sh-fallback", false)] {
        let opts = ServiceOptions { sched_flags: ops::parse_sched_flags(flags).unwrap(), ..sched(Scheduler::Sh) };
        let mut inst = two_reals(web(80), opts, [1, 1]);
        ops::edit_real(&mut inst.maps, web(80), RS1_IP, weight(0)).unwrap();
        let mut dropped = 0;
        for c in &clients {
            let (verdict, out) = inst.run(&syn_from(*c, 1000, VIP, 80).bytes());
            match verdict {
                XDP_TX => assert_eq!(out[0..6], RS2_MAC),
                XDP_DROP => dropped += 1,
                v => panic!("verdict {v}"),
            }
        }
        assert_eq!(dropped > 0, dropped_expected, "flags `{flags}`: {dropped} dropped");
        assert_eq!(inst.counter(counter::DROP_NO_REAL), dropped);
    }
}

#[test]
fn maglev_moves_about_one_nth_when_a_real_leaves() {
    let id = web(80);
    let mut inst = Instance::empty();
    ops::add_service(&mut inst.maps, id, sched(Scheduler::Mh)).unwrap();
    let reals: Vec<(Ipv4Addr, NextHop)> = (0..5u8)
        .map(|i| (Ipv4Addr::new(10, 0, 1, 10 + i), NextHop { mac: Some([2, 0x6d, 0, 0, 0, i]), ..RS1 }))
        .collect();
    for (ip, t) in &reals {
        ops::add_real(&mut inst.maps, id, *ip, RealOptions::default(), *t).unwrap();
    }
    let clients: Vec<Ipv4Addr> = (0..4000).map(|i| client(i * 104_729)).collect();
    let before: Vec<_> = clients.iter().map(|c| inst.forwarded_to(&syn_from(*c, 1000, VIP, 80))).collect();
    for i in 0..5u8 {
        let s = share(&before, [2, 0x6d, 0, 0, 0, i]);
        assert!((s - 0.2).abs() < 0.04, "real {i} has {s:.3}");
    }
    let gone = reals[4].1.mac.unwrap();
    ops::remove_real(&mut inst.maps, id, reals[4].0).unwrap();
    // New connections (another source port) of the same clients.
    let after: Vec<_> = clients.iter().map(|c| inst.forwarded_to(&syn_from(*c, 2000, VIP, 80))).collect();
    let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count() as f64 / clients.len() as f64;
    let moved_needlessly = before.iter().zip(&after).filter(|(b, a)| **b != gone && b != a).count();
    assert!((moved - 0.2).abs() < 0.04, "moved {moved:.3}, ideal 0.2");
    assert!(moved_needlessly as f64 / (clients.len() as f64) < 0.03, "{moved_needlessly} clients of surviving reals moved");
    assert!(!after.contains(&gone));
}

#[test]
fn persistence_spans_connections_ports_and_the_netmask() {
    pin_to_cpu0();
    let group = ServiceId::Fwmark(1);
    let opts = ServiceOptions {
        persistence: Some(Persistence { timeout: 300, netmask: Ipv4Addr::new(255, 255, 255, 0).into() }),
        ..sched(Scheduler::Rr)
    };
    let mut inst = two_reals(group, opts, [1, 1]);
    let fronts = [Service { proto: Proto::Tcp, vip: VIP.into(), port: 80 }, Service { proto: Proto::Tcp, vip: VIP.into(), port: 443 }];
    ops::add_frontends(&mut inst.maps, 1, &fronts).unwrap();

    let alice = Ipv4Addr::new(172, 16, 5, 10);
    let first = inst.forwarded_to(&syn_from(alice, 1000, VIP, 80));
    for (sport, port) in [(1001, 80), (1002, 443), (1003, 443), (1004, 80)] {
        assert_eq!(inst.forwarded_to(&syn_from(alice, sport, VIP, port)), first, "alice's connection to :{port}");
    }
    // Same /24: same real.
    assert_eq!(inst.forwarded_to(&syn_from(Ipv4Addr::new(172, 16, 5, 200), 1000, VIP, 443)), first);
    // Another network is scheduled: round robin's next real.
    let bob = inst.forwarded_to(&syn_from(Ipv4Addr::new(172, 16, 6, 10), 1000, VIP, 80));
    assert_ne!(bob, first);
    // Templates outlive idle time only up to the timeout; the sweep removes them.
    inst.age_templates(301);
    inst.age_connections(10_000);
    let report = inst.sweep();
    assert_eq!(report.templates_expired, 2);
    assert_eq!(report.conns_expired, 7);
    let again: Vec<_> = (0..4).map(|i| inst.forwarded_to(&syn_from(alice, 3000 + i, VIP, 80))).collect();
    assert!(again.iter().all(|m| *m == again[0]), "a fresh template holds again");
}

#[test]
fn least_connection_family_uses_live_counts() {
    pin_to_cpu0();
    // lc: rs1 holds an established connection (overhead 256); new SYNs go to rs2 even
    // as its half-open connections (overhead 1 each) pile up.
    let mut inst = two_reals(web(80), sched(Scheduler::Lc), [1, 1]);
    assert_eq!(establish(&mut inst, client(1), 1000, 80), RS1_MAC);
    for i in 2..7 {
        assert_eq!(inst.forwarded_to(&syn_from(client(i), 1000, VIP, 80)), RS2_MAC);
    }
    assert_eq!(inst.load(web(80), RS1_IP), (1, 0));
    assert_eq!(inst.load(web(80), RS2_IP), (0, 5));

    // wlc 2:1 over established connections.
    let mut inst = two_reals(web(80), sched(Scheduler::Wlc), [2, 1]);
    let macs: Vec<_> = (0..30).map(|i| establish(&mut inst, client(i), 1000, 80)).collect();
    assert_eq!(macs.iter().filter(|m| **m == RS1_MAC).count(), 20);
    assert_eq!(inst.load(web(80), RS1_IP), (20, 0));

    // nq: an idle real is taken at once, whatever its weight.
    let mut inst = two_reals(web(80), sched(Scheduler::Nq), [10, 1]);
    assert_eq!(establish(&mut inst, client(1), 1000, 80), RS1_MAC);
    assert_eq!(establish(&mut inst, client(2), 1000, 80), RS2_MAC);

    // sed: (active + 1) / weight: weight 10 takes the next several.
    assert_eq!(inst.forwarded_to(&syn_from(client(3), 1000, VIP, 80)), RS1_MAC);
}

#[test]
fn failover_and_overflow() {
    // fo: the available real of highest weight takes everything.
    let mut inst = two_reals(web(80), sched(Scheduler::Fo), [1, 5]);
    for i in 0..5 {
        assert_eq!(establish(&mut inst, client(i), 1000, 80), RS2_MAC);
    }
    ops::edit_real(&mut inst.maps, web(80), RS2_IP, weight(0)).unwrap();
    assert_eq!(establish(&mut inst, client(9), 1000, 80), RS1_MAC);

    // ovf: the highest weight until its active connections exceed its weight.
    let mut inst = two_reals(web(80), sched(Scheduler::Ovf), [2, 1]);
    let macs: Vec<_> = (0..4).map(|i| establish(&mut inst, client(i), 1000, 80)).collect();
    assert_eq!(macs, [RS1_MAC, RS1_MAC, RS1_MAC, RS2_MAC]);
}

#[test]
fn destination_hashing_follows_the_vip() {
    let mut inst = two_reals(web(80), sched(Scheduler::Dh), [1, 1]);
    let first = inst.forwarded_to(&syn_from(client(1), 1000, VIP, 80));
    for i in 2..50 {
        assert_eq!(inst.forwarded_to(&syn_from(client(i), 1000, VIP, 80)), first);
    }
}

#[test]
fn upper_threshold_stops_new_connections() {
    pin_to_cpu0();
    let mut inst = Instance::empty();
    ops::add_service(&mut inst.maps, web(80), sched(Scheduler::Rr)).unwrap();
    ops::add_real(&mut inst.maps, web(80), RS1_IP, RealOptions { weight: 1, u_threshold: 2, l_threshold: 1, ..Default::default() }, RS1).unwrap();
    ops::add_real(&mut inst.maps, web(80), RS2_IP, weight(1), RS2).unwrap();
    let macs: Vec<_> = (0..8).map(|i| inst.forwarded_to(&syn_from(client(i), 1000, VIP, 80))).collect();
    assert_eq!(macs.iter().filter(|m| **m == RS1_MAC).count(), 2, "rs1 is full at 2 connections: {macs:02x?}");
}

#[test]
fn tcp_states_and_counts_follow_the_client() {
    let mut inst = two_reals(web(80), sched(Scheduler::Rr), [1, 0]);
    let c = |flags| Frame { tcp_flags: flags, ..syn_from(client(1), 1000, VIP, 80) };
    let state = |inst: &Instance| ops::connections(&inst.maps).unwrap()[0].state.clone();
    inst.forwarded_to(&c(tcp::FLAG_SYN));
    assert_eq!((state(&inst).as_str(), inst.load(web(80), RS1_IP)), ("SYN_RECV", (0, 1)));
    inst.forwarded_to(&c(tcp::FLAG_ACK));
    assert_eq!((state(&inst).as_str(), inst.load(web(80), RS1_IP)), ("ESTABLISHED", (1, 0)));
    inst.forwarded_to(&c(tcp::FLAG_FIN | tcp::FLAG_ACK));
    assert_eq!((state(&inst).as_str(), inst.load(web(80), RS1_IP)), ("FIN_WAIT", (0, 1)));
    inst.forwarded_to(&c(tcp::FLAG_RST));
    assert_eq!((state(&inst).as_str(), inst.load(web(80), RS1_IP)), ("CLOSE", (0, 1)));
    // CLOSE lasts 10 s: after that the entry is gone and the count with it.
    inst.age_connections(11);
    assert_eq!(inst.sweep().conns_expired, 1);
    assert!(ops::connections(&inst.maps).unwrap().is_empty());
    assert_eq!(inst.load(web(80), RS1_IP), (0, 0));
}

#[test]
fn idle_connections_expire_by_their_state_timeout() {
    let mut inst = two_reals(web(80), sched(Scheduler::Rr), [1, 1]);
    establish(&mut inst, client(1), 1000, 80);
    // Inside the 900 s ESTABLISHED timeout: still known.
    inst.age_connections(899);
    let ack = Frame { tcp_flags: tcp::FLAG_ACK, ..syn_from(client(1), 1000, VIP, 80) };
    assert_eq!(inst.run(&ack.bytes()).0, XDP_TX);
    // `xlb set --tcp 60`, then 61 idle seconds: the flow is forgotten; its next
    // non-SYN packet goes to the kernel, and the count is released.
    let mut s = ops::settings(&inst.maps).unwrap();
    s.tcp_timeouts[tcp::ESTABLISHED as usize] = 60;
    ops::set_settings(&mut inst.maps, s).unwrap();
    inst.age_connections(61);
    assert_eq!(inst.run(&ack.bytes()).0, XDP_PASS);
    assert_eq!(inst.counter(counter::PASS_NO_CONN), 1);
    assert_eq!(inst.load(web(80), RS1_IP), (0, 0));

    // UDP: 300 s by default, swept by the controller.
    let dns = ServiceId::Addr(Service { proto: Proto::Udp, vip: VIP.into(), port: 53 });
    ops::add_service(&mut inst.maps, dns, sched(Scheduler::Rr)).unwrap();
    ops::add_real(&mut inst.maps, dns, RS3_IP, RealOptions::default(), RS3).unwrap();
    inst.forwarded_to(&Frame::udp(VIP, 53, 5353));
    assert_eq!(inst.load(dns, RS3_IP), (0, 1));
    inst.age_connections(299);
    assert_eq!(inst.sweep().conns_expired, 0);
    inst.age_connections(2);
    assert_eq!(inst.sweep().conns_expired, 1);
    assert_eq!(inst.load(dns, RS3_IP), (0, 0));
}

#[test]
fn full_connection_table_refuses_new_flows_only() {
    pin_to_cpu0();
    let mut inst = Instance::with_sizes(&[("CONNS", 8)]);
    ops::add_service(&mut inst.maps, web(80), sched(Scheduler::Rr)).unwrap();
    ops::add_real(&mut inst.maps, web(80), RS1_IP, weight(1), RS1).unwrap();
    ops::add_real(&mut inst.maps, web(80), RS2_IP, weight(1), RS2).unwrap();
    let macs: Vec<_> = (0..8).map(|i| establish(&mut inst, client(i), 1000, 80)).collect();
    for i in 8..12 {
        let (verdict, _) = inst.run(&syn_from(client(i), 1000, VIP, 80).bytes());
        assert_eq!(verdict, XDP_DROP, "new flow {i} with the table full");
    }
    assert_eq!(inst.counter(counter::DROP_CONN_TABLE_FULL), 4);
    // Every established flow still reaches its own real.
    for (i, mac) in macs.iter().enumerate() {
        let data = Frame { tcp_flags: tcp::FLAG_ACK | 0x08, ..syn_from(client(i as u32), 1000, VIP, 80) };
        assert_eq!(inst.forwarded_to(&data), *mac);
    }
    let (active, inactive) = inst.load(web(80), RS1_IP);
    assert_eq!((active + inst.load(web(80), RS2_IP).0, inactive), (8, 0));
}

#[test]
fn removed_real_flows_wait_for_it_or_expire_as_configured() {
    pin_to_cpu0();
    let mut inst = two_reals(web(80), sched(Scheduler::Rr), [1, 1]);
    establish(&mut inst, client(1), 1000, 80);
    assert_eq!(establish(&mut inst, client(2), 1000, 80), RS2_MAC);
    let rs2_id = |inst: &Instance| inst.service(web(80)).reals.iter().find(|r| r.address == std::net::IpAddr::from(RS2_IP)).map(|r| r.id);
    let id_before = rs2_id(&inst);
    ops::remove_real(&mut inst.maps, web(80), RS2_IP).unwrap();
    let data = Frame { tcp_flags: tcp::FLAG_ACK | 0x08, ..syn_from(client(2), 1000, VIP, 80) };
    // IPVS's default (expire_nodest_conn = 0): the flow's packets are dropped silently
    // while its real is gone (ip_vs_in: destination not available), the flow is kept.
    assert_eq!(inst.run(&data.bytes()).0, XDP_DROP);
    assert_eq!(inst.counter(counter::DROP_NODEST), 1);
    assert_eq!(inst.maps.conns.iter().count(), 2, "the flow is kept");
    // New flows never reach it.
    for i in 10..14 {
        assert_eq!(inst.forwarded_to(&syn_from(client(i), 1000, VIP, 80)), RS1_MAC);
    }
    // Added back (IPVS takes the destination back from its trash): the flow goes on.
    ops::add_real(&mut inst.maps, web(80), RS2_IP, weight(1), RS2).unwrap();
    assert_eq!(rs2_id(&inst), id_before, "its id back");
    assert_eq!(inst.forwarded_to(&data), RS2_MAC, "the flow is back on its real");
    // expire_nodest_conn = 1: the flow's next packet is dropped and the flow forgotten;
    // the client's retry (a SYN) is scheduled to a live real.
    ops::remove_real(&mut inst.maps, web(80), RS2_IP).unwrap();
    let mut s = ops::settings(&inst.maps).unwrap();
    s.expire_nodest_conn = 1;
    ops::set_settings(&mut inst.maps, s).unwrap();
    assert_eq!(inst.run(&data.bytes()).0, XDP_DROP);
    assert_eq!(inst.counter(counter::DROP_NODEST), 2);
    assert_eq!(inst.forwarded_to(&syn_from(client(2), 1000, VIP, 80)), RS1_MAC);
    // With no connection left, the sweep frees the removed real's id.
    assert_eq!(inst.sweep().reals_freed, 1);
    assert_eq!(inst.maps.reals.iter().count(), 1);
}

/// ipvsadm -C then -R (in another order, as -S lists services sorted): a service with
/// connections keeps its id, so its connections carry on; while it is gone their
/// packets are dropped (not passed to the director's stack, which would reset them),
/// and a new connection finds no service.
#[test]
fn a_service_removed_and_added_back_keeps_its_id_and_its_flows() {
    pin_to_cpu0();
    let mut inst = Instance::empty();
    ops::add_service(&mut inst.maps, web(8080), sched(Scheduler::Rr)).unwrap();
    ops::add_real(&mut inst.maps, web(8080), RS1_IP, weight(1), RS1).unwrap();
    ops::add_service(&mut inst.maps, web(80), sched(Scheduler::Rr)).unwrap();
    ops::add_real(&mut inst.maps, web(80), RS1_IP, weight(1), RS1).unwrap();
    ops::add_real(&mut inst.maps, web(80), RS2_IP, weight(1), RS2).unwrap();
    let mac = establish(&mut inst, client(1), 1000, 80);
    let data = Frame { tcp_flags: tcp::FLAG_ACK | 0x08, ..syn_from(client(1), 1000, VIP, 80) };
    let before = inst.service(web(80));

    ops::remove_service(&mut inst.maps, web(80)).unwrap();
    ops::remove_service(&mut inst.maps, web(8080)).unwrap();
    assert!(ops::snapshot(&inst.maps).unwrap().is_empty(), "removed services are not listed");
    assert!(ops::find_service(&inst.maps, web(80)).is_err());
    assert_eq!(inst.run(&data.bytes()).0, XDP_DROP, "the flow waits for its service");
    let passed = inst.counter(counter::PASS_NOT_VIP);
    assert_eq!(inst.run(&syn_from(client(2), 1000, VIP, 80).bytes()).0, XDP_PASS, "a new flow finds no service");
    assert_eq!(inst.counter(counter::PASS_NOT_VIP), passed + 1);

    ops::add_service(&mut inst.maps, web(80), sched(Scheduler::Rr)).unwrap();
    ops::add_real(&mut inst.maps, web(80), RS1_IP, weight(1), RS1).unwrap();
    ops::add_real(&mut inst.maps, web(80), RS2_IP, weight(1), RS2).unwrap();
    ops::add_service(&mut inst.maps, web(8080), sched(Scheduler::Rr)).unwrap();
    ops::add_real(&mut inst.maps, web(8080), RS1_IP, weight(1), RS1).unwrap();
    let after = inst.service(web(80));
    let ids = |v: &ops::ServiceView| v.reals.iter().map(|r| (r.address, r.id)).collect::<Vec<_>>();
    assert_eq!(ids(&after), ids(&before), "the reals keep their ids");
    assert_eq!(inst.forwarded_to(&data), mac, "the flow carries on to its real");
    assert_eq!(after.reals.iter().map(|r| r.active_conns).sum::<u64>(), 1, "and is counted once");
    assert!(ops::add_service(&mut inst.maps, web(80), sched(Scheduler::Rr)).is_err(), "it is a live service again");

    // Removed for good: the trash empties when its last connection expires.
    ops::remove_service(&mut inst.maps, web(80)).unwrap();
    inst.age_connections(10_000);
    let report = inst.sweep();
    assert_eq!((report.reals_freed, report.services_freed), (2, 1), "{report:?}");
    assert_eq!(inst.run(&data.bytes()).0, XDP_PASS, "no service, no connection: the kernel's");
}

#[test]
fn udp_one_packet_scheduling_balances_every_datagram() {
    pin_to_cpu0();
    let dns = ServiceId::Addr(Service { proto: Proto::Udp, vip: VIP.into(), port: 53 });
    let mut inst = two_reals(dns, ServiceOptions { one_packet: true, ..sched(Scheduler::Rr) }, [1, 1]);
    let macs: Vec<_> = (0..6).map(|_| inst.forwarded_to(&Frame::udp(VIP, 53, 5353))).collect();
    assert_eq!(macs, [RS1_MAC, RS2_MAC, RS1_MAC, RS2_MAC, RS1_MAC, RS2_MAC]);
    assert_eq!(inst.maps.conns.iter().count(), 0, "one-packet scheduling keeps no connection");
    // Without -o the same flow sticks.
    let mut inst = two_reals(dns, sched(Scheduler::Rr), [1, 1]);
    let macs: Vec<_> = (0..4).map(|_| inst.forwarded_to(&Frame::udp(VIP, 53, 5353))).collect();
    assert!(macs.iter().all(|m| *m == macs[0]));
}
