//! `catwar-server up` and `catwar-server kill`: one OS process per service, supervised.
//!
//! `up` first locks its data folder (`DIR/up.lock`, so one `up` owns it at a time), plans
//! every address, starts the children in dependency order (each is this same binary
//! running `serve NAME`), waits until each reports on its stdout that it bound its own
//! socket, then writes `DIR/topology.json`. If any child cannot, `up` stops those it
//! started and fails, naming the service and address. A child that dies later is
//! restarted after the restart delay and the topology file is rewritten with its new
//! pid. On SIGTERM or Ctrl-C every child gets SIGTERM, then SIGKILL after a grace period;
//! children also get SIGKILL from the kernel if the supervisor itself dies
//! (`PR_SET_PDEATHSIG`), so no process is left behind.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::compose::serve::Readiness;
use crate::compose::topology::{Plan, Topology, TopologyEntry, TopologyError, TopologySettings};
use crate::config::Settings;
use crate::domain::resources::{self, ResourceError};

/// How long a child may take to report that it listens before `up` gives up on it.
const LISTEN_WAIT_MS: u64 = 15_000;
/// How long a child that closed its stdout during start gets to exit, so `up` can say
/// how it ended; it is already ending, so this is short.
const CHILD_EXIT_WAIT_MS: u64 = 1_000;
/// The lock file in the data folder: locked by the running `up`, holding its pid.
pub const LOCK_FILE: &str = "up.lock";
/// How long a refused `up` waits for the lock holder's pid to appear in the lock file:
/// the holder writes it just after locking, so a reader can come in between.
const LOCK_HOLDER_WAIT_MS: u64 = 1_000;
/// How often the supervisor checks its children and the stop flag.
const SUPERVISE_POLL_MS: u64 = 20;
/// How long children get to stop after SIGTERM before they are killed.
pub const SHUTDOWN_GRACE_MS: u64 = 5_000;

/// What went wrong while supervising.
#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    /// Creating the data folder or a file in it failed.
    #[error("{}: {}", .0.display(), .1)]
    Io(PathBuf, #[source] io::Error),
    /// The resource set could not be created or read.
    #[error("resources: {0}")]
    Resources(#[from] ResourceError),
    /// The plan or topology file could not be written or read.
    #[error(transparent)]
    Topology(#[from] TopologyError),
    /// A child could not be started.
    #[error("service {0}: could not start: {1}")]
    Spawn(String, #[source] io::Error),
    /// A child did not report that it listens on its planned address.
    #[error("service {service} could not listen on {addr}: {why}")]
    NotListening {
        /// The service name.
        service: String,
        /// Its planned address.
        addr: SocketAddr,
        /// What the child said, or how it ended.
        why: String,
    },
    /// Another `up` holds the data folder's lock.
    #[error("{}: in use by another `up` ({}); stop it first", .0.display(), holder(.1))]
    InUse(PathBuf, Option<u32>),
    /// `kill` found a pid that is no longer the named service.
    #[error("service {0}: pid {1} in topology.json is no longer that service (is `up` running?)")]
    Stale(String, u32),
}

/// The lock holder as [`SuperviseError::InUse`] names it.
fn holder(pid: &Option<u32>) -> String {
    match pid {
        Some(pid) => format!("pid {pid}"),
        None => "pid unknown".into(),
    }
}

/// The data folder's lock, held for as long as this value lives: proof that this process
/// alone runs `up` on the folder. It is an flock(2) lock, so the kernel drops it when the
/// process dies, however it dies, and a lock file left behind never blocks a new `up`.
#[derive(Debug)]
pub struct DataLock {
    _file: File,
}

/// Locks `DIR/up.lock` (the folder must exist) and writes this process's pid into it.
/// Fails with [`SuperviseError::InUse`], naming the holder's pid, if another `up` holds
/// it; then nothing of the folder has changed.
pub fn lock_data_dir(dir: &Path) -> Result<DataLock, SuperviseError> {
    let path = dir.join(LOCK_FILE);
    // Not truncated on open: while another `up` holds the lock, the file holds its pid.
    // std opens with O_CLOEXEC, so no child inherits the lock.
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| SuperviseError::Io(path.clone(), e))?;
    // SAFETY: flock(2) on a descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(SuperviseError::InUse(dir.into(), holder_pid(&path)));
        }
        return Err(SuperviseError::Io(path, err));
    }
    file.set_len(0)
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .map_err(|e| SuperviseError::Io(path.clone(), e))?;
    Ok(DataLock { _file: file })
}

/// The pid of the `up` holding the lock file at `path`. Between its locking and its
/// writing, the file may be empty or still name a dead `up`, so this waits a moment for
/// a pid that is a running `up`.
fn holder_pid(path: &Path) -> Option<u32> {
    let deadline = Instant::now() + Duration::from_millis(LOCK_HOLDER_WAIT_MS);
    loop {
        let pid = fs::read_to_string(path)
            .ok()
            .and_then(|text| text.trim().parse::<u32>().ok());
        let is_up = pid.is_some_and(|pid| {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            cmdline.split(|&b| b == 0).any(|arg| arg == b"up")
        });
        if is_up || Instant::now() >= deadline {
            return pid;
        }
        std::thread::sleep(Duration::from_millis(SUPERVISE_POLL_MS));
    }
}

/// What `up` needs.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// The data folder.
    pub data_dir: PathBuf,
    /// First port of the SPEC §3 table, or 0 for free ports.
    pub base_port: u16,
    /// Resolved settings.
    pub settings: Settings,
    /// The binary that runs `serve NAME --plan FILE` (normally this one).
    pub exe: PathBuf,
}

#[derive(Debug)]
struct Supervised {
    name: String,
    addr: SocketAddr,
    metrics: SocketAddr,
    child: Option<Child>,
    restart_at: Option<Instant>,
}

/// Starts with free ports (`--base-port 0`) this many times at most: another process
/// taking a picked port before its child binds it is rare, twice in a row rarer still.
const FREE_PORT_ATTEMPTS: u32 = 3;

/// Runs the topology until `stop` is set. `lock` is the data folder's, taken before
/// anything in it was touched; it is released only after the topology file is removed,
/// so a next `up` never sees this one's files.
pub fn up(options: &UpOptions, lock: DataLock, stop: &AtomicBool) -> Result<(), SuperviseError> {
    let data = &options.data_dir;
    for dir in [data.clone(), data.join("run"), data.join("state")] {
        fs::create_dir_all(&dir).map_err(|e| SuperviseError::Io(dir.clone(), e))?;
    }
    resources::ensure_default(&data.join("resources")).map_err(SuperviseError::Resources)?;
    // A topology file left by a killed `up` names dead pids; nobody may read it now.
    let _ = fs::remove_file(Topology::path(data));
    let plan_path = data.join("run").join("plan.json");
    let mut attempt = 1;
    let (mut children, started) = loop {
        let plan = Plan::new(
            fs::canonicalize(data).map_err(|e| SuperviseError::Io(data.clone(), e))?,
            options.settings.clone(),
            options.base_port,
        )?;
        plan.write(&plan_path)?;
        let mut children: Vec<Supervised> = plan
            .services
            .iter()
            .map(|s| Supervised {
                name: s.name.clone(),
                addr: s.addr,
                metrics: s.metrics,
                child: None,
                restart_at: None,
            })
            .collect();
        let started = start_all(&mut children, &options.exe, &plan_path, stop);
        // Free ports (base 0) are free when picked, but another process may bind one
        // before its child does: then everything starts again on newly picked ports.
        let raced = options.base_port == 0
            && attempt < FREE_PORT_ATTEMPTS
            && matches!(&started, Err(SuperviseError::NotListening { why, .. }) if why.contains("in use"));
        if !raced {
            break (children, started);
        }
        tracing::warn!(attempt, error = %started.unwrap_err(), "a picked port was taken; picking again");
        stop_all(&mut children);
        attempt += 1;
    };
    let result = started.and_then(|()| {
        write_topology(data, &options.settings, &children)?;
        tracing::info!(services = children.len(), topology = %Topology::path(data).display(), "topology up");
        supervise(&mut children, options, &plan_path, stop)
    });
    stop_all(&mut children);
    let _ = fs::remove_file(Topology::path(data));
    drop(lock);
    result
}

fn start_all(
    children: &mut [Supervised],
    exe: &Path,
    plan: &Path,
    stop: &AtomicBool,
) -> Result<(), SuperviseError> {
    for s in children.iter_mut() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        start_one(s, exe, plan)?;
    }
    Ok(())
}

fn start_one(s: &mut Supervised, exe: &Path, plan: &Path) -> Result<(), SuperviseError> {
    let mut command = Command::new(exe);
    command
        .arg("serve")
        .arg(&s.name)
        .arg("--plan")
        .arg(plan)
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    // SAFETY: both calls are async-signal-safe and touch only the new child process.
    unsafe {
        command.pre_exec(|| {
            // Its own process group: a terminal's Ctrl-C reaches only the supervisor,
            // which then stops the children in order.
            if libc::setpgid(0, 0) != 0 || libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .map_err(|e| SuperviseError::Spawn(s.name.clone(), e))?;
    let pid = child.id();
    let stdout = child.stdout.take().expect("stdout is piped");
    s.child = Some(child);
    s.restart_at = None;
    let line = first_line(stdout);
    let why = match line.recv_timeout(Duration::from_millis(LISTEN_WAIT_MS)) {
        Err(_) => Some(format!("no word from it after {LISTEN_WAIT_MS} ms")),
        Ok(line) => match Readiness::parse(&line) {
            Some(Readiness::Ready { addr, metrics }) if addr == s.addr && metrics == s.metrics => {
                None
            }
            Some(Readiness::Ready { addr, metrics }) => Some(format!(
                "it listens on {addr} (metrics {metrics}) instead of {} (metrics {})",
                s.addr, s.metrics
            )),
            Some(Readiness::Failed(why)) => Some(why),
            // It closed its stdout, so it is ending: say how.
            None if line.is_empty() => Some(match exit_status(s) {
                Some(status) => format!("it exited ({})", describe(status)),
                None => "it closed its output".into(),
            }),
            None => Some(format!("it said {:?}", line.trim_end())),
        },
    };
    if let Some(why) = why {
        kill_child(s);
        return Err(SuperviseError::NotListening {
            service: s.name.clone(),
            addr: s.addr,
            why,
        });
    }
    tracing::info!(service = %s.name, addr = %s.addr, metrics = %s.metrics, pid, "service listening");
    Ok(())
}

/// Sends the first line of a child's stdout (empty if it closes it first), then copies
/// the rest to this process's stdout, as if the child had inherited it. A thread, so the
/// caller can wait with a deadline.
fn first_line(stdout: std::process::ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let _ = tx.send(line);
        let _ = io::copy(&mut reader, &mut io::stdout());
    });
    rx
}

fn supervise(
    children: &mut [Supervised],
    options: &UpOptions,
    plan: &Path,
    stop: &AtomicBool,
) -> Result<(), SuperviseError> {
    let delay = Duration::from_millis(options.settings.restart_delay_ms);
    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        for s in children.iter_mut() {
            let Some(child) = s.child.as_mut() else {
                continue;
            };
            if let Ok(Some(status)) = child.try_wait() {
                let pid = child.id();
                s.child = None;
                if delay.is_zero() {
                    tracing::warn!(service = %s.name, pid, status = %describe(status), "service died; restarts are off");
                } else {
                    tracing::warn!(service = %s.name, pid, status = %describe(status), delay_ms = delay.as_millis() as u64, "service died; restarting");
                    s.restart_at = Some(now + delay);
                }
            }
        }
        let mut changed = false;
        for s in children.iter_mut() {
            if s.restart_at.is_some_and(|at| at <= now) {
                match start_one(s, &options.exe, plan) {
                    Ok(()) => changed = true,
                    // A failed restart is retried after the same delay instead of ending
                    // the whole topology.
                    Err(err) => {
                        tracing::error!(%err, "restart failed");
                        s.restart_at = Some(Instant::now() + delay);
                    }
                }
            }
        }
        if changed {
            write_topology(&options.data_dir, &options.settings, children)?;
        }
        std::thread::sleep(Duration::from_millis(SUPERVISE_POLL_MS));
    }
    tracing::info!("stopping the topology");
    Ok(())
}

fn write_topology(
    data: &Path,
    settings: &Settings,
    children: &[Supervised],
) -> Result<(), SuperviseError> {
    let services = children
        .iter()
        .filter_map(|s| {
            s.child.as_ref().map(|c| TopologyEntry {
                name: s.name.clone(),
                addr: s.addr,
                metrics: s.metrics,
                pid: c.id(),
                container: None,
            })
        })
        .collect();
    Ok(Topology {
        settings: TopologySettings::from(settings),
        services,
        network: None,
    }
    .write(data)?)
}

/// SIGTERM to every child in reverse start order, then SIGKILL after the grace period.
fn stop_all(children: &mut [Supervised]) {
    for s in children.iter().rev() {
        if let Some(child) = &s.child {
            // SAFETY: plain kill(2) on a pid we spawned and have not reaped yet.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        }
    }
    let deadline = Instant::now() + Duration::from_millis(SHUTDOWN_GRACE_MS);
    for s in children.iter_mut().rev() {
        while let Some(child) = s.child.as_mut() {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => s.child = None,
                Ok(None) if Instant::now() >= deadline => {
                    tracing::warn!(service = %s.name, "did not stop in time; killing");
                    kill_child(s);
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(SUPERVISE_POLL_MS)),
            }
        }
    }
}

/// Waits up to [`CHILD_EXIT_WAIT_MS`] for a child that is ending on its own; its status.
fn exit_status(s: &mut Supervised) -> Option<ExitStatus> {
    let child = s.child.as_mut()?;
    let deadline = Instant::now() + Duration::from_millis(CHILD_EXIT_WAIT_MS);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(SUPERVISE_POLL_MS));
            }
            Ok(None) | Err(_) => return None,
        }
    }
}

/// SIGKILLs a child (if it still runs) and reaps it; returns how it ended.
fn kill_child(s: &mut Supervised) -> Option<ExitStatus> {
    let mut child = s.child.take()?;
    let _ = child.kill();
    child.wait().ok()
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        _ => status.to_string(),
    }
}

/// `catwar-server kill SERVICE --data DIR`: SIGKILL the process serving `name`.
/// Returns its pid.
pub fn kill(data_dir: &Path, name: &str) -> Result<u32, SuperviseError> {
    let topology = Topology::read(data_dir)?;
    let pid = topology.service(name)?.pid;
    // The pid could have been reused since the file was written; only kill it if it is
    // still this service.
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    let is_service = args
        .windows(2)
        .any(|w| w[0] == b"serve" && w[1] == name.as_bytes());
    if !is_service {
        return Err(SuperviseError::Stale(name.into(), pid));
    }
    // SAFETY: plain kill(2); the pid was checked to be the named service just above.
    if unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) } != 0 {
        return Err(SuperviseError::Io(
            format!("/proc/{pid}").into(),
            io::Error::last_os_error(),
        ));
    }
    Ok(pid)
}
