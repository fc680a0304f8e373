//! The results writer: one thread that commits match results to the user DB, tells the
//! lobby to drop the players' cached rows, and only then reports back to the play loop,
//! which sends `end`. So a player who sees `end` sees its new stats in the lobby too, and
//! a crash at any point loses nothing that was announced.
//!
//! It also records each match as it opens (a row of `unfinished_matches`), and removes
//! that row in the transaction that commits the match's results. A play server killed
//! mid-match leaves the row behind, and marks it aborted when it starts again
//! ([`db::abort_unfinished_matches`]): such a match has no result at all, never a part
//! of one.

use std::net::SocketAddr;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::Duration;

use mio::Waker;
use rusqlite::params;
use serde::Serialize;

use crate::domain::db::{self, DbPool};
use crate::domain::internal_key::{InternalKey, INTERNAL_KEY_HEADER};
use crate::runtime::client;
use crate::services::play::game::{Outcome, XP_PER_LEVEL};

/// How long the writer waits for the lobby to confirm it dropped stale rows.
const LOBBY_NOTICE_TIMEOUT_MS: u64 = 2_000;
/// Attempts at committing one match before giving up on it (the DB is shared with other
/// writers; a busy DB is retried, a broken one is reported).
const COMMIT_ATTEMPTS_MAX: u32 = 5;
/// Matches committed in one transaction at most: a few hundred players' rows, a
/// transaction of milliseconds that never holds the DB's write lock for long.
const BATCH_MATCHES_MAX: usize = 64;

/// What the play loop hands the writer, in the order things happened.
#[derive(Debug)]
pub enum Job {
    /// A match opened (its first player joined): record it as unfinished.
    Started(u64),
    /// A match ended: commit its results and report back.
    Finished(Finished),
}

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

/// Runs the writer until `rx` closes. Matches that ended while it was busy are committed
/// together, in one transaction, and announced to the lobby in one notice: under load
/// the DB's write lock and the notice are paid once per batch instead of once per
/// match, so the writer keeps up however many matches end at once (at 50,000 players,
/// one transaction per match fell minutes behind and `end`s went out too late).
pub fn run(
    db: Arc<DbPool>,
    play: SocketAddr,
    lobby: Option<(SocketAddr, InternalKey)>,
    rx: Receiver<Job>,
    tx: Sender<Report>,
    waker: Arc<Waker>,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH_MATCHES_MAX {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let result = commit_with_retry(&db, play, &batch);
        if let (Ok(rows), Some((lobby, key))) = (&result, &lobby) {
            if !rows.is_empty() {
                notify_lobby(*lobby, key, rows.iter().flatten());
            }
        }
        let finished = batch.iter().filter_map(|job| match job {
            Job::Finished(finished) => Some(finished),
            Job::Started(_) => None,
        });
        for (index, finished) in finished.enumerate() {
            let report = match &result {
                Ok(rows) => Ok(rows[index].clone()),
                Err(e) => Err(e.clone()),
            };
            if tx.send((finished.match_id, report)).is_err() {
                return;
            }
        }
        let _ = waker.wake();
    }
}

/// Commits a batch in one transaction: the results of each finished match, in order
/// (one `Vec` per match), and the record of each started one.
fn commit_with_retry(
    db: &DbPool,
    play: SocketAddr,
    batch: &[Job],
) -> Result<Vec<Vec<Committed>>, String> {
    let mut last = String::new();
    let address = play.to_string();
    for attempt in 1..=COMMIT_ATTEMPTS_MAX {
        let committed = db.with(|c| {
            let tx = c.transaction()?;
            let mut rows = Vec::with_capacity(batch.len());
            for job in batch {
                match job {
                    Job::Started(id) => db::start_match(&tx, *id, &address, db::now_ms())?,
                    Job::Finished(f) => rows.push(commit(&tx, play, f)?),
                }
            }
            tx.commit()?;
            Ok(rows)
        });
        match committed {
            Ok(rows) => return Ok(rows),
            Err(e) => {
                last = e.to_string();
                let first = batch.first().map(|job| match job {
                    Job::Started(id) => *id,
                    Job::Finished(f) => f.match_id,
                });
                tracing::warn!(match_id = first, matches = batch.len(), attempt, error = %last, "committing results failed");
                std::thread::sleep(Duration::from_millis(50 * attempt as u64));
            }
        }
    }
    Err(last)
}

/// Records one match in the writer's transaction, and takes it off the unfinished ones;
/// a match already recorded is not counted twice.
fn commit(
    tx: &rusqlite::Transaction<'_>,
    play: SocketAddr,
    f: &Finished,
) -> rusqlite::Result<Vec<Committed>> {
    let results = serde_json::to_string(
        &f.outcomes.iter().map(|o| serde_json::json!({"id": o.user, "won": o.won, "rating": o.rating_delta, "xp": o.xp})).collect::<Vec<_>>(),
    )
    .expect("plain values serialize");
    let winner = &f.outcomes[f.winner].user;
    let fresh = tx.execute(
        "INSERT OR IGNORE INTO matches (id, play, ended_ms, ticks, winner, results) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![f.match_id as i64, play.to_string(), db::now_ms(), f.ticks as i64, winner, results],
    )? == 1;
    db::finish_match(tx, f.match_id)?;
    let mut committed = Vec::with_capacity(f.outcomes.len());
    for o in &f.outcomes {
        if fresh {
            tx.execute(
                "UPDATE users SET wins = wins + ?1, losses = losses + ?2, rating = rating + ?3, xp = xp + ?4,
                 level = 1 + (xp + ?4) / ?5 WHERE id = ?6",
                params![o.won as i64, (!o.won) as i64, o.rating_delta, o.xp, XP_PER_LEVEL, o.user],
            )?;
        }
        let row = db::user_row(tx, &o.user)?.unwrap_or(db::UserRow {
            id: o.user.clone(),
            level: 1,
            xp: 0,
            rating: 0,
            wins: 0,
            losses: 0,
        });
        committed.push(Committed {
            player: o.player,
            id: row.id,
            won: o.won,
            wins: row.wins,
            losses: row.losses,
            rating: row.rating,
            xp: row.xp,
            level: row.level,
        });
    }
    Ok(committed)
}

fn notify_lobby<'a>(
    lobby: SocketAddr,
    key: &InternalKey,
    rows: impl Iterator<Item = &'a Committed>,
) {
    let ids: Vec<&str> = rows.map(|r| r.id.as_str()).collect();
    let body = serde_json::json!({ "ids": ids }).to_string();
    let timeout = Duration::from_millis(LOBBY_NOTICE_TIMEOUT_MS);
    for attempt in 1..=COMMIT_ATTEMPTS_MAX {
        match client::request(
            lobby,
            "POST",
            "/internal/v1/users/invalidate",
            &[(INTERNAL_KEY_HEADER, key.as_str())],
            body.as_bytes(),
            timeout,
        ) {
            Ok(r) if r.status == 204 => return,
            Ok(r) => tracing::warn!(status = r.status, attempt, "lobby refused a results notice"),
            Err(e) => tracing::warn!(%e, attempt, "lobby missed a results notice"),
        }
    }
    tracing::error!(
        ?ids,
        "the lobby may show stale stats for these users until it restarts"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Argon2Preset;
    use crate::domain::users;
    use std::sync::mpsc;

    fn finished(match_id: u64, winner: &str, loser: &str) -> Finished {
        let outcome = |player, user: &str, won| Outcome {
            player,
            user: user.to_string(),
            won,
            rating_delta: if won { 10 } else { -10 },
            xp: 5,
        };
        Finished {
            match_id,
            ticks: 100,
            winner: 0,
            outcomes: vec![outcome(0, winner, true), outcome(1, loser, false)],
        }
    }

    #[test]
    fn matches_queued_together_are_committed_and_reported_each() {
        let dir = tempfile::tempdir().unwrap();
        users::seed(dir.path(), 4, Some(Argon2Preset::Fast)).unwrap();
        let db = Arc::new(DbPool::new(&dir.path().join(db::DB_FILE)).unwrap());
        let (finished_tx, finished_rx) = mpsc::channel();
        // Queued before the writer starts, so its first batch holds all three; user1
        // plays two of them, and its second result builds on its first. Matches 1 to 4
        // open; 4 never ends.
        for id in 1..=4 {
            finished_tx.send(Job::Started(id)).unwrap();
        }
        finished_tx
            .send(Job::Finished(finished(1, "user1", "user2")))
            .unwrap();
        finished_tx
            .send(Job::Finished(finished(2, "user3", "user4")))
            .unwrap();
        finished_tx
            .send(Job::Finished(finished(3, "user1", "user3")))
            .unwrap();
        drop(finished_tx);
        let (reports_tx, reports_rx) = mpsc::channel();
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let play: SocketAddr = "127.0.0.1:9".parse().unwrap();
        run(Arc::clone(&db), play, None, finished_rx, reports_tx, waker);
        let reports: Vec<Report> = reports_rx.iter().collect();
        assert_eq!(reports.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2, 3]);
        let third = reports[2].1.as_ref().unwrap();
        let user1 = third.iter().find(|row| row.id == "user1").unwrap();
        assert_eq!((user1.wins, user1.losses, user1.xp), (2, 0, 10));
        let matches: i64 = db
            .with(|c| c.query_row("SELECT COUNT(*) FROM matches", [], |r| r.get(0)))
            .unwrap();
        assert_eq!(matches, 3);
        // Only the match that never ended is left unfinished, and a restart aborts it.
        let aborted = db
            .with(|c| db::abort_unfinished_matches(c, &play.to_string(), 1))
            .unwrap();
        assert_eq!(aborted, [4]);
    }
}
