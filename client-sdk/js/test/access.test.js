// Protocol 2.0 access control against the scripted fake server: the API key
// hello option, rate limits and hello extensions, refused handshakes, every
// join option, invite codes, the room's policy and can(), kick, setRole,
// setPassword and close with their Acks and events, being kicked, the room
// closing, and retry-after details.

import test from 'node:test';
import assert from 'node:assert/strict';
import { ChorusError, ErrorCode, connect } from '../chorus.js';
import { FakeServer, until } from './support/fake.js';

const fast = { clockSync: { pings: 2, intervalMs: 0, spacingMs: 0 }, requestTimeoutMs: 2000 };
const noMeta = new Uint8Array();
const info = (id, name, role) => ({ id, role, display: { name, meta: noMeta } });

async function connected(serverOptions = {}, clientOptions = {}) {
  const server = new FakeServer(serverOptions);
  const client = await connect('ws://127.0.0.1:1/chorus', { WebSocket: server.WebSocket, ...fast, ...clientOptions });
  return { server, client };
}

/** Answers every Join with this snapshot (room_id: the requested id unless given). */
function answerJoin(server, snapshot = {}) {
  server.handlers.Join = (m) =>
    server.send({ Joined: { request_id: m.request_id, snapshot: FakeServer.snapshot({ room_id: m.room_id, ...snapshot }) } });
}

/** Connected and joined to 'lobby' as member 2 (slot 1, last seq 2); `role` 'Host' makes this client the host. */
async function joined({ role = 'Editor', policy = { rules: [] } } = {}) {
  const { server, client } = await connected();
  const members = [info(1, 'ada', role === 'Host' ? 'Editor' : 'Host'), info(2, 'bob', role), info(3, 'cy', 'Viewer')];
  answerJoin(server, { role, members, policy });
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

/** Records every room event in order, with the replica's view when it fired. */
function record(room, names) {
  const seen = [];
  for (const name of names) room.on(name, (e) => seen.push([name, e, { joined: room.joined, lastSeq: room.lastSeq, role: room.role }]));
  return seen;
}

test('apiKey goes in the hello as the ApiKey option; without one the options are empty', async () => {
  const { server, client } = await connected({}, { apiKey: 'k3y' });
  assert.deepEqual(server.got('Hello')[0], {
    version: { major: 2, minor: 0 },
    client_name: 'chorus-js/0.1',
    capabilities: 0n,
    options: [{ ApiKey: 'k3y' }],
  });
  await client.close();
  const plain = await connected({}, { apiKey: null });
  assert.deepEqual(plain.server.got('Hello')[0].options, []);
  await plain.client.close();
  for (const apiKey of [42, { key: 'x' }]) {
    const e = await rejection(connect('ws://127.0.0.1:1/chorus', { apiKey }));
    assert.equal(e.name, 'invalid_argument');
  }
});

test('a refused API key or too many connections reject connect with the code and the retry time', async () => {
  const server = new FakeServer();
  server.handlers.Hello = () => {
    server.send({ Error: { request_id: null, code: 303, message: 'an API key is required', detail: 'None' } });
    server.close(4303, 'unauthorized');
  };
  const e = await rejection(connect('ws://127.0.0.1:1/chorus', { WebSocket: server.WebSocket, ...fast }));
  assert.equal(e.code, ErrorCode.Unauthorized);
  assert.equal(e.name, 'unauthorized');
  assert.equal(e.retryAfterMs, null);
  const busy = new FakeServer();
  busy.handlers.Hello = () => {
    busy.send({ Error: { request_id: null, code: 403, message: 'too many connections from 127.0.0.1', detail: { RetryAfter: { retry_after_ms: 1500n } } } });
    busy.close(4403, 'too many connections');
  };
  const b = await rejection(connect('ws://127.0.0.1:1/chorus', { WebSocket: busy.WebSocket, ...fast }));
  assert.equal(b.code, ErrorCode.TooManyConnections);
  assert.equal(b.name, 'too_many_connections');
  assert.deepEqual(b.detail, { retryAfterMs: 1500 });
  assert.equal(b.retryAfterMs, 1500);
});

test('rateLimits come from the hello; unknown hello extensions are ignored', async () => {
  const server = new FakeServer({ rateLimits: { ticks: { per_second: 60, burst: 90 } } });
  server.handlers.Hello = () => server.send({ Hello: server.hello({ extensions: [{ kind: 4242, data: Uint8Array.of(1, 2, 3) }] }) });
  const client = await connect('ws://127.0.0.1:1/chorus', { WebSocket: server.WebSocket, ...fast });
  assert.deepEqual(client.rateLimits, {
    messages: { perSecond: 45, burst: 90 },
    stateUpdates: { perSecond: 20, burst: 40 },
    commands: { perSecond: 30, burst: 60 },
    ticks: { perSecond: 60, burst: 90 },
    joins: { perSecond: 5, burst: 10 },
    direct: { perSecond: 30, burst: 60 },
  });
  assert.ok(Object.isFrozen(client.rateLimits) && Object.isFrozen(client.rateLimits.ticks));
  assert.equal(client.serverHello.extensions[0].kind, 4242, 'kept in the codec-form hello, otherwise unused');
  assert.equal(client.limits.maxPasswordLen, 128);
  assert.equal(client.limits.maxReasonLen, 96);
  assert.equal(client.limits.maxTokenLen, 4096);
  assert.equal(client.limits.maxApiKeyLen, 256);
  assert.equal(client.limits.maxPolicyRules, 64);
  await client.close();
});

test('join: every option on the wire, in wire order', async () => {
  const { server, client } = await connected();
  answerJoin(server);
  await client.join('class-7', {
    create: true,
    maxMembers: 30,
    password: 'pw',
    token: 'a.b.c',
    policy: { rules: [{ action: 'set_state', scope: 'cursor/', roles: ['host', 'editor', 'viewer'] }, { action: 'kick', roles: ['leader'] }] },
    template: 'classroom',
  });
  assert.deepEqual(server.got('Join')[0].options, [
    'CreateIfMissing',
    { MaxMembers: 30 },
    { Password: 'pw' },
    { Token: 'a.b.c' },
    {
      Policy: {
        rules: [
          { action: 'SetState', scope: 'cursor/', roles: ['Host', 'Editor', 'Viewer'] },
          { action: 'Kick', scope: '', roles: ['Host'] },
        ],
      },
    },
    { Template: 'classroom' },
  ]);
  // create: false, and the older createIfMissing name for it; a policy as a bare list of rules.
  answerJoin(server, { room: 2 });
  await client.join('other', { create: false, password: 'pw', policy: [{ action: 'SendCommands', scope: 'chat', roles: ['Viewer'] }] });
  assert.deepEqual(server.got('Join')[1].options, [{ Password: 'pw' }, { Policy: { rules: [{ action: 'SendCommands', scope: 'chat', roles: ['Viewer'] }] } }]);
  answerJoin(server, { room: 3 });
  await client.join('third', { createIfMissing: false, token: 'a.b.c' });
  assert.deepEqual(server.got('Join')[2].options, [{ Token: 'a.b.c' }]);
  await client.close();
});

test('join: bad options fail locally and are not sent', async () => {
  const { server, client } = await connected({ limits: { max_password_len: 4 } });
  answerJoin(server);
  const cases = [
    [{ create: true, createIfMissing: false }, 'invalid_argument', /disagree/],
    [{ policy: { rules: [{ action: 'kick', scope: 'x', roles: ['host'] }] } }, 'invalid_argument', /kick takes no scope/],
    [{ policy: { rules: [{ action: 'fly', roles: [] }] } }, 'invalid_argument', /unknown action/],
    [{ policy: { rules: [{ action: 'kick', roles: ['admin'] }] } }, 'invalid_argument', /unknown role/],
    [{ policy: 'strict' }, 'invalid_argument', /policy/],
    [{ password: 'hunter2' }, 'limit_exceeded', /password is 7/],
    [{ token: 'x'.repeat(4097) }, 'limit_exceeded', /token/],
    [{ template: 't'.repeat(129) }, 'limit_exceeded', /template/],
    [{ policy: { rules: Array.from({ length: 65 }, () => ({ action: 'kick', roles: [] })) } }, 'limit_exceeded', /policy rules is 65/],
    [{ policy: { rules: [{ action: 'set_state', scope: 's'.repeat(129), roles: [] }] } }, 'limit_exceeded', /policy scope/],
    [{ password: 7 }, 'invalid_argument', /string/],
  ];
  for (const [options, name, message] of cases) {
    const e = await rejection(client.join('lobby', options));
    assert.equal(e.name, name, JSON.stringify(options).slice(0, 80));
    assert.match(e.message, message);
  }
  const limit = await rejection(client.join('lobby', { password: 'hunter2' }));
  assert.deepEqual(limit.detail, { limit: 4, actual: 7 });
  assert.equal(server.got('Join').length, 0);
  await client.close();
});

test("an invite code: join '' with create, and the room's id is the one the server made", async () => {
  const { server, client } = await connected();
  answerJoin(server, { room_id: 'K7Q2-MX9P', role: 'Host', members: [info(1, 'ada', 'Host')], you: 1 });
  const room = await client.join('', { create: true, name: 'ada' });
  assert.equal(server.got('Join')[0].room_id, '');
  assert.deepEqual(server.got('Join')[0].options, ['CreateIfMissing']);
  assert.equal(room.id, 'K7Q2-MX9P');
  assert.equal(room.role, 'host');
  await client.close();
});

test("room.policy and room.can: the snapshot's rules for the current role, false once not joined", async () => {
  const policy = { rules: [{ action: 'SetState', scope: 'cursor/', roles: ['Host', 'Editor', 'Viewer'] }] };
  const { server, client, room } = await joined({ role: 'Viewer', policy });
  assert.deepEqual(JSON.parse(JSON.stringify(room.policy)), { rules: [{ action: 'set_state', scope: 'cursor/', roles: ['host', 'editor', 'viewer'] }] });
  assert.equal(room.can('set_state', 'cursor/2'), true);
  assert.equal(room.can('set_state', 'title'), false);
  assert.equal(room.can('SetState', 'cursor/'), true, 'wire names work too');
  assert.equal(room.can('send_ticks'), true);
  assert.equal(room.can('kick'), false);
  assert.throws(() => room.can('fly'), (e) => e.name === 'invalid_argument');
  // Promoted: the same room, new answers.
  server.send({ RoleChanged: { room: 1, seq: 3n, member: 2, role: 'Host', by: 1 } });
  await until(() => room.role === 'host', 2000, 'the role change');
  assert.equal(room.can('kick'), true);
  assert.equal(room.can('set_state', 'title'), true);
  server.handlers.Leave = (m) => server.send({ Left: { request_id: m.request_id, room: m.room } });
  await room.leave();
  assert.equal(room.can('send_ticks'), false);
  await client.close();
});

test('kick: Kick on the wire, memberKicked applied before the Ack resolves with its seq', async () => {
  const { server, client, room } = await joined({ role: 'Host' });
  const seen = record(room, ['memberKicked', 'kicked', 'memberLeft']);
  server.handlers.Kick = (m) => {
    server.send({ MemberKicked: { room: 1, seq: 3n, member: m.member, by: 2, reason: m.reason, ban_ms: 300000n } });
    server.send({ Ack: { request_id: m.request_id, room: 1, seq: 3n } });
  };
  const seq = await room.kick(3, 'spam');
  assert.equal(seq, 3);
  assert.deepEqual(server.got('Kick')[0], { request_id: 2, room: 1, member: 3, reason: 'spam' });
  assert.equal(seen.length, 1, 'only memberKicked: nobody left, this client was not kicked');
  const [name, event, view] = seen[0];
  assert.equal(name, 'memberKicked');
  assert.deepEqual({ ...event, member: event.member.name }, { member: 'cy', by: 2, reason: 'spam', banMs: 300000, seq: 3 });
  assert.deepEqual(view, { joined: true, lastSeq: 3, role: 'host' });
  assert.deepEqual(room.members.map((m) => m.id), [1, 2]);
  // The reason defaults to ''.
  server.handlers.Kick = (m) => server.send({ Ack: { request_id: m.request_id, room: 1, seq: 3n } });
  await room.kick(9);
  assert.equal(server.got('Kick')[1].reason, '');
  await client.close();
});

test('kick refused: forbidden with the request id, nothing changes; a reason over the limit is not sent', async () => {
  const { server, client, room } = await joined();
  server.handlers.Kick = (m) =>
    server.send({ Error: { request_id: m.request_id, code: 300, message: 'editors may not kick', detail: 'None' } });
  const e = await rejection(room.kick(1));
  assert.equal(e.code, ErrorCode.Forbidden);
  assert.equal(e.name, 'forbidden');
  assert.equal(e.requestId, server.got('Kick')[0].request_id);
  assert.equal(room.members.length, 3);
  assert.equal(room.lastSeq, 2);
  const long = await rejection(room.kick(1, 'r'.repeat(97)));
  assert.equal(long.name, 'limit_exceeded');
  assert.deepEqual(long.detail, { limit: 96, actual: 97 });
  const badId = await rejection(room.kick(-1));
  assert.equal(badId.name, 'invalid_argument');
  assert.equal(server.got('Kick').length, 1);
  await client.close();
});

test("setRole: SetRole on the wire, roleChanged applied before the Ack; this client's own role follows", async () => {
  const { server, client, room } = await joined({ role: 'Host' });
  const seen = record(room, ['roleChanged']);
  let seq = 2;
  server.handlers.SetRole = (m) => {
    seq++;
    server.send({ RoleChanged: { room: 1, seq: BigInt(seq), member: m.member, role: m.role, by: 2 } });
    server.send({ Ack: { request_id: m.request_id, room: 1, seq: BigInt(seq) } });
  };
  assert.equal(await room.setRole(3, 'editor'), 3);
  assert.deepEqual(server.got('SetRole')[0], { request_id: 2, room: 1, member: 3, role: 'Editor' });
  assert.equal(room.member(3).role, 'editor');
  const [, event, view] = seen[0];
  assert.deepEqual({ ...event, member: event.member.id }, { member: 3, role: 'editor', previousRole: 'viewer', by: 2, seq: 3 });
  assert.equal(view.lastSeq, 3);
  // Aliases and wire names are accepted; the wire always carries the Role.
  await room.setRole(1, 'follower');
  await room.setRole(1, 'Editor');
  assert.deepEqual(server.got('SetRole').slice(1).map((m) => m.role), ['Viewer', 'Editor']);
  // A self-demotion: room.role and room.can follow.
  assert.equal(room.can('kick'), true);
  assert.equal(await room.setRole(2, 'viewer'), 6);
  assert.equal(room.role, 'viewer');
  assert.equal(room.can('kick'), false);
  assert.equal(room.can('set_state', 'k'), false);
  assert.deepEqual(seen.map(([, e]) => [e.member.id, e.role]), [
    [3, 'editor'],
    [1, 'viewer'],
    [1, 'editor'],
    [2, 'viewer'],
  ]);
  const bad = await rejection(room.setRole(3, 'admin'));
  assert.equal(bad.name, 'invalid_argument');
  assert.equal(server.got('SetRole').length, 4);
  await client.close();
});

test('setPassword: a string sets it, null removes it; the Ack gives the last seq; rate limited with a retry time', async () => {
  const { server, client, room } = await joined({ role: 'Host' });
  server.handlers.SetPassword = (m) => server.send({ Ack: { request_id: m.request_id, room: 1, seq: 2n } });
  assert.equal(await room.setPassword('hunter2'), 2);
  assert.equal(await room.setPassword(null), 2);
  assert.equal(await room.setPassword(), 2);
  assert.deepEqual(server.got('SetPassword').map((m) => m.password), ['hunter2', null, null]);
  assert.equal(room.lastSeq, 2, 'an Ack is no event');
  assert.equal((await rejection(room.setPassword(1234))).name, 'invalid_argument');
  assert.equal((await rejection(room.setPassword('p'.repeat(129)))).name, 'limit_exceeded');
  server.handlers.SetPassword = (m) =>
    server.send({ Error: { request_id: m.request_id, code: 401, message: 'messages over 45/s', detail: { RetryAfter: { retry_after_ms: 50n } } } });
  const e = await rejection(room.setPassword('again'));
  assert.equal(e.code, ErrorCode.RateLimited);
  assert.equal(e.name, 'rate_limited');
  assert.equal(e.retryAfterMs, 50);
  assert.deepEqual(e.detail, { retryAfterMs: 50 });
  // Waiting as told, then retrying, works.
  server.handlers.SetPassword = (m) => server.send({ Ack: { request_id: m.request_id, room: 1, seq: 2n } });
  await new Promise((resolve) => setTimeout(resolve, e.retryAfterMs));
  assert.equal(await room.setPassword('again'), 2);
  await client.close();
});

test('close: CloseRoom on the wire; closed applied before the Ack; the room ends, no Leave is sent', async () => {
  const { server, client, room } = await joined({ role: 'Host' });
  const seen = record(room, ['closed', 'memberLeft', 'memberKicked']);
  const commands = room.commands();
  server.handlers.SetState = () => {}; // never answered
  const pending = rejection(room.setState('k', 'v'));
  server.handlers.CloseRoom = (m) => {
    server.send({ RoomClosed: { room: 1, seq: 3n, by: 2, reason: m.reason } });
    server.send({ Ack: { request_id: m.request_id, room: 1, seq: 3n } });
  };
  assert.equal(await room.close('done'), 3);
  assert.deepEqual(server.got('CloseRoom')[0], { request_id: 3, room: 1, reason: 'done' });
  assert.deepEqual(seen, [['closed', { by: 2, reason: 'done', seq: 3 }, { joined: false, lastSeq: 3, role: 'host' }]]);
  const e = await pending;
  assert.equal(e.code, ErrorCode.NotJoined);
  assert.equal(e.requestId, server.got('SetState')[0].request_id);
  assert.match(e.message, /closed by member 2: done/);
  assert.equal(room.joined, false);
  assert.deepEqual(room.members, []);
  assert.deepEqual(await commands.next(), { value: undefined, done: true });
  assert.equal((await rejection(room.sendCommand('chat', 'hi'))).code, ErrorCode.NotJoined);
  assert.throws(() => room.sendTick(Uint8Array.of(1)), (err) => err.code === ErrorCode.NotJoined);
  assert.equal((await rejection(room.close())).code, ErrorCode.NotJoined);
  await room.leave();
  assert.equal(server.got('Leave').length, 0);
  // Later events for the slot are ignored; the connection is still usable.
  server.send({ StateChanged: { room: 1, seq: 4n, key: 'k', value: null, version: 1n, author: 1 } });
  answerJoin(server, { room: 2 });
  const next = await client.join('next');
  assert.equal(next.joined, true);
  assert.equal(room.lastSeq, 3);
  await client.close();
});

test('the room closed by another member: closed for this client too, waiting requests fail', async () => {
  const { server, client, room } = await joined();
  const closed = new Promise((resolve) => room.on('closed', resolve));
  server.handlers.Command = () => {};
  const pending = rejection(room.sendCommand('chat', 'hi'));
  await until(() => server.got('Command').length === 1);
  server.send({ RoomClosed: { room: 1, seq: 3n, by: 1, reason: '' } });
  assert.deepEqual(await closed, { by: 1, reason: '', seq: 3 });
  assert.equal((await pending).name, 'not_joined');
  assert.equal(room.joined, false);
  assert.equal(client.closeReason, null, 'the connection stays open');
  await client.close();
});

test('being kicked: memberKicked then kicked, the room ends, waiting requests fail, a rejoin is banned', async () => {
  const { server, client, room } = await joined();
  const seen = record(room, ['memberKicked', 'kicked', 'closed', 'stateChanged']);
  const ticks = room.ticks();
  server.handlers.SetState = () => {};
  const pending = rejection(room.setState('k', 'v'));
  await until(() => server.got('SetState').length === 1);
  server.send({ MemberKicked: { room: 1, seq: 3n, member: 2, by: 1, reason: 'spam', ban_ms: 300000n } });
  server.send({ StateChanged: { room: 1, seq: 4n, key: 'k', value: null, version: 2n, author: 1 } }); // after the end: ignored
  const e = await pending;
  assert.equal(e.code, ErrorCode.NotJoined);
  assert.equal(e.name, 'not_joined');
  assert.equal(e.requestId, server.got('SetState')[0].request_id);
  assert.match(e.message, /kicked by member 1: spam/);
  await until(() => seen.length === 2);
  await new Promise((resolve) => setTimeout(resolve, 10));
  assert.deepEqual(
    seen.map(([name, event, view]) => [name, name === 'memberKicked' ? { ...event, member: event.member.id } : event, view.joined]),
    [
      ['memberKicked', { member: 2, by: 1, reason: 'spam', banMs: 300000, seq: 3 }, false],
      ['kicked', { by: 1, reason: 'spam', banMs: 300000, seq: 3 }, false],
    ],
  );
  assert.equal(room.joined, false);
  assert.equal(room.lastSeq, 3);
  assert.deepEqual(room.members.map((m) => m.id), [1, 3]);
  assert.deepEqual(await ticks.next(), { value: undefined, done: true });
  await room.leave();
  assert.equal(server.got('Leave').length, 0);
  server.handlers.Join = (m) =>
    server.send({ Error: { request_id: m.request_id, code: 208, message: 'banned from lobby', detail: { RetryAfter: { retry_after_ms: 299000n } } } });
  const banned = await rejection(client.join('lobby'));
  assert.equal(banned.code, ErrorCode.Banned);
  assert.equal(banned.name, 'banned');
  assert.equal(banned.retryAfterMs, 299000);
  await client.close();
});

test('another member kicked while this client waits on the room: nothing fails', async () => {
  const { server, client, room } = await joined();
  server.handlers.Command = (m) => {
    server.send({ MemberKicked: { room: 1, seq: 3n, member: 3, by: 1, reason: '', ban_ms: 0n } });
    server.send({ CommandEvent: { room: 1, seq: 4n, author: 2, kind: m.kind, payload: m.payload, idempotency_key: null } });
    server.send({ CommandAck: { request_id: m.request_id, room: 1, seq: 4n, duplicate: false } });
  };
  assert.deepEqual(await room.sendCommand('chat', 'hi'), { seq: 4, duplicate: false });
  assert.equal(room.joined, true);
  assert.equal(room.member(3), undefined);
  await client.close();
});

test('new error codes have their names; a token that expires closes the session with its reason', async () => {
  for (const [key, code, name] of [
    ['Banned', 208, 'banned'],
    ['Unauthorized', 303, 'unauthorized'],
    ['InvalidToken', 304, 'invalid_token'],
    ['TokenExpired', 305, 'token_expired'],
    ['WrongPassword', 306, 'wrong_password'],
    ['PasswordRequired', 307, 'password_required'],
    ['RateLimited', 401, 'rate_limited'],
    ['Blocked', 402, 'blocked'],
    ['TooManyConnections', 403, 'too_many_connections'],
  ]) {
    assert.equal(ErrorCode[key], code);
    const e = ChorusError.fromFrame({ request_id: 5, code, message: 'x', detail: 'None' });
    assert.equal(e.name, name);
    assert.equal(e.retryAfterMs, null);
  }
  const { server, client } = await connected();
  for (const [code, name] of [
    [306, 'wrong_password'],
    [307, 'password_required'],
    [304, 'invalid_token'],
  ]) {
    server.handlers.Join = (m) => server.send({ Error: { request_id: m.request_id, code, message: name, detail: 'None' } });
    assert.equal((await rejection(client.join('locked', { password: 'guess' }))).name, name);
  }
  server.handlers.Join = (m) =>
    server.send({ Error: { request_id: m.request_id, code: 402, message: 'too many failed joins', detail: { RetryAfter: { retry_after_ms: 60000n } } } });
  assert.equal((await rejection(client.join('locked', { password: 'guess' }))).retryAfterMs, 60000);
  const reason = new Promise((resolve) => client.on('close', resolve));
  server.send({ Error: { request_id: null, code: 305, message: 'the join token expired', detail: 'None' } });
  server.close(4305, 'token expired');
  assert.deepEqual(await reason, { code: 305, name: 'token_expired', message: 'the join token expired', detail: null });
});

test('an Ack answering a request that expects another reply is a protocol violation', async () => {
  const { server, client, room } = await joined();
  server.handlers.SetState = (m) => server.send({ Ack: { request_id: m.request_id, room: 1, seq: 2n } });
  const e = await rejection(room.setState('k', 'v'));
  assert.equal(e.code, ErrorCode.ProtocolViolation);
  await client.close();
});
