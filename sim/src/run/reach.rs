//! Reaching a running topology: the addresses, profile's certificate and the current
//! version that every process of a run (the single one, or each worker) needs before its
//! clients start.

use super::{until_interrupted, RunError};
use crate::net::tls::{TlsClient, TLS_CERT_FILE};
use crate::script::discover_version;
use crate::topology::Topology;
use std::net::SocketAddr;
use std::path::Path;
use tokio::sync::watch;

/// The user DB in the folder of topology.json (SPEC §3).
pub(super) use crate::ledger::DB_FILE;

/// Addresses and secrets every client of a run needs, read from the topology.
#[derive(Debug)]
pub(super) struct Reached {
    pub(super) storage: SocketAddr,
    pub(super) profile: SocketAddr,
    pub(super) router: SocketAddr,
    /// Every file node of the topology, which update answers may name.
    pub(super) file_nodes: Vec<SocketAddr>,
    pub(super) tls: TlsClient,
    pub(super) current_version: String,
}

/// Reads the topology, loads profile's certificate and asks storage for the current
/// version.
pub(super) async fn reach(
    topology_path: &Path,
    interrupt: &mut watch::Receiver<bool>,
) -> Result<Reached, RunError> {
    let topology = Topology::read(topology_path)?;
    let storage = topology.addr("storage", topology_path)?;
    let profile = topology.addr("profile", topology_path)?;
    let router = topology.addr("router", topology_path)?;
    let file_nodes = topology
        .services
        .iter()
        .filter(|s| s.name.starts_with("file-node-"))
        .map(|s| s.addr)
        .collect();
    let cert = data_dir(topology_path).join(TLS_CERT_FILE);
    let tls = TlsClient::from_pem_file(&cert)?;
    let current_version = until_interrupted(interrupt, discover_version(storage)).await??;
    Ok(Reached {
        storage,
        profile,
        router,
        file_nodes,
        tls,
        current_version,
    })
}

/// The folder of topology.json, where the DB and the certificate live.
pub(super) fn data_dir(topology_path: &Path) -> &Path {
    topology_path.parent().unwrap_or(Path::new("."))
}
