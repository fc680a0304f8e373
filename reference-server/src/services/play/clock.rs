//! The tick clock's figures that `status` reports: ticks run, ticks missed, and the
//! lateness of the recent ticks.

use std::time::Duration;

/// Tick lateness samples kept for the p99 in `status`.
const LATENESS_SAMPLES_MAX: usize = 10_000;

/// Tick-clock figures reported in `status`.
#[derive(Debug, Default)]
pub(super) struct Clock {
    /// Ticks run.
    pub(super) ticks: u64,
    /// Ticks skipped because the loop fell too far behind.
    pub(super) missed: u64,
    lateness_us: Vec<u32>,
}

impl Clock {
    /// Counts a tick that started `late` after its instant.
    pub(super) fn record(&mut self, late: Duration) {
        self.ticks += 1;
        if self.lateness_us.len() >= LATENESS_SAMPLES_MAX {
            self.lateness_us.remove(0);
        }
        self.lateness_us
            .push(late.as_micros().min(u32::MAX as u128) as u32);
    }

    /// The p99 lateness of the recent ticks, µs.
    pub(super) fn late_p99_us(&self) -> u32 {
        let mut sorted = self.lateness_us.clone();
        sorted.sort_unstable();
        sorted.get(sorted.len() * 99 / 100).copied().unwrap_or(0)
    }
}
