//! A run whose clients all live in this process: every client of the scenario, or the
//! one `catwar-sim replay` follows. Each second is shown as it closes and judged for the
//! knee, which may stop the arrivals.

use super::live::Outlets;
use super::reach::Reached;
use super::seconds::SecondWatcher;
use super::share::{check_results, drive_share, ShareRun};
use super::Driven;
use crate::ledger::Mode;
use std::path::Path;
use tokio::sync::watch;

/// Drives `clients` in this process until the deadline (or the interrupt) and checks
/// their results against the user DB at `db` with `mode`; `clients_done` fires once
/// they stopped. Each second goes to `outlets` too.
pub(super) async fn drive(
    clients: ShareRun<'_>,
    reached: Reached,
    outlets: Outlets,
    db: &Path,
    mode: Mode,
    clients_done: &watch::Sender<bool>,
    interrupt: &mut watch::Receiver<bool>,
) -> Driven {
    let (stop_arrivals, arrivals_stopped) = watch::channel(false);
    let watcher = SecondWatcher::new(clients.scenario, stop_arrivals, outlets);
    let (scenario, metrics, share) = (clients.scenario, clients.metrics, clients.share);
    let end = drive_share(
        clients,
        reached,
        watcher,
        clients_done,
        interrupt,
        arrivals_stopped,
    )
    .await;
    if let Some(ledger) = end.ledger {
        check_results(scenario, ledger, db, mode, metrics, share).await;
    }
    Driven {
        interrupted: end.interrupted,
        knee: end.seconds.knee_report(),
        worker_problems: Vec::new(),
    }
}
