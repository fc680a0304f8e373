//! Tests of the report: histograms, percentiles, verdicts and the JSON round trip.

use super::*;
use crate::metrics::{latency_histogram, StepTotals};
use crate::threshold::Threshold;
use crate::{EXIT_INVARIANT_VIOLATED, EXIT_OK, EXIT_THRESHOLD_FAILED};

fn totals(latencies_us: &[u64], errors: u64) -> StepTotals {
    let mut latency = latency_histogram();
    for &us in latencies_us {
        latency.record(us).unwrap();
    }
    let errors_by_code = if errors > 0 {
        BTreeMap::from([("io".to_string(), errors)])
    } else {
        BTreeMap::new()
    };
    StepTotals {
        latency,
        count: latencies_us.len() as u64 + errors,
        errors,
        errors_by_code,
        expected_by_code: BTreeMap::new(),
    }
}

fn report(check: &StepTotals, violations: u64) -> Report {
    Report {
        schema: REPORT_SCHEMA.to_string(),
        scenario: ScenarioInfo {
            name: "t".into(),
            seed: 1,
            path: "t.toml".into(),
            text: String::new(),
        },
        started_at_unix_ms: 0,
        duration_s: 1.0,
        interrupted: false,
        environment: Environment::current("embedded".to_string()),
        server: ServerInfo {
            argon2: "fast".into(),
            token_idle_s: 600,
            users: 10,
            players_per_match: 4,
            match_fill_timeout_s: 5,
            match_ticks: 600,
            tick_hz: 20,
            observer_backend: "process".into(),
            play_servers: 2,
            applied: true,
            read_from_target: false,
        },
        steps: BTreeMap::from([("update.check".to_string(), StepReport::from_totals(check))]),
        errors_by_code: BTreeMap::new(),
        timeseries: Timeseries {
            interval_ms: INTERVAL_MS,
            points: Vec::new(),
        },
        faults: Vec::new(),
        failover: FailoverSummary::default(),
        invariants: vec![InvariantReport {
            name: "downloads.sha256".into(),
            checked: 5,
            violations,
        }],
        funnel: Vec::new(),
        arrivals: None,
        knee: None,
        sim: SimUsage::default(),
        services: Vec::new(),
        thresholds: Vec::new(),
        abort: None,
        exit_code: 0,
    }
}

/// A judged report of a 10 s run named `name`, with a per-second series for two
/// steps, errors in one second and a balancer kill at 4.2 s.
pub(in crate::report) fn sample_report(name: &str) -> Report {
    let mut sample = report(&totals(&[1_000, 2_000, 40_000], 2), 0);
    sample.scenario.name = name.to_string();
    sample.duration_s = 10.0;
    sample.steps.insert(
        "login".to_string(),
        StepReport::from_totals(&totals(&[9_000; 4], 0)),
    );
    sample.timeseries.points = (0..10)
        .map(|t| {
            let step = |requests, errors, p99_us| TimeStep {
                requests,
                errors,
                p99_us,
                ..TimeStep::default()
            };
            let slow = if t == 4 { 250_000 } else { 2_000 + 100 * t };
            TimePoint {
                t_s: t,
                steps: BTreeMap::from([
                    (
                        "update.check".to_string(),
                        step(100 + t, u64::from(t == 4) * 7, Some(slow)),
                    ),
                    ("login".to_string(), step(20, 0, Some(9_000))),
                    ("logout".to_string(), step(0, 0, None)),
                ]),
                load: LoadPoint {
                    active: 50,
                    ..LoadPoint::default()
                },
            }
        })
        .collect();
    sample.faults = vec![FaultRecord {
        at_s: 4.0,
        executed_at_ms: 4_200.0,
        action: "kill".into(),
        for_s: None,
        service: "balancer-1".into(),
        pid: Some(4242),
        ok: true,
        detail: None,
        back_after_ms: Some(1_012.4),
        integrity: Some("ok".into()),
    }];
    sample.judge(&[Threshold::parse("update.check.p99", "< 100ms").unwrap()]);
    sample
}

#[test]
fn histogram_survives_serialization_exactly() {
    let step = totals(&[1, 150, 2_500, 2_500, 999_999, 59_000_000], 0);
    let decoded = decode_histogram(&StepReport::from_totals(&step).hist).unwrap();
    assert_eq!(decoded, step.latency);
    assert_eq!(
        decoded.value_at_quantile(0.5),
        step.latency.value_at_quantile(0.5)
    );
    assert!(decode_histogram("not base64!").is_err());
    assert!(decode_histogram("aGVsbG8=").is_err());
}

#[test]
fn percentiles_are_null_without_successful_samples() {
    let step = StepReport::from_totals(&totals(&[], 3));
    assert_eq!(
        (step.count, step.errors, step.p99_us, step.max_us),
        (3, 3, None, None)
    );
}

#[test]
fn invariant_violation_takes_precedence_over_failed_threshold() {
    let slow = totals(&[200_000; 10], 0);
    let thresholds = [Threshold::parse("update.check.p99", "< 100ms").unwrap()];
    let mut failing = report(&slow, 0);
    failing.judge(&thresholds);
    assert_eq!(failing.exit_code, EXIT_THRESHOLD_FAILED);
    assert!(!failing.thresholds[0].pass);
    let mut violated = report(&slow, 1);
    violated.judge(&thresholds);
    assert_eq!(violated.exit_code, EXIT_INVARIANT_VIOLATED);
    let mut passing = report(&totals(&[5_000; 10], 0), 0);
    passing.judge(&thresholds);
    assert_eq!(passing.exit_code, EXIT_OK);
}

#[test]
fn errors_rate_counts_failed_over_all_requests() {
    let mut with_errors = report(&totals(&[1_000; 90], 10), 0);
    with_errors.judge(&[Threshold::parse("errors.rate", "< 5%").unwrap()]);
    assert_eq!(with_errors.thresholds[0].actual, Some(10.0));
    assert_eq!(with_errors.exit_code, EXIT_THRESHOLD_FAILED);
}

#[test]
fn errors_rate_leaves_out_the_ticks_a_server_pushes() {
    let mut report = report(&totals(&[1_000; 90], 10), 0);
    // 10,000 late ticks are no failed requests, and 100,000 ticks no requests at all.
    let mut ticks = report.steps["update.check"].clone();
    ticks.count = 100_000;
    ticks.errors = 10_000;
    report.steps.insert("play.tick_interval".into(), ticks);
    report.judge(&[Threshold::parse("errors.rate", "< 5%").unwrap()]);
    assert_eq!(report.thresholds[0].actual, Some(10.0));
}

#[test]
fn threshold_actuals_carry_their_unit() {
    let mut report = report(&totals(&[1_000, 2_000, 15_000], 1), 0);
    report.judge(&[
        Threshold::parse("update.check.max", "< 100ms").unwrap(),
        Threshold::parse("errors.rate", "< 50%").unwrap(),
        Threshold::parse("update.check.count", "> 2").unwrap(),
    ]);
    let summary = report.summary();
    for line in [
        "update.check.max < 100ms (actual 15.0",
        "errors.rate < 50% (actual 25.000 %)",
        "update.check.count > 2 (actual 4)",
    ] {
        assert!(summary.contains(line), "no {line:?} in:\n{summary}");
    }
    let max_line = summary.lines().find(|l| l.contains("update.check.max")).unwrap();
    assert!(max_line.ends_with(" ms)"), "{max_line}");
}

#[test]
fn report_round_trips_through_json_and_summarizes() {
    let mut original = report(&totals(&[1_000, 2_000], 1), 0);
    original.judge(&[Threshold::parse("update.check.count", "== 3").unwrap()]);
    let dir = tempfile::tempdir().unwrap();
    let path = original.write(dir.path()).unwrap();
    let text = std::fs::read_to_string(path).unwrap();
    let read: Report = serde_json::from_str(&text).unwrap();
    assert_eq!(read.schema, REPORT_SCHEMA);
    assert_eq!(read.steps, original.steps);
    let summary = read.summary();
    assert!(
        summary.contains("update.check") && summary.contains("threshold pass"),
        "{summary}"
    );
}

#[test]
fn faults_are_summarized_with_how_long_the_service_was_away() {
    let mut sample = sample_report("faults");
    let summary = sample.summary();
    assert!(
        summary.contains("faults: kill balancer-1 at 4.2 s (back after 1012 ms; db ok)"),
        "{summary}"
    );
    sample.faults[0].back_after_ms = None;
    sample.faults[0].integrity = None;
    let summary = sample.summary();
    assert!(summary.contains("(not back before the end)"), "{summary}");
    sample.faults[0].service = "observer".into();
    let summary = sample.summary();
    assert!(summary.contains("(gone; not restarted)"), "{summary}");
}
