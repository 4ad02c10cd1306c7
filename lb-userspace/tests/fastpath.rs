//! The real XDP object through BPF_PROG_TEST_RUN: each test loads its own instance
//! (test runs change the program's maps) and checks verdicts, exact output bytes and
//! counters against the fixture table.
use aya::{
    Ebpf,
    programs::{TestRun, TestRunOptions},
};
use lb_common::counter;
use lb_userspace::{
    fixtures::{self, Expected, Frame, POOL, RS1_MAC, RS2_MAC, VIP, XDP_PASS, XDP_TX},
    loader, maps::Maps, ops,
};

struct Instance {
    ebpf: Ebpf,
    maps: Maps,
}

fn instance() -> Instance {
    assert_eq!(unsafe { libc::geteuid() }, 0, "these tests load XDP programs: run them as root (cargo xtask test)");
    let mut ebpf = loader::load(loader::BALANCE_PROGRAM).expect("load the XDP object");
    let mut maps = Maps::take(&mut ebpf, None).expect("maps");
    fixtures::install_services(&mut maps).expect("install fixture services");
    Instance { ebpf, maps }
}

impl Instance {
    /// One run of the program on `frame`: (verdict, output frame).
    fn run(&mut self, frame: &[u8]) -> (u32, Vec<u8>) {
        let prog = loader::xdp(&mut self.ebpf, loader::BALANCE_PROGRAM).unwrap();
        let mut out = vec![0u8; frame.len() + 512];
        let opts = TestRunOptions { data_in: Some(frame), data_out: Some(&mut out), repeat: 1, ..Default::default() };
        let res = prog.test_run(opts).expect("BPF_PROG_TEST_RUN");
        out.truncate(res.data_size_out as usize);
        (res.return_value, out)
    }

    fn counters(&self) -> Vec<u64> {
        ops::counters(&self.maps).unwrap().into_iter().map(|(_, v)| v).collect()
    }

    /// The MAC each new flow of POOL is routed to, for `n` new flows.
    fn pool_macs(&mut self, sports: impl Iterator<Item = u16>) -> Vec<[u8; 6]> {
        sports
            .map(|sport| {
                let (verdict, out) = self.run(&Frame::tcp(VIP, POOL.port, sport).bytes());
                assert_eq!(verdict, XDP_TX);
                out[0..6].try_into().unwrap()
            })
            .collect()
    }
}

/// Keeps this thread on one CPU: round robin's cursor is per CPU.
fn pin_to_cpu0() {
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        assert_eq!(libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set), 0);
    }
}

#[test]
fn fixture_table() {
    let mut inst = instance();
    for case in fixtures::dr_cases() {
        let before = inst.counters();
        let (verdict, out) = inst.run(&case.input);
        assert_eq!(verdict, case.verdict, "{}: verdict", case.name);
        match &case.output {
            Expected::Unchanged => assert_eq!(out, case.input, "{}: frame must pass untouched", case.name),
            Expected::Frame(want) => assert_eq!(&out, want, "{}: output bytes", case.name),
        }
        let after = inst.counters();
        for (i, (b, a)) in before.iter().zip(&after).enumerate() {
            let want = if i as u32 == case.counter { b + 1 } else { *b };
            assert_eq!(*a, want, "{}: counter {}", case.name, counter::NAMES[i]);
        }
    }
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
    pin_to_cpu0();
    let mut inst = instance();
    for sport in [41000u16, 41001, 41002, 41003] {
        let first = inst.pool_macs(std::iter::once(sport))[0];
        // Later packets of the same flow (ACKs, data) go to the same real, even though
        // round robin has moved on for new flows in between.
        let _other = inst.pool_macs(std::iter::once(sport + 1000));
        for flags in [0x10u8, 0x18, 0x11] {
            let pkt = Frame { tcp_flags: flags, ..Frame::tcp(VIP, POOL.port, sport) };
            let (verdict, out) = inst.run(&pkt.bytes());
            assert_eq!(verdict, XDP_TX);
            assert_eq!(out[0..6], first, "flow {sport} moved to another real");
        }
    }
    let pool = ops::snapshot(&inst.maps).unwrap().into_iter().find(|s| s.service == POOL).unwrap();
    let conns: u64 = pool.reals.iter().map(|r| r.conns).sum();
    let packets: u64 = pool.reals.iter().map(|r| r.packets).sum();
    assert_eq!(conns, 8, "4 flows + 4 interleaved flows");
    assert_eq!(packets, 8 + 4 * 3);
}

#[test]
fn round_robin_alternates_over_new_flows() {
    pin_to_cpu0();
    let mut inst = instance();
    let macs = inst.pool_macs(42000..42010);
    for pair in macs.windows(2) {
        assert_ne!(pair[0], pair[1], "consecutive new flows went to the same real: {macs:02x?}");
    }
    assert!(macs.iter().all(|m| *m == RS1_MAC || *m == RS2_MAC));
    let pool = ops::snapshot(&inst.maps).unwrap().into_iter().find(|s| s.service == POOL).unwrap();
    assert_eq!(pool.reals.iter().map(|r| r.conns).collect::<Vec<_>>(), vec![5, 5]);
}

#[test]
fn removed_real_gets_no_new_flows_and_its_flows_move() {
    pin_to_cpu0();
    let mut inst = instance();
    let macs = inst.pool_macs(43000..43004);
    let on_rs2: Vec<u16> = (43000..43004).zip(&macs).filter(|(_, m)| **m == RS2_MAC).map(|(p, _)| p).collect();
    assert_eq!(on_rs2.len(), 2);
    ops::remove_real(&mut inst.maps, POOL, fixtures::RS2_IP).unwrap();
    // New flows: only rs1.
    assert!(inst.pool_macs(43100..43106).iter().all(|m| *m == RS1_MAC));
    // rs2's flows are rescheduled to rs1 rather than sent to a removed server.
    assert!(inst.pool_macs(on_rs2.into_iter()).iter().all(|m| *m == RS1_MAC));
}

#[test]
fn service_without_reals_drops_and_counts() {
    let mut inst = instance();
    ops::remove_real(&mut inst.maps, fixtures::WEB, fixtures::RS1_IP).unwrap();
    let (verdict, _) = inst.run(&Frame::tcp(VIP, 80, 44000).bytes());
    assert_eq!(verdict, fixtures::XDP_DROP);
    assert_eq!(inst.counters()[counter::DROP_NO_REAL as usize], 1);
}

#[test]
fn unresolved_real_passes_to_the_kernel() {
    let mut inst = instance();
    let svc = ops::Service { port: 9000, ..POOL };
    ops::add_service(&mut inst.maps, svc, ops::Scheduler::Rr).unwrap();
    ops::add_real(&mut inst.maps, svc, fixtures::RS1_IP, ops::L2Target { mac: None, ifindex: 1 }).unwrap();
    let frame = Frame::tcp(VIP, 9000, 45000).bytes();
    let (verdict, out) = inst.run(&frame);
    assert_eq!(verdict, XDP_PASS);
    assert_eq!(out, frame);
    assert_eq!(inst.counters()[counter::PASS_NEIGH_UNRESOLVED as usize], 1);
    // Once the MAC is known, the same flow is routed.
    let real_id = ops::snapshot(&inst.maps).unwrap().into_iter().find(|s| s.service == svc).unwrap().reals[0].id;
    ops::set_real_target(&mut inst.maps, real_id, ops::L2Target { mac: Some(RS2_MAC), ifindex: 1 }).unwrap();
    let (verdict, out) = inst.run(&frame);
    assert_eq!(verdict, XDP_TX);
    assert_eq!(out[0..6], RS2_MAC);
}
