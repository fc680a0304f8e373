//! Reading the user DB for `results.no_loss` and `db.integrity`: read-only, through
//! SQLite's own locking, while the topology still runs.
//!
//! The server's schema is written here a second time, as the simulator knows the server
//! only from the outside: `users`, `matches` (one row per match whose results were
//! committed) and `unfinished_matches` (a match a play server opened and has not
//! finished; `aborted_ms` is set once a restarted play server found it cut off, and
//! such a match has no result). A DB without that table (an older server) has no
//! aborted matches.

use super::{DbView, Mode, Snapshot, Totals};
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

/// The server commits while the check reads; a read waits this long for a writer's lock
/// instead of failing at once. Commits of match results take milliseconds.
const BUSY_TIMEOUT_MS: u64 = 5_000;
/// How often the matches of unresolved seats are looked for while waiting for them.
const SETTLE_POLL_MS: u64 = 100;

/// Reads what the DB holds of the ledger's matches and users. In exact mode it first
/// waits, until `settle_until` at most, for the matches of unresolved seats to be
/// committed, and also reads every user with a result.
pub(super) fn read(
    path: &Path,
    ledger: &Snapshot,
    mode: Mode,
    settle_until: Instant,
) -> rusqlite::Result<DbView> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS))?;
    if mode == Mode::Exact {
        wait_for_commits(&conn, &ledger.unresolved_matches, settle_until)?;
    }
    let matches = committed(&conn, &ledger.matches)?;
    // Of every match the ledger knows, those the server recorded as aborted.
    let known: Vec<u64> = ledger
        .matches
        .iter()
        .chain(&ledger.unresolved_matches)
        .copied()
        .collect();
    let aborted = aborted(&conn, &known)?;
    // The unresolved ones that have a result after all (committed, the `end` unseen).
    let unresolved_committed = committed(&conn, &ledger.unresolved_matches)?;
    let mut users = HashMap::with_capacity(ledger.users.len());
    let mut by_id =
        conn.prepare("SELECT wins, losses, rating, xp, level FROM users WHERE id = ?1")?;
    for user in ledger.users.keys() {
        if let Some(found) = by_id.query_row([user], |row| totals(row, 0)).optional()? {
            users.insert(user.clone(), found);
        }
    }
    if mode == Mode::Exact {
        let mut played = conn.prepare(
            "SELECT id, wins, losses, rating, xp, level FROM users WHERE wins > 0 OR losses > 0",
        )?;
        let rows = played.query_map([], |row| Ok((row.get::<_, String>(0)?, totals(row, 1)?)))?;
        for row in rows {
            let (user, found) = row?;
            users.insert(user, found);
        }
    }
    Ok(DbView {
        matches,
        aborted,
        unresolved_committed,
        users,
    })
}

/// `PRAGMA integrity_check` of the DB at `path`, opened read-only: `ok`, or SQLite's list
/// of problems.
pub(super) fn integrity(path: &Path) -> rusqlite::Result<String> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS))?;
    let mut stmt = conn.prepare("PRAGMA integrity_check")?;
    let lines = stmt.query_map([], |row| row.get::<_, String>(0))?;
    Ok(lines.collect::<rusqlite::Result<Vec<_>>>()?.join("; "))
}

/// How often the DB is looked at while waiting for a match to end: a kill meant for the
/// moment of an `end` should land within a few milliseconds of its commit.
const MATCH_END_POLL_MS: u64 = 2;

/// Waits until the DB at `path` holds one more match result of the play server at `play`
/// than it did when called, or `timeout` passes; true if one came.
pub(super) fn wait_for_match_end(
    path: &Path,
    play: &str,
    timeout: Duration,
) -> rusqlite::Result<bool> {
    let deadline = Instant::now() + timeout;
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS))?;
    let mut count = conn.prepare("SELECT COUNT(*) FROM matches WHERE play = ?1")?;
    let before: i64 = count.query_row([play], |row| row.get(0))?;
    while Instant::now() < deadline {
        if count.query_row([play], |row| row.get::<_, i64>(0))? > before {
            return Ok(true);
        }
        std::thread::sleep(Duration::from_millis(MATCH_END_POLL_MS));
    }
    Ok(false)
}

/// The matches of `ids` that the DB records as aborted.
fn aborted(conn: &Connection, ids: &[u64]) -> rusqlite::Result<HashSet<u64>> {
    let exists = conn
        .prepare(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'unfinished_matches'",
        )?
        .exists([])?;
    if !exists {
        return Ok(HashSet::new());
    }
    let mut stmt =
        conn.prepare("SELECT 1 FROM unfinished_matches WHERE id = ?1 AND aborted_ms IS NOT NULL")?;
    let mut found = HashSet::new();
    for &id in ids {
        if stmt.exists([id as i64])? {
            found.insert(id);
        }
    }
    Ok(found)
}

fn totals(row: &Row<'_>, first: usize) -> rusqlite::Result<Totals> {
    Ok(Totals {
        wins: row.get(first)?,
        losses: row.get(first + 1)?,
        rating: row.get(first + 2)?,
        xp: row.get(first + 3)?,
        level: row.get(first + 4)?,
    })
}

/// The matches of `ids` that the DB holds.
fn committed(conn: &Connection, ids: &[u64]) -> rusqlite::Result<HashSet<u64>> {
    let mut exists = conn.prepare("SELECT 1 FROM matches WHERE id = ?1")?;
    let mut found = HashSet::with_capacity(ids.len());
    for &id in ids {
        // Match ids stay below 2^53 (the lobby's own bound), so they fit SQLite's i64.
        if exists.exists([id as i64])? {
            found.insert(id);
        }
    }
    Ok(found)
}

/// Waits until every match of `ids` is settled, committed or recorded aborted, or
/// `deadline` has passed. A match that never settles (its play server died and was not
/// restarted) only costs the wait.
fn wait_for_commits(conn: &Connection, ids: &[u64], deadline: Instant) -> rusqlite::Result<()> {
    while Instant::now() < deadline {
        let settled = committed(conn, ids)?.union(&aborted(conn, ids)?).count();
        if settled >= ids.len() {
            break;
        }
        std::thread::sleep(Duration::from_millis(SETTLE_POLL_MS));
    }
    Ok(())
}
