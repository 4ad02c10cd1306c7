//! The daemon's HTTP side, off unless asked for: the Prometheus endpoint
//! (`--metrics-listen`, `GET /metrics`) and the status page (`--status-listen`: `GET /`
//! a static page, `GET /status.json` what it polls). Both may share one address.
//!
//! HTTP/1.1 by hyper on the daemon's tokio runtime: one request per connection, bounded
//! header reads, a small limit of connections served at once. It reads the fast path
//! only through [`Source`]. Addresses must be loopback unless `--listen-public` is
//! given: nothing here authenticates.
use std::{
    convert::Infallible,
    future::Future,
    net::{SocketAddr, TcpListener},
    pin::Pin,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use http_body_util::Full;
use hyper::{
    Method, Request, StatusCode,
    body::{Bytes, Incoming},
    header::{CACHE_CONTROL, CONTENT_TYPE},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::sync::Semaphore;

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

/// A read of the daemon's state, answered when the state owner gets to it.
pub type Reading<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// What the pages read from the daemon.
pub trait Source: Send + Sync + 'static {
    /// Services with their reals' counts and counters (the status page's sampler
    /// calls this every second).
    fn services(&self) -> Reading<'_, Vec<ServiceView>>;
    /// Everything the metrics show, read together (counts the connection table).
    fn snapshot(&self) -> Reading<'_, Snapshot>;
}

/// How often the status page's traffic history takes a sample, and how many it keeps.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
const HISTORY_SAMPLES: usize = 120;

/// Line colours of the status page's graph, one per real in listing order.
pub const PALETTE: [&str; 8] = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

const STATUS_PAGE: &str = include_str!("status.html");
/// A connection's whole time: reading the request, answering it.
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

    /// Serves on the current tokio runtime until the returned server is dropped.
    pub fn serve(self, source: Arc<dyn Source>) -> Result<WebServer> {
        let history = Arc::new(Mutex::new(TrafficHistory::new(HISTORY_SAMPLES)));
        let mut tasks = Vec::new();
        if self.bound.iter().any(|(_, r)| r.status) {
            tasks.push(tokio::spawn(sample(source.clone(), history.clone())));
        }
        let limit = Arc::new(Semaphore::new(MAX_CONCURRENT));
        for (listener, routes) in self.bound {
            let listener = tokio::net::TcpListener::from_std(listener).context("serving HTTP")?;
            let site = Arc::new(Site { routes, source: source.clone(), history: history.clone() });
            tasks.push(tokio::spawn(accept(listener, site, limit.clone())));
        }
        Ok(WebServer { tasks })
    }
}

/// The serving tasks; dropping it stops them.
pub struct WebServer {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for WebServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn sample(source: Arc<dyn Source>, history: Arc<Mutex<TrafficHistory>>) {
    let mut ticker = tokio::time::interval(SAMPLE_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match source.services().await {
            Ok(services) => history.lock().expect("history lock").record(&services, Instant::now()),
            Err(e) => tracing::warn!("status page: reading the services: {e:#}"),
        }
    }
}

/// One listener's routes and what they read.
struct Site {
    routes: Routes,
    source: Arc<dyn Source>,
    history: Arc<Mutex<TrafficHistory>>,
}

async fn accept(listener: tokio::net::TcpListener, site: Arc<Site>, limit: Arc<Semaphore>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: the next accept may do better.
                tracing::warn!("HTTP accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let site = site.clone();
        let permit = limit.clone().try_acquire_owned().ok();
        tokio::spawn(async move {
            let busy = permit.is_none();
            let service = service_fn(move |req: Request<Incoming>| {
                let site = site.clone();
                async move {
                    let r = if busy { Response::text(503, "busy: too many requests at once\n") } else { site.answer(&req).await };
                    Ok::<_, Infallible>(r.into_http())
                }
            });
            let conn = http1::Builder::new()
                .keep_alive(false)
                .title_case_headers(true)
                .timer(TokioTimer::new())
                .header_read_timeout(IO_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(IO_TIMEOUT, conn).await;
            drop(permit);
        });
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

    fn into_http(self) -> hyper::Response<Full<Bytes>> {
        let mut r = hyper::Response::new(Full::new(Bytes::from(self.body)));
        *r.status_mut() = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        // Content-Type first: hyper writes the headers in this order.
        r.headers_mut().insert(CONTENT_TYPE, self.content_type.parse().expect("a valid header value"));
        r.headers_mut().insert(CACHE_CONTROL, "no-store".parse().expect("a valid header value"));
        r
    }
}

impl Site {
    async fn answer(&self, req: &Request<Incoming>) -> Response {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return Response::text(405, "only GET and HEAD\n");
        }
        // hyper sends no body for HEAD.
        self.route(req.uri().path()).await
    }

    async fn route(&self, path: &str) -> Response {
        let result = match path {
            "/metrics" if self.routes.metrics => self.source.snapshot().await.map(|s| Response {
                status: 200,
                content_type: metrics::CONTENT_TYPE,
                body: metrics::exposition(&s).into_bytes(),
            }),
            "/" if self.routes.status => {
                Ok(Response { status: 200, content_type: "text/html; charset=utf-8", body: STATUS_PAGE.as_bytes().to_vec() })
            }
            "/status.json" if self.routes.status => self.source.snapshot().await.map(|s| {
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
        fn services(&self) -> Reading<'_, Vec<ServiceView>> {
            Box::pin(async { Ok(self.0.services.clone()) })
        }
        fn snapshot(&self) -> Reading<'_, Snapshot> {
            Box::pin(async { Ok(self.0.clone()) })
        }
    }

    fn fixed() -> Arc<dyn Source> {
        Arc::new(Fixed(Snapshot {
            interfaces: vec![Interface { name: "eth0".into(), mode: Some(AttachMode::Native) }],
            services: vec![web_service(vec![real(11, 5, 50, 5000)])],
            counters: vec![("tx_dr", 50)],
            conntrack_entries: 5,
            conntrack_capacity: 100,
            bgp: None,
        }))
    }

    fn get(addr: SocketAddr, request: &str) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
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
        let rt = tokio::runtime::Runtime::new().unwrap();
        let _guard = rt.enter();
        let _servers = (metrics_only.serve(fixed()).unwrap(), both.serve(fixed()).unwrap());

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
