//! Judging a run: the figure each threshold names, found in the report (or in one second
//! of its series, for the knee), the verdict on every threshold, and the exit code.
//!
//! Thresholds are parsed with the scenario, below the report; this is where they meet
//! the figures, so that the scenario never needs to know the report.

use super::{Report, TimePoint};
use crate::step::{Invariant, Step};
use crate::threshold::{Metric, Stat, Threshold};
use crate::{
    EXIT_INTERRUPTED, EXIT_INVARIANT_VIOLATED, EXIT_OK, EXIT_RUN_FAILED, EXIT_THRESHOLD_FAILED,
};
use serde::{Deserialize, Serialize};

/// The outcome of one threshold, as written to the report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ThresholdResult {
    /// The metric name, such as `update.check.p99`.
    pub metric: String,
    /// The condition as written, such as `< 100ms`.
    pub condition: String,
    /// The actual value in the condition's unit; `null` when the run did not produce it.
    pub actual: Option<f64>,
    /// That unit (`ms`, `%`, `s`, `us`), empty for a count.
    #[serde(default)]
    pub unit: String,
    /// Whether the condition held.
    pub pass: bool,
}

/// Tests `threshold` against an actual value in base units; a missing value fails.
pub(crate) fn evaluate(threshold: &Threshold, actual: Option<f64>) -> ThresholdResult {
    ThresholdResult {
        metric: threshold.name.clone(),
        condition: threshold.condition.clone(),
        actual: actual.map(|value| threshold.in_condition_unit(value)),
        unit: threshold.unit_suffix().to_string(),
        pass: actual.is_some_and(|value| threshold.holds(value)),
    }
}

impl Report {
    /// Evaluates the scenario's thresholds against this report and sets the exit code:
    /// an interrupted run (130) proves nothing, nor does one that lost a worker or agent
    /// (70, unless the scenario tolerates it); otherwise an invariant violation (2)
    /// takes precedence over a failed threshold (1).
    pub fn judge(&mut self, thresholds: &[Threshold]) {
        self.thresholds = thresholds
            .iter()
            .map(|t| evaluate(t, self.value_of(t.metric)))
            .collect();
        self.exit_code = if self.interrupted {
            EXIT_INTERRUPTED
        } else if self.sim.lost_fails_run && !self.sim.lost.is_empty() {
            EXIT_RUN_FAILED
        } else if self.invariants.iter().any(|i| i.violations > 0) {
            EXIT_INVARIANT_VIOLATED
        } else if self.thresholds.iter().any(|t| !t.pass) {
            EXIT_THRESHOLD_FAILED
        } else {
            EXIT_OK
        };
    }

    /// The value of `metric` in this report, in base units (microseconds, fraction,
    /// count), or `None` when the run did not produce it (no successful sample, no
    /// measured gap).
    pub(crate) fn value_of(&self, metric: Metric) -> Option<f64> {
        match metric {
            Metric::Step { step, stat } => {
                let figures = self.steps.get(step.name())?;
                let value = match stat {
                    Stat::P50 => figures.p50_us,
                    Stat::P90 => figures.p90_us,
                    Stat::P99 => figures.p99_us,
                    Stat::P999 => figures.p999_us,
                    Stat::Max => figures.max_us,
                    Stat::Count => Some(figures.count),
                    Stat::Errors => Some(figures.errors),
                    Stat::ErrorsRate => {
                        let rate = figures.errors as f64 / figures.count as f64;
                        return (figures.count > 0).then_some(rate);
                    }
                };
                value.map(|v| v as f64)
            }
            Metric::ErrorsRate => requests_error_rate(
                self.steps
                    .iter()
                    .map(|(name, s)| (name.as_str(), s.count, s.errors)),
            ),
            Metric::FailoverGap => {
                let failover = &self.failover;
                let measured = !failover.kills.is_empty() && failover.unmeasured == 0;
                if measured {
                    failover.max_ms.map(|ms| ms * 1000.0)
                } else {
                    None
                }
            }
            Metric::InvariantsViolations => {
                Some(self.invariants.iter().map(|i| i.violations).sum::<u64>() as f64)
            }
            Metric::TokensCollisions => self
                .invariants
                .iter()
                .find(|i| i.name == Invariant::TokensUnique.name())
                .map(|i| i.violations as f64),
            Metric::ArrivalsDropped => self.arrivals.as_ref().map(|a| a.dropped as f64),
            Metric::KneeArrivalRate => self.knee.as_ref().map(|k| k.arrival_rate_per_s),
        }
    }
}

/// Errors ÷ requests over `(step, requests, errors)`, counting requests only: server-pushed
/// ticks are no requests ([`Step::is_request`]) and would dilute the rate, whether of a
/// whole run or of one second.
fn requests_error_rate<'a>(steps: impl Iterator<Item = (&'a str, u64, u64)>) -> Option<f64> {
    let (requests, errors) = steps
        .filter(|(name, _, _)| Step::from_name(name).is_none_or(Step::is_request))
        .fold((0, 0), |(r, e), (_, requests, errors)| (r + requests, e + errors));
    (requests > 0).then(|| errors as f64 / requests as f64)
}

impl TimePoint {
    /// The value of a [`Metric::per_second`] metric in this second of the series, or
    /// `None` when the second holds no sample of it.
    pub(crate) fn value_of(&self, metric: Metric) -> Option<f64> {
        match metric {
            Metric::Step {
                step,
                stat: Stat::P99,
            } => self
                .steps
                .get(step.name())
                .and_then(|s| s.p99_us)
                .map(|us| us as f64),
            Metric::ErrorsRate => requests_error_rate(
                self.steps
                    .iter()
                    .map(|(name, s)| (name.as_str(), s.requests, s.errors)),
            ),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(name: &str, condition: &str) -> Threshold {
        Threshold::parse(name, condition).unwrap()
    }

    #[test]
    fn evaluation_compares_in_base_units_and_reports_in_the_condition_unit() {
        let p99 = parse("update.check.p99", "< 100ms");
        let fast = evaluate(&p99, Some(42_500.0));
        assert!(fast.pass);
        assert_eq!(fast.actual, Some(42.5));
        assert!(!evaluate(&p99, Some(100_000.0)).pass);
        let rate = parse("errors.rate", "<= 5%");
        assert!(evaluate(&rate, Some(0.05)).pass);
        assert_eq!(evaluate(&rate, Some(0.05)).actual, Some(5.0));
        assert!(!evaluate(&rate, Some(0.051)).pass);
        let exact = parse("invariants.violations", "== 0");
        assert!(evaluate(&exact, Some(0.0)).pass);
        assert!(!evaluate(&exact, Some(1.0)).pass);
        assert!(evaluate(&parse("file.download.count", "> 0"), Some(1.0)).pass);
    }

    #[test]
    fn missing_value_fails() {
        let result = evaluate(&parse("failover.gap", "< 1s"), None);
        assert!(!result.pass);
        assert_eq!(result.actual, None);
    }
}
