//! Katran (github.com/facebookincubator/katran), the XDP balancer xlb is measured against,
//! loaded at bench time from its own object file and timed by the same wrapper method as
//! xlb (see [`super::fastpath`]).
//!
//! Katran's object is GPL-2.0: xlb never copies it or its code. The bench loads it where
//! it lies (`../shared/anchors/katran/balancer.bpf.o` from the workspace root, or
//! [`OBJECT_ENV`]) with `bpftool prog loadall`, which also makes the inner-map template of
//! its ARRAY_OF_MAPS `lru_mapping` (aya 0.14 does not), pins the program and every map in a
//! private bpffs, and opens them from there. The maps are filled as the object's README
//! (next to it) says: one VIP per family with two reals, a ring per VIP, the next hop's
//! MAC, and one LRU per CPU.
use std::{
    ffi::CString,
    net::IpAddr,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};
use aya::{
    maps::{Array, ArrayOfMaps, HashMap, Map, MapData, PerCpuArray},
    programs::{TestRun, TestRunOptions, Xdp},
};

use super::TempDir;
use xlb_testkit::fixtures::{ROUTER_MAC, RS1_IP, RS1_IP6, RS2_IP, VIP, VIP6};

/// Overrides where the bench finds Katran's `balancer.bpf.o`.
pub const OBJECT_ENV: &str = "XLB_KATRAN_OBJ";
/// The object's place relative to the workspace root (the project's shared anchors).
pub const OBJECT_FROM_WORKSPACE: &str = "../shared/anchors/katran/balancer.bpf.o";

/// Katran's object: [`OBJECT_ENV`] when set, else `given` (what `cargo xtask bench` passes:
/// [`OBJECT_FROM_WORKSPACE`] from the workspace root).
pub fn object_path(given: Option<PathBuf>) -> Option<PathBuf> {
    std::env::var_os(OBJECT_ENV).map(PathBuf::from).or(given)
}

/// Where the project's shared anchors hold Katran's object for a checkout at `workspace`:
/// `shared/anchors/katran/balancer.bpf.o` beside the checkout or beside any folder above
/// it (a checkout is `main/` next to `shared/`; a CI clone may lie deeper or elsewhere),
/// else in the machine's project folder `/work/shared`. None if none of them has it.
pub fn locate_object(workspace: &Path) -> Option<PathBuf> {
    const BELOW_SHARED: &str = "anchors/katran/balancer.bpf.o";
    let workspace = workspace.canonicalize().unwrap_or_else(|_| workspace.to_path_buf());
    workspace
        .ancestors()
        .map(|dir| dir.join("shared").join(BELOW_SHARED))
        .chain(std::iter::once(Path::new("/work/shared").join(BELOW_SHARED)))
        .find(|p| p.is_file())
}

/// Katran's `balancer_consts.h` defaults the object was built with (its README).
const MAX_VIPS: u32 = 512;
/// `stats` slots of the global counters: `MAX_VIPS + n`.
const LRU_CNTRS: u32 = MAX_VIPS;
const LRU_MISS_CNTRS: u32 = MAX_VIPS + 1;
const NEW_CONN_RATE_CNTRS: u32 = MAX_VIPS + 2;
const FALLBACK_LRU_CNTRS: u32 = MAX_VIPS + 3;
const ENCAP_FAIL_CNTRS: u32 = MAX_VIPS + 7;
const CH_DROP_CNTRS: u32 = MAX_VIPS + 9;
const XDP_TOTAL_CNTRS: u32 = MAX_VIPS + 16;
const XDP_TX_CNTRS: u32 = MAX_VIPS + 17;
/// Past this many new flows in one second on one CPU Katran stops inserting into its LRU
/// (`MAX_CONN_RATE`): a new-flow run stays under it.
pub const MAX_CONN_RATE: u32 = 125_000;
/// `real_definition.flags`: the real is IPv6 (encapsulate in IPv6).
const F_IPV6: u8 = 1;
const BPF_MAP_TYPE_LRU_HASH: u32 = 9;
/// bpffs's magic (statfs f_type).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// The bench's VIPs (xlb's fixture VIPs, port 80, TCP) and their reals: ids 1, 2 (IPv4)
/// and 3, 4 (IPv6). vip_num 0 and 1.
pub const VIP_PORT: u16 = 80;
pub fn reals(ipv6: bool) -> [(u32, IpAddr); 2] {
    if ipv6 {
        [(3, IpAddr::V6(RS1_IP6)), (4, IpAddr::V6(std::net::Ipv6Addr::new(0xfd00, 0x10, 0, 0, 0, 0, 0, 0x12)))]
    } else {
        [(1, IpAddr::V4(RS1_IP)), (2, IpAddr::V4(RS2_IP))]
    }
}

/// 16-byte address field as Katran lays it out: IPv4 in bytes 0..4, the rest zero.
fn addr16(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(a) => {
            let mut b = [0; 16];
            b[..4].copy_from_slice(&a.octets());
            b
        }
        IpAddr::V6(a) => a.octets(),
    }
}

/// `vip_definition`: address, port (network order), protocol, pad.
fn vip_key(vip: IpAddr, port: u16, proto: u8) -> [u8; 20] {
    let mut k = [0; 20];
    k[..16].copy_from_slice(&addr16(vip));
    k[16..18].copy_from_slice(&port.to_be_bytes());
    k[18] = proto;
    k
}

/// `flow_key`: source, destination, ports (network order), protocol.
pub fn flow_key(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, proto: u8) -> [u8; 40] {
    let mut k = [0; 40];
    k[..16].copy_from_slice(&addr16(src));
    k[16..32].copy_from_slice(&addr16(dst));
    k[32..34].copy_from_slice(&sport.to_be_bytes());
    k[34..36].copy_from_slice(&dport.to_be_bytes());
    k[36] = proto;
    k
}

/// Katran's own counters a run moves, summed over CPUs (v1 of each `lb_stats` unless said).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KatranCounts {
    pub xdp_total: u64,
    pub xdp_tx: u64,
    /// Packets to a VIP that looked in the LRU (v1) and missed it (v2).
    pub lru_lookups: u64,
    pub lru_misses: u64,
    /// Misses by a SYN (v1) and by another packet (v2).
    pub syn_misses: u64,
    pub non_syn_misses: u64,
    pub fallback_lru: u64,
    pub encap_failures: u64,
    pub ring_drops: u64,
    /// Per-VIP packets (`stats[vip_num]`), and per-real packets of that VIP's reals.
    pub vip_packets: [u64; 2],
    pub real_packets: [u64; 5],
}

impl KatranCounts {
    pub fn delta(&self, before: &Self) -> Self {
        let mut real_packets = [0; 5];
        for (d, (a, b)) in real_packets.iter_mut().zip(self.real_packets.iter().zip(before.real_packets)) {
            *d = a - b;
        }
        Self {
            xdp_total: self.xdp_total - before.xdp_total,
            xdp_tx: self.xdp_tx - before.xdp_tx,
            lru_lookups: self.lru_lookups - before.lru_lookups,
            lru_misses: self.lru_misses - before.lru_misses,
            syn_misses: self.syn_misses - before.syn_misses,
            non_syn_misses: self.non_syn_misses - before.non_syn_misses,
            fallback_lru: self.fallback_lru - before.fallback_lru,
            encap_failures: self.encap_failures - before.encap_failures,
            ring_drops: self.ring_drops - before.ring_drops,
            vip_packets: [self.vip_packets[0] - before.vip_packets[0], self.vip_packets[1] - before.vip_packets[1]],
            real_packets,
        }
    }
}

/// A private bpffs, unmounted and removed on drop.
struct BpfFs {
    dir: TempDir,
}

impl BpfFs {
    fn mount() -> Result<Self> {
        let dir = TempDir::new("katran-bpffs")?;
        let path = CString::new(dir.as_os_str().as_bytes())?;
        // SAFETY: mount(2) with NUL-terminated strings that outlive the call.
        if unsafe { libc::mount(c"bpf".as_ptr(), path.as_ptr(), c"bpf".as_ptr(), 0, std::ptr::null()) } != 0 {
            bail!("mounting a bpffs on {}: {}", dir.display(), std::io::Error::last_os_error());
        }
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: statfs(2) into a zeroed struct of the right type.
        if unsafe { libc::statfs(path.as_ptr(), &mut st) } != 0 || st.f_type as i64 != BPF_FS_MAGIC {
            bail!("{} is not a bpffs after mounting one there", dir.display());
        }
        Ok(Self { dir })
    }
}

impl Drop for BpfFs {
    fn drop(&mut self) {
        if let Ok(path) = CString::new(self.dir.as_os_str().as_bytes()) {
            // SAFETY: umount2(2) on the directory this guard mounted; MNT_DETACH so an fd
            // still open elsewhere cannot keep the directory from going.
            unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// Katran's `balancer_ingress`, loaded and configured for the bench.
pub struct Katran {
    pub prog: Xdp,
    stats: PerCpuArray<MapData, [u64; 2]>,
    reals_stats: PerCpuArray<MapData, [u64; 2]>,
    /// (CPU, its LRU): kept open, the ARRAY_OF_MAPS holds only references.
    lrus: Vec<(u32, HashMap<MapData, [u8; 40], [u8; 16]>)>,
    _lru_mapping: ArrayOfMaps<MapData>,
    /// The program's size as the kernel has it: (xlated instructions, JITed bytes).
    pub size: (u32, u32),
    _bpffs: BpfFs,
}

fn pinned_map(dir: &Path, name: &str) -> Result<Map> {
    let data = MapData::from_pin(dir.join(name)).with_context(|| format!("opening Katran's map {name} pinned by bpftool"))?;
    Ok(Map::from_map_data(data)?)
}

impl Katran {
    /// Loads `object` with bpftool and configures it; each online CPU gets an LRU of
    /// `lru_entries` (Katran's own default is 8,000,000 / forwarding CPUs).
    pub fn load(object: &Path, lru_entries: u32) -> Result<Self> {
        if !object.is_file() {
            bail!(
                "Katran's object {} is not there: the fast-path bench times Katran beside xlb; set {OBJECT_ENV} to its balancer.bpf.o",
                object.display()
            );
        }
        let bpftool = ["/usr/sbin/bpftool", "/usr/bin/bpftool", "/usr/local/sbin/bpftool"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.exists())
            .context("bpftool is not installed (cargo xtask setup installs it): the bench loads Katran's object with it")?;
        let bpffs = BpfFs::mount()?;
        let (progs, maps) = (bpffs.dir.join("prog"), bpffs.dir.join("maps"));
        xlb_core::netns::run(Command::new(bpftool).arg("prog").arg("loadall").arg(object).arg(&progs).arg("pinmaps").arg(&maps))
            .with_context(|| format!("loading {} with bpftool", object.display()))?;
        let prog = Xdp::from_pin(progs.join("balancer_ingress"), aya_obj::programs::XdpAttachType::Interface).context("opening balancer_ingress")?;
        let info = prog.info().context("balancer_ingress's info")?;
        let size = (info.size_translated().unwrap_or(0) / 8, info.size_jitted());

        let mut vip_map: HashMap<MapData, [u8; 20], [u8; 8]> = HashMap::try_from(pinned_map(&maps, "vip_map")?)?;
        let mut real_defs: Array<MapData, [u8; 20]> = Array::try_from(pinned_map(&maps, "reals")?)?;
        let mut ch_rings: Array<MapData, u32> = Array::try_from(pinned_map(&maps, "ch_rings")?)?;
        let mut ctl_array: Array<MapData, [u8; 8]> = Array::try_from(pinned_map(&maps, "ctl_array")?)?;
        let mut lru_mapping: ArrayOfMaps<MapData> = ArrayOfMaps::try_from(pinned_map(&maps, "lru_mapping")?)?;
        let stats = PerCpuArray::try_from(pinned_map(&maps, "stats")?)?;
        let reals_stats = PerCpuArray::try_from(pinned_map(&maps, "reals_stats")?)?;
        if vip_map.iter().count() != 0 || ch_rings.len() % MAX_VIPS != 0 {
            bail!("{} is not the Katran build this bench knows (MAX_VIPS {MAX_VIPS}, see its README)", object.display());
        }
        let ring_size = ch_rings.len() / MAX_VIPS;

        for (vip_num, (vip, ipv6)) in [(IpAddr::V4(VIP), false), (IpAddr::V6(VIP6), true)].into_iter().enumerate() {
            let vip_num = vip_num as u32;
            // vip_meta: flags 0 (Katran's defaults), vip_num.
            let meta: Vec<u8> = [0u32, vip_num].iter().flat_map(|v| v.to_ne_bytes()).collect();
            vip_map.insert(vip_key(vip, VIP_PORT, lb_common::PROTO_TCP), <[u8; 8]>::try_from(meta.as_slice())?, 0)?;
            let two = reals(ipv6);
            for (id, addr) in two {
                let mut def = [0u8; 20];
                def[..16].copy_from_slice(&addr16(addr));
                def[16] = if ipv6 { F_IPV6 } else { 0 };
                real_defs.set(id, def, 0)?;
            }
            // Any ring of the VIP's reals costs the same per lookup (the README); this one
            // alternates them, so both get flows.
            for slot in 0..ring_size {
                ch_rings.set(vip_num * ring_size + slot, two[(slot % 2) as usize].0, 0)?;
            }
        }
        let mut next_hop = [0u8; 8];
        next_hop[..6].copy_from_slice(&ROUTER_MAC);
        ctl_array.set(0, next_hop, 0)?;
        let mut lrus = Vec::new();
        for cpu in online_cpus()? {
            let def = aya_obj::Map::new_from_params(BPF_MAP_TYPE_LRU_HASH, 40, 16, lru_entries, 0);
            let lru = MapData::create(def, &format!("katran_lru{cpu}"), None).context("creating a per-CPU LRU for Katran")?;
            lru_mapping.set(cpu, &lru, 0).with_context(|| format!("lru_mapping[{cpu}]"))?;
            lrus.push((cpu, HashMap::try_from(Map::from_map_data(lru)?)?));
        }
        Ok(Self { prog, stats, reals_stats, lrus, _lru_mapping: lru_mapping, size, _bpffs: bpffs })
    }

    fn stat(map: &PerCpuArray<MapData, [u64; 2]>, index: u32) -> Result<(u64, u64)> {
        let values = map.get(&index, 0)?;
        Ok(values.iter().fold((0, 0), |(a, b), v| (a + v[0], b + v[1])))
    }

    pub fn counts(&self) -> Result<KatranCounts> {
        let s = |i| Self::stat(&self.stats, i);
        let (lru_lookups, lru_misses) = s(LRU_CNTRS)?;
        let (syn_misses, non_syn_misses) = s(LRU_MISS_CNTRS)?;
        let (encap4, encap6) = s(ENCAP_FAIL_CNTRS)?;
        let (ring1, ring2) = s(CH_DROP_CNTRS)?;
        let mut real_packets = [0; 5];
        for (id, p) in real_packets.iter_mut().enumerate().skip(1) {
            *p = Self::stat(&self.reals_stats, id as u32)?.0;
        }
        Ok(KatranCounts {
            xdp_total: s(XDP_TOTAL_CNTRS)?.0,
            xdp_tx: s(XDP_TX_CNTRS)?.0,
            lru_lookups,
            lru_misses,
            syn_misses,
            non_syn_misses,
            fallback_lru: s(FALLBACK_LRU_CNTRS)?.0,
            encap_failures: encap4 + encap6,
            ring_drops: ring1 + ring2,
            vip_packets: [s(0)?.0, s(1)?.0],
            real_packets,
        })
    }

    /// Opens a fresh one-second window of the new-flow rate guard on every CPU (its start
    /// 0: the next new flow starts a window).
    pub fn reset_conn_rate(&mut self) -> Result<()> {
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
        let zero = aya::maps::PerCpuValues::try_from(vec![[0u64; 2]; cpus])?;
        self.stats.set(NEW_CONN_RATE_CNTRS, zero, 0)?;
        Ok(())
    }

    /// New flows counted in the rate guard's current window, summed over CPUs.
    pub fn conn_rate(&self) -> Result<u64> {
        Ok(Self::stat(&self.stats, NEW_CONN_RATE_CNTRS)?.0)
    }

    /// The real id the LRUs hold for a flow, and removes it (a new-flow run's flows are
    /// taken out after the run so the LRU never has to evict).
    pub fn take_flow(&mut self, key: &[u8; 40]) -> Result<Option<u32>> {
        for (_, lru) in &mut self.lrus {
            if let Ok(value) = lru.get(key, 0) {
                lru.remove(key)?;
                return Ok(Some(u32::from_ne_bytes([value[0], value[1], value[2], value[3]])));
            }
        }
        Ok(None)
    }

    /// The real id an LRU holds for a flow.
    pub fn flow(&self, key: &[u8; 40]) -> Option<u32> {
        self.lrus.iter().find_map(|(_, lru)| lru.get(key, 0).ok()).map(|v| u32::from_ne_bytes([v[0], v[1], v[2], v[3]]))
    }

    /// One run of balancer_ingress itself (not under the wrapper): (verdict, output).
    pub fn run_once(&mut self, frame: &[u8]) -> Result<(u32, Vec<u8>)> {
        let mut output = vec![0u8; frame.len() + 256];
        let opts = TestRunOptions { data_in: Some(frame), data_out: Some(&mut output), repeat: 1, ..Default::default() };
        let result = self.prog.test_run(opts).context("BPF_PROG_TEST_RUN of Katran's balancer_ingress")?;
        output.truncate(result.data_size_out as usize);
        Ok((result.return_value, output))
    }
}

/// Whether `output` is `input` encapsulated as Katran does it (its README: IPIP for an
/// IPv4 real, IPv6-in-IPv6 for an IPv6 one) towards `real`, sent to the next hop
/// ([`ROUTER_MAC`]) from the MAC the input was sent to. The outer source address (made
/// from the client's) is not checked.
pub fn is_encapsulated(input: &[u8], output: &[u8], real: IpAddr) -> bool {
    let macs = output.get(..6) == Some(&ROUTER_MAC[..]) && output.get(6..12) == input.get(..6);
    let (outer, ethertype, proto_at, proto, dst) = match real {
        IpAddr::V4(a) => (20, [0x08, 0x00], 14 + 9, 4, (14 + 16, a.octets().to_vec())),
        IpAddr::V6(a) => (40, [0x86, 0xdd], 14 + 6, 41, (14 + 24, a.octets().to_vec())),
    };
    macs && output.get(12..14) == Some(&ethertype[..])
        && output.get(proto_at) == Some(&proto)
        && output.get(dst.0..dst.0 + dst.1.len()) == Some(dst.1.as_slice())
        && output.get(14 + outer..) == input.get(14..)
}

fn online_cpus() -> Result<Vec<u32>> {
    aya::util::online_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))
}
