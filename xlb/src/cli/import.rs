//! `xlb import`: another tool's configuration as xlb's.
use std::path::PathBuf;

use clap::Subcommand;

#[derive(Subcommand)]
pub(crate) enum ImportCmd {
    /// xlb import keepalived /etc/keepalived/keepalived.conf > xlb.toml (notes on stderr)
    Keepalived { file: PathBuf },
}
