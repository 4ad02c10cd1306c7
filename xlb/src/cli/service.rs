//! `xlb service`: virtual services (ipvsadm -A / -E / -D), and the service argument other groups take.
use anyhow::Result;
use clap::{Args, Subcommand};
use xlb_core::ops::{self, Persistence, ServiceId, ServiceOptions};

/// A service: `tcp VIP:PORT`, `udp VIP:PORT` or `fwm MARK`.
#[derive(Args)]
pub(crate) struct ServiceArg {
    /// tcp, udp, or fwm (a firewall-mark service group).
    kind: String,
    /// VIP:PORT, or the mark for fwm.
    #[arg(value_name = "VIP:PORT|MARK")]
    address: String,
}

impl ServiceArg {
    pub(crate) fn id(&self) -> Result<ServiceId> {
        ServiceId::parse(&self.kind, &self.address)
    }
}

#[derive(Args)]
pub(crate) struct SchedArgs {
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
    pub(crate) fn options(&self) -> Result<ServiceOptions> {
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
pub(crate) enum ServiceCmd {
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
