//! Who a virtual client is: the seeded user it logs in as, and its source addresses.
//!
//! `catwar-server users seed --count N` creates `user1` to `userN` with the password
//! `pw-<id>`; client k logs in as `user{k % N + 1}`. Every client has addresses of its
//! own in 127.0.0.0/8, which Linux routes to loopback whole: 127.10.0.0 + k for every
//! connection, and 127.20.0.0 + k after its IP "changes". Profile limits failed logins
//! per IP, so clients must not share one.

use crate::scenario::CLIENTS_MAX;
use std::net::{IpAddr, Ipv4Addr};

/// Where a process's clients connect from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum SourcePool {
    /// Each client its own loopback addresses ([`home_ip`], [`moved_ip`]): for a
    /// topology on this host.
    #[default]
    Loopback,
    /// This host's own addresses (an agent's `--source-ips`), taken in turn: client k
    /// connects from the k-th (modulo their number), and after an IP change from the
    /// next one.
    Addresses(Vec<IpAddr>),
}

impl SourcePool {
    /// The address client `client_id` connects from.
    pub fn home(&self, client_id: u64) -> IpAddr {
        match self {
            SourcePool::Loopback => IpAddr::V4(home_ip(client_id)),
            SourcePool::Addresses(list) => list[(client_id % list.len() as u64) as usize],
        }
    }

    /// The address client `client_id` connects from after its IP changed: another one
    /// whenever the pool has two.
    pub fn moved(&self, client_id: u64) -> IpAddr {
        match self {
            SourcePool::Loopback => IpAddr::V4(moved_ip(client_id)),
            SourcePool::Addresses(list) => {
                list[((client_id + 1) % list.len() as u64) as usize]
            }
        }
    }

    /// Whether an IP change gives a client another address.
    pub fn can_move(&self) -> bool {
        match self {
            SourcePool::Loopback => true,
            SourcePool::Addresses(list) => list.len() >= 2,
        }
    }
}

/// The first client's own address; the block holds [`CLIENTS_MAX`] clients.
const HOME_BASE: Ipv4Addr = Ipv4Addr::new(127, 10, 0, 0);
/// The first client's address after an IP change; [`CLIENTS_MAX`] above `HOME_BASE`,
/// so the blocks never overlap.
const MOVED_BASE: Ipv4Addr = Ipv4Addr::new(127, 20, 0, 0);

/// The address client `client_id` connects from.
fn home_ip(client_id: u64) -> Ipv4Addr {
    offset(HOME_BASE, client_id)
}

/// The address client `client_id` connects from after its IP changed.
fn moved_ip(client_id: u64) -> Ipv4Addr {
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
    fn a_pool_of_addresses_gives_each_client_another_after_an_ip_change() {
        let pool = SourcePool::Addresses(vec![
            "10.0.0.5".parse().unwrap(),
            "10.0.0.6".parse().unwrap(),
            "10.0.0.7".parse().unwrap(),
        ]);
        for id in 0..10 {
            assert_ne!(pool.home(id), pool.moved(id));
        }
        assert_eq!(pool.home(4), "10.0.0.6".parse::<IpAddr>().unwrap());
        assert!(pool.can_move());
        let one = SourcePool::Addresses(vec!["10.0.0.5".parse().unwrap()]);
        assert!(!one.can_move());
        assert_eq!(SourcePool::Loopback.home(300), IpAddr::V4(home_ip(300)));
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
