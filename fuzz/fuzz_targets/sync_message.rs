//! Connection sync messages: the datagrams a backup sync daemon reads from its multicast
//! group (sync::decode, IPVS's sync protocol version 1: `struct ip_vs_sync_mesg` and its
//! `ip_vs_sync_v4` / `ip_vs_sync_v6` entries with their optional parameters).
//!
//! Properties: decoding never panics; a message that decodes, encoded again
//! (sync::encode) and decoded, is the same message; and that encoding is a fixed point
//! (encoding it once more gives the same bytes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use xlb_core::sync::{decode, encode};

fuzz_target!(|data: &[u8]| {
    let Ok(message) = decode(data) else { return };
    let bytes = encode(&message);
    assert!(bytes.len() <= data.len(), "an encoding is never longer than what it was read from");
    let again = decode(&bytes).unwrap_or_else(|e| panic!("an encoded message does not decode: {e}"));
    assert_eq!(again, message, "a message changes through encode and decode");
    assert_eq!(encode(&again), bytes, "the encoding is not a fixed point");
});
