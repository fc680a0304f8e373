//! Pass/fail conditions on the figures of a run, as written in a scenario's `[thresholds]`.
//!
//! A threshold is a metric name and a condition: `"update.check.p99" = "< 100ms"`. Metric
//! names are `<step>.<p50|p90|p99|p99.9|max|count|errors|errors.rate>`, `errors.rate`,
//! `failover.gap` (the largest gap of the run), `invariants.violations` and
//! `tokens.collisions` (duplicate tokens issued), `arrivals.dropped` (open-model arrivals
//! not started) and `knee.arrival_rate` (arrivals per second at a capacity run's knee).
//! Each metric has one kind of unit: latencies take `us`, `ms` or `s`, `errors.rate`
//! takes `%`, counts take plain numbers.
//! A mismatched unit or an unknown metric is an error, never a silent pass.
//!
//! This module only parses: which figure a metric names and whether a value meets a
//! condition. Finding the figure in a report (and judging the run) is
//! `report::judge`'s, one layer up, so that the scenario can hold thresholds without
//! knowing the report.

use crate::step::Step;

/// A figure of a run that a threshold can test.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Metric {
    /// A statistic of one step.
    Step {
        /// The step measured.
        step: Step,
        /// Which statistic of the step.
        stat: Stat,
    },
    /// Failed requests over all requests, all steps together.
    ErrorsRate,
    /// The largest failover gap of the run; unmeasured if any balancer kill has no gap.
    FailoverGap,
    /// The sum of violations over every invariant.
    InvariantsViolations,
    /// Tokens issued that equal one issued before: the violations of `tokens.unique`.
    TokensCollisions,
    /// Open model: arrivals that found every client busy and were not started.
    ArrivalsDropped,
    /// Capacity runs: the arrival rate offered when the knee was found, or the highest
    /// rate offered if the server never broke (per second).
    KneeArrivalRate,
}

/// A statistic of a step: a latency percentile, the maximum, or the request count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    /// Median latency of successful requests.
    P50,
    /// 90th percentile latency of successful requests.
    P90,
    /// 99th percentile latency of successful requests.
    P99,
    /// 99.9th percentile latency of successful requests.
    P999,
    /// Largest latency of a successful request.
    Max,
    /// Requests made, failed ones included.
    Count,
    /// Failed requests.
    Errors,
    /// Failed requests over requests made.
    ErrorsRate,
}

impl Stat {
    const ALL: [(Stat, &'static str); 8] = [
        (Stat::P50, "p50"),
        (Stat::P90, "p90"),
        (Stat::P99, "p99"),
        (Stat::P999, "p99.9"),
        (Stat::Max, "max"),
        (Stat::Count, "count"),
        (Stat::Errors, "errors"),
        (Stat::ErrorsRate, "errors.rate"),
    ];
}

/// What a metric counts, which decides the units its conditions may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Microseconds; conditions use `us`, `ms` or `s`.
    Latency,
    /// A fraction; conditions use `%`.
    Ratio,
    /// A plain number.
    Count,
}

impl Metric {
    /// Parses a metric name such as `update.check.p99` or `errors.rate`.
    pub fn parse(name: &str) -> Option<Metric> {
        match name {
            "errors.rate" => return Some(Metric::ErrorsRate),
            "failover.gap" => return Some(Metric::FailoverGap),
            "invariants.violations" => return Some(Metric::InvariantsViolations),
            "tokens.collisions" => return Some(Metric::TokensCollisions),
            "arrivals.dropped" => return Some(Metric::ArrivalsDropped),
            "knee.arrival_rate" => return Some(Metric::KneeArrivalRate),
            _ => {}
        }
        Step::ALL.into_iter().find_map(|step| {
            let stat_name = name.strip_prefix(step.name())?.strip_prefix('.')?;
            let (stat, _) = Stat::ALL.into_iter().find(|(_, text)| *text == stat_name)?;
            Some(Metric::Step { step, stat })
        })
    }

    fn kind(self) -> Kind {
        match self {
            Metric::Step {
                stat: Stat::Count | Stat::Errors,
                ..
            }
            | Metric::InvariantsViolations
            | Metric::TokensCollisions
            | Metric::ArrivalsDropped
            | Metric::KneeArrivalRate => Kind::Count,
            Metric::Step {
                stat: Stat::ErrorsRate,
                ..
            }
            | Metric::ErrorsRate => Kind::Ratio,
            Metric::Step { .. } | Metric::FailoverGap => Kind::Latency,
        }
    }

    /// Whether the per-second series holds this metric, so that it can be judged second
    /// by second (the knee of a capacity run).
    pub fn per_second(self) -> bool {
        matches!(
            self,
            Metric::Step {
                stat: Stat::P99,
                ..
            } | Metric::ErrorsRate
        )
    }
}

/// The comparison of a condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `==`
    Eq,
}

impl Op {
    /// Longer operators first, so that `<=` is not read as `<` followed by `=`.
    const ALL: [(Op, &'static str); 5] = [
        (Op::Le, "<="),
        (Op::Ge, ">="),
        (Op::Eq, "=="),
        (Op::Lt, "<"),
        (Op::Gt, ">"),
    ];

    fn holds(self, actual: f64, limit: f64) -> bool {
        match self {
            Op::Lt => actual < limit,
            Op::Le => actual <= limit,
            Op::Gt => actual > limit,
            Op::Ge => actual >= limit,
            Op::Eq => actual == limit,
        }
    }
}

/// The unit a condition was written in; reports show the actual value in the same unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Microseconds.
    Us,
    /// Milliseconds.
    Ms,
    /// Seconds.
    S,
    /// Percent.
    Percent,
    /// A plain number.
    Plain,
}

impl Unit {
    /// Longer suffixes first, so that `ms` and `us` are not read as `s`.
    const SUFFIXES: [(Unit, &'static str); 4] = [
        (Unit::Ms, "ms"),
        (Unit::Us, "us"),
        (Unit::S, "s"),
        (Unit::Percent, "%"),
    ];

    /// The unit as reports write it after a value: `ms`, `%`, or nothing for a count.
    pub fn suffix(self) -> &'static str {
        match self {
            Unit::Us => "us",
            Unit::Ms => "ms",
            Unit::S => "s",
            Unit::Percent => "%",
            Unit::Plain => "",
        }
    }

    /// How many base units (microseconds, fraction, count) one of this unit is.
    fn base_per_unit(self) -> f64 {
        match self {
            Unit::Us | Unit::Plain => 1.0,
            Unit::Ms => 1_000.0,
            Unit::S => 1_000_000.0,
            Unit::Percent => 0.01,
        }
    }

    fn fits(self, kind: Kind) -> bool {
        match kind {
            Kind::Latency => matches!(self, Unit::Us | Unit::Ms | Unit::S),
            Kind::Ratio => self == Unit::Percent,
            Kind::Count => self == Unit::Plain,
        }
    }
}

/// Why a threshold could not be parsed; the scenario adds the field name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ThresholdError(pub String);

/// A parsed threshold.
#[derive(Clone, Debug, PartialEq)]
pub struct Threshold {
    /// The metric name as written, such as `update.check.p99`.
    pub name: String,
    /// The metric tested.
    pub metric: Metric,
    /// The condition as written, such as `< 100ms`.
    pub condition: String,
    op: Op,
    /// The limit in base units (microseconds, fraction, count).
    limit: f64,
    unit: Unit,
}

impl Threshold {
    /// Parses one `[thresholds]` entry.
    pub fn parse(name: &str, condition: &str) -> Result<Threshold, ThresholdError> {
        let metric = Metric::parse(name).ok_or_else(|| {
            ThresholdError(format!(
                "unknown metric; known are <step>.<p50|p90|p99|p99.9|max|count|errors|errors.rate> \
                 for the steps {}, and errors.rate, failover.gap, invariants.violations, \
                 tokens.collisions, arrivals.dropped, knee.arrival_rate",
                Step::ALL.map(Step::name).join(", ")
            ))
        })?;
        let text = condition.trim();
        let (op, rest) = Op::ALL
            .into_iter()
            .find_map(|(op, symbol)| text.strip_prefix(symbol).map(|rest| (op, rest.trim())))
            .ok_or_else(|| {
                ThresholdError(format!(
                    "condition {condition:?} must start with <, <=, >, >= or =="
                ))
            })?;
        let (number, unit) = Unit::SUFFIXES
            .into_iter()
            .find_map(|(unit, suffix)| rest.strip_suffix(suffix).map(|n| (n.trim(), unit)))
            .unwrap_or((rest, Unit::Plain));
        let value: f64 = number
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| {
                ThresholdError(format!(
                    "condition {condition:?}: {number:?} is not a number >= 0"
                ))
            })?;
        let kind = metric.kind();
        if !unit.fits(kind) {
            let expected = match kind {
                Kind::Latency => "a latency unit (us, ms or s)",
                Kind::Ratio => "a percentage (%)",
                Kind::Count => "a plain number without unit",
            };
            return Err(ThresholdError(format!(
                "condition {condition:?} needs {expected}"
            )));
        }
        Ok(Threshold {
            name: name.to_string(),
            metric,
            condition: text.to_string(),
            op,
            limit: value * unit.base_per_unit(),
            unit,
        })
    }

    /// Whether an actual value in base units meets the condition.
    pub fn holds(&self, actual: f64) -> bool {
        self.op.holds(actual, self.limit)
    }

    /// The unit the condition was written in, as reports write it after a value.
    pub fn unit_suffix(&self) -> &'static str {
        self.unit.suffix()
    }

    /// An actual value in base units, converted to the unit the condition was written
    /// in, as reports show it.
    pub fn in_condition_unit(&self, actual: f64) -> f64 {
        actual / self.unit.base_per_unit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(name: &str, condition: &str) -> Threshold {
        Threshold::parse(name, condition).unwrap()
    }

    #[test]
    fn parses_every_metric_form() {
        let p999 = parse("update.check.p99.9", "<= 2s");
        assert_eq!(
            p999.metric,
            Metric::Step {
                step: Step::UpdateCheck,
                stat: Stat::P999
            }
        );
        assert_eq!(p999.limit, 2_000_000.0);
        assert_eq!(
            parse("file.download.count", ">= 10").metric,
            Metric::Step {
                step: Step::FileDownload,
                stat: Stat::Count
            }
        );
        assert_eq!(parse("errors.rate", "< 0.1%").limit, 0.001);
        assert_eq!(parse("failover.gap", "<1s").metric, Metric::FailoverGap);
        assert_eq!(parse("invariants.violations", "== 0").op, Op::Eq);
        assert_eq!(parse("update.check.p99", "< 250us").limit, 250.0);
        assert_eq!(
            parse("lobby.me.p99", "< 50ms").metric,
            Metric::Step {
                step: Step::LobbyMe,
                stat: Stat::P99
            }
        );
        assert_eq!(
            parse("login.errors.rate", "< 1%").metric,
            Metric::Step {
                step: Step::Login,
                stat: Stat::ErrorsRate
            }
        );
        assert_eq!(
            parse("login.errors", "== 0").metric,
            Metric::Step {
                step: Step::Login,
                stat: Stat::Errors
            }
        );
        assert_eq!(
            parse("tokens.collisions", "== 0").metric,
            Metric::TokensCollisions
        );
    }

    #[test]
    fn unknown_metric_is_an_error() {
        for name in [
            "update.check.p98",
            "update.chek.p99",
            "errors",
            "lobby.me.p42",
            "login.error.rate",
            "tokens.collision",
            "",
        ] {
            let error = Threshold::parse(name, "< 1ms").unwrap_err();
            assert!(error.0.contains("unknown metric"), "{name}: {error}");
        }
    }

    #[test]
    fn wrong_unit_or_bad_condition_is_an_error() {
        assert!(Threshold::parse("update.check.p99", "< 100").is_err());
        assert!(Threshold::parse("errors.rate", "< 0.05").is_err());
        assert!(Threshold::parse("invariants.violations", "== 0ms").is_err());
        assert!(Threshold::parse("tokens.collisions", "== 0%").is_err());
        assert!(Threshold::parse("login.errors.rate", "< 0.01").is_err());
        assert!(Threshold::parse("login.errors", "< 1ms").is_err());
        assert!(Threshold::parse("update.check.p99", "100ms").is_err());
        assert!(Threshold::parse("update.check.p99", "< -1ms").is_err());
        assert!(Threshold::parse("update.check.p99", "< fastms").is_err());
    }
}
