//! `report.html`: the report as one self-contained page, written next to `report.json`.
//!
//! The page needs no network: inline CSS, inline SVG and one inline script, so that it
//! opens the same from a CI artifact, a mail attachment or a laptop offline. The charts
//! are drawn here as SVG and read without the script, which only adds the tooltip, the
//! log/linear switch and the step selector (`assets`). Every text taken from the report
//! is escaped, since scenario names, error codes and service names come from files and
//! servers.
//!
//! - `tables`: steps with rates and statistics, codes, verdicts, faults, failover,
//!   services, the funnel.
//! - `timeline`: the charts on the run's time axis; `detail`: one step's bands and
//!   distribution; `chart`: drawing; `palette`: colours; `assets`: style and script.

use super::Report;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

mod assets;
mod chart;
mod detail;
mod palette;
mod tables;
mod timeline;

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

impl Report {
    /// Writes `report.html` into `dir` and returns its path.
    pub fn write_html(&self, dir: &Path) -> std::io::Result<PathBuf> {
        let path = dir.join("report.html");
        std::fs::write(&path, self.html())?;
        Ok(path)
    }

    /// The report as a self-contained HTML page.
    pub fn html(&self) -> String {
        let mut out = String::new();
        let name = escape(&self.scenario.name);
        let _ = write!(
            out,
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <title>catwar-sim: {name}</title><style>{}</style><script>{}</script></head><body>\n\
             <h1>Scenario {name}</h1>\n",
            assets::STYLE,
            assets::ERROR_CATCHER
        );
        self.html_header(&mut out);
        self.html_steps(&mut out);
        out.push_str(
            "<h2>Over time</h2>\n<p>Hover a chart for every series' value at that second. \
             Dashed red lines are faults; an orange span is a failover gap's length (last good \
             pick before a balancer's kill to the first pick of a newer epoch), drawn from \
             the kill.</p>\n",
        );
        let charts = self.time_charts();
        if !charts.iter().any(|c| c.id == "errors") {
            out.push_str("<p>Errors by step and code over time: none failed.</p>\n");
        }
        for chart in charts {
            if chart.id == "services-cpu" {
                self.html_services(&mut out);
            }
            self.draw(&mut out, &chart);
        }
        self.html_step_details(&mut out);
        self.html_verdicts(&mut out);
        self.html_faults(&mut out);
        self.html_funnel(&mut out);
        let _ = write!(
            out,
            "<details><summary>Scenario file {}</summary><pre>{}</pre></details>\n\
             <script>{}</script>\n</body></html>\n",
            escape(&self.scenario.path),
            escape(&self.scenario.text),
            assets::SCRIPT
        );
        out
    }

    fn html_header(&self, out: &mut String) {
        let (class, verdict) = match self.exit_code {
            crate::EXIT_OK => ("pass", "PASS"),
            crate::EXIT_INTERRUPTED => ("fail", "INTERRUPTED"),
            crate::EXIT_INVARIANT_VIOLATED => ("fail", "FAIL: an invariant was violated"),
            crate::EXIT_ABORTED => ("fail", "ABORTED: a threshold stopped the run"),
            crate::EXIT_RUN_FAILED => ("fail", "FAIL: a worker or agent was lost"),
            _ => ("fail", "FAIL: a threshold failed"),
        };
        let env = &self.environment;
        let server = &self.server;
        let rows = [
            (
                "result",
                format!(
                    "<span class=\"{class}\">{verdict}</span> (exit code {})",
                    self.exit_code
                ),
            ),
            ("started", utc_time(self.started_at_unix_ms)),
            ("duration", format!("{:.1} s", self.duration_s)),
            ("seed", self.scenario.seed.to_string()),
            (
                "commit",
                escape(env.git_commit.as_deref().unwrap_or("unknown")),
            ),
            (
                "machine",
                escape(&format!(
                    "{} {}, {} cores, catwar-sim {}, target {}",
                    env.os, env.arch, env.cores, env.sim_version, env.target
                )),
            ),
            ("server", escape(&server.describe())),
        ];
        out.push_str("<table>\n");
        for (key, value) in rows {
            let _ = writeln!(out, "<tr><th>{key}</th><td>{value}</td></tr>");
        }
        if let Some(abort) = &self.abort {
            let _ = writeln!(
                out,
                "<tr><th>aborted</th><td class=\"fail\">{}</td></tr>",
                escape(&abort.describe())
            );
        }
        out.push_str("</table>\n");
    }
}

/// Milliseconds since the Unix epoch as `YYYY-MM-DD hh:mm:ss UTC`, computed here
/// rather than with a date crate for one line of the page (Howard Hinnant's
/// days-to-civil algorithm).
fn utc_time(unix_ms: u64) -> String {
    const DAY_S: u64 = 86_400;
    let secs = unix_ms / 1000;
    let (days, of_day) = ((secs / DAY_S) as i64, secs % DAY_S);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::utc_time;
    use crate::report::tests::sample_report;

    /// Values of every `data-points="N"` attribute in `html`.
    fn data_points(html: &str) -> Vec<u64> {
        html.split("data-points=\"")
            .skip(1)
            .map(|rest| rest.split('"').next().unwrap().parse().unwrap())
            .collect()
    }

    #[test]
    fn html_is_self_contained_with_charts_and_fault_markers() {
        let html = sample_report("nightly").html();
        assert!(!html.contains("http://") && !html.contains("https://"));
        assert!(!html.contains("<script src") && !html.contains("<link") && !html.contains("<img"));
        assert!(html.contains("data-chart=\"throughput-requests\""));
        assert!(html.contains("data-chart=\"p99-requests\""));
        assert!(html.contains("data-chart=\"errors\""));
        assert!(html.contains("data-series=\"active clients\""));
        assert!(html.contains("data-series=\"update.check\""));
        assert!(html.contains("data-series=\"update.check\" data-points"));
        let points = data_points(&html);
        assert!(
            !points.is_empty() && points.iter().all(|&n| n > 0),
            "{points:?}"
        );
        assert!(
            html.matches("data-fault=\"balancer-1\"").count() >= 4,
            "a marker per time chart"
        );
        assert!(html.contains("Thresholds"));
        assert!(html.contains("downloads.sha256"));
        assert!(html.contains("id=\"step-select\""));
    }

    #[test]
    fn scenario_text_is_escaped() {
        let html = sample_report("<script>alert(\"x\")</script>").html();
        assert!(
            !html.contains("<script>alert"),
            "raw script tag in the page"
        );
        assert!(html.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"));
    }

    #[test]
    fn start_time_is_utc() {
        assert_eq!(utc_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_time(1_796_300_741_000), "2026-12-03 12:25:41 UTC");
        assert_eq!(utc_time(951_782_400_000), "2000-02-29 00:00:00 UTC");
    }
}
