//! Bad lines on the line-protocol ports (SPEC §3 play server and match observer, §5):
//! not JSON, not UTF-8, wrong types, deeply nested JSON, absurd numbers, forged tickets
//! and keys, inputs before join, forged and replayed tokens, and lines over 64 KiB,
//! including one that never ends. Each gets its error code, and a well-behaved client is
//! served at once after it.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use catwar_server::domain::token;
use catwar_server::runtime::event_loop::Limits;

use crate::fleet::{closed_eventually, error_code, play_status, read_line, Fleet};
use crate::util::{connect, WAIT_S_MAX};

/// The longest line either port accepts (SPEC §3).
const LINE_BYTES_MAX: usize = 64 * 1024;

/// Sends `line` (a newline is added) on a new connection and returns the error code
/// the server answers, and the connection.
fn bad_line(addr: std::net::SocketAddr, line: &[u8]) -> (Option<String>, std::net::TcpStream) {
    let mut stream = connect(addr);
    let mut bytes = line.to_vec();
    bytes.push(b'\n');
    stream.write_all(&bytes).unwrap();
    (error_code(&mut stream), stream)
}

fn json(v: serde_json::Value) -> Vec<u8> {
    v.to_string().into_bytes()
}

#[test]
fn bad_lines_on_the_play_port_get_their_error_codes_and_others_are_served() {
    let fleet = Fleet::start(Limits::default());
    let play = fleet.play_addr;
    let valid = fleet.ticket("user5", 77);
    // The same ticket with its match changed: the MAC no longer fits.
    let other_match = format!("78{}", &valid[2..]);
    let nested = "[".repeat(60_000);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("not JSON", b"hello".to_vec(), "bad_json"),
        ("not UTF-8", b"{\"t\":\"status\xff\"}".to_vec(), "bad_json"),
        ("NUL bytes", b"\x00\x00\x00".to_vec(), "bad_json"),
        ("60,000 nested arrays", nested.into_bytes(), "bad_json"),
        ("1e400", b"1e400".to_vec(), "bad_json"),
        ("an array", b"[]".to_vec(), "missing_type"),
        ("a number type", br#"{"t":1}"#.to_vec(), "missing_type"),
        (
            "an unknown type",
            br#"{"t":"dance"}"#.to_vec(),
            "unknown_type",
        ),
        (
            "a join without a ticket",
            br#"{"t":"join"}"#.to_vec(),
            "missing_field",
        ),
        (
            "a number ticket",
            br#"{"t":"join","ticket":5}"#.to_vec(),
            "wrong_type",
        ),
        (
            "a huge ticket",
            json(serde_json::json!({"t":"join","ticket":"1".repeat(60_000)})),
            "ticket_invalid",
        ),
        (
            "a ticket of fields only",
            br#"{"t":"join","ticket":"1:2:3:4:5"}"#.to_vec(),
            "ticket_invalid",
        ),
        (
            "a ticket of SQL",
            br#"{"t":"join","ticket":"' OR 1=1 --"}"#.to_vec(),
            "ticket_invalid",
        ),
        (
            "a ticket for another match",
            json(serde_json::json!({"t":"join","ticket":other_match})),
            "ticket_invalid",
        ),
        (
            "a truncated ticket",
            json(serde_json::json!({"t":"join","ticket":&valid[..valid.len() - 1]})),
            "ticket_invalid",
        ),
        (
            "an input before join",
            br#"{"t":"input","seq":1,"dx":0,"dy":0,"fire":false}"#.to_vec(),
            "not_joined",
        ),
        (
            "a seq of 1e400",
            br#"{"t":"input","seq":1e400,"dx":0,"dy":0,"fire":false}"#.to_vec(),
            "bad_json",
        ),
        (
            "a negative seq",
            br#"{"t":"input","seq":-1,"dx":0,"dy":0,"fire":false}"#.to_vec(),
            "wrong_type",
        ),
        (
            "a seq beyond 64 bits",
            br#"{"t":"input","seq":18446744073709551616,"dx":0,"dy":0,"fire":false}"#.to_vec(),
            "wrong_type",
        ),
        (
            "a fractional seq",
            br#"{"t":"input","seq":1.5,"dx":0,"dy":0,"fire":false}"#.to_vec(),
            "wrong_type",
        ),
        (
            "a dx of 1e400",
            br#"{"t":"input","seq":1,"dx":1e400,"dy":0,"fire":false}"#.to_vec(),
            "bad_json",
        ),
        (
            "a dx of \"NaN\"",
            br#"{"t":"input","seq":1,"dx":"NaN","dy":0,"fire":false}"#.to_vec(),
            "wrong_type",
        ),
        (
            "a fire of \"true\"",
            br#"{"t":"input","seq":1,"dx":0,"dy":0,"fire":"true"}"#.to_vec(),
            "wrong_type",
        ),
        (
            "a forged subscribe key",
            br#"{"t":"subscribe","match":77,"key":"forged"}"#.to_vec(),
            "forbidden",
        ),
        (
            "an empty observe key",
            br#"{"t":"observe","match":77,"key":""}"#.to_vec(),
            "forbidden",
        ),
        (
            "a negative observe match",
            br#"{"t":"observe","match":-1,"key":"x"}"#.to_vec(),
            "wrong_type",
        ),
    ];
    for (what, line, code) in &cases {
        assert!(line.len() < LINE_BYTES_MAX, "{what} fits in a line");
        let (answer, _) = bad_line(play, line);
        assert_eq!(answer.as_deref(), Some(*code), "{what}");
        assert!(play_status(play), "status after {what}");
    }
    // Numbers that are absurd but well-formed are taken; only a seq that does not
    // increase is refused, and it is the first error this player sees.
    let mut player = connect(play);
    writeln!(
        player,
        "{}",
        serde_json::json!({"t":"join","ticket": valid})
    )
    .unwrap();
    assert!(read_line(&mut player).unwrap().contains("\"joined\""));
    for input in [
        r#"{"t":"input","seq":1,"dx":-0,"dy":-0.0,"fire":false}"#,
        r#"{"t":"input","seq":2,"dx":1e308,"dy":-1e308,"fire":true}"#,
        r#"{"t":"input","seq":3,"dx":5e-324,"dy":0,"fire":false}"#,
        r#"{"t":"input","seq":18446744073709551615,"dx":0,"dy":0,"fire":false}"#,
        r#"{"t":"input","seq":18446744073709551615,"dx":0,"dy":0,"fire":false}"#,
    ] {
        writeln!(player, "{input}").unwrap();
    }
    assert_eq!(error_code(&mut player).as_deref(), Some("stale_seq"));
    writeln!(
        player,
        "{}",
        serde_json::json!({"t":"join","ticket": fleet.ticket("user5", 77)})
    )
    .unwrap();
    assert_eq!(error_code(&mut player).as_deref(), Some("already_joined"));
    assert!(play_status(play));
}

#[test]
fn lines_over_64_kib_are_refused_on_the_play_port() {
    let fleet = Fleet::start(Limits::default());
    let play = fleet.play_addr;
    // A whole line over the limit, newline included, sent at once.
    let mut long = vec![b'x'; LINE_BYTES_MAX + 1];
    long.push(b'\n');
    let mut stream = connect(play);
    stream.write_all(&long).unwrap();
    assert_eq!(error_code(&mut stream).as_deref(), Some("line_too_long"));
    assert!(closed_eventually(&mut stream));
    // A good line, then an over-long one: the good one is answered first.
    let mut stream = connect(play);
    let mut bytes = b"{\"t\":\"status\"}\n".to_vec();
    bytes.extend_from_slice(&long);
    stream.write_all(&bytes).unwrap();
    assert!(read_line(&mut stream).unwrap().contains("\"status\""));
    assert_eq!(error_code(&mut stream).as_deref(), Some("line_too_long"));
    assert!(closed_eventually(&mut stream));
    // 100,000 nested arrays are refused for their length before any parser sees them.
    let mut stream = connect(play);
    let mut nested = "[".repeat(100_000).into_bytes();
    nested.push(b'\n');
    let _ = stream.write_all(&nested);
    assert_eq!(error_code(&mut stream).as_deref(), Some("line_too_long"));
    // Exactly at the limit is a line like any other (and not JSON here).
    let mut stream = connect(play);
    let mut at_limit = vec![b' '; LINE_BYTES_MAX - 2];
    at_limit.splice(0..0, *b"[]");
    at_limit.push(b'\n');
    stream.write_all(&at_limit).unwrap();
    assert_eq!(error_code(&mut stream).as_deref(), Some("missing_type"));
    assert!(play_status(play));
}

#[test]
fn a_line_that_never_ends_is_cut_at_64_kib_while_others_are_served() {
    /// Bytes per write of the endless line.
    const CHUNK_BYTES: usize = 64 * 1024;
    let fleet = Fleet::start(Limits::default());
    let play = fleet.play_addr;
    let mut stream = connect(play);
    // A good line first, so the buffer holds a newline before the endless one.
    stream.write_all(b"{\"t\":\"status\"}\n").unwrap();
    let writer = stream.try_clone().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flood = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut writer = writer;
            let chunk = vec![b'x'; CHUNK_BYTES];
            let deadline = Instant::now() + Duration::from_secs(WAIT_S_MAX);
            // Until the server cuts the line (a write fails), the test is over, or the
            // deadline: the server never saw a newline again.
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                if writer.write_all(&chunk).is_err() {
                    return true;
                }
            }
            false
        })
    };
    // Others are served while the endless line is still being sent.
    assert!(play_status(play));
    assert!(read_line(&mut stream).unwrap().contains("\"status\""));
    assert_eq!(error_code(&mut stream).as_deref(), Some("line_too_long"));
    assert!(closed_eventually(&mut stream));
    let cut = flood.join().unwrap();
    stop.store(true, Ordering::SeqCst);
    assert!(
        cut,
        "the server kept reading the endless line until the sender gave up"
    );
    assert!(play_status(play));
}

/// The match every observer test watches.
const MATCH: u64 = 42;

#[test]
fn bad_lines_and_tokens_at_a_match_observer_get_their_error_codes() {
    let fleet = Fleet::start(Limits::default());
    let (observer, _player) = fleet.observer(MATCH);
    fleet.observer_served(observer, MATCH);
    let revoked = fleet.token("user3");
    fleet
        .db()
        .execute(
            "UPDATE sessions SET revoked = 1 WHERE token_hash = ?1",
            [token::token_hash(&revoked)],
        )
        .unwrap();
    let watch = |token: serde_json::Value| {
        json(serde_json::json!({"t": "watch", "match": MATCH, "token": token}))
    };
    let nested = "[".repeat(60_000);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("not JSON", b"hello".to_vec(), "bad_json"),
        ("not UTF-8", b"{\"t\":\"watch\xff\"}".to_vec(), "bad_json"),
        ("60,000 nested arrays", nested.into_bytes(), "bad_json"),
        (
            "an input before watch",
            br#"{"t":"input","seq":1,"dx":0,"dy":0,"fire":false}"#.to_vec(),
            "expected_watch",
        ),
        (
            "a join",
            br#"{"t":"join","ticket":"x"}"#.to_vec(),
            "expected_watch",
        ),
        (
            "another match",
            json(serde_json::json!({"t":"watch","match":MATCH + 1,"token":"x"})),
            "unknown_match",
        ),
        (
            "a match of 1e400",
            br#"{"t":"watch","match":1e400,"token":"x"}"#.to_vec(),
            "bad_json",
        ),
        (
            "a negative match",
            br#"{"t":"watch","match":-42,"token":"x"}"#.to_vec(),
            "unknown_match",
        ),
        (
            "a match as text",
            br#"{"t":"watch","match":"42","token":"x"}"#.to_vec(),
            "unknown_match",
        ),
        (
            "no token",
            json(serde_json::json!({"t":"watch","match":MATCH})),
            "access_denied",
        ),
        (
            "a number token",
            watch(serde_json::json!(5)),
            "access_denied",
        ),
        (
            "an empty token",
            watch(serde_json::json!("")),
            "access_denied",
        ),
        (
            "a huge token",
            watch(serde_json::json!("a".repeat(60_000))),
            "access_denied",
        ),
        (
            "a forged token",
            watch(serde_json::json!("0123456789abcdef".repeat(4))),
            "access_denied",
        ),
        (
            "a token of SQL",
            watch(serde_json::json!("' OR 1=1 --")),
            "access_denied",
        ),
        (
            "a non-ASCII token",
            watch(serde_json::json!("✓".repeat(30))),
            "access_denied",
        ),
        (
            "a revoked token",
            watch(serde_json::json!(revoked)),
            "access_denied",
        ),
    ];
    for (what, line, code) in &cases {
        assert!(line.len() < LINE_BYTES_MAX, "{what} fits in a line");
        let (answer, mut stream) = bad_line(observer, line);
        assert_eq!(answer.as_deref(), Some(*code), "{what}");
        assert!(
            closed_eventually(&mut stream),
            "{what}: closed after its error"
        );
        fleet.observer_served(observer, MATCH);
    }
    // A line over the limit is refused as such, not read as broken JSON.
    let mut long = br#"{"t":"watch","match":42,"token":""#.to_vec();
    long.resize(LINE_BYTES_MAX + 10, b'a');
    long.extend_from_slice(b"\"}\n");
    let mut stream = connect(observer);
    // The observer stops reading at the limit; the rest may meet a closed socket.
    let _ = stream.write_all(&long);
    assert_eq!(error_code(&mut stream).as_deref(), Some("line_too_long"));
    fleet.observer_served(observer, MATCH);
}
