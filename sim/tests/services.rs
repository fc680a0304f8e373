//! Where the load lands: every service's CPU and memory in the report of an embedded run.

use crate::util::{run_embedded, OPEN_SCENARIO};

/// A balancer kill at 1.5 s of the open test scenario, whose run ends after about 6 s:
/// the supervisor restarts the balancer under a new pid, which the sampler must follow.
const BALANCER_KILL: &str = r#"
[[faults]]
at_s = 1.5
action = "kill"
service = "balancer"
"#;

/// The embedded topology's services with `up`'s defaults (SPEC §3).
const SERVICES: [&str; 11] = [
    "storage",
    "balancer",
    "balancer-observer",
    "file-node-0",
    "file-node-1",
    "file-node-2",
    "profile",
    "lobby",
    "play-0",
    "play-1",
    "router",
];

#[test]
fn every_service_of_an_embedded_run_has_cpu_and_memory_samples_across_a_restart() {
    let report = run_embedded(&format!("{OPEN_SCENARIO}{BALANCER_KILL}"));
    let services = report["services"].as_array().expect("services is an array");
    let names: Vec<&str> = services
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    let mut expected = SERVICES.to_vec();
    expected.sort_unstable();
    assert_eq!(sorted, expected, "{names:?}");
    for service in services {
        assert_eq!(service["source"], "proc", "{service}");
        let samples = service["samples"].as_array().unwrap();
        assert!(!samples.is_empty(), "{service}");
        for sample in samples {
            assert!(sample["rss_bytes"].as_u64().unwrap() > 0, "{service}");
            assert!(sample["cpu_cores"].as_f64().unwrap() >= 0.0, "{service}");
            assert!(sample["t_s"].as_f64().unwrap() > 0.0, "{service}");
        }
        assert!(service["rss_bytes_max"].as_u64().unwrap() > 0, "{service}");
        assert!(service["cpu_cores_mean"].as_f64().is_some(), "{service}");
    }
    // The killed balancer is followed to its new process once `up` has rewritten
    // topology.json: it has samples from after it came back, unless it came back too
    // close to the end for a reading (one second of sampling, plus one of margin).
    let kill = &report["faults"][0];
    let back_ms = kill["executed_at_ms"].as_f64().unwrap()
        + kill["back_after_ms"].as_f64().unwrap_or(f64::INFINITY);
    let end_ms = report["duration_s"].as_f64().unwrap() * 1000.0;
    let balancer = services.iter().find(|s| s["name"] == "balancer").unwrap();
    if back_ms + 2_000.0 < end_ms {
        assert_eq!(balancer["processes"], 2, "{balancer}");
        let after = balancer["samples"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["t_s"].as_f64().unwrap() * 1000.0 > back_ms);
        assert!(
            after,
            "no sample after the restart at {back_ms} ms: {balancer}"
        );
    }
}
