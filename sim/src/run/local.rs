//! A run whose clients all live in this process: every client of the scenario, or the
//! one `catwar-sim replay` follows. Each second is shown as it closes and judged for the
//! knee, which may stop the arrivals.

use super::reach::Reached;
use super::seconds::SecondWatcher;
use super::share::{drive_share, ShareRun};
use super::Driven;
use tokio::sync::watch;

/// Drives `clients` in this process until the deadline (or the interrupt) and checks
/// their results; `clients_done` fires once they stopped.
pub(super) async fn drive(
    clients: ShareRun<'_>,
    reached: Reached,
    clients_done: &watch::Sender<bool>,
    interrupt: &mut watch::Receiver<bool>,
) -> Driven {
    let (stop_arrivals, arrivals_stopped) = watch::channel(false);
    let watcher = SecondWatcher::new(clients.scenario, stop_arrivals);
    let (interrupted, watcher) = drive_share(
        clients,
        reached,
        watcher,
        clients_done,
        interrupt,
        arrivals_stopped,
    )
    .await;
    Driven {
        interrupted,
        knee: watcher.knee_report(),
    }
}
