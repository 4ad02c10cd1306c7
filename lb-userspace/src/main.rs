//! `xlb`: the controller of the xlb XDP load balancer.
use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser, Subcommand};
use lb_userspace::{
    config, demo, httpd,
    loader::{self, AttachMode},
    maps::DEFAULT_PIN_DIR,
    ops::{self, Proto, Scheduler, Service},
    realserver, run,
};

#[derive(Parser)]
#[command(name = "xlb", version, about = "XDP layer-4 load balancer (LVS-style DR round robin)")]
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
    /// Add or remove a virtual service.
    #[command(subcommand)]
    Service(ServiceCmd),
    /// Add or remove a real server of a service (its MAC comes from the kernel).
    #[command(subcommand)]
    Real(RealCmd),
    /// List services and real servers with their counters.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show the fast path's verdict counters (why frames were passed, dropped or sent).
    Counters {
        #[arg(long)]
        json: bool,
    },
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

#[derive(Subcommand)]
enum ServiceCmd {
    /// xlb service add tcp 10.0.0.100:80 [--scheduler rr]
    Add {
        proto: Proto,
        #[arg(value_name = "VIP:PORT")]
        vip_port: String,
        #[arg(long, short = 's', default_value = "rr")]
        scheduler: Scheduler,
    },
    /// xlb service del tcp 10.0.0.100:80
    Del {
        proto: Proto,
        #[arg(value_name = "VIP:PORT")]
        vip_port: String,
    },
}

#[derive(Subcommand)]
enum RealCmd {
    /// xlb real add tcp 10.0.0.100:80 10.0.0.11
    Add {
        proto: Proto,
        #[arg(value_name = "VIP:PORT")]
        vip_port: String,
        rip: std::net::Ipv4Addr,
    },
    /// xlb real del tcp 10.0.0.100:80 10.0.0.11
    Del {
        proto: Proto,
        #[arg(value_name = "VIP:PORT")]
        vip_port: String,
        rip: std::net::Ipv4Addr,
    },
}

fn service(proto: Proto, vip_port: &str) -> Result<Service> {
    let (vip, port) = ops::parse_vip_port(vip_port)?;
    Ok(Service { proto, vip, port })
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

fn dispatch(cli: Cli) -> Result<()> {
    let pin_dir = cli.pin_dir;
    match cli.command {
        Cmd::Run { iface, mode, config } => {
            let config = config.as_deref().map(config::load).transpose()?;
            run::run(run::RunOptions { ifaces: iface, mode, config, pin_dir })
        }
        Cmd::Service(ServiceCmd::Add { proto, vip_port, scheduler }) => {
            let svc = service(proto, &vip_port)?;
            let (mut maps, _lock) = run::open(&pin_dir)?;
            ops::add_service(&mut maps, svc, scheduler)
        }
        Cmd::Service(ServiceCmd::Del { proto, vip_port }) => {
            let svc = service(proto, &vip_port)?;
            let (mut maps, _lock) = run::open(&pin_dir)?;
            ops::remove_service(&mut maps, svc)
        }
        Cmd::Real(RealCmd::Add { proto, vip_port, rip }) => {
            let svc = service(proto, &vip_port)?;
            let (mut maps, _lock) = run::open(&pin_dir)?;
            run::add_real_resolving(&mut maps, svc, rip).map(drop)
        }
        Cmd::Real(RealCmd::Del { proto, vip_port, rip }) => {
            let svc = service(proto, &vip_port)?;
            let (mut maps, _lock) = run::open(&pin_dir)?;
            ops::remove_real(&mut maps, svc, rip)
        }
        Cmd::List { json } => {
            let (maps, _lock) = run::open(&pin_dir)?;
            let services = ops::snapshot(&maps)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&services)?);
            } else {
                print!("{}", lb_userspace::listing::table(&services));
            }
            Ok(())
        }
        Cmd::Counters { json } => {
            let (maps, _lock) = run::open(&pin_dir)?;
            let counters = ops::counters(&maps)?;
            if json {
                let map: serde_json::Map<String, serde_json::Value> =
                    counters.iter().map(|(k, v)| (k.to_string(), (*v).into())).collect();
                println!("{}", serde_json::to_string_pretty(&map)?);
            } else {
                for (name, value) in counters {
                    println!("{name:<24} {value}");
                }
            }
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
            let mut ebpf = loader::load(loader::PASS_PROGRAM)?;
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
