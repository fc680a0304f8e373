//! The sections of a scenario file as typed structs, with their defaults.

use serde::Deserialize;
use std::time::Duration;

/// `[scenario]`: identity and length of the run.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    /// Shown in the report and the summary; required.
    pub name: String,
    /// Drives every random choice of every client. Default 1.
    #[serde(default = "Meta::default_seed")]
    pub seed: u64,
    /// Length of the run in seconds. Default 60: long enough for a session around one
    /// match of the server's default length (5 s fill timeout, 600 ticks at 20 Hz).
    #[serde(default = "Meta::default_duration_s")]
    pub duration_s: u64,
}

impl Meta {
    fn default_seed() -> u64 {
        1
    }
    fn default_duration_s() -> u64 {
        60
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
    /// Clients start their first session at a uniform random moment within this many
    /// ms, if given; see [`Load::start_window_ms`].
    #[serde(default)]
    pub start_spread_ms: Option<u64>,
}

impl Load {
    /// The window in which clients start their first session: `load.start_spread_ms`,
    /// by default one think time, so that a run does not open with a stampede unless
    /// the scenario asks for one.
    pub fn start_window_ms(&self) -> u64 {
        self.start_spread_ms.unwrap_or(self.think_time_ms)
    }

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
            start_spread_ms: None,
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
    /// The client asks the lobby to start a match, joins it and plays it to its end.
    /// Default 1.
    #[serde(default = "Script::default_start")]
    pub start: f64,
    /// Inputs a player sends per second while its match runs. Default 10: a client that
    /// samples its stick at half the server's default tick rate.
    #[serde(default = "Script::default_input_hz")]
    pub input_hz: u32,
    /// Right after joining, the client also asks the router for a match observer and
    /// watches its match through it. Default 0.3.
    #[serde(default = "Script::default_observe")]
    pub observe: f64,
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
    fn default_input_hz() -> u32 {
        10
    }
    fn default_observe() -> f64 {
        0.3
    }

    /// Every probability with its field name, for validation.
    pub(super) fn probabilities(&self) -> [(&'static str, f64); 7] {
        [
            ("script.stale_version", self.stale_version),
            ("script.wrong_password", self.wrong_password),
            ("script.ranking", self.ranking),
            ("script.ip_change", self.ip_change),
            ("script.idle", self.idle),
            ("script.start", self.start),
            ("script.observe", self.observe),
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
            input_hz: Script::default_input_hz(),
            observe: Script::default_observe(),
        }
    }
}

/// The password hashing cost of the server (`--argon2`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
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

/// How the play servers start match observers (`--observer-backend`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObserverBackend {
    /// A child process of the play server.
    Process,
    /// A container started through the Docker API.
    Docker,
}

impl ObserverBackend {
    /// The name used by `catwar-server --observer-backend` and in reports.
    pub fn name(self) -> &'static str {
        match self {
            ObserverBackend::Process => "process",
            ObserverBackend::Docker => "docker",
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
    /// Players in a full match. Default 4, the server's own default.
    #[serde(default = "Server::default_players_per_match")]
    pub players_per_match: u32,
    /// Seconds after which a match starts with whoever joined. Default 5.
    #[serde(default = "Server::default_match_fill_timeout_s")]
    pub match_fill_timeout_s: u64,
    /// Ticks in a match. Default 600 (30 s at 20 Hz).
    #[serde(default = "Server::default_match_ticks")]
    pub match_ticks: u64,
    /// The play servers' tick rate; late ticks are judged against its period. Default 20.
    #[serde(default = "Server::default_tick_hz")]
    pub tick_hz: u32,
    /// How match observers are started. Default `process`.
    #[serde(default = "Server::default_observer_backend")]
    pub observer_backend: ObserverBackend,
}

impl Server {
    /// The time between two ticks.
    pub fn tick_period(&self) -> Duration {
        Duration::from_secs_f64(1.0 / f64::from(self.tick_hz))
    }

    /// How long a running match lasts at most: `match_ticks` tick periods.
    pub fn match_duration(&self) -> Duration {
        Duration::from_secs_f64(self.match_ticks as f64 / f64::from(self.tick_hz))
    }

    /// The longest a joined player waits for its match to start.
    pub fn fill_timeout(&self) -> Duration {
        Duration::from_secs(self.match_fill_timeout_s)
    }

    fn default_argon2() -> Argon2Preset {
        Argon2Preset::Fast
    }
    fn default_token_idle_s() -> u64 {
        600
    }
    fn default_players_per_match() -> u32 {
        4
    }
    fn default_match_fill_timeout_s() -> u64 {
        5
    }
    fn default_match_ticks() -> u64 {
        600
    }
    fn default_tick_hz() -> u32 {
        20
    }
    fn default_observer_backend() -> ObserverBackend {
        ObserverBackend::Process
    }
}

impl Default for Server {
    fn default() -> Server {
        Server {
            argon2: Server::default_argon2(),
            token_idle_s: Server::default_token_idle_s(),
            players_per_match: Server::default_players_per_match(),
            match_fill_timeout_s: Server::default_match_fill_timeout_s(),
            match_ticks: Server::default_match_ticks(),
            tick_hz: Server::default_tick_hz(),
            observer_backend: Server::default_observer_backend(),
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
