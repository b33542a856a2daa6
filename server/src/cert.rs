//! TLS certificates: a development certificate made and kept under a directory,
//! or PEM files for production.
//!
//! The development certificate follows the rules browsers apply to certificates
//! pinned by hash (`serverCertificateHashes`): X.509 v3, ECDSA P-256, valid for at
//! most 14 days, starting now or earlier. It is reused across restarts while it
//! has more than [`DEV_RENEW_BEFORE`] left, and made anew otherwise. Its SHA-256
//! is printed at start and written beside it for clients to read.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use wtransport::Identity;
use wtransport::tls::{Certificate, CertificateChain, PrivateKey};

/// Longest validity browsers accept for a hash-pinned certificate.
pub const DEV_VALIDITY: Duration = Duration::from_secs(14 * 24 * 60 * 60);
/// A development certificate with less than this left is replaced at start.
pub const DEV_RENEW_BEFORE: Duration = Duration::from_secs(2 * 24 * 60 * 60);

const DEV_CERT_FILE: &str = "dev-cert.pem";
const DEV_KEY_FILE: &str = "dev-key.pem";
const DEV_HASH_FILE: &str = "dev-cert.sha256";
const DEV_EXPIRY_FILE: &str = "dev-cert.not-after";

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
    #[error("could not load PEM certificate {cert} and key {key}: {reason}")]
    Pem {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("the certificate is invalid: {0}")]
    Invalid(String),
}

/// A loaded certificate.
#[derive(Debug)]
pub struct ServerCertificate {
    pub identity: Identity,
    /// SHA-256 of the leaf certificate (DER), as browsers pin it.
    pub sha256: [u8; 32],
    /// End of validity, where known (always for development certificates).
    pub not_after: Option<SystemTime>,
}

impl ServerCertificate {
    /// The hash as lowercase hex.
    pub fn sha256_hex(&self) -> String {
        hex(&self.sha256)
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Loads (or, for development, makes) the certificate.
pub async fn load(source: &CertificateSource) -> Result<ServerCertificate, CertError> {
    match source {
        CertificateSource::Development { dir } => load_or_make_dev(dir, SystemTime::now()).await,
        CertificateSource::Pem { cert, key } => {
            let identity =
                Identity::load_pemfiles(cert, key)
                    .await
                    .map_err(|e| CertError::Pem {
                        cert: cert.clone(),
                        key: key.clone(),
                        reason: e.to_string(),
                    })?;
            let leaf = identity
                .certificate_chain()
                .as_slice()
                .first()
                .ok_or_else(|| CertError::Invalid("the PEM file holds no certificate".into()))?;
            let sha256 = *leaf.hash().as_ref();
            Ok(ServerCertificate {
                identity,
                sha256,
                not_after: None,
            })
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CertError + '_ {
    move |source| CertError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The development certificate in `dir`, made anew when missing, unreadable or
/// within [`DEV_RENEW_BEFORE`] of its end.
pub async fn load_or_make_dev(dir: &Path, now: SystemTime) -> Result<ServerCertificate, CertError> {
    if let Some(existing) = read_dev(dir, now).await {
        return Ok(existing);
    }
    make_dev(dir, now)
}

async fn read_dev(dir: &Path, now: SystemTime) -> Option<ServerCertificate> {
    let not_after_secs: u64 = std::fs::read_to_string(dir.join(DEV_EXPIRY_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let not_after = UNIX_EPOCH + Duration::from_secs(not_after_secs);
    if not_after.duration_since(now).ok()? < DEV_RENEW_BEFORE {
        tracing::info!("development certificate is near its end; making a new one");
        return None;
    }
    let identity = Identity::load_pemfiles(dir.join(DEV_CERT_FILE), dir.join(DEV_KEY_FILE))
        .await
        .ok()?;
    let sha256 = *identity
        .certificate_chain()
        .as_slice()
        .first()?
        .hash()
        .as_ref();
    Some(ServerCertificate {
        identity,
        sha256,
        not_after: Some(not_after),
    })
}

fn identity_from_der(
    cert_der: Vec<u8>,
    key_der: Vec<u8>,
    not_after: Option<SystemTime>,
) -> Result<ServerCertificate, CertError> {
    let certificate =
        Certificate::from_der(cert_der).map_err(|e| CertError::Invalid(e.to_string()))?;
    let sha256 = *certificate.hash().as_ref();
    let identity = Identity::new(
        CertificateChain::single(certificate),
        PrivateKey::from_der_pkcs8(key_der),
    );
    Ok(ServerCertificate {
        identity,
        sha256,
        not_after,
    })
}

fn make_dev(dir: &Path, now: SystemTime) -> Result<ServerCertificate, CertError> {
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
    // Start a minute ago, so a client whose clock is slightly behind accepts it.
    let not_before = now - Duration::from_secs(60);
    let not_after = not_before + DEV_VALIDITY;
    params.not_before = to_offset(not_before);
    params.not_after = to_offset(not_after);
    let cert = params.self_signed(&key)?;

    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    write_file(&dir.join(DEV_CERT_FILE), cert.pem().as_bytes(), false)?;
    write_file(
        &dir.join(DEV_KEY_FILE),
        key.serialize_pem().as_bytes(),
        true,
    )?;
    let not_after_secs = not_after
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let loaded = identity_from_der(cert.der().to_vec(), key.serialize_der(), Some(not_after))?;
    write_file(
        &dir.join(DEV_EXPIRY_FILE),
        format!("{not_after_secs}\n").as_bytes(),
        false,
    )?;
    write_file(
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

fn write_file(path: &Path, contents: &[u8], private: bool) -> Result<(), CertError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(path).map_err(io_err(path))?;
    file.write_all(contents).map_err(io_err(path))
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

    #[tokio::test]
    async fn dev_certificate_is_made_once_and_reused_while_valid() {
        let dir = temp_dir("reuse");
        let now = SystemTime::now();
        let first = load_or_make_dev(&dir, now).await.expect("made");
        let again = load_or_make_dev(&dir, now + Duration::from_secs(3600))
            .await
            .expect("reused");
        assert_eq!(first.sha256, again.sha256);
        let written = std::fs::read_to_string(dev_hash_file(&dir)).expect("hash file");
        assert_eq!(written.trim(), first.sha256_hex());
        // Validity is 14 days at most, as browsers require for hash pinning.
        let not_after = first.not_after.expect("known");
        assert!(not_after.duration_since(now).expect("in future") <= DEV_VALIDITY);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join(DEV_KEY_FILE))
                .expect("key")
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "private key is readable by its owner only");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn dev_certificate_near_its_end_is_replaced() {
        let dir = temp_dir("renew");
        let now = SystemTime::now();
        let first = load_or_make_dev(&dir, now).await.expect("made");
        let late = now + DEV_VALIDITY - DEV_RENEW_BEFORE + Duration::from_secs(60);
        let second = load_or_make_dev(&dir, late).await.expect("renewed");
        assert_ne!(first.sha256, second.sha256);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn unreadable_dev_files_are_replaced_not_fatal() {
        let dir = temp_dir("corrupt");
        let now = SystemTime::now();
        load_or_make_dev(&dir, now).await.expect("made");
        std::fs::write(dir.join(DEV_CERT_FILE), "garbage").expect("write");
        let again = load_or_make_dev(&dir, now).await.expect("made anew");
        assert_eq!(
            std::fs::read_to_string(dev_hash_file(&dir))
                .expect("hash")
                .trim(),
            again.sha256_hex()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
