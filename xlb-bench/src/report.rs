//! The results file (markdown), its chart (SVG) and the README's benchmark table.
use std::fmt::Write;

use super::{
    Results,
    e2e::E2eResults,
    fastpath::FastpathResults,
};

/// Markers around the generated table in README.md.
pub const README_START: &str = "<!-- bench:start (written by `cargo xtask bench`) -->";
pub const README_END: &str = "<!-- bench:end -->";

fn ns(v: f64) -> String {
    format!("{v:.1}")
}

fn ratio(v: f64) -> String {
    format!("{v:.2}×")
}

/// A median ratio with the lowest and highest round's.
fn ratio_range(v: f64, (low, high): (f64, f64)) -> String {
    format!("{v:.2}× ({low:.2}–{high:.2})")
}

/// The whole results file. `chart` is the SVG's file name, next to it.
pub fn markdown(r: &Results, date: &str, chart: &str) -> String {
    let mut md = String::new();
    let m = &r.machine;
    let _ = writeln!(md, "# xlb benchmarks, {date}\n");
    let _ = writeln!(
        md,
        "Machine: Linux {}, {} × {}, 1-minute load average {:.2} at the start (the machine is shared with other developers).{}\n",
        m.kernel,
        m.cpus,
        m.cpu,
        m.load_at_start,
        if r.quick { " **Quick run (tiny counts): the figures are not meaningful.**" } else { "" }
    );
    let _ = writeln!(
        md,
        "Everything compared in one table was measured in the same run, interleaved round by round, and every figure is the median of the rounds; ratios are medians of the per-round ratios. Made by `cargo xtask bench{}`.\n\n![chart]({chart})\n",
        if r.ipvs_vm.is_some() { " --ipvs-vm" } else { "" }
    );
    if let Some(f) = &r.fastpath {
        fastpath_section(&mut md, f);
    }
    if let Some(e) = &r.e2e {
        let _ = writeln!(md, "## 2. End to end: real TCP through namespaces\n");
        e2e_section(&mut md, e);
    }
    let _ = writeln!(md, "## 3. Kernel IPVS side by side, in a VM\n");
    match &r.ipvs_vm {
        Some(vm) => {
            let _ = writeln!(
                md,
                "Section 2 run inside a VM (Debian kernel {} with IPVS, under {}: {}), xlb and IPVS in the same namespace topology and the same VM boot. Absolute figures are the VM's; only the ratios within this table mean anything.\n",
                vm.kernel, vm.accel, vm.accel_note
            );
            e2e_section(&mut md, &vm.e2e);
        }
        None => {
            let _ = writeln!(md, "Not run this time: `cargo xtask bench --ipvs-vm` runs it.\n");
        }
    }
    if let Some(s) = &r.scale {
        scale_section(&mut md, s);
    }
    if let Some(c) = &r.control {
        control_section(&mut md, c);
    }
    md
}

/// "1.23×", or "–" for none.
fn ratio_or_dash(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), ratio)
}

fn fastpath_section(md: &mut String, f: &FastpathResults) {
    let k = &f.katran;
    let _ = writeln!(md, "## 1. Fast path: BPF_PROG_TEST_RUN of every path, Katran beside it\n");
    let _ = writeln!(
        md,
        "{} rounds × {} iterations per run (new flows: xlb {}, Katran {}), xlb's and Katran's runs interleaved in every round. A test run does not restore the frame between iterations, so each case runs under a wrapper program that restores the original frame (length and bytes, from a map) and then tail-calls a program array's slot, which holds xlb's `xlb_balance` for xlb's rows and Katran's `balancer_ingress` for Katran's. A restore-only program, the same restoring and the same one tail call into a bare XDP_DROP, is timed in the same round and subtracted, and the bare XDP_DROP time (the test run's own cost per iteration, which any program pays) added back: **ns/packet = wrapper − restore-only + bare XDP_DROP**. For new flows the wrapper writes a fresh client source address every iteration; every made-up flow is then looked up in the connection table (Katran: its LRU) and taken out, so no table ever evicts. Established rows time a data segment of a connection whose handshake (SYN, the real's SYN-ACK where the director sees it, ACK) ran once before: its entry must be ESTABLISHED before and after every run. Per-iteration time is the wall clock around the syscall when it agrees with the kernel's whole-ns figure, else the kernel's figure. × floor: × the bare swap-MACs-XDP_TX program; × Katran: × Katran's same kind of path (established / new flow, same family); both medians of per-round ratios.\n",
        f.rounds, f.repeat, f.new_flow_repeat, k.new_flow_repeat
    );
    let _ = writeln!(
        md,
        "Baselines in the same rounds: bare XDP_DROP **{} ns**, bare swap-MACs-XDP_TX (the floor) **{} ns** per packet. Method check: with the bare XDP_DROP in the timed slot, the same arithmetic gives **{} ns** (the tail call cancels out).\n",
        ns(f.bare_drop_ns),
        ns(f.bare_swap_tx_ns),
        ns(f.method_check_drop_ns)
    );
    let _ = writeln!(md, "### Targets (issue 12, point 2), this run\n");
    let _ = writeln!(md, "| Target | Result | Decided by | Why missed (this run's figures) |");
    let _ = writeln!(md, "|---|---|---|---|");
    for t in &f.targets {
        let _ = writeln!(md, "| {} | {} | {} | {} |", t.target, t.verdict(), t.note, t.cause.as_deref().unwrap_or(if t.met() == Some(true) { "–" } else { "" }));
    }
    if !f.primitives.is_empty() {
        let _ = writeln!(
            md,
            "\n### Kernel primitives\n\nIn the same rounds and by the same method (the \"frame\" is the key; tables at CONNS's default size; the flow table holds the hot entry and as many live entries as the live-flows rows, which one row walks in turn; the compact table one entry; the LRU emptied after every round): what the parts of a path cost alone, against which the targets' budgets are set above.\n"
        );
        let _ = writeln!(md, "| Primitive | alone, ns | ns/packet (+ XDP_DROP) | every iteration's verdict as expected |");
        let _ = writeln!(md, "|---|---:|---:|:---:|");
        for p in &f.primitives {
            let _ = writeln!(md, "| {} | {} | {} | {} |", p.primitive, ns(p.ns_alone), ns(p.ns_per_packet), if p.proven { "✓" } else { "✗" });
        }
    }
    let _ = writeln!(
        md,
        "\n### Katran\n\n`{}` (`balancer_ingress`: {} instructions as the kernel has it, {} bytes JITed), loaded with `bpftool prog loadall`, one VIP per family (xlb's fixture VIPs, port 80) with two reals each, default VIP flags, one LRU of {} entries per CPU; the frames are those of xlb's \"DR, IPv4/IPv6 TCP\" rows. Proof from Katran's own `stats`, `reals_stats` and LRU.\n",
        k.object.display(),
        k.xlated_insns,
        k.jited_bytes,
        k.lru_entries
    );
    let _ = writeln!(md, "| Katran | ns/packet | × floor | × XDP_DROP | balancer_ingress alone, ns | Katran's counters over all measured iterations |");
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---|");
    for row in &k.rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            row.case,
            ns(row.ns_per_packet),
            ratio(row.x_floor),
            ratio(row.vs_drop),
            ns(row.added_ns),
            row.proof.summary(row.kind.new_flow)
        );
    }
    let g = &f.growth;
    let _ = writeln!(
        md,
        "\n### Live flows\n\nEstablished DR (Katran: an LRU hit) with few and many live flows, the timed packets going through every flow in turn (each flow made by its SYN and, for xlb, the client's ACK before the rounds). Growth, many over few (median of per-round ratios): xlb **{}**, Katran **{}**.\n",
        ratio(g.xlb_growth),
        ratio(g.katran_growth)
    );
    let _ = writeln!(md, "| Balancer | live flows | iterations per run | ns/packet | counters (last round) |");
    let _ = writeln!(md, "|---|---:|---:|---:|---|");
    for r in &g.rows {
        let _ = writeln!(md, "| {} | {} | {} | {} | {} |", r.balancer, r.flows, r.repeat, ns(r.ns_per_packet), r.proof);
    }
    let d = &f.diagnostics;
    let _ = writeln!(
        md,
        "\n### Fast-path diagnostics\n\n{}, in the same rounds: the object built without the diagnostics (aya-log calls, `xlb trace`'s hook), the object as xlb loads it, and with `xlb trace` on but matching no frame. × without: median of per-round ratios.\n",
        d.case
    );
    let _ = writeln!(md, "| Object | ns/packet | × floor | × without | counters over all measured iterations |");
    let _ = writeln!(md, "|---|---:|---:|---:|---|");
    for r in &d.rows {
        let _ = writeln!(md, "| {} | {} | {} | {} | {} |", r.variant, ns(r.ns_per_packet), ratio(r.x_floor), ratio(r.x_without), r.proof.summary());
    }
    let _ = writeln!(md, "\n### xlb\n");
    let _ = writeln!(md, "| Case | Path | ns/packet | × floor | × Katran | × XDP_DROP | balance() alone, ns | counters over all measured iterations |");
    let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|---|");
    for row in &f.rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            row.case,
            row.path.label(),
            ns(row.ns_per_packet),
            ratio(row.x_floor),
            ratio_or_dash(row.x_katran),
            ratio(row.vs_drop),
            ns(row.added_ns),
            row.proof.summary()
        );
    }
    let _ = writeln!(md, "\nRequested cases:\n");
    let _ = writeln!(md, "| Requested | Measured |");
    let _ = writeln!(md, "|---|---|");
    for c in &f.coverage {
        let measured = match c.row.and_then(|i| f.rows.get(i)) {
            Some(row) => format!("{} ns/packet, {} floor, {} Katran ({}, {})", ns(row.ns_per_packet), ratio(row.x_floor), ratio_or_dash(row.x_katran), row.case, row.path.label()),
            None => "not measured in this run (left out by --case)".into(),
        };
        let _ = writeln!(md, "| {} | {} |", c.requested, measured);
    }
    let _ = writeln!(md);
}

fn e2e_section(md: &mut String, e: &E2eResults) {
    let _ = writeln!(
        md,
        "wrk, 1 thread, {} connections, {} s per run, {} rounds; every request is a new TCP connection (`Connection: close`) to nginx on two real servers, so every request is a new flow for the balancer. CPU is the whole machine's busy time per request (client, balancer, servers, kernel; on a shared machine it includes others' work, which the interleaving spreads evenly).\n",
        e.connections, e.seconds, e.rounds
    );
    let _ = writeln!(md, "| Target | requests/s | × direct (lowest–highest round) | p50 ms | p90 ms | p99 ms | CPU µs/request | CPU × direct | errors | evidence |");
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for row in &e.rows {
        let _ = writeln!(
            md,
            "| {} | {:.0} | {} | {:.2} | {:.2} | {:.2} | {:.0} | {} | {} | {} |",
            row.target,
            row.requests_per_sec,
            ratio_range(row.rps_vs_direct, row.rps_vs_direct_range),
            row.p50_ms,
            row.p90_ms,
            row.p99_ms,
            row.cpu_us_per_request,
            ratio(row.cpu_vs_direct),
            row.errors,
            row.evidence
        );
    }
    for note in &e.notes {
        let _ = writeln!(md, "\n- {note}");
    }
    let _ = writeln!(md);
}

fn control_section(md: &mut String, c: &super::control::ControlResults) {
    let _ = writeln!(md, "## 5. The controller at scale\n");
    let _ = writeln!(md, "| Operation | Median | Target | Met | |\n|---|---:|---:|:---:|---|");
    for r in &c.rows {
        let fmt = |s: f64| if s < 0.1 { format!("{:.3} ms", s * 1e3) } else { format!("{s:.3} s") };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            r.what,
            fmt(r.seconds),
            fmt(r.target_seconds),
            if r.met { "yes" } else { "**no**" },
            r.detail
        );
    }
    for n in &c.notes {
        let _ = writeln!(md, "\n- {n}");
    }
    let _ = writeln!(md);
}

fn scale_section(md: &mut String, s: &super::scale::ScaleResults) {
    let _ = writeln!(md, "## 4. Scale\n");
    let _ = writeln!(md, "Fast path (DR, established flows taken in turn from all live flows, same arithmetic as section 1):\n");
    let _ = writeln!(md, "| Live flows | in table | ns/packet | × XDP_DROP | counters |");
    let _ = writeln!(md, "|---:|---:|---:|---:|---|");
    for f in &s.flows {
        let _ = writeln!(md, "| {} | {} | {} | {} | {} |", f.flows, f.flows_in_table, ns(f.ns_per_packet), ratio(f.vs_drop), f.proof.summary());
    }
    let _ = writeln!(md, "\nLoading services through `ops` (what `xlb run --config` and `xlb service/real add` call), MACs known:\n");
    let _ = writeln!(md, "| Services | Reals each | seconds | µs per real |");
    let _ = writeln!(md, "|---:|---:|---:|---:|");
    for l in &s.load {
        let _ = writeln!(md, "| {} | {} | {:.2} | {:.0} |", l.services, l.reals_per_service, l.seconds, l.us_per_real);
    }
    if let Some(a) = &s.add_real {
        let _ = writeln!(
            md,
            "\n`xlb real add` to the fast path using the new real ({} trials, namespaces, SKB mode): the command takes **{:.1} ms** from start to exit; the first new connection sent to the new real was opened **{:.1} ms** after the command started.",
            a.trials, a.command_ms, a.first_use_ms
        );
    }
    let _ = writeln!(md, "\nMaglev table rebuild for 10, 100, 1000 reals: {}.", s.maglev);
    let total: u64 = s.map_memory.iter().map(|(_, b)| b).sum();
    let _ = writeln!(md, "\nMemory the kernel charges to the fast path's maps (fdinfo `memlock`), {:.1} MiB in all:\n", total as f64 / 1048576.0);
    let _ = writeln!(md, "| Map | KiB |");
    let _ = writeln!(md, "|---|---:|");
    for (name, bytes) in &s.map_memory {
        let _ = writeln!(md, "| {name} | {:.0} |", *bytes as f64 / 1024.0);
    }
    for note in &s.notes {
        let _ = writeln!(md, "\n- {note}");
    }
    let _ = writeln!(md);
}

/// The rows the README shows: requested fast-path cases, then the end-to-end targets.
pub fn readme_table(r: &Results, results_file: &str) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "{README_START}");
    let _ = writeln!(md, "Latest run: [{results_file}]({results_file}) (medians of interleaved rounds on a shared 2-core machine; method there).\n");
    if let Some(f) = &r.fastpath {
        let _ = writeln!(md, "| Fast path (BPF_PROG_TEST_RUN) | ns/packet | × swap-MACs XDP_TX | × Katran | × XDP_DROP |");
        let _ = writeln!(md, "|---|---:|---:|---:|---:|");
        let _ = writeln!(md, "| bare XDP_DROP / bare swap-MACs XDP_TX | {} / {} | | | |", ns(f.bare_drop_ns), ns(f.bare_swap_tx_ns));
        for k in &f.katran.rows {
            let _ = writeln!(md, "| Katran: {} | {} | {} | 1.00× | {} |", k.case, ns(k.ns_per_packet), ratio(k.x_floor), ratio(k.vs_drop));
        }
        for c in &f.coverage {
            match c.row.and_then(|i| f.rows.get(i)) {
                Some(row) => {
                    let _ = writeln!(md, "| {} | {} | {} | {} | {} |", c.requested, ns(row.ns_per_packet), ratio(row.x_floor), ratio_or_dash(row.x_katran), ratio(row.vs_drop));
                }
                None => {
                    let _ = writeln!(md, "| {} | not measured in this run (left out by --case) | | | |", c.requested);
                }
            }
        }
        let _ = writeln!(md);
    }
    let e2e_rows = |md: &mut String, title: &str, e: &E2eResults| {
        let _ = writeln!(md, "| {title} | requests/s | × direct (lowest–highest round) | p99 ms | CPU µs/request | CPU × direct |");
        let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|");
        for row in &e.rows {
            let _ = writeln!(
                md,
                "| {} | {:.0} | {} | {:.2} | {:.0} | {} |",
                row.target,
                row.requests_per_sec,
                ratio_range(row.rps_vs_direct, row.rps_vs_direct_range),
                row.p99_ms,
                row.cpu_us_per_request,
                ratio(row.cpu_vs_direct)
            );
        }
        let _ = writeln!(md);
    };
    if let Some(e) = &r.e2e {
        e2e_rows(&mut md, "End to end, new connection per request", e);
    }
    if let Some(vm) = &r.ipvs_vm {
        e2e_rows(&mut md, &format!("Same, in a VM with IPVS ({})", vm.accel), &vm.e2e);
    }
    let _ = writeln!(md, "{README_END}");
    md
}

/// The README's end-to-end tables from the run before, when this run measured no
/// end-to-end section (`--only fastpath`): their lines, introduced by the earlier run's
/// file, to go after this run's fast-path rows. None if the README has none.
pub fn earlier_end_to_end(readme: &str) -> Option<String> {
    let start = readme.find(README_START)?;
    let end = readme[start..].find(README_END)? + start;
    let block = &readme[start..end];
    // Kept before by a fast-path-only run: still from that earlier run.
    let earlier = block.lines().find_map(|l| l.strip_prefix("End to end from an earlier run: "));
    let link = earlier.or_else(|| block.lines().find_map(|l| l.strip_prefix("Latest run: ")))?;
    let link = link.split(" (").next().unwrap_or(link).trim_end_matches(['.', ':']);
    let first = block.find("\n| End to end")? + 1;
    Some(format!("End to end from an earlier run: {link}.\n\n{}", &block[first..]))
}

/// [`readme_table`], keeping the end-to-end tables of the README's earlier run when
/// this run has none.
pub fn readme_table_keeping(r: &Results, results_file: &str, readme: &str) -> String {
    let table = readme_table(r, results_file);
    match (&r.e2e, earlier_end_to_end(readme)) {
        (None, Some(kept)) => {
            let at = table.rfind(README_END).unwrap_or(table.len());
            format!("{}{kept}{}", &table[..at], &table[at..])
        }
        _ => table,
    }
}

/// README text with its benchmark table replaced (or a Benchmarks section appended).
pub fn update_readme(readme: &str, table: &str) -> String {
    if let (Some(start), Some(end)) = (readme.find(README_START), readme.find(README_END)) {
        let end = end + README_END.len();
        let rest = readme[end..].strip_prefix('\n').unwrap_or(&readme[end..]);
        return format!("{}{table}{rest}", &readme[..start]);
    }
    format!(
        "{}\n\n## Benchmarks\n\n`cargo xtask bench` measures the fast path, end-to-end throughput against nftables, HAProxy and (with `--ipvs-vm`, in a VM) kernel IPVS, and scale; it writes `bench/results/<date>.md` with a chart, and this table.\n\n{table}",
        readme.trim_end()
    )
}

/// One bar of the chart.
struct Bar {
    label: String,
    value: f64,
    color: &'static str,
}

/// A titled group of bars sharing one scale.
struct Panel {
    title: String,
    bars: Vec<Bar>,
    unit: &'static str,
}

const BAR_COLOR: &str = "#4a7bb7";
const BASE_COLOR: &str = "#999999";
const KATRAN_COLOR: &str = "#c8702a";

/// Horizontal bar chart: fast-path ns/packet per requested case (with the baselines),
/// and requests/s relative to direct per end-to-end target.
pub fn svg(r: &Results) -> String {
    let bar = |label: &str, value: f64, color| Bar { label: label.to_string(), value, color };
    let mut panels = Vec::new();
    if let Some(f) = &r.fastpath {
        let mut bars = vec![bar("bare XDP_DROP", f.bare_drop_ns, BASE_COLOR), bar("bare swap-MACs XDP_TX", f.bare_swap_tx_ns, BASE_COLOR)];
        for k in &f.katran.rows {
            bars.push(bar(&format!("Katran: {}", k.case), k.ns_per_packet, KATRAN_COLOR));
        }
        for c in &f.coverage {
            if let Some(row) = c.row.and_then(|i| f.rows.get(i)) {
                bars.push(bar(&c.requested, row.ns_per_packet, BAR_COLOR));
            }
        }
        panels.push(Panel { title: "Fast path, ns per packet (BPF_PROG_TEST_RUN)".into(), bars, unit: "ns" });
    }
    let e2e_panel = |title: String, e: &E2eResults| Panel {
        title,
        bars: e.rows.iter().map(|row| bar(&row.target, row.rps_vs_direct, if row.target.starts_with("direct") { BASE_COLOR } else { BAR_COLOR })).collect(),
        unit: "× direct",
    };
    if let Some(e) = &r.e2e {
        panels.push(e2e_panel("End to end, requests/s relative to direct (new connection per request)".into(), e));
    }
    if let Some(vm) = &r.ipvs_vm {
        panels.push(e2e_panel(format!("In a VM with IPVS ({}), requests/s relative to direct", vm.accel), &vm.e2e));
    }
    let (width, label_w, bar_h, gap) = (900.0, 300.0, 18.0, 6.0);
    let height: f64 = panels.iter().map(|p| 40.0 + p.bars.len() as f64 * (bar_h + gap)).sum::<f64>() + 10.0;
    let mut s = String::new();
    let _ = writeln!(s, r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#);
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let mut y = 10.0;
    for panel in &panels {
        let _ = writeln!(s, r#"<text x="10" y="{}" font-weight="bold" font-size="14">{}</text>"#, y + 16.0, escape(&panel.title));
        y += 30.0;
        let max = panel.bars.iter().map(|b| b.value).filter(|v| v.is_finite()).fold(0.0f64, f64::max).max(1e-9);
        let scale = (width - label_w - 90.0) / max;
        for b in &panel.bars {
            let w = if b.value.is_finite() { b.value * scale } else { 0.0 };
            let _ = writeln!(s, r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#, label_w - 8.0, y + bar_h - 5.0, escape(&b.label));
            let _ = writeln!(s, r#"<rect x="{label_w}" y="{y}" width="{w:.1}" height="{bar_h}" fill="{}"/>"#, b.color);
            let _ = writeln!(s, r#"<text x="{:.1}" y="{}">{:.2} {}</text>"#, label_w + w + 5.0, y + bar_h - 5.0, b.value, panel.unit);
            y += bar_h + gap;
        }
        y += 10.0;
    }
    s.push_str("</svg>\n");
    s
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fastpath_only_run_keeps_the_earlier_end_to_end_tables() {
        let e2e = "| End to end, new connection per request | requests/s |\n|---|---:|\n| direct | 16666 |\n\n| Same, in a VM with IPVS (TCG) | requests/s |\n| IPVS DR, rr | 475 |\n\n";
        let old = format!("# xlb\n\n{README_START}\nLatest run: [bench/results/old.md](bench/results/old.md) (medians).\n\n| Fast path | ns |\n| DR | 81.5 |\n\n{e2e}{README_END}\n");
        let kept = earlier_end_to_end(&old).expect("the end-to-end tables");
        assert_eq!(kept, format!("End to end from an earlier run: [bench/results/old.md](bench/results/old.md).\n\n{e2e}"));
        let table = readme_table_keeping(&Results::default(), "bench/results/new.md", &old);
        assert!(table.starts_with(&format!("{README_START}\nLatest run: [bench/results/new.md]")), "{table}");
        assert!(table.ends_with(&format!("{kept}{README_END}\n")), "{table}");
        assert!(!table.contains("| DR | 81.5 |"), "the old fast-path rows go: {table}");
        // Kept again by the next fast-path-only run, with the same earlier link.
        assert_eq!(earlier_end_to_end(&update_readme(&old, &table)).as_deref(), Some(kept.as_str()));
        assert_eq!(earlier_end_to_end("# xlb\n"), None);
    }

    #[test]
    fn readme_table_is_replaced_or_appended() {
        let table = format!("{README_START}\nnew\n{README_END}\n");
        let appended = update_readme("# xlb\n\ntext\n", &table);
        assert!(appended.starts_with("# xlb\n\ntext\n\n## Benchmarks\n"));
        assert!(appended.ends_with(&table));
        let old = format!("# xlb\n\n## Benchmarks\n\n{README_START}\nold\n{README_END}\n\n## After\n");
        let replaced = update_readme(&old, &table);
        assert_eq!(replaced, format!("# xlb\n\n## Benchmarks\n\n{table}\n## After\n"));
    }
}
