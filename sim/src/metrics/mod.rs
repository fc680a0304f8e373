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

use crate::arrivals::Schedule;
use crate::failover::{merge_windows, FailoverTracker, KillWindow};
use crate::step::{Invariant, Stage, Step};
use crate::tokens::{TokenPrefix, TokenSet};
use hdrhistogram::Histogram;
use load::LoadGauges;
pub use load::{process_usage, LoadPoint};
// Tests elsewhere build totals by hand, with the histograms the metrics use.
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
#[cfg(test)]
pub use totals::latency_histogram;
use totals::{count_code, StepInterval, STAGE_MS_MAX};
pub use totals::{
    interval_histogram, InvariantCount, StageTotals, StepTotals, LATENCY_US_MAX, LATENCY_US_MIN,
};

/// Enough shards that a few dozen worker threads rarely collide, few enough that the
/// per-shard histograms stay a few MiB in total.
pub const METRIC_SHARDS: usize = 16;

#[derive(Debug)]
struct Shard {
    steps: Vec<StepTotals>,
    interval: Vec<StepInterval>,
    invariants: Vec<InvariantCount>,
    failover: FailoverTracker,
    funnel: Vec<StageTotals>,
}

impl Shard {
    fn new() -> Shard {
        Shard {
            funnel: Stage::ALL.iter().map(|_| StageTotals::new()).collect(),
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
    /// Median latency of the interval's successful requests (2 figures).
    pub p50_us: Option<u64>,
    /// 90th percentile latency of the interval's successful requests (2 figures).
    pub p90_us: Option<u64>,
    /// 99th percentile latency of the interval's successful requests (2 figures).
    pub p99_us: Option<u64>,
}

impl IntervalStep {
    /// The figures of an interval with `requests`, `errors` and the latencies `latency`.
    pub fn from_histogram(requests: u64, errors: u64, latency: &Histogram<u64>) -> IntervalStep {
        let at = |quantile| (!latency.is_empty()).then(|| latency.value_at_quantile(quantile));
        IntervalStep {
            requests,
            errors,
            p50_us: at(0.50),
            p90_us: at(0.90),
            p99_us: at(0.99),
        }
    }
}

/// One interval of the per-second series.
#[derive(Clone, Debug, PartialEq)]
pub struct IntervalPoint {
    /// Index of the interval: 0 covers the first second of the run.
    pub t_s: u64,
    /// Figures per step, indexed like `Step::ALL`.
    pub steps: Vec<IntervalStep>,
    /// Failed requests by error code per step, indexed like `Step::ALL`, kept apart from
    /// `steps` so that those stay plain numbers to copy.
    pub errors_by_code: Vec<BTreeMap<String, u64>>,
    /// The load offered and held.
    pub load: LoadPoint,
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
    /// The funnel, indexed like `Stage::ALL`.
    pub funnel: Vec<StageTotals>,
    /// Arrivals started and dropped over the run, and the peaks of the gauges.
    pub load: LoadPoint,
    /// Resident memory before any client started, KiB (of the workers, if any).
    pub baseline_rss_kib: u64,
}

/// The measurements of one run.
#[derive(Debug)]
pub struct Metrics {
    start: Instant,
    shards: Vec<Mutex<Shard>>,
    series: Mutex<Vec<IntervalPoint>>,
    tokens: TokenSet,
    gauges: LoadGauges,
    /// Resident memory when the run's measurements began, before any client, KiB.
    baseline_rss_kib: u64,
    /// The same, summed over worker processes; replaces this process's own when set.
    worker_baseline_rss_kib: AtomicU64,
    /// The open model's rate schedule and this process's fraction of it; `None` once
    /// arrivals stopped (or for the closed model).
    offered: Mutex<Option<(Schedule, f64)>>,
    /// Failover windows from worker processes, merged with this process's own.
    worker_trackers: Mutex<Vec<FailoverTracker>>,
    /// Where balancer kills are forwarded as µs since the start, for worker processes.
    kill_listeners: Mutex<Vec<tokio::sync::mpsc::UnboundedSender<u64>>>,
    /// `--request-log`: where sampled clients' requests go, once set.
    request_log: std::sync::OnceLock<Arc<RequestLog>>,
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
            gauges: LoadGauges::default(),
            baseline_rss_kib: process_usage().1,
            worker_baseline_rss_kib: AtomicU64::new(0),
            offered: Mutex::new(None),
            worker_trackers: Mutex::new(Vec::new()),
            kill_listeners: Mutex::new(Vec::new()),
            request_log: std::sync::OnceLock::new(),
        })
    }

    /// When the run started.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// Forwards every later balancer kill to `listener`, as µs since the start.
    pub fn forward_kills(&self, listener: tokio::sync::mpsc::UnboundedSender<u64>) {
        lock(&self.kill_listeners).push(listener);
    }

    /// Counts an arrival of the open model: started, or dropped because every client
    /// was busy.
    pub fn arrival(&self, started: bool) {
        let g = &self.gauges;
        let (total, interval) = if started {
            (&g.arrivals, &g.interval_arrivals)
        } else {
            (&g.dropped, &g.interval_dropped)
        };
        total.fetch_add(1, Ordering::Relaxed);
        interval.fetch_add(1, Ordering::Relaxed);
    }

    /// Reports the rate `schedule` offers, times `fraction` (this process's share), in
    /// every second of the series until [`Metrics::stop_offering`].
    pub fn set_schedule(&self, schedule: Schedule, fraction: f64) {
        *lock(&self.offered) = Some((schedule, fraction));
    }

    /// Arrivals stopped: the series shows no offered rate from now on.
    pub fn stop_offering(&self) {
        *lock(&self.offered) = None;
    }

    /// A client entered (`true`) or left (`false`) a session.
    pub fn client_active(&self, active: bool) {
        if active {
            self.gauges.active.fetch_add(1, Ordering::Relaxed);
        } else {
            self.gauges.active.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The load point of the interval closing now; resets the interval counters.
    fn close_load(&self) -> LoadPoint {
        let g = &self.gauges;
        let (open_files, rss_kib) = process_usage();
        let elapsed_s = self.start.elapsed().as_secs_f64();
        let offered_per_s = lock(&self.offered)
            .as_ref()
            .map_or(0.0, |(schedule, fraction)| {
                schedule.rate_at(elapsed_s) * fraction
            });
        LoadPoint {
            arrivals: g.interval_arrivals.swap(0, Ordering::Relaxed),
            dropped: g.interval_dropped.swap(0, Ordering::Relaxed),
            offered_per_s,
            active: g.active.load(Ordering::Relaxed),
            open_files,
            rss_kib,
        }
    }

    /// Every token issued so far, for a coordinator that merges workers.
    pub fn token_prefixes(&self) -> Vec<TokenPrefix> {
        self.tokens.prefixes()
    }

    /// Records a token a worker process saw; false if another worker saw it first,
    /// which is one more violation of `tokens.unique`.
    pub fn merge_token(&self, token: TokenPrefix) -> bool {
        self.tokens.insert(token)
    }

    /// Adds the totals of a worker process: steps, invariants, funnel, arrivals and its
    /// view of every balancer kill.
    pub fn absorb(&self, worker: &Snapshot) {
        let mut shard = lock(&self.shards[0]);
        for (into, from) in shard.steps.iter_mut().zip(&worker.steps) {
            into.merge(from);
        }
        for (into, from) in shard.invariants.iter_mut().zip(&worker.invariants) {
            into.checked += from.checked;
            into.violations += from.violations;
        }
        for (into, from) in shard.funnel.iter_mut().zip(&worker.funnel) {
            into.merge(from);
        }
        drop(shard);
        let g = &self.gauges;
        g.arrivals
            .fetch_add(worker.load.arrivals, Ordering::Relaxed);
        g.dropped.fetch_add(worker.load.dropped, Ordering::Relaxed);
        self.worker_baseline_rss_kib
            .fetch_add(worker.baseline_rss_kib, Ordering::Relaxed);
        lock(&self.worker_trackers)
            .push(FailoverTracker::from_windows(worker.kill_windows.clone()));
    }

    /// Appends a point merged elsewhere (from worker processes) to the series.
    pub fn push_point(&self, mut point: IntervalPoint) {
        let mut series = lock(&self.series);
        point.t_s = series.len() as u64;
        series.push(point);
    }

    /// The recorder for one virtual client.
    pub fn recorder(self: &Arc<Metrics>, client_id: u64) -> Recorder {
        let sampled = self
            .request_log
            .get()
            .filter(|log| log.samples(client_id))
            .map(|log| Arc::new(Sampled::new(Arc::clone(log))));
        Recorder {
            metrics: Arc::clone(self),
            shard: (client_id % METRIC_SHARDS as u64) as usize,
            client: client_id,
            sampled,
        }
    }

    /// Logs the requests of the clients `log` samples, for every recorder made from now
    /// on; a second log is ignored.
    pub fn log_requests(&self, log: Arc<RequestLog>) {
        let _ = self.request_log.set(log);
    }

    /// Microseconds from the start of the run to `at`.
    pub fn micros(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.start).as_micros() as u64
    }

    /// Starts timing a balancer kill sent at `at`; call right before sending it.
    pub fn mark_kill(&self, at: Instant) {
        self.mark_kill_at_us(self.micros(at));
    }

    /// Starts timing a balancer kill sent `at_us` after the start of the run.
    pub fn mark_kill_at_us(&self, at_us: u64) {
        for shard in &self.shards {
            lock(shard).failover.open_window(at_us);
        }
        // A worker that is gone no longer needs to hear of kills.
        lock(&self.kill_listeners).retain(|listener| listener.send(at_us).is_ok());
    }

    /// Closes the current interval: drains every shard's interval figures into the next
    /// point of the series and returns that point, with the interval's latency
    /// histograms per step (2 figures), which a worker process sends to its coordinator.
    pub fn close_interval(&self) -> (IntervalPoint, Vec<Histogram<u64>>) {
        let mut merged: Vec<StepInterval> = Step::ALL.iter().map(|_| StepInterval::new()).collect();
        for shard in &self.shards {
            let mut shard = lock(shard);
            for (from, into) in shard.interval.iter_mut().zip(merged.iter_mut()) {
                from.drain_into(into);
            }
        }
        let steps = merged
            .iter()
            .map(|s| IntervalStep::from_histogram(s.requests, s.errors, &s.latency))
            .collect();
        let load = self.close_load();
        let mut series = lock(&self.series);
        let point = IntervalPoint {
            t_s: series.len() as u64,
            steps,
            errors_by_code: merged
                .iter_mut()
                .map(|s| std::mem::take(&mut s.errors_by_code))
                .collect(),
            load,
        };
        series.push(point.clone());
        let histograms = merged.into_iter().map(|s| s.latency).collect();
        (point, histograms)
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
        let mut funnel: Vec<StageTotals> = Stage::ALL.iter().map(|_| StageTotals::new()).collect();
        for shard in &self.shards {
            let shard = lock(shard);
            for (into, from) in funnel.iter_mut().zip(&shard.funnel) {
                into.merge(from);
            }
            for (into, from) in steps.iter_mut().zip(&shard.steps) {
                into.merge(from);
            }
            for (into, from) in invariants.iter_mut().zip(&shard.invariants) {
                into.checked += from.checked;
                into.violations += from.violations;
            }
            trackers.push(shard.failover.clone());
        }
        trackers.extend(lock(&self.worker_trackers).iter().cloned());
        let series = lock(&self.series).clone();
        let mut load = LoadPoint::default();
        for point in &series {
            load.peak(&point.load);
        }
        load.arrivals = self.gauges.arrivals.load(Ordering::Relaxed);
        load.dropped = self.gauges.dropped.load(Ordering::Relaxed);
        let workers_baseline = self.worker_baseline_rss_kib.load(Ordering::Relaxed);
        Snapshot {
            steps,
            invariants,
            kill_windows: merge_windows(&trackers),
            series,
            funnel,
            load,
            baseline_rss_kib: if workers_baseline > 0 {
                workers_baseline
            } else {
                self.baseline_rss_kib
            },
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

mod load;
mod recorder;
mod requests;
#[cfg(test)]
mod tests;
mod totals;

pub use recorder::Recorder;
use requests::Sampled;
pub use requests::{RequestLine, RequestLog};
