//! The charts of `report.html`. Each is a `div.chart`: its title, its own legend, a
//! scale switch where it has one, and an inline SVG with axes, shaded bands, one
//! polyline per series and, on the run's time axis, a dashed marker per executed fault
//! and a shaded span per failover gap with its epochs.
//!
//! Every polyline carries `data-series` (its name), `data-points` (how many points),
//! `data-xs` and `data-ys` (its values), so that the page's script can show a tooltip of
//! every series' value at the cursor and tests can tell a chart with data from an empty
//! frame.

use super::escape;
use crate::report::Report;
use std::fmt::Write as _;

/// Chart size in SVG user units; the page scales it to its width.
const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 260.0;
/// Room for the y labels on the left, the fault labels above, the x labels below.
const LEFT: f64 = 64.0;
/// Wide enough for half the last x label (`99.999%`).
const RIGHT: f64 = 28.0;
const TOP: f64 = 28.0;
const BOTTOM: f64 = 40.0;
/// A chart whose values span more than this ratio opens on a log axis: on a linear one
/// everything under a hundredth of the top is a flat line at zero.
const LOG_SCALE_RATIO_MIN: f64 = 100.0;
/// The tooltip takes a series' point within this many user units of the cursor, or
/// within one point spacing of a time axis, whichever is wider.
const TOOLTIP_REACH: f64 = 12.0;
/// The percentile axis ends at 99.9999 %: six nines are as far as any run's counts go.
const NINES_MAX: f64 = 6.0;
/// Width of one character of the 11 px labels in user units, to keep fault and epoch
/// labels from overprinting each other when faults come close together.
const LABEL_CHAR_W: f64 = 6.2;

/// What the x axis shows.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum XAxis {
    /// Seconds since the start, the run's whole duration: every time chart shares it.
    Time,
    /// Percentiles from 0 to `nines` nines (99.9 % is 3), spaced as 1 / (1 − q) on a log
    /// scale, the way HdrHistogram plots a distribution.
    Percentile { nines: f64 },
}

/// How the y axis is scaled.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Scale {
    Linear,
    /// Linear or log as the values' spread asks, with a switch to the other one.
    Auto,
}

/// One line of a chart: its name, colour and (x, y) points.
pub(super) struct Series {
    pub(super) name: String,
    pub(super) colour: String,
    pub(super) points: Vec<(f64, f64)>,
}

/// A shaded area between two lines of the same x values.
pub(super) struct Band {
    pub(super) colour: &'static str,
    pub(super) lower: Vec<(f64, f64)>,
    pub(super) upper: Vec<(f64, f64)>,
}

/// A chart before drawing.
pub(super) struct Chart {
    /// Names the chart in the DOM (`data-chart`), for tests and links.
    pub(super) id: String,
    pub(super) title: String,
    pub(super) y_label: String,
    /// The unit the tooltip writes after each value.
    pub(super) unit: &'static str,
    pub(super) x: XAxis,
    pub(super) scale: Scale,
    pub(super) series: Vec<Series>,
    pub(super) bands: Vec<Band>,
}

impl Chart {
    /// A time chart with a linear y axis and no bands.
    pub(super) fn time(id: &str, title: &str, y_label: &str, unit: &'static str) -> Chart {
        Chart {
            id: id.to_string(),
            title: title.to_string(),
            y_label: y_label.to_string(),
            unit,
            x: XAxis::Time,
            scale: Scale::Linear,
            series: Vec::new(),
            bands: Vec::new(),
        }
    }

    /// Whether a log axis shows the values better: the largest value is more than
    /// [`LOG_SCALE_RATIO_MIN`] times the typical (median) value of the quietest series.
    /// Medians, not minima, so that a ramp's first seconds do not turn every chart to
    /// log, while a 3 s match beside 3 ms lobby calls does.
    fn wants_log(&self) -> bool {
        let (_, hi) = positive_range(self.values());
        let quietest = self
            .series
            .iter()
            .filter_map(|s| {
                let mut values: Vec<f64> =
                    s.points.iter().map(|p| p.1).filter(|v| *v > 0.0).collect();
                values.sort_by(f64::total_cmp);
                values.get(values.len() / 2).copied()
            })
            .fold(f64::MAX, f64::min);
        quietest < f64::MAX && hi / quietest > LOG_SCALE_RATIO_MIN
    }

    fn values(&self) -> impl Iterator<Item = f64> + '_ {
        let lines = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1));
        let bands = self
            .bands
            .iter()
            .flat_map(|b| b.lower.iter().chain(&b.upper).map(|p| p.1));
        lines.chain(bands)
    }
}

/// The smallest and largest value above zero, (1, 1) without any.
fn positive_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| *v > 0.0)
        .fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if hi == 0.0 {
        (1.0, 1.0)
    } else {
        (lo, hi)
    }
}

impl Report {
    /// The end of the run's time axis, s: the last point, sample or fault.
    pub(super) fn time_axis_s(&self) -> f64 {
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
        let last_sample = self
            .services
            .iter()
            .flat_map(|s| s.samples.iter().map(|sample| sample.t_s))
            .fold(0.0, f64::max);
        last_point
            .max(self.duration_s)
            .max(last_fault)
            .max(last_sample)
            .max(1.0)
    }

    /// Draws one chart: title, legend, scale switch and SVG (two SVGs, one per scale,
    /// when the scale is [`Scale::Auto`]).
    pub(super) fn draw(&self, out: &mut String, chart: &Chart) {
        let _ = write!(
            out,
            "<div class=\"chart\" data-chart=\"{}\">\n<h3>{}</h3>\n<div class=\"legend\">",
            escape(&chart.id),
            escape(&chart.title)
        );
        for s in &chart.series {
            let _ = write!(
                out,
                "<span data-legend=\"{}\"><i style=\"background:{}\"></i>{}</span>",
                escape(&s.name),
                s.colour,
                escape(&s.name)
            );
        }
        if chart.x == XAxis::Time && !self.faults.is_empty() {
            out.push_str("<span class=\"marker\"><i class=\"fault-key\"></i>fault</span>");
        }
        if chart.x == XAxis::Time && !self.failover.kills.is_empty() {
            out.push_str("<span class=\"marker\"><i class=\"gap-key\"></i>failover gap</span>");
        }
        out.push_str("</div>\n");
        match chart.scale {
            Scale::Linear => self.svg(out, chart, false, false),
            Scale::Auto => {
                let log = chart.wants_log();
                let _ = writeln!(
                    out,
                    "<label class=\"scale\"><input type=\"checkbox\" data-log-toggle{}> log scale</label>",
                    if log { " checked" } else { "" }
                );
                self.svg(out, chart, log, false);
                self.svg(out, chart, !log, true);
            }
        }
        out.push_str("<div class=\"tip\" hidden></div>\n</div>\n");
    }

    fn svg(&self, out: &mut String, chart: &Chart, log: bool, hidden: bool) {
        let (y_ticks, y_scale) = if log {
            let (lo, hi) = positive_range(chart.values());
            log_axis(lo, hi)
        } else {
            linear_axis(chart.values().fold(0.0, f64::max))
        };
        let (x_ticks, x_scale, reach) = match chart.x {
            XAxis::Time => {
                let x_max = self.time_axis_s();
                let step = nice_step(x_max / 10.0);
                let ticks = (0..=((x_max / step).floor() as u64))
                    .map(|i| {
                        let t = i as f64 * step;
                        (t, format_tick(t))
                    })
                    .collect();
                let per_second = (WIDTH - LEFT - RIGHT) / x_max;
                let scale: Scaler = Box::new(move |t| t / x_max);
                (ticks, scale, TOOLTIP_REACH.max(per_second))
            }
            XAxis::Percentile { nines } => percentile_axis(nines),
        };
        let plot_w = WIDTH - LEFT - RIGHT;
        let plot_h = HEIGHT - TOP - BOTTOM;
        let x = |v: f64| LEFT + x_scale(v) * plot_w;
        let y = |v: f64| TOP + plot_h * (1.0 - y_scale(v).clamp(0.0, 1.0));
        let _ = writeln!(
            out,
            "<svg class=\"plot\" data-scale=\"{}\" data-unit=\"{}\" data-x=\"{}\" data-reach=\"{reach:.1}\"{} \
             viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" aria-label=\"{}\">",
            if log { "log" } else { "linear" },
            chart.unit,
            if chart.x == XAxis::Time { "time" } else { "percentile" },
            if hidden { " hidden" } else { "" },
            escape(&chart.title)
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
        for (v, label) in &x_ticks {
            let _ = writeln!(
                out,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>",
                x(*v),
                HEIGHT - BOTTOM + 16.0
            );
        }
        let x_label = match chart.x {
            XAxis::Time => "time since start (s)",
            XAxis::Percentile { .. } => "percentile",
        };
        let _ = writeln!(
            out,
            "<line class=\"axis\" x1=\"{LEFT}\" x2=\"{LEFT}\" y1=\"{TOP}\" y2=\"{bottom}\"/>\
             <line class=\"axis\" x1=\"{LEFT}\" x2=\"{right}\" y1=\"{bottom}\" y2=\"{bottom}\"/>\
             <text x=\"{mid:.1}\" y=\"{xl}\" text-anchor=\"middle\">{x_label}</text>\
             <text x=\"14\" y=\"{ymid:.1}\" text-anchor=\"middle\" transform=\"rotate(-90 14 {ymid:.1})\">{}{}</text>",
            escape(&chart.y_label),
            if log { " (log)" } else { "" },
            bottom = HEIGHT - BOTTOM,
            right = WIDTH - RIGHT,
            mid = LEFT + plot_w / 2.0,
            xl = HEIGHT - 6.0,
            ymid = TOP + plot_h / 2.0,
        );
        if chart.x == XAxis::Time {
            self.failover_spans(out, &x);
        }
        if chart.series.is_empty() {
            let _ = writeln!(
                out,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">no data</text>",
                LEFT + plot_w / 2.0,
                TOP + plot_h / 2.0
            );
        }
        for band in &chart.bands {
            let coords: Vec<String> = band
                .upper
                .iter()
                .chain(band.lower.iter().rev())
                .map(|&(t, v)| format!("{:.1},{:.1}", x(t), y(v)))
                .collect();
            let _ = writeln!(
                out,
                "<polygon class=\"band\" fill=\"{}\" points=\"{}\"/>",
                band.colour,
                coords.join(" ")
            );
        }
        for s in &chart.series {
            draw_series(out, s, &x, &y);
        }
        if chart.x == XAxis::Time {
            self.fault_markers(out, &x);
        }
        let _ = writeln!(
            out,
            "<line class=\"cursor\" x1=\"0\" x2=\"0\" y1=\"{TOP}\" y2=\"{:.1}\" visibility=\"hidden\"/>\n</svg>",
            HEIGHT - BOTTOM
        );
    }

    /// A shaded span per balancer kill from the kill to the first pick of the new
    /// epoch, labelled with the epochs.
    fn failover_spans(&self, out: &mut String, x: &dyn Fn(f64) -> f64) {
        let mut labels = Labels::default();
        for kill in &self.failover.kills {
            let from = kill.at_ms / 1000.0;
            let epochs = match (kill.epoch_before, kill.epoch_after) {
                (Some(before), Some(after)) => format!("epoch {before}→{after}"),
                (None, Some(after)) => format!("epoch →{after}"),
                _ => "no new epoch".to_string(),
            };
            let gap = kill
                .gap_ms
                .map_or("gap unmeasured".to_string(), |ms| format!("gap {ms:.0} ms"));
            let width = kill
                .gap_ms
                .map_or(1.0, |ms| (x(from + ms / 1000.0) - x(from)).max(2.0));
            let _ = writeln!(
                out,
                "<rect class=\"gap\" data-gap=\"{}\" x=\"{:.1}\" y=\"{TOP}\" width=\"{width:.1}\" height=\"{:.1}\">\
                 <title>failover: {gap}, {epochs}</title></rect>",
                kill.gap_ms.map_or(String::new(), |ms| format!("{ms:.0}")),
                x(from),
                HEIGHT - BOTTOM - TOP,
            );
            let label_x = x(from) + width + 3.0;
            if labels.fits(label_x, &epochs, false) {
                let _ = writeln!(
                    out,
                    "<text class=\"gap-label\" x=\"{label_x:.1}\" y=\"{:.1}\">{epochs}</text>",
                    TOP + 12.0
                );
            }
        }
    }

    /// A dashed line per executed fault (grey when it failed), a shaded span for the
    /// time a lasting one held.
    fn fault_markers(&self, out: &mut String, x: &dyn Fn(f64) -> f64) {
        let mut labels = Labels::default();
        for f in &self.faults {
            let fx = x(f.executed_at_ms / 1000.0);
            let class = if f.ok { "fault" } else { "fault-failed" };
            if let Some(for_s) = f.for_s.filter(|_| f.ok) {
                let until = x(f.executed_at_ms / 1000.0 + for_s);
                let _ = writeln!(
                    out,
                    "<rect class=\"fault-span\" x=\"{fx:.1}\" y=\"{TOP}\" width=\"{:.1}\" height=\"{:.1}\"/>",
                    (until - fx).max(1.0),
                    HEIGHT - BOTTOM - TOP
                );
            }
            let label = format!("{} {}", f.action, f.service);
            let _ = writeln!(
                out,
                "<line class=\"{class}\" data-fault=\"{}\" x1=\"{fx:.1}\" x2=\"{fx:.1}\" y1=\"{TOP}\" \
                 y2=\"{:.1}\"><title>{}</title></line>",
                escape(&f.service),
                HEIGHT - BOTTOM,
                escape(&label)
            );
            if labels.fits(fx, &label, true) {
                let _ = writeln!(
                    out,
                    "<text x=\"{fx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                    TOP - 8.0,
                    escape(&label)
                );
            }
        }
    }
}

/// Where the last label of a row ended, so that a label that would overprint it is left
/// out (the marker keeps its `<title>`).
#[derive(Default)]
struct Labels {
    end: f64,
}

impl Labels {
    /// Whether `text` at `x` (its middle if `centred`, else its start) clears the last
    /// label; if so it becomes the last.
    fn fits(&mut self, x: f64, text: &str, centred: bool) -> bool {
        let width = text.chars().count() as f64 * LABEL_CHAR_W;
        let start = if centred { x - width / 2.0 } else { x };
        let fits = self.end == 0.0 || start > self.end + LABEL_CHAR_W;
        if fits {
            self.end = start + width;
        }
        fits
    }
}

/// One series as a polyline with its values, and a dot if it has a single point.
fn draw_series(out: &mut String, s: &Series, x: &dyn Fn(f64) -> f64, y: &dyn Fn(f64) -> f64) {
    let coords: Vec<String> = s
        .points
        .iter()
        .map(|&(t, v)| format!("{:.1},{:.1}", x(t), y(v)))
        .collect();
    let xs: Vec<String> = s.points.iter().map(|p| format_value(p.0)).collect();
    let ys: Vec<String> = s.points.iter().map(|p| format_value(p.1)).collect();
    let _ = writeln!(
        out,
        "<polyline data-series=\"{}\" data-points=\"{}\" data-xs=\"{}\" data-ys=\"{}\" fill=\"none\" \
         stroke=\"{}\" stroke-width=\"1.5\" points=\"{}\"/>",
        escape(&s.name),
        s.points.len(),
        xs.join(" "),
        ys.join(" "),
        s.colour,
        coords.join(" ")
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

/// A value as the tooltip shows it: four significant figures are more than any chart
/// resolves, and keep the page small.
fn format_value(v: f64) -> String {
    if v == 0.0 || v.abs() >= 1000.0 {
        format!("{}", v.round())
    } else {
        let digits = (3 - v.abs().log10().floor() as i32).clamp(0, 6) as usize;
        let text = format!("{v:.digits$}");
        if text.contains('.') {
            text.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            text
        }
    }
}

/// An axis: its ticks (value and label), and the map from a value to its fraction of the
/// axis length.
type Axis = (Vec<(f64, String)>, Scaler);

/// The map from a value to its fraction of an axis's length.
type Scaler = Box<dyn Fn(f64) -> f64>;

/// The percentile axis up to `nines` nines, its ticks at 0, 90, 99, 99.9 … and the
/// tooltip's reach.
fn percentile_axis(nines: f64) -> (Vec<(f64, String)>, Scaler, f64) {
    let nines = nines.clamp(1.0, NINES_MAX);
    let ticks = (0..=(nines as u32))
        .map(|n| {
            let p = 100.0 - 100.0 / 10f64.powi(n as i32);
            (p, format!("{}%", (p * 10_000.0).round() / 10_000.0))
        })
        .collect();
    // The maximum (q = 1) sits at the axis end rather than past it.
    let scale = Box::new(move |p: f64| (percentile_position(p) / nines).min(1.0));
    (ticks, scale, TOOLTIP_REACH)
}

/// Where percentile `p` lies on the percentile axis, in nines: log10(1 / (1 − q)).
fn percentile_position(p: f64) -> f64 {
    let rest = (1.0 - p / 100.0).max(10f64.powf(-NINES_MAX));
    (1.0 / rest).log10()
}

/// The tick values and labels of a linear axis from 0, and the value-to-fraction map.
fn linear_axis(max: f64) -> Axis {
    // An axis of nothing but zeros still reads 0 to 1 rather than 0 to a rounding error.
    let max = if max > 0.0 { max } else { 1.0 };
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

/// Decade ticks of a log axis spanning `lo..hi`, and the value-to-fraction map; values
/// at or below zero sit on the bottom line.
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
        assert_eq!(ticks.last().map(|t| t.1.as_str()), Some("1"));
        assert_eq!(scale(0.0), 0.0);
    }

    #[test]
    fn percentiles_are_spaced_by_nines() {
        let (ticks, scale, _) = percentile_axis(3.0);
        let labels: Vec<&str> = ticks.iter().map(|t| t.1.as_str()).collect();
        assert_eq!(labels, ["0%", "90%", "99%", "99.9%"]);
        assert!((scale(99.0) - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(scale(100.0), 1.0, "the maximum sits at the axis end");
    }

    #[test]
    fn values_keep_four_figures() {
        assert_eq!(format_value(0.0), "0");
        assert_eq!(format_value(1.23456), "1.235");
        assert_eq!(format_value(12.5), "12.5");
        assert_eq!(format_value(0.000_12), "0.00012");
        assert_eq!(format_value(123_456.7), "123457");
    }
}
