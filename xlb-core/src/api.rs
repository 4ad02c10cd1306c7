//! The daemon's local API: one JSON request and one JSON response per connection on a
//! Unix socket that only root can open (directory 0700, socket 0600).
use std::{
    io::{BufRead, BufReader, Read, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};

use crate::{
    health::HealthConfig,
    ops::{ConnView, RealAddr, RealOptions, Refusal, Service, ServiceId, ServiceOptions, ServiceView},
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

/// The failure of one request of a [`Request::Batch`].
#[derive(Debug)]
pub struct BatchFailure {
    pub index: usize,
}

impl std::fmt::Display for BatchFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "request #{} of the batch failed; nothing was changed", self.index + 1)
    }
}

impl std::error::Error for BatchFailure {}

impl Response {
    pub fn from_result(r: Result<Reply>) -> Self {
        match r {
            Ok(reply) => Response::Ok(reply),
            Err(e) => Response::Err {
                message: format!("{e:#}"),
                ipvs: e
                    .downcast_ref::<Refusal>()
                    .or_else(|| e.chain().find_map(|c| c.downcast_ref::<Refusal>()))
                    .map(|r| r.ipvs.to_string()),
                // A context (as BatchFailure is) is found by anyhow's downcast, not in chain().
                failed_request: e.downcast_ref::<BatchFailure>().map(|b| b.index),
            },
        }
    }
}

/// An error the daemon answered with.
#[derive(Debug)]
pub struct DaemonError {
    pub message: String,
    pub ipvs: Option<String>,
    pub failed_request: Option<usize>,
}

impl std::fmt::Display for DaemonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DaemonError {}

/// Largest request or response accepted (a restore file of many thousand lines fits).
const MAX_MESSAGE: u64 = 64 << 20;

pub fn read_message<T: for<'de> Deserialize<'de>>(stream: &mut impl Read) -> Result<T> {
    let mut line = String::new();
    BufReader::new(stream.take(MAX_MESSAGE)).read_line(&mut line)?;
    if line.is_empty() {
        bail!("the other side closed the connection without a message");
    }
    serde_json::from_str(&line).context("malformed API message")
}

pub fn write_message(stream: &mut impl Write, msg: &impl Serialize) -> Result<()> {
    let mut text = serde_json::to_string(msg)?;
    text.push('\n');
    stream.write_all(text.as_bytes())?;
    stream.flush()?;
    Ok(())
}

/// Sends one request to the daemon and returns its reply.
pub fn call(socket: &Path, request: &Request) -> Result<Reply> {
    let mut stream = UnixStream::connect(socket).map_err(|e| {
        anyhow!(
            "no running xlb found ({}: {e}); start one with `xlb daemon --iface IFACE` (or `xlb run --iface IFACE`)",
            socket.display()
        )
    })?;
    // Adding reals may wait for ARP; restores may be long: generous, not infinite.
    stream.set_read_timeout(Some(Duration::from_secs(600)))?;
    write_message(&mut stream, request)?;
    match read_message::<Response>(&mut stream)? {
        Response::Ok(reply) => Ok(reply),
        Response::Err { message, ipvs, failed_request } => Err(DaemonError { message, ipvs, failed_request }.into()),
    }
}
