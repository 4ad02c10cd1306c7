//! `xlb frontend`: VIP:port frontends of a firewall-mark service.
use clap::Subcommand;
use xlb_core::ops;

#[derive(Subcommand)]
pub(crate) enum FrontendCmd {
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
