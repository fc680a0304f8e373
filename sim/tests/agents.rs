//! Agents over TCP (`run --agents N --listen ADDR`, `catwar-sim agent --connect ADDR`):
//! the same run as one process, a lost agent, a wrong secret, a missing agent.

use crate::util::{
    agent, printed, read_report, run_embedded, server_bin, write_scenario, Coordinator,
    Topology, AGENT_SECRET, OPEN_SCENARIO, TARGET_USERS,
};
use std::path::Path;


#[test]
fn two_agents_over_tcp_measure_what_one_process_measures() {
    // Some sessions type a wrong password, and all of them are refused in both runs.
    let text = OPEN_SCENARIO.replace("[script]\n", "[script]\nwrong_password = 0.1\n");
    let alone = run_embedded(&text);

    let dir = tempfile::tempdir().unwrap();
    let scenario = write_scenario(dir.path(), &text);
    let out = dir.path().join("out");
    let bin = server_bin();
    let (coordinator, addr) = Coordinator::start(&[
        scenario.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--server-bin",
        bin.to_str().unwrap(),
        "--agents",
        "2",
        "--listen",
        "127.0.0.1:0",
    ]);
    let agents = [agent(&addr, AGENT_SECRET, &[]), agent(&addr, AGENT_SECRET, &[])];
    let (code, stdout, stderr) = coordinator.finish();
    for agent in agents {
        let output = agent.wait_with_output().unwrap();
        assert!(output.status.success(), "{}", printed(&output));
    }
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let shared = read_report(&out);

    let figure = |report: &serde_json::Value, pointer: &str| {
        report
            .pointer(pointer)
            .and_then(serde_json::Value::as_u64)
            .unwrap_or_else(|| panic!("{pointer} missing"))
    };
    for pointer in [
        "/arrivals/started",
        "/steps/update.check/count",
        "/steps/login/count",
        "/steps/login/expected_by_code/login_failed",
    ] {
        assert_eq!(
            figure(&shared, pointer),
            figure(&alone, pointer),
            "{pointer}"
        );
    }
    let invariants = |report: &serde_json::Value| -> Vec<(String, u64)> {
        let list = report["invariants"].as_array().unwrap();
        list.iter()
            .map(|i| (i["name"].as_str().unwrap().to_string(), i["violations"].as_u64().unwrap()))
            .collect()
    };
    assert_eq!(invariants(&shared), invariants(&alone));
    assert!(invariants(&shared).iter().all(|(_, violations)| *violations == 0));
    let checked = |report: &serde_json::Value, name: &str| {
        let list = report["invariants"].as_array().unwrap();
        list.iter().find(|i| i["name"] == name).unwrap()["checked"]
            .as_u64()
            .unwrap()
    };
    // The coordinator checked both agents' ledgers against the DB, which they never read.
    assert!(checked(&shared, "results.no_loss") > 0, "{stderr}");
    assert_eq!(
        checked(&shared, "tokens.unique"),
        checked(&alone, "tokens.unique")
    );
    let agents = shared["sim"]["agents"].as_array().unwrap();
    assert_eq!(agents.len(), 2);
    for (index, agent) in agents.iter().enumerate() {
        assert_eq!(agent["index"], index as u64);
        assert!(agent["received_bytes"].as_u64().unwrap() > 0, "{agent}");
        assert!(agent["clock_uncertainty_us"].as_u64().is_some(), "{agent}");
    }
    assert_eq!(shared["sim"]["workers"], 2);
    assert!(stdout.contains("agent 1: "), "{stdout}");
}

/// A closed loop of the test topology's users, long enough to lose an agent in.
fn closed_scenario(duration_s: u64) -> String {
    format!(
        r#"
[scenario]
name = "agents-closed-test"
seed = 3
duration_s = {duration_s}

[population]
clients = {TARGET_USERS}
users = {TARGET_USERS}

[load]
think_time_ms = 200

[script]
wrong_password = 0.0
ip_change = 0.0
start = 0.0
"#
    )
}

/// A coordinator of two agents running `closed_scenario(duration_s)` against
/// `topology`, with its files in `dir` (the report in `dir/out`) and `extra` arguments.
fn two_agents_against(
    topology: &Topology,
    dir: &Path,
    duration_s: u64,
    extra: &[&str],
) -> (Coordinator, String) {
    let scenario = write_scenario(dir, &closed_scenario(duration_s));
    let target = topology.path();
    let out = dir.join("out");
    let mut args = vec![
        scenario.to_str().unwrap(),
        "--target",
        target.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--agents",
        "2",
        "--listen",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    Coordinator::start(&args)
}

#[test]
fn an_agent_killed_mid_run_fails_the_run_and_is_named() {
    let topology = Topology::start();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let (mut coordinator, addr) = two_agents_against(&topology, dir.path(), 12, &[]);
    // The survivor's clients connect from a pool of this host's addresses of their own.
    let mut survivor = agent(&addr, AGENT_SECRET, &["--source-ips", "127.0.0.3,127.0.0.4"]);
    let mut victim = agent(&addr, AGENT_SECRET, &[]);
    // Both joined and were assigned; whenever the kill lands from here on, before or
    // after the start, the agent is lost before it sent its totals.
    coordinator.wait_for("agent 1: ");
    victim.kill().unwrap();
    victim.wait().unwrap();
    let (code, stdout, stderr) = coordinator.finish();
    assert!(survivor.wait().unwrap().success());
    assert_eq!(code, 70, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let report = read_report(&out);
    assert_eq!(report["exit_code"], 70);
    let lost = report["sim"]["lost"].as_array().unwrap();
    assert_eq!(lost.len(), 1, "{lost:?}");
    let killed = lost[0].as_str().unwrap();
    assert!(killed.starts_with("agent ") && killed.contains("127.0.0.1:"), "{killed}");
    assert!(stdout.contains(&format!("lost: {killed} (FAIL)")), "{stdout}");
    assert!(stdout.contains("a worker or agent was lost"), "{stdout}");
    // The survivor's share still counts.
    assert!(report["steps"]["login"]["count"].as_u64().unwrap() > 0);
}

#[test]
fn a_wrong_secret_is_refused_and_a_missing_agent_named() {
    let topology = Topology::start();
    let dir = tempfile::tempdir().unwrap();
    let (coordinator, addr) =
        two_agents_against(&topology, dir.path(), 3, &["--agents-wait-s", "4"]);
    let good = agent(&addr, AGENT_SECRET, &[]);
    let wrong = agent(&addr, "not-the-secret-of-this-run", &[]);
    let refused = wrong.wait_with_output().unwrap();
    assert_eq!(refused.status.code(), Some(70), "{}", printed(&refused));
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("refused this agent: wrong secret"), "{said}");
    let (code, stdout, stderr) = coordinator.finish();
    assert_eq!(code, 70, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stderr.contains("refused agent") && stderr.contains("wrong secret"), "{stderr}");
    assert!(
        stderr.contains("waited 4 s for 2 agents") && stderr.contains("missing 1 (agent 1)"),
        "{stderr}"
    );
    // The agent that did join is told the run is off: its coordinator hung up.
    let joined = good.wait_with_output().unwrap();
    assert!(!joined.status.success(), "{}", printed(&joined));
}
