//! One simulation run, from scenario file to report.
//!
//! The order is: read the scenario, seed the users and start the embedded topology (or
//! find the `--target`), load profile's certificate, ask storage for the current
//! version, start the clients, the fault schedule and the per-second series, stop
//! everything at the deadline, compare the clients' ledger of match results with the
//! user DB, stop the embedded server, judge and write the report.
//! Ctrl-C or SIGTERM cut the run short but still stop the server and write the report.
//!
//! The clients run in this process (`local`) or in worker processes (`coordinator`
//! spawns them, [`worker`] is their side); either way each process drives its share of
//! the clients through the one code path in `share`, and the coordinator merges the
//! workers' exact histograms.
//!
//! - `reach`: what every process of a run learns from the topology before its clients
//!   start.
//! - `share`: which clients a process owns, and driving them: the closed loop, the open
//!   model's dispatcher, the per-second ticker and `results.no_loss`.
//! - `local`: a run whose clients all live in this process (and `catwar-sim replay`).
//! - `protocol` and `transport`: the typed messages between coordinator and workers,
//!   one JSON object per line over any async byte stream.
//! - `coordinator`: spawning worker processes, relaying orders and merging their seconds
//!   and totals; the user DB check of every worker's ledger.
//! - [`worker`]: `catwar-sim worker`, one worker process.
//! - [`agents`] and [`agent`]: workers on other hosts over TCP (`run --agents N
//!   --listen ADDR`, `catwar-sim agent --connect ADDR`): the coordinator's handshake
//!   (shared secret, clock offsets, assignments) and the agent's side of it.
//! - `seconds` and `progress`: closing a second of the series, showing it, and watching
//!   it for the knee.
//! - `assemble`: the report of a finished run, before it is judged.
//! - `live`: what each merged second feeds besides the display: the `--metrics-listen`
//!   Prometheus endpoint, the HDR interval logs in `OUT/hdr/` and the abort gates.
//! - `resources`: each service's CPU and memory, sampled once a second by this process
//!   (never by workers or agents) from `/proc` or the service's `/metrics`.
//! - `request_log`: `--request-log`, the sampled JSONL log of raw requests and its
//!   writer thread (one file per worker process, gathered by the coordinator).
//! - `limits`: the open files limit a run needs.
//!
//! Architecture invariant: `share` knows nothing of processes or pipes, and
//! `protocol`/`transport` nothing of child processes, so that workers can later be
//! agents on other hosts reached over TCP.

use crate::arrivals::{Arrivals, Schedule};
use crate::faults::run_faults;
use crate::ledger::Mode;
use crate::metrics::Metrics;
use crate::net::tls::TlsSetupError;
use crate::report::{KneeReport, Measured, Report};
use crate::scenario::{LoadModel, Scenario, ScenarioError};
use crate::script::{DiscoveryError, SourcePool};
use crate::topology::{
    resolve_server_bin, EmbeddedConfig, EmbeddedServer, Topology, TopologyError,
};
use crate::{EXIT_INTERRUPTED, EXIT_RUN_FAILED, EXIT_USAGE};
use agents::{AgentListener, AgentsError, AgentsOptions};
use assemble::{unjudged_report, Ran, Target};
use coordinator::{ResultsDb, WorkerProblems};
use reach::{data_dir, reach, DB_FILE};
pub use request_log::{RequestLogError, RequestLogOptions, REQUEST_LOG_SAMPLE_DEFAULT};
use share::Share;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use worker::WorkerArgs;

pub mod agent;
pub mod agents;
mod assemble;
mod coordinator;
mod limits;
mod live;
mod local;
mod progress;
mod protocol;
mod reach;
mod request_log;
mod resources;
mod seconds;
mod share;
mod transport;
pub mod worker;

/// What `catwar-sim run` was asked to do.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The scenario file.
    pub scenario: PathBuf,
    /// An existing topology.json; `None` starts the embedded topology.
    pub target: Option<PathBuf>,
    /// Where report.json, report.html (and the embedded server's log) go.
    pub out_dir: PathBuf,
    /// The `catwar-server` binary for the embedded topology.
    pub server_bin: Option<PathBuf>,
    /// `catwar-sim replay`: run only this client (or open-model arrival), in this
    /// process, and judge invariants but not thresholds (one client cannot meet them).
    pub only_client: Option<u64>,
    /// `--agents N --listen ADDR`: the clients run in agents on other hosts, in place of
    /// `load.workers` processes.
    pub agents: Option<AgentsOptions>,
    /// `--metrics-listen ADDR`: serve the run's merged figures at `GET /metrics` there
    /// while it goes.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// `--request-log FILE`: log a sample of the clients' raw requests there.
    pub request_log: Option<RequestLogOptions>,
}

/// Why a run could not produce a report.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The scenario is unreadable or invalid.
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    /// The topology could not be started or read.
    #[error(transparent)]
    Topology(#[from] TopologyError),
    /// `--target` names no readable topology.json: a bad command line.
    #[error("--target")]
    Target(#[source] TopologyError),
    /// Profile's certificate could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    /// Storage never named a current version.
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    /// The output folder or report could not be written.
    #[error("cannot write {}", path.display())]
    Output {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Ctrl-C or SIGTERM arrived before the clients started.
    #[error("interrupted before the clients started")]
    Interrupted,
    /// Worker processes could not be started, or one failed.
    #[error(transparent)]
    Workers(#[from] WorkerProblems),
    /// The agents could not be gathered.
    #[error(transparent)]
    Agents(#[from] AgentsError),
    /// The live endpoint or the interval logs could not start.
    #[error(transparent)]
    Live(#[from] live::LiveError),
    /// The request log could not be written.
    #[error(transparent)]
    RequestLog(#[from] RequestLogError),
}

impl RunError {
    /// The exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Scenario(_) | RunError::Target(_) => EXIT_USAGE,
            RunError::Agents(AgentsError::Listen { .. }) => EXIT_USAGE,
            RunError::Live(live::LiveError::Listen { .. }) => EXIT_USAGE,
            RunError::Interrupted | RunError::Agents(AgentsError::Interrupted) => EXIT_INTERRUPTED,
            _ => EXIT_RUN_FAILED,
        }
    }
}

/// A finished run.
#[derive(Debug)]
pub struct RunOutcome {
    /// The judged report.
    pub report: Report,
    /// Where it was written.
    pub report_path: PathBuf,
    /// Problems that did not invalidate the measurements, such as an unclean shutdown.
    pub warnings: Vec<String>,
}

/// Runs a scenario and writes its report.
pub async fn run(options: &RunOptions) -> Result<RunOutcome, RunError> {
    let scenario = Scenario::load(&options.scenario)?;
    let target = match &options.target {
        Some(path) => Some(Topology::read(path).map_err(RunError::Target)?),
        None => None,
    };
    let target_settings = target.as_ref().and_then(|t| t.settings.clone());
    if let (Some(settings), Some(path)) = (&target_settings, &options.target) {
        let differences = settings.contradictions(&scenario.server);
        if !differences.is_empty() {
            return Err(RunError::Target(TopologyError::Contradicts {
                path: path.clone(),
                differences,
            }));
        }
    }
    crate::faults::check_target(&scenario.faults, target.as_ref())?;
    if let Some(agents) = &options.agents {
        check_agents(&scenario, agents.count)?;
        if options.request_log.is_some() {
            return Err(RunError::Scenario(ScenarioError::Invalid {
                field: "--request-log".to_string(),
                message: "agents on other hosts cannot write to this host's disk: log \
                          requests in a run with load.workers instead"
                    .to_string(),
            }));
        }
    }
    let out_dir = &options.out_dir;
    std::fs::create_dir_all(out_dir).map_err(|source| RunError::Output {
        path: out_dir.clone(),
        source,
    })?;
    let mut interrupt = interrupt_signal();
    // With worker processes the coordinator holds no client sockets; each worker checks
    // its own share. The limit is raised all the same, for the embedded server.
    let elsewhere = scenario.load.workers > 1 || options.agents.is_some();
    let own_clients = if elsewhere && options.only_client.is_none() {
        0
    } else {
        scenario.population.clients
    };
    let fd_warning = limits::raise_open_files_limit(own_clients);
    let (mut report, mut warnings) = match &options.target {
        Some(path) => {
            let target = Target {
                label: path.display().to_string(),
                server_applied: false,
                settings: target_settings,
            };
            let report = simulate(&scenario, options, path, target, &mut interrupt).await?;
            (report, Vec::new())
        }
        None => run_embedded(&scenario, options, &mut interrupt).await?,
    };
    warnings.extend(fd_warning);
    let thresholds = if options.only_client.is_some() {
        &[][..]
    } else {
        &scenario.thresholds[..]
    };
    report.judge(thresholds);
    report.judge_abort();
    let report_path = report.write(out_dir).map_err(|source| RunError::Output {
        path: out_dir.join("report.json"),
        source,
    })?;
    report
        .write_html(out_dir)
        .map_err(|source| RunError::Output {
            path: out_dir.join("report.html"),
            source,
        })?;
    Ok(RunOutcome {
        report,
        report_path,
        warnings,
    })
}

/// Checks that `count` agents can share `scenario`'s clients: each user's clients must
/// live in one agent, which makes `population.users` a multiple of the agents.
fn check_agents(scenario: &Scenario, count: u64) -> Result<(), RunError> {
    let users = scenario.population.user_count();
    if count == 0 || users % count != 0 {
        return Err(RunError::Scenario(ScenarioError::Invalid {
            field: "--agents".to_string(),
            message: format!(
                "{count} agents cannot share {users} users (population.users): client k logs \
                 in as user k % users + 1 and runs in agent k % agents, so the users must be a \
                 non-zero multiple of the agents"
            ),
        }));
    }
    Ok(())
}

/// Checks that `client` exists in `scenario`, for `catwar-sim replay --client`: a closed
/// model's client number, or an arrival the open model's stages make.
pub fn check_replay_client(scenario: &Scenario, client: u64) -> Result<(), RunError> {
    let exists = match scenario.load.model {
        LoadModel::Closed => client < scenario.population.clients,
        LoadModel::Open => Arrivals::new(&scenario.load, scenario.scenario.seed)
            .nth(client as usize)
            .is_some(),
    };
    if exists {
        return Ok(());
    }
    Err(RunError::Scenario(ScenarioError::Invalid {
        field: "--client".to_string(),
        message: format!(
            "scenario {} has no client {client}: the closed model numbers clients from 0 to \
             population.clients - 1, the open model its arrivals from 0",
            scenario.scenario.name
        ),
    }))
}

/// Starts the embedded topology, simulates against it, and stops it whatever happened.
/// An unclean stop does not spoil the measurements; it comes back as a warning.
async fn run_embedded(
    scenario: &Scenario,
    options: &RunOptions,
    interrupt: &mut watch::Receiver<bool>,
) -> Result<(Report, Vec<String>), RunError> {
    let bin = resolve_server_bin(options.server_bin.as_deref())?;
    let log = options.out_dir.join("server.log");
    let config = EmbeddedConfig {
        users: scenario.population.user_count(),
        server: scenario.server.clone(),
    };
    let server = until_interrupted(interrupt, EmbeddedServer::start(&bin, &log, &config)).await??;
    let topology_path = server.topology_path();
    let target = Target {
        label: "embedded".to_string(),
        server_applied: true,
        settings: None,
    };
    let simulated = simulate(scenario, options, &topology_path, target, interrupt).await;
    let mut warnings = Vec::new();
    match server.stop().await {
        Ok(status) if status.success() => {}
        Ok(status) => warnings.push(format!(
            "catwar-server up exited with {status}; see {}",
            log.display()
        )),
        Err(e) => warnings.push(crate::error_chain(&e)),
    }
    Ok((simulated?, warnings))
}

/// Runs the clients against a live topology and measures them.
async fn simulate(
    scenario: &Scenario,
    options: &RunOptions,
    topology_path: &Path,
    target: Target,
    interrupt: &mut watch::Receiver<bool>,
) -> Result<Report, RunError> {
    // Agents may connect as soon as the listener is bound; they wait for the rest.
    let listener = match &options.agents {
        Some(agents) => Some(AgentListener::bind(agents.clone()).await?),
        None => None,
    };
    let live = live::Live::start(
        options.metrics_listen,
        scenario,
        options.only_client.is_none(),
    )
    .await?;
    let reached = reach(topology_path, interrupt).await?;
    let workers = match (&options.agents, options.only_client) {
        (_, Some(_)) => 1,
        (Some(agents), None) => agents.count as u32,
        (None, None) => scenario.load.workers,
    };
    eprintln!(
        "catwar-sim: {} (seed {}): {} for {} s against {}, storage {}, profile {}, current \
         version {}{}",
        scenario.scenario.name,
        scenario.scenario.seed,
        match options.only_client {
            Some(client) => format!("client {client} alone (one of {})", describe_load(scenario)),
            None => describe_load(scenario),
        },
        scenario.scenario.duration_s,
        target.label,
        reached.storage,
        reached.profile,
        reached.current_version,
        match (&options.agents, workers) {
            (Some(_), _) => format!(", {workers} agents"),
            (None, 2..) => format!(", {workers} worker processes"),
            (None, _) => String::new(),
        }
    );
    let mode = if target.server_applied {
        Mode::Exact
    } else {
        Mode::AtLeast
    };
    let db_path = data_dir(topology_path).join(DB_FILE);
    let db = ResultsDb {
        path: &db_path,
        mode,
    };
    let gathered = match listener {
        Some(listener) => Some(
            listener
                .gather(&scenario.text, topology_path, interrupt)
                .await?,
        ),
        None => None,
    };
    let (start, started_at_unix_ms) = match &gathered {
        Some(gathered) => (gathered.start, gathered.start_unix_ms),
        None => {
            // Workers need a moment to start; they all begin at the same instant after it.
            let delay_ms = if workers > 1 {
                coordinator::WORKER_START_DELAY_MS
            } else {
                0
            };
            let start = Instant::now() + Duration::from_millis(delay_ms);
            (start, unix_ms() + delay_ms)
        }
    };
    let metrics = Metrics::new(start);
    let started_at = UNIX_EPOCH + Duration::from_millis(started_at_unix_ms);
    let outlets = live.outlets(&options.out_dir, started_at)?;
    // The clients stop on Ctrl-C or when an abort gate fails.
    let mut stop = live.stop_signal(interrupt.clone());
    let interrupt = &mut stop;
    // Only the coordinator samples the services: workers and agents never do.
    let sampler = resources::Sampler::start(topology_path, start);
    if scenario.load.model == LoadModel::Open {
        metrics.set_schedule(Schedule::new(&scenario.load), 1.0);
    }
    // The fault schedule ends with the clients: in this process as soon as they stopped,
    // with workers once every worker has sent its totals.
    let (clients_done, faults_stop) = watch::channel(false);
    let faults = tokio::spawn(run_faults(
        scenario.faults.clone(),
        topology_path.to_path_buf(),
        Arc::clone(&metrics),
        start,
        faults_stop,
    ));
    let mut agents = Vec::new();
    let driven = if let Some(gathered) = gathered {
        let exchanged =
            coordinator::exchange(scenario, gathered.links, &metrics, outlets, interrupt).await;
        agents = gathered.reports;
        coordinator::conclude(scenario, db, &metrics, exchanged).await
    } else if workers > 1 {
        let plan = WorkerArgs {
            scenario: options.scenario.clone(),
            target: topology_path.to_path_buf(),
            index: 0,
            count: u64::from(workers),
            start_unix_ms: started_at_unix_ms,
            source_ips: Vec::new(),
            request_log: options.request_log.as_ref().map(|log| log.path.clone()),
            request_log_sample_ppm: options
                .request_log
                .as_ref()
                .map_or(0, |log| (log.sample * worker::PPM).round() as u32),
        };
        let driven =
            coordinator::coordinate(scenario, &plan, db, &metrics, outlets, interrupt).await?;
        if let Some(log) = &options.request_log {
            let lines = request_log::gather_workers(log, u64::from(workers))?;
            eprintln!(
                "catwar-sim: request log: {lines} lines from {workers} workers in {}",
                log.path.display()
            );
        }
        driven
    } else {
        let share = match options.only_client {
            Some(client) => Share::only(client),
            None => Share::WHOLE,
        };
        let clients = share::ShareRun {
            scenario,
            share,
            sources: SourcePool::Loopback,
            metrics: &metrics,
        };
        let log = match &options.request_log {
            Some(log) => Some(request_log::RequestLogWriter::start(
                &log.path,
                log.sample,
                scenario.scenario.seed,
                &metrics,
            )?),
            None => None,
        };
        let driven = local::drive(
            clients,
            reached,
            outlets,
            &db_path,
            mode,
            &clients_done,
            interrupt,
        )
        .await;
        if let (Some(writer), Some(log)) = (log, &options.request_log) {
            let written = writer.finish()?;
            eprintln!(
                "catwar-sim: request log: {} lines in {}, {} dropped (the writer fell behind)",
                written.lines,
                log.path.display(),
                written.dropped
            );
        }
        driven
    };
    let duration_s = start.elapsed().as_secs_f64();
    let agents = agents
        .into_iter()
        .map(|(mut report, bytes)| {
            report.received_bytes = bytes.load(std::sync::atomic::Ordering::Relaxed);
            report.received_bytes_per_s = report.received_bytes as f64 / duration_s.max(1.0);
            report
        })
        .collect();
    let _ = clients_done.send(true);
    let faults = faults.await.expect("the fault schedule does not panic");
    let services = sampler.finish().await;
    let knee = driven
        .knee
        .map(|knee| crate::knee::name_service(knee, &services));
    let ran = Ran {
        started_at_unix_ms,
        duration_s,
        // A run an abort gate stopped was stopped on purpose, not interrupted.
        interrupted: driven.interrupted && live.abort().is_none(),
        faults,
        measured: Measured::from_snapshot(&metrics.snapshot()),
        knee,
        services,
        workers,
        agents,
        lost: driven.worker_problems,
    };
    let mut report = unjudged_report(scenario, options, target, ran);
    report.abort = live.abort();
    Ok(report)
}

/// How the clients of a run, in this process or in workers, came out.
#[derive(Debug)]
struct Driven {
    /// Whether Ctrl-C or SIGTERM cut the run short.
    interrupted: bool,
    /// The knee, for a scenario that looks for one.
    knee: Option<KneeReport>,
    /// Workers or agents lost on the way, each named with what happened.
    worker_problems: Vec<String>,
}

/// The load of a scenario in words, for the opening line.
fn describe_load(scenario: &Scenario) -> String {
    let clients = scenario.population.clients;
    match scenario.load.model {
        LoadModel::Closed => format!("{clients} clients"),
        LoadModel::Open => {
            let schedule = Schedule::new(&scenario.load);
            format!(
                "{} arrivals (~{:.0} expected over {} stages, at most {clients} at once)",
                scenario.load.arrival.name(),
                schedule.expected_arrivals(),
                scenario.load.stages.len()
            )
        }
    }
}

/// Milliseconds since the Unix epoch.
fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Ctrl-C or SIGTERM, as a flag that turns true once.
fn interrupt_signal() -> watch::Receiver<bool> {
    let (fired, receiver) = watch::channel(false);
    tokio::spawn(async move {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                // Without a SIGTERM handler only Ctrl-C interrupts the run.
                Err(_) => std::future::pending::<()>().await,
            }
        };
        let interrupt = async {
            // Without a Ctrl-C handler only SIGTERM interrupts the run.
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate => {}
        }
        // Nobody listening any more means the run is over, and there is nothing to stop.
        let _ = fired.send(true);
    });
    receiver
}

/// Runs `future` unless the interrupt fires first.
async fn until_interrupted<T>(
    interrupt: &mut watch::Receiver<bool>,
    future: impl Future<Output = T>,
) -> Result<T, RunError> {
    tokio::select! {
        value = future => Ok(value),
        _ = interrupt.wait_for(|&fired| fired) => Err(RunError::Interrupted),
    }
}
