//! A run stopped early by an abort gate (`abort_on_fail` in `[thresholds]`), as the
//! report records it, and the exit code it earns.

use super::Report;
use crate::{EXIT_ABORTED, EXIT_OK, EXIT_THRESHOLD_FAILED};
use serde::{Deserialize, Serialize};

/// The threshold that stopped the run, when, and what it measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AbortReport {
    /// The metric name, such as `lobby.me.p99`.
    pub metric: String,
    /// The condition as written, such as `< 50ms`.
    pub condition: String,
    /// The second of the run whose close failed the gate (0 is the first second).
    pub at_s: u64,
    /// Seconds of merged figures the condition was evaluated over.
    pub window_s: u64,
    /// The value over that window, in the condition's unit.
    pub actual: f64,
}

impl AbortReport {
    /// One line naming the gate, when it fired and what it measured.
    pub fn describe(&self) -> String {
        format!(
            "{} {} failed over the {} s before {} s (actual {:.3}); the run was stopped there",
            self.metric,
            self.condition,
            self.window_s,
            self.at_s + 1,
            self.actual
        )
    }
}

impl Report {
    /// Sets the exit code of a run an abort gate stopped: [`EXIT_ABORTED`] in place of a
    /// pass or a failed threshold. An interrupted run, a lost worker and a violated
    /// invariant keep their own codes, as they take precedence over thresholds.
    pub fn judge_abort(&mut self) {
        if self.abort.is_some() && matches!(self.exit_code, EXIT_OK | EXIT_THRESHOLD_FAILED) {
            self.exit_code = EXIT_ABORTED;
        }
    }
}
