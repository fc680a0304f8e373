//! The one mio event loop behind every HTTP service.
//!
//! It follows the shape of mio's `tcp_server` example: the listener and a waker have
//! constant tokens, connections live in a slab, and on readiness a connection is read or
//! written until `WouldBlock`. HTTP/1.1 framing (httparse heads, `Content-Length` bodies,
//! keep-alive, pipelining) and the limits of SPEC §3 are enforced here once, so a service
//! only maps a [`Request`] to a [`Reply`].
//!
//! Slow work never runs on the loop: a handler calls [`Ctx::defer`], hands the
//! [`Responder`] to a job pool, and the pool's answer comes back through the channel and
//! the [`Waker`]. While a deferred answer is outstanding the connection parses no further
//! request, so pipelined answers keep their order.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use native_tls::{HandshakeError, MidHandshakeTlsStream, TlsAcceptor, TlsStream};
use slab::Slab;

use crate::http::{Body, Request, Response};

/// Largest request head (request line and headers) accepted; SPEC §3 answers 431 above it.
pub const HEAD_BYTES_MAX: usize = 16 * 1024;
/// Largest request body accepted; SPEC §3 answers 413 above it.
pub const BODY_BYTES_MAX: usize = 64 * 1024;
/// Most headers in one request; more is treated like an oversized head (431).
pub const HEADERS_COUNT_MAX: usize = 64;
/// Default cap on open connections per service. A process may hold 20,000 descriptors on
/// the target machines, and each service keeps headroom for its own outgoing sockets.
pub const CONNS_MAX_DEFAULT: usize = 16_000;
/// A client gets this long to finish a request once its first byte arrived, so a slow
/// client that never finishes cannot hold a connection forever.
pub const REQUEST_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// An idle keep-alive connection is closed after this long.
pub const IDLE_TIMEOUT_MS_DEFAULT: u64 = 120_000;
/// A client that accepts no response bytes for this long is dropped.
pub const WRITE_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// How often timeouts and the stop flag are checked; it bounds how late a timeout fires.
const SWEEP_INTERVAL_MS: u64 = 100;
/// Unparsed input buffered per connection: one largest request, so pipelining cannot make
/// a connection buffer without bound.
const INBUF_BYTES_MAX: usize = HEAD_BYTES_MAX + BODY_BYTES_MAX;
/// Bytes read per `read` call.
const READ_CHUNK_BYTES: usize = 16 * 1024;
/// Readiness events handled per `poll` call.
const EVENTS_CAPACITY: usize = 1024;

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);

/// Limits of one server; the defaults are the constants above.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Open connections; new ones beyond it get a 503 and are closed.
    pub conns_max: usize,
    /// See [`REQUEST_TIMEOUT_MS_DEFAULT`].
    pub request_timeout: Duration,
    /// See [`IDLE_TIMEOUT_MS_DEFAULT`].
    pub idle_timeout: Duration,
    /// See [`WRITE_TIMEOUT_MS_DEFAULT`].
    pub write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            conns_max: CONNS_MAX_DEFAULT,
            request_timeout: Duration::from_millis(REQUEST_TIMEOUT_MS_DEFAULT),
            idle_timeout: Duration::from_millis(IDLE_TIMEOUT_MS_DEFAULT),
            write_timeout: Duration::from_millis(WRITE_TIMEOUT_MS_DEFAULT),
        }
    }
}

/// What a service does with a request.
pub trait Handler: Send + 'static {
    /// Maps one request to an answer now, or to [`Reply::Later`] after [`Ctx::defer`].
    fn handle(&mut self, req: Request, ctx: &mut Ctx<'_>) -> Reply;
}

/// A handler's answer.
#[derive(Debug)]
pub enum Reply {
    /// Send this response now.
    Now(Response),
    /// The answer comes later through the [`Responder`] taken with [`Ctx::defer`].
    Later,
}

/// Per-request context given to a [`Handler`].
#[derive(Debug)]
pub struct Ctx<'a> {
    key: usize,
    gen: u64,
    tx: &'a Sender<Completion>,
    waker: &'a Arc<Waker>,
    deferred: bool,
    open_conns: usize,
}

impl Ctx<'_> {
    /// Takes the responder for this request; the handler must then return
    /// [`Reply::Later`].
    pub fn defer(&mut self) -> Responder {
        self.deferred = true;
        Responder {
            key: self.key,
            gen: self.gen,
            tx: self.tx.clone(),
            waker: Arc::clone(self.waker),
            unanswered: None,
            sent: false,
        }
    }

    /// Connections open on this server right now (file nodes report it as their load).
    pub fn open_conns(&self) -> usize {
        self.open_conns
    }
}

#[derive(Debug)]
struct Completion {
    key: usize,
    gen: u64,
    response: Response,
}

/// Sends a deferred answer back to the event loop from any thread.
#[derive(Debug)]
pub struct Responder {
    key: usize,
    gen: u64,
    tx: Sender<Completion>,
    waker: Arc<Waker>,
    unanswered: Option<Response>,
    sent: bool,
}

impl Responder {
    /// Sets the answer sent if this responder is dropped without [`Responder::send`]
    /// (by default a 500). A job queue that refuses a job drops it, so the caller sets
    /// 503 `busy` here before submitting.
    pub fn if_unanswered(mut self, response: Response) -> Responder {
        self.unanswered = Some(response);
        self
    }

    /// Delivers the answer and wakes the loop. A connection closed meanwhile ignores it.
    pub fn send(mut self, response: Response) {
        self.deliver(response);
    }

    fn deliver(&mut self, response: Response) {
        self.sent = true;
        let completion = Completion {
            key: self.key,
            gen: self.gen,
            response,
        };
        // Both fail only when the loop has stopped, and then nobody waits for the answer.
        if self.tx.send(completion).is_ok() {
            let _ = self.waker.wake();
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        // A job that panicked or forgot to answer must not leave its client hanging.
        if !self.sent {
            let response = self
                .unanswered
                .take()
                .unwrap_or_else(|| Response::error(500, "internal", "the request was dropped"));
            self.deliver(response);
        }
    }
}

/// Stops a running server from any thread.
#[derive(Debug, Clone)]
pub struct Stopper {
    flag: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl Stopper {
    /// Asks the loop to stop; it returns after closing every connection.
    pub fn stop(&self) {
        self.flag.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
    }

    /// The flag itself, for signal handlers that may only store to an atomic.
    pub fn flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.flag)
    }
}

/// A server running on its own thread.
#[derive(Debug)]
pub struct ServerHandle {
    addr: SocketAddr,
    stopper: Stopper,
    thread: JoinHandle<io::Result<()>>,
}

impl ServerHandle {
    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A stopper for this server.
    pub fn stopper(&self) -> Stopper {
        self.stopper.clone()
    }

    /// Stops the server and waits for its thread.
    pub fn shutdown(self) -> io::Result<()> {
        self.stopper.stop();
        self.join()
    }

    /// Waits for the server thread to end (after a stop through a [`Stopper`]).
    pub fn join(self) -> io::Result<()> {
        self.thread
            .join()
            .map_err(|_| io::Error::other("server thread panicked"))?
    }
}

/// One HTTP server: a listener, a handler and the connections.
#[derive(Debug)]
pub struct Server<H> {
    poll: Poll,
    listener: TcpListener,
    handler: H,
    conns: Slab<Conn>,
    limits: Limits,
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    tx: Sender<Completion>,
    rx: Receiver<Completion>,
    next_gen: u64,
    tls: Option<Tls>,
}

/// The acceptor of a TLS server (native-tls gives it no `Debug`).
struct Tls(TlsAcceptor);

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsAcceptor")
    }
}

/// A connection's byte stream: plain TCP, or TLS driven without blocking. The handshake
/// advances on readiness events like any read, so a slow TLS client holds no thread.
#[derive(Debug)]
enum Transport {
    Plain(TcpStream),
    Handshaking(Option<MidHandshakeTlsStream<TcpStream>>),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Transport {
    fn socket(&mut self) -> Option<&mut TcpStream> {
        match self {
            Transport::Plain(s) => Some(s),
            Transport::Handshaking(mid) => mid.as_mut().map(|m| m.get_mut()),
            Transport::Tls(t) => Some(t.get_mut()),
        }
    }

    /// Advances a TLS handshake; true once the stream carries application data.
    fn ready(&mut self) -> io::Result<bool> {
        let Transport::Handshaking(mid) = self else { return Ok(true) };
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

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf),
            Transport::Tls(t) => t.read(buf),
            Transport::Handshaking(_) => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.write(buf),
            Transport::Tls(t) => t.write(buf),
            Transport::Handshaking(_) => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(s) => s.flush(),
            Transport::Tls(t) => t.flush(),
            Transport::Handshaking(_) => Ok(()),
        }
    }
}

#[derive(Debug)]
struct Conn {
    stream: Transport,
    peer: SocketAddr,
    gen: u64,
    inbuf: Vec<u8>,
    out: VecDeque<Chunk>,
    awaiting: Option<bool>,
    close_after_flush: bool,
    read_closed: bool,
    request_started: Option<Instant>,
    last_progress: Instant,
}

#[derive(Debug)]
enum Chunk {
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

impl<H: Handler> Server<H> {
    /// Wraps an already bound listener (tests and `up` bind port 0 or a chosen port).
    pub fn new(listener: std::net::TcpListener, handler: H, limits: Limits) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        let mut listener = TcpListener::from_std(listener);
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = mpsc::channel();
        Ok(Server {
            poll,
            listener,
            handler,
            conns: Slab::with_capacity(limits.conns_max.min(1024)),
            limits,
            waker,
            stop: Arc::new(AtomicBool::new(false)),
            tx,
            rx,
            next_gen: 0,
            tls: None,
        })
    }

    /// Serves TLS with this acceptor instead of plain TCP.
    pub fn with_tls(mut self, acceptor: TlsAcceptor) -> Self {
        self.tls = Some(Tls(acceptor));
        self
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// A stopper for this server.
    pub fn stopper(&self) -> Stopper {
        Stopper {
            flag: Arc::clone(&self.stop),
            waker: Arc::clone(&self.waker),
        }
    }

    /// Runs the loop on a new thread named `name`.
    pub fn spawn(self, name: &str) -> io::Result<ServerHandle> {
        let addr = self.local_addr()?;
        let stopper = self.stopper();
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || self.run())?;
        Ok(ServerHandle {
            addr,
            stopper,
            thread,
        })
    }

    /// Runs the loop on this thread until stopped.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        let sweep_every = Duration::from_millis(SWEEP_INTERVAL_MS);
        let mut last_sweep = Instant::now();
        loop {
            if let Err(err) = self.poll.poll(&mut events, Some(sweep_every)) {
                if interrupted(&err) {
                    continue;
                }
                return Err(err);
            }
            if self.stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept()?,
                    WAKER => self.complete_deferred(),
                    Token(key) => self.drive(key),
                }
            }
            if last_sweep.elapsed() >= sweep_every {
                self.sweep();
                last_sweep = Instant::now();
            }
        }
    }

    fn accept(&mut self) -> io::Result<()> {
        while let Some((mut stream, peer)) = accept_one(&self.listener) {
            if self.conns.len() >= self.limits.conns_max {
                // A TLS client could not read a plaintext answer; it just sees the close.
                if self.tls.is_none() {
                    refuse(&mut stream);
                }
                continue;
            }
            let _ = stream.set_nodelay(true);
            let entry = self.conns.vacant_entry();
            let key = entry.key();
            self.poll.registry().register(
                &mut stream,
                Token(key),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            let (stream, handshake_started) = match &self.tls {
                None => (Transport::Plain(stream), None),
                Some(Tls(acceptor)) => match acceptor.accept(stream) {
                    Ok(tls) => (Transport::Tls(Box::new(tls)), None),
                    Err(HandshakeError::WouldBlock(mid)) => (Transport::Handshaking(Some(mid)), Some(Instant::now())),
                    // The socket is closed with the failed handshake; epoll forgets it.
                    Err(HandshakeError::Failure(_)) => continue,
                },
            };
            self.next_gen += 1;
            entry.insert(Conn {
                stream,
                peer,
                gen: self.next_gen,
                inbuf: Vec::new(),
                out: VecDeque::new(),
                awaiting: None,
                close_after_flush: false,
                read_closed: false,
                // The request timeout covers a TLS handshake too.
                request_started: handshake_started,
                last_progress: Instant::now(),
            });
        }
        Ok(())
    }

    /// Reads, answers and writes as far as possible; closes the connection when done.
    fn drive(&mut self, key: usize) {
        if !self.conns.contains(key) {
            return;
        }
        match self.conns[key].stream.ready() {
            Ok(true) => {}
            Ok(false) => return,
            Err(_) => return self.close(key),
        }
        loop {
            let read_more = match read_available(&mut self.conns[key]) {
                Ok(more) => more,
                Err(_) => return self.close(key),
            };
            self.process(key);
            let conn = &mut self.conns[key];
            if flush(conn).is_err() {
                return self.close(key);
            }
            let conn = &self.conns[key];
            let done_writing = conn.out.is_empty();
            if done_writing && conn.close_after_flush {
                return self.close(key);
            }
            if done_writing && conn.read_closed && conn.awaiting.is_none() {
                return self.close(key);
            }
            // Reading stopped at the buffer cap; answering may have made room.
            if !read_more || conn.inbuf.len() >= INBUF_BYTES_MAX || conn.awaiting.is_some() {
                return;
            }
        }
    }

    /// Parses and dispatches every complete request in the buffer.
    fn process(&mut self, key: usize) {
        let open_conns = self.conns.len();
        let conn = &mut self.conns[key];
        while conn.awaiting.is_none() && !conn.close_after_flush && !conn.inbuf.is_empty() {
            let parsed = match parse_request(&conn.inbuf, conn.peer) {
                Parse::Partial => {
                    if conn.inbuf.len() > HEAD_BYTES_MAX {
                        queue(conn, Response::error(431, "head_too_large", "request head exceeds 16 KiB").closing(), false);
                    }
                    return;
                }
                Parse::Reject(response) => {
                    conn.inbuf.clear();
                    queue(conn, response.closing(), false);
                    return;
                }
                Parse::Complete(parsed) => parsed,
            };
            let total = parsed.head_len + parsed.content_length;
            if conn.inbuf.len() < total {
                return;
            }
            let mut request = parsed.request;
            request.body = conn.inbuf[parsed.head_len..total].to_vec();
            conn.inbuf.drain(..total);
            conn.request_started = (!conn.inbuf.is_empty()).then(Instant::now);
            let mut ctx = Ctx {
                key,
                gen: conn.gen,
                tx: &self.tx,
                waker: &self.waker,
                deferred: false,
                open_conns,
            };
            match self.handler.handle(request, &mut ctx) {
                Reply::Now(response) => queue(conn, response, parsed.keep_alive),
                Reply::Later if ctx.deferred => conn.awaiting = Some(parsed.keep_alive),
                Reply::Later => queue(
                    conn,
                    Response::error(500, "internal", "handler deferred without a responder"),
                    parsed.keep_alive,
                ),
            }
        }
    }

    fn complete_deferred(&mut self) {
        while let Ok(done) = self.rx.try_recv() {
            let Some(conn) = self.conns.get_mut(done.key) else {
                continue;
            };
            if conn.gen != done.gen {
                continue;
            }
            let Some(keep_alive) = conn.awaiting.take() else {
                continue;
            };
            queue(conn, done.response, keep_alive);
            conn.last_progress = Instant::now();
            self.drive(done.key);
        }
    }

    /// Applies the request, idle and write timeouts.
    fn sweep(&mut self) {
        let now = Instant::now();
        let limits = &self.limits;
        let mut expired = Vec::new();
        for (key, conn) in self.conns.iter_mut() {
            if conn.awaiting.is_some() {
                continue;
            }
            let stalled = now.duration_since(conn.last_progress);
            if !conn.out.is_empty() {
                if stalled >= limits.write_timeout {
                    expired.push(key);
                }
            } else if let Some(started) = conn.request_started {
                if now.duration_since(started) >= limits.request_timeout {
                    conn.inbuf.clear();
                    let detail = format!(
                        "request not completed within {} ms",
                        limits.request_timeout.as_millis()
                    );
                    queue(conn, Response::error(408, "request_timeout", &detail).closing(), false);
                    let _ = flush(conn);
                    expired.push(key);
                }
            } else if stalled >= limits.idle_timeout {
                expired.push(key);
            }
        }
        for key in expired {
            self.close(key);
        }
    }

    fn close(&mut self, key: usize) {
        if self.conns.contains(key) {
            let mut conn = self.conns.remove(key);
            if let Some(socket) = conn.stream.socket() {
                let _ = self.poll.registry().deregister(socket);
            }
        }
    }
}

/// Reads until `WouldBlock` or the buffer cap. Returns whether reading stopped at the cap
/// (more may be waiting) and marks a peer's end of stream.
fn read_available(conn: &mut Conn) -> io::Result<bool> {
    let mut chunk = [0u8; READ_CHUNK_BYTES];
    while !conn.read_closed {
        if conn.inbuf.len() >= INBUF_BYTES_MAX {
            return Ok(true);
        }
        match conn.stream.read(&mut chunk) {
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
fn flush(conn: &mut Conn) -> io::Result<()> {
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

fn queue(conn: &mut Conn, response: Response, keep_alive: bool) {
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

/// Answers a connection over the cap with a 503 and closes it. The write is best effort:
/// a fresh socket's send buffer takes a small answer at once.
fn refuse(stream: &mut TcpStream) {
    let response = Response::error(503, "busy", "connection limit reached")
        .with_header("Retry-After", "1")
        .closing();
    let mut bytes = response.head_bytes(false);
    if let Body::Owned(body) = &response.body {
        bytes.extend_from_slice(body);
    }
    let _ = stream.write(&bytes);
}

struct Parsed {
    head_len: usize,
    content_length: usize,
    keep_alive: bool,
    request: Request,
}

enum Parse {
    Partial,
    Complete(Parsed),
    Reject(Response),
}

/// Parses one request head with httparse and checks the limits it can check before the
/// body arrives. The returned request's body is filled in by the caller.
fn parse_request(buf: &[u8], peer: SocketAddr) -> Parse {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_COUNT_MAX];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Partial) => return Parse::Partial,
        Ok(httparse::Status::Complete(n)) => n,
        Err(httparse::Error::TooManyHeaders) => {
            return Parse::Reject(Response::error(
                431,
                "head_too_large",
                &format!("more than {HEADERS_COUNT_MAX} headers"),
            ))
        }
        Err(err) => {
            return Parse::Reject(Response::error(
                400,
                "bad_request",
                &format!("malformed request head: {err}"),
            ))
        }
    };
    if head_len > HEAD_BYTES_MAX {
        return Parse::Reject(Response::error(431, "head_too_large", "request head exceeds 16 KiB"));
    }
    let mut content_length = 0usize;
    let mut keep_alive = req.version == Some(1);
    let mut owned = Vec::with_capacity(req.headers.len());
    for header in req.headers.iter() {
        let name = header.name.to_ascii_lowercase();
        let Ok(value) = std::str::from_utf8(header.value) else {
            return Parse::Reject(Response::error(400, "bad_request", &format!("header {name}: not UTF-8")));
        };
        match name.as_str() {
            "content-length" => match value.trim().parse::<usize>() {
                Ok(n) => content_length = n,
                Err(_) => {
                    return Parse::Reject(Response::error(400, "bad_request", "header content-length: not a number"))
                }
            },
            "transfer-encoding" => {
                return Parse::Reject(Response::error(
                    411,
                    "length_required",
                    "header transfer-encoding: chunked bodies are not accepted, send Content-Length",
                ))
            }
            "connection" => {
                let value = value.to_ascii_lowercase();
                if value.contains("close") {
                    keep_alive = false;
                } else if value.contains("keep-alive") {
                    keep_alive = true;
                }
            }
            _ => {}
        }
        owned.push((name, value.to_string()));
    }
    if content_length > BODY_BYTES_MAX {
        return Parse::Reject(Response::error(
            413,
            "body_too_large",
            &format!("content-length {content_length} exceeds {BODY_BYTES_MAX} bytes"),
        ));
    }
    // httparse guarantees method and path on a complete parse.
    let target = req.path.unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Parse::Complete(Parsed {
        head_len,
        content_length,
        keep_alive,
        request: Request {
            method: req.method.unwrap_or("GET").to_string(),
            path: path.to_string(),
            query: query.to_string(),
            headers: owned,
            body: Vec::new(),
            peer,
        },
    })
}

/// Accepts one pending connection, or `None` once none is left. Running out of
/// descriptors or a reset before accept must not end a service: the client sees a
/// refused or reset connection and the loop goes on.
pub fn accept_one(listener: &TcpListener) -> Option<(TcpStream, SocketAddr)> {
    loop {
        match listener.accept() {
            Ok(pair) => return Some(pair),
            Err(err) if would_block(&err) => return None,
            Err(err) if interrupted(&err) => continue,
            Err(err) => {
                tracing::warn!(%err, "accept failed");
                return None;
            }
        }
    }
}

/// True for the error a non-blocking socket returns when it has nothing to give.
pub fn would_block(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::WouldBlock
}

/// True for a system call interrupted by a signal, which is retried.
pub fn interrupted(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::Interrupted
}

/// Binds a loopback listener on port 0, for tests and benches.
pub fn bind_loopback() -> io::Result<std::net::TcpListener> {
    std::net::TcpListener::bind("127.0.0.1:0")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Parse {
        parse_request(bytes, "127.0.0.1:9".parse().unwrap())
    }

    #[test]
    fn complete_head_splits_path_and_query() {
        let Parse::Complete(p) = parse(b"GET /v1/update?version=1 HTTP/1.1\r\nHost: x\r\n\r\n") else {
            panic!("complete")
        };
        assert_eq!(p.request.path, "/v1/update");
        assert_eq!(p.request.query, "version=1");
        assert!(p.keep_alive);
    }

    #[test]
    fn http10_closes_unless_asked() {
        let Parse::Complete(p) = parse(b"GET / HTTP/1.0\r\n\r\n") else { panic!() };
        assert!(!p.keep_alive);
        let Parse::Complete(p) = parse(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n") else { panic!() };
        assert!(p.keep_alive);
    }

    #[test]
    fn oversized_body_is_413_before_reading_it() {
        let head = format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", BODY_BYTES_MAX + 1);
        let Parse::Reject(r) = parse(head.as_bytes()) else { panic!() };
        assert_eq!(r.status, 413);
    }

    #[test]
    fn garbage_is_400_and_chunked_is_411() {
        let Parse::Reject(r) = parse(b"\x00\x01 nonsense\r\n\r\n") else { panic!() };
        assert_eq!(r.status, 400);
        let Parse::Reject(r) = parse(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n") else { panic!() };
        assert_eq!(r.status, 411);
    }
}
