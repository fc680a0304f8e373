//! Infrastructure: nothing here knows a CatWar rule, so every service can stand on it.
//!
//! Architecture invariant: no module of `runtime` names `domain`, `services` or
//! `compose`.

pub mod admin;
pub mod client;
pub mod event_loop;
pub mod http;
pub mod jobs;
pub mod metrics;
pub mod running;
