//! Fast-path diagnostics through the real XDP object (BPF_PROG_TEST_RUN): `xlb trace`'s
//! events (what the ring buffer receives for a matching frame, nothing for the others),
//! the aya-log records at a load-time level (and none at "off"), and `xlb trace`'s
//! command line.
mod common;

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    process::Command,
    sync::{Arc, Mutex},
};

use common::Instance;
use lb_common::{FlowKey, TraceEvent, addr, counter, trace};
use xlb_core::{
    loader::{self, LogLevel},
    maps::Maps,
    ops::{self, ServiceId},
    trace::{Filter, Line, Session},
};
use xlb_testkit::fixtures::{
    self, CLIENT_IP, DIRECTOR_PRIVATE_MAC, Frame, NAT_WEB, POOL, PRIVATE_IFINDEX, PUBLIC_IFINDEX, RS1_IP, RS1_MAC, VIP, WEB, XDP_PASS,
    XDP_REDIRECT, XDP_TX,
};

fn instance() -> Instance {
    let mut inst = Instance::empty();
    fixtures::install_services(&mut inst.maps).expect("install fixture services");
    inst
}

fn flow_of(frame: &Frame) -> FlowKey {
    FlowKey {
        src: addr::from_ip(frame.src),
        dst: addr::from_ip(frame.dst),
        sport: frame.sport.to_be_bytes(),
        dport: frame.dport.to_be_bytes(),
        proto: frame.proto,
        _pad: [0; 3],
    }
}

fn drain(session: &mut Session) -> Vec<TraceEvent> {
    std::iter::from_fn(|| session.next_event()).collect()
}

#[test]
fn trace_reports_a_matching_clients_frames() {
    let mut inst = instance();
    let mut session = Session::take(&mut inst.ebpf).expect("trace maps");
    session.start(&Filter { client: Some(IpAddr::V4(CLIENT_IP)), service: None }).unwrap();

    let syn = Frame::tcp(VIP, WEB.port, 40000);
    assert_eq!(inst.run(&syn.bytes()).0, XDP_TX);
    let events = drain(&mut session);
    assert_eq!(events.len(), 1, "one event per frame: {events:?}");
    let e = events[0];
    // Half-open until the client's handshake ends.
    let conn = inst.maps.half_open.get(&flow_of(&syn), 0).expect("the SYN made a half-open connection");
    assert_eq!(e.flow, flow_of(&syn));
    assert_eq!(u32::from(e.reason), counter::TX_DR);
    assert_eq!(e.flags, trace::FLOW | trace::CONN | trace::NEW_CONN);
    assert_eq!(e.real_ip, addr::from_ip(IpAddr::V4(RS1_IP)));
    assert_eq!(u16::from_be_bytes(e.real_port), 80);
    assert_eq!(e.state, conn.state);
    assert_eq!(e.real_id, conn.real_id);

    // The next packet of the flow: no longer new, its state moved.
    let ack = Frame { tcp_flags: 0x10, ..syn.clone() };
    assert_eq!(inst.run(&ack.bytes()).0, XDP_TX);
    let events = drain(&mut session);
    assert_eq!(events.len(), 1, "{events:?}");
    let line = Line::new(&events[0], 0);
    assert_eq!(line.client.as_deref(), Some("172.30.0.50:40000"));
    assert_eq!(line.service.as_deref(), Some("10.0.0.100:80"));
    assert_eq!(line.real.as_deref(), Some("10.0.0.11:80"));
    assert_eq!((line.verdict, line.reason, line.state), ("tx", "tx_dr", Some("ESTABLISHED")));
    assert!(!line.new_conn);
    assert_eq!(
        line.text(),
        format!(
            "{} cpu={} proto=tcp client=172.30.0.50:40000 service=10.0.0.100:80 real=10.0.0.11:80 verdict=tx reason=tx_dr state=ESTABLISHED",
            line.time, line.cpu
        )
    );

    // A TCP packet of no connection: passed, no real, no state.
    let stray = Frame { tcp_flags: 0x10, ..Frame::tcp(VIP, WEB.port, 40001) };
    assert_eq!(inst.run(&stray.bytes()).0, XDP_PASS);
    let events = drain(&mut session);
    assert_eq!(events.len(), 1);
    assert_eq!(u32::from(events[0].reason), counter::PASS_NO_CONN);
    assert_eq!(events[0].flags, trace::FLOW);

    // Off: nothing more.
    session.off().unwrap();
    assert_eq!(inst.run(&syn.bytes()).0, XDP_TX);
    assert!(drain(&mut session).is_empty(), "events written while tracing is off");
}

#[test]
fn trace_writes_nothing_for_frames_its_filter_leaves_out() {
    let mut inst = instance();
    let mut session = Session::take(&mut inst.ebpf).expect("trace maps");
    let other_client = Filter { client: Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9))), service: None };
    let other_service = Filter { client: None, service: Some(SocketAddr::new(IpAddr::V4(VIP), 81)) };
    let web = Filter { client: Some(IpAddr::V4(CLIENT_IP)), service: Some(SocketAddr::new(IpAddr::V4(VIP), WEB.port)) };
    let mut sport = 42000;
    for filter in [other_client, other_service] {
        session.start(&filter).unwrap();
        for frame in [Frame::tcp(VIP, WEB.port, sport), Frame::tcp(VIP, POOL.port, sport), Frame::udp(VIP, 53, sport)] {
            assert_eq!(inst.run(&frame.bytes()).0, XDP_TX);
        }
        // A frame whose headers cannot be read matches no filter.
        let (verdict, _) = inst.run(&Frame::tcp(VIP, WEB.port, sport).bytes()[..14 + 20 + 4]);
        assert_eq!(verdict, XDP_PASS);
        assert!(drain(&mut session).is_empty(), "{filter:?} matched");
        session.off().unwrap();
        sport += 1;
    }
    // Both filters at once: only that client's frames to that service.
    session.start(&web).unwrap();
    for frame in [Frame::tcp(VIP, POOL.port, sport), Frame::tcp(VIP, WEB.port, sport)] {
        assert_eq!(inst.run(&frame.bytes()).0, XDP_TX);
    }
    let events = drain(&mut session);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(u16::from_be_bytes(events[0].flow.dport), WEB.port);
}

#[test]
fn trace_without_filter_reports_unparsed_frames_and_drops() {
    let mut inst = instance();
    let mut session = Session::take(&mut inst.ebpf).expect("trace maps");
    session.start(&Filter::default()).unwrap();
    // Headers cut short: the event carries only the verdict.
    assert_eq!(inst.run(&Frame::tcp(VIP, WEB.port, 43000).bytes()[..14 + 20 + 4]).0, XDP_PASS);
    let events = drain(&mut session);
    assert_eq!(events.len(), 1);
    assert_eq!(u32::from(events[0].reason), counter::PASS_TRUNCATED);
    assert_eq!(events[0].flags & trace::FLOW, 0);
    let line = Line::new(&events[0], 0);
    assert_eq!((line.client, line.service, line.real, line.verdict), (None, None, None, "pass"));

    // A service whose only real is quiescent: no real, answered with port unreachable.
    ops::add_service(&mut inst.maps, ServiceId::Addr(ops::Service { port: 90, ..WEB }), fixtures::rr()).unwrap();
    let svc = ServiceId::Addr(ops::Service { port: 90, ..WEB });
    let opts = ops::RealOptions { weight: 0, ..Default::default() };
    ops::add_real(&mut inst.maps, svc, RS1_IP, opts, fixtures::RS1).unwrap();
    // (Answered with ICMP port unreachable, as IPVS: the frame itself goes no further.)
    assert_eq!(inst.run(&Frame::tcp(VIP, 90, 43001).bytes()).0, xlb_testkit::fixtures::XDP_TX);
    let events = drain(&mut session);
    assert_eq!(events.len(), 1);
    let line = Line::new(&events[0], 0);
    assert_eq!((line.verdict, line.reason, line.real, line.state), ("tx", "tx_icmp_unreachable", None, None));
    // A second start is refused while this trace is on (another `xlb trace`, or a killed one).
    let err = session.start(&Filter::default()).unwrap_err();
    assert!(err.to_string().contains("already on"), "{err}");
    assert!(session.current().unwrap().enabled != 0);
    drop(session);
}

#[test]
fn trace_matches_an_ipv6_client_and_service() {
    let mut inst = instance();
    let mut session = Session::take(&mut inst.ebpf).expect("trace maps");
    let web6 = SocketAddr::new(fixtures::WEB6.vip, fixtures::WEB6.port);
    session.start(&Filter { client: Some(IpAddr::V6(fixtures::CLIENT_IP6)), service: Some(web6) }).unwrap();
    // The same client port to the IPv4 service: not this trace's.
    assert_eq!(inst.run(&Frame::tcp(VIP, WEB.port, 46000).bytes()).0, XDP_TX);
    assert_eq!(inst.run(&Frame::tcp(fixtures::VIP6, fixtures::WEB6.port, 46000).bytes()).0, XDP_TX);
    let events = drain(&mut session);
    assert_eq!(events.len(), 1, "{events:?}");
    let line = Line::new(&events[0], 0);
    assert_eq!(line.client.as_deref(), Some("[fd00:30::50]:46000"));
    assert_eq!(line.service.as_deref(), Some("[fd00:10::100]:80"));
    assert_eq!(line.real.as_deref(), Some("[fd00:10::11]:80"));
    assert!(line.new_conn);
}

#[test]
fn trace_reports_a_nat_reply_under_its_clients_flow() {
    let net = fixtures::DirectorNet::create().expect("create the fixture namespace");
    let _inside = net.enter().unwrap();
    let mut inst = instance();
    fixtures::install_nat_tun_services(&mut inst.maps).expect("install the NAT services");
    let mut session = Session::take(&mut inst.ebpf).expect("trace maps");
    // The service filter: the reply comes from the real's address and port, yet is the
    // service's traffic.
    let filter = Filter { client: Some(IpAddr::V4(CLIENT_IP)), service: Some(SocketAddr::new(IpAddr::V4(VIP), NAT_WEB.port)) };
    session.start(&filter).unwrap();
    let syn = Frame::tcp(VIP, NAT_WEB.port, 45000);
    let reply = Frame { tcp_flags: 0x12, ..syn.reply_from(RS1_IP, 8080, RS1_MAC, DIRECTOR_PRIVATE_MAC) };
    assert_eq!(inst.run_on(PUBLIC_IFINDEX, &syn.bytes()).0, XDP_REDIRECT);
    assert_eq!(inst.run_on(PRIVATE_IFINDEX, &reply.bytes()).0, XDP_REDIRECT);
    let events = drain(&mut session);
    assert_eq!(events.len(), 2, "{events:?}");
    let lines: Vec<Line> = events.iter().map(|e| Line::new(e, 0)).collect();
    for (line, reason) in lines.iter().zip(["tx_nat", "tx_nat_reply"]) {
        assert_eq!(line.client.as_deref(), Some("172.30.0.50:45000"));
        assert_eq!(line.service.as_deref(), Some("10.0.0.100:81"));
        assert_eq!(line.real.as_deref(), Some("10.0.0.11:8080"));
        assert_eq!(line.reason, reason);
    }
    assert!(lines[0].new_conn && !lines[0].reply);
    assert!(!lines[1].new_conn && lines[1].reply);
    // The state after the reply, as the table holds it (SYN_RECV: IPVS's OUTPUT table).
    // Half-open until the client's handshake ends.
    let conn = inst.maps.half_open.get(&flow_of(&syn), 0).expect("the half-open connection");
    assert_eq!(events[1].state, conn.state);
    assert_eq!(lines[1].state, Some("SYN_RECV"));
}

/// Collects aya-log's records.
#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<(log::Level, String)>>>);

impl log::Log for Collect {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, r: &log::Record<'_>) {
        self.0.lock().unwrap().push((r.level(), r.args().to_string()));
    }
    fn flush(&self) {}
}

/// An instance loaded with the fast path's log at `level`, its records collected.
fn logging_instance(level: LogLevel) -> (Instance, aya_log::EbpfLogger<Collect>, Collect) {
    common::require_root();
    let mut ebpf = loader::load_logging(level).expect("load the XDP object");
    let mut maps = Maps::take(&mut ebpf, None).expect("maps");
    fixtures::install_services(&mut maps).unwrap();
    let records = Collect::default();
    let logger = aya_log::EbpfLogger::init_with_logger(&mut ebpf, records.clone()).expect("the object has aya-log's ring buffer");
    (Instance { ebpf, maps }, logger, records)
}

#[test]
fn fastpath_log_at_info_records_a_new_connection() {
    let (mut inst, mut logger, records) = logging_instance(LogLevel::Info);
    assert_eq!(inst.run(&Frame::tcp(VIP, WEB.port, 44000).bytes()).0, XDP_TX);
    logger.flush();
    let got = records.0.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, log::Level::Info);
    assert_eq!(got[0].1, "new connection 172.30.0.50:44000 -> 10.0.0.100:80 scheduled to real 10.0.0.11");
    // An established packet is below info: no record.
    assert_eq!(inst.run(&Frame { tcp_flags: 0x10, ..Frame::tcp(VIP, WEB.port, 44000) }.bytes()).0, XDP_TX);
    logger.flush();
    assert_eq!(records.0.lock().unwrap().len(), 1);
}

#[test]
fn fastpath_log_at_warn_records_drops_only() {
    let (mut inst, mut logger, records) = logging_instance(LogLevel::Warn);
    let svc = ServiceId::Addr(ops::Service { port: 90, ..WEB });
    ops::add_service(&mut inst.maps, svc, fixtures::rr()).unwrap();
    assert_eq!(inst.run(&Frame::tcp(VIP, 90, 44100).bytes()).0, XDP_TX, "answered with port unreachable");
    assert_eq!(inst.run(&Frame::tcp(VIP, WEB.port, 44101).bytes()).0, XDP_TX);
    logger.flush();
    let got = records.0.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, log::Level::Warn);
    assert!(got[0].1.starts_with("tx_icmp_unreachable: no available real server for 10.0.0.100:90"), "{got:?}");
}

#[test]
fn fastpath_log_at_trace_records_every_frame() {
    let (mut inst, mut logger, records) = logging_instance(LogLevel::Trace);
    assert_eq!(inst.run(&Frame::tcp(VIP, WEB.port, 44300).bytes()).0, XDP_TX);
    assert_eq!(inst.run(&Frame { tcp_flags: 0x10, ..Frame::tcp(VIP, WEB.port, 44300) }.bytes()).0, XDP_TX);
    assert_eq!(inst.run(&Frame::tcp(VIP, WEB.port, 44300).bytes()[..14 + 20 + 4]).0, XDP_PASS);
    logger.flush();
    let got = records.0.lock().unwrap().clone();
    let want = [
        (log::Level::Info, "new connection 172.30.0.50:44300 -> 10.0.0.100:80 scheduled to real 10.0.0.11".to_string()),
        (log::Level::Debug, format!("verdict (counter {}): 172.30.0.50 -> 10.0.0.100:80", counter::TX_DR)),
        (log::Level::Info, format!("pass_bad_header: malformed or truncated headers (counter {}): passed to the kernel", counter::PASS_TRUNCATED)),
    ];
    assert_eq!(got, want);
}

#[test]
fn fastpath_log_off_records_nothing() {
    let (mut inst, mut logger, records) = logging_instance(LogLevel::Off);
    assert_eq!(inst.run(&Frame::tcp(VIP, WEB.port, 44200).bytes()).0, XDP_TX);
    let svc = ServiceId::Addr(ops::Service { port: 90, ..WEB });
    ops::add_service(&mut inst.maps, svc, fixtures::rr()).unwrap();
    assert_eq!(inst.run(&Frame::tcp(VIP, 90, 44201).bytes()).0, XDP_TX, "answered with port unreachable");
    logger.flush();
    assert!(records.0.lock().unwrap().is_empty(), "{:?}", records.0.lock().unwrap());
}

fn xlb(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_xlb")).args(args).output().expect("run xlb")
}

#[test]
fn trace_command_line_errors() {
    for (args, says) in [
        (&["trace", "--client", "10.0.0.300"][..], "invalid value '10.0.0.300' for '--client <ADDR>'"),
        (&["trace", "--service", "10.0.0.100"][..], "invalid value '10.0.0.100' for '--service <VIP:PORT>'"),
        (&["trace", "--off", "--client", "10.0.0.1"][..], "cannot be used with"),
        (&["trace", "--bogus"][..], "unexpected argument '--bogus'"),
    ] {
        let out = xlb(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    // No fast path pinned there: a clear error, nothing created.
    let dir = std::env::temp_dir().join(format!("xlb-trace-none-{}", std::process::id()));
    let out = xlb(&["--pin-dir", dir.to_str().unwrap(), "trace", "--client", "10.0.0.1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("TRACE is not pinned: no fast path runs from"), "{stderr}");
    assert!(!dir.exists(), "xlb trace created {}", dir.display());
    let out = xlb(&["--pin-dir", dir.to_str().unwrap(), "trace", "--off"]);
    assert_eq!(out.status.code(), Some(1));
}
