//! Slow and many clients on every port (SPEC §3, §5: "A service under attack or in
//! trouble keeps serving everyone else"): heads and lines that never finish (silent or
//! dribbled a byte at a time) time out and close; floods of connections up to the cap
//! are refused cleanly (503 `busy`, a `busy` line, or a close on the TLS port) and the
//! service resumes as soon as the flood is gone; one client that pipelines or floods
//! lines as fast as it can, reading its answers or not, neither grows the server without
//! bound nor starves the others. Every loop here is bounded in count and in time, and
//! the tests wait for events, never for a fixed time.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use catwar_server::domain::resources::DEFAULT_CURRENT_VERSION;
use catwar_server::runtime::event_loop::Limits;
use catwar_server::services::observer::WATCHERS_MAX;

use crate::fleet::{
    closed, closed_eventually, error_code, open, play_status, read_line, readable, resumes, Fleet,
    Port, Wire, PLAIN_HTTP,
};
use crate::util::{connect, read_response, wait_for, Raw, WAIT_S_MAX};

/// The request timeout the slow clients wait out. It covers profile's TLS handshakes
/// too, so it is far above what a handshake takes on a loaded machine.
const REQUEST_TIMEOUT_MS: u64 = 2_000;
/// Short, so that a client that never reads is dropped within the test.
const WRITE_TIMEOUT_MS: u64 = 1_000;
/// A slow client's pause between two bytes: well under every timeout, so only a
/// deadline that does not move with progress can end it.
const DRIBBLE_MS: u64 = 50;
/// Slow clients of each kind per port.
const SLOW_PER_KIND: usize = 4;
/// The connection cap of the flood tests.
const CAP: usize = 8;
/// Connections thrown at a full port.
const FLOOD: usize = 200;
/// How much a flooding client sends at most when it does not read its answers. A
/// server that keeps reading it all would hold a few times this in answers.
const FLOOD_UNREAD_BYTES_MAX: usize = 64 * 1024 * 1024;
/// How much a flooding client sends at most when it reads its answers: many seconds
/// of work for a loop that served it alone, so a fair loop answers the others long
/// before the flood ends by itself.
const FLOOD_READ_BYTES_MAX: usize = 256 * 1024 * 1024;

fn limits() -> Limits {
    Limits {
        request_timeout: Duration::from_millis(REQUEST_TIMEOUT_MS),
        write_timeout: Duration::from_millis(WRITE_TIMEOUT_MS),
        ..Limits::default()
    }
}

/// Every port that speaks HTTP: the plain ones and profile over TLS.
fn http_ports() -> impl Iterator<Item = Port> {
    PLAIN_HTTP.into_iter().chain([Port::Profile])
}

/// A client that sends `bytes` one at a time, [`DRIBBLE_MS`] apart, until the server
/// answers or closes; returns the answer it got, if any. It never finishes on its own:
/// it gives up only after [`WAIT_S_MAX`].
fn dribble(mut stream: Box<dyn Wire>, bytes: Vec<u8>) -> JoinHandle<Option<Raw>> {
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(WAIT_S_MAX);
        let mut pending = Vec::new();
        for &byte in bytes.iter().cycle() {
            if Instant::now() >= deadline || stream.write_all(&[byte]).is_err() {
                break;
            }
            if !readable(stream.tcp(), Duration::from_millis(DRIBBLE_MS)) {
                continue;
            }
            // Something arrived; under TLS it may be a record of the protocol's own
            // (a session ticket), which yields no bytes: then dribble on.
            let mut chunk = [0u8; 4096];
            stream
                .tcp()
                .set_read_timeout(Some(Duration::from_millis(1)))
                .unwrap();
            let read = stream.read(&mut chunk);
            stream
                .tcp()
                .set_read_timeout(Some(Duration::from_secs(WAIT_S_MAX)))
                .unwrap();
            match read {
                Ok(n) => {
                    pending.extend_from_slice(&chunk[..n]);
                    break;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break,
            }
        }
        read_response(&mut stream, &mut pending)
    })
}

#[test]
fn slow_heads_time_out_on_every_http_port_while_others_are_served() {
    let fleet = Fleet::start(limits());
    let mut silent = Vec::new();
    let mut dribblers = Vec::new();
    for port in http_ports() {
        for i in 0..SLOW_PER_KIND {
            // Half a head, then nothing.
            let mut stream = open(&fleet, port);
            let partial: &[u8] = match i % 2 {
                0 => b"GET /healthz HTTP/1.1\r\nHost: sl",
                _ => b"POST /v1/login HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"id\":",
            };
            stream.write_all(partial).unwrap();
            silent.push((port, stream));
            // A head that grows a byte at a time and never ends.
            dribblers.push((
                port,
                dribble(
                    open(&fleet, port),
                    b"GET /healthz HTTP/1.1\r\nX-Slow: ".to_vec(),
                ),
            ));
        }
    }
    // While they all wait, every port serves well-behaved clients.
    fleet.all_served();
    for (port, mut stream) in silent {
        let raw = read_response(&mut stream, &mut Vec::new())
            .unwrap_or_else(|| panic!("{port:?}: a silent client got no 408"));
        assert_eq!(
            (raw.status, raw.json()["error"].as_str()),
            (408, Some("request_timeout")),
            "{port:?}"
        );
        assert!(closed(stream.as_mut()), "{port:?}");
    }
    for (port, dribbler) in dribblers {
        let raw = dribbler
            .join()
            .unwrap()
            .unwrap_or_else(|| panic!("{port:?}: a dribbling client got no 408"));
        assert_eq!(raw.status, 408, "{port:?}");
    }
    fleet.all_served();
}

#[test]
fn slow_lines_time_out_on_the_play_port_while_others_are_served() {
    /// The play server's handshake timeout in this test: waited out by the slow clients,
    /// far above what a well-behaved client takes to send its first line.
    const HANDSHAKE_TIMEOUT_MS: u64 = 2_000;
    let fleet = Fleet::tuned(limits(), |config| {
        config.handshake_timeout = Duration::from_millis(HANDSHAKE_TIMEOUT_MS);
    });
    let play = fleet.play_addr;
    let mut slow = Vec::new();
    for i in 0..SLOW_PER_KIND {
        let mut stream = connect(play);
        // Nothing at all, or half a line.
        if i % 2 == 1 {
            stream.write_all(b"{\"t\":\"join\",\"ticket\":\"").unwrap();
        }
        slow.push(stream);
    }
    // A line that grows a byte at a time and never ends: its bytes are no line.
    let dribblers: Vec<JoinHandle<Option<String>>> = (0..SLOW_PER_KIND)
        .map(|_| {
            let mut stream = connect(play);
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(WAIT_S_MAX);
                while Instant::now() < deadline && stream.write_all(b"x").is_ok() {
                    if readable(&stream, Duration::from_millis(DRIBBLE_MS)) {
                        break;
                    }
                }
                error_code(&mut stream)
            })
        })
        .collect();
    assert!(play_status(play), "served while the slow ones wait");
    fleet.served(Port::Lobby);
    for mut stream in slow {
        assert_eq!(error_code(&mut stream).as_deref(), Some("timeout"));
        assert!(closed_eventually(&mut stream));
    }
    for dribbler in dribblers {
        assert_eq!(dribbler.join().unwrap().as_deref(), Some("timeout"));
    }
    assert!(play_status(play));
}

#[test]
fn slow_watchers_are_dropped_by_a_match_observer_while_others_are_served() {
    let fleet = Fleet::start(limits());
    let (observer, _player) = fleet.observer(7);
    let mut slow = Vec::new();
    for i in 0..SLOW_PER_KIND {
        let mut stream = connect(observer);
        if i % 2 == 1 {
            stream
                .write_all(b"{\"t\":\"watch\",\"match\":7,\"tok")
                .unwrap();
        }
        slow.push(stream);
    }
    let dribblers: Vec<JoinHandle<bool>> = (0..SLOW_PER_KIND)
        .map(|_| {
            let mut stream = connect(observer);
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(WAIT_S_MAX);
                while Instant::now() < deadline && stream.write_all(b" ").is_ok() {
                    if readable(&stream, Duration::from_millis(DRIBBLE_MS)) {
                        return error_code(&mut stream).as_deref() == Some("timeout");
                    }
                }
                false
            })
        })
        .collect();
    fleet.observer_served(observer, 7);
    for mut stream in slow {
        assert_eq!(error_code(&mut stream).as_deref(), Some("timeout"));
        assert!(closed_eventually(&mut stream));
    }
    for dribbler in dribblers {
        assert!(
            dribbler.join().unwrap(),
            "a dribbling watcher was never cut off"
        );
    }
    fleet.observer_served(observer, 7);
}

/// One keep-alive `GET /healthz` on `stream`: `Some(status)`, or `None` if the server
/// closed instead of answering.
fn ask(stream: &mut dyn Wire) -> Option<u16> {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .ok()?;
    read_response(&mut &mut *stream, &mut Vec::new()).map(|r| r.status)
}

/// A new connection to `port`, or `None` when the server turned it away (for profile,
/// a TLS handshake the server closed).
fn try_open(fleet: &Fleet, port: Port) -> Option<Box<dyn Wire>> {
    match port {
        Port::Profile => {
            let tcp = connect(fleet.addr(port));
            let tls = crate::fleet::tls_connector(fleet)
                .connect("localhost", tcp)
                .ok()?;
            Some(Box::new(tls))
        }
        _ => Some(Box::new(connect(fleet.addr(port)))),
    }
}

#[test]
fn connection_floods_are_refused_cleanly_on_every_http_port_and_service_resumes() {
    let fleet = Fleet::start(Limits {
        conns_max: CAP,
        ..limits()
    });
    for port in http_ports() {
        // Fill the port: keep every connection that is served, until one is refused.
        // The services' own calls to each other may hold a slot for a moment, so the
        // number kept is at most the cap, not exactly it.
        let mut held: Vec<Box<dyn Wire>> = Vec::new();
        let mut refusals = Vec::new();
        for _ in 0..CAP * 4 {
            let Some(mut stream) = try_open(&fleet, port) else {
                refusals.push(None);
                break;
            };
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
                .ok();
            match read_response(&mut stream, &mut Vec::new()) {
                Some(raw) if raw.status == 200 => held.push(stream),
                other => {
                    refusals.push(other);
                    break;
                }
            }
        }
        assert!(
            held.len() <= CAP,
            "{port:?}: {} held over a cap of {CAP}",
            held.len()
        );
        assert_eq!(refusals.len(), 1, "{port:?}: never refused");
        // The flood: each is refused, with 503 `busy` where the client can read it. One
        // that finds a slot freed by such a call takes it; never more than the cap are in.
        let mut busy = 0;
        for _ in 0..FLOOD {
            let Some(mut stream) = try_open(&fleet, port) else {
                continue;
            };
            let _ = stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
            match read_response(&mut stream, &mut Vec::new()) {
                Some(raw) if raw.status == 200 => {
                    held.push(stream);
                    assert!(held.len() <= CAP, "{port:?}: more served than the cap");
                    continue;
                }
                Some(raw) => {
                    assert_eq!(raw.status, 503, "{port:?}");
                    assert_eq!(raw.json()["error"], "busy", "{port:?}");
                    assert_eq!(raw.header("retry-after"), Some("1"), "{port:?}");
                    busy += 1;
                }
                None => {}
            }
            assert!(
                closed(stream.as_mut()),
                "{port:?}: a refused connection stayed open"
            );
        }
        if port != Port::Profile {
            assert!(busy > 0, "{port:?}: no refusal said busy");
        }
        // The clients inside the cap are served throughout, and so are the other ports.
        for stream in &mut held {
            assert_eq!(ask(stream.as_mut()), Some(200), "{port:?}: a held client");
        }
        for other in http_ports().filter(|&p| p != port) {
            fleet.served(other);
        }
        drop(held);
        resumes(&fleet, port);
    }
}

#[test]
fn a_connection_flood_on_the_play_port_is_told_busy_and_service_resumes() {
    let fleet = Fleet::tuned(limits(), |config| config.conns_max = CAP);
    let play = fleet.play_addr;
    let mut held = Vec::new();
    let mut refused = false;
    for _ in 0..CAP * 4 {
        let mut stream = connect(play);
        let _ = stream.write_all(b"{\"t\":\"status\"}\n");
        match read_line(&mut stream) {
            Some(line) if line.contains("\"t\":\"status\"") => held.push(stream),
            Some(line) => {
                assert!(line.contains("\"error\":\"busy\""), "{line}");
                refused = true;
                break;
            }
            None => panic!("closed without a word"),
        }
    }
    assert!(refused && held.len() <= CAP, "held {}", held.len());
    // The lobby's load polls may free a slot for a moment; whoever takes it is served,
    // but never more than the cap at once.
    for _ in 0..FLOOD {
        let mut stream = connect(play);
        let _ = stream.write_all(b"{\"t\":\"status\"}\n");
        let line = read_line(&mut stream).expect("a line before the close");
        if line.contains("\"t\":\"status\"") {
            held.push(stream);
            assert!(held.len() <= CAP, "more served than the cap");
            continue;
        }
        assert!(line.contains("\"error\":\"busy\""), "{line}");
        assert!(closed_eventually(&mut stream));
    }
    for stream in &mut held {
        stream.write_all(b"{\"t\":\"status\"}\n").unwrap();
        assert!(read_line(stream).unwrap().contains("\"t\":\"status\""));
    }
    drop(held);
    wait_for("the play server to serve again", || {
        play_status(play).then_some(())
    });
}

#[test]
fn a_watcher_flood_at_a_match_observer_is_told_busy_and_service_resumes() {
    let fleet = Fleet::start(limits());
    let (observer, _player) = fleet.observer(9);
    // Silent connections take most slots fast; valid watchers top them up, as the
    // silent ones time out, until the observer is full and says so.
    let mut holders: Vec<TcpStream> = (0..WATCHERS_MAX).map(|_| connect(observer)).collect();
    let mut full = false;
    for _ in 0..WATCHERS_MAX {
        let mut stream = connect(observer);
        let watch = serde_json::json!({"t": "watch", "match": 9, "token": fleet.token("user2")});
        let _ = writeln!(stream, "{watch}");
        let line = read_line(&mut stream).expect("an answer");
        if line.contains("\"error\":\"busy\"") {
            full = true;
            break;
        }
        assert!(line.contains("\"t\":\"state\""), "{line}");
        holders.push(stream);
    }
    assert!(full, "the observer never said busy");
    for _ in 0..FLOOD {
        let mut stream = connect(observer);
        let line = read_line(&mut stream).expect("a busy line");
        assert!(line.contains("\"error\":\"busy\""), "{line}");
        assert!(closed_eventually(&mut stream));
    }
    // The play server and everyone else are unaffected.
    fleet.all_served();
    drop(holders);
    wait_for("the observer to serve again", || {
        fleet.watch(observer, 9).then_some(())
    });
}

/// How a flooding client ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// The test stopped it: the others were served while it flooded.
    Stopped,
    /// The server closed it.
    Cut,
    /// It sent all it may send: the server took everything it was given.
    Spent,
}

/// A client that writes `batch` over and over on `stream` until stopped, cut off by the
/// server, or `bytes_max` are sent.
fn flood(
    mut stream: Box<dyn Wire>,
    batch: Vec<u8>,
    bytes_max: usize,
    stop: Arc<AtomicBool>,
) -> JoinHandle<Ended> {
    std::thread::spawn(move || {
        let mut sent = 0;
        while sent < bytes_max {
            if stop.load(Ordering::SeqCst) {
                return Ended::Stopped;
            }
            if stream.write_all(&batch).is_err() {
                return Ended::Cut;
            }
            sent += batch.len();
        }
        Ended::Spent
    })
}

/// `count` pipelined keep-alive requests in one buffer.
fn pipelined(count: usize) -> Vec<u8> {
    b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n".repeat(count)
}

#[test]
fn a_pipelining_client_that_never_reads_is_throttled_and_dropped_on_every_http_port() {
    /// Requests per write of the flooding client.
    const BATCH: usize = 1024;
    let fleet = Fleet::start(limits());
    for port in http_ports() {
        let stop = Arc::new(AtomicBool::new(false));
        let flooder = flood(
            open(&fleet, port),
            pipelined(BATCH),
            FLOOD_UNREAD_BYTES_MAX,
            Arc::clone(&stop),
        );
        // The port answers others while it floods, and the server stops reading a
        // client whose answers pile up unread, then drops it at the write timeout.
        fleet.served(port);
        stop.store(true, Ordering::SeqCst);
        let ended = flooder.join().unwrap();
        assert_ne!(
            ended,
            Ended::Spent,
            "{port:?}: the server read the whole flood"
        );
        fleet.served(port);
    }
    // Downloads never read are dropped at the write timeout too: more than the socket
    // buffers of both ends hold, so the server is left with unsent bytes.
    const DOWNLOADS: usize = 32;
    let node = fleet.addr(Port::FileNode);
    let mut stream = connect(node);
    let get =
        format!("GET /v1/files/{DEFAULT_CURRENT_VERSION}/catwar.pak HTTP/1.1\r\nHost: t\r\n\r\n");
    stream.write_all(get.repeat(DOWNLOADS).as_bytes()).unwrap();
    fleet.served(Port::FileNode);
    // The node counts its open connections; the probe is one. The balancers' health
    // checks come and go, so the count is polled until only the probe is left.
    wait_for("the unread downloads to be dropped", || {
        let raw = crate::fleet::healthz(node)?;
        (raw.json()["active_conns"] == 1).then_some(())
    });
    assert!(closed_eventually(&mut stream));
}

#[test]
fn a_pipelining_client_that_reads_cannot_starve_others_on_any_plain_http_port() {
    /// Requests per write of the flooding client.
    const BATCH: usize = 1024;
    let fleet = Fleet::start(limits());
    for port in PLAIN_HTTP {
        let stream = connect(fleet.addr(port));
        // Its answers are read, as fast as they come, by a thread of their own.
        let mut reader = stream.try_clone().unwrap();
        let drain = std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            while matches!(reader.read(&mut buf), Ok(n) if n > 0) {}
        });
        let stop = Arc::new(AtomicBool::new(false));
        let flooder = flood(
            Box::new(stream.try_clone().unwrap()),
            pipelined(BATCH),
            FLOOD_READ_BYTES_MAX,
            Arc::clone(&stop),
        );
        fleet.served(port);
        stop.store(true, Ordering::SeqCst);
        assert_eq!(
            flooder.join().unwrap(),
            Ended::Stopped,
            "{port:?}: starved until the flood ended"
        );
        let _ = stream.shutdown(Shutdown::Both);
        drain.join().unwrap();
        fleet.served(port);
    }
}

#[test]
fn a_player_flooding_inputs_cannot_starve_the_play_server() {
    /// Inputs per write of the flooding player.
    const BATCH: usize = 4096;
    let fleet = Fleet::start(limits());
    let play = fleet.play_addr;
    let mut player = connect(play);
    writeln!(
        player,
        "{}",
        serde_json::json!({"t": "join", "ticket": fleet.ticket("user6", 5)})
    )
    .unwrap();
    assert!(read_line(&mut player).unwrap().contains("\"joined\""));
    // Inputs at any rate are allowed (SPEC §3); each batch carries increasing seqs.
    let stop = Arc::new(AtomicBool::new(false));
    let flooder = {
        let mut stream = player.try_clone().unwrap();
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let (mut seq, mut sent) = (0u64, 0usize);
            while sent < FLOOD_READ_BYTES_MAX {
                if stop.load(Ordering::SeqCst) {
                    return Ended::Stopped;
                }
                let mut batch = String::with_capacity(BATCH * 64);
                for _ in 0..BATCH {
                    seq += 1;
                    batch.push_str(&format!(
                        "{{\"t\":\"input\",\"seq\":{seq},\"dx\":0.5,\"dy\":0,\"fire\":true}}\n"
                    ));
                }
                if stream.write_all(batch.as_bytes()).is_err() {
                    return Ended::Cut;
                }
                sent += batch.len();
            }
            Ended::Spent
        })
    };
    // Its states are read as they come, so only the inputs can stall anything.
    let mut reader = player.try_clone().unwrap();
    let drain = std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        while matches!(reader.read(&mut buf), Ok(n) if n > 0) {}
    });
    assert!(play_status(play), "status while a player floods inputs");
    // Another match runs meanwhile: its player gets its states.
    let mut other = connect(play);
    writeln!(
        other,
        "{}",
        serde_json::json!({"t": "join", "ticket": fleet.ticket("user7", 6)})
    )
    .unwrap();
    assert!(read_line(&mut other).unwrap().contains("\"joined\""));
    assert!(read_line(&mut other).unwrap().contains("\"t\":\"state\""));
    stop.store(true, Ordering::SeqCst);
    assert_eq!(
        flooder.join().unwrap(),
        Ended::Stopped,
        "starved until the flood ended"
    );
    let _ = player.shutdown(Shutdown::Both);
    drain.join().unwrap();
    assert!(play_status(play));
}

#[test]
fn a_client_that_floods_status_lines_and_never_reads_is_dropped() {
    /// Status requests per write.
    const BATCH: usize = 4096;
    let fleet = Fleet::start(limits());
    let play = fleet.play_addr;
    let stop = Arc::new(AtomicBool::new(false));
    let flooder = flood(
        Box::new(connect(play)),
        b"{\"t\":\"status\"}\n".repeat(BATCH),
        FLOOD_UNREAD_BYTES_MAX,
        Arc::clone(&stop),
    );
    assert!(play_status(play), "status while another client floods");
    // Its answers pile up unread until the server gives up on it; the test does not
    // stop it, so only a cut ends it before it has sent everything.
    let ended = flooder.join().unwrap();
    assert_eq!(ended, Ended::Cut, "the server read the whole flood");
    assert!(play_status(play));
}
