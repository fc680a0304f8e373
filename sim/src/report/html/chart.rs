//! The charts of `report.html`: one inline SVG per chart, with axes, one polyline per
//! step and a dashed vertical marker per executed fault.

use super::escape;
use crate::report::Report;
use std::fmt::Write as _;

/// Chart size in SVG user units; the page scales it to its width.
const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 280.0;
/// Room for the y labels on the left, the fault labels above, the x labels below.
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 28.0;
const BOTTOM: f64 = 40.0;

/// One line of a chart: a step and its (seconds, value) points.
pub(super) struct Series {
    pub(super) name: String,
    pub(super) colour: &'static str,
    pub(super) points: Vec<(f64, f64)>,
}

/// A chart before drawing.
pub(super) struct Chart<'a> {
    pub(super) title: &'a str,
    pub(super) y_label: &'a str,
    /// Log scale, for latencies that span decades.
    pub(super) log: bool,
    pub(super) series: Vec<Series>,
}

impl Report {
    /// Draws one chart as inline SVG, fault markers included.
    pub(super) fn draw(&self, out: &mut String, chart: &Chart) {
        let last_point = self
            .timeseries
            .points
            .last()
            .map_or(0.0, |p| p.t_s as f64 + 1.0);
        let last_fault = self
            .faults
            .iter()
            .map(|f| f.executed_at_ms / 1000.0)
            .fold(0.0, f64::max);
        let x_max = last_point.max(self.duration_s).max(last_fault).max(1.0);
        let values = chart
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1));
        let (y_ticks, y_scale) = if chart.log {
            let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
            log_axis(lo, hi)
        } else {
            linear_axis(values.fold(0.0, f64::max))
        };
        let plot_w = WIDTH - LEFT - RIGHT;
        let plot_h = HEIGHT - TOP - BOTTOM;
        let x = |t: f64| LEFT + t / x_max * plot_w;
        let y = |v: f64| TOP + plot_h * (1.0 - y_scale(v));
        let _ = writeln!(
            out,
            "<h3>{}</h3>\n<svg viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" aria-label=\"{}\">",
            escape(chart.title),
            escape(chart.title)
        );
        for (v, label) in &y_ticks {
            let _ = writeln!(
                out,
                "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{yv:.1}\" y2=\"{yv:.1}\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{label}</text>",
                WIDTH - RIGHT,
                LEFT - 6.0,
                y(*v) + 4.0,
                yv = y(*v)
            );
        }
        let x_step = nice_step(x_max / 10.0);
        let mut t = 0.0;
        while t <= x_max + 1e-9 {
            let _ = writeln!(
                out,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{t}</text>",
                x(t),
                HEIGHT - BOTTOM + 16.0
            );
            t += x_step;
        }
        let _ = writeln!(
            out,
            "<line class=\"axis\" x1=\"{LEFT}\" x2=\"{LEFT}\" y1=\"{TOP}\" y2=\"{bottom}\"/>\
             <line class=\"axis\" x1=\"{LEFT}\" x2=\"{right}\" y1=\"{bottom}\" y2=\"{bottom}\"/>\
             <text x=\"{mid:.1}\" y=\"{xl}\" text-anchor=\"middle\">time since start (s)</text>\
             <text x=\"14\" y=\"{ymid:.1}\" text-anchor=\"middle\" transform=\"rotate(-90 14 {ymid:.1})\">{}</text>",
            escape(chart.y_label),
            bottom = HEIGHT - BOTTOM,
            right = WIDTH - RIGHT,
            mid = LEFT + plot_w / 2.0,
            xl = HEIGHT - 6.0,
            ymid = TOP + plot_h / 2.0,
        );
        if chart.series.is_empty() {
            let _ = writeln!(
                out,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">no data</text>",
                LEFT + plot_w / 2.0,
                TOP + plot_h / 2.0
            );
        }
        for s in &chart.series {
            let coords: Vec<String> = s
                .points
                .iter()
                .map(|&(t, v)| format!("{:.1},{:.1}", x(t), y(v)))
                .collect();
            let _ = writeln!(
                out,
                "<polyline data-series=\"{}\" data-points=\"{}\" fill=\"none\" stroke=\"{}\" \
                 stroke-width=\"1.5\" points=\"{}\"><title>{}</title></polyline>",
                escape(&s.name),
                s.points.len(),
                s.colour,
                coords.join(" "),
                escape(&s.name)
            );
            // A lone point draws no line; a dot keeps it visible.
            if let [(t, v)] = s.points[..] {
                let _ = writeln!(
                    out,
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{}\"/>",
                    x(t),
                    y(v),
                    s.colour
                );
            }
        }
        for f in &self.faults {
            let fx = x(f.executed_at_ms / 1000.0);
            let class = if f.ok { "fault" } else { "fault-failed" };
            // A lasting fault (partition, loss, pause) shades the time it held.
            if let Some(for_s) = f.for_s.filter(|_| f.ok) {
                let until = x(f.executed_at_ms / 1000.0 + for_s);
                let _ = writeln!(
                    out,
                    "<rect class=\"fault-span\" x=\"{fx:.1}\" y=\"{TOP}\" width=\"{:.1}\" height=\"{:.1}\"/>",
                    (until - fx).max(1.0),
                    HEIGHT - BOTTOM - TOP
                );
            }
            let _ = writeln!(
                out,
                "<line class=\"{class}\" data-fault=\"{}\" x1=\"{fx:.1}\" x2=\"{fx:.1}\" y1=\"{TOP}\" \
                 y2=\"{:.1}\"/><text x=\"{fx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{} {}</text>",
                escape(&f.service),
                HEIGHT - BOTTOM,
                TOP - 8.0,
                escape(&f.action),
                escape(&f.service)
            );
        }
        out.push_str("</svg>\n");
    }
}

/// An axis: its ticks (value and label), and the map from a value to its fraction of the
/// axis length.
type Axis = (Vec<(f64, String)>, Box<dyn Fn(f64) -> f64>);

/// The tick values and labels of a linear axis from 0, and the value-to-fraction map.
fn linear_axis(max: f64) -> Axis {
    let step = nice_step(max.max(1e-9) / 5.0);
    let top = (max / step).ceil().max(1.0) * step;
    let ticks = (0..=((top / step).round() as u64))
        .map(|i| {
            let v = i as f64 * step;
            (v, format_tick(v))
        })
        .collect();
    (ticks, Box::new(move |v| v / top))
}

/// Decade ticks of a log axis spanning `lo..hi`, and the value-to-fraction map.
fn log_axis(lo: f64, hi: f64) -> Axis {
    let (lo, hi) = if lo > hi {
        (1.0, 10.0)
    } else {
        (lo.max(1e-3), hi.max(1e-3))
    };
    let first = lo.log10().floor() as i32;
    let last = (hi.log10().ceil() as i32).max(first + 1);
    let ticks = (first..=last)
        .map(|e| {
            let v = 10f64.powi(e);
            (v, format_tick(v))
        })
        .collect();
    let span = f64::from(last - first);
    (
        ticks,
        Box::new(move |v| (v.max(1e-3).log10() - f64::from(first)) / span),
    )
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let raw = raw.max(1e-9);
    let power = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|&step| step >= raw * 0.999)
        .unwrap_or(10.0 * power)
}

fn format_tick(v: f64) -> String {
    if v >= 1.0 || v == 0.0 {
        format!("{}", (v * 1000.0).round() / 1000.0)
    } else {
        format!("{v:.3}").trim_end_matches('0').to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_use_round_ticks() {
        assert_eq!(nice_step(0.7), 1.0);
        assert_eq!(nice_step(1.3), 2.0);
        assert_eq!(nice_step(31.0), 50.0);
        let (ticks, scale) = log_axis(0.2, 35.0);
        let labels: Vec<&str> = ticks.iter().map(|t| t.1.as_str()).collect();
        assert_eq!(labels, ["0.1", "1", "10", "100"]);
        assert!((scale(1.0) - 1.0 / 3.0).abs() < 1e-9);
        let (ticks, scale) = linear_axis(0.0);
        assert_eq!(ticks.len(), 2);
        assert_eq!(scale(0.0), 0.0);
    }
}
