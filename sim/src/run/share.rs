//! The clients of one process, and the one code path that drives them, whether the
//! process is a single-process run or one worker of many: which of a run's clients it
//! owns ([`Share`]), the closed loop that runs them until the deadline, the open model's
//! dispatcher that starts each arrival at its scheduled time, a ticker that closes one
//! second of the series every second, and the `results.no_loss` check of a share's
//! ledger, made by whichever process can read the user DB.

use super::reach::Reached;
use super::seconds::{each_second, SecondSink};
use crate::arrivals::Arrivals;
use crate::ledger::{self, Mode};
use crate::metrics::{InvariantCount, Metrics};
use crate::net::http::REQUEST_TIMEOUT_MS;
use crate::scenario::{Fault, LoadModel, Scenario};
use crate::script::{run_arrival, run_client, PlayPlan, ScriptEnv, SourcePool};
use crate::step::Invariant;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// After the deadline, clients finish the request in flight; a request never takes
/// longer than its timeout, so this grace is enough for all of them.
const CLIENT_GRACE_MS: u64 = REQUEST_TIMEOUT_MS + 1_000;

/// The part of a run's clients one process drives: client (or arrival) k belongs to
/// process `k % count == index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Share {
    /// This process's number, from 0.
    pub(super) index: u64,
    /// Processes in the run.
    pub(super) count: u64,
}

impl Share {
    /// A run in one process.
    pub(super) const WHOLE: Share = Share { index: 0, count: 1 };

    /// One client alone, as `catwar-sim replay` runs it: a share of one among more
    /// processes than there are clients.
    pub(super) fn only(client: u64) -> Share {
        Share {
            index: client,
            count: u64::MAX,
        }
    }

    /// Whether client or arrival `id` is this process's.
    pub(super) fn owns(self, id: u64) -> bool {
        id % self.count == self.index
    }

    /// This process's part of `total` (clients, or the open model's cap).
    /// At least one, so that every process (and a replayed client) can run.
    pub(super) fn part_of(self, total: u64) -> u64 {
        (total / self.count + u64::from(self.index < total % self.count)).max(1)
    }

    /// Whether seeded user `user` (`user{n}`) is driven only by this process. With
    /// `population.users` a multiple of the process count, client k's user k % users + 1
    /// lives in the same process as client k. Users outside the seeded names belong to
    /// process 0.
    pub(super) fn owns_user(self, user: &str) -> bool {
        match user
            .strip_prefix("user")
            .and_then(|n| n.parse::<u64>().ok())
        {
            Some(n) if n >= 1 => self.owns(n - 1),
            _ => self.index == 0,
        }
    }
}

/// What a process needs to drive its share of a run's clients.
#[derive(Debug)]
pub(super) struct ShareRun<'a> {
    /// The scenario of the run.
    pub(super) scenario: &'a Scenario,
    /// Which clients are this process's.
    pub(super) share: Share,
    /// Where its clients connect from.
    pub(super) sources: SourcePool,
    /// Where the clients record; its start is the run's.
    pub(super) metrics: &'a Arc<Metrics>,
}

/// How a share's clients came out.
pub(super) struct ShareEnd<S> {
    /// Whether Ctrl-C or SIGTERM (or the coordinator) cut the run short.
    pub(super) interrupted: bool,
    /// Where the seconds went, handed back.
    pub(super) seconds: S,
    /// What the clients saw of match results, to compare with the user DB; `None` when
    /// interrupted: such a run proves nothing, and its clients' matches were cut off.
    pub(super) ledger: Option<ledger::Snapshot>,
}

/// Drives `run.share` of the clients against the topology `reached` until the deadline
/// or `interrupt`.
///
/// Every second of the series is closed here and handed to `seconds`: shown and judged
/// for the knee in a single process, sent to the coordinator by a worker. Once the
/// clients stopped, `clients_done` fires (it also stops the ticker, after a last partial
/// second).
pub(super) async fn drive_share<S: SecondSink>(
    run: ShareRun<'_>,
    reached: Reached,
    seconds: S,
    clients_done: &watch::Sender<bool>,
    interrupt: &mut watch::Receiver<bool>,
    arrivals_stopped: watch::Receiver<bool>,
) -> ShareEnd<S> {
    let metrics = run.metrics;
    let env = Arc::new(script_env(run.scenario, reached, run.sources, metrics.start()));
    let ticker = tokio::spawn(tick(Arc::clone(metrics), clients_done.subscribe(), seconds));
    let interrupted = drive(
        run.scenario,
        &env,
        metrics,
        run.share,
        interrupt,
        arrivals_stopped,
    )
    .await;
    // Stops the ticker (unless its seconds went nowhere and it stopped already) and
    // whatever else waits for the clients, such as a single process's fault schedule.
    let _ = clients_done.send(true);
    let seconds = ticker.await.expect("the ticker does not panic");
    ShareEnd {
        interrupted,
        seconds,
        ledger: (!interrupted).then(|| env.ledger.snapshot()),
    }
}

/// Closes one second of the series every second, and the last partial one when `stop`
/// changes, handing each to `seconds`; ends early if `seconds` wants no more.
async fn tick<S: SecondSink>(
    metrics: Arc<Metrics>,
    stop: watch::Receiver<bool>,
    mut seconds: S,
) -> S {
    each_second(metrics.start(), stop, |last| {
        let (point, histograms) = metrics.close_interval();
        let more = seconds.second(point, histograms);
        if last {
            seconds.finish();
        }
        more
    })
    .await;
    seconds
}

/// What every client of a run shares, for a run that started at `start`.
fn script_env(
    scenario: &Scenario,
    reached: Reached,
    sources: SourcePool,
    start: Instant,
) -> ScriptEnv {
    ScriptEnv {
        storage: reached.storage,
        profile: reached.profile,
        router: reached.router,
        tls: reached.tls,
        current_version: reached.current_version,
        stale_version: scenario.population.stale_version.clone(),
        users: scenario.population.user_count(),
        branches: scenario.script.clone(),
        token_idle_s: scenario.server.token_idle_s,
        play: PlayPlan::new(&scenario.server, &scenario.script),
        ledger: ledger::Ledger::default(),
        think_time_ms: scenario.load.think_time_ms,
        start_spread_ms: scenario.load.start_window_ms(),
        file_nodes: reached.file_nodes,
        file_nodes_killed: scenario.faults.iter().any(Fault::stops_file_node),
        observers_killed: scenario.faults.iter().any(Fault::stops_observer),
        seed: scenario.scenario.seed,
        deadline: start + Duration::from_secs(scenario.scenario.duration_s),
        sources,
    }
}

/// Compares the `ledger` of `share`'s clients with the user DB at `db`
/// (`results.no_loss`) for the users of that share, and adds the outcome to `metrics`.
/// The embedded topology was seeded by the simulator and served no one else, so its DB
/// must match exactly; a DB that cannot be read leaves the invariant unchecked, with a
/// warning.
pub(super) async fn check_results(
    scenario: &Scenario,
    ledger: ledger::Snapshot,
    db: &Path,
    mode: Mode,
    metrics: &Metrics,
    share: Share,
) {
    let owns = move |user: &str| share.owns_user(user);
    let match_length = PlayPlan::new(&scenario.server, &scenario.script).normal_length();
    match ledger::check(ledger, db, mode, match_length, owns).await {
        Ok(verdict) => {
            eprintln!(
                "catwar-sim: results.no_loss: {} matches and users checked against {} ({} matches \
                 recorded aborted), {} violations",
                verdict.checked,
                db.display(),
                verdict.aborted,
                verdict.violations
            );
            for problem in &verdict.problems {
                eprintln!("catwar-sim: results.no_loss violated: {problem}");
            }
            let count = InvariantCount {
                checked: verdict.checked,
                violations: verdict.violations,
            };
            metrics.add_invariant(Invariant::ResultsNoLoss, count);
        }
        Err(e) => eprintln!("catwar-sim: warning: {}", crate::error_chain(&e)),
    }
}

/// Runs this process's share of the clients until the deadline (or, in the open model,
/// until the last arrival's session ended) and stops them; true if interrupted.
async fn drive(
    scenario: &Scenario,
    env: &Arc<ScriptEnv>,
    metrics: &Arc<Metrics>,
    share: Share,
    interrupt: &mut watch::Receiver<bool>,
    arrivals_stopped: watch::Receiver<bool>,
) -> bool {
    let mut tasks = JoinSet::new();
    let deadline = env.deadline;
    let interrupted = match scenario.load.model {
        LoadModel::Closed => {
            for id in (0..scenario.population.clients).filter(|&id| share.owns(id)) {
                tasks.spawn(run_client(Arc::clone(env), id, metrics.recorder(id)));
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline.into()) => false,
                _ = interrupt.wait_for(|&fired| fired) => true,
            }
        }
        LoadModel::Open => {
            let cap = share.part_of(scenario.population.clients);
            let open = open_model(
                scenario,
                env,
                metrics,
                share,
                cap,
                &mut tasks,
                arrivals_stopped,
            );
            tokio::select! {
                _ = open => false,
                _ = tokio::time::sleep_until(deadline.into()) => false,
                _ = interrupt.wait_for(|&fired| fired) => true,
            }
        }
    };
    if !interrupted {
        let grace = Duration::from_millis(CLIENT_GRACE_MS);
        let finished = async { while tasks.join_next().await.is_some() {} };
        // Clients still running after the grace are stuck; they are aborted below.
        tokio::select! {
            _ = tokio::time::timeout(grace, finished) => {}
            _ = interrupt.wait_for(|&fired| fired) => {}
        }
    }
    tasks.shutdown().await;
    interrupted
}

/// Starts this process's share of the open model's arrivals at their times, each as a
/// client that plays one session, while fewer than `cap` are busy; the others are
/// counted as dropped. Returns once the arrivals are over (the stages ended or the knee
/// stopped them) and every started session ended.
async fn open_model(
    scenario: &Scenario,
    env: &Arc<ScriptEnv>,
    metrics: &Arc<Metrics>,
    share: Share,
    cap: u64,
    tasks: &mut JoinSet<()>,
    mut arrivals_stopped: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(cap as usize));
    let start = metrics.start();
    let arrivals = Arrivals::new(&scenario.load, scenario.scenario.seed);
    for (id, at_s) in arrivals.enumerate() {
        let id = id as u64;
        if !share.owns(id) {
            continue;
        }
        let at = start + Duration::from_secs_f64(at_s);
        tokio::select! {
            _ = tokio::time::sleep_until(at.into()) => {}
            _ = arrivals_stopped.wait_for(|&stopped| stopped) => break,
        }
        // Finished sessions are reaped as arrivals go, so a long soak holds only the
        // clients in flight.
        while tasks.try_join_next().is_some() {}
        match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => {
                metrics.arrival(true);
                let env = Arc::clone(env);
                let recorder = metrics.recorder(id);
                tasks.spawn(async move {
                    run_arrival(env, id, recorder, at).await;
                    drop(slot);
                });
            }
            Err(_) => metrics.arrival(false),
        }
    }
    metrics.stop_offering();
    while tasks.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_split_clients_and_users_alike() {
        let shares: Vec<Share> = (0..4).map(|index| Share { index, count: 4 }).collect();
        for id in 0..1_000u64 {
            assert_eq!(shares.iter().filter(|s| s.owns(id)).count(), 1);
        }
        assert_eq!(
            shares.iter().map(|s| s.part_of(10)).collect::<Vec<_>>(),
            [3, 3, 2, 2]
        );
        // Client 5 logs in as user6 (users = 8, a multiple of 4): both are worker 1's.
        assert!(shares[1].owns(5) && shares[1].owns_user("user6"));
        assert!(shares[0].owns_user("admin") && !shares[1].owns_user("admin"));
    }
}
