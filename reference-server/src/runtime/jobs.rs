//! The bounded job queue and thread pool that take slow work off the event loops.
//!
//! A full queue is an answer, not a wait: [`JobPool::try_submit`] fails at once so the
//! service can reply 503 `busy` with `Retry-After` instead of stalling its loop.

use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::runtime::event_loop::{Ctx, Reply};
use crate::runtime::http::Response;
use crate::runtime::metrics::{Metrics, QueueStats};

type Job = Box<dyn FnOnce() + Send + 'static>;

/// The queue was full; the caller should answer 503 `busy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("job queue full")]
pub struct Busy;

/// The queue counts of a [`JobPool`], by the pool's name.
#[derive(Debug, Clone)]
pub struct PoolQueue {
    name: String,
    stats: Arc<QueueStats>,
}

impl PoolQueue {
    /// Reports the queue's depth and refusals in `metrics`, labelled `pool="NAME"`.
    pub fn register(self, metrics: &Metrics) {
        metrics.add_queue(&self.name, self.stats);
    }
}

/// A fixed set of worker threads fed by one bounded queue.
#[derive(Debug)]
pub struct JobPool {
    name: String,
    tx: Option<SyncSender<Job>>,
    workers: Vec<JoinHandle<()>>,
    stats: Arc<QueueStats>,
}

impl JobPool {
    /// Starts `workers` threads named `name-N` sharing a queue of `queue_max` jobs.
    pub fn new(name: &str, workers: usize, queue_max: usize) -> std::io::Result<JobPool> {
        JobPool::with_nice(name, workers, queue_max, 0)
    }

    /// Like [`JobPool::new`], with worker threads at this nice value (Linux applies it
    /// per thread). CPU-heavy pools run niced so the event loops that share the cores
    /// keep their latency while the pool is saturated.
    pub fn with_nice(
        name: &str,
        workers: usize,
        queue_max: usize,
        nice: i32,
    ) -> std::io::Result<JobPool> {
        assert!(workers > 0, "a job pool needs at least one worker");
        let (tx, rx) = mpsc::sync_channel::<Job>(queue_max);
        let rx = Arc::new(Mutex::new(rx));
        let stats = Arc::new(QueueStats::default());
        let workers = (0..workers)
            .map(|i| {
                let rx = Arc::clone(&rx);
                let stats = Arc::clone(&stats);
                std::thread::Builder::new()
                    .name(format!("{name}-{i}"))
                    .spawn(move || {
                        if nice != 0 {
                            // SAFETY: setpriority on this thread's own id; failure only
                            // leaves the default priority.
                            unsafe {
                                let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
                                libc::setpriority(libc::PRIO_PROCESS, tid, nice);
                            }
                        }
                        work(&rx, &stats)
                    })
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(JobPool {
            name: name.to_string(),
            tx: Some(tx),
            workers,
            stats,
        })
    }

    /// This pool's queue counts, to report in a service's metrics once they exist (the
    /// pool moves into the handler before).
    pub fn queue(&self) -> PoolQueue {
        PoolQueue {
            name: self.name.clone(),
            stats: Arc::clone(&self.stats),
        }
    }

    /// The counts of this pool's queue.
    pub fn stats(&self) -> &QueueStats {
        &self.stats
    }

    /// Queues a job, or fails at once with [`Busy`] when the queue is full.
    pub fn try_submit(&self, job: impl FnOnce() + Send + 'static) -> Result<(), Busy> {
        let tx = self.tx.as_ref().expect("the sender lives until drop");
        // Counted before it is sent, so a worker that takes it at once never sees the
        // depth below zero.
        self.stats.queued();
        tx.try_send(Box::new(job)).map_err(|err| {
            self.stats.taken();
            self.stats.refused();
            match err {
                TrySendError::Full(_) | TrySendError::Disconnected(_) => Busy,
            }
        })
    }
}

/// Defers the current request to `pool`: `work` runs on a worker and its response goes
/// back through the event loop. A full queue answers 503 `busy` with `Retry-After`.
pub fn defer_to_pool(
    pool: &JobPool,
    ctx: &mut Ctx<'_>,
    work: impl FnOnce() -> Response + Send + 'static,
) -> Reply {
    let busy = Response::error(503, "busy", "job queue full; retry shortly")
        .with_header("Retry-After", "1");
    let responder = ctx.defer().if_unanswered(busy);
    let submitted = pool.try_submit(move || {
        let responder = responder.if_unanswered(Response::error(500, "internal", "the job failed"));
        responder.send(work());
    });
    if submitted.is_err() {
        tracing::warn!("job queue full; answered 503 busy");
    }
    Reply::Later
}

fn work(rx: &Mutex<Receiver<Job>>, stats: &QueueStats) {
    loop {
        // The lock is held only while taking a job, never while running it.
        let job = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        match job {
            // A panicking job answers 500 through its responder's drop; the worker
            // survives so the pool keeps its size.
            Ok(job) => {
                stats.taken();
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            }
            Err(_) => return,
        }
    }
}

impl Drop for JobPool {
    fn drop(&mut self) {
        // Closing the queue lets every worker finish its current job and exit.
        self.tx.take();
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    #[test]
    fn runs_jobs_and_refuses_when_full() {
        let pool = JobPool::new("t", 1, 1).unwrap();
        let (started_tx, started_rx) = channel::<()>();
        let (gate_tx, gate_rx) = channel::<()>();
        let (done_tx, done_rx) = channel::<u32>();
        // The first job holds the only worker until the gate opens.
        let d = done_tx.clone();
        pool.try_submit(move || {
            started_tx.send(()).unwrap();
            gate_rx.recv().unwrap();
            d.send(1).unwrap();
        })
        .unwrap();
        started_rx.recv().unwrap();
        // One job runs; the queue of one takes a second job and refuses a third.
        let d = done_tx.clone();
        pool.try_submit(move || d.send(2).unwrap()).unwrap();
        let d = done_tx.clone();
        assert_eq!(pool.try_submit(move || d.send(3).unwrap()), Err(Busy));
        assert_eq!((pool.stats().depth(), pool.stats().refusals()), (1, 1));
        gate_tx.send(()).unwrap();
        assert_eq!(done_rx.recv().unwrap(), 1);
        assert_eq!(done_rx.recv().unwrap(), 2);
    }
}
