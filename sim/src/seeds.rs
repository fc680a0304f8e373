//! Every random stream of a run, derived from the scenario seed.
//!
//! Each virtual client draws from a stream of its own, seeded from the scenario seed and
//! its id, so a run is reproducible and one client can be replayed alone; the open
//! model's arrival times come from one more stream that no client can share. A worker
//! process derives the same seeds as a single process would.

/// The stream of the arrivals: the largest id, which no client can have (clients are
/// numbered from 0 and bounded far below it).
const ARRIVALS_STREAM_ID: u64 = u64::MAX;

/// The seed of client `client_id`'s random stream: a splitmix64 mix of the scenario
/// seed and the client id, so neighbouring ids get unrelated streams.
pub(crate) fn client_seed(seed: u64, client_id: u64) -> u64 {
    splitmix64(splitmix64(seed) ^ client_id)
}

/// The seed of the open model's arrival times under the scenario `seed`.
pub(crate) fn arrivals_seed(seed: u64) -> u64 {
    client_seed(seed, ARRIVALS_STREAM_ID)
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_seeds_are_reproducible_and_distinct() {
        assert_eq!(client_seed(42, 7), client_seed(42, 7));
        let seeds: std::collections::HashSet<u64> =
            (0..10_000).map(|id| client_seed(42, id)).collect();
        assert_eq!(seeds.len(), 10_000);
        assert_ne!(client_seed(42, 0), client_seed(43, 0));
    }
}
