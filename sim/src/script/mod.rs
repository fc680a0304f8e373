//! The virtual client script, step by step.
//!
//! Each virtual client is one task that loops sessions until the run's deadline (with
//! matches in the script, until a match no longer fits before it). A session follows
//! the scenario (SPEC §2):
//!
//! 1. choose a version: the stale one with probability `script.stale_version`, else the
//!    current one, and `update.check` it at storage; on `503 unavailable` (a balancer
//!    failover) back off with jitter and ask again;
//! 2. if an update is offered, `file.download` every file from a random endpoint of the
//!    answer and verify its size and sha256;
//! 3. `login` at profile over a new TLS connection; with probability
//!    `script.wrong_password` with a wrong password, which must be refused with
//!    `login_failed`. A failed login ends the session ("Your login is failed");
//! 4. `lobby.me` at the lobby the login named, then with probability `script.ranking` a
//!    `lobby.ranking` page;
//! 5. with probability `script.ip_change` the client's source IP changes: its token
//!    must now get `login_again`, and it logs in again from the new address;
//! 6. with probability `script.idle` the client idles past the token timeout: the lobby
//!    must answer `refresh_required`; it refreshes, checks that the old token is dead
//!    (`access_denied`) and goes on with the new one;
//! 7. with probability `script.start`, `lobby.start` (`no_capacity` is counted by code),
//!    `play.join` at the play server the lobby named, and the match played to its `end`
//!    (`play.rs`); with probability `script.observe` the client watches it through a
//!    match observer meanwhile (`observe.rs`). A match that started or filled before the
//!    join arrived sends the client back to the lobby, a bounded number of times, and no
//!    match is started that could not end before the run does;
//! 8. `logout` at profile; in the closed model, think for `load.think_time_ms`, jittered
//!    by ±50 %, and start over; in the open model, leave.
//!
//! An open-model session's first request is timed from its scheduled arrival, so a late
//! start counts as latency; every other request from the moment it is sent. The funnel follows the session through
//! the design document's stages (update, download, login, lobby, play, observe, done).
//!
//! `429` and `503` answers (other than `no_capacity`) are retried a bounded number of
//! times after a jittered back-off no longer than their Retry-After; each is counted by
//! code. Every client draws from its own random stream, seeded from the scenario seed
//! and its id, so a run is reproducible and one client can be replayed alone.

mod account;
mod answer;
mod identity;
mod lobby;
mod observe;
mod play;
mod ticks;
mod update;

pub use identity::SourcePool;
pub use play::PlayPlan;
pub use update::{discover_version, DiscoveryError};

use crate::ledger::Ledger;
use crate::metrics::Recorder;
use crate::net::http::{HttpClient, Request, Response};
use crate::net::tls::TlsClient;
use crate::scenario::Script;
use crate::seeds::client_seed;
use crate::step::{Stage, Step};
use crate::TRACE;
use account::Session;
use answer::{successful, Failure, Refusal, Reply};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use update::Update;

/// tokio's timers have millisecond resolution and a parked worker takes a moment to
/// wake: an arrival started this late is on time.
const TIMER_TICK_MS: u64 = 2;
/// A pause this long is a player away from the game: the client closes its connections
/// first, as real clients do, and servers would time them out during it anyway.
const AWAY_MS_MIN: u64 = 5_000;
/// The first pause after a `busy` or `rate_limited` answer: a full login queue drains
/// in tens of milliseconds on loopback.
const BUSY_BACKOFF_START_MS: u64 = 50;
/// Pauses double up to this; Retry-After (whole seconds) caps them as well.
const BUSY_BACKOFF_CAP_MS: u64 = 1_000;
/// Attempts of one request before the last refusal counts as its answer: with the
/// pauses above, about four seconds of trying, which is what a player would wait.
const BUSY_ATTEMPTS_MAX: u32 = 8;

/// What every virtual client of a run shares.
#[derive(Debug)]
pub struct ScriptEnv {
    /// Storage's address.
    pub storage: SocketAddr,
    /// Profile's address.
    pub profile: SocketAddr,
    /// The router's address, where observers are asked for.
    pub router: SocketAddr,
    /// The TLS client that trusts profile's certificate.
    pub tls: TlsClient,
    /// The version storage reports as current.
    pub current_version: String,
    /// The version stale clients report (`population.stale_version`).
    pub stale_version: String,
    /// Seeded users (`population.users`).
    pub users: u64,
    /// The probabilities of the branches (`[script]`).
    pub branches: Script,
    /// The token idle timeout the idle branch sleeps past (`server.token_idle_s`).
    pub token_idle_s: u64,
    /// How matches are played.
    pub play: PlayPlan,
    /// Every match result the clients see, for `results.no_loss`.
    pub ledger: Ledger,
    /// Mean pause after a session (`load.think_time_ms`).
    pub think_time_ms: u64,
    /// The window in which first sessions start (`load.start_spread_ms`).
    pub start_spread_ms: u64,
    /// Every file node of the topology: an update answer may name these and no other.
    pub file_nodes: Vec<SocketAddr>,
    /// Whether the scenario kills file nodes, which makes dead endpoints expected.
    pub file_nodes_killed: bool,
    /// Whether the scenario kills match observers, which makes a watch cut before its
    /// `end` an error (`observer_lost`) rather than a broken `observers.every_tick`.
    pub observers_killed: bool,
    /// The scenario seed.
    pub seed: u64,
    /// When clients stop starting new steps.
    pub deadline: Instant,
    /// Where the clients connect from.
    pub sources: SourcePool,
}

/// Runs one virtual client of the closed model: sessions back to back until the deadline.
pub async fn run_client(env: Arc<ScriptEnv>, id: u64, recorder: Recorder) {
    let mut client = VirtualClient::new(env, id, recorder);
    client.run().await;
}

/// Runs one arrival of the open model: a client that arrived at `arrived_at` plays one
/// session and leaves. Its first request counts from `arrived_at`, so a simulator that
/// starts it late shows the delay instead of hiding it.
pub async fn run_arrival(env: Arc<ScriptEnv>, id: u64, recorder: Recorder, arrived_at: Instant) {
    let mut client = VirtualClient::new(env, id, recorder);
    client.due = Some(arrived_at);
    client.recorder.client_active(true);
    client.session().await;
    client.recorder.client_active(false);
}

struct VirtualClient {
    env: Arc<ScriptEnv>,
    id: u64,
    /// The seeded user this client logs in as.
    user: String,
    rng: StdRng,
    http: HttpClient,
    recorder: Recorder,
    /// When the next request was meant to leave: an open-model session's arrival. A
    /// request timed from there shows a late start (a busy simulator, a dispatcher
    /// behind) as latency, which keeps the open model free of coordinated omission.
    due: Option<Instant>,
    /// The funnel stage the session is in, since when.
    stage: Option<(Stage, Instant)>,
    /// The stages this client ever reached, one bit each.
    reached: u8,
}

/// Where a request goes.
#[derive(Clone, Copy, Debug)]
enum Via {
    /// Profile, over a new TLS connection.
    Profile,
    /// The lobby at this address, over a kept-alive connection.
    Lobby(SocketAddr),
}

impl VirtualClient {
    fn new(env: Arc<ScriptEnv>, id: u64, recorder: Recorder) -> VirtualClient {
        VirtualClient {
            user: identity::user_id(id, env.users),
            http: HttpClient::new(Some(env.sources.home(id))),
            rng: StdRng::seed_from_u64(client_seed(env.seed, id)),
            env,
            id,
            recorder,
            due: None,
            stage: None,
            reached: 0,
        }
    }

    async fn run(&mut self) {
        // Starts spread over `load.start_spread_ms`: one think time unless the scenario
        // asks for a stampede.
        let first_pause = self.rng.random_range(0..=self.env.start_spread_ms);
        if !self.pause_ms(first_pause).await {
            return;
        }
        self.recorder.client_active(true);
        while self.running() && self.session_fits() {
            self.session().await;
            let think_ms = self.jitter(self.env.think_time_ms);
            self.pause_ms(think_ms).await;
        }
        self.recorder.client_active(false);
    }

    /// One session: update, log in, visit the lobby, log out.
    async fn session(&mut self) {
        let env = Arc::clone(&self.env);
        let began = Instant::now();
        // Every session starts from the client's own address, whatever happened before.
        self.http.set_local_ip(self.env.sources.home(self.id));
        self.enter_stage(Stage::Update);
        // Steps 1 and 2: the update check, and the download of an offered update.
        let stale = self.chance("stale_version", env.branches.stale_version);
        let version = if stale {
            &env.stale_version
        } else {
            &env.current_version
        };
        if let Some(Update::Available(manifest)) = self.update_check(version).await {
            self.enter_stage(Stage::Download);
            self.download_all(&manifest).await;
        }
        // Steps 3 to 7, and the logout of whatever session is still open.
        self.enter_stage(Stage::Login);
        let completed = match self.enter().await {
            Some(session) => {
                self.logout(&session).await;
                self.running()
            }
            None => false,
        };
        self.leave_stage();
        if completed {
            self.reach(Stage::Done);
            self.recorder.stage_time(Stage::Done, began.elapsed());
        }
    }

    /// Logs in and goes through the lobby; returns the session still open at the end.
    async fn enter(&mut self) -> Option<Session> {
        let branches = self.env.branches.clone();
        // Step 3: a wrong password must be refused, and "Your login is failed" ends the
        // session (SPEC §2.3), as does any other failed login.
        if self.chance("wrong_password", branches.wrong_password) {
            self.login_with_wrong_password().await;
            return None;
        }
        let mut session = self.login().await?;
        self.enter_stage(Stage::Lobby);
        // Step 4: the player's own data, and maybe a page of the ranking.
        for _ in 0..branches.me_requests {
            // A request refused for the deadline returns at once, without yielding.
            if !self.running() {
                break;
            }
            self.me(&session).await;
        }
        if self.chance("ranking", branches.ranking) {
            self.ranking(&session).await;
        }
        // Step 5: the network is wired, so a new source IP means "login again".
        if self.chance("ip_change", branches.ip_change) {
            session = self.change_ip(&session).await?;
        }
        // Step 6: a token unused for the idle timeout must be refreshed.
        if self.chance("idle", branches.idle) {
            session = self.idle_past_timeout(session).await?;
        }
        // Step 7: start a match and play it, maybe watching it too.
        if self.chance("start", branches.start) {
            self.play_match(&session).await;
        }
        Some(session)
    }

    /// Sends `request`, retrying `busy` and `rate_limited` answers, each recorded as a
    /// failure of `step`. Returns the last answer for the caller to judge and record, or
    /// `None` once the run is over (nothing recorded).
    async fn call(&mut self, step: Step, via: Via, request: &Request<'_>) -> Option<Reply> {
        let mut backoff_ms = BUSY_BACKOFF_START_MS;
        let mut attempts = 0;
        loop {
            attempts += 1;
            if !self.running() {
                return None;
            }
            let started = self.send_time();
            let result = match via {
                Via::Profile => {
                    let local_ip = self.http.local_ip();
                    let tls = &self.env.tls;
                    tls.send_once(local_ip, self.env.profile, request).await
                }
                Via::Lobby(addr) => self.http.send(addr, request).await,
            };
            let done = Instant::now();
            match successful(result) {
                Err(failure) if failure.is_retryable() && attempts < BUSY_ATTEMPTS_MAX => {
                    self.recorder.failure(step, &failure.code);
                    if !self.back_off(backoff_ms, failure.retry_after_s).await {
                        return None;
                    }
                    backoff_ms = (backoff_ms * 2).min(BUSY_BACKOFF_CAP_MS);
                }
                result => {
                    return Some(Reply {
                        started,
                        done,
                        result,
                    })
                }
            }
        }
    }

    /// Records a reply that should be a success whose body `parse` accepts.
    fn expect_ok<T>(
        &self,
        step: Step,
        reply: Reply,
        parse: impl FnOnce(&Response) -> Result<T, Failure>,
    ) -> Option<T> {
        match reply.result.and_then(|response| parse(&response)) {
            Ok(value) => {
                self.recorder.success(step, reply.started, reply.done);
                Some(value)
            }
            Err(failure) => {
                self.recorder.failure(step, &failure.code);
                None
            }
        }
    }

    /// Records a reply that should be the refusal `expected`. A success instead is the
    /// error `<expected>_missing`; another refusal is an error with its own code.
    fn expect_refusal(&self, step: Step, reply: Reply, expected: &str) -> Refusal {
        match reply.result {
            Ok(response) => {
                self.recorder.failure(step, &format!("{expected}_missing"));
                Refusal::Served(response)
            }
            Err(failure) if failure.code == expected => {
                self.recorder
                    .expected(step, expected, reply.started, reply.done);
                Refusal::Expected
            }
            Err(failure) => {
                self.recorder.failure(step, &failure.code);
                if failure.status.is_some() {
                    Refusal::OtherCode
                } else {
                    Refusal::NoAnswer
                }
            }
        }
    }

    /// Pauses before a retry: `backoff_ms`, capped by the answer's Retry-After, with equal
    /// jitter (at least half the pause, so retries stay spaced, but clients refused
    /// together do not retry together). False if the deadline cut it short.
    async fn back_off(&mut self, backoff_ms: u64, retry_after_s: Option<u64>) -> bool {
        let retry_after_ms = retry_after_s.map_or(u64::MAX, |s| s.saturating_mul(1000));
        let pause = backoff_ms.min(retry_after_ms);
        let pause = self.rng.random_range(pause / 2..=pause);
        self.pause_ms(pause).await
    }

    /// Draws the branch `name` (as in `[script]`), taken with `probability`.
    fn chance(&mut self, name: &str, probability: f64) -> bool {
        let taken = self.rng.random_bool(probability);
        tracing::debug!(target: TRACE, client = self.id, branch = name, taken);
        taken
    }

    /// A pause of `ms` jittered by ±50 %.
    fn jitter(&mut self, ms: u64) -> u64 {
        self.rng.random_range(ms / 2..=ms + ms / 2)
    }

    /// Whether the run's deadline is still ahead.
    fn running(&self) -> bool {
        Instant::now() < self.env.deadline
    }

    /// Whether a closed-model session begun now could still play its match. A client
    /// that cannot fit one stops rather than loop sessions without matches: those come
    /// back to back, so every run would end in a login storm several times its steady
    /// rate, and the login tail would measure the storm instead of the scenario.
    fn session_fits(&self) -> bool {
        self.env.branches.start == 0.0
            || Instant::now() + self.env.play.normal_length() <= self.env.deadline
    }

    /// When the request about to leave was meant to: an open-model session's arrival,
    /// else now. Lateness within a timer tick or two is the timer's resolution, not a
    /// stall: tokio wakes a sleep up to a millisecond or so after its deadline, every
    /// time, which would add a constant to every session's first request.
    fn send_time(&mut self) -> Instant {
        let now = Instant::now();
        match self.due.take() {
            Some(due)
                if now.saturating_duration_since(due) > Duration::from_millis(TIMER_TICK_MS) =>
            {
                self.recorder.sent_late(now);
                due
            }
            _ => now,
        }
    }

    /// Sleeps `ms`, but not past the deadline; false if the deadline cut it short. A
    /// pause is the client's own (think time, back-off): what follows it is timed from
    /// when it is sent, as a closed loop is by definition.
    async fn pause_ms(&mut self, ms: u64) -> bool {
        tracing::debug!(target: TRACE, client = self.id, pause_ms = ms);
        if ms >= AWAY_MS_MIN {
            self.http.close_idle();
        }
        let wake = Instant::now() + Duration::from_millis(ms);
        if wake >= self.env.deadline {
            tokio::time::sleep_until(self.env.deadline.into()).await;
            return false;
        }
        tokio::time::sleep_until(wake.into()).await;
        true
    }

    /// Moves the session into `stage` of the funnel, closing the one it was in.
    fn enter_stage(&mut self, stage: Stage) {
        tracing::debug!(target: TRACE, client = self.id, stage = stage.name());
        self.leave_stage();
        self.reach(stage);
        self.stage = Some((stage, Instant::now()));
    }

    /// Closes the current stage, recording the time spent in it.
    fn leave_stage(&mut self) {
        if let Some((stage, since)) = self.stage.take() {
            self.recorder.stage_time(stage, since.elapsed());
        }
    }

    /// Counts the session into `stage`, and the client if this is its first time there.
    fn reach(&mut self, stage: Stage) {
        let first = self.reached & stage.bit() == 0;
        self.reached |= stage.bit();
        self.recorder.stage_entered(stage, first);
    }
}
