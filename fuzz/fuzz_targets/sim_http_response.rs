//! The simulator's HTTP client reading a response: the first byte is how many bytes each
//! read returns (so heads and bodies arrive split anywhere), the rest is what the server
//! sent. A response the client accepts must be framed as it claims. And the wire
//! contract both sides write down: whatever the server's own response writer produces,
//! the simulator reads back as written.
#![no_main]

use catwar_server::runtime::http::{Body, Response};
use catwar_sim::fuzzing::http_response;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, bytes)) = data.split_first() else {
        return;
    };
    let chunk = if first == 0 {
        bytes.len()
    } else {
        usize::from(first)
    };
    if let Ok(response) = http_response(bytes, chunk) {
        let length = response
            .headers
            .iter()
            .find(|(name, _)| name == "content-length")
            .map(|(_, v)| {
                v.parse::<usize>()
                    .expect("an accepted content-length parses")
            });
        assert_eq!(length.unwrap_or(0), response.body.len());
        assert!(response
            .headers
            .iter()
            .all(|(name, _)| *name == name.to_ascii_lowercase()));
    }

    let status = 100 + u16::from_le_bytes([first, bytes.first().copied().unwrap_or(0)]) % 500;
    let keep_alive = first % 2 == 0;
    let written = Response {
        status,
        headers: vec![("Retry-After", "1".to_string())],
        body: Body::Owned(bytes.to_vec()),
        close: false,
    };
    let mut wire = written.head_bytes(keep_alive);
    wire.extend_from_slice(bytes);
    let read = http_response(&wire, chunk).expect("the simulator reads what the server writes");
    assert_eq!(
        (read.status, read.body.as_slice(), read.keep_alive),
        (status, bytes, keep_alive)
    );
});
