//! Malformed HTTP on every HTTP port (SPEC §3, §5): broken request lines and headers,
//! CR/LF injection, both `Content-Length` and `Transfer-Encoding`, lying and negative
//! lengths, oversized heads and bodies, absurd numbers in queries and path traversal in
//! every encoding. Each bad request gets a clean 4xx (never a 500, a hang or a crash),
//! and a well-behaved client is served at once after it, on that port and a connection
//! held open across the attacks. Profile gets the same bytes inside TLS.

use std::io::Write;
use std::time::Duration;

use catwar_server::domain::resources::DEFAULT_CURRENT_VERSION;
use catwar_server::runtime::event_loop::{
    Limits, BODY_BYTES_MAX, HEADERS_COUNT_MAX, HEAD_BYTES_MAX,
};

use crate::fleet::{closed, healthz, open, Fleet, Port, Wire, PLAIN_HTTP};
use crate::util::{get, read_response, Raw};

/// A request timeout the test waits out. It covers profile's TLS handshakes too, so it
/// is far above what a handshake takes on a loaded machine.
const REQUEST_TIMEOUT_MS: u64 = 2_000;

/// Every port that speaks HTTP: the plain ones and profile over TLS.
fn http_ports() -> impl Iterator<Item = Port> {
    PLAIN_HTTP.into_iter().chain([Port::Profile])
}

/// Sends `bytes` on a new connection; returns the answer, if any, and the stream.
fn send(fleet: &Fleet, port: Port, bytes: &[u8]) -> (Option<Raw>, Box<dyn Wire>) {
    let mut stream = open(fleet, port);
    stream.write_all(bytes).unwrap();
    let raw = read_response(&mut stream, &mut Vec::new());
    (raw, stream)
}

/// Keep-alive clients, one per HTTP port, held open across the attacks: each must be
/// served after every bad request another client sent.
struct Held(Vec<(Port, Box<dyn Wire>)>);

impl Held {
    fn open(fleet: &Fleet) -> Held {
        let mut held = Held(http_ports().map(|p| (p, open(fleet, p))).collect());
        // A first request at once: profile's request timeout counts from the handshake.
        held.served("opening");
        held
    }

    fn served(&mut self, after: &str) {
        for (port, stream) in &mut self.0 {
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
                .unwrap();
            let raw = read_response(stream, &mut Vec::new())
                .unwrap_or_else(|| panic!("{port:?}: held client closed after {after}"));
            assert_eq!(raw.status, 200, "{port:?}: held client after {after}");
        }
    }
}

/// Heads that must be refused with `status` and `code`, then the connection closed.
fn malformed_heads() -> Vec<(String, Vec<u8>, u16, &'static str)> {
    let mut cases: Vec<(String, Vec<u8>, u16, &'static str)> = [
        (
            "an HTTP/2 preface",
            &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
            400,
            "bad_request",
        ),
        (
            "an HTTP/0.9 request line",
            b"GET /\r\n\r\n",
            400,
            "bad_request",
        ),
        (
            "an unknown version",
            b"GET / HTTP/9.9\r\n\r\n",
            400,
            "bad_request",
        ),
        (
            "a space in the target",
            b"GET /a b HTTP/1.1\r\n\r\n",
            400,
            "bad_request",
        ),
        ("no method", b" / HTTP/1.1\r\n\r\n", 400, "bad_request"),
        (
            "a NUL in the target",
            b"GET /\x00 HTTP/1.1\r\n\r\n",
            400,
            "bad_request",
        ),
        (
            "overlong UTF-8 in the target",
            b"GET /\xc0\xae\xc0\xae HTTP/1.1\r\n\r\n",
            400,
            "bad_request",
        ),
        (
            "a header without a colon",
            b"GET / HTTP/1.1\r\nNoColon\r\n\r\n",
            400,
            "bad_request",
        ),
        (
            "a space in a header name",
            b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
            400,
            "bad_request",
        ),
        (
            "an obsolete folded header",
            b"GET / HTTP/1.1\r\nX-A: a\r\n folded\r\n\r\n",
            400,
            "bad_request",
        ),
        (
            "a NUL in a header value",
            b"GET / HTTP/1.1\r\nX-A: a\x00b\r\n\r\n",
            400,
            "bad_request",
        ),
        (
            "a bare CR in a header value",
            b"GET / HTTP/1.1\r\nX-A: a\rInjected: 1\r\n\r\n",
            400,
            "bad_request",
        ),
        (
            "CR/LF injected into the request line",
            b"GET /x\r\nSet-Cookie: a=1 HTTP/1.1\r\n\r\n",
            400,
            "bad_request",
        ),
        (
            "a header value that is not UTF-8",
            b"GET / HTTP/1.1\r\nX-A: \xff\xfe\r\n\r\n",
            400,
            "bad_request",
        ),
        (
            "a negative Content-Length",
            b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            400,
            "bad_request",
        ),
        (
            "a signed Content-Length",
            b"POST / HTTP/1.1\r\nContent-Length: +2\r\n\r\n{}",
            400,
            "bad_request",
        ),
        (
            "a hexadecimal Content-Length",
            b"POST / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n",
            400,
            "bad_request",
        ),
        (
            "a Content-Length beyond 64 bits",
            b"POST / HTTP/1.1\r\nContent-Length: 184467440737095516160\r\n\r\n",
            400,
            "bad_request",
        ),
        (
            "a Content-Length list",
            b"POST / HTTP/1.1\r\nContent-Length: 2, 2\r\n\r\n{}",
            400,
            "bad_request",
        ),
        (
            "two different Content-Lengths",
            b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 7\r\n\r\n{}",
            400,
            "bad_request",
        ),
        (
            "Content-Length and Transfer-Encoding",
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
            "bad_request",
        ),
        (
            "Transfer-Encoding and Content-Length",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
            400,
            "bad_request",
        ),
        (
            "a chunked body",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            411,
            "length_required",
        ),
        (
            "a gzip-then-chunked body",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            411,
            "length_required",
        ),
        (
            "a body over the limit",
            b"POST / HTTP/1.1\r\nContent-Length: 1000000000\r\n\r\n",
            413,
            "body_too_large",
        ),
    ]
    .into_iter()
    .map(|(what, bytes, status, code)| (what.to_string(), bytes.to_vec(), status, code))
    .collect();
    let mut many = b"GET / HTTP/1.1\r\n".to_vec();
    for i in 0..=HEADERS_COUNT_MAX {
        many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    cases.push(("one header too many".into(), many, 431, "head_too_large"));
    let long_target = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(HEAD_BYTES_MAX));
    cases.push((
        "a target over the head limit".into(),
        long_target.into_bytes(),
        431,
        "head_too_large",
    ));
    cases
}

#[test]
fn malformed_heads_get_a_clean_4xx_and_a_close_on_every_http_port() {
    let fleet = Fleet::start(Limits::default());
    let mut held = Held::open(&fleet);
    for (what, bytes, status, code) in malformed_heads() {
        for port in http_ports() {
            let (raw, mut stream) = send(&fleet, port, &bytes);
            let raw = raw.unwrap_or_else(|| panic!("{port:?}: no answer to {what}"));
            assert_eq!(raw.status, status, "{port:?}: {what}");
            assert_eq!(raw.json()["error"], code, "{port:?}: {what}");
            assert_eq!(raw.header("connection"), Some("close"), "{port:?}: {what}");
            assert!(closed(stream.as_mut()), "{port:?}: still open after {what}");
            fleet.served(port);
        }
        held.served(&what);
    }
    fleet.all_served();
}

#[test]
fn a_body_over_the_limit_is_refused_before_the_rest_of_it_is_sent() {
    /// What the client claims to send: far more than it ever does.
    const CLAIMED_BYTES: usize = 64 * 1024 * 1024;
    /// What it sends before it reads the answer: less than the limit, so the answer
    /// cannot have waited for the body.
    const SENT_BYTES: usize = 16 * 1024;
    let fleet = Fleet::start(Limits::default());
    for port in http_ports() {
        let mut stream = open(&fleet, port);
        let head = format!("POST /v1/login HTTP/1.1\r\nContent-Length: {CLAIMED_BYTES}\r\n\r\n");
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(&vec![b'x'; SENT_BYTES]).unwrap();
        let raw = read_response(&mut stream, &mut Vec::new())
            .unwrap_or_else(|| panic!("{port:?}: no 413 before the body"));
        assert_eq!(raw.status, 413, "{port:?}");
        assert_eq!(raw.json()["error"], "body_too_large", "{port:?}");
        assert!(closed(stream.as_mut()), "{port:?}");
        // Exactly the limit is still fine: the route answers, whatever it makes of it.
        let mut ok =
            format!("POST /nope HTTP/1.1\r\nContent-Length: {BODY_BYTES_MAX}\r\n\r\n").into_bytes();
        ok.extend(std::iter::repeat_n(b'x', BODY_BYTES_MAX));
        let (raw, _) = send(&fleet, port, &ok);
        assert_eq!(raw.expect("an answer").status, 404, "{port:?}");
        fleet.served(port);
    }
}

#[test]
fn lying_lengths_are_taken_at_their_word_and_short_bodies_time_out() {
    let fleet = Fleet::start(Limits {
        request_timeout: Duration::from_millis(REQUEST_TIMEOUT_MS),
        ..Limits::default()
    });
    // A length longer than the body: the server waits for the rest, then gives up. All
    // ports wait at once.
    let short: Vec<(Port, Box<dyn Wire>)> = http_ports()
        .map(|port| {
            let mut stream = open(&fleet, port);
            stream
                .write_all(b"POST /nope HTTP/1.1\r\nContent-Length: 10\r\n\r\n12345")
                .unwrap();
            (port, stream)
        })
        .collect();
    for port in http_ports() {
        // A length shorter than the body: the rest is read as the next request, which
        // is garbage, so the first is answered and the second refused.
        let mut stream = open(&fleet, port);
        stream
            .write_all(b"POST /nope HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}GARBAGE\x01\r\n\r\n")
            .unwrap();
        let mut pending = Vec::new();
        let first = read_response(&mut stream, &mut pending).expect("the first answer");
        assert_eq!(first.status, 404, "{port:?}");
        let second = read_response(&mut stream, &mut pending).expect("the second answer");
        assert_eq!(second.status, 400, "{port:?}");
        assert!(closed(stream.as_mut()), "{port:?}");
        fleet.served(port);
    }
    for (port, mut stream) in short {
        let raw = read_response(&mut stream, &mut Vec::new())
            .unwrap_or_else(|| panic!("{port:?}: no 408"));
        assert_eq!(raw.status, 408, "{port:?}");
        assert_eq!(raw.json()["error"], "request_timeout", "{port:?}");
        assert!(closed(stream.as_mut()), "{port:?}");
        fleet.served(port);
    }
}

#[test]
fn cr_lf_decoded_from_a_request_never_reaches_a_response_head() {
    let fleet = Fleet::start(Limits::default());
    let injected = "%0d%0aSet-Cookie:%20evil=1%0d%0aX-Injected:%201";
    let cases = [
        (Port::Storage, format!("/nope{injected}"), 404),
        (
            Port::Storage,
            format!("/v1/update?version=1{injected}"),
            400,
        ),
        (Port::Balancer, format!("/v1/pick?n=1{injected}"), 400),
        (
            Port::FileNode,
            format!("/v1/files/{DEFAULT_CURRENT_VERSION}/x{injected}"),
            404,
        ),
        (Port::FileNode, format!("/v1/files/1.0{injected}/x"), 400),
        (Port::Lobby, format!("/v1/ranking?limit=1{injected}"), 400),
        (Port::Router, format!("/nope{injected}"), 404),
    ];
    for (port, target, status) in cases {
        let raw = get(fleet.addr(port), &target);
        assert_eq!(raw.status, status, "{port:?} {target}");
        for (name, value) in &raw.headers {
            assert!(
                !name.eq_ignore_ascii_case("set-cookie")
                    && !name.eq_ignore_ascii_case("x-injected"),
                "{port:?} {target}: injected header {name}: {value}"
            );
        }
        // Whatever the detail says, it is one JSON string.
        assert!(raw.json()["detail"].is_string(), "{port:?} {target}");
        fleet.served(port);
    }
}

#[test]
fn path_traversal_in_every_encoding_is_400_at_the_file_node() {
    let fleet = Fleet::start(Limits::default());
    let node = fleet.addr(Port::FileNode);
    let v = DEFAULT_CURRENT_VERSION;
    let good = format!("/v1/files/{v}/catwar.pak");
    let traversals = [
        format!("/v1/files/{v}/../current"),
        format!("/v1/files/{v}/maps/../../current"),
        "/v1/files/../current".to_string(),
        "/v1/files/..".to_string(),
        format!("/v1/files/{v}/./catwar.pak"),
        format!("/v1/files/{v}/%2e%2e/current"),
        format!("/v1/files/{v}/%2E%2E%2Fcurrent"),
        format!("/v1/files/{v}/.%2e/current"),
        format!("/v1/files/{v}/%2e./current"),
        "/v1/files/%2e%2e/current".to_string(),
        format!("/v1/files/{v}/%252e%252e/current"),
        format!("/v1/files/{v}/%252e%252e%252fcurrent"),
        format!("/v1/files/{v}/%25252e%25252e/current"),
        format!("/v1/files/{v}//etc/passwd"),
        format!("/v1/files/{v}/%2fetc%2fpasswd"),
        "/v1/files//etc/passwd".to_string(),
        "/v1/files/%2fetc/passwd".to_string(),
        format!("/v1/files/{v}/..\\..\\etc\\passwd"),
        format!("/v1/files/{v}/..%5c..%5cetc%5cpasswd"),
        format!("/v1/files/{v}/%5cetc%5cpasswd"),
        format!("/v1/files/{v}/%c0%ae%c0%ae/current"),
        format!("/v1/files/{v}/%c0%2e%c0%2e/current"),
        format!("/v1/files/{v}/%e0%80%ae%e0%80%ae/current"),
        format!("/v1/files/{v}/%c1%9c..%c1%9ccurrent"),
        format!("/v1/files/{v}/catwar.pak%00.png"),
        format!("/v1/files/{v}/%ZZ"),
        format!("/v1/files/{v}/%"),
    ];
    for target in &traversals {
        let raw = get(node, target);
        assert_eq!(raw.status, 400, "{target}");
        assert_eq!(raw.json()["error"], "bad_request", "{target}");
        assert_eq!(get(node, &good).status, 200, "after {target}");
    }
    // Names that only look odd are no traversal: nothing of that name, so 404.
    for target in [
        format!("/v1/files/{v}/\u{ff0e}\u{ff0e}/current"),
        format!("/v1/files/{v}/...."),
        "/v1/files/.../catwar.pak".to_string(),
    ] {
        assert_eq!(get(node, &target).status, 404, "{target}");
    }
    // Raw overlong bytes in the target never get past the head parser.
    let mut raw_bytes = format!("GET /v1/files/{v}/").into_bytes();
    raw_bytes.extend_from_slice(b"\xc0\xae\xc0\xae/current HTTP/1.1\r\n\r\n");
    assert_eq!(crate::util::exchange(node, &raw_bytes).0.status, 400);
    fleet.served(Port::FileNode);
}

#[test]
fn absurd_numbers_and_hostile_text_in_queries_are_400_never_500() {
    let fleet = Fleet::start(Limits::default());
    let token = fleet.token("user3");
    let auth = format!("Authorization: Bearer {token}\r\n");
    let cases: Vec<(Port, String, &str)> = [
        (Port::Storage, "/v1/update?version=..%2F..%2Fetc"),
        (Port::Storage, "/v1/update?version=%2Fetc%2Fpasswd"),
        (Port::Storage, "/v1/update?version=1.1.0'%20OR%201=1%20--"),
        (Port::Storage, "/v1/update?version=%c0%ae%c0%ae"),
        (Port::Storage, "/v1/update?version=%00"),
        (Port::Balancer, "/v1/pick?n=0"),
        (Port::Balancer, "/v1/pick?n=-1"),
        (Port::Balancer, "/v1/pick?n=-0"),
        (Port::Balancer, "/v1/pick?n=1e400"),
        (Port::Balancer, "/v1/pick?n=18446744073709551616"),
        (Port::Balancer, "/v1/pick?n=99999999999999999999999999"),
        (Port::BalancerObserver, "/v1/pick?n=NaN"),
        (Port::Lobby, "/v1/ranking?offset=-1"),
        (Port::Lobby, "/v1/ranking?offset=-0"),
        (Port::Lobby, "/v1/ranking?offset=1e400"),
        (Port::Lobby, "/v1/ranking?offset=18446744073709551616"),
        (Port::Lobby, "/v1/ranking?limit=1e2"),
        (Port::Lobby, "/v1/ranking?limit=101"),
        (Port::Lobby, "/v1/ranking?limit=%20"),
        (Port::Router, "/v1/observer?match=-1"),
        (Port::Router, "/v1/observer?match=1e400"),
        (Port::Router, "/v1/observer?match=18446744073709551616"),
        (Port::Router, "/v1/observer?match=1%20OR%201=1"),
        (Port::Router, "/v1/observer"),
    ]
    .into_iter()
    .map(|(port, target)| (port, target.to_string(), auth.as_str()))
    .collect();
    for (port, target, auth) in cases {
        let head = format!("GET {target} HTTP/1.1\r\n{auth}\r\n");
        let (raw, _) = crate::util::exchange(fleet.addr(port), head.as_bytes());
        assert_eq!(raw.status, 400, "{port:?} {target}");
        assert_eq!(raw.json()["error"], "bad_request", "{port:?} {target}");
        fleet.served(port);
    }
    // The largest values that are well-formed are answered normally.
    let head = format!("GET /v1/ranking?offset=4294967295&limit=100 HTTP/1.1\r\n{auth}\r\n");
    let (raw, _) = crate::util::exchange(fleet.addr(Port::Lobby), head.as_bytes());
    assert_eq!(raw.status, 200);
    assert_eq!(raw.json()["entries"], serde_json::json!([]));
    let head = format!("GET /v1/observer?match=18446744073709551615 HTTP/1.1\r\n{auth}\r\n");
    let (raw, _) = crate::util::exchange(fleet.addr(Port::Router), head.as_bytes());
    assert_eq!(raw.status, 404);
    assert_eq!(raw.json()["error"], "unknown_match");
    assert_eq!(healthz(fleet.addr(Port::Router)).unwrap().status, 200);
}
