//! Each kind of health check against real servers on loopback: what passes, what fails
//! and why.
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket},
    sync::Arc,
    thread,
};

use xlb_core::{
    health::{self, CheckKind, HealthConfig, Target},
    ops::{Proto, Service, ServiceId},
};

fn target(addr: SocketAddr, config: HealthConfig) -> Target {
    let service = ServiceId::Addr(Service { proto: Proto::Tcp, vip: Ipv4Addr::new(10, 0, 0, 1).into(), port: 80 });
    Target { service, real: addr.ip(), port: addr.port(), addr, source: None, config }
}

fn config(kind: CheckKind) -> HealthConfig {
    HealthConfig { timeout: 2.0, ..HealthConfig::new(kind) }
}

/// An HTTP/1.0 server on 127.0.0.1 answering every request with `status` and `body`.
fn http_server(status: u16, body: &'static str) -> SocketAddr {
    http_server_on("127.0.0.1:0", status, body)
}

/// An HTTP/1.0 server bound to `bind` answering every request with `status` and `body`.
fn http_server_on(bind: &str, status: u16, body: &'static str) -> SocketAddr {
    let listener = TcpListener::bind(bind).unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                line.clear();
            }
            let mut s = stream;
            let _ = write!(s, "HTTP/1.0 {status} X\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        }
    });
    addr
}

fn closed_port() -> SocketAddr {
    // Bound then dropped: nothing listens there.
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

#[test]
fn tcp_connect() {
    let up = http_server(200, "ok");
    assert!(health::check_now(&target(up, config(CheckKind::Tcp))).is_ok());
    let err = health::check_now(&target(closed_port(), config(CheckKind::Tcp))).unwrap_err();
    assert!(format!("{err:#}").contains("connect to"), "{err:#}");
}

#[test]
fn http_status_substring_and_digest() {
    let addr = http_server(200, "all good here");
    let ok = |c: HealthConfig| health::check_now(&target(addr, c));
    assert!(ok(config(CheckKind::Http)).is_ok());
    assert!(ok(HealthConfig { contains: Some("good".into()), ..config(CheckKind::Http) }).is_ok());
    let e = ok(HealthConfig { contains: Some("bad".into()), ..config(CheckKind::Http) }).unwrap_err();
    assert!(format!("{e:#}").contains("does not contain"));
    // md5("all good here"), as `md5sum` prints it.
    assert!(ok(HealthConfig { md5: Some("c176cf7f1b3461dbae51d186eafa6cc7".into()), ..config(CheckKind::Http) }).is_ok());
    let e = ok(HealthConfig { md5: Some("0".repeat(32)), ..config(CheckKind::Http) }).unwrap_err();
    assert!(format!("{e:#}").contains("body digest"));
    let e = ok(HealthConfig { status: Some(204), ..config(CheckKind::Http) }).unwrap_err();
    assert!(format!("{e:#}").contains("HTTP status 200, expected 204"));
    let broken = http_server(503, "down");
    let e = health::check_now(&target(broken, config(CheckKind::Http))).unwrap_err();
    assert!(format!("{e:#}").contains("HTTP status 503"));
}

#[test]
fn https_without_certificate_verification() {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
    let server_config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    let server_config = Arc::new(server_config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let conn = rustls::ServerConnection::new(server_config.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            let mut buf = [0u8; 1024];
            let _ = tls.read(&mut buf);
            let _ = tls.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 6\r\n\r\nsecure");
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    });
    let c = HealthConfig { contains: Some("secure".into()), ..config(CheckKind::Https) };
    health::check_now(&target(addr, c)).unwrap();
    // A plain HTTP server fails the TLS handshake.
    let plain = http_server(200, "ok");
    let e = health::check_now(&target(plain, config(CheckKind::Https))).unwrap_err();
    assert!(format!("{e:#}").contains("TLS"), "{e:#}");
}

#[test]
fn udp_request_response() {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let mut answer = b"pong:".to_vec();
            answer.extend_from_slice(&buf[..n]);
            let _ = sock.send_to(&answer, from);
        }
    });
    let c = |expect: &str| HealthConfig { send: Some("ping".into()), expect: Some(expect.into()), ..config(CheckKind::Udp) };
    health::check_now(&target(addr, c("pong:ping"))).unwrap();
    let e = health::check_now(&target(addr, c("nope"))).unwrap_err();
    assert!(format!("{e:#}").contains("does not start with"));
    // Nothing answers: the timeout decides.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let quiet = HealthConfig { timeout: 0.3, ..c("pong") };
    let e = health::check_now(&target(silent.local_addr().unwrap(), quiet)).unwrap_err();
    assert!(format!("{e:#}").contains("no answer within"));
}

#[test]
fn exec_exit_codes_and_dynamic_weight() {
    let addr = closed_port();
    let exec = |command: &str, dynamic: bool| {
        health::check_now(&target(addr, HealthConfig { command: Some(command.into()), dynamic, ..config(CheckKind::Exec) }))
    };
    assert_eq!(exec("test \"$XLB_REAL\" = 127.0.0.1", false).unwrap(), None);
    assert!(format!("{:#}", exec("exit 1", false).unwrap_err()).contains("exited with 1"));
    // misc_dynamic: exit 2+w means healthy with weight w.
    assert_eq!(exec("exit 7", true).unwrap(), Some(5));
    assert!(exec("exit 7", false).is_err(), "without dynamic, any non-zero status fails");
}

#[test]
fn configurations_are_checked() {
    let svc = ServiceId::Addr(Service { proto: Proto::Tcp, vip: Ipv4Addr::new(10, 0, 0, 1).into(), port: 80 });
    let err = |c: HealthConfig| format!("{:#}", c.validate(svc).unwrap_err());
    assert!(err(config(CheckKind::Exec)).contains("needs `command`"));
    assert!(err(HealthConfig { md5: Some("xyz".into()), ..config(CheckKind::Http) }).contains("32 hex digits"));
    assert!(err(HealthConfig { path: Some("health".into()), ..config(CheckKind::Http) }).contains("start with /"));
    assert!(err(HealthConfig { fall: 0, ..config(CheckKind::Tcp) }).contains("at least 1"));
    assert!(config(CheckKind::Tcp).validate(svc).is_ok());
}

/// Case 10: a UDP check of an IPv6 real (the socket must be of the real's family).
#[test]
fn udp_request_response_ipv6() {
    let sock = UdpSocket::bind("[::1]:0").expect("an IPv6 loopback address");
    let addr = sock.local_addr().unwrap();
    thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let _ = sock.send_to(&buf[..n], from);
        }
    });
    let c = HealthConfig { send: Some("ping6".into()), expect: Some("ping6".into()), ..config(CheckKind::Udp) };
    health::check_now(&target(addr, c)).unwrap();
    let tcp = http_server6();
    health::check_now(&target(tcp, config(CheckKind::Http))).unwrap();
}

/// An HTTP/1.0 server on [::1] answering 200.
fn http_server6() -> SocketAddr {
    http_server_on("[::1]:0", 200, "ok")
}
