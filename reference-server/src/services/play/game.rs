//! The match itself: cats move and fight in a square arena at a fixed tick rate. The
//! server is authoritative: inputs are intents (a direction and a trigger), validated and
//! applied at the next tick; positions, hits and HP are computed here only.

use serde::{Serialize, Serializer};

/// The arena is a square of this side, in world units.
pub const ARENA_SIZE: f64 = 100.0;
/// The farthest a cat moves in one tick; a longer input direction is scaled to length 1.
pub const SPEED_PER_TICK: f64 = 1.0;
/// HP at the start of a match.
pub const HP_START: i32 = 100;
/// A shot hits the nearest living opponent within this distance.
pub const FIRE_RANGE: f64 = 12.0;
/// HP one hit takes.
pub const FIRE_DAMAGE: i32 = 10;
/// Ticks between two shots of one cat (4 shots a second at 20 Hz).
pub const FIRE_COOLDOWN_TICKS: u32 = 5;
/// Rating points moved between winner and each loser.
pub const RATING_STEP: i64 = 16;
/// XP for playing a match, per hit landed, and for winning.
pub const XP_PLAYED: i64 = 10;
/// XP per hit landed.
pub const XP_PER_HIT: i64 = 2;
/// XP for winning.
pub const XP_WIN: i64 = 20;
/// XP per level: level = 1 + xp / XP_PER_LEVEL.
pub const XP_PER_LEVEL: i64 = 100;

/// Why an input was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputError {
    /// `seq` did not increase.
    StaleSeq,
    /// `dx` or `dy` is not a finite number: no direction at all.
    NotFinite,
}

impl InputError {
    /// The error code sent to the client.
    pub fn code(self) -> &'static str {
        match self {
            InputError::StaleSeq => "stale_seq",
            InputError::NotFinite => "not_finite",
        }
    }
}

/// One cat in a match.
#[derive(Debug, Clone)]
pub struct Cat {
    /// The user it belongs to.
    pub user: String,
    x: f64,
    y: f64,
    hp: i32,
    cooldown: u32,
    hits: u32,
    dx: f64,
    dy: f64,
    fire: bool,
    /// The last input `seq` applied (acknowledged in `state`).
    pub ack: u64,
    received: u64,
}

/// The cats as the `players` array serializes them.
struct View<'a>(&'a [Cat]);

impl Serialize for View<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().enumerate().map(|(p, c)| CatView {
            p,
            x: (c.x * 100.0).round() / 100.0,
            y: (c.y * 100.0).round() / 100.0,
            hp: c.hp.max(0),
        }))
    }
}

#[derive(Serialize)]
struct CatView {
    p: usize,
    x: f64,
    y: f64,
    hp: i32,
}

/// One player's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Player index in the match.
    pub player: usize,
    /// User id.
    pub user: String,
    /// Whether this cat won.
    pub won: bool,
    /// Rating change.
    pub rating_delta: i64,
    /// XP gained.
    pub xp: i64,
}

/// A match's cats and clock.
#[derive(Debug, Clone, Default)]
pub struct Game {
    cats: Vec<Cat>,
    tick: u64,
}

impl Game {
    /// Adds a cat for `user` at a spawn point on a circle; returns its player index.
    pub fn add(&mut self, user: &str) -> usize {
        let p = self.cats.len();
        let angle = p as f64 * 2.399_963; // The golden angle spreads any number of cats.
        let r = ARENA_SIZE * 0.35;
        self.cats.push(Cat {
            user: user.to_string(),
            x: ARENA_SIZE / 2.0 + r * angle.cos(),
            y: ARENA_SIZE / 2.0 + r * angle.sin(),
            hp: HP_START,
            cooldown: 0,
            hits: 0,
            dx: 0.0,
            dy: 0.0,
            fire: false,
            ack: 0,
            received: 0,
        });
        p
    }

    /// Players in the match.
    pub fn players(&self) -> usize {
        self.cats.len()
    }

    /// The player index of `user`, if it has a cat here.
    pub fn player_of(&self, user: &str) -> Option<usize> {
        self.cats.iter().position(|c| c.user == user)
    }

    /// The current tick (0 before the first).
    pub fn tick(&self) -> u64 {
        self.tick
    }

    /// Records player `p`'s latest input, applied at the next tick. A direction longer
    /// than 1 is scaled to length 1 (SPEC §3: an analog stick's diagonal is no offence),
    /// so a cat never moves faster than [`SPEED_PER_TICK`].
    pub fn input(
        &mut self,
        p: usize,
        seq: u64,
        dx: f64,
        dy: f64,
        fire: bool,
    ) -> Result<(), InputError> {
        let cat = &mut self.cats[p];
        if seq <= cat.received {
            return Err(InputError::StaleSeq);
        }
        if !dx.is_finite() || !dy.is_finite() {
            return Err(InputError::NotFinite);
        }
        // `hypot` cannot overflow where squaring would, so even 1e300 scales to length 1.
        let length = dx.hypot(dy);
        let scale = if length > 1.0 { length.recip() } else { 1.0 };
        cat.received = seq;
        cat.dx = dx * scale;
        cat.dy = dy * scale;
        cat.fire |= fire;
        Ok(())
    }

    /// Advances one tick: moves every living cat, then resolves shots.
    pub fn step(&mut self) {
        self.tick += 1;
        for cat in self.cats.iter_mut() {
            // A dead cat's inputs are applied as nothing, but still acknowledged.
            cat.ack = cat.received;
            if cat.hp > 0 {
                cat.x = (cat.x + cat.dx * SPEED_PER_TICK).clamp(0.0, ARENA_SIZE);
                cat.y = (cat.y + cat.dy * SPEED_PER_TICK).clamp(0.0, ARENA_SIZE);
                cat.cooldown = cat.cooldown.saturating_sub(1);
            }
        }
        for shooter in 0..self.cats.len() {
            let c = &self.cats[shooter];
            if !(c.fire && c.hp > 0 && c.cooldown == 0) {
                continue;
            }
            let target = (0..self.cats.len())
                .filter(|&t| t != shooter && self.cats[t].hp > 0)
                .map(|t| (t, self.distance(shooter, t)))
                .filter(|&(_, d)| d <= FIRE_RANGE)
                .min_by(|a, b| a.1.total_cmp(&b.1));
            if let Some((t, _)) = target {
                self.cats[t].hp -= FIRE_DAMAGE;
                self.cats[shooter].hits += 1;
            }
            self.cats[shooter].cooldown = FIRE_COOLDOWN_TICKS;
        }
        for cat in &mut self.cats {
            cat.fire = false;
        }
    }

    fn distance(&self, a: usize, b: usize) -> f64 {
        let (a, b) = (&self.cats[a], &self.cats[b]);
        ((a.x - b.x).powi(2) + (a.y - b.y).powi(2)).sqrt()
    }

    /// True once at most one cat of a multi-cat match is alive.
    pub fn decided(&self) -> bool {
        self.cats.len() > 1 && self.cats.iter().filter(|c| c.hp > 0).count() <= 1
    }

    /// The `players` array of a `state` line, encoded straight from the cats: it runs
    /// every tick of every match, and a JSON tree in between cost an allocation per field.
    pub fn view(&self) -> String {
        serde_json::to_string(&View(&self.cats)).expect("plain values serialize")
    }

    /// The ack for player `p`.
    pub fn ack(&self, p: usize) -> u64 {
        self.cats[p].ack
    }

    /// The winner (most HP left, then most hits, then lowest index) and every outcome.
    pub fn outcomes(&self) -> (usize, Vec<Outcome>) {
        let winner = (0..self.cats.len())
            .max_by_key(|&p| (self.cats[p].hp, self.cats[p].hits, std::cmp::Reverse(p)))
            .expect("a match has at least one cat");
        let losers = self.cats.len() as i64 - 1;
        let outcomes = self
            .cats
            .iter()
            .enumerate()
            .map(|(p, c)| {
                let won = p == winner;
                Outcome {
                    player: p,
                    user: c.user.clone(),
                    won,
                    rating_delta: if won {
                        RATING_STEP * losers
                    } else {
                        -RATING_STEP
                    },
                    xp: XP_PLAYED + XP_PER_HIT * c.hits as i64 + if won { XP_WIN } else { 0 },
                }
            })
            .collect();
        (winner, outcomes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(g: &Game) -> serde_json::Value {
        serde_json::from_str(&g.view()).unwrap()
    }

    #[test]
    fn inputs_are_validated_and_acked_at_the_next_tick() {
        let mut g = Game::default();
        let p = g.add("user1");
        assert_eq!(g.input(p, 1, 0.6, 0.8, false), Ok(()));
        assert_eq!(g.ack(p), 0);
        g.step();
        assert_eq!(g.ack(p), 1);
        assert_eq!(g.input(p, 1, 0.0, 0.0, false), Err(InputError::StaleSeq));
        assert_eq!(
            g.input(p, 2, f64::NAN, 0.0, false),
            Err(InputError::NotFinite)
        );
        assert_eq!(
            g.input(p, 3, 0.0, f64::INFINITY, false),
            Err(InputError::NotFinite)
        );
    }

    #[test]
    fn a_direction_longer_than_one_is_scaled_applied_and_acked() {
        let mut g = Game::default();
        let p = g.add("user1");
        let (x0, y0) = (g.cats[p].x, g.cats[p].y);
        assert_eq!(g.input(p, 1, 0.8, 0.8, false), Ok(()));
        g.step();
        assert_eq!(g.ack(p), 1);
        let (dx, dy) = (g.cats[p].x - x0, g.cats[p].y - y0);
        assert!(
            (dx.hypot(dy) - SPEED_PER_TICK).abs() < 1e-12,
            "moved {dx}, {dy}"
        );
        assert!((dx - dy).abs() < 1e-12, "the direction is kept");
        // So is a huge one, whose square would overflow.
        let (x1, y1) = (g.cats[p].x, g.cats[p].y);
        assert_eq!(g.input(p, 2, -1e300, 0.0, false), Ok(()));
        g.step();
        assert_eq!(g.ack(p), 2);
        assert!((x1 - g.cats[p].x - SPEED_PER_TICK).abs() < 1e-12);
        assert_eq!(g.cats[p].y, y1);
    }

    #[test]
    fn cats_never_leave_the_arena() {
        let mut g = Game::default();
        let p = g.add("user1");
        for seq in 1..=500 {
            g.input(p, seq, 1.0, 0.0, false).unwrap();
            g.step();
        }
        let x = view(&g)[0]["x"].as_f64().unwrap();
        assert_eq!(x, ARENA_SIZE);
    }

    #[test]
    fn a_fight_has_a_winner_and_ratings_balance() {
        let mut g = Game::default();
        let a = g.add("a");
        let b = g.add("b");
        // Both walk to the centre; only a shoots.
        let mut seq = 0;
        while !g.decided() && g.tick() < 2000 {
            seq += 1;
            for p in [a, b] {
                let v = view(&g)[p].clone();
                let (dx, dy) = (
                    ARENA_SIZE / 2.0 - v["x"].as_f64().unwrap(),
                    ARENA_SIZE / 2.0 - v["y"].as_f64().unwrap(),
                );
                let len = (dx * dx + dy * dy).sqrt().max(1.0);
                g.input(p, seq, dx / len, dy / len, p == a).unwrap();
            }
            g.step();
        }
        assert!(g.decided());
        let (winner, outcomes) = g.outcomes();
        assert_eq!(winner, a);
        assert_eq!(outcomes.iter().map(|o| o.rating_delta).sum::<i64>(), 0);
        assert!(outcomes[a].xp > outcomes[b].xp);
    }
}
