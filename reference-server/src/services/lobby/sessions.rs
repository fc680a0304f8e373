//! The lobby's session cache and the rules every lobby request passes (SPEC §3 lobby):
//! unknown or revoked token → `access_denied`; another IP than the session's →
//! `login_again` and the session is revoked; unused for the idle timeout or longer →
//! `refresh_required`.
//!
//! The DB is the truth and the cache only a copy: a miss is loaded by a worker, and
//! uses and revocations made here are written back by a flusher thread.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::db::SessionRow;
use crate::http::Response;

/// Sessions kept in memory; beyond it idle ones are dropped first (they reload on use).
const SESSIONS_CACHED_MAX: usize = 1_000_000;

#[derive(Debug, Clone)]
struct Cached {
    user_id: String,
    ip: Option<IpAddr>,
    last_used_ms: i64,
    revoked: bool,
}

/// The outcome of checking a request's token.
#[derive(Debug)]
pub enum Auth {
    /// The token is good; the request acts for this user.
    User(String),
    /// The request is refused with this answer.
    Deny(Response),
    /// The session is not cached; a worker must load it.
    Miss,
}

/// The cache plus the writes it owes the DB.
#[derive(Debug)]
pub struct Sessions {
    map: HashMap<String, Cached>,
    touched: HashMap<String, i64>,
    revoked: Vec<String>,
    idle_ms: i64,
}

/// The answer for an unknown, revoked or missing token.
pub fn access_denied() -> Response {
    Response::error(401, "access_denied", "unknown, revoked or missing token")
}

impl Sessions {
    /// An empty cache with this idle timeout.
    pub fn new(idle_ms: i64) -> Sessions {
        Sessions {
            map: HashMap::new(),
            touched: HashMap::new(),
            revoked: Vec::new(),
            idle_ms,
        }
    }

    /// Applies the lobby rules to a token (by hash) used from `ip` at `now_ms`.
    pub fn authorize(&mut self, hash: &str, ip: IpAddr, now_ms: i64) -> Auth {
        let Some(s) = self.map.get_mut(hash) else {
            return Auth::Miss;
        };
        if s.revoked {
            return Auth::Deny(access_denied());
        }
        if s.ip != Some(ip) {
            s.revoked = true;
            self.revoked.push(hash.to_string());
            return Auth::Deny(Response::error(
                401,
                "login_again",
                "this token was issued to another IP; log in again",
            ));
        }
        if now_ms - s.last_used_ms >= self.idle_ms {
            return Auth::Deny(Response::error(
                401,
                "refresh_required",
                "token unused for too long; refresh it at profile",
            ));
        }
        s.last_used_ms = now_ms;
        self.touched.insert(hash.to_string(), now_ms);
        Auth::User(s.user_id.clone())
    }

    /// Caches a session read from the DB, merging with what this lobby knows newer.
    pub fn load(&mut self, row: SessionRow) {
        if self.map.len() >= SESSIONS_CACHED_MAX {
            self.evict();
        }
        let touched = self
            .touched
            .get(&row.token_hash)
            .copied()
            .unwrap_or(i64::MIN);
        let cached = self.map.get(&row.token_hash);
        let entry = Cached {
            user_id: row.user_id,
            ip: row.ip.parse().ok(),
            last_used_ms: row
                .last_used_ms
                .max(touched)
                .max(cached.map_or(i64::MIN, |c| c.last_used_ms)),
            revoked: row.revoked || cached.is_some_and(|c| c.revoked),
        };
        self.map.insert(row.token_hash, entry);
    }

    /// Marks a token revoked after profile revoked it (refresh or logout).
    pub fn revoked_elsewhere(&mut self, hash: &str) {
        if let Some(s) = self.map.get_mut(hash) {
            s.revoked = true;
        }
    }

    /// The writes owed to the DB: last uses and revocations made here.
    pub fn take_writes(&mut self) -> (Vec<(String, i64)>, Vec<String>) {
        (
            self.touched.drain().collect(),
            std::mem::take(&mut self.revoked),
        )
    }

    fn evict(&mut self) {
        let (now, idle) = (crate::db::now_ms(), self.idle_ms);
        self.map
            .retain(|_, s| !s.revoked && now - s.last_used_ms < idle);
        if self.map.len() >= SESSIONS_CACHED_MAX {
            // Still full of live sessions: drop a tenth; they reload from the DB on use.
            let drop: Vec<String> = self
                .map
                .keys()
                .take(SESSIONS_CACHED_MAX / 10)
                .cloned()
                .collect();
            for key in drop {
                self.map.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(hash: &str, ip: &str, last_used_ms: i64) -> SessionRow {
        SessionRow {
            token_hash: hash.into(),
            user_id: "user1".into(),
            ip: ip.into(),
            lobby: "l".into(),
            created_ms: 0,
            last_used_ms,
            revoked: false,
        }
    }

    fn code(auth: Auth) -> String {
        match auth {
            Auth::User(u) => u,
            Auth::Miss => "miss".into(),
            Auth::Deny(r) => {
                let crate::http::Body::Owned(b) = r.body else {
                    panic!()
                };
                serde_json::from_slice::<serde_json::Value>(&b).unwrap()["error"]
                    .as_str()
                    .unwrap()
                    .to_string()
            }
        }
    }

    #[test]
    fn the_lobby_rules_in_order() {
        let ip: IpAddr = "127.10.0.1".parse().unwrap();
        let other: IpAddr = "127.20.0.1".parse().unwrap();
        let mut s = Sessions::new(1000);
        assert_eq!(code(s.authorize("h", ip, 0)), "miss");
        s.load(row("h", "127.10.0.1", 0));
        assert_eq!(code(s.authorize("h", ip, 999)), "user1");
        // Idle counts from the last use, and a refused request does not count as a use.
        assert_eq!(code(s.authorize("h", ip, 1999)), "refresh_required");
        assert_eq!(code(s.authorize("h", ip, 2500)), "refresh_required");
        s.load(row("g", "127.10.0.1", 3000));
        assert_eq!(code(s.authorize("g", other, 3001)), "login_again");
        // The session is revoked for everyone now, its owner included.
        assert_eq!(code(s.authorize("g", ip, 3002)), "access_denied");
        let (touched, revoked) = s.take_writes();
        assert_eq!(touched, vec![("h".to_string(), 999)]);
        assert_eq!(revoked, vec!["g".to_string()]);
    }

    #[test]
    fn reloading_keeps_newer_local_knowledge() {
        let ip: IpAddr = "127.10.0.1".parse().unwrap();
        let mut s = Sessions::new(1000);
        s.load(row("h", "127.10.0.1", 0));
        assert_eq!(code(s.authorize("h", ip, 900)), "user1");
        // A stale DB row (last use 0) must not make the session look idle.
        s.load(row("h", "127.10.0.1", 0));
        assert_eq!(code(s.authorize("h", ip, 1500)), "user1");
        s.revoked_elsewhere("h");
        s.load(row("h", "127.10.0.1", 0));
        assert_eq!(code(s.authorize("h", ip, 1600)), "access_denied");
    }
}
