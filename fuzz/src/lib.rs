//! What the fuzz targets share: the services' handlers over a scratch data folder, and
//! a check that the server's output is well-framed HTTP.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use catwar_server::config::Argon2Preset;
use catwar_server::domain::db::{self, DbPool, SessionRow};
use catwar_server::domain::internal_key::InternalKey;
use catwar_server::domain::resources::{ensure_default, Catalog};
use catwar_server::domain::token::token_hash;
use catwar_server::domain::users;
use catwar_server::runtime::event_loop::fuzzing::Harness;
use catwar_server::runtime::event_loop::Handler;
use catwar_server::services::balancer::{Balancer, BalancerConfig};
use catwar_server::services::balancer_observer::Role;
use catwar_server::services::file_node::FileNode;
use catwar_server::services::lobby::{Lobby, LobbyConfig};
use catwar_server::services::profile::{Profile, ProfileConfig, LOGIN_QUEUE_MAX};
use catwar_server::services::router::{Router, RouterConfig};
use catwar_server::services::storage::{Storage, StorageConfig};

/// The token of the one live session in the lobby's DB (user1 from 127.0.0.1); the seed
/// corpora and the dictionary use it, so the fuzzer reaches the answers behind the
/// session rule.
pub const SESSION_TOKEN: &str = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00";

/// A fresh folder under the temporary directory, unique to this process. ci/fuzz.sh
/// points `TMPDIR` at a folder it deletes afterwards.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir()
        .join(format!("catwar-fuzz-{}", std::process::id()))
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch folder");
    dir
}

/// A resource catalog: the default resource set `up` creates.
pub fn catalog(dir: &Path) -> Arc<Catalog> {
    let root = dir.join("resources");
    ensure_default(&root).expect("default resources");
    Arc::new(Catalog::load(&root).expect("catalog"))
}

/// A user DB with `user1…user3` (fast argon2) and one live session of user1 from
/// 127.0.0.1 whose token is [`SESSION_TOKEN`]. Returns the internal key.
pub fn seeded_db(dir: &Path) -> String {
    users::seed(dir, 3, Some(Argon2Preset::Fast)).expect("seed users");
    let pool = DbPool::new(&dir.join(db::DB_FILE)).expect("user DB");
    let now = db::now_ms();
    let row = SessionRow {
        token_hash: token_hash(SESSION_TOKEN),
        user_id: "user1".into(),
        ip: "127.0.0.1".into(),
        lobby: "127.0.0.1:9".into(),
        created_ms: now,
        last_used_ms: now,
        revoked: false,
    };
    pool.with(|c| db::insert_session(c, &row)).expect("session");
    let key = InternalKey::load_or_create(&pool).expect("internal key");
    key.as_str().to_string()
}

/// Long enough that the seeded session never goes idle during a fuzzing run.
const TOKEN_IDLE_S: u64 = 10 * 365 * 24 * 3600;
/// Nothing listens here: a notice to "the lobby" is refused at once.
const NOBODY: &str = "127.0.0.1:9";

fn nobody() -> SocketAddr {
    NOBODY.parse().expect("address")
}

/// Every HTTP service's handler, each behind its own connection.
pub struct Services {
    /// Storage with no balancer: a stale version gets 503 `unavailable`.
    pub storage: Harness<Storage>,
    /// A file node over the default resources.
    pub file_node: Harness<FileNode>,
    /// A balancer that never became active (no heartbeat runs).
    pub balancer: Harness<Balancer>,
    /// Profile over a DB without users, so no login succeeds.
    pub profile: Harness<Profile>,
    /// The lobby over the seeded DB.
    pub lobby: Harness<Lobby>,
    /// The router over the seeded DB, with no play server.
    pub router: Harness<Router>,
    /// The seeded DB's internal key.
    pub internal_key: String,
}

impl Services {
    /// Builds every handler over scratch folders.
    pub fn new() -> Services {
        let shared = scratch("shared");
        let internal_key = seeded_db(&shared);
        let catalog = catalog(&shared);
        let storage =
            Storage::new(StorageConfig::new(Arc::clone(&catalog), Vec::new())).expect("storage");
        let balancer = Balancer::new(&BalancerConfig {
            role: Role::Primary,
            peer: nobody(),
            nodes: vec![nobody()],
            heartbeat_interval: Duration::from_millis(100),
            heartbeat_deadline: Duration::from_millis(300),
            health_interval: Duration::from_millis(100),
            epoch_file: None,
        });
        let profile_dir = scratch("profile");
        let profile = Profile::new(&ProfileConfig {
            data_dir: profile_dir,
            lobby: nobody(),
            workers: 1,
            login_queue: LOGIN_QUEUE_MAX,
            token_idle_s: 600,
            argon2: Argon2Preset::Fast,
            public: Default::default(),
        })
        .expect("profile");
        let lobby = Lobby::new(&LobbyConfig {
            data_dir: shared.clone(),
            token_idle_s: TOKEN_IDLE_S,
            play_servers: Vec::new(),
            players_per_match: 4,
            match_fill_timeout_s: 5,
            public: Default::default(),
        })
        .expect("lobby");
        let router = Router::new(RouterConfig {
            data_dir: shared,
            play_servers: Vec::new(),
            lobby: None,
            token_idle_s: TOKEN_IDLE_S,
        })
        .expect("router");
        Services {
            storage: harness(storage),
            file_node: harness(FileNode::new(catalog)),
            balancer: harness(balancer),
            profile: harness(profile),
            lobby: harness(lobby),
            router: harness(router),
            internal_key,
        }
    }
}

fn harness<H: Handler>(handler: H) -> Harness<H> {
    Harness::new(handler).expect("a loopback connection")
}

impl Default for Services {
    fn default() -> Services {
        Services::new()
    }
}

/// Checks that `out` is a sequence of complete HTTP/1.1 responses whose bodies match
/// their `Content-Length`, with nothing after one that closes the connection, and
/// returns their status codes.
pub fn check_framing(out: &[u8]) -> Vec<u16> {
    let mut statuses = Vec::new();
    let mut rest = out;
    while !rest.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        let head_len = match response.parse(rest) {
            Ok(httparse::Status::Complete(n)) => n,
            other => panic!(
                "the server wrote a broken head ({other:?}): {:?}",
                String::from_utf8_lossy(rest)
            ),
        };
        let status = response.code.expect("status");
        assert!((100..600).contains(&status), "status {status}");
        let mut length = None;
        let mut close = false;
        for h in response.headers.iter() {
            let value = std::str::from_utf8(h.value).expect("header values are UTF-8");
            if h.name.eq_ignore_ascii_case("content-length") {
                assert!(length.is_none(), "two content-length headers");
                length = Some(value.parse::<usize>().expect("content-length is a number"));
            }
            if h.name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close") {
                close = true;
            }
        }
        let length = length.expect("every answer has a content-length");
        assert!(
            rest.len() >= head_len + length,
            "body shorter than its content-length"
        );
        rest = &rest[head_len + length..];
        statuses.push(status);
        assert!(
            !close || rest.is_empty(),
            "bytes after an answer that closes"
        );
    }
    statuses
}
