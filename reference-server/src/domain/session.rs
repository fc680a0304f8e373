//! The session rule (SPEC §3 lobby), in one place for every service a token is presented
//! to: lobby, router, match observers, and profile's refresh and logout.
//!
//! For a token presented from an address, in this order:
//! 1. unknown, revoked or missing → `access_denied`;
//! 2. another IP than the session's → `login_again`, and the session is revoked; the
//!    revocation is committed to the DB before the answer is sent, so no kill undoes it;
//! 3. unused for the idle timeout or longer → `refresh_required` (not at profile, whose
//!    refresh exists for exactly such tokens);
//! 4. else the session, and the use counts: the idle clock starts again.
//!
//! [`judge`] is the rule itself, on whatever copy of a session the caller holds (the
//! lobby's cache); [`SessionRule::check`] applies it to the DB, with the revocation and
//! the use written back, for services that keep no cache.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::domain::db::{self, DbError, DbPool, SessionRow};
use crate::domain::internal_key::{InternalKey, INTERNAL_KEY_HEADER};
use crate::domain::token::{token_hash, well_formed};
use crate::runtime::client;
use crate::runtime::http::Response;

/// How long a revoking service waits for the lobby to drop the token from its cache. The
/// DB already holds the revocation, so a missed notice costs nothing after a restart.
const REVOKE_NOTICE_TIMEOUT_MS: u64 = 1000;

/// Why a presented token is refused: the error code every service answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Unknown, revoked or missing.
    AccessDenied,
    /// Presented from another IP than its session's; the session is now revoked.
    LoginAgain,
    /// Unused for the idle timeout or longer; profile's refresh gives a new token.
    RefreshRequired,
}

impl Refusal {
    /// The wire code.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::AccessDenied => "access_denied",
            Refusal::LoginAgain => "login_again",
            Refusal::RefreshRequired => "refresh_required",
        }
    }

    /// The human text that goes with the code, the same at every service.
    pub fn detail(self) -> &'static str {
        match self {
            Refusal::AccessDenied => "unknown, revoked or missing token",
            Refusal::LoginAgain => "this token was issued to another IP; log in again",
            Refusal::RefreshRequired => "token unused for too long; refresh it at profile",
        }
    }

    /// The HTTP answer: 401 with the code and detail.
    pub fn response(self) -> Response {
        Response::error(401, self.code(), self.detail())
    }
}

/// What the rule needs to know of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionFacts {
    /// The address the session was opened from (`None` if the stored text is not one).
    pub ip: Option<IpAddr>,
    /// The last use, in ms since the Unix epoch.
    pub last_used_ms: i64,
    /// Revoked by a logout, a refresh or an IP change.
    pub revoked: bool,
}

impl From<&SessionRow> for SessionFacts {
    fn from(row: &SessionRow) -> SessionFacts {
        SessionFacts {
            ip: row.ip.parse().ok(),
            last_used_ms: row.last_used_ms,
            revoked: row.revoked,
        }
    }
}

/// Whether the idle timeout applies where the token is presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idle {
    /// Lobby, router, observers: an idle token is refused.
    Applies,
    /// Profile's refresh and logout: an idle token is what a refresh is for.
    Ignored,
}

/// The rule's answer for one presented token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Serve the request; the use counts.
    Allow,
    /// Refuse with this code; nothing to write.
    Refuse(Refusal),
    /// Revoke the session, commit that, then refuse with `login_again`.
    RevokeThenRefuse,
}

/// The session rule on one session (or none) presented from `ip` at `now_ms`.
pub fn judge(
    session: Option<SessionFacts>,
    ip: IpAddr,
    now_ms: i64,
    idle_ms: i64,
    idle: Idle,
) -> Verdict {
    let Some(s) = session.filter(|s| !s.revoked) else {
        return Verdict::Refuse(Refusal::AccessDenied);
    };
    if s.ip != Some(ip) {
        return Verdict::RevokeThenRefuse;
    }
    if idle == Idle::Applies && now_ms - s.last_used_ms >= idle_ms {
        return Verdict::Refuse(Refusal::RefreshRequired);
    }
    Verdict::Allow
}

/// Why [`SessionRule::check`] did not return a session.
#[derive(Debug, thiserror::Error)]
pub enum Denied {
    /// The rule refused the token.
    #[error("{}: {}", .0.code(), .0.detail())]
    Refused(Refusal),
    /// The DB could not be read or written; the caller answers 503 and the client retries.
    #[error("user DB: {0}")]
    Db(#[from] DbError),
}

/// The session rule against the DB, for services without a session cache of their own.
#[derive(Debug, Clone)]
pub struct SessionRule {
    /// `--token-idle-s`, in ms.
    pub idle_ms: i64,
    /// The lobby to tell about a revocation, so its cache drops the token at once.
    pub lobby: Option<SocketAddr>,
    /// Authenticates that notice.
    pub key: InternalKey,
}

impl SessionRule {
    /// Applies the rule to `token` presented from `ip` at `presented_ms` (when the
    /// request arrived, not when a queued job got to it: a wait in a service's own queue
    /// must not make a token idle): commits the revocation before returning
    /// `login_again`, and records the use before returning the session.
    pub fn check(
        &self,
        db: &DbPool,
        token: &str,
        ip: IpAddr,
        idle: Idle,
        presented_ms: i64,
    ) -> Result<SessionRow, Denied> {
        if !well_formed(token) {
            return Err(Denied::Refused(Refusal::AccessDenied));
        }
        let hash = token_hash(token);
        let row = db.with(|c| db::session(c, &hash))?;
        let now = presented_ms;
        match judge(
            row.as_ref().map(SessionFacts::from),
            ip,
            now,
            self.idle_ms,
            idle,
        ) {
            Verdict::Allow => {
                let row = row.expect("an allowed session exists");
                db.with(|c| db::touch_sessions(c, &[(hash, now)]))?;
                Ok(row)
            }
            Verdict::Refuse(refusal) => Err(Denied::Refused(refusal)),
            Verdict::RevokeThenRefuse => {
                self.revoke(db, &hash)?;
                Err(Denied::Refused(Refusal::LoginAgain))
            }
        }
    }

    /// Revokes a session in the DB (committed when this returns), then tells the lobby to
    /// drop its cached copy.
    pub fn revoke(&self, db: &DbPool, hash: &str) -> Result<(), DbError> {
        db.with(|c| db::revoke(c, hash))?;
        if let Some(lobby) = self.lobby {
            notify_lobby(lobby, &self.key, hash);
        }
        Ok(())
    }
}

/// Tells the lobby that a session was revoked elsewhere. A lobby that misses the notice
/// still refuses the token after a restart, as the DB is the truth.
fn notify_lobby(lobby: SocketAddr, key: &InternalKey, hash: &str) {
    let body = serde_json::json!({ "token_hash": hash }).to_string();
    let headers = [(INTERNAL_KEY_HEADER, key.as_str())];
    let timeout = Duration::from_millis(REVOKE_NOTICE_TIMEOUT_MS);
    match client::request(
        lobby,
        "POST",
        "/internal/v1/revoke",
        &headers,
        body.as_bytes(),
        timeout,
    ) {
        Ok(r) if r.status == 204 => {}
        Ok(r) => tracing::warn!(status = r.status, "lobby refused a revocation notice"),
        Err(e) => tracing::warn!(%e, "lobby missed a revocation notice"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE_MS: i64 = 1000;

    fn facts(ip: &str, last_used_ms: i64, revoked: bool) -> Option<SessionFacts> {
        Some(SessionFacts {
            ip: ip.parse().ok(),
            last_used_ms,
            revoked,
        })
    }

    fn at(session: Option<SessionFacts>, ip: &str, now_ms: i64, idle: Idle) -> Verdict {
        judge(session, ip.parse().unwrap(), now_ms, IDLE_MS, idle)
    }

    #[test]
    fn the_rules_apply_in_their_order() {
        let home = "127.10.0.1";
        assert_eq!(
            at(None, home, 0, Idle::Applies),
            Verdict::Refuse(Refusal::AccessDenied)
        );
        // Revoked beats every other rule, another IP included.
        let revoked = facts(home, 0, true);
        assert_eq!(
            at(revoked, "127.20.0.1", 5000, Idle::Applies),
            Verdict::Refuse(Refusal::AccessDenied)
        );
        // Another IP beats idleness: the session is revoked, not merely refreshed.
        let old = facts(home, 0, false);
        assert_eq!(
            at(old, "127.20.0.1", 5000, Idle::Applies),
            Verdict::RevokeThenRefuse
        );
        assert_eq!(
            at(old, home, IDLE_MS, Idle::Applies),
            Verdict::Refuse(Refusal::RefreshRequired)
        );
        assert_eq!(at(old, home, IDLE_MS - 1, Idle::Applies), Verdict::Allow);
        assert_eq!(at(old, home, 5000, Idle::Ignored), Verdict::Allow);
        // A stored address that is not one matches no client.
        assert_eq!(
            at(facts("garbage", 0, false), home, 0, Idle::Applies),
            Verdict::RevokeThenRefuse
        );
    }

    #[test]
    fn every_refusal_is_a_401_with_its_own_code() {
        for refusal in [
            Refusal::AccessDenied,
            Refusal::LoginAgain,
            Refusal::RefreshRequired,
        ] {
            let response = refusal.response();
            assert_eq!(response.status, 401);
            let crate::runtime::http::Body::Owned(body) = response.body else {
                panic!("an error body is owned");
            };
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["error"], refusal.code());
            assert_eq!(v["detail"], refusal.detail());
        }
    }
}
