//! Whole runs against the reference server: the embedded topology, and `--target`.

use crate::util::{
    code, printed, read_report, run_embedded, run_sim, server_bin, write_scenario, Topology,
    OPEN_SCENARIO, TARGET_USERS,
};

/// Every branch of the script, often enough to be taken in a few seconds, short
/// matches (two seconds, observed half the time), and a balancer kill. Each client is a
/// user of its own: two clients of one user in one match would share one seat.
const FULL_SCENARIO: &str = r#"
[scenario]
name = "full-test"
seed = 7
duration_s = 10

[population]
clients = 50
users = 50

[load]
think_time_ms = 50

[script]
stale_version = 0.3
wrong_password = 0.2
ranking = 0.5
ip_change = 0.2
idle = 0.05
start = 0.5
observe = 0.5

[server]
argon2 = "fast"
token_idle_s = 2
players_per_match = 4
match_fill_timeout_s = 1
match_ticks = 40
tick_hz = 20

[[faults]]
at_s = 3.0
action = "kill"
service = "balancer"

[[faults]]
at_s = 5.0
action = "restart"        # a graceful stop; the supervisor starts it again
service = "router"

[thresholds]
"update.check.count" = "> 0"
"login.count" = "> 0"
"failover.gap" = "< 5s"
"tokens.collisions" = "== 0"
"invariants.violations" = "== 0"
"#;

#[test]
fn embedded_run_takes_every_branch_plays_observes_and_survives_a_balancer_kill() {
    let report = run_embedded(FULL_SCENARIO);
    assert_eq!(report["schema"], "catwar-sim/report/v1");
    assert_eq!(report["exit_code"], 0);
    assert!(report["steps"]["update.check"]["count"].as_u64().unwrap() > 0);
    assert!(report["steps"]["file.download"]["count"].as_u64().unwrap() > 0);
    let gaps = report["failover"]["gaps_ms"].as_array().unwrap();
    assert_eq!(gaps.len(), 1, "{}", report["failover"]);
    assert!(gaps[0].as_f64().unwrap() > 0.0);
    // Both faults ran, and both services came back under new pids.
    let faults = &report["faults"];
    for (i, action) in [(0, "kill"), (1, "restart")] {
        assert_eq!(faults[i]["action"], action, "{faults}");
        assert_eq!(faults[i]["ok"], true, "{faults}");
        assert!(
            faults[i]["back_after_ms"].as_f64().unwrap() > 0.0,
            "{faults}"
        );
    }
    let steps = &report["steps"];
    let count = |step: &str| steps[step]["count"].as_u64().unwrap();
    let expected = |step: &str, code: &str| steps[step]["expected_by_code"][code].as_u64();
    for step in [
        "login",
        "lobby.me",
        "lobby.ranking",
        "lobby.start",
        "play.join",
        "play.input_ack",
        "play.tick_interval",
        "play.match",
        "router.observer",
        "observer.first_state",
        "logout",
    ] {
        assert!(count(step) > 0, "no {step}: {steps}");
    }
    assert!(
        expected("login", "login_failed") > Some(0),
        "{}",
        steps["login"]
    );
    assert!(
        expected("lobby.me", "login_again") > Some(0),
        "{}",
        steps["lobby.me"]
    );
    assert!(
        expected("lobby.me", "refresh_required") > Some(0),
        "{}",
        steps["lobby.me"]
    );
    assert!(
        expected("lobby.me", "access_denied") > Some(0),
        "{}",
        steps["lobby.me"]
    );
    assert!(count("refresh") > 0, "{}", steps["refresh"]);
    // Every joined match reached its end.
    assert_eq!(steps["play.match"]["errors"], 0, "{}", steps["play.match"]);

    let invariant = |name: &str| {
        let invariants = report["invariants"].as_array().unwrap();
        let found = invariants.iter().find(|i| i["name"] == name).unwrap();
        let figure = |key: &str| found[key].as_u64().unwrap();
        (figure("checked"), figure("violations"))
    };
    for name in [
        "tokens.unique",
        "lobby.foreign_ip_served",
        "login.wrong_password_token",
        "play.ticks_in_order",
        "observers.every_tick",
        "results.no_loss",
    ] {
        let (checked, violations) = invariant(name);
        assert!(checked > 0, "{name} never checked");
        assert_eq!(violations, 0, "{name}");
    }
    // Every match and every user with a result, at least one match per joined client.
    let (checked, _) = invariant("results.no_loss");
    assert!(checked >= count("play.match") / 4, "{checked}");
    assert_eq!(report["server"]["argon2"], "fast");
    assert_eq!(report["server"]["match_ticks"], 40);
    assert_eq!(report["server"]["applied"], true);
}

#[test]
fn target_run_fails_an_impossible_threshold_with_exit_1() {
    let topology = Topology::start();
    let dir = tempfile::tempdir().unwrap();
    let scenario = write_scenario(
        dir.path(),
        &format!(
            "[scenario]\nname = \"target-test\"\nduration_s = 3\n\
             [population]\nclients = 10\nusers = {TARGET_USERS}\n\
             [load]\nthink_time_ms = 50\n[script]\nstart = 0.0\n\
             [thresholds]\n\"update.check.p50\" = \"< 1us\"\n"
        ),
    );
    let out = dir.path().join("out");
    let target = topology.path();
    let output = run_sim(&[
        "run",
        scenario.to_str().unwrap(),
        "--target",
        target.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code(&output), 1, "{}", printed(&output));
    let report = read_report(&out);
    assert_eq!(report["thresholds"][0]["pass"], false);
    assert!(report["steps"]["update.check"]["count"].as_u64().unwrap() > 0);
    assert_eq!(report["environment"]["target"], target.to_str().unwrap());
    assert!(report["steps"]["login"]["count"].as_u64().unwrap() > 0);
    assert_eq!(report["server"]["applied"], false);
}

#[test]
fn open_model_in_two_workers_merges_into_one_report() {
    // The open model in two worker processes: sessions arrive at a ramping rate, each
    // plays a short match, and the coordinator merges both workers' histograms and checks.
    let report = run_embedded(&OPEN_SCENARIO.replace("[load]\n", "[load]\nworkers = 2\n"));
    assert_eq!(report["sim"]["workers"], 2);
    let arrivals = &report["arrivals"];
    let started = arrivals["started"].as_u64().unwrap();
    // 50 expected (5 → 20 per second over 4 s); a Poisson count strays by √50 ≈ 7.
    assert!((20..=90).contains(&started), "{arrivals}");
    assert_eq!(arrivals["dropped"], 0, "{arrivals}");
    // Each arrival is one session: one update check each, whichever worker ran it.
    let steps = &report["steps"];
    assert_eq!(steps["update.check"]["count"].as_u64().unwrap(), started);
    // The funnel saw every session start and most of them finish.
    let funnel = report["funnel"].as_array().unwrap();
    let stage = |name: &str| funnel.iter().find(|row| row["stage"] == name).unwrap();
    assert_eq!(stage("update")["sessions"].as_u64().unwrap(), started);
    assert!(stage("done")["sessions"].as_u64().unwrap() > started / 2);
    assert!(stage("play")["sessions"].as_u64().unwrap() > 0);
    // Seconds merged from both workers: arrivals in the series add up to the total.
    let points = report["timeseries"]["points"].as_array().unwrap();
    let arrived: u64 = points
        .iter()
        .map(|p| p["load"]["arrivals"].as_u64().unwrap())
        .sum();
    assert_eq!(arrived, started);
    let checked = |name: &str| {
        let invariants = report["invariants"].as_array().unwrap();
        invariants.iter().find(|i| i["name"] == name).unwrap()["checked"]
            .as_u64()
            .unwrap()
    };
    assert!(checked("tokens.unique") >= started);
    assert!(checked("results.no_loss") > 0);
}

#[test]
fn replay_runs_one_client_and_traces_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write_scenario(dir.path(), FULL_SCENARIO);
    let out = dir.path().join("out");
    let bin = server_bin();
    let replay = |client: &str| {
        run_sim(&[
            "replay",
            scenario.to_str().unwrap(),
            "--client",
            client,
            "--out",
            out.to_str().unwrap(),
            "--server-bin",
            bin.to_str().unwrap(),
        ])
    };
    let output = replay("7");
    assert_eq!(code(&output), 0, "{}", printed(&output));
    let trace = String::from_utf8_lossy(&output.stderr);
    for event in [
        "branch=\"stale_version\"",
        "step=\"update.check\"",
        "stage=\"login\"",
    ] {
        assert!(trace.contains(event), "no {event} in the trace:\n{trace}");
    }
    assert!(
        trace.contains("client=7") && !trace.contains("client=8"),
        "{trace}"
    );
    // The banner speaks of the one client, and the trace marks the scenario's faults.
    assert!(trace.contains("client 7 alone (one of"), "{trace}");
    assert!(
        trace.contains("FAULT") && trace.contains("service=balancer"),
        "{trace}"
    );
    let report = read_report(&out);
    assert_eq!(report["sim"]["peak_active"], 1);
    // The same client draws the same branches on every replay.
    let branches = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|line| line.contains("branch="))
            .map(|line| line.split("branch=").nth(1).unwrap().to_string())
            .take(6)
            .collect()
    };
    let again = replay("7");
    assert_eq!(
        branches(&trace),
        branches(&String::from_utf8_lossy(&again.stderr))
    );
    assert_eq!(code(&replay("50")), 64, "client 50 of 50 does not exist");
}
