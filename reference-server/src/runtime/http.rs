//! HTTP/1.1 request and response values shared by every HTTP service.
//!
//! Parsing of the wire bytes lives in [`crate::runtime::event_loop`]; this module only holds the
//! parsed request, the response builder and the JSON error shape of SPEC §3.

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;

use serde::Serialize;

/// A complete request as the event loop hands it to a service.
#[derive(Debug, Clone)]
pub struct Request {
    /// The method, for example `GET`.
    pub method: String,
    /// The path without the query string, still percent-encoded.
    pub path: String,
    /// The raw query string after `?`, empty when there is none.
    pub query: String,
    /// Header names (lower-cased) and values in arrival order.
    pub headers: Vec<(String, String)>,
    /// The body, exactly `Content-Length` bytes.
    pub body: Vec<u8>,
    /// The peer's address: lobby and profile bind sessions to its IP.
    pub peer: SocketAddr,
}

impl Request {
    /// The first header with this (lower-case) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first query parameter with this name, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then(|| percent_decode(v).unwrap_or_default())
        })
    }

    /// The token of an `Authorization: Bearer <token>` header.
    pub fn bearer(&self) -> Option<&str> {
        let value = self.header("authorization")?;
        let (scheme, token) = value.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    }
}

/// Decodes `%XX` escapes and `+` is kept as is (paths and our query values never use it
/// for spaces). Returns `None` on a broken escape or bytes that are not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A response body: owned bytes, or a slice of a shared buffer so a file node can serve
/// the same in-memory file to many clients without copying it per request.
#[derive(Debug, Clone)]
pub enum Body {
    /// No body at all.
    Empty,
    /// Bytes owned by this response.
    Owned(Vec<u8>),
    /// A range of a buffer shared with other responses.
    Shared(Arc<[u8]>, Range<usize>),
}

impl Body {
    /// The number of body bytes.
    pub fn len(&self) -> usize {
        match self {
            Body::Empty => 0,
            Body::Owned(v) => v.len(),
            Body::Shared(_, r) => r.len(),
        }
    }

    /// True when there are no body bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A response under construction.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Extra headers; `Content-Length`, `Connection` and `Date`-free framing are added by
    /// the event loop.
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: Body,
    /// Close the connection after this response (malformed requests, refusals).
    pub close: bool,
}

/// The JSON error body of SPEC §3.
#[derive(Debug, Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    detail: &'a str,
}

impl Response {
    /// An empty response with this status.
    pub fn empty(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Body::Empty,
            close: false,
        }
    }

    /// A JSON response.
    pub fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Response {
        // Serializing our own plain structs cannot fail; a failure is a programming error.
        let body = serde_json::to_vec(value).expect("response values serialize");
        Response {
            status,
            headers: vec![("Content-Type", "application/json".to_string())],
            body: Body::Owned(body),
            close: false,
        }
    }

    /// `{"error": code, "detail": detail}` with this status.
    pub fn error(status: u16, code: &str, detail: &str) -> Response {
        Response::json(
            status,
            &ErrorBody {
                error: code,
                detail,
            },
        )
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// Marks the connection to be closed once this response is written.
    pub fn closing(mut self) -> Response {
        self.close = true;
        self
    }

    /// The head bytes: status line, headers, framing headers and the blank line.
    pub fn head_bytes(&self, keep_alive: bool) -> Vec<u8> {
        use std::fmt::Write;
        let mut head = String::with_capacity(128);
        let _ = write!(head, "HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (name, value) in &self.headers {
            let _ = write!(head, "{name}: {value}\r\n");
        }
        let _ = write!(head, "Content-Length: {}\r\n", self.body.len());
        if !keep_alive {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        head.into_bytes()
    }
}

/// The reason phrase of every status the services send.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        206 => "Partial Content",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// The standard "no such route" answer.
pub fn not_found(req: &Request) -> Response {
    Response::error(
        404,
        "not_found",
        &format!("no route for {} {}", req.method, req.path),
    )
}

/// The standard "wrong method" answer to a request for a known path. SPEC §3 names the
/// methods the path does answer in an `Allow` header, so they are a required argument.
pub fn method_not_allowed(req: &Request, allowed: &[&str]) -> Response {
    let allow = allowed.join(", ");
    Response::error(
        405,
        "method_not_allowed",
        &format!("{} is not allowed on {}; use {allow}", req.method, req.path),
    )
    .with_header("Allow", allow)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(query: &str, headers: &[(&str, &str)]) -> Request {
        Request {
            method: "GET".into(),
            path: "/".into(),
            query: query.into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: Vec::new(),
            peer: "127.0.0.1:1".parse().unwrap(),
        }
    }

    #[test]
    fn query_params_are_decoded() {
        let r = req("a=1&version=1.0%2E0&flag", &[]);
        assert_eq!(r.query_param("version").as_deref(), Some("1.0.0"));
        assert_eq!(r.query_param("flag").as_deref(), Some(""));
        assert_eq!(r.query_param("missing"), None);
    }

    #[test]
    fn bearer_token_is_case_insensitive_on_scheme() {
        let r = req("", &[("authorization", "bearer abc")]);
        assert_eq!(r.bearer(), Some("abc"));
        let r = req("", &[("authorization", "Basic abc")]);
        assert_eq!(r.bearer(), None);
    }

    #[test]
    fn percent_decode_rejects_broken_escapes() {
        assert_eq!(percent_decode("%2e%2E").as_deref(), Some(".."));
        assert_eq!(percent_decode("%2"), None);
        assert_eq!(percent_decode("%zz"), None);
    }

    #[test]
    fn a_wrong_method_names_the_allowed_ones() {
        let r = method_not_allowed(&req("", &[]), &["GET", "POST"]);
        assert_eq!(r.status, 405);
        assert_eq!(
            r.headers,
            vec![
                ("Content-Type", "application/json".to_string()),
                ("Allow", "GET, POST".to_string()),
            ]
        );
    }

    #[test]
    fn error_body_has_the_spec_shape() {
        let r = Response::error(400, "bad_request", "version: missing");
        let Body::Owned(body) = r.body else {
            panic!("owned body")
        };
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"], "bad_request");
        assert_eq!(v["detail"], "version: missing");
    }
}
