//! The writer task: the one place that writes the store file. It takes
//! writes from a bounded queue and commits them in batches, as the
//! [durability](super::Durability) mode says.
//!
//! A failed commit is kept and retried (with the writes queued meanwhile)
//! after a pause that grows to a few seconds; until one succeeds the server
//! reports itself not ready and nobody waiting on a commit is released, so
//! nothing is acknowledged that is not on disk.

use super::db::{self, Write};
use super::{Durability, StoreSettings};
use crate::core::RoomChanges;
use crate::stats::ServerStats;
use bytes::Bytes;
use redb::Database;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// The writer has stopped (the server is shutting down).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the store writer has stopped")]
pub struct StoreClosed;

struct Request {
    write: Option<Write>,
    /// Released once `write` (and everything queued before it) is committed.
    done: Option<oneshot::Sender<()>>,
    /// Stop after committing what is queued, and let go of the file.
    close: bool,
}

/// Hands writes to the store's writer task. Cheap to clone.
#[derive(Debug, Clone)]
pub struct StoreHandle {
    queue: mpsc::Sender<Request>,
    durability: Durability,
    interval: Duration,
    path: Arc<PathBuf>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("write", &self.write.is_some())
            .field("waits", &self.done.is_some())
            .finish()
    }
}

impl StoreHandle {
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// `Interval` mode: the most a crash loses.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Writes waiting in the writer's queue now.
    pub fn queue_depth(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }

    async fn send(&self, write: Option<Write>, wait: bool) -> Result<(), StoreClosed> {
        self.request(write, wait, false).await
    }

    /// Queues a request; with `wait`, returns once it is done (committed, or
    /// with `close` the file closed).
    async fn request(
        &self,
        write: Option<Write>,
        wait: bool,
        close: bool,
    ) -> Result<(), StoreClosed> {
        let (done, committed) = if wait {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        self.queue
            .send(Request { write, done, close })
            .await
            .map_err(|_| StoreClosed)?;
        match committed {
            Some(rx) => rx.await.map_err(|_| StoreClosed),
            None => Ok(()),
        }
    }

    /// Hands over a room's changes. In `Sync` mode returns once they are
    /// committed; otherwise once they are queued (waiting while the queue
    /// is full).
    ///
    /// # Cancel safety
    /// Not cancel safe: cancelled while queueing, the changes may be lost,
    /// and the room's later changes then miss them.
    pub async fn write_room(&self, changes: RoomChanges) -> Result<(), StoreClosed> {
        self.send(
            Some(Write::Room(changes)),
            self.durability == Durability::Sync,
        )
        .await
    }

    /// Keeps a pack's content (before the room lists it, so a commit never
    /// has a room listing content it lacks). `epoch` is the pack store's
    /// epoch of the content's coming in.
    pub async fn put_pack(
        &self,
        hash: [u8; 32],
        content: Bytes,
        epoch: u64,
    ) -> Result<(), StoreClosed> {
        self.send(Some(Write::PutPack(hash, content, epoch)), false)
            .await
    }

    /// Forgets pack content no room references any more, each with the
    /// pack store's epoch of its freeing. Content put with a later epoch
    /// (uploaded again meanwhile) is kept, whichever write comes first.
    pub async fn delete_packs(&self, hashes: Vec<([u8; 32], u64)>) -> Result<(), StoreClosed> {
        if hashes.is_empty() {
            return Ok(());
        }
        self.send(Some(Write::DeletePacks(hashes)), false).await
    }

    /// Replaces everything kept with these rooms and packs, and waits for
    /// the commit (the `None` mode's write at shutdown).
    pub async fn replace_all(
        &self,
        rooms: Vec<RoomChanges>,
        packs: Vec<([u8; 32], Bytes)>,
    ) -> Result<(), StoreClosed> {
        self.send(Some(Write::ReplaceAll { rooms, packs }), true)
            .await
    }

    /// Waits until everything queued before this call is committed.
    pub async fn flush(&self) -> Result<(), StoreClosed> {
        self.send(None, true).await
    }

    /// Commits what is queued, stops the writer and closes the file (so
    /// another server may open it); later writes fail with [`StoreClosed`].
    /// Returns once the file is closed.
    pub async fn close(&self) -> Result<(), StoreClosed> {
        self.request(None, true, true).await
    }
}

/// Starts the writer task; it ends when every handle is dropped, after
/// committing what was queued.
pub(super) fn start(
    database: Arc<Database>,
    settings: &StoreSettings,
    healthy: Arc<AtomicBool>,
    stats: Arc<ServerStats>,
) -> StoreHandle {
    let (tx, rx) = mpsc::channel(settings.queue.max(1));
    let path = Arc::new(settings.file());
    let writer = Writer {
        database,
        pack_epochs: std::collections::HashMap::new(),
        durability: settings.durability,
        // Rooms hand changes over every half interval, and this commits
        // every half interval: a change is on disk within one interval.
        interval: settings.interval / 2,
        max_batch: settings.max_batch.max(1),
        healthy,
        stats,
        path: path.clone(),
    };
    tokio::spawn(writer.run(rx));
    StoreHandle {
        queue: tx,
        durability: settings.durability,
        interval: settings.interval,
        path,
    }
}

struct Writer {
    database: Arc<Database>,
    /// The epoch of the last content put, by hash, while it is kept (a
    /// delete of an earlier epoch must not remove it).
    pack_epochs: std::collections::HashMap<[u8; 32], u64>,
    durability: Durability,
    interval: Duration,
    max_batch: usize,
    healthy: Arc<AtomicBool>,
    stats: Arc<ServerStats>,
    path: Arc<PathBuf>,
}

impl Writer {
    /// Drops the deletes of pack content that was put again after it was
    /// freed (a room uploaded the same bytes meanwhile).
    fn order_pack_writes(&mut self, batch: &mut [Request]) {
        for request in batch.iter_mut() {
            match &mut request.write {
                Some(Write::PutPack(hash, _, epoch)) => {
                    let kept = self.pack_epochs.entry(*hash).or_insert(*epoch);
                    *kept = (*kept).max(*epoch);
                }
                Some(Write::DeletePacks(hashes)) => {
                    hashes.retain(|(hash, freed)| match self.pack_epochs.get(hash) {
                        Some(put) if put > freed => false,
                        _ => {
                            self.pack_epochs.remove(hash);
                            true
                        }
                    });
                }
                _ => {}
            }
        }
    }
}

/// Pause before retrying a failed commit: doubles from 50 ms up to 5 s.
fn retry_pause(failures: u32) -> Duration {
    Duration::from_millis(50u64.saturating_mul(1 << failures.min(7))).min(Duration::from_secs(5))
}

impl Writer {
    async fn run(mut self, mut queue: mpsc::Receiver<Request>) {
        let closers = self.commit_until_closed(&mut queue).await;
        // Let go of the file before telling anyone it is closed.
        drop(self);
        drop(queue);
        for closer in closers {
            let _ = closer.send(());
        }
    }

    /// The writer's loop; returns who asked it to close.
    async fn commit_until_closed(
        &mut self,
        queue: &mut mpsc::Receiver<Request>,
    ) -> Vec<oneshot::Sender<()>> {
        let mut batch: Vec<Request> = Vec::new();
        let mut failures = 0u32;
        // Interval mode: when the oldest uncommitted write is due.
        let mut due = Instant::now();
        loop {
            if batch.is_empty() {
                match queue.recv().await {
                    Some(request) => batch.push(request),
                    None => return Vec::new(),
                }
                due = Instant::now() + self.interval;
            }
            let mut closed = false;
            while batch.len() < self.max_batch {
                match queue.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
            let closing = batch.iter().any(|r| r.close);
            let urgent = closed
                || closing
                || failures > 0
                || batch.len() >= self.max_batch
                || batch.iter().any(|r| r.done.is_some());
            if self.durability == Durability::Interval && !urgent && Instant::now() < due {
                tokio::select! {
                    request = queue.recv() => {
                        if let Some(request) = request {
                            batch.push(request);
                            continue;
                        }
                    }
                    () = tokio::time::sleep_until(due) => {}
                }
            }
            let closers: Vec<oneshot::Sender<()>> = if closing {
                batch
                    .iter_mut()
                    .filter(|r| r.close)
                    .filter_map(|r| r.done.take())
                    .collect()
            } else {
                Vec::new()
            };
            match self.commit(&mut batch).await {
                Ok(()) => {
                    if failures > 0 {
                        tracing::info!(path = %self.path.display(), "store commits succeed again");
                    }
                    failures = 0;
                    self.healthy.store(true, Ordering::Relaxed);
                    if closing {
                        return closers;
                    }
                }
                Err(reason) => {
                    failures = failures.saturating_add(1);
                    self.healthy.store(false, Ordering::Relaxed);
                    tracing::error!(path = %self.path.display(), %reason, failures,
                        "store commit failed; retrying (nothing waiting on it is acknowledged)");
                    if (closed || closing) && failures > 5 {
                        tracing::error!(path = %self.path.display(), writes = batch.len(),
                            "giving up on the store at shutdown; these writes are lost");
                        return closers;
                    }
                    // Ask again next round.
                    if closing {
                        for closer in closers {
                            batch.push(Request {
                                write: None,
                                done: Some(closer),
                                close: true,
                            });
                        }
                    }
                    // The queue fills meanwhile, and rooms wait: backpressure.
                    tokio::time::sleep(retry_pause(failures)).await;
                }
            }
        }
    }

    /// Commits every write in `batch` in one transaction; on success
    /// releases the waiters and empties `batch`, on failure leaves it whole.
    async fn commit(&mut self, batch: &mut Vec<Request>) -> Result<(), String> {
        self.order_pack_writes(batch);
        let database = self.database.clone();
        let requests = std::mem::take(batch);
        let started = std::time::Instant::now();
        let result = tokio::task::spawn_blocking(move || {
            let writes: Vec<&Write> = requests.iter().filter_map(|r| r.write.as_ref()).collect();
            let count = writes.len();
            let outcome = db::apply(&database, &writes);
            (outcome.map(|()| count), requests)
        })
        .await;
        match result {
            Ok((Ok(count), requests)) => {
                self.stats.store.commits.inc();
                self.stats.store.writes.add(count as u64);
                self.stats.store.commit_duration.observe(started.elapsed());
                for request in requests {
                    if let Some(done) = request.done {
                        let _ = done.send(());
                    }
                }
                Ok(())
            }
            Ok((Err(reason), requests)) => {
                self.stats.store.commit_failures.inc();
                *batch = requests;
                Err(reason)
            }
            // `apply` catches panics; this is the runtime shutting down.
            Err(join) => Err(format!("the store writer thread ended: {join}")),
        }
    }
}
