// The demo page in Debian's Chromium (headless, driven by playwright-core),
// against a real server: two pages, a page and the native Rust peer, forced
// WebSocket, the page's self-test (typed errors), and http://localhost.

import test from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, launchChromium, openDemo, demoUrl, startPeer, startListener, selfTestUrl,
  selfTestResult, summarize, freeDualStackPort, until,
} from '../lib/harness.mjs';

const TRANSPORTS = [
  { label: 'WebTransport', param: 'wt', expected: 'webtransport' },
  { label: 'WebSocket (?transport=ws)', param: 'ws', expected: 'websocket' },
];

/** Collects the page's received ticks into window.__ticks (sender, payload bytes). */
function collectTicks(page) {
  return page.evaluate(() => {
    window.__ticks = [];
    window.chorusDemo.room.on('tick', (t) => {
      window.__ticks.push({ sender: t.sender, seq: t.seq, payload: Array.from(t.payload) });
      if (window.__ticks.length > 5000) window.__ticks.shift();
    });
  });
}

/** Moves the real pointer over `page`'s stage until `other` shows that member's cursor near (fx, fy). */
async function cursorCrosses(page, other, fx, fy) {
  const box = await page.locator('#stage').boundingBox();
  let wiggle = 0;
  return until(async () => {
    wiggle = (wiggle + 1) % 3;
    await page.mouse.move(box.x + box.width * fx + wiggle, box.y + box.height * fy);
    return other.evaluate(({ me, fx, fy }) => window.__ticks.some((t) => {
      if (t.sender !== me) return false;
      const c = window.chorusDemo.parseCursor(new Uint8Array(t.payload));
      return c && Math.abs(c.x - fx) < 0.02 && Math.abs(c.y - fy) < 0.02;
    }), { me: page.demo.me, fx, fy });
  }, 10000, 'a cursor tick to cross between the pages');
}

for (const { label, param, expected } of TRANSPORTS) {
  test(`Chromium: two demo pages in one room see each other's cursors, state and chat over ${label}`, { timeout: 60000 }, async (t) => {
    const server = await startServer(t);
    const browser = await launchChromium(t);
    const room = `two-pages-${param}`;
    const ada = await openDemo(browser, demoUrl(server, { room, name: 'ada', transport: param }));
    const bo = await openDemo(browser, demoUrl(server, { room, name: 'bo', transport: param }));
    assert.equal(ada.demo.transport, expected);
    assert.equal(bo.demo.transport, expected);
    assert.equal(ada.demo.role, 'host');
    assert.equal(bo.demo.role, 'editor');

    // Members, with roles, in both lists.
    await ada.locator('#members li', { hasText: 'bo' }).filter({ hasText: 'editor' }).waitFor({ timeout: 5000 });
    await bo.locator('#members li', { hasText: 'ada' }).filter({ hasText: 'host' }).waitFor({ timeout: 5000 });

    // Cursors: real pointer moves become ticks; the other page draws them with the name.
    await collectTicks(ada);
    await collectTicks(bo);
    await cursorCrosses(ada, bo, 0.25, 0.5);
    await bo.locator('.cursor', { hasText: 'ada' }).waitFor({ timeout: 5000 });
    await cursorCrosses(bo, ada, 0.75, 0.3);
    await ada.locator('.cursor', { hasText: 'bo' }).waitFor({ timeout: 5000 });

    // State through the forms: the title from ada, the colour from bo.
    await ada.fill('#title-input', 'Hello from ada');
    await ada.click('#title-form button');
    await bo.locator('#stage-title', { hasText: 'Hello from ada' }).waitFor({ timeout: 5000 });
    await bo.fill('#color-input', '#d62828');
    await bo.click('#color-form button');
    // Each page applies the change when its own copy of the event arrives,
    // the writer's included: wait for both before comparing them.
    for (const [p, who] of [[ada, 'ada'], [bo, 'bo']]) {
      await until(() => p.evaluate(() => window.chorusDemo.room.getState('color')?.text === '#d62828'), 5000, `the colour to reach ${who}`);
    }
    const seen = await Promise.all([ada, bo].map((p) => p.evaluate(() => {
      const r = window.chorusDemo.room;
      return { title: r.getState('title'), color: r.getState('color'),
        accent: document.documentElement.style.getPropertyValue('--accent'), versions: document.getElementById('versions').textContent };
    })));
    for (const s of seen) {
      assert.equal(s.title.text, 'Hello from ada');
      assert.equal(s.color.text, '#d62828');
      assert.equal(s.accent, '#d62828');
      assert.ok(s.color.version > s.title.version, JSON.stringify(s));
      assert.match(s.versions, new RegExp(`title v${s.title.version}, colour v${s.color.version}`));
    }
    assert.equal(seen[0].title.version, seen[1].title.version);

    // Chat through the form, shown with the author's name on both pages.
    await bo.fill('#chat-input', 'hi ada');
    await bo.press('#chat-input', 'Enter');
    for (const p of [ada, bo]) await p.locator('#chat li', { hasText: 'hi ada' }).filter({ hasText: 'bo' }).waitFor({ timeout: 5000 });

    // Closing bo's page: ada sees bo leave.
    await bo.close();
    await until(async () => !(await ada.evaluate(() => window.chorusDemo.room.members.some((m) => m.name === 'bo'))), 10000, 'bo to leave');
    await ada.locator('#chat li.system', { hasText: 'bo left' }).waitFor({ timeout: 5000 });
  });
}

for (const { label, param, expected } of [TRANSPORTS[0], TRANSPORTS[1]]) {
  test(`Chromium: a demo page on ${label} and the native Rust peer on WebTransport see each other`, { timeout: 60000 }, async (t) => {
    const server = await startServer(t);
    const room = `native-${param}`;
    const peer = await startPeer(t, server, { room, name: 'rusty', transport: 'webtransport' });
    const browser = await launchChromium(t);
    const page = await openDemo(browser, demoUrl(server, { room, name: 'ada', transport: param }));
    assert.equal(page.demo.transport, expected);
    assert.equal(page.demo.role, 'editor'); // the peer created the room

    const joined = await peer.waitFor((e) => e.event === 'member_joined' && e.name === 'ada', 5000, 'the peer to see ada join');
    assert.equal(joined.id, page.demo.me);
    await page.locator('#members li', { hasText: 'rusty' }).filter({ hasText: 'host' }).waitFor({ timeout: 5000 });

    // A tick from the page reaches the peer, which echoes it back as its own tick.
    await collectTicks(page);
    const hex = '0000803e0000003f'; // cursor (0.25, 0.5)
    await page.evaluate(() => {
      const p = window.chorusDemo.cursorPayload(0.25, 0.5);
      window.__sender = setInterval(() => window.chorusDemo.room.sendTick(p), 50);
    });
    const got = await peer.waitFor((e) => e.event === 'tick' && e.sender === page.demo.me && e.hex === hex, 10000, 'the page tick at the peer');
    assert.equal(got.len, 8);
    await until(() => page.evaluate(({ sender, hex }) => window.__ticks.some((t) =>
      t.sender === sender && t.payload.map((b) => b.toString(16).padStart(2, '0')).join('') === hex), { sender: peer.me, hex }), 10000, 'the echo at the page');
    await page.evaluate(() => clearInterval(window.__sender));
    await page.locator('.cursor', { hasText: 'rusty' }).waitFor({ timeout: 5000 }); // the echo is drawn as rusty's cursor

    // State both ways.
    await page.fill('#title-input', 'set in the browser');
    await page.click('#title-form button');
    const state = await peer.waitFor((e) => e.event === 'state' && e.key === 'title', 5000, 'the title at the peer');
    assert.equal(state.text, 'set in the browser');
    assert.equal(state.author, page.demo.me);
    peer.send({ op: 'state', key: 'title', value: 'set in Rust' });
    await page.locator('#stage-title', { hasText: 'set in Rust' }).waitFor({ timeout: 5000 });
    const version = await page.evaluate(() => window.chorusDemo.room.getState('title').version);
    const ack = await peer.waitFor((e) => e.event === 'ack' && e.op === 'state', 5000, 'the peer state ack');
    assert.equal(version, ack.version);

    // Chat both ways.
    peer.send({ op: 'command', kind: 'chat', payload: 'hello from Rust' });
    await page.locator('#chat li', { hasText: 'hello from Rust' }).filter({ hasText: 'rusty' }).waitFor({ timeout: 5000 });
    await page.fill('#chat-input', 'hello from the browser');
    await page.press('#chat-input', 'Enter');
    const cmd = await peer.waitFor((e) => e.event === 'command' && e.text === 'hello from the browser', 5000, 'the chat at the peer');
    assert.equal(cmd.kind, 'chat');
    assert.equal(cmd.author, page.demo.me);

    // The peer leaves; the page sees it.
    peer.send({ op: 'leave' });
    await page.locator('#chat li.system', { hasText: 'rusty left (left)' }).waitFor({ timeout: 5000 });
  });
}

for (const { label, param, expected } of TRANSPORTS) {
  test(`Chromium: the demo's self-test (second client, typed errors) passes over ${label}`, { timeout: 60000 }, async (t) => {
    // Ticks up to 1200 bytes: the largest then depends on the browser's datagram size.
    const server = await startServer(t, { args: ['--max-tick-payload-bytes', '1200'] });
    const listener = await startListener(t);
    const browser = await launchChromium(t);
    const page = await browser.newPage();
    const logs = [];
    page.on('console', (m) => logs.push(m.text()));
    await page.goto(selfTestUrl(server, listener, { selftest: 'basic', room: `selftest-${param}`, name: 'chromium', transport: param }));
    const result = await selfTestResult(listener, 45000, () => logs.join('\n'));
    t.diagnostic(summarize(result));
    assert.equal(result.ok, true, `${result.error}\n${summarize(result)}`);
    assert.equal(result.transport, expected);
    assert.equal(result.crossOriginIsolated, true);
    for (const name of ['oversized tick throws limit_exceeded', 'joining a missing room is room_not_found']) {
      assert.ok(result.checks.some((c) => c.name === name && c.ok), name);
    }
  });
}

test('Chromium: the demo at http://localhost:PORT/ uses WebTransport (server on 127.0.0.1 and ::1)', { timeout: 60000 }, async (t) => {
  const port = await freeDualStackPort();
  const server = await startServer(t, { listen: `127.0.0.1:${port},[::1]:${port}` });
  const browser = await launchChromium(t);
  const page = await openDemo(browser, demoUrl(server, { room: 'localhost', name: 'lh', transport: 'auto' }, 'localhost'));
  assert.equal(page.demo.transport, 'webtransport');
  assert.equal(await page.evaluate(() => window.chorusDemo.client.serverTime() > 1.7e15), true);
});
