//! Match observers: a program that subscribes to one match on its play server and relays
//! the state stream to any number of watchers, from its first tick, in order, with no
//! gaps, then `end`, then exits.
//!
//! The relay is small and short-lived, so it uses a thread per watcher: a match has a
//! handful of watchers and lasts half a minute. Play servers start observers through a
//! [`Spawner`]: [`process::ProcessSpawner`] (a child process, the default) or
//! [`docker::DockerSpawner`] (a container of the project's own image).

pub mod docker;
pub mod process;

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::domain::db::{self, DbPool};
use crate::domain::internal_key::InternalKey;
use crate::domain::session::{Denied, Idle, Refusal, SessionRule};

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

#[derive(Debug, Default)]
struct Feed {
    lines: Vec<Arc<str>>,
    /// Set when the stream is over: `None` ended normally, `Some(code)` was lost.
    over: Option<Option<&'static str>>,
}

type Shared = Arc<(Mutex<Feed>, Condvar)>;

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
    let listener = TcpListener::bind(args.listen)
        .map_err(|e| ObserverError::Io(format!("--listen {}", args.listen), e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| ObserverError::Io("listener".into(), e))?;
    let mut play = TcpStream::connect(args.play)
        .map_err(|e| ObserverError::Io(format!("--play {}", args.play), e))?;
    let subscribe =
        serde_json::json!({"t": "subscribe", "match": args.match_id, "key": key.as_str()})
            .to_string();
    writeln!(play, "{subscribe}").map_err(|e| ObserverError::Io("subscribe".into(), e))?;
    let mut reader = BufReader::new(
        play.try_clone()
            .map_err(|e| ObserverError::Io("play socket".into(), e))?,
    );
    let mut first = String::new();
    (&mut reader)
        .take(LINE_BYTES_MAX)
        .read_line(&mut first)
        .map_err(|e| ObserverError::Io("subscribe answer".into(), e))?;
    if !first.contains("\"subscribed\"") {
        return Err(ObserverError::Play(first.trim().to_string()));
    }
    println!("listening {addr}");
    io::stdout()
        .flush()
        .map_err(|e| ObserverError::Io("stdout".into(), e))?;
    let shared: Shared = Arc::new((Mutex::new(Feed::default()), Condvar::new()));
    let rule = Arc::new(SessionRule {
        idle_ms: (args.session.token_idle_s * 1000) as i64,
        lobby: args.session.lobby,
        key,
    });
    let (s, m) = (Arc::clone(&shared), args.match_id);
    std::thread::spawn(move || accept_watchers(listener, s, db, rule, m));
    let lost = relay(reader, &shared);
    let (lock, ready) = &*shared;
    lock.lock().expect("feed lock").over = Some(lost);
    ready.notify_all();
    std::thread::sleep(Duration::from_millis(LINGER_MS));
    match lost {
        None => Ok(()),
        Some(code) => Err(ObserverError::Play(code.into())),
    }
}

/// Copies the play server's lines into the feed until `end`; returns the loss code if
/// the stream broke first.
fn relay(mut reader: BufReader<TcpStream>, shared: &Shared) -> Option<&'static str> {
    let (lock, ready) = &**shared;
    loop {
        let mut line = String::new();
        match (&mut reader).take(LINE_BYTES_MAX).read_line(&mut line) {
            Ok(0) | Err(_) => return Some("play_lost"),
            Ok(_) => {}
        }
        let line = line.trim_end();
        let end = line.contains("\"t\":\"end\"");
        lock.lock().expect("feed lock").lines.push(line.into());
        ready.notify_all();
        if end {
            return None;
        }
    }
}

fn accept_watchers(
    listener: TcpListener,
    shared: Shared,
    db: Arc<DbPool>,
    rule: Arc<SessionRule>,
    match_id: u64,
) {
    let active = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming().flatten() {
        if active.load(Ordering::SeqCst) >= WATCHERS_MAX {
            let _ = (&stream).write_all(b"{\"t\":\"error\",\"error\":\"busy\"}\n");
            continue;
        }
        active.fetch_add(1, Ordering::SeqCst);
        let (s, d, a) = (Arc::clone(&shared), Arc::clone(&db), Arc::clone(&active));
        let r = Arc::clone(&rule);
        std::thread::spawn(move || {
            let _ = watch(stream, &s, (&d, &r), match_id);
            a.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// Serves one watcher: checks its `watch` line, then streams the feed from the start.
fn watch(
    stream: TcpStream,
    shared: &Shared,
    (db, rule): (&DbPool, &SessionRule),
    match_id: u64,
) -> io::Result<()> {
    stream.set_write_timeout(Some(Duration::from_millis(WATCHER_WRITE_TIMEOUT_MS)))?;
    let mut out = stream.try_clone()?;
    let peer = stream.peer_addr()?.ip();
    let line = match read_watch_line(&stream)? {
        Ok(line) => line,
        Err(code) => return writeln!(out, "{{\"t\":\"error\",\"error\":\"{code}\"}}"),
    };
    if let Err(code) = check_watch(&line, (db, rule), match_id, peer) {
        return writeln!(out, "{{\"t\":\"error\",\"error\":\"{code}\"}}");
    }
    let (lock, ready) = &**shared;
    let mut sent = 0;
    loop {
        let (batch, over) = {
            let mut feed = lock.lock().expect("feed lock");
            while feed.lines.len() == sent && feed.over.is_none() {
                feed = ready.wait(feed).expect("feed lock");
            }
            (feed.lines[sent..].to_vec(), feed.over)
        };
        sent += batch.len();
        let mut bytes = Vec::with_capacity(batch.iter().map(|l| l.len() + 1).sum());
        for l in &batch {
            bytes.extend_from_slice(l.as_bytes());
            bytes.push(b'\n');
        }
        out.write_all(&bytes)?;
        if let Some(lost) = over {
            if lock.lock().expect("feed lock").lines.len() == sent {
                if let Some(code) = lost {
                    writeln!(out, "{{\"t\":\"error\",\"error\":\"{code}\"}}")?;
                }
                return Ok(());
            }
        }
    }
}

/// Reads a watcher's first line within [`WATCH_REQUEST_TIMEOUT_MS`] in all, however its
/// bytes trickle in: a read timeout alone starts over with every byte, so a watcher that
/// sends one byte at a time would hold its thread and its slot until the match ends.
/// The inner error is the code sent back: `timeout`, `line_too_long`, or `bad_json` for
/// bytes that are not UTF-8.
fn read_watch_line(mut stream: &TcpStream) -> io::Result<Result<String, &'static str>> {
    let deadline = Instant::now() + Duration::from_millis(WATCH_REQUEST_TIMEOUT_MS);
    let mut line = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Err("timeout"));
        }
        stream.set_read_timeout(Some(left))?;
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e) => match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => return Ok(Err("timeout")),
                _ => return Err(e),
            },
        };
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
}

/// Checks a `watch` line: the match, then the token by the session rule (SPEC §3), with
/// the lobby's codes.
fn check_watch(
    line: &str,
    (db, rule): (&DbPool, &SessionRule),
    match_id: u64,
    peer: IpAddr,
) -> Result<(), &'static str> {
    let token = parse_watch(line, match_id)?;
    match rule.check(db, &token, peer, Idle::Applies, db::now_ms()) {
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
