//! The process's open-file limit and file-descriptor table, made ready for
//! many connections before they arrive.
//!
//! Every WebSocket connection holds a file descriptor (so does every client
//! QUIC endpoint of a load generator), and two things go wrong with many:
//! - the soft `RLIMIT_NOFILE`, often 1024, runs out long before
//!   `--max-connections`, and the accept loop gets `EMFILE`;
//! - Linux grows a process's descriptor table by doubling (past 256, 512,
//!   1024, …), and in a multi-threaded process every growth waits for an RCU
//!   grace period while every other thread that opens a descriptor waits
//!   too: 10–15 ms each time on the development machine, in the middle of a
//!   storm of connections.
//!
//! [`prepare`] raises the soft limit (never above the hard limit, never
//! lower than it was) and grows the table up front: it opens `/dev/null`
//! until the highest descriptor reaches the number wanted, then closes them
//! again; the table never shrinks. Call it before the runtime starts: with
//! one thread, growing needs no grace period.
//!
//! This module owns no socket and touches nothing but this process's limit
//! and descriptor table.

use std::fs::File;

/// Descriptors a server needs besides its connections: listeners, the QUIC
/// socket, the room store, the runtime's epoll and wake-up descriptors.
pub const HEADROOM: u64 = 64;

/// What [`prepare`] achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prepared {
    /// The number of descriptors asked for.
    pub wanted: u64,
    /// The soft open-file limit now (`None` where it could not be read).
    pub soft_limit: Option<u64>,
    /// The highest descriptor reached while growing the table (`None` if not
    /// even one file could be opened): the table holds at least this + 1.
    pub table_reaches: Option<u64>,
}

impl Prepared {
    /// Whether the limit leaves room for `wanted` descriptors.
    pub fn limit_suffices(&self) -> bool {
        self.soft_limit.is_none_or(|soft| soft >= self.wanted)
    }
}

/// Raises the soft open-file limit towards `wanted` and grows the descriptor
/// table to hold `wanted` descriptors (both as far as the limits allow; see
/// the module docs). Takes about 1 µs per descriptor, single-threaded.
pub fn prepare(wanted: u64) -> Prepared {
    let soft_limit = match rlimit::increase_nofile_limit(wanted) {
        Ok(soft) => Some(soft),
        // Not raised: report what it is, if that can be read.
        Err(_) => rlimit::getrlimit(rlimit::Resource::NOFILE)
            .ok()
            .map(|(soft, _)| soft),
    };
    Prepared {
        wanted,
        soft_limit,
        table_reaches: grow_table(wanted),
    }
}

/// Opens `/dev/null` until a descriptor numbered `wanted - 1` or higher is
/// handed out (or opening fails), then closes them all; returns the highest
/// descriptor reached.
#[cfg(unix)]
fn grow_table(wanted: u64) -> Option<u64> {
    use std::os::fd::AsRawFd;
    let target = wanted.saturating_sub(1);
    let mut held = Vec::new();
    let mut highest = None;
    // Bounded by `wanted` opens: descriptors are handed out lowest first, so
    // `wanted` of them always reach `wanted - 1`.
    for _ in 0..wanted {
        let Ok(file) = File::open("/dev/null") else {
            break;
        };
        let fd = u64::try_from(file.as_raw_fd()).unwrap_or(0);
        held.push(file);
        highest = highest.max(Some(fd));
        if fd >= target {
            break;
        }
    }
    highest
}

#[cfg(not(unix))]
fn grow_table(_wanted: u64) -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_and_the_limit_hold_what_was_asked_for() {
        let (soft_before, hard) =
            rlimit::getrlimit(rlimit::Resource::NOFILE).expect("read the limit");
        let wanted = 600.min(hard);
        let prepared = prepare(wanted);
        assert_eq!(prepared.wanted, wanted);
        let soft = prepared.soft_limit.expect("limit read");
        assert!(soft >= soft_before, "never lowered: {soft} < {soft_before}");
        assert!(soft >= wanted, "raised to {wanted} (hard {hard}): {soft}");
        assert!(prepared.limit_suffices());
        let reaches = prepared.table_reaches.expect("files opened");
        assert!(reaches + 1 >= wanted, "{prepared:?}");
        // The files were closed again: the next one opened is a low number.
        let next = File::open("/dev/null").expect("open");
        use std::os::fd::AsRawFd;
        assert!(
            u64::try_from(next.as_raw_fd()).unwrap_or(u64::MAX) < reaches,
            "{prepared:?}"
        );
    }

    #[test]
    fn a_limit_below_the_wish_is_reported() {
        let prepared = Prepared {
            wanted: 10_064,
            soft_limit: Some(1024),
            table_reaches: Some(1023),
        };
        assert!(!prepared.limit_suffices());
        assert!(
            Prepared {
                soft_limit: None,
                ..prepared
            }
            .limit_suffices()
        );
    }
}
