//! The knee of a capacity run: the first second from which the server stopped keeping
//! up with the rising arrival rate.
//!
//! Each second of the series is judged against the scenario's `[knee]` conditions
//! (per-second `STEP.p99` and `errors.rate`). A condition broken for `window_s` seconds in
//! a row marks the knee at the first of those seconds; one bad second on a shared machine
//! is noise, not a knee. A second without a sample of a metric neither breaks nor mends
//! its condition.

use crate::report::{nearest_saturation, KneeReport, ServiceUsage, TimePoint};
use crate::scenario::Knee;
use crate::step::Step;

/// Watches the series second by second for the knee.
#[derive(Debug)]
pub struct KneeFinder {
    knee: Knee,
    /// Per condition: the first second of its current broken streak, and its length.
    streaks: Vec<Option<(u64, u64)>>,
    /// The seconds seen so far: offered rate, requests and active clients, by t_s.
    seen: Vec<(f64, u64, u64)>,
    found: Option<KneeReport>,
}

impl KneeFinder {
    /// A finder for the scenario's conditions.
    pub fn new(knee: &Knee) -> KneeFinder {
        KneeFinder {
            streaks: vec![None; knee.conditions.len()],
            knee: knee.clone(),
            seen: Vec::new(),
            found: None,
        }
    }

    /// Judges the next second; true when it completes the knee's window.
    pub fn observe(&mut self, point: &TimePoint) -> bool {
        // Requests only: server-pushed ticks would bury the HTTP rate (Step::is_request).
        let requests = point
            .steps
            .iter()
            .filter(|(name, _)| Step::from_name(name).is_none_or(Step::is_request))
            .map(|(_, s)| s.requests)
            .sum();
        self.seen
            .push((point.load.offered_per_s, requests, point.load.active));
        if self.found.is_some() {
            return false;
        }
        for (index, condition) in self.knee.conditions.iter().enumerate() {
            let Some(value) = point.value_of(condition.metric) else {
                continue;
            };
            let streak = &mut self.streaks[index];
            if condition.holds(value) {
                *streak = None;
                continue;
            }
            let (first, length) = streak.map_or((point.t_s, 1), |(first, n)| (first, n + 1));
            *streak = Some((first, length));
            if length >= self.knee.window_s {
                self.found = Some(self.report_at(first, condition));
                return true;
            }
        }
        false
    }

    /// The knee, or the run's best figures when the server never broke.
    pub fn report(&self) -> KneeReport {
        if let Some(found) = &self.found {
            return found.clone();
        }
        let peak_rate = self.seen.iter().map(|s| s.0).fold(0.0, f64::max);
        KneeReport {
            found: false,
            t_s: None,
            condition: None,
            arrival_rate_per_s: peak_rate,
            throughput_per_s: self.seen.iter().map(|s| s.1).max().unwrap_or(0),
            active: self.seen.iter().map(|s| s.2).max().unwrap_or(0),
            window_s: self.knee.window_s,
            // Named once the run's service samples are in (`run::resources`).
            service: None,
        }
    }

    fn report_at(&self, first: u64, condition: &crate::threshold::Threshold) -> KneeReport {
        let at = |t: u64| self.seen.get(t as usize).copied().unwrap_or_default();
        let (rate, _, active) = at(first);
        let before = first.checked_sub(1).map_or(0, |t| at(t).1);
        KneeReport {
            found: true,
            t_s: Some(first),
            condition: Some(format!("{} {}", condition.name, condition.condition)),
            arrival_rate_per_s: rate,
            throughput_per_s: before,
            active,
            window_s: self.knee.window_s,
            // Named once the run's service samples are in (`run::resources`).
            service: None,
        }
    }
}

/// The knee with the service nearest saturation in its second named, from the run's
/// service samples: the highest busiest-thread share of a core where `/proc` shows
/// threads, else the highest CPU in cores (see `report::ServiceSample::saturation`).
/// A knee not found names none.
pub fn name_service(mut knee: KneeReport, services: &[ServiceUsage]) -> KneeReport {
    knee.service = knee.t_s.and_then(|t_s| nearest_saturation(services, t_s));
    knee
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::LoadPoint;
    use crate::report::TimeStep;
    use crate::threshold::Threshold;

    fn knee(window_s: u64) -> Knee {
        Knee {
            window_s,
            stop: true,
            conditions: vec![
                Threshold::parse("lobby.me.p99", "< 50ms").unwrap(),
                Threshold::parse("errors.rate", "< 10%").unwrap(),
            ],
        }
    }

    fn second(t_s: u64, p99_ms: u64, errors: u64) -> TimePoint {
        let step = TimeStep {
            requests: 100,
            errors,
            p99_us: Some(p99_ms * 1000),
            ..TimeStep::default()
        };
        // Ticks ride along and must not count as requests.
        let ticks = TimeStep {
            requests: 3_000,
            ..TimeStep::default()
        };
        TimePoint {
            t_s,
            steps: [
                ("lobby.me".to_string(), step),
                ("play.tick_interval".to_string(), ticks),
            ]
            .into_iter()
            .collect(),
            load: LoadPoint {
                offered_per_s: t_s as f64 * 10.0,
                active: t_s * 3,
                ..LoadPoint::default()
            },
        }
    }

    #[test]
    fn the_knee_is_the_first_second_of_a_full_broken_window() {
        let mut finder = KneeFinder::new(&knee(3));
        let p99s = [10, 20, 60, 15, 70, 80, 90, 95];
        let found: Vec<bool> = p99s
            .iter()
            .enumerate()
            .map(|(t, &p99)| finder.observe(&second(t as u64, p99, 0)))
            .collect();
        // Second 2 broke alone; 4, 5, 6 in a row complete the window at 6.
        assert_eq!(found.iter().position(|&f| f), Some(6));
        let report = finder.report();
        assert!(report.found);
        assert_eq!(report.t_s, Some(4));
        assert_eq!(report.arrival_rate_per_s, 40.0);
        assert_eq!(report.active, 12);
        assert_eq!(report.throughput_per_s, 100);
        assert_eq!(report.condition.as_deref(), Some("lobby.me.p99 < 50ms"));
    }

    #[test]
    fn errors_break_the_knee_too_and_no_knee_reports_the_peak() {
        let mut finder = KneeFinder::new(&knee(2));
        assert!(!finder.observe(&second(0, 1, 50)));
        assert!(finder.observe(&second(1, 1, 50)));
        assert_eq!(
            finder.report().condition.as_deref(),
            Some("errors.rate < 10%")
        );

        let mut calm = KneeFinder::new(&knee(2));
        for t in 0..5 {
            assert!(!calm.observe(&second(t, 1, 0)));
        }
        let report = calm.report();
        assert!(!report.found && report.t_s.is_none());
        assert_eq!(report.arrival_rate_per_s, 40.0);
    }
}
