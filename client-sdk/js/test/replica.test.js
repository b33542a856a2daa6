// The room replica (PROTOCOL.md §6) as a pure state machine.

import test from 'node:test';
import assert from 'node:assert/strict';
import { RoomReplica, decodeServerMessage } from '../chorus.js';
import { hexToBytes, loadVectors } from './support/vectors.js';

const SLOT = 7;
const enc = new TextEncoder();

const info = (id, name, role, presence = 'Online') => ({ id, role, display: { name, meta: new Uint8Array() }, presence });

function replica(overrides = {}) {
  return new RoomReplica({
    room_id: 'lobby',
    room: SLOT,
    you: 2,
    role: 'Editor',
    members: [info(1, 'ada', 'Host'), info(2, 'bob', 'Editor')],
    state: [{ key: 'title', value: enc.encode('hello'), version: 3n, author: 1 }],
    state_version: 4n,
    last_seq: 10n,
    policy: { rules: [] },
    ...overrides,
  });
}

const set = (seq, key, value, version) => ({
  StateChanged: { room: SLOT, seq: BigInt(seq), key, value: value === null ? null : enc.encode(value), version: BigInt(version), author: 1 },
});

test('the snapshot is the starting point, in API form', () => {
  const r = replica();
  assert.equal(r.roomId, 'lobby');
  assert.equal(r.slot, SLOT);
  assert.equal(r.me, 2);
  assert.equal(r.role, 'editor');
  assert.deepEqual([...r.members.values()].map((m) => [m.id, m.role, m.name]), [
    [1, 'host', 'ada'],
    [2, 'editor', 'bob'],
  ]);
  const title = r.state.get('title');
  assert.deepEqual({ ...title, value: Array.from(title.value) }, { value: Array.from(enc.encode('hello')), text: 'hello', version: 3, author: 1 });
  assert.equal(r.stateVersion, 4);
  assert.equal(r.lastSeq, 10);
});

test('the joined golden vector becomes a replica', () => {
  const joined = loadVectors().find((v) => v.name === 'joined');
  const r = new RoomReplica(decodeServerMessage(hexToBytes(joined.hex)).Joined.snapshot);
  assert.equal(r.roomId, 'lobby');
  assert.equal(r.me, 2);
  assert.equal(r.role, 'editor');
  assert.equal(r.member(1).name, 'Ada');
  assert.equal(new TextDecoder().decode(r.member(1).meta), '{"color":"#e33"}');
  assert.equal(r.state.get('title').text, 'Hello');
  assert.equal(r.lastSeq, 5);
  assert.deepEqual(r.policy, { rules: [] });
  assert.equal(r.can('set_state', 'title'), true, 'an editor under the defaults');
  assert.equal(r.can('kick'), false);
});

test('members join and leave in order', () => {
  const r = replica();
  const out = r.apply({ MemberJoined: { room: SLOT, seq: 11n, member: info(3, 'carol', 'Viewer') } });
  assert.equal(out.name, 'memberJoined');
  assert.deepEqual(out.event, { id: 3, role: 'viewer', name: 'carol', meta: new Uint8Array(), presence: 'online' });
  assert.equal(out.removed, false);
  assert.deepEqual([...r.members.keys()], [1, 2, 3]);
  const left = r.apply({ MemberLeft: { room: SLOT, seq: 12n, member: 1, reason: 'Disconnected' } });
  assert.equal(left.name, 'memberLeft');
  assert.equal(left.event.member.name, 'ada');
  assert.equal(left.event.reason, 'disconnected');
  assert.equal(left.event.seq, 12);
  assert.deepEqual([...r.members.keys()], [2, 3]);
  // An unknown member leaving still yields an event, with a bare member.
  const unknown = r.apply({ MemberLeft: { room: SLOT, seq: 13n, member: 9, reason: 'TimedOut' } });
  assert.equal(unknown.event.member.id, 9);
  assert.equal(unknown.event.member.role, null);
  assert.equal(unknown.event.reason, 'timed_out');
  assert.equal(r.lastSeq, 13);
  assert.equal(r.gaps, 0);
  for (const [reason, name] of [['Left', 'left'], ['TooSlow', 'too_slow']]) {
    assert.equal(r.apply({ MemberLeft: { room: SLOT, seq: BigInt(r.lastSeq + 1), member: 3, reason } }).event.reason, name);
  }
});

test('a rejoin with the same id replaces the member in place', () => {
  const r = replica();
  r.apply({ MemberJoined: { room: SLOT, seq: 11n, member: info(1, 'ada lovelace', 'Host') } });
  assert.deepEqual([...r.members.values()].map((m) => m.name), ['ada lovelace', 'bob']);
});

test('state sets, deletes and versions', () => {
  const r = replica();
  const out = r.apply(set(11, 'title', 'world', 5));
  assert.equal(out.name, 'stateChanged');
  assert.deepEqual({ ...out.event, value: null }, { key: 'title', value: null, text: 'world', version: 5, author: 1, seq: 11 });
  assert.equal(r.state.get('title').text, 'world');
  assert.equal(r.stateVersion, 5);
  const del = r.apply(set(12, 'title', null, 6));
  assert.equal(del.event.value, null);
  assert.equal(del.event.text, null);
  assert.equal(r.state.has('title'), false);
  assert.equal(r.stateVersion, 6);
  // Non-UTF-8 values keep their bytes; text gets replacement characters.
  r.apply({ StateChanged: { room: SLOT, seq: 13n, key: 'bin', value: Uint8Array.of(0xff, 0x41), version: 7n, author: 2 } });
  assert.equal(r.state.get('bin').text, '\uFFFDA');
  assert.deepEqual(Array.from(r.state.get('bin').value), [0xff, 0x41]);
});

test('commands become events', () => {
  const r = replica();
  const out = r.apply({
    CommandEvent: { room: SLOT, seq: 11n, author: 2, kind: 'chat', payload: enc.encode('hi'), idempotency_key: 'k1' },
  });
  assert.equal(out.name, 'command');
  assert.deepEqual({ ...out.event, payload: Array.from(out.event.payload) }, {
    seq: 11,
    author: 2,
    kind: 'chat',
    payload: [104, 105],
    text: 'hi',
    idempotencyKey: 'k1',
  });
  assert.equal(r.lastSeq, 11);
});

test('stale events are ignored and gaps counted', () => {
  const r = replica();
  assert.deepEqual(r.apply(set(10, 'title', 'old', 9)), { stale: true, seq: 10, last: 10 });
  assert.equal(r.state.get('title').version, 3);
  assert.equal(r.apply(set(15, 'k', 'v', 9)).name, 'stateChanged');
  assert.equal(r.gaps, 1);
  assert.equal(r.lastSeq, 15);
  assert.equal(r.apply(set(14, 'k', 'w', 10)).stale, true);
  assert.equal(r.state.get('k').text, 'v');
});

test('other rooms and replies are not room events', () => {
  const r = replica();
  const other = { CommandEvent: { room: 8, seq: 11n, author: 2, kind: 'chat', payload: new Uint8Array(), idempotency_key: null } };
  assert.equal(RoomReplica.eventRoom(other), 8);
  assert.equal(r.apply(other), null);
  const ack = { CommandAck: { request_id: 1, room: SLOT, seq: 11n, duplicate: false } };
  assert.equal(RoomReplica.eventRoom(ack), null);
  assert.equal(r.apply(ack), null);
  assert.equal(r.lastSeq, 10);
});

test('being removed is reported', () => {
  const r = replica();
  const out = r.apply({ MemberLeft: { room: SLOT, seq: 11n, member: 2, reason: 'TooSlow' } });
  assert.equal(out.removed, true);
  assert.equal(out.event.member.id, 2);
  assert.equal(r.role, 'editor', 'the snapshot role remains');
});

test('the snapshot policy in API form, and can() for the current role', () => {
  const r = replica({
    policy: {
      rules: [
        { action: 'SetState', scope: 'cursor/', roles: ['Host', 'Editor', 'Viewer'] },
        { action: 'Kick', scope: '', roles: ['Host', 'Editor'] },
      ],
    },
  });
  assert.deepEqual(JSON.parse(JSON.stringify(r.policy)), {
    rules: [
      { action: 'set_state', scope: 'cursor/', roles: ['host', 'editor', 'viewer'] },
      { action: 'kick', scope: '', roles: ['host', 'editor'] },
    ],
  });
  assert.ok(Object.isFrozen(r.policy) && Object.isFrozen(r.policy.rules[0].roles));
  assert.equal(r.can('kick'), true, 'editors may kick in this room');
  assert.equal(r.can('grant_roles'), false);
  // A snapshot without a policy (an older test fixture) means the defaults.
  const bare = replica({ policy: undefined });
  assert.deepEqual(bare.policy, { rules: [] });
});

test("roleChanged updates the member in place, and this client's role and permissions", () => {
  const r = replica();
  const other = r.apply({ RoleChanged: { room: SLOT, seq: 11n, member: 1, role: 'Viewer', by: 2 } });
  assert.equal(other.name, 'roleChanged');
  assert.equal(other.removed, false);
  assert.deepEqual({ ...other.event, member: { ...other.event.member } }, {
    member: { id: 1, role: 'viewer', name: 'ada', meta: new Uint8Array(), presence: 'online' },
    role: 'viewer',
    previousRole: 'host',
    by: 2,
    seq: 11,
  });
  assert.deepEqual([...r.members.values()].map((m) => [m.id, m.role]), [
    [1, 'viewer'],
    [2, 'editor'],
  ]);
  assert.equal(r.can('set_state', 'k'), true);
  const self = r.apply({ RoleChanged: { room: SLOT, seq: 12n, member: 2, role: 'Viewer', by: 1 } });
  assert.equal(self.event.previousRole, 'editor');
  assert.equal(r.role, 'viewer');
  assert.equal(r.can('set_state', 'k'), false, 'demoted: no more writes');
  assert.equal(r.can('send_ticks'), true);
  r.apply({ RoleChanged: { room: SLOT, seq: 13n, member: 2, role: 'Host', by: 1 } });
  assert.equal(r.can('kick'), true);
  // A member this client never saw: an event with a bare member, nothing added.
  const unknown = r.apply({ RoleChanged: { room: SLOT, seq: 14n, member: 9, role: 'Editor', by: 1 } });
  assert.deepEqual([unknown.event.member.id, unknown.event.member.role, unknown.event.previousRole], [9, 'editor', null]);
  assert.equal(r.members.has(9), false);
  assert.equal(r.lastSeq, 14);
  assert.equal(r.gaps, 0);
});

test('memberKicked removes the member; kicking this client removes it from the room', () => {
  const r = replica();
  r.apply({ MemberJoined: { room: SLOT, seq: 11n, member: info(3, 'carol', 'Viewer') } });
  const out = r.apply({ MemberKicked: { room: SLOT, seq: 12n, member: 3, by: 1, reason: 'spam', ban_ms: 300000n } });
  assert.equal(out.name, 'memberKicked');
  assert.equal(out.removed, false);
  assert.equal(out.event.member.name, 'carol');
  assert.deepEqual({ ...out.event, member: out.event.member.id }, { member: 3, by: 1, reason: 'spam', banMs: 300000, seq: 12 });
  assert.deepEqual([...r.members.keys()], [1, 2]);
  const self = r.apply({ MemberKicked: { room: SLOT, seq: 13n, member: 2, by: 1, reason: '', ban_ms: 0n } });
  assert.equal(self.removed, true);
  assert.equal(self.event.member.name, 'bob');
  assert.equal(self.event.banMs, 0);
  assert.deepEqual([...r.members.keys()], [1]);
  assert.equal(r.role, 'editor', 'the last known role remains');
  const unknown = replica().apply({ MemberKicked: { room: SLOT, seq: 11n, member: 9, by: 1, reason: 'x', ban_ms: 1n } });
  assert.deepEqual([unknown.event.member.id, unknown.event.member.role], [9, null]);
});

test('roomClosed removes everyone and keeps the state readable', () => {
  const r = replica();
  const out = r.apply({ RoomClosed: { room: SLOT, seq: 11n, by: 1, reason: 'done' } });
  assert.deepEqual(out, { name: 'closed', event: { by: 1, reason: 'done', seq: 11 }, removed: true });
  assert.equal(r.members.size, 0);
  assert.equal(r.state.get('title').text, 'hello');
  assert.equal(r.lastSeq, 11);
  assert.equal(r.role, 'editor');
});

test('the access-control events count in the sequence like every other event', () => {
  const r = replica();
  assert.deepEqual(r.apply({ RoleChanged: { room: SLOT, seq: 10n, member: 1, role: 'Viewer', by: 2 } }), { stale: true, seq: 10, last: 10 });
  assert.equal(r.member(1).role, 'host', 'a stale role change is not applied');
  assert.equal(r.apply({ MemberKicked: { room: SLOT, seq: 12n, member: 1, by: 2, reason: '', ban_ms: 5n } }).name, 'memberKicked');
  assert.equal(r.gaps, 1, 'seq 11 was skipped');
  assert.equal(r.apply({ RoomClosed: { room: SLOT, seq: 12n, by: 2, reason: '' } }).stale, true);
  assert.equal(r.apply({ RoleChanged: { room: SLOT, seq: 13n, member: 2, role: 'Host', by: 2 } }).name, 'roleChanged');
  assert.equal(r.gaps, 1);
  assert.equal(r.lastSeq, 13);
  for (const message of [
    { RoleChanged: { room: 8, seq: 14n, member: 2, role: 'Host', by: 2 } },
    { MemberKicked: { room: 8, seq: 14n, member: 2, by: 1, reason: '', ban_ms: 0n } },
    { RoomClosed: { room: 8, seq: 14n, by: 1, reason: '' } },
  ]) {
    assert.equal(RoomReplica.eventRoom(message), 8);
    assert.equal(r.apply(message), null, 'another room');
  }
  const ack = { Ack: { request_id: 1, room: SLOT, seq: 99n } };
  assert.equal(RoomReplica.eventRoom(ack), null, 'an Ack is a reply, not an event');
  assert.equal(r.apply(ack), null);
  assert.equal(r.lastSeq, 13);
});
