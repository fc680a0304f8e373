//! The fault schedule: killing and restarting services at set times through the
//! topology.
//!
//! A kill is a real SIGKILL of the pid that topology.json names right before the kill, so
//! a service restarted by the supervisor is found under its new pid; a restart is a
//! SIGTERM, after which the service stops gracefully. Either way the supervisor starts
//! it again, and the record says how long the service was away: from the signal until
//! topology.json names a new pid and that process accepts connections.

use crate::metrics::Metrics;
use crate::net::http::HttpClient;
use crate::report::FaultRecord;
use crate::scenario::{Fault, FaultAction, ACTIVE_BALANCER};
use crate::topology::{signal, Topology, TopologyError};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// `up` may be rewriting topology.json at the moment we read it; a few quick retries get
/// past a half-written file without delaying the fault noticeably.
const TOPOLOGY_READ_ATTEMPTS: u32 = 5;
/// Pause between those retries.
const TOPOLOGY_RETRY_MS: u64 = 20;
/// How often a stopped service is looked for again: fine enough to time a restart that
/// takes the supervisor's one-second delay and a few milliseconds more.
const BACK_POLL_MS: u64 = 20;
/// A connection attempt to a service that may still be starting.
const BACK_CONNECT_TIMEOUT_MS: u64 = 200;

/// Runs every fault at its time until the list ends or `stop` changes. `faults` must be
/// sorted by time, as [`crate::scenario::Scenario`] keeps them.
pub(crate) async fn run_faults(
    faults: Vec<Fault>,
    topology_path: PathBuf,
    metrics: Arc<Metrics>,
    start: Instant,
    mut stop: watch::Receiver<bool>,
) -> Vec<FaultRecord> {
    let mut executed = Vec::with_capacity(faults.len());
    for fault in faults {
        let at = start + Duration::from_secs_f64(fault.at_s);
        tokio::select! {
            _ = tokio::time::sleep_until(at.into()) => {}
            _ = stop.changed() => break,
        }
        let record = execute(&fault, &topology_path, &metrics, start).await;
        // Watched apart, so that the next fault keeps its time.
        let back = record.ok.then(|| {
            let (path, stop) = (topology_path.clone(), stop.clone());
            let (service, pid) = (record.service.clone(), record.pid);
            let signalled = start + Duration::from_secs_f64(record.executed_at_ms / 1000.0);
            tokio::spawn(async move { back_after(&path, &service, pid, signalled, stop).await })
        });
        executed.push((record, back));
    }
    let mut records = Vec::with_capacity(executed.len());
    for (mut record, back) in executed {
        if let Some(back) = back {
            record.back_after_ms = back.await.unwrap_or(None);
        }
        records.push(record);
    }
    records
}

/// Waits until topology.json names `service` under a pid other than `old_pid` and that
/// process accepts a connection; the time since `signalled`, ms, or `None` if `stop`
/// changes first.
async fn back_after(
    topology_path: &Path,
    service: &str,
    old_pid: Option<u32>,
    signalled: Instant,
    mut stop: watch::Receiver<bool>,
) -> Option<f64> {
    loop {
        if let Ok(topology) = Topology::read(topology_path) {
            if let Some(entry) = topology.service(service).filter(|s| s.pid != old_pid) {
                let connect = tokio::net::TcpStream::connect(entry.addr);
                let timeout = Duration::from_millis(BACK_CONNECT_TIMEOUT_MS);
                if let Ok(Ok(_)) = tokio::time::timeout(timeout, connect).await {
                    return Some(millis_since(signalled, Instant::now()));
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(BACK_POLL_MS)) => {}
            _ = stop.changed() => return None,
        }
    }
}

async fn execute(
    fault: &Fault,
    topology_path: &Path,
    metrics: &Metrics,
    start: Instant,
) -> FaultRecord {
    let mut record = FaultRecord {
        at_s: fault.at_s,
        executed_at_ms: millis_since(start, Instant::now()),
        action: fault.action.name().to_string(),
        service: fault.service.clone(),
        pid: None,
        ok: false,
        detail: None,
        back_after_ms: None,
    };
    let topology = match read_topology(topology_path).await {
        Ok(topology) => topology,
        Err(e) => {
            record.detail = Some(crate::error_chain(&e));
            return record;
        }
    };
    if fault.service == ACTIVE_BALANCER {
        match active_balancer(&topology).await {
            Some(name) => record.service = name,
            None => {
                record.detail = Some("neither balancer reports itself active".into());
                return record;
            }
        }
    }
    let pid = topology.service(&record.service).and_then(|s| s.pid);
    let Some(pid) = pid else {
        record.detail = Some(format!(
            "no pid for {:?} in {}",
            fault.service,
            topology_path.display()
        ));
        return record;
    };
    record.pid = Some(pid);
    // Pids 0 and 1 (and anything that wraps negative) would signal a group, init or every
    // process; a topology naming one is broken, not a target.
    let target = match i32::try_from(pid) {
        Ok(target) if target > 1 => target,
        _ => {
            record.detail = Some(format!("refusing to signal pid {pid}"));
            return record;
        }
    };
    let now = Instant::now();
    record.executed_at_ms = millis_since(start, now);
    if fault.stops_balancer() {
        metrics.mark_kill(now);
    }
    let number = match fault.action {
        FaultAction::Kill => libc::SIGKILL,
        FaultAction::Restart => libc::SIGTERM,
    };
    match signal(target, number) {
        Ok(()) => record.ok = true,
        Err(e) => record.detail = Some(format!("{} {target}: {e}", fault.action.name())),
    }
    record
}

/// A balancer's status answer must come quickly; it runs right before a timed kill.
const STATUS_TIMEOUT_MS: u64 = 500;

#[derive(Deserialize)]
struct BalancerStatus {
    role: String,
}

/// Asks both balancer processes for their role and names the active one.
async fn active_balancer(topology: &Topology) -> Option<String> {
    for name in ["balancer", "balancer-observer"] {
        let Some(service) = topology.service(name) else {
            continue;
        };
        let mut client = HttpClient::new(None);
        let ask = client.get(service.addr, "/v1/status");
        let Ok(Ok(response)) =
            tokio::time::timeout(Duration::from_millis(STATUS_TIMEOUT_MS), ask).await
        else {
            continue;
        };
        let active = serde_json::from_slice::<BalancerStatus>(&response.body)
            .is_ok_and(|s| s.role == "active");
        if response.status == 200 && active {
            return Some(name.to_string());
        }
    }
    None
}

/// Milliseconds from `start` to `at`, to the microsecond.
fn millis_since(start: Instant, at: Instant) -> f64 {
    at.saturating_duration_since(start).as_micros() as f64 / 1000.0
}

async fn read_topology(path: &Path) -> Result<Topology, TopologyError> {
    let mut attempt = 1;
    loop {
        match Topology::read(path) {
            Ok(topology) => return Ok(topology),
            Err(e) if attempt >= TOPOLOGY_READ_ATTEMPTS => return Err(e),
            Err(_) => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(TOPOLOGY_RETRY_MS)).await;
            }
        }
    }
}
