//! What the shards add up: per-step totals and per-second figures, the funnel's stage
//! totals and invariant counts, with the histograms' bounds and precision.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The fastest loopback request still takes a microsecond; finer resolution is noise.
pub const LATENCY_US_MIN: u64 = 1;
/// Requests time out long before a minute; larger values are clamped to this.
pub const LATENCY_US_MAX: u64 = 60_000_000;
/// Three figures keep totals within 0.1 %, the usual HDR precision for latency reports.
pub const LATENCY_SIGNIFICANT_FIGURES: u8 = 3;
/// Per-second points only feed charts and progress lines, where 1 % is plenty and a
/// histogram eight times smaller matters.
const INTERVAL_SIGNIFICANT_FIGURES: u8 = 2;
/// Error codes come from servers; a bound keeps a misbehaving one from growing the map.
pub(super) const ERROR_CODES_MAX: usize = 64;
/// Codes longer than this are cut; real codes are a word or two.
const ERROR_CODE_BYTES_MAX: usize = 48;
/// Where codes beyond `ERROR_CODES_MAX` are counted.
pub(super) const ERROR_CODE_OVERFLOW: &str = "other_codes";

/// An empty latency histogram with the totals' bounds and precision.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(LATENCY_US_MIN, LATENCY_US_MAX, LATENCY_SIGNIFICANT_FIGURES)
        .expect("constant histogram bounds are valid")
}

/// Funnel times are whole stages: a match is minutes, a soak session may be hours.
pub(super) const STAGE_MS_MAX: u64 = 86_400_000;
/// Two figures (1 %) are plenty for how long a stage took, and keep the funnel small.
const STAGE_SIGNIFICANT_FIGURES: u8 = 2;

/// An empty histogram of stage times, in ms.
fn stage_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, STAGE_MS_MAX, STAGE_SIGNIFICANT_FIGURES)
        .expect("constant histogram bounds are valid")
}

/// An empty per-second latency histogram (2 figures).
pub fn interval_histogram() -> Histogram<u64> {
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
    pub(super) fn new() -> StepTotals {
        StepTotals {
            latency: latency_histogram(),
            count: 0,
            errors: 0,
            errors_by_code: BTreeMap::new(),
            expected_by_code: BTreeMap::new(),
        }
    }

    /// Totals from their parts, as a worker process reported them.
    pub fn from_parts(
        latency: Histogram<u64>,
        count: u64,
        errors: u64,
        errors_by_code: BTreeMap<String, u64>,
        expected_by_code: BTreeMap<String, u64>,
    ) -> StepTotals {
        StepTotals {
            latency,
            count,
            errors,
            errors_by_code,
            expected_by_code,
        }
    }

    pub(super) fn add_error(&mut self, code: &str) {
        self.errors += 1;
        count_code(&mut self.errors_by_code, code);
    }

    /// Adds another shard's or worker's totals of the same step.
    pub fn merge(&mut self, other: &StepTotals) {
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
pub(super) fn count_code(counts: &mut BTreeMap<String, u64>, code: &str) {
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
pub(super) struct StepInterval {
    pub(super) latency: Histogram<u64>,
    pub(super) requests: u64,
    pub(super) errors: u64,
    /// Bounded like the totals' map, by [`count_code`].
    pub(super) errors_by_code: BTreeMap<String, u64>,
}

impl StepInterval {
    pub(super) fn new() -> StepInterval {
        StepInterval {
            latency: interval_histogram(),
            requests: 0,
            errors: 0,
            errors_by_code: BTreeMap::new(),
        }
    }

    pub(super) fn add_error(&mut self, code: &str) {
        self.errors += 1;
        count_code(&mut self.errors_by_code, code);
    }

    pub(super) fn drain_into(&mut self, into: &mut StepInterval) {
        into.latency
            .add(&self.latency)
            .expect("histograms share bounds");
        into.requests += self.requests;
        into.errors += self.errors;
        for (code, n) in std::mem::take(&mut self.errors_by_code) {
            *into.errors_by_code.entry(code).or_insert(0) += n;
        }
        self.latency.reset();
        self.requests = 0;
        self.errors = 0;
    }
}

/// The funnel figures of one stage.
#[derive(Clone, Debug)]
pub struct StageTotals {
    /// Sessions that entered the stage.
    pub sessions: u64,
    /// Distinct clients that entered it at least once.
    pub clients: u64,
    /// Time spent in the stage per session, ms.
    pub time_ms: Histogram<u64>,
}

impl StageTotals {
    /// No session yet.
    pub fn new() -> StageTotals {
        StageTotals {
            sessions: 0,
            clients: 0,
            time_ms: stage_histogram(),
        }
    }

    /// Adds another shard's or worker's figures of the same stage.
    pub fn merge(&mut self, other: &StageTotals) {
        self.sessions += other.sessions;
        self.clients += other.clients;
        self.time_ms
            .add(&other.time_ms)
            .expect("histograms share bounds");
    }
}

impl Default for StageTotals {
    fn default() -> StageTotals {
        StageTotals::new()
    }
}

/// How often an invariant was checked and how often it failed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvariantCount {
    /// Times checked.
    pub checked: u64,
    /// Times violated.
    pub violations: u64,
}
