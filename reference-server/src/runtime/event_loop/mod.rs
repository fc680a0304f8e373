//! The one mio event loop behind every HTTP service.
//!
//! It follows the shape of mio's `tcp_server` example: the listener and a waker have
//! constant tokens, connections live in a slab, and on readiness a connection is read or
//! written until `WouldBlock`. HTTP/1.1 framing (httparse heads, `Content-Length` bodies,
//! keep-alive, pipelining) and the limits of SPEC §3 are enforced here once, so a service
//! only maps a [`Request`] to a [`Reply`]. No accept failure ends the loop: it is logged,
//! and one that would repeat at once pauses the listener briefly ([`Acceptor`]).
//!
//! Slow work never runs on the loop: a handler calls [`Ctx::defer`], hands the
//! [`Responder`] to a job pool, and the pool's answer comes back through the channel and
//! the [`Waker`]. While a deferred answer is outstanding the connection parses no further
//! request, so pipelined answers keep their order.

mod accept;
mod conn;
#[doc(hidden)]
pub mod fuzzing;
mod handler;
mod parse;

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use native_tls::TlsAcceptor;
use slab::Slab;

use crate::runtime::http::Response;
use crate::runtime::metrics::{route_label, HttpMetrics, ROUTE_UNKNOWN};

pub use accept::{Acceptor, ACCEPT_BACKOFF_MS};
use conn::{flush, queue, queued_bytes, read_available, refuse, Awaiting, Conn, Tls, Transport};
use handler::Completion;
pub use handler::{Ctx, Handler, Reply, Responder, ServerHandle, Stopper};
use parse::{parse_request, Parse};

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
/// Answers queued on one connection before the loop parses no more of its requests: a
/// client that pipelines and reads no answers cannot grow memory; the write timeout
/// drops it instead.
const OUT_BYTES_MAX: usize = 1024 * 1024;
/// Read-and-answer rounds one connection gets per readiness event, each reading at most
/// [`INBUF_BYTES_MAX`]. A client that sends as fast as it can then waits behind the
/// other connections' events instead of holding the loop.
const ROUNDS_PER_EVENT_MAX: usize = 4;
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

/// One HTTP server: a listener, a handler and the connections.
#[derive(Debug)]
pub struct Server<H> {
    poll: Poll,
    listener: TcpListener,
    acceptor: Acceptor,
    handler: H,
    conns: Slab<Conn>,
    limits: Limits,
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    tx: Sender<Completion>,
    rx: Receiver<Completion>,
    next_gen: u64,
    tls: Option<Tls>,
    metrics: HttpMetrics,
    /// Where every connection's `read` lands before its bytes join the connection's
    /// buffer: one per loop, zeroed once (a zeroed array per read cost 16 K
    /// instructions, 40 % of a lobby request).
    scratch: Box<[u8]>,
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
            acceptor: Acceptor::new(),
            handler,
            conns: Slab::with_capacity(limits.conns_max.min(1024)),
            limits,
            waker,
            stop: Arc::new(AtomicBool::new(false)),
            tx,
            rx,
            next_gen: 0,
            tls: None,
            metrics: HttpMetrics::default(),
            scratch: vec![0; READ_CHUNK_BYTES].into_boxed_slice(),
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

    /// The server's request, latency and connection series (recorded whether or not
    /// anyone registers them).
    pub fn http_metrics(&self) -> &HttpMetrics {
        &self.metrics
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
        let metrics = self.metrics.clone();
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || self.run())?;
        Ok(ServerHandle {
            addr,
            metrics,
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
            let timeout = self.acceptor.poll_timeout(sweep_every);
            if let Err(err) = self.poll.poll(&mut events, Some(timeout)) {
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
                    LISTENER => self.accept(),
                    WAKER => self.complete_deferred(),
                    Token(key) => self.drive(key),
                }
            }
            if self.acceptor.resume() {
                self.accept();
            }
            if last_sweep.elapsed() >= sweep_every {
                self.sweep();
                last_sweep = Instant::now();
            }
        }
    }

    /// Takes every pending connection. A failure ends no more than the one connection
    /// it concerns (see [`Acceptor`]).
    fn accept(&mut self) {
        while let Some((mut stream, peer)) = self.acceptor.next(&self.listener) {
            if self.conns.len() >= self.limits.conns_max {
                // A TLS client could not read a plaintext answer; it just sees the close.
                if self.tls.is_none() {
                    refuse(&mut stream);
                }
                self.metrics.refused();
                continue;
            }
            let _ = stream.set_nodelay(true);
            let entry = self.conns.vacant_entry();
            let key = entry.key();
            let registered = self.poll.registry().register(
                &mut stream,
                Token(key),
                Interest::READABLE | Interest::WRITABLE,
            );
            if let Err(err) = registered {
                self.acceptor.dropped(&err);
                continue;
            }
            let (stream, handshake_started) = match &self.tls {
                None => (Transport::Plain(stream), None),
                Some(_) => (Transport::Hello(Some(stream)), Some(Instant::now())),
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
        self.metrics.set_connections(self.conns.len());
    }

    /// Reads, answers and writes as far as possible; closes the connection when done.
    fn drive(&mut self, key: usize) {
        if !self.conns.contains(key) {
            return;
        }
        match self.conns[key].stream.ready(self.tls.as_ref()) {
            Ok(true) => {}
            Ok(false) => return,
            Err(_) => return self.close(key),
        }
        for _ in 0..ROUNDS_PER_EVENT_MAX {
            let read_more = match read_available(&mut self.conns[key], &mut self.scratch) {
                Ok(more) => more,
                Err(_) => return self.close(key),
            };
            let held = self.process(key);
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
            // Waiting for a deferred answer, or for the client to take what is queued
            // (a writable event comes when it does).
            if conn.awaiting.is_some()
                || conn.close_after_flush
                || queued_bytes(conn) >= OUT_BYTES_MAX
            {
                return;
            }
            // Work no event will announce: bytes left in the socket when reading stopped
            // at the buffer cap, or requests held back for room the flush just made.
            if !read_more && !held {
                return;
            }
        }
        // The round budget is spent with work left: ask the poll for a fresh event, so
        // the connections whose events are already waiting go first.
        let registry = self.poll.registry();
        if let Some(socket) = self.conns[key].stream.socket() {
            if registry
                .reregister(socket, Token(key), Interest::READABLE | Interest::WRITABLE)
                .is_err()
            {
                self.close(key);
            }
        }
    }

    /// Parses and dispatches every complete request in the buffer, as long as the
    /// answers queued stay under [`OUT_BYTES_MAX`]; true when it stopped for that with
    /// requests left to parse.
    fn process(&mut self, key: usize) -> bool {
        let open_conns = self.conns.len();
        let conn = &mut self.conns[key];
        while conn.awaiting.is_none() && !conn.close_after_flush && !conn.inbuf.is_empty() {
            if queued_bytes(conn) >= OUT_BYTES_MAX {
                return true;
            }
            let parsed = match parse_request(&conn.inbuf, conn.peer) {
                Parse::Partial => {
                    if conn.inbuf.len() > HEAD_BYTES_MAX {
                        self.metrics.record(ROUTE_UNKNOWN, 431, None);
                        queue(
                            conn,
                            Response::error(431, "head_too_large", "request head exceeds 16 KiB")
                                .closing(),
                            false,
                        );
                    }
                    return false;
                }
                Parse::Reject(response) => {
                    conn.inbuf.clear();
                    self.metrics.record(ROUTE_UNKNOWN, response.status, None);
                    queue(conn, response.closing(), false);
                    return false;
                }
                Parse::Complete(parsed) => parsed,
            };
            let total = parsed.head_len + parsed.content_length;
            if conn.inbuf.len() < total {
                return false;
            }
            let mut request = parsed.request;
            let route = route_label(self.handler.routes(), &request.path);
            let since = Instant::now();
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
            let keep_alive = parsed.keep_alive;
            match self.handler.handle(request, &mut ctx) {
                Reply::Now(response) => {
                    self.metrics
                        .record(route, response.status, Some(since.elapsed()));
                    queue(conn, response, keep_alive)
                }
                Reply::Later if ctx.deferred => {
                    conn.awaiting = Some(Awaiting {
                        keep_alive,
                        route,
                        since,
                    })
                }
                Reply::Later => {
                    self.metrics.record(route, 500, Some(since.elapsed()));
                    queue(
                        conn,
                        Response::error(500, "internal", "handler deferred without a responder"),
                        keep_alive,
                    )
                }
            }
        }
        false
    }

    fn complete_deferred(&mut self) {
        while let Ok(done) = self.rx.try_recv() {
            let Some(conn) = self.conns.get_mut(done.key) else {
                continue;
            };
            if conn.gen != done.gen {
                continue;
            }
            let Some(awaiting) = conn.awaiting.take() else {
                continue;
            };
            self.metrics.record(
                awaiting.route,
                done.response.status,
                Some(awaiting.since.elapsed()),
            );
            queue(conn, done.response, awaiting.keep_alive);
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
                    self.metrics.record(ROUTE_UNKNOWN, 408, None);
                    let detail = format!(
                        "request not completed within {} ms",
                        limits.request_timeout.as_millis()
                    );
                    queue(
                        conn,
                        Response::error(408, "request_timeout", &detail).closing(),
                        false,
                    );
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
            self.metrics.set_connections(self.conns.len());
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
