//! `catwar-sim compare`: gates CI on latency regressions between two reports.
//!
//! For every step present in both reports, p50, p90 and p99 are compared. A figure has
//! regressed when it grew by more than the allowed percentage *and* by more than
//! [`REGRESSION_US_MIN`], so that sub-millisecond noise on loopback never fails a build.
//! Steps with fewer than [`SAMPLES_MIN`] successful requests on either side are skipped:
//! their tails are not statistics yet; a p99 needs [`P99_SAMPLES_MIN`].
//!
//! With [`Scale::Relative`] a figure is judged against the baseline times the run's
//! *machine factor*: for each statistic, the median over the compared steps of current ÷
//! baseline. A shared CI host that is twice as slow or busy slows every step alike; a
//! regression slows some steps more than the rest. The factor itself is the reference
//! measured in the same run, and a p50 factor beyond [`MACHINE_FACTOR_MAX`] fails on its
//! own, so that a regression everywhere cannot hide as a slow machine.

use crate::report::REPORT_SCHEMA;
use crate::step::Step;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Percentiles of fewer samples than this swing too much to gate on.
pub const SAMPLES_MIN: u64 = 100;
/// A p99 of fewer samples rests on fewer than ten requests; one slow scheduling
/// decision on a shared CI machine moves it by more than any tolerance worth having.
pub const P99_SAMPLES_MIN: u64 = 1_000;
/// Growth below this is noise on a shared machine, whatever the percentage.
pub const REGRESSION_US_MIN: u64 = 1_000;
/// The default allowed growth, percent: the bound CI uses and the README documents,
/// measured to stay clear of a shared machine's noise (README "The CI gate").
pub const MAX_REGRESSION_PCT_DEFAULT: f64 = 200.0;
/// A request step's error rate may grow by this many percentage points at most: the
/// smoke's request steps fail at 0 % on a healthy server, and 1 % is a real failure
/// mode (one balancer kill's 503s were 1.5 % of update checks), not noise.
pub const ERROR_RATE_POINTS_MAX: f64 = 1.0;
/// A relative comparison fails when the median step's p50 grew more than this many
/// times: a busy CI host has been seen at 2×, and a slowdown of every step beyond 4× is
/// more likely a regression in a shared path (HTTP parsing, the event loop) than noise.
pub const MACHINE_FACTOR_MAX: f64 = 4.0;

/// What a figure is judged against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// The baseline's figure as it is.
    Absolute,
    /// The baseline's figure times the run's machine factor for that statistic.
    Relative,
}

/// Why a report could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    /// The file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The report file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not JSON in the shape of a report.
    #[error("{} is not a report", path.display())]
    NotAReport {
        /// The report file.
        path: PathBuf,
        /// What the parser found.
        #[source]
        source: serde_json::Error,
    },
    /// The report has another schema.
    #[error("{}: schema {found:?}, expected {REPORT_SCHEMA:?}", path.display())]
    Schema {
        /// The report file.
        path: PathBuf,
        /// The schema it names.
        found: String,
    },
}

/// The parts of a report that compare reads; other fields are ignored, so baselines
/// written by older versions of the same schema still compare.
#[derive(Debug, Deserialize)]
pub struct ReportView {
    schema: String,
    #[serde(default)]
    scenario: Option<ScenarioView>,
    steps: BTreeMap<String, StepView>,
}

/// What names the scenario a report ran.
#[derive(Debug, Deserialize, PartialEq)]
struct ScenarioView {
    name: String,
    seed: u64,
    text: String,
}

#[derive(Debug, Deserialize)]
struct StepView {
    count: u64,
    errors: u64,
    p50_us: Option<u64>,
    p90_us: Option<u64>,
    p99_us: Option<u64>,
}

impl StepView {
    fn samples(&self) -> u64 {
        self.count.saturating_sub(self.errors)
    }

    fn errors_pct(&self) -> f64 {
        self.errors as f64 * 100.0 / self.count.max(1) as f64
    }

    fn stats(&self) -> [(&'static str, Option<u64>); 3] {
        [
            ("p50", self.p50_us),
            ("p90", self.p90_us),
            ("p99", self.p99_us),
        ]
    }
}

impl ReportView {
    /// Reads a report file.
    pub fn load(path: &Path) -> Result<ReportView, CompareError> {
        let text = std::fs::read_to_string(path).map_err(|source| CompareError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let view: ReportView =
            serde_json::from_str(&text).map_err(|source| CompareError::NotAReport {
                path: path.to_path_buf(),
                source,
            })?;
        if view.schema != REPORT_SCHEMA {
            return Err(CompareError::Schema {
                path: path.to_path_buf(),
                found: view.schema,
            });
        }
        Ok(view)
    }
}

/// One compared figure.
#[derive(Debug, PartialEq)]
pub struct Row {
    /// Step name.
    pub step: String,
    /// `p50`, `p90` or `p99`.
    pub stat: &'static str,
    /// Baseline value, µs.
    pub baseline_us: Option<u64>,
    /// Current value, µs.
    pub current_us: Option<u64>,
    /// The verdict.
    pub verdict: Verdict,
}

/// The verdict on one figure.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Within bounds.
    Ok,
    /// Grew beyond the percentage, but by less than [`REGRESSION_US_MIN`]: the floor
    /// decided.
    UnderFloor,
    /// Grew beyond both bounds.
    Regressed,
    /// The baseline measured the step and the current run has no successful sample of
    /// it (a run with no matches must not pass against one with matches).
    Missing,
    /// Not compared, and why.
    Skipped(&'static str),
}

/// The outcome of a comparison.
#[derive(Debug)]
pub struct Comparison {
    /// Every compared figure.
    pub rows: Vec<Row>,
    /// Per statistic, the factor the baseline was scaled by (1 when absolute).
    pub factors: Vec<(&'static str, f64)>,
    /// The error rate of every request step both reports measured.
    pub errors: Vec<ErrorRow>,
    /// How the two runs' scenarios differ; empty when they ran the same one.
    pub scenario_differs: Vec<String>,
}

/// One step's error rate in both reports.
#[derive(Debug, PartialEq)]
pub struct ErrorRow {
    /// Step name.
    pub step: String,
    /// Baseline errors ÷ requests, percent.
    pub baseline_pct: f64,
    /// Current errors ÷ requests, percent.
    pub current_pct: f64,
    /// Whether it grew by more than [`ERROR_RATE_POINTS_MAX`] points.
    pub regressed: bool,
}

impl Comparison {
    /// Figures that regressed or went missing, and error rates that grew.
    pub fn regressions(&self) -> usize {
        let rows = self
            .rows
            .iter()
            .filter(|r| matches!(r.verdict, Verdict::Regressed | Verdict::Missing))
            .count();
        rows + self.errors.iter().filter(|e| e.regressed).count()
    }

    /// The p50 machine factor when it exceeds [`MACHINE_FACTOR_MAX`].
    pub fn machine_too_slow(&self) -> Option<f64> {
        self.factors
            .iter()
            .find(|(stat, factor)| *stat == "p50" && *factor > MACHINE_FACTOR_MAX)
            .map(|&(_, factor)| factor)
    }
}

/// Compares two reports; `max_regression_pct` is the allowed growth in percent.
pub fn compare(
    baseline: &ReportView,
    current: &ReportView,
    max_regression_pct: f64,
    scale: Scale,
) -> Comparison {
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    for (name, base) in &baseline.steps {
        let now = current.steps.get(name).filter(|now| now.samples() > 0);
        let Some(now) = now else {
            if base.samples() >= SAMPLES_MIN {
                rows.push(Row {
                    step: name.clone(),
                    stat: "count",
                    baseline_us: None,
                    current_us: None,
                    verdict: Verdict::Missing,
                });
            }
            continue;
        };
        if Step::from_name(name).is_none_or(Step::is_request) && base.count > 0 && now.count > 0 {
            let baseline_pct = base.errors_pct();
            let current_pct = now.errors_pct();
            errors.push(ErrorRow {
                step: name.clone(),
                baseline_pct,
                current_pct,
                regressed: current_pct - baseline_pct > ERROR_RATE_POINTS_MAX,
            });
        }
        let samples = base.samples().min(now.samples());
        for ((stat, baseline_us), (_, current_us)) in base.stats().into_iter().zip(now.stats()) {
            let verdict = match (baseline_us, current_us) {
                _ if samples < SAMPLES_MIN => Verdict::Skipped("fewer than 100 samples"),
                _ if stat == "p99" && samples < P99_SAMPLES_MIN => {
                    Verdict::Skipped("p99 of fewer than 1000 samples")
                }
                (Some(_), Some(_)) => Verdict::Ok,
                _ => Verdict::Skipped("no value"),
            };
            rows.push(Row {
                step: name.clone(),
                stat,
                baseline_us,
                current_us,
                verdict,
            });
        }
    }
    let factors: Vec<(&'static str, f64)> = ["p50", "p90", "p99"]
        .into_iter()
        .map(|stat| match scale {
            Scale::Absolute => (stat, 1.0),
            Scale::Relative => (stat, machine_factor(&rows, stat)),
        })
        .collect();
    for row in &mut rows {
        let factor = factors
            .iter()
            .find(|(stat, _)| *stat == row.stat)
            .map_or(1.0, |&(_, factor)| factor);
        if let (Verdict::Ok, Some(b), Some(c)) = (&row.verdict, row.baseline_us, row.current_us) {
            row.verdict = judge(b as f64 * factor, c, max_regression_pct);
        }
    }
    Comparison {
        rows,
        factors,
        errors,
        scenario_differs: scenario_differences(baseline, current),
    }
}

/// What differs between the scenarios of the two runs, one phrase each.
fn scenario_differences(baseline: &ReportView, current: &ReportView) -> Vec<String> {
    let (Some(base), Some(now)) = (&baseline.scenario, &current.scenario) else {
        return Vec::new();
    };
    let mut differs = Vec::new();
    if base.name != now.name {
        differs.push(format!("name {:?} vs {:?}", base.name, now.name));
    }
    if base.seed != now.seed {
        differs.push(format!("seed {} vs {}", base.seed, now.seed));
    }
    if base.text != now.text {
        // The first line that differs: a count of differing lines would count every line
        // after one inserted comment.
        let mut base_lines = base.text.lines().map(Some).chain(std::iter::repeat(None));
        let mut now_lines = now.text.lines().map(Some).chain(std::iter::repeat(None));
        let lines = base.text.lines().count().max(now.text.lines().count());
        // Texts that differ only in line endings have no differing line: the last + 1.
        let line = (1..=lines)
            .find(|_| base_lines.next() != now_lines.next())
            .unwrap_or(lines + 1);
        differs.push(format!("scenario text (from line {line} on)"));
    }
    differs
}

/// The median of current ÷ baseline over the compared figures of one statistic, never
/// below 1, so that a faster machine never makes the gate stricter than the baseline.
fn machine_factor(rows: &[Row], stat: &str) -> f64 {
    let mut ratios: Vec<f64> = rows
        .iter()
        .filter(|r| r.stat == stat && r.verdict == Verdict::Ok)
        .filter_map(|r| match (r.baseline_us, r.current_us) {
            (Some(b), Some(c)) if b > 0 => Some(c as f64 / b as f64),
            _ => None,
        })
        .collect();
    if ratios.is_empty() {
        return 1.0;
    }
    ratios.sort_by(f64::total_cmp);
    let middle = ratios.len() / 2;
    let median = if ratios.len() % 2 == 0 {
        (ratios[middle - 1] + ratios[middle]) / 2.0
    } else {
        ratios[middle]
    };
    median.max(1.0)
}

fn judge(baseline_us: f64, current_us: u64, max_regression_pct: f64) -> Verdict {
    let limit = baseline_us * (1.0 + max_regression_pct / 100.0);
    let current_us = current_us as f64;
    if current_us <= limit {
        Verdict::Ok
    } else if current_us - baseline_us > REGRESSION_US_MIN as f64 {
        Verdict::Regressed
    } else {
        Verdict::UnderFloor
    }
}

/// The comparison as an aligned table, with the machine factors when they scaled it.
pub fn render(comparison: &Comparison) -> String {
    let rows = &comparison.rows;
    let width = rows.iter().map(|r| r.step.len()).max().unwrap_or(4).max(4);
    let mut out = format!(
        "{:<width$} {:>5} {:>12} {:>12} {:>8}  verdict\n",
        "step", "stat", "baseline ms", "current ms", "change"
    );
    for row in rows {
        let ms =
            |us: Option<u64>| us.map_or("-".to_string(), |us| format!("{:.3}", us as f64 / 1000.0));
        let change = match (row.baseline_us, row.current_us) {
            (Some(b), Some(c)) if b > 0 => format!("{:+.1}%", (c as f64 / b as f64 - 1.0) * 100.0),
            _ => "-".to_string(),
        };
        let verdict = match row.verdict {
            Verdict::Ok => "ok".to_string(),
            Verdict::UnderFloor => "ok (grew, but by less than 1 ms)".to_string(),
            Verdict::Regressed => "REGRESSED".to_string(),
            Verdict::Missing => "MISSING (no successful sample in the current run)".to_string(),
            Verdict::Skipped(why) => format!("skipped ({why})"),
        };
        let _ = writeln!(
            out,
            "{:<width$} {:>5} {:>12} {:>12} {:>8}  {verdict}",
            row.step,
            row.stat,
            ms(row.baseline_us),
            ms(row.current_us),
            change
        );
    }
    if comparison.factors.iter().any(|&(_, factor)| factor != 1.0) {
        let factors: Vec<String> = comparison
            .factors
            .iter()
            .map(|(stat, factor)| format!("{stat} ×{factor:.2}"))
            .collect();
        let _ = writeln!(
            out,
            "machine factor (median growth of all steps, the baseline scaled by it): {}",
            factors.join(", ")
        );
    }
    let grown: Vec<&ErrorRow> = comparison
        .errors
        .iter()
        .filter(|e| e.current_pct > e.baseline_pct)
        .collect();
    if !grown.is_empty() {
        let _ = writeln!(
            out,
            "error rates that grew (request steps; allowed: +{ERROR_RATE_POINTS_MAX} point):"
        );
        for e in grown {
            let verdict = if e.regressed { "REGRESSED" } else { "ok" };
            let _ = writeln!(
                out,
                "  {:<width$} {:>8.3}% → {:.3}%  {verdict}",
                e.step, e.baseline_pct, e.current_pct
            );
        }
    }
    for difference in &comparison.scenario_differs {
        let _ = writeln!(
            out,
            "warning: the two runs ran different scenarios: {difference}"
        );
    }
    out
}

#[cfg(test)]
mod tests;
