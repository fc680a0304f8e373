//! The load a run offered and held, second by second: arrivals, clients in flight, and
//! the simulator's own descriptors and memory.

use serde::{Deserialize, Serialize};
use std::sync::atomic::AtomicU64;

/// The load offered and held in one second, or the peaks of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadPoint {
    /// Open model: arrivals started.
    #[serde(default)]
    pub arrivals: u64,
    /// Open model: arrivals that found every client busy and were not started.
    #[serde(default)]
    pub dropped: u64,
    /// Open model: the arrival rate the stages offered at the end of the second.
    #[serde(default)]
    pub offered_per_s: f64,
    /// Clients inside a session at the end of the second.
    #[serde(default)]
    pub active: u64,
    /// Sockets and other descriptors the simulator held (all workers together).
    #[serde(default)]
    pub open_files: u64,
    /// Resident memory of the simulator, KiB (all workers together).
    #[serde(default)]
    pub rss_kib: u64,
}

impl LoadPoint {
    /// Adds another worker's figures of the same second: counts and gauges add up; the
    /// offered rate is the scenario's, the same for every worker, so it is summed as the
    /// workers' shares of it.
    pub fn add(&mut self, other: &LoadPoint) {
        self.arrivals += other.arrivals;
        self.dropped += other.dropped;
        self.offered_per_s += other.offered_per_s;
        self.active += other.active;
        self.open_files += other.open_files;
        self.rss_kib += other.rss_kib;
    }

    /// Keeps the larger of each gauge, for peaks over a run.
    pub fn peak(&mut self, other: &LoadPoint) {
        self.offered_per_s = self.offered_per_s.max(other.offered_per_s);
        self.active = self.active.max(other.active);
        self.open_files = self.open_files.max(other.open_files);
        self.rss_kib = self.rss_kib.max(other.rss_kib);
    }
}

/// Counters of the load model, updated without locks by the dispatcher and the clients.
#[derive(Debug, Default)]
pub(super) struct LoadGauges {
    pub(super) arrivals: AtomicU64,
    pub(super) dropped: AtomicU64,
    pub(super) interval_arrivals: AtomicU64,
    pub(super) interval_dropped: AtomicU64,
    pub(super) active: AtomicU64,
}

/// What this process holds right now: open descriptors and resident memory (KiB), read
/// from /proc; zeros where /proc is missing.
pub fn process_usage() -> (u64, u64) {
    let open_files = std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count() as u64);
    // statm's second field is resident pages.
    let rss_pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|text| text.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    // SAFETY: sysconf only reads a configuration value.
    let page_bytes = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(0) as u64;
    (open_files, rss_pages * page_bytes / 1024)
}
