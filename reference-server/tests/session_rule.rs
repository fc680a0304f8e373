//! The session rule (SPEC §3) at every door a token is presented to: the lobby, the
//! router and a match observer give the same codes; another IP revokes the session for
//! good (committed before the answer, so the service that revoked it refuses it after a
//! restart, and a SIGKILL right after the answer cannot undo it); the idle timeout
//! applies everywhere.

use std::net::{IpAddr, SocketAddr};

use catwar_server::domain::{db, token};
use catwar_server::runtime::event_loop::{bind_loopback, Limits};
use catwar_server::services::router::{self, RouterConfig};

use crate::play::{Arena, Line, TOKEN_IDLE_S};
use crate::util::{connect_from, exchange, read_response, server_bin, wait_for, Up};
use std::io::Write;

const HOME: &str = "127.0.0.1";
const ELSEWHERE: &str = "127.0.0.2";

#[derive(Debug, Clone, Copy)]
enum Door {
    Lobby,
    Router,
    Observer(SocketAddr),
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// The error code a door answers for `token` presented from `from`, or "ok".
fn present(arena: &Arena, door: Door, token: &str, from: &str) -> String {
    match door {
        Door::Lobby => http_code(arena.lobby.addr(), "/v1/me", token, from, 200),
        // Match 999 exists nowhere: a token the rule lets through gets 404 unknown_match.
        Door::Router => http_code(
            arena.router.addr(),
            "/v1/observer?match=999",
            token,
            from,
            404,
        ),
        Door::Observer(addr) => {
            let mut line = Line::connect_from(ip(from), addr);
            line.send(serde_json::json!({"t": "watch", "match": MATCH, "token": token}));
            match line.recv() {
                Some(msg) if msg["t"] == "error" => msg["error"].as_str().unwrap().to_string(),
                Some(_) => "ok".into(),
                None => "closed".into(),
            }
        }
    }
}

fn http_code(addr: SocketAddr, path: &str, token: &str, from: &str, ok: u16) -> String {
    let mut stream = connect_from(ip(from), addr);
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    .unwrap();
    let raw = read_response(&mut stream, &mut Vec::new()).expect("a response");
    if raw.status == ok {
        return "ok".into();
    }
    assert_eq!(raw.status, 401, "{}", String::from_utf8_lossy(&raw.body));
    raw.json()["error"].as_str().unwrap().to_string()
}

/// The match the observer door watches.
const MATCH: u64 = 91;

/// An arena with a player waiting in [`MATCH`] and an observer of it (the match fills
/// only with a second player, so the observer stays up while the tests run).
fn arena_with_observer() -> (Arena, Line, SocketAddr) {
    let arena = Arena::start_tuned(
        |dir, session| {
            std::sync::Arc::new(
                catwar_server::services::observer::process::ProcessSpawner::new(
                    env!("CARGO_BIN_EXE_catwar-server").into(),
                    dir.into(),
                    session,
                ),
            )
        },
        |config| config.fill_timeout = std::time::Duration::from_secs(3600),
    );
    let (player, joined) = Line::join(arena.play_addr, &arena.ticket("user1", MATCH));
    assert_eq!(joined["t"], "joined");
    let asker = arena.token("user1");
    let (raw, _) = exchange(
        arena.router.addr(),
        format!("GET /v1/observer?match={MATCH} HTTP/1.1\r\nAuthorization: Bearer {asker}\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(raw.status, 200, "{}", String::from_utf8_lossy(&raw.body));
    let observer = raw.json()["observer"].as_str().unwrap().parse().unwrap();
    (arena, player, observer)
}

fn revoked_in_db(arena: &Arena, token: &str) -> bool {
    db::session(&arena.db(), &token::token_hash(token))
        .unwrap()
        .expect("the session row")
        .revoked
}

/// A session for `user` from [`HOME`] last used `idle_s` seconds ago.
fn idle_token(arena: &Arena, user: &str, idle_s: u64) -> String {
    let t = arena.token(user);
    let then = db::now_ms() - (idle_s * 1000) as i64;
    arena
        .db()
        .execute(
            "UPDATE sessions SET last_used_ms = ?1, created_ms = ?1 WHERE token_hash = ?2",
            rusqlite::params![then, token::token_hash(&t)],
        )
        .unwrap();
    t
}

#[test]
fn every_door_gives_the_same_codes_for_unknown_foreign_and_idle_tokens() {
    let (arena, _player, observer) = arena_with_observer();
    for door in [Door::Lobby, Door::Router, Door::Observer(observer)] {
        assert_eq!(
            present(&arena, door, &"0".repeat(64), HOME),
            "access_denied",
            "{door:?}"
        );
        assert_eq!(
            present(&arena, door, "not a token", HOME),
            "access_denied",
            "{door:?}"
        );
        let idle = idle_token(&arena, "user2", TOKEN_IDLE_S + 1);
        assert_eq!(
            present(&arena, door, &idle, HOME),
            "refresh_required",
            "{door:?}"
        );
        // Another IP is judged before idleness: the idle session is revoked too.
        assert_eq!(
            present(&arena, door, &idle, ELSEWHERE),
            "login_again",
            "{door:?}"
        );
        assert!(revoked_in_db(&arena, &idle), "{door:?}: revoked in the DB");
        let fresh = arena.token("user3");
        assert_eq!(
            present(&arena, door, &fresh, ELSEWHERE),
            "login_again",
            "{door:?}"
        );
        // The revocation holds for the session's owner too, at every door.
        for other in [Door::Lobby, Door::Router, Door::Observer(observer)] {
            assert_eq!(
                present(&arena, other, &fresh, HOME),
                "access_denied",
                "{door:?} then {other:?}"
            );
        }
    }
}

#[test]
fn a_use_at_the_router_counts_against_the_idle_timeout() {
    let (arena, _player, _observer) = arena_with_observer();
    let t = idle_token(&arena, "user4", TOKEN_IDLE_S - 1);
    assert_eq!(present(&arena, Door::Router, &t, HOME), "ok");
    let last = db::session(&arena.db(), &token::token_hash(&t))
        .unwrap()
        .unwrap()
        .last_used_ms;
    assert!(db::now_ms() - last < 60_000, "the router recorded the use");
}

#[test]
fn a_router_revocation_holds_after_the_router_restarts() {
    let (mut arena, _player, _observer) = arena_with_observer();
    let t = arena.token("user5");
    assert_eq!(present(&arena, Door::Router, &t, ELSEWHERE), "login_again");
    let lobby = arena.lobby.addr();
    let restarted = router::start(
        bind_loopback().unwrap(),
        RouterConfig {
            data_dir: arena.dir.path().into(),
            play_servers: vec![arena.play_addr],
            lobby: Some(lobby),
            token_idle_s: TOKEN_IDLE_S,
        },
        Limits::default(),
    )
    .unwrap();
    std::mem::replace(&mut arena.router, restarted)
        .shutdown()
        .unwrap();
    assert_eq!(present(&arena, Door::Router, &t, HOME), "access_denied");
    // The lobby was told: its cache refuses the token at once, not after a reload.
    assert_eq!(present(&arena, Door::Lobby, &t, HOME), "access_denied");
}

#[test]
fn a_lobby_revocation_survives_a_sigkill_right_after_the_answer() {
    let up = Up::start(&["--argon2", "fast", "--restart-delay-ms", "100"]);
    let data = up.data().to_path_buf();
    let users = data.join(db::DB_FILE);
    catwar_server::domain::users::seed(&data, 1, Some(catwar_server::config::Argon2Preset::Fast))
        .unwrap();
    let lobby = up.addr("lobby");
    let t = token::new_token("user1", b"test").unwrap();
    let now = db::now_ms();
    let row = db::SessionRow {
        token_hash: token::token_hash(&t),
        user_id: "user1".into(),
        ip: HOME.into(),
        lobby: lobby.to_string(),
        created_ms: now,
        last_used_ms: now,
        revoked: false,
    };
    assert!(db::insert_session(&db::open(&users).unwrap(), &row).unwrap());
    assert_eq!(http_code(lobby, "/v1/me", &t, HOME, 200), "ok");
    assert_eq!(
        http_code(lobby, "/v1/me", &t, ELSEWHERE, 200),
        "login_again"
    );
    // SIGKILL at once: a revocation left for the 100 ms flusher would be lost here.
    let killed = std::process::Command::new(server_bin())
        .args(["kill", "lobby", "--data"])
        .arg(&data)
        .status()
        .unwrap();
    assert!(killed.success());
    let revoked = db::session(&db::open(&users).unwrap(), &row.token_hash)
        .unwrap()
        .unwrap()
        .revoked;
    assert!(revoked, "the revocation was committed before the answer");
    let pid_before = up.topology().service("lobby").unwrap().pid;
    wait_for("the lobby to come back", || {
        let s = up.topology();
        let entry = s.service("lobby").ok()?;
        (entry.pid != pid_before).then_some(())
    });
    wait_for("the restarted lobby to answer", || {
        std::net::TcpStream::connect(up.addr("lobby")).ok()
    });
    assert_eq!(
        http_code(up.addr("lobby"), "/v1/me", &t, HOME, 200),
        "access_denied"
    );
}
