//! `xlb health`: a service's health check (keepalived's checkers).
use clap::{Args, Subcommand};
use xlb_core::health::{self, HealthConfig};

use super::service::ServiceArg;

#[derive(Subcommand)]
pub(crate) enum HealthCmd {
    /// xlb health set tcp 10.0.0.100:80 --type http --path /health --interval 2 --fall 3
    Set {
        #[command(flatten)]
        service: ServiceArg,
        #[command(flatten)]
        check: HealthArgs,
    },
    /// xlb health del tcp 10.0.0.100:80
    Del {
        #[command(flatten)]
        service: ServiceArg,
    },
}

#[derive(Args)]
pub(crate) struct HealthArgs {
    /// tcp, http, https, udp or exec.
    #[arg(long = "type", id = "check_type", value_enum)]
    check_type: health::CheckKind,
    /// Port to check (default: the real's).
    #[arg(long)]
    port: Option<u16>,
    /// Address to check (default: the real's).
    #[arg(long)]
    address: Option<std::net::IpAddr>,
    /// http/https: path to GET (default /).
    #[arg(long)]
    path: Option<String>,
    /// http/https: expected status (default 200).
    #[arg(long)]
    status: Option<u16>,
    /// http/https: the body must contain this.
    #[arg(long)]
    contains: Option<String>,
    /// http/https: MD5 of the body, hex (keepalived's digest).
    #[arg(long)]
    md5: Option<String>,
    /// udp: the request datagram.
    #[arg(long)]
    send: Option<String>,
    /// udp: the answer must start with this.
    #[arg(long)]
    expect: Option<String>,
    /// exec: shell command (XLB_REAL, XLB_PORT, XLB_SERVICE set); exit 0 is healthy.
    #[arg(long)]
    command: Option<String>,
    /// exec: exit status 2..255 sets the weight to status-2 (MISC_CHECK misc_dynamic).
    #[arg(long)]
    dynamic: bool,
    /// Seconds between checks.
    #[arg(long, default_value_t = 5.0)]
    interval: f64,
    /// Seconds a check may take.
    #[arg(long, default_value_t = 3.0)]
    timeout: f64,
    /// Successes that bring a down real up.
    #[arg(long, default_value_t = 1)]
    rise: u32,
    /// Failures that take an up real down.
    #[arg(long, default_value_t = 1)]
    fall: u32,
    /// Up to this many seconds of random delay before the first check.
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
    /// Reals start down until they pass `rise` checks.
    #[arg(long)]
    alpha: bool,
    /// A failed real keeps weight 0 instead of leaving the service (inhibit_on_failure).
    #[arg(long)]
    inhibit: bool,
    /// Fewer healthy reals than this: the sorry server takes new connections.
    #[arg(long, default_value_t = 1)]
    quorum: u32,
    /// Command run when a real comes up (XLB_SERVICE, XLB_REAL, XLB_STATE set).
    #[arg(long)]
    notify_up: Option<String>,
    /// Command run when a real goes down.
    #[arg(long)]
    notify_down: Option<String>,
}

impl HealthArgs {
    pub(crate) fn config(self) -> HealthConfig {
        HealthConfig {
            port: self.port,
            address: self.address,
            path: self.path,
            status: self.status,
            contains: self.contains,
            md5: self.md5,
            send: self.send,
            expect: self.expect,
            command: self.command,
            dynamic: self.dynamic,
            interval: self.interval,
            timeout: self.timeout,
            rise: self.rise,
            fall: self.fall,
            warmup: self.warmup,
            alpha: self.alpha,
            on_failure: if self.inhibit { health::OnFailure::Inhibit } else { health::OnFailure::Remove },
            quorum: self.quorum,
            notify_up: self.notify_up,
            notify_down: self.notify_down,
            ..HealthConfig::new(self.check_type)
        }
    }
}
