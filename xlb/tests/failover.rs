//! The classic LVS active/standby failover, in namespaces: two DR directors under
//! keepalived's VRRP (priorities 150/100), xlb balancing on both (rr, the same reals added
//! in opposite orders), connection sync daemons (master and backup roles on both, started
//! by the notify script). A client's slow download through the VIP is under way through
//! the master when the master dies (its link goes down, keepalived and xlb are killed):
//! the backup becomes MASTER, takes the VIP, and forwards the download's packets to the
//! same real from its synced connection entry, so the download completes intact.
//!
//! The controls prove the test can fail: without sync, and with the backup listening for
//! another syncid, the backup has no entry for the connection, its kernel (which now holds
//! the VIP) answers the client's next ACK with a reset, and the download breaks.
//!
//! Needs root and keepalived (Debian package keepalived); fails, never skips, without.
use std::{
    io::{BufRead, BufReader, ErrorKind, Read, Write},
    net::TcpStream,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use xlb_testkit::{
    httpd,
    testbed::{
        CIP, VIP, rip,
        vrrp::{FailoverCluster, FailoverOptions, wait_until},
    },
};

const XLB: &str = env!("CARGO_BIN_EXE_xlb");

/// The download: 64 MiB at 8 MiB/s, some 8 s without a failover.
const SIZE: usize = 64 << 20;
const RATE: u64 = 8 << 20;
/// The master dies once this much has arrived (about 2 s in).
const KILL_AFTER: u64 = 16 << 20;

fn cluster(sync_ids: Option<[u8; 2]>) -> FailoverCluster {
    assert_eq!(unsafe { libc::geteuid() }, 0, "the failover tests create namespaces and attach XDP: run them as root (cargo xtask test)");
    FailoverCluster::build(Path::new(XLB), FailoverOptions { sync_ids, ..FailoverOptions::default() }).expect("build the VRRP pair")
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("bad JSON ({e}): {text}"))
}

/// How the download ended.
struct Outcome {
    /// The real that answered (X-Real-Server).
    real: String,
    received: usize,
    fnv1a: u64,
    /// None: the whole body arrived and the server closed the connection.
    error: Option<std::io::Error>,
    /// The longest time without a byte, and when it began.
    longest_stall: Duration,
    stall_began: Instant,
    finished: Instant,
}

/// A download under way in its own thread; `progress` counts the body bytes received.
struct Download {
    client_port: u16,
    progress: Arc<AtomicU64>,
    started: Instant,
    thread: JoinHandle<Outcome>,
}

/// `GET /bytes/SIZE?rate=RATE` through the VIP, read as fast as it comes.
fn start_download(c: &FailoverCluster) -> Download {
    let mut stream: TcpStream = c.connect_from_client(80).expect("connect to the VIP");
    // Longer than any stall the failover may cause: a stall is measured, not an error.
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let client_port = stream.local_addr().unwrap().port();
    write!(stream, "GET /bytes/{SIZE}?rate={RATE} HTTP/1.1\r\nHost: {VIP}\r\nConnection: close\r\n\r\n").unwrap();
    let progress = Arc::new(AtomicU64::new(0));
    let counter = progress.clone();
    let started = Instant::now();
    let thread = std::thread::spawn(move || {
        let mut reader = BufReader::with_capacity(256 * 1024, stream);
        let mut real = String::new();
        let mut length = None;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("response headers");
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some(v) = line.strip_prefix("X-Real-Server:") {
                real = v.trim().to_string();
            }
            if let Some(v) = line.strip_prefix("Content-Length:") {
                length = v.trim().parse::<usize>().ok();
            }
        }
        assert_eq!(length, Some(SIZE), "the response's Content-Length");
        let mut buf = vec![0u8; 256 * 1024];
        let (mut received, mut hash) = (0usize, 0xcbf2_9ce4_8422_2325u64);
        let mut last = Instant::now();
        let (mut longest_stall, mut stall_began) = (Duration::ZERO, last);
        let error = loop {
            match reader.read(&mut buf) {
                Ok(0) => break None,
                Ok(n) => {
                    let now = Instant::now();
                    if now - last > longest_stall {
                        (longest_stall, stall_began) = (now - last, last);
                    }
                    last = now;
                    hash = buf[..n].iter().fold(hash, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3));
                    received += n;
                    counter.store(received as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => break Some(e),
            }
        };
        Outcome { real, received, fnv1a: hash, error, longest_stall, stall_began, finished: Instant::now() }
    });
    Download { client_port, progress, started, thread }
}

/// Director `i`'s connection entry for the client's `port`: (real, state), if any.
fn entry(c: &FailoverCluster, i: usize, port: u16) -> Option<(String, String)> {
    let conns = json(&c.directors[i].xlb(&["--output", "json", "conns"]).expect("xlb conns"));
    let client = format!("{CIP}:{port}");
    conns.as_array()?.iter().find(|e| e["client"] == client.as_str()).map(|e| (e["real"].as_str().unwrap_or_default().to_string(), e["state"].as_str().unwrap_or_default().to_string()))
}

fn epoch_secs() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// What a failover did, measured.
struct Failover {
    outcome: Outcome,
    /// Link down on the master → VIP on the backup's NIC.
    takeover: Duration,
    /// Link down on the master → the backup's notify_master wrote MASTER.
    notified: f64,
    down: Instant,
    download_started: Instant,
    /// The backup's `pass_other_host` over the failover: the client's frames for the dead
    /// master's MAC, flooded by the bridge (which forgot that MAC with the master's
    /// port) until the VIP's gratuitous ARP, passed rather than balanced.
    flooded: u64,
}

/// Director `i`'s `pass_other_host` counter.
fn passed_other_host(c: &FailoverCluster, i: usize) -> u64 {
    json(&c.directors[i].xlb(&["--output", "json", "counters"]).unwrap())["pass_other_host"].as_u64().expect("pass_other_host counted")
}

/// Starts the download, checks both directors' entries for it (the backup's as
/// `backup_has_entry` says), kills the master and waits for the backup to take over and
/// the download to end.
fn download_across_failover(c: &mut FailoverCluster, backup_has_entry: bool) -> Failover {
    let master_real = rip(0).to_string(); // the first real of the master's rr order
    let download = start_download(c);
    wait_until("the download to be under way", Duration::from_secs(20), || Ok(download.progress.load(Ordering::Relaxed) >= KILL_AFTER)).unwrap();
    let (real, state) = entry(c, 0, download.client_port).expect("the master's entry for the download");
    assert_eq!((real.as_str(), state.as_str()), (master_real.as_str(), "ESTABLISHED"), "the master's rr picks its first real");
    if backup_has_entry {
        wait_until("the synced entry on the backup", Duration::from_secs(5), || Ok(entry(c, 1, download.client_port).is_some())).unwrap();
        let (real, _) = entry(c, 1, download.client_port).unwrap();
        assert_eq!(real, master_real, "the backup's synced entry names the master's real (its own rr would pick {})", rip(1));
        println!("backup's entry before the failover: {CIP}:{} -> {real}", download.client_port);
    } else {
        // Time enough for sync messages (sent at once, and every few packets) to arrive.
        std::thread::sleep(Duration::from_secs(1));
        assert_eq!(entry(c, 1, download.client_port), None, "the backup must not know the connection");
    }
    assert_eq!(c.directors[1].vrrp_state().map(|s| s.0).as_deref(), Some("BACKUP"));
    assert!(!c.directors[1].holds_vip().unwrap(), "the backup holds no VIP before the failover");

    let flooded_before = passed_other_host(c, 1);
    let down_epoch = epoch_secs();
    let down = c.kill_director(0).expect("kill the master");
    wait_until("the backup to hold the VIP", Duration::from_secs(15), || c.directors[1].holds_vip()).unwrap_or_else(|e| {
        panic!("{e:#}; backup's keepalived log:\n{}", c.directors[1].keepalived_log());
    });
    let takeover = down.elapsed();
    c.wait_for_state(1, "MASTER", Duration::from_secs(5)).expect("the backup's notify_master");
    let notified = c.directors[1].vrrp_state().unwrap().1 - down_epoch;
    let outcome = download.thread.join().expect("download thread");
    let flooded = passed_other_host(c, 1) - flooded_before;
    assert!(flooded > 0, "the client's frames flooded for the dead master's MAC reach the backup, which passes them");
    Failover { outcome, takeover, notified, down, download_started: download.started, flooded }
}

/// The download survives the master's death with VRRP advertisements every
/// `advert_int` seconds.
fn synced_download_survives(advert_int: f64) {
    assert_eq!(unsafe { libc::geteuid() }, 0, "the failover tests create namespaces and attach XDP: run them as root (cargo xtask test)");
    let options = FailoverOptions { advert_int, sync_ids: Some([1, 1]), ..FailoverOptions::default() };
    let mut c = FailoverCluster::build(Path::new(XLB), options).expect("build the VRRP pair");
    let f = download_across_failover(&mut c, true);
    let o = &f.outcome;
    assert!(o.error.is_none(), "the download broke after {} of {SIZE} bytes: {:?}", o.received, o.error);
    assert_eq!(o.real, c.reals[0].name, "X-Real-Server: the master's real answered");
    assert_eq!(o.received, SIZE, "the whole body arrived");
    assert_eq!(o.fnv1a, httpd::fnv1a(&httpd::body_of(SIZE)), "the body is intact");
    // The stall is the failover's: it began at most a moment before the master died.
    assert!(o.stall_began + Duration::from_millis(500) >= f.down, "the longest stall began {:?} before the master died", f.down - o.stall_began);
    println!(
        "failover with sync, advert_int {advert_int}: VRRP takeover {:.2} s (master's link down -> VIP on the backup), \
         notify_master after {:.2} s; client stall {:.2} s (from {:.2} s after the death); {} MiB in {:.1} s, intact (fnv1a {:016x}); \
         {} frames flooded for the master's MAC passed by the backup",
        f.takeover.as_secs_f64(),
        f.notified,
        o.longest_stall.as_secs_f64(),
        o.stall_began.saturating_duration_since(f.down).as_secs_f64(),
        SIZE >> 20,
        (o.finished - f.download_started).as_secs_f64(),
        o.fnv1a,
        f.flooded
    );
}

#[test]
fn synced_download_survives_the_masters_death() {
    // The classic setting: VRRPv2, one advertisement a second.
    synced_download_survives(1.0);
}

#[test]
fn synced_download_survives_with_sub_second_adverts() {
    // VRRPv3 (RFC 5798) counts in centiseconds: 0.3 s, the master declared dead after
    // 3 × 0.3 s + skew (0.18 s for priority 100).
    synced_download_survives(0.3);
}

/// The control: the same failover, the backup without the connection's entry.
fn download_breaks(sync_ids: Option<[u8; 2]>, what: &str) {
    let mut c = cluster(sync_ids);
    if sync_ids.is_none() {
        assert_eq!(c.directors[1].sync_daemons().unwrap().trim(), "", "no sync daemon runs");
    }
    let f = download_across_failover(&mut c, false);
    let o = &f.outcome;
    let error = o.error.as_ref().unwrap_or_else(|| panic!("{what}: the download must break on failover, yet all {} bytes arrived", o.received));
    assert_eq!(error.kind(), ErrorKind::ConnectionReset, "{what}: the backup's kernel resets the connection: {error}");
    assert!(o.received < SIZE, "{what}: {} bytes", o.received);
    println!(
        "failover {what}: VRRP takeover {:.2} s, notify_master after {:.2} s; the download was reset {:.2} s after the master's death, \
         after {} of {SIZE} bytes; {} frames flooded for the master's MAC passed by the backup",
        f.takeover.as_secs_f64(),
        f.notified,
        o.finished.saturating_duration_since(f.down).as_secs_f64(),
        o.received,
        f.flooded
    );
}

#[test]
fn download_breaks_on_failover_without_sync() {
    download_breaks(None, "without sync");
}

#[test]
fn download_breaks_on_failover_with_another_syncid() {
    // The master sends syncid 1, the backup takes only syncid 2 (IPVS: a backup with a
    // syncid other than 0 ignores messages of any other).
    download_breaks(Some([1, 2]), "with the backup on another syncid");
}
