//! The page's tables: steps with rates and statistics, errors and expected refusals by
//! step and code, thresholds, invariants, faults, failover gaps, services, the funnel and
//! the load the simulator held.

use super::escape;
use super::timeline::Kind;
use crate::report::{decode_histogram, Report, StepReport};
use std::fmt::Write as _;

/// Bytes in a MiB, for the services table.
const MIB_BYTES: f64 = 1024.0 * 1024.0;

/// A latency in µs as ms with two decimals, `-` without one.
fn ms(us: Option<f64>) -> String {
    us.map_or("-".to_string(), |us| format!("{:.2}", us / 1000.0))
}

/// A step's smallest latency and standard deviation, µs; from the histogram for
/// reports written before the two were.
pub(super) fn min_and_stddev(step: &StepReport) -> (Option<u64>, Option<f64>) {
    let histogram = || decode_histogram(&step.hist).ok().filter(|h| !h.is_empty());
    (
        step.min_us.or_else(|| histogram().map(|h| h.min())),
        step.stddev_us.or_else(|| histogram().map(|h| h.stdev())),
    )
}

/// A whole-ms figure, `-` without one.
fn whole_ms(value: Option<u64>) -> String {
    value.map_or("-".to_string(), |ms| ms.to_string())
}

impl Report {
    /// Per step: kind, count, rate, errors, expected refusals, min/mean/stddev and the
    /// percentiles.
    pub(super) fn html_steps(&self, out: &mut String) {
        out.push_str(
            "<h2>Steps</h2>\n<table><tr><th>step</th><th>kind</th><th>count</th><th>per s</th>\
             <th>errors</th><th>error %</th><th>expected refusals</th><th>min</th><th>mean</th>\
             <th>stddev</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th></tr>\n",
        );
        let duration_s = self.duration_s.max(1e-3);
        for (name, step) in self.steps_in_script_order() {
            let kind = match Kind::of(name) {
                Kind::Request => "request",
                Kind::Stream => "stream",
            };
            let error_pct = if step.count == 0 {
                "-".to_string()
            } else {
                format!("{:.3}", step.errors as f64 * 100.0 / step.count as f64)
            };
            let expected: u64 = step.expected_by_code.values().sum();
            let _ = write!(
                out,
                "<tr data-step=\"{}\"><td>{}</td><td>{kind}</td><td class=\"n\">{}</td><td class=\"n\">{:.1}</td>\
                 <td class=\"n\">{}</td><td class=\"n\">{error_pct}</td><td class=\"n\">{expected}</td>",
                escape(name),
                escape(name),
                step.count,
                step.count as f64 / duration_s,
                step.errors,
            );
            let (min_us, stddev_us) = min_and_stddev(step);
            let stats = [
                min_us.map(|us| us as f64),
                step.mean_us,
                stddev_us,
                step.p50_us.map(|us| us as f64),
                step.p90_us.map(|us| us as f64),
                step.p99_us.map(|us| us as f64),
                step.p999_us.map(|us| us as f64),
                step.max_us.map(|us| us as f64),
            ];
            for us in stats {
                let _ = write!(out, "<td class=\"n\">{}</td>", ms(us));
            }
            out.push_str("</tr>\n");
        }
        out.push_str(
            "</table><p>Latencies in ms, of successful requests and expected refusals; \
             <i>per s</i> is the count over the run's duration. Requests are what the client \
             asked and the server answered; streams are what the server pushes on its own \
             (ticks, and the acknowledgements riding on them), charted apart.</p>\n",
        );
        self.html_codes(out);
    }

    /// Errors and expected refusals by step and code.
    fn html_codes(&self, out: &mut String) {
        let mut rows = Vec::new();
        for (name, step) in self.steps_in_script_order() {
            for (code, n) in &step.errors_by_code {
                rows.push((name, "error", code, *n, step.count));
            }
            for (code, n) in &step.expected_by_code {
                rows.push((name, "expected refusal", code, *n, step.count));
            }
        }
        if rows.is_empty() {
            out.push_str("<p>No request failed and none was refused.</p>\n");
            return;
        }
        out.push_str(
            "<h3>Errors and expected refusals by step and code</h3>\n<table id=\"codes\"><tr>\
             <th>step</th><th>outcome</th><th>code</th><th>count</th><th>% of the step</th></tr>\n",
        );
        for (name, outcome, code, n, count) in rows {
            let class = if outcome == "error" { "fail" } else { "muted" };
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td class=\"{class}\">{outcome}</td><td>{}</td><td class=\"n\">{n}</td>\
                 <td class=\"n\">{:.3}</td></tr>",
                escape(name),
                escape(code),
                n as f64 * 100.0 / count.max(1) as f64
            );
        }
        out.push_str(
            "</table><p>An expected refusal is the answer the script asked for (a wrong \
             password's <code>login_failed</code>, the <code>login_again</code> after an IP \
             change): a success, not an error.</p>\n",
        );
    }

    /// Thresholds and invariants.
    pub(super) fn html_verdicts(&self, out: &mut String) {
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
    }

    /// The faults as they ran, and each balancer kill's failover gap and epochs.
    pub(super) fn html_faults(&self, out: &mut String) {
        if !self.faults.is_empty() {
            out.push_str("<h2>Faults</h2>\n<table><tr><th>scheduled s</th><th>executed s</th><th>action</th><th>service</th><th>pid</th><th>outcome</th><th>back after ms</th><th>DB integrity</th></tr>\n");
            for f in &self.faults {
                let outcome = if f.ok {
                    "done".to_string()
                } else {
                    format!("failed: {}", f.detail.as_deref().unwrap_or(""))
                };
                let _ = writeln!(
                    out,
                    "<tr><td class=\"n\">{:.1}</td><td class=\"n\">{:.3}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td>{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
                    f.at_s,
                    f.executed_at_ms / 1000.0,
                    escape(&f.action),
                    escape(&f.service),
                    f.pid.map_or("-".to_string(), |p| p.to_string()),
                    escape(&outcome),
                    f.back_after_ms.map_or("-".to_string(), |ms| format!("{ms:.0}")),
                    escape(f.integrity.as_deref().unwrap_or("-"))
                );
            }
            out.push_str("</table>\n");
        }
        let failover = &self.failover;
        if failover.kills.is_empty() {
            return;
        }
        out.push_str(
            "<h2>Failover</h2>\n<table id=\"failover\"><tr><th>balancer kill at s</th><th>gap ms</th>\
             <th>epoch before</th><th>epoch after</th><th>unavailable answers</th></tr>\n",
        );
        let epoch = |e: Option<u64>| e.map_or("-".to_string(), |e| e.to_string());
        for kill in &failover.kills {
            let _ = writeln!(
                out,
                "<tr><td class=\"n\">{:.3}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
                 <td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                kill.at_ms / 1000.0,
                kill.gap_ms
                    .map_or("unmeasured".to_string(), |ms| format!("{ms:.0}")),
                epoch(kill.epoch_before),
                epoch(kill.epoch_after),
                kill.unavailable
            );
        }
        let _ = writeln!(
            out,
            "</table><p>The gap runs from the last good pick before the kill to the first pick of a \
             newer epoch after it; median {} ms, max {} ms. Charts shade each gap from its \
             kill and name its epochs.</p>",
            failover.median_ms.map_or("-".to_string(), |ms| format!("{ms:.0}")),
            failover.max_ms.map_or("-".to_string(), |ms| format!("{ms:.0}"))
        );
    }

    /// Each service's peak and mean CPU and peak memory.
    pub(super) fn html_services(&self, out: &mut String) {
        if self.services.is_empty() {
            return;
        }
        out.push_str(
            "<h3>Services</h3>\n<table id=\"services\"><tr><th>service</th><th>source</th>\
             <th>samples</th><th>CPU max (cores)</th><th>CPU mean (cores)</th><th>RSS max (MiB)</th>\
             <th>processes</th><th>note</th></tr>\n",
        );
        let cores = |c: Option<f64>| c.map_or("-".to_string(), |c| format!("{c:.2}"));
        for s in &self.services {
            let source = serde_json::to_value(s.source)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
                 <td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
                escape(&s.name),
                escape(&source),
                s.samples.len(),
                cores(s.cpu_cores_max),
                cores(s.cpu_cores_mean),
                s.rss_bytes_max
                    .map_or("-".to_string(), |b| format!("{:.1}", b as f64 / MIB_BYTES)),
                s.processes,
                escape(s.note.as_deref().unwrap_or(""))
            );
        }
        out.push_str("</table>\n");
    }

    /// How far sessions got, stage by stage, and the open model's arrivals and knee.
    pub(super) fn html_funnel(&self, out: &mut String) {
        if !self.funnel.is_empty() {
            out.push_str(
                "<h2>Funnel</h2>\n<table id=\"funnel\"><tr><th>stage</th><th>sessions</th><th>clients</th>\
                 <th>p50 ms</th><th>p99 ms</th><th>max ms</th></tr>\n",
            );
            for row in &self.funnel {
                let _ = writeln!(
                    out,
                    "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
                     <td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                    escape(&row.stage),
                    row.sessions,
                    row.clients,
                    whole_ms(row.p50_ms),
                    whole_ms(row.p99_ms),
                    whole_ms(row.max_ms)
                );
            }
            out.push_str("</table><p>Time spent in each stage per session, ms (2 significant figures); observe runs beside play; done is the whole session.</p>\n");
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
            let service = knee.service.as_ref().map_or(String::new(), |s| {
                format!(
                    " Nearest saturation then: {} at {:.2} cores, {:.0} MiB.",
                    s.name,
                    s.cpu_cores,
                    s.rss_bytes as f64 / MIB_BYTES
                )
            });
            let text = match (knee.t_s, &knee.condition) {
                (Some(t_s), Some(condition)) => format!(
                    "Knee at {t_s} s: {} broke for {} s in a row at {:.1} arrivals/s offered; \
                     {} requests/s the second before, {} clients active.{service}",
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
}
