//! The `process` backend: each observer is a child process of the play server, running
//! this same binary as `catwar-server observer …`. Children get SIGKILL from the kernel
//! if the play server dies, and are killed by [`Spawner::stop_all`] when it stops.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{ObserverError, Spawner};

/// How long a new observer gets to print its address.
const START_TIMEOUT_MS: u64 = 5_000;

/// Starts observers as child processes.
#[derive(Debug)]
pub struct ProcessSpawner {
    exe: PathBuf,
    data_dir: PathBuf,
    children: Mutex<Vec<Child>>,
}

impl ProcessSpawner {
    /// A spawner running `exe observer …` with `data_dir`.
    pub fn new(exe: PathBuf, data_dir: PathBuf) -> ProcessSpawner {
        ProcessSpawner {
            exe,
            data_dir,
            children: Mutex::new(Vec::new()),
        }
    }
}

impl Spawner for ProcessSpawner {
    fn spawn(&self, play: SocketAddr, match_id: u64) -> Result<SocketAddr, ObserverError> {
        let started = Instant::now();
        let mut command = Command::new(&self.exe);
        command
            .args([
                "observer",
                "--play",
                &play.to_string(),
                "--match",
                &match_id.to_string(),
                "--data",
            ])
            .arg(&self.data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        // SAFETY: prctl is async-signal-safe and touches only the new child.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command
            .spawn()
            .map_err(|e| ObserverError::Io(format!("starting {}", self.exe.display()), e))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_millis(START_TIMEOUT_MS))
            .unwrap_or_default();
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|a| a.parse().ok());
        let mut children = self.children.lock().expect("children lock");
        // Observers exit when their match ends; reap those before adding one more.
        children.retain_mut(|c| matches!(c.try_wait(), Ok(None)));
        match addr {
            Some(addr) => {
                children.push(child);
                tracing::info!(match_id, %addr, start_ms = started.elapsed().as_secs_f64() * 1000.0, "observer started");
                Ok(addr)
            }
            None => {
                let _ = child.kill();
                let _ = child.wait();
                Err(ObserverError::Backend(format!(
                    "observer for match {match_id} did not start (said {:?})",
                    line.trim()
                )))
            }
        }
    }

    fn stop_all(&self) {
        for mut child in self.children.lock().expect("children lock").drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
