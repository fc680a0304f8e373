//! `run --metrics-listen ADDR`: the run's merged figures as a Prometheus endpoint,
//! `GET /metrics` in the OpenMetrics text format, while the run goes.
//!
//! Every figure is fed from the merged seconds (all workers and agents together), so a
//! scrape shows the run as the report will, up to the last closed second:
//!
//! - `catwar_sim_requests_total{step}` and `catwar_sim_errors_total{step,code}`;
//! - `catwar_sim_request_duration_seconds{step}`: a histogram of successful requests'
//!   latency (failed ones have none), from the merged per-second HDR histograms;
//! - `catwar_sim_active_clients`, `catwar_sim_arrivals_offered_total`,
//!   `catwar_sim_arrivals_dropped_total` and `catwar_sim_arrival_rate_offered` (per
//!   second, open model);
//! - `catwar_sim_seconds_merged`: seconds of the run merged so far.
//!
//! The HTTP side is one small answer per connection (`Connection: close`): Prometheus
//! scrapes every few seconds, so keep-alive buys nothing here. A scraper that accepts
//! OpenMetrics (Prometheus does) gets it; others (curl, `promtool check metrics`) get
//! the classic text format 0.0.4, whose counters carry their `_total` in HELP and TYPE.

use crate::metrics::IntervalPoint;
use crate::step::Step;
use hdrhistogram::Histogram;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Bucket bounds of the latency histograms, seconds: from half a millisecond (a loopback
/// request) to ten seconds (past the request timeout), about three buckets a decade, as
/// Prometheus's own defaults space them.
const LATENCY_BUCKETS_S: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0,
];
/// A scrape request is one line and a few headers; anything longer is not Prometheus.
const REQUEST_HEAD_BYTES_MAX: usize = 8 * 1024;
/// A scraper that sends nothing for this long is gone; its connection is dropped.
const REQUEST_READ_TIMEOUT_MS: u64 = 5_000;
/// The content type of the OpenMetrics text format, which `prometheus-client` writes.
const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The classic text format, for scrapers that do not ask for OpenMetrics.
const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Labels of a step's series.
type StepLabels = Vec<(&'static str, String)>;

/// A latency histogram fed whole seconds at a time: the buckets of a merged HDR
/// histogram are added at once, not sample by sample.
#[derive(Clone, Debug, Default)]
struct MergedHistogram(Arc<Mutex<Buckets>>);

#[derive(Debug, Default)]
struct Buckets {
    /// Per bucket of [`LATENCY_BUCKETS_S`], then +Inf; not cumulative.
    counts: Vec<u64>,
    sum_s: f64,
    count: u64,
}

impl MergedHistogram {
    /// Adds every sample of `hist` (µs).
    fn add(&self, hist: &Histogram<u64>) {
        let mut buckets = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.counts.is_empty() {
            buckets.counts = vec![0; LATENCY_BUCKETS_S.len() + 1];
        }
        for value in hist.iter_recorded() {
            let n = value.count_at_value();
            // The middle of the HDR bucket, as HDR's own mean uses.
            let seconds = hist.median_equivalent(value.value_iterated_to()) as f64 / 1e6;
            let index = LATENCY_BUCKETS_S
                .iter()
                .position(|&bound| seconds <= bound)
                .unwrap_or(LATENCY_BUCKETS_S.len());
            buckets.counts[index] += n;
            buckets.sum_s += seconds * n as f64;
            buckets.count += n;
        }
    }
}

impl TypedMetric for MergedHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for MergedHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let buckets = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let bounds = LATENCY_BUCKETS_S.iter().copied().chain([f64::INFINITY]);
        let counts = buckets.counts.iter().copied().chain(std::iter::repeat(0));
        let pairs: Vec<(f64, u64)> = bounds.zip(counts).collect();
        encoder.encode_histogram::<NoLabelSet>(buckets.sum_s, buckets.count, &pairs, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// The run's live figures and their registry.
#[derive(Debug)]
pub(super) struct Exporter {
    registry: Registry,
    requests: Family<StepLabels, Counter>,
    errors: Family<StepLabels, Counter>,
    latency: Family<StepLabels, MergedHistogram>,
    active: Gauge,
    offered: Counter,
    dropped: Counter,
    offered_rate: Gauge<f64, AtomicU64>,
    seconds: Gauge,
}

impl Exporter {
    pub(super) fn new() -> Exporter {
        let mut registry = Registry::with_prefix("catwar_sim");
        let requests = Family::<StepLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests made per step, failed ones included (server-pushed ticks count too)",
            requests.clone(),
        );
        let errors = Family::<StepLabels, Counter>::default();
        registry.register(
            "errors",
            "Failed requests per step and error code",
            errors.clone(),
        );
        let latency = Family::<StepLabels, MergedHistogram>::default();
        registry.register(
            "request_duration_seconds",
            "Latency of successful requests per step (open model: from the intended send time)",
            latency.clone(),
        );
        let active = Gauge::default();
        registry.register("active_clients", "Clients inside a session", active.clone());
        let offered = Counter::default();
        registry.register(
            "arrivals_offered",
            "Open model: arrivals due so far, started or dropped",
            offered.clone(),
        );
        let dropped = Counter::default();
        registry.register(
            "arrivals_dropped",
            "Open model: arrivals not started because every client was busy",
            dropped.clone(),
        );
        let offered_rate = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "arrival_rate_offered",
            "Open model: arrivals per second the stages offer now",
            offered_rate.clone(),
        );
        let seconds = Gauge::default();
        registry.register(
            "seconds_merged",
            "Seconds of the run merged so far",
            seconds.clone(),
        );
        Exporter {
            registry,
            requests,
            errors,
            latency,
            active,
            offered,
            dropped,
            offered_rate,
            seconds,
        }
    }

    /// Adds one merged second.
    pub(super) fn second(&self, point: &IntervalPoint, histograms: &[Histogram<u64>]) {
        for (index, step) in Step::ALL.iter().enumerate() {
            let labels = vec![("step", step.name().to_string())];
            let figures = point.steps[index];
            self.requests
                .get_or_create(&labels)
                .inc_by(figures.requests);
            let codes = point.errors_by_code.get(index);
            let mut named = 0;
            for (code, n) in codes.into_iter().flatten() {
                let labels = vec![("step", step.name().to_string()), ("code", code.clone())];
                self.errors.get_or_create(&labels).inc_by(*n);
                named += n;
            }
            // Errors a version without codes per second sent still count, unnamed.
            if figures.errors > named {
                let labels = vec![
                    ("step", step.name().to_string()),
                    ("code", "unknown".into()),
                ];
                self.errors
                    .get_or_create(&labels)
                    .inc_by(figures.errors - named);
            }
            let latency = self.latency.get_or_create(&labels);
            if let Some(hist) = histograms.get(index).filter(|h| !h.is_empty()) {
                latency.add(hist);
            }
        }
        let load = &point.load;
        self.active.set(load.active as i64);
        self.offered.inc_by(load.arrivals + load.dropped);
        self.dropped.inc_by(load.dropped);
        self.offered_rate.set(load.offered_per_s);
        self.seconds.set(point.t_s as i64 + 1);
    }

    /// The exposition, as a scrape gets it.
    pub(super) fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String does not fail");
        text
    }
}

/// Serves `GET /metrics` on `listener` until the task is aborted.
pub(super) async fn serve(listener: TcpListener, exporter: Arc<Exporter>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors, most likely; the run matters more than a scrape.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let exporter = Arc::clone(&exporter);
        tokio::spawn(async move {
            let timeout = Duration::from_millis(REQUEST_READ_TIMEOUT_MS);
            // A scraper that fails is the scraper's problem; the run goes on.
            let _ = tokio::time::timeout(timeout, answer(stream, &exporter)).await;
        });
    }
}

/// Reads one request head and answers it: the exposition for `GET /metrics`, 404 for
/// any other path, 405 for any other method.
async fn answer(mut stream: TcpStream, exporter: &Exporter) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() + n > REQUEST_HEAD_BYTES_MAX {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, target) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    let openmetrics = String::from_utf8_lossy(&head)
        .to_ascii_lowercase()
        .lines()
        .any(|l| l.starts_with("accept:") && l.contains("application/openmetrics-text"));
    let (status, content_type, body) = match (method, path) {
        (b"GET", b"/metrics") if openmetrics => {
            ("200 OK", OPENMETRICS_CONTENT_TYPE, exporter.render())
        }
        (b"GET", b"/metrics") => (
            "200 OK",
            TEXT_CONTENT_TYPE,
            classic_text(&exporter.render()),
        ),
        (b"GET", _) => (
            "404 Not Found",
            "text/plain",
            "only /metrics is here\n".into(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET /metrics\n".into(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// The classic text format of an OpenMetrics exposition: a counter's HELP and TYPE name
/// its samples' `_total` name, and there is no `# EOF`.
fn classic_text(openmetrics: &str) -> String {
    let counters: Vec<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut text = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines().filter(|l| *l != "# EOF") {
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(&name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        text.push_str(renamed.as_deref().unwrap_or(line));
        text.push('\n');
    }
    text
}

/// Binds the endpoint's listener.
pub(super) async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{interval_histogram, IntervalStep, LoadPoint};
    use std::collections::BTreeMap;

    #[test]
    fn a_merged_second_shows_as_counters_and_buckets_in_both_formats() {
        let exporter = Exporter::new();
        let me = Step::LobbyMe.index();
        let mut histograms: Vec<Histogram<u64>> =
            Step::ALL.iter().map(|_| interval_histogram()).collect();
        histograms[me].record_n(3_000, 9).unwrap();
        let mut errors_by_code = vec![BTreeMap::new(); Step::ALL.len()];
        errors_by_code[me].insert("busy".to_string(), 1);
        let steps = (0..Step::ALL.len())
            .map(|i| {
                let (requests, errors) = if i == me { (10, 1) } else { (0, 0) };
                IntervalStep::from_histogram(requests, errors, &histograms[i])
            })
            .collect();
        let point = IntervalPoint {
            t_s: 0,
            steps,
            errors_by_code,
            load: LoadPoint {
                active: 7,
                arrivals: 3,
                dropped: 2,
                ..LoadPoint::default()
            },
        };
        exporter.second(&point, &histograms);
        let open = exporter.render();
        for series in [
            "catwar_sim_requests_total{step=\"lobby.me\"} 10",
            "catwar_sim_errors_total{step=\"lobby.me\",code=\"busy\"} 1",
            "catwar_sim_request_duration_seconds_bucket{le=\"0.0025\",step=\"lobby.me\"} 0",
            "catwar_sim_request_duration_seconds_bucket{le=\"0.005\",step=\"lobby.me\"} 9",
            "catwar_sim_request_duration_seconds_count{step=\"lobby.me\"} 9",
            "catwar_sim_active_clients 7",
            "catwar_sim_arrivals_offered_total 5",
            "catwar_sim_arrivals_dropped_total 2",
            "# EOF",
        ] {
            assert!(open.contains(series), "{series} missing from\n{open}");
        }
        let classic = classic_text(&open);
        assert!(classic.contains("# TYPE catwar_sim_requests_total counter"));
        assert!(!classic.contains("# EOF"));
    }
}
