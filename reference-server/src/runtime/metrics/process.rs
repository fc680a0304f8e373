//! The process series, read from `/proc/self` at scrape time under the standard names
//! of Prometheus's own clients: `process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, `process_virtual_memory_bytes`, `process_open_fds`,
//! `process_max_fds` and `process_start_time_seconds`. The simulator reads the first
//! three from `/metrics` for services it cannot see in its own `/proc` (containers).

use std::fs;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

/// What `/proc/self` says about this process, in the units the series use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    /// User plus system CPU time.
    pub cpu_s: f64,
    /// Resident set size.
    pub resident_bytes: i64,
    /// Virtual memory size.
    pub virtual_bytes: i64,
    /// Start time since the Unix epoch.
    pub start_time_s: f64,
}

/// `sysconf` values that turn `/proc/self/stat`'s ticks and pages into seconds and bytes.
#[derive(Debug, Clone, Copy)]
struct Scales {
    ticks_per_s: f64,
    page_bytes: i64,
    boot_time_s: f64,
}

impl Scales {
    fn of_this_machine() -> Option<Scales> {
        // SAFETY: sysconf has no preconditions.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        let boot_time_s = fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|line| line.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()?;
        // `c_long` is `i64` on 64-bit Linux only; the casts keep 32-bit targets building.
        #[allow(clippy::unnecessary_cast)]
        (ticks > 0 && page > 0).then_some(Scales {
            ticks_per_s: ticks as f64,
            page_bytes: page as i64,
            boot_time_s,
        })
    }
}

/// Parses the text of `/proc/PID/stat` (proc(5)): utime and stime (fields 14 and 15, in
/// ticks), starttime (22, ticks after boot), vsize (23, bytes) and rss (24, pages).
fn parse_stat(stat: &str, scales: Scales) -> Option<ProcessStats> {
    // The command name (field 2) may hold spaces and parentheses; fields after its
    // closing parenthesis are plain numbers, the first of them field 3.
    let fields: Vec<&str> = stat.rsplit_once(") ")?.1.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).copied();
    let number = |n: usize| field(n)?.parse::<u64>().ok();
    let ticks = (number(14)? + number(15)?) as f64;
    Some(ProcessStats {
        cpu_s: ticks / scales.ticks_per_s,
        resident_bytes: i64::try_from(number(24)?).ok()? * scales.page_bytes,
        virtual_bytes: i64::try_from(number(23)?).ok()?,
        start_time_s: scales.boot_time_s + number(22)? as f64 / scales.ticks_per_s,
    })
}

/// This process's stats now, or `None` where `/proc` cannot tell.
pub fn read_self() -> Option<ProcessStats> {
    parse_stat(
        &fs::read_to_string("/proc/self/stat").ok()?,
        Scales::of_this_machine()?,
    )
}

/// Descriptors this process has open now.
pub fn open_fds() -> Option<i64> {
    let count = fs::read_dir("/proc/self/fd").ok()?.count();
    // The directory handle that lists them is one of them.
    i64::try_from(count.saturating_sub(1)).ok()
}

/// The soft limit on open descriptors.
pub fn max_fds() -> Option<i64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    i64::try_from(limit.rlim_cur).ok()
}

/// Encodes the process series on each scrape. A value `/proc` cannot give is left out
/// rather than reported as zero.
#[derive(Debug, Clone, Copy)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some(stats) = read_self() {
            let cpu = ConstCounter::new(stats.cpu_s);
            cpu.encode(encoder.encode_descriptor(
                "process_cpu",
                "Total user and system CPU time spent",
                Some(&Unit::Seconds),
                MetricType::Counter,
            )?)?;
            for (name, help, value) in [
                (
                    "process_resident_memory",
                    "Resident memory size",
                    stats.resident_bytes,
                ),
                (
                    "process_virtual_memory",
                    "Virtual memory size",
                    stats.virtual_bytes,
                ),
            ] {
                let gauge = ConstGauge::new(value);
                gauge.encode(encoder.encode_descriptor(
                    name,
                    help,
                    Some(&Unit::Bytes),
                    MetricType::Gauge,
                )?)?;
            }
            let start = ConstGauge::new(stats.start_time_s);
            start.encode(encoder.encode_descriptor(
                "process_start_time",
                "Start time of the process since the Unix epoch",
                Some(&Unit::Seconds),
                MetricType::Gauge,
            )?)?;
        }
        for (name, help, value) in [
            ("process_open_fds", "Open file descriptors", open_fds()),
            (
                "process_max_fds",
                "Most open file descriptors allowed",
                max_fds(),
            ),
        ] {
            if let Some(value) = value {
                let gauge = ConstGauge::new(value);
                gauge.encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_after_a_command_name_with_spaces_and_parentheses() {
        let scales = Scales {
            ticks_per_s: 100.0,
            page_bytes: 4096,
            boot_time_s: 1_000.0,
        };
        // Fields 3 to 24 of proc(5), the name holding ") (" to mislead a naive split.
        let stat = "42 (a) (b c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 500 \
                    123456789 1000 18446744073709551615";
        let stats = parse_stat(stat, scales).unwrap();
        assert_eq!(stats.cpu_s, 3.0);
        assert_eq!(stats.resident_bytes, 1000 * 4096);
        assert_eq!(stats.virtual_bytes, 123_456_789);
        assert_eq!(stats.start_time_s, 1_005.0);
        assert_eq!(parse_stat("42 (a) S 1", scales), None);
    }

    #[test]
    fn this_process_has_memory_cpu_and_descriptors() {
        let stats = read_self().expect("/proc/self/stat");
        assert!(stats.resident_bytes > 0);
        assert!(stats.cpu_s >= 0.0);
        assert!(
            open_fds().unwrap() >= 3,
            "stdin, stdout and stderr at least"
        );
        assert!(max_fds().unwrap() > 0);
    }
}
