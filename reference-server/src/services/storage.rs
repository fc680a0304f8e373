//! Storage: answers "is my resource version current?" and, when it is not, sends the
//! manifest and file-node endpoints picked by whichever balancer is active.
//!
//! Route: `GET /v1/update?version=V`. An up-to-date check is answered on the event loop;
//! a stale one needs a pick from a balancer over the network, so it runs on the job pool
//! and its answer returns through the loop's waker.
//!
//! A failover is invisible to clients: while no balancer picks (the active one died or is
//! cut off, and the standby has not taken over yet), storage answers with the file nodes
//! that a balancer which still answers (the standby included) sees healthy right now,
//! marked `"stale": true`, and answers 503 only when no balancer can name a live node.
//! Stale answers never move storage's fencing: only a pick raises the epoch it trusts.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::domain::public_addrs::PublicAddrs;
use crate::domain::resources::{valid_version, Catalog, FileEntry};
use crate::runtime::client;
use crate::runtime::event_loop::{Ctx, Handler, Limits, Reply, Server};
use crate::runtime::http::{self, Request, Response};
use crate::runtime::jobs::{defer_to_pool, JobPool};
use crate::runtime::running::Running;

/// File-node endpoints sent with each update, so a client can spread its downloads and
/// fall back to a second node when one fails mid-transfer.
pub const PICK_N_DEFAULT: usize = 2;
/// A balancer that takes longer than this to pick is treated as down for this request.
const PICK_TIMEOUT_MS: u64 = 200;
/// A balancer that did not answer is left aside this long: every pick would otherwise
/// first wait out its timeout, on every pick worker, through a whole failover, and the
/// first pick of the new term would queue behind them.
const SILENT_ASIDE_MS: u64 = 1_000;
/// Threads that talk to balancers. Picks are short loopback calls; four keep a slow
/// balancer from queueing every update behind it.
const PICK_WORKERS: usize = 4;
/// Stale-version checks waiting for a worker; beyond it storage answers 503 `busy`.
const PICK_QUEUE_MAX: usize = 4096;

/// Everything storage needs.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// The resource catalog (current version and manifest).
    pub catalog: Arc<Catalog>,
    /// Balancer processes, primary first; whichever answers with the highest epoch wins.
    pub balancers: Vec<SocketAddr>,
    /// Endpoints per update answer.
    pub pick_n: usize,
    /// Where clients reach the file nodes.
    pub public: PublicAddrs,
}

impl StorageConfig {
    /// A config with the default pick size.
    pub fn new(catalog: Arc<Catalog>, balancers: Vec<SocketAddr>) -> StorageConfig {
        StorageConfig {
            catalog,
            balancers,
            pick_n: PICK_N_DEFAULT,
            public: PublicAddrs::default(),
        }
    }
}

/// Follows the active balancer: the one that last answered, unless another answers with
/// a higher epoch. An answer below the highest epoch seen comes from a balancer that has
/// not yet learned it was replaced, and is not used.
#[derive(Debug)]
struct Picker {
    balancers: Vec<SocketAddr>,
    pick_n: usize,
    state: Mutex<PickerState>,
}

#[derive(Debug, Default)]
struct PickerState {
    preferred: usize,
    epoch_max: u64,
    /// Balancers that did not answer, by index, and until when they are left aside.
    aside_until: Vec<(usize, Instant)>,
}

#[derive(Debug, Deserialize)]
struct Pick {
    epoch: u64,
    endpoints: Vec<String>,
}

/// What storage reads of a balancer's `/v1/status` for a stale answer.
#[derive(Debug, Deserialize)]
struct BalancerView {
    nodes: Vec<NodeView>,
}

#[derive(Debug, Deserialize)]
struct NodeView {
    addr: String,
    healthy: bool,
    active_conns: usize,
}

impl Picker {
    /// The balancers to ask, the preferred one first; those left aside come last, and
    /// only when `with_silent` (a pick skips them unless no other is left).
    fn order(&self, with_silent: bool) -> (Vec<usize>, u64) {
        let now = Instant::now();
        let mut state = self.state.lock().expect("picker lock");
        state.aside_until.retain(|&(_, until)| until > now);
        let count = self.balancers.len();
        let rotation = (0..count).map(|k| (state.preferred + k) % count);
        let aside = |i: usize| state.aside_until.iter().any(|&(a, _)| a == i);
        let (mut order, silent): (Vec<usize>, Vec<usize>) = rotation.partition(|&i| !aside(i));
        if with_silent || order.is_empty() {
            order.extend(silent);
        }
        (order, state.epoch_max)
    }

    /// Leaves balancer `i` aside for [`SILENT_ASIDE_MS`].
    fn silent(&self, i: usize) {
        let until = Instant::now() + Duration::from_millis(SILENT_ASIDE_MS);
        let mut state = self.state.lock().expect("picker lock");
        state.aside_until.retain(|&(a, _)| a != i);
        state.aside_until.push((i, until));
    }

    fn pick(&self) -> Option<Pick> {
        let (order, epoch_max) = self.order(false);
        let timeout = Duration::from_millis(PICK_TIMEOUT_MS);
        let path = format!("/v1/pick?n={}", self.pick_n);
        for i in order {
            let Ok(response) = client::get(self.balancers[i], &path, timeout) else {
                self.silent(i);
                continue;
            };
            if response.status != 200 {
                continue;
            }
            let Ok(pick) = response.json::<Pick>() else {
                continue;
            };
            if pick.epoch < epoch_max || pick.endpoints.is_empty() {
                continue;
            }
            let mut state = self.state.lock().expect("picker lock");
            if pick.epoch >= state.epoch_max {
                state.epoch_max = pick.epoch;
                state.preferred = i;
                return Some(pick);
            }
        }
        None
    }

    /// The healthy nodes as a balancer that still answers sees them (health-checked every
    /// few hundred ms by both balancers, so a dead node is already out), least loaded
    /// first, for an answer marked stale while no balancer picks. The epoch is the
    /// highest storage trusts, so clients never see a term go backwards.
    fn stale_view(&self) -> Option<Pick> {
        let (order, epoch_max) = self.order(true);
        let timeout = Duration::from_millis(PICK_TIMEOUT_MS);
        order.into_iter().find_map(|i| {
            let Ok(response) = client::get(self.balancers[i], "/v1/status", timeout) else {
                self.silent(i);
                return None;
            };
            let view = (response.status == 200)
                .then(|| response.json::<BalancerView>().ok())
                .flatten()?;
            let mut healthy: Vec<NodeView> = view.nodes.into_iter().filter(|n| n.healthy).collect();
            healthy.sort_by_key(|n| n.active_conns);
            healthy.truncate(self.pick_n);
            (!healthy.is_empty()).then(|| Pick {
                epoch: epoch_max,
                endpoints: healthy.into_iter().map(|n| n.addr).collect(),
            })
        })
    }
}

#[derive(Serialize)]
struct Current<'a> {
    update: bool,
    version: &'a str,
}

#[derive(Serialize)]
struct Update<'a> {
    update: bool,
    version: &'a str,
    files: &'a [FileEntry],
    endpoints: Vec<String>,
    epoch: u64,
    /// Set when no balancer picked and the endpoints are a balancer's current view of
    /// healthy nodes instead.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stale: bool,
}

/// Storage's request handler.
#[derive(Debug)]
pub struct Storage {
    current: Arc<str>,
    manifest: Arc<[FileEntry]>,
    picker: Arc<Picker>,
    public: Arc<PublicAddrs>,
    pool: JobPool,
}

impl Storage {
    /// A handler with its own pick workers.
    pub fn new(config: StorageConfig) -> io::Result<Storage> {
        Ok(Storage {
            current: config.catalog.current.as_str().into(),
            manifest: config.catalog.current_manifest().into(),
            picker: Arc::new(Picker {
                balancers: config.balancers,
                pick_n: config.pick_n,
                state: Mutex::new(PickerState::default()),
            }),
            public: Arc::new(config.public),
            pool: JobPool::new("storage-pick", PICK_WORKERS, PICK_QUEUE_MAX)?,
        })
    }

    fn update(&mut self, req: &Request, ctx: &mut Ctx<'_>) -> Reply {
        let version = match req.query_param("version") {
            None => {
                return Reply::Now(Response::error(
                    400,
                    "bad_request",
                    "query version: missing",
                ))
            }
            Some(v) if !valid_version(&v) => {
                return Reply::Now(Response::error(
                    400,
                    "bad_request",
                    "query version: must be 1-64 letters, digits, '.', '-' or '_'",
                ))
            }
            Some(v) => v,
        };
        if version == *self.current {
            return Reply::Now(Response::json(
                200,
                &Current {
                    update: false,
                    version: &version,
                },
            ));
        }
        let (picker, current, manifest, public) = (
            Arc::clone(&self.picker),
            Arc::clone(&self.current),
            Arc::clone(&self.manifest),
            Arc::clone(&self.public),
        );
        defer_to_pool(&self.pool, ctx, move || {
            let (pick, stale) = match picker.pick() {
                Some(pick) => (pick, false),
                None => match picker.stale_view() {
                    Some(view) => (view, true),
                    None => {
                        return Response::error(
                            503,
                            "unavailable",
                            "no balancer knows a live file node; retry shortly",
                        )
                        .with_header("Retry-After", "1")
                    }
                },
            };
            Response::json(
                200,
                &Update {
                    update: true,
                    version: &current,
                    files: &manifest,
                    endpoints: pick
                        .endpoints
                        .into_iter()
                        .map(|e| match e.parse() {
                            Ok(addr) => public.of(addr).to_string(),
                            Err(_) => e,
                        })
                        .collect(),
                    epoch: pick.epoch,
                    stale,
                },
            )
        })
    }
}

impl Handler for Storage {
    fn routes(&self) -> &'static [&'static str] {
        &["/v1/update", "/healthz"]
    }

    fn handle(&mut self, req: Request, ctx: &mut Ctx<'_>) -> Reply {
        match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/v1/update") => self.update(&req, ctx),
            ("GET", "/healthz") => {
                Reply::Now(Response::json(200, &serde_json::json!({"status": "ok"})))
            }
            (_, "/v1/update" | "/healthz") => Reply::Now(http::method_not_allowed(&req, &["GET"])),
            _ => Reply::Now(http::not_found(&req)),
        }
    }
}

/// Starts storage on `listener`.
pub fn start(listener: TcpListener, config: StorageConfig, limits: Limits) -> io::Result<Running> {
    let server = Server::new(listener, Storage::new(config)?, limits)?;
    Ok(Running::new(
        server.spawn("storage")?,
        Arc::new(AtomicBool::new(false)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picker() -> Picker {
        Picker {
            balancers: vec![
                "127.0.0.1:1".parse().unwrap(),
                "127.0.0.1:2".parse().unwrap(),
            ],
            pick_n: 1,
            state: Mutex::new(PickerState::default()),
        }
    }

    #[test]
    fn a_silent_balancer_is_asked_last_for_a_view_and_not_at_all_for_a_pick() {
        let p = picker();
        assert_eq!(p.order(false).0, [0, 1]);
        p.silent(0);
        assert_eq!(p.order(false).0, [1]);
        assert_eq!(p.order(true).0, [1, 0]);
    }

    #[test]
    fn when_every_balancer_is_silent_each_is_asked_again() {
        let p = picker();
        p.silent(0);
        p.silent(1);
        assert_eq!(p.order(false).0, [0, 1]);
    }
}
