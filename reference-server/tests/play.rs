//! Play server, router and process observers, in-process: matches from join to end,
//! results committed before `end`, ticket rules, bad lines, and observers that relay
//! every tick in order.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use catwar_server::config::Argon2Preset;
use catwar_server::domain::db;
use catwar_server::domain::{ticket, token, users};
use catwar_server::runtime::event_loop::{bind_loopback, Limits};
use catwar_server::runtime::running::Running;
use catwar_server::services::lobby::{self, LobbyConfig};
use catwar_server::services::observer::process::ProcessSpawner;
use catwar_server::services::observer::{SessionArgs, Spawner};
use catwar_server::services::play::{self, PlayConfig};
use catwar_server::services::router::{self, RouterConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::util::{connect, exchange, wait_for};

pub const TICKS: u64 = 40;
/// The idle timeout of the arena's lobby, router and observers.
pub const TOKEN_IDLE_S: u64 = 600;

pub struct Arena {
    pub dir: tempfile::TempDir,
    pub play: Option<Running>,
    pub play_addr: SocketAddr,
    pub lobby: Running,
    pub router: Running,
}

impl Arena {
    pub fn start() -> Arena {
        Arena::start_with(|dir, session| {
            Arc::new(ProcessSpawner::new(
                env!("CARGO_BIN_EXE_catwar-server").into(),
                dir.into(),
                session,
            ))
        })
    }

    /// An arena whose play server starts observers with the spawner `make` builds for
    /// the data folder and the session rule's settings.
    pub fn start_with(
        make: impl FnOnce(&std::path::Path, SessionArgs) -> Arc<dyn Spawner>,
    ) -> Arena {
        Arena::start_tuned(make, |_| {})
    }

    /// Like [`Arena::start_with`], with the play server's config changed by `tune`.
    pub fn start_tuned(
        make: impl FnOnce(&std::path::Path, SessionArgs) -> Arc<dyn Spawner>,
        tune: impl FnOnce(&mut PlayConfig),
    ) -> Arena {
        let dir = tempfile::tempdir().unwrap();
        users::seed(dir.path(), 10, Some(Argon2Preset::Fast)).unwrap();
        let play_listener = bind_loopback().unwrap();
        let play_addr = play_listener.local_addr().unwrap();
        let lobby = lobby::start(
            bind_loopback().unwrap(),
            LobbyConfig {
                data_dir: dir.path().into(),
                token_idle_s: TOKEN_IDLE_S,
                play_servers: vec![play_addr],
                players_per_match: 2,
                match_fill_timeout_s: 5,
                public: Default::default(),
            },
            Limits::default(),
        )
        .unwrap();
        let spawner = make(
            dir.path(),
            SessionArgs {
                token_idle_s: TOKEN_IDLE_S,
                lobby: Some(lobby.addr()),
            },
        );
        let mut config = PlayConfig {
            data_dir: dir.path().into(),
            public: play_addr,
            lobby: Some(lobby.addr()),
            players_per_match: 2,
            fill_timeout: Duration::from_secs(5),
            match_ticks: TICKS,
            tick_hz: 50,
            spawner,
            conns_max: play::CONNS_MAX,
            handshake_timeout: Duration::from_millis(play::HANDSHAKE_TIMEOUT_MS),
        };
        tune(&mut config);
        let play = play::start(play_listener, config).unwrap();
        let router = router::start(
            bind_loopback().unwrap(),
            RouterConfig {
                data_dir: dir.path().into(),
                play_servers: vec![play_addr],
                lobby: Some(lobby.addr()),
                token_idle_s: TOKEN_IDLE_S,
            },
            Limits::default(),
        )
        .unwrap();
        Arena {
            dir,
            play: Some(play),
            play_addr,
            lobby,
            router,
        }
    }

    pub fn db(&self) -> rusqlite::Connection {
        db::open(&self.dir.path().join(db::DB_FILE)).unwrap()
    }

    pub fn ticket(&self, user: &str, match_id: u64) -> String {
        let key = db::meta(&self.db(), ticket::TICKET_KEY_META)
            .unwrap()
            .unwrap();
        ticket::issue(key.as_bytes(), self.play_addr, match_id, user, db::now_ms()).unwrap()
    }

    /// A session token for `user` from 127.0.0.1, written straight to the DB.
    pub fn token(&self, user: &str) -> String {
        let t = token::new_token(user, b"test").unwrap();
        let now = db::now_ms();
        let row = db::SessionRow {
            token_hash: token::token_hash(&t),
            user_id: user.into(),
            ip: "127.0.0.1".into(),
            lobby: self.lobby.addr().to_string(),
            created_ms: now,
            last_used_ms: now,
            revoked: false,
        };
        assert!(db::insert_session(&self.db(), &row).unwrap());
        t
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        if let Some(play) = self.play.take() {
            let _ = play.shutdown();
        }
    }
}

pub struct Line {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Line {
    pub fn connect(addr: SocketAddr) -> Line {
        let stream = connect(addr);
        let reader = BufReader::new(stream.try_clone().unwrap());
        Line { stream, reader }
    }

    /// A connection from the local address `from`, such as 127.0.0.2.
    pub fn connect_from(from: std::net::IpAddr, addr: SocketAddr) -> Line {
        let stream = crate::util::connect_from(from, addr);
        let reader = BufReader::new(stream.try_clone().unwrap());
        Line { stream, reader }
    }

    pub fn send(&mut self, v: serde_json::Value) {
        writeln!(self.stream, "{v}").unwrap();
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// The next line, or None once the server closed the connection.
    pub fn recv(&mut self) -> Option<serde_json::Value> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(serde_json::from_str(&line).unwrap()),
        }
    }

    pub fn join(addr: SocketAddr, ticket: &str) -> (Line, serde_json::Value) {
        let mut line = Line::connect(addr);
        line.send(serde_json::json!({"t": "join", "ticket": ticket}));
        let answer = line.recv().unwrap();
        (line, answer)
    }
}

#[test]
fn a_match_runs_to_its_end_and_results_are_committed_before_end() {
    let arena = Arena::start();
    let (mut a, joined) = Line::join(arena.play_addr, &arena.ticket("user1", 7));
    assert_eq!(
        joined,
        serde_json::json!({"t": "joined", "match": 7, "player": 0})
    );
    let (mut b, joined) = Line::join(arena.play_addr, &arena.ticket("user2", 7));
    assert_eq!(joined["player"], 1);
    let mut ticks = Vec::new();
    let mut seq = 0;
    let end = loop {
        seq += 1;
        a.send(serde_json::json!({"t": "input", "seq": seq, "dx": 0.6, "dy": 0.0, "fire": true}));
        b.send(serde_json::json!({"t": "input", "seq": seq, "dx": -0.6, "dy": 0.0, "fire": false}));
        let msg = a.recv().unwrap();
        match msg["t"].as_str().unwrap() {
            "state" => {
                ticks.push(msg["tick"].as_u64().unwrap());
                assert!(
                    msg["ack"].as_u64().unwrap() <= seq,
                    "ack never runs ahead of what was sent"
                );
                assert_eq!(msg["players"].as_array().unwrap().len(), 2);
            }
            "end" => break msg,
            other => panic!("unexpected {other}: {msg}"),
        }
    };
    assert_eq!(
        ticks,
        (1..=ticks.len() as u64).collect::<Vec<_>>(),
        "every tick, in order"
    );
    assert!(ticks.len() as u64 <= TICKS);
    // The results in `end` are already in the DB.
    let conn = arena.db();
    for r in end["results"].as_array().unwrap() {
        let row = db::user_row(&conn, r["id"].as_str().unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(
            (row.wins, row.losses, row.rating, row.xp),
            (
                r["wins"].as_i64().unwrap(),
                r["losses"].as_i64().unwrap(),
                r["rating"].as_i64().unwrap(),
                r["xp"].as_i64().unwrap()
            )
        );
        assert_eq!(row.wins + row.losses, 1);
    }
    let recorded: i64 = conn
        .query_row("SELECT COUNT(*) FROM matches WHERE id = 7", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(recorded, 1);
    // The lobby shows the new stats at once.
    let token = arena.token("user1");
    let (me, _) = exchange(
        arena.lobby.addr(),
        format!("GET /v1/me HTTP/1.1\r\nAuthorization: Bearer {token}\r\n\r\n").as_bytes(),
    );
    assert_eq!(
        me.json()["wins"].as_i64().unwrap() + me.json()["losses"].as_i64().unwrap(),
        1
    );
}

#[test]
fn tickets_are_single_use_bound_and_unforgeable() {
    let arena = Arena::start();
    let t = arena.ticket("user3", 9);
    let (_keep, first) = Line::join(arena.play_addr, &t);
    assert_eq!(first["player"], 0);
    assert_eq!(first["t"], "joined");
    let (_, replay) = Line::join(arena.play_addr, &t);
    assert_eq!(replay["error"], "ticket_used");
    // A second ticket for the same user and match is a reconnect: it takes the seat and
    // the old connection is told so and closed.
    let (mut old, _) = (_keep, ());
    let (_new, rejoined) = Line::join(arena.play_addr, &arena.ticket("user3", 9));
    assert_eq!(rejoined["player"], 0);
    assert_eq!(old.recv().unwrap()["error"], "replaced");
    assert!(old.recv().is_none(), "the replaced connection is closed");
    let forged = t.replacen("user3", "user4", 1);
    assert_eq!(
        Line::join(arena.play_addr, &forged).1["error"],
        "ticket_invalid"
    );
    let key = db::meta(&arena.db(), ticket::TICKET_KEY_META)
        .unwrap()
        .unwrap();
    let elsewhere = ticket::issue(
        key.as_bytes(),
        "127.0.0.1:1".parse().unwrap(),
        9,
        "user4",
        db::now_ms(),
    )
    .unwrap();
    assert_eq!(
        Line::join(arena.play_addr, &elsewhere).1["error"],
        "ticket_invalid"
    );
    let expired = ticket::issue(
        key.as_bytes(),
        arena.play_addr,
        9,
        "user4",
        db::now_ms() - ticket::TICKET_TTL_MS - 1000,
    )
    .unwrap();
    assert_eq!(
        Line::join(arena.play_addr, &expired).1["error"],
        "ticket_expired"
    );
}

#[test]
fn a_ticket_issued_before_the_play_server_started_is_refused() {
    // Spent nonces live in the play server's memory: after a restart, a ticket from
    // before it might be a replay.
    let before = db::now_ms() - 1;
    let arena = Arena::start();
    let key = db::meta(&arena.db(), ticket::TICKET_KEY_META)
        .unwrap()
        .unwrap();
    let old = ticket::issue(key.as_bytes(), arena.play_addr, 9, "user4", before).unwrap();
    assert_eq!(
        Line::join(arena.play_addr, &old).1["error"],
        "ticket_expired"
    );
    let fresh = arena.ticket("user4", 9);
    assert_eq!(Line::join(arena.play_addr, &fresh).1["t"], "joined");
}

#[test]
fn silent_connections_time_out_and_those_beyond_the_cap_are_told_busy() {
    const CONNS: usize = 3;
    let arena = Arena::start_tuned(
        |dir, session| {
            Arc::new(ProcessSpawner::new(
                env!("CARGO_BIN_EXE_catwar-server").into(),
                dir.into(),
                session,
            ))
        },
        |config| {
            config.conns_max = CONNS;
            config.handshake_timeout = Duration::from_millis(300);
        },
    );
    // One more than the cap, all silent: each is either refused at once (`busy`) or
    // accepted and, having said nothing, timed out. The lobby's load polls may take a
    // slot for a moment, so only the sum is exact.
    let mut silent: Vec<Line> = (0..=CONNS)
        .map(|_| Line::connect(arena.play_addr))
        .collect();
    let (mut busy, mut timeout) = (0, 0);
    for line in &mut silent {
        match line.recv().map(|v| v["error"].clone()) {
            Some(e) if e == "busy" => busy += 1,
            Some(e) if e == "timeout" => timeout += 1,
            other => panic!("expected busy or timeout, got {other:?}"),
        }
        assert!(line.recv().is_none(), "closed after its error");
    }
    assert_eq!(busy + timeout, CONNS + 1);
    assert!(busy >= 1 && timeout >= 1, "busy {busy}, timeout {timeout}");
    // The slots are free again.
    let ticket = arena.ticket("user1", 5);
    assert_eq!(Line::join(arena.play_addr, &ticket).1["t"], "joined");
}

#[test]
fn bad_lines_get_errors_and_persistent_offenders_are_disconnected() {
    let arena = Arena::start();
    let mut offender = Line::connect(arena.play_addr);
    offender.send_raw(b"not json\n");
    assert_eq!(offender.recv().unwrap()["error"], "bad_json");
    offender.send(serde_json::json!({"t": "input", "seq": 1, "dx": 0, "dy": 0, "fire": false}));
    assert_eq!(offender.recv().unwrap()["error"], "not_joined");
    let (mut player, _) = Line::join(arena.play_addr, &arena.ticket("user5", 11));
    // A direction longer than 1 is no bad line: it is taken, so its `seq` is spent.
    player.send(serde_json::json!({"t": "input", "seq": 1, "dx": 3.0, "dy": 0, "fire": false}));
    player.send(serde_json::json!({"t": "input", "seq": 1, "dx": 0.1, "dy": 0, "fire": false}));
    assert_eq!(player.recv().unwrap()["error"], "stale_seq");
    let mut errors = 2;
    loop {
        offender.send_raw(b"{\"t\":\"dance\"}\n");
        match offender.recv() {
            Some(v) => {
                assert_eq!(v["error"], "unknown_type");
                errors += 1;
            }
            None => break,
        }
        assert!(errors <= 20, "never disconnected");
    }
    // A line longer than 64 KiB without an end is refused too.
    let mut huge = Line::connect(arena.play_addr);
    huge.send_raw(&vec![b'x'; 70 * 1024]);
    assert_eq!(huge.recv().unwrap()["error"], "line_too_long");
    // Everyone else is still served.
    let mut probe = Line::connect(arena.play_addr);
    probe.send(serde_json::json!({"t": "status"}));
    assert_eq!(probe.recv().unwrap()["t"], "status");
}

#[test]
fn random_directions_are_applied_and_acked_and_never_disconnect() {
    const INPUTS: u64 = 50;
    /// Inputs sent after each `state`, so they arrive over several ticks.
    const INPUTS_PER_STATE: u64 = 5;
    let arena = Arena::start();
    let (mut a, _) = Line::join(arena.play_addr, &arena.ticket("user8", 41));
    let (_b, _) = Line::join(arena.play_addr, &arena.ticket("user9", 41));
    // Uniform in [-1, 1]²: about a fifth of them are longer than 1, as an analog
    // stick's diagonals are. The seed is fixed so every run sends the same ones.
    let mut rng = StdRng::seed_from_u64(41);
    let directions: Vec<(f64, f64)> = (0..INPUTS)
        .map(|_| (rng.random_range(-1.0..=1.0), rng.random_range(-1.0..=1.0)))
        .collect();
    assert!(directions.iter().any(|(dx, dy)| dx.hypot(*dy) > 1.0));
    let mut sent = 0;
    let mut last_ack = 0;
    loop {
        for &(dx, dy) in directions
            .iter()
            .skip(sent as usize)
            .take(INPUTS_PER_STATE as usize)
        {
            sent += 1;
            a.send(
                serde_json::json!({"t": "input", "seq": sent, "dx": dx, "dy": dy, "fire": false}),
            );
        }
        let msg = a.recv().expect("never disconnected before the end");
        match msg["t"].as_str().unwrap() {
            "state" => last_ack = msg["ack"].as_u64().unwrap(),
            "end" => break,
            _ => panic!("unexpected line {msg}"),
        }
    }
    assert_eq!(sent, INPUTS, "the match outlasted the inputs");
    assert_eq!(last_ack, INPUTS, "every input was applied");
}

#[test]
fn the_router_starts_an_observer_that_relays_every_tick_in_order_then_exits() {
    let arena = Arena::start();
    let token = arena.token("user6");
    let (mut a, _) = Line::join(arena.play_addr, &arena.ticket("user6", 21));
    let ask = |t: &str, m: &str| {
        let (raw, _) = exchange(
            arena.router.addr(),
            format!("GET /v1/observer?match={m} HTTP/1.1\r\nAuthorization: Bearer {t}\r\n\r\n")
                .as_bytes(),
        );
        raw
    };
    assert_eq!(ask(&"0".repeat(64), "21").status, 401);
    assert_eq!(ask(&token, "999").status, 404);
    let raw = ask(&token, "21");
    assert_eq!(raw.status, 200, "{:?}", String::from_utf8_lossy(&raw.body));
    let observer: SocketAddr = raw.json()["observer"].as_str().unwrap().parse().unwrap();
    let mut bad = Line::connect(observer);
    bad.send(serde_json::json!({"t": "watch", "match": 21, "token": "0".repeat(64)}));
    assert_eq!(bad.recv().unwrap()["error"], "access_denied");
    // A session is 127.0.0.1's: from another address the stream is refused (and that
    // session revoked, so a token of its own is spent here).
    let spent = arena.token("user6");
    let mut elsewhere = Line::connect_from("127.0.0.2".parse().unwrap(), observer);
    elsewhere.send(serde_json::json!({"t": "watch", "match": 21, "token": spent}));
    assert_eq!(elsewhere.recv().unwrap()["error"], "login_again");
    let mut watcher = Line::connect(observer);
    watcher.send(serde_json::json!({"t": "watch", "match": 21, "token": token}));
    // The second player never comes: the match starts after the fill timeout with one.
    let mut seq = 0;
    let player_end = loop {
        seq += 1;
        a.send(serde_json::json!({"t": "input", "seq": seq, "dx": 0.0, "dy": 0.5, "fire": false}));
        let msg = a.recv().unwrap();
        if msg["t"] == "end" {
            break msg;
        }
    };
    let mut ticks = Vec::new();
    let watcher_end = loop {
        let msg = watcher.recv().expect("the stream ends with end");
        match msg["t"].as_str().unwrap() {
            "state" => ticks.push(msg["tick"].as_u64().unwrap()),
            "end" => break msg,
            other => panic!("unexpected {other}"),
        }
    };
    assert_eq!(watcher_end, player_end);
    assert!(!ticks.is_empty());
    assert_eq!(
        ticks,
        (ticks[0]..ticks[0] + ticks.len() as u64).collect::<Vec<_>>(),
        "no gaps, in order"
    );
    assert_eq!(*ticks.last().unwrap(), TICKS);
    // The observer exits after its match: its port stops accepting.
    wait_for("the observer to exit", || {
        TcpStream::connect(observer).is_err().then_some(())
    });
}

#[test]
fn stopping_the_play_server_stops_its_observers() {
    let mut arena = Arena::start();
    let token = arena.token("user7");
    let (_a, _) = Line::join(arena.play_addr, &arena.ticket("user7", 31));
    let mut observers = Vec::new();
    for _ in 0..3 {
        let (raw, _) = exchange(
            arena.router.addr(),
            format!("GET /v1/observer?match=31 HTTP/1.1\r\nAuthorization: Bearer {token}\r\n\r\n")
                .as_bytes(),
        );
        observers.push(
            raw.json()["observer"]
                .as_str()
                .unwrap()
                .parse::<SocketAddr>()
                .unwrap(),
        );
    }
    for &o in &observers {
        assert!(TcpStream::connect(o).is_ok());
    }
    arena.play.take().unwrap().shutdown().unwrap();
    for &o in &observers {
        wait_for("observers to be stopped", || {
            TcpStream::connect(o).is_err().then_some(())
        });
    }
}
