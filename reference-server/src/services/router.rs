//! Router: `GET /v1/observer?match=M` (Bearer) asks the play server that owns match M to
//! start one more match observer and answers its endpoint.
//!
//! The router knows the play servers but not which owns a match, so a worker asks each
//! in turn until one accepts; the token passes the session rule against the user DB
//! first ([`SessionRule`]), with the lobby's codes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::domain::db::{self, DbPool};
use crate::domain::internal_key::InternalKey;
use crate::domain::session::{Denied, Idle, Refusal, SessionRule};
use crate::runtime::event_loop::{Ctx, Handler, Limits, Reply, Server};
use crate::runtime::http::{self, Request, Response};
use crate::runtime::jobs::{defer_to_pool, JobPool};
use crate::runtime::running::Running;
use crate::services::SetupError;

/// Threads asking play servers for observers; a Docker start can take a while, so a few
/// run at once.
const ROUTER_WORKERS: usize = 4;
/// Observer requests waiting for a worker; beyond it the answer is 503 `busy`.
const ROUTER_QUEUE_MAX: usize = 256;
/// How long a play server may take to start an observer (a cold container included).
const OBSERVE_TIMEOUT_MS: u64 = 10_000;
/// Longest answer line read from a play server.
const ANSWER_BYTES_MAX: u64 = 4096;

/// Everything the router needs.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// The data folder (sessions, internal key).
    pub data_dir: PathBuf,
    /// Every play server.
    pub play_servers: Vec<SocketAddr>,
    /// The lobby, told when the router revokes a session.
    pub lobby: Option<SocketAddr>,
    /// `--token-idle-s`.
    pub token_idle_s: u64,
}

#[derive(Debug)]
struct Shared {
    db: DbPool,
    rule: SessionRule,
    play_servers: Vec<SocketAddr>,
}

/// The router's request handler.
#[derive(Debug)]
pub struct Router {
    shared: Arc<Shared>,
    pool: JobPool,
}

enum Asked {
    Observer(String),
    Unknown,
    Failed(String),
}

impl Shared {
    /// `presented_ms` is when the request arrived: starting observers takes seconds and
    /// requests queue behind it, and that wait must not make their tokens idle.
    fn observer(
        &self,
        token: &str,
        ip: std::net::IpAddr,
        match_id: u64,
        presented_ms: i64,
    ) -> Response {
        match self
            .rule
            .check(&self.db, token, ip, Idle::Applies, presented_ms)
        {
            Ok(_) => {}
            Err(Denied::Refused(refusal)) => return refusal.response(),
            Err(Denied::Db(e)) => {
                tracing::error!(%e, "router could not check a session");
                return Response::error(503, "unavailable", "user DB unavailable; retry shortly")
                    .with_header("Retry-After", "1");
            }
        }
        let mut failures = Vec::new();
        for &play in &self.play_servers {
            match self.ask(play, match_id) {
                Asked::Observer(addr) => {
                    return Response::json(200, &serde_json::json!({ "observer": addr }))
                }
                Asked::Unknown => {}
                Asked::Failed(why) => failures.push(format!("{play}: {why}")),
            }
        }
        if failures.is_empty() {
            Response::error(
                404,
                "unknown_match",
                &format!("no play server runs match {match_id}"),
            )
        } else {
            Response::error(503, "unavailable", &failures.join("; "))
                .with_header("Retry-After", "1")
        }
    }

    fn ask(&self, play: SocketAddr, match_id: u64) -> Asked {
        let timeout = Duration::from_millis(OBSERVE_TIMEOUT_MS);
        let attempt = || -> std::io::Result<String> {
            let mut stream = TcpStream::connect_timeout(&play, timeout)?;
            stream.set_read_timeout(Some(timeout))?;
            let line =
                serde_json::json!({"t": "observe", "match": match_id, "key": self.rule.key.as_str()})
                    .to_string();
            writeln!(stream, "{line}")?;
            let mut answer = String::new();
            BufReader::new(stream.take(ANSWER_BYTES_MAX)).read_line(&mut answer)?;
            Ok(answer)
        };
        let answer = match attempt() {
            Ok(answer) => answer,
            Err(e) => return Asked::Failed(e.to_string()),
        };
        let v: Value = serde_json::from_str(&answer).unwrap_or(Value::Null);
        match (v["t"].as_str(), v["addr"].as_str(), v["error"].as_str()) {
            (Some("observer"), Some(addr), _) => Asked::Observer(addr.to_string()),
            (_, _, Some("unknown_match")) => Asked::Unknown,
            _ => Asked::Failed(answer.trim().to_string()),
        }
    }
}

impl Handler for Router {
    fn routes(&self) -> &'static [&'static str] {
        &["/v1/observer", "/healthz"]
    }

    fn handle(&mut self, req: Request, ctx: &mut Ctx<'_>) -> Reply {
        match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/v1/observer") => {}
            ("GET", "/healthz") => {
                return Reply::Now(Response::json(200, &serde_json::json!({"status": "ok"})))
            }
            (_, "/v1/observer" | "/healthz") => {
                return Reply::Now(http::method_not_allowed(&req, &["GET"]))
            }
            _ => return Reply::Now(http::not_found(&req)),
        }
        let Some(token) = req.bearer().map(str::to_string) else {
            return Reply::Now(Refusal::AccessDenied.response());
        };
        let Some(match_id) = req.query_param("match").and_then(|m| m.parse::<u64>().ok()) else {
            return Reply::Now(Response::error(
                400,
                "bad_request",
                "query match: must be a match id",
            ));
        };
        let (shared, ip) = (Arc::clone(&self.shared), req.peer.ip());
        let presented_ms = db::now_ms();
        defer_to_pool(&self.pool, ctx, move || {
            shared.observer(&token, ip, match_id, presented_ms)
        })
    }
}

impl Router {
    /// The router's handler over the user DB in `config.data_dir` (the fuzz targets drive
    /// it alone; [`start`] serves it).
    pub fn new(config: RouterConfig) -> Result<Router, SetupError> {
        let db = DbPool::new(&config.data_dir.join(db::DB_FILE))?;
        let rule = SessionRule {
            idle_ms: (config.token_idle_s * 1000) as i64,
            lobby: config.lobby,
            key: InternalKey::load_or_create(&db)?,
        };
        let shared = Arc::new(Shared {
            db,
            rule,
            play_servers: config.play_servers,
        });
        let pool = JobPool::new("router", ROUTER_WORKERS, ROUTER_QUEUE_MAX)?;
        Ok(Router { shared, pool })
    }
}

/// Starts the router on `listener`.
pub fn start(
    listener: TcpListener,
    config: RouterConfig,
    limits: Limits,
) -> Result<Running, SetupError> {
    let router = Router::new(config)?;
    let queue = router.pool.queue();
    let server = Server::new(listener, router, limits)?;
    let running = Running::new(server.spawn("router")?, Arc::new(AtomicBool::new(false)));
    queue.register(running.metrics());
    Ok(running)
}
