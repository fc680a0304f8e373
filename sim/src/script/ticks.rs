//! The bookkeeping of a match stream, as pure functions of what arrived and when: the
//! order of ticks, their lateness, the inputs still waiting for an `ack`, and the random
//! walk a simulated player steers by.

use rand::Rng;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A tick that arrives more than half a period after its due time has made a client's
/// one-tick interpolation buffer run dry: the player sees the stutter.
const TICK_LATE_FACTOR: f64 = 1.5;
/// Inputs awaiting their `ack`. At 10 Hz an input is acked within a tick or two; 64
/// unacked ones mean the server stopped applying them, and the oldest are given up.
const PENDING_INPUTS_MAX: usize = 64;
/// The largest turn of the walk between two inputs: a cat wanders, it does not spin.
const TURN_MAX_RAD: f64 = 0.6;
/// The slowest a walking cat goes, as a fraction of full speed.
const SPEED_MIN: f64 = 0.5;
/// The chance that an input pulls the trigger: a few shots a second at 10 Hz.
const FIRE_CHANCE: f64 = 0.2;

/// Where a tick stands relative to the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TickOrder {
    /// The first tick of a stream that may begin anywhere (an observer's).
    First,
    /// The tick expected next.
    Next,
    /// Ahead of the tick expected: ticks in between never arrived.
    Gap,
    /// A tick at or before one already seen.
    Backwards,
}

impl TickOrder {
    /// Whether the stream is still every tick, in order.
    pub(super) fn in_order(self) -> bool {
        matches!(self, TickOrder::First | TickOrder::Next)
    }
}

/// The order of the ticks of one stream.
#[derive(Debug)]
pub(super) struct TickSequence {
    expected: Option<u64>,
}

impl TickSequence {
    /// A player's stream: it joined before the match started, so it starts at tick 1.
    pub(super) fn from_tick_one() -> TickSequence {
        TickSequence { expected: Some(1) }
    }

    /// An observer's stream: it starts at whatever tick the observer subscribed.
    pub(super) fn from_any_tick() -> TickSequence {
        TickSequence { expected: None }
    }

    /// Places `tick`. After a gap the stream goes on from `tick`; a backward tick
    /// changes nothing.
    pub(super) fn next(&mut self, tick: u64) -> TickOrder {
        let order = match self.expected {
            None => TickOrder::First,
            Some(expected) if tick == expected => TickOrder::Next,
            Some(expected) if tick > expected => TickOrder::Gap,
            Some(_) => return TickOrder::Backwards,
        };
        self.expected = Some(tick + 1);
        order
    }
}

/// How one `state` arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct TickArrival {
    /// Its place in the stream.
    pub(super) order: TickOrder,
    /// When the tick before it arrived, if it was the one just before.
    pub(super) previous_at: Option<Instant>,
    /// Whether it came later than [`TICK_LATE_FACTOR`] periods after that one.
    pub(super) late: bool,
}

/// The ticks of a player's stream and when they arrived.
#[derive(Debug)]
pub(super) struct TickClock {
    sequence: TickSequence,
    last_at: Option<Instant>,
    late_after: Duration,
}

impl TickClock {
    /// A clock for a match ticking every `period`.
    pub(super) fn new(period: Duration) -> TickClock {
        TickClock {
            sequence: TickSequence::from_tick_one(),
            last_at: None,
            late_after: period.mul_f64(TICK_LATE_FACTOR),
        }
    }

    /// Records that `tick` arrived `at`.
    pub(super) fn arrive(&mut self, tick: u64, at: Instant) -> TickArrival {
        let order = self.sequence.next(tick);
        if order == TickOrder::Backwards {
            return TickArrival {
                order,
                previous_at: None,
                late: false,
            };
        }
        let previous_at = self
            .last_at
            .replace(at)
            .filter(|_| order == TickOrder::Next);
        let late = previous_at.is_some_and(|before| at.duration_since(before) > self.late_after);
        TickArrival {
            order,
            previous_at,
            late,
        }
    }
}

/// Inputs sent and not yet acknowledged, oldest first.
#[derive(Debug, Default)]
pub(super) struct PendingInputs {
    sent: VecDeque<(u64, Instant)>,
    last_seq: u64,
}

impl PendingInputs {
    /// Records input `seq` (larger than any before) sent `at`. Returns how many of the
    /// oldest were given up to stay within [`PENDING_INPUTS_MAX`].
    pub(super) fn sent(&mut self, seq: u64, at: Instant) -> u64 {
        debug_assert!(seq > self.last_seq, "input seq must increase");
        self.last_seq = seq;
        self.sent.push_back((seq, at));
        let excess = self.sent.len().saturating_sub(PENDING_INPUTS_MAX);
        self.sent.drain(..excess);
        excess as u64
    }

    /// Whether `ack` names an input never sent.
    pub(super) fn ahead(&self, ack: u64) -> bool {
        ack > self.last_seq
    }

    /// Removes and returns the send times of every input up to `ack`.
    pub(super) fn acked(&mut self, ack: u64) -> impl Iterator<Item = Instant> + '_ {
        let done = self.sent.partition_point(|&(seq, _)| seq <= ack);
        self.sent.drain(..done).map(|(_, at)| at)
    }

    /// Forgets every pending input: a dead cat's inputs are never applied.
    pub(super) fn clear(&mut self) {
        self.sent.clear();
    }
}

/// One input of a player.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Input {
    /// Direction x; `dx² + dy² ≤ 1`.
    pub(super) dx: f64,
    /// Direction y.
    pub(super) dy: f64,
    /// Trigger pulled.
    pub(super) fire: bool,
}

impl Input {
    /// The `input` line with sequence number `seq`.
    pub(super) fn line(&self, seq: u64) -> serde_json::Value {
        serde_json::json!({"t": "input", "seq": seq, "dx": self.dx, "dy": self.dy, "fire": self.fire})
    }
}

/// A cat that wanders: each input turns a little from the last heading, at a random
/// speed, and now and then fires.
#[derive(Debug)]
pub(super) struct RandomWalk {
    heading_rad: f64,
}

impl RandomWalk {
    /// A walk in a random first direction.
    pub(super) fn new(rng: &mut impl Rng) -> RandomWalk {
        RandomWalk {
            heading_rad: rng.random_range(0.0..std::f64::consts::TAU),
        }
    }

    /// The next input.
    pub(super) fn next(&mut self, rng: &mut impl Rng) -> Input {
        self.heading_rad += rng.random_range(-TURN_MAX_RAD..=TURN_MAX_RAD);
        // Below 1 with room to spare, so that rounding in cos² + sin² never exceeds it.
        let speed = rng.random_range(SPEED_MIN..1.0) * (1.0 - f64::EPSILON * 4.0);
        Input {
            dx: speed * self.heading_rad.cos(),
            dy: speed * self.heading_rad.sin(),
            fire: rng.random_bool(FIRE_CHANCE),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn player_ticks_start_at_one_and_gaps_and_repeats_are_caught() {
        let mut ticks = TickSequence::from_tick_one();
        assert_eq!(ticks.next(1), TickOrder::Next);
        assert_eq!(ticks.next(2), TickOrder::Next);
        assert_eq!(ticks.next(5), TickOrder::Gap);
        assert_eq!(
            ticks.next(6),
            TickOrder::Next,
            "the stream goes on after a gap"
        );
        assert_eq!(ticks.next(6), TickOrder::Backwards);
        assert_eq!(ticks.next(3), TickOrder::Backwards);
        assert_eq!(ticks.next(7), TickOrder::Next);
        let mut late_joiner = TickSequence::from_tick_one();
        assert_eq!(late_joiner.next(4), TickOrder::Gap);
    }

    #[test]
    fn observer_ticks_may_start_anywhere() {
        let mut ticks = TickSequence::from_any_tick();
        assert_eq!(ticks.next(40), TickOrder::First);
        assert_eq!(ticks.next(41), TickOrder::Next);
        assert!(!ticks.next(43).in_order());
    }

    #[test]
    fn intervals_beyond_one_and_a_half_periods_are_late() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut clock = TickClock::new(Duration::from_millis(50));
        let first = clock.arrive(1, at(0));
        assert_eq!((first.previous_at, first.late), (None, false));
        let on_time = clock.arrive(2, at(60));
        assert_eq!((on_time.previous_at, on_time.late), (Some(at(0)), false));
        let edge = clock.arrive(3, at(135));
        assert!(!edge.late, "exactly 1.5 periods is not late yet");
        let late = clock.arrive(4, at(211));
        assert!(late.late);
        // Across a gap there is no interval to judge.
        let gap = clock.arrive(6, at(250));
        assert_eq!(gap.order, TickOrder::Gap);
        assert_eq!(gap.previous_at, None);
        let after = clock.arrive(7, at(300));
        assert_eq!(after.previous_at, Some(at(250)));
        let repeat = clock.arrive(7, at(310));
        assert_eq!(
            (repeat.order, repeat.previous_at),
            (TickOrder::Backwards, None)
        );
        assert_eq!(clock.arrive(8, at(350)).previous_at, Some(at(300)));
    }

    #[test]
    fn acks_release_every_input_up_to_them_with_its_send_time() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut pending = PendingInputs::default();
        for seq in 1..=3 {
            assert_eq!(pending.sent(seq, at(seq * 100)), 0);
        }
        assert_eq!(pending.acked(0).count(), 0);
        let released: Vec<Instant> = pending.acked(2).collect();
        assert_eq!(released, vec![at(100), at(200)]);
        assert_eq!(pending.acked(2).count(), 0, "an ack is taken once");
        assert!(!pending.ahead(3) && pending.ahead(4));
        assert_eq!(pending.acked(9).collect::<Vec<_>>(), vec![at(300)]);
    }

    #[test]
    fn pending_inputs_are_bounded() {
        let now = Instant::now();
        let mut pending = PendingInputs::default();
        let given_up: u64 = (1..=PENDING_INPUTS_MAX as u64 + 5)
            .map(|seq| pending.sent(seq, now))
            .sum();
        assert_eq!(given_up, 5);
        assert_eq!(pending.acked(u64::MAX).count(), PENDING_INPUTS_MAX);
        pending.sent(1_000, now);
        pending.clear();
        assert_eq!(pending.acked(u64::MAX).count(), 0);
    }

    #[test]
    fn the_walk_never_asks_for_more_than_full_speed_and_sometimes_fires() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut walk = RandomWalk::new(&mut rng);
        let inputs: Vec<Input> = (0..100_000).map(|_| walk.next(&mut rng)).collect();
        assert!(inputs.iter().all(|i| i.dx * i.dx + i.dy * i.dy <= 1.0));
        let fired = inputs.iter().filter(|i| i.fire).count();
        assert!((15_000..25_000).contains(&fired), "{fired}");
        let line = inputs[0].line(7);
        assert_eq!(
            (line["t"].as_str(), line["seq"].as_u64()),
            (Some("input"), Some(7))
        );
        let mut again = StdRng::seed_from_u64(3);
        let mut replay = RandomWalk::new(&mut again);
        assert_eq!(replay.next(&mut again), inputs[0], "the walk is seeded");
    }
}
