//! Taking connections off a listener so that no accept failure ends a service: a failure
//! that concerns one connection is skipped, one that would repeat at once (no descriptor
//! left, no memory) pauses accepting for a moment, and every failure is logged, at a
//! bounded rate.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};

use super::{interrupted, would_block};

/// How long a loop leaves its listener alone after an accept failed for want of a
/// descriptor or memory. Retrying at once would fail at once and spin the loop; the
/// clients wait in the backlog meanwhile, and connections closing in the pause give the
/// descriptors back.
pub const ACCEPT_BACKOFF_MS: u64 = 100;
/// At most one accept failure is logged per this interval, with the count of those
/// left out since the last one: a process out of descriptors fails every retry.
const ACCEPT_WARN_INTERVAL_MS: u64 = 1_000;

/// The accept state of one listener: when accepting may resume after a failure, and the
/// rate limit of its warnings.
#[derive(Debug, Default)]
pub struct Acceptor {
    paused_until: Option<Instant>,
    last_warn: Option<Instant>,
    unlogged: u64,
}

impl Acceptor {
    /// A listener that accepts at once.
    pub fn new() -> Acceptor {
        Acceptor::default()
    }

    /// The next pending connection, or `None` once none is left or while accepting is
    /// paused. Failures are logged here and never returned: none of them may end a loop.
    pub fn next(&mut self, listener: &TcpListener) -> Option<(TcpStream, SocketAddr)> {
        if self
            .paused_until
            .is_some_and(|until| Instant::now() < until)
        {
            return None;
        }
        self.paused_until = None;
        loop {
            match listener.accept() {
                Ok(pair) => return Some(pair),
                Err(err) if would_block(&err) => return None,
                Err(err) if interrupted(&err) => continue,
                Err(err) if concerns_one_connection(&err) => {
                    self.warn("accept failed for one connection", &err);
                }
                Err(err) => {
                    self.warn("accept failed; pausing the listener", &err);
                    self.paused_until =
                        Some(Instant::now() + Duration::from_millis(ACCEPT_BACKOFF_MS));
                    return None;
                }
            }
        }
    }

    /// Logs an accepted connection that could not be registered with the poll; the
    /// caller drops it, which closes it, and goes on with the others.
    pub fn dropped(&mut self, err: &io::Error) {
        self.warn(
            "a new connection could not be registered and was closed",
            err,
        );
    }

    /// How long the loop may sleep in `poll`: at most `longest`, and no later than the
    /// end of a pause.
    pub fn poll_timeout(&self, longest: Duration) -> Duration {
        match self.paused_until {
            Some(until) => longest.min(until.saturating_duration_since(Instant::now())),
            None => longest,
        }
    }

    /// Ends a pause that is over; true when one ended. The caller then accepts at once:
    /// a listener's readiness is an edge, and the clients that queued during the pause
    /// raised theirs while it was ignored.
    pub fn resume(&mut self) -> bool {
        match self.paused_until {
            Some(until) if Instant::now() >= until => {
                self.paused_until = None;
                true
            }
            _ => false,
        }
    }

    fn warn(&mut self, what: &str, err: &io::Error) {
        let now = Instant::now();
        let interval = Duration::from_millis(ACCEPT_WARN_INTERVAL_MS);
        if self
            .last_warn
            .is_some_and(|last| now.duration_since(last) < interval)
        {
            self.unlogged += 1;
            return;
        }
        tracing::warn!(%err, unlogged_since_last = self.unlogged, "{what}");
        self.last_warn = Some(now);
        self.unlogged = 0;
    }
}

/// True for the errors Linux's accept(2) reports for one pending connection only (it
/// was reset, or a network error was pending on it): the next one may well succeed.
fn concerns_one_connection(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(
            libc::ECONNABORTED
                | libc::EPROTO
                | libc::EPERM
                | libc::ENETDOWN
                | libc::ENOPROTOOPT
                | libc::EHOSTDOWN
                | libc::ENONET
                | libc::EHOSTUNREACH
                | libc::EOPNOTSUPP
                | libc::ENETUNREACH
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_out_of_descriptors_pauses_and_a_reset_does_not() {
        assert!(!concerns_one_connection(&io::Error::from_raw_os_error(
            libc::EMFILE
        )));
        assert!(!concerns_one_connection(&io::Error::from_raw_os_error(
            libc::ENFILE
        )));
        assert!(concerns_one_connection(&io::Error::from_raw_os_error(
            libc::ECONNABORTED
        )));
    }

    #[test]
    fn a_pause_bounds_the_poll_and_ends_once() {
        let mut acceptor = Acceptor::new();
        let longest = Duration::from_secs(1);
        assert_eq!(acceptor.poll_timeout(longest), longest);
        assert!(!acceptor.resume());
        acceptor.paused_until = Some(Instant::now() + Duration::from_millis(ACCEPT_BACKOFF_MS));
        assert!(acceptor.poll_timeout(longest) <= Duration::from_millis(ACCEPT_BACKOFF_MS));
        assert!(!acceptor.resume());
        std::thread::sleep(Duration::from_millis(ACCEPT_BACKOFF_MS));
        assert_eq!(acceptor.poll_timeout(longest), Duration::ZERO);
        assert!(acceptor.resume());
        assert!(!acceptor.resume());
        assert_eq!(acceptor.poll_timeout(longest), longest);
    }
}
