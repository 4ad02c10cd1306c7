//! `cargo xtask bench` in miniature (tiny counts), so it cannot rot: every section runs,
//! the report has the expected rows, and the counters prove every measured iteration
//! took the intended path. No timing is asserted.
use std::path::Path;

use xlb_bench::{
    self as bench,
    BenchOptions,
    fastpath::{self, KatranKind, PathKind},
    katran,
    report,
};
use xlb_testkit::fixtures;

// The product binary the bench's balancer runs, beside this test's directory (target/release).
fn xlb() -> std::path::PathBuf {
    xlb_testkit::binary("xlb").expect("the xlb binary (cargo xtask test builds it)")
}

#[test]
fn quick_bench_covers_every_case_and_proves_its_paths() {
    assert_eq!(unsafe { libc::geteuid() }, 0, "the bench loads XDP programs and creates namespaces: run it as root (cargo xtask test)");
    let mut opts = BenchOptions::all(true);
    // Katran's object where `cargo xtask bench` finds it (XLB_KATRAN_OBJ overrides it).
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let object = katran::object_path(katran::locate_object(&workspace)).unwrap_or_else(|| {
        panic!("Katran's object (shared/anchors/katran/balancer.bpf.o beside {} or above it, or ${}) is missing: the fast-path bench times it beside xlb", workspace.display(), katran::OBJECT_ENV)
    });
    assert!(object.is_file(), "Katran's object {} is missing: the fast-path bench times it beside xlb", object.display());
    opts.fastpath.as_mut().expect("section 1 in the options").katran = Some(object);
    let results = bench::run(&xlb(), &opts).expect("quick bench");

    let f = results.fastpath.as_ref().expect("section 1");
    for case in fixtures::dr_cases().iter().filter(|c| c.verdict == fixtures::XDP_PASS || c.verdict == fixtures::XDP_DROP) {
        assert!(f.rows.iter().any(|r| r.case == case.name), "fixture case `{}` not measured", case.name);
    }
    for row in &f.rows {
        assert!(row.proof.holds(), "{} ({}): {}", row.case, row.path.label(), row.proof.summary());
        let forwarded = matches!(row.path, PathKind::Established | PathKind::NewFlow);
        assert_eq!(row.x_katran.is_some(), forwarded, "{} ({}): × Katran exactly for forwarded paths", row.case, row.path.label());
        assert!(row.ns_per_packet.is_finite() && row.x_floor.is_finite(), "{}: figures computed", row.case);
    }
    // An established row proves its entry was ESTABLISHED (UDP: a known flow) and scheduled nothing.
    for row in f.rows.iter().filter(|r| r.path == PathKind::Established) {
        assert!(row.proof.entry_holds && row.proof.new_conns == 0 && row.proof.expected_new_conns == 0, "{}: {}", row.case, row.proof.summary());
    }
    for row in f.rows.iter().filter(|r| r.path == PathKind::NewFlow) {
        assert_eq!(row.proof.flows_in_table, Some(row.proof.iterations), "{}: every made-up flow in the table", row.case);
    }
    // Katran: both families, established (LRU hit) and new flow (SYN), proven by its own counters.
    assert_eq!(f.katran.rows.len(), 4);
    for ipv6 in [false, true] {
        for new_flow in [false, true] {
            let k = f.katran.rows.iter().find(|k| k.kind == KatranKind { ipv6, new_flow }).expect("Katran row");
            assert!(k.proof.holds(new_flow), "Katran {}: {}", k.case, k.proof.summary(new_flow));
            assert!(k.proof.iterations > 0 && k.ns_per_packet.is_finite());
        }
    }
    let covered = |requested: &str| f.coverage.iter().find(|c| c.requested == requested).and_then(|c| c.row).map(|i| &f.rows[i]);
    for c in &f.coverage {
        assert!(c.row.is_some(), "requested path `{}` not measured", c.requested);
    }
    assert_eq!(covered("DR, established flow").expect("DR established measured").path, PathKind::Established);
    for name in fastpath::SCHEDULERS {
        assert_eq!(covered(&format!("DR, new flow, scheduler {name}")).expect("scheduler measured").path, PathKind::NewFlow);
    }
    assert_eq!(covered("non-VIP frame, passed").expect("non-VIP measured").path, PathKind::Passed);
    for want in ["NAT, reply, established flow", "NAT, inbound, new flow", "TUN, established flow", "DR, 802.1Q-tagged, established flow"] {
        assert!(covered(want).is_some(), "{want} measured");
    }
    assert!(f.method_check_drop_ns.is_finite(), "the method check ran");
    assert_eq!(f.growth.rows.len(), 4, "xlb and Katran, few and many live flows");
    for r in &f.growth.rows {
        assert!(r.proof_holds, "{} with {} flows: {}", r.balancer, r.flows, r.proof);
    }
    assert!(f.growth.xlb_growth.is_finite() && f.growth.katran_growth.is_finite());
    // The diagnostics' cost: without their code, off, trace on matching nothing; each run
    // proven to take the established DR path.
    assert_eq!(f.diagnostics.rows.len(), fastpath::DIAGNOSTICS_VARIANTS.len());
    for r in &f.diagnostics.rows {
        assert!(r.proof.holds() && r.proof.entry_holds && r.proof.iterations > 0, "{}: {}", r.variant, r.proof.summary());
        assert!(r.ns_per_packet.is_finite() && r.x_without.is_finite(), "{}: figures computed", r.variant);
    }
    assert_eq!(f.targets.len(), 5);
    assert!(f.targets[..4].iter().all(|t| t.measured.is_some()), "the first four targets are ratios of this run");

    // The JSON: `fastpath` is the array of rows with the ratios.
    let json: serde_json::Value = serde_json::from_str(&bench::to_json(&results).unwrap()).unwrap();
    let rows = json["fastpath"].as_array().expect("fastpath array");
    assert_eq!(rows.len(), f.rows.len());
    for key in ["case", "path", "ns_per_packet", "x_floor", "x_katran"] {
        assert!(rows.iter().all(|r| r.get(key).is_some()), "every fastpath row has `{key}`");
    }
    assert_eq!(json["fastpath_summary"]["katran"]["rows"].as_array().map(Vec::len), Some(4));

    let e = results.e2e.as_ref().expect("section 2");
    let targets: Vec<&str> = e.rows.iter().map(|r| r.target.as_str()).collect();
    for want in ["direct", "xlb DR, native", "xlb DR, skb", "nftables DNAT", "HAProxy"] {
        assert!(targets.iter().any(|t| t.starts_with(want)), "no `{want}` row in {targets:?}");
    }
    for row in e.rows.iter().filter(|r| r.target.starts_with("xlb")) {
        let per_real: Vec<u64> = row.evidence.rsplit(": ").next().unwrap().split(" / ").map(|n| n.parse().unwrap()).collect();
        assert!(per_real.len() == 2 && per_real.iter().all(|&n| n > 0), "{}: {}", row.target, row.evidence);
    }
    assert!(e.rows.iter().any(|r| r.target.starts_with("IPVS")) || e.notes.iter().any(|n| n.contains("IPVS")), "IPVS measured or explained");

    let s = results.scale.as_ref().expect("section 4");
    for flows in &s.flows {
        assert!(flows.proof.holds(), "{} live flows: {}", flows.flows, flows.proof.summary());
        assert_eq!(flows.flows_in_table, flows.flows as u64);
    }
    assert!(s.add_real.is_some() && !s.load.is_empty() && s.map_memory.iter().any(|(m, b)| m == "CONNS" && *b > 0));

    let md = report::markdown(&results, "2000-01-01", "2000-01-01.svg");
    for heading in ["## 1. Fast path", "### Targets", "### Katran", "## 2. End to end", "## 3. Kernel IPVS", "## 4. Scale", "Requested cases"] {
        assert!(md.contains(heading), "report lacks `{heading}`");
    }
    for row in &f.rows {
        assert!(md.contains(&format!("| {} | {} |", row.case, row.path.label())), "report lacks row {}", row.case);
    }
    let fast_path_section = &md[md.find("## 1. Fast path").unwrap()..md.find("## 2. End to end").unwrap()];
    assert!(!fast_path_section.contains("not implemented"), "every requested path exists and is measured");
    for k in &f.katran.rows {
        assert!(md.contains(&format!("| {} | ", k.case)), "report lacks Katran's row {}", k.case);
    }
    for t in &f.targets {
        assert!(md.contains(&format!("| {} | {} |", t.target, t.verdict())), "report lacks target {}", t.target);
    }
    assert!(report::svg(&results).starts_with("<svg"));
}
