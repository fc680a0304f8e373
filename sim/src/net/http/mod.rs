//! A minimal HTTP/1.1 client over tokio, just enough for the CatWar services.
//!
//! Each virtual client owns one [`HttpClient`], which keeps its connections alive between
//! requests (one per server address, a few at most). Bodies are `Content-Length` only,
//! which is all the CatWar services send. Heads and bodies are bounded, every request has
//! a deadline, and connections are made from the client's own local address, which it
//! can change within 127.0.0.0/8. The TLS side (profile) is [`crate::net::tls`], over the
//! same [`wire`] functions.

#[cfg(test)]
mod tests;
pub(crate) mod wire;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::net::{TcpSocket, TcpStream};
use wire::{exchange, Exchange};

/// Response heads larger than the services' own request-head limit mean a broken server.
pub const HTTP_HEAD_BYTES_MAX: usize = 16 * 1024;
/// Resource files are a few MiB at most; a larger body means a broken server, and the
/// bound keeps one bad answer from exhausting memory across thousands of clients.
pub const HTTP_BODY_BYTES_MAX: u64 = 16 * 1024 * 1024;
/// The services send a handful of headers; more than this is not a CatWar server.
const HTTP_HEADERS_MAX: usize = 32;
/// A request on loopback that takes longer than this (connect, TLS handshake and a MiB
/// body included) is stuck, not slow; it counts as a `timeout` error.
pub const REQUEST_TIMEOUT_MS: u64 = 10_000;
/// Each read asks for this much at once: large enough for a head in one read.
const READ_CHUNK_BYTES: usize = 8 * 1024;
/// A virtual client talks to storage, a few file nodes and the lobby; keeping more idle
/// connections per client would multiply file descriptors across thousands of clients.
pub const CLIENT_CONNECTIONS_MAX: usize = 4;

/// Why a request failed before a complete response arrived.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The TCP connection could not be made (refused, unreachable, bind failed).
    #[error("connect failed")]
    Connect(#[source] io::Error),
    /// The TLS handshake failed, for example because the certificate did not verify.
    #[error("TLS handshake failed")]
    Tls(#[source] native_tls::Error),
    /// The request did not complete within [`REQUEST_TIMEOUT_MS`].
    #[error("no complete response within {REQUEST_TIMEOUT_MS} ms")]
    Timeout,
    /// Reading or writing failed, for example a reset.
    #[error("i/o error")]
    Io(#[source] io::Error),
    /// The server closed the connection before the response was complete.
    #[error("connection closed before the response was complete")]
    Closed,
    /// The response was not valid HTTP or broke a bound.
    #[error("bad response: {0}")]
    BadResponse(String),
}

impl HttpError {
    /// The error code recorded in metrics: `connect`, `tls`, `timeout`, `io` or
    /// `bad_response`.
    pub fn code(&self) -> &'static str {
        match self {
            HttpError::Connect(_) => "connect",
            HttpError::Tls(_) => "tls",
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

/// The methods the CatWar services use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Reads; idempotent, so safe to resend on a fresh connection.
    Get,
    /// Logins, refreshes, match starts; never resent automatically.
    Post,
}

/// A request to send.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// The method.
    pub method: Method,
    /// The request target, already percent-encoded.
    pub target: &'a str,
    /// A token for `Authorization: Bearer`.
    pub bearer: Option<&'a str>,
    /// A JSON body.
    pub json: Option<&'a [u8]>,
}

impl<'a> Request<'a> {
    /// `GET target`.
    pub fn get(target: &'a str) -> Request<'a> {
        Request {
            method: Method::Get,
            target,
            bearer: None,
            json: None,
        }
    }

    /// `POST target` without a body.
    pub fn post(target: &'a str) -> Request<'a> {
        Request {
            method: Method::Post,
            ..Request::get(target)
        }
    }

    /// The same request with `Authorization: Bearer token`.
    pub fn bearer(self, token: &'a str) -> Request<'a> {
        Request {
            bearer: Some(token),
            ..self
        }
    }

    /// The same request with a JSON body.
    pub fn json(self, body: &'a [u8]) -> Request<'a> {
        Request {
            json: Some(body),
            ..self
        }
    }

    /// The request as sent to `host`; `close` asks the server to close the connection
    /// after answering.
    pub fn encode(&self, host: SocketAddr, close: bool) -> Vec<u8> {
        let method = match self.method {
            Method::Get => "GET",
            Method::Post => "POST",
        };
        let mut head = format!(
            "{method} {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: catwar-sim/{}\r\n\
             Accept: */*\r\n",
            self.target,
            env!("CARGO_PKG_VERSION")
        );
        if let Some(token) = self.bearer {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        if let Some(body) = self.json {
            head.push_str("Content-Type: application/json\r\n");
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        } else if self.method == Method::Post {
            head.push_str("Content-Length: 0\r\n");
        }
        if close {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(self.json.unwrap_or_default());
        bytes
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
            // Allocated by the first read: tens of thousands of clients that have not
            // sent anything yet should not hold a read buffer each.
            buf: Vec::new(),
        }
    }

    /// Closes every kept-alive connection and frees the read buffer: a client about to
    /// play a match or to stay away for long holds nothing it does not use, as a real
    /// game client, and a server would time those connections out anyway.
    pub fn close_idle(&mut self) {
        self.idle.clear();
        self.buf = Vec::new();
    }

    /// The address new connections are made from.
    pub fn local_ip(&self) -> Option<IpAddr> {
        self.local_ip
    }

    /// Makes further connections from `ip`; open connections from another address are
    /// closed, so that no request leaves from the old one.
    pub fn set_local_ip(&mut self, ip: IpAddr) {
        if self.local_ip != Some(ip) {
            self.idle.clear();
            self.local_ip = Some(ip);
        }
    }

    /// Sends `GET target` to `addr` and reads the whole response.
    pub async fn get(&mut self, addr: SocketAddr, target: &str) -> Result<Response, HttpError> {
        self.send(addr, &Request::get(target)).await
    }

    /// Sends `request` to `addr` and reads the whole response.
    ///
    /// An idle keep-alive connection is reused when the server has not closed it. If the
    /// server closes it anyway before answering, a GET is resent once on a fresh
    /// connection (GET is idempotent); a POST fails instead, since the server may have
    /// acted on it.
    pub async fn send(
        &mut self,
        addr: SocketAddr,
        request: &Request<'_>,
    ) -> Result<Response, HttpError> {
        let deadline = Duration::from_millis(REQUEST_TIMEOUT_MS);
        tokio::time::timeout(deadline, self.send_untimed(addr, request))
            .await
            .unwrap_or(Err(HttpError::Timeout))
    }

    async fn send_untimed(
        &mut self,
        addr: SocketAddr,
        request: &Request<'_>,
    ) -> Result<Response, HttpError> {
        let bytes = request.encode(addr, false);
        if let Some(mut stream) = self.take_idle(addr) {
            match exchange(&mut stream, &bytes, &mut self.buf).await {
                Ok((response, keep_alive)) => {
                    self.keep(addr, stream, keep_alive);
                    return Ok(response);
                }
                Err(Exchange {
                    error,
                    response_started: false,
                }) if request.method != Method::Get => return Err(error),
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
        let mut stream = connect(self.local_ip, addr)
            .await
            .map_err(HttpError::Connect)?;
        let (response, keep_alive) = exchange(&mut stream, &bytes, &mut self.buf)
            .await
            .map_err(|e| e.error)?;
        self.keep(addr, stream, keep_alive);
        Ok(response)
    }

    /// An idle connection to `addr` that the server has not closed, if any.
    fn take_idle(&mut self, addr: SocketAddr) -> Option<TcpStream> {
        while let Some(position) = self.idle.iter().position(|(a, _)| *a == addr) {
            let (_, stream) = self.idle.remove(position);
            // An idle connection has nothing to read: end of stream means the server
            // closed it, and stray bytes mean it is out of step; either way it is dropped.
            let mut probe = [0; 1];
            if matches!(stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            {
                return Some(stream);
            }
        }
        None
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

/// Opens a TCP connection to `addr` from `local_ip` (the system's choice when `None`).
/// Every failure here is a failure to connect; callers name it in their own error type.
pub(crate) async fn connect(local_ip: Option<IpAddr>, addr: SocketAddr) -> io::Result<TcpStream> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }?;
    if let Some(ip) = local_ip {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(addr).await?;
    // Requests are small and written in one go; waiting to coalesce them only adds latency.
    stream.set_nodelay(true)?;
    Ok(stream)
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
