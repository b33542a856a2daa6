// npm run rtt: tick round trips in real browsers against a local server, measured
// and reported (never asserted). The demo page (?selftest=rtt) sends one 64-byte
// tick at a time to the native browser_peer, which echoes it back as its own tick;
// the page times each round trip with performance.now() (5 µs resolution: the page
// is cross-origin isolated). Path: page → server → native peer → server → page.
//
// The server and the peer are release builds (npm run rtt builds them first);
// CHORUS_PROFILE=debug node rtt.mjs measures the debug builds instead.
//
//   RTT_COUNT=1000 RTT_BROWSERS=chromium,firefox RTT_TRANSPORTS=wt,ws npm run rtt

import { loadavg } from 'node:os';
import {
  PROFILE, startServer, startPeer, startListener, launchChromium, launchFirefox, selfTestUrl, selfTestResult,
} from './lib/harness.mjs';

const COUNT = Number(process.env.RTT_COUNT ?? 1000);
const BROWSERS = (process.env.RTT_BROWSERS ?? 'chromium,firefox').split(',');
const TRANSPORTS = (process.env.RTT_TRANSPORTS ?? 'wt,ws').split(',');
const NAMES = { wt: 'webtransport', ws: 'websocket' };

/** A stand-in for node:test's context: collects cleanups, runs them in reverse. */
function scope() {
  const cleanups = [];
  return {
    after: (fn) => cleanups.push(fn),
    async close() {
      for (const fn of cleanups.reverse()) await Promise.resolve().then(fn).catch(() => {});
    },
  };
}

async function measure(browserName, transport) {
  const t = scope();
  try {
    const server = await startServer(t);
    const room = `rtt-${browserName}-${transport}`;
    const peer = await startPeer(t, server, { room, name: 'rtt-peer', transport: NAMES[transport] });
    const listener = await startListener(t);
    const url = selfTestUrl(server, listener, { selftest: 'rtt', count: COUNT, peer: 'rtt-peer', room, name: browserName, transport });
    let output = () => '';
    if (browserName === 'chromium') {
      const browser = await launchChromium(t);
      const page = await browser.newPage();
      await page.goto(url);
    } else {
      const firefox = launchFirefox(t, url);
      output = () => `Firefox output:\n${firefox.output()}`;
    }
    const result = await selfTestResult(listener, 60000 + COUNT * 50, output);
    return { browser: browserName, peerTransport: peer.events[0]?.transport, ...result };
  } finally {
    await t.close();
  }
}

const rows = [];
for (const b of BROWSERS) {
  for (const tr of TRANSPORTS) {
    try {
      rows.push(await measure(b, tr));
    } catch (e) {
      rows.push({ browser: b, transport: NAMES[tr], ok: false, error: e.message });
    }
  }
}

const f = (x) => (x === null || x === undefined ? '-' : x.toFixed(3));
console.log(`\nTick round trip (page → server → native echo peer → server → page), ${COUNT} sequential 64-byte ticks after 50 warm-up, loopback, ${PROFILE} server and peer, load average ${loadavg().map((x) => x.toFixed(2)).join(' ')}:`);
console.log('browser   transport      p50 ms   p90 ms   p99 ms   max ms  mean ms  lost  clock-sync rtt ms');
for (const r of rows) {
  if (!r.ok) {
    console.log(`${r.browser.padEnd(9)} ${String(r.transport).padEnd(13)} failed: ${r.error}`);
    continue;
  }
  console.log(`${r.browser.padEnd(9)} ${r.transport.padEnd(13)} ${[r.p50, r.p90, r.p99, r.max, r.mean].map((x) => f(x).padStart(8)).join(' ')} ${String(r.lost).padStart(5)}  ${f((r.clock?.rttUs ?? NaN) / 1000)}`);
}
for (const r of rows) {
  const { browser, transport, ok, count, lost, p50, p90, p99, min, max, mean, seconds, crossOriginIsolated, error } = r;
  console.log(JSON.stringify({ browser, transport, ok, count, lost, p50, p90, p99, min, max, mean, seconds, crossOriginIsolated, error }));
}
process.exitCode = rows.every((r) => r.ok) ? 0 : 1;
