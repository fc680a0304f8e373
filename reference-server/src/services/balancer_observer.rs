//! Balancer observer: the heartbeat watch and the epoch rules that let a standby take the
//! balancer's place, and keep a returning balancer from causing a split brain.
//!
//! Both balancer processes run the same [`Election`]; only their start differs. The
//! primary (`balancer`) takes the active role as soon as one heartbeat finds no active
//! peer. The observer (`balancer-observer`) starts as standby and promotes itself with
//! epoch + 1 once its peer has not answered as active for the heartbeat deadline. An
//! active process that sees a higher epoch steps down, so a balancer that comes back
//! after a kill stays standby and watches the observer in turn.

use std::fs;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Which process this is; it decides only the behaviour at start and on an epoch tie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The `balancer` service.
    Primary,
    /// The `balancer-observer` service.
    Observer,
}

/// What one heartbeat learned about the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerSeen {
    /// The peer answered and serves picks at this epoch.
    Active(u64),
    /// The peer answered as standby; it knows this epoch.
    Standby(u64),
    /// The peer did not answer in time.
    Unreachable,
    /// Nothing listens at the peer's address: its host answered, its process is gone.
    Refused,
}

/// A change of role decided by [`Election::observe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// This process now serves picks at the new epoch.
    Promoted(u64),
    /// This process saw a higher (or winning equal) epoch and stopped serving picks.
    SteppedDown(u64),
}

/// The election state of one balancer process.
#[derive(Debug)]
pub struct Election {
    role: Role,
    epoch: u64,
    active: bool,
    deadline: Duration,
    last_peer_active: Instant,
    /// Whether the peer has been seen active since this process started.
    peer_was_active: bool,
    epoch_file: Option<PathBuf>,
}

impl Election {
    /// A new election state. `epoch_file` keeps the highest epoch across restarts so a
    /// restarted process never promotes to an epoch already used.
    pub fn new(
        role: Role,
        deadline: Duration,
        epoch_file: Option<PathBuf>,
        now: Instant,
    ) -> Election {
        let epoch = epoch_file
            .as_ref()
            .and_then(|p| fs::read_to_string(p).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        // The primary may promote on its first heartbeat; the observer first gives the
        // primary one full deadline to show up.
        let last_peer_active = match role {
            Role::Primary => now.checked_sub(deadline).unwrap_or(now),
            Role::Observer => now,
        };
        Election {
            role,
            epoch,
            active: false,
            deadline,
            last_peer_active,
            peer_was_active: false,
            epoch_file,
        }
    }

    /// The current epoch (the highest one known).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// True while this process serves picks.
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// How long until this process would promote itself if the peer stays silent (zero
    /// once the deadline has passed); `None` while it is active.
    pub fn until_deadline(&self, now: Instant) -> Option<Duration> {
        (!self.active).then(|| {
            self.deadline
                .saturating_sub(now.saturating_duration_since(self.last_peer_active))
        })
    }

    /// Applies one heartbeat result.
    pub fn observe(&mut self, seen: PeerSeen, now: Instant) -> Option<Transition> {
        match seen {
            PeerSeen::Active(peer_epoch) => {
                self.last_peer_active = now;
                self.peer_was_active = true;
                let peer_wins = peer_epoch > self.epoch
                    || (peer_epoch == self.epoch && self.role == Role::Observer);
                let was_active = self.active;
                if peer_wins {
                    self.active = false;
                }
                self.raise_epoch(peer_epoch);
                (was_active && peer_wins).then_some(Transition::SteppedDown(self.epoch))
            }
            PeerSeen::Standby(peer_epoch) => {
                self.raise_epoch(peer_epoch);
                // A peer seen active that now answers as standby lost its role (it was
                // restarted): nobody serves picks until this process does.
                if self.peer_was_active {
                    self.promote()
                } else {
                    self.maybe_promote(now)
                }
            }
            PeerSeen::Unreachable => self.maybe_promote(now),
            // An active peer whose port now refuses connections died: waiting out the
            // deadline would only lengthen the failover. Before the peer was ever seen
            // active, a refusal may just be a peer still starting, which keeps its
            // deadline to show up.
            PeerSeen::Refused if self.peer_was_active => self.promote(),
            PeerSeen::Refused => self.maybe_promote(now),
        }
    }

    fn maybe_promote(&mut self, now: Instant) -> Option<Transition> {
        if now.duration_since(self.last_peer_active) < self.deadline {
            return None;
        }
        self.promote()
    }

    fn promote(&mut self) -> Option<Transition> {
        if self.active {
            return None;
        }
        self.epoch += 1;
        self.active = true;
        if let Err(err) = self.persist() {
            tracing::warn!(%err, "could not persist the balancer epoch");
        }
        Some(Transition::Promoted(self.epoch))
    }

    fn raise_epoch(&mut self, seen: u64) {
        if seen > self.epoch {
            self.epoch = seen;
            if let Err(err) = self.persist() {
                tracing::warn!(%err, "could not persist the balancer epoch");
            }
        }
    }

    fn persist(&self) -> io::Result<()> {
        let Some(path) = &self.epoch_file else {
            return Ok(());
        };
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, format!("{}\n", self.epoch))?;
        fs::rename(tmp, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEADLINE: Duration = Duration::from_millis(300);

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    #[test]
    fn primary_takes_over_at_once_when_alone() {
        let t0 = Instant::now() + DEADLINE;
        let mut e = Election::new(Role::Primary, DEADLINE, None, t0);
        assert_eq!(
            e.observe(PeerSeen::Unreachable, t0),
            Some(Transition::Promoted(1))
        );
        assert!(e.is_active());
    }

    #[test]
    fn observer_waits_one_deadline_then_promotes_with_next_epoch() {
        let t0 = Instant::now();
        let mut e = Election::new(Role::Observer, DEADLINE, None, t0);
        assert_eq!(e.observe(PeerSeen::Active(1), at(t0, 100)), None);
        assert_eq!(e.observe(PeerSeen::Unreachable, at(t0, 200)), None);
        assert_eq!(e.observe(PeerSeen::Unreachable, at(t0, 399)), None);
        assert_eq!(
            e.observe(PeerSeen::Unreachable, at(t0, 400)),
            Some(Transition::Promoted(2))
        );
    }

    #[test]
    fn an_active_peer_whose_port_refuses_is_replaced_at_once() {
        let t0 = Instant::now();
        let mut e = Election::new(Role::Observer, DEADLINE, None, t0);
        assert_eq!(e.observe(PeerSeen::Active(1), at(t0, 100)), None);
        assert_eq!(
            e.observe(PeerSeen::Refused, at(t0, 200)),
            Some(Transition::Promoted(2))
        );
        assert_eq!(e.observe(PeerSeen::Refused, at(t0, 300)), None);
    }

    #[test]
    fn an_active_peer_back_as_standby_is_replaced_at_once() {
        let t0 = Instant::now();
        let mut e = Election::new(Role::Observer, DEADLINE, None, t0);
        assert_eq!(e.observe(PeerSeen::Active(3), at(t0, 100)), None);
        assert_eq!(
            e.observe(PeerSeen::Standby(3), at(t0, 200)),
            Some(Transition::Promoted(4))
        );
    }

    #[test]
    fn the_time_left_to_the_deadline_shrinks_with_silence() {
        let t0 = Instant::now();
        let mut e = Election::new(Role::Observer, DEADLINE, None, t0);
        e.observe(PeerSeen::Active(1), t0);
        assert_eq!(
            e.until_deadline(at(t0, 100)),
            Some(Duration::from_millis(200))
        );
        assert_eq!(e.until_deadline(at(t0, 400)), Some(Duration::ZERO));
        e.observe(PeerSeen::Unreachable, at(t0, 400));
        assert_eq!(e.until_deadline(at(t0, 500)), None);
    }

    #[test]
    fn a_peer_never_seen_active_keeps_its_deadline_to_start() {
        let t0 = Instant::now();
        let mut e = Election::new(Role::Observer, DEADLINE, None, t0);
        assert_eq!(e.observe(PeerSeen::Refused, at(t0, 100)), None);
        assert_eq!(e.observe(PeerSeen::Refused, at(t0, 299)), None);
        assert_eq!(
            e.observe(PeerSeen::Refused, at(t0, 300)),
            Some(Transition::Promoted(1))
        );
    }

    #[test]
    fn returning_balancer_stays_standby_behind_a_higher_epoch() {
        let t0 = Instant::now() + DEADLINE;
        let mut e = Election::new(Role::Primary, DEADLINE, None, t0);
        assert_eq!(e.observe(PeerSeen::Active(2), t0), None);
        assert!(!e.is_active());
        assert_eq!(e.epoch(), 2);
        // It keeps watching: only when the observer dies does it promote, past epoch 2.
        assert_eq!(e.observe(PeerSeen::Unreachable, at(t0, 299)), None);
        assert_eq!(
            e.observe(PeerSeen::Unreachable, at(t0, 300)),
            Some(Transition::Promoted(3))
        );
    }

    #[test]
    fn active_with_lower_epoch_steps_down_and_ties_go_to_the_primary() {
        let t0 = Instant::now() + DEADLINE;
        let mut p = Election::new(Role::Primary, DEADLINE, None, t0);
        p.observe(PeerSeen::Unreachable, t0);
        assert_eq!(
            p.observe(PeerSeen::Active(5), t0),
            Some(Transition::SteppedDown(5))
        );
        let mut o = Election::new(Role::Observer, DEADLINE, None, t0);
        o.observe(PeerSeen::Unreachable, at(t0, 300));
        assert_eq!(o.epoch(), 1);
        assert_eq!(
            o.observe(PeerSeen::Active(1), at(t0, 301)),
            Some(Transition::SteppedDown(1))
        );
        let mut p2 = Election::new(Role::Primary, DEADLINE, None, t0);
        p2.observe(PeerSeen::Unreachable, t0);
        assert_eq!(p2.observe(PeerSeen::Active(1), t0), None);
        assert!(p2.is_active());
    }

    #[test]
    fn epoch_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("balancer.epoch");
        let t0 = Instant::now() + DEADLINE;
        let mut e = Election::new(Role::Primary, DEADLINE, Some(file.clone()), t0);
        e.observe(PeerSeen::Standby(6), t0);
        assert_eq!(e.epoch(), 7);
        let mut again = Election::new(Role::Primary, DEADLINE, Some(file), t0);
        assert_eq!(
            again.observe(PeerSeen::Unreachable, t0),
            Some(Transition::Promoted(8))
        );
    }
}
