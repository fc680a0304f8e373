//! Failover timing: how long clients went without a fresh balancer pick after a kill.
//!
//! Every successful `update: true` answer is a pick: (completion time, epoch). For a kill
//! of the balancer at T, the gap is from the last pick completing before T to the first
//! pick completing after T whose epoch is higher than any epoch seen before T, that is,
//! one chosen by the balancer that took over. Picks of the old epoch that complete after
//! T were already in flight and do not end the gap.
//!
//! Rather than keeping every pick, each metrics shard keeps a [`FailoverTracker`] that
//! folds picks into one [`KillWindow`] per kill as they arrive; windows of the same kill
//! merge exactly across shards. Memory stays constant however long the run.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A successful pick: when its answer completed (µs since the start of the run) and the
/// balancer epoch that chose the endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pick {
    /// Completion time in µs since the start of the run.
    pub at_us: u64,
    /// The balancer term that chose the endpoints.
    pub epoch: u64,
}

/// What one shard saw around one kill.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KillWindow {
    /// When the kill was sent, µs since the start of the run.
    pub at_us: u64,
    last_before_us: Option<u64>,
    epoch_before: Option<u64>,
    /// For every epoch seen after the kill, its first pick.
    first_after_us: BTreeMap<u64, u64>,
    /// `unavailable` answers from storage between this kill and the next one.
    unavailable: u64,
}

impl KillWindow {
    fn observe(&mut self, pick: Pick) {
        if pick.at_us < self.at_us {
            self.last_before_us = self.last_before_us.max(Some(pick.at_us));
            self.epoch_before = self.epoch_before.max(Some(pick.epoch));
        } else {
            let first = self.first_after_us.entry(pick.epoch).or_insert(pick.at_us);
            *first = (*first).min(pick.at_us);
        }
    }

    /// Folds another shard's view of the same kill into this one.
    pub fn merge(&mut self, other: &KillWindow) {
        debug_assert_eq!(self.at_us, other.at_us, "windows of different kills");
        self.last_before_us = self.last_before_us.max(other.last_before_us);
        self.epoch_before = self.epoch_before.max(other.epoch_before);
        for (&epoch, &at_us) in &other.first_after_us {
            let first = self.first_after_us.entry(epoch).or_insert(at_us);
            *first = (*first).min(at_us);
        }
        self.unavailable += other.unavailable;
    }

    /// The gap of this kill, once every shard's view has been merged in.
    pub fn gap(&self) -> KillGap {
        let after = self.epoch_before.and_then(|before| {
            self.first_after_us
                .range(before + 1..)
                .min_by_key(|&(_, &at_us)| at_us)
                .map(|(&epoch, &at_us)| (epoch, at_us))
        });
        let gap_ms = match (self.last_before_us, after) {
            (Some(last), Some((_, first))) => Some(first.saturating_sub(last) as f64 / 1000.0),
            _ => None,
        };
        KillGap {
            at_ms: self.at_us as f64 / 1000.0,
            gap_ms,
            epoch_before: self.epoch_before,
            epoch_after: after.map(|(epoch, _)| epoch),
            unavailable: self.unavailable,
        }
    }
}

/// One shard's picks, folded into a window per kill.
#[derive(Clone, Debug, Default)]
pub struct FailoverTracker {
    last_pick_us: Option<u64>,
    max_epoch: Option<u64>,
    windows: Vec<KillWindow>,
}

impl FailoverTracker {
    /// Records a successful pick.
    pub fn pick(&mut self, pick: Pick) {
        self.last_pick_us = self.last_pick_us.max(Some(pick.at_us));
        self.max_epoch = self.max_epoch.max(Some(pick.epoch));
        for window in &mut self.windows {
            window.observe(pick);
        }
    }

    /// Records an `unavailable` answer from storage against the latest kill before it.
    pub fn unavailable(&mut self, at_us: u64) {
        if let Some(window) = self.windows.iter_mut().rev().find(|w| w.at_us <= at_us) {
            window.unavailable += 1;
        }
    }

    /// Starts timing a kill sent at `at_us`.
    ///
    /// A pick that completed while the kill was being registered may be later than
    /// `at_us` by microseconds; it counts as the last pick before the kill, at `at_us`.
    pub fn open_window(&mut self, at_us: u64) {
        self.windows.push(KillWindow {
            at_us,
            last_before_us: self.last_pick_us.map(|last| last.min(at_us)),
            epoch_before: self.max_epoch,
            first_after_us: BTreeMap::new(),
            unavailable: 0,
        });
    }

    /// A tracker holding windows merged elsewhere (a worker process's), picks folded in.
    pub fn from_windows(windows: Vec<KillWindow>) -> FailoverTracker {
        FailoverTracker {
            last_pick_us: None,
            max_epoch: None,
            windows,
        }
    }
}

/// The figures of one balancer kill, as written to the report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KillGap {
    /// When the kill was sent, ms since the start of the run.
    pub at_ms: f64,
    /// Last good pick before the kill to first good pick of a newer epoch after it;
    /// `null` when either side is missing.
    pub gap_ms: Option<f64>,
    /// The highest epoch seen before the kill.
    pub epoch_before: Option<u64>,
    /// The epoch of the first pick that ended the gap.
    pub epoch_after: Option<u64>,
    /// `unavailable` answers from storage between this kill and the next one.
    pub unavailable: u64,
}

/// Every balancer kill of a run and its gap, as written to the report.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FailoverSummary {
    /// One entry per balancer kill, in order.
    pub kills: Vec<KillGap>,
    /// Every measured gap, in kill order.
    pub gaps_ms: Vec<f64>,
    /// Kills whose gap could not be measured (no pick before, or no newer epoch after).
    pub unmeasured: u64,
    /// Median of the measured gaps.
    pub median_ms: Option<f64>,
    /// Largest measured gap.
    pub max_ms: Option<f64>,
}

impl FailoverSummary {
    /// Summarizes merged windows, one per kill.
    pub fn from_windows(windows: &[KillWindow]) -> FailoverSummary {
        let kills: Vec<KillGap> = windows.iter().map(KillWindow::gap).collect();
        let gaps_ms: Vec<f64> = kills.iter().filter_map(|k| k.gap_ms).collect();
        let mut sorted = gaps_ms.clone();
        sorted.sort_by(f64::total_cmp);
        let median_ms = match sorted.len() {
            0 => None,
            n if n % 2 == 1 => Some(sorted[n / 2]),
            n => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
        };
        FailoverSummary {
            unmeasured: (kills.len() - gaps_ms.len()) as u64,
            max_ms: sorted.last().copied(),
            median_ms,
            gaps_ms,
            kills,
        }
    }
}

/// Merges the windows of several shards, kill by kill.
pub fn merge_windows<'a>(
    trackers: impl IntoIterator<Item = &'a FailoverTracker>,
) -> Vec<KillWindow> {
    let mut merged: Vec<KillWindow> = Vec::new();
    // Windows of the same kill share its time; a worker process that heard of a kill
    // only after its clients stopped simply has no window for it.
    for window in trackers.into_iter().flat_map(|tracker| &tracker.windows) {
        match merged.iter_mut().find(|m| m.at_us == window.at_us) {
            Some(into) => into.merge(window),
            None => merged.push(window.clone()),
        }
    }
    merged.sort_by_key(|w| w.at_us);
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1000;

    fn pick(at_ms: u64, epoch: u64) -> Pick {
        Pick {
            at_us: at_ms * MS,
            epoch,
        }
    }

    /// Steady picks of epoch 1 until 990 ms, a kill at 1000 ms, an old-epoch answer still
    /// in flight at 1002 ms, unavailable answers, then epoch 2 from 1800 ms.
    fn synthetic_run(trackers: &mut [FailoverTracker]) {
        let n = trackers.len();
        for (i, at) in (100..=990).step_by(10).enumerate() {
            trackers[i % n].pick(pick(at, 1));
        }
        for tracker in trackers.iter_mut() {
            tracker.open_window(1000 * MS);
        }
        trackers[0].pick(pick(1002, 1));
        for (i, at) in (1100..1800).step_by(100).enumerate() {
            trackers[i % n].unavailable(at * MS);
        }
        for (i, at) in (1800..=2500).step_by(10).enumerate() {
            trackers[(i + 1) % n].pick(pick(at, 2));
        }
    }

    #[test]
    fn gap_runs_from_last_pick_before_kill_to_first_pick_of_newer_epoch() {
        let mut trackers = vec![FailoverTracker::default()];
        synthetic_run(&mut trackers);
        let summary = FailoverSummary::from_windows(&trackers[0].windows);
        assert_eq!(summary.gaps_ms, vec![810.0]);
        assert_eq!(summary.kills[0].epoch_before, Some(1));
        assert_eq!(summary.kills[0].epoch_after, Some(2));
        assert_eq!(summary.kills[0].unavailable, 7);
        assert_eq!(summary.max_ms, Some(810.0));
        assert_eq!(summary.unmeasured, 0);
    }

    #[test]
    fn shards_merge_to_the_same_gap() {
        let mut trackers = vec![FailoverTracker::default(); 3];
        synthetic_run(&mut trackers);
        let summary = FailoverSummary::from_windows(&merge_windows(&trackers));
        assert_eq!(summary.gaps_ms, vec![810.0]);
        assert_eq!(summary.kills[0].unavailable, 7);
    }

    #[test]
    fn late_recorded_pick_before_the_kill_still_counts() {
        let mut tracker = FailoverTracker::default();
        tracker.pick(pick(500, 4));
        tracker.open_window(1000 * MS);
        tracker.pick(pick(990, 4));
        tracker.pick(pick(1500, 5));
        assert_eq!(
            FailoverSummary::from_windows(&tracker.windows).gaps_ms,
            vec![510.0]
        );
    }

    #[test]
    fn pick_racing_the_kill_is_clamped_to_the_kill_time() {
        let mut tracker = FailoverTracker::default();
        tracker.pick(pick(1001, 1));
        tracker.open_window(1000 * MS);
        tracker.pick(pick(1700, 2));
        assert_eq!(
            FailoverSummary::from_windows(&tracker.windows).gaps_ms,
            vec![700.0]
        );
    }

    #[test]
    fn two_kills_and_an_unfinished_failover() {
        let mut tracker = FailoverTracker::default();
        tracker.pick(pick(900, 1));
        tracker.open_window(1000 * MS);
        tracker.pick(pick(1400, 2));
        tracker.pick(pick(4900, 2));
        tracker.open_window(5000 * MS);
        tracker.pick(pick(5300, 2));
        let summary = FailoverSummary::from_windows(&tracker.windows);
        assert_eq!(summary.gaps_ms, vec![500.0]);
        assert_eq!(summary.unmeasured, 1);
        assert_eq!(summary.kills[1].gap_ms, None);
        assert_eq!(summary.median_ms, Some(500.0));
    }

    #[test]
    fn median_of_an_even_count_is_the_mean_of_the_middle_two() {
        let mut tracker = FailoverTracker::default();
        let mut epoch = 1;
        for (kill_ms, gap_ms) in [(1000, 100), (2000, 300), (3000, 200), (4000, 400)] {
            tracker.pick(pick(kill_ms - 1, epoch));
            tracker.open_window(kill_ms * MS);
            epoch += 1;
            tracker.pick(pick(kill_ms - 1 + gap_ms, epoch));
        }
        let summary = FailoverSummary::from_windows(&tracker.windows);
        assert_eq!(summary.median_ms, Some(250.0));
        assert_eq!(summary.max_ms, Some(400.0));
    }
}
