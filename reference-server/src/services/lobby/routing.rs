//! Routing players to play servers by load (SPEC §3 `/v1/start`): least players, then
//! fewest matches. Loads come from each play server's status line, polled in the
//! background, plus the seats this lobby handed out since the last poll. Each play
//! server has one match filling at a time; it takes `players-per-match` tickets or closes
//! when the fill timeout has passed (the play server starts it then).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde::Deserialize;

/// How often play servers are asked for their load.
pub const PLAY_POLL_MS: u64 = 250;
/// A play server that does not answer its status within this is treated as down.
const PLAY_STATUS_TIMEOUT_MS: u64 = 250;
/// Longest status line read from a play server.
const STATUS_LINE_BYTES_MAX: u64 = 4096;

#[derive(Debug, Clone, Copy)]
struct Filling {
    match_id: u64,
    seats: u32,
    opened_ms: i64,
}

#[derive(Debug, Clone)]
struct PlayServer {
    addr: SocketAddr,
    up: bool,
    players: u64,
    matches: u64,
    assigned: u64,
    filling: Option<Filling>,
}

/// The play servers as the lobby sees them.
#[derive(Debug)]
pub struct PlayDirectory {
    servers: Vec<PlayServer>,
    players_per_match: u32,
    fill_timeout_ms: i64,
    next_match: u64,
}

/// A play server's answer to `{"t":"status"}`.
#[derive(Debug, Deserialize)]
pub struct PlayLoad {
    /// Players connected or holding a seat.
    pub players: u64,
    /// Matches filling or running.
    pub matches: u64,
}

impl PlayDirectory {
    /// A directory of `addrs`, all considered down until their first status answer.
    /// Match ids start from the lobby's start time in seconds shifted by 20 bits, so a
    /// restarted lobby does not reuse the ids of its previous life, and ids stay below
    /// 2^53 for JavaScript clients.
    pub fn new(
        addrs: &[SocketAddr],
        players_per_match: u32,
        fill_timeout_ms: i64,
        now_ms: i64,
    ) -> PlayDirectory {
        let servers = addrs
            .iter()
            .map(|&addr| PlayServer {
                addr,
                up: false,
                players: 0,
                matches: 0,
                assigned: 0,
                filling: None,
            })
            .collect();
        PlayDirectory {
            servers,
            players_per_match,
            fill_timeout_ms,
            next_match: ((now_ms / 1000) as u64) << 20,
        }
    }

    /// Every play server's address, for the poller.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.servers.iter().map(|s| s.addr).collect()
    }

    /// Applies one poll result.
    pub fn report(&mut self, addr: SocketAddr, load: Option<PlayLoad>) {
        let Some(server) = self.servers.iter_mut().find(|s| s.addr == addr) else {
            return;
        };
        if server.up && load.is_none() {
            tracing::warn!(%addr, "play server stopped answering; routing around it");
        }
        server.up = load.is_some();
        if let Some(load) = load {
            server.players = load.players;
            server.matches = load.matches;
            server.assigned = 0;
        } else {
            server.filling = None;
        }
    }

    /// Seats a player. A match that is filling and has open seats is filled first, so
    /// matches start full; otherwise the least-loaded live server (least players, then
    /// fewest matches) opens a new match.
    pub fn seat(&mut self, now_ms: i64) -> Option<(SocketAddr, u64)> {
        let (ppm, fill_ms) = (self.players_per_match, self.fill_timeout_ms);
        let open = |f: &Filling| f.seats < ppm && now_ms - f.opened_ms < fill_ms;
        let load = |s: &PlayServer| (s.players + s.assigned, s.matches);
        let filling = self
            .servers
            .iter()
            .enumerate()
            .filter(|(_, s)| s.up && s.filling.as_ref().is_some_and(open))
            .min_by_key(|(_, s)| load(s))
            .map(|(i, _)| i);
        let i = match filling {
            Some(i) => i,
            None => {
                let (i, _) = self
                    .servers
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.up)
                    .min_by_key(|(_, s)| load(s))?;
                self.next_match += 1;
                let server = &mut self.servers[i];
                server.filling = Some(Filling {
                    match_id: self.next_match,
                    seats: 0,
                    opened_ms: now_ms,
                });
                server.matches += 1;
                i
            }
        };
        let server = &mut self.servers[i];
        let filling = server
            .filling
            .as_mut()
            .expect("a filling match was chosen or opened");
        filling.seats += 1;
        server.assigned += 1;
        Some((server.addr, filling.match_id))
    }
}

/// Asks one play server for its load.
pub fn poll(addr: SocketAddr) -> Option<PlayLoad> {
    let timeout = Duration::from_millis(PLAY_STATUS_TIMEOUT_MS);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.write_all(b"{\"t\":\"status\"}\n").ok()?;
    let mut line = String::new();
    BufReader::new(stream.take(STATUS_LINE_BYTES_MAX))
        .read_line(&mut line)
        .ok()?;
    serde_json::from_str(&line).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn matches_fill_first_then_open_on_the_least_loaded_server() {
        let mut d = PlayDirectory::new(&[addr(1), addr(2)], 2, 5000, 0);
        assert_eq!(d.seat(0), None, "no server has answered yet");
        d.report(
            addr(1),
            Some(PlayLoad {
                players: 10,
                matches: 3,
            }),
        );
        d.report(
            addr(2),
            Some(PlayLoad {
                players: 1,
                matches: 1,
            }),
        );
        let (a, m1) = d.seat(0).unwrap();
        let (b, m1b) = d.seat(0).unwrap();
        assert_eq!((a, b), (addr(2), addr(2)));
        assert_eq!(m1, m1b, "two seats of one match");
        let (_, m2) = d.seat(0).unwrap();
        assert_ne!(m2, m1, "a full match is not seated again");
        // A match past the fill timeout takes nobody more.
        let (_, m3) = d.seat(6000).unwrap();
        assert_ne!(m3, m2);
        d.report(addr(2), None);
        assert_eq!(d.seat(6000).unwrap().0, addr(1));
    }
}
