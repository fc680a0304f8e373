//! catwar-sim: a load simulator for the CatWar server architecture.
//!
//! Virtual clients follow the CatWar script against a running topology (the embedded
//! `catwar-server up`, or one named by `--target`), faults are injected on a schedule,
//! invariants are checked on every answer, and the run ends in a report.
//!
//! # Module map
//!
//! Layers from the bottom up. A module names only modules of its own layer listed
//! before it or of layers below; `ci/module-cycles.py` checks that no two modules
//! (siblings at any depth) name each other.
//!
//! **Input and vocabulary**: what a run is asked to do, with no I/O but reading files.
//! - `step`: the timed steps, the invariants and the funnel stages, by name.
//! - `seeds`: every random stream's seed, derived from the scenario seed.
//! - `threshold`: parsing pass/fail conditions such as `"update.check.p99" = "< 100ms"`.
//! - [`scenario`]: the TOML scenario, typed and validated (errors name the field).
//! - `arrivals`: the open model's arrival times (Poisson or constant, ramp stages).
//!
//! **The outside world**: talking to the servers and to the topology.
//! - `net`: the network clients: `net::http` (keep-alive HTTP/1.1), `net::lines` (JSON
//!   lines for play servers and observers), `net::tls` (one-request TLS to profile).
//! - `topology`: topology.json, and starting/stopping the embedded server.
//!
//! **Measurement**: what the clients record while they run.
//! - `tokens`: every token issued during the run, for `tokens.unique`.
//! - `failover`: balancer failover gaps from the picks around each kill.
//! - `ledger`: every match result the clients saw, checked against the user DB.
//! - `metrics`: sharded exact HDR histograms, counts, errors, per-second series.
//!
//! **The client script**:
//! - `script`: what one virtual client does, step by step.
//!
//! **Judgement**: turning measurements into verdicts.
//! - [`report`]: report.json, the threshold verdicts, the summary table and report.html.
//! - `knee`: where a capacity run's server stopped keeping up.
//! - [`compare`]: `catwar-sim compare`, the CI gate on latency regressions.
//!
//! **Orchestration**: one run, from scenario to report.
//! - `faults`: the fault schedule (SIGKILL or SIGTERM through the topology).
//! - [`run`]: the run itself: the embedded server, the clients of this process or of
//!   worker processes ([`run::worker`]), the per-second series, judging and writing the
//!   report.
//!
//! Architecture invariant: nothing below orchestration names `run` or `faults`, and
//! nothing below judgement names `report`, `knee` or `compare`; the scenario and the
//! network clients know nothing of measurement.
//!
//! The binary (`main.rs`) is the only place that uses `anyhow`; every module returns
//! typed errors whose sources are kept.

#![deny(missing_docs, missing_debug_implementations)]

pub(crate) mod arrivals;
#[doc(hidden)]
pub mod benching;
pub mod compare;
pub(crate) mod engine;
pub(crate) mod failover;
pub(crate) mod faults;
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod knee;
pub(crate) mod ledger;
pub(crate) mod metrics;
pub(crate) mod net;
pub mod report;
pub mod run;
pub mod scenario;
pub(crate) mod script;
pub(crate) mod seeds;
pub(crate) mod step;
pub(crate) mod threshold;
pub(crate) mod tokens;
pub(crate) mod topology;

/// Every threshold and invariant held.
pub const EXIT_OK: i32 = 0;
/// A threshold failed (latency regression from a run, or `compare` found a regression).
pub const EXIT_THRESHOLD_FAILED: i32 = 1;
/// An invariant was violated; this takes precedence over failed thresholds.
pub const EXIT_INVARIANT_VIOLATED: i32 = 2;
/// A threshold with `abort_on_fail` failed over its window while running, and the run
/// was stopped early (k6's `abortOnFail`); the report's `abort` says which, when and
/// the value. Next to 1 and 2 because it is a verdict too; an invariant violation still
/// takes precedence.
pub const EXIT_ABORTED: i32 = 3;
/// The scenario or the command line is invalid (`EX_USAGE`).
pub const EXIT_USAGE: i32 = 64;
/// The run could not be carried out: the server did not start, storage did not answer,
/// or the report could not be written (`EX_SOFTWARE`).
pub const EXIT_RUN_FAILED: i32 = 70;
/// Ctrl-C or SIGTERM cut the run short (128 + SIGINT, as shells report it).
pub const EXIT_INTERRUPTED: i32 = 130;
/// Every exit code a run can end with; `run --help` lists each.
pub const EXIT_CODES: [i32; 7] = [
    EXIT_OK,
    EXIT_THRESHOLD_FAILED,
    EXIT_INVARIANT_VIOLATED,
    EXIT_ABORTED,
    EXIT_USAGE,
    EXIT_RUN_FAILED,
    EXIT_INTERRUPTED,
];

/// The tracing target of one client's path, which `catwar-sim replay` shows. The script
/// traces its branches and pauses, the metrics every request it records.
pub(crate) const TRACE: &str = "catwar_sim::trace";

/// An error followed by its sources, `outer: inner: innermost`: how the simulator shows
/// an error to a person (the binary prints anyhow's `{:#}`, which reads the same). Error
/// types keep their causes as sources rather than repeating them in their own message.
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
