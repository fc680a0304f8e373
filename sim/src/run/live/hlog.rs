//! `OUT/hdr/<step>.hlog`: one HdrHistogram interval log per step, an interval per merged
//! second, as HdrHistogram's own tools (`HistogramLogProcessor`, hdrh, HdrHistogramVisualizer)
//! read them.
//!
//! Each log starts with `#[StartTime]` and `#[BaseTime]` both at the run's start, so an
//! interval's timestamp is its second of the run. Values are µs; the `Interval_Max`
//! column is in ms (`#[MaxValueDivisor: 1000.000]`). Histograms are V2 with DEFLATE,
//! the "compressed" encoding the Java, Python and JavaScript readers expect. They are the
//! per-second histograms the coordinator merges (2 significant figures), so a log
//! merges exactly with another run's log of the same step.
//!
//! A thread of its own writes the files, so that a slow disk never delays a second.

use crate::step::Step;
use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

/// Seconds queued for the writer thread; a disk that falls this far behind loses
/// seconds of the log (counted and reported) rather than holding up the run.
const QUEUED_SECONDS_MAX: usize = 64;
/// The folder under `--out` that holds the logs.
const HDR_DIR: &str = "hdr";
/// Java's `HistogramLogWriter` writes this line first; its reader takes a log without
/// one too, but tools that show it keep it.
const LOG_FORMAT_COMMENT: &str = "[Histogram log format version 1.3]";
/// The logs hold µs; their max column shows ms.
const MAX_VALUE_DIVISOR: f64 = 1_000.0;

/// Why the interval logs could not be written.
#[derive(Debug, thiserror::Error)]
pub enum HlogError {
    /// A log file could not be created or written.
    #[error("cannot write {}", path.display())]
    Write {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A histogram could not be serialized.
    #[error("cannot serialize the {step} histogram of second {t_s}: {message}")]
    Serialize {
        /// The step.
        step: &'static str,
        /// The second.
        t_s: u64,
        /// What the serializer said.
        message: String,
    },
}

/// The writer thread's queue.
#[derive(Debug)]
pub(super) struct IntervalLogs {
    queue: Option<SyncSender<(u64, Vec<Histogram<u64>>)>>,
    writer: Option<JoinHandle<Result<(), HlogError>>>,
    /// Seconds the thread could not take in time.
    lost: u64,
}

impl IntervalLogs {
    /// Creates `out/hdr/` and a log per step, headed with `start`.
    pub(super) fn create(out: &Path, start: SystemTime) -> Result<IntervalLogs, HlogError> {
        let dir = out.join(HDR_DIR);
        std::fs::create_dir_all(&dir).map_err(|source| HlogError::Write {
            path: dir.clone(),
            source,
        })?;
        let mut files = Vec::with_capacity(Step::ALL.len());
        for step in Step::ALL {
            let path = dir.join(format!("{}.hlog", step.name()));
            let file = File::create(&path).map_err(|source| HlogError::Write { path, source })?;
            files.push(file);
        }
        let (queue, seconds) = sync_channel(QUEUED_SECONDS_MAX);
        let writer = std::thread::Builder::new()
            .name("hdr-interval-logs".into())
            .spawn(move || write_logs(&dir, files, start, &seconds))
            .map_err(|source| HlogError::Write {
                path: out.join(HDR_DIR),
                source,
            })?;
        Ok(IntervalLogs {
            queue: Some(queue),
            writer: Some(writer),
            lost: 0,
        })
    }

    /// Queues second `t_s`'s merged histograms, in `Step::ALL` order.
    pub(super) fn second(&mut self, t_s: u64, histograms: &[Histogram<u64>]) {
        let Some(queue) = &self.queue else {
            return;
        };
        if queue.try_send((t_s, histograms.to_vec())).is_err() {
            self.lost += 1;
        }
    }

    /// Closes the logs; the seconds lost on the way, or why the logs are incomplete.
    pub(super) fn finish(&mut self) -> Result<u64, HlogError> {
        self.queue = None;
        if let Some(writer) = self.writer.take() {
            writer
                .join()
                .expect("the interval log writer does not panic")?;
        }
        Ok(self.lost)
    }
}

/// The writer thread: an interval per step and second. The files are not buffered, so
/// that a log can be read while the run goes; a dozen small writes a second cost nothing.
fn write_logs(
    dir: &Path,
    mut files: Vec<File>,
    start: SystemTime,
    seconds: &Receiver<(u64, Vec<Histogram<u64>>)>,
) -> Result<(), HlogError> {
    let mut serializers: Vec<V2DeflateSerializer> = Step::ALL
        .iter()
        .map(|_| V2DeflateSerializer::new())
        .collect();
    let mut builder = IntervalLogWriterBuilder::new();
    builder
        .add_comment(LOG_FORMAT_COMMENT)
        .with_start_time(start)
        .with_base_time(start)
        .with_max_value_divisor(MAX_VALUE_DIVISOR);
    let io = |step: Step| {
        let path = dir.join(format!("{}.hlog", step.name()));
        move |source| HlogError::Write { path, source }
    };
    let mut writers = Vec::with_capacity(files.len());
    for ((file, serializer), step) in files.iter_mut().zip(&mut serializers).zip(Step::ALL) {
        let mut writer = builder.begin_log_with(file, serializer).map_err(io(step))?;
        writer
            .write_comment(&format!(
                "catwar-sim {}: latency of successful requests, us",
                step.name()
            ))
            .map_err(io(step))?;
        writers.push(writer);
    }
    let second = Duration::from_secs(1);
    for (t_s, histograms) in seconds {
        for ((writer, hist), step) in writers.iter_mut().zip(&histograms).zip(Step::ALL) {
            writer
                .write_histogram(hist, Duration::from_secs(t_s), second, None)
                .map_err(|e| HlogError::Serialize {
                    step: step.name(),
                    t_s,
                    message: e.to_string(),
                })?;
        }
    }
    Ok(())
}
