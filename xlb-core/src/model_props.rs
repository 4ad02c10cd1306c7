//! State-machine tests of the controller (issue 17 point 2): random sequences of service
//! and real adds, edits and removals, applies, `-C`, health verdicts, sorry servers,
//! connections draining and daemon restarts, run on the model over the in-memory store.
//! After every step the store holds exactly what the model says, ids are unique, a
//! service whose key stayed kept its id, and the tables and counts agree.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr},
};

use proptest::prelude::*;

use super::*;
use crate::{
    config::ServiceConfig,
    ops::{Proto, RealOptions, Scheduler, Service, ServiceId, ServiceOptions},
    reconcile,
    store::MemStore,
};

const SCHEDULERS: [Scheduler; 6] = [Scheduler::Rr, Scheduler::Wrr, Scheduler::Mh, Scheduler::Wlc, Scheduler::Sh, Scheduler::Dh];

fn ip(d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, d))
}

/// Services 0..4 are VIP:port services on one VIP, 4 a firewall-mark group.
fn sid(k: u8) -> ServiceId {
    match k % 5 {
        4 => ServiceId::Fwmark(7),
        n => ServiceId::Addr(Service { proto: Proto::Tcp, vip: ip(100), port: 80 + n as u16 }),
    }
}

fn real(r: u8) -> RealAddr {
    RealAddr { ip: ip(10 + r % 6), port: None }
}

fn opts(s: u8) -> ServiceOptions {
    ServiceOptions { scheduler: SCHEDULERS[s as usize % SCHEDULERS.len()], ..Default::default() }
}

#[derive(Clone, Debug)]
enum Step {
    AddService(u8, u8),
    EditService(u8, u8),
    DelService(u8),
    AddReal(u8, u8, u8),
    EditReal(u8, u8, u8),
    DelReal(u8, u8),
    Health(u8, u8, bool),
    Sorry(u8, Option<u8>),
    /// A client connects to a real of a service (the real id gets a connection).
    Connect(u8, u8),
    /// `xlb apply` / reload / `-R`: services (key, scheduler, reals with weights).
    Apply(Vec<(u8, u8, Vec<(u8, u8)>)>),
    /// `ipvsadm -C`.
    Clear,
    /// Every connection ends; the sweep frees what waited for them.
    Drain,
    /// The daemon restarts: a new model restored from the store.
    Restart,
}

fn step() -> impl Strategy<Value = Step> {
    let k = 0u8..5;
    let r = 0u8..6;
    prop_oneof![
        3 => (k.clone(), 0u8..6).prop_map(|(k, s)| Step::AddService(k, s)),
        1 => (k.clone(), 0u8..6).prop_map(|(k, s)| Step::EditService(k, s)),
        1 => k.clone().prop_map(Step::DelService),
        5 => (k.clone(), r.clone(), 0u8..4).prop_map(|(k, r, w)| Step::AddReal(k, r, w)),
        2 => (k.clone(), r.clone(), 0u8..4).prop_map(|(k, r, w)| Step::EditReal(k, r, w)),
        2 => (k.clone(), r.clone()).prop_map(|(k, r)| Step::DelReal(k, r)),
        2 => (k.clone(), r.clone(), any::<bool>()).prop_map(|(k, r, up)| Step::Health(k, r, up)),
        1 => (k.clone(), proptest::option::of(0u8..2)).prop_map(|(k, s)| Step::Sorry(k, s)),
        2 => (k.clone(), r.clone()).prop_map(|(k, r)| Step::Connect(k, r)),
        2 => proptest::collection::vec((k.clone(), 0u8..6, proptest::collection::vec((r.clone(), 0u8..4), 0..5)), 0..4)
            .prop_map(Step::Apply),
        1 => Just(Step::Clear),
        1 => Just(Step::Drain),
        1 => Just(Step::Restart),
    ]
}

fn config(services: &[(u8, u8, Vec<(u8, u8)>)]) -> Vec<ServiceConfig> {
    let mut by_key: BTreeMap<ServiceId, ServiceConfig> = BTreeMap::new();
    for (k, s, reals) in services {
        let id = sid(*k);
        let mut list: BTreeMap<RealAddr, RealOptions> = BTreeMap::new();
        for (r, w) in reals {
            list.insert(real(*r), RealOptions { weight: *w as u32, ..Default::default() });
        }
        by_key.insert(
            id,
            ServiceConfig {
                id,
                options: opts(*s),
                frontends: match id {
                    ServiceId::Fwmark(_) => vec![Service { proto: Proto::Udp, vip: ip(100), port: 9000 }],
                    ServiceId::Addr(_) => Vec::new(),
                },
                reals: list.into_iter().collect(),
                sorry_server: None,
                health: None,
                real_health: Default::default(),
            },
        );
    }
    by_key.into_values().collect()
}

/// The controller under test: the model, the store it writes, and which real ids have
/// connections.
struct Harness {
    model: Model,
    store: MemStore,
    conns: BTreeSet<u32>,
}

impl Harness {
    fn ids(&self) -> BTreeMap<ServiceId, u32> {
        (0..5).map(sid).filter_map(|id| self.model.find_service(id).ok().map(|i| (id, i.id))).collect()
    }

    /// `ops::batch`: all or nothing.
    fn batch(&mut self, f: impl FnOnce(&mut Model, &BTreeSet<u32>) -> Result<()>) {
        let saved = self.model.clone();
        if f(&mut self.model, &self.conns).is_err() {
            self.model = saved;
        }
    }

    fn apply(&mut self, to: Vec<ServiceConfig>) {
        self.batch(|m, conns| {
            let from = m.services();
            reconcile::apply_to_model(m, &from, &to, &mut |ips| vec![NextHop::default(); ips.len()], &mut |id| conns.contains(&id))
                .map(drop)
        });
    }

    fn run(&mut self, step: &Step) {
        let m = &mut self.model;
        let hop = NextHop::default();
        let single = match step {
            Step::AddService(k, s) => m.add_service(sid(*k), opts(*s)).map(drop),
            Step::EditService(k, s) => m.edit_service(sid(*k), opts(*s)),
            Step::DelService(k) => {
                let conns = &self.conns;
                m.remove_service(sid(*k), &mut |id| conns.contains(&id))
            }
            Step::AddReal(k, r, w) => m.add_real(sid(*k), real(*r), RealOptions { weight: *w as u32, ..Default::default() }, hop).map(drop),
            Step::EditReal(k, r, w) => m.edit_real(sid(*k), real(*r), RealOptions { weight: *w as u32, ..Default::default() }),
            Step::DelReal(k, r) => m.remove_real(sid(*k), real(*r)),
            Step::Health(k, r, up) => m.set_real_health(sid(*k), real(*r), *up),
            Step::Sorry(k, s) => m.set_sorry_server(sid(*k), s.map(|s| (ip(50 + s), hop))),
            Step::Connect(k, r) => {
                let want = addr::from_ip(real(*r).ip);
                let ids = m.real_ids_of(sid(*k)).unwrap_or_default();
                if let Some(id) = ids.into_iter().find(|id| m.reals.get(id).is_some_and(|e| e.ip == want && !e.removed())) {
                    self.conns.insert(id);
                }
                Ok(())
            }
            Step::Apply(services) => {
                self.apply(config(services));
                Ok(())
            }
            Step::Clear => {
                self.apply(Vec::new());
                Ok(())
            }
            Step::Drain => {
                self.conns.clear();
                for id in m.removed_reals() {
                    assert!(m.free_real(id));
                }
                m.purge_empty_trash();
                Ok(())
            }
            Step::Restart => {
                let restored = Model::restore(&self.store, self.model.limits()).unwrap();
                assert_eq!(restored.contents(), self.model.contents(), "a restart reads back what was written");
                assert_eq!(restored.services(), self.model.services());
                self.model = restored;
                Ok(())
            }
        };
        if single.is_err() {
            assert!(!self.model.has_pending() || matches!(step, Step::Drain), "a refused {step:?} changed the model");
        }
    }

    fn check(&self, before: &BTreeMap<ServiceId, u32>, step: &Step) {
        assert_eq!(self.store.contents, self.model.contents(), "after {step:?}: the store holds what the model says");
        self.model.check_invariants().unwrap_or_else(|e| panic!("after {step:?}: {e:#}"));
        let after = self.ids();
        for (id, sid) in &after {
            if let Some(old) = before.get(id) {
                assert_eq!(old, sid, "after {step:?}: {id} stayed and changed id");
            }
        }
        let configs = self.model.services();
        assert_eq!(configs.len(), after.len(), "every live service is listed once");
        for cfg in &configs {
            let sid = after[&cfg.id];
            let info = self.store.contents.infos[&sid];
            let (list, table) = self.store.service_tables(sid).unwrap();
            let reals = &self.store.contents.reals;
            // The real list holds live reals of this service only, each once.
            assert_eq!(list.iter().collect::<BTreeSet<_>>().len(), list.len());
            for id in &list {
                let r = reals.get(id).unwrap_or_else(|| panic!("after {step:?}: pool lists real {id}, not in REALS"));
                assert_eq!(r.service_id, sid);
                assert!(!r.removed(), "after {step:?}: a removed real is scheduled");
            }
            assert!(table.iter().all(|id| list.contains(id)), "after {step:?}: the table names a real not in the list");
            // Counts: the configured reals are the service's live, non-sorry ones.
            let live = reals.values().filter(|r| r.service_id == sid && !r.removed() && !r.sorry()).count();
            assert_eq!(live, cfg.reals.len(), "after {step:?}");
            let healthy = reals.values().filter(|r| r.service_id == sid && !r.removed() && !r.sorry() && !r.health_down()).count();
            if info.flags & lb_common::svc_flags::SORRY_ACTIVE == 0 {
                assert_eq!(list.len(), healthy, "after {step:?}: the list holds the healthy reals");
            }
        }
    }
}

fn run(steps: &[Step]) {
    let mut h = Harness { model: Model::default(), store: MemStore::default(), conns: BTreeSet::new() };
    for step in steps {
        let before = h.ids();
        h.run(step);
        h.model.commit(&mut h.store).unwrap();
        h.check(&before, step);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_operation_sequences_keep_model_and_maps_in_step(steps in proptest::collection::vec(step(), 1..40)) {
        run(&steps);
    }
}
