//! `chorus`: runs a Chorus server. With no arguments it listens on loopback with
//! a development certificate. Every setting is a flag, a `CHORUS_*` variable
//! and a key of the `--config` TOML file (`chorus_server::config` reads them);
//! `chorus gen-cert` makes the development certificate, and `chorus config`
//! prints the defaults, the README table or the checked configuration.

use anyhow::Context;
use chorus_server::cert::{CertificateSource, dev_hash_file, load_or_make_dev};
use chorus_server::config::{self, ConfigError, Invocation};
use chorus_server::descriptors;
use chorus_server::http::TcpTls;
use chorus_server::{Server, ServerConfig};
use std::path::Path;
use std::process::ExitCode;
use std::time::SystemTime;

/// The exit status of a configuration that cannot be used (clap's too).
const BAD_CONFIGURATION: u8 = 2;

fn main() -> ExitCode {
    let invocation = match config::parse_from(std::env::args_os()) {
        Ok(invocation) => invocation,
        Err(ConfigError::Clap(e)) => e.exit(),
        Err(e) => return refuse(&e),
    };
    let result = match invocation {
        Invocation::PrintDefaults => {
            print!("{}", config::defaults_toml());
            Ok(())
        }
        Invocation::Markdown => {
            print!("{}", config::markdown_table());
            Ok(())
        }
        Invocation::Check(resolved) => {
            let config = match resolved.settings.server_config() {
                Ok(config) => config,
                Err(e) => return refuse(&e),
            };
            // A production pair is read and matched now; a development
            // certificate is left alone (checking must not make one).
            if let CertificateSource::Pem { .. } = &config.certificate
                && let Err(e) = chorus_server::cert::load(&config.certificate)
            {
                eprintln!("error: cert and key: {e}");
                return ExitCode::from(BAD_CONFIGURATION);
            }
            print!("{}", resolved.report());
            Ok(())
        }
        Invocation::GenCert { cert_dir } => gen_cert(&cert_dir),
        Invocation::Serve(resolved) => {
            let settings = &resolved.settings;
            if let Err(e) = chorus_server::logging::init(&settings.log, settings.log_format) {
                eprintln!("error: {e}");
                return ExitCode::from(BAD_CONFIGURATION);
            }
            let config = match settings.server_config() {
                Ok(config) => config,
                Err(e) => return refuse(&e),
            };
            prepare_descriptors(&config);
            tokio::runtime::Runtime::new()
                .context("could not start the runtime")
                .and_then(|runtime| runtime.block_on(serve(config)))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Raises the open-file limit and grows the descriptor table for
/// `max_connections` WebSocket connections, before the runtime's threads
/// exist (see `chorus_server::descriptors`); warns if the hard limit is lower.
fn prepare_descriptors(config: &ServerConfig) {
    let connections = u64::from(config.access.abuse.max_connections);
    let prepared = descriptors::prepare(connections + descriptors::HEADROOM);
    if !prepared.limit_suffices()
        && let Some(soft) = prepared.soft_limit
    {
        tracing::warn!(
            open_file_limit = soft,
            max_connections = connections,
            "the open-file limit is below max_connections + {}: WebSocket connections past about \
             {} will be refused by the kernel; raise the hard limit (ulimit -Hn, LimitNOFILE=)",
            descriptors::HEADROOM,
            soft.saturating_sub(descriptors::HEADROOM),
        );
    }
}

fn refuse(error: &ConfigError) -> ExitCode {
    eprintln!("error: {error}");
    ExitCode::from(BAD_CONFIGURATION)
}

/// `chorus gen-cert`: the hash alone on standard output, for scripts.
fn gen_cert(dir: &Path) -> anyhow::Result<()> {
    let certificate = load_or_make_dev(dir, SystemTime::now())
        .with_context(|| format!("could not make a certificate in {}", dir.display()))?;
    println!("{}", certificate.sha256_hex());
    let until = certificate
        .not_after
        .and_then(|t| {
            time::OffsetDateTime::from(t)
                .format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "unknown".into());
    eprintln!(
        "development certificate in {}, valid until {until}; hash also in {}",
        dir.display(),
        dev_hash_file(dir).display()
    );
    Ok(())
}

async fn serve(config: ServerConfig) -> anyhow::Result<()> {
    let server = Server::start(config.clone())
        .await
        .context("could not start the server")?;

    println!("Chorus {} listening", env!("CARGO_PKG_VERSION"));
    for url in server.urls() {
        println!("  WebTransport  {url}");
    }
    for addr in server.tcp_addrs() {
        let (ws, http) = match config.tcp_tls {
            TcpTls::Auto => ("ws:// and wss://", "http:// and https://"),
            TcpTls::Required => ("wss://", "https://"),
            TcpTls::Off => ("ws://", "http://"),
        };
        println!("  WebSocket     {ws}{addr}/chorus");
        println!("  HTTP          {http}{addr}/health, /stats, /metrics, /cert-hash");
    }
    if config.serve_demo
        && let Some(addr) = server.tcp_addrs().first()
        && config.tcp_tls != TcpTls::Required
    {
        println!("  Demo page     http://{addr}/  (open it in two tabs)");
    }
    match &config.store {
        Some(store) => println!(
            "  Rooms         kept in {} (durability {})",
            store.file().display(),
            store.durability
        ),
        None => println!("  Rooms         in memory only (a restart starts empty)"),
    }
    println!("certificate sha256: {}", server.certificate().sha256_hex());
    if let CertificateSource::Development { dir } = &config.certificate {
        println!(
            "  (development certificate in {}; hash also in {})",
            dir.display(),
            dev_hash_file(dir).display()
        );
    }

    // The first SIGTERM or SIGINT shuts down gracefully; a second one while
    // that runs ends the process at once.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("could not listen for SIGTERM")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("could not listen for Ctrl-C")?,
        _ = terminate.recv() => {}
    }
    println!("shutting down (a second signal stops at once)");
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        eprintln!("second signal: stopping now");
        std::process::exit(1);
    });
    let left = server.shutdown().await;
    if left > 0 {
        println!("{left} sessions had not closed within the shutdown timeout");
    }
    Ok(())
}
