//! Every port of the scenario in this process, for the tests of hostile clients: storage,
//! both balancers, a file node, profile (TLS), lobby, router and a play server, all on
//! port 0 in one data folder, with the limits a test sets low. A probe per port shows
//! that a well-behaved client is still served at once after whatever a test threw at it.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use catwar_server::config::Argon2Preset;
use catwar_server::domain::resources::{ensure_default, Catalog};
use catwar_server::domain::{db, ticket, tls, token, users};
use catwar_server::runtime::event_loop::{bind_loopback, Limits, ServerHandle};
use catwar_server::runtime::running::Running;
use catwar_server::services::balancer::{self, BalancerConfig};
use catwar_server::services::balancer_observer::Role;
use catwar_server::services::file_node;
use catwar_server::services::lobby::{self, LobbyConfig};
use catwar_server::services::observer::process::ProcessSpawner;
use catwar_server::services::observer::SessionArgs;
use catwar_server::services::play::{self, PlayConfig};
use catwar_server::services::profile::{self, ProfileConfig, LOGIN_QUEUE_MAX};
use catwar_server::services::router::{self, RouterConfig};
use catwar_server::services::storage::{self, StorageConfig};

use crate::util::{connect, connect_from, read_response, tls_request, wait_for, Raw, WAIT_S_MAX};

/// Users seeded in every fleet: `user1`…`userN` with password `pw-<id>`.
pub const USERS: u64 = 10;
/// The idle timeout of every session rule in the fleet; far beyond any test.
pub const TOKEN_IDLE_S: u64 = 600;
/// Ticks per match: at 20 Hz a match outlives any test, so an observer of it stays up.
const MATCH_TICKS: u64 = 1_000_000;
/// A match with one player starts after this, so its observer has ticks to relay.
const FILL_TIMEOUT_MS: u64 = 100;

/// A port a client can reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    Storage,
    Balancer,
    BalancerObserver,
    FileNode,
    Profile,
    Lobby,
    Router,
    Play,
}

/// The ports that speak plain HTTP/1.1 through the shared event loop.
pub const PLAIN_HTTP: [Port; 6] = [
    Port::Storage,
    Port::Balancer,
    Port::BalancerObserver,
    Port::FileNode,
    Port::Lobby,
    Port::Router,
];

/// The services, started in one data folder.
pub struct Fleet {
    pub dir: tempfile::TempDir,
    pub file_node: ServerHandle,
    pub balancers: [Running; 2],
    pub storage: Running,
    pub profile: Running,
    pub lobby: Running,
    pub router: Running,
    pub play: Option<Running>,
    pub play_addr: SocketAddr,
}

impl Fleet {
    /// Every service with these HTTP limits and the play server's defaults.
    pub fn start(limits: Limits) -> Fleet {
        Fleet::tuned(limits, |_| {})
    }

    /// Every service with these HTTP limits and the play server's config changed by `tune`.
    pub fn tuned(limits: Limits, tune: impl FnOnce(&mut PlayConfig)) -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let data: PathBuf = dir.path().into();
        ensure_default(&data).unwrap();
        users::seed(&data, USERS, Some(Argon2Preset::Fast)).unwrap();
        let catalog = Arc::new(Catalog::load(&data).unwrap());
        let file_node = file_node::start(
            bind_loopback().unwrap(),
            Arc::clone(&catalog),
            limits.clone(),
        )
        .unwrap();
        let listeners = [bind_loopback().unwrap(), bind_loopback().unwrap()];
        let balancer_addrs = listeners.each_ref().map(|l| l.local_addr().unwrap());
        let [primary, standby] = listeners;
        let balancer = |listener: TcpListener, role: Role, peer: SocketAddr| {
            let config = BalancerConfig {
                role,
                peer,
                nodes: vec![file_node.addr()],
                heartbeat_interval: Duration::from_millis(100),
                heartbeat_deadline: Duration::from_millis(300),
                health_interval: Duration::from_millis(100),
                epoch_file: Some(data.join(format!("{role:?}.epoch"))),
            };
            balancer::start(listener, config, limits.clone()).unwrap()
        };
        let balancers = [
            balancer(primary, Role::Primary, balancer_addrs[1]),
            balancer(standby, Role::Observer, balancer_addrs[0]),
        ];
        let storage = storage::start(
            bind_loopback().unwrap(),
            StorageConfig::new(catalog, balancer_addrs.to_vec()),
            limits.clone(),
        )
        .unwrap();
        let play_listener = bind_loopback().unwrap();
        let play_addr = play_listener.local_addr().unwrap();
        let lobby = lobby::start(
            bind_loopback().unwrap(),
            LobbyConfig {
                data_dir: data.clone(),
                token_idle_s: TOKEN_IDLE_S,
                play_servers: vec![play_addr],
                players_per_match: 2,
                match_fill_timeout_s: 5,
                public: Default::default(),
            },
            limits.clone(),
        )
        .unwrap();
        let profile = profile::start(
            bind_loopback().unwrap(),
            ProfileConfig {
                data_dir: data.clone(),
                lobby: lobby.addr(),
                workers: 1,
                login_queue: LOGIN_QUEUE_MAX,
                token_idle_s: TOKEN_IDLE_S,
                argon2: Argon2Preset::Fast,
                public: Default::default(),
            },
            limits.clone(),
        )
        .unwrap();
        let session = SessionArgs {
            token_idle_s: TOKEN_IDLE_S,
            lobby: Some(lobby.addr()),
        };
        let mut config = PlayConfig {
            data_dir: data.clone(),
            public: play_addr,
            lobby: Some(lobby.addr()),
            players_per_match: 2,
            fill_timeout: Duration::from_millis(FILL_TIMEOUT_MS),
            match_ticks: MATCH_TICKS,
            tick_hz: 20,
            spawner: Arc::new(ProcessSpawner::new(
                env!("CARGO_BIN_EXE_catwar-server").into(),
                data.clone(),
                session,
            )),
            conns_max: play::CONNS_MAX,
            handshake_timeout: Duration::from_millis(play::HANDSHAKE_TIMEOUT_MS),
        };
        tune(&mut config);
        let play = play::start(play_listener, config).unwrap();
        let router = router::start(
            bind_loopback().unwrap(),
            RouterConfig {
                data_dir: data,
                play_servers: vec![play_addr],
                lobby: Some(lobby.addr()),
                token_idle_s: TOKEN_IDLE_S,
            },
            limits,
        )
        .unwrap();
        Fleet {
            dir,
            file_node,
            balancers,
            storage,
            profile,
            lobby,
            router,
            play: Some(play),
            play_addr,
        }
    }

    pub fn addr(&self, port: Port) -> SocketAddr {
        match port {
            Port::Storage => self.storage.addr(),
            Port::Balancer => self.balancers[0].addr(),
            Port::BalancerObserver => self.balancers[1].addr(),
            Port::FileNode => self.file_node.addr(),
            Port::Profile => self.profile.addr(),
            Port::Lobby => self.lobby.addr(),
            Port::Router => self.router.addr(),
            Port::Play => self.play_addr,
        }
    }

    pub fn cert(&self) -> PathBuf {
        tls::cert_path(self.dir.path())
    }

    pub fn db(&self) -> rusqlite::Connection {
        db::open(&self.dir.path().join(db::DB_FILE)).unwrap()
    }

    /// Asserts that a new, well-behaved client of `port` gets its answer.
    pub fn served(&self, port: Port) {
        let addr = self.addr(port);
        match port {
            Port::Play => assert!(play_status(addr), "{port:?} did not answer a status line"),
            Port::Profile => {
                let raw = tls_request(addr, &self.cert(), "GET", "/healthz", None, "");
                assert_eq!(raw.status, 200, "{port:?}");
            }
            _ => {
                let raw = healthz(addr).unwrap_or_else(|| panic!("{port:?} closed on /healthz"));
                assert_eq!(raw.status, 200, "{port:?}");
            }
        }
    }

    /// Asserts that every port serves a well-behaved client.
    pub fn all_served(&self) {
        for port in PLAIN_HTTP.into_iter().chain([Port::Profile, Port::Play]) {
            self.served(port);
        }
    }

    /// A ticket for `user` to join `match_id` on the fleet's play server.
    pub fn ticket(&self, user: &str, match_id: u64) -> String {
        let key = db::meta(&self.db(), ticket::TICKET_KEY_META)
            .unwrap()
            .unwrap();
        ticket::issue(key.as_bytes(), self.play_addr, match_id, user, db::now_ms()).unwrap()
    }

    /// A session token for `user` from 127.0.0.1, written straight to the DB.
    pub fn token(&self, user: &str) -> String {
        let t = token::new_token(user, b"test").unwrap();
        let now = db::now_ms();
        let row = db::SessionRow {
            token_hash: token::token_hash(&t),
            user_id: user.into(),
            ip: "127.0.0.1".into(),
            lobby: self.lobby.addr().to_string(),
            created_ms: now,
            last_used_ms: now,
            revoked: false,
        };
        assert!(db::insert_session(&self.db(), &row).unwrap());
        t
    }

    /// Starts a match with one player who never leaves and an observer of it; returns
    /// the observer's address and the player's connection, which keeps the match alive.
    pub fn observer(&self, match_id: u64) -> (SocketAddr, TcpStream) {
        let mut player = connect(self.play_addr);
        let join = serde_json::json!({"t": "join", "ticket": self.ticket("user1", match_id)});
        writeln!(player, "{join}").unwrap();
        let joined = read_line(&mut player).expect("an answer to join");
        assert!(joined.contains("\"joined\""), "{joined}");
        let token = self.token("user1");
        let head = format!(
            "GET /v1/observer?match={match_id} HTTP/1.1\r\nAuthorization: Bearer {token}\r\n\r\n"
        );
        let (raw, _) = crate::util::exchange(self.router.addr(), head.as_bytes());
        assert_eq!(raw.status, 200, "{}", String::from_utf8_lossy(&raw.body));
        let observer = raw.json()["observer"].as_str().unwrap().parse().unwrap();
        (observer, player)
    }

    /// Asserts that a watcher with a valid token gets the first `state` line of the
    /// match the observer at `addr` relays.
    pub fn observer_served(&self, addr: SocketAddr, match_id: u64) {
        assert!(
            self.watch(addr, match_id),
            "the observer at {addr} did not serve a valid watcher"
        );
    }

    /// True when a watcher with a valid token gets a `state` line from `addr`.
    pub fn watch(&self, addr: SocketAddr, match_id: u64) -> bool {
        let mut watcher = connect(addr);
        let line =
            serde_json::json!({"t": "watch", "match": match_id, "token": self.token("user2")});
        if writeln!(watcher, "{line}").is_err() {
            return false;
        }
        read_line(&mut watcher).is_some_and(|l| l.contains("\"t\":\"state\""))
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        // The play server stops its observers, so no child process outlives the test.
        if let Some(play) = self.play.take() {
            let _ = play.shutdown();
        }
    }
}

/// `GET /healthz` on a new connection; `None` when the server closed instead.
pub fn healthz(addr: SocketAddr) -> Option<Raw> {
    let mut stream = connect(addr);
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .ok()?;
    read_response(&mut stream, &mut Vec::new())
}

/// True when a new connection to a play server gets an answer to `status`.
pub fn play_status(addr: SocketAddr) -> bool {
    let mut stream = connect(addr);
    if stream.write_all(b"{\"t\":\"status\"}\n").is_err() {
        return false;
    }
    read_line(&mut stream).is_some_and(|l| l.contains("\"t\":\"status\""))
}

/// Reads one line (at most 1 MiB, so a test never buffers without bound); `None` at
/// the end of the stream or on an error.
pub fn read_line(stream: &mut TcpStream) -> Option<String> {
    /// Longest line a test reads.
    const LINE_BYTES_MAX: u64 = 1024 * 1024;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while (line.len() as u64) < LINE_BYTES_MAX {
        match stream.read(&mut byte) {
            Ok(1) if byte[0] == b'\n' => return String::from_utf8(line).ok(),
            Ok(1) => line.push(byte[0]),
            _ => return None,
        }
    }
    None
}

/// Reads lines until one holds `"error"`; returns its code. `None` if the stream ended
/// first. Lines before it (a `state`, say) are skipped, at most `LINES_MAX` of them.
pub fn error_code(stream: &mut TcpStream) -> Option<String> {
    /// Lines read before giving up on an error line.
    const LINES_MAX: usize = 10_000;
    for _ in 0..LINES_MAX {
        let line = read_line(stream)?;
        let v: serde_json::Value = serde_json::from_str(&line).ok()?;
        if let Some(code) = v["error"].as_str() {
            return Some(code.to_string());
        }
    }
    None
}

/// True once the server has closed `stream` (EOF or a reset), reading and discarding
/// whatever it sent before, for at most [`WAIT_S_MAX`].
pub fn closed_eventually(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_secs(WAIT_S_MAX)))
        .unwrap();
    let mut buf = [0u8; 16 * 1024];
    let deadline = std::time::Instant::now() + Duration::from_secs(WAIT_S_MAX);
    while std::time::Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
    false
}

/// A TLS client that trusts exactly the fleet's certificate.
pub fn tls_connector(fleet: &Fleet) -> native_tls::TlsConnector {
    crate::util::tls_connector(&fleet.cert())
}

/// A finished TLS handshake with profile from the loopback address `from`.
pub fn tls_from(fleet: &Fleet, from: IpAddr) -> native_tls::TlsStream<TcpStream> {
    let tcp = connect_from(from, fleet.addr(Port::Profile));
    tls_connector(fleet)
        .connect("localhost", tcp)
        .expect("TLS handshake")
}

/// One request over TLS from `from`, with `head_extra` added to the head.
pub fn tls_exchange(
    fleet: &Fleet,
    from: IpAddr,
    method: &str,
    path: &str,
    head_extra: &str,
    body: &[u8],
) -> Raw {
    let mut stream = tls_from(fleet, from);
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{head_extra}Content-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    read_response(&mut stream, &mut Vec::new()).expect("a response")
}

/// Waits until a new well-behaved client of `port` is served again (after a flood).
pub fn resumes(fleet: &Fleet, port: Port) {
    wait_for(&format!("{port:?} to serve again"), || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fleet.served(port))).ok()
    });
}

/// A byte stream to one port: plain TCP, or TLS for profile.
pub trait Wire: Read + Write + Send {
    /// The TCP socket under the stream.
    fn tcp(&self) -> &TcpStream;
}

impl Wire for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Wire for native_tls::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref()
    }
}

/// True when `tcp` has something to read (bytes, an end of stream or a reset) within
/// `timeout`.
pub fn readable(tcp: &TcpStream, timeout: Duration) -> bool {
    let mut fd = libc::pollfd {
        fd: std::os::fd::AsRawFd::as_raw_fd(tcp),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one descriptor this stream owns, for the duration of the call.
    unsafe { libc::poll(&mut fd, 1, timeout.as_millis() as libc::c_int) > 0 }
}

/// A new connection to `port` from 127.0.0.1, through TLS for profile.
pub fn open(fleet: &Fleet, port: Port) -> Box<dyn Wire> {
    match port {
        Port::Profile => Box::new(tls_from(fleet, "127.0.0.1".parse().unwrap())),
        _ => Box::new(connect(fleet.addr(port))),
    }
}

/// True once the server closed the stream: end of stream, or a reset or TLS error,
/// anything but a read timeout. Bytes sent before the close are skipped, at most
/// 4 MiB of them.
pub fn closed(stream: &mut dyn Wire) -> bool {
    let mut buf = [0u8; 4096];
    for _ in 0..1024 {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => {
                return !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                )
            }
        }
    }
    false
}
