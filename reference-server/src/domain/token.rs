//! Session tokens: `sha256(id ‖ 32 random bytes from the OS ‖ server salt)` as 64 hex
//! digits (256 bits). The DB and the lobby's cache keep only `sha256(token)`, so a leaked
//! DB does not hand out live tokens.

use rand::TryRngCore;
use sha2::{Digest, Sha256};

/// Hex digits in a token.
pub const TOKEN_HEX_LEN: usize = 64;
/// Random bytes per token, drawn from the OS CSPRNG.
const TOKEN_RANDOM_BYTES: usize = 32;

/// The OS random source failed; no token can be made safely.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("OS random source: {0}")]
pub struct RandomUnavailable(pub String);

/// A new token for `user_id`.
pub fn new_token(user_id: &str, server_salt: &[u8]) -> Result<String, RandomUnavailable> {
    let mut random = [0u8; TOKEN_RANDOM_BYTES];
    rand::rngs::OsRng
        .try_fill_bytes(&mut random)
        .map_err(|e| RandomUnavailable(e.to_string()))?;
    Ok(derive(user_id, &random, server_salt))
}

/// The token for given inputs; separated from [`new_token`] so tests can check it.
fn derive(user_id: &str, random: &[u8], server_salt: &[u8]) -> String {
    let mut h = Sha256::new();
    // The length prefix keeps ("ab", r) and ("a", "b" ‖ r) apart.
    h.update((user_id.len() as u64).to_be_bytes());
    h.update(user_id.as_bytes());
    h.update(random);
    h.update(server_salt);
    hex(&h.finalize())
}

/// The key under which a token's session is stored.
pub fn token_hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// True for 64 lower-case hex digits; anything else is refused before any lookup.
pub fn well_formed(token: &str) -> bool {
    token.len() == TOKEN_HEX_LEN
        && token
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Compares in time independent of where the inputs differ.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

/// Fresh random bytes as hex, for server salts and keys.
pub fn random_hex(bytes: usize) -> Result<String, RandomUnavailable> {
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng
        .try_fill_bytes(&mut buf)
        .map_err(|e| RandomUnavailable(e.to_string()))?;
    Ok(hex(&buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    proptest! {
        #[test]
        fn tokens_are_well_formed_for_any_id(id in "\\PC{0,80}", salt in proptest::collection::vec(any::<u8>(), 0..64)) {
            let token = new_token(&id, &salt).unwrap();
            prop_assert!(well_formed(&token));
            prop_assert!(well_formed(&token_hash(&token)));
        }

        #[test]
        fn derivation_separates_ids_and_randomness(a in "[a-z]{1,8}", b in "[a-z]{1,8}", r in proptest::collection::vec(any::<u8>(), 32)) {
            prop_assume!(a != b);
            prop_assert_ne!(derive(&a, &r, b"s"), derive(&b, &r, b"s"));
        }

        #[test]
        fn ct_eq_agrees_with_eq(a in proptest::collection::vec(any::<u8>(), 0..40), b in proptest::collection::vec(any::<u8>(), 0..40)) {
            prop_assert_eq!(ct_eq(&a, &b), a == b);
        }
    }

    #[test]
    fn many_tokens_for_one_user_are_distinct() {
        let tokens: HashSet<String> = (0..20_000)
            .map(|_| new_token("user1", b"salt").unwrap())
            .collect();
        assert_eq!(tokens.len(), 20_000);
    }

    #[test]
    fn malformed_tokens_are_refused() {
        for bad in [
            "",
            "abc",
            &"A".repeat(64),
            &"g".repeat(64),
            &"0".repeat(63),
            &"0".repeat(65),
        ] {
            assert!(!well_formed(bad), "{bad:?}");
        }
    }
}
