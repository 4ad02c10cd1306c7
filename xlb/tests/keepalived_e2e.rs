//! The DR and NAT keepalived.conf files of the corpus (tests/keepalived/), run end to
//! end in namespaces: `xlb run --keepalived-conf FILE` and `xlb apply --keepalived-conf
//! FILE` set up the services, a real whose check fails leaves rotation and comes back
//! when it passes again, as keepalived does it; SIGHUP re-reads the file.
//!
//! The files are the corpus files with the test bed's addresses put in, the timers
//! shortened (delay_loop 1 s) and the notify scripts pointed at a log; nothing else.
use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use xlb_core::loader::AttachMode;
use xlb_testkit::testbed::{DrCluster, NAT_VIP, NatCluster, NatLayout, VIP, nat_rip, rip};

const XLB: &str = env!("CARGO_BIN_EXE_xlb");

fn require_root() {
    assert_eq!(unsafe { libc::geteuid() }, 0, "these tests create namespaces and attach XDP: run them as root (cargo xtask test)");
}

fn corpus(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/keepalived").join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Replaces every word `from` (whole words only) of `text`.
fn subst(text: &str, pairs: &[(&str, String)]) -> String {
    text.lines()
        .map(|line| {
            let mut words: Vec<String> = Vec::new();
            let mut out = String::new();
            let indent = &line[..line.len() - line.trim_start().len()];
            for w in line.split_whitespace() {
                let (quote_open, core, quote_close) = (w.starts_with('"'), w.trim_matches('"'), w.ends_with('"') && w.len() > 1);
                let core = pairs.iter().find(|(f, _)| *f == core).map_or(core.to_string(), |(_, t)| t.clone());
                words.push(format!("{}{core}{}", if quote_open { "\"" } else { "" }, if quote_close { "\"" } else { "" }));
            }
            out.push_str(indent);
            out.push_str(&words.join(" "));
            out
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// Shorter timers: a check every second, retries half a second apart.
fn fast(text: &str) -> String {
    text.lines()
        .map(|l| {
            let t = l.trim_start();
            let indent = &l[..l.len() - t.len()];
            match t.split_whitespace().next() {
                Some("delay_loop") => format!("{indent}delay_loop 1"),
                Some("delay_before_retry") => format!("{indent}delay_before_retry 0.5"),
                Some("connect_timeout") => format!("{indent}connect_timeout 1"),
                _ => l.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

struct TempDir(PathBuf);
impl TempDir {
    fn new(tag: &str) -> Self {
        let d = std::env::temp_dir().join(format!("xlb-ka-e2e-{tag}-{}", xlb_core::netns::run_id()));
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("bad JSON ({e}): {text}"))
}

/// The list entry of real `addr` (its "address" field) in the first service.
fn real(list: &serde_json::Value, addr: &str) -> serde_json::Value {
    list[0]["reals"].as_array().unwrap().iter().find(|r| r["address"] == addr).cloned().unwrap_or_else(|| panic!("no real {addr} in {list}"))
}

/// Requests until `done` says the answers are as wanted, or `limit` passes.
fn until(limit: Duration, mut ask: impl FnMut() -> Option<String>, mut done: impl FnMut(&[Option<String>]) -> bool) -> Vec<Option<String>> {
    let start = Instant::now();
    let mut seen = Vec::new();
    while start.elapsed() < limit {
        seen.push(ask());
        if done(&seen) {
            return seen;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("not as wanted within {limit:?}: {seen:?}")
}

/// The last `n` answers all come from `servers` (and there are n).
fn last_from(seen: &[Option<String>], n: usize, servers: &[&str]) -> bool {
    seen.len() >= n && seen[seen.len() - n..].iter().all(|s| s.as_deref().is_some_and(|s| servers.contains(&s)))
}

#[test]
fn dr_corpus_file_a_failing_real_leaves_and_returns() {
    require_root();
    let tmp = TempDir::new("dr");
    let mut c = DrCluster::build(Path::new(XLB), 2, AttachMode::Auto).expect("build the namespace cluster");
    // The client is one host: persistence would hold it to one real, so it goes.
    let text = fast(&subst(&corpus("dr-tcp.conf"), &[("10.0.0.100", VIP.to_string()), ("10.0.0.11", rip(0).to_string()), ("10.0.0.12", rip(1).to_string())]))
        .lines()
        .filter(|l| !l.trim_start().starts_with("persistence_"))
        .collect::<Vec<_>>()
        .join("\n");
    let conf = tmp.0.join("keepalived.conf");
    std::fs::write(&conf, &text).unwrap();
    c.start_balancer_with(&["--keepalived-conf", conf.to_str().unwrap()]).unwrap();

    let ask = || c.curl("/").ok().map(|b| b.trim().to_string());
    // Both serve (wrr 3:1).
    until(Duration::from_secs(10), ask, |s| s.iter().any(|x| x.as_deref() == Some("rs1")) && s.iter().any(|x| x.as_deref() == Some("rs2")));
    let list = json(&c.xlb(&["--output", "json", "list"]).unwrap());
    assert_eq!(real(&list, &rip(0).to_string())["weight"], 3, "{list}");
    assert_eq!(real(&list, &rip(1).to_string())["forward"], "route", "{list}");

    // rs2's service dies: TCP_CHECK fails (1 + 3 retries) and it leaves rotation.
    c.stop_http(1).unwrap();
    let ask = || c.curl("/").ok().map(|b| b.trim().to_string());
    until(Duration::from_secs(15), ask, |s| last_from(s, 8, &["rs1"]));
    let list = json(&c.xlb(&["--output", "json", "list"]).unwrap());
    assert_eq!(real(&list, &rip(1).to_string())["health"], "down", "{list}");
    let ipvs = c.xlb(&["ipvsadm", "-L", "-n"]).unwrap();
    assert!(!ipvs.contains(&format!("{}:80", rip(1))), "keepalived removes a failed real: {ipvs}");

    // Back: the next check passes and rs2 takes requests again.
    c.start_http(1).unwrap();
    let ask = || c.curl("/").ok().map(|b| b.trim().to_string());
    until(Duration::from_secs(10), ask, |s| s.last().is_some_and(|x| x.as_deref() == Some("rs2")));

    // SIGHUP re-reads the file: a new weight takes effect.
    std::fs::write(&conf, text.replacen("weight 3", "weight 5", 1)).unwrap();
    c.signal_balancer(libc::SIGHUP).unwrap();
    let start = Instant::now();
    loop {
        let list = json(&c.xlb(&["--output", "json", "list"]).unwrap());
        if real(&list, &rip(0).to_string())["weight"] == 5 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "SIGHUP did not re-read the keepalived.conf: {list}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // A broken file on SIGHUP changes nothing.
    std::fs::write(&conf, format!("{text}\nvirtual_server 10.99.0.100 81 {{\n")).unwrap();
    c.signal_balancer(libc::SIGHUP).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let list = json(&c.xlb(&["--output", "json", "list"]).unwrap());
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(real(&list, &rip(0).to_string())["weight"], 5, "{list}");
}

#[test]
fn nat_corpus_file_applied_a_failing_real_leaves_and_returns() {
    require_root();
    let tmp = TempDir::new("nat");
    // Four reals: three in the file's pool, the fourth its sorry server.
    let mut c = NatCluster::build(Path::new(XLB), 4, AttachMode::Auto, NatLayout::TwoNics).expect("build the namespace cluster");
    let log = tmp.0.join("notify.log");
    let script = tmp.0.join("rs-state");
    std::fs::write(&script, format!("#!/bin/sh\necho \"$@\" >> {}\n", log.display())).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let script = script.display().to_string();
    let text = fast(&subst(
        &corpus("nat-http.conf"),
        &[
            ("10.0.0.100", NAT_VIP.to_string()),
            ("192.168.100.200", nat_rip(3).to_string()),
            ("/usr/local/bin/rs-state", script.clone()),
            ("/usr/local/bin/page-ops", script),
            ("192.168.100.11", nat_rip(0).to_string()),
            ("192.168.100.12", nat_rip(1).to_string()),
            ("192.168.100.13", nat_rip(2).to_string()),
        ],
    ));
    let conf = tmp.0.join("keepalived.conf");
    std::fs::write(&conf, &text).unwrap();
    c.start_balancer().unwrap();
    let out = c.xlb_command(&["apply", "--keepalived-conf", conf.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let ask = || c.curl("/").ok().map(|b| b.trim().to_string());
    until(Duration::from_secs(10), ask, |s| ["rs1", "rs2", "rs3"].iter().all(|n| s.iter().any(|x| x.as_deref() == Some(*n))));
    let list = json(&c.xlb(&["--output", "json", "list"]).unwrap());
    let rs2 = nat_rip(1).to_string();
    assert_eq!(real(&list, &rs2)["port"], 8080, "port mapping VIP:80 → RIP:8080: {list}");

    // rs2 fails its HTTP_GET (1 + 2 retries): inhibit_on_failure takes its weight to 0,
    // it gets no new requests; the pool keeps its quorum, so no sorry server.
    c.stop_http(1).unwrap();
    let ask = || c.curl("/").ok().map(|b| b.trim().to_string());
    until(Duration::from_secs(15), ask, |s| last_from(s, 8, &["rs1", "rs3"]));
    let list = json(&c.xlb(&["--output", "json", "list"]).unwrap());
    assert_eq!(real(&list, &rs2)["health"], "down", "{list}");
    let ipvs = c.xlb(&["ipvsadm", "-L", "-n"]).unwrap();
    assert!(ipvs.contains(&format!("{rs2}:8080")), "inhibit_on_failure keeps the real, at weight 0: {ipvs}");
    let notes = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(notes.contains(&format!("{rs2} down")), "notify_down ran: {notes:?}");
    assert!(!notes.contains("page-ops") && !notes.lines().any(|l| l == "down"), "quorum kept: no quorum_down: {notes:?}");

    c.start_http(1).unwrap();
    let ask = || c.curl("/").ok().map(|b| b.trim().to_string());
    until(Duration::from_secs(10), ask, |s| s.last().is_some_and(|x| x.as_deref() == Some("rs2")));
    let start = Instant::now();
    while !std::fs::read_to_string(&log).unwrap_or_default().contains(&format!("{rs2} up")) {
        assert!(start.elapsed() < Duration::from_secs(3), "notify_up ran");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// keepalived's quorum: the healthy reals' total weight; below quorum - hysteresis the
/// sorry server takes new connections and quorum_down runs, from quorum + hysteresis the
/// reals take them again and quorum_up runs (ipwrapper.c update_quorum_state).
#[test]
fn quorum_hysteresis_sorry_server_and_quorum_commands() {
    require_root();
    let tmp = TempDir::new("quorum");
    let mut c = DrCluster::build(Path::new(XLB), 3, AttachMode::Auto).expect("build the namespace cluster");
    let log = tmp.0.join("quorum.log");
    let check = |w: u32, i: usize| {
        format!("  real_server {} 80 {{\n    weight {w}\n    TCP_CHECK {{\n      connect_timeout 1\n      retry 0\n    }}\n  }}\n", rip(i))
    };
    let text = format!(
        "virtual_server {VIP} 80 {{\n  delay_loop 0.5\n  lb_algo rr\n  lb_kind DR\n  sorry_server {} 80\n  quorum 2\n  hysteresis 1\n  quorum_up \"sh -c 'echo up >> {l}'\"\n  quorum_down \"sh -c 'echo down >> {l}'\"\n{}{}}}\n",
        rip(2),
        check(2, 0),
        check(1, 1),
        l = log.display()
    );
    let conf = tmp.0.join("keepalived.conf");
    std::fs::write(&conf, &text).unwrap();
    c.start_balancer_with(&["--keepalived-conf", conf.to_str().unwrap()]).unwrap();
    let ask = || c.curl("/").ok().map(|b| b.trim().to_string());
    until(Duration::from_secs(10), ask, |s| ["rs1", "rs2"].iter().all(|n| s.iter().any(|x| x.as_deref() == Some(*n))));
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();

    // rs2 (weight 1) down: weight 2 left, not below 2 - 1: quorum kept.
    c.stop_http(1).unwrap();
    let ask = || c.curl("/").ok().map(|b| b.trim().to_string());
    until(Duration::from_secs(10), ask, |s| last_from(s, 6, &["rs1"]));
    assert_eq!(log_text(), "", "no quorum change yet");
    // rs1 down too: weight 0, quorum lost: the sorry server (rs3) answers.
    c.stop_http(0).unwrap();
    let ask = || c.curl("/").ok().map(|b| b.trim().to_string());
    until(Duration::from_secs(10), ask, |s| last_from(s, 4, &["rs3"]));
    assert_eq!(log_text(), "down\n");
    // rs1 back: weight 2 is below 2 + 1: still lost (hysteresis).
    c.start_http(0).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let list = json(&c.xlb(&["--output", "json", "list"]).unwrap());
    assert_eq!(real(&list, &rip(0).to_string())["health"], "up", "{list}");
    let ask = || c.curl("/").ok().map(|b| b.trim().to_string());
    until(Duration::from_secs(5), ask, |s| last_from(s, 4, &["rs3"]));
    assert_eq!(log_text(), "down\n");
    // rs2 back: weight 3, quorum regained: the reals again, quorum_up ran.
    c.start_http(1).unwrap();
    let ask = || c.curl("/").ok().map(|b| b.trim().to_string());
    until(Duration::from_secs(10), ask, |s| last_from(s, 4, &["rs1", "rs2"]));
    assert_eq!(log_text(), "down\nup\n");
}
