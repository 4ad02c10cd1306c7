//! NAT (masquerading): the client's packets get the real's address and port as
//! destination, the real's replies the VIP and virtual port as source. The IPv4 and
//! TCP/UDP checksums are updated incrementally (RFC 1624).
use aya_ebpf::programs::XdpContext;
use lb_common::{PROTO_TCP, csum};
use network_types::{ip::Ipv4Hdr, tcp::TcpHdr, udp::UdpHdr};

use crate::parse::{Ipv4Flow, L3, ptr_at};

/// Which end of the packet a rewrite changes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum End {
    Source,
    Destination,
}

/// Rewrites one end's address and port to `ip` and `port` (wire order).
#[inline(always)]
pub fn rewrite(ctx: &XdpContext, pkt: &Ipv4Flow, end: End, ip: [u8; 4], port: [u8; 2]) -> Result<(), ()> {
    let iph: *mut Ipv4Hdr = ptr_at(ctx, L3)?;
    let old_ip = unsafe { if end == End::Source { (*iph).src_addr } else { (*iph).dst_addr } };
    let old_port = if end == End::Source { pkt.sport } else { pkt.dport };
    unsafe {
        if end == End::Source {
            (*iph).src_addr = ip;
        } else {
            (*iph).dst_addr = ip;
        }
        (*iph).check = csum::update32(u16::from_be_bytes((*iph).check), old_ip, ip).to_be_bytes();
    }
    // The transport checksum covers the pseudo-header's addresses and the port.
    let l4_update = |check: u16| {
        csum::update16(csum::update32(check, old_ip, ip), u16::from_be_bytes(old_port), u16::from_be_bytes(port))
    };
    if pkt.proto == PROTO_TCP {
        let tcp: *mut TcpHdr = ptr_at(ctx, pkt.l4)?;
        unsafe {
            if end == End::Source {
                (*tcp).source = port;
            } else {
                (*tcp).dest = port;
            }
            (*tcp).check = l4_update(u16::from_be_bytes((*tcp).check)).to_be_bytes();
        }
    } else {
        let udp: *mut UdpHdr = ptr_at(ctx, pkt.l4)?;
        unsafe {
            if end == End::Source {
                (*udp).src = port;
            } else {
                (*udp).dst = port;
            }
            // 0: the sender computed no checksum, and none is added.
            let check = u16::from_be_bytes((*udp).check);
            if check != 0 {
                (*udp).check = csum::udp_nonzero(l4_update(check)).to_be_bytes();
            }
        }
    }
    Ok(())
}
