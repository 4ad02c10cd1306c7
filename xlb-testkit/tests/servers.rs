//! The test kit's own servers, run as the namespace tests run them (the `xlb-testkit`
//! binary), on loopback. Also makes `cargo test` build that binary in the same
//! invocation as every other test, with the same features, so nothing compiles twice.
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    process::{Child, Command, Stdio},
};

const TESTKIT: &str = env!("CARGO_BIN_EXE_xlb-testkit");

/// Kills the server when the test ends, also on failure.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `xlb-testkit SUBCOMMAND --name NAME --listen 127.0.0.1:0` and returns it with the
/// address from its `ready: ... on ADDR` line.
fn start(subcommand: &str, name: &str) -> (Server, SocketAddr) {
    let mut child = Command::new(TESTKIT)
        .args([subcommand, "--name", name, "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting xlb-testkit");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let server = Server(child);
    assert!(line.starts_with(&format!("ready: {name} ")), "unexpected first line {line:?}");
    let addr = line.trim().rsplit(' ').next().unwrap().parse().expect("address in the ready line");
    (server, addr)
}

fn get(addr: SocketAddr, path: &str) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").expect("end of headers") + 4;
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    response[split..].to_vec()
}

#[test]
fn http_server_names_itself_and_serves_sized_bodies() {
    let (_server, addr) = start("http-serve", "rs-test");
    assert_ne!(addr.port(), 0, "the ready line must carry the bound port");
    assert_eq!(get(addr, "/"), b"rs-test\n");
    assert_eq!(get(addr, "/bytes/100000").len(), 100_000);
}

#[test]
fn paced_bodies_take_their_time() {
    let (_server, addr) = start("http-serve", "rs-paced");
    let start = std::time::Instant::now();
    let body = get(addr, "/bytes/200000?rate=400000");
    let took = start.elapsed();
    assert_eq!(body, xlb_testkit::httpd::body_of(200_000));
    // 200 kB at 400 kB/s: the last 16 KiB chunk is due after 0.46 s.
    assert!(took >= std::time::Duration::from_millis(450), "200 kB at 400 kB/s took only {took:?}");
}

#[test]
fn echo_server_answers_every_line_with_its_name() {
    let (_server, addr) = start("echo-serve", "echo-test");
    let mut stream = TcpStream::connect(addr).unwrap();
    let mut lines = BufReader::new(stream.try_clone().unwrap());
    for n in 0..3 {
        writeln!(stream, "line {n}").unwrap();
        let mut answer = String::new();
        lines.read_line(&mut answer).unwrap();
        assert_eq!(answer, format!("echo-test: line {n}\n"));
    }
}
