//! Faults on the containerized topology, through the container engine's command line and
//! the containers' own network namespaces (SPEC §6): a SIGKILL of a container's process
//! (the engine restarts it, as `up` restarts a process), a partition (the container
//! disconnected from the project network, then reconnected at its own address), packet
//! loss and delay on its interface, and a freeze (pause).
//!
//! Only the project's own containers, named in topology.json, are ever touched.

use std::net::IpAddr;
use std::time::Duration;
use tokio::process::Command;

/// The engine answers in milliseconds; a stalled engine must not stall the fault schedule
/// past the next fault.
const ENGINE_TIMEOUT_MS: u64 = 10_000;
/// The interface of a container on its network.
const CONTAINER_IFACE: &str = "eth0";

/// A fault the engine could not carry out, naming the container and the command.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The command could not run at all (no `docker`, `nsenter`, `tc` or `iptables`).
    #[error("{command}: could not run")]
    Spawn {
        /// The command line.
        command: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The command ran and failed.
    #[error("{command}: {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// What it said.
        stderr: String,
    },
    /// The command did not finish in time.
    #[error("{command}: no answer within {ENGINE_TIMEOUT_MS} ms")]
    Timeout {
        /// The command line.
        command: String,
    },
    /// The kernel cannot delay packets: it has no `netem` queueing discipline.
    #[error("delay on {container}: this kernel has no netem queueing discipline ({stderr})")]
    NoNetem {
        /// The container.
        container: String,
        /// What tc said.
        stderr: String,
    },
}

async fn run(program: &str, args: &[&str]) -> Result<String, EngineError> {
    let command = format!("{program} {}", args.join(" "));
    let child = Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_millis(ENGINE_TIMEOUT_MS), child)
        .await
        .map_err(|_| EngineError::Timeout {
            command: command.clone(),
        })?
        .map_err(|source| EngineError::Spawn {
            command: command.clone(),
            source,
        })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    } else {
        Err(EngineError::Failed {
            command,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}

/// The host pid of a container's main process (0 when it is not running).
pub async fn pid(container: &str) -> Result<u32, EngineError> {
    let text = run("docker", &["inspect", "-f", "{{.State.Pid}}", container]).await?;
    text.parse().map_err(|_| EngineError::Failed {
        command: format!("docker inspect {container}"),
        stderr: format!("not a pid: {text:?}"),
    })
}

/// The container's address on `network`, so a reconnect gives it back the same one.
pub async fn address(container: &str, network: &str) -> Result<IpAddr, EngineError> {
    let format = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
    let text = run("docker", &["inspect", "-f", &format, container]).await?;
    text.parse().map_err(|_| EngineError::Failed {
        command: format!("docker inspect {container}"),
        stderr: format!("no address on {network}: {text:?}"),
    })
}

/// Freezes every process of the container.
pub async fn pause(container: &str) -> Result<(), EngineError> {
    run("docker", &["pause", container]).await.map(drop)
}

/// Thaws it.
pub async fn unpause(container: &str) -> Result<(), EngineError> {
    run("docker", &["unpause", container]).await.map(drop)
}

/// Cuts the container off the project network; it keeps running.
pub async fn disconnect(container: &str, network: &str) -> Result<(), EngineError> {
    run(
        "docker",
        &["network", "disconnect", "--force", network, container],
    )
    .await
    .map(drop)
}

/// Puts it back on the network at its own address.
pub async fn connect(container: &str, network: &str, ip: IpAddr) -> Result<(), EngineError> {
    let ip = ip.to_string();
    run(
        "docker",
        &["network", "connect", "--ip", &ip, network, container],
    )
    .await
    .map(drop)
}

async fn in_netns(container: &str, program: &str, args: &[&str]) -> Result<String, EngineError> {
    let pid = pid(container).await?.to_string();
    let mut all = vec!["-t", pid.as_str(), "-n", program];
    all.extend_from_slice(args);
    run("nsenter", &all).await
}

/// Drops `percent` of the packets the container sends and receives, at random (the
/// iptables `statistic` match in its own namespace, so no other container is touched).
pub async fn start_loss(container: &str, percent: f64) -> Result<(), EngineError> {
    loss_rules(container, percent, "-I").await
}

/// Removes the loss rules again.
pub async fn stop_loss(container: &str, percent: f64) -> Result<(), EngineError> {
    loss_rules(container, percent, "-D").await
}

/// Inserts (`-I`) or deletes (`-D`) the random-drop rule in both directions.
async fn loss_rules(container: &str, percent: f64, op: &str) -> Result<(), EngineError> {
    let p = format!("{:.4}", percent / 100.0);
    for chain in ["INPUT", "OUTPUT"] {
        let rule = [
            op,
            chain,
            "-m",
            "statistic",
            "--mode",
            "random",
            "--probability",
            &p,
            "-j",
            "DROP",
        ];
        in_netns(container, "iptables", &rule).await?;
    }
    Ok(())
}

/// Delays every packet the container sends by `delay_ms` (netem on its interface).
pub async fn start_delay(container: &str, delay_ms: u64) -> Result<(), EngineError> {
    let delay = format!("{delay_ms}ms");
    let args = [
        "qdisc",
        "add",
        "dev",
        CONTAINER_IFACE,
        "root",
        "netem",
        "delay",
        &delay,
    ];
    match in_netns(container, "tc", &args).await {
        Err(EngineError::Failed { stderr, .. }) if stderr.contains("qdisc kind is unknown") => {
            Err(EngineError::NoNetem {
                container: container.to_string(),
                stderr,
            })
        }
        other => other.map(drop),
    }
}

/// Removes the delay again.
pub async fn stop_delay(container: &str) -> Result<(), EngineError> {
    in_netns(
        container,
        "tc",
        &["qdisc", "del", "dev", CONTAINER_IFACE, "root"],
    )
    .await
    .map(drop)
}

/// Stops the container gracefully (SIGTERM, then SIGKILL after a grace period) and starts
/// it again, as a deploy would.
pub async fn restart(container: &str) -> Result<(), EngineError> {
    run("docker", &["restart", "--time", "5", container])
        .await
        .map(drop)
}
