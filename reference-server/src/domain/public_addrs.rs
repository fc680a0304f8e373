//! Where clients reach a service, when that differs from where the other services reach
//! it: a container's port published on the host's 127.0.0.1. Services that hand out
//! other services' addresses (profile the lobby, storage the file nodes, the lobby the
//! play servers) translate them here; on loopback the map is empty and every address is
//! its own public one.

use std::collections::HashMap;
use std::net::SocketAddr;

/// Each service's address mapped to its public one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublicAddrs(HashMap<SocketAddr, SocketAddr>);

impl PublicAddrs {
    /// A map from service addresses to public ones.
    pub fn new(map: HashMap<SocketAddr, SocketAddr>) -> PublicAddrs {
        PublicAddrs(map)
    }

    /// Where clients reach the service at `addr`.
    pub fn of(&self, addr: SocketAddr) -> SocketAddr {
        self.0.get(&addr).copied().unwrap_or(addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_without_an_entry_is_its_own_public_one() {
        let inside: SocketAddr = "10.203.77.10:7120".parse().unwrap();
        let outside: SocketAddr = "127.0.0.1:7120".parse().unwrap();
        let map = PublicAddrs::new(HashMap::from([(inside, outside)]));
        assert_eq!(map.of(inside), outside);
        assert_eq!(map.of(outside), outside);
        assert_eq!(PublicAddrs::default().of(inside), inside);
    }
}
