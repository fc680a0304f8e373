//! The services of the CatWar scenario, one module each, named as in the scenario.
//!
//! Architecture invariant: a service uses `runtime`, `domain` and `config`; of the other
//! services only the balancer's standby rules (`balancer_observer`) and the match
//! observer (which play servers start) are used by a sibling, and never in a circle.

pub mod balancer;
pub mod balancer_observer;
pub mod file_node;
pub mod lobby;
pub mod observer;
pub mod play;
pub mod profile;
pub mod router;
pub mod storage;

use crate::domain::db::DbError;
use crate::domain::tls::TlsError;
use crate::domain::token::RandomUnavailable;
use crate::domain::users::UsersError;

/// Why a service's own setup failed (its DB, TLS identity, threads or sockets).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// Sockets or threads.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The user DB.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The TLS identity.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Hashing the dummy password.
    #[error(transparent)]
    Users(#[from] UsersError),
    /// The OS random source.
    #[error(transparent)]
    Random(#[from] RandomUnavailable),
}
