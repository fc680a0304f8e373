//! Live progress while a run goes: an indicatif bar with rates and errors on a terminal,
//! a plain line every few seconds otherwise (CI logs want a trace, not redraws).

use crate::metrics::IntervalPoint;
use crate::step::Step;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal as _;

/// Without a terminal a line goes to stderr this often; every second would flood CI logs.
const LINE_EVERY_S: u64 = 5;
/// The bar redraws at most this often; the figures change once a second anyway.
const BAR_REFRESH_HZ: u8 = 4;

/// The progress display of one run.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    /// What happened since the last plain line.
    window: Window,
}

/// The seconds since the last plain line, added up, so that a line every
/// [`LINE_EVERY_S`] seconds misses nothing that happened between lines.
#[derive(Debug, Default)]
struct Window {
    seconds: u64,
    requests: Vec<u64>,
    errors: Vec<u64>,
    /// The highest per-second p99 of each step in the window.
    p99_max_us: Vec<Option<u64>>,
    /// Failed requests by step and error code.
    errors_by_code: std::collections::BTreeMap<(usize, String), u64>,
    arrivals: u64,
    dropped: u64,
}

impl Window {
    fn add(&mut self, point: &IntervalPoint) {
        let steps = point.steps.len();
        self.requests.resize(steps, 0);
        self.errors.resize(steps, 0);
        self.p99_max_us.resize(steps, None);
        for (i, figures) in point.steps.iter().enumerate() {
            self.requests[i] += figures.requests;
            self.errors[i] += figures.errors;
            self.p99_max_us[i] = self.p99_max_us[i].max(figures.p99_us);
        }
        for (i, codes) in point.errors_by_code.iter().enumerate() {
            for (code, count) in codes {
                *self.errors_by_code.entry((i, code.clone())).or_default() += count;
            }
        }
        self.arrivals += point.load.arrivals;
        self.dropped += point.load.dropped;
        self.seconds += 1;
    }
}

impl Progress {
    /// A bar over `duration_s` seconds if stderr is a terminal, else plain lines.
    pub fn new(duration_s: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let target = ProgressDrawTarget::stderr_with_hz(BAR_REFRESH_HZ);
            let bar = ProgressBar::with_draw_target(Some(duration_s), target);
            let style =
                ProgressStyle::with_template("{elapsed:>4} [{bar:24}] {pos}/{len} s  {msg}")
                    .expect("the template is valid")
                    .progress_chars("=> ");
            bar.set_style(style);
            bar
        });
        Progress {
            bar,
            window: Window::default(),
        }
    }

    /// Shows the second that just closed.
    pub fn second(&mut self, point: &IntervalPoint) {
        match &self.bar {
            Some(bar) => {
                bar.set_position(point.t_s + 1);
                bar.set_message(short_line(point));
            }
            None => {
                self.window.add(point);
                if (point.t_s + 1) % LINE_EVERY_S == 0 {
                    let window = std::mem::take(&mut self.window);
                    eprintln!("{}", plain_line(point, &window));
                }
            }
        }
    }

    /// Prints a line above the bar (or plainly without one).
    pub fn note(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => eprintln!("{text}"),
        }
    }

    /// Removes the bar before the summary is printed.
    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// The bar's message: all steps together, and the load.
fn short_line(point: &IntervalPoint) -> String {
    let requests: u64 = point.steps.iter().map(|s| s.requests).sum();
    let errors: u64 = point.steps.iter().map(|s| s.errors).sum();
    let p99 = |step: Step| {
        point.steps[step.index()]
            .p99_us
            .map_or("-".to_string(), |us| format!("{:.1}", us as f64 / 1000.0))
    };
    let mut line = format!(
        "{requests} req/s  {errors} err/s  active {}  p99 ms: login {} me {} ack {}",
        point.load.active,
        p99(Step::Login),
        p99(Step::LobbyMe),
        p99(Step::PlayInputAck)
    );
    if point.load.offered_per_s > 0.0 || point.load.dropped > 0 {
        line.push_str(&format!(
            "  arrivals {}/s of {:.1}, dropped {}",
            point.load.arrivals, point.load.offered_per_s, point.load.dropped
        ));
    }
    line
}

/// A log line for the seconds since the previous one: errors first (by step), then the
/// requests and their rate, the worst second's p99 of the steps users feel most, the
/// server-pushed ticks apart from the requests, and the load at the line's second.
fn plain_line(point: &IntervalPoint, window: &Window) -> String {
    let figures = |step: Step| {
        let i = step.index();
        (
            window.requests.get(i).copied().unwrap_or(0),
            window.errors.get(i).copied().unwrap_or(0),
            window.p99_max_us.get(i).copied().flatten(),
        )
    };
    let mut parts = Vec::new();
    // By step and code where the seconds carried codes, else by step.
    let failing: Vec<String> = if window.errors_by_code.is_empty() {
        Step::ALL
            .iter()
            .filter(|&&step| figures(step).1 > 0)
            .map(|&step| format!("{} {}", step.name(), figures(step).1))
            .collect()
    } else {
        window
            .errors_by_code
            .iter()
            .map(|((i, code), count)| format!("{} {code} {count}", Step::ALL[*i].name()))
            .collect()
    };
    let errors: u64 = Step::ALL.iter().map(|&step| figures(step).1).sum();
    parts.push(if failing.is_empty() {
        "errors 0".to_string()
    } else {
        format!("errors {errors} ({})", failing.join(", "))
    });
    let requests: u64 = Step::ALL
        .iter()
        .filter(|step| step.is_request())
        .map(|&step| figures(step).0)
        .sum();
    let seconds = window.seconds.max(1);
    parts.push(format!("{requests} requests, {}/s", requests / seconds));
    let p99s: Vec<String> = [Step::Login, Step::LobbyMe, Step::UpdateCheck]
        .into_iter()
        .filter_map(|step| {
            let us = figures(step).2?;
            Some(format!("{} {:.1} ms", step.name(), us as f64 / 1000.0))
        })
        .collect();
    if !p99s.is_empty() {
        parts.push(format!("p99 {}", p99s.join(", ")));
    }
    let ticks = figures(Step::PlayTickInterval).0;
    if ticks > 0 {
        parts.push(format!("{ticks} ticks"));
    }
    parts.push(format!("active {}", point.load.active));
    if point.load.offered_per_s > 0.0 || window.dropped > 0 {
        parts.push(format!(
            "arrivals {} (offered {:.1}/s, dropped {})",
            window.arrivals, point.load.offered_per_s, window.dropped
        ));
    }
    format!("[{:>4} s] {}", point.t_s + 1, parts.join(" | "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{IntervalStep, LoadPoint};

    fn second(t_s: u64, set: &[(Step, u64, u64, u64)]) -> IntervalPoint {
        let mut errors_by_code = vec![std::collections::BTreeMap::new(); Step::ALL.len()];
        let idle = IntervalStep {
            requests: 0,
            errors: 0,
            p50_us: None,
            p90_us: None,
            p99_us: None,
        };
        let mut steps = vec![idle; Step::ALL.len()];
        for &(step, requests, errors, p99_us) in set {
            steps[step.index()] = IntervalStep {
                requests,
                errors,
                p99_us: Some(p99_us),
                ..idle
            };
            let code = if step == Step::UpdateCheck {
                "unavailable"
            } else {
                "tick_late"
            };
            if errors > 0 {
                errors_by_code[step.index()].insert(code.to_string(), errors);
            }
        }
        IntervalPoint {
            t_s,
            steps,
            errors_by_code,
            load: LoadPoint {
                active: 200,
                ..LoadPoint::default()
            },
        }
    }

    #[test]
    fn a_plain_line_counts_every_second_since_the_last_one_errors_first() {
        let mut window = Window::default();
        // The 11 unavailable answers came in the line's first second, not its last.
        window.add(&second(
            5,
            &[
                (Step::UpdateCheck, 30, 11, 4_000),
                (Step::PlayTickInterval, 3_000, 0, 50_000),
            ],
        ));
        for t in 6..9 {
            window.add(&second(
                t,
                &[
                    (Step::UpdateCheck, 30, 0, 1_000),
                    (Step::Login, 20, 0, 9_000),
                ],
            ));
        }
        let last = second(9, &[(Step::PlayTickInterval, 3_000, 2, 60_000)]);
        window.add(&last);
        let line = plain_line(&last, &window);
        assert_eq!(
            line,
            "[  10 s] errors 13 (update.check unavailable 11, play.tick_interval tick_late 2) \
             | 180 requests, 36/s \
             | p99 login 9.0 ms, update.check 4.0 ms | 6000 ticks | active 200"
        );
        assert!(line.len() < 200, "{} characters", line.len());
    }
}
