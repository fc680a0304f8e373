//! `catwar-sim compare`: gates CI on latency regressions between two reports.
//!
//! For every step present in both reports, p50, p90 and p99 are compared. A figure has
//! regressed when it grew by more than the allowed percentage *and* by more than
//! [`REGRESSION_US_MIN`], so that sub-millisecond noise on loopback never fails a build.
//! Steps with fewer than [`SAMPLES_MIN`] successful requests on either side are skipped:
//! their tails are not statistics yet; a p99 needs [`P99_SAMPLES_MIN`].

use crate::report::REPORT_SCHEMA;
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
/// The default allowed growth, percent.
pub const MAX_REGRESSION_PCT_DEFAULT: f64 = 25.0;

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
    steps: BTreeMap<String, StepView>,
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
    /// Grew beyond both bounds.
    Regressed,
    /// Not compared, and why.
    Skipped(&'static str),
}

/// Compares two reports; `max_regression_pct` is the allowed growth in percent.
pub fn compare(baseline: &ReportView, current: &ReportView, max_regression_pct: f64) -> Vec<Row> {
    let mut rows = Vec::new();
    for (name, base) in &baseline.steps {
        let Some(now) = current.steps.get(name) else {
            continue;
        };
        let samples = base.samples().min(now.samples());
        for ((stat, baseline_us), (_, current_us)) in base.stats().into_iter().zip(now.stats()) {
            let verdict = match (baseline_us, current_us) {
                _ if samples < SAMPLES_MIN => Verdict::Skipped("fewer than 100 samples"),
                _ if stat == "p99" && samples < P99_SAMPLES_MIN => {
                    Verdict::Skipped("p99 of fewer than 1000 samples")
                }
                (Some(b), Some(c)) if regressed(b, c, max_regression_pct) => Verdict::Regressed,
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
    rows
}

fn regressed(baseline_us: u64, current_us: u64, max_regression_pct: f64) -> bool {
    let limit = baseline_us as f64 * (1.0 + max_regression_pct / 100.0);
    current_us as f64 > limit && current_us.saturating_sub(baseline_us) > REGRESSION_US_MIN
}

/// The comparison as an aligned table.
pub fn render(rows: &[Row]) -> String {
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
            Verdict::Regressed => "REGRESSED".to_string(),
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
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(steps: &[(&str, u64, [u64; 3])]) -> ReportView {
        let steps = steps
            .iter()
            .map(|&(name, count, [p50, p90, p99])| {
                let step = StepView {
                    count,
                    errors: 0,
                    p50_us: Some(p50),
                    p90_us: Some(p90),
                    p99_us: Some(p99),
                };
                (name.to_string(), step)
            })
            .collect();
        ReportView {
            schema: REPORT_SCHEMA.to_string(),
            steps,
        }
    }

    fn verdicts(rows: &[Row]) -> Vec<(&str, &Verdict)> {
        rows.iter().map(|r| (r.stat, &r.verdict)).collect()
    }

    #[test]
    fn regression_needs_both_the_percentage_and_a_millisecond() {
        let baseline = view(&[("update.check", 1000, [2_000, 400, 10_000])]);
        // p50: +50 % and +1 ms exactly (not more); p90: +100 % but only 0.4 ms;
        // p99: +30 % and 3 ms.
        let current = view(&[("update.check", 1000, [3_000, 800, 13_000])]);
        let rows = compare(&baseline, &current, 25.0);
        assert_eq!(
            verdicts(&rows),
            vec![
                ("p50", &Verdict::Ok),
                ("p90", &Verdict::Ok),
                ("p99", &Verdict::Regressed)
            ]
        );
        let lenient = compare(&baseline, &current, 50.0);
        assert!(lenient.iter().all(|r| r.verdict == Verdict::Ok));
    }

    #[test]
    fn a_p99_needs_a_thousand_samples() {
        let baseline = view(&[("lobby.start", 600, [100, 200, 500])]);
        let current = view(&[("lobby.start", 600, [100, 200, 5_000])]);
        let rows = compare(&baseline, &current, 100.0);
        let p99 = rows.iter().find(|r| r.stat == "p99").unwrap();
        assert!(matches!(p99.verdict, Verdict::Skipped(_)));
        let current = view(&[("lobby.start", 600, [5_000, 200, 500])]);
        assert!(compare(&baseline, &current, 100.0)
            .iter()
            .any(|r| r.verdict == Verdict::Regressed));
    }

    #[test]
    fn small_or_missing_steps_are_skipped() {
        let baseline = view(&[
            ("update.check", 99, [1_000, 1_000, 1_000]),
            ("file.download", 500, [1; 3]),
        ]);
        let current = view(&[("update.check", 5000, [90_000; 3])]);
        let rows = compare(&baseline, &current, 25.0);
        assert_eq!(rows.len(), 3);
        assert!(rows
            .iter()
            .all(|r| matches!(r.verdict, Verdict::Skipped(_))));
        assert!(render(&rows).contains("skipped"));
    }

    #[test]
    fn unreadable_reports_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.json");
        assert!(ReportView::load(&missing)
            .unwrap_err()
            .to_string()
            .contains("missing.json"));
        let wrong = dir.path().join("wrong.json");
        std::fs::write(&wrong, r#"{"schema": "other/v9", "steps": {}}"#).unwrap();
        let error = ReportView::load(&wrong).unwrap_err().to_string();
        assert!(
            error.contains("wrong.json") && error.contains("other/v9"),
            "{error}"
        );
    }
}
