//! The handle through which a virtual client records its requests, stages and
//! invariant checks into its shard of [`Metrics`].

use super::requests::RequestLine;
use super::{
    count_code, lock, Metrics, Sampled, Shard, LATENCY_US_MAX, LATENCY_US_MIN, STAGE_MS_MAX,
};
use crate::failover::Pick;
use crate::step::{Invariant, Stage, Step};
use crate::tokens::TokenPrefix;
use crate::TRACE;
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant};

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
    pub(super) metrics: Arc<Metrics>,
    pub(super) shard: usize,
    pub(super) client: u64,
    /// Set when `--request-log` samples this client.
    pub(super) sampled: Option<Arc<Sampled>>,
}

impl Recorder {
    fn shard(&self) -> MutexGuard<'_, Shard> {
        lock(&self.metrics.shards[self.shard])
    }

    /// The request about to be recorded left at `sent`, later than the `started` it is
    /// timed from (an open-model session's first request); only the request log uses it.
    pub fn sent_late(&self, sent: Instant) {
        if let Some(sampled) = &self.sampled {
            sampled.sent_late(self.metrics.micros(sent));
        }
    }

    /// Adds a line to the request log if it samples this client.
    fn log(&self, step: Step, started: Option<Instant>, latency_us: Option<u64>, code: &str) {
        let Some(sampled) = &self.sampled else {
            return;
        };
        let scheduled_us = started.map(|at| self.metrics.micros(at));
        let sent_late_us = sampled.take_sent_late();
        sampled.log.offer(RequestLine {
            client: self.client,
            step: step.name(),
            scheduled_us,
            sent_us: sent_late_us.or(scheduled_us),
            latency_us,
            code: code.to_string(),
        });
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
        let code = match outcome {
            Outcome::Success => "ok",
            Outcome::Expected(code) | Outcome::Late(code) => code,
        };
        tracing::debug!(
            target: TRACE,
            client = self.client,
            step = step.name(),
            code,
            ms = latency_us as f64 / 1000.0
        );
        self.log(step, Some(started), Some(latency_us), code);
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
        if let Outcome::Late(code) = outcome {
            interval.add_error(code);
        }
        interval.latency.saturating_record(latency_us);
    }

    /// Records that a session entered `stage`; `first` if this client never had before.
    pub fn stage_entered(&self, stage: Stage, first: bool) {
        let mut shard = self.shard();
        let totals = &mut shard.funnel[stage.index()];
        totals.sessions += 1;
        totals.clients += u64::from(first);
    }

    /// Records the time a session spent in `stage`.
    pub fn stage_time(&self, stage: Stage, spent: Duration) {
        let ms = (spent.as_millis() as u64).clamp(1, STAGE_MS_MAX);
        self.shard().funnel[stage.index()]
            .time_ms
            .saturating_record(ms);
    }

    /// The client entered (`true`) or left (`false`) a session.
    pub fn client_active(&self, active: bool) {
        self.metrics.client_active(active);
    }

    /// Records a failed request of `step` with its error code.
    pub fn failure(&self, step: Step, code: &str) {
        tracing::debug!(target: TRACE, client = self.client, step = step.name(), error = code);
        self.log(step, None, None, code);
        let mut shard = self.shard();
        let totals = &mut shard.steps[step.index()];
        totals.count += 1;
        totals.add_error(code);
        let interval = &mut shard.interval[step.index()];
        interval.requests += 1;
        interval.add_error(code);
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
        if violated {
            tracing::debug!(target: TRACE, client = self.client, violated = invariant.name());
        }
        let mut shard = self.shard();
        let count = &mut shard.invariants[invariant.index()];
        count.checked += 1;
        count.violations += u64::from(violated);
    }
}
