//! The lobby's session cache. Every request passes the session rule
//! ([`crate::domain::session::judge`]) on the cached copy of its session.
//!
//! The DB is the truth and the cache only a copy: a miss is loaded by a worker, and so is
//! a session the cache finds idle (a router or observer may have used it since); uses
//! made here are written back by a flusher thread. A revocation is committed by the
//! caller on a worker before it answers `login_again`; the flusher writes it again, so
//! one that never reached a worker (a full queue) is not lost either.
//!
//! Copies nobody can be served from any more (idle here for the idle timeout) are pruned
//! every minute, so the cache holds the sessions of the last idle timeout and not every
//! session a long run ever saw.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::domain::db::SessionRow;
use crate::domain::session::{judge, Idle, Refusal, SessionFacts, Verdict};

/// Sessions kept in memory; beyond it idle ones are dropped first (they reload on use).
const SESSIONS_CACHED_MAX: usize = 1_000_000;

#[derive(Debug, Clone)]
struct Cached {
    user_id: String,
    facts: SessionFacts,
}

/// The outcome of checking a request's token.
#[derive(Debug)]
pub enum Auth {
    /// The token is good; the request acts for this user.
    User(String),
    /// The request is refused with this code.
    Deny(Refusal),
    /// The session was presented from another IP: it is revoked here already, and a
    /// worker must commit that to the DB before the `login_again` goes out.
    Revoke,
    /// The cache cannot decide (the session is not cached, or looks idle); a worker
    /// must load it from the DB.
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

    /// Sessions held now.
    pub fn held(&self) -> usize {
        self.map.len()
    }

    /// Applies the session rule to a token (by hash) used from `ip` at `now_ms`.
    /// `loaded` is true when a worker has just read the session from the DB, so the
    /// cache's copy is as fresh as it gets and a miss or an idle session is final.
    pub fn authorize(&mut self, hash: &str, ip: IpAddr, now_ms: i64, loaded: bool) -> Auth {
        let Some(s) = self.map.get_mut(hash) else {
            return if loaded {
                Auth::Deny(Refusal::AccessDenied)
            } else {
                Auth::Miss
            };
        };
        match judge(Some(s.facts), ip, now_ms, self.idle_ms, Idle::Applies) {
            Verdict::Allow => {
                s.facts.last_used_ms = now_ms;
                self.touched.insert(hash.to_string(), now_ms);
                Auth::User(s.user_id.clone())
            }
            Verdict::Refuse(Refusal::RefreshRequired) if !loaded => Auth::Miss,
            Verdict::Refuse(refusal) => Auth::Deny(refusal),
            Verdict::RevokeThenRefuse => {
                s.facts.revoked = true;
                self.revoked.push(hash.to_string());
                Auth::Revoke
            }
        }
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
        let cached = self.map.get(&row.token_hash).map(|c| c.facts);
        let stored = SessionFacts::from(&row);
        let entry = Cached {
            user_id: row.user_id,
            facts: SessionFacts {
                ip: stored.ip,
                last_used_ms: stored
                    .last_used_ms
                    .max(touched)
                    .max(cached.map_or(i64::MIN, |c| c.last_used_ms)),
                revoked: stored.revoked || cached.is_some_and(|c| c.revoked),
            },
        };
        self.map.insert(row.token_hash, entry);
    }

    /// Marks a token revoked after profile revoked it (refresh or logout).
    pub fn revoked_elsewhere(&mut self, hash: &str) {
        if let Some(s) = self.map.get_mut(hash) {
            s.facts.revoked = true;
        }
    }

    /// The writes owed to the DB: last uses and revocations made here.
    pub fn take_writes(&mut self) -> (Vec<(String, i64)>, Vec<String>) {
        (
            self.touched.drain().collect(),
            std::mem::take(&mut self.revoked),
        )
    }

    /// Drops the copies of sessions unused here for the idle timeout and returns how many
    /// went. Such a copy serves no request: its next use asks the DB either way, as an
    /// idle copy must (a router or an observer may have used the session since). A
    /// revocation made here and not yet written keeps its copy, so no reload can bring
    /// the session back before the DB knows of it.
    pub fn prune(&mut self, now_ms: i64) -> usize {
        let before = self.map.len();
        let (idle, pending) = (self.idle_ms, &self.revoked);
        self.map
            .retain(|hash, s| now_ms - s.facts.last_used_ms < idle || pending.contains(hash));
        before - self.map.len()
    }

    fn evict(&mut self) {
        self.prune(crate::domain::db::now_ms());
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
            Auth::Revoke => "revoke".into(),
            Auth::Deny(refusal) => refusal.code().into(),
        }
    }

    #[test]
    fn the_lobby_rules_in_order() {
        let ip: IpAddr = "127.10.0.1".parse().unwrap();
        let other: IpAddr = "127.20.0.1".parse().unwrap();
        let mut s = Sessions::new(1000);
        assert_eq!(code(s.authorize("h", ip, 0, false)), "miss");
        assert_eq!(code(s.authorize("h", ip, 0, true)), "access_denied");
        s.load(row("h", "127.10.0.1", 0));
        assert_eq!(code(s.authorize("h", ip, 999, false)), "user1");
        // Idle counts from the last use, and a refused request does not count as a use.
        // The cache alone only suspects idleness: the DB may know of a later use.
        assert_eq!(code(s.authorize("h", ip, 1999, false)), "miss");
        assert_eq!(code(s.authorize("h", ip, 1999, true)), "refresh_required");
        assert_eq!(code(s.authorize("h", ip, 2500, true)), "refresh_required");
        s.load(row("g", "127.10.0.1", 3000));
        assert_eq!(code(s.authorize("g", other, 3001, false)), "revoke");
        // The session is revoked for everyone now, its owner included.
        assert_eq!(code(s.authorize("g", ip, 3002, false)), "access_denied");
        let (touched, revoked) = s.take_writes();
        assert_eq!(touched, vec![("h".to_string(), 999)]);
        assert_eq!(revoked, vec!["g".to_string()]);
    }

    #[test]
    fn pruning_forgets_idle_copies_and_keeps_unwritten_revocations() {
        let home: IpAddr = "127.10.0.1".parse().unwrap();
        let other: IpAddr = "127.20.0.1".parse().unwrap();
        let mut s = Sessions::new(1000);
        s.load(row("idle", "127.10.0.1", 0));
        s.load(row("used", "127.10.0.1", 0));
        s.load(row("revoked", "127.10.0.1", 0));
        assert_eq!(code(s.authorize("used", home, 500, false)), "user1");
        // Presented from another IP: revoked here, the DB not told yet.
        assert_eq!(code(s.authorize("revoked", other, 600, false)), "revoke");
        assert_eq!(s.prune(1000), 1, "only the idle copy goes");
        assert_eq!(code(s.authorize("idle", home, 1000, false)), "miss");
        assert_eq!(code(s.authorize("used", home, 1000, false)), "user1");
        assert_eq!(
            code(s.authorize("revoked", home, 1000, false)),
            "access_denied"
        );
        // Once written, the revoked copy goes like any idle one, and the DB answers.
        let (_, revoked) = s.take_writes();
        assert_eq!(revoked, vec!["revoked".to_string()]);
        assert_eq!(s.prune(1000), 1);
        assert_eq!(code(s.authorize("revoked", home, 1000, false)), "miss");
    }

    #[test]
    fn a_long_run_keeps_only_the_sessions_of_the_last_idle_timeout() {
        // A new session every second for 1,000 s, never used again, with a 5 s idle
        // timeout and a prune every 10 s: the cache holds at most the sessions of the
        // last prune interval and idle timeout, however long the run.
        let mut s = Sessions::new(5_000);
        let mut held_max = 0;
        for second in 0..1_000 {
            s.load(row(&format!("s{second}"), "127.10.0.1", second * 1000));
            held_max = held_max.max(s.map.len());
            if second % 10 == 0 {
                s.prune(second * 1000);
            }
        }
        assert_eq!(held_max, 10 + 5);
        s.load(row("fresh", "127.10.0.1", 999_500));
        s.prune(1_000_000);
        assert!(s.map.contains_key("fresh"), "a session in use stays");
    }

    #[test]
    fn reloading_keeps_newer_local_knowledge() {
        let ip: IpAddr = "127.10.0.1".parse().unwrap();
        let mut s = Sessions::new(1000);
        s.load(row("h", "127.10.0.1", 0));
        assert_eq!(code(s.authorize("h", ip, 900, false)), "user1");
        // A stale DB row (last use 0) must not make the session look idle.
        s.load(row("h", "127.10.0.1", 0));
        assert_eq!(code(s.authorize("h", ip, 1500, false)), "user1");
        s.revoked_elsewhere("h");
        s.load(row("h", "127.10.0.1", 0));
        assert_eq!(code(s.authorize("h", ip, 1600, false)), "access_denied");
    }
}
