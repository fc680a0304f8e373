//! One step in detail, chosen with a selector: its figures, its p50/p90/p99 bands over
//! time and its latency distribution by percentile, read from the step's whole HDR
//! histogram (the report's `hist`), so the distribution costs report.json nothing.

use super::chart::{Band, Chart, Scale, Series, XAxis};
use super::escape;
use super::tables::min_and_stddev;
use super::timeline::Kind;
use crate::report::{decode_histogram, Report, StepReport};
use std::fmt::Write as _;

/// Points per halving of the distance to 100 %: enough for a smooth curve from the
/// median to the maximum, a few dozen points in all.
const QUANTILE_TICKS_PER_HALF: u32 = 4;
/// Colours of the bands' lines, from cool to hot: a median far under its p99 reads at a
/// glance.
const P50_COLOUR: &str = "#4363d8";
const P90_COLOUR: &str = "#f58231";
const P99_COLOUR: &str = "#e6194b";

impl Report {
    /// The selector and one `div.step-detail` per step with latencies; the script shows
    /// the chosen one (without it, all show).
    pub(super) fn html_step_details(&self, out: &mut String) {
        let steps: Vec<(&String, &StepReport)> = self
            .steps_in_script_order()
            .filter(|(_, step)| step.p50_us.is_some())
            .collect();
        if steps.is_empty() {
            return;
        }
        // The busiest request step opens: the one most readers came for.
        let chosen = steps
            .iter()
            .filter(|(name, _)| Kind::of(name) == Kind::Request)
            .max_by_key(|(_, step)| step.count)
            .or(steps.first())
            .map(|(name, _)| name.as_str())
            .unwrap_or_default();
        out.push_str(
            "<h2>One step in detail</h2>\n<p class=\"selector\"><label>Step \
             <select id=\"step-select\">",
        );
        for (name, _) in &steps {
            let _ = write!(
                out,
                "<option value=\"{0}\"{1}>{0}</option>",
                escape(name),
                if name.as_str() == chosen {
                    " selected"
                } else {
                    ""
                }
            );
        }
        out.push_str("</select></label></p>\n");
        for (name, step) in steps {
            let _ = writeln!(
                out,
                "<div class=\"step-detail\" data-step=\"{}\">",
                escape(name)
            );
            let _ = writeln!(out, "<p>{}</p>", escape(&self.step_line(name, step)));
            self.draw(out, &self.bands_chart(name));
            self.draw(out, &distribution_chart(name, step));
            out.push_str("</div>\n");
        }
    }

    /// The step's figures in one sentence.
    fn step_line(&self, name: &str, step: &StepReport) -> String {
        let ms =
            |us: Option<f64>| us.map_or("-".to_string(), |us| format!("{:.2} ms", us / 1000.0));
        let (min_us, stddev_us) = min_and_stddev(step);
        format!(
            "{name}: {} requests, {} failed; min {}, mean {}, stddev {}, p50 {}, p99 {}, max {}.",
            step.count,
            step.errors,
            ms(min_us.map(|us| us as f64)),
            ms(step.mean_us),
            ms(stddev_us),
            ms(step.p50_us.map(|us| us as f64)),
            ms(step.p99_us.map(|us| us as f64)),
            ms(step.max_us.map(|us| us as f64)),
        )
    }

    /// p50, p90 and p99 of each second as lines over shaded bands.
    fn bands_chart(&self, name: &str) -> Chart {
        let quantile = |pick: fn(&crate::report::TimeStep) -> Option<u64>| -> Vec<(f64, f64)> {
            self.timeseries
                .points
                .iter()
                .filter_map(|p| {
                    let us = pick(p.steps.get(name)?)?;
                    Some((p.t_s as f64 + 0.5, us as f64 / 1000.0))
                })
                .collect()
        };
        let p50 = quantile(|s| s.p50_us);
        let p90 = quantile(|s| s.p90_us);
        let p99 = quantile(|s| s.p99_us);
        let mut chart = Chart::time(
            &format!("bands {name}"),
            &format!("{name}: p50, p90 and p99 per second"),
            "ms",
            "ms",
        );
        chart.scale = Scale::Auto;
        // Bands need both edges at the same seconds, which every second with samples has.
        if p50.len() == p99.len() && p90.len() == p99.len() {
            chart.bands = vec![
                Band {
                    colour: P90_COLOUR,
                    lower: p50.clone(),
                    upper: p90.clone(),
                },
                Band {
                    colour: P99_COLOUR,
                    lower: p90.clone(),
                    upper: p99.clone(),
                },
            ];
        }
        chart.series = [
            ("p50", P50_COLOUR, p50),
            ("p90", P90_COLOUR, p90),
            ("p99", P99_COLOUR, p99),
        ]
        .into_iter()
        .filter(|(_, _, points)| !points.is_empty())
        .map(|(q, colour, points)| Series {
            name: format!("{name} {q}"),
            colour: colour.to_string(),
            points,
        })
        .collect();
        chart
    }
}

/// The latency at every percentile of the whole run, from the step's histogram; an
/// empty chart if the histogram cannot be read.
fn distribution_chart(name: &str, step: &StepReport) -> Chart {
    let histogram = decode_histogram(&step.hist).ok().filter(|h| !h.is_empty());
    let (points, nines) = histogram.map_or((Vec::new(), 1.0), |h| {
        // As many nines as the count resolves: 1,000 samples say nothing past 99.9 %.
        let nines = (h.len() as f64).log10().ceil().max(1.0);
        let points = h
            .iter_quantiles(QUANTILE_TICKS_PER_HALF)
            .map(|v| {
                (
                    v.quantile_iterated_to() * 100.0,
                    v.value_iterated_to() as f64 / 1000.0,
                )
            })
            .collect::<Vec<_>>();
        (points, nines)
    });
    Chart {
        id: format!("distribution {name}"),
        title: format!("{name}: latency by percentile, whole run"),
        y_label: "ms".to_string(),
        unit: "ms",
        x: XAxis::Percentile { nines },
        scale: Scale::Auto,
        series: vec![Series {
            name: name.to_string(),
            colour: P50_COLOUR.to_string(),
            points,
        }]
        .into_iter()
        .filter(|s| !s.points.is_empty())
        .collect(),
        bands: Vec::new(),
    }
}
