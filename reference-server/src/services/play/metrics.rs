//! A play server's own series (SPEC §7): players, matches by phase, observers, tick
//! lateness, missed ticks, connections and lines. The play loop is a line protocol with
//! a clock, not the HTTP loop, so it records these itself; every update is an atomic
//! store, made once per tick or per event, never a lock.

use std::collections::HashMap;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Unit;

use super::{Match, Phase};
use crate::runtime::metrics::Metrics;

/// Upper bounds of the tick lateness buckets, in seconds: from 100 µs (on time) to a
/// quarter second (five 20 Hz periods, where the clock gives up and skips ahead).
const LATENESS_BUCKETS_S: [f64; 11] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
];
/// The phases a match is counted in, as labels.
const PHASES: [&str; 3] = ["filling", "running", "committing"];

fn phase_label(phase: &Phase) -> &'static str {
    match phase {
        Phase::Filling(_) => PHASES[0],
        Phase::Running => PHASES[1],
        Phase::Committing => PHASES[2],
    }
}

/// The handles the loop records into; clones share the values.
#[derive(Debug, Clone)]
pub(super) struct PlayMetrics {
    players: Gauge,
    matches: Family<[(&'static str, &'static str); 1], Gauge>,
    observers: Gauge,
    observers_started: Counter,
    lateness: Histogram,
    missed: Counter,
    connections: Gauge,
    lines: Counter,
}

impl PlayMetrics {
    pub(super) fn new() -> PlayMetrics {
        PlayMetrics {
            players: Gauge::default(),
            matches: Family::default(),
            observers: Gauge::default(),
            observers_started: Counter::default(),
            lateness: Histogram::new(LATENESS_BUCKETS_S),
            missed: Counter::default(),
            connections: Gauge::default(),
            lines: Counter::default(),
        }
    }

    pub(super) fn register(&self, metrics: &Metrics) {
        metrics.register(
            "catwar_play_players",
            "Players joined to the matches of this play server",
            self.players.clone(),
        );
        metrics.register(
            "catwar_play_matches",
            "Matches of this play server, by phase",
            self.matches.clone(),
        );
        metrics.register(
            "catwar_play_observers",
            "Match observers subscribed to a match now",
            self.observers.clone(),
        );
        metrics.register(
            "catwar_play_observers_started",
            "Match observers started on request",
            self.observers_started.clone(),
        );
        metrics.register_with_unit(
            "catwar_play_tick_lateness",
            "How late each tick ran after its planned time",
            Unit::Seconds,
            self.lateness.clone(),
        );
        metrics.register(
            "catwar_play_ticks_missed",
            "Ticks skipped because the loop fell too far behind",
            self.missed.clone(),
        );
        metrics.register(
            "catwar_play_connections",
            "Connections open now: players, observers, the lobby and the router",
            self.connections.clone(),
        );
        metrics.register(
            "catwar_play_lines_received",
            "Lines received from every connection",
            self.lines.clone(),
        );
    }

    /// One tick ran `late` after its planned time.
    pub(super) fn tick(&self, late: Duration) {
        self.lateness.observe(late.as_secs_f64());
    }

    /// The clock skipped this many ticks.
    pub(super) fn missed(&self, ticks: u64) {
        self.missed.inc_by(ticks);
    }

    pub(super) fn connections(&self, open: usize) {
        self.connections.set(open as i64);
    }

    pub(super) fn lines(&self, count: usize) {
        self.lines.inc_by(count as u64);
    }

    pub(super) fn observer_started(&self) {
        self.observers_started.inc();
    }

    /// Counts players, matches by phase and subscribed observers.
    pub(super) fn matches(&self, matches: &HashMap<u64, Match>) {
        let mut by_phase = [0i64; PHASES.len()];
        let (mut players, mut observers) = (0, 0);
        for m in matches.values() {
            let phase = PHASES
                .iter()
                .position(|p| *p == phase_label(&m.phase))
                .expect("every phase is listed");
            by_phase[phase] += 1;
            players += m.game.players() as i64;
            observers += m.subscribers.len() as i64;
        }
        for (phase, count) in PHASES.iter().zip(by_phase) {
            self.matches.get_or_create(&[("phase", *phase)]).set(count);
        }
        self.players.set(players);
        self.observers.set(observers);
    }
}
