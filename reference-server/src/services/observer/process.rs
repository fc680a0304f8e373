//! The `process` backend: each observer is a child process of the play server, running
//! this same binary as `catwar-server observer …`. Children get SIGKILL from the kernel
//! if the play server dies, and are killed by [`Spawner::stop_all`] when it stops.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
#[cfg(test)]
use std::path::Path;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{ObserverError, SessionArgs, Spawner};

/// How long a new observer gets to print its address.
const START_TIMEOUT_MS: u64 = 5_000;

/// Starts observers as child processes.
#[derive(Debug)]
pub struct ProcessSpawner {
    exe: PathBuf,
    data_dir: PathBuf,
    session: SessionArgs,
    children: Mutex<Vec<Child>>,
}

impl ProcessSpawner {
    /// A spawner running `exe observer …` with `data_dir` and the session rule's settings.
    pub fn new(exe: PathBuf, data_dir: PathBuf, session: SessionArgs) -> ProcessSpawner {
        ProcessSpawner {
            exe,
            data_dir,
            session,
            children: Mutex::new(Vec::new()),
        }
    }
}

impl Spawner for ProcessSpawner {
    fn spawn(&self, play: SocketAddr, match_id: u64) -> Result<SocketAddr, ObserverError> {
        let started = Instant::now();
        let mut command = Command::new(&self.exe);
        command
            .args(super::command_args(
                play,
                match_id,
                &self.data_dir,
                self.session,
            ))
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
        match addr {
            Some(addr) => {
                self.children.lock().expect("children lock").push(child);
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

    fn reap(&self) {
        // Observers exit when their match ends; until waited for, each is a zombie.
        let mut children = self.children.lock().expect("children lock");
        children.retain_mut(|c| matches!(c.try_wait(), Ok(None)));
    }

    fn stop_all(&self) {
        for mut child in self.children.lock().expect("children lock").drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// Reaping is asked for until this long has passed; the stand-in exits at once.
    const EXIT_WAIT_MS: u64 = 10_000;

    #[test]
    fn observers_that_exited_are_reaped_without_a_new_spawn() {
        let dir = tempfile::tempdir().unwrap();
        // A stand-in observer: says where it listens, as the real one does, and exits.
        let exe = dir.path().join("observer");
        std::fs::write(&exe, "#!/bin/sh\necho listening 127.0.0.1:9\n").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let session = SessionArgs {
            token_idle_s: 600,
            lobby: None,
        };
        let spawner = ProcessSpawner::new(exe, dir.path().to_path_buf(), session);
        let play: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(
            spawner.spawn(play, 7).unwrap(),
            "127.0.0.1:9".parse().unwrap()
        );
        let pid = spawner.children.lock().unwrap()[0].id();
        let deadline = Instant::now() + Duration::from_millis(EXIT_WAIT_MS);
        while !spawner.children.lock().unwrap().is_empty() {
            assert!(Instant::now() < deadline, "observer {pid} never reaped");
            spawner.reap();
            std::thread::sleep(Duration::from_millis(10));
        }
        // Waited for: no zombie is left behind under that pid.
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }
}
