//! What a running load run shows while it goes, and the time series it keeps
//! for the plots, without costing the hot paths a lock or an allocation.
//!
//! - [`RunProbe`]: shared by the run and whoever watches it (the progress bar
//!   of [`crate::progress`]). It holds the phase (clients connected so far,
//!   then the run's [`PhaseTimes`], from which warm-up, measuring and
//!   draining follow by the clock) and one cache-line-sized slot per sender
//!   and per receiver. Each slot has a single writer, its own task, which
//!   *stores* its running counts there (relaxed stores: plain writes, no
//!   read-modify-write, no contention); the watcher sums the slots a few
//!   times a second.
//! - [`ReceivedSeries`]: one receiver's ticks received per second since
//!   sending started, a plain array allocated before the first tick and
//!   handed to the probe once, when the receiver ends ([`RunProbe::submit`]).
//! - [`RunSeries`]: a finished run's curves, what [`crate::plots`] draws:
//!   latency histograms per transport and ticks received per second.

use crate::report::{ClientTotals, new_histogram};
use crate::transports::{ClientTransport, TransportMix};
use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// A counter alone on its cache line, so that two tasks writing neighbouring
/// counters do not slow each other down.
#[derive(Debug, Default)]
#[repr(align(64))]
struct PaddedCounter(AtomicU64);

/// One receiver's running counts.
#[derive(Debug, Default)]
#[repr(align(64))]
struct ReceiverSlot {
    /// Ticks read from the SDK, whatever their send time (for the rate).
    received: AtomicU64,
    /// Ticks sent in the measured window, delivered for the first time.
    delivered: AtomicU64,
}

/// When the phases of a run start and end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhaseTimes {
    /// Sending starts (warm-up first).
    pub start: Instant,
    pub window_start: Instant,
    /// Sending stops; receivers drain until `recv_deadline`.
    pub window_end: Instant,
    pub recv_deadline: Instant,
}

impl PhaseTimes {
    /// Whole seconds from `start` to `recv_deadline`, rounded up: the length
    /// of a [`ReceivedSeries`].
    pub fn seconds(&self) -> usize {
        let span = self.recv_deadline.saturating_duration_since(self.start);
        usize::try_from(span.as_secs()).unwrap_or(usize::MAX - 1) + 1
    }
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Phase {
    /// Clients connecting and joining.
    Connecting { connected: u32, total: u32 },
    /// Sending, before the measured window.
    WarmUp { left: Duration },
    /// In the measured window.
    Measuring { elapsed: Duration, total: Duration },
    /// Waiting for ticks and answers still in flight.
    Draining { left: Duration },
    /// Past the drain deadline: collecting, closing the clients.
    Closing,
}

/// Sums of the slots at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LiveTotals {
    /// Ticks sent in the measured window so far.
    pub sent: u64,
    /// Of those, deliveries counted so far.
    pub delivered: u64,
    /// Ticks read by receivers so far, whatever their send time.
    pub received: u64,
}

impl LiveTotals {
    /// Loss so far, in %, of `expected = sent × receivers_per_tick`; `None`
    /// before anything was expected. Ticks still in flight count as lost
    /// until they arrive, so this reads slightly high while sending.
    pub fn loss_pct(&self, receivers_per_tick: u32) -> Option<f64> {
        let expected = self.sent.saturating_mul(u64::from(receivers_per_tick));
        (expected > 0).then(|| {
            let delivered = self.delivered.min(expected);
            100.0 * (1.0 - delivered as f64 / expected as f64)
        })
    }
}

/// The live view of one run; see the module docs.
#[derive(Debug)]
pub struct RunProbe {
    total_clients: u32,
    receivers_per_tick: u32,
    connected: AtomicU32,
    phases: OnceLock<PhaseTimes>,
    senders: Box<[PaddedCounter]>,
    receivers: Box<[ReceiverSlot]>,
    series: Mutex<Vec<ReceivedSeries>>,
}

impl RunProbe {
    /// For a run of `total_clients` clients in rooms of `clients_per_room`.
    pub fn new(total_clients: u32, clients_per_room: u32) -> RunProbe {
        let n = total_clients as usize;
        RunProbe {
            total_clients,
            receivers_per_tick: clients_per_room.saturating_sub(1),
            connected: AtomicU32::new(0),
            phases: OnceLock::new(),
            senders: (0..n).map(|_| PaddedCounter::default()).collect(),
            receivers: (0..n).map(|_| ReceiverSlot::default()).collect(),
            series: Mutex::new(Vec::new()),
        }
    }

    /// Each tick reaches this many room-mates.
    pub fn receivers_per_tick(&self) -> u32 {
        self.receivers_per_tick
    }

    /// One more client connected and joined.
    pub fn client_connected(&self) {
        self.connected.fetch_add(1, Ordering::Relaxed);
    }

    /// The run's schedule is fixed (once; later calls are ignored).
    pub fn set_phases(&self, phases: PhaseTimes) {
        let _ = self.phases.set(phases);
    }

    /// The run's schedule, once fixed.
    pub fn phases(&self) -> Option<PhaseTimes> {
        self.phases.get().copied()
    }

    /// Sender `index` has sent `sent` ticks in the window so far.
    pub fn store_sent(&self, index: u32, sent: u64) {
        if let Some(slot) = self.senders.get(index as usize) {
            slot.0.store(sent, Ordering::Relaxed);
        }
    }

    /// Receiver `index` has read `received` ticks so far.
    pub fn store_received(&self, index: u32, received: u64) {
        if let Some(slot) = self.receivers.get(index as usize) {
            slot.received.store(received, Ordering::Relaxed);
        }
    }

    /// Receiver `index` has counted `delivered` deliveries so far.
    pub fn store_delivered(&self, index: u32, delivered: u64) {
        if let Some(slot) = self.receivers.get(index as usize) {
            slot.delivered.store(delivered, Ordering::Relaxed);
        }
    }

    /// The slots summed now.
    pub fn totals(&self) -> LiveTotals {
        let mut t = LiveTotals {
            sent: self
                .senders
                .iter()
                .map(|s| s.0.load(Ordering::Relaxed))
                .sum(),
            ..LiveTotals::default()
        };
        for r in self.receivers.iter() {
            t.received += r.received.load(Ordering::Relaxed);
            t.delivered += r.delivered.load(Ordering::Relaxed);
        }
        t
    }

    /// The phase at `now`.
    pub fn phase(&self, now: Instant) -> Phase {
        let Some(p) = self.phases() else {
            return Phase::Connecting {
                connected: self.connected.load(Ordering::Relaxed),
                total: self.total_clients,
            };
        };
        if now < p.window_start {
            Phase::WarmUp {
                left: p.window_start.saturating_duration_since(now),
            }
        } else if now < p.window_end {
            Phase::Measuring {
                elapsed: now.saturating_duration_since(p.window_start),
                total: p.window_end.saturating_duration_since(p.window_start),
            }
        } else if now < p.recv_deadline {
            Phase::Draining {
                left: p.recv_deadline.saturating_duration_since(now),
            }
        } else {
            Phase::Closing
        }
    }

    /// An empty per-second series for a receiver on `transport`, as long as
    /// the schedule (one bucket if the schedule is not fixed yet).
    pub fn new_series(&self, transport: ClientTransport) -> ReceivedSeries {
        let (start, seconds) = self
            .phases()
            .map_or((Instant::now(), 1), |p| (p.start, p.seconds()));
        ReceivedSeries {
            transport,
            start,
            per_second: vec![0; seconds],
        }
    }

    /// A receiver hands its series over when it ends.
    pub fn submit(&self, series: ReceivedSeries) {
        self.series
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(series);
    }

    /// Ticks received per second since sending started, summed over the
    /// receivers on `transport` that submitted theirs.
    pub fn received_per_second(&self, transport: ClientTransport) -> Vec<u64> {
        let all = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        let mut sum = Vec::new();
        for s in all.iter().filter(|s| s.transport == transport) {
            if sum.len() < s.per_second.len() {
                sum.resize(s.per_second.len(), 0);
            }
            for (total, n) in sum.iter_mut().zip(&s.per_second) {
                *total += n;
            }
        }
        sum
    }
}

/// One receiver's ticks per second of arrival, since sending started.
#[derive(Debug, Clone)]
pub struct ReceivedSeries {
    transport: ClientTransport,
    start: Instant,
    per_second: Vec<u64>,
}

impl ReceivedSeries {
    /// Counts one tick received at `at` (in the last bucket if later than
    /// the schedule planned).
    pub fn record(&mut self, at: Instant) {
        let second = at.saturating_duration_since(self.start).as_secs();
        let last = self.per_second.len().saturating_sub(1);
        let i = usize::try_from(second).map_or(last, |s| s.min(last));
        if let Some(bucket) = self.per_second.get_mut(i) {
            *bucket += 1;
        }
    }
}

/// One curve of a plot: a label and its points.
#[derive(Debug, Clone)]
pub struct LatencyCurve {
    /// `webtransport`, `websocket`, or for a mixed run `mixed WT->WS` etc.
    pub label: String,
    /// One-way latency, µs.
    pub latency_us: Histogram<u64>,
}

/// Ticks received per second by the receivers of one transport.
#[derive(Debug, Clone, PartialEq)]
pub struct RateCurve {
    /// `webtransport`, `websocket`, or `mixed, received on WT` etc.
    pub label: String,
    /// Index `i`: ticks received in second `i` since sending started.
    pub per_second: Vec<u64>,
}

/// What a watched run ([`crate::run::run_probed`]) hands back.
#[derive(Debug, Clone)]
pub struct RunOutput {
    pub report: crate::report::Report,
    pub series: RunSeries,
}

/// A finished run's curves.
#[derive(Debug, Clone)]
pub struct RunSeries {
    pub transport: TransportMix,
    pub latency: Vec<LatencyCurve>,
    pub received: Vec<RateCurve>,
    /// Where the measured window starts and ends, s since sending started.
    pub window_s: (f64, f64),
    /// `rooms × clients × hz × (clients − 1)`: deliveries per second asked.
    pub nominal_deliveries_per_s: f64,
}

impl RunSeries {
    /// The same curves under `label` (a comparison names its runs by target,
    /// since a relay's clients are on WebSocket too); a mixed run's curves
    /// keep their per-pair names after it.
    pub fn labelled(mut self, label: &str) -> RunSeries {
        let name = |old: &str| match self.transport {
            TransportMix::Mixed => format!("{label} {old}"),
            _ => label.to_owned(),
        };
        for c in &mut self.latency {
            c.label = name(&c.label);
        }
        for c in &mut self.received {
            c.label = name(&c.label);
        }
        self
    }

    /// The curves of a run on `transport` from its merged totals and its probe.
    pub fn collect(
        transport: TransportMix,
        totals: &ClientTotals,
        probe: &RunProbe,
        nominal_deliveries_per_s: f64,
    ) -> RunSeries {
        let latency = match transport {
            TransportMix::Mixed => totals
                .pairs
                .iter()
                .map(|((from, to), pair)| LatencyCurve {
                    label: format!("mixed {}->{}", from.short(), to.short()),
                    latency_us: pair.latency_us.clone(),
                })
                .collect(),
            single => vec![LatencyCurve {
                label: single.name().to_owned(),
                latency_us: if totals.latency_us.is_empty() {
                    new_histogram()
                } else {
                    totals.latency_us.clone()
                },
            }],
        };
        let received = ClientTransport::ALL
            .into_iter()
            .filter_map(|t| {
                let per_second = probe.received_per_second(t);
                (!per_second.is_empty()).then(|| RateCurve {
                    label: match transport {
                        TransportMix::Mixed => format!("mixed, received on {}", t.short()),
                        single => single.name().to_owned(),
                    },
                    per_second,
                })
            })
            .collect();
        let window_s = probe.phases().map_or((0.0, 0.0), |p| {
            (
                p.window_start
                    .saturating_duration_since(p.start)
                    .as_secs_f64(),
                p.window_end
                    .saturating_duration_since(p.start)
                    .as_secs_f64(),
            )
        });
        RunSeries {
            transport,
            latency,
            received,
            window_s,
            nominal_deliveries_per_s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phases(at: Instant) -> PhaseTimes {
        PhaseTimes {
            start: at,
            window_start: at + Duration::from_secs(2),
            window_end: at + Duration::from_secs(12),
            recv_deadline: at + Duration::from_millis(12_500),
        }
    }

    #[test]
    fn the_phase_follows_the_schedule() {
        let probe = RunProbe::new(4, 2);
        probe.client_connected();
        assert_eq!(
            probe.phase(Instant::now()),
            Phase::Connecting {
                connected: 1,
                total: 4
            }
        );
        let t0 = Instant::now();
        probe.set_phases(phases(t0));
        assert_eq!(
            probe.phase(t0 + Duration::from_millis(500)),
            Phase::WarmUp {
                left: Duration::from_millis(1500)
            }
        );
        assert_eq!(
            probe.phase(t0 + Duration::from_secs(5)),
            Phase::Measuring {
                elapsed: Duration::from_secs(3),
                total: Duration::from_secs(10)
            }
        );
        assert!(matches!(
            probe.phase(t0 + Duration::from_secs(12)),
            Phase::Draining { .. }
        ));
        assert_eq!(probe.phase(t0 + Duration::from_secs(13)), Phase::Closing);
        // 12.5 s of schedule: 13 one-second buckets.
        assert_eq!(phases(t0).seconds(), 13);
    }

    #[test]
    fn slots_sum_and_loss_counts_in_flight_as_lost() {
        let probe = RunProbe::new(3, 3);
        probe.store_sent(0, 10);
        probe.store_sent(1, 10);
        probe.store_sent(1, 20); // a store replaces, it does not add
        probe.store_received(2, 50);
        probe.store_delivered(2, 45);
        probe.store_sent(99, 1); // out of range: ignored
        let t = probe.totals();
        assert_eq!(
            t,
            LiveTotals {
                sent: 30,
                delivered: 45,
                received: 50
            }
        );
        // 30 sent to 2 room-mates each: 60 expected, 45 delivered.
        assert_eq!(t.loss_pct(probe.receivers_per_tick()), Some(25.0));
        assert_eq!(LiveTotals::default().loss_pct(2), None);
    }

    #[test]
    fn series_bucket_by_arrival_second_and_sum_per_transport() {
        let probe = RunProbe::new(2, 2);
        let t0 = Instant::now();
        probe.set_phases(phases(t0));
        let mut a = probe.new_series(ClientTransport::WebSocket);
        let mut b = probe.new_series(ClientTransport::WebSocket);
        let mut c = probe.new_series(ClientTransport::WebTransport);
        a.record(t0 + Duration::from_millis(100));
        a.record(t0 + Duration::from_millis(1900));
        b.record(t0 + Duration::from_millis(1000));
        b.record(t0 + Duration::from_secs(60)); // late: the last bucket
        c.record(t0);
        for s in [a, b, c] {
            probe.submit(s);
        }
        let ws = probe.received_per_second(ClientTransport::WebSocket);
        assert_eq!(ws.len(), 13);
        assert_eq!(&ws[..3], [1, 2, 0]);
        assert_eq!(ws[12], 1);
        assert_eq!(ws.iter().sum::<u64>(), 4);
        assert_eq!(
            probe.received_per_second(ClientTransport::WebTransport)[0],
            1
        );
    }
}
