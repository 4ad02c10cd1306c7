//! The model and its diffs against the in-memory store: golden map contents for a small
//! configuration, writes limited to what changed, id reuse, restore, trash. No root.
use std::net::{IpAddr, Ipv4Addr};

use lb_common::{PROTO_TCP, RealEntry, ServiceInfo, ServiceKey, addr, real_flags, sched, svc_flags};

use super::*;
use crate::{
    config::ServiceConfig,
    ops::{Persistence, Proto, RealOptions, Scheduler, Service, ServiceId, ServiceOptions},
    reconcile,
    store::MemStore,
};

fn v4(d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, d))
}

fn svc(port: u16) -> ServiceId {
    ServiceId::Addr(Service { proto: Proto::Tcp, vip: v4(100), port })
}

fn sched(s: Scheduler) -> ServiceOptions {
    ServiceOptions { scheduler: s, ..Default::default() }
}

fn w(weight: u32) -> RealOptions {
    RealOptions { weight, ..Default::default() }
}

fn real(d: u8) -> RealAddr {
    RealAddr { ip: v4(d), port: None }
}

fn service(id: ServiceId, opts: ServiceOptions, reals: &[(u8, u32)]) -> ServiceConfig {
    ServiceConfig {
        id,
        options: opts,
        frontends: Vec::new(),
        reals: reals.iter().map(|&(d, weight)| (real(d), w(weight))).collect(),
        sorry_server: None,
        health: None,
        real_health: Default::default(),
    }
}

/// Applies `to` over what the model holds, as `xlb apply` does (no connections), and
/// commits; returns the commit's writes.
fn apply(m: &mut Model, store: &mut MemStore, to: &[ServiceConfig]) -> Writes {
    let from = m.services();
    reconcile::apply_to_model(m, &from, to, &mut |ips| vec![NextHop::default(); ips.len()], &mut |_| false).unwrap();
    m.commit(store).unwrap()
}

fn one_client_mask() -> [u8; 16] {
    addr::v4_mask([255; 4])
}

#[test]
fn a_small_config_gives_exactly_these_map_entries() {
    let (mut m, mut store) = (Model::default(), MemStore::default());
    let mut group = service(ServiceId::Fwmark(7), sched(Scheduler::Wlc), &[(13, 3)]);
    group.frontends = vec![Service { proto: Proto::Tcp, vip: v4(100), port: 443 }];
    apply(&mut m, &mut store, &[service(svc(80), sched(Scheduler::Rr), &[(11, 1), (12, 2)]), group]);

    let c = &store.contents;
    let key = |port| ServiceKey::new(addr::from_ip(v4(100)), port, PROTO_TCP);
    assert_eq!(c.frontends.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>(), vec![(key(80), 0), (key(443), 1)]);
    let info0 = ServiceInfo {
        id: 0,
        scheduler: sched::RR,
        flags: 0,
        persist_timeout: 0,
        persist_mask: one_client_mask(),
        fwmark: 0,
        reals_off: 0,
        reals_len: 2,
        table_off: 2,
        table_len: 2,
    };
    let info1 = ServiceInfo {
        id: 1,
        scheduler: sched::WLC,
        fwmark: 7,
        reals_off: 4,
        reals_len: 1,
        table_off: 0,
        table_len: 0,
        ..info0
    };
    assert_eq!(c.infos.values().copied().collect::<Vec<_>>(), vec![info0, info1]);
    let entry = |d: u8, port: u16, sid: u32, weight: u32| RealEntry {
        ip: addr::from_ip(v4(d)),
        port: port.to_be_bytes(),
        service_id: sid,
        weight,
        ..Default::default()
    };
    assert_eq!(
        c.reals.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>(),
        vec![(0, entry(11, 80, 0, 1)), (1, entry(12, 80, 0, 2)), (2, entry(13, 0, 1, 3))]
    );
    assert_eq!(c.vips.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>(), vec![(addr::from_ip(v4(100)), 2)]);
    // rr: the real list, then the sequence of weight>0 reals; the group's real list.
    assert_eq!(store.pool.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>(), vec![(0, 0), (1, 1), (2, 0), (3, 1), (4, 2)]);
    assert_eq!(store.reset_reals, vec![0, 1, 2], "fresh real ids start with zeroed counters");
    assert_eq!(store.reset_services, vec![0, 1]);
    assert_eq!(store.commits, 1, "one apply, one commit");
    m.check_invariants().unwrap();
}

#[test]
fn a_change_writes_only_its_diff() {
    let (mut m, mut store) = (Model::default(), MemStore::default());
    let reals: Vec<(u8, u32)> = (1..=10).map(|d| (d, 1)).collect();
    let cfg = vec![service(svc(80), sched(Scheduler::Wlc), &reals), service(svc(81), sched(Scheduler::Rr), &reals)];
    apply(&mut m, &mut store, &cfg);
    // The same config again: nothing at all.
    assert!(apply(&mut m, &mut store, &cfg).is_empty());
    // A weight on a scanning scheduler: the real's entry only (its list is unchanged).
    m.edit_real(svc(80), real(3), w(5)).unwrap();
    let writes = m.commit(&mut store).unwrap();
    assert_eq!(writes.entries(), 1, "{writes:?}");
    assert_eq!(writes.reals.len(), 1);
    // A real added to an rr service: its entry, a fresh real list and table, the flip.
    let before = store.contents.infos[&1];
    m.add_real(svc(81), real(11), w(1), NextHop::default()).unwrap();
    let writes = m.commit(&mut store).unwrap();
    assert_eq!((writes.reals.len(), writes.infos.len(), writes.pool.len()), (1, 1, 2), "{writes:?}");
    let after = store.contents.infos[&1];
    assert_eq!((after.reals_len, after.table_len), (11, 11));
    let old = before.reals_off..before.table_off + before.table_len;
    assert!(!old.contains(&after.reals_off) && !old.contains(&after.table_off), "written beside the regions in use");
    // The old regions are free again afterwards: the next table takes them; the real
    // list, unchanged by a weight, stays.
    m.edit_real(svc(81), real(11), w(0)).unwrap();
    let writes = m.commit(&mut store).unwrap();
    assert_eq!(store.contents.infos[&1].table_off, before.reals_off);
    assert_eq!(store.contents.infos[&1].reals_off, after.reals_off);
    assert_eq!((writes.reals.len(), writes.infos.len(), writes.pool.len()), (1, 1, 1), "{writes:?}");
    m.check_invariants().unwrap();
}

#[test]
fn ids_come_lowest_first_from_the_free_list() {
    let (mut m, mut store) = (Model::default(), MemStore::default());
    for port in 1..=3 {
        assert_eq!(m.add_service(svc(port), sched(Scheduler::Rr)).unwrap(), port as u32 - 1);
    }
    for d in 1..=4 {
        assert_eq!(m.add_real(svc(1), real(d), w(1), NextHop::default()).unwrap(), d as u32 - 1);
    }
    m.commit(&mut store).unwrap();
    m.remove_service(svc(2), &mut |_| false).unwrap();
    m.remove_real(svc(1), real(2)).unwrap();
    m.commit(&mut store).unwrap();
    // The removed real keeps its id until it is freed (its connections drained).
    assert_eq!(m.add_real(svc(3), real(9), w(1), NextHop::default()).unwrap(), 4);
    assert!(m.free_real(1));
    assert_eq!(m.add_service(svc(4), sched(Scheduler::Rr)).unwrap(), 1, "service id 1 was free");
    assert_eq!(m.add_real(svc(4), real(9), w(1), NextHop::default()).unwrap(), 1, "real id 1 was freed");
    m.commit(&mut store).unwrap();
    assert_eq!(store.reset_reals.iter().filter(|&&id| id == 1).count(), 2, "a reused real id starts from zero again");
    m.check_invariants().unwrap();
}

#[test]
fn a_restored_model_continues_where_the_old_one_stopped() {
    let (mut m, mut store) = (Model::default(), MemStore::default());
    let cfg: Vec<ServiceConfig> = (1..=5).map(|p| service(svc(p), sched(Scheduler::Mh), &[(1, 1), (2, 1), (3, 2)])).collect();
    apply(&mut m, &mut store, &cfg);
    m.remove_service(svc(2), &mut |_| false).unwrap();
    m.commit(&mut store).unwrap();
    // A restart: the new process reads the maps back.
    let mut restored = Model::restore(&store, Limits::default()).unwrap();
    assert_eq!(restored.contents(), m.contents());
    assert_eq!(restored.services(), m.services());
    restored.check_invariants().unwrap();
    // The daemon applies its saved config again: no service changes id, nothing moves
    // but the tables it has not written itself (rebuilt only when their service changes).
    let writes = apply(&mut restored, &mut store, &m.services());
    assert!(writes.is_empty(), "{writes:?}");
    // Both give out the same ids next.
    let a = m.add_service(svc(9), sched(Scheduler::Rr)).unwrap();
    let b = restored.add_service(svc(9), sched(Scheduler::Rr)).unwrap();
    assert_eq!((a, b), (1, 1));
    let (ra, rb) = (
        m.add_real(svc(9), real(7), w(1), NextHop::default()).unwrap(),
        restored.add_real(svc(9), real(7), w(1), NextHop::default()).unwrap(),
    );
    assert_eq!(ra, rb);
    // And pool regions do not collide with the tables written before the restart.
    restored.commit(&mut store).unwrap();
    restored.check_invariants().unwrap();
}

#[test]
fn a_service_removed_with_connections_waits_in_the_trash_under_its_id() {
    let (mut m, mut store) = (Model::default(), MemStore::default());
    apply(&mut m, &mut store, &[service(svc(80), sched(Scheduler::Rr), &[(11, 1), (12, 1)])]);
    // ipvsadm -C with no connection: the service is gone at once; its reals, marked
    // removed, wait for the sweep (which frees them, having no connections).
    apply(&mut m, &mut store, &[]);
    assert!(store.contents.infos.is_empty() && store.contents.frontends.is_empty() && store.contents.vips.is_empty());
    assert!(store.contents.reals.values().all(|r| r.flags & real_flags::REMOVED != 0));
    for id in m.removed_reals() {
        assert!(m.free_real(id));
    }
    m.commit(&mut store).unwrap();
    assert_eq!(store.contents, Contents::default());
    // Again, now with a connection on real id 0.
    apply(&mut m, &mut store, &[service(svc(80), sched(Scheduler::Rr), &[(11, 1), (12, 1)])]);
    let from = m.services();
    reconcile::apply_to_model(&mut m, &from, &[], &mut |ips| vec![NextHop::default(); ips.len()], &mut |id| id == 0).unwrap();
    m.commit(&mut store).unwrap();
    let c = &store.contents;
    assert_eq!(c.infos[&0].flags, svc_flags::TRASHED, "still there, marked trashed");
    assert_eq!((c.infos[&0].reals_len, c.infos[&0].table_len), (0, 0));
    assert!(c.reals.values().all(|r| r.flags & real_flags::REMOVED != 0));
    assert!(c.vips.is_empty(), "a trashed service's frontends count for no VIP");
    assert_eq!(c.frontends.len(), 1, "its frontend stays, so its packets are dropped");
    // -R: the service comes back under its id, and its reals under theirs.
    apply(&mut m, &mut store, &[service(svc(80), sched(Scheduler::Rr), &[(11, 1), (12, 1)])]);
    assert_eq!(store.contents.infos[&0].flags & svc_flags::TRASHED, 0);
    assert_eq!(store.contents.frontends.values().copied().collect::<Vec<_>>(), vec![0]);
    assert_eq!(store.contents.reals.keys().copied().collect::<Vec<_>>(), vec![0, 1]);
    assert!(store.contents.reals.values().all(|r| r.flags & real_flags::REMOVED == 0));
    // Removed again, its connections then gone: the sweep frees reals, then the service.
    let from = m.services();
    reconcile::apply_to_model(&mut m, &from, &[], &mut |ips| vec![NextHop::default(); ips.len()], &mut |id| id == 1).unwrap();
    for id in m.removed_reals() {
        assert!(m.free_real(id));
    }
    assert_eq!(m.purge_empty_trash(), 1);
    m.commit(&mut store).unwrap();
    assert_eq!(store.contents, Contents::default());
    m.check_invariants().unwrap();
}

#[test]
fn a_failed_change_changes_nothing() {
    let (mut m, mut store) = (Model::default(), MemStore::default());
    apply(&mut m, &mut store, &[service(svc(80), sched(Scheduler::Rr), &[(11, 1)])]);
    let before = m.contents();
    assert!(m.add_real(svc(80), real(11), w(1), NextHop::default()).unwrap_err().to_string().contains("Destination already exists"));
    assert!(m.add_service(svc(80), sched(Scheduler::Rr)).unwrap_err().to_string().contains("Service already exists"));
    assert!(m.edit_real(svc(80), real(12), w(1)).unwrap_err().to_string().contains("No such destination"));
    let v6 = RealAddr { ip: "2001:db8::1".parse().unwrap(), port: None };
    assert!(m.add_real(svc(80), v6, w(1), NextHop::default()).is_err());
    assert!(!m.has_pending());
    assert_eq!(m.contents(), before);
    let persist = ServiceOptions {
        persistence: Some(Persistence { timeout: 0, netmask: crate::ops::ONE_CLIENT }),
        ..Default::default()
    };
    assert!(m.edit_service(svc(80), persist).is_err());
    assert!(m.commit(&mut store).unwrap().is_empty());
}

#[test]
fn limits_refuse_with_ipvs_words() {
    let limits = Limits { services: 2, reals: 3, reals_per_service: 2, pool_slots: 6 };
    let mut m = Model::new(limits);
    m.add_service(svc(1), sched(Scheduler::Rr)).unwrap();
    m.add_service(svc(2), sched(Scheduler::Rr)).unwrap();
    assert!(m.add_service(svc(3), sched(Scheduler::Rr)).unwrap_err().to_string().contains("too many services (at most 2, xlb run --max-services)"));
    m.add_real(svc(1), real(1), w(1), NextHop::default()).unwrap();
    m.add_real(svc(1), real(2), w(1), NextHop::default()).unwrap();
    assert!(m.add_real(svc(1), real(3), w(1), NextHop::default()).unwrap_err().to_string().contains("at most 2"));
    m.add_real(svc(2), real(3), w(1), NextHop::default()).unwrap();
    assert!(m.add_real(svc(2), real(4), w(1), NextHop::default()).unwrap_err().to_string().contains("at most 3"));
    // 2 + 2 slots for service 1, 1 + 1 for service 2: 6 fit; a third real would not.
    let mut store = MemStore::default();
    m.commit(&mut store).unwrap();
    m.check_invariants().unwrap();
}

#[test]
fn the_pool_is_first_fit_and_merges_freed_regions() {
    let mut p = Pool::new(100, [(10u32, 10u32), (40, 10)].into_iter());
    assert_eq!(p.alloc(10), Some(0));
    assert_eq!(p.alloc(15), Some(20));
    assert_eq!(p.alloc(5), Some(35));
    assert_eq!(p.alloc(60), None);
    p.release(10, 10);
    p.release(0, 10);
    p.release(20, 15);
    assert_eq!(p.alloc(35), Some(0), "three neighbours merged");
    assert_eq!(p.alloc(50), Some(50));
    assert_eq!(p.alloc(1), None);
    assert_eq!(p.alloc(0), Some(0), "an empty region takes no slot");
}

#[test]
fn a_large_table_is_double_buffered_and_rewritten_only_where_it_differs() {
    let (mut m, mut store) = (Model::default(), MemStore::default());
    let reals: Vec<(u8, u32)> = (1..=20).map(|d| (d, 1)).collect();
    apply(&mut m, &mut store, &[service(svc(80), sched(Scheduler::Mh), &reals)]);
    let first = store.contents.infos[&0];
    // A weight: a fresh table (its old region kept as the spare); the real list stays.
    m.edit_real(svc(80), real(1), w(2)).unwrap();
    let w1 = m.commit(&mut store).unwrap();
    let second = store.contents.infos[&0];
    assert_eq!(w1.pool.iter().map(|(_, v)| v.len()).sum::<usize>(), lb_common::hash::MH_TABLE_SIZE as usize);
    assert_eq!(second.reals_off, first.reals_off, "an unchanged real list is not rewritten");
    assert_ne!(second.table_off, first.table_off);
    // Another weight: written into the spare (the first table's region), only the
    // slots that differ from it, then flipped.
    m.edit_real(svc(80), real(2), w(3)).unwrap();
    let w2 = m.commit(&mut store).unwrap();
    let third = store.contents.infos[&0];
    assert_eq!(third.table_off, first.table_off, "the spare region took the table");
    assert!(w2.pool.is_empty() && !w2.pool_slots.is_empty());
    assert!(w2.pool_slots.len() < lb_common::hash::MH_TABLE_SIZE as usize / 4, "{} slots", w2.pool_slots.len());
    // What the fast path reads equals a table built from scratch.
    let (mut fresh, mut fresh_store) = (Model::default(), MemStore::default());
    let mut want = reals.clone();
    want[0].1 = 2;
    want[1].1 = 3;
    apply(&mut fresh, &mut fresh_store, &[service(svc(80), sched(Scheduler::Mh), &want)]);
    assert_eq!(store.service_tables(0), fresh_store.service_tables(0));
    m.check_invariants().unwrap();
    // Removed, the service frees its table, its spare and its list.
    m.remove_service(svc(80), &mut |_| false).unwrap();
    m.commit(&mut store).unwrap();
    m.check_invariants().unwrap();
    assert_eq!(m.pool.free, Pool::new(m.limits.pool_slots, std::iter::empty()).free, "the whole pool is free again");
}

/// Issue 15: directors that hold the same mh service, its reals added in different
/// orders and given different ids, have the same Maglev table real for real, so a flow
/// ECMP moves from one director to another meets the same real.
#[test]
fn maglev_tables_agree_across_directors_whatever_the_order_and_ids() {
    let table_by_address = |store: &MemStore, sid: u32| -> Vec<[u8; 16]> {
        let (_, table) = store.service_tables(sid).unwrap();
        table.iter().map(|id| store.contents.reals[id].ip).collect()
    };
    let reals: Vec<(u8, u32)> = vec![(11, 1), (12, 1), (13, 2), (14, 1), (15, 1)];
    let (mut a, mut a_store) = (Model::default(), MemStore::default());
    apply(&mut a, &mut a_store, &[service(svc(80), sched(Scheduler::Mh), &reals)]);
    // Director B: another service first (its reals take the low ids), then the reals in
    // reverse order, one of them added, removed and added again.
    let (mut b, mut b_store) = (Model::default(), MemStore::default());
    let other = service(svc(81), sched(Scheduler::Rr), &[(21, 1), (22, 1), (23, 1)]);
    let mut reversed = reals.clone();
    reversed.reverse();
    apply(&mut b, &mut b_store, &[other.clone(), service(svc(80), sched(Scheduler::Mh), &reversed[..4])]);
    apply(&mut b, &mut b_store, &[other.clone(), service(svc(80), sched(Scheduler::Mh), &reversed)]);
    let sid_b = b_store.contents.frontends.iter().find(|(k, _)| k.port == 80u16.to_be_bytes()).map(|(_, &s)| s).unwrap();
    let sid_a = a_store.contents.frontends.values().copied().next().unwrap();
    let ids_a: Vec<u32> = a_store.service_tables(sid_a).unwrap().0;
    let ids_b: Vec<u32> = b_store.service_tables(sid_b).unwrap().0;
    assert_ne!(ids_a, ids_b, "the test gives the reals other ids on B");
    assert_eq!(table_by_address(&a_store, sid_a), table_by_address(&b_store, sid_b));
    // And a weight changed on both, in either order of edits, still agrees.
    a.edit_real(svc(80), real(12), w(3)).unwrap();
    a.commit(&mut a_store).unwrap();
    b.edit_real(svc(80), real(12), w(3)).unwrap();
    b.commit(&mut b_store).unwrap();
    assert_eq!(table_by_address(&a_store, sid_a), table_by_address(&b_store, sid_b));
}

/// The VIPs announced by BGP (see `bgp`): a VIP while one of its services has `quorum`
/// reals that take new connections.
#[test]
fn a_vip_is_announced_while_one_of_its_services_has_quorum() {
    let (mut m, mut store) = (Model::default(), MemStore::default());
    let vip = |d: u8| ServiceId::Addr(Service { proto: Proto::Tcp, vip: v4(d), port: 80 });
    let set = |d: &[u8]| d.iter().map(|&d| v4(d)).collect::<std::collections::BTreeSet<_>>();
    // VIP .100: two reals on :80; VIP .101: one real; a group with VIPs .102 and .103.
    let mut group = service(ServiceId::Fwmark(7), sched(Scheduler::Wlc), &[(31, 1), (32, 1), (33, 1)]);
    group.frontends = vec![
        Service { proto: Proto::Tcp, vip: v4(102), port: 443 },
        Service { proto: Proto::Udp, vip: v4(103), port: 53 },
    ];
    let mut cfg = vec![
        service(vip(100), sched(Scheduler::Rr), &[(11, 1), (12, 1)]),
        service(vip(101), sched(Scheduler::Rr), &[(21, 1)]),
        group,
    ];
    apply(&mut m, &mut store, &cfg);
    assert_eq!(m.vips_with_quorum(1), set(&[100, 101, 102, 103]));
    assert_eq!(m.vips_with_quorum(0), set(&[100, 101, 102, 103]), "quorum 0 means 1");
    assert_eq!(m.vips_with_quorum(2), set(&[100, 102, 103]));
    assert_eq!(m.vips_with_quorum(3), set(&[102, 103]), "a group's reals count for each of its VIPs");
    assert_eq!(m.vips_with_quorum(4), set(&[]));

    // Weight 0 (quiesced): no new connections, not counted.
    m.edit_real(vip(100), real(12), w(0)).unwrap();
    m.commit(&mut store).unwrap();
    assert_eq!(m.vips_with_quorum(2), set(&[102, 103]));
    m.edit_real(vip(100), real(12), w(5)).unwrap();
    // Failed by its health check: not counted; back up, counted again.
    m.set_real_health(ServiceId::Fwmark(7), real(31), false).unwrap();
    m.commit(&mut store).unwrap();
    assert_eq!(m.vips_with_quorum(2), set(&[100, 102, 103]));
    assert_eq!(m.vips_with_quorum(3), set(&[]));
    m.set_real_health(ServiceId::Fwmark(7), real(31), true).unwrap();
    m.commit(&mut store).unwrap();
    assert_eq!(m.vips_with_quorum(3), set(&[102, 103]));
    // Removed (kept in the trash while it has connections): not counted.
    m.remove_real(vip(101), real(21)).unwrap();
    m.commit(&mut store).unwrap();
    assert_eq!(m.vips_with_quorum(1), set(&[100, 102, 103]));
    // A sorry server takes connections only instead of the reals: it is no quorum.
    m.set_sorry_server(vip(101), Some((v4(99), NextHop::default()))).unwrap();
    m.commit(&mut store).unwrap();
    assert_eq!(m.vips_with_quorum(1), set(&[100, 102, 103]));

    // A VIP with two services: announced while either has quorum (any port, any protocol).
    cfg = vec![
        service(vip(100), sched(Scheduler::Rr), &[(11, 1)]),
        service(ServiceId::Addr(Service { proto: Proto::Udp, vip: v4(100), port: 53 }), sched(Scheduler::Rr), &[(11, 1), (12, 1)]),
    ];
    apply(&mut m, &mut store, &cfg);
    assert_eq!(m.vips_with_quorum(2), set(&[100]), "the UDP service has two reals");
    m.set_real_health(cfg[1].id, real(12), false).unwrap();
    m.commit(&mut store).unwrap();
    assert_eq!(m.vips_with_quorum(2), set(&[]));
    // A service removed with connections waits in the trash: it announces nothing.
    m.remove_service(cfg[0].id, &mut |_| true).unwrap();
    m.commit(&mut store).unwrap();
    assert_eq!(m.vips_with_quorum(1), set(&[100]), "the UDP service still has one real up");
    m.remove_service(cfg[1].id, &mut |_| true).unwrap();
    m.commit(&mut store).unwrap();
    assert_eq!(m.vips_with_quorum(1), set(&[]));

    // IPv6, and a model restored from the maps (a restarted daemon) gives the same set.
    let v6 = "2001:db8::100".parse().unwrap();
    let svc6 = ServiceId::Addr(Service { proto: Proto::Tcp, vip: v6, port: 80 });
    let mut s6 = service(svc6, sched(Scheduler::Rr), &[]);
    s6.reals = vec![(RealAddr { ip: "2001:db8::11".parse().unwrap(), port: None }, w(1))];
    apply(&mut m, &mut store, &[s6, service(vip(101), sched(Scheduler::Rr), &[(21, 1)])]);
    assert_eq!(m.vips_with_quorum(1), [v6, v4(101)].into_iter().collect());
    let restored = Model::restore(&store, Limits::default()).unwrap();
    assert_eq!(restored.vips_with_quorum(1), m.vips_with_quorum(1));
    m.check_invariants().unwrap();
}

/// Whether `addr`'s bit is set in the filter half at `half` of the store's ADDR_FILTER.
fn filtered(store: &MemStore, half: u32, ip: IpAddr) -> bool {
    let (w, m) = lb_common::addr_filter::slot(&addr::from_ip(ip));
    store.contents.filter.get((half + w) as usize).is_some_and(|word| word & m != 0)
}

/// The filter built whole from the store's tables (`addr_filter::build`), as the store
/// holds it (empty when all zero): what the model's incremental counting must give.
fn filter_built_whole(store: &MemStore) -> Vec<u64> {
    let c = &store.contents;
    let vips = c.frontends.keys().map(|k| &k.vip).chain(c.vips.keys());
    let words = lb_common::addr_filter::build(vips, c.reals.values().map(|r| &r.ip));
    if words.iter().all(|w| *w == 0) { Vec::new() } else { words.to_vec() }
}

#[test]
fn the_address_filter_holds_every_vip_and_real_and_loses_them_after_the_tables() {
    use lb_common::addr_filter::{DST, SRC};
    let (mut m, mut store) = (Model::default(), MemStore::default());
    let w = apply(&mut m, &mut store, &[service(svc(80), sched(Scheduler::Rr), &[(1, 1), (2, 1)])]);
    assert!(filtered(&store, DST, v4(100)) && filtered(&store, SRC, v4(1)) && filtered(&store, SRC, v4(2)));
    assert!(!filtered(&store, DST, v4(1)), "a real is not a VIP");
    // Bits come in the commit's first writes, ahead of the frontend that names the VIP.
    assert!(!w.filter_before.is_empty() && w.filter_after.is_empty(), "{w:?}");
    assert_eq!(m.contents(), store.contents);
    assert_eq!(store.contents.filter, filter_built_whole(&store));
    // An unchanged apply writes no filter word.
    let again = apply(&mut m, &mut store, &[service(svc(80), sched(Scheduler::Rr), &[(1, 1), (2, 1)])]);
    assert!(again.filter_before.is_empty() && again.filter_after.is_empty(), "{again:?}");
    // Real 2 leaves the service but is kept (removed) for its connections, whose NAT
    // replies may still come: still in the filter.
    apply(&mut m, &mut store, &[service(svc(80), sched(Scheduler::Rr), &[(1, 1)])]);
    assert!(filtered(&store, SRC, v4(2)) && filtered(&store, SRC, v4(1)));
    // The service gone: the VIP's bit is cleared in the commit's last writes; the
    // reals stay (removed, until the sweep finds them without connections).
    let w = apply(&mut m, &mut store, &[]);
    assert!(w.filter_before.is_empty() && !w.filter_after.is_empty(), "{w:?}");
    assert!(!filtered(&store, DST, v4(100)) && filtered(&store, SRC, v4(1)) && filtered(&store, SRC, v4(2)));
    assert_eq!(m.contents(), store.contents);
    assert_eq!(store.contents.filter, filter_built_whole(&store));
    // A model restored from a store with stale bits clears them at its first commit.
    let mut stale = MemStore::default();
    stale.contents.filter = vec![u64::MAX; lb_common::addr_filter::WORDS as usize];
    let mut restored = Model::restore(&stale, Limits::default()).unwrap();
    apply(&mut restored, &mut stale, &[service(svc(80), sched(Scheduler::Rr), &[(1, 1)])]);
    assert!(filtered(&stale, DST, v4(100)) && !filtered(&stale, DST, v4(2)));
    assert_eq!(stale.contents.filter.iter().map(|w| w.count_ones()).sum::<u32>(), 2);
    // Counted one change at a time, the filter stays the one built whole: many services
    // and reals added, edited, moved, removed.
    let (mut m, mut store) = (Model::default(), MemStore::default());
    for round in 0..6u8 {
        let cfg: Vec<ServiceConfig> = (0..20u16)
            .filter(|i| (i + u16::from(round)) % 3 != 0)
            .map(|i| service(svc(1000 + i), sched(Scheduler::Rr), &[(1 + (i as u8 + round) % 40, 1), (50 + round, 2)]))
            .collect();
        apply(&mut m, &mut store, &cfg);
        assert_eq!(store.contents.filter, filter_built_whole(&store), "round {round}");
    }
}
