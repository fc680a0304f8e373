//! The match observer's `watch` line: what a watcher sends before it gets the stream.
//! The first byte chooses the match the observer serves; the rest is the line as
//! `read_line` hands it over (valid UTF-8 only). A token that passes the parse goes on
//! to the session rule's first step, the well-formedness check and the hash.
#![no_main]

use catwar_server::domain::token::{token_hash, well_formed};
use catwar_server::services::observer::parse_watch;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&match_id, line)) = data.split_first() else {
        return;
    };
    let Ok(line) = std::str::from_utf8(line) else {
        return;
    };
    match parse_watch(line, u64::from(match_id)) {
        Ok(token) => {
            let v: serde_json::Value = serde_json::from_str(line).expect("a parsed line is JSON");
            assert_eq!(v["t"], "watch");
            assert_eq!(v["match"].as_u64(), Some(u64::from(match_id)));
            if well_formed(&token) {
                assert_eq!(token_hash(&token).len(), 64);
            }
        }
        Err(code) => assert!(
            [
                "bad_json",
                "expected_watch",
                "unknown_match",
                "access_denied"
            ]
            .contains(&code),
            "{code}"
        ),
    }
});
