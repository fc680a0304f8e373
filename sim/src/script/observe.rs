//! Watching a match through a match observer (SPEC §2 step 6), beside playing it.
//!
//! Right after joining, a player on the observe branch spawns a [`Watcher`]: a sub-task
//! that asks the router for an observer (`router.observer`), connects to it, sends
//! `watch` and times the first `state` (`observer.first_state`), then follows the stream
//! to its `end`, keeping only the last tick seen. When the player has its own `end`, it
//! takes the watcher's and judges `observers.every_tick`: every tick from the observer's
//! first, in order, and the very `end` the player got.

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

/// An observer's stream, once it began.
#[derive(Debug, PartialEq)]
pub(super) struct Watched {
    /// Whether every tick came, in order, from the first one relayed.
    pub(super) in_order: bool,
    /// The `end` relayed, or the code of what came instead.
    pub(super) end: Result<End, String>,
}

impl Watched {
    /// Whether the stream broke `observers.every_tick`, given the player's own `end`.
    pub(super) fn violates(&self, players_end: &End) -> bool {
        !self.in_order || self.end.as_ref() != Ok(players_end)
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
    let mut began = false;
    let code = loop {
        let line = tokio::time::timeout(request.silence, conn.next()).await;
        match line.unwrap_or(Err(LineError::Timeout)) {
            Ok(ServerLine::State(state)) => {
                if !began {
                    recorder.success(Step::ObserverFirstState, sent, Instant::now());
                    began = true;
                }
                in_order &= ticks.next(state.tick).in_order();
            }
            Ok(ServerLine::End(end)) => {
                return Some(Watched {
                    in_order,
                    end: Ok(end),
                })
            }
            Ok(ServerLine::Error { error }) => break error,
            Ok(ServerLine::Joined { .. }) => break "bad_response".to_string(),
            Err(e) => break e.code().to_string(),
        }
    };
    if !began {
        // Refused before any tick (access_denied, unknown_match): no stream to judge.
        recorder.failure(Step::ObserverFirstState, &code);
        return None;
    }
    Some(Watched {
        in_order,
        end: Err(code),
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

    #[test]
    fn a_watch_holds_with_every_tick_and_the_players_end() {
        let good = Watched {
            in_order: true,
            end: Ok(end(0)),
        };
        assert!(!good.violates(&end(0)));
        assert!(good.violates(&end(1)), "another end than the player's");
        let gappy = Watched {
            in_order: false,
            end: Ok(end(0)),
        };
        assert!(gappy.violates(&end(0)));
        let broken = Watched {
            in_order: true,
            end: Err("play_lost".into()),
        };
        assert!(broken.violates(&end(0)));
    }

    #[test]
    fn the_router_names_an_observer_address() {
        let ok = response(200, r#"{"observer": "127.0.0.1:41000"}"#);
        assert_eq!(parse_observer(&ok).unwrap().port(), 41000);
        let bad = response(200, r#"{"observer": "observer-1"}"#);
        assert_eq!(parse_observer(&bad).unwrap_err().code, "bad_response");
    }
}
