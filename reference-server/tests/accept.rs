//! An accept failure ends no service. With the process out of descriptors, the HTTP loop
//! and the play loop log the failure, rest their listener, and once descriptors are free
//! again take the clients that queued meanwhile by themselves, without waiting for a new
//! client to wake them, and go on serving.
//!
//! Each test lowers its own process's descriptor limit, which would starve every test
//! running beside it under `cargo test`; so each runs its body in a child process of its
//! own (under nextest the child is simply one more process).

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use catwar_server::config::Argon2Preset;
use catwar_server::domain::resources::{ensure_default, Catalog};
use catwar_server::domain::users;
use catwar_server::runtime::event_loop::{bind_loopback, Limits, ACCEPT_BACKOFF_MS};
use catwar_server::services::file_node;
use catwar_server::services::observer::process::ProcessSpawner;
use catwar_server::services::observer::SessionArgs;
use catwar_server::services::play::{self, PlayConfig};

use crate::util::{read_response, WAIT_S_MAX};

/// Set in the child process that runs a test's body.
const CHILD_ENV: &str = "CATWAR_TEST_OWN_PROCESS";
/// Connections the service accepts before it has no descriptor left.
const SERVED: usize = 3;
/// Connections that arrive while it has none, and wait in the backlog.
const QUEUED: usize = 2;

/// Runs `body` in a child process that runs only the test `name` of this module.
fn in_own_process(name: &str, body: impl FnOnce()) {
    if std::env::var_os(CHILD_ENV).is_some() {
        return body();
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([&format!("accept::{name}"), "--exact", "--nocapture"])
        .env(CHILD_ENV, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("1 passed"),
        "the child ran no test: {stdout}"
    );
}

/// What a test asks of the service and how it recognises the answer.
struct Protocol {
    request: &'static [u8],
    /// Reads one answer; true if it is the expected one.
    answered: fn(&mut TcpStream) -> bool,
}

const HTTP: Protocol = Protocol {
    request: b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n",
    answered: http_ok,
};

fn http_ok(stream: &mut TcpStream) -> bool {
    read_response(stream, &mut Vec::new()).is_some_and(|r| r.status == 200)
}

const LINES: Protocol = Protocol {
    request: b"{\"t\":\"status\"}\n",
    answered: status_line,
};

fn status_line(stream: &mut TcpStream) -> bool {
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).is_ok() && line.contains("\"status\"")
}

/// A TCP socket created now and connected later: connecting takes no descriptor, so the
/// test's own clients never compete with the service for the last ones.
fn unconnected_socket() -> TcpStream {
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    unsafe { TcpStream::from_raw_fd(fd) }
}

fn connect(socket: TcpStream, addr: SocketAddr) -> TcpStream {
    let SocketAddr::V4(v4) = addr else {
        panic!("IPv4 only")
    };
    let remote = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: v4.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*v4.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let rc = unsafe {
        libc::connect(
            socket.as_raw_fd(),
            &remote as *const libc::sockaddr_in as *const libc::sockaddr,
            len,
        )
    };
    assert_eq!(rc, 0, "connect: {}", std::io::Error::last_os_error());
    socket
        .set_read_timeout(Some(Duration::from_secs(WAIT_S_MAX)))
        .unwrap();
    socket
}

/// Lowers the soft descriptor limit so that exactly `free` descriptor numbers are left
/// for new descriptors: a new one always takes a number below the limit.
fn leave_free_descriptors(free: usize) {
    let mut left = free;
    let mut fd = 0;
    while left > 0 {
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
            left -= 1;
        }
        fd += 1;
    }
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
        0
    );
    limit.rlim_cur = fd as libc::rlim_t;
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
}

/// Starves the service at `addr` of descriptors, frees them, and checks that the clients
/// that queued meanwhile and a new one are all served.
fn starve_and_recover(addr: SocketAddr, protocol: &Protocol) {
    let ask = |stream: &mut TcpStream| stream.write_all(protocol.request).unwrap();
    let mut served: Vec<TcpStream> = (0..SERVED + QUEUED).map(|_| unconnected_socket()).collect();
    let queued = served.split_off(SERVED);
    leave_free_descriptors(SERVED);

    let mut served: Vec<TcpStream> = served.into_iter().map(|s| connect(s, addr)).collect();
    for stream in &mut served {
        ask(stream);
        assert!(
            (protocol.answered)(stream),
            "served while descriptors are left"
        );
    }
    // The service has no descriptor left: these wait in the backlog, unanswered.
    let mut queued: Vec<TcpStream> = queued.into_iter().map(|s| connect(s, addr)).collect();
    for stream in &mut queued {
        ask(stream);
    }
    for stream in &mut queued {
        stream
            .set_read_timeout(Some(Duration::from_millis(3 * ACCEPT_BACKOFF_MS)))
            .unwrap();
        let kind = stream.read(&mut [0u8; 1]).map(|_| ()).unwrap_err().kind();
        assert!(
            matches!(kind, ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "{kind:?}"
        );
        stream
            .set_read_timeout(Some(Duration::from_secs(WAIT_S_MAX)))
            .unwrap();
    }
    // Closing the served clients frees descriptors on both ends. No new client arrives
    // to wake the listener: the service must go back to it by itself.
    drop(served);
    for stream in &mut queued {
        assert!((protocol.answered)(stream), "a queued client is served");
    }
    let mut fresh = connect(unconnected_socket(), addr);
    ask(&mut fresh);
    assert!((protocol.answered)(&mut fresh), "a new client is served");
}

#[test]
fn an_http_loop_out_of_descriptors_pauses_and_serves_the_queued_clients() {
    in_own_process(
        "an_http_loop_out_of_descriptors_pauses_and_serves_the_queued_clients",
        || {
            let dir = tempfile::tempdir().unwrap();
            ensure_default(dir.path()).unwrap();
            let catalog = Arc::new(Catalog::load(dir.path()).unwrap());
            let server =
                file_node::start(bind_loopback().unwrap(), catalog, Limits::default()).unwrap();
            starve_and_recover(server.addr(), &HTTP);
            server.shutdown().unwrap();
        },
    );
}

#[test]
fn a_play_loop_out_of_descriptors_pauses_and_serves_the_queued_clients() {
    in_own_process(
        "a_play_loop_out_of_descriptors_pauses_and_serves_the_queued_clients",
        || {
            let dir = tempfile::tempdir().unwrap();
            users::seed(dir.path(), 1, Some(Argon2Preset::Fast)).unwrap();
            let listener = bind_loopback().unwrap();
            let addr = listener.local_addr().unwrap();
            let session = SessionArgs {
                token_idle_s: 600,
                lobby: None,
            };
            // No lobby: its load polls would take descriptors while the test counts them.
            let config = PlayConfig {
                data_dir: dir.path().into(),
                public: addr,
                lobby: None,
                players_per_match: 2,
                fill_timeout: Duration::from_secs(5),
                match_ticks: 100,
                tick_hz: 20,
                spawner: Arc::new(ProcessSpawner::new(
                    env!("CARGO_BIN_EXE_catwar-server").into(),
                    dir.path().into(),
                    session,
                )),
                conns_max: play::CONNS_MAX,
                handshake_timeout: Duration::from_millis(play::HANDSHAKE_TIMEOUT_MS),
            };
            let running = play::start(listener, config).unwrap();
            starve_and_recover(addr, &LINES);
            running.shutdown().unwrap();
        },
    );
}
