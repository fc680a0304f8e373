//! The CatWar reference server: every service of the CatWar scenario on one shared mio
//! event loop, and the supervisor that runs them as one OS process each.
//!
//! Module map, in layers; a module uses only its own layer's lower modules and the
//! layers below it (`python3 ci/module-cycles.py reference-server/src` checks that no
//! two modules import each other, and ARCHITECTURE.md draws the map):
//! - [`config`]: every knob of `up` and its default (a leaf: anyone may read it).
//! - [`runtime`]: infrastructure that knows no CatWar rule: the mio HTTP event loop,
//!   request and response values, the blocking client, the job pool, and the handle of
//!   a running service.
//! - [`domain`]: the rules the services share: the SQLite user DB, users and argon2id,
//!   tokens, tickets, the TLS identity, the internal key, the session rule, and the
//!   resource versions on disk.
//! - [`services`]: one module per service of the scenario: storage, balancer,
//!   balancer observer, file node, profile, lobby, play, router, observer.
//! - [`compose`]: running them: the plan and `topology.json`, starting one service in
//!   this process, and the supervisor behind `up` and `kill`.
#![deny(missing_docs, missing_debug_implementations)]

pub mod compose;
pub mod config;
pub mod domain;
pub mod runtime;
pub mod services;
