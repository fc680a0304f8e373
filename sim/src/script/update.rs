//! Steps 1 and 2 of the scenario: ask storage whether the version is current, and
//! download and verify every file of an update from the file nodes it names.

use super::answer::{successful, Failure};
use super::VirtualClient;
use crate::net::http::{connect, percent_encode, HttpClient, Response};
use crate::step::{Invariant, Step};
use rand::Rng;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// The first pause after an `unavailable` answer; a failover takes a few hundred ms, so
/// the first retries come quickly.
const BACKOFF_START_MS: u64 = 25;
/// Pauses double up to this, so a client notices the end of a failover within a quarter
/// second without hammering storage while it lasts.
const BACKOFF_CAP_MS: u64 = 250;
/// After this many `unavailable` answers in a row (about ten seconds at the cap) the
/// session gives up and the client thinks before starting over.
const UNAVAILABLE_RETRIES_MAX: u32 = 40;
/// A manifest lists a handful of files; thousands would mean a broken storage.
const MANIFEST_FILES_MAX: usize = 10_000;
/// The version a client without any resources reports, to learn the current one.
pub const NO_VERSION: &str = "0.0.0";
/// How long a probe of an offered endpoint may take to connect. Refused means dead; a
/// connect this slow proves nothing either way, and is not counted against the node.
const ENDPOINT_PROBE_TIMEOUT_MS: u64 = 1_000;
/// How long the run waits for storage to name the current version before giving up;
/// the balancer needs a moment after start-up to find healthy file nodes.
pub const DISCOVERY_TIMEOUT_MS: u64 = 15_000;
/// Pause between discovery attempts.
const DISCOVERY_RETRY_MS: u64 = 100;

impl VirtualClient {
    /// Asks storage whether `version` is current, retrying through a failover.
    pub(super) async fn update_check(&mut self, version: &str) -> Option<Update> {
        let target = format!("/v1/update?version={}", percent_encode(version, false));
        let mut backoff_ms = BACKOFF_START_MS;
        for _ in 0..UNAVAILABLE_RETRIES_MAX {
            let started = self.send_time();
            let result = self.http.get(self.env.storage, &target).await;
            let done = Instant::now();
            match successful(result).and_then(|response| parse_update(&response)) {
                Ok(update) => {
                    self.recorder.success(Step::UpdateCheck, started, done);
                    // A stale answer (no balancer picked; storage named the nodes a
                    // balancer sees healthy) serves the client but is not a pick: the
                    // failover gap runs from the last pick to the first fresh one.
                    if let Update::Available(manifest) = &update {
                        if !manifest.stale {
                            self.recorder.pick(done, manifest.epoch);
                        }
                        self.check_endpoints(manifest).await;
                    }
                    return Some(update);
                }
                Err(failure) => {
                    self.recorder.failure(Step::UpdateCheck, &failure.code);
                    if failure.code != "unavailable" {
                        return None;
                    }
                    self.recorder.storage_unavailable(done);
                    if !self.back_off(backoff_ms, failure.retry_after_s).await {
                        return None;
                    }
                    backoff_ms = (backoff_ms * 2).min(BACKOFF_CAP_MS);
                }
            }
        }
        None
    }

    /// Checks every endpoint of an update answer (`update.live_endpoints`), not only the
    /// one a download will use: each must be a file node of the topology that accepts a
    /// connection now. A refused connection is a dead node, expected only when the
    /// scenario kills file nodes.
    async fn check_endpoints(&self, manifest: &Manifest) {
        let nodes = &self.env.file_nodes;
        for &endpoint in &manifest.endpoints {
            let known = nodes.is_empty() || nodes.contains(&endpoint);
            let dead = known
                && !self.env.file_nodes_killed
                && refuses(self.http.local_ip(), endpoint).await;
            if !known {
                tracing::warn!(%endpoint, "an update answer names no file node of the topology");
            }
            self.recorder
                .invariant(Invariant::UpdateLiveEndpoints, !known || dead);
        }
    }

    /// Downloads every file of the manifest in order; stops at the first failure.
    pub(super) async fn download_all(&mut self, manifest: &Manifest) {
        for file in &manifest.files {
            if !self.running() || !self.download(manifest, file).await {
                return;
            }
        }
    }

    /// Downloads one file from a random endpoint and verifies it; false if it failed.
    async fn download(&mut self, manifest: &Manifest, file: &FileEntry) -> bool {
        let endpoint = manifest.endpoints[self.rng.random_range(0..manifest.endpoints.len())];
        let target = format!(
            "/v1/files/{}/{}",
            percent_encode(&manifest.version, false),
            percent_encode(&file.path, true)
        );
        let started = self.send_time();
        let result = self.http.get(endpoint, &target).await;
        let done = Instant::now();
        match successful(result) {
            Ok(response) => {
                self.recorder.success(Step::FileDownload, started, done);
                self.recorder
                    .invariant(Invariant::UpdateLiveEndpoints, false);
                let intact = response.body.len() as u64 == file.size
                    && sha256_hex(&response.body).eq_ignore_ascii_case(&file.sha256);
                self.recorder.invariant(Invariant::DownloadsSha256, !intact);
                true
            }
            Err(failure) => {
                self.recorder.failure(Step::FileDownload, &failure.code);
                // Storage hands out only healthy nodes; one that refuses or resets the
                // connection is dead, which is expected only if the scenario kills nodes.
                let dead = failure.refused_or_reset && !self.env.file_nodes_killed;
                self.recorder
                    .invariant(Invariant::UpdateLiveEndpoints, dead);
                false
            }
        }
    }
}

/// Whether `endpoint` refuses (or resets) a connection from `local_ip` now: the signature
/// of a dead process. A slow connect is not a refusal.
async fn refuses(local_ip: Option<IpAddr>, endpoint: SocketAddr) -> bool {
    let timeout = Duration::from_millis(ENDPOINT_PROBE_TIMEOUT_MS);
    match tokio::time::timeout(timeout, connect(local_ip, endpoint)).await {
        Ok(Err(e)) => matches!(
            e.kind(),
            io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset
        ),
        Ok(Ok(_)) | Err(_) => false,
    }
}

/// Asks storage for the current version as a client without resources, retrying until
/// [`DISCOVERY_TIMEOUT_MS`] while the topology settles.
pub async fn discover_version(storage: SocketAddr) -> Result<String, DiscoveryError> {
    let deadline = Instant::now() + Duration::from_millis(DISCOVERY_TIMEOUT_MS);
    let target = format!("/v1/update?version={NO_VERSION}");
    let mut http = HttpClient::new(None);
    loop {
        let answer = successful(http.get(storage, &target).await).and_then(|r| parse_update(&r));
        let why = match answer {
            Ok(Update::Available(manifest)) => return Ok(manifest.version),
            Ok(Update::Current) => format!("storage calls version {NO_VERSION} current"),
            Err(failure) => failure.detail,
        };
        if Instant::now() >= deadline {
            return Err(DiscoveryError { storage, why });
        }
        tokio::time::sleep(Duration::from_millis(DISCOVERY_RETRY_MS)).await;
    }
}

/// Storage never named a current version before [`DISCOVERY_TIMEOUT_MS`].
#[derive(Debug, thiserror::Error)]
#[error(
    "storage at {storage} did not name the current version within {DISCOVERY_TIMEOUT_MS} ms: \
     {why}"
)]
pub struct DiscoveryError {
    storage: SocketAddr,
    /// The last answer, or the failure instead of one.
    why: String,
}

/// Storage's answer to an update check.
#[derive(Debug, PartialEq)]
pub(super) enum Update {
    /// The version is current.
    Current,
    /// A newer version exists.
    Available(Manifest),
}

/// What to download for an update.
#[derive(Debug, PartialEq)]
pub(super) struct Manifest {
    version: String,
    files: Vec<FileEntry>,
    endpoints: Vec<SocketAddr>,
    epoch: u64,
    /// Named by storage from a balancer's health view while no balancer picked.
    stale: bool,
}

#[derive(Debug, PartialEq, Deserialize)]
struct FileEntry {
    path: String,
    size: u64,
    sha256: String,
}

#[derive(Deserialize)]
struct UpdateAnswer {
    update: bool,
    version: String,
    #[serde(default)]
    files: Vec<FileEntry>,
    #[serde(default)]
    endpoints: Vec<String>,
    epoch: Option<u64>,
    #[serde(default)]
    stale: bool,
}

fn parse_update(response: &Response) -> Result<Update, Failure> {
    let answer: UpdateAnswer = serde_json::from_slice(&response.body)
        .map_err(|e| Failure::bad_response(format!("update answer: {e}")))?;
    if !answer.update {
        return Ok(Update::Current);
    }
    let epoch = answer
        .epoch
        .ok_or_else(|| Failure::bad_response("update answer without epoch".to_string()))?;
    if answer.files.len() > MANIFEST_FILES_MAX {
        return Err(Failure::bad_response(format!(
            "{} files in the manifest",
            answer.files.len()
        )));
    }
    if answer.endpoints.is_empty() {
        return Err(Failure::bad_response(
            "update answer without endpoints".to_string(),
        ));
    }
    let endpoints = answer
        .endpoints
        .iter()
        .map(|text| text.parse::<SocketAddr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Failure::bad_response(format!("endpoint: {e}")))?;
    Ok(Update::Available(Manifest {
        version: answer.version,
        files: answer.files,
        endpoints,
        epoch,
        stale: answer.stale,
    }))
}

fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut hex = String::with_capacity(digest.len() * 2);
    for byte in digest {
        write!(hex, "{byte:02x}").expect("writing to a String cannot fail");
    }
    hex
}

#[cfg(test)]
mod tests {
    use super::super::answer::tests::response;
    use super::*;

    #[test]
    fn update_answers_parse() {
        let current = response(200, r#"{"update": false, "version": "1.1.0"}"#);
        assert_eq!(parse_update(&current).unwrap(), Update::Current);
        let available = response(
            200,
            r#"{"update": true, "version": "1.1.0", "epoch": 3, "endpoints": ["127.0.0.1:7120"],
                "files": [{"path": "maps/a.bin", "size": 3, "sha256": "ab"}], "extra": 1}"#,
        );
        let Update::Available(manifest) = parse_update(&available).unwrap() else {
            panic!()
        };
        assert_eq!(manifest.epoch, 3);
        assert!(!manifest.stale, "an answer without the flag is a pick");
        assert_eq!(manifest.endpoints[0].port(), 7120);
        assert_eq!(manifest.files[0].path, "maps/a.bin");
        let stale = response(
            200,
            r#"{"update": true, "version": "1.1.0", "epoch": 3, "stale": true,
                "endpoints": ["127.0.0.1:7121"], "files": []}"#,
        );
        let Update::Available(manifest) = parse_update(&stale).unwrap() else {
            panic!()
        };
        assert!(manifest.stale);
        let no_epoch = response(
            200,
            r#"{"update": true, "version": "1", "endpoints": ["127.0.0.1:1"]}"#,
        );
        assert_eq!(parse_update(&no_epoch).unwrap_err().code, "bad_response");
        let bad_endpoint = response(
            200,
            r#"{"update": true, "version": "1", "epoch": 1, "endpoints": ["x"]}"#,
        );
        assert_eq!(
            parse_update(&bad_endpoint).unwrap_err().code,
            "bad_response"
        );
    }

    #[test]
    fn sha256_is_lower_case_hex() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
