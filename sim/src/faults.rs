//! The fault schedule: killing and restarting services at set times through the
//! topology.
//!
//! A kill is a real SIGKILL of the pid that topology.json names right before the kill, so
//! a service restarted by the supervisor is found under its new pid; a restart is a
//! SIGTERM, after which the service stops gracefully. Either way the supervisor starts
//! it again, and the record says how long the service was away: from the signal until
//! topology.json names a new pid and that process accepts connections.
//!
//! Against the containerized topology (entries with a `container`) a kill is a SIGKILL of
//! the container's process, which the engine restarts, and a restart is the engine's
//! graceful restart. Lasting faults hold for `for_s` and are then undone: `pause`
//! (SIGSTOP/SIGCONT of a process, or the engine's pause of a container), and, for
//! containers only, `partition`, `delay` and `loss` ([`crate::engine`]).
//!
//! The target `observer` is one running match observer, found by its command line
//! (`catwar-server observer … --data DIR` with the topology's folder), which nobody
//! restarts. After every fault, once the service is back (or the observer gone), the
//! user DB must pass `PRAGMA integrity_check` (`db.integrity`).

use crate::engine;
use crate::ledger::{self, DB_FILE};
use crate::metrics::{InvariantCount, Metrics};
use crate::net::http::HttpClient;
use crate::report::FaultRecord;
use crate::scenario::{
    Fault, FaultAction, FaultMoment, ScenarioError, ACTIVE_BALANCER, MATCH_END_WAIT_S,
};
use crate::step::Invariant;
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
/// How long an `observer` fault waits for some match observer to be running: observers
/// live as long as a match, and one is usually up in a run that observes at all.
const OBSERVER_WAIT_MS: u64 = 10_000;
/// How often the process table is searched for one meanwhile.
const OBSERVER_POLL_MS: u64 = 50;
/// How long a signalled observer gets to be gone before the DB is checked anyway.
const GONE_WAIT_MS: u64 = 5_000;

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
        // A replay interleaves this with its client's steps, marking the faults that
        // happened during the path.
        tracing::info!(
            target: crate::TRACE,
            fault = %record.action,
            service = %record.service,
            at_ms = format_args!("{:.0}", record.executed_at_ms),
            ok = record.ok,
            "FAULT"
        );
        // Watched apart, so that the next fault keeps its time.
        let after = record.ok.then(|| {
            let (path, stop) = (topology_path.clone(), stop.clone());
            let (service, pid) = (record.service.clone(), record.pid);
            let signalled = start + Duration::from_secs_f64(record.executed_at_ms / 1000.0);
            let restarted = !fault.stops_observer() && !fault.action.lasts();
            let lasting = fault
                .action
                .lasts()
                .then(|| Duration::from_secs_f64(fault.for_s.unwrap_or_default()));
            let metrics = Arc::clone(&metrics);
            tokio::spawn(async move {
                let back = if let Some(hold) = lasting {
                    // A lasting fault keeps its process; it is back once undone.
                    tokio::time::sleep(hold).await;
                    None
                } else if restarted {
                    back_after(&path, &service, pid, signalled, stop).await
                } else {
                    gone(pid).await;
                    None
                };
                (back, check_integrity(&path, &metrics).await)
            })
        });
        executed.push((record, after));
    }
    let mut records = Vec::with_capacity(executed.len());
    for (mut record, after) in executed {
        if let Some(Ok((back, integrity))) = match after {
            Some(after) => Some(after.await),
            None => None,
        } {
            record.back_after_ms = back;
            record.integrity = integrity;
        }
        records.push(record);
    }
    records
}

/// `PRAGMA integrity_check` of the user DB next to topology.json, counted in
/// `db.integrity`; `None` when there is no DB to read there (a topology elsewhere).
async fn check_integrity(topology_path: &Path, metrics: &Metrics) -> Option<String> {
    let db = data_dir(topology_path).join(DB_FILE);
    if !db.exists() {
        return None;
    }
    match ledger::integrity(&db).await {
        Ok(verdict) => {
            let count = InvariantCount {
                checked: 1,
                violations: u64::from(verdict != "ok"),
            };
            metrics.add_invariant(Invariant::DbIntegrity, count);
            if verdict != "ok" {
                eprintln!("catwar-sim: db.integrity violated: {verdict}");
            }
            Some(verdict)
        }
        Err(e) => Some(format!("not checked: {}", crate::error_chain(&e))),
    }
}

/// The folder of topology.json, where the DB lives.
fn data_dir(topology_path: &Path) -> &Path {
    topology_path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Waits until process `pid` is gone (or a zombie), [`GONE_WAIT_MS`] at most.
async fn gone(pid: Option<u32>) {
    let Some(pid) = pid else { return };
    let deadline = Instant::now() + Duration::from_millis(GONE_WAIT_MS);
    while alive(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(BACK_POLL_MS)).await;
    }
}

/// Whether a process with this pid exists and is not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which ends with the last ')'.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// A running match observer of the topology whose data folder is `data`: a process whose
/// command line is `…catwar-server observer … --data DIR` with DIR that folder. Process
/// and container observers alike (a container's processes are the host's too). The
/// youngest is chosen, as the one most likely mid-stream. Returns its pid and match.
fn find_observer(data: &Path) -> Option<(u32, String)> {
    let want = std::fs::canonicalize(data).ok()?;
    let mut found: Option<(u32, String)> = None;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .map(|arg| String::from_utf8_lossy(arg).into_owned())
            .collect();
        let is_observer = args.len() > 2
            && Path::new(&args[0]).file_name() == Some("catwar-server".as_ref())
            && args[1] == "observer";
        if !is_observer || !alive(pid) {
            continue;
        }
        let value = |flag: &str| {
            let at = args.iter().position(|a| a == flag)?;
            args.get(at + 1).cloned()
        };
        let Some(dir) = value("--data") else { continue };
        // A relative folder is relative to the observer's own working directory.
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
        if std::fs::canonicalize(cwd.join(&dir)).ok().as_ref() != Some(&want) {
            continue;
        }
        if found.as_ref().is_none_or(|(best, _)| pid > *best) {
            found = Some((pid, value("--match").unwrap_or_default()));
        }
    }
    found
}

/// Waits until a match of the fault's play server has committed its results, so that
/// the fault strikes as that match's `end` goes out; [`MATCH_END_WAIT_S`] at most.
async fn wait_for_match_end(fault: &Fault, topology_path: &Path) {
    let Ok(topology) = read_topology(topology_path).await else {
        return;
    };
    let Some(play) = topology.service(&fault.service) else {
        return;
    };
    let db = data_dir(topology_path).join(DB_FILE);
    let timeout = Duration::from_secs(MATCH_END_WAIT_S);
    match ledger::wait_for_match_end(&db, play.addr, timeout).await {
        Ok(true) => {}
        Ok(false) => eprintln!(
            "catwar-sim: warning: no match of {} ended within {MATCH_END_WAIT_S} s; striking anyway",
            fault.service
        ),
        Err(e) => eprintln!("catwar-sim: warning: {}", crate::error_chain(&e)),
    }
}

/// Waits for a match observer of the topology to be running, [`OBSERVER_WAIT_MS`] at
/// most.
async fn wait_for_observer(data: &Path) -> Option<(u32, String)> {
    let deadline = Instant::now() + Duration::from_millis(OBSERVER_WAIT_MS);
    loop {
        if let Some(found) = find_observer(data) {
            return Some(found);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(OBSERVER_POLL_MS)).await;
    }
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
            let back = match topology.service(service) {
                // A container keeps its name; its process is new once the engine
                // restarted it.
                Some(entry) if entry.container.is_some() => {
                    let container = entry.container.as_deref().unwrap_or_default();
                    let pid = engine::pid(container).await.ok();
                    (pid.is_some_and(|p| p != 0) && pid != old_pid).then_some(entry)
                }
                Some(entry) => (entry.pid != old_pid).then_some(entry),
                None => None,
            };
            if let Some(entry) = back {
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
        for_s: fault.for_s,
        service: fault.service.clone(),
        pid: None,
        ok: false,
        detail: None,
        back_after_ms: None,
        integrity: None,
    };
    if fault.stops_observer() {
        let Some((pid, match_id)) = wait_for_observer(data_dir(topology_path)).await else {
            record.detail = Some(format!(
                "no match observer of {} ran within {OBSERVER_WAIT_MS} ms",
                data_dir(topology_path).display()
            ));
            return record;
        };
        tracing::debug!(pid, match_id, "killing a match observer");
        return signal_pid(fault, record, pid, metrics, start);
    }
    if fault.when == FaultMoment::MatchEnd {
        wait_for_match_end(fault, topology_path).await;
    }
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
    let entry = topology.service(&record.service).cloned();
    if let Some(container) = entry.as_ref().and_then(|e| e.container.clone()) {
        let network = topology.network.clone().unwrap_or_default();
        return on_container(fault, record, &container, &network, metrics, start).await;
    }
    let pid = entry.and_then(|s| s.pid);
    let Some(pid) = pid else {
        record.detail = Some(format!(
            "no pid for {:?} in {}",
            fault.service,
            topology_path.display()
        ));
        return record;
    };
    signal_pid(fault, record, pid, metrics, start)
}

/// Signals `pid` for `fault`, completing `record`.
fn signal_pid(
    fault: &Fault,
    mut record: FaultRecord,
    pid: u32,
    metrics: &Metrics,
    start: Instant,
) -> FaultRecord {
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
        FaultAction::Pause => libc::SIGSTOP,
        // Refused before the run by [`check_target`].
        FaultAction::Partition | FaultAction::Delay | FaultAction::Loss => {
            record.detail = Some(needs_containers(fault.action));
            return record;
        }
    };
    match signal(target, number) {
        Ok(()) => record.ok = true,
        Err(e) => record.detail = Some(format!("{} {target}: {e}", fault.action.name())),
    }
    if record.ok && fault.action == FaultAction::Pause {
        let hold = Duration::from_secs_f64(fault.for_s.unwrap_or_default());
        tokio::spawn(async move {
            tokio::time::sleep(hold).await;
            if let Err(e) = signal(target, libc::SIGCONT) {
                eprintln!("catwar-sim: pause: SIGCONT {target}: {e}");
            }
        });
    }
    record
}

/// Why a fault cannot run against processes on one loopback.
fn needs_containers(action: FaultAction) -> String {
    format!(
        "\"{}\" needs the containerized topology (bash ci/compose.sh): processes on one \
         loopback share one network, so none can be cut off, slowed or made lossy alone",
        action.name()
    )
}

/// Refuses, before the run, a fault the target cannot take: a network fault against
/// processes on loopback (the embedded topology, or a `--target` without containers).
pub(crate) fn check_target(
    faults: &[Fault],
    target: Option<&Topology>,
) -> Result<(), ScenarioError> {
    let containers = target.is_some_and(|t| t.services.iter().any(|s| s.container.is_some()));
    match faults
        .iter()
        .position(|f| f.action.needs_containers() && !containers)
    {
        Some(index) => Err(ScenarioError::Invalid {
            field: format!("faults[{index}].action"),
            message: needs_containers(faults[index].action),
        }),
        None => Ok(()),
    }
}

/// Carries out `fault` on a container of the containerized topology.
async fn on_container(
    fault: &Fault,
    mut record: FaultRecord,
    container: &str,
    network: &str,
    metrics: &Metrics,
    start: Instant,
) -> FaultRecord {
    let pid = match engine::pid(container).await {
        Ok(pid) if pid > 1 => pid,
        Ok(pid) => {
            record.detail = Some(format!("container {container} is not running (pid {pid})"));
            return record;
        }
        Err(e) => {
            record.detail = Some(crate::error_chain(&e));
            return record;
        }
    };
    if fault.action == FaultAction::Kill {
        // A real death: the engine sees its process killed and restarts the container.
        return signal_pid(fault, record, pid, metrics, start);
    }
    record.pid = Some(pid);
    record.executed_at_ms = millis_since(start, Instant::now());
    // A partitioned container gets its own address back when it is reconnected.
    let mut address = None;
    let started = match fault.action {
        FaultAction::Restart => engine::restart(container).await,
        FaultAction::Pause => engine::pause(container).await,
        FaultAction::Loss => {
            engine::start_loss(container, fault.loss_pct.unwrap_or_default()).await
        }
        FaultAction::Delay => {
            engine::start_delay(container, fault.delay_ms.unwrap_or_default()).await
        }
        FaultAction::Partition => match engine::address(container, network).await {
            Ok(ip) => {
                address = Some(ip);
                engine::disconnect(container, network).await
            }
            Err(e) => Err(e),
        },
        FaultAction::Kill => unreachable!("a kill is signalled above"),
    };
    if let Err(e) = started {
        record.detail = Some(crate::error_chain(&e));
        return record;
    }
    // The failover window opens once the engine says the fault holds: a network
    // disconnect takes effect up to a second after it is asked for on a busy host, and
    // the old term's picks go on until then.
    if fault.stops_balancer() {
        metrics.mark_kill(Instant::now());
    }
    record.ok = true;
    if fault.action.lasts() {
        let hold = Duration::from_secs_f64(fault.for_s.unwrap_or_default());
        let (action, loss_pct) = (fault.action, fault.loss_pct.unwrap_or_default());
        let (container, network) = (container.to_string(), network.to_string());
        tokio::spawn(async move {
            tokio::time::sleep(hold).await;
            let undone = match (action, address) {
                (FaultAction::Pause, _) => engine::unpause(&container).await,
                (FaultAction::Loss, _) => engine::stop_loss(&container, loss_pct).await,
                (FaultAction::Delay, _) => engine::stop_delay(&container).await,
                (FaultAction::Partition, Some(ip)) => {
                    engine::connect(&container, &network, ip).await
                }
                _ => Ok(()),
            };
            if let Err(e) = undone {
                eprintln!(
                    "catwar-sim: undoing {} on {container}: {}",
                    action.name(),
                    crate::error_chain(&e)
                );
            }
        });
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
