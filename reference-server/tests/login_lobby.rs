//! Profile and lobby together, in-process: login over TLS, the lobby's session rules,
//! refresh and logout, rate limits, restarts, routing, and a loop that keeps answering
//! while every login worker is busy.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use catwar_server::config::Argon2Preset;
use catwar_server::domain::{db, ticket, tls, users};
use catwar_server::runtime::event_loop::{bind_loopback, Limits};
use catwar_server::runtime::running::Running;
use catwar_server::services::lobby::{self, LobbyConfig};
use catwar_server::services::profile::{
    self, ProfileConfig, LOGIN_FAILURES_PER_ID_MAX, LOGIN_QUEUE_MAX,
};

use crate::util::{connect_from, read_response, tls_request, wait_for, Raw};

struct Stack {
    dir: tempfile::TempDir,
    profile: Option<Running>,
    lobby: Option<Running>,
    lobby_addr: SocketAddr,
    config: LobbyConfig,
}

impl Stack {
    fn start(
        idle_s: u64,
        workers: usize,
        preset: Argon2Preset,
        users_count: u64,
        play: Vec<SocketAddr>,
    ) -> Stack {
        Stack::with_login_queue(idle_s, workers, preset, users_count, play, LOGIN_QUEUE_MAX)
    }

    fn with_login_queue(
        idle_s: u64,
        workers: usize,
        preset: Argon2Preset,
        users_count: u64,
        play: Vec<SocketAddr>,
        login_queue: usize,
    ) -> Stack {
        let dir = tempfile::tempdir().unwrap();
        users::seed(dir.path(), users_count, Some(preset)).unwrap();
        let config = LobbyConfig {
            data_dir: dir.path().into(),
            token_idle_s: idle_s,
            play_servers: play,
            players_per_match: 2,
            match_fill_timeout_s: 5,
            public: Default::default(),
        };
        let lobby =
            lobby::start(bind_loopback().unwrap(), config.clone(), Limits::default()).unwrap();
        let lobby_addr = lobby.addr();
        let profile = profile::start(
            bind_loopback().unwrap(),
            ProfileConfig {
                data_dir: dir.path().into(),
                lobby: lobby_addr,
                workers,
                login_queue,
                token_idle_s: idle_s,
                argon2: preset,
                public: Default::default(),
            },
            Limits::default(),
        )
        .unwrap();
        Stack {
            dir,
            profile: Some(profile),
            lobby: Some(lobby),
            lobby_addr,
            config,
        }
    }

    fn profile_addr(&self) -> SocketAddr {
        self.profile.as_ref().unwrap().addr()
    }

    fn cert(&self) -> PathBuf {
        tls::cert_path(self.dir.path())
    }

    /// One request over a new TLS connection that verifies the server certificate.
    fn tls(&self, method: &str, path: &str, bearer: Option<&str>, body: &str) -> Raw {
        tls_request(
            self.profile_addr(),
            &self.cert(),
            method,
            path,
            bearer,
            body,
        )
    }

    fn login(&self, id: &str, password: &str) -> Raw {
        self.tls(
            "POST",
            "/v1/login",
            None,
            &serde_json::json!({"id": id, "password": password}).to_string(),
        )
    }

    fn token(&self, id: &str) -> String {
        let raw = self.login(id, &users::seed_password(id));
        assert_eq!(raw.status, 200, "{:?}", String::from_utf8_lossy(&raw.body));
        raw.json()["token"].as_str().unwrap().to_string()
    }

    fn lobby(&self, method: &str, path: &str, token: &str, from: IpAddr) -> Raw {
        http_from(self.lobby_addr, from, method, path, token)
    }

    fn restart_lobby(&mut self) {
        self.lobby.take().unwrap().shutdown().unwrap();
        let listener = TcpListener::bind(self.lobby_addr).unwrap();
        self.lobby = Some(lobby::start(listener, self.config.clone(), Limits::default()).unwrap());
    }
}

fn http_from(addr: SocketAddr, from: IpAddr, method: &str, path: &str, token: &str) -> Raw {
    let mut stream = connect_from(from, addr);
    let head = format!(
        "{method} {path} HTTP/1.1\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).unwrap();
    read_response(&mut stream, &mut Vec::new()).expect("a response")
}

fn home() -> IpAddr {
    "127.0.0.1".parse().unwrap()
}

fn error(raw: &Raw) -> String {
    raw.json()["error"].as_str().unwrap_or_default().to_string()
}

#[test]
fn login_gives_a_token_and_the_lobby_serves_its_user() {
    let stack = Stack::start(600, 2, Argon2Preset::Fast, 50, vec![]);
    let raw = stack.login("user7", "pw-user7");
    assert_eq!(raw.status, 200);
    let body = raw.json();
    let token = body["token"].as_str().unwrap();
    assert!(catwar_server::domain::token::well_formed(token));
    assert_eq!(body["lobby"], stack.lobby_addr.to_string());
    assert_eq!(body["idle_timeout_s"], 600);
    let me = stack.lobby("GET", "/v1/me", token, home());
    assert_eq!(me.status, 200);
    let me = me.json();
    for field in ["id", "level", "xp", "rating", "rank", "wins", "losses"] {
        assert!(!me[field].is_null(), "{field} missing");
    }
    assert_eq!(me["id"], "user7");
    let page = stack
        .lobby("GET", "/v1/ranking?offset=5&limit=3", token, home())
        .json();
    assert_eq!(page["total"], 50);
    let ranks: Vec<u64> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["rank"].as_u64().unwrap())
        .collect();
    assert_eq!(ranks, [6, 7, 8]);
    for bad in [
        "/v1/ranking?limit=101",
        "/v1/ranking?offset=-1",
        "/v1/ranking?limit=x",
    ] {
        assert_eq!(stack.lobby("GET", bad, token, home()).status, 400, "{bad}");
    }
}

#[test]
fn wrong_id_and_wrong_password_get_the_same_answer_and_bad_bodies_name_the_field() {
    let stack = Stack::start(600, 2, Argon2Preset::Fast, 5, vec![]);
    let wrong_pw = stack.login("user1", "nope");
    let no_user = stack.login("user999", "nope");
    assert_eq!((wrong_pw.status, no_user.status), (401, 401));
    assert_eq!(
        wrong_pw.body, no_user.body,
        "no user-enumeration oracle in the body"
    );
    assert_eq!(error(&wrong_pw), "login_failed");
    for (body, field) in [
        ("{", "body"),
        (r#"{"id":"user1"}"#, "body.password"),
        (r#"{"id":1,"password":"x"}"#, "body.id"),
        (
            r#"{"id":"x'; DROP TABLE users; --","password":"x"}"#,
            "body.id",
        ),
    ] {
        let raw = stack.tls("POST", "/v1/login", None, body);
        assert_eq!(raw.status, 400, "{body}");
        assert!(
            raw.json()["detail"].as_str().unwrap().starts_with(field),
            "{body}"
        );
    }
    assert_eq!(
        stack.login("user1", "pw-user1").status,
        200,
        "the users table survived"
    );
}

#[test]
fn repeated_failures_for_one_id_are_rate_limited() {
    let stack = Stack::start(600, 2, Argon2Preset::Fast, 5, vec![]);
    for _ in 0..LOGIN_FAILURES_PER_ID_MAX {
        assert_eq!(stack.login("user2", "guess").status, 401);
    }
    let limited = stack.login("user2", "guess");
    assert_eq!(limited.status, 429);
    assert_eq!(error(&limited), "rate_limited");
    assert!(
        limited
            .header("retry-after")
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    // Even the right password waits out the window: that is what stops guessing.
    assert_eq!(stack.login("user2", "pw-user2").status, 429);
    assert_eq!(stack.login("user3", "pw-user3").status, 200);
}

#[test]
fn lobby_rules_access_denied_login_again_and_refresh_required() {
    let stack = Stack::start(1, 2, Argon2Preset::Fast, 5, vec![]);
    for token in ["", "abc", &"0".repeat(64)] {
        let raw = stack.lobby("GET", "/v1/me", token, home());
        assert_eq!(
            (raw.status, error(&raw).as_str()),
            (401, "access_denied"),
            "{token:?}"
        );
    }
    // Another IP: login_again, and the session is gone for its owner too.
    let token = stack.token("user1");
    let other: IpAddr = "127.0.0.2".parse().unwrap();
    assert_eq!(
        error(&stack.lobby("GET", "/v1/me", &token, other)),
        "login_again"
    );
    assert_eq!(
        error(&stack.lobby("GET", "/v1/me", &token, home())),
        "access_denied"
    );
    // Idle for at least the timeout (1 s here): refresh_required, then refresh.
    let token = stack.token("user2");
    assert_eq!(stack.lobby("GET", "/v1/me", &token, home()).status, 200);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        error(&stack.lobby("GET", "/v1/me", &token, home())),
        "refresh_required"
    );
    let refreshed = stack.tls("POST", "/v1/refresh", Some(&token), "");
    assert_eq!(refreshed.status, 200);
    let new = refreshed.json()["token"].as_str().unwrap().to_string();
    assert_ne!(new, token);
    assert_eq!(
        error(&stack.lobby("GET", "/v1/me", &token, home())),
        "access_denied",
        "old token dead at once"
    );
    assert_eq!(stack.lobby("GET", "/v1/me", &new, home()).status, 200);
    // Logout kills the new one.
    assert_eq!(stack.tls("POST", "/v1/logout", Some(&new), "").status, 204);
    assert_eq!(
        error(&stack.lobby("GET", "/v1/me", &new, home())),
        "access_denied"
    );
    assert_eq!(
        error(&stack.tls("POST", "/v1/refresh", Some(&new), "")),
        "access_denied"
    );
}

#[test]
fn sessions_and_revocations_survive_a_lobby_restart() {
    let mut stack = Stack::start(600, 2, Argon2Preset::Fast, 5, vec![]);
    let kept = stack.token("user1");
    let stolen = stack.token("user2");
    assert_eq!(stack.lobby("GET", "/v1/me", &kept, home()).status, 200);
    assert_eq!(
        error(&stack.lobby("GET", "/v1/me", &stolen, "127.0.0.3".parse().unwrap())),
        "login_again"
    );
    stack.restart_lobby();
    assert_eq!(stack.lobby("GET", "/v1/me", &kept, home()).status, 200);
    assert_eq!(
        error(&stack.lobby("GET", "/v1/me", &stolen, home())),
        "access_denied"
    );
}

#[test]
fn tokens_are_unique_across_many_logins() {
    let stack = Stack::start(600, 2, Argon2Preset::Fast, 20, vec![]);
    let mut tokens = std::collections::HashSet::new();
    for i in 0..200 {
        assert!(tokens.insert(stack.token(&format!("user{}", i % 20 + 1))));
    }
    let health = stack.tls("GET", "/healthz", None, "").json();
    assert_eq!(health["token_collisions"], 0);
}

#[test]
fn the_profile_loop_and_the_lobby_keep_answering_while_every_login_worker_is_busy() {
    // One worker and the OWASP cost: twenty logins keep it busy for a long while.
    let stack = Arc::new(Stack::start(600, 1, Argon2Preset::Owasp, 3, vec![]));
    let token = stack.token("user1");
    const LOGINS: usize = 20;
    let done = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..LOGINS)
        .map(|_| {
            let (stack, done) = (Arc::clone(&stack), Arc::clone(&done));
            std::thread::spawn(move || {
                let status = stack.login("user2", "pw-user2").status;
                done.fetch_add(1, Ordering::SeqCst);
                status
            })
        })
        .collect();
    let mut answered_while_busy = 0;
    for _ in 0..20 {
        let me = stack.lobby("GET", "/v1/me", &token, home());
        let health = stack.tls("GET", "/healthz", None, "");
        assert_eq!((me.status, health.status), (200, 200));
        if done.load(Ordering::SeqCst) < LOGINS {
            answered_while_busy += 1;
        }
    }
    let statuses: Vec<u16> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    assert!(
        statuses.iter().all(|&s| s == 200 || s == 503),
        "{statuses:?}"
    );
    assert!(
        answered_while_busy > 0,
        "the logins finished before the probes; the test proved nothing"
    );
}

#[test]
fn refresh_and_logout_answer_at_once_while_the_login_queue_is_full() {
    // One worker at the OWASP cost, and more logins than its short queue holds.
    const QUEUE: usize = 8;
    let stack = Arc::new(Stack::with_login_queue(
        600,
        1,
        Argon2Preset::Owasp,
        3,
        vec![],
        QUEUE,
    ));
    let (leaving, refreshing) = (stack.token("user1"), stack.token("user3"));
    const LOGINS: usize = QUEUE * 4;
    let refused = Arc::new(AtomicUsize::new(0));
    let pending = Arc::new(AtomicUsize::new(LOGINS));
    // The queued logins are not waited for: seconds of argon2 that prove nothing more.
    // The test's process ends with them.
    for _ in 0..LOGINS {
        let (stack, refused, pending) = (
            Arc::clone(&stack),
            Arc::clone(&refused),
            Arc::clone(&pending),
        );
        std::thread::spawn(move || {
            let status = stack.login("user2", "pw-user2").status;
            refused.fetch_add(usize::from(status == 503), Ordering::SeqCst);
            pending.fetch_sub(1, Ordering::SeqCst);
        });
    }
    // A login refused busy proves the queue is full.
    while refused.load(Ordering::SeqCst) == 0 {
        assert!(
            pending.load(Ordering::SeqCst) > 0,
            "every login was answered and none refused; the queue never filled"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let refresh = stack.tls("POST", "/v1/refresh", Some(&refreshing), "");
    let logout = stack.tls("POST", "/v1/logout", Some(&leaving), "");
    let still_pending = pending.load(Ordering::SeqCst);
    assert_eq!(refresh.status, 200, "{}", error(&refresh));
    assert_eq!(logout.status, 204, "{}", error(&logout));
    // Answered ahead of the queued logins, not after them.
    assert!(
        still_pending > 0,
        "the logout waited for every queued login"
    );
    let me = stack.lobby("GET", "/v1/me", &leaving, home());
    assert_eq!((me.status, error(&me).as_str()), (401, "access_denied"));
}

/// A stand-in play server that answers status polls, so routing can be tested before
/// the real play server exists.
fn fake_play_server(players: u64) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut line = String::new();
            let mut reader = BufReader::new(&stream);
            if reader.read_line(&mut line).is_ok() && line.contains("status") {
                let answer = format!("{{\"t\":\"status\",\"players\":{players},\"matches\":1}}\n");
                let _ = (&stream).write_all(answer.as_bytes());
            }
        }
    });
    addr
}

#[test]
fn start_routes_to_the_least_loaded_play_server_with_a_ticket_bound_to_the_user() {
    let busy = fake_play_server(50);
    let idle = fake_play_server(0);
    let stack = Stack::start(600, 2, Argon2Preset::Fast, 5, vec![busy, idle]);
    let token = stack.token("user4");
    let start = wait_for("a play server to be polled", || {
        let raw = stack.lobby("POST", "/v1/start", &token, home());
        (raw.status == 200).then(|| raw.json())
    });
    assert_eq!(start["play"], idle.to_string());
    let conn = db::open(&stack.dir.path().join(db::DB_FILE)).unwrap();
    let key = db::meta(&conn, ticket::TICKET_KEY_META).unwrap().unwrap();
    let claims = ticket::verify(
        key.as_bytes(),
        idle,
        start["ticket"].as_str().unwrap(),
        db::now_ms(),
    )
    .unwrap();
    assert_eq!(claims.user, "user4");
    assert_eq!(claims.match_id, start["match"].as_u64().unwrap());
    assert!(ticket::verify(
        key.as_bytes(),
        busy,
        start["ticket"].as_str().unwrap(),
        db::now_ms()
    )
    .is_err());
    // Two players per match: the next start joins the same match, the third opens another.
    let second = stack.lobby("POST", "/v1/start", &token, home()).json();
    assert_eq!(second["match"], start["match"]);
    let third = stack.lobby("POST", "/v1/start", &token, home()).json();
    assert_ne!(third["match"], start["match"]);
}

#[test]
fn start_without_play_servers_is_503_no_capacity() {
    let stack = Stack::start(600, 2, Argon2Preset::Fast, 2, vec![]);
    let token = stack.token("user1");
    let raw = stack.lobby("POST", "/v1/start", &token, home());
    assert_eq!((raw.status, error(&raw).as_str()), (503, "no_capacity"));
}
