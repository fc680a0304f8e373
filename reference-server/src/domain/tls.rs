//! The profile server's TLS identity: a self-signed certificate for `localhost` and
//! `127.0.0.1`, created on first start at `DIR/tls/cert.pem` (key beside it, mode 0600),
//! and the acceptor that serves TLS 1.2 or newer with it.
//!
//! The key is ECDSA P-256: its handshakes cost a fraction of an RSA-2048 signature, and
//! the handshake runs on the event loop.

use std::fs;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use native_tls::{Identity, Protocol, TlsAcceptor};
use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::x509::extension::{BasicConstraints, ExtendedKeyUsage, SubjectAlternativeName};
use openssl::x509::{X509NameBuilder, X509};

/// Validity of the self-signed certificate; a test certificate that outlives any run.
const CERT_VALID_DAYS: u32 = 825;

/// Why the TLS identity could not be made or loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Reading or writing a file failed.
    #[error("{}: {}", .0.display(), .1)]
    Io(PathBuf, #[source] io::Error),
    /// OpenSSL refused to build the key or certificate.
    #[error("tls: {0}")]
    Openssl(#[from] openssl::error::ErrorStack),
    /// The TLS library refused the identity or the acceptor settings.
    #[error("tls: {0}")]
    NativeTls(#[from] native_tls::Error),
}

/// Where the certificate lives in a data folder.
pub fn cert_path(data_dir: &Path) -> PathBuf {
    data_dir.join("tls").join("cert.pem")
}

fn key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("tls").join("key.pem")
}

/// Creates the certificate and key unless both exist.
pub fn ensure_identity(data_dir: &Path) -> Result<(), TlsError> {
    let (cert, key) = (cert_path(data_dir), key_path(data_dir));
    if cert.exists() && key.exists() {
        return Ok(());
    }
    let dir = data_dir.join("tls");
    fs::create_dir_all(&dir).map_err(|e| TlsError::Io(dir.clone(), e))?;
    let (cert_pem, key_pem) = self_signed()?;
    // The key is written first and only readable by us; the certificate is public.
    write_file(&key, &key_pem, 0o600)?;
    write_file(&cert, &cert_pem, 0o644)
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    use std::io::Write;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(|e| TlsError::Io(path.into(), e))?;
    file.write_all(bytes)
        .map_err(|e| TlsError::Io(path.into(), e))
}

fn self_signed() -> Result<(Vec<u8>, Vec<u8>), openssl::error::ErrorStack> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    let key = PKey::from_ec_key(EcKey::generate(&group)?)?;
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_text("CN", "localhost")?;
    name.append_entry_by_text("O", "CatWar reference server")?;
    let name = name.build();
    let mut serial = BigNum::new()?;
    serial.rand(127, MsbOption::MAYBE_ZERO, false)?;
    let mut cert = X509::builder()?;
    cert.set_version(2)?;
    let serial = serial.to_asn1_integer()?;
    cert.set_serial_number(&serial)?;
    cert.set_subject_name(&name)?;
    cert.set_issuer_name(&name)?;
    cert.set_pubkey(&key)?;
    let (not_before, not_after) = (
        Asn1Time::days_from_now(0)?,
        Asn1Time::days_from_now(CERT_VALID_DAYS)?,
    );
    cert.set_not_before(&not_before)?;
    cert.set_not_after(&not_after)?;
    // Not a CA: clients trust this exact certificate, nothing it could sign.
    cert.append_extension(BasicConstraints::new().critical().build()?)?;
    cert.append_extension(ExtendedKeyUsage::new().server_auth().build()?)?;
    let san = SubjectAlternativeName::new()
        .dns("localhost")
        .ip("127.0.0.1")
        .build(&cert.x509v3_context(None, None))?;
    cert.append_extension(san)?;
    cert.sign(&key, MessageDigest::sha256())?;
    Ok((cert.build().to_pem()?, key.private_key_to_pem_pkcs8()?))
}

/// The acceptor for the identity in `data_dir`, TLS 1.2 or newer.
pub fn acceptor(data_dir: &Path) -> Result<TlsAcceptor, TlsError> {
    let (cert, key) = (cert_path(data_dir), key_path(data_dir));
    let cert_pem = fs::read(&cert).map_err(|e| TlsError::Io(cert.clone(), e))?;
    let key_pem = fs::read(&key).map_err(|e| TlsError::Io(key.clone(), e))?;
    let identity = Identity::from_pkcs8(&cert_pem, &key_pem)?;
    TlsAcceptor::builder(identity)
        .min_protocol_version(Some(Protocol::Tlsv12))
        .build()
        .map_err(TlsError::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_created_once_and_names_localhost_and_loopback() {
        let dir = tempfile::tempdir().unwrap();
        ensure_identity(dir.path()).unwrap();
        let first = fs::read(cert_path(dir.path())).unwrap();
        ensure_identity(dir.path()).unwrap();
        assert_eq!(first, fs::read(cert_path(dir.path())).unwrap());
        let cert = X509::from_pem(&first).unwrap();
        let names: Vec<String> = cert
            .subject_alt_names()
            .unwrap()
            .iter()
            .map(|n| {
                n.dnsname()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("{:?}", n.ipaddress().unwrap()))
            })
            .collect();
        assert_eq!(names, ["localhost", "[127, 0, 0, 1]"]);
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(key_path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "key readable by others");
        acceptor(dir.path()).unwrap();
    }

    #[test]
    fn errors_keep_the_file_and_the_library_cause() {
        use std::error::Error as _;
        let dir = tempfile::tempdir().unwrap();
        let err = acceptor(dir.path()).err().expect("no identity to load");
        let cert = cert_path(dir.path());
        assert!(
            err.to_string()
                .starts_with(&format!("{}: ", cert.display())),
            "{err}"
        );
        assert!(err.source().is_some_and(|e| e.is::<io::Error>()));
        fs::create_dir_all(dir.path().join("tls")).unwrap();
        fs::write(&cert, "not pem").unwrap();
        fs::write(key_path(dir.path()), "not pem").unwrap();
        let err = acceptor(dir.path()).err().expect("no identity to load");
        let cause = err.source().expect("the TLS library's error is the source");
        assert!(cause.is::<native_tls::Error>());
        assert_eq!(err.to_string(), format!("tls: {cause}"));
    }
}
