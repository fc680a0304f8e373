//! The server topology: reading `topology.json`, and starting and stopping the embedded
//! `catwar-server up` when no `--target` is given. The embedded data folder is seeded
//! with the scenario's users (`catwar-server users seed`) before `up` starts.
//!
//! `up` supervises one process per service and rewrites `topology.json` whenever a child
//! is restarted, so the file is read again right before every fault.

use crate::scenario::Server;
use serde::Deserialize;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// `up` writes topology.json once every service listens; on a loaded two-core machine
/// that can take several seconds, but never this long.
pub const TOPOLOGY_WAIT_MS: u64 = 30_000;
/// How often to look for topology.json while waiting.
const TOPOLOGY_POLL_MS: u64 = 50;
/// `up` stops its children on SIGTERM; if it has not exited after this, it is hung.
pub const SHUTDOWN_WAIT_MS: u64 = 10_000;
/// The environment variable naming the server binary.
pub const SERVER_BIN_ENV: &str = "CATWAR_SERVER_BIN";
/// The last lines of the server log quoted when `up` fails to start.
const LOG_TAIL_LINES: usize = 20;

/// Why the topology could not be read, started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// No server binary was found.
    #[error(
        "catwar-server not found at {}; pass --server-bin PATH or set {SERVER_BIN_ENV}",
        .0.display()
    )]
    ServerBinNotFound(PathBuf),
    /// topology.json could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The scenario assumes settings the target does not run with.
    #[error(
        "{}: {}; set them in the scenario's [server] section, or start the target with them",
        path.display(),
        differences.join("; ")
    )]
    Contradicts {
        /// The file.
        path: PathBuf,
        /// One phrase per contradicted key.
        differences: Vec<String>,
    },
    /// topology.json is not a topology.
    #[error("{} is not a topology", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser found.
        #[source]
        source: serde_json::Error,
    },
    /// topology.json names no service of that name.
    #[error("{}: no service named {name:?}", path.display())]
    NoService {
        /// The file.
        path: PathBuf,
        /// The service looked for.
        name: String,
    },
    /// A step of starting `catwar-server up` failed at the operating system.
    #[error("embedded server: {what}")]
    Spawn {
        /// What was being done, such as `cannot create a temporary data folder`.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// `catwar-server up` (or `users seed`) ran but did not come up; the message quotes
    /// the end of the server log.
    #[error("embedded server: {0}")]
    Start(String),
    /// `catwar-server up` could not be waited for.
    #[error("embedded server shutdown: cannot wait for `up`")]
    StopWait(#[source] std::io::Error),
    /// `catwar-server up` ignored SIGTERM and its process group was killed.
    #[error(
        "embedded server shutdown: `up` ignored SIGTERM for {SHUTDOWN_WAIT_MS} ms; killed its \
         process group"
    )]
    StopHung,
}

/// The services of a running topology.
#[derive(Clone, Debug, Deserialize)]
pub struct Topology {
    /// Every service, by name.
    pub services: Vec<Service>,
    /// The container network the services share (containerized topology only).
    #[serde(default)]
    pub network: Option<String>,
    /// The settings `up` runs with; absent in topologies of other servers or written
    /// before `up` recorded them.
    #[serde(default)]
    pub settings: Option<TargetSettings>,
}

/// The settings a running topology's `up` wrote to topology.json. The simulator's
/// assumptions (when a token goes idle, how long a match lasts, the tick period) must be
/// the target's, or it would judge a correct server wrong.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct TargetSettings {
    /// Seconds a token may go unused.
    pub token_idle_s: Option<u64>,
    /// Players in a full match.
    pub players_per_match: Option<u32>,
    /// Seconds after which a match starts with whoever joined.
    pub match_fill_timeout_s: Option<u64>,
    /// Ticks in a match.
    pub match_ticks: Option<u64>,
    /// Ticks per second.
    pub tick_hz: Option<u32>,
    /// The password hashing preset of logins.
    pub argon2: Option<String>,
    /// Play server processes.
    pub play_servers: Option<u32>,
    /// How match observers are started.
    pub observer_backend: Option<String>,
}

impl TargetSettings {
    /// Every assumption of the scenario's `[server]` section that the target contradicts,
    /// one phrase each naming the key and both values.
    pub fn contradictions(&self, server: &Server) -> Vec<String> {
        let checks = [
            ("token_idle_s", self.token_idle_s, server.token_idle_s),
            (
                "players_per_match",
                self.players_per_match.map(u64::from),
                u64::from(server.players_per_match),
            ),
            (
                "match_fill_timeout_s",
                self.match_fill_timeout_s,
                server.match_fill_timeout_s,
            ),
            ("match_ticks", self.match_ticks, server.match_ticks),
            (
                "tick_hz",
                self.tick_hz.map(u64::from),
                u64::from(server.tick_hz),
            ),
        ];
        checks
            .into_iter()
            .filter_map(|(key, target, scenario)| {
                let target = target?;
                (target != scenario).then(|| {
                    format!("the target's {key} is {target}, the scenario's [server] {key} is {scenario}")
                })
            })
            .collect()
    }
}

/// One service of the topology. Fields beyond these are ignored.
#[derive(Clone, Debug, Deserialize)]
pub struct Service {
    /// `storage`, `balancer`, `file-node-0`, ...
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its process id, absent for services the simulator cannot signal.
    pub pid: Option<u32>,
    /// The container serving it, in the containerized topology: faults go through the
    /// container engine, and `pid` is not used.
    #[serde(default)]
    pub container: Option<String>,
    /// Its admin listener, `host:port`, which serves Prometheus `GET /metrics`; absent in
    /// topologies written before services had one.
    #[serde(default)]
    pub metrics: Option<String>,
}

impl Topology {
    /// Reads and parses a topology.json.
    pub fn read(path: &Path) -> Result<Topology, TopologyError> {
        let file = File::open(path).map_err(|source| TopologyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_reader(std::io::BufReader::new(file)).map_err(|source| {
            TopologyError::Parse {
                path: path.to_path_buf(),
                source,
            }
        })
    }

    /// The service with this name.
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }

    /// The address of the service with this name, or an error naming the file.
    pub fn addr(&self, name: &str, path: &Path) -> Result<SocketAddr, TopologyError> {
        self.service(name)
            .map(|s| s.addr)
            .ok_or_else(|| TopologyError::NoService {
                path: path.to_path_buf(),
                name: name.to_string(),
            })
    }
}

/// Finds the server binary: the flag, else the environment, else next to this executable.
pub fn resolve_server_bin(flag: Option<&Path>) -> Result<PathBuf, TopologyError> {
    let candidate = match (flag, std::env::var_os(SERVER_BIN_ENV)) {
        (Some(path), _) => path.to_path_buf(),
        (None, Some(path)) => PathBuf::from(path),
        (None, None) => std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|dir| dir.join("catwar-server")))
            .unwrap_or_else(|| PathBuf::from("catwar-server")),
    };
    if candidate.is_file() {
        Ok(candidate)
    } else {
        Err(TopologyError::ServerBinNotFound(candidate))
    }
}

/// What the embedded server is started with: the scenario's `[server]` and users.
#[derive(Clone, Debug)]
pub struct EmbeddedConfig {
    /// Users to seed, `user1` to `userN`.
    pub users: u64,
    /// The knobs of `up`; `argon2` also sets the cost of the seeded passwords.
    pub server: Server,
}

/// The flags of `catwar-server up` that carry the scenario's `[server]` section.
pub fn up_args(server: &Server) -> Vec<String> {
    let flags = [
        ("--argon2", server.argon2.name().to_string()),
        ("--token-idle-s", server.token_idle_s.to_string()),
        ("--players-per-match", server.players_per_match.to_string()),
        (
            "--match-fill-timeout-s",
            server.match_fill_timeout_s.to_string(),
        ),
        ("--match-ticks", server.match_ticks.to_string()),
        ("--tick-hz", server.tick_hz.to_string()),
        (
            "--observer-backend",
            server.observer_backend.name().to_string(),
        ),
        ("--play-servers", server.play_servers.to_string()),
    ];
    flags
        .into_iter()
        .flat_map(|(flag, value)| [flag.to_string(), value])
        .collect()
}

/// A `catwar-server up` started by the simulator in a temporary data folder.
///
/// `up` runs in its own process group, so that the whole topology can be killed at once
/// if `up` itself hangs, and so that a Ctrl-C meant for the simulator reaches it only
/// through [`EmbeddedServer::stop`].
#[derive(Debug)]
pub struct EmbeddedServer {
    child: Child,
    pid: i32,
    data: tempfile::TempDir,
    log: PathBuf,
}

impl EmbeddedServer {
    /// Seeds a temporary data folder with `bin users seed`, then starts
    /// `bin up --data <tempdir> --base-port 0` with the configured knobs, both logging to
    /// `log`, and waits until its topology.json is written.
    pub async fn start(
        bin: &Path,
        log: &Path,
        config: &EmbeddedConfig,
    ) -> Result<EmbeddedServer, TopologyError> {
        let start_error = |what: &str, source: std::io::Error| TopologyError::Spawn {
            what: what.to_string(),
            source,
        };
        let data = tempfile::Builder::new()
            .prefix("catwar-sim-")
            .tempdir()
            .map_err(|e| start_error("cannot create a temporary data folder", e))?;
        let log_file = File::create(log)
            .map_err(|e| start_error(&format!("cannot create {}", log.display()), e))?;
        let log_handle = || {
            log_file
                .try_clone()
                .map_err(|e| start_error("cannot share the log file", e))
        };
        let argon2 = config.server.argon2.name();
        let seeded = Command::new(bin)
            .args(["users", "seed", "--data"])
            .arg(data.path())
            .args(["--count", &config.users.to_string(), "--argon2", argon2])
            .stdin(Stdio::null())
            .stdout(log_handle()?)
            .stderr(log_handle()?)
            // An interrupted start drops this future; the seeding must not outlive it.
            .kill_on_drop(true)
            .status()
            .await
            .map_err(|e| start_error(&format!("cannot run {} users seed", bin.display()), e))?;
        if !seeded.success() {
            return Err(TopologyError::Start(format!(
                "`users seed` exited with {seeded}; {}",
                log_tail(log)
            )));
        }
        let child = Command::new(bin)
            .arg("up")
            .arg("--data")
            .arg(data.path())
            .args(["--base-port", "0"])
            .args(up_args(&config.server))
            .stdin(Stdio::null())
            .stdout(log_handle()?)
            .stderr(log_handle()?)
            .process_group(0)
            .spawn()
            .map_err(|e| start_error(&format!("cannot run {}", bin.display()), e))?;
        let pid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .ok_or_else(|| {
                TopologyError::Start("the server exited before it could be watched".to_string())
            })?;
        let mut server = EmbeddedServer {
            child,
            pid,
            data,
            log: log.to_path_buf(),
        };
        server.wait_for_topology().await?;
        Ok(server)
    }

    /// The topology.json that `up` keeps current.
    pub fn topology_path(&self) -> PathBuf {
        self.data.path().join("topology.json")
    }

    async fn wait_for_topology(&mut self) -> Result<(), TopologyError> {
        let path = self.topology_path();
        let deadline = Instant::now() + Duration::from_millis(TOPOLOGY_WAIT_MS);
        loop {
            if let Ok(topology) = Topology::read(&path) {
                if topology.service("storage").is_some() {
                    return Ok(());
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(self.start_failure(&format!("`up` exited with {status}")));
            }
            if Instant::now() >= deadline {
                return Err(self.start_failure(&format!(
                    "no usable {} after {TOPOLOGY_WAIT_MS} ms",
                    path.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(TOPOLOGY_POLL_MS)).await;
        }
    }

    fn start_failure(&self, what: &str) -> TopologyError {
        TopologyError::Start(format!("{what}; {}", log_tail(&self.log)))
    }

    /// Sends SIGTERM to `up` and waits for it; after [`SHUTDOWN_WAIT_MS`] kills the whole
    /// process group. Returns how `up` exited.
    pub async fn stop(mut self) -> Result<ExitStatus, TopologyError> {
        // If `up` is already gone the signal fails, and the wait below returns at once.
        let _ = signal(self.pid, libc::SIGTERM);
        let wait = Duration::from_millis(SHUTDOWN_WAIT_MS);
        match tokio::time::timeout(wait, self.child.wait()).await {
            Ok(Ok(status)) => Ok(status),
            Ok(Err(e)) => Err(TopologyError::StopWait(e)),
            Err(_) => {
                signal_group(self.pid, libc::SIGKILL);
                // The group is dead after SIGKILL; waiting only reaps it.
                let _ = self.child.wait().await;
                Err(TopologyError::StopHung)
            }
        }
    }
}

impl Drop for EmbeddedServer {
    /// A run that ends without `stop` (an error or a panic) must not leave servers behind.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            signal_group(self.pid, libc::SIGKILL);
        }
    }
}

/// The last lines of the server log, to quote in a start failure.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
    format!("last lines of {}:\n{tail}", log.display())
}

/// Sends `signal` to one process.
pub fn signal(pid: i32, signal: libc::c_int) -> std::io::Result<()> {
    assert!(pid > 0, "signal: pid {pid} would address a process group");
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is checked above so
    // that it never addresses a group or every process.
    let result = unsafe { libc::kill(pid, signal) };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn signal_group(pgid: i32, signal: libc::c_int) {
    assert!(pgid > 1, "signal_group: pgid {pgid} is not a child group");
    // SAFETY: killpg(2) has no memory-safety preconditions; the group is the one created
    // for our own child with process_group(0).
    unsafe {
        libc::killpg(pgid, signal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topology_ignores_unknown_fields_and_services() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("topology.json");
        let text = r#"{"version": 3, "services": [
            {"name": "storage", "addr": "127.0.0.1:7100", "pid": 11, "started_at": 5},
            {"name": "teleporter", "addr": "127.0.0.1:7999", "pid": 12},
            {"name": "balancer", "addr": "127.0.0.1:7110"}]}"#;
        std::fs::write(&path, text).unwrap();
        let topology = Topology::read(&path).unwrap();
        assert_eq!(topology.addr("storage", &path).unwrap().port(), 7100);
        assert_eq!(topology.service("balancer").unwrap().pid, None);
        let missing = topology.addr("lobby", &path).unwrap_err().to_string();
        assert!(
            missing.contains("lobby") && missing.contains("topology.json"),
            "{missing}"
        );
    }

    #[test]
    fn a_target_whose_settings_contradict_the_scenario_is_named() {
        let settings: TargetSettings = serde_json::from_str(
            r#"{"token_idle_s": 3, "players_per_match": 4, "match_ticks": 100,
                "tick_hz": 20, "argon2": "fast", "future_knob": true}"#,
        )
        .unwrap();
        let server = Server {
            token_idle_s: 3,
            match_ticks: 100,
            ..Server::default()
        };
        assert!(settings.contradictions(&server).is_empty());
        let server = Server {
            match_ticks: 600,
            ..server
        };
        assert_eq!(
            settings.contradictions(&server),
            vec!["the target's match_ticks is 100, the scenario's [server] match_ticks is 600"]
        );
        // A key the target does not state is no contradiction.
        assert!(TargetSettings::default().contradictions(&server).is_empty());
    }

    #[test]
    fn up_gets_every_knob_of_the_server_section() {
        let server = Server {
            match_ticks: 100,
            tick_hz: 50,
            ..Server::default()
        };
        let args = up_args(&server).join(" ");
        for flag in [
            "--argon2 fast",
            "--token-idle-s 600",
            "--players-per-match 4",
            "--match-fill-timeout-s 5",
            "--match-ticks 100",
            "--tick-hz 50",
            "--observer-backend process",
        ] {
            assert!(args.contains(flag), "{flag} missing from {args}");
        }
    }

    #[test]
    fn missing_server_bin_names_the_flag_and_the_variable() {
        let error = resolve_server_bin(Some(Path::new("/nonexistent/catwar-server"))).unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("--server-bin") && message.contains(SERVER_BIN_ENV),
            "{message}"
        );
    }
}
