//! Timelines: playing, rate, tempo and a position anchored at a server time.
//! A change takes effect at a server time (now, or scheduled a little ahead
//! so every member applies it together); members compute the position from
//! their synced clock, so following playback needs no server ticks.

use super::{Recipient, Room};
use crate::core::SessionId;
use chorus_protocol::{
    Action, ErrorCode, ErrorDetail, ErrorFrame, MemberId, RequestId, Seq, ServerMessage,
    ServerTime, TimelineOp, TimelineState,
};

/// Normal speed, in parts per million.
pub(crate) const NORMAL_RATE_PPM: u32 = 1_000_000;

/// The position of `state` at server time `at`, in microseconds.
pub(crate) fn position_at(state: &TimelineState, at: ServerTime) -> u64 {
    if !state.playing || at <= state.anchor_time {
        return state.anchor_position_us;
    }
    let elapsed = u128::from(at.saturating_since(state.anchor_time));
    let advanced = elapsed * u128::from(state.rate_ppm) / u128::from(NORMAL_RATE_PPM);
    state
        .anchor_position_us
        .saturating_add(u64::try_from(advanced).unwrap_or(u64::MAX))
}

impl Room {
    #[allow(clippy::too_many_arguments)] // one per field of the request
    pub(super) fn timeline(
        &mut self,
        now: ServerTime,
        session: SessionId,
        request_id: RequestId,
        name: String,
        op: TimelineOp,
        at: Option<ServerTime>,
        expected_seq: Option<Seq>,
    ) {
        let Some((by, _)) = self.authorize(
            session,
            request_id,
            (Action::ControlTimeline, ""),
            Some("timelines"),
            || "control the timeline".to_owned(),
        ) else {
            return;
        };
        let current_seq = self.timelines.get(&name).map_or(Seq(0), |t| t.seq);
        if let Some(expected) = expected_seq
            && expected != current_seq
        {
            return self.error(
                session,
                ErrorFrame::new(
                    Some(request_id),
                    ErrorCode::Conflict,
                    format!(
                        "timeline {name:?} last changed at seq {}, not {}",
                        current_seq.0, expected.0
                    ),
                )
                .with_detail(ErrorDetail::Sequence { current_seq }),
            );
        }
        if !self.timelines.contains_key(&name) && self.timelines.len() >= self.config.max_timelines
        {
            return self.error(
                session,
                ErrorFrame::new(
                    Some(request_id),
                    ErrorCode::LimitExceeded,
                    "the room has its maximum number of timelines",
                )
                .with_detail(ErrorDetail::Limit {
                    limit: self.config.max_timelines as u64,
                    actual: self.timelines.len() as u64 + 1,
                }),
            );
        }
        if let TimelineOp::SetRate { rate_ppm: 0 } = op {
            return self.error(
                session,
                ErrorFrame::new(
                    Some(request_id),
                    ErrorCode::ProtocolViolation,
                    "a rate of 0 is not a rate; pause instead",
                ),
            );
        }
        // A time in the past means now; too far ahead is refused, so a
        // schedule cannot freeze a room.
        let at = at.map_or(now, |t| t.max(now));
        let ahead = at.saturating_since(now);
        if ahead > self.config.max_schedule_ahead_us {
            return self.error(
                session,
                ErrorFrame::new(
                    Some(request_id),
                    ErrorCode::LimitExceeded,
                    format!(
                        "a change may be scheduled at most {} ms ahead",
                        self.config.max_schedule_ahead_us / 1000
                    ),
                )
                .with_detail(ErrorDetail::Limit {
                    limit: self.config.max_schedule_ahead_us / 1000,
                    actual: ahead / 1000,
                }),
            );
        }
        let seq = self.apply_timeline(now, &name, &op, at, by);
        self.ack(session, request_id, seq);
    }

    /// Applies `op` to timeline `name` effective at `at`, tells everyone, and
    /// returns the event's sequence number.
    pub(super) fn apply_timeline(
        &mut self,
        now: ServerTime,
        name: &str,
        op: &TimelineOp,
        at: ServerTime,
        by: MemberId,
    ) -> Seq {
        let mut state = self
            .timelines
            .get(name)
            .cloned()
            .unwrap_or_else(|| TimelineState {
                name: name.to_owned(),
                playing: false,
                rate_ppm: NORMAL_RATE_PPM,
                anchor_time: now,
                anchor_position_us: 0,
                tempo_mbpm: None,
                seq: Seq(0),
            });
        let position = position_at(&state, at);
        match *op {
            TimelineOp::Play => state.playing = true,
            TimelineOp::Pause => state.playing = false,
            TimelineOp::Seek { .. } | TimelineOp::SetTempo { .. } => {}
            TimelineOp::SetRate { rate_ppm } => state.rate_ppm = rate_ppm,
        }
        state.anchor_time = at;
        state.anchor_position_us = match *op {
            TimelineOp::Seek { position_us } => position_us,
            _ => position,
        };
        if let TimelineOp::SetTempo { tempo_mbpm } = *op {
            state.tempo_mbpm = tempo_mbpm;
        }
        let seq = self.next_seq();
        state.seq = seq;
        self.timelines.insert(name.to_owned(), state.clone());
        self.event(
            Recipient::Everyone,
            seq,
            ServerMessage::TimelineChanged {
                room: self.slot,
                seq,
                timeline: state,
                by,
            },
        );
        seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_follows_rate_and_stops_when_paused() {
        let mut state = TimelineState {
            name: "main".into(),
            playing: true,
            rate_ppm: 2 * NORMAL_RATE_PPM,
            anchor_time: ServerTime(1_000_000),
            anchor_position_us: 500,
            tempo_mbpm: None,
            seq: Seq(1),
        };
        assert_eq!(position_at(&state, ServerTime(1_000_000)), 500);
        assert_eq!(position_at(&state, ServerTime(1_000_100)), 700);
        assert_eq!(
            position_at(&state, ServerTime(999_000)),
            500,
            "before the anchor"
        );
        state.playing = false;
        assert_eq!(position_at(&state, ServerTime(9_000_000)), 500);
        state.playing = true;
        state.rate_ppm = u32::MAX;
        assert_eq!(
            position_at(&state, ServerTime(u64::MAX)),
            u64::MAX,
            "saturates instead of overflowing"
        );
    }
}
