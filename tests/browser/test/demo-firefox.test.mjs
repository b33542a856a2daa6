// The demo page in Firefox ESR. Playwright cannot drive stock Firefox, so the
// page runs its own self-test (?selftest=...) and POSTs the result to a listener
// this test runs; Firefox itself is started headless with a fresh profile.

import test from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, startListener, launchFirefox, startPeer, selfTestUrl, selfTestResult, summarize,
} from '../lib/harness.mjs';

for (const { label, param, expected } of [
  { label: 'WebTransport', param: 'wt', expected: 'webtransport' },
  { label: 'WebSocket (?transport=ws)', param: 'ws', expected: 'websocket' },
]) {
  test(`Firefox: the demo's self-test (second client, typed errors) passes over ${label}`, { timeout: 60000 }, async (t) => {
    // Ticks up to 1200 bytes: the largest then depends on the browser's datagram size.
    const server = await startServer(t, { args: ['--max-tick-payload-bytes', '1200'] });
    const listener = await startListener(t);
    const firefox = launchFirefox(t, selfTestUrl(server, listener, { selftest: 'basic', room: `firefox-${param}`, name: 'firefox', transport: param }));
    const result = await selfTestResult(listener, 50000, () => `Firefox output:\n${firefox.output()}`);
    t.diagnostic(summarize(result));
    assert.equal(result.ok, true, `${result.error}\n${summarize(result)}\n${listener.logs()}`);
    assert.equal(result.transport, expected);
    assert.match(result.userAgent, /Firefox\//);
    assert.equal(result.crossOriginIsolated, true);
  });
}

test('Firefox: a demo page and the native Rust peer exchange ticks over WebTransport', { timeout: 60000 }, async (t) => {
  const server = await startServer(t);
  const room = 'firefox-native';
  const peer = await startPeer(t, server, { room, name: 'rtt-peer', transport: 'webtransport' });
  const listener = await startListener(t);
  const firefox = launchFirefox(t, selfTestUrl(server, listener, { selftest: 'rtt', count: 200, peer: 'rtt-peer', room, name: 'firefox', transport: 'wt' }));
  const result = await selfTestResult(listener, 50000, () => `Firefox output:\n${firefox.output()}`);
  assert.equal(result.ok, true, JSON.stringify(result));
  assert.equal(result.transport, 'webtransport');
  assert.ok(result.count >= 180, `only ${result.count} of 200 ticks came back (${result.lost} lost)`);
  const joined = await peer.waitFor((e) => e.event === 'member_joined' && e.name === 'firefox', 1000, 'the peer to see Firefox join');
  assert.ok(peer.events.some((e) => e.event === 'tick' && e.sender === joined.id), 'the peer received the page ticks');
  t.diagnostic(`Firefox tick RTT through the native echo: p50 ${result.p50} ms, p99 ${result.p99} ms over ${result.count}`);
});
