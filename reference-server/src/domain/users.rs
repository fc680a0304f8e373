//! Users: argon2id password hashes and the `users seed` / `users add` commands.
//!
//! `seed` creates `user1…userN` with password `pw-<id>` (documented test credentials) and
//! hashes on every core, so 100k users with the `fast` preset take seconds.

use std::path::Path;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::TryRngCore;
use rusqlite::params;

use crate::config::Argon2Preset;
use crate::domain::db::{self, DbError};

/// The meta key recording the preset of the latest seed or add, shown by `up`.
pub const ARGON2_META_KEY: &str = "argon2_preset";
/// OWASP's argon2id recommendation: 19 MiB of memory, two passes, one lane.
const OWASP_M_KIB: u32 = 19 * 1024;
const OWASP_T: u32 = 2;
/// The cheap preset for large simulated populations: 64 KiB, one pass. Reports name it.
const FAST_M_KIB: u32 = 64;
const FAST_T: u32 = 1;
/// Longest user id; ids are short handles.
pub const USER_ID_BYTES_MAX: usize = 64;
/// Longest password accepted, so a huge body cannot make hashing expensive.
pub const PASSWORD_BYTES_MAX: usize = 1024;
/// Most users one `seed` creates.
pub const SEED_COUNT_MAX: u64 = 10_000_000;
/// Users inserted per transaction while seeding.
const SEED_BATCH: usize = 10_000;

/// Why a user command failed.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    /// The DB failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// An argument is invalid; the string names it.
    #[error("{0}")]
    Invalid(String),
    /// Hashing failed (bad parameters).
    #[error("argon2: {0}")]
    Hash(String),
}

/// The argon2id hasher of a preset.
pub fn hasher(preset: Argon2Preset) -> Argon2<'static> {
    let (m, t) = match preset {
        Argon2Preset::Owasp => (OWASP_M_KIB, OWASP_T),
        Argon2Preset::Fast => (FAST_M_KIB, FAST_T),
    };
    let params = Params::new(m, t, 1, None).expect("preset parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// The preset's name as stored and reported; [`Argon2Preset::parse`] reads it back.
pub fn preset_name(preset: Argon2Preset) -> &'static str {
    preset.as_str()
}

/// Hashes a password into a PHC string with a fresh random salt.
pub fn hash_password(argon: &Argon2<'_>, password: &str) -> Result<String, UsersError> {
    let mut salt = [0u8; 16];
    rand::rngs::OsRng
        .try_fill_bytes(&mut salt)
        .map_err(|e| UsersError::Hash(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| UsersError::Hash(e.to_string()))?;
    argon
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| UsersError::Hash(e.to_string()))
}

/// Checks a password against a PHC string; its parameters come from the string itself.
pub fn verify_password(phc: &str, password: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// A user id: 1–64 ASCII letters, digits, `_`, `-`, `.` or `@`. Anything else (quotes,
/// semicolons, spaces) is refused before it reaches SQL, though every query binds it.
pub fn valid_user_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= USER_ID_BYTES_MAX
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.@".contains(&b))
}

/// The documented test password of a seeded user.
pub fn seed_password(id: &str) -> String {
    format!("pw-{id}")
}

/// A seeded user's starting rating: spread over 800..1200 by its number, so rankings
/// are not one long tie.
fn seed_rating(n: u64) -> i64 {
    800 + ((n.wrapping_mul(2_654_435_761)) % 401) as i64
}

/// What one `seed` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seeded {
    /// Users created.
    pub added: u64,
    /// The preset their passwords were hashed with.
    pub preset: Argon2Preset,
}

/// Creates `user1…user<count>` that do not exist yet, hashing only theirs: existing users
/// keep their hashes. Without a `preset`, the one the DB recorded at its last seed or add
/// is used (so one new user on a `fast` DB is `fast` too), and owasp on a new DB.
pub fn seed(
    data_dir: &Path,
    count: u64,
    preset: Option<Argon2Preset>,
) -> Result<Seeded, UsersError> {
    if count == 0 || count > SEED_COUNT_MAX {
        return Err(UsersError::Invalid(format!(
            "--count: must be between 1 and {SEED_COUNT_MAX}"
        )));
    }
    std::fs::create_dir_all(data_dir)
        .map_err(|e| UsersError::Invalid(format!("--data {}: {e}", data_dir.display())))?;
    let path = data_dir.join(db::DB_FILE);
    let mut conn = db::open(&path)?;
    let err = |source| {
        UsersError::Db(DbError {
            path: path.clone(),
            source,
        })
    };
    let preset = match preset {
        Some(preset) => preset,
        None => recorded_preset(&conn)
            .map_err(err)?
            .unwrap_or(Argon2Preset::Owasp),
    };
    let argon = hasher(preset);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut added = 0u64;
    let mut next = 1u64;
    while next <= count {
        let range = next..=count.min(next + SEED_BATCH as u64 - 1);
        next = range.end() + 1;
        let missing = missing_users(&conn, range).map_err(err)?;
        if missing.is_empty() {
            continue;
        }
        let hashed = hash_in_parallel(&argon, &missing, threads)?;
        let tx = conn.transaction().map_err(err)?;
        {
            let mut stmt = tx
                .prepare_cached("INSERT OR IGNORE INTO users (id, phc, level, xp, rating) VALUES (?1, ?2, 1, 0, ?3)")
                .map_err(err)?;
            for (n, (id, phc)) in missing.iter().zip(hashed) {
                added += stmt
                    .execute(params![id, phc, seed_rating(*n)])
                    .map_err(err)? as u64;
            }
        }
        db::set_meta(&tx, ARGON2_META_KEY, preset_name(preset)).map_err(err)?;
        tx.commit().map_err(err)?;
    }
    Ok(Seeded { added, preset })
}

/// The preset the DB recorded at its last seed or add, if any it can name.
fn recorded_preset(conn: &rusqlite::Connection) -> rusqlite::Result<Option<Argon2Preset>> {
    Ok(db::meta(conn, ARGON2_META_KEY)?.and_then(|name| Argon2Preset::parse(&name)))
}

/// The numbers in `range` whose `user<n>` does not exist yet.
fn missing_users(
    conn: &rusqlite::Connection,
    range: std::ops::RangeInclusive<u64>,
) -> rusqlite::Result<Vec<u64>> {
    let mut stmt = conn.prepare_cached("SELECT 1 FROM users WHERE id = ?1")?;
    let mut missing = Vec::new();
    for n in range {
        if !stmt.exists(params![format!("user{n}")])? {
            missing.push(n);
        }
    }
    Ok(missing)
}

fn hash_in_parallel(
    argon: &Argon2<'_>,
    numbers: &[u64],
    threads: usize,
) -> Result<Vec<(String, String)>, UsersError> {
    let chunk = numbers.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = numbers
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|n| {
                            let id = format!("user{n}");
                            hash_password(argon, &seed_password(&id)).map(|phc| (id, phc))
                        })
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        let mut all = Vec::with_capacity(numbers.len());
        for worker in workers {
            all.extend(worker.join().expect("hashing thread")?);
        }
        Ok(all)
    })
}

/// Creates or replaces one user's password; the user keeps its stats.
pub fn add(
    data_dir: &Path,
    id: &str,
    password: &str,
    preset: Argon2Preset,
) -> Result<(), UsersError> {
    if !valid_user_id(id) {
        return Err(UsersError::Invalid(format!(
            "ID: {id:?} must be 1-{USER_ID_BYTES_MAX} letters, digits, '_', '-', '.' or '@'"
        )));
    }
    if password.is_empty() || password.len() > PASSWORD_BYTES_MAX {
        return Err(UsersError::Invalid(format!(
            "password (stdin): must be 1-{PASSWORD_BYTES_MAX} bytes"
        )));
    }
    std::fs::create_dir_all(data_dir)
        .map_err(|e| UsersError::Invalid(format!("--data {}: {e}", data_dir.display())))?;
    let path = data_dir.join(db::DB_FILE);
    let conn = db::open(&path)?;
    let phc = hash_password(&hasher(preset), password)?;
    let err = |source| {
        UsersError::Db(DbError {
            path: path.clone(),
            source,
        })
    };
    conn.execute(
        "INSERT INTO users (id, phc) VALUES (?1, ?2) ON CONFLICT(id) DO UPDATE SET phc = ?2",
        params![id, phc],
    )
    .map_err(err)?;
    db::set_meta(&conn, ARGON2_META_KEY, preset_name(preset)).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_carry_their_parameters() {
        let phc = hash_password(&hasher(Argon2Preset::Fast), "pw-user1").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{phc}");
        assert!(verify_password(&phc, "pw-user1"));
        assert!(!verify_password(&phc, "pw-user2"));
        assert!(!verify_password("not a phc", "x"));
        let owasp = hash_password(&hasher(Argon2Preset::Owasp), "x").unwrap();
        assert!(owasp.contains("m=19456,t=2,p=1"), "{owasp}");
    }

    #[test]
    fn seed_is_idempotent_and_records_the_preset() {
        let dir = tempfile::tempdir().unwrap();
        let fast = Some(Argon2Preset::Fast);
        assert_eq!(seed(dir.path(), 25, fast).unwrap().added, 25);
        let conn = db::open(&dir.path().join(db::DB_FILE)).unwrap();
        let before = db::user_phc(&conn, "user7").unwrap().unwrap();
        // No preset given: the DB's recorded one, and existing users are not re-hashed.
        let again = seed(dir.path(), 30, None).unwrap();
        assert_eq!(
            again,
            Seeded {
                added: 5,
                preset: Argon2Preset::Fast
            }
        );
        assert_eq!(db::user_phc(&conn, "user7").unwrap().unwrap(), before);
        let phc = db::user_phc(&conn, "user30").unwrap().unwrap();
        assert!(verify_password(&phc, "pw-user30"));
        assert!(phc.contains("m=64,t=1"), "{phc}");
        assert_eq!(
            db::meta(&conn, ARGON2_META_KEY).unwrap().as_deref(),
            Some("fast")
        );
        let ranking = db::ranking(&conn).unwrap();
        assert_eq!(ranking.len(), 30);
        assert!(ranking.windows(2).all(|w| w[0].1 >= w[1].1));
    }

    #[test]
    fn a_new_db_is_seeded_with_owasp_unless_told() {
        let dir = tempfile::tempdir().unwrap();
        let seeded = seed(dir.path(), 1, None).unwrap();
        assert_eq!(
            seeded,
            Seeded {
                added: 1,
                preset: Argon2Preset::Owasp
            }
        );
    }

    #[test]
    fn ids_with_sql_metacharacters_are_refused() {
        assert!(valid_user_id("user1"));
        assert!(valid_user_id("cat.war-1@x"));
        for bad in [
            "",
            "a b",
            "x'; DROP TABLE users; --",
            "\"",
            "é",
            &"a".repeat(65),
        ] {
            assert!(!valid_user_id(bad), "{bad:?}");
        }
    }
}
