//! A data folder with users and live sessions, and the services started in-process on
//! loopback ports, as the integration tests start them (`reference-server/tests`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use catwar_server::config::Argon2Preset;
use catwar_server::domain::db::{self, DbPool, SessionRow};
use catwar_server::domain::internal_key::InternalKey;
use catwar_server::domain::resources::{ensure_default, Catalog};
use catwar_server::domain::{tls, token, users};
use catwar_server::runtime::event_loop::{bind_loopback, Limits, ServerHandle};
use catwar_server::runtime::running::Running;
use catwar_server::services::file_node;
use catwar_server::services::lobby::{self, LobbyConfig};
use catwar_server::services::profile::{self, ProfileConfig, LOGIN_QUEUE_MAX};

/// The lobby's and the sessions' idle timeout, seconds: a day, so no session a benchmark
/// uses goes idle while it runs.
pub const TOKEN_IDLE_S: u64 = 24 * 3600;
/// Nothing listens here: services that only name the lobby (profile) or a play server
/// (the lobby, until `/v1/start`) get an address that refuses at once.
pub const NOBODY: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9);
/// Where every benchmark client connects from; sessions are opened for this address.
pub const CLIENT_IP: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A data folder (user DB, internal key, resources) removed on drop.
#[derive(Debug)]
pub struct Data {
    dir: tempfile::TempDir,
    db: DbPool,
    /// The internal key services present to each other (observers' subscriptions).
    pub key: InternalKey,
}

impl Data {
    /// `user1…user<users>` with the fast argon2 preset (so setting up is quick; the
    /// benchmarks that measure a preset hash their own), the internal key, and the
    /// default resources.
    pub fn new(users: u64) -> Data {
        let dir = tempfile::tempdir().expect("a temporary folder");
        users::seed(dir.path(), users, Some(Argon2Preset::Fast)).expect("seeded users");
        ensure_default(dir.path()).expect("default resources");
        let db = DbPool::new(&dir.path().join(db::DB_FILE)).expect("the user DB");
        let key = InternalKey::load_or_create(&db).expect("the internal key");
        Data { dir, db, key }
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The user DB.
    pub fn db(&self) -> &DbPool {
        &self.db
    }

    /// Opens a live session for `user` from [`CLIENT_IP`] and returns its token, as
    /// profile opens one after a login: a token drawn, and its hash stored by an insert
    /// that refuses a hash already stored (the collision check).
    pub fn session(&self, user: &str) -> String {
        let token = token::new_token(user, b"bench").expect("OS randomness");
        let now = db::now_ms();
        let row = SessionRow {
            token_hash: token::token_hash(&token),
            user_id: user.to_string(),
            ip: CLIENT_IP.to_string(),
            lobby: NOBODY.to_string(),
            created_ms: now,
            last_used_ms: now,
            revoked: false,
        };
        let stored = self.db.with(|c| db::insert_session(c, &row));
        assert!(stored.expect("a session row"), "a fresh token collided");
        token
    }

    /// The lobby's configuration over this folder, with no play server.
    pub fn lobby_config(&self) -> LobbyConfig {
        LobbyConfig {
            data_dir: self.path().into(),
            token_idle_s: TOKEN_IDLE_S,
            play_servers: vec![NOBODY],
            players_per_match: 4,
            match_fill_timeout_s: 5,
            public: Default::default(),
        }
    }

    /// The lobby, listening on a loopback port.
    pub fn start_lobby(&self) -> Running {
        let listener = bind_loopback().expect("a loopback port");
        lobby::start(listener, self.lobby_config(), Limits::default()).expect("the lobby")
    }

    /// Profile with `workers` login workers and the fast preset, listening (TLS) on a
    /// loopback port; its certificate is at `catwar_server::domain::tls::cert_path`.
    pub fn start_profile(&self, workers: usize) -> Running {
        let config = ProfileConfig {
            data_dir: self.path().into(),
            lobby: NOBODY,
            public: Default::default(),
            workers,
            login_queue: LOGIN_QUEUE_MAX,
            token_idle_s: TOKEN_IDLE_S,
            argon2: Argon2Preset::Fast,
        };
        let listener = bind_loopback().expect("a loopback port");
        profile::start(listener, config, Limits::default()).expect("profile")
    }

    /// A TLS client that trusts exactly the certificate profile serves from this folder
    /// (it exists once [`Data::start_profile`] returned).
    pub fn profile_connector(&self) -> native_tls::TlsConnector {
        let cert = std::fs::read(tls::cert_path(self.path())).expect("profile's certificate");
        native_tls::TlsConnector::builder()
            .add_root_certificate(native_tls::Certificate::from_pem(&cert).expect("a PEM"))
            .disable_built_in_roots(true)
            .build()
            .expect("a TLS connector")
    }

    /// A file node over the default resources, listening on a loopback port.
    pub fn start_file_node(&self) -> ServerHandle {
        let catalog = Arc::new(Catalog::load(self.path()).expect("the resource catalog"));
        let listener = bind_loopback().expect("a loopback port");
        file_node::start(listener, catalog, Limits::default()).expect("the file node")
    }
}

/// `POST /v1/login` of `user<n>` with its seeded password, as a game client sends it.
pub fn login_request(n: u64) -> Vec<u8> {
    let id = format!("user{n}");
    let body = serde_json::json!({"id": id, "password": users::seed_password(&id)});
    crate::raw::post_json("/v1/login", &body.to_string())
}
