//! Command-line behaviour that needs no server: exit codes and messages.

use crate::util::{code, printed, run_sim, write_scenario};

#[test]
fn bad_command_line_exits_64_not_clap_default_2() {
    let output = run_sim(&["run"]);
    assert_eq!(code(&output), 64, "{}", printed(&output));
    let output = run_sim(&["launch", "x.toml"]);
    assert_eq!(code(&output), 64, "{}", printed(&output));
    let output = run_sim(&["compare", "a.json", "b.json", "--max-regression", "-5"]);
    assert_eq!(code(&output), 64, "{}", printed(&output));
}

#[test]
fn help_exits_0() {
    let output = run_sim(&["run", "--help"]);
    assert_eq!(code(&output), 0, "{}", printed(&output));
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("--server-bin"));
    // Every exit code the run can end with is listed, each with its meaning.
    for code in catwar_sim::EXIT_CODES {
        assert!(
            help.contains(&format!("\n  {code:<4} ")),
            "exit {code} missing from:\n{help}"
        );
    }
}

#[test]
fn bad_scenario_exits_64_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write_scenario(
        dir.path(),
        "[scenario]\nname = \"x\"\n[population]\nclients = 0\n",
    );
    let out = dir.path().join("out");
    let output = run_sim(&[
        "run",
        scenario.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code(&output), 64, "{}", printed(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("population.clients"),
        "{}",
        printed(&output)
    );
}

#[test]
fn missing_scenario_file_exits_64_naming_it() {
    let output = run_sim(&["run", "/nonexistent/scenario.toml"]);
    assert_eq!(code(&output), 64, "{}", printed(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/scenario.toml"));
}

#[test]
fn missing_target_exits_64_naming_the_flag_and_file() {
    let smoke = concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios/smoke.toml");
    let output = run_sim(&["run", smoke, "--target", "/nonexistent/topology.json"]);
    assert_eq!(code(&output), 64, "{}", printed(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--target") && stderr.contains("/nonexistent/topology.json"),
        "{}",
        printed(&output)
    );
}

#[test]
fn a_target_whose_settings_contradict_the_scenario_exits_64_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let topology = dir.path().join("topology.json");
    // smoke.toml assumes token_idle_s 3 and matches of 100 ticks.
    let text = r#"{"settings": {"token_idle_s": 600, "match_ticks": 100, "tick_hz": 20},
        "services": [{"name": "storage", "addr": "127.0.0.1:9", "pid": 1}]}"#;
    std::fs::write(&topology, text).unwrap();
    let smoke = concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios/smoke.toml");
    let output = run_sim(&["run", smoke, "--target", topology.to_str().unwrap()]);
    assert_eq!(code(&output), 64, "{}", printed(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--target")
            && stderr.contains("the target's token_idle_s is 600, the scenario's [server] token_idle_s is 3")
            && !stderr.contains("match_ticks"),
        "{}",
        printed(&output)
    );
}

#[test]
fn compare_with_unreadable_report_exits_64_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.json");
    std::fs::write(&garbage, "{not json").unwrap();
    let output = run_sim(&[
        "compare",
        garbage.to_str().unwrap(),
        garbage.to_str().unwrap(),
    ]);
    assert_eq!(code(&output), 64, "{}", printed(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("garbage.json"),
        "{}",
        printed(&output)
    );
}
