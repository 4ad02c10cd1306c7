//! `xlb real`: real servers (ipvsadm -a / -e / -d) and draining one.
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use xlb_core::{
    api::{self, Paths, Reply, Request},
    listing::Output,
    ops::{self, RealOptions, ServiceId},
};

use super::service::ServiceArg;

#[derive(Args)]
#[group(id = "forward", multiple = false)]
pub(crate) struct ForwardArgs {
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
    pub(crate) fn method(&self) -> ops::ForwardMethod {
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
pub(crate) struct RealArgs {
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
    pub(crate) fn options(&self) -> RealOptions {
        RealOptions {
            forward: self.forward.method(),
            weight: self.weight,
            u_threshold: self.u_threshold,
            l_threshold: self.l_threshold,
        }
    }
}

#[derive(Subcommand)]
pub(crate) enum RealCmd {
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

/// `xlb real drain`: weight 0 (no new connections), wait for the active connections to
/// end or the timeout, then remove the real; progress once a second.
pub(crate) fn drain(paths: &Paths, service: ServiceId, rip: ops::RealAddr, timeout: u64, output: Output) -> Result<()> {
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
