// The sync features (protocol 2.0) in Debian's Chromium against a real server:
// a page's WebSocket connection dropped under it (a TCP proxy in this process
// cuts it) is resumed, and the other member saw it reconnecting, not leave; a
// pack uploaded from one page is fetched by the other with the same bytes, over
// WebTransport one way and WebSocket the other; a timeline play scheduled ahead
// by one page is the same state on the other, and the two positions agree.
// Every wait is bounded; nothing sleeps and hopes.

import test from 'node:test';
import assert from 'node:assert/strict';
import { createServer, connect } from 'node:net';
import {
  startServer, launchChromium, openDemo, demoUrl, until, withTimeout,
} from '../lib/harness.mjs';

/**
 * A TCP proxy on 127.0.0.1 to `targetPort`: each accepted socket is piped to a
 * new connection to the target. `sever()` cuts every piped connection (both
 * sides, with a reset, as a failing network would) and goes on accepting new
 * ones; `refuse(true)` makes it reset new connections at once (the network is
 * still down) until `refuse(false)`. Closed in t.after.
 */
async function startProxy(t, targetPort) {
  const sockets = new Set();
  let refusing = false;
  const stats = { accepted: 0, refused: 0, severed: 0 };
  const cut = (s) => (s.resetAndDestroy ? s.resetAndDestroy() : s.destroy());
  const server = createServer((down) => {
    down.on('error', () => {});
    if (refusing) {
      stats.refused++;
      cut(down);
      return;
    }
    stats.accepted++;
    const up = connect(targetPort, '127.0.0.1');
    up.on('error', () => {});
    for (const [s, other] of [[down, up], [up, down]]) {
      sockets.add(s);
      s.on('close', () => {
        sockets.delete(s);
        other.destroy();
      });
    }
    down.pipe(up);
    up.pipe(down);
  });
  await new Promise((res) => server.listen(0, '127.0.0.1', res));
  const proxy = {
    port: server.address().port,
    stats,
    /** Piped connections open now (each counts once). */
    get open() {
      return sockets.size / 2;
    },
    sever() {
      stats.severed += sockets.size / 2;
      for (const s of [...sockets]) cut(s);
      sockets.clear();
    },
    refuse(on) {
      refusing = on;
    },
    close() {
      proxy.sever();
      return new Promise((res) => server.close(() => res()));
    },
  };
  t.after(() => proxy.close());
  return proxy;
}

/**
 * Records the page's client and room events into window.__events (plain data:
 * the resumed event's Room objects become their ids), for the test to read.
 */
function recordEvents(page) {
  return page.evaluate(() => {
    const { client, room } = window.chorusDemo;
    const events = [];
    window.__events = events;
    const id = (m) => (typeof m === 'object' && m !== null ? m.id : m);
    client.on('reconnecting', ({ attempt, reason }) => events.push({ on: 'client', name: 'reconnecting', attempt, reason: reason?.name ?? null }));
    client.on('resumed', ({ transport, sessionResumed, downtimeMs, rooms }) => events.push({
      on: 'client', name: 'resumed', transport, sessionResumed, downtimeMs,
      rooms: rooms.map((r) => ({ roomId: r.roomId, outcome: r.outcome, replayed: r.replayed })),
    }));
    client.on('lost', ({ reason, sessionLost }) => events.push({ on: 'client', name: 'lost', reason: reason?.name ?? null, sessionLost }));
    room.on('presenceChanged', ({ member, presence, previousPresence }) => events.push({ on: 'room', name: 'presenceChanged', member: member.id, presence, previousPresence }));
    room.on('memberJoined', (m) => events.push({ on: 'room', name: 'memberJoined', member: m.id, memberName: m.name }));
    room.on('memberLeft', ({ member, reason }) => events.push({ on: 'room', name: 'memberLeft', member: id(member), reason }));
    room.on('resumed', ({ replayed, snapshot }) => events.push({ on: 'room', name: 'resumed', replayed, snapshot }));
    room.on('snapshot', ({ reason }) => events.push({ on: 'room', name: 'snapshot', reason }));
    room.on('lost', ({ name }) => events.push({ on: 'room', name: 'lost', error: name }));
    room.on('timelineChanged', ({ name, timeline, by, seq, scheduled }) => events.push({ on: 'room', name: 'timelineChanged', timelineName: name, timeline, by, seq, scheduled }));
    room.on('packAvailable', ({ pack, seq }) => events.push({ on: 'room', name: 'packAvailable', pack, seq }));
  });
}

const events = (page) => page.evaluate(() => window.__events);

/** The first recorded event matching `pred` (a function of the event), polled up to `ms`. */
function eventOn(page, pred, ms, what) {
  return until(async () => (await events(page)).find(pred), ms, what)
    .catch(async (e) => { throw new Error(`${e.message}; events so far: ${JSON.stringify(await events(page).catch(() => null))}`); });
}

test('Chromium: a page whose WebSocket connection is cut resumes; the other member saw it reconnecting, not leave, and its change made meanwhile reaches the page', { timeout: 60000 }, async (t) => {
  const server = await startServer(t);
  const proxy = await startProxy(t, server.port);
  const browser = await launchChromium(t);
  const room = 'resume-ws';

  // bo stays connected (WebTransport, straight to the server); ada's page, its
  // scripts and its WebSocket all go through the proxy.
  const bo = await openDemo(browser, demoUrl(server, { room, name: 'bo', transport: 'wt' }));
  const ada = await openDemo(browser, `http://127.0.0.1:${proxy.port}/?${new URLSearchParams({ room, name: 'ada', transport: 'ws' })}`);
  assert.equal(bo.demo.transport, 'webtransport');
  assert.equal(ada.demo.transport, 'websocket');
  assert.ok(proxy.open >= 1, `ada's connection should go through the proxy (${JSON.stringify(proxy.stats)})`);
  await recordEvents(ada);
  await recordEvents(bo);
  await bo.locator('#members li', { hasText: 'ada' }).waitFor({ timeout: 5000 });

  // A state both see before the drop.
  await bo.evaluate(() => window.chorusDemo.room.setState('title', 'before the drop'));
  await ada.locator('#stage-title', { hasText: 'before the drop' }).waitFor({ timeout: 5000 });

  // The network fails: every piped connection is reset, new ones too for now.
  proxy.refuse(true);
  proxy.sever();
  await ada.locator('#status', { hasText: 'reconnecting…' }).waitFor({ timeout: 10000 });
  assert.equal(await ada.evaluate(() => window.chorusDemo.client.state), 'reconnecting');
  await until(() => bo.evaluate((me) => window.chorusDemo.room.members.find((m) => m.id === me)?.presence === 'reconnecting', ada.demo.me),
    10000, 'bo to see ada reconnecting');
  await bo.locator('#members li', { hasText: 'ada' }).filter({ hasText: 'reconnecting' }).waitFor({ timeout: 5000 });

  // While ada is away, bo changes the title and chats; ada cannot have them yet.
  const set = await bo.evaluate(async () => {
    const { room } = window.chorusDemo;
    const ack = await room.setState('title', 'set while ada was away');
    await room.sendCommand('chat', 'you missed this', { idempotencyKey: crypto.randomUUID() });
    return ack;
  });
  assert.equal(await ada.evaluate(() => window.chorusDemo.room.getState('title').text), 'before the drop');
  assert.equal(await ada.evaluate(() => window.chorusDemo.client.state), 'reconnecting');

  // One reconnect attempt is refused too (the SDK backs off and tries again).
  await until(() => proxy.stats.refused >= 1, 10000, 'ada\'s first reconnect attempt to be refused');
  await ada.locator('#status', { hasText: /reconnecting… \(attempt ([2-9]|\d\d+)\)/ }).waitFor({ timeout: 5000 });

  // The network comes back: the SDK's next attempt resumes the session.
  const refusedWhileDown = proxy.stats.refused;
  const acceptedBefore = proxy.stats.accepted;
  proxy.refuse(false);
  await ada.locator('#status', { hasText: 'resumed after' }).waitFor({ timeout: 20000 });
  await ada.locator('#chat li.system', { hasText: /resumed after .* over websocket/ }).waitFor({ timeout: 5000 });
  assert.ok(proxy.stats.accepted > acceptedBefore, 'ada reconnected through the proxy');

  // The change made while away is on the page: replayed, same version as bo's.
  await ada.locator('#stage-title', { hasText: 'set while ada was away' }).waitFor({ timeout: 5000 });
  await ada.locator('#chat li', { hasText: 'you missed this' }).filter({ hasText: 'bo' }).waitFor({ timeout: 5000 });
  const after = await ada.evaluate(() => {
    const { client, room } = window.chorusDemo;
    return { state: client.state, transport: client.transport, me: room.me, joined: room.joined, title: room.getState('title') };
  });
  assert.equal(after.state, 'connected');
  assert.equal(after.transport, 'websocket');
  assert.equal(after.me, ada.demo.me, 'the same member id after the resume');
  assert.equal(after.joined, true);
  assert.equal(after.title.text, 'set while ada was away');
  assert.equal(after.title.version, set.version);
  assert.equal(after.title.author, bo.demo.me);

  const adaEvents = await events(ada);
  const resumed = adaEvents.find((e) => e.on === 'client' && e.name === 'resumed');
  t.diagnostic(`ada: ${refusedWhileDown} connection(s) refused while down; resumed ${JSON.stringify(resumed)}`);
  assert.ok(adaEvents.some((e) => e.on === 'client' && e.name === 'reconnecting'), JSON.stringify(adaEvents));
  assert.equal(resumed?.sessionResumed, true, JSON.stringify(adaEvents));
  assert.equal(resumed.transport, 'websocket');
  assert.deepEqual(resumed.rooms.map((r) => [r.roomId, r.outcome]), [[room, 'replayed']]);
  assert.ok(resumed.rooms[0].replayed >= 2, `the title and the chat were replayed: ${JSON.stringify(resumed)}`);
  assert.ok(adaEvents.some((e) => e.on === 'room' && e.name === 'resumed'), JSON.stringify(adaEvents));
  assert.ok(!adaEvents.some((e) => e.name === 'lost'), JSON.stringify(adaEvents));

  // bo saw ada reconnecting, then online again: presence, not a leave and a join.
  await until(() => bo.evaluate((me) => window.chorusDemo.room.members.find((m) => m.id === me)?.presence === 'online', ada.demo.me),
    10000, 'bo to see ada online again');
  await until(async () => !(await bo.locator('#members li', { hasText: 'ada' }).textContent()).includes('reconnecting'),
    5000, 'bo\'s member list to show ada back');
  const boEvents = await events(bo);
  const adaPresence = boEvents.filter((e) => e.name === 'presenceChanged' && e.member === ada.demo.me).map((e) => e.presence);
  assert.deepEqual(adaPresence, ['reconnecting', 'online'], JSON.stringify(boEvents));
  assert.deepEqual(boEvents.filter((e) => (e.name === 'memberLeft' || e.name === 'memberJoined') && e.member === ada.demo.me), [],
    `ada must not have left and joined again: ${JSON.stringify(boEvents)}`);
  assert.equal(await bo.evaluate(() => window.chorusDemo.room.members.filter((m) => m.name === 'ada').length), 1);

  // Live again both ways.
  await ada.evaluate(() => window.chorusDemo.room.setState('title', 'ada is back'));
  await bo.locator('#stage-title', { hasText: 'ada is back' }).waitFor({ timeout: 5000 });
});

/** Makes `size` bytes that start with the PNG signature (what the server checks) in the page, with their SHA-256. */
function makePng(page, size, seed) {
  return page.evaluate(async ({ size, seed }) => {
    const bytes = new Uint8Array(size);
    bytes.set([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    for (let i = 8; i < size; i += 65536) crypto.getRandomValues(bytes.subarray(i, Math.min(size, i + 65536)));
    bytes[8] = seed;
    window.__png = bytes;
    const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
    return Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
  }, { size, seed });
}

/** Uploads window.__png from `page` as a room pack. */
function upload(page, name) {
  return page.evaluate(async (name) => {
    const pack = await window.chorusDemo.room.uploadPack(name, 'image/png', window.__png);
    return { hash: pack.hash, name: pack.name, mediaType: pack.mediaType, size: pack.size, uploader: pack.uploader };
  }, name);
}

/** `page` fetches pack `hash` once the room announced it; returns its length and SHA-256, computed in the page. */
async function fetchOn(page, hash) {
  await eventOn(page, (e) => e.name === 'packAvailable' && e.pack.hash === hash, 10000, `packAvailable ${hash.slice(0, 12)}…`);
  return page.evaluate(async (hash) => {
    const bytes = await window.chorusDemo.room.fetchPack(hash);
    const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
    return {
      size: bytes.byteLength,
      sha256: Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join(''),
      signature: Array.from(bytes.subarray(0, 8)),
    };
  }, hash);
}

test('Chromium: a pack uploaded from a page on WebTransport is fetched by a page on WebSocket with the same bytes, and the other way round', { timeout: 60000 }, async (t) => {
  const server = await startServer(t);
  const browser = await launchChromium(t);
  const room = 'packs';
  const ada = await openDemo(browser, demoUrl(server, { room, name: 'ada', transport: 'wt' }));
  const bo = await openDemo(browser, demoUrl(server, { room, name: 'bo', transport: 'ws' }));
  assert.equal(ada.demo.transport, 'webtransport');
  assert.equal(bo.demo.transport, 'websocket');
  await recordEvents(ada);
  await recordEvents(bo);

  // More than one 16 KiB pack message on WebSocket; one stream on WebTransport.
  const cases = [
    { from: ada, to: bo, name: 'from-webtransport.png', size: 48 * 1024 + 123, seed: 1 },
    { from: bo, to: ada, name: 'from-websocket.png', size: 40 * 1024 + 7, seed: 2 },
  ];
  for (const { from, to, name, size, seed } of cases) {
    const sha256 = await makePng(from, size, seed);
    const pack = await withTimeout(upload(from, name), 20000, `${name} to upload`);
    assert.deepEqual(pack, { hash: sha256, name, mediaType: 'image/png', size, uploader: from.demo.me });
    const got = await withTimeout(fetchOn(to, pack.hash), 20000, `${name} to be fetched`);
    t.diagnostic(`${name}: ${from.demo.transport} → ${to.demo.transport}, ${size} bytes, sha256 ${got.sha256.slice(0, 16)}…`);
    assert.equal(got.size, size);
    assert.equal(got.sha256, sha256, `${name}: the bytes fetched differ from the bytes uploaded`);
    assert.deepEqual(got.signature, [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  }

  // Both replicas list both packs, oldest first.
  for (const page of [ada, bo]) {
    const packs = await page.evaluate(() => window.chorusDemo.room.packs.map((p) => ({ name: p.name, uploader: p.uploader })));
    assert.deepEqual(packs, [
      { name: 'from-webtransport.png', uploader: ada.demo.me },
      { name: 'from-websocket.png', uploader: bo.demo.me },
    ]);
  }
});

test('Chromium: a timeline play scheduled 1 s ahead by a page on WebTransport is the same state on a page on WebSocket; the positions agree after the anchor', { timeout: 60000 }, async (t) => {
  const server = await startServer(t);
  const browser = await launchChromium(t);
  const room = 'timeline';
  const ada = await openDemo(browser, demoUrl(server, { room, name: 'ada', transport: 'wt' }));
  const bo = await openDemo(browser, demoUrl(server, { room, name: 'bo', transport: 'ws' }));
  assert.equal(ada.demo.transport, 'webtransport');
  assert.equal(bo.demo.transport, 'websocket');
  await recordEvents(bo);

  // ada schedules the play 1 s ahead of the server time.
  const scheduled = await ada.evaluate(async () => {
    const { client, room } = window.chorusDemo;
    const at = Math.round(client.serverTime()) + 1_000_000;
    const seq = await room.play('film', { at });
    return { at, seq, nowAfter: client.serverTime(), inForce: room.timeline('film'), latestSeq: room.timelineSeq('film') };
  });
  const { at, seq } = scheduled;
  assert.ok(scheduled.nowAfter < at, 'the play was acknowledged before its anchor');
  assert.equal(scheduled.inForce.playing, false, 'before the anchor the previous state is in force');
  assert.equal(scheduled.latestSeq, seq);

  // bo gets it early, as a scheduled change with the same anchor.
  const change = await eventOn(bo, (e) => e.name === 'timelineChanged' && e.timelineName === 'film', 5000, 'bo to get the scheduled play');
  assert.equal(change.scheduled, true);
  assert.equal(change.seq, seq);
  assert.equal(change.by, ada.demo.me);
  assert.equal(change.timeline.playing, true);
  assert.equal(change.timeline.anchorTime, at, 'the same anchor time on both pages');
  assert.equal(change.timeline.anchorPositionUs, 0);
  const early = await bo.evaluate(() => {
    const { client, room } = window.chorusDemo;
    return { now: client.serverTime(), inForce: room.timeline('film'), position: room.timelinePosition('film') };
  });
  assert.ok(early.now < at, `bo got the change ${((at - early.now) / 1000).toFixed(1)} ms before the anchor`);
  assert.equal(early.inForce.playing, false);
  assert.equal(early.position, 0);

  // State equality: at the same server times, both replicas give the same timeline and position.
  const probe = (page) => page.evaluate((at) => {
    const { room } = window.chorusDemo;
    const times = [at - 1, at, at + 1, at + 250_000, at + 5_000_000];
    return {
      before: room.timeline('film', at - 1),
      after: room.timeline('film', at),
      positions: times.map((time) => room.timelinePosition('film', time)),
    };
  }, at);
  const [fromAda, fromBo] = await Promise.all([probe(ada), probe(bo)]);
  assert.deepEqual(fromBo, fromAda);
  assert.equal(fromAda.before.playing, false);
  assert.equal(fromAda.after.playing, true);
  assert.equal(fromAda.after.anchorTime, at);
  assert.equal(fromAda.after.seq, seq);
  assert.deepEqual(fromAda.positions, [0, 0, 1, 250_000, 5_000_000]);

  // Right after the anchor, live: each page's position now, from its own synced
  // clock. Both pages share this machine's clock, so shifting each position to
  // one common local instant compares the two clock estimates: a few ms at most.
  const sinceAnchor = (page) => page.waitForFunction((at) => window.chorusDemo.client.serverTime() > at, at, { timeout: 5000, polling: 5 });
  await Promise.all([sinceAnchor(ada), sinceAnchor(bo)]);
  const live = (page) => page.evaluate(() => {
    const { client, room } = window.chorusDemo;
    const localUs = (performance.timeOrigin + performance.now()) * 1000;
    return { localUs, position: room.timelinePosition('film'), playing: room.timeline('film').playing, clock: client.clock };
  });
  const [a, b] = await Promise.all([live(ada), live(bo)]);
  const common = Math.max(a.localUs, b.localUs);
  const shifted = (s) => s.position + (common - s.localUs); // rate 1
  const disagreementUs = Math.abs(shifted(a) - shifted(b));
  t.diagnostic(`positions ${a.position} µs (ada, webtransport, rtt ${a.clock.rttUs} µs) and ${b.position} µs (bo, websocket, rtt ${b.clock.rttUs} µs); at one instant they differ by ${(disagreementUs / 1000).toFixed(3)} ms`);
  assert.equal(a.playing, true);
  assert.equal(b.playing, true);
  assert.ok(a.position > 0 && a.position < 2_000_000, `ada's position right after the anchor: ${a.position}`);
  assert.ok(b.position > 0 && b.position < 2_000_000, `bo's position right after the anchor: ${b.position}`);
  assert.ok(disagreementUs < 5000, `the pages' positions differ by ${disagreementUs} µs at one instant`);
});
