//! Where the load lands: each service's CPU and resident memory over the run, as the
//! coordinator sampled them (`run/resources`), the service nearest saturation at the
//! knee, and the summary's `services:` line.
//!
//! A sample's `cpu_cores` is the mean over the interval that ends at its `t_s` (about a
//! second): CPU seconds the process used in it divided by the wall seconds it lasted, so
//! 1.0 is one core kept busy. `t_s` counts seconds from the run's start, the origin of
//! the per-second series, whose point `t_s = k` covers `[k, k + 1)`.

use super::Report;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// Bytes in a MiB, for the summary line.
const MIB_BYTES: f64 = 1024.0 * 1024.0;
/// CPU figures keep this many decimals: `/proc` counts 10 ms clock ticks, so a second's
/// figure is exact to 0.01 core at best, and more digits would be noise.
const CPU_CORES_DECIMALS: i32 = 3;

/// Where a service's figures came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// `/proc/<pid>` of a process on this host.
    Proc,
    /// The service's Prometheus `/metrics` (`process_cpu_seconds_total`,
    /// `process_resident_memory_bytes`).
    Metrics,
    /// Neither could be read; `note` says why.
    None,
}

/// One service of the topology over the run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceUsage {
    /// The topology name: `lobby`, `play-0`, ...
    pub name: String,
    /// Where the samples came from.
    pub source: Source,
    /// One sample per second the service could be read, in time order. A second in which
    /// it could not (the process was dead, a scrape failed) has none.
    pub samples: Vec<ServiceSample>,
    /// The highest `cpu_cores` of a sample; `null` without samples.
    pub cpu_cores_max: Option<f64>,
    /// The mean `cpu_cores` of the samples; `null` without samples.
    pub cpu_cores_mean: Option<f64>,
    /// The highest `rss_bytes` of a sample; `null` without samples.
    pub rss_bytes_max: Option<u64>,
    /// Processes the service ran as during the run: 1, plus one per restart followed.
    pub processes: u32,
    /// Why seconds went without a sample (the last reason seen), or why the service
    /// could not be sampled at all; absent when every second was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One service in one interval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceSample {
    /// When the interval ended, seconds since the run's start.
    pub t_s: f64,
    /// CPU used over the interval, in cores (1.0 = one core busy all the time).
    pub cpu_cores: f64,
    /// Resident memory at `t_s`, bytes.
    pub rss_bytes: u64,
    /// The busiest thread's CPU over the interval, in cores (at most 1.0): known from
    /// `/proc` only. An event loop is one thread, so it saturates when this reaches 1.0
    /// whatever the process's total.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_cpu_cores_max: Option<f64>,
}

impl ServiceSample {
    /// How close the service was to saturation, 1.0 being saturated: its busiest
    /// thread's share of a core where `/proc` shows threads, else its whole CPU in cores
    /// (every CatWar service's requests go through one single-threaded mio loop, so one
    /// core is the capacity that matters; a pool's workers may add more, which then
    /// reads above 1.0).
    pub fn saturation(&self) -> f64 {
        self.thread_cpu_cores_max.unwrap_or(self.cpu_cores)
    }
}

impl ServiceUsage {
    /// A service with these samples, its maxima and mean computed.
    pub fn new(name: String, source: Source, samples: Vec<ServiceSample>) -> ServiceUsage {
        let cpu = samples.iter().map(|s| s.cpu_cores);
        let cpu_cores_max = cpu.clone().reduce(f64::max);
        let cpu_cores_mean =
            (!samples.is_empty()).then(|| round_cores(cpu.sum::<f64>() / samples.len() as f64));
        ServiceUsage {
            rss_bytes_max: samples.iter().map(|s| s.rss_bytes).max(),
            name,
            source,
            samples,
            cpu_cores_max,
            cpu_cores_mean,
            processes: 1,
            note: None,
        }
    }

    /// The sample that covers most of the series' second `t_s` (`[t_s, t_s + 1)`): the
    /// first whose interval ends after that second's middle.
    pub fn sample_for_second(&self, t_s: u64) -> Option<&ServiceSample> {
        let middle_s = t_s as f64 + 0.5;
        self.samples.iter().find(|s| s.t_s > middle_s)
    }
}

/// The service nearest saturation at one moment, as the knee names it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SaturatedService {
    /// The topology name.
    pub name: String,
    /// Its CPU over the second, in cores.
    pub cpu_cores: f64,
    /// Its resident memory, bytes.
    pub rss_bytes: u64,
    /// What it was ranked by, [`ServiceSample::saturation`]: the busiest thread's share
    /// of a core where known, else `cpu_cores`.
    pub saturation: f64,
}

/// The service nearest saturation in the series' second `t_s`: the highest
/// [`ServiceSample::saturation`] among the samples covering that second. `None` when no
/// service has a sample there.
pub fn nearest_saturation(services: &[ServiceUsage], t_s: u64) -> Option<SaturatedService> {
    services
        .iter()
        .filter_map(|service| Some((service, service.sample_for_second(t_s)?)))
        .max_by(|(_, a), (_, b)| a.saturation().total_cmp(&b.saturation()))
        .map(|(service, sample)| SaturatedService {
            name: service.name.clone(),
            cpu_cores: sample.cpu_cores,
            rss_bytes: sample.rss_bytes,
            saturation: sample.saturation(),
        })
}

/// `cores` to [`CPU_CORES_DECIMALS`] decimals.
pub fn round_cores(cores: f64) -> f64 {
    let scale = 10f64.powi(CPU_CORES_DECIMALS);
    (cores * scale).round() / scale
}

impl Report {
    /// Adds the summary's `services:` line, if the report has services.
    pub(super) fn summarize_services(&self, out: &mut String) {
        let at_knee = self.knee.as_ref().and_then(|knee| knee.service.as_ref());
        if let Some(line) = summary_line(&self.services, at_knee) {
            out.push_str(&line);
            out.push('\n');
        }
    }
}

/// The summary names this many services, the busiest; the rest are in report.json and
/// on the page. Eleven services at full length made a 600-character line.
const SUMMARY_SERVICES_MAX: usize = 4;

/// The summary's one line: `services (peak cpu, rss): lobby 0.42 cores 14.2 MiB, ...`,
/// the busiest [`SUMMARY_SERVICES_MAX`] first, then how many more and how many could not
/// be sampled, then the service the knee names. `None` for a report without services
/// (older reports).
pub fn summary_line(
    services: &[ServiceUsage],
    at_knee: Option<&SaturatedService>,
) -> Option<String> {
    if services.is_empty() {
        return None;
    }
    let mut sampled: Vec<(&ServiceUsage, f64, u64)> = services
        .iter()
        .filter_map(|s| Some((s, s.cpu_cores_max?, s.rss_bytes_max?)))
        .collect();
    sampled.sort_by(|a, b| b.1.total_cmp(&a.1));
    let shown: Vec<String> = sampled
        .iter()
        .take(SUMMARY_SERVICES_MAX)
        .map(|(service, cpu, rss)| {
            format!("{} {cpu:.2} cores {:.1} MiB", service.name, *rss as f64 / MIB_BYTES)
        })
        .collect();
    let mut line = format!("services (peak cpu, rss): {}", shown.join(", "));
    let more = sampled.len().saturating_sub(SUMMARY_SERVICES_MAX);
    if more > 0 {
        let _ = write!(line, ", {more} more");
    }
    let unsampled: Vec<&str> = services
        .iter()
        .filter(|s| s.cpu_cores_max.is_none() || s.rss_bytes_max.is_none())
        .map(|s| s.name.as_str())
        .collect();
    if !unsampled.is_empty() {
        let _ = write!(line, "; not sampled: {}", unsampled.join(", "));
    }
    if let Some(service) = at_knee {
        let _ = write!(
            line,
            " (at the knee: {} {:.2} cores, saturation {:.2})",
            service.name, service.cpu_cores, service.saturation
        );
    }
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t_s: f64, cpu_cores: f64, thread: Option<f64>) -> ServiceSample {
        ServiceSample {
            t_s,
            cpu_cores,
            rss_bytes: 10 * 1024 * 1024,
            thread_cpu_cores_max: thread,
        }
    }

    #[test]
    fn maxima_and_mean_come_from_the_samples_and_are_null_without() {
        let usage = ServiceUsage::new(
            "lobby".into(),
            Source::Proc,
            vec![sample(1.0, 0.2, None), sample(2.0, 0.6, None)],
        );
        assert_eq!(usage.cpu_cores_max, Some(0.6));
        assert!((usage.cpu_cores_mean.unwrap() - 0.4).abs() < 1e-9);
        assert_eq!(usage.rss_bytes_max, Some(10 * 1024 * 1024));
        let empty = ServiceUsage::new("router".into(), Source::None, Vec::new());
        assert_eq!(
            (
                empty.cpu_cores_max,
                empty.cpu_cores_mean,
                empty.rss_bytes_max
            ),
            (None, None, None)
        );
        let json = serde_json::to_value(&usage).unwrap();
        assert_eq!(json["source"], "proc");
        assert!(json.get("note").is_none());
    }

    #[test]
    fn the_knee_names_the_busiest_thread_not_the_biggest_total() {
        // Profile's pool spreads 1.2 cores over workers; lobby's one loop is at 0.95.
        let services = vec![
            ServiceUsage::new(
                "profile".into(),
                Source::Proc,
                vec![sample(4.0, 0.1, Some(0.1)), sample(5.0, 1.2, Some(0.6))],
            ),
            ServiceUsage::new(
                "lobby".into(),
                Source::Proc,
                vec![sample(4.0, 0.1, Some(0.1)), sample(5.0, 1.0, Some(0.95))],
            ),
        ];
        // Second 4 is [4, 5): the sample ending at 5.0 covers it.
        let named = nearest_saturation(&services, 4).unwrap();
        assert_eq!(named.name, "lobby");
        assert_eq!(named.cpu_cores, 1.0);
        assert_eq!(named.saturation, 0.95);
        assert!(nearest_saturation(&services, 9).is_none());
    }

    #[test]
    fn the_summary_line_is_compact_and_busiest_first() {
        let services = vec![
            ServiceUsage::new("router".into(), Source::None, Vec::new()),
            ServiceUsage::new("lobby".into(), Source::Proc, vec![sample(1.0, 0.42, None)]),
            ServiceUsage::new("storage".into(), Source::Proc, vec![sample(1.0, 0.1, None)]),
        ];
        assert_eq!(
            summary_line(&services, None).unwrap(),
            "services (peak cpu, rss): lobby 0.42 cores 10.0 MiB, storage 0.10 cores 10.0 MiB; \
             not sampled: router"
        );
        // Eleven services: the four busiest by name, the rest counted.
        let many: Vec<ServiceUsage> = (0..11)
            .map(|i| {
                let cores = f64::from(i) / 100.0;
                ServiceUsage::new(format!("s{i}"), Source::Proc, vec![sample(1.0, cores, None)])
            })
            .collect();
        let line = summary_line(&many, None).unwrap();
        assert!(
            line.starts_with("services (peak cpu, rss): s10 0.10 cores 10.0 MiB, s9 0.09 cores")
                && line.ends_with("s7 0.07 cores 10.0 MiB, 7 more"),
            "{line}"
        );
        let knee = nearest_saturation(&services, 0).unwrap();
        let line = summary_line(&services, Some(&knee)).unwrap();
        assert!(
            line.ends_with(" (at the knee: lobby 0.42 cores, saturation 0.42)"),
            "{line}"
        );
        assert_eq!(summary_line(&[], None), None);
    }
}
