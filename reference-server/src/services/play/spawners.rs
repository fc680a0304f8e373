//! The threads that start match observers for a play server, off its loop: a start
//! takes milliseconds (a process) to a few hundred (a container).

use std::net::SocketAddr;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mio::Waker;

use crate::runtime::running::Running;
use crate::services::observer::Spawner;

/// Observers exit on their own when their match ends and stay zombies until waited for;
/// the spawner thread waits for them this often even when no new observer is asked for.
const REAP_INTERVAL_MS: u64 = 1_000;
/// Observers starting at once. A cold container takes ~140 ms, mostly waiting on the
/// Docker engine; on one thread a burst of observe requests queued for seconds
/// (router.observer p50 2.4 s in the smoke-docker run).
const SPAWNER_THREADS: usize = 4;

/// A connection's request for one more observer of a match.
pub(super) struct SpawnRequest {
    pub key: usize,
    pub gen: u64,
    pub match_id: u64,
}

/// The requesting connection (key, generation) and the observer's address, or why not.
pub(super) type SpawnReply = (usize, u64, Result<SocketAddr, String>);

/// Starts the spawner threads: each takes requests from `requests`, starts an observer
/// through `spawner` for the play server at `public`, sends the reply on `replies` and
/// wakes the loop; between requests they reap observers that have exited.
pub(super) fn start(
    running: &mut Running,
    spawner: &Arc<dyn Spawner>,
    public: SocketAddr,
    waker: &Arc<Waker>,
    requests: Receiver<SpawnRequest>,
    replies: Sender<SpawnReply>,
) -> std::io::Result<()> {
    let requests = Arc::new(Mutex::new(requests));
    for i in 0..SPAWNER_THREADS {
        let (sp, rx) = (Arc::clone(spawner), Arc::clone(&requests));
        let (spawned_tx, waker) = (replies.clone(), Arc::clone(waker));
        running.add_thread(&format!("play-spawner-{i}"), move || loop {
            let next = rx
                .lock()
                .expect("spawn queue lock")
                .recv_timeout(Duration::from_millis(REAP_INTERVAL_MS));
            let request = match next {
                Ok(request) => request,
                Err(RecvTimeoutError::Timeout) => {
                    sp.reap();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            };
            sp.reap();
            let result = sp
                .spawn(public, request.match_id)
                .map_err(|e| e.to_string());
            if spawned_tx.send((request.key, request.gen, result)).is_err() {
                return;
            }
            let _ = waker.wake();
        })?;
    }
    Ok(())
}
