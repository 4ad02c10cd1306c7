//! The daemon's HTTP side, off unless asked for: the Prometheus endpoint
//! (`--metrics-listen`, `GET /metrics`) and the status page (`--status-listen`: `GET /`
//! a static page, `GET /status.json` what it polls). Both may share one address.
//!
//! The daemon is not async, and these are a few small read-only GETs, so this is a
//! minimal HTTP/1.1 server on std::net: one request per connection, bounded sizes and
//! timeouts, a thread per connection up to a small limit. It reads the fast path only
//! through [`Source`]. Addresses must be loopback unless `--listen-public` is given:
//! nothing here authenticates.
use std::{
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::{
    metrics,
    observe::{Snapshot, TrafficHistory, real_health, service_label},
    ops::ServiceView,
};

/// Where to serve what (from `xlb daemon`'s flags).
#[derive(Clone, Debug, Default)]
pub struct WebOptions {
    pub metrics: Option<SocketAddr>,
    pub status: Option<SocketAddr>,
    /// Allow non-loopback addresses.
    pub public: bool,
}

/// What the pages read from the daemon.
pub trait Source: Send + Sync + 'static {
    /// Services with their reals' counts and counters (the status page's sampler
    /// calls this every second).
    fn services(&self) -> Result<Vec<ServiceView>>;
    /// Everything the metrics show, read together (counts the connection table).
    fn snapshot(&self) -> Result<Snapshot>;
}

/// How often the status page's traffic history takes a sample, and how many it keeps.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
const HISTORY_SAMPLES: usize = 120;

/// Line colours of the status page's graph, one per real in listing order.
pub const PALETTE: [&str; 8] = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

const STATUS_PAGE: &str = include_str!("status.html");
const MAX_REQUEST: usize = 8192;
const IO_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_CONCURRENT: usize = 8;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Routes {
    metrics: bool,
    status: bool,
}

/// Bound listeners, not serving yet: binding happens before the daemon attaches, so
/// a taken port or a refused address changes nothing.
pub struct Listeners {
    bound: Vec<(TcpListener, Routes)>,
}

/// Binds the listeners `opts` asks for (none by default).
pub fn bind(opts: &WebOptions) -> Result<Listeners> {
    let mut wanted: Vec<(SocketAddr, Routes)> = Vec::new();
    for (addr, flag, routes) in [
        (opts.metrics, "--metrics-listen", Routes { metrics: true, status: false }),
        (opts.status, "--status-listen", Routes { metrics: false, status: true }),
    ] {
        let Some(addr) = addr else { continue };
        if !addr.ip().is_loopback() && !opts.public {
            bail!(
                "{flag} {addr} is not a loopback address; the endpoint has no authentication, \
                 so add --listen-public to serve it there anyway"
            );
        }
        match wanted.iter_mut().find(|(a, _)| *a == addr) {
            Some((_, both)) => (both.metrics, both.status) = (both.metrics | routes.metrics, both.status | routes.status),
            None => wanted.push((addr, routes)),
        }
    }
    let mut bound = Vec::new();
    for (addr, routes) in wanted {
        let listener = TcpListener::bind(addr).with_context(|| format!("listening on {addr}"))?;
        listener.set_nonblocking(true)?;
        bound.push((listener, routes));
    }
    Ok(Listeners { bound })
}

impl Listeners {
    /// The addresses actually bound (port 0 resolved), with what each serves.
    pub fn addresses(&self) -> Vec<(SocketAddr, &'static str)> {
        self.bound
            .iter()
            .filter_map(|(l, r)| {
                let what = match (r.metrics, r.status) {
                    (true, true) => "metrics and status page",
                    (true, false) => "metrics",
                    _ => "status page",
                };
                Some((l.local_addr().ok()?, what))
            })
            .collect()
    }

    /// Serves until the returned server is dropped.
    pub fn serve(self, source: Arc<dyn Source>) -> WebServer {
        let done = Arc::new(AtomicBool::new(false));
        let history = Arc::new(Mutex::new(TrafficHistory::new(HISTORY_SAMPLES)));
        let mut threads = Vec::new();
        if self.bound.iter().any(|(_, r)| r.status) {
            let (source, history, done) = (source.clone(), history.clone(), done.clone());
            threads.push(std::thread::spawn(move || sample(&*source, &history, &done)));
        }
        let in_flight = Arc::new(AtomicUsize::new(0));
        for (listener, routes) in self.bound {
            let site = Arc::new(Site { routes, source: source.clone(), history: history.clone() });
            let (done, in_flight) = (done.clone(), in_flight.clone());
            threads.push(std::thread::spawn(move || accept(listener, site, &done, &in_flight)));
        }
        WebServer { done, threads }
    }
}

/// The serving threads; dropping it stops and joins them.
pub struct WebServer {
    done: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Drop for WebServer {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn sample(source: &dyn Source, history: &Mutex<TrafficHistory>, done: &AtomicBool) {
    let mut next = Instant::now();
    while !done.load(Ordering::SeqCst) {
        if Instant::now() >= next {
            match source.services() {
                Ok(services) => history.lock().expect("history lock").record(&services, Instant::now()),
                Err(e) => tracing::warn!("status page: reading the services: {e:#}"),
            }
            next = Instant::now() + SAMPLE_INTERVAL;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One listener's routes and what they read.
struct Site {
    routes: Routes,
    source: Arc<dyn Source>,
    history: Arc<Mutex<TrafficHistory>>,
}

fn accept(listener: TcpListener, site: Arc<Site>, done: &AtomicBool, in_flight: &Arc<AtomicUsize>) {
    while !done.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
                let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
                if in_flight.fetch_add(1, Ordering::SeqCst) >= MAX_CONCURRENT {
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    let _ = respond(stream, &Response::text(503, "busy: too many requests at once\n"), false);
                    continue;
                }
                let (site, in_flight) = (site.clone(), in_flight.clone());
                std::thread::spawn(move || {
                    handle(stream, &site);
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                });
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                tracing::warn!("HTTP accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

struct Response {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
}

impl Response {
    fn text(status: u16, body: &str) -> Self {
        Self { status, content_type: "text/plain; charset=utf-8", body: body.as_bytes().to_vec() }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        500 => "Internal Server Error",
        _ => "Service Unavailable",
    }
}

fn handle(mut stream: TcpStream, site: &Site) {
    let (response, head_only) = match read_request(&mut stream) {
        Ok((method, path)) => {
            let head_only = method == "HEAD";
            let response = if method == "GET" || head_only {
                site.route(&path)
            } else {
                Response::text(405, "only GET and HEAD\n")
            };
            (response, head_only)
        }
        Err(e) => (Response::text(400, &format!("{e:#}\n")), false),
    };
    let _ = respond(stream, &response, head_only);
}

/// Reads the request head; returns (method, path without the query).
fn read_request(stream: &mut TcpStream) -> Result<(String, String)> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_REQUEST {
            bail!("request head larger than {MAX_REQUEST} bytes");
        }
        let n = stream.read(&mut buf).context("reading the request")?;
        if n == 0 {
            bail!("connection closed before the end of the request head");
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    let mut parts = text.lines().next().unwrap_or_default().split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else { bail!("malformed request line") };
    let path = target.split('?').next().unwrap_or(target);
    Ok((method.to_string(), path.to_string()))
}

fn respond(mut stream: TcpStream, r: &Response, head_only: bool) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        r.status,
        reason(r.status),
        r.content_type,
        r.body.len()
    );
    stream.write_all(head.as_bytes())?;
    if !head_only {
        stream.write_all(&r.body)?;
    }
    stream.flush()
}

impl Site {
    fn route(&self, path: &str) -> Response {
        let result = match path {
            "/metrics" if self.routes.metrics => self.source.snapshot().map(|s| Response {
                status: 200,
                content_type: metrics::CONTENT_TYPE,
                body: metrics::exposition(&s).into_bytes(),
            }),
            "/" if self.routes.status => {
                Ok(Response { status: 200, content_type: "text/html; charset=utf-8", body: STATUS_PAGE.as_bytes().to_vec() })
            }
            "/status.json" if self.routes.status => self.source.snapshot().map(|s| {
                let doc = status_json(&s, &self.history.lock().expect("history lock"));
                Response { status: 200, content_type: "application/json", body: doc.to_string().into_bytes() }
            }),
            _ => {
                let paths = [(self.routes.status, "/ /status.json"), (self.routes.metrics, "/metrics")];
                let served: Vec<&str> = paths.iter().filter(|(on, _)| *on).map(|(_, p)| *p).collect();
                return Response::text(404, &format!("not found; this address serves {}\n", served.join(" ")));
            }
        };
        result.unwrap_or_else(|e| Response::text(500, &format!("reading the fast path: {e:#}\n")))
    }
}

/// What the status page shows: `snapshot` with each real's colour and rate history.
pub fn status_json(snapshot: &Snapshot, history: &TrafficHistory) -> serde_json::Value {
    let mut colour = PALETTE.iter().cycle();
    let services: Vec<_> = snapshot
        .services
        .iter()
        .map(|s| {
            let reals: Vec<_> = s
                .reals
                .iter()
                .map(|r| {
                    let series = history.series(s.id, r.address);
                    json!({
                        "address": r.address,
                        "health": real_health(r).name(),
                        "weight": r.weight,
                        "active": r.active_conns,
                        "inactive": r.inactive_conns,
                        "conns": r.conns,
                        "packets": r.packets,
                        "bytes": r.bytes,
                        "color": colour.next(),
                        "cps": series.iter().map(|x| x.cps).collect::<Vec<_>>(),
                        "pps": series.iter().map(|x| x.pps).collect::<Vec<_>>(),
                        "bps": series.iter().map(|x| x.bps).collect::<Vec<_>>(),
                    })
                })
                .collect();
            json!({ "name": service_label(&s.id), "scheduler": s.scheduler, "reals": reals })
        })
        .collect();
    json!({
        "interfaces": snapshot.interfaces,
        "conntrack": { "entries": snapshot.conntrack_entries, "capacity": snapshot.conntrack_capacity },
        "counters": snapshot.counters.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "sample_interval_ms": SAMPLE_INTERVAL.as_millis() as u64,
        "history_samples": HISTORY_SAMPLES,
        "services": services,
    })
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::{
        loader::AttachMode,
        observe::{
            Interface,
            tests::{real, web_service},
        },
    };

    struct Fixed(Snapshot);

    impl Source for Fixed {
        fn services(&self) -> Result<Vec<ServiceView>> {
            Ok(self.0.services.clone())
        }
        fn snapshot(&self) -> Result<Snapshot> {
            Ok(self.0.clone())
        }
    }

    fn fixed() -> Arc<dyn Source> {
        Arc::new(Fixed(Snapshot {
            interfaces: vec![Interface { name: "eth0".into(), mode: Some(AttachMode::Native) }],
            services: vec![web_service(vec![real(11, 5, 50, 5000)])],
            counters: vec![("tx_dr", 50)],
            conntrack_entries: 5,
            conntrack_capacity: 100,
        }))
    }

    fn get(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn non_loopback_addresses_need_listen_public() {
        let opts = WebOptions { metrics: Some("0.0.0.0:0".parse().unwrap()), ..Default::default() };
        let err = bind(&opts).err().expect("refused").to_string();
        assert!(err.contains("--metrics-listen 0.0.0.0:0 is not a loopback address") && err.contains("--listen-public"), "{err}");
        let l = bind(&WebOptions { public: true, ..opts }).expect("allowed with --listen-public");
        assert_eq!(l.addresses().len(), 1);
    }

    #[test]
    fn nothing_is_served_by_default() {
        assert!(bind(&WebOptions::default()).unwrap().addresses().is_empty());
    }

    #[test]
    fn one_address_serves_metrics_and_status_page_and_nothing_else() {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        // Two flags on one address: one listener with both.
        let metrics_only = bind(&WebOptions { metrics: Some(any), ..Default::default() }).unwrap();
        let (metrics_addr, what) = metrics_only.addresses()[0];
        assert_eq!(what, "metrics");
        let both = bind(&WebOptions { metrics: Some(any), status: Some(any), public: false }).unwrap();
        assert_eq!(both.addresses().len(), 1);
        let (addr, what) = both.addresses()[0];
        assert_eq!(what, "metrics and status page");
        let _servers = (metrics_only.serve(fixed()), both.serve(fixed()));

        let metrics = get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(metrics.starts_with("HTTP/1.1 200 OK\r\n"), "{metrics}");
        assert!(metrics.contains(&format!("Content-Type: {}\r\n", metrics::CONTENT_TYPE)));
        assert!(metrics.contains("\nxlb_verdicts_total{reason=\"tx_dr\"} 50\n"), "{metrics}");
        let page = get(addr, "GET /?refresh=1 HTTP/1.1\r\n\r\n");
        assert!(page.starts_with("HTTP/1.1 200 OK\r\nContent-Type: text/html"), "{page}");
        assert!(page.contains("<canvas"), "{page}");
        let doc = get(addr, "GET /status.json HTTP/1.1\r\n\r\n");
        let body: serde_json::Value = serde_json::from_str(doc.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(body["services"][0]["name"], "tcp:10.99.0.100:80");
        assert_eq!(body["services"][0]["reals"][0]["address"], Ipv4Addr::new(10, 99, 0, 11).to_string());
        assert_eq!(body["services"][0]["reals"][0]["health"], "up");
        assert_eq!(body["services"][0]["reals"][0]["color"], PALETTE[0]);
        assert_eq!(body["interfaces"][0]["mode"], "native");
        assert_eq!(body["conntrack"]["entries"], 5);

        assert!(get(addr, "POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405 "));
        assert!(get(addr, "GET /etc/passwd HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404 "));
        let head = get(addr, "HEAD /metrics HTTP/1.1\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"), "no body for HEAD: {head}");
        // The metrics-only address has no status page.
        assert!(get(metrics_addr, "GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404 "));
        assert!(get(metrics_addr, "GET /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200 "));
    }
}
