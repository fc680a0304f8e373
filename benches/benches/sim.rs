//! The simulator's own costs: its HTTP client's cost per request against an in-process
//! lobby, a latency recorded into its HDR histograms and a worker's totals merged into
//! the coordinator's, the open model's arrival times, and a scenario parsed.

use std::path::Path;
use std::time::{Duration, Instant};

use catwar_benches::fixtures::Data;
use catwar_sim::benching::{Arrivals, HttpClient, Metrics, Request, Step};
use catwar_sim::scenario::Scenario;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// Distinct latencies recorded in turn, from 50 µs to about 50 ms, so the recording
/// touches buckets across the histogram as a run does.
const LATENCIES: u64 = 1000;
/// Latencies a worker recorded per step before its totals are merged: a busy second.
const WORKER_SAMPLES_PER_STEP: u64 = 10_000;
/// Arrival times drawn per iteration: the first minutes of a soak run.
const ARRIVALS: usize = 10_000;

fn scenario_text(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `GET /v1/me` with the simulator's keep-alive client, one request at a time, on a
/// current-thread runtime as each of its workers runs.
fn http_client(c: &mut Criterion) {
    let data = Data::new(1);
    let token = data.session("user1");
    let lobby = data.start_lobby();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let mut client = HttpClient::new(None);
    let request = Request::get("/v1/me").bearer(&token);
    let mut group = c.benchmark_group("sim_http_client");
    group.throughput(Throughput::Elements(1));
    group.bench_function("lobby_me", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    let response = client.send(lobby.addr(), &request).await;
                    assert_eq!(response.expect("an answer").status, 200);
                }
                started.elapsed()
            })
        })
    });
    group.finish();
    lobby.shutdown().expect("the lobby stops");
}

fn latency(i: u64) -> Duration {
    Duration::from_micros(50 + i * i * 50 / LATENCIES)
}

/// A latency into the exact histograms (a request's success), and a worker's totals for
/// every step merged into the coordinator's.
fn hdr(c: &mut Criterion) {
    let start = Instant::now();
    let metrics = Metrics::new(start);
    let recorder = metrics.recorder(1);
    let mut group = c.benchmark_group("sim_hdr");
    group.throughput(Throughput::Elements(1));
    let mut i = 0;
    group.bench_function("record", |b| {
        b.iter(|| {
            i = (i + 1) % LATENCIES;
            recorder.success(Step::LobbyMe, start, start + latency(i));
        })
    });
    let worker = Metrics::new(start);
    let recorder = worker.recorder(1);
    for step in Step::ALL {
        for i in 0..WORKER_SAMPLES_PER_STEP {
            recorder.success(step, start, start + latency(i % LATENCIES));
        }
    }
    let snapshot = worker.snapshot();
    group.throughput(Throughput::Elements(Step::ALL.len() as u64));
    group.bench_function("merge_worker_steps", |b| {
        b.iter(|| metrics.absorb(&snapshot))
    });
    group.finish();
}

fn arrivals(c: &mut Criterion) {
    let scenario = Scenario::parse(&scenario_text("soak.toml")).expect("the soak scenario");
    let mut group = c.benchmark_group("sim_arrivals");
    group.throughput(Throughput::Elements(ARRIVALS as u64));
    group.bench_function("soak_poisson", |b| {
        b.iter(|| {
            Arrivals::new(&scenario.load, scenario.scenario.seed)
                .take(ARRIVALS)
                .count()
        })
    });
    group.finish();
}

fn scenario_parse(c: &mut Criterion) {
    let text = scenario_text("smoke.toml");
    let mut group = c.benchmark_group("sim_scenario");
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.bench_function("parse_smoke", |b| {
        b.iter(|| Scenario::parse(&text).expect("the smoke scenario"))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = catwar_benches::criterion();
    targets = http_client, hdr, arrivals, scenario_parse
}
criterion_main!(benches);
