//! The sections of a scenario file as typed structs, with their defaults.

use serde::Deserialize;
use std::collections::BTreeMap;
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
    /// Sessions arriving at a rate that does not depend on how fast the server answers;
    /// each arrival is a client that plays one session and leaves.
    Open,
}

/// How arrivals of the open model are spaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arrival {
    /// Independent arrivals: exponential gaps at the current rate, as real players log on.
    Poisson,
    /// Evenly spaced arrivals at the current rate, like wrk2's constant throughput.
    Constant,
}

impl Arrival {
    /// The name used in scenarios and reports.
    pub fn name(self) -> &'static str {
        match self {
            Arrival::Poisson => "poisson",
            Arrival::Constant => "constant",
        }
    }
}

/// What a run does when a worker or agent is lost (disconnected, silent, crashed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerLost {
    /// The run fails (exit 70), the lost one named in the summary and the report.
    #[default]
    Fail,
    /// The run is judged on what the others measured; the loss is still reported.
    Continue,
}

/// One stage of the open model's arrival rate: a linear ramp from the rate the previous
/// stage ended at (or `load.start_rate_per_s`) to `target_per_s`, over `duration_s`.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    /// Length of the stage in seconds.
    pub duration_s: f64,
    /// Arrivals per second at the end of the stage.
    pub target_per_s: f64,
}

/// `[load]`: the load model.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Load {
    /// `closed` or `open`. Default `closed`.
    #[serde(default = "Load::default_model")]
    pub model: LoadModel,
    /// Closed model: pause after each session, jittered by ±50 %. Default 1000.
    #[serde(default = "Load::default_think_time_ms")]
    pub think_time_ms: u64,
    /// Closed model: clients start their first session at a uniform random moment
    /// within this many ms, if given; see [`Load::start_window_ms`].
    #[serde(default)]
    pub start_spread_ms: Option<u64>,
    /// Open model: how arrivals are spaced. Default `poisson`.
    #[serde(default = "Load::default_arrival")]
    pub arrival: Arrival,
    /// Open model: the arrival rate the first stage ramps from. Default 0.
    #[serde(default)]
    pub start_rate_per_s: f64,
    /// Open model: the stages of the arrival rate, in order; required for `open`.
    #[serde(default)]
    pub stages: Vec<Stage>,
    /// Simulator worker processes sharing the clients. Default 1 (in-process). A process
    /// holds at most `ulimit -n` sockets, so runs past about 4,000 clients need more.
    #[serde(default = "Load::default_workers")]
    pub workers: u32,
    /// A worker process or agent lost mid-run fails the run (`"fail"`, the default) or
    /// not (`"continue"`).
    #[serde(default)]
    pub worker_lost: WorkerLost,
}

impl Load {
    /// The window in which clients start their first session: `load.start_spread_ms`,
    /// by default one think time, so that a run does not open with a stampede unless
    /// the scenario asks for one.
    pub fn start_window_ms(&self) -> u64 {
        self.start_spread_ms.unwrap_or(self.think_time_ms)
    }

    /// The seconds over which the open model's stages offer arrivals.
    pub fn stages_s(&self) -> f64 {
        self.stages.iter().map(|stage| stage.duration_s).sum()
    }

    fn default_model() -> LoadModel {
        LoadModel::Closed
    }
    fn default_think_time_ms() -> u64 {
        1000
    }
    fn default_arrival() -> Arrival {
        Arrival::Poisson
    }
    fn default_workers() -> u32 {
        1
    }
}

impl Default for Load {
    fn default() -> Load {
        Load {
            model: Load::default_model(),
            think_time_ms: Load::default_think_time_ms(),
            start_spread_ms: None,
            arrival: Load::default_arrival(),
            start_rate_per_s: 0.0,
            stages: Vec::new(),
            workers: Load::default_workers(),
            worker_lost: WorkerLost::default(),
        }
    }
}

/// `[knee]`: per-second conditions that a capacity run must keep; the first second from
/// which one of them breaks for `window_s` seconds in a row is the knee.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KneeSection {
    /// Seconds a condition must stay broken; one bad second is noise. Default 3.
    #[serde(default)]
    pub window_s: Option<u64>,
    /// Stop offering arrivals once the knee is found, so a capacity run ends early.
    /// Default true.
    #[serde(default)]
    pub stop: Option<bool>,
    /// `"metric" = "condition"`, as in `[thresholds]`, for `STEP.p99` and `errors.rate`.
    #[serde(default)]
    pub conditions: BTreeMap<String, String>,
}

/// `[script]`: the probabilities of the script's branches, each drawn once per session.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Script {
    /// The session starts on the stale version and downloads the update. Default 0.1.
    #[serde(default = "Script::default_stale_version")]
    pub stale_version: f64,
    /// The client logs in with a wrong password, expects `login_failed`, and the
    /// session ends there ("Your login is failed", SPEC §2.3). Default 0.02.
    #[serde(default = "Script::default_wrong_password")]
    pub wrong_password: f64,
    /// `GET /v1/me` requests per session, back to back on one kept-alive connection.
    /// Default 1, as a player opens the lobby once; a large value turns the session into
    /// a lobby load loop, which is how the generator-efficiency benchmark drives it.
    #[serde(default = "Script::default_me_requests")]
    pub me_requests: u32,
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
    /// samples its stick at half the server's default tick rate. 0: the player never
    /// touches the controls (an idle player, for scale runs), so no `play.input_ack`.
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
    fn default_me_requests() -> u32 {
        1
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
            me_requests: Script::default_me_requests(),
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
    /// Play server processes. Default 2, the server's own default; each holds at most
    /// `ulimit -n` players, so tens of thousands of players need more of them.
    #[serde(default = "Server::default_play_servers")]
    pub play_servers: u32,
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
    fn default_play_servers() -> u32 {
        2
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
            play_servers: Server::default_play_servers(),
        }
    }
}

/// The fault target that means "whichever balancer is active now", so a scenario can
/// kill the active one again and again and time every failover.
pub const ACTIVE_BALANCER: &str = "active-balancer";

/// The fault target that means "one running match observer of the topology": found by
/// its command line (`catwar-server observer … --data DIR`, a process of either backend),
/// and not restarted by anyone, so its watchers see their stream cut.
pub const OBSERVER: &str = "observer";

/// What a fault does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultAction {
    /// SIGKILL the service's process, whose pid is read from topology.json right before.
    Kill,
    /// SIGTERM it instead: the service stops gracefully, as for a deploy. Either way the
    /// supervisor starts it again.
    Restart,
    /// Cut the service's container off the project network for `for_s`, then reconnect
    /// it at its own address (containerized topology only).
    Partition,
    /// Delay every packet the container sends by `delay_ms` for `for_s` (netem on its
    /// interface; containerized topology only, and only where the kernel has netem).
    Delay,
    /// Drop `loss_pct` percent of the container's packets, both ways, for `for_s`
    /// (containerized topology only).
    Loss,
    /// Freeze the service for `for_s`, then thaw it: SIGSTOP/SIGCONT of its process, or
    /// the engine's pause for a container.
    Pause,
}

impl FaultAction {
    /// The name used in scenarios and reports.
    pub fn name(self) -> &'static str {
        match self {
            FaultAction::Kill => "kill",
            FaultAction::Restart => "restart",
            FaultAction::Partition => "partition",
            FaultAction::Delay => "delay",
            FaultAction::Loss => "loss",
            FaultAction::Pause => "pause",
        }
    }

    /// Whether the fault lasts `for_s` and is then undone, rather than striking once.
    pub fn lasts(self) -> bool {
        !matches!(self, FaultAction::Kill | FaultAction::Restart)
    }

    /// Whether it needs the containers' own network (no process on a shared loopback can
    /// be cut off, slowed or made lossy alone).
    pub fn needs_containers(self) -> bool {
        matches!(
            self,
            FaultAction::Partition | FaultAction::Delay | FaultAction::Loss
        )
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
    /// The topology name of the target, such as `balancer` or `file-node-1`,
    /// `active-balancer` for whichever balancer is active at that moment, or `observer`
    /// for one running match observer.
    pub service: String,
    /// When, from `at_s` on, it strikes: at once (`"at"`, the default), or, for a play
    /// server, the moment one of its matches has committed its results (`"match_end"`),
    /// so the kill lands as that match's `end` goes out.
    #[serde(default)]
    pub when: FaultMoment,
    /// How long a lasting fault (partition, delay, loss, pause) holds before it is undone.
    #[serde(default)]
    pub for_s: Option<f64>,
    /// The delay of a `delay` fault.
    #[serde(default)]
    pub delay_ms: Option<u64>,
    /// The share of packets a `loss` fault drops, in percent.
    #[serde(default)]
    pub loss_pct: Option<f64>,
}

/// When a fault strikes, from its `at_s` on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultMoment {
    /// At `at_s`.
    #[default]
    At,
    /// As soon after `at_s` as a match of the target play server has committed its
    /// results (within [`MATCH_END_WAIT_S`]).
    MatchEnd,
}

/// How long a `when = "match_end"` fault waits for a match of its play server to end
/// before striking anyway: longer than a default match.
pub const MATCH_END_WAIT_S: u64 = 60;

impl Fault {
    /// Whether this fault stops the active balancer (killed or restarted alike), which
    /// starts a failover.
    pub fn stops_balancer(&self) -> bool {
        self.service == "balancer" || self.service == ACTIVE_BALANCER
    }

    /// Whether this fault stops a file node, after which storage may briefly still
    /// hand out the dead node.
    pub fn stops_file_node(&self) -> bool {
        self.service.starts_with("file-node-")
    }

    /// Whether this fault stops a match observer, whose watchers then lose their stream
    /// before its `end`.
    pub fn stops_observer(&self) -> bool {
        self.service == OBSERVER
    }
}
