//! The open model's arrival times: a rate that ramps linearly stage by stage, and
//! arrivals spaced evenly or as a Poisson process at that rate.
//!
//! Both use the cumulative rate Λ(t) = ∫₀ᵗ λ(s) ds. Constant arrivals come at Λ(t) = 1,
//! 2, 3, …; Poisson arrivals at Λ(t) = E₁, E₁ + E₂, … with Eᵢ exponential of mean 1,
//! which is the exact time-rescaling of a Poisson process with a varying rate (no
//! thinning, no step approximation). Λ is quadratic within a linear stage, so its inverse
//! is closed-form. The schedule is a pure function of the scenario seed: every worker
//! process computes the same arrivals and runs its own share of them.

use crate::scenario::{Arrival, Load};
use crate::seeds::arrivals_seed;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One linear piece of the rate.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Piece {
    /// When the piece begins, s since the start of the run.
    begin_s: f64,
    duration_s: f64,
    from_per_s: f64,
    to_per_s: f64,
    /// Λ at `begin_s`.
    mass_before: f64,
}

impl Piece {
    /// The arrivals expected over the whole piece.
    fn mass(&self) -> f64 {
        (self.from_per_s + self.to_per_s) / 2.0 * self.duration_s
    }

    /// The time into the piece at which Λ has grown by `mass` since its beginning:
    /// the root of r₀τ + aτ² = m with a = (r₁ − r₀) / 2d, in the form that is stable
    /// for any sign of a and for r₀ = 0.
    fn time_for(&self, mass: f64) -> f64 {
        let slope_half = (self.to_per_s - self.from_per_s) / (2.0 * self.duration_s);
        let root = (self.from_per_s * self.from_per_s + 4.0 * slope_half * mass)
            .max(0.0)
            .sqrt();
        let denominator = self.from_per_s + root;
        if denominator <= 0.0 {
            return self.duration_s;
        }
        (2.0 * mass / denominator).min(self.duration_s)
    }
}

/// The rate over the run, stage by stage.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    pieces: Vec<Piece>,
}

impl Schedule {
    /// The schedule of `load.stages`, ramping from `load.start_rate_per_s`.
    pub fn new(load: &Load) -> Schedule {
        let mut pieces = Vec::with_capacity(load.stages.len());
        let mut begin_s = 0.0;
        let mut rate = load.start_rate_per_s;
        let mut mass_before = 0.0;
        for stage in &load.stages {
            let piece = Piece {
                begin_s,
                duration_s: stage.duration_s,
                from_per_s: rate,
                to_per_s: stage.target_per_s,
                mass_before,
            };
            mass_before += piece.mass();
            begin_s += stage.duration_s;
            rate = stage.target_per_s;
            pieces.push(piece);
        }
        Schedule { pieces }
    }

    /// The rate offered at `t_s` seconds into the run; 0 after the last stage.
    pub fn rate_at(&self, t_s: f64) -> f64 {
        self.pieces
            .iter()
            .find(|p| t_s >= p.begin_s && t_s < p.begin_s + p.duration_s)
            .map_or(0.0, |p| {
                let into = (t_s - p.begin_s) / p.duration_s;
                p.from_per_s + (p.to_per_s - p.from_per_s) * into
            })
    }

    /// The arrivals expected over the whole schedule.
    pub fn expected_arrivals(&self) -> f64 {
        self.pieces.last().map_or(0.0, |p| p.mass_before + p.mass())
    }

    /// When Λ reaches `mass`, s since the start; `None` beyond the last stage.
    fn time_at_mass(&self, mass: f64) -> Option<f64> {
        let piece = self
            .pieces
            .iter()
            .find(|p| p.mass() > 0.0 && mass <= p.mass_before + p.mass())?;
        Some(piece.begin_s + piece.time_for(mass - piece.mass_before))
    }
}

/// The arrival times of a run, in order, as seconds since its start.
#[derive(Debug)]
pub struct Arrivals {
    schedule: Schedule,
    arrival: Arrival,
    rng: StdRng,
    mass: f64,
}

impl Arrivals {
    /// The arrivals of `load` under the scenario `seed`.
    pub fn new(load: &Load, seed: u64) -> Arrivals {
        Arrivals {
            schedule: Schedule::new(load),
            arrival: load.arrival,
            rng: StdRng::seed_from_u64(arrivals_seed(seed)),
            mass: 0.0,
        }
    }
}

impl Iterator for Arrivals {
    type Item = f64;

    fn next(&mut self) -> Option<f64> {
        self.mass += match self.arrival {
            Arrival::Constant => 1.0,
            // 1 − U lies in (0, 1], so the logarithm is finite.
            Arrival::Poisson => -(1.0 - self.rng.random::<f64>()).ln(),
        };
        self.schedule.time_at_mass(self.mass)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{LoadModel, Stage};
    use proptest::prelude::*;

    fn load(arrival: Arrival, start: f64, stages: &[(f64, f64)]) -> Load {
        Load {
            model: LoadModel::Open,
            arrival,
            start_rate_per_s: start,
            stages: stages
                .iter()
                .map(|&(duration_s, target_per_s)| Stage {
                    duration_s,
                    target_per_s,
                })
                .collect(),
            ..Load::default()
        }
    }

    #[test]
    fn constant_arrivals_are_evenly_spaced() {
        let times: Vec<f64> =
            Arrivals::new(&load(Arrival::Constant, 10.0, &[(2.0, 10.0)]), 1).collect();
        assert_eq!(times.len(), 20);
        for (k, t) in times.iter().enumerate() {
            assert!(
                (t - (k as f64 + 1.0) / 10.0).abs() < 1e-9,
                "arrival {k} at {t}"
            );
        }
    }

    #[test]
    fn a_ramp_from_zero_places_arrivals_on_the_square_root() {
        // λ(t) = 2t over 10 s: Λ(t) = t², so arrival k comes at √k.
        let times: Vec<f64> =
            Arrivals::new(&load(Arrival::Constant, 0.0, &[(10.0, 20.0)]), 1).collect();
        assert_eq!(times.len(), 100);
        for (k, t) in times.iter().enumerate() {
            assert!(
                (t - ((k + 1) as f64).sqrt()).abs() < 1e-9,
                "arrival {k} at {t}"
            );
        }
    }

    #[test]
    fn a_pause_at_rate_zero_has_no_arrivals() {
        let load = load(
            Arrival::Constant,
            5.0,
            &[(2.0, 5.0), (3.0, 0.0), (2.0, 0.0), (2.0, 5.0)],
        );
        let times: Vec<f64> = Arrivals::new(&load, 1).collect();
        assert!(times.iter().all(|&t| !(5.0..7.0).contains(&t)), "{times:?}");
        assert_eq!(Schedule::new(&load).rate_at(6.0), 0.0);
        assert_eq!(Schedule::new(&load).rate_at(3.5), 2.5);
    }

    #[test]
    fn poisson_arrivals_are_reproducible_and_average_to_the_rate() {
        let load = load(Arrival::Poisson, 200.0, &[(100.0, 200.0)]);
        let first: Vec<f64> = Arrivals::new(&load, 7).collect();
        let again: Vec<f64> = Arrivals::new(&load, 7).collect();
        assert_eq!(first, again);
        // 20,000 expected; a Poisson count's standard deviation is √20,000 ≈ 141.
        let n = first.len() as f64;
        assert!((n - 20_000.0).abs() < 5.0 * 141.0, "{n} arrivals");
        assert_ne!(first, Arrivals::new(&load, 8).collect::<Vec<f64>>());
    }

    proptest! {
        #[test]
        fn arrivals_are_ordered_and_inside_the_stages(
            start in 0.0f64..50.0,
            stages in proptest::collection::vec((0.1f64..20.0, 0.0f64..50.0), 1..6),
            poisson in any::<bool>(),
        ) {
            let arrival = if poisson { Arrival::Poisson } else { Arrival::Constant };
            let load = load(arrival, start, &stages);
            let end: f64 = stages.iter().map(|s| s.0).sum();
            let times: Vec<f64> = Arrivals::new(&load, 3).collect();
            prop_assert!(times.windows(2).all(|w| w[0] <= w[1]));
            prop_assert!(times.iter().all(|&t| (0.0..=end + 1e-9).contains(&t)));
            if !poisson {
                let expected = Schedule::new(&load).expected_arrivals();
                prop_assert!((times.len() as f64 - expected).abs() <= 1.0 + 1e-6);
            }
        }
    }
}
