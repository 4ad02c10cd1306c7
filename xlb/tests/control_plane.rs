//! The control plane an LVS operator trusts, end to end through real namespaces: the
//! ipvsadm front end's exact listings, save/restore (including a real ipvsadm-save
//! file), its error messages, the seeds' commands, a long-lived TCP connection through
//! a kill -9 and restart of the daemon, and through config reloads.
use std::{
    io::{BufRead, BufReader, Write},
    net::TcpStream,
    path::Path,
    process::{Command, Stdio},
};

use xlb_core::{api::Paths, loader::AttachMode};
use xlb_testkit::testbed::{DrCluster, ECHO_PORT, VIP};

const XLB: &str = env!("CARGO_BIN_EXE_xlb");
const XLBADM: &str = env!("CARGO_BIN_EXE_xlbadm");

fn cluster(reals: usize) -> DrCluster {
    assert_eq!(unsafe { libc::geteuid() }, 0, "these tests create namespaces and attach XDP: run them as root (cargo xtask test)");
    DrCluster::build(Path::new(XLB), reals, AttachMode::Skb).expect("build the namespace cluster")
}

/// `xlb ipvsadm ARGS` on the director: (exit status, stdout, stderr).
fn ipvsadm(c: &DrCluster, args: &str, stdin: Option<&str>) -> (i32, String, String) {
    let mut cmd = c.xlb_command(&["ipvsadm"]);
    cmd.args(args.split_whitespace()).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn ok(c: &DrCluster, args: &str) -> String {
    let (code, out, err) = ipvsadm(c, args, None);
    assert_eq!(code, 0, "ipvsadm {args}: {err}");
    out
}

/// A real-server line of ipvsadm -L -n (its columns are padded, trailing spaces too).
fn dest(addr: &str, weight: u32, active: u32, inactive: u32) -> String {
    format!("  -> {addr:<28} {:<7} {weight:<6} {active:<10} {inactive:<10}\n", "Route")
}

/// The header's size is the connection table's (the daemon's default `--max-conns`,
/// lb_common::MAX_CONNS, checked below).
const HEADER: &str = "IP Virtual Server version 1.2.1 (size=1048576)\n\
                      Prot LocalAddress:Port Scheduler Flags\n  \
                      -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n";

const SCRIPT: [&str; 8] = [
    "-A -t 10.99.0.100:80 -s wrr",
    "-a -t 10.99.0.100:80 -r 10.99.0.11:80 -g -w 2",
    "-a -t 10.99.0.100:80 -r 10.99.0.12:80 -g -w 3",
    "-A -t 10.99.0.100:443 -s rr -p 600 -M 255.255.255.0",
    "-A -u 10.99.0.100:53 -s sh -b sh-port -o",
    "-a -u 10.99.0.100:53 -r 10.99.0.12:53 -g -w 1 -x 100 -y 50",
    "-A -f 7 -s wlc -p",
    "-a -f 7 -r 10.99.0.11 -g -w 1",
];

fn expected_listing() -> String {
    [
        HEADER.to_string(),
        "TCP  10.99.0.100:80 wrr\n".into(),
        dest("10.99.0.11:80", 2, 0, 0),
        dest("10.99.0.12:80", 3, 0, 0),
        "TCP  10.99.0.100:443 rr persistent 600 mask 255.255.255.0\n".into(),
        "UDP  10.99.0.100:53 sh (sh-port) ops\n".into(),
        dest("10.99.0.12:53", 1, 0, 0),
        "FWM  7 wlc persistent 300\n".into(),
        dest("10.99.0.11:0", 1, 0, 0),
    ]
    .concat()
}

const EXPECTED_SAVE: &str = "-A -t 10.99.0.100:80 -s wrr\n\
    -a -t 10.99.0.100:80 -r 10.99.0.11:80 -g -w 2\n\
    -a -t 10.99.0.100:80 -r 10.99.0.12:80 -g -w 3\n\
    -A -t 10.99.0.100:443 -s rr -p 600 -M 255.255.255.0\n\
    -A -u 10.99.0.100:53 -s sh -b sh-port -o\n\
    -a -u 10.99.0.100:53 -r 10.99.0.12:53 -g -w 1 -x 100 -y 50\n\
    -A -f 7 -s wlc -p 300\n\
    -a -f 7 -r 10.99.0.11:0 -g -w 1\n";

#[test]
fn ipvsadm_listings_and_save_restore_round_trip() {
    assert_eq!(lb_common::MAX_CONNS, 1_048_576, "HEADER's size is the default connection table's");
    let mut c = cluster(2);
    c.start_balancer().unwrap();
    for line in SCRIPT {
        ok(&c, line);
    }
    assert_eq!(ok(&c, "-L -n"), expected_listing());
    assert_eq!(ok(&c, "-Ln"), expected_listing(), "clustered flags");
    assert_eq!(ok(&c, "-S -n"), EXPECTED_SAVE);
    let one = ok(&c, "-L -n -t 10.99.0.100:80");
    assert_eq!(one, [&HEADER[HEADER.find('\n').unwrap() + 1..], "TCP  10.99.0.100:80 wrr\n", &dest("10.99.0.11:80", 2, 0, 0), &dest("10.99.0.12:80", 3, 0, 0)].concat());
    assert_eq!(ok(&c, "-L --timeout"), "Timeout (tcp tcpfin udp): 900 120 300\n");
    ok(&c, "--set 600 60 30");
    assert_eq!(ok(&c, "-L --timeout"), "Timeout (tcp tcpfin udp): 600 60 30\n");

    // -C then -R of our own save: the same listing.
    ok(&c, "-C");
    assert_eq!(ok(&c, "-L -n"), HEADER);
    let (code, _, err) = ipvsadm(&c, "-R", Some(EXPECTED_SAVE));
    assert_eq!(code, 0, "{err}");
    assert_eq!(ok(&c, "-L -n"), expected_listing());

    // Traffic shows in --stats and --exact (the director sees only the inbound half).
    for _ in 0..5 {
        c.curl("/").unwrap();
    }
    let stats = ok(&c, "-L -n --stats --exact");
    let service = stats.lines().find(|l| l.starts_with("TCP  10.99.0.100:80 ")).unwrap().to_string();
    let fields: Vec<&str> = service.split_whitespace().collect();
    assert_eq!(fields[2], "5", "{stats}");
    assert_eq!((fields[4], fields[6]), ("0", "0"), "no outbound in DR: {stats}");
    assert!(stats.starts_with("IP Virtual Server version 1.2.1 (size=1048576)\nProt LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n"), "{stats}");
    assert_eq!(&service[..33], format!("{:<33}", "TCP  10.99.0.100:80"));
    ok(&c, "-Z");
    let zeroed = ok(&c, "-L -n --stats");
    assert!(zeroed.lines().find(|l| l.starts_with("TCP  10.99.0.100:80 ")).unwrap().split_whitespace().skip(2).all(|f| f == "0"), "{zeroed}");
    let conns = ok(&c, "-L -n -c");
    assert!(conns.starts_with("IPVS connection entries\npro expire state       source             virtual            destination\n"), "{conns}");
    assert_eq!(conns.lines().filter(|l| l.contains("10.99.0.100:80")).count(), 5, "{conns}");
    let rate = ok(&c, "-L -n --rate");
    assert!(rate.contains("Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS"), "{rate}");
}

#[test]
fn restores_a_real_ipvsadm_save_file_whole_or_not_at_all() {
    let mut c = cluster(2);
    c.start_balancer().unwrap();
    // As `ipvsadm-save` (without -n) writes it: service names, `ops` for -o.
    let save_file = "-A -t 10.99.0.100:http -s wrr -p 300 -M 255.255.255.0\n\
                     -a -t 10.99.0.100:http -r 10.99.0.11:http -g -w 2\n\
                     -a -t 10.99.0.100:http -r 10.99.0.12:http -g -w 1\n\
                     -A -u 10.99.0.100:domain -s rr ops\n\
                     -a -u 10.99.0.100:domain -r 10.99.0.12:domain -g -w 1\n";
    let (code, _, err) = ipvsadm(&c, "-R", Some(save_file));
    assert_eq!(code, 0, "{err}");
    let expected = [
        HEADER.to_string(),
        "TCP  10.99.0.100:80 wrr persistent 300 mask 255.255.255.0\n".into(),
        dest("10.99.0.11:80", 2, 0, 0),
        dest("10.99.0.12:80", 1, 0, 0),
        "UDP  10.99.0.100:53 rr ops\n".into(),
        dest("10.99.0.12:53", 1, 0, 0),
    ]
    .concat();
    assert_eq!(ok(&c, "-L -n"), expected);
    // A file that fails half way changes nothing: a syntax error names its line …
    let (code, _, err) = ipvsadm(&c, "-R", Some("-A -t 10.99.0.100:8080 -s rr\n-a -t 10.99.0.100:8080 -r 10.99.0.11 -w 99999\n"));
    assert_eq!((code, err.as_str()), (2, "line 2: illegal weight specified\n"), "a line ipvsadm refuses: fail(2, …)");
    // … and so does one the daemon refuses at line 2 (the service of line 1 is rolled back).
    let (code, _, err) = ipvsadm(&c, "-R", Some("-A -t 10.99.0.100:8080 -s rr\n-a -t 10.99.0.100:9999 -r 10.99.0.11 -g\n"));
    assert_eq!((code, err.as_str()), (255, "line 2: Service not defined\n"), "a refused change: libipvs's -1");
    assert_eq!(ok(&c, "-L -n"), expected, "a failed restore must change nothing");
}

#[test]
fn ipvsadm_errors_are_exact_and_change_nothing() {
    let mut c = cluster(2);
    let (code, _, err) = ipvsadm(&c, "-L -n", None);
    assert_eq!(code, 1);
    assert!(err.contains("no running xlb found"), "{err}");
    c.start_balancer().unwrap();
    ok(&c, "-A -t 10.99.0.100:80 -s rr");
    ok(&c, "-a -t 10.99.0.100:80 -r 10.99.0.11:80 -g");
    let before = ok(&c, "-L -n");
    for (args, code, message) in [
        // A change the kernel would refuse: libipvs returns -1, ipvsadm exits 255.
        ("-A -t 10.99.0.100:80 -s rr", 255, "Service already exists"),
        ("-a -t 10.99.0.100:80 -r 10.99.0.11:80 -g", 255, "Destination already exists"),
        ("-a -t 10.99.0.100:81 -r 10.99.0.11:80 -g", 255, "Service not defined"),
        ("-d -t 10.99.0.100:80 -r 10.99.0.99:80", 255, "No such destination"),
        ("-D -t 10.99.0.100:81", 255, "No such service"),
        ("-E -t 10.99.0.100:81 -s wrr", 255, "No such service"),
        ("-A -t 10.99.0.100:82 -s fancy", 255, "Scheduler not found: ip_vs_fancy.ko"),
        ("-L -n -t 10.99.0.100:81", 1, "No such service"),
        // A command line ipvsadm refuses: fail(2, …).
        ("-a -t 10.99.0.100:80 -r 10.99.0.12 -w 65536", 2, "illegal weight specified"),
        ("-A -t 10.99.0.300:80", 2, "illegal virtual server address[:port] specified"),
        ("-a -t 10.99.0.100:80", 2, "You need to supply the 'real-server' option for the 'add-server' command"),
        ("-A -t 10.99.0.100:82 -r 10.99.0.11", 2, "Illegal 'real-server' option with the 'add-service' command"),
        ("--set 1 2", 2, "--set option requires 3 timeout values"),
        ("-A -t [fd00:99::100]:80 -p -M 255.255.255.0", 2, "illegal ipv6 netmask specified"),
        // A sync daemon without an interface, and one not running: libipvs's words.
        ("--start-daemon master", 255, "No such device"),
        ("--stop-daemon backup", 255, "No daemon is running"),
    ] {
        let (got_code, _, err) = ipvsadm(&c, args, None);
        assert_eq!((got_code, err.trim_end()), (code, message), "ipvsadm {args}");
    }
    assert_eq!(ok(&c, "-L -n"), before, "refused commands must change nothing");
    // xlbadm is the same front end.
    let out = Command::new("nsenter")
        .arg(format!("--net={}", c.director.path().display()))
        .arg(XLBADM)
        .args(["-L", "-n"])
        .env("XLB_PIN_DIR", &c.pin_dir)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), before);
}

#[test]
fn the_seeds_ipvsadm_commands_run_unchanged() {
    let mut c = cluster(2);
    c.start_balancer().unwrap();
    // Every ipvsadm command of the users' notes, verbatim (addresses outside this test's
    // network are accepted, their next hop unresolved until there is a route).
    for line in [
        "-A -t 172.30.0.200:80 -s rr",
        "-a -t 172.30.0.200:80 -r 10.0.0.7:80 -m",
        "-a -t 172.30.0.200:80 -r 10.0.0.14:80 -m",
        "-Ln",
        "-A -t 10.0.0.200:80 -s wrr",
        "-a -t 10.0.0.200:80 -r 10.0.0.7:80 -g",
        "-a -t 10.0.0.200:80 -r 10.0.0.14:80 -g",
        "-A -t 172.16.5.11:80 -s wrr",
        "-a -t 172.16.5.11:80 -r 192.168.1.12 -g -w 2",
        "-a -t 172.16.5.11:80 -r 192.168.1.13 -g -w 3",
        "-A -t 172.25.20.100:80 -s rr",
        "-a -t 172.25.20.100:80 -r 172.25.20.2:80 -g",
        "-a -t 172.25.20.100:80 -r 172.25.20.3:80 -g",
        "-At 10.6.2.195:80 -s rr",
        "-at 10.6.2.195:80 -r 10.6.2.191 -g",
        "-at 10.6.2.195:80 -r 10.6.2.192 -g",
        "-S",
        "-l",
        "-Z",
        "-Z -t 10.0.0.200:80",
        "-d -t 10.0.0.200:80 -r 10.0.0.7:80",
        "-D -t 10.0.0.200:80",
        "-C",
    ] {
        ok(&c, line);
    }
    assert_eq!(ok(&c, "-L -n"), HEADER);
}

/// Sends a line on `conn` and returns the answer ("rsN: line").
fn echo(conn: &mut (TcpStream, BufReader<TcpStream>), line: &str) -> String {
    writeln!(conn.0, "{line}").unwrap();
    let mut answer = String::new();
    conn.1.read_line(&mut answer).unwrap_or_else(|e| panic!("no echo of {line:?}: {e}"));
    assert!(answer.ends_with(&format!(": {line}\n")), "answer {answer:?} to {line:?}");
    answer.split(':').next().unwrap().to_string()
}

fn open(c: &DrCluster) -> (TcpStream, BufReader<TcpStream>) {
    let s = c.connect_from_client(ECHO_PORT).expect("connect through the VIP");
    let r = BufReader::new(s.try_clone().unwrap());
    (s, r)
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("bad JSON ({e}): {text}"))
}

#[test]
fn a_connection_survives_kill_9_and_restart_of_the_daemon() {
    let mut c = cluster(2);
    c.start_daemon(&[]).unwrap();
    let echo_svc = format!("{VIP}:{ECHO_PORT}");
    c.xlb(&["service", "add", "tcp", &echo_svc, "-s", "rr"]).unwrap();
    c.xlb(&["real", "add", "tcp", &echo_svc, "10.99.0.11"]).unwrap();
    c.xlb(&["real", "add", "tcp", &echo_svc, "10.99.0.12"]).unwrap();
    let mut conn = open(&c);
    let server = echo(&mut conn, "before");

    c.kill_balancer().unwrap();
    // The fast path runs on without its daemon.
    assert_eq!(echo(&mut conn, "while the daemon is dead"), server);
    assert!(c.director.ip(&["link", "show", "eth0"]).unwrap().contains("xdp"));

    let lines = c.start_daemon(&[]).unwrap();
    assert!(lines.iter().any(|l| l.contains("took over the running fast path on eth0")), "{lines:?}");
    assert_eq!(echo(&mut conn, "after the restart"), server, "the connection must keep its real server");
    let list = json(&c.xlb(&["--output", "json", "list"]).unwrap());
    let active: u64 = list[0]["reals"].as_array().unwrap().iter().map(|r| r["active_conns"].as_u64().unwrap()).sum();
    assert_eq!(active, 1, "the connection table survived: {list}");
    // New connections are balanced as before.
    let mut other = open(&c);
    assert_ne!(echo(&mut other, "a new connection"), server);

    // `xlb stop` detaches cleanly.
    c.xlb(&["stop"]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(!c.director.ip(&["link", "show", "eth0"]).unwrap().contains("xdp"), "stop must detach");
    assert!(!c.pin_dir.exists(), "stop must remove the pins");
    assert!(!Paths::for_pin_dir(&c.pin_dir).socket.exists());
}

#[test]
fn a_connection_survives_config_reloads_that_change_other_reals() {
    let mut c = cluster(3);
    let dir = std::env::temp_dir().join(format!("xlb-reload-{}", xlb_core::netns::run_id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("xlb.toml");
    let write = |reals: &str| {
        std::fs::write(&cfg, format!("[[service]]\nvip = \"{VIP}\"\nport = {ECHO_PORT}\nscheduler = \"rr\"\nreals = [{reals}]\n")).unwrap()
    };
    write("\"10.99.0.11\", \"10.99.0.12\"");
    c.start_daemon(&["--config", cfg.to_str().unwrap()]).unwrap();
    let mut conn = open(&c);
    let server = echo(&mut conn, "hello");
    let (kept, dropped, added) = if server == "rs1" { ("10.99.0.11", "10.99.0.12", "10.99.0.13") } else { ("10.99.0.12", "10.99.0.11", "10.99.0.13") };
    let _ = dropped;
    // SIGHUP: remove the other real, add a third.
    write(&format!("\"{kept}\", \"{added}\""));
    c.signal_balancer(libc::SIGHUP).unwrap();
    let wanted = |c: &DrCluster| {
        let list = json(&c.xlb(&["--output", "json", "list"]).unwrap());
        let mut reals: Vec<String> = list[0]["reals"].as_array().unwrap().iter().map(|r| r["address"].as_str().unwrap().to_string()).collect();
        reals.sort();
        reals
    };
    let mut expected = vec![kept.to_string(), added.to_string()];
    expected.sort();
    for _ in 0..50 {
        if wanted(&c) == expected {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(wanted(&c), expected, "SIGHUP applied the new file");
    assert_eq!(echo(&mut conn, "after the reload"), server);
    // `xlb apply` of a file with a mistake is refused whole, with line and column.
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, format!("[[service]]\nvip = \"{VIP}\"\nport = {ECHO_PORT}\nreals = [\"10.99.0.11\"]\ncolour = \"blue\"\n")).unwrap();
    let out = c.xlb_command(&["apply", bad.to_str().unwrap()]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("line 5, column 1") && err.contains("unknown field `colour`"), "{err}");
    assert_eq!(wanted(&c), expected, "a refused file changes nothing");
    // `xlb apply` of a good file: only the difference.
    let good = dir.join("good.toml");
    std::fs::write(&good, format!("[[service]]\nvip = \"{VIP}\"\nport = {ECHO_PORT}\nscheduler = \"rr\"\nreals = [\"{kept}\"]\n")).unwrap();
    let changes = json(&c.xlb(&["--output", "json", "apply", good.to_str().unwrap()]).unwrap());
    assert_eq!((changes["reals_removed"].as_u64(), changes["reals_added"].as_u64()), (Some(1), Some(0)), "{changes}");
    assert_eq!(echo(&mut conn, "after apply"), server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A real-server line of ipvsadm -L -n for any forwarding method.
fn dest_fwd(addr: &str, forward: &str, weight: u32) -> String {
    format!("  -> {addr:<28} {forward:<7} {weight:<6} {:<10} {:<10}\n", 0, 0)
}

/// IPv6 through `xlb ipvsadm` as ipvsadm(8) writes it (`[addr]:port`, `-6`, `-M` as a
/// prefix length): the listing, `-S`, then `-C` and `-R` of it give the same listing
/// back, and the restored service carries IPv6 traffic. On the way: bare `ipvsadm`
/// lists, `--output json` gives JSON, and a persistence template shows in `-L -c` and
/// `--persistent-conn` as IPVS shows it.
#[test]
fn ipvsadm_ipv6_save_clear_restore_gives_back_the_listing() {
    use xlb_testkit::testbed::{VIP6, rip, rip6};
    let mut c = cluster(2);
    c.start_balancer().unwrap();
    let (r1, r2) = (rip6(0), rip6(1));
    for line in [
        format!("-A -t {VIP}:80 -s rr -p 300"),
        format!("-a -t {VIP}:80 -r {}:80 -g", rip(0)),
        format!("-A -t [{VIP6}]:80 -s rr"),
        format!("-a -t [{VIP6}]:80 -r [{r1}]:80 -g"),
        format!("-a -t [{VIP6}]:80 -r [{r2}]:80 -g"),
        format!("-A -t [{VIP6}]:443 -s wlc -p 300 -M 64"),
        format!("-a -t [{VIP6}]:443 -r [{r1}]:443 -g -w 2"),
        "-A -f 7 -6 -s rr -p 60 -M 48".to_string(),
        format!("-a -f 7 -6 -r [{r2}]:0 -g"),
    ] {
        ok(&c, &line);
    }
    let listing = [
        HEADER.to_string(),
        format!("TCP  {VIP}:80 rr persistent 300\n"),
        dest(&format!("{}:80", rip(0)), 1, 0, 0),
        format!("TCP  [{VIP6}]:80 rr\n"),
        dest_fwd(&format!("[{r1}]:80"), "Route", 1),
        dest_fwd(&format!("[{r2}]:80"), "Route", 1),
        format!("TCP  [{VIP6}]:443 wlc persistent 300 mask 64\n"),
        dest_fwd(&format!("[{r1}]:443"), "Route", 2),
        "FWM  7 IPv6 rr persistent 60 mask 48\n".to_string(),
        dest_fwd(&format!("[{r2}]:0"), "Route", 1),
    ]
    .concat();
    assert_eq!(ok(&c, "-L -n"), listing);
    // ipvsadm with no arguments lists the table (ipvsadm.c main: argc == 1).
    let (code, out, err) = ipvsadm(&c, "", None);
    assert_eq!((code, out.as_str()), (0, listing.as_str()), "bare ipvsadm: {err}");
    let save = [
        format!("-A -t {VIP}:80 -s rr -p 300\n"),
        format!("-a -t {VIP}:80 -r {}:80 -g -w 1\n", rip(0)),
        format!("-A -t [{VIP6}]:80 -s rr\n"),
        format!("-a -t [{VIP6}]:80 -r [{r1}]:80 -g -w 1\n"),
        format!("-a -t [{VIP6}]:80 -r [{r2}]:80 -g -w 1\n"),
        format!("-A -t [{VIP6}]:443 -s wlc -p 300 -M 64\n"),
        format!("-a -t [{VIP6}]:443 -r [{r1}]:443 -g -w 2\n"),
        "-A -f 7 -6 -s rr -p 60 -M 48\n".to_string(),
        format!("-a -f 7 -6 -r [{r2}]:0 -g -w 1\n"),
    ]
    .concat();
    assert_eq!(ok(&c, "-S -n"), save);

    // --output json: the services as `xlb --output json list` gives them.
    let out = c.xlb_command(&["--output", "json", "ipvsadm", "-L", "-n"]).output().unwrap();
    assert!(out.status.success());
    let services = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(services.as_array().map(Vec::len), Some(4), "{services}");
    assert_eq!(services[1]["reals"][0]["address"], r1.to_string(), "{services}");

    // -S, -C, -R: the same table back.
    ok(&c, "-C");
    assert_eq!(ok(&c, "-L -n"), HEADER);
    let (code, _, err) = ipvsadm(&c, "-R", Some(&save));
    assert_eq!(code, 0, "-R of its own -S: {err}");
    assert_eq!(ok(&c, "-L -n"), listing);
    assert_eq!(ok(&c, "-S -n"), save);
    // And the restored IPv6 service carries traffic.
    let answers: Vec<String> = (0..4).map(|_| c.curl6("/").expect("curl -6 through the restored VIP").trim().to_string()).collect();
    let mut seen = answers.clone();
    seen.sort();
    seen.dedup();
    assert_eq!(seen, ["rs1", "rs2"], "both IPv6 reals answer: {answers:?}");

    // A connection to the persistent IPv4 service leaves a template: client network,
    // port 0, state NONE (ip_vs_sched_persist's <proto, caddr, 0, vaddr, vport, daddr, dport>).
    assert_eq!(c.curl("/").unwrap().trim(), "rs1");
    let conns = ok(&c, "-L -n -c");
    let template = conns.lines().find(|l| l.contains(" NONE ")).unwrap_or_else(|| panic!("no template line: {conns}"));
    let fields: Vec<&str> = template.split_whitespace().collect();
    assert_eq!((fields[0], fields[2], fields[3], fields[4], fields[5]), ("TCP", "NONE", "10.99.0.10:0", "10.99.0.100:80", "10.99.0.11:80"), "{conns}");
    let persist = ok(&c, "-L -n --persistent-conn");
    assert!(persist.contains(&format!("{:<33} {:<9} {:<11} {:<10} {:<10}\n", "Prot LocalAddress:Port", "Weight", "PersistConn", "ActiveConn", "InActConn")), "{persist}");
    let row = persist.lines().find(|l| l.starts_with("  -> 10.99.0.11:80")).unwrap();
    assert_eq!(row.split_whitespace().take(4).collect::<Vec<_>>(), ["->", "10.99.0.11:80", "1", "1"], "weight 1, one template: {persist}");
}

/// The README's "On a real director" block runs top to bottom as printed (with this
/// test bed's VIP and real for the README's addresses; `[…]` optional parts left out).
#[test]
fn the_readmes_director_block_runs_in_order() {
    use xlb_testkit::testbed::rip;
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let intro = readme.find("other `xlb` commands on the same machine change it").expect("the director section");
    let start = intro + readme[intro..].find("```sh\n").unwrap() + "```sh\n".len();
    let end = start + readme[start..].find("```").unwrap();
    let mut c = cluster(2);
    c.start_balancer().unwrap();
    let mut ran = 0;
    for line in readme[start..end].lines() {
        let command = line.split('#').next().unwrap().trim();
        let Some(rest) = command.strip_prefix("xlb ") else { continue };
        let rest = rest.replace("192.168.1.200", &VIP.to_string()).replace("192.168.1.11", &rip(0).to_string());
        let args: Vec<&str> = rest.split_whitespace().filter(|w| !w.starts_with('[')).collect();
        c.xlb(&args).unwrap_or_else(|e| panic!("README line `{line}` failed: {e:#}"));
        ran += 1;
    }
    assert!(ran >= 15, "the block's commands were found ({ran})");
}

/// Case 02 (kubernetes #73154): the README's `-S -n > rules && -C && -R < rules`, at once
/// and with a 2 s gap, while a long transfer is in progress: it completes intact. The
/// transfer is an upload, paced by the client, so its data crosses the director (DR)
/// for its whole length. Services are created out of address order (8080 first), so the
/// restore adds them in another order than they were made: each keeps its id, its reals
/// theirs.
#[test]
fn save_clear_restore_keeps_a_transfer_going() {
    let mut c = cluster(2);
    c.start_balancer().unwrap();
    for line in [
        "-A -t 10.99.0.100:8080 -s rr",
        "-a -t 10.99.0.100:8080 -r 10.99.0.11:8080 -g",
        "-A -t 10.99.0.100:80 -s rr",
        "-a -t 10.99.0.100:80 -r 10.99.0.11:80 -g",
        "-a -t 10.99.0.100:80 -r 10.99.0.12:80 -g",
    ] {
        ok(&c, line);
    }
    const SIZE: usize = 6_000_000;
    let dir = std::env::temp_dir().join(format!("xlb-restore-{}", xlb_core::netns::run_id()));
    std::fs::create_dir_all(&dir).unwrap();
    let data: Vec<u8> = (0..SIZE as u64).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let file = dir.join("upload");
    std::fs::write(&file, &data).unwrap();
    let want = format!("received {SIZE} bytes, fnv1a {:016x}", xlb_testkit::httpd::fnv1a(&data));
    for gap in [0u64, 2] {
        // About 6 s at 1 MB/s; curl gives up (and fails the test) on a reset.
        let mut curl = c.client.command("curl");
        curl.args(["--silent", "--show-error", "--fail", "--max-time", "60", "--limit-rate", "1M", "-H", "Content-Type: application/octet-stream"])
            .arg("--data-binary")
            .arg(format!("@{}", file.display()))
            .arg(format!("http://{VIP}/upload"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut upload = curl.spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_secs(2));
        assert!(upload.try_wait().unwrap().is_none(), "gap {gap} s: the upload is still in progress");
        let rules = ok(&c, "-S -n");
        ok(&c, "-C");
        std::thread::sleep(std::time::Duration::from_secs(gap));
        let (code, _, err) = ipvsadm(&c, "-R", Some(&rules));
        assert_eq!(code, 0, "{err}");
        let done = upload.wait_with_output().unwrap();
        let answer = String::from_utf8_lossy(&done.stdout);
        assert!(done.status.success(), "gap {gap} s: the upload failed: {}", String::from_utf8_lossy(&done.stderr));
        assert!(answer.contains(&want), "gap {gap} s: the upload arrived whole and intact: {answer}");
        assert_eq!(ok(&c, "-S -n"), rules, "gap {gap} s: the same rules back");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
