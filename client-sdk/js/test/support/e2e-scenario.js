// The end-to-end scenarios of test/e2e-websocket.test.js, run in a child node
// that has a global WebSocket: `node --experimental-websocket
// e2e-scenario.js <port> [access <api key> | sync]`. Without a port argument (as when
// the test runner loads every file under test/) it does nothing.

import assert from 'node:assert/strict';
import { ChorusError, ErrorCode, PROTOCOL_VERSION, connect } from '../../chorus.js';

const wait = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function rejects(promise, name) {
  try {
    await promise;
  } catch (e) {
    assert.ok(e instanceof ChorusError, `${e}`);
    assert.equal(e.name, name, e.message);
    return e;
  }
  assert.fail(`expected ${name}`);
}

/**
 * Why the server refused the first connection because it is older than this
 * SDK's protocol, or null: it says VersionMismatch, or (1.x servers) cannot
 * decode this SDK's larger hello at all.
 */
function staleServer(e) {
  if (e instanceof ChorusError && e.code === ErrorCode.VersionMismatch) {
    const { server, client } = e.detail ?? {};
    return `the server binary speaks protocol ${server?.major}.${server?.minor}, this SDK ${client?.major}.${client?.minor}: rebuild it`;
  }
  if (e instanceof ChorusError && e.code === ErrorCode.Malformed) {
    return `the server binary cannot read a protocol ${PROTOCOL_VERSION.major}.${PROTOCOL_VERSION.minor} hello (${e.message}); it predates this protocol: rebuild it`;
  }
  return null;
}

export async function run(port) {
  const ws = `ws://127.0.0.1:${port}/chorus`;
  const steps = [];

  // Both URL forms: ws:// directly, and https:// with no WebTransport here (node) and an explicit WebSocket URL.
  let a;
  try {
    a = await connect(ws, { clientName: 'e2e-a' });
  } catch (e) {
    const stale = staleServer(e);
    if (stale) return { skip: stale };
    throw e;
  }
  const b = await connect(`https://127.0.0.1:${port}/chorus`, { websocketUrl: ws, clientName: 'e2e-b' });
  assert.equal(a.transport, 'websocket');
  assert.equal(b.transport, 'websocket');
  assert.equal(typeof a.sessionId, 'bigint');
  assert.notEqual(a.sessionId, b.sessionId);
  assert.equal(a.serverHello.max_datagram_size, 0, 'WebSocket: no datagrams');
  assert.equal(a.maxTickPayload, a.limits.maxTickPayloadBytes);
  assert.equal(a.clock.samples, 8);
  assert.ok(Math.abs(a.clock.offsetUs) < 100_000, `offset ${a.clock.offsetUs} µs on one machine`);
  assert.ok(Math.abs(a.serverTime() - Date.now() * 1000) < 200_000);
  steps.push('connected');

  const roomId = `e2e-${process.pid}`;
  const ra = await a.join(roomId, { name: 'ada', meta: '{"color":"#e33"}' });
  const bJoined = new Promise((resolve) => ra.on('memberJoined', resolve));
  const rb = await b.join(roomId, { name: 'bo' });
  assert.equal(ra.role, 'host');
  assert.equal(rb.role, 'editor');
  assert.deepEqual(rb.members.map((m) => m.name), ['ada', 'bo']);
  assert.equal(new TextDecoder().decode(rb.members[0].meta), '{"color":"#e33"}');
  assert.equal((await bJoined).name, 'bo');
  assert.equal(ra.members.length, 2);
  steps.push('joined');

  // State: the writer's replica is current when its ack resolves; the other sees the event.
  const seenByB = new Promise((resolve) => rb.on('stateChanged', resolve));
  const ack = await ra.setState('title', 'Hello');
  assert.equal(ra.getState('title').text, 'Hello');
  assert.equal(ra.getState('title').version, ack.version);
  const event = await seenByB;
  assert.deepEqual([event.key, event.text, event.version, event.seq, event.author], ['title', 'Hello', ack.version, ack.seq, ra.me]);
  assert.equal(rb.getState('title').text, 'Hello');
  const conflict = await rejects(rb.setState('title', 'x', { ifVersion: ack.version + 5 }), 'conflict');
  assert.equal(conflict.code, ErrorCode.Conflict);
  assert.deepEqual(conflict.detail, { currentVersion: ack.version });
  const quiet = await ra.deleteState('absent');
  assert.equal(quiet.version, 0);
  steps.push('state');

  // A value far over 16 KiB travels chunked both ways.
  const big = Uint8Array.from({ length: 300_000 }, (_, i) => (i * 31) & 0xff);
  const bigSeen = new Promise((resolve) => rb.on('stateChanged', (e) => e.key === 'big' && resolve(e)));
  await ra.setState('big', big);
  assert.deepEqual((await bigSeen).value, big);
  assert.deepEqual(rb.getState('big').value, big);
  steps.push('big state');

  // Commands, idempotency.
  const commands = ra.commands();
  const first = await rb.sendCommand('chat', 'hi all', { idempotencyKey: 'msg-1' });
  const again = await rb.sendCommand('chat', 'ignored', { idempotencyKey: 'msg-1' });
  assert.equal(first.duplicate, false);
  assert.deepEqual(again, { seq: first.seq, duplicate: true });
  const { value: cmd } = await commands.next();
  assert.deepEqual([cmd.kind, cmd.text, cmd.author, cmd.idempotencyKey, cmd.seq], ['chat', 'hi all', rb.me, 'msg-1', first.seq]);
  await commands.return();
  steps.push('commands');

  // Ticks both ways; the server limit applies on WebSocket.
  const ticksAtA = [];
  ra.on('tick', (t) => ticksAtA.push(t));
  const ticksAtB = rb.ticks();
  for (let i = 0; i < 10; i++) rb.sendTick(Uint8Array.of(i));
  ra.sendTick(new Uint8Array(a.maxTickPayload).fill(7));
  const { value: tickAtB } = await ticksAtB.next();
  assert.equal(tickAtB.sender, ra.me);
  assert.equal(tickAtB.payload.length, a.maxTickPayload);
  const tooBig = (() => {
    try {
      ra.sendTick(new Uint8Array(a.maxTickPayload + 1));
    } catch (e) {
      return e;
    }
  })();
  assert.equal(tooBig?.code, ErrorCode.LimitExceeded);
  // The server keeps only the newest undelivered tick per sender for a busy
  // receiver (§1.3), so a burst may arrive thinned out, but the newest arrives.
  for (let i = 0; i < 200 && ticksAtA.at(-1)?.seq !== 9; i++) await wait(10);
  assert.equal(ticksAtA.at(-1)?.seq, 9, 'the newest tick arrives');
  assert.ok(ticksAtA.every((t) => t.sender === rb.me));
  assert.deepEqual(ticksAtA.map((t) => t.seq), [...ticksAtA.map((t) => t.seq)].sort((x, y) => x - y), 'in order on one socket');
  assert.equal(b.ticksDropped, 0, 'the sender sent every tick');
  steps.push(`ticks (${ticksAtA.length} of 10 delivered, newest last)`);

  // Refusals.
  assert.equal((await rejects(a.join(`${roomId}-missing`, { createIfMissing: false }), 'room_not_found')).code, 200);
  assert.equal((await rejects(a.join(roomId), 'already_joined')).code, 204);
  assert.equal((await rejects(a.join('bad\nid'), 'invalid_room_id')).code, 207);
  const long = await rejects(a.join('r'.repeat(129)), 'limit_exceeded');
  assert.deepEqual(long.detail, { limit: 128, actual: 129 }, 'checked locally against the announced limit');
  steps.push('refusals');

  // Leave and disconnect show up with their reasons.
  const bLeft = new Promise((resolve) => ra.on('memberLeft', resolve));
  await rb.leave();
  assert.equal(rb.joined, false);
  assert.equal((await bLeft).reason, 'left');
  await b.join(roomId, { name: 'bo again' });
  const bGone = new Promise((resolve) => ra.on('memberLeft', (e) => e.member.name === 'bo again' && resolve(e)));
  const bClosed = new Promise((resolve) => b.on('close', resolve));
  await b.close();
  assert.equal((await bClosed).name, 'closed');
  // close() sends a Leave for each room first: the others see a leave, not a member reconnecting.
  assert.equal((await bGone).reason, 'left');
  assert.equal((await rejects(b.join('x'), 'closed')).code, null);
  steps.push('leave and close');

  await a.close();
  return steps;
}

/**
 * Access control against a server started with `--api-key <apiKey>`: the key
 * in the hello, an invite code with a password and a policy, roles and
 * can(), kick and the ban, setPassword, close, and a rate limit's retry time.
 */
export async function runAccess(port, apiKey) {
  const ws = `ws://127.0.0.1:${port}/chorus`;
  const steps = [];

  let noKey;
  try {
    await (await connect(ws, { clientName: 'e2e-nokey' })).close();
    assert.fail('the server admitted a client without its API key');
  } catch (e) {
    const stale = staleServer(e);
    if (stale) return { skip: stale };
    noKey = e;
  }
  assert.equal(noKey.name, 'unauthorized', noKey.message);
  assert.equal((await rejects(connect(ws, { apiKey: `${apiKey}-wrong` }), 'unauthorized')).code, ErrorCode.Unauthorized);
  const a = await connect(ws, { apiKey, clientName: 'e2e-a' });
  const b = await connect(ws, { apiKey, clientName: 'e2e-b' });
  const c = await connect(ws, { apiKey, clientName: 'e2e-c' });
  for (const budget of Object.values(a.rateLimits)) assert.ok(budget.perSecond > 0 && budget.burst >= budget.perSecond);
  steps.push('api key');

  // An invite code: the server names the room; a password and a policy come with it.
  const policy = { rules: [{ action: 'set_state', scope: 'cursor/', roles: ['host', 'editor', 'viewer'] }] };
  const ra = await a.join('', { create: true, name: 'ada', password: 'pw', policy });
  assert.ok(ra.id.length > 0, 'the server generated a room id');
  assert.equal(ra.role, 'host');
  assert.deepEqual(JSON.parse(JSON.stringify(ra.policy)), { rules: [{ action: 'set_state', scope: 'cursor/', roles: ['host', 'editor', 'viewer'] }] });
  await rejects(b.join(ra.id, { name: 'bo', create: false }), 'password_required');
  await rejects(b.join(ra.id, { name: 'bo', create: false, password: 'nope' }), 'wrong_password');
  const rb = await b.join(ra.id, { name: 'bo', create: false, password: 'pw' });
  const rc = await c.join(ra.id, { name: 'cy', create: false, password: 'pw' });
  assert.equal(rb.role, 'editor');
  steps.push(`invite code ${ra.id}, password`);

  // Roles: the replica and can() follow a role change, and can() predicts the server.
  const seenByB = new Promise((resolve) => rb.on('roleChanged', resolve));
  const roleSeq = await ra.setRole(rb.me, 'viewer');
  const change = await seenByB;
  assert.deepEqual([change.member.id, change.role, change.previousRole, change.by, change.seq], [rb.me, 'viewer', 'editor', ra.me, roleSeq]);
  assert.equal(rb.role, 'viewer');
  assert.equal(ra.member(rb.me).role, 'viewer');
  assert.equal(rb.can('set_state', 'title'), false);
  await rejects(rb.setState('title', 'x'), 'forbidden');
  assert.equal(rb.can('set_state', 'cursor/2'), true);
  await rb.setState('cursor/2', 'x');
  assert.equal(rb.can('kick'), false);
  await rejects(rb.kick(rc.me), 'forbidden');
  steps.push('roles and policy');

  // The password goes; it makes no event.
  const last = ra.lastSeq;
  assert.equal(await ra.setPassword(null), last);

  // Kick: everyone sees it; the kicked client's room ends and a rejoin is banned.
  const kicked = new Promise((resolve) => rb.on('kicked', resolve));
  const seenByC = new Promise((resolve) => rc.on('memberKicked', resolve));
  const kickSeq = await ra.kick(rb.me, 'bye');
  const k = await kicked;
  assert.deepEqual([k.by, k.reason, k.seq], [ra.me, 'bye', kickSeq]);
  assert.ok(k.banMs > 0);
  assert.equal(rb.joined, false);
  assert.equal((await seenByC).member.name, 'bo');
  assert.equal(ra.member(rb.me), undefined);
  const ban = await rejects(b.join(ra.id, { name: 'bo', create: false }), 'banned');
  assert.ok(ban.retryAfterMs > 0 && ban.retryAfterMs <= k.banMs, `retry after ${ban.retryAfterMs}`);
  steps.push('kick and ban');

  // Close: everyone's room ends.
  const closedForC = new Promise((resolve) => rc.on('closed', resolve));
  const closeSeq = await ra.close('done');
  assert.deepEqual(await closedForC, { by: ra.me, reason: 'done', seq: closeSeq });
  assert.equal(ra.joined, false);
  assert.equal(rc.joined, false);
  await rejects(rc.setState('cursor/3', 'x'), 'not_joined');
  steps.push('close');

  // A rate budget spent: refused with the time to wait, then fine after it.
  const rd = await c.join(`e2e-rate-${process.pid}`, { name: 'cy' });
  // One write after another, stopping at the first refusal: a single violation,
  // far from the repeated ones that would close the session.
  let limited = null;
  const budget = c.rateLimits.stateUpdates;
  for (let i = 0; i < budget.burst + 10 * budget.perSecond && !limited; i++) {
    limited = await rd.setState('k', String(i)).then(
      () => null,
      (e) => e,
    );
  }
  assert.ok(limited, 'no write was rate limited');
  assert.equal(limited.name, 'rate_limited', limited.message);
  assert.ok(limited.retryAfterMs > 0, `retry after ${limited.retryAfterMs}`);
  await wait(limited.retryAfterMs + 50);
  await rd.setState('k', 'after the wait');
  steps.push(`rate limited (retry after ${limited.retryAfterMs} ms)`);

  await Promise.all([a.close(), b.close(), c.close()]);
  return steps;
}

/**
 * A WebSocket whose connection this test can drop: `drop()` closes the real
 * socket (the server sees the transport end, which is a drop it may resume)
 * while the SDK sees a 1006 close, as after a network failure.
 */
class DroppableWebSocket extends EventTarget {
  static last = null;

  constructor(url, protocols) {
    super();
    this.ws = new WebSocket(url, protocols);
    this.dropped = false;
    DroppableWebSocket.last = this;
    for (const type of ['open', 'message', 'close', 'error']) {
      this.ws.addEventListener(type, (e) => {
        if (this.dropped) return;
        this.dispatchEvent(Object.assign(new Event(type), { data: e.data, code: e.code, reason: e.reason }));
      });
    }
  }

  get readyState() {
    return this.dropped ? 3 : this.ws.readyState;
  }

  get bufferedAmount() {
    return this.ws.bufferedAmount;
  }

  get binaryType() {
    return this.ws.binaryType;
  }

  set binaryType(v) {
    this.ws.binaryType = v;
  }

  send(data) {
    this.ws.send(data);
  }

  close(code, reason) {
    this.ws.close(code, reason);
  }

  drop() {
    this.dropped = true;
    this.ws.close();
    this.dispatchEvent(Object.assign(new Event('close'), { code: 1006, reason: '' }));
  }
}

/** Waits for `event` on `target` matching `pred`. */
function next(target, event, pred = () => true, ms = 5000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${event} within ${ms} ms`)), ms);
    const off = target.on(event, (e) => {
      if (!pred(e)) return;
      clearTimeout(timer);
      off();
      resolve(e);
    });
  });
}

/** A tiny PNG-typed pack: the PNG magic, then bytes. */
function pngBytes(n) {
  return Uint8Array.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, ...Array.from({ length: n }, (_, i) => (i * 13) & 0xff)]);
}

/**
 * The sync semantics against the real server: presence, a scheduled
 * timeline both members follow, direct and broadcast messages, a snapshot on
 * request, ICE servers, a pack uploaded and fetched (WebSocket pack lane), a
 * dropped connection resumed with the missed events replayed, and Leave on
 * close. Skips when the binary predates the sync semantics.
 */
export async function runSync(port) {
  const ws = `ws://127.0.0.1:${port}/chorus`;
  const steps = [];
  let a;
  try {
    a = await connect(ws, { clientName: 'e2e-sync-a', WebSocket: DroppableWebSocket, reconnect: { initialDelayMs: 50 } });
  } catch (e) {
    const stale = staleServer(e);
    if (stale) return { skip: stale };
    throw e;
  }
  const dropA = DroppableWebSocket.last;
  if (!a.serverHello.resume_token) {
    await a.close();
    return { skip: 'the server binary offers no resume token (resuming off, or it predates resume): rebuild it' };
  }
  const b = await connect(ws, { clientName: 'e2e-sync-b' });
  const roomId = `e2e-sync-${process.pid}`;
  const ra = await a.join(roomId, { name: 'ada' });
  const rb = await b.join(roomId, { name: 'bo' });
  assert.deepEqual(rb.members.map((m) => m.presence), ['online', 'online']);
  steps.push('presence');

  // A timeline scheduled 300 ms ahead: both switch at its anchor time and agree on the position.
  const at = a.serverTime() + 300_000;
  const changesAtB = [];
  const bothSeen = new Promise((resolve) => {
    const off = rb.on('timelineChanged', (e) => {
      changesAtB.push(e.seq);
      if (changesAtB.length === 2) {
        off();
        resolve();
      }
    });
  });
  const seq = await ra.seek('film', 90_000_000, {});
  const playSeq = await ra.play('film', { at, expectedSeq: seq });
  await bothSeen;
  assert.deepEqual(changesAtB, [seq, playSeq]);
  assert.equal(rb.timeline('film').playing, false, 'paused until the anchor time');
  await wait(400);
  const [pa, pb] = [ra.timelinePosition('film'), rb.timelinePosition('film')];
  assert.ok(rb.timeline('film').playing);
  assert.ok(Math.abs(pa - pb) < 20_000, `positions ${pa} and ${pb} agree within 20 ms`);
  assert.ok(pa > 90_000_000 && pa < 90_000_000 + 1_000_000, `position ${pa}`);
  const conflict = await rejects(rb.pause('film', { expectedSeq: seq }), 'conflict');
  assert.equal(conflict.currentSeq, playSeq);
  steps.push(`timeline (members ${Math.abs(pa - pb)} µs apart)`);

  // Direct and broadcast messages.
  const direct = next(rb, 'direct');
  await ra.sendDirect(rb.me, 'rtc-offer', 'v=0');
  assert.deepEqual([(await direct).from, (await direct).text], [ra.me, 'v=0']);
  const broadcast = next(ra, 'broadcast');
  const others = next(rb, 'broadcast');
  await ra.broadcast('everyone', 'note', 'hello');
  assert.equal((await broadcast).text, 'hello');
  assert.equal((await others).from, ra.me);
  steps.push('direct and broadcast');

  // A snapshot on request, and ICE servers in RTCConfiguration shape.
  assert.equal(await rb.requestSnapshot(), rb);
  assert.equal(rb.timeline('film').seq, playSeq);
  const ice = await ra.iceServers();
  assert.ok(Array.isArray(ice.iceServers) && typeof ice.expiresAt === 'number');
  steps.push(`snapshot, ${ice.iceServers.length} ICE servers`);

  // A pack: uploaded by a, fetched by b.
  const content = pngBytes(40_000);
  const available = next(rb, 'packAvailable');
  const pack = await ra.uploadPack('e2e.png', 'image/png', content);
  assert.equal((await available).pack.hash, pack.hash);
  assert.deepEqual(await rb.fetchPack(pack.hash), content);
  assert.deepEqual(await ra.uploadPack('again.png', 'image/png', content), pack, 'the room has it already');
  steps.push('pack');

  // A dropped connection: b sees a reconnecting; a comes back with what it missed.
  const reconnectingSeen = next(rb, 'presenceChanged', (e) => e.member.id === ra.me && e.presence === 'reconnecting');
  const resumed = next(a, 'resumed');
  const onlineSeen = next(rb, 'presenceChanged', (e) => e.member.id === ra.me && e.presence === 'online', 10_000);
  dropA.drop();
  await reconnectingSeen;
  const write = await rb.setState('while-away', 'missed');
  const r = await resumed;
  assert.equal(r.sessionResumed, true);
  assert.equal(r.rooms[0].outcome, 'replayed');
  assert.ok(r.rooms[0].replayed >= 1);
  assert.equal(ra.getState('while-away').text, 'missed');
  assert.ok(ra.lastSeq >= write.seq);
  await onlineSeen;
  assert.equal(rb.member(ra.me).presence, 'online');
  assert.equal(ra.member(ra.me).presence, 'online', 'the resumed client sees itself online too');
  assert.equal(ra.joined, true);
  steps.push(`resumed after ${r.downtimeMs} ms (${r.rooms[0].replayed} events replayed)`);

  // close() sends Leave first: b sees a leave at once.
  const left = next(rb, 'memberLeft');
  await a.close();
  assert.equal((await left).reason, 'left');
  await b.close();
  steps.push('leave on close');
  return steps;
}

const port = process.argv[2];
if (port) {
  const timer = setTimeout(() => {
    console.error('scenario timed out');
    process.exit(2);
  }, 25_000);
  const scenario = process.argv[3] === 'access' ? runAccess(port, process.argv[4]) : process.argv[3] === 'sync' ? runSync(port) : run(port);
  scenario.then(
    (steps) => {
      clearTimeout(timer);
      console.log(JSON.stringify(Array.isArray(steps) ? { ok: true, steps } : { ok: true, ...steps }));
    },
    (e) => {
      clearTimeout(timer);
      console.log(JSON.stringify({ ok: false, error: `${e?.stack ?? e}` }));
      process.exit(1);
    },
  );
}
