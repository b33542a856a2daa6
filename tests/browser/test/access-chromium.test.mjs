// Access control (protocol 2.0) in Debian's Chromium against a real server,
// over WebTransport and WebSocket: the demo page's ?key= against a server with
// --api-key, and a password room the native Rust peer hosts, in which the peer
// demotes the page to viewer, kicks it, and the page's rejoin is refused as banned.
// Refusals must arrive as the typed error, shown on the page, not as a hang.

import test from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, launchChromium, openDemo, openPage, demoUrl, startPeer, withTimeout,
} from '../lib/harness.mjs';

const TRANSPORTS = [
  { label: 'WebTransport', param: 'wt', expected: 'webtransport' },
  { label: 'WebSocket (?transport=ws)', param: 'ws', expected: 'websocket' },
];

const API_KEY = 'browser-test-key-7f3a';
const PASSWORD = 'correct horse battery';

/**
 * Opens the demo at `url`, which must fail to join: waits (bounded) for the
 * page's banner to name the error, and returns the error `chorusDemo.joined`
 * rejected with ({ name, code, message, retryAfterMs }) and the banner text.
 */
async function joinRefused(browser, url, name) {
  return checkRefusal(await refusal(browser, url), url, name);
}

async function refusal(browser, url) {
  const page = await openPage(browser, url);
  const context = () => `page console:\n${page.logs.join('\n')}`;
  try {
    await page.locator('#banner.show').waitFor({ timeout: 15000 });
  } catch (e) {
    throw new Error(`the demo at ${url} showed no error banner: ${e.message}\n${context()}`);
  }
  const error = await withTimeout(page.evaluate(() => window.chorusDemo.joined.then(
    () => null,
    (e) => ({ name: e.name, code: e.code, message: e.message, retryAfterMs: e.retryAfterMs ?? null }),
  )), 5000, 'the demo\'s joined promise to settle');
  return { page, error };
}

async function checkRefusal({ page, error }, url, name) {
  const context = () => `page console:\n${page.logs.join('\n')}`;
  const banner = await page.locator('#banner').textContent();
  const status = await page.locator('#status').textContent();
  assert.ok(error, `the demo at ${url} joined, but should have been refused (${name})`);
  assert.equal(error.name, name, `${JSON.stringify(error)}\n${context()}`);
  assert.ok(banner.includes(`${name} (${error.code})`), `banner: ${banner}`);
  assert.equal(status, 'not connected');
  return { page, error, banner };
}

/**
 * A refusal in the handshake: the server answers the hello with Unauthorized
 * (303) and closes the connection. Over WebSocket the typed error must reach
 * the page. Over WebTransport it sometimes does not (one refusal in 10 to 20
 * on this machine, in bursts): the server closes the QUIC connection right
 * after the client acknowledged the Error frame, Chromium then errors the
 * control stream (dropping data the page has not read yet) and reports only
 * "Connection lost", with no WebTransport close code the SDK could name. That
 * is the server's (and possibly the SDK's) to fix, not this test's; until then
 * such a refusal must still be a refusal shown on the page, not a join or a
 * hang, and it is reported as a diagnostic (and the test then needs the typed
 * error on one of a few more loads). Returns { lost } or the refusal.
 */
async function handshakeRefused(t, browser, url, param) {
  const result = await refusal(browser, url);
  const { error } = result;
  if (param === 'wt' && error?.name === 'closed' && /Connection lost/.test(error.message)) {
    t.diagnostic(`known WebTransport race, the typed error was lost at ${url}: ${JSON.stringify(error)}`);
    const banner = await result.page.locator('#banner').textContent();
    assert.match(banner, /^Could not join .*: closed \(null\): /);
    assert.equal(await result.page.locator('#status').textContent(), 'not connected');
    return { lost: true, page: result.page, error, banner };
  }
  return { lost: false, ...await checkRefusal(result, url, 'unauthorized') };
}

for (const { label, param, expected } of TRANSPORTS) {
  test(`Chromium: with --api-key the demo joins with ?key= and is refused as unauthorized without it over ${label}`, { timeout: 60000 }, async (t) => {
    const server = await startServer(t, { args: ['--api-key', API_KEY] });
    const browser = await launchChromium(t);
    const room = `keyed-${param}`;

    // The right key: joined, on the transport asked for, and the page says so.
    const page = await openDemo(browser, demoUrl(server, { room, name: 'keyholder', transport: param, key: API_KEY }));
    assert.equal(page.demo.transport, expected);
    assert.equal(page.demo.role, 'host');
    await page.locator('#chat li.system', { hasText: `joined ${room} as keyholder (host) over ${expected}` }).waitFor({ timeout: 5000 });
    await page.locator('#status b', { hasText: expected }).waitFor({ timeout: 5000 });
    assert.equal(await page.locator('#banner').textContent(), '');

    // No key, then a wrong key: the server's Unauthorized (303) in the hello, shown on the page.
    const none = await handshakeRefused(t, browser, demoUrl(server, { room, name: 'keyless', transport: param }), param);
    if (!none.lost) {
      assert.equal(none.error.code, 303);
      assert.match(none.error.message, /needs an API key/);
    }
    const wrong = await handshakeRefused(t, browser, demoUrl(server, { room, name: 'wrongkey', transport: param, key: `${API_KEY}-wrong` }), param);
    if (!wrong.lost) {
      assert.equal(wrong.error.code, 303);
      assert.match(wrong.error.message, /API key is not valid/);
    }
    assert.ok(!wrong.banner.includes(API_KEY), `the banner shows the key: ${wrong.banner}`);
    // Both typed errors lost (the WebTransport race above): one more load of a
    // few must still show it, so a transport that always loses it fails here.
    if (none.lost && wrong.lost) {
      let typed = false;
      for (let i = 0; i < 6 && !typed; i++) {
        const again = await handshakeRefused(t, browser, demoUrl(server, { room, name: `keyless-${i}`, transport: param }), param);
        await again.page.close();
        typed = !again.lost;
      }
      assert.ok(typed, 'over WebTransport the typed unauthorized error never reached the page');
    }

    // The admitted page is still connected and in the room, and never saw the refused ones.
    assert.deepEqual(await page.evaluate(() => ({
      joined: window.chorusDemo.room.joined,
      members: window.chorusDemo.room.members.map((m) => m.name),
      banner: document.getElementById('banner').textContent,
    })), { joined: true, members: ['keyholder'], banner: '' });
  });
}

for (const { label, param, expected } of TRANSPORTS) {
  test(`Chromium: in a password room the native peer demotes the demo page to viewer, kicks it, and its rejoin is banned over ${label}`, { timeout: 60000 }, async (t) => {
    const server = await startServer(t);
    const room = `guarded-${param}`;
    const peerTransport = param === 'ws' ? 'websocket' : 'webtransport';
    const peer = await startPeer(t, server, { room, name: 'rusty', transport: peerTransport, echo: false, extra: ['--password', PASSWORD] });
    const browser = await launchChromium(t);

    // Without the password, the room is closed to the page (one wrong try only:
    // three from one address would block it for the room).
    const missing = await joinRefused(browser, demoUrl(server, { room, name: 'ada', transport: param }), 'password_required');
    assert.equal(missing.error.code, 307);
    await missing.page.close();
    const wrong = await joinRefused(browser, demoUrl(server, { room, name: 'ada', transport: param, password: 'wrong' }), 'wrong_password');
    assert.equal(wrong.error.code, 306);
    await wrong.page.close();

    // With ?password=: joined as an editor, state controls enabled.
    const page = await openDemo(browser, demoUrl(server, { room, name: 'ada', transport: param, password: PASSWORD }));
    assert.equal(page.demo.transport, expected);
    assert.equal(page.demo.role, 'editor');
    const joined = await peer.waitFor((e) => e.event === 'member_joined' && e.name === 'ada', 5000, 'the peer to see ada join');
    assert.equal(joined.id, page.demo.me);
    const controls = () => page.evaluate(() => {
      const room = window.chorusDemo.room;
      const $ = (id) => document.getElementById(id);
      return {
        role: room.role, joined: room.joined, canTitle: room.can('set_state', 'title'),
        title: $('title-input').disabled, titleButton: $('title-form').querySelector('button').disabled,
        color: $('color-input').disabled, colorButton: $('color-form').querySelector('button').disabled,
        chat: $('chat-input').disabled, note: $('state-note').textContent,
      };
    });
    assert.deepEqual(await controls(), {
      role: 'editor', joined: true, canTitle: true,
      title: false, titleButton: false, color: false, colorButton: false, chat: false, note: '',
    });

    // The host demotes the page: its role, room.can and the state controls follow.
    peer.send({ op: 'role', member: page.demo.me, role: 'viewer' });
    await peer.waitFor((e) => e.event === 'ack' && e.op === 'role', 5000, 'the role ack');
    const changed = await peer.waitFor((e) => e.event === 'role_changed' && e.id === page.demo.me, 5000, 'the role change at the peer');
    assert.equal(changed.role, 'viewer');
    assert.equal(changed.by, peer.me);
    await page.waitForFunction(() => window.chorusDemo.room.role === 'viewer'
      && document.getElementById('title-input').disabled, null, { timeout: 5000 });
    assert.deepEqual(await controls(), {
      role: 'viewer', joined: true, canTitle: false,
      title: true, titleButton: true, color: true, colorButton: true, chat: false, note: 'viewers cannot change the state',
    });
    await page.locator('#chat li.system', { hasText: 'you are now viewer (by rusty)' }).waitFor({ timeout: 5000 });
    await page.locator('#members li', { hasText: 'ada (you)' }).filter({ hasText: 'viewer' }).waitFor({ timeout: 5000 });
    // Not only the interface: the server refuses a viewer's write.
    const refused = await withTimeout(page.evaluate(() => window.chorusDemo.room.setState('title', 'from a viewer')
      .then(() => null, (e) => ({ name: e.name, code: e.code }))), 5000, 'the viewer\'s setState to settle');
    assert.deepEqual(refused, { name: 'forbidden', code: 300 });

    // The host kicks the page: the page shows its banner and leaves the room's controls off.
    peer.send({ op: 'kick', member: page.demo.me, reason: 'test over' });
    await peer.waitFor((e) => e.event === 'ack' && e.op === 'kick', 5000, 'the kick ack');
    const kicked = await peer.waitFor((e) => e.event === 'member_kicked' && e.id === page.demo.me, 5000, 'the kick at the peer');
    assert.equal(kicked.reason, 'test over');
    assert.ok(kicked.ban_ms > 0, JSON.stringify(kicked));
    await page.locator('#banner.show', { hasText: `You were removed from ${room} by rusty: test over` }).waitFor({ timeout: 5000 });
    assert.deepEqual(await controls(), {
      role: 'viewer', joined: false, canTitle: false,
      title: true, titleButton: true, color: true, colorButton: true, chat: true, note: 'not in the room any more',
    });

    // Rejoining from the same, still-open connection: banned.
    const again = await withTimeout(page.evaluate(({ room, password }) => window.chorusDemo.client.join(room, { name: 'ada', password })
      .then(() => null, (e) => ({ name: e.name, code: e.code, retryAfterMs: e.retryAfterMs })), { room, password: PASSWORD }),
    5000, 'the rejoin to settle');
    assert.ok(again, 'the kicked page rejoined');
    assert.equal(again.name, 'banned');
    assert.equal(again.code, 208);
    assert.ok(again.retryAfterMs > 0 && again.retryAfterMs <= kicked.ban_ms, JSON.stringify({ again, kicked }));

    // Reloading the page (a new connection, the right password): banned too, on the banner.
    const reload = await joinRefused(browser, demoUrl(server, { room, name: 'ada', transport: param, password: PASSWORD }), 'banned');
    assert.equal(reload.error.code, 208);
    assert.ok(reload.error.retryAfterMs > 0, JSON.stringify(reload.error));

    // The host saw no one come back.
    assert.ok(!peer.events.some((e) => e.event === 'member_joined' && e.id !== page.demo.me && e.name === 'ada'),
      JSON.stringify(peer.events));
  });
}

for (const { label, param, expected } of TRANSPORTS) {
  test(`Chromium: a demo page (editor) may not kick or close; the native host closes the room and the page says so over ${label}`, { timeout: 60000 }, async (t) => {
    const server = await startServer(t);
    const room = `closing-${param}`;
    const peer = await startPeer(t, server, { room, name: 'rusty', transport: param === 'ws' ? 'websocket' : 'webtransport', echo: false });
    const browser = await launchChromium(t);
    const page = await openDemo(browser, demoUrl(server, { room, name: 'ada', transport: param }));
    assert.equal(page.demo.transport, expected);
    assert.equal(page.demo.role, 'editor');
    await peer.waitFor((e) => e.event === 'member_joined' && e.id === page.demo.me, 5000, 'the peer to see ada join');

    // Host-only actions from an editor: predicted false by room.can, refused by the server.
    const tried = await withTimeout(page.evaluate(async (host) => {
      const room = window.chorusDemo.room;
      const outcome = (p) => p.then(() => 'done', (e) => `${e.name} ${e.code}`);
      return {
        can: { kick: room.can('kick'), close: room.can('close_room') },
        kick: await outcome(room.kick(host, 'coup')),
        close: await outcome(room.close('mine now')),
      };
    }, peer.me), 5000, 'the editor\'s kick and close to settle');
    assert.deepEqual(tried, { can: { kick: false, close: false }, kick: 'forbidden 300', close: 'forbidden 300' });
    assert.ok(!peer.events.some((e) => e.event === 'member_kicked' || e.event === 'room_closed'), JSON.stringify(peer.events));

    // The host closes the room: the page's banner names who and why, its controls go off.
    peer.send({ op: 'close', reason: 'show is over' });
    await peer.waitFor((e) => e.event === 'ack' && e.op === 'close', 5000, 'the close ack');
    await page.locator('#banner.show', { hasText: `The room ${room} was closed by rusty: show is over` }).waitFor({ timeout: 5000 });
    await page.waitForFunction(() => !window.chorusDemo.room.joined && document.getElementById('chat-input').disabled
      && document.getElementById('title-input').disabled, null, { timeout: 5000 });
    assert.equal(await page.locator('#state-note').textContent(), 'not in the room any more');
  });
}
