//! Who a virtual client is: the seeded user it logs in as, and its source addresses.
//!
//! `catwar-server users seed --count N` creates `user1` to `userN` with the password
//! `pw-<id>`; client k logs in as `user{k % N + 1}`. Every client has addresses of its
//! own in 127.0.0.0/8, which Linux routes to loopback whole: 127.10.0.0 + k for every
//! connection, and 127.20.0.0 + k after its IP "changes". Profile limits failed logins
//! per IP, so clients must not share one.

use crate::scenario::CLIENTS_MAX;
use std::net::Ipv4Addr;

/// The first client's own address; the block holds [`CLIENTS_MAX`] clients.
const HOME_BASE: Ipv4Addr = Ipv4Addr::new(127, 10, 0, 0);
/// The first client's address after an IP change; [`CLIENTS_MAX`] above `HOME_BASE`,
/// so the blocks never overlap.
const MOVED_BASE: Ipv4Addr = Ipv4Addr::new(127, 20, 0, 0);

/// The address client `client_id` connects from.
pub(super) fn home_ip(client_id: u64) -> Ipv4Addr {
    offset(HOME_BASE, client_id)
}

/// The address client `client_id` connects from after its IP changed.
pub(super) fn moved_ip(client_id: u64) -> Ipv4Addr {
    offset(MOVED_BASE, client_id)
}

fn offset(base: Ipv4Addr, client_id: u64) -> Ipv4Addr {
    // Scenario validation bounds the clients, so the sum stays inside the block.
    assert!(
        client_id < CLIENTS_MAX,
        "client {client_id} beyond {CLIENTS_MAX}"
    );
    Ipv4Addr::from(u32::from(base) + client_id as u32)
}

/// The seeded user client `client_id` logs in as, among `users` (at least 1).
pub(super) fn user_id(client_id: u64, users: u64) -> String {
    format!("user{}", client_id % users + 1)
}

/// The seeded password of `user`.
pub(super) fn password(user: &str) -> String {
    format!("pw-{user}")
}

/// A password `user` does not have.
pub(super) fn wrong_password(user: &str) -> String {
    format!("pw-{user}-wrong")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_addresses_are_offsets_in_two_disjoint_blocks() {
        assert_eq!(home_ip(0), Ipv4Addr::new(127, 10, 0, 0));
        assert_eq!(home_ip(300), Ipv4Addr::new(127, 10, 1, 44));
        assert_eq!(moved_ip(300), Ipv4Addr::new(127, 20, 1, 44));
        let last = CLIENTS_MAX - 1;
        assert_eq!(home_ip(last), Ipv4Addr::new(127, 19, 255, 255));
        assert!(u32::from(home_ip(last)) < u32::from(moved_ip(0)));
        assert_eq!(moved_ip(last), Ipv4Addr::new(127, 29, 255, 255));
    }

    #[test]
    #[should_panic(expected = "beyond")]
    fn clients_beyond_the_block_are_refused() {
        home_ip(CLIENTS_MAX);
    }

    #[tokio::test]
    async fn source_addresses_can_be_bound_on_loopback() {
        for ip in [home_ip(0), home_ip(255), moved_ip(65_536)] {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind((ip, 0).into()).unwrap();
        }
    }

    #[test]
    fn users_wrap_around_the_seeded_population() {
        assert_eq!(user_id(0, 10), "user1");
        assert_eq!(user_id(6, 10), "user7");
        assert_eq!(user_id(10, 10), "user1");
        assert_eq!(password("user7"), "pw-user7");
        assert_ne!(wrong_password("user7"), password("user7"));
    }
}
