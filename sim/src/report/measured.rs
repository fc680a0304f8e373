//! The measured sections of a report, made from a metrics snapshot: per-step figures,
//! the funnel, invariant counts, failover figures and the per-second series.

use super::{
    encode_histogram, FailoverSummary, InvariantReport, TimePoint, TimeStep, Timeseries,
    INTERVAL_MS,
};
use crate::metrics::{IntervalPoint, Snapshot, StageTotals, StepTotals};
use crate::step::{Invariant, Stage, Step};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The figures of one step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    /// Requests made, failed ones included.
    pub count: u64,
    /// Failed requests.
    pub errors: u64,
    /// Latency percentiles of successful requests, µs; `null` without any.
    pub p50_us: Option<u64>,
    /// 90th percentile, µs.
    pub p90_us: Option<u64>,
    /// 99th percentile, µs.
    pub p99_us: Option<u64>,
    /// 99.9th percentile, µs.
    pub p999_us: Option<u64>,
    /// Largest latency, µs.
    pub max_us: Option<u64>,
    /// Mean latency, µs.
    pub mean_us: Option<f64>,
    /// Smallest latency, µs; absent from reports of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_us: Option<u64>,
    /// Standard deviation of the latencies, µs; absent from reports of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stddev_us: Option<f64>,
    /// Failed requests by error code.
    pub errors_by_code: BTreeMap<String, u64>,
    /// Expected refusals by code (such as `login_failed` for a wrong password); they are
    /// successes, counted in the latencies and not in `errors`.
    #[serde(default)]
    pub expected_by_code: BTreeMap<String, u64>,
    /// The latency histogram: HdrHistogram V2, base64.
    pub hist: String,
}

impl StepReport {
    /// The report of one step's totals.
    pub fn from_totals(totals: &StepTotals) -> StepReport {
        let latency = &totals.latency;
        let some = !latency.is_empty();
        let at = |quantile: f64| some.then(|| latency.value_at_quantile(quantile));
        StepReport {
            count: totals.count,
            errors: totals.errors,
            p50_us: at(0.50),
            p90_us: at(0.90),
            p99_us: at(0.99),
            p999_us: at(0.999),
            max_us: some.then(|| latency.max()),
            mean_us: some.then(|| latency.mean()),
            min_us: some.then(|| latency.min()),
            stddev_us: some.then(|| latency.stdev()),
            errors_by_code: totals.errors_by_code.clone(),
            expected_by_code: totals.expected_by_code.clone(),
            hist: encode_histogram(latency),
        }
    }
}

/// One stage of the funnel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FunnelRow {
    /// The stage: update, download, login, lobby, play, observe, done.
    pub stage: String,
    /// Sessions that reached it.
    pub sessions: u64,
    /// Distinct clients that reached it at least once.
    pub clients: u64,
    /// Time spent in it per session, ms: median, 99th percentile and maximum (2 figures);
    /// `null` when no session left the stage.
    pub p50_ms: Option<u64>,
    /// 99th percentile, ms.
    pub p99_ms: Option<u64>,
    /// Longest, ms.
    pub max_ms: Option<u64>,
    /// The time histogram, ms: HdrHistogram V2, base64.
    pub hist: String,
}

impl FunnelRow {
    /// The row of one stage's totals.
    pub fn from_totals(stage: Stage, totals: &StageTotals) -> FunnelRow {
        let time = &totals.time_ms;
        let some = !time.is_empty();
        FunnelRow {
            stage: stage.name().to_string(),
            sessions: totals.sessions,
            clients: totals.clients,
            p50_ms: some.then(|| time.value_at_quantile(0.5)),
            p99_ms: some.then(|| time.value_at_quantile(0.99)),
            max_ms: some.then(|| time.max()),
            hist: encode_histogram(time),
        }
    }
}

/// The measured parts of a report, from a metrics snapshot.
#[derive(Debug)]
pub struct Measured {
    /// Figures per step.
    pub steps: BTreeMap<String, StepReport>,
    /// Errors by code over all steps.
    pub errors_by_code: BTreeMap<String, u64>,
    /// The per-second series.
    pub timeseries: Timeseries,
    /// Invariant counts.
    pub invariants: Vec<InvariantReport>,
    /// Failover figures.
    pub failover: FailoverSummary,
    /// The funnel, in stage order.
    pub funnel: Vec<FunnelRow>,
    /// Arrivals started and dropped over the run (open model).
    pub arrivals_started: u64,
    /// See [`super::ArrivalsReport::dropped`].
    pub arrivals_dropped: u64,
    /// See [`super::SimUsage::baseline_rss_kib`].
    pub baseline_rss_kib: u64,
}

impl Measured {
    /// Turns a snapshot into report sections.
    pub fn from_snapshot(snapshot: &Snapshot) -> Measured {
        let mut errors_by_code = BTreeMap::new();
        let mut steps = BTreeMap::new();
        for step in Step::ALL {
            let totals = &snapshot.steps[step.index()];
            for (code, n) in &totals.errors_by_code {
                *errors_by_code.entry(code.clone()).or_insert(0) += n;
            }
            steps.insert(step.name().to_string(), StepReport::from_totals(totals));
        }
        let invariants = Invariant::ALL
            .iter()
            .map(|&invariant| {
                let count = snapshot.invariants[invariant.index()];
                InvariantReport {
                    name: invariant.name().to_string(),
                    checked: count.checked,
                    violations: count.violations,
                }
            })
            .collect();
        Measured {
            steps,
            errors_by_code,
            timeseries: Timeseries {
                interval_ms: INTERVAL_MS,
                points: snapshot.series.iter().map(time_point).collect(),
            },
            invariants,
            failover: FailoverSummary::from_windows(&snapshot.kill_windows),
            funnel: Stage::ALL
                .iter()
                .map(|&stage| FunnelRow::from_totals(stage, &snapshot.funnel[stage.index()]))
                .collect(),
            arrivals_started: snapshot.load.arrivals,
            arrivals_dropped: snapshot.load.dropped,
            baseline_rss_kib: snapshot.baseline_rss_kib,
        }
    }
}

/// The report's form of one point of the series.
pub fn time_point(point: &IntervalPoint) -> TimePoint {
    let steps = Step::ALL
        .iter()
        .map(|&step| {
            let figures = point.steps[step.index()];
            let time_step = TimeStep {
                requests: figures.requests,
                errors: figures.errors,
                p50_us: figures.p50_us,
                p90_us: figures.p90_us,
                p99_us: figures.p99_us,
                errors_by_code: point
                    .errors_by_code
                    .get(step.index())
                    .cloned()
                    .unwrap_or_default(),
            };
            (step.name().to_string(), time_step)
        })
        .collect();
    TimePoint {
        t_s: point.t_s,
        steps,
        load: point.load,
    }
}
