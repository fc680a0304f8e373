//! Play tickets: what the lobby's `/v1/start` hands a player to join a match.
//!
//! A ticket is `match:expires_ms:nonce:user:mac`, where `mac` is HMAC-SHA256 over the
//! other fields and the play server's address, keyed with a secret the services share
//! through the user DB. A ticket is thereby bound to one user, one match and one play
//! server, and expires; the play server makes it single-use by remembering its nonce
//! until it expires.

use std::net::SocketAddr;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::domain::token::{ct_eq, hex, random_hex};

/// How long a ticket is valid: time to connect to the play server and join.
pub const TICKET_TTL_MS: i64 = 60_000;
/// The meta key of the ticket secret.
pub const TICKET_KEY_META: &str = "ticket_key";
/// Longest ticket accepted, so a forged giant string costs nothing to refuse.
pub const TICKET_BYTES_MAX: usize = 256;

/// What a valid ticket grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The match to join.
    pub match_id: u64,
    /// The user it was issued to.
    pub user: String,
    /// Unique per ticket; the play server refuses a nonce it has seen.
    pub nonce: String,
    /// When it stops being valid (ms since the Unix epoch).
    pub expires_ms: i64,
}

/// Why a ticket was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    /// Not in the ticket format.
    #[error("ticket: malformed")]
    Malformed,
    /// The MAC does not match: forged, altered, or for another play server.
    #[error("ticket: not issued for this play server")]
    Forged,
    /// Past its expiry.
    #[error("ticket: expired")]
    Expired,
}

fn mac(key: &[u8], play: SocketAddr, body: &str) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(play.to_string().as_bytes());
    m.update(b"|");
    m.update(body.as_bytes());
    m.finalize().into_bytes().to_vec()
}

/// Issues a ticket for `user` to join `match_id` on `play`.
pub fn issue(
    key: &[u8],
    play: SocketAddr,
    match_id: u64,
    user: &str,
    now_ms: i64,
) -> Result<String, crate::domain::token::RandomUnavailable> {
    let body = format!(
        "{match_id}:{}:{}:{user}",
        now_ms + TICKET_TTL_MS,
        random_hex(16)?
    );
    Ok(format!("{body}:{}", hex(&mac(key, play, &body))))
}

/// Checks a ticket presented to the play server at `play`.
pub fn verify(
    key: &[u8],
    play: SocketAddr,
    ticket: &str,
    now_ms: i64,
) -> Result<Claims, TicketError> {
    if ticket.len() > TICKET_BYTES_MAX {
        return Err(TicketError::Malformed);
    }
    let (body, tag) = ticket.rsplit_once(':').ok_or(TicketError::Malformed)?;
    if !ct_eq(hex(&mac(key, play, body)).as_bytes(), tag.as_bytes()) {
        return Err(TicketError::Forged);
    }
    let mut parts = body.splitn(4, ':');
    let mut next = || parts.next().ok_or(TicketError::Malformed);
    let match_id = next()?.parse().map_err(|_| TicketError::Malformed)?;
    let expires_ms: i64 = next()?.parse().map_err(|_| TicketError::Malformed)?;
    let nonce = next()?.to_string();
    let user = next()?.to_string();
    if now_ms > expires_ms {
        return Err(TicketError::Expired);
    }
    Ok(Claims {
        match_id,
        user,
        nonce,
        expires_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn play() -> SocketAddr {
        "127.0.0.1:7400".parse().unwrap()
    }

    #[test]
    fn tickets_bind_user_match_and_play_server() {
        let t = issue(b"k", play(), 42, "user7", 1000).unwrap();
        let c = verify(b"k", play(), &t, 1000).unwrap();
        assert_eq!((c.match_id, c.user.as_str()), (42, "user7"));
        assert_eq!(
            verify(b"k", "127.0.0.1:7401".parse().unwrap(), &t, 1000),
            Err(TicketError::Forged)
        );
        assert_eq!(verify(b"other", play(), &t, 1000), Err(TicketError::Forged));
        assert_eq!(
            verify(b"k", play(), &t, 1000 + TICKET_TTL_MS + 1),
            Err(TicketError::Expired)
        );
        let forged = t.replacen("user7", "user8", 1);
        assert_eq!(
            verify(b"k", play(), &forged, 1000),
            Err(TicketError::Forged)
        );
        assert_ne!(
            issue(b"k", play(), 42, "user7", 1000).unwrap(),
            t,
            "nonces differ"
        );
    }

    proptest! {
        #[test]
        fn arbitrary_strings_are_never_accepted(s in "\\PC{0,300}") {
            prop_assert!(verify(b"k", play(), &s, 0).is_err());
        }

        #[test]
        fn any_single_character_change_is_refused(pos in 0usize..200, c in "[0-9a-z:]") {
            let t = issue(b"k", play(), 7, "user1", 0).unwrap();
            let pos = pos % t.len();
            let mut altered = t.clone();
            altered.replace_range(pos..pos + 1, &c);
            prop_assume!(altered != t);
            prop_assert!(verify(b"k", play(), &altered, 0).is_err());
        }
    }
}
