//! Entry points for the benchmarks under `benches/` (not a public API): the simulator's
//! hot paths, reachable without a run.

pub use crate::arrivals::Arrivals;
pub use crate::metrics::{Metrics, Recorder, Snapshot};
pub use crate::net::http::{HttpClient, Request};
pub use crate::step::Step;
