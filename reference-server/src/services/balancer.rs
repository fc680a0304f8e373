//! Balancer: picks the least-loaded healthy file-transfer nodes for storage.
//!
//! Routes: `GET /v1/pick?n=K` → `{"epoch", "endpoints"}`, `GET /v1/status` (role, epoch
//! and node health, read by the peer's heartbeat) and `GET /healthz`. The same code runs
//! as `balancer` and as `balancer-observer`; [`crate::services::balancer_observer`] decides which
//! of the two is active. Both health-check the file nodes all the time, so a standby that
//! takes over already knows which nodes are alive.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::runtime::client::{self, ClientError};
use crate::runtime::event_loop::{Ctx, Handler, Limits, Reply, Server};
use crate::runtime::http::{self, Request, Response};
use crate::runtime::running::{sleep_unless_stopped, Running};
use crate::services::balancer_observer::{Election, PeerSeen, Role, Transition};

/// A health check slower than this marks the node unhealthy: a node that cannot answer
/// `/healthz` in a quarter second will not serve a download well either.
const HEALTH_TIMEOUT_MS: u64 = 250;
/// The shortest heartbeat timeout, near the deadline: a loopback or LAN round trip of a
/// loaded peer fits in it, so a live peer is not declared dead for want of a few ms.
const HEARTBEAT_TIMEOUT_MIN_MS: u64 = 20;
/// Most endpoints one pick may ask for.
pub const PICK_N_MAX: usize = 16;

/// Everything a balancer process needs.
#[derive(Debug, Clone)]
pub struct BalancerConfig {
    /// Primary (`balancer`) or standby (`balancer-observer`).
    pub role: Role,
    /// The other balancer process.
    pub peer: SocketAddr,
    /// The file nodes to health-check and pick from.
    pub nodes: Vec<SocketAddr>,
    /// See [`crate::config::HEARTBEAT_INTERVAL_MS_DEFAULT`].
    pub heartbeat_interval: Duration,
    /// See [`crate::config::HEARTBEAT_DEADLINE_MS_DEFAULT`].
    pub heartbeat_deadline: Duration,
    /// See [`crate::config::HEALTH_INTERVAL_MS_DEFAULT`].
    pub health_interval: Duration,
    /// Where the highest epoch is kept across restarts.
    pub epoch_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
struct NodeState {
    addr: SocketAddr,
    healthy: bool,
    active_conns: usize,
    /// Picks handed out since the last health check, so a burst of picks between two
    /// checks is spread instead of all landing on the node that looked idlest.
    #[serde(skip)]
    assigned: usize,
}

#[derive(Debug)]
struct Shared {
    election: Mutex<Election>,
    nodes: Mutex<Vec<NodeState>>,
}

/// The status document served on `/v1/status` and read by the peer.
#[derive(Debug, Serialize, Deserialize)]
pub struct Status {
    /// `active` or `standby`.
    pub role: String,
    /// The highest epoch this process knows.
    pub epoch: u64,
}

#[derive(Serialize)]
struct Pick {
    epoch: u64,
    endpoints: Vec<SocketAddr>,
}

#[derive(Serialize)]
struct FullStatus<'a> {
    role: &'static str,
    epoch: u64,
    nodes: &'a [NodeState],
}

/// The balancer's request handler.
#[derive(Debug)]
pub struct Balancer {
    shared: Arc<Shared>,
    rotation: usize,
}

impl Balancer {
    fn pick(&mut self, req: &Request) -> Response {
        let n = match req.query_param("n").map(|n| n.parse::<usize>()) {
            None => 1,
            Some(Ok(n)) if (1..=PICK_N_MAX).contains(&n) => n,
            Some(_) => {
                return Response::error(
                    400,
                    "bad_request",
                    &format!("query n: must be a number from 1 to {PICK_N_MAX}"),
                )
            }
        };
        let (active, epoch) = {
            let election = self.shared.election.lock().expect("election lock");
            (election.is_active(), election.epoch())
        };
        if !active {
            return Response::error(503, "standby", "this balancer is standby")
                .with_header("Retry-After", "1");
        }
        let mut nodes = self.shared.nodes.lock().expect("nodes lock");
        let count = nodes.len();
        self.rotation = self.rotation.wrapping_add(1);
        let offset = self.rotation % count.max(1);
        let mut healthy: Vec<usize> = (0..count).filter(|&i| nodes[i].healthy).collect();
        // Least load first; equal loads rotate so they share the work.
        healthy.sort_by_key(|&i| {
            (
                nodes[i].active_conns + nodes[i].assigned,
                (i + count - offset) % count,
            )
        });
        healthy.truncate(n);
        if healthy.is_empty() {
            return Response::error(503, "unavailable", "no healthy file node")
                .with_header("Retry-After", "1");
        }
        let endpoints = healthy
            .iter()
            .map(|&i| {
                nodes[i].assigned += 1;
                nodes[i].addr
            })
            .collect();
        Response::json(200, &Pick { epoch, endpoints })
    }

    fn status(&self) -> Response {
        let (active, epoch) = {
            let election = self.shared.election.lock().expect("election lock");
            (election.is_active(), election.epoch())
        };
        let nodes = self.shared.nodes.lock().expect("nodes lock");
        Response::json(
            200,
            &FullStatus {
                role: if active { "active" } else { "standby" },
                epoch,
                nodes: &nodes,
            },
        )
    }
}

impl Handler for Balancer {
    fn handle(&mut self, req: Request, _ctx: &mut Ctx<'_>) -> Reply {
        let response = match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/v1/pick") => self.pick(&req),
            ("GET", "/v1/status") => self.status(),
            ("GET", "/healthz") => Response::json(200, &serde_json::json!({"status": "ok"})),
            (_, "/v1/pick" | "/v1/status" | "/healthz") => http::method_not_allowed(&req, &["GET"]),
            _ => http::not_found(&req),
        };
        Reply::Now(response)
    }

    fn routes(&self) -> &'static [&'static str] {
        &["/v1/pick", "/v1/status", "/healthz"]
    }
}

impl Balancer {
    /// A balancer's handler: standby, no node checked yet, until the heartbeat and health
    /// threads of [`start`] run (the fuzz targets drive it alone).
    pub fn new(config: &BalancerConfig) -> Balancer {
        let shared = Arc::new(Shared {
            election: Mutex::new(Election::new(
                config.role,
                config.heartbeat_deadline,
                config.epoch_file.clone(),
                Instant::now(),
            )),
            nodes: Mutex::new(
                config
                    .nodes
                    .iter()
                    .map(|&addr| NodeState {
                        addr,
                        healthy: false,
                        active_conns: 0,
                        assigned: 0,
                    })
                    .collect(),
            ),
        });
        Balancer {
            shared,
            rotation: 0,
        }
    }
}

/// Starts a balancer process's server, heartbeat and health-check threads.
pub fn start(listener: TcpListener, config: BalancerConfig, limits: Limits) -> io::Result<Running> {
    let balancer = Balancer::new(&config);
    let shared = Arc::clone(&balancer.shared);
    // The first health round finishes before the server answers, so a freshly started
    // or promoted balancer never names a node it has not checked.
    check_nodes(&shared);
    let server = Server::new(listener, balancer, limits)?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut running = Running::new(server.spawn("balancer")?, Arc::clone(&stop));
    register_metrics(&running, &shared);
    let (s, st) = (Arc::clone(&shared), Arc::clone(&stop));
    let interval = config.health_interval;
    running.add_thread("health", move || {
        while sleep_unless_stopped(&st, interval) {
            check_nodes(&s);
        }
    })?;
    let (s, st) = (shared, stop);
    running.add_thread("heartbeat", move || heartbeat(&s, &st, &config))?;
    Ok(running)
}

/// The epoch, the role and the healthy file nodes, read from the election and the
/// health checks at each scrape.
fn register_metrics(running: &Running, shared: &Arc<Shared>) {
    let metrics = running.metrics();
    let s = Arc::clone(shared);
    metrics.gauge_fn(
        "catwar_balancer_epoch",
        "The highest balancer epoch this process knows",
        move || {
            let epoch = s.election.lock().expect("election lock").epoch();
            i64::try_from(epoch).unwrap_or(i64::MAX)
        },
    );
    let s = Arc::clone(shared);
    metrics.labelled_gauge_fn(
        "catwar_balancer_role",
        "The role of this balancer: 1 for the role it has now, 0 for the other",
        "role",
        move || {
            let active = s.election.lock().expect("election lock").is_active();
            vec![
                ("active", i64::from(active)),
                ("standby", i64::from(!active)),
            ]
        },
    );
    let s = Arc::clone(shared);
    metrics.gauge_fn(
        "catwar_balancer_healthy_file_nodes",
        "File nodes that passed their last health check",
        move || {
            let nodes = s.nodes.lock().expect("nodes lock");
            nodes.iter().filter(|n| n.healthy).count() as i64
        },
    );
}

fn heartbeat(shared: &Shared, stop: &AtomicBool, config: &BalancerConfig) {
    // A peer gets half the deadline to answer: long enough that a busy machine does not
    // fake a death, short enough that a hung peer is noticed before the deadline. A
    // dead peer refuses the connection at once, and the election acts on that at once.
    let patience = (config.heartbeat_deadline / 2).max(config.heartbeat_interval);
    loop {
        // Nor does a heartbeat wait past the deadline: a silent peer is replaced when
        // its deadline ends, not when a heartbeat that began before it times out.
        let left = shared
            .election
            .lock()
            .expect("election lock")
            .until_deadline(Instant::now());
        let timeout = left.map_or(patience, |left| {
            left.clamp(Duration::from_millis(HEARTBEAT_TIMEOUT_MIN_MS), patience)
        });
        let seen = match client::get(config.peer, "/v1/status", timeout)
            .and_then(|r| r.json::<Status>())
        {
            Ok(status) if status.role == "active" => PeerSeen::Active(status.epoch),
            Ok(status) => PeerSeen::Standby(status.epoch),
            Err(ClientError::Connect(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                PeerSeen::Refused
            }
            Err(_) => PeerSeen::Unreachable,
        };
        let transition = shared
            .election
            .lock()
            .expect("election lock")
            .observe(seen, Instant::now());
        match transition {
            Some(Transition::Promoted(epoch)) => {
                tracing::info!(epoch, peer = %config.peer, "took over as the active balancer")
            }
            Some(Transition::SteppedDown(epoch)) => {
                tracing::info!(epoch, peer = %config.peer, "peer is active with a higher epoch; now standby")
            }
            None => {}
        }
        if !sleep_unless_stopped(stop, config.heartbeat_interval) {
            return;
        }
    }
}

#[derive(Deserialize)]
struct NodeHealth {
    active_conns: usize,
}

fn check_nodes(shared: &Shared) {
    let addrs: Vec<SocketAddr> = shared
        .nodes
        .lock()
        .expect("nodes lock")
        .iter()
        .map(|n| n.addr)
        .collect();
    let timeout = Duration::from_millis(HEALTH_TIMEOUT_MS);
    // Checks run without the lock so picks keep flowing while a node is slow to answer.
    let results: Vec<Option<usize>> = addrs
        .iter()
        .map(|&addr| {
            client::get(addr, "/healthz", timeout)
                .ok()
                .filter(|r| r.status == 200)
                .and_then(|r| r.json::<NodeHealth>().ok())
                // The health check's own connection is not load.
                .map(|h| h.active_conns.saturating_sub(1))
        })
        .collect();
    let mut nodes = shared.nodes.lock().expect("nodes lock");
    for (node, result) in nodes.iter_mut().zip(results) {
        if node.healthy != result.is_some() {
            tracing::info!(node = %node.addr, healthy = result.is_some(), "file node health changed");
        }
        node.healthy = result.is_some();
        node.active_conns = result.unwrap_or(0);
        node.assigned = 0;
    }
}
