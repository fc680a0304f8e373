//! `report.html`: the report as one self-contained page, written next to `report.json`.
//!
//! The page needs no network and no JavaScript: inline CSS and inline SVG only, so that
//! it opens the same from a CI artifact, a mail attachment or a laptop offline. Charts are
//! drawn from the per-second series; each data series is an SVG element carrying
//! `data-series` (the step) and `data-points` (how many points it has), so that tests can
//! tell a chart with data from an empty frame. Every text taken from the report is
//! escaped, since scenario names and error codes come from files and servers.

use super::summary::ms;
use super::Report;
use crate::step::Step;
use chart::{Chart, Series};
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

mod chart;

const PALETTE: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:24px;color:#222;max-width:1100px}\
table{border-collapse:collapse;margin:8px 0 16px}td,th{border:1px solid #ccc;padding:3px 8px}\
td.n{text-align:right;font-variant-numeric:tabular-nums}th{background:#f3f3f3}\
.pass{color:#167516;font-weight:bold}.fail{color:#b00;font-weight:bold}\
svg{width:100%;height:auto;background:#fff;border:1px solid #ddd}\
svg text{font:11px system-ui,sans-serif;fill:#333}.grid{stroke:#eee}.axis{stroke:#555}\
.fault{stroke:#c00;stroke-dasharray:4 3}.fault-span{fill:#c00;fill-opacity:.08}.fault-failed{stroke:#999;stroke-dasharray:2 4}\
.legend span{display:inline-block;margin-right:14px}.legend i{display:inline-block;\
width:12px;height:3px;margin-right:4px;vertical-align:middle}pre{background:#f7f7f7;padding:8px}";

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
             <title>catwar-sim: {name}</title><style>{STYLE}</style></head><body>\n\
             <h1>Scenario {name}</h1>\n"
        );
        self.html_header(&mut out);
        self.html_tables(&mut out);
        out.push_str("<h2>Charts</h2>\n");
        self.html_legend(&mut out);
        let per_second = 1000.0 / self.timeseries.interval_ms.max(1) as f64;
        let charts = [
            self.chart("p99 latency per second", "p99 ms", true, |s| {
                s.p99_us.map(|us| us as f64 / 1000.0)
            }),
            self.chart("Throughput", "requests/s", false, |s| {
                Some(s.requests as f64 * per_second)
            }),
            self.chart("Errors", "errors/s", false, |s| {
                Some(s.errors as f64 * per_second)
            }),
        ];
        for chart in &charts {
            self.draw(&mut out, chart);
        }
        let load = self.load_chart();
        if !load.series.is_empty() {
            self.draw(&mut out, &load);
        }
        let _ = write!(
            out,
            "<details><summary>Scenario file {}</summary><pre>{}</pre></details>\n</body></html>\n",
            escape(&self.scenario.path),
            escape(&self.scenario.text)
        );
        out
    }

    fn html_header(&self, out: &mut String) {
        let (class, verdict) = match self.exit_code {
            crate::EXIT_OK => ("pass", "PASS"),
            crate::EXIT_INTERRUPTED => ("fail", "INTERRUPTED"),
            crate::EXIT_INVARIANT_VIOLATED => ("fail", "FAIL: an invariant was violated"),
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
            ("seed", self.scenario.seed.to_string()),
            ("duration", format!("{:.1} s", self.duration_s)),
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
        out.push_str("</table>\n");
    }

    fn html_tables(&self, out: &mut String) {
        out.push_str(
            "<h2>Steps</h2>\n<table><tr><th>step</th><th>count</th><th>errors</th><th>p50</th>\
             <th>p90</th><th>p99</th><th>p99.9</th><th>max</th></tr>\n",
        );
        for (name, step) in self.steps_in_script_order() {
            let _ = write!(
                out,
                "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>",
                escape(name),
                step.count,
                step.errors
            );
            for us in [
                step.p50_us,
                step.p90_us,
                step.p99_us,
                step.p999_us,
                step.max_us,
            ] {
                let _ = write!(out, "<td class=\"n\">{}</td>", ms(us));
            }
            out.push_str("</tr>\n");
        }
        out.push_str("</table><p>Latencies in ms, of successful requests.</p>\n");
        if !self.errors_by_code.is_empty() {
            let codes: Vec<String> = self
                .errors_by_code
                .iter()
                .map(|(code, n)| format!("{} {n}", escape(code)))
                .collect();
            let _ = writeln!(out, "<p>Errors by code: {}</p>", codes.join(", "));
        }
        out.push_str("<h2>Thresholds</h2>\n<table><tr><th>metric</th><th>condition</th><th>actual</th><th>result</th></tr>\n");
        for t in &self.thresholds {
            let actual = t.actual.map_or("none".to_string(), |v| format!("{v:.3}"));
            let (class, verdict) = if t.pass {
                ("pass", "pass")
            } else {
                ("fail", "FAIL")
            };
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td>{}</td><td class=\"n\">{actual}</td><td class=\"{class}\">{verdict}</td></tr>",
                escape(&t.metric),
                escape(&t.condition)
            );
        }
        out.push_str("</table>\n<h2>Invariants</h2>\n<table><tr><th>invariant</th><th>checked</th><th>violations</th></tr>\n");
        for i in &self.invariants {
            let class = if i.violations == 0 { "pass" } else { "fail" };
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n {class}\">{}</td></tr>",
                escape(&i.name),
                i.checked,
                i.violations
            );
        }
        out.push_str("</table>\n");
        self.html_funnel(out);
        if !self.faults.is_empty() {
            out.push_str("<h2>Faults</h2>\n<table><tr><th>scheduled s</th><th>executed s</th><th>action</th><th>service</th><th>pid</th><th>outcome</th><th>back after ms</th></tr>\n");
            for f in &self.faults {
                let outcome = if f.ok {
                    "done".to_string()
                } else {
                    format!("failed: {}", f.detail.as_deref().unwrap_or(""))
                };
                let _ = writeln!(
                    out,
                    "<tr><td class=\"n\">{:.1}</td><td class=\"n\">{:.3}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td>{}</td><td class=\"n\">{}</td></tr>",
                    f.at_s,
                    f.executed_at_ms / 1000.0,
                    escape(&f.action),
                    escape(&f.service),
                    f.pid.map_or("-".to_string(), |p| p.to_string()),
                    escape(&outcome),
                    f.back_after_ms.map_or("-".to_string(), |ms| format!("{ms:.0}"))
                );
            }
            out.push_str("</table>\n");
        }
    }

    /// How far sessions got, stage by stage, and the open model's arrivals and knee.
    fn html_funnel(&self, out: &mut String) {
        if !self.funnel.is_empty() {
            out.push_str(
                "<h2>Funnel</h2>\n<table><tr><th>stage</th><th>sessions</th><th>clients</th>\
                 <th>p50 s</th><th>p99 s</th><th>max s</th></tr>\n",
            );
            let s = |ms: Option<u64>| {
                ms.map_or("-".to_string(), |ms| format!("{:.2}", ms as f64 / 1000.0))
            };
            for row in &self.funnel {
                let _ = writeln!(
                    out,
                    "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
                     <td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                    escape(&row.stage),
                    row.sessions,
                    row.clients,
                    s(row.p50_ms),
                    s(row.p99_ms),
                    s(row.max_ms)
                );
            }
            out.push_str("</table><p>Time spent in each stage per session; observe runs beside play; done is the whole session.</p>\n");
        }
        if let Some(arrivals) = &self.arrivals {
            let _ = writeln!(
                out,
                "<p>Open model ({}): {:.0} arrivals expected, {} started, <span class=\"{}\">{} dropped</span> (every client busy).</p>",
                escape(&arrivals.arrival),
                arrivals.expected,
                arrivals.started,
                if arrivals.dropped == 0 { "pass" } else { "fail" },
                arrivals.dropped
            );
        }
        if let Some(knee) = &self.knee {
            let text = match (knee.t_s, &knee.condition) {
                (Some(t_s), Some(condition)) => format!(
                    "Knee at {t_s} s: {} broke for {} s in a row at {:.1} arrivals/s offered; \
                     {} requests/s the second before, {} clients active.",
                    condition, knee.window_s, knee.arrival_rate_per_s, knee.throughput_per_s, knee.active
                ),
                _ => format!(
                    "No knee: the server kept every condition up to {:.1} arrivals/s ({} requests/s at best).",
                    knee.arrival_rate_per_s, knee.throughput_per_s
                ),
            };
            let _ = writeln!(out, "<h2>Capacity</h2>\n<p>{}</p>", escape(&text));
        }
        let sim = &self.sim;
        if sim.peak_active > 0 {
            let _ = writeln!(
                out,
                "<p>Simulator: {} process(es), at most {} clients active, {} descriptors, {:.1} MiB resident{}.</p>",
                sim.workers,
                sim.peak_active,
                sim.peak_open_files,
                sim.peak_rss_kib as f64 / 1024.0,
                sim.rss_per_active_kib
                    .map_or(String::new(), |kib| format!(" ({kib:.1} KiB per active client)"))
            );
        }
    }

    /// Clients in a session and, for the open model, arrivals per second against the rate
    /// offered, with the knee's moment visible as where they part.
    fn load_chart(&self) -> Chart<'static> {
        let points = &self.timeseries.points;
        let line =
            |name: &str, colour: &'static str, value: &dyn Fn(&super::TimePoint) -> f64| Series {
                name: name.to_string(),
                colour,
                points: points
                    .iter()
                    .map(|p| (p.t_s as f64 + 0.5, value(p)))
                    .collect(),
            };
        let series = [
            line("active clients", "#444", &|p| p.load.active as f64),
            line("arrivals/s", "#1f77b4", &|p| p.load.arrivals as f64),
            line("offered/s", "#2ca02c", &|p| p.load.offered_per_s),
            line("dropped/s", "#d62728", &|p| p.load.dropped as f64),
        ]
        .into_iter()
        .filter(|s| s.points.iter().any(|p| p.1 > 0.0))
        .collect();
        Chart {
            title: "Load",
            y_label: "clients, arrivals/s",
            log: false,
            series,
        }
    }

    /// Step names in script order with their colours, so that every chart agrees: those
    /// of the totals and of the series, in case a report was edited or merged.
    fn colours(&self) -> Vec<(&String, &'static str)> {
        let series_names = self.timeseries.points.iter().flat_map(|p| p.steps.keys());
        let names: BTreeSet<&String> = self.steps.keys().chain(series_names).collect();
        let mut names: Vec<&String> = names.into_iter().collect();
        names.sort_by_key(|name| Step::from_name(name).map_or(usize::MAX, Step::index));
        names
            .into_iter()
            .enumerate()
            .map(|(i, name)| (name, PALETTE[i % PALETTE.len()]))
            .collect()
    }

    fn html_legend(&self, out: &mut String) {
        out.push_str("<p class=\"legend\">");
        for (name, colour) in self.colours() {
            let _ = write!(
                out,
                "<span><i style=\"background:{colour}\"></i>{}</span>",
                escape(name)
            );
        }
        out.push_str("<span><i style=\"background:#c00\"></i>fault</span></p>\n");
    }

    /// A chart with one series per step that has a value above zero.
    fn chart<'a>(
        &self,
        title: &'a str,
        y_label: &'a str,
        log: bool,
        value: impl Fn(&super::TimeStep) -> Option<f64>,
    ) -> Chart<'a> {
        let series = self
            .colours()
            .into_iter()
            .map(|(name, colour)| Series {
                name: name.clone(),
                colour,
                points: self
                    .timeseries
                    .points
                    .iter()
                    .filter_map(|p| {
                        let v = p.steps.get(name).and_then(&value)?;
                        Some((p.t_s as f64 + 0.5, v))
                    })
                    .collect(),
            })
            // A step that never ran (or never failed) would only hide the others at zero.
            .filter(|s| s.points.iter().any(|p| p.1 > 0.0))
            .collect();
        Chart {
            title,
            y_label,
            log,
            series,
        }
    }
}
#[cfg(test)]
mod tests {
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
        assert!(!html.contains("<script") && !html.contains("<link") && !html.contains("<img"));
        assert_eq!(
            html.matches("<svg").count(),
            4,
            "three charts of steps and the load"
        );
        assert!(html.contains("data-series=\"active clients\""));
        assert!(html.contains("data-series=\"update.check\""));
        let points = data_points(&html);
        assert!(
            !points.is_empty() && points.iter().all(|&n| n > 0),
            "{points:?}"
        );
        assert_eq!(
            html.matches("data-fault=\"balancer-1\"").count(),
            4,
            "one marker per chart"
        );
        assert!(html.contains("threshold") || html.contains("Thresholds"));
        assert!(html.contains("downloads.sha256"));
    }

    #[test]
    fn scenario_text_is_escaped() {
        let html = sample_report("<script>alert(\"x\")</script>").html();
        assert!(!html.contains("<script>"), "raw script tag in the page");
        assert!(html.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"));
    }
}
