//! Certificates change under a running server: a development certificate is
//! renewed before its end, changed PEM files are reloaded. New connections
//! (QUIC and TCP TLS) get the new certificate, connections already up keep
//! working, and `/cert-hash` lists the old hash beside the new one for the
//! overlap.

mod common;

use chorus_server::cert::{self, CertificateSource};
use chorus_server::{RunningServer, Server, ServerConfig};
use common::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use wtransport::tls::{Sha256Digest, rustls};
use wtransport::{ClientConfig, Connection, Endpoint};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("chorus-cert-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// The hashes `/cert-hash` lists, newest first.
async fn listed_hashes(server: &RunningServer) -> Vec<String> {
    let (status, _, body) = http_get(server.tcp_addrs()[0], "/cert-hash", &[]).await;
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(json["algorithm"], "sha-256");
    json["hashes"]
        .as_array()
        .expect("hashes")
        .iter()
        .map(|h| h.as_str().expect("hex").to_owned())
        .collect()
}

/// Polls `/cert-hash` until `done` holds for its list; panics after `within`.
async fn wait_for_hashes(
    server: &RunningServer,
    within: Duration,
    what: &str,
    mut done: impl FnMut(&[String]) -> bool,
) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let hashes = listed_hashes(server).await;
        if done(&hashes) {
            return hashes;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {within:?} (last listed: {hashes:?})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A WebTransport connection that accepts only a certificate with `hash`.
async fn connect_pinned(server: &RunningServer, hash: [u8; 32]) -> Result<Connection, String> {
    let config = ClientConfig::builder()
        .with_bind_default()
        .with_server_certificate_hashes([Sha256Digest::new(hash)])
        .build();
    let endpoint = Endpoint::client(config).expect("client endpoint");
    match tokio::time::timeout(WAIT, endpoint.connect(server.url())).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => panic!("connecting neither succeeded nor failed within {WAIT:?}"),
    }
}

/// A TLS handshake with the TCP listener and a GET of `/health/live`, with
/// the given certificate verification.
async fn tls_get(server: &RunningServer, config: rustls::ClientConfig) -> Result<u16, String> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(server.tcp_addrs()[0])
        .await
        .expect("tcp");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let tls = tokio::time::timeout(WAIT, connector.connect(name, tcp))
        .await
        .expect("handshake in time")
        .map_err(|e| e.to_string())?;
    let (status, _, _) = http_get_over(tls, "localhost", "/health/live", &[]).await;
    Ok(status)
}

/// A TLS connection to the TCP listener kept open for several HTTP requests.
struct KeptTls {
    sender: hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>,
}

impl KeptTls {
    async fn open(server: &RunningServer, config: rustls::ClientConfig) -> KeptTls {
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(server.tcp_addrs()[0])
            .await
            .expect("tcp");
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let tls = connector.connect(name, tcp).await.expect("TLS handshake");
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .expect("http handshake");
        tokio::spawn(connection);
        KeptTls { sender }
    }

    /// `GET /health/live` on the same connection: its status.
    async fn get(&mut self) -> u16 {
        let request = hyper::Request::get("/health/live")
            .header("host", "localhost")
            .body(http_body_util::Empty::new())
            .expect("request");
        let response = tokio::time::timeout(WAIT, self.sender.send_request(request))
            .await
            .expect("answered in time")
            .expect("response on the kept connection");
        response.status().as_u16()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS client that accepts only a certificate with `hash`, as native clients pin.
fn pinning_client(hash: [u8; 32]) -> rustls::ClientConfig {
    let verifier = Arc::new(wtransport::tls::client::ServerHashVerification::new([
        Sha256Digest::new(hash),
    ]));
    rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth()
}

/// A TLS client that trusts certificates issued by `ca` (DER) only.
fn trusting_client(ca: &rustls::pki_types::CertificateDer<'static>) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).expect("CA certificate");
    rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

#[tokio::test]
async fn the_development_certificate_is_renewed_without_a_restart() {
    let dir = temp_dir("dev-rotation");
    // The server finds a certificate with 8 s left in its directory (as after
    // running for most of its life) and, renewing 4 s before the end, keeps
    // it at start and replaces it about 4 s later. The new one is valid for a
    // minute, so nothing else happens during the test.
    let first = cert::load_or_make_dev_with(
        &dir,
        SystemTime::now(),
        Duration::from_secs(8),
        Duration::ZERO,
    )
    .expect("first certificate");
    let server = Server::start(ServerConfig {
        dev_cert_validity: Duration::from_secs(60),
        cert_rotate_before: Duration::from_secs(4),
        cert_check_interval: Duration::from_millis(50),
        ..ServerConfig::ephemeral(&dir)
    })
    .await
    .expect("server starts");
    let old = first.sha256;
    assert_eq!(
        server.cert_hash(),
        old,
        "a certificate with enough left is reused"
    );
    assert_eq!(listed_hashes(&server).await, [cert::hex(&old)]);

    // A session from before the rotation, pinned to the old hash.
    let (mut before, _) = RawClient::connect_hello(&server).await;
    before.join("rotation", 1).await;

    // The hash changes at /cert-hash, with the old one still listed.
    let listed = wait_for_hashes(&server, WAIT, "rotation", |hashes| {
        hashes[0] != cert::hex(&old)
    })
    .await;
    let new = server.cert_hash();
    assert_ne!(new, old);
    assert_eq!(
        listed,
        [cert::hex(&new), cert::hex(&old)],
        "both during the overlap"
    );
    assert_eq!(server.certificates().rotations(), 1);
    let not_after = server.certificate().not_after.expect("known");
    let validity = not_after.duration_since(SystemTime::now()).expect("valid");
    assert!(validity <= Duration::from_secs(60), "{validity:?}");
    assert_eq!(
        std::fs::read_to_string(cert::dev_hash_file(&dir))
            .expect("hash file")
            .trim(),
        cert::hex(&new),
        "written for clients, as at start"
    );

    // New WebTransport connections get the new certificate: pinned to the
    // old hash they are refused, pinned to the new one they connect.
    let refused = connect_pinned(&server, old)
        .await
        .expect_err("the old hash is refused after rotation");
    assert!(refused.contains("invalid peer certificate"), "{refused}");
    let after = connect_pinned(&server, new)
        .await
        .expect("new hash accepted");
    drop(after);
    let (mut after, _) = RawClient::connect_hello(&server).await;
    after.join("rotation", 2).await;
    // So do new TLS connections on the TCP port.
    let refused = tls_get(&server, pinning_client(old)).await.err();
    assert!(
        refused
            .as_ref()
            .is_some_and(|e| e.contains("invalid peer certificate")),
        "{refused:?}"
    );
    assert_eq!(tls_get(&server, pinning_client(new)).await, Ok(200));
    // The session from before still works.
    before.ping().await;

    // Once the old certificate ends, it is no longer listed; the session
    // that started under it is still served.
    wait_for_hashes(&server, WAIT, "end of the overlap", |hashes| {
        hashes.len() == 1
    })
    .await;
    assert_eq!(listed_hashes(&server).await, [cert::hex(&new)]);
    assert!(SystemTime::now() >= first.not_after.expect("known"));
    before.ping().await;
    after.ping().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A certificate for `localhost` issued by a CA of its own: the CA's DER, the
/// certificate's PEM and DER, and the key's PEM.
struct Issued {
    ca: rustls::pki_types::CertificateDer<'static>,
    cert_pem: String,
    cert_der: Vec<u8>,
    key_pem: String,
}

fn issue(name: &str) -> Issued {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("Test CA {name}"));
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().expect("key");
    let params = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
    let cert = params.signed_by(&key, &issuer).expect("certificate");
    Issued {
        ca: ca.der().clone(),
        cert_pem: cert.pem(),
        cert_der: cert.der().to_vec(),
        key_pem: key.serialize_pem(),
    }
}

fn sha256(der: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest.as_ref().try_into().expect("32 bytes")
}

/// Replaces `path` by renaming a written sibling over it, as deploy tools do.
fn replace(path: &Path, contents: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, contents).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

#[tokio::test]
async fn changed_pem_files_are_served_to_new_connections_and_a_bad_pair_is_refused() {
    let dir = temp_dir("pem-reload");
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    let a = issue("a");
    let b = issue("b");
    let c = issue("c");
    replace(&cert_path, &a.cert_pem);
    replace(&key_path, &a.key_pem);
    let server = Server::start(ServerConfig {
        certificate: CertificateSource::Pem {
            cert: cert_path.clone(),
            key: key_path.clone(),
        },
        cert_check_interval: Duration::from_millis(50),
        ..ServerConfig::ephemeral(&dir)
    })
    .await
    .expect("server starts");
    assert_eq!(server.cert_hash(), sha256(&a.cert_der));
    assert_eq!(tls_get(&server, trusting_client(&a.ca)).await, Ok(200));
    assert!(tls_get(&server, trusting_client(&b.ca)).await.is_err());
    // A TLS connection from before the change.
    let mut before = KeptTls::open(&server, trusting_client(&a.ca)).await;
    assert_eq!(before.get().await, 200);

    // The certificate, then its key, replaced on disk (between the two the
    // pair does not match, which is refused until the key arrives).
    replace(&cert_path, &b.cert_pem);
    replace(&key_path, &b.key_pem);
    let listed = wait_for_hashes(&server, WAIT, "PEM reload", |hashes| {
        hashes[0] == cert::hex(&sha256(&b.cert_der))
    })
    .await;
    assert_eq!(
        listed,
        [
            cert::hex(&sha256(&b.cert_der)),
            cert::hex(&sha256(&a.cert_der))
        ],
        "the previous one stays listed for the overlap"
    );
    assert_eq!(tls_get(&server, trusting_client(&b.ca)).await, Ok(200));
    assert!(
        tls_get(&server, trusting_client(&a.ca)).await.is_err(),
        "new connections get the new certificate"
    );
    assert_eq!(before.get().await, 200, "the old connection goes on");

    // A certificate whose key is not there: logged, counted, the current
    // one stays. Then garbage. Both are noticed before anything else.
    let rotations = server.certificates().rotations();
    for bad in [c.cert_pem.as_str(), "not a certificate"] {
        let failures = server.certificates().failures();
        replace(&cert_path, bad);
        let deadline = tokio::time::Instant::now() + WAIT;
        while server.certificates().failures() == failures {
            assert!(
                tokio::time::Instant::now() < deadline,
                "bad pair not noticed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(server.cert_hash(), sha256(&b.cert_der));
        assert_eq!(server.certificates().rotations(), rotations);
        assert_eq!(tls_get(&server, trusting_client(&b.ca)).await, Ok(200));
    }

    // The matching pair arrives: served.
    replace(&cert_path, &c.cert_pem);
    replace(&key_path, &c.key_pem);
    wait_for_hashes(&server, WAIT, "PEM reload after a bad pair", |hashes| {
        hashes[0] == cert::hex(&sha256(&c.cert_der))
    })
    .await;
    assert_eq!(tls_get(&server, trusting_client(&c.ca)).await, Ok(200));
    assert_eq!(before.get().await, 200);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn rotation_settings_are_checked_at_start() {
    for (validity, before, interval) in [
        // Browsers refuse a pinned certificate valid for more than 14 days.
        (
            cert::DEV_VALIDITY + Duration::from_secs(1),
            cert::DEV_RENEW_BEFORE,
            5,
        ),
        // Renewal must come before the end.
        (Duration::from_secs(60), Duration::from_secs(60), 5),
        // Polling must not spin.
        (Duration::from_secs(60), Duration::from_secs(10), 0),
    ] {
        let result = Server::start(ServerConfig {
            dev_cert_validity: validity,
            cert_rotate_before: before,
            cert_check_interval: Duration::from_millis(interval),
            ..ServerConfig::ephemeral(cert_dir())
        })
        .await;
        assert!(
            matches!(result, Err(chorus_server::StartError::InvalidSetting(_))),
            "{validity:?} {before:?} {interval} ms: {result:?}"
        );
    }
}
