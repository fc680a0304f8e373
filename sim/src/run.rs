//! One simulation run, from scenario file to report.
//!
//! The order is: read the scenario, seed the users and start the embedded topology (or
//! find the `--target`), load profile's certificate, ask storage for the current
//! version, start the clients, the fault schedule and the per-second ticker, stop
//! everything at the deadline, compare the clients' ledger of match results with the
//! user DB, stop the embedded server, judge and write the report.
//! Ctrl-C or SIGTERM cut the run short but still stop the server and write the report.

use crate::faults::{run_faults, FaultRecord};
use crate::ledger::{self, Mode};
use crate::metrics::{IntervalPoint, InvariantCount, Metrics};
use crate::report::{Environment, Measured, Report, ScenarioInfo, ServerInfo, REPORT_SCHEMA};
use crate::scenario::{Fault, Scenario, ScenarioError};
use crate::script::{discover_version, run_client, PlayPlan, ScriptEnv};
use crate::step::{Invariant, Step};
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
use tokio::task::JoinSet;

/// After the deadline, clients finish the request in flight; a request never takes
/// longer than its timeout, so this grace is enough for all of them.
const CLIENT_GRACE_MS: u64 = crate::http::REQUEST_TIMEOUT_MS + 1_000;
/// A progress line goes to stderr this often; every second would flood CI logs.
const PROGRESS_EVERY_S: u64 = 5;
/// Sockets one client may hold at once: its kept-alive connections, one TLS connection
/// to profile, and while it plays, its play server, the router and an observer.
const FDS_PER_CLIENT: u64 = crate::http::CLIENT_CONNECTIONS_MAX as u64 + 4;
/// The user DB in the folder of topology.json (SPEC §3).
const DB_FILE: &str = "catwar.db";
/// Descriptors the simulator needs besides its clients' sockets: the runtime's, the
/// server log, the report, standard streams.
const FDS_BASE: u64 = 64;

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
}

/// Why a run could not produce a report.
#[derive(Debug)]
pub enum RunError {
    /// The scenario is unreadable or invalid.
    Scenario(ScenarioError),
    /// The topology could not be started or read.
    Topology(TopologyError),
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
}

impl RunError {
    /// The exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Scenario(_) => EXIT_USAGE,
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
            RunError::Tls(e) => e.fmt(f),
            RunError::Discovery(message) => f.write_str(message),
            RunError::Output { path, source } => {
                write!(f, "cannot write {}: {source}", path.display())
            }
            RunError::Interrupted => f.write_str("interrupted before the clients started"),
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
    let out_dir = &options.out_dir;
    std::fs::create_dir_all(out_dir).map_err(|source| RunError::Output {
        path: out_dir.clone(),
        source,
    })?;
    let mut interrupt = interrupt_signal();
    let fd_warning = raise_open_files_limit(scenario.population.clients);
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
    report.judge(&scenario.thresholds);
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

/// Runs the clients against a live topology and measures them.
async fn simulate(
    scenario: &Scenario,
    options: &RunOptions,
    topology_path: &Path,
    target: Target,
    interrupt: &mut watch::Receiver<bool>,
) -> Result<Report, RunError> {
    let topology = Topology::read(topology_path)?;
    let storage = topology.addr("storage", topology_path)?;
    let profile = topology.addr("profile", topology_path)?;
    let router = topology.addr("router", topology_path)?;
    let data_dir = topology_path.parent().unwrap_or(Path::new("."));
    let cert = data_dir.join(TLS_CERT_FILE);
    let tls = TlsClient::from_pem_file(&cert).map_err(RunError::Tls)?;
    let current_version = until_interrupted(interrupt, discover_version(storage))
        .await?
        .map_err(RunError::Discovery)?;
    let clients = scenario.population.clients;
    let duration = Duration::from_secs(scenario.scenario.duration_s);
    eprintln!(
        "catwar-sim: {} (seed {}): {clients} clients for {} s against {}, storage {storage}, \
         profile {profile}, current version {current_version}",
        scenario.scenario.name,
        scenario.scenario.seed,
        duration.as_secs(),
        target.label
    );

    let started_at_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let start = Instant::now();
    let metrics = Metrics::new(start);
    let env = Arc::new(ScriptEnv {
        storage,
        profile,
        router,
        tls,
        current_version,
        stale_version: scenario.population.stale_version.clone(),
        users: scenario.population.user_count(),
        branches: scenario.script.clone(),
        token_idle_s: scenario.server.token_idle_s,
        play: PlayPlan::new(&scenario.server, &scenario.script),
        ledger: ledger::Ledger::default(),
        think_time_ms: scenario.load.think_time_ms,
        start_spread_ms: scenario.load.start_window_ms(),
        file_nodes_killed: scenario.faults.iter().any(Fault::kills_file_node),
        seed: scenario.scenario.seed,
        deadline: start + duration,
    });
    let (stop, stopped) = watch::channel(false);
    let faults = tokio::spawn(run_faults(
        scenario.faults.clone(),
        topology_path.to_path_buf(),
        Arc::clone(&metrics),
        start,
        stopped.clone(),
    ));
    let ticker = tokio::spawn(tick(Arc::clone(&metrics), start, stopped));
    let mut tasks = JoinSet::new();
    for id in 0..clients {
        tasks.spawn(run_client(Arc::clone(&env), id, metrics.recorder(id)));
    }

    let interrupted = tokio::select! {
        _ = tokio::time::sleep_until(env.deadline.into()) => false,
        _ = interrupt.wait_for(|&fired| fired) => true,
    };
    let duration_s = start.elapsed().as_secs_f64();
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
    // The ticker holds a receiver until told to stop, so this send always lands.
    let _ = stop.send(true);
    let faults = faults.await.expect("the fault schedule does not panic");
    ticker.await.expect("the ticker does not panic");
    // An interrupted run proves nothing, and its clients' matches were cut off.
    if !interrupted {
        let mode = if target.server_applied {
            Mode::Exact
        } else {
            Mode::AtLeast
        };
        check_results(&env, &data_dir.join(DB_FILE), mode, &metrics).await;
    }

    let ran = Ran {
        started_at_unix_ms,
        duration_s,
        interrupted,
        faults,
        measured: Measured::from_snapshot(&metrics.snapshot()),
    };
    Ok(unjudged_report(scenario, options, target, ran))
}

/// Compares the clients' ledger with the user DB (`results.no_loss`) and adds the
/// outcome to `metrics`. The embedded topology was seeded by the simulator and served no
/// one else, so its DB must match exactly; a DB that cannot be read leaves the invariant
/// unchecked, with a warning.
async fn check_results(env: &ScriptEnv, db: &Path, mode: Mode, metrics: &Metrics) {
    match ledger::check(&env.ledger, db, mode, env.play.normal_length()).await {
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
}

/// The report of a run, before its thresholds are judged.
fn unjudged_report(scenario: &Scenario, options: &RunOptions, target: Target, ran: Ran) -> Report {
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
            applied: target.server_applied,
        },
        steps: ran.measured.steps,
        errors_by_code: ran.measured.errors_by_code,
        timeseries: ran.measured.timeseries,
        faults: ran.faults,
        failover: ran.measured.failover,
        invariants: ran.measured.invariants,
        thresholds: Vec::new(),
        exit_code: 0,
    }
}

/// Closes one interval of the series every second, and the last partial one at the end.
async fn tick(metrics: Arc<Metrics>, start: Instant, mut stop: watch::Receiver<bool>) {
    let second = Duration::from_secs(1);
    let mut interval = tokio::time::interval_at((start + second).into(), second);
    // A late tick must not be followed by a burst of catch-up ticks with empty intervals.
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {
                let point = metrics.close_interval();
                if (point.t_s + 1) % PROGRESS_EVERY_S == 0 {
                    eprintln!("{}", progress_line(&point));
                }
            }
            _ = stop.changed() => {
                metrics.close_interval();
                return;
            }
        }
    }
}

fn progress_line(point: &IntervalPoint) -> String {
    // Only the steps that ran this second: eight columns of zeros help nobody.
    let steps: Vec<String> = Step::ALL
        .iter()
        .filter(|step| point.steps[step.index()].requests > 0)
        .map(|step| {
            let figures = point.steps[step.index()];
            let p99 = figures.p99_us.map_or("-".to_string(), |us| {
                format!("{:.1} ms", us as f64 / 1000.0)
            });
            format!(
                "{} {}/s p99 {p99} errors {}",
                step.name(),
                figures.requests,
                figures.errors
            )
        })
        .collect();
    format!("[{:>4} s] {}", point.t_s + 1, steps.join(" | "))
}

/// Raises this process's soft limit on open files to its hard limit, before the embedded
/// server is spawned so that it inherits the limit too: a default soft limit of 1024
/// would stop a few hundred clients. Returns a warning when even the hard limit is
/// below what `clients` may need; the run goes on, and failed connections show as errors.
fn raise_open_files_limit(clients: u64) -> Option<String> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct it is given, which lives here.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Some(format!(
            "cannot read the open files limit: {}",
            std::io::Error::last_os_error()
        ));
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct it is given, which lives here.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    let needed = clients.saturating_mul(FDS_PER_CLIENT) + FDS_BASE;
    (limit.rlim_cur < needed).then(|| {
        format!(
            "{clients} clients may need {needed} open files, but the limit is {}; \
             raise it (ulimit -n) or expect connect errors",
            limit.rlim_cur
        )
    })
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
