//! One simulation run, from scenario file to report.
//!
//! The order is: read the scenario, seed the users and start the embedded topology (or
//! find the `--target`), load profile's certificate, ask storage for the current
//! version, start the clients, the fault schedule and the per-second ticker, stop
//! everything at the deadline, compare the clients' ledger of match results with the
//! user DB, stop the embedded server, judge and write the report.
//! Ctrl-C or SIGTERM cut the run short but still stop the server and write the report.

use crate::arrivals::{Arrivals, Schedule};
use crate::clients::drive;
pub use crate::clients::Share;
use crate::faults::{run_faults, FaultRecord};
use crate::ledger::{self, Mode};
use crate::metrics::{InvariantCount, Metrics};
use crate::report::{
    ArrivalsReport, Environment, KneeReport, Measured, Report, ScenarioInfo, ServerInfo, SimUsage,
    REPORT_SCHEMA,
};
use crate::scenario::{Fault, LoadModel, Scenario, ScenarioError};
use crate::script::{discover_version, PlayPlan, ScriptEnv};
use crate::step::Invariant;
use crate::tls::{TlsClient, TlsSetupError, TLS_CERT_FILE};
use crate::topology::{
    resolve_server_bin, EmbeddedConfig, EmbeddedServer, Topology, TopologyError,
};
use crate::{EXIT_INTERRUPTED, EXIT_RUN_FAILED, EXIT_USAGE};
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

mod limits;
mod seconds;
pub(crate) use limits::raise_open_files_limit;
use seconds::tick;
pub(crate) use seconds::{each_second, SecondWatcher};

/// After the deadline, clients finish the request in flight; a request never takes
/// longer than its timeout, so this grace is enough for all of them.
pub(crate) const CLIENT_GRACE_MS: u64 = crate::http::REQUEST_TIMEOUT_MS + 1_000;
/// The user DB in the folder of topology.json (SPEC §3).
pub(crate) const DB_FILE: &str = "catwar.db";

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
}

/// Why a run could not produce a report.
#[derive(Debug)]
pub enum RunError {
    /// The scenario is unreadable or invalid.
    Scenario(ScenarioError),
    /// The topology could not be started or read.
    Topology(TopologyError),
    /// `--target` names no readable topology.json: a bad command line.
    Target(TopologyError),
    /// Profile's certificate could not be loaded.
    Tls(TlsSetupError),
    /// Storage never named a current version.
    Discovery(String),
    /// The output folder or report could not be written.
    Output {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Ctrl-C or SIGTERM arrived before the clients started.
    Interrupted,
    /// Worker processes could not be started, or one failed.
    Workers(String),
}

impl RunError {
    /// The exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Scenario(_) | RunError::Target(_) => EXIT_USAGE,
            RunError::Interrupted => EXIT_INTERRUPTED,
            _ => EXIT_RUN_FAILED,
        }
    }
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Scenario(e) => e.fmt(f),
            RunError::Topology(e) => e.fmt(f),
            RunError::Target(e) => write!(f, "--target: {e}"),
            RunError::Tls(e) => e.fmt(f),
            RunError::Discovery(message) => f.write_str(message),
            RunError::Output { path, source } => {
                write!(f, "cannot write {}: {source}", path.display())
            }
            RunError::Interrupted => f.write_str("interrupted before the clients started"),
            RunError::Workers(message) => write!(f, "worker processes: {message}"),
        }
    }
}

impl std::error::Error for RunError {}

impl From<TopologyError> for RunError {
    fn from(e: TopologyError) -> RunError {
        RunError::Topology(e)
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
    let scenario = Scenario::load(&options.scenario).map_err(RunError::Scenario)?;
    if let Some(path) = &options.target {
        Topology::read(path).map_err(RunError::Target)?;
    }
    let out_dir = &options.out_dir;
    std::fs::create_dir_all(out_dir).map_err(|source| RunError::Output {
        path: out_dir.clone(),
        source,
    })?;
    let mut interrupt = interrupt_signal();
    // With worker processes the coordinator holds no client sockets; each worker checks
    // its own share. The limit is raised all the same, for the embedded server.
    let own_clients = if scenario.load.workers > 1 && options.only_client.is_none() {
        0
    } else {
        scenario.population.clients
    };
    let fd_warning = raise_open_files_limit(own_clients);
    let (mut report, mut warnings) = match &options.target {
        Some(path) => {
            let target = Target {
                label: path.display().to_string(),
                server_applied: false,
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
    };
    let simulated = simulate(scenario, options, &topology_path, target, interrupt).await;
    let mut warnings = Vec::new();
    match server.stop().await {
        Ok(status) if status.success() => {}
        Ok(status) => warnings.push(format!(
            "catwar-server up exited with {status}; see {}",
            log.display()
        )),
        Err(e) => warnings.push(e.to_string()),
    }
    Ok((simulated?, warnings))
}

/// What the clients run against.
struct Target {
    /// `embedded`, or the `--target` path.
    label: String,
    /// Whether the simulator started the server with the scenario's `[server]` settings.
    server_applied: bool,
}

/// Addresses and secrets every client of a run needs, read from the topology.
pub(crate) struct Reached {
    storage: std::net::SocketAddr,
    profile: std::net::SocketAddr,
    router: std::net::SocketAddr,
    tls: TlsClient,
    current_version: String,
}

/// Reads the topology, loads profile's certificate and asks storage for the current
/// version.
pub(crate) async fn reach(
    topology_path: &Path,
    interrupt: &mut watch::Receiver<bool>,
) -> Result<Reached, RunError> {
    let topology = Topology::read(topology_path)?;
    let storage = topology.addr("storage", topology_path)?;
    let profile = topology.addr("profile", topology_path)?;
    let router = topology.addr("router", topology_path)?;
    let cert = data_dir(topology_path).join(TLS_CERT_FILE);
    let tls = TlsClient::from_pem_file(&cert).map_err(RunError::Tls)?;
    let current_version = until_interrupted(interrupt, discover_version(storage))
        .await?
        .map_err(RunError::Discovery)?;
    Ok(Reached {
        storage,
        profile,
        router,
        tls,
        current_version,
    })
}

/// The folder of topology.json, where the DB and the certificate live.
pub(crate) fn data_dir(topology_path: &Path) -> &Path {
    topology_path.parent().unwrap_or(Path::new("."))
}

/// What every client of a run shares, for a run that started at `start`.
pub(crate) fn script_env(scenario: &Scenario, reached: Reached, start: Instant) -> ScriptEnv {
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
        file_nodes_killed: scenario.faults.iter().any(Fault::stops_file_node),
        seed: scenario.scenario.seed,
        deadline: start + Duration::from_secs(scenario.scenario.duration_s),
    }
}

/// Runs the clients against a live topology and measures them.
async fn simulate(
    scenario: &Scenario,
    options: &RunOptions,
    topology_path: &Path,
    target: Target,
    interrupt: &mut watch::Receiver<bool>,
) -> Result<Report, RunError> {
    let reached = reach(topology_path, interrupt).await?;
    let workers = if options.only_client.is_some() {
        1
    } else {
        scenario.load.workers
    };
    eprintln!(
        "catwar-sim: {} (seed {}): {} for {} s against {}, storage {}, profile {}, current \
         version {}{}",
        scenario.scenario.name,
        scenario.scenario.seed,
        describe_load(scenario),
        scenario.scenario.duration_s,
        target.label,
        reached.storage,
        reached.profile,
        reached.current_version,
        if workers > 1 {
            format!(", {workers} worker processes")
        } else {
            String::new()
        }
    );
    let mode = if target.server_applied {
        Mode::Exact
    } else {
        Mode::AtLeast
    };
    // Workers need a moment to start; they all begin at the same instant after it.
    let delay_ms = if workers > 1 {
        crate::worker::WORKER_START_DELAY_MS
    } else {
        0
    };
    let started_at_unix_ms = unix_ms() + delay_ms;
    let start = Instant::now() + Duration::from_millis(delay_ms);
    let metrics = Metrics::new(start);
    if scenario.load.model == LoadModel::Open {
        metrics.set_schedule(Schedule::new(&scenario.load), 1.0);
    }
    let (stop, stopped) = watch::channel(false);
    let faults = tokio::spawn(run_faults(
        scenario.faults.clone(),
        topology_path.to_path_buf(),
        Arc::clone(&metrics),
        start,
        stopped.clone(),
    ));
    let driven = if workers > 1 {
        let plan = crate::worker::Plan {
            scenario_path: options.scenario.clone(),
            topology_path: topology_path.to_path_buf(),
            start_unix_ms: started_at_unix_ms,
            mode,
        };
        crate::worker::coordinate(scenario, &plan, &metrics, interrupt).await?
    } else {
        let env = Arc::new(script_env(scenario, reached, start));
        let (stop_arrivals, arrivals_stopped) = watch::channel(false);
        let watcher = SecondWatcher::new(scenario, stop_arrivals);
        let ticker = tokio::spawn(tick(Arc::clone(&metrics), start, stopped.clone(), watcher));
        let share = match options.only_client {
            Some(client) => Share::only(client),
            None => Share::WHOLE,
        };
        let interrupted = drive(scenario, &env, &metrics, share, interrupt, arrivals_stopped).await;
        // The ticker holds a receiver until told to stop, so this send always lands.
        let _ = stop.send(true);
        let watcher = ticker.await.expect("the ticker does not panic");
        // An interrupted run proves nothing, and its clients' matches were cut off.
        if !interrupted {
            let db = data_dir(topology_path).join(DB_FILE);
            check_results(&env, &db, mode, &metrics, share).await;
        }
        Driven {
            interrupted,
            knee: watcher.knee_report(),
        }
    };
    let duration_s = start.elapsed().as_secs_f64();
    let _ = stop.send(true);
    let faults = faults.await.expect("the fault schedule does not panic");
    let ran = Ran {
        started_at_unix_ms,
        duration_s,
        interrupted: driven.interrupted,
        faults,
        measured: Measured::from_snapshot(&metrics.snapshot()),
        knee: driven.knee,
    };
    Ok(unjudged_report(scenario, options, target, ran))
}

/// How the clients of a run, in this process or in workers, came out.
pub(crate) struct Driven {
    /// Whether Ctrl-C or SIGTERM cut the run short.
    pub interrupted: bool,
    /// The knee, for a scenario that looks for one.
    pub knee: Option<KneeReport>,
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
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Compares the clients' ledger with the user DB (`results.no_loss`) and adds the
/// outcome to `metrics`. The embedded topology was seeded by the simulator and served no
/// one else, so its DB must match exactly; a DB that cannot be read leaves the invariant
/// unchecked, with a warning.
pub(crate) async fn check_results(
    env: &ScriptEnv,
    db: &Path,
    mode: Mode,
    metrics: &Metrics,
    share: Share,
) {
    let owns = move |user: &str| share.owns_user(user);
    match ledger::check(&env.ledger, db, mode, env.play.normal_length(), owns).await {
        Ok(verdict) => {
            eprintln!(
                "catwar-sim: results.no_loss: {} matches and users checked against {}, {} violations",
                verdict.checked,
                db.display(),
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
        Err(e) => eprintln!("catwar-sim: warning: {e}"),
    }
}

/// What a finished simulation produced.
struct Ran {
    started_at_unix_ms: u64,
    duration_s: f64,
    interrupted: bool,
    faults: Vec<FaultRecord>,
    measured: Measured,
    knee: Option<KneeReport>,
}

/// The report of a run, before its thresholds are judged.
fn unjudged_report(scenario: &Scenario, options: &RunOptions, target: Target, ran: Ran) -> Report {
    let sim = SimUsage::from_series(
        &ran.measured.timeseries.points,
        scenario.load.workers,
        ran.measured.baseline_rss_kib,
    );
    Report {
        schema: REPORT_SCHEMA.to_string(),
        scenario: ScenarioInfo {
            name: scenario.scenario.name.clone(),
            seed: scenario.scenario.seed,
            path: options.scenario.display().to_string(),
            text: scenario.text.clone(),
        },
        started_at_unix_ms: ran.started_at_unix_ms,
        duration_s: ran.duration_s,
        interrupted: ran.interrupted,
        environment: Environment::current(target.label),
        server: ServerInfo {
            argon2: scenario.server.argon2.name().to_string(),
            token_idle_s: scenario.server.token_idle_s,
            users: scenario.population.user_count(),
            players_per_match: scenario.server.players_per_match,
            match_fill_timeout_s: scenario.server.match_fill_timeout_s,
            match_ticks: scenario.server.match_ticks,
            tick_hz: scenario.server.tick_hz,
            observer_backend: scenario.server.observer_backend.name().to_string(),
            play_servers: scenario.server.play_servers,
            applied: target.server_applied,
        },
        steps: ran.measured.steps,
        errors_by_code: ran.measured.errors_by_code,
        timeseries: ran.measured.timeseries,
        faults: ran.faults,
        failover: ran.measured.failover,
        invariants: ran.measured.invariants,
        funnel: ran.measured.funnel,
        arrivals: (scenario.load.model == LoadModel::Open).then(|| ArrivalsReport {
            arrival: scenario.load.arrival.name().to_string(),
            expected: Schedule::new(&scenario.load).expected_arrivals(),
            started: ran.measured.arrivals_started,
            dropped: ran.measured.arrivals_dropped,
        }),
        knee: ran.knee,
        sim,
        thresholds: Vec::new(),
        exit_code: 0,
    }
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
