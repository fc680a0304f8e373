//! Step 7 of a session: start a match at the lobby, join it at the play server, play it
//! to its `end`, and enter its results in the run's ledger. On the observe branch a
//! [`Watcher`] follows the same match through a match observer meanwhile.
//!
//! From the first `state` until its cat dies, a player sends inputs at `script.input_hz`
//! (a seeded random walk, now and then firing) and times each input to the first
//! `state` that acknowledges it (`play.input_ack`), each `state` to the one before
//! (`play.tick_interval`; late ones count as `tick_late`, skipped ticks as `tick_gap`
//! and violate `play.ticks_in_order`), and the whole match (`play.match`).

use super::lobby::Seat;
use super::observe::{Judged, WatchRequest, Watcher};
use super::ticks::{PendingInputs, RandomWalk, TickClock, TickOrder};
use super::{account::Session, VirtualClient};
use crate::net::http::REQUEST_TIMEOUT_MS;
use crate::net::lines::{End, LineConn, LineError, ServerLine, State};
use crate::scenario::{Script, Server};
use crate::step::{Invariant, Stage, Step};
use rand::Rng;
use std::net::IpAddr;
use std::time::{Duration, Instant};
use tokio::time::MissedTickBehavior;

/// Starts and joins tried in a row when the match started or filled before the join
/// arrived; more misses than this mean the client is too slow to play at all.
const JOIN_ATTEMPTS_MAX: u32 = 3;
/// A running match sends a `state` every tick, but after its last tick the results
/// writer commits and tells the lobby before `end`, retrying both for about ten seconds
/// at worst. A play server silent for longer than that is dead or stuck.
const PLAY_SILENCE_MS: u64 = 15_000;
/// After the last tick a player waits for the commit and `end`, well under a second on
/// a loopback even when loaded; a match is only started with this much room to spare.
const MATCH_END_SLACK_MS: u64 = 2_000;
/// The play server's answers to a join that came too late for its match.
const MATCH_STARTED: &str = "match_started";
const MATCH_FULL: &str = "match_full";
/// An `end` for another match, or without the player in its results.
const END_WITHOUT_PLAYER: &str = "end_without_player";
/// Inputs never acknowledged, given up to keep the pending ones bounded.
const ACK_MISSING: &str = "ack_missing";
/// An `ack` of an input never sent.
const ACK_AHEAD: &str = "ack_ahead";
/// A `state` more than 1.5 tick periods after the one before.
const TICK_LATE: &str = "tick_late";
/// A `state` that skipped ticks.
const TICK_GAP: &str = "tick_gap";
/// A `state` whose tick was already seen.
const TICK_ORDER: &str = "tick_order";

/// How the run's matches go: the play servers' clock (`[server]`) and the players'
/// pace (`script.input_hz`).
#[derive(Clone, Copy, Debug)]
pub struct PlayPlan {
    /// The time between two ticks.
    pub tick_period: Duration,
    /// The time between two inputs of a player.
    pub input_period: Option<Duration>,
    /// The longest a joined player waits for its match to start.
    pub fill_timeout: Duration,
    /// How long a running match lasts at most.
    pub match_duration: Duration,
}

impl PlayPlan {
    /// The plan of a scenario.
    pub fn new(server: &Server, script: &Script) -> PlayPlan {
        PlayPlan {
            tick_period: server.tick_period(),
            // No inputs at all: a player who leaves the controls alone.
            input_period: (script.input_hz > 0)
                .then(|| Duration::from_secs_f64(1.0 / f64::from(script.input_hz))),
            fill_timeout: server.fill_timeout(),
            match_duration: server.match_duration(),
        }
    }

    /// The time from `start` to `end` of a match that fills slowly and runs its full
    /// length. A client starts no match with less time than this left in the run: a
    /// match cut off by the deadline would leave its results unseen.
    pub fn normal_length(&self) -> Duration {
        self.fill_timeout + self.match_duration + Duration::from_millis(MATCH_END_SLACK_MS)
    }

    /// How long a stream may stay silent before its first `state`: the fill timeout on
    /// top of the usual silence.
    fn silence_before_start(&self) -> Duration {
        self.fill_timeout + Duration::from_millis(PLAY_SILENCE_MS)
    }
}

/// How a join went.
enum Join {
    /// In the match as this player index.
    Joined { conn: LineConn, player: u64 },
    /// The match started or filled first: worth another seat from the lobby.
    Missed,
    /// Anything else, recorded.
    Failed,
}

impl VirtualClient {
    /// Starts a match and plays it; a join that came too late asks the lobby again.
    pub(super) async fn play_match(&mut self, session: &Session) {
        for _ in 0..JOIN_ATTEMPTS_MAX {
            if Instant::now() + self.env.play.normal_length() > self.env.deadline {
                return;
            }
            let Some(seat) = self.start(session).await else {
                return;
            };
            match self.join(&seat).await {
                Join::Joined { conn, player } => {
                    // The lobby conversation is over: during the match the client holds
                    // only its play connection, so a play server's players need no
                    // lobby or storage sockets.
                    self.http.close_idle();
                    self.enter_stage(Stage::Play);
                    return self.play(session, &seat, conn, player).await;
                }
                Join::Missed => {}
                Join::Failed => return,
            }
        }
    }

    /// Connects to the seat's play server and joins its match (`play.join`).
    async fn join(&mut self, seat: &Seat) -> Join {
        // From the moment the join leaves, the server may count a result for this user.
        self.env.ledger.seat(seat.match_id, &self.user);
        let started = self.send_time();
        let timeout = Duration::from_millis(REQUEST_TIMEOUT_MS);
        let joining = connect_and_join(self.http.local_ip(), seat);
        let answer = tokio::time::timeout(timeout, joining).await;
        let done = Instant::now();
        let code = match answer.unwrap_or(Err(LineError::Timeout)) {
            Ok((conn, ServerLine::Joined { match_id, player })) if match_id == seat.match_id => {
                self.recorder.success(Step::PlayJoin, started, done);
                return Join::Joined { conn, player };
            }
            Ok((_, ServerLine::Error { error })) => {
                // A refused join takes no seat.
                self.env.ledger.unseat(seat.match_id, &self.user);
                if error == MATCH_STARTED || error == MATCH_FULL {
                    self.recorder
                        .expected(Step::PlayJoin, &error, started, done);
                    return Join::Missed;
                }
                error
            }
            Ok(_) => "bad_response".to_string(),
            Err(e) => {
                if matches!(e, LineError::Connect(_)) {
                    self.env.ledger.unseat(seat.match_id, &self.user);
                }
                e.code().to_string()
            }
        };
        self.recorder.failure(Step::PlayJoin, &code);
        Join::Failed
    }

    /// Plays a joined match to its `end` (`play.match`), watching it on the observe
    /// branch, and records the `end` in the ledger.
    async fn play(&mut self, session: &Session, seat: &Seat, mut conn: LineConn, player: u64) {
        let joined = Instant::now();
        let observe = self.chance("observe", self.env.branches.observe);
        if observe {
            self.reach(Stage::Observe);
        }
        let watcher = observe.then(|| {
            Watcher::spawn(WatchRequest {
                router: self.env.router,
                local_ip: self.http.local_ip(),
                token: session.token.clone(),
                match_id: seat.match_id,
                silence: self.env.play.silence_before_start(),
                recorder: self.recorder.clone(),
            })
        });
        let end = match self.play_to_end(&mut conn, player).await {
            Ok(end) => end,
            Err(code) => {
                // Dropping the watcher stops it: without the player's end, nothing to judge.
                self.recorder.failure(Step::PlayMatch, &code);
                return;
            }
        };
        self.env.ledger.ended(&end);
        let mine = end.match_id == seat.match_id && end.results.iter().any(|r| r.id == self.user);
        if mine {
            self.recorder
                .success(Step::PlayMatch, joined, Instant::now());
        } else {
            self.recorder.failure(Step::PlayMatch, END_WITHOUT_PLAYER);
        }
        let watched = match watcher {
            Some(watcher) => {
                let watched = watcher.finish().await;
                // Watching lasts from the join to the observer's end, beside the match.
                self.recorder.stage_time(Stage::Observe, joined.elapsed());
                watched
            }
            None => None,
        };
        if let Some(watched) = watched {
            match watched.judge(&end, self.env.observers_killed) {
                Judged::Held => {
                    let (began, over) = (watched.began_at, watched.over_at);
                    self.recorder.success(Step::ObserverWatch, began, over);
                    self.recorder
                        .invariant(Invariant::ObserversEveryTick, false);
                }
                Judged::Lost(code) => self.recorder.failure(Step::ObserverWatch, &code),
                Judged::Violated(code) => {
                    match code {
                        Some(code) => self.recorder.failure(Step::ObserverWatch, &code),
                        None => {
                            let (began, over) = (watched.began_at, watched.over_at);
                            self.recorder.success(Step::ObserverWatch, began, over);
                        }
                    }
                    self.recorder.invariant(Invariant::ObserversEveryTick, true);
                }
            }
        }
    }

    /// Steers the cat and reads the match until `end`; the error is the code of what
    /// came instead.
    async fn play_to_end(&mut self, conn: &mut LineConn, player: u64) -> Result<End, String> {
        let plan = self.env.play;
        let mut clock = TickClock::new(plan.tick_period);
        let mut pending = PendingInputs::default();
        let mut walk = RandomWalk::new(&mut self.rng);
        // An idle player's interval never fires: it never steers.
        let period = plan.input_period.unwrap_or(Duration::MAX / 4);
        let mut inputs = tokio::time::interval(period);
        inputs.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut seq = 0;
        // Inputs flow from the first tick until the cat dies: before, they would wait
        // for the match to start; after, the server applies none.
        let mut steering = false;
        // Silence counts from the last line received, whatever was sent meanwhile.
        let mut silent_at = Instant::now() + plan.silence_before_start();
        loop {
            tokio::select! {
                _ = inputs.tick(), if steering => {
                    seq += 1;
                    let given_up = pending.sent(seq, Instant::now());
                    for _ in 0..given_up {
                        self.recorder.failure(Step::PlayInputAck, ACK_MISSING);
                    }
                    let input = walk.next(&mut self.rng);
                    conn.send(&input.line(seq)).await.map_err(|e| e.code().to_string())?;
                }
                line = tokio::time::timeout_at(silent_at.into(), conn.next()) => {
                    let at = Instant::now();
                    let line = line.unwrap_or(Err(LineError::Timeout));
                    match line.map_err(|e| e.code().to_string())? {
                        ServerLine::State(state) => {
                            self.on_state(&state, at, &mut clock, &mut pending);
                            let alive = state.players.iter().any(|c| c.p == player && c.hp > 0);
                            if alive && !steering {
                                // A random phase against the ticks: inputs sent right
                                // after each state would all wait a whole period.
                                let phase = period.mul_f64(self.rng.random());
                                inputs.reset_at((Instant::now() + phase).into());
                            }
                            if !alive {
                                pending.clear();
                            }
                            steering = alive && plan.input_period.is_some();
                            silent_at = at + Duration::from_millis(PLAY_SILENCE_MS);
                        }
                        ServerLine::End(end) => return Ok(end),
                        ServerLine::Error { error } => return Err(error),
                        ServerLine::Joined { .. } => return Err("bad_response".to_string()),
                    }
                }
            }
        }
    }

    /// Records one `state` that arrived `at`: its tick's order and interval, and the
    /// inputs it acknowledges.
    fn on_state(
        &self,
        state: &State,
        at: Instant,
        clock: &mut TickClock,
        pending: &mut PendingInputs,
    ) {
        let arrival = clock.arrive(state.tick, at);
        let recorder = &self.recorder;
        recorder.invariant(Invariant::PlayTicksInOrder, !arrival.order.in_order());
        match (arrival.order, arrival.previous_at) {
            (TickOrder::Gap, _) => recorder.failure(Step::PlayTickInterval, TICK_GAP),
            (TickOrder::Backwards, _) => recorder.failure(Step::PlayTickInterval, TICK_ORDER),
            (_, Some(before)) if arrival.late => {
                recorder.late(Step::PlayTickInterval, TICK_LATE, before, at);
            }
            (_, Some(before)) => recorder.success(Step::PlayTickInterval, before, at),
            (_, None) => {}
        }
        if pending.ahead(state.ack) {
            recorder.failure(Step::PlayInputAck, ACK_AHEAD);
        }
        for sent in pending.acked(state.ack) {
            recorder.success(Step::PlayInputAck, sent, at);
        }
    }
}

/// Connects from `local_ip`, sends `join` with the seat's ticket, and reads the answer.
async fn connect_and_join(
    local_ip: Option<IpAddr>,
    seat: &Seat,
) -> Result<(LineConn, ServerLine), LineError> {
    let mut conn = LineConn::connect(local_ip, seat.play).await?;
    conn.send(&serde_json::json!({"t": "join", "ticket": seat.ticket}))
        .await?;
    let answer = conn.next().await?;
    Ok((conn, answer))
}
