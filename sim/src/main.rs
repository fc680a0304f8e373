//! The `catwar-sim` command line: `run` a scenario, `replay` one client of it, join a
//! run on another host as an `agent`, or `compare` two reports.

use anyhow::Context as _;
use catwar_sim::compare::{
    self, CompareError, ReportView, Scale, ERROR_RATE_POINTS_MAX, MACHINE_FACTOR_MAX,
    MAX_REGRESSION_PCT_DEFAULT,
};
use catwar_sim::run::agent::{AgentArgs, AgentError};
use catwar_sim::run::agents::{AgentsOptions, AGENTS_WAIT_S_DEFAULT};
use catwar_sim::run::worker::WorkerArgs;
use catwar_sim::run::{RequestLogOptions, RunError, RunOptions, REQUEST_LOG_SAMPLE_DEFAULT};
use catwar_sim::scenario::Scenario;
use catwar_sim::{
    EXIT_ABORTED, EXIT_INVARIANT_VIOLATED, EXIT_OK, EXIT_RUN_FAILED, EXIT_THRESHOLD_FAILED,
    EXIT_USAGE,
};
use clap::{Parser, Subcommand};
use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Every exit code of `run` (and `replay`), as `run --help` lists them.
const EXIT_CODES_HELP: &str = "Exit codes:
  0    every threshold and invariant held
  1    a threshold failed
  2    an invariant was violated (takes precedence over 1 and 3)
  3    an abort_on_fail threshold failed while running and stopped the run early
  64   bad scenario or command line (the message names the field or flag)
  70   the run could not be carried out, or lost a worker or agent
  130  interrupted (Ctrl-C or SIGTERM); the report is written and proves nothing";

/// Load simulator for the CatWar scenario: virtual clients, faults, invariants, reports.
#[derive(Debug, Parser)]
#[command(name = "catwar-sim", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a scenario and write DIR/report.json and DIR/report.html.
    #[command(after_help = EXIT_CODES_HELP)]
    Run {
        /// The scenario file (TOML).
        scenario: PathBuf,
        /// A running topology's topology.json; without it the embedded server is started.
        #[arg(long, value_name = "DIR/topology.json")]
        target: Option<PathBuf>,
        /// Where to write report.json, report.html (and server.log of the embedded server).
        #[arg(long, value_name = "DIR", default_value = "catwar-report")]
        out: PathBuf,
        /// The catwar-server binary [default: $CATWAR_SERVER_BIN, else next to catwar-sim].
        #[arg(long, value_name = "PATH")]
        server_bin: Option<PathBuf>,
        /// Run the clients in N agents on other hosts (`catwar-sim agent`) in place of
        /// `load.workers` processes; needs --listen and $CATWAR_AGENT_SECRET.
        #[arg(long, value_name = "N", requires = "listen")]
        agents: Option<u64>,
        /// Where the agents connect, e.g. 0.0.0.0:7700 (port 0: any free port, printed).
        #[arg(long, value_name = "ADDR", requires = "agents")]
        listen: Option<SocketAddr>,
        /// How long to wait for every agent before giving up, naming the missing ones.
        #[arg(long, value_name = "S", default_value_t = AGENTS_WAIT_S_DEFAULT)]
        agents_wait_s: u64,
        /// Serve the run's merged figures (all workers and agents) at GET /metrics on
        /// ADDR while it goes, for Prometheus, e.g. 127.0.0.1:9464.
        #[arg(long, value_name = "ADDR")]
        metrics_listen: Option<SocketAddr>,
        /// Write a sample of the clients' raw requests to FILE, one JSON object per line:
        /// client, step, scheduled_us, sent_us, latency_us, code (times from the start).
        #[arg(long, value_name = "FILE")]
        request_log: Option<PathBuf>,
        /// The fraction of clients (chosen from the seed) whose every request is logged.
        #[arg(long, value_name = "FRACTION", default_value_t = REQUEST_LOG_SAMPLE_DEFAULT, value_parser = parse_fraction, requires = "request_log")]
        request_log_sample: f64,
    },
    /// Join a run on another host as one of its agents: connect to the coordinator
    /// (`run --agents N --listen ADDR`), prove the shared secret ($CATWAR_AGENT_SECRET),
    /// and drive the share of the clients it assigns.
    Agent(AgentArgs),
    /// Re-run one client's exact path (its random stream comes from the scenario seed and
    /// its number) with every step, branch and pause traced to stderr. Exit codes as for
    /// `run`, with the scenario's thresholds left out: one client cannot meet them.
    Replay {
        /// The scenario file (TOML).
        scenario: PathBuf,
        /// The client number (closed model) or arrival number (open model), from 0.
        #[arg(long, value_name = "N")]
        client: u64,
        /// A running topology's topology.json; without it the embedded server is started.
        #[arg(long, value_name = "DIR/topology.json")]
        target: Option<PathBuf>,
        /// Where to write the replay's report.json and report.html.
        #[arg(long, value_name = "DIR", default_value = "catwar-replay")]
        out: PathBuf,
        /// The catwar-server binary [default: $CATWAR_SERVER_BIN, else next to catwar-sim].
        #[arg(long, value_name = "PATH")]
        server_bin: Option<PathBuf>,
    },
    /// One worker process of a run with `load.workers` > 1; started by `run` itself.
    #[command(hide = true)]
    Worker(WorkerArgs),
    /// Compare the p50/p90/p99 of two reports; exit 1 on a regression.
    Compare {
        /// The baseline report.json.
        baseline: PathBuf,
        /// The report.json of the run under test.
        current: PathBuf,
        /// Allowed growth in percent (growth under 1 ms never counts).
        #[arg(long, value_name = "PCT", default_value_t = MAX_REGRESSION_PCT_DEFAULT, value_parser = parse_pct)]
        max_regression: f64,
        /// Judge each figure against the baseline times the median growth of all steps
        /// (a slow or busy host slows every step alike); fails on its own when the
        /// median p50 grew more than 4 times.
        #[arg(long)]
        relative: bool,
    },
}

fn parse_fraction(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(fraction) if (0.0..=1.0).contains(&fraction) => Ok(fraction),
        _ => Err(format!("{text:?} is not a fraction from 0 to 1")),
    }
}

fn parse_pct(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(pct) if pct.is_finite() && pct >= 0.0 => Ok(pct),
        _ => Err(format!("{text:?} is not a percentage >= 0")),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // Help and version are successful answers; every other parse error is a
            // usage error, 64 as for a bad scenario, not clap's default of 2, which
            // would read as an invariant violation.
            let code = if error.use_stderr() {
                EXIT_USAGE
            } else {
                EXIT_OK
            };
            let _ = error.print();
            return exit(code);
        }
    };
    let outcome = match cli.command {
        Command::Run {
            scenario,
            target,
            out,
            server_bin,
            agents,
            listen,
            agents_wait_s,
            metrics_listen,
            request_log,
            request_log_sample,
        } => agents_options(agents, listen, agents_wait_s).and_then(|agents| {
            run(RunOptions {
                scenario,
                target,
                out_dir: out,
                server_bin,
                only_client: None,
                agents,
                metrics_listen,
                request_log: request_log.map(|path| RequestLogOptions {
                    path,
                    sample: request_log_sample,
                }),
            })
        }),
        Command::Agent(args) => agent(&args),
        Command::Replay {
            scenario,
            client,
            target,
            out,
            server_bin,
        } => replay(RunOptions {
            scenario,
            target,
            out_dir: out,
            server_bin,
            only_client: Some(client),
            agents: None,
            metrics_listen: None,
            request_log: None,
        }),
        Command::Worker(args) => worker(&args),
        Command::Compare {
            baseline,
            current,
            max_regression,
            relative,
        } => {
            let scale = if relative {
                Scale::Relative
            } else {
                Scale::Absolute
            };
            compare(&baseline, &current, max_regression, scale)
        }
    };
    match outcome {
        Ok(code) => exit(code),
        Err(error) => {
            eprintln!("catwar-sim: {error:#}");
            exit(exit_code_of(&error))
        }
    }
}

fn run(options: RunOptions) -> anyhow::Result<i32> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let outcome = runtime.block_on(catwar_sim::run::run(&options))?;
    print!("{}", outcome.report.summary());
    println!("report: {}", outcome.report_path.display());
    println!(
        "report: {}",
        outcome.report_path.with_file_name("report.html").display()
    );
    for warning in &outcome.warnings {
        eprintln!("catwar-sim: warning: {warning}");
    }
    let code = outcome.report.exit_code;
    let verdict = match code {
        EXIT_OK => "pass",
        EXIT_THRESHOLD_FAILED => "a threshold failed",
        EXIT_INVARIANT_VIOLATED => "an invariant was violated",
        EXIT_ABORTED => "a threshold aborted the run",
        EXIT_RUN_FAILED => "a worker or agent was lost",
        _ => "interrupted, nothing proven",
    };
    println!("result: {verdict} (exit {code})");
    Ok(code)
}

/// The environment variable holding the secret shared by a coordinator and its agents.
const AGENT_SECRET_ENV: &str = "CATWAR_AGENT_SECRET";
/// A shorter secret is guessable; 16 bytes is what a password manager or
/// `openssl rand -hex 8` gives at least.
const AGENT_SECRET_BYTES_MIN: usize = 16;

/// Why the agents' secret is unusable.
#[derive(Debug, thiserror::Error)]
#[error(
    "${AGENT_SECRET_ENV} must hold the secret shared by the coordinator and its agents, \
     at least {AGENT_SECRET_BYTES_MIN} bytes (e.g. `export {AGENT_SECRET_ENV}=$(openssl rand -hex 16)`)"
)]
struct SecretMissing;

/// The shared secret from the environment.
fn agent_secret() -> Result<Vec<u8>, SecretMissing> {
    match std::env::var(AGENT_SECRET_ENV) {
        Ok(secret) if secret.len() >= AGENT_SECRET_BYTES_MIN => Ok(secret.into_bytes()),
        _ => Err(SecretMissing),
    }
}

/// The agents of `run --agents N --listen ADDR`, if asked for.
fn agents_options(
    count: Option<u64>,
    listen: Option<SocketAddr>,
    wait_s: u64,
) -> anyhow::Result<Option<AgentsOptions>> {
    let (Some(count), Some(listen)) = (count, listen) else {
        return Ok(None);
    };
    Ok(Some(AgentsOptions {
        count,
        listen,
        secret: agent_secret()?,
        wait_s,
    }))
}

fn agent(args: &AgentArgs) -> anyhow::Result<i32> {
    let secret = agent_secret()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let served = runtime.block_on(catwar_sim::run::agent::serve(args, &secret));
    runtime.shutdown_background();
    served?;
    Ok(EXIT_OK)
}

fn replay(options: RunOptions) -> anyhow::Result<i32> {
    let client = options.only_client.expect("replay names its client");
    let scenario = Scenario::load(&options.scenario).map_err(RunError::Scenario)?;
    catwar_sim::run::check_replay_client(&scenario, client)?;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::DEBUG)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    eprintln!(
        "catwar-sim: replaying client {client} of {} (seed {}): every step, branch and pause follows",
        scenario.scenario.name, scenario.scenario.seed
    );
    run(options)
}

fn worker(args: &WorkerArgs) -> anyhow::Result<i32> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let served = runtime.block_on(catwar_sim::run::worker::serve(args));
    // The stdin reader blocks in a read on the runtime's blocking pool, which a normal
    // drop would wait for until the coordinator closes the pipe.
    runtime.shutdown_background();
    served?;
    Ok(EXIT_OK)
}

fn compare(
    baseline: &Path,
    current: &Path,
    max_regression_pct: f64,
    scale: Scale,
) -> anyhow::Result<i32> {
    let baseline_view = ReportView::load(baseline)?;
    let current_view = ReportView::load(current)?;
    let comparison = compare::compare(&baseline_view, &current_view, max_regression_pct, scale);
    print!("{}", compare::render(&comparison));
    let regressions = comparison.regressions();
    if regressions > 0 {
        println!(
            "{regressions} regression(s): a figure beyond {max_regression_pct}% and 1 ms, a step \
             missing, or an error rate up by more than {ERROR_RATE_POINTS_MAX} point"
        );
        return Ok(EXIT_THRESHOLD_FAILED);
    }
    if let Some(factor) = comparison.machine_too_slow() {
        println!(
            "every step's p50 grew {factor:.2} times (more than {MACHINE_FACTOR_MAX}): \
             a regression in a shared path or a host too slow to judge on"
        );
        return Ok(EXIT_THRESHOLD_FAILED);
    }
    println!("no regression beyond {max_regression_pct}%");
    Ok(EXIT_OK)
}

/// The exit code of an error, chosen by what failed.
fn exit_code_of(error: &anyhow::Error) -> i32 {
    if let Some(run_error) = error.downcast_ref::<RunError>() {
        run_error.exit_code()
    } else if let Some(AgentError::Run(run_error)) = error.downcast_ref::<AgentError>() {
        run_error.exit_code()
    } else if error.downcast_ref::<CompareError>().is_some()
        || error.downcast_ref::<SecretMissing>().is_some()
    {
        EXIT_USAGE
    } else {
        EXIT_RUN_FAILED
    }
}

fn exit(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX))
}
