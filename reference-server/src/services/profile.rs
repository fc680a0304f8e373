//! Profile: login over TLS. `POST /v1/login`, `POST /v1/refresh`, `POST /v1/logout`.
//!
//! The event loop only parses, rate-limits and queues. Each login is a job on a bounded
//! queue served by `--login-workers` threads: the password check (argon2id), the token
//! and the session insert all run there, and the answer returns through the loop's
//! waker. Unknown ids are checked against a dummy hash of the same cost, so wrong id and
//! wrong password take the same time and get the same 401. Refreshes and logouts hash
//! no password: they have a small pool of their own, so a login storm that fills the
//! login queue never turns a logout away.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use crate::config::Argon2Preset;
use crate::domain::db::{self, DbPool, SessionRow};
use crate::domain::internal_key::InternalKey;
use crate::domain::public_addrs::PublicAddrs;
use crate::domain::session::{Denied, Idle, Refusal, SessionRule};
use crate::domain::token::{self, new_token, token_hash};
use crate::domain::users::{
    self, valid_user_id, verify_password, PASSWORD_BYTES_MAX, USER_ID_BYTES_MAX,
};
use crate::runtime::event_loop::{Ctx, Handler, Limits, Reply, Server};
use crate::runtime::http::{self, Request, Response};
use crate::runtime::jobs::{defer_to_pool, JobPool};
use crate::runtime::running::{sleep_unless_stopped, Running};
use crate::services::SetupError;

/// Logins waiting for a worker; beyond it the answer is 503 `busy`. About two seconds of
/// work at the OWASP cost on two cores: longer waits are worse than a fast retry.
pub const LOGIN_QUEUE_MAX: usize = 256;
/// Failed logins from one IP within the window before answering 429.
pub const LOGIN_FAILURES_PER_IP_MAX: u32 = 20;
/// Failed logins for one id within the window before answering 429. Lower than per IP:
/// guessing one account's password is the attack that matters.
pub const LOGIN_FAILURES_PER_ID_MAX: u32 = 10;
/// The window over which failures are counted.
pub const LOGIN_FAILURE_WINDOW_S: u64 = 60;
/// Keys the limiter tracks; when full, expired windows are dropped first and then new
/// keys are not tracked, so a flood of ids cannot grow memory without bound.
const LIMITER_KEYS_MAX: usize = 200_000;
/// A refresh is refused for sessions older than this; the user must log in again.
pub const SESSION_AGE_S_MAX: i64 = 24 * 3600;
/// How often sessions nobody can use any more are deleted (and once as profile starts),
/// so the user DB stays the same size however many logins a long run makes.
pub const SESSION_PRUNE_INTERVAL_MS: u64 = 60_000;
/// A session is pruned only this long after the last moment it could have been used
/// (idle at the lobby and too old to refresh): an hour beyond both limits covers a use
/// still on its way to the DB (the lobby writes uses back within a fraction of a second)
/// and clocks a little apart. Revoked sessions go at the next prune.
pub const SESSION_PRUNE_MARGIN_MS: i64 = 3_600_000;
/// Sessions deleted per transaction, so a prune never holds the DB's write lock for more
/// than milliseconds at a time.
const SESSION_PRUNE_BATCH_ROWS: usize = 5_000;
/// Attempts to draw a token that collides with no stored session before giving up.
const TOKEN_ATTEMPTS_MAX: u32 = 4;
/// Threads for refreshes and logouts: a DB write and a notice to the lobby each, a few
/// milliseconds, kept apart from the argon2 work so they never wait behind it.
const SESSION_WORKERS: usize = 2;
/// Refreshes and logouts waiting for a session worker; beyond it the answer is 503
/// `busy`. Several seconds of work even at a thousand logouts a second.
const SESSION_QUEUE_MAX: usize = 4096;
/// Nice value of the login workers: argon2 saturates the cores during a login storm, and
/// the event loops of every service on the machine must still answer promptly.
pub const LOGIN_WORKER_NICE: i32 = 10;

/// Everything profile needs.
#[derive(Debug, Clone)]
pub struct ProfileConfig {
    /// The data folder (DB and TLS identity).
    pub data_dir: PathBuf,
    /// The lobby, told about revocations; clients get its public address.
    pub lobby: SocketAddr,
    /// Where clients reach the services (the lobby).
    pub public: PublicAddrs,
    /// Login worker threads.
    pub workers: usize,
    /// Logins waiting for a worker before the answer is `busy`: [`LOGIN_QUEUE_MAX`].
    pub login_queue: usize,
    /// The lobby's idle timeout, reported to clients.
    pub token_idle_s: u64,
    /// The cost of the dummy hash used for unknown ids.
    pub argon2: Argon2Preset,
}

#[derive(Debug, Default)]
struct Window {
    started: Option<Instant>,
    failures: u32,
}

/// Failed logins per IP and per id over a fixed window.
#[derive(Debug, Default)]
pub struct Limiter {
    by_ip: HashMap<IpAddr, Window>,
    by_id: HashMap<String, Window>,
}

impl Limiter {
    /// Seconds until the caller may try again, when it is over a limit now.
    pub fn blocked(&mut self, ip: IpAddr, id: &str, now: Instant) -> Option<u64> {
        let window = Duration::from_secs(LOGIN_FAILURE_WINDOW_S);
        let left = |w: &Window, max: u32| {
            let started = w.started?;
            let elapsed = now.duration_since(started);
            (w.failures >= max && elapsed < window).then(|| (window - elapsed).as_secs().max(1))
        };
        let ip_left = self
            .by_ip
            .get(&ip)
            .and_then(|w| left(w, LOGIN_FAILURES_PER_IP_MAX));
        let id_left = self
            .by_id
            .get(id)
            .and_then(|w| left(w, LOGIN_FAILURES_PER_ID_MAX));
        ip_left.max(id_left)
    }

    /// Counts one failure for both keys.
    pub fn failed(&mut self, ip: IpAddr, id: &str, now: Instant) {
        if self.by_ip.len() + self.by_id.len() >= LIMITER_KEYS_MAX {
            self.purge(now);
        }
        let room = self.by_ip.len() + self.by_id.len() < LIMITER_KEYS_MAX;
        if room || self.by_ip.contains_key(&ip) {
            bump(self.by_ip.entry(ip).or_default(), now);
        }
        if room || self.by_id.contains_key(id) {
            bump(self.by_id.entry(id.to_string()).or_default(), now);
        }
    }

    /// A success clears the id's count (its owner knows the password).
    pub fn succeeded(&mut self, id: &str) {
        self.by_id.remove(id);
    }

    fn purge(&mut self, now: Instant) {
        let window = Duration::from_secs(LOGIN_FAILURE_WINDOW_S);
        let live = |w: &Window| w.started.is_some_and(|s| now.duration_since(s) < window);
        self.by_ip.retain(|_, w| live(w));
        self.by_id.retain(|_, w| live(w));
    }
}

fn bump(w: &mut Window, now: Instant) {
    let window = Duration::from_secs(LOGIN_FAILURE_WINDOW_S);
    if w.started.is_none_or(|s| now.duration_since(s) >= window) {
        *w = Window {
            started: Some(now),
            failures: 0,
        };
    }
    w.failures += 1;
}

/// State shared by the loop and the login workers.
#[derive(Debug)]
struct Shared {
    db: DbPool,
    salt: Vec<u8>,
    dummy_phc: String,
    lobby: SocketAddr,
    token_idle_s: u64,
    rule: SessionRule,
    limiter: Mutex<Limiter>,
    collisions: AtomicU64,
}

#[derive(Serialize)]
struct Granted {
    token: String,
    lobby: String,
    idle_timeout_s: u64,
}

/// Profile's request handler.
#[derive(Debug)]
pub struct Profile {
    shared: Arc<Shared>,
    /// Logins: argon2 at a low priority.
    pool: JobPool,
    /// Refreshes and logouts.
    sessions: JobPool,
}

fn login_failed() -> Response {
    Response::error(401, "login_failed", "wrong id or password")
}

fn internal(e: impl std::fmt::Display) -> Response {
    tracing::error!(%e, "profile job failed");
    Response::error(500, "internal", "the login service failed; retry later")
}

/// Reads `{"id": string, "password": string}`; errors name the field. Public for the
/// fuzz targets only.
#[doc(hidden)]
pub fn parse_login(body: &[u8]) -> Result<(String, String), String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("body: not JSON ({e})"))?;
    let obj = value.as_object().ok_or("body: expected a JSON object")?;
    let field = |name: &str| -> Result<String, String> {
        match obj.get(name) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(format!("body.{name}: expected a string")),
            None => Err(format!("body.{name}: missing")),
        }
    };
    let (id, password) = (field("id")?, field("password")?);
    if !valid_user_id(&id) {
        return Err(format!(
            "body.id: must be 1-{USER_ID_BYTES_MAX} letters, digits, '_', '-', '.' or '@'"
        ));
    }
    if password.is_empty() || password.len() > PASSWORD_BYTES_MAX {
        return Err(format!(
            "body.password: must be 1-{PASSWORD_BYTES_MAX} bytes"
        ));
    }
    Ok((id, password))
}

impl Shared {
    fn login(&self, ip: IpAddr, id: &str, password: &str) -> Response {
        let phc = match self.db.with(|c| db::user_phc(c, id)) {
            Ok(phc) => phc,
            Err(e) => return internal(e),
        };
        let ok = match &phc {
            Some(phc) => verify_password(phc, password),
            None => {
                // Same work as a real check, so timing does not tell which ids exist.
                let _ = verify_password(&self.dummy_phc, password);
                false
            }
        };
        if !ok {
            self.limiter
                .lock()
                .expect("limiter lock")
                .failed(ip, id, Instant::now());
            return login_failed();
        }
        self.limiter.lock().expect("limiter lock").succeeded(id);
        match self.open_session(id, ip) {
            Ok(token) => self.granted(token),
            Err(response) => response,
        }
    }

    /// Draws tokens until one collides with no stored session, and stores it.
    fn open_session(&self, id: &str, ip: IpAddr) -> Result<String, Response> {
        for _ in 0..TOKEN_ATTEMPTS_MAX {
            let token = new_token(id, &self.salt).map_err(internal)?;
            let now = db::now_ms();
            let row = SessionRow {
                token_hash: token_hash(&token),
                user_id: id.to_string(),
                ip: ip.to_string(),
                lobby: self.lobby.to_string(),
                created_ms: now,
                last_used_ms: now,
                revoked: false,
            };
            if self
                .db
                .with(|c| db::insert_session(c, &row))
                .map_err(internal)?
            {
                return Ok(token);
            }
            let total = self.collisions.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(
                collisions = total,
                "token collided with a stored session; drawing again"
            );
        }
        Err(internal("token collisions exhausted every attempt"))
    }

    fn granted(&self, token: String) -> Response {
        Response::json(
            200,
            &Granted {
                token,
                lobby: self.lobby.to_string(),
                idle_timeout_s: self.token_idle_s,
            },
        )
    }

    /// The session of a Bearer token used from `ip` (the session rule, idle aside), or
    /// the answer to give.
    fn session_for(&self, token: &str, ip: IpAddr) -> Result<SessionRow, Response> {
        self.rule
            .check(&self.db, token, ip, Idle::Ignored, db::now_ms())
            .map_err(|denied| match denied {
                Denied::Refused(refusal) => refusal.response(),
                Denied::Db(e) => internal(e),
            })
    }

    fn refresh(&self, token: &str, ip: IpAddr) -> Response {
        let old = match self.session_for(token, ip) {
            Ok(session) => session,
            Err(response) => return response,
        };
        if db::now_ms() - old.created_ms > SESSION_AGE_S_MAX * 1000 {
            return Refusal::AccessDenied.response();
        }
        let new = match self.open_session(&old.user_id, ip) {
            Ok(token) => token,
            Err(response) => return response,
        };
        if let Err(response) = self.revoke(&old.token_hash) {
            return response;
        }
        self.granted(new)
    }

    fn logout(&self, token: &str, ip: IpAddr) -> Response {
        match self
            .session_for(token, ip)
            .and_then(|s| self.revoke(&s.token_hash))
        {
            Ok(()) => Response::empty(204),
            Err(response) => response,
        }
    }

    /// Revokes in the DB (committed before the answer), then tells the lobby.
    fn revoke(&self, hash: &str) -> Result<(), Response> {
        self.rule.revoke(&self.db, hash).map_err(internal)
    }
}

impl Profile {
    fn login(&mut self, req: &Request, ctx: &mut Ctx<'_>) -> Reply {
        let (id, password) = match parse_login(&req.body) {
            Ok(parsed) => parsed,
            Err(why) => return Reply::Now(Response::error(400, "bad_request", &why)),
        };
        let ip = req.peer.ip();
        let blocked =
            self.shared
                .limiter
                .lock()
                .expect("limiter lock")
                .blocked(ip, &id, Instant::now());
        if let Some(retry_s) = blocked {
            return Reply::Now(
                Response::error(
                    429,
                    "rate_limited",
                    "too many failed logins; wait before trying again",
                )
                .with_header("Retry-After", retry_s.to_string()),
            );
        }
        let shared = Arc::clone(&self.shared);
        defer_to_pool(&self.pool, ctx, move || shared.login(ip, &id, &password))
    }

    fn with_token(
        &mut self,
        req: &Request,
        ctx: &mut Ctx<'_>,
        work: fn(&Shared, &str, IpAddr) -> Response,
    ) -> Reply {
        let Some(token) = req.bearer().map(str::to_string) else {
            return Reply::Now(Refusal::AccessDenied.response());
        };
        let (shared, ip) = (Arc::clone(&self.shared), req.peer.ip());
        defer_to_pool(&self.sessions, ctx, move || work(&shared, &token, ip))
    }
}

impl Handler for Profile {
    fn routes(&self) -> &'static [&'static str] {
        &["/v1/login", "/v1/refresh", "/v1/logout", "/healthz"]
    }

    fn handle(&mut self, req: Request, ctx: &mut Ctx<'_>) -> Reply {
        match (req.method.as_str(), req.path.as_str()) {
            ("POST", "/v1/login") => self.login(&req, ctx),
            ("POST", "/v1/refresh") => self.with_token(&req, ctx, Shared::refresh),
            ("POST", "/v1/logout") => self.with_token(&req, ctx, Shared::logout),
            ("GET", "/healthz") => Reply::Now(Response::json(
                200,
                &serde_json::json!({"status": "ok", "token_collisions": self.shared.collisions.load(Ordering::Relaxed)}),
            )),
            (_, "/v1/login" | "/v1/refresh" | "/v1/logout") => {
                Reply::Now(http::method_not_allowed(&req, &["POST"]))
            }
            (_, "/healthz") => Reply::Now(http::method_not_allowed(&req, &["GET"])),
            _ => Reply::Now(http::not_found(&req)),
        }
    }
}

impl Profile {
    /// Profile's handler over the user DB in `config.data_dir`, without TLS (the fuzz
    /// targets drive it alone; [`start`] serves it over TLS).
    pub fn new(config: &ProfileConfig) -> Result<Profile, SetupError> {
        let db = DbPool::new(&config.data_dir.join(db::DB_FILE))?;
        let salt_hex = db.secret("server_salt")?;
        let rule = SessionRule {
            idle_ms: (config.token_idle_s * 1000) as i64,
            lobby: Some(config.lobby),
            key: InternalKey::load_or_create(&db)?,
        };
        // The dummy hash must cost what the stored hashes cost, so use the preset
        // recorded by `users seed`/`add` when there is one.
        let recorded = db.with(|c| db::meta(c, users::ARGON2_META_KEY))?;
        let preset = recorded
            .as_deref()
            .and_then(Argon2Preset::parse)
            .unwrap_or(config.argon2);
        let dummy_phc = users::hash_password(&users::hasher(preset), &token::random_hex(16)?)?;
        let shared = Arc::new(Shared {
            db,
            salt: salt_hex.into_bytes(),
            dummy_phc,
            lobby: config.public.of(config.lobby),
            token_idle_s: config.token_idle_s,
            rule,
            limiter: Mutex::new(Limiter::default()),
            collisions: AtomicU64::new(0),
        });
        let pool = JobPool::with_nice(
            "login",
            config.workers,
            config.login_queue,
            LOGIN_WORKER_NICE,
        )?;
        let sessions = JobPool::new("session", SESSION_WORKERS, SESSION_QUEUE_MAX)?;
        Ok(Profile {
            shared,
            pool,
            sessions,
        })
    }
}

/// Starts profile on `listener` with TLS.
pub fn start(
    listener: TcpListener,
    config: ProfileConfig,
    limits: Limits,
) -> Result<Running, SetupError> {
    crate::domain::tls::ensure_identity(&config.data_dir)?;
    let acceptor = crate::domain::tls::acceptor(&config.data_dir)?;
    let profile = Profile::new(&config)?;
    let idle_ms = (config.token_idle_s * 1000) as i64;
    let db = DbPool::new(&config.data_dir.join(db::DB_FILE))?;
    // Once now, before serving: a restarted profile starts from a pruned table.
    prune_sessions(&db, idle_ms);
    // The login queue (its depth and its `busy` refusals) and the session queue.
    let queues = [profile.pool.queue(), profile.sessions.queue()];
    let server = Server::new(listener, profile, limits)?.with_tls(acceptor);
    let stop = Arc::new(AtomicBool::new(false));
    let mut running = Running::new(server.spawn("profile")?, Arc::clone(&stop));
    for queue in queues {
        queue.register(running.metrics());
    }
    running.add_thread("profile-prune", move || {
        while sleep_unless_stopped(&stop, Duration::from_millis(SESSION_PRUNE_INTERVAL_MS)) {
            prune_sessions(&db, idle_ms);
        }
    })?;
    Ok(running)
}

/// Deletes the sessions no one can use any more: revoked ones, and those idle at the
/// lobby (`idle_ms`) and too old to refresh ([`SESSION_AGE_S_MAX`]), both by
/// [`SESSION_PRUNE_MARGIN_MS`]. A failure is logged; the next prune tries again.
fn prune_sessions(db: &DbPool, idle_ms: i64) {
    let now = db::now_ms();
    let unused_before = now - idle_ms - SESSION_PRUNE_MARGIN_MS;
    let created_before = now - SESSION_AGE_S_MAX * 1000 - SESSION_PRUNE_MARGIN_MS;
    let pruned =
        db.with(|c| db::prune_sessions(c, unused_before, created_before, SESSION_PRUNE_BATCH_ROWS));
    match pruned {
        Ok(0) => {}
        Ok(count) => tracing::info!(count, "pruned sessions no one can use any more"),
        Err(e) => tracing::warn!(%e, "pruning sessions failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_bodies_are_checked_field_by_field() {
        assert_eq!(
            parse_login(br#"{"id":"user1","password":"pw"}"#).unwrap(),
            ("user1".into(), "pw".into())
        );
        let err = |b: &[u8]| parse_login(b).unwrap_err();
        assert!(err(b"nope").starts_with("body: not JSON"));
        assert_eq!(err(b"[]"), "body: expected a JSON object");
        assert_eq!(err(br#"{"password":"x"}"#), "body.id: missing");
        assert_eq!(
            err(br#"{"id":5,"password":"x"}"#),
            "body.id: expected a string"
        );
        assert!(err(br#"{"id":"x' OR 1=1 --","password":"x"}"#).starts_with("body.id:"));
        assert!(err(br#"{"id":"a","password":""}"#).starts_with("body.password:"));
    }

    #[test]
    fn limiter_blocks_per_ip_and_per_id_and_forgets_after_the_window() {
        let mut l = Limiter::default();
        let t0 = Instant::now();
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        for _ in 0..LOGIN_FAILURES_PER_ID_MAX {
            assert_eq!(l.blocked(ip, "victim", t0), None);
            l.failed(ip, "victim", t0);
        }
        assert!(l.blocked(ip, "victim", t0).is_some());
        // Another account from the same IP is still allowed until the IP limit.
        assert_eq!(l.blocked(ip, "other", t0), None);
        for _ in LOGIN_FAILURES_PER_ID_MAX..LOGIN_FAILURES_PER_IP_MAX {
            l.failed(ip, "other", t0);
        }
        assert!(l.blocked(ip, "third", t0).is_some());
        let later = t0 + Duration::from_secs(LOGIN_FAILURE_WINDOW_S);
        assert_eq!(l.blocked(ip, "victim", later), None);
        l.failed(ip, "x", t0);
        l.succeeded("victim");
        assert_eq!(l.blocked("127.0.0.10".parse().unwrap(), "victim", t0), None);
    }
}
