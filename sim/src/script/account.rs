//! Profile, over TLS: login (with a wrong password on that branch), refresh, logout.
//! Every token profile issues goes into the run's token set (`tokens.unique`).

use super::answer::{Failure, Refusal};
use super::identity::{password, wrong_password};
use super::{Via, VirtualClient};
use crate::net::http::{Request, Response};
use crate::step::{Invariant, Step};
use crate::tokens::TokenPrefix;
use serde::Deserialize;
use std::net::SocketAddr;

const LOGIN: &str = "/v1/login";
const REFRESH: &str = "/v1/refresh";
const LOGOUT: &str = "/v1/logout";
/// Profile's answer to a wrong id or password.
const LOGIN_FAILED: &str = "login_failed";

/// A logged-in session: the token and where to use it.
#[derive(Debug, PartialEq)]
pub(super) struct Session {
    /// The bearer token.
    pub(super) token: String,
    /// Its first 128 bits, for the token set.
    pub(super) prefix: TokenPrefix,
    /// The lobby the login named.
    pub(super) lobby: SocketAddr,
    /// Seconds the token may go unused, as profile says.
    pub(super) idle_timeout_s: u64,
}

impl VirtualClient {
    /// Logs in with a wrong password, which must be refused with `login_failed`; a token
    /// instead violates `login.wrong_password_token` (and is still an issued token).
    pub(super) async fn login_with_wrong_password(&mut self) {
        let body = login_body(&self.user, &wrong_password(&self.user));
        let request = Request::post(LOGIN).json(&body);
        let Some(reply) = self.call(Step::Login, Via::Profile, &request).await else {
            return;
        };
        let refusal = self.expect_refusal(Step::Login, reply, LOGIN_FAILED);
        if refusal.answered() {
            self.recorder
                .invariant(Invariant::LoginWrongPasswordToken, refusal.served());
        }
        if let Refusal::Served(response) = refusal {
            if let Ok(session) = parse_grant(&response) {
                self.recorder.token_issued(session.prefix);
            }
        }
    }

    /// Logs in with the right password from the client's current address.
    pub(super) async fn login(&mut self) -> Option<Session> {
        let body = login_body(&self.user, &password(&self.user));
        let request = Request::post(LOGIN).json(&body);
        let reply = self.call(Step::Login, Via::Profile, &request).await?;
        let session = self.expect_ok(Step::Login, reply, parse_grant)?;
        self.recorder.token_issued(session.prefix);
        Some(session)
    }

    /// Trades the session's token for a new one; the old one must die at once.
    pub(super) async fn refresh(&mut self, session: &Session) -> Option<Session> {
        let request = Request::post(REFRESH).bearer(&session.token);
        let reply = self.call(Step::Refresh, Via::Profile, &request).await?;
        let fresh = self.expect_ok(Step::Refresh, reply, parse_grant)?;
        self.recorder.token_issued(fresh.prefix);
        Some(fresh)
    }

    /// Ends the session at profile.
    pub(super) async fn logout(&mut self, session: &Session) {
        let request = Request::post(LOGOUT).bearer(&session.token);
        if let Some(reply) = self.call(Step::Logout, Via::Profile, &request).await {
            self.expect_ok(Step::Logout, reply, |_| Ok(()));
        }
    }
}

/// The JSON body of a login.
fn login_body(id: &str, password: &str) -> Vec<u8> {
    serde_json::json!({ "id": id, "password": password })
        .to_string()
        .into_bytes()
}

/// Profile's answer to a login or refresh.
#[derive(Deserialize)]
struct Grant {
    token: String,
    lobby: String,
    idle_timeout_s: u64,
}

fn parse_grant(response: &Response) -> Result<Session, Failure> {
    let grant: Grant = serde_json::from_slice(&response.body)
        .map_err(|e| Failure::bad_response(format!("login answer: {e}")))?;
    let prefix = TokenPrefix::of(&grant.token).ok_or_else(|| {
        Failure::bad_response(format!("token {:?} is not 64 hex digits", grant.token))
    })?;
    let lobby = grant
        .lobby
        .parse()
        .map_err(|e| Failure::bad_response(format!("lobby {:?}: {e}", grant.lobby)))?;
    Ok(Session {
        token: grant.token,
        prefix,
        lobby,
        idle_timeout_s: grant.idle_timeout_s,
    })
}

#[cfg(test)]
mod tests {
    use super::super::answer::tests::response;
    use super::*;

    const TOKEN: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn grants_parse_and_bad_ones_are_bad_responses() {
        let body = format!(
            r#"{{"token": "{TOKEN}", "lobby": "127.0.0.1:7300", "idle_timeout_s": 600, "x": 1}}"#
        );
        let session = parse_grant(&response(200, &body)).unwrap();
        assert_eq!(session.lobby.port(), 7300);
        assert_eq!(session.idle_timeout_s, 600);
        assert_eq!(Some(session.prefix), TokenPrefix::of(TOKEN));
        for bad in [
            r#"{"token": "abc", "lobby": "127.0.0.1:7300", "idle_timeout_s": 600}"#.to_string(),
            format!(r#"{{"token": "{TOKEN}", "lobby": "lobby", "idle_timeout_s": 600}}"#),
            format!(r#"{{"token": "{TOKEN}", "lobby": "127.0.0.1:7300"}}"#),
        ] {
            let failure = parse_grant(&response(200, &bad)).unwrap_err();
            assert_eq!(failure.code, "bad_response", "{bad}");
        }
    }

    #[test]
    fn login_body_escapes_like_json() {
        let body = login_body("user\"1", "pw-user\"1");
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["id"], "user\"1");
        assert_eq!(value["password"], "pw-user\"1");
    }
}
