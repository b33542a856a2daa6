//! Server-wide counters, read by `/stats`, `/metrics`, the bench and tests.
//!
//! Plain relaxed atomics: cheap enough for the tick path, and exact once the
//! server is quiet. Nothing here locks or allocates when an event is counted:
//! labelled families are fixed arrays of counters indexed by a small enum or
//! by the error code's position in [`ErrorCode::ALL`], and histograms are
//! fixed buckets (see [`Histogram`]). The one exception is the first sighting
//! of a command kind ([`CommandKinds`]), at most [`MAX_COMMAND_KINDS`] times
//! over the server's life. `metrics.rs` turns these into Prometheus text when
//! `/metrics` is scraped.

use arc_swap::ArcSwap;
use chorus_protocol::ErrorCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The transports, as sessions name them.
pub const TRANSPORTS: [&str; 2] = ["webtransport", "websocket"];

/// Label values of the error-code families: each known code's
/// [`ErrorCode::name`], then `"unknown"`.
pub const CODE_SLOTS: usize = ErrorCode::ALL.len() + 1;

/// The slot of `code` in the error-code families.
pub fn code_slot(code: ErrorCode) -> usize {
    ErrorCode::ALL
        .iter()
        .position(|c| *c == code)
        .unwrap_or(ErrorCode::ALL.len())
}

/// The label value of an error-code slot.
pub fn code_slot_name(slot: usize) -> &'static str {
    ErrorCode::ALL.get(slot).map_or("unknown", |c| c.name())
}

/// One counter per error code.
#[derive(Debug)]
pub struct CodeCounters([Counter; CODE_SLOTS]);

impl Default for CodeCounters {
    fn default() -> Self {
        CodeCounters(std::array::from_fn(|_| Counter::default()))
    }
}

impl CodeCounters {
    pub fn inc(&self, code: ErrorCode) {
        self.0[code_slot(code)].inc();
    }
    pub fn get(&self, code: ErrorCode) -> u64 {
        self.0[code_slot(code)].get()
    }
    /// `(label value, count)` for every code counted at least once.
    pub fn nonzero(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.0
            .iter()
            .enumerate()
            .map(|(slot, c)| (code_slot_name(slot), c.get()))
            .filter(|(_, n)| *n > 0)
    }
}

/// A small set of label values.
pub trait Label: Copy + 'static {
    /// Every value, in slot order.
    const ALL: &'static [Self];
    /// The slot of this value.
    fn slot(self) -> usize;
    /// The label value.
    fn name(self) -> &'static str;
}

/// Defines a label enum.
macro_rules! label_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $label:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl Label for $name {
            const ALL: &'static [$name] = &[$($name::$variant,)+];

            fn slot(self) -> usize {
                self as usize
            }

            fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $label,)+
                }
            }
        }
    };
}

label_enum! {
    /// Why a tick did not get where it was going.
    TickDrop {
        /// A newer tick of the same sender replaced it before a slow
        /// receiver's transport took it (WebSocket; quinn's datagram buffer
        /// drops old datagrams without telling, see `ARCHITECTURE.md`).
        SlowReceiver => "slow_receiver",
        /// The sender's tick budget was spent (counted once per tick).
        RateLimit => "rate_limit",
        /// Over the tick payload limit (incoming), or larger than a
        /// receiver's connection carries (per receiver).
        Oversize => "oversize",
        /// The receiver's connection had already gone.
        ReceiverClosed => "receiver_closed",
    }
}

label_enum! {
    /// The per-session rate budget a refused message or tick was spent against.
    Budget {
        Messages => "messages",
        StateUpdates => "state_updates",
        Commands => "commands",
        Joins => "joins",
        Direct => "direct",
        Ticks => "ticks",
    }
}

label_enum! {
    /// Why a session ended without an error of ours.
    QuietEnd {
        /// The client closed the connection, or it was lost or failed.
        Closed => "closed",
        /// Silent past the heartbeat timeout (QUIC idle timeout, WebSocket read timeout).
        TimedOut => "timed_out",
        /// Another connection resumed the session.
        Replaced => "replaced",
    }
}

label_enum! {
    /// What the server did when a room lost its host (`RoomOutput::Failover`).
    FailoverKind {
        /// The host went silent; a substitute hosts now.
        HostAway => "host_away",
        /// The room had no host left (the host left); a substitute hosts now.
        HostLeft => "host_left",
        /// The host went silent; the room's mode pauses the timelines instead.
        Paused => "paused",
        /// The away host came back within the reclaim window and hosts again.
        Reclaimed => "reclaimed",
    }
}

/// How a session ended: quietly, or with the error code told to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    Quiet(QuietEnd),
    Error(ErrorCode),
}

/// One counter per value of a [`Label`].
#[derive(Debug)]
pub struct LabelCounters<L: Label> {
    counters: Box<[Counter]>,
    _label: std::marker::PhantomData<L>,
}

impl<L: Label> Default for LabelCounters<L> {
    fn default() -> Self {
        LabelCounters {
            counters: L::ALL.iter().map(|_| Counter::default()).collect(),
            _label: std::marker::PhantomData,
        }
    }
}

impl<L: Label> LabelCounters<L> {
    pub fn get(&self, label: L) -> &Counter {
        &self.counters[label.slot()]
    }

    pub fn sum(&self) -> u64 {
        self.counters.iter().map(Counter::get).sum()
    }

    /// `(label value, count)` for every value, in slot order.
    pub fn all(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        L::ALL.iter().map(|l| (l.name(), self.get(*l).get()))
    }
}

/// A histogram of durations with fixed buckets: one relaxed increment of a
/// bucket and of the sum per observation, no lock, no allocation, constant
/// memory however long nobody scrapes.
#[derive(Debug)]
pub struct Histogram {
    /// Upper bounds (inclusive), in nanoseconds, ascending.
    bounds_ns: &'static [u64],
    /// One count per bound, plus the `+Inf` bucket; not cumulative.
    buckets: Box<[AtomicU64]>,
    sum_ns: AtomicU64,
}

/// A histogram's figures, cumulative as Prometheus wants them.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound, observations at or below it)`; the last bound is `+Inf`.
    pub buckets: Vec<(f64, u64)>,
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    pub fn new(bounds_ns: &'static [u64]) -> Self {
        debug_assert!(bounds_ns.windows(2).all(|w| w[0] < w[1]));
        Histogram {
            bounds_ns,
            buckets: (0..=bounds_ns.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_ns: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: Duration) {
        let ns = u64::try_from(value.as_nanos()).unwrap_or(u64::MAX);
        let bucket = self.bounds_ns.partition_point(|&bound| bound < ns);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The figures in seconds.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = 0;
        let buckets = self
            .buckets
            .iter()
            .enumerate()
            .map(|(i, b)| {
                cumulative += b.load(Ordering::Relaxed);
                let bound = self
                    .bounds_ns
                    .get(i)
                    .map_or(f64::INFINITY, |ns| *ns as f64 / 1e9);
                (bound, cumulative)
            })
            .collect();
        HistogramSnapshot {
            buckets,
            sum: self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
            count: cumulative,
        }
    }
}

const MS: u64 = 1_000_000;
const US: u64 = 1_000;

/// Handshake time: 1 ms to 10 s.
pub const HANDSHAKE_BOUNDS_NS: &[u64] = &[
    MS,
    2 * MS + MS / 2,
    5 * MS,
    10 * MS,
    25 * MS,
    50 * MS,
    100 * MS,
    250 * MS,
    500 * MS,
    1000 * MS,
    2500 * MS,
    5000 * MS,
    10_000 * MS,
];

/// Round-trip time: 0.5 ms to 5 s.
pub const RTT_BOUNDS_NS: &[u64] = &[
    MS / 2,
    MS,
    2 * MS + MS / 2,
    5 * MS,
    10 * MS,
    25 * MS,
    50 * MS,
    100 * MS,
    250 * MS,
    500 * MS,
    1000 * MS,
    2500 * MS,
    5000 * MS,
];

/// Command fan-out and store commits: 10 µs to 250 ms.
pub const FANOUT_BOUNDS_NS: &[u64] = &[
    10 * US,
    25 * US,
    50 * US,
    100 * US,
    250 * US,
    500 * US,
    MS,
    2 * MS + MS / 2,
    5 * MS,
    10 * MS,
    25 * MS,
    50 * MS,
    100 * MS,
    250 * MS,
];

/// What one transport counts besides opened and closed connections.
#[derive(Debug)]
pub struct TransportStats {
    /// Sessions that completed the handshake (the server's `Hello` queued).
    pub sessions_opened: Counter,
    /// From the connection's arrival to the server's `Hello`.
    pub handshake: Histogram,
    /// The connection's round-trip time, sampled at each client `Ping`.
    pub rtt: Histogram,
}

impl Default for TransportStats {
    fn default() -> Self {
        TransportStats {
            sessions_opened: Counter::default(),
            handshake: Histogram::new(HANDSHAKE_BOUNDS_NS),
            rtt: Histogram::new(RTT_BOUNDS_NS),
        }
    }
}

/// Command kinds that get their own label, at most (the rest are `"other"`).
pub const MAX_COMMAND_KINDS: usize = 32;

/// The label of command kinds past [`MAX_COMMAND_KINDS`].
pub const OTHER_KIND: &str = "other";

/// Command kinds are client-chosen strings: the first [`MAX_COMMAND_KINDS`]
/// seen (server-wide) get a label of their own, later ones count as
/// [`OTHER_KIND`], so a client cannot grow `/metrics` without bound.
#[derive(Debug, Default)]
pub struct CommandKinds {
    kinds: ArcSwap<Vec<Box<str>>>,
    adding: Mutex<()>,
}

impl CommandKinds {
    /// The slot of `kind`: its position, or [`MAX_COMMAND_KINDS`] for "other".
    /// Lock-free once the kind has been seen.
    pub fn slot(&self, kind: &str) -> usize {
        if let Some(slot) = self.kinds.load().iter().position(|k| **k == *kind) {
            return slot;
        }
        let _adding = self.adding.lock().unwrap_or_else(|e| e.into_inner());
        let kinds = self.kinds.load();
        if let Some(slot) = kinds.iter().position(|k| **k == *kind) {
            return slot;
        }
        if kinds.len() >= MAX_COMMAND_KINDS {
            return MAX_COMMAND_KINDS;
        }
        let mut grown = Vec::clone(&kinds);
        grown.push(kind.into());
        let slot = grown.len() - 1;
        self.kinds.store(std::sync::Arc::new(grown));
        slot
    }

    /// The label value of a slot.
    pub fn name(&self, slot: usize) -> String {
        self.kinds
            .load()
            .get(slot)
            .map_or_else(|| OTHER_KIND.to_owned(), |k| k.to_string())
    }
}

/// How a state update or command a room handled came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    /// A command whose idempotency key the room had already seen.
    Duplicate,
    /// Refused with this code.
    Refused(ErrorCode),
}

/// Label values of [`Outcome`] slots: applied, duplicate, then error codes.
pub const OUTCOME_SLOTS: usize = 2 + CODE_SLOTS;

fn outcome_slot(outcome: Outcome) -> usize {
    match outcome {
        Outcome::Applied => 0,
        Outcome::Duplicate => 1,
        Outcome::Refused(code) => 2 + code_slot(code),
    }
}

fn outcome_name(slot: usize) -> &'static str {
    match slot {
        0 => "applied",
        1 => "duplicate",
        code => code_slot_name(code - 2),
    }
}

/// Counters by outcome.
#[derive(Debug)]
pub struct OutcomeCounters([Counter; OUTCOME_SLOTS]);

impl Default for OutcomeCounters {
    fn default() -> Self {
        OutcomeCounters(std::array::from_fn(|_| Counter::default()))
    }
}

impl OutcomeCounters {
    pub fn inc(&self, outcome: Outcome) {
        self.0[outcome_slot(outcome)].inc();
    }
    pub fn get(&self, outcome: Outcome) -> u64 {
        self.0[outcome_slot(outcome)].get()
    }
    pub fn sum(&self) -> u64 {
        self.0.iter().map(Counter::get).sum()
    }
    /// `(label value, count)` for every outcome counted at least once.
    pub fn nonzero(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.0
            .iter()
            .enumerate()
            .map(|(slot, c)| (outcome_name(slot), c.get()))
            .filter(|(_, n)| *n > 0)
    }
}

/// Commands by kind (see [`CommandKinds`]) and outcome.
#[derive(Debug)]
pub struct CommandStats {
    pub kinds: CommandKinds,
    /// One row per kind slot, the last one for "other".
    counts: Box<[OutcomeCounters]>,
}

impl Default for CommandStats {
    fn default() -> Self {
        CommandStats {
            kinds: CommandKinds::default(),
            counts: (0..=MAX_COMMAND_KINDS)
                .map(|_| OutcomeCounters::default())
                .collect(),
        }
    }
}

impl CommandStats {
    /// Counts a command of the kind in `slot` (from [`CommandKinds::slot`]).
    pub fn count(&self, slot: usize, outcome: Outcome) {
        self.counts[slot.min(MAX_COMMAND_KINDS)].inc(outcome);
    }

    /// `(kind, outcome, count)` for every pair counted at least once.
    pub fn nonzero(&self) -> Vec<(String, &'static str, u64)> {
        let mut out = Vec::new();
        for (slot, row) in self.counts.iter().enumerate() {
            let mut name = None;
            for (outcome, n) in row.nonzero() {
                let kind = name.get_or_insert_with(|| self.kinds.name(slot));
                out.push((kind.clone(), outcome, n));
            }
        }
        out
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().map(OutcomeCounters::sum).sum()
    }
}

/// See the [module docs](self).
#[derive(Debug)]
pub struct ServerStats {
    /// Connections accepted (each runs a session), every transport.
    pub sessions_opened: Counter,
    /// Sessions taken over by a resuming connection.
    pub sessions_resumed: Counter,
    /// Hellos with a resume token the server could not resume.
    pub resumes_failed: Counter,
    /// Connections ended, every transport.
    pub sessions_closed: Counter,
    pub webtransport_opened: Counter,
    pub webtransport_closed: Counter,
    pub websocket_opened: Counter,
    pub websocket_closed: Counter,
    /// Handshakes and round trips, per transport (see [`Self::transport`]).
    pub webtransport: TransportStats,
    pub websocket: TransportStats,
    /// Sessions ended without an error, by why.
    pub quiet_ends: LabelCounters<QuietEnd>,
    /// Sessions ended with an error told to the client, by its code.
    pub error_ends: CodeCounters,
    pub rooms_created: Counter,
    /// Rooms that ended after their idle TTL.
    pub rooms_expired: Counter,
    /// Rooms a host closed.
    pub rooms_closed: Counter,
    /// Ticks accepted from clients.
    pub ticks_in: Counter,
    /// Tick copies handed to receivers' transports.
    pub ticks_out: Counter,
    /// Tick copies dropped because a receiver's transport could not carry
    /// them (slow receiver, oversize or closed receiver; see `tick_drops`).
    pub ticks_dropped: Counter,
    /// Ticks and tick copies dropped, by [`TickDrop`].
    pub tick_drops: LabelCounters<TickDrop>,
    /// Tick datagrams refused (undecodable, not joined, forged sender,
    /// forbidden, rate limited).
    pub ticks_rejected: Counter,
    /// Control messages received.
    pub reliable_in: Counter,
    /// Control messages queued to sessions by rooms.
    pub reliable_out: Counter,
    /// Error messages sent to clients (the sum of `errors`).
    pub errors_sent: Counter,
    /// Error messages sent to clients, by code.
    pub errors: CodeCounters,
    pub slow_consumer_disconnects: Counter,
    /// Messages and ticks refused by a session's rate budgets.
    pub rate_limited: Counter,
    /// The same, by budget.
    pub rate_limited_by: LabelCounters<Budget>,
    /// Sessions closed for repeated rate-limit violations.
    pub rate_limit_disconnects: Counter,
    /// Bytes of completed pack uploads.
    pub pack_bytes_in: Counter,
    /// Bytes of packs sent to clients.
    pub pack_bytes_out: Counter,
    /// State writes (`SetState`, `DeleteState`) rooms handled, by outcome.
    pub state_updates: OutcomeCounters,
    /// Commands rooms handled, by kind and outcome.
    pub commands: CommandStats,
    /// From a room taking an applied command off its inbox to the last copy
    /// of its event queued to a member's outbox.
    pub command_fanout: Histogram,
    /// What rooms did when they lost their host, by [`FailoverKind`].
    pub failovers: LabelCounters<FailoverKind>,
    /// The on-disk store's writer.
    pub store: StoreStats,
}

/// Figures of the store's writer (all zero without a store).
#[derive(Debug)]
pub struct StoreStats {
    /// Transactions committed.
    pub commits: Counter,
    /// Commits that failed (and were retried).
    pub commit_failures: Counter,
    /// Writes (a room's changes, a pack) committed.
    pub writes: Counter,
    /// From the start of a transaction to its commit returning (fsync included).
    pub commit_duration: Histogram,
}

impl Default for StoreStats {
    fn default() -> Self {
        StoreStats {
            commits: Counter::default(),
            commit_failures: Counter::default(),
            writes: Counter::default(),
            commit_duration: Histogram::new(FANOUT_BOUNDS_NS),
        }
    }
}

impl Default for ServerStats {
    fn default() -> Self {
        ServerStats {
            sessions_opened: Counter::default(),
            sessions_resumed: Counter::default(),
            resumes_failed: Counter::default(),
            sessions_closed: Counter::default(),
            webtransport_opened: Counter::default(),
            webtransport_closed: Counter::default(),
            websocket_opened: Counter::default(),
            websocket_closed: Counter::default(),
            webtransport: TransportStats::default(),
            websocket: TransportStats::default(),
            quiet_ends: LabelCounters::default(),
            error_ends: CodeCounters::default(),
            rooms_created: Counter::default(),
            rooms_expired: Counter::default(),
            rooms_closed: Counter::default(),
            ticks_in: Counter::default(),
            ticks_out: Counter::default(),
            ticks_dropped: Counter::default(),
            tick_drops: LabelCounters::default(),
            ticks_rejected: Counter::default(),
            reliable_in: Counter::default(),
            reliable_out: Counter::default(),
            errors_sent: Counter::default(),
            errors: CodeCounters::default(),
            slow_consumer_disconnects: Counter::default(),
            rate_limited: Counter::default(),
            rate_limited_by: LabelCounters::default(),
            rate_limit_disconnects: Counter::default(),
            pack_bytes_in: Counter::default(),
            pack_bytes_out: Counter::default(),
            state_updates: OutcomeCounters::default(),
            commands: CommandStats::default(),
            command_fanout: Histogram::new(FANOUT_BOUNDS_NS),
            failovers: LabelCounters::default(),
            store: StoreStats::default(),
        }
    }
}

impl ServerStats {
    /// Sessions opened and closed on one transport (see [`TRANSPORTS`]).
    pub fn transport_counters(&self, transport: &str) -> (&Counter, &Counter) {
        match transport {
            "websocket" => (&self.websocket_opened, &self.websocket_closed),
            _ => (&self.webtransport_opened, &self.webtransport_closed),
        }
    }

    /// Handshakes and round trips on one transport (see [`TRANSPORTS`]).
    pub fn transport(&self, transport: &str) -> &TransportStats {
        match transport {
            "websocket" => &self.websocket,
            _ => &self.webtransport,
        }
    }

    /// Sessions open now.
    pub fn sessions_open(&self) -> u64 {
        self.sessions_opened
            .get()
            .saturating_sub(self.sessions_closed.get())
    }

    /// A session on `transport` ended.
    pub fn session_closed(&self, transport: &str, end: SessionEnd) {
        match end {
            SessionEnd::Quiet(reason) => self.quiet_ends.get(reason).inc(),
            SessionEnd::Error(code) => self.error_ends.inc(code),
        }
        self.transport_counters(transport).1.inc();
        self.sessions_closed.inc();
    }

    /// `(reason, count)` of ended sessions, for every reason seen.
    pub fn session_ends(&self) -> Vec<(&'static str, u64)> {
        self.quiet_ends
            .all()
            .filter(|(_, n)| *n > 0)
            .chain(self.error_ends.nonzero())
            .collect()
    }

    /// An error message with `code` went to a client.
    pub fn error_sent(&self, code: ErrorCode) {
        self.errors.inc(code);
        self.errors_sent.inc();
    }

    /// A message or tick was refused by `budget`.
    pub fn rate_limit_hit(&self, budget: Budget) {
        self.rate_limited_by.get(budget).inc();
        self.rate_limited.inc();
    }

    /// Ticks or tick copies dropped for `reason`.
    pub fn ticks_dropped_for(&self, reason: TickDrop, n: u64) {
        if n > 0 {
            self.tick_drops.get(reason).add(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_code_has_its_own_slot() {
        for (i, code) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(code_slot(*code), i);
            assert_eq!(code_slot_name(i), code.name());
        }
        assert_eq!(code_slot(ErrorCode::Unknown(999)), CODE_SLOTS - 1);
        assert_eq!(code_slot_name(CODE_SLOTS - 1), "unknown");
    }

    #[test]
    fn histograms_count_into_the_first_bound_at_or_above() {
        let h = Histogram::new(&[10, 20]);
        h.observe(Duration::from_nanos(5));
        h.observe(Duration::from_nanos(10));
        h.observe(Duration::from_nanos(11));
        h.observe(Duration::from_secs(1));
        let s = h.snapshot();
        assert_eq!(
            s.buckets,
            [(10e-9, 2), (20e-9, 3), (f64::INFINITY, 4)].to_vec()
        );
        assert_eq!(s.count, 4);
        assert!((s.sum - (1.0 + 26e-9)).abs() < 1e-12);
    }

    #[test]
    fn command_kinds_past_the_cap_are_other() {
        let stats = CommandStats::default();
        for i in 0..MAX_COMMAND_KINDS {
            assert_eq!(stats.kinds.slot(&format!("k{i}")), i);
        }
        assert_eq!(stats.kinds.slot("k3"), 3, "a known kind keeps its slot");
        assert_eq!(stats.kinds.slot("one-too-many"), MAX_COMMAND_KINDS);
        assert_eq!(stats.kinds.slot("another"), MAX_COMMAND_KINDS);
        stats.count(3, Outcome::Applied);
        stats.count(MAX_COMMAND_KINDS, Outcome::Duplicate);
        stats.count(
            stats.kinds.slot("another"),
            Outcome::Refused(ErrorCode::Forbidden),
        );
        let mut got = stats.nonzero();
        got.sort();
        assert_eq!(
            got,
            [
                ("k3".to_owned(), "applied", 1),
                ("other".to_owned(), "duplicate", 1),
                ("other".to_owned(), "forbidden", 1),
            ]
        );
        assert_eq!(stats.total(), 3);
    }

    #[test]
    fn session_ends_are_named_by_reason_or_code() {
        let stats = ServerStats::default();
        stats.sessions_opened.add(3);
        stats.session_closed("websocket", SessionEnd::Quiet(QuietEnd::TimedOut));
        stats.session_closed("webtransport", SessionEnd::Error(ErrorCode::ShuttingDown));
        assert_eq!(
            stats.session_ends(),
            [("timed_out", 1), ("shutting_down", 1)]
        );
        assert_eq!(stats.sessions_open(), 1);
        assert_eq!(stats.websocket_closed.get(), 1);
    }
}
