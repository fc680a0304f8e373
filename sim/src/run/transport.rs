//! How coordinator and workers exchange messages: one JSON object per line, over any
//! async byte stream. Worker processes use their stdin and stdout; agents on other hosts
//! can use the two halves of a TCP connection with the same reader and writer.
//!
//! Every line is bounded: a reader given a longer one fails rather than buffer it, and
//! is then out of step with its stream, so its caller stops reading.

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Why the next message could not be read.
#[derive(Debug, thiserror::Error)]
pub(super) enum TransportError {
    /// The stream failed.
    #[error("reading a message")]
    Read(#[source] io::Error),
    /// A line longer than the reader's bound; the stream is out of step from here on.
    #[error("a message over {0} bytes")]
    TooLong(usize),
    /// A complete line that is not a message of the expected type; the next line may be.
    #[error("unreadable message")]
    Parse(#[source] serde_json::Error),
}

impl TransportError {
    /// Whether the reader can go on with the next line.
    pub(super) fn is_recoverable(&self) -> bool {
        matches!(self, TransportError::Parse(_))
    }
}

/// Reads messages, one JSON object per line, from a buffered stream.
#[derive(Debug)]
pub(super) struct MessageReader<R> {
    stream: R,
    line_bytes_max: usize,
    buf: Vec<u8>,
    /// Bytes read so far, newlines included.
    bytes_read: u64,
}

impl<R: AsyncBufRead + Unpin> MessageReader<R> {
    /// A reader of `stream` that refuses lines over `line_bytes_max` bytes.
    pub(super) fn new(stream: R, line_bytes_max: usize) -> MessageReader<R> {
        MessageReader {
            stream,
            line_bytes_max,
            buf: Vec::new(),
            bytes_read: 0,
        }
    }

    /// From now on, refuses lines over `line_bytes_max` bytes: a handshake's bound is
    /// not a worker's.
    pub(super) fn set_line_bytes_max(&mut self, line_bytes_max: usize) {
        self.line_bytes_max = line_bytes_max;
    }

    /// Bytes read from the stream so far.
    pub(super) fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// The next message, or `None` at the end of the stream. Not cancel-safe: a message
    /// half read when the future is dropped is lost, so each reader has a task of its
    /// own.
    pub(super) async fn recv<M: DeserializeOwned>(&mut self) -> Result<Option<M>, TransportError> {
        self.buf.clear();
        // One byte beyond the bound tells a line that is too long from one that fits.
        let limit = self.line_bytes_max as u64 + 1;
        let read = (&mut self.stream)
            .take(limit)
            .read_until(b'\n', &mut self.buf)
            .await
            .map_err(TransportError::Read)?;
        self.bytes_read += read as u64;
        if read == 0 {
            return Ok(None);
        }
        if self.buf.last() == Some(&b'\n') {
            self.buf.pop();
        }
        if self.buf.len() > self.line_bytes_max {
            return Err(TransportError::TooLong(self.line_bytes_max));
        }
        serde_json::from_slice(&self.buf)
            .map(Some)
            .map_err(TransportError::Parse)
    }
}

/// Writes messages, one JSON object per line, to a stream.
#[derive(Debug)]
pub(super) struct MessageWriter<W> {
    stream: W,
}

impl<W: AsyncWrite + Unpin> MessageWriter<W> {
    /// A writer to `stream`.
    pub(super) fn new(stream: W) -> MessageWriter<W> {
        MessageWriter { stream }
    }

    /// Writes `message` as one line, in one write, so that lines never interleave.
    pub(super) async fn send<M: Serialize>(&mut self, message: &M) -> io::Result<()> {
        let mut line = serde_json::to_vec(message).expect("protocol messages serialize");
        line.push(b'\n');
        self.stream.write_all(&line).await
    }

    /// Flushes what was written.
    pub(super) async fn flush(&mut self) -> io::Result<()> {
        self.stream.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use tokio::io::BufReader;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Message {
        Ping(u64),
    }

    #[tokio::test]
    async fn messages_cross_a_stream_in_order_and_end_with_it() {
        let (near, far) = tokio::io::duplex(64);
        let mut writer = MessageWriter::new(near);
        let sent = tokio::spawn(async move {
            for n in 0..100 {
                writer.send(&Message::Ping(n)).await.unwrap();
            }
        });
        let mut reader = MessageReader::new(BufReader::new(far), 1024);
        for n in 0..100 {
            assert_eq!(
                reader.recv::<Message>().await.unwrap(),
                Some(Message::Ping(n))
            );
        }
        sent.await.unwrap();
        assert_eq!(reader.recv::<Message>().await.unwrap(), None);
    }

    #[tokio::test]
    async fn an_unreadable_line_is_skipped_and_a_long_one_stops_the_reader() {
        let input: &[u8] = b"{\"Ping\":1}\nnonsense\n{\"Ping\":2}\n{\"Ping\":12345678}\n";
        let mut reader = MessageReader::new(input, 12);
        assert_eq!(
            reader.recv::<Message>().await.unwrap(),
            Some(Message::Ping(1))
        );
        let unreadable = reader.recv::<Message>().await.unwrap_err();
        assert!(unreadable.is_recoverable(), "{unreadable:?}");
        assert_eq!(
            reader.recv::<Message>().await.unwrap(),
            Some(Message::Ping(2))
        );
        let long = reader.recv::<Message>().await.unwrap_err();
        assert!(matches!(long, TransportError::TooLong(12)), "{long:?}");
        assert!(!long.is_recoverable());
    }
}
