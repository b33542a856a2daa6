// The harness itself, without the SDK: both browsers reach a real server over
// raw WebTransport (hello exchange on the control stream) and report back.
// When a page test fails, this one says whether the browser or the SDK is at fault.

import test from 'node:test';
import assert from 'node:assert/strict';
import { startServer, startListener, launchChromium, launchFirefox } from '../lib/harness.mjs';

// A page that opens a WebTransport session, sends ClientMessage::Hello and reads
// the start of ServerMessage::Hello (PROTOCOL.md §3, §4), then POSTs what it saw.
const PROBE = `<!doctype html><meta charset="utf-8"><title>probe</title><script type="module">
const q = new URLSearchParams(location.search);
const report = (o) => fetch(q.get('report'), { method: 'POST', body: JSON.stringify(o) }).catch(() => {});
try {
  const value = Uint8Array.from(q.get('hash').match(/../g), (h) => parseInt(h, 16));
  const wt = new WebTransport(q.get('wt'), { serverCertificateHashes: [{ algorithm: 'sha-256', value }] });
  await wt.ready;
  const stream = await wt.createBidirectionalStream();
  const name = new TextEncoder().encode('probe');
  // Hello { version 2.0, client_name, capabilities 0, options [] }
  const body = [0, 2, 0, name.length, ...name, 0, 0];
  await stream.writable.getWriter().write(new Uint8Array([body.length, ...body]));
  const reader = stream.readable.getReader();
  const got = [];
  while (got.length < 6) { const { value, done } = await reader.read(); if (done) break; got.push(...value); }
  // Skip the frame's varint length prefix; then tag 0 (Hello), major 2, minor 0.
  let at = 0;
  while (got[at] & 0x80) at += 1;
  at += 1;
  await report({ kind: 'result', ok: got[at] === 0 && got[at + 1] === 2 && got[at + 2] === 0,
    head: got.slice(0, at + 3), maxDatagramSize: wt.datagrams.maxDatagramSize, isSecureContext, userAgent: navigator.userAgent });
  wt.close();
} catch (e) {
  await report({ kind: 'result', ok: false, error: String(e), isSecureContext, hasWebTransport: typeof WebTransport });
}
</script>`;

function probeUrl(listener, server) {
  const q = new URLSearchParams({ wt: server.wtUrl, hash: server.certHash, report: listener.url });
  return `${listener.base}/probe.html?${q}`;
}

test('Chromium reaches the server over raw WebTransport', { timeout: 60000 }, async (t) => {
  const server = await startServer(t);
  const listener = await startListener(t, { '/probe.html': PROBE });
  const browser = await launchChromium(t);
  const page = await browser.newPage();
  await page.goto(probeUrl(listener, server));
  const result = await listener.waitFor((m) => m.kind === 'result', 30000, 'the probe result');
  assert.equal(result.ok, true, JSON.stringify(result));
  t.diagnostic(`Chromium: maxDatagramSize ${result.maxDatagramSize}; ${result.userAgent}`);
});

test('Firefox reaches the server over raw WebTransport', { timeout: 60000 }, async (t) => {
  const server = await startServer(t);
  const listener = await startListener(t, { '/probe.html': PROBE });
  const firefox = launchFirefox(t, probeUrl(listener, server));
  const result = await listener.waitFor((m) => m.kind === 'result', 45000, 'the probe result')
    .catch((e) => { throw new Error(`${e.message}\nFirefox output:\n${firefox.output()}`); });
  assert.equal(result.ok, true, JSON.stringify(result));
  t.diagnostic(`Firefox: maxDatagramSize ${result.maxDatagramSize}; ${result.userAgent}`);
});
