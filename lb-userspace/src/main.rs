//! `xlb`: the controller of the xlb XDP load balancer.
use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use lb_userspace::{
    bench, config, demo, httpd,
    loader::{self, AttachMode},
    maps::DEFAULT_PIN_DIR,
    ops::{self, Proto, Scheduler, Service},
    run,
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
    /// Attach an XDP_PASS program in native mode (veth peers need one for XDP_TX).
    #[command(hide = true)]
    XdpPassStub {
        #[arg(long)]
        iface: String,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BenchSection {
    Fastpath,
    E2e,
    Scale,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
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
        Cmd::Bench { quick, sections, json, report, readme, vm_json, vm_accel, vm_accel_note } => {
            let xlb = std::env::current_exe().context("locating the xlb binary")?;
            let mut opts = bench::BenchOptions::all(quick);
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
                std::fs::write(&path, serde_json::to_string_pretty(&results)?).with_context(|| format!("writing {}", path.display()))?;
            }
            if let Some(dir) = report {
                let md = bench::write_report(&results, &dir, &bench::today(), readme.as_deref())?;
                println!("xlb bench: wrote {}", md.display());
            }
            Ok(())
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
