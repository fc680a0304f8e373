//! The shape of a running topology: which services exist, where they listen, and the two
//! files that describe it — `DIR/run/plan.json` (what `up` tells each child) and
//! `DIR/topology.json` (what users and the simulator read, SPEC §3).

use std::fmt;
use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{Argon2Preset, ObserverBackend, Settings};

/// The highest TCP port; a wider type holds base + offset, so the check cannot wrap.
const PORT_MAX: u32 = u16::MAX as u32;
/// A service's admin listener (`/metrics`, `/healthz`) is at its own port plus this:
/// the services' ports span 400 from the base port, so the admin ports (base + 1000 to
/// base + 1400) never meet them, and each is found from its service's by one addition.
pub const METRICS_PORT_OFFSET: u16 = 1000;

/// Every kind of service `up` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceKind {
    /// `storage`.
    Storage,
    /// `balancer`.
    Balancer,
    /// `balancer-observer`.
    BalancerObserver,
    /// `file-node-N`.
    FileNode(usize),
    /// `profile`.
    Profile,
    /// `lobby`.
    Lobby,
    /// `play-N`.
    Play(usize),
    /// `router`.
    Router,
}

impl ServiceKind {
    /// Parses a service name as used in `topology.json`.
    pub fn parse(name: &str) -> Option<ServiceKind> {
        match name {
            "storage" => Some(ServiceKind::Storage),
            "balancer" => Some(ServiceKind::Balancer),
            "balancer-observer" => Some(ServiceKind::BalancerObserver),
            "profile" => Some(ServiceKind::Profile),
            "lobby" => Some(ServiceKind::Lobby),
            "router" => Some(ServiceKind::Router),
            _ => {
                if let Some(i) = name.strip_prefix("play-") {
                    return i.parse().ok().map(ServiceKind::Play);
                }
                name.strip_prefix("file-node-")?
                    .parse()
                    .ok()
                    .map(ServiceKind::FileNode)
            }
        }
    }

    /// The port offset of the service's admin listener from `--base-port`.
    fn metrics_port_offset(self) -> u16 {
        self.port_offset() + METRICS_PORT_OFFSET
    }

    /// The port offset from `--base-port`, per the table of SPEC §3.
    fn port_offset(self) -> u16 {
        match self {
            ServiceKind::Storage => 0,
            ServiceKind::Balancer => 10,
            ServiceKind::BalancerObserver => 11,
            ServiceKind::FileNode(i) => 20 + i as u16,
            ServiceKind::Profile => 100,
            ServiceKind::Lobby => 200,
            ServiceKind::Play(i) => 300 + i as u16,
            ServiceKind::Router => 400,
        }
    }
}

impl fmt::Display for ServiceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceKind::Storage => write!(f, "storage"),
            ServiceKind::Balancer => write!(f, "balancer"),
            ServiceKind::BalancerObserver => write!(f, "balancer-observer"),
            ServiceKind::FileNode(i) => write!(f, "file-node-{i}"),
            ServiceKind::Profile => write!(f, "profile"),
            ServiceKind::Lobby => write!(f, "lobby"),
            ServiceKind::Play(i) => write!(f, "play-{i}"),
            ServiceKind::Router => write!(f, "router"),
        }
    }
}

/// One planned service.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PlannedService {
    /// Its name, for example `file-node-0`.
    pub name: String,
    /// Where it listens, and where the other services reach it.
    pub addr: SocketAddr,
    /// Where clients reach it when that differs from `addr`: a container's port
    /// published on the host's 127.0.0.1. Addresses handed to clients (the lobby at
    /// login, file nodes in an update, the play server at start) are these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public: Option<SocketAddr>,
    /// Where its admin listener (`/metrics`, `/healthz`) listens.
    pub metrics: SocketAddr,
}

impl PlannedService {
    /// Where clients reach the service.
    pub fn public(&self) -> SocketAddr {
        self.public.unwrap_or(self.addr)
    }

    /// Where scrapers reach the admin listener: at the public address's host when the
    /// service has one (a container's ports are published at the same numbers).
    pub fn metrics_public(&self) -> SocketAddr {
        match self.public {
            Some(public) => SocketAddr::new(public.ip(), self.metrics.port()),
            None => self.metrics,
        }
    }
}

/// What `up` hands every child: the data folder, the settings and every address.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    /// The data folder.
    pub data_dir: PathBuf,
    /// Resolved settings.
    pub settings: Settings,
    /// Services in start order: a service starts after those it talks to.
    pub services: Vec<PlannedService>,
    /// The container network the services run on, which match observer containers
    /// join too; `None` for processes on loopback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
}

/// Errors about plans and topology files.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// Reading or writing a file failed.
    #[error("{}: {}", .0.display(), .1)]
    Io(PathBuf, #[source] io::Error),
    /// A file did not parse.
    #[error("{}: {}", .0.display(), .1)]
    Parse(PathBuf, #[source] serde_json::Error),
    /// A service name is not part of the topology.
    #[error("service {:?} is not in the topology (known: {})", .0, .1.join(", "))]
    UnknownService(String, Vec<String>),
    /// `--base-port` plus a service's offset leaves the port range; the text leaves the
    /// flag to the caller, which names it.
    #[error("{base_port} puts {service} on port {port}, above {PORT_MAX}")]
    PortRange {
        /// The base port asked for.
        base_port: u16,
        /// The first service whose port does not fit.
        service: String,
        /// The port it would get.
        port: u32,
    },
    /// Addresses from this one up run past 255.255.255.255 before every service has one.
    #[error("{first} leaves no room for {services} service addresses")]
    AddressRange {
        /// The first address asked for.
        first: Ipv4Addr,
        /// How many services need one.
        services: usize,
    },
}

impl Plan {
    /// Plans every service: fixed ports from `base_port`, or free ports when it is 0.
    pub fn new(
        data_dir: PathBuf,
        settings: Settings,
        base_port: u16,
    ) -> Result<Plan, TopologyError> {
        let kinds = service_kinds(&settings);
        let (addrs, metrics) = if base_port == 0 {
            let mut addrs = free_loopback_ports(kinds.len() * 2)
                .map_err(|e| TopologyError::Io("127.0.0.1:0".into(), e))?;
            let metrics = addrs.split_off(kinds.len());
            (addrs, metrics)
        } else {
            Plan::check_base_port(base_port, &settings)?;
            let at = |offset: u16| SocketAddr::from(([127, 0, 0, 1], base_port + offset));
            (
                kinds.iter().map(|k| at(k.port_offset())).collect(),
                kinds.iter().map(|k| at(k.metrics_port_offset())).collect(),
            )
        };
        let services = kinds
            .iter()
            .zip(addrs.into_iter().zip(metrics))
            .map(|(kind, (addr, metrics))| PlannedService {
                name: kind.to_string(),
                addr,
                public: None,
                metrics,
            })
            .collect();
        Ok(Plan {
            data_dir,
            settings,
            services,
            network: None,
        })
    }

    /// Plans every service at an address of its own, from `first` up in plan order, at
    /// its port of the fixed layout from `base_port`; 0 means the default layout, since
    /// free ports are picked on loopback only. For topologies where each service has a
    /// host of its own: containers on a network, Kubernetes Services.
    pub fn at_own_addresses(
        data_dir: PathBuf,
        settings: Settings,
        base_port: u16,
        first: Ipv4Addr,
    ) -> Result<Plan, TopologyError> {
        let base_port = if base_port == 0 {
            crate::config::BASE_PORT_DEFAULT
        } else {
            base_port
        };
        let mut plan = Plan::new(data_dir, settings, base_port)?;
        let services = plan.services.len();
        for (i, service) in plan.services.iter_mut().enumerate() {
            let ip = u32::try_from(i)
                .ok()
                .and_then(|i| u32::from(first).checked_add(i))
                .ok_or(TopologyError::AddressRange { first, services })?;
            service.addr = SocketAddr::from((Ipv4Addr::from(ip), service.addr.port()));
            service.metrics = SocketAddr::from((Ipv4Addr::from(ip), service.metrics.port()));
        }
        Ok(plan)
    }

    /// Checks that every service's ports, `base_port` plus its offsets, fit the port
    /// range, so a bad `--base-port` fails before anything starts. Base 0 picks free
    /// ports, which always fit.
    pub fn check_base_port(base_port: u16, settings: &Settings) -> Result<(), TopologyError> {
        if base_port == 0 {
            return Ok(());
        }
        let highest = service_kinds(settings)
            .into_iter()
            .max_by_key(|k| k.metrics_port_offset())
            .expect("a plan has services");
        let port = u32::from(base_port) + u32::from(highest.metrics_port_offset());
        if port > PORT_MAX {
            return Err(TopologyError::PortRange {
                base_port,
                service: format!("{highest}'s metrics"),
                port,
            });
        }
        Ok(())
    }

    /// A named service of the plan.
    pub fn service(&self, name: &str) -> Result<&PlannedService, TopologyError> {
        self.services
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| TopologyError::UnknownService(name.into(), self.names()))
    }

    /// The address of a named service.
    pub fn addr_of(&self, name: &str) -> Result<SocketAddr, TopologyError> {
        self.service(name).map(|s| s.addr)
    }

    /// Where a named service's admin listener listens.
    pub fn metrics_of(&self, name: &str) -> Result<SocketAddr, TopologyError> {
        self.service(name).map(|s| s.metrics)
    }

    /// Where clients reach a named service.
    pub fn public_of(&self, name: &str) -> Result<SocketAddr, TopologyError> {
        self.service(name).map(PlannedService::public)
    }

    /// Each service's address mapped to where clients reach it, for the services that
    /// hand out other services' addresses.
    pub fn public_addrs(&self) -> std::collections::HashMap<SocketAddr, SocketAddr> {
        self.services.iter().map(|s| (s.addr, s.public())).collect()
    }

    /// Every file node's address, in index order.
    pub fn file_nodes(&self) -> Vec<SocketAddr> {
        self.services
            .iter()
            .filter(|s| matches!(ServiceKind::parse(&s.name), Some(ServiceKind::FileNode(_))))
            .map(|s| s.addr)
            .collect()
    }

    /// Every play server's address, in index order (none until play servers exist).
    pub fn play_servers(&self) -> Vec<SocketAddr> {
        self.services
            .iter()
            .filter(|s| s.name.starts_with("play-"))
            .map(|s| s.addr)
            .collect()
    }

    fn names(&self) -> Vec<String> {
        self.services.iter().map(|s| s.name.clone()).collect()
    }

    /// Reads a plan written by `up`.
    pub fn read(path: &Path) -> Result<Plan, TopologyError> {
        read_json(path)
    }

    /// Writes the plan atomically.
    pub fn write(&self, path: &Path) -> Result<(), TopologyError> {
        write_json_atomically(path, self)
    }
}

/// Every service of a plan with these settings, in start order: a service starts after
/// those it talks to.
fn service_kinds(settings: &Settings) -> Vec<ServiceKind> {
    let mut kinds: Vec<ServiceKind> = (0..settings.file_nodes)
        .map(ServiceKind::FileNode)
        .collect();
    kinds.extend([
        ServiceKind::Balancer,
        ServiceKind::BalancerObserver,
        ServiceKind::Storage,
    ]);
    kinds.extend((0..settings.play_servers).map(ServiceKind::Play));
    kinds.extend([
        ServiceKind::Lobby,
        ServiceKind::Profile,
        ServiceKind::Router,
    ]);
    kinds
}

/// Binds `count` loopback listeners on port 0 at once (so the ports differ), then frees
/// them for the children. Another process could take a port in between; `up` then fails
/// loudly, because each child reports whether it bound its own socket.
fn free_loopback_ports(count: usize) -> io::Result<Vec<SocketAddr>> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<io::Result<Vec<_>>>()?;
    listeners.iter().map(|l| l.local_addr()).collect()
}

/// One running service in `topology.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TopologyEntry {
    /// Service name.
    pub name: String,
    /// Listening address.
    pub addr: SocketAddr,
    /// Its admin listener: `GET /metrics` and `GET /healthz` (SPEC §3, §7).
    pub metrics: SocketAddr,
    /// The OS process id serving it now (0 for a container, whose pid the engine knows).
    pub pid: u32,
    /// The container serving it, in the containerized topology.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

/// The settings of a running topology that a client's assumptions depend on, as
/// `topology.json` tells them (`settings`), named as in [`Settings`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct TopologySettings {
    pub token_idle_s: u64,
    pub players_per_match: u32,
    pub match_fill_timeout_s: u64,
    pub match_ticks: u64,
    pub tick_hz: u32,
    pub argon2: Argon2Preset,
    pub file_nodes: usize,
    pub play_servers: usize,
    pub login_workers: usize,
    pub observer_backend: ObserverBackend,
}

impl From<&Settings> for TopologySettings {
    fn from(s: &Settings) -> TopologySettings {
        TopologySettings {
            token_idle_s: s.token_idle_s,
            players_per_match: s.players_per_match,
            match_fill_timeout_s: s.match_fill_timeout_s,
            match_ticks: s.match_ticks,
            tick_hz: s.tick_hz,
            argon2: s.argon2,
            file_nodes: s.file_nodes,
            play_servers: s.play_servers,
            login_workers: s.login_workers,
            observer_backend: s.observer_backend,
        }
    }
}

/// `DIR/topology.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Topology {
    /// The effective settings the services run with.
    pub settings: TopologySettings,
    /// Every running service.
    pub services: Vec<TopologyEntry>,
    /// The container network the services share, for network faults; `None` for
    /// processes on loopback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
}

impl Topology {
    /// The topology of a plan whose services run elsewhere (containers, pods): where
    /// clients reach each one, with no pid.
    pub fn of_plan(plan: &Plan) -> Topology {
        Topology {
            settings: TopologySettings::from(&plan.settings),
            services: plan
                .services
                .iter()
                .map(|s| TopologyEntry {
                    name: s.name.clone(),
                    addr: s.public(),
                    metrics: s.metrics_public(),
                    pid: 0,
                    container: None,
                })
                .collect(),
            network: plan.network.clone(),
        }
    }

    /// The path of the topology file in a data folder.
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("topology.json")
    }

    /// Reads `DIR/topology.json`.
    pub fn read(data_dir: &Path) -> Result<Topology, TopologyError> {
        read_json(&Topology::path(data_dir))
    }

    /// Writes `DIR/topology.json` atomically, so readers never see half a file.
    pub fn write(&self, data_dir: &Path) -> Result<(), TopologyError> {
        write_json_atomically(&Topology::path(data_dir), self)
    }

    /// The entry of a named service.
    pub fn service(&self, name: &str) -> Result<&TopologyEntry, TopologyError> {
        self.services
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| {
                TopologyError::UnknownService(
                    name.into(),
                    self.services.iter().map(|s| s.name.clone()).collect(),
                )
            })
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, TopologyError> {
    let text = fs::read_to_string(path).map_err(|e| TopologyError::Io(path.into(), e))?;
    serde_json::from_str(&text).map_err(|e| TopologyError::Parse(path.into(), e))
}

fn write_json_atomically<T: Serialize>(path: &Path, value: &T) -> Result<(), TopologyError> {
    let text = serde_json::to_string_pretty(value).expect("plain values serialize");
    let tmp = path.with_extension("json.tmp");
    fs::write(&tmp, text).map_err(|e| TopologyError::Io(tmp.clone(), e))?;
    fs::rename(&tmp, path).map_err(|e| TopologyError::Io(path.into(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_ports_follow_the_spec_table() {
        let settings = Settings::default();
        let plan = Plan::new("/tmp/x".into(), settings, 7100).unwrap();
        let port = |n: &str| plan.addr_of(n).unwrap().port();
        assert_eq!(port("storage"), 7100);
        assert_eq!(port("balancer"), 7110);
        assert_eq!(port("balancer-observer"), 7111);
        assert_eq!(port("file-node-2"), 7122);
        assert_eq!(port("profile"), 7200);
        assert_eq!(port("lobby"), 7300);
        assert_eq!(plan.file_nodes().len(), 3);
        assert_eq!(port("play-1"), 7401);
        assert_eq!(port("router"), 7500);
        assert!(plan.addr_of("play-2").is_err());
        for s in &plan.services {
            assert_eq!(s.metrics.port(), s.addr.port() + METRICS_PORT_OFFSET);
            assert_eq!(s.metrics_public(), s.metrics);
        }
    }

    #[test]
    fn a_base_port_whose_last_service_leaves_the_port_range_is_refused() {
        let settings = Settings::default();
        let err = Plan::new("/tmp/x".into(), settings.clone(), 65_530).unwrap_err();
        assert!(
            matches!(&err, TopologyError::PortRange { service, port: 66_930, .. } if service == "router's metrics"),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "65530 puts router's metrics on port 66930, above 65535"
        );
        let last_fit = (PORT_MAX - 1400) as u16;
        assert!(Plan::check_base_port(last_fit, &settings).is_ok());
        assert!(Plan::check_base_port(last_fit + 1, &settings).is_err());
        assert!(Plan::check_base_port(0, &settings).is_ok());
    }

    #[test]
    fn port_zero_gives_distinct_free_ports() {
        let plan = Plan::new("/tmp/x".into(), Settings::default(), 0).unwrap();
        let mut ports: Vec<u16> = plan
            .services
            .iter()
            .flat_map(|s| [s.addr.port(), s.metrics.port()])
            .collect();
        ports.sort();
        ports.dedup();
        assert_eq!(ports.len(), 2 * plan.services.len());
    }

    #[test]
    fn the_topology_file_carries_settings_and_metrics_addresses() {
        let settings = Settings::default();
        let plan = Plan::new("/tmp/x".into(), settings.clone(), 7100).unwrap();
        let json = serde_json::to_value(Topology::of_plan(&plan)).unwrap();
        let keys: Vec<&str> = json["settings"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut expected = [
            "token_idle_s",
            "players_per_match",
            "match_fill_timeout_s",
            "match_ticks",
            "tick_hz",
            "argon2",
            "file_nodes",
            "play_servers",
            "login_workers",
            "observer_backend",
        ];
        expected.sort_unstable();
        assert_eq!(keys, expected);
        assert_eq!(json["settings"]["argon2"], "owasp");
        assert_eq!(json["settings"]["observer_backend"], "process");
        assert_eq!(json["settings"]["token_idle_s"], settings.token_idle_s);
        let storage = &json["services"][plan
            .services
            .iter()
            .position(|s| s.name == "storage")
            .unwrap()];
        assert_eq!(storage["addr"], "127.0.0.1:7100");
        assert_eq!(storage["metrics"], "127.0.0.1:8100");
    }

    #[test]
    fn names_round_trip() {
        for kind in [
            ServiceKind::Storage,
            ServiceKind::Balancer,
            ServiceKind::BalancerObserver,
            ServiceKind::FileNode(7),
            ServiceKind::Profile,
            ServiceKind::Lobby,
            ServiceKind::Play(3),
            ServiceKind::Router,
        ] {
            assert_eq!(ServiceKind::parse(&kind.to_string()), Some(kind));
        }
        assert_eq!(ServiceKind::parse("file-node-x"), None);
    }

    #[test]
    fn errors_name_the_file_or_service_and_keep_their_cause() {
        use std::error::Error as _;
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("topology.json");
        let err = Topology::read(dir.path()).unwrap_err();
        assert!(matches!(err, TopologyError::Io(..)), "{err:?}");
        assert!(
            err.to_string()
                .starts_with(&format!("{}: ", missing.display())),
            "{err}"
        );
        assert!(err.source().is_some());
        fs::write(&missing, "{").unwrap();
        let err = Topology::read(dir.path()).unwrap_err();
        let cause = err
            .source()
            .expect("the JSON error is the source")
            .to_string();
        assert_eq!(err.to_string(), format!("{}: {cause}", missing.display()));
        let err = TopologyError::UnknownService("x".into(), vec!["a".into(), "b".into()]);
        assert_eq!(
            err.to_string(),
            "service \"x\" is not in the topology (known: a, b)"
        );
    }
}
