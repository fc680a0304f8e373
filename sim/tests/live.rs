//! What a run gives while it goes: the `--metrics-listen` endpoint, the HDR interval logs
//! and the abort gates.

use crate::util::{code, printed, read_report, server_bin, sim, write_scenario};
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::Histogram;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// A short closed-model run of lobby visits, without matches.
const LOBBY_ONLY: &str = "[scenario]\nname = \"live-test\"\nseed = 3\nduration_s = DURATION\n\
     [population]\nclients = 10\n[load]\nthink_time_ms = 100\n\
     [script]\nstart = 0.0\nobserve = 0.0\n";

/// `catwar-sim run SCENARIO --out OUT` against the embedded server; callers add flags.
fn run_with_embedded_server(
    scenario: &std::path::Path,
    out: &std::path::Path,
) -> std::process::Command {
    let mut command = sim();
    command
        .args([
            "run",
            scenario.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .args(["--server-bin", server_bin().to_str().unwrap()]);
    command
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET /metrics` on `port`, or `None` while nothing answers.
fn scrape(port: u16) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: sim\r\n\r\n")
        .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    Some(answer)
}

#[test]
fn metrics_listen_serves_merged_steps_while_running_and_hdr_logs_parse_back() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write_scenario(dir.path(), &LOBBY_ONLY.replace("DURATION", "6"));
    let out = dir.path().join("out");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let child = run_with_embedded_server(&scenario, &out)
        .args(["--metrics-listen", &listen])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Bounded: the embedded server starts in a few seconds, the run lasts six.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = None;
    while Instant::now() < deadline && seen.is_none() {
        std::thread::sleep(Duration::from_millis(500));
        seen = scrape(port).filter(|text| {
            text.lines().any(|l| {
                l.starts_with("catwar_sim_requests_total{step=\"lobby.me\"}") && !l.ends_with(" 0")
            })
        });
    }
    let output = child.wait_with_output().unwrap();
    assert_eq!(code(&output), 0, "{}", printed(&output));
    let text = seen.expect("a scrape with lobby.me requests during the run");
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    for series in [
        "# TYPE catwar_sim_requests_total counter",
        "catwar_sim_request_duration_seconds_bucket{le=\"+Inf\",step=\"lobby.me\"}",
        "catwar_sim_active_clients ",
        "catwar_sim_arrivals_dropped_total ",
    ] {
        assert!(text.contains(series), "{series} missing from\n{text}");
    }

    let log = std::fs::read(out.join("hdr/lobby.me.hlog")).expect("the lobby.me interval log");
    let mut deserializer = Deserializer::new();
    let (mut intervals, mut samples) = (0, 0);
    let mut start_time = None;
    for entry in IntervalLogIterator::new(&log) {
        match entry.expect("every line of the log parses") {
            LogEntry::StartTime(t) => start_time = Some(t),
            LogEntry::Interval(interval) => {
                assert_eq!(interval.start_timestamp().as_secs(), intervals);
                assert_eq!(interval.duration(), Duration::from_secs(1));
                let bytes = base64_decode(interval.encoded_histogram());
                let hist: Histogram<u64> = deserializer
                    .deserialize(&mut bytes.as_slice())
                    .expect("each interval's histogram decodes");
                samples += hist.len();
                intervals += 1;
            }
            LogEntry::BaseTime(_) => {}
        }
    }
    let report = read_report(&out);
    let started_s = report["started_at_unix_ms"].as_f64().unwrap() / 1000.0;
    let start_time = start_time.expect("a StartTime header").as_secs_f64();
    assert!(
        (start_time - started_s).abs() < 0.01,
        "{start_time} vs {started_s}"
    );
    assert!(intervals >= 6, "{intervals} intervals");
    // The per-second histograms hold every successful request of the step.
    let me = &report["steps"]["lobby.me"];
    let successes = me["count"].as_u64().unwrap() - me["errors"].as_u64().unwrap();
    assert_eq!(samples, successes);
}

#[test]
fn an_abort_on_fail_threshold_stops_the_run_early_with_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{}[thresholds]\n\"lobby.me.p99\" = {{ limit = \"< 1us\", abort_on_fail = true, \
         delay_abort_eval_s = 2, window_s = 1 }}\n",
        LOBBY_ONLY.replace("DURATION", "60")
    );
    let scenario = write_scenario(dir.path(), &text);
    let out = dir.path().join("out");
    let started = Instant::now();
    let output = run_with_embedded_server(&scenario, &out).output().unwrap();
    assert_eq!(code(&output), 3, "{}", printed(&output));
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "not stopped early"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("a threshold aborted the run (exit 3)")
            && stdout.contains("aborted: lobby.me.p99 < 1us failed over the 1 s before"),
        "{stdout}"
    );
    let page = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        page.contains("ABORTED: a threshold stopped the run") && page.contains("<th>aborted</th>"),
        "the page does not say the run was aborted"
    );
    let report = read_report(&out);
    assert_eq!(report["exit_code"], 3);
    assert_eq!(report["interrupted"], false);
    let abort = &report["abort"];
    assert_eq!(abort["metric"], "lobby.me.p99");
    assert_eq!(abort["condition"], "< 1us");
    assert_eq!(abort["window_s"], 1);
    // The delay holds the gate until two seconds have passed: second 1 closes them.
    assert!(abort["at_s"].as_u64().unwrap() >= 1, "{abort}");
    assert!(abort["actual"].as_f64().unwrap() >= 1.0, "{abort}");
    assert!(report["duration_s"].as_f64().unwrap() < 30.0);
}

/// Standard base64, as interval logs encode their histograms.
fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("base64")
}

#[test]
fn a_busy_metrics_address_or_a_bad_sample_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write_scenario(dir.path(), &LOBBY_ONLY.replace("DURATION", "5"));
    let out = dir.path().join("out");
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    let output = run_with_embedded_server(&scenario, &out)
        .args(["--metrics-listen", &listen])
        .output()
        .unwrap();
    assert_eq!(code(&output), 64, "{}", printed(&output));
    assert!(
        printed(&output).contains("--metrics-listen"),
        "{}",
        printed(&output)
    );
    let output = sim()
        .args([
            "run",
            scenario.to_str().unwrap(),
            "--request-log",
            "x.jsonl",
        ])
        .args(["--request-log-sample", "1.5"])
        .output()
        .unwrap();
    assert_eq!(code(&output), 64, "{}", printed(&output));
}

#[test]
fn request_log_samples_the_same_clients_in_one_process_or_two() {
    let dir = tempfile::tempdir().unwrap();
    let mut logged = Vec::new();
    for workers in [1, 2] {
        let text = LOBBY_ONLY
            .replace("DURATION", "4")
            .replace("[load]\n", &format!("[load]\nworkers = {workers}\n"));
        let scenario = write_scenario(dir.path(), &text);
        let out = dir.path().join(format!("out-{workers}"));
        let log = dir.path().join(format!("requests-{workers}.jsonl"));
        let output = run_with_embedded_server(&scenario, &out)
            .args([
                "--request-log",
                log.to_str().unwrap(),
                "--request-log-sample",
                "0.3",
            ])
            .output()
            .unwrap();
        assert_eq!(code(&output), 0, "{}", printed(&output));
        let text = std::fs::read_to_string(&log).unwrap();
        let mut clients = std::collections::BTreeSet::new();
        for line in text.lines() {
            let line: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            clients.insert(line["client"].as_u64().unwrap());
            assert!(
                line["step"].is_string() && line["code"].is_string(),
                "{line}"
            );
            if line["code"] == "ok" {
                assert!(line["latency_us"].as_u64().unwrap() > 0, "{line}");
                assert!(
                    line["sent_us"].as_u64() >= line["scheduled_us"].as_u64(),
                    "{line}"
                );
            }
        }
        assert!(!clients.is_empty() && clients.len() < 10, "{clients:?}");
        // The workers' own files were gathered into the log and removed.
        assert!(!dir
            .path()
            .join(format!("requests-{workers}.jsonl.worker-0"))
            .exists());
        logged.push(clients);
    }
    assert_eq!(logged[0], logged[1]);
}
