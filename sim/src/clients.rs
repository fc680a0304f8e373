//! The clients of one process: which of a run's clients it owns ([`Share`]), the closed
//! loop that runs them until the deadline, and the open model's dispatcher that starts
//! each arrival at its scheduled time.

use crate::arrivals::Arrivals;
use crate::metrics::Metrics;
use crate::run::CLIENT_GRACE_MS;
use crate::scenario::{LoadModel, Scenario};
use crate::script::{run_arrival, run_client, ScriptEnv};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// The part of a run's clients one process drives: client (or arrival) k belongs to
/// process `k % count == index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Share {
    /// This process's number, from 0.
    pub index: u64,
    /// Processes in the run.
    pub count: u64,
}

impl Share {
    /// A run in one process.
    pub const WHOLE: Share = Share { index: 0, count: 1 };

    /// One client alone, as `catwar-sim replay` runs it: a share of one among more
    /// processes than there are clients.
    pub fn only(client: u64) -> Share {
        Share {
            index: client,
            count: u64::MAX,
        }
    }

    /// Whether client or arrival `id` is this process's.
    pub fn owns(self, id: u64) -> bool {
        id % self.count == self.index
    }

    /// This process's part of `total` (clients, or the open model's cap).
    /// At least one, so that every process (and a replayed client) can run.
    pub fn part_of(self, total: u64) -> u64 {
        (total / self.count + u64::from(self.index < total % self.count)).max(1)
    }

    /// Whether seeded user `user` (`user{n}`) is driven only by this process. With
    /// `population.users` a multiple of the process count, client k's user k % users + 1
    /// lives in the same process as client k. Users outside the seeded names belong to
    /// process 0.
    pub fn owns_user(self, user: &str) -> bool {
        match user
            .strip_prefix("user")
            .and_then(|n| n.parse::<u64>().ok())
        {
            Some(n) if n >= 1 => self.owns(n - 1),
            _ => self.index == 0,
        }
    }
}

/// Runs this process's share of the clients until the deadline (or, in the open model,
/// until the last arrival's session ended) and stops them; true if interrupted.
pub(crate) async fn drive(
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
