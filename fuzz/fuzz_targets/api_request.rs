//! API requests: the JSON lines `xlb` commands send the daemon over its Unix socket
//! (api::decode_request, one line of at most MAX_MESSAGE bytes, in the versioned
//! envelope).
//!
//! Properties: decoding a line never panics; a request that is decoded, encoded again
//! with api::encode_request and decoded again is the same request (compared as JSON,
//! since Request has no equality), and a `Batch` keeps its requests in order; a refused
//! line gets an answer (a version mismatch or a malformed message), not a partial
//! request.
#![no_main]

use xlb_core::api::{MAX_MESSAGE, decode_request, encode_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let data = &data[..data.len().min(MAX_MESSAGE as usize)];
    let Ok(text) = std::str::from_utf8(data) else { return };
    let line = text.split_inclusive('\n').next().unwrap_or("");
    let request = match decode_request(line) {
        Ok(r) => r,
        Err(answer) => {
            assert!(answer.ends_with('\n') && answer.matches('\n').count() == 1, "an answer is one line: {answer:?}");
            return;
        }
    };
    let wire = encode_request(&request);
    assert_eq!(wire.matches('\n').count(), 1, "a message is one line");
    assert!(wire.ends_with('\n'), "a message is one line");
    let again = decode_request(&wire).unwrap_or_else(|e| panic!("an encoded request does not decode: {e}"));
    let (a, b) = (serde_json::to_value(&request).unwrap(), serde_json::to_value(&again).unwrap());
    assert_eq!(a, b, "a request changes through the socket");
});
