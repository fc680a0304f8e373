//! A minimal HTTP/1.1 client over tokio, just enough for the CatWar services.
//!
//! Each virtual client owns one [`HttpClient`], which keeps its connections alive between
//! requests (one per server address, a few at most). Bodies are `Content-Length` only,
//! which is all the CatWar services send. Heads and bodies are bounded, every request has
//! a deadline, and connections can be made from a chosen local address so that a client
//! can change its IP in the 127.0.0.0/8 range.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Response heads larger than the services' own request-head limit mean a broken server.
pub const HTTP_HEAD_BYTES_MAX: usize = 16 * 1024;
/// Resource files are a few MiB at most; a larger body means a broken server, and the
/// bound keeps one bad answer from exhausting memory across thousands of clients.
pub const HTTP_BODY_BYTES_MAX: u64 = 16 * 1024 * 1024;
/// The services send a handful of headers; more than this is not a CatWar server.
const HTTP_HEADERS_MAX: usize = 32;
/// A request on loopback that takes longer than this (connect and a MiB body included)
/// is stuck, not slow; it counts as a `timeout` error.
pub const REQUEST_TIMEOUT_MS: u64 = 10_000;
/// Each read asks for this much at once: large enough for a head in one read.
const READ_CHUNK_BYTES: usize = 8 * 1024;
/// A virtual client talks to storage and a few file nodes; keeping more idle connections
/// per client would multiply file descriptors across thousands of clients.
pub const CLIENT_CONNECTIONS_MAX: usize = 4;

/// Why a request failed before a complete response arrived.
#[derive(Debug)]
pub enum HttpError {
    /// The TCP connection could not be made (refused, unreachable, bind failed).
    Connect(io::Error),
    /// The request did not complete within [`REQUEST_TIMEOUT_MS`].
    Timeout,
    /// Reading or writing failed, for example a reset.
    Io(io::Error),
    /// The server closed the connection before the response was complete.
    Closed,
    /// The response was not valid HTTP or broke a bound.
    BadResponse(String),
}

impl HttpError {
    /// The error code recorded in metrics: `connect`, `timeout`, `io` or `bad_response`.
    pub fn code(&self) -> &'static str {
        match self {
            HttpError::Connect(_) => "connect",
            HttpError::Timeout => "timeout",
            HttpError::Io(_) | HttpError::Closed => "io",
            HttpError::BadResponse(_) => "bad_response",
        }
    }

    /// Whether the peer refused or reset the connection, the signature of a dead process.
    pub fn is_refused_or_reset(&self) -> bool {
        match self {
            HttpError::Connect(e) => e.kind() == io::ErrorKind::ConnectionRefused,
            HttpError::Io(e) => e.kind() == io::ErrorKind::ConnectionReset,
            _ => false,
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Connect(e) => write!(f, "connect failed: {e}"),
            HttpError::Timeout => write!(f, "no complete response within {REQUEST_TIMEOUT_MS} ms"),
            HttpError::Io(e) => write!(f, "i/o error: {e}"),
            HttpError::Closed => write!(f, "connection closed before the response was complete"),
            HttpError::BadResponse(why) => write!(f, "bad response: {why}"),
        }
    }
}

impl std::error::Error for HttpError {}

/// A complete response.
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header names in lower case, values as sent.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of a header, by lower-case name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One virtual client's HTTP connections.
#[derive(Debug)]
pub struct HttpClient {
    local_ip: Option<IpAddr>,
    /// Idle keep-alive connections, oldest first.
    idle: Vec<(SocketAddr, TcpStream)>,
    buf: Vec<u8>,
}

impl HttpClient {
    /// A client that connects from `local_ip`, or from the system's choice when `None`.
    pub fn new(local_ip: Option<IpAddr>) -> HttpClient {
        HttpClient {
            local_ip,
            idle: Vec::new(),
            buf: Vec::with_capacity(READ_CHUNK_BYTES),
        }
    }

    /// Sends `GET target` to `addr` and reads the whole response.
    ///
    /// A request on a reused connection that the server had already closed is retried
    /// once on a fresh connection; GET is idempotent, so that is safe.
    pub async fn get(&mut self, addr: SocketAddr, target: &str) -> Result<Response, HttpError> {
        let deadline = Duration::from_millis(REQUEST_TIMEOUT_MS);
        tokio::time::timeout(deadline, self.get_untimed(addr, target))
            .await
            .unwrap_or(Err(HttpError::Timeout))
    }

    async fn get_untimed(&mut self, addr: SocketAddr, target: &str) -> Result<Response, HttpError> {
        let request = format!(
            "GET {target} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: catwar-sim/{}\r\n\
             Accept: */*\r\n\r\n",
            env!("CARGO_PKG_VERSION")
        );
        if let Some(mut stream) = self.take_idle(addr) {
            match exchange(&mut stream, request.as_bytes(), &mut self.buf).await {
                Ok((response, keep_alive)) => {
                    self.keep(addr, stream, keep_alive);
                    return Ok(response);
                }
                Err(Exchange {
                    error,
                    response_started: true,
                }) => return Err(error),
                Err(Exchange {
                    response_started: false,
                    ..
                }) => {}
            }
        }
        let mut stream = self.connect(addr).await?;
        let (response, keep_alive) = exchange(&mut stream, request.as_bytes(), &mut self.buf)
            .await
            .map_err(|e| e.error)?;
        self.keep(addr, stream, keep_alive);
        Ok(response)
    }

    async fn connect(&self, addr: SocketAddr) -> Result<TcpStream, HttpError> {
        let socket = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        }
        .map_err(HttpError::Connect)?;
        if let Some(ip) = self.local_ip {
            socket
                .bind(SocketAddr::new(ip, 0))
                .map_err(HttpError::Connect)?;
        }
        let stream = socket.connect(addr).await.map_err(HttpError::Connect)?;
        // Requests are small and written in one go; waiting to coalesce them only adds latency.
        stream.set_nodelay(true).map_err(HttpError::Connect)?;
        Ok(stream)
    }

    fn take_idle(&mut self, addr: SocketAddr) -> Option<TcpStream> {
        let position = self.idle.iter().position(|(a, _)| *a == addr)?;
        Some(self.idle.remove(position).1)
    }

    fn keep(&mut self, addr: SocketAddr, stream: TcpStream, keep_alive: bool) {
        if !keep_alive {
            return;
        }
        if self.idle.len() >= CLIENT_CONNECTIONS_MAX {
            self.idle.remove(0);
        }
        self.idle.push((addr, stream));
    }
}

/// A failed exchange, and whether any of the response had arrived: if none had, the
/// server may simply have closed an idle keep-alive connection.
struct Exchange {
    error: HttpError,
    response_started: bool,
}

impl Exchange {
    fn started(error: HttpError) -> Exchange {
        Exchange {
            error,
            response_started: true,
        }
    }
}

/// A parsed response head.
struct Head {
    status: u16,
    headers: Vec<(String, String)>,
    head_len: usize,
    body_len: u64,
    keep_alive: bool,
}

/// Writes one request and reads its response; returns whether the connection stays open.
async fn exchange(
    stream: &mut TcpStream,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> Result<(Response, bool), Exchange> {
    stream.write_all(request).await.map_err(|e| Exchange {
        error: HttpError::Io(e),
        response_started: false,
    })?;
    let head = read_head(stream, buf).await?;
    let body = read_body(stream, buf, &head)
        .await
        .map_err(Exchange::started)?;
    let response = Response {
        status: head.status,
        headers: head.headers,
        body,
    };
    Ok((response, head.keep_alive))
}

async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Head, Exchange> {
    buf.clear();
    loop {
        if let Some(head) = parse_head(buf).map_err(Exchange::started)? {
            return Ok(head);
        }
        if buf.len() >= HTTP_HEAD_BYTES_MAX {
            let why = format!("head over {HTTP_HEAD_BYTES_MAX} bytes");
            return Err(Exchange::started(HttpError::BadResponse(why)));
        }
        buf.reserve(READ_CHUNK_BYTES);
        let read = stream.read_buf(buf).await;
        let response_started = !buf.is_empty();
        match read {
            Ok(0) => {
                return Err(Exchange {
                    error: HttpError::Closed,
                    response_started,
                })
            }
            Ok(_) => {}
            Err(e) => {
                return Err(Exchange {
                    error: HttpError::Io(e),
                    response_started,
                })
            }
        }
    }
}

/// Reads the body whose first bytes may already sit in `buf` after the head.
async fn read_body(stream: &mut TcpStream, buf: &[u8], head: &Head) -> Result<Vec<u8>, HttpError> {
    let already = &buf[head.head_len..];
    if already.len() as u64 > head.body_len {
        // The client never pipelines, so bytes past the body can only be a server bug.
        return Err(HttpError::BadResponse("bytes after the body".to_string()));
    }
    let mut body = vec![0; head.body_len as usize];
    body[..already.len()].copy_from_slice(already);
    stream
        .read_exact(&mut body[already.len()..])
        .await
        .map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => HttpError::Closed,
            _ => HttpError::Io(e),
        })?;
    Ok(body)
}

/// Parses a complete head at the start of `buf`; `None` while it is incomplete.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, HttpError> {
    let mut slots = [httparse::EMPTY_HEADER; HTTP_HEADERS_MAX];
    let mut parsed = httparse::Response::new(&mut slots);
    let head_len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(HttpError::BadResponse(e.to_string())),
    };
    let status = parsed.code.unwrap_or(0);
    let mut headers = Vec::with_capacity(parsed.headers.len());
    for header in parsed.headers.iter() {
        let value = std::str::from_utf8(header.value)
            .map_err(|_| HttpError::BadResponse(format!("header {} is not UTF-8", header.name)))?;
        headers.push((header.name.to_ascii_lowercase(), value.trim().to_string()));
    }
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    if find("transfer-encoding").is_some() {
        return Err(HttpError::BadResponse(
            "transfer-encoding is not supported".to_string(),
        ));
    }
    let body_len = match find("content-length") {
        Some(text) => text
            .parse::<u64>()
            .map_err(|_| HttpError::BadResponse(format!("content-length {text:?}")))?,
        None if status == 204 || status == 304 || (100..200).contains(&status) => 0,
        None => return Err(HttpError::BadResponse("no content-length".to_string())),
    };
    if body_len > HTTP_BODY_BYTES_MAX {
        let why = format!("body of {body_len} bytes, over {HTTP_BODY_BYTES_MAX}");
        return Err(HttpError::BadResponse(why));
    }
    let connection = find("connection").map(str::to_ascii_lowercase);
    let keep_alive = match parsed.version {
        Some(0) => connection.as_deref() == Some("keep-alive"),
        _ => connection.as_deref() != Some("close"),
    };
    Ok(Some(Head {
        status,
        headers,
        head_len,
        body_len,
        keep_alive,
    }))
}

/// Percent-encodes `text` for a request target, keeping unreserved characters and, when
/// `keep_slash` is set, the `/` between path segments.
pub fn percent_encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        let plain =
            byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) || (keep_slash && byte == b'/');
        if plain {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use tokio::net::TcpListener;

    /// A scripted server: answers every request with `answer`, closing the connection
    /// after each answer when `close` is set. Records the peer of every connection.
    struct FakeServer {
        addr: SocketAddr,
        peers: Arc<Mutex<Vec<SocketAddr>>>,
        requests: Arc<AtomicUsize>,
    }

    async fn fake_server(answer: &'static [u8], close: bool) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let peers = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(AtomicUsize::new(0));
        let (peers_seen, requests_seen) = (Arc::clone(&peers), Arc::clone(&requests));
        tokio::spawn(async move {
            loop {
                let (mut stream, peer) = listener.accept().await.unwrap();
                peers_seen.lock().unwrap().push(peer);
                let requests = Arc::clone(&requests_seen);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let mut chunk = [0; 1024];
                        let n = stream.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            continue;
                        }
                        buf.clear();
                        requests.fetch_add(1, Ordering::SeqCst);
                        // Two writes, so the client must join a body split across reads.
                        let (head, rest) = answer.split_at(answer.len() / 2);
                        stream.write_all(head).await.unwrap();
                        stream.flush().await.unwrap();
                        stream.write_all(rest).await.unwrap();
                        if close {
                            return;
                        }
                    }
                });
            }
        });
        FakeServer {
            addr,
            peers,
            requests,
        }
    }

    const HELLO: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nETag: \"x\"\r\n\r\nhello world";

    #[tokio::test]
    async fn keep_alive_reuses_one_connection() {
        let server = fake_server(HELLO, false).await;
        let mut client = HttpClient::new(None);
        for _ in 0..3 {
            let response = client.get(server.addr, "/v1/files/1.0.0/a").await.unwrap();
            assert_eq!(
                (response.status, response.body.as_slice()),
                (200, &b"hello world"[..])
            );
            assert_eq!(response.header("etag"), Some("\"x\""));
        }
        assert_eq!(server.peers.lock().unwrap().len(), 1);
        assert_eq!(server.requests.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn connection_closed_by_the_server_is_retried_once_on_a_fresh_one() {
        let server = fake_server(HELLO, true).await;
        let mut client = HttpClient::new(None);
        for _ in 0..3 {
            assert_eq!(
                client.get(server.addr, "/").await.unwrap().body,
                b"hello world"
            );
        }
        assert_eq!(server.requests.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn connection_close_header_is_honoured() {
        let answer = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\n\
                       Content-Length: 2\r\n\r\n{}";
        let server = fake_server(answer, false).await;
        let mut client = HttpClient::new(None);
        for _ in 0..2 {
            let response = client.get(server.addr, "/").await.unwrap();
            assert_eq!(
                (response.status, response.header("retry-after")),
                (503, Some("1"))
            );
        }
        assert_eq!(server.peers.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn broken_answers_are_bad_responses() {
        let cases: [&'static [u8]; 3] = [
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n",
            b"SMTP ready\r\n\r\n",
        ];
        for answer in cases {
            let server = fake_server(answer, false).await;
            let error = HttpClient::new(None)
                .get(server.addr, "/")
                .await
                .unwrap_err();
            assert_eq!(error.code(), "bad_response", "{error}");
        }
    }

    #[tokio::test]
    async fn oversized_head_is_a_bad_response() {
        let mut answer = b"HTTP/1.1 200 OK\r\nX-Pad: ".to_vec();
        answer.resize(HTTP_HEAD_BYTES_MAX + 100, b'a');
        let server = fake_server(answer.leak(), false).await;
        let error = HttpClient::new(None)
            .get(server.addr, "/")
            .await
            .unwrap_err();
        assert_eq!(error.code(), "bad_response", "{error}");
    }

    #[tokio::test]
    async fn refused_connection_is_a_connect_error() {
        let addr = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap()
        };
        let error = HttpClient::new(None).get(addr, "/").await.unwrap_err();
        assert_eq!(error.code(), "connect");
        assert!(error.is_refused_or_reset());
    }

    #[tokio::test]
    async fn connections_come_from_the_chosen_local_address() {
        let server = fake_server(HELLO, false).await;
        let local: IpAddr = "127.0.0.2".parse().unwrap();
        HttpClient::new(Some(local))
            .get(server.addr, "/")
            .await
            .unwrap();
        assert_eq!(server.peers.lock().unwrap()[0].ip(), local);
    }

    #[test]
    fn percent_encoding_keeps_unreserved_characters() {
        assert_eq!(
            percent_encode("maps/arena 1.map", true),
            "maps/arena%201.map"
        );
        assert_eq!(percent_encode("a/b?c", false), "a%2Fb%3Fc");
        assert_eq!(percent_encode("1.0.0-rc_1~", false), "1.0.0-rc_1~");
    }
}
