//! A fixed workload for instruction counts (`ci/callgrind.sh`): COUNT repetitions of one
//! hot path, with everything it needs started in this process.
//!
//! `workload lobby-me COUNT`: `GET /v1/me` to the lobby through its real mio loop over
//! one keep-alive loopback connection, from the cached session.
//! `workload login-fast COUNT`: a login with the fast argon2 preset through profile's
//! loop and its job pool, each on a new connection with its own TLS handshake.
//! `workload tick-64 COUNT`: one tick of a 64-player match, its `state` line encoded for
//! every player, as the play server's tick runs them.
//!
//! Setting up (users seeded, services started, the first request that fills the
//! lobby's cache) costs the same whatever COUNT is, so the instructions of one
//! repetition are the difference between two counts divided by the difference of COUNT.
//! The client's own instructions are in the figure too; they are a small, fixed part.

use std::hint::black_box;
use std::net::TcpStream;

use catwar_benches::fixtures::Data;
use catwar_benches::raw::{self, Conn};
use catwar_server::domain::{tls, users};
use catwar_server::services::play::game::Game;
use catwar_server::services::play::wire;

/// Users the logins take turns with, so no one id's rate limit or session count grows
/// with COUNT.
const LOGIN_USERS: u64 = 64;
/// One login worker: logins come one at a time, and a second idle worker would only add
/// its wake-ups.
const LOGIN_WORKERS: usize = 1;
/// Players in the measured match.
const TICK_PLAYERS: usize = 64;
/// Ticks played before measuring, so cats have left their spawn points and are in
/// range of each other.
const TICK_WARM_TICKS: u64 = 20;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (name, count) = match args.as_slice() {
        [name, count] => (name.as_str(), count.parse::<u64>()),
        _ => usage(),
    };
    let Ok(count) = count else { usage() };
    match name {
        "lobby-me" => lobby_me(count),
        "login-fast" => login_fast(count),
        "tick-64" => tick_64(count),
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!("usage: workload lobby-me|login-fast|tick-64 COUNT (see ci/callgrind.sh)");
    std::process::exit(64);
}

fn lobby_me(count: u64) {
    let data = Data::new(1);
    let token = data.session("user1");
    let lobby = data.start_lobby();
    let request = raw::get("/v1/me", Some(&token));
    let mut conn = Conn::connect(lobby.addr()).expect("a connection to the lobby");
    // The first request loads the session and the user on a worker; the measured ones
    // are answered from the cache, as a busy lobby answers them.
    conn.exchange(&request).expect("GET /v1/me");
    for _ in 0..count {
        conn.exchange(&request).expect("GET /v1/me");
    }
    drop(conn);
    lobby.shutdown().expect("the lobby stops");
}

fn login_fast(count: u64) {
    let data = Data::new(LOGIN_USERS);
    let profile = data.start_profile(LOGIN_WORKERS);
    let cert = std::fs::read(tls::cert_path(data.path())).expect("profile's certificate");
    let connector = native_tls::TlsConnector::builder()
        .add_root_certificate(native_tls::Certificate::from_pem(&cert).expect("a PEM"))
        .disable_built_in_roots(true)
        .build()
        .expect("a TLS connector");
    for n in 0..count {
        let id = format!("user{}", n % LOGIN_USERS + 1);
        let body = serde_json::json!({"id": id, "password": users::seed_password(&id)});
        let tcp = TcpStream::connect(profile.addr()).expect("a connection to profile");
        let tls = connector
            .connect("localhost", tcp)
            .expect("a TLS handshake");
        Conn::over(tls)
            .exchange(&raw::post_json("/v1/login", &body.to_string()))
            .expect("a granted login");
    }
    profile.shutdown().expect("profile stops");
}

/// Every player's input for `tick`: a direction of its own, and one in three fires.
fn steer(game: &mut Game, tick: u64) {
    for p in 0..game.players() {
        let angle = (p as f64 * 0.7) + tick as f64 * 0.1;
        let fire = (p as u64 + tick) % 3 == 0;
        game.input(p, tick + 1, angle.cos(), angle.sin(), fire)
            .expect("a fresh input");
    }
}

fn tick_64(count: u64) {
    let mut warm = Game::default();
    for p in 1..=TICK_PLAYERS {
        warm.add(&format!("user{p}"));
    }
    for tick in 0..TICK_WARM_TICKS {
        steer(&mut warm, tick);
        warm.step();
    }
    steer(&mut warm, TICK_WARM_TICKS);
    // Each repetition ticks a copy of the same warm match, so every one does the same
    // work: ticking one match on and on would kill its cats and shrink the tick.
    for _ in 0..count {
        let mut game = warm.clone();
        game.step();
        let state = wire::StateLine::new(game.tick(), &game.view());
        let mut out = Vec::new();
        for p in 0..game.players() {
            state.write_to(game.ack(p), &mut out);
        }
        black_box(out);
    }
}
