//! The internal key: a shared secret in the user DB that services present to each other
//! on internal calls (revocation and results notices to the lobby, observer requests and
//! subscriptions at play servers). Clients never see it.

use std::fmt;

use crate::domain::db::{self, DbError, DbPool};
use crate::domain::token::ct_eq;

/// The HTTP header that carries the key on calls between services.
pub const INTERNAL_KEY_HEADER: &str = "x-catwar-internal";
/// The meta row of the user DB that holds the key.
pub const INTERNAL_KEY_META: &str = "internal_key";

/// The key; its `Debug` shows nothing of it, so it never reaches a log.
#[derive(Clone, PartialEq, Eq)]
pub struct InternalKey(String);

impl fmt::Debug for InternalKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InternalKey(..)")
    }
}

impl InternalKey {
    /// The topology's key, created by whichever service asks first.
    pub fn load_or_create(db: &DbPool) -> Result<InternalKey, DbError> {
        db.secret(INTERNAL_KEY_META).map(InternalKey)
    }

    /// The key if a service of the topology already created it (observers only read).
    pub fn load(db: &DbPool) -> Result<Option<InternalKey>, DbError> {
        Ok(db
            .with(|c| db::meta(c, INTERNAL_KEY_META))?
            .map(InternalKey))
    }

    /// Whether a presented key is this one, compared in constant time.
    pub fn matches(&self, presented: &str) -> bool {
        ct_eq(presented.as_bytes(), self.0.as_bytes())
    }

    /// The key, to present on a call.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
