//! Parsing a request head with httparse, with the limits of SPEC §3 checked before the
//! body arrives.

use std::net::SocketAddr;

use super::{BODY_BYTES_MAX, HEADERS_COUNT_MAX, HEAD_BYTES_MAX};
use crate::runtime::http::{Request, Response};

pub(super) struct Parsed {
    pub(super) head_len: usize,
    pub(super) content_length: usize,
    pub(super) keep_alive: bool,
    pub(super) request: Request,
}

pub(super) enum Parse {
    Partial,
    Complete(Parsed),
    Reject(Response),
}

/// Parses one request head with httparse and checks the limits it can check before the
/// body arrives. The returned request's body is filled in by the caller.
pub(super) fn parse_request(buf: &[u8], peer: SocketAddr) -> Parse {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_COUNT_MAX];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Partial) => return Parse::Partial,
        Ok(httparse::Status::Complete(n)) => n,
        Err(httparse::Error::TooManyHeaders) => {
            return Parse::Reject(Response::error(
                431,
                "head_too_large",
                &format!("more than {HEADERS_COUNT_MAX} headers"),
            ))
        }
        Err(err) => {
            return Parse::Reject(Response::error(
                400,
                "bad_request",
                &format!("malformed request head: {err}"),
            ))
        }
    };
    if head_len > HEAD_BYTES_MAX {
        return Parse::Reject(Response::error(
            431,
            "head_too_large",
            "request head exceeds 16 KiB",
        ));
    }
    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    let mut keep_alive = req.version == Some(1);
    let mut owned = Vec::with_capacity(req.headers.len());
    for header in req.headers.iter() {
        let name = header.name.to_ascii_lowercase();
        let Ok(value) = std::str::from_utf8(header.value) else {
            return Parse::Reject(Response::error(
                400,
                "bad_request",
                &format!("header {name}: not UTF-8"),
            ));
        };
        match name.as_str() {
            "content-length" => match parse_length(value) {
                // A repeat of the same length is harmless; two different ones are how
                // a request is smuggled past a peer that reads the other (RFC 9112 6.3).
                Some(n) if content_length.is_none_or(|seen| seen == n) => content_length = Some(n),
                Some(_) => {
                    return Parse::Reject(Response::error(
                        400,
                        "bad_request",
                        "header content-length: given twice with different values",
                    ))
                }
                None => {
                    return Parse::Reject(Response::error(
                        400,
                        "bad_request",
                        "header content-length: not a number",
                    ))
                }
            },
            "transfer-encoding" => chunked = true,
            "connection" => {
                let value = value.to_ascii_lowercase();
                if value.contains("close") {
                    keep_alive = false;
                } else if value.contains("keep-alive") {
                    keep_alive = true;
                }
            }
            _ => {}
        }
        owned.push((name, value.to_string()));
    }
    // Both framings at once is malformed: which one a peer believed is how requests are
    // smuggled (RFC 9112 6.1). Either alone gets its own answer.
    if chunked && content_length.is_some() {
        return Parse::Reject(Response::error(
            400,
            "bad_request",
            "headers content-length and transfer-encoding: send only one",
        ));
    }
    if chunked {
        return Parse::Reject(Response::error(
            411,
            "length_required",
            "header transfer-encoding: chunked bodies are not accepted, send Content-Length",
        ));
    }
    let content_length = content_length.unwrap_or(0);
    if content_length > BODY_BYTES_MAX {
        return Parse::Reject(Response::error(
            413,
            "body_too_large",
            &format!("content-length {content_length} exceeds {BODY_BYTES_MAX} bytes"),
        ));
    }
    // httparse guarantees method and path on a complete parse.
    let target = req.path.unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Parse::Complete(Parsed {
        head_len,
        content_length,
        keep_alive,
        request: Request {
            method: req.method.unwrap_or("GET").to_string(),
            path: path.to_string(),
            query: query.to_string(),
            headers: owned,
            body: Vec::new(),
            peer,
        },
    })
}

/// A `Content-Length` value: decimal digits only (RFC 9110 8.6), so `+5`, `-1`, `0x10`
/// and lists are refused rather than read as some number.
fn parse_length(value: &str) -> Option<usize> {
    let digits = value.trim();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Parse {
        parse_request(bytes, "127.0.0.1:9".parse().unwrap())
    }

    #[test]
    fn complete_head_splits_path_and_query() {
        let Parse::Complete(p) = parse(b"GET /v1/update?version=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        else {
            panic!("complete")
        };
        assert_eq!(p.request.path, "/v1/update");
        assert_eq!(p.request.query, "version=1");
        assert!(p.keep_alive);
    }

    #[test]
    fn http10_closes_unless_asked() {
        let Parse::Complete(p) = parse(b"GET / HTTP/1.0\r\n\r\n") else {
            panic!()
        };
        assert!(!p.keep_alive);
        let Parse::Complete(p) = parse(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n") else {
            panic!()
        };
        assert!(p.keep_alive);
    }

    #[test]
    fn oversized_body_is_413_before_reading_it() {
        let head = format!(
            "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            BODY_BYTES_MAX + 1
        );
        let Parse::Reject(r) = parse(head.as_bytes()) else {
            panic!()
        };
        assert_eq!(r.status, 413);
    }

    #[test]
    fn garbage_is_400_and_chunked_is_411() {
        let Parse::Reject(r) = parse(b"\x00\x01 nonsense\r\n\r\n") else {
            panic!()
        };
        assert_eq!(r.status, 400);
        let Parse::Reject(r) = parse(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
        else {
            panic!()
        };
        assert_eq!(r.status, 411);
    }

    #[test]
    fn lengths_are_digits_only_and_never_ambiguous() {
        for bad in [
            &b"POST / HTTP/1.1\r\nContent-Length: +2\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            let Parse::Reject(r) = parse(bad) else {
                panic!("{}", String::from_utf8_lossy(bad))
            };
            assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(bad));
        }
        let Parse::Complete(p) =
            parse(b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n")
        else {
            panic!("a repeated equal length is fine")
        };
        assert_eq!(p.content_length, 2);
    }
}
