//! Whole runs against the reference server: the embedded topology, and `--target`.

use crate::util::{
    code, printed, read_report, run_sim, server_bin, write_scenario, Topology, TARGET_USERS,
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

[thresholds]
"update.check.count" = "> 0"
"login.count" = "> 0"
"failover.gap" = "< 5s"
"tokens.collisions" = "== 0"
"invariants.violations" = "== 0"
"#;

#[test]
fn embedded_run_takes_every_branch_plays_observes_and_survives_a_balancer_kill() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write_scenario(dir.path(), FULL_SCENARIO);
    let out = dir.path().join("out");
    let bin = server_bin();
    let output = run_sim(&[
        "run",
        scenario.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--server-bin",
        bin.to_str().unwrap(),
    ]);
    assert_eq!(code(&output), 0, "{}", printed(&output));
    let report = read_report(&out);
    assert_eq!(report["schema"], "catwar-sim/report/v1");
    assert_eq!(report["exit_code"], 0);
    assert!(report["steps"]["update.check"]["count"].as_u64().unwrap() > 0);
    assert!(report["steps"]["file.download"]["count"].as_u64().unwrap() > 0);
    let gaps = report["failover"]["gaps_ms"].as_array().unwrap();
    assert_eq!(gaps.len(), 1, "{}", report["failover"]);
    assert!(gaps[0].as_f64().unwrap() > 0.0);
    assert_eq!(report["faults"][0]["ok"], true, "{}", report["faults"]);
    assert!(out.join("server.log").is_file());

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
