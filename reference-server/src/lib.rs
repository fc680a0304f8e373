//! The CatWar reference server: every service of the CatWar scenario on one shared mio
//! event loop, and the supervisor that runs them as one OS process each.
//!
//! Module map:
//! - [`event_loop`]: the mio HTTP/1.1 loop every HTTP service runs on (limits, timeouts,
//!   keep-alive, deferred answers through a `Waker`); [`http`]: request and response
//!   values; [`client`]: the blocking client services use to call each other; [`jobs`]:
//!   the bounded job queue and thread pool for slow work.
//! - Services, one file each, named as in the scenario: [`storage`], [`balancer`],
//!   [`balancer_observer`] (heartbeat and epoch rules), [`file_node`].
//! - Running them: [`config`] (the knobs of `up`), [`topology`] (plan and
//!   `topology.json`), [`service`] (start one service in this process), [`supervisor`]
//!   (`up` and `kill`), [`resources`] (resource versions on disk).
#![deny(missing_docs, missing_debug_implementations)]

pub mod balancer;
pub mod balancer_observer;
pub mod client;
pub mod config;
pub mod event_loop;
pub mod file_node;
pub mod http;
pub mod jobs;
pub mod resources;
pub mod service;
pub mod storage;
pub mod supervisor;
pub mod topology;
