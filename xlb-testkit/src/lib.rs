//! xlb's test kit, apart from the product: fast-path fixtures for BPF_PROG_TEST_RUN
//! ([`fixtures`]), LVS clusters in network namespaces ([`testbed`]), the test HTTP and
//! echo servers ([`httpd`]) and the demo ([`demo`]). The `xlb-testkit` binary runs the
//! servers, the XDP pass stub and the demo; the test beds spawn it ([`binary`]).
use std::path::PathBuf;

use anyhow::{Result, bail};

pub mod cluster;
pub mod demo;
pub mod fixtures;
pub mod httpd;
pub mod testbed;

/// The test kit's binary: test servers, the XDP pass stub, the demo.
pub const TESTKIT: &str = "xlb-testkit";

/// A binary of this workspace by name (`xlb`, `xlb-testkit`, `xlb-bench`): beside the
/// running executable (target/release/xlb-bench, or /usr/local/bin in the bench's VM), or
/// one directory up (a test executable runs from target/release/deps/).
///
/// Errors: the binary is in neither place (not built: `cargo xtask test` and
/// `cargo xtask build` build every binary; else `cargo build --release --bins`).
pub fn binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dirs: Vec<PathBuf> = exe.ancestors().skip(1).take(2).map(PathBuf::from).collect();
    if let Some(found) = dirs.iter().map(|d| d.join(name)).find(|p| p.is_file()) {
        return Ok(found);
    }
    bail!(
        "the `{name}` binary is not beside {} nor one directory up: build it with `cargo build --release --bins` \
         (cargo xtask build and cargo xtask test do)",
        exe.display()
    )
}
