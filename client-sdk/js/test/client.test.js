// The client against a scripted fake server over fake WebSocket and
// WebTransport classes: handshake, requests and replies, replica and event
// order, errors, closes, ticks, chunking, fallback, certificate hashes.

import test from 'node:test';
import assert from 'node:assert/strict';
import {
  ChorusError,
  ErrorCode,
  connect,
  decodeDatagram,
  encodeDatagram,
  encodeServerMessage,
} from '../chorus.js';
import { FakeServer, until } from './support/fake.js';

const enc = new TextEncoder();
const fast = { clockSync: { pings: 2, intervalMs: 0, spacingMs: 0 }, requestTimeoutMs: 2000 };

async function connected(serverOptions = {}, clientOptions = {}) {
  const server = new FakeServer(serverOptions);
  const client = await connect('ws://127.0.0.1:1/chorus', { WebSocket: server.WebSocket, ...fast, ...clientOptions });
  return { server, client };
}

/** Answers the next Join with this snapshot. */
function answerJoin(server, snapshot = {}) {
  server.handlers.Join = (m) => server.send({ Joined: { request_id: m.request_id, snapshot: FakeServer.snapshot(snapshot) } });
}

async function joined(serverOptions, clientOptions, snapshot) {
  const { server, client } = await connected(serverOptions, clientOptions);
  answerJoin(server, snapshot);
  const room = await client.join('lobby', { name: 'bob' });
  return { server, client, room };
}

async function rejection(promise) {
  try {
    await promise;
  } catch (e) {
    assert.ok(e instanceof ChorusError, `expected a ChorusError, got ${e?.constructor?.name}: ${e?.message}`);
    return e;
  }
  assert.fail('expected a rejection');
}

test('connect: hello, subprotocol, binary type, session, limits, clock sync', async () => {
  const { server, client } = await connected({ offsetUs: 5_000_000 }, { clockSync: { pings: 4, intervalMs: 0, spacingMs: 0 } });
  const ws = server.connections[0];
  assert.deepEqual(ws.protocols, ['chorus.v1']);
  assert.equal(ws.binaryType, 'arraybuffer');
  const hello = server.got('Hello')[0];
  assert.deepEqual(hello, { version: { major: 2, minor: 0 }, client_name: 'chorus-js/0.1', capabilities: 0n, options: [] });
  assert.equal(client.transport, 'websocket');
  assert.equal(client.sessionId, 81985529216486895n);
  assert.equal(client.limits.maxTickPayloadBytes, 1000);
  assert.equal(client.limits.maxFrameBytes, 4194304);
  assert.equal(client.limits.maxJoinOptions, 16);
  assert.equal(client.maxTickPayload, 1000);
  assert.equal(server.got('Ping').length, 4);
  assert.equal(client.clock.samples, 4);
  assert.ok(Math.abs(client.clock.offsetUs - 5_000_000) < 50_000, `offset ${client.clock.offsetUs}`);
  assert.ok(Math.abs(client.serverTime() - (Date.now() * 1000 + 5_000_000)) < 100_000);
  assert.ok(Math.abs(client.serverTimeAt(performance.now()) - client.serverTime()) < 10_000);
  await client.close();
});

test('every message travels as a 0x00 lane message', async () => {
  const { server, client } = await connected();
  assert.ok(server.wsMessages.length >= 3);
  for (const m of server.wsMessages) assert.equal(m[0], 0x00);
  await client.close();
});

test('join: the room reflects the snapshot and the options go on the wire', async () => {
  const { server, client } = await connected();
  answerJoin(server, { state: [{ key: 'title', value: enc.encode('Hi'), version: 3n, author: 1 }], state_version: 3n, last_seq: 5n });
  const room = await client.join('lobby', { name: 'bob', meta: 'blue', maxMembers: 8 });
  assert.deepEqual(server.got('Join')[0], {
    request_id: 1,
    room_id: 'lobby',
    display: { name: 'bob', meta: enc.encode('blue') },
    options: ['CreateIfMissing', { MaxMembers: 8 }],
  });
  assert.equal(room.id, 'lobby');
  assert.equal(room.slot, 1);
  assert.equal(room.me, 2);
  assert.equal(room.role, 'editor');
  assert.equal(room.lastSeq, 5);
  assert.equal(room.stateVersion, 3);
  assert.equal(room.joined, true);
  assert.deepEqual(room.members.map((m) => [m.id, m.role, m.name]), [
    [1, 'host', 'ada'],
    [2, 'editor', 'bob'],
  ]);
  assert.equal(room.getState('title').text, 'Hi');
  assert.equal(room.getState('title').version, 3);
  assert.deepEqual([...room.stateEntries().keys()], ['title']);
  assert.equal(room.getState('nope'), undefined);
  answerJoin(server, { room_id: 'other', room: 2 });
  await client.join('other', { createIfMissing: false });
  assert.deepEqual(server.got('Join')[1].options, []);
  await client.close();
});

test('the replica is updated before events fire and before the ack resolves', async () => {
  const { server, client, room } = await joined();
  const seen = [];
  room.on('memberJoined', (m) => seen.push(['joined', m.name, room.members.length, room.lastSeq]));
  room.on('stateChanged', (e) => seen.push(['state', e.key, e.text, room.getState(e.key)?.text, room.lastSeq]));
  room.on('command', (c) => seen.push(['command', c.kind, c.text, c.idempotencyKey, room.lastSeq]));
  room.on('memberLeft', ({ member, reason }) => seen.push(['left', member.name, reason, room.members.length]));
  server.handlers.SetState = (m) => {
    server.send({ StateChanged: { room: 1, seq: 4n, key: m.key, value: m.value, version: 1n, author: 2 } });
    server.send({ StateAck: { request_id: m.request_id, room: 1, version: 1n, seq: 4n } });
  };
  server.handlers.Command = (m) => {
    server.send({ CommandEvent: { room: 1, seq: 5n, author: 2, kind: m.kind, payload: m.payload, idempotency_key: m.idempotency_key } });
    server.send({ CommandAck: { request_id: m.request_id, room: 1, seq: 5n, duplicate: false } });
  };
  server.send({ MemberJoined: { room: 1, seq: 3n, member: { id: 3, role: 'Viewer', display: { name: 'cy', meta: new Uint8Array() } } } });
  const ack = await room.setState('title', 'Hello');
  seen.push(['ack', ack.version, ack.seq]);
  const cmd = await room.sendCommand('chat', 'hi all', { idempotencyKey: 'k1' });
  seen.push(['cmdack', cmd.seq, cmd.duplicate]);
  server.send({ MemberLeft: { room: 1, seq: 6n, member: 3, reason: 'TooSlow' } });
  await until(() => seen.length === 6, 2000, 'memberLeft');
  assert.deepEqual(seen, [
    ['joined', 'cy', 3, 3],
    ['state', 'title', 'Hello', 'Hello', 4],
    ['ack', 1, 4],
    ['command', 'chat', 'hi all', 'k1', 5],
    ['cmdack', 5, false],
    ['left', 'cy', 'too_slow', 2],
  ]);
  assert.deepEqual(server.got('SetState')[0].value, enc.encode('Hello'));
  assert.equal(server.got('SetState')[0].if_version, null);
  await client.close();
});

test('stale events are ignored and events for unknown rooms dropped', async () => {
  const { server, client, room } = await joined();
  const seen = [];
  room.on('stateChanged', (e) => seen.push(e.seq));
  server.send({ StateChanged: { room: 1, seq: 2n, key: 'k', value: null, version: 9n, author: 1 } });
  server.send({ StateChanged: { room: 9, seq: 3n, key: 'k', value: null, version: 9n, author: 1 } });
  server.send({ StateChanged: { room: 1, seq: 3n, key: 'k', value: enc.encode('v'), version: 9n, author: 1 } });
  await until(() => seen.length === 1);
  assert.deepEqual(seen, [3]);
  await client.close();
});

test('server errors reject the request with code, name, detail and request id', async () => {
  const { server, client, room } = await joined();
  server.handlers.SetState = (m) =>
    server.send({
      Error: { request_id: m.request_id, code: 301, message: 'key title is at version 7', detail: { Conflict: { current_version: 7n } } },
    });
  const e = await rejection(room.setState('title', 'x', { ifVersion: 3 }));
  assert.equal(e.code, ErrorCode.Conflict);
  assert.equal(e.name, 'conflict');
  assert.equal(e.message, 'key title is at version 7');
  assert.deepEqual(e.detail, { currentVersion: 7 });
  assert.equal(e.requestId, server.got('SetState')[0].request_id);
  assert.equal(server.got('SetState')[0].if_version, 3n);
  server.handlers.Join = (m) =>
    server.send({ Error: { request_id: m.request_id, code: 201, message: 'full', detail: { Limit: { limit: 8n, actual: 9n } } } });
  const full = await rejection(client.join('x'));
  assert.equal(full.name, 'room_full');
  assert.deepEqual(full.detail, { limit: 8, actual: 9 });
  server.handlers.Join = (m) => server.send({ Error: { request_id: m.request_id, code: 999, message: 'new', detail: 'None' } });
  const unknown = await rejection(client.join('y'));
  assert.equal(unknown.code, 999);
  assert.equal(unknown.name, 'unknown');
  assert.equal(unknown.detail, null);
  await client.close();
});

test('requests over the announced limits fail locally, unsent', async () => {
  const { server, client, room } = await joined({ limits: { max_state_key_len: 4 } });
  const e = await rejection(room.setState('toolong', 'x'));
  assert.equal(e.code, ErrorCode.LimitExceeded);
  assert.equal(e.name, 'limit_exceeded');
  assert.deepEqual(e.detail, { limit: 4, actual: 7 });
  assert.equal(server.got('SetState').length, 0);
  const bad = await rejection(room.setState('k', 42));
  assert.equal(bad.name, 'invalid_argument');
  const badVersion = await rejection(room.deleteState('k', { ifVersion: -1 }));
  assert.equal(badVersion.name, 'invalid_argument');
  await client.close();
});

test('a request without reply times out; a late Joined is left again', async () => {
  const { server, client } = await connected({}, { requestTimeoutMs: 50 });
  let joinMessage;
  server.handlers.Join = (m) => {
    joinMessage = m;
  };
  const e = await rejection(client.join('slow'));
  assert.equal(e.name, 'timeout');
  assert.equal(e.code, null);
  assert.equal(e.requestId, joinMessage.request_id);
  server.send({ Joined: { request_id: joinMessage.request_id, snapshot: FakeServer.snapshot({ room: 44 }) } });
  await until(() => server.got('Leave').length === 1, 2000, 'the Leave');
  assert.equal(server.got('Leave')[0].room, 44);
  await client.close();
});

test('server frames with unknown tags are skipped; undecodable ones close the connection', async () => {
  const { server, client, room } = await joined();
  const seen = [];
  room.on('command', (c) => seen.push(c.seq));
  server.sendRaw(Uint8Array.of(25, 1, 2, 3)); // a tag from a newer server
  server.sendRaw(Uint8Array.of(0x80, 0x01)); // tag 128
  server.send({ CommandEvent: { room: 1, seq: 3n, author: 1, kind: 'k', payload: new Uint8Array(), idempotency_key: null } });
  await until(() => seen.length === 1);
  const closed = new Promise((resolve) => client.on('close', resolve));
  server.sendRaw(Uint8Array.of(8, 1, 1, 1, 7)); // CommandAck with a bad bool
  const reason = await closed;
  assert.equal(reason.code, ErrorCode.Malformed);
  assert.equal(reason.name, 'malformed');
  assert.match(reason.message, /undecodable message from the server/);
  assert.deepEqual(server.connections[0].closeCalls[0].code, 4100);
  assert.equal(room.joined, false);
});

test('an error frame before a 4000+N close gives the close reason; pending requests fail as closed', async () => {
  const { server, client, room } = await joined();
  const errors = [];
  const reasons = [];
  client.on('error', (e) => errors.push(e));
  client.on('close', (r) => reasons.push(r));
  server.handlers.Command = () => {}; // never answered
  const pending = room.sendCommand('chat', 'x');
  const iterator = room.commands();
  server.send({ Error: { request_id: null, code: 400, message: 'too slow: 1000 events queued', detail: { Limit: { limit: 1000n, actual: 1001n } } } });
  server.close(4400, 'slow');
  const e = await rejection(pending);
  assert.equal(e.name, 'closed');
  assert.equal(e.code, null);
  assert.equal(e.reason.code, 400);
  assert.equal(errors.length, 1);
  assert.equal(errors[0].name, 'slow_consumer');
  assert.equal(errors[0].requestId, null);
  assert.deepEqual(reasons, [{ code: 400, name: 'slow_consumer', message: 'too slow: 1000 events queued', detail: { limit: 1000, actual: 1001 } }]);
  assert.deepEqual(client.closeReason, reasons[0]);
  assert.deepEqual(await client.closed, reasons[0]);
  assert.deepEqual(await iterator.next(), { value: undefined, done: true });
  assert.equal(room.joined, false);
  assert.equal((await rejection(room.setState('k', 'v'))).name, 'closed');
  assert.equal((await rejection(client.join('x'))).name, 'closed');
  assert.throws(() => room.sendTick(new Uint8Array(1)), (err) => err.name === 'closed');
  await room.leave(); // nothing to leave
});

test('close codes without an error frame: 4501, 1000, 1006', async () => {
  for (const [code, expected] of [
    [4501, { code: 501, name: 'shutting_down', message: 'bye' }],
    [1000, { code: null, name: 'closed', message: 'closed by the server: bye' }],
    [1006, { code: null, name: 'connection_lost', message: 'WebSocket closed with code 1006: bye' }],
  ]) {
    const { server, client } = await connected();
    const reason = new Promise((resolve) => client.on('close', resolve));
    server.close(code, 'bye');
    assert.deepEqual(await reason, { ...expected, detail: null });
  }
});

test('WebSocket watchdog: a quiet connection is probed with a Ping; an unanswered probe means lost', async () => {
  const { server, client } = await connected({}, { idleTimeoutMs: 90 });
  const pingsAtConnect = server.got('Ping').length;
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.equal(client.closeReason, null, 'answered probes keep it open');
  assert.ok(server.got('Ping').length > pingsAtConnect, 'the watchdog probed');
  const reason = new Promise((resolve) => client.on('close', resolve));
  server.handlers.Ping = () => {}; // the server goes silent
  const r = await reason;
  assert.equal(r.name, 'connection_lost');
  assert.equal(r.code, null);
  assert.match(r.message, /no answer from the server/);
  assert.deepEqual(server.connections[0].closeCalls[0], { code: 1000, reason: 'idle timeout' });
});

test('close(): one close event, 1000 on the wire, everything ends', async () => {
  const { server, client, room } = await joined();
  const reasons = [];
  client.on('close', (r) => reasons.push(r));
  const ticks = room.ticks();
  await client.close();
  await client.close();
  assert.deepEqual(reasons, [{ code: null, name: 'closed', message: 'closed by this client', detail: null }]);
  assert.deepEqual(server.connections[0].closeCalls[0], { code: 1000, reason: 'closed' });
  assert.equal(room.joined, false);
  assert.deepEqual(await ticks.next(), { value: undefined, done: true });
  const e = await rejection(room.sendCommand('k'));
  assert.equal(e.name, 'closed');
  assert.equal(e.reason.name, 'closed');
});

test('version mismatch at the handshake rejects connect with the server detail', async () => {
  const server = new FakeServer();
  server.handlers.Hello = () => {
    server.send({
      Error: {
        request_id: null,
        code: 103,
        message: 'server speaks 1.0, client 2.0',
        detail: { Version: { server: { major: 1, minor: 0 }, client: { major: 2, minor: 0 } } },
      },
    });
    server.close(4103, 'version mismatch');
  };
  const e = await rejection(connect('ws://127.0.0.1:1/chorus', { WebSocket: server.WebSocket, ...fast }));
  assert.equal(e.code, ErrorCode.VersionMismatch);
  assert.equal(e.name, 'version_mismatch');
  assert.deepEqual(e.detail, { server: { major: 1, minor: 0 }, client: { major: 2, minor: 0 } });
});

test('a server hello with another major version is refused; another minor is fine', async () => {
  const newer = new FakeServer();
  newer.handlers.Hello = () => newer.send({ Hello: newer.hello({ version: { major: 3, minor: 0 } }) });
  const e = await rejection(connect('ws://127.0.0.1:1/chorus', { WebSocket: newer.WebSocket, ...fast }));
  assert.equal(e.code, ErrorCode.VersionMismatch);
  assert.deepEqual(e.detail, { server: { major: 3, minor: 0 }, client: { major: 2, minor: 0 } });
  await until(() => newer.connections[0].readyState === 3, 2000, 'the socket closed');
  const minor = new FakeServer();
  minor.handlers.Hello = () => minor.send({ Hello: minor.hello({ version: { major: 2, minor: 3 } }) });
  const client = await connect('ws://127.0.0.1:1/chorus', { WebSocket: minor.WebSocket, ...fast });
  assert.deepEqual(client.serverHello.version, { major: 2, minor: 3 });
  await client.close();
});

test('a refused WebSocket and a silent server fail connect', async () => {
  const refusing = new FakeServer();
  refusing.refuseWebSocket = true;
  const e = await rejection(connect('ws://127.0.0.1:1/chorus', { WebSocket: refusing.WebSocket, ...fast }));
  assert.equal(e.name, 'closed');
  const silent = new FakeServer();
  silent.handlers.Hello = () => {};
  const t = await rejection(connect('ws://127.0.0.1:1/chorus', { WebSocket: silent.WebSocket, ...fast, handshakeTimeoutMs: 50 }));
  assert.equal(t.name, 'timeout');
  await until(() => silent.connections[0].readyState === 3, 2000, 'the socket closed');
  const noPong = new FakeServer();
  noPong.handlers.Ping = () => {};
  const p = await rejection(connect('ws://127.0.0.1:1/chorus', { WebSocket: noPong.WebSocket, ...fast, handshakeTimeoutMs: 100 }));
  assert.equal(p.name, 'timeout');
  assert.match(p.message, /clock/);
});

test('ticks: routed by room, own and unknown senders ignored, iterators bounded', async () => {
  const { server, client, room } = await joined();
  const events = [];
  room.on('tick', (t) => events.push(t));
  const bounded = room.ticks({ capacity: 2 });
  const dg = (room, sender, seq, payload) => encodeDatagram({ Tick: { room, sender, seq, payload: Uint8Array.of(...payload) } });
  server.sendDatagram(dg(1, 1, 10, [1]));
  server.sendDatagram(dg(1, 2, 11, [2])); // our own echo
  server.sendDatagram(dg(1, 9, 12, [3])); // unknown member
  server.sendDatagram(dg(5, 1, 13, [4])); // unknown room
  server.sendDatagram(Uint8Array.of(7, 7)); // undecodable
  server.sendDatagram(dg(1, 1, 14, new Array(1001).fill(0))); // over the limit
  server.sendDatagram(dg(1, 1, 15, [5]));
  server.sendDatagram(dg(1, 1, 16, [6]));
  await until(() => events.length === 3);
  assert.deepEqual(events.map((t) => [t.sender, t.seq, Array.from(t.payload)]), [
    [1, 10, [1]],
    [1, 15, [5]],
    [1, 16, [6]],
  ]);
  assert.ok(events.every((t) => typeof t.receivedAt === 'number' && t.receivedAt <= performance.now()));
  assert.equal(bounded.dropped, 1);
  assert.equal((await bounded.next()).value.seq, 15);
  assert.equal((await bounded.next()).value.seq, 16);
  const waiting = bounded.next();
  server.sendDatagram(dg(1, 1, 17, [7]));
  assert.equal((await waiting).value.seq, 17);
  await bounded.return();
  await client.close();
});

test('sendTick on WebSocket: lane 0x01, own sender, seq counting, server limit only', async () => {
  const { server, client, room } = await joined();
  assert.equal(room.sendTick(Uint8Array.of(1, 2)), 0);
  assert.equal(room.sendTick('hi'), 1);
  assert.equal(room.sendTick(new Uint8Array(1000)), 2);
  await until(() => server.datagrams.length === 3);
  assert.deepEqual(decodeDatagram(server.datagrams[0]), { Tick: { room: 1, sender: 2, seq: 0, payload: Uint8Array.of(1, 2) } });
  assert.deepEqual(decodeDatagram(server.datagrams[1]).Tick.payload, enc.encode('hi'));
  assert.equal(server.wsMessages.filter((m) => m[0] === 0x01).length, 3);
  const e = (() => {
    try {
      room.sendTick(new Uint8Array(1001));
    } catch (err) {
      return err;
    }
  })();
  assert.ok(e instanceof ChorusError);
  assert.equal(e.code, ErrorCode.LimitExceeded);
  assert.equal(e.name, 'limit_exceeded');
  assert.deepEqual(e.detail, { limit: 1000, actual: 1001 });
  assert.equal(room.sendTick(new Uint8Array(0)), 3, 'a refused tick takes no seq');
  await client.close();
});

test('WebSocket ticks are newest-wins per room while the socket is backed up', async () => {
  const { server, client, room } = await joined();
  const ws = server.connections[0];
  const before = server.datagrams.length;
  ws.bufferedAmount = 1 << 20;
  for (let i = 0; i < 5; i++) room.sendTick(Uint8Array.of(i));
  assert.equal(server.datagrams.length, before);
  ws.bufferedAmount = 0;
  await until(() => server.datagrams.length === before + 1);
  assert.deepEqual(Array.from(decodeDatagram(server.datagrams.at(-1)).Tick.payload), [4]);
  assert.equal(client.ticksDropped, 4);
  await client.close();
});

test('big control messages are chunked both ways', async () => {
  const { server, client, room } = await joined();
  const big = Uint8Array.from({ length: 100_000 }, (_, i) => i & 0xff);
  server.handlers.SetState = (m) => {
    server.send({ StateChanged: { room: 1, seq: 3n, key: m.key, value: m.value, version: 1n, author: 2 } });
    server.send({ StateAck: { request_id: m.request_id, room: 1, version: 1n, seq: 3n } });
  };
  await room.setState('big', big);
  const pieces = server.wsMessages.filter((m) => m[0] === 0x02);
  assert.equal(pieces.length, 6, 'six 16 KiB chunks and a last piece');
  assert.deepEqual(server.got('SetState')[0].value, big);
  assert.deepEqual(room.getState('big').value, big);
  await client.close();
});

test('a reply of the wrong kind fails the request', async () => {
  const { server, client, room } = await joined();
  server.handlers.SetState = (m) => server.send({ CommandAck: { request_id: m.request_id, room: 1, seq: 1n, duplicate: false } });
  const e = await rejection(room.setState('k', 'v'));
  assert.equal(e.code, ErrorCode.ProtocolViolation);
  await client.close();
});

test('leave: Left ends the room; being removed by the server does too', async () => {
  const { server, client, room } = await joined();
  server.handlers.Leave = (m) => server.send({ Left: { request_id: m.request_id, room: m.room } });
  const commands = room.commands();
  await room.leave();
  assert.equal(room.joined, false);
  assert.deepEqual(await commands.next(), { value: undefined, done: true });
  assert.equal((await rejection(room.setState('k', 'v'))).name, 'not_joined');
  assert.throws(() => room.sendTick(Uint8Array.of(1)), (e) => e.code === ErrorCode.NotJoined);
  await room.leave();
  answerJoin(server, { room: 3 });
  const again = await client.join('lobby');
  const left = new Promise((resolve) => again.on('memberLeft', resolve));
  server.send({ MemberLeft: { room: 3, seq: 3n, member: 2, reason: 'TooSlow' } });
  assert.equal((await left).reason, 'too_slow');
  assert.equal(again.joined, false);
  await client.close();
});

test('listeners: unknown event names are refused, a throwing listener does not stop others', async () => {
  const { server, client, room } = await joined();
  assert.throws(() => room.on('ticks', () => {}), (e) => e.name === 'invalid_argument');
  assert.throws(() => client.on('closed', () => {}), (e) => e.name === 'invalid_argument');
  const seen = [];
  const original = console.error;
  console.error = () => {};
  const originalReport = globalThis.reportError;
  globalThis.reportError = undefined;
  try {
    room.on('command', () => {
      throw new Error('listener bug');
    });
    const off = room.on('command', (c) => seen.push(c.seq));
    server.send({ CommandEvent: { room: 1, seq: 3n, author: 1, kind: 'k', payload: new Uint8Array(), idempotency_key: null } });
    await until(() => seen.length === 1);
    off();
    server.send({ CommandEvent: { room: 1, seq: 4n, author: 1, kind: 'k', payload: new Uint8Array(), idempotency_key: null } });
    await until(() => room.lastSeq === 4);
    assert.deepEqual(seen, [3]);
  } finally {
    console.error = original;
    globalThis.reportError = originalReport;
  }
  await client.close();
});

test('WebTransport: hashes, frames on the control stream, datagrams sized to the browser', async () => {
  const server = new FakeServer({ maxDatagramSize: 1300 });
  const hash = 'f2:29:13:18:66:51:d9:8a:90:0b:26:e4:07:90:05:97:9a:4f:c7:70:db:05:27:9d:84:fe:2e:db:df:9d:05:21';
  const client = await connect('https://127.0.0.1:4433/chorus', { WebTransport: server.WebTransport, WebSocket: null, certHashes: [hash], ...fast });
  const wt = server.connections[0];
  assert.equal(client.transport, 'webtransport');
  assert.equal(wt.url, 'https://127.0.0.1:4433/chorus');
  assert.equal(wt.init.serverCertificateHashes.length, 1);
  assert.equal(wt.init.serverCertificateHashes[0].algorithm, 'sha-256');
  assert.equal(Buffer.from(wt.init.serverCertificateHashes[0].value).toString('hex'), hash.replaceAll(':', ''));
  assert.equal(client.clock.samples, 2);
  answerJoin(server);
  const room = await client.join('lobby');
  // Chromium: 1211 bytes per datagram, the server limit (1000) is the bound.
  assert.equal(client.maxTickPayload, 1000);
  assert.equal(room.sendTick(new Uint8Array(1000)), 0);
  // Firefox-like 1000-byte datagrams leave 981 bytes of payload.
  wt.datagrams.maxDatagramSize = 1000;
  assert.equal(client.maxTickPayload, 981);
  assert.equal(room.maxTickPayload, 981);
  assert.throws(() => room.sendTick(new Uint8Array(982)), (e) => e.code === ErrorCode.LimitExceeded && e.detail.limit === 981);
  assert.equal(room.sendTick(new Uint8Array(981)), 1);
  await until(() => server.datagrams.length === 2);
  assert.equal(decodeDatagram(server.datagrams[1]).Tick.seq, 1);
  assert.ok(server.datagrams.every((d) => d.length <= 1211));
  // Inbound datagrams reach the room.
  const got = new Promise((resolve) => room.on('tick', resolve));
  server.sendDatagram(encodeDatagram({ Tick: { room: 1, sender: 1, seq: 5, payload: Uint8Array.of(9) } }));
  assert.equal((await got).seq, 5);
  // A big control message arrives split across reads.
  answerJoin(server, { room: 2, state: [{ key: 'big', value: new Uint8Array(70000).fill(3), version: 1n, author: 1 }] });
  const big = await client.join('big');
  assert.equal(big.getState('big').value.length, 70000);
  await client.close();
  assert.deepEqual(wt.closeCalls[0], { closeCode: 0, reason: 'closed' });
});

test('WebTransport close with a code after an error frame', async () => {
  const server = new FakeServer({ maxDatagramSize: 1300 });
  const client = await connect('https://127.0.0.1:4433/chorus', { WebTransport: server.WebTransport, certHashes: [], ...fast });
  const reason = new Promise((resolve) => client.on('close', resolve));
  server.send({ Error: { request_id: null, code: 400, message: 'too slow', detail: 'None' } });
  server.close(400, 'slow');
  assert.deepEqual(await reason, { code: 400, name: 'slow_consumer', message: 'too slow', detail: null });
});

test('WebTransport: a frame over max_frame_bytes is fatal FrameTooLarge', async () => {
  const server = new FakeServer({ maxDatagramSize: 1300, limits: { max_frame_bytes: 1000 } });
  const client = await connect('https://127.0.0.1:4433/chorus', { WebTransport: server.WebTransport, certHashes: [], ...fast });
  const reason = new Promise((resolve) => client.on('close', resolve));
  server.connections[0].controlController.enqueue(Uint8Array.of(0xe9, 0x07)); // declares 1001 bytes
  const r = await reason;
  assert.equal(r.code, ErrorCode.FrameTooLarge);
  assert.equal(r.name, 'frame_too_large');
  assert.deepEqual(server.connections[0].closeCalls[0].closeCode, 102);
});

test('auto: falls back to WebSocket when the session is not ready in time, and closes the attempt', async () => {
  const server = new FakeServer();
  server.webTransportNeverReady = true;
  const started = performance.now();
  const client = await connect('https://127.0.0.1:4433/chorus', {
    WebTransport: server.WebTransport,
    WebSocket: server.WebSocket,
    certHashes: [],
    fallbackAfterMs: 80,
    ...fast,
  });
  assert.equal(client.transport, 'websocket');
  assert.ok(performance.now() - started >= 75);
  const [wt, ws] = server.connections;
  assert.equal(wt.closeCalls.length, 1, 'the half-open session was closed');
  assert.equal(ws.url, 'wss://127.0.0.1:4433/chorus', 'same host, port and path; wss outside an http page');
  await client.close();
});

test('auto: WebSocket at once without WebTransport; websocketUrl overrides the URL', async () => {
  const server = new FakeServer();
  const client = await connect('https://127.0.0.1:4433/chorus', { WebTransport: null, WebSocket: server.WebSocket, websocketUrl: 'ws://127.0.0.1:4433/chorus', ...fast });
  assert.equal(client.transport, 'websocket');
  assert.equal(server.connections[0].url, 'ws://127.0.0.1:4433/chorus');
  await client.close();
  const forced = new FakeServer();
  const c2 = await connect('https://127.0.0.1:4433/chorus', { transport: 'websocket', WebTransport: forced.WebTransport, WebSocket: forced.WebSocket, ...fast });
  assert.equal(c2.transport, 'websocket');
  assert.equal(forced.connections.length, 1);
  await c2.close();
  const only = new FakeServer();
  only.webTransportNeverReady = true;
  const e = await rejection(
    connect('https://127.0.0.1:4433/chorus', { transport: 'webtransport', WebTransport: only.WebTransport, certHashes: [], handshakeTimeoutMs: 50, ...fast }),
  );
  assert.equal(e.name, 'timeout');
  assert.equal((await rejection(connect('ws://127.0.0.1:1/chorus', { transport: 'webtransport' }))).name, 'invalid_argument');
});

test('without certHashes, the hash comes from /cert-hash on the same host and port', async () => {
  const server = new FakeServer({ maxDatagramSize: 1300 });
  const fetched = [];
  const hex = 'ab'.repeat(32);
  const fetch = async (url) => {
    fetched.push(url);
    return { ok: true, json: async () => ({ algorithm: 'sha-256', hashes: [hex] }) };
  };
  const client = await connect('https://127.0.0.1:4433/chorus', { WebTransport: server.WebTransport, fetch, ...fast });
  assert.deepEqual(fetched, ['http://127.0.0.1:4433/cert-hash']);
  const value = server.connections[0].init.serverCertificateHashes[0].value;
  assert.equal(Buffer.from(value).toString('hex'), hex);
  await client.close();
  // A failed fetch means no pinned hash (the browser's own trust applies).
  const s2 = new FakeServer({ maxDatagramSize: 1300 });
  const c2 = await connect('https://chorus.example:443/chorus', {
    WebTransport: s2.WebTransport,
    fetch: async (url) => {
      fetched.push(url);
      throw new TypeError('network');
    },
    ...fast,
  });
  assert.equal(fetched[1], 'https://chorus.example/cert-hash');
  assert.deepEqual(s2.connections[0].init, {});
  await c2.close();
});

test('options are validated', async () => {
  for (const options of [{ transport: 'udp' }, { requestTimeoutMs: -1 }, { idleTimeoutMs: 'x' }, { certHashes: ['xyz'] }, { clientName: 5 }]) {
    assert.equal((await rejection(connect('ws://127.0.0.1:1/chorus', options))).name, 'invalid_argument');
  }
  assert.equal((await rejection(connect('http://127.0.0.1:1/chorus'))).name, 'invalid_argument');
  assert.equal((await rejection(connect())).name, 'invalid_argument', 'no URL outside a page');
});
