//! A small blocking HTTP/1.1 client for the services' own calls to each other: balancer
//! health checks, heartbeats between balancer and observer, storage asking for a pick.
//!
//! These calls run on background threads or job-pool workers, never on an event loop, so
//! blocking with a short timeout is the simplest correct choice. One connection per call
//! keeps a dead peer from poisoning a pooled connection during a failover.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::runtime::event_loop::{BODY_BYTES_MAX, HEADERS_COUNT_MAX, HEAD_BYTES_MAX};

/// Largest response body the internal client reads; internal answers are small JSON.
const RESPONSE_BODY_BYTES_MAX: usize = BODY_BYTES_MAX;

/// Why an internal call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The peer refused or the connect timed out: it is down or not listening yet.
    #[error("connect failed: {0}")]
    Connect(#[source] io::Error),
    /// The peer accepted but did not answer in time.
    #[error("timed out")]
    Timeout,
    /// Reading or writing failed midway.
    #[error("i/o error: {0}")]
    Io(#[source] io::Error),
    /// The answer was not valid HTTP or exceeded the size limits.
    #[error("bad response: {0}")]
    BadResponse(String),
}

/// A complete response.
#[derive(Debug, Clone)]
pub struct ClientResponse {
    /// Status code.
    pub status: u16,
    /// The body.
    pub body: Vec<u8>,
}

impl ClientResponse {
    /// Parses the body as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, ClientError> {
        serde_json::from_slice(&self.body).map_err(|e| ClientError::BadResponse(e.to_string()))
    }
}

/// `GET path` on `addr`; the whole exchange must finish within `timeout`.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<ClientResponse, ClientError> {
    request(addr, "GET", path, &[], &[], timeout)
}

/// Sends one request with `Connection: close` and reads the whole answer.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> Result<ClientResponse, ClientError> {
    use std::fmt::Write as _;
    let deadline = Instant::now() + timeout;
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(ClientError::Connect)?;
    let _ = stream.set_nodelay(true);
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    let _ = write!(
        head,
        "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    set_deadline(&stream, deadline)?;
    stream.write_all(head.as_bytes()).map_err(io_error)?;
    stream.write_all(body).map_err(io_error)?;
    read_response(&mut stream, deadline)
}

fn read_response(stream: &mut TcpStream, deadline: Instant) -> Result<ClientResponse, ClientError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 8192];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; HEADERS_COUNT_MAX];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(head_len)) => {
                let status = resp.code.unwrap_or(0);
                let length = resp
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| {
                        std::str::from_utf8(h.value)
                            .ok()?
                            .trim()
                            .parse::<usize>()
                            .ok()
                    });
                let mut body = buf.split_off(head_len);
                read_body(stream, &mut body, length, deadline)?;
                return Ok(ClientResponse { status, body });
            }
            Ok(httparse::Status::Partial) if buf.len() <= HEAD_BYTES_MAX => {}
            Ok(httparse::Status::Partial) => {
                return Err(ClientError::BadResponse("response head too large".into()))
            }
            Err(e) => return Err(ClientError::BadResponse(e.to_string())),
        }
        set_deadline(stream, deadline)?;
        match stream.read(&mut chunk) {
            Ok(0) => {
                return Err(ClientError::BadResponse(
                    "connection closed before the head".into(),
                ))
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(io_error(e)),
        }
    }
}

fn read_body(
    stream: &mut TcpStream,
    body: &mut Vec<u8>,
    length: Option<usize>,
    deadline: Instant,
) -> Result<(), ClientError> {
    let want = length.unwrap_or(RESPONSE_BODY_BYTES_MAX);
    if want > RESPONSE_BODY_BYTES_MAX {
        return Err(ClientError::BadResponse(format!(
            "body of {want} bytes is too large"
        )));
    }
    let mut chunk = [0u8; 8192];
    while body.len() < want {
        set_deadline(stream, deadline)?;
        match stream.read(&mut chunk) {
            Ok(0) if length.is_none() => break,
            Ok(0) => {
                return Err(ClientError::BadResponse(
                    "connection closed mid-body".into(),
                ))
            }
            Ok(n) => body.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(io_error(e)),
        }
    }
    body.truncate(want);
    Ok(())
}

fn set_deadline(stream: &TcpStream, deadline: Instant) -> Result<(), ClientError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(ClientError::Timeout);
    }
    stream
        .set_read_timeout(Some(left))
        .map_err(ClientError::Io)?;
    stream
        .set_write_timeout(Some(left))
        .map_err(ClientError::Io)
}

fn io_error(e: io::Error) -> ClientError {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ClientError::Timeout,
        _ => ClientError::Io(e),
    }
}
