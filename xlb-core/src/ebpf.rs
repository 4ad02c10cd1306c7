/// The XDP object built by build.rs.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-ebpf"));
/// The same object built without the diagnostics (lb-ebpf's `diagnostics` feature: no
/// aya-log calls, no `xlb trace` hook), for the bench's cost comparison only.
pub static OBJECT_NODIAG: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-ebpf-nodiag"));
