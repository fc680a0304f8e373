//! Scenario files: what a run simulates, typed and validated before anything starts.
//!
//! A scenario is a TOML file with these sections and defaults:
//!
//! | field | default | meaning |
//! |---|---|---|
//! | `scenario.name` | required | letters, digits, `.`, `_`, `-` |
//! | `scenario.seed` | 1 | drives every random choice |
//! | `scenario.duration_s` | 60 | length of the run |
//! | `population.clients` | 100 | virtual clients |
//! | `population.users` | `clients` | seeded users; client k logs in as `user{k % users + 1}` |
//! | `population.stale_version` | `"1.0.0"` | the version stale clients report |
//! | `load.model` | `"closed"` | `"closed"`: `clients` loop sessions; `"open"`: sessions arrive at a rate |
//! | `load.think_time_ms` | 1000 | closed: pause after a session, jittered by ±50 % |
//! | `load.start_spread_ms` | `think_time_ms` | closed: first sessions start uniformly within it |
//! | `load.arrival` | `"poisson"` | open: `"poisson"` or `"constant"` gaps between arrivals |
//! | `load.start_rate_per_s` | 0 | open: the rate the first stage ramps from |
//! | `load.stages` | required for open | `[{ duration_s, target_per_s }]`, linear ramps |
//! | `load.workers` | 1 | simulator processes sharing the clients (one per ~15,000 sockets) |
//! | `load.worker_lost` | `"fail"` | a worker or agent lost mid-run fails the run, or `"continue"` |
//! | `script.stale_version` | 0.1 | probability that a session starts stale |
//! | `script.wrong_password` | 0.02 | probability a session types a wrong password: refused, it ends there |
//! | `script.me_requests` | 1 | `/v1/me` requests per session, back to back |
//! | `script.ranking` | 0.5 | probability of a ranking page after `/v1/me` |
//! | `script.ip_change` | 0.02 | probability of a source-IP change mid-session |
//! | `script.idle` | 0.0 | probability of idling past the token timeout, then refreshing |
//! | `script.start` | 1.0 | probability of starting, joining and playing a match |
//! | `script.input_hz` | 10 | inputs per second a player sends during its match (0: idle) |
//! | `script.observe` | 0.3 | probability of also watching the match through an observer |
//! | `server.argon2` | `"fast"` | password hashing preset of the embedded server (`"owasp"`) |
//! | `server.token_idle_s` | 600 | the token idle timeout of the embedded server |
//! | `server.players_per_match` | 4 | players in a full match |
//! | `server.match_fill_timeout_s` | 5 | a match starts after this with whoever joined |
//! | `server.match_ticks` | 600 | ticks in a match |
//! | `server.tick_hz` | 20 | the play servers' tick rate |
//! | `server.observer_backend` | `"process"` | how observers start (`"docker"`) |
//! | `server.play_servers` | 2 | play server processes |
//! | `[[faults]]` | none | `at_s`, `action` (`"kill"`: SIGKILL, `"restart"`: SIGTERM), `service` (a topology name) |
//! | `[thresholds]` | none | `"metric" = "condition"`, see the `threshold` module, or `"metric" = { limit = "condition", abort_on_fail = true, delay_abort_eval_s = 0, window_s = 5 }` to stop the run early (`gates`) |
//! | `knee.conditions` | none | open model: per-second `STEP.p99` / `errors.rate` conditions |
//! | `knee.window_s` | 3 | seconds in a row a condition must break to mark the knee |
//! | `knee.stop` | true | stop arrivals once the knee is found |
//!
//! In the open model `population.clients` caps the clients in flight at once: an arrival
//! that finds them all busy is not started and is counted as `arrivals.dropped`.
//!
//! `[server]` configures the embedded topology. With `--target` the simulator cannot
//! configure the server: the section is then only recorded in the report, and it must
//! match the target's flags all the same: the idle branch sleeps just past
//! `server.token_idle_s` (a login answer that names another timeout is counted as the
//! error `idle_timeout_mismatch`), late ticks are judged against `server.tick_hz`, and
//! clients only start a match that the fill timeout and `match_ticks` let end in the run.
//!
//! Unknown fields are errors, and every semantic error names its field.

mod gates;
mod sections;
#[cfg(test)]
mod tests;
mod validate;

pub use gates::{AbortGate, ABORT_WINDOW_S_DEFAULT};
pub use sections::{
    Argon2Preset, Arrival, Fault, FaultAction, FaultMoment, KneeSection, Load, LoadModel, Meta,
    ObserverBackend, Population, Script, Server, Stage, ACTIVE_BALANCER, MATCH_END_WAIT_S,
    WorkerLost, OBSERVER,
};

use crate::threshold::{Metric, Threshold};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use validate::{
    parse_knee, parse_thresholds, validate_faults, validate_load, validate_match_fits,
    validate_meta, validate_population, validate_script, validate_server, validate_stages,
    validate_workers,
};

/// Bounds on `population.clients`. Client k connects from 127.10.0.0 + k and, after an
/// IP change, from 127.20.0.0 + k; 655,360 (0x0A_0000) is the distance between the two
/// blocks, so no client's second address is another client's first. That is far beyond
/// the file descriptors of a default machine anyway.
pub const CLIENTS_MAX: u64 = 0x0A_0000;
/// Seeding costs one password hash per user; a million is a large game's whole user
/// base, and takes minutes even with the fast preset.
const USERS_MAX: u64 = 1_000_000;
/// A token idle timeout of a day or more is no timeout a simulation can observe.
const TOKEN_IDLE_S_MAX: u64 = 86_400;
/// After idling past the timeout, a session still refreshes, checks both tokens and logs
/// out; on loopback that fits in a few seconds, so the run must be this much longer than
/// the idle sleep for the branch to complete at all.
const IDLE_SESSION_SLACK_S: u64 = 5;
/// A run lasts at most a day; longer runs are soak tests that want their own tooling.
const DURATION_S_MAX: u64 = 86_400;
/// Think time is at most an hour; longer pauses leave a client idle for the whole run.
const THINK_TIME_MS_MAX: u64 = 3_600_000;
/// Names and versions end up in paths and tables, so they stay short.
const NAME_BYTES_MAX: usize = 64;
/// `/v1/me` requests in one session: ten million keep one client busy for minutes even at
/// loopback speed, enough for any lobby load loop.
const ME_REQUESTS_MAX: u32 = 10_000_000;
/// Ramp stages of the open model; a hundred describe any realistic day of traffic.
const STAGES_MAX: usize = 100;
/// Arrivals per second of the open model; a hundred thousand sessions a second is far
/// beyond what one machine's loopback can serve, so a larger rate is a typo.
const RATE_PER_S_MAX: f64 = 100_000.0;
/// Simulator worker processes; 64 cover a million clients at ~16,000 sockets each.
pub const WORKERS_MAX: u32 = 64;
/// A knee window of a minute or more would report the knee long after the server broke.
const KNEE_WINDOW_S_MAX: u64 = 60;
/// One bad second is noise on a shared machine; three in a row is a trend.
const KNEE_WINDOW_S_DEFAULT: u64 = 3;
/// `catwar-server up` runs 1 to 100 play servers.
const PLAY_SERVERS_MAX: u32 = 100;
/// A scenario schedules at most this many faults; more would be a chaos test, not a script.
const FAULTS_MAX: usize = 1_000;
/// The longest a lasting fault may hold: a fault that outlives any sensible run is a typo.
const FAULT_FOR_S_MAX: f64 = 3_600.0;
/// The longest delay a `delay` fault may add; beyond a minute every connection times out
/// anyway, and that is a partition.
const FAULT_DELAY_MS_MAX: u64 = 60_000;
/// `catwar-server up` takes 1 to 64 players per match.
const PLAYERS_PER_MATCH_MAX: u32 = 64;
/// `catwar-server up` waits at most an hour for a match to fill.
const MATCH_FILL_TIMEOUT_S_MAX: u64 = 3_600;
/// `catwar-server up` takes 1 to a million ticks per match.
const MATCH_TICKS_MAX: u64 = 1_000_000;
/// `catwar-server up` ticks at 1 to 1000 Hz.
const TICK_HZ_MAX: u32 = 1_000;
/// The play server keeps only a player's latest input per tick, so inputs faster than
/// the fastest tick rate are overwritten before they are ever applied.
const INPUT_HZ_MAX: u32 = TICK_HZ_MAX;
/// Around its match a session updates, logs in and visits the lobby first, and waits
/// for the results to be committed after the last tick; on a loaded two-core loopback
/// that takes a few seconds, which the run must hold besides the match itself.
const MATCH_SESSION_SLACK_S: u64 = 5;

/// Why a scenario was rejected. Every variant ends in exit code 64.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read scenario {}", path.display())]
    Read {
        /// The scenario file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not fit the schema (unknown or mistyped field);
    /// the message quotes the offending line and names the field.
    #[error("{0}")]
    Syntax(String),
    /// A field has a value outside its allowed range or form.
    #[error("{field}: {message}")]
    Invalid {
        /// The field, such as `population.clients` or `faults[0].at_s`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
}

impl ScenarioError {
    fn invalid(field: impl Into<String>, message: impl Into<String>) -> ScenarioError {
        ScenarioError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A validated scenario.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// The TOML text it was parsed from, kept for the report.
    pub text: String,
    /// `[scenario]`
    pub scenario: Meta,
    /// `[population]`
    pub population: Population,
    /// `[load]`
    pub load: Load,
    /// `[script]`
    pub script: Script,
    /// `[server]`
    pub server: Server,
    /// `[[faults]]`, sorted by time.
    pub faults: Vec<Fault>,
    /// `[thresholds]`, sorted by metric name.
    pub thresholds: Vec<Threshold>,
    /// The thresholds with `abort_on_fail`, judged while running.
    pub abort_gates: Vec<AbortGate>,
    /// `[knee]`, if the scenario looks for the load at which the server breaks.
    pub knee: Option<Knee>,
}

/// The validated `[knee]` section.
#[derive(Clone, Debug)]
pub struct Knee {
    /// Seconds in a row a condition must be broken.
    pub window_s: u64,
    /// Whether arrivals stop once the knee is found.
    pub stop: bool,
    /// Per-second conditions: `STEP.p99` or `errors.rate`.
    pub conditions: Vec<Threshold>,
}

/// The file as written, before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    scenario: Meta,
    #[serde(default)]
    population: Population,
    #[serde(default)]
    load: Load,
    #[serde(default)]
    script: Script,
    #[serde(default)]
    server: Server,
    #[serde(default)]
    faults: Vec<Fault>,
    /// Conditions, or tables with a `limit` and the abort gate's fields (`gates`).
    #[serde(default)]
    thresholds: BTreeMap<String, toml::Value>,
    #[serde(default)]
    knee: Option<KneeSection>,
}

impl Scenario {
    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Scenario::parse(&text).map_err(|error| match error {
            ScenarioError::Syntax(message) => {
                ScenarioError::Syntax(format!("{}: {message}", path.display()))
            }
            other => other,
        })
    }

    /// Parses and validates scenario text.
    pub fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        let raw: Raw = toml::from_str(text).map_err(|e| ScenarioError::Syntax(e.to_string()))?;
        validate_meta(&raw.scenario)?;
        validate_population(&raw.population)?;
        validate_load(&raw.load)?;
        validate_server(&raw.server)?;
        validate_script(&raw.script, &raw.server, raw.scenario.duration_s)?;
        validate_faults(&raw.faults, raw.scenario.duration_s)?;
        let (conditions, gate_fields) = gates::split_entries(&raw.thresholds)?;
        let thresholds = parse_thresholds(&conditions, &raw.faults)?;
        let abort_gates = gates::abort_gates(&thresholds, gate_fields)?;
        validate_match_fits(&raw.script, &raw.server, raw.scenario.duration_s)?;
        validate_stages(&raw.load, raw.scenario.duration_s)?;
        validate_workers(&raw.load, &raw.population)?;
        let knee = parse_knee(raw.knee.as_ref(), &raw.load)?;
        let mut faults = raw.faults;
        faults.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
        Ok(Scenario {
            text: text.to_string(),
            scenario: raw.scenario,
            population: raw.population,
            load: raw.load,
            script: raw.script,
            server: raw.server,
            faults,
            thresholds,
            abort_gates,
            knee,
        })
    }
}
