//! The containerized topology: every service in its own container of the project's image,
//! each with its own address on a project network, so that network faults are real
//! (SPEC §6). `catwar-server containers --data DIR` writes the plan every container
//! serves from, the `topology.json` the simulator reads (the ports published on the
//! host's 127.0.0.1, the admin listeners' too, and each service's container), and
//! `docker-compose.yml`.
//!
//! The data folder is bind-mounted at the same path inside every container, so the plan,
//! the DB and the certificate have one path everywhere, and match observer containers
//! (started by the play servers through the engine's socket) mount it the same way.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use crate::compose::topology::{Plan, Topology, TopologyError};
use crate::config::Settings;

/// The compose project, and the prefix of every container's name.
pub const PROJECT: &str = "catwar";
/// The project network; observer containers join it by this name.
pub const NETWORK: &str = "catwar-net";
/// The project network's subnet. A private /24 that Docker's default pools
/// (172.17–31.x, 192.168.x) do not hand out, so it does not collide with them.
pub const SUBNET: &str = "10.203.77.0/24";
/// Services get fixed addresses from here up, in plan order: `up`'s ports and
/// `topology.json` stay the same from run to run.
const SERVICE_IP_FIRST: Ipv4Addr = Ipv4Addr::new(10, 203, 77, 10);
/// Addresses the engine hands out itself (observer containers), kept apart from the
/// services' fixed ones.
pub const DYNAMIC_RANGE: &str = "10.203.77.128/25";
/// The host address every published port binds: the simulator reaches the containers
/// here and nothing outside the machine does.
const PUBLISH_IP: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// The container serving a service.
pub fn container_name(service: &str) -> String {
    format!("{PROJECT}-{service}")
}

/// The plan of the containerized topology: each service on its own address of the
/// project network, at the same port as in the embedded plan with this base, published
/// at that port on the host's 127.0.0.1.
pub fn plan(data_dir: PathBuf, settings: Settings, base_port: u16) -> Result<Plan, TopologyError> {
    let mut plan = Plan::at_own_addresses(data_dir, settings, base_port, SERVICE_IP_FIRST)?;
    for service in &mut plan.services {
        service.public = Some(SocketAddr::from((PUBLISH_IP, service.addr.port())));
    }
    plan.network = Some(NETWORK.to_string());
    Ok(plan)
}

/// `topology.json` for the simulator: where it reaches each service, and its container.
pub fn topology(plan: &Plan) -> Topology {
    let mut topology = Topology::of_plan(plan);
    for service in &mut topology.services {
        service.container = Some(container_name(&service.name));
    }
    topology
}

/// `docker-compose.yml` for a plan written at `DIR/plan.json`, with the data folder in
/// `${CATWAR_DATA}` (the same path inside and out). Images are the local tag, never
/// pulled. A service the engine finds dead (SIGKILL) is restarted: the engine is the
/// supervisor here, as `up` is for processes.
pub fn compose_file(plan: &Plan) -> String {
    let mut y = String::new();
    y.push_str("# Written by `catwar-server containers`; the plan it serves is DIR/plan.json.\n");
    y.push_str("version: \"3.5\"\n\nservices:\n");
    for s in &plan.services {
        let name = &s.name;
        let ip = s.addr.ip();
        let port = s.addr.port();
        let public = s.public();
        let metrics = s.metrics.port();
        let metrics_public = s.metrics_public();
        let _ = writeln!(y, "  {name}:");
        let _ = writeln!(y, "    image: {}", crate::services::observer::docker::IMAGE);
        let _ = writeln!(y, "    pull_policy: never");
        let _ = writeln!(y, "    container_name: {}", container_name(name));
        let _ = writeln!(
            y,
            "    command: [\"serve\", \"{name}\", \"--plan\", \"${{CATWAR_DATA:?set CATWAR_DATA to the data folder}}/plan.json\"]"
        );
        let _ = writeln!(y, "    restart: on-failure");
        let _ = writeln!(
            y,
            "    ports: [\"{}:{}:{port}\", \"{}:{}:{metrics}\"]",
            public.ip(),
            public.port(),
            metrics_public.ip(),
            metrics_public.port()
        );
        let _ = writeln!(
            y,
            "    networks:\n      {NETWORK}:\n        ipv4_address: {ip}"
        );
        let _ = writeln!(y, "    volumes:");
        let _ = writeln!(y, "      - ${{CATWAR_DATA}}:${{CATWAR_DATA}}");
        if name.starts_with("play-") {
            // Play servers start match observers as containers of the same image.
            let _ = writeln!(y, "      - /var/run/docker.sock:/var/run/docker.sock");
        }
    }
    let _ = writeln!(
        y,
        "\nnetworks:\n  {NETWORK}:\n    name: {NETWORK}\n    driver: bridge"
    );
    let _ = writeln!(
        y,
        "    ipam:\n      config:\n        - subnet: {SUBNET}\n          ip_range: {DYNAMIC_RANGE}"
    );
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_service_has_its_own_address_and_a_loopback_published_port() {
        let plan = plan("/data".into(), Settings::default(), 7100).unwrap();
        let mut ips: Vec<_> = plan.services.iter().map(|s| s.addr.ip()).collect();
        ips.sort();
        ips.dedup();
        assert_eq!(ips.len(), plan.services.len(), "one address per service");
        for s in &plan.services {
            assert_eq!(s.public().ip(), Ipv4Addr::LOCALHOST);
            assert_eq!(s.public().port(), s.addr.port());
            assert!(
                u32::from(match s.addr.ip() {
                    std::net::IpAddr::V4(v4) => v4,
                    _ => unreachable!(),
                }) < u32::from(Ipv4Addr::new(10, 203, 77, 128)),
                "fixed addresses stay out of the engine's range"
            );
        }
        assert_eq!(
            plan.public_of("lobby").unwrap(),
            "127.0.0.1:7300".parse().unwrap()
        );
        assert_eq!(plan.network.as_deref(), Some(NETWORK));
    }

    #[test]
    fn the_committed_compose_file_is_the_one_the_default_plan_writes() {
        let plan = plan("/data".into(), Settings::default(), 7100).unwrap();
        let committed = include_str!("../../../deploy/compose/docker-compose.yml");
        assert_eq!(
            committed,
            compose_file(&plan),
            "regenerate it: catwar-server containers --data DIR --compose-file deploy/compose/docker-compose.yml"
        );
    }

    #[test]
    fn the_topology_names_published_addresses_and_containers() {
        let plan = plan("/data".into(), Settings::default(), 7100).unwrap();
        let topology = topology(&plan);
        let storage = topology.service("storage").unwrap();
        assert_eq!(storage.addr, "127.0.0.1:7100".parse().unwrap());
        assert_eq!(storage.metrics, "127.0.0.1:8100".parse().unwrap());
        assert_eq!(storage.container.as_deref(), Some("catwar-storage"));
    }
}
