//! What CatWar's benchmarks share, and the load tools that need a running topology.
//!
//! `cargo bench` from the workspace root runs the criterion benchmarks under
//! `benches/benches/` (HTTP, login, play, simulator), each with a throughput; `cargo
//! bench -- NAME` runs those whose id contains NAME. The tools under `src/bin/` measure
//! a topology started with `catwar-server up` and have commands of their own (README,
//! "Benchmarks").
//!
//! - [`fixtures`]: a data folder with users and a live session, and the services
//!   started in-process on loopback, as the integration tests start them.
//! - [`raw`]: a blocking HTTP/1.1 client over plain sockets, small enough that the
//!   server's work dominates what a loopback benchmark measures.

#![deny(missing_docs, missing_debug_implementations)]

use std::time::Duration;

use criterion::Criterion;

pub mod fixtures;
pub mod raw;

/// Warm-up per benchmark, seconds: enough for the loops' buffers and the caches to
/// settle, short because a bare `cargo bench` runs every benchmark.
const WARM_UP_S: u64 = 1;
/// Measurement per benchmark, seconds: with about thirty benchmarks this keeps a bare
/// `cargo bench` within a few minutes on two cores, and a sample of a fast path still
/// holds thousands of iterations.
const MEASUREMENT_S: u64 = 2;
/// Samples per benchmark: fewer than criterion's 100, so that benchmarks whose
/// iteration takes milliseconds (a login, a fan-out to 1,000 watchers) still fit in
/// [`MEASUREMENT_S`].
const SAMPLES: usize = 20;

/// Criterion with the short times every CatWar benchmark uses; plots and HTML reports
/// are off (criterion is built without them).
pub fn criterion() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(WARM_UP_S))
        .measurement_time(Duration::from_secs(MEASUREMENT_S))
        .sample_size(SAMPLES)
        .without_plots()
}
