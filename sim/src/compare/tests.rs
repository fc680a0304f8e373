//! Unit tests of `compare`.

use super::*;

fn view(steps: &[(&str, u64, [u64; 3])]) -> ReportView {
    let steps = steps
        .iter()
        .map(|&(name, count, [p50, p90, p99])| {
            let step = StepView {
                count,
                errors: 0,
                p50_us: Some(p50),
                p90_us: Some(p90),
                p99_us: Some(p99),
            };
            (name.to_string(), step)
        })
        .collect();
    ReportView {
        schema: REPORT_SCHEMA.to_string(),
        scenario: None,
        steps,
    }
}

fn verdicts(rows: &[Row]) -> Vec<(&str, &Verdict)> {
    rows.iter().map(|r| (r.stat, &r.verdict)).collect()
}

#[test]
fn regression_needs_both_the_percentage_and_a_millisecond() {
    let baseline = view(&[("update.check", 1000, [2_000, 400, 10_000])]);
    // p50: +50 % and +1 ms exactly (not more) and p90: +100 % but only 0.4 ms, so the
    // floor decides both; p99: +30 % and 3 ms.
    let current = view(&[("update.check", 1000, [3_000, 800, 13_000])]);
    let rows = compare(&baseline, &current, 25.0, Scale::Absolute).rows;
    assert_eq!(
        verdicts(&rows),
        vec![
            ("p50", &Verdict::UnderFloor),
            ("p90", &Verdict::UnderFloor),
            ("p99", &Verdict::Regressed)
        ]
    );
    let lenient = compare(&baseline, &current, 50.0, Scale::Absolute);
    assert_eq!(lenient.regressions(), 0);
    assert!(render(&lenient).contains("ok (grew, but by less than 1 ms)"));
}

#[test]
fn a_p99_needs_a_thousand_samples() {
    let baseline = view(&[("lobby.start", 600, [100, 200, 500])]);
    let current = view(&[("lobby.start", 600, [100, 200, 5_000])]);
    let rows = compare(&baseline, &current, 100.0, Scale::Absolute).rows;
    let p99 = rows.iter().find(|r| r.stat == "p99").unwrap();
    assert!(matches!(p99.verdict, Verdict::Skipped(_)));
    let current = view(&[("lobby.start", 600, [5_000, 200, 500])]);
    assert_eq!(
        compare(&baseline, &current, 100.0, Scale::Absolute).regressions(),
        1
    );
}

#[test]
fn small_steps_are_skipped_and_missing_ones_fail() {
    let baseline = view(&[
        ("update.check", 99, [1_000, 1_000, 1_000]),
        ("file.download", 500, [1; 3]),
    ]);
    let current = view(&[("update.check", 5000, [90_000; 3])]);
    let comparison = compare(&baseline, &current, 25.0, Scale::Relative);
    let verdicts: Vec<_> = comparison
        .rows
        .iter()
        .map(|r| (r.step.as_str(), &r.verdict))
        .collect();
    assert_eq!(verdicts[0], ("file.download", &Verdict::Missing));
    assert!(comparison.rows[1..]
        .iter()
        .all(|r| matches!(r.verdict, Verdict::Skipped(_))));
    assert_eq!(comparison.regressions(), 1);
    let table = render(&comparison);
    assert!(
        table.contains("skipped") && table.contains("MISSING"),
        "{table}"
    );
    // Nothing compared, so nothing to scale by.
    assert!(comparison.factors.iter().all(|&(_, factor)| factor == 1.0));
}

#[test]
fn error_rates_of_requests_are_compared_and_ticks_are_not() {
    let mut baseline = view(&[
        ("update.check", 1000, [1_000; 3]),
        ("play.tick_interval", 1000, [50_000; 3]),
    ]);
    let mut current = view(&[
        ("update.check", 1000, [1_000; 3]),
        ("play.tick_interval", 1000, [50_000; 3]),
    ]);
    baseline.steps.get_mut("update.check").unwrap().errors = 1;
    current.steps.get_mut("update.check").unwrap().errors = 15;
    current.steps.get_mut("play.tick_interval").unwrap().errors = 200;
    let comparison = compare(&baseline, &current, 200.0, Scale::Absolute);
    assert_eq!(comparison.errors.len(), 1, "ticks are no requests");
    assert_eq!(comparison.errors[0].step, "update.check");
    assert!(comparison.errors[0].regressed);
    assert_eq!(comparison.regressions(), 1);
    assert!(render(&comparison).contains("0.100% → 1.500%  REGRESSED"));
    // 0.1 % → 1.0 % grows by 0.9 point: within the allowance.
    current.steps.get_mut("update.check").unwrap().errors = 10;
    assert_eq!(
        compare(&baseline, &current, 200.0, Scale::Absolute).regressions(),
        0
    );
}

#[test]
fn different_scenarios_are_named() {
    let scenario = |name: &str, seed, text: &str| {
        Some(ScenarioView {
            name: name.to_string(),
            seed,
            text: text.to_string(),
        })
    };
    let mut baseline = view(&[]);
    let mut current = view(&[]);
    baseline.scenario = scenario("smoke", 42, "a\nb\nc");
    current.scenario = scenario("smoke", 42, "a\nb\nc");
    assert!(compare(&baseline, &current, 200.0, Scale::Absolute)
        .scenario_differs
        .is_empty());
    current.scenario = scenario("soak", 7, "a\nB\nc\nd");
    let comparison = compare(&baseline, &current, 200.0, Scale::Absolute);
    assert_eq!(
        comparison.scenario_differs,
        vec![
            "name \"smoke\" vs \"soak\"".to_string(),
            "seed 42 vs 7".to_string(),
            "scenario text (from line 2 on)".to_string()
        ]
    );
    assert!(render(&comparison).contains("warning: the two runs ran different scenarios"));
    // Only a line ending differs: still named, and the search ends.
    baseline.scenario = scenario("smoke", 42, "a\nb\n");
    current.scenario = scenario("smoke", 42, "a\nb");
    assert_eq!(
        compare(&baseline, &current, 200.0, Scale::Absolute).scenario_differs,
        vec!["scenario text (from line 3 on)".to_string()]
    );
}

#[test]
fn relative_scale_forgives_a_slow_machine_but_not_one_slow_step() {
    let steps = [
        "login",
        "lobby.me",
        "lobby.start",
        "update.check",
        "play.join",
    ];
    let baseline: Vec<_> = steps
        .iter()
        .map(|&s| (s, 1000, [1_000, 2_000, 4_000]))
        .collect();
    // A host twice as slow at the median and three times in the tail: every step alike.
    let slow: Vec<_> = steps
        .iter()
        .map(|&s| (s, 1000, [2_000, 6_000, 12_000]))
        .collect();
    let absolute = compare(&view(&baseline), &view(&slow), 100.0, Scale::Absolute);
    assert_eq!(
        absolute.regressions(),
        2 * steps.len(),
        "p90 and p99 of each"
    );
    let relative = compare(&view(&baseline), &view(&slow), 100.0, Scale::Relative);
    assert_eq!(relative.regressions(), 0);
    assert_eq!(
        relative.factors,
        vec![("p50", 2.0), ("p90", 3.0), ("p99", 3.0)]
    );
    assert!(render(&relative).contains("p90 ×3.00"));
    // On the same slow host, lobby.me alone grew ten times more than the others.
    let mut one_slow = slow.clone();
    one_slow[1].2 = [20_000, 60_000, 120_000];
    let relative = compare(&view(&baseline), &view(&one_slow), 100.0, Scale::Relative);
    let regressed: Vec<_> = relative
        .rows
        .iter()
        .filter(|r| r.verdict == Verdict::Regressed)
        .map(|r| (r.step.as_str(), r.stat))
        .collect();
    assert_eq!(
        regressed,
        vec![
            ("lobby.me", "p50"),
            ("lobby.me", "p90"),
            ("lobby.me", "p99")
        ]
    );
    assert_eq!(relative.machine_too_slow(), None);
}

#[test]
fn relative_scale_fails_a_regression_everywhere_and_never_tightens() {
    let steps = ["login", "lobby.me", "lobby.start"];
    let baseline: Vec<_> = steps
        .iter()
        .map(|&s| (s, 1000, [1_000, 2_000, 4_000]))
        .collect();
    let everywhere: Vec<_> = steps
        .iter()
        .map(|&s| (s, 1000, [5_000, 10_000, 20_000]))
        .collect();
    let relative = compare(&view(&baseline), &view(&everywhere), 100.0, Scale::Relative);
    assert_eq!(relative.regressions(), 0);
    assert_eq!(relative.machine_too_slow(), Some(5.0));
    // A faster host scales by 1, not by 0.5: the gate is never stricter than absolute.
    let fast: Vec<_> = steps
        .iter()
        .map(|&s| (s, 1000, [500, 1_000, 2_000]))
        .collect();
    let relative = compare(&view(&baseline), &view(&fast), 100.0, Scale::Relative);
    assert!(relative.factors.iter().all(|&(_, factor)| factor == 1.0));
}

#[test]
fn unreadable_reports_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.json");
    assert!(ReportView::load(&missing)
        .unwrap_err()
        .to_string()
        .contains("missing.json"));
    let wrong = dir.path().join("wrong.json");
    std::fs::write(&wrong, r#"{"schema": "other/v9", "steps": {}}"#).unwrap();
    let error = ReportView::load(&wrong).unwrap_err().to_string();
    assert!(
        error.contains("wrong.json") && error.contains("other/v9"),
        "{error}"
    );
}
