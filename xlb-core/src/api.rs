//! The daemon's local API: one JSON request and one JSON response per connection on a
//! Unix socket that only root can open (directory 0700, socket 0600).
use std::{
    io::{BufRead, BufReader, Read, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::{
    health::HealthConfig,
    ops::{ConnView, RealAddr, RealOptions, Service, ServiceId, ServiceOptions, ServiceView},
    reconcile::Changes,
};

/// Where an instance keeps its socket and saved state, named after its pin directory
/// (`/sys/fs/bpf/xlb` → `/run/xlb/xlb.sock`, `/var/lib/xlb/xlb.toml`).
#[derive(Clone, Debug)]
pub struct Paths {
    pub pin_dir: PathBuf,
    pub socket: PathBuf,
    pub state: PathBuf,
}

pub const RUN_DIR: &str = "/run/xlb";
pub const STATE_DIR: &str = "/var/lib/xlb";

impl Paths {
    pub fn for_pin_dir(pin_dir: &Path) -> Self {
        let name = pin_dir.file_name().map_or_else(|| "xlb".into(), |n| n.to_string_lossy().into_owned());
        Self {
            pin_dir: pin_dir.to_owned(),
            socket: Path::new(RUN_DIR).join(format!("{name}.sock")),
            state: Path::new(STATE_DIR).join(format!("{name}.toml")),
        }
    }
}

/// Timeouts and switches as `xlb set` changes them (None: unchanged).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingsChange {
    pub tcp: Option<u32>,
    pub tcpfin: Option<u32>,
    pub udp: Option<u32>,
    pub expire_nodest_conn: Option<bool>,
    pub sloppy_tcp: Option<bool>,
    #[serde(default)]
    pub expire_quiescent_template: Option<bool>,
    pub icmp_echo: Option<bool>,
    /// IPVS's conn_reuse_mode (0..=3).
    pub conn_reuse_mode: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingsView {
    pub tcp: u32,
    pub tcpfin: u32,
    pub udp: u32,
    pub expire_nodest_conn: bool,
    pub sloppy_tcp: bool,
    /// Ping to VIPs answered by the fast path (`xlb set --icmp-echo`).
    #[serde(default)]
    pub icmp_echo: bool,
    #[serde(default)]
    pub expire_quiescent_template: bool,
    #[serde(default)]
    pub conn_reuse_mode: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusView {
    pub pid: u32,
    pub interfaces: Vec<String>,
    pub pin_dir: PathBuf,
    pub state_file: PathBuf,
    pub config_file: Option<PathBuf>,
    pub services: usize,
    pub connections: usize,
    /// Half-open TCP connections (a SYN seen, the handshake not completed).
    #[serde(default)]
    pub half_open_connections: usize,
    /// Each map's size and estimated kernel memory.
    #[serde(default)]
    pub tables: Vec<crate::sizes::MapMemory>,
    /// The VIP announcement through BIRD (None: not configured).
    #[serde(default)]
    pub bgp: Option<crate::bgp::BgpStatus>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    AddService { service: ServiceId, options: ServiceOptions },
    EditService { service: ServiceId, options: ServiceOptions },
    DelService { service: ServiceId },
    AddFrontends { mark: u32, frontends: Vec<Service> },
    DelFrontends { mark: u32, frontends: Vec<Service> },
    AddReal { service: ServiceId, address: RealAddr, options: RealOptions },
    EditReal { service: ServiceId, address: RealAddr, options: RealOptions },
    DelReal { service: ServiceId, address: RealAddr },
    /// All of them or none (ipvsadm -R).
    Batch { requests: Vec<Request> },
    /// Remove every service (ipvsadm -C).
    Clear,
    /// Set (or with None remove) a service's health check.
    SetHealth { service: ServiceId, health: Option<HealthConfig> },
    /// Set (or with None remove) a service's sorry server.
    SetSorry { service: ServiceId, address: Option<std::net::IpAddr> },
    /// Zero traffic counters (ipvsadm -Z).
    Zero { service: Option<ServiceId> },
    SetSettings { change: SettingsChange },
    /// Make the whole state be this config (TOML text); `origin` names it in errors.
    Apply { config: String, origin: String },
    /// Re-read the config file given at start (as SIGHUP does).
    Reload,
    List,
    Conns,
    Counters,
    Settings,
    Status,
    /// Detach the fast path, remove the pins and exit.
    Stop,
    /// Start a connection sync daemon (ipvsadm --start-daemon).
    StartSyncDaemon { config: crate::sync::DaemonConfig },
    /// Stop one (ipvsadm --stop-daemon).
    StopSyncDaemon { role: crate::sync::Role },
    /// The running sync daemons (ipvsadm -L --daemon).
    SyncDaemons,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "reply", content = "value", rename_all = "snake_case")]
pub enum Reply {
    Done,
    Changes(Changes),
    Services(Vec<ServiceView>),
    Conns(Vec<ConnView>),
    Counters(Vec<(String, u64)>),
    Settings(SettingsView),
    Status(StatusView),
    SyncDaemons(Vec<crate::sync::DaemonView>),
}

/// The wire form of a result: a refusal keeps libipvs's words for ipvsadm's output.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Ok(Reply),
    Err {
        message: String,
        ipvs: Option<String>,
        /// Which request of a batch failed (0-based).
        #[serde(default)]
        failed_request: Option<usize>,
    },
}

/// The API protocol's version, carried by every request and response. Version 1 was the
/// protocol before versions: a bare [`Request`] and a bare [`Response`]. Raise it with
/// any change of [`Request`], [`Reply`] or [`Response`] an older side would misread.
pub const PROTOCOL_VERSION: u32 = 3;

/// This xlb's release, named in version mismatch errors.
pub const XLB_VERSION: &str = env!("CARGO_PKG_VERSION");

/// A request as sent: `{"version": 3, "xlb": "0.1.0", "request": {...}}`. An older
/// daemon finds no `op` in it and refuses it whole: nothing is executed.
#[derive(Serialize, Deserialize)]
struct RequestEnvelope<R> {
    version: u32,
    #[serde(default)]
    xlb: Option<String>,
    request: R,
}

/// A response as sent: `{"version": 3, "xlb": "0.1.0", "response": {...}}`.
#[derive(Serialize, Deserialize)]
struct ResponseEnvelope<R> {
    version: u32,
    #[serde(default)]
    xlb: Option<String>,
    response: R,
}

/// What to do about a version mismatch.
const MISMATCH_ADVICE: &str = "nothing was changed; run the xlb binary of the daemon's version, or restart the daemon \
     with this one (a restart keeps the fast path and its connections)";

/// Why a call to the daemon failed. The CLI's exit codes and ipvsadm's words are taken
/// from here (ipvsadm(8): libipvs's message alone for a refused change).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(
        "no running xlb found ({}: {source}); start one with `xlb daemon --iface IFACE` (or `xlb run --iface IFACE`)",
        socket.display()
    )]
    NoDaemon { socket: PathBuf, source: std::io::Error },
    /// The two sides speak different protocol versions (`theirs` None: the daemon
    /// predates versions, protocol 1).
    #[error(
        "version mismatch: this xlb ({XLB_VERSION}) speaks API protocol {PROTOCOL_VERSION}, the daemon {} speaks \
         protocol {}; {MISMATCH_ADVICE}",
        their_xlb.as_deref().map_or("(an xlb from before protocol versions)".to_string(), |v| format!("(xlb {v})")),
        theirs.unwrap_or(1)
    )]
    VersionMismatch { theirs: Option<u32>, their_xlb: Option<String> },
    /// The daemon refused or failed the request.
    #[error("{message}")]
    Daemon {
        message: String,
        /// libipvs's words for a refused change (what ipvsadm prints).
        ipvs: Option<String>,
        /// Which request of a batch failed (0-based).
        failed_request: Option<usize>,
    },
    #[error("talking to the daemon: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed API message: {0}")]
    Malformed(String),
}

impl Request {
    /// Whether the request may change the services, reals or settings (the daemon then
    /// saves its state and re-reads what follows from the model: next hops, BGP); false
    /// for listings, status, stop and the sync daemons (not part of the saved state).
    pub fn changes_services(&self) -> bool {
        !matches!(
            self,
            Request::List
                | Request::Conns
                | Request::Counters
                | Request::Settings
                | Request::Status
                | Request::Stop
                | Request::StartSyncDaemon { .. }
                | Request::StopSyncDaemon { .. }
                | Request::SyncDaemons
        )
    }
}

/// The version mismatch an older CLI (protocol 1, no version field) is answered with,
/// in the bare form it reads.
pub fn legacy_mismatch() -> Response {
    Response::Err {
        message: format!(
            "version mismatch: this xlb CLI speaks API protocol 1 (it predates protocol versions), the daemon \
             (xlb {XLB_VERSION}) speaks protocol {PROTOCOL_VERSION}; {MISMATCH_ADVICE}"
        ),
        ipvs: None,
        failed_request: None,
    }
}

/// What the daemon makes of one request line: the request, or the line to answer with
/// (a version mismatch, in a form the sender reads, or a malformed message).
pub fn decode_request(line: &str) -> Result<Request, String> {
    let answer = |r: Response| encode_response(&r);
    let value: serde_json::Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return Err(answer(Response::Err { message: format!("malformed API message: {e}"), ipvs: None, failed_request: None })),
    };
    let Some(version) = value.get("version") else {
        // Protocol 1: a bare request, and a bare response is all such a CLI reads.
        let mut text = serde_json::to_string(&legacy_mismatch()).expect("a response serializes");
        text.push('\n');
        return Err(text);
    };
    let their_xlb = value.get("xlb").and_then(|v| v.as_str()).unwrap_or("?").to_string();
    if version.as_u64() != Some(PROTOCOL_VERSION.into()) {
        let message = format!(
            "version mismatch: this xlb CLI ({their_xlb}) speaks API protocol {version}, the daemon (xlb {XLB_VERSION}) \
             speaks protocol {PROTOCOL_VERSION}; {MISMATCH_ADVICE}"
        );
        return Err(answer(Response::Err { message, ipvs: None, failed_request: None }));
    }
    match serde_json::from_value::<RequestEnvelope<Request>>(value) {
        Ok(env) => Ok(env.request),
        Err(e) => Err(answer(Response::Err { message: format!("malformed API request: {e}"), ipvs: None, failed_request: None })),
    }
}

/// A response line as the daemon sends it (with its newline).
pub fn encode_response(response: &Response) -> String {
    let env = ResponseEnvelope { version: PROTOCOL_VERSION, xlb: Some(XLB_VERSION.into()), response };
    let mut text = serde_json::to_string(&env).expect("a response serializes");
    text.push('\n');
    text
}

/// A request line as the CLI sends it (with its newline).
pub fn encode_request(request: &Request) -> String {
    let env = RequestEnvelope { version: PROTOCOL_VERSION, xlb: Some(XLB_VERSION.into()), request };
    let mut text = serde_json::to_string(&env).expect("a request serializes");
    text.push('\n');
    text
}

/// What the CLI makes of the daemon's response line.
pub fn decode_response(line: &str) -> Result<Reply, ApiError> {
    if line.is_empty() {
        return Err(ApiError::Malformed("the daemon closed the connection without a response".into()));
    }
    let value: serde_json::Value = serde_json::from_str(line).map_err(|e| ApiError::Malformed(e.to_string()))?;
    let Some(version) = value.get("version") else {
        // A daemon from before protocol versions: it refused the request it could not
        // read (no `op` in it), so nothing was done.
        return Err(ApiError::VersionMismatch { theirs: None, their_xlb: None });
    };
    let their_xlb = value.get("xlb").and_then(|v| v.as_str()).map(String::from);
    if version.as_u64() != Some(PROTOCOL_VERSION.into()) {
        let theirs = version.as_u64().map(|v| v as u32);
        return Err(ApiError::VersionMismatch { theirs, their_xlb });
    }
    let env: ResponseEnvelope<Response> = serde_json::from_value(value).map_err(|e| ApiError::Malformed(e.to_string()))?;
    match env.response {
        Response::Ok(reply) => Ok(reply),
        Response::Err { message, ipvs, failed_request } => Err(ApiError::Daemon { message, ipvs, failed_request }),
    }
}

/// Largest request or response accepted (a restore file of many thousand lines fits).
pub const MAX_MESSAGE: u64 = 64 << 20;

/// Sends one request to the daemon and returns its reply.
pub fn call(socket: &Path, request: &Request) -> Result<Reply, ApiError> {
    let mut stream = UnixStream::connect(socket).map_err(|source| ApiError::NoDaemon { socket: socket.to_owned(), source })?;
    // A restore may be long: generous, not infinite.
    stream.set_read_timeout(Some(Duration::from_secs(600)))?;
    stream.write_all(encode_request(request).as_bytes())?;
    stream.flush()?;
    let mut line = String::new();
    BufReader::new((&mut stream).take(MAX_MESSAGE)).read_line(&mut line)?;
    decode_response(&line)
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;

    use super::*;

    /// A daemon stand-in answering one connection with `answer` (given the request line).
    fn fake_daemon(answer: impl FnOnce(&str) -> String + Send + 'static) -> (tempdir::Dir, std::thread::JoinHandle<String>) {
        let dir = tempdir::Dir::new();
        let listener = UnixListener::bind(dir.0.join("s.sock")).unwrap();
        let t = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut line = String::new();
            BufReader::new(&mut s).read_line(&mut line).unwrap();
            s.write_all(answer(&line).as_bytes()).unwrap();
            line
        });
        (dir, t)
    }

    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Self {
                static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let p = std::env::temp_dir().join(format!("xlb-api-{}-{n}", std::process::id()));
                std::fs::create_dir_all(&p).unwrap();
                Self(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    /// What a daemon from before protocol versions answered to a line it could not
    /// read (read_message's "malformed API message" in a bare Response).
    fn old_daemon(line: &str) -> String {
        let err = serde_json::from_str::<Request>(line).expect_err("an old daemon cannot read a versioned request");
        let r = Response::Err { message: format!("malformed API message: {err}"), ipvs: None, failed_request: None };
        format!("{}\n", serde_json::to_string(&r).unwrap())
    }

    #[test]
    fn a_new_cli_and_an_old_daemon_give_a_version_mismatch() {
        let (dir, t) = fake_daemon(old_daemon);
        let err = call(&dir.0.join("s.sock"), &Request::Status).expect_err("refused");
        let text = err.to_string();
        assert!(matches!(err, ApiError::VersionMismatch { theirs: None, .. }), "{err:?}");
        assert!(text.starts_with("version mismatch:"), "{text}");
        assert!(text.contains(&format!("speaks API protocol {PROTOCOL_VERSION}")) && text.contains("protocol 1"), "{text}");
        assert!(text.contains("restart the daemon"), "{text}");
        let sent = t.join().unwrap();
        assert!(sent.contains(&format!(r#""version":{PROTOCOL_VERSION}"#)) && sent.contains(r#""op":"status""#), "{sent}");
    }

    #[test]
    fn a_cli_and_a_newer_daemon_give_a_version_mismatch() {
        let (dir, _t) = fake_daemon(|_| {
            r#"{"version":99,"xlb":"9.0.0","response":{"err":{"message":"whatever","ipvs":null}}}"#.to_string() + "\n"
        });
        let err = call(&dir.0.join("s.sock"), &Request::List).expect_err("refused");
        assert!(matches!(err, ApiError::VersionMismatch { theirs: Some(99), .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("(xlb 9.0.0) speaks protocol 99") && text.contains(&format!("protocol {PROTOCOL_VERSION}")), "{text}");
    }

    #[test]
    fn an_old_cli_gets_a_version_mismatch_it_can_read() {
        // What a CLI from before protocol versions sent.
        let line = serde_json::to_string(&Request::Status).unwrap();
        let answer = decode_request(&line).expect_err("refused");
        // ... and what it does with the answer: a bare Response.
        let Response::Err { message, .. } = serde_json::from_str::<Response>(&answer).expect("a bare response") else {
            panic!("not an error: {answer}")
        };
        assert!(message.starts_with("version mismatch:"), "{message}");
        assert!(message.contains("protocol 1") && message.contains(&format!("speaks protocol {PROTOCOL_VERSION}")), "{message}");
        // A newer CLI gets the mismatch in the versioned form.
        let newer = r#"{"version":99,"xlb":"9.0.0","request":{"op":"status","extra":1}}"#;
        let answer = decode_request(newer).expect_err("refused");
        let err = decode_response(&answer).expect_err("an error");
        assert!(err.to_string().contains("xlb CLI (9.0.0) speaks API protocol 99"), "{err}");
    }

    #[test]
    fn requests_and_responses_round_trip() {
        let req = decode_request(&encode_request(&Request::Zero { service: None })).expect("accepted");
        assert!(matches!(req, Request::Zero { service: None }), "{req:?}");
        let line = encode_response(&Response::Err { message: "m".into(), ipvs: Some("No such service".into()), failed_request: Some(3) });
        match decode_response(&line) {
            Err(ApiError::Daemon { message, ipvs, failed_request }) => {
                assert_eq!((message.as_str(), ipvs.as_deref(), failed_request), ("m", Some("No such service"), Some(3)))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(decode_response(&encode_response(&Response::Ok(Reply::Done))), Ok(Reply::Done)));
    }

    /// Found by the api_request fuzz target (CI, stop 21): a number of seconds with more
    /// digits than an f64 holds parsed to a neighbouring f64 on its way back, so the
    /// daemon would have read another value than the CLI sent. serde_json's
    /// float_roundtrip parses exactly. (The daemon then refuses such a timeout:
    /// HealthConfig::validate.)
    #[test]
    fn a_long_number_of_seconds_crosses_the_socket_unchanged() {
        let line = r#"{"version":3,"xlb":"0..0","request":{"op":"set_health","service":{"addr":{"proto":"tcp","vip":"2.168.1.200","port":809}},"health":{"type":"http","path":"/h","interval":0.0,"timeout":9999999999999999999999999999999999999999999999999999999999999999999999999999999990,"fall":2}}}"#;
        let request = decode_request(line).expect("a well-formed request");
        let again = decode_request(&encode_request(&request)).expect("its encoding decodes");
        assert_eq!(serde_json::to_value(&request).unwrap(), serde_json::to_value(&again).unwrap());
        let Request::SetHealth { health: Some(h), .. } = again else { panic!("{again:?}") };
        assert_eq!(h.timeout, 9999999999999999999999999999999999999999999999999999999999999999999999999999999990f64);
    }
}
