//! Balancer failover, in-process: the observer takes over with a higher epoch, a returning
//! balancer stays standby, storage follows the highest epoch, and no answer names a dead
//! file node.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use catwar_server::domain::resources::{ensure_default, Catalog, DEFAULT_PREVIOUS_VERSION};
use catwar_server::runtime::event_loop::{bind_loopback, Limits, ServerHandle};
use catwar_server::runtime::running::Running;
use catwar_server::services::balancer::{self, BalancerConfig};
use catwar_server::services::balancer_observer::Role;
use catwar_server::services::file_node;
use catwar_server::services::storage::{self, StorageConfig};

use crate::util::{get, wait_for};

const HEARTBEAT_MS: u64 = 50;
/// Generous, because tests run in parallel on two cores and a starved observer that
/// misses heartbeats would (correctly) promote itself.
const DEADLINE_MS: u64 = 500;

struct Cluster {
    _dir: tempfile::TempDir,
    catalog: Arc<Catalog>,
    nodes: Vec<Option<ServerHandle>>,
    node_addrs: Vec<SocketAddr>,
    balancer_addrs: [SocketAddr; 2],
    balancers: [Option<Running>; 2],
}

fn config(
    role: Role,
    peer: SocketAddr,
    nodes: &[SocketAddr],
    dir: &std::path::Path,
) -> BalancerConfig {
    BalancerConfig {
        role,
        peer,
        nodes: nodes.to_vec(),
        heartbeat_interval: Duration::from_millis(HEARTBEAT_MS),
        heartbeat_deadline: Duration::from_millis(DEADLINE_MS),
        health_interval: Duration::from_millis(HEARTBEAT_MS),
        epoch_file: Some(dir.join(format!("{role:?}.epoch"))),
    }
}

impl Cluster {
    fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        ensure_default(dir.path()).unwrap();
        let catalog = Arc::new(Catalog::load(dir.path()).unwrap());
        let nodes: Vec<ServerHandle> = (0..3)
            .map(|_| {
                file_node::start(
                    bind_loopback().unwrap(),
                    Arc::clone(&catalog),
                    Limits::default(),
                )
                .unwrap()
            })
            .collect();
        let node_addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr()).collect();
        let listeners = [bind_loopback().unwrap(), bind_loopback().unwrap()];
        let balancer_addrs = [
            listeners[0].local_addr().unwrap(),
            listeners[1].local_addr().unwrap(),
        ];
        let [primary, observer] = listeners;
        let p = balancer::start(
            primary,
            config(Role::Primary, balancer_addrs[1], &node_addrs, dir.path()),
            Limits::default(),
        )
        .unwrap();
        let o = balancer::start(
            observer,
            config(Role::Observer, balancer_addrs[0], &node_addrs, dir.path()),
            Limits::default(),
        )
        .unwrap();
        Cluster {
            _dir: dir,
            catalog,
            nodes: nodes.into_iter().map(Some).collect(),
            node_addrs,
            balancer_addrs,
            balancers: [Some(p), Some(o)],
        }
    }

    fn status(&self, i: usize) -> serde_json::Value {
        get(self.balancer_addrs[i], "/v1/status").json()
    }

    /// Waits until `i` is active and its peer has heard of its epoch by heartbeat, the
    /// state a topology is in once it has run for a moment.
    fn wait_settled(&self, i: usize) -> u64 {
        let epoch = self.wait_active(i);
        wait_for("the standby to learn the epoch", || {
            (self.status(1 - i)["epoch"] == epoch).then_some(())
        });
        epoch
    }

    fn wait_active(&self, i: usize) -> u64 {
        wait_for("an active balancer", || {
            let s = self.status(i);
            (s["role"] == "active").then(|| s["epoch"].as_u64().unwrap())
        })
    }

    fn kill_balancer(&mut self, i: usize) {
        self.balancers[i].take().unwrap().shutdown().unwrap();
    }

    fn storage(&self) -> Running {
        let config = StorageConfig::new(Arc::clone(&self.catalog), self.balancer_addrs.to_vec());
        storage::start(bind_loopback().unwrap(), config, Limits::default()).unwrap()
    }

    fn restart_balancer(&mut self, i: usize) {
        let listener = TcpListener::bind(self.balancer_addrs[i]).unwrap();
        let role = if i == 0 {
            Role::Primary
        } else {
            Role::Observer
        };
        let cfg = config(
            role,
            self.balancer_addrs[1 - i],
            &self.node_addrs,
            self._dir.path(),
        );
        self.balancers[i] = Some(balancer::start(listener, cfg, Limits::default()).unwrap());
    }
}

#[test]
fn observer_takes_over_with_a_higher_epoch_and_the_old_balancer_stays_standby() {
    let mut cluster = Cluster::start();
    let epoch = cluster.wait_settled(0);
    assert_eq!(cluster.status(1)["role"], "standby");
    let standby = get(cluster.balancer_addrs[1], "/v1/pick?n=2");
    assert_eq!(standby.status, 503);
    assert_eq!(standby.json()["error"], "standby");

    cluster.kill_balancer(0);
    let new_epoch = cluster.wait_active(1);
    assert!(new_epoch > epoch, "{new_epoch} > {epoch}");
    let pick = get(cluster.balancer_addrs[1], "/v1/pick?n=2").json();
    assert_eq!(pick["epoch"], new_epoch);

    // The balancer comes back on its old address and must not take the role back.
    cluster.restart_balancer(0);
    wait_for("the restarted balancer to learn the epoch", || {
        (cluster.status(0)["epoch"] == new_epoch).then_some(())
    });
    for _ in 0..10 {
        assert_eq!(cluster.status(0)["role"], "standby");
        assert_eq!(cluster.status(1)["role"], "active");
        std::thread::sleep(Duration::from_millis(HEARTBEAT_MS));
    }

    // When the observer dies in turn, the balancer takes over with the next epoch.
    cluster.kill_balancer(1);
    assert!(cluster.wait_active(0) > new_epoch);
}

#[test]
fn storage_follows_the_highest_epoch_across_a_failover() {
    let mut cluster = Cluster::start();
    cluster.wait_settled(0);
    let storage = cluster.storage();
    let check = format!("/v1/update?version={DEFAULT_PREVIOUS_VERSION}");
    let before = get(storage.addr(), &check).json();
    assert_eq!(before["update"], true);
    let epoch_before = before["epoch"].as_u64().unwrap();
    cluster.kill_balancer(0);
    // Until the standby takes over, storage answers from a balancer's view of healthy
    // nodes, marked stale and with the epoch it trusted: the failover is invisible.
    let after = wait_for("an update answer from the new epoch", || {
        let raw = get(storage.addr(), &check);
        assert_eq!(raw.status, 200, "{}", String::from_utf8_lossy(&raw.body));
        let answer = raw.json();
        if answer["stale"] == true {
            assert_eq!(answer["epoch"].as_u64().unwrap(), epoch_before);
            assert!(!answer["endpoints"].as_array().unwrap().is_empty());
            return None;
        }
        Some(answer)
    });
    assert!(after["epoch"].as_u64().unwrap() > epoch_before);
    assert!(
        after.get("stale").is_none(),
        "a fresh pick is not marked stale"
    );
    storage.shutdown().unwrap();
}

#[test]
fn no_answer_names_a_dead_file_node() {
    let mut cluster = Cluster::start();
    cluster.wait_settled(0);
    let storage = cluster.storage();
    let dead = cluster.node_addrs[1];
    cluster.nodes[1].take().unwrap().shutdown().unwrap();
    // Once the balancer has seen the node fail, neither a pick nor an update names it.
    wait_for("the balancer to mark the node unhealthy", || {
        let nodes = cluster.status(0)["nodes"].clone();
        nodes
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["addr"] == dead.to_string() && n["healthy"] == false)
            .then_some(())
    });
    let check = format!("/v1/update?version={DEFAULT_PREVIOUS_VERSION}");
    for _ in 0..50 {
        let pick = get(cluster.balancer_addrs[0], "/v1/pick?n=3").json();
        let endpoints = pick["endpoints"].as_array().unwrap();
        assert_eq!(endpoints.len(), 2);
        assert!(!endpoints.iter().any(|e| e == &dead.to_string()));
        let update = get(storage.addr(), &check).json();
        assert!(!update["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == &dead.to_string()));
    }
    // The standby checks nodes too, so after a takeover the dead node stays excluded.
    cluster.kill_balancer(0);
    cluster.wait_active(1);
    let pick = get(cluster.balancer_addrs[1], "/v1/pick?n=3").json();
    assert!(!pick["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e == &dead.to_string()));
    storage.shutdown().unwrap();
}

#[test]
fn bad_pick_sizes_are_400() {
    let cluster = Cluster::start();
    cluster.wait_active(0);
    for n in ["0", "17", "x", "-1"] {
        let raw = get(cluster.balancer_addrs[0], &format!("/v1/pick?n={n}"));
        assert_eq!(raw.status, 400, "n={n}");
    }
}

#[test]
fn while_no_balancer_picks_storage_names_the_nodes_a_standby_sees_healthy() {
    let mut cluster = Cluster::start();
    cluster.wait_settled(0);
    // Storage that knows only the standby: every pick is refused (503 standby), so each
    // answer comes from the standby's own health checks.
    let config = StorageConfig::new(
        Arc::clone(&cluster.catalog),
        vec![cluster.balancer_addrs[1]],
    );
    let storage = storage::start(bind_loopback().unwrap(), config, Limits::default()).unwrap();
    let check = format!("/v1/update?version={DEFAULT_PREVIOUS_VERSION}");
    let answer = get(storage.addr(), &check).json();
    assert_eq!(answer["stale"], true);
    let named: Vec<String> = answer["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_string())
        .collect();
    assert!(!named.is_empty());
    // A node that dies drops out of the stale answers as it does out of picks.
    let dead = cluster.node_addrs[0];
    cluster.nodes[0].take().unwrap().shutdown().unwrap();
    wait_for("the standby to see the dead node", || {
        let answer = get(storage.addr(), &check).json();
        let named = answer["endpoints"].as_array().unwrap().clone();
        (!named
            .iter()
            .any(|e| e == &serde_json::json!(dead.to_string())))
        .then_some(())
    });
    for _ in 0..20 {
        let answer = get(storage.addr(), &check).json();
        assert_eq!(answer["stale"], true);
        for e in answer["endpoints"].as_array().unwrap() {
            assert_ne!(
                e.as_str().unwrap(),
                dead.to_string(),
                "a dead node was named"
            );
        }
    }
    storage.shutdown().unwrap();
}

#[test]
fn storage_answers_unavailable_only_when_no_balancer_knows_a_live_node() {
    let cluster = Cluster::start();
    // A port nothing listens on: no balancer answers at all.
    let nowhere = bind_loopback().unwrap().local_addr().unwrap();
    let config = StorageConfig::new(Arc::clone(&cluster.catalog), vec![nowhere]);
    let storage = storage::start(bind_loopback().unwrap(), config, Limits::default()).unwrap();
    let raw = get(
        storage.addr(),
        &format!("/v1/update?version={DEFAULT_PREVIOUS_VERSION}"),
    );
    assert_eq!(raw.status, 503);
    assert_eq!(raw.json()["error"], "unavailable");
    assert!(raw.header("retry-after").is_some());
    storage.shutdown().unwrap();
}
