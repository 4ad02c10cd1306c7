//! `xlb`: the controller of the xlb XDP load balancer. `xlb daemon` (or `xlb run` in
//! the foreground) owns the fast path; every other command talks to it over its API.
mod cli;

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use anyhow::{Context, Result};
use clap::{Args, CommandFactory, Parser, Subcommand};
use xlb_core::{
    api::{self, Paths, Reply, Request, SettingsChange},
    daemon, ipvsadm, keepalived,
    listing::{self, Output},
    loader::{self, AttachMode},
    observe, offline, ops,
    maps::DEFAULT_PIN_DIR,
    realserver, sizes, top, web,
};

use cli::{
    daemon::changes_text,
    frontend::FrontendCmd,
    health::HealthCmd,
    import::ImportCmd,
    list::show_counters,
    real::{RealCmd, drain},
    service::ServiceCmd,
    show,
    sorry::SorryCmd,
};

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
    /// The fast path's own log records (aya-log), forwarded to this process's log:
    /// warn shows drops, info also unusual passes and each new connection, debug every
    /// frame. Fixed at load time; off costs nothing.
    #[arg(long, value_enum, value_name = "LEVEL", default_value = "off")]
    fastpath_log: loader::LogLevel,
    /// Connection-table entries (CONNS, NAT_REPLIES and the half-open tables get this
    /// size each). Sizes apply to tables created at this start: a restart adopting
    /// pinned tables keeps their sizes (and says so).
    #[arg(long, value_name = "N", default_value_t = sizes::MAX_CONNS)]
    max_conns: u32,
    /// Service ids (virtual services and fwmark groups).
    #[arg(long, value_name = "N", default_value_t = sizes::MAX_SERVICES)]
    max_services: u32,
    /// Real-server ids over all services.
    #[arg(long, value_name = "N", default_value_t = sizes::MAX_REALS)]
    max_reals: u32,
    /// Announce by BGP through BIRD 2: write `route VIP/32 blackhole;` (IPv6: /128), one
    /// line per VIP with quorum, sorted, to FILE (a BIRD include file; empty: nothing
    /// announced) and have BIRD re-read its configuration after each change. Overrides
    /// the config file's `[bgp] bird_vips`.
    #[arg(long, value_name = "FILE")]
    bird_vips: Option<PathBuf>,
    /// Write the IPv6 VIPs' routes to FILE instead of --bird-vips (a BIRD static
    /// protocol takes one address family).
    #[arg(long, value_name = "FILE")]
    bird_vips6: Option<PathBuf>,
    /// BIRD's control socket, asked to `configure` after each change [default:
    /// /run/bird/bird.ctl, or the config file's `[bgp] bird_socket`].
    #[arg(long, value_name = "PATH")]
    bird_socket: Option<PathBuf>,
    /// Reals taking new connections (weight above 0, not failed, not removed) one of a
    /// VIP's services needs for the VIP to be announced [default: 1, or the config
    /// file's `[bgp] quorum`].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    bgp_quorum: Option<u32>,
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
    /// Print the fast path's decision for every frame (time, client, service, real,
    /// verdict and reason, connection state), one line each, until Ctrl-C. Works on a
    /// running daemon or the pins `xlb run` left; needs no reload.
    Trace {
        /// Only frames of this client (its flows' packets and their NAT replies).
        #[arg(long, value_name = "ADDR")]
        client: Option<std::net::IpAddr>,
        /// Only frames to this service (VIP:PORT, TCP or UDP; IPv6 as [VIP]:PORT).
        #[arg(long, value_name = "VIP:PORT")]
        service: Option<SocketAddr>,
        /// Switch the events off and exit (after a trace was killed and left them on).
        #[arg(long, conflicts_with_all = ["client", "service"])]
        off: bool,
    },
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

/// Logs go to stderr, filtered by RUST_LOG (default: info). The daemon's `xlb: …`
/// lines for its operator (target `xlb_console`) go to stdout as they are.
fn init_logging() {
    use tracing_subscriber::{Layer, filter::filter_fn, layer::SubscriberExt, util::SubscriberInitExt};
    // netlink-packet-route warns of every attribute a newer kernel made longer than it
    // knows (IFLA_INET6_CONF, …) on each interface listed: noise, not the operator's.
    let filter = tracing_subscriber::EnvFilter::builder()
        .with_default_directive(tracing::level_filters::LevelFilter::INFO.into())
        .from_env_lossy()
        .add_directive("netlink_packet_route=error".parse().expect("a valid directive"))
        // The fast path's records: --fastpath-log chooses their level.
        .add_directive("fastpath=trace".parse().expect("a valid directive"));
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

fn daemon_options(args: DaemonArgs, paths: Paths, detach_on_exit: bool) -> Result<daemon::DaemonOptions> {
    let web = web::WebOptions { metrics: args.metrics_listen, status: args.status_listen, public: args.listen_public };
    let keepalived = args.keepalived_conf.is_some();
    let config = args.config.or(args.keepalived_conf);
    let sizes = sizes::TableSizes { max_conns: args.max_conns, max_services: args.max_services, max_reals: args.max_reals };
    sizes.check()?;
    Ok(daemon::DaemonOptions {
        ifaces: args.iface,
        mode: args.mode,
        config,
        keepalived,
        paths,
        detach_on_exit,
        web,
        fastpath_log: args.fastpath_log,
        sizes,
        bgp: xlb_core::config::BgpSection {
            bird_vips: args.bird_vips,
            bird_vips6: args.bird_vips6,
            bird_socket: args.bird_socket,
            quorum: args.bgp_quorum,
        },
    })
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
        Cmd::Run(args) => daemon::run(daemon_options(args, paths, true)?),
        Cmd::Daemon(args) => daemon::run(daemon_options(args, paths, false)?),
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
        Cmd::Trace { off: true, .. } => xlb_core::trace::off(&paths.pin_dir),
        Cmd::Trace { client, service, off: false } => {
            let filter = xlb_core::trace::Filter { client, service };
            xlb_core::trace::run(&paths.pin_dir, &filter, output == Output::Json)
        }
        Cmd::Status => match call(Request::Status)? {
            Reply::Status(s) => show(output, &s, |s| {
                format!(
                    "pid {}\ninterfaces {}\npin dir {}\nstate file {}\nconfig file {}\nservices {}\nconnections {}\nhalf-open connections {}\ntables (entries, estimated kernel memory):\n{}\n",
                    s.pid,
                    s.interfaces.join(", "),
                    s.pin_dir.display(),
                    s.state_file.display(),
                    s.config_file.as_ref().map_or("-".into(), |p| p.display().to_string()),
                    s.services,
                    s.connections,
                    s.half_open_connections,
                    sizes::report_lines(&s.tables).join("\n")
                ) + &s.bgp.as_ref().map_or("bgp not configured\n".into(), |b| b.text())
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
        Cmd::Realserver(cmd) => realserver::command(cmd, output),
        Cmd::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "xlb", &mut std::io::stdout());
            Ok(())
        }
        Cmd::Man { dir: None } => Ok(clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?),
        Cmd::Man { dir: Some(dir) } => {
            clap_mangen::generate_to(Cli::command(), &dir).with_context(|| format!("writing man pages to {}", dir.display()))
        }
    }
}

fn unexpected(reply: Reply) -> Result<()> {
    anyhow::bail!("the daemon answered with an unexpected reply: {reply:?}")
}
