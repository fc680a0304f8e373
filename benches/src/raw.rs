//! A blocking HTTP/1.1 client over plain sockets: write a request, read one response by
//! its `Content-Length`. It does no more than a benchmark needs, so the server's work
//! dominates what a loopback benchmark measures.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};

/// Bytes asked of the socket per `read`: a file node's chunk arrives in few reads.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Headers parsed in a response; CatWar's services send a handful.
const RESPONSE_HEADERS_MAX: usize = 32;

/// `GET target` with a bearer token when given, as a game client sends it.
pub fn get(target: &str, bearer: Option<&str>) -> Vec<u8> {
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    format!(
        "GET {target} HTTP/1.1\r\nHost: catwar\r\nUser-Agent: catwar-bench\r\nAccept: application/json\r\n{auth}\r\n"
    )
    .into_bytes()
}

/// `POST target` with a JSON body.
pub fn post_json(target: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {target} HTTP/1.1\r\nHost: catwar\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A keep-alive connection and the bytes read past the last response.
#[derive(Debug)]
pub struct Conn<S = TcpStream> {
    stream: S,
    pending: Vec<u8>,
    chunk: Box<[u8]>,
}

impl Conn {
    /// Connects to `addr` with Nagle off, as the services' clients do.
    pub fn connect(addr: SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        Ok(Conn::over(stream))
    }
}

impl<S: Read + Write> Conn<S> {
    /// A connection over any stream, such as a TLS one.
    pub fn over(stream: S) -> Conn<S> {
        Conn {
            stream,
            pending: Vec::new(),
            chunk: vec![0u8; READ_CHUNK_BYTES].into_boxed_slice(),
        }
    }

    /// Writes a whole request.
    pub fn send(&mut self, request: &[u8]) -> io::Result<()> {
        self.stream.write_all(request)
    }

    /// Reads one response and returns its status and body length; the body is dropped.
    pub fn receive(&mut self) -> io::Result<(u16, usize)> {
        loop {
            if let Some((status, head_len, body_len)) = head(&self.pending)? {
                while self.pending.len() < head_len + body_len {
                    self.fill()?;
                }
                self.pending.drain(..head_len + body_len);
                return Ok((status, body_len));
            }
            self.fill()?;
        }
    }

    /// One request and its response; a status other than 200 is an error, since a
    /// benchmark that measures refusals measures the wrong thing.
    pub fn exchange(&mut self, request: &[u8]) -> io::Result<usize> {
        self.send(request)?;
        match self.receive()? {
            (200, body_len) => Ok(body_len),
            (status, _) => Err(io::Error::other(format!("status {status}"))),
        }
    }

    fn fill(&mut self) -> io::Result<()> {
        let n = self.stream.read(&mut self.chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.pending.extend_from_slice(&self.chunk[..n]);
        Ok(())
    }
}

/// The status, head length and body length of a complete response head at the start of
/// `bytes`, or `None` while the head is incomplete.
fn head(bytes: &[u8]) -> io::Result<Option<(u16, usize, usize)>> {
    let mut headers = [httparse::EMPTY_HEADER; RESPONSE_HEADERS_MAX];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
    };
    let body_len = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
        .unwrap_or(0);
    Ok(Some((response.code.unwrap_or(0), head_len, body_len)))
}
