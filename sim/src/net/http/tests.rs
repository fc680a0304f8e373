//! The HTTP client against scripted servers: keep-alive, closed connections, bounds,
//! source addresses, request encoding.

use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A scripted server: answers every request with `answer`, closing the connection
/// after each answer when `close` is set. Records the peer of every connection.
struct FakeServer {
    addr: SocketAddr,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
    requests: Arc<AtomicUsize>,
}

async fn fake_server(answer: &'static [u8], close: bool) -> FakeServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let peers = Arc::new(Mutex::new(Vec::new()));
    let requests = Arc::new(AtomicUsize::new(0));
    let (peers_seen, requests_seen) = (Arc::clone(&peers), Arc::clone(&requests));
    tokio::spawn(async move {
        loop {
            let (mut stream, peer) = listener.accept().await.unwrap();
            peers_seen.lock().unwrap().push(peer);
            let requests = Arc::clone(&requests_seen);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let mut chunk = [0; 1024];
                    let n = stream.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        continue;
                    }
                    buf.clear();
                    requests.fetch_add(1, Ordering::SeqCst);
                    // Two writes, so the client must join a body split across reads.
                    let (head, rest) = answer.split_at(answer.len() / 2);
                    stream.write_all(head).await.unwrap();
                    stream.flush().await.unwrap();
                    stream.write_all(rest).await.unwrap();
                    if close {
                        return;
                    }
                }
            });
        }
    });
    FakeServer {
        addr,
        peers,
        requests,
    }
}

const HELLO: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nETag: \"x\"\r\n\r\nhello world";

#[tokio::test]
async fn keep_alive_reuses_one_connection() {
    let server = fake_server(HELLO, false).await;
    let mut client = HttpClient::new(None);
    for _ in 0..3 {
        let response = client.get(server.addr, "/v1/files/1.0.0/a").await.unwrap();
        assert_eq!(
            (response.status, response.body.as_slice()),
            (200, &b"hello world"[..])
        );
        assert_eq!(response.header("etag"), Some("\"x\""));
    }
    assert_eq!(server.peers.lock().unwrap().len(), 1);
    assert_eq!(server.requests.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn connection_closed_by_the_server_is_retried_once_on_a_fresh_one() {
    let server = fake_server(HELLO, true).await;
    let mut client = HttpClient::new(None);
    for _ in 0..3 {
        assert_eq!(
            client.get(server.addr, "/").await.unwrap().body,
            b"hello world"
        );
    }
    assert_eq!(server.requests.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn connection_close_header_is_honoured() {
    let answer = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\n\
                   Content-Length: 2\r\n\r\n{}";
    let server = fake_server(answer, false).await;
    let mut client = HttpClient::new(None);
    for _ in 0..2 {
        let response = client.get(server.addr, "/").await.unwrap();
        assert_eq!(
            (response.status, response.header("retry-after")),
            (503, Some("1"))
        );
    }
    assert_eq!(server.peers.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn broken_answers_are_bad_responses() {
    let cases: [&'static [u8]; 3] = [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n",
        b"SMTP ready\r\n\r\n",
    ];
    for answer in cases {
        let server = fake_server(answer, false).await;
        let error = HttpClient::new(None)
            .get(server.addr, "/")
            .await
            .unwrap_err();
        assert_eq!(error.code(), "bad_response", "{error}");
    }
}

#[tokio::test]
async fn oversized_head_is_a_bad_response() {
    let mut answer = b"HTTP/1.1 200 OK\r\nX-Pad: ".to_vec();
    answer.resize(HTTP_HEAD_BYTES_MAX + 100, b'a');
    let server = fake_server(answer.leak(), false).await;
    let error = HttpClient::new(None)
        .get(server.addr, "/")
        .await
        .unwrap_err();
    assert_eq!(error.code(), "bad_response", "{error}");
}

#[tokio::test]
async fn refused_connection_is_a_connect_error() {
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let error = HttpClient::new(None).get(addr, "/").await.unwrap_err();
    assert_eq!(error.code(), "connect");
    assert!(error.is_refused_or_reset());
}

#[tokio::test]
async fn connections_come_from_the_chosen_local_address() {
    let server = fake_server(HELLO, false).await;
    let local: IpAddr = "127.0.0.2".parse().unwrap();
    HttpClient::new(Some(local))
        .get(server.addr, "/")
        .await
        .unwrap();
    assert_eq!(server.peers.lock().unwrap()[0].ip(), local);
}

#[tokio::test]
async fn changing_the_local_address_drops_connections_from_the_old_one() {
    let server = fake_server(HELLO, false).await;
    let mut client = HttpClient::new(Some("127.0.0.2".parse().unwrap()));
    client.get(server.addr, "/").await.unwrap();
    client.set_local_ip("127.0.0.2".parse().unwrap());
    client.get(server.addr, "/").await.unwrap();
    client.set_local_ip("127.0.0.3".parse().unwrap());
    client.get(server.addr, "/").await.unwrap();
    let peers: Vec<IpAddr> = server
        .peers
        .lock()
        .unwrap()
        .iter()
        .map(|p| p.ip())
        .collect();
    let expected: Vec<IpAddr> = vec!["127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap()];
    assert_eq!(peers, expected);
}

#[tokio::test]
async fn a_post_never_goes_out_on_a_connection_the_server_closed() {
    let server = fake_server(HELLO, true).await;
    let mut client = HttpClient::new(None);
    for _ in 0..3 {
        let request = Request::post("/v1/start").bearer("t");
        assert_eq!(
            client.send(server.addr, &request).await.unwrap().status,
            200
        );
        // Time for the server's FIN to arrive, as between a client's real requests.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(server.requests.load(Ordering::SeqCst), 3);
    assert_eq!(server.peers.lock().unwrap().len(), 3);
}

#[test]
fn requests_encode_method_bearer_body_and_close() {
    let host: SocketAddr = "127.0.0.1:7200".parse().unwrap();
    let login = Request::post("/v1/login")
        .json(b"{\"id\":\"u\"}")
        .encode(host, true);
    let text = String::from_utf8(login).unwrap();
    assert!(
        text.starts_with("POST /v1/login HTTP/1.1\r\nHost: 127.0.0.1:7200\r\n"),
        "{text}"
    );
    assert!(text.contains("\r\nContent-Type: application/json\r\nContent-Length: 10\r\n"));
    assert!(text.contains("\r\nConnection: close\r\n"));
    assert!(text.ends_with("\r\n\r\n{\"id\":\"u\"}"), "{text}");
    assert!(!text.contains("Authorization"));
    let start = Request::post("/v1/start").bearer("abc").encode(host, false);
    let text = String::from_utf8(start).unwrap();
    assert!(text.contains("\r\nAuthorization: Bearer abc\r\n"));
    assert!(text.contains("\r\nContent-Length: 0\r\n"));
    assert!(!text.contains("Connection"));
    let me = String::from_utf8(Request::get("/v1/me").encode(host, false)).unwrap();
    assert!(me.starts_with("GET /v1/me HTTP/1.1\r\n") && !me.contains("Content-Length"));
}

#[test]
fn percent_encoding_keeps_unreserved_characters() {
    assert_eq!(
        percent_encode("maps/arena 1.map", true),
        "maps/arena%201.map"
    );
    assert_eq!(percent_encode("a/b?c", false), "a%2Fb%3Fc");
    assert_eq!(percent_encode("1.0.0-rc_1~", false), "1.0.0-rc_1~");
}
