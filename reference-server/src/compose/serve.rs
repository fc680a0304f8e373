//! Running services: the handle shared by every service started in-process, and `serve`,
//! which starts one named service of a plan in this process (what `up` runs per child).

use std::io;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::balancer::{self, BalancerConfig};
use crate::balancer_observer::Role;
use crate::config::ObserverBackend;
use crate::event_loop::{Limits, ServerHandle};
use crate::file_node;
use crate::lobby::{self, LobbyConfig};
use crate::observer::docker::DockerSpawner;
use crate::observer::process::ProcessSpawner;
use crate::observer::Spawner;
use crate::play::{self, PlayConfig};
use crate::profile::{self, ProfileConfig};
use crate::resources::{Catalog, ResourceError};
use crate::router::{self, RouterConfig};
use crate::storage::{self, StorageConfig};
use crate::topology::{Plan, ServiceKind, TopologyError};

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
    pub fn new(server: ServerHandle, stop: Arc<AtomicBool>) -> Running {
        Running {
            addr: server.addr(),
            main: Main::Http(server),
            stop,
            threads: Vec::new(),
            on_shutdown: Vec::new(),
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
        }
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

/// Why a service could not start.
#[derive(Debug)]
pub enum StartError {
    /// The name is not a service of the topology.
    UnknownService(String),
    /// The resource catalog did not load.
    Resources(ResourceError),
    /// The plan lacks an address this service needs.
    Topology(TopologyError),
    /// Binding threads or sockets failed.
    Io(io::Error),
    /// A service's own setup failed (DB, TLS identity).
    Setup(Box<dyn std::error::Error + Send + Sync>),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::UnknownService(name) => write!(f, "unknown service {name:?}"),
            StartError::Resources(e) => write!(f, "resources: {e}"),
            StartError::Topology(e) => write!(f, "plan: {e}"),
            StartError::Io(e) => write!(f, "{e}"),
            StartError::Setup(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for StartError {}

impl From<ResourceError> for StartError {
    fn from(e: ResourceError) -> Self {
        StartError::Resources(e)
    }
}

impl From<TopologyError> for StartError {
    fn from(e: TopologyError) -> Self {
        StartError::Topology(e)
    }
}

impl From<io::Error> for StartError {
    fn from(e: io::Error) -> Self {
        StartError::Io(e)
    }
}

/// Starts the service `name` of `plan` on `listener` in this process.
pub fn start(plan: &Plan, name: &str, listener: TcpListener) -> Result<Running, StartError> {
    let kind = ServiceKind::parse(name).ok_or_else(|| StartError::UnknownService(name.into()))?;
    let settings = &plan.settings;
    let limits = Limits::default();
    let resources = plan.data_dir.join("resources");
    let running = match kind {
        ServiceKind::FileNode(_) => {
            let catalog = Arc::new(Catalog::load(&resources)?);
            let server = file_node::start(listener, catalog, limits)?;
            Running::new(server, Arc::new(AtomicBool::new(false)))
        }
        ServiceKind::Balancer | ServiceKind::BalancerObserver => {
            let (role, peer) = match kind {
                ServiceKind::Balancer => (Role::Primary, plan.addr_of("balancer-observer")?),
                _ => (Role::Observer, plan.addr_of("balancer")?),
            };
            let config = BalancerConfig {
                role,
                peer,
                nodes: plan.file_nodes(),
                heartbeat_interval: Duration::from_millis(settings.heartbeat_interval_ms),
                heartbeat_deadline: Duration::from_millis(settings.heartbeat_deadline_ms),
                health_interval: Duration::from_millis(settings.health_interval_ms),
                epoch_file: Some(plan.data_dir.join("state").join(format!("{name}.epoch"))),
            };
            balancer::start(listener, config, limits)?
        }
        ServiceKind::Storage => {
            let config = StorageConfig::new(
                Arc::new(Catalog::load(&resources)?),
                vec![
                    plan.addr_of("balancer")?,
                    plan.addr_of("balancer-observer")?,
                ],
            );
            storage::start(listener, config, limits)?
        }
        ServiceKind::Profile => {
            let config = ProfileConfig {
                data_dir: plan.data_dir.clone(),
                lobby: plan.addr_of("lobby")?,
                workers: settings.login_workers,
                login_queue: profile::LOGIN_QUEUE_MAX,
                token_idle_s: settings.token_idle_s,
                argon2: settings.argon2,
            };
            profile::start(listener, config, limits).map_err(StartError::Setup)?
        }
        ServiceKind::Lobby => {
            let config = LobbyConfig {
                data_dir: plan.data_dir.clone(),
                token_idle_s: settings.token_idle_s,
                play_servers: plan.play_servers(),
                players_per_match: settings.players_per_match,
                match_fill_timeout_s: settings.match_fill_timeout_s,
            };
            lobby::start(listener, config, limits).map_err(StartError::Setup)?
        }
        ServiceKind::Play(_) => {
            let spawner: Arc<dyn Spawner> = match settings.observer_backend {
                ObserverBackend::Process => {
                    let exe = std::env::current_exe()?;
                    Arc::new(ProcessSpawner::new(exe, plan.data_dir.clone()))
                }
                ObserverBackend::Docker => Arc::new(
                    DockerSpawner::new(plan.data_dir.clone())
                        .map_err(|e| StartError::Setup(Box::new(e)))?,
                ),
            };
            let config = PlayConfig {
                data_dir: plan.data_dir.clone(),
                public: plan.addr_of(name)?,
                lobby: Some(plan.addr_of("lobby")?),
                players_per_match: settings.players_per_match,
                fill_timeout: Duration::from_secs(settings.match_fill_timeout_s),
                match_ticks: settings.match_ticks,
                tick_hz: settings.tick_hz,
                spawner,
                conns_max: play::CONNS_MAX,
                handshake_timeout: Duration::from_millis(play::HANDSHAKE_TIMEOUT_MS),
            };
            play::start(listener, config).map_err(StartError::Setup)?
        }
        ServiceKind::Router => {
            let config = RouterConfig {
                data_dir: plan.data_dir.clone(),
                play_servers: plan.play_servers(),
            };
            router::start(listener, config, limits).map_err(StartError::Setup)?
        }
    };
    Ok(running)
}
