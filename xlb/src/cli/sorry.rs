//! `xlb sorry`: a service's sorry server.
use clap::Subcommand;

use super::service::ServiceArg;

#[derive(Subcommand)]
pub(crate) enum SorryCmd {
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
