//! `xlbadm`: `xlb ipvsadm` under a name of its own, for scripts that call ipvsadm.
use std::path::PathBuf;

use xlb_core::{api::Paths, ipvsadm, listing::Output, maps::DEFAULT_PIN_DIR};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let pin_dir = std::env::var_os("XLB_PIN_DIR").map_or_else(|| PathBuf::from(DEFAULT_PIN_DIR), PathBuf::from);
    std::process::exit(ipvsadm::main(&args, &Paths::for_pin_dir(&pin_dir), Output::Text));
}
