//! Connection synchronisation (IPVS's sync daemon): the fast path's events and the
//! backup's installation through the real XDP object (BPF_PROG_TEST_RUN), then two
//! directors on one LAN: a connection through the master appears on the backup with
//! the same real and state, and keeps working through the backup once the VIP moves.
mod common;

use std::{
    io::{BufRead, BufReader, Write},
    net::{IpAddr, Ipv4Addr, TcpStream},
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use common::Instance;
use lb_common::{PROTO_TCP, SyncEvent, forward, map_names, sync as wire, tcp};
use xlb_core::{
    loader::{self, AttachMode},
    ops::{self, ForwardMethod, ServiceId},
    sync::{self, SyncConn, Verdict, conn_flags},
};
use xlb_testkit::{
    fixtures::{self, CLIENT_IP, CLIENT_IP6, DNS, Frame, POOL, RS1_IP, RS1_IP6, RS1_MAC, RS2_IP, RS2_MAC, VIP, VIP6, WEB6, XDP_PASS},
    testbed::{CIP, DrCluster, ECHO_PORT, VIP as CLUSTER_VIP, rip},
};

const XLB: &str = env!("CARGO_BIN_EXE_xlb");

fn instance() -> (Instance, RingBuf<MapData>) {
    let mut inst = Instance::empty();
    fixtures::install_services(&mut inst.maps).expect("install fixture services");
    let ring = inst.ebpf.take_map(map_names::SYNC_EVENTS).expect("the object has SYNC_EVENTS").try_into().expect("a ring buffer");
    (inst, ring)
}

fn events(ring: &mut RingBuf<MapData>) -> Vec<SyncEvent> {
    let mut out = Vec::new();
    while let Some(item) = ring.next() {
        assert_eq!(item.len(), size_of::<SyncEvent>());
        out.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<SyncEvent>()) });
    }
    out
}

fn tcp_frame(sport: u16, flags: u8) -> Frame {
    Frame { tcp_flags: flags, ..Frame::tcp(VIP, POOL.port, sport) }
}

#[test]
fn the_fast_path_tells_new_connections_and_state_changes_only_with_the_switch_on() {
    let (mut inst, mut ring) = instance();
    let (syn, ack, psh_ack, fin_ack) = (tcp::FLAG_SYN, tcp::FLAG_ACK, tcp::FLAG_ACK | 0x08, tcp::FLAG_FIN | tcp::FLAG_ACK);
    // Off (the default): a whole connection and a UDP flow write nothing.
    for flags in [syn, ack, psh_ack, fin_ack] {
        inst.run(&tcp_frame(41000, flags).bytes());
    }
    inst.run(&Frame::udp(VIP, DNS.port, 5353).bytes());
    assert_eq!(events(&mut ring), vec![], "nothing is written with sync_master off");

    ops::set_sync_master(&mut inst.maps, true).unwrap();
    // The SYN only opens a half-open entry: no event.
    let to = inst.forwarded_to(&tcp_frame(41001, syn));
    assert_eq!(events(&mut ring), vec![]);
    // The handshake's end moves it to CONNS: one event, ESTABLISHED, with its real.
    inst.forwarded_to(&tcp_frame(41001, ack));
    let e = events(&mut ring);
    assert_eq!(e.len(), 1, "{e:?}");
    let (real_ip, real_mac) = if to == RS1_MAC { (RS1_IP, RS1_MAC) } else { (RS2_IP, RS2_MAC) };
    assert_eq!(to, real_mac);
    let pool_sid = sync::Lookup::service(&mut ops::SyncLookup(&mut inst.maps), POOL.vip, POOL.port, PROTO_TCP);
    assert_eq!(
        (e[0].flow.sport, e[0].flow.dport, e[0].flow.proto, e[0].state, e[0].forward, e[0].real_port),
        (41001u16.to_be_bytes(), POOL.port.to_be_bytes(), PROTO_TCP, tcp::ESTABLISHED, forward::DR, POOL.port.to_be_bytes())
    );
    assert_eq!((Some(e[0].service_id), lb_common::addr::to_ip(e[0].real_ip)), (pool_sid, IpAddr::V4(real_ip)));
    assert_eq!(lb_common::addr::to_ip(e[0].flow.src), IpAddr::V4(CLIENT_IP));
    // Data changes no state: no event (the established path writes nothing).
    for _ in 0..3 {
        inst.forwarded_to(&tcp_frame(41001, psh_ack));
    }
    assert_eq!(events(&mut ring), vec![]);
    // The client's FIN: FIN_WAIT.
    inst.forwarded_to(&tcp_frame(41001, fin_ack));
    let e = events(&mut ring);
    assert_eq!(e.iter().map(|e| e.state).collect::<Vec<_>>(), vec![tcp::FIN_WAIT]);
    // A UDP flow enters CONNS at once (5353's entry was made while off).
    inst.forwarded_to(&Frame::udp(VIP, DNS.port, 5354));
    let e = events(&mut ring);
    assert_eq!(e.iter().map(|e| (e.state, e.flow.proto)).collect::<Vec<_>>(), vec![(tcp::UDP, lb_common::PROTO_UDP)]);

    ops::set_sync_master(&mut inst.maps, false).unwrap();
    inst.run(&tcp_frame(41002, syn).bytes());
    inst.run(&tcp_frame(41002, ack).bytes());
    assert_eq!(events(&mut ring), vec![], "off again: nothing");
}

fn conn_to(real: Ipv4Addr, sport: u16, state: u8) -> SyncConn {
    SyncConn {
        protocol: PROTO_TCP,
        flags: sync::flags_of(forward::DR, PROTO_TCP, state),
        state: state as u16,
        cport: sport,
        vport: POOL.port,
        dport: POOL.port,
        fwmark: 0,
        timeout: 600,
        caddr: IpAddr::V4(CLIENT_IP),
        vaddr: POOL.vip,
        daddr: IpAddr::V4(real),
        options: Vec::new(),
    }
}

/// What the backup does with one received connection: (verdict, install answer).
fn receive(inst: &mut Instance, c: &SyncConn) -> (Verdict, Option<u32>) {
    let settings = ops::settings(&inst.maps).unwrap();
    let v = sync::verdict(c, &mut ops::SyncLookup(&mut inst.maps), &settings, ops::table_clock_ns());
    let answer = match v {
        Verdict::Install(flow, entry) => Some(loader::install_conn(&mut inst.ebpf, &sync::install_arg(flow, entry)).unwrap()),
        _ => None,
    };
    (v, answer)
}

#[test]
fn a_received_connection_is_installed_counted_and_followed() {
    let (mut inst, mut ring) = instance();
    // The backup's own master switch on too: what it installs is not echoed.
    ops::set_sync_master(&mut inst.maps, true).unwrap();
    let pool = ServiceId::Addr(POOL);
    let (_, answer) = receive(&mut inst, &conn_to(RS2_IP, 42000, tcp::ESTABLISHED));
    assert_eq!(answer, Some(wire::INSTALL_CREATED));
    assert_eq!(inst.load(pool, RS2_IP), (1, 0), "the installed connection counts as active");
    assert_eq!(events(&mut ring), vec![], "an installed connection is not sent back");
    let listed = ops::connections(&inst.maps).unwrap();
    let c = listed.iter().find(|c| c.client == format!("{CLIENT_IP}:42000")).expect("listed");
    assert_eq!((c.real, c.state.as_str()), (IpAddr::V4(RS2_IP), "ESTABLISHED"));
    // The master's 600 s of a 900 s state: it expires in 600 s (give or take the second).
    assert!((598..=600).contains(&c.expires_in), "{}", c.expires_in);
    // Not a SYN, no entry of this director's making: it follows the installed real, again and again
    // (without the entry it would be passed to the kernel).
    for _ in 0..4 {
        assert_eq!(inst.forwarded_to(&tcp_frame(42000, tcp::FLAG_ACK | 0x08)), RS2_MAC);
    }

    // A state change updates it: the counts move.
    let (_, answer) = receive(&mut inst, &conn_to(RS2_IP, 42000, tcp::FIN_WAIT));
    assert_eq!(answer, Some(wire::INSTALL_UPDATED));
    assert_eq!(inst.load(pool, RS2_IP), (0, 1));
    // Another real for the flow (the master scheduled it afresh): the old entry goes.
    let (_, answer) = receive(&mut inst, &conn_to(RS1_IP, 42000, tcp::ESTABLISHED));
    assert_eq!(answer, Some(wire::INSTALL_CREATED));
    assert_eq!((inst.load(pool, RS2_IP), inst.load(pool, RS1_IP)), ((0, 0), (1, 0)));
    assert_eq!(inst.forwarded_to(&tcp_frame(42000, tcp::FLAG_ACK)), RS1_MAC);

    // Refused: unknown service, unknown real, NAT; nothing installed.
    let mut other = conn_to(RS1_IP, 42001, tcp::ESTABLISHED);
    other.vport = 9999;
    assert_eq!(receive(&mut inst, &other), (Verdict::UnknownService, None));
    other = conn_to(Ipv4Addr::new(10, 0, 0, 99), 42001, tcp::ESTABLISHED);
    assert_eq!(receive(&mut inst, &other), (Verdict::UnknownReal, None));
    other = conn_to(RS1_IP, 42001, tcp::ESTABLISHED);
    other.flags = conn_flags::MASQ;
    assert_eq!(receive(&mut inst, &other), (Verdict::Nat, None));
    let (verdict, out) = inst.run(&tcp_frame(42001, tcp::FLAG_ACK).bytes());
    assert_eq!(verdict, XDP_PASS, "no entry was installed for the refused connections: {out:?}");

    // IPv6 (an `ip_vs_sync_v6` entry): [VIP6]:80 by DR to rs1's IPv6 address.
    let mut v6 = conn_to(RS1_IP, 42002, tcp::ESTABLISHED);
    (v6.caddr, v6.vaddr, v6.daddr, v6.vport, v6.dport) = (CLIENT_IP6.into(), VIP6.into(), RS1_IP6.into(), WEB6.port, WEB6.port);
    let decoded = sync::decode(&sync::encode(&sync::SyncMessage { syncid: 0, conns: vec![v6] })).unwrap();
    assert_eq!(receive(&mut inst, &decoded.conns[0]).1, Some(wire::INSTALL_CREATED));
    let ack6 = Frame { tcp_flags: tcp::FLAG_ACK, ..Frame::tcp(VIP6, WEB6.port, 42002) };
    assert_eq!(inst.forwarded_to(&ack6), RS1_MAC);
}

// ---- two directors ----

fn pair(method: ForwardMethod) -> DrCluster {
    assert_eq!(unsafe { libc::geteuid() }, 0, "these tests create namespaces and attach XDP: run them as root (cargo xtask test)");
    DrCluster::build_pair(Path::new(XLB), 2, AttachMode::Skb, method).expect("build the namespace cluster with a standby director")
}

/// `xlb ipvsadm ARGS` on the active (`backup` false) or the standby director:
/// (exit status, stdout, stderr).
fn ipvsadm(c: &DrCluster, backup: bool, args: &str) -> (i32, String, String) {
    let mut cmd = if backup { c.backup_xlb_command(&["ipvsadm"]).unwrap() } else { c.xlb_command(&["ipvsadm"]) };
    cmd.args(args.split_whitespace()).stdin(Stdio::null());
    let out = cmd.output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn ok(c: &DrCluster, backup: bool, args: &str) -> String {
    let (code, out, err) = ipvsadm(c, backup, args);
    assert_eq!(code, 0, "ipvsadm {args} on the {} director: {err}", if backup { "standby" } else { "active" });
    out
}

fn counters(c: &DrCluster, backup: bool) -> serde_json::Value {
    let args = ["--output", "json", "counters"];
    let text = if backup { c.backup_xlb(&args) } else { c.xlb(&args) }.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad JSON ({e}): {text}"))
}

fn counter(c: &DrCluster, backup: bool, name: &str) -> u64 {
    counters(c, backup)[name].as_u64().unwrap_or_else(|| panic!("no counter {name}"))
}

/// Waits up to `limit` for `f` to hold; returns how long it took.
fn within(limit: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if f() {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

type Conn = (TcpStream, BufReader<TcpStream>);

fn open(c: &DrCluster) -> Conn {
    let s = c.connect_from_client(ECHO_PORT).expect("connect through the VIP");
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let r = BufReader::new(s.try_clone().unwrap());
    (s, r)
}

/// Sends a line and returns the answering server's name ("rsN").
fn echo(conn: &mut Conn, line: &str) -> Result<String, String> {
    writeln!(conn.0, "{line}").map_err(|e| e.to_string())?;
    let mut answer = String::new();
    match conn.1.read_line(&mut answer) {
        Ok(0) => Err("the connection was closed".into()),
        Ok(_) if answer.ends_with(&format!(": {line}\n")) => Ok(answer.split(':').next().unwrap().to_string()),
        Ok(_) => Err(format!("answer {answer:?}")),
        Err(e) => Err(e.to_string()),
    }
}

/// The `ipvsadm -L -c -n` line of the client's connection from `port`, if listed.
fn conn_line(c: &DrCluster, backup: bool, port: u16) -> Option<String> {
    let client = format!(" {CIP}:{port} ");
    ok(c, backup, "-L -c -n").lines().find(|l| l.contains(&client)).map(str::to_string)
}

#[test]
fn a_dr_connection_through_the_master_survives_a_failover_to_the_backup() {
    failover(ForwardMethod::Route);
}

#[test]
fn a_tun_connection_through_the_master_survives_a_failover_to_the_backup() {
    failover(ForwardMethod::Tunnel);
}

fn failover(method: ForwardMethod) {
    let mut c = pair(method);
    let (flag, sent) = if method == ForwardMethod::Tunnel { ("-i", "tx_tun") } else { ("-g", "tx_dr") };
    // The active director starts its master with the daemon (a systemd unit's way) …
    // (Its refresh round every 2 s, not 60: the test sees one.)
    let master = ["--sync-daemon", "master", "--mcast-interface", "eth0", "--syncid", "7", "--sync-refresh-period", "2"];
    let lines = c.start_daemon(&master).unwrap();
    assert!(lines.iter().any(|l| l.contains("started the master sync daemon (mcast=eth0, syncid=7)")), "{lines:?}");
    // … the standby its backup through ipvsadm (a keepalived notify script's way),
    // first with another syncid.
    c.start_backup_daemon(&[]).unwrap();
    ok(&c, true, "--start-daemon backup --mcast-interface eth0 --syncid 8");
    assert_eq!(ok(&c, false, "-L --daemon"), "master sync daemon (mcast=eth0, syncid=7)\n");
    assert_eq!(ok(&c, true, "-L --daemon"), "backup sync daemon (mcast=eth0, syncid=8)\n");
    let (code, _, err) = ipvsadm(&c, true, "--start-daemon backup --mcast-interface eth0");
    assert_eq!((code, err.trim()), (255, "Daemon has already run"));

    // The same service on both, with other ids on the standby (another service first,
    // the reals in the other order).
    let svc = format!("{CLUSTER_VIP}:{ECHO_PORT}");
    ok(&c, false, &format!("-A -t {svc} -s rr"));
    ok(&c, false, &format!("-a -t {svc} -r {} {flag}", rip(0)));
    ok(&c, false, &format!("-a -t {svc} -r {} {flag}", rip(1)));
    ok(&c, true, &format!("-A -t {CLUSTER_VIP}:80 -s rr"));
    ok(&c, true, &format!("-A -t {svc} -s rr"));
    ok(&c, true, &format!("-a -t {svc} -r {} {flag}", rip(1)));
    ok(&c, true, &format!("-a -t {svc} -r {} {flag}", rip(0)));

    // A connection while the syncids differ: its messages are refused, nothing installed.
    let mut refused = open(&c);
    echo(&mut refused, "before").unwrap();
    let refused_port = refused.0.local_addr().unwrap().port();
    within(Duration::from_secs(2), "the standby refusing the other syncid", || counter(&c, true, "sync_refused_syncid") >= 1);
    assert!(conn_line(&c, false, refused_port).is_some());
    assert_eq!(conn_line(&c, true, refused_port), None, "a message of another syncid installs nothing");
    assert_eq!(counter(&c, true, "sync_installed_conns"), 0);

    ok(&c, true, "--stop-daemon backup");
    assert_eq!(ok(&c, true, "-L --daemon"), "");
    ok(&c, true, "--start-daemon backup --mcast-interface eth0 --syncid 7");

    // A connection through the master appears on the backup within a second, with the
    // same real and state.
    let mut conn = open(&c);
    let server = echo(&mut conn, "hello").unwrap();
    let port = conn.0.local_addr().unwrap().port();
    let on_master = conn_line(&c, false, port).expect("the master lists the connection");
    let took = within(Duration::from_secs(1), "the connection on the backup", || conn_line(&c, true, port).is_some());
    let on_backup = conn_line(&c, true, port).unwrap();
    let real = format!(" {}:{ECHO_PORT}", rip(if server == "rs1" { 0 } else { 1 }));
    for line in [&on_master, &on_backup] {
        assert!(line.contains("ESTABLISHED") && line.ends_with(&real), "{line} (served by {server})");
    }
    eprintln!("synced to the backup in {took:?}: {on_backup}");
    let b = counters(&c, true);
    assert!(b["sync_received_messages"].as_u64() >= Some(1) && b["sync_installed_conns"].as_u64() >= Some(1), "{b}");
    assert_eq!(b["sync_refused_malformed"].as_u64(), Some(0), "{b}");
    let a = counters(&c, false);
    assert!(a["sync_sent_messages"].as_u64() >= Some(2) && a["sync_sent_conns"].as_u64() >= Some(2), "{a}");
    // xlb conns lists it too.
    assert!(c.backup_xlb(&["conns"]).unwrap().contains(&format!("{CIP}:{port}")));
    // Its state does not change any more, but it is active: the master's refresh round
    // sends it again, and the backup renews its entry.
    let updated = counter(&c, true, "sync_updated_conns");
    assert_eq!(echo(&mut conn, "still here"), Ok(server.clone()));
    within(Duration::from_secs(6), "a refresh of the active connection", || counter(&c, true, "sync_updated_conns") > updated);

    // Failover: the VIP moves to the standby; the connection goes on through it, to the
    // same real server.
    let forwarded = counter(&c, true, sent);
    c.move_vip_to_backup().unwrap();
    for i in 0..3 {
        assert_eq!(echo(&mut conn, &format!("after the failover {i}")), Ok(server.clone()));
    }
    assert!(counter(&c, true, sent) >= forwarded + 3, "the standby forwarded the connection's packets ({sent})");
    // The backup's entry has the method the master sent.
    let conns: serde_json::Value = serde_json::from_str(&c.backup_xlb(&["--output", "json", "conns"]).unwrap()).unwrap();
    let entry = conns.as_array().unwrap().iter().find(|e| e["client"] == format!("{CIP}:{port}")).expect("listed");
    assert_eq!(entry["forward"], serde_json::to_value(method).unwrap(), "{entry}");
    drop(refused);
    // New connections are the standby's own.
    let mut fresh = open(&c);
    assert!(echo(&mut fresh, "new").is_ok());

    ok(&c, true, "--stop-daemon backup");
    let (code, _, err) = ipvsadm(&c, true, "--stop-daemon backup");
    assert_eq!((code, err.trim()), (255, "No daemon is running"));
    ok(&c, false, "--stop-daemon master");
    assert_eq!(ok(&c, false, "-L --daemon"), "");
}
