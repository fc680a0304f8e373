//! The TLS side of the HTTP client: one request per connection, for profile.
//!
//! Every login, refresh and logout is a new TCP connection from the client's own source
//! address, a TLS handshake that verifies profile's certificate, one request sent with
//! `Connection: close`, its answer, and a close_notify: the scenario's "SSL Connection
//! End". The certificate is the topology's own self-signed one (`DIR/tls/cert.pem`),
//! trusted as the only root, with the system's roots disabled, so only that server can
//! answer a login.

use super::http::wire::exchange;
use super::http::{connect, HttpError, Request, Response, REQUEST_TIMEOUT_MS};
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
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// The certificate file could not be read.
    #[error("cannot read profile's certificate {}", path.display())]
    Read {
        /// The certificate file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The certificate is not PEM, or the TLS library refused it.
    #[error("profile's certificate {} is unusable", path.display())]
    Certificate {
        /// The certificate file.
        path: PathBuf,
        /// The TLS library's error.
        #[source]
        source: native_tls::Error,
    },
}

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
        TlsClient::from_pem(&pem).map_err(|source| TlsSetupError::Certificate {
            path: path.to_path_buf(),
            source,
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
        let tcp = connect(local_ip, addr).await.map_err(HttpError::Connect)?;
        let mut stream = self
            .connector
            .connect(TLS_DOMAIN, tcp)
            .await
            .map_err(HttpError::Tls)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// A self-signed certificate for `localhost` and 127.0.0.1 and its key, in PEM, made
    /// by the `openssl` command as profile's own is made by the server.
    fn self_signed(dir: &Path, name: &str) -> (Vec<u8>, Vec<u8>) {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}.key"));
        let status = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=localhost",
            ])
            .args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"])
            .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("the openssl command makes the test certificate");
        assert!(status.success(), "openssl req failed");
        (std::fs::read(cert).unwrap(), std::fs::read(key).unwrap())
    }

    /// A TLS server that answers one request with a login grant and returns what it
    /// read, up to the client's close, and the client's address.
    async fn serve_one(
        cert: &[u8],
        key: &[u8],
    ) -> (SocketAddr, tokio::task::JoinHandle<(String, SocketAddr)>) {
        let identity = native_tls::Identity::from_pkcs8(cert, key).unwrap();
        let acceptor: tokio_native_tls::TlsAcceptor =
            native_tls::TlsAcceptor::new(identity).unwrap().into();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = tokio::spawn(async move {
            let (tcp, peer) = listener.accept().await.unwrap();
            let Ok(mut stream) = acceptor.accept(tcp).await else {
                return (String::new(), peer);
            };
            let mut request = Vec::new();
            while !request.ends_with(b"}") {
                let mut chunk = [0; 1024];
                let n = stream.read(&mut chunk).await.unwrap();
                assert!(n > 0, "the client closed before its body");
                request.extend_from_slice(&chunk[..n]);
            }
            let body = r#"{"token": "ab", "lobby": "127.0.0.1:7300", "idle_timeout_s": 600}"#;
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(answer.as_bytes()).await.unwrap();
            // The client's close_notify ends the stream cleanly.
            let mut rest = Vec::new();
            stream.read_to_end(&mut rest).await.unwrap();
            (String::from_utf8(request).unwrap(), peer)
        });
        (addr, served)
    }

    #[tokio::test]
    async fn one_request_over_verified_tls_from_the_chosen_address() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed(dir.path(), "profile");
        let (addr, served) = serve_one(&cert, &key).await;
        let client = TlsClient::from_pem(&cert).unwrap();
        let local: IpAddr = "127.0.0.5".parse().unwrap();
        let body = br#"{"id": "user1", "password": "pw-user1"}"#;
        let request = Request::post("/v1/login").json(body);
        let response = client.send_once(Some(local), addr, &request).await.unwrap();
        assert_eq!(response.status, 200);
        assert!(response.body.starts_with(br#"{"token""#));
        let (seen, peer) = served.await.unwrap();
        assert!(seen.starts_with("POST /v1/login HTTP/1.1\r\n"), "{seen}");
        assert!(seen.contains("Connection: close"), "{seen}");
        assert_eq!(peer.ip(), local);
    }

    #[tokio::test]
    async fn a_server_with_another_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (trusted, _) = self_signed(dir.path(), "trusted");
        let (other_cert, other_key) = self_signed(dir.path(), "impostor");
        let (addr, _served) = serve_one(&other_cert, &other_key).await;
        let client = TlsClient::from_pem(&trusted).unwrap();
        let error = client
            .send_once(None, addr, &Request::post("/v1/login"))
            .await
            .unwrap_err();
        assert_eq!(error.code(), "tls", "{error}");
    }

    #[test]
    fn an_unreadable_certificate_names_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("tls/cert.pem");
        let error = TlsClient::from_pem_file(&missing).unwrap_err().to_string();
        assert!(error.contains("tls/cert.pem"), "{error}");
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate").unwrap();
        let error = TlsClient::from_pem_file(&garbage).unwrap_err();
        assert!(
            matches!(error, TlsSetupError::Certificate { .. }),
            "{error}"
        );
    }
}
