//! IPVS scheduling and connection semantics through the real XDP object
//! (BPF_PROG_TEST_RUN): schedulers over many synthetic flows, weights and quiescence,
//! persistence across ports and connections, TCP states and timeouts, a full
//! connection table, and flows whose real server was removed.
mod common;

use std::net::Ipv4Addr;

use common::{Instance, client, syn_from};
use lb_common::{counter, tcp};
use xlb_core::ops::{self, NextHop, Persistence, Proto, RealOptions, Scheduler, Service, ServiceId, ServiceOptions};
use xlb_testkit::fixtures::{Frame, RS1, RS1_IP, RS1_MAC, RS2, RS2_IP, RS2_MAC, VIP, XDP_DROP, XDP_PASS, XDP_TX};

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
            // No real for it: dropped, or answered with port unreachable (to the client's MAC).
            match verdict {
                XDP_TX if out[0..6] == RS2_MAC => {}
                XDP_TX if out[0..6] == xlb_testkit::fixtures::CLIENT_MAC && out[23] == 1 => dropped += 1,
                XDP_DROP => dropped += 1,
                v => panic!("verdict {v}, frame to {:02x?}", &out[0..6]),
            }
        }
        assert_eq!(dropped > 0, dropped_expected, "flags `{flags}`: {dropped} dropped");
        assert_eq!(inst.counter(counter::DROP_NO_REAL) + inst.counter(counter::TX_ICMP_UNREACHABLE), dropped);
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

/// Issue 15: two directors with one mh service, the same reals added in other orders
/// (other ids). A flow started on A and moved by ECMP to B mid-stream: B has no entry,
/// picks the flow up through its Maglev table, which sends it to the real A chose, and
/// then follows its own new entry. A RST of no known flow still goes to the kernel.
#[test]
fn mh_picks_up_a_flow_another_director_started() {
    let id = web(80);
    let reals: Vec<(Ipv4Addr, NextHop)> = (0..5u8)
        .map(|i| (Ipv4Addr::new(10, 0, 1, 10 + i), NextHop { mac: Some([2, 0x6d, 0, 0, 0, i]), ..RS1 }))
        .collect();
    let director = |order: &[usize], decoy: bool| {
        let mut inst = Instance::empty();
        if decoy {
            // Another service's real first: B's reals get other ids than A's.
            ops::add_service(&mut inst.maps, web(81), sched(Scheduler::Rr)).unwrap();
            ops::add_real(&mut inst.maps, web(81), RS3_IP, RealOptions::default(), RS3).unwrap();
        }
        ops::add_service(&mut inst.maps, id, sched(Scheduler::Mh)).unwrap();
        for &i in order {
            ops::add_real(&mut inst.maps, id, reals[i].0, RealOptions::default(), reals[i].1).unwrap();
        }
        inst
    };
    let mut a = director(&[0, 1, 2, 3, 4], false);
    let mut b = director(&[4, 2, 0, 3, 1], true);
    let clients: Vec<Ipv4Addr> = (0..500).map(|i| client(i * 7919)).collect();
    for (n, c) in clients.iter().enumerate() {
        let syn = syn_from(*c, 3000, VIP, 80);
        let on_a = a.forwarded_to(&syn);
        let ack = Frame { tcp_flags: tcp::FLAG_ACK, payload: b"mid-stream".to_vec(), ..syn.clone() };
        assert_eq!(b.forwarded_to(&ack), on_a, "client {c}: B sends the moved flow to A's real");
        // An entry now; the next packet follows it.
        assert_eq!(ops::connections(&b.maps).unwrap().len(), n + 1);
        assert_eq!(b.forwarded_to(&ack), on_a);
        assert_eq!(ops::connections(&b.maps).unwrap().len(), n + 1);
    }
    // As IPVS's sloppy_tcp (tcp_states: sNO + ack → sCL): CLOSE, InActConn, kept while
    // packets flow (each refreshes its 10 s timeout), picked up again after.
    let inactive: u64 = reals.iter().map(|(ip, _)| b.load(id, *ip).1).sum();
    assert_eq!(inactive as usize, clients.len(), "picked-up flows count as InActConn");
    assert_eq!(ops::connections(&b.maps).unwrap().len(), clients.len());
    let rst = Frame { tcp_flags: tcp::FLAG_RST, ..syn_from(client(9999), 3000, VIP, 80) };
    assert_eq!(b.run(&rst.bytes()).0, XDP_PASS, "a reset of no known flow opens nothing");
    assert_eq!(b.counter(counter::PASS_NO_CONN), 1);
    assert_eq!(ops::connections(&b.maps).unwrap().len(), clients.len());
}

#[test]
fn persistence_spans_connections_ports_and_the_netmask() {
    let group = ServiceId::Fwmark(1);
    let opts = ServiceOptions {
        persistence: Some(Persistence { timeout: 300, netmask: Ipv4Addr::new(255, 255, 255, 0).into() }),
        ..sched(Scheduler::Rr)
    };
    let mut inst = two_reals(group, opts, [1, 1]);
    let fronts = [Service { proto: Proto::Tcp, vip: VIP.into(), port: 80 }, Service { proto: Proto::Tcp, vip: VIP.into(), port: 443 }];
    ops::add_frontends(&mut inst.maps, 1, &fronts).unwrap();

    // Connections complete their handshakes: a template is made when the first one's
    // does (a SYN alone makes none: spoofed SYNs must not pin networks).
    let alice = Ipv4Addr::new(172, 16, 5, 10);
    let first = establish(&mut inst, alice, 1000, 80);
    for (sport, port) in [(1001, 80), (1002, 443), (1003, 443), (1004, 80)] {
        assert_eq!(establish(&mut inst, alice, sport, port), first, "alice's connection to :{port}");
    }
    // Same /24: same real.
    assert_eq!(establish(&mut inst, Ipv4Addr::new(172, 16, 5, 200), 1000, 443), first);
    // Another network is scheduled: round robin's next real.
    let bob = establish(&mut inst, Ipv4Addr::new(172, 16, 6, 10), 1000, 80);
    assert_ne!(bob, first);
    // Templates outlive idle time only up to the timeout; the sweep removes them. As
    // in IPVS, a template is re-armed when the last connection it placed goes: it
    // lives its timeout from then.
    inst.age_templates(301);
    inst.age_connections(10_000);
    let report = inst.sweep();
    assert_eq!((report.conns_expired, report.templates_expired), (7, 0));
    inst.age_templates(301);
    assert_eq!(inst.sweep().templates_expired, 2);
    let again: Vec<_> = (0..4).map(|i| establish(&mut inst, alice, 3000 + i, 80)).collect();
    assert!(again.iter().all(|m| *m == again[0]), "a fresh template holds again");
}

#[test]
fn least_connection_family_uses_live_counts() {
    // lc: rs1 holds an established connection (overhead 256); new SYNs go to rs2. Their
    // half-open connections are in no count (IPVS counts SYN_RECV as InActConn; here a
    // connection counts from its handshake's end, so a SYN flood cannot steer lc).
    let mut inst = two_reals(web(80), sched(Scheduler::Lc), [1, 1]);
    assert_eq!(establish(&mut inst, client(1), 1000, 80), RS1_MAC);
    for i in 2..7 {
        assert_eq!(inst.forwarded_to(&syn_from(client(i), 1000, VIP, 80)), RS2_MAC);
    }
    assert_eq!(inst.load(web(80), RS1_IP), (1, 0));
    assert_eq!(inst.load(web(80), RS2_IP), (0, 0));
    // Their ACKs come: counted, established.
    for i in 2..7 {
        let ack = Frame { tcp_flags: tcp::FLAG_ACK, ..syn_from(client(i), 1000, VIP, 80) };
        assert_eq!(inst.forwarded_to(&ack), RS2_MAC);
    }
    assert_eq!(inst.load(web(80), RS2_IP), (5, 0));

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
    let mut inst = Instance::empty();
    ops::add_service(&mut inst.maps, web(80), sched(Scheduler::Rr)).unwrap();
    ops::add_real(&mut inst.maps, web(80), RS1_IP, RealOptions { weight: 1, u_threshold: 2, l_threshold: 1, ..Default::default() }, RS1).unwrap();
    ops::add_real(&mut inst.maps, web(80), RS2_IP, weight(1), RS2).unwrap();
    // Connections count once their handshake completes (half-open ones are in no count).
    let macs: Vec<_> = (0..8).map(|i| establish(&mut inst, client(i), 1000, 80)).collect();
    assert_eq!(macs.iter().filter(|m| **m == RS1_MAC).count(), 2, "rs1 is full at 2 connections: {macs:02x?}");
}

#[test]
fn tcp_states_and_counts_follow_the_client() {
    let mut inst = two_reals(web(80), sched(Scheduler::Rr), [1, 0]);
    let c = |flags| Frame { tcp_flags: flags, ..syn_from(client(1), 1000, VIP, 80) };
    let state = |inst: &Instance| ops::connections(&inst.maps).unwrap()[0].state.clone();
    inst.forwarded_to(&c(tcp::FLAG_SYN));
    // Half-open: listed in SYN_RECV, in no count yet (see lb-ebpf's conntrack).
    assert_eq!((state(&inst).as_str(), inst.load(web(80), RS1_IP)), ("SYN_RECV", (0, 0)));
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
    let mut inst = Instance::with_sizes(&[("CONNS", 8)]);
    ops::add_service(&mut inst.maps, web(80), sched(Scheduler::Rr)).unwrap();
    ops::add_real(&mut inst.maps, web(80), RS1_IP, weight(1), RS1).unwrap();
    ops::add_real(&mut inst.maps, web(80), RS2_IP, weight(1), RS2).unwrap();
    let macs: Vec<_> = (0..8).map(|i| establish(&mut inst, client(i), 1000, 80)).collect();
    for i in 8..12 {
        // The SYN is half-open (its own LRU table); the handshake's end finds CONNS full.
        inst.forwarded_to(&syn_from(client(i), 1000, VIP, 80));
        let ack = Frame { tcp_flags: tcp::FLAG_ACK, ..syn_from(client(i), 1000, VIP, 80) };
        let (verdict, _) = inst.run(&ack.bytes());
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

/// A real failed by its health check, with expire_nodest_conn: its established flows
/// go on while the service keeps failed reals at weight 0 (keepalived's
/// inhibit_on_failure: the destination stays available to IPVS), and are dropped and
/// forgotten when it does not. The fast path reads the service's flags for a known
/// flow's packet only in such cases (and for a SYN): this checks that it does.
#[test]
fn failed_real_flows_follow_inhibit_on_failure_with_expire_nodest_conn() {
    let mut inst = two_reals(web(80), sched(Scheduler::Rr), [1, 1]);
    let mut s = ops::settings(&inst.maps).unwrap();
    s.expire_nodest_conn = 1;
    ops::set_settings(&mut inst.maps, s).unwrap();
    assert_eq!(establish(&mut inst, client(1), 1000, 80), RS1_MAC);
    assert_eq!(establish(&mut inst, client(2), 1000, 80), RS2_MAC);
    let data = |i| Frame { tcp_flags: tcp::FLAG_ACK | 0x08, ..syn_from(client(i), 1000, VIP, 80) };
    ops::set_inhibit_on_failure(&mut inst.maps, web(80), true).unwrap();
    ops::set_real_health(&mut inst.maps, web(80), RS2_IP, false).unwrap();
    for _ in 0..3 {
        assert_eq!(inst.forwarded_to(&data(2)), RS2_MAC, "inhibit_on_failure: the failed real's flow goes on");
    }
    assert_eq!(inst.counter(counter::DROP_NODEST), 0);
    ops::set_inhibit_on_failure(&mut inst.maps, web(80), false).unwrap();
    assert_eq!(inst.run(&data(2).bytes()).0, XDP_DROP, "without inhibit_on_failure the failed real's flow is dropped");
    assert_eq!(inst.counter(counter::DROP_NODEST), 1);
    assert_eq!(inst.maps.conns.iter().count(), 1, "and forgotten (expire_nodest_conn)");
    assert_eq!(inst.forwarded_to(&data(1)), RS1_MAC, "the live real's flow goes on");
}

/// ipvsadm -C then -R (in another order, as -S lists services sorted): a service with
/// connections keeps its id, so its connections carry on; while it is gone their
/// packets are dropped (not passed to the director's stack, which would reset them),
/// and a new connection finds no service.
#[test]
fn a_service_removed_and_added_back_keeps_its_id_and_its_flows() {
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

/// A persistent rr service over rs1 and rs2 (timeout 300 s, one client per template).
fn persistent_pair() -> Instance {
    let opts = ServiceOptions {
        persistence: Some(Persistence { timeout: 300, netmask: Ipv4Addr::BROADCAST.into() }),
        ..sched(Scheduler::Rr)
    };
    two_reals(web(80), opts, [1, 1])
}

/// The client's template: (real id, live connections it placed).
fn template_of(inst: &Instance) -> Vec<(u32, u64)> {
    inst.maps.persist.iter().map(|e| e.unwrap().1).map(|e| (e.real_id, e.n_control)).collect()
}

fn other(mac: [u8; 6]) -> [u8; 6] {
    if mac == RS1_MAC { RS2_MAC } else { RS1_MAC }
}

fn ip_of(mac: [u8; 6]) -> Ipv4Addr {
    if mac == RS1_MAC { RS1_IP } else { RS2_IP }
}

#[test]
fn template_to_a_failed_or_removed_real_is_rescheduled() {
    // IPVS's ip_vs_check_template: a template whose real is no longer available is
    // dropped and the client scheduled afresh (keepalived removes a failed real).
    let mut inst = persistent_pair();
    let alice = client(1);
    let first = establish(&mut inst, alice, 1000, 80);
    ops::set_real_health(&mut inst.maps, web(80), std::net::IpAddr::from(ip_of(first)), false).unwrap();
    let second = establish(&mut inst, alice, 1001, 80);
    assert_eq!(second, other(first), "never to the failed real");
    // The new template holds, also once the first real is back.
    ops::set_real_health(&mut inst.maps, web(80), std::net::IpAddr::from(ip_of(first)), true).unwrap();
    for sport in 1002..1006 {
        assert_eq!(establish(&mut inst, alice, sport, 80), second);
    }
    // The established connection on the failed-then-recovered real carried on.
    let data = Frame { tcp_flags: tcp::FLAG_ACK | 0x08, ..syn_from(alice, 1000, VIP, 80) };
    assert_eq!(inst.forwarded_to(&data), first);
    // Removed: likewise.
    ops::remove_real(&mut inst.maps, web(80), ip_of(second)).unwrap();
    assert_eq!(establish(&mut inst, alice, 1010, 80), first);
    assert_eq!(inst.maps.persist.iter().count(), 1, "one template per client");
}

#[test]
fn template_on_the_sorry_server_returns_to_the_reals() {
    let mut inst = persistent_pair();
    ops::set_sorry_server(&mut inst.maps, web(80), Some((RS3_IP.into(), RS3))).unwrap();
    let (alice, bob) = (client(1), client(2));
    let bobs = inst.forwarded_to(&syn_from(bob, 1000, VIP, 80));
    // Both reals fail: the sorry server serves, also clients with a template.
    for ip in [RS1_IP, RS2_IP] {
        ops::set_real_health(&mut inst.maps, web(80), std::net::IpAddr::from(ip), false).unwrap();
    }
    ops::set_sorry_active(&mut inst.maps, web(80), true).unwrap();
    assert_eq!(inst.forwarded_to(&syn_from(bob, 1001, VIP, 80)), RS3_MAC);
    assert_eq!(inst.forwarded_to(&syn_from(alice, 1000, VIP, 80)), RS3_MAC);
    // The reals recover: templates on the sorry server end (keepalived removes it).
    for ip in [RS1_IP, RS2_IP] {
        ops::set_real_health(&mut inst.maps, web(80), std::net::IpAddr::from(ip), true).unwrap();
    }
    ops::set_sorry_active(&mut inst.maps, web(80), false).unwrap();
    for (who, sport) in [(alice, 2000), (bob, 2000), (alice, 2001), (bob, 2001)] {
        let mac = inst.forwarded_to(&syn_from(who, sport, VIP, 80));
        assert!(mac == RS1_MAC || mac == RS2_MAC, "{who} back on a real, not the sorry server");
    }
    // Quorum lost while the reals are up (keepalived removes them, adds the sorry
    // server): a template to a real gives way too.
    ops::set_sorry_active(&mut inst.maps, web(80), true).unwrap();
    assert_eq!(inst.forwarded_to(&syn_from(bob, 3000, VIP, 80)), RS3_MAC);
    let _ = bobs;
}

#[test]
fn template_lives_while_its_connections_do() {
    let mut inst = persistent_pair();
    let alice = client(1);
    let first = establish(&mut inst, alice, 1000, 80);
    assert_eq!(template_of(&inst).iter().map(|t| t.1).collect::<Vec<_>>(), [1], "it placed one connection");
    // Idle past its timeout, but its ESTABLISHED connection (900 s) lives: IPVS keeps the
    // template (it controls a connection), so the next connection still follows it
    // (rr alone would pick the other real).
    inst.age_templates(301);
    assert_eq!(inst.sweep().templates_expired, 0);
    assert_eq!(establish(&mut inst, alice, 1001, 80), first);
    assert_eq!(template_of(&inst)[0].1, 2);
    // A connection that ends (RST: CLOSE, 10 s) and expires gives its count back.
    let rst = Frame { tcp_flags: tcp::FLAG_RST, ..syn_from(alice, 1001, VIP, 80) };
    inst.forwarded_to(&rst);
    inst.age_connections(11);
    assert_eq!(inst.sweep().conns_expired, 1);
    assert_eq!(template_of(&inst)[0].1, 1);
    // The last one goes: the template is re-armed for its timeout, then expires.
    inst.age_connections(1000);
    inst.age_templates(1000);
    assert_eq!(inst.sweep().conns_expired, 1);
    assert_eq!(template_of(&inst), [(template_of(&inst)[0].0, 0)]);
    inst.age_templates(299);
    assert_eq!(inst.sweep().templates_expired, 0, "re-armed when its last connection went");
    assert_eq!(establish(&mut inst, alice, 1002, 80), first, "still followed");
    inst.age_connections(1000);
    assert_eq!(inst.sweep().conns_expired, 1);
    inst.age_templates(301);
    assert_eq!(inst.sweep().templates_expired, 1);
    assert_eq!(inst.maps.persist.iter().count(), 0);
    assert_eq!(inst.load(web(80), ip_of(first)), (0, 0));
}

#[test]
fn quiescent_template_kept_by_default_expired_on_request() {
    let mut inst = persistent_pair();
    let alice = client(1);
    let first = establish(&mut inst, alice, 1000, 80);
    ops::edit_real(&mut inst.maps, web(80), ip_of(first), weight(0)).unwrap();
    // IPVS's default (expire_quiescent_template = 0): the persistent client stays.
    assert_eq!(inst.forwarded_to(&syn_from(alice, 1001, VIP, 80)), first);
    let mut s = ops::settings(&inst.maps).unwrap();
    s.expire_quiescent_template = 1;
    ops::set_settings(&mut inst.maps, s).unwrap();
    assert_eq!(inst.forwarded_to(&syn_from(alice, 1002, VIP, 80)), other(first));
}

/// Moves the calling thread to `cpu`.
fn run_on_cpu(cpu: usize) {
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set), 0, "moving to CPU {cpu}");
    }
}

fn online_cpus() -> usize {
    std::thread::available_parallelism().map(usize::from).unwrap_or(1)
}

#[test]
fn round_robin_keeps_one_order_across_cpus() {
    // IPVS has one rr/wrr position per service: new connections alternate whichever
    // CPU their SYN is handled on. Each SYN here runs on the next CPU in turn.
    let cpus = online_cpus();
    assert!(cpus >= 2, "this test needs two CPUs to show one order across them (found {cpus})");
    let mut inst = two_reals(web(80), sched(Scheduler::Rr), [1, 1]);
    let macs: Vec<_> = (0..40u32)
        .map(|i| {
            run_on_cpu(i as usize % cpus);
            inst.forwarded_to(&syn_from(client(i), 1000, VIP, 80))
        })
        .collect();
    for (i, pair) in macs.chunks(2).enumerate() {
        assert_eq!(pair, [RS1_MAC, RS2_MAC], "connections {} and {} (CPUs {} and {})", 2 * i, 2 * i + 1, (2 * i) % cpus, (2 * i + 1) % cpus);
    }
    // wrr 1:2 likewise: one smooth sequence over all CPUs.
    let mut inst = two_reals(web(80), sched(Scheduler::Wrr), [1, 2]);
    let macs: Vec<_> = (0..30u32)
        .map(|i| {
            run_on_cpu((i as usize / 2) % cpus);
            inst.forwarded_to(&syn_from(client(i), 1000, VIP, 80))
        })
        .collect();
    assert_eq!(macs.iter().filter(|m| **m == RS1_MAC).count(), 10);
    assert_eq!(macs.split(|m| *m != RS2_MAC).map(<[_]>::len).max(), Some(2), "smooth: rs2 at most twice in a row");
    assert_eq!(macs.split(|m| *m != RS1_MAC).map(<[_]>::len).max(), Some(1));
}

#[test]
fn racing_first_packets_make_one_entry_and_reach_one_real() {
    // The first packets of one flow handled on two CPUs at once: one entry (inserted only
    // if absent; the loser follows it), one real, one count. Two threads on two CPUs send
    // the same new UDP flows, released together by a barrier for each flow.
    use std::sync::{Barrier, atomic::{AtomicBool, Ordering}};
    use aya::programs::{TestRun, TestRunOptions};
    let cpus = online_cpus();
    assert!(cpus >= 2, "this test needs two CPUs to race on (found {cpus})");
    let dns = ServiceId::Addr(Service { proto: Proto::Udp, vip: VIP.into(), port: 53 });
    let mut inst = two_reals(dns, sched(Scheduler::Rr), [1, 1]);
    const FLOWS: u16 = 3000;
    let frames: Vec<Vec<u8>> = (0..FLOWS).map(|i| Frame::udp(VIP, 53, 10_000 + i).bytes()).collect();
    let prog: &aya::programs::Xdp = xlb_core::loader::xdp(&mut inst.ebpf, xlb_core::loader::BALANCE_PROGRAM).unwrap();
    let barrier = Barrier::new(2);
    let failed = AtomicBool::new(false);
    let outcomes: Vec<Vec<(u32, [u8; 6])>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..2)
            .map(|t| {
                let (frames, barrier, failed) = (&frames, &barrier, &failed);
                s.spawn(move || {
                    run_on_cpu(t);
                    frames
                        .iter()
                        .map(|f| {
                            barrier.wait();
                            let mut out = vec![0u8; f.len() + 64];
                            let opts = TestRunOptions { data_in: Some(f), data_out: Some(&mut out), repeat: 1, ..Default::default() };
                            match prog.test_run(opts) {
                                Ok(r) => (r.return_value, out[0..6].try_into().unwrap()),
                                Err(_) => {
                                    failed.store(true, Ordering::Relaxed);
                                    (u32::MAX, [0; 6])
                                }
                            }
                        })
                        .collect()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    assert!(!failed.load(Ordering::Relaxed), "BPF_PROG_TEST_RUN failed");
    let raced_out = inst.counter(counter::DROP_CONN_RACE);
    for (i, (a, b)) in outcomes[0].iter().zip(&outcomes[1]).enumerate() {
        if a.0 == XDP_TX && b.0 == XDP_TX {
            assert_eq!(a.1, b.1, "flow {i}: its two first packets reached two reals");
        } else {
            assert!(a.0 == XDP_DROP || b.0 == XDP_DROP, "flow {i}: verdicts {} and {}", a.0, b.0);
        }
    }
    // One entry per flow, counted once.
    assert_eq!(inst.maps.conns.iter().count(), FLOWS as usize);
    let (a1, i1) = inst.load(dns, RS1_IP);
    let (a2, i2) = inst.load(dns, RS2_IP);
    assert_eq!((a1 + a2, i1 + i2), (0, FLOWS as u64), "InActConn over both reals ({raced_out} packets dropped racing)");
}

#[test]
fn first_packet_meeting_an_entry_being_removed_is_dropped_and_counted() {
    // The loser of a creation race looks the flow up again; if that entry is being
    // removed at that instant (claimed: state GONE), the packet is dropped and counted,
    // and nothing else changes (the client retransmits). The claimed entry is placed by
    // hand here: on a live system its claimer removes it a moment later.
    let mut inst = two_reals(web(80), sched(Scheduler::Rr), [1, 1]);
    let syn = syn_from(client(1), 1000, VIP, 80);
    let key = lb_common::FlowKey {
        src: lb_common::addr::from_v4(client(1).octets()),
        dst: lb_common::addr::from_v4(VIP.octets()),
        sport: 1000u16.to_be_bytes(),
        dport: 80u16.to_be_bytes(),
        proto: lb_common::PROTO_TCP,
        _pad: [0; 3],
    };
    let claimed = lb_common::ConnEntry { state: tcp::GONE, last_seen_ns: ops::table_clock_ns(), ..Default::default() };
    inst.maps.conns.insert(key, claimed, 0).unwrap();
    // The SYN is half-open (to rs1); the ACK that promotes it meets the claimed entry.
    assert_eq!(inst.forwarded_to(&syn), RS1_MAC);
    let ack = Frame { tcp_flags: tcp::FLAG_ACK, ..syn.clone() };
    assert_eq!(inst.run(&ack.bytes()).0, XDP_DROP);
    assert_eq!(inst.counter(counter::DROP_CONN_RACE), 1);
    assert_eq!((inst.load(web(80), RS1_IP), inst.load(web(80), RS2_IP)), ((0, 0), (0, 0)), "nothing counted");
    let listed = ops::connections(&inst.maps).unwrap();
    assert_eq!(listed.iter().map(|c| c.state.as_str()).collect::<Vec<_>>(), ["SYN_RECV"], "only the half-open one is listed");
    // Once it is gone, the retransmitted ACK promotes the half-open entry, to its real.
    inst.maps.conns.remove(&key).unwrap();
    assert_eq!(inst.forwarded_to(&ack), RS1_MAC);
    assert_eq!((inst.load(web(80), RS1_IP), inst.load(web(80), RS2_IP)), ((1, 0), (0, 0)));
}
