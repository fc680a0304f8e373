//! The summary table printed at the end of a run.

use super::{Report, StepReport};
use crate::scenario::OBSERVER;
use crate::step::Step;
use std::fmt::Write as _;

impl Report {
    /// The summary table printed at the end of a run.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let server = &self.server;
        let _ = writeln!(out, "server: {}", server.describe());
        let name_width = self.steps.keys().map(String::len).max().unwrap_or(4).max(4);
        let _ = writeln!(
            out,
            "{:<name_width$} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}   (latency in ms)",
            "step", "count", "errors", "p50", "p90", "p99", "p99.9", "max"
        );
        for (name, step) in self.steps_in_script_order() {
            let _ = writeln!(
                out,
                "{name:<name_width$} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}",
                step.count,
                step.errors,
                ms(step.p50_us),
                ms(step.p90_us),
                ms(step.p99_us),
                ms(step.p999_us),
                ms(step.max_us)
            );
        }
        if !self.errors_by_code.is_empty() {
            let codes: Vec<String> = self
                .errors_by_code
                .iter()
                .map(|(c, n)| format!("{c} {n}"))
                .collect();
            let _ = writeln!(out, "errors by code: {}", codes.join(", "));
        }
        let expected: Vec<String> = self
            .steps_in_script_order()
            .flat_map(|(name, step)| {
                step.expected_by_code
                    .iter()
                    .map(move |(code, n)| format!("{name} {code} {n}"))
            })
            .collect();
        if !expected.is_empty() {
            let _ = writeln!(out, "expected refusals: {}", expected.join(", "));
        }
        self.summarize_faults(&mut out);
        self.summarize_failover(&mut out);
        self.summarize_load(&mut out);
        for threshold in &self.thresholds {
            let actual =
                threshold
                    .actual
                    .map_or("none".to_string(), |v| match threshold.unit.as_str() {
                        "" if v.fract() == 0.0 => format!("{v:.0}"),
                        "" => format!("{v:.3}"),
                        unit => format!("{v:.3} {unit}"),
                    });
            let verdict = if threshold.pass { "pass" } else { "FAIL" };
            let _ = writeln!(
                out,
                "threshold {verdict} {} {} (actual {actual})",
                threshold.metric, threshold.condition
            );
        }
        if let Some(abort) = &self.abort {
            let _ = writeln!(out, "aborted: {}", abort.describe());
        }
        for invariant in &self.invariants {
            let verdict = if invariant.violations == 0 {
                "ok  "
            } else {
                "VIOLATED"
            };
            let _ = writeln!(
                out,
                "invariant {verdict} {} ({} checked, {} violations)",
                invariant.name, invariant.checked, invariant.violations
            );
        }
        out
    }

    /// Steps in the order of the script, then any the script no longer has.
    pub(super) fn steps_in_script_order(&self) -> impl Iterator<Item = (&String, &StepReport)> {
        let position = |name: &str| Step::from_name(name).map_or(usize::MAX, Step::index);
        let mut steps: Vec<(&String, &StepReport)> = self.steps.iter().collect();
        steps.sort_by_key(|(name, _)| position(name));
        steps.into_iter()
    }

    /// The funnel, the open model's arrivals, the knee and the simulator's own use.
    fn summarize_load(&self, out: &mut String) {
        let reached: Vec<String> = self
            .funnel
            .iter()
            .filter(|row| row.sessions > 0)
            .map(|row| {
                let p50 = row.p50_ms.map_or("-".to_string(), |ms| ms.to_string());
                format!(
                    "{} {} ({} clients, p50 {p50} ms)",
                    row.stage, row.sessions, row.clients
                )
            })
            .collect();
        if !reached.is_empty() {
            let _ = writeln!(out, "funnel: {}", reached.join(" → "));
        }
        if let Some(arrivals) = &self.arrivals {
            let _ = writeln!(
                out,
                "arrivals ({}): {:.0} expected, {} started, {} dropped",
                arrivals.arrival, arrivals.expected, arrivals.started, arrivals.dropped
            );
        }
        if let Some(knee) = &self.knee {
            match (knee.t_s, &knee.condition) {
                (Some(t_s), Some(condition)) => {
                    let _ = writeln!(
                        out,
                        "knee: at {t_s} s, {condition} broke for {} s at {:.1} arrivals/s; \
                         {} requests/s the second before, {} clients active",
                        knee.window_s, knee.arrival_rate_per_s, knee.throughput_per_s, knee.active
                    );
                }
                _ => {
                    let _ = writeln!(
                        out,
                        "knee: not reached up to {:.1} arrivals/s ({} requests/s at best)",
                        knee.arrival_rate_per_s, knee.throughput_per_s
                    );
                }
            }
        }
        self.summarize_services(out);
        let sim = &self.sim;
        if sim.peak_active > 0 {
            let per_client = sim.rss_per_active_kib.map_or(String::new(), |kib| {
                format!(", {kib:.1} KiB per active client")
            });
            let _ = writeln!(
                out,
                "simulator: {} process(es), peak {} active clients, {} descriptors, {:.1} MiB \
                 resident{per_client}",
                sim.workers,
                sim.peak_active,
                sim.peak_open_files,
                sim.peak_rss_kib as f64 / 1024.0
            );
        }
        for agent in &sim.agents {
            let _ = writeln!(
                out,
                "agent {}: {} from {}, clock offset {:+.3} ms ± {:.3} ms, sent {:.1} KiB/s",
                agent.index,
                agent.name,
                agent.peer,
                agent.clock_offset_us as f64 / 1_000.0,
                agent.clock_uncertainty_us as f64 / 1_000.0,
                agent.received_bytes_per_s / 1024.0
            );
        }
        for lost in &sim.lost {
            let verdict = if sim.lost_fails_run {
                "FAIL"
            } else {
                "tolerated"
            };
            let _ = writeln!(out, "lost: {lost} ({verdict})");
        }
    }

    fn summarize_faults(&self, out: &mut String) {
        if self.faults.is_empty() {
            return;
        }
        let faults: Vec<String> = self
            .faults
            .iter()
            .map(|f| {
                let mut outcome = match (f.ok, f.back_after_ms) {
                    (false, _) => format!("failed: {}", f.detail.as_deref().unwrap_or("")),
                    (true, Some(ms)) => format!("back after {ms:.0} ms"),
                    (true, None) if f.for_s.is_some() => {
                        format!("for {:.1} s", f.for_s.unwrap_or_default())
                    }
                    (true, None) if f.service == OBSERVER => "gone; not restarted".to_string(),
                    (true, None) => "not back before the end".to_string(),
                };
                if let Some(integrity) = &f.integrity {
                    outcome.push_str(&format!("; db {integrity}"));
                }
                format!(
                    "{} {} at {:.1} s ({outcome})",
                    f.action,
                    f.service,
                    f.executed_at_ms / 1000.0
                )
            })
            .collect();
        let _ = writeln!(out, "faults: {}", faults.join(", "));
    }

    fn summarize_failover(&self, out: &mut String) {
        let failover = &self.failover;
        if failover.kills.is_empty() {
            return;
        }
        let gaps: Vec<String> = failover
            .kills
            .iter()
            .map(|k| {
                k.gap_ms
                    .map_or("unmeasured".to_string(), |g| format!("{g:.1} ms"))
            })
            .collect();
        let unavailable: u64 = failover.kills.iter().map(|k| k.unavailable).sum();
        let _ = writeln!(
            out,
            "failover: {} balancer fault(s), gaps {}; median {}, max {}; {unavailable} unavailable answers",
            failover.kills.len(),
            gaps.join(", "),
            failover.median_ms.map_or("-".to_string(), |g| format!("{g:.1} ms")),
            failover.max_ms.map_or("-".to_string(), |g| format!("{g:.1} ms")),
        );
    }
}

pub(super) fn ms(us: Option<u64>) -> String {
    us.map_or("-".to_string(), |us| format!("{:.2}", us as f64 / 1000.0))
}
