//! keepalived.conf files as operators write them (tests/keepalived/), each imported to
//! its golden xlb config; the errors (file and line) and warnings of the import; the
//! `xlb import keepalived` command. No root needed.
//!
//! To regenerate the golden files after an intended change: XLB_BLESS=1 cargo xtask
//! test -- --test keepalived_import, then review the diff.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use xlb_core::{
    config,
    health::{CheckKind, OnFailure},
    keepalived,
    ops::{ForwardMethod, RealAddr, Scheduler, ServiceId},
};

const XLB: &str = env!("CARGO_BIN_EXE_xlb");

fn corpus(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/keepalived").join(name)
}

fn golden(name: &str) -> keepalived::Import {
    let conf = corpus(&format!("{name}.conf"));
    let import = keepalived::load(&conf).unwrap_or_else(|e| panic!("{name}.conf: {e:#}"));
    let toml = import.toml();
    let want_path = corpus(&format!("{name}.toml"));
    if std::env::var_os("XLB_BLESS").is_some() {
        std::fs::write(&want_path, &toml).unwrap();
    }
    let want = std::fs::read_to_string(&want_path).unwrap_or_else(|e| panic!("{}: {e}", want_path.display()));
    assert_eq!(toml, want, "{name}.conf no longer imports to {name}.toml");
    // The golden config is what `xlb apply` reads, to the same services.
    assert_eq!(config::parse(&want).unwrap(), import.config);
    import
}

fn warnings(i: &keepalived::Import) -> Vec<String> {
    i.warnings.iter().map(|w| format!("{}:{}: {}", w.at.file.file_name().unwrap().to_string_lossy(), w.at.line, w.message)).collect()
}

#[test]
fn dr_with_tcp_check() {
    let i = golden("dr-tcp");
    let svc = &i.config.services[0];
    assert_eq!(svc.id.to_string(), "TCP 10.0.0.100:80");
    assert_eq!(svc.options.scheduler, Scheduler::Wrr);
    let p = svc.options.persistence.unwrap();
    assert_eq!((p.timeout, p.netmask.to_string().as_str()), (50, "255.255.255.0"));
    assert_eq!(svc.reals[0].1.forward, ForwardMethod::Route);
    assert_eq!((svc.reals[0].1.weight, svc.reals[1].1.weight), (3, 1));
    // The reals' checks are alike: one check for the service.
    let h = svc.health.as_ref().unwrap();
    assert_eq!((h.kind, h.interval, h.timeout, h.retry, h.delay_before_retry), (CheckKind::Tcp, 6.0, 3.0, 3, Some(3.0)));
    assert!(svc.real_health.is_empty());
    // global_defs' lvs_timeouts are ipvsadm --set's.
    let s = i.config.settings.unwrap();
    assert_eq!((s.tcp_timeouts[lb_common::tcp::ESTABLISHED as usize], s.tcp_timeouts[lb_common::tcp::FIN_WAIT as usize], s.udp_timeout), (7200, 60, 60));
    // global_defs and VRRP: one note.
    let w = warnings(&i);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].starts_with("dr-tcp.conf:4: global_defs, vrrp_instance left to keepalived"), "{w:?}");
    assert!(w[0].ends_with("(global_defs' lvs_timeouts are imported as settings)"), "{w:?}");
}

#[test]
fn nat_with_http_get_and_port_mapping() {
    let i = golden("nat-http");
    let svc = &i.config.services[0];
    assert_eq!(svc.reals[0].0, RealAddr { ip: "192.168.100.11".parse().unwrap(), port: Some(8080) });
    assert_eq!(svc.reals[0].1.forward, ForwardMethod::Masq, "keepalived's lb_kind NAT");
    assert_eq!(svc.sorry_server, Some("192.168.100.200".parse().unwrap()));
    // notify_up differs per real: each real keeps its own check.
    assert!(svc.health.is_none());
    let h = &svc.real_health[&svc.reals[1].0];
    assert_eq!(h.urls.len(), 2);
    assert_eq!(h.urls[1].status.as_deref(), Some("200,204"));
    assert_eq!((h.retry, h.delay_before_retry, h.on_failure), (2, Some(1.0), OnFailure::Inhibit));
    assert_eq!((h.quorum, h.hysteresis), (2, 1));
    assert_eq!(h.quorum_down.as_deref(), Some("/usr/local/bin/page-ops down"));
    assert_eq!(h.notify_down.as_deref(), Some("/usr/local/bin/rs-state 192.168.100.12 down"));
    // The check goes to the NAT real's own port: nothing to override.
    assert_eq!(h.port, None);
    assert_eq!(
        warnings(&i),
        [
            "nat-http.conf:7: sorry_server port 8080: xlb's sorry server takes the service's port (80)",
            "nat-http.conf:2: sorry_server: xlb reaches its sorry server by direct routing (it holds the VIP, on the service's port), not by this service's NAT or TUN",
        ]
    );
}

#[test]
fn ssl_get_with_digest_and_virtualhost() {
    let i = golden("ssl-digest");
    let h = i.config.services[0].health.as_ref().unwrap();
    assert_eq!(h.kind, CheckKind::Https);
    assert_eq!(h.urls[0].md5.as_deref(), Some("9b3a0c85a887a256d6939da88aabd8cd"));
    assert_eq!(h.virtualhost.as_deref(), Some("shop.example.com"));
}

#[test]
fn misc_check_with_misc_dynamic() {
    let i = golden("misc-dynamic");
    let svc = &i.config.services[0];
    assert_eq!(svc.reals[0].1.forward, ForwardMethod::Tunnel);
    let h = &svc.real_health[&svc.reals[0].0];
    assert_eq!(h.kind, CheckKind::Exec);
    assert_eq!(h.command.as_deref(), Some("/etc/keepalived/queue-weight.sh 10.0.1.31"));
    assert!(h.dynamic && h.alpha);
    assert_eq!((h.timeout, h.retry), (5.0, 0));
}

#[test]
fn fwmark_and_virtual_server_group() {
    let i = golden("fwmark-group");
    let group = &i.config.services[0];
    // The group becomes a firewall-mark service (a mark the file leaves free) with the
    // group's VIP:ports as frontends; the range 10.0.0.100-102 is three addresses.
    assert_eq!(group.id, ServiceId::Fwmark(1));
    let fronts: Vec<String> = group.frontends.iter().map(|f| f.to_string()).collect();
    assert_eq!(fronts, ["TCP 10.0.0.100:80", "TCP 10.0.0.101:80", "TCP 10.0.0.102:80", "TCP 10.0.0.100:443"]);
    assert_eq!(group.options.persistence.unwrap().timeout, 360, "persistence_timeout without a value");
    assert_eq!(group.health.as_ref().unwrap().port, Some(80), "a fwmark service's check names its port");
    let marked = &i.config.services[1];
    assert_eq!(marked.id, ServiceId::Fwmark(7));
    assert_eq!(marked.health.as_ref().unwrap().port, Some(8000), "the real_server's port");
    let w = warnings(&i);
    assert!(w.iter().any(|w| w.starts_with("fwmark-group.conf:28: virtual_server fwmark 7: the mark is set by firewall rules")), "{w:?}");
}

#[test]
fn ipv6_services_and_checks() {
    let i = golden("ipv6");
    let web = &i.config.services[0];
    assert_eq!(web.id.to_string(), "TCP [2001:db8::100]:80");
    let h = web.health.as_ref().unwrap();
    assert_eq!(h.bindto, Some("2001:db8::2".parse().unwrap()));
    let dns = &i.config.services[1];
    assert!(dns.options.one_packet);
    let d = dns.health.as_ref().unwrap();
    assert_eq!((d.kind, d.dns_type.as_deref(), d.dns_name.as_deref(), d.retry), (CheckKind::Dns, Some("A"), Some("example.com"), 3));
    let mail = &i.config.services[2];
    assert_eq!(mail.real_health.values().map(|h| h.kind).collect::<Vec<_>>(), [CheckKind::Smtp, CheckKind::Ping]);
}

#[test]
fn includes_with_globs() {
    let i = golden("includes");
    let ids: Vec<String> = i.config.services.iter().map(|s| s.id.to_string()).collect();
    assert_eq!(ids, ["UDP 10.0.0.53:53", "TCP 10.0.0.80:80"], "conf.d/*.conf in name order");
    let udp = i.config.services[0].health.as_ref().unwrap();
    assert_eq!((udp.send.as_deref(), udp.expect.as_deref()), (Some("health"), Some("ok")), "hex payloads");
    let w = warnings(&i);
    assert!(w.iter().any(|w| w == "includes.conf:6: include: no file matches `optional/*.conf`"), "{w:?}");
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("xlb-ka-{tag}-{}", xlb_core::netns::run_id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn errors_name_file_and_line_and_refuse_the_file() {
    let dir = tmpdir("err");
    let err = |text: &str| format!("{:#}", keepalived::load(&write(&dir, "k.conf", text)).unwrap_err());
    let vs = "virtual_server 10.0.0.1 80 {\n";
    assert!(err(&format!("{vs}  lb_algo lblc\n}}\n")).contains("k.conf:2: lb_algo lblc"));
    assert!(err(&format!("{vs}  lb_kind FOO\n}}\n")).contains("k.conf:2: lb_kind FOO"));
    assert!(err(&format!("{vs}  real_server 10.0.0.2 80 {{\n    weight 1\n}}\n")).contains("k.conf:1: this block is never closed"));
    assert!(err("virtual_server 10.0.0.300 80 {\n}\n").contains("k.conf:1: `10.0.0.300` is not an IP address"));
    assert!(err(&format!("{vs}  protocol SCTP\n}}\n")).contains("k.conf:2: protocol SCTP"));
    assert!(err(&format!("{vs}  real_server 10.0.0.2 80 {{\n    HTTP_GET {{\n      connect_timeout 2\n    }}\n  }}\n}}\n"))
        .contains("k.conf:3: HTTP_GET needs at least one `url` block"));
    assert!(err(&format!("{vs}  real_server 2001:db8::2 80\n}}\n")).contains("k.conf:2: real_server 2001:db8::2"));
    assert!(err(&format!("{vs}}}\n{vs}}}\n")).contains("Service already exists"));
    assert!(err("virtual_server group NOPE {\n}\n").contains("k.conf:1: virtual_server group NOPE: no virtual_server_group NOPE"));
    // An error in an included file names that file.
    write(&dir, "bad.inc", "virtual_server 10.0.0.9 80 {\n  delay_loop soon\n}\n");
    assert!(err("include bad.inc\n").contains("bad.inc:2: `delay_loop soon`"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unknown_keywords_are_warnings_with_file_line_and_keyword() {
    let dir = tmpdir("warn");
    let f = write(
        &dir,
        "k.conf",
        "virtual_server 10.0.0.1 80 {\n  lb_kind DR\n  colour blue\n  real_server 10.0.0.2 80 {\n    shiny yes\n    TCP_CHECK {\n      sparkle 1\n    }\n  }\n}\nfrobnicate {\n}\n",
    );
    let i = keepalived::load(&f).unwrap();
    let w = warnings(&i);
    assert_eq!(
        w,
        [
            "k.conf:3: unknown keyword `colour` in virtual_server: ignored",
            "k.conf:5: unknown keyword `shiny` in real_server: ignored",
            "k.conf:7: unknown keyword `sparkle` in TCP_CHECK: ignored",
            "k.conf:11: unknown keyword `frobnicate` in the top level: ignored",
        ]
    );
    assert_eq!(i.config.services.len(), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_import_command_prints_the_toml_and_notes() {
    let out = Command::new(XLB).args(["import", "keepalived"]).arg(corpus("dr-tcp.conf")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), std::fs::read_to_string(corpus("dr-tcp.toml")).unwrap());
    assert!(String::from_utf8_lossy(&out.stderr).contains("dr-tcp.conf:4: global_defs, vrrp_instance left to keepalived"));
    let dir = tmpdir("cmd");
    let bad = write(&dir, "k.conf", "virtual_server 10.0.0.1 80 {\n");
    let out = Command::new(XLB).args(["import", "keepalived"]).arg(&bad).output().unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "a refused file prints no config");
    assert!(String::from_utf8_lossy(&out.stderr).contains("k.conf:1: this block is never closed"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn several_checkers_on_a_real_all_count() {
    let dir = tmpdir("also");
    let f = write(
        &dir,
        "k.conf",
        "virtual_server 10.0.0.1 80 {\n  lb_kind DR\n  delay_loop 5\n  real_server 10.0.0.2 80 {\n    TCP_CHECK {\n      connect_port 81\n    }\n    MISC_CHECK {\n      misc_path /bin/true\n    }\n    HTTP_GET {\n      url {\n        path /\n      }\n      delay_loop 9\n    }\n  }\n}\n",
    );
    let i = keepalived::load(&f).unwrap();
    let h = i.config.services[0].health.as_ref().unwrap();
    assert_eq!((h.kind, h.port), (CheckKind::Tcp, Some(81)));
    let also: Vec<(CheckKind, Option<u16>)> = h.also.iter().map(|a| (a.kind, a.port)).collect();
    assert_eq!(also, [(CheckKind::Exec, None), (CheckKind::Http, Some(80))], "the HTTP check names the real's port");
    assert_eq!(warnings(&i), ["k.conf:11: HTTP_GET: its delay_loop differs from TCP_CHECK's; xlb runs both at TCP_CHECK's"]);
    // And it reads back as `xlb apply` takes it.
    assert_eq!(config::parse(&i.toml()).unwrap(), i.config);
    std::fs::remove_dir_all(&dir).unwrap();
}
