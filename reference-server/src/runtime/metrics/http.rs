//! The series of the shared HTTP event loop: requests by route and status, latency by
//! route, and connections.
//!
//! A route label is one of the handler's declared route patterns, or [`ROUTE_UNKNOWN`]:
//! never a raw path, so a client that walks random paths cannot grow the series.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Unit;

use super::Metrics;

/// The route label of a request that matched no declared route, or that the loop
/// refused before any handler saw it (malformed, too large, too slow).
pub const ROUTE_UNKNOWN: &str = "unknown";
/// Upper bounds of the latency buckets, in seconds: from 100 µs (an answer from memory)
/// doubling to about 6.6 s (argon2 behind a full login queue), so both ends of what the
/// services do fall in a bucket of their own.
pub const LATENCY_BUCKETS_S: [f64; 17] = [
    0.0001, 0.0002, 0.0004, 0.0008, 0.0016, 0.0032, 0.0064, 0.0128, 0.0256, 0.0512, 0.1024, 0.2048,
    0.4096, 0.8192, 1.6384, 3.2768, 6.5536,
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteStatus {
    route: &'static str,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteOnly {
    route: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS_S)
}

/// The matching route pattern of `routes` for `path`: an exact match, or for a pattern
/// with a `{parameter}`, a path that starts with the part before it (file nodes'
/// `/v1/files/{version}/{path}`). [`ROUTE_UNKNOWN`] when none matches.
pub fn route_label(routes: &[&'static str], path: &str) -> &'static str {
    routes
        .iter()
        .find(|pattern| match pattern.find('{') {
            Some(at) => path.starts_with(&pattern[..at]),
            None => path == **pattern,
        })
        .copied()
        .unwrap_or(ROUTE_UNKNOWN)
}

/// What one HTTP server records; clones share the values.
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    requests: Family<RouteStatus, Counter>,
    latency: Family<RouteOnly, Histogram, fn() -> Histogram>,
    connections: Gauge,
    refused: Counter,
}

impl Default for HttpMetrics {
    fn default() -> HttpMetrics {
        HttpMetrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            connections: Gauge::default(),
            refused: Counter::default(),
        }
    }
}

impl HttpMetrics {
    /// Counts one answer sent, and the time the handler took when one saw the request.
    pub fn record(&self, route: &'static str, status: u16, elapsed: Option<Duration>) {
        self.requests
            .get_or_create(&RouteStatus { route, status })
            .inc();
        if let Some(elapsed) = elapsed {
            self.latency
                .get_or_create(&RouteOnly { route })
                .observe(elapsed.as_secs_f64());
        }
    }

    /// Sets the number of open connections.
    pub fn set_connections(&self, open: usize) {
        self.connections
            .set(i64::try_from(open).unwrap_or(i64::MAX));
    }

    /// Counts a connection refused because the server was at its connection cap.
    pub fn refused(&self) {
        self.refused.inc();
    }

    /// Answers counted so far for this route and status (tests).
    pub fn requests(&self, route: &'static str, status: u16) -> u64 {
        self.requests
            .get(&RouteStatus { route, status })
            .map_or(0, |c| c.get())
    }

    pub(super) fn register(&self, metrics: &Metrics) {
        metrics.register(
            "catwar_http_requests",
            "HTTP answers sent, by route pattern and status",
            self.requests.clone(),
        );
        metrics.register_with_unit(
            "catwar_http_request_duration",
            "Time from a complete request to its answer, by route pattern",
            Unit::Seconds,
            self.latency.clone(),
        );
        metrics.register(
            "catwar_http_connections",
            "HTTP connections open now",
            self.connections.clone(),
        );
        metrics.register(
            "catwar_http_connections_refused",
            "Connections refused at the connection cap",
            self.refused.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::metrics::{assert_exposes, Format};

    #[test]
    fn routes_match_exactly_or_by_the_prefix_before_a_parameter() {
        let routes = ["/v1/update", "/healthz", "/v1/files/{version}/{path}"];
        assert_eq!(route_label(&routes, "/v1/update"), "/v1/update");
        assert_eq!(route_label(&routes, "/v1/update/x"), ROUTE_UNKNOWN);
        assert_eq!(
            route_label(&routes, "/v1/files/1.0.0/a/b.bin"),
            "/v1/files/{version}/{path}"
        );
        assert_eq!(route_label(&routes, "/etc/passwd"), ROUTE_UNKNOWN);
        assert_eq!(route_label(&[], "/healthz"), ROUTE_UNKNOWN);
    }

    #[test]
    fn answers_are_counted_by_route_and_status_and_timed_by_route() {
        let metrics = Metrics::new();
        let http = HttpMetrics::default();
        metrics.register_http(&http);
        http.record("/v1/me", 200, Some(Duration::from_micros(150)));
        http.record("/v1/me", 401, Some(Duration::from_millis(2)));
        http.record(ROUTE_UNKNOWN, 400, None);
        http.set_connections(7);
        assert_eq!(http.requests("/v1/me", 200), 1);
        let text = metrics.encode(Format::Text);
        assert_exposes(
            &text,
            &[
                "catwar_http_requests_total{route=\"/v1/me\",status=\"200\"} 1\n",
                "catwar_http_requests_total{route=\"unknown\",status=\"400\"} 1\n",
                "catwar_http_request_duration_seconds_count{route=\"/v1/me\"} 2\n",
                "catwar_http_request_duration_seconds_bucket{route=\"/v1/me\",le=\"0.0002\"} 1\n",
                "catwar_http_connections 7\n",
            ],
        );
        // Unseen requests leave no latency series.
        assert!(
            !text.contains("duration_seconds_count{route=\"unknown\"}"),
            "{text}"
        );
    }
}
