//! Where the load lands: while a run goes, the coordinator samples every service of the
//! topology once a second, CPU in cores and resident memory, for the report's
//! `services` (`report/services`).
//!
//! A service is read from `/proc/<pid>` when its process runs on this host: the embedded
//! topology, or a `--target` whose services listen on loopback and are not containers
//! (a pid from another host or a container's namespace would name some other process
//! here). Otherwise, when its topology.json entry has a `metrics` address, from its
//! Prometheus `/metrics` (`exposition`). A service with neither is listed unsampled,
//! with the reason.
//!
//! `catwar-server up` restarts a dead service under a new pid and rewrites
//! topology.json; when a pid is gone the sampler reads topology.json again and follows
//! the new one. The interval in which a process died or started has no sample: its CPU
//! time is not comparable across processes.
//!
//! Each service has a task of its own, so a slow scrape delays nobody else; `/proc` is
//! read on tokio's blocking pool. One reading per service per second, and a scrape gives
//! up after [`exposition::SCRAPE_TIMEOUT_MS`].

mod exposition;
mod proc;

use crate::net::http::HttpClient;
use crate::report::{
    round_cores as round, ServiceSample, ServiceSource, ServiceUsage, INTERVAL_MS,
};
use crate::topology::{Service, Topology};
use proc::{ProcError, ProcReading};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

/// A reading this soon after the previous one is not taken: over a sliver of a second
/// the CPU figure would be mostly the rounding of 10 ms clock ticks. It matters for a
/// late tick right after a late first reading, and for the last reading taken when the
/// run stops, which gives a short run a sample per service.
const SAMPLE_INTERVAL_MS_MIN: u64 = 200;

/// The sampling tasks of a run, one per service.
#[derive(Debug)]
pub(super) struct Sampler {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<ServiceUsage>>,
}

impl Sampler {
    /// Starts sampling every service of `topology_path` from `start` on. A topology
    /// that cannot be read (the run has read it already, so this is unlikely) gives no
    /// services.
    pub(super) fn start(topology_path: &Path, start: Instant) -> Sampler {
        let (stop, stopped) = watch::channel(false);
        let services = Topology::read(topology_path).map_or_else(|_| Vec::new(), |t| t.services);
        let tasks = services
            .into_iter()
            .map(|service| {
                let tracker = Tracker::new(service, topology_path.to_path_buf(), start);
                tokio::spawn(tracker.follow(stopped.clone()))
            })
            .collect();
        Sampler { stop, tasks }
    }

    /// Stops sampling (after a last reading) and returns every service, in topology
    /// order.
    pub(super) async fn finish(self) -> Vec<ServiceUsage> {
        let _ = self.stop.send(true);
        let mut services = Vec::with_capacity(self.tasks.len());
        for task in self.tasks {
            // A sampling task has nothing that panics; if one did, its service is lost
            // from the report but the run's measurements stand.
            if let Ok(usage) = task.await {
                services.push(usage);
            }
        }
        services
    }
}

/// The last reading of a service, which the next is compared with.
#[derive(Debug)]
enum Last {
    Proc(ProcReading),
    Metrics { at: Instant, cpu_seconds: f64 },
}

/// What reading a process (and following it through a restart) found.
#[derive(Debug)]
enum Followed {
    /// The same process as before.
    Same(ProcReading),
    /// A new process, the pid topology.json now names.
    Moved(u32, ProcReading),
    /// Neither the old process nor a new one could be read.
    Missing(String),
}

/// One service being sampled.
#[derive(Debug)]
struct Tracker {
    service: Service,
    topology_path: PathBuf,
    start: Instant,
    source: ServiceSource,
    clock_ticks_per_s: f64,
    client: HttpClient,
    last: Option<Last>,
    samples: Vec<ServiceSample>,
    processes: u32,
    note: Option<String>,
}

impl Tracker {
    fn new(service: Service, topology_path: PathBuf, start: Instant) -> Tracker {
        Tracker {
            service,
            topology_path,
            start,
            source: ServiceSource::None,
            clock_ticks_per_s: proc::clock_ticks_per_s(),
            client: HttpClient::new(None),
            last: None,
            samples: Vec::new(),
            processes: 1,
            note: None,
        }
    }

    /// Samples until `stop`, from the run's start on, once a second.
    async fn follow(mut self, mut stop: watch::Receiver<bool>) -> ServiceUsage {
        let interval = Duration::from_millis(INTERVAL_MS);
        self.source = self.choose_source().await;
        let stopped = tokio::select! {
            _ = tokio::time::sleep_until(self.start.into()) => false,
            _ = stop.wait_for(|&stopped| stopped) => true,
        };
        if stopped {
            return self.usage();
        }
        self.read().await;
        let mut ticks = tokio::time::interval_at((self.start + interval).into(), interval);
        // A late second is skipped, not made up with a burst: one reading per second.
        ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
        loop {
            let stopped = tokio::select! {
                _ = ticks.tick() => false,
                _ = stop.wait_for(|&stopped| stopped) => true,
            };
            if stopped {
                break;
            }
            self.read().await;
        }
        self.read().await;
        self.usage()
    }

    /// `/proc` for a local process, else `/metrics`, else nothing.
    async fn choose_source(&mut self) -> ServiceSource {
        let service = &self.service;
        let local = service.container.is_none()
            && (service.addr.ip().is_loopback() || service.addr.ip().is_unspecified());
        if let (true, Some(pid)) = (local, service.pid) {
            let exists = tokio::task::spawn_blocking(move || proc::exists(pid)).await;
            if exists.unwrap_or(false) {
                return ServiceSource::Proc;
            }
        }
        if service.metrics.is_some() {
            return ServiceSource::Metrics;
        }
        self.note = Some(match (local, service.pid) {
            (true, Some(pid)) => format!("no /proc/{pid} on this host and no metrics address"),
            _ => "not a process of this host, and no metrics address".to_string(),
        });
        ServiceSource::None
    }

    /// Takes a reading and, when it continues the previous one, a sample; nothing when
    /// the previous reading is younger than [`SAMPLE_INTERVAL_MS_MIN`].
    async fn read(&mut self) {
        let last_at = match &self.last {
            Some(Last::Proc(reading)) => Some(reading.at),
            Some(Last::Metrics { at, .. }) => Some(*at),
            None => None,
        };
        let min = Duration::from_millis(SAMPLE_INTERVAL_MS_MIN);
        if last_at.is_some_and(|at| at.elapsed() < min) {
            return;
        }
        match self.source {
            ServiceSource::Proc => self.read_proc().await,
            ServiceSource::Metrics => self.read_metrics().await,
            ServiceSource::None => {}
        }
    }

    async fn read_proc(&mut self) {
        let Some(pid) = self.service.pid else {
            return;
        };
        let name = self.service.name.clone();
        let topology = self.topology_path.clone();
        let followed =
            tokio::task::spawn_blocking(move || read_following(pid, &name, &topology)).await;
        let followed = followed
            .unwrap_or_else(|e| Followed::Missing(format!("reading /proc/{pid} failed: {e}")));
        let reading = match followed {
            Followed::Same(reading) => reading,
            Followed::Moved(new_pid, reading) => {
                self.service.pid = Some(new_pid);
                self.processes += 1;
                self.last = Some(Last::Proc(reading));
                return;
            }
            Followed::Missing(why) => {
                self.note = Some(why);
                self.last = None;
                return;
            }
        };
        if let Some(Last::Proc(last)) = &self.last {
            let sample = self.proc_sample(last, &reading);
            self.samples.push(sample);
        }
        self.last = Some(Last::Proc(reading));
    }

    fn proc_sample(&self, last: &ProcReading, now: &ProcReading) -> ServiceSample {
        let wall_s = now
            .at
            .duration_since(last.at)
            .as_secs_f64()
            .max(f64::EPSILON);
        let cores = |ticks: u64| ticks as f64 / self.clock_ticks_per_s / wall_s;
        let thread_cpu_cores_max = now
            .threads
            .iter()
            .filter_map(|(tid, &ticks)| Some(ticks.saturating_sub(*last.threads.get(tid)?)))
            .max()
            .map(|ticks| round(cores(ticks)));
        ServiceSample {
            t_s: self.t_s(now.at),
            cpu_cores: round(cores(now.cpu_ticks.saturating_sub(last.cpu_ticks))),
            rss_bytes: now.rss_bytes,
            thread_cpu_cores_max,
        }
    }

    async fn read_metrics(&mut self) {
        let Some(addr) = self.service.metrics.clone() else {
            return;
        };
        let figures = match exposition::scrape(&mut self.client, &addr).await {
            Ok(figures) => figures,
            Err(e) => {
                // The previous reading stays: the next sample spans the missed second.
                self.note = Some(crate::error_chain(&e));
                return;
            }
        };
        let at = Instant::now();
        match self.last {
            Some(Last::Metrics {
                at: last_at,
                cpu_seconds,
            }) if figures.cpu_seconds >= cpu_seconds => {
                let wall_s = at.duration_since(last_at).as_secs_f64().max(f64::EPSILON);
                self.samples.push(ServiceSample {
                    t_s: self.t_s(at),
                    cpu_cores: round((figures.cpu_seconds - cpu_seconds) / wall_s),
                    rss_bytes: figures.rss_bytes,
                    thread_cpu_cores_max: None,
                });
            }
            // A counter that went down belongs to a new process: the service restarted.
            Some(Last::Metrics { .. }) => self.processes += 1,
            _ => {}
        }
        self.last = Some(Last::Metrics {
            at,
            cpu_seconds: figures.cpu_seconds,
        });
    }

    /// Seconds since the run's start, to the millisecond.
    fn t_s(&self, at: Instant) -> f64 {
        (at.saturating_duration_since(self.start).as_secs_f64() * 1000.0).round() / 1000.0
    }

    fn usage(self) -> ServiceUsage {
        let mut usage = ServiceUsage::new(self.service.name, self.source, self.samples);
        usage.processes = self.processes;
        usage.note = self.note;
        usage
    }
}

/// Reads `pid`; if it is gone, reads topology.json again and the pid it now names for
/// `name`. Blocking: run it on the blocking pool.
fn read_following(pid: u32, name: &str, topology: &Path) -> Followed {
    match proc::read(pid) {
        Ok(reading) => return Followed::Same(reading),
        Err(ProcError::Gone { .. }) => {}
        Err(e) => return Followed::Missing(crate::error_chain(&e)),
    }
    let renamed = match Topology::read(topology) {
        Ok(topology) => topology.service(name).and_then(|s| s.pid),
        Err(e) => return Followed::Missing(crate::error_chain(&e)),
    };
    match renamed {
        Some(new_pid) if new_pid != pid => match proc::read(new_pid) {
            Ok(reading) => Followed::Moved(new_pid, reading),
            Err(e) => Followed::Missing(crate::error_chain(&e)),
        },
        _ => Followed::Missing(format!(
            "pid {pid} is gone and topology.json names no new one yet"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process to sample, killed when dropped.
    struct Sleeper(std::process::Child);

    impl Sleeper {
        fn start() -> Sleeper {
            Sleeper(
                std::process::Command::new("sleep")
                    .arg("60")
                    .spawn()
                    .unwrap(),
            )
        }
        fn pid(&self) -> u32 {
            self.0.id()
        }
        fn kill(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    impl Drop for Sleeper {
        fn drop(&mut self) {
            self.kill();
        }
    }

    fn write_topology(path: &Path, pid: u32) {
        let text = format!(
            r#"{{"services": [{{"name": "lobby", "addr": "127.0.0.1:7300", "pid": {pid}}}]}}"#
        );
        std::fs::write(path, text).unwrap();
    }

    /// A restart as `up` does it: the old pid dies, a new one is written to the file.
    #[test]
    fn a_restarted_service_is_followed_to_its_new_pid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("topology.json");
        let mut first = Sleeper::start();
        write_topology(&path, first.pid());
        assert!(matches!(
            read_following(first.pid(), "lobby", &path),
            Followed::Same(_)
        ));
        first.kill();
        match read_following(first.pid(), "lobby", &path) {
            Followed::Missing(why) => assert!(why.contains("no new one"), "{why}"),
            other => panic!("{other:?}"),
        }
        let second = Sleeper::start();
        write_topology(&path, second.pid());
        match read_following(first.pid(), "lobby", &path) {
            Followed::Moved(pid, reading) => {
                assert_eq!(pid, second.pid());
                assert!(reading.rss_bytes > 0);
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_local_service_is_sampled_from_proc_twice_a_second_at_most() {
        let sleeper = Sleeper::start();
        let service = Service {
            name: "lobby".to_string(),
            addr: "127.0.0.1:7300".parse().unwrap(),
            pid: Some(sleeper.pid()),
            container: None,
            metrics: None,
        };
        let mut tracker = Tracker::new(service, PathBuf::from("unused"), Instant::now());
        tracker.source = tracker.choose_source().await;
        assert_eq!(tracker.source, ServiceSource::Proc);
        tracker.read().await;
        // Too soon after the first reading: no second one.
        tracker.read().await;
        assert!(tracker.samples.is_empty());
        // The wait starts after the first reading, so the second is always taken.
        tokio::time::sleep(Duration::from_millis(SAMPLE_INTERVAL_MS_MIN + 50)).await;
        tracker.read().await;
        let usage = tracker.usage();
        assert_eq!(usage.samples.len(), 1, "{usage:?}");
        let sample = &usage.samples[0];
        assert!(sample.rss_bytes > 0 && sample.t_s >= 0.25, "{sample:?}");
        // `sleep` hardly runs: far below a core.
        assert!(sample.cpu_cores < 0.5, "{sample:?}");
        assert!(sample.thread_cpu_cores_max.is_some(), "{sample:?}");
    }

    #[tokio::test]
    async fn a_service_of_another_host_without_metrics_is_listed_unsampled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("topology.json");
        // Pid 1 exists here, but a service on 10.1.2.3 is not this host's pid 1.
        let text = r#"{"services": [{"name": "router", "addr": "10.1.2.3:7500", "pid": 1}]}"#;
        std::fs::write(&path, text).unwrap();
        let services = Sampler::start(&path, Instant::now()).finish().await;
        assert_eq!(services.len(), 1);
        let router = &services[0];
        assert_eq!(
            (router.name.as_str(), router.source),
            ("router", ServiceSource::None)
        );
        assert!(router.samples.is_empty() && router.cpu_cores_max.is_none());
        let note = router.note.as_deref().unwrap();
        assert!(note.contains("not a process of this host"), "{note}");
    }
}
