//! The MACs the fast path's layer-2 check accepts (lb-ebpf's `l2`): for every NIC the
//! balancer is attached to, its own MAC in the INGRESS_MACS array (slot `ifindex & 255`)
//! and in EXTRA_MACS the further unicast MACs the kernel accepts on it. A frame for a
//! VIP addressed to another MAC is passed (`pass_other_host`) and the kernel drops it as
//! PACKET_OTHERHOST, as it drops it before IPVS: a switch that floods unknown unicast
//! (the owner's MAC aged out, a director died) makes no other director balance it.
//!
//! The further MACs (EXTRA_MACS) of NIC N: the MACs of the macvlan and macvtap links
//! whose lower device is N (keepalived's `use_vmac` VRRP MAC 00:00:5e:00:01:VRID, RFC
//! 5798 §7.3, arrives on N, where xlb runs), of VLAN links on N with a MAC of their own
//! (vlan_do_receive makes their frames PACKET_HOST), and of the bridge N is a port of.
//! A macvlan moved to another namespace is not seen (its lower is listed only there).
//! Two attached NICs whose indexes share a slot (equal modulo 256): the slot keeps the
//! lower index, and the other NIC's own MAC goes to EXTRA_MACS, found there (a hash
//! lookup more for its VIP frames).
//!
//! Filled by the daemon before it attaches (or takes over a pinned link), and again when
//! the kernel announces a link change and at every periodic resync. The maps are not
//! pinned: they live as long as the program, and a detached program takes them along.
use std::collections::{BTreeMap, BTreeSet, btree_map::Entry};

use anyhow::{Context, Result};
use lb_common::{INGRESS_MAC_SLOTS, IngressMac, MAX_EXTRA_MACS};

use crate::{maps::Maps, rtnl};

/// What the two maps should hold for a set of NICs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// INGRESS_MACS slot → its entry.
    pub slots: BTreeMap<u32, IngressMac>,
    /// EXTRA_MACS keys.
    pub extras: BTreeSet<IngressMac>,
}

fn entry(ifindex: u32, mac: [u8; 6]) -> IngressMac {
    IngressMac { ifindex, mac, _pad: [0; 2] }
}

/// A MAC a frame can be addressed to: not all-zero, not a group address (those pass the
/// check anyway).
fn unicast(mac: &[u8; 6]) -> bool {
    *mac != [0; 6] && mac[0] & 1 == 0
}

/// The plan for NICs `nics` (ifindexes) given the namespace's `links`. A NIC without an
/// Ethernet address (not in `links`, or no 6-byte IFLA_ADDRESS) gets nothing: its
/// frames are not checked.
pub fn plan(nics: &[u32], links: &[rtnl::LinkAddress]) -> Plan {
    let mut p = Plan::default();
    let by_index: BTreeMap<u32, &rtnl::LinkAddress> = links.iter().map(|l| (l.index, l)).collect();
    let mut sorted: Vec<u32> = nics.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    for &nic in &sorted {
        let Some(own) = by_index.get(&nic).and_then(|l| l.mac).filter(unicast) else { continue };
        let slot = nic & (INGRESS_MAC_SLOTS - 1);
        // The lower index keeps a shared slot; the others are found in EXTRA_MACS.
        match p.slots.entry(slot) {
            Entry::Vacant(v) => {
                v.insert(entry(nic, own));
            }
            Entry::Occupied(_) => {
                p.extras.insert(entry(nic, own));
            }
        }
        for l in links {
            let upper = matches!(l.kind.as_deref(), Some("macvlan" | "macvtap" | "vlan")) && l.lower == Some(nic);
            let bridge = by_index.get(&nic).and_then(|n| n.master) == Some(l.index) && l.kind.as_deref() == Some("bridge");
            if let Some(mac) = l.mac.filter(|m| (upper || bridge) && unicast(m) && *m != own) {
                p.extras.insert(entry(nic, mac));
            }
        }
    }
    p
}

/// Writes `plan` into the maps: slots and extra MACs not in it are cleared.
pub fn apply(maps: &mut Maps, plan: &Plan) -> Result<()> {
    anyhow::ensure!(
        plan.extras.len() <= MAX_EXTRA_MACS as usize,
        "{} MACs on the attached NICs' macvlan links, more than the {MAX_EXTRA_MACS} the fast path holds",
        plan.extras.len()
    );
    for slot in 0..INGRESS_MAC_SLOTS {
        let want = plan.slots.get(&slot).copied().unwrap_or_default();
        if maps.ingress_macs.get(&slot, 0).context("reading INGRESS_MACS")? != want {
            maps.ingress_macs.set(slot, want, 0).context("writing INGRESS_MACS")?;
        }
    }
    let present: Vec<IngressMac> = maps.extra_macs.keys().collect::<Result<_, _>>().context("reading EXTRA_MACS")?;
    for key in present.iter().filter(|k| !plan.extras.contains(k)) {
        maps.extra_macs.remove(key).context("removing from EXTRA_MACS")?;
    }
    for key in plan.extras.iter().filter(|k| !present.contains(k)) {
        maps.extra_macs.insert(key, 1, 0).context("writing EXTRA_MACS")?;
    }
    Ok(())
}

/// Registers the MACs of NICs `ifaces` (names) as the kernel reports them now; returns
/// the plan written.
pub fn register(maps: &mut Maps, ifaces: &[String]) -> Result<Plan> {
    let nics = ifaces.iter().map(|i| rtnl::ifindex(i)).collect::<Result<Vec<_>>>()?;
    let plan = plan(&nics, &rtnl::link_addresses()?);
    apply(maps, &plan)?;
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, mac: [u8; 6], kind: Option<&str>, lower: Option<u32>) -> rtnl::LinkAddress {
        rtnl::LinkAddress { index, mac: Some(mac), kind: kind.map(str::to_string), lower, master: None }
    }

    const ETH0: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
    const VMAC: [u8; 6] = [0x00, 0x00, 0x5e, 0x00, 0x01, 0x33];

    #[test]
    fn a_nic_gets_its_slot_and_its_macvlans_their_extra_entries() {
        let links = [
            link(1, [0; 6], None, None),
            link(2, ETH0, None, None),
            link(5, VMAC, Some("macvlan"), Some(2)),
            link(6, [0x02, 0, 0, 0, 0, 6], Some("macvlan"), Some(3)), // on another NIC
            link(7, ETH0, Some("vlan"), Some(2)),                     // the NIC's own MAC
            link(8, [0x02, 0, 0, 0, 0, 8], Some("veth"), Some(2)),    // not an upper
        ];
        let p = plan(&[2], &links);
        assert_eq!(p.slots, BTreeMap::from([(2, entry(2, ETH0))]));
        assert_eq!(p.extras, BTreeSet::from([entry(2, VMAC)]));
    }

    #[test]
    fn colliding_slots_keep_the_lower_index_and_put_the_other_mac_in_extra() {
        let other = [0x02, 0, 0, 0, 0, 2];
        let links = [link(258, other, None, None), link(2, ETH0, None, None)];
        let p = plan(&[258, 2], &links);
        assert_eq!(p.slots, BTreeMap::from([(2, entry(2, ETH0))]));
        assert_eq!(p.extras, BTreeSet::from([entry(258, other)]));
    }

    #[test]
    fn a_nic_without_an_ethernet_address_is_not_registered() {
        let p = plan(&[1, 9], &[link(1, [0; 6], None, None)]);
        assert_eq!(p, Plan::default());
    }

    #[test]
    fn the_bridge_a_nic_is_a_port_of_lends_its_mac() {
        let br = [0x02, 0xb0, 0, 0, 0, 1];
        let mut port = link(2, ETH0, None, None);
        port.master = Some(4);
        let p = plan(&[2], &[port, link(4, br, Some("bridge"), None)]);
        assert_eq!(p.extras, BTreeSet::from([entry(2, br)]));
    }
}
