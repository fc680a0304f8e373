//! The charts on the run's time axis, from the per-second series and the services'
//! samples: load, throughput and p99 of the request steps and of the server-pushed
//! streams apart (3,000 ticks/s would flatten every request rate to zero), errors by step
//! and code, and each service's CPU and memory.

use super::chart::{Chart, Scale, Series};
use super::palette::colour;
use crate::report::{Report, TimePoint, TimeStep};
use crate::step::Step;
use std::collections::{BTreeMap, BTreeSet};

/// Bytes in a MiB, for the memory chart.
const MIB_BYTES: f64 = 1024.0 * 1024.0;

/// Which steps a chart shows.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Kind {
    /// Requests the client made and the server answered.
    Request,
    /// What the server pushes on its own (ticks, acknowledgements riding on them).
    Stream,
}

impl Kind {
    /// The kind of a step by name; a step this version does not know is a request.
    pub(super) fn of(name: &str) -> Kind {
        match Step::from_name(name) {
            Some(step) if !step.is_request() => Kind::Stream,
            _ => Kind::Request,
        }
    }
}

impl Report {
    /// Every time chart, in page order: load, then per kind throughput and p99, errors,
    /// then the services' CPU and memory under the latency charts.
    pub(super) fn time_charts(&self) -> Vec<Chart> {
        let per_second = 1000.0 / self.timeseries.interval_ms.max(1) as f64;
        let mut charts = Vec::new();
        let load = self.load_chart();
        if !load.series.is_empty() {
            charts.push(load);
        }
        charts.push(self.step_chart(
            Kind::Request,
            (
                "throughput-requests",
                "Throughput of requests",
                "requests/s",
                "/s",
            ),
            &|s| Some(s.requests as f64 * per_second),
        ));
        charts.push(self.step_chart(
            Kind::Request,
            (
                "p99-requests",
                "p99 latency of requests per second",
                "p99 ms",
                "ms",
            ),
            &|s| s.p99_us.map(|us| us as f64 / 1000.0),
        ));
        let streams = [
            self.step_chart(
                Kind::Stream,
                (
                    "throughput-streams",
                    "Server-pushed streams: rate",
                    "per s",
                    "/s",
                ),
                &|s| Some(s.requests as f64 * per_second),
            ),
            self.step_chart(
                Kind::Stream,
                (
                    "p99-streams",
                    "Server-pushed streams: p99 per second",
                    "p99 ms",
                    "ms",
                ),
                &|s| s.p99_us.map(|us| us as f64 / 1000.0),
            ),
        ];
        charts.extend(streams.into_iter().filter(|c| !c.series.is_empty()));
        // Without a failure the chart would be an empty frame; the page says so instead.
        let errors = self.errors_chart(per_second);
        if !errors.series.is_empty() {
            charts.push(errors);
        }
        if !self.services.is_empty() {
            charts.extend(self.service_charts());
        }
        charts
    }

    /// Step names in script order with their colours, so that a step has the same colour
    /// on every chart: those of the totals and of the series, in case a report was edited
    /// or merged.
    pub(super) fn step_colours(&self) -> Vec<(&String, String)> {
        let series_names = self.timeseries.points.iter().flat_map(|p| p.steps.keys());
        let names: BTreeSet<&String> = self.steps.keys().chain(series_names).collect();
        let mut names: Vec<&String> = names.into_iter().collect();
        names.sort_by_key(|name| Step::from_name(name).map_or(usize::MAX, Step::index));
        names
            .into_iter()
            .enumerate()
            .map(|(i, name)| {
                let i = Step::from_name(name).map_or(i, Step::index);
                (name, colour(i))
            })
            .collect()
    }

    /// A chart of one figure per second for the steps of `kind` that have a value above
    /// zero; `(id, title, y label, unit)` name it.
    fn step_chart(
        &self,
        kind: Kind,
        (id, title, y_label, unit): (&str, &str, &str, &'static str),
        value: &dyn Fn(&TimeStep) -> Option<f64>,
    ) -> Chart {
        let mut chart = Chart::time(id, title, y_label, unit);
        chart.scale = Scale::Auto;
        chart.series = self
            .step_colours()
            .into_iter()
            .filter(|(name, _)| Kind::of(name) == kind)
            .map(|(name, colour)| Series {
                name: name.clone(),
                colour,
                points: self.per_second(|p| p.steps.get(name).and_then(value)),
            })
            // A step that never ran would only hide the others at zero.
            .filter(|s| s.points.iter().any(|p| p.1 > 0.0))
            .collect();
        chart
    }

    /// `value` of every second that has one, at the middle of its second.
    fn per_second(&self, value: impl Fn(&TimePoint) -> Option<f64>) -> Vec<(f64, f64)> {
        self.timeseries
            .points
            .iter()
            .filter_map(|p| Some((p.t_s as f64 + 0.5, value(p)?)))
            .collect()
    }

    /// Failed requests per second by step and code, one line per pair that ever failed.
    /// Reports of older versions have no codes per second; their lines are per step.
    fn errors_chart(&self, per_second: f64) -> Chart {
        let mut pairs: BTreeMap<(usize, &str, &str), ()> = BTreeMap::new();
        for point in &self.timeseries.points {
            for (step, figures) in &point.steps {
                let order = Step::from_name(step).map_or(usize::MAX, Step::index);
                if figures.errors_by_code.is_empty() && figures.errors > 0 {
                    pairs.insert((order, step, ""), ());
                }
                for code in figures.errors_by_code.keys() {
                    pairs.insert((order, step, code), ());
                }
            }
        }
        let mut chart = Chart::time("errors", "Errors by step and code", "errors/s", "/s");
        chart.series = pairs
            .into_keys()
            .enumerate()
            .map(|(i, (_, step, code))| {
                let name = if code.is_empty() {
                    step.to_string()
                } else {
                    format!("{step} {code}")
                };
                let points = self.per_second(|p| {
                    let figures = p.steps.get(step)?;
                    let n = if code.is_empty() {
                        figures.errors
                    } else {
                        figures.errors_by_code.get(code).copied().unwrap_or(0)
                    };
                    Some(n as f64 * per_second)
                });
                Series {
                    name,
                    colour: colour(i),
                    points,
                }
            })
            .collect();
        chart
    }

    /// Each service's CPU in cores and resident memory in MiB, at the middle of the
    /// interval each sample covers, so that they line up with the per-second series.
    fn service_charts(&self) -> [Chart; 2] {
        let series = |value: &dyn Fn(&crate::report::ServiceSample) -> f64| {
            self.services
                .iter()
                .enumerate()
                .map(|(i, service)| Series {
                    name: service.name.clone(),
                    colour: colour(i),
                    points: service
                        .samples
                        .iter()
                        .map(|s| ((s.t_s - 0.5).max(0.0), value(s)))
                        .collect(),
                })
                .filter(|s| !s.points.is_empty())
                .collect()
        };
        let mut cpu = Chart::time("services-cpu", "Services: CPU", "cores", "cores");
        cpu.series = series(&|s| s.cpu_cores);
        let mut memory = Chart::time("services-memory", "Services: resident memory", "MiB", "MiB");
        memory.series = series(&|s| s.rss_bytes as f64 / MIB_BYTES);
        [cpu, memory]
    }

    /// Clients in a session and, for the open model, arrivals per second against the rate
    /// offered, with the knee's moment visible as where they part.
    fn load_chart(&self) -> Chart {
        let line = |name: &str, colour: &str, value: &dyn Fn(&TimePoint) -> f64| Series {
            name: name.to_string(),
            colour: colour.to_string(),
            points: self.per_second(|p| Some(value(p))),
        };
        let mut chart = Chart::time("load", "Load", "clients, arrivals/s", "");
        chart.series = [
            line("active clients", "#444", &|p| p.load.active as f64),
            line("arrivals/s", "#4363d8", &|p| p.load.arrivals as f64),
            line("offered/s", "#3cb44b", &|p| p.load.offered_per_s),
            line("dropped/s", "#e6194b", &|p| p.load.dropped as f64),
        ]
        .into_iter()
        .filter(|s| s.points.iter().any(|p| p.1 > 0.0))
        .collect();
        chart
    }
}
