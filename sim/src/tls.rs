//! The TLS side of the HTTP client: one request per connection, for profile.
//!
//! Every login, refresh and logout is a new TCP connection from the client's own source
//! address, a TLS handshake that verifies profile's certificate, one request sent with
//! `Connection: close`, its answer, and a close_notify: the scenario's "SSL Connection
//! End". The certificate is the topology's own self-signed one (`DIR/tls/cert.pem`),
//! trusted as the only root, with the system's roots disabled, so only that server can
//! answer a login.

use crate::http::wire::exchange;
use crate::http::{connect, HttpError, Request, Response, REQUEST_TIMEOUT_MS};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Where profile's certificate lives, relative to the folder of topology.json.
pub const TLS_CERT_FILE: &str = "tls/cert.pem";
/// The name the certificate is issued for, and that the client verifies.
pub const TLS_DOMAIN: &str = "localhost";
/// The close_notify after an answer is one small write; if it has not gone out after
/// this, the answer is kept and the connection dropped anyway.
const TLS_SHUTDOWN_MS: u64 = 1_000;

/// Why the TLS client could not be set up.
#[derive(Debug)]
pub enum TlsSetupError {
    /// The certificate file could not be read.
    Read {
        /// The certificate file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The certificate is not PEM, or the TLS library refused it.
    Certificate {
        /// The certificate file.
        path: PathBuf,
        /// The TLS library's message.
        message: String,
    },
}

impl fmt::Display for TlsSetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsSetupError::Read { path, source } => {
                write!(f, "cannot read profile's certificate {}: {source}", path.display())
            }
            TlsSetupError::Certificate { path, message } => {
                write!(f, "profile's certificate {}: {message}", path.display())
            }
        }
    }
}

impl std::error::Error for TlsSetupError {}

/// A TLS client that trusts exactly one certificate; cheap to clone and share.
#[derive(Clone)]
pub struct TlsClient {
    connector: tokio_native_tls::TlsConnector,
}

impl fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClient").finish_non_exhaustive()
    }
}

impl TlsClient {
    /// A client that trusts only the PEM certificate in `path`.
    pub fn from_pem_file(path: &Path) -> Result<TlsClient, TlsSetupError> {
        let pem = std::fs::read(path).map_err(|source| TlsSetupError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        TlsClient::from_pem(&pem).map_err(|e| TlsSetupError::Certificate {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// A client that trusts only the PEM certificate `pem`.
    pub fn from_pem(pem: &[u8]) -> Result<TlsClient, native_tls::Error> {
        let root = native_tls::Certificate::from_pem(pem)?;
        let connector = native_tls::TlsConnector::builder()
            .add_root_certificate(root)
            .disable_built_in_roots(true)
            // The contract is TLS 1.2 or later; an older handshake is a broken server.
            .min_protocol_version(Some(native_tls::Protocol::Tlsv12))
            .build()?;
        Ok(TlsClient {
            connector: connector.into(),
        })
    }

    /// Connects to `addr` from `local_ip`, verifies the certificate for [`TLS_DOMAIN`],
    /// sends `request`, reads the answer and closes the connection.
    pub async fn send_once(
        &self,
        local_ip: Option<IpAddr>,
        addr: SocketAddr,
        request: &Request<'_>,
    ) -> Result<Response, HttpError> {
        let deadline = Duration::from_millis(REQUEST_TIMEOUT_MS);
        tokio::time::timeout(deadline, self.send_once_untimed(local_ip, addr, request))
            .await
            .unwrap_or(Err(HttpError::Timeout))
    }

    async fn send_once_untimed(
        &self,
        local_ip: Option<IpAddr>,
        addr: SocketAddr,
        request: &Request<'_>,
    ) -> Result<Response, HttpError> {
        let tcp = connect(local_ip, addr).await?;
        let mut stream = self
            .connector
            .connect(TLS_DOMAIN, tcp)
            .await
            .map_err(|e| HttpError::Tls(e.to_string()))?;
        let mut buf = Vec::new();
        let (response, _) = exchange(&mut stream, &request.encode(addr, true), &mut buf)
            .await
            .map_err(|e| e.error)?;
        // The answer is complete; a close_notify that fails or stalls changes nothing.
        let shutdown = Duration::from_millis(TLS_SHUTDOWN_MS);
        let _ = tokio::time::timeout(shutdown, stream.shutdown()).await;
        Ok(response)
    }
}
