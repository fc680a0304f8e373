//! The wire side of the HTTP client: writing one request and reading one response from
//! any byte stream, plain TCP or TLS, within the head and body bounds.

use super::{
    HttpError, Response, HTTP_BODY_BYTES_MAX, HTTP_HEADERS_MAX, HTTP_HEAD_BYTES_MAX,
    READ_CHUNK_BYTES,
};
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A failed exchange, and whether any of the response had arrived: if none had, the
/// server may simply have closed an idle keep-alive connection.
pub(crate) struct Exchange {
    pub(crate) error: HttpError,
    pub(crate) response_started: bool,
}

impl Exchange {
    fn started(error: HttpError) -> Exchange {
        Exchange {
            error,
            response_started: true,
        }
    }
}

/// A parsed response head.
struct Head {
    status: u16,
    headers: Vec<(String, String)>,
    head_len: usize,
    body_len: u64,
    keep_alive: bool,
}

/// Writes one request and reads its response; returns whether the connection stays open.
pub(crate) async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> Result<(Response, bool), Exchange> {
    stream.write_all(request).await.map_err(|e| Exchange {
        error: HttpError::Io(e),
        response_started: false,
    })?;
    let head = read_head(stream, buf).await?;
    let body = read_body(stream, buf, &head)
        .await
        .map_err(Exchange::started)?;
    let response = Response {
        status: head.status,
        headers: head.headers,
        body,
    };
    Ok((response, head.keep_alive))
}

async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> Result<Head, Exchange> {
    buf.clear();
    loop {
        if let Some(head) = parse_head(buf).map_err(Exchange::started)? {
            return Ok(head);
        }
        if buf.len() >= HTTP_HEAD_BYTES_MAX {
            let why = format!("head over {HTTP_HEAD_BYTES_MAX} bytes");
            return Err(Exchange::started(HttpError::BadResponse(why)));
        }
        buf.reserve(READ_CHUNK_BYTES);
        let read = stream.read_buf(buf).await;
        let response_started = !buf.is_empty();
        match read {
            Ok(0) => {
                return Err(Exchange {
                    error: HttpError::Closed,
                    response_started,
                })
            }
            Ok(_) => {}
            Err(e) => {
                return Err(Exchange {
                    error: HttpError::Io(e),
                    response_started,
                })
            }
        }
    }
}

/// Reads the body whose first bytes may already sit in `buf` after the head.
async fn read_body<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &[u8],
    head: &Head,
) -> Result<Vec<u8>, HttpError> {
    let already = &buf[head.head_len..];
    if already.len() as u64 > head.body_len {
        // The client never pipelines, so bytes past the body can only be a server bug.
        return Err(HttpError::BadResponse("bytes after the body".to_string()));
    }
    let mut body = vec![0; head.body_len as usize];
    body[..already.len()].copy_from_slice(already);
    stream
        .read_exact(&mut body[already.len()..])
        .await
        .map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => HttpError::Closed,
            _ => HttpError::Io(e),
        })?;
    Ok(body)
}

/// Parses a complete head at the start of `buf`; `None` while it is incomplete.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, HttpError> {
    let mut slots = [httparse::EMPTY_HEADER; HTTP_HEADERS_MAX];
    let mut parsed = httparse::Response::new(&mut slots);
    let head_len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(HttpError::BadResponse(e.to_string())),
    };
    let status = parsed.code.unwrap_or(0);
    let mut headers = Vec::with_capacity(parsed.headers.len());
    for header in parsed.headers.iter() {
        let value = std::str::from_utf8(header.value)
            .map_err(|_| HttpError::BadResponse(format!("header {} is not UTF-8", header.name)))?;
        headers.push((header.name.to_ascii_lowercase(), value.trim().to_string()));
    }
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    if find("transfer-encoding").is_some() {
        return Err(HttpError::BadResponse(
            "transfer-encoding is not supported".to_string(),
        ));
    }
    let body_len = match find("content-length") {
        Some(text) => text
            .parse::<u64>()
            .map_err(|_| HttpError::BadResponse(format!("content-length {text:?}")))?,
        None if status == 204 || status == 304 || (100..200).contains(&status) => 0,
        None => return Err(HttpError::BadResponse("no content-length".to_string())),
    };
    if body_len > HTTP_BODY_BYTES_MAX {
        let why = format!("body of {body_len} bytes, over {HTTP_BODY_BYTES_MAX}");
        return Err(HttpError::BadResponse(why));
    }
    let connection = find("connection").map(str::to_ascii_lowercase);
    let keep_alive = match parsed.version {
        Some(0) => connection.as_deref() == Some("keep-alive"),
        _ => connection.as_deref() != Some("close"),
    };
    Ok(Some(Head {
        status,
        headers,
        head_len,
        body_len,
        keep_alive,
    }))
}
