//! `xlb-testkit`: what the tests, the bench and the demo run beside `xlb`, kept out of
//! the product: test servers that name themselves, the XDP pass stub, the demo.
use std::{net::SocketAddr, process::ExitCode};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use xlb_core::{
    loader::{self, AttachMode},
    run,
};
use xlb_testkit::{TESTKIT, demo, httpd};

#[derive(Parser)]
#[command(name = TESTKIT, version, about = "xlb's test kit: test servers, the XDP pass stub, the demo")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build an LVS-DR cluster in network namespaces and show xlb balancing it; with
    /// --cluster, three directors behind an ECMP router, one killed and brought back.
    Demo {
        /// Send this many requests, print the counters and exit (default: until Ctrl-C).
        /// With --cluster: this many long-lived connections (default 300).
        #[arg(long)]
        requests: Option<u32>,
        /// Three xlb directors announcing the VIP by BGP (BIRD, BFD) to a router that
        /// spreads flows over them by ECMP; kills one and brings it back, showing the
        /// connections kept and the convergence times (needs bird2).
        #[arg(long)]
        cluster: bool,
        #[arg(long, value_enum, default_value = "auto")]
        mode: AttachMode,
        /// Number of real servers.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=50))]
        reals: u8,
    },
    /// HTTP server naming itself (the demo's real servers).
    HttpServe {
        #[arg(long)]
        name: String,
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Line echo server naming itself (long-lived connections in tests).
    EchoServe {
        #[arg(long)]
        name: String,
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Attach an XDP_PASS program in native mode (veth peers need one for XDP_TX).
    XdpPassStub {
        #[arg(long)]
        iface: String,
    },
}

fn main() -> ExitCode {
    match dispatch(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{TESTKIT}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Demo { requests, cluster: true, mode, .. } => {
            let xlb = xlb_testkit::binary("xlb").context("locating the xlb binary")?;
            demo::cluster_demo(&xlb, demo::ClusterDemoOptions { connections: requests.unwrap_or(300) as usize, mode })
        }
        Cmd::Demo { requests, mode, reals, .. } => {
            let xlb = xlb_testkit::binary("xlb").context("locating the xlb binary")?;
            demo::demo(&xlb, demo::DemoOptions { requests, mode, reals: reals as usize })
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
