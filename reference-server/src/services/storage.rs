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
//!
//! A balancer that does not answer at all (dead, or cut off from the network, where every
//! call waits out its timeout) is left aside for a moment while another one answers, so
//! that a failover does not make every update wait on the balancer that went away.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::domain::public_addrs::PublicAddrs;
use crate::domain::resources::{valid_version, Catalog, FileEntry};
use crate::runtime::client::{self, ClientResponse};
use crate::runtime::event_loop::{Ctx, Handler, Limits, Reply, Server};
use crate::runtime::http::{self, Request, Response};
use crate::runtime::jobs::{defer_to_pool, JobPool};
use crate::runtime::running::Running;

/// File-node endpoints sent with each update, so a client can spread its downloads and
/// fall back to a second node when one fails mid-transfer.
pub const PICK_N_DEFAULT: usize = 2;
/// A balancer that takes longer than this to pick is treated as down for this request.
const PICK_TIMEOUT_MS: u64 = 200;
/// A balancer that did not answer at all is asked again only this long after, by one
/// request, while another balancer answers: a cut-off balancer answers nothing and each
/// call to it waits out [`PICK_TIMEOUT_MS`], which would otherwise delay every update
/// (and the first pick of the balancer taking over) during a partition. Long enough that
/// those retries hold few of the pick workers, short enough that a balancer which was
/// only slow once is back in use within half a second.
const SILENT_RETRY_MS: u64 = 500;
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
/// not yet learned it was replaced, and is not used. A balancer that answered nothing is
/// skipped until [`Picker::silent_retry`] has passed, as long as another one answers.
#[derive(Debug)]
struct Picker {
    balancers: Vec<SocketAddr>,
    pick_n: usize,
    /// See [`SILENT_RETRY_MS`].
    silent_retry: Duration,
    state: Mutex<PickerState>,
}

#[derive(Debug)]
struct PickerState {
    preferred: usize,
    epoch_max: u64,
    /// Per balancer: when it may be asked again after it answered nothing; `None` while
    /// it answers (a refusal such as `503 standby` is an answer).
    silent_until: Vec<Option<Instant>>,
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
    fn new(balancers: Vec<SocketAddr>, pick_n: usize, silent_retry: Duration) -> Picker {
        Picker {
            state: Mutex::new(PickerState {
                preferred: 0,
                epoch_max: 0,
                silent_until: vec![None; balancers.len()],
            }),
            balancers,
            pick_n,
            silent_retry,
        }
    }

    /// `GET path` on balancer `i`, unless it is left aside: it answered nothing last
    /// time, its retry time has not come, and another balancer answers. The first request
    /// past the retry time asks it again and moves the time on, so that the requests
    /// running meanwhile keep leaving it aside. When no balancer answers, each is asked,
    /// as before any of them fell silent.
    fn ask(&self, i: usize, path: &str) -> Option<ClientResponse> {
        {
            let mut state = self.state.lock().expect("picker lock");
            let now = Instant::now();
            if let Some(until) = state.silent_until[i] {
                let another_answers = state
                    .silent_until
                    .iter()
                    .enumerate()
                    .any(|(j, silent)| j != i && silent.is_none());
                if another_answers && now < until {
                    return None;
                }
                state.silent_until[i] = Some(now + self.silent_retry);
            }
        }
        let result = client::get(
            self.balancers[i],
            path,
            Duration::from_millis(PICK_TIMEOUT_MS),
        );
        let mut state = self.state.lock().expect("picker lock");
        state.silent_until[i] = match result {
            Ok(_) => None,
            Err(_) => Some(Instant::now() + self.silent_retry),
        };
        result.ok()
    }

    fn pick(&self) -> Option<Pick> {
        let (preferred, epoch_max) = {
            let state = self.state.lock().expect("picker lock");
            (state.preferred, state.epoch_max)
        };
        let count = self.balancers.len();
        let path = format!("/v1/pick?n={}", self.pick_n);
        for i in (0..count).map(|k| (preferred + k) % count) {
            let Some(response) = self.ask(i, &path) else {
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
        let epoch_max = self.state.lock().expect("picker lock").epoch_max;
        (0..self.balancers.len()).find_map(|i| {
            let response = self.ask(i, "/v1/status")?;
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
            picker: Arc::new(Picker::new(
                config.balancers,
                config.pick_n,
                Duration::from_millis(SILENT_RETRY_MS),
            )),
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
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    /// A fake balancer's mode: holds every connection and answers nothing, as a balancer
    /// cut off from the network does.
    const SILENT: u64 = u64::MAX;
    /// Refuses picks with `503 standby`; any other mode picks at that epoch.
    const STANDBY: u64 = 0;
    /// The node every fake balancer's status sees healthy.
    const HEALTHY_NODE: &str = "10.0.0.2:2";

    /// A balancer on loopback whose behaviour a test switches, counting its connections.
    struct FakeBalancer {
        addr: SocketAddr,
        mode: Arc<AtomicU64>,
        calls: Arc<AtomicUsize>,
    }

    impl FakeBalancer {
        fn start(mode: u64) -> FakeBalancer {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let mode = Arc::new(AtomicU64::new(mode));
            let calls = Arc::new(AtomicUsize::new(0));
            let (m, c) = (Arc::clone(&mode), Arc::clone(&calls));
            std::thread::spawn(move || {
                let mut held = Vec::new();
                for stream in listener.incoming() {
                    let Ok(mut stream) = stream else { continue };
                    c.fetch_add(1, Ordering::SeqCst);
                    let epoch = m.load(Ordering::SeqCst);
                    if epoch == SILENT {
                        held.push(stream);
                        continue;
                    }
                    let mut head = [0u8; 1024];
                    let n = stream.read(&mut head).unwrap_or(0);
                    let is_pick = head[..n].starts_with(b"GET /v1/pick");
                    let (status, body) = match (is_pick, epoch) {
                        (true, STANDBY) => (
                            "503 Service Unavailable",
                            r#"{"error":"standby","detail":"standby"}"#.to_string(),
                        ),
                        (true, _) => (
                            "200 OK",
                            format!(r#"{{"epoch":{epoch},"endpoints":["10.0.0.1:1"]}}"#),
                        ),
                        (false, _) => (
                            "200 OK",
                            format!(
                                r#"{{"role":"standby","epoch":1,"nodes":[{{"addr":"{HEALTHY_NODE}","healthy":true,"active_conns":0}}]}}"#
                            ),
                        ),
                    };
                    let _ = write!(
                        stream,
                        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                }
            });
            FakeBalancer { addr, mode, calls }
        }

        fn set(&self, mode: u64) {
            self.mode.store(mode, Ordering::SeqCst);
        }

        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    fn picker(balancers: &[&FakeBalancer], silent_retry: Duration) -> Picker {
        Picker::new(balancers.iter().map(|b| b.addr).collect(), 2, silent_retry)
    }

    #[test]
    fn a_cut_off_balancer_is_left_aside_while_the_standby_answers_and_takes_over() {
        let cut_off = FakeBalancer::start(SILENT);
        let standby = FakeBalancer::start(STANDBY);
        let picker = picker(&[&cut_off, &standby], Duration::from_secs(60));
        for _ in 0..5 {
            assert!(picker.pick().is_none(), "the standby does not pick");
            let view = picker
                .stale_view()
                .expect("the standby's view of healthy nodes");
            assert_eq!(view.endpoints, [HEALTHY_NODE]);
        }
        // Only the first pick waited on the cut-off balancer.
        assert_eq!(cut_off.calls(), 1);
        standby.set(7);
        assert_eq!(picker.pick().map(|p| p.epoch), Some(7));
        assert_eq!(cut_off.calls(), 1);
    }

    #[test]
    fn a_silent_balancer_is_asked_again_after_its_retry_time() {
        let retry = Duration::from_millis(400);
        let first = FakeBalancer::start(SILENT);
        let standby = FakeBalancer::start(STANDBY);
        let picker = picker(&[&first, &standby], retry);
        assert!(picker.pick().is_none());
        assert!(picker.pick().is_none());
        assert_eq!(first.calls(), 1, "left aside within its retry time");
        first.set(5);
        std::thread::sleep(retry);
        assert_eq!(picker.pick().map(|p| p.epoch), Some(5));
        assert_eq!(first.calls(), 2);
    }

    #[test]
    fn a_lower_epoch_is_refused_while_the_balancer_that_had_a_higher_one_is_silent() {
        let active = FakeBalancer::start(6);
        let stale = FakeBalancer::start(5);
        let picker = picker(&[&active, &stale], Duration::from_secs(60));
        assert_eq!(picker.pick().map(|p| p.epoch), Some(6));
        active.set(SILENT);
        for _ in 0..3 {
            assert!(
                picker.pick().is_none(),
                "epoch 5 must not be trusted after 6"
            );
        }
        assert_eq!(active.calls(), 2, "asked once more, then left aside");
        stale.set(7);
        assert_eq!(picker.pick().map(|p| p.epoch), Some(7));
    }

    #[test]
    fn when_no_balancer_answers_each_is_still_asked() {
        let a = FakeBalancer::start(SILENT);
        let b = FakeBalancer::start(SILENT);
        let picker = picker(&[&a, &b], Duration::from_secs(60));
        assert!(picker.pick().is_none());
        assert!(picker.pick().is_none());
        assert_eq!((a.calls(), b.calls()), (2, 2));
    }
}
