//! The abuse guard: limits per client address, shared by every session of a
//! server.
//!
//! It caps the connections open on the whole server, and counts, per
//! address: open connections (a cap), new connections and
//! joins (per-minute token buckets), joins of rooms that do not exist (too
//! many in an hour blocks every join from the address for a while), and
//! wrong passwords per room (too many blocks password attempts on that room).
//! Kick bans are not kept here: the room core owns them, per room.
//!
//! **Addresses.** IPv4 addresses count one by one. IPv6 addresses count by
//! their /64 prefix ([`AbuseConfig::ipv6_prefix_len`]), because one host
//! usually holds a whole /64 and could otherwise take a fresh address for
//! every attempt; an IPv4-mapped IPv6 address counts as its IPv4 address.
//!
//! **Order of checks.** A session calls [`AbuseGuard::open_connection`] when a
//! connection arrives and keeps the [`ConnectionPermit`] for the connection's
//! life. For a join it calls [`AbuseGuard::check_join`] *before* looking the
//! room up, so a blocked address gets the same `Blocked` answer whether or
//! not the room exists (the check takes no room id); then
//! [`AbuseGuard::record_unknown_room`] if the room does not exist. For a
//! password it calls [`AbuseGuard::check_password_block`] before verifying
//! and [`AbuseGuard::record_wrong_password`] after a mismatch.
//!
//! **Bounded memory.** At most [`AbuseConfig::max_tracked_addresses`]
//! addresses are tracked, each with at most [`MAX_PASSWORD_ROOMS_PER_ADDRESS`]
//! rooms of wrong-password counts. Entries that no longer matter (no
//! connection, budgets refilled, no count or block running) are forgotten by
//! [`AbuseGuard::prune`], which the guard also runs itself, at most once a
//! second, when the address table is full. If the table is still full, the
//! guard **fails closed for new addresses**: an address it does not track yet
//! is refused ([`GuardError::Saturated`], sent as `TooManyConnections`) until
//! room frees up, while tracked addresses carry on. It never evicts a live entry,
//! because forgetting one would hand a blocked or rate-limited address a
//! fresh start.
//!
//! All times are [`Instant`]s passed in; the guard reads no clock.

use super::rate::Bucket;
use super::retry_after_ms;
use chorus_protocol::{ErrorCode, ErrorDetail};
use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Rooms with wrong-password counts kept per address. Past it, the address
/// is blocked from password attempts on every room for
/// [`AbuseConfig::wrong_password_block`]: no person mistypes the passwords of
/// this many rooms at once.
pub const MAX_PASSWORD_ROOMS_PER_ADDRESS: usize = 32;

/// The retry-after given with a refusal that ends when some connection
/// closes (connection cap, full address table): a guess, not a promise.
pub const CONNECTION_RETRY: Duration = Duration::from_secs(5);

/// How often a full address table may be swept for forgettable entries.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// The longest block duration honoured, and the longest
/// [`ban_duration`](AbuseConfig::ban_duration) [`AbuseConfig::validate`]
/// accepts; longer blocks count as this (so adding one to an `Instant` cannot
/// overflow).
pub const MAX_BLOCK_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

/// The guard's limits. Counts below 1 are treated as 1 and durations over
/// [`MAX_BLOCK_DURATION`] as that (check a configuration with
/// [`AbuseConfig::validate`] to report them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbuseConfig {
    /// Connections open at once on the whole server, every address and both
    /// transports together (default 10 000). Past it a new connection is
    /// refused with `TooManyConnections` before its address is counted.
    pub max_connections: u32,
    /// Connections open at once from one address (default 256).
    pub max_connections_per_ip: u32,
    /// New connections from one address per minute, as a token bucket with
    /// this burst (default 600).
    pub new_connections_per_ip_per_minute: u32,
    /// Joins from one address per minute, as a token bucket with this burst
    /// (default 600). Each session also has its own join budget.
    pub joins_per_ip_per_minute: u32,
    /// Wrong passwords for one room from one address before password
    /// attempts on that room are blocked (default 3). Counted in a window of
    /// [`wrong_password_block`](Self::wrong_password_block) from the first.
    pub wrong_passwords_per_room: u32,
    /// How long such a block lasts (default 30 min).
    pub wrong_password_block: Duration,
    /// Joins of rooms that do not exist from one address per hour (window
    /// from the first) before every join from it is blocked (default 5).
    pub unknown_rooms_per_hour: u32,
    /// How long such a block lasts (default 1 h).
    pub unknown_room_block: Duration,
    /// How long a kicked member is banned from the room (default 5 min).
    /// The guard itself does not use it: the server passes it to the room
    /// core, which owns kick bans per room, as the kick ban time.
    pub ban_duration: Duration,
    /// Addresses tracked at once (default 100 000); see the module docs.
    pub max_tracked_addresses: usize,
    /// IPv6 addresses are counted by this prefix length (default 64).
    pub ipv6_prefix_len: u8,
}

impl Default for AbuseConfig {
    fn default() -> Self {
        AbuseConfig {
            max_connections: 10_000,
            max_connections_per_ip: 256,
            new_connections_per_ip_per_minute: 600,
            joins_per_ip_per_minute: 600,
            wrong_passwords_per_room: 3,
            wrong_password_block: Duration::from_secs(30 * 60),
            unknown_rooms_per_hour: 5,
            unknown_room_block: HOUR,
            ban_duration: Duration::from_secs(5 * 60),
            max_tracked_addresses: 100_000,
            ipv6_prefix_len: 64,
        }
    }
}

/// An [`AbuseConfig`] value the guard cannot honour as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("abuse.{field} {problem}")]
pub struct AbuseConfigError {
    /// The field, e.g. `max_connections_per_ip`.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

impl AbuseConfig {
    /// Checks that every count is at least 1, every duration at most
    /// [`MAX_BLOCK_DURATION`] and the IPv6 prefix at most 128.
    pub fn validate(&self) -> Result<(), AbuseConfigError> {
        let counts: [(&'static str, u64); 7] = [
            ("max_connections", u64::from(self.max_connections)),
            (
                "max_connections_per_ip",
                u64::from(self.max_connections_per_ip),
            ),
            (
                "new_connections_per_ip_per_minute",
                u64::from(self.new_connections_per_ip_per_minute),
            ),
            (
                "joins_per_ip_per_minute",
                u64::from(self.joins_per_ip_per_minute),
            ),
            (
                "wrong_passwords_per_room",
                u64::from(self.wrong_passwords_per_room),
            ),
            (
                "unknown_rooms_per_hour",
                u64::from(self.unknown_rooms_per_hour),
            ),
            ("max_tracked_addresses", self.max_tracked_addresses as u64),
        ];
        for (field, value) in counts {
            if value == 0 {
                return Err(AbuseConfigError {
                    field,
                    problem: "must be at least 1 (got 0)".into(),
                });
            }
        }
        for (field, value) in [
            ("wrong_password_block", self.wrong_password_block),
            ("unknown_room_block", self.unknown_room_block),
            ("ban_duration", self.ban_duration),
        ] {
            if value > MAX_BLOCK_DURATION {
                return Err(AbuseConfigError {
                    field,
                    problem: format!(
                        "must be at most {} s (got {} s)",
                        MAX_BLOCK_DURATION.as_secs(),
                        value.as_secs()
                    ),
                });
            }
        }
        if self.ipv6_prefix_len > 128 {
            return Err(AbuseConfigError {
                field: "ipv6_prefix_len",
                problem: format!("must be at most 128 (got {})", self.ipv6_prefix_len),
            });
        }
        Ok(())
    }

    /// The same limits with every count at least 1, durations at most
    /// [`MAX_BLOCK_DURATION`] and the prefix at most 128.
    fn clamped(mut self) -> Self {
        self.wrong_password_block = self.wrong_password_block.min(MAX_BLOCK_DURATION);
        self.unknown_room_block = self.unknown_room_block.min(MAX_BLOCK_DURATION);
        self.ban_duration = self.ban_duration.min(MAX_BLOCK_DURATION);
        self.max_connections = self.max_connections.max(1);
        self.max_connections_per_ip = self.max_connections_per_ip.max(1);
        self.new_connections_per_ip_per_minute = self.new_connections_per_ip_per_minute.max(1);
        self.joins_per_ip_per_minute = self.joins_per_ip_per_minute.max(1);
        self.wrong_passwords_per_room = self.wrong_passwords_per_room.max(1);
        self.unknown_rooms_per_hour = self.unknown_rooms_per_hour.max(1);
        self.max_tracked_addresses = self.max_tracked_addresses.max(1);
        self.ipv6_prefix_len = self.ipv6_prefix_len.min(128);
        self
    }
}

/// Why the guard refused. Each maps to an [`ErrorCode`] and carries how long
/// to wait. Messages name no address, room or identity; every kind of block
/// reads the same, so the answer tells nothing about which rooms exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    /// The server has its maximum number of connections open.
    #[error("the server has its maximum number of connections open; retry in {}", secs(*.retry_after))]
    ServerFull {
        /// How long to wait before trying again.
        retry_after: Duration,
    },
    /// The address has its maximum number of connections open.
    #[error("too many connections from this address")]
    TooManyConnections {
        /// How long to wait before trying again.
        retry_after: Duration,
    },
    /// The address opens connections faster than its per-minute budget.
    #[error("this address opens connections too fast; retry in {}", secs(*.retry_after))]
    ConnectingTooFast {
        /// How long to wait before trying again.
        retry_after: Duration,
    },
    /// The address table is full of live entries and this address is not
    /// in it (the guard fails closed; see the module docs).
    #[error("the server is busy; retry in {}", secs(*.retry_after))]
    Saturated {
        /// How long to wait before trying again.
        retry_after: Duration,
    },
    /// The address joins faster than its per-minute budget.
    #[error("too many joins from this address; retry in {}", secs(*.retry_after))]
    JoiningTooFast {
        /// How long to wait before trying again.
        retry_after: Duration,
    },
    /// Too many failed attempts (unknown rooms, wrong passwords).
    #[error("too many failed attempts from this address; retry in {}", secs(*.retry_after))]
    Blocked {
        /// How long to wait before trying again.
        retry_after: Duration,
    },
}

/// Whole seconds, rounded up, for messages.
fn secs(d: Duration) -> String {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    format!("{s} s")
}

impl GuardError {
    /// The error code to send: `TooManyConnections` for the connection
    /// limits (and a full table), `RateLimited` for the join rate and
    /// `Blocked` for the failure blocks.
    pub fn code(&self) -> ErrorCode {
        match self {
            GuardError::ServerFull { .. }
            | GuardError::TooManyConnections { .. }
            | GuardError::ConnectingTooFast { .. }
            | GuardError::Saturated { .. } => ErrorCode::TooManyConnections,
            GuardError::JoiningTooFast { .. } => ErrorCode::RateLimited,
            GuardError::Blocked { .. } => ErrorCode::Blocked,
        }
    }

    /// How long to wait before trying again.
    pub fn retry_after(&self) -> Duration {
        match *self {
            GuardError::ServerFull { retry_after }
            | GuardError::TooManyConnections { retry_after }
            | GuardError::ConnectingTooFast { retry_after }
            | GuardError::Saturated { retry_after }
            | GuardError::JoiningTooFast { retry_after }
            | GuardError::Blocked { retry_after } => retry_after,
        }
    }

    /// The wire detail: [`ErrorDetail::RetryAfter`] in milliseconds, rounded
    /// up so a client that waits that long is not refused again for it.
    pub fn detail(&self) -> ErrorDetail {
        ErrorDetail::RetryAfter {
            retry_after_ms: retry_after_ms(self.retry_after()),
        }
    }
}

/// The key an address is counted under: IPv4 as is, IPv4-mapped IPv6 as its
/// IPv4 address, other IPv6 addresses cut to their first `ipv6_prefix_len`
/// bits.
pub fn address_key(ip: IpAddr, ipv6_prefix_len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let bits = u32::from(ipv6_prefix_len.min(128));
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

/// Failures counted in a window from the first one; `limit` of them start a
/// block.
#[derive(Debug, Clone)]
struct Failures {
    window_start: Instant,
    count: u32,
    blocked_until: Option<Instant>,
}

impl Failures {
    fn new(now: Instant) -> Self {
        Failures {
            window_start: now,
            count: 0,
            blocked_until: None,
        }
    }

    /// Time left on a running block.
    fn blocked_for(&self, now: Instant) -> Option<Duration> {
        self.blocked_until
            .and_then(|until| until.checked_duration_since(now))
            .filter(|left| !left.is_zero())
    }

    /// Records one failure; returns the block length if this one starts a block.
    fn record(
        &mut self,
        now: Instant,
        limit: u32,
        window: Duration,
        block: Duration,
    ) -> Option<Duration> {
        if self.blocked_for(now).is_some() {
            // Already blocked (the caller skipped the check): no extension.
            return None;
        }
        let window_over = now.saturating_duration_since(self.window_start) >= window;
        if self.blocked_until.is_some() || window_over || self.count == 0 {
            *self = Failures::new(now);
        }
        self.count += 1;
        if self.count >= limit {
            self.blocked_until = Some(now + block);
            return Some(block);
        }
        None
    }

    /// Whether forgetting this changes nothing: no block running and the
    /// window over (or nothing counted).
    fn is_idle(&self, now: Instant, window: Duration) -> bool {
        self.blocked_for(now).is_none()
            && (self.blocked_until.is_some()
                || self.count == 0
                || now.saturating_duration_since(self.window_start) >= window)
    }
}

/// Everything counted about one address.
#[derive(Debug, Clone)]
struct Address {
    connections: u32,
    new_connections: Bucket,
    joins: Bucket,
    unknown_rooms: Failures,
    wrong_passwords: HashMap<String, Failures>,
    /// Set when the address had wrong passwords for more rooms than are kept.
    all_rooms_password_block: Option<Instant>,
}

impl Address {
    fn new(config: &AbuseConfig, now: Instant) -> Self {
        let new_conn = u64::from(config.new_connections_per_ip_per_minute);
        let joins = u64::from(config.joins_per_ip_per_minute);
        Address {
            connections: 0,
            new_connections: Bucket::new(new_conn, MINUTE, new_conn, now),
            joins: Bucket::new(joins, MINUTE, joins, now),
            unknown_rooms: Failures::new(now),
            wrong_passwords: HashMap::new(),
            all_rooms_password_block: None,
        }
    }

    /// Forgets idle wrong-password counts; then whether the whole entry is idle.
    fn prune(&mut self, config: &AbuseConfig, now: Instant) -> bool {
        self.wrong_passwords
            .retain(|_, f| !f.is_idle(now, config.wrong_password_block));
        if self
            .all_rooms_password_block
            .is_some_and(|until| until <= now)
        {
            self.all_rooms_password_block = None;
        }
        self.connections == 0
            && self.new_connections.is_full(now)
            && self.joins.is_full(now)
            && self.unknown_rooms.is_idle(now, HOUR)
            && self.wrong_passwords.is_empty()
            && self.all_rooms_password_block.is_none()
    }
}

#[derive(Debug)]
struct State {
    /// Connections open on the whole server (live permits).
    connections: u32,
    addresses: HashMap<IpAddr, Address>,
    /// No sweep of a full table before this.
    next_sweep: Option<Instant>,
}

#[derive(Debug)]
struct Shared {
    config: AbuseConfig,
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The critical sections do not panic; if one ever did, the counts
        // are still consistent enough to go on with.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The per-address limits of a server, shared by all its sessions (clone it
/// freely: clones share one state). See the module docs for the rules.
#[derive(Clone)]
pub struct AbuseGuard {
    shared: Arc<Shared>,
}

impl fmt::Debug for AbuseGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("AbuseGuard");
        d.field("config", &self.shared.config);
        if let Ok(state) = self.shared.state.try_lock() {
            d.field("tracked_addresses", &state.addresses.len());
        }
        d.finish_non_exhaustive()
    }
}

/// One open connection counted against its address; dropping it gives the
/// slot back. Keep it as long as the connection lives.
#[must_use = "the connection is counted only while the permit lives"]
pub struct ConnectionPermit {
    shared: Arc<Shared>,
    key: IpAddr,
}

impl fmt::Debug for ConnectionPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionPermit").finish_non_exhaustive()
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.connections = state.connections.saturating_sub(1);
        // An address with connections is never forgotten, so it is there.
        if let Some(address) = state.addresses.get_mut(&self.key) {
            address.connections = address.connections.saturating_sub(1);
        }
    }
}

impl AbuseGuard {
    /// A guard with `config` (counts below 1 count as 1).
    pub fn new(config: AbuseConfig) -> Self {
        AbuseGuard {
            shared: Arc::new(Shared {
                config: config.clamped(),
                state: Mutex::new(State {
                    connections: 0,
                    addresses: HashMap::new(),
                    next_sweep: None,
                }),
            }),
        }
    }

    /// The limits in force.
    pub fn config(&self) -> &AbuseConfig {
        &self.shared.config
    }

    /// Connections open on the whole server now (live permits).
    pub fn open_connections(&self) -> u32 {
        self.shared.lock().connections
    }

    /// Addresses tracked now (for stats and tests).
    pub fn tracked_addresses(&self) -> usize {
        self.shared.lock().addresses.len()
    }

    /// Counts a new connection from `ip`: refused when the server has
    /// [`max_connections`](AbuseConfig::max_connections) open (`ServerFull`;
    /// nothing about the address is counted or charged), when the address has
    /// [`max_connections_per_ip`](AbuseConfig::max_connections_per_ip) open
    /// (`TooManyConnections`; the new-connection budget is then not
    /// charged) or has spent its new-connection budget
    /// (`ConnectingTooFast`). The permit gives the slot back when dropped.
    pub fn open_connection(
        &self,
        ip: IpAddr,
        now: Instant,
    ) -> Result<ConnectionPermit, GuardError> {
        let config = &self.shared.config;
        let key = self.key(ip);
        let mut state = self.shared.lock();
        if state.connections >= config.max_connections {
            return Err(GuardError::ServerFull {
                retry_after: CONNECTION_RETRY,
            });
        }
        let address = entry(&mut state, config, key, now)?;
        if address.connections >= config.max_connections_per_ip {
            return Err(GuardError::TooManyConnections {
                retry_after: CONNECTION_RETRY,
            });
        }
        address
            .new_connections
            .try_take(now)
            .map_err(|retry_after| GuardError::ConnectingTooFast { retry_after })?;
        address.connections += 1;
        state.connections += 1;
        drop(state);
        Ok(ConnectionPermit {
            shared: self.shared.clone(),
            key,
        })
    }

    /// Checks a join from `ip`, before the room is looked up: refused while
    /// the address is blocked for unknown rooms (`Blocked`, the same answer
    /// for every room, existing or not) or has spent its join budget
    /// (`JoiningTooFast`). A blocked join does not charge the budget.
    pub fn check_join(&self, ip: IpAddr, now: Instant) -> Result<(), GuardError> {
        let config = &self.shared.config;
        let key = self.key(ip);
        let mut state = self.shared.lock();
        let address = entry(&mut state, config, key, now)?;
        if let Some(retry_after) = address.unknown_rooms.blocked_for(now) {
            return Err(GuardError::Blocked { retry_after });
        }
        address
            .joins
            .try_take(now)
            .map_err(|retry_after| GuardError::JoiningTooFast { retry_after })
    }

    /// Records a join from `ip` of a room that does not exist. The
    /// [`unknown_rooms_per_hour`](AbuseConfig::unknown_rooms_per_hour)-th
    /// within an hour blocks every join from the address for
    /// [`unknown_room_block`](AbuseConfig::unknown_room_block); returns that
    /// block length when this record starts it. Not recorded if the address
    /// is untracked and the table is full.
    pub fn record_unknown_room(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let config = &self.shared.config;
        let key = self.key(ip);
        let mut state = self.shared.lock();
        let address = entry(&mut state, config, key, now).ok()?;
        address.unknown_rooms.record(
            now,
            config.unknown_rooms_per_hour,
            HOUR,
            config.unknown_room_block,
        )
    }

    /// Checks whether `ip` may try a password for `room_id` now; call it
    /// before verifying. `Blocked` while a wrong-password block runs.
    pub fn check_password_block(
        &self,
        ip: IpAddr,
        room_id: &str,
        now: Instant,
    ) -> Result<(), GuardError> {
        let key = self.key(ip);
        let state = self.shared.lock();
        let Some(address) = state.addresses.get(&key) else {
            return Ok(());
        };
        let all = address
            .all_rooms_password_block
            .and_then(|until| until.checked_duration_since(now))
            .filter(|left| !left.is_zero());
        let room = address
            .wrong_passwords
            .get(room_id)
            .and_then(|f| f.blocked_for(now));
        match all.max(room) {
            Some(retry_after) => Err(GuardError::Blocked { retry_after }),
            None => Ok(()),
        }
    }

    /// Records a wrong password from `ip` for `room_id`. The
    /// [`wrong_passwords_per_room`](AbuseConfig::wrong_passwords_per_room)-th
    /// within the window blocks further attempts on that room for
    /// [`wrong_password_block`](AbuseConfig::wrong_password_block) (with the
    /// default 3: three wrong passwords, then the fourth attempt is refused).
    /// Returns the block length when this record starts a block. An address
    /// with counts for [`MAX_PASSWORD_ROOMS_PER_ADDRESS`] rooms that fails on
    /// yet another room is blocked on every room.
    pub fn record_wrong_password(
        &self,
        ip: IpAddr,
        room_id: &str,
        now: Instant,
    ) -> Option<Duration> {
        let config = &self.shared.config;
        let key = self.key(ip);
        let mut state = self.shared.lock();
        let address = entry(&mut state, config, key, now).ok()?;
        let (limit, block) = (config.wrong_passwords_per_room, config.wrong_password_block);
        if !address.wrong_passwords.contains_key(room_id) {
            address
                .wrong_passwords
                .retain(|_, f| !f.is_idle(now, block));
            if address.wrong_passwords.len() >= MAX_PASSWORD_ROOMS_PER_ADDRESS {
                address.all_rooms_password_block = Some(now + block);
                return Some(block);
            }
        }
        address
            .wrong_passwords
            .entry(room_id.to_owned())
            .or_insert_with(|| Failures::new(now))
            .record(now, limit, block, block)
    }

    /// Forgets every entry that no longer matters at `now`: addresses with
    /// no connection, full budgets and no count or block running. The guard
    /// sweeps by itself when its table is full; a server may also call this
    /// from a periodic timer to keep memory low.
    pub fn prune(&self, now: Instant) {
        let config = &self.shared.config;
        let mut state = self.shared.lock();
        sweep(&mut state, config, now);
    }

    fn key(&self, ip: IpAddr) -> IpAddr {
        address_key(ip, self.shared.config.ipv6_prefix_len)
    }
}

fn sweep(state: &mut State, config: &AbuseConfig, now: Instant) {
    state
        .addresses
        .retain(|_, address| !address.prune(config, now));
}

/// The entry for `key`, created if there is room (sweeping a full table at
/// most once per [`SWEEP_INTERVAL`]); `Saturated` if there is none.
fn entry<'a>(
    state: &'a mut State,
    config: &AbuseConfig,
    key: IpAddr,
    now: Instant,
) -> Result<&'a mut Address, GuardError> {
    if !state.addresses.contains_key(&key) && state.addresses.len() >= config.max_tracked_addresses
    {
        if state.next_sweep.is_none_or(|at| now >= at) {
            sweep(state, config, now);
            state.next_sweep = Some(now + SWEEP_INTERVAL);
        }
        if state.addresses.len() >= config.max_tracked_addresses {
            return Err(GuardError::Saturated {
                retry_after: CONNECTION_RETRY,
            });
        }
    }
    Ok(state
        .addresses
        .entry(key)
        .or_insert_with(|| Address::new(config, now)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const NS: Duration = Duration::from_nanos(1);

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    /// Roomy limits everywhere, so each test tightens only the rule it tests.
    fn loose() -> AbuseConfig {
        AbuseConfig {
            max_connections_per_ip: 1000,
            new_connections_per_ip_per_minute: 1000,
            joins_per_ip_per_minute: 1000,
            ..AbuseConfig::default()
        }
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = AbuseConfig::default();
        assert_eq!(c.max_connections, 10_000);
        assert_eq!(c.max_connections_per_ip, 256);
        assert_eq!(c.new_connections_per_ip_per_minute, 600);
        assert_eq!(c.joins_per_ip_per_minute, 600);
        assert_eq!(c.wrong_passwords_per_room, 3);
        assert_eq!(c.wrong_password_block, Duration::from_secs(1800));
        assert_eq!(c.unknown_rooms_per_hour, 5);
        assert_eq!(c.unknown_room_block, Duration::from_secs(3600));
        assert_eq!(c.ban_duration, Duration::from_secs(300));
        assert_eq!(c.max_tracked_addresses, 100_000);
        assert_eq!(c.ipv6_prefix_len, 64);
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn validation_names_the_field_and_new_clamps() {
        let bad = AbuseConfig {
            unknown_rooms_per_hour: 0,
            ..AbuseConfig::default()
        };
        let err = bad.validate().expect_err("zero");
        assert_eq!(err.field, "unknown_rooms_per_hour");
        assert_eq!(
            err.to_string(),
            "abuse.unknown_rooms_per_hour must be at least 1 (got 0)"
        );
        let prefix = AbuseConfig {
            ipv6_prefix_len: 129,
            ..AbuseConfig::default()
        };
        assert_eq!(
            prefix.validate().expect_err("prefix").field,
            "ipv6_prefix_len"
        );
        let forever = AbuseConfig {
            unknown_room_block: Duration::MAX,
            ..AbuseConfig::default()
        };
        assert_eq!(
            forever.validate().expect_err("too long").field,
            "unknown_room_block"
        );
        // Clamped, a huge block neither overflows nor ends early.
        let t0 = Instant::now();
        let guard = AbuseGuard::new(AbuseConfig {
            unknown_rooms_per_hour: 1,
            ..forever
        });
        assert_eq!(
            guard.record_unknown_room(ip("10.0.0.9"), t0),
            Some(MAX_BLOCK_DURATION)
        );
        assert!(
            guard
                .check_join(ip("10.0.0.9"), t0 + HOUR * 24 * 365)
                .is_err()
        );
        // A zero connection cap still lets one connection in, not none.
        let guard = AbuseGuard::new(AbuseConfig {
            max_connections_per_ip: 0,
            ..loose()
        });
        let _one = guard
            .open_connection(ip("10.0.0.1"), t0)
            .expect("clamped to 1");
        assert!(guard.open_connection(ip("10.0.0.1"), t0).is_err());
    }

    #[test]
    fn connection_cap_at_the_limit_and_permits_give_slots_back() {
        let t0 = Instant::now();
        let guard = AbuseGuard::new(AbuseConfig {
            max_connections_per_ip: 256,
            ..loose()
        });
        let a = ip("192.0.2.1");
        let mut permits: Vec<_> = (0..256)
            .map(|i| {
                guard
                    .open_connection(a, t0)
                    .unwrap_or_else(|e| panic!("{i}: {e}"))
            })
            .collect();
        let err = guard.open_connection(a, t0).expect_err("257th");
        assert_eq!(
            err,
            GuardError::TooManyConnections {
                retry_after: CONNECTION_RETRY
            }
        );
        assert_eq!(err.code(), ErrorCode::TooManyConnections);
        // Another address is not affected.
        let _other = guard
            .open_connection(ip("192.0.2.2"), t0)
            .expect("other address");
        // Closing one connection frees one slot.
        permits.pop();
        let _again = guard.open_connection(a, t0).expect("a slot was freed");
        assert!(guard.open_connection(a, t0).is_err());
        // Dropping the guard's other handle does not matter; clones share state.
        let clone = guard.clone();
        assert!(clone.open_connection(a, t0).is_err());
    }

    #[test]
    fn the_server_wide_cap_counts_every_address_and_charges_none() {
        let t0 = Instant::now();
        let guard = AbuseGuard::new(AbuseConfig {
            max_connections: 3,
            new_connections_per_ip_per_minute: 2,
            ..loose()
        });
        let (a, b, c) = (ip("192.0.2.1"), ip("192.0.2.2"), ip("192.0.2.3"));
        let first_a = guard.open_connection(a, t0).expect("a");
        let _second_a = guard.open_connection(a, t0).expect("a again");
        let _b = guard.open_connection(b, t0).expect("b");
        assert_eq!(guard.open_connections(), 3);
        // Full: an address never seen is refused as well as a known one, and
        // neither is tracked or charged for the refusal.
        let err = guard.open_connection(c, t0).expect_err("server full");
        assert_eq!(
            err,
            GuardError::ServerFull {
                retry_after: CONNECTION_RETRY
            }
        );
        assert_eq!(err.code(), ErrorCode::TooManyConnections);
        assert_eq!(
            err.to_string(),
            "the server has its maximum number of connections open; retry in 5 s"
        );
        assert_eq!(guard.tracked_addresses(), 2);
        for _ in 0..5 {
            assert!(matches!(
                guard.open_connection(b, t0),
                Err(GuardError::ServerFull { .. })
            ));
        }
        // One closes: one more gets in, and b still has its second new
        // connection of the minute (the refusals above spent nothing).
        drop(first_a);
        assert_eq!(guard.open_connections(), 2);
        let _second_b = guard.open_connection(b, t0).expect("a slot was freed");
        assert!(guard.open_connection(c, t0).is_err());
    }

    #[test]
    fn new_connection_rate_at_the_limit() {
        let t0 = Instant::now();
        let guard = AbuseGuard::new(AbuseConfig {
            new_connections_per_ip_per_minute: 6,
            ..loose()
        });
        let a = ip("198.51.100.7");
        for i in 0..6 {
            // Permits dropped at once: the rate counts openings, not open ones.
            drop(
                guard
                    .open_connection(a, t0)
                    .unwrap_or_else(|e| panic!("{i}: {e}")),
            );
        }
        // 6 per minute: one more every 10 s.
        let err = guard.open_connection(a, t0).expect_err("7th in the minute");
        assert_eq!(
            err,
            GuardError::ConnectingTooFast {
                retry_after: Duration::from_secs(10)
            }
        );
        assert_eq!(err.code(), ErrorCode::TooManyConnections);
        let t10 = t0 + Duration::from_secs(10);
        assert_eq!(
            guard
                .open_connection(a, t10 - NS)
                .expect_err("just early")
                .retry_after(),
            NS
        );
        let _ = guard.open_connection(a, t10).expect("after the wait");
        assert!(guard.open_connection(a, t10).is_err());
        // After a full minute the whole burst is back.
        let t70 = t10 + MINUTE;
        for _ in 0..6 {
            let _ = guard.open_connection(a, t70).expect("refilled");
        }
    }

    #[test]
    fn a_full_connection_cap_does_not_spend_the_rate_budget() {
        let t0 = Instant::now();
        let guard = AbuseGuard::new(AbuseConfig {
            max_connections_per_ip: 1,
            new_connections_per_ip_per_minute: 2,
            ..loose()
        });
        let a = ip("198.51.100.8");
        let first = guard.open_connection(a, t0).expect("first");
        for _ in 0..10 {
            assert!(matches!(
                guard.open_connection(a, t0),
                Err(GuardError::TooManyConnections { .. })
            ));
        }
        drop(first);
        let _second = guard
            .open_connection(a, t0)
            .expect("budget left for a second");
    }

    #[test]
    fn join_rate_at_the_limit() {
        let t0 = Instant::now();
        let guard = AbuseGuard::new(AbuseConfig {
            joins_per_ip_per_minute: 600,
            ..loose()
        });
        let a = ip("203.0.113.9");
        for i in 0..600 {
            guard
                .check_join(a, t0)
                .unwrap_or_else(|e| panic!("{i}: {e}"));
        }
        let err = guard.check_join(a, t0).expect_err("601st");
        assert_eq!(
            err,
            GuardError::JoiningTooFast {
                retry_after: Duration::from_millis(100)
            }
        );
        assert_eq!(err.code(), ErrorCode::RateLimited);
        assert!(
            guard
                .check_join(a, t0 + Duration::from_millis(100) - NS)
                .is_err()
        );
        guard
            .check_join(a, t0 + Duration::from_millis(100))
            .expect("one token back");
        guard
            .check_join(ip("203.0.113.10"), t0)
            .expect("other address");
    }

    #[test]
    fn unknown_rooms_block_every_join_at_the_limit() {
        let t0 = Instant::now();
        let guard = AbuseGuard::new(loose());
        let a = ip("192.0.2.50");
        for i in 0..4 {
            guard.check_join(a, t0).expect("before the limit");
            assert_eq!(guard.record_unknown_room(a, t0), None, "failure {i}");
        }
        guard
            .check_join(a, t0)
            .expect("4 unknown rooms: still allowed");
        // The 5th unknown room starts the block.
        assert_eq!(guard.record_unknown_room(a, t0), Some(HOUR));
        let err = guard.check_join(a, t0).expect_err("blocked");
        assert_eq!(err, GuardError::Blocked { retry_after: HOUR });
        assert_eq!(err.code(), ErrorCode::Blocked);
        assert_eq!(
            err.to_string(),
            "too many failed attempts from this address; retry in 3600 s"
        );
        let end = t0 + HOUR;
        assert_eq!(
            guard.check_join(a, end - NS),
            Err(GuardError::Blocked { retry_after: NS })
        );
        guard.check_join(a, end).expect("the block is over");
        // Another address is not blocked.
        guard
            .check_join(ip("192.0.2.51"), t0)
            .expect("other address");
        // After the block, a fresh count: 4 more are fine, the 5th blocks again.
        for _ in 0..4 {
            assert_eq!(guard.record_unknown_room(a, end), None);
        }
        guard.check_join(a, end).expect("4 after the block");
        assert_eq!(guard.record_unknown_room(a, end), Some(HOUR));
        assert!(guard.check_join(a, end).is_err());
    }

    #[test]
    fn unknown_rooms_are_counted_per_hour() {
        let t0 = Instant::now();
        let guard = AbuseGuard::new(loose());
        let a = ip("192.0.2.60");
        for _ in 0..4 {
            guard.record_unknown_room(a, t0);
        }
        // The window opened at the first failure; an hour later it starts over.
        assert_eq!(guard.record_unknown_room(a, t0 + HOUR), None);
        guard.check_join(a, t0 + HOUR).expect("window restarted");
        // Within the window, the 5th blocks even if spread out.
        let guard = AbuseGuard::new(loose());
        for i in 0..5u32 {
            guard.record_unknown_room(a, t0 + Duration::from_secs(700) * i);
        }
        assert!(guard.check_join(a, t0 + Duration::from_secs(2800)).is_err());
    }

    #[test]
    fn a_blocked_join_does_not_spend_the_join_budget() {
        let t0 = Instant::now();
        let guard = AbuseGuard::new(AbuseConfig {
            joins_per_ip_per_minute: 2,
            unknown_rooms_per_hour: 1,
            unknown_room_block: Duration::from_secs(10),
            ..loose()
        });
        let a = ip("192.0.2.70");
        guard.record_unknown_room(a, t0);
        for _ in 0..100 {
            assert!(matches!(
                guard.check_join(a, t0),
                Err(GuardError::Blocked { .. })
            ));
        }
        let t10 = t0 + Duration::from_secs(10);
        guard.check_join(a, t10).expect("1 of 2");
        guard.check_join(a, t10).expect("2 of 2");
        assert!(matches!(
            guard.check_join(a, t10),
            Err(GuardError::JoiningTooFast { .. })
        ));
    }

    #[test]
    fn wrong_passwords_block_the_fourth_attempt_on_that_room() {
        let t0 = Instant::now();
        let guard = AbuseGuard::new(loose());
        let a = ip("203.0.113.20");
        let block = Duration::from_secs(30 * 60);
        for i in 0..2 {
            guard
                .check_password_block(a, "vault", t0)
                .expect("attempt allowed");
            assert_eq!(
                guard.record_wrong_password(a, "vault", t0),
                None,
                "failure {i}"
            );
        }
        guard
            .check_password_block(a, "vault", t0)
            .expect("third attempt allowed");
        assert_eq!(guard.record_wrong_password(a, "vault", t0), Some(block));
        // The fourth attempt is refused for the block time.
        let err = guard.check_password_block(a, "vault", t0).expect_err("4th");
        assert_eq!(err, GuardError::Blocked { retry_after: block });
        assert_eq!(err.code(), ErrorCode::Blocked);
        // Only that room, only that address.
        guard
            .check_password_block(a, "other", t0)
            .expect("other room");
        guard
            .check_password_block(ip("203.0.113.21"), "vault", t0)
            .expect("other address");
        // The block holds until its end, then lifts.
        assert!(
            guard
                .check_password_block(a, "vault", t0 + block - NS)
                .is_err()
        );
        guard
            .check_password_block(a, "vault", t0 + block)
            .expect("the block is over");
        // A fresh count after the block: three more failures, then blocked again.
        let later = t0 + block;
        assert_eq!(guard.record_wrong_password(a, "vault", later), None);
        assert_eq!(guard.record_wrong_password(a, "vault", later), None);
        assert_eq!(guard.record_wrong_password(a, "vault", later), Some(block));
        assert!(guard.check_password_block(a, "vault", later).is_err());
    }

    #[test]
    fn wrong_passwords_far_apart_do_not_add_up() {
        let t0 = Instant::now();
        let guard = AbuseGuard::new(loose());
        let a = ip("203.0.113.30");
        let window = Duration::from_secs(30 * 60);
        guard.record_wrong_password(a, "vault", t0);
        guard.record_wrong_password(a, "vault", t0 + Duration::from_secs(60));
        // The window (30 min from the first) is over: this is a new first failure.
        assert_eq!(guard.record_wrong_password(a, "vault", t0 + window), None);
        guard
            .check_password_block(a, "vault", t0 + window)
            .expect("not three within the window");
        // Within the window, three block.
        assert_eq!(guard.record_wrong_password(a, "vault", t0 + window), None);
        assert!(
            guard
                .record_wrong_password(a, "vault", t0 + window)
                .is_some()
        );
    }

    #[test]
    fn too_many_password_rooms_block_every_room() {
        let t0 = Instant::now();
        let guard = AbuseGuard::new(loose());
        let a = ip("203.0.113.40");
        for i in 0..MAX_PASSWORD_ROOMS_PER_ADDRESS {
            assert_eq!(
                guard.record_wrong_password(a, &format!("room-{i}"), t0),
                None
            );
        }
        guard.check_password_block(a, "fresh", t0).expect("not yet");
        let block = guard.record_wrong_password(a, "one-more", t0);
        assert_eq!(block, Some(Duration::from_secs(1800)));
        assert!(guard.check_password_block(a, "fresh", t0).is_err());
        assert!(guard.check_password_block(a, "room-0", t0).is_err());
        guard
            .check_password_block(a, "fresh", t0 + Duration::from_secs(1800))
            .expect("lifted");
    }

    #[test]
    fn ipv6_counts_by_prefix_and_mapped_ipv4_as_ipv4() {
        assert_eq!(
            address_key(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), 64),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            address_key(ip("2001:db8:1:2:3:4:5:6"), 128),
            ip("2001:db8:1:2:3:4:5:6")
        );
        assert_eq!(address_key(ip("2001:db8::1"), 0), ip("::"));
        assert_eq!(
            address_key(ip("2001:db8:1:2ff::1"), 56),
            ip("2001:db8:1:200::")
        );
        assert_eq!(address_key(ip("::ffff:192.0.2.1"), 64), ip("192.0.2.1"));
        assert_eq!(address_key(ip("192.0.2.1"), 64), ip("192.0.2.1"));

        let t0 = Instant::now();
        let guard = AbuseGuard::new(AbuseConfig {
            max_connections_per_ip: 2,
            ..loose()
        });
        let _a = guard.open_connection(ip("2001:db8:1:2::1"), t0).expect("1");
        let _b = guard
            .open_connection(ip("2001:db8:1:2::ffff"), t0)
            .expect("2");
        assert!(
            guard.open_connection(ip("2001:db8:1:2:9::9"), t0).is_err(),
            "same /64"
        );
        let _c = guard
            .open_connection(ip("2001:db8:1:3::1"), t0)
            .expect("another /64");
        let _d = guard.open_connection(ip("192.0.2.1"), t0).expect("v4 1");
        let _e = guard
            .open_connection(ip("::ffff:192.0.2.1"), t0)
            .expect("v4 2");
        assert!(
            guard.open_connection(ip("192.0.2.1"), t0).is_err(),
            "mapped counted"
        );
    }

    #[test]
    fn a_full_table_fails_closed_for_new_addresses_and_sweeps_idle_ones() {
        let t0 = Instant::now();
        let guard = AbuseGuard::new(AbuseConfig {
            max_tracked_addresses: 2,
            ..loose()
        });
        let a = ip("10.0.0.1");
        let b = ip("10.0.0.2");
        let c = ip("10.0.0.3");
        let pa = guard.open_connection(a, t0).expect("a");
        let _pb = guard.open_connection(b, t0).expect("b");
        let err = guard.open_connection(c, t0).expect_err("table full");
        assert_eq!(
            err,
            GuardError::Saturated {
                retry_after: CONNECTION_RETRY
            }
        );
        assert_eq!(err.code(), ErrorCode::TooManyConnections);
        assert!(matches!(
            guard.check_join(c, t0),
            Err(GuardError::Saturated { .. })
        ));
        assert_eq!(guard.record_unknown_room(c, t0), None);
        // Tracked addresses carry on.
        let pa2 = guard.open_connection(a, t0).expect("a is tracked");
        guard.check_join(b, t0).expect("b is tracked");
        assert_eq!(guard.tracked_addresses(), 2);

        // a closes everything; its entry is idle once its budgets refill.
        drop(pa);
        drop(pa2);
        let t_idle = t0 + MINUTE;
        guard
            .open_connection(c, t_idle)
            .map(drop)
            .expect("a was swept");
        assert_eq!(guard.tracked_addresses(), 2);
    }

    #[test]
    fn sweeping_a_full_table_is_rate_limited_and_keeps_blocks() {
        let t0 = Instant::now();
        let guard = AbuseGuard::new(AbuseConfig {
            max_tracked_addresses: 1,
            ..loose()
        });
        let a = ip("10.0.1.1");
        let b = ip("10.0.1.2");
        // a is blocked for unknown rooms, with no connection open.
        for _ in 0..5 {
            guard.record_unknown_room(a, t0);
        }
        // Even long after its budgets refilled, a's block keeps it tracked.
        let t1 = t0 + Duration::from_secs(120);
        assert!(matches!(
            guard.open_connection(b, t1),
            Err(GuardError::Saturated { .. })
        ));
        assert!(
            guard.check_join(a, t1).is_err(),
            "the block is not forgotten"
        );
        // After the block, the next sweep frees the slot.
        let t_end = t0 + HOUR;
        guard.open_connection(b, t_end).map(drop).expect("a swept");

        // Sweeps of a full table run at most once a second.
        let guard = AbuseGuard::new(AbuseConfig {
            max_tracked_addresses: 1,
            ..loose()
        });
        let p = guard.open_connection(a, t0).expect("a");
        assert!(
            guard.open_connection(b, t0).is_err(),
            "swept at t0, a is open"
        );
        drop(p);
        // a is idle 60 ms later (its one new-connection token is back), but
        // the table is not swept again before t0 + 1 s.
        let idle = t0 + Duration::from_millis(500);
        assert!(matches!(
            guard.open_connection(b, idle),
            Err(GuardError::Saturated { .. })
        ));
        assert!(guard.open_connection(b, t0 + SWEEP_INTERVAL - NS).is_err());
        guard
            .open_connection(b, t0 + SWEEP_INTERVAL)
            .map(drop)
            .expect("swept again");
    }

    #[test]
    fn prune_forgets_only_what_no_longer_matters() {
        let t0 = Instant::now();
        let guard = AbuseGuard::new(loose());
        let open = guard.open_connection(ip("10.0.2.1"), t0).expect("open");
        drop(guard.open_connection(ip("10.0.2.2"), t0).expect("closed"));
        guard.record_wrong_password(ip("10.0.2.3"), "vault", t0);
        assert_eq!(guard.tracked_addresses(), 3);
        guard.prune(t0 + MINUTE);
        // The open connection stays; the closed one's budget refilled; the
        // wrong password is counted for 30 min.
        assert_eq!(guard.tracked_addresses(), 2);
        guard.prune(t0 + Duration::from_secs(30 * 60));
        assert_eq!(guard.tracked_addresses(), 1);
        drop(open);
        guard.prune(t0 + Duration::from_secs(30 * 60));
        assert_eq!(guard.tracked_addresses(), 0);
    }

    #[test]
    fn retry_after_details_round_up_to_milliseconds() {
        assert_eq!(retry_after_ms(Duration::from_nanos(1)), 1);
        assert_eq!(retry_after_ms(Duration::from_millis(100)), 100);
        assert_eq!(retry_after_ms(Duration::from_micros(100_001)), 101);
        assert_eq!(retry_after_ms(Duration::MAX), u64::MAX);
        let e = GuardError::Blocked {
            retry_after: Duration::from_micros(1500),
        };
        assert_eq!(e.detail(), ErrorDetail::RetryAfter { retry_after_ms: 2 });
        assert_eq!(e.retry_after(), Duration::from_micros(1500));
        assert_eq!(
            e.to_string(),
            "too many failed attempts from this address; retry in 1 s"
        );
    }

    #[test]
    fn blocks_read_the_same_whatever_caused_them() {
        let t0 = Instant::now();
        let guard = AbuseGuard::new(AbuseConfig {
            unknown_room_block: Duration::from_secs(60),
            wrong_password_block: Duration::from_secs(60),
            ..loose()
        });
        let a = ip("10.9.9.9");
        for _ in 0..5 {
            guard.record_unknown_room(a, t0);
        }
        for _ in 0..3 {
            guard.record_wrong_password(a, "vault", t0);
        }
        let join = guard.check_join(a, t0).expect_err("join blocked");
        let password = guard
            .check_password_block(a, "vault", t0)
            .expect_err("pw blocked");
        assert_eq!(join, password);
        assert_eq!(join.to_string(), password.to_string());
        assert!(!join.to_string().contains("10.9.9.9"));
    }

    #[test]
    fn the_guard_is_shared_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<AbuseGuard>();
        assert_send_sync::<ConnectionPermit>();
        let t0 = Instant::now();
        let guard = AbuseGuard::new(AbuseConfig {
            max_connections_per_ip: 40,
            ..loose()
        });
        let a = IpAddr::V4(Ipv4Addr::new(10, 1, 1, 1));
        let permits = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let g = guard.clone();
                    s.spawn(move || {
                        (0..20)
                            .filter_map(|_| g.open_connection(a, t0).ok())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("thread"))
                .collect::<Vec<_>>()
        });
        assert_eq!(permits.len(), 40, "exactly the cap, across threads");
        drop(permits);
        let again: Vec<_> = (0..40)
            .map(|_| guard.open_connection(a, t0).expect("all slots back"))
            .collect();
        assert_eq!(again.len(), 40);
        assert!(format!("{:?}", again[0]).starts_with("ConnectionPermit"));
    }
}
