//! The sampled log of raw requests (`run --request-log FILE`): for a fraction of the
//! clients, chosen from the scenario seed, every request they record, as one line each.
//!
//! Sampling picks clients, not requests, so that a sampled client's whole path is in the
//! log (and `catwar-sim replay --client N` retraces it), and the same clients are picked
//! however many processes share the run. Lines go to a writer through a bounded queue
//! that never blocks a client: a line that finds it full is dropped and counted.

use crate::seeds::client_seed;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;

/// No late send time is pending.
const UNKNOWN_US: u64 = u64::MAX;
/// The id of the sampling's own stream of seeds: the clients' streams use ids from 0
/// up and the arrivals `u64::MAX`, so the choice of clients is unrelated to both.
const SAMPLING_STREAM_ID: u64 = u64::MAX - 1;

/// One line of the log; times in µs from the run's start.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RequestLine {
    /// The client (or open-model arrival) number.
    pub client: u64,
    /// The step's name.
    pub step: &'static str,
    /// When the request was meant to leave: an open-model session's arrival for its
    /// first request, else when it left. Latency counts from here.
    pub scheduled_us: Option<u64>,
    /// When it left.
    pub sent_us: Option<u64>,
    /// From `scheduled_us` to the answer; `null` for a failure.
    pub latency_us: Option<u64>,
    /// `ok`, the expected refusal's code, or the error's.
    pub code: String,
}

/// Where the sampled clients' lines go.
#[derive(Debug)]
pub struct RequestLog {
    lines: SyncSender<RequestLine>,
    seed: u64,
    /// Clients whose mixed seed falls below this are sampled.
    below: u64,
    dropped: AtomicU64,
}

impl RequestLog {
    /// A log of `fraction` (0 to 1) of the clients under the scenario `seed`, sending
    /// its lines to `lines`.
    pub fn new(lines: SyncSender<RequestLine>, seed: u64, fraction: f64) -> RequestLog {
        RequestLog {
            lines,
            seed,
            below: (fraction.clamp(0.0, 1.0) * u64::MAX as f64) as u64,
            dropped: AtomicU64::new(0),
        }
    }

    /// Whether `client`'s requests are logged.
    pub fn samples(&self, client: u64) -> bool {
        // The same in every process, and in a replay of the client.
        client_seed(client_seed(self.seed, SAMPLING_STREAM_ID), client) < self.below
            || self.below == u64::MAX
    }

    /// Queues a line, or counts it dropped if the writer is behind.
    pub(super) fn offer(&self, line: RequestLine) {
        if self.lines.try_send(line).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Lines dropped so far because the writer was behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// A sampled client's side of the log: where its lines go, and the send time of its
/// request in flight when that left later than it was meant to (the open model's first
/// request, timed from its arrival).
#[derive(Debug)]
pub(super) struct Sampled {
    pub(super) log: Arc<RequestLog>,
    sent_late_us: AtomicU64,
}

impl Sampled {
    pub(super) fn new(log: Arc<RequestLog>) -> Sampled {
        Sampled {
            log,
            sent_late_us: AtomicU64::new(UNKNOWN_US),
        }
    }

    pub(super) fn sent_late(&self, at_us: u64) {
        self.sent_late_us.store(at_us, Ordering::Relaxed);
    }

    pub(super) fn take_sent_late(&self) -> Option<u64> {
        let at_us = self.sent_late_us.swap(UNKNOWN_US, Ordering::Relaxed);
        (at_us != UNKNOWN_US).then_some(at_us)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::sync_channel;

    #[test]
    fn sampling_picks_about_the_fraction_the_same_way_every_time() {
        let (lines, _) = sync_channel(1);
        let log = RequestLog::new(lines, 42, 0.1);
        let picked: Vec<u64> = (0..10_000).filter(|&c| log.samples(c)).collect();
        assert!((900..1_100).contains(&picked.len()), "{}", picked.len());
        let again = RequestLog::new(sync_channel(1).0, 42, 0.1);
        assert!(picked.iter().all(|&c| again.samples(c)));
        let all = RequestLog::new(sync_channel(1).0, 42, 1.0);
        assert!((0..1_000).all(|c| all.samples(c)));
        let none = RequestLog::new(sync_channel(1).0, 42, 0.0);
        assert!((0..1_000).all(|c| !none.samples(c)));
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let (lines, _keep) = sync_channel(1);
        let log = RequestLog::new(lines, 1, 1.0);
        let line = RequestLine {
            client: 0,
            step: "login",
            scheduled_us: Some(1),
            sent_us: Some(1),
            latency_us: Some(5),
            code: "ok".into(),
        };
        log.offer(line.clone());
        log.offer(line);
        assert_eq!(log.dropped(), 1);
    }
}
