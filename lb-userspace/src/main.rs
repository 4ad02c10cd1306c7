//! `xlb`: the controller of the xlb XDP load balancer. `xlb daemon` (or `xlb run` in
//! the foreground) owns the fast path; every other command talks to it over its API.
use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use anyhow::{Context, Result};
use clap::{Args, CommandFactory, Parser, Subcommand};
use lb_userspace::{
    api::{self, Paths, Reply, Request, SettingsChange},
    bench, daemon, demo, httpd, ipvsadm, keepalived,
    listing::{self, Output},
    loader::{self, AttachMode},
    observe, offline,
    maps::DEFAULT_PIN_DIR,
    health::{self, HealthConfig},
    ops::{self, Persistence, RealOptions, ServiceId, ServiceOptions},
    realserver, run, top, web,
};
use serde::Serialize;

#[derive(Parser)]
#[command(name = "xlb", version, about = "XDP layer-4 load balancer in the manner of LVS/IPVS")]
// pub(crate): tests/cli_docs.rs includes this file to check README's commands against it.
pub(crate) struct Cli {
    /// bpffs directory of the instance's pinned maps and links; its name also names the
    /// API socket (/run/xlb/NAME.sock) and the saved state (/var/lib/xlb/NAME.toml).
    #[arg(long, global = true, default_value = DEFAULT_PIN_DIR, env = "XLB_PIN_DIR")]
    pin_dir: PathBuf,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    output: Output,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Args)]
struct DaemonArgs {
    /// Interface to attach to (repeat for several NICs).
    #[arg(long, required = true)]
    iface: Vec<String>,
    /// XDP attach mode.
    #[arg(long, value_enum, default_value = "auto")]
    mode: AttachMode,
    /// TOML config: the state at first start, and what SIGHUP / `xlb reload` re-applies.
    #[arg(long)]
    config: Option<PathBuf>,
    /// A keepalived.conf instead of --config: its virtual_servers, reals and checkers
    /// (as `xlb import keepalived` reads them), re-read on SIGHUP / `xlb reload`.
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    keepalived_conf: Option<PathBuf>,
    /// Serve Prometheus metrics on http://ADDR/metrics (e.g. 127.0.0.1:9810; off by default).
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Serve the status page on http://ADDR/ (e.g. 127.0.0.1:9811; may equal --metrics-listen).
    #[arg(long, value_name = "ADDR")]
    status_listen: Option<SocketAddr>,
    /// Allow non-loopback addresses for --metrics-listen and --status-listen (they have
    /// no authentication).
    #[arg(long)]
    listen_public: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon in the foreground; Ctrl-C detaches and removes the pins.
    Run(DaemonArgs),
    /// Run the daemon; SIGTERM leaves the fast path running for the next start
    /// (connections kept); `xlb stop` detaches.
    Daemon(DaemonArgs),
    /// Detach the fast path, remove its pins and stop the daemon; with no daemon running
    /// (after SIGTERM or kill -9), detach and unpin from the pins alone.
    Stop,
    /// Make the whole configuration be FILE (only the differences are applied).
    Apply {
        #[arg(required_unless_present = "keepalived_conf")]
        file: Option<PathBuf>,
        /// Apply a keepalived.conf (as `xlb import keepalived` reads it) instead.
        #[arg(long, value_name = "FILE", conflicts_with = "file")]
        keepalived_conf: Option<PathBuf>,
    },
    /// Print another tool's configuration as xlb's config (TOML, as `xlb apply` takes it).
    #[command(subcommand)]
    Import(ImportCmd),
    /// Re-apply the daemon's --config file (as SIGHUP does).
    Reload,
    /// The daemon's interfaces, files and counts; with no daemon running, what its pins
    /// still hold (exits non-zero).
    Status,
    /// ipvsadm's command line, unchanged (`xlbadm` is the same).
    #[command(disable_help_flag = true, allow_hyphen_values = true)]
    Ipvsadm {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        args: Vec<String>,
    },
    /// Add, change or remove a virtual service (ipvsadm -A / -E / -D).
    #[command(subcommand)]
    Service(ServiceCmd),
    /// Set or remove a service's health check (keepalived's checkers, built in).
    #[command(subcommand)]
    Health(HealthCmd),
    /// Set or remove a service's sorry server (takes new connections when too few reals are healthy).
    #[command(subcommand)]
    Sorry(SorryCmd),
    /// Add or remove VIP:port frontends of a firewall-mark service (a service group).
    #[command(subcommand)]
    Frontend(FrontendCmd),
    /// Add, change or remove a real server (ipvsadm -a / -e / -d); its MAC comes from the kernel.
    #[command(subcommand)]
    Real(RealCmd),
    /// List services and real servers (ipvsadm -L -n).
    List {
        /// Traffic counters (ipvsadm --stats).
        #[arg(long, conflicts_with = "rate")]
        stats: bool,
        /// Rates over the last 2 s (ipvsadm --rate).
        #[arg(long)]
        rate: bool,
    },
    /// A live view of services and real servers: rates, health, traffic sparklines (q quits).
    Top {
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 1.0, value_parser = parse_interval)]
        interval: f64,
    },
    /// List the connection table (ipvsadm -L -c -n).
    Conns,
    /// Show the fast path's verdict counters (why frames were passed, dropped or sent);
    /// with no daemon running, read from the pins.
    Counters,
    /// Zero the traffic counters (ipvsadm -Z).
    Zero,
    /// Set timeouts (ipvsadm --set tcp tcpfin udp) and IPVS-style switches; with no
    /// option, show them.
    Set {
        /// ESTABLISHED idle timeout, seconds.
        #[arg(long)]
        tcp: Option<u32>,
        /// FIN_WAIT idle timeout, seconds.
        #[arg(long)]
        tcpfin: Option<u32>,
        /// UDP idle timeout, seconds.
        #[arg(long)]
        udp: Option<u32>,
        /// Drop packets of flows whose real server was removed or failed its check, and
        /// schedule afresh a SYN on a flow whose real has weight 0 or is gone (IPVS's
        /// expire_nodest_conn).
        #[arg(long, value_parser = parse_switch)]
        expire_nodest_conn: Option<bool>,
        /// Let a TCP packet other than SYN open a connection (IPVS's sloppy_tcp).
        #[arg(long, value_parser = parse_switch)]
        sloppy_tcp: Option<bool>,
        /// End persistence templates of reals set to weight 0, so their clients are
        /// scheduled afresh (IPVS's expire_quiescent_template; off by default, as IPVS).
        #[arg(long, value_parser = parse_switch)]
        expire_quiescent_template: Option<bool>,
        /// Answer ICMP echo (ping) to the VIPs in the fast path (off: the kernel answers
        /// if it holds the VIP).
        #[arg(long, value_parser = parse_switch)]
        icmp_echo: Option<bool>,
        /// IPVS's conn_reuse_mode, 0 to 3 (default 1): with bit 1, a SYN reusing the
        /// ports of a connection in TIME_WAIT or CLOSE is scheduled afresh; bit 2 adds
        /// FIN_WAIT for DR and TUN (ipvs-sysctl.txt).
        #[arg(long, value_parser = clap::value_parser!(u32).range(0..=3))]
        conn_reuse_mode: Option<u32>,
    },
    /// Show the timeouts (ipvsadm -L --timeout).
    Timeout,
    /// Build an LVS-DR cluster in network namespaces and show xlb balancing it.
    Demo {
        /// Send this many requests, print the counters and exit (default: until Ctrl-C).
        #[arg(long)]
        requests: Option<u32>,
        #[arg(long, value_enum, default_value = "auto")]
        mode: AttachMode,
        /// Number of real servers.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=50))]
        reals: u8,
    },
    /// Prepare this host as a real server: VIPs on lo, ARP for them suppressed.
    #[command(subcommand)]
    Realserver(realserver::RealserverCmd),
    /// Print a shell completion script for xlb.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print xlb's man page (roff), or write it and one page per subcommand to a directory.
    Man {
        /// Write xlb.1, xlb-realserver.1, … here instead (e.g. /usr/local/share/man/man1).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// The benchmarks behind `cargo xtask bench`.
    #[command(hide = true)]
    Bench {
        /// Tiny counts (a smoke run; figures not meaningful).
        #[arg(long)]
        quick: bool,
        /// Sections to run (default: all).
        #[arg(long, value_enum, value_delimiter = ',')]
        sections: Vec<BenchSection>,
        /// Write the results as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Write <date>.md and its <date>.svg chart in this directory.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Replace the benchmark table in this README (with --report).
        #[arg(long, requires = "report")]
        readme: Option<PathBuf>,
        /// Katran's balancer.bpf.o, timed beside xlb in the fast-path section
        /// (XLB_KATRAN_OBJ overrides it).
        #[arg(long, value_name = "FILE")]
        katran_obj: Option<PathBuf>,
        /// Section 3: the JSON a run inside the IPVS VM wrote.
        #[arg(long, requires_all = ["vm_accel", "vm_accel_note"])]
        vm_json: Option<PathBuf>,
        /// How the VM ran: KVM or TCG.
        #[arg(long)]
        vm_accel: Option<String>,
        /// Why it ran so.
        #[arg(long)]
        vm_accel_note: Option<String>,
    },
    /// HTTP server naming itself (the demo's real servers).
    #[command(hide = true)]
    HttpServe {
        #[arg(long)]
        name: String,
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Line echo server naming itself (long-lived connections in tests).
    #[command(hide = true)]
    EchoServe {
        #[arg(long)]
        name: String,
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Attach an XDP_PASS program in native mode (veth peers need one for XDP_TX).
    #[command(hide = true)]
    XdpPassStub {
        #[arg(long)]
        iface: String,
    },
}

fn parse_interval(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.1..=3600.0).contains(&v) => Ok(v),
        _ => Err(format!("`{s}` is not a number of seconds from 0.1 to 3600")),
    }
}

fn parse_switch(s: &str) -> Result<bool, String> {
    match s {
        "on" | "1" | "true" | "yes" => Ok(true),
        "off" | "0" | "false" | "no" => Ok(false),
        _ => Err(format!("`{s}` is not on or off")),
    }
}

/// A service: `tcp VIP:PORT`, `udp VIP:PORT` or `fwm MARK`.
#[derive(Args)]
struct ServiceArg {
    /// tcp, udp, or fwm (a firewall-mark service group).
    kind: String,
    /// VIP:PORT, or the mark for fwm.
    #[arg(value_name = "VIP:PORT|MARK")]
    address: String,
}

impl ServiceArg {
    fn id(&self) -> Result<ServiceId> {
        ServiceId::parse(&self.kind, &self.address)
    }
}

#[derive(Args)]
struct SchedArgs {
    /// Scheduler: rr, wrr, sh, dh, lc, wlc, sed, nq, mh, fo, ovf.
    #[arg(long, short = 's', default_value = "wlc")]
    scheduler: ops::Scheduler,
    /// Scheduler flags: sh-port, sh-fallback, mh-port, mh-fallback (comma-separated).
    #[arg(long, short = 'b', default_value = "")]
    sched_flags: String,
    /// Persistent service, optionally with the timeout in seconds (default 300).
    #[arg(long, short = 'p', num_args = 0..=1, default_missing_value = "300", value_name = "TIMEOUT")]
    persistent: Option<u32>,
    /// Persistence granularity: clients in one network share a real (an IPv4 netmask;
    /// for IPv6 a prefix length or an IPv6 netmask).
    #[arg(long, short = 'M', requires = "persistent", value_parser = ops::parse_netmask)]
    netmask: Option<std::net::IpAddr>,
    /// One-packet scheduling (UDP).
    #[arg(long, short = 'o')]
    ops: bool,
}

impl SchedArgs {
    fn options(&self) -> Result<ServiceOptions> {
        Ok(ServiceOptions {
            scheduler: self.scheduler,
            sched_flags: ops::parse_sched_flags(&self.sched_flags)?,
            persistence: self.persistent.map(|timeout| Persistence {
                timeout,
                netmask: self.netmask.unwrap_or(ops::ONE_CLIENT),
            }),
            one_packet: self.ops,
        })
    }
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BenchSection {
    Fastpath,
    E2e,
    Scale,
}

#[derive(Subcommand)]
enum ImportCmd {
    /// xlb import keepalived /etc/keepalived/keepalived.conf > xlb.toml (notes on stderr)
    Keepalived { file: PathBuf },
}

#[derive(Subcommand)]
enum ServiceCmd {
    /// xlb service add tcp 10.0.0.100:80 -s wrr [-p 600 -M 255.255.255.0]
    Add {
        #[command(flatten)]
        service: ServiceArg,
        #[command(flatten)]
        sched: SchedArgs,
    },
    /// Replace a service's options: xlb service edit tcp 10.0.0.100:80 -s rr
    Edit {
        #[command(flatten)]
        service: ServiceArg,
        #[command(flatten)]
        sched: SchedArgs,
    },
    /// xlb service del tcp 10.0.0.100:80
    Del {
        #[command(flatten)]
        service: ServiceArg,
    },
}

#[derive(Subcommand)]
enum HealthCmd {
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
struct HealthArgs {
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
    fn config(self) -> HealthConfig {
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

#[derive(Subcommand)]
enum SorryCmd {
    /// xlb sorry set tcp 10.0.0.100:80 10.0.0.250
    Set {
        #[command(flatten)]
        service: ServiceArg,
        #[arg(value_name = "SORRY_SERVER")]
        sorry: std::net::IpAddr,
    },
    /// xlb sorry del tcp 10.0.0.100:80
    Del {
        #[command(flatten)]
        service: ServiceArg,
    },
}

#[derive(Subcommand)]
enum FrontendCmd {
    /// xlb frontend add 1 tcp 10.0.0.100:443   (or a range: 10.0.0.100:8000-8010)
    Add {
        mark: u32,
        proto: ops::Proto,
        #[arg(value_name = "VIP:PORT[-LAST]")]
        address: String,
    },
    /// xlb frontend del 1 tcp 10.0.0.100:443
    Del {
        mark: u32,
        proto: ops::Proto,
        #[arg(value_name = "VIP:PORT[-LAST]")]
        address: String,
    },
}

#[derive(Args)]
#[group(id = "forward", multiple = false)]
struct ForwardArgs {
    /// Direct routing (LVS-DR, the default): the frame is re-addressed to the real's MAC.
    #[arg(long, short = 'g')]
    gatewaying: bool,
    /// NAT (LVS-NAT): the destination becomes RIP:PORT; the real's replies, routed
    /// through this director, get the VIP back.
    #[arg(long, short = 'm')]
    masquerading: bool,
    /// IPIP tunnel (LVS-TUN): the packet goes to the real inside an IPv4 header.
    #[arg(long, short = 'i')]
    ipip: bool,
}

impl ForwardArgs {
    fn method(&self) -> ops::ForwardMethod {
        if self.masquerading {
            ops::ForwardMethod::Masq
        } else if self.ipip {
            ops::ForwardMethod::Tunnel
        } else {
            ops::ForwardMethod::Route
        }
    }
}

#[derive(Args)]
struct RealArgs {
    #[command(flatten)]
    forward: ForwardArgs,
    /// Weight 0..65535; 0 is quiescent (no new connections).
    #[arg(long, short = 'w', default_value_t = 1)]
    weight: u32,
    /// Upper connection threshold (0: none).
    #[arg(long, short = 'x', default_value_t = 0)]
    u_threshold: u32,
    /// Lower connection threshold.
    #[arg(long, short = 'y', default_value_t = 0)]
    l_threshold: u32,
}

impl RealArgs {
    fn options(&self) -> RealOptions {
        RealOptions {
            forward: self.forward.method(),
            weight: self.weight,
            u_threshold: self.u_threshold,
            l_threshold: self.l_threshold,
        }
    }
}

#[derive(Subcommand)]
enum RealCmd {
    /// xlb real add tcp 10.0.0.100:80 10.0.0.11 [-w 3]   (NAT with port mapping: 10.0.0.11:8080 -m)
    Add {
        #[command(flatten)]
        service: ServiceArg,
        /// RIP, or RIP:PORT (a port other than the service's only with -m).
        #[arg(value_name = "RIP[:PORT]")]
        rip: ops::RealAddr,
        #[command(flatten)]
        opts: RealArgs,
    },
    /// xlb real edit tcp 10.0.0.100:80 10.0.0.11 -w 0
    Edit {
        #[command(flatten)]
        service: ServiceArg,
        #[arg(value_name = "RIP[:PORT]")]
        rip: ops::RealAddr,
        #[command(flatten)]
        opts: RealArgs,
    },
    /// xlb real del tcp 10.0.0.100:80 10.0.0.11
    Del {
        #[command(flatten)]
        service: ServiceArg,
        #[arg(value_name = "RIP[:PORT]")]
        rip: ops::RealAddr,
    },
    /// Weight 0, wait until the real's active connections end (or the timeout), remove it.
    Drain {
        #[command(flatten)]
        service: ServiceArg,
        rip: ops::RealAddr,
        /// Seconds to wait for active connections to end.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
}

/// Logs go to stderr, filtered by RUST_LOG (default: info). The daemon's `xlb: …`
/// lines for its operator (target `xlb_console`) go to stdout as they are.
fn init_logging() {
    use tracing_subscriber::{Layer, filter::filter_fn, layer::SubscriberExt, util::SubscriberInitExt};
    // netlink-packet-route warns of every attribute a newer kernel made longer than it
    // knows (IFLA_INET6_CONF, …) on each interface listed: noise, not the operator's.
    let filter = tracing_subscriber::EnvFilter::builder()
        .with_default_directive(tracing::level_filters::LevelFilter::INFO.into())
        .from_env_lossy()
        .add_directive("netlink_packet_route=error".parse().expect("a valid directive"));
    let log = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .with_filter(filter)
        .with_filter(filter_fn(|m| m.target() != "xlb_console"));
    let console = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stdout)
        .with_ansi(false)
        .without_time()
        .with_level(false)
        .with_target(false)
        .with_filter(filter_fn(|m| m.target() == "xlb_console"));
    tracing_subscriber::registry().with(log).with(console).init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xlb: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prints a reply as JSON, or as text with `text`.
fn show<T: Serialize>(output: Output, value: &T, text: impl FnOnce(&T) -> String) -> Result<()> {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Output::Text => print!("{}", text(value)),
    }
    Ok(())
}

fn daemon_options(args: DaemonArgs, paths: Paths, detach_on_exit: bool) -> daemon::DaemonOptions {
    let web = web::WebOptions { metrics: args.metrics_listen, status: args.status_listen, public: args.listen_public };
    let keepalived = args.keepalived_conf.is_some();
    let config = args.config.or(args.keepalived_conf);
    daemon::DaemonOptions { ifaces: args.iface, mode: args.mode, config, keepalived, paths, detach_on_exit, web }
}

fn dispatch(cli: Cli) -> Result<()> {
    let paths = Paths::for_pin_dir(&cli.pin_dir);
    let output = cli.output;
    let call = |req: Request| api::call(&paths.socket, &req);
    // Commands that only change things print nothing in text, {"ok": true} in JSON.
    let done = |reply: Reply| match (output, reply) {
        (Output::Json, Reply::Changes(c)) => show(output, &c, |_| String::new()),
        (Output::Json, _) => show(output, &serde_json::json!({ "ok": true }), |_| String::new()),
        (Output::Text, Reply::Changes(c)) => {
            println!("{}", changes_text(&c));
            Ok(())
        }
        (Output::Text, _) => Ok(()),
    };
    if let Cmd::Status = cli.command
        && let Some(reason) = offline::daemon_absent(&paths.socket)
    {
        // With no daemon, what its pins still hold.
        let status = offline::status(&paths, reason)?;
        show(output, &status, offline::PinnedStatus::text)?;
        anyhow::bail!("no xlb daemon runs for {}", paths.pin_dir.display());
    }
    match cli.command {
        Cmd::Run(args) => daemon::run(daemon_options(args, paths, true)),
        Cmd::Daemon(args) => daemon::run(daemon_options(args, paths, false)),
        // With no daemon (SIGTERM, kill -9), from the pins alone.
        Cmd::Stop => match offline::daemon_absent(&paths.socket) {
            Some(reason) => {
                let stopped = offline::stop(&paths, reason)?;
                show(output, &stopped, offline::Stopped::text)
            }
            None => done(call(Request::Stop)?),
        },
        Cmd::Apply { file: Some(file), .. } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            done(call(Request::Apply { config: text, origin: file.display().to_string() })?)
        }
        Cmd::Apply { file: None, keepalived_conf } => {
            let file = keepalived_conf.context("give FILE or --keepalived-conf FILE")?;
            let import = keepalived::load(&file)?;
            for w in &import.warnings {
                eprintln!("xlb: {w}");
            }
            done(call(Request::Apply { config: import.toml(), origin: file.display().to_string() })?)
        }
        Cmd::Import(ImportCmd::Keepalived { file }) => {
            let import = keepalived::load(&file)?;
            for w in &import.warnings {
                eprintln!("xlb: {w}");
            }
            print!("{}", import.toml());
            Ok(())
        }
        Cmd::Reload => done(call(Request::Reload)?),
        Cmd::Status => match call(Request::Status)? {
            Reply::Status(s) => show(output, &s, |s| {
                format!(
                    "pid {}\ninterfaces {}\npin dir {}\nstate file {}\nconfig file {}\nservices {}\nconnections {}\n",
                    s.pid,
                    s.interfaces.join(", "),
                    s.pin_dir.display(),
                    s.state_file.display(),
                    s.config_file.as_ref().map_or("-".into(), |p| p.display().to_string()),
                    s.services,
                    s.connections
                )
            }),
            other => unexpected(other),
        },
        Cmd::Ipvsadm { args } => {
            let code = ipvsadm::main(&args, &paths, output);
            if code != 0 {
                std::process::exit(code);
            }
            Ok(())
        }
        Cmd::Service(cmd) => done(call(match cmd {
            ServiceCmd::Add { service, sched } => Request::AddService { service: service.id()?, options: sched.options()? },
            ServiceCmd::Edit { service, sched } => Request::EditService { service: service.id()?, options: sched.options()? },
            ServiceCmd::Del { service } => Request::DelService { service: service.id()? },
        })?),
        Cmd::Frontend(cmd) => done(call(match cmd {
            FrontendCmd::Add { mark, proto, address } => {
                Request::AddFrontends { mark, frontends: ops::parse_frontends(proto, &address)? }
            }
            FrontendCmd::Del { mark, proto, address } => {
                Request::DelFrontends { mark, frontends: ops::parse_frontends(proto, &address)? }
            }
        })?),
        Cmd::Health(cmd) => done(call(match cmd {
            HealthCmd::Set { service, check } => Request::SetHealth { service: service.id()?, health: Some(check.config()) },
            HealthCmd::Del { service } => Request::SetHealth { service: service.id()?, health: None },
        })?),
        Cmd::Sorry(cmd) => done(call(match cmd {
            SorryCmd::Set { service, sorry } => Request::SetSorry { service: service.id()?, address: Some(sorry) },
            SorryCmd::Del { service } => Request::SetSorry { service: service.id()?, address: None },
        })?),
        Cmd::Real(RealCmd::Drain { service, rip, timeout }) => drain(&paths, service.id()?, rip, timeout, output),
        Cmd::Real(cmd) => done(call(match cmd {
            RealCmd::Add { service, rip, opts } => Request::AddReal { service: service.id()?, address: rip, options: opts.options() },
            RealCmd::Edit { service, rip, opts } => Request::EditReal { service: service.id()?, address: rip, options: opts.options() },
            RealCmd::Del { service, rip } => Request::DelReal { service: service.id()?, address: rip },
            RealCmd::Drain { .. } => unreachable!("handled above"),
        })?),
        Cmd::List { stats, rate } => match call(Request::List)? {
            Reply::Services(mut services) => {
                // A real without a check shows what the metrics, the status page and
                // `xlb top` show: up once its next hop's MAC is known, else unknown.
                for r in services.iter_mut().flat_map(|s| s.reals.iter_mut()).filter(|r| r.health == "-") {
                    r.health = observe::real_health(r).name().to_string();
                }
                show(output, &services, |s| {
                    let format = if stats {
                        listing::Format::Stats
                    } else if rate {
                        listing::Format::Rate
                    } else {
                        listing::Format::Plain
                    };
                    listing::table_with_health(s, format, false)
                })
            }
            other => unexpected(other),
        },
        Cmd::Top { interval } => top::run(&paths.socket, std::time::Duration::from_secs_f64(interval)),
        Cmd::Conns => match call(Request::Conns)? {
            Reply::Conns(conns) => show(output, &conns, |c| listing::conns_table(c)),
            other => unexpected(other),
        },
        Cmd::Counters => {
            // The fast path counts on without its daemon: then read the pinned counters.
            let pinned = match offline::daemon_absent(&paths.socket) {
                Some(why) => offline::counters(&paths)?.map(|counters| (why, counters)),
                None => None,
            };
            match pinned {
                Some((why, counters)) => {
                    eprintln!("xlb: no daemon runs ({why}); counters read from the pins in {}", paths.pin_dir.display());
                    show_counters(output, counters.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
                }
                None => match call(Request::Counters)? {
                    Reply::Counters(counters) => show_counters(output, counters),
                    other => unexpected(other),
                },
            }
        }
        Cmd::Zero => done(call(Request::Zero { service: None })?),
        Cmd::Set {
            tcp: None,
            tcpfin: None,
            udp: None,
            expire_nodest_conn: None,
            sloppy_tcp: None,
            expire_quiescent_template: None,
            icmp_echo: None,
            conn_reuse_mode: None,
        } => {
            // Nothing to change: show what is set.
            match call(Request::Settings)? {
                Reply::Settings(s) => show(output, &s, |s| {
                    let on = |b: bool| if b { "on" } else { "off" };
                    format!(
                        "Timeout (tcp tcpfin udp): {} {} {}\nexpire-nodest-conn {}\nsloppy-tcp {}\nexpire-quiescent-template {}\nicmp-echo {}\nconn-reuse-mode {}\n",
                        s.tcp,
                        s.tcpfin,
                        s.udp,
                        on(s.expire_nodest_conn),
                        on(s.sloppy_tcp),
                        on(s.expire_quiescent_template),
                        on(s.icmp_echo),
                        s.conn_reuse_mode
                    )
                }),
                other => unexpected(other),
            }
        }
        Cmd::Set { tcp, tcpfin, udp, expire_nodest_conn, sloppy_tcp, expire_quiescent_template, icmp_echo, conn_reuse_mode } => {
            let change = SettingsChange { tcp, tcpfin, udp, expire_nodest_conn, sloppy_tcp, expire_quiescent_template, icmp_echo, conn_reuse_mode };
            done(call(Request::SetSettings { change })?)
        }
        Cmd::Timeout => match call(Request::Settings)? {
            Reply::Settings(s) => show(output, &s, |s| format!("Timeout (tcp tcpfin udp): {} {} {}\n", s.tcp, s.tcpfin, s.udp)),
            other => unexpected(other),
        },
        Cmd::Demo { requests, mode, reals } => {
            let xlb = std::env::current_exe().context("locating the xlb binary")?;
            demo::demo(&xlb, demo::DemoOptions { requests, mode, reals: reals as usize })
        }
        Cmd::Realserver(cmd) => realserver::command(cmd, output),
        Cmd::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "xlb", &mut std::io::stdout());
            Ok(())
        }
        Cmd::Man { dir: None } => Ok(clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?),
        Cmd::Man { dir: Some(dir) } => {
            clap_mangen::generate_to(Cli::command(), &dir).with_context(|| format!("writing man pages to {}", dir.display()))
        }
        Cmd::Bench { quick, sections, json, report, readme, katran_obj, vm_json, vm_accel, vm_accel_note } => {
            let xlb = std::env::current_exe().context("locating the xlb binary")?;
            let mut opts = bench::BenchOptions::all(quick);
            if let Some(f) = opts.fastpath.as_mut() {
                f.katran = bench::katran::object_path(katran_obj);
            }
            let wanted = |s: BenchSection| sections.is_empty() || sections.contains(&s);
            opts.fastpath = opts.fastpath.filter(|_| wanted(BenchSection::Fastpath));
            opts.e2e = opts.e2e.filter(|_| wanted(BenchSection::E2e));
            opts.scale = opts.scale.filter(|_| wanted(BenchSection::Scale));
            let mut results = bench::run(&xlb, &opts)?;
            if let (Some(path), Some(accel), Some(accel_note)) = (vm_json, vm_accel, vm_accel_note) {
                let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
                let vm: bench::Results = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
                let e2e = vm.e2e.with_context(|| format!("{} holds no end-to-end results", path.display()))?;
                results.ipvs_vm = Some(bench::VmResults { accel, accel_note, kernel: vm.machine.kernel, e2e });
            }
            if let Some(path) = json {
                std::fs::write(&path, bench::to_json(&results)?).with_context(|| format!("writing {}", path.display()))?;
            }
            if let Some(dir) = report {
                let md = bench::write_report(&results, &dir, &bench::today(), readme.as_deref())?;
                println!("xlb bench: wrote {}", md.display());
            }
            Ok(())
        }
        Cmd::HttpServe { name, listen } => httpd::serve(&name, listen),
        Cmd::EchoServe { name, listen } => httpd::serve_echo(&name, listen),
        Cmd::XdpPassStub { iface } => {
            run::install_stop_handler();
            let mut ebpf = loader::load()?;
            loader::attach(&mut ebpf, loader::PASS_PROGRAM, &iface, AttachMode::Native)?;
            println!("ready: XDP_PASS stub on {iface}");
            use std::io::Write;
            std::io::stdout().flush()?;
            while !run::stop_requested() {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Ok(())
        }
    }
}

/// `xlb real drain`: weight 0 (no new connections), wait for the active connections to
/// end or the timeout, then remove the real; progress once a second.
fn drain(paths: &Paths, service: ServiceId, rip: ops::RealAddr, timeout: u64, output: Output) -> Result<()> {
    let call = |req: Request| api::call(&paths.socket, &req);
    let find = || -> Result<ops::RealView> {
        match call(Request::List)? {
            Reply::Services(list) => list
                .into_iter()
                .find(|s| s.id == service)
                .and_then(|s| s.reals.into_iter().find(|r| r.address == rip.ip && rip.port.is_none_or(|p| p == r.port)))
                .with_context(|| format!("No such destination: {rip} in {service}")),
            other => anyhow::bail!("unexpected reply {other:?}"),
        }
    };
    let r = find()?;
    let opts = RealOptions { forward: r.forward, weight: 0, u_threshold: r.u_threshold, l_threshold: r.l_threshold };
    call(Request::EditReal { service, address: rip, options: opts })?;
    let start = std::time::Instant::now();
    let drained = loop {
        let r = find()?;
        if output == Output::Text {
            println!("draining {rip} of {service}: {} active, {} inactive connection(s), {} s", r.active_conns, r.inactive_conns, start.elapsed().as_secs());
        }
        if r.active_conns == 0 {
            break true;
        }
        if start.elapsed().as_secs() >= timeout {
            break false;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    };
    call(Request::DelReal { service, address: rip })?;
    let waited = start.elapsed().as_secs();
    match output {
        Output::Json => println!("{}", serde_json::json!({ "drained": drained, "seconds": waited })),
        Output::Text if drained => println!("drained {rip} of {service} in {waited} s; removed"),
        Output::Text => println!("timeout after {waited} s with active connections left; removed {rip} of {service} anyway"),
    }
    Ok(())
}

/// `xlb counters`: one line per counter, or a JSON object.
fn show_counters(output: Output, counters: Vec<(String, u64)>) -> Result<()> {
    let map: serde_json::Map<String, serde_json::Value> = counters.iter().map(|(k, v)| (k.clone(), (*v).into())).collect();
    show(output, &map, |_| counters.iter().map(|(k, v)| format!("{k:<24} {v}\n")).collect())
}

/// What `apply`/`reload` changed, in words: "services added 1, reals changed 2".
fn changes_text(changes: &lb_userspace::reconcile::Changes) -> String {
    let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(changes) else { return format!("{changes:?}") };
    let said: Vec<String> = fields
        .iter()
        .filter_map(|(name, value)| match value {
            serde_json::Value::Bool(true) => Some(name.replace('_', " ")),
            serde_json::Value::Number(n) if n.as_u64() != Some(0) => Some(format!("{} {n}", name.replace('_', " "))),
            _ => None,
        })
        .collect();
    if said.is_empty() { "no changes".into() } else { format!("applied: {}", said.join(", ")) }
}

fn unexpected(reply: Reply) -> Result<()> {
    anyhow::bail!("the daemon answered with an unexpected reply: {reply:?}")
}
