//! The certificate a running server serves, replaced without a restart.
//!
//! [`CertManager`] holds the current certificate in an `ArcSwap` and is the
//! rustls certificate resolver of both listeners (QUIC and TCP): every TLS
//! handshake reads the current certificate, so a new certificate is served to
//! new connections from the moment it is swapped in, and connections already
//! up keep theirs. The previous certificate stays listed (for `/cert-hash`)
//! for an overlap window after a swap.
//!
//! [`CertManager::run`] is the background task:
//! - development certificate: renewed `rotate_before` ahead of its end (the
//!   identity file is replaced atomically, as at start);
//! - PEM files: their size, modification time (and inode) are polled every
//!   `check_interval`; a changed pair is loaded and checked as at start, and a
//!   pair that does not load or match is logged while the old one stays.

use super::{CertError, CertificateSource, DEV_RENEW_BEFORE, DEV_VALIDITY, ServerCertificate};
use arc_swap::ArcSwap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};
use wtransport::tls::rustls;
use wtransport::tls::rustls::server::{ClientHello, ResolvesServerCert};
use wtransport::tls::rustls::sign::CertifiedKey;

/// When certificates are renewed and how often the files are looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationSettings {
    /// Validity of a development certificate made by the server (at most 14
    /// days, which browsers require for hash pinning).
    pub dev_validity: Duration,
    /// A development certificate is renewed this long before its end (and one
    /// found at start with less left is not reused). The previous certificate
    /// stays listed for this long after a swap, never past its own end.
    pub rotate_before: Duration,
    /// How often PEM files are checked for a change; the longest the renewal
    /// task sleeps between looks at the clock.
    pub check_interval: Duration,
}

impl Default for RotationSettings {
    fn default() -> Self {
        RotationSettings {
            dev_validity: DEV_VALIDITY,
            rotate_before: DEV_RENEW_BEFORE,
            check_interval: Duration::from_secs(5),
        }
    }
}

impl RotationSettings {
    /// Checks the settings against each other and the browsers' rules.
    pub fn validate(&self) -> Result<(), String> {
        if self.dev_validity > DEV_VALIDITY {
            return Err(format!(
                "development certificate validity {:?} is over 14 days, which browsers refuse for pinned certificates",
                self.dev_validity
            ));
        }
        if self.dev_validity < Duration::from_secs(2) {
            return Err(format!(
                "development certificate validity {:?} is below the minimum of 2 s",
                self.dev_validity
            ));
        }
        if self.rotate_before.is_zero() || self.rotate_before >= self.dev_validity {
            return Err(format!(
                "certificate rotation margin {:?} must be above zero and below the development certificate validity {:?}",
                self.rotate_before, self.dev_validity
            ));
        }
        if self.check_interval < Duration::from_millis(10) {
            return Err(format!(
                "certificate check interval {:?} is below the minimum of 10 ms",
                self.check_interval
            ));
        }
        Ok(())
    }
}

/// What is served and listed now.
#[derive(Debug)]
struct Published {
    current: Arc<ServerCertificate>,
    /// The certificate served before the last swap, and until when it is listed.
    previous: Option<(Arc<ServerCertificate>, SystemTime)>,
}

/// Size, modification time and inode of a file; `None` when it cannot be read.
type FileStamp = Option<(u64, Option<SystemTime>, u64)>;

fn stamp(path: &Path) -> FileStamp {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some((meta.len(), meta.modified().ok(), inode))
}

/// The server's certificate, current and previous; see the module docs.
pub struct CertManager {
    source: CertificateSource,
    settings: RotationSettings,
    published: ArcSwap<Published>,
    rotations: AtomicU64,
    failures: AtomicU64,
}

impl std::fmt::Debug for CertManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertManager")
            .field("source", &self.source)
            .field("settings", &self.settings)
            .field("current", &self.current().sha256_hex())
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for CertManager {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.published.load().current.key.clone())
    }
}

impl CertManager {
    /// Loads (or makes) the first certificate; a bad one is an error here.
    pub fn load(
        source: CertificateSource,
        settings: RotationSettings,
    ) -> Result<Arc<CertManager>, CertError> {
        let now = SystemTime::now();
        let certificate = super::load_with(&source, &settings, now)?;
        Ok(Arc::new(CertManager {
            source,
            settings,
            published: ArcSwap::from_pointee(Published {
                current: Arc::new(certificate),
                previous: None,
            }),
            rotations: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }))
    }

    /// The certificate new connections get.
    pub fn current(&self) -> Arc<ServerCertificate> {
        self.published.load().current.clone()
    }

    /// The hashes to pin, newest first: the current certificate's, and the
    /// previous one's while the overlap after a swap lasts.
    pub fn hashes(&self, now: SystemTime) -> Vec<[u8; 32]> {
        let published = self.published.load();
        let mut hashes = vec![published.current.sha256];
        if let Some((previous, until)) = &published.previous
            && now < *until
        {
            hashes.push(previous.sha256);
        }
        hashes
    }

    /// How many times a new certificate was swapped in.
    pub fn rotations(&self) -> u64 {
        self.rotations.load(Ordering::Relaxed)
    }

    /// How many renewals or reloads failed (the old certificate stayed).
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// The QUIC (WebTransport) TLS configuration, serving the current certificate.
    pub fn quic_config(self: &Arc<Self>) -> rustls::ServerConfig {
        super::quic_config(self.clone())
    }

    /// The TCP TLS configuration, serving the current certificate.
    pub fn tcp_config(self: &Arc<Self>) -> rustls::ServerConfig {
        super::tcp_config(self.clone())
    }

    /// Serves `certificate` to new connections from now on; the one it
    /// replaces stays listed for the overlap window.
    fn install(&self, certificate: ServerCertificate, now: SystemTime) {
        let old = self.current();
        if old.sha256 == certificate.sha256 {
            return;
        }
        let mut until = now + self.settings.rotate_before;
        if let Some(end) = old.not_after {
            until = until.min(end);
        }
        tracing::info!(
            sha256 = %certificate.sha256_hex(),
            previous = %old.sha256_hex(),
            "serving a new certificate to new connections"
        );
        self.published.store(Arc::new(Published {
            current: Arc::new(certificate),
            previous: Some((old, until)),
        }));
        self.rotations.fetch_add(1, Ordering::Relaxed);
    }

    fn failed(&self, error: &CertError, what: &str) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(error = %error, "{what}; keeping the current certificate");
    }

    /// When the current development certificate is due for renewal.
    fn renew_at(&self) -> Option<SystemTime> {
        let end = self.current().not_after?;
        Some(
            end.checked_sub(self.settings.rotate_before)
                .unwrap_or(SystemTime::UNIX_EPOCH),
        )
    }

    /// Renews the development certificate if it is due; `false` if that failed.
    fn renew_dev_if_due(&self, dir: &Path, now: SystemTime) -> bool {
        if self.renew_at().is_some_and(|at| now < at) {
            return true;
        }
        let settings = &self.settings;
        match super::load_or_make_dev_with(dir, now, settings.dev_validity, settings.rotate_before)
        {
            Ok(certificate) => {
                self.install(certificate, now);
                true
            }
            Err(e) => {
                self.failed(&e, "could not renew the development certificate");
                false
            }
        }
    }

    /// Reloads the PEM pair if either file changed since `seen`.
    fn reload_pem_if_changed(&self, cert: &Path, key: &Path, seen: &mut (FileStamp, FileStamp)) {
        let now_seen = (stamp(cert), stamp(key));
        if now_seen == *seen {
            return;
        }
        *seen = now_seen;
        match super::load_with(&self.source, &self.settings, SystemTime::now()) {
            Ok(certificate) => self.install(certificate, SystemTime::now()),
            Err(e) => self.failed(&e, "the changed certificate files cannot be used"),
        }
    }

    /// Renews or reloads the certificate until the task is dropped.
    pub async fn run(self: Arc<Self>) {
        let every = self.settings.check_interval;
        match self.source.clone() {
            CertificateSource::Development { dir } => {
                let dir = Arc::new(dir);
                let mut wait = Duration::ZERO;
                loop {
                    // Sleep until renewal is due, looking at the clock at least
                    // every check interval (it may jump, or the host sleep).
                    let until_due = self
                        .renew_at()
                        .and_then(|at| at.duration_since(SystemTime::now()).ok())
                        .unwrap_or(Duration::ZERO);
                    tokio::time::sleep(wait.max(until_due.min(every))).await;
                    let me = self.clone();
                    let dir = dir.clone();
                    // Key generation and synced file writes: off the runtime.
                    let renewed = tokio::task::spawn_blocking(move || {
                        me.renew_dev_if_due(&dir, SystemTime::now())
                    })
                    .await
                    .unwrap_or(false);
                    // After a failure, try again one check interval later.
                    wait = if renewed { Duration::ZERO } else { every };
                }
            }
            CertificateSource::Pem { cert, key } => {
                let mut seen = (stamp(&cert), stamp(&key));
                let paths = Arc::new((cert, key));
                loop {
                    tokio::time::sleep(every).await;
                    let me = self.clone();
                    let paths = paths.clone();
                    seen = tokio::task::spawn_blocking(move || {
                        me.reload_pem_if_changed(&paths.0, &paths.1, &mut seen);
                        seen
                    })
                    .await
                    .unwrap_or((None, None));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("chorus-certman-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn short() -> RotationSettings {
        RotationSettings {
            dev_validity: Duration::from_secs(20),
            rotate_before: Duration::from_secs(15),
            check_interval: Duration::from_millis(50),
        }
    }

    #[test]
    fn settings_follow_the_browser_rules() {
        assert_eq!(RotationSettings::default().validate(), Ok(()));
        assert_eq!(short().validate(), Ok(()));
        let too_long = RotationSettings {
            dev_validity: DEV_VALIDITY + Duration::from_secs(1),
            ..RotationSettings::default()
        };
        assert!(too_long.validate().is_err());
        let margin_too_wide = RotationSettings {
            rotate_before: Duration::from_secs(20),
            ..short()
        };
        assert!(margin_too_wide.validate().is_err());
        let no_margin = RotationSettings {
            rotate_before: Duration::ZERO,
            ..short()
        };
        assert!(no_margin.validate().is_err());
        let busy = RotationSettings {
            check_interval: Duration::from_millis(1),
            ..short()
        };
        assert!(busy.validate().is_err());
    }

    #[test]
    fn a_short_development_certificate_is_renewed_when_due_and_the_old_one_listed_for_the_overlap()
    {
        let dir = temp_dir("due");
        let source = CertificateSource::Development { dir: dir.clone() };
        let manager = CertManager::load(source, short()).expect("made");
        let first = manager.current();
        let end = first.not_after.expect("known");
        let span = end.duration_since(SystemTime::now()).expect("still valid");
        assert!(span <= short().dev_validity, "{span:?}");

        // Not due yet: nothing changes.
        let early = end - short().rotate_before - Duration::from_secs(1);
        assert!(manager.renew_dev_if_due(&dir, early));
        assert_eq!(manager.rotations(), 0);
        assert_eq!(manager.hashes(early), vec![first.sha256]);

        // Due: a new certificate, written to the directory; the old one is
        // listed until its end.
        let due = end - short().rotate_before + Duration::from_millis(10);
        assert!(manager.renew_dev_if_due(&dir, due));
        let second = manager.current();
        assert_ne!(second.sha256, first.sha256);
        assert_eq!(manager.rotations(), 1);
        assert_eq!(manager.hashes(due), vec![second.sha256, first.sha256]);
        assert_eq!(
            manager.hashes(end),
            vec![second.sha256],
            "overlap ends with the old certificate"
        );
        let written =
            std::fs::read_to_string(super::super::dev_hash_file(&dir)).expect("hash file");
        assert_eq!(written.trim(), second.sha256_hex());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_renewal_that_cannot_write_keeps_the_current_certificate() {
        let dir = temp_dir("unwritable");
        let source = CertificateSource::Development { dir: dir.clone() };
        let manager = CertManager::load(source, short()).expect("made");
        let first = manager.current();
        // The directory becomes a file: nothing can be written there.
        std::fs::remove_dir_all(&dir).expect("remove");
        std::fs::write(&dir, b"not a directory").expect("write");
        let due = first.not_after.expect("known");
        assert!(!manager.renew_dev_if_due(&dir, due));
        assert_eq!(manager.current().sha256, first.sha256);
        assert_eq!(manager.failures(), 1);
        let _ = std::fs::remove_file(&dir);
    }
}
