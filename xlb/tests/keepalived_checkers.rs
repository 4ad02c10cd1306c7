//! keepalived's checker options against real servers on loopback (IPv4 and IPv6): several
//! URLs with status ranges, virtualhost (Host header and TLS SNI), retry with
//! delay_before_retry, bindto, DNS_CHECK, SMTP_CHECK and PING_CHECK.
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use xlb_core::{
    health::{self, CheckKind, Checker, HealthConfig, Target, checkers::Url},
    netns::Netns,
    ops::{Proto, Service, ServiceId},
};

fn target(addr: SocketAddr, config: HealthConfig) -> Target {
    let vip: IpAddr = if addr.is_ipv4() { Ipv4Addr::new(10, 0, 0, 1).into() } else { "2001:db8::1".parse().unwrap() };
    let service = ServiceId::Addr(Service { proto: Proto::Tcp, vip, port: 80 });
    Target { service, real: addr.ip(), port: addr.port(), addr, source: None, config }
}

fn config(kind: CheckKind) -> HealthConfig {
    HealthConfig { timeout: 2.0, ..HealthConfig::new(kind) }
}

fn url(path: &str, status: Option<&str>) -> Url {
    Url { path: path.into(), status: status.map(Into::into), md5: None, contains: None, virtualhost: None }
}

fn err(r: anyhow::Result<Option<u32>>) -> String {
    format!("{:#}", r.expect_err("the check should fail"))
}

/// An HTTP server: /ok 200, /gone 404, /broken 503, anything else echoes the request's
/// Host header. Records each connection's Host header (empty without a request) and peer.
/// (Host header, peer) of each connection.
type Seen = Arc<Mutex<Vec<(String, SocketAddr)>>>;

fn http_server(bind: &str) -> (SocketAddr, Seen) {
    let listener = TcpListener::bind(bind).unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let peer = stream.peer_addr().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut first = String::new();
            if reader.read_line(&mut first).unwrap_or(0) == 0 {
                // A TCP check: connected and gone.
                log.lock().unwrap().push((String::new(), peer));
                continue;
            }
            let mut host = String::new();
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                if let Some(h) = line.strip_prefix("Host: ") {
                    host = h.trim().to_string();
                }
                line.clear();
            }
            log.lock().unwrap().push((host.clone(), peer));
            let path = first.split_whitespace().nth(1).unwrap_or("/").to_string();
            let (status, body) = match path.as_str() {
                "/ok" => (200, "fine".to_string()),
                "/gone" => (404, "no".to_string()),
                "/broken" => (503, "down".to_string()),
                _ => (200, format!("host={host}")),
            };
            let mut s = stream;
            let _ = write!(s, "HTTP/1.0 {status} X\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        }
    });
    (addr, seen)
}

#[test]
fn several_urls_each_with_its_status_codes() {
    for bind in ["127.0.0.1:0", "[::1]:0"] {
        let (addr, _) = http_server(bind);
        let check = |urls: Vec<Url>| health::check_now(&target(addr, HealthConfig { urls, ..config(CheckKind::Http) }));
        check(vec![url("/ok", None)]).unwrap();
        // Every URL must pass: the second one fails the check and is named.
        let e = err(check(vec![url("/ok", None), url("/broken", None)]));
        assert!(e.contains("/broken: HTTP status 503, expected 200-299"), "{e}");
        // Status lists and ranges, as keepalived's status_code.
        check(vec![url("/ok", Some("200-299")), url("/broken", Some("500-599")), url("/gone", Some("200,404"))]).unwrap();
        assert!(err(check(vec![url("/gone", Some("200,204"))])).contains("HTTP status 404"));
    }
}

#[test]
fn virtualhost_is_the_host_header() {
    let (addr, seen) = http_server("127.0.0.1:0");
    let mut u = url("/", None);
    u.contains = Some("host=shop.example.com".into());
    let c = HealthConfig { urls: vec![u.clone()], virtualhost: Some("shop.example.com".into()), ..config(CheckKind::Http) };
    health::check_now(&target(addr, c)).unwrap();
    // A URL's own virtualhost wins over the check's.
    u.virtualhost = Some("api.example.com".into());
    u.contains = Some("host=api.example.com".into());
    let c = HealthConfig { urls: vec![u], virtualhost: Some("shop.example.com".into()), ..config(CheckKind::Http) };
    health::check_now(&target(addr, c)).unwrap();
    // Without one, the address, as keepalived sends it.
    let plain = HealthConfig { urls: vec![url("/ok", None)], ..config(CheckKind::Http) };
    health::check_now(&target(addr, plain)).unwrap();
    assert_eq!(seen.lock().unwrap().last().unwrap().0, addr.to_string());
}

#[test]
fn virtualhost_is_the_tls_server_name() {
    // The server has a certificate for shop.example.com only, and refuses any other name.
    #[derive(Debug)]
    struct OnlyShop(Arc<rustls::sign::CertifiedKey>, Arc<Mutex<Vec<Option<String>>>>);
    impl rustls::server::ResolvesServerCert for OnlyShop {
        fn resolve(&self, hello: rustls::server::ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
            self.1.lock().unwrap().push(hello.server_name().map(str::to_string));
            (hello.server_name() == Some("shop.example.com")).then(|| self.0.clone())
        }
    }
    let cert = rcgen::generate_simple_self_signed(vec!["shop.example.com".into()]).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
    let signing = provider.key_provider.load_private_key(key).unwrap();
    let certified = Arc::new(rustls::sign::CertifiedKey::new(vec![cert.cert.der().clone()], signing));
    let names = Arc::new(Mutex::new(Vec::new()));
    let server_config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(OnlyShop(certified, names.clone())));
    let server_config = Arc::new(server_config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let conn = rustls::ServerConnection::new(server_config.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            let mut buf = [0u8; 1024];
            if tls.read(&mut buf).is_err() {
                continue;
            }
            let _ = tls.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\nshop");
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    });
    let c = |vhost: Option<&str>| HealthConfig { urls: vec![url("/", None)], virtualhost: vhost.map(Into::into), ..config(CheckKind::Https) };
    health::check_now(&target(addr, c(Some("shop.example.com")))).unwrap();
    assert!(err(health::check_now(&target(addr, c(None)))).contains("TLS"));
    assert_eq!(names.lock().unwrap().as_slice(), [Some("shop.example.com".to_string()), None], "SNI sent only with a virtualhost");
}

#[test]
fn bindto_is_the_source_address() {
    let (addr, seen) = http_server("127.0.0.1:0");
    let c = HealthConfig { urls: vec![url("/ok", None)], bindto: Some(Ipv4Addr::new(127, 0, 0, 2).into()), ..config(CheckKind::Http) };
    health::check_now(&target(addr, c)).unwrap();
    assert_eq!(seen.lock().unwrap().last().unwrap().1.ip(), IpAddr::from(Ipv4Addr::new(127, 0, 0, 2)));
    let c = HealthConfig { bindto: Some(Ipv4Addr::new(127, 0, 0, 3).into()), bind_port: None, ..config(CheckKind::Tcp) };
    health::check_now(&target(addr, c)).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(seen.lock().unwrap().last().unwrap().1.ip(), IpAddr::from(Ipv4Addr::new(127, 0, 0, 3)));
    // An address this host does not have cannot be bound.
    let c = HealthConfig { bindto: Some(Ipv4Addr::new(192, 0, 2, 1).into()), ..config(CheckKind::Tcp) };
    assert!(err(health::check_now(&target(addr, c))).contains("bind to 192.0.2.1"));
}

/// A real's state as the checker reports it, and when.
fn first_event(config: HealthConfig, addr: SocketAddr) -> (Duration, health::Event) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (mut checker, mut events) = Checker::new(rt.handle().clone());
    let start = Instant::now();
    checker.sync(vec![target(addr, config)], &|t| health::Verdict { up: !t.config.alpha, weight: None });
    let ev = rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), events.recv()).await }).ok().flatten().expect("a state change");
    (start.elapsed(), ev)
}

#[test]
fn retry_with_delay_before_retry() {
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let base = HealthConfig { interval: 30.0, ..config(CheckKind::Tcp) };
    // Without retries the first failed attempt takes the real down.
    let (at, ev) = first_event(base.clone(), closed);
    assert!(!ev.up && at < Duration::from_millis(500), "{at:?} {ev:?}");
    // retry 2, delay_before_retry 0.4: three attempts, 0.8 s apart at least.
    let (at, ev) = first_event(HealthConfig { retry: 2, delay_before_retry: Some(0.4), ..base }, closed);
    assert!(!ev.up, "{ev:?}");
    assert!(at >= Duration::from_millis(800) && at < Duration::from_secs(3), "down after {at:?}");
}

/// A DNS server: NOERROR for example.com, NXDOMAIN for anything else; records the
/// query types.
fn dns_server(bind: &str) -> (SocketAddr, Arc<Mutex<Vec<u16>>>) {
    let sock = UdpSocket::bind(bind).unwrap();
    let addr = sock.local_addr().unwrap();
    let types = Arc::new(Mutex::new(Vec::new()));
    let log = types.clone();
    thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let q = &buf[..n];
            let mut i = 12;
            let mut labels = Vec::new();
            while q[i] != 0 {
                let l = q[i] as usize;
                labels.push(String::from_utf8_lossy(&q[i + 1..i + 1 + l]).to_string());
                i += l + 1;
            }
            log.lock().unwrap().push(u16::from_be_bytes([q[i + 1], q[i + 2]]));
            let rcode = if labels.join(".") == "example.com" { 0 } else { 3 };
            let mut answer = q.to_vec();
            answer[2] = 0x81;
            answer[3] = 0x80 | rcode;
            let _ = sock.send_to(&answer, from);
        }
    });
    (addr, types)
}

#[test]
fn dns_check_over_ipv4_and_ipv6() {
    for bind in ["127.0.0.1:0", "[::1]:0"] {
        let (addr, types) = dns_server(bind);
        let c = |name: &str| HealthConfig { dns_type: Some("AAAA".into()), dns_name: Some(name.into()), ..config(CheckKind::Dns) };
        health::check_now(&target(addr, c("example.com"))).unwrap();
        assert!(err(health::check_now(&target(addr, c("nope.example")))).contains("RCODE 3"));
        // keepalived's defaults: SOA for `.`.
        health::check_now(&target(addr, config(CheckKind::Dns))).unwrap_err();
        assert_eq!(types.lock().unwrap().as_slice(), [28, 28, 6]);
    }
    // Nothing answers: the timeout decides.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let c = HealthConfig { timeout: 0.3, ..config(CheckKind::Dns) };
    assert!(err(health::check_now(&target(silent.local_addr().unwrap(), c))).contains("no answer within"));
}

fn smtp_server(bind: &str, greeting: &'static str) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind(bind).unwrap();
    let addr = listener.local_addr().unwrap();
    let said = Arc::new(Mutex::new(Vec::new()));
    let log = said.clone();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut w = stream.try_clone().unwrap();
            let mut r = BufReader::new(stream);
            let _ = w.write_all(greeting.as_bytes());
            let mut line = String::new();
            while r.read_line(&mut line).is_ok_and(|n| n > 0) {
                log.lock().unwrap().push(line.trim_end().to_string());
                let _ = w.write_all(if line.starts_with("HELO") { b"250 hello\r\n" } else { b"221 bye\r\n" });
                line.clear();
            }
        }
    });
    (addr, said)
}

#[test]
fn smtp_check_greeting_and_helo() {
    for bind in ["127.0.0.1:0", "[::1]:0"] {
        let (addr, said) = smtp_server(bind, "220-mx.example.com ESMTP\r\n220 ready\r\n");
        let c = HealthConfig { helo_name: Some("lvs.example.com".into()), ..config(CheckKind::Smtp) };
        health::check_now(&target(addr, c)).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(said.lock().unwrap()[0], "HELO lvs.example.com");
    }
    let (busy, _) = smtp_server("127.0.0.1:0", "554 go away\r\n");
    assert!(err(health::check_now(&target(busy, config(CheckKind::Smtp)))).contains("SMTP greeting 554, expected 220"));
}

#[test]
fn ping_check_ipv4_and_ipv6() {
    assert_eq!(unsafe { libc::geteuid() }, 0, "the failing half runs in a namespace: run as root (cargo xtask test)");
    let ns = Netns::create(&format!("xlb-{}-ping", xlb_core::netns::run_id())).unwrap();
    ns.ip(&["link", "set", "lo", "up"]).unwrap();
    let ping = |ip: IpAddr| {
        let ns_path = ns.path();
        thread::spawn(move || {
            // The check's ICMP socket is opened in the namespace (the runtime's threads
            // start from this one and inherit it).
            let ns = std::fs::File::open(ns_path).unwrap();
            assert_eq!(unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNET) }, 0);
            let c = HealthConfig { timeout: 0.5, ..config(CheckKind::Ping) };
            health::check_now(&target(SocketAddr::new(ip, 0), c))
        })
        .join()
        .unwrap()
    };
    let v4: IpAddr = Ipv4Addr::LOCALHOST.into();
    let v6: IpAddr = Ipv6Addr::LOCALHOST.into();
    ping(v4).unwrap();
    ping(v6).unwrap();
    // A host that ignores echo requests fails the check.
    ns.sysctl("net.ipv4.icmp_echo_ignore_all", "1").unwrap();
    ns.sysctl("net.ipv6.icmp.echo_ignore_all", "1").unwrap();
    assert!(err(ping(v4)).contains("no ICMP echo reply from 127.0.0.1"));
    assert!(err(ping(v6)).contains("no ICMP echo reply from ::1"));
}

#[test]
fn checker_options_are_checked() {
    let svc = ServiceId::Addr(Service { proto: Proto::Tcp, vip: Ipv4Addr::new(10, 0, 0, 1).into(), port: 80 });
    let e = |c: HealthConfig| format!("{:#}", c.validate(svc).unwrap_err());
    assert!(e(HealthConfig { urls: vec![url("/", None)], ..config(CheckKind::Tcp) }).contains("`urls` does not apply"));
    assert!(e(HealthConfig { urls: vec![url("/", Some("2xx"))], ..config(CheckKind::Http) }).contains("not an HTTP status code"));
    assert!(e(HealthConfig { urls: vec![url("/", None)], path: Some("/x".into()), ..config(CheckKind::Http) }).contains("replaces"));
    assert!(e(HealthConfig { dns_type: Some("ANY".into()), ..config(CheckKind::Dns) }).contains("`dns_type` ANY"));
    assert!(e(HealthConfig { bind_port: Some(1000), ..config(CheckKind::Tcp) }).contains("without `bindto`"));
    assert!(e(HealthConfig { helo_name: Some("x".into()), ..config(CheckKind::Tcp) }).contains("`helo_name` does not apply"));
    // A PING_CHECK needs no port, even for a firewall-mark service.
    config(CheckKind::Ping).validate(ServiceId::Fwmark(3)).unwrap();
}

#[test]
fn udp_check_without_require_reply_fails_only_on_an_icmp_error() {
    for bind in ["127.0.0.1:0", "[::1]:0"] {
        // Bound, silent: healthy, as keepalived's UDP_CHECK without require_reply.
        let silent = UdpSocket::bind(bind).unwrap();
        let c = HealthConfig { send: Some("hi".into()), reply_optional: true, timeout: 0.5, ..config(CheckKind::Udp) };
        health::check_now(&target(silent.local_addr().unwrap(), c.clone())).unwrap();
        // Nothing bound: the port unreachable fails it.
        let closed = UdpSocket::bind(bind).unwrap().local_addr().unwrap();
        assert!(err(health::check_now(&target(closed, c.clone()))).contains("no UDP answer"));
        // An answer is fine too.
        let sock = UdpSocket::bind(bind).unwrap();
        let addr = sock.local_addr().unwrap();
        thread::spawn(move || {
            let mut buf = [0u8; 64];
            while let Ok((n, from)) = sock.recv_from(&mut buf) {
                let _ = sock.send_to(&buf[..n], from);
            }
        });
        health::check_now(&target(addr, c)).unwrap();
        // Request and expected answer, over either family (a socket of the real's).
        let asked = HealthConfig { send: Some("hi there".into()), expect: Some("hi".into()), ..config(CheckKind::Udp) };
        health::check_now(&target(addr, asked)).unwrap();
    }
    let svc = ServiceId::Addr(Service { proto: Proto::Udp, vip: Ipv4Addr::new(10, 0, 0, 1).into(), port: 53 });
    let both = HealthConfig { send: Some("x".into()), expect: Some("y".into()), reply_optional: true, ..config(CheckKind::Udp) };
    assert!(format!("{:#}", both.validate(svc).unwrap_err()).contains("with `expect`"));
}

#[test]
fn also_checks_must_pass_too() {
    let (addr, _) = http_server("127.0.0.1:0");
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let http = HealthConfig { urls: vec![url("/ok", None)], ..config(CheckKind::Http) };
    let exec = |cmd: &str| HealthConfig { command: Some(cmd.into()), ..config(CheckKind::Exec) };
    let with = |also: Vec<HealthConfig>| HealthConfig { also, ..config(CheckKind::Tcp) };
    health::check_now(&target(addr, with(vec![http.clone(), exec("true")]))).unwrap();
    let e = err(health::check_now(&target(addr, with(vec![http.clone(), exec("exit 1")]))));
    assert!(e.contains("Exec check") && e.contains("exited with 1"), "{e}");
    // An also check with a port of its own goes there.
    let e = err(health::check_now(&target(addr, with(vec![HealthConfig { port: Some(closed.port()), ..config(CheckKind::Tcp) }]))));
    assert!(e.contains(&format!("connect to {closed}")), "{e}");
    // The main check failing fails it first.
    assert!(err(health::check_now(&target(closed, with(vec![exec("true")])))).contains("connect to"));
}
