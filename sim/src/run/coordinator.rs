//! The coordinator of a run with worker processes (`catwar-sim run` with
//! `load.workers` > 1): it spawns the workers, relays orders to them (balancer kills,
//! the knee, Ctrl-C), merges their seconds into the series as they come and their
//! totals at the end, exactly.
//!
//! One process holds at most `ulimit -n` sockets (20,000 on the reference machine), so a
//! run of 50,000 clients needs several. Worker i of n drives the clients (or open-model
//! arrivals) k with k % n == i; with `population.users` a multiple of n each user's
//! clients live in one worker, which therefore checks `results.no_loss` for its own
//! users. Every worker starts at the same wall-clock instant, so their seconds line up.
//!
//! Only spawning and reaping are about processes; the exchange of messages takes any
//! byte streams, so that workers on other hosts can join through the same code.

use super::live::Outlets;
use super::protocol::{FromWorker, MergeError, ToWorker, WireSecond, WireTotals};
use super::seconds::SecondWatcher;
use super::share::{check_results, Share};
use super::transport::{MessageReader, MessageWriter, TransportError};
use super::worker::WorkerArgs;
use super::{Driven, RunError};
use crate::ledger::Mode;
use crate::metrics::{
    interval_histogram, IntervalPoint, IntervalStep, InvariantCount, LoadPoint, Metrics,
};
use crate::report::{decode_histogram, KneeReport};
use crate::scenario::Scenario;
use crate::step::{Invariant, Step};
use crate::tokens::TokenPrefix;
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufRead, AsyncWrite, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};

/// Workers need a moment to start, read the topology and ask storage for the version;
/// the run starts this long after they were spawned, for all of them at once.
pub(super) const WORKER_START_DELAY_MS: u64 = 1_500;
/// A message from a worker: a second's histograms are a few KiB, the final totals with
/// every token prefix a few MiB for a million logins.
pub(super) const FROM_WORKER_BYTES_MAX: usize = 256 * 1024 * 1024;
/// A worker sends a second every second once its clients run; one silent for this long
/// is stuck or cut off, and the run goes on without it. Ten missed seconds, so that a
/// worker starting up (reading the topology, asking storage) or sending its totals is
/// never taken for lost.
const WORKER_SILENCE_S_MAX: u64 = 10;

/// What went wrong with one worker.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WorkerProblem {
    /// The coordinator's own executable, which the workers run, could not be found.
    #[error("cannot find catwar-sim itself")]
    NoExecutable(#[source] std::io::Error),
    /// The worker process could not be started.
    #[error("cannot start worker {index}")]
    Spawn {
        index: usize,
        #[source]
        source: std::io::Error,
    },
    /// The worker's messages could not be read.
    #[error("{who}")]
    Message {
        who: String,
        #[source]
        source: TransportError,
    },
    /// The worker sent nothing for too long.
    #[error("{who} sent nothing for {WORKER_SILENCE_S_MAX} s")]
    Silent { who: String },
    /// A message of the worker could not be merged.
    #[error("{who}")]
    Merge {
        who: String,
        #[source]
        source: MergeError,
    },
    /// The worker process could not be waited for.
    #[error("{who}")]
    Wait {
        who: String,
        #[source]
        source: std::io::Error,
    },
    /// The worker process failed.
    #[error("{who} exited with {status}")]
    Exit { who: String, status: ExitStatus },
    /// The worker ended without its totals.
    #[error("{who} ended without its totals")]
    NoTotals { who: String },
}

/// Everything that went wrong with a run's worker processes, each problem named.
#[derive(Debug, thiserror::Error)]
#[error("worker processes: {}", describe(.0))]
pub struct WorkerProblems(Vec<WorkerProblem>);

fn describe(problems: &[WorkerProblem]) -> String {
    let described: Vec<String> = problems.iter().map(|p| crate::error_chain(p)).collect();
    described.join("; ")
}

/// Where the run's user DB is and how strictly the workers' ledgers must agree with it.
#[derive(Clone, Copy, Debug)]
pub(super) struct ResultsDb<'a> {
    /// The user DB file.
    pub(super) path: &'a Path,
    /// `exact` for the embedded topology, `at-least` for a `--target`.
    pub(super) mode: Mode,
}

/// Runs the scenario's clients in `plan.count` worker processes, each started with
/// `plan` but for its index, and merges their seconds into `metrics` as they come, and
/// their totals at the end.
pub(super) async fn coordinate(
    scenario: &Scenario,
    plan: &WorkerArgs,
    db: ResultsDb<'_>,
    metrics: &Arc<Metrics>,
    outlets: Outlets,
    interrupt: &mut watch::Receiver<bool>,
) -> Result<Driven, RunError> {
    let mut children = spawn_workers(plan)?;
    let links = children
        .iter_mut()
        .enumerate()
        .map(|(index, child)| Link {
            name: format!("worker {index}"),
            reader: MessageReader::new(
                BufReader::new(child.stdout.take().expect("stdout is piped")),
                FROM_WORKER_BYTES_MAX,
            ),
            writer: MessageWriter::new(child.stdin.take().expect("stdin is piped")),
            received_bytes: Arc::new(AtomicU64::new(0)),
        })
        .collect();
    let mut exchanged = exchange(scenario, links, metrics, outlets, interrupt).await;
    for (index, child) in children.iter_mut().enumerate() {
        let who = format!("worker {index}");
        match child.wait().await {
            Ok(status) if status.success() => {}
            Ok(status) => exchanged.problems.push(WorkerProblem::Exit { who, status }),
            Err(source) => exchanged.problems.push(WorkerProblem::Wait { who, source }),
        }
    }
    Ok(conclude(scenario, db, metrics, exchanged).await)
}

/// Merges the totals of every worker that sent them, checks each one's ledger against
/// the user DB, and names the workers lost on the way.
pub(super) async fn conclude(
    scenario: &Scenario,
    db: ResultsDb<'_>,
    metrics: &Metrics,
    mut exchanged: Exchanged,
) -> Driven {
    absorb(metrics, &mut exchanged);
    let count = exchanged.finals.len() as u64;
    for (index, totals) in exchanged.finals.iter_mut().enumerate() {
        let Some(ledger) = totals.as_mut().and_then(|t| t.ledger.take()) else {
            continue;
        };
        let share = Share {
            index: index as u64,
            count,
        };
        let snapshot = ledger.into_snapshot(Instant::now());
        check_results(scenario, snapshot, db.path, db.mode, metrics, share).await;
    }
    let problems: Vec<String> = exchanged
        .problems
        .iter()
        .map(|p| crate::error_chain(p))
        .collect();
    for problem in &problems {
        eprintln!("catwar-sim: {problem}");
    }
    Driven {
        interrupted: exchanged.interrupted,
        knee: exchanged.knee,
        worker_problems: problems,
    }
}

fn spawn_workers(plan: &WorkerArgs) -> Result<Vec<Child>, WorkerProblems> {
    let failed = |problem| WorkerProblems(vec![problem]);
    let exe = std::env::current_exe().map_err(|e| failed(WorkerProblem::NoExecutable(e)))?;
    let mut children = Vec::with_capacity(plan.count as usize);
    for index in 0..plan.count {
        let args = WorkerArgs {
            index,
            ..plan.clone()
        };
        let child = Command::new(&exe)
            .arg("worker")
            .args(args.to_command_line())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // Ctrl-C reaches the coordinator only, which tells the workers in order.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| {
                failed(WorkerProblem::Spawn {
                    index: index as usize,
                    source,
                })
            })?;
        children.push(child);
    }
    Ok(children)
}

/// One worker as the coordinator reaches it: its name in messages, where its messages
/// come from and where its orders go.
pub(super) struct Link<R, W> {
    /// `worker 1`, or `agent 1 (host, 10.0.0.5:41234)`.
    pub(super) name: String,
    pub(super) reader: MessageReader<R>,
    pub(super) writer: MessageWriter<W>,
    /// Bytes of its messages read so far, for the bandwidth an agent needs.
    pub(super) received_bytes: Arc<AtomicU64>,
}

/// What came of the workers once every one of them ended.
pub(super) struct Exchanged {
    /// Each worker's totals, if it sent them.
    finals: Vec<Option<WireTotals>>,
    /// Each worker's name.
    names: Vec<String>,
    problems: Vec<WorkerProblem>,
    interrupted: bool,
    knee: Option<KneeReport>,
}

/// What a worker's reader passes on.
enum Event {
    /// A message.
    Message(FromWorker),
    /// A line that could not be read; the stream ends after it unless it is recoverable.
    Unreadable(TransportError),
    /// Nothing came for [`WORKER_SILENCE_S_MAX`].
    Silent,
    /// The stream ended.
    Ended,
}

/// Relays orders to the workers and merges their seconds until every worker sent its
/// totals or was lost: its stream ended, could not be read, or fell silent.
pub(super) async fn exchange<R, W>(
    scenario: &Scenario,
    links: Vec<Link<R, W>>,
    metrics: &Arc<Metrics>,
    outlets: Outlets,
    interrupt: &mut watch::Receiver<bool>,
) -> Exchanged
where
    R: AsyncBufRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin,
{
    let count = links.len();
    let (messages_tx, mut messages) = mpsc::unbounded_channel();
    let mut orders = Orders {
        writers: Vec::with_capacity(count),
    };
    let mut names = Vec::with_capacity(count);
    for (index, link) in links.into_iter().enumerate() {
        tokio::spawn(forward(
            index,
            link.reader,
            link.received_bytes,
            messages_tx.clone(),
        ));
        orders.writers.push(Some(link.writer));
        names.push(link.name);
    }
    drop(messages_tx);
    let (kills_tx, mut kills) = mpsc::unbounded_channel();
    metrics.forward_kills(kills_tx);
    let (stop_arrivals, mut arrivals_stopped) = watch::channel(false);
    let mut watcher = SecondWatcher::new(scenario, stop_arrivals, outlets);
    let mut pending: BTreeMap<u64, Merging> = BTreeMap::new();
    let mut next_second = 0;
    let mut finals: Vec<Option<WireTotals>> = (0..count).map(|_| None).collect();
    let mut ended = vec![false; count];
    let mut problems = Vec::new();
    let mut interrupted = false;
    while ended.iter().any(|e| !e) {
        tokio::select! {
            event = messages.recv() => match event {
                Some((index, Event::Message(FromWorker::Second(second)))) => {
                    let merging = pending.entry(second.t_s).or_insert_with(Merging::new);
                    if let Err(source) = merging.add(&second) {
                        problems.push(WorkerProblem::Merge { who: names[index].clone(), source });
                    }
                }
                Some((index, Event::Message(FromWorker::Done(totals)))) => {
                    finals[index] = Some(*totals);
                }
                Some((index, Event::Unreadable(source))) => {
                    let who = names[index].clone();
                    ended[index] |= !source.is_recoverable();
                    problems.push(WorkerProblem::Message { who, source });
                }
                Some((index, Event::Silent)) => {
                    ended[index] = true;
                    problems.push(WorkerProblem::Silent { who: names[index].clone() });
                }
                Some((index, Event::Ended)) => {
                    if !ended[index] && finals[index].is_none() {
                        problems.push(WorkerProblem::NoTotals { who: names[index].clone() });
                    }
                    ended[index] = true;
                }
                None => break,
            },
            Some(at_us) = kills.recv() => orders.tell(ToWorker::Kill { at_us }).await,
            Ok(()) = arrivals_stopped.changed() => orders.tell(ToWorker::StopArrivals).await,
            _ = interrupt.wait_for(|&fired| fired), if !interrupted => {
                interrupted = true;
                orders.tell(ToWorker::Interrupt).await;
            }
        }
        for (index, total) in finals.iter().enumerate() {
            ended[index] |= total.is_some();
        }
        // A second is complete once every worker still running has sent it.
        let live = ended.iter().filter(|e| !**e).count();
        while let Some(merging) = pending.get(&next_second) {
            if merging.received < live && live > 0 {
                break;
            }
            let merging = pending.remove(&next_second).expect("present");
            let histograms = merging.histograms();
            let point = merging.point(next_second);
            watcher.merged(&point, &histograms);
            metrics.push_point(point);
            next_second += 1;
        }
    }
    for (t_s, merging) in std::mem::take(&mut pending) {
        let histograms = merging.histograms();
        let point = merging.point(t_s);
        watcher.merged(&point, &histograms);
        metrics.push_point(point);
    }
    watcher.finish();
    Exchanged {
        finals,
        names,
        problems,
        interrupted,
        knee: watcher.knee_report(),
    }
}

/// Adds every worker's totals to `metrics`, and counts the tokens that two workers both
/// saw as violations of `tokens.unique`.
fn absorb(metrics: &Metrics, exchanged: &mut Exchanged) {
    let mut duplicates = 0;
    for (index, totals) in exchanged.finals.iter().enumerate() {
        let Some(totals) = totals else {
            continue;
        };
        exchanged.interrupted |= totals.interrupted;
        match totals.to_snapshot() {
            Ok(snapshot) => metrics.absorb(&snapshot),
            Err(source) => exchanged.problems.push(WorkerProblem::Merge {
                who: exchanged.names[index].clone(),
                source,
            }),
        }
        for prefix in totals
            .tokens
            .iter()
            .filter_map(|t| TokenPrefix::from_hex(t))
        {
            duplicates += u64::from(!metrics.merge_token(prefix));
        }
    }
    // Each worker checked its own tokens; a token two workers both saw is one more.
    let count = InvariantCount {
        checked: 0,
        violations: duplicates,
    };
    metrics.add_invariant(Invariant::TokensUnique, count);
}

/// Where the workers' orders go.
struct Orders<W> {
    /// One writer per worker; `None` once a worker stopped listening.
    writers: Vec<Option<MessageWriter<W>>>,
}

impl<W: AsyncWrite + Unpin> Orders<W> {
    /// Sends `order` to every worker still listening.
    async fn tell(&mut self, order: ToWorker) {
        for slot in &mut self.writers {
            if let Some(writer) = slot {
                if writer.send(&order).await.is_err() {
                    *slot = None;
                }
            }
        }
    }
}

/// Forwards a worker's messages until its stream ends, can no longer be read or stays
/// silent too long; an unreadable message is reported and the next one read.
async fn forward<R: AsyncBufRead + Unpin>(
    index: usize,
    mut reader: MessageReader<R>,
    received_bytes: Arc<AtomicU64>,
    events: mpsc::UnboundedSender<(usize, Event)>,
) {
    let silence = Duration::from_secs(WORKER_SILENCE_S_MAX);
    loop {
        let (event, more) = match tokio::time::timeout(silence, reader.recv::<FromWorker>()).await {
            Err(_) => (Event::Silent, false),
            Ok(Ok(None)) => (Event::Ended, false),
            Ok(Ok(Some(message))) => (Event::Message(message), true),
            Ok(Err(e)) => {
                let more = e.is_recoverable();
                (Event::Unreadable(e), more)
            }
        };
        received_bytes.store(reader.bytes_read(), Ordering::Relaxed);
        if events.send((index, event)).is_err() || !more {
            return;
        }
    }
}

/// A second being merged from the workers' messages.
struct Merging {
    received: usize,
    steps: Vec<(u64, u64, Histogram<u64>)>,
    errors_by_code: Vec<BTreeMap<String, u64>>,
    load: LoadPoint,
}

impl Merging {
    fn new() -> Merging {
        Merging {
            received: 0,
            steps: Step::ALL
                .iter()
                .map(|_| (0, 0, interval_histogram()))
                .collect(),
            errors_by_code: vec![BTreeMap::new(); Step::ALL.len()],
            load: LoadPoint::default(),
        }
    }

    fn add(&mut self, second: &WireSecond) -> Result<(), MergeError> {
        self.received += 1;
        self.load.add(&second.load);
        for (into, from) in self.errors_by_code.iter_mut().zip(&second.steps) {
            for (code, n) in &from.errors_by_code {
                *into.entry(code.clone()).or_insert(0) += n;
            }
        }
        for (into, from) in self.steps.iter_mut().zip(&second.steps) {
            into.0 += from.requests;
            into.1 += from.errors;
            if let Some(hist) = &from.hist {
                into.2
                    .add(decode_histogram(hist)?)
                    .map_err(MergeError::Shape)?;
            }
        }
        Ok(())
    }

    /// The merged latency histograms per step, for the live outlets.
    fn histograms(&self) -> Vec<Histogram<u64>> {
        self.steps.iter().map(|(_, _, hist)| hist.clone()).collect()
    }

    fn point(self, t_s: u64) -> IntervalPoint {
        IntervalPoint {
            t_s,
            steps: self
                .steps
                .iter()
                .map(|(requests, errors, hist)| {
                    IntervalStep::from_histogram(*requests, *errors, hist)
                })
                .collect(),
            errors_by_code: self.errors_by_code,
            load: self.load,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::latency_histogram;
    use crate::report::encode_histogram;
    use crate::run::protocol::WireInterval;

    #[test]
    fn merged_seconds_add_histograms_not_percentiles() {
        // Worker A: 99 fast answers; worker B: one slow one. The merged p99 is the fast
        // value, where averaging the two p99s would report half a second.
        let mut fast = latency_histogram();
        fast.record_n(1_000, 99).unwrap();
        let mut slow = latency_histogram();
        slow.record(1_000_000).unwrap();
        let second = |hist: &Histogram<u64>, requests| WireSecond {
            t_s: 0,
            steps: Step::ALL
                .iter()
                .map(|&step| WireInterval {
                    requests: if step == Step::LobbyMe { requests } else { 0 },
                    errors: 0,
                    hist: (step == Step::LobbyMe).then(|| encode_histogram(hist)),
                    errors_by_code: BTreeMap::new(),
                })
                .collect(),
            load: LoadPoint {
                active: requests,
                ..LoadPoint::default()
            },
        };
        let mut merging = Merging::new();
        merging.add(&second(&fast, 99)).unwrap();
        merging.add(&second(&slow, 1)).unwrap();
        let point = merging.point(0);
        let me = point.steps[Step::LobbyMe.index()];
        assert_eq!(me.requests, 100);
        assert!(me.p99_us.unwrap() < 1_100, "{:?}", me.p99_us);
        assert_eq!(point.load.active, 100);
    }
}
