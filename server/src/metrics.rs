//! Prometheus metrics for `/metrics`.
//!
//! Each server has its own recorder (no process-global state, so several
//! servers in one process, as in tests, do not mix). The hot paths only bump
//! the relaxed atomics in [`ServerStats`]; this module copies them into the
//! recorder when `/metrics` is scraped.

use crate::rooms::RoomRegistry;
use crate::stats::ServerStats;
use metrics::{Unit, counter, describe_counter, describe_gauge, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

/// A server's metrics registry.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            describe_gauge!("chorus_sessions_open", "Sessions open now, by transport");
            describe_counter!(
                "chorus_sessions_opened_total",
                "Sessions opened, by transport"
            );
            describe_gauge!("chorus_rooms", "Rooms held now");
            describe_gauge!("chorus_members", "Members over all rooms now");
            describe_counter!("chorus_ticks_in_total", "Ticks accepted from clients");
            describe_counter!(
                "chorus_ticks_out_total",
                "Tick copies handed to receivers' transports"
            );
            describe_counter!(
                "chorus_ticks_dropped_total",
                "Tick copies dropped: replaced by a newer one for a slow receiver, or not carried by its transport"
            );
            describe_counter!(
                "chorus_ticks_rejected_total",
                "Tick datagrams refused (undecodable, not joined, forged sender, forbidden)"
            );
            describe_counter!("chorus_reliable_in_total", "Control messages received");
            describe_counter!(
                "chorus_reliable_out_total",
                "Control messages queued to sessions"
            );
            describe_counter!("chorus_errors_sent_total", "Error messages sent to clients");
            describe_counter!(
                "chorus_slow_consumer_disconnects_total",
                "Sessions cut off for not reading reliable events fast enough"
            );
            describe_counter!(
                "chorus_rate_limited_total",
                "Messages and ticks refused by a session's rate budgets"
            );
            describe_counter!(
                "chorus_sessions_resumed_total",
                "Sessions taken over by a resuming connection"
            );
            describe_counter!(
                "chorus_pack_bytes_in_total",
                Unit::Bytes,
                "Bytes of completed pack uploads"
            );
            describe_counter!(
                "chorus_pack_bytes_out_total",
                Unit::Bytes,
                "Bytes of packs sent to clients"
            );
            describe_counter!(
                "chorus_rate_limit_disconnects_total",
                "Sessions closed for repeated rate-limit violations"
            );
            describe_gauge!(
                "chorus_uptime_seconds",
                Unit::Seconds,
                "Seconds since the server started"
            );
        });
        Metrics { recorder, handle }
    }

    /// The Prometheus text exposition of the current figures.
    pub fn render(&self, stats: &ServerStats, rooms: &RoomRegistry, uptime_secs: f64) -> String {
        let summaries = rooms.summaries();
        let members: usize = summaries.iter().map(|r| r.members).sum();
        metrics::with_local_recorder(&self.recorder, || {
            for transport in crate::stats::TRANSPORTS {
                let (opened, closed) = stats.transport_counters(transport);
                counter!("chorus_sessions_opened_total", "transport" => transport)
                    .absolute(opened.get());
                gauge!("chorus_sessions_open", "transport" => transport)
                    .set(opened.get().saturating_sub(closed.get()) as f64);
            }
            gauge!("chorus_rooms").set(summaries.len() as f64);
            gauge!("chorus_members").set(members as f64);
            counter!("chorus_ticks_in_total").absolute(stats.ticks_in.get());
            counter!("chorus_ticks_out_total").absolute(stats.ticks_out.get());
            counter!("chorus_ticks_dropped_total").absolute(stats.ticks_dropped.get());
            counter!("chorus_ticks_rejected_total").absolute(stats.ticks_rejected.get());
            counter!("chorus_reliable_in_total").absolute(stats.reliable_in.get());
            counter!("chorus_reliable_out_total").absolute(stats.reliable_out.get());
            counter!("chorus_errors_sent_total").absolute(stats.errors_sent.get());
            counter!("chorus_slow_consumer_disconnects_total")
                .absolute(stats.slow_consumer_disconnects.get());
            counter!("chorus_rate_limited_total").absolute(stats.rate_limited.get());
            counter!("chorus_rate_limit_disconnects_total")
                .absolute(stats.rate_limit_disconnects.get());
            counter!("chorus_sessions_resumed_total").absolute(stats.sessions_resumed.get());
            counter!("chorus_pack_bytes_in_total").absolute(stats.pack_bytes_in.get());
            counter!("chorus_pack_bytes_out_total").absolute(stats.pack_bytes_out.get());
            gauge!("chorus_uptime_seconds").set(uptime_secs);
        });
        self.handle.render()
    }
}
