//! Worker processes: a run's clients shared among several `catwar-sim worker` processes,
//! and their measurements merged exactly by the coordinator (`catwar-sim run`).
//!
//! One process holds at most `ulimit -n` sockets (20,000 on the reference machine), so a
//! run of 50,000 clients needs several. Worker i of n drives the clients (or open-model
//! arrivals) k with k % n == i; with `population.users` a multiple of n each user's
//! clients live in one worker, which therefore checks `results.no_loss` for its own
//! users. Every worker starts at the same wall-clock instant, so their seconds line up.
//!
//! The coordinator talks to workers over pipes, one JSON object per line:
//!
//! - worker → coordinator (stdout): `{"second": {...}}` every second, with each step's
//!   requests, errors and latency histogram of that second (HdrHistogram V2, base64);
//!   then `{"done": {...}}` with its totals: every step's full histogram and counts,
//!   invariants, funnel, arrivals, its view of each balancer kill and every token prefix
//!   it saw. Histograms are added, never percentiles averaged, so the merged report is
//!   the one a single process would have written. The same lines could come over a
//!   socket from another machine.
//! - coordinator → worker (stdin): `kill <µs>` when a balancer kill starts a failover
//!   window, `stop-arrivals` when a capacity run found its knee, `interrupt` on Ctrl-C.
//!   End of input (a dead coordinator) interrupts the worker too.

use crate::failover::KillWindow;
use crate::ledger::Mode;
use crate::metrics::{
    interval_histogram, IntervalPoint, IntervalStep, InvariantCount, LoadPoint, Metrics, Snapshot,
    StageTotals, StepTotals,
};
use crate::report::{decode_histogram, encode_histogram, FunnelRow, StepReport};
use crate::run::{self, Driven, RunError, SecondWatcher, Share};
use crate::scenario::{LoadModel, Scenario};
use crate::step::{Invariant, Stage, Step};
use crate::tokens::TokenPrefix;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{mpsc, watch};

/// Workers need a moment to start, read the topology and ask storage for the version;
/// the run starts this long after they were spawned, for all of them at once.
pub const WORKER_START_DELAY_MS: u64 = 1_500;
/// A line from a worker: a second's histograms are a few KiB, the final totals with
/// every token prefix a few MiB for a million logins.
const WORKER_LINE_BYTES_MAX: usize = 256 * 1024 * 1024;

/// One line from a worker. Externally tagged: an internally tagged enum would buffer
/// its content and lose serde_json's integer map keys (the kill windows' epochs).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerLine {
    /// One second of the series.
    Second(WireSecond),
    /// The worker's totals, after its clients stopped and its results were checked.
    Done(Box<WireTotals>),
}

/// One second of a worker.
#[derive(Debug, Serialize, Deserialize)]
pub struct WireSecond {
    /// The second, from the shared start.
    pub t_s: u64,
    /// Per step, in `Step::ALL` order.
    pub steps: Vec<WireInterval>,
    /// Arrivals, active clients, the worker's descriptors and memory.
    pub load: LoadPoint,
}

/// One step in one second of a worker.
#[derive(Debug, Serialize, Deserialize)]
pub struct WireInterval {
    /// Requests.
    pub requests: u64,
    /// Failed requests.
    pub errors: u64,
    /// The second's latency histogram, if it has samples.
    pub hist: Option<String>,
}

/// A worker's totals.
#[derive(Debug, Serialize, Deserialize)]
pub struct WireTotals {
    /// Whether the worker was interrupted.
    pub interrupted: bool,
    /// Per step, in `Step::ALL` order.
    pub steps: Vec<StepReport>,
    /// Per invariant, in `Invariant::ALL` order.
    pub invariants: Vec<InvariantCount>,
    /// Per stage, in `Stage::ALL` order.
    pub funnel: Vec<FunnelRow>,
    /// Arrivals started and dropped.
    pub load: LoadPoint,
    /// The worker's view of every balancer kill.
    pub kill_windows: Vec<KillWindow>,
    /// Every token prefix issued to the worker's clients, as hex.
    pub tokens: Vec<String>,
    /// The worker's resident memory before its clients started, KiB.
    pub baseline_rss_kib: u64,
}

impl WireTotals {
    fn from_snapshot(snapshot: &Snapshot, tokens: Vec<TokenPrefix>, interrupted: bool) -> Self {
        WireTotals {
            interrupted,
            steps: snapshot.steps.iter().map(StepReport::from_totals).collect(),
            invariants: snapshot.invariants.clone(),
            funnel: Stage::ALL
                .iter()
                .map(|&stage| FunnelRow::from_totals(stage, &snapshot.funnel[stage.index()]))
                .collect(),
            load: snapshot.load,
            kill_windows: snapshot.kill_windows.clone(),
            tokens: tokens.into_iter().map(TokenPrefix::to_hex).collect(),
            baseline_rss_kib: snapshot.baseline_rss_kib,
        }
    }

    /// The snapshot these totals were made from; histograms decode exactly.
    fn to_snapshot(&self) -> Result<Snapshot, String> {
        if self.steps.len() != Step::ALL.len()
            || self.invariants.len() != Invariant::ALL.len()
            || self.funnel.len() != Stage::ALL.len()
        {
            return Err("totals of another catwar-sim version".to_string());
        }
        let steps = self
            .steps
            .iter()
            .map(|s| {
                Ok(StepTotals::from_parts(
                    decode_histogram(&s.hist)?,
                    s.count,
                    s.errors,
                    s.errors_by_code.clone(),
                    s.expected_by_code.clone(),
                ))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let funnel = self
            .funnel
            .iter()
            .map(|row| {
                Ok(StageTotals {
                    sessions: row.sessions,
                    clients: row.clients,
                    time_ms: decode_histogram(&row.hist)?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Snapshot {
            steps,
            invariants: self.invariants.clone(),
            kill_windows: self.kill_windows.clone(),
            series: Vec::new(),
            funnel,
            load: self.load,
            baseline_rss_kib: self.baseline_rss_kib,
        })
    }
}

/// What `catwar-sim worker` was told.
#[derive(Clone, Debug)]
pub struct WorkerArgs {
    /// The scenario file.
    pub scenario: PathBuf,
    /// The topology.json of the running topology.
    pub target: PathBuf,
    /// Which share of the clients.
    pub share: Share,
    /// The shared start, ms since the Unix epoch.
    pub start_unix_ms: u64,
    /// Whether the DB must equal the ledger (the embedded topology) or hold at least it.
    pub exact: bool,
}

/// Runs one worker: its share of the clients, one `second` line a second and a `done`
/// line at the end, on stdout.
pub async fn serve(args: &WorkerArgs) -> Result<(), RunError> {
    let scenario = Scenario::load(&args.scenario).map_err(RunError::Scenario)?;
    if let Some(warning) =
        run::raise_open_files_limit(args.share.part_of(scenario.population.clients))
    {
        eprintln!("catwar-sim worker {}: warning: {warning}", args.share.index);
    }
    let (interrupt_tx, mut interrupt) = watch::channel(false);
    let (stop_arrivals_tx, arrivals_stopped) = watch::channel(false);
    let start = instant_of_unix_ms(args.start_unix_ms);
    let metrics = Metrics::new(start);
    tokio::spawn(listen(Arc::clone(&metrics), interrupt_tx, stop_arrivals_tx));
    let reached = run::reach(&args.target, &mut interrupt).await?;
    tokio::time::sleep_until(start.into()).await;
    if scenario.load.model == LoadModel::Open {
        let fraction = 1.0 / args.share.count as f64;
        metrics.set_schedule(crate::arrivals::Schedule::new(&scenario.load), fraction);
    }
    let env = Arc::new(run::script_env(&scenario, reached, start));
    let (stop, stopped) = watch::channel(false);
    let (lines_tx, lines_rx) = mpsc::unbounded_channel::<WorkerLine>();
    let writer = tokio::spawn(write_lines(lines_rx));
    let ticker = tokio::spawn(send_seconds(
        Arc::clone(&metrics),
        start,
        stopped,
        lines_tx.clone(),
    ));
    let interrupted = crate::clients::drive(
        &scenario,
        &env,
        &metrics,
        args.share,
        &mut interrupt,
        arrivals_stopped,
    )
    .await;
    let _ = stop.send(true);
    ticker.await.expect("the ticker does not panic");
    if !interrupted {
        let db = run::data_dir(&args.target).join(run::DB_FILE);
        let mode = if args.exact {
            Mode::Exact
        } else {
            Mode::AtLeast
        };
        run::check_results(&env, &db, mode, &metrics, args.share).await;
    }
    let totals =
        WireTotals::from_snapshot(&metrics.snapshot(), metrics.token_prefixes(), interrupted);
    let _ = lines_tx.send(WorkerLine::Done(Box::new(totals)));
    drop(lines_tx);
    writer.await.expect("the writer does not panic");
    Ok(())
}

/// The `Instant` of a wall-clock time, in the past or the future.
fn instant_of_unix_ms(unix_ms: u64) -> Instant {
    let now_ms = run::unix_ms();
    let now = Instant::now();
    if unix_ms >= now_ms {
        now + Duration::from_millis(unix_ms - now_ms)
    } else {
        now.checked_sub(Duration::from_millis(now_ms - unix_ms))
            .unwrap_or(now)
    }
}

/// Reads the coordinator's commands from stdin.
async fn listen(
    metrics: Arc<Metrics>,
    interrupt: watch::Sender<bool>,
    stop_arrivals: watch::Sender<bool>,
) {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let mut words = line.split_whitespace();
        match (
            words.next(),
            words.next().and_then(|w| w.parse::<u64>().ok()),
        ) {
            (Some("kill"), Some(at_us)) => metrics.mark_kill_at_us(at_us),
            (Some("stop-arrivals"), _) => {
                let _ = stop_arrivals.send(true);
            }
            (Some("interrupt"), _) => break,
            _ => eprintln!("catwar-sim worker: ignored command {line:?}"),
        }
    }
    // Told to, or the coordinator is gone: either way the run is over.
    let _ = interrupt.send(true);
}

/// Closes a second every second and sends it, histograms included.
async fn send_seconds(
    metrics: Arc<Metrics>,
    start: Instant,
    stop: watch::Receiver<bool>,
    lines: mpsc::UnboundedSender<WorkerLine>,
) {
    run::each_second(start, stop, |_| {
        let (point, histograms) = metrics.close_interval_with_histograms();
        let steps = point
            .steps
            .iter()
            .zip(&histograms)
            .map(|(step, hist)| WireInterval {
                requests: step.requests,
                errors: step.errors,
                hist: (!hist.is_empty()).then(|| encode_histogram(hist)),
            })
            .collect();
        let line = WorkerLine::Second(WireSecond {
            t_s: point.t_s,
            steps,
            load: point.load,
        });
        lines.send(line).is_ok()
    })
    .await;
}

/// Writes lines to stdout in order.
async fn write_lines(mut lines: mpsc::UnboundedReceiver<WorkerLine>) {
    let mut stdout = tokio::io::stdout();
    while let Some(line) = lines.recv().await {
        let mut text = serde_json::to_string(&line).expect("worker lines serialize");
        text.push('\n');
        // A coordinator that stopped reading is gone; the worker ends with its clients.
        if stdout.write_all(text.as_bytes()).await.is_err() {
            return;
        }
    }
    let _ = stdout.flush().await;
}

/// Where the coordinator finds its workers and what it tells them.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The scenario file, which every worker reads itself.
    pub scenario_path: PathBuf,
    /// The topology the workers drive.
    pub topology_path: PathBuf,
    /// The shared start, ms since the Unix epoch.
    pub start_unix_ms: u64,
    /// How strictly workers check results.
    pub mode: Mode,
}

/// A second being merged from the workers' lines.
struct Merging {
    received: usize,
    steps: Vec<(u64, u64, Histogram<u64>)>,
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
            load: LoadPoint::default(),
        }
    }

    fn add(&mut self, second: &WireSecond) -> Result<(), String> {
        self.received += 1;
        self.load.add(&second.load);
        for (into, from) in self.steps.iter_mut().zip(&second.steps) {
            into.0 += from.requests;
            into.1 += from.errors;
            if let Some(hist) = &from.hist {
                into.2
                    .add(decode_histogram(hist)?)
                    .map_err(|e| format!("histogram of another shape: {e:?}"))?;
            }
        }
        Ok(())
    }

    fn point(self, t_s: u64) -> IntervalPoint {
        IntervalPoint {
            t_s,
            steps: self
                .steps
                .iter()
                .map(|(requests, errors, hist)| IntervalStep {
                    requests: *requests,
                    errors: *errors,
                    p99_us: (!hist.is_empty()).then(|| hist.value_at_quantile(0.99)),
                })
                .collect(),
            load: self.load,
        }
    }
}

/// The running workers of a coordinator.
struct Workers {
    children: Vec<Child>,
    stdins: Vec<Option<ChildStdin>>,
}

impl Workers {
    /// Sends one command line to every worker still listening.
    async fn tell(&mut self, command: &str) {
        let line = format!("{command}\n");
        for stdin in &mut self.stdins {
            if let Some(pipe) = stdin {
                if pipe.write_all(line.as_bytes()).await.is_err() {
                    *stdin = None;
                }
            }
        }
    }
}

/// Runs the scenario's clients in `scenario.load.workers` worker processes and merges
/// their seconds into `metrics` as they come, and their totals at the end.
pub(crate) async fn coordinate(
    scenario: &Scenario,
    plan: &Plan,
    metrics: &Arc<Metrics>,
    interrupt: &mut watch::Receiver<bool>,
) -> Result<Driven, RunError> {
    let count = scenario.load.workers as usize;
    let mut workers = spawn_workers(plan, count)?;
    let (lines_tx, mut lines) = mpsc::unbounded_channel();
    for (index, child) in workers.children.iter_mut().enumerate() {
        let stdout = child.stdout.take().expect("stdout is piped");
        tokio::spawn(read_lines(index, stdout, lines_tx.clone()));
    }
    drop(lines_tx);
    let (kills_tx, mut kills) = mpsc::unbounded_channel();
    metrics.forward_kills(kills_tx);
    let (stop_arrivals, mut arrivals_stopped) = watch::channel(false);
    let mut watcher = SecondWatcher::new(scenario, stop_arrivals);
    let mut pending: BTreeMap<u64, Merging> = BTreeMap::new();
    let mut next_second = 0;
    let mut finals: Vec<Option<WireTotals>> = (0..count).map(|_| None).collect();
    let mut ended = vec![false; count];
    let mut problems = Vec::new();
    let mut interrupted = false;
    while ended.iter().any(|e| !e) {
        tokio::select! {
            line = lines.recv() => match line {
                Some((index, Ok(WorkerLine::Second(second)))) => {
                    let merging = pending.entry(second.t_s).or_insert_with(Merging::new);
                    if let Err(e) = merging.add(&second) {
                        problems.push(format!("worker {index}: {e}"));
                    }
                }
                Some((index, Ok(WorkerLine::Done(totals)))) => finals[index] = Some(*totals),
                Some((index, Err(e))) => {
                    problems.push(format!("worker {index}: {e}"));
                    ended[index] = true;
                }
                None => break,
            },
            Some(at_us) = kills.recv() => workers.tell(&format!("kill {at_us}")).await,
            Ok(()) = arrivals_stopped.changed() => workers.tell("stop-arrivals").await,
            _ = interrupt.wait_for(|&fired| fired), if !interrupted => {
                interrupted = true;
                workers.tell("interrupt").await;
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
            let point = merging.point(next_second);
            watcher.second(&point);
            metrics.push_point(point);
            next_second += 1;
        }
    }
    for (t_s, merging) in std::mem::take(&mut pending) {
        let point = merging.point(t_s);
        watcher.second(&point);
        metrics.push_point(point);
    }
    watcher.finish();
    for (index, child) in workers.children.iter_mut().enumerate() {
        match child.wait().await {
            Ok(status) if status.success() => {}
            Ok(status) => problems.push(format!("worker {index} exited with {status}")),
            Err(e) => problems.push(format!("worker {index}: {e}")),
        }
    }
    let mut duplicates = 0;
    for (index, totals) in finals.iter().enumerate() {
        let Some(totals) = totals else {
            problems.push(format!("worker {index} sent no totals"));
            continue;
        };
        interrupted |= totals.interrupted;
        match totals.to_snapshot() {
            Ok(snapshot) => metrics.absorb(&snapshot),
            Err(e) => problems.push(format!("worker {index}: {e}")),
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
    if !problems.is_empty() {
        return Err(RunError::Workers(problems.join("; ")));
    }
    Ok(Driven {
        interrupted,
        knee: watcher.knee_report(),
    })
}

fn spawn_workers(plan: &Plan, count: usize) -> Result<Workers, RunError> {
    let exe = std::env::current_exe()
        .map_err(|e| RunError::Workers(format!("cannot find catwar-sim itself: {e}")))?;
    let mut children = Vec::with_capacity(count);
    let mut stdins = Vec::with_capacity(count);
    for index in 0..count {
        let mut command = Command::new(&exe);
        command
            .arg("worker")
            .arg(&plan.scenario_path)
            .arg("--target")
            .arg(&plan.topology_path)
            .args(["--index", &index.to_string(), "--count", &count.to_string()])
            .args(["--start-unix-ms", &plan.start_unix_ms.to_string()])
            .args([
                "--mode",
                if plan.mode == Mode::Exact {
                    "exact"
                } else {
                    "at-least"
                },
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // Ctrl-C reaches the coordinator only, which tells the workers in order.
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .map_err(|e| RunError::Workers(format!("cannot start worker {index}: {e}")))?;
        stdins.push(child.stdin.take());
        children.push(child);
    }
    Ok(Workers { children, stdins })
}

/// Forwards a worker's lines, parsed, until its stdout closes.
async fn read_lines(
    index: usize,
    stdout: tokio::process::ChildStdout,
    lines: mpsc::UnboundedSender<(usize, Result<WorkerLine, String>)>,
) {
    let mut reader = BufReader::new(stdout);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) => return,
            Ok(_) if buf.len() > WORKER_LINE_BYTES_MAX => {
                let _ = lines.send((index, Err("a line over the size limit".to_string())));
                return;
            }
            Ok(_) => {
                let parsed = serde_json::from_slice::<WorkerLine>(&buf)
                    .map_err(|e| format!("unreadable line: {e}"));
                if lines.send((index, parsed)).is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = lines.send((index, Err(format!("reading its output: {e}"))));
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests;
