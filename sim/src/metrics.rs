//! Measurement: latency histograms, counts and errors per step, per-second series,
//! invariant counters and failover picks.
//!
//! Clients record into one of [`METRIC_SHARDS`] shards, chosen by client id, so that
//! thousands of tasks on several threads rarely wait on the same lock. Totals use exact
//! HDR histograms (1 µs to 60 s, 3 significant figures); the per-second series uses
//! smaller 2-figure histograms that are drained every interval, so memory stays flat
//! however long the run. Latency histograms hold successful requests only; failed ones
//! count as requests and as errors by code. An expected refusal (the `login_failed` a
//! wrong password must get, the `login_again` after an IP change) is a success of its
//! step, counted by code apart from errors. A late one (a tick interval beyond its
//! bound) is both: its latency goes into the histograms, so that the percentiles show
//! the lateness, and it counts as an error by code.

use crate::failover::{merge_windows, FailoverTracker, KillWindow, Pick};
use crate::step::{Invariant, Step};
use crate::tokens::{TokenPrefix, TokenSet};
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// The fastest loopback request still takes a microsecond; finer resolution is noise.
pub const LATENCY_US_MIN: u64 = 1;
/// Requests time out long before a minute; larger values are clamped to this.
pub const LATENCY_US_MAX: u64 = 60_000_000;
/// Three figures keep totals within 0.1 %, the usual HDR precision for latency reports.
pub const LATENCY_SIGNIFICANT_FIGURES: u8 = 3;
/// Per-second points only feed charts and progress lines, where 1 % is plenty and a
/// histogram eight times smaller matters.
const INTERVAL_SIGNIFICANT_FIGURES: u8 = 2;
/// Enough shards that a few dozen worker threads rarely collide, few enough that the
/// per-shard histograms stay a few MiB in total.
pub const METRIC_SHARDS: usize = 16;
/// Error codes come from servers; a bound keeps a misbehaving one from growing the map.
const ERROR_CODES_MAX: usize = 64;
/// Codes longer than this are cut; real codes are a word or two.
const ERROR_CODE_BYTES_MAX: usize = 48;
/// Where codes beyond `ERROR_CODES_MAX` are counted.
const ERROR_CODE_OVERFLOW: &str = "other_codes";

/// An empty latency histogram with the totals' bounds and precision.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(LATENCY_US_MIN, LATENCY_US_MAX, LATENCY_SIGNIFICANT_FIGURES)
        .expect("constant histogram bounds are valid")
}

fn interval_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(LATENCY_US_MIN, LATENCY_US_MAX, INTERVAL_SIGNIFICANT_FIGURES)
        .expect("constant histogram bounds are valid")
}

/// Totals of one step.
#[derive(Clone, Debug)]
pub struct StepTotals {
    /// Latency of successful requests, µs.
    pub latency: Histogram<u64>,
    /// Requests made, failed ones included.
    pub count: u64,
    /// Failed requests.
    pub errors: u64,
    /// Failed requests by error code.
    pub errors_by_code: BTreeMap<String, u64>,
    /// Expected refusals by code; they are successes, in `latency` and not in `errors`.
    pub expected_by_code: BTreeMap<String, u64>,
}

impl StepTotals {
    fn new() -> StepTotals {
        StepTotals {
            latency: latency_histogram(),
            count: 0,
            errors: 0,
            errors_by_code: BTreeMap::new(),
            expected_by_code: BTreeMap::new(),
        }
    }

    fn add_error(&mut self, code: &str) {
        self.errors += 1;
        count_code(&mut self.errors_by_code, code);
    }

    fn merge(&mut self, other: &StepTotals) {
        self.latency
            .add(&other.latency)
            .expect("histograms share bounds");
        self.count += other.count;
        self.errors += other.errors;
        for (code, n) in &other.errors_by_code {
            *self.errors_by_code.entry(code.clone()).or_insert(0) += n;
        }
        for (code, n) in &other.expected_by_code {
            *self.expected_by_code.entry(code.clone()).or_insert(0) += n;
        }
    }
}

/// Counts one answer with `code`, keeping the map bounded: codes come from servers, and
/// a misbehaving one must not grow the map without end.
fn count_code(counts: &mut BTreeMap<String, u64>, code: &str) {
    let mut end = code.len().min(ERROR_CODE_BYTES_MAX);
    while !code.is_char_boundary(end) {
        end -= 1;
    }
    let code = &code[..end];
    if let Some(n) = counts.get_mut(code) {
        *n += 1;
    } else if counts.len() < ERROR_CODES_MAX {
        counts.insert(code.to_string(), 1);
    } else {
        *counts.entry(ERROR_CODE_OVERFLOW.to_string()).or_insert(0) += 1;
    }
}

/// One step during the current interval.
#[derive(Debug)]
struct StepInterval {
    latency: Histogram<u64>,
    requests: u64,
    errors: u64,
}

impl StepInterval {
    fn new() -> StepInterval {
        StepInterval {
            latency: interval_histogram(),
            requests: 0,
            errors: 0,
        }
    }

    fn drain_into(&mut self, into: &mut StepInterval) {
        into.latency
            .add(&self.latency)
            .expect("histograms share bounds");
        into.requests += self.requests;
        into.errors += self.errors;
        self.latency.reset();
        self.requests = 0;
        self.errors = 0;
    }
}

/// How often an invariant was checked and how often it failed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InvariantCount {
    /// Times checked.
    pub checked: u64,
    /// Times violated.
    pub violations: u64,
}

#[derive(Debug)]
struct Shard {
    steps: Vec<StepTotals>,
    interval: Vec<StepInterval>,
    invariants: Vec<InvariantCount>,
    failover: FailoverTracker,
}

impl Shard {
    fn new() -> Shard {
        Shard {
            steps: Step::ALL.iter().map(|_| StepTotals::new()).collect(),
            interval: Step::ALL.iter().map(|_| StepInterval::new()).collect(),
            invariants: vec![InvariantCount::default(); Invariant::ALL.len()],
            failover: FailoverTracker::default(),
        }
    }
}

/// One step in one interval of the series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IntervalStep {
    /// Requests recorded during the interval.
    pub requests: u64,
    /// Failed requests recorded during the interval.
    pub errors: u64,
    /// 99th percentile latency of the interval's successful requests (2 figures).
    pub p99_us: Option<u64>,
}

/// One interval of the per-second series.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IntervalPoint {
    /// Index of the interval: 0 covers the first second of the run.
    pub t_s: u64,
    /// Figures per step, indexed like `Step::ALL`.
    pub steps: Vec<IntervalStep>,
}

/// Everything measured, merged over all shards.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Totals per step, indexed like `Step::ALL`.
    pub steps: Vec<StepTotals>,
    /// Counts per invariant, indexed like `Invariant::ALL`.
    pub invariants: Vec<InvariantCount>,
    /// One merged window per balancer kill, in order.
    pub kill_windows: Vec<KillWindow>,
    /// The per-second series.
    pub series: Vec<IntervalPoint>,
}

/// The measurements of one run.
#[derive(Debug)]
pub struct Metrics {
    start: Instant,
    shards: Vec<Mutex<Shard>>,
    series: Mutex<Vec<IntervalPoint>>,
    tokens: TokenSet,
}

impl Metrics {
    /// Empty measurements for a run that started at `start`.
    pub fn new(start: Instant) -> Arc<Metrics> {
        Arc::new(Metrics {
            start,
            shards: (0..METRIC_SHARDS)
                .map(|_| Mutex::new(Shard::new()))
                .collect(),
            series: Mutex::new(Vec::new()),
            tokens: TokenSet::default(),
        })
    }

    /// The recorder for one virtual client.
    pub fn recorder(self: &Arc<Metrics>, client_id: u64) -> Recorder {
        Recorder {
            metrics: Arc::clone(self),
            shard: (client_id % METRIC_SHARDS as u64) as usize,
        }
    }

    /// Microseconds from the start of the run to `at`.
    pub fn micros(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.start).as_micros() as u64
    }

    /// Starts timing a balancer kill sent at `at`; call right before sending it.
    pub fn mark_kill(&self, at: Instant) {
        let at_us = self.micros(at);
        for shard in &self.shards {
            lock(shard).failover.open_window(at_us);
        }
    }

    /// Closes the current interval: drains every shard's interval figures into the next
    /// point of the series and returns that point.
    pub fn close_interval(&self) -> IntervalPoint {
        let mut merged: Vec<StepInterval> = Step::ALL.iter().map(|_| StepInterval::new()).collect();
        for shard in &self.shards {
            let mut shard = lock(shard);
            for (from, into) in shard.interval.iter_mut().zip(merged.iter_mut()) {
                from.drain_into(into);
            }
        }
        let steps = merged
            .iter()
            .map(|s| IntervalStep {
                requests: s.requests,
                errors: s.errors,
                p99_us: (!s.latency.is_empty()).then(|| s.latency.value_at_quantile(0.99)),
            })
            .collect();
        let mut series = lock(&self.series);
        let point = IntervalPoint {
            t_s: series.len() as u64,
            steps,
        };
        series.push(point.clone());
        point
    }

    /// Adds checks of `invariant` made once for the whole run, such as the comparison of
    /// the ledger with the DB after the clients stopped.
    pub fn add_invariant(&self, invariant: Invariant, count: InvariantCount) {
        let mut shard = lock(&self.shards[0]);
        let total = &mut shard.invariants[invariant.index()];
        total.checked += count.checked;
        total.violations += count.violations;
    }

    /// Merges every shard into one snapshot.
    pub fn snapshot(&self) -> Snapshot {
        let mut steps: Vec<StepTotals> = Step::ALL.iter().map(|_| StepTotals::new()).collect();
        let mut invariants = vec![InvariantCount::default(); Invariant::ALL.len()];
        let mut trackers = Vec::with_capacity(self.shards.len());
        for shard in &self.shards {
            let shard = lock(shard);
            for (into, from) in steps.iter_mut().zip(&shard.steps) {
                into.merge(from);
            }
            for (into, from) in invariants.iter_mut().zip(&shard.invariants) {
                into.checked += from.checked;
                into.violations += from.violations;
            }
            trackers.push(shard.failover.clone());
        }
        Snapshot {
            steps,
            invariants,
            kill_windows: merge_windows(&trackers),
            series: lock(&self.series).clone(),
        }
    }
}

/// Locks a mutex even if a client task panicked while holding it: the figures are
/// counters, and a run should still report what it measured.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How a timed request turned out.
#[derive(Clone, Copy)]
enum Outcome<'a> {
    /// Answered as hoped.
    Success,
    /// Refused with the code the script expected.
    Expected(&'a str),
    /// Completed past its bound; an error with this code.
    Late(&'a str),
}

/// The handle a virtual client records through.
#[derive(Debug, Clone)]
pub struct Recorder {
    metrics: Arc<Metrics>,
    shard: usize,
}

impl Recorder {
    fn shard(&self) -> MutexGuard<'_, Shard> {
        lock(&self.metrics.shards[self.shard])
    }

    /// Records a successful request of `step` that ran from `started` to `done`.
    pub fn success(&self, step: Step, started: Instant, done: Instant) {
        self.record_success(step, started, done, None);
    }

    /// Records a request of `step` that got the refusal `code` the script expected,
    /// such as `login_failed` for a wrong password: a success, counted by its code.
    pub fn expected(&self, step: Step, code: &str, started: Instant, done: Instant) {
        self.record_success(step, started, done, Some(code));
    }

    /// Records a `step` that completed, but later than its bound allows, such as a tick
    /// interval of more than 1.5 periods: its latency is recorded, and it is an error
    /// with `code`.
    pub fn late(&self, step: Step, code: &str, started: Instant, done: Instant) {
        self.record(step, started, done, Outcome::Late(code));
    }

    fn record_success(&self, step: Step, started: Instant, done: Instant, code: Option<&str>) {
        self.record(
            step,
            started,
            done,
            code.map_or(Outcome::Success, Outcome::Expected),
        );
    }

    fn record(&self, step: Step, started: Instant, done: Instant, outcome: Outcome<'_>) {
        let latency_us = done.saturating_duration_since(started).as_micros() as u64;
        let latency_us = latency_us.clamp(LATENCY_US_MIN, LATENCY_US_MAX);
        let mut shard = self.shard();
        let totals = &mut shard.steps[step.index()];
        totals.count += 1;
        totals.latency.saturating_record(latency_us);
        match outcome {
            Outcome::Success => {}
            Outcome::Expected(code) => count_code(&mut totals.expected_by_code, code),
            Outcome::Late(code) => totals.add_error(code),
        }
        let interval = &mut shard.interval[step.index()];
        interval.requests += 1;
        interval.errors += u64::from(matches!(outcome, Outcome::Late(_)));
        interval.latency.saturating_record(latency_us);
    }

    /// Records a failed request of `step` with its error code.
    pub fn failure(&self, step: Step, code: &str) {
        let mut shard = self.shard();
        let totals = &mut shard.steps[step.index()];
        totals.count += 1;
        totals.add_error(code);
        let interval = &mut shard.interval[step.index()];
        interval.requests += 1;
        interval.errors += 1;
    }

    /// Records a successful balancer pick (an `update: true` answer) completed at `done`.
    pub fn pick(&self, done: Instant, epoch: u64) {
        let at_us = self.metrics.micros(done);
        self.shard().failover.pick(Pick { at_us, epoch });
    }

    /// Records an `unavailable` answer from storage completed at `done`.
    pub fn storage_unavailable(&self, done: Instant) {
        let at_us = self.metrics.micros(done);
        self.shard().failover.unavailable(at_us);
    }

    /// Records a token issued by profile and checks `tokens.unique` against every token
    /// issued before, to any client.
    pub fn token_issued(&self, token: TokenPrefix) {
        let duplicate = !self.metrics.tokens.insert(token);
        self.invariant(Invariant::TokensUnique, duplicate);
    }

    /// Records one check of `invariant` and whether it was violated.
    pub fn invariant(&self, invariant: Invariant, violated: bool) {
        let mut shard = self.shard();
        let count = &mut shard.invariants[invariant.index()];
        count.checked += 1;
        count.violations += u64::from(violated);
    }
}

#[cfg(test)]
mod tests;
