//! Reading the user DB for `results.no_loss`: read-only, through SQLite's own locking,
//! while the topology still runs.

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
    Ok(DbView { matches, users })
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

/// Waits until every match of `ids` is committed or `deadline` has passed. A match that
/// never commits (its play server died) only costs the wait.
fn wait_for_commits(conn: &Connection, ids: &[u64], deadline: Instant) -> rusqlite::Result<()> {
    while committed(conn, ids)?.len() < ids.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(SETTLE_POLL_MS));
    }
    Ok(())
}
