//! What a service plugs into the event loop: the [`Handler`] trait, its per-request
//! [`Ctx`], deferred answers through a [`Responder`], and the handles that stop a server.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::thread::JoinHandle;

use mio::Waker;

use crate::runtime::http::{Request, Response};
use crate::runtime::metrics::HttpMetrics;

/// What a service does with a request.
pub trait Handler: Send + 'static {
    /// Maps one request to an answer now, or to [`Reply::Later`] after [`Ctx::defer`].
    fn handle(&mut self, req: Request, ctx: &mut Ctx<'_>) -> Reply;

    /// The route patterns this handler serves, the label of its requests in the loop's
    /// metrics: exact paths, or a pattern whose `{parameter}` stands for the rest of the
    /// path (`/v1/files/{version}/{path}`). A request that matches none is labelled
    /// `unknown`, so the number of series stays bounded whatever paths clients send.
    fn routes(&self) -> &'static [&'static str] {
        &[]
    }
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
    pub(super) key: usize,
    pub(super) gen: u64,
    pub(super) tx: &'a Sender<Completion>,
    pub(super) waker: &'a Arc<Waker>,
    pub(super) deferred: bool,
    pub(super) open_conns: usize,
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
pub(super) struct Completion {
    pub(super) key: usize,
    pub(super) gen: u64,
    pub(super) response: Response,
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
    pub(super) flag: Arc<AtomicBool>,
    pub(super) waker: Arc<Waker>,
}

impl Stopper {
    /// Asks the loop to stop; it returns after closing every connection.
    pub fn stop(&self) {
        self.flag.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
    }
}

/// A server running on its own thread.
#[derive(Debug)]
pub struct ServerHandle {
    pub(super) addr: SocketAddr,
    pub(super) metrics: HttpMetrics,
    pub(super) stopper: Stopper,
    pub(super) thread: JoinHandle<io::Result<()>>,
}

impl ServerHandle {
    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's request, latency and connection series.
    pub fn http_metrics(&self) -> &HttpMetrics {
        &self.metrics
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
