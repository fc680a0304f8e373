//! Entry points for the fuzz targets under `fuzz/` (not a public API): the simulator's
//! own parsers, fed bytes instead of a server.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::net::http::wire::exchange;

/// A connection whose server sends `bytes`, at most `chunk` bytes per read, then closes;
/// whatever the client writes is dropped.
struct Replay<'a> {
    bytes: &'a [u8],
    chunk: usize,
}

impl AsyncRead for Replay<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = self.chunk.min(self.bytes.len()).min(buf.remaining());
        buf.put_slice(&self.bytes[..n]);
        self.bytes = &self.bytes[n..];
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Replay<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// What the HTTP client made of one response.
#[derive(Debug)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// Headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// Whether the client would keep the connection.
    pub keep_alive: bool,
}

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");
}

/// Sends a request and reads the response from `bytes` exactly as the simulator's HTTP
/// client (plain or TLS) does, the server's bytes arriving `chunk` at a time (at least
/// one). The error is the client's error code and message.
pub fn http_response(bytes: &[u8], chunk: usize) -> Result<HttpResponse, String> {
    let mut stream = Replay {
        bytes,
        chunk: chunk.max(1),
    };
    let mut buf = Vec::new();
    let request = b"GET /v1/me HTTP/1.1\r\nHost: fuzz\r\n\r\n";
    RUNTIME.with(|rt| {
        rt.block_on(async {
            match exchange(&mut stream, request, &mut buf).await {
                Ok((response, keep_alive)) => Ok(HttpResponse {
                    status: response.status,
                    headers: response.headers,
                    body: response.body,
                    keep_alive,
                }),
                Err(failed) => Err(format!(
                    "{}: {} (response started: {})",
                    failed.error.code(),
                    failed.error,
                    failed.response_started
                )),
            }
        })
    })
}

/// The first `n` arrival times of a scenario's open model, as a run schedules them, and
/// the arrivals its stages expect in all.
pub fn arrivals(scenario: &crate::scenario::Scenario, n: usize) -> (Vec<f64>, f64) {
    let times = crate::arrivals::Arrivals::new(&scenario.load, scenario.scenario.seed)
        .take(n)
        .collect();
    let expected = crate::arrivals::Schedule::new(&scenario.load).expected_arrivals();
    (times, expected)
}
