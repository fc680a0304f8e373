//! File-transfer node: whole files, ranges, ETags and path traversal.

use std::sync::Arc;

use catwar_server::domain::resources::{
    ensure_default, sha256_hex, Catalog, DEFAULT_CURRENT_VERSION,
};
use catwar_server::runtime::event_loop::{bind_loopback, Limits, ServerHandle};
use catwar_server::services::file_node;

use crate::util::{exchange, get};

fn start() -> (ServerHandle, Arc<Catalog>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    ensure_default(dir.path()).unwrap();
    let catalog = Arc::new(Catalog::load(dir.path()).unwrap());
    let server = file_node::start(
        bind_loopback().unwrap(),
        Arc::clone(&catalog),
        Limits::default(),
    )
    .unwrap();
    (server, catalog, dir)
}

fn ranged(addr: std::net::SocketAddr, path: &str, range: &str) -> crate::util::Raw {
    exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nRange: {range}\r\n\r\n").as_bytes(),
    )
    .0
}

#[test]
fn whole_file_matches_its_sha256_and_etag() {
    let (server, catalog, _dir) = start();
    let file = catalog.file(DEFAULT_CURRENT_VERSION, "catwar.pak").unwrap();
    let raw = get(
        server.addr(),
        &format!("/v1/files/{DEFAULT_CURRENT_VERSION}/catwar.pak"),
    );
    assert_eq!(raw.status, 200);
    assert_eq!(raw.body.len() as u64, file.entry.size);
    assert!(raw.body.len() >= 1024 * 1024);
    assert_eq!(sha256_hex(&raw.body), file.entry.sha256);
    assert_eq!(
        raw.header("etag").unwrap(),
        format!("\"{}\"", file.entry.sha256)
    );
    let etag = raw.header("etag").unwrap().to_string();
    let (raw, _) = exchange(
        server.addr(),
        format!("GET /v1/files/{DEFAULT_CURRENT_VERSION}/catwar.pak HTTP/1.1\r\nIf-None-Match: {etag}\r\n\r\n").as_bytes(),
    );
    assert_eq!(raw.status, 304);
    assert!(raw.body.is_empty());
    server.shutdown().unwrap();
}

#[test]
fn ranges_return_206_with_the_right_bytes() {
    let (server, catalog, _dir) = start();
    let path = format!("/v1/files/{DEFAULT_CURRENT_VERSION}/catwar.pak");
    let bytes = &catalog
        .file(DEFAULT_CURRENT_VERSION, "catwar.pak")
        .unwrap()
        .bytes;
    let len = bytes.len();
    let raw = ranged(server.addr(), &path, "bytes=100-199");
    assert_eq!(raw.status, 206);
    assert_eq!(raw.body, &bytes[100..200]);
    assert_eq!(
        raw.header("content-range").unwrap(),
        format!("bytes 100-199/{len}")
    );
    let raw = ranged(server.addr(), &path, "bytes=-10");
    assert_eq!(raw.body, &bytes[len - 10..]);
    let raw = ranged(server.addr(), &path, &format!("bytes={}-", len - 5));
    assert_eq!(raw.body, &bytes[len - 5..]);
    // Resuming a download: the two halves join into the whole file.
    let mut joined = ranged(server.addr(), &path, "bytes=0-524287").body;
    joined.extend(ranged(server.addr(), &path, "bytes=524288-").body);
    assert_eq!(joined, &bytes[..]);
    let raw = ranged(server.addr(), &path, &format!("bytes={len}-"));
    assert_eq!(raw.status, 416);
    assert_eq!(
        raw.header("content-range").unwrap(),
        format!("bytes */{len}")
    );
    server.shutdown().unwrap();
}

#[test]
fn traversal_is_400_and_never_serves_outside_the_resources() {
    let (server, _catalog, _dir) = start();
    for target in [
        "/v1/files/1.1.0/../current",
        "/v1/files/1.1.0/%2e%2e/current",
        "/v1/files/1.1.0/%2E%2E%2F..%2Fcurrent",
        "/v1/files/../resources/1.1.0/NOTICE.txt",
        "/v1/files/1.1.0//etc/passwd",
        "/v1/files/1.1.0/..%5c..%5cetc%5cpasswd",
        "/v1/files/%2fetc/passwd",
        "/v1/files/1.1.0/NOTICE.txt%00.png",
    ] {
        let raw = get(server.addr(), target);
        assert_eq!(raw.status, 400, "{target}");
        assert_eq!(raw.json()["error"], "bad_request", "{target}");
    }
    assert_eq!(get(server.addr(), "/v1/files/1.1.0/nope.bin").status, 404);
    assert_eq!(get(server.addr(), "/v1/files/9.9.9/catwar.pak").status, 404);
    assert_eq!(
        get(server.addr(), "/v1/files/1.0.0/maps/arena.map").status,
        200
    );
    server.shutdown().unwrap();
}

#[test]
fn healthz_reports_open_connections() {
    let (server, _catalog, _dir) = start();
    let raw = get(server.addr(), "/healthz");
    assert_eq!(raw.status, 200);
    assert_eq!(raw.json()["status"], "ok");
    assert!(raw.json()["active_conns"].as_u64().unwrap() >= 1);
    server.shutdown().unwrap();
}
