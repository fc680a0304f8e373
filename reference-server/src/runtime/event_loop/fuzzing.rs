//! Entry point for the fuzz targets under `fuzz/` (not a public API): one connection's
//! bytes go through the loop's own [`Server::process`] (head parsing, limits, body
//! framing, pipelining, the handler's routing) exactly as if they had been read from a
//! socket, and the answers come back as the bytes the loop would write.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use super::conn::{queue, Chunk, Conn, Transport};
use super::{bind_loopback, Handler, Limits, Server};

/// A deferred answer that takes longer than this is a hang, which the fuzzer reports.
const DEFERRED_WAIT_MS: u64 = 30_000;

/// One server and one connection whose input buffer the fuzzer fills.
#[derive(Debug)]
pub struct Harness<H> {
    server: Server<H>,
    key: usize,
    /// The client end of the connection, kept open; nothing is ever written to it.
    _client: TcpStream,
}

impl<H: Handler> Harness<H> {
    /// A server for `handler` with one connection from a loopback client.
    pub fn new(handler: H) -> io::Result<Harness<H>> {
        let listener = bind_loopback()?;
        let client = TcpStream::connect(listener.local_addr()?)?;
        let (stream, peer) = listener.accept()?;
        stream.set_nonblocking(true)?;
        let mut server = Server::new(listener, handler, Limits::default())?;
        let key = server.conns.insert(Conn {
            stream: Transport::Plain(mio::net::TcpStream::from_std(stream)),
            peer,
            gen: 1,
            inbuf: Vec::new(),
            out: Default::default(),
            awaiting: None,
            close_after_flush: false,
            read_closed: false,
            request_started: None,
            last_progress: Instant::now(),
        });
        Ok(Harness {
            server,
            key,
            _client: client,
        })
    }

    /// The address requests come from.
    pub fn peer(&self) -> SocketAddr {
        self.server.conns[self.key].peer
    }

    /// Processes `bytes` as one connection's input and returns everything the loop would
    /// write back, as a client that reads every answer sees it. A deferred answer is
    /// awaited, as the loop awaits it before parsing the next pipelined request.
    pub fn serve(&mut self, bytes: &[u8]) -> Vec<u8> {
        let conn = &mut self.server.conns[self.key];
        conn.inbuf.clear();
        conn.inbuf.extend_from_slice(bytes);
        conn.out.clear();
        conn.awaiting = None;
        conn.close_after_flush = false;
        conn.request_started = None;
        let mut written = Vec::new();
        loop {
            let held = self.server.process(self.key);
            let conn = &mut self.server.conns[self.key];
            let Some(awaiting) = conn.awaiting.take() else {
                if held {
                    // Stopped for the answers queued: the client reads them, then more.
                    take_written(conn, &mut written);
                    continue;
                }
                break;
            };
            let done = match self
                .server
                .rx
                .recv_timeout(Duration::from_millis(DEFERRED_WAIT_MS))
            {
                Ok(done) => done,
                Err(RecvTimeoutError::Timeout) => {
                    panic!("a deferred answer did not come within {DEFERRED_WAIT_MS} ms")
                }
                Err(RecvTimeoutError::Disconnected) => unreachable!("the server holds a sender"),
            };
            assert_eq!(
                (done.key, done.gen),
                (self.key, conn.gen),
                "a deferred answer for another connection"
            );
            queue(conn, done.response, awaiting.keep_alive);
        }
        take_written(&mut self.server.conns[self.key], &mut written);
        written
    }
}

/// Moves what is queued on `conn` to `written`, as a flush to the socket would.
fn take_written(conn: &mut Conn, written: &mut Vec<u8>) {
    for chunk in conn.out.drain(..) {
        match chunk {
            Chunk::Owned(bytes, pos) => written.extend_from_slice(&bytes[pos..]),
            Chunk::Shared(buf, range) => written.extend_from_slice(&buf[range]),
        }
    }
}
