//! Play server: newline-delimited JSON over TCP, an authoritative match loop at a fixed
//! tick rate, and match observers started on request.
//!
//! The loop is mio's `tcp_server` shape with a clock: `poll` sleeps until the next tick
//! at most, every tick advances every running match and sends each player its `state`.
//! Nothing here waits on the DB or on a child process: results go to the writer thread
//! ([`results`]) and observer starts to a spawner thread, and both answer through the
//! waker. Lines (SPEC §3 play server):
//! `join`, `input` from players; `status` from the lobby; `observe` from the router and
//! `subscribe` from match observers (both with the internal key).

mod clock;
#[doc(hidden)]
pub mod game;
mod metrics;
pub(crate) mod results;
mod spawners;
#[doc(hidden)]
pub mod wire;

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpListener as MioListener;
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::domain::db::{self, DbPool};
use crate::domain::internal_key::InternalKey;
use crate::domain::ticket::{self, TICKET_KEY_META};
use crate::runtime::event_loop::{interrupted, Acceptor};
use crate::runtime::running::Running;
use crate::services::observer::Spawner;
use crate::services::SetupError;

use clock::Clock;
use game::Game;
use metrics::PlayMetrics;
use results::{Finished, Job, Report};
use spawners::{SpawnReply, SpawnRequest};
use wire::{Conn, Role, StateLine};

/// Open connections; beyond it new ones are told `busy` and closed at once.
pub const CONNS_MAX: usize = 16_000;
/// A connection that has not joined, subscribed or sent a line for this long is closed
/// with a `timeout` error: one that connects and never finishes a line would hold one of
/// the [`CONNS_MAX`] slots for good. Well above an observer start (5 s at most) behind a
/// few queued others.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 30_000;
/// The line a connection beyond the cap gets before it is closed.
const BUSY_LINE: &[u8] = b"{\"t\":\"error\",\"error\":\"busy\"}\n";
/// A tick later than this many periods is not run late: the clock skips ahead and the
/// skipped ticks are counted as missed.
const TICKS_BEHIND_MAX: u32 = 5;
/// Events handled between two looks at the clock, so a due tick is not held back by a
/// long batch of input lines.
const TICK_CHECK_EVENTS: usize = 64;
/// Spent ticket nonces are forgotten this long after their ticket expired.
const NONCE_PRUNE_MS: i64 = 1_000;

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);

/// Everything a play server needs.
#[derive(Debug, Clone)]
pub struct PlayConfig {
    /// The data folder (user DB: results, ticket and internal keys).
    pub data_dir: PathBuf,
    /// The address tickets are bound to (this server's public address).
    pub public: SocketAddr,
    /// The lobby to tell about new results, if any.
    pub lobby: Option<SocketAddr>,
    /// Players in a full match.
    pub players_per_match: u32,
    /// A match starts after this with at least one player.
    pub fill_timeout: Duration,
    /// Ticks per match.
    pub match_ticks: u64,
    /// Ticks per second.
    pub tick_hz: u32,
    /// Starts match observers.
    pub spawner: Arc<dyn Spawner>,
    /// Open connections at most: [`CONNS_MAX`].
    pub conns_max: usize,
    /// How long a connection may stay without a role or a line: [`HANDSHAKE_TIMEOUT_MS`].
    pub handshake_timeout: Duration,
}

#[derive(Debug, PartialEq, Eq)]
enum Phase {
    Filling(Instant),
    Running,
    Committing,
}

#[derive(Debug)]
struct Match {
    game: Game,
    phase: Phase,
    /// Connection (key, generation) of each player, by player index.
    players: Vec<Option<(usize, u64)>>,
    subscribers: Vec<(usize, u64)>,
}

/// The play server's state, owned by its loop thread.
struct Play {
    poll: Poll,
    listener: MioListener,
    acceptor: Acceptor,
    conns: Slab<Conn>,
    next_gen: u64,
    matches: HashMap<u64, Match>,
    config: PlayConfig,
    ticket_key: Vec<u8>,
    internal_key: InternalKey,
    nonces: HashMap<String, i64>,
    results_tx: Sender<Job>,
    reports: Receiver<Report>,
    spawn_tx: Sender<SpawnRequest>,
    spawned: Receiver<SpawnReply>,
    stop: Arc<AtomicBool>,
    clock: Clock,
    /// When this process began serving (ms since the Unix epoch).
    started_ms: i64,
    metrics: PlayMetrics,
    /// Where every connection's `read` lands: one per loop, zeroed once, since a zeroed
    /// array per read cost more than the line it read.
    scratch: Box<[u8]>,
}

impl Play {
    fn run(mut self) -> io::Result<()> {
        let period = Duration::from_secs_f64(1.0 / self.config.tick_hz as f64);
        let mut events = Events::with_capacity(1024);
        let mut next_tick = Instant::now() + period;
        let mut last_prune = Instant::now();
        loop {
            let until_tick = next_tick.saturating_duration_since(Instant::now());
            let timeout = self.acceptor.poll_timeout(until_tick);
            if let Err(err) = self.poll.poll(&mut events, Some(timeout)) {
                if !interrupted(&err) {
                    return Err(err);
                }
            }
            if self.stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            for (i, event) in events.iter().enumerate() {
                match event.token() {
                    LISTENER => self.accept(),
                    WAKER => self.collect(),
                    Token(key) => self.drive(key),
                }
                // A long batch of inputs must not hold back a tick that is due.
                if i % TICK_CHECK_EVENTS == TICK_CHECK_EVENTS - 1 && Instant::now() >= next_tick {
                    self.record_tick(Instant::now() - next_tick);
                    self.tick();
                    next_tick += period;
                }
            }
            if self.acceptor.resume() {
                self.accept();
            }
            let now = Instant::now();
            if now >= next_tick + period * TICKS_BEHIND_MAX {
                let behind = (now - next_tick).as_nanos() / period.as_nanos();
                self.clock.missed += behind as u64;
                self.metrics.missed(behind as u64);
                next_tick = now;
            }
            while now >= next_tick {
                self.record_tick(now - next_tick);
                self.tick();
                next_tick += period;
            }
            if last_prune.elapsed() >= Duration::from_millis(NONCE_PRUNE_MS as u64) {
                let cutoff = db::now_ms() - NONCE_PRUNE_MS;
                self.nonces.retain(|_, expires| *expires > cutoff);
                self.close_silent();
                last_prune = Instant::now();
            }
        }
    }

    fn record_tick(&mut self, late: Duration) {
        self.clock.record(late);
        self.metrics.tick(late);
    }

    /// Takes every pending connection. A failure ends no more than the one connection
    /// it concerns (see [`Acceptor`]).
    fn accept(&mut self) {
        while let Some((mut stream, _)) = self.acceptor.next(&self.listener) {
            if self.conns.len() >= self.config.conns_max {
                // A fresh socket's buffer takes one short line; the client learns why.
                let _ = stream.write(BUSY_LINE);
                continue;
            }
            let _ = stream.set_nodelay(true);
            let entry = self.conns.vacant_entry();
            let registered = self.poll.registry().register(
                &mut stream,
                Token(entry.key()),
                Interest::READABLE | Interest::WRITABLE,
            );
            if let Err(err) = registered {
                self.acceptor.dropped(&err);
                continue;
            }
            self.next_gen += 1;
            entry.insert(Conn::new(stream, self.next_gen));
        }
        self.metrics.connections(self.conns.len());
    }

    fn drive(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let read = conn.read_lines(&mut self.scratch);
        if !read.lines.is_empty() {
            conn.last_line = Instant::now();
            self.metrics.lines(read.lines.len());
        }
        for line in read.lines {
            self.handle(key, &line);
        }
        // The whole lines before an over-long one are answered, then the connection ends.
        if let Some(code) = read.error {
            let conn = &mut self.conns[key];
            conn.send_error(code);
            conn.closing = true;
        } else if read.more {
            // Bytes are left in the socket: ask the poll for a fresh event, so the
            // connections whose events are already waiting go first.
            let conn = &mut self.conns[key];
            let rearmed = self.poll.registry().reregister(
                &mut conn.stream,
                Token(key),
                Interest::READABLE | Interest::WRITABLE,
            );
            if rearmed.is_err() {
                conn.closing = true;
            }
        }
        self.flush_or_close(key);
    }

    /// Closes connections that never said what they are within the handshake timeout.
    fn close_silent(&mut self) {
        let timeout = self.config.handshake_timeout;
        let silent: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.role, Role::New) && c.last_line.elapsed() >= timeout)
            .map(|(key, _)| key)
            .collect();
        for key in silent {
            let conn = &mut self.conns[key];
            conn.send_error("timeout");
            conn.closing = true;
            self.flush_or_close(key);
        }
    }

    fn flush_or_close(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let failed = conn.flush().is_err();
        if failed || conn.done() {
            self.close(key);
        }
    }

    fn close(&mut self, key: usize) {
        if let Some(mut conn) = self.conns.try_remove(key) {
            let _ = self.poll.registry().deregister(&mut conn.stream);
            self.metrics.connections(self.conns.len());
        }
    }

    fn handle(&mut self, key: usize, line: &[u8]) {
        let msg = match wire::parse(line) {
            Ok(msg) => msg,
            Err(code) => return self.conns[key].bad(code),
        };
        match msg {
            wire::In::Status => {
                let players: usize = self
                    .matches
                    .values()
                    .map(|m| m.players.iter().flatten().count())
                    .sum();
                let line = serde_json::json!({
                    "t": "status", "players": players, "matches": self.matches.len(),
                    "ticks": self.clock.ticks, "ticks_missed": self.clock.missed, "tick_late_p99_us": self.clock.late_p99_us(),
                });
                self.conns[key].send_line(&line.to_string());
            }
            wire::In::Join { ticket } => self.join(key, &ticket),
            wire::In::Input { seq, dx, dy, fire } => self.input(key, seq, dx, dy, fire),
            wire::In::Subscribe { key: k, .. } | wire::In::Observe { key: k, .. }
                if !self.internal(&k) =>
            {
                self.conns[key].bad("forbidden")
            }
            wire::In::Subscribe { match_id, .. } => match self.matches.get_mut(&match_id) {
                Some(m) => {
                    let conn = &mut self.conns[key];
                    conn.role = Role::Subscriber(match_id);
                    m.subscribers.push((key, conn.gen));
                    conn.send_line(&format!("{{\"t\":\"subscribed\",\"match\":{match_id}}}"));
                }
                None => self.conns[key].bad("unknown_match"),
            },
            wire::In::Observe { match_id, .. } => {
                if self.matches.contains_key(&match_id) {
                    let gen = self.conns[key].gen;
                    let _ = self.spawn_tx.send(SpawnRequest { key, gen, match_id });
                } else {
                    self.conns[key].send_error("unknown_match");
                }
            }
        }
    }

    fn internal(&self, key: &str) -> bool {
        self.internal_key.matches(key)
    }

    fn join(&mut self, key: usize, ticket_text: &str) {
        let mut stale = Vec::new();
        self.seat(key, ticket_text, &mut stale);
        for old in stale {
            self.flush_or_close(old);
        }
    }

    fn seat(&mut self, key: usize, ticket_text: &str, stale: &mut Vec<usize>) {
        if !matches!(self.conns[key].role, Role::New) {
            return self.conns[key].bad("already_joined");
        }
        let now_ms = db::now_ms();
        let claims = match ticket::verify(&self.ticket_key, self.config.public, ticket_text, now_ms)
        {
            Ok(claims) => claims,
            Err(ticket::TicketError::Expired) => return self.conns[key].bad("ticket_expired"),
            Err(_) => return self.conns[key].bad("ticket_invalid"),
        };
        if self.nonces.contains_key(&claims.nonce) {
            return self.conns[key].bad("ticket_used");
        }
        // Spent nonces live in memory only: a ticket from before this process started
        // may have been used already, and its match is gone with the old process.
        if claims.expires_ms - ticket::TICKET_TTL_MS < self.started_ms {
            return self.conns[key].bad("ticket_expired");
        }
        let ppm = self.config.players_per_match as usize;
        let results_tx = &self.results_tx;
        let m = self.matches.entry(claims.match_id).or_insert_with(|| {
            // Recorded as unfinished before it can end, so that if this process dies
            // first, its next life marks the match aborted.
            let _ = results_tx.send(Job::Started(claims.match_id));
            Match {
                game: Game::default(),
                phase: Phase::Filling(Instant::now()),
                players: Vec::new(),
                subscribers: Vec::new(),
            }
        });
        let rejoin = m.game.player_of(&claims.user);
        let p = match (rejoin, &m.phase) {
            (Some(p), Phase::Filling(_) | Phase::Running) => p,
            (None, Phase::Filling(_)) if m.game.players() < ppm => {
                m.players.push(None);
                m.game.add(&claims.user)
            }
            (None, Phase::Filling(_)) => return self.conns[key].bad("match_full"),
            _ => return self.conns[key].bad("match_started"),
        };
        self.nonces.insert(claims.nonce, claims.expires_ms);
        // A rejoin (a reconnecting client) takes the seat over; the old connection is
        // told so and closed instead of silently going quiet.
        if let Some((old_key, old_gen)) = m.players[p] {
            if let Some(old) = self
                .conns
                .get_mut(old_key)
                .filter(|c| c.gen == old_gen && old_key != key)
            {
                old.send_error("replaced");
                old.role = Role::Done;
                old.closing = true;
                stale.push(old_key);
            }
        }
        let conn = &mut self.conns[key];
        m.players[p] = Some((key, conn.gen));
        conn.role = Role::Player(claims.match_id, p);
        conn.send_line(&format!(
            "{{\"t\":\"joined\",\"match\":{},\"player\":{p}}}",
            claims.match_id
        ));
        if m.game.players() == ppm {
            if let Phase::Filling(_) = m.phase {
                m.phase = Phase::Running;
            }
        }
    }

    fn input(&mut self, key: usize, seq: u64, dx: f64, dy: f64, fire: bool) {
        let Role::Player(match_id, p) = self.conns[key].role else {
            return self.conns[key].bad("not_joined");
        };
        let Some(m) = self.matches.get_mut(&match_id) else {
            return self.conns[key].bad("match_over");
        };
        if let Err(e) = m.game.input(p, seq, dx, dy, fire) {
            self.conns[key].bad(e.code());
        }
    }

    /// One tick of every match: start filled ones, step running ones, send states, and
    /// hand finished ones to the results writer.
    fn tick(&mut self) {
        let now = Instant::now();
        let ppm = self.config.players_per_match as usize;
        let mut touched = Vec::new();
        for (&id, m) in self.matches.iter_mut() {
            if let Phase::Filling(opened) = m.phase {
                let full = m.game.players() >= ppm;
                if full
                    || (now.duration_since(opened) >= self.config.fill_timeout
                        && m.game.players() > 0)
                {
                    m.phase = Phase::Running;
                }
            }
            if m.phase != Phase::Running {
                continue;
            }
            m.game.step();
            let tick = m.game.tick();
            let state = StateLine::new(tick, &m.game.view());
            for (p, slot) in m.players.iter().enumerate() {
                let Some((key, gen)) = *slot else { continue };
                if let Some(conn) = self.conns.get_mut(key).filter(|c| c.gen == gen) {
                    conn.send_state(&state, m.game.ack(p));
                    touched.push(key);
                }
            }
            for &(key, gen) in &m.subscribers {
                if let Some(conn) = self.conns.get_mut(key).filter(|c| c.gen == gen) {
                    conn.send_state(&state, 0);
                    touched.push(key);
                }
            }
            if tick >= self.config.match_ticks || m.game.decided() {
                m.phase = Phase::Committing;
                let (winner, outcomes) = m.game.outcomes();
                let _ = self.results_tx.send(Job::Finished(Finished {
                    match_id: id,
                    ticks: tick,
                    winner,
                    outcomes,
                }));
            }
        }
        self.metrics.matches(&self.matches);
        for key in touched {
            self.flush_or_close(key);
        }
    }

    /// Takes the writer's reports and the spawner's answers.
    fn collect(&mut self) {
        while let Ok((match_id, result)) = self.reports.try_recv() {
            let Some(m) = self.matches.remove(&match_id) else {
                continue;
            };
            let line = match &result {
                Ok(rows) => {
                    let winner = rows.iter().find(|r| r.won).map_or(0, |r| r.player);
                    serde_json::json!({"t": "end", "match": match_id, "winner": winner, "results": rows}).to_string()
                }
                Err(e) => {
                    tracing::error!(match_id, error = %e, "results could not be saved");
                    r#"{"t":"error","error":"results_not_saved"}"#.to_string()
                }
            };
            let targets: Vec<(usize, u64)> = m
                .players
                .iter()
                .flatten()
                .copied()
                .chain(m.subscribers.iter().copied())
                .collect();
            for (key, gen) in targets {
                if let Some(conn) = self.conns.get_mut(key).filter(|c| c.gen == gen) {
                    conn.send_line(&line);
                    conn.role = Role::Done;
                    self.flush_or_close(key);
                }
            }
        }
        while let Ok((key, gen, result)) = self.spawned.try_recv() {
            let Some(conn) = self.conns.get_mut(key).filter(|c| c.gen == gen) else {
                continue;
            };
            if result.is_ok() {
                self.metrics.observer_started();
            }
            match result {
                Ok(addr) => conn.send_line(&format!("{{\"t\":\"observer\",\"addr\":\"{addr}\"}}")),
                Err(e) => conn.send_line(
                    &serde_json::json!({"t": "error", "error": "observer_failed", "detail": e})
                        .to_string(),
                ),
            }
            self.flush_or_close(key);
        }
    }
}

/// Starts a play server with its results writer and observer spawner.
pub fn start(listener: TcpListener, config: PlayConfig) -> Result<Running, SetupError> {
    listener.set_nonblocking(true)?;
    let mut listener = MioListener::from_std(listener);
    let poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let db = Arc::new(DbPool::new(&config.data_dir.join(db::DB_FILE))?);
    // Before serving anyone: the matches this address opened in an earlier life and never
    // finished died with it. Marked aborted, they have no result, and none can follow.
    let address = config.public.to_string();
    let aborted = db.with(|c| db::abort_unfinished_matches(c, &address, db::now_ms()))?;
    if !aborted.is_empty() {
        tracing::warn!(matches = ?aborted, "matches cut off by this play server's last stop are recorded aborted");
    }
    let ticket_key = db.secret(TICKET_KEY_META)?.into_bytes();
    let internal_key = InternalKey::load_or_create(&db)?;
    let stop = Arc::new(AtomicBool::new(false));
    let (results_tx, results_rx) = mpsc::channel();
    let (reports_tx, reports) = mpsc::channel();
    let (spawn_tx, spawn_rx) = mpsc::channel::<SpawnRequest>();
    let (spawned_tx, spawned) = mpsc::channel();
    let public = config.public;
    let lobby = config.lobby.map(|l| (l, internal_key.clone()));
    let spawner = Arc::clone(&config.spawner);
    let metrics = PlayMetrics::new();
    let play = Play {
        poll,
        listener,
        acceptor: Acceptor::new(),
        conns: Slab::with_capacity(1024),
        next_gen: 0,
        matches: HashMap::new(),
        config,
        ticket_key,
        internal_key,
        nonces: HashMap::new(),
        results_tx,
        reports,
        spawn_tx,
        spawned,
        stop: Arc::clone(&stop),
        clock: Clock::default(),
        started_ms: db::now_ms(),
        metrics: metrics.clone(),
        scratch: vec![0; wire::READ_CHUNK_BYTES].into_boxed_slice(),
    };
    let server = std::thread::Builder::new()
        .name("play".into())
        .spawn(move || play.run())?;
    let mut running = Running::from_thread(public, server, Arc::clone(&stop), Arc::clone(&waker));
    metrics.register(running.metrics());
    let w = Arc::clone(&waker);
    running.add_thread("play-results", move || {
        results::run(db, public, lobby, results_rx, reports_tx, w)
    })?;
    spawners::start(&mut running, &spawner, public, &waker, spawn_rx, spawned_tx)?;
    running.on_shutdown(move || spawner.stop_all());
    Ok(running)
}
