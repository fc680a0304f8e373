//! One connection of the HTTP loop: its byte stream (plain TCP, or TLS driven without
//! blocking), its buffers, and the read, write and queueing steps the loop runs on it.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use mio::net::TcpStream;
use native_tls::{HandshakeError, MidHandshakeTlsStream, TlsAcceptor, TlsStream};

use super::{interrupted, would_block, INBUF_BYTES_MAX};
use crate::runtime::http::{Body, Response};

/// The acceptor of a TLS server (native-tls gives it no `Debug`).
pub(super) struct Tls(pub(super) TlsAcceptor);

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsAcceptor")
    }
}

/// A connection's byte stream: plain TCP, or TLS driven without blocking. The handshake
/// advances on readiness events like any read, so a slow TLS client holds no thread.
#[derive(Debug)]
pub(super) enum Transport {
    Plain(TcpStream),
    /// A TLS connection whose client has sent nothing yet.
    Hello(Option<TcpStream>),
    Handshaking(Option<MidHandshakeTlsStream<TcpStream>>),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Transport {
    pub(super) fn socket(&mut self) -> Option<&mut TcpStream> {
        match self {
            Transport::Plain(s) => Some(s),
            Transport::Hello(s) => s.as_mut(),
            Transport::Handshaking(mid) => mid.as_mut().map(|m| m.get_mut()),
            Transport::Tls(t) => Some(t.get_mut()),
        }
    }

    /// Advances a TLS handshake; true once the stream carries application data.
    pub(super) fn ready(&mut self, tls: Option<&Tls>) -> io::Result<bool> {
        if let Transport::Hello(waiting) = self {
            // The TLS session and its buffers (about 40 KiB) are made once the client's
            // first bytes are in: until then a connection costs its socket only.
            let Some(stream) = waiting.take_if(|s| has_bytes(s).unwrap_or(true)) else {
                return Ok(false);
            };
            let Some(Tls(acceptor)) = tls else {
                return Err(io::Error::other("a TLS connection on a loop without TLS"));
            };
            *self = match acceptor.accept(stream) {
                Ok(tls) => Transport::Tls(Box::new(tls)),
                Err(HandshakeError::WouldBlock(mid)) => Transport::Handshaking(Some(mid)),
                Err(HandshakeError::Failure(err)) => return Err(io::Error::other(err)),
            };
            return Ok(matches!(self, Transport::Tls(_)));
        }
        let Transport::Handshaking(mid) = self else {
            return Ok(true);
        };
        let Some(pending) = mid.take() else {
            return Err(io::Error::other("handshake already failed"));
        };
        match pending.handshake() {
            Ok(tls) => {
                *self = Transport::Tls(Box::new(tls));
                Ok(true)
            }
            Err(HandshakeError::WouldBlock(pending)) => {
                *mid = Some(pending);
                Ok(false)
            }
            Err(HandshakeError::Failure(err)) => Err(io::Error::other(err)),
        }
    }
}

/// True once the peer has sent a byte or closed; an error means the socket failed, and
/// the handshake that follows reports it.
fn has_bytes(stream: &TcpStream) -> io::Result<bool> {
    match stream.peek(&mut [0u8; 1]) {
        Ok(_) => Ok(true),
        Err(e) if would_block(&e) || interrupted(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf),
            Transport::Tls(t) => t.read(buf),
            Transport::Hello(_) | Transport::Handshaking(_) => {
                Err(io::ErrorKind::WouldBlock.into())
            }
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.write(buf),
            Transport::Tls(t) => t.write(buf),
            Transport::Hello(_) | Transport::Handshaking(_) => {
                Err(io::ErrorKind::WouldBlock.into())
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(s) => s.flush(),
            Transport::Tls(t) => t.flush(),
            Transport::Hello(_) | Transport::Handshaking(_) => Ok(()),
        }
    }
}

/// A request handed to a job, whose answer the connection waits for before it parses
/// the next one.
#[derive(Debug, Clone, Copy)]
pub(super) struct Awaiting {
    /// Whether the connection stays open after the answer.
    pub(super) keep_alive: bool,
    /// The request's route label, for the answer's metrics.
    pub(super) route: &'static str,
    /// When the request was handed to the handler.
    pub(super) since: Instant,
}

#[derive(Debug)]
pub(super) struct Conn {
    pub(super) stream: Transport,
    pub(super) peer: SocketAddr,
    pub(super) gen: u64,
    pub(super) inbuf: Vec<u8>,
    pub(super) out: VecDeque<Chunk>,
    pub(super) awaiting: Option<Awaiting>,
    pub(super) close_after_flush: bool,
    pub(super) read_closed: bool,
    pub(super) request_started: Option<Instant>,
    pub(super) last_progress: Instant,
}

#[derive(Debug)]
pub(super) enum Chunk {
    Owned(Vec<u8>, usize),
    Shared(Arc<[u8]>, std::ops::Range<usize>),
}

impl Chunk {
    fn remaining(&self) -> &[u8] {
        match self {
            Chunk::Owned(v, pos) => &v[*pos..],
            Chunk::Shared(buf, range) => &buf[range.clone()],
        }
    }

    fn advance(&mut self, n: usize) {
        match self {
            Chunk::Owned(_, pos) => *pos += n,
            Chunk::Shared(_, range) => range.start += n,
        }
    }
}

/// Reads until `WouldBlock` or the buffer cap. Returns whether reading stopped at the cap
/// (more may be waiting) and marks a peer's end of stream.
pub(super) fn read_available(conn: &mut Conn, chunk: &mut [u8]) -> io::Result<bool> {
    while !conn.read_closed {
        if conn.inbuf.len() >= INBUF_BYTES_MAX {
            return Ok(true);
        }
        match conn.stream.read(chunk) {
            Ok(0) => conn.read_closed = true,
            Ok(n) => {
                if conn.inbuf.is_empty() && conn.request_started.is_none() {
                    conn.request_started = Some(Instant::now());
                }
                conn.inbuf.extend_from_slice(&chunk[..n]);
                conn.last_progress = Instant::now();
            }
            Err(err) if would_block(&err) => break,
            Err(err) if interrupted(&err) => continue,
            Err(err) => return Err(err),
        }
    }
    Ok(false)
}

/// Writes queued output until `WouldBlock`.
pub(super) fn flush(conn: &mut Conn) -> io::Result<()> {
    while let Some(chunk) = conn.out.front_mut() {
        let bytes = chunk.remaining();
        if bytes.is_empty() {
            conn.out.pop_front();
            continue;
        }
        match conn.stream.write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                chunk.advance(n);
                conn.last_progress = Instant::now();
            }
            Err(err) if would_block(&err) => return Ok(()),
            Err(err) if interrupted(&err) => continue,
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

pub(super) fn queue(conn: &mut Conn, response: Response, keep_alive: bool) {
    let keep_alive = keep_alive && !response.close;
    let mut head = response.head_bytes(keep_alive);
    // An owned body travels in the head's buffer: one write per answer, not two.
    match response.body {
        Body::Empty => conn.out.push_back(Chunk::Owned(head, 0)),
        Body::Owned(bytes) => {
            head.extend_from_slice(&bytes);
            conn.out.push_back(Chunk::Owned(head, 0));
        }
        Body::Shared(buf, range) => {
            conn.out.push_back(Chunk::Owned(head, 0));
            conn.out.push_back(Chunk::Shared(buf, range));
        }
    }
    if !keep_alive {
        conn.close_after_flush = true;
    }
}

/// Bytes queued for the client and not yet written.
pub(super) fn queued_bytes(conn: &Conn) -> usize {
    conn.out.iter().map(|chunk| chunk.remaining().len()).sum()
}

/// Answers a connection over the cap with a 503 and closes it. The write is best effort:
/// a fresh socket's send buffer takes a small answer at once.
pub(super) fn refuse(stream: &mut TcpStream) {
    let response = Response::error(503, "busy", "connection limit reached")
        .with_header("Retry-After", "1")
        .closing();
    let mut bytes = response.head_bytes(false);
    if let Body::Owned(body) = &response.body {
        bytes.extend_from_slice(body);
    }
    let _ = stream.write(&bytes);
}
