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
