//! A small HTTP/1.1 server for the demo and tests' real servers: it names itself, so a
//! client can see which real server answered. `GET /bytes/N` returns N bytes, for
//! transfers larger than one segment.
use std::{
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpListener, TcpStream},
};

use anyhow::{Context, Result};

/// Serves forever; prints `ready` once listening so a parent process can wait for it.
pub fn serve(name: &str, listen: SocketAddr) -> Result<()> {
    let listener = TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
    println!("ready: {name} serving HTTP on {listen}");
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
    println!("ready: {name} echoing lines on {listen}");
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

fn handle(name: &str, stream: TcpStream) -> Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Read (and ignore) the headers up to the blank line.
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("/");
    let body: Vec<u8> = match path.strip_prefix("/bytes/").and_then(|n| n.parse::<usize>().ok()) {
        Some(n) => (0..n).map(|i| b'a' + (i % 26) as u8).collect(),
        None => format!("{name}\n").into_bytes(),
    };
    let mut out = stream;
    write!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nX-Real-Server: {name}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    out.write_all(&body)?;
    out.flush()?;
    Ok(())
}
