//! The network clients the virtual clients talk through, one per protocol of SPEC §3.
//!
//! - `http`: the hand-written keep-alive HTTP/1.1 client (storage, file nodes, lobby,
//!   router), with a local address per virtual client.
//! - `lines`: the newline-delimited JSON client for play servers and match observers.
//! - `tls`: one-request TLS connections to profile, verified against its certificate,
//!   over the same wire functions as `http`.
//!
//! Architecture invariant: nothing here knows the script, the scenario or the metrics;
//! these modules move bytes and report transport errors by code.

pub(crate) mod http;
pub(crate) mod lines;
pub(crate) mod tls;
