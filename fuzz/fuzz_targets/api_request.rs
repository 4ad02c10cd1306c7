//! API requests: the JSON lines `xlb` commands send the daemon over its Unix socket
//! (api::read_message, at most one line of MAX_MESSAGE bytes).
//!
//! Properties: reading a message never panics; a request that is read, written back
//! with api::write_message and read again is the same request (compared as JSON, since
//! Request has no equality), and a `Batch` keeps its requests in order; a refused
//! message is an error, not a partial request.
#![no_main]

use xlb_core::api::{Request, read_message, write_message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = read_message::<Request>(&mut &data[..]) else { return };
    let mut wire = Vec::new();
    write_message(&mut wire, &request).expect("a request always serialises");
    assert_eq!(wire.last(), Some(&b'\n'), "a message is one line");
    assert_eq!(wire.iter().filter(|&&b| b == b'\n').count(), 1, "a message is one line");
    let again: Request = read_message(&mut &wire[..]).unwrap_or_else(|e| panic!("a written request does not read back: {e:#}"));
    let (a, b) = (serde_json::to_value(&request).unwrap(), serde_json::to_value(&again).unwrap());
    assert_eq!(a, b, "a request changes through the socket");
});
