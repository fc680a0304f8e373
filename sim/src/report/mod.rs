//! The run report: `report.json` (schema `catwar-sim/report/v1`), the summary table
//! (`summary`) and the self-contained `report.html` with charts (`html`).
//!
//! Per step the report carries HDR percentiles and the whole histogram, serialized in the
//! HdrHistogram V2 format and base64-encoded, so that reports of several runs or worker
//! processes can be merged exactly later. Latencies are in microseconds, of successful
//! requests only; `count` includes failed requests.
//!
//! - `measured`: the report's sections from a metrics snapshot (steps, funnel, series).
//! - `histogram`: histograms as base64 of the HdrHistogram V2 format, and back.
//! - `judge`: each threshold's figure in the report, the verdicts and the exit code.
//! - `abort`: the abort gate that stopped a run early, and its exit code.
//! - `services`: each service's CPU and memory over the run, the one nearest saturation
//!   at the knee, and the summary's `services:` line.
//! - `summary` and `html`: the terminal table and the self-contained page.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod abort;
mod histogram;
mod html;
mod judge;
mod measured;
mod services;
mod summary;
#[cfg(test)]
mod tests;

// The parts of the report schema that lower layers compute are named here too, so that
// a reader of the schema (and a test that builds a report) finds them in one place.
pub use crate::failover::FailoverSummary;
pub use crate::metrics::LoadPoint;
pub use abort::AbortReport;
pub(crate) use histogram::{decode_histogram, encode_histogram, HistogramError};
pub use judge::ThresholdResult;
pub(crate) use measured::{time_point, Measured};
pub use measured::{FunnelRow, StepReport};
pub use services::{
    nearest_saturation, round_cores, SaturatedService, ServiceSample, ServiceUsage,
    Source as ServiceSource,
};

/// The schema tag of every report this version writes.
pub const REPORT_SCHEMA: &str = "catwar-sim/report/v1";
/// Length of one point of the time series.
pub const INTERVAL_MS: u64 = 1000;

/// A whole report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// Always [`REPORT_SCHEMA`].
    pub schema: String,
    /// The scenario that ran.
    pub scenario: ScenarioInfo,
    /// When the clients started, in ms since the Unix epoch.
    pub started_at_unix_ms: u64,
    /// How long the clients ran, in seconds.
    pub duration_s: f64,
    /// Whether the run was cut short by Ctrl-C.
    pub interrupted: bool,
    /// Where and with what it ran.
    pub environment: Environment,
    /// The server settings the run assumed.
    pub server: ServerInfo,
    /// Figures per step, by step name.
    pub steps: BTreeMap<String, StepReport>,
    /// Failed requests by error code, all steps together.
    pub errors_by_code: BTreeMap<String, u64>,
    /// Figures per second.
    pub timeseries: Timeseries,
    /// The faults executed.
    pub faults: Vec<FaultRecord>,
    /// Balancer failover figures.
    pub failover: FailoverSummary,
    /// Every invariant and how often it held.
    pub invariants: Vec<InvariantReport>,
    /// How many sessions and clients reached each stage of the scenario, and how long
    /// they spent there.
    #[serde(default)]
    pub funnel: Vec<FunnelRow>,
    /// The open model's arrivals; `null` for the closed model.
    #[serde(default)]
    pub arrivals: Option<ArrivalsReport>,
    /// The knee of a capacity run (a scenario with `[knee]`); `null` otherwise.
    #[serde(default)]
    pub knee: Option<KneeReport>,
    /// The simulator's own use of the machine.
    #[serde(default)]
    pub sim: SimUsage,
    /// Each service of the topology: its CPU and resident memory per second, sampled by
    /// the coordinator (`services`). Empty in reports from before it was sampled.
    #[serde(default)]
    pub services: Vec<ServiceUsage>,
    /// Every threshold of the scenario and whether it held.
    pub thresholds: Vec<ThresholdResult>,
    /// The abort gate that stopped the run early (`abort_on_fail`); `null` when none did.
    #[serde(default)]
    pub abort: Option<AbortReport>,
    /// The exit code of the run.
    pub exit_code: i32,
}

/// The scenario of a report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScenarioInfo {
    /// `scenario.name`.
    pub name: String,
    /// `scenario.seed`, to replay the run.
    pub seed: u64,
    /// The file the scenario was read from.
    pub path: String,
    /// The scenario text as run.
    pub text: String,
}

/// The machine and build a report comes from.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Environment {
    /// Operating system.
    pub os: String,
    /// CPU architecture.
    pub arch: String,
    /// Cores available to the simulator.
    pub cores: usize,
    /// Version of catwar-sim.
    pub sim_version: String,
    /// `git rev-parse HEAD` of the working directory, if it is a repository.
    pub git_commit: Option<String>,
    /// `embedded`, or the topology.json given with `--target`.
    pub target: String,
}

impl Environment {
    /// The environment of this process.
    pub fn current(target: String) -> Environment {
        Environment {
            os: std::env::consts::OS.to_string(),
            arch: std::env::consts::ARCH.to_string(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            sim_version: env!("CARGO_PKG_VERSION").to_string(),
            git_commit: git_commit(),
            target,
        }
    }
}

fn git_commit() -> Option<String> {
    let output = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let commit = String::from_utf8(output.stdout).ok()?.trim().to_string();
    (output.status.success() && !commit.is_empty()).then_some(commit)
}

/// The server settings of a run: those the embedded server was started with, or, with
/// `--target`, those the scenario declares (which the simulator cannot set there).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServerInfo {
    /// The password hashing preset, `fast` or `owasp`: login latencies mean little
    /// without it.
    pub argon2: String,
    /// The token idle timeout, seconds.
    pub token_idle_s: u64,
    /// Seeded users.
    pub users: u64,
    /// Players in a full match.
    pub players_per_match: u32,
    /// Seconds after which a match starts with whoever joined.
    pub match_fill_timeout_s: u64,
    /// Ticks in a match.
    pub match_ticks: u64,
    /// The play servers' tick rate.
    pub tick_hz: u32,
    /// How observers are started, `process` or `docker`.
    pub observer_backend: String,
    /// Play server processes.
    #[serde(default)]
    pub play_servers: u32,
    /// True when catwar-sim started the server with these settings; false when they are
    /// only declared for a `--target`.
    pub applied: bool,
    /// True when a `--target`'s topology.json stated its settings and these are they.
    #[serde(default)]
    pub read_from_target: bool,
}

impl ServerInfo {
    /// One line naming every setting, as the terminal summary and the page show it.
    pub fn describe(&self) -> String {
        format!(
            "argon2 {}, token idle {} s, {} users, {} play servers, matches of {} players, {} \
             ticks at {} Hz, fill timeout {} s, {} observers ({})",
            self.argon2,
            self.token_idle_s,
            self.users,
            self.play_servers,
            self.players_per_match,
            self.match_ticks,
            self.tick_hz,
            self.match_fill_timeout_s,
            self.observer_backend,
            if self.applied {
                "as started by catwar-sim"
            } else if self.read_from_target {
                "as the target's topology.json states them"
            } else {
                "as declared for the target, which states none"
            }
        )
    }
}

/// The open model's arrivals.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArrivalsReport {
    /// `poisson` or `constant`.
    pub arrival: String,
    /// Arrivals the stages were expected to offer.
    pub expected: f64,
    /// Arrivals started.
    pub started: u64,
    /// Arrivals not started because `population.clients` were all busy; their requests
    /// never happened, so they are counted here rather than hidden.
    pub dropped: u64,
}

/// The knee of a capacity run: where the server stopped keeping up.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KneeReport {
    /// Whether a condition broke for `window_s` seconds in a row.
    pub found: bool,
    /// The first second of the broken window; `null` if not found.
    pub t_s: Option<u64>,
    /// The condition that broke, such as `lobby.me.p99 < 50ms`.
    pub condition: Option<String>,
    /// The arrival rate offered at the knee, or the highest rate offered if the server
    /// never broke (then the capacity is at least this).
    pub arrival_rate_per_s: f64,
    /// Requests per second completed in the last second before the knee (or the best
    /// second of a run without one).
    pub throughput_per_s: u64,
    /// Clients in a session at the knee.
    pub active: u64,
    /// Seconds a condition had to stay broken.
    pub window_s: u64,
    /// The service nearest saturation in the knee's second (see
    /// [`nearest_saturation`]); `null` without a knee or without samples then.
    #[serde(default)]
    pub service: Option<SaturatedService>,
}

/// What the simulator itself used, for sizing runs (memory per client, sockets).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SimUsage {
    /// Processes that ran clients.
    pub workers: u32,
    /// Most clients inside a session at once.
    pub peak_active: u64,
    /// Most descriptors (sockets, mostly) held at once, all workers together.
    pub peak_open_files: u64,
    /// Largest resident memory, KiB, all workers together.
    pub peak_rss_kib: u64,
    /// Resident memory before any client started, KiB, all workers together.
    #[serde(default)]
    pub baseline_rss_kib: u64,
    /// Resident memory per active client at the busiest second, KiB: what the clients
    /// added to the baseline, divided by the clients active then. Clients in a session
    /// hold their connections, buffers and task; the kernel's socket buffers are not in
    /// it (they are not the simulator's memory).
    pub rss_per_active_kib: Option<f64>,
    /// The agents of a run with `--agents`, in index order.
    #[serde(default)]
    pub agents: Vec<AgentReport>,
    /// Workers or agents lost mid-run, each named with what happened to it.
    #[serde(default)]
    pub lost: Vec<String>,
    /// Whether a loss fails the run (`load.worker_lost = "fail"`).
    #[serde(default)]
    pub lost_fails_run: bool,
}

/// One agent of a distributed run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentReport {
    /// Its index: it drove clients k with k % agents == index.
    pub index: u64,
    /// Its name (host name, or `agent --name`).
    pub name: String,
    /// The address it connected from.
    pub peer: String,
    /// Its clock minus the coordinator's, µs, as measured before the start and
    /// corrected for in its start instant.
    pub clock_offset_us: i64,
    /// The error bound of that offset (half the shortest ping round trip), µs.
    pub clock_uncertainty_us: u64,
    /// Bytes of messages it sent the coordinator over the run.
    pub received_bytes: u64,
    /// The same per second of the run: the bandwidth the coordinator needs per agent.
    pub received_bytes_per_s: f64,
}

impl SimUsage {
    /// The usage of a run from its series and the resident memory before its clients.
    pub fn from_series(points: &[TimePoint], workers: u32, baseline_rss_kib: u64) -> SimUsage {
        let mut usage = SimUsage {
            workers,
            baseline_rss_kib,
            ..SimUsage::default()
        };
        let mut busiest: Option<&LoadPoint> = None;
        for point in points {
            let load = &point.load;
            usage.peak_active = usage.peak_active.max(load.active);
            usage.peak_open_files = usage.peak_open_files.max(load.open_files);
            usage.peak_rss_kib = usage.peak_rss_kib.max(load.rss_kib);
            if busiest.is_none_or(|b| load.active > b.active) {
                busiest = Some(load);
            }
        }
        usage.rss_per_active_kib = busiest
            .filter(|b| b.active > 0)
            .map(|b| b.rss_kib.saturating_sub(baseline_rss_kib) as f64 / b.active as f64);
        usage
    }
}

/// The per-second series.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Timeseries {
    /// Length of one point, ms.
    pub interval_ms: u64,
    /// One point per interval.
    pub points: Vec<TimePoint>,
}

/// One second of the run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TimePoint {
    /// Seconds since the start: the point covers [t_s, t_s + 1).
    pub t_s: u64,
    /// Figures per step, by step name.
    pub steps: BTreeMap<String, TimeStep>,
    /// Arrivals, active clients and the simulator's own use of the machine.
    #[serde(default)]
    pub load: LoadPoint,
}

/// One step in one second.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TimeStep {
    /// Requests, failed ones included.
    pub requests: u64,
    /// Failed requests.
    pub errors: u64,
    /// Median of successful requests, µs (2 significant figures); absent from reports
    /// of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50_us: Option<u64>,
    /// 90th percentile of successful requests, µs (2 significant figures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p90_us: Option<u64>,
    /// 99th percentile of successful requests, µs (2 significant figures).
    pub p99_us: Option<u64>,
    /// Failed requests by error code; omitted when none failed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub errors_by_code: BTreeMap<String, u64>,
}

/// What happened when a fault ran, as written to the report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultRecord {
    /// When the scenario scheduled it, seconds after the start.
    pub at_s: f64,
    /// When it ran, ms after the start.
    pub executed_at_ms: f64,
    /// `kill`, `restart`, `partition`, `delay`, `loss` or `pause`.
    pub action: String,
    /// How long a lasting fault held before it was undone, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_s: Option<f64>,
    /// The topology name of the target.
    pub service: String,
    /// The pid signalled, if one was found.
    pub pid: Option<u32>,
    /// Whether the fault was carried out.
    pub ok: bool,
    /// Why it was not, when it was not.
    pub detail: Option<String>,
    /// From the signal until the service was back under a new pid and accepting
    /// connections, ms; absent if it was not back before the run ended.
    #[serde(default)]
    pub back_after_ms: Option<f64>,
    /// What `PRAGMA integrity_check` said of the user DB once the service was back (or
    /// the observer gone): `ok`, SQLite's list of problems, or why the DB could not be
    /// read; absent for a fault that did not run.
    #[serde(default)]
    pub integrity: Option<String>,
}

/// How often one invariant was checked and violated.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InvariantReport {
    /// The invariant's name, such as `downloads.sha256`.
    pub name: String,
    /// Times checked.
    pub checked: u64,
    /// Times violated.
    pub violations: u64,
}

impl Report {
    /// Writes `report.json` into `dir` and returns its path.
    pub fn write(&self, dir: &Path) -> std::io::Result<PathBuf> {
        let path = dir.join("report.json");
        let mut text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        text.push('\n');
        std::fs::write(&path, text)?;
        Ok(path)
    }
}
