//! `catwar-sim agent --connect ADDR`: a worker on another host (or container, or pod).
//!
//! It connects to the coordinator (`catwar-sim run --agents N --listen ADDR`), proves it
//! holds the shared secret, answers the clock pings, and receives its share: the
//! scenario, the topology, profile's certificate and the start instant in its own
//! clock. It writes them to a folder of its own, shaped like a topology's data folder,
//! and from there it is a worker like a local one, over the same connection: the same
//! code drives its clients and sends its seconds, totals and ledger. The user DB is the
//! coordinator's to read, so the agent needs no access to it.

use super::agents::{proof, unix_us};
use super::protocol::{FromAgent, ToAgent};
use super::transport::{MessageReader, MessageWriter};
use super::worker::{serve_share, WorkerArgs};
use super::RunError;
use crate::net::tls::TLS_CERT_FILE;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::BufReader;
use tokio::net::TcpStream;

/// How long an agent keeps trying to reach its coordinator by default: agents are often
/// started before it (a Kubernetes Job's pods, a compose service).
pub const CONNECT_WAIT_S_DEFAULT: u64 = 60;
/// Between two connection attempts.
const CONNECT_RETRY_MS: u64 = 500;
/// Coordinator messages before the assignment are small; the assignment carries the
/// scenario, the topology and a certificate, a few dozen KiB.
const TO_AGENT_BYTES_MAX: usize = 4 * 1024 * 1024;
/// The environment variable a Kubernetes Indexed Job gives each pod its index in.
pub const JOB_INDEX_ENV: &str = "JOB_COMPLETION_INDEX";

/// The command line of `catwar-sim agent`.
#[derive(Clone, Debug, clap::Args)]
pub struct AgentArgs {
    /// The coordinator's address (HOST:PORT), as `run --listen` was given it.
    #[arg(long, value_name = "HOST:PORT")]
    pub connect: String,
    /// The agent index to ask for [default: $JOB_COMPLETION_INDEX, else any free one].
    #[arg(long, value_name = "N")]
    pub index: Option<u64>,
    /// The name the coordinator shows for this agent [default: the host name].
    #[arg(long)]
    pub name: Option<String>,
    /// How long to keep trying to reach the coordinator, in seconds.
    #[arg(long, value_name = "S", default_value_t = CONNECT_WAIT_S_DEFAULT)]
    pub connect_wait_s: u64,
    /// This host's addresses its clients connect from, in turn (two or more for the
    /// IP-change branch) [default: each client its own 127.x address, for a topology on
    /// this host].
    #[arg(long, value_name = "IP,IP,...", value_delimiter = ',')]
    pub source_ips: Vec<std::net::IpAddr>,
}

/// Why an agent could not run its share.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The coordinator could not be reached in time.
    #[error("--connect {addr}: no coordinator answered within {wait_s} s")]
    Connect {
        /// The address given.
        addr: String,
        /// How long the agent tried.
        wait_s: u64,
        /// The last attempt's error.
        #[source]
        source: std::io::Error,
    },
    /// `$JOB_COMPLETION_INDEX` is not a number.
    #[error("{JOB_INDEX_ENV}={0:?} is not an agent index")]
    Index(String),
    /// The coordinator refused this agent.
    #[error("the coordinator refused this agent: {0}")]
    Refused(String),
    /// The handshake broke off.
    #[error("handshake with the coordinator: {0}")]
    Handshake(String),
    /// The assignment could not be written to the agent's folder.
    #[error("cannot write {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The share could not be run.
    #[error(transparent)]
    Run(#[from] RunError),
}

/// Joins the coordinator at `args.connect` with `secret` and runs the share it assigns.
pub async fn serve(args: &AgentArgs, secret: &[u8]) -> Result<(), AgentError> {
    let index = match args.index {
        Some(index) => Some(index),
        None => match std::env::var(JOB_INDEX_ENV) {
            Ok(text) => Some(text.trim().parse().map_err(|_| AgentError::Index(text))?),
            Err(_) => None,
        },
    };
    let stream = connect(&args.connect, args.connect_wait_s).await?;
    let _ = stream.set_nodelay(true);
    let (read_half, write_half) = stream.into_split();
    let mut reader = MessageReader::new(BufReader::new(read_half), TO_AGENT_BYTES_MAX);
    let mut writer = MessageWriter::new(write_half);
    let broke = |e: &(dyn std::error::Error + 'static)| AgentError::Handshake(crate::error_chain(e));
    let name = args.name.clone().unwrap_or_else(host_name);
    let assignment = loop {
        let message = reader.recv::<ToAgent>().await.map_err(|e| broke(&e))?;
        let answer = match message {
            None => return Err(AgentError::Handshake("the coordinator hung up".to_string())),
            Some(ToAgent::Challenge { nonce }) => FromAgent::Hello {
                version: env!("CARGO_PKG_VERSION").to_string(),
                name: name.clone(),
                index,
                proof: proof(secret, &nonce),
            },
            Some(ToAgent::Ping { coordinator_us }) => FromAgent::Pong {
                coordinator_us,
                agent_us: unix_us(),
            },
            Some(ToAgent::Assign(assignment)) => break assignment,
            Some(ToAgent::Refused { reason }) => return Err(AgentError::Refused(reason)),
        };
        writer.send(&answer).await.map_err(|e| broke(&e))?;
        writer.flush().await.map_err(|e| broke(&e))?;
    };
    eprintln!(
        "catwar-sim agent {name}: agent {} of {}, starting at {} ms",
        assignment.index, assignment.count, assignment.start_unix_ms
    );
    // The folder vanishes with the agent, whichever way it ends.
    let folder = tempfile::tempdir().map_err(|source| AgentError::Write {
        path: std::env::temp_dir(),
        source,
    })?;
    let scenario = write_file(folder.path(), "scenario.toml", &assignment.scenario)?;
    let target = write_file(folder.path(), "topology.json", &assignment.topology)?;
    write_file(folder.path(), TLS_CERT_FILE, &assignment.cert_pem)?;
    let worker = WorkerArgs {
        scenario,
        target,
        index: assignment.index,
        count: assignment.count,
        start_unix_ms: assignment.start_unix_ms,
        source_ips: args.source_ips.clone(),
        // Agents write no request log: `run` refuses `--request-log` with `--agents`.
        request_log: None,
        request_log_sample_ppm: 0,
    };
    serve_share(&worker, reader, writer).await?;
    Ok(())
}

/// Connects to `addr`, trying again until `wait_s` passed.
async fn connect(addr: &str, wait_s: u64) -> Result<TcpStream, AgentError> {
    let deadline = Instant::now() + Duration::from_secs(wait_s);
    loop {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(source) if Instant::now() >= deadline => {
                return Err(AgentError::Connect {
                    addr: addr.to_string(),
                    wait_s,
                    source,
                })
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(CONNECT_RETRY_MS)).await,
        }
    }
}

/// Writes `text` to `name` under `folder`, creating folders on the way.
fn write_file(folder: &Path, name: &str, text: &str) -> Result<PathBuf, AgentError> {
    let path = folder.join(name);
    let written = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(&path, text));
    written.map_err(|source| AgentError::Write {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

/// This host's name, or `agent` when it has none.
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length, and gethostname writes within it.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..len]) {
        Ok(name) if ok && !name.is_empty() => name.to_string(),
        _ => "agent".to_string(),
    }
}
