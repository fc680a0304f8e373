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
        Progress { bar }
    }

    /// Shows the second that just closed.
    pub fn second(&mut self, point: &IntervalPoint) {
        match &self.bar {
            Some(bar) => {
                bar.set_position(point.t_s + 1);
                bar.set_message(short_line(point));
            }
            None if (point.t_s + 1) % LINE_EVERY_S == 0 => eprintln!("{}", long_line(point)),
            None => {}
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

/// A log line: every step that ran this second, and the load.
fn long_line(point: &IntervalPoint) -> String {
    // Only the steps that ran this second: columns of zeros help nobody.
    let mut parts: Vec<String> = Step::ALL
        .iter()
        .filter(|step| point.steps[step.index()].requests > 0)
        .map(|step| {
            let figures = point.steps[step.index()];
            let p99 = figures.p99_us.map_or("-".to_string(), |us| {
                format!("{:.1} ms", us as f64 / 1000.0)
            });
            format!(
                "{} {}/s p99 {p99} errors {}",
                step.name(),
                figures.requests,
                figures.errors
            )
        })
        .collect();
    let load = point.load;
    parts.push(format!("active {}", load.active));
    if load.offered_per_s > 0.0 || load.dropped > 0 {
        parts.push(format!(
            "arrivals {}/s (offered {:.1}/s, dropped {})",
            load.arrivals, load.offered_per_s, load.dropped
        ));
    }
    format!("[{:>4} s] {}", point.t_s + 1, parts.join(" | "))
}
