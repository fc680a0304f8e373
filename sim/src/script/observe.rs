//! Watching a match through a match observer (SPEC §2 step 6), beside playing it.
//!
//! Right after joining, a player on the observe branch spawns a [`Watcher`]: a sub-task
//! that asks the router for an observer (`router.observer`), connects to it, sends
//! `watch` and times the first `state` (`observer.first_state`), then follows the stream
//! to its `end`, keeping only the last tick seen. When the player has its own `end`, it
//! takes the watcher's and judges `observers.every_tick`: every tick from the observer's
//! first, in order, and the very `end` the player got. The watch itself, from the first
//! `state` to the `end`, is the step `observer.watch`; a stream cut before its `end` is
//! its error `observer_lost`, and breaks the invariant too unless the scenario kills
//! observers.

use super::answer::{successful, Failure};
use super::ticks::TickSequence;
use crate::metrics::Recorder;
use crate::net::http::{HttpClient, Request, Response};
use crate::net::lines::{End, LineConn, LineError, ServerLine};
use crate::step::Step;
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// What a watcher needs.
#[derive(Debug)]
pub(super) struct WatchRequest {
    /// The router.
    pub(super) router: SocketAddr,
    /// The player's address: the router refuses a token used from another.
    pub(super) local_ip: Option<IpAddr>,
    /// The player's session token.
    pub(super) token: String,
    /// The match to watch.
    pub(super) match_id: u64,
    /// How long the stream may stay silent before it counts as broken.
    pub(super) silence: Duration,
    /// Where the steps are recorded.
    pub(super) recorder: Recorder,
}

/// The error of `observer.watch` for a stream whose connection closed or broke before
/// its `end`: the observer died.
pub(super) const OBSERVER_LOST: &str = "observer_lost";

/// An observer's stream, once it began.
#[derive(Debug, PartialEq)]
pub(super) struct Watched {
    /// Whether every tick came, in order, from the first one relayed.
    pub(super) in_order: bool,
    /// The `end` relayed, or the code of what came instead.
    pub(super) end: Result<End, String>,
    /// When the first `state` arrived.
    pub(super) began_at: Instant,
    /// When the stream ended, with its `end` or without.
    pub(super) over_at: Instant,
}

/// How a watch went, judged against the player's own `end`.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Judged {
    /// Every tick in order, then the player's `end`.
    Held,
    /// `observers.every_tick` is broken; the code is the watch's error, if it had one.
    Violated(Option<String>),
    /// The observer died mid-stream in a scenario that kills observers: the watch failed
    /// with this code, and the ticks it relayed were in order.
    Lost(String),
}

impl Watched {
    /// Judges the stream against the player's own `end`; `observers_killed` says
    /// whether the scenario kills observers, which makes a stream cut short expected.
    pub(super) fn judge(&self, players_end: &End, observers_killed: bool) -> Judged {
        let code = match &self.end {
            Ok(end) if self.in_order && end == players_end => return Judged::Held,
            Ok(_) => return Judged::Violated(None),
            // The connection closed or broke: the observer process is gone.
            Err(code) if code == "closed" || code == "io" => OBSERVER_LOST.to_string(),
            Err(code) => code.clone(),
        };
        if observers_killed && self.in_order && code == OBSERVER_LOST {
            Judged::Lost(code)
        } else {
            Judged::Violated(Some(code))
        }
    }
}

/// A watch running beside the player's loop; dropping it stops the watch.
#[derive(Debug)]
pub(super) struct Watcher(JoinHandle<Option<Watched>>);

impl Watcher {
    /// Starts watching.
    pub(super) fn spawn(request: WatchRequest) -> Watcher {
        Watcher(tokio::spawn(watch(request)))
    }

    /// The stream as watched, once the watch is over; `None` if it never began. Every
    /// wait inside the watch is bounded, so this is too.
    pub(super) async fn finish(mut self) -> Option<Watched> {
        (&mut self.0).await.ok().flatten()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The router's answer.
#[derive(Deserialize)]
struct ObserverAnswer {
    observer: String,
}

fn parse_observer(response: &Response) -> Result<SocketAddr, Failure> {
    let answer: ObserverAnswer = serde_json::from_slice(&response.body)
        .map_err(|e| Failure::bad_response(format!("observer answer: {e}")))?;
    answer
        .observer
        .parse()
        .map_err(|e| Failure::bad_response(format!("observer {:?}: {e}", answer.observer)))
}

async fn watch(request: WatchRequest) -> Option<Watched> {
    let recorder = &request.recorder;
    let observer = ask_router(&request).await?;
    let mut conn = match LineConn::connect(request.local_ip, observer).await {
        Ok(conn) => conn,
        Err(e) => {
            recorder.failure(Step::ObserverFirstState, e.code());
            return None;
        }
    };
    let watch =
        serde_json::json!({"t": "watch", "match": request.match_id, "token": request.token});
    let sent = Instant::now();
    if let Err(e) = conn.send(&watch).await {
        recorder.failure(Step::ObserverFirstState, e.code());
        return None;
    }
    let mut ticks = TickSequence::from_any_tick();
    let mut in_order = true;
    let mut began_at = None;
    let code = loop {
        let line = tokio::time::timeout(request.silence, conn.next()).await;
        match line.unwrap_or(Err(LineError::Timeout)) {
            Ok(ServerLine::State(state)) => {
                if began_at.is_none() {
                    let now = Instant::now();
                    recorder.success(Step::ObserverFirstState, sent, now);
                    began_at = Some(now);
                }
                in_order &= ticks.next(state.tick).in_order();
            }
            Ok(ServerLine::End(end)) => {
                return Some(Watched {
                    in_order,
                    end: Ok(end),
                    // An `end` before any tick: a watch of nothing, over at once.
                    began_at: began_at.unwrap_or_else(Instant::now),
                    over_at: Instant::now(),
                });
            }
            Ok(ServerLine::Error { error }) => break error,
            Ok(ServerLine::Joined { .. }) => break "bad_response".to_string(),
            Err(e) => break e.code().to_string(),
        }
    };
    let Some(began_at) = began_at else {
        // Refused before any tick (access_denied, unknown_match): no stream to judge.
        recorder.failure(Step::ObserverFirstState, &code);
        return None;
    };
    Some(Watched {
        in_order,
        end: Err(code),
        began_at,
        over_at: Instant::now(),
    })
}

/// `GET /v1/observer?match=M`: where the new observer listens, or `None` (recorded).
async fn ask_router(request: &WatchRequest) -> Option<SocketAddr> {
    // A connection of its own, from the player's address: the player's client is busy
    // with its match, and the router checks the token's IP.
    let mut http = HttpClient::new(request.local_ip);
    let target = format!("/v1/observer?match={}", request.match_id);
    let ask = Request::get(&target).bearer(&request.token);
    let started = Instant::now();
    let answer = successful(http.send(request.router, &ask).await);
    let done = Instant::now();
    match answer.and_then(|response| parse_observer(&response)) {
        Ok(observer) => {
            request
                .recorder
                .success(Step::RouterObserver, started, done);
            Some(observer)
        }
        Err(failure) => {
            request
                .recorder
                .failure(Step::RouterObserver, &failure.code);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::answer::tests::response;
    use super::*;
    use crate::net::lines::PlayerResult;

    fn end(winner: u64) -> End {
        End {
            match_id: 9,
            winner,
            results: vec![PlayerResult {
                player: 0,
                id: "user1".into(),
                won: winner == 0,
                wins: 1,
                losses: 0,
                rating: 16,
                xp: 30,
                level: 1,
            }],
        }
    }

    fn watched(in_order: bool, end: Result<End, String>) -> Watched {
        let now = Instant::now();
        Watched {
            in_order,
            end,
            began_at: now,
            over_at: now,
        }
    }

    #[test]
    fn a_watch_holds_with_every_tick_and_the_players_end() {
        for killed in [false, true] {
            let good = watched(true, Ok(end(0)));
            assert_eq!(good.judge(&end(0), killed), Judged::Held);
            assert_eq!(
                good.judge(&end(1), killed),
                Judged::Violated(None),
                "another end than the player's"
            );
            let gappy = watched(false, Ok(end(0)));
            assert_eq!(gappy.judge(&end(0), killed), Judged::Violated(None));
            let broken = watched(true, Err("play_lost".into()));
            assert_eq!(
                broken.judge(&end(0), killed),
                Judged::Violated(Some("play_lost".into()))
            );
        }
    }

    #[test]
    fn a_stream_cut_short_is_expected_only_when_the_scenario_kills_observers() {
        for code in ["closed", "io"] {
            let cut = watched(true, Err(code.into()));
            let lost = Some(OBSERVER_LOST.to_string());
            assert_eq!(cut.judge(&end(0), false), Judged::Violated(lost));
            assert_eq!(cut.judge(&end(0), true), Judged::Lost(OBSERVER_LOST.into()));
            // Ticks out of order before the cut are a violation all the same.
            let gappy = watched(false, Err(code.into()));
            assert!(matches!(gappy.judge(&end(0), true), Judged::Violated(_)));
        }
        // Silence is not a death: the observer is alive and stuck.
        let stuck = watched(true, Err("timeout".into()));
        assert!(matches!(stuck.judge(&end(0), true), Judged::Violated(_)));
    }

    #[test]
    fn the_router_names_an_observer_address() {
        let ok = response(200, r#"{"observer": "127.0.0.1:41000"}"#);
        assert_eq!(parse_observer(&ok).unwrap().port(), 41000);
        let bad = response(200, r#"{"observer": "observer-1"}"#);
        assert_eq!(parse_observer(&bad).unwrap_err().code, "bad_response");
    }
}
