//! A login flood at ten times what profile's argon2 workers can verify (issue 10; SPEC §3
//! profile: "job queue full → 503 `busy` with `Retry-After`"), against a real topology
//! (`catwar-server up`, one process per service). Every attempt is answered, 200 with a
//! token or 503 `busy` with `Retry-After` (or a clean close), and none hangs; the bounded
//! queue shows in how few logins are granted; the profile process's resident memory
//! stays under a stated bound; the lobby answers `GET /v1/me` with 200 throughout.
//!
//! How fast anything is answered is measured by `ci/bench-login-lobby.sh` (the lobby's
//! p99 idle and during such a flood), never asserted here.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use catwar_server::config::Argon2Preset;
use catwar_server::domain::{tls, users};
use catwar_server::services::profile::LOGIN_QUEUE_MAX;

use crate::util::{connect, read_response, tls_connector, tls_request, Raw, Up};

/// Login workers: one at the OWASP cost, as in the other tests of a busy profile. The
/// smallest capacity, so that ten times it takes the fewest client threads.
const WORKERS: usize = 1;
/// The flood offers this many times the logins the workers can verify (issue 10).
const FLOOD_FACTOR: f64 = 10.0;
/// How long the flood offers logins. The queue fills within its first second, so most
/// of the flood meets a full queue.
const FLOOD_S: f64 = 3.0;
/// Flood connections, each with one login in flight at a time (the event loop answers a
/// connection's requests one after the other). Twice the queue: enough to overfill the
/// queue and the workers, with as many again free to keep offering while those wait.
const FLOOD_CONNECTIONS: usize = 2 * LOGIN_QUEUE_MAX;
/// A flood client's stack: a TLS connection and a read buffer need far less than the
/// default 2 MiB, and there are hundreds of clients.
const CLIENT_STACK_BYTES: usize = 512 * 1024;
/// How long a flooded login may wait for its answer before it counts as hung. One at the
/// back of a full queue waits for every login ahead of it, and the workers run niced
/// (`LOGIN_WORKER_NICE`): on cores shared with the flood's clients and with other tests,
/// a verification may take ten times its cost on an idle machine.
const ANSWER_WAIT_S_MAX: u64 = 120;
/// The pause between two lobby probes: a player's pace, so the probe measures the lobby
/// without becoming a load of its own.
const PROBE_INTERVAL_MS: u64 = 10;
/// Users the flood logs in as, in turn. Every password is right, so no failure limit
/// (429) applies.
const USERS: u64 = 4;
/// Verifications this process times to learn a worker's speed; the fastest counts, as the
/// machine's load can only slow the server's own.
const VERIFY_SAMPLES: u32 = 5;
/// How much faster than the fastest timed verification the server's may still be (CPU
/// frequency moves); the grant bound allows for it.
const VERIFY_SPEED_MARGIN: f64 = 2.0;
/// Time a login may spend between being sent and reaching the queue, beyond the flood's
/// own span: requests still in flight when the flood stops may find room as it drains.
const TRANSIT_S: f64 = 1.0;
/// Resident memory the profile process may reach. argon2 allocates its 19 MiB block
/// afresh for every verification and glibc keeps freed blocks in the worker's arena,
/// apart: one worker levels off between 130 and 190 MiB within ten logins, whatever the
/// load (five runs of 400 logins each). An idle TLS connection adds about 13 KiB (7 MiB
/// for the flood's), a queued login a few hundred bytes. The bound is 130 MiB above the
/// highest of those levels.
const PROFILE_RSS_KIB_MAX: u64 = 320 * 1024;

/// What one login attempt of the flood got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// 200 with a token.
    Granted,
    /// 503 `busy` with a `Retry-After` of at least a second.
    Busy,
    /// The connection closed (or the handshake failed) without an answer.
    Closed,
}

/// One attempt: its answer, when it was sent and how long its answer took.
type Attempt = (Answer, Instant, Duration);

/// The fastest of a few OWASP verifications in this process, in seconds.
fn verify_s_min() -> f64 {
    let phc = users::hash_password(&users::hasher(Argon2Preset::Owasp), "pw").unwrap();
    (0..VERIFY_SAMPLES)
        .map(|_| {
            let started = Instant::now();
            assert!(users::verify_password(&phc, "pw"));
            started.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// A field of `/proc/PID/status` in KiB, such as `VmRSS` or `VmHWM` (the peak).
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// The request of attempt number `attempt`, which logs in as one of [`USERS`] in turn.
fn login_body(attempt: usize) -> String {
    let id = format!("user{}", attempt as u64 % USERS + 1);
    let body = serde_json::json!({"id": id, "password": users::seed_password(&id)}).to_string();
    format!(
        "POST /v1/login HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// What the flood's clients share: the schedule of attempts and where to send them.
struct Flood {
    profile: SocketAddr,
    connector: native_tls::TlsConnector,
    attempts: usize,
    interval: Duration,
    next: AtomicUsize,
    /// Set by the first client past the start line: attempt `i` is due `i` intervals later.
    started: OnceLock<Instant>,
    ready: Barrier,
}

type Tls = native_tls::TlsStream<TcpStream>;

impl Flood {
    /// A new connection, or `None` when profile refused it: a client that panicked here
    /// would leave the others waiting at the start line for ever.
    fn handshake(&self) -> Option<Tls> {
        let tcp = TcpStream::connect(self.profile).ok()?;
        tcp.set_read_timeout(Some(Duration::from_secs(ANSWER_WAIT_S_MAX)))
            .ok()?;
        self.connector.connect("localhost", tcp).ok()
    }

    /// One client: connects, waits for the others, then takes the next due attempt
    /// until none is left, sending each on its keep-alive connection.
    fn client(&self) -> Vec<Attempt> {
        let mut stream = self.handshake();
        self.ready.wait();
        let started = *self.started.get_or_init(Instant::now);
        let mut attempts = Vec::new();
        loop {
            let i = self.next.fetch_add(1, Ordering::SeqCst);
            if i >= self.attempts {
                return attempts;
            }
            let due = started + self.interval.mul_f64(i as f64);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            let sent = Instant::now();
            if stream.is_none() {
                stream = self.handshake();
            }
            let answer = match stream.as_mut().and_then(|tls| ask(tls, &login_body(i))) {
                Some(raw) => classify(&raw),
                None => {
                    assert!(
                        sent.elapsed() < Duration::from_secs(ANSWER_WAIT_S_MAX),
                        "a login hung for {ANSWER_WAIT_S_MAX} s"
                    );
                    stream = None;
                    Answer::Closed
                }
            };
            attempts.push((answer, sent, sent.elapsed()));
        }
    }
}

/// Sends one login on `tls` and reads its answer; `None` when the server closed.
fn ask(tls: &mut Tls, request: &str) -> Option<Raw> {
    tls.write_all(request.as_bytes()).ok()?;
    read_response(tls, &mut Vec::new())
}

/// What an answer to a flooded login is; anything but 200 or 503 `busy` with a
/// `Retry-After` fails the test.
fn classify(raw: &Raw) -> Answer {
    let body = || String::from_utf8_lossy(&raw.body).into_owned();
    match raw.status {
        200 => {
            assert!(raw.json()["token"].is_string(), "{}", body());
            Answer::Granted
        }
        503 => {
            assert_eq!(raw.json()["error"], "busy", "{}", body());
            let retry_s: u64 = raw
                .header("retry-after")
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("503 without a Retry-After in seconds: {raw:?}"));
            assert!(retry_s >= 1, "Retry-After {retry_s}");
            Answer::Busy
        }
        status => panic!("a flooded login got {status}: {}", body()),
    }
}

/// `GET /v1/me` on one keep-alive connection, over and over until `over` is set; returns
/// each answer's status and whether it came while the flood was still on.
fn probe_lobby(
    lobby: SocketAddr,
    token: String,
    over: Arc<AtomicBool>,
) -> JoinHandle<Vec<(u16, bool)>> {
    std::thread::spawn(move || {
        let mut stream = connect(lobby);
        let request =
            format!("GET /v1/me HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n\r\n");
        let mut answers = Vec::new();
        loop {
            stream.write_all(request.as_bytes()).unwrap();
            let raw = read_response(&mut stream, &mut Vec::new()).expect("the lobby answered");
            let flooding = !over.load(Ordering::SeqCst);
            answers.push((raw.status, flooding));
            if !flooding {
                return answers;
            }
            std::thread::sleep(Duration::from_millis(PROBE_INTERVAL_MS));
        }
    })
}

#[test]
fn a_login_flood_at_ten_times_capacity_is_refused_busy_in_bounded_memory_while_the_lobby_serves() {
    let up = Up::start(&[
        "--argon2",
        "owasp",
        "--login-workers",
        &WORKERS.to_string(),
        "--file-nodes",
        "1",
        "--play-servers",
        "1",
    ]);
    users::seed(up.data(), USERS, Some(Argon2Preset::Owasp)).unwrap();
    let cert = tls::cert_path(up.data());
    let (profile, lobby) = (up.addr("profile"), up.addr("lobby"));
    let profile_pid = up.topology().service("profile").unwrap().pid;
    let login = |id: &str| {
        let body = serde_json::json!({"id": id, "password": users::seed_password(id)});
        tls_request(profile, &cert, "POST", "/v1/login", None, &body.to_string())
    };
    let granted = login("user1");
    assert_eq!(granted.status, 200);
    let token = granted.json()["token"].as_str().unwrap().to_string();
    let rss_before_kib = status_kib(profile_pid, "VmRSS");

    // Capacity is what the workers verify in a second; the flood offers ten times it.
    let verify_s = verify_s_min();
    let rate_per_s = FLOOD_FACTOR * WORKERS as f64 / verify_s;
    let flood = Arc::new(Flood {
        profile,
        connector: tls_connector(&cert),
        attempts: (rate_per_s * FLOOD_S).ceil() as usize,
        interval: Duration::from_secs_f64(1.0 / rate_per_s),
        next: AtomicUsize::new(0),
        started: OnceLock::new(),
        ready: Barrier::new(FLOOD_CONNECTIONS),
    });
    let clients: Vec<JoinHandle<Vec<Attempt>>> = (0..FLOOD_CONNECTIONS)
        .map(|i| {
            let flood = Arc::clone(&flood);
            std::thread::Builder::new()
                .name(format!("flood-{i}"))
                .stack_size(CLIENT_STACK_BYTES)
                .spawn(move || flood.client())
                .unwrap()
        })
        .collect();
    let over = Arc::new(AtomicBool::new(false));
    while flood.started.get().is_none() {
        std::thread::sleep(Duration::from_millis(1));
    }
    let probe = probe_lobby(lobby, token, Arc::clone(&over));
    let attempts: Vec<Attempt> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    over.store(true, Ordering::SeqCst);
    let probes = probe.join().unwrap();
    let rss_peak_kib = status_kib(profile_pid, "VmHWM");

    let count = |kind: Answer| attempts.iter().filter(|(a, _, _)| *a == kind).count();
    let (granted, busy, closed) = (
        count(Answer::Granted),
        count(Answer::Busy),
        count(Answer::Closed),
    );
    let first = attempts.iter().map(|(_, sent, _)| *sent).min().unwrap();
    let last = attempts.iter().map(|(_, sent, _)| *sent).max().unwrap();
    let span_s = (last - first).as_secs_f64();
    let waited_max = attempts.iter().map(|(_, _, w)| *w).max().unwrap();
    eprintln!(
        "flood: {} attempts over {span_s:.1} s (capacity {:.0}/s), {granted} granted, \
         {busy} busy, {closed} closed, longest answer {waited_max:.1?}; profile RSS \
         {rss_before_kib} KiB before, peak {rss_peak_kib} KiB; {} lobby probes",
        attempts.len(),
        WORKERS as f64 / verify_s,
        probes.len()
    );
    assert_eq!(attempts.len(), flood.attempts, "every attempt was made");
    assert!(busy > 0, "the queue never filled; the flood proved nothing");
    assert!(granted > 0, "no login got through the flood");
    // The queue and the workers hold at most LOGIN_QUEUE_MAX + WORKERS logins; any more
    // granted were verified while the flood ran. An unbounded queue would take the whole
    // flood and grant it all, later.
    let verified_max = VERIFY_SPEED_MARGIN * WORKERS as f64 * (span_s + TRANSIT_S) / verify_s;
    let granted_max = LOGIN_QUEUE_MAX + WORKERS + verified_max.ceil() as usize;
    assert!(
        granted <= granted_max,
        "{granted} granted, more than the queue, the workers and {verified_max:.0} verifications"
    );
    assert!(
        rss_peak_kib <= PROFILE_RSS_KIB_MAX,
        "profile peaked at {rss_peak_kib} KiB"
    );
    assert!(
        probes.iter().all(|&(status, _)| status == 200),
        "the lobby failed a probe: {probes:?}"
    );
    assert!(
        probes.iter().any(|&(_, flooding)| flooding),
        "no lobby probe was answered while the flood was on"
    );
    // Every client has its answers, so the queue is empty: the next login goes through.
    assert_eq!(login("user2").status, 200);
}
