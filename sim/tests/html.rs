//! report.html in a real browser: headless Chromium loads a page generated in-process from
//! a synthetic report, and its DOM and a screenshot show that the charts have data, each
//! chart its own legend in distinct colours, that the page's script ran without an error
//! and that its tooltip shows every series' value.
//!
//! Nothing waits on time: the script runs before the load event, which `--dump-dom`
//! waits for, and the page opened as `report.html#hover` moves the tooltips itself.
//!
//! Without Chromium on PATH the test prints a loud SKIP, except under CI (`CI=true`),
//! where a missing browser is a failure: `.ci/run` installs it.

use base64::Engine as _;
use catwar_sim::report::{
    Environment, FailoverSummary, FaultRecord, FunnelRow, InvariantReport, LoadPoint, Report,
    ScenarioInfo, ServerInfo, ServiceSample, ServiceSource, ServiceUsage, SimUsage, StepReport,
    TimePoint, TimeStep, Timeseries, INTERVAL_MS, REPORT_SCHEMA,
};
use hdrhistogram::serialization::{Serializer as _, V2Serializer};
use hdrhistogram::Histogram;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The per-second figures of one step.
fn step(requests: u64, errors: u64, p50_us: u64, p99_us: u64) -> TimeStep {
    TimeStep {
        requests,
        errors,
        p50_us: Some(p50_us),
        p90_us: Some((p50_us + p99_us) / 2),
        p99_us: Some(p99_us),
        errors_by_code: if errors > 0 {
            BTreeMap::from([("unavailable".to_string(), errors)])
        } else {
            BTreeMap::new()
        },
    }
}

/// The totals of a step whose latencies are `latencies_us`, as the report writes them.
fn totals(latencies_us: &[u64], errors: u64) -> StepReport {
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    for &us in latencies_us {
        histogram.record(us).unwrap();
    }
    let mut bytes = Vec::new();
    V2Serializer::new()
        .serialize(&histogram, &mut bytes)
        .unwrap();
    StepReport {
        count: latencies_us.len() as u64 + errors,
        errors,
        p50_us: Some(histogram.value_at_quantile(0.5)),
        p90_us: Some(histogram.value_at_quantile(0.9)),
        p99_us: Some(histogram.value_at_quantile(0.99)),
        p999_us: Some(histogram.value_at_quantile(0.999)),
        max_us: Some(histogram.max()),
        mean_us: Some(histogram.mean()),
        min_us: Some(histogram.min()),
        stddev_us: Some(histogram.stdev()),
        errors_by_code: if errors > 0 {
            BTreeMap::from([("unavailable".to_string(), errors)])
        } else {
            BTreeMap::new()
        },
        expected_by_code: BTreeMap::new(),
        hist: base64::engine::general_purpose::STANDARD.encode(bytes),
    }
}

/// A judged-looking report of a 30 s run: three request steps and a tick stream 100
/// times busier, a latency spike and errors around a balancer kill at 12.3 s, and two
/// services' samples.
fn synthetic_report() -> Report {
    let points = (0..30u64)
        .map(|t| {
            let spike = (12..15).contains(&t);
            let steps = BTreeMap::from([
                (
                    "update.check".to_string(),
                    step(200 + t * 5, 0, 900, 1_500 + t * 20),
                ),
                (
                    "login".to_string(),
                    step(40, 0, 20_000, if spike { 400_000 } else { 30_000 }),
                ),
                (
                    "lobby.me".to_string(),
                    step(120, if spike { 25 } else { 0 }, 500, 800),
                ),
                (
                    "play.tick_interval".to_string(),
                    step(30_000, 0, 50_000, 52_000),
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
    let service = |name: &str, cpu: f64, rss_mib: u64| {
        let samples = (1..=30u32)
            .map(|t| ServiceSample {
                t_s: f64::from(t),
                cpu_cores: cpu * (1.0 + f64::from(t % 5) / 10.0),
                rss_bytes: (rss_mib + u64::from(t)) << 20,
                thread_cpu_cores_max: None,
            })
            .collect();
        ServiceUsage::new(name.to_string(), ServiceSource::Proc, samples)
    };
    let failover: FailoverSummary = serde_json::from_value(serde_json::json!({
        "kills": [{"at_ms": 12300.0, "gap_ms": 640.0, "epoch_before": 1, "epoch_after": 2,
                   "unavailable": 25}],
        "gaps_ms": [640.0], "unmeasured": 0, "median_ms": 640.0, "max_ms": 640.0
    }))
    .expect("a failover summary");
    let latencies = |base: u64| -> Vec<u64> { (0..2_000).map(|i| base + i * i / 50).collect() };
    Report {
        schema: REPORT_SCHEMA.to_string(),
        scenario: ScenarioInfo {
            name: "browser <check> & co".to_string(),
            seed: 42,
            path: "synthetic.toml".to_string(),
            text: "[scenario]\nname = \"browser\"\n".to_string(),
        },
        started_at_unix_ms: 1_796_300_741_000,
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
            read_from_target: false,
        },
        steps: BTreeMap::from([
            ("update.check".to_string(), totals(&latencies(800), 0)),
            ("login".to_string(), totals(&latencies(20_000), 0)),
            ("lobby.me".to_string(), totals(&latencies(400), 75)),
            (
                "play.tick_interval".to_string(),
                totals(&latencies(50_000), 0),
            ),
        ]),
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
        failover,
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
                p50_ms: Some(4 * (i as u64 + 1)),
                p99_ms: Some(9 * (i as u64 + 1)),
                max_ms: Some(10 * (i as u64 + 1)),
                hist: String::new(),
            })
            .collect(),
        arrivals: None,
        knee: None,
        sim: SimUsage::default(),
        services: vec![service("lobby", 0.3, 40), service("profile", 0.9, 150)],
        thresholds: Vec::new(),
        abort: None,
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

/// The value of attribute `name` in the text of one element's start.
fn attribute<'a>(element: &'a str, name: &str) -> Option<&'a str> {
    let rest = element.split(&format!(" {name}=\"")).nth(1)?;
    rest.split('"').next()
}

/// One chart of the DOM: its id, legend entries (name, colour) and the series of its
/// visible SVG (name, colour, points).
struct DomChart<'a> {
    id: &'a str,
    legend: Vec<(&'a str, &'a str)>,
    series: Vec<(&'a str, &'a str, u64)>,
    visible_svgs: usize,
    tip: &'a str,
}

/// Every `div.chart` of the DOM, in page order.
fn charts(dom: &str) -> Vec<DomChart<'_>> {
    dom.split("<div class=\"chart\"")
        .skip(1)
        .map(|chart| {
            let chart = chart.split("<div class=\"chart\"").next().unwrap();
            let legend_html = chart.split("<div class=\"legend\">").nth(1).unwrap_or("");
            let legend_html = legend_html.split("</div>").next().unwrap();
            let legend = legend_html
                .split("<span data-legend=")
                .skip(1)
                .map(|span| {
                    let name = span.trim_start_matches('"').split('"').next().unwrap();
                    let colour = span.split("background:").nth(1).unwrap().split('"').next();
                    (name, colour.unwrap().trim_end_matches(';'))
                })
                .collect();
            let svgs: Vec<&str> = chart
                .split("<svg ")
                .skip(1)
                .filter(|svg| !svg.split('>').next().unwrap().contains(" hidden"))
                .collect();
            let series = svgs
                .first()
                .map(|svg| {
                    svg.split("<polyline")
                        .skip(1)
                        .filter_map(|line| {
                            let name = attribute(line, "data-series")?;
                            let colour = attribute(line, "stroke")?;
                            let points = attribute(line, "data-points")?.parse().ok()?;
                            Some((name, colour, points))
                        })
                        .collect()
                })
                .unwrap_or_default();
            let tip = chart.split("<div class=\"tip\"").nth(1).unwrap_or("");
            DomChart {
                // The piece starts inside the div's tag: ` data-chart="ID">`.
                id: chart.split('"').nth(1).unwrap_or(""),
                legend,
                series,
                visible_svgs: svgs.len(),
                tip: tip.split("</div>").next().unwrap(),
            }
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
    let url = format!("file://{}#hover", page.display());

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
    assert!(
        !dom.contains(" data-js-error=\""),
        "the script failed:\n{dom}"
    );
    assert!(
        dom.contains("data-js=\"ready\""),
        "the script did not finish:\n{dom}"
    );
    assert!(dom.contains("2026-12-03 12:25:41 UTC"), "no start time");
    for column in [
        "<th>min</th>",
        "<th>mean</th>",
        "<th>stddev</th>",
        "<th>error %</th>",
    ] {
        assert!(dom.contains(column), "no column {column}");
    }
    assert!(dom.contains("<th>p50 ms</th>"), "funnel times not in ms");

    let charts = charts(&dom);
    let by_id = |id: &str| {
        charts
            .iter()
            .find(|c| c.id == id)
            .unwrap_or_else(|| panic!("no chart {id}"))
    };
    for chart in &charts {
        assert_eq!(chart.visible_svgs, 1, "chart {} shows one scale", chart.id);
        // Its own legend: an entry per series, in the series' colours, all distinct.
        let legend: Vec<(&str, &str)> = chart.legend.clone();
        let drawn: Vec<(&str, &str)> = chart.series.iter().map(|s| (s.0, s.1)).collect();
        assert_eq!(legend, drawn, "legend of chart {}", chart.id);
        let colours: BTreeSet<&str> = drawn.iter().map(|s| s.1).collect();
        assert_eq!(colours.len(), drawn.len(), "colours of chart {}", chart.id);
        assert!(
            chart.series.iter().all(|s| s.2 > 0),
            "empty series in chart {}",
            chart.id
        );
    }
    // A step has one colour on every chart, and no two steps share one.
    let mut step_colours = BTreeMap::new();
    for chart in charts
        .iter()
        .filter(|c| c.id.starts_with("throughput") || c.id.starts_with("p99"))
    {
        for (name, colour, _) in &chart.series {
            assert_eq!(
                *step_colours.entry(*name).or_insert(*colour),
                *colour,
                "{name}"
            );
        }
    }
    let distinct: BTreeSet<&&str> = step_colours.values().collect();
    assert_eq!(distinct.len(), step_colours.len(), "{step_colours:?}");

    // Requests and server-pushed streams are charted apart.
    let names = |id: &str| -> Vec<&str> { by_id(id).series.iter().map(|s| s.0).collect() };
    assert_eq!(
        names("throughput-requests"),
        ["update.check", "login", "lobby.me"]
    );
    assert_eq!(names("throughput-streams"), ["play.tick_interval"]);
    // p99 from 0.8 ms to 400 ms opens on a log axis.
    let p99 = dom.split("data-chart=\"p99-requests\"").nth(1).unwrap();
    let visible = p99
        .split("<svg ")
        .skip(1)
        .find(|svg| !svg.split('>').next().unwrap().contains(" hidden"));
    assert!(
        visible.unwrap().contains("data-scale=\"log\""),
        "p99 of requests not on a log axis"
    );
    assert!(p99.contains("data-log-toggle"), "no scale switch");
    assert_eq!(names("errors"), ["lobby.me unavailable"]);
    assert_eq!(names("services-cpu"), ["lobby", "profile"]);
    assert_eq!(names("services-memory"), ["lobby", "profile"]);
    assert!(dom.contains("data-gap=\"640\""), "no failover gap");
    assert!(dom.contains("epoch 1→2"), "no epochs");
    assert!(dom.contains("data-fault=\"balancer-1\""), "no fault marker");

    // The tooltip, moved to 60 % of every visible chart, names every series' value.
    let tip = by_id("throughput-requests").tip;
    assert!(tip.contains("t = 17 s"), "tooltip: {tip}");
    assert!(tip.contains("data-rows=\"3\""), "tooltip: {tip}");
    assert!(
        tip.contains("lobby.me") && tip.contains("120 /s"),
        "tooltip: {tip}"
    );
    let hovered: usize = dom
        .split("data-hover=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next()?.parse().ok())
        .expect("hover probe ran");
    // Every chart on the time axis has data here and shows; so do the chosen step's.
    let on_time_axis = charts
        .iter()
        .filter(|c| !c.id.starts_with("bands ") && !c.id.starts_with("distribution "))
        .count();
    assert_eq!(hovered, on_time_axis + 2, "tooltips shown");

    // One step in detail: the busiest request step (lobby.me, with its failures) is
    // chosen, with bands and a distribution; the others are hidden.
    assert!(
        dom.contains("<option value=\"lobby.me\" selected"),
        "default step"
    );
    let shown: Vec<&str> = dom
        .split("<div class=\"step-detail\"")
        .skip(1)
        .filter(|d| !d.split('>').next().unwrap().contains("hidden"))
        .collect();
    assert_eq!(shown.len(), 1, "one step shows");
    assert!(shown[0].starts_with(" data-step=\"lobby.me\""));
    let detail_charts = charts.iter().filter(|c| c.id.ends_with(" lobby.me"));
    for chart in detail_charts {
        assert!(!chart.series.is_empty(), "{} has no data", chart.id);
    }
    assert_eq!(names("bands lobby.me").len(), 3, "p50, p90, p99");
    assert!(
        by_id("distribution lobby.me").series[0].2 > 10,
        "distribution curve"
    );

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

#[test]
fn a_report_without_services_has_no_service_charts() {
    let mut report = synthetic_report();
    report.services.clear();
    let html = report.html();
    assert!(!html.contains("data-chart=\"services-cpu\""));
    assert!(html.contains("data-chart=\"p99-requests\""));
}
