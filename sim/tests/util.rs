//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The simulator binary under test.
pub fn sim() -> Command {
    Command::new(env!("CARGO_BIN_EXE_catwar-sim"))
}

/// Runs the simulator with `args` and returns its output.
pub fn run_sim(args: &[&str]) -> Output {
    sim().args(args).output().expect("catwar-sim runs")
}

/// The exit code of a finished process, for assertions.
pub fn code(output: &Output) -> i32 {
    output
        .status
        .code()
        .expect("exited, not killed by a signal")
}

/// Everything a process printed, for assertion messages.
pub fn printed(output: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `target/release/catwar-server`, found from this test executable, which lives in
/// `target/release/deps/`.
pub fn server_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let bin = profile_dir.join("catwar-server");
    assert!(
        bin.is_file(),
        "{} is missing; build it first with `cargo build --release -p catwar-server`",
        bin.display()
    );
    bin
}

/// `catwar-sim run` of the scenario `text` against its embedded topology, in a folder of
/// its own; checks that it passed and returns its report.
pub fn run_embedded(text: &str) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write_scenario(dir.path(), text);
    let out = dir.path().join("out");
    let bin = server_bin();
    let output = run_sim(&[
        "run",
        scenario.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--server-bin",
        bin.to_str().unwrap(),
    ]);
    assert_eq!(code(&output), 0, "{}", printed(&output));
    assert!(out.join("server.log").is_file());
    read_report(&out)
}

/// Writes a scenario file into `dir`.
pub fn write_scenario(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("scenario.toml");
    std::fs::write(&path, text).expect("scenario written");
    path
}

/// Reads `dir/report.json`, after checking that `report.html` was written with it.
pub fn read_report(dir: &Path) -> serde_json::Value {
    let html = std::fs::read_to_string(dir.join("report.html")).expect("report.html exists");
    assert!(html.contains("<svg"), "report.html has no charts");
    let text = std::fs::read_to_string(dir.join("report.json")).expect("report.json exists");
    serde_json::from_str(&text).expect("report.json is JSON")
}

/// Open-model arrivals at a ramping rate, seeded, each session playing a short match
/// (observed now and then): the arrivals and every session's first steps are the same
/// however many processes share them.
pub const OPEN_SCENARIO: &str = r#"
[scenario]
name = "open-test"
seed = 9
duration_s = 10

[population]
clients = 40
users = 40

[load]
model = "open"
arrival = "poisson"
start_rate_per_s = 5
stages = [{ duration_s = 4, target_per_s = 20 }]

[script]
stale_version = 0.2
start = 0.5
observe = 0.3

[server]
argon2 = "fast"
players_per_match = 2
match_fill_timeout_s = 1
match_ticks = 20
tick_hz = 20

[thresholds]
"tokens.collisions" = "== 0"
"invariants.violations" = "== 0"
"#;

/// Users seeded for a test's own topology; scenarios run against it log in as these.
pub const TARGET_USERS: u64 = 10;

/// A `catwar-server up` started by a test, stopped with SIGTERM when dropped.
pub struct Topology {
    child: Child,
    /// Its data folder.
    pub data: tempfile::TempDir,
}

impl Topology {
    /// Seeds [`TARGET_USERS`] users, starts `catwar-server up --base-port 0` with the
    /// fast password preset and waits for its topology.json.
    pub fn start() -> Topology {
        let data = tempfile::tempdir().expect("temporary folder");
        let seeded = Command::new(server_bin())
            .args(["users", "seed", "--data"])
            .arg(data.path())
            .args(["--count", &TARGET_USERS.to_string(), "--argon2", "fast"])
            .stdout(Stdio::null())
            .status()
            .expect("catwar-server users seed runs");
        assert!(seeded.success(), "users seed failed");
        let child = Command::new(server_bin())
            .arg("up")
            .arg("--data")
            .arg(data.path())
            .args(["--base-port", "0", "--argon2", "fast"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("catwar-server up starts");
        let topology = Topology { child, data };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !topology.path().is_file() {
            assert!(Instant::now() < deadline, "no topology.json after 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        topology
    }

    /// Its topology.json.
    pub fn path(&self) -> PathBuf {
        self.data.path().join("topology.json")
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // SAFETY: kill(2) with the pid of our own child, which has not been reaped yet.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

/// The shared secret of the agent tests.
pub const AGENT_SECRET: &str = "agent-test-secret-0123456789";

/// A `catwar-sim run --agents N --listen 127.0.0.1:0` started by a test, with its
/// stderr read line by line as it comes.
pub struct Coordinator {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    /// Every stderr line read so far.
    pub stderr: Vec<String>,
}

impl Coordinator {
    /// Starts the coordinator with `args` after `run`, and waits for the address it
    /// listens on for agents.
    pub fn start(args: &[&str]) -> (Coordinator, String) {
        let mut child = sim()
            .arg("run")
            .args(args)
            .env("CATWAR_AGENT_SECRET", AGENT_SECRET)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("catwar-sim run starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut coordinator = Coordinator {
            child,
            lines,
            stderr: Vec::new(),
        };
        let line = coordinator.wait_for("agents on ");
        let addr = line.rsplit(' ').next().expect("an address").to_string();
        (coordinator, addr)
    }

    /// Waits up to a minute for a stderr line containing `text` and returns it.
    pub fn wait_for(&mut self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|_| {
                panic!("no line with {text:?}; stderr:\n{}", self.stderr.join("\n"))
            });
            self.stderr.push(line.clone());
            if line.contains(text) {
                return line;
            }
        }
    }

    /// Waits for the coordinator to exit; returns its exit code, stdout and all stderr.
    pub fn finish(mut self) -> (i32, String, String) {
        let mut stdout = String::new();
        use std::io::Read as _;
        self.child
            .stdout
            .take()
            .expect("stdout is piped")
            .read_to_string(&mut stdout)
            .expect("stdout is read");
        let status = self.child.wait().expect("the coordinator is waited for");
        self.stderr.extend(self.lines.iter());
        let code = status.code().expect("exited, not killed by a signal");
        (code, stdout, self.stderr.join("\n"))
    }
}

/// `catwar-sim agent --connect ADDR` with `secret` and `extra` arguments, its output
/// captured.
pub fn agent(addr: &str, secret: &str, extra: &[&str]) -> Child {
    sim()
        .args(["agent", "--connect", addr, "--connect-wait-s", "10"])
        .args(extra)
        .env("CATWAR_AGENT_SECRET", secret)
        .env_remove("JOB_COMPLETION_INDEX")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("catwar-sim agent starts")
}
