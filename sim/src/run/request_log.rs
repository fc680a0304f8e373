//! `run --request-log FILE [--request-log-sample FRACTION]`: the sampled log of raw
//! requests (see `metrics::RequestLog`), one JSON object per line, written by a thread
//! of its own so that no client ever waits for the disk.
//!
//! With worker processes each worker writes `FILE.worker-<i>` for its own clients, and
//! the coordinator appends those to `FILE` once the workers are done: the clients are
//! sampled by id from the seed, so the same clients are logged however many workers
//! share them. Agents on other hosts have no path to the coordinator's disk, and their
//! clients are not logged (`run` refuses `--request-log` with `--agents`).

use crate::metrics::{Metrics, RequestLine, RequestLog};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// The default `--request-log-sample`: one client in a hundred keeps a 10,000-client run's
/// log to a few MB a minute, and still holds every kind of path a scenario takes.
pub const REQUEST_LOG_SAMPLE_DEFAULT: f64 = 0.01;
/// Lines queued for the writer; a disk that falls this far behind loses lines (counted
/// and reported) rather than slowing a client.
const QUEUED_LINES_MAX: usize = 65_536;
/// How often the writer flushes, so that the log can be followed while the run goes.
const FLUSH_INTERVAL_MS: u64 = 1_000;

/// What `--request-log` asks for.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestLogOptions {
    /// The file.
    pub path: PathBuf,
    /// The fraction of clients logged, 0 to 1.
    pub sample: f64,
}

impl RequestLogOptions {
    /// The file worker `index` writes.
    pub(super) fn for_worker(&self, index: u64) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".worker-{index}"));
        PathBuf::from(name)
    }
}

/// Why the request log could not be written.
#[derive(Debug, thiserror::Error)]
#[error("--request-log {}", path.display())]
pub struct RequestLogError {
    /// The file.
    pub path: PathBuf,
    /// The underlying error.
    #[source]
    pub source: std::io::Error,
}

/// The log's writer thread and the sampler it serves.
#[derive(Debug)]
pub(super) struct RequestLogWriter {
    log: Arc<RequestLog>,
    done: Arc<AtomicBool>,
    thread: JoinHandle<Result<u64, RequestLogError>>,
}

/// What the log holds at the end.
#[derive(Clone, Copy, Debug)]
pub(super) struct Written {
    pub(super) lines: u64,
    pub(super) dropped: u64,
}

impl RequestLogWriter {
    /// Creates `path` and makes `metrics` log the clients `sample` of them picks under
    /// the scenario `seed`.
    pub(super) fn start(
        path: &Path,
        sample: f64,
        seed: u64,
        metrics: &Metrics,
    ) -> Result<RequestLogWriter, RequestLogError> {
        let failed = |source| RequestLogError {
            path: path.to_path_buf(),
            source,
        };
        let file = File::create(path).map_err(failed)?;
        let (lines, queue) = sync_channel(QUEUED_LINES_MAX);
        let log = Arc::new(RequestLog::new(lines, seed, sample));
        metrics.log_requests(Arc::clone(&log));
        let done = Arc::new(AtomicBool::new(false));
        let thread = {
            let done = Arc::clone(&done);
            let path = path.to_path_buf();
            std::thread::Builder::new()
                .name("request-log".into())
                .spawn(move || write_lines(&path, BufWriter::new(file), &queue, &done))
                .map_err(failed)?
        };
        Ok(RequestLogWriter { log, done, thread })
    }

    /// Writes what is queued and closes the log.
    pub(super) fn finish(self) -> Result<Written, RequestLogError> {
        self.done.store(true, Ordering::Relaxed);
        let lines = self
            .thread
            .join()
            .expect("the request log writer does not panic")?;
        Ok(Written {
            lines,
            dropped: self.log.dropped(),
        })
    }
}

/// The writer thread: a line per request, flushed every second; ends once `done` is set
/// and the queue is empty.
fn write_lines(
    path: &Path,
    mut out: BufWriter<File>,
    queue: &Receiver<RequestLine>,
    done: &AtomicBool,
) -> Result<u64, RequestLogError> {
    let failed = |source| RequestLogError {
        path: path.to_path_buf(),
        source,
    };
    let mut written = 0;
    let flush_every = Duration::from_millis(FLUSH_INTERVAL_MS);
    loop {
        match queue.recv_timeout(flush_every) {
            Ok(line) => {
                serde_json::to_writer(&mut out, &line).map_err(|e| failed(e.into()))?;
                out.write_all(b"\n").map_err(failed)?;
                written += 1;
            }
            Err(RecvTimeoutError::Timeout) => {
                out.flush().map_err(failed)?;
                if done.load(Ordering::Relaxed) {
                    break;
                }
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if done.load(Ordering::Relaxed) {
            // The clients stopped: write what is left, then end.
            while let Ok(line) = queue.try_recv() {
                serde_json::to_writer(&mut out, &line).map_err(|e| failed(e.into()))?;
                out.write_all(b"\n").map_err(failed)?;
                written += 1;
            }
            break;
        }
    }
    out.flush().map_err(failed)?;
    Ok(written)
}

/// Writes each worker's log into `options.path` in turn and removes it; the lines.
pub(super) fn gather_workers(
    options: &RequestLogOptions,
    workers: u64,
) -> Result<u64, RequestLogError> {
    let failed = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RequestLogError { path, source }
    };
    let mut out = File::create(&options.path).map_err(failed(&options.path))?;
    let mut lines = 0;
    for index in 0..workers {
        let part = options.for_worker(index);
        let Ok(text) = std::fs::read(&part) else {
            // A worker lost early wrote nothing; the run says so elsewhere.
            continue;
        };
        lines += text.iter().filter(|&&b| b == b'\n').count() as u64;
        out.write_all(&text).map_err(failed(&options.path))?;
        std::fs::remove_file(&part).map_err(failed(&part))?;
    }
    Ok(lines)
}
