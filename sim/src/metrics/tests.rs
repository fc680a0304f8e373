//! Recording, merging and draining measurements across shards.

use super::totals::{ERROR_CODES_MAX, ERROR_CODE_OVERFLOW};
use super::*;
use std::time::Duration;

#[test]
fn records_merge_across_shards_and_intervals_drain() {
    let start = Instant::now();
    let metrics = Metrics::new(start);
    for client in 0..40u64 {
        let recorder = metrics.recorder(client);
        let latency = Duration::from_micros(1000 + client * 100);
        recorder.success(Step::UpdateCheck, start, start + latency);
        if client % 10 == 0 {
            recorder.failure(Step::FileDownload, "io");
            recorder.invariant(Invariant::DownloadsSha256, client == 20);
        }
    }
    let (first, _) = metrics.close_interval();
    assert_eq!(first.t_s, 0);
    assert_eq!(first.steps[Step::UpdateCheck.index()].requests, 40);
    assert_eq!(first.steps[Step::FileDownload.index()].errors, 4);
    let (second, _) = metrics.close_interval();
    assert_eq!(second.t_s, 1);
    assert_eq!(second.steps[Step::UpdateCheck.index()].requests, 0);
    assert_eq!(second.steps[Step::UpdateCheck.index()].p99_us, None);

    let snapshot = metrics.snapshot();
    let check = &snapshot.steps[Step::UpdateCheck.index()];
    assert_eq!(
        (check.count, check.errors, check.latency.len()),
        (40, 0, 40)
    );
    assert_eq!(check.latency.max(), check.latency.highest_equivalent(4900));
    let download = &snapshot.steps[Step::FileDownload.index()];
    assert_eq!(download.errors_by_code.get("io"), Some(&4));
    let sha = snapshot.invariants[Invariant::DownloadsSha256.index()];
    assert_eq!((sha.checked, sha.violations), (4, 1));
    assert_eq!(snapshot.series.len(), 2);
}

#[test]
fn expected_refusals_are_successes_counted_by_code() {
    let start = Instant::now();
    let metrics = Metrics::new(start);
    let recorder = metrics.recorder(3);
    let done = start + Duration::from_millis(2);
    recorder.expected(Step::Login, "login_failed", start, done);
    recorder.success(Step::Login, start, done);
    recorder.failure(Step::Login, "busy");
    let (point, _) = metrics.close_interval();
    assert_eq!(point.steps[Step::Login.index()].requests, 3);
    assert_eq!(point.steps[Step::Login.index()].errors, 1);
    let login = &metrics.snapshot().steps[Step::Login.index()];
    assert_eq!((login.count, login.errors, login.latency.len()), (3, 1, 2));
    assert_eq!(login.expected_by_code.get("login_failed"), Some(&1));
    assert_eq!(login.errors_by_code.get("busy"), Some(&1));
}

#[test]
fn tokens_are_unique_across_clients_and_shards() {
    let metrics = Metrics::new(Instant::now());
    let token = |n: u8| {
        let hex = format!("{n:02x}").repeat(32);
        TokenPrefix::of(&hex).unwrap()
    };
    for client in 0..40u64 {
        metrics.recorder(client).token_issued(token(client as u8));
    }
    // Client 1 is handed client 21's token again, from another shard.
    metrics.recorder(1).token_issued(token(21));
    let unique = metrics.snapshot().invariants[Invariant::TokensUnique.index()];
    assert_eq!((unique.checked, unique.violations), (41, 1));
}

#[test]
fn error_codes_are_bounded() {
    let mut totals = StepTotals::new();
    for n in 0..(ERROR_CODES_MAX + 10) {
        totals.add_error(&format!("code{n}"));
    }
    totals.add_error(&"x".repeat(500));
    assert_eq!(totals.errors, ERROR_CODES_MAX as u64 + 11);
    assert_eq!(totals.errors_by_code.len(), ERROR_CODES_MAX + 1);
    assert_eq!(totals.errors_by_code[ERROR_CODE_OVERFLOW], 11);
}

#[test]
fn kill_windows_see_picks_from_every_shard() {
    let start = Instant::now();
    let metrics = Metrics::new(start);
    let at = |ms| start + Duration::from_millis(ms);
    metrics.recorder(1).pick(at(900), 1);
    metrics.mark_kill(at(1000));
    metrics.recorder(2).storage_unavailable(at(1100));
    metrics.recorder(3).pick(at(1600), 2);
    let windows = metrics.snapshot().kill_windows;
    assert_eq!(windows.len(), 1);
    let gap = windows[0].gap();
    assert_eq!(gap.gap_ms, Some(700.0));
    assert_eq!(gap.unavailable, 1);
}

#[test]
fn late_records_are_errors_whose_latency_still_counts() {
    let start = Instant::now();
    let metrics = Metrics::new(start);
    let recorder = metrics.recorder(5);
    recorder.success(
        Step::PlayTickInterval,
        start,
        start + Duration::from_millis(50),
    );
    recorder.late(
        Step::PlayTickInterval,
        "tick_late",
        start,
        start + Duration::from_millis(90),
    );
    let (point, _) = metrics.close_interval();
    let figures = point.steps[Step::PlayTickInterval.index()];
    assert_eq!((figures.requests, figures.errors), (2, 1));
    let ticks = &metrics.snapshot().steps[Step::PlayTickInterval.index()];
    assert_eq!((ticks.count, ticks.errors, ticks.latency.len()), (2, 1, 2));
    assert!(
        ticks.latency.max() >= 89_000,
        "the late interval is in the histogram"
    );
    assert_eq!(ticks.errors_by_code.get("tick_late"), Some(&1));
}

#[test]
fn run_wide_invariant_checks_add_to_the_clients_ones() {
    let metrics = Metrics::new(Instant::now());
    metrics
        .recorder(3)
        .invariant(Invariant::ResultsNoLoss, false);
    let count = InvariantCount {
        checked: 10,
        violations: 2,
    };
    metrics.add_invariant(Invariant::ResultsNoLoss, count);
    let total = metrics.snapshot().invariants[Invariant::ResultsNoLoss.index()];
    assert_eq!((total.checked, total.violations), (11, 2));
}
