//! catwar-sim: a load simulator for the CatWar server architecture.
//!
//! Virtual clients follow the CatWar script against a running topology (the embedded
//! `catwar-server up`, or one named by `--target`), faults are injected on a schedule,
//! invariants are checked on every answer, and the run ends in a report.
//!
//! Modules, in the order a run uses them:
//!
//! - [`scenario`]: the TOML scenario, typed and validated (errors name the field).
//! - [`threshold`]: pass/fail conditions such as `"update.check.p99" = "< 100ms"`.
//! - [`topology`]: topology.json, and starting/stopping the embedded server.
//! - [`run`]: one run from scenario to report: clients, faults, ticker, shutdown.
//! - [`clients`]: one process's share of the clients, the closed loop and the open model.
//! - [`arrivals`]: the open model's arrival times (Poisson or constant, ramp stages).
//! - [`worker`]: worker processes that share a run's clients, merged exactly.
//! - [`knee`]: where a capacity run's server stopped keeping up.
//! - [`progress`]: the live progress bar or log lines.
//! - [`script`]: what one virtual client does, step by step.
//! - [`http`]: the minimal keep-alive HTTP/1.1 client the script talks through.
//! - [`lines`]: the newline-delimited JSON client for play servers and match observers.
//! - [`tls`]: one-request TLS connections to profile, verified against its certificate.
//! - [`tokens`]: every token issued during the run, for `tokens.unique`.
//! - [`ledger`]: every match result the clients saw, checked against the user DB.
//! - [`step`]: the timed steps and the invariants, by name.
//! - [`metrics`]: sharded HDR histograms, counts, errors, per-second series.
//! - [`failover`]: balancer failover gaps from the picks around each kill.
//! - [`faults`]: the fault schedule (SIGKILL through the topology).
//! - [`report`]: report.json, the summary table and the self-contained report.html.
//! - [`compare`]: `catwar-sim compare`, the CI gate on latency regressions.

#![deny(missing_docs, missing_debug_implementations)]

pub mod arrivals;
pub mod clients;
pub mod compare;
pub mod failover;
pub mod faults;
pub mod http;
pub mod knee;
pub mod ledger;
pub mod lines;
pub mod metrics;
pub mod progress;
pub mod report;
pub mod run;
pub mod scenario;
pub mod script;
pub mod step;
pub mod threshold;
pub mod tls;
pub mod tokens;
pub mod topology;
pub mod worker;

/// Every threshold and invariant held.
pub const EXIT_OK: i32 = 0;
/// A threshold failed (latency regression from a run, or `compare` found a regression).
pub const EXIT_THRESHOLD_FAILED: i32 = 1;
/// An invariant was violated; this takes precedence over failed thresholds.
pub const EXIT_INVARIANT_VIOLATED: i32 = 2;
/// The scenario or the command line is invalid (`EX_USAGE`).
pub const EXIT_USAGE: i32 = 64;
/// The run could not be carried out: the server did not start, storage did not answer,
/// or the report could not be written (`EX_SOFTWARE`).
pub const EXIT_RUN_FAILED: i32 = 70;
/// Ctrl-C or SIGTERM cut the run short (128 + SIGINT, as shells report it).
pub const EXIT_INTERRUPTED: i32 = 130;
