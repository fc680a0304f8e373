//! Whole runs against the reference server: the embedded topology, and `--target`.

use crate::util::{code, printed, read_report, run_sim, server_bin, write_scenario, Topology};

const FAILOVER_SCENARIO: &str = r#"
[scenario]
name = "failover-test"
seed = 7
duration_s = 8

[population]
clients = 50

[load]
think_time_ms = 50

[script]
stale_version = 0.3

[[faults]]
at_s = 3.0
action = "kill"
service = "balancer"

[thresholds]
"update.check.count" = "> 0"
"failover.gap" = "< 5s"
"invariants.violations" = "== 0"
"#;

#[test]
fn embedded_run_survives_a_balancer_kill_and_reports_the_gap() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write_scenario(dir.path(), FAILOVER_SCENARIO);
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
}

#[test]
fn target_run_fails_an_impossible_threshold_with_exit_1() {
    let topology = Topology::start();
    let dir = tempfile::tempdir().unwrap();
    let scenario = write_scenario(
        dir.path(),
        "[scenario]\nname = \"target-test\"\nduration_s = 3\n[population]\nclients = 10\n\
         [load]\nthink_time_ms = 50\n[thresholds]\n\"update.check.p50\" = \"< 1us\"\n",
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
}
