//! The messages between a coordinator and its workers, typed both ways and sent as one
//! JSON object per line (`transport`).
//!
//! - coordinator → worker ([`ToWorker`]): `{"kill":{"at_us":N}}` when a balancer kill
//!   starts a failover window N µs after the shared start, `"stop_arrivals"` when a
//!   capacity run found its knee, `"interrupt"` on Ctrl-C. The end of the stream (a dead
//!   coordinator) interrupts the worker too.
//! - worker → coordinator ([`FromWorker`]): `{"second":{...}}` every second, with each
//!   step's requests, errors and latency histogram of that second (HdrHistogram V2,
//!   base64); then `{"done":{...}}` with its totals: every step's full histogram and
//!   counts, invariants, funnel, arrivals, its view of each balancer kill and every token
//!   prefix it saw. Histograms are added, never percentiles averaged, so the merged
//!   report is the one a single process would have written.
//!
//! Agents on other hosts first pass a handshake on the same connection:
//! - coordinator → agent ([`ToAgent`]): `{"challenge":{"nonce":…}}`, then a few
//!   `{"ping":{"coordinator_us":…}}` to measure the agent's clock, then
//!   `{"assign":{...}}` (its index, the scenario, the topology, profile's certificate and
//!   the start instant in the agent's own clock), or `{"refused":{"reason":…}}`.
//! - agent → coordinator ([`FromAgent`]): `{"hello":{...}}` with its name and the proof
//!   that it holds the shared secret (HMAC-SHA256 of the nonce), and a `{"pong":{...}}`
//!   per ping with its own clock's reading.
//!
//! After the handshake an agent is a worker like any other.
//!
//! Both enums are externally tagged: an internally tagged enum would buffer its content
//! and lose serde_json's integer map keys (the kill windows' epochs).

use crate::failover::KillWindow;
use crate::ledger::WireLedger;
use crate::metrics::{InvariantCount, LoadPoint, Snapshot, StageTotals, StepTotals};
use crate::report::{decode_histogram, FunnelRow, HistogramError, StepReport};
use crate::step::{Invariant, Stage, Step};
use crate::tokens::TokenPrefix;
use hdrhistogram::errors::AdditionError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What the coordinator tells a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum ToWorker {
    /// A balancer kill was sent `at_us` µs after the shared start: time its failover.
    Kill {
        /// When the kill was sent, µs after the shared start.
        at_us: u64,
    },
    /// The knee was found: start no more arrivals.
    StopArrivals,
    /// Ctrl-C or SIGTERM reached the coordinator: stop the clients now.
    Interrupt,
}

/// What the coordinator tells an agent before it is a worker.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum ToAgent {
    /// Prove that you hold the shared secret: HMAC-SHA256 of this nonce (hex).
    Challenge {
        /// Random bytes, hex; a fresh one for every connection.
        nonce: String,
    },
    /// Answer with your clock's reading.
    Ping {
        /// The coordinator's clock when it sent the ping, µs since the Unix epoch.
        coordinator_us: u64,
    },
    /// Your share of the run.
    Assign(Box<Assignment>),
    /// The coordinator will not run with this agent.
    Refused {
        /// Why, in words.
        reason: String,
    },
}

/// An agent's share of the run and everything it needs to drive it.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Assignment {
    /// The agent's number, from 0.
    pub(super) index: u64,
    /// Agents in the run.
    pub(super) count: u64,
    /// The scenario file's text.
    pub(super) scenario: String,
    /// The topology.json the coordinator runs against.
    pub(super) topology: String,
    /// Profile's certificate (PEM), from the topology's data folder.
    pub(super) cert_pem: String,
    /// The shared start, ms since the Unix epoch by the agent's own clock.
    pub(super) start_unix_ms: u64,
}

/// What an agent tells the coordinator before it is a worker.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum FromAgent {
    /// Who the agent is, and its proof of the secret.
    Hello {
        /// This build's version; the coordinator refuses another.
        version: String,
        /// The agent's host name (or `--name`), to name it in messages and the report.
        name: String,
        /// The index the agent asks for (a Kubernetes completion index), if any.
        index: Option<u64>,
        /// HMAC-SHA256 of the challenge's nonce under the shared secret, hex.
        proof: String,
    },
    /// The answer to a ping.
    Pong {
        /// The ping's `coordinator_us`, echoed.
        coordinator_us: u64,
        /// The agent's clock when it answered, µs since the Unix epoch.
        agent_us: u64,
    },
}

/// What a worker tells its coordinator.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum FromWorker {
    /// One second of the series.
    Second(WireSecond),
    /// The worker's totals, after its clients stopped and its results were checked.
    Done(Box<WireTotals>),
}

/// One second of a worker.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct WireSecond {
    /// The second, from the shared start.
    pub(super) t_s: u64,
    /// Per step, in `Step::ALL` order.
    pub(super) steps: Vec<WireInterval>,
    /// Arrivals, active clients, the worker's descriptors and memory.
    pub(super) load: LoadPoint,
}

/// One step in one second of a worker.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct WireInterval {
    /// Requests.
    pub(super) requests: u64,
    /// Failed requests.
    pub(super) errors: u64,
    /// The second's latency histogram, if it has samples.
    pub(super) hist: Option<String>,
    /// Failed requests by error code; absent from workers of older versions.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) errors_by_code: BTreeMap<String, u64>,
}

/// A worker's totals.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct WireTotals {
    /// Whether the worker was interrupted.
    pub(super) interrupted: bool,
    /// Per step, in `Step::ALL` order.
    pub(super) steps: Vec<StepReport>,
    /// Per invariant, in `Invariant::ALL` order.
    pub(super) invariants: Vec<InvariantCount>,
    /// Per stage, in `Stage::ALL` order.
    pub(super) funnel: Vec<FunnelRow>,
    /// Arrivals started and dropped.
    pub(super) load: LoadPoint,
    /// The worker's view of every balancer kill.
    pub(super) kill_windows: Vec<KillWindow>,
    /// Every token prefix issued to the worker's clients, as hex.
    pub(super) tokens: Vec<String>,
    /// The worker's resident memory before its clients started, KiB.
    pub(super) baseline_rss_kib: u64,
    /// What the worker's clients saw of match results, for the coordinator to compare
    /// with the user DB (`results.no_loss`); `None` when interrupted.
    pub(super) ledger: Option<WireLedger>,
}

/// Why a worker's message cannot be merged.
#[derive(Debug, thiserror::Error)]
pub(super) enum MergeError {
    /// The totals have other steps, invariants or stages than this version knows.
    #[error("totals of another catwar-sim version")]
    Version,
    /// A histogram does not decode.
    #[error(transparent)]
    Histogram(#[from] HistogramError),
    /// A histogram has other bounds than this version's.
    #[error("histogram of another shape")]
    Shape(#[source] AdditionError),
}

impl WireTotals {
    /// The totals of a worker's measurements and the tokens its clients were issued.
    pub(super) fn from_snapshot(
        snapshot: &Snapshot,
        tokens: Vec<TokenPrefix>,
        ledger: Option<WireLedger>,
        interrupted: bool,
    ) -> Self {
        WireTotals {
            interrupted,
            steps: snapshot.steps.iter().map(StepReport::from_totals).collect(),
            invariants: snapshot.invariants.clone(),
            funnel: Stage::ALL
                .iter()
                .map(|&stage| FunnelRow::from_totals(stage, &snapshot.funnel[stage.index()]))
                .collect(),
            load: snapshot.load,
            kill_windows: snapshot.kill_windows.clone(),
            tokens: tokens.into_iter().map(TokenPrefix::to_hex).collect(),
            baseline_rss_kib: snapshot.baseline_rss_kib,
            ledger,
        }
    }

    /// The snapshot these totals were made from; histograms decode exactly.
    pub(super) fn to_snapshot(&self) -> Result<Snapshot, MergeError> {
        if self.steps.len() != Step::ALL.len()
            || self.invariants.len() != Invariant::ALL.len()
            || self.funnel.len() != Stage::ALL.len()
        {
            return Err(MergeError::Version);
        }
        let steps = self
            .steps
            .iter()
            .map(|s| {
                Ok(StepTotals::from_parts(
                    decode_histogram(&s.hist)?,
                    s.count,
                    s.errors,
                    s.errors_by_code.clone(),
                    s.expected_by_code.clone(),
                ))
            })
            .collect::<Result<Vec<_>, MergeError>>()?;
        let funnel = self
            .funnel
            .iter()
            .map(|row| {
                Ok(StageTotals {
                    sessions: row.sessions,
                    clients: row.clients,
                    time_ms: decode_histogram(&row.hist)?,
                })
            })
            .collect::<Result<Vec<_>, MergeError>>()?;
        Ok(Snapshot {
            steps,
            invariants: self.invariants.clone(),
            kill_windows: self.kill_windows.clone(),
            series: Vec::new(),
            funnel,
            load: self.load,
            baseline_rss_kib: self.baseline_rss_kib,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use std::time::{Duration, Instant};

    #[test]
    fn totals_survive_the_wire_exactly() {
        let metrics = Metrics::new(Instant::now());
        let recorder = metrics.recorder(3);
        let t0 = Instant::now();
        for ms in [1, 2, 5, 40, 700] {
            recorder.success(Step::LobbyMe, t0, t0 + Duration::from_millis(ms));
        }
        recorder.failure(Step::Login, "busy");
        recorder.stage_entered(Stage::Play, true);
        recorder.stage_time(Stage::Play, Duration::from_secs(30));
        let snapshot = metrics.snapshot();
        let wire = WireTotals::from_snapshot(&snapshot, Vec::new(), None, false);
        let text = serde_json::to_string(&FromWorker::Done(Box::new(wire))).unwrap();
        let FromWorker::Done(back) = serde_json::from_str(&text).unwrap() else {
            panic!("not a done line");
        };
        let back = back.to_snapshot().unwrap();
        let me = Step::LobbyMe.index();
        assert_eq!(back.steps[me].latency, snapshot.steps[me].latency);
        assert_eq!(back.steps[Step::Login.index()].errors_by_code["busy"], 1);
        assert_eq!(back.funnel[Stage::Play.index()].sessions, 1);
        let play = Stage::Play.index();
        assert_eq!(back.funnel[play].time_ms, snapshot.funnel[play].time_ms);
        assert!(back.funnel[play].time_ms.max().abs_diff(30_000) < 300);
    }

    #[test]
    fn orders_are_one_small_json_value_each() {
        let orders = [
            (
                ToWorker::Kill { at_us: 1_234 },
                r#"{"kill":{"at_us":1234}}"#,
            ),
            (ToWorker::StopArrivals, r#""stop_arrivals""#),
            (ToWorker::Interrupt, r#""interrupt""#),
        ];
        for (order, text) in orders {
            assert_eq!(serde_json::to_string(&order).unwrap(), text);
            assert_eq!(serde_json::from_str::<ToWorker>(text).unwrap(), order);
        }
    }
}
