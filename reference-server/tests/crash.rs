//! Crash safety (SPEC §5: nothing committed is lost when any process is killed): a real
//! SIGKILL (`catwar-server kill`) at the moment that matters, then what the restarted
//! service and the user DB hold. Sessions survive profile and lobby deaths; a play server
//! killed mid-match leaves its players a clean close, the match recorded aborted and no
//! result at all; one killed right after `end` keeps every result. After every kill the
//! DB passes `PRAGMA integrity_check`.
//!
//! The lobby's revocation under a SIGKILL right after `login_again` is
//! `session_rule::a_lobby_revocation_survives_a_sigkill_right_after_the_answer`.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;

use catwar_server::config::Argon2Preset;
use catwar_server::domain::{db, token, users};
use catwar_server::services::profile::{SESSION_AGE_S_MAX, SESSION_PRUNE_MARGIN_MS};
use serde_json::{json, Value};

use crate::util::{connect, exchange, server_bin, tls_request, wait_for, Raw, Up};

/// Settings every topology here shares: cheap hashes, one play server (so the lobby's
/// seat is predictable), two players a match, and restarts after 100 ms.
const BASE: [&str; 10] = [
    "--argon2",
    "fast",
    "--restart-delay-ms",
    "100",
    "--play-servers",
    "1",
    "--players-per-match",
    "2",
    "--match-fill-timeout-s",
    "1",
];

fn up(match_ticks: u64) -> Up {
    let ticks = match_ticks.to_string();
    let mut args: Vec<&str> = BASE.to_vec();
    args.extend(["--match-ticks", &ticks]);
    let up = Up::start(&args);
    users::seed(up.data(), 4, Some(Argon2Preset::Fast)).unwrap();
    up
}

fn users_db(up: &Up) -> rusqlite::Connection {
    db::open(&up.data().join(db::DB_FILE)).unwrap()
}

/// SIGKILLs `service` through `catwar-server kill` and waits until the supervisor has
/// it back: a new pid in topology.json that accepts connections.
fn kill_and_wait_back(up: &Up, service: &str) {
    let before = up.topology().service(service).unwrap().pid;
    let killed = std::process::Command::new(server_bin())
        .args(["kill", service, "--data"])
        .arg(up.data())
        .status()
        .unwrap();
    assert!(killed.success(), "kill {service}");
    assert_integrity_ok(up.data());
    wait_for(&format!("{service} back under a new pid"), || {
        let entry = up.topology().service(service).ok()?.clone();
        (entry.pid != before).then_some(())?;
        TcpStream::connect(entry.addr).ok().map(|_| ())
    });
    assert_integrity_ok(up.data());
}

fn assert_integrity_ok(data: &Path) {
    let conn = db::open(&data.join(db::DB_FILE)).unwrap();
    assert_eq!(db::integrity_check(&conn).unwrap(), "ok");
}

fn login(up: &Up, user: &str) -> String {
    let cert = up.data().join("tls").join("cert.pem");
    let body = json!({"id": user, "password": format!("pw-{user}")}).to_string();
    let raw = tls_request(up.addr("profile"), &cert, "POST", "/v1/login", None, &body);
    assert_eq!(raw.status, 200, "{}", String::from_utf8_lossy(&raw.body));
    raw.json()["token"].as_str().unwrap().to_string()
}

fn refresh(up: &Up, token: &str) -> Raw {
    let cert = up.data().join("tls").join("cert.pem");
    tls_request(
        up.addr("profile"),
        &cert,
        "POST",
        "/v1/refresh",
        Some(token),
        "",
    )
}

fn lobby(up: &Up, method: &str, path: &str, token: &str) -> Raw {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\n\r\n"
    );
    exchange(up.addr("lobby"), request.as_bytes()).0
}

/// The lobby's `/v1/me` status and error code (empty on success).
fn me(up: &Up, token: &str) -> (u16, String) {
    let raw = lobby(up, "GET", "/v1/me", token);
    let code = match raw.status {
        200 => String::new(),
        _ => raw.json()["error"].as_str().unwrap_or("").to_string(),
    };
    (raw.status, code)
}

/// (wins, losses, rating, xp, level) of `user` in the DB.
fn totals(conn: &rusqlite::Connection, user: &str) -> (i64, i64, i64, i64, i64) {
    let row = db::user_row(conn, user).unwrap().unwrap();
    (row.wins, row.losses, row.rating, row.xp, row.level)
}

fn match_recorded(conn: &rusqlite::Connection, match_id: u64) -> bool {
    conn.query_row(
        "SELECT COUNT(*) FROM matches WHERE id = ?1",
        [match_id as i64],
        |r| r.get::<_, i64>(0),
    )
    .unwrap()
        == 1
}

fn unfinished(conn: &rusqlite::Connection, match_id: u64) -> bool {
    conn.query_row(
        "SELECT COUNT(*) FROM unfinished_matches WHERE id = ?1",
        [match_id as i64],
        |r| r.get::<_, i64>(0),
    )
    .unwrap()
        == 1
}

/// A JSON-lines connection that reads a line cut short by a kill as the end of the
/// stream, as a client must.
struct Lines {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Lines {
    fn connect(addr: SocketAddr) -> Lines {
        let stream = connect(addr);
        let reader = BufReader::new(stream.try_clone().unwrap());
        Lines { stream, reader }
    }

    fn send(&mut self, v: Value) {
        writeln!(self.stream, "{v}").unwrap();
    }

    /// The next complete line, or `None` once the connection closed (or broke).
    fn recv(&mut self) -> Option<Value> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) if !line.ends_with('\n') => None,
            Ok(_) => Some(serde_json::from_str(&line).expect("a JSON line")),
        }
    }

    /// Reads until a line of type `t` (returned) or the end of the stream (`None`).
    fn until(&mut self, t: &str) -> Option<Value> {
        loop {
            let line = self.recv()?;
            if line["t"] == t {
                return Some(line);
            }
        }
    }
}

/// Two players, user1 and user2, in one match of the only play server, each at its first
/// `state`; returns the match, their connections and tokens.
fn two_players_in_a_match(up: &Up) -> (u64, Vec<Lines>, Vec<String>) {
    let tokens: Vec<String> = ["user1", "user2"].iter().map(|u| login(up, u)).collect();
    let mut seats = Vec::new();
    for t in &tokens {
        let raw = lobby(up, "POST", "/v1/start", t);
        assert_eq!(raw.status, 200, "{}", String::from_utf8_lossy(&raw.body));
        seats.push(raw.json());
    }
    let match_id = seats[0]["match"].as_u64().unwrap();
    assert_eq!(
        seats[1]["match"].as_u64(),
        Some(match_id),
        "one match fills"
    );
    let mut players = Vec::new();
    for seat in &seats {
        let mut p = Lines::connect(seat["play"].as_str().unwrap().parse().unwrap());
        p.send(json!({"t": "join", "ticket": seat["ticket"]}));
        let joined = p.recv().unwrap();
        assert_eq!(joined["t"], "joined", "{joined}");
        players.push(p);
    }
    for p in &mut players {
        let state = p.until("state").expect("the match runs");
        assert_eq!(state["tick"], 1);
    }
    (match_id, players, tokens)
}

#[test]
fn sessions_survive_a_sigkill_of_profile_and_of_the_lobby_and_only_dead_ones_are_pruned() {
    let up = up(100);
    let t1 = login(&up, "user1");
    // Killed right after the login answers: the session was committed before it.
    kill_and_wait_back(&up, "profile");
    let t2 = login(&up, "user2");
    // Sessions nobody can use any more, and one idle but young enough to refresh.
    let conn = users_db(&up);
    let now = db::now_ms();
    let long_ago = now - SESSION_AGE_S_MAX * 1000 - SESSION_PRUNE_MARGIN_MS - 60_000;
    let row = |user: &str, created_ms: i64, last_used_ms: i64| {
        let t = token::new_token(user, b"crash").unwrap();
        let row = db::SessionRow {
            token_hash: token::token_hash(&t),
            user_id: user.into(),
            ip: "127.0.0.1".into(),
            lobby: up.addr("lobby").to_string(),
            created_ms,
            last_used_ms,
            revoked: false,
        };
        assert!(db::insert_session(&conn, &row).unwrap());
        (t, row.token_hash)
    };
    let (_, dead) = row("user3", long_ago, long_ago);
    let (_, revoked) = row("user3", now, now);
    db::revoke(&conn, &revoked).unwrap();
    let (idle, idle_hash) = row("user4", now - 2 * 3600 * 1000, now - 2 * 3600 * 1000);
    kill_and_wait_back(&up, "profile");
    // The restarted profile pruned on start: the dead and the revoked are gone ...
    assert!(
        db::session(&conn, &dead).unwrap().is_none(),
        "dead session pruned"
    );
    assert!(
        db::session(&conn, &revoked).unwrap().is_none(),
        "revoked session pruned"
    );
    // ... and every usable session is still there.
    assert!(
        db::session(&conn, &idle_hash).unwrap().is_some(),
        "refreshable kept"
    );
    for t in [&t1, &t2] {
        assert!(db::session(&conn, &token::token_hash(t)).unwrap().is_some());
        assert_eq!(me(&up, t), (200, String::new()));
    }
    assert_eq!(me(&up, &idle), (401, "refresh_required".to_string()));
    // The restarted profile refreshes a session from before the kill.
    let refreshed = refresh(&up, &t1);
    assert_eq!(
        refreshed.status,
        200,
        "{}",
        String::from_utf8_lossy(&refreshed.body)
    );
    let t1 = refreshed.json()["token"].as_str().unwrap().to_string();
    // The lobby killed right after it served both: its cache is gone, the DB is not.
    assert_eq!(me(&up, &t1), (200, String::new()));
    kill_and_wait_back(&up, "lobby");
    for t in [&t1, &t2] {
        assert_eq!(me(&up, t), (200, String::new()));
    }
}

#[test]
fn a_play_server_killed_mid_match_leaves_a_clean_close_an_aborted_match_and_no_result() {
    // 2,000 ticks at 20 Hz: the match is far from its end when it dies.
    let up = up(2_000);
    let conn = users_db(&up);
    let before: Vec<_> = ["user1", "user2"]
        .iter()
        .map(|u| totals(&conn, u))
        .collect();
    let (match_id, mut players, tokens) = two_players_in_a_match(&up);
    // A watcher through an observer of the match, at its first relayed tick.
    let raw = exchange(
        up.addr("router"),
        format!(
            "GET /v1/observer?match={match_id} HTTP/1.1\r\nAuthorization: Bearer {}\r\n\r\n",
            tokens[0]
        )
        .as_bytes(),
    )
    .0;
    assert_eq!(raw.status, 200, "{}", String::from_utf8_lossy(&raw.body));
    let mut watcher = Lines::connect(raw.json()["observer"].as_str().unwrap().parse().unwrap());
    watcher.send(json!({"t": "watch", "match": match_id, "token": tokens[0]}));
    assert!(watcher.until("state").is_some(), "the observer relays");
    // The match was recorded as open before it could end.
    wait_for("the match recorded as unfinished", || {
        unfinished(&conn, match_id).then_some(())
    });
    kill_and_wait_back(&up, "play-0");
    // Every player and watcher sees the stream end, with an error line at most: never
    // an `end`, and never a hang.
    for p in players.iter_mut().chain([&mut watcher]) {
        while let Some(line) = p.recv() {
            assert!(
                line["t"] == "state" || line["t"] == "error",
                "after the kill: {line}"
            );
        }
    }
    // The restarted server marked it aborted before serving anyone; no result exists.
    assert!(db::match_aborted_ms(&conn, match_id).unwrap().is_some());
    assert!(!match_recorded(&conn, match_id), "no result row");
    let after: Vec<_> = ["user1", "user2"]
        .iter()
        .map(|u| totals(&conn, u))
        .collect();
    assert_eq!(after, before, "no user's stats changed");
    // The same players play again on the restarted server once the lobby saw it back.
    wait_for("a new match on the restarted play server", || {
        let raw = lobby(&up, "POST", "/v1/start", &tokens[0]);
        (raw.status == 200).then_some(())?;
        let seat = raw.json();
        let mut p = Lines::connect(seat["play"].as_str()?.parse().ok()?);
        p.send(json!({"t": "join", "ticket": seat["ticket"]}));
        (p.recv()?["t"] == "joined").then_some(())
    });
    assert_integrity_ok(up.data());
}

#[test]
fn a_play_server_killed_right_after_end_keeps_every_result() {
    // 20 ticks at 20 Hz: a one-second match.
    let up = up(20);
    let conn = users_db(&up);
    let (match_id, mut players, _) = two_players_in_a_match(&up);
    let end = players[0].until("end").expect("the match ends");
    kill_and_wait_back(&up, "play-0");
    assert!(match_recorded(&conn, match_id));
    assert!(
        !unfinished(&conn, match_id),
        "finished, so not left to abort"
    );
    assert_eq!(db::match_aborted_ms(&conn, match_id).unwrap(), None);
    let results = end["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    for r in results {
        let announced = (
            r["wins"].as_i64().unwrap(),
            r["losses"].as_i64().unwrap(),
            r["rating"].as_i64().unwrap(),
            r["xp"].as_i64().unwrap(),
            r["level"].as_i64().unwrap(),
        );
        assert_eq!(totals(&conn, r["id"].as_str().unwrap()), announced, "{r}");
        assert_eq!(announced.0 + announced.1, 1, "one match played: {r}");
    }
    // The other player got the same `end`, or a close if the kill came first.
    if let Some(other) = players[1].until("end") {
        assert_eq!(other, end);
    }
    assert_integrity_ok(up.data());
}
