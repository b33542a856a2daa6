//! Prometheus metrics for `/metrics`.
//!
//! Each server has its own recorder (no process-global state, so several
//! servers in one process, as in tests, do not mix). The hot paths only bump
//! the relaxed atomics in [`ServerStats`]; this module copies them into the
//! recorder when `/metrics` is scraped, and reads the gauges (rooms, members,
//! queue depths) then.
//!
//! Every name starts with `chorus_` and carries its unit (`_total` for
//! counts, `_seconds`, `_bytes`). Labels have bounded values: transports,
//! small fixed reason sets, [`ErrorCode::name`](chorus_protocol::ErrorCode::name)
//! for codes, and for command kinds (client-chosen strings) the first
//! [`MAX_COMMAND_KINDS`](crate::stats::MAX_COMMAND_KINDS) kinds seen, the rest
//! counting as `other`. Families with a small fixed label set show every value
//! from the start; families labelled by error code or command kind show a
//! value once it has been counted.
//!
//! Histograms are fixed buckets of atomics ([`Histogram`](crate::stats::Histogram)),
//! rendered here, rather than the `metrics` crate's histograms: the
//! Prometheus recorder keeps every observation until a scrape (or an upkeep
//! task) folds them into buckets, so its memory grows with the event rate
//! times the time between scrapes, and nobody may be scraping at all. Fixed
//! buckets cost two relaxed increments per observation and constant memory.
//! `chorus_room_members` is the exception: it is a snapshot of the rooms at
//! scrape time (a bucket counts the rooms that have at most that many
//! members now), so it can go down; use it with `histogram_quantile` at an
//! instant, not with `rate`.

use crate::session::SessionContext;
use crate::stats::{HistogramSnapshot, TRANSPORTS};
use metrics::{Unit, counter, describe_counter, describe_gauge, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use std::fmt::Write as _;

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

/// Upper bounds of the `chorus_room_members` buckets.
const MEMBER_BOUNDS: [usize; 12] = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];

/// The histograms this module renders itself: name, help.
const HISTOGRAMS: [(&str, &str); 5] = [
    (
        "chorus_room_members",
        "Members per room, over the rooms held now (a snapshot at scrape time, not cumulative)",
    ),
    (
        "chorus_handshake_duration_seconds",
        "From a connection's arrival at the transport (WebTransport: before the QUIC handshake; WebSocket: after the HTTP upgrade) to the server's Hello, by transport",
    ),
    (
        "chorus_command_fanout_duration_seconds",
        "From a room taking an applied command off its inbox to the last copy of its event queued to a member's outbox",
    ),
    (
        "chorus_store_commit_duration_seconds",
        "From the start of a store transaction to its commit returning, fsync included (empty without a store)",
    ),
    (
        "chorus_client_rtt_seconds",
        "Round-trip time of a client's connection, sampled at each client Ping: QUIC's smoothed RTT estimate (WebTransport), the last heartbeat ping/pong (WebSocket), by transport",
    ),
];

impl Metrics {
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, describe_all);
        Metrics { recorder, handle }
    }

    /// The Prometheus text exposition of the current figures.
    pub fn render(&self, ctx: &SessionContext, uptime_secs: f64) -> String {
        let stats = &ctx.stats;
        let summaries = ctx.registry.summaries();
        let members: usize = summaries.iter().map(|r| r.members).sum();
        let outboxes = ctx.live.outbox_depths();
        let inbox_sum: usize = summaries.iter().map(|r| r.inbox_depth).sum();
        let inbox_max = summaries.iter().map(|r| r.inbox_depth).max().unwrap_or(0);
        metrics::with_local_recorder(&self.recorder, || {
            for transport in TRANSPORTS {
                let (opened, closed) = stats.transport_counters(transport);
                counter!("chorus_connections_total", "transport" => transport)
                    .absolute(opened.get());
                gauge!("chorus_connections_open", "transport" => transport)
                    .set(opened.get().saturating_sub(closed.get()) as f64);
                counter!("chorus_sessions_opened_total", "transport" => transport)
                    .absolute(stats.transport(transport).sessions_opened.get());
            }
            for (reason, n) in stats.quiet_ends.all() {
                counter!("chorus_sessions_closed_total", "reason" => reason).absolute(n);
            }
            for (code, n) in stats.error_ends.nonzero() {
                counter!("chorus_sessions_closed_total", "reason" => code).absolute(n);
            }
            gauge!("chorus_rooms").set(summaries.len() as f64);
            gauge!("chorus_members").set(members as f64);
            counter!("chorus_rooms_created_total").absolute(stats.rooms_created.get());
            counter!("chorus_rooms_ended_total", "reason" => "expired")
                .absolute(stats.rooms_expired.get());
            counter!("chorus_rooms_ended_total", "reason" => "closed")
                .absolute(stats.rooms_closed.get());
            counter!("chorus_ticks_in_total").absolute(stats.ticks_in.get());
            counter!("chorus_ticks_out_total").absolute(stats.ticks_out.get());
            for (reason, n) in stats.tick_drops.all() {
                counter!("chorus_ticks_dropped_total", "reason" => reason).absolute(n);
            }
            counter!("chorus_ticks_rejected_total").absolute(stats.ticks_rejected.get());
            counter!("chorus_reliable_in_total").absolute(stats.reliable_in.get());
            counter!("chorus_reliable_out_total").absolute(stats.reliable_out.get());
            for (outcome, n) in stats.state_updates.nonzero() {
                counter!("chorus_state_updates_total", "outcome" => outcome).absolute(n);
            }
            for (kind, outcome, n) in stats.commands.nonzero() {
                counter!("chorus_commands_total", "kind" => kind, "outcome" => outcome).absolute(n);
            }
            counter!("chorus_pack_bytes_in_total").absolute(stats.pack_bytes_in.get());
            counter!("chorus_pack_bytes_out_total").absolute(stats.pack_bytes_out.get());
            for (code, n) in stats.errors.nonzero() {
                counter!("chorus_errors_total", "code" => code).absolute(n);
            }
            for (budget, n) in stats.rate_limited_by.all() {
                counter!("chorus_rate_limited_total", "budget" => budget).absolute(n);
            }
            counter!("chorus_rate_limit_disconnects_total")
                .absolute(stats.rate_limit_disconnects.get());
            counter!("chorus_slow_consumer_disconnects_total")
                .absolute(stats.slow_consumer_disconnects.get());
            counter!("chorus_resumes_total", "outcome" => "resumed")
                .absolute(stats.sessions_resumed.get());
            counter!("chorus_resumes_total", "outcome" => "failed")
                .absolute(stats.resumes_failed.get());
            gauge!("chorus_resumable_sessions").set(ctx.resumes.len() as f64);
            for (kind, n) in stats.failovers.all() {
                counter!("chorus_failovers_total", "kind" => kind).absolute(n);
            }
            gauge!("chorus_outbox_frames").set(outboxes.frames as f64);
            gauge!("chorus_outbox_frames_max").set(outboxes.max_frames as f64);
            gauge!("chorus_outbox_bytes").set(outboxes.bytes as f64);
            gauge!("chorus_outbox_bytes_max").set(outboxes.max_bytes as f64);
            gauge!("chorus_room_inbox_requests").set(inbox_sum as f64);
            gauge!("chorus_room_inbox_requests_max").set(inbox_max as f64);
            gauge!("chorus_uptime_seconds").set(uptime_secs);
            counter!("chorus_store_commits_total").absolute(stats.store.commits.get());
            counter!("chorus_store_commit_failures_total")
                .absolute(stats.store.commit_failures.get());
            counter!("chorus_store_writes_total").absolute(stats.store.writes.get());
            gauge!("chorus_store_queue_writes").set(
                ctx.registry
                    .store()
                    .map_or(0, crate::store::StoreHandle::queue_depth) as f64,
            );
        });
        let mut out = self.handle.render();
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }

        let [members_h, handshake_h, fanout_h, store_h, rtt_h] = HISTOGRAMS;
        let sizes: Vec<usize> = summaries.iter().map(|r| r.members).collect();
        write_histogram(&mut out, members_h, &[(None, members_snapshot(&sizes))]);
        let per_transport =
            |pick: fn(&crate::stats::TransportStats) -> &crate::stats::Histogram| {
                TRANSPORTS
                    .iter()
                    .map(|t| (Some(("transport", *t)), pick(stats.transport(t)).snapshot()))
                    .collect::<Vec<_>>()
            };
        write_histogram(&mut out, handshake_h, &per_transport(|t| &t.handshake));
        write_histogram(
            &mut out,
            fanout_h,
            &[(None, stats.command_fanout.snapshot())],
        );
        write_histogram(
            &mut out,
            store_h,
            &[(None, stats.store.commit_duration.snapshot())],
        );
        write_histogram(&mut out, rtt_h, &per_transport(|t| &t.rtt));
        out
    }
}

fn describe_all() {
    describe_gauge!(
        "chorus_connections_open",
        "Connections open now (each runs one session), by transport"
    );
    describe_counter!(
        "chorus_connections_total",
        "Connections accepted (each runs one session), by transport"
    );
    describe_counter!(
        "chorus_sessions_opened_total",
        "Sessions that completed the handshake (the server's Hello sent), by transport"
    );
    describe_counter!(
        "chorus_sessions_closed_total",
        "Sessions ended (including connections that never completed the handshake), by reason: closed (by the client, or lost), timed_out, replaced (resumed on another connection), or the error code told to the client"
    );
    describe_gauge!("chorus_rooms", "Rooms held now");
    describe_gauge!("chorus_members", "Members connected over all rooms now");
    describe_counter!("chorus_rooms_created_total", "Rooms created");
    describe_counter!(
        "chorus_rooms_ended_total",
        "Rooms ended, by reason: expired (empty past the idle TTL) or closed (by a host)"
    );
    describe_counter!("chorus_ticks_in_total", "Ticks accepted from clients");
    describe_counter!(
        "chorus_ticks_out_total",
        "Tick copies handed to receivers' transports"
    );
    describe_counter!(
        "chorus_ticks_dropped_total",
        "Ticks dropped, by reason: slow_receiver (a tick copy replaced by a newer one before a slow WebSocket receiver took it), rate_limit (an incoming tick over the sender's budget), oversize (an incoming tick over the payload limit, or a copy larger than a receiver's connection carries), receiver_closed (a copy for a connection already gone)"
    );
    describe_counter!(
        "chorus_ticks_rejected_total",
        "Incoming tick datagrams refused (undecodable, oversize, not joined, forged sender, forbidden, rate limited)"
    );
    describe_counter!("chorus_reliable_in_total", "Control messages received");
    describe_counter!(
        "chorus_reliable_out_total",
        "Reliable events and replies rooms queued to sessions (one per recipient)"
    );
    describe_counter!(
        "chorus_state_updates_total",
        "State writes (SetState, DeleteState) rooms handled, by outcome: applied, or the error code (conflict: an if_version precondition failed)"
    );
    describe_counter!(
        "chorus_commands_total",
        "Commands rooms handled, by kind (the first 32 kinds seen; later ones are \"other\") and outcome: applied, duplicate (idempotency key seen before), or the error code"
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
        "chorus_errors_total",
        "Error messages sent to clients, by code"
    );
    describe_counter!(
        "chorus_rate_limited_total",
        "Messages and ticks refused by a session's rate budgets, by budget"
    );
    describe_counter!(
        "chorus_rate_limit_disconnects_total",
        "Sessions closed for repeated rate-limit violations"
    );
    describe_counter!(
        "chorus_slow_consumer_disconnects_total",
        "Sessions cut off for not reading reliable events fast enough"
    );
    describe_counter!(
        "chorus_resumes_total",
        "Hellos that asked to resume a session, by outcome: resumed (taken over) or failed (unknown token or window passed)"
    );
    describe_gauge!(
        "chorus_resumable_sessions",
        "Sessions that can be resumed now (running, or ended within their resume window)"
    );
    describe_counter!(
        "chorus_failovers_total",
        "What rooms did about a lost host, by kind: host_away (silent host, substitute promoted), host_left (no host left, substitute promoted), paused (silent host, timelines paused), reclaimed (the away host came back and hosts again)"
    );
    describe_gauge!(
        "chorus_outbox_frames",
        "Reliable frames queued in all sessions' outboxes now"
    );
    describe_gauge!(
        "chorus_outbox_frames_max",
        "Reliable frames queued in the fullest session outbox now"
    );
    describe_gauge!(
        "chorus_outbox_bytes",
        Unit::Bytes,
        "Bytes queued in all sessions' outboxes now"
    );
    describe_gauge!(
        "chorus_outbox_bytes_max",
        Unit::Bytes,
        "Bytes queued in the fullest session outbox now"
    );
    describe_gauge!(
        "chorus_room_inbox_requests",
        "Requests waiting in all rooms' inboxes now"
    );
    describe_gauge!(
        "chorus_room_inbox_requests_max",
        "Requests waiting in the fullest room inbox now"
    );
    describe_counter!(
        "chorus_store_commits_total",
        "Store transactions committed (each with fsync, holding every write queued meanwhile)"
    );
    describe_counter!(
        "chorus_store_commit_failures_total",
        "Store commits that failed; their writes are retried and the server is not ready meanwhile"
    );
    describe_counter!(
        "chorus_store_writes_total",
        "Writes committed to the store: a room's changes, a pack's content, a deletion"
    );
    describe_gauge!(
        "chorus_store_queue_writes",
        "Writes waiting for the store's writer now"
    );
    describe_gauge!(
        "chorus_uptime_seconds",
        Unit::Seconds,
        "Seconds since the server started"
    );
}

/// The `chorus_room_members` snapshot of rooms with `sizes` members.
fn members_snapshot(sizes: &[usize]) -> HistogramSnapshot {
    let mut buckets: Vec<(f64, u64)> = MEMBER_BOUNDS
        .iter()
        .map(|bound| {
            let at_most = sizes.iter().filter(|s| **s <= *bound).count();
            (*bound as f64, at_most as u64)
        })
        .collect();
    buckets.push((f64::INFINITY, sizes.len() as u64));
    HistogramSnapshot {
        buckets,
        sum: sizes.iter().sum::<usize>() as f64,
        count: sizes.len() as u64,
    }
}

/// Writes one histogram family: `(optional label, figures)` per series.
fn write_histogram(
    out: &mut String,
    (name, help): (&str, &str),
    series: &[(Option<(&str, &str)>, HistogramSnapshot)],
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (label, h) in series {
        let prefix = label.map_or_else(String::new, |(k, v)| format!("{k}=\"{v}\","));
        for (bound, n) in &h.buckets {
            let le = if bound.is_infinite() {
                "+Inf".to_owned()
            } else {
                bound.to_string()
            };
            let _ = writeln!(out, "{name}_bucket{{{prefix}le=\"{le}\"}} {n}");
        }
        let labels = label.map_or_else(String::new, |(k, v)| format!("{{{k}=\"{v}\"}}"));
        let _ = writeln!(out, "{name}_sum{labels} {}", h.sum);
        let _ = writeln!(out, "{name}_count{labels} {}", h.count);
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_sizes_become_a_cumulative_snapshot() {
        let h = members_snapshot(&[0, 1, 3, 3, 2000]);
        assert_eq!(h.count, 5);
        assert_eq!(h.sum, 2007.0);
        assert_eq!(h.buckets[0], (0.0, 1));
        assert_eq!(h.buckets[1], (1.0, 2));
        assert_eq!(h.buckets[3], (4.0, 4));
        assert_eq!(*h.buckets.last().expect("+Inf"), (f64::INFINITY, 5));
    }

    #[test]
    fn histograms_render_in_the_text_format() {
        let mut out = String::new();
        let h = HistogramSnapshot {
            buckets: vec![(0.001, 1), (f64::INFINITY, 2)],
            sum: 1.5,
            count: 2,
        };
        write_histogram(
            &mut out,
            ("chorus_x_seconds", "An example"),
            &[(Some(("transport", "websocket")), h)],
        );
        assert_eq!(
            out,
            "# HELP chorus_x_seconds An example\n\
             # TYPE chorus_x_seconds histogram\n\
             chorus_x_seconds_bucket{transport=\"websocket\",le=\"0.001\"} 1\n\
             chorus_x_seconds_bucket{transport=\"websocket\",le=\"+Inf\"} 2\n\
             chorus_x_seconds_sum{transport=\"websocket\"} 1.5\n\
             chorus_x_seconds_count{transport=\"websocket\"} 2\n\n"
        );
    }
}
