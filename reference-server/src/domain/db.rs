//! The user DB: SQLite in WAL mode at `DIR/catwar.db`, shared by profile, lobby and the
//! play servers (each process opens its own connections).
//!
//! WAL with `synchronous = NORMAL` keeps every committed transaction across a killed
//! process (the WAL is in the OS page cache), which is the failure this project injects;
//! only a power loss could drop the last commits.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

/// The DB file's name in the data folder.
pub const DB_FILE: &str = "catwar.db";
/// How long a writer waits for another process's write lock before failing.
const BUSY_TIMEOUT_MS: u64 = 10_000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    phc TEXT NOT NULL,
    level INTEGER NOT NULL DEFAULT 1,
    xp INTEGER NOT NULL DEFAULT 0,
    rating INTEGER NOT NULL DEFAULT 1000,
    wins INTEGER NOT NULL DEFAULT 0,
    losses INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS users_by_rating ON users (rating DESC, id);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    ip TEXT NOT NULL,
    lobby TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    last_used_ms INTEGER NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS matches (
    id INTEGER PRIMARY KEY,
    play TEXT NOT NULL,
    ended_ms INTEGER NOT NULL,
    ticks INTEGER NOT NULL,
    winner TEXT NOT NULL,
    results TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS unfinished_matches (
    id INTEGER PRIMARY KEY,
    play TEXT NOT NULL,
    started_ms INTEGER NOT NULL,
    aborted_ms INTEGER
);
CREATE INDEX IF NOT EXISTS unfinished_matches_running ON unfinished_matches (play)
    WHERE aborted_ms IS NULL;
";

/// A DB failure, with the file it concerns.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", .path.display())]
pub struct DbError {
    /// The DB file.
    pub path: PathBuf,
    /// What SQLite said.
    #[source]
    pub source: rusqlite::Error,
}

/// Opens (and creates) the DB with the schema and pragmas every process uses.
pub fn open(path: &Path) -> Result<Connection, DbError> {
    let err = |source| DbError {
        path: path.into(),
        source,
    };
    let conn = Connection::open(path).map_err(err)?;
    conn.busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS))
        .map_err(err)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(err)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(err)?;
    conn.execute_batch(SCHEMA).map_err(err)?;
    Ok(conn)
}

/// Connections for worker threads: a `Connection` serves one thread at a time, so each
/// job checks one out and returns it.
#[derive(Debug)]
pub struct DbPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl DbPool {
    /// A pool over the DB at `path`; opens one connection now to fail early.
    pub fn new(path: &Path) -> Result<DbPool, DbError> {
        let first = open(path)?;
        Ok(DbPool {
            path: path.into(),
            idle: Mutex::new(vec![first]),
        })
    }

    /// The shared secret stored under `key` (32 random bytes as hex), created by whichever
    /// service asks first: ticket and internal keys, the token salt.
    pub fn secret(&self, key: &str) -> Result<String, DbError> {
        self.with(|c| {
            meta_or_init(c, key, || {
                crate::domain::token::random_hex(32).expect("OS random source")
            })
        })
    }

    /// Runs `f` with a connection.
    pub fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, DbError> {
        let taken = self.idle.lock().expect("db pool lock").pop();
        let mut conn = match taken {
            Some(conn) => conn,
            None => open(&self.path)?,
        };
        let result = f(&mut conn).map_err(|source| DbError {
            path: self.path.clone(),
            source,
        });
        self.idle.lock().expect("db pool lock").push(conn);
        result
    }
}

/// A user's public data.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[allow(missing_docs)]
pub struct UserRow {
    pub id: String,
    pub level: i64,
    pub xp: i64,
    pub rating: i64,
    pub wins: i64,
    pub losses: i64,
}

/// One login session.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct SessionRow {
    pub token_hash: String,
    pub user_id: String,
    pub ip: String,
    pub lobby: String,
    pub created_ms: i64,
    pub last_used_ms: i64,
    pub revoked: bool,
}

/// The password hash of a user.
pub fn user_phc(conn: &Connection, id: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row("SELECT phc FROM users WHERE id = ?1", [id], |r| r.get(0))
        .optional()
}

/// A user's public data.
pub fn user_row(conn: &Connection, id: &str) -> rusqlite::Result<Option<UserRow>> {
    conn.query_row(
        "SELECT id, level, xp, rating, wins, losses FROM users WHERE id = ?1",
        [id],
        |r| {
            Ok(UserRow {
                id: r.get(0)?,
                level: r.get(1)?,
                xp: r.get(2)?,
                rating: r.get(3)?,
                wins: r.get(4)?,
                losses: r.get(5)?,
            })
        },
    )
    .optional()
}

/// Every user as (id, rating, level), best rating first, ties by id.
pub fn ranking(conn: &Connection) -> rusqlite::Result<Vec<(String, i64, i64)>> {
    let mut stmt =
        conn.prepare_cached("SELECT id, rating, level FROM users ORDER BY rating DESC, id")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    rows.collect()
}

/// The ranking rows (id, rating, level) of `ids`; ids without a user are left out.
pub fn ranking_rows(
    conn: &Connection,
    ids: &[String],
) -> rusqlite::Result<Vec<(String, i64, i64)>> {
    let mut stmt = conn.prepare_cached("SELECT id, rating, level FROM users WHERE id = ?1")?;
    let mut rows = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(row) = stmt
            .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?
        {
            rows.push(row);
        }
    }
    Ok(rows)
}

/// Inserts a session; false when the token hash already exists (a collision).
pub fn insert_session(conn: &Connection, s: &SessionRow) -> rusqlite::Result<bool> {
    let inserted = conn.execute(
        "INSERT OR IGNORE INTO sessions (token_hash, user_id, ip, lobby, created_ms, last_used_ms, revoked)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0)",
        params![s.token_hash, s.user_id, s.ip, s.lobby, s.created_ms, s.last_used_ms],
    )?;
    Ok(inserted == 1)
}

/// A session by token hash.
pub fn session(conn: &Connection, token_hash: &str) -> rusqlite::Result<Option<SessionRow>> {
    conn.query_row(
        "SELECT token_hash, user_id, ip, lobby, created_ms, last_used_ms, revoked FROM sessions WHERE token_hash = ?1",
        [token_hash],
        |r| {
            Ok(SessionRow {
                token_hash: r.get(0)?,
                user_id: r.get(1)?,
                ip: r.get(2)?,
                lobby: r.get(3)?,
                created_ms: r.get(4)?,
                last_used_ms: r.get(5)?,
                revoked: r.get::<_, i64>(6)? != 0,
            })
        },
    )
    .optional()
}

/// Marks a session revoked; its token stops working everywhere.
pub fn revoke(conn: &Connection, token_hash: &str) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE sessions SET revoked = 1 WHERE token_hash = ?1",
        [token_hash],
    )?;
    Ok(())
}

/// Records when sessions were last used, in one transaction.
pub fn touch_sessions(conn: &mut Connection, touched: &[(String, i64)]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare_cached(
            "UPDATE sessions SET last_used_ms = MAX(last_used_ms, ?2) WHERE token_hash = ?1",
        )?;
        for (hash, at) in touched {
            stmt.execute(params![hash, at])?;
        }
    }
    tx.commit()
}

/// Records that `play` opened match `id`: a row of `unfinished_matches` until its results
/// are committed ([`finish_match`], in the same transaction), or until a restarted `play`
/// marks it aborted ([`abort_unfinished_matches`]). Recording it again changes nothing.
pub fn start_match(conn: &Connection, id: u64, play: &str, now_ms: i64) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT OR IGNORE INTO unfinished_matches (id, play, started_ms) VALUES (?1, ?2, ?3)",
        params![id as i64, play, now_ms],
    )?;
    Ok(())
}

/// Forgets match `id` among the unfinished ones: its results are being committed.
pub fn finish_match(conn: &Connection, id: u64) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM unfinished_matches WHERE id = ?1", [id as i64])?;
    Ok(())
}

/// Marks every match `play` opened and never finished as aborted at `now_ms`, and returns
/// their ids. A play server calls this as it starts, before it serves anyone: matches of
/// its previous life died with it, and none of their results was written (a result and
/// the removal of its row commit together).
pub fn abort_unfinished_matches(
    conn: &Connection,
    play: &str,
    now_ms: i64,
) -> rusqlite::Result<Vec<u64>> {
    let tx = conn.unchecked_transaction()?;
    let ids = {
        let mut stmt =
            tx.prepare("SELECT id FROM unfinished_matches WHERE play = ?1 AND aborted_ms IS NULL")?;
        let ids = stmt.query_map([play], |r| r.get::<_, i64>(0))?;
        ids.map(|id| id.map(|id| id as u64))
            .collect::<rusqlite::Result<Vec<u64>>>()?
    };
    tx.execute(
        "UPDATE unfinished_matches SET aborted_ms = ?2 WHERE play = ?1 AND aborted_ms IS NULL",
        params![play, now_ms],
    )?;
    tx.commit()?;
    Ok(ids)
}

/// The time match `id` was recorded aborted, if it was.
pub fn match_aborted_ms(conn: &Connection, id: u64) -> rusqlite::Result<Option<i64>> {
    conn.query_row(
        "SELECT aborted_ms FROM unfinished_matches WHERE id = ?1",
        [id as i64],
        |r| r.get(0),
    )
    .optional()
    .map(Option::flatten)
}

/// Deletes sessions no one can use any more, at most `batch_max` rows per transaction so
/// the write lock is never held long: revoked ones, and those both unused since
/// `unused_before_ms` (idle everywhere) and created before `created_before_ms` (too old
/// to refresh). Returns how many went.
pub fn prune_sessions(
    conn: &Connection,
    unused_before_ms: i64,
    created_before_ms: i64,
    batch_max: usize,
) -> rusqlite::Result<usize> {
    let mut stmt = conn.prepare_cached(
        "DELETE FROM sessions WHERE rowid IN (
             SELECT rowid FROM sessions
             WHERE revoked = 1 OR (last_used_ms < ?1 AND created_ms < ?2)
             LIMIT ?3)",
    )?;
    let mut pruned = 0;
    loop {
        let deleted = stmt.execute(params![
            unused_before_ms,
            created_before_ms,
            batch_max as i64
        ])?;
        pruned += deleted;
        if deleted < batch_max {
            return Ok(pruned);
        }
    }
}

/// `PRAGMA integrity_check`: `"ok"`, or SQLite's list of what is wrong.
pub fn integrity_check(conn: &Connection) -> rusqlite::Result<String> {
    let mut stmt = conn.prepare("PRAGMA integrity_check")?;
    let lines = stmt.query_map([], |r| r.get::<_, String>(0))?;
    Ok(lines.collect::<rusqlite::Result<Vec<_>>>()?.join("; "))
}

/// A value of the meta table.
pub fn meta(conn: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()
}

/// Sets a value of the meta table.
pub fn set_meta(conn: &Connection, key: &str, value: &str) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = ?2",
        [key, value],
    )?;
    Ok(())
}

/// The meta value under `key`, created with `make` on first use. Concurrent first uses
/// in several processes agree, because the insert keeps whichever value came first.
pub fn meta_or_init(
    conn: &Connection,
    key: &str,
    make: impl FnOnce() -> String,
) -> rusqlite::Result<String> {
    conn.execute(
        "INSERT OR IGNORE INTO meta (key, value) VALUES (?1, ?2)",
        [key, &make()],
    )?;
    conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
}

/// Milliseconds since the Unix epoch, the time unit of the DB.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_insert_once_and_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let pool = DbPool::new(&dir.path().join(DB_FILE)).unwrap();
        let s = SessionRow {
            token_hash: "h".into(),
            user_id: "user1".into(),
            ip: "127.0.0.1".into(),
            lobby: "127.0.0.1:7300".into(),
            created_ms: 1,
            last_used_ms: 1,
            revoked: false,
        };
        assert!(pool.with(|c| insert_session(c, &s)).unwrap());
        assert!(
            !pool.with(|c| insert_session(c, &s)).unwrap(),
            "a duplicate hash is a collision"
        );
        pool.with(|c| touch_sessions(c, &[("h".into(), 50)]))
            .unwrap();
        pool.with(|c| revoke(c, "h")).unwrap();
        let back = pool.with(|c| session(c, "h")).unwrap().unwrap();
        assert!(back.revoked);
        assert_eq!(back.last_used_ms, 50);
        assert_eq!(
            pool.with(|c| meta_or_init(c, "k", || "a".into())).unwrap(),
            "a"
        );
        assert_eq!(
            pool.with(|c| meta_or_init(c, "k", || "b".into())).unwrap(),
            "a"
        );
    }

    fn session_row(hash: &str, created_ms: i64, last_used_ms: i64) -> SessionRow {
        SessionRow {
            token_hash: hash.into(),
            user_id: "user1".into(),
            ip: "127.0.0.1".into(),
            lobby: "127.0.0.1:7300".into(),
            created_ms,
            last_used_ms,
            revoked: false,
        }
    }

    #[test]
    fn pruning_removes_revoked_and_dead_sessions_and_keeps_usable_ones() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(&dir.path().join(DB_FILE)).unwrap();
        let (unused_before, created_before) = (1_000, 500);
        let rows = [
            // In use: kept whatever its age.
            ("live", 0, 2_000),
            // Idle everywhere but young enough to refresh: kept.
            ("refreshable", 600, 100),
            // Idle and too old to refresh: nobody can use it any more.
            ("dead", 100, 200),
            // Revoked: gone whatever its times.
            ("revoked", 5_000, 5_000),
        ];
        for (hash, created, used) in rows {
            assert!(insert_session(&conn, &session_row(hash, created, used)).unwrap());
        }
        revoke(&conn, "revoked").unwrap();
        // More rows than one batch of 2 to prune, so the loop goes round.
        for i in 0..3 {
            let hash = format!("old{i}");
            assert!(insert_session(&conn, &session_row(&hash, 0, 0)).unwrap());
        }
        assert_eq!(
            prune_sessions(&conn, unused_before, created_before, 2).unwrap(),
            5
        );
        let left: Vec<String> = conn
            .prepare("SELECT token_hash FROM sessions ORDER BY token_hash")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(left, ["live", "refreshable"]);
        assert_eq!(
            prune_sessions(&conn, unused_before, created_before, 2).unwrap(),
            0
        );
        assert_eq!(integrity_check(&conn).unwrap(), "ok");
    }

    #[test]
    fn unfinished_matches_of_a_restarted_play_server_are_marked_aborted() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(&dir.path().join(DB_FILE)).unwrap();
        let (a, b) = ("127.0.0.1:7400", "127.0.0.1:7401");
        start_match(&conn, 1, a, 10).unwrap();
        start_match(&conn, 2, a, 10).unwrap();
        start_match(&conn, 3, b, 10).unwrap();
        start_match(&conn, 1, a, 99).unwrap();
        finish_match(&conn, 2).unwrap();
        assert_eq!(abort_unfinished_matches(&conn, a, 50).unwrap(), [1]);
        assert_eq!(match_aborted_ms(&conn, 1).unwrap(), Some(50));
        assert_eq!(match_aborted_ms(&conn, 2).unwrap(), None, "finished");
        assert_eq!(
            match_aborted_ms(&conn, 3).unwrap(),
            None,
            "another server's"
        );
        // A second restart finds nothing new, and keeps the first abort's time.
        assert!(abort_unfinished_matches(&conn, a, 60).unwrap().is_empty());
        assert_eq!(match_aborted_ms(&conn, 1).unwrap(), Some(50));
    }

    #[test]
    fn errors_name_the_file_and_keep_the_sqlite_cause() {
        use std::error::Error as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no-such-dir").join(DB_FILE);
        let err = open(&path).unwrap_err();
        let cause = err.source().expect("SQLite's error is the source");
        assert!(cause.is::<rusqlite::Error>());
        assert_eq!(err.to_string(), format!("{}: {cause}", path.display()));
    }
}
