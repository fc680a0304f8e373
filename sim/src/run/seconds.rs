//! The per-second series as it is taken: an interval closed every second, shown on the
//! progress display and judged by the knee search.

use crate::knee::KneeFinder;
use crate::metrics::{IntervalPoint, Metrics};
use crate::progress::Progress;
use crate::report::{time_point, KneeReport};
use crate::scenario::Scenario;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// What happens as each second of the series closes: the progress display, and the
/// search for the knee, which may stop the arrivals.
pub(crate) struct SecondWatcher {
    progress: Progress,
    knee: Option<KneeFinder>,
    stop_at_knee: bool,
    stop_arrivals: watch::Sender<bool>,
}

impl SecondWatcher {
    /// A watcher for `scenario` that stops arrivals through `stop_arrivals`.
    pub(crate) fn new(scenario: &Scenario, stop_arrivals: watch::Sender<bool>) -> SecondWatcher {
        SecondWatcher {
            progress: Progress::new(scenario.scenario.duration_s),
            knee: scenario.knee.as_ref().map(KneeFinder::new),
            stop_at_knee: scenario.knee.as_ref().is_some_and(|k| k.stop),
            stop_arrivals,
        }
    }

    /// Shows and judges one closed second.
    pub(crate) fn second(&mut self, point: &IntervalPoint) {
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

    /// Closes the progress display.
    pub(crate) fn finish(&mut self) {
        self.progress.finish();
    }

    /// The knee, for a scenario that looks for one.
    pub(crate) fn knee_report(&self) -> Option<KneeReport> {
        self.knee.as_ref().map(KneeFinder::report)
    }
}

/// Closes one interval of the series every second, and the last partial one at the end.
pub(crate) async fn tick(
    metrics: Arc<Metrics>,
    start: Instant,
    stop: watch::Receiver<bool>,
    mut watcher: SecondWatcher,
) -> SecondWatcher {
    each_second(start, stop, |last| {
        watcher.second(&metrics.close_interval());
        if last {
            watcher.finish();
        }
        true
    })
    .await;
    watcher
}

/// Calls `close` once a second from `start`, and a last time (with `last` true) when
/// `stop` changes; ends early when `close` returns false.
pub(crate) async fn each_second(
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
