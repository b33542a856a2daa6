//! TLS certificates: a development certificate made and kept under a directory,
//! or PEM files for production.
//!
//! The development certificate follows the rules browsers apply to certificates
//! pinned by hash (`serverCertificateHashes`): X.509 v3, ECDSA P-256, valid for at
//! most 14 days, starting now or earlier. It is reused across restarts while it
//! has more than [`DEV_RENEW_BEFORE`] (or the configured margin) left, and made
//! anew otherwise. Its SHA-256 is printed at start and written beside it for
//! clients to read. While the server runs, [`CertManager`] renews it before its
//! end and reloads changed PEM files, without a restart.
//!
//! The certificate and key are kept in one file, replaced by an atomic rename,
//! so servers starting at once on the same directory never read a certificate
//! with another one's key. Every certificate, PEM or development, is checked
//! against its key here, so a bad pair is a clear start-up error and never a
//! panic deeper down.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use wtransport::tls::Certificate;
use wtransport::tls::rustls;
use wtransport::tls::rustls::pki_types::pem::PemObject;
use wtransport::tls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use wtransport::tls::rustls::server::ResolvesServerCert;
use wtransport::tls::rustls::sign::CertifiedKey;

mod manager;
pub use manager::{CertManager, RotationSettings};

/// Longest validity browsers accept for a hash-pinned certificate.
pub const DEV_VALIDITY: Duration = Duration::from_secs(14 * 24 * 60 * 60);
/// A development certificate with less than this left is replaced at start.
pub const DEV_RENEW_BEFORE: Duration = Duration::from_secs(2 * 24 * 60 * 60);

/// Certificate, key and end of validity, in one file.
const DEV_IDENTITY_FILE: &str = "dev-identity.pem";
/// The certificate alone, for tools that want it.
const DEV_CERT_FILE: &str = "dev-cert.pem";
const DEV_HASH_FILE: &str = "dev-cert.sha256";
const NOT_AFTER_LABEL: &str = "chorus-dev-not-after:";

/// Where the server's certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateSource {
    /// A development certificate kept in this directory.
    Development { dir: PathBuf },
    /// A certificate chain and private key in PEM files.
    Pem { cert: PathBuf, key: PathBuf },
}

/// Why a certificate could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("could not generate a development certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path}: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error("the certificate and key cannot be used: {0}")]
    Invalid(String),
}

/// A loaded certificate, checked against its key.
#[derive(Debug, Clone)]
pub struct ServerCertificate {
    /// The chain and the signing key, as rustls serves them.
    pub key: Arc<CertifiedKey>,
    /// SHA-256 of the leaf certificate (DER), as browsers pin it.
    pub sha256: [u8; 32],
    /// End of validity, where known (always for development certificates).
    pub not_after: Option<SystemTime>,
}

fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl ServerCertificate {
    /// Checks the pair (the key parses and matches the leaf) for use in TLS.
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        not_after: Option<SystemTime>,
    ) -> Result<Self, CertError> {
        let leaf = chain
            .first()
            .ok_or_else(|| CertError::Invalid("no certificate given".into()))?;
        let sha256 = *Certificate::from_der(leaf.to_vec())
            .map_err(|e| CertError::Invalid(e.to_string()))?
            .hash()
            .as_ref();
        let key = CertifiedKey::from_der(chain, key, &crypto_provider())
            .map_err(|e| CertError::Invalid(e.to_string()))?;
        Ok(ServerCertificate {
            key: Arc::new(key),
            sha256,
            not_after,
        })
    }

    /// The hash as lowercase hex.
    pub fn sha256_hex(&self) -> String {
        hex(&self.sha256)
    }

    /// A QUIC (WebTransport) TLS configuration serving this certificate only.
    pub fn quic_config(&self) -> rustls::ServerConfig {
        quic_config(Arc::new(rustls::sign::SingleCertAndKey::from(
            self.key.clone(),
        )))
    }
}

/// TLS 1.3 server configuration with the WebTransport ALPN, taking the
/// certificate from `resolver` at every handshake.
pub fn quic_config(resolver: Arc<dyn ResolvesServerCert>) -> rustls::ServerConfig {
    let mut tls = rustls::ServerConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("the ring provider supports TLS 1.3")
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    tls.alpn_protocols = vec![wtransport::tls::WEBTRANSPORT_ALPN.to_vec()];
    tls
}

/// TLS 1.2/1.3 server configuration for the TCP listener (HTTP/1.1), taking
/// the certificate from `resolver` at every handshake.
pub fn tcp_config(resolver: Arc<dyn ResolvesServerCert>) -> rustls::ServerConfig {
    let mut tls = rustls::ServerConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("the ring provider supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    tls
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Loads (or, for development, makes) the certificate, with the default
/// development validity and renewal margin.
pub fn load(source: &CertificateSource) -> Result<ServerCertificate, CertError> {
    load_with(source, &RotationSettings::default(), SystemTime::now())
}

/// Loads (or, for development, makes) the certificate: a development
/// certificate valid for `settings.dev_validity`, reused while it has at least
/// `settings.rotate_before` left.
pub fn load_with(
    source: &CertificateSource,
    settings: &RotationSettings,
    now: SystemTime,
) -> Result<ServerCertificate, CertError> {
    match source {
        CertificateSource::Development { dir } => {
            load_or_make_dev_with(dir, now, settings.dev_validity, settings.rotate_before)
        }
        CertificateSource::Pem { cert, key } => {
            let pem_err = |path: &Path| {
                let path = path.to_owned();
                move |e: rustls::pki_types::pem::Error| CertError::Pem {
                    path,
                    reason: e.to_string(),
                }
            };
            let chain = CertificateDer::pem_file_iter(cert)
                .map_err(pem_err(cert))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(pem_err(cert))?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(pem_err(key))?;
            ServerCertificate::new(chain, key, None)
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CertError + '_ {
    move |source| CertError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The development certificate in `dir`, made anew when missing, unreadable,
/// not matching its key, or within [`DEV_RENEW_BEFORE`] of its end.
pub fn load_or_make_dev(dir: &Path, now: SystemTime) -> Result<ServerCertificate, CertError> {
    load_or_make_dev_with(dir, now, DEV_VALIDITY, DEV_RENEW_BEFORE)
}

/// The development certificate in `dir`, made anew (valid for `validity`)
/// when missing, unreadable, not matching its key, or within `renew_before`
/// of its end. A certificate another server on the same directory has just
/// renewed is taken as it is.
pub fn load_or_make_dev_with(
    dir: &Path,
    now: SystemTime,
    validity: Duration,
    renew_before: Duration,
) -> Result<ServerCertificate, CertError> {
    if let Some(existing) = read_dev(dir, now, renew_before) {
        return Ok(existing);
    }
    make_dev(dir, now, validity)
}

fn read_dev(dir: &Path, now: SystemTime, renew_before: Duration) -> Option<ServerCertificate> {
    let pem = std::fs::read(dir.join(DEV_IDENTITY_FILE)).ok()?;
    let not_after_secs: u64 = std::str::from_utf8(&pem)
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix(NOT_AFTER_LABEL))?
        .trim()
        .parse()
        .ok()?;
    let not_after = UNIX_EPOCH + Duration::from_secs(not_after_secs);
    if not_after.duration_since(now).ok()? < renew_before {
        tracing::info!("development certificate is near its end; making a new one");
        return None;
    }
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    let key = PrivateKeyDer::from_pem_slice(&pem).ok()?;
    match ServerCertificate::new(chain, key, Some(not_after)) {
        Ok(cert) => Some(cert),
        Err(e) => {
            tracing::warn!(error = %e, "development certificate unusable; making a new one");
            None
        }
    }
}

fn make_dev(
    dir: &Path,
    now: SystemTime,
    validity: Duration,
) -> Result<ServerCertificate, CertError> {
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::new(vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ])?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "Chorus development certificate");
    params.distinguished_name = name;
    // X.509 times are whole seconds. Start a minute ago (a tenth of the
    // validity when that is short), so a client whose clock is slightly behind
    // accepts it; the whole span stays within `validity`.
    let validity = Duration::from_secs(validity.as_secs().clamp(1, DEV_VALIDITY.as_secs()));
    let backdate = Duration::from_secs(60).min(Duration::from_secs(validity.as_secs() / 10));
    let now_secs =
        UNIX_EPOCH + Duration::from_secs(now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()));
    let not_before = now_secs - backdate;
    let not_after = not_before + validity;
    params.not_before = to_offset(not_before);
    params.not_after = to_offset(not_after);
    let cert = params.self_signed(&key)?;
    let loaded = ServerCertificate::new(
        vec![cert.der().clone()],
        PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| CertError::Invalid(e.into()))?,
        Some(not_after),
    )?;

    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let not_after_secs = not_after
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let identity = format!(
        "{NOT_AFTER_LABEL} {not_after_secs}\n{}{}",
        cert.pem(),
        key.serialize_pem()
    );
    write_atomically(&dir.join(DEV_IDENTITY_FILE), identity.as_bytes(), true)?;
    write_atomically(&dir.join(DEV_CERT_FILE), cert.pem().as_bytes(), false)?;
    write_atomically(
        &dir.join(DEV_HASH_FILE),
        format!("{}\n", loaded.sha256_hex()).as_bytes(),
        false,
    )?;
    tracing::info!(dir = %dir.display(), "made a new development certificate");
    Ok(loaded)
}

fn to_offset(t: SystemTime) -> time::OffsetDateTime {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    time::OffsetDateTime::from_unix_timestamp(secs as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// Writes a sibling temporary file, then renames it over `path`: readers see
/// the old file or the new one, never a mix.
fn write_atomically(path: &Path, contents: &[u8], private: bool) -> Result<(), CertError> {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let unique = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp-{}-{unique}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let result = (|| {
        let mut file = options.open(&tmp).map_err(io_err(&tmp))?;
        file.write_all(contents).map_err(io_err(&tmp))?;
        file.sync_all().map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, path).map_err(io_err(path))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Where the development certificate's hash is written, for clients to read.
pub fn dev_hash_file(dir: &Path) -> PathBuf {
    dir.join(DEV_HASH_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("chorus-cert-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn dev_certificate_is_made_once_and_reused_while_valid() {
        let dir = temp_dir("reuse");
        let now = SystemTime::now();
        let first = load_or_make_dev(&dir, now).expect("made");
        let again = load_or_make_dev(&dir, now + Duration::from_secs(3600)).expect("reused");
        assert_eq!(first.sha256, again.sha256);
        let written = std::fs::read_to_string(dev_hash_file(&dir)).expect("hash file");
        assert_eq!(written.trim(), first.sha256_hex());
        // Validity is 14 days at most, as browsers require for hash pinning.
        let not_after = first.not_after.expect("known");
        assert!(not_after.duration_since(now).expect("in future") <= DEV_VALIDITY);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join(DEV_IDENTITY_FILE))
                .expect("identity")
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "the key is readable by its owner only");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn dev_certificate_near_its_end_is_replaced() {
        let dir = temp_dir("renew");
        let now = SystemTime::now();
        let first = load_or_make_dev(&dir, now).expect("made");
        let late = now + DEV_VALIDITY - DEV_RENEW_BEFORE + Duration::from_secs(60);
        let second = load_or_make_dev(&dir, late).expect("renewed");
        assert_ne!(first.sha256, second.sha256);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn unreadable_or_mismatched_dev_files_are_replaced_not_fatal() {
        let dir = temp_dir("corrupt");
        let now = SystemTime::now();
        load_or_make_dev(&dir, now).expect("made");
        std::fs::write(dir.join(DEV_IDENTITY_FILE), "garbage").expect("write");
        let again = load_or_make_dev(&dir, now).expect("made anew");
        assert_eq!(
            std::fs::read_to_string(dev_hash_file(&dir))
                .expect("hash")
                .trim(),
            again.sha256_hex()
        );
        // A certificate with someone else's key is refused and replaced.
        let identity = std::fs::read_to_string(dir.join(DEV_IDENTITY_FILE)).expect("read");
        let other = temp_dir("corrupt-other");
        load_or_make_dev(&other, now).expect("made");
        let other_identity = std::fs::read_to_string(other.join(DEV_IDENTITY_FILE)).expect("read");
        let key_start = |s: &str| s.find("-----BEGIN PRIVATE KEY").expect("key block");
        let mixed = format!(
            "{}{}",
            &identity[..key_start(&identity)],
            &other_identity[key_start(&other_identity)..]
        );
        std::fs::write(dir.join(DEV_IDENTITY_FILE), mixed).expect("write");
        let replaced = load_or_make_dev(&dir, now).expect("made anew");
        assert_ne!(replaced.sha256, again.sha256);
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&other);
    }

    #[test]
    fn a_pem_pair_that_does_not_match_is_a_clear_error() {
        let a = temp_dir("pem-a");
        let b = temp_dir("pem-b");
        load_or_make_dev(&a, SystemTime::now()).expect("made");
        load_or_make_dev(&b, SystemTime::now()).expect("made");
        let source = CertificateSource::Pem {
            cert: a.join(DEV_CERT_FILE),
            key: b.join(DEV_IDENTITY_FILE),
        };
        let err = load(&source).expect_err("mismatched key");
        assert!(matches!(err, CertError::Invalid(_)), "{err}");
        let ok = CertificateSource::Pem {
            cert: a.join(DEV_CERT_FILE),
            key: a.join(DEV_IDENTITY_FILE),
        };
        load(&ok).expect("matching pair loads");
        let missing = CertificateSource::Pem {
            cert: a.join("nope.pem"),
            key: a.join(DEV_IDENTITY_FILE),
        };
        assert!(matches!(load(&missing), Err(CertError::Pem { .. })));
        let _ = std::fs::remove_dir_all(&a);
        let _ = std::fs::remove_dir_all(&b);
    }
}
