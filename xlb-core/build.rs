//! Builds the XDP object (lb-ebpf) for bpfel-unknown-none with the nightly toolchain
//! and bpf-linker; `cargo xtask` installs both when missing.
use std::{env, fs, path::PathBuf, process::Command};

fn main() -> anyhow::Result<()> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    build_info()?;
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    if env::var_os("AYA_BUILD_SKIP").is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
        // `cargo check` and IDEs: an empty object keeps include_bytes! compiling.
        fs::write(out_dir.join("lb-ebpf"), [])?;
        fs::write(out_dir.join("lb-ebpf-nodiag"), [])?;
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
    // First without the diagnostics (aya-log, `xlb trace`'s hook): the bench times this
    // object beside the real one to show that their "off" costs nothing. Both builds
    // write OUT_DIR/lb-ebpf, so this one is moved aside before the real one is built.
    aya_build::build_ebpf(
        [aya_build::Package { name: "lb-ebpf", root_dir: root, no_default_features: true, ..Default::default() }],
        aya_build::Toolchain::default(),
    )?;
    fs::rename(out_dir.join("lb-ebpf"), out_dir.join("lb-ebpf-nodiag"))?;
    aya_build::build_ebpf(
        [aya_build::Package { name: "lb-ebpf", root_dir: root, ..Default::default() }],
        aya_build::Toolchain::default(),
    )
}

/// `xlb_build_info`'s labels, as compile-time variables: XLB_GIT_COMMIT (the checked-out
/// commit, empty outside a git checkout) and XLB_AYA_VERSION (from Cargo.lock).
fn build_info() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(&manifest_dir)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_string())
    };
    let commit = git(&["rev-parse", "HEAD"]).unwrap_or_default();
    println!("cargo:rustc-env=XLB_GIT_COMMIT={commit}");
    // A new commit or checkout moves HEAD or the branch's ref: the commit is read again.
    if !commit.is_empty() {
        let branch = git(&["symbolic-ref", "-q", "HEAD"]);
        for path in ["HEAD", "packed-refs"].into_iter().chain(branch.as_deref()) {
            // Only files that exist: cargo reruns the script every time for a missing one.
            if let Some(p) = git(&["rev-parse", "--path-format=absolute", "--git-path", path]).filter(|p| fs::exists(p).unwrap_or(false)) {
                println!("cargo:rerun-if-changed={p}");
            }
        }
    }
    let lock = manifest_dir.join("../Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock.display());
    let text = fs::read_to_string(&lock)?;
    let aya = text
        .split("[[package]]")
        .find(|p| p.lines().any(|l| l.trim() == r#"name = "aya""#))
        .and_then(|p| p.lines().find_map(|l| l.trim().strip_prefix("version = ")))
        .map(|v| v.trim_matches('"').to_string())
        .ok_or_else(|| anyhow::anyhow!("no aya package in {}", lock.display()))?;
    println!("cargo:rustc-env=XLB_AYA_VERSION={aya}");
    Ok(())
}
