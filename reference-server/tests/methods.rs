//! SPEC §3 routing, in-process, for every HTTP service: an unknown path is 404
//! `not_found`, and a known path asked with another method is 405 `method_not_allowed`
//! with an `Allow` header naming the methods it answers (`/healthz` included).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use catwar_server::config::Argon2Preset;
use catwar_server::domain::resources::{ensure_default, Catalog, DEFAULT_CURRENT_VERSION};
use catwar_server::domain::{tls, users};
use catwar_server::runtime::event_loop::{bind_loopback, Limits, ServerHandle};
use catwar_server::runtime::running::Running;
use catwar_server::services::balancer::{self, BalancerConfig};
use catwar_server::services::balancer_observer::Role;
use catwar_server::services::file_node;
use catwar_server::services::lobby::{self, LobbyConfig};
use catwar_server::services::profile::{self, ProfileConfig, LOGIN_QUEUE_MAX};
use catwar_server::services::router::{self, RouterConfig};
use catwar_server::services::storage::{self, StorageConfig};

use crate::util::{exchange, tls_request, Raw};

/// Every service of the scenario that speaks HTTP, started on port 0 in one data folder.
struct Services {
    dir: tempfile::TempDir,
    file_node: ServerHandle,
    balancers: [Running; 2],
    storage: Running,
    lobby: Running,
    profile: Running,
    router: Running,
}

impl Services {
    fn start() -> Services {
        let dir = tempfile::tempdir().unwrap();
        ensure_default(dir.path()).unwrap();
        users::seed(dir.path(), 1, Some(Argon2Preset::Fast)).unwrap();
        let data: PathBuf = dir.path().into();
        let catalog = Arc::new(Catalog::load(&data).unwrap());
        let file_node = file_node::start(
            bind_loopback().unwrap(),
            Arc::clone(&catalog),
            Limits::default(),
        )
        .unwrap();
        let listeners = [bind_loopback().unwrap(), bind_loopback().unwrap()];
        let balancer_addrs = listeners.each_ref().map(|l| l.local_addr().unwrap());
        let [primary, observer] = listeners;
        let balancer = |listener: std::net::TcpListener, role: Role, peer: SocketAddr| {
            let config = BalancerConfig {
                role,
                peer,
                nodes: vec![file_node.addr()],
                heartbeat_interval: Duration::from_millis(100),
                heartbeat_deadline: Duration::from_millis(300),
                health_interval: Duration::from_millis(100),
                epoch_file: Some(data.join(format!("{role:?}.epoch"))),
            };
            balancer::start(listener, config, Limits::default()).unwrap()
        };
        let balancers = [
            balancer(primary, Role::Primary, balancer_addrs[1]),
            balancer(observer, Role::Observer, balancer_addrs[0]),
        ];
        let storage = storage::start(
            bind_loopback().unwrap(),
            StorageConfig::new(catalog, balancer_addrs.to_vec()),
            Limits::default(),
        )
        .unwrap();
        // No play server runs: these requests never get as far as asking one.
        let play: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let lobby = lobby::start(
            bind_loopback().unwrap(),
            LobbyConfig {
                data_dir: data.clone(),
                token_idle_s: 600,
                play_servers: vec![play],
                players_per_match: 2,
                match_fill_timeout_s: 5,
                public: Default::default(),
            },
            Limits::default(),
        )
        .unwrap();
        let profile = profile::start(
            bind_loopback().unwrap(),
            ProfileConfig {
                data_dir: data.clone(),
                lobby: lobby.addr(),
                workers: 1,
                login_queue: LOGIN_QUEUE_MAX,
                token_idle_s: 600,
                argon2: Argon2Preset::Fast,
                public: Default::default(),
            },
            Limits::default(),
        )
        .unwrap();
        let router = router::start(
            bind_loopback().unwrap(),
            RouterConfig {
                data_dir: data,
                play_servers: vec![play],
                lobby: Some(lobby.addr()),
                token_idle_s: 600,
            },
            Limits::default(),
        )
        .unwrap();
        Services {
            dir,
            file_node,
            balancers,
            storage,
            lobby,
            profile,
            router,
        }
    }

    fn cert(&self) -> PathBuf {
        tls::cert_path(self.dir.path())
    }
}

/// One request with an empty body, over TLS when `cert` is given.
fn request(addr: SocketAddr, cert: Option<&Path>, method: &str, path: &str) -> Raw {
    match cert {
        Some(cert) => tls_request(addr, cert, method, path, None, ""),
        None => {
            let head = format!("{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
            exchange(addr, head.as_bytes()).0
        }
    }
}

/// Asks every route of one service with methods it does not answer, and paths it does
/// not know with the method its routes answer.
fn check(
    name: &str,
    addr: SocketAddr,
    cert: Option<&Path>,
    routes: &[(&str, &str)],
    unknown: &[(&str, &str)],
) {
    for &(allowed, path) in routes {
        let wrong: &[&str] = match allowed {
            "GET" => &["POST", "DELETE", "PUT"],
            _ => &["GET", "DELETE", "PATCH"],
        };
        for method in wrong {
            let raw = request(addr, cert, method, path);
            let what = format!("{name}: {method} {path}");
            assert_eq!(raw.status, 405, "{what}");
            assert_eq!(raw.json()["error"], "method_not_allowed", "{what}");
            assert_eq!(raw.header("allow"), Some(allowed), "{what}");
        }
    }
    for &(method, path) in unknown {
        let raw = request(addr, cert, method, path);
        let what = format!("{name}: {method} {path}");
        assert_eq!(raw.status, 404, "{what}");
        assert_eq!(raw.json()["error"], "not_found", "{what}");
        assert_eq!(raw.header("allow"), None, "{what}");
    }
}

#[test]
fn every_route_of_every_http_service_answers_a_wrong_method_with_405_and_allow() {
    let s = Services::start();
    let file = format!("/v1/files/{DEFAULT_CURRENT_VERSION}/catwar.pak");
    let plain = [("GET", "/nope"), ("POST", "/nope"), ("GET", "/v1/nope")];

    check(
        "storage",
        s.storage.addr(),
        None,
        &[("GET", "/v1/update"), ("GET", "/healthz")],
        &plain,
    );
    for (name, balancer) in ["balancer", "balancer-observer"].iter().zip(&s.balancers) {
        check(
            name,
            balancer.addr(),
            None,
            &[
                ("GET", "/v1/pick"),
                ("GET", "/v1/status"),
                ("GET", "/healthz"),
            ],
            &plain,
        );
    }
    check(
        "file node",
        s.file_node.addr(),
        None,
        &[("GET", &file), ("GET", "/healthz")],
        &[
            ("GET", "/v1/files"),
            ("GET", "/v1/file/x"),
            ("DELETE", "/nope"),
        ],
    );
    check(
        "profile",
        s.profile.addr(),
        Some(&s.cert()),
        &[
            ("POST", "/v1/login"),
            ("POST", "/v1/refresh"),
            ("POST", "/v1/logout"),
            ("GET", "/healthz"),
        ],
        &[("POST", "/v1/nope"), ("GET", "/nope")],
    );
    check(
        "lobby",
        s.lobby.addr(),
        None,
        &[
            ("GET", "/v1/me"),
            ("GET", "/v1/ranking"),
            ("POST", "/v1/start"),
            ("GET", "/healthz"),
            ("POST", "/internal/v1/revoke"),
            ("POST", "/internal/v1/users/invalidate"),
        ],
        &[
            ("GET", "/nope"),
            ("POST", "/internal/v1/nope"),
            ("POST", "/internal"),
        ],
    );
    check(
        "router",
        s.router.addr(),
        None,
        &[("GET", "/v1/observer"), ("GET", "/healthz")],
        &plain,
    );
}
