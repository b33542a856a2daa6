//! A Chorus server started as its own process for one run (`compare` and
//! `saturate` with `--chorus-bin`), as the baseline relays are: its CPU and
//! peak RSS are then the server's alone, sampled from `/proc` the same way
//! as a relay's, where an in-process server's memory is the whole bench
//! process's (every client included).
//!
//! The limits an in-process run raises for its load
//! ([`sized_config`](crate::run::sized_config)) are passed as the server's
//! own flags, so both ways load the same configuration. This module starts,
//! reads the banner and stops; it does not load anything.

use crate::baselines::{STDERR_LINES, keep_tail, tail_text};
use crate::run::{BenchConfig, Target, sized_config};
use anyhow::{Context, Result, bail};
use chorus_server::ServerConfig;
use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// How to start the server: the binary and any extra flags.
#[derive(Debug, Clone)]
pub struct ChorusLaunch {
    /// The `chorus` binary (e.g. `target/release/chorus`).
    pub bin: PathBuf,
    /// More flags for it, after the bench's own (e.g. `--tick-coalesce-ms 2`).
    pub extra_args: Vec<OsString>,
    /// How long it may take to print its address and certificate hash.
    pub ready_timeout: Duration,
}

impl ChorusLaunch {
    pub fn new(bin: PathBuf, extra_args: Vec<OsString>) -> ChorusLaunch {
        ChorusLaunch {
            bin,
            extra_args,
            ready_timeout: Duration::from_secs(20),
        }
    }
}

/// A running `chorus` process, with a certificate directory of its own.
/// Dropping it kills the process and removes the directory.
#[derive(Debug)]
pub struct ChorusProcess {
    child: Child,
    dir: PathBuf,
    url: String,
    cert_hash: [u8; 32],
    stderr: Arc<Mutex<VecDeque<String>>>,
}

/// What the banner has told so far.
#[derive(Debug, Default, PartialEq, Eq)]
struct Banner {
    url: Option<String>,
    cert_hash: Option<String>,
}

impl Banner {
    /// Takes one stdout line: `  WebTransport  https://…/chorus` or
    /// `certificate sha256: <hex>`.
    fn read(&mut self, line: &str) {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("WebTransport") {
            let url = rest.trim();
            if url.starts_with("https://") {
                self.url = Some(url.to_owned());
            }
        } else if let Some(hex) = line.strip_prefix("certificate sha256:") {
            self.cert_hash = Some(hex.trim().to_owned());
        }
    }

    fn is_complete(&self) -> bool {
        self.url.is_some() && self.cert_hash.is_some()
    }
}

/// The flags that give an external server `sized`'s load limits.
fn limit_flags(sized: &ServerConfig) -> Vec<String> {
    let limits = &sized.session.limits;
    let abuse = &sized.access.abuse;
    let rates = &sized.session.rate_limits;
    [
        ("--max-members", limits.max_members_per_room),
        ("--max-rooms", sized.rooms.max_rooms),
        ("--max-connections", abuse.max_connections),
        ("--max-connections-per-ip", abuse.max_connections_per_ip),
        (
            "--connections-per-ip-per-minute",
            abuse.new_connections_per_ip_per_minute,
        ),
        ("--joins-per-ip-per-minute", abuse.joins_per_ip_per_minute),
        ("--rate-ticks", rates.ticks.per_second),
        ("--rate-state-updates", rates.state_updates.per_second),
        ("--rate-commands", rates.commands.per_second),
        ("--rate-messages", rates.messages.per_second),
    ]
    .into_iter()
    .flat_map(|(flag, value)| [flag.to_owned(), value.to_string()])
    .collect()
}

impl ChorusProcess {
    /// Starts `launch.bin` on a free loopback port with `cfg`'s limits, in
    /// memory only, and waits for its banner. Blocks the calling thread (at
    /// most `launch.ready_timeout`).
    pub fn start(launch: &ChorusLaunch, cfg: &BenchConfig) -> Result<ChorusProcess> {
        static STARTED: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "chorus-bench-server-{}-{}",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::Relaxed)
        ));
        let sized = sized_config(cfg, &dir);
        let mut child = Command::new(&launch.bin)
            .args(["--listen", "127.0.0.1:0", "--no-demo", "--memory-only"])
            .args(["--log", "warn"])
            .arg("--cert-dir")
            .arg(&dir)
            .args(limit_flags(&sized))
            .args(&launch.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", launch.bin.display()))?;
        let stderr = Arc::new(Mutex::new(VecDeque::with_capacity(STDERR_LINES)));
        if let Some(err) = child.stderr.take() {
            let tail = Arc::clone(&stderr);
            std::thread::spawn(move || keep_tail(err, &tail));
        }
        let (line_tx, line_rx) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            // Every line, read to the end so the pipe never fills.
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    let _ = line_tx.send(line);
                }
            });
        }
        let mut process = ChorusProcess {
            child,
            dir,
            url: String::new(),
            cert_hash: [0; 32],
            stderr,
        };
        let deadline = Instant::now() + launch.ready_timeout;
        let mut banner = Banner::default();
        while !banner.is_complete() {
            let left = deadline.saturating_duration_since(Instant::now());
            match line_rx.recv_timeout(left) {
                Ok(line) => banner.read(&line),
                Err(mpsc::RecvTimeoutError::Timeout) => bail!(
                    "{} printed no address and certificate hash within {:?}; its stderr:\n{}",
                    launch.bin.display(),
                    launch.ready_timeout,
                    process.stderr_tail()
                ),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = process.child.wait().map(|s| s.to_string());
                    bail!(
                        "{} exited ({}) before it was ready; its stderr:\n{}",
                        launch.bin.display(),
                        status.unwrap_or_else(|e| e.to_string()),
                        process.stderr_tail()
                    );
                }
            }
        }
        let (Some(url), Some(hash)) = (banner.url, banner.cert_hash) else {
            unreachable!("the loop ends with both")
        };
        process.cert_hash = chorus_client::Trust::parse_hash(&hash)
            .with_context(|| format!("the server's certificate hash {hash:?}"))?;
        process.url = url;
        Ok(process)
    }

    /// The process to sample in `/proc`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where a run reaches it: its URL (WebSocket on the same port), its
    /// certificate hash and its pid.
    pub fn target(&self) -> Target {
        Target::External {
            url: self.url.clone(),
            ws_url: None,
            cert_hash: self.cert_hash,
            server_pid: Some(self.pid()),
        }
    }

    /// The last lines it wrote on stderr.
    pub fn stderr_tail(&self) -> String {
        tail_text(&self.stderr)
    }
}

impl Drop for ChorusProcess {
    fn drop(&mut self) {
        // In memory only: nothing to lose by not stopping gracefully.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_banner_gives_the_url_and_the_hash() {
        let mut banner = Banner::default();
        for line in [
            "Chorus 0.1.0 listening",
            "  WebTransport  https://127.0.0.1:45258/chorus",
            "  WebSocket     ws:// and wss://127.0.0.1:45258/chorus",
        ] {
            banner.read(line);
        }
        assert!(!banner.is_complete());
        banner.read(
            "certificate sha256: 414c7bd430ebdba5bc0a57767b3d8a9cf19f642bf2b29c7db52139c8c72bd032",
        );
        assert_eq!(
            banner,
            Banner {
                url: Some("https://127.0.0.1:45258/chorus".into()),
                cert_hash: Some(
                    "414c7bd430ebdba5bc0a57767b3d8a9cf19f642bf2b29c7db52139c8c72bd032".into()
                ),
            }
        );
    }

    #[test]
    fn the_limits_follow_the_load() {
        let cfg = BenchConfig {
            hz: 60.0,
            ..BenchConfig::small(600, 50)
        };
        let flags = limit_flags(&sized_config(&cfg, std::path::Path::new("/nonexistent")));
        let value = |flag: &str| {
            let at = flags.iter().position(|f| f == flag).expect(flag);
            flags[at + 1].parse::<u32>().expect("a number")
        };
        assert_eq!(value("--max-members"), 50);
        assert_eq!(value("--max-rooms"), 1000); // the default is larger
        assert_eq!(value("--max-connections"), 30_000);
        assert_eq!(value("--max-connections-per-ip"), 30_000);
        assert_eq!(value("--joins-per-ip-per-minute"), 60_000);
        assert_eq!(value("--rate-ticks"), 120); // 2 x 60 Hz is the default
        assert_eq!(flags.len(), 20);
    }
}
