//! The per-second series as it is taken: where each closed second goes (shown on the
//! progress display and judged by the knee search, or sent to the coordinator), and the
//! clock that closes them.

use super::live::Outlets;
use super::progress::Progress;
use crate::knee::KneeFinder;
use crate::metrics::IntervalPoint;
use crate::report::{time_point, KneeReport};
use crate::scenario::Scenario;
use hdrhistogram::Histogram;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Where the seconds of a process's series go as they close.
pub(super) trait SecondSink: Send + 'static {
    /// Takes the second that just closed, with its latency histograms per step (in
    /// `Step::ALL` order, 2 figures); false when no more seconds are wanted.
    fn second(&mut self, point: IntervalPoint, histograms: Vec<Histogram<u64>>) -> bool;

    /// The last second was taken.
    fn finish(&mut self) {}
}

/// What happens as each second of the series closes: the progress display, the
/// search for the knee, which may stop the arrivals, and the live outlets (`live`).
#[derive(Debug)]
pub(super) struct SecondWatcher {
    progress: Progress,
    outlets: Outlets,
    knee: Option<KneeFinder>,
    stop_at_knee: bool,
    stop_arrivals: watch::Sender<bool>,
}

impl SecondWatcher {
    /// A watcher for `scenario` that stops arrivals through `stop_arrivals` and hands
    /// each second to `outlets` too.
    pub(super) fn new(
        scenario: &Scenario,
        stop_arrivals: watch::Sender<bool>,
        outlets: Outlets,
    ) -> SecondWatcher {
        SecondWatcher {
            progress: Progress::new(scenario.scenario.duration_s),
            outlets,
            knee: scenario.knee.as_ref().map(KneeFinder::new),
            stop_at_knee: scenario.knee.as_ref().is_some_and(|k| k.stop),
            stop_arrivals,
        }
    }

    /// Shows, judges and exports one closed second, merged over every process, with its
    /// latency histograms per step.
    pub(super) fn merged(&mut self, point: &IntervalPoint, histograms: &[Histogram<u64>]) {
        self.outlets.second(point, histograms);
        self.second(point);
    }

    /// Shows and judges one closed second.
    fn second(&mut self, point: &IntervalPoint) {
        self.progress.second(point);
        let Some(knee) = &mut self.knee else {
            return;
        };
        if knee.observe(&time_point(point)) {
            let report = knee.report();
            self.progress.note(&format!(
                "catwar-sim: knee at {} s: {} broke for {} s at {:.1} arrivals/s{}",
                report.t_s.unwrap_or(0),
                report.condition.as_deref().unwrap_or("?"),
                report.window_s,
                report.arrival_rate_per_s,
                if self.stop_at_knee {
                    "; no more arrivals"
                } else {
                    ""
                }
            ));
            if self.stop_at_knee {
                // Nobody listening means the arrivals are over anyway.
                let _ = self.stop_arrivals.send(true);
            }
        }
    }

    /// Closes the progress display and the outlets.
    pub(super) fn finish(&mut self) {
        self.progress.finish();
        self.outlets.finish();
    }

    /// The knee, for a scenario that looks for one.
    pub(super) fn knee_report(&self) -> Option<KneeReport> {
        self.knee.as_ref().map(KneeFinder::report)
    }
}

/// A single process shows every second, judges it for the knee and exports it.
impl SecondSink for SecondWatcher {
    fn second(&mut self, point: IntervalPoint, histograms: Vec<Histogram<u64>>) -> bool {
        self.merged(&point, &histograms);
        true
    }

    fn finish(&mut self) {
        SecondWatcher::finish(self);
    }
}

/// Calls `close` once a second from `start`, and a last time (with `last` true) when
/// `stop` changes; ends early when `close` returns false.
pub(super) async fn each_second(
    start: Instant,
    mut stop: watch::Receiver<bool>,
    mut close: impl FnMut(bool) -> bool,
) {
    let second = Duration::from_secs(1);
    let mut interval = tokio::time::interval_at((start + second).into(), second);
    // A late tick must not be followed by a burst of catch-up ticks with empty intervals.
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let last = tokio::select! {
            _ = interval.tick() => false,
            _ = stop.changed() => true,
        };
        if !close(last) || last {
            return;
        }
    }
}
