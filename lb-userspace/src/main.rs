//! `xlb`: the controller of the xlb XDP load balancer.
use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use anyhow::{Context, Result};
use clap::{Args, CommandFactory, Parser, Subcommand};
use lb_common::tcp;
use lb_userspace::{
    config, demo, httpd,
    loader::{self, AttachMode},
    maps::DEFAULT_PIN_DIR,
    ops::{self, Persistence, RealOptions, ServiceId, ServiceOptions},
    realserver, run,
};

#[derive(Parser)]
#[command(name = "xlb", version, about = "XDP layer-4 load balancer in the manner of LVS/IPVS")]
struct Cli {
    /// bpffs directory where `xlb run` pins its maps; other commands find them there.
    #[arg(long, global = true, default_value = DEFAULT_PIN_DIR, env = "XLB_PIN_DIR")]
    pin_dir: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Load and attach the balancer on a NIC and serve until Ctrl-C (then detach).
    Run {
        /// Interface to attach to (the NIC that receives traffic for the VIPs).
        #[arg(long, required = true)]
        iface: Vec<String>,
        /// XDP attach mode.
        #[arg(long, value_enum, default_value = "auto")]
        mode: AttachMode,
        /// TOML file of services and real servers to load at start.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Add, change or remove a virtual service (ipvsadm -A / -E / -D).
    #[command(subcommand)]
    Service(ServiceCmd),
    /// Add or remove VIP:port frontends of a firewall-mark service (a service group).
    #[command(subcommand)]
    Frontend(FrontendCmd),
    /// Add, change or remove a real server (ipvsadm -a / -e / -d); its MAC comes from the kernel.
    #[command(subcommand)]
    Real(RealCmd),
    /// List services and real servers (ipvsadm -L -n).
    List {
        /// Traffic counters instead of connection counts (ipvsadm --stats).
        #[arg(long)]
        stats: bool,
        #[arg(long)]
        json: bool,
    },
    /// List the connection table (ipvsadm -L -c -n).
    Conns {
        #[arg(long)]
        json: bool,
    },
    /// Show the fast path's verdict counters (why frames were passed, dropped or sent).
    Counters {
        #[arg(long)]
        json: bool,
    },
    /// Set timeouts (ipvsadm --set tcp tcpfin udp) and IPVS-style switches.
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
        /// Drop packets of flows whose real server was removed (IPVS's expire_nodest_conn).
        #[arg(long, value_parser = parse_switch)]
        expire_nodest_conn: Option<bool>,
        /// Let a TCP packet other than SYN open a connection (IPVS's sloppy_tcp).
        #[arg(long, value_parser = parse_switch)]
        sloppy_tcp: Option<bool>,
        /// Answer ICMP echo (ping) to the VIPs in the fast path (off: the kernel answers
        /// if it holds the VIP).
        #[arg(long, value_parser = parse_switch)]
        icmp_echo: Option<bool>,
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
    /// HTTP server naming itself (the demo's real servers).
    #[command(hide = true)]
    HttpServe {
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
}

/// Logs go to stderr, filtered by RUST_LOG (default: info).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::builder()
        .with_default_directive(tracing::level_filters::LevelFilter::INFO.into())
        .from_env_lossy();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
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

fn print_json(value: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn dispatch(cli: Cli) -> Result<()> {
    let pin_dir = cli.pin_dir;
    match cli.command {
        Cmd::Run { iface, mode, config } => {
            let config = config.as_deref().map(config::load).transpose()?;
            run::run(run::RunOptions { ifaces: iface, mode, config, pin_dir })
        }
        Cmd::Service(cmd) => {
            let (mut maps, _lock) = run::open(&pin_dir)?;
            match cmd {
                ServiceCmd::Add { service, sched } => ops::add_service(&mut maps, service.id()?, sched.options()?),
                ServiceCmd::Edit { service, sched } => ops::edit_service(&mut maps, service.id()?, sched.options()?),
                ServiceCmd::Del { service } => ops::remove_service(&mut maps, service.id()?),
            }
        }
        Cmd::Frontend(cmd) => {
            let (mut maps, _lock) = run::open(&pin_dir)?;
            match cmd {
                FrontendCmd::Add { mark, proto, address } => {
                    ops::add_frontends(&mut maps, mark, &ops::parse_frontends(proto, &address)?)
                }
                FrontendCmd::Del { mark, proto, address } => {
                    ops::remove_frontends(&mut maps, mark, &ops::parse_frontends(proto, &address)?)
                }
            }
        }
        Cmd::Real(cmd) => {
            let (mut maps, _lock) = run::open(&pin_dir)?;
            match cmd {
                RealCmd::Add { service, rip, opts } => {
                    run::add_real_resolving(&mut maps, service.id()?, rip, opts.options()).map(drop)
                }
                RealCmd::Edit { service, rip, opts } => ops::edit_real(&mut maps, service.id()?, rip, opts.options()),
                RealCmd::Del { service, rip } => ops::remove_real(&mut maps, service.id()?, rip),
            }
        }
        Cmd::List { stats, json } => {
            let (maps, _lock) = run::open(&pin_dir)?;
            let services = ops::snapshot(&maps)?;
            if json {
                print_json(&services)
            } else if stats {
                print!("{}", lb_userspace::listing::stats_table(&services));
                Ok(())
            } else {
                print!("{}", lb_userspace::listing::table(&services));
                Ok(())
            }
        }
        Cmd::Conns { json } => {
            let (maps, _lock) = run::open(&pin_dir)?;
            let conns = ops::connections(&maps)?;
            if json {
                print_json(&conns)
            } else {
                print!("{}", lb_userspace::listing::conns_table(&conns));
                Ok(())
            }
        }
        Cmd::Counters { json } => {
            let (maps, _lock) = run::open(&pin_dir)?;
            let counters = ops::counters(&maps)?;
            if json {
                let map: serde_json::Map<String, serde_json::Value> =
                    counters.iter().map(|(k, v)| (k.to_string(), (*v).into())).collect();
                print_json(&map)
            } else {
                for (name, value) in counters {
                    println!("{name:<24} {value}");
                }
                Ok(())
            }
        }
        Cmd::Set { tcp: tcp_timeout, tcpfin, udp, expire_nodest_conn, sloppy_tcp, icmp_echo } => {
            let (mut maps, _lock) = run::open(&pin_dir)?;
            let mut s = ops::settings(&maps)?;
            // ipvsadm --set: 0 leaves a value unchanged.
            if let Some(t) = tcp_timeout.filter(|&t| t > 0) {
                s.tcp_timeouts[tcp::ESTABLISHED as usize] = t;
            }
            if let Some(t) = tcpfin.filter(|&t| t > 0) {
                s.tcp_timeouts[tcp::FIN_WAIT as usize] = t;
            }
            if let Some(t) = udp.filter(|&t| t > 0) {
                s.udp_timeout = t;
            }
            if let Some(on) = expire_nodest_conn {
                s.expire_nodest_conn = on as u32;
            }
            if let Some(on) = sloppy_tcp {
                s.sloppy_tcp = on as u32;
            }
            if let Some(on) = icmp_echo {
                s.icmp_echo = on as u32;
            }
            ops::set_settings(&mut maps, s)
        }
        Cmd::Timeout => {
            let (maps, _lock) = run::open(&pin_dir)?;
            let s = ops::settings(&maps)?;
            println!(
                "Timeout (tcp tcpfin udp): {} {} {}",
                s.tcp_timeouts[tcp::ESTABLISHED as usize],
                s.tcp_timeouts[tcp::FIN_WAIT as usize],
                s.udp_timeout
            );
            Ok(())
        }
        Cmd::Demo { requests, mode, reals } => {
            let xlb = std::env::current_exe().context("locating the xlb binary")?;
            demo::demo(&xlb, demo::DemoOptions { requests, mode, reals: reals as usize })
        }
        Cmd::Realserver(cmd) => realserver::command(cmd),
        Cmd::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "xlb", &mut std::io::stdout());
            Ok(())
        }
        Cmd::Man { dir: None } => Ok(clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?),
        Cmd::Man { dir: Some(dir) } => {
            clap_mangen::generate_to(Cli::command(), &dir).with_context(|| format!("writing man pages to {}", dir.display()))
        }
        Cmd::HttpServe { name, listen } => httpd::serve(&name, listen),
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
