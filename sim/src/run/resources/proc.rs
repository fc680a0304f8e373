//! A process's CPU time and resident memory, read from `/proc/<pid>` on this host.
//!
//! `stat` gives the CPU time in clock ticks (`utime` + `stime`, fields 14 and 15), the
//! same file under `task/<tid>/` gives each thread's, and `statm`'s second field is the
//! resident set in pages.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

/// CatWar services run a loop, a few pool workers and a writer or two; a process with
/// more threads than this is read for its first ones only, so that one odd process
/// cannot make a second's sampling slow.
const THREADS_READ_MAX: usize = 256;

/// Why a process could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProcError {
    /// The process is gone (or a zombie waiting to be reaped): it died or was restarted.
    #[error("pid {pid} is gone")]
    Gone {
        /// The process.
        pid: u32,
    },
    /// A file of `/proc/<pid>` could not be read although the process exists.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file of `/proc/<pid>` did not have the expected shape.
    #[error("{}: {what}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What was wrong with it.
        what: &'static str,
    },
}

/// The figures of `/proc/<pid>/stat` the sampler uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stat {
    /// The state letter: `R`, `S`, `D`, `Z` (zombie), ...
    pub(crate) state: char,
    /// `utime` + `stime`, in clock ticks.
    pub(crate) cpu_ticks: u64,
}

/// One reading of a process.
#[derive(Clone, Debug)]
pub(crate) struct ProcReading {
    /// When it was taken (right after the files were read).
    pub(crate) at: Instant,
    /// The process's CPU time so far, clock ticks.
    pub(crate) cpu_ticks: u64,
    /// Its resident memory, bytes.
    pub(crate) rss_bytes: u64,
    /// Each thread's CPU time so far, clock ticks, by thread id.
    pub(crate) threads: HashMap<u32, u64>,
}

/// Parses the text of `/proc/<pid>/stat`. The command name (field 2) is in parentheses
/// and may itself hold spaces and parentheses, so the fields are counted after its last
/// `)`.
pub(crate) fn parse_stat(text: &str) -> Option<Stat> {
    let after_name = &text[text.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    // Field 3 is the state; utime and stime are fields 14 and 15, 11 and 12 after it.
    let state = fields.next()?.chars().next()?;
    let mut fields = fields.skip(10);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Stat {
        state,
        cpu_ticks: utime + stime,
    })
}

/// Parses the text of `/proc/<pid>/statm`: its second field, resident pages.
pub(crate) fn parse_statm_rss_pages(text: &str) -> Option<u64> {
    text.split_whitespace().nth(1)?.parse().ok()
}

/// Whether `/proc/<pid>` exists here: the process runs on this host, in our namespace.
pub(crate) fn exists(pid: u32) -> bool {
    proc_dir(pid).is_dir()
}

/// Reads the process `pid` now. Blocking (a few small files); call it off the runtime.
pub(crate) fn read(pid: u32) -> Result<ProcReading, ProcError> {
    let dir = proc_dir(pid);
    let stat = read_stat(pid, &dir.join("stat"))?;
    if stat.state == 'Z' {
        return Err(ProcError::Gone { pid });
    }
    let statm = dir.join("statm");
    let text = read_file(pid, &statm)?;
    let rss_pages = parse_statm_rss_pages(&text).ok_or(ProcError::Malformed {
        path: statm,
        what: "no resident pages",
    })?;
    let threads = read_threads(&dir);
    Ok(ProcReading {
        at: Instant::now(),
        cpu_ticks: stat.cpu_ticks,
        rss_bytes: rss_pages * page_bytes(),
        threads,
    })
}

/// Clock ticks per second, the unit of `/proc`'s CPU times.
pub(crate) fn clock_ticks_per_s() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    // Linux has said 100 on every architecture for decades; a failed call falls back to it.
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

fn page_bytes() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(0) as u64
}

fn proc_dir(pid: u32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}"))
}

fn read_stat(pid: u32, path: &std::path::Path) -> Result<Stat, ProcError> {
    let text = read_file(pid, path)?;
    parse_stat(&text).ok_or(ProcError::Malformed {
        path: path.to_path_buf(),
        what: "no state, utime and stime",
    })
}

fn read_file(pid: u32, path: &std::path::Path) -> Result<String, ProcError> {
    std::fs::read_to_string(path).map_err(|source| match source.kind() {
        // A process that exits between two reads takes its files with it (ESRCH reads
        // as "other" on some kernels).
        std::io::ErrorKind::NotFound => ProcError::Gone { pid },
        _ if source.raw_os_error() == Some(libc::ESRCH) => ProcError::Gone { pid },
        _ => ProcError::Read {
            path: path.to_path_buf(),
            source,
        },
    })
}

/// Each thread's CPU ticks; threads that exit while being read are left out.
fn read_threads(dir: &std::path::Path) -> HashMap<u32, u64> {
    let Ok(tasks) = std::fs::read_dir(dir.join("task")) else {
        return HashMap::new();
    };
    tasks
        .filter_map(Result::ok)
        .take(THREADS_READ_MAX)
        .filter_map(|task| {
            let tid: u32 = task.file_name().to_str()?.parse().ok()?;
            let text = std::fs::read_to_string(task.path().join("stat")).ok()?;
            Some((tid, parse_stat(&text)?.cpu_ticks))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_last_parenthesis_of_the_name() {
        // A name with spaces and parentheses, as `prctl(PR_SET_NAME)` allows.
        let text = "4242 (catwar (lobby) x) S 1 4242 4242 0 -1 4194560 2212 0 0 0 \
                    731 129 0 0 20 0 5 0 123456 31457280 3400 18446744073709551615";
        assert_eq!(
            parse_stat(text),
            Some(Stat {
                state: 'S',
                cpu_ticks: 731 + 129
            })
        );
        assert_eq!(parse_stat("4242 (cut) S 1 2 3"), None);
        assert_eq!(parse_stat("no parenthesis"), None);
    }

    #[test]
    fn statm_gives_resident_pages() {
        assert_eq!(
            parse_statm_rss_pages("7680 3400 1200 200 0 2100 0\n"),
            Some(3400)
        );
        assert_eq!(parse_statm_rss_pages("7680"), None);
    }

    #[test]
    fn this_process_reads_with_memory_and_threads_and_a_dead_one_is_gone() {
        let reading = read(std::process::id()).unwrap();
        assert!(reading.rss_bytes > 0);
        assert!(reading.threads.contains_key(&std::process::id()));
        assert!(clock_ticks_per_s() > 0.0);
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(matches!(read(pid), Err(ProcError::Gone { .. })));
        assert!(!exists(pid));
    }
}
