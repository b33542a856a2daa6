// The sync requests against the scripted fake server: timelines (ops on the
// wire, Ack after the event, conflicts with currentSeq, local position),
// direct and broadcast messages, snapshots on request, ICE servers, the
// delegate, relay rooms and failover modes at join, presence, chat history,
// and packs: upload and fetch over the WebSocket pack lane and WebTransport
// streams, with resumed transfers and hash checks.

import test from 'node:test';
import assert from 'node:assert/strict';
import { ChorusError, ErrorCode, connect } from '../chorus.js';
import { FakeServer, until } from './support/fake.js';

const enc = new TextEncoder();
const fast = { clockSync: { pings: 2, intervalMs: 0, spacingMs: 0 }, requestTimeoutMs: 2000, keepaliveMs: 0, reconnect: { random: () => 0 } };

async function joined({ serverOptions = {}, clientOptions = {}, snapshot = {}, transport = 'websocket' } = {}) {
  const server = new FakeServer({ maxDatagramSize: 1300, ...serverOptions });
  server.resumeToken = 'token';
  server.resumeWindowMs = 60_000;
  const client =
    transport === 'webtransport'
      ? await connect('https://127.0.0.1:4433/chorus', { WebTransport: server.WebTransport, WebSocket: null, certHashes: [], ...fast, ...clientOptions })
      : await connect('ws://127.0.0.1:1/chorus', { WebSocket: server.WebSocket, ...fast, ...clientOptions });
  server.handlers.Join = (m) => server.send({ Joined: { request_id: m.request_id, snapshot: FakeServer.snapshot({ room_id: m.room_id, ...snapshot }) } });
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

const wireTimeline = (fields) => ({ name: 'main', playing: false, rate_ppm: 1_000_000, anchor_time: 0n, anchor_position_us: 0n, tempo_mbpm: null, seq: 0n, ...fields });

test('timelines: every op on the wire, the event applied before the Ack resolves, the position computed locally', async () => {
  const { server, client, room } = await joined();
  let seq = 2n;
  let state = wireTimeline({});
  server.handlers.Timeline = (m) => {
    seq += 1n;
    // Now, a millisecond back: the client's clock estimate may be a few µs behind the fake's.
    const at = m.at ?? BigInt(server.now() - 1000);
    const op = m.op;
    state = { ...state, name: m.name, anchor_time: at, seq };
    if (op === 'Play') state.playing = true;
    if (op === 'Pause') state.playing = false;
    if (op.Seek) state.anchor_position_us = op.Seek.position_us;
    if (op.SetRate) state.rate_ppm = op.SetRate.rate_ppm;
    if (op.SetTempo) state.tempo_mbpm = op.SetTempo.tempo_mbpm;
    server.send({ TimelineChanged: { room: 1, seq, timeline: state, by: 2 } });
    server.send({ Ack: { request_id: m.request_id, room: 1, seq } });
  };
  const changes = [];
  room.on('timelineChanged', (e) => changes.push([e.name, e.seq, e.by, e.scheduled, room.timeline(e.name)?.seq]));
  assert.equal(room.timeline('movie'), undefined);
  assert.equal(room.timelinePosition('movie'), 0);
  assert.equal(room.timelineSeq('movie'), 0);
  assert.equal(await room.seek('movie', 30_000_000), 3);
  assert.equal(await room.setRate('movie', 1.5), 4);
  assert.equal(await room.setTempo('movie', 120), 5);
  assert.equal(await room.play('movie', { expectedSeq: 5 }), 6);
  const wire = server.got('Timeline');
  assert.deepEqual(
    wire.map((m) => [m.name, m.op, m.at, m.expected_seq]),
    [
      ['movie', { Seek: { position_us: 30_000_000n } }, null, null],
      ['movie', { SetRate: { rate_ppm: 1_500_000 } }, null, null],
      ['movie', { SetTempo: { tempo_mbpm: 120_000 } }, null, null],
      ['movie', 'Play', null, 5n],
    ],
  );
  assert.deepEqual(changes.map((c) => c[1]), [3, 4, 5, 6]);
  assert.ok(changes.every((c) => c[4] === c[1]), 'the replica has the change when the event fires');
  const t = room.timeline('movie');
  assert.deepEqual([t.playing, t.rate, t.bpm, t.seq, room.timelineSeq('movie')], [true, 1.5, 120, 6, 6]);
  // The position runs locally at 1.5x from 30 s.
  const now = client.serverTime();
  assert.equal(room.timelinePosition('movie', t.anchorTime + 2_000_000), 33_000_000);
  assert.ok(Math.abs(room.timelinePosition('movie') - (30_000_000 + (now - t.anchorTime) * 1.5)) < 50_000);
  assert.deepEqual([...room.timelines().keys()], ['movie']);
  // A pause scheduled 100 ms ahead: the previous state until then.
  const at = client.serverTime() + 100_000;
  await room.pause('movie', { at });
  assert.equal(server.got('Timeline').at(-1).at, BigInt(at));
  assert.equal(changes.at(-1)[3], true, 'scheduled');
  assert.equal(room.timeline('movie').playing, true, 'still playing before its anchor');
  assert.equal(room.timeline('movie', at).playing, false);
  await until(() => room.timeline('movie').playing === false, 2000, 'the pause takes effect');
  await room.setTempo('movie', null);
  assert.equal(server.got('Timeline').at(-1).op.SetTempo.tempo_mbpm, null);
  assert.equal((await rejection(room.setRate('movie', 0))).name, 'invalid_argument');
  assert.equal((await rejection(room.seek('movie', -1))).name, 'invalid_argument');
  await client.close();
});

test('a timeline conflict carries the current seq; LimitExceeded for a time too far ahead', async () => {
  const { server, client, room } = await joined();
  server.handlers.Timeline = (m) =>
    server.send({
      Error: {
        request_id: m.request_id,
        code: 301,
        message: 'timeline main changed at seq 30',
        detail: m.expected_seq === null ? { Limit: { limit: 10_000n, actual: 20_000n } } : { Sequence: { current_seq: 30n } },
      },
    });
  const conflict = await rejection(room.play('main', { expectedSeq: 29n }));
  assert.equal(conflict.code, ErrorCode.Conflict);
  assert.equal(conflict.currentSeq, 30);
  assert.deepEqual(conflict.detail, { currentSeq: 30 });
  const other = await rejection(room.play('main', { at: client.serverTime() + 20_000_000 }));
  assert.equal(other.currentSeq, null);
  assert.deepEqual(other.detail, { limit: 10_000, actual: 20_000 });
  await client.close();
});

test('direct and broadcast messages: on the wire, Acked, received as events and in messages()', async () => {
  const { server, client, room } = await joined();
  server.handlers.Direct = (m) => server.send({ Ack: { request_id: m.request_id, room: 1, seq: 2n } });
  server.handlers.Broadcast = (m) => server.send({ Ack: { request_id: m.request_id, room: 1, seq: 2n } });
  assert.equal(await room.sendDirect(1, 'rtc-offer', 'v=0'), 2);
  assert.equal(await room.sendDirect(room.member(1), 'note', new Uint8Array([1])), 2);
  await room.broadcast('everyone', 'note', 'hi');
  await room.broadcast('others', 'note', 'hi');
  await room.broadcast({ role: 'viewer' }, 'note', 'hi');
  assert.deepEqual(server.got('Direct').map((m) => [m.to, m.kind, Array.from(m.payload)]), [
    [1, 'rtc-offer', Array.from(enc.encode('v=0'))],
    [1, 'note', [1]],
  ]);
  assert.deepEqual(server.got('Broadcast').map((m) => m.audience), ['Everyone', 'Others', { Role: 'Viewer' }]);
  assert.equal((await rejection(room.broadcast('nobody', 'k', ''))).name, 'invalid_argument');
  assert.equal((await rejection(room.sendDirect('1', 'k', ''))).name, 'invalid_argument');
  const big = await rejection(room.sendDirect(1, 'k', new Uint8Array(65537)));
  assert.deepEqual([big.name, big.detail], ['limit_exceeded', { limit: 65536, actual: 65537 }]);
  const messages = room.messages();
  const directs = [];
  const broadcasts = [];
  room.on('direct', (e) => directs.push(e));
  room.on('broadcast', (e) => broadcasts.push(e));
  server.send({ DirectMessage: { room: 1, from: 1, kind: 'rtc-answer', payload: enc.encode('v=0') } });
  server.send({ BroadcastMessage: { room: 1, from: 1, kind: 'note', payload: enc.encode('hey') } });
  server.send({ DirectMessage: { room: 9, from: 1, kind: 'elsewhere', payload: new Uint8Array() } });
  await until(() => broadcasts.length === 1);
  assert.deepEqual(directs, [{ type: 'direct', from: 1, kind: 'rtc-answer', payload: enc.encode('v=0'), text: 'v=0' }]);
  assert.equal(broadcasts[0].text, 'hey');
  assert.deepEqual((await messages.next()).value.type, 'direct');
  assert.deepEqual((await messages.next()).value.type, 'broadcast');
  await client.close();
  assert.deepEqual(await messages.next(), { value: undefined, done: true });
});

test('requestSnapshot replaces the replica; iceServers is an RTCConfiguration; setDelegate', async () => {
  const { server, client, room } = await joined();
  server.handlers.RequestSnapshot = (m) =>
    server.send({ Snapshot: { request_id: m.request_id, snapshot: FakeServer.snapshot({ last_seq: 20n, state: [{ key: 'x', value: enc.encode('y'), version: 5n, author: 1 }], state_version: 5n }) } });
  const snapshots = [];
  room.on('snapshot', (e) => snapshots.push([e, room.lastSeq]));
  assert.equal(await room.requestSnapshot(), room);
  assert.deepEqual(snapshots, [[{ reason: 'requested', lastSeq: 20 }, 20]]);
  assert.equal(room.getState('x').text, 'y');
  server.handlers.GetIceServers = (m) =>
    server.send({
      IceServers: {
        request_id: m.request_id,
        servers: [
          { urls: ['stun:stun.example.org:3478'], username: null, credential: null },
          { urls: ['turn:turn.example.org:3478?transport=udp', 'turns:turn.example.org:5349'], username: '1700000000:2', credential: 'c3VwZXI=' },
        ],
        expires: 1_700_000_000_000_000n,
      },
    });
  const ice = await room.iceServers();
  assert.deepEqual(JSON.parse(JSON.stringify(ice)), {
    iceServers: [
      { urls: ['stun:stun.example.org:3478'] },
      { urls: ['turn:turn.example.org:3478?transport=udp', 'turns:turn.example.org:5349'], username: '1700000000:2', credential: 'c3VwZXI=' },
    ],
    expiresAt: 1_700_000_000_000_000,
  });
  assert.deepEqual(server.got('GetIceServers'), [{ request_id: server.got('GetIceServers')[0].request_id, room: 1 }]);
  server.handlers.SetDelegate = (m) => server.send({ Ack: { request_id: m.request_id, room: 1, seq: 20n } });
  assert.equal(await room.setDelegate(1), 20);
  assert.equal(await room.setDelegate(room.member(1)), 20);
  assert.equal(await room.setDelegate(null), 20);
  assert.deepEqual(server.got('SetDelegate').map((m) => m.member), [1, 1, null]);
  assert.equal((await rejection(room.setDelegate('me'))).name, 'invalid_argument');
  await client.close();
});

test('join: kind and failover on the wire; relay rooms; presence and chat history from the snapshot', async () => {
  const { server, client } = await joined();
  let slot = 1;
  server.handlers.Join = (m) =>
    server.send({
      Joined: {
        request_id: m.request_id,
        snapshot: FakeServer.snapshot({
          room_id: m.room_id,
          room: ++slot,
          kind: 'Relay',
          failover: 'Nothing',
          members: [
            { id: 1, role: 'Host', display: { name: 'ada', meta: new Uint8Array() }, presence: 'Away' },
            { id: 2, role: 'Editor', display: { name: 'bob', meta: new Uint8Array() }, presence: 'Online' },
          ],
          chat: [{ seq: 1n, author: 1, time: 1_790_000_000_000_000n, payload: enc.encode('welcome') }],
        }),
      },
    });
  const relay = await client.join('signalling', { kind: 'relay', failover: 'nothing' });
  await client.join('x', { kind: 'Normal', failover: 'pause_timeline' });
  await client.join('y', { failover: 'next_member' });
  assert.deepEqual(server.got('Join').slice(1).map((m) => m.options), [
    ['CreateIfMissing', { Kind: 'Relay' }, { Failover: 'Nothing' }],
    ['CreateIfMissing', { Kind: 'Normal' }, { Failover: 'PauseTimeline' }],
    ['CreateIfMissing', { Failover: 'NextMember' }],
  ]);
  assert.equal((await rejection(client.join('z', { kind: 'bunker' }))).name, 'invalid_argument');
  assert.equal((await rejection(client.join('z', { failover: 'panic' }))).name, 'invalid_argument');
  assert.deepEqual([relay.kind, relay.failover], ['relay', 'nothing']);
  assert.deepEqual(relay.members.map((m) => [m.id, m.presence]), [
    [1, 'away'],
    [2, 'online'],
  ]);
  assert.deepEqual(relay.chat.map((c) => [c.seq, c.author, c.text, c.time]), [[1, 1, 'welcome', 1_790_000_000_000_000]]);
  const presence = new Promise((resolve) => relay.on('presenceChanged', resolve));
  server.send({ PresenceChanged: { room: 2, seq: 3n, member: 1, presence: 'Online' } });
  const p = await presence;
  assert.deepEqual([p.member.id, p.presence, p.previousPresence, p.seq], [1, 'online', 'away', 3]);
  // A chat command joins the history.
  server.send({ CommandEvent: { room: 2, seq: 4n, author: 2, kind: 'chat', payload: enc.encode('hi'), idempotency_key: null } });
  await until(() => relay.chat.length === 2);
  assert.equal(relay.chat[1].text, 'hi');
  // A relay room refuses storage: NotStored (310) comes back as such.
  server.handlers.SetState = (m) => server.send({ Error: { request_id: m.request_id, code: 310, message: 'relay room', detail: 'None' } });
  const refused = await rejection(relay.setState('k', 'v'));
  assert.deepEqual([refused.code, refused.name], [ErrorCode.NotStored, 'not_stored']);
  await client.close();
});

// ---- packs -------------------------------------------------------------------

const PNG = Uint8Array.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, ...Array.from({ length: 40_000 }, (_, i) => (i * 7) & 0xff)]);

async function sha256(bytes) {
  return new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
}

const hex = (bytes) => Buffer.from(bytes).toString('hex');

/**
 * A pack store on the fake server: PackUpload answered with PackUploadReady
 * from the bytes it has, content stored in order (Conflict otherwise),
 * PackAvailable at the end; a pack it already has is Acked. With
 * `dropAfterBytes`, the connection drops once that much has arrived.
 */
function packServer(server, { dropAfterBytes = null } = {}) {
  const store = { received: new Uint8Array(0), announced: null, available: new Map(), seq: 2n, dropped: false };
  server.handlers.PackUpload = (m) => {
    if (store.available.has(hex(m.hash))) {
      server.send({ Ack: { request_id: m.request_id, room: 1, seq: store.seq } });
      return;
    }
    store.announced = m;
    server.send({ PackUploadReady: { request_id: m.request_id, hash: m.hash, offset: BigInt(store.received.length) } });
  };
  server.handlers.Pack = (header, content) => {
    const m = store.announced;
    const offset = Number(header.Upload.offset);
    if (offset !== store.received.length) {
      server.send({ Error: { request_id: m.request_id, code: 301, message: 'wrong offset', detail: { Conflict: { current_version: BigInt(store.received.length) } } } });
      return;
    }
    const next = new Uint8Array(offset + content.length);
    next.set(store.received);
    next.set(content, offset);
    store.received = next;
    if (dropAfterBytes !== null && store.received.length >= dropAfterBytes && !store.dropped) {
      store.dropped = true;
      server.drop();
      return;
    }
    if (store.received.length === Number(m.size)) {
      store.seq += 1n;
      store.available.set(hex(m.hash), store.received);
      server.send({ PackAvailable: { room: 1, seq: store.seq, pack: { hash: m.hash, name: m.name, media_type: m.media_type, size: m.size, uploader: 2 } } });
    }
  };
  return store;
}

for (const transport of ['websocket', 'webtransport']) {
  test(`packs over ${transport}: upload (hash, announce, content, PackAvailable), then fetch (pieces, hash check)`, async () => {
    const { server, client, room } = await joined({ transport });
    const store = packServer(server);
    const progress = [];
    const seenAvailable = [];
    room.on('packAvailable', (e) => seenAvailable.push([e.pack.hash, room.packs.length]));
    const pack = await room.uploadPack('cover.png', 'image/png', PNG, { onProgress: (sent, total) => progress.push([sent, total]) });
    const hash = await sha256(PNG);
    assert.deepEqual(pack, { hash: hex(hash), name: 'cover.png', mediaType: 'image/png', size: PNG.length, uploader: 2 });
    assert.deepEqual(seenAvailable, [[hex(hash), 1]], 'applied before the upload resolves');
    assert.deepEqual(room.packs, [pack]);
    assert.equal(room.pack(hex(hash)), pack);
    assert.equal(room.pack(hash), pack);
    const announce = server.got('PackUpload')[0];
    assert.deepEqual([Array.from(announce.hash), announce.name, announce.media_type, announce.size], [Array.from(hash), 'cover.png', 'image/png', BigInt(PNG.length)]);
    assert.deepEqual(store.received, PNG);
    assert.deepEqual(progress.at(-1), [PNG.length, PNG.length]);
    if (transport === 'websocket') {
      const lanes = server.wsMessages.filter((m) => m[0] === 0x03);
      assert.equal(lanes.length, Math.ceil(PNG.length / 16384), '16 KiB pieces on lane 0x03');
      assert.deepEqual(server.packs.map((p) => Number(p.header.Upload.offset)), [0, 16384, 32768]);
      assert.ok(lanes.every((m) => m.length <= 1 + 5 + 256 + 16384));
    } else {
      assert.equal(server.packStreamsOpened, 1, 'one unidirectional stream');
      assert.deepEqual(server.packs.map((p) => Number(p.header.Upload.offset)), [0]);
    }
    // The same pack again: the room has it, Ack, resolved from the replica.
    assert.deepEqual(await room.uploadPack('cover.png', 'image/png', PNG), pack);
    // Fetch: the server sends it on the pack lane.
    server.handlers.PackFetch = (m) =>
      server.sendDownload({ request_id: m.request_id, hash: m.hash, offset: Number(m.offset), size: PNG.length, content: PNG.subarray(Number(m.offset)), chunk: 10_000 });
    const fetched = [];
    const bytes = await room.fetchPack(pack, { onProgress: (got) => fetched.push(got) });
    assert.deepEqual(bytes, PNG);
    assert.equal(fetched.at(-1), PNG.length);
    assert.deepEqual(server.got('PackFetch').map((m) => [hex(m.hash), m.offset]), [[hex(hash), 0n]]);
    // Content that does not match its hash is refused.
    server.handlers.PackFetch = (m) => server.sendDownload({ request_id: m.request_id, hash: m.hash, offset: 0, size: 3, content: Uint8Array.of(1, 2, 3) });
    const mismatch = await rejection(room.fetchPack(hash));
    assert.deepEqual([mismatch.code, mismatch.name], [ErrorCode.HashMismatch, 'hash_mismatch']);
    // An unknown pack: PackNotFound on the control stream.
    server.handlers.PackFetch = (m) => server.send({ Error: { request_id: m.request_id, code: 210, message: 'no such pack', detail: 'None' } });
    assert.equal((await rejection(room.fetchPack('00'.repeat(32)))).name, 'pack_not_found');
    // An empty pack is one header and no content.
    const empty = await sha256(new Uint8Array(0));
    server.handlers.PackFetch = (m) => server.sendDownload({ request_id: m.request_id, hash: m.hash, offset: 0, size: 0, content: new Uint8Array(0) });
    assert.deepEqual(await room.fetchPack(empty), new Uint8Array(0));
    await client.close();
  });
}

test('packs: refusals (local size limit, bad hashes, server errors), a Conflict resumes from the server offset', async () => {
  const { server, client, room } = await joined({ serverOptions: { limits: { max_pack_bytes: 50_000 } } });
  const tooBig = await rejection(room.uploadPack('big.png', 'image/png', new Uint8Array(50_001)));
  assert.deepEqual([tooBig.name, tooBig.detail], ['limit_exceeded', { limit: 50_000, actual: 50_001 }]);
  assert.equal(server.got('PackUpload').length, 0);
  assert.equal((await rejection(room.fetchPack('xyz'))).name, 'invalid_argument');
  assert.equal((await rejection(room.uploadPack('a.png', 'image/png', 'text'))).name, 'invalid_argument');
  server.handlers.PackUpload = (m) => server.send({ Error: { request_id: m.request_id, code: 309, message: 'not a png', detail: 'None' } });
  assert.equal((await rejection(room.uploadPack('a.png', 'image/png', Uint8Array.of(1, 2)))).name, 'media_type_refused');
  // The server has the first 20 000 bytes of an interrupted upload: the client sends the rest.
  const store = packServer(server);
  store.received = PNG.slice(0, 20_000);
  const pack = await room.uploadPack('cover.png', 'image/png', PNG);
  assert.equal(pack.size, PNG.length);
  assert.deepEqual(server.packs.map((p) => Number(p.header.Upload.offset)), [20_000, 36_384]);
  // A hash mismatch reported during the transfer fails the upload.
  server.handlers.Pack = () => server.send({ Error: { request_id: server.got('PackUpload').at(-1).request_id, code: 308, message: 'hash mismatch', detail: 'None' } });
  server.handlers.PackUpload = (m) => server.send({ PackUploadReady: { request_id: m.request_id, hash: m.hash, offset: 0n } });
  assert.equal((await rejection(room.uploadPack('other.png', 'image/png', PNG.slice(0, 100)))).name, 'hash_mismatch');
  await client.close();
});

for (const transport of ['websocket', 'webtransport']) {
  test(`packs over ${transport}: a dropped connection interrupts an upload and a fetch; both go on after the resume`, async () => {
    const { server, client, room } = await joined({ transport });
    // On WebTransport the whole stream arrives at once: drop after it, before PackAvailable.
    const store = packServer(server, { dropAfterBytes: transport === 'websocket' ? 16_384 : PNG.length });
    server.handlers.Hello = (m) => {
      server.send({ Hello: server.hello() });
      if (m.options.some((o) => o.Resume)) server.send({ Resumed: { room: 1, member: 2, snapshot: null } });
    };
    const resumes = [];
    client.on('resumed', (e) => resumes.push(e));
    const pack = await room.uploadPack('cover.png', 'image/png', PNG);
    assert.equal(resumes.length, 1, 'resumed on a new connection');
    assert.deepEqual(store.received, PNG);
    assert.equal(server.got('PackUpload').length, 2, 'announced again after the resume');
    if (transport === 'websocket') assert.deepEqual(server.packs.map((p) => Number(p.header.Upload.offset)), [0, 16_384, 32_768], 'the rest, from where the server got to');
    // A fetch cut short by a drop asks for the rest, from the offset reached.
    let fetches = 0;
    server.handlers.PackFetch = (m) => {
      const offset = Number(m.offset);
      if (++fetches === 1) {
        // The first 16 KiB, then the connection drops (the WebTransport stream stays open).
        server.sendDownload({ request_id: m.request_id, hash: m.hash, offset, size: PNG.length, content: PNG.subarray(offset, offset + 16_384), hold: true });
        setTimeout(() => server.drop(), 20);
      } else {
        server.sendDownload({ request_id: m.request_id, hash: m.hash, offset, size: PNG.length, content: PNG.subarray(offset) });
      }
    };
    const bytes = await room.fetchPack(pack);
    assert.deepEqual(bytes, PNG);
    assert.deepEqual(server.got('PackFetch').map((m) => m.offset), [0n, 16_384n]);
    assert.equal(resumes.length, 2);
    await client.close();
  });

  test(`packs over ${transport}: a download stream that ends early, or a gap, is asked for again from the offset reached`, async () => {
    const { server, client, room } = await joined({ transport });
    const hash = await sha256(PNG);
    let fetches = 0;
    server.handlers.PackFetch = (m) => {
      const offset = Number(m.offset);
      fetches++;
      if (fetches === 1 && transport === 'webtransport') {
        server.sendDownload({ request_id: m.request_id, hash: m.hash, offset, size: PNG.length, content: PNG.subarray(offset), cutAfter: 5000 });
      } else if (fetches === 1) {
        // A piece that skips ahead: the client asks again from what it has.
        server.sendDownload({ request_id: m.request_id, hash: m.hash, offset, size: PNG.length, content: PNG.subarray(0, 5000) });
        server.sendDownload({ request_id: m.request_id, hash: m.hash, offset: 9000, size: PNG.length, content: PNG.subarray(9000, 10_000) });
      } else {
        server.sendDownload({ request_id: m.request_id, hash: m.hash, offset, size: PNG.length, content: PNG.subarray(offset) });
      }
    };
    assert.deepEqual(await room.fetchPack(hash), PNG);
    assert.deepEqual(server.got('PackFetch').map((m) => m.offset), [0n, 5000n]);
    await client.close();
  });
}
