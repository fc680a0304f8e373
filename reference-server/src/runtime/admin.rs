//! The admin listener of a service (SPEC §3, §7): `GET /metrics` and `GET /healthz` on a
//! socket of its own, served by the same HTTP event loop as every service on a thread
//! of its own, so a scrape never waits behind the service's work nor delays it.

use std::io;
use std::net::TcpListener;
use std::sync::Arc;

use crate::runtime::event_loop::{Ctx, Handler, Limits, Reply, Server, ServerHandle};
use crate::runtime::http::{self, Request, Response};
use crate::runtime::metrics::{Format, Metrics};

/// Connections the admin listener holds at once: a few scrapers and probes, so a client
/// that opens many cannot spend the service's descriptors here.
pub const ADMIN_CONNS_MAX: usize = 64;

/// The routes of the admin listener.
const ROUTES: &[&str] = &["/metrics", "/healthz"];

/// Answers scrapes and health checks from a process's [`Metrics`].
#[derive(Debug)]
pub struct Admin {
    metrics: Arc<Metrics>,
}

impl Admin {
    /// An admin handler over these metrics.
    pub fn new(metrics: Arc<Metrics>) -> Admin {
        Admin { metrics }
    }
}

impl Handler for Admin {
    fn handle(&mut self, req: Request, _ctx: &mut Ctx<'_>) -> Reply {
        let response = match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/metrics") => {
                let format = Format::negotiate(req.header("accept"));
                let mut response =
                    Response::empty(200).with_header("Content-Type", format.content_type());
                response.body = http::Body::Owned(self.metrics.encode(format).into_bytes());
                response
            }
            ("GET", "/healthz") => Response::json(200, &serde_json::json!({"status": "ok"})),
            (_, "/metrics" | "/healthz") => http::method_not_allowed(&req, &["GET"]),
            _ => http::not_found(&req),
        };
        Reply::Now(response)
    }

    fn routes(&self) -> &'static [&'static str] {
        ROUTES
    }
}

/// Serves `metrics` on `listener` on a thread of its own until the handle is shut down.
pub fn start(listener: TcpListener, metrics: Arc<Metrics>) -> io::Result<ServerHandle> {
    let limits = Limits {
        conns_max: ADMIN_CONNS_MAX,
        ..Limits::default()
    };
    Server::new(listener, Admin::new(metrics), limits)?.spawn("admin")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn exchange(addr: std::net::SocketAddr, request: &str) -> String {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    }

    #[test]
    fn metrics_and_healthz_answer_and_other_routes_do_not() {
        let metrics = Arc::new(Metrics::new());
        metrics.gauge("catwar_test_answer", "The answer").set(42);
        let admin = start(
            crate::runtime::event_loop::bind_loopback().unwrap(),
            metrics,
        )
        .unwrap();
        let addr = admin.addr();
        let close = "Connection: close\r\n\r\n";
        let text = exchange(addr, &format!("GET /metrics HTTP/1.1\r\n{close}"));
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(
            text.contains("Content-Type: text/plain; version=0.0.4"),
            "{text}"
        );
        assert!(text.contains("\ncatwar_test_answer 42\n"), "{text}");
        let open = exchange(
            addr,
            &format!("GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text\r\n{close}"),
        );
        assert!(
            open.contains("Content-Type: application/openmetrics-text"),
            "{open}"
        );
        assert!(open.ends_with("# EOF\n"), "{open}");
        let health = exchange(addr, &format!("GET /healthz HTTP/1.1\r\n{close}"));
        assert!(health.starts_with("HTTP/1.1 200 OK\r\n"), "{health}");
        let post = exchange(
            addr,
            &format!("POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n{close}"),
        );
        assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
        assert!(post.contains("Allow: GET\r\n"), "{post}");
        let missing = exchange(addr, &format!("GET /nothing HTTP/1.1\r\n{close}"));
        assert!(missing.starts_with("HTTP/1.1 404 "), "{missing}");
        admin.shutdown().unwrap();
    }
}
