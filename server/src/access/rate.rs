//! Per-session rate budgets: token buckets for the [`RateLimits`] a server
//! announces in its hello, and the counter of violations that ends a session
//! which keeps going past them.
//!
//! A bucket holds up to `burst` tokens and gains `per_second` tokens a
//! second; every message takes one. The arithmetic is exact integer
//! arithmetic (no floating point), so a bucket behaves identically at every
//! rate and the retry-after it reports is never too short: a client that
//! waits exactly that long gets its token.

use chorus_protocol::{Rate, RateLimits};
use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

/// A token bucket of `amount` tokens per `period`, holding at most `burst`.
///
/// The general form behind [`TokenBucket`] (per second) and the abuse
/// guard's per-minute budgets. Amounts are kept in "units" where one token
/// is `period` in nanoseconds, so refilling is `elapsed_ns × amount` units,
/// exactly.
#[derive(Debug, Clone)]
pub(crate) struct Bucket {
    /// Tokens gained per period; at least 1.
    amount: u64,
    /// Units one token costs: the period in nanoseconds; at least 1.
    token: u128,
    /// Units when full: `burst × token`.
    capacity: u128,
    /// Units available at `last`.
    level: u128,
    last: Instant,
}

impl Bucket {
    /// A full bucket. `amount` and `burst` below 1 count as 1, and a zero
    /// period as one nanosecond, so a bucket always refills.
    pub(crate) fn new(amount: u64, period: Duration, burst: u64, now: Instant) -> Self {
        let token = period.as_nanos().max(1);
        let capacity = u128::from(burst.max(1)).saturating_mul(token);
        Bucket {
            amount: amount.max(1),
            token,
            capacity,
            level: capacity,
            last: now,
        }
    }

    /// The units available at `now` (a `now` before the last update counts
    /// as no time passed).
    fn level_at(&self, now: Instant) -> u128 {
        let elapsed = now.saturating_duration_since(self.last).as_nanos();
        self.level
            .saturating_add(elapsed.saturating_mul(u128::from(self.amount)))
            .min(self.capacity)
    }

    /// Takes one token, or says how long until one is available.
    pub(crate) fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        let level = self.level_at(now);
        if now > self.last {
            self.last = now;
        }
        self.level = level;
        if level >= self.token {
            self.level = level - self.token;
            Ok(())
        } else {
            let missing = self.token - level;
            // Round up: after this many nanoseconds the token is there.
            let ns = missing.div_ceil(u128::from(self.amount));
            Err(Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX)))
        }
    }

    /// Whether the bucket is full at `now`, i.e. forgetting it changes nothing.
    pub(crate) fn is_full(&self, now: Instant) -> bool {
        self.level_at(now) >= self.capacity
    }
}

/// A per-second token bucket for one [`Rate`]: up to `burst` at once, then
/// `per_second` on average.
///
/// A rate with `per_second` or `burst` of 0 is treated as 1 (check limits
/// with [`validate_rate_limits`] first to report such a configuration).
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: Rate,
    bucket: Bucket,
}

impl TokenBucket {
    /// A full bucket for `rate`, as of `now`.
    pub fn new(rate: Rate, now: Instant) -> Self {
        TokenBucket {
            rate,
            bucket: Bucket::new(
                u64::from(rate.per_second),
                Duration::from_secs(1),
                u64::from(rate.burst),
                now,
            ),
        }
    }

    /// The rate this bucket enforces.
    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Takes one token at `now`; `Err` carries how long until the next token
    /// (rounded up to the nanosecond, never zero).
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        self.bucket.try_take(now)
    }
}

/// The kinds of budget in [`RateLimits`], one bucket each in [`Budgets`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BudgetKind {
    /// Every control message (ticks not included).
    Messages,
    /// `SetState` and `DeleteState`.
    StateUpdates,
    /// `Command`.
    Commands,
    /// Ticks (datagrams).
    Ticks,
    /// `Join`.
    Joins,
    /// `Direct` and `Broadcast`.
    Direct,
}

impl BudgetKind {
    /// Every kind, in the order of [`RateLimits`]' fields.
    pub const ALL: [BudgetKind; 6] = [
        BudgetKind::Messages,
        BudgetKind::StateUpdates,
        BudgetKind::Commands,
        BudgetKind::Ticks,
        BudgetKind::Joins,
        BudgetKind::Direct,
    ];

    /// The field name in [`RateLimits`], e.g. `"state_updates"`.
    pub const fn name(self) -> &'static str {
        match self {
            BudgetKind::Messages => "messages",
            BudgetKind::StateUpdates => "state_updates",
            BudgetKind::Commands => "commands",
            BudgetKind::Ticks => "ticks",
            BudgetKind::Joins => "joins",
            BudgetKind::Direct => "direct",
        }
    }

    /// This kind's rate in `limits`.
    pub fn rate_in(self, limits: &RateLimits) -> Rate {
        match self {
            BudgetKind::Messages => limits.messages,
            BudgetKind::StateUpdates => limits.state_updates,
            BudgetKind::Commands => limits.commands,
            BudgetKind::Ticks => limits.ticks,
            BudgetKind::Joins => limits.joins,
            BudgetKind::Direct => limits.direct,
        }
    }
}

impl fmt::Display for BudgetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One session's budgets: a [`TokenBucket`] per kind of [`RateLimits`].
///
/// The buckets are independent: the session decides what a message costs
/// (e.g. a `SetState` takes from `messages` and from `state_updates`). Each
/// method returns `Err(retry_after)` when that budget is spent; the token is
/// then not taken.
#[derive(Debug, Clone)]
pub struct Budgets {
    messages: TokenBucket,
    state_updates: TokenBucket,
    commands: TokenBucket,
    ticks: TokenBucket,
    joins: TokenBucket,
    direct: TokenBucket,
}

impl Budgets {
    /// Full budgets for `limits`, as of `now`.
    pub fn new(limits: &RateLimits, now: Instant) -> Self {
        Budgets {
            messages: TokenBucket::new(limits.messages, now),
            state_updates: TokenBucket::new(limits.state_updates, now),
            commands: TokenBucket::new(limits.commands, now),
            ticks: TokenBucket::new(limits.ticks, now),
            joins: TokenBucket::new(limits.joins, now),
            direct: TokenBucket::new(limits.direct, now),
        }
    }

    /// Takes one token of `kind`.
    pub fn take(&mut self, kind: BudgetKind, now: Instant) -> Result<(), Duration> {
        self.bucket(kind).try_take(now)
    }

    /// A control message (any; ticks are not control messages).
    pub fn message(&mut self, now: Instant) -> Result<(), Duration> {
        self.messages.try_take(now)
    }

    /// A `SetState` or `DeleteState`.
    pub fn state_update(&mut self, now: Instant) -> Result<(), Duration> {
        self.state_updates.try_take(now)
    }

    /// A `Command`.
    pub fn command(&mut self, now: Instant) -> Result<(), Duration> {
        self.commands.try_take(now)
    }

    /// A tick.
    pub fn tick(&mut self, now: Instant) -> Result<(), Duration> {
        self.ticks.try_take(now)
    }

    /// A `Join`.
    pub fn join(&mut self, now: Instant) -> Result<(), Duration> {
        self.joins.try_take(now)
    }

    /// A `Direct` or `Broadcast`.
    pub fn direct(&mut self, now: Instant) -> Result<(), Duration> {
        self.direct.try_take(now)
    }

    fn bucket(&mut self, kind: BudgetKind) -> &mut TokenBucket {
        match kind {
            BudgetKind::Messages => &mut self.messages,
            BudgetKind::StateUpdates => &mut self.state_updates,
            BudgetKind::Commands => &mut self.commands,
            BudgetKind::Ticks => &mut self.ticks,
            BudgetKind::Joins => &mut self.joins,
            BudgetKind::Direct => &mut self.direct,
        }
    }
}

/// A [`RateLimits`] value a server cannot enforce.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rate_limits.{kind}.{field} must be at least 1 (got {value})")]
pub struct RateLimitsError {
    /// The budget, e.g. `state_updates`.
    pub kind: BudgetKind,
    /// `"per_second"` or `"burst"`.
    pub field: &'static str,
    /// The value given.
    pub value: u32,
}

/// Checks that every budget in `limits` has `per_second` ≥ 1 and `burst` ≥ 1.
/// A zero rate does not mean "unlimited": it is refused, naming the field
/// (e.g. `rate_limits.ticks.per_second must be at least 1 (got 0)`).
pub fn validate_rate_limits(limits: &RateLimits) -> Result<(), RateLimitsError> {
    for kind in BudgetKind::ALL {
        let rate = kind.rate_in(limits);
        for (field, value) in [("per_second", rate.per_second), ("burst", rate.burst)] {
            if value == 0 {
                return Err(RateLimitsError { kind, field, value });
            }
        }
    }
    Ok(())
}

/// Counts a session's rate-limit violations; too many within `window` means
/// the session is closed.
///
/// Up to `max` violations in any sliding `window` are tolerated (each is
/// answered with `RateLimited`); the one after that makes
/// [`record`](ViolationTracker::record) return `true`. It keeps at most
/// `max + 1` timestamps.
#[derive(Debug, Clone)]
pub struct ViolationTracker {
    max: u32,
    window: Duration,
    recent: VecDeque<Instant>,
}

impl ViolationTracker {
    /// Tolerates `max` violations per `window`.
    pub fn new(max: u32, window: Duration) -> Self {
        ViolationTracker {
            max,
            window,
            recent: VecDeque::new(),
        }
    }

    /// Records a violation at `now`. Returns `true` when it is more than
    /// `max` within the last `window`: disconnect now.
    pub fn record(&mut self, now: Instant) -> bool {
        while self
            .recent
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) >= self.window)
        {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        let limit = usize::try_from(self.max).unwrap_or(usize::MAX);
        if self.recent.len() > limit.saturating_add(1) {
            self.recent.pop_front();
        }
        self.recent.len() > limit
    }

    /// Violations counted in the window ending at the last `record`.
    pub fn count(&self) -> usize {
        self.recent.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: Duration = Duration::from_nanos(1);

    fn rate(per_second: u32, burst: u32) -> Rate {
        Rate { per_second, burst }
    }

    #[test]
    fn burst_passes_then_the_next_is_refused_with_the_wait() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(rate(10, 3), t0);
        assert_eq!(b.rate(), rate(10, 3));
        for i in 0..3 {
            assert_eq!(b.try_take(t0), Ok(()), "token {i} of the burst");
        }
        // 10 per second: the next token comes 100 ms later.
        assert_eq!(b.try_take(t0), Err(Duration::from_millis(100)));
        // One nanosecond early is still too early, and says so.
        assert_eq!(b.try_take(t0 + Duration::from_millis(100) - NS), Err(NS));
        assert_eq!(b.try_take(t0 + Duration::from_millis(100)), Ok(()));
        assert_eq!(
            b.try_take(t0 + Duration::from_millis(100)),
            Err(Duration::from_millis(100))
        );
    }

    #[test]
    fn refills_to_burst_and_not_beyond() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(rate(2, 4), t0);
        for _ in 0..4 {
            b.try_take(t0).expect("burst");
        }
        assert!(b.try_take(t0).is_err());
        // An hour later it holds 4 again, not 7200.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..4 {
            b.try_take(later).expect("refilled");
        }
        assert_eq!(b.try_take(later), Err(Duration::from_millis(500)));
    }

    #[test]
    fn sustained_rate_is_exact() {
        // 3 per second: a client that always waits exactly the retry-after
        // gets exactly 30 more tokens in 10 s (no rounding drift). With burst
        // 1 the bucket is full at each take, so the nanoseconds by which a
        // rounded-up wait overshoots are capped away; burst 2 leaves room.
        let t0 = Instant::now();
        let mut b = TokenBucket::new(rate(3, 2), t0);
        b.try_take(t0).expect("burst 1");
        b.try_take(t0).expect("burst 2");
        let mut taken = 0;
        let mut t = t0;
        let end = t0 + Duration::from_secs(10);
        while t <= end {
            match b.try_take(t) {
                Ok(()) => taken += 1,
                Err(wait) => {
                    assert!(wait > Duration::ZERO);
                    t += wait;
                }
            }
        }
        assert_eq!(taken, 30);
    }

    #[test]
    fn time_going_backwards_gives_nothing() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut b = TokenBucket::new(rate(1, 1), t0);
        b.try_take(t0).expect("burst");
        assert!(b.try_take(t0 - Duration::from_secs(5)).is_err());
        // And does not move the bucket's clock back.
        assert_eq!(b.try_take(t0 + Duration::from_secs(1)), Ok(()));
    }

    #[test]
    fn zero_rates_are_clamped_not_unlimited() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(rate(0, 0), t0);
        assert_eq!(b.try_take(t0), Ok(()));
        assert_eq!(b.try_take(t0), Err(Duration::from_secs(1)));
    }

    #[test]
    fn per_minute_bucket_for_the_guard() {
        let t0 = Instant::now();
        let mut b = Bucket::new(600, Duration::from_secs(60), 600, t0);
        for _ in 0..600 {
            b.try_take(t0).expect("600 per minute");
        }
        assert!(!b.is_full(t0));
        assert_eq!(b.try_take(t0), Err(Duration::from_millis(100)));
        assert!(b.is_full(t0 + Duration::from_secs(60)));
        assert!(!b.is_full(t0 + Duration::from_secs(60) - NS));
        // 5 per hour: one every 12 minutes.
        let mut b = Bucket::new(5, Duration::from_secs(3600), 5, t0);
        for _ in 0..5 {
            b.try_take(t0).expect("5 per hour");
        }
        assert_eq!(b.try_take(t0), Err(Duration::from_secs(720)));
    }

    #[test]
    fn budgets_are_independent_per_kind() {
        let t0 = Instant::now();
        let limits = RateLimits {
            messages: rate(1, 2),
            state_updates: rate(1, 1),
            commands: rate(1, 3),
            ticks: rate(100, 4),
            joins: rate(1, 5),
            direct: rate(1, 6),
        };
        let mut b = Budgets::new(&limits, t0);
        b.state_update(t0).expect("one state update");
        assert_eq!(b.state_update(t0), Err(Duration::from_secs(1)));
        // Other kinds are untouched.
        b.message(t0).expect("message 1");
        b.message(t0).expect("message 2");
        assert!(b.message(t0).is_err());
        for _ in 0..3 {
            b.command(t0).expect("command");
        }
        assert!(b.command(t0).is_err());
        for _ in 0..4 {
            b.tick(t0).expect("tick");
        }
        assert_eq!(b.tick(t0), Err(Duration::from_millis(10)));
        for _ in 0..5 {
            b.join(t0).expect("join");
        }
        assert!(b.join(t0).is_err());
        // `take` is the same buckets.
        assert!(b.take(BudgetKind::Joins, t0).is_err());
        assert_eq!(
            b.take(BudgetKind::Ticks, t0 + Duration::from_millis(10)),
            Ok(())
        );
        for kind in BudgetKind::ALL {
            assert!(b.take(kind, t0 + Duration::from_secs(1)).is_ok(), "{kind}");
        }
    }

    #[test]
    fn default_limits_are_valid_and_zeros_are_named() {
        assert_eq!(validate_rate_limits(&RateLimits::default()), Ok(()));
        let mut limits = RateLimits::default();
        limits.state_updates.per_second = 0;
        let err = validate_rate_limits(&limits).expect_err("zero rate");
        assert_eq!(err.kind, BudgetKind::StateUpdates);
        assert_eq!(err.field, "per_second");
        assert_eq!(
            err.to_string(),
            "rate_limits.state_updates.per_second must be at least 1 (got 0)"
        );
        let mut limits = RateLimits::default();
        limits.joins.burst = 0;
        assert_eq!(
            validate_rate_limits(&limits)
                .expect_err("zero burst")
                .to_string(),
            "rate_limits.joins.burst must be at least 1 (got 0)"
        );
    }

    #[test]
    fn violations_up_to_max_are_tolerated_within_the_window() {
        let t0 = Instant::now();
        let window = Duration::from_secs(10);
        let mut v = ViolationTracker::new(3, window);
        assert!(!v.record(t0));
        assert!(!v.record(t0 + Duration::from_secs(1)));
        assert!(!v.record(t0 + Duration::from_secs(2)));
        assert_eq!(v.count(), 3);
        // The 4th within 10 s disconnects.
        assert!(v.record(t0 + Duration::from_secs(3)));

        // Spread out, the first has left the window by the 4th.
        let mut v = ViolationTracker::new(3, window);
        assert!(!v.record(t0));
        assert!(!v.record(t0 + Duration::from_secs(1)));
        assert!(!v.record(t0 + Duration::from_secs(2)));
        assert!(
            !v.record(t0 + window),
            "the first is exactly one window old"
        );
        assert!(v.record(t0 + window + Duration::from_secs(1) - NS));
    }

    #[test]
    fn violation_memory_stays_bounded() {
        let t0 = Instant::now();
        let mut v = ViolationTracker::new(2, Duration::from_secs(60));
        for i in 0..1000 {
            v.record(t0 + Duration::from_millis(i));
            assert!(v.count() <= 3);
        }
        let mut zero = ViolationTracker::new(0, Duration::from_secs(1));
        assert!(zero.record(t0), "max 0: the first violation disconnects");
    }
}
