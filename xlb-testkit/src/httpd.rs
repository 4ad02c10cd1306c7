//! A small HTTP/1.1 server for the demo and tests' real servers: it names itself, so a
//! client can see which real server answered. `GET /bytes/N` returns N bytes, for
//! transfers larger than one segment, and `GET /bytes/N?rate=R` the same N bytes sent at
//! R bytes per second, for downloads that last (a failover in the middle of one);
//! `POST /upload` reads the body and answers with its length and FNV-1a hash, for
//! transfers the other way.
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

/// Serves forever; prints `ready` once listening so a parent process can wait for it.
pub fn serve(name: &str, listen: SocketAddr) -> Result<()> {
    let listener = TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
    // The bound address, so a caller that asked for port 0 learns the port.
    println!("ready: {name} serving HTTP on {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let name = name.to_string();
        std::thread::spawn(move || {
            let _ = handle(&name, stream);
        });
    }
    Ok(())
}

/// A line echo server for long-lived connections: every line comes back as
/// "NAME: line", for as long as the client keeps the connection open.
pub fn serve_echo(name: &str, listen: SocketAddr) -> Result<()> {
    let listener = TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
    println!("ready: {name} echoing lines on {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let name = name.to_string();
        std::thread::spawn(move || -> Result<()> {
            let mut out = stream.try_clone()?;
            for line in BufReader::new(stream).lines() {
                writeln!(out, "{name}: {}", line?)?;
            }
            Ok(())
        });
    }
    Ok(())
}

/// The N bytes `GET /bytes/N` answers: a, b, …, z, a, …
pub fn body_of(n: usize) -> Vec<u8> {
    body_range(0, n)
}

/// Bytes `start..end` of any `/bytes/N` body (the pattern does not depend on N).
fn body_range(start: usize, end: usize) -> Vec<u8> {
    (start..end).map(|i| b'a' + (i % 26) as u8).collect()
}

/// Bytes a paced body (`?rate=R`) writes at a time: 16 KiB, a few segments.
const PACED_CHUNK: usize = 16 * 1024;

/// `/bytes/N?rate=R`: (N, R) with R > 0 in bytes per second; None for anything else.
fn paced(path: &str) -> Option<(usize, u64)> {
    let (n, query) = path.strip_prefix("/bytes/")?.split_once('?')?;
    let rate = query.strip_prefix("rate=")?.parse::<u64>().ok().filter(|&r| r > 0)?;
    Some((n.parse().ok()?, rate))
}

/// Writes the `n` bytes of a `/bytes/N` body to `out`, chunk by chunk, never ahead of
/// `rate` bytes per second since the first chunk.
fn write_paced(out: &mut TcpStream, n: usize, rate: u64) -> Result<()> {
    let start = Instant::now();
    let mut sent = 0;
    while sent < n {
        let due = start + Duration::from_secs_f64(sent as f64 / rate as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let end = (sent + PACED_CHUNK).min(n);
        out.write_all(&body_range(sent, end))?;
        sent = end;
    }
    Ok(())
}

/// 64-bit FNV-1a, the upload answer's hash.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

fn handle(name: &str, stream: TcpStream) -> Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Read the headers up to the blank line; only Content-Length matters.
    let mut content_length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        if let Some((header, value)) = line.split_once(':') {
            if header.eq_ignore_ascii_case("content-length") {
                content_length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("/");
    let mut out = stream;
    if let Some((n, rate)) = paced(path) {
        write!(out, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {n}\r\nX-Real-Server: {name}\r\nConnection: close\r\n\r\n")?;
        write_paced(&mut out, n, rate)?;
        return Ok(out.flush()?);
    }
    let body: Vec<u8> = if path == "/upload" {
        let mut upload = vec![0u8; content_length];
        reader.read_exact(&mut upload)?;
        format!("{name} received {} bytes, fnv1a {:016x}\n", upload.len(), fnv1a(&upload)).into_bytes()
    } else {
        match path.strip_prefix("/bytes/").and_then(|n| n.parse::<usize>().ok()) {
            Some(n) => body_of(n),
            None => format!("{name}\n").into_bytes(),
        }
    };
    write!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nX-Real-Server: {name}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    out.write_all(&body)?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_known_values() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(body_of(28), b"abcdefghijklmnopqrstuvwxyzab");
        assert_eq!(body_range(25, 28), b"zab");
    }

    #[test]
    fn paced_paths() {
        assert_eq!(paced("/bytes/1000?rate=500"), Some((1000, 500)));
        assert_eq!(paced("/bytes/1000"), None);
        assert_eq!(paced("/bytes/1000?rate=0"), None);
        assert_eq!(paced("/bytes/x?rate=5"), None);
    }
}
