// The sync semantics as pure pieces: the replica's presence, timelines,
// packs, chat and room kind (PROTOCOL.md §15, §16, §20-§22), the timeline
// position formula and schedule (§16.2, §16.4), and the reconnect backoff
// schedule (§14.5).

import test from 'node:test';
import assert from 'node:assert/strict';
import {
  NORMAL_RATE_PPM,
  RoomReplica,
  TimelineSchedule,
  bytesToHex,
  decodeServerMessage,
  nextReconnectDelay,
  publicTimeline,
  reconnectCeiling,
  timelinePosition,
} from '../chorus.js';
import { hexToBytes, loadVectors } from './support/vectors.js';

const SLOT = 7;
const enc = new TextEncoder();
const vectors = loadVectors();
const vector = (name) => decodeServerMessage(hexToBytes(vectors.find((v) => v.name === name).hex));

const info = (id, name, role, presence = 'Online') => ({ id, role, display: { name, meta: new Uint8Array() }, presence });
const wireTimeline = (fields) => ({
  name: 'main',
  playing: false,
  rate_ppm: NORMAL_RATE_PPM,
  anchor_time: 0n,
  anchor_position_us: 0n,
  tempo_mbpm: null,
  seq: 0n,
  ...fields,
});

function replica(overrides = {}, now = () => 1_000_000) {
  return new RoomReplica(
    {
      room_id: 'party',
      room: SLOT,
      you: 2,
      role: 'Editor',
      members: [info(1, 'ada', 'Host'), info(2, 'bob', 'Editor', 'Reconnecting')],
      state: [],
      state_version: 0n,
      last_seq: 10n,
      policy: { rules: [] },
      kind: 'Normal',
      failover: 'PauseTimeline',
      timelines: [],
      packs: [],
      chat: [],
      ...overrides,
    },
    { serverTime: now },
  );
}

test('the snapshot vectors: presence, kind, failover, timelines, packs and chat in API form', () => {
  const joined = new RoomReplica(vector('joined').Joined.snapshot);
  assert.ok([...joined.members.values()].every((m) => ['online', 'reconnecting', 'away'].includes(m.presence)));
  assert.equal(joined.kind, 'normal');
  const relay = new RoomReplica(vector('snapshot').Snapshot.snapshot);
  assert.equal(relay.kind, 'relay');
  assert.equal(relay.timelines.size, 0);
  assert.equal(relay.packs.size, 0);
  assert.deepEqual(relay.chat, []);
  const r = replica({
    timelines: [wireTimeline({ playing: true, anchor_time: 500_000n, anchor_position_us: 3_000_000n, tempo_mbpm: 120_000, seq: 9n })],
    packs: [{ hash: new Uint8Array(32).fill(0xab), name: 'cat.png', media_type: 'image/png', size: 1234n, uploader: 1 }],
    chat: [{ seq: 4n, author: 1, time: 1_790_000_000_000_000n, payload: enc.encode('hi') }],
  });
  assert.equal(r.failover, 'pause_timeline');
  assert.equal(r.member(2).presence, 'reconnecting');
  assert.deepEqual(r.timelineAt('main', 1_000_000), {
    name: 'main',
    playing: true,
    ratePpm: 1_000_000,
    rate: 1,
    anchorTime: 500_000,
    anchorPositionUs: 3_000_000,
    tempoMbpm: 120_000,
    bpm: 120,
    seq: 9,
  });
  assert.deepEqual([...r.packs.values()], [{ hash: 'ab'.repeat(32), name: 'cat.png', mediaType: 'image/png', size: 1234, uploader: 1 }]);
  assert.deepEqual(r.chat, [{ seq: 4, author: 1, time: 1_790_000_000_000_000, payload: enc.encode('hi'), text: 'hi' }]);
});

test('presenceChanged updates the member in place', () => {
  const r = replica();
  const out = r.apply({ PresenceChanged: { room: SLOT, seq: 11n, member: 1, presence: 'Away' } });
  assert.equal(out.name, 'presenceChanged');
  assert.deepEqual({ ...out.event, member: out.event.member.id }, { member: 1, presence: 'away', previousPresence: 'online', seq: 11 });
  assert.equal(r.member(1).presence, 'away');
  assert.deepEqual([...r.members.keys()], [1, 2], 'join order kept');
  r.apply({ PresenceChanged: { room: SLOT, seq: 12n, member: 2, presence: 'Online' } });
  assert.equal(r.member(2).presence, 'online');
  // A member joining is online.
  r.apply({ MemberJoined: { room: SLOT, seq: 13n, member: info(3, 'cy', 'Viewer') } });
  assert.equal(r.member(3).presence, 'online');
});

test('the timeline_changed vector: the position formula of §16.2', () => {
  const m = vector('timeline_changed').TimelineChanged;
  const state = publicTimeline(m.timeline);
  assert.equal(state.anchorTime, 1_790_000_000_000_000);
  assert.equal(state.anchorPositionUs, 90_000_000);
  assert.equal(timelinePosition(state, 1_790_000_002_500_000), 92_500_000);
  assert.equal(timelinePosition({ ...state, ratePpm: 1_500_000 }, 1_790_000_002_500_000), 93_750_000);
  assert.equal(timelinePosition(state, 1_789_999_000_000_000), 90_000_000, 'before the anchor');
  assert.equal(timelinePosition({ ...state, playing: false }, 1_790_000_009_000_000), 90_000_000, 'paused');
  // Integer arithmetic, rounding down, even where floating point would not be exact.
  assert.equal(timelinePosition({ ...state, ratePpm: 333_333 }, state.anchorTime + 10), 90_000_003);
  assert.equal(timelinePosition({ ...state, ratePpm: 999_999 }, state.anchorTime + 86_400_000_000), 90_000_000 + 86_399_913_600);
  assert.equal(timelinePosition(state, 1_790_000_002_500_000n), 92_500_000, 'bigint times');
});

test('scheduled changes: the previous state until the anchor time, a newer change replaces a pending one (§16.4)', () => {
  const s = (fields) => publicTimeline(wireTimeline(fields));
  const playing = s({ playing: true, anchor_time: 1_000_000n, seq: 4n });
  const schedule = new TimelineSchedule(playing);
  // A pause scheduled for t = 3 s arrives at t = 2 s.
  schedule.push(s({ playing: false, anchor_time: 3_000_000n, anchor_position_us: 2_000_000n, seq: 5n }), 2_000_000);
  assert.equal(schedule.at(2_500_000).playing, true, 'still playing');
  assert.equal(schedule.positionAt(2_500_000), 1_500_000);
  assert.equal(schedule.at(3_000_000).playing, false, 'paused from its anchor');
  assert.equal(schedule.positionAt(9_000_000), 2_000_000);
  assert.equal(schedule.latest.seq, 5);
  // A newer change replaces the pending one outright, even one anchored later.
  schedule.push(s({ playing: true, anchor_time: 4_000_000n, anchor_position_us: 10_000_000n, seq: 6n }), 2_600_000);
  assert.equal(schedule.at(3_500_000).playing, true, 'the replaced pause never applies');
  assert.equal(schedule.positionAt(3_500_000), 2_500_000, 'the current state still runs');
  assert.equal(schedule.positionAt(5_000_000), 11_000_000);
  // A change arriving after a pending one's anchor settles it first, then applies.
  schedule.push(s({ playing: false, anchor_time: 5_000_000n, anchor_position_us: 11_000_000n, seq: 7n }), 5_000_000);
  assert.equal(schedule.pending, null);
  assert.equal(schedule.current.seq, 7);
  // A timeline never changed is paused at 0, seq 0.
  const fresh = TimelineSchedule.initial('intro');
  assert.deepEqual([fresh.current.playing, fresh.current.seq, fresh.positionAt(123), fresh.current.rate], [false, 0, 0, 1]);
});

test('timelineChanged in the replica: scheduled with the server time at arrival; first seen through a scheduled change', () => {
  let now = 2_000_000;
  const r = replica({ timelines: [wireTimeline({ playing: true, anchor_time: 1_000_000n, seq: 4n })] }, () => now);
  const out = r.apply({
    TimelineChanged: { room: SLOT, seq: 11n, timeline: wireTimeline({ anchor_time: 3_000_000n, anchor_position_us: 2_000_000n, seq: 11n }), by: 1 },
  });
  assert.equal(out.name, 'timelineChanged');
  assert.deepEqual([out.event.name, out.event.by, out.event.seq, out.event.scheduled, out.event.timeline.playing], ['main', 1, 11, true, false]);
  assert.equal(r.timelineAt('main', 2_900_000).playing, true);
  assert.equal(r.timelineAt('main', 3_000_000).playing, false);
  assert.equal(r.timelineAt('main').playing, true, 'the default time is the replica clock: now = 2 s');
  now = 3_500_000;
  assert.equal(r.timelineAt('main').playing, false);
  // Failover pauses by the server (by 0), at once.
  const fail = r.apply({ TimelineChanged: { room: SLOT, seq: 12n, timeline: wireTimeline({ name: 'other', anchor_time: 3_000_000n, seq: 12n }), by: 0 } });
  assert.equal(fail.event.scheduled, false);
  // A timeline first seen through a scheduled Play waits on the initial state.
  r.apply({ TimelineChanged: { room: SLOT, seq: 13n, timeline: wireTimeline({ name: 'new', playing: true, anchor_time: 9_000_000n, anchor_position_us: 5n, seq: 13n }), by: 1 } });
  assert.deepEqual([r.timelineAt('new').playing, r.timelineAt('new').seq], [false, 0]);
  assert.equal(r.timelines.get('new').latest.seq, 13);
  assert.equal(r.timelineAt('missing'), undefined);
});

test('packAvailable adds a pack; chat commands join the history, bounded', () => {
  const r = replica({}, () => 42);
  const out = r.apply({ PackAvailable: { room: SLOT, seq: 11n, pack: { hash: Uint8Array.from({ length: 32 }, (_, i) => i), name: 'a.webm', media_type: 'video/webm', size: 9n, uploader: 2 } } });
  assert.equal(out.name, 'packAvailable');
  assert.equal(out.event.pack.hash, bytesToHex(Uint8Array.from({ length: 32 }, (_, i) => i)));
  assert.deepEqual([out.event.pack.mediaType, out.event.pack.size, out.event.seq], ['video/webm', 9, 11]);
  assert.equal(r.packs.size, 1);
  for (let i = 0; i < 60; i++) {
    const kind = i % 2 ? 'chat' : 'move';
    r.apply({ CommandEvent: { room: SLOT, seq: BigInt(12 + i), author: 1, kind, payload: enc.encode(`m${i}`), idempotency_key: null } });
  }
  assert.equal(r.chat.length, 30, 'only chat commands');
  for (let i = 60; i < 100; i++) r.apply({ CommandEvent: { room: SLOT, seq: BigInt(12 + i), author: 1, kind: 'chat', payload: enc.encode(`m${i}`), idempotency_key: null } });
  assert.equal(r.chat.length, 50, 'the server keeps 50 by default; so does the replica');
  assert.deepEqual([r.chat.at(-1).text, r.chat.at(-1).seq, r.chat.at(-1).time], ['m99', 111, 42]);
});

test('reconnect backoff: 250 ms doubling to 10 s, full jitter, cut to the resume window', () => {
  assert.deepEqual([1, 2, 3, 4, 5, 6, 7, 8].map((n) => reconnectCeiling(n)), [250, 500, 1000, 2000, 4000, 8000, 10000, 10000]);
  assert.equal(reconnectCeiling(0), 250);
  assert.equal(reconnectCeiling(1e9), 10000, 'no overflow');
  assert.equal(reconnectCeiling(3, { initialDelayMs: 100, maxDelayMs: 300 }), 300);
  // Full jitter: anywhere in [0, ceiling].
  assert.equal(nextReconnectDelay({ attempt: 1, random: 0 }), 0);
  assert.equal(nextReconnectDelay({ attempt: 1, random: 0.9999999 }), 250);
  assert.equal(nextReconnectDelay({ attempt: 3, random: 0.5 }), 500);
  // A wait the server asked for counts; the window bounds everything.
  assert.equal(nextReconnectDelay({ attempt: 1, random: 0, atLeastMs: 5000 }), 5000);
  assert.equal(nextReconnectDelay({ attempt: 9, random: 0.99, elapsedMs: 58_000, windowMs: 60_000 }), 2000);
  assert.equal(nextReconnectDelay({ attempt: 9, random: 0.5, elapsedMs: 60_000, windowMs: 60_000 }), null);
  // A whole schedule at the largest random value ends exactly at the window's end.
  let elapsedMs = 0;
  const delays = [];
  for (let attempt = 1; ; attempt++) {
    const d = nextReconnectDelay({ attempt, elapsedMs, windowMs: 60_000, random: 0.99999999 });
    if (d === null) break;
    delays.push(d);
    elapsedMs += d;
  }
  assert.deepEqual(delays.slice(0, 6), [250, 500, 1000, 2000, 4000, 8000]);
  assert.ok(delays.slice(6, -1).every((d) => d === 10000));
  assert.equal(elapsedMs, 60_000);
  // A deterministic pseudo-random sequence stays within each ceiling.
  let x = 0x2545f491;
  for (let attempt = 1; attempt <= 12; attempt++) {
    for (let i = 0; i < 100; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      const d = nextReconnectDelay({ attempt, random: (x >>> 0) / 2 ** 32 });
      assert.ok(d >= 0 && d <= reconnectCeiling(attempt));
    }
  }
});
