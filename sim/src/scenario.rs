//! Scenario files: what a run simulates, typed and validated before anything starts.
//!
//! A scenario is a TOML file with these sections and defaults:
//!
//! | field | default | meaning |
//! |---|---|---|
//! | `scenario.name` | required | letters, digits, `.`, `_`, `-` |
//! | `scenario.seed` | 1 | drives every random choice |
//! | `scenario.duration_s` | 30 | length of the run |
//! | `population.clients` | 100 | virtual clients |
//! | `population.users` | `clients` | seeded users; client k logs in as `user{k % users + 1}` |
//! | `population.stale_version` | `"1.0.0"` | the version stale clients report |
//! | `load.model` | `"closed"` | only the closed model exists for now |
//! | `load.think_time_ms` | 1000 | pause after a session, jittered by ±50 % |
//! | `script.stale_version` | 0.1 | probability that a session starts stale |
//! | `script.wrong_password` | 0.02 | probability of a wrong password before the right one |
//! | `script.ranking` | 0.5 | probability of a ranking page after `/v1/me` |
//! | `script.ip_change` | 0.02 | probability of a source-IP change mid-session |
//! | `script.idle` | 0.0 | probability of idling past the token timeout, then refreshing |
//! | `script.start` | 1.0 | probability of `POST /v1/start` at the end of a session |
//! | `server.argon2` | `"fast"` | password hashing preset of the embedded server (`"owasp"`) |
//! | `server.token_idle_s` | 600 | the token idle timeout of the embedded server |
//! | `[[faults]]` | none | `at_s`, `action = "kill"`, `service` (a topology name) |
//! | `[thresholds]` | none | `"metric" = "condition"`, see [`crate::threshold`] |
//!
//! `[server]` configures the embedded topology. With `--target` the simulator cannot
//! configure the server: the section is then only recorded in the report, and
//! `server.token_idle_s` must equal the target's `--token-idle-s`, because the idle branch
//! sleeps just past it (a login answer that names another timeout is counted as the
//! error `idle_timeout_mismatch`).
//!
//! Unknown fields are errors, and every semantic error names its field.

use crate::threshold::{Metric, Threshold};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

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
/// A scenario schedules at most this many faults; more would be a chaos test, not a script.
const FAULTS_MAX: usize = 1_000;

/// Why a scenario was rejected. Every variant ends in exit code 64.
#[derive(Debug)]
pub enum ScenarioError {
    /// The file could not be read.
    Read {
        /// The scenario file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not fit the schema (unknown or mistyped field);
    /// the message quotes the offending line and names the field.
    Syntax(String),
    /// A field has a value outside its allowed range or form.
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

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScenarioError::Read { path, source } => {
                write!(f, "cannot read scenario {}: {source}", path.display())
            }
            ScenarioError::Syntax(message) => f.write_str(message),
            ScenarioError::Invalid { field, message } => write!(f, "{field}: {message}"),
        }
    }
}

impl std::error::Error for ScenarioError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ScenarioError::Read { source, .. } => Some(source),
            _ => None,
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
}

/// `[scenario]`: identity and length of the run.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    /// Shown in the report and the summary; required.
    pub name: String,
    /// Drives every random choice of every client. Default 1.
    #[serde(default = "Meta::default_seed")]
    pub seed: u64,
    /// Length of the run in seconds. Default 30.
    #[serde(default = "Meta::default_duration_s")]
    pub duration_s: u64,
}

impl Meta {
    fn default_seed() -> u64 {
        1
    }
    fn default_duration_s() -> u64 {
        30
    }
}

/// `[population]`: the virtual clients.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Population {
    /// Number of virtual clients. Default 100.
    #[serde(default = "Population::default_clients")]
    pub clients: u64,
    /// Number of seeded users, `user1` to `userN`, if given; see [`Population::user_count`].
    #[serde(default)]
    pub users: Option<u64>,
    /// The resource version a stale client reports. Default "1.0.0".
    #[serde(default = "Population::default_stale_version")]
    pub stale_version: String,
}

impl Population {
    /// Number of seeded users: `population.users`, by default one per client.
    pub fn user_count(&self) -> u64 {
        self.users.unwrap_or(self.clients)
    }

    fn default_clients() -> u64 {
        100
    }
    fn default_stale_version() -> String {
        "1.0.0".to_string()
    }
}

impl Default for Population {
    fn default() -> Population {
        Population {
            clients: Population::default_clients(),
            users: None,
            stale_version: Population::default_stale_version(),
        }
    }
}

/// How load is offered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoadModel {
    /// A fixed number of clients, each looping sessions back to back.
    Closed,
    /// Sessions arriving at a rate; named so that it is rejected with a clear message.
    Open,
}

/// `[load]`: the load model.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Load {
    /// Only `closed` is supported. Default `closed`.
    #[serde(default = "Load::default_model")]
    pub model: LoadModel,
    /// Pause after each session, jittered by ±50 %. Default 1000.
    #[serde(default = "Load::default_think_time_ms")]
    pub think_time_ms: u64,
}

impl Load {
    fn default_model() -> LoadModel {
        LoadModel::Closed
    }
    fn default_think_time_ms() -> u64 {
        1000
    }
}

impl Default for Load {
    fn default() -> Load {
        Load {
            model: Load::default_model(),
            think_time_ms: Load::default_think_time_ms(),
        }
    }
}

/// `[script]`: the probabilities of the script's branches, each drawn once per session.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Script {
    /// The session starts on the stale version and downloads the update. Default 0.1.
    #[serde(default = "Script::default_stale_version")]
    pub stale_version: f64,
    /// The client first logs in with a wrong password, expects `login_failed`, then
    /// retries with the right one. Default 0.02.
    #[serde(default = "Script::default_wrong_password")]
    pub wrong_password: f64,
    /// The client reads a page of the ranking after its own data. Default 0.5.
    #[serde(default = "Script::default_ranking")]
    pub ranking: f64,
    /// The client's source IP changes mid-session: its token must get `login_again`, and
    /// it logs in again from the new address. Default 0.02.
    #[serde(default = "Script::default_ip_change")]
    pub ip_change: f64,
    /// The client idles past `server.token_idle_s`, expects `refresh_required`, refreshes
    /// and checks that the old token is dead. Default 0.
    #[serde(default)]
    pub idle: f64,
    /// The client asks the lobby to start a match. Default 1.
    #[serde(default = "Script::default_start")]
    pub start: f64,
}

impl Script {
    fn default_stale_version() -> f64 {
        0.1
    }
    fn default_wrong_password() -> f64 {
        0.02
    }
    fn default_ranking() -> f64 {
        0.5
    }
    fn default_ip_change() -> f64 {
        0.02
    }
    fn default_start() -> f64 {
        1.0
    }

    /// Every probability with its field name, for validation.
    fn probabilities(&self) -> [(&'static str, f64); 6] {
        [
            ("script.stale_version", self.stale_version),
            ("script.wrong_password", self.wrong_password),
            ("script.ranking", self.ranking),
            ("script.ip_change", self.ip_change),
            ("script.idle", self.idle),
            ("script.start", self.start),
        ]
    }
}

impl Default for Script {
    fn default() -> Script {
        Script {
            stale_version: Script::default_stale_version(),
            wrong_password: Script::default_wrong_password(),
            ranking: Script::default_ranking(),
            ip_change: Script::default_ip_change(),
            idle: 0.0,
            start: Script::default_start(),
        }
    }
}

/// The password hashing cost of the server (`--argon2`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Argon2Preset {
    /// A cheap preset for large simulated populations.
    Fast,
    /// The OWASP recommendation: m = 19 MiB, t = 2, p = 1.
    Owasp,
}

impl Argon2Preset {
    /// The name used by `catwar-server --argon2` and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Argon2Preset::Fast => "fast",
            Argon2Preset::Owasp => "owasp",
        }
    }
}

/// `[server]`: the knobs of the embedded topology; informational with `--target`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    /// Password hashing preset for seeding and logins. Default `fast`: simulated
    /// populations log in by the thousand, and the OWASP cost would measure nothing but
    /// argon2 on a small machine.
    #[serde(default = "Server::default_argon2")]
    pub argon2: Argon2Preset,
    /// Seconds a token may go unused before the lobby asks for a refresh. Default 600,
    /// the server's own default.
    #[serde(default = "Server::default_token_idle_s")]
    pub token_idle_s: u64,
}

impl Server {
    fn default_argon2() -> Argon2Preset {
        Argon2Preset::Fast
    }
    fn default_token_idle_s() -> u64 {
        600
    }
}

impl Default for Server {
    fn default() -> Server {
        Server {
            argon2: Server::default_argon2(),
            token_idle_s: Server::default_token_idle_s(),
        }
    }
}

/// What a fault does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultAction {
    /// SIGKILL the service's process, whose pid is read from topology.json right before.
    Kill,
}

impl FaultAction {
    /// The name used in scenarios and reports.
    pub fn name(self) -> &'static str {
        match self {
            FaultAction::Kill => "kill",
        }
    }
}

/// `[[faults]]`: one scheduled fault.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// Seconds after the start of the run.
    pub at_s: f64,
    /// What to do.
    pub action: FaultAction,
    /// The topology name of the target, such as `balancer` or `file-node-1`, or
    /// `active-balancer` for whichever balancer is active at that moment.
    pub service: String,
}

impl Fault {
    /// Whether this fault kills the active balancer, which starts a failover.
    pub fn kills_balancer(&self) -> bool {
        self.action == FaultAction::Kill
            && (self.service == "balancer" || self.service == crate::faults::ACTIVE_BALANCER)
    }

    /// Whether this fault kills a file node, after which storage may briefly still
    /// hand out the dead node.
    pub fn kills_file_node(&self) -> bool {
        self.action == FaultAction::Kill && self.service.starts_with("file-node-")
    }
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
    #[serde(default)]
    thresholds: BTreeMap<String, String>,
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
        let thresholds = parse_thresholds(&raw.thresholds, &raw.faults)?;
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
        })
    }
}

fn validate_meta(meta: &Meta) -> Result<(), ScenarioError> {
    if !is_safe_name(&meta.name) {
        return Err(ScenarioError::invalid(
            "scenario.name",
            format!("must be 1 to {NAME_BYTES_MAX} letters, digits, '.', '_' or '-'"),
        ));
    }
    if !(1..=DURATION_S_MAX).contains(&meta.duration_s) {
        return Err(ScenarioError::invalid(
            "scenario.duration_s",
            format!("must be between 1 and {DURATION_S_MAX}"),
        ));
    }
    Ok(())
}

fn validate_population(population: &Population) -> Result<(), ScenarioError> {
    if !(1..=CLIENTS_MAX).contains(&population.clients) {
        return Err(ScenarioError::invalid(
            "population.clients",
            format!("must be between 1 and {CLIENTS_MAX}"),
        ));
    }
    if let Some(users) = population.users {
        if !(1..=USERS_MAX).contains(&users) {
            return Err(ScenarioError::invalid(
                "population.users",
                format!("must be between 1 and {USERS_MAX}"),
            ));
        }
    }
    let version = &population.stale_version;
    if !is_safe_name(version) || version.starts_with('.') {
        return Err(ScenarioError::invalid(
            "population.stale_version",
            format!("must be a version such as \"1.0.0\" (letters, digits, '.', '_', '-'; at most {NAME_BYTES_MAX})"),
        ));
    }
    Ok(())
}

fn validate_load(load: &Load) -> Result<(), ScenarioError> {
    if load.model == LoadModel::Open {
        return Err(ScenarioError::invalid(
            "load.model",
            "the open model is not available in this version of catwar-sim; use \"closed\"",
        ));
    }
    if load.think_time_ms > THINK_TIME_MS_MAX {
        return Err(ScenarioError::invalid(
            "load.think_time_ms",
            format!("must be between 0 and {THINK_TIME_MS_MAX}"),
        ));
    }
    Ok(())
}

fn validate_server(server: &Server) -> Result<(), ScenarioError> {
    if !(1..TOKEN_IDLE_S_MAX).contains(&server.token_idle_s) {
        return Err(ScenarioError::invalid(
            "server.token_idle_s",
            format!("must be between 1 and {}", TOKEN_IDLE_S_MAX - 1),
        ));
    }
    Ok(())
}

fn validate_script(script: &Script, server: &Server, duration_s: u64) -> Result<(), ScenarioError> {
    for (field, probability) in script.probabilities() {
        if !(0.0..=1.0).contains(&probability) {
            return Err(ScenarioError::invalid(
                field,
                "must be a probability between 0 and 1",
            ));
        }
    }
    // The idle branch sleeps one second past the timeout; a run too short to hold that
    // sleep and the rest of the session would never complete the branch.
    let idle_session_s = server.token_idle_s + 1 + IDLE_SESSION_SLACK_S;
    if script.idle > 0.0 && duration_s < idle_session_s {
        return Err(ScenarioError::invalid(
            "script.idle",
            format!(
                "needs scenario.duration_s >= server.token_idle_s + {} ({idle_session_s}); \
                 the idle branch sleeps server.token_idle_s + 1 s",
                1 + IDLE_SESSION_SLACK_S
            ),
        ));
    }
    Ok(())
}

fn validate_faults(faults: &[Fault], duration_s: u64) -> Result<(), ScenarioError> {
    if faults.len() > FAULTS_MAX {
        return Err(ScenarioError::invalid(
            "faults",
            format!("at most {FAULTS_MAX} faults"),
        ));
    }
    for (index, fault) in faults.iter().enumerate() {
        if !(0.0..duration_s as f64).contains(&fault.at_s) {
            return Err(ScenarioError::invalid(
                format!("faults[{index}].at_s"),
                format!("must be within the run: 0 <= at_s < scenario.duration_s ({duration_s})"),
            ));
        }
        if !is_service_name(&fault.service) {
            return Err(ScenarioError::invalid(
                format!("faults[{index}].service"),
                "must be one of storage, balancer, balancer-observer, active-balancer, \
                 file-node-N, profile, lobby, play-N, router",
            ));
        }
    }
    Ok(())
}

fn parse_thresholds(
    entries: &BTreeMap<String, String>,
    faults: &[Fault],
) -> Result<Vec<Threshold>, ScenarioError> {
    let mut thresholds = Vec::with_capacity(entries.len());
    for (name, condition) in entries {
        let field = format!("thresholds.\"{name}\"");
        let threshold = Threshold::parse(name, condition)
            .map_err(|e| ScenarioError::invalid(field.clone(), e.0))?;
        // Without a balancer kill there is no failover to time, and the threshold could
        // never be met; saying so now beats a failed run later.
        if threshold.metric == Metric::FailoverGap && !faults.iter().any(Fault::kills_balancer) {
            return Err(ScenarioError::invalid(
                field,
                "needs a [[faults]] entry with action = \"kill\" and service = \"balancer\"",
            ));
        }
        thresholds.push(threshold);
    }
    Ok(thresholds)
}

fn is_safe_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= NAME_BYTES_MAX
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn is_service_name(name: &str) -> bool {
    const FIXED: [&str; 6] = [
        "storage",
        "balancer",
        "balancer-observer",
        "profile",
        "lobby",
        "router",
    ];
    let numbered = |prefix: &str| {
        name.strip_prefix(prefix)
            .is_some_and(|n| !n.is_empty() && n.len() <= 4 && n.bytes().all(|b| b.is_ascii_digit()))
    };
    FIXED.contains(&name)
        || name == crate::faults::ACTIVE_BALANCER
        || numbered("file-node-")
        || numbered("play-")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMOKE: &str = include_str!("../../scenarios/smoke.toml");

    fn invalid_field(text: &str) -> String {
        match Scenario::parse(text) {
            Err(ScenarioError::Invalid { field, .. }) => field,
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn smoke_scenario_parses() {
        let scenario = Scenario::parse(SMOKE).unwrap();
        assert_eq!(scenario.scenario.name, "smoke");
        assert_eq!(scenario.scenario.seed, 42);
        assert_eq!(scenario.population.clients, 200);
        assert_eq!(scenario.script.stale_version, 0.3);
        assert_eq!(scenario.faults.len(), 1);
        assert!(scenario.faults[0].kills_balancer());
        assert_eq!(scenario.thresholds.len(), 5);
    }

    #[test]
    fn defaults_fill_missing_sections() {
        let scenario = Scenario::parse("[scenario]\nname = \"tiny\"\n").unwrap();
        assert_eq!(scenario.scenario.seed, 1);
        assert_eq!(scenario.scenario.duration_s, 30);
        assert_eq!(scenario.population.clients, 100);
        assert_eq!(scenario.population.stale_version, "1.0.0");
        assert_eq!(scenario.load.model, LoadModel::Closed);
        assert_eq!(scenario.load.think_time_ms, 1000);
        assert!(scenario.faults.is_empty() && scenario.thresholds.is_empty());
        assert_eq!(scenario.population.user_count(), 100);
        let script = &scenario.script;
        assert_eq!(
            (script.wrong_password, script.ranking, script.ip_change, script.idle, script.start),
            (0.02, 0.5, 0.02, 0.0, 1.0)
        );
        assert_eq!(scenario.server.argon2, Argon2Preset::Fast);
        assert_eq!(scenario.server.token_idle_s, 600);
    }

    #[test]
    fn login_and_lobby_fields_parse() {
        let text = "[scenario]\nname = \"x\"\nduration_s = 20\n\
                    [population]\nclients = 50\nusers = 7\n\
                    [script]\nwrong_password = 0.5\nranking = 0\nip_change = 1\nidle = 0.1\nstart = 0.0\n\
                    [server]\nargon2 = \"owasp\"\ntoken_idle_s = 3\n";
        let scenario = Scenario::parse(text).unwrap();
        assert_eq!(scenario.population.user_count(), 7);
        assert_eq!(scenario.script.wrong_password, 0.5);
        assert_eq!(scenario.script.ip_change, 1.0);
        assert_eq!(scenario.script.idle, 0.1);
        assert_eq!(scenario.script.start, 0.0);
        assert_eq!(scenario.server.argon2, Argon2Preset::Owasp);
        assert_eq!(scenario.server.argon2.name(), "owasp");
        assert_eq!(scenario.server.token_idle_s, 3);
    }

    #[test]
    fn login_and_lobby_errors_name_their_field() {
        let base = "[scenario]\nname = \"x\"\nduration_s = 20\n";
        for field in ["wrong_password", "ranking", "ip_change", "idle", "start"] {
            assert_eq!(
                invalid_field(&format!("{base}[script]\n{field} = -0.1\n")),
                format!("script.{field}")
            );
        }
        assert_eq!(
            invalid_field(&format!("{base}[population]\nusers = 0\n")),
            "population.users"
        );
        assert_eq!(
            invalid_field(&format!("{base}[server]\ntoken_idle_s = 0\n")),
            "server.token_idle_s"
        );
        assert_eq!(
            invalid_field(&format!("{base}[population]\nclients = {}\n", CLIENTS_MAX + 1)),
            "population.clients"
        );
        // The idle branch sleeps token_idle_s + 1 s; 20 s cannot hold a 15 s timeout.
        let idle = |timeout: u64| {
            format!("{base}[script]\nidle = 0.5\n[server]\ntoken_idle_s = {timeout}\n")
        };
        assert_eq!(invalid_field(&idle(15)), "script.idle");
        assert!(Scenario::parse(&idle(14)).is_ok());
        // Without the idle branch any timeout goes.
        assert!(Scenario::parse(&format!("{base}[server]\ntoken_idle_s = 600\n")).is_ok());
        for (text, named) in [
            (format!("{base}[server]\nargon2 = \"slow\"\n"), "argon2"),
            (format!("{base}[server]\nflags = [\"--x\"]\n"), "flags"),
        ] {
            match Scenario::parse(&text) {
                Err(ScenarioError::Syntax(message)) => {
                    assert!(message.contains(named), "{message}")
                }
                other => panic!("expected a syntax error, got {other:?}"),
            }
        }
    }

    #[test]
    fn unknown_field_is_named() {
        let text = "[scenario]\nname = \"x\"\n[population]\nclientz = 5\n";
        match Scenario::parse(text) {
            Err(ScenarioError::Syntax(message)) => {
                assert!(message.contains("clientz"), "{message}")
            }
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }

    #[test]
    fn bad_values_name_their_field() {
        let base = "[scenario]\nname = \"x\"\nduration_s = 10\n";
        assert_eq!(
            invalid_field(&format!("{base}[population]\nclients = 0\n")),
            "population.clients"
        );
        assert_eq!(
            invalid_field(&format!("{base}[load]\nmodel = \"open\"\n")),
            "load.model"
        );
        assert_eq!(
            invalid_field(&format!("{base}[script]\nstale_version = 1.5\n")),
            "script.stale_version"
        );
        assert_eq!(
            invalid_field("[scenario]\nname = \"a b\"\n"),
            "scenario.name"
        );
        assert_eq!(
            invalid_field("[scenario]\nname = \"x\"\nduration_s = 0\n"),
            "scenario.duration_s"
        );
        assert_eq!(
            invalid_field(&format!("{base}[population]\nstale_version = \"../etc\"\n")),
            "population.stale_version"
        );
        let fault = |at: &str, service: &str| {
            format!("{base}[[faults]]\nat_s = {at}\naction = \"kill\"\nservice = \"{service}\"\n")
        };
        assert_eq!(invalid_field(&fault("10.0", "balancer")), "faults[0].at_s");
        assert_eq!(
            invalid_field(&fault("1.0", "balancer-2")),
            "faults[0].service"
        );
        assert!(Scenario::parse(&fault("1.0", "file-node-2")).is_ok());
    }

    #[test]
    fn unknown_threshold_metric_is_an_error() {
        let text = "[scenario]\nname = \"x\"\n[thresholds]\n\"update.check.p42\" = \"< 1ms\"\n";
        assert_eq!(invalid_field(text), "thresholds.\"update.check.p42\"");
    }

    #[test]
    fn failover_threshold_needs_a_balancer_kill() {
        let text = "[scenario]\nname = \"x\"\n[thresholds]\n\"failover.gap\" = \"< 1s\"\n";
        assert_eq!(invalid_field(text), "thresholds.\"failover.gap\"");
    }

    #[test]
    fn mistyped_value_is_a_syntax_error_naming_the_field() {
        let text = "[scenario]\nname = \"x\"\nseed = \"forty-two\"\n";
        match Scenario::parse(text) {
            Err(ScenarioError::Syntax(message)) => assert!(message.contains("seed"), "{message}"),
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }
}
