//! `catwar-sim worker`: one worker process of a run with `load.workers` > 1, started by
//! the coordinator (`catwar-sim run`) with its share on the command line.
//!
//! The worker drives its share of the clients through the same code path as a
//! single-process run, sends each second and finally its totals to the coordinator on
//! stdout, and obeys the coordinator's orders from stdin; see `protocol` for the
//! messages.

use super::limits::raise_open_files_limit;
use super::protocol::{FromWorker, ToWorker, WireInterval, WireSecond, WireTotals};
use super::reach::reach;
use super::request_log::{RequestLogOptions, RequestLogWriter};
use super::seconds::SecondSink;
use super::share::{drive_share, Share, ShareRun};
use super::transport::{MessageReader, MessageWriter, TransportError};
use super::{unix_ms, RunError};
use crate::arrivals::Schedule;
use crate::metrics::{IntervalPoint, Metrics};
use crate::report::encode_histogram;
use crate::scenario::{LoadModel, Scenario};
use crate::script::SourcePool;
use hdrhistogram::Histogram;
use std::ffi::OsString;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufRead, AsyncWrite, BufReader};
use tokio::sync::{mpsc, watch};

/// Parts per million in one, for `--request-log-sample-ppm`.
pub(super) const PPM: f64 = 1_000_000.0;
/// An order from the coordinator is a few dozen bytes; anything near this is not one.
const TO_WORKER_BYTES_MAX: usize = 4 * 1024;

/// The command line of `catwar-sim worker`, as the coordinator writes it and the binary
/// parses it.
#[derive(Clone, Debug, PartialEq, Eq, clap::Args)]
pub struct WorkerArgs {
    /// The scenario file.
    pub(super) scenario: PathBuf,
    /// The topology.json of the running topology.
    #[arg(long)]
    pub(super) target: PathBuf,
    /// This worker's number, from 0.
    #[arg(long)]
    pub(super) index: u64,
    /// Workers in the run.
    #[arg(long)]
    pub(super) count: u64,
    /// The shared start, ms since the Unix epoch.
    #[arg(long)]
    pub(super) start_unix_ms: u64,
    /// This host's addresses the clients connect from, in turn; none: each client its
    /// own loopback addresses.
    #[arg(long, value_delimiter = ',')]
    pub(super) source_ips: Vec<IpAddr>,
    /// `run --request-log FILE`: this worker logs its sampled clients to
    /// `FILE.worker-<index>`, which the coordinator gathers into FILE.
    #[arg(long)]
    pub(super) request_log: Option<PathBuf>,
    /// The fraction of clients logged, in parts per million (an integer, so that the
    /// arguments compare exactly).
    #[arg(long, default_value_t = 0)]
    pub(super) request_log_sample_ppm: u32,
}

impl WorkerArgs {
    /// The arguments after `catwar-sim worker` that parse back into these.
    pub(super) fn to_command_line(&self) -> Vec<OsString> {
        let mut line: Vec<OsString> = vec![
            self.scenario.clone().into(),
            "--target".into(),
            self.target.clone().into(),
            "--index".into(),
            self.index.to_string().into(),
            "--count".into(),
            self.count.to_string().into(),
            "--start-unix-ms".into(),
            self.start_unix_ms.to_string().into(),
        ];
        if !self.source_ips.is_empty() {
            let ips: Vec<String> = self.source_ips.iter().map(IpAddr::to_string).collect();
            line.extend(["--source-ips".into(), ips.join(",").into()]);
        }
        if let Some(path) = &self.request_log {
            line.extend([
                "--request-log".into(),
                path.clone().into(),
                "--request-log-sample-ppm".into(),
                self.request_log_sample_ppm.to_string().into(),
            ]);
        }
        line
    }

    /// Where this worker's clients connect from.
    fn sources(&self) -> SourcePool {
        if self.source_ips.is_empty() {
            SourcePool::Loopback
        } else {
            SourcePool::Addresses(self.source_ips.clone())
        }
    }

    fn share(&self) -> Share {
        Share {
            index: self.index,
            count: self.count,
        }
    }
}

/// Runs one worker process: its share of the clients, a `second` message a second and
/// a `done` message at the end on stdout, orders read from stdin.
pub async fn serve(args: &WorkerArgs) -> Result<(), RunError> {
    let orders = MessageReader::new(BufReader::new(tokio::io::stdin()), TO_WORKER_BYTES_MAX);
    serve_share(args, orders, MessageWriter::new(tokio::io::stdout())).await
}

/// Drives the share `args` names, obeying the coordinator's `orders` and sending it each
/// second and the totals through `messages`: a worker process's stdin and stdout, or an
/// agent's TCP connection.
pub(super) async fn serve_share<R, W>(
    args: &WorkerArgs,
    orders: MessageReader<R>,
    messages: MessageWriter<W>,
) -> Result<(), RunError>
where
    R: AsyncBufRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let scenario = Scenario::load(&args.scenario)?;
    let share = args.share();
    if let Some(warning) = raise_open_files_limit(share.part_of(scenario.population.clients)) {
        eprintln!("catwar-sim worker {}: warning: {warning}", share.index);
    }
    let (interrupt_tx, mut interrupt) = watch::channel(false);
    let (stop_arrivals_tx, arrivals_stopped) = watch::channel(false);
    let start = instant_of_unix_ms(args.start_unix_ms);
    let metrics = Metrics::new(start);
    tokio::spawn(obey(
        orders,
        Arc::clone(&metrics),
        interrupt_tx,
        stop_arrivals_tx,
    ));
    let reached = reach(&args.target, &mut interrupt).await?;
    tokio::time::sleep_until(start.into()).await;
    if scenario.load.model == LoadModel::Open {
        let fraction = 1.0 / share.count as f64;
        metrics.set_schedule(Schedule::new(&scenario.load), fraction);
    }
    let (messages_tx, outbox) = mpsc::unbounded_channel();
    let writer = tokio::spawn(write_messages(messages, outbox));
    let sources = args.sources();
    if scenario.script.ip_change > 0.0 && !sources.can_move() {
        return Err(RunError::Scenario(crate::scenario::ScenarioError::Invalid {
            field: "--source-ips".to_string(),
            message: format!(
                "script.ip_change is {} but one source address cannot change: give two or more",
                scenario.script.ip_change
            ),
        }));
    }
    let request_log = match &args.request_log {
        Some(path) => {
            let options = RequestLogOptions {
                path: path.clone(),
                sample: f64::from(args.request_log_sample_ppm) / PPM,
            };
            let path = options.for_worker(share.index);
            let seed = scenario.scenario.seed;
            Some((
                RequestLogWriter::start(&path, options.sample, seed, &metrics)?,
                path,
            ))
        }
        None => None,
    };
    let clients = ShareRun {
        scenario: &scenario,
        share,
        sources,
        metrics: &metrics,
    };
    // Nothing else in a worker waits for its clients to be done.
    let (clients_done, _) = watch::channel(false);
    let end = drive_share(
        clients,
        reached,
        ToCoordinator(messages_tx),
        &clients_done,
        &mut interrupt,
        arrivals_stopped,
    )
    .await;
    if let Some((writer, path)) = request_log {
        let written = writer.finish()?;
        eprintln!(
            "catwar-sim worker {}: request log: {} lines in {}, {} dropped (the writer fell behind)",
            share.index,
            written.lines,
            path.display(),
            written.dropped
        );
    }
    // The coordinator reads the user DB, which a worker on another host cannot.
    let ledger = end.ledger.map(|ledger| ledger.to_wire(Instant::now()));
    let totals = WireTotals::from_snapshot(
        &metrics.snapshot(),
        metrics.token_prefixes(),
        ledger,
        end.interrupted,
    );
    let _ = end.seconds.0.send(FromWorker::Done(Box::new(totals)));
    drop(end.seconds);
    writer.await.expect("the writer does not panic");
    Ok(())
}

/// The `Instant` of a wall-clock time, in the past or the future.
fn instant_of_unix_ms(at_unix_ms: u64) -> Instant {
    let now_ms = unix_ms();
    let now = Instant::now();
    if at_unix_ms >= now_ms {
        now + Duration::from_millis(at_unix_ms - now_ms)
    } else {
        now.checked_sub(Duration::from_millis(now_ms - at_unix_ms))
            .unwrap_or(now)
    }
}

/// Carries out the coordinator's orders until it says to stop or is gone.
async fn obey<R: AsyncBufRead + Unpin>(
    mut orders: MessageReader<R>,
    metrics: Arc<Metrics>,
    interrupt: watch::Sender<bool>,
    stop_arrivals: watch::Sender<bool>,
) {
    loop {
        match orders.recv::<ToWorker>().await {
            Ok(Some(ToWorker::Kill { at_us })) => metrics.mark_kill_at_us(at_us),
            Ok(Some(ToWorker::StopArrivals)) => {
                let _ = stop_arrivals.send(true);
            }
            Ok(Some(ToWorker::Interrupt)) | Ok(None) => break,
            // An order this version does not know (from a newer coordinator) is skipped.
            Err(e @ TransportError::Parse(_)) => {
                eprintln!(
                    "catwar-sim worker: ignored order: {}",
                    crate::error_chain(&e)
                );
            }
            Err(e) => {
                eprintln!("catwar-sim worker: orders: {}", crate::error_chain(&e));
                break;
            }
        }
    }
    // Told to, or the coordinator is gone: either way the run is over.
    let _ = interrupt.send(true);
}

/// Each closed second goes to the coordinator, histograms included.
struct ToCoordinator(mpsc::UnboundedSender<FromWorker>);

impl SecondSink for ToCoordinator {
    fn second(&mut self, point: IntervalPoint, histograms: Vec<Histogram<u64>>) -> bool {
        let steps = point
            .steps
            .iter()
            .zip(&histograms)
            .zip(point.errors_by_code)
            .map(|((step, hist), errors_by_code)| WireInterval {
                requests: step.requests,
                errors: step.errors,
                hist: (!hist.is_empty()).then(|| encode_histogram(hist)),
                errors_by_code,
            })
            .collect();
        let second = WireSecond {
            t_s: point.t_s,
            steps,
            load: point.load,
        };
        self.0.send(FromWorker::Second(second)).is_ok()
    }
}

/// Writes the messages in order.
async fn write_messages<W: AsyncWrite + Unpin>(
    mut writer: MessageWriter<W>,
    mut messages: mpsc::UnboundedReceiver<FromWorker>,
) {
    while let Some(message) = messages.recv().await {
        // A coordinator that stopped reading is gone; the worker ends with its clients.
        if writer.send(&message).await.is_err() {
            return;
        }
    }
    let _ = writer.flush().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Probe {
        #[command(flatten)]
        args: WorkerArgs,
    }

    #[test]
    fn the_command_line_parses_back_into_the_same_arguments() {
        let args = WorkerArgs {
            scenario: PathBuf::from("scenarios/smoke.toml"),
            target: PathBuf::from("/tmp/catwar/topology.json"),
            index: 2,
            count: 3,
            start_unix_ms: 1_700_000_000_000,
            source_ips: Vec::new(),
            request_log: None,
            request_log_sample_ppm: 0,
        };
        let line = std::iter::once(OsString::from("probe")).chain(args.to_command_line());
        assert_eq!(Probe::try_parse_from(line).unwrap().args, args);
        let pooled = WorkerArgs {
            source_ips: vec!["10.0.0.5".parse().unwrap(), "::1".parse().unwrap()],
            request_log: Some(PathBuf::from("/tmp/requests.jsonl")),
            request_log_sample_ppm: 10_000,
            ..args
        };
        let line = std::iter::once(OsString::from("probe")).chain(pooled.to_command_line());
        assert_eq!(Probe::try_parse_from(line).unwrap().args, pooled);
    }
}
