//! The coordinator's side of agents on other hosts (`catwar-sim run --agents N --listen
//! ADDR`): it waits for N agents, checks that each holds the shared secret, measures
//! each one's clock against its own, hands each its share and one start instant in its
//! own clock, and from then on treats each agent as a worker (`coordinator::exchange`).
//!
//! The secret never crosses the network: the coordinator sends a fresh random nonce and
//! the agent answers with HMAC-SHA256 of it under the secret, checked in constant time.
//! The link is authenticated, not encrypted; it belongs on the load generators' own
//! network (SECURITY.md).
//!
//! Clock offsets are measured as NTP does: the coordinator stamps a ping, the agent
//! answers with its own clock's reading, and of a few round trips the shortest is
//! trusted; the offset is the agent's reading minus the midpoint of the round trip, and
//! half the round trip bounds its error.

use super::coordinator::{Link, FROM_WORKER_BYTES_MAX};
use super::protocol::{Assignment, FromAgent, ToAgent};
use super::reach::data_dir;
use super::transport::{MessageReader, MessageWriter, TransportError};
use crate::net::tls::TLS_CERT_FILE;
use crate::report::AgentReport;
use hmac::{Hmac, Mac};
use rand::RngCore as _;
use sha2::Sha256;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::BufReader;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

/// How long `run --agents` waits for all of them by default: long enough for pods to be
/// scheduled and images to start, short enough that a forgotten agent fails a CI job.
pub const AGENTS_WAIT_S_DEFAULT: u64 = 120;
/// An agent that connected must pass the handshake within this time, or it is dropped
/// and its slot stays open for another.
const HANDSHAKE_S_MAX: u64 = 10;
/// Round trips measured per agent; the shortest is trusted.
const CLOCK_PINGS: usize = 8;
/// The largest error of a clock offset (half the shortest round trip) the coordinator
/// accepts: beyond it the agents' seconds would not line up within 5 % of a second.
pub const CLOCK_UNCERTAINTY_MS_MAX: f64 = 50.0;
/// From the last agent's handshake to the shared start: the time to send every
/// assignment and for each agent to read the topology and ask storage for the version.
const AGENT_START_DELAY_MS: u64 = 3_000;
/// A handshake message (a hello, a pong) is a few hundred bytes.
const HANDSHAKE_BYTES_MAX: usize = 4 * 1024;
/// Random bytes in a challenge.
const NONCE_BYTES: usize = 32;

/// Where the agents connect and how they prove they belong to the run.
#[derive(Clone, Debug)]
pub struct AgentsOptions {
    /// Agents the run waits for.
    pub count: u64,
    /// The address to listen on for them.
    pub listen: SocketAddr,
    /// The shared secret (`CATWAR_AGENT_SECRET`).
    pub secret: Vec<u8>,
    /// How long to wait for all of them.
    pub wait_s: u64,
}

/// Why the agents could not be gathered.
#[derive(Debug, thiserror::Error)]
pub enum AgentsError {
    /// The listen address could not be bound.
    #[error("--listen {addr}: cannot listen")]
    Listen {
        /// The address given.
        addr: SocketAddr,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The topology's files could not be read to send them to the agents.
    #[error("cannot read {} to send it to the agents", path.display())]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// Not all agents came in time.
    #[error(
        "waited {wait_s} s for {count} agents on {addr}: joined {joined}; missing {missing} \
         (start them with `catwar-sim agent --connect {addr}` and the same \
         CATWAR_AGENT_SECRET, or raise --agents-wait-s)"
    )]
    Missing {
        /// How long the coordinator waited.
        wait_s: u64,
        /// Agents it waited for.
        count: u64,
        /// Where it listened.
        addr: SocketAddr,
        /// The agents that joined, named.
        joined: String,
        /// How many are missing, and their indices.
        missing: String,
    },
    /// Ctrl-C or SIGTERM while waiting.
    #[error("interrupted while waiting for agents")]
    Interrupted,
}

/// An agent that passed the handshake and has its share.
pub(super) struct Joined {
    report: AgentReport,
    reader: MessageReader<BufReader<OwnedReadHalf>>,
    writer: MessageWriter<OwnedWriteHalf>,
}

/// The listening socket of a run with agents, bound before anything else waits on it.
pub(super) struct AgentListener {
    listener: TcpListener,
    options: AgentsOptions,
}

impl AgentListener {
    /// Binds `options.listen` and says where the agents should connect.
    pub(super) async fn bind(options: AgentsOptions) -> Result<AgentListener, AgentsError> {
        let listen_error = |source| AgentsError::Listen {
            addr: options.listen,
            source,
        };
        let listener = TcpListener::bind(options.listen).await.map_err(listen_error)?;
        let addr = listener.local_addr().map_err(listen_error)?;
        eprintln!("catwar-sim: waiting for {} agents on {addr}", options.count);
        Ok(AgentListener { listener, options })
    }

    /// Waits for every agent, then sends each its assignment: the scenario (`scenario`,
    /// the file's text), the topology at `topology_path` and profile's certificate, and
    /// the start `start_unix_ms` after the coordinator's epoch in each agent's clock.
    /// Returns the start, in the coordinator's clock, and each agent as a worker link.
    pub(super) async fn gather(
        self,
        scenario: &str,
        topology_path: &Path,
        interrupt: &mut watch::Receiver<bool>,
    ) -> Result<Gathered, AgentsError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| AgentsError::Read {
                path: path.to_path_buf(),
                source,
            })
        };
        let topology = read(topology_path)?;
        let cert_pem = read(&data_dir(topology_path).join(TLS_CERT_FILE))?;
        let mut joined = self.accept_all(interrupt).await?;
        let start_unix_ms = super::unix_ms() + AGENT_START_DELAY_MS;
        let start = Instant::now() + Duration::from_millis(AGENT_START_DELAY_MS);
        let count = joined.len() as u64;
        let mut links = Vec::with_capacity(joined.len());
        let mut reports = Vec::with_capacity(joined.len());
        for (index, mut agent) in std::mem::take(&mut joined).into_iter().enumerate() {
            let offset_ms = (agent.report.clock_offset_us as f64 / 1_000.0).round() as i64;
            let assignment = Assignment {
                index: index as u64,
                count,
                scenario: scenario.to_string(),
                topology: topology.clone(),
                cert_pem: cert_pem.clone(),
                start_unix_ms: start_unix_ms.saturating_add_signed(offset_ms),
            };
            // An agent gone since its handshake is lost like one gone later: its link
            // ends at once and the exchange names it.
            let _ = agent.writer.send(&ToAgent::Assign(Box::new(assignment))).await;
            let _ = agent.writer.flush().await;
            agent.report.index = index as u64;
            eprintln!(
                "catwar-sim: agent {index}: {} from {}, clock offset {:+.3} ms ± {:.3} ms",
                agent.report.name,
                agent.report.peer,
                agent.report.clock_offset_us as f64 / 1_000.0,
                agent.report.clock_uncertainty_us as f64 / 1_000.0,
            );
            let received_bytes = Arc::new(AtomicU64::new(0));
            links.push(Link {
                name: format!("agent {index} ({}, {})", agent.report.name, agent.report.peer),
                reader: agent.reader,
                writer: agent.writer,
                received_bytes: Arc::clone(&received_bytes),
            });
            reports.push((agent.report, received_bytes));
        }
        Ok(Gathered {
            start,
            start_unix_ms,
            links,
            reports,
        })
    }

    /// Accepts connections until `count` agents passed the handshake, refusing those
    /// with the wrong secret, another version or an index already taken.
    async fn accept_all(
        &self,
        interrupt: &mut watch::Receiver<bool>,
    ) -> Result<Vec<Joined>, AgentsError> {
        let options = &self.options;
        let deadline = Instant::now() + Duration::from_secs(options.wait_s);
        let (done_tx, mut done) = mpsc::unbounded_channel();
        // Requested indices are granted as asked; the others fill the gaps in order.
        let mut by_index: BTreeMap<u64, Joined> = BTreeMap::new();
        let mut unindexed: Vec<Joined> = Vec::new();
        while (by_index.len() + unindexed.len()) < options.count as usize {
            tokio::select! {
                accepted = self.listener.accept() => {
                    let Ok((stream, peer)) = accepted else { continue };
                    let secret = options.secret.clone();
                    let done_tx = done_tx.clone();
                    tokio::spawn(async move {
                        let shaken = tokio::time::timeout(
                            Duration::from_secs(HANDSHAKE_S_MAX),
                            handshake(stream, peer, &secret),
                        )
                        .await
                        .unwrap_or_else(|_| Err(format!("{peer}: no handshake within {HANDSHAKE_S_MAX} s")));
                        let _ = done_tx.send(shaken);
                    });
                }
                shaken = done.recv() => match shaken {
                    Some(Ok(mut agent)) => match agent.asked_index {
                        Some(index) if index >= options.count || by_index.contains_key(&index) => {
                            let reason = format!(
                                "index {index} is taken or beyond the {} agents of this run",
                                options.count
                            );
                            refuse(&mut agent.joined.writer, &agent.joined.report, &reason).await;
                        }
                        Some(index) => {
                            by_index.insert(index, agent.joined);
                        }
                        None => unindexed.push(agent.joined),
                    },
                    Some(Err(problem)) => eprintln!("catwar-sim: refused an agent: {problem}"),
                    None => {}
                },
                _ = tokio::time::sleep_until(deadline.into()) => {
                    let mut joined: Vec<String> = by_index
                        .iter()
                        .map(|(i, a)| format!("agent {i} ({}, {})", a.report.name, a.report.peer))
                        .collect();
                    joined.extend(unindexed.iter().map(|a| format!("{} ({})", a.report.name, a.report.peer)));
                    let missing = options.count as usize - joined.len();
                    let free: Vec<String> = (0..options.count)
                        .filter(|i| !by_index.contains_key(i))
                        .skip(unindexed.len())
                        .map(|i| i.to_string())
                        .collect();
                    return Err(AgentsError::Missing {
                        wait_s: options.wait_s,
                        count: options.count,
                        addr: self.listener.local_addr().unwrap_or(options.listen),
                        joined: if joined.is_empty() { "none".to_string() } else { joined.join(", ") },
                        missing: format!("{missing} (agent {})", free.join(", ")),
                    });
                }
                _ = interrupt.wait_for(|&fired| fired) => return Err(AgentsError::Interrupted),
            }
        }
        let mut unindexed = unindexed.into_iter();
        Ok((0..options.count)
            .map(|i| {
                by_index
                    .remove(&i)
                    .or_else(|| unindexed.next())
                    .expect("count agents joined")
            })
            .collect())
    }
}

/// The agents of a run, with the start they were given.
pub(super) struct Gathered {
    /// The shared start in this process's clock.
    pub(super) start: Instant,
    /// The same, ms since the Unix epoch by this process's clock.
    pub(super) start_unix_ms: u64,
    /// Each agent as a worker.
    pub(super) links: Vec<Link<BufReader<OwnedReadHalf>, OwnedWriteHalf>>,
    /// Each agent's figures, with the counter of the bytes it sent.
    pub(super) reports: Vec<(AgentReport, Arc<AtomicU64>)>,
}

/// An agent after the handshake, before its index is settled.
struct Shaken {
    joined: Joined,
    asked_index: Option<u64>,
}

/// The handshake with one connection: challenge, hello, clock pings. A refusal is sent
/// to the agent and returned as the reason, naming it.
async fn handshake(stream: TcpStream, peer: SocketAddr, secret: &[u8]) -> Result<Shaken, String> {
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    let mut reader = MessageReader::new(BufReader::new(read), HANDSHAKE_BYTES_MAX);
    let mut writer = MessageWriter::new(write);
    let mut nonce = [0u8; NONCE_BYTES];
    rand::rng().fill_bytes(&mut nonce);
    let nonce = hex(&nonce);
    let unreadable = |e: TransportError| format!("{peer}: {}", crate::error_chain(&e));
    let send_failed = |e: std::io::Error| format!("{peer}: {e}");
    writer
        .send(&ToAgent::Challenge {
            nonce: nonce.clone(),
        })
        .await
        .map_err(send_failed)?;
    writer.flush().await.map_err(send_failed)?;
    let Some(FromAgent::Hello {
        version,
        name,
        index,
        proof,
    }) = reader.recv::<FromAgent>().await.map_err(unreadable)?
    else {
        return Err(format!("{peer}: no hello"));
    };
    let report = AgentReport {
        index: 0,
        name: name.clone(),
        peer: peer.to_string(),
        clock_offset_us: 0,
        clock_uncertainty_us: 0,
        received_bytes: 0,
        received_bytes_per_s: 0.0,
    };
    let mut joined = Joined {
        report,
        reader,
        writer,
    };
    let reason = if !proves(secret, &nonce, &proof) {
        Some("wrong secret (CATWAR_AGENT_SECRET differs from the coordinator's)".to_string())
    } else if version != env!("CARGO_PKG_VERSION") {
        Some(format!(
            "catwar-sim {version} cannot join a coordinator of version {}",
            env!("CARGO_PKG_VERSION")
        ))
    } else {
        None
    };
    if let Some(reason) = reason {
        refuse(&mut joined.writer, &joined.report, &reason).await;
        return Err(format!("{name} from {peer}: {reason}"));
    }
    let (offset_us, uncertainty_us) = measure_clock(&mut joined)
        .await
        .map_err(|e| format!("{name} from {peer}: clock: {e}"))?;
    joined.report.clock_offset_us = offset_us;
    joined.report.clock_uncertainty_us = uncertainty_us;
    if uncertainty_us as f64 / 1_000.0 > CLOCK_UNCERTAINTY_MS_MAX {
        let reason = format!(
            "its clock cannot be placed within {CLOCK_UNCERTAINTY_MS_MAX} ms: the shortest \
             round trip took {:.1} ms",
            2.0 * uncertainty_us as f64 / 1_000.0
        );
        refuse(&mut joined.writer, &joined.report, &reason).await;
        return Err(format!("{name} from {peer}: {reason}"));
    }
    // Past the handshake an agent's messages are a worker's, and may be larger.
    joined.reader.set_line_bytes_max(FROM_WORKER_BYTES_MAX);
    Ok(Shaken {
        joined,
        asked_index: index,
    })
}

/// Pings the agent [`CLOCK_PINGS`] times and returns its clock's offset from this one
/// and the offset's error bound, in µs, from the shortest round trip.
async fn measure_clock(agent: &mut Joined) -> Result<(i64, u64), String> {
    let mut best: Option<(u64, i64)> = None;
    for _ in 0..CLOCK_PINGS {
        let sent_us = unix_us();
        agent
            .writer
            .send(&ToAgent::Ping {
                coordinator_us: sent_us,
            })
            .await
            .map_err(|e| e.to_string())?;
        agent.writer.flush().await.map_err(|e| e.to_string())?;
        let pong = agent
            .reader
            .recv::<FromAgent>()
            .await
            .map_err(|e| crate::error_chain(&e))?;
        let received_us = unix_us();
        let Some(FromAgent::Pong {
            coordinator_us,
            agent_us,
        }) = pong
        else {
            return Err("no pong".to_string());
        };
        if coordinator_us != sent_us {
            return Err("a pong for another ping".to_string());
        }
        let round_trip = received_us.saturating_sub(sent_us);
        let midpoint = sent_us + round_trip / 2;
        let offset = agent_us as i64 - midpoint as i64;
        if best.is_none_or(|(rtt, _)| round_trip < rtt) {
            best = Some((round_trip, offset));
        }
    }
    let (round_trip, offset) = best.expect("at least one ping");
    Ok((offset, round_trip / 2))
}

/// Tells the agent why it may not join, and says so here.
async fn refuse(writer: &mut MessageWriter<OwnedWriteHalf>, agent: &AgentReport, reason: &str) {
    eprintln!(
        "catwar-sim: refused agent {} from {}: {reason}",
        agent.name, agent.peer
    );
    let refusal = ToAgent::Refused {
        reason: reason.to_string(),
    };
    let _ = writer.send(&refusal).await;
    let _ = writer.flush().await;
}

/// Whether `proof` (hex) is the HMAC-SHA256 of `nonce` under `secret`; compared in
/// constant time.
fn proves(secret: &[u8], nonce: &str, proof: &str) -> bool {
    let Some(proof) = unhex(proof) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(nonce.as_bytes());
    mac.verify_slice(&proof).is_ok()
}

/// The proof an agent holding `secret` gives for `nonce`: HMAC-SHA256, hex.
pub(super) fn proof(secret: &[u8], nonce: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(nonce.as_bytes());
    hex(&mac.finalize().into_bytes())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Microseconds since the Unix epoch.
pub(super) fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An agent on loopback whose clock runs `skew_us` ahead of this one, and which
    /// answers each ping after `delay`.
    async fn skewed_agent(addr: SocketAddr, secret: &'static [u8], skew_us: i64, delay: Duration) {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (read, write) = stream.into_split();
        let mut reader = MessageReader::new(BufReader::new(read), HANDSHAKE_BYTES_MAX);
        let mut writer = MessageWriter::new(write);
        while let Ok(Some(message)) = reader.recv::<ToAgent>().await {
            let answer = match message {
                ToAgent::Challenge { nonce } => FromAgent::Hello {
                    version: env!("CARGO_PKG_VERSION").to_string(),
                    name: "skewed".to_string(),
                    index: None,
                    proof: proof(secret, &nonce),
                },
                ToAgent::Ping { coordinator_us } => {
                    tokio::time::sleep(delay).await;
                    FromAgent::Pong {
                        coordinator_us,
                        agent_us: unix_us().saturating_add_signed(skew_us),
                    }
                }
                ToAgent::Assign(_) | ToAgent::Refused { .. } => return,
            };
            writer.send(&answer).await.unwrap();
            writer.flush().await.unwrap();
        }
    }

    async fn shake_with(skew_us: i64, delay: Duration) -> Result<Shaken, String> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(skewed_agent(addr, b"0123456789abcdef", skew_us, delay));
        let (stream, peer) = listener.accept().await.unwrap();
        handshake(stream, peer, b"0123456789abcdef").await
    }

    #[tokio::test]
    async fn an_agents_clock_offset_is_measured_and_bounded() {
        // Five seconds ahead: measured within the bound the round trips give.
        let shaken = shake_with(5_000_000, Duration::ZERO).await.unwrap();
        let report = &shaken.joined.report;
        let error = (report.clock_offset_us - 5_000_000).unsigned_abs();
        assert!(error <= report.clock_uncertainty_us + 1_000, "{report:?}");
        assert!(report.clock_uncertainty_us < 10_000, "{report:?}");
        // Answers that take 120 ms leave the offset uncertain by 60 ms: refused.
        let slow = shake_with(0, Duration::from_millis(120)).await;
        let reason = slow.err().expect("refused");
        assert!(reason.contains("cannot be placed within 50 ms"), "{reason}");
    }

    #[test]
    fn only_the_right_secret_proves_a_nonce() {
        let nonce = hex(&[7; NONCE_BYTES]);
        let good = proof(b"s3cret", &nonce);
        assert!(proves(b"s3cret", &nonce, &good));
        assert!(!proves(b"other", &nonce, &good));
        assert!(!proves(b"s3cret", &hex(&[8; NONCE_BYTES]), &good));
        assert!(!proves(b"s3cret", &nonce, "zz"));
        assert!(!proves(b"s3cret", &nonce, &good[1..]));
        assert_eq!(unhex("00ff10"), Some(vec![0, 255, 16]));
    }
}
