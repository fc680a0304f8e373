//! Match observers: a program that subscribes to one match on its play server and relays
//! the state stream to any number of watchers, from its first tick, in order, with no
//! gaps, then `end`, then exits.
//!
//! The relay runs on one thread: a smol executor drives the play server's stream, the
//! listener and a task per watcher, so a popular match costs a thousand small tasks and
//! one write per watcher per line, not a thousand threads waking on one lock. Play
//! servers start observers through a [`Spawner`]: [`process::ProcessSpawner`] (a child
//! process, the default) or [`docker::DockerSpawner`] (a container of the project's own
//! image).

pub mod docker;
pub mod process;

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use event_listener::Event;
use serde_json::Value;
use smol::future::{self, FutureExt};
use smol::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use smol::{Async, LocalExecutor, Timer};

use crate::domain::db::{self, DbPool};
use crate::domain::internal_key::InternalKey;
use crate::domain::session::{Denied, Idle, Refusal, SessionRule};
use crate::runtime::event_loop::ACCEPT_BACKOFF_MS;

/// Watchers one observer serves at once.
pub const WATCHERS_MAX: usize = 1024;
/// A watcher must send its `watch` line within this long.
const WATCH_REQUEST_TIMEOUT_MS: u64 = 10_000;
/// After `end`, watchers get this long to take the rest of the stream before the
/// observer exits.
const LINGER_MS: u64 = 3_000;
/// Longest line read from a watcher or the play server.
const LINE_BYTES_MAX: u64 = 64 * 1024;
/// A watcher that cannot take a line within this long is dropped.
const WATCHER_WRITE_TIMEOUT_MS: u64 = 5_000;
/// Bytes read from a watcher at a time while waiting for its `watch` line, which is
/// about a hundred: small, since it sits in every watcher's task for the whole match.
const WATCH_READ_BYTES: usize = 512;
/// Told to a watcher past [`WATCHERS_MAX`].
const BUSY: &[u8] = b"{\"t\":\"error\",\"error\":\"busy\"}\n";

/// Why an observer could not be started or run.
#[derive(Debug, thiserror::Error)]
pub enum ObserverError {
    /// Sockets, files or processes failed.
    #[error("{0}: {1}")]
    Io(String, #[source] io::Error),
    /// The play server refused or lost the subscription.
    #[error("play server: {0}")]
    Play(String),
    /// The backend is not usable here; the text says what to do.
    #[error("{0}")]
    Backend(String),
}

/// What an observer needs to apply the session rule to its watchers' tokens, passed on
/// its command line by every backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionArgs {
    /// `--token-idle-s` of the topology.
    pub token_idle_s: u64,
    /// The lobby to tell when a watcher's token gets its session revoked.
    pub lobby: Option<SocketAddr>,
}

/// The arguments of `catwar-server observer` for one match, as every backend passes them.
fn command_args(
    play: SocketAddr,
    match_id: u64,
    data_dir: &std::path::Path,
    session: SessionArgs,
) -> Vec<String> {
    let mut args = vec![
        "observer".to_string(),
        "--play".to_string(),
        play.to_string(),
        "--match".to_string(),
        match_id.to_string(),
        "--data".to_string(),
        data_dir.display().to_string(),
    ];
    args.extend(session.command_args());
    args
}

impl SessionArgs {
    /// The flags of `catwar-server observer` that carry these values.
    pub fn command_args(&self) -> Vec<String> {
        let mut args = vec!["--token-idle-s".to_string(), self.token_idle_s.to_string()];
        if let Some(lobby) = self.lobby {
            args.extend(["--lobby".to_string(), lobby.to_string()]);
        }
        args
    }
}

/// Starts one more observer for a match and returns where watchers connect.
pub trait Spawner: Send + Sync + fmt::Debug {
    /// Starts an observer of `match_id` on the play server at `play`.
    fn spawn(&self, play: SocketAddr, match_id: u64) -> Result<SocketAddr, ObserverError>;
    /// Stops every observer still running (the play server is stopping).
    fn stop_all(&self);
    /// Releases observers that have exited on their own. Backends whose observers
    /// clean up after themselves (containers started with AutoRemove) have nothing to do.
    fn reap(&self) {}
}

/// What `catwar-server observer` is given.
#[derive(Debug, Clone)]
pub struct ObserverArgs {
    /// The play server that owns the match.
    pub play: SocketAddr,
    /// The match.
    pub match_id: u64,
    /// The data folder (internal key, sessions for watchers' tokens).
    pub data_dir: PathBuf,
    /// Where to listen for watchers; port 0 picks one.
    pub listen: SocketAddr,
    /// The session rule's settings.
    pub session: SessionArgs,
}

#[derive(Default)]
struct Feed {
    /// Every line of the match so far, each with its newline, shared by every watcher.
    lines: Vec<Rc<[u8]>>,
    /// Set when the stream is over: `None` ended normally, `Some(code)` was lost.
    over: Option<Option<&'static str>>,
    /// Wakes the watchers waiting for a line or the end.
    grew: Event,
}

type Shared = Rc<RefCell<Feed>>;

impl Feed {
    fn push(&mut self, line: Rc<[u8]>) {
        self.lines.push(line);
        self.grew.notify(usize::MAX);
    }

    fn finish(&mut self, lost: Option<&'static str>) {
        self.over = Some(lost);
        self.grew.notify(usize::MAX);
    }
}

/// What a watcher's `watch` line is checked against, moved to a blocking thread for
/// each check: the session rule reads the DB and records the token's use.
#[derive(Clone)]
struct Gate {
    db: Arc<DbPool>,
    rule: Arc<SessionRule>,
    match_id: u64,
}

/// Runs an observer until its match ends. The first line on stdout is
/// `listening ADDR`, which the spawner waits for.
pub fn run(args: &ObserverArgs) -> Result<(), ObserverError> {
    let db = Arc::new(
        DbPool::new(&args.data_dir.join(db::DB_FILE))
            .map_err(|e| ObserverError::Backend(e.to_string()))?,
    );
    let key = InternalKey::load(&db)
        .map_err(|e| ObserverError::Backend(e.to_string()))?
        .ok_or_else(|| {
            ObserverError::Backend(
                "the user DB has no internal key yet; start the topology first".into(),
            )
        })?;
    let listener = Async::<TcpListener>::bind(args.listen)
        .map_err(|e| ObserverError::Io(format!("--listen {}", args.listen), e))?;
    let addr = listener
        .get_ref()
        .local_addr()
        .map_err(|e| ObserverError::Io("listener".into(), e))?;
    let subscribe =
        serde_json::json!({"t": "subscribe", "match": args.match_id, "key": key.as_str()})
            .to_string();
    let gate = Gate {
        rule: Arc::new(SessionRule {
            idle_ms: (args.session.token_idle_s * 1000) as i64,
            lobby: args.session.lobby,
            key,
        }),
        db,
        match_id: args.match_id,
    };
    let executor = LocalExecutor::new();
    let lost = smol::block_on(executor.run(async {
        let play = subscribe_to(args.play, &subscribe).await?;
        println!("listening {addr}");
        io::stdout()
            .flush()
            .map_err(|e| ObserverError::Io("stdout".into(), e))?;
        let feed = Shared::default();
        let relaying = async {
            let lost = relay(play, &feed).await;
            feed.borrow_mut().finish(lost);
            Timer::after(Duration::from_millis(LINGER_MS)).await;
            lost
        };
        let admitting = async {
            admit(&listener, &executor, &feed, &gate).await;
            future::pending().await
        };
        Ok::<_, ObserverError>(relaying.or(admitting).await)
    }))?;
    match lost {
        None => Ok(()),
        Some(code) => Err(ObserverError::Play(code.into())),
    }
}

/// Subscribes to the match and returns the stream of its lines once the play server
/// said `subscribed`.
async fn subscribe_to(
    addr: SocketAddr,
    subscribe: &str,
) -> Result<BufReader<Async<TcpStream>>, ObserverError> {
    let mut play = Async::<TcpStream>::connect(addr)
        .await
        .map_err(|e| ObserverError::Io(format!("--play {addr}"), e))?;
    play.write_all(format!("{subscribe}\n").as_bytes())
        .await
        .map_err(|e| ObserverError::Io("subscribe".into(), e))?;
    let mut reader = BufReader::new(play);
    let mut first = Vec::new();
    (&mut reader)
        .take(LINE_BYTES_MAX)
        .read_until(b'\n', &mut first)
        .await
        .map_err(|e| ObserverError::Io("subscribe answer".into(), e))?;
    if !contains(&first, b"\"subscribed\"") {
        return Err(ObserverError::Play(
            String::from_utf8_lossy(&first).trim().to_string(),
        ));
    }
    Ok(reader)
}

/// Copies the play server's lines into the feed until `end`; returns the loss code if
/// the stream broke first (closed, failed, or a line without its newline in
/// [`LINE_BYTES_MAX`]).
async fn relay(mut play: BufReader<Async<TcpStream>>, feed: &Shared) -> Option<&'static str> {
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut play)
            .take(LINE_BYTES_MAX)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(_) if line.last() == Some(&b'\n') => {}
            Ok(_) | Err(_) => return Some("play_lost"),
        }
        let end = contains(&line, b"\"t\":\"end\"");
        feed.borrow_mut().push(line.as_slice().into());
        if end {
            return None;
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Accepts watchers for as long as the observer runs, each served by a task of its own
/// on this thread; past [`WATCHERS_MAX`] a watcher is told `busy` and closed.
async fn admit(
    listener: &Async<TcpListener>,
    executor: &LocalExecutor<'_>,
    feed: &Shared,
    gate: &Gate,
) {
    let active = Rc::new(Cell::new(0usize));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, most likely: the watchers already in are served
                // meanwhile, and accepting resumes after a pause.
                tracing::warn!(error = %e, "observer: accept failed; pausing");
                Timer::after(Duration::from_millis(ACCEPT_BACKOFF_MS)).await;
                continue;
            }
        };
        if active.get() >= WATCHERS_MAX {
            // One try without waiting: a full socket buffer loses the notice, not the relay.
            let _ = stream.get_ref().write(BUSY);
            continue;
        }
        active.set(active.get() + 1);
        let (feed, gate, active) = (Rc::clone(feed), gate.clone(), Rc::clone(&active));
        executor
            .spawn(async move {
                let _ = watch(stream, &feed, gate).await;
                active.set(active.get() - 1);
            })
            .detach();
    }
}

/// Serves one watcher: checks its `watch` line, then streams the feed from the start.
async fn watch(mut stream: Async<TcpStream>, feed: &Shared, gate: Gate) -> io::Result<()> {
    let peer = stream.get_ref().peer_addr()?.ip();
    let line = match read_watch_line(&mut stream).await? {
        Ok(line) => line,
        Err(code) => return send_error(&mut stream, code).await,
    };
    let checked = smol::unblock(move || check_watch(&line, &gate, peer)).await;
    if let Err(code) = checked {
        return send_error(&mut stream, code).await;
    }
    let (mut sent, mut pending, mut batch) = (0, Vec::new(), Vec::new());
    loop {
        let over = {
            let feed = feed.borrow();
            pending.extend(feed.lines[sent..].iter().cloned());
            feed.over
        };
        sent += pending.len();
        match pending.as_slice() {
            [] => {}
            // Each tick's line goes out as it is, without a copy; a watcher that fell
            // behind gets what it missed in one write.
            [line] => write_within(&mut stream, line).await?,
            lines => {
                batch.clear();
                lines.iter().for_each(|l| batch.extend_from_slice(l));
                write_within(&mut stream, &batch).await?;
            }
        }
        if !pending.is_empty() {
            pending.clear();
            continue;
        }
        if let Some(lost) = over {
            if let Some(code) = lost {
                send_error(&mut stream, code).await?;
            }
            return Ok(());
        }
        // No line can arrive between the check above and this listener: both run on
        // this thread with no await between them.
        let grew = feed.borrow().grew.listen();
        grew.await;
    }
}

/// Writes to a watcher, which must take the bytes within [`WATCHER_WRITE_TIMEOUT_MS`].
async fn write_within(stream: &mut Async<TcpStream>, bytes: &[u8]) -> io::Result<()> {
    stream
        .write_all(bytes)
        .or(async {
            Timer::after(Duration::from_millis(WATCHER_WRITE_TIMEOUT_MS)).await;
            Err(io::ErrorKind::TimedOut.into())
        })
        .await
}

async fn send_error(stream: &mut Async<TcpStream>, code: &str) -> io::Result<()> {
    write_within(
        stream,
        format!("{{\"t\":\"error\",\"error\":\"{code}\"}}\n").as_bytes(),
    )
    .await
}

/// Reads a watcher's first line within [`WATCH_REQUEST_TIMEOUT_MS`] in all, however its
/// bytes trickle in, so that a watcher sending a byte at a time cannot hold its slot
/// until the match ends. The inner error is the code sent back: `timeout`,
/// `line_too_long`, or `bad_json` for bytes that are not UTF-8.
async fn read_watch_line(
    stream: &mut Async<TcpStream>,
) -> io::Result<Result<String, &'static str>> {
    let reading = async {
        let mut line = Vec::new();
        let mut chunk = [0u8; WATCH_READ_BYTES];
        loop {
            let n = stream.read(&mut chunk).await?;
            // The end of the stream ends the line too: what came is judged as it is.
            let end = chunk[..n].iter().position(|&b| b == b'\n');
            line.extend_from_slice(&chunk[..end.unwrap_or(n)]);
            if line.len() as u64 > LINE_BYTES_MAX {
                return Ok(Err("line_too_long"));
            }
            if n == 0 || end.is_some() {
                return Ok(String::from_utf8(line).map_err(|_| "bad_json"));
            }
        }
    };
    reading
        .or(async {
            Timer::after(Duration::from_millis(WATCH_REQUEST_TIMEOUT_MS)).await;
            Ok(Err("timeout"))
        })
        .await
}

/// Checks a `watch` line: the match, then the token by the session rule (SPEC §3), with
/// the lobby's codes.
fn check_watch(line: &str, gate: &Gate, peer: IpAddr) -> Result<(), &'static str> {
    let token = parse_watch(line, gate.match_id)?;
    match gate
        .rule
        .check(&gate.db, &token, peer, Idle::Applies, db::now_ms())
    {
        Ok(_) => Ok(()),
        Err(Denied::Refused(refusal)) => Err(refusal.code()),
        Err(Denied::Db(_)) => Err("unavailable"),
    }
}

/// Reads a `watch` line for `match_id` and returns its token; the error is the code sent
/// back. The part of `check_watch` that needs no DB, public for the fuzz targets only.
#[doc(hidden)]
pub fn parse_watch(line: &str, match_id: u64) -> Result<String, &'static str> {
    let v: Value = serde_json::from_str(line).map_err(|_| "bad_json")?;
    if v.get("t").and_then(Value::as_str) != Some("watch") {
        return Err("expected_watch");
    }
    if v.get("match").and_then(Value::as_u64) != Some(match_id) {
        return Err("unknown_match");
    }
    v.get("token")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or(Refusal::AccessDenied.code())
}
