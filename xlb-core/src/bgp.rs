//! VIP announcement by BGP through BIRD 2: the daemon writes the VIPs that have quorum
//! as static routes into a file BIRD includes, and asks BIRD to read its configuration
//! again. BIRD speaks BGP (and BFD) to the routers; xlb has no BGP speaker of its own.
//!
//! The file (`--bird-vips`, `[bgp] bird_vips`) holds one line per announced VIP, sorted:
//!
//! ```text
//! route 10.0.0.100/32 blackhole;
//! route 2001:db8::100/128 blackhole;
//! ```
//!
//! and is meant for a `protocol static` block (`include` must stand on a line of its
//! own: BIRD's lexer takes it only there):
//!
//! ```text
//! protocol static xlb_vips {
//!   ipv4;
//!   include "/run/bird/xlb-vips.con[f]";
//! }
//! ```
//!
//! A static protocol takes routes of its channel's family only (BIRD refuses the rest:
//! "Route … incompatible with channel type"), so a director with IPv4 and IPv6 VIPs
//! gives `--bird-vips6 FILE6`: the IPv6 routes go there, for a second, `ipv6` static
//! protocol. Without it every VIP goes to the one file.
//!
//! `blackhole` only gives the static route a destination BIRD accepts; the route is
//! exported to BGP peers (with next hop self), never to the director's kernel (the
//! shipped packaging/bird/xlb-director.conf has no kernel export of it).
//!
//! Semantics: a VIP is announced while one of its services has at least `quorum` reals
//! that take new connections ([`crate::model::Model::vips_with_quorum`]). The daemon's
//! state owner evaluates that after every change of the model and every health event;
//! the file is rewritten and BIRD reconfigured only when the set changes, by a task of
//! its own ([`Announcer`]): the state owner never waits for BIRD. A failed attempt
//! (BIRD not running, its configuration refused) is logged, counted and shown by
//! `xlb status`, and tried again at the next change and every [`RETRY`].
//!
//! `xlb stop` and `xlb run`'s Ctrl-C withdraw everything (an empty file, reconfigured)
//! since the fast path is detached; SIGTERM of `xlb daemon` leaves the announcement in
//! place since the fast path runs on from its pins, and the next daemon writes the same
//! set again (BIRD sees no change: no flap). A director that dies loses its BGP session
//! and the routers withdraw its routes themselves (at once with BFD).
use std::{
    collections::BTreeSet,
    fs,
    io::Write,
    net::IpAddr,
    os::unix::fs::{DirBuilderExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::UnixStream,
    sync::watch,
};

/// BIRD's control socket as Debian's bird2 package runs it (`birdc`'s default).
pub const DEFAULT_BIRD_SOCKET: &str = "/run/bird/bird.ctl";
/// How often a failed write or reconfiguration is tried again while nothing changes.
pub const RETRY: Duration = Duration::from_secs(10);
/// The longest BIRD may take to answer one `configure` (connect, greeting, reply).
pub const BIRD_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and when to announce, as `xlb daemon` runs with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BgpOptions {
    /// The BIRD include file xlb writes (`route VIP/32 blackhole;` lines).
    pub bird_vips: PathBuf,
    /// If set, the IPv6 VIPs go here instead of `bird_vips`.
    pub bird_vips6: Option<PathBuf>,
    /// BIRD's control socket.
    pub bird_socket: PathBuf,
    /// Reals able to take new connections a service needs for its VIPs to be announced
    /// (at least 1).
    pub quorum: u32,
}

/// What `xlb status`, the metrics and the status page show of the announcement.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BgpStatus {
    pub bird_vips: PathBuf,
    #[serde(default)]
    pub bird_vips6: Option<PathBuf>,
    pub bird_socket: PathBuf,
    pub quorum: u32,
    /// The VIPs with quorum now (what the file is to hold).
    pub wanted: Vec<IpAddr>,
    /// The VIPs the file holds and BIRD accepted at the last successful reconfiguration
    /// (None: none succeeded yet).
    pub announced: Option<Vec<IpAddr>>,
    /// `wanted` is written and BIRD took it.
    pub in_sync: bool,
    /// BIRD's last reply to `configure` ("0003 Reconfigured"), or why it could not be
    /// asked.
    pub last_reply: String,
    /// The last failure (empty once an attempt succeeds).
    pub last_error: String,
    /// Seconds since the Unix epoch of the last successful reconfiguration.
    pub last_success_unix: Option<u64>,
    /// Successful reconfigurations and failed attempts since the daemon started.
    pub reconfigurations: u64,
    pub failures: u64,
}

impl BgpStatus {
    /// `xlb status`'s lines.
    pub fn text(&self) -> String {
        let list = |v: &[IpAddr]| if v.is_empty() { "none".to_string() } else { join(v) };
        let mut out = format!("bgp file {}", self.bird_vips.display());
        if let Some(f6) = &self.bird_vips6 {
            out += &format!(" (IPv6: {})", f6.display());
        }
        out += &format!("\nbgp bird socket {}, quorum {}\n", self.bird_socket.display(), self.quorum);
        out += &format!("bgp announced {}\n", self.announced.as_deref().map_or("unknown (BIRD not reconfigured yet)".into(), list));
        if !self.in_sync {
            out += &format!("bgp wanted {} (not yet in BIRD)\n", list(&self.wanted));
        }
        out += &format!("bgp last BIRD reply {}\n", if self.last_reply.is_empty() { "-" } else { &self.last_reply });
        if !self.last_error.is_empty() {
            out += &format!("bgp last error {} ({} failure(s))\n", self.last_error, self.failures);
        }
        out
    }
}

fn join(v: &[IpAddr]) -> String {
    v.iter().map(IpAddr::to_string).collect::<Vec<_>>().join(", ")
}

/// The include file's text for `vips`: one `route VIP/32 blackhole;` (IPv6: `/128`)
/// line each, in the set's order (sorted); nothing for an empty set.
pub fn route_lines<'a>(vips: impl IntoIterator<Item = &'a IpAddr>) -> String {
    vips.into_iter()
        .map(|vip| match vip {
            IpAddr::V4(a) => format!("route {a}/32 blackhole;\n"),
            IpAddr::V6(a) => format!("route {a}/128 blackhole;\n"),
        })
        .collect()
}

/// The files' contents for `vips`: (path, text) each.
pub fn files_for(opts: &BgpOptions, vips: &BTreeSet<IpAddr>) -> Vec<(PathBuf, String)> {
    match &opts.bird_vips6 {
        None => vec![(opts.bird_vips.clone(), route_lines(vips))],
        Some(f6) => vec![
            (opts.bird_vips.clone(), route_lines(vips.iter().filter(|v| v.is_ipv4()))),
            (f6.clone(), route_lines(vips.iter().filter(|v| v.is_ipv6()))),
        ],
    }
}

/// Writes `text` at `path` so that BIRD reads either the old or the new file (write,
/// fsync, rename), readable by all (0644: Debian's BIRD runs as user bird). A missing
/// directory is created 0755; an existing one keeps its mode.
pub fn write_file(path: &Path, text: &str) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::DirBuilder::new().recursive(true).mode(0o755).create(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = path.file_name().with_context(|| format!("{} names no file", path.display()))?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    let mut f = fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    f.set_permissions(fs::Permissions::from_mode(0o644))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// One reply of BIRD's control socket: the code of its last line and every line's
/// text, as birdc prints them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BirdReply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl BirdReply {
    /// The last line with its code, as "0003 Reconfigured".
    pub fn summary(&self) -> String {
        format!("{:04} {}", self.code, self.lines.last().map_or("", String::as_str))
    }
}

/// Reads one reply from BIRD's control socket. BIRD's CLI protocol (BIRD's
/// doc/reply_codes, sysdep/unix/main.c): every line is a 4-digit code then `-` (more
/// lines follow) or a space (the reply's last line), or a space alone (a continuation
/// of the previous line's code); `+` lines are spontaneous printouts, skipped.
async fn read_reply<R: tokio::io::AsyncBufRead + Unpin>(lines: &mut tokio::io::Lines<R>) -> Result<BirdReply> {
    let mut texts = Vec::new();
    loop {
        let Some(line) = lines.next_line().await? else { bail!("BIRD closed the control connection mid-reply") };
        if line.starts_with('+') {
            continue;
        }
        if let Some(rest) = line.strip_prefix(' ') {
            texts.push(rest.to_string());
            continue;
        }
        let (code, sep, text) = match (line.get(..4).map(str::parse::<u16>), line.as_bytes().get(4)) {
            (Some(Ok(code)), Some(&sep)) => (code, sep, line[5..].to_string()),
            (Some(Ok(code)), None) => (code, b' ', String::new()),
            _ => bail!("BIRD's control socket sent a line that is not a reply: {line:?}"),
        };
        texts.push(text);
        if sep != b'-' {
            return Ok(BirdReply { code, lines: texts });
        }
    }
}

/// Whether a reply to `configure` means BIRD took the new configuration: 0003
/// Reconfigured, 0004 Reconfiguration in progress, 0005 queued behind one in progress,
/// 0017 the queued one dropped (the running one is being replaced by the same file),
/// 0018 Reconfiguration confirmed. 0006 (shutting down), 8xxx (run-time errors: 8002 a
/// configuration file error) and 9xxx (parse errors) are refusals.
pub fn configure_succeeded(code: u16) -> bool {
    matches!(code, 3 | 4 | 5 | 17 | 18)
}

/// Asks the BIRD behind `socket` to read its configuration again, as `birdc -s SOCKET
/// configure` does; returns its reply. Fails if BIRD is not there, does not answer
/// within [`BIRD_TIMEOUT`] or refuses the configuration (the error holds its reply).
///
/// The control-socket protocol is spoken here rather than running birdc: no process to
/// spawn and reap per change, a timeout of our own, and BIRD's numbered reply read as
/// BIRD sent it instead of scraping birdc's exit status (birdc exits 0 even when BIRD
/// refuses the configuration) and output.
pub async fn configure(socket: &Path) -> Result<BirdReply> {
    let talk = async {
        let stream = UnixStream::connect(socket)
            .await
            .with_context(|| format!("connecting to BIRD's control socket {} (is BIRD running?)", socket.display()))?;
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        let hello = read_reply(&mut lines).await.context("reading BIRD's greeting")?;
        if hello.code != 1 {
            bail!("BIRD greeted with {} instead of 0001", hello.summary());
        }
        write.write_all(b"configure\n").await?;
        let reply = read_reply(&mut lines).await.context("reading BIRD's reply to configure")?;
        if !configure_succeeded(reply.code) {
            bail!("BIRD refused the configuration: {}", reply.lines.join(" / ").trim().to_string() + &format!(" ({:04})", reply.code));
        }
        Ok(reply)
    };
    match tokio::time::timeout(BIRD_TIMEOUT, talk).await {
        Ok(result) => result,
        Err(_) => bail!("BIRD did not answer configure on {} within {} s", socket.display(), BIRD_TIMEOUT.as_secs()),
    }
}

/// Writes the files for `vips` and reconfigures BIRD.
async fn publish(opts: &BgpOptions, vips: &BTreeSet<IpAddr>) -> Result<BirdReply> {
    for (path, text) in files_for(opts, vips) {
        write_file(&path, &text)?;
    }
    configure(&opts.bird_socket).await
}

/// Where a daemon announcing through BIRD leaves its [`BgpOptions`] while it runs and
/// after a SIGTERM (the announcement outlives it with the fast path), for `xlb stop`
/// without a daemon: /run/xlb/NAME.bgp.json beside the API socket.
pub fn record_path(paths: &crate::api::Paths) -> PathBuf {
    paths.socket.with_extension("bgp.json")
}

/// Notes `opts` for [`withdraw_recorded`] (None: this daemon announces nothing; an old
/// note goes).
pub fn record(paths: &crate::api::Paths, opts: Option<&BgpOptions>) -> Result<()> {
    let path = record_path(paths);
    match opts {
        Some(o) => crate::daemon::write_atomically(&path, &serde_json::to_string(o)?),
        None => match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).with_context(|| format!("removing {}", path.display())),
            _ => Ok(()),
        },
    }
}

/// `xlb stop` with no daemon: withdraws what the last daemon announced (an empty file,
/// BIRD reconfigured), as the daemon's own stop does. None if it announced nothing;
/// else what was done, or why not (the files are emptied even when BIRD does not
/// answer: it reads them at its next start or reconfiguration).
pub fn withdraw_recorded(paths: &crate::api::Paths) -> Result<Option<String>> {
    let path = record_path(paths);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let opts: BgpOptions = serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let result = runtime.block_on(publish(&opts, &BTreeSet::new()));
    let _ = fs::remove_file(&path);
    Ok(Some(match result {
        Ok(reply) => format!("withdrew every VIP from BIRD: emptied {} ({})", opts.bird_vips.display(), reply.summary()),
        Err(e) => format!("warning: withdrawing the VIPs from BIRD: {e:#}"),
    }))
}

/// Keeps BIRD's include file at the set of VIPs the state owner hands it, from a task
/// of its own (the state owner only sends; sets sent while an attempt runs are merged:
/// the latest is written next).
pub struct Announcer {
    opts: BgpOptions,
    wanted: watch::Sender<BTreeSet<IpAddr>>,
    status: Arc<Mutex<BgpStatus>>,
    task: tokio::task::JoinHandle<()>,
}

impl Announcer {
    /// Starts the task; it writes `initial` at once (a restarted daemon writes what
    /// the previous one left: BIRD sees no change).
    pub fn start(opts: BgpOptions, initial: BTreeSet<IpAddr>) -> Self {
        let status = Arc::new(Mutex::new(BgpStatus {
            bird_vips: opts.bird_vips.clone(),
            bird_vips6: opts.bird_vips6.clone(),
            bird_socket: opts.bird_socket.clone(),
            quorum: opts.quorum,
            wanted: initial.iter().copied().collect(),
            ..Default::default()
        }));
        let (wanted, rx) = watch::channel(initial);
        let task = tokio::spawn(keep_in_sync(opts.clone(), rx, status.clone()));
        Self { opts, wanted, status, task }
    }

    /// Hands over the VIPs that have quorum now; nothing happens if they are the ones
    /// handed last.
    ///
    /// The status is updated before the task hears of the change, and neither side
    /// holds one lock while taking the other: the task's `in_sync` compares what it
    /// published with the status's `wanted`.
    pub fn set(&self, vips: BTreeSet<IpAddr>) {
        let list: Vec<IpAddr> = vips.iter().copied().collect();
        {
            let mut s = self.status.lock().expect("not poisoned");
            if s.wanted == list {
                return;
            }
            s.wanted = list.clone();
            s.in_sync = false;
        }
        tracing::info!("bgp: VIPs with quorum now: {}", if list.is_empty() { "none".into() } else { join(&list) });
        self.wanted.send_replace(vips);
    }

    pub fn status(&self) -> BgpStatus {
        self.status.lock().expect("not poisoned").clone()
    }

    /// Withdraws every VIP (an empty file, BIRD reconfigured) and ends the task: the
    /// fast path is being detached. Waits at most [`BIRD_TIMEOUT`].
    pub async fn withdraw(mut self) -> Result<()> {
        self.task.abort();
        let _ = (&mut self.task).await;
        let reply = publish(&self.opts, &BTreeSet::new()).await?;
        tracing::info!("bgp: every VIP withdrawn ({})", reply.summary());
        Ok(())
    }
}

impl Drop for Announcer {
    /// Ends the task and leaves the file as it is (SIGTERM of `xlb daemon`: the fast
    /// path runs on, so do the announcements).
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn keep_in_sync(opts: BgpOptions, mut wanted: watch::Receiver<BTreeSet<IpAddr>>, status: Arc<Mutex<BgpStatus>>) {
    let mut retry = tokio::time::interval(RETRY);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pending = true;
    loop {
        if pending {
            let vips = wanted.borrow_and_update().clone();
            let result = publish(&opts, &vips).await;
            let mut s = status.lock().expect("not poisoned");
            match result {
                Ok(reply) => {
                    pending = false;
                    s.announced = Some(vips.iter().copied().collect());
                    s.last_reply = reply.summary();
                    s.last_error.clear();
                    s.reconfigurations += 1;
                    s.last_success_unix = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).ok().map(|d| d.as_secs());
                    tracing::info!("bgp: {} VIP(s) in {}; BIRD: {}", vips.len(), opts.bird_vips.display(), s.last_reply);
                }
                Err(e) => {
                    s.failures += 1;
                    s.last_error = format!("{e:#}");
                    s.last_reply = s.last_error.clone();
                    tracing::warn!(
                        "bgp: announcing {} VIP(s) through BIRD failed, tried again at the next change and every {} s: {e:#}",
                        vips.len(),
                        RETRY.as_secs()
                    );
                }
            }
            s.in_sync = !pending && s.announced.as_ref() == Some(&s.wanted);
            drop(s);
            retry.reset();
        }
        tokio::select! {
            changed = wanted.changed() => match changed {
                Ok(()) => pending = true,
                Err(_) => return,
            },
            _ = retry.tick(), if pending => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_lines_are_sorted_with_host_prefixes() {
        let vips: BTreeSet<IpAddr> = ["2001:db8::100", "10.0.0.101", "10.0.0.100"].iter().map(|s| s.parse().unwrap()).collect();
        assert_eq!(
            route_lines(&vips),
            "route 10.0.0.100/32 blackhole;\nroute 10.0.0.101/32 blackhole;\nroute 2001:db8::100/128 blackhole;\n"
        );
        assert_eq!(route_lines(&BTreeSet::new()), "");
        // Written whole, readable by BIRD's user, in a directory made for it.
        let dir = TempDir::new();
        let file = dir.0.join("sub/bird-vips.conf");
        write_file(&file, &route_lines(&vips)).unwrap();
        assert_eq!(fs::read_to_string(&file).unwrap(), route_lines(&vips));
        assert_eq!(fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o644);
        write_file(&file, "").unwrap();
        assert_eq!(fs::read_to_string(&file).unwrap(), "");
        assert_eq!(fs::read_dir(dir.0.join("sub")).unwrap().count(), 1, "no temporary file left");
        let mut opts = BgpOptions {
            bird_vips: "/run/xlb/v4.conf".into(),
            bird_vips6: Some("/run/xlb/v6.conf".into()),
            bird_socket: DEFAULT_BIRD_SOCKET.into(),
            quorum: 1,
        };
        let files = files_for(&opts, &vips);
        assert_eq!(files[0].1, "route 10.0.0.100/32 blackhole;\nroute 10.0.0.101/32 blackhole;\n");
        assert_eq!(files[1].1, "route 2001:db8::100/128 blackhole;\n");
        opts.bird_vips6 = None;
        assert_eq!(files_for(&opts, &vips).len(), 1);
    }

    /// A directory of this test's own, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("xlb-bgp-test-{}-{n}", std::process::id()));
            fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    async fn serve_once(script: &'static str) -> (TempDir, PathBuf, tokio::task::JoinHandle<String>) {
        let dir = TempDir::new();
        let path = dir.0.join("bird.ctl");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let task = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (read, mut write) = stream.into_split();
            write.write_all(b"0001 BIRD 2.0.12 ready.\n").await.unwrap();
            let mut line = String::new();
            BufReader::new(read).read_line(&mut line).await.unwrap();
            write.write_all(script.as_bytes()).await.unwrap();
            line
        });
        (dir, path, task)
    }

    /// A BIRD that answers every `configure` with 0003, counting them.
    fn fake_bird(path: &Path) -> (Arc<std::sync::atomic::AtomicU32>, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::UnixListener::bind(path).unwrap();
        let count = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counted = count.clone();
        let task = tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (read, mut write) = stream.into_split();
                write.write_all(b"0001 BIRD 2.0.12 ready.\n").await.unwrap();
                let mut line = String::new();
                BufReader::new(read).read_line(&mut line).await.unwrap();
                assert_eq!(line, "configure\n");
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                write.write_all(b"0002-Reading configuration from bird.conf\n0003 Reconfigured\n").await.unwrap();
            }
        });
        (count, task)
    }

    async fn wait_for(announcer: &Announcer, what: &str, done: impl Fn(&BgpStatus) -> bool) -> BgpStatus {
        for _ in 0..500 {
            let s = announcer.status();
            if done(&s) {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{what}: {:?}", announcer.status());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_announcer_retries_at_the_next_change_and_withdraws() {
        let dir = TempDir::new();
        let opts = BgpOptions {
            bird_vips: dir.0.join("vips.conf"),
            bird_vips6: None,
            bird_socket: dir.0.join("bird.ctl"),
            quorum: 1,
        };
        let one: BTreeSet<IpAddr> = ["10.0.0.100".parse().unwrap()].into();
        // No BIRD yet: the file is written, the failure counted and shown.
        let announcer = Announcer::start(opts.clone(), one.clone());
        let s = wait_for(&announcer, "a failure", |s| s.failures == 1).await;
        assert!(!s.in_sync && s.announced.is_none() && s.last_error.contains("is BIRD running?"), "{s:?}");
        assert_eq!(fs::read_to_string(&opts.bird_vips).unwrap(), "route 10.0.0.100/32 blackhole;\n");
        // BIRD comes; the next change is tried at once (not after RETRY).
        let (configures, _bird) = fake_bird(&opts.bird_socket);
        let two: BTreeSet<IpAddr> = ["10.0.0.100".parse().unwrap(), "10.0.0.101".parse().unwrap()].into();
        announcer.set(two.clone());
        let s = wait_for(&announcer, "in sync", |s| s.in_sync).await;
        assert_eq!((s.announced.as_deref(), s.last_reply.as_str(), s.last_error.as_str()), (Some(&two.iter().copied().collect::<Vec<_>>()[..]), "0003 Reconfigured", ""));
        assert_eq!(fs::read_to_string(&opts.bird_vips).unwrap(), route_lines(&two));
        // The same set again: BIRD is not asked again.
        announcer.set(two.clone());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(configures.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(s.text().contains("bgp announced 10.0.0.100, 10.0.0.101\n"), "{}", s.text());
        // Withdrawn: an empty file, BIRD asked once more.
        announcer.withdraw().await.unwrap();
        assert_eq!(fs::read_to_string(&opts.bird_vips).unwrap(), "");
        assert_eq!(configures.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn configure_speaks_birds_control_protocol() {
        let (_dir, path, task) = serve_once("0002-Reading configuration from /etc/bird/bird.conf\n0003 Reconfigured\n").await;
        let reply = configure(&path).await.unwrap();
        assert_eq!(task.await.unwrap(), "configure\n");
        assert_eq!(reply.summary(), "0003 Reconfigured");

        let (_dir, path, _task) = serve_once(
            "0002-Reading configuration from bird.conf\n8002 bird.conf:5:1 Route 2001:db8::1/128 incompatible with channel type\n",
        )
        .await;
        let e = format!("{:#}", configure(&path).await.unwrap_err());
        assert!(e.contains("refused") && e.contains("incompatible with channel type") && e.contains("8002"), "{e}");

        let (_dir, path, _task) = serve_once("0004 Reconfiguration in progress\n").await;
        assert_eq!(configure(&path).await.unwrap().code, 4);

        let dir = TempDir::new();
        let e = format!("{:#}", configure(&dir.0.join("none.ctl")).await.unwrap_err());
        assert!(e.contains("is BIRD running?"), "{e}");
    }
}
