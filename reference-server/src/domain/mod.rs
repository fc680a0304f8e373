//! The rules every service shares, each in one place: the user DB, users and their
//! passwords, session tokens and the session rule, play tickets, the TLS identity, the
//! internal key, and the resource versions on disk.
//!
//! Architecture invariant: `domain` uses only `runtime` and `config`; no service's
//! constant or type lives here because another service happened to need it first.

pub mod db;
pub mod internal_key;
pub mod public_addrs;
pub mod resources;
pub mod session;
pub mod ticket;
pub mod tls;
pub mod token;
pub mod users;
