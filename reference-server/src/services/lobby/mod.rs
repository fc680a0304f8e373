//! Lobby: `GET /v1/me`, `GET /v1/ranking`, `POST /v1/start`, every one behind the session
//! rules of [`sessions`].
//!
//! The hot path never waits on SQLite: sessions, user rows and the ranking are served from
//! memory. A cache miss is loaded by a worker and answered through the loop's waker; uses
//! and revocations are written back by a flusher thread. Profile tells the lobby about
//! revoked tokens (`/internal/v1/revoke`) and play servers about new results
//! (`/internal/v1/users/invalidate`), both with the internal key.

pub(crate) mod ranking;
pub(crate) mod routing;
#[doc(hidden)]
pub mod sessions;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::domain::db::{self, DbPool, UserRow};
use crate::domain::internal_key::{InternalKey, INTERNAL_KEY_HEADER};
use crate::domain::public_addrs::PublicAddrs;
use crate::domain::session::Refusal;
use crate::domain::ticket;
use crate::domain::token::{token_hash, well_formed};
use crate::runtime::event_loop::{Ctx, Handler, Limits, Reply, Server};
use crate::runtime::http::{self, Request, Response};
use crate::runtime::jobs::{defer_to_pool, JobPool};
use crate::runtime::running::{sleep_unless_stopped, Running};
use crate::services::SetupError;

use ranking::{RankEntry, Ranking};
use routing::PlayDirectory;
use sessions::{Auth, Sessions};

/// Most entries one `/v1/ranking` call returns (SPEC §3).
pub const RANKING_LIMIT_MAX: u64 = 100;
/// Entries returned when `limit` is not given.
const RANKING_LIMIT_DEFAULT: u64 = 10;
/// The ranking is rebuilt at least this often, to pick up users added while running.
const RANKING_REFRESH_MS: u64 = 5_000;
/// How often pending session writes (last use, revocations) reach the DB.
const FLUSH_INTERVAL_MS: u64 = 100;
/// How often cached sessions idle for the idle timeout are dropped: a minute's logins at
/// most outlive it in memory, and one pass over the cache holds the state lock for well
/// under a millisecond at tens of thousands of sessions.
const SESSION_PRUNE_INTERVAL_MS: u64 = 60_000;
/// User rows kept in memory; when full the cache starts over (rows reload on use).
const USERS_CACHED_MAX: usize = 1_000_000;
/// Threads loading cache misses; SQLite reads are short, two keep one slow read from
/// stalling every miss.
const LOBBY_DB_WORKERS: usize = 2;
/// Misses waiting for a worker; beyond it the answer is 503 `busy`.
const LOBBY_QUEUE_MAX: usize = 4096;

/// Everything the lobby needs.
#[derive(Debug, Clone)]
pub struct LobbyConfig {
    /// The data folder (the user DB).
    pub data_dir: PathBuf,
    /// `--token-idle-s`.
    pub token_idle_s: u64,
    /// The play servers to route to.
    pub play_servers: Vec<SocketAddr>,
    /// `--players-per-match`.
    pub players_per_match: u32,
    /// `--match-fill-timeout-s`.
    pub match_fill_timeout_s: u64,
    /// Where clients reach the play servers.
    pub public: PublicAddrs,
}

#[derive(Debug)]
struct State {
    sessions: Sessions,
    users: HashMap<String, UserRow>,
    ranking: Arc<Ranking>,
    play: PlayDirectory,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    db: DbPool,
    ticket_key: Vec<u8>,
    internal_key: InternalKey,
    public: PublicAddrs,
    /// Held while the ranking changes, so that a full rebuild (a read of every user)
    /// and the results of a match, applied row by row, never overlap: an older read can
    /// never replace a newer ranking.
    ranking_writer: Mutex<()>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Me,
    Ranking { offset: u64, limit: u64 },
    Start,
}

#[derive(Debug, Clone)]
struct Call {
    route: Route,
    hash: String,
    ip: IpAddr,
}

enum Outcome {
    Done(Response),
    /// The cache cannot decide; a worker loads the session and its user.
    Load,
    /// Another IP presented the token: a worker commits the revocation, then answers.
    Revoke,
}

#[derive(Serialize)]
struct Me<'a> {
    id: &'a str,
    level: i64,
    xp: i64,
    rating: i64,
    rank: u64,
    wins: i64,
    losses: i64,
}

#[derive(Serialize)]
struct Page {
    total: u64,
    entries: Vec<RankEntry>,
}

#[derive(Serialize)]
struct Start {
    play: String,
    r#match: u64,
    ticket: String,
}

fn bad_request(detail: String) -> Response {
    Response::error(400, "bad_request", &detail)
}

fn parse_u64(req: &Request, name: &str, default: u64, max: u64) -> Result<u64, Response> {
    match req.query_param(name) {
        None => Ok(default),
        Some(v) => match v.parse::<u64>() {
            Ok(n) if n <= max => Ok(n),
            _ => Err(bad_request(format!(
                "query {name}: must be a whole number from 0 to {max}"
            ))),
        },
    }
}

impl Shared {
    /// Serves a call from memory, or asks for a load when something is not cached.
    /// `loaded` is true after a worker loaded what the DB has, so a miss then means the
    /// DB has nothing either.
    fn serve(&self, state: &mut State, call: &Call, now_ms: i64, loaded: bool) -> Outcome {
        let user = match state
            .sessions
            .authorize(&call.hash, call.ip, now_ms, loaded)
        {
            Auth::User(user) => user,
            Auth::Deny(refusal) => return Outcome::Done(refusal.response()),
            Auth::Revoke => return Outcome::Revoke,
            Auth::Miss => return Outcome::Load,
        };
        let row = state.users.get(&user);
        let response = match call.route {
            Route::Me => match row {
                Some(row) => {
                    let rank = state.ranking.rank_of(&row.id, row.rating);
                    Response::json(
                        200,
                        &Me {
                            id: &row.id,
                            level: row.level,
                            xp: row.xp,
                            rating: row.rating,
                            rank,
                            wins: row.wins,
                            losses: row.losses,
                        },
                    )
                }
                None if loaded => Refusal::AccessDenied.response(),
                None => return Outcome::Load,
            },
            Route::Ranking { offset, limit } => Response::json(
                200,
                &Page {
                    total: state.ranking.total(),
                    entries: state.ranking.page(offset, limit),
                },
            ),
            Route::Start => match state.play.seat(now_ms) {
                Some((play, match_id)) => {
                    match ticket::issue(&self.ticket_key, play, match_id, &user, now_ms) {
                        Ok(ticket) => Response::json(
                            200,
                            &Start {
                                play: self.public.of(play).to_string(),
                                r#match: match_id,
                                ticket,
                            },
                        ),
                        Err(e) => Response::error(500, "internal", &e.to_string()),
                    }
                }
                None => Response::error(503, "no_capacity", "no play server can take a match now")
                    .with_header("Retry-After", "1"),
            },
        };
        Outcome::Done(response)
    }

    /// Loads the session and its user from the DB, then serves the call.
    fn load_and_serve(&self, call: &Call) -> Response {
        let loaded = self.db.with(|c| {
            let Some(session) = db::session(c, &call.hash)? else {
                return Ok(None);
            };
            let user = db::user_row(c, &session.user_id)?;
            Ok(Some((session, user)))
        });
        let loaded = match loaded {
            Ok(loaded) => loaded,
            Err(e) => {
                tracing::error!(%e, "lobby could not read the user DB");
                return Response::error(503, "unavailable", "user DB unavailable; retry shortly")
                    .with_header("Retry-After", "1");
            }
        };
        let mut state = self.state.lock().expect("lobby state lock");
        if let Some((session, user)) = loaded {
            state.sessions.load(session);
            if let Some(user) = user {
                if state.users.len() >= USERS_CACHED_MAX {
                    state.users.clear();
                }
                state.users.insert(user.id.clone(), user);
            }
        }
        match self.serve(&mut state, call, db::now_ms(), true) {
            Outcome::Done(response) => response,
            Outcome::Revoke => {
                drop(state);
                self.revoke(&call.hash)
            }
            Outcome::Load => unreachable!("a loaded serve never asks to load"),
        }
    }

    /// Commits the revocation of a session presented from another IP, then answers
    /// `login_again`: once a client reads that answer, no kill can bring the token back.
    fn revoke(&self, hash: &str) -> Response {
        match self.db.with(|c| db::revoke(c, hash)) {
            Ok(()) => Refusal::LoginAgain.response(),
            Err(e) => {
                tracing::error!(%e, "lobby could not commit a revocation");
                Response::error(503, "unavailable", "user DB unavailable; retry shortly")
                    .with_header("Retry-After", "1")
            }
        }
    }

    /// Rebuilds the ranking from every user in the DB.
    fn rebuild_ranking(&self) {
        let _writer = self.ranking_writer.lock().expect("ranking writer lock");
        match self.db.with(|c| db::ranking(c)) {
            Ok(rows) => {
                let ranking = Arc::new(Ranking::new(rows));
                self.state.lock().expect("lobby state lock").ranking = ranking;
            }
            Err(e) => tracing::warn!(%e, "ranking rebuild failed; keeping the previous one"),
        }
    }

    /// Moves the users of a match's results to their new places in the ranking: their
    /// rows only are read, committed before the notice came. Rebuilding from every user
    /// after each match took longer at 50,000 users than matches took to end, and the
    /// play servers' `end`s went out late.
    fn apply_results(&self, ids: &[String]) {
        let _writer = self.ranking_writer.lock().expect("ranking writer lock");
        match self.db.with(|c| db::ranking_rows(c, ids)) {
            Ok(rows) => {
                let mut state = self.state.lock().expect("lobby state lock");
                Arc::make_mut(&mut state.ranking).update(rows);
            }
            Err(e) => {
                tracing::warn!(%e, "ranking update failed; rebuilding it whole");
                drop(_writer);
                self.rebuild_ranking();
            }
        }
    }

    /// Drops the cached sessions nobody can be served from any more (see
    /// [`Sessions::prune`]), so the cache does not grow with every login of a long run.
    fn prune_sessions(&self) {
        let now = db::now_ms();
        let count = self
            .state
            .lock()
            .expect("lobby state lock")
            .sessions
            .prune(now);
        if count > 0 {
            tracing::info!(count, "dropped cached sessions idle for the idle timeout");
        }
    }

    fn flush(&self) {
        let (touched, revoked) = self
            .state
            .lock()
            .expect("lobby state lock")
            .sessions
            .take_writes();
        if touched.is_empty() && revoked.is_empty() {
            return;
        }
        let written = self.db.with(|c| {
            for hash in &revoked {
                db::revoke(c, hash)?;
            }
            db::touch_sessions(c, &touched)
        });
        if let Err(e) = written {
            tracing::error!(%e, sessions = touched.len(), revoked = revoked.len(), "session writes failed");
        }
    }
}

#[derive(Deserialize)]
struct RevokeNotice {
    token_hash: String,
}

#[derive(Deserialize)]
struct InvalidateNotice {
    ids: Vec<String>,
}

/// The routes other services call with the internal key.
#[derive(Debug, Clone, Copy)]
enum Internal {
    /// `POST /internal/v1/revoke`: profile ended a session.
    Revoke,
    /// `POST /internal/v1/users/invalidate`: a play server committed new results.
    Invalidate,
}

/// The lobby's request handler.
#[derive(Debug)]
pub struct Lobby {
    shared: Arc<Shared>,
    pool: JobPool,
}

impl Lobby {
    fn internal(&mut self, req: &Request, route: Internal, ctx: &mut Ctx<'_>) -> Reply {
        let key_ok = req
            .header(INTERNAL_KEY_HEADER)
            .is_some_and(|k| self.shared.internal_key.matches(k));
        if !key_ok {
            return Reply::Now(Response::error(
                403,
                "forbidden",
                "internal route: missing or wrong internal key",
            ));
        }
        match route {
            Internal::Revoke => match serde_json::from_slice::<RevokeNotice>(&req.body) {
                Ok(notice) => {
                    self.shared
                        .state
                        .lock()
                        .expect("lobby state lock")
                        .sessions
                        .revoked_elsewhere(&notice.token_hash);
                    Reply::Now(Response::empty(204))
                }
                Err(e) => Reply::Now(bad_request(format!("body: {e}"))),
            },
            Internal::Invalidate => {
                match serde_json::from_slice::<InvalidateNotice>(&req.body) {
                    Ok(notice) => {
                        let mut state = self.shared.state.lock().expect("lobby state lock");
                        for id in &notice.ids {
                            state.users.remove(id);
                        }
                        drop(state);
                        // The answer waits for the ranking to hold the new results, so
                        // whoever reports them knows the lobby shows them at the 204.
                        let shared = Arc::clone(&self.shared);
                        // One notice may cover several matches of one player.
                        let mut ids = notice.ids;
                        ids.sort_unstable();
                        ids.dedup();
                        defer_to_pool(&self.pool, ctx, move || {
                            shared.apply_results(&ids);
                            Response::empty(204)
                        })
                    }
                    Err(e) => Reply::Now(bad_request(format!("body: {e}"))),
                }
            }
        }
    }

    fn public(&mut self, req: &Request, route: Route, ctx: &mut Ctx<'_>) -> Reply {
        let Some(token) = req.bearer().filter(|t| well_formed(t)) else {
            return Reply::Now(Refusal::AccessDenied.response());
        };
        let call = Call {
            route,
            hash: token_hash(token),
            ip: req.peer.ip(),
        };
        let outcome = {
            let mut state = self.shared.state.lock().expect("lobby state lock");
            self.shared.serve(&mut state, &call, db::now_ms(), false)
        };
        match outcome {
            Outcome::Done(response) => Reply::Now(response),
            Outcome::Load => {
                let shared = Arc::clone(&self.shared);
                defer_to_pool(&self.pool, ctx, move || shared.load_and_serve(&call))
            }
            Outcome::Revoke => {
                let shared = Arc::clone(&self.shared);
                defer_to_pool(&self.pool, ctx, move || shared.revoke(&call.hash))
            }
        }
    }
}

impl Handler for Lobby {
    fn routes(&self) -> &'static [&'static str] {
        &[
            "/v1/me",
            "/v1/ranking",
            "/v1/start",
            "/internal/v1/revoke",
            "/internal/v1/users/invalidate",
            "/healthz",
        ]
    }

    fn handle(&mut self, req: Request, ctx: &mut Ctx<'_>) -> Reply {
        let route = match (req.method.as_str(), req.path.as_str()) {
            ("POST", "/internal/v1/revoke") => return self.internal(&req, Internal::Revoke, ctx),
            ("POST", "/internal/v1/users/invalidate") => {
                return self.internal(&req, Internal::Invalidate, ctx)
            }
            ("GET", "/healthz") => {
                return Reply::Now(Response::json(200, &serde_json::json!({"status": "ok"})))
            }
            ("GET", "/v1/me") => Route::Me,
            ("GET", "/v1/ranking") => {
                let offset = parse_u64(&req, "offset", 0, u32::MAX as u64);
                let limit = parse_u64(&req, "limit", RANKING_LIMIT_DEFAULT, RANKING_LIMIT_MAX);
                match (offset, limit) {
                    (Ok(offset), Ok(limit)) => Route::Ranking { offset, limit },
                    (Err(r), _) | (_, Err(r)) => return Reply::Now(r),
                }
            }
            ("POST", "/v1/start") => Route::Start,
            (_, "/v1/me" | "/v1/ranking" | "/healthz") => {
                return Reply::Now(http::method_not_allowed(&req, &["GET"]))
            }
            (_, "/v1/start" | "/internal/v1/revoke" | "/internal/v1/users/invalidate") => {
                return Reply::Now(http::method_not_allowed(&req, &["POST"]))
            }
            _ => return Reply::Now(http::not_found(&req)),
        };
        self.public(&req, route, ctx)
    }
}

impl Lobby {
    /// The lobby's handler over the user DB in `config.data_dir`, its first ranking
    /// built, without the threads [`start`] adds (the fuzz targets drive it alone).
    pub fn new(config: &LobbyConfig) -> Result<Lobby, SetupError> {
        let db = DbPool::new(&config.data_dir.join(db::DB_FILE))?;
        let internal_key = InternalKey::load_or_create(&db)?;
        let ticket_key = db.secret(ticket::TICKET_KEY_META)?.into_bytes();
        let now = db::now_ms();
        let fill_ms = (config.match_fill_timeout_s * 1000) as i64;
        let state = State {
            sessions: Sessions::new((config.token_idle_s * 1000) as i64),
            users: HashMap::new(),
            ranking: Arc::new(Ranking::default()),
            play: PlayDirectory::new(&config.play_servers, config.players_per_match, fill_ms, now),
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            db,
            ticket_key,
            internal_key,
            public: config.public.clone(),
            ranking_writer: Mutex::new(()),
        });
        // The first ranking is built before the lobby answers anyone.
        shared.rebuild_ranking();
        let pool = JobPool::new("lobby-db", LOBBY_DB_WORKERS, LOBBY_QUEUE_MAX)?;
        Ok(Lobby { shared, pool })
    }
}

/// Starts the lobby with its flusher, ranking and play-poller threads.
pub fn start(
    listener: TcpListener,
    config: LobbyConfig,
    limits: Limits,
) -> Result<Running, SetupError> {
    let lobby = Lobby::new(&config)?;
    let shared = Arc::clone(&lobby.shared);
    let queue = lobby.pool.queue();
    let server = Server::new(listener, lobby, limits)?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut running = Running::new(server.spawn("lobby")?, Arc::clone(&stop));
    queue.register(running.metrics());
    let s = Arc::clone(&shared);
    running.metrics().gauge_fn(
        "catwar_lobby_sessions",
        "Live sessions the lobby holds in memory: used within the idle timeout",
        move || s.state.lock().expect("lobby state lock").sessions.held() as i64,
    );
    let (s, st) = (Arc::clone(&shared), Arc::clone(&stop));
    running.add_thread("lobby-flush", move || {
        while sleep_unless_stopped(&st, Duration::from_millis(FLUSH_INTERVAL_MS)) {
            s.flush();
        }
        // Last uses and revocations made before the stop still reach the DB.
        s.flush();
    })?;
    let (s, st) = (Arc::clone(&shared), Arc::clone(&stop));
    running.add_thread("lobby-prune", move || {
        while sleep_unless_stopped(&st, Duration::from_millis(SESSION_PRUNE_INTERVAL_MS)) {
            s.prune_sessions();
        }
    })?;
    let (s, st) = (Arc::clone(&shared), Arc::clone(&stop));
    running.add_thread("lobby-ranking", move || {
        while sleep_unless_stopped(&st, Duration::from_millis(RANKING_REFRESH_MS)) {
            s.rebuild_ranking();
        }
    })?;
    let (s, st) = (shared, stop);
    let addrs = s.state.lock().expect("lobby state lock").play.addrs();
    running.add_thread("lobby-play-poll", move || loop {
        for &addr in &addrs {
            let load = routing::poll(addr);
            s.state
                .lock()
                .expect("lobby state lock")
                .play
                .report(addr, load);
        }
        if !sleep_unless_stopped(&st, Duration::from_millis(routing::PLAY_POLL_MS)) {
            return;
        }
    })?;
    Ok(running)
}
