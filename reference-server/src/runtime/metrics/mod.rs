//! A process's Prometheus metrics (SPEC §7): one registry per process, the series every
//! HTTP service shares ([`HttpMetrics`]), the job queues ([`QueueStats`]) and the
//! process's own CPU, memory and descriptors ([`process`]), in either text exposition.
//!
//! Services register what they alone know (login queue, live sessions, epochs, ticks)
//! into the same [`Metrics`]; the admin listener ([`crate::runtime::admin`]) encodes it
//! on each scrape. Every name of ours starts with [`PREFIX`]; the process series keep the
//! standard `process_` names that Prometheus's own clients use, so dashboards and the
//! simulator read them as they read any exporter's.

mod computed;
mod http;
pub mod process;
mod queues;

use std::sync::{Arc, Mutex, MutexGuard};

use prometheus_client::encoding::{prometheus_text, text};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Metric, Registry, Unit};

pub use http::{route_label, HttpMetrics, LATENCY_BUCKETS_S, ROUTE_UNKNOWN};
pub use queues::QueueStats;

/// The prefix of every series this crate names.
pub const PREFIX: &str = "catwar_";
/// The content type of the OpenMetrics text exposition, sent to scrapers that ask for it
/// (Prometheus does); the name of the format to look for in an `Accept` header.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The media type a scraper names in `Accept` to get OpenMetrics.
const OPENMETRICS_MEDIA_TYPE: &str = "application/openmetrics-text";
/// The content type of the classic text exposition (version 0.0.4), sent to everyone
/// else: curl, `promtool check metrics` and older scrapers read only this one.
pub const TEXT_CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// The two text expositions a scrape can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 text, ending in `# EOF`.
    OpenMetrics,
    /// The classic Prometheus text format, version 0.0.4.
    Text,
}

impl Format {
    /// The format an `Accept` header asks for: OpenMetrics when it names it, the classic
    /// text format otherwise (and when there is no header at all).
    pub fn negotiate(accept: Option<&str>) -> Format {
        let asks_openmetrics = accept.is_some_and(|accept| {
            accept
                .split(',')
                .any(|media| media.trim().starts_with(OPENMETRICS_MEDIA_TYPE))
        });
        if asks_openmetrics {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }

    /// The `Content-Type` of an exposition in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
            Format::Text => TEXT_CONTENT_TYPE,
        }
    }
}

/// The metrics of one process: a registry behind a lock, taken briefly when a service
/// registers a series at start and while a scrape encodes. Recording a value never takes
/// it: metric handles are atomics shared with the registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    queues: Arc<queues::Queues>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry holding the process series and the (still empty) job queue series.
    pub fn new() -> Metrics {
        let queues = Arc::new(queues::Queues::default());
        let mut registry = Registry::default();
        registry.register_collector(Box::new(process::ProcessCollector));
        registry.register_collector(Box::new(Arc::clone(&queues)));
        Metrics {
            registry: Mutex::new(registry),
            queues,
        }
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        // A panic while registering leaves a registry that is still whole.
        self.registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a series named `name` (with [`PREFIX`], without the `_total` a counter
    /// gets on encoding). `help` is one sentence without its final period.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        debug_assert!(name.starts_with(PREFIX), "{name} lacks the prefix {PREFIX}");
        self.registry().register(name, help, metric);
    }

    /// Like [`Metrics::register`], with a unit that encoding appends to the name.
    pub fn register_with_unit(&self, name: &str, help: &str, unit: Unit, metric: impl Metric) {
        debug_assert!(name.starts_with(PREFIX), "{name} lacks the prefix {PREFIX}");
        self.registry().register_with_unit(name, help, unit, metric);
    }

    /// Registers a gauge and returns it, for the common case of one unlabelled value.
    pub fn gauge(&self, name: &str, help: &str) -> Gauge {
        let gauge = Gauge::default();
        self.register(name, help, gauge.clone());
        gauge
    }

    /// Registers a gauge whose value `read` computes on each scrape, from state the
    /// service keeps anyway (the size of a cache, an epoch).
    pub fn gauge_fn(&self, name: &str, help: &str, read: impl Fn() -> i64 + Send + Sync + 'static) {
        self.computed(name, help, computed::Read::One(Box::new(read)));
    }

    /// Registers a gauge with one series per value of `label`, computed on each scrape:
    /// `read` gives every label value with its number (a role as 1 for the current one
    /// and 0 for the others, say), always the same label values.
    pub fn labelled_gauge_fn(
        &self,
        name: &str,
        help: &str,
        label: &'static str,
        read: impl Fn() -> Vec<(&'static str, i64)> + Send + Sync + 'static,
    ) {
        self.computed(name, help, computed::Read::Labelled(label, Box::new(read)));
    }

    fn computed(&self, name: &str, help: &str, read: computed::Read) {
        debug_assert!(name.starts_with(PREFIX), "{name} lacks the prefix {PREFIX}");
        self.registry()
            .register_collector(Box::new(computed::Computed {
                name: name.to_string(),
                help: help.to_string(),
                read,
            }));
    }

    /// Registers the series of an HTTP server's event loop.
    pub fn register_http(&self, http: &HttpMetrics) {
        http.register(self);
    }

    /// Adds a job queue, reported under the label `pool="NAME"`.
    pub fn add_queue(&self, name: &str, stats: Arc<QueueStats>) {
        self.queues.add(name, stats);
    }

    /// Encodes every series in `format`.
    pub fn encode(&self, format: Format) -> String {
        let registry = self.registry();
        let mut out = String::new();
        // Writing into a String cannot fail, and our own series always encode.
        let encoded = match format {
            Format::OpenMetrics => text::encode(&mut out, &registry),
            Format::Text => prometheus_text::encode(&mut out, &registry),
        };
        encoded.expect("metrics encode into a String");
        out
    }
}

/// Asserts that every one of `lines` stands in the exposition `text` (unit tests).
#[cfg(test)]
pub(crate) fn assert_exposes(text: &str, lines: &[&str]) {
    for line in lines {
        assert!(text.contains(line), "{line:?} missing from\n{text}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_headers_choose_the_format() {
        assert_eq!(Format::negotiate(None), Format::Text);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Text);
        // What Prometheus 2.x sends.
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(
            Format::negotiate(Some("text/plain; version=0.0.4")),
            Format::Text
        );
    }

    #[test]
    fn computed_gauges_are_read_at_each_scrape() {
        let metrics = Metrics::new();
        let value = Arc::new(std::sync::atomic::AtomicI64::new(1));
        let read = Arc::clone(&value);
        metrics.gauge_fn("catwar_test_cached", "Cached things", move || {
            read.load(std::sync::atomic::Ordering::Relaxed)
        });
        metrics.labelled_gauge_fn("catwar_test_role", "The role now", "role", || {
            vec![("active", 1), ("standby", 0)]
        });
        value.store(5, std::sync::atomic::Ordering::Relaxed);
        let text = metrics.encode(Format::Text);
        assert_exposes(
            &text,
            &[
                "# TYPE catwar_test_cached gauge\n",
                "catwar_test_cached 5\n",
                "catwar_test_role{role=\"active\"} 1\n",
                "catwar_test_role{role=\"standby\"} 0\n",
            ],
        );
    }

    #[test]
    fn both_formats_carry_our_series_and_the_process_ones() {
        let metrics = Metrics::new();
        metrics.gauge("catwar_test_things", "Things now").set(3);
        let text = metrics.encode(Format::Text);
        assert!(text.contains("# TYPE catwar_test_things gauge\n"), "{text}");
        assert!(text.contains("catwar_test_things 3\n"), "{text}");
        assert!(text.contains("process_resident_memory_bytes "), "{text}");
        assert!(!text.contains("# EOF"), "{text}");
        let open = metrics.encode(Format::OpenMetrics);
        assert!(open.ends_with("# EOF\n"), "{open}");
        assert!(open.contains("catwar_test_things 3\n"), "{open}");
    }
}
