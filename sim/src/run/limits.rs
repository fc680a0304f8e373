//! The open files limit a run needs: a socket or more per client.

/// Sockets one client may hold at once: its kept-alive connections, one TLS connection
/// to profile, and while it plays, its play server, the router and an observer.
const FDS_PER_CLIENT: u64 = crate::net::http::CLIENT_CONNECTIONS_MAX as u64 + 4;
/// Descriptors the simulator needs besides its clients' sockets: the runtime's, the
/// server log, the report, standard streams.
const FDS_BASE: u64 = 64;

/// Raises this process's soft limit on open files to its hard limit, before the embedded
/// server is spawned so that it inherits the limit too: a default soft limit of 1024
/// would stop a few hundred clients. Returns a warning when even the hard limit is
/// below what `clients` may need; the run goes on, and failed connections show as errors.
pub(crate) fn raise_open_files_limit(clients: u64) -> Option<String> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct it is given, which lives here.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Some(format!(
            "cannot read the open files limit: {}",
            std::io::Error::last_os_error()
        ));
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct it is given, which lives here.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    let needed = clients.saturating_mul(FDS_PER_CLIENT) + FDS_BASE;
    (limit.rlim_cur < needed).then(|| {
        format!(
            "{clients} clients may need {needed} open files, but the limit is {}; \
             raise it (ulimit -n) or expect connect errors",
            limit.rlim_cur
        )
    })
}
