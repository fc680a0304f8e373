//! The lobby: the player's own data, the ranking, `start`, and the two branches that
//! test its token checks: an IP change (`login_again`) and an idle token
//! (`refresh_required`).

use super::account::Session;
use super::answer::Failure;
use super::{Via, VirtualClient};
use crate::net::http::{Request, Response};
use crate::step::{Invariant, Step};
use rand::Rng;
use serde::Deserialize;
use std::net::SocketAddr;

const ME: &str = "/v1/me";
const START: &str = "/v1/start";
/// One page of the ranking, as a client screen would show it (the lobby allows 100).
const RANKING_PAGE: u64 = 20;
/// The lobby's answer to a token used from another IP than its session's.
const LOGIN_AGAIN: &str = "login_again";
/// The lobby's answer to a token unused for the idle timeout.
const REFRESH_REQUIRED: &str = "refresh_required";
/// The lobby's answer to an unknown or revoked token.
const ACCESS_DENIED: &str = "access_denied";
/// The error of a session whose login named another idle timeout than the scenario's
/// `server.token_idle_s`, so that the idle branch cannot be run as written.
const IDLE_TIMEOUT_MISMATCH: &str = "idle_timeout_mismatch";

impl VirtualClient {
    /// `GET /v1/me`: the player's own data, which must be the player's.
    pub(super) async fn me(&mut self, session: &Session) {
        let request = Request::get(ME).bearer(&session.token);
        if let Some(reply) = self
            .call(Step::LobbyMe, Via::Lobby(session.lobby), &request)
            .await
        {
            self.expect_ok(Step::LobbyMe, reply, |r| parse_me(r, &self.user));
        }
    }

    /// `GET /v1/ranking`: a random page within the seeded population.
    pub(super) async fn ranking(&mut self, session: &Session) {
        let pages = self.env.users.div_ceil(RANKING_PAGE);
        let offset = self.rng.random_range(0..pages) * RANKING_PAGE;
        let target = format!("/v1/ranking?offset={offset}&limit={RANKING_PAGE}");
        let request = Request::get(&target).bearer(&session.token);
        let via = Via::Lobby(session.lobby);
        if let Some(reply) = self.call(Step::LobbyRanking, via, &request).await {
            self.expect_ok(Step::LobbyRanking, reply, parse_ranking);
        }
    }

    /// `POST /v1/start`: a seat in a match on a play server. Without one the lobby
    /// answers `no_capacity`, counted by code like any refusal.
    pub(super) async fn start(&mut self, session: &Session) -> Option<Seat> {
        let request = Request::post(START).bearer(&session.token);
        let reply = self
            .call(Step::LobbyStart, Via::Lobby(session.lobby), &request)
            .await?;
        self.expect_ok(Step::LobbyStart, reply, parse_start)
    }

    /// Moves to the client's second address and uses the old token from there, which
    /// must get `login_again` (data served instead violates `lobby.foreign_ip_served`);
    /// then logs in again from the new address, as the lobby asked.
    pub(super) async fn change_ip(&mut self, session: &Session) -> Option<Session> {
        self.http.set_local_ip(self.env.sources.moved(self.id));
        let request = Request::get(ME).bearer(&session.token);
        let reply = self
            .call(Step::LobbyMe, Via::Lobby(session.lobby), &request)
            .await?;
        let refusal = self.expect_refusal(Step::LobbyMe, reply, LOGIN_AGAIN);
        if refusal.answered() {
            self.recorder
                .invariant(Invariant::LobbyForeignIpServed, refusal.served());
        }
        self.login().await
    }

    /// Leaves the token unused for one second past the idle timeout; the lobby must then
    /// answer `refresh_required`. The client refreshes, checks that the old token is
    /// dead (`access_denied`) and asks for its data again with the new one.
    pub(super) async fn idle_past_timeout(&mut self, session: Session) -> Option<Session> {
        if session.idle_timeout_s != self.env.token_idle_s {
            // The target runs another timeout than the scenario says; sleeping the
            // scenario's would prove nothing.
            self.recorder.failure(Step::LobbyMe, IDLE_TIMEOUT_MISMATCH);
            return Some(session);
        }
        if !self.pause_ms((self.env.token_idle_s + 1) * 1000).await {
            return None;
        }
        let lobby = Via::Lobby(session.lobby);
        let stale = Request::get(ME).bearer(&session.token);
        let reply = self.call(Step::LobbyMe, lobby, &stale).await?;
        self.expect_refusal(Step::LobbyMe, reply, REFRESH_REQUIRED);
        let fresh = self.refresh(&session).await?;
        let reply = self.call(Step::LobbyMe, lobby, &stale).await?;
        self.expect_refusal(Step::LobbyMe, reply, ACCESS_DENIED);
        self.me(&fresh).await;
        Some(fresh)
    }
}

/// A JSON object answer.
type Object = serde_json::Map<String, serde_json::Value>;

/// Parses an object answer that must have every key of `keys`; their values are the
/// server's business (a rank may well be null for a player who never played).
fn object_with(response: &Response, what: &str, keys: &[&str]) -> Result<Object, Failure> {
    let object: Object = serde_json::from_slice(&response.body)
        .map_err(|e| Failure::bad_response(format!("{what} answer: {e}")))?;
    has_keys(&object, what, keys)?;
    Ok(object)
}

fn has_keys(object: &Object, what: &str, keys: &[&str]) -> Result<(), Failure> {
    match keys.iter().find(|key| !object.contains_key(**key)) {
        Some(key) => Err(Failure::bad_response(format!(
            "{what} answer without {key:?}"
        ))),
        None => Ok(()),
    }
}

/// Accepts the player's own data; another player's is the error `wrong_user`.
fn parse_me(response: &Response, user: &str) -> Result<(), Failure> {
    let keys = ["id", "level", "xp", "rating", "rank", "wins", "losses"];
    let me = object_with(response, "me", &keys)?;
    if me["id"] != user {
        return Err(Failure {
            code: "wrong_user".to_string(),
            ..Failure::bad_response(format!("asked as {user}, got the data of {}", me["id"]))
        });
    }
    Ok(())
}

/// The lobby's `GET /v1/ranking` answer.
#[derive(Deserialize)]
struct Ranking {
    total: u64,
    entries: Vec<Object>,
}

/// Accepts a page of at most [`RANKING_PAGE`] complete entries, ranked in order.
fn parse_ranking(response: &Response) -> Result<(), Failure> {
    let ranking: Ranking = serde_json::from_slice(&response.body)
        .map_err(|e| Failure::bad_response(format!("ranking answer: {e}")))?;
    if ranking.entries.len() as u64 > RANKING_PAGE {
        return Err(Failure::bad_response(format!(
            "{} ranking entries for a page of {RANKING_PAGE}",
            ranking.entries.len()
        )));
    }
    let mut ranks = Vec::with_capacity(ranking.entries.len());
    for entry in &ranking.entries {
        has_keys(entry, "ranking entry", &["rank", "id", "rating", "level"])?;
        match entry["rank"].as_u64() {
            Some(rank) if (1..=ranking.total).contains(&rank) => ranks.push(rank),
            _ => {
                let why = format!("rank {} outside 1..={}", entry["rank"], ranking.total);
                return Err(Failure::bad_response(why));
            }
        }
    }
    if !ranks.windows(2).all(|pair| pair[0] <= pair[1]) {
        return Err(Failure::bad_response(
            "ranking entries out of order".to_string(),
        ));
    }
    Ok(())
}

/// A seat in a match, as `POST /v1/start` hands it out.
#[derive(Debug, PartialEq, Deserialize)]
pub(super) struct Seat {
    /// The play server running the match.
    #[serde(deserialize_with = "socket_addr")]
    pub(super) play: SocketAddr,
    /// The match.
    #[serde(rename = "match")]
    pub(super) match_id: u64,
    /// The single-use ticket to join it with.
    pub(super) ticket: String,
}

fn socket_addr<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.parse()
        .map_err(|e| serde::de::Error::custom(format!("{text:?}: {e}")))
}

/// Accepts a `POST /v1/start` answer: where to play, the match, and the ticket to join with.
fn parse_start(response: &Response) -> Result<Seat, Failure> {
    serde_json::from_slice(&response.body)
        .map_err(|e| Failure::bad_response(format!("start answer: {e}")))
}

#[cfg(test)]
mod tests {
    use super::super::answer::tests::response;
    use super::*;

    #[test]
    fn me_must_be_complete_and_the_players_own() {
        let me = r#"{"id": "user7", "level": 3, "xp": 120, "rating": 1500, "rank": 12,
                     "wins": 4, "losses": 2}"#;
        assert!(parse_me(&response(200, me), "user7").is_ok());
        let other = parse_me(&response(200, me), "user8").unwrap_err();
        assert_eq!(other.code, "wrong_user");
        let partial = r#"{"id": "user7", "level": 3}"#;
        assert_eq!(
            parse_me(&response(200, partial), "user7").unwrap_err().code,
            "bad_response"
        );
    }

    #[test]
    fn ranking_pages_are_bounded_sorted_and_complete() {
        let page = r#"{"total": 40, "entries": [
            {"rank": 1, "id": "user3", "rating": 1600, "level": 5},
            {"rank": 2, "id": "user9", "rating": 1550, "level": 4}]}"#;
        assert!(parse_ranking(&response(200, page)).is_ok());
        let unsorted = r#"{"total": 40, "entries": [
            {"rank": 2, "id": "user3", "rating": 1600, "level": 5},
            {"rank": 1, "id": "user9", "rating": 1650, "level": 4}]}"#;
        assert!(parse_ranking(&response(200, unsorted)).is_err());
        let entry = r#"{"rank": 1, "id": "u", "rating": 1, "level": 1}"#;
        let entries = vec![entry; RANKING_PAGE as usize + 1].join(",");
        let oversized = format!(r#"{{"total": 100, "entries": [{entries}]}}"#);
        assert!(parse_ranking(&response(200, &oversized)).is_err());
    }

    #[test]
    fn start_names_a_play_server_a_match_and_a_ticket() {
        let start = r#"{"play": "127.0.0.1:7400", "match": 3, "ticket": "t-1"}"#;
        let seat = parse_start(&response(200, start)).unwrap();
        assert_eq!((seat.play.port(), seat.match_id), (7400, 3));
        assert_eq!(seat.ticket, "t-1");
        let no_addr = r#"{"play": "play-0", "match": 3, "ticket": "t-1"}"#;
        assert!(parse_start(&response(200, no_addr)).is_err());
        let no_ticket = r#"{"play": "127.0.0.1:7400", "match": 3}"#;
        assert!(parse_start(&response(200, no_ticket)).is_err());
    }
}
