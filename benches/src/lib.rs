//! CatWar's benchmarks live under `benches/`; this library is empty so that they can be
//! a package of their own that depends on both crates.
