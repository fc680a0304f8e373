//! The two process figures of a Prometheus `/metrics` page: `process_cpu_seconds_total`
//! and `process_resident_memory_bytes`, the names every Prometheus client library gives
//! its process collector, and a scrape that fetches them.
//!
//! Only what the sampler needs of the text exposition format is parsed: `#` lines (HELP,
//! TYPE, OpenMetrics' `# EOF`) are skipped; a sample line is a name, optional `{labels}`,
//! a value and an optional timestamp. OpenMetrics calls the counter's family
//! `process_cpu_seconds` and its sample `process_cpu_seconds_total`; both spellings are
//! accepted.

use crate::net::http::{HttpClient, HttpError};
use std::time::Duration;

/// A scrape slower than this misses its second rather than delay the next one: a
/// service too busy to answer its admin listener within half a second is itself news.
pub(crate) const SCRAPE_TIMEOUT_MS: u64 = 500;
/// The counter of CPU seconds, as client libraries name it.
const CPU_SECONDS: &str = "process_cpu_seconds_total";
/// The same without OpenMetrics' `_total` suffix, as some exporters write it.
const CPU_SECONDS_FAMILY: &str = "process_cpu_seconds";
/// The resident memory gauge.
const RESIDENT_BYTES: &str = "process_resident_memory_bytes";

/// Why a service's `/metrics` gave no figures.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ScrapeError {
    /// The `metrics` address of topology.json does not resolve.
    #[error("metrics address {addr:?} does not resolve")]
    Resolve {
        /// The address as written.
        addr: String,
        /// The resolver's error, if it gave one.
        #[source]
        source: Option<std::io::Error>,
    },
    /// The request failed.
    #[error("GET http://{addr}/metrics")]
    Http {
        /// The address.
        addr: String,
        /// What failed.
        #[source]
        source: HttpError,
    },
    /// The answer was not 200.
    #[error("GET http://{addr}/metrics answered {status}")]
    Status {
        /// The address.
        addr: String,
        /// The status code.
        status: u16,
    },
    /// No answer within [`SCRAPE_TIMEOUT_MS`].
    #[error("GET http://{addr}/metrics: no answer within {SCRAPE_TIMEOUT_MS} ms")]
    Timeout {
        /// The address.
        addr: String,
    },
    /// The page lacks a figure.
    #[error("http://{addr}/metrics has no {metric}")]
    Missing {
        /// The address.
        addr: String,
        /// The metric looked for.
        metric: &'static str,
    },
}

/// A process's figures as its `/metrics` states them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct ProcessFigures {
    /// CPU seconds used since the process started.
    pub(crate) cpu_seconds: f64,
    /// Resident memory, bytes.
    pub(crate) rss_bytes: u64,
}

/// Fetches `http://<addr>/metrics` with `client` and reads the process figures.
pub(crate) async fn scrape(
    client: &mut HttpClient,
    addr: &str,
) -> Result<ProcessFigures, ScrapeError> {
    let timeout = Duration::from_millis(SCRAPE_TIMEOUT_MS);
    let scraped = tokio::time::timeout(timeout, async {
        let resolved = tokio::net::lookup_host(addr)
            .await
            .map_err(|e| ScrapeError::Resolve {
                addr: addr.to_string(),
                source: Some(e),
            })?
            .next()
            .ok_or_else(|| ScrapeError::Resolve {
                addr: addr.to_string(),
                source: None,
            })?;
        client
            .get(resolved, "/metrics")
            .await
            .map_err(|source| ScrapeError::Http {
                addr: addr.to_string(),
                source,
            })
    })
    .await
    .map_err(|_| ScrapeError::Timeout {
        addr: addr.to_string(),
    })??;
    if scraped.status != 200 {
        return Err(ScrapeError::Status {
            addr: addr.to_string(),
            status: scraped.status,
        });
    }
    let text = String::from_utf8_lossy(&scraped.body);
    let missing = |metric| ScrapeError::Missing {
        addr: addr.to_string(),
        metric,
    };
    let cpu_seconds = value_of(&text, CPU_SECONDS)
        .or_else(|| value_of(&text, CPU_SECONDS_FAMILY))
        .ok_or_else(|| missing(CPU_SECONDS))?;
    let rss = value_of(&text, RESIDENT_BYTES).ok_or_else(|| missing(RESIDENT_BYTES))?;
    Ok(ProcessFigures {
        cpu_seconds,
        rss_bytes: rss as u64,
    })
}

/// The value of the first sample named exactly `name` (any labels), if it is a finite,
/// non-negative number.
pub(crate) fn value_of(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .map(str::trim_start)
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let rest = line.strip_prefix(name)?;
            let rest = match rest.chars().next()? {
                '{' => after_labels(rest)?,
                c if c.is_whitespace() => rest,
                // Another metric whose name starts with this one.
                _ => return None,
            };
            let value: f64 = rest.split_whitespace().next()?.parse().ok()?;
            (value.is_finite() && value >= 0.0).then_some(value)
        })
}

/// What follows `{labels}`, whose quoted values may hold `}` and escaped quotes.
fn after_labels(text: &str) -> Option<&str> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in text.char_indices().skip(1) {
        match (quoted, escaped, c) {
            (true, true, _) => escaped = false,
            (true, false, '\\') => escaped = true,
            (_, false, '"') => quoted = !quoted,
            (false, _, '}') => return Some(&text[i + 1..]),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROMETHEUS: &str = "\
# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 12.47
# HELP process_resident_memory_bytes Resident memory size in bytes.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 1.4893056e+07
process_resident_memory_bytes_peak 99
";

    #[test]
    fn the_text_format_gives_both_figures() {
        assert_eq!(value_of(PROMETHEUS, CPU_SECONDS), Some(12.47));
        assert_eq!(value_of(PROMETHEUS, RESIDENT_BYTES), Some(14_893_056.0));
        assert_eq!(value_of(PROMETHEUS, "process_open_fds"), None);
    }

    #[test]
    fn openmetrics_labels_timestamps_and_eof_are_tolerated() {
        let text = "\
# TYPE process_cpu_seconds counter
process_cpu_seconds_total{service=\"lob}by\",note=\"a \\\"q\\\" }\"} 3.5 1700000000000
process_resident_memory_bytes{service=\"lobby\"} 2048
# EOF
";
        assert_eq!(value_of(text, CPU_SECONDS), Some(3.5));
        assert_eq!(value_of(text, RESIDENT_BYTES), Some(2048.0));
        // An exporter that writes the family name without `_total`.
        assert_eq!(
            value_of("process_cpu_seconds 7\n", CPU_SECONDS_FAMILY),
            Some(7.0)
        );
        assert_eq!(
            value_of("process_cpu_seconds NaN\n", CPU_SECONDS_FAMILY),
            None
        );
        assert_eq!(
            value_of("process_cpu_seconds_total{a=\"b\" 1\n", CPU_SECONDS),
            None
        );
    }

    #[tokio::test]
    async fn a_scrape_reads_a_served_page_and_names_what_is_missing() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let pages = [PROMETHEUS, "process_cpu_seconds_total 1\n"];
        let server = tokio::spawn(async move {
            for page in pages {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut head = [0u8; 1024];
                let _ = socket.read(&mut head).await.unwrap();
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{page}",
                    page.len()
                );
                socket.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        let mut client = HttpClient::new(None);
        let figures = scrape(&mut client, &addr).await.unwrap();
        assert_eq!(
            figures,
            ProcessFigures {
                cpu_seconds: 12.47,
                rss_bytes: 14_893_056
            }
        );
        let mut client = HttpClient::new(None);
        let error = scrape(&mut client, &addr).await.unwrap_err().to_string();
        assert!(error.contains(RESIDENT_BYTES), "{error}");
        server.await.unwrap();
    }
}
