//! `serve`: starts one named service of a plan in this process (what `up` runs per child)
//! with its admin listener, and the one line with which the child tells `up` whether
//! both listen.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use crate::compose::topology::{Plan, ServiceKind, TopologyError};
use crate::config::ObserverBackend;
use crate::domain::public_addrs::PublicAddrs;
use crate::domain::resources::{Catalog, ResourceError};
use crate::runtime::event_loop::Limits;
use crate::runtime::running::Running;
use crate::services::balancer::{self, BalancerConfig};
use crate::services::balancer_observer::Role;
use crate::services::file_node;
use crate::services::lobby::{self, LobbyConfig};
use crate::services::observer::docker::DockerSpawner;
use crate::services::observer::process::ProcessSpawner;
use crate::services::observer::{ObserverError, SessionArgs, Spawner};
use crate::services::play::{self, PlayConfig};
use crate::services::profile::{self, ProfileConfig};
use crate::services::router::{self, RouterConfig};
use crate::services::storage::{self, StorageConfig};
use crate::services::SetupError;

/// Why a service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The name is not a service of the topology.
    #[error("unknown service {0:?}")]
    UnknownService(String),
    /// The resource catalog did not load.
    #[error("resources: {0}")]
    Resources(#[from] ResourceError),
    /// The plan lacks an address this service needs.
    #[error("plan: {0}")]
    Topology(#[from] TopologyError),
    /// Binding threads or sockets failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// A service's own setup failed (DB, TLS identity).
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// The observer backend could not be set up.
    #[error(transparent)]
    Observers(#[from] ObserverError),
}

/// What a child of `up` reports on its stdout, as one line, once it has bound its own
/// sockets and started (`ready ADDR metrics ADDR`) or could not (`failed: WHY`). `up`
/// waits for this line instead of connecting to the addresses, because a connection
/// only proves that *some* process listens there, perhaps another topology's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// The service listens on `addr` and its admin listener on `metrics`.
    Ready {
        /// The service's address.
        addr: SocketAddr,
        /// The admin listener's address (`/metrics`, `/healthz`).
        metrics: SocketAddr,
    },
    /// The service could not start, and why.
    Failed(String),
}

impl Readiness {
    /// The prefix of a ready line, followed by the bound address, so `up` can check it
    /// is the planned one.
    const READY: &'static str = "ready ";
    /// What separates the service's address from the admin listener's on a ready line.
    const METRICS: &'static str = " metrics ";
    /// The prefix of a failure line, followed by the reason `up` passes on to its user.
    const FAILED: &'static str = "failed: ";

    /// Parses a line written by [`Readiness::report`]; `None` for anything else.
    pub fn parse(line: &str) -> Option<Readiness> {
        let line = line.trim_end_matches(['\r', '\n']);
        if let Some(addrs) = line.strip_prefix(Readiness::READY) {
            let (addr, metrics) = addrs.split_once(Readiness::METRICS)?;
            return Some(Readiness::Ready {
                addr: addr.parse().ok()?,
                metrics: metrics.parse().ok()?,
            });
        }
        line.strip_prefix(Readiness::FAILED)
            .map(|why| Readiness::Failed(why.into()))
    }

    /// Writes the line to stdout and flushes it, so `up` sees it at once.
    pub fn report(&self) -> io::Result<()> {
        let mut out = io::stdout().lock();
        match self {
            Readiness::Ready { addr, metrics } => writeln!(
                out,
                "{}{addr}{}{metrics}",
                Readiness::READY,
                Readiness::METRICS
            )?,
            // One line, whatever the error text holds.
            Readiness::Failed(why) => {
                writeln!(out, "{}{}", Readiness::FAILED, why.replace('\n', " "))?
            }
        }
        out.flush()
    }
}

/// Starts the service `name` of `plan` on `listener` in this process, and its admin
/// listener on `metrics`.
pub fn start(
    plan: &Plan,
    name: &str,
    listener: TcpListener,
    metrics: TcpListener,
) -> Result<Running, StartError> {
    let mut running = start_service(plan, name, listener)?;
    running.serve_metrics(metrics)?;
    Ok(running)
}

fn start_service(plan: &Plan, name: &str, listener: TcpListener) -> Result<Running, StartError> {
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
            let mut config = StorageConfig::new(
                Arc::new(Catalog::load(&resources)?),
                vec![
                    plan.addr_of("balancer")?,
                    plan.addr_of("balancer-observer")?,
                ],
            );
            config.public = PublicAddrs::new(plan.public_addrs());
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
                public: PublicAddrs::new(plan.public_addrs()),
            };
            profile::start(listener, config, limits)?
        }
        ServiceKind::Lobby => {
            let config = LobbyConfig {
                data_dir: plan.data_dir.clone(),
                token_idle_s: settings.token_idle_s,
                play_servers: plan.play_servers(),
                players_per_match: settings.players_per_match,
                match_fill_timeout_s: settings.match_fill_timeout_s,
                public: PublicAddrs::new(plan.public_addrs()),
            };
            lobby::start(listener, config, limits)?
        }
        ServiceKind::Play(_) => {
            let session = SessionArgs {
                token_idle_s: settings.token_idle_s,
                lobby: Some(plan.addr_of("lobby")?),
            };
            let spawner: Arc<dyn Spawner> = match settings.observer_backend {
                ObserverBackend::Process => {
                    let exe = std::env::current_exe()?;
                    Arc::new(ProcessSpawner::new(exe, plan.data_dir.clone(), session))
                }
                ObserverBackend::Docker => Arc::new(DockerSpawner::new(
                    plan.data_dir.clone(),
                    session,
                    plan.network.clone(),
                )?),
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
            play::start(listener, config)?
        }
        ServiceKind::Router => {
            let config = RouterConfig {
                data_dir: plan.data_dir.clone(),
                play_servers: plan.play_servers(),
                lobby: Some(plan.addr_of("lobby")?),
                token_idle_s: settings.token_idle_s,
            };
            router::start(listener, config, limits)?
        }
    };
    Ok(running)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_lines_parse_and_anything_else_does_not() {
        let addr: SocketAddr = "127.0.0.1:7100".parse().unwrap();
        let metrics: SocketAddr = "127.0.0.1:8100".parse().unwrap();
        assert_eq!(
            Readiness::parse("ready 127.0.0.1:7100 metrics 127.0.0.1:8100\n"),
            Some(Readiness::Ready { addr, metrics })
        );
        assert_eq!(
            Readiness::parse("failed: binding 127.0.0.1:7100: in use\n"),
            Some(Readiness::Failed("binding 127.0.0.1:7100: in use".into()))
        );
        for other in [
            "",
            "ready",
            "ready nowhere",
            "ready 127.0.0.1:7100",
            "ready 127.0.0.1:7100 metrics nowhere",
            "listening 127.0.0.1:1",
        ] {
            assert_eq!(Readiness::parse(other), None, "{other:?}");
        }
    }
}
