//! Builds the XDP object (lb-ebpf) for bpfel-unknown-none with the nightly toolchain
//! and bpf-linker; `cargo xtask` installs both when missing.
use std::{env, fs, path::PathBuf};

fn main() -> anyhow::Result<()> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    if env::var_os("AYA_BUILD_SKIP").is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
        // `cargo check` and IDEs: an empty object keeps include_bytes! compiling.
        fs::write(out_dir.join("lb-ebpf"), [])?;
        return Ok(());
    }
    // aya-build passes every line the nested cargo prints on stderr on as a cargo
    // warning: without this, a fresh build shows ~40 "warning: … Compiling …" lines.
    // Its errors and the compiler's warnings still come through (as JSON messages).
    // SAFETY: the build script is single-threaded here; nothing reads the environment
    // concurrently.
    unsafe { env::set_var("CARGO_TERM_QUIET", "true") };
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../lb-ebpf");
    let root = root.to_str().ok_or_else(|| anyhow::anyhow!("non-UTF-8 path"))?;
    aya_build::build_ebpf(
        [aya_build::Package { name: "lb-ebpf", root_dir: root, ..Default::default() }],
        aya_build::Toolchain::default(),
    )
}
