//! The ledger's bookkeeping and its comparison with a DB, exact and at-least.

use super::*;
use crate::net::lines::PlayerResult;

/// A check made by the only process of a run: every user is its own.
fn everyone(_: &str) -> bool {
    true
}

/// An `end` of `match_id` where `winner` beat `losers`, with totals as if each user had
/// played `games` matches before.
fn end(match_id: u64, winner: &str, losers: &[&str], games: i64) -> End {
    let row = |player: u64, id: &str, won: bool| PlayerResult {
        player,
        id: id.to_string(),
        won,
        wins: if won { games + 1 } else { 0 },
        losses: if won { 0 } else { games + 1 },
        rating: 1000,
        xp: 10 * (games + 1),
        level: 1,
    };
    let mut results = vec![row(0, winner, true)];
    results.extend((1..).zip(losers).map(|(p, id)| row(p, id, false)));
    End {
        match_id,
        winner: 0,
        results,
    }
}

fn totals(wins: i64, losses: i64, xp: i64) -> Totals {
    Totals {
        wins,
        losses,
        rating: 1000,
        xp,
        level: 1,
    }
}

/// The DB as it should be after `ledger`: every match, and each user's latest totals.
fn faithful_db(ledger: &Snapshot) -> DbView {
    DbView {
        matches: ledger.matches.iter().copied().collect(),
        users: ledger
            .users
            .iter()
            .filter_map(|(user, tally)| Some((user.clone(), tally.latest?)))
            .collect(),
        ..DbView::default()
    }
}

#[test]
fn every_end_counts_once_and_resolves_its_seats() {
    let ledger = Ledger::default();
    for user in ["a", "b", "c"] {
        ledger.seat(7, user);
    }
    ledger.seat(8, "a");
    let first = end(7, "a", &["b", "c"], 0);
    ledger.ended(&first);
    ledger.ended(&first);
    // A seat recorded after its match ended (a slow client) resolves at once.
    ledger.seat(7, "c");
    let snapshot = ledger.snapshot();
    assert_eq!(snapshot.matches, vec![7]);
    assert_eq!(snapshot.unresolved_matches, vec![8]);
    let a = snapshot.users["a"];
    assert_eq!((a.wins, a.losses, a.unresolved), (1, 0, 1));
    assert_eq!(a.latest, Some(totals(1, 0, 10)));
    let c = snapshot.users["c"];
    assert_eq!((c.wins, c.losses, c.unresolved), (0, 1, 0));
}

#[test]
fn refused_seats_are_forgotten_and_the_latest_totals_win() {
    let ledger = Ledger::default();
    ledger.seat(3, "a");
    ledger.unseat(3, "a");
    ledger.unseat(4, "nobody");
    assert!(ledger.snapshot().unresolved_matches.is_empty());
    // Two ends of one user arrive out of order: the one with more games is the latest.
    ledger.ended(&end(5, "a", &["b"], 1));
    ledger.ended(&end(4, "a", &["b"], 0));
    assert_eq!(ledger.snapshot().users["a"].latest, Some(totals(2, 0, 20)));
}

#[test]
fn a_faithful_db_passes_both_modes() {
    let ledger = Ledger::default();
    ledger.ended(&end(1, "a", &["b"], 0));
    ledger.ended(&end(2, "c", &["d"], 0));
    let snapshot = ledger.snapshot();
    let mut db = faithful_db(&snapshot);
    db.users.insert("idle".into(), totals(0, 0, 0));
    for mode in [Mode::Exact, Mode::AtLeast] {
        let verdict = compare(&snapshot, &db, mode, everyone);
        assert_eq!(verdict.violations, 0, "{mode:?}: {:?}", verdict.problems);
    }
    // Two matches and four users (plus, in exact mode, the DB's idle one).
    assert_eq!(compare(&snapshot, &db, Mode::AtLeast, everyone).checked, 6);
    assert_eq!(compare(&snapshot, &db, Mode::Exact, everyone).checked, 7);
}

#[test]
fn a_lost_match_or_lost_result_is_a_violation_in_both_modes() {
    let ledger = Ledger::default();
    ledger.ended(&end(1, "a", &["b"], 0));
    let snapshot = ledger.snapshot();
    let mut db = faithful_db(&snapshot);
    db.matches.clear();
    db.users.insert("b".into(), totals(0, 0, 0));
    for mode in [Mode::Exact, Mode::AtLeast] {
        let verdict = compare(&snapshot, &db, mode, everyone);
        assert_eq!(verdict.violations, 2, "{mode:?}");
        assert!(
            verdict.problems[0].contains("match 1"),
            "{:?}",
            verdict.problems
        );
        assert!(
            verdict.problems[1].contains("lost"),
            "{:?}",
            verdict.problems
        );
    }
    db.users.remove("b");
    let verdict = compare(&snapshot, &db, Mode::AtLeast, everyone);
    assert!(verdict.problems.iter().any(|p| p.contains("no DB row")));
}

#[test]
fn extra_results_need_unresolved_seats_in_exact_mode_only() {
    let ledger = Ledger::default();
    ledger.ended(&end(1, "a", &["b"], 0));
    let snapshot = ledger.snapshot();
    let mut db = faithful_db(&snapshot);
    db.users.insert("a".into(), totals(2, 0, 20));
    db.users.insert("stranger".into(), totals(0, 1, 10));
    let exact = compare(&snapshot, &db, Mode::Exact, everyone);
    assert_eq!(exact.violations, 2, "{:?}", exact.problems);
    assert_eq!(
        compare(&snapshot, &db, Mode::AtLeast, everyone).violations,
        0
    );
    // With a seat unresolved, one result more than seen is what that seat may have cost.
    ledger.seat(2, "a");
    ledger.seat(2, "stranger");
    let unresolved = compare(&ledger.snapshot(), &db, Mode::Exact, everyone);
    assert_eq!(unresolved.violations, 0, "{:?}", unresolved.problems);
}

#[test]
fn seats_of_an_aborted_match_may_account_for_no_result() {
    let ledger = Ledger::default();
    ledger.ended(&end(1, "a", &["b"], 0));
    // a's and b's next match died with its play server: no `end`, seats unresolved.
    ledger.seat(2, "a");
    ledger.seat(2, "b");
    let snapshot = ledger.snapshot();
    let mut db = faithful_db(&snapshot);
    // Without the server's word the seats may or may not have a result.
    db.users.insert("a".into(), totals(2, 0, 20));
    assert_eq!(compare(&snapshot, &db, Mode::Exact, everyone).violations, 0);
    // Recorded aborted, they may not: a's second win is a partial result.
    db.aborted.insert(2);
    let verdict = compare(&snapshot, &db, Mode::Exact, everyone);
    assert_eq!(verdict.violations, 1, "{:?}", verdict.problems);
    assert!(
        verdict.problems[0].starts_with("a:"),
        "{:?}",
        verdict.problems
    );
    db.users.insert("a".into(), totals(1, 0, 10));
    let clean = compare(&snapshot, &db, Mode::Exact, everyone);
    assert_eq!(clean.violations, 0, "{:?}", clean.problems);
    // One match, two users, and the aborted match itself.
    assert_eq!((clean.checked, clean.aborted), (4, 1));
    // An aborted match with results, or one a client saw end, contradicts itself.
    db.unresolved_committed.insert(2);
    let both = compare(&snapshot, &db, Mode::AtLeast, everyone);
    assert!(both.problems.iter().any(|p| p.contains("recorded aborted")));
    db.aborted.insert(1);
    let ended = compare(&snapshot, &db, Mode::AtLeast, everyone);
    assert!(ended.problems.iter().any(|p| p.contains("match 1 ended")));
}

#[test]
fn a_worker_leaves_other_workers_users_to_them_in_exact_mode() {
    let ledger = Ledger::default();
    ledger.ended(&end(1, "a", &["b"], 0));
    let snapshot = ledger.snapshot();
    let mut db = faithful_db(&snapshot);
    db.users.insert("theirs".into(), totals(0, 1, 10));
    let mine_only = |user: &str| user != "theirs" && user != "b";
    assert_eq!(
        compare(&snapshot, &db, Mode::Exact, mine_only).violations,
        0
    );
    assert_eq!(compare(&snapshot, &db, Mode::Exact, everyone).violations, 1);
    // "b" lost match 1 beside "a", but its own process saw its other matches: its
    // one result here is not compared, whatever the DB holds for it.
    db.users.insert("b".into(), totals(3, 4, 70));
    assert_eq!(
        compare(&snapshot, &db, Mode::Exact, mine_only).violations,
        0
    );
}

#[test]
fn the_db_must_hold_the_totals_of_the_latest_end_in_exact_mode() {
    let ledger = Ledger::default();
    ledger.ended(&end(1, "a", &["b"], 0));
    let snapshot = ledger.snapshot();
    let mut db = faithful_db(&snapshot);
    db.users.insert(
        "a".into(),
        Totals {
            rating: 999,
            ..totals(1, 0, 10)
        },
    );
    let verdict = compare(&snapshot, &db, Mode::Exact, everyone);
    assert_eq!(verdict.violations, 1);
    assert!(
        verdict.problems[0].contains("latest end"),
        "{:?}",
        verdict.problems
    );
}

#[test]
fn problems_shown_are_bounded_but_all_are_counted() {
    let ledger = Ledger::default();
    for id in 0..20 {
        ledger.ended(&end(id, &format!("w{id}"), &[], 0));
    }
    let verdict = compare(
        &ledger.snapshot(),
        &DbView::default(),
        Mode::AtLeast,
        everyone,
    );
    assert_eq!(verdict.violations, 40);
    assert_eq!(verdict.problems.len(), PROBLEMS_SHOWN_MAX);
}

#[tokio::test]
async fn check_reads_a_live_sqlite_db_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catwar.db");
    let db = rusqlite::Connection::open(&path).unwrap();
    db.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE users (id TEXT PRIMARY KEY, phc TEXT, level INTEGER, xp INTEGER,
             rating INTEGER, wins INTEGER, losses INTEGER);
         CREATE TABLE matches (id INTEGER PRIMARY KEY, play TEXT, ended_ms INTEGER,
             ticks INTEGER, winner TEXT, results TEXT);
         INSERT INTO users VALUES ('a', '', 1, 10, 1000, 1, 0), ('b', '', 1, 10, 1000, 0, 1),
             ('c', '', 1, 0, 1000, 0, 0);
         INSERT INTO matches VALUES (1, 'p', 0, 10, 'a', '[]');",
    )
    .unwrap();
    let ledger = Ledger::default();
    ledger.ended(&end(1, "a", &["b"], 0));
    let match_length = Duration::from_millis(300);
    let verdict = check(ledger.snapshot(), &path, Mode::Exact, match_length, everyone)
        .await
        .unwrap();
    assert_eq!(
        (verdict.checked, verdict.violations),
        (3, 0),
        "{:?}",
        verdict.problems
    );
    // An unresolved seat holds the exact check until its match commits ...
    ledger.seat(3, "c");
    let writer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        db.execute("INSERT INTO matches VALUES (3, 'p', 0, 10, 'c', '[]')", [])
            .unwrap();
    });
    let started = Instant::now();
    let verdict = check(ledger.snapshot(), &path, Mode::Exact, match_length, everyone)
        .await
        .unwrap();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(50) && waited < match_length,
        "{waited:?}"
    );
    assert_eq!(verdict.violations, 0, "{:?}", verdict.problems);
    writer.await.unwrap();
    // ... or until its match would have ended, if it never commits.
    ledger.seat(4, "c");
    let started = Instant::now();
    check(ledger.snapshot(), &path, Mode::Exact, match_length, everyone)
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(250));
    // ... or until it is recorded aborted, which settles it too.
    let db = rusqlite::Connection::open(&path).unwrap();
    db.execute_batch(
        "CREATE TABLE unfinished_matches (id INTEGER PRIMARY KEY, play TEXT,
             started_ms INTEGER, aborted_ms INTEGER);
         INSERT INTO unfinished_matches VALUES (4, 'p', 0, 1);",
    )
    .unwrap();
    let started = Instant::now();
    let verdict = check(ledger.snapshot(), &path, Mode::Exact, match_length, everyone)
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_millis(250));
    assert_eq!(verdict.violations, 0, "{:?}", verdict.problems);
    assert_eq!(integrity(&path).await.unwrap(), "ok");
    // A match the clients saw end that the DB lacks.
    ledger.ended(&end(2, "c", &[], 0));
    let verdict = check(ledger.snapshot(), &path, Mode::AtLeast, match_length, everyone)
        .await
        .unwrap();
    assert_eq!(verdict.violations, 2, "{:?}", verdict.problems);
    let none = dir.path().join("none.db");
    let missing = check(ledger.snapshot(), &none, Mode::AtLeast, match_length, everyone).await;
    assert!(missing.unwrap_err().to_string().contains("none.db"));
}
