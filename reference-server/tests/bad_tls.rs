//! Bad input on profile's TLS port (SPEC §3, §5): plaintext, garbage records, truncated
//! and abandoned handshakes, and clients that vanish mid-request. Each such connection is
//! closed (at once, or when the request timeout ends a handshake that never finishes),
//! nothing of it reaches a login worker, and TLS clients are served meanwhile and after.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use catwar_server::runtime::event_loop::Limits;

use crate::fleet::{closed_eventually, tls_connector, tls_from, Fleet, Port};
use crate::util::{connect, read_response, WAIT_S_MAX};

/// The request timeout, which covers the TLS handshake: handshakes that never finish are
/// dropped after it, and a real one on a loaded machine takes far less.
const REQUEST_TIMEOUT_MS: u64 = 2_000;

fn fleet() -> Fleet {
    Fleet::start(Limits {
        request_timeout: Duration::from_millis(REQUEST_TIMEOUT_MS),
        ..Limits::default()
    })
}

/// The first flight of a real TLS client: its ClientHello record, as the profile's
/// client library sends it, caught on a listener of the test's own.
fn client_hello(fleet: &Fleet) -> Vec<u8> {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let connector = tls_connector(fleet);
    let client = std::thread::spawn(move || {
        let tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(WAIT_S_MAX)))
            .unwrap();
        // The test's listener never answers: the handshake fails when it closes.
        let _ = connector.connect("localhost", tcp);
    });
    let (mut server, _) = listener.accept().unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(WAIT_S_MAX)))
        .unwrap();
    let mut header = [0u8; 5];
    server.read_exact(&mut header).unwrap();
    assert_eq!(header[0], 0x16, "a handshake record");
    let len = u16::from_be_bytes([header[3], header[4]]) as usize;
    let mut record = header.to_vec();
    record.resize(5 + len, 0);
    server.read_exact(&mut record[5..]).unwrap();
    drop(server);
    client.join().unwrap();
    record
}

#[test]
fn plaintext_and_garbage_on_the_tls_port_are_closed_and_tls_clients_are_served() {
    let fleet = fleet();
    let addr = fleet.addr(Port::Profile);
    let mut huge_record = vec![0x16, 0x03, 0x01, 0xff, 0xff];
    huge_record.extend_from_slice(&[0u8; 64]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "an HTTP request",
            b"POST /v1/login HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}".to_vec(),
        ),
        (
            "an HTTP/2 preface",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
        ),
        ("binary noise", (0u8..=255).cycle().take(4096).collect()),
        ("a record that claims 64 KiB", huge_record),
        (
            "an SSLv2 hello",
            vec![
                0x80, 0x2e, 0x01, 0x00, 0x02, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10,
            ],
        ),
        (
            "an alert before any hello",
            vec![0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28],
        ),
        (
            "application data before any hello",
            vec![0x17, 0x03, 0x03, 0x00, 0x05, 1, 2, 3, 4, 5],
        ),
        (
            "a record of an unknown type",
            vec![0x42, 0x03, 0x03, 0x00, 0x01, 0x00],
        ),
        ("a newline", b"\r\n".to_vec()),
    ];
    // All at once: some are refused at their first bytes, others wait out the timeout.
    let mut sent = Vec::new();
    for (what, bytes) in cases {
        let mut stream = connect(addr);
        // The server may close as soon as the first bytes are read; the rest may then
        // meet a reset, which is a close too.
        let _ = stream.write_all(&bytes);
        sent.push((what, stream));
    }
    fleet.served(Port::Profile);
    for (what, mut stream) in sent {
        assert!(closed_eventually(&mut stream), "{what}: never closed");
    }
    fleet.all_served();
}

#[test]
fn truncated_and_abandoned_handshakes_are_dropped_and_others_are_served_meanwhile() {
    /// Clients that stall at each point of the handshake.
    const STALLED_PER_CASE: usize = 8;
    let fleet = fleet();
    let addr = fleet.addr(Port::Profile);
    let hello = client_hello(&fleet);
    let prefixes: Vec<(&str, Vec<u8>)> = vec![
        ("nothing at all", Vec::new()),
        ("one byte", hello[..1].to_vec()),
        ("a record header", hello[..5].to_vec()),
        ("half a ClientHello", hello[..hello.len() / 2].to_vec()),
        ("all but its last byte", hello[..hello.len() - 1].to_vec()),
        // The whole hello: the server answers and then waits for the client's next
        // flight, which never comes.
        ("a whole ClientHello", hello.clone()),
    ];
    let mut stalled = Vec::new();
    for (what, prefix) in &prefixes {
        for _ in 0..STALLED_PER_CASE {
            let mut stream = connect(addr);
            stream.write_all(prefix).unwrap();
            stalled.push((what, stream));
        }
    }
    // While all of them are pending, TLS clients are served.
    fleet.served(Port::Profile);
    let raw = crate::fleet::tls_exchange(
        &fleet,
        "127.0.0.1".parse().unwrap(),
        "POST",
        "/v1/login",
        "",
        br#"{"id":"user1","password":"pw-user1"}"#,
    );
    assert_eq!(raw.status, 200);
    for (what, stream) in &mut stalled {
        assert!(closed_eventually(stream), "{what}: never closed");
    }
    fleet.all_served();
}

#[test]
fn clients_that_vanish_mid_handshake_or_mid_request_leave_the_port_serving() {
    /// Rounds of each way to vanish.
    const ROUNDS: usize = 20;
    let fleet = fleet();
    let addr = fleet.addr(Port::Profile);
    let hello = client_hello(&fleet);
    for _ in 0..ROUNDS {
        // Connects and closes at once.
        drop(connect(addr));
        // Says hello and closes.
        let mut stream = connect(addr);
        stream.write_all(&hello).unwrap();
        drop(stream);
        // Says hello and resets the connection (SO_LINGER 0 sends RST, not FIN).
        let stream = connect(addr);
        (&stream).write_all(&hello).unwrap();
        reset(stream);
        // Finishes the handshake and leaves without a request.
        drop(tls_from(&fleet, "127.0.0.1".parse().unwrap()));
        // Sends half a request and resets.
        let mut tls = tls_from(&fleet, "127.0.0.1".parse().unwrap());
        tls.write_all(b"POST /v1/login HTTP/1.1\r\nContent-Length: 40\r\n\r\n{\"id\":")
            .unwrap();
        reset(tls.get_ref().try_clone().unwrap());
        drop(tls);
    }
    let mut keep = tls_from(&fleet, "127.0.0.1".parse().unwrap());
    keep.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(
        read_response(&mut keep, &mut Vec::new()).unwrap().status,
        200
    );
    fleet.all_served();
}

/// Closes `stream` with a reset instead of an orderly close.
fn reset(stream: TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket this function owns, with a value of the right size.
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&stream),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
    drop(stream);
}
