//! Direct routing: only the Ethernet header changes; IP and ports stay as the client sent them.
use aya_ebpf::programs::XdpContext;
use network_types::eth::EthHdr;

use crate::parse::ptr_at;

/// Destination MAC := the real server's; source MAC := the director's, which is the
/// address the client's frame was sent to. The frame leaves by XDP_TX.
#[inline(always)]
pub fn rewrite(ctx: &XdpContext, real_mac: &[u8; 6]) -> Result<(), ()> {
    let eth: *mut EthHdr = ptr_at(ctx, 0)?;
    unsafe {
        (*eth).src_addr = (*eth).dst_addr;
        (*eth).dst_addr = *real_mac;
    }
    Ok(())
}
