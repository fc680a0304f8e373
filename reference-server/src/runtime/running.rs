//! The handle of a service running in this process: its main loop (an HTTP server or a
//! loop of its own), its background threads, its metrics and their admin listener, and
//! how they all stop together.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::runtime::admin;
use crate::runtime::event_loop::ServerHandle;
use crate::runtime::metrics::Metrics;

/// Granularity of background threads' sleeps, so a stop is noticed quickly.
const STOP_POLL_MS: u64 = 20;

/// The main loop of a running service: an HTTP server or a loop of its own.
#[derive(Debug)]
enum Main {
    Http(ServerHandle),
    Thread {
        thread: JoinHandle<io::Result<()>>,
        waker: Arc<mio::Waker>,
    },
}

/// A service running in this process: its main loop plus any background threads.
pub struct Running {
    addr: std::net::SocketAddr,
    main: Main,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    on_shutdown: Vec<Box<dyn FnOnce() + Send + Sync>>,
    metrics: Arc<Metrics>,
    admin: Option<ServerHandle>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("addr", &self.addr)
            .field("threads", &self.threads.len())
            .finish()
    }
}

impl Running {
    /// Wraps a started HTTP server; `stop` is the flag its background threads watch.
    /// The server's request series are the first of the service's metrics.
    pub fn new(server: ServerHandle, stop: Arc<AtomicBool>) -> Running {
        let metrics = Metrics::new();
        metrics.register_http(server.http_metrics());
        Running {
            addr: server.addr(),
            main: Main::Http(server),
            stop,
            threads: Vec::new(),
            on_shutdown: Vec::new(),
            metrics: Arc::new(metrics),
            admin: None,
        }
    }

    /// Wraps a loop running on `thread` that returns once `stop` is set and `waker` woke it.
    pub fn from_thread(
        addr: std::net::SocketAddr,
        thread: JoinHandle<io::Result<()>>,
        stop: Arc<AtomicBool>,
        waker: Arc<mio::Waker>,
    ) -> Running {
        Running {
            addr,
            main: Main::Thread { thread, waker },
            stop,
            threads: Vec::new(),
            on_shutdown: Vec::new(),
            metrics: Arc::new(Metrics::new()),
            admin: None,
        }
    }

    /// The service's metrics, where it registers what it alone knows.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Serves the metrics on `listener` (`GET /metrics`, `GET /healthz`) until shutdown;
    /// returns the address it listens on.
    pub fn serve_metrics(
        &mut self,
        listener: std::net::TcpListener,
    ) -> io::Result<std::net::SocketAddr> {
        let admin = admin::start(listener, Arc::clone(&self.metrics))?;
        let addr = admin.addr();
        if let Some(previous) = self.admin.replace(admin) {
            let _ = previous.shutdown();
        }
        Ok(addr)
    }

    /// Starts a named background thread that belongs to this service.
    pub fn add_thread(
        &mut self,
        name: &str,
        body: impl FnOnce() + Send + 'static,
    ) -> io::Result<()> {
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(body)?;
        self.threads.push(thread);
        Ok(())
    }

    /// Runs `f` at shutdown, after every thread has ended (children to stop, say).
    pub fn on_shutdown(&mut self, f: impl FnOnce() + Send + Sync + 'static) {
        self.on_shutdown.push(Box::new(f));
    }

    /// The service's address.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// Stops the main loop, then the background threads, and waits for all of them.
    pub fn shutdown(self) -> io::Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(admin) = self.admin {
            let _ = admin.shutdown();
        }
        let result = match self.main {
            Main::Http(server) => server.shutdown(),
            Main::Thread { thread, waker } => {
                let _ = waker.wake();
                thread
                    .join()
                    .map_err(|_| io::Error::other("service thread panicked"))?
            }
        };
        for thread in self.threads {
            let _ = thread.join();
        }
        for f in self.on_shutdown {
            f();
        }
        result
    }
}

/// Sleeps for `total` unless `stop` is set first; returns false when stopped.
pub fn sleep_unless_stopped(stop: &AtomicBool, total: Duration) -> bool {
    let end = Instant::now() + total;
    loop {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(Duration::from_millis(STOP_POLL_MS)));
    }
}
