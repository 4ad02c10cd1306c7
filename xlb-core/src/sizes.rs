//! Table sizes set at start (`xlb run/daemon --max-conns --max-services --max-reals`)
//! and the kernel memory each map costs at its size.
use std::path::Path;

use anyhow::{Result, bail};
use aya::maps::{MapInfo, MapType};
use lb_common::map_names;
/// The defaults of `--max-conns`, `--max-services` and `--max-reals`.
pub use lb_common::{MAX_CONNS, MAX_REALS, MAX_SERVICES};
use serde::{Deserialize, Serialize};

/// The sizes of the maps the start-up options size, applied with aya's
/// `EbpfLoader::map_max_entries` when the object is loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct TableSizes {
    /// Connections: CONNS, NAT_REPLIES, HALF_OPEN, HALF_OPEN_REPLIES (entries each).
    pub max_conns: u32,
    /// Service ids: SERVICE_INFO, RR_CURSORS.
    pub max_services: u32,
    /// Real ids: REALS, REAL_LOAD, REAL_STATS.
    pub max_reals: u32,
}

impl Default for TableSizes {
    fn default() -> Self {
        Self { max_conns: lb_common::MAX_CONNS, max_services: lb_common::MAX_SERVICES, max_reals: lb_common::MAX_REALS }
    }
}

/// Largest `--max-conns`: 2^27 entries (CONNS, NAT_REPLIES and the half-open tables then
/// take some 70 GiB), far past any machine this runs on, and inside u32 arithmetic.
pub const MAX_CONNS_LIMIT: u32 = 1 << 27;
/// Largest `--max-services` and `--max-reals`: ids are u32, arrays are indexed by them.
pub const MAX_IDS_LIMIT: u32 = 1 << 24;

impl TableSizes {
    /// Refuses a size of 0 or past the limits above (before anything is loaded).
    pub fn check(&self) -> Result<()> {
        for (name, value, limit) in [
            ("--max-conns", self.max_conns, MAX_CONNS_LIMIT),
            ("--max-services", self.max_services, MAX_IDS_LIMIT),
            ("--max-reals", self.max_reals, MAX_IDS_LIMIT),
        ] {
            if value == 0 || value > limit {
                bail!("{name} {value} is out of range: 1 to {limit}");
            }
        }
        Ok(())
    }

    /// (map name, entries) for every map these sizes apply to.
    pub fn overrides(&self) -> Vec<(&'static str, u32)> {
        let mut out = Vec::new();
        out.extend(map_names::BY_CONNS.iter().map(|&n| (n, self.max_conns)));
        out.extend(map_names::BY_SERVICES.iter().map(|&n| (n, self.max_services)));
        out.extend(map_names::BY_REALS.iter().map(|&n| (n, self.max_reals)));
        out
    }
}

/// One map's size and the kernel memory it costs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapMemory {
    pub name: String,
    /// The kernel's map type (hash, lru_hash, array, percpu_array …).
    pub kind: String,
    pub max_entries: u32,
    pub key_size: u32,
    pub value_size: u32,
    /// Estimated bytes; see [`estimate_bytes`].
    pub bytes: u64,
}

/// The size of the kernel's `struct htab_elem` before the key on x86-64/arm64 (its
/// list node, LRU node or free-list link, and the hash): what a hash map adds per
/// entry (kernel/bpf/hashtab.c).
pub const HASH_ENTRY_OVERHEAD: u64 = 48;

const fn round8(n: u64) -> u64 {
    n.div_ceil(8) * 8
}

/// An estimate of the kernel memory a map of `kind` with `entries` entries of
/// `key`/`value` bytes takes, as kernel/bpf/hashtab.c and arraymap.c allocate it
/// (every map here is preallocated): a hash or LRU hash, per entry
/// [`HASH_ENTRY_OVERHEAD`] + key + value, each rounded up to 8 bytes; an array,
/// value rounded up to 8 per entry; the per-CPU kinds hold a value per possible CPU
/// (`cpus`), a per-CPU hash an 8-byte pointer in the element besides; a ring buffer,
/// its data area (max_entries bytes). Bucket arrays,
/// the map's own struct and allocator slack are left out: a lower bound within a few
/// percent for the big tables.
pub fn estimate_bytes(kind: MapType, entries: u32, key: u32, value: u32, cpus: u32) -> u64 {
    let (n, k, v, cpus) = (u64::from(entries), round8(u64::from(key)), round8(u64::from(value)), u64::from(cpus));
    match kind {
        MapType::Hash | MapType::LruHash => n * (HASH_ENTRY_OVERHEAD + k + v),
        MapType::PerCpuHash | MapType::LruPerCpuHash => n * (HASH_ENTRY_OVERHEAD + k + 8) + n * v * cpus,
        MapType::PerCpuArray => n * v * cpus,
        // A ring buffer's max_entries is its data area in bytes.
        MapType::RingBuf => n,
        _ => n * v,
    }
}

fn kind_name(kind: MapType) -> String {
    match kind {
        MapType::Hash => "hash".into(),
        MapType::LruHash => "lru_hash".into(),
        MapType::Array => "array".into(),
        MapType::PerCpuArray => "percpu_array".into(),
        MapType::PerCpuHash => "percpu_hash".into(),
        MapType::RingBuf => "ringbuf".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// The kernel's possible CPUs (what per-CPU maps allocate for).
pub fn possible_cpus() -> u32 {
    aya::util::nr_cpus().map(|n| n as u32).unwrap_or(1)
}

/// The memory of each pinned map of the instance in `pin_dir`, as the kernel reports
/// its size. Maps not pinned there are left out.
pub fn pinned_memory(pin_dir: &Path) -> Result<Vec<MapMemory>> {
    let cpus = possible_cpus();
    let mut out = Vec::new();
    for name in map_names::ALL {
        let path = pin_dir.join(name);
        if !path.exists() {
            continue;
        }
        let info = MapInfo::from_pin(&path)?;
        let kind = info.map_type()?;
        let (entries, key, value) = (info.max_entries(), info.key_size(), info.value_size());
        out.push(MapMemory {
            name: name.to_string(),
            kind: kind_name(kind),
            max_entries: entries,
            key_size: key,
            value_size: value,
            bytes: estimate_bytes(kind, entries, key, value, cpus),
        });
    }
    Ok(out)
}

/// Maps whose pinned size differs from the size asked for: (name, pinned, asked).
pub fn pinned_size_differences(memory: &[MapMemory], asked: &TableSizes) -> Vec<(String, u32, u32)> {
    let asked = asked.overrides();
    memory
        .iter()
        .filter_map(|m| {
            let &(_, want) = asked.iter().find(|(n, _)| *n == m.name)?;
            (m.max_entries != want).then(|| (m.name.clone(), m.max_entries, want))
        })
        .collect()
}

/// Bytes for people: KiB, MiB or GiB with one decimal.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{v:.1} {}", UNITS[unit]) }
}

/// The lines `xlb run` prints at start and `xlb status` shows: each map's entries and
/// estimated memory, largest first, and the total.
pub fn report_lines(memory: &[MapMemory]) -> Vec<String> {
    let mut sorted: Vec<&MapMemory> = memory.iter().collect();
    sorted.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.name.cmp(&b.name)));
    let mut lines: Vec<String> = sorted
        .iter()
        .map(|m| format!("  {:<18} {:>10} entries  {:>10}  ({})", m.name, m.max_entries, human(m.bytes), m.kind))
        .collect();
    let total: u64 = memory.iter().map(|m| m.bytes).sum();
    lines.push(format!("  {:<18} {:>10}          {:>10}  (estimate: entries × (key + value + {HASH_ENTRY_OVERHEAD} B per hash entry), per-CPU values × {} CPUs)", "total", "", human(total), possible_cpus()));
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_entries_cost_overhead_key_and_value_rounded() {
        // CONNS: 40-byte key, 40-byte value.
        assert_eq!(estimate_bytes(MapType::Hash, 1 << 20, 40, 40, 2), (1 << 20) * (48 + 40 + 40));
        // Rounded to 8: a 36-byte key costs 40.
        assert_eq!(estimate_bytes(MapType::LruHash, 10, 36, 4, 2), 10 * (48 + 40 + 8));
        assert_eq!(estimate_bytes(MapType::Array, 10, 4, 16, 2), 160);
        assert_eq!(estimate_bytes(MapType::PerCpuArray, 10, 4, 40, 4), 1600);
    }

    #[test]
    fn sizes_out_of_range_are_refused() {
        assert!(TableSizes::default().check().is_ok());
        assert!(TableSizes { max_conns: 0, ..Default::default() }.check().is_err());
        assert!(TableSizes { max_reals: MAX_IDS_LIMIT + 1, ..Default::default() }.check().is_err());
    }

    #[test]
    fn defaults_hold_the_scale_targets() {
        let d = TableSizes::default();
        assert!(d.max_conns >= 1_000_000);
        assert!(d.max_services >= 10_000 && d.max_reals >= 100_000);
    }

    #[test]
    fn differences_name_the_maps_kept_at_their_pinned_size() {
        let m = |name: &str, n| MapMemory { name: name.into(), kind: "hash".into(), max_entries: n, key_size: 4, value_size: 4, bytes: 0 };
        let asked = TableSizes { max_conns: 2048, max_services: 16, max_reals: 64 };
        let diffs = pinned_size_differences(&[m("CONNS", 4096), m("REALS", 64), m("POOL", 9)], &asked);
        assert_eq!(diffs, vec![("CONNS".to_string(), 4096, 2048)]);
    }

    #[test]
    fn human_units() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(128 << 20), "128.0 MiB");
    }
}
