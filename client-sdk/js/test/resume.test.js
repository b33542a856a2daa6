// Resuming a session after a dropped connection (PROTOCOL.md §14) against the
// scripted fake server: the Resume hello option, replay, snapshot, ResumeLost,
// ResumeFailed, the window passing, requests in flight (idempotent commands
// re-sent, others failing as connection_lost, new ones waiting), the backoff
// schedule with injected randomness and timers, the same transport choice,
// the keepalive noticing silence, and Leave before close.

import test from 'node:test';
import assert from 'node:assert/strict';
import { ChorusError, ErrorCode, connect } from '../chorus.js';
import { FakeServer, until } from './support/fake.js';

const enc = new TextEncoder();
const fast = { clockSync: { pings: 2, intervalMs: 0, spacingMs: 0 }, requestTimeoutMs: 2000, keepaliveMs: 0 };
/** Reconnect at once (full jitter with random 0). */
const immediate = { reconnect: { random: () => 0 } };

function resumable(options = {}) {
  const server = new FakeServer(options);
  server.resumeToken = 'token-1';
  server.resumeWindowMs = 60_000;
  return server;
}

async function joined(server, clientOptions = {}, snapshot = {}) {
  const client = await connect('ws://127.0.0.1:1/chorus', { WebSocket: server.WebSocket, ...fast, ...immediate, ...clientOptions });
  server.handlers.Join = (m) => server.send({ Joined: { request_id: m.request_id, snapshot: FakeServer.snapshot({ room_id: m.room_id, ...snapshot }) } });
  const room = await client.join('lobby', { name: 'bob' });
  return { client, room };
}

/** The next Hello is a resume: answered by a new token, then `after(server, hello)` (Resumed, events, ...). */
function onResume(server, after) {
  server.handlers.Hello = (m) => {
    server.resumeToken = `token-${server.connections.length}`;
    server.send({ Hello: server.hello() });
    after(server, m);
  };
}

function record(target, names) {
  const seen = [];
  for (const name of names) target.on(name, (e) => seen.push([name, e]));
  return seen;
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

test('a dropped connection resumes: Resume option, replayed events, requests in flight, queued requests', async () => {
  const server = resumable();
  const { client, room } = await joined(server);
  const clientEvents = record(client, ['reconnecting', 'resumed', 'lost', 'close']);
  const roomEvents = record(room, ['stateChanged', 'presenceChanged', 'resumed', 'lost', 'snapshot']);
  // In flight at the drop: a command with an idempotency key, a state write, a command without key.
  server.handlers.Command = () => {};
  server.handlers.SetState = () => {};
  const keyed = room.sendCommand('chat', 'hello', { idempotencyKey: 'k-1' });
  const write = rejection(room.setState('title', 'lost?'));
  const unkeyed = rejection(room.sendCommand('move', 'x'));
  await until(() => server.got('Command').length === 2 && server.got('SetState').length === 1);
  onResume(server, (s) => {
    s.send({ Resumed: { room: 1, member: 2, snapshot: null } });
    s.send({ StateChanged: { room: 1, seq: 3n, key: 'title', value: enc.encode('Hi'), version: 1n, author: 1 } });
    s.send({ PresenceChanged: { room: 1, seq: 4n, member: 2, presence: 'Online' } });
  });
  server.drop();
  await until(() => client.state === 'reconnecting', 2000, 'reconnecting');
  // A request made while reconnecting waits for the resume.
  server.handlers.SetState = (m) => {
    server.send({ StateChanged: { room: 1, seq: 5n, key: m.key, value: m.value, version: 2n, author: 2 } });
    server.send({ StateAck: { request_id: m.request_id, room: 1, version: 2n, seq: 5n } });
  };
  server.handlers.Command = (m) => server.send({ CommandAck: { request_id: m.request_id, room: 1, seq: 3n, duplicate: true } });
  const queued = room.setState('later', 'ok');
  assert.equal((await write).name, 'connection_lost');
  assert.equal((await unkeyed).name, 'connection_lost');
  assert.deepEqual(await keyed, { seq: 3, duplicate: true }, 'the keyed command was sent again and deduplicated');
  assert.deepEqual(await queued, { version: 2, seq: 5 });
  await until(() => clientEvents.some(([n]) => n === 'resumed'), 2000, 'resumed');
  const hello = server.got('Hello')[1];
  assert.deepEqual(hello.options, [{ Resume: { token: 'token-1', rooms: [{ room: 1, last_seq: 2n }] } }]);
  assert.equal(server.connections.length, 2);
  assert.equal(client.state, 'connected');
  assert.equal(room.joined, true, 'the Room object stays valid');
  assert.equal(room.getState('title').text, 'Hi');
  assert.equal(room.member(2).presence, 'online');
  assert.equal(room.lastSeq, 5);
  const [name, reconnecting] = clientEvents[0];
  assert.equal(name, 'reconnecting');
  assert.deepEqual([reconnecting.attempt, reconnecting.delayMs, reconnecting.reason.name], [1, 0, 'connection_lost']);
  const resumed = clientEvents.find(([n]) => n === 'resumed')[1];
  assert.equal(resumed.transport, 'websocket');
  assert.equal(resumed.sessionResumed, true);
  assert.equal(resumed.attempts, 1);
  assert.deepEqual(resumed.rooms.map((r) => [r.room, r.roomId, r.slot, r.outcome, r.replayed, r.code]), [[room, 'lobby', 1, 'replayed', 2, null]]);
  assert.deepEqual(roomEvents.map(([n]) => n).slice(0, 3), ['stateChanged', 'presenceChanged', 'resumed']);
  assert.deepEqual(roomEvents.find(([n]) => n === 'resumed')[1], { replayed: 2, snapshot: false });
  assert.ok(!clientEvents.some(([n]) => n === 'lost' || n === 'close'));
  // The commands in flight: the keyed one went again on the new connection, the other did not.
  const resent = server.received.slice(server.received.findIndex((m) => m.Hello && m.Hello.options.length)).filter((m) => m.Command);
  assert.deepEqual(resent.map((m) => m.Command.idempotency_key), ['k-1']);
  // The next drop presents the new token.
  onResume(server, (s) => s.send({ Resumed: { room: 1, member: 2, snapshot: null } }));
  server.drop();
  await until(() => clientEvents.filter(([n]) => n === 'resumed').length === 2, 2000, 'second resume');
  assert.equal(server.got('Hello')[2].options[0].Resume.token, 'token-2');
  assert.equal(server.got('Hello')[2].options[0].Resume.rooms[0].last_seq, 5n);
  await client.close();
});

test('a gap too old to replay: the snapshot replaces the replica', async () => {
  const server = resumable();
  const { client, room } = await joined(server, {}, { state: [{ key: 'a', value: enc.encode('1'), version: 1n, author: 1 }], state_version: 1n });
  const events = record(room, ['snapshot', 'resumed']);
  onResume(server, (s) =>
    s.send({
      Resumed: {
        room: 1,
        member: 2,
        snapshot: FakeServer.snapshot({ state: [{ key: 'b', value: enc.encode('2'), version: 7n, author: 1 }], state_version: 7n, last_seq: 40n }),
      },
    }),
  );
  const resumed = new Promise((resolve) => client.on('resumed', resolve));
  server.drop();
  const e = await resumed;
  assert.deepEqual(e.rooms.map((r) => [r.outcome, r.replayed]), [['snapshot', 0]]);
  assert.deepEqual(events.map(([n, v]) => [n, v]), [
    ['snapshot', { reason: 'resumed', lastSeq: 40 }],
    ['resumed', { replayed: 0, snapshot: true }],
  ]);
  assert.equal(room.getState('a'), undefined);
  assert.equal(room.getState('b').text, '2');
  assert.equal(room.lastSeq, 40);
  await client.close();
});

test('ResumeLost: that room is gone (not joined, its requests fail), the others go on', async () => {
  const server = resumable();
  const { client, room } = await joined(server);
  server.handlers.Join = (m) => server.send({ Joined: { request_id: m.request_id, snapshot: FakeServer.snapshot({ room_id: 'other', room: 2 }) } });
  const other = await client.join('other');
  const lostEvents = record(client, ['lost']);
  const roomLost = new Promise((resolve) => room.on('lost', resolve));
  onResume(server, (s) => {
    s.send({ ResumeLost: { room: 1, code: 205 } });
    s.send({ ResumeLost: { room: 1, code: 200 } }); // a second one for the same room is ignored
    s.send({ Resumed: { room: 2, member: 2, snapshot: null } });
  });
  server.drop();
  await until(() => client.state === 'reconnecting');
  const waiting = rejection(room.setState('k', 'v')); // queued, then failed when the room is lost
  const resumed = await new Promise((resolve) => client.on('resumed', resolve));
  assert.deepEqual(resumed.rooms.map((r) => [r.roomId, r.outcome, r.code]), [
    ['lobby', 'lost', 205],
    ['other', 'replayed', null],
  ]);
  assert.deepEqual(await roomLost, { code: 205, name: 'not_joined', message: 'the room could not be resumed (not_joined)' });
  assert.equal(room.joined, false);
  assert.equal(other.joined, true);
  assert.equal((await waiting).name, 'not_joined');
  assert.equal(lostEvents.length, 1);
  assert.deepEqual([lostEvents[0][1].rooms, lostEvents[0][1].sessionLost], [[room], false]);
  assert.equal(server.got('SetState').length, 0, 'never sent for a lost room');
  await client.close();
});

test('ResumeFailed: a fresh session, every room lost, the client still usable', async () => {
  const server = resumable();
  const { client, room } = await joined(server);
  onResume(server, (s) => s.send({ Error: { request_id: null, code: 209, message: 'unknown token', detail: 'None' } }));
  const errors = record(client, ['error']);
  const lost = new Promise((resolve) => client.on('lost', resolve));
  const resumed = new Promise((resolve) => client.on('resumed', resolve));
  server.drop();
  const r = await resumed;
  const l = await lost;
  assert.equal(r.sessionResumed, false);
  assert.deepEqual(r.rooms.map((x) => [x.outcome, x.code]), [['lost', ErrorCode.ResumeFailed]]);
  assert.deepEqual([l.sessionLost, l.rooms, l.reason.code, l.reason.name], [true, [room], 209, 'resume_failed']);
  assert.equal(room.joined, false);
  assert.equal(errors.length, 0, 'reported by resumed and lost, not as an error');
  assert.equal(client.state, 'connected');
  server.handlers.Join = (m) => server.send({ Joined: { request_id: m.request_id, snapshot: FakeServer.snapshot({ room: 3 }) } });
  assert.equal((await client.join('lobby')).slot, 3, 'joins work on the fresh session');
  await client.close();
});

test('the window passes: reconnecting events with the backoff, then lost and close', async () => {
  const server = resumable();
  server.resumeWindowMs = 200;
  const { client, room } = await joined(server, { reconnect: { random: () => 0.5, initialDelayMs: 20, maxDelayMs: 60 } });
  const events = record(client, ['reconnecting', 'lost', 'close']);
  server.refuseWebSocket = true;
  server.drop();
  const reason = await client.closed;
  assert.equal(reason.name, 'connection_lost');
  assert.match(reason.message, /not resumed within the server's resume window \(0\.2 s\)/);
  const delays = events.filter(([n]) => n === 'reconnecting').map(([, e]) => e.delayMs);
  assert.deepEqual(delays.slice(0, 3), [10, 20, 30], 'half of 20, 40, 60 (capped)');
  assert.ok(delays.length >= 4);
  assert.deepEqual(events.slice(-2).map(([n]) => n), ['lost', 'close']);
  assert.deepEqual(events.at(-2)[1].rooms, [room]);
  assert.equal(room.joined, false);
});

test('injected random and timer: the schedule is deterministic; reconnect: false and no token end at once', async () => {
  const server = resumable();
  const scheduled = [];
  const timer = (fn, ms) => {
    scheduled.push(ms);
    return setTimeout(fn, 0); // no real waiting
  };
  const { client } = await joined(server, { reconnect: { random: () => 0.999999, setTimeout: timer, clearTimeout } });
  let refusals = 3;
  const original = server.WebSocket;
  server.refuseWebSocket = true;
  client.on('reconnecting', () => {
    if (--refusals < 0) server.refuseWebSocket = false;
  });
  onResume(server, (s) => s.send({ Resumed: { room: 1, member: 2, snapshot: null } }));
  const resumed = new Promise((resolve) => client.on('resumed', resolve));
  server.drop();
  const r = await resumed;
  assert.deepEqual(scheduled, [250, 500, 1000, 2000]);
  assert.equal(r.attempts, 4);
  assert.equal(original, server.WebSocket);
  await client.close();

  const off = resumable();
  const c2 = await connect('ws://127.0.0.1:1/chorus', { WebSocket: off.WebSocket, ...fast, reconnect: false });
  off.drop();
  assert.equal((await c2.closed).name, 'connection_lost');
  assert.equal(off.connections.length, 1);
  const noToken = new FakeServer();
  const c3 = await connect('ws://127.0.0.1:1/chorus', { WebSocket: noToken.WebSocket, ...fast });
  noToken.drop();
  assert.equal((await c3.closed).name, 'connection_lost');
  assert.equal(noToken.connections.length, 1, 'an empty resume token: no reconnect');
});

test('an error frame before the close is not a drop: no reconnect', async () => {
  const server = resumable();
  const { client } = await joined(server);
  const events = record(client, ['reconnecting', 'lost']);
  server.send({ Error: { request_id: null, code: 401, message: 'too many violations', detail: 'None' } });
  server.close(4401, 'rate limited');
  assert.equal((await client.closed).name, 'rate_limited');
  assert.deepEqual(events.map(([n]) => n), ['lost']);
  assert.equal(server.connections.length, 1);
});

test('the keepalive pings every keepaliveMs; silence after a ping is a drop', async () => {
  const server = resumable();
  const { client } = await joined(server, { keepaliveMs: 40 });
  const before = server.got('Ping').length;
  await new Promise((resolve) => setTimeout(resolve, 200));
  assert.ok(server.got('Ping').length >= before + 3, 'pings go out');
  assert.equal(client.clock.samples >= 4, true, 'each pong is a clock sample');
  server.handlers.Ping = () => {}; // the server goes silent
  const reconnecting = new Promise((resolve) => client.on('reconnecting', resolve));
  const started = performance.now();
  const r = await reconnecting;
  assert.match(r.reason.message, /nothing from the server for 1 s/);
  assert.ok(performance.now() - started >= 900);
  assert.deepEqual(server.connections[0].closeCalls[0], { code: 1000, reason: 'silent' });
  delete server.handlers.Ping;
  onResume(server, (s) => s.send({ Resumed: { room: 1, member: 2, snapshot: null } }));
  await new Promise((resolve) => client.on('resumed', resolve));
  await client.close();
});

test('WebTransport: a dropped session resumes on the same transport choice (WebTransport first, then WebSocket)', async () => {
  const server = resumable({ maxDatagramSize: 1300 });
  const client = await connect('https://127.0.0.1:4433/chorus', {
    WebTransport: server.WebTransport,
    WebSocket: server.WebSocket,
    certHashes: [],
    fallbackAfterMs: 60,
    ...fast,
    ...immediate,
  });
  assert.equal(client.transport, 'webtransport');
  server.handlers.Join = (m) => server.send({ Joined: { request_id: m.request_id, snapshot: FakeServer.snapshot() } });
  const room = await client.join('lobby');
  onResume(server, (s) => s.send({ Resumed: { room: 1, member: 2, snapshot: null } }));
  let resumed = new Promise((resolve) => {
    const off = client.on('resumed', (e) => {
      off();
      resolve(e);
    });
  });
  server.drop();
  assert.equal((await resumed).transport, 'webtransport');
  assert.equal(server.connections[1].constructor.name, server.WebTransport.name);
  // Now UDP is blocked: the next resume falls back to WebSocket, as connect would.
  server.webTransportNeverReady = true;
  onResume(server, (s) => s.send({ Resumed: { room: 1, member: 2, snapshot: null } }));
  resumed = new Promise((resolve) => {
    const off = client.on('resumed', (e) => {
      off();
      resolve(e);
    });
  });
  server.drop();
  assert.equal((await resumed).transport, 'websocket');
  assert.equal(room.joined, true);
  assert.equal(server.connections.at(-1).url, 'wss://127.0.0.1:4433/chorus');
  await client.close();
});

test('close() and pagehide: a Leave for each joined room, then the close', async () => {
  const server = resumable();
  const { client, room } = await joined(server);
  server.handlers.Join = (m) => server.send({ Joined: { request_id: m.request_id, snapshot: FakeServer.snapshot({ room: 2 }) } });
  await client.join('second');
  const order = [];
  const ws = server.connections[0];
  const originalClose = ws.close.bind(ws);
  ws.close = (code, reason) => {
    order.push(['close', code]);
    originalClose(code, reason);
  };
  server.handlers.Leave = (m) => order.push(['leave', m.room]);
  await client.close();
  assert.deepEqual(order, [
    ['leave', 1],
    ['leave', 2],
    ['close', 1000],
  ]);
  assert.equal(room.joined, false);
  // pagehide does the same (in a page).
  const page = resumable();
  const listeners = {};
  globalThis.document = {};
  const originalAdd = globalThis.addEventListener;
  const originalRemove = globalThis.removeEventListener;
  globalThis.addEventListener = (name, fn) => {
    listeners[name] = fn;
  };
  globalThis.removeEventListener = (name) => delete listeners[name];
  try {
    const { client: c2 } = await joined(page);
    listeners.pagehide();
    assert.equal(page.got('Leave').length, 1, 'sent at once, before the page goes');
    assert.equal((await c2.closed).name, 'closed');
    assert.equal(listeners.pagehide, undefined);
  } finally {
    delete globalThis.document;
    globalThis.addEventListener = originalAdd;
    globalThis.removeEventListener = originalRemove;
  }
});

test('close() while reconnecting stops the attempts', async () => {
  const server = resumable();
  let pending = null;
  const { client } = await joined(server, { reconnect: { setTimeout: (fn) => (pending = fn), clearTimeout: () => (pending = null) } });
  server.drop();
  await until(() => client.state === 'reconnecting');
  assert.ok(pending, 'an attempt is scheduled');
  await client.close();
  assert.equal(pending, null, 'and cancelled');
  assert.equal(client.state, 'closed');
  assert.equal(server.connections.length, 1);
});

test('reconnect and keepalive options are validated', async () => {
  for (const options of [
    { keepaliveMs: -1 },
    { reconnect: 'yes' },
    { reconnect: { initialDelayMs: -5 } },
    { reconnect: { maxDelayMs: 'soon' } },
    { reconnect: { random: 0.5 } },
    { reconnect: { setTimeout: null } },
  ]) {
    assert.equal((await rejection(connect('ws://127.0.0.1:1/chorus', options))).name, 'invalid_argument', JSON.stringify(options));
  }
  const server = resumable();
  const client = await connect('ws://127.0.0.1:1/chorus', { WebSocket: server.WebSocket, ...fast, reconnect: true, keepaliveMs: 0 });
  assert.equal(client.state, 'connected');
  await client.close();
  assert.equal(client.state, 'closed');
});

test('a server going away with a time to come back is reconnected to after that time', async () => {
  const server = resumable();
  const waits = [];
  const { client } = await joined(server, {
    reconnect: {
      random: () => 0,
      setTimeout: (fn, ms) => {
        waits.push(ms);
        return setTimeout(fn, 0);
      },
      clearTimeout: (t) => clearTimeout(t),
    },
  });
  const events = record(client, ['reconnecting', 'close']);
  server.send({ Error: { request_id: null, code: ErrorCode.ShuttingDown, message: 'restarting', detail: { RetryAfter: { retry_after_ms: 4000n } } } });
  server.close(4501, 'restarting');
  await until(() => events.some(([name]) => name === 'reconnecting'), 2000, 'reconnecting');
  const [, reconnecting] = events.find(([name]) => name === 'reconnecting');
  assert.equal(reconnecting.reason.name, 'shutting_down');
  assert.ok(reconnecting.delayMs >= 4000, `waited ${reconnecting.delayMs} ms`);
  assert.ok(waits[0] >= 4000, `timer set for ${waits[0]} ms`);
  assert.ok(!events.some(([name]) => name === 'close'), 'not closed for good');
  await client.close();
});
