//! The product apart from the test kit and the bench (issue 13, point 5): `xlb` offers no
//! bench, test-server, stub or demo command, its binary does not contain them, and the
//! `xlb` package does not depend on xlb-testkit or xlb-bench (dev-dependencies aside).
use std::{collections::HashMap, process::Command};

const XLB: &str = env!("CARGO_BIN_EXE_xlb");
/// The commands that moved to xlb-testkit and xlb-bench.
const NOT_IN_PRODUCT: &[&str] = &["bench", "demo", "http-serve", "echo-serve", "xdp-pass-stub"];

#[test]
fn xlb_offers_no_bench_test_server_stub_or_demo_command() {
    let help = Command::new(XLB).arg("--help").output().unwrap();
    assert!(help.status.success(), "{}", String::from_utf8_lossy(&help.stderr));
    let help = String::from_utf8_lossy(&help.stdout);
    // The command list: one indented "  NAME  description" line per subcommand.
    let commands: Vec<&str> = help
        .split("Commands:")
        .nth(1)
        .and_then(|rest| rest.split("Options:").next())
        .expect("a Commands: section in xlb --help")
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(commands.contains(&"service") && commands.contains(&"real"), "the command list was read: {commands:?}");
    for name in NOT_IN_PRODUCT {
        assert!(!commands.contains(name), "xlb --help lists `{name}`: {help}");
        let out = Command::new(XLB).arg(name).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "`xlb {name}` is not refused as a usage error: {}", String::from_utf8_lossy(&out.stderr));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("unrecognized subcommand"), "`xlb {name}`: {stderr}");
    }
    // Nor does the binary carry them hidden: clap keeps every command's name as a string.
    let binary = std::fs::read(XLB).unwrap();
    for name in ["http-serve", "echo-serve", "xdp-pass-stub"] {
        assert!(!binary.windows(name.len()).any(|w| w == name.as_bytes()), "{XLB} contains `{name}`");
    }
}

#[test]
fn the_xlb_package_depends_on_neither_the_test_kit_nor_the_bench() {
    // The graph for this host only: offline, cargo has no other platform's packages
    // (a fresh machine's registry holds what the build downloaded, no Windows crates).
    let version = Command::new(env!("CARGO")).arg("-vV").output().unwrap();
    let version = String::from_utf8_lossy(&version.stdout);
    let host = version.lines().find_map(|l| l.strip_prefix("host: ")).expect("`cargo -vV` names the host");
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--offline", "--filter-platform", host])
        .args(["--manifest-path", concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")])
        .output()
        .unwrap();
    assert!(out.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let name_of: HashMap<&str, &str> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    // Package id -> ids of its normal (not dev, not build) dependencies, as resolved.
    let normal: HashMap<&str, Vec<&str>> = meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|node| {
            let deps = node["deps"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["dep_kinds"].as_array().unwrap().iter().any(|k| k["kind"].is_null()))
                .map(|d| d["pkg"].as_str().unwrap())
                .collect();
            (node["id"].as_str().unwrap(), deps)
        })
        .collect();
    let xlb = name_of.iter().find(|(_, name)| **name == "xlb").map(|(id, _)| *id).expect("the xlb package");
    // Everything the product links, however indirectly.
    let (mut seen, mut todo) = (vec![xlb], vec![xlb]);
    while let Some(id) = todo.pop() {
        for dep in &normal[id] {
            if !seen.contains(dep) {
                seen.push(dep);
                todo.push(dep);
            }
        }
    }
    let names: Vec<&str> = seen.iter().map(|id| name_of[id]).collect();
    assert!(names.contains(&"xlb-core"), "the walk found xlb's dependencies: {names:?}");
    for kit in ["xlb-testkit", "xlb-bench"] {
        assert!(!names.contains(&kit), "the xlb binary links {kit}: {names:?}");
    }
}
