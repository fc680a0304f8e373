//! What happens to each merged second of a run besides the progress display and the
//! knee: the live Prometheus endpoint (`exporter`, `run --metrics-listen`), the HDR
//! interval logs (`hlog`, `OUT/hdr/<step>.hlog`) and the abort gates (`gates`).
//!
//! All three are fed where the seconds are merged — in this process for a single-process
//! run, in the coordinator for workers and agents — so they show the whole run, never
//! one worker's part of it. [`Outlets`] is what the second watcher calls; [`Live`] owns
//! what outlives it: the endpoint's task and the abort signal.

mod exporter;
mod gates;
mod hlog;

use crate::metrics::IntervalPoint;
use crate::report::AbortReport;
use crate::scenario::{AbortGate, Scenario};
use exporter::Exporter;
use gates::Gates;
use hdrhistogram::Histogram;
pub use hlog::HlogError;
use hlog::IntervalLogs;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Why the live outputs could not start.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// `--metrics-listen` names an address that cannot be bound: a bad command line.
    #[error("--metrics-listen {addr}: cannot listen")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The HDR interval logs could not be created.
    #[error(transparent)]
    Hlog(#[from] HlogError),
}

/// The live side of a run while its clients go: the endpoint's task, and the abort
/// signal the gates raise.
#[derive(Debug)]
pub(super) struct Live {
    server: Option<JoinHandle<()>>,
    exporter: Option<Arc<Exporter>>,
    abort: watch::Sender<Option<AbortReport>>,
    gates: Vec<AbortGate>,
}

impl Live {
    /// Binds `--metrics-listen` (if given) and serves `/metrics` from now on.
    pub(super) async fn start(
        listen: Option<SocketAddr>,
        scenario: &Scenario,
        gates_apply: bool,
    ) -> Result<Live, LiveError> {
        let (server, exporter) = match listen {
            Some(addr) => {
                let listener = exporter::bind(addr)
                    .await
                    .map_err(|source| LiveError::Listen { addr, source })?;
                let bound = listener.local_addr().unwrap_or(addr);
                eprintln!("catwar-sim: live metrics at http://{bound}/metrics");
                let exporter = Arc::new(Exporter::new());
                let server = tokio::spawn(exporter::serve(listener, Arc::clone(&exporter)));
                (Some(server), Some(exporter))
            }
            None => (None, None),
        };
        Ok(Live {
            server,
            exporter,
            abort: watch::channel(None).0,
            // One replayed client cannot meet thresholds, nor fail them.
            gates: if gates_apply {
                scenario.abort_gates.clone()
            } else {
                Vec::new()
            },
        })
    }

    /// The outlets of the run's seconds, with interval logs in `out/hdr/` headed with
    /// the run's `start`.
    pub(super) fn outlets(&self, out: &Path, start: SystemTime) -> Result<Outlets, LiveError> {
        Ok(Outlets {
            exporter: self.exporter.clone(),
            logs: Some(IntervalLogs::create(out, start)?),
            gates: Gates::new(self.gates.clone()),
            abort: self.abort.clone(),
        })
    }

    /// A flag that turns true when `interrupt` does or a gate aborts the run: what the
    /// clients are driven with.
    pub(super) fn stop_signal(
        &self,
        mut interrupt: watch::Receiver<bool>,
    ) -> watch::Receiver<bool> {
        let (stop, stopped) = watch::channel(*interrupt.borrow());
        let mut aborted = self.abort.subscribe();
        tokio::spawn(async move {
            tokio::select! {
                _ = interrupt.wait_for(|&fired| fired) => {}
                _ = aborted.wait_for(Option::is_some) => {}
                // Nobody drives with the flag any more: the run is over.
                _ = stop.closed() => return,
            }
            let _ = stop.send(true);
        });
        stopped
    }

    /// The abort, if a gate stopped the run.
    pub(super) fn abort(&self) -> Option<AbortReport> {
        self.abort.borrow().clone()
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// Where each merged second goes besides the progress display and the knee.
#[derive(Debug)]
pub(super) struct Outlets {
    exporter: Option<Arc<Exporter>>,
    logs: Option<IntervalLogs>,
    gates: Gates,
    abort: watch::Sender<Option<AbortReport>>,
}

impl Outlets {
    /// Takes one merged second with its histograms per step (`Step::ALL` order).
    pub(super) fn second(&mut self, point: &IntervalPoint, histograms: &[Histogram<u64>]) {
        if let Some(exporter) = &self.exporter {
            exporter.second(point, histograms);
        }
        if let Some(logs) = &mut self.logs {
            logs.second(point.t_s, histograms);
        }
        if let Some(abort) = self.gates.second(point, histograms) {
            // The condition's own unit, as written (`ms`, `%`, none for counts).
            let unit = abort
                .condition
                .trim_start_matches(|c: char| !c.is_ascii_alphabetic() && c != '%');
            eprintln!(
                "catwar-sim: abort: {} {} failed at {} s over the last {} s (actual {:.3} {unit}); \
                 stopping the run",
                abort.metric,
                abort.condition,
                abort.at_s + 1,
                abort.window_s,
                abort.actual,
            );
            // Nobody listening means the run is over anyway.
            let _ = self.abort.send(Some(abort));
        }
    }

    /// The last second was taken: closes the interval logs.
    pub(super) fn finish(&mut self) {
        let Some(mut logs) = self.logs.take() else {
            return;
        };
        match logs.finish() {
            Ok(0) => {}
            Ok(lost) => eprintln!(
                "catwar-sim: warning: {lost} seconds missing from the HDR interval logs: the \
                 disk fell behind"
            ),
            Err(e) => eprintln!("catwar-sim: warning: {}", crate::error_chain(&e)),
        }
    }
}
