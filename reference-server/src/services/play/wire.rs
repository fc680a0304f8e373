//! The play server's line protocol: connections that read and write newline-delimited
//! JSON, and the parsing of every message a client may send.

use std::io::{self, Read, Write};
use std::time::Instant;

use mio::net::TcpStream;
use serde_json::Value;

use crate::runtime::event_loop::{interrupted, would_block};

/// Longest line accepted (SPEC §3 play server).
pub const LINE_BYTES_MAX: usize = 64 * 1024;
/// Unsent output one connection may hold; a client that reads slower than the tick rate
/// writes is dropped instead of growing memory.
pub const OUT_BYTES_MAX: usize = 1024 * 1024;
/// Bad lines a client may send before it is disconnected.
pub const BAD_LINES_MAX: u32 = 10;
/// Bytes read per `read` call: the size of the loop's buffer that [`Conn::read_lines`] reads into.
pub const READ_CHUNK_BYTES: usize = 16 * 1024;
/// Bytes read from one connection per readiness event; the rest waits for a fresh
/// event, so a client that sends as fast as it can neither holds the loop nor grows its
/// buffer while the others wait.
pub const READ_BYTES_PER_EVENT_MAX: usize = 256 * 1024;

/// What one call of [`Conn::read_lines`] got.
#[derive(Debug, Default)]
pub struct Lines {
    /// The complete lines, in order, blank ones left out.
    pub lines: Vec<Vec<u8>>,
    /// The error code that ends the connection after `lines` are handled.
    pub error: Option<&'static str>,
    /// Reading stopped at [`READ_BYTES_PER_EVENT_MAX`]; more may be waiting.
    pub more: bool,
}

/// What a connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Connected, not joined.
    New,
    /// A player: match id and player index.
    Player(u64, usize),
    /// A match observer receiving the state stream of a match.
    Subscriber(u64),
    /// Its match ended; it gets nothing more.
    Done,
}

/// One connection.
#[derive(Debug)]
pub struct Conn {
    /// The socket.
    pub stream: TcpStream,
    /// Distinguishes connections that reuse a slab key.
    pub gen: u64,
    /// What it is.
    pub role: Role,
    /// Set to close once the output is flushed.
    pub closing: bool,
    /// When it last sent a whole line (or connected).
    pub last_line: Instant,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
    bad_lines: u32,
    read_closed: bool,
}

impl Conn {
    /// A new connection.
    pub fn new(stream: TcpStream, gen: u64) -> Conn {
        Conn {
            stream,
            gen,
            role: Role::New,
            closing: false,
            last_line: Instant::now(),
            inbuf: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            bad_lines: 0,
            read_closed: false,
        }
    }

    /// Reads until `WouldBlock` or [`READ_BYTES_PER_EVENT_MAX`] and returns the complete
    /// lines; a line over [`LINE_BYTES_MAX`] ends them with an error code. Each `read`
    /// lands in `chunk`, the loop's scratch buffer.
    pub fn read_lines(&mut self, chunk: &mut [u8]) -> Lines {
        let mut read = 0;
        let mut more = false;
        loop {
            if read >= READ_BYTES_PER_EVENT_MAX {
                more = true;
                break;
            }
            match self.stream.read(chunk) {
                Ok(0) => {
                    self.read_closed = true;
                    break;
                }
                Ok(n) => {
                    self.inbuf.extend_from_slice(&chunk[..n]);
                    read += n;
                }
                Err(e) if would_block(&e) => break,
                Err(e) if interrupted(&e) => continue,
                Err(_) => {
                    self.read_closed = true;
                    break;
                }
            }
            // Only the bytes after the last newline can still grow into a line too
            // long; once they have, reading on is pointless (the split says so).
            let unfinished = self.inbuf.iter().rev().position(|&b| b == b'\n');
            if unfinished.unwrap_or(self.inbuf.len()) > LINE_BYTES_MAX {
                break;
            }
        }
        let mut out = Lines::default();
        let mut start = 0;
        while let Some(end) = self.inbuf[start..].iter().position(|&b| b == b'\n') {
            let line = &self.inbuf[start..start + end];
            if line.len() > LINE_BYTES_MAX {
                out.error = Some("line_too_long");
                break;
            }
            if !line.iter().all(u8::is_ascii_whitespace) {
                out.lines.push(line.to_vec());
            }
            start += end + 1;
        }
        self.inbuf.drain(..start);
        if self.inbuf.len() > LINE_BYTES_MAX {
            out.error = Some("line_too_long");
        }
        out.more = more && out.error.is_none();
        out
    }

    /// Queues one line; past the output cap the client is a slow consumer and is closed.
    pub fn send_line(&mut self, line: &str) {
        if self.has_room() {
            self.out.extend_from_slice(line.as_bytes());
            self.out.push(b'\n');
        }
    }

    /// Queues this tick's `state` line with the receiver's `ack`, under the same cap.
    pub fn send_state(&mut self, state: &StateLine, ack: u64) {
        if self.has_room() {
            state.write_to(ack, &mut self.out);
        }
    }

    /// False past the output cap, and then the client is a slow consumer and closes.
    fn has_room(&mut self) -> bool {
        let room = self.out.len() - self.out_pos <= OUT_BYTES_MAX;
        self.closing |= !room;
        room
    }

    /// Queues `{"t":"error","error":code}`.
    pub fn send_error(&mut self, code: &str) {
        self.send_line(&format!("{{\"t\":\"error\",\"error\":\"{code}\"}}"));
    }

    /// Answers a bad line; too many of them and the connection closes.
    pub fn bad(&mut self, code: &str) {
        self.send_error(code);
        self.bad_lines += 1;
        if self.bad_lines >= BAD_LINES_MAX {
            self.closing = true;
        }
    }

    /// Writes queued output until `WouldBlock`.
    pub fn flush(&mut self) -> io::Result<()> {
        while self.out_pos < self.out.len() {
            match self.stream.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_pos += n,
                Err(e) if would_block(&e) => break,
                Err(e) if interrupted(&e) => continue,
                Err(e) => return Err(e),
            }
        }
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        } else if self.out_pos > OUT_BYTES_MAX {
            self.out.drain(..self.out_pos);
            self.out_pos = 0;
        }
        Ok(())
    }

    /// True when the connection should close now: asked to, or the peer left, and
    /// everything queued is written.
    pub fn done(&self) -> bool {
        let flushed = self.out_pos >= self.out.len();
        // A slow consumer (see `send_line`) is dropped with its backlog: it is not
        // taking it, and waiting for it to would hold its slot for good.
        let abandoned = self.closing && self.out.len() - self.out_pos > OUT_BYTES_MAX;
        (flushed && (self.closing || self.read_closed)) || abandoned
    }
}

/// A parsed client line.
#[derive(Debug, Clone, PartialEq)]
pub enum In {
    /// `{"t":"status"}` (lobby).
    Status,
    /// `{"t":"join","ticket":T}`.
    Join {
        /// The ticket.
        ticket: String,
    },
    /// `{"t":"input","seq":n,"dx":x,"dy":y,"fire":b}`.
    Input {
        /// Increasing sequence number.
        seq: u64,
        /// Direction x; the game scales a direction longer than 1 to length 1.
        dx: f64,
        /// Direction y.
        dy: f64,
        /// Trigger pressed.
        fire: bool,
    },
    /// `{"t":"subscribe","match":M,"key":K}` (match observer).
    Subscribe {
        /// Match id.
        match_id: u64,
        /// Internal key.
        key: String,
    },
    /// `{"t":"observe","match":M,"key":K}` (router).
    Observe {
        /// Match id.
        match_id: u64,
        /// Internal key.
        key: String,
    },
}

/// The `state` line of one tick (SPEC §3), without its newline: `players` is the match's
/// encoded view, `ack` the last input of the receiving player applied (0 for observers).
pub fn state_line(tick: u64, ack: u64, players: &str) -> String {
    let mut line = Vec::new();
    StateLine::new(tick, players).write_to(ack, &mut line);
    line.pop();
    String::from_utf8(line).expect("a state line is JSON text")
}

/// One tick's `state` line cut around its `ack`, the only part that differs between
/// the players of a match: each player's line is two copies and a number, written
/// straight into its output, with no line built per player.
#[derive(Debug)]
pub struct StateLine {
    head: String,
    tail: String,
}

impl StateLine {
    /// The line of `tick` for a match whose encoded view is `players`.
    pub fn new(tick: u64, players: &str) -> StateLine {
        StateLine {
            head: format!("{{\"t\":\"state\",\"tick\":{tick},\"ack\":"),
            tail: format!(",\"players\":{players}}}\n"),
        }
    }

    /// Appends the line, with its newline, for a player whose last applied input is `ack`.
    pub fn write_to(&self, ack: u64, out: &mut Vec<u8>) {
        out.extend_from_slice(self.head.as_bytes());
        write!(out, "{ack}").expect("writing to a Vec cannot fail");
        out.extend_from_slice(self.tail.as_bytes());
    }
}

/// Parses a line; the error is the code sent back.
pub fn parse(line: &[u8]) -> Result<In, &'static str> {
    let v: Value = serde_json::from_slice(line).map_err(|_| "bad_json")?;
    let field = |name: &str| v.get(name).ok_or("missing_field");
    let string = |name: &str| {
        field(name)?
            .as_str()
            .map(str::to_string)
            .ok_or("wrong_type")
    };
    let number = |name: &str| field(name)?.as_f64().ok_or("wrong_type");
    let whole = |name: &str| field(name)?.as_u64().ok_or("wrong_type");
    match v.get("t").and_then(Value::as_str).ok_or("missing_type")? {
        "status" => Ok(In::Status),
        "join" => Ok(In::Join {
            ticket: string("ticket")?,
        }),
        "input" => Ok(In::Input {
            seq: whole("seq")?,
            dx: number("dx")?,
            dy: number("dy")?,
            fire: field("fire")?.as_bool().ok_or("wrong_type")?,
        }),
        "subscribe" => Ok(In::Subscribe {
            match_id: whole("match")?,
            key: string("key")?,
        }),
        "observe" => Ok(In::Observe {
            match_id: whole("match")?,
            key: string("key")?,
        }),
        _ => Err("unknown_type"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn messages_parse_and_bad_ones_name_the_problem() {
        assert_eq!(
            parse(br#"{"t":"join","ticket":"x"}"#),
            Ok(In::Join { ticket: "x".into() })
        );
        assert_eq!(
            parse(br#"{"t":"input","seq":3,"dx":0.5,"dy":-1,"fire":true}"#),
            Ok(In::Input {
                seq: 3,
                dx: 0.5,
                dy: -1.0,
                fire: true
            })
        );
        assert_eq!(parse(b"{"), Err("bad_json"));
        assert_eq!(parse(br#"{"t":"dance"}"#), Err("unknown_type"));
        assert_eq!(parse(br#"{"x":1}"#), Err("missing_type"));
        assert_eq!(
            parse(br#"{"t":"input","seq":-1,"dx":0,"dy":0,"fire":false}"#),
            Err("wrong_type")
        );
        assert_eq!(
            parse(br#"{"t":"input","seq":1,"dx":"0","dy":0,"fire":false}"#),
            Err("wrong_type")
        );
        assert_eq!(parse(br#"{"t":"join"}"#), Err("missing_field"));
    }

    proptest! {
        #[test]
        fn no_line_makes_the_parser_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn inputs_round_trip(seq in 1u64..u64::MAX / 2, dx in -1.0f64..1.0, dy in -1.0f64..1.0, fire: bool) {
            let line = serde_json::json!({"t": "input", "seq": seq, "dx": dx, "dy": dy, "fire": fire}).to_string();
            // serde_json's fast float parsing may differ from the printed value in the
            // last bit, which no game rule can notice.
            let Ok(In::Input { seq: s, dx: x, dy: y, fire: f }) = parse(line.as_bytes()) else { panic!("{line}") };
            prop_assert_eq!((s, f), (seq, fire));
            prop_assert!((x - dx).abs() < 1e-12 && (y - dy).abs() < 1e-12);
        }
    }
}
