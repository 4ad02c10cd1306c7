//! Loading the XDP object and attaching it to interfaces.
use std::path::Path;

use anyhow::{Context, Result, bail};
use aya::{
    Ebpf, EbpfLoader,
    programs::{Xdp, XdpMode, links::FdLink, links::PinnedLink, xdp::XdpLink, xdp::XdpLinkId},
};
use lb_common::map_names;

/// The balancer program, the veth peer stub, the connection expiry the controller's
/// sweep runs through BPF_PROG_TEST_RUN, and a TUN real server's IPIP decapsulator.
pub const BALANCE_PROGRAM: &str = "xlb_balance";
pub const PASS_PROGRAM: &str = "xlb_pass";
pub const EXPIRE_PROGRAM: &str = "xlb_expire";
pub const DECAP_PROGRAM: &str = "xlb_decap";
/// Installs a connection a backup sync daemon received (BPF_PROG_TEST_RUN, as the expiry).
pub const SYNC_INSTALL_PROGRAM: &str = "xlb_sync_install";
/// The XDP verdict values (linux/bpf.h).
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;
const PROGRAMS: [&str; 5] = [BALANCE_PROGRAM, PASS_PROGRAM, EXPIRE_PROGRAM, DECAP_PROGRAM, SYNC_INSTALL_PROGRAM];

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// Native (driver) mode, falling back to SKB (generic) mode if the driver refuses;
    /// SKB mode at once on a veth whose peer runs no native XDP program (native mode
    /// would drop every forwarded frame there).
    Auto,
    /// Native (driver) mode only.
    Native,
    /// SKB (generic) mode.
    Skb,
}

impl AttachMode {
    pub const fn name(self) -> &'static str {
        match self {
            AttachMode::Auto => "auto",
            AttachMode::Native => "native",
            AttachMode::Skb => "skb",
        }
    }
}

/// The fast path's aya-log level (`--fastpath-log`), fixed when the object is loaded:
/// aya-log's `AYA_LOG_LEVEL` global is read-only data, so at `off` the verifier removes
/// every log call as dead code (aya-log 0.3, "Disabling log levels at load-time").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// No records (the default).
    #[default]
    Off,
    /// Not used by the fast path today (kept for aya-log's full scale).
    Error,
    /// Drops: no real server, connection table full, real gone (nodest), too big.
    Warn,
    /// Also passes the operator should know of (neighbour unresolved, no route, bad
    /// header) and every new connection with its real server.
    Info,
    /// Also every other verdict: one record per frame (heavy).
    Debug,
    /// As debug.
    Trace,
}

impl LogLevel {
    /// The value of `AYA_LOG_LEVEL`: aya-log's level number (error 1 … trace 5), 0 for off.
    pub const fn value(self) -> u8 {
        match self {
            LogLevel::Off => 0,
            LogLevel::Error => aya_log::Level::Error as u8,
            LogLevel::Warn => aya_log::Level::Warn as u8,
            LogLevel::Info => aya_log::Level::Info as u8,
            LogLevel::Debug => aya_log::Level::Debug as u8,
            LogLevel::Trace => aya_log::Level::Trace as u8,
        }
    }
}

/// Loads the object with every program loaded into the kernel (verified), none attached.
pub fn load() -> Result<Ebpf> {
    load_with_sizes(&[])
}

/// As [`load`], with some maps' sizes overridden (tests shrink tables to fill them).
pub fn load_with_sizes(sizes: &[(&'static str, u32)]) -> Result<Ebpf> {
    let mut loader = EbpfLoader::new();
    for (name, size) in sizes {
        loader.map_max_entries(name, *size);
    }
    load_programs(&mut loader, crate::ebpf::OBJECT, LogLevel::Off)
}

/// As [`load`], with the fast path's aya-log records at `level` (read them with
/// `aya_log::EbpfLogger`).
pub fn load_logging(level: LogLevel) -> Result<Ebpf> {
    load_programs(&mut EbpfLoader::new(), crate::ebpf::OBJECT, level)
}

/// As [`load`], for another build of the object (the bench's one without diagnostics).
pub fn load_object(object: &[u8]) -> Result<Ebpf> {
    load_programs(&mut EbpfLoader::new(), object, LogLevel::Off)
}

/// As [`load_object`], with the tables at `sizes`.
pub fn load_object_sized(object: &[u8], sizes: &crate::sizes::TableSizes) -> Result<Ebpf> {
    load_object_sized_with(object, sizes, &[])
}

/// As [`load_object_sized`], with further maps sized (name, entries): the bench's own.
pub fn load_object_sized_with(object: &[u8], sizes: &crate::sizes::TableSizes, more: &[(&str, u32)]) -> Result<Ebpf> {
    let mut loader = EbpfLoader::new();
    for (name, size) in sizes.overrides().into_iter().chain(more.iter().copied()) {
        loader.map_max_entries(name, size);
    }
    load_programs(&mut loader, object, LogLevel::Off)
}

/// As [`load`], with the tables at `sizes` (the bench: the product's default sizes).
pub fn load_sized(sizes: &crate::sizes::TableSizes) -> Result<Ebpf> {
    load_with_sizes(&sizes.overrides())
}

/// Loads the object with every map pinned in `dir`: maps already pinned there (a
/// daemon restart) are reused with their contents and their size (the kernel cannot
/// resize a map: see [`crate::sizes::pinned_size_differences`]), the others are
/// created at `sizes` and pinned.
pub fn load_pinned(dir: &Path, sizes: &crate::sizes::TableSizes) -> Result<Ebpf> {
    load_pinned_logging(dir, sizes, LogLevel::Off)
}

/// As [`load_pinned`], with the fast path's aya-log records at `level`.
pub fn load_pinned_logging(dir: &Path, sizes: &crate::sizes::TableSizes, level: LogLevel) -> Result<Ebpf> {
    let mut loader = EbpfLoader::new();
    for name in map_names::ALL {
        loader.map_pin_path(name, dir.join(name));
    }
    for (name, size) in sizes.overrides() {
        loader.map_max_entries(name, size);
    }
    load_programs(&mut loader, crate::ebpf::OBJECT, level)
}

fn load_programs(loader: &mut EbpfLoader<'_>, object: &[u8], level: LogLevel) -> Result<Ebpf> {
    if object.is_empty() {
        bail!("this xlb was built with AYA_BUILD_SKIP set and carries no XDP object; rebuild without it");
    }
    // Always set: aya-log's own default is every level on. Not required to exist (the
    // object without diagnostics has no aya-log).
    // A static: the loader borrows the value for its own lifetime.
    static VALUES: [u8; 6] = [0, 1, 2, 3, 4, 5];
    loader.override_global(aya_log::LEVEL, &VALUES[level.value() as usize], false);
    let mut ebpf = loader.load(object).context("loading the XDP object (are the pinned maps from an incompatible xlb? `xlb stop` first)")?;
    for program in PROGRAMS {
        xdp(&mut ebpf, program)?.load().with_context(|| format!("loading program {program} into the kernel"))?;
    }
    Ok(ebpf)
}

/// Runs `xlb_expire` on one flow: true if it was idle past its timeout and is now gone.
pub fn expire_flow(ebpf: &mut Ebpf, flow: &lb_common::FlowKey) -> Result<bool> {
    use aya::programs::{TestRun, TestRunOptions};
    // The key is the "frame"; 16 bytes is above the 14-byte minimum of an XDP test run.
    let bytes = unsafe { std::slice::from_raw_parts((flow as *const lb_common::FlowKey).cast::<u8>(), size_of_val(flow)) };
    let opts = TestRunOptions { data_in: Some(bytes), ..Default::default() };
    let result = xdp(ebpf, EXPIRE_PROGRAM)?.test_run(opts).context("running xlb_expire")?;
    Ok(result.return_value == XDP_PASS)
}

/// Runs `xlb_sync_install` on one received connection: a `lb_common::sync::INSTALL_*`
/// answer (created, updated, or refused: the table is full).
pub fn install_conn(ebpf: &mut Ebpf, install: &lb_common::SyncInstall) -> Result<u32> {
    use aya::programs::{TestRun, TestRunOptions};
    let bytes = unsafe { std::slice::from_raw_parts((install as *const lb_common::SyncInstall).cast::<u8>(), size_of_val(install)) };
    let opts = TestRunOptions { data_in: Some(bytes), ..Default::default() };
    let result = xdp(ebpf, SYNC_INSTALL_PROGRAM)?.test_run(opts).context("running xlb_sync_install")?;
    match result.return_value {
        v @ (lb_common::sync::INSTALL_CREATED | lb_common::sync::INSTALL_UPDATED | lb_common::sync::INSTALL_REFUSED) => Ok(v),
        v => bail!("xlb_sync_install answered {v} (an entry shorter than the program reads?)"),
    }
}

pub fn xdp<'a>(ebpf: &'a mut Ebpf, program: &str) -> Result<&'a mut Xdp> {
    let prog = ebpf.program_mut(program).with_context(|| format!("object has no program {program}"))?;
    Ok(prog.try_into()?)
}

/// An attachment: the link (it lives as long as the object, unless taken) and the mode
/// actually used, so the caller can say which.
pub struct Attached {
    pub link: XdpLinkId,
    pub mode: AttachMode,
}

/// Why native mode on `iface` would send nothing out: a veth whose peer has no native
/// XDP program. A veth transmits an XDP_TX'd or redirected frame only into its peer's
/// NAPI ring, which exists only while the peer runs a native XDP program (or has GRO
/// enabled); otherwise the kernel drops the frame (veth_xdp_xmit() in
/// drivers/net/veth.c). None when native mode delivers, or nothing says it would not.
pub fn native_blackholes(iface: &str) -> Result<Option<String>> {
    let info = crate::rtnl::link_info(crate::rtnl::ifindex(iface)?, None)?;
    if info.kind.as_deref() != Some("veth") {
        return Ok(None);
    }
    let Some(peer) = info.link.filter(|&i| i > 0) else { return Ok(None) };
    let peer_info = crate::rtnl::link_info(peer, info.link_netnsid)
        .with_context(|| format!("asking about the peer of veth {iface}"))?;
    let native = matches!(peer_info.xdp_attached, crate::rtnl::XDP_ATTACHED_DRV | crate::rtnl::XDP_ATTACHED_MULTI);
    Ok((!native).then(|| {
        format!(
            "{iface} is a veth whose peer runs no native XDP program, and a veth drops what native XDP \
             sends back out (XDP_TX) or redirects unless its peer does"
        )
    }))
}

/// Attaches `program` to `iface`. Auto tries native mode, then SKB mode; for the
/// balancer (which sends frames back out) it takes SKB mode at once where native mode
/// would drop them ([`native_blackholes`]), and `Native` is kept but warned about there.
pub fn attach(ebpf: &mut Ebpf, program: &str, iface: &str, mode: AttachMode) -> Result<Attached> {
    let blackhole = if program == BALANCE_PROGRAM && mode != AttachMode::Skb {
        native_blackholes(iface).unwrap_or_else(|e| {
            tracing::warn!("could not tell whether native XDP on {iface} delivers: {e:#}");
            None
        })
    } else {
        None
    };
    let prog = xdp(ebpf, program)?;
    let in_mode = |prog: &mut Xdp, m: AttachMode| {
        let flags = if m == AttachMode::Skb { XdpMode::Skb } else { XdpMode::Driver };
        prog.attach(iface, flags).with_context(|| format!("attaching to {iface} in {} mode", m.name())).map(|link| Attached { link, mode: m })
    };
    match (mode, blackhole) {
        (AttachMode::Auto, Some(why)) => {
            tracing::info!("{why}: attaching in SKB mode (generic XDP, which delivers); --mode native to override");
            in_mode(prog, AttachMode::Skb)
        }
        (AttachMode::Native, Some(why)) => {
            tracing::warn!("{why}: in native mode, as asked, forwarded frames will be dropped (--mode auto or skb delivers)");
            in_mode(prog, AttachMode::Native)
        }
        (AttachMode::Auto, None) => match in_mode(prog, AttachMode::Native) {
            Ok(done) => Ok(done),
            Err(native_err) => {
                tracing::warn!("native XDP on {iface} refused ({native_err:#}); falling back to SKB mode");
                in_mode(prog, AttachMode::Skb)
            }
        },
        (m, _) => in_mode(prog, m),
    }
}

/// Attaches the balancer to `iface` and pins the link at `pin`, so the program stays
/// attached when this process exits (until the pin is removed).
pub fn attach_pinned(ebpf: &mut Ebpf, iface: &str, mode: AttachMode, pin: &Path) -> Result<AttachMode> {
    let Attached { link, mode: used } = attach(ebpf, BALANCE_PROGRAM, iface, mode)?;
    let link = xdp(ebpf, BALANCE_PROGRAM)?.take_link(link)?;
    let fd: FdLink = link.try_into().context("XDP link without a kernel link object (kernel too old to pin it)")?;
    fd.pin(pin).with_context(|| format!("pinning the XDP link at {}", pin.display()))?;
    Ok(used)
}

/// The mode in which the balancer runs on `iface`, as the kernel reports it through
/// rtnetlink (IFLA_XDP, what `ip link show` prints): None if it is not attached there.
pub fn attached_mode(iface: &str) -> Result<Option<AttachMode>> {
    let info = crate::rtnl::link_info(crate::rtnl::ifindex(iface)?, None)?;
    let Some(prog_id) = info.xdp_prog_id else { return Ok(None) };
    let ours = aya::programs::loaded_programs()
        .flatten()
        .any(|p| p.id() == prog_id && p.name_as_str() == Some(BALANCE_PROGRAM));
    Ok(match info.xdp_attached {
        crate::rtnl::XDP_ATTACHED_DRV if ours => Some(AttachMode::Native),
        crate::rtnl::XDP_ATTACHED_SKB if ours => Some(AttachMode::Skb),
        _ => None,
    })
}

/// Takes over a pinned link: the balancer in `ebpf` replaces the program it runs,
/// atomically (no packet sees no program).
pub fn adopt_pinned(ebpf: &mut Ebpf, pin: &Path) -> Result<()> {
    let pinned = PinnedLink::from_pin(pin).with_context(|| format!("opening the pinned XDP link {}", pin.display()))?;
    let link = XdpLink::try_from(FdLink::from(pinned))?;
    xdp(ebpf, BALANCE_PROGRAM)?.attach_to_link(link).context("replacing the program of the pinned XDP link")?;
    Ok(())
}
