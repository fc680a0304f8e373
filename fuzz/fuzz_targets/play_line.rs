//! The play server's line protocol: the input is split into lines as the play server
//! splits what it reads, each line goes through `wire::parse`, and what a line asks for
//! is applied as the server applies it: a `join` ticket is verified (as sent, and
//! re-signed with the play server's key so the fields behind the MAC are reached too),
//! an `input` moves a cat of a running match, which ticks after every line.
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;

use catwar_server::domain::ticket::{self, TICKET_BYTES_MAX};
use catwar_server::domain::token::hex;
use catwar_server::services::play::game::{Game, ARENA_SIZE, HP_START};
use catwar_server::services::play::wire::{self, In, LINE_BYTES_MAX};
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;

const KEY: &[u8] = b"fuzz-ticket-key";
const NOW_MS: i64 = 1_800_000_000_000;

fn play() -> SocketAddr {
    "127.0.0.1:7400".parse().unwrap()
}

/// The ticket MAC as `domain::ticket` computes it (checked against a real ticket once).
fn sign(body: &str) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(KEY).unwrap();
    m.update(play().to_string().as_bytes());
    m.update(b"|");
    m.update(body.as_bytes());
    format!("{body}:{}", hex(&m.finalize().into_bytes()))
}

fn signing_matches_the_server() -> bool {
    static CHECKED: OnceLock<bool> = OnceLock::new();
    *CHECKED.get_or_init(|| {
        let real = ticket::issue(KEY, play(), 7, "user1", NOW_MS).unwrap();
        let (body, _) = real.rsplit_once(':').unwrap();
        assert_eq!(sign(body), real, "the ticket format changed; update sign()");
        true
    })
}

fuzz_target!(|data: &[u8]| {
    assert!(signing_matches_the_server());
    let mut game = Game::default();
    for user in ["user1", "user2", "user3"] {
        game.add(user);
    }
    // The play server's framing: complete lines only, blank ones skipped.
    let complete = data.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    for (i, line) in data[..complete].split(|&b| b == b'\n').enumerate() {
        if line.len() > LINE_BYTES_MAX || line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match wire::parse(line) {
            Ok(In::Join { ticket }) => {
                let _ = ticket::verify(KEY, play(), &ticket, NOW_MS);
                let body = ticket.rsplit_once(':').map_or(ticket.as_str(), |(b, _)| b);
                let signed = sign(body);
                let verdict = ticket::verify(KEY, play(), &signed, NOW_MS);
                if signed.len() <= TICKET_BYTES_MAX {
                    assert_ne!(verdict, Err(ticket::TicketError::Forged), "{signed}");
                }
            }
            Ok(In::Input { seq, dx, dy, fire }) => {
                let p = i % game.players();
                let before = game.ack(p);
                if game.input(p, seq, dx, dy, fire).is_ok() {
                    assert!(seq > before);
                }
            }
            Ok(In::Status | In::Subscribe { .. } | In::Observe { .. }) | Err(_) => {}
        }
        game.step();
        let view: serde_json::Value = serde_json::from_str(&game.view()).unwrap();
        for cat in view.as_array().unwrap() {
            let (x, y) = (cat["x"].as_f64().unwrap(), cat["y"].as_f64().unwrap());
            assert!((0.0..=ARENA_SIZE).contains(&x) && (0.0..=ARENA_SIZE).contains(&y));
            assert!((0..=HP_START as i64).contains(&cat["hp"].as_i64().unwrap()));
        }
    }
    let (winner, outcomes) = game.outcomes();
    assert_eq!(outcomes.iter().filter(|o| o.won).count(), 1);
    assert!(winner < game.players());
});
