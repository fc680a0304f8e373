//! The login path: a whole login (TLS handshake on a new connection, then `POST
//! /v1/login` with the fast preset) through profile's loop and its job pool; one argon2id
//! verification per preset, which bounds logins/s per worker; a token drawn and stored
//! with the collision check; a session looked up in the lobby's cache and in the DB;
//! a play ticket verified.
//!
//! `ci/bench-login-lobby.sh` reads the `argon2_verify` figures (`--output-format
//! bencher`) to compute the expected login capacity (workers / verification time).

use std::hint::black_box;
use std::net::TcpStream;

use catwar_benches::fixtures::{login_request, Data, CLIENT_IP, NOBODY, TOKEN_IDLE_S};
use catwar_benches::raw::Conn;
use catwar_server::config::Argon2Preset;
use catwar_server::domain::db;
use catwar_server::domain::session::{Idle, SessionRule};
use catwar_server::domain::{ticket, token, users};
use catwar_server::services::lobby::sessions::{Auth, Sessions};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};

/// Users the login benchmark takes turns with, so no one id's session count or rate
/// window shapes the figure.
const LOGIN_USERS: u64 = 64;
/// Login workers: the benchmark logs in one client at a time, so one worker serves it
/// and the figure is one login's whole cost, handshake included.
const LOGIN_WORKERS: usize = 1;
/// Sessions in the lobby's cache while one is looked up: a busy lobby's worth, so the
/// lookup pays for a map that does not fit in the first cache level.
const CACHED_SESSIONS: u64 = 10_000;

fn login(c: &mut Criterion) {
    let data = Data::new(LOGIN_USERS);
    let profile = data.start_profile(LOGIN_WORKERS);
    let connector = data.profile_connector();
    let bodies: Vec<Vec<u8>> = (1..=LOGIN_USERS).map(login_request).collect();
    let mut next = 0;
    let mut group = c.benchmark_group("login");
    group.throughput(Throughput::Elements(1));
    group.bench_function("tls_fast_new_connection", |b| {
        b.iter(|| {
            let tcp = TcpStream::connect(profile.addr()).expect("a connection to profile");
            let tls = connector
                .connect("localhost", tcp)
                .expect("a TLS handshake");
            let mut conn = Conn::over(tls);
            next = (next + 1) % bodies.len();
            conn.exchange(&bodies[next]).expect("a granted login")
        })
    });
    group.finish();
    profile.shutdown().expect("profile stops");
}

fn argon2_verify(c: &mut Criterion) {
    let mut group = c.benchmark_group("argon2_verify");
    // One OWASP verification takes tens of milliseconds: one per sample keeps the
    // benchmark within its measurement time.
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(1));
    for (name, preset) in [("owasp", Argon2Preset::Owasp), ("fast", Argon2Preset::Fast)] {
        let phc = users::hash_password(&users::hasher(preset), "pw-user1").expect("a hash");
        group.bench_function(name, |b| {
            b.iter(|| assert!(users::verify_password(&phc, "pw-user1")))
        });
    }
    group.finish();
}

/// A token drawn alone, and drawn then stored as profile opens a session: the insert
/// into the user DB (WAL) is the collision check, refusing a hash already stored.
fn tokens(c: &mut Criterion) {
    let data = Data::new(1);
    let mut group = c.benchmark_group("token");
    group.throughput(Throughput::Elements(1));
    group.bench_function("draw", |b| {
        b.iter(|| token::new_token("user1", b"server-salt").expect("OS randomness"))
    });
    group.bench_function("draw_and_store", |b| b.iter(|| data.session("user1")));
    group.finish();
}

/// A presented token to its session: in the lobby's cache (every lobby request), and by
/// the session rule against the DB (router, observers, profile's refresh), which
/// records the use.
fn session_lookup(c: &mut Criterion) {
    let data = Data::new(1);
    let idle_ms = (TOKEN_IDLE_S * 1000) as i64;
    let mut cache = Sessions::new(idle_ms);
    let now = db::now_ms();
    let tokens: Vec<String> = (0..CACHED_SESSIONS)
        .map(|_| data.session("user1"))
        .collect();
    for token in &tokens {
        let hash = token::token_hash(token);
        let row = data.db().with(|c| db::session(c, &hash));
        cache.load(row.expect("a session read").expect("a stored session"));
    }
    let token = &tokens[tokens.len() / 2];
    let mut group = c.benchmark_group("session_lookup");
    group.throughput(Throughput::Elements(1));
    group.bench_function("lobby_cache", |b| {
        b.iter(|| {
            let hash = token::token_hash(black_box(token));
            match cache.authorize(&hash, CLIENT_IP, now, false) {
                Auth::User(user) => user,
                other => panic!("{other:?}"),
            }
        })
    });
    let rule = SessionRule {
        idle_ms,
        lobby: None,
        key: data.key.clone(),
    };
    group.bench_function("db_rule", |b| {
        b.iter(|| {
            rule.check(data.db(), token, CLIENT_IP, Idle::Applies, db::now_ms())
                .expect("a live session")
        })
    });
    group.finish();
}

fn ticket_verify(c: &mut Criterion) {
    let play = NOBODY;
    let t = ticket::issue(b"key", play, 7, "user1", 0).expect("a ticket");
    let mut group = c.benchmark_group("ticket");
    group.throughput(Throughput::Elements(1));
    group.bench_function("verify", |b| {
        b.iter(|| ticket::verify(b"key", play, &t, 0).expect("a valid ticket"))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = catwar_benches::criterion();
    targets = login, argon2_verify, tokens, session_lookup, ticket_verify
}
criterion_main!(benches);
