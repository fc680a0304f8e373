//! Whole runs against the reference server: the embedded topology, and `--target`.

use crate::util::{
    code, printed, read_report, run_sim, server_bin, write_scenario, Topology, TARGET_USERS,
};

/// Every branch of the script, often enough to be taken in a few seconds, and a
/// balancer kill; `start` may meet no play server (`no_capacity`).
const FULL_SCENARIO: &str = r#"
[scenario]
name = "full-test"
seed = 7
duration_s = 9

[population]
clients = 50
users = 40

[load]
think_time_ms = 50

[script]
stale_version = 0.3
wrong_password = 0.2
ranking = 0.5
ip_change = 0.2
idle = 0.05
start = 0.3

[server]
argon2 = "fast"
token_idle_s = 2

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
fn embedded_run_takes_every_branch_and_survives_a_balancer_kill() {
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
    // Until play servers run, the lobby may only answer no_capacity to start.
    let start = &steps["lobby.start"];
    let no_capacity = start["errors_by_code"]["no_capacity"].as_u64().unwrap_or(0);
    assert_eq!(start["errors"].as_u64().unwrap(), no_capacity, "{start}");

    let checked = |name: &str| {
        let invariants = report["invariants"].as_array().unwrap();
        let found = invariants.iter().find(|i| i["name"] == name).unwrap();
        found["checked"].as_u64().unwrap()
    };
    assert!(checked("tokens.unique") > 0);
    assert!(checked("lobby.foreign_ip_served") > 0);
    assert!(checked("login.wrong_password_token") > 0);
    assert_eq!(report["server"]["argon2"], "fast");
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
             [load]\nthink_time_ms = 50\n[thresholds]\n\"update.check.p50\" = \"< 1us\"\n"
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
