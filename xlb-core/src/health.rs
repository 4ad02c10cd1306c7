//! Health checks, the set keepalived offers: TCP connect, HTTP and HTTPS GET (status,
//! body substring or MD5 digest as keepalived's `digest`), UDP request/response, and
//! exec (exit code; MISC_CHECK's dynamic mode sets the weight from it).
//!
//! Every real runs as one task on the daemon's tokio runtime, so thousands of reals cost
//! thousands of tasks, not threads. Tasks count rises and falls themselves and report
//! only state changes (and dynamic weights) to the daemon.
use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{TcpSocket, TcpStream, UdpSocket},
};

use crate::ops::ServiceId;

pub mod checkers;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    Tcp,
    Http,
    Https,
    Udp,
    Exec,
    /// DNS query, answered without error (keepalived's DNS_CHECK).
    Dns,
    /// SMTP greeting and HELO answered 2xx (keepalived's SMTP_CHECK).
    Smtp,
    /// ICMP echo answered (keepalived's PING_CHECK).
    Ping,
}

/// What happens to a real whose check fails (keepalived's default is to remove it;
/// `inhibit_on_failure` sets its weight to 0 instead).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    #[default]
    Remove,
    Inhibit,
}

fn default_interval() -> f64 {
    5.0
}
fn default_timeout() -> f64 {
    3.0
}
fn one() -> u32 {
    1
}

/// A service's health check, applied to each of its reals (`[service.health]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    #[serde(rename = "type")]
    pub kind: CheckKind,
    /// Check this port instead of the real's (required for firewall-mark services).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Check this address instead of the real's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<IpAddr>,
    /// http/https: path to GET, expected status, body checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<String>,
    /// MD5 of the body, hex (keepalived's `digest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
    /// udp: datagram to send and (optionally) the reply's expected prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<String>,
    /// udp: silence is health too; only an ICMP error (port unreachable) fails, as
    /// keepalived's UDP_CHECK without `require_reply`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reply_optional: bool,
    /// exec: `sh -c` command, with XLB_REAL, XLB_PORT and XLB_SERVICE set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// exec: exit status 2..=255 means up with weight status-2 (MISC_CHECK misc_dynamic).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dynamic: bool,
    /// Seconds between checks.
    #[serde(default = "default_interval")]
    pub interval: f64,
    /// Seconds a check may take.
    #[serde(default = "default_timeout")]
    pub timeout: f64,
    /// Successes in a row that bring a down real up, failures that take an up real down.
    #[serde(default = "one")]
    pub rise: u32,
    #[serde(default = "one")]
    pub fall: u32,
    /// At most this many seconds of random delay before a real's first check.
    #[serde(default)]
    pub warmup: f64,
    /// Start reals down until they pass `rise` checks (keepalived's alpha).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub alpha: bool,
    #[serde(default)]
    pub on_failure: OnFailure,
    /// Fewer healthy reals than this: the sorry server (if any) takes new connections.
    #[serde(default = "one")]
    pub quorum: u32,
    /// Commands run on a real's state change (keepalived's notify_up / notify_down).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_up: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_down: Option<String>,
    /// http/https: several URLs, each fetched in turn, all must pass (keepalived's `url`
    /// blocks); instead of `path`, `status`, `contains`, `md5`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<checkers::Url>,
    /// http/https: the Host header and the TLS server name (keepalived's `virtualhost`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtualhost: Option<String>,
    /// Attempts after a failed one, `delay_before_retry` seconds apart, before a check
    /// of an up real counts as failed (keepalived's `retry`, once `nb_get_retry`).
    #[serde(default, skip_serializing_if = "checkers::is_zero")]
    pub retry: u32,
    /// Seconds between those attempts (default 1, as keepalived's TCP_CHECK).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_before_retry: Option<f64>,
    /// Source address and port of the check's connection (keepalived's `bindto`, `bind_port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bindto: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_port: Option<u16>,
    /// dns: the query's type (A, AAAA, NS, CNAME, SOA, MX, TXT, PTR; default SOA) and
    /// name (default `.`), as keepalived's DNS_CHECK `type` and `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_name: Option<String>,
    /// smtp: the name sent in HELO (keepalived's `helo_name`; default the host name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helo_name: Option<String>,
    /// Quorum is lost below `quorum - hysteresis` healthy reals and regained at
    /// `quorum + hysteresis` (keepalived's `hysteresis`).
    #[serde(default, skip_serializing_if = "checkers::is_zero")]
    pub hysteresis: u32,
    /// The quorum is a total of the healthy reals' weights, as keepalived's, rather
    /// than a number of reals (an import from keepalived sets it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub quorum_weight: bool,
    /// Commands run when the service gains / loses its quorum (keepalived's
    /// `quorum_up` / `quorum_down`), with XLB_SERVICE set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum_up: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum_down: Option<String>,
    /// More checks of the same real, run after this one at each interval (each with its
    /// own `timeout`; without `address`/`port`, the real's): the real is healthy while
    /// all pass, as with several checkers in a keepalived real_server. Only their check
    /// fields count (kind, address, port, timeout, what to send and expect).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also: Vec<HealthConfig>,
}

impl HealthConfig {
    pub fn new(kind: CheckKind) -> Self {
        Self {
            kind,
            port: None,
            address: None,
            path: None,
            status: None,
            contains: None,
            md5: None,
            send: None,
            expect: None,
            reply_optional: false,
            command: None,
            dynamic: false,
            interval: default_interval(),
            timeout: default_timeout(),
            rise: 1,
            fall: 1,
            warmup: 0.0,
            alpha: false,
            on_failure: OnFailure::Remove,
            quorum: 1,
            notify_up: None,
            notify_down: None,
            urls: Vec::new(),
            virtualhost: None,
            retry: 0,
            delay_before_retry: None,
            bindto: None,
            bind_port: None,
            dns_type: None,
            dns_name: None,
            helo_name: None,
            hysteresis: 0,
            quorum_weight: false,
            quorum_up: None,
            quorum_down: None,
            also: Vec::new(),
        }
    }

    /// Checks the combination of fields; errors name the field.
    pub fn validate(&self, service: ServiceId) -> Result<()> {
        let positive = |name: &str, v: f64| {
            if !(v > 0.0 && v.is_finite() && v <= 86_400.0) {
                bail!("health `{name}` must be a number of seconds above 0 (got {v})");
            }
            Ok(())
        };
        positive("interval", self.interval)?;
        positive("timeout", self.timeout)?;
        if !(self.warmup >= 0.0 && self.warmup <= 86_400.0) {
            bail!("health `warmup` must be 0 or more seconds");
        }
        if self.rise == 0 || self.fall == 0 {
            bail!("health `rise` and `fall` must be at least 1");
        }
        if matches!(service, ServiceId::Fwmark(_)) && self.port.is_none() && !matches!(self.kind, CheckKind::Exec | CheckKind::Ping) {
            bail!("the health check of {service} needs a `port` (a firewall-mark service has no single port)");
        }
        let http = matches!(self.kind, CheckKind::Http | CheckKind::Https);
        for (field, set, allowed) in [
            ("path", self.path.is_some(), http),
            ("status", self.status.is_some(), http),
            ("contains", self.contains.is_some(), http),
            ("md5", self.md5.is_some(), http),
            ("send", self.send.is_some(), self.kind == CheckKind::Udp),
            ("expect", self.expect.is_some(), self.kind == CheckKind::Udp),
            ("command", self.command.is_some(), self.kind == CheckKind::Exec),
            ("dynamic", self.dynamic, self.kind == CheckKind::Exec),
        ] {
            if set && !allowed {
                bail!("health `{field}` does not apply to a {:?} check", self.kind);
            }
        }
        if self.kind == CheckKind::Udp && self.send.is_none() {
            bail!("a udp health check needs `send` (the request datagram)");
        }
        if self.kind == CheckKind::Exec && self.command.as_deref().is_none_or(str::is_empty) {
            bail!("an exec health check needs `command`");
        }
        if let Some(md5) = &self.md5 {
            if md5.len() != 32 || !md5.chars().all(|c| c.is_ascii_hexdigit()) {
                bail!("health `md5` must be 32 hex digits");
            }
        }
        if let Some(path) = &self.path {
            if !path.starts_with('/') {
                bail!("health `path` must start with /");
            }
        }
        checkers::validate(self, service)
    }
}

/// A real server as health checks know it: its service, address and port (two NAT
/// reals on one address are two reals, checked and reported apart).
pub type RealKey = (ServiceId, IpAddr, u16);

/// One real to check.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    pub service: ServiceId,
    pub real: IpAddr,
    /// The real's port (0 for a firewall-mark service's real: the client's).
    pub port: u16,
    /// Where the check connects (address/port overrides applied).
    pub addr: SocketAddr,
    /// The address the check is sent from; None: the kernel's choice
    /// (see [`crate::nexthop::check_source`]).
    pub source: Option<IpAddr>,
    pub config: HealthConfig,
}

impl Target {
    pub fn key(&self) -> RealKey {
        (self.service, self.real, self.port)
    }

    /// The local address a check's socket binds: the source, any port.
    pub fn local(&self) -> SocketAddr {
        let any = if self.addr.is_ipv4() { IpAddr::from(std::net::Ipv4Addr::UNSPECIFIED) } else { std::net::Ipv6Addr::UNSPECIFIED.into() };
        SocketAddr::new(self.source.unwrap_or(any), 0)
    }
}

/// A TCP connection to the target's check address, from its source address.
pub async fn tcp_connect(t: &Target) -> Result<TcpStream> {
    let socket = if t.addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    if t.source.is_some() {
        socket.bind(t.local()).with_context(|| format!("binding {}", t.local()))?;
    }
    socket.connect(t.addr).await.with_context(|| format!("connect to {}", t.addr))
}

/// Where a (re)started check begins: the real's current verdict, so that a restart of
/// the check (a reload, an edit of the check, a daemon restart) is not taken for a
/// recovery or a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub up: bool,
    /// The weight an exec check with `dynamic` set, None for the configured weight.
    pub weight: Option<u32>,
}

/// A state change (or a new dynamic weight) of a real, for the daemon to apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub service: ServiceId,
    pub real: IpAddr,
    pub port: u16,
    pub up: bool,
    /// Why it went down, or "passed N checks" when up.
    pub reason: String,
    /// MISC_CHECK dynamic weight: Some(w) while the exec check sets one, None for the
    /// configured weight.
    pub weight: Option<u32>,
    /// Which run of the real's check sent it: a replaced check's late events are stale.
    pub generation: u64,
}

impl Event {
    pub fn key(&self) -> RealKey {
        (self.service, self.real, self.port)
    }
}

/// Runs the checks of every target until told otherwise.
pub struct Checker {
    runtime: tokio::runtime::Handle,
    tasks: HashMap<RealKey, (Target, u64, tokio::task::JoinHandle<()>)>,
    next_generation: u64,
    sender: tokio::sync::mpsc::UnboundedSender<Event>,
}

impl Checker {
    /// A checker whose tasks run on `runtime` (the daemon's), and the receiver of the
    /// state changes they report.
    pub fn new(runtime: tokio::runtime::Handle) -> (Self, tokio::sync::mpsc::UnboundedReceiver<Event>) {
        let (sender, events) = tokio::sync::mpsc::unbounded_channel();
        (Self { runtime, tasks: HashMap::new(), next_generation: 0, sender }, events)
    }

    /// Makes the running checks be exactly `targets`: new ones start, changed ones
    /// restart, vanished ones stop. A (re)started check begins from `start(target)`.
    /// Returns the targets (re)started with where each began.
    pub fn sync(&mut self, targets: Vec<Target>, start: &dyn Fn(&Target) -> Verdict) -> Vec<(Target, Verdict)> {
        let wanted: HashMap<RealKey, Target> = targets.into_iter().map(|t| (t.key(), t)).collect();
        self.tasks.retain(|key, (running, _, handle)| {
            let keep = wanted.get(key) == Some(running);
            if !keep {
                handle.abort();
            }
            keep
        });
        let mut started = Vec::new();
        for (key, target) in wanted {
            if self.tasks.contains_key(&key) {
                continue;
            }
            self.next_generation += 1;
            let generation = self.next_generation;
            let begin = start(&target);
            let handle = self.runtime.spawn(run_target(target.clone(), begin, generation, self.sender.clone()));
            self.tasks.insert(key, (target.clone(), generation, handle));
            started.push((target, begin));
        }
        started
    }

    /// Whether `event` comes from the check now running for its real (not from one
    /// replaced or stopped since, whose late results must not count).
    pub fn is_current(&self, event: &Event) -> bool {
        self.tasks.get(&event.key()).is_some_and(|(_, generation, _)| *generation == event.generation)
    }

    pub fn running(&self) -> usize {
        self.tasks.len()
    }
}

/// Checks one real until aborted, starting from `begin`, and reports each change of its
/// verdict (up/down, dynamic weight) tagged with `generation`.
async fn run_target(t: Target, begin: Verdict, generation: u64, events: tokio::sync::mpsc::UnboundedSender<Event>) {
    let c = &t.config;
    if c.warmup > 0.0 {
        let jitter = (std::process::id() as f64 * 0.618 + t.real.is_ipv4() as u32 as f64 + t.addr.port() as f64 * 0.377).fract();
        tokio::time::sleep(Duration::from_secs_f64(c.warmup * jitter)).await;
    }
    let send = |up: bool, reason: String, weight: Option<u32>| {
        let _ = events.send(Event { service: t.service, real: t.real, port: t.port, up, reason, weight, generation });
    };
    let mut up = begin.up;
    let (mut passed, mut failed) = (0u32, 0u32);
    let mut weight: Option<u32> = begin.weight;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(c.interval));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let outcome = checkers::with_retries(&t, up).await;
        match outcome {
            Ok(dynamic) => {
                passed += 1;
                failed = 0;
                if !up && passed >= c.rise {
                    up = true;
                    weight = dynamic;
                    send(true, format!("passed {passed} check(s)"), dynamic);
                } else if up && c.dynamic && dynamic != weight {
                    // Back to the configured weight (exit 0) is a change too.
                    weight = dynamic;
                    let reason = match dynamic {
                        Some(w) => format!("check set weight {w}"),
                        None => "check passed: configured weight".to_string(),
                    };
                    send(true, reason, dynamic);
                }
            }
            Err(e) => {
                failed += 1;
                passed = 0;
                if up && failed >= c.fall {
                    up = false;
                    send(false, format!("{e:#} ({failed} failed check(s))"), None);
                }
            }
        }
    }
}

/// One check. Ok carries the dynamic weight an exec check set, if any.
async fn check_once(t: &Target) -> Result<Option<u32>> {
    if let Some(outcome) = checkers::check(t).await {
        return outcome;
    }
    let c = &t.config;
    match c.kind {
        CheckKind::Tcp => {
            tcp_connect(t).await?;
            Ok(None)
        }
        CheckKind::Http => {
            let stream = tcp_connect(t).await?;
            http_get(stream, t).await.map(|()| None)
        }
        CheckKind::Https => {
            let stream = tcp_connect(t).await?;
            let connector = tokio_rustls::TlsConnector::from(tls_config());
            let name = rustls::pki_types::ServerName::IpAddress(t.addr.ip().into());
            let tls = connector.connect(name, stream).await.context("TLS handshake")?;
            http_get(tls, t).await.map(|()| None)
        }
        CheckKind::Udp => {
            // The socket's family is the real's: an IPv4 socket cannot reach an IPv6 real.
            let sock = UdpSocket::bind(t.local()).await.with_context(|| format!("UDP socket on {}", t.local()))?;
            sock.connect(t.addr).await.with_context(|| format!("UDP to {}", t.addr))?;
            sock.send(c.send.as_deref().unwrap_or_default().as_bytes()).await?;
            let mut buf = vec![0u8; 65_536];
            let n = sock.recv(&mut buf).await.with_context(|| format!("no UDP answer from {}", t.addr))?;
            if let Some(expect) = &c.expect {
                if !buf[..n].starts_with(expect.as_bytes()) {
                    bail!("UDP answer does not start with {expect:?}");
                }
            }
            Ok(None)
        }
        CheckKind::Exec => {
            let status = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(c.command.as_deref().unwrap_or_default())
                .env("XLB_REAL", t.real.to_string())
                .env("XLB_PORT", t.addr.port().to_string())
                .env("XLB_SERVICE", t.service.to_string())
                .kill_on_drop(true)
                .status()
                .await
                .context("running the check command")?;
            match status.code() {
                Some(0) => Ok(None),
                Some(code) if c.dynamic && code >= 2 => Ok(Some(code as u32 - 2)),
                Some(code) => bail!("check command exited with {code}"),
                None => bail!("check command was killed by a signal"),
            }
        }
        CheckKind::Dns | CheckKind::Smtp | CheckKind::Ping => unreachable!("checkers::check runs these"),
    }
}

async fn http_get<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, t: &Target) -> Result<()> {
    let c = &t.config;
    let path = c.path.as_deref().unwrap_or("/");
    let request = format!("GET {path} HTTP/1.0\r\nHost: {}\r\nUser-Agent: xlb-health\r\nConnection: close\r\n\r\n", t.addr.ip());
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    // A body of a few MB at most is read; the checks compare status and content.
    let _ = (&mut stream).take(8 << 20).read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = match response.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => (&text[..i], &response[i + 4..]),
        None => bail!("not an HTTP response"),
    };
    let status: u16 = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .context("no HTTP status line")?;
    let want = c.status.unwrap_or(200);
    if status != want {
        bail!("HTTP status {status}, expected {want}");
    }
    if let Some(needle) = &c.contains {
        if !String::from_utf8_lossy(body).contains(needle.as_str()) {
            bail!("body does not contain {needle:?}");
        }
    }
    if let Some(md5) = &c.md5 {
        use md5::Digest;
        let got: String = md5::Md5::digest(body).iter().map(|b| format!("{b:02x}")).collect();
        if !got.eq_ignore_ascii_case(md5) {
            bail!("body digest {got}, expected {md5}");
        }
    }
    Ok(())
}

/// TLS for checks: like keepalived's SSL_GET, the real's certificate is not verified
/// (it is our own server, addressed by IP); the check is about the service answering.
fn tls_config() -> Arc<rustls::ClientConfig> {
    #[derive(Debug)]
    struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);
    impl rustls::client::danger::ServerCertVerifier for AcceptAny {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_no_client_auth();
    Arc::new(config)
}

/// One check of `target`, run to completion (tests and `xlb health test`).
pub fn check_now(target: &Target) -> Result<Option<u32>> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        match tokio::time::timeout(Duration::from_secs_f64(target.config.timeout), check_once(target)).await {
            Ok(r) => r,
            Err(_) => Err(anyhow::anyhow!("no answer within {} s", target.config.timeout)),
        }
    })
}
