//! The seed corpora reach what they were written for: each http_head seed gets the
//! answers named here, so a change that makes the fuzzer start from nothing but 404s
//! (a renamed route, a broken fixture) fails `cargo test` in fuzz/.

use catwar_fuzz::{check_framing, Services};

fn seed(target: &str, name: &str) -> Vec<u8> {
    let path = format!("{}/corpus/{target}/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn http_head_seeds_reach_every_service() {
    let tmp = std::env::temp_dir().join("catwar-fuzz-seeds-test");
    std::fs::create_dir_all(&tmp).unwrap();
    std::env::set_var("TMPDIR", &tmp);
    let mut s = Services::new();
    let expected: &[(&str, &[u16])] = &[
        ("storage-current", &[200]),
        ("storage-stale", &[503]),
        ("storage-bad-version", &[400]),
        ("storage-pipelined", &[405, 200, 404]),
        ("file-range", &[206]),
        ("file-suffix-range", &[206]),
        ("file-etag-then-health", &[200, 200]),
        ("file-traversal", &[400]),
        ("balancer-pick-status", &[503, 200, 400]),
        ("balancer-method", &[405]),
        ("profile-login", &[401]),
        ("profile-refresh", &[401]),
        ("profile-logout-bad-token", &[401]),
        ("lobby-me", &[200]),
        ("lobby-ranking", &[200]),
        ("lobby-start", &[503]),
        ("lobby-internal-wrong-key", &[403]),
        ("router-observer", &[404]),
        ("router-bad-match", &[400]),
        ("bad-chunked", &[411]),
        ("bad-too-long-body", &[413]),
        ("bad-content-length", &[400]),
        ("bad-garbage", &[400]),
        ("partial-head", &[]),
    ];
    for (name, statuses) in expected {
        let input = seed("http_head", name);
        let (which, bytes) = input.split_first().unwrap();
        let out = match which % 6 {
            0 => s.storage.serve(bytes),
            1 => s.file_node.serve(bytes),
            2 => s.balancer.serve(bytes),
            3 => s.profile.serve(bytes),
            4 => s.lobby.serve(bytes),
            _ => s.router.serve(bytes),
        };
        assert_eq!(
            check_framing(&out),
            *statuses,
            "{name}: {}",
            String::from_utf8_lossy(&out)
        );
    }
}
