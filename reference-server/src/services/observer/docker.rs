//! The `docker` backend: each observer is a container of the project's own image
//! (`catwar-server:local`, built with no registry by `ci/build-image.sh`), started
//! through the Docker API. In the embedded topology it uses host networking, so it
//! listens and subscribes on loopback like a process observer; in the containerized
//! topology it joins the project's network (where the play server is), and its port is
//! published on 127.0.0.1 only, where watchers on the host reach it. Containers are
//! labelled with their topology's data folder, removed by the engine when their match
//! ends (`AutoRemove`), and removed by [`Spawner::stop_all`] when the play server stops.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;

use super::{ObserverError, SessionArgs, Spawner};

/// The image every role runs from; `ci/build-image.sh` makes it.
pub const IMAGE: &str = "catwar-server:local";
/// The label that ties a container to its topology, for cleanup.
pub const DATA_LABEL: &str = "catwar.data";
/// A cold container start takes a few hundred milliseconds; a stalled engine more.
const START_TIMEOUT_MS: u64 = 15_000;
/// The port an observer listens on inside its own network namespace (on a project
/// network); the engine publishes it on a free port of the host's 127.0.0.1.
pub const OBSERVER_PORT: u16 = 7600;

/// Starts observers as containers.
#[derive(Debug)]
pub struct DockerSpawner {
    docker: Docker,
    runtime: tokio::runtime::Runtime,
    data_dir: PathBuf,
    session: SessionArgs,
    /// The project network to join; `None` is host networking.
    network: Option<String>,
}

fn backend(what: &str, e: impl std::fmt::Display) -> ObserverError {
    ObserverError::Backend(format!("docker: {what}: {e}"))
}

impl DockerSpawner {
    /// Connects to the local engine and checks that the image exists, so a topology
    /// configured for Docker fails at start with a message that says what to do.
    /// With `network`, observers join that network and publish their port on the host's
    /// 127.0.0.1; without, they use host networking.
    pub fn new(
        data_dir: PathBuf,
        session: SessionArgs,
        network: Option<String>,
    ) -> Result<DockerSpawner, ObserverError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ObserverError::Io("tokio runtime".into(), e))?;
        let docker = Docker::connect_with_local_defaults()
            .map_err(|e| backend("no engine (is the daemon running?)", e))?;
        runtime
            .block_on(docker.ping())
            .map_err(|e| backend("the engine does not answer (is the daemon running?)", e))?;
        runtime.block_on(docker.inspect_image(IMAGE)).map_err(|e| {
            backend(
                &format!("image {IMAGE} is missing; build it with `bash ci/build-image.sh`"),
                e,
            )
        })?;
        Ok(DockerSpawner {
            docker,
            runtime,
            data_dir,
            session,
            network,
        })
    }

    async fn start(&self, play: SocketAddr, match_id: u64) -> Result<SocketAddr, ObserverError> {
        let data = self.data_dir.display().to_string();
        // On a project network the observer listens on every address of its own
        // namespace, and the engine forwards a host port of 127.0.0.1 to it.
        let listen = self
            .network
            .as_ref()
            .map(|_| SocketAddr::from(([0, 0, 0, 0], OBSERVER_PORT)));
        let port_key = format!("{OBSERVER_PORT}/tcp");
        let labels = HashMap::from([
            ("catwar.role".to_string(), "observer".to_string()),
            ("catwar.match".to_string(), match_id.to_string()),
            (DATA_LABEL.to_string(), data.clone()),
        ]);
        let body = ContainerCreateBody {
            image: Some(IMAGE.to_string()),
            cmd: Some(
                super::command_args(play, match_id, &self.data_dir, self.session)
                    .into_iter()
                    .chain(
                        listen
                            .iter()
                            .flat_map(|l| ["--listen".to_string(), l.to_string()]),
                    )
                    .collect(),
            ),
            exposed_ports: self.network.as_ref().map(|_| vec![port_key.clone()]),
            labels: Some(labels),
            host_config: Some(HostConfig {
                network_mode: Some(self.network.clone().unwrap_or_else(|| "host".into())),
                port_bindings: self.network.as_ref().map(|_| {
                    let loopback = PortBinding {
                        host_ip: Some("127.0.0.1".into()),
                        host_port: Some(String::new()),
                    };
                    HashMap::from([(port_key.clone(), Some(vec![loopback]))])
                }),
                binds: Some(vec![format!("{data}:{data}")]),
                auto_remove: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        };
        let name = format!(
            "catwar-observer-{match_id}-{}",
            crate::domain::token::random_hex(4).map_err(|e| backend("name", e))?
        );
        let options = CreateContainerOptionsBuilder::new().name(&name).build();
        let created = self
            .docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| backend("create", e))?;
        self.docker
            .start_container(&created.id, None)
            .await
            .map_err(|e| backend("start", e))?;
        let logs = LogsOptionsBuilder::new().follow(true).stdout(true).build();
        let mut stream = self.docker.logs(&created.id, Some(logs));
        let mut out = String::new();
        while let Some(chunk) = stream.next().await {
            out.push_str(
                &chunk
                    .map_err(|e| backend("reading the observer's output", e))?
                    .to_string(),
            );
            if let Some(addr) = out.lines().find_map(|l| {
                l.trim()
                    .strip_prefix("listening ")
                    .and_then(|a| a.parse::<SocketAddr>().ok())
            }) {
                return match self.network {
                    None => Ok(addr),
                    Some(_) => self.published(&created.id, &port_key).await,
                };
            }
        }
        Err(ObserverError::Backend(format!(
            "docker: observer container {name} exited before listening: {out:?}"
        )))
    }
}

impl DockerSpawner {
    /// Where the engine published a container's port on the host.
    async fn published(&self, id: &str, port_key: &str) -> Result<SocketAddr, ObserverError> {
        let inspected = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(|e| backend("inspect", e))?;
        let host_port = inspected
            .network_settings
            .and_then(|n| n.ports)
            .and_then(|mut ports| ports.remove(port_key))
            .flatten()
            .and_then(|bindings| bindings.into_iter().find_map(|b| b.host_port))
            .and_then(|p| p.parse::<u16>().ok())
            .ok_or_else(|| backend("inspect", format!("no host port published for {port_key}")))?;
        Ok(SocketAddr::from(([127, 0, 0, 1], host_port)))
    }
}

impl Spawner for DockerSpawner {
    fn spawn(&self, play: SocketAddr, match_id: u64) -> Result<SocketAddr, ObserverError> {
        let started = Instant::now();
        let timeout = Duration::from_millis(START_TIMEOUT_MS);
        let addr = self
            .runtime
            .block_on(async { tokio::time::timeout(timeout, self.start(play, match_id)).await })
            .map_err(|_| {
                ObserverError::Backend(format!(
                    "docker: observer did not listen within {START_TIMEOUT_MS} ms"
                ))
            })??;
        tracing::info!(match_id, %addr, start_ms = started.elapsed().as_secs_f64() * 1000.0, "observer container started");
        Ok(addr)
    }

    fn stop_all(&self) {
        let filters = HashMap::from([(
            "label",
            vec![format!("{DATA_LABEL}={}", self.data_dir.display())],
        )]);
        let list = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        self.runtime.block_on(async {
            let Ok(containers) = self.docker.list_containers(Some(list)).await else {
                return;
            };
            for id in containers.into_iter().filter_map(|c| c.id) {
                let force = RemoveContainerOptionsBuilder::new().force(true).build();
                let _ = self.docker.remove_container(&id, Some(force)).await;
            }
        });
    }
}
