//! The CatWar reference server: every service of the CatWar scenario on one shared mio
//! event loop, and the supervisor that runs them as one OS process each.
//!
//! Module map:
//! - [`event_loop`]: the mio HTTP/1.1 loop every HTTP service runs on (limits, timeouts,
//!   keep-alive, deferred answers through a `Waker`); [`http`]: request and response
//!   values; [`client`]: the blocking client services use to call each other; [`jobs`]:
//!   the bounded job queue and thread pool for slow work.
//! - Services, one file (or folder) each, named as in the scenario: [`storage`],
//!   [`balancer`], [`balancer_observer`] (heartbeat and epoch rules), [`file_node`],
//!   [`profile`] (TLS login), [`lobby`] (sessions, user data, ranking, routing),
//!   [`play`] (match loop, results), [`router`], [`observer`] (relay and spawners).
//! - Their shared parts: [`db`] (SQLite user DB), [`users`] (argon2id, `users seed`),
//!   [`token`] (session tokens), [`ticket`] (play tickets), [`tls`] (certificate).
//! - Running them: [`config`] (the knobs of `up`), [`topology`] (plan and
//!   `topology.json`), [`service`] (start one service in this process), [`supervisor`]
//!   (`up` and `kill`), [`resources`] (resource versions on disk).
#![deny(missing_docs, missing_debug_implementations)]

pub mod balancer;
pub mod balancer_observer;
pub mod client;
pub mod config;
pub mod db;
pub mod event_loop;
pub mod file_node;
pub mod http;
pub mod jobs;
pub mod lobby;
pub mod observer;
pub mod play;
pub mod profile;
pub mod resources;
pub mod router;
pub mod service;
pub mod storage;
pub mod supervisor;
pub mod ticket;
pub mod tls;
pub mod token;
pub mod topology;
pub mod users;
