//! The virtual client script, step by step.
//!
//! Each virtual client is one task that loops sessions until the run's deadline:
//!
//! 1. choose a version: the stale one with probability `script.stale_version`, else the
//!    current one;
//! 2. `update.check` at storage; on `503 unavailable` (a balancer failover) back off
//!    with jitter and ask again; if an update is offered, `file.download` every file
//!    from a random endpoint of the answer and verify its size and sha256;
//! 3. think for `load.think_time_ms`, jittered by ±50 %.
//!
//! Every client draws from its own random stream, seeded from the scenario seed and its
//! id, so a run is reproducible and one client can be replayed alone.

use crate::http::{percent_encode, HttpClient, HttpError, Response};
use crate::metrics::Recorder;
use crate::step::{Invariant, Step};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
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
/// How long the run waits for storage to name the current version before giving up;
/// the balancer needs a moment after start-up to find healthy file nodes.
pub const DISCOVERY_TIMEOUT_MS: u64 = 15_000;
/// Pause between discovery attempts.
const DISCOVERY_RETRY_MS: u64 = 100;

/// What every virtual client of a run shares.
#[derive(Debug)]
pub struct ScriptEnv {
    /// Storage's address.
    pub storage: SocketAddr,
    /// The version storage reports as current.
    pub current_version: String,
    /// The version stale clients report (`population.stale_version`).
    pub stale_version: String,
    /// Probability that a session starts stale (`script.stale_version`).
    pub stale_probability: f64,
    /// Mean pause after a session (`load.think_time_ms`).
    pub think_time_ms: u64,
    /// Whether the scenario kills file nodes, which makes dead endpoints expected.
    pub file_nodes_killed: bool,
    /// The scenario seed.
    pub seed: u64,
    /// When clients stop starting new steps.
    pub deadline: Instant,
}

/// Runs one virtual client until the deadline.
pub async fn run_client(env: Arc<ScriptEnv>, id: u64, recorder: Recorder) {
    let rng = StdRng::seed_from_u64(client_seed(env.seed, id));
    let mut client = VirtualClient {
        env,
        rng,
        http: HttpClient::new(None),
        recorder,
    };
    client.run().await;
}

/// The seed of one client's random stream: a splitmix64 mix of the scenario seed and
/// the client id, so neighbouring ids get unrelated streams.
pub fn client_seed(seed: u64, client_id: u64) -> u64 {
    splitmix64(splitmix64(seed) ^ client_id)
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

struct VirtualClient {
    env: Arc<ScriptEnv>,
    rng: StdRng,
    http: HttpClient,
    recorder: Recorder,
}

impl VirtualClient {
    async fn run(&mut self) {
        // Starts spread over one think time, so the run does not open with a stampede.
        let first_pause = self.rng.random_range(0..=self.env.think_time_ms);
        if !self.pause_ms(first_pause).await {
            return;
        }
        while Instant::now() < self.env.deadline {
            self.session().await;
        }
    }

    /// One session: check the version, download what changed, think.
    async fn session(&mut self) {
        let env = Arc::clone(&self.env);
        let stale = self.rng.random_bool(env.stale_probability);
        let version = if stale {
            &env.stale_version
        } else {
            &env.current_version
        };
        if let Some(Update::Available(manifest)) = self.update_check(version).await {
            self.download_all(&manifest).await;
        }
        let think_ms = self.jitter(env.think_time_ms);
        self.pause_ms(think_ms).await;
    }

    /// Asks storage whether `version` is current, retrying through a failover.
    async fn update_check(&mut self, version: &str) -> Option<Update> {
        let target = format!("/v1/update?version={}", percent_encode(version, false));
        let mut backoff_ms = BACKOFF_START_MS;
        for _ in 0..UNAVAILABLE_RETRIES_MAX {
            let started = Instant::now();
            let result = self.http.get(self.env.storage, &target).await;
            let done = Instant::now();
            match successful(result).and_then(|response| parse_update(&response)) {
                Ok(update) => {
                    self.recorder.success(Step::UpdateCheck, started, done);
                    if let Update::Available(manifest) = &update {
                        self.recorder.pick(done, manifest.epoch);
                    }
                    return Some(update);
                }
                Err(failure) => {
                    self.recorder.failure(Step::UpdateCheck, &failure.code);
                    if failure.code != "unavailable" {
                        return None;
                    }
                    self.recorder.storage_unavailable(done);
                    let retry_after_ms = failure
                        .retry_after_s
                        .map_or(u64::MAX, |s| s.saturating_mul(1000));
                    let pause = backoff_ms.min(retry_after_ms);
                    // Equal jitter: at least half the pause, so retries stay spaced but
                    // clients that failed together do not retry together.
                    let pause = self.rng.random_range(pause / 2..=pause);
                    if !self.pause_ms(pause).await {
                        return None;
                    }
                    backoff_ms = (backoff_ms * 2).min(BACKOFF_CAP_MS);
                }
            }
        }
        None
    }

    /// Downloads every file of the manifest in order; stops at the first failure.
    async fn download_all(&mut self, manifest: &Manifest) {
        for file in &manifest.files {
            if Instant::now() >= self.env.deadline || !self.download(manifest, file).await {
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
        let started = Instant::now();
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

    /// A pause of `ms` jittered by ±50 %.
    fn jitter(&mut self, ms: u64) -> u64 {
        self.rng.random_range(ms / 2..=ms + ms / 2)
    }

    /// Sleeps `ms`, but not past the deadline; false if the deadline cut it short.
    async fn pause_ms(&self, ms: u64) -> bool {
        let wake = Instant::now() + Duration::from_millis(ms);
        if wake >= self.env.deadline {
            tokio::time::sleep_until(self.env.deadline.into()).await;
            return false;
        }
        tokio::time::sleep_until(wake.into()).await;
        true
    }
}

/// Asks storage for the current version as a client without resources, retrying until
/// [`DISCOVERY_TIMEOUT_MS`] while the topology settles.
pub async fn discover_version(storage: SocketAddr) -> Result<String, String> {
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
            return Err(format!(
                "storage at {storage} did not name the current version within \
                 {DISCOVERY_TIMEOUT_MS} ms: {why}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(DISCOVERY_RETRY_MS)).await;
    }
}

/// Why a step failed.
#[derive(Debug)]
struct Failure {
    /// The error code recorded: the server's `error` field, or a transport code.
    code: String,
    /// Retry-After of an error answer, in seconds.
    retry_after_s: Option<u64>,
    /// Whether the connection was refused or reset.
    refused_or_reset: bool,
    /// A human description, for start-up errors.
    detail: String,
}

impl Failure {
    fn bad_response(detail: String) -> Failure {
        Failure {
            code: "bad_response".to_string(),
            retry_after_s: None,
            refused_or_reset: false,
            detail,
        }
    }
}

/// The body of every CatWar error answer.
#[derive(Deserialize)]
struct ErrorBody {
    error: String,
}

/// A 200 response, or the failure that came instead.
fn successful(result: Result<Response, HttpError>) -> Result<Response, Failure> {
    let response = result.map_err(|e| Failure {
        code: e.code().to_string(),
        retry_after_s: None,
        refused_or_reset: e.is_refused_or_reset(),
        detail: e.to_string(),
    })?;
    if response.status == 200 {
        return Ok(response);
    }
    let code = serde_json::from_slice::<ErrorBody>(&response.body)
        .map(|body| body.error)
        .unwrap_or_else(|_| format!("http_{}", response.status));
    Err(Failure {
        detail: format!("HTTP {} {code}", response.status),
        retry_after_s: response.header("retry-after").and_then(|v| v.parse().ok()),
        refused_or_reset: false,
        code,
    })
}

/// Storage's answer to an update check.
#[derive(Debug, PartialEq)]
enum Update {
    /// The version is current.
    Current,
    /// A newer version exists.
    Available(Manifest),
}

/// What to download for an update.
#[derive(Debug, PartialEq)]
struct Manifest {
    version: String,
    files: Vec<FileEntry>,
    endpoints: Vec<SocketAddr>,
    epoch: u64,
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
    use super::*;

    fn response(status: u16, body: &str) -> Response {
        Response {
            status,
            headers: vec![("retry-after".to_string(), "1".to_string())],
            body: body.into(),
        }
    }

    #[test]
    fn client_seeds_are_reproducible_and_distinct() {
        assert_eq!(client_seed(42, 7), client_seed(42, 7));
        let seeds: std::collections::HashSet<u64> =
            (0..10_000).map(|id| client_seed(42, id)).collect();
        assert_eq!(seeds.len(), 10_000);
        assert_ne!(client_seed(42, 0), client_seed(43, 0));
    }

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
        assert_eq!(manifest.endpoints[0].port(), 7120);
        assert_eq!(manifest.files[0].path, "maps/a.bin");
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
    fn error_answers_yield_their_code() {
        let unavailable = successful(Ok(response(
            503,
            r#"{"error": "unavailable", "detail": "x"}"#,
        )));
        let failure = unavailable.unwrap_err();
        assert_eq!(failure.code, "unavailable");
        assert_eq!(failure.retry_after_s, Some(1));
        let opaque = successful(Ok(response(502, "<html>"))).unwrap_err();
        assert_eq!(opaque.code, "http_502");
        let timeout = successful(Err(HttpError::Timeout)).unwrap_err();
        assert_eq!(timeout.code, "timeout");
    }

    #[test]
    fn sha256_is_lower_case_hex() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
