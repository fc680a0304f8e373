//! Every token issued during a run, for the `tokens.unique` invariant.
//!
//! Profile issues tokens of 64 hex digits (256 bits). The set keeps only the first 128
//! bits of each: two distinct random tokens share a 128-bit prefix with probability
//! 2^-128 per pair, so a shared prefix is a duplicate for every practical purpose, at 16
//! bytes a token instead of 64. Memory still grows with the number of logins, about 40
//! bytes per token with the hash table's overhead: 40 MB per million logins and refreshes.
//!
//! The set is sharded by the prefix's own (random) low bits, so concurrent clients on
//! several threads rarely wait on the same lock.

use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard};

/// The length of a token in hex digits, as profile issues them (256 bits).
pub const TOKEN_HEX_DIGITS: usize = 64;
/// The part of a token kept in the set: 128 bits, see the module comment.
const PREFIX_HEX_DIGITS: usize = 32;
/// Enough shards that a few dozen worker threads rarely collide.
const TOKEN_SHARDS: usize = 16;

/// The first 128 bits of a well-formed token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TokenPrefix(u128);

impl TokenPrefix {
    /// The prefix of `token`, or `None` unless it is exactly [`TOKEN_HEX_DIGITS`] hex
    /// digits (either case).
    pub fn of(token: &str) -> Option<TokenPrefix> {
        if token.len() != TOKEN_HEX_DIGITS || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u128::from_str_radix(&token[..PREFIX_HEX_DIGITS], 16)
            .ok()
            .map(TokenPrefix)
    }

    /// The prefix as 32 hex digits, as a worker process sends it to its coordinator.
    pub fn to_hex(self) -> String {
        format!("{:032x}", self.0)
    }

    /// Reads [`TokenPrefix::to_hex`] back.
    pub fn from_hex(text: &str) -> Option<TokenPrefix> {
        if text.len() != PREFIX_HEX_DIGITS || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u128::from_str_radix(text, 16).ok().map(TokenPrefix)
    }

    fn shard(self) -> usize {
        (self.0 % TOKEN_SHARDS as u128) as usize
    }
}

/// The prefixes of every token seen so far, across all clients.
#[derive(Debug)]
pub struct TokenSet {
    shards: Vec<Mutex<HashSet<TokenPrefix>>>,
}

impl Default for TokenSet {
    fn default() -> TokenSet {
        TokenSet {
            shards: (0..TOKEN_SHARDS)
                .map(|_| Mutex::new(HashSet::new()))
                .collect(),
        }
    }
}

impl TokenSet {
    /// Adds a newly issued token; false if an equal one was issued before.
    pub fn insert(&self, prefix: TokenPrefix) -> bool {
        lock(&self.shards[prefix.shard()]).insert(prefix)
    }

    /// Every prefix seen, in no particular order.
    pub fn prefixes(&self) -> Vec<TokenPrefix> {
        self.shards
            .iter()
            .flat_map(|shard| lock(shard).iter().copied().collect::<Vec<_>>())
            .collect()
    }
}

/// Locks a shard even if a client task panicked while holding it: the set only grows,
/// and every insert leaves it consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn only_64_hex_digits_are_tokens() {
        assert!(TokenPrefix::of(TOKEN).is_some());
        assert_eq!(
            TokenPrefix::of(TOKEN),
            TokenPrefix::of(&TOKEN.to_ascii_uppercase())
        );
        assert_eq!(TokenPrefix::of(&TOKEN[1..]), None);
        assert_eq!(TokenPrefix::of(&format!("{TOKEN}0")), None);
        assert_eq!(TokenPrefix::of(&TOKEN.replace('a', "g")), None);
        assert_eq!(TokenPrefix::of(""), None);
    }

    #[test]
    fn duplicates_are_found_by_their_128_bit_prefix() {
        let set = TokenSet::default();
        assert!(set.prefixes().is_empty());
        assert!(set.insert(TokenPrefix::of(TOKEN).unwrap()));
        // Same first half, different second half: counted as the same token.
        let same_prefix = format!("{}{}", &TOKEN[..32], "f".repeat(32));
        assert!(!set.insert(TokenPrefix::of(&same_prefix).unwrap()));
        let other = format!("{}{}", "f".repeat(32), &TOKEN[32..]);
        assert!(set.insert(TokenPrefix::of(&other).unwrap()));
        assert_eq!(set.prefixes().len(), 2);
    }
}
