//! The shared event loop's HTTP rules: limits, malformed input, timeouts, the connection
//! cap, keep-alive, pipelining and deferred answers.

use std::io::Write;
use std::time::Duration;

use catwar_server::runtime::event_loop::{
    bind_loopback, Ctx, Handler, Limits, Reply, Server, ServerHandle, BODY_BYTES_MAX,
    HEAD_BYTES_MAX,
};
use catwar_server::runtime::http::{Request, Response};
use catwar_server::runtime::jobs::{defer_to_pool, JobPool};

use crate::util::{closed_by_server, connect, exchange, get, read_response};

/// Echoes the path; `/slow` is answered from a job pool after a pause, so ordering of
/// deferred and immediate answers can be checked.
struct Echo {
    pool: JobPool,
}

impl Handler for Echo {
    fn handle(&mut self, req: Request, ctx: &mut Ctx<'_>) -> Reply {
        if req.path == "/slow" {
            return defer_to_pool(&self.pool, ctx, || {
                std::thread::sleep(Duration::from_millis(50));
                Response::json(200, &serde_json::json!({"path": "/slow"}))
            });
        }
        Reply::Now(Response::json(
            200,
            &serde_json::json!({"path": req.path, "body_len": req.body.len()}),
        ))
    }
}

fn start(limits: Limits) -> ServerHandle {
    let pool = JobPool::new("echo", 1, 4).unwrap();
    Server::new(bind_loopback().unwrap(), Echo { pool }, limits)
        .unwrap()
        .spawn("echo")
        .unwrap()
}

#[test]
fn oversized_head_is_431_and_closes() {
    let server = start(Limits::default());
    let big = format!(
        "GET / HTTP/1.1\r\nX-Fill: {}\r\n\r\n",
        "a".repeat(HEAD_BYTES_MAX)
    );
    let (raw, mut stream) = exchange(server.addr(), big.as_bytes());
    assert_eq!(raw.status, 431);
    assert_eq!(raw.json()["error"], "head_too_large");
    assert!(closed_by_server(&mut stream));
    assert_eq!(get(server.addr(), "/still-up").status, 200);
    server.shutdown().unwrap();
}

#[test]
fn oversized_head_without_an_end_is_431_too() {
    let server = start(Limits::default());
    let big = format!("GET /{} HTTP/1.1\r\n", "a".repeat(HEAD_BYTES_MAX + 10));
    let (raw, _) = exchange(server.addr(), big.as_bytes());
    assert_eq!(raw.status, 431);
    server.shutdown().unwrap();
}

#[test]
fn oversized_body_is_413_and_a_full_size_body_is_fine() {
    let server = start(Limits::default());
    let head = format!(
        "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
        BODY_BYTES_MAX + 1
    );
    let (raw, _) = exchange(server.addr(), head.as_bytes());
    assert_eq!(raw.status, 413);
    let mut ok =
        format!("POST / HTTP/1.1\r\nContent-Length: {BODY_BYTES_MAX}\r\n\r\n").into_bytes();
    ok.extend(std::iter::repeat_n(b'x', BODY_BYTES_MAX));
    let (raw, _) = exchange(server.addr(), &ok);
    assert_eq!(raw.status, 200);
    assert_eq!(raw.json()["body_len"], BODY_BYTES_MAX);
    server.shutdown().unwrap();
}

#[test]
fn malformed_requests_get_400_close_and_others_keep_being_served() {
    let server = start(Limits::default());
    // One client stays connected across the bad ones to show it keeps being served.
    let mut good = connect(server.addr());
    for bad in [
        &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"[..],
        b"GET\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
    ] {
        let (raw, mut stream) = exchange(server.addr(), bad);
        assert_eq!(raw.status, 400, "{:?}", String::from_utf8_lossy(bad));
        assert_eq!(raw.json()["error"], "bad_request");
        assert!(closed_by_server(&mut stream));
        good.write_all(b"GET /ok HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(
            read_response(&mut good, &mut Vec::new()).unwrap().status,
            200
        );
    }
    let (raw, _) = exchange(
        server.addr(),
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    );
    assert_eq!(raw.status, 411);
    server.shutdown().unwrap();
}

#[test]
fn a_client_that_never_finishes_gets_408_and_is_closed() {
    let limits = Limits {
        request_timeout: Duration::from_millis(200),
        ..Limits::default()
    };
    let server = start(limits);
    let (raw, mut stream) = exchange(server.addr(), b"GET / HTTP/1.1\r\nHost: slow");
    assert_eq!(raw.status, 408);
    assert!(closed_by_server(&mut stream));
    server.shutdown().unwrap();
}

#[test]
fn connections_over_the_cap_are_refused_cleanly() {
    let limits = Limits {
        conns_max: 2,
        ..Limits::default()
    };
    let server = start(limits);
    let mut held = vec![connect(server.addr()), connect(server.addr())];
    // Make sure both are accepted before the third arrives.
    for stream in &mut held {
        stream.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(read_response(stream, &mut Vec::new()).unwrap().status, 200);
    }
    let (raw, mut third) = exchange(server.addr(), b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(raw.status, 503);
    assert_eq!(raw.json()["error"], "busy");
    assert!(closed_by_server(&mut third));
    drop(held);
    crate::util::wait_for("a free slot", || {
        let mut s = connect(server.addr());
        s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        (read_response(&mut s, &mut Vec::new())?.status == 200).then_some(())
    });
    server.shutdown().unwrap();
}

#[test]
fn keep_alive_and_pipelining_keep_order_across_deferred_answers() {
    let server = start(Limits::default());
    let mut stream = connect(server.addr());
    stream.write_all(b"GET /slow HTTP/1.1\r\n\r\nGET /a HTTP/1.1\r\n\r\nGET /slow HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n").unwrap();
    let mut pending = Vec::new();
    let paths: Vec<String> = (0..4)
        .map(|_| {
            read_response(&mut stream, &mut pending).unwrap().json()["path"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(paths, ["/slow", "/a", "/slow", "/b"]);
    stream
        .write_all(b"GET /c HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let last = read_response(&mut stream, &mut pending).unwrap();
    assert_eq!(last.header("connection"), Some("close"));
    assert!(closed_by_server(&mut stream));
    server.shutdown().unwrap();
}

#[test]
fn a_full_job_queue_answers_503_busy_with_retry_after() {
    struct Stuck {
        pool: JobPool,
        gate: std::sync::Arc<std::sync::Mutex<()>>,
    }
    impl Handler for Stuck {
        fn handle(&mut self, _req: Request, ctx: &mut Ctx<'_>) -> Reply {
            let gate = std::sync::Arc::clone(&self.gate);
            defer_to_pool(&self.pool, ctx, move || {
                drop(gate.lock().unwrap());
                Response::empty(204)
            })
        }
    }
    let gate = std::sync::Arc::new(std::sync::Mutex::new(()));
    let held = gate.lock().unwrap();
    let handler = Stuck {
        pool: JobPool::new("stuck", 1, 1).unwrap(),
        gate: std::sync::Arc::clone(&gate),
    };
    let server = Server::new(bind_loopback().unwrap(), handler, Limits::default())
        .unwrap()
        .spawn("stuck")
        .unwrap();
    // One worker and a queue of one hold two jobs at most, so of three requests at
    // least one is refused at once while the gate is shut.
    let mut conns: Vec<(std::net::TcpStream, Vec<u8>, Option<u16>)> = (0..3)
        .map(|_| {
            let mut stream = connect(server.addr());
            stream.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
            stream
                .set_read_timeout(Some(Duration::from_millis(20)))
                .unwrap();
            (stream, Vec::new(), None)
        })
        .collect();
    let busy = crate::util::wait_for("a busy answer", || {
        for (stream, pending, status) in conns.iter_mut().filter(|c| c.2.is_none()) {
            if let Some(raw) = read_response(stream, pending) {
                *status = Some(raw.status);
                if raw.status == 503 {
                    return Some(raw);
                }
            }
        }
        None
    });
    assert_eq!(busy.json()["error"], "busy");
    assert_eq!(busy.header("retry-after"), Some("1"));
    drop(held);
    for (stream, pending, status) in conns.iter_mut().filter(|c| c.2.is_none()) {
        stream
            .set_read_timeout(Some(Duration::from_secs(crate::util::WAIT_S_MAX)))
            .unwrap();
        *status = Some(read_response(stream, pending).unwrap().status);
    }
    let statuses: Vec<u16> = conns.iter().map(|c| c.2.unwrap()).collect();
    assert!(statuses.contains(&204), "{statuses:?}");
    server.shutdown().unwrap();
}
