//! The newline-delimited JSON client for play servers and match observers.
//!
//! One [`LineConn`] is one TCP connection made from the client's own address. It writes
//! one JSON object per line and reads the server's lines into [`ServerLine`]s, each
//! bounded by the services' own limit of 64 KiB. Reading is cancel-safe (bytes read stay
//! in the connection's buffer until their line is complete), so that a player can wait
//! for the next line and for its input timer in one `select!` without losing a byte.

use super::http::{connect, REQUEST_TIMEOUT_MS};
use serde::Deserialize;
use std::cell::RefCell;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// The longest line a play server or observer sends or accepts (SPEC §3 play server).
pub const LINE_BYTES_MAX: usize = 64 * 1024;
/// Each read asks for this much at once: a few `state` lines of a full match.
const READ_CHUNK_BYTES: usize = 8 * 1024;

thread_local! {
    /// Where every line connection a runtime thread drives reads to, zeroed once: the
    /// read is synchronous between two awaits, so no two connections share it at once,
    /// and a zeroed array per read cost more than parsing the line it read.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_CHUNK_BYTES].into_boxed_slice());
}

/// Why a line connection failed.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    /// The TCP connection could not be made.
    #[error("connect failed")]
    Connect(#[source] io::Error),
    /// Reading or writing failed.
    #[error("i/o error")]
    Io(#[source] io::Error),
    /// The server closed the connection.
    #[error("the server closed the connection")]
    Closed,
    /// A line longer than [`LINE_BYTES_MAX`] arrived.
    #[error("a line longer than {LINE_BYTES_MAX} bytes")]
    TooLong,
    /// Connecting or writing took longer than a request may, or the server fell silent
    /// for longer than the caller allows.
    #[error("timed out")]
    Timeout,
    /// A line that is not one of the messages [`ServerLine`] knows.
    #[error("bad line")]
    BadLine(#[source] serde_json::Error),
}

impl LineError {
    /// The error code recorded in metrics.
    pub fn code(&self) -> &'static str {
        match self {
            LineError::Connect(_) => "connect",
            LineError::Io(_) => "io",
            LineError::Closed => "closed",
            LineError::TooLong => "line_too_long",
            LineError::Timeout => "timeout",
            LineError::BadLine(_) => "bad_response",
        }
    }
}

/// A line from a play server or a match observer.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "t", rename_all = "lowercase")]
pub enum ServerLine {
    /// The answer to `join`.
    Joined {
        /// The match joined.
        #[serde(rename = "match")]
        match_id: u64,
        /// The player's index in the match.
        player: u64,
    },
    /// One tick of the match.
    State(State),
    /// The end of the match, sent once its results are committed.
    End(End),
    /// A refusal or a failure, by code.
    Error {
        /// The code, such as `match_started`.
        error: String,
    },
}

/// A `state` line. Positions are the game's business and are not read.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct State {
    /// The tick number: 1 for the first tick of a match, then consecutive.
    pub tick: u64,
    /// The last input `seq` the server applied for this player (0 for observers).
    pub ack: u64,
    /// Every cat of the match.
    pub players: Vec<Cat>,
}

/// One cat of a `state` line.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Cat {
    /// Its player index.
    pub p: u64,
    /// Hit points left; 0 is a dead cat.
    pub hp: i64,
}

/// An `end` line: the winner and every player's committed totals.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct End {
    /// The match.
    #[serde(rename = "match")]
    pub match_id: u64,
    /// The winning player index.
    pub winner: u64,
    /// One row per player.
    pub results: Vec<PlayerResult>,
}

/// One player's row of an `end` line: its outcome and its user's new totals.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct PlayerResult {
    /// The player index.
    pub player: u64,
    /// The user.
    pub id: String,
    /// Whether this player won the match.
    pub won: bool,
    /// The user's wins, this match included.
    pub wins: i64,
    /// The user's losses, this match included.
    pub losses: i64,
    /// The user's rating after the match.
    pub rating: i64,
    /// The user's experience after the match.
    pub xp: i64,
    /// The user's level after the match.
    pub level: i64,
}

/// Parses one line (without its newline).
pub fn parse_line(line: &[u8]) -> Result<ServerLine, LineError> {
    serde_json::from_slice(line).map_err(LineError::BadLine)
}

/// One connection to a play server or match observer.
#[derive(Debug)]
pub struct LineConn {
    stream: TcpStream,
    /// Bytes read and not yet returned as lines.
    buf: Vec<u8>,
    /// How much of `buf` is known to hold no newline.
    scanned: usize,
}

impl LineConn {
    /// Connects to `addr` from `local_ip` (the system's choice when `None`).
    pub async fn connect(
        local_ip: Option<IpAddr>,
        addr: SocketAddr,
    ) -> Result<LineConn, LineError> {
        let timeout = Duration::from_millis(REQUEST_TIMEOUT_MS);
        let stream = match tokio::time::timeout(timeout, connect(local_ip, addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(LineError::Connect(e)),
            Err(_) => return Err(LineError::Timeout),
        };
        Ok(LineConn {
            stream,
            buf: Vec::new(),
            scanned: 0,
        })
    }

    /// Writes `message` as one line.
    pub async fn send(&mut self, message: &serde_json::Value) -> Result<(), LineError> {
        let mut line = message.to_string().into_bytes();
        line.push(b'\n');
        let timeout = Duration::from_millis(REQUEST_TIMEOUT_MS);
        match tokio::time::timeout(timeout, self.stream.write_all(&line)).await {
            Ok(result) => result.map_err(LineError::Io),
            Err(_) => Err(LineError::Timeout),
        }
    }

    /// Reads the next line. Cancel-safe: if the future is dropped before it completes,
    /// nothing read is lost, and the next call picks up where it stopped.
    pub async fn next(&mut self) -> Result<ServerLine, LineError> {
        loop {
            if let Some(offset) = self.buf[self.scanned..].iter().position(|&b| b == b'\n') {
                let end = self.scanned + offset;
                if end > LINE_BYTES_MAX {
                    return Err(LineError::TooLong);
                }
                let line = parse_line(&self.buf[..end]);
                self.buf.drain(..=end);
                self.scanned = 0;
                return line;
            }
            self.scanned = self.buf.len();
            if self.buf.len() > LINE_BYTES_MAX {
                return Err(LineError::TooLong);
            }
            // Waiting for readiness consumes nothing, so it is the only await; the read
            // itself is synchronous and leaves `buf` whole whatever it returns.
            self.stream.readable().await.map_err(LineError::Io)?;
            // The read lands in the thread's scratch buffer, so an idle connection keeps
            // only what it has not parsed yet: thousands of players waiting for their
            // next tick must not hold a read buffer each.
            let read: io::Result<usize> = SCRATCH.with_borrow_mut(|chunk| {
                let n = self.stream.try_read(chunk)?;
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(n)
            });
            match read {
                Ok(0) => return Err(LineError::Closed),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(LineError::Io(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    #[test]
    fn every_documented_line_parses() {
        let joined = parse_line(br#"{"t":"joined","match":7,"player":2}"#).unwrap();
        assert_eq!(
            joined,
            ServerLine::Joined {
                match_id: 7,
                player: 2
            }
        );
        let state = br#"{"t":"state","tick":3,"ack":5,"players":[{"p":0,"x":1.5,"y":2,"hp":90}]}"#;
        let ServerLine::State(state) = parse_line(state).unwrap() else {
            panic!("not a state")
        };
        assert_eq!((state.tick, state.ack), (3, 5));
        assert_eq!(state.players, vec![Cat { p: 0, hp: 90 }]);
        let end = br#"{"t":"end","match":7,"winner":1,"results":[{"player":1,"id":"user3",
            "won":true,"wins":4,"losses":2,"rating":1532,"xp":150,"level":2}]}"#;
        let ServerLine::End(end) = parse_line(end).unwrap() else {
            panic!("not an end")
        };
        assert_eq!((end.match_id, end.winner, end.results[0].wins), (7, 1, 4));
        let error = parse_line(br#"{"t":"error","error":"match_started"}"#).unwrap();
        assert_eq!(
            error,
            ServerLine::Error {
                error: "match_started".into()
            }
        );
        for bad in [
            &b"{"[..],
            br#"{"t":"dance"}"#,
            br#"{"t":"state","tick":-1}"#,
        ] {
            assert_eq!(parse_line(bad).unwrap_err().code(), "bad_response");
        }
    }

    async fn pair() -> (LineConn, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (conn, accepted) = tokio::join!(LineConn::connect(None, addr), listener.accept());
        (conn.unwrap(), accepted.unwrap().0)
    }

    #[tokio::test]
    async fn lines_split_across_writes_survive_a_cancelled_read() {
        let (mut conn, mut server) = pair().await;
        server.write_all(br#"{"t":"joined","#).await.unwrap();
        // The read is cancelled with half a line in the buffer ...
        let cancelled = tokio::time::timeout(Duration::from_millis(50), conn.next()).await;
        assert!(cancelled.is_err());
        server
            .write_all(b"\"match\":1,\"player\":0}\n{\"t\":\"error\",\"error\":\"x\"}\n")
            .await
            .unwrap();
        // ... and the next read still returns it whole, then the one after it.
        assert!(matches!(
            conn.next().await.unwrap(),
            ServerLine::Joined { .. }
        ));
        assert!(matches!(
            conn.next().await.unwrap(),
            ServerLine::Error { .. }
        ));
        drop(server);
        assert_eq!(conn.next().await.unwrap_err().code(), "closed");
    }

    #[tokio::test]
    async fn overlong_lines_are_refused_without_growing_the_buffer() {
        let (mut conn, mut server) = pair().await;
        let writer = tokio::spawn(async move {
            let chunk = vec![b'x'; LINE_BYTES_MAX];
            // The reader stops after a line's worth; the rest may not be taken.
            let _ = server.write_all(&chunk).await;
            let _ = server.write_all(&chunk).await;
            server
        });
        assert_eq!(conn.next().await.unwrap_err().code(), "line_too_long");
        assert!(conn.buf.len() <= LINE_BYTES_MAX + READ_CHUNK_BYTES);
        drop(conn);
        let _ = writer.await;
    }

    #[tokio::test]
    async fn sent_messages_are_one_line_each() {
        let (mut conn, server) = pair().await;
        conn.send(&serde_json::json!({"t": "join", "ticket": "a\nb"}))
            .await
            .unwrap();
        drop(conn);
        let mut received = String::new();
        let mut server = server;
        server.read_to_string(&mut received).await.unwrap();
        assert_eq!(received, "{\"t\":\"join\",\"ticket\":\"a\\nb\"}\n");
    }
}
