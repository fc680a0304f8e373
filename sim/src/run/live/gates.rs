//! Abort gates while running: each `abort_on_fail` threshold is evaluated as every
//! merged second closes, over the last `window_s` seconds, once `delay_abort_eval_s`
//! seconds of the run have passed. The first gate that fails stops the run.
//!
//! A window evaluates like the whole run would: latency percentiles from the window's
//! merged histograms (the per-second ones, 2 significant figures), counts and rates
//! from its summed counts. A window without a sample of its figure (no successful
//! `play.match` yet) is not judged: a gate stops a run for what it measured, never for
//! what it has not measured yet.

use crate::metrics::{interval_histogram, IntervalPoint};
use crate::report::AbortReport;
use crate::scenario::AbortGate;
use crate::step::Step;
use crate::threshold::{Metric, Stat};
use hdrhistogram::Histogram;
use std::collections::VecDeque;

/// One merged second as the gates need it.
#[derive(Debug)]
struct Second {
    requests: Vec<u64>,
    errors: Vec<u64>,
    dropped: u64,
    /// Histograms of the steps some gate reads, by step index; `None` for the others.
    histograms: Vec<Option<Histogram<u64>>>,
}

/// The gates of a run and the seconds they look back on.
#[derive(Debug)]
pub(super) struct Gates {
    gates: Vec<AbortGate>,
    window: VecDeque<Second>,
    window_s_max: usize,
    /// Steps whose histograms some gate reads.
    kept: Vec<bool>,
    fired: bool,
}

impl Gates {
    pub(super) fn new(gates: Vec<AbortGate>) -> Gates {
        let mut kept = vec![false; Step::ALL.len()];
        for gate in &gates {
            if let Metric::Step { step, stat } = gate.threshold.metric {
                kept[step.index()] |= is_latency(stat);
            }
        }
        Gates {
            window_s_max: gates.iter().map(|g| g.window_s as usize).max().unwrap_or(0),
            gates,
            window: VecDeque::new(),
            kept,
            fired: false,
        }
    }

    /// Takes one merged second and evaluates every gate; the first that fails, once.
    pub(super) fn second(
        &mut self,
        point: &IntervalPoint,
        histograms: &[Histogram<u64>],
    ) -> Option<AbortReport> {
        if self.gates.is_empty() || self.fired {
            return None;
        }
        self.window.push_front(Second {
            requests: point.steps.iter().map(|s| s.requests).collect(),
            errors: point.steps.iter().map(|s| s.errors).collect(),
            dropped: point.load.dropped,
            histograms: histograms
                .iter()
                .zip(&self.kept)
                .map(|(h, &kept)| kept.then(|| h.clone()))
                .collect(),
        });
        self.window.truncate(self.window_s_max);
        // Second t closes t + 1 seconds into the run.
        let elapsed_s = point.t_s + 1;
        for gate in &self.gates {
            let window_s = gate.window_s as usize;
            if elapsed_s < gate.delay_abort_eval_s || self.window.len() < window_s {
                continue;
            }
            let Some(actual) = value_of(gate.threshold.metric, self.window.iter().take(window_s))
            else {
                continue;
            };
            if !gate.threshold.holds(actual) {
                self.fired = true;
                return Some(AbortReport {
                    metric: gate.threshold.name.clone(),
                    condition: gate.threshold.condition.clone(),
                    at_s: point.t_s,
                    window_s: gate.window_s,
                    actual: gate.threshold.in_condition_unit(actual),
                });
            }
        }
        None
    }
}

fn is_latency(stat: Stat) -> bool {
    matches!(
        stat,
        Stat::P50 | Stat::P90 | Stat::P99 | Stat::P999 | Stat::Max
    )
}

/// The value of `metric` over `seconds`, in base units, or `None` without a sample.
fn value_of<'a>(metric: Metric, seconds: impl Iterator<Item = &'a Second> + Clone) -> Option<f64> {
    match metric {
        Metric::Step { step, stat } if is_latency(stat) => {
            let mut merged = interval_histogram();
            for second in seconds {
                if let Some(hist) = &second.histograms[step.index()] {
                    merged.add(hist).expect("interval histograms share bounds");
                }
            }
            if merged.is_empty() {
                return None;
            }
            let value = match stat {
                Stat::P50 => merged.value_at_quantile(0.50),
                Stat::P90 => merged.value_at_quantile(0.90),
                Stat::P99 => merged.value_at_quantile(0.99),
                Stat::P999 => merged.value_at_quantile(0.999),
                _ => merged.max(),
            };
            Some(value as f64)
        }
        Metric::Step { step, stat } => {
            let i = step.index();
            let requests: u64 = seconds.clone().map(|s| s.requests[i]).sum();
            let errors: u64 = seconds.map(|s| s.errors[i]).sum();
            match stat {
                Stat::Count => Some(requests as f64),
                Stat::Errors => Some(errors as f64),
                _ => (requests > 0).then(|| errors as f64 / requests as f64),
            }
        }
        Metric::ErrorsRate => {
            // Requests only, as the whole run's errors.rate: ticks are no requests.
            let requests_only = |counts: &Vec<u64>| -> u64 {
                Step::ALL
                    .iter()
                    .filter(|step| step.is_request())
                    .map(|step| counts[step.index()])
                    .sum()
            };
            let requests: u64 = seconds.clone().map(|s| requests_only(&s.requests)).sum();
            let errors: u64 = seconds.map(|s| requests_only(&s.errors)).sum();
            (requests > 0).then(|| errors as f64 / requests as f64)
        }
        Metric::ArrivalsDropped => Some(seconds.map(|s| s.dropped).sum::<u64>() as f64),
        // The scenario admits no gate on a figure that is not measured second by second.
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{IntervalStep, LoadPoint};
    use crate::scenario::Scenario;

    fn gates(entry: &str) -> Gates {
        let text = format!("[scenario]\nname = \"x\"\n[thresholds]\n{entry}\n");
        Gates::new(Scenario::parse(&text).unwrap().abort_gates)
    }

    /// A second in which `lobby.me` answered `requests` times in `latency_us` each.
    fn second(t_s: u64, requests: u64, latency_us: u64) -> (IntervalPoint, Vec<Histogram<u64>>) {
        let mut histograms: Vec<Histogram<u64>> =
            Step::ALL.iter().map(|_| interval_histogram()).collect();
        let me = Step::LobbyMe.index();
        if requests > 0 {
            histograms[me].record_n(latency_us, requests).unwrap();
        }
        let steps = Step::ALL
            .iter()
            .enumerate()
            .map(|(i, _)| {
                let requests = if i == me { requests } else { 0 };
                IntervalStep::from_histogram(requests, 0, &histograms[i])
            })
            .collect();
        let point = IntervalPoint {
            t_s,
            steps,
            errors_by_code: vec![Default::default(); Step::ALL.len()],
            load: LoadPoint::default(),
        };
        (point, histograms)
    }

    #[test]
    fn a_gate_waits_for_its_delay_and_a_full_window_then_fires_once() {
        let mut gates = gates(
            "\"lobby.me.p99\" = { limit = \"< 10ms\", abort_on_fail = true, \
             delay_abort_eval_s = 4, window_s = 2 }",
        );
        let mut fired = Vec::new();
        for t_s in 0..8 {
            // Slow from the start; quiet in second 4.
            let (point, histograms) = second(t_s, if t_s == 4 { 0 } else { 10 }, 50_000);
            if let Some(abort) = gates.second(&point, &histograms) {
                fired.push(abort);
            }
        }
        assert_eq!(fired.len(), 1, "{fired:?}");
        // Second 3 closes 4 s into the run: the delay is over and the window is full.
        assert_eq!(fired[0].at_s, 3);
        assert_eq!(fired[0].metric, "lobby.me.p99");
        assert_eq!(fired[0].window_s, 2);
        assert!((fired[0].actual - 50.0).abs() < 1.0, "{:?}", fired[0]);
    }

    #[test]
    fn a_window_without_samples_is_not_judged() {
        let mut gates =
            gates("\"lobby.me.p99\" = { limit = \"< 10ms\", abort_on_fail = true, window_s = 1 }");
        let (point, histograms) = second(0, 0, 0);
        assert_eq!(gates.second(&point, &histograms), None);
        let (point, histograms) = second(1, 5, 1_000);
        assert_eq!(gates.second(&point, &histograms), None);
    }
}
