//! The kernel primitives a fast path is built of, timed in the fast-path section's rounds
//! with the same wrapper method as every row (restore, one tail call; the restore-only
//! program subtracted): one lookup in a hash of CONNS's layout (hit and miss), one
//! lookup of a compact 16-byte key, one insert of a new key into an LRU of HALF_OPEN's
//! layout, each table at CONNS's default size. They say why a target is missed: what
//! one lookup costs against what a target leaves for the whole path.
use anyhow::{Result, bail};
use aya::{
    maps::{HashMap, MapData},
    programs::ProgramFd,
};
use lb_common::{ConnEntry, FlowKey, addr, bench as names};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

use super::fastpath::{Harness, RoundTimes, Vary};
use xlb_testkit::fixtures::{XDP_DROP, XDP_PASS};

/// One primitive's figures, medians over the rounds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PrimitiveRow {
    pub primitive: String,
    /// The primitive alone (wrapper − restore-only), ns.
    pub ns_alone: f64,
    /// As a fast-path row's figure: alone + the bare XDP_DROP (the test run's own cost).
    pub ns_per_packet: f64,
    /// Every iteration gave the expected verdict (a hit, a miss, an insert).
    pub proven: bool,
}

/// [`PrimitiveRow::primitive`] of each row, in order.
pub const FLOW_HIT: &str = "flow-table lookup, hit (40-byte FlowKey, CONNS's layout)";
pub const FLOW_MISS: &str = "flow-table lookup, miss (40-byte FlowKey)";
pub const COMPACT_HIT: &str = "flow-table lookup, hit (16-byte compact IPv4 key)";
pub const LRU_INSERT: &str = "LRU insert of a new flow (40-byte FlowKey, HALF_OPEN's layout)";
/// [`FLOW_HIT`] with many live entries, the timed lookups walking them all in turn (as
/// the live-flows rows' packets do): the lookup's own growth.
pub const FLOW_HIT_MANY: &str = "flow-table lookup, hit, every one of the many live flows in turn";

struct Item {
    name: &'static str,
    /// Iterations per run (0: the round's).
    repeat: u32,
    program: ProgramFd,
    input: Vec<u8>,
    vary: Vary,
    verdict: u32,
}

pub struct PrimitiveBench {
    items: Vec<Item>,
    lru: HashMap<MapData, FlowKey, ConnEntry>,
    times: Vec<Vec<RoundTimes>>,
    proven: Vec<bool>,
}

/// A client flow to the fixture's VIP, as a FlowKey.
fn flow(client: u32) -> FlowKey {
    FlowKey {
        src: addr::from_v4(Ipv4Addr::from(client).octets()),
        dst: addr::from_v4([10, 0, 0, 100]),
        sport: 40000u16.to_be_bytes(),
        dport: 80u16.to_be_bytes(),
        proto: lb_common::PROTO_TCP,
        _pad: [0; 3],
    }
}

/// A key's bytes as a frame (padded to a minimal Ethernet frame's 60 bytes).
fn frame_of(bytes: &[u8]) -> Vec<u8> {
    let mut f = bytes.to_vec();
    f.resize(60, 0);
    f
}

fn key_bytes<T: Copy>(key: &T) -> &[u8] {
    // SAFETY: plain-old-data key types without padding bytes (checked in lb-common).
    unsafe { std::slice::from_raw_parts((key as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
}

/// The compact key of a flow: IPv4 source, destination, ports, protocol, padding.
fn compact(k: &FlowKey) -> [u64; 2] {
    let mut b = [0u8; 16];
    b[0..4].copy_from_slice(&k.src[12..16]);
    b[4..8].copy_from_slice(&k.dst[12..16]);
    b[8..10].copy_from_slice(&k.sport);
    b[10..12].copy_from_slice(&k.dport);
    b[12] = k.proto;
    [u64::from_ne_bytes(b[0..8].try_into().unwrap()), u64::from_ne_bytes(b[8..16].try_into().unwrap())]
}

/// Offset in the frame of the LRU key's varied word: the source address's IPv4 bytes.
const VARIED_OFFSET: u32 = 12;
const LRU_BASE: u32 = 0x0b00_0000;
/// Source addresses of the many live entries: 14.0.0.0 onwards.
const MANY_BASE: u32 = 0x0e00_0000;

impl PrimitiveBench {
    /// Loads the primitive programs and fills their tables: one present flow in the
    /// compact table, and in the flow table that one and `many` more (the miss looks up
    /// another).
    pub fn new(h: &mut Harness, many: u32) -> Result<Self> {
        let present = flow(0x0a01_0001);
        let absent = flow(0x0a01_0002);
        let mut flows: HashMap<MapData, FlowKey, ConnEntry> = h.take_map(names::FLOWS_MAP)?.try_into()?;
        flows.insert(present, ConnEntry::default(), 0)?;
        for i in 0..many {
            flows.insert(flow(MANY_BASE + i), ConnEntry::default(), 0)?;
        }
        let mut compacts: HashMap<MapData, [u64; 2], ConnEntry> = h.take_map(names::COMPACT_MAP)?.try_into()?;
        compacts.insert(compact(&present), ConnEntry::default(), 0)?;
        let lru: HashMap<MapData, FlowKey, ConnEntry> = h.take_map(names::LRU_MAP)?.try_into()?;
        // Kept open: the maps live as long as a descriptor does (the programs hold them too).
        std::mem::forget(flows);
        std::mem::forget(compacts);
        let lookup = h.load_program(names::FLOW_LOOKUP_PROGRAM)?;
        let items = vec![
            Item { name: FLOW_HIT, repeat: 0, program: lookup.try_clone()?, input: frame_of(key_bytes(&present)), vary: Vary::default(), verdict: XDP_DROP },
            Item { name: FLOW_MISS, repeat: 0, program: lookup.try_clone()?, input: frame_of(key_bytes(&absent)), vary: Vary::default(), verdict: XDP_PASS },
            Item {
                name: FLOW_HIT_MANY,
                repeat: many,
                program: lookup,
                input: frame_of(key_bytes(&flow(MANY_BASE))),
                vary: Vary { offset: VARIED_OFFSET, base: MANY_BASE, count: many },
                verdict: XDP_DROP,
            },
            Item {
                name: COMPACT_HIT,
                repeat: 0,
                program: h.load_program(names::COMPACT_LOOKUP_PROGRAM)?,
                input: frame_of(key_bytes(&compact(&present))),
                vary: Vary::default(),
                verdict: XDP_DROP,
            },
            Item {
                name: LRU_INSERT,
                repeat: 0,
                program: h.load_program(names::LRU_INSERT_PROGRAM)?,
                input: frame_of(key_bytes(&flow(LRU_BASE))),
                vary: Vary { offset: VARIED_OFFSET, base: LRU_BASE, count: 0 },
                verdict: XDP_DROP,
            },
        ];
        // Without many entries (a filtered run) that row is left out.
        let items: Vec<Item> = items.into_iter().filter(|i| i.name != FLOW_HIT_MANY || many != 0).collect();
        let n = items.len();
        Ok(Self { items, lru, times: vec![Vec::new(); n], proven: vec![true; n] })
    }

    /// One round of every primitive; `drop`, `swap_tx`: the round's baselines. The LRU
    /// is emptied after its row, so every round inserts into the same empty table.
    pub fn round(&mut self, h: &mut Harness, repeat: u32, drop: f64, swap_tx: f64) -> Result<()> {
        for (i, item) in self.items.iter().enumerate() {
            let repeat = if item.repeat != 0 { item.repeat } else { repeat };
            h.tail_call(Some(&item.program))?;
            let restore = h.run(names::RESTORE_PROGRAM, &item.input, item.vary, repeat);
            let run = h.run(names::BALANCE_PROGRAM, &item.input, item.vary, repeat);
            h.tail_call(None)?;
            let (restore, run) = (restore?, run?);
            self.proven[i] &= run.verdict == item.verdict;
            self.times[i].push(RoundTimes { wrapper: run.ns, restore: restore.ns, drop, swap_tx });
            if item.name == LRU_INSERT {
                // Every timed iteration made one entry (the restore-only run made none).
                let keys: Vec<FlowKey> = self.lru.keys().collect::<Result<_, _>>()?;
                if run.verdict == item.verdict && keys.len() != repeat as usize {
                    bail!("{}: {} entries after {repeat} inserts", item.name, keys.len());
                }
                for k in keys {
                    self.lru.remove(&k)?;
                }
            }
        }
        Ok(())
    }

    pub fn finish(self) -> Vec<PrimitiveRow> {
        self.items
            .iter()
            .zip(&self.times)
            .zip(self.proven)
            .map(|((item, t), proven)| PrimitiveRow {
                primitive: item.name.into(),
                ns_alone: RoundTimes::median_of(t, |t| t.wrapper - t.restore),
                ns_per_packet: RoundTimes::median_of(t, |t| t.ns_per_packet()),
                proven,
            })
            .collect()
    }
}
