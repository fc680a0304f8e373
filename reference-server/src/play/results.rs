//! The results writer: one thread that commits match results to the user DB, tells the
//! lobby to drop the players' cached rows, and only then reports back to the play loop,
//! which sends `end`. So a player who sees `end` sees its new stats in the lobby too, and
//! a crash at any point loses nothing that was announced.

use std::net::SocketAddr;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::Duration;

use mio::Waker;
use rusqlite::params;
use serde::Serialize;

use crate::client;
use crate::db::{self, DbPool};
use crate::play::game::{Outcome, XP_PER_LEVEL};
use crate::profile::INTERNAL_KEY_HEADER;

/// How long the writer waits for the lobby to confirm it dropped stale rows.
const LOBBY_NOTICE_TIMEOUT_MS: u64 = 2_000;
/// Attempts at committing one match before giving up on it (the DB is shared with other
/// writers; a busy DB is retried, a broken one is reported).
const COMMIT_ATTEMPTS_MAX: u32 = 5;

/// A finished match to commit.
#[derive(Debug)]
pub struct Finished {
    /// Match id.
    pub match_id: u64,
    /// Ticks played.
    pub ticks: u64,
    /// Winning player index.
    pub winner: usize,
    /// Every player's outcome.
    pub outcomes: Vec<Outcome>,
}

/// One player's committed totals, as sent in `end`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Committed {
    pub player: usize,
    pub id: String,
    pub won: bool,
    pub wins: i64,
    pub losses: i64,
    pub rating: i64,
    pub xp: i64,
    pub level: i64,
}

/// What the writer reports back: the match and its committed results, or why not.
pub type Report = (u64, Result<Vec<Committed>, String>);

/// Runs the writer until `rx` closes.
pub fn run(db: Arc<DbPool>, play: SocketAddr, lobby: Option<(SocketAddr, String)>, rx: Receiver<Finished>, tx: Sender<Report>, waker: Arc<Waker>) {
    for finished in rx {
        let result = commit_with_retry(&db, play, &finished);
        if let (Ok(rows), Some((lobby, key))) = (&result, &lobby) {
            notify_lobby(*lobby, key, rows);
        }
        if tx.send((finished.match_id, result)).is_err() {
            return;
        }
        let _ = waker.wake();
    }
}

fn commit_with_retry(db: &DbPool, play: SocketAddr, f: &Finished) -> Result<Vec<Committed>, String> {
    let mut last = String::new();
    for attempt in 1..=COMMIT_ATTEMPTS_MAX {
        match db.with(|c| commit(c, play, f)) {
            Ok(rows) => return Ok(rows),
            Err(e) => {
                last = e.to_string();
                tracing::warn!(match_id = f.match_id, attempt, error = %last, "committing results failed");
                std::thread::sleep(Duration::from_millis(50 * attempt as u64));
            }
        }
    }
    Err(last)
}

/// Commits one match in one transaction; a match already recorded is not counted twice.
fn commit(conn: &mut rusqlite::Connection, play: SocketAddr, f: &Finished) -> rusqlite::Result<Vec<Committed>> {
    let tx = conn.transaction()?;
    let results = serde_json::to_string(
        &f.outcomes.iter().map(|o| serde_json::json!({"id": o.user, "won": o.won, "rating": o.rating_delta, "xp": o.xp})).collect::<Vec<_>>(),
    )
    .expect("plain values serialize");
    let winner = &f.outcomes[f.winner].user;
    let fresh = tx.execute(
        "INSERT OR IGNORE INTO matches (id, play, ended_ms, ticks, winner, results) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![f.match_id as i64, play.to_string(), db::now_ms(), f.ticks as i64, winner, results],
    )? == 1;
    let mut committed = Vec::with_capacity(f.outcomes.len());
    for o in &f.outcomes {
        if fresh {
            tx.execute(
                "UPDATE users SET wins = wins + ?1, losses = losses + ?2, rating = rating + ?3, xp = xp + ?4,
                 level = 1 + (xp + ?4) / ?5 WHERE id = ?6",
                params![o.won as i64, (!o.won) as i64, o.rating_delta, o.xp, XP_PER_LEVEL, o.user],
            )?;
        }
        let row = db::user_row(&tx, &o.user)?.unwrap_or(db::UserRow { id: o.user.clone(), level: 1, xp: 0, rating: 0, wins: 0, losses: 0 });
        committed.push(Committed { player: o.player, id: row.id, won: o.won, wins: row.wins, losses: row.losses, rating: row.rating, xp: row.xp, level: row.level });
    }
    tx.commit()?;
    Ok(committed)
}

fn notify_lobby(lobby: SocketAddr, key: &str, rows: &[Committed]) {
    let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    let body = serde_json::json!({ "ids": ids }).to_string();
    let timeout = Duration::from_millis(LOBBY_NOTICE_TIMEOUT_MS);
    for attempt in 1..=COMMIT_ATTEMPTS_MAX {
        match client::request(lobby, "POST", "/internal/v1/users/invalidate", &[(INTERNAL_KEY_HEADER, key)], body.as_bytes(), timeout) {
            Ok(r) if r.status == 204 => return,
            Ok(r) => tracing::warn!(status = r.status, attempt, "lobby refused a results notice"),
            Err(e) => tracing::warn!(%e, attempt, "lobby missed a results notice"),
        }
    }
    tracing::error!(?ids, "the lobby may show stale stats for these users until it restarts");
}
