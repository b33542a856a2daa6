//! The pure accounting: per-client totals of the tick load and per-room and
//! per-client totals of the reliable lanes (state updates, commands), merged,
//! turned into the figures the bench prints (a table and one JSON line). No
//! clocks, no I/O: every input is an argument, so the arithmetic is
//! unit-tested on known numbers.

use crate::transports::{ClientTransport, PerTransport, TransportMix};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Schema tag of the JSON line; bump when keys change meaning.
/// 2: `transport`, `clients_per_room_by_transport`, `by_pair`, `kernel_tcp`,
/// `sdk_outgoing_replaced`, `server_sessions_opened`, `params.ws_url`; server
/// counters also for an external server (from its `/stats`).
/// 3: `state` and `commands` (the reliable-lane loads, [`LaneReport`]),
/// `server_reliable`, `params.scenario`, `params.scenario_overrides`,
/// `params.state_rate`, `params.command_rate`; `params.hz` may be 0 (no ticks).
/// 4: `target` ([`ServerKind`]: `chorus`, `ws-relay` or `socketio-relay`);
/// `params.server` may be `node vX.Y.Z` (a baseline relay the bench started).
pub const SCHEMA: &str = "chorus-bench/4";

/// Which server software a run loaded: Chorus, or one of the Node.js
/// baseline relays of `bench/baselines/` ([`crate::baseline_run`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServerKind {
    /// The Chorus server (in process or external).
    #[default]
    Chorus,
    /// `ws-relay.mjs`: the `ws` package.
    WsRelay,
    /// `socketio-relay.mjs`: Socket.IO 4.
    SocketioRelay,
}

impl ServerKind {
    /// `"chorus"`, `"ws-relay"` or `"socketio-relay"`, as in the JSON line.
    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Chorus => "chorus",
            ServerKind::WsRelay => "ws-relay",
            ServerKind::SocketioRelay => "socketio-relay",
        }
    }
}

/// Largest latency or connect time recorded, in µs (larger values saturate).
const HIST_MAX_US: u64 = 60_000_000;

/// A histogram of microseconds, 3 significant digits, up to a minute.
pub fn new_histogram() -> Histogram<u64> {
    // 1..=60 s with 3 significant digits is a valid configuration: this cannot fail.
    Histogram::new_with_bounds(1, HIST_MAX_US, 3)
        .unwrap_or_else(|_| unreachable!("constant histogram bounds are valid"))
}

/// Messages (ticks, change events) a receiver got that are not deliveries,
/// judged by their bench header: see [`RoomSenders::receive`](crate::payload::RoomSenders::receive).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anomalies {
    /// Received again (same sender and sequence).
    pub duplicates: u64,
    /// From a sender that belongs to another room.
    pub misrouted: u64,
    /// Too old for the duplicate window to judge (not counted as delivered).
    pub too_old: u64,
    /// Too short to hold the bench header.
    pub undecodable: u64,
}

impl Anomalies {
    /// Adds another receiver's counts to these.
    pub fn merge(&mut self, other: &Anomalies) {
        self.duplicates += other.duplicates;
        self.misrouted += other.misrouted;
        self.too_old += other.too_old;
        self.undecodable += other.undecodable;
    }
}

/// Counts one client saw over the measured window (ticks whose send time falls
/// inside it), as a sender and as a receiver.
#[derive(Debug, Clone)]
pub struct ClientTotals {
    /// Ticks handed to the SDK successfully.
    pub sent: u64,
    /// `send_tick` refusals (not counted as sent).
    pub send_errors: u64,
    /// Ticks from room-mates received for the first time.
    pub delivered: u64,
    /// Ticks received that are not deliveries.
    pub anomalies: Anomalies,
    /// Ticks lost in the SDK's newest-wins receive buffer (`TickReceiver::dropped`).
    /// They are also part of the loss (never delivered); shown apart to tell
    /// where they were lost. Covers the whole run, warm-up included.
    pub sdk_dropped: u64,
    /// Tick streams that ended before the drain deadline (room left or
    /// connection lost): the receiver stopped counting there.
    pub receivers_ended_early: u64,
    /// One-way latency of delivered ticks, µs.
    pub latency_us: Histogram<u64>,
    /// How late each in-window send fired after its scheduled instant, µs: large
    /// values mean the load generator cannot keep its schedule.
    pub send_lateness_us: Histogram<u64>,
    /// From the SDK stamping a tick (`received_at`) to the bench's receiver task
    /// reading it, µs: not part of the latency; large values mean the receiving
    /// side of the load generator is behind.
    pub handoff_us: Histogram<u64>,
    /// `sent`, by the sender's transport.
    pub sent_by: PerTransport,
    /// `delivered` and its latency by (sender transport, receiver transport).
    pub pairs: BTreeMap<(ClientTransport, ClientTransport), PairTotals>,
}

/// Deliveries from senders on one transport to receivers on one transport.
#[derive(Debug, Clone)]
pub struct PairTotals {
    pub delivered: u64,
    /// One-way latency, µs.
    pub latency_us: Histogram<u64>,
}

impl Default for PairTotals {
    fn default() -> Self {
        PairTotals {
            delivered: 0,
            latency_us: new_histogram(),
        }
    }
}

impl Default for ClientTotals {
    fn default() -> Self {
        ClientTotals {
            sent: 0,
            send_errors: 0,
            delivered: 0,
            anomalies: Anomalies::default(),
            sdk_dropped: 0,
            receivers_ended_early: 0,
            latency_us: new_histogram(),
            send_lateness_us: new_histogram(),
            handoff_us: new_histogram(),
            sent_by: PerTransport::default(),
            pairs: BTreeMap::new(),
        }
    }
}

impl ClientTotals {
    /// Adds another client's totals to these.
    pub fn merge(&mut self, other: &ClientTotals) {
        self.sent += other.sent;
        self.send_errors += other.send_errors;
        self.delivered += other.delivered;
        self.anomalies.merge(&other.anomalies);
        self.sdk_dropped += other.sdk_dropped;
        self.receivers_ended_early += other.receivers_ended_early;
        merge_histogram(&mut self.latency_us, &other.latency_us);
        merge_histogram(&mut self.send_lateness_us, &other.send_lateness_us);
        merge_histogram(&mut self.handoff_us, &other.handoff_us);
        self.sent_by.webtransport += other.sent_by.webtransport;
        self.sent_by.websocket += other.sent_by.websocket;
        for (pair, theirs) in &other.pairs {
            let ours = self.pairs.entry(*pair).or_default();
            ours.delivered += theirs.delivered;
            merge_histogram(&mut ours.latency_us, &theirs.latency_us);
        }
    }

    /// Records one delivered tick's latency (overall only; see
    /// [`record_delivery`](Self::record_delivery) for the whole bookkeeping).
    pub fn record_latency_us(&mut self, us: u64) {
        record(&mut self.latency_us, us);
    }

    /// Records one in-window tick handed to the SDK by a sender on `from`.
    pub fn record_sent(&mut self, from: ClientTransport) {
        self.sent += 1;
        *self.sent_by.get_mut(from) += 1;
    }

    /// Records one in-window tick from a sender on `from`, received for the
    /// first time by a receiver on `to`, `us` after it was sent.
    pub fn record_delivery(&mut self, from: ClientTransport, to: ClientTransport, us: u64) {
        self.delivered += 1;
        self.record_latency_us(us);
        let pair = self.pairs.entry((from, to)).or_default();
        pair.delivered += 1;
        record(&mut pair.latency_us, us);
    }
}

/// Records `us`, clamped into the histogram's range.
pub fn record(h: &mut Histogram<u64>, us: u64) {
    h.saturating_record(us.clamp(1, HIST_MAX_US));
}

fn merge_histogram(into: &mut Histogram<u64>, from: &Histogram<u64>) {
    // Same bounds on both sides, so adding cannot fail; saturate if it did.
    if into.add(from).is_err() {
        for v in from.iter_recorded() {
            into.saturating_record_n(v.value_iterated_to(), v.count_at_value());
        }
    }
}

/// Counts of one reliable lane (state updates or commands) over the measured
/// window: a room's sender adds the request side, each member's receiver the
/// fan-out side; merged over the run. Only requests whose send time is in the
/// window count, and only events carrying such a send time.
#[derive(Debug, Clone)]
pub struct LaneTotals {
    /// Requests handed to the SDK.
    pub sent: u64,
    /// Requests the server applied (`StateAck` / `CommandAck`).
    pub acked: u64,
    /// Requests the server refused, by error code (`ErrorCode::name`).
    pub refused: BTreeMap<String, u64>,
    /// Requests that failed without a server answer (`timeout`,
    /// `connection_lost`, `closed`, `not_joined`, `limit`, …).
    pub failed: BTreeMap<String, u64>,
    /// Requests still unanswered at the drain deadline (abandoned there).
    pub unanswered: u64,
    /// Send to ack, µs, of acked requests.
    pub ack_latency_us: Histogram<u64>,
    /// Change events (state changed, command) of other members received for
    /// the first time.
    pub delivered: u64,
    /// Send to the receiver task reading the event, µs.
    pub fanout_latency_us: Histogram<u64>,
    /// Change events received that are not deliveries.
    pub anomalies: Anomalies,
    /// Events the SDK's bounded event channel skipped because the receiver
    /// fell behind (`RecvError::Lagged`), whole run, every kind of event on
    /// that channel. Part of the loss when they were this lane's.
    pub sdk_lagged: u64,
    /// Event streams that ended before the drain deadline.
    pub streams_ended_early: u64,
}

impl Default for LaneTotals {
    fn default() -> Self {
        LaneTotals {
            sent: 0,
            acked: 0,
            refused: BTreeMap::new(),
            failed: BTreeMap::new(),
            unanswered: 0,
            ack_latency_us: new_histogram(),
            delivered: 0,
            fanout_latency_us: new_histogram(),
            anomalies: Anomalies::default(),
            sdk_lagged: 0,
            streams_ended_early: 0,
        }
    }
}

impl LaneTotals {
    /// Adds another room's or member's totals to these.
    pub fn merge(&mut self, other: &LaneTotals) {
        self.sent += other.sent;
        self.acked += other.acked;
        for (code, n) in &other.refused {
            *self.refused.entry(code.clone()).or_default() += n;
        }
        for (why, n) in &other.failed {
            *self.failed.entry(why.clone()).or_default() += n;
        }
        self.unanswered += other.unanswered;
        merge_histogram(&mut self.ack_latency_us, &other.ack_latency_us);
        self.delivered += other.delivered;
        merge_histogram(&mut self.fanout_latency_us, &other.fanout_latency_us);
        self.anomalies.merge(&other.anomalies);
        self.sdk_lagged += other.sdk_lagged;
        self.streams_ended_early += other.streams_ended_early;
    }

    /// Records an acked in-window request, `us` after it was sent.
    pub fn record_ack(&mut self, us: u64) {
        self.acked += 1;
        record(&mut self.ack_latency_us, us);
    }

    /// Records an in-window request the server refused with `code`.
    pub fn record_refused(&mut self, code: &str) {
        *self.refused.entry(code.to_owned()).or_default() += 1;
    }

    /// Records an in-window request that failed without a server answer.
    pub fn record_failed(&mut self, why: &str) {
        *self.failed.entry(why.to_owned()).or_default() += 1;
    }

    /// Records another member's change event received for the first time,
    /// `us` after it was sent.
    pub fn record_delivery(&mut self, us: u64) {
        self.delivered += 1;
        record(&mut self.fanout_latency_us, us);
    }
}

/// The run's parameters, echoed in the JSON line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Params {
    pub rooms: u32,
    pub clients_per_room: u32,
    pub hz: f64,
    pub payload_bytes: usize,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub drain_ms: u64,
    pub seed: u64,
    pub tick_capacity: usize,
    /// The SDK's WebTransport datagram receive buffer, when not its default.
    #[serde(default)]
    pub datagram_receive_buffer_bytes: Option<usize>,
    /// Shared client QUIC endpoints (0: one per client).
    #[serde(default)]
    pub client_endpoints: usize,
    pub connect_concurrency: usize,
    /// `"in-process"` or `"external"`.
    pub server: String,
    /// The WebTransport URL (used by WebTransport clients).
    pub url: String,
    /// The WebSocket URL, when some clients used WebSocket.
    pub ws_url: Option<String>,
    /// The preset asked for (`s1` .. `s5`), if any.
    #[serde(default)]
    pub scenario: Option<String>,
    /// Fields above where an explicit flag replaced the preset's value: with
    /// any, the run is not the preset's shape.
    #[serde(default)]
    pub scenario_overrides: Vec<String>,
    /// State updates per second per room (0: no state load).
    #[serde(default)]
    pub state_rate: f64,
    /// Commands per second per room (0: no command load).
    #[serde(default)]
    pub command_rate: f64,
}

/// CPU use over the measured window, in % of one core (200 = two cores busy).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuFigures {
    /// Server threads (in process) or the server process (`--server-pid`).
    pub server_pct: Option<f64>,
    /// The bench's client runtime threads.
    pub loadgen_pct: Option<f64>,
    /// The whole bench process (server + clients + main thread when in process).
    pub bench_process_pct: Option<f64>,
    /// Every process on the machine (`/proc/stat`), same unit: a value well
    /// above `bench_process_pct` (+ `server_pct` for an external server) means
    /// something else was competing for the cores during the run. The kernel
    /// samples this per timer tick, so at partial load it can read lower than
    /// the per-thread figures; at saturation both agree.
    pub machine_pct: Option<f64>,
    /// Clock ticks per second used to convert `/proc` times.
    pub clk_tck: u64,
}

/// Memory, MiB.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemFigures {
    /// VmHWM of the measured process.
    pub peak_rss_mib: Option<f64>,
    /// The bench reset VmHWM at the start of this run, so the peak is this
    /// run's (from the RSS it started with); `false`: since the process
    /// started (e.g. an earlier run of `--transport both`).
    pub peak_since_run_start: bool,
    /// VmRSS at the end of the window.
    pub rss_end_mib: Option<f64>,
    /// Which process these figures are about.
    pub scope: String,
}

/// Server counters over the measured window: read directly in process, from
/// the server's `GET /stats` (plain HTTP on its TCP port) when external.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerCounters {
    pub ticks_in: u64,
    pub ticks_out: u64,
    pub ticks_dropped: u64,
    pub ticks_rejected: u64,
}

/// The server's reliable-lane counters over the same span as
/// [`ServerCounters`] (in process directly, external from `/stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerReliableCounters {
    /// State writes the rooms handled, by outcome (`applied` or an error code).
    pub state_updates: BTreeMap<String, u64>,
    /// Commands the rooms handled, every outcome.
    pub commands: u64,
}

/// Kernel UDP counters over the run (whole machine, from `/proc/net/snmp`):
/// `rcvbuf_errors` are packets dropped because a socket's receive buffer was
/// full, invisible to QUIC and to the server's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelUdp {
    pub in_datagrams: u64,
    pub out_datagrams: u64,
    pub rcvbuf_errors: u64,
    pub sndbuf_errors: u64,
}

/// Kernel TCP segment counters over the run (whole machine, from
/// `/proc/net/snmp`): with WebSocket, how many segments the ticks took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelTcp {
    pub in_segs: u64,
    pub out_segs: u64,
    pub retrans_segs: u64,
}

/// Latency percentiles in ms (3 decimals); `None` with no samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub samples: u64,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub p999: Option<f64>,
    pub max: Option<f64>,
}

impl Percentiles {
    /// From a histogram of microseconds.
    pub fn from_us(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        let ms = |us: u64| Some(round3(us as f64 / 1000.0));
        Percentiles {
            samples: h.len(),
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

/// Deliveries from senders on one transport to receivers on one transport.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PairReport {
    pub from: ClientTransport,
    pub to: ClientTransport,
    /// Ticks sent by the `from` clients.
    pub sent: u64,
    /// `sent × (room-mates on `to`)`: each `from` tick should reach every other
    /// member on `to`.
    pub expected: u64,
    pub delivered: u64,
    pub loss_pct: f64,
    pub latency_ms: Percentiles,
}

/// The figures of one reliable lane (state updates or commands).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LaneReport {
    /// Requests per second per room asked for.
    pub rate_per_room: f64,
    /// `rooms × rate_per_room`: the send rate asked for.
    pub nominal_per_s: f64,
    pub sent: u64,
    pub sent_per_s: f64,
    /// Applied by the server (acked) within the drain.
    pub acked: u64,
    pub acked_per_s: f64,
    /// Refused by the server, by error code.
    pub refused: BTreeMap<String, u64>,
    /// Failed without a server answer (timeout, connection lost, …).
    pub failed: BTreeMap<String, u64>,
    /// No answer by the drain deadline.
    pub unanswered: u64,
    /// Send to ack (`StateAck` / `CommandAck`).
    pub ack_latency_ms: Percentiles,
    /// `acked × (clients_per_room − 1)`: every other member should see each
    /// applied change.
    pub expected: u64,
    pub delivered: u64,
    pub delivered_per_s: f64,
    /// `100 × (1 − delivered / expected)`, 3 decimals; 0 when nothing was expected.
    pub loss_pct: f64,
    /// Send to another member's receiver task reading the change event (the
    /// SDK does not stamp events on arrival, so this includes its hand-off).
    pub fanout_latency_ms: Percentiles,
    #[serde(flatten)]
    pub anomalies: Anomalies,
    /// See [`LaneTotals::sdk_lagged`].
    pub sdk_lagged: u64,
    pub streams_ended_early: u64,
}

impl LaneReport {
    /// The lane's figures from its merged totals, for rooms of
    /// `clients_per_room` members over a window of `window_s` seconds.
    pub fn compute(
        totals: &LaneTotals,
        rate_per_room: f64,
        rooms: u32,
        clients_per_room: u32,
        window_s: f64,
    ) -> LaneReport {
        let expected = totals.acked * u64::from(clients_per_room.saturating_sub(1));
        let per_s = |n: u64| per_second(n, window_s);
        LaneReport {
            rate_per_room,
            nominal_per_s: round3(f64::from(rooms) * rate_per_room),
            sent: totals.sent,
            sent_per_s: per_s(totals.sent),
            acked: totals.acked,
            acked_per_s: per_s(totals.acked),
            refused: totals.refused.clone(),
            failed: totals.failed.clone(),
            unanswered: totals.unanswered,
            ack_latency_ms: Percentiles::from_us(&totals.ack_latency_us),
            expected,
            delivered: totals.delivered,
            delivered_per_s: per_s(totals.delivered),
            loss_pct: loss_pct(totals.delivered, expected),
            fanout_latency_ms: Percentiles::from_us(&totals.fanout_latency_us),
            anomalies: totals.anomalies,
            sdk_lagged: totals.sdk_lagged,
            streams_ended_early: totals.streams_ended_early,
        }
    }

    /// The lane's table rows, labels prefixed with `lane` (`state`, `commands`).
    fn rows(&self, lane: &str, row: &mut impl FnMut(&str, String)) {
        let opt = fixed3;
        row(
            &format!("{lane} sent"),
            format!(
                "{} ({:.1}/s of {:.1}/s asked)",
                self.sent, self.sent_per_s, self.nominal_per_s
            ),
        );
        row(
            &format!("{lane} acked"),
            format!("{} ({:.1}/s)", self.acked, self.acked_per_s),
        );
        row(
            &format!("{lane} refused / failed / unanswered"),
            format!(
                "{} / {} / {}",
                counts_text(&self.refused),
                counts_text(&self.failed),
                self.unanswered
            ),
        );
        let a = &self.ack_latency_ms;
        row(
            &format!("{lane} ack ms p50/p90/p99"),
            format!("{} / {} / {}", opt(a.p50), opt(a.p90), opt(a.p99)),
        );
        row(
            &format!("{lane} ack ms p99.9/max"),
            format!("{} / {} ({} samples)", opt(a.p999), opt(a.max), a.samples),
        );
        row(
            &format!("{lane} fan-out delivered / loss"),
            format!(
                "{} of {} ({:.3} %)",
                self.delivered, self.expected, self.loss_pct
            ),
        );
        let f = &self.fanout_latency_ms;
        row(
            &format!("{lane} fan-out ms p50/p99/max"),
            format!("{} / {} / {}", opt(f.p50), opt(f.p99), opt(f.max)),
        );
        row(
            &format!("{lane} dup / misrouted / lagged"),
            format!(
                "{} / {} / {} (lagged: whole run)",
                self.anomalies.duplicates, self.anomalies.misrouted, self.sdk_lagged
            ),
        );
        let a = &self.anomalies;
        if self.streams_ended_early > 0 || a.undecodable > 0 || a.too_old > 0 {
            row(
                &format!("{lane} ended early / undecodable / too old"),
                format!(
                    "{} / {} / {}",
                    self.streams_ended_early, a.undecodable, a.too_old
                ),
            );
        }
    }
}

/// Where and when the run happened.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunMeta {
    /// UTC, RFC 3339.
    pub timestamp: String,
    pub timestamp_unix: u64,
    pub git_commit: Option<String>,
    /// Uncommitted changes in the work tree (`None`: unknown).
    pub git_dirty: Option<bool>,
    /// Online CPUs of the machine.
    pub cores: usize,
    /// CPUs this process may run on (its affinity mask, e.g. under `taskset`).
    pub usable_cores: usize,
}

/// Everything the bench reports; serialized as the JSON line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub schema: String,
    /// The server software loaded (absent before schema 4: `chorus`).
    #[serde(default)]
    pub target: ServerKind,
    /// How this run assigned transports: `webtransport`, `websocket` or `mixed`.
    pub transport: TransportMix,
    #[serde(flatten)]
    pub meta: RunMeta,
    pub params: Params,
    /// How many of each room's clients used each transport.
    pub clients_per_room_by_transport: PerTransport,
    /// Length of the measured window, s.
    pub window_s: f64,
    /// `rooms × clients × hz`: the send rate asked for.
    pub nominal_sent_per_s: f64,
    pub sent: u64,
    pub sent_per_s: f64,
    /// `sent × (clients_per_room − 1)`: every other member should get each tick.
    pub expected: u64,
    pub expected_per_s: f64,
    pub delivered: u64,
    pub delivered_per_s: f64,
    /// `100 × (1 − delivered / expected)`, 3 decimals; 0 when nothing was expected.
    pub loss_pct: f64,
    #[serde(flatten)]
    pub anomalies: Anomalies,
    pub send_errors: u64,
    pub sdk_dropped: u64,
    /// Ticks a WebSocket client's SDK replaced with a newer one of the same room
    /// before writing them (`Client::outgoing_ticks_dropped`, whole run, part
    /// of the loss; always 0 on WebTransport).
    pub sdk_outgoing_replaced: u64,
    pub receivers_ended_early: u64,
    pub latency_ms: Percentiles,
    /// Deliveries and latency per (sender transport → receiver transport).
    pub by_pair: Vec<PairReport>,
    /// See [`ClientTotals::send_lateness_us`].
    pub send_lateness_ms: Percentiles,
    /// See [`ClientTotals::handoff_us`].
    pub receive_handoff_ms: Percentiles,
    /// Connect + join time per client.
    pub connect_join_ms: Percentiles,
    pub cpu: CpuFigures,
    pub memory: MemFigures,
    pub server_counters: Option<ServerCounters>,
    /// The server's state and command counters; `None` when not readable.
    pub server_reliable: Option<ServerReliableCounters>,
    /// The state-update load (`--state-rate`); `None` when off.
    pub state: Option<LaneReport>,
    /// The command load (`--command-rate`); `None` when off.
    pub commands: Option<LaneReport>,
    /// Sessions the server opened per transport while the bench connected
    /// (checked against the plan: a mismatch fails the run).
    pub server_sessions_opened: Option<PerTransport>,
    /// From the start of sending to the drain deadline.
    pub kernel_udp: Option<KernelUdp>,
    /// Same span as `kernel_udp`.
    pub kernel_tcp: Option<KernelTcp>,
}

/// Inputs of [`Report::compute`] besides the merged totals.
#[derive(Debug, Clone)]
pub struct Measurements {
    pub window_s: f64,
    pub connect_join_us: Histogram<u64>,
    pub cpu: CpuFigures,
    pub memory: MemFigures,
    pub server_counters: Option<ServerCounters>,
    pub server_sessions_opened: Option<PerTransport>,
    pub kernel_udp: Option<KernelUdp>,
    pub kernel_tcp: Option<KernelTcp>,
    /// Sum of `Client::outgoing_ticks_dropped` over the clients.
    pub sdk_outgoing_replaced: u64,
    pub server_reliable: Option<ServerReliableCounters>,
    /// The state-update load's merged totals, when it ran.
    pub state: Option<LaneTotals>,
    /// The command load's merged totals, when it ran.
    pub commands: Option<LaneTotals>,
}

/// `n` per second over `window_s` seconds, 3 decimals; 0 for an empty window.
fn per_second(n: u64, window_s: f64) -> f64 {
    if window_s > 0.0 {
        round3(n as f64 / window_s)
    } else {
        0.0
    }
}

fn loss_pct(delivered: u64, expected: u64) -> f64 {
    if expected > 0 {
        round3(100.0 * (1.0 - delivered as f64 / expected as f64))
    } else {
        0.0
    }
}

/// Per (sender transport → receiver transport): every tick a `from` client
/// sent should reach each of its room-mates on `to`, i.e. `per_room[to]`
/// clients, less the sender itself when `from == to`. Pairs with nothing
/// expected and nothing delivered are left out.
pub fn pair_reports(totals: &ClientTotals, per_room: PerTransport) -> Vec<PairReport> {
    let mut out = Vec::new();
    for from in ClientTransport::ALL {
        for to in ClientTransport::ALL {
            let receivers = per_room.get(to).saturating_sub(u64::from(from == to));
            let sent = totals.sent_by.get(from);
            let expected = sent * receivers;
            let cell = totals.pairs.get(&(from, to));
            let delivered = cell.map_or(0, |c| c.delivered);
            if expected == 0 && delivered == 0 {
                continue;
            }
            out.push(PairReport {
                from,
                to,
                sent,
                expected,
                delivered,
                loss_pct: loss_pct(delivered, expected),
                latency_ms: cell.map_or_else(Percentiles::default, |c| {
                    Percentiles::from_us(&c.latency_us)
                }),
            });
        }
    }
    out
}

impl Report {
    /// Derives every figure of a Chorus run from the merged per-client totals.
    pub fn compute(
        params: Params,
        transport: TransportMix,
        meta: RunMeta,
        totals: &ClientTotals,
        m: Measurements,
    ) -> Report {
        Report::compute_for(ServerKind::Chorus, params, transport, meta, totals, m)
    }

    /// Derives every figure of a run against `target` from the merged
    /// per-client totals.
    pub fn compute_for(
        target: ServerKind,
        params: Params,
        transport: TransportMix,
        meta: RunMeta,
        totals: &ClientTotals,
        m: Measurements,
    ) -> Report {
        let receivers = u64::from(params.clients_per_room.saturating_sub(1));
        let expected = totals.sent * receivers;
        let per_s = |n: u64| per_second(n, m.window_s);
        let lane = |totals: &Option<LaneTotals>, rate: f64| {
            totals.as_ref().map(|t| {
                LaneReport::compute(t, rate, params.rooms, params.clients_per_room, m.window_s)
            })
        };
        let state = lane(&m.state, params.state_rate);
        let commands = lane(&m.commands, params.command_rate);
        let nominal = f64::from(params.rooms) * f64::from(params.clients_per_room) * params.hz;
        let per_room = transport.per_room(params.clients_per_room);
        Report {
            schema: SCHEMA.to_owned(),
            target,
            transport,
            meta,
            params,
            clients_per_room_by_transport: per_room,
            window_s: round3(m.window_s),
            nominal_sent_per_s: round3(nominal),
            sent: totals.sent,
            sent_per_s: per_s(totals.sent),
            expected,
            expected_per_s: per_s(expected),
            delivered: totals.delivered,
            delivered_per_s: per_s(totals.delivered),
            loss_pct: loss_pct(totals.delivered, expected),
            anomalies: totals.anomalies,
            send_errors: totals.send_errors,
            sdk_dropped: totals.sdk_dropped,
            sdk_outgoing_replaced: m.sdk_outgoing_replaced,
            receivers_ended_early: totals.receivers_ended_early,
            latency_ms: Percentiles::from_us(&totals.latency_us),
            by_pair: pair_reports(totals, per_room),
            send_lateness_ms: Percentiles::from_us(&totals.send_lateness_us),
            receive_handoff_ms: Percentiles::from_us(&totals.handoff_us),
            connect_join_ms: Percentiles::from_us(&m.connect_join_us),
            cpu: m.cpu,
            memory: m.memory,
            server_counters: m.server_counters,
            server_reliable: m.server_reliable,
            state,
            commands,
            server_sessions_opened: m.server_sessions_opened,
            kernel_udp: m.kernel_udp,
            kernel_tcp: m.kernel_tcp,
        }
    }

    /// What names this run among others: its transport for Chorus
    /// (`webtransport`, `websocket`, `mixed`), the relay's name for a relay
    /// (whose clients are on WebSocket too).
    pub fn run_name(&self) -> &'static str {
        match self.target {
            ServerKind::Chorus => self.transport.name(),
            relay => relay.name(),
        }
    }

    /// The single JSON line (no trailing newline).
    pub fn json_line(&self) -> serde_json::Result<String> {
        serde_json::to_string(self)
    }

    /// A human-readable table.
    pub fn table(&self) -> String {
        side_by_side(std::slice::from_ref(self))
    }

    /// The first header line: the scenario, and the server unless `server`
    /// says otherwise (runs against several servers).
    pub fn scenario(&self, server: Option<&str>) -> String {
        let p = &self.params;
        let preset = match (&p.scenario, p.scenario_overrides.is_empty()) {
            (None, _) => String::new(),
            (Some(name), true) => format!("scenario {name}, "),
            (Some(name), false) => format!(
                "scenario {name} with {} overridden, ",
                p.scenario_overrides.join(", ")
            ),
        };
        let mut lanes = String::new();
        if p.state_rate > 0.0 {
            let _ = write!(lanes, ", state {}/s per room", p.state_rate);
        }
        if p.command_rate > 0.0 {
            let _ = write!(lanes, ", commands {}/s per room", p.command_rate);
        }
        format!(
            "chorus-bench: {preset}{} rooms x {} clients, {} Hz, {} B payload{lanes}, {} s measured (+{} s warm-up), server {}",
            p.rooms,
            p.clients_per_room,
            p.hz,
            p.payload_bytes,
            self.window_s,
            p.warmup_s,
            server.unwrap_or(&p.server)
        )
    }

    /// The second header line: code and machine.
    fn machine(&self) -> String {
        format!(
            "  commit {} {} | {} cores ({} usable by the bench)",
            self.meta.git_commit.as_deref().unwrap_or("?"),
            match self.meta.git_dirty {
                Some(true) => "(dirty tree)",
                Some(false) => "(clean)",
                None => "",
            },
            self.meta.cores,
            self.meta.usable_cores,
        )
    }

    /// The table's rows, label and value. Rows that only matter sometimes
    /// (streams ended early, per-pair figures of a mixed run) are left out
    /// when they do not apply.
    pub fn rows(&self) -> Vec<(String, String)> {
        let mut rows: Vec<(String, String)> = Vec::new();
        let mut row = |k: &str, v: String| rows.push((k.to_owned(), v));
        let opt = fixed3;
        let pct = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1} %"));
        let mib = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1} MiB"));
        let per_room = self.clients_per_room_by_transport;
        row(
            "target",
            format!("{} ({})", self.target.name(), self.params.server),
        );
        row(
            "transport",
            match self.transport {
                TransportMix::Mixed => format!(
                    "mixed ({} WT + {} WS per room)",
                    per_room.webtransport, per_room.websocket
                ),
                t => t.name().to_owned(),
            },
        );
        row("started (UTC)", self.meta.timestamp.clone());
        row(
            "ticks sent",
            format!(
                "{} ({:.1}/s of {:.1}/s asked)",
                self.sent, self.sent_per_s, self.nominal_sent_per_s
            ),
        );
        row(
            "expected deliveries",
            format!("{} ({:.1}/s)", self.expected, self.expected_per_s),
        );
        row(
            "delivered",
            format!("{} ({:.1}/s)", self.delivered, self.delivered_per_s),
        );
        row("loss", format!("{:.3} %", self.loss_pct));
        row(
            "duplicates / misrouted",
            format!(
                "{} / {}",
                self.anomalies.duplicates, self.anomalies.misrouted
            ),
        );
        row(
            "send errors / undecodable",
            format!("{} / {}", self.send_errors, self.anomalies.undecodable),
        );
        row(
            "SDK receive-buffer drops",
            format!("{} (whole run, in the loss)", self.sdk_dropped),
        );
        row(
            "SDK outgoing tick replaced (WS)",
            format!("{} (whole run, in the loss)", self.sdk_outgoing_replaced),
        );
        if self.receivers_ended_early > 0 {
            row(
                "tick streams ended early",
                format!("{} (connection or room lost)", self.receivers_ended_early),
            );
        }
        let l = &self.latency_ms;
        row(
            "latency ms p50/p90/p99",
            format!("{} / {} / {}", opt(l.p50), opt(l.p90), opt(l.p99)),
        );
        row(
            "latency ms p99.9/max",
            format!("{} / {} ({} samples)", opt(l.p999), opt(l.max), l.samples),
        );
        if self.by_pair.len() > 1 {
            for pr in &self.by_pair {
                row(
                    &format!("{}->{} delivered / loss", pr.from.short(), pr.to.short()),
                    format!("{} of {} ({:.3} %)", pr.delivered, pr.expected, pr.loss_pct),
                );
            }
            for pr in &self.by_pair {
                let l = &pr.latency_ms;
                row(
                    &format!("{}->{} ms p50/p90/p99/max", pr.from.short(), pr.to.short()),
                    format!(
                        "{} / {} / {} / {}",
                        opt(l.p50),
                        opt(l.p90),
                        opt(l.p99),
                        opt(l.max)
                    ),
                );
            }
        }
        for (lane, report) in [("state", &self.state), ("commands", &self.commands)] {
            if let Some(report) = report {
                report.rows(lane, &mut row);
            }
        }
        let sl = &self.send_lateness_ms;
        row(
            "send lateness ms p50/p99/max",
            format!("{} / {} / {}", opt(sl.p50), opt(sl.p99), opt(sl.max)),
        );
        let h = &self.receive_handoff_ms;
        row(
            "SDK->bench handoff ms p50/p99/max",
            format!("{} / {} / {}", opt(h.p50), opt(h.p99), opt(h.max)),
        );
        let c = &self.connect_join_ms;
        row(
            "connect+join ms p50/p99/max",
            format!("{} / {} / {}", opt(c.p50), opt(c.p99), opt(c.max)),
        );
        row("server CPU (of one core)", pct(self.cpu.server_pct));
        row("load-generator CPU", pct(self.cpu.loadgen_pct));
        row("bench process CPU", pct(self.cpu.bench_process_pct));
        row(
            "whole machine CPU",
            format!(
                "{} of {} % (all processes, tick-sampled)",
                pct(self.cpu.machine_pct),
                100 * self.meta.cores
            ),
        );
        row(
            "peak RSS / RSS at end",
            format!(
                "{}{} / {}",
                mib(self.memory.peak_rss_mib),
                if self.memory.peak_since_run_start {
                    ""
                } else {
                    " (since process start)"
                },
                mib(self.memory.rss_end_mib),
            ),
        );
        row("memory of", self.memory.scope.clone());
        if self.target != ServerKind::Chorus {
            // The relays have none of Chorus's counters: their column shows
            // `-` in Chorus's rows, and the kernel's counters follow.
            self.kernel_rows(&mut row);
            return rows;
        }
        match &self.server_sessions_opened {
            Some(s) => row(
                "server sessions opened WT / WS",
                format!("{} / {}", s.webtransport, s.websocket),
            ),
            None => row("server sessions opened", "- (not readable)".to_owned()),
        }
        match &self.server_counters {
            Some(c) => row(
                "server ticks in/out/dropped/rej",
                format!(
                    "{} / {} / {} / {}",
                    c.ticks_in, c.ticks_out, c.ticks_dropped, c.ticks_rejected
                ),
            ),
            None => row("server counters", "- (not readable)".to_owned()),
        }
        if self.state.is_some() || self.commands.is_some() {
            match &self.server_reliable {
                Some(c) => {
                    row("server state updates", counts_text(&c.state_updates));
                    row("server commands", c.commands.to_string());
                }
                None => row("server state/commands", "- (not readable)".to_owned()),
            }
        }
        self.kernel_rows(&mut row);
        rows
    }

    /// The machine-wide kernel counters' rows.
    fn kernel_rows(&self, row: &mut impl FnMut(&str, String)) {
        if let Some(k) = &self.kernel_udp {
            row(
                "kernel UDP in/out/rcvbuf-drops",
                format!(
                    "{} / {} / {} (machine-wide)",
                    k.in_datagrams, k.out_datagrams, k.rcvbuf_errors
                ),
            );
        }
        if let Some(k) = &self.kernel_tcp {
            row(
                "kernel TCP segs in/out/retrans",
                format!(
                    "{} / {} / {} (machine-wide)",
                    k.in_segs, k.out_segs, k.retrans_segs
                ),
            );
        }
    }
}

/// Several runs of one scenario as one table, one value column per run (e.g.
/// per transport); a row one run lacks shows `-`. With one run, its table.
pub fn side_by_side(reports: &[Report]) -> String {
    let Some(first) = reports.first() else {
        return String::new();
    };
    let columns: Vec<Vec<(String, String)>> = reports.iter().map(Report::rows).collect();
    let labels = row_labels(&columns);
    let label_width = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    let widths: Vec<usize> = columns
        .iter()
        .map(|col| {
            col.iter()
                .map(|(_, v)| v.chars().count())
                .max()
                .unwrap_or(1)
        })
        .collect();
    let mut s = String::new();
    let one_server = reports
        .iter()
        .all(|r| r.params.server == first.params.server);
    let server = (!one_server).then_some("per column, see target");
    let _ = writeln!(s, "{}", first.scenario(server));
    let _ = writeln!(s, "{}", first.machine());
    for label in &labels {
        let mut line = format!("  {label:<label_width$}");
        for (i, col) in columns.iter().enumerate() {
            let v = value(col, label);
            if i + 1 == columns.len() {
                let _ = write!(line, "  {v}");
            } else {
                let _ = write!(line, "  {v:<w$}", w = widths[i]);
            }
        }
        let _ = writeln!(s, "{}", line.trim_end());
    }
    s
}

/// Every row label of several runs' rows, in order of first appearance, each
/// placed after the label that precedes it in its own run.
fn row_labels(columns: &[Vec<(String, String)>]) -> Vec<String> {
    let mut labels: Vec<String> = Vec::new();
    for rows in columns {
        let mut at = 0;
        for (label, _) in rows {
            match labels.iter().position(|l| l == label) {
                Some(i) => at = i + 1,
                None => {
                    labels.insert(at, label.clone());
                    at += 1;
                }
            }
        }
    }
    labels
}

/// The value of row `label` in one run's rows, `-` if that run lacks it.
fn value(col: &[(String, String)], label: &str) -> String {
    col.iter()
        .find(|(l, _)| l == label)
        .map_or_else(|| "-".to_owned(), |(_, v)| v.clone())
}

/// Several runs' rows as one table: each label (in the order of
/// [`side_by_side`]) with one value per run, `-` where a run lacks the row.
pub fn merged_rows(reports: &[Report]) -> Vec<(String, Vec<String>)> {
    let columns: Vec<Vec<(String, String)>> = reports.iter().map(Report::rows).collect();
    merge_columns(&columns)
}

/// Several runs' `(label, value)` rows as one table: each label (in order
/// of first appearance) with one value per run, `-` where a run lacks it.
pub fn merge_columns(columns: &[Vec<(String, String)>]) -> Vec<(String, Vec<String>)> {
    row_labels(columns)
        .into_iter()
        .map(|label| {
            let values = columns.iter().map(|col| value(col, &label)).collect();
            (label, values)
        })
        .collect()
}

/// Rows of [`merge_columns`] as indented text, labels and value columns
/// padded to line up, no trailing spaces.
pub fn text_columns(rows: &[(String, Vec<String>)]) -> String {
    let label_width = rows
        .iter()
        .map(|(l, _)| l.chars().count())
        .max()
        .unwrap_or(0);
    let runs = rows.first().map_or(0, |(_, v)| v.len());
    let widths: Vec<usize> = (0..runs)
        .map(|i| {
            rows.iter()
                .filter_map(|(_, v)| v.get(i))
                .map(|v| v.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut s = String::new();
    for (label, values) in rows {
        let mut line = format!("  {label:<label_width$}");
        for (v, w) in values.iter().zip(&widths) {
            let _ = write!(line, "  {v:<w$}");
        }
        let _ = writeln!(s, "{}", line.trim_end());
    }
    s
}

/// Appends JSON lines to the file at `path` (created if missing); nothing
/// without a path.
pub fn append_json_lines(path: Option<&std::path::Path>, lines: &[String]) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use std::io::Write as _;
    let Some(path) = path else {
        return Ok(());
    };
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    for line in lines {
        writeln!(f, "{line}").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// A value with 3 decimals, `-` for none.
fn fixed3(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"))
}

/// `"name n, name n"` for counts by name, `"0"` for none.
fn counts_text(counts: &BTreeMap<String, u64>) -> String {
    if counts.is_empty() {
        return "0".to_owned();
    }
    counts
        .iter()
        .map(|(name, n)| format!("{name} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Rounds to 3 decimals.
pub fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the Unix epoch (UTC).
pub fn rfc3339_utc(unix_secs: u64) -> String {
    let days = unix_secs / 86_400;
    let rem = unix_secs % 86_400;
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Howard Hinnant's civil_from_days, for days >= 0.
    let z = days as i64 + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    const WT: TransportMix = TransportMix::WebTransport;

    fn params(clients: u32) -> Params {
        Params {
            rooms: 2,
            clients_per_room: clients,
            hz: 30.0,
            payload_bytes: 48,
            duration_s: 10.0,
            warmup_s: 2.0,
            drain_ms: 500,
            seed: 1,
            tick_capacity: 64,
            datagram_receive_buffer_bytes: None,
            client_endpoints: 0,
            connect_concurrency: 32,
            server: "in-process".into(),
            url: "https://127.0.0.1:1/chorus".into(),
            ws_url: None,
            scenario: None,
            scenario_overrides: Vec::new(),
            state_rate: 0.0,
            command_rate: 0.0,
        }
    }

    fn measurements(window_s: f64) -> Measurements {
        Measurements {
            window_s,
            connect_join_us: new_histogram(),
            cpu: CpuFigures::default(),
            memory: MemFigures::default(),
            server_counters: Some(ServerCounters {
                ticks_in: 1,
                ticks_out: 2,
                ticks_dropped: 3,
                ticks_rejected: 4,
            }),
            server_sessions_opened: Some(PerTransport::default()),
            kernel_udp: Some(KernelUdp::default()),
            kernel_tcp: Some(KernelTcp::default()),
            sdk_outgoing_replaced: 0,
            server_reliable: None,
            state: None,
            commands: None,
        }
    }

    /// Anomalies `n`, `2n`, `3n`, `4n`, in field order.
    fn anomalies(n: u64) -> Anomalies {
        Anomalies {
            duplicates: n,
            misrouted: 2 * n,
            too_old: 3 * n,
            undecodable: 4 * n,
        }
    }

    /// One room's sender totals: `acked` acks at `ack_us` each, and the
    /// refusals and failures given.
    fn lane_sender(
        sent: u64,
        acked: u64,
        ack_us: u64,
        refused: &[&str],
        failed: &[&str],
    ) -> LaneTotals {
        let mut t = LaneTotals {
            sent,
            ..LaneTotals::default()
        };
        for _ in 0..acked {
            t.record_ack(ack_us);
        }
        for code in refused {
            t.record_refused(code);
        }
        for why in failed {
            t.record_failed(why);
        }
        t
    }

    /// One member's receiver totals: `n` deliveries at `us` each.
    fn lane_receiver(n: u64, us: u64) -> LaneTotals {
        let mut t = LaneTotals::default();
        for _ in 0..n {
            t.record_delivery(us);
        }
        t
    }

    #[test]
    fn lane_expected_follows_acks_and_room_size() {
        // Rooms of 4: two rooms' senders sent 20 each; 38 acked at 1 ms, one
        // refused rate_limited, one timed out. Receivers saw 110 of the 114
        // changes (38 x 3) at 2 ms.
        let mut all = LaneTotals::default();
        all.merge(&lane_sender(20, 19, 1000, &["rate_limited"], &[]));
        all.merge(&lane_sender(20, 19, 1000, &[], &["timeout"]));
        for _ in 0..2 {
            all.merge(&lane_receiver(55, 2000));
        }
        all.sdk_lagged = 4;
        let r = LaneReport::compute(&all, 2.0, 2, 4, 10.0);
        assert_eq!(
            (r.sent, r.acked, r.expected, r.delivered),
            (40, 38, 114, 110)
        );
        assert_eq!(r.nominal_per_s, 4.0);
        assert_eq!(
            (r.sent_per_s, r.acked_per_s, r.delivered_per_s),
            (4.0, 3.8, 11.0)
        );
        assert_eq!(r.refused.get("rate_limited"), Some(&1));
        assert_eq!(r.failed.get("timeout"), Some(&1));
        assert_eq!(r.loss_pct, round3(100.0 * 4.0 / 114.0));
        assert_eq!(r.ack_latency_ms.samples, 38);
        assert_eq!(r.ack_latency_ms.p99, Some(1.0));
        assert_eq!(r.fanout_latency_ms.samples, 110);
        assert_eq!(r.fanout_latency_ms.p50, Some(2.0));
        assert_eq!(r.sdk_lagged, 4);
        // Nothing acked (all refused): nothing expected, no loss, no NaN.
        let refused = lane_sender(3, 0, 0, &["forbidden"; 3], &[]);
        let r = LaneReport::compute(&refused, 1.0, 1, 4, 3.0);
        assert_eq!((r.expected, r.loss_pct), (0, 0.0));
        assert_eq!(r.refused.get("forbidden"), Some(&3));
    }

    #[test]
    fn lane_merge_adds_every_counter_and_histogram() {
        let mut a = lane_sender(5, 4, 500, &["conflict"], &["closed"]);
        a.unanswered = 1;
        a.anomalies = anomalies(1);
        a.sdk_lagged = 5;
        a.streams_ended_early = 6;
        let mut b = lane_receiver(7, 700);
        b.merge(&lane_sender(1, 1, 900, &["conflict", "state_full"], &[]));
        b.unanswered = 10;
        b.anomalies = anomalies(10);
        b.sdk_lagged = 50;
        b.streams_ended_early = 60;
        let mut m = LaneTotals::default();
        m.merge(&a);
        m.merge(&b);
        assert_eq!((m.sent, m.acked, m.delivered, m.unanswered), (6, 5, 7, 11));
        assert_eq!(m.refused.get("conflict"), Some(&2));
        assert_eq!(m.refused.get("state_full"), Some(&1));
        assert_eq!(m.failed.get("closed"), Some(&1));
        assert_eq!(m.anomalies, anomalies(11));
        assert_eq!((m.sdk_lagged, m.streams_ended_early), (55, 66));
        assert_eq!((m.ack_latency_us.len(), m.fanout_latency_us.len()), (5, 7));
    }

    #[test]
    fn lanes_reach_the_report_and_the_table() {
        let mut p = params(3);
        p.state_rate = 5.0;
        p.scenario = Some("s2".into());
        p.scenario_overrides = vec!["clients_per_room".into()];
        let mut m = measurements(10.0);
        let mut state = lane_sender(100, 100, 800, &[], &[]);
        state.merge(&lane_receiver(200, 1200));
        m.state = Some(state);
        m.server_reliable = Some(ServerReliableCounters {
            state_updates: [("applied".to_owned(), 100)].into_iter().collect(),
            commands: 0,
        });
        let r = Report::compute(p, WT, RunMeta::default(), &totals(0, 0, &[]), m);
        let state = r.state.as_ref().expect("state load ran");
        assert_eq!(
            (state.expected, state.delivered, state.loss_pct),
            (200, 200, 0.0)
        );
        assert_eq!(state.nominal_per_s, 10.0, "2 rooms x 5/s");
        assert_eq!(r.commands, None);
        let table = r.table();
        assert!(
            table.starts_with(
                "chorus-bench: scenario s2 with clients_per_room overridden, 2 rooms x 3 clients"
            ),
            "{table}"
        );
        assert!(table.contains("state 5/s per room"), "{table}");
        assert!(table.contains("state fan-out delivered / loss"), "{table}");
        assert!(table.contains("200 of 200 (0.000 %)"), "{table}");
        assert!(
            table.contains("state refused / failed / unanswered  0 / 0 / 0"),
            "{table}"
        );
        assert!(table.contains("server state updates"), "{table}");
        assert!(table.contains("applied 100"), "{table}");
        assert!(!table.contains("commands sent"), "{table}");
        // Without the reliable loads the table has none of their rows.
        let plain = Report::compute(
            params(3),
            WT,
            RunMeta::default(),
            &totals(1, 2, &[]),
            measurements(1.0),
        );
        assert!(!plain.table().contains("state"), "{}", plain.table());
    }

    fn totals(sent: u64, delivered: u64, latencies: &[u64]) -> ClientTotals {
        // All sent over WebTransport.
        let mut t = ClientTotals {
            sent,
            delivered,
            sent_by: PerTransport {
                webtransport: sent,
                websocket: 0,
            },
            ..ClientTotals::default()
        };
        for &us in latencies {
            t.record_latency_us(us);
        }
        t
    }

    #[test]
    fn expected_and_loss_follow_room_size() {
        // 1000 ticks in rooms of 5: 4000 expected; 3990 delivered = 0.25 % loss.
        let r = Report::compute(
            params(5),
            WT,
            RunMeta::default(),
            &totals(1000, 3990, &[]),
            measurements(10.0),
        );
        assert_eq!(r.expected, 4000);
        assert_eq!(r.loss_pct, 0.25);
        assert_eq!(r.sent_per_s, 100.0);
        assert_eq!(r.nominal_sent_per_s, 300.0);
        assert_eq!(r.expected_per_s, 400.0);
        assert_eq!(r.delivered_per_s, 399.0);

        let none_lost = Report::compute(
            params(5),
            WT,
            RunMeta::default(),
            &totals(1000, 4000, &[]),
            measurements(10.0),
        );
        assert_eq!(none_lost.loss_pct, 0.0);
    }

    #[test]
    fn nothing_expected_means_no_loss_and_no_nan() {
        // A room of one: nobody to deliver to.
        let r = Report::compute(
            params(1),
            WT,
            RunMeta::default(),
            &totals(50, 0, &[]),
            measurements(0.0),
        );
        assert_eq!(r.expected, 0);
        assert_eq!(r.loss_pct, 0.0);
        assert_eq!(r.sent_per_s, 0.0);
        assert_eq!(r.latency_ms, Percentiles::default());
        assert!(r.json_line().is_ok());
    }

    #[test]
    fn merge_adds_every_counter_and_histogram() {
        let mut a = totals(10, 20, &[1000, 2000]);
        a.anomalies = anomalies(1);
        a.sdk_dropped = 5;
        a.send_errors = 6;
        let mut b = totals(5, 7, &[1500]);
        b.anomalies = anomalies(10);
        b.sdk_dropped = 50;
        b.send_errors = 60;
        let mut m = ClientTotals::default();
        m.merge(&a);
        m.merge(&b);
        assert_eq!((m.sent, m.delivered), (15, 27));
        assert_eq!(m.anomalies, anomalies(11));
        assert_eq!((m.sdk_dropped, m.send_errors), (55, 66));
        assert_eq!(m.latency_us.len(), 3);

        let r = Report::compute(params(3), WT, RunMeta::default(), &m, measurements(1.0));
        assert_eq!(r.expected, 30);
        assert_eq!(r.loss_pct, 10.0);
        assert_eq!(r.anomalies.duplicates, 11);
        assert_eq!(r.anomalies.misrouted, 22);
        assert_eq!(r.sdk_dropped, 55);
        assert_eq!(r.latency_ms.samples, 3);
        // Exact below 2048 µs; above, 3 significant digits (2 µs buckets, etc.).
        assert_eq!(r.latency_ms.p50, Some(1.5));
        assert_eq!(r.latency_ms.max, Some(2.0));
    }

    #[test]
    fn percentiles_are_ms_with_three_decimals() {
        let lat: Vec<u64> = (1..=1000).collect(); // 1 µs .. 1000 µs
        let r = Report::compute(
            params(2),
            WT,
            RunMeta::default(),
            &totals(1000, 1000, &lat),
            measurements(1.0),
        );
        let l = r.latency_ms;
        assert_eq!(l.samples, 1000);
        assert_eq!(l.p50, Some(0.5));
        assert_eq!(l.p90, Some(0.9));
        assert_eq!(l.p99, Some(0.99));
        assert_eq!(l.p999, Some(0.999));
        assert_eq!(l.max, Some(1.0));
        // Out-of-range values saturate instead of failing.
        let mut t = ClientTotals::default();
        t.record_latency_us(0);
        t.record_latency_us(u64::MAX);
        assert_eq!(t.latency_us.len(), 2);
    }

    #[test]
    fn json_line_has_the_documented_keys_and_parses_back() {
        let meta = RunMeta {
            timestamp: rfc3339_utc(1_700_000_000),
            timestamp_unix: 1_700_000_000,
            git_commit: Some("abc".into()),
            git_dirty: Some(false),
            cores: 2,
            usable_cores: 2,
        };
        let r = Report::compute(
            params(5),
            WT,
            meta,
            &totals(100, 400, &[500, 700]),
            measurements(2.0),
        );
        let line = r.json_line().expect("serializes");
        assert!(!line.contains('\n'), "one line");
        let v: serde_json::Value = serde_json::from_str(&line).expect("valid JSON");
        for key in [
            "schema",
            "target",
            "transport",
            "clients_per_room_by_transport",
            "timestamp",
            "timestamp_unix",
            "git_commit",
            "git_dirty",
            "cores",
            "usable_cores",
            "params",
            "window_s",
            "nominal_sent_per_s",
            "sent",
            "sent_per_s",
            "expected",
            "expected_per_s",
            "delivered",
            "delivered_per_s",
            "loss_pct",
            "duplicates",
            "misrouted",
            "too_old",
            "undecodable",
            "send_errors",
            "sdk_dropped",
            "sdk_outgoing_replaced",
            "receivers_ended_early",
            "latency_ms",
            "by_pair",
            "send_lateness_ms",
            "receive_handoff_ms",
            "connect_join_ms",
            "cpu",
            "memory",
            "server_counters",
            "server_sessions_opened",
            "kernel_udp",
            "kernel_tcp",
            "server_reliable",
            "state",
            "commands",
        ] {
            assert!(v.get(key).is_some(), "missing key {key}");
        }
        // Loads that did not run are null, not left out.
        assert!(v["state"].is_null() && v["commands"].is_null());
        for key in ["p50", "p90", "p99", "p999", "max", "samples"] {
            assert!(v["latency_ms"].get(key).is_some(), "latency_ms.{key}");
        }
        for key in [
            "rooms",
            "clients_per_room",
            "hz",
            "payload_bytes",
            "duration_s",
            "warmup_s",
            "seed",
            "url",
            "ws_url",
            "scenario",
            "scenario_overrides",
            "state_rate",
            "command_rate",
        ] {
            assert!(v["params"].get(key).is_some(), "params.{key}");
        }
        for key in [
            "server_pct",
            "loadgen_pct",
            "bench_process_pct",
            "machine_pct",
            "clk_tck",
        ] {
            assert!(v["cpu"].get(key).is_some(), "cpu.{key}");
        }
        for key in [
            "peak_rss_mib",
            "rss_end_mib",
            "scope",
            "peak_since_run_start",
        ] {
            assert!(v["memory"].get(key).is_some(), "memory.{key}");
        }
        for key in ["ticks_in", "ticks_out", "ticks_dropped", "ticks_rejected"] {
            assert!(
                v["server_counters"].get(key).is_some(),
                "server_counters.{key}"
            );
        }
        assert_eq!(v["schema"], SCHEMA);
        assert_eq!(SCHEMA, "chorus-bench/4");
        assert_eq!(v["target"], "chorus");
        assert_eq!(v["transport"], "webtransport");
        assert_eq!(v["clients_per_room_by_transport"]["webtransport"], 5);
        assert_eq!(v["clients_per_room_by_transport"]["websocket"], 0);
        for key in [
            "from",
            "to",
            "sent",
            "expected",
            "delivered",
            "loss_pct",
            "latency_ms",
        ] {
            assert!(v["by_pair"][0].get(key).is_some(), "by_pair.{key}");
        }
        assert_eq!(v["server_sessions_opened"]["websocket"], 0);
        assert_eq!(v["timestamp"], "2023-11-14T22:13:20Z");
        assert_eq!(v["expected"], 400);
        assert_eq!(v["latency_ms"]["max"], 0.7);
        let back: Report = serde_json::from_str(&line).expect("parses back");
        assert_eq!(back, r);
        // A line from before schema 4 has no target: it was Chorus.
        let mut old = v.clone();
        old.as_object_mut().expect("an object").remove("target");
        let back: Report = serde_json::from_value(old).expect("parses without target");
        assert_eq!(back.target, ServerKind::Chorus);
        // The table mentions the headline figures.
        let table = r.table();
        assert!(table.contains("loss"));
        assert!(table.contains("p99"));
    }

    #[test]
    fn json_line_carries_the_lane_figures_and_parses_back() {
        let mut p = params(2);
        p.hz = 0.0;
        p.state_rate = 4.0;
        p.command_rate = 1.0;
        p.scenario = Some("s1".into());
        let mut m = measurements(2.0);
        let mut state = lane_sender(16, 15, 900, &["rate_limited"], &[]);
        state.merge(&lane_receiver(15, 1500));
        m.state = Some(state);
        m.commands = Some(lane_sender(4, 4, 700, &[], &[]));
        m.server_reliable = Some(ServerReliableCounters {
            state_updates: [("applied".to_owned(), 15), ("rate_limited".to_owned(), 1)]
                .into_iter()
                .collect(),
            commands: 4,
        });
        let r = Report::compute(p, WT, RunMeta::default(), &totals(0, 0, &[]), m);
        let line = r.json_line().expect("serializes");
        let v: serde_json::Value = serde_json::from_str(&line).expect("valid JSON");
        for lane in ["state", "commands"] {
            for key in [
                "rate_per_room",
                "nominal_per_s",
                "sent",
                "sent_per_s",
                "acked",
                "acked_per_s",
                "refused",
                "failed",
                "unanswered",
                "ack_latency_ms",
                "expected",
                "delivered",
                "delivered_per_s",
                "loss_pct",
                "fanout_latency_ms",
                "duplicates",
                "misrouted",
                "too_old",
                "undecodable",
                "sdk_lagged",
                "streams_ended_early",
            ] {
                assert!(v[lane].get(key).is_some(), "{lane}.{key}");
            }
            for key in ["p50", "p90", "p99", "p999", "max", "samples"] {
                assert!(
                    v[lane]["ack_latency_ms"].get(key).is_some(),
                    "{lane} ack {key}"
                );
                assert!(
                    v[lane]["fanout_latency_ms"].get(key).is_some(),
                    "{lane} fan-out {key}"
                );
            }
        }
        assert_eq!(v["params"]["scenario"], "s1");
        assert_eq!(v["params"]["hz"], 0.0);
        assert_eq!(v["state"]["refused"]["rate_limited"], 1);
        assert_eq!(v["state"]["expected"], 15);
        assert_eq!(v["state"]["ack_latency_ms"]["max"], 0.9);
        assert_eq!(v["commands"]["delivered"], 0);
        assert_eq!(v["commands"]["loss_pct"], 100.0);
        assert_eq!(v["server_reliable"]["state_updates"]["applied"], 15);
        assert_eq!(v["server_reliable"]["commands"], 4);
        let back: Report = serde_json::from_str(&line).expect("parses back");
        assert_eq!(back, r);
    }

    /// One client's totals in a mixed room of three (0: WT, 1: WS, 2: WT):
    /// it sent `sent` ticks and received `from` (sender index, count, µs).
    fn client(mix: TransportMix, me: u32, sent: u64, from: &[(u32, u64, u64)]) -> ClientTotals {
        let mut t = ClientTotals::default();
        for _ in 0..sent {
            t.record_sent(mix.of(me));
        }
        for &(sender, n, us) in from {
            for _ in 0..n {
                t.record_delivery(mix.of(sender), mix.of(me), us);
            }
        }
        t
    }

    #[test]
    fn pair_bookkeeping_splits_expected_delivered_and_latency() {
        use ClientTransport::{WebSocket as WS, WebTransport as WT};
        let mix = TransportMix::Mixed;
        // Room of 3: clients 0 and 2 on WebTransport, 1 on WebSocket; each sends 10.
        // 0 gets 10 from 1 (2 ms) and 10 from 2 (1 ms); 1 gets 9 from 0 and 9
        // from 2 (1.8 ms; 2 lost); 2 gets 10 from 0 (1 ms) and 10 from 1 (2 ms).
        // (Below 2048 µs the histogram is exact.)
        let mut all = ClientTotals::default();
        for c in [
            client(mix, 0, 10, &[(1, 10, 2000), (2, 10, 1000)]),
            client(mix, 1, 10, &[(0, 9, 1800), (2, 9, 1800)]),
            client(mix, 2, 10, &[(0, 10, 1000), (1, 10, 2000)]),
        ] {
            all.merge(&c);
        }
        assert_eq!(all.sent, 30);
        assert_eq!((all.sent_by.webtransport, all.sent_by.websocket), (20, 10));
        assert_eq!(all.delivered, 58);

        let mut p = params(3);
        p.rooms = 1;
        let r = Report::compute(p, mix, RunMeta::default(), &all, measurements(1.0));
        assert_eq!(r.transport, TransportMix::Mixed);
        assert_eq!(
            r.clients_per_room_by_transport,
            PerTransport {
                webtransport: 2,
                websocket: 1
            }
        );
        assert_eq!((r.expected, r.delivered), (60, 58));
        let pairs: Vec<_> = r
            .by_pair
            .iter()
            .map(|p| (p.from, p.to, p.sent, p.expected, p.delivered))
            .collect();
        // WS -> WS: the only WebSocket client has no WebSocket room-mate.
        assert_eq!(
            pairs,
            [
                (WT, WT, 20, 20, 20),
                (WT, WS, 20, 20, 18),
                (WS, WT, 10, 20, 20),
            ]
        );
        assert_eq!(
            r.by_pair.iter().map(|p| p.expected).sum::<u64>(),
            r.expected
        );
        assert_eq!(
            r.by_pair.iter().map(|p| p.delivered).sum::<u64>(),
            r.delivered
        );
        assert_eq!(r.by_pair[0].latency_ms.p50, Some(1.0));
        assert_eq!(r.by_pair[1].latency_ms.max, Some(1.8));
        assert_eq!(r.by_pair[1].loss_pct, 10.0);
        assert_eq!(r.by_pair[2].latency_ms.samples, 20);
        assert_eq!(r.by_pair[2].latency_ms.p99, Some(2.0));
        assert_eq!(r.latency_ms.samples, 58);
        let table = r.table();
        assert!(table.contains("mixed (2 WT + 1 WS per room)"), "{table}");
        assert!(table.contains("WT->WS delivered / loss"), "{table}");
        assert!(table.contains("18 of 20 (10.000 %)"), "{table}");
        assert!(table.contains("WS->WT ms p50/p90/p99/max"), "{table}");
        assert!(!table.contains("WS->WS"), "{table}");
    }

    #[test]
    fn single_transport_runs_have_one_pair_and_no_pair_rows() {
        let mix = TransportMix::WebSocket;
        let mut all = ClientTotals::default();
        all.merge(&client(mix, 0, 5, &[(1, 5, 1500)]));
        all.merge(&client(mix, 1, 5, &[(0, 4, 1500)]));
        let mut p = params(2);
        p.rooms = 1;
        let r = Report::compute(p, mix, RunMeta::default(), &all, measurements(1.0));
        assert_eq!(r.by_pair.len(), 1);
        let only = r.by_pair[0];
        assert_eq!(
            (only.from, only.to),
            (ClientTransport::WebSocket, ClientTransport::WebSocket)
        );
        assert_eq!((only.expected, only.delivered), (r.expected, r.delivered));
        assert_eq!(only.loss_pct, r.loss_pct);
        assert_eq!(only.latency_ms, r.latency_ms);
        assert!(!r.table().contains("->WS delivered"));
    }

    #[test]
    fn the_table_names_the_scenario_and_its_overrides() {
        let run = |scenario: Option<&str>, overrides: &[&str]| {
            let mut p = params(3);
            p.scenario = scenario.map(str::to_owned);
            p.scenario_overrides = overrides.iter().map(|&o| o.to_owned()).collect();
            let r = Report::compute(
                p,
                WT,
                RunMeta::default(),
                &totals(1, 2, &[]),
                measurements(1.0),
            );
            let v: serde_json::Value =
                serde_json::from_str(&r.json_line().expect("serializes")).expect("valid JSON");
            (r.table().lines().next().unwrap_or_default().to_owned(), v)
        };
        let (head, v) = run(Some("s2"), &[]);
        assert!(
            head.starts_with("chorus-bench: scenario s2, 2 rooms x 3 clients"),
            "{head}"
        );
        assert_eq!(v["params"]["scenario"], "s2");
        let (head, v) = run(Some("s2"), &["clients_per_room", "hz"]);
        assert!(
            head.starts_with(
                "chorus-bench: scenario s2 with clients_per_room, hz overridden, 2 rooms"
            ),
            "{head}"
        );
        assert_eq!(v["params"]["scenario_overrides"][1], "hz");
        let (head, v) = run(None, &[]);
        assert!(
            head.starts_with("chorus-bench: 2 rooms x 3 clients"),
            "{head}"
        );
        assert!(v["params"]["scenario"].is_null());
    }

    #[test]
    fn side_by_side_has_one_column_per_run() {
        let wt = Report::compute(
            params(2),
            TransportMix::WebTransport,
            RunMeta::default(),
            &totals(100, 100, &[1000]),
            measurements(1.0),
        );
        let mut ended = totals(100, 90, &[2000]);
        ended.receivers_ended_early = 3;
        let ws = Report::compute(
            params(2),
            TransportMix::WebSocket,
            RunMeta::default(),
            &ended,
            measurements(1.0),
        );
        let table = side_by_side(&[wt.clone(), ws]);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("chorus-bench: 2 rooms x 2 clients"));
        let row = |label: &str| -> Vec<String> {
            let line = lines
                .iter()
                .find(|l| l.trim_start().starts_with(label))
                .unwrap_or_else(|| panic!("no row {label}:\n{table}"));
            line.trim_start()[label.len()..]
                .split("  ")
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(row("transport"), ["webtransport", "websocket"]);
        assert_eq!(row("loss"), ["0.000 %", "10.000 %"]);
        // A row only one run has shows "-" for the other.
        assert_eq!(
            row("tick streams ended early"),
            ["-", "3 (connection or room lost)"]
        );
        // The value columns line up.
        let col = |label: &str| {
            let line = lines
                .iter()
                .find(|l| l.trim_start().starts_with(label))
                .expect("row");
            line.find("websocket")
                .or_else(|| line.find("10.000"))
                .expect("second column")
        };
        assert_eq!(col("transport"), col("loss"));
        assert!(
            lines.iter().all(|l| l.trim_end() == *l),
            "no trailing spaces"
        );
        assert_eq!(
            row("target"),
            ["chorus (in-process)", "chorus (in-process)"]
        );
        assert!(lines[0].ends_with("server in-process"), "{}", lines[0]);
        // Against several servers, the header leaves the server to each column.
        let mut p = params(2);
        p.server = "node v20.0.0".into();
        let relay = Report::compute_for(
            ServerKind::WsRelay,
            p,
            TransportMix::WebSocket,
            RunMeta::default(),
            &totals(100, 100, &[3000]),
            measurements(1.0),
        );
        let mixed = side_by_side(&[wt.clone(), relay]);
        let first = mixed.lines().next().unwrap_or_default();
        assert!(first.ends_with("server per column, see target"), "{first}");
        let target_row = mixed
            .lines()
            .find(|l| l.trim_start().starts_with("target"))
            .unwrap_or_default();
        assert!(
            target_row.contains("chorus (in-process)")
                && target_row.ends_with("ws-relay (node v20.0.0)"),
            "{mixed}"
        );
        // A relay has no Chorus counters: `-` there, not a row of its own;
        // the kernel's counters still show.
        let ends_with = |label: &str, value: &str| {
            mixed
                .lines()
                .find(|l| l.trim_start().starts_with(label))
                .is_some_and(|l| l.ends_with(value))
        };
        assert!(
            ends_with("server ticks in/out/dropped/rej", "  -"),
            "{mixed}"
        );
        assert!(!mixed.contains("not readable"), "{mixed}");
        assert!(
            ends_with("kernel TCP segs in/out/retrans", "(machine-wide)"),
            "{mixed}"
        );
        // One report alone is its own table.
        assert_eq!(side_by_side(std::slice::from_ref(&wt)), wt.table());
        assert_eq!(side_by_side(&[]), "");
    }

    #[test]
    fn rfc3339_formatting() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_utc(1_709_251_199), "2024-02-29T23:59:59Z");
    }
}
