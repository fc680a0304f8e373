//! Settings of a topology: the knobs of `catwar-server up`, each settable by flag or in a
//! TOML file given with `--config FILE` (keys spelled like a scenario's `[server]` keys and
//! topology.json's `settings`, `token_idle_s = 600`; the flag's spelling is accepted too).
//! Precedence: command line, then file, then the defaults below.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Seconds a token may go unused before the lobby answers `refresh_required` (SPEC §2.7).
pub const TOKEN_IDLE_S_DEFAULT: u64 = 600;
/// Players in a full match.
pub const PLAYERS_PER_MATCH_DEFAULT: u32 = 4;
/// A match starts after this long with at least one player even if not full.
pub const MATCH_FILL_TIMEOUT_S_DEFAULT: u64 = 5;
/// Ticks in a match: 30 s at 20 Hz.
pub const MATCH_TICKS_DEFAULT: u64 = 600;
/// The play servers' fixed tick rate.
pub const TICK_HZ_DEFAULT: u32 = 20;
/// File-transfer nodes started by `up`.
pub const FILE_NODES_DEFAULT: usize = 3;
/// Most file nodes: their ports (base + 20 + i) must stay below profile's (base + 100).
pub const FILE_NODES_MAX: usize = 80;
/// Play servers started by `up`.
pub const PLAY_SERVERS_DEFAULT: usize = 2;
/// Most play servers: their ports (base + 300 + i) must stay below the router's.
pub const PLAY_SERVERS_MAX: usize = 100;
/// A child that died is restarted after this long; 0 never restarts it.
pub const RESTART_DELAY_MS_DEFAULT: u64 = 1000;
/// The first port of `up`'s fixed layout (SPEC §3's table); each service adds its offset.
pub const BASE_PORT_DEFAULT: u16 = 7100;
/// How often each balancer asks its peer for its status: the last answer before a peer
/// falls silent is at most this old, so the failover comes at most this long after the
/// deadline (20 small requests a second each way).
pub const HEARTBEAT_INTERVAL_MS_DEFAULT: u64 = 50;
/// A standby promotes itself when its peer has not answered as active for this long:
/// several missed heartbeats, so one lost or slow answer is not a failover.
pub const HEARTBEAT_DEADLINE_MS_DEFAULT: u64 = 300;
/// How often every file node is health-checked by both balancers.
pub const HEALTH_INTERVAL_MS_DEFAULT: u64 = 100;

/// Cost preset of the argon2id password hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Argon2Preset {
    /// OWASP's recommendation: m = 19 MiB, t = 2, p = 1.
    Owasp,
    /// A cheap cost for large simulated populations; every report names it.
    Fast,
}

impl Argon2Preset {
    /// Every preset, for listing and round-trip checks.
    pub const ALL: [Argon2Preset; 2] = [Argon2Preset::Owasp, Argon2Preset::Fast];

    /// The preset's name as written in flags, config files, the user DB and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Argon2Preset::Owasp => "owasp",
            Argon2Preset::Fast => "fast",
        }
    }

    /// The preset named `name` (as [`Argon2Preset::as_str`] writes it), if any. The one
    /// place a stored or recorded preset name is parsed.
    pub fn parse(name: &str) -> Option<Argon2Preset> {
        Argon2Preset::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

impl fmt::Display for Argon2Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How match observers are started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ObserverBackend {
    /// A child process of the play server.
    Process,
    /// A container of the project's own image, started through the Docker API.
    Docker,
}

/// The knobs as given: every one optional, so flags and file can be merged.
#[derive(Debug, Clone, Default, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct Knobs {
    /// Seconds a token may stay unused before the lobby asks for a refresh [default: 600]
    #[arg(long, value_name = "S")]
    #[serde(alias = "token-idle-s")]
    pub token_idle_s: Option<u64>,
    /// Players in a full match [default: 4]
    #[arg(long, value_name = "N")]
    #[serde(alias = "players-per-match")]
    pub players_per_match: Option<u32>,
    /// Seconds after which a match starts with at least one player [default: 5]
    #[arg(long, value_name = "S")]
    #[serde(alias = "match-fill-timeout-s")]
    pub match_fill_timeout_s: Option<u64>,
    /// Ticks per match [default: 600]
    #[arg(long, value_name = "N")]
    #[serde(alias = "match-ticks")]
    pub match_ticks: Option<u64>,
    /// Play-server tick rate [default: 20]
    #[arg(long, value_name = "HZ")]
    #[serde(alias = "tick-hz")]
    pub tick_hz: Option<u32>,
    /// File-transfer nodes [default: 3]
    #[arg(long, value_name = "N")]
    #[serde(alias = "file-nodes")]
    pub file_nodes: Option<usize>,
    /// Play servers [default: 2]
    #[arg(long, value_name = "N")]
    #[serde(alias = "play-servers")]
    pub play_servers: Option<usize>,
    /// Login job-pool threads [default: number of cores]
    #[arg(long, value_name = "N")]
    #[serde(alias = "login-workers")]
    pub login_workers: Option<usize>,
    /// Password hash cost preset [default: owasp]
    #[arg(long, value_enum)]
    pub argon2: Option<Argon2Preset>,
    /// How match observers are started [default: process]
    #[arg(long, value_enum)]
    #[serde(alias = "observer-backend")]
    pub observer_backend: Option<ObserverBackend>,
    /// Milliseconds before a dead child is restarted, 0 = never [default: 1000]
    #[arg(long, value_name = "MS")]
    #[serde(alias = "restart-delay-ms")]
    pub restart_delay_ms: Option<u64>,
    /// Milliseconds between balancer heartbeats [default: 100]
    #[arg(long, value_name = "MS")]
    #[serde(alias = "heartbeat-interval-ms")]
    pub heartbeat_interval_ms: Option<u64>,
    /// Milliseconds without an active peer before the standby takes over [default: 300]
    #[arg(long, value_name = "MS")]
    #[serde(alias = "heartbeat-deadline-ms")]
    pub heartbeat_deadline_ms: Option<u64>,
    /// Milliseconds between file-node health checks [default: 100]
    #[arg(long, value_name = "MS")]
    #[serde(alias = "health-interval-ms")]
    pub health_interval_ms: Option<u64>,
}

/// Resolved settings, as every child receives them in the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[allow(missing_docs)]
pub struct Settings {
    pub token_idle_s: u64,
    pub players_per_match: u32,
    pub match_fill_timeout_s: u64,
    pub match_ticks: u64,
    pub tick_hz: u32,
    pub file_nodes: usize,
    pub play_servers: usize,
    pub login_workers: usize,
    pub argon2: Argon2Preset,
    pub observer_backend: ObserverBackend,
    pub restart_delay_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub heartbeat_deadline_ms: u64,
    pub health_interval_ms: u64,
}

impl Default for Settings {
    fn default() -> Settings {
        Knobs::default().resolve().expect("defaults are valid")
    }
}

/// A knob with a bad value or a config file that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct ConfigError {
    /// The flag or file at fault.
    pub field: String,
    /// What is wrong.
    pub problem: String,
}

fn check<T: PartialOrd + fmt::Display + Copy>(
    flag: &str,
    value: T,
    min: T,
    max: T,
) -> Result<T, ConfigError> {
    if value < min || value > max {
        return Err(ConfigError {
            field: format!("--{flag}"),
            problem: format!("{value} is outside {min}..={max}"),
        });
    }
    Ok(value)
}

impl Knobs {
    /// Reads a TOML config file.
    pub fn from_file(path: &Path) -> Result<Knobs, ConfigError> {
        let field = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            field: field.clone(),
            problem: e.to_string(),
        })?;
        toml::from_str(&text).map_err(|e| ConfigError {
            field,
            problem: e.to_string(),
        })
    }

    /// Fills every knob not given here from `file`.
    pub fn or(self, file: Knobs) -> Knobs {
        Knobs {
            token_idle_s: self.token_idle_s.or(file.token_idle_s),
            players_per_match: self.players_per_match.or(file.players_per_match),
            match_fill_timeout_s: self.match_fill_timeout_s.or(file.match_fill_timeout_s),
            match_ticks: self.match_ticks.or(file.match_ticks),
            tick_hz: self.tick_hz.or(file.tick_hz),
            file_nodes: self.file_nodes.or(file.file_nodes),
            play_servers: self.play_servers.or(file.play_servers),
            login_workers: self.login_workers.or(file.login_workers),
            argon2: self.argon2.or(file.argon2),
            observer_backend: self.observer_backend.or(file.observer_backend),
            restart_delay_ms: self.restart_delay_ms.or(file.restart_delay_ms),
            heartbeat_interval_ms: self.heartbeat_interval_ms.or(file.heartbeat_interval_ms),
            heartbeat_deadline_ms: self.heartbeat_deadline_ms.or(file.heartbeat_deadline_ms),
            health_interval_ms: self.health_interval_ms.or(file.health_interval_ms),
        }
    }

    /// Applies defaults and checks ranges; errors name the flag.
    pub fn resolve(self) -> Result<Settings, ConfigError> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let heartbeat_interval_ms = check(
            "heartbeat-interval-ms",
            self.heartbeat_interval_ms
                .unwrap_or(HEARTBEAT_INTERVAL_MS_DEFAULT),
            10,
            60_000,
        )?;
        let heartbeat_deadline_ms = check(
            "heartbeat-deadline-ms",
            self.heartbeat_deadline_ms
                .unwrap_or(HEARTBEAT_DEADLINE_MS_DEFAULT),
            10,
            600_000,
        )?;
        if heartbeat_deadline_ms < heartbeat_interval_ms {
            return Err(ConfigError {
                field: "--heartbeat-deadline-ms".into(),
                problem: format!("{heartbeat_deadline_ms} is shorter than --heartbeat-interval-ms {heartbeat_interval_ms}"),
            });
        }
        Ok(Settings {
            token_idle_s: check(
                "token-idle-s",
                self.token_idle_s.unwrap_or(TOKEN_IDLE_S_DEFAULT),
                1,
                86_400 * 30,
            )?,
            players_per_match: check(
                "players-per-match",
                self.players_per_match.unwrap_or(PLAYERS_PER_MATCH_DEFAULT),
                1,
                64,
            )?,
            match_fill_timeout_s: check(
                "match-fill-timeout-s",
                self.match_fill_timeout_s
                    .unwrap_or(MATCH_FILL_TIMEOUT_S_DEFAULT),
                0,
                3600,
            )?,
            match_ticks: check(
                "match-ticks",
                self.match_ticks.unwrap_or(MATCH_TICKS_DEFAULT),
                1,
                1_000_000,
            )?,
            tick_hz: check("tick-hz", self.tick_hz.unwrap_or(TICK_HZ_DEFAULT), 1, 1000)?,
            file_nodes: check(
                "file-nodes",
                self.file_nodes.unwrap_or(FILE_NODES_DEFAULT),
                1,
                FILE_NODES_MAX,
            )?,
            play_servers: check(
                "play-servers",
                self.play_servers.unwrap_or(PLAY_SERVERS_DEFAULT),
                1,
                PLAY_SERVERS_MAX,
            )?,
            login_workers: check("login-workers", self.login_workers.unwrap_or(cores), 1, 256)?,
            argon2: self.argon2.unwrap_or(Argon2Preset::Owasp),
            observer_backend: self.observer_backend.unwrap_or(ObserverBackend::Process),
            restart_delay_ms: check(
                "restart-delay-ms",
                self.restart_delay_ms.unwrap_or(RESTART_DELAY_MS_DEFAULT),
                0,
                3_600_000,
            )?,
            heartbeat_interval_ms,
            heartbeat_deadline_ms,
            health_interval_ms: check(
                "health-interval-ms",
                self.health_interval_ms
                    .unwrap_or(HEALTH_INTERVAL_MS_DEFAULT),
                10,
                60_000,
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let file: Knobs =
            toml::from_str("file-nodes = 5\ntoken_idle_s = 60\nargon2 = \"fast\"").unwrap();
        let flags = Knobs {
            file_nodes: Some(2),
            ..Knobs::default()
        };
        let s = flags.or(file).resolve().unwrap();
        assert_eq!(s.file_nodes, 2);
        assert_eq!(s.token_idle_s, 60);
        assert_eq!(s.argon2, Argon2Preset::Fast);
        assert_eq!(s.match_ticks, MATCH_TICKS_DEFAULT);
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_field() {
        let err = toml::from_str::<Knobs>("file-nodez = 5")
            .unwrap_err()
            .to_string();
        assert!(err.contains("file-nodez"), "{err}");
        let err = Knobs {
            file_nodes: Some(0),
            ..Knobs::default()
        }
        .resolve()
        .unwrap_err();
        assert_eq!(err.field, "--file-nodes");
        let err = Knobs {
            heartbeat_interval_ms: Some(500),
            ..Knobs::default()
        }
        .resolve()
        .unwrap_err();
        assert_eq!(err.field, "--heartbeat-deadline-ms");
        assert_eq!(
            err.to_string(),
            "--heartbeat-deadline-ms: 300 is shorter than --heartbeat-interval-ms 500"
        );
    }

    #[test]
    fn preset_names_round_trip_and_match_flags_and_files() {
        use clap::ValueEnum;
        for preset in Argon2Preset::ALL {
            let name = preset.as_str();
            assert_eq!(Argon2Preset::parse(name), Some(preset));
            assert_eq!(preset.to_string(), name);
            let value = preset.to_possible_value().unwrap();
            assert_eq!(value.get_name(), name);
            let knobs: Knobs = toml::from_str(&format!("argon2 = {name:?}")).unwrap();
            assert_eq!(knobs.argon2, Some(preset));
        }
        assert_eq!(Argon2Preset::parse("OWASP"), None);
        assert_eq!(Argon2Preset::parse(""), None);
    }
}
