//! A private instance of the real XDP object for BPF_PROG_TEST_RUN tests: test runs
//! change the program's maps, so every test loads its own.
#![allow(dead_code)] // each test binary uses a different part

use std::net::Ipv4Addr;

use aya::{
    Ebpf,
    programs::{TestRun, TestRunOptions},
};
use lb_common::counter;
use xlb_core::{loader, maps::Maps, ops};
use xlb_testkit::fixtures::{Case, Expected, Frame, XDP_TX};

/// Bytes as hex, 16 to a line: a differing output shows where it differs.
pub fn hex(bytes: &[u8]) -> String {
    bytes.chunks(16).map(|c| c.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")).collect::<Vec<_>>().join("\n")
}

pub struct Instance {
    pub ebpf: Ebpf,
    pub maps: Maps,
}

pub fn require_root() {
    assert_eq!(unsafe { libc::geteuid() }, 0, "these tests load XDP programs: run them as root (cargo xtask test)");
}

impl Instance {
    /// A fresh instance with no services.
    pub fn empty() -> Self {
        Self::with_sizes(&[])
    }

    pub fn with_sizes(sizes: &[(&'static str, u32)]) -> Self {
        require_root();
        let mut ebpf = loader::load_with_sizes(sizes).expect("load the XDP object");
        let maps = Maps::take(&mut ebpf, None).expect("maps");
        Self { ebpf, maps }
    }

    /// One run of the balancer on `frame`: (verdict, output frame).
    pub fn run(&mut self, frame: &[u8]) -> (u32, Vec<u8>) {
        self.run_on(0, frame)
    }

    /// One run of `frame` arriving on interface `ingress` (0: none given, the
    /// namespace's lo), which must exist in the calling thread's namespace.
    pub fn run_on(&mut self, ingress: u32, frame: &[u8]) -> (u32, Vec<u8>) {
        self.run_program(loader::BALANCE_PROGRAM, ingress, frame)
    }

    /// One run of the object's XDP program `program`.
    pub fn run_program(&mut self, program: &str, ingress: u32, frame: &[u8]) -> (u32, Vec<u8>) {
        let prog = loader::xdp(&mut self.ebpf, program).unwrap();
        let mut out = vec![0u8; frame.len() + 512];
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
        let md: Vec<u8> = [0, frame.len() as u32, 0, ingress, 0, 0].iter().flat_map(|v| v.to_ne_bytes()).collect();
        let ctx_in = (ingress != 0).then_some(&md[..]);
        let opts = TestRunOptions { data_in: Some(frame), data_out: Some(&mut out), ctx_in, repeat: 1, ..Default::default() };
        let res = prog.test_run(opts).expect("BPF_PROG_TEST_RUN");
        out.truncate(res.data_size_out as usize);
        (res.return_value, out)
    }

    /// Runs a fixture table in order, checking each case's verdict, exact output and
    /// that exactly its counter (and no other) went up by one.
    pub fn check_cases(&mut self, cases: &[Case]) {
        for case in cases {
            let before = self.counters();
            let (verdict, out) = self.run_on(case.ingress, &case.input);
            assert_eq!(verdict, case.verdict, "{}: verdict", case.name);
            match &case.output {
                Expected::Unchanged => assert_eq!(out, case.input, "{}: frame must pass untouched", case.name),
                Expected::Frame(want) => assert_eq!(hex(&out), hex(want), "{}: output bytes", case.name),
            }
            let after = self.counters();
            for (i, (b, a)) in before.iter().zip(&after).enumerate() {
                let want = if i as u32 == case.counter { b + 1 } else { *b };
                assert_eq!(*a, want, "{}: counter {}", case.name, counter::NAMES[i]);
            }
        }
    }

    /// Sends `frame`, which must be forwarded; returns the destination MAC.
    pub fn forwarded_to(&mut self, frame: &Frame) -> [u8; 6] {
        let (verdict, out) = self.run(&frame.bytes());
        assert_eq!(verdict, XDP_TX, "expected XDP_TX for {frame:?}");
        out[0..6].try_into().unwrap()
    }

    pub fn counters(&self) -> Vec<u64> {
        ops::counters(&self.maps).unwrap().into_iter().map(|(_, v)| v).collect()
    }

    pub fn counter(&self, index: u32) -> u64 {
        self.counters()[index as usize]
    }

    pub fn service(&self, id: ops::ServiceId) -> ops::ServiceView {
        ops::snapshot(&self.maps).unwrap().into_iter().find(|s| s.id == id).expect("service listed")
    }

    /// (active, inactive) connections of the real at `addr` in service `id`.
    pub fn load(&self, id: ops::ServiceId, addr: Ipv4Addr) -> (u64, u64) {
        let r = self.service(id).reals.into_iter().find(|r| r.address == addr).expect("real listed");
        (r.active_conns, r.inactive_conns)
    }

    /// Runs the controller's sweep.
    pub fn sweep(&mut self) -> ops::SweepReport {
        let Self { ebpf, maps } = self;
        ops::sweep(maps, &mut |flow| loader::expire_flow(ebpf, flow)).unwrap()
    }

    /// Ages every connection by `secs` seconds, as if that much idle time had passed.
    pub fn age_connections(&mut self, secs: u64) {
        let entries: Vec<_> = self.maps.conns.iter().map(|e| e.unwrap()).collect();
        for (k, mut c) in entries {
            c.last_seen_ns = c.last_seen_ns.saturating_sub(secs * 1_000_000_000);
            self.maps.conns.insert(k, c, 0).unwrap();
        }
    }

    pub fn age_templates(&mut self, secs: u64) {
        let entries: Vec<_> = self.maps.persist.iter().map(|e| e.unwrap()).collect();
        for (k, mut e) in entries {
            e.last_seen_ns = e.last_seen_ns.saturating_sub(secs * 1_000_000_000);
            self.maps.persist.insert(k, e, 0).unwrap();
        }
    }
}

/// A client address, distinct per `i`.
pub fn client(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0xac10_0000 + i) // 172.16.x.y
}

/// A SYN from `src:sport` to `vip:dport`.
pub fn syn_from(src: Ipv4Addr, sport: u16, vip: Ipv4Addr, dport: u16) -> Frame {
    Frame { src: src.into(), ..Frame::tcp(vip, dport, sport) }
}
