//! `cargo xtask bench` in miniature (tiny counts), so it cannot rot: every section runs,
//! the report has the expected rows, and the counters prove every measured iteration
//! took the intended path. No timing is asserted.
use std::path::Path;

use lb_userspace::{
    bench::{self, BenchOptions, fastpath::PathKind, report},
    fixtures,
};

const XLB: &str = env!("CARGO_BIN_EXE_xlb");

#[test]
fn quick_bench_covers_every_case_and_proves_its_paths() {
    assert_eq!(unsafe { libc::geteuid() }, 0, "the bench loads XDP programs and creates namespaces: run it as root (cargo xtask test)");
    let results = bench::run(Path::new(XLB), &BenchOptions::all(true)).expect("quick bench");

    let f = results.fastpath.as_ref().expect("section 1");
    for case in fixtures::all_cases() {
        assert!(f.rows.iter().any(|r| r.case == case.name), "fixture case `{}` not measured", case.name);
    }
    for row in &f.rows {
        assert!(row.proof.holds(), "{} ({}): {}", row.case, row.path.label(), row.proof.summary());
    }
    let covered = |requested: &str| f.coverage.iter().find(|c| c.requested == requested).and_then(|c| c.row).map(|i| &f.rows[i]);
    assert_eq!(covered("DR, established flow").expect("DR established measured").path, PathKind::Established);
    assert_eq!(covered("DR, new flow, scheduler rr").expect("rr new flow measured").path, PathKind::NewFlow);
    assert_eq!(covered("non-VIP frame, passed").expect("non-VIP measured").path, PathKind::Passed);

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
    for heading in ["## 1. Fast path", "## 2. End to end", "## 3. Kernel IPVS", "## 4. Scale", "Requested cases"] {
        assert!(md.contains(heading), "report lacks `{heading}`");
    }
    for row in &f.rows {
        assert!(md.contains(&format!("| {} | {} |", row.case, row.path.label())), "report lacks row {}", row.case);
    }
    for missing in f.coverage.iter().filter(|c| c.row.is_none()) {
        assert!(md.contains(&format!("| {} | not implemented yet |", missing.requested)), "{} must be reported as missing", missing.requested);
    }
    assert!(report::svg(&results).starts_with("<svg"));
}
