//! A Prometheus scrape configuration for a running topology (`catwar-server
//! prometheus-config --topology FILE`): one job, `catwar`, with every service's admin
//! listener as a target labelled `service="NAME"`, so `up{job="catwar"}` has one series
//! per service and any series can be grouped by service.

use std::fmt::Write as _;

use crate::compose::topology::Topology;

/// The job every target belongs to.
pub const JOB: &str = "catwar";
/// How often a service is scraped unless told otherwise: a load run's figures change
/// by the second, and one scrape of a service costs it well under a millisecond.
pub const SCRAPE_INTERVAL_S_DEFAULT: u64 = 5;

/// The configuration's YAML: a scrape every `interval_s`, each allowed as long as the
/// interval (Prometheus refuses a timeout above the interval).
pub fn scrape_config(topology: &Topology, interval_s: u64) -> String {
    let interval_s = interval_s.max(1);
    let mut y = String::new();
    y.push_str("# Written by `catwar-server prometheus-config` from a topology.json.\n");
    let _ = writeln!(
        y,
        "global:\n  scrape_interval: {interval_s}s\n  scrape_timeout: {interval_s}s\n"
    );
    let _ = writeln!(
        y,
        "scrape_configs:\n  - job_name: {JOB}\n    metrics_path: /metrics\n    static_configs:"
    );
    for service in &topology.services {
        let _ = writeln!(
            y,
            "      - targets: [\"{}\"]\n        labels:\n          service: {}",
            service.metrics, service.name
        );
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compose::topology::Plan;
    use crate::config::Settings;

    #[test]
    fn every_service_is_a_target_with_its_name() {
        let plan = Plan::new("/tmp/x".into(), Settings::default(), 7100).unwrap();
        let topology = Topology::of_plan(&plan);
        let yaml = scrape_config(&topology, 1);
        assert!(
            yaml.contains("  scrape_interval: 1s\n  scrape_timeout: 1s\n"),
            "{yaml}"
        );
        for service in &topology.services {
            let target = format!(
                "      - targets: [\"{}\"]\n        labels:\n          service: {}\n",
                service.metrics, service.name
            );
            assert!(yaml.contains(&target), "{target} missing from\n{yaml}");
        }
        assert_eq!(yaml.matches("- targets:").count(), topology.services.len());
    }
}
