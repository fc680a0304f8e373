//! The HTTP path of every service: a request head parsed and routed by the event loop
//! (no socket), the lobby's `GET /v1/me` through the real mio loop over loopback with 1
//! and 32 keep-alive connections, and a file node's download of the game's pak.

use std::hint::black_box;
use std::time::Instant;

use catwar_benches::fixtures::Data;
use catwar_benches::raw::{self, Conn};
use catwar_server::domain::resources::DEFAULT_CURRENT_VERSION;
use catwar_server::runtime::event_loop::fuzzing::Harness;
use catwar_server::services::lobby::Lobby;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// Connection counts of the loopback benchmark: one client waiting for each answer, and
/// the 32 connections the README's wrk and simulator comparisons use.
const CONNECTIONS: [usize; 2] = [1, 32];

/// Head parsing, the limits, routing and the answer, as the loop runs them on bytes it
/// has read: `/healthz` is parse and route alone, `/v1/me` adds the session rule on the
/// cached session and the user's JSON. Each request is measured in requests/s and in
/// bytes of request parsed per second.
fn parse_route(c: &mut Criterion) {
    let data = Data::new(1);
    let token = data.session("user1");
    let lobby = Lobby::new(&data.lobby_config()).expect("the lobby");
    let mut harness = Harness::new(lobby).expect("a loopback connection");
    let requests = [
        ("healthz", raw::get("/healthz", None)),
        ("lobby_me", raw::get("/v1/me", Some(&token))),
    ];
    let mut group = c.benchmark_group("http_parse_route");
    for (name, request) in &requests {
        // The first `/v1/me` loads the session and the user on a worker; then both
        // answer from the cache, as a busy lobby does.
        let answer = harness.serve(request);
        assert!(answer.starts_with(b"HTTP/1.1 200"), "{name}");
        for (unit, throughput) in [
            ("requests", Throughput::Elements(1)),
            ("bytes", Throughput::Bytes(request.len() as u64)),
        ] {
            group.throughput(throughput);
            group.bench_function(format!("{name}/{unit}"), |b| {
                b.iter(|| black_box(harness.serve(request)))
            });
        }
    }
    group.finish();
}

/// `GET /v1/me` through the lobby's loop over loopback: each connection sends one
/// request and reads its answer, all connections at once, like a closed-loop load
/// generator.
fn lobby_loopback(c: &mut Criterion) {
    let data = Data::new(1);
    let token = data.session("user1");
    let lobby = data.start_lobby();
    let request = raw::get("/v1/me", Some(&token));
    let mut group = c.benchmark_group("http_loopback_lobby_me");
    for n in CONNECTIONS {
        let mut conns: Vec<Conn> = (0..n)
            .map(|_| Conn::connect(lobby.addr()).expect("a connection to the lobby"))
            .collect();
        for conn in &mut conns {
            conn.exchange(&request).expect("GET /v1/me");
        }
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(format!("connections/{n}"), |b| {
            b.iter_custom(|iters| {
                let started = Instant::now();
                for _ in 0..iters {
                    for conn in &mut conns {
                        conn.send(&request).expect("a request sent");
                    }
                    for conn in &mut conns {
                        let (status, _) = conn.receive().expect("an answer");
                        assert_eq!(status, 200);
                    }
                }
                started.elapsed()
            })
        });
    }
    group.finish();
    lobby.shutdown().expect("the lobby stops");
}

/// The current version's pak from a file node over one keep-alive connection.
fn file_download(c: &mut Criterion) {
    let data = Data::new(1);
    let node = data.start_file_node();
    let request = raw::get(
        &format!("/v1/files/{DEFAULT_CURRENT_VERSION}/catwar.pak"),
        None,
    );
    let mut conn = Conn::connect(node.addr()).expect("a connection to the file node");
    let bytes = conn.exchange(&request).expect("the pak");
    let mut group = c.benchmark_group("http_file_node");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("download_pak", |b| {
        b.iter(|| conn.exchange(&request).expect("the pak"))
    });
    group.finish();
    node.shutdown().expect("the file node stops");
}

criterion_group! {
    name = benches;
    config = catwar_benches::criterion();
    targets = parse_route, lobby_loopback, file_download
}
criterion_main!(benches);
