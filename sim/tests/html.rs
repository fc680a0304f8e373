//! report.html in a real browser: headless Chromium loads a page generated in-process from
//! a synthetic report, and its DOM and a screenshot show that the charts have data.
//!
//! Without Chromium on PATH the test prints a loud SKIP, except under CI (`CI=true`),
//! where a missing browser is a failure: `.ci/run` installs it.

use catwar_sim::report::{
    Environment, FailoverSummary, FaultRecord, FunnelRow, InvariantReport, LoadPoint, Report,
    ScenarioInfo, ServerInfo, SimUsage, TimePoint, TimeStep, Timeseries, INTERVAL_MS,
    REPORT_SCHEMA,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A judged-looking report of a 30 s run: three steps, a latency spike and errors around
/// a balancer kill at 12.3 s.
fn synthetic_report() -> Report {
    let points = (0..30u64)
        .map(|t| {
            let spike = (12..15).contains(&t);
            let step = |requests, errors, p99_us| TimeStep {
                requests,
                errors,
                p99_us,
            };
            let steps = BTreeMap::from([
                (
                    "update.check".to_string(),
                    step(200 + t * 5, 0, Some(1_500 + t * 20)),
                ),
                (
                    "login".to_string(),
                    step(40, 0, Some(if spike { 400_000 } else { 30_000 })),
                ),
                (
                    "lobby.me".to_string(),
                    step(120, if spike { 25 } else { 0 }, Some(800)),
                ),
            ]);
            let load = LoadPoint {
                arrivals: 10 + t,
                offered_per_s: 10.0 + t as f64,
                active: 100 + 3 * t,
                ..LoadPoint::default()
            };
            TimePoint {
                t_s: t,
                steps,
                load,
            }
        })
        .collect();
    Report {
        schema: REPORT_SCHEMA.to_string(),
        scenario: ScenarioInfo {
            name: "browser <check> & co".to_string(),
            seed: 42,
            path: "synthetic.toml".to_string(),
            text: "[scenario]\nname = \"browser\"\n".to_string(),
        },
        started_at_unix_ms: 0,
        duration_s: 30.0,
        interrupted: false,
        environment: Environment::current("embedded".to_string()),
        server: ServerInfo {
            argon2: "fast".to_string(),
            token_idle_s: 600,
            users: 100,
            players_per_match: 4,
            match_fill_timeout_s: 5,
            match_ticks: 600,
            tick_hz: 20,
            observer_backend: "process".to_string(),
            play_servers: 2,
            applied: true,
        },
        steps: BTreeMap::new(),
        errors_by_code: BTreeMap::from([("unavailable".to_string(), 75)]),
        timeseries: Timeseries {
            interval_ms: INTERVAL_MS,
            points,
        },
        faults: vec![FaultRecord {
            at_s: 12.0,
            executed_at_ms: 12_300.0,
            action: "kill".to_string(),
            for_s: None,
            service: "balancer-1".to_string(),
            pid: Some(1234),
            ok: true,
            detail: None,
            back_after_ms: Some(1_012.4),
            integrity: Some("ok".into()),
        }],
        failover: FailoverSummary::default(),
        invariants: vec![InvariantReport {
            name: "tokens.unique".to_string(),
            checked: 160,
            violations: 0,
        }],
        funnel: ["update", "login", "lobby", "play", "done"]
            .iter()
            .enumerate()
            .map(|(i, stage)| FunnelRow {
                stage: stage.to_string(),
                sessions: 500 - 20 * i as u64,
                clients: 100,
                p50_ms: Some(40 * (i as u64 + 1)),
                p99_ms: Some(90 * (i as u64 + 1)),
                max_ms: Some(100 * (i as u64 + 1)),
                hist: String::new(),
            })
            .collect(),
        arrivals: None,
        knee: None,
        sim: SimUsage::default(),
        services: Vec::new(),
        thresholds: Vec::new(),
        exit_code: 0,
    }
}

/// `chromium` or `chromium-browser` on PATH.
fn find_chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser"].iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

fn headless(chromium: &Path, profile: &Path) -> Command {
    let mut command = Command::new(chromium);
    command.args(["--headless", "--no-sandbox", "--disable-gpu"]);
    // A profile of its own, so the test neither reads nor locks the user's.
    command.arg(format!("--user-data-dir={}", profile.display()));
    command
}

/// Values of every `data-points="N"` attribute of elements with a `data-series`.
fn series_points(dom: &str) -> Vec<u64> {
    dom.split("<polyline")
        .skip(1)
        .filter(|element| element.contains("data-series="))
        .filter_map(|element| {
            let rest = element.split("data-points=\"").nth(1)?;
            rest.split('"').next()?.parse().ok()
        })
        .collect()
}

#[test]
fn report_html_renders_charts_in_headless_chromium() {
    let Some(chromium) = find_chromium() else {
        let message = "chromium (or chromium-browser) is not on PATH";
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{message}; CI must install it (see .ci/run)");
        }
        eprintln!("\n*** SKIP report_html_renders_charts_in_headless_chromium: {message} ***\n");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let page = synthetic_report().write_html(dir.path()).unwrap();
    let url = format!("file://{}", page.display());

    let dump = headless(&chromium, &dir.path().join("profile-dom"))
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .expect("chromium runs");
    let dom = String::from_utf8_lossy(&dump.stdout);
    assert!(
        dump.status.success(),
        "chromium --dump-dom failed: {}",
        String::from_utf8_lossy(&dump.stderr)
    );
    assert!(dom.contains("<svg"), "no svg in the DOM:\n{dom}");
    for step in ["update.check", "login", "lobby.me"] {
        assert!(
            dom.contains(&format!("data-series=\"{step}\"")),
            "no series {step}"
        );
    }
    let points = series_points(&dom);
    assert!(
        points.len() >= 7 && points.iter().all(|&n| n > 0),
        "series points {points:?}"
    );
    assert!(dom.contains("data-fault=\"balancer-1\""), "no fault marker");
    assert!(
        dom.contains("data-series=\"active clients\""),
        "no load chart"
    );
    assert!(dom.contains("<h2>Funnel</h2>"), "no funnel");

    let png = dir.path().join("report.png");
    let shot = headless(&chromium, &dir.path().join("profile-shot"))
        .arg(format!("--screenshot={}", png.display()))
        .arg("--window-size=1200,1600")
        .arg(&url)
        .output()
        .expect("chromium runs");
    assert!(
        shot.status.success(),
        "chromium --screenshot failed: {}",
        String::from_utf8_lossy(&shot.stderr)
    );
    let bytes = std::fs::read(&png).expect("screenshot written");
    assert!(bytes.starts_with(b"\x89PNG"), "not a PNG");
    assert!(
        bytes.len() > 20_000,
        "screenshot of {} bytes looks blank",
        bytes.len()
    );
    if let Some(keep) = std::env::var_os("CATWAR_KEEP_SCREENSHOT") {
        std::fs::copy(&png, keep).expect("screenshot copied");
    }
}
