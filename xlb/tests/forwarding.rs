//! NAT, TUN and forwarding between NICs through the real XDP object
//! (BPF_PROG_TEST_RUN), inside a namespace standing for a two-NIC director (frames arrive
//! on its NICs): the fixture tables' exact output bytes and counters, checksums
//! recomputed from scratch, connection states seen from both sides, the reply table's
//! life, the decapsulator, and next hops from the kernel.
mod common;

use std::net::IpAddr;

use common::Instance;
use lb_common::{addr, counter, decap_counter, map_names, tcp};
use xlb_core::{
    loader,
    nexthop,
    ops::{self, ForwardMethod, NextHop, RealOptions, ServiceId},
};
use xlb_testkit::fixtures::{self, CLIENT_IP, DIP, DIRECTOR_PRIVATE_MAC, DirectorNet, Frame, NAT_WEB, PRIVATE_IFINDEX, PUBLIC_IFINDEX, RS1_IP, RS1_MAC, VIP, XDP_PASS, XDP_REDIRECT, internet_checksum};

/// A fresh instance with the NAT and TUN services, run from inside `net`.
fn instance() -> Instance {
    let mut inst = Instance::empty();
    fixtures::install_services(&mut inst.maps).expect("install the DR services");
    fixtures::install_nat_tun_services(&mut inst.maps).expect("install the NAT and TUN services");
    inst
}

fn director_net() -> DirectorNet {
    common::require_root();
    DirectorNet::create().expect("create the fixture namespace")
}

#[test]
fn nat_fixture_table() {
    let net = director_net();
    let _inside = net.enter().unwrap();
    instance().check_cases(&fixtures::nat_cases());
}

#[test]
fn icmp_fixture_table() {
    let net = director_net();
    let _inside = net.enter().unwrap();
    let mut inst = instance();
    let mut settings = ops::settings(&inst.maps).unwrap();
    settings.icmp_echo = 1;
    ops::set_settings(&mut inst.maps, settings).unwrap();
    inst.check_cases(&fixtures::icmp_cases());
}

#[test]
fn icmp_echo_is_left_to_the_kernel_unless_enabled() {
    let net = director_net();
    let _inside = net.enter().unwrap();
    let mut inst = instance();
    let ping = Frame::icmp(VIP, fixtures::Icmp { kind: 8, code: 0, rest: [0, 1, 0, 1] }, b"ping".to_vec()).bytes();
    let (verdict, out) = inst.run_on(PUBLIC_IFINDEX, &ping);
    assert_eq!((verdict, out), (XDP_PASS, ping));
    assert_eq!(inst.counter(counter::PASS_ICMP), 1);
}

#[test]
fn tun_fixture_table() {
    let net = director_net();
    let _inside = net.enter().unwrap();
    instance().check_cases(&fixtures::tun_cases());
}

/// Every checksum of an IPv4 TCP/UDP frame (after `l3` bytes of link header) verifies.
fn assert_checksums_valid(frame: &[u8], what: &str) {
    let ip = &frame[14..];
    let ihl = (ip[0] & 0x0f) as usize * 4;
    assert_eq!(internet_checksum(&ip[..ihl]), 0, "{what}: IPv4 header checksum");
    let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    let l4 = &ip[ihl..total];
    let mut pseudo = ip[12..20].to_vec();
    pseudo.extend_from_slice(&[0, ip[9]]);
    pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    pseudo.extend_from_slice(l4);
    assert_eq!(internet_checksum(&pseudo), 0, "{what}: transport checksum");
}

#[test]
fn nat_rewrites_keep_every_checksum_valid() {
    let net = director_net();
    let _inside = net.enter().unwrap();
    let mut inst = instance();
    // Many clients, ports and payloads: the incremental updates must always agree with
    // a checksum computed from scratch.
    let mut seed = 0x2545_f491u32;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed
    };
    for i in 0..300u32 {
        let client = std::net::Ipv4Addr::from(0xac1e_0000 | (next() & 0xffff));
        let sport = 1024 + (next() % 60000) as u16;
        let payload: Vec<u8> = (0..(next() % 300)).map(|_| next() as u8).collect();
        let udp = i % 3 == 0;
        let syn = if udp {
            Frame { src: client.into(), payload: payload.clone(), ..Frame::udp(VIP, fixtures::NAT_DNS.port, sport) }
        } else {
            Frame { src: client.into(), payload: payload.clone(), ..Frame::tcp(VIP, NAT_WEB.port, sport) }
        };
        let (verdict, out) = inst.run_on(PUBLIC_IFINDEX, &syn.bytes());
        assert_eq!(verdict, XDP_REDIRECT, "flow {i}");
        assert_checksums_valid(&out, &format!("flow {i} to the real"));
        // The real's reply to that client.
        let (rs, rport) = if udp { (fixtures::RS2_IP, 5353) } else { (RS1_IP, 8080) };
        let reply = Frame { tcp_flags: 0x12, ..syn.reply_from(rs, rport, RS1_MAC, DIRECTOR_PRIVATE_MAC) };
        let (verdict, out) = inst.run_on(PRIVATE_IFINDEX, &reply.bytes());
        assert_eq!(verdict, XDP_REDIRECT, "flow {i}: reply");
        assert_eq!(out[26..30], VIP.octets(), "flow {i}: reply source is the VIP");
        assert_checksums_valid(&out, &format!("flow {i} back to the client"));
    }
}

/// The connection table's entry for a client port of NAT_WEB.
fn state(inst: &Instance, sport: u16) -> String {
    let conns = ops::connections(&inst.maps).unwrap();
    let c = conns.iter().find(|c| c.client == format!("{CLIENT_IP}:{sport}")).expect("connection listed");
    assert_eq!((c.real, c.real_port, c.forward), (RS1_IP.into(), 8080, ForwardMethod::Masq));
    c.state.clone()
}

#[test]
fn nat_connections_track_both_directions_and_count_both_ways() {
    let net = director_net();
    let _inside = net.enter().unwrap();
    let mut inst = instance();
    let client = |flags| Frame { tcp_flags: flags, ..Frame::tcp(VIP, NAT_WEB.port, 43000) };
    let real = |flags| Frame { tcp_flags: flags, ..client(0).reply_from(RS1_IP, 8080, RS1_MAC, DIRECTOR_PRIVATE_MAC) };
    let from_client = |inst: &mut Instance, flags| inst.run_on(PUBLIC_IFINDEX, &client(flags).bytes()).0;
    let from_real = |inst: &mut Instance, flags| inst.run_on(PRIVATE_IFINDEX, &real(flags).bytes()).0;
    let (syn, ack, fin, psh) = (tcp::FLAG_SYN, tcp::FLAG_ACK, tcp::FLAG_FIN, 0x08);
    assert_eq!(from_client(&mut inst, syn), XDP_REDIRECT);
    assert_eq!(state(&inst, 43000), "SYN_RECV");
    assert_eq!(from_real(&mut inst, syn | ack), XDP_REDIRECT);
    assert_eq!(state(&inst, 43000), "SYN_RECV");
    assert_eq!(from_client(&mut inst, ack), XDP_REDIRECT);
    assert_eq!(state(&inst, 43000), "ESTABLISHED");
    assert_eq!(inst.load(ServiceId::Addr(NAT_WEB), RS1_IP), (1, 0));
    assert_eq!(from_real(&mut inst, ack | psh), XDP_REDIRECT);
    // The server closes first (HTTP with Connection: close): IPVS's OUTPUT then INPUT tables.
    assert_eq!(from_real(&mut inst, fin | ack), XDP_REDIRECT);
    assert_eq!(state(&inst, 43000), "FIN_WAIT");
    assert_eq!(from_client(&mut inst, fin | ack), XDP_REDIRECT);
    assert_eq!(state(&inst, 43000), "TIME_WAIT");
    assert_eq!(from_real(&mut inst, ack), XDP_REDIRECT);
    assert_eq!(inst.load(ServiceId::Addr(NAT_WEB), RS1_IP), (0, 1));
    let view = inst.service(ServiceId::Addr(NAT_WEB));
    let r = &view.reals[0];
    assert_eq!((r.port, r.forward, r.conns, r.packets, r.out_packets), (8080, ForwardMethod::Masq, 1, 3, 4));
    assert_eq!(inst.counter(counter::TX_NAT), 3);
    assert_eq!(inst.counter(counter::TX_NAT_REPLY), 4);
}

#[test]
fn an_expired_nat_connection_takes_its_reply_entry_along() {
    let net = director_net();
    let _inside = net.enter().unwrap();
    let mut inst = instance();
    let syn = Frame::tcp(VIP, NAT_WEB.port, 44000);
    let reply = Frame { tcp_flags: 0x12, ..syn.reply_from(RS1_IP, 8080, RS1_MAC, DIRECTOR_PRIVATE_MAC) };
    // The client's ACK completes the handshake: the connection (and its reply entry)
    // leaves the half-open tables for CONNS and NAT_REPLIES.
    let ack = Frame { tcp_flags: 0x10, ..syn.clone() };
    assert_eq!(inst.run_on(PUBLIC_IFINDEX, &syn.bytes()).0, XDP_REDIRECT);
    assert_eq!(inst.run_on(PUBLIC_IFINDEX, &ack.bytes()).0, XDP_REDIRECT);
    assert_eq!(inst.maps.nat_replies.iter().count(), 1);
    inst.age_connections(3600);
    assert_eq!(inst.sweep().conns_expired, 1);
    assert_eq!(inst.maps.nat_replies.iter().count(), 0, "the reply entry goes with its connection");
    let (verdict, out) = inst.run_on(PRIVATE_IFINDEX, &reply.bytes());
    assert_eq!((verdict, out), (XDP_PASS, reply.bytes()), "a reply with no connection is not translated");
    assert_eq!(inst.counter(counter::PASS_NOT_VIP), 1);
    // Idle past its timeout, the fast path expires it on the next reply, too.
    assert_eq!(inst.run_on(PUBLIC_IFINDEX, &syn.bytes()).0, XDP_REDIRECT);
    assert_eq!(inst.run_on(PUBLIC_IFINDEX, &ack.bytes()).0, XDP_REDIRECT);
    inst.age_connections(3600);
    assert_eq!(inst.run_on(PRIVATE_IFINDEX, &reply.bytes()).0, XDP_PASS);
    assert_eq!(inst.maps.nat_replies.iter().count(), 0);
    assert_eq!(inst.maps.conns.iter().count(), 0);
    assert_eq!(inst.load(ServiceId::Addr(NAT_WEB), RS1_IP), (0, 0));
}

#[test]
fn nat_real_ports_are_checked_and_name_reals() {
    let mut inst = Instance::empty();
    let web = ServiceId::Addr(NAT_WEB);
    ops::add_service(&mut inst.maps, web, fixtures::rr()).unwrap();
    let nat = RealOptions { forward: ForwardMethod::Masq, ..Default::default() };
    let at = |port| ops::RealAddr { ip: RS1_IP.into(), port: Some(port) };
    ops::add_real(&mut inst.maps, web, at(8080), nat, fixtures::RS1).unwrap();
    ops::add_real(&mut inst.maps, web, at(8081), nat, fixtures::RS1).unwrap();
    let err = |r: anyhow::Result<()>| format!("{:#}", r.unwrap_err());
    assert!(err(ops::add_real(&mut inst.maps, web, at(8080), nat, fixtures::RS1).map(drop)).contains("Destination already exists"));
    let dr = RealOptions::default();
    assert!(err(ops::add_real(&mut inst.maps, web, at(8082), dr, fixtures::RS1).map(drop)).contains("only NAT (-m) maps ports"));
    assert!(err(ops::remove_real(&mut inst.maps, web, RS1_IP)).contains("several ports"));
    assert!(err(ops::edit_real(&mut inst.maps, web, at(8080), dr)).contains("only NAT (-m) maps ports"));
    ops::remove_real(&mut inst.maps, web, at(8081)).unwrap();
    // One port left: the address alone names it.
    ops::edit_real(&mut inst.maps, web, RS1_IP, RealOptions { weight: 5, ..nat }).unwrap();
    let reals = inst.service(web).reals;
    assert_eq!(reals.iter().map(|r| (r.port, r.weight)).collect::<Vec<_>>(), vec![(8080, 5)]);
    let dns = ServiceId::Addr(fixtures::DNS);
    ops::add_service(&mut inst.maps, dns, ops::ServiceOptions { one_packet: true, ..fixtures::rr() }).unwrap();
    assert!(err(ops::add_real(&mut inst.maps, dns, RS1_IP, nat, fixtures::RS1).map(drop)).contains("one packet at a time"));
}

#[test]
fn decapsulator_unwraps_ipip_and_ipv6_in_ipv6_for_its_vips_only() {
    let mut inst = Instance::empty();
    let mut vips: aya::maps::HashMap<_, [u8; 16], u8> =
        aya::maps::HashMap::try_from(inst.ebpf.map_mut(map_names::DECAP_VIPS).unwrap()).unwrap();
    vips.insert(addr::from_ip(VIP.into()), 1, 0).unwrap();
    vips.insert(addr::from_ip(fixtures::VIP6.into()), 1, 0).unwrap();
    let mut decap = |frame: &[u8]| inst.run_program(loader::DECAP_PROGRAM, 0, frame);

    let request = |vip: std::net::IpAddr, vlan| Frame { vlan, payload: b"GET / HTTP/1.1\r\n\r\n".to_vec(), ..Frame::tcp(vip, 80, 40000) };
    let tagged = vec![(fixtures::ETH_P_8021Q, 10)];
    for (what, inner, src, dst) in [
        ("IPIP", request(VIP.into(), Vec::new()), DIP.into(), RS1_IP.into()),
        ("802.1Q-tagged IPIP", request(VIP.into(), tagged.clone()), DIP.into(), RS1_IP.into()),
        ("IPv6-in-IPv6", request(fixtures::VIP6.into(), Vec::new()), fixtures::DIP6.into(), fixtures::RS1_IP6.into()),
        ("802.1Q-tagged IPv6-in-IPv6", request(fixtures::VIP6.into(), tagged.clone()), fixtures::DIP6.into(), fixtures::RS1_IP6.into()),
    ] {
        let (src, dst): (std::net::IpAddr, std::net::IpAddr) = (src, dst);
        let (verdict, out) = decap(&inner.tunnelled(src, dst, RS1_MAC, DIRECTOR_PRIVATE_MAC));
        assert_eq!(verdict, XDP_PASS, "{what}");
        let plain = Frame { dst_mac: RS1_MAC, src_mac: DIRECTOR_PRIVATE_MAC, ..inner.clone() };
        assert_eq!(out, plain.bytes(), "{what}: the inner packet, tags kept, as if it came plain");
    }

    let tunnelled = request(VIP.into(), Vec::new()).tunnelled(DIP, RS1_IP, RS1_MAC, DIRECTOR_PRIVATE_MAC);
    let elsewhere = Frame::tcp(std::net::Ipv4Addr::new(10, 0, 0, 200), 80, 40001).tunnelled(DIP, RS1_IP, RS1_MAC, DIRECTOR_PRIVATE_MAC);
    let plain = request(VIP.into(), Vec::new()).routed_to(RS1_MAC).bytes();
    let outer_only = tunnelled[..34].to_vec();
    for (what, frame) in [("IPIP for another VIP", &elsewhere), ("a plain frame", &plain), ("IPIP cut after the outer header", &outer_only)] {
        let (verdict, out) = decap(frame);
        assert_eq!((verdict, &out), (XDP_PASS, frame), "{what} passes untouched");
    }
    let stats: aya::maps::PerCpuArray<_, u64> =
        aya::maps::PerCpuArray::try_from(inst.ebpf.map(map_names::DECAP_STATS).unwrap()).unwrap();
    let count = |i: u32| stats.get(&i, 0).unwrap().iter().sum::<u64>();
    assert_eq!((count(decap_counter::DECAPSULATED), count(decap_counter::PASS_NOT_FOR_VIP)), (4, 1));
}

#[test]
fn next_hops_come_from_the_kernels_routes_and_neighbours() {
    let net = director_net();
    let gateway_mac = [0x02, 0x6a, 0, 0, 0, 1];
    for (addr, mac) in [("10.0.0.1", "02:6a:00:00:00:01"), ("10.0.0.11", "02:5e:00:00:00:11"), ("fd00:10::1", "02:6a:00:00:00:01"), ("fd00:10::11", "02:5e:00:00:00:11")] {
        net.ns.ip(&["neigh", "add", addr, "lladdr", mac, "dev", "priv0", "nud", "permanent"]).unwrap();
    }
    net.ns.ip(&["route", "add", "10.1.0.0/24", "via", "10.0.0.1", "mtu", "1400"]).unwrap();
    net.ns.ip(&["-6", "route", "add", "fd00:11::/64", "via", "fd00:10::1", "mtu", "1400"]).unwrap();
    let _inside = net.enter().unwrap();
    let private = |src: std::net::IpAddr, mtu| Some(ops::Egress { ifindex: PRIVATE_IFINDEX, mac: DIRECTOR_PRIVATE_MAC, mtu, src });
    let lookup = |ip: &str| nexthop::lookup(ip.parse().unwrap());
    let (dip, dip6) = (DIP.into(), fixtures::DIP6.into());
    // On the link: the real's own MAC, the interface's MTU.
    assert_eq!(lookup("10.0.0.11").unwrap(), NextHop { egress: private(dip, 1500), mac: Some(RS1_MAC) });
    assert_eq!(lookup("fd00:10::11").unwrap(), NextHop { egress: private(dip6, 1500), mac: Some(RS1_MAC) });
    // Routed (TUN across networks): the router's MAC, the route's MTU.
    assert_eq!(lookup("10.1.0.5").unwrap(), NextHop { egress: private(dip, 1400), mac: Some(gateway_mac) });
    assert_eq!(lookup("fd00:11::5").unwrap(), NextHop { egress: private(dip6, 1400), mac: Some(gateway_mac) });
    // Routed but not resolved yet, and not routed at all.
    assert_eq!(lookup("10.0.0.12").unwrap(), NextHop { egress: private(dip, 1500), mac: None });
    assert_eq!(lookup("fd00:10::12").unwrap(), NextHop { egress: private(dip6, 1500), mac: None });
    assert_eq!(lookup("198.51.100.7").unwrap(), NextHop::default());
    assert_eq!(lookup("2001:db8::7").unwrap(), NextHop::default());
    let err = lookup("10.0.0.2").unwrap_err().to_string();
    assert!(err.contains("is an address of this host"), "{err}");
}

#[test]
fn fragment_fixture_table() {
    let net = director_net();
    let _inside = net.enter().unwrap();
    let mut inst = instance();
    inst.check_cases(&fixtures::fragment_cases());
    // Each datagram made one connection; its later fragments followed, adding none.
    let conns = ops::connections(&inst.maps).unwrap();
    assert_eq!(conns.iter().filter(|c| c.client.ends_with(":47000") || c.client.ends_with(":47004")).count(), 2, "{conns:?}");
}

/// Runs fixture steps in order, each after its change to the tables.
fn check_steps(inst: &mut Instance, steps: &[fixtures::Step]) {
    for step in steps {
        if let Some(before) = step.before {
            before(&mut inst.maps).unwrap_or_else(|e| panic!("{}: the change before it: {e:#}", step.case.name));
        }
        inst.check_cases(std::slice::from_ref(&step.case));
    }
}

#[test]
fn reuse_fixture_table() {
    let net = director_net();
    let _inside = net.enter().unwrap();
    let mut inst = Instance::empty();
    fixtures::install_reuse_services(&mut inst.maps).unwrap();
    check_steps(&mut inst, &fixtures::reuse_steps());
    // The replaced entries' counts left with them: NAT rs1 keeps 46001 (established),
    // rs2 has the new 46000, DR rs2 has 46100 and 46102 — all three half-open (a SYN
    // each, no ACK yet), so in no count; rs1 has none (46101 was dropped with its
    // real down).
    let (nat, dr) = (ServiceId::Addr(fixtures::REUSE_NAT), ServiceId::Addr(fixtures::REUSE_DR));
    assert_eq!(inst.load(nat, RS1_IP), (1, 0), "NAT rs1: active, inactive");
    assert_eq!(inst.load(nat, fixtures::RS2_IP), (0, 0), "NAT rs2: its connection is half-open");
    assert_eq!(inst.load(dr, RS1_IP), (0, 0), "DR rs1");
    assert_eq!(inst.load(dr, fixtures::RS2_IP), (0, 0), "DR rs2: its connections are half-open");
    let mut half_open: Vec<u16> = inst.maps.half_open.keys().map(|k| u16::from_be_bytes(k.unwrap().sport)).collect();
    half_open.sort();
    assert_eq!(half_open, [46000, 46100, 46102]);
    let conns = ops::connections(&inst.maps).unwrap();
    let real_of = |sport: u16| conns.iter().find(|c| c.client == format!("{CLIENT_IP}:{sport}")).map(|c| c.real);
    assert_eq!(real_of(46000), Some(fixtures::RS2_IP.into()), "46000's entry replaced: {conns:?}");
    assert_eq!(real_of(46100), Some(fixtures::RS2_IP.into()));
    assert_eq!(real_of(46101), None, "dropped with its real down");
    assert_eq!(inst.maps.nat_replies.iter().count(), 1, "the old reply entry left with its connection; 46000's is half-open");
    let view = inst.service(nat);
    let conns_of = |ip| view.reals.iter().find(|r| r.address == IpAddr::V4(ip)).unwrap().conns;
    assert_eq!((conns_of(RS1_IP), conns_of(fixtures::RS2_IP)), (2, 1), "connections scheduled per real");
}

/// conn_reuse_mode as ipvs-sysctl.txt: 0 never reschedules on a finished entry; bit 1
/// does in TIME_WAIT and CLOSE; bit 2 adds FIN_WAIT for DR and TUN (the last state a
/// director that sees one side reaches). Persistent services are left alone.
#[test]
fn conn_reuse_mode_bits_decide_which_finished_entries_a_syn_replaces() {
    let net = director_net();
    let _inside = net.enter().unwrap();
    let mut inst = Instance::empty();
    fixtures::install_reuse_services(&mut inst.maps).unwrap();
    let dr = ServiceId::Addr(fixtures::REUSE_DR);
    let frame = |sport, flags| Frame { tcp_flags: flags, ..Frame::tcp(VIP, fixtures::REUSE_DR.port, sport) };
    let sent_to = |inst: &mut Instance, sport, flags| {
        let (verdict, out) = inst.run_on(PUBLIC_IFINDEX, &frame(sport, flags).bytes());
        assert_eq!(verdict, XDP_REDIRECT);
        <[u8; 6]>::try_from(&out[0..6]).unwrap()
    };
    let set_mode = |inst: &mut Instance, mode| {
        let mut s = ops::settings(&inst.maps).unwrap();
        s.conn_reuse_mode = mode;
        ops::set_settings(&mut inst.maps, s).unwrap();
    };
    let weight = |inst: &mut Instance, w| {
        ops::edit_real(&mut inst.maps, dr, RS1_IP, RealOptions { weight: w, ..Default::default() }).unwrap();
    };
    assert_eq!(ops::settings(&inst.maps).unwrap().conn_reuse_mode, 1, "IPVS's default");
    // Port 46200 ends in FIN_WAIT (client's fin), 46201 in CLOSE (client's rst), both on rs1.
    for (sport, last) in [(46200, 0x11), (46201, 0x04)] {
        for flags in [0x02, 0x10, last] {
            assert_eq!(sent_to(&mut inst, sport, flags), RS1_MAC);
        }
    }
    weight(&mut inst, 0);
    set_mode(&mut inst, 0);
    assert_eq!(sent_to(&mut inst, 46201, 0x02), RS1_MAC, "mode 0: a syn follows a CLOSE entry");
    // A rst in SYN_RECV keeps it (IPVS's table): established first, then closed.
    assert_eq!(sent_to(&mut inst, 46201, 0x10), RS1_MAC);
    assert_eq!(sent_to(&mut inst, 46201, 0x04), RS1_MAC, "back to CLOSE");
    set_mode(&mut inst, 1);
    assert_eq!(sent_to(&mut inst, 46200, 0x02), RS1_MAC, "mode 1: FIN_WAIT is not finished for IPVS");
    assert_eq!(sent_to(&mut inst, 46200, 0x11), RS1_MAC, "back to FIN_WAIT");
    assert_eq!(sent_to(&mut inst, 46201, 0x02), fixtures::RS2_MAC, "mode 1: a syn on a CLOSE entry is scheduled afresh");
    set_mode(&mut inst, 3);
    assert_eq!(sent_to(&mut inst, 46200, 0x02), fixtures::RS2_MAC, "mode 3: and on a DR entry in FIN_WAIT");
    assert_eq!(inst.load(dr, RS1_IP), (0, 0));
    // The two new connections are half-open (a SYN each): counted once their ACK comes.
    assert_eq!(inst.load(dr, fixtures::RS2_IP), (0, 0));
    for sport in [46200, 46201] {
        assert_eq!(sent_to(&mut inst, sport, 0x10), fixtures::RS2_MAC);
    }
    assert_eq!(inst.load(dr, fixtures::RS2_IP), (2, 0));
}

/// IPVS leaves a connection its persistence template controls to the template
/// (`is_new_conn_expected`: "Controlled (FTP DATA or persistence)?"): a SYN on a
/// finished entry of a persistent service follows it, whatever conn_reuse_mode says.
#[test]
fn conn_reuse_mode_leaves_persistent_services_to_their_template() {
    let net = director_net();
    let _inside = net.enter().unwrap();
    let mut inst = Instance::empty();
    let svc = ops::Service { proto: ops::Proto::Tcp, vip: VIP.into(), port: 93 };
    let persistence = Some(ops::Persistence { timeout: 300, netmask: "255.255.255.255".parse().unwrap() });
    let opts = ops::ServiceOptions { scheduler: ops::Scheduler::Fo, persistence, ..Default::default() };
    ops::add_service(&mut inst.maps, ServiceId::Addr(svc), opts).unwrap();
    for (ip, weight, mac) in [(RS1_IP, 2, RS1_MAC), (fixtures::RS2_IP, 1, fixtures::RS2_MAC)] {
        let hop = NextHop { egress: Some(fixtures::PRIVATE_NIC), mac: Some(mac) };
        ops::add_real(&mut inst.maps, ServiceId::Addr(svc), ip, RealOptions { weight, ..Default::default() }, hop).unwrap();
    }
    let sent_to = |inst: &mut Instance, flags| {
        let (verdict, out) = inst.run_on(PUBLIC_IFINDEX, &Frame { tcp_flags: flags, ..Frame::tcp(VIP, 93, 46300) }.bytes());
        assert_eq!(verdict, XDP_REDIRECT);
        <[u8; 6]>::try_from(&out[0..6]).unwrap()
    };
    for flags in [0x02, 0x10, 0x04] {
        assert_eq!(sent_to(&mut inst, flags), RS1_MAC);
    }
    let mut settings = ops::settings(&inst.maps).unwrap();
    settings.conn_reuse_mode = 3;
    ops::set_settings(&mut inst.maps, settings).unwrap();
    assert_eq!(sent_to(&mut inst, 0x02), RS1_MAC, "a syn on the CLOSE entry of a persistent service follows it");
    // Followed, not replaced (the template would pick rs1 again): still one connection.
    let view = inst.service(ServiceId::Addr(svc));
    assert_eq!(view.reals.iter().map(|r| r.conns).sum::<u64>(), 1, "no new connection was opened: {view:?}");
    // The same without persistence is a new connection (the test can tell the two apart).
    ops::edit_service(&mut inst.maps, ServiceId::Addr(svc), ops::ServiceOptions { scheduler: ops::Scheduler::Fo, ..Default::default() }).unwrap();
    assert_eq!(sent_to(&mut inst, 0x10), RS1_MAC);
    assert_eq!(sent_to(&mut inst, 0x04), RS1_MAC);
    assert_eq!(sent_to(&mut inst, 0x02), RS1_MAC);
    let view = inst.service(ServiceId::Addr(svc));
    assert_eq!(view.reals.iter().map(|r| r.conns).sum::<u64>(), 2, "rescheduled: a new connection: {view:?}");
}

/// expire_nodest_conn and UDP, as IPVS (ip_vs_in: a destination not available): a
/// datagram of a flow whose real is gone is scheduled afresh with it (the old entry
/// expired first); without it the datagram is dropped silently and the flow kept.
#[test]
fn udp_flows_of_a_gone_real_are_rescheduled_with_expire_nodest_conn() {
    let net = director_net();
    let _inside = net.enter().unwrap();
    let mut inst = Instance::empty();
    let svc = ops::Service { proto: ops::Proto::Udp, vip: VIP.into(), port: 94 };
    let opts = ops::ServiceOptions { scheduler: ops::Scheduler::Fo, ..Default::default() };
    ops::add_service(&mut inst.maps, ServiceId::Addr(svc), opts).unwrap();
    for (ip, weight, mac) in [(RS1_IP, 2, RS1_MAC), (fixtures::RS2_IP, 1, fixtures::RS2_MAC)] {
        let hop = NextHop { egress: Some(fixtures::PRIVATE_NIC), mac: Some(mac) };
        ops::add_real(&mut inst.maps, ServiceId::Addr(svc), ip, RealOptions { weight, ..Default::default() }, hop).unwrap();
    }
    let datagram = Frame::udp(VIP, 94, 46400).bytes();
    let sent_to = |inst: &mut Instance| {
        let (verdict, out) = inst.run_on(PUBLIC_IFINDEX, &datagram);
        assert_eq!(verdict, XDP_REDIRECT);
        <[u8; 6]>::try_from(&out[0..6]).unwrap()
    };
    assert_eq!(sent_to(&mut inst), RS1_MAC);
    ops::remove_real(&mut inst.maps, ServiceId::Addr(svc), RS1_IP).unwrap();
    assert_eq!(inst.run_on(PUBLIC_IFINDEX, &datagram).0, xlb_testkit::fixtures::XDP_DROP, "expire_nodest_conn off: dropped");
    assert_eq!(inst.counter(counter::DROP_NODEST), 1);
    let mut settings = ops::settings(&inst.maps).unwrap();
    settings.expire_nodest_conn = 1;
    ops::set_settings(&mut inst.maps, settings).unwrap();
    assert_eq!(sent_to(&mut inst), fixtures::RS2_MAC, "expire_nodest_conn on: scheduled afresh");
    assert_eq!(inst.counter(counter::DROP_NODEST), 1, "no more drops");
    assert_eq!(inst.load(ServiceId::Addr(svc), fixtures::RS2_IP), (0, 1));
    assert_eq!(sent_to(&mut inst), fixtures::RS2_MAC, "and follows its new entry");
}

#[test]
fn l2_fixture_table() {
    let net = director_net();
    let _inside = net.enter().unwrap();
    let mut inst = instance();
    fixtures::install_ingress_macs(&mut inst.maps).expect("register the NICs' MACs");
    let mut settings = ops::settings(&inst.maps).unwrap();
    settings.icmp_echo = 1;
    ops::set_settings(&mut inst.maps, settings).unwrap();
    inst.check_cases(&fixtures::l2_cases());
    // The same echo and error for the NIC's own MAC are answered and sent on.
    let ping = Frame::icmp(VIP, fixtures::Icmp { kind: 8, code: 0, rest: [0, 7, 0, 1] }, b"ping".to_vec());
    assert_eq!(inst.run_on(PUBLIC_IFINDEX, &ping.bytes()).0, fixtures::XDP_TX);
    assert_eq!(inst.counter(counter::TX_ICMP_ECHO_REPLY), 1);
    let about = Frame { src: VIP.into(), sport: 84, dst: CLIENT_IP.into(), dport: 41000, tcp_flags: 0x12, ..Frame::tcp(VIP, 84, 41000) };
    let too_big = fixtures::Icmp { kind: 3, code: 4, rest: [0, 0, 0x05, 0x78] };
    let error = Frame::icmp_error(fixtures::ROUTER_IP.into(), VIP.into(), too_big, &about, 28, fixtures::ROUTER_MAC, fixtures::DIRECTOR_MAC);
    assert_eq!(inst.run_on(PUBLIC_IFINDEX, &error.bytes()).0, fixtures::XDP_TX);
    assert_eq!(inst.counter(counter::TX_ICMP_ERROR), 1);
}

/// The daemon's registration reads the NICs' MACs and their macvlan uppers' from the
/// kernel: a keepalived-style VRRP MAC on pub0 becomes an extra MAC of pub0 (and is
/// accepted there), and goes when its link does.
#[test]
fn registration_follows_the_kernels_links() {
    use lb_common::IngressMac;
    let net = director_net();
    let _inside = net.enter().unwrap();
    let mut inst = instance();
    let ifaces = ["pub0".to_string(), "priv0".to_string()];
    let entry = |ifindex, mac| IngressMac { ifindex, mac, _pad: [0; 2] };
    let vmac = [0x00, 0x00, 0x5e, 0x00, 0x01, 0x33];
    net.ns.ip(&["link", "add", "vrrp.51", "link", "pub0", "address", "00:00:5e:00:01:33", "type", "macvlan", "mode", "private"]).unwrap();
    let plan = xlb_core::l2::register(&mut inst.maps, &ifaces).unwrap();
    assert_eq!(inst.maps.ingress_macs.get(&PUBLIC_IFINDEX, 0).unwrap(), entry(PUBLIC_IFINDEX, fixtures::DIRECTOR_MAC));
    assert_eq!(inst.maps.ingress_macs.get(&PRIVATE_IFINDEX, 0).unwrap(), entry(PRIVATE_IFINDEX, DIRECTOR_PRIVATE_MAC));
    assert_eq!(inst.maps.ingress_macs.get(&1, 0).unwrap(), IngressMac::default(), "lo is not attached: its slot stays empty");
    let extras: Vec<IngressMac> = inst.maps.extra_macs.keys().map(|k| k.unwrap()).collect();
    assert_eq!(extras, vec![entry(PUBLIC_IFINDEX, vmac)], "{plan:?}");
    // A syn to the VIP by the VRRP MAC on pub0 is balanced; to another MAC it is not.
    let port = fixtures::DR_OTHER_NIC.port;
    let by_vmac = Frame { dst_mac: vmac, ..Frame::tcp(VIP, port, 42000) };
    assert_eq!(inst.run_on(PUBLIC_IFINDEX, &by_vmac.bytes()).0, XDP_REDIRECT);
    let flooded = Frame { dst_mac: fixtures::OTHER_DIRECTOR_MAC, ..Frame::tcp(VIP, port, 42001) };
    assert_eq!(inst.run_on(PUBLIC_IFINDEX, &flooded.bytes()), (XDP_PASS, flooded.bytes()));
    assert_eq!(inst.counter(counter::PASS_OTHER_HOST), 1);
    net.ns.ip(&["link", "del", "vrrp.51"]).unwrap();
    xlb_core::l2::register(&mut inst.maps, &ifaces).unwrap();
    assert_eq!(inst.maps.extra_macs.keys().count(), 0, "the macvlan's MAC went with it");
    assert_eq!(inst.run_on(PUBLIC_IFINDEX, &Frame { sport: 42002, ..by_vmac }.bytes()).0, XDP_PASS);
    assert_eq!(inst.counter(counter::PASS_OTHER_HOST), 2);

    // A third NIC whose index shares pub0's slot (266 & 255 = 10): pub0 keeps the slot,
    // the newcomer's MAC is found in EXTRA_MACS, and both are checked.
    let col_mac = [0x02, 0xd1, 0, 0, 0x01, 0x0a];
    net.ns.ip(&["link", "add", "col0", "index", "266", "address", "02:d1:00:00:01:0a", "type", "veth", "peer", "name", "col0p"]).unwrap();
    net.ns.ip(&["link", "set", "col0", "up"]).unwrap();
    net.ns.ip(&["link", "set", "col0p", "up"]).unwrap();
    let three = ["pub0".to_string(), "priv0".to_string(), "col0".to_string()];
    xlb_core::l2::register(&mut inst.maps, &three).unwrap();
    assert_eq!(inst.maps.ingress_macs.get(&PUBLIC_IFINDEX, 0).unwrap(), entry(PUBLIC_IFINDEX, fixtures::DIRECTOR_MAC));
    let extras: Vec<IngressMac> = inst.maps.extra_macs.keys().map(|k| k.unwrap()).collect();
    assert_eq!(extras, vec![entry(266, col_mac)]);
    let syn = |mac, sport| Frame { dst_mac: mac, ..Frame::tcp(VIP, port, sport) }.bytes();
    assert_eq!(inst.run_on(266, &syn(col_mac, 42010)).0, XDP_REDIRECT, "col0's own MAC, from EXTRA_MACS");
    assert_eq!(inst.run_on(266, &syn(fixtures::DIRECTOR_MAC, 42011)).0, XDP_PASS, "pub0's MAC is another host's on col0");
    assert_eq!(inst.run_on(PUBLIC_IFINDEX, &syn(fixtures::DIRECTOR_MAC, 42012)).0, XDP_REDIRECT);
    assert_eq!(inst.run_on(PUBLIC_IFINDEX, &syn(col_mac, 42013)).0, XDP_PASS, "col0's MAC is another host's on pub0");
    assert_eq!(inst.counter(counter::PASS_OTHER_HOST), 4);
}
