//! The xlb daemon: owns the fast path's pinned maps and links and the desired state,
//! serves the local API, keeps MACs current, expires idle connections, measures rates.
//!
//! Restart safety: maps and XDP links are pinned in bpffs. A daemon that starts and finds
//! them adopts them — its freshly loaded program takes over each pinned link atomically
//! and works on the same maps — so a restart, an upgrade or a kill -9 neither detaches
//! the fast path nor forgets a connection. Only `xlb stop` (or `xlb run`'s Ctrl-C)
//! detaches and removes the pins. The desired state is saved (write, fsync, rename)
//! after every change and restored at start.
use std::{
    collections::HashMap,
    fs,
    io::Write,
    os::unix::{
        fs::PermissionsExt,
        net::{UnixListener, UnixStream},
    },
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use aya::Ebpf;
use lb_common::{RealStats, map_names, tcp};

use crate::{
    api::{self, Paths, Reply, Request, Response, SettingsChange, SettingsView, StatusView},
    config::{self, Config},
    loader::{self, AttachMode},
    maps::{self, Maps},
    observe, ops, reconcile, run, web,
};

const TICK: Duration = Duration::from_secs(2);

pub struct DaemonOptions {
    pub ifaces: Vec<String>,
    pub mode: AttachMode,
    /// Config file: applied at start when there is no saved state, and on reload.
    pub config: Option<PathBuf>,
    pub paths: Paths,
    /// Detach and remove the pins when the process is asked to stop (`xlb run`);
    /// otherwise a SIGTERM/SIGINT leaves the fast path running for the next daemon.
    pub detach_on_exit: bool,
    /// Metrics endpoint and status page (none by default).
    pub web: web::WebOptions,
}

/// Per-real rates over the last sampling interval.
#[derive(Default)]
struct Rates {
    last: HashMap<u32, RealStats>,
    last_at: Option<Instant>,
    per_real: HashMap<u32, (u64, u64, u64)>,
}

impl Rates {
    fn sample(&mut self, maps: &Maps) -> Result<()> {
        let now = Instant::now();
        let secs = self.last_at.map(|t| now.duration_since(t).as_secs_f64());
        let mut current = HashMap::new();
        for svc in ops::snapshot(maps)? {
            for r in svc.reals {
                let s = RealStats { packets: r.packets, bytes: r.bytes, conns: r.conns };
                if let (Some(secs), Some(prev)) = (secs, self.last.get(&r.id)) {
                    let per_sec = |now: u64, before: u64| (now.saturating_sub(before) as f64 / secs).round() as u64;
                    self.per_real
                        .insert(r.id, (per_sec(s.conns, prev.conns), per_sec(s.packets, prev.packets), per_sec(s.bytes, prev.bytes)));
                }
                current.insert(r.id, s);
            }
        }
        self.last = current;
        self.last_at = Some(now);
        Ok(())
    }

    fn fill(&self, services: &mut [ops::ServiceView]) {
        for r in services.iter_mut().flat_map(|s| s.reals.iter_mut()) {
            if let Some(&(cps, pps, bps)) = self.per_real.get(&r.id) {
                (r.cps, r.in_pps, r.in_bps) = (cps, pps, bps);
            }
        }
    }

    fn reset(&mut self) {
        *self = Rates::default();
    }
}

struct Engine {
    maps: Maps,
    ebpf: Ebpf,
    rates: Rates,
    opts_ifaces: Vec<String>,
    paths: Paths,
    config: Option<PathBuf>,
    /// Set by `Stop`: detach and unpin on the way out.
    stop_and_detach: bool,
}

static RELOAD: AtomicBool = AtomicBool::new(false);

extern "C" fn on_hup(_: libc::c_int) {
    RELOAD.store(true, Ordering::SeqCst);
}

fn link_pin(pin_dir: &Path, iface: &str) -> PathBuf {
    pin_dir.join(format!("link-{iface}"))
}

/// Saves `text` at `path` so that a crash leaves either the old or the new file.
pub fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let dir = path.parent().context("state file has no directory")?;
    fs::create_dir_all(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    fs::File::open(dir)?.sync_all()?;
    Ok(())
}

impl Engine {
    fn save_state(&self) -> Result<()> {
        let text = config::to_toml(&reconcile::current(&self.maps)?);
        write_atomically(&self.paths.state, &format!("# xlb's saved state: rewritten on every change\n{text}"))
    }

    fn handle(&mut self, req: Request) -> Result<Reply> {
        let mutating = !matches!(
            req,
            Request::List | Request::Conns | Request::Counters | Request::Settings | Request::Status | Request::Stop
        );
        let reply = match req {
            Request::Batch { requests } => {
                let before = reconcile::current(&self.maps)?;
                for (i, r) in requests.into_iter().enumerate() {
                    if let Err(e) = self.apply_one(r) {
                        reconcile::apply(&mut self.maps, &before)
                            .context("restoring the state before the failed batch")?;
                        return Err(e.context(api::BatchFailure { index: i }));
                    }
                }
                Reply::Done
            }
            other => self.apply_one(other)?,
        };
        if mutating {
            self.save_state()?;
        }
        Ok(reply)
    }

    fn apply_one(&mut self, req: Request) -> Result<Reply> {
        let maps = &mut self.maps;
        match req {
            Request::AddService { service, options } => ops::add_service(maps, service, options)?,
            Request::EditService { service, options } => ops::edit_service(maps, service, options)?,
            Request::DelService { service } => ops::remove_service(maps, service)?,
            Request::AddFrontends { mark, frontends } => ops::add_frontends(maps, mark, &frontends)?,
            Request::DelFrontends { mark, frontends } => ops::remove_frontends(maps, mark, &frontends)?,
            Request::AddReal { service, address, options } => {
                run::add_real_resolving(maps, service, address, options)?;
            }
            Request::EditReal { service, address, options } => ops::edit_real(maps, service, address, options)?,
            Request::DelReal { service, address } => ops::remove_real(maps, service, address)?,
            Request::Batch { .. } => bail!("batches do not nest"),
            Request::Clear => {
                let settings = Some(ops::settings(maps)?);
                return Ok(Reply::Changes(reconcile::apply(maps, &Config { settings, services: Vec::new() })?));
            }
            Request::Zero { service } => {
                ops::zero(maps, service)?;
                self.rates.reset();
            }
            Request::SetSettings { change } => {
                let mut s = ops::settings(maps)?;
                apply_settings_change(&mut s, change);
                ops::set_settings(maps, s)?;
            }
            Request::Apply { config, origin } => {
                let cfg = config::parse(&config).with_context(|| format!("in {origin}"))?;
                return Ok(Reply::Changes(reconcile::apply(maps, &cfg)?));
            }
            Request::Reload => {
                let Some(path) = &self.config else {
                    bail!("xlb was started without --config: there is no file to reload (use `xlb apply FILE`)")
                };
                return Ok(Reply::Changes(reconcile::apply(maps, &config::load(path)?)?));
            }
            Request::List => {
                let mut services = ops::snapshot(maps)?;
                self.rates.fill(&mut services);
                return Ok(Reply::Services(services));
            }
            Request::Conns => return Ok(Reply::Conns(ops::connections(maps)?)),
            Request::Counters => {
                return Ok(Reply::Counters(ops::counters(maps)?.into_iter().map(|(k, v)| (k.to_string(), v)).collect()));
            }
            Request::Settings => return Ok(Reply::Settings(settings_view(&ops::settings(maps)?))),
            Request::Status => {
                return Ok(Reply::Status(StatusView {
                    pid: std::process::id(),
                    interfaces: self.opts_ifaces.clone(),
                    pin_dir: self.paths.pin_dir.clone(),
                    state_file: self.paths.state.clone(),
                    config_file: self.config.clone(),
                    services: ops::snapshot(maps)?.len(),
                    connections: maps.conns.iter().count(),
                }));
            }
            Request::Stop => self.stop_and_detach = true,
        }
        Ok(Reply::Done)
    }

    fn periodic(&mut self) {
        if let Err(e) = run::refresh_neighbours(&mut self.maps) {
            tracing::warn!("refreshing real servers' MACs: {e:#}");
        }
        let Self { maps, ebpf, .. } = self;
        match ops::sweep(maps, &mut |flow| loader::expire_flow(ebpf, flow)) {
            Ok(r) if r.reals_freed > 0 => tracing::info!("freed {} removed real server(s) with no connection left", r.reals_freed),
            Ok(_) => {}
            Err(e) => tracing::warn!("expiring idle connections: {e:#}"),
        }
        if let Err(e) = self.rates.sample(&self.maps) {
            tracing::warn!("sampling rates: {e:#}");
        }
    }
}

pub fn apply_settings_change(s: &mut lb_common::Settings, c: SettingsChange) {
    // As ipvsadm --set: 0 leaves a timeout unchanged.
    if let Some(t) = c.tcp.filter(|&t| t > 0) {
        s.tcp_timeouts[tcp::ESTABLISHED as usize] = t;
    }
    if let Some(t) = c.tcpfin.filter(|&t| t > 0) {
        s.tcp_timeouts[tcp::FIN_WAIT as usize] = t;
    }
    if let Some(t) = c.udp.filter(|&t| t > 0) {
        s.udp_timeout = t;
    }
    if let Some(on) = c.expire_nodest_conn {
        s.expire_nodest_conn = on as u32;
    }
    if let Some(on) = c.sloppy_tcp {
        s.sloppy_tcp = on as u32;
    }
}

pub fn settings_view(s: &lb_common::Settings) -> SettingsView {
    SettingsView {
        tcp: s.tcp_timeouts[tcp::ESTABLISHED as usize],
        tcpfin: s.tcp_timeouts[tcp::FIN_WAIT as usize],
        udp: s.udp_timeout,
        expire_nodest_conn: s.expire_nodest_conn != 0,
        sloppy_tcp: s.sloppy_tcp != 0,
    }
}

/// What the metrics and the status page read: the engine, under its lock.
struct EngineView {
    engine: Arc<Mutex<Engine>>,
    interfaces: Vec<observe::Interface>,
}

impl web::Source for EngineView {
    fn services(&self) -> Result<Vec<ops::ServiceView>> {
        ops::snapshot(&self.engine.lock().expect("engine lock").maps)
    }

    fn snapshot(&self) -> Result<observe::Snapshot> {
        let e = self.engine.lock().expect("engine lock");
        Ok(observe::Snapshot {
            interfaces: self.interfaces.clone(),
            services: ops::snapshot(&e.maps)?,
            counters: ops::counters(&e.maps)?,
            conntrack_entries: e.maps.conns.keys().count() as u64,
            conntrack_capacity: lb_common::MAX_CONNS.into(),
        })
    }
}

/// Binds the API socket, refusing if another daemon answers on it.
fn bind_socket(path: &Path) -> Result<UnixListener> {
    let dir = path.parent().context("socket path has no directory")?;
    fs::create_dir_all(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            bail!("another xlb daemon is running (its API answers on {})", path.display());
        }
        fs::remove_file(path)?; // left by a killed daemon
    }
    let listener = UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

fn serve_api(listener: UnixListener, engine: Arc<Mutex<Engine>>, done: Arc<AtomicBool>) {
    while !done.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((mut stream, _)) => {
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
                let response = match api::read_message::<Request>(&mut stream) {
                    Ok(req) => {
                        let mut e = engine.lock().expect("engine lock");
                        Response::from_result(e.handle(req))
                    }
                    Err(err) => Response::from_result(Err(err)),
                };
                let _ = api::write_message(&mut stream, &response);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                tracing::warn!("API accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Loads against the pins (reusing what is there), then takes over pinned links or
/// attaches and pins new ones. Returns the engine parts and whether maps were fresh.
fn attach_or_adopt(opts: &DaemonOptions) -> Result<(Ebpf, Maps, bool)> {
    let pin_dir = &opts.paths.pin_dir;
    maps::prepare_pin_dir(pin_dir)?;
    let fresh = !pin_dir.join(map_names::SERVICES).exists();
    let mut ebpf = loader::load_pinned(pin_dir)?;
    let maps = if fresh { Maps::take(&mut ebpf, None)? } else { Maps::take_existing(&mut ebpf)? };
    for iface in &opts.ifaces {
        let pin = link_pin(pin_dir, iface);
        if pin.exists() {
            loader::adopt_pinned(&mut ebpf, &pin)?;
            println!("xlb: took over the running fast path on {iface} (connections kept)");
        } else {
            let used = loader::attach_pinned(&mut ebpf, iface, opts.mode, &pin)?;
            println!("xlb: attached to {iface} in {} mode", used.name());
        }
    }
    Ok((ebpf, maps, fresh))
}

/// Removes the link pins (detaching the program once our fds close) and the map pins.
pub fn detach_and_unpin(pin_dir: &Path) {
    if let Ok(entries) = fs::read_dir(pin_dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with("link-") {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    maps::unpin_all(pin_dir);
}

pub fn run(opts: DaemonOptions) -> Result<()> {
    run::install_stop_handler();
    unsafe { libc::signal(libc::SIGHUP, on_hup as extern "C" fn(libc::c_int) as libc::sighandler_t) };
    // Parse the config before touching anything: a bad file changes nothing.
    let file_config = opts.config.as_deref().map(config::load).transpose()?;
    let saved = if opts.paths.state.exists() {
        Some(config::load(&opts.paths.state).context("the saved state is unreadable; fix or remove it")?)
    } else {
        None
    };
    let listener = bind_socket(&opts.paths.socket)?;
    let web_listeners = web::bind(&opts.web).inspect_err(|_| drop(fs::remove_file(&opts.paths.socket)))?;
    let (ebpf, mut maps, fresh) = match attach_or_adopt(&opts) {
        Ok(parts) => parts,
        Err(e) => {
            let _ = fs::remove_file(&opts.paths.socket);
            if !opts.paths.pin_dir.join(map_names::SERVICES).exists() || opts.detach_on_exit {
                detach_and_unpin(&opts.paths.pin_dir);
            }
            return Err(e);
        }
    };
    // The saved state is the latest word (it includes API changes); the config file
    // is the start-up state only when nothing was saved.
    let desired = saved.or(file_config);
    if let Some(desired) = &desired {
        let changes = reconcile::apply(&mut maps, desired)?;
        if !fresh && !changes.is_empty() {
            println!("xlb: brought the running fast path to the saved state: {changes:?}");
        }
    }
    let engine = Arc::new(Mutex::new(Engine {
        maps,
        ebpf,
        rates: Rates::default(),
        opts_ifaces: opts.ifaces.clone(),
        paths: opts.paths.clone(),
        config: opts.config.clone(),
        stop_and_detach: false,
    }));
    engine.lock().expect("engine lock").save_state()?;
    let done = Arc::new(AtomicBool::new(false));
    let api_thread = {
        let (engine, done) = (engine.clone(), done.clone());
        std::thread::spawn(move || serve_api(listener, engine, done))
    };
    let interfaces = opts.ifaces.iter().map(|i| observe::Interface::attached(i)).collect();
    for (addr, what) in web_listeners.addresses() {
        println!("xlb: serving the {what} on http://{addr}/");
    }
    let web_server = web_listeners.serve(Arc::new(EngineView { engine: engine.clone(), interfaces }));
    println!(
        "xlb: ready; maps pinned in {}, API on {}, state in {}",
        opts.paths.pin_dir.display(),
        opts.paths.socket.display(),
        opts.paths.state.display()
    );
    std::io::stdout().flush()?;

    let mut next_tick = Instant::now();
    let detach = loop {
        std::thread::sleep(Duration::from_millis(50));
        let mut e = engine.lock().expect("engine lock");
        if e.stop_and_detach {
            break true;
        }
        if run::stop_requested() {
            break opts.detach_on_exit;
        }
        if RELOAD.swap(false, Ordering::SeqCst) {
            match e.handle(Request::Reload) {
                Ok(Reply::Changes(c)) => println!("xlb: reloaded {}: {c:?}", opts.config.as_deref().map_or("?".into(), |p| p.display().to_string())),
                Ok(_) => {}
                Err(err) => eprintln!("xlb: reload refused, nothing changed: {err:#}"),
            }
        }
        if Instant::now() >= next_tick {
            e.periodic();
            next_tick = Instant::now() + TICK;
        }
    };
    done.store(true, Ordering::SeqCst);
    let _ = api_thread.join();
    drop(web_server); // its threads hold the engine too
    let _ = fs::remove_file(&opts.paths.socket);
    if detach {
        detach_and_unpin(&opts.paths.pin_dir);
        drop(engine); // closes the last link fds: the program is detached
        println!("xlb: detached from {}; stopped", opts.ifaces.join(", "));
    } else {
        println!("xlb: exiting; the fast path keeps running from its pins (restart xlb to manage it, `xlb stop` to detach)");
    }
    Ok(())
}
