//! The on-disk store: rooms (their record, state entries, recent events,
//! chat history, idempotency keys; members with their resume keys) and pack
//! content, in one [redb](https://www.redb.org) file under the data
//! directory, so rooms survive a restart, graceful or not.
//!
//! Why redb: an embedded, pure-Rust key-value store with ACID transactions,
//! copy-on-write B-trees and checksummed commits (a `kill -9` or power loss
//! mid-commit leaves the previous commit intact, and a torn file is detected,
//! not misread), one file, no C toolchain, no SQL layer we would not use. We
//! need ordered keys, range deletes and batched commits; SQLite would bring
//! the same guarantees with a C build and a schema to maintain.
//!
//! What it owns: the file, its format version, every byte of it, and when
//! changes reach it. Room tasks hand their [`RoomChanges`] to a
//! [`StoreHandle`]; one writer task batches them into transactions:
//! - [`Durability::Sync`]: a room waits for the commit (with fsync) of its
//!   changes before it acknowledges or broadcasts them; every change queued
//!   meanwhile, from every room, goes into the same commit (group commit);
//! - [`Durability::Interval`]: changes are committed (with fsync) every
//!   interval; a crash loses at most that much;
//! - [`Durability::None`]: nothing is written while running; a graceful
//!   shutdown writes every room. After a crash the store is as the last
//!   graceful shutdown left it, minus rooms since deleted (see [`Store::open`]).
//!
//! What it must not do: decide anything about rooms (the core does), or
//! lose an acknowledged change silently: a failed commit is retried, the
//! server reports itself not ready meanwhile, and every failure is logged.

mod db;
mod writer;

pub use db::{Loaded, STORE_FILE};
pub use writer::{StoreClosed, StoreHandle};

use std::path::PathBuf;
use std::time::Duration;

/// When changes reach the disk; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    Sync,
    #[default]
    Interval,
    None,
}

impl Durability {
    pub fn name(self) -> &'static str {
        match self {
            Durability::Sync => "sync",
            Durability::Interval => "interval",
            Durability::None => "none",
        }
    }

    /// Whether room tasks hand out their changes as they happen (in
    /// `None` mode they hand out whole images at shutdown only).
    pub fn tracks_changes(self) -> bool {
        self != Durability::None
    }
}

impl std::fmt::Display for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sync" => Ok(Durability::Sync),
            "interval" => Ok(Durability::Interval),
            "none" => Ok(Durability::None),
            other => Err(format!(
                "unknown durability {other:?} (expected sync, interval or none)"
            )),
        }
    }
}

/// Where and how rooms are kept.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// The directory holding the store file (created if missing).
    pub data_dir: PathBuf,
    pub durability: Durability,
    /// `Interval` mode: how often changes are committed.
    pub interval: Duration,
    /// Changes committed at once, at most (a bigger backlog is committed in
    /// several transactions).
    pub max_batch: usize,
    /// Changes queued to the writer before room tasks wait.
    pub queue: usize,
    /// Start even when the store file or some of its records cannot be
    /// read: the file is first copied aside (`chorus.redb.corrupt-<time>`),
    /// then what cannot be read is dropped. Without it the server refuses
    /// to start.
    pub discard_corrupt: bool,
}

impl StoreSettings {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        StoreSettings {
            data_dir: data_dir.into(),
            durability: Durability::Interval,
            interval: Duration::from_millis(200),
            max_batch: 4096,
            queue: 1024,
            discard_corrupt: false,
        }
    }

    pub fn file(&self) -> PathBuf {
        self.data_dir.join(STORE_FILE)
    }
}

/// Why the store cannot be opened or read. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the store {path} is in use by another process (one Chorus per data directory)")]
    InUse { path: PathBuf },
    #[error(
        "the store {path} is corrupt or unreadable: {reason}; the server will not start and \
         discard it (start with --discard-corrupt-data to copy it aside and go on without what \
         cannot be read)"
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "the store {path} was written by a newer Chorus (format {found}, this one reads {supported})"
    )]
    NewerFormat {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("cannot copy the corrupt store {path} aside to {to}: {source}")]
    CopyAside {
        path: PathBuf,
        to: PathBuf,
        source: std::io::Error,
    },
    #[error("the store {path} cannot be written: {reason}")]
    Write { path: PathBuf, reason: String },
}

/// Opens the store, reads everything kept, and starts its writer.
#[derive(Debug)]
pub struct Store;

impl Store {
    /// Opens (or creates) the store under `settings.data_dir` and reads it
    /// whole. Blocking: call it before serving, off the async runtime's
    /// worker threads (e.g. in `spawn_blocking`).
    ///
    /// In `None` durability the rooms read are removed from the file right
    /// away: while running nothing is written, so after a crash the server
    /// comes back empty rather than with rooms as they were long ago (a
    /// graceful shutdown writes every room again).
    pub fn open(
        settings: &StoreSettings,
    ) -> Result<(std::sync::Arc<redb::Database>, Loaded), StoreError> {
        db::open(settings)
    }

    /// Starts the writer task for `database` (on the current tokio runtime).
    /// `healthy` is cleared while commits fail, and set again when one succeeds.
    pub fn start_writer(
        database: std::sync::Arc<redb::Database>,
        settings: &StoreSettings,
        healthy: std::sync::Arc<std::sync::atomic::AtomicBool>,
        stats: std::sync::Arc<crate::stats::ServerStats>,
    ) -> StoreHandle {
        writer::start(database, settings, healthy, stats)
    }
}

#[cfg(test)]
mod tests;
