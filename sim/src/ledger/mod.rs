//! The results ledger and `results.no_loss`: every `end` the clients saw, compared with
//! the user DB after the run.
//!
//! While the run goes on, the ledger takes every seat a client tries to take (a match
//! and a user), and every `end` a player receives: per match, once, each user's win or
//! loss, and each user's latest totals (wins, losses, rating, xp, level), from which the
//! rating and xp gained between two of its matches follow. A seat whose match never
//! showed its `end` to the client stays *unresolved*: the server may well have
//! committed a result for it that the client never saw.
//!
//! After the run ([`check`]), every match of the ledger must be in the DB's `matches`,
//! and every user's DB wins and losses must be at least the ledger's. When the simulator
//! seeded the users itself (embedded mode) they started from nothing, so it can demand
//! more ([`Mode::Exact`]): the DB may exceed the ledger by the unresolved seats at most
//! (by nothing when there are none), users the ledger never saw play must have no
//! results, and a user whose DB count of games equals that of its latest `end` must have
//! exactly that `end`'s rating, xp and level.
//!
//! A seat whose play connection died mid-match is unresolved, unless the server recorded
//! its match aborted (a restarted play server marks the matches it had opened and never
//! finished): an aborted match has no result, so its seats may not account for any, and
//! no client may have seen its `end`.

mod db;

use crate::net::lines::End;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Violations quoted in the run's output; the count covers the rest.
const PROBLEMS_SHOWN_MAX: usize = 5;

/// A user's totals, as an `end` announced them or as the DB holds them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Matches won.
    pub wins: i64,
    /// Matches lost.
    pub losses: i64,
    /// Rating.
    pub rating: i64,
    /// Experience.
    pub xp: i64,
    /// Level.
    pub level: i64,
}

impl Totals {
    fn games(&self) -> i64 {
        self.wins + self.losses
    }
}

/// What the ledger knows of one user.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Wins seen in `end` lines.
    pub wins: i64,
    /// Losses seen in `end` lines.
    pub losses: i64,
    /// Seats taken in matches whose `end` no client saw.
    pub unresolved: i64,
    /// The totals of the user's latest `end` (the one with the most games).
    pub latest: Option<Totals>,
}

#[derive(Debug, Default)]
struct Book {
    /// Matches whose `end` was recorded.
    ended: HashSet<u64>,
    /// Seats of matches whose `end` has not been seen yet, by match.
    seats: HashMap<u64, Seats>,
    users: HashMap<String, Tally>,
}

/// The seats taken in one match.
#[derive(Debug)]
struct Seats {
    users: Vec<String>,
    /// When the last of them was taken.
    last_at: Instant,
}

/// Every match result the clients saw; shared by all clients of a run.
#[derive(Debug, Default)]
pub struct Ledger {
    book: Mutex<Book>,
}

impl Ledger {
    fn book(&self) -> MutexGuard<'_, Book> {
        // Counters stay meaningful even if a client task panicked holding the lock.
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `user` is about to join `match_id`. From now on the server may count a result
    /// for the user in that match, even if the answer to the join gets lost.
    pub fn seat(&self, match_id: u64, user: &str) {
        let now = Instant::now();
        let mut book = self.book();
        if book.ended.contains(&match_id) {
            return;
        }
        let seats = book.seats.entry(match_id).or_insert_with(|| Seats {
            users: Vec::new(),
            last_at: now,
        });
        seats.users.push(user.to_string());
        seats.last_at = now;
    }

    /// The play server refused `user`'s join of `match_id`: no result will come of it.
    pub fn unseat(&self, match_id: u64, user: &str) {
        let mut book = self.book();
        if let Some(seats) = book.seats.get_mut(&match_id) {
            if let Some(position) = seats.users.iter().position(|u| u == user) {
                seats.users.swap_remove(position);
            }
            if seats.users.is_empty() {
                book.seats.remove(&match_id);
            }
        }
    }

    /// Records an `end`. Every player of a match gets the same one; only the first
    /// counts.
    pub fn ended(&self, end: &End) {
        let mut book = self.book();
        if !book.ended.insert(end.match_id) {
            return;
        }
        book.seats.remove(&end.match_id);
        for row in &end.results {
            let tally = book.users.entry(row.id.clone()).or_default();
            tally.wins += i64::from(row.won);
            tally.losses += i64::from(!row.won);
            let totals = Totals {
                wins: row.wins,
                losses: row.losses,
                rating: row.rating,
                xp: row.xp,
                level: row.level,
            };
            if tally
                .latest
                .is_none_or(|latest| totals.games() > latest.games())
            {
                tally.latest = Some(totals);
            }
        }
    }

    /// The matches whose `end` was seen, and every user's tally with its unresolved
    /// seats counted in.
    pub fn snapshot(&self) -> Snapshot {
        let book = self.book();
        let mut users = book.users.clone();
        for user in book.seats.values().flat_map(|seats| &seats.users) {
            users.entry(user.clone()).or_default().unresolved += 1;
        }
        Snapshot {
            matches: book.ended.iter().copied().collect(),
            unresolved_matches: book.seats.keys().copied().collect(),
            last_unresolved_seat_at: book.seats.values().map(|seats| seats.last_at).max(),
            unresolved_seats: book
                .seats
                .iter()
                .map(|(&id, seats)| (id, seats.users.clone()))
                .collect(),
            users,
        }
    }
}

/// The ledger at one moment.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Matches whose `end` a client saw.
    pub matches: Vec<u64>,
    /// Matches a client took a seat in without seeing their `end`.
    pub unresolved_matches: Vec<u64>,
    /// When the last seat of those matches was taken.
    pub last_unresolved_seat_at: Option<Instant>,
    /// The users seated in each of those matches.
    pub unresolved_seats: HashMap<u64, Vec<String>>,
    /// Every user seen in an `end` or a seat.
    pub users: HashMap<String, Tally>,
}

impl Snapshot {
    /// This snapshot as another process receives it, taken at `now`.
    pub fn to_wire(&self, now: Instant) -> WireLedger {
        WireLedger {
            matches: self.matches.clone(),
            unresolved_matches: self.unresolved_matches.clone(),
            last_unresolved_seat_ago_ms: self
                .last_unresolved_seat_at
                .map(|at| now.saturating_duration_since(at).as_millis() as u64),
            unresolved_seats: self.unresolved_seats.clone(),
            users: self.users.clone(),
        }
    }
}

/// A ledger snapshot sent by a process that cannot read the user DB (an agent on
/// another host, a worker) to the coordinator, which can. The one instant in it is
/// carried as an age, so that the two processes' clocks never meet.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireLedger {
    /// Matches whose `end` a client saw.
    pub matches: Vec<u64>,
    /// Matches a client took a seat in without seeing their `end`.
    pub unresolved_matches: Vec<u64>,
    /// How long before the snapshot the last seat of those matches was taken, ms.
    pub last_unresolved_seat_ago_ms: Option<u64>,
    /// The users seated in each of those matches.
    pub unresolved_seats: HashMap<u64, Vec<String>>,
    /// Every user seen in an `end` or a seat.
    pub users: HashMap<String, Tally>,
}

impl WireLedger {
    /// The snapshot, received at `now`; off by the message's transit time at most.
    pub fn into_snapshot(self, now: Instant) -> Snapshot {
        Snapshot {
            matches: self.matches,
            unresolved_matches: self.unresolved_matches,
            last_unresolved_seat_at: self
                .last_unresolved_seat_ago_ms
                .map(|ago| now.checked_sub(Duration::from_millis(ago)).unwrap_or(now)),
            unresolved_seats: self.unresolved_seats,
            users: self.users,
        }
    }
}

/// How strictly the DB must agree with the ledger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Users started from no results and only this run played: the DB must equal the
    /// ledger, up to its unresolved seats.
    Exact,
    /// Others may play too (`--target`): the DB must hold at least what the ledger saw.
    AtLeast,
}

/// The DB's side: which of the ledger's matches it holds, and users' totals.
#[derive(Clone, Debug, Default)]
pub struct DbView {
    /// The ledger's matches found in `matches`.
    pub matches: HashSet<u64>,
    /// The ledger's matches, ended or unresolved, that the DB records as aborted.
    pub aborted: HashSet<u64>,
    /// The unresolved matches found in `matches`: committed, their `end` unseen.
    pub unresolved_committed: HashSet<u64>,
    /// Totals by user: the ledger's users, and in exact mode every user with a result.
    pub users: HashMap<String, Totals>,
}

/// The outcome of `results.no_loss`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Matches and users checked.
    pub checked: u64,
    /// Matches and users that disagree.
    pub violations: u64,
    /// The first few disagreements, in words.
    pub problems: Vec<String>,
    /// Matches a client was seated in that the DB records as aborted (their play server
    /// died mid-match), each checked to have no result.
    pub aborted: u64,
}

impl Verdict {
    fn judge(&mut self, problem: Option<String>) {
        self.checked += 1;
        if let Some(problem) = problem {
            self.violations += 1;
            if self.problems.len() < PROBLEMS_SHOWN_MAX {
                self.problems.push(problem);
            }
        }
    }
}

/// Compares the ledger with the DB, for the users `owns` says this process's clients
/// played (all of them in a run of one process). Every match seen must be in the DB.
pub fn compare(ledger: &Snapshot, db: &DbView, mode: Mode, owns: impl Fn(&str) -> bool) -> Verdict {
    let mut verdict = Verdict::default();
    let mut matches = ledger.matches.clone();
    matches.sort_unstable();
    for id in matches {
        let problem = if !db.matches.contains(&id) {
            Some(format!(
                "match {id} ended for a client but is not in the DB"
            ))
        } else if db.aborted.contains(&id) {
            Some(format!(
                "match {id} ended for a client but the DB records it aborted"
            ))
        } else {
            None
        };
        verdict.judge(problem);
    }
    // An aborted match must have no result at all.
    let mut aborted: Vec<u64> = ledger
        .unresolved_matches
        .iter()
        .copied()
        .filter(|id| db.aborted.contains(id))
        .collect();
    aborted.sort_unstable();
    verdict.aborted = aborted.len() as u64;
    for &id in &aborted {
        let both = db.unresolved_committed.contains(&id);
        verdict.judge(both.then(|| format!("match {id} has results but is recorded aborted")));
    }
    // Seats in aborted matches account for no result.
    let mut seats_aborted: HashMap<&str, i64> = HashMap::new();
    for id in &aborted {
        for user in ledger.unresolved_seats.get(id).into_iter().flatten() {
            *seats_aborted.entry(user.as_str()).or_default() += 1;
        }
    }
    // Another process's users show up in the ends of shared matches, but only that
    // process saw every match they played.
    let mut users: Vec<&String> = ledger.users.keys().filter(|u| owns(u)).collect();
    if mode == Mode::Exact {
        users.extend(
            db.users
                .keys()
                .filter(|u| !ledger.users.contains_key(*u) && owns(u)),
        );
    }
    users.sort_unstable();
    for user in users {
        let mut tally = ledger.users.get(user).copied().unwrap_or_default();
        tally.unresolved -= seats_aborted.get(user.as_str()).copied().unwrap_or(0);
        verdict.judge(user_problem(user, &tally, db.users.get(user), mode));
    }
    verdict
}

fn user_problem(user: &str, tally: &Tally, db: Option<&Totals>, mode: Mode) -> Option<String> {
    let seen = tally.wins + tally.losses;
    let Some(db) = db else {
        return (seen > 0).then(|| format!("{user} has results in the ledger but no DB row"));
    };
    if db.wins < tally.wins || db.losses < tally.losses {
        return Some(format!(
            "{user}: the DB has {}/{} wins/losses, clients saw {}/{}: results lost",
            db.wins, db.losses, tally.wins, tally.losses
        ));
    }
    if mode == Mode::AtLeast {
        return None;
    }
    let unseen = db.games() - seen;
    if unseen > tally.unresolved {
        return Some(format!(
            "{user}: the DB has {unseen} result(s) more than clients saw, with {} seat(s) unresolved",
            tally.unresolved
        ));
    }
    match tally.latest {
        Some(latest) if latest.games() == db.games() && latest != *db => Some(format!(
            "{user}: the DB holds {db:?}, its latest end announced {latest:?}"
        )),
        _ => None,
    }
}

/// The user DB's file name in the topology's data folder (next to topology.json).
pub const DB_FILE: &str = "catwar.db";

/// `PRAGMA integrity_check` of the DB at `db_path`, read-only, off the async threads:
/// `ok` or SQLite's list of problems.
pub async fn integrity(db_path: &Path) -> Result<String, CheckError> {
    let path = db_path.to_path_buf();
    let read = tokio::task::spawn_blocking(move || db::integrity(&path));
    let result = read.await.expect("the integrity check does not panic");
    result.map_err(|source| CheckError {
        path: db_path.to_path_buf(),
        source,
    })
}

/// Waits until the DB at `db_path` holds a match result of the play server at `play`
/// committed after this call, or `timeout` passes; true if one came. Off the async
/// threads.
pub async fn wait_for_match_end(
    db_path: &Path,
    play: std::net::SocketAddr,
    timeout: Duration,
) -> Result<bool, CheckError> {
    let path = db_path.to_path_buf();
    let play = play.to_string();
    let wait = tokio::task::spawn_blocking(move || db::wait_for_match_end(&path, &play, timeout));
    let result = wait.await.expect("waiting for a match end does not panic");
    result.map_err(|source| CheckError {
        path: db_path.to_path_buf(),
        source,
    })
}

/// Why the DB could not be compared.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the user DB at {}", path.display())]
pub struct CheckError {
    /// The DB file.
    pub path: PathBuf,
    /// What failed.
    #[source]
    pub source: rusqlite::Error,
}

/// Checks `results.no_loss` of a ledger's `snapshot` against the DB at `db_path`, opened
/// read-only. In exact
/// mode it first lets the topology go idle as far as this run's users go: it waits
/// until every match with unresolved seats is committed, or until `match_length` has
/// passed since the last such seat was taken, when those matches would have ended.
/// The comparison holds either way (an unresolved seat may or may not have a result);
/// waiting makes the DB final. `owns` tells this process's users from those of other
/// worker processes, which check their own.
pub async fn check(
    snapshot: Snapshot,
    db_path: &Path,
    mode: Mode,
    match_length: Duration,
    owns: impl Fn(&str) -> bool + Send + 'static,
) -> Result<Verdict, CheckError> {
    let settle_until = snapshot
        .last_unresolved_seat_at
        .map_or_else(Instant::now, |at| at + match_length);
    let path = db_path.to_path_buf();
    let read = tokio::task::spawn_blocking(move || {
        let view = db::read(&path, &snapshot, mode, settle_until)?;
        Ok(compare(&snapshot, &view, mode, owns))
    });
    let result = read.await.expect("the DB check does not panic");
    result.map_err(|source| CheckError {
        path: db_path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests;
