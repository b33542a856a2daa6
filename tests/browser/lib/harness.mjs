// Test harness for the browser tests: a real Chorus server, Debian's Chromium
// (driven by playwright-core), Firefox ESR (started directly; it reports by
// HTTP POST to a listener this process runs) and the native browser_peer.
//
// Everything started here is registered and killed at the end of the test
// (t.after) and, as a last resort, when this process exits.

import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { createServer } from 'node:http';
import { createServer as createTcpServer } from 'node:net';
import { createSocket } from 'node:dgram';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
// Cargo profile of the binaries: debug for the tests, release for `npm run rtt`
// (CHORUS_PROFILE); CHORUS_BIN / CHORUS_PEER_BIN name binaries directly.
export const PROFILE = process.env.CHORUS_PROFILE === 'release' ? 'release' : 'debug';
export const CHORUS_BIN = process.env.CHORUS_BIN ?? join(REPO, 'target', PROFILE, 'chorus');
export const PEER_BIN = process.env.CHORUS_PEER_BIN ?? join(REPO, 'target', PROFILE, 'examples/browser_peer');
export const CHROMIUM = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium';
export const FIREFOX = process.env.FIREFOX_BIN ?? '/usr/bin/firefox-esr';

// The flags the notes on this machine found to work; QUIC stays enabled.
export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

// ------------------------------------------------------------------ utilities

/** Rejects after `ms` with a message naming what was awaited. */
export function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `fn` until it returns a truthy value. */
export async function until(fn, ms, what) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await fn();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms: ${what}`);
    await sleep(25);
  }
}

// Process groups started by this process, killed on exit whatever happens.
const live = new Set();
process.on('exit', () => {
  for (const pid of live) {
    try { process.kill(-pid, 'SIGKILL'); } catch { /* already gone */ }
  }
});

/** Spawns a command in its own process group (so its children die with it). */
function spawnGroup(cmd, args, options = {}) {
  if (!existsSync(cmd)) {
    throw new Error(`${cmd} does not exist (build or install it first: see scripts/test.sh)`);
  }
  const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], detached: true, ...options });
  const exited = new Promise((res) => child.once('exit', (code, signal) => res({ code, signal })));
  child.exited = exited;
  if (child.pid) {
    live.add(child.pid);
    exited.then(() => live.delete(child.pid));
  }
  return child;
}

/** SIGTERM the group, then SIGKILL after `graceMs`; resolves when the leader is gone. */
async function killGroup(child, graceMs = 3000) {
  if (!child?.pid) return;
  const gone = child.exitCode !== null || child.signalCode !== null;
  const signal = (sig) => { try { process.kill(-child.pid, sig); } catch { /* gone */ } };
  if (!gone) {
    signal('SIGTERM');
    const quit = await Promise.race([child.exited.then(() => true), sleep(graceMs).then(() => false)]);
    if (!quit) {
      signal('SIGKILL');
      await withTimeout(child.exited, 5000, `pid ${child.pid} to die`).catch(() => {});
    }
  }
  // Stragglers of the group (a browser's helper processes).
  signal('SIGKILL');
  live.delete(child.pid);
}

/** Keeps the last `max` lines of a stream, for failure messages. */
function tail(stream, max = 200) {
  const lines = [];
  createInterface({ input: stream }).on('line', (line) => {
    lines.push(line);
    if (lines.length > max) lines.shift();
  });
  return lines;
}

/** Builds the server and the native peer (a no-op when they are up to date). */
export function cargoBuild() {
  const profile = PROFILE === 'release' ? ['--release'] : [];
  for (const args of [
    ['build', ...profile, '--locked', '-p', 'chorus-server'],
    ['build', ...profile, '--locked', '-p', 'chorus-client', '--example', 'browser_peer'],
  ]) {
    const r = spawnSync('cargo', args, { cwd: REPO, stdio: 'inherit' });
    if (r.status !== 0) throw new Error(`cargo ${args.join(' ')} failed (${r.status ?? r.signal})`);
  }
}

// --------------------------------------------------------------------- server

/**
 * Starts `chorus --listen 127.0.0.1:0` (or `listen`) with a fresh certificate directory.
 * Resolves with { port, certHash, httpBase, wtUrl, wsUrl, output, stop }.
 */
export async function startServer(t, { listen = '127.0.0.1:0', args = [] } = {}) {
  const certDir = mkdtempSync(join(tmpdir(), 'chorus-cert-'));
  // Rooms are kept on disk, as by default, in a directory of this server's own.
  const child = spawnGroup(CHORUS_BIN, [
    '--listen', listen, '--cert-dir', certDir, '--data-dir', join(certDir, 'data'), '--log', 'warn', ...args,
  ], { env: { ...process.env, RUST_BACKTRACE: '0' } });
  const output = [];
  const server = {
    child,
    certDir,
    output,
    async stop() {
      await killGroup(child);
      rmSync(certDir, { recursive: true, force: true });
    },
  };
  t?.after(() => server.stop());
  const ready = new Promise((res, rej) => {
    const lines = createInterface({ input: child.stdout });
    lines.on('line', (line) => {
      output.push(line);
      const wt = line.match(/WebTransport\s+https:\/\/127\.0\.0\.1:(\d+)\/chorus/);
      if (wt) server.port = Number(wt[1]);
      const hash = line.match(/^certificate sha256: ([0-9a-f]{64})/);
      if (hash) server.certHash = hash[1];
      if (server.port && server.certHash) res();
    });
    child.exited.then(({ code, signal }) =>
      rej(new Error(`chorus exited (${code ?? signal}) before it was ready:\n${output.join('\n')}`)));
  });
  server.stderr = tail(child.stderr); // also keeps stderr drained
  await withTimeout(ready, 20000, `chorus to start (stdout so far:\n${output.join('\n')})`);
  server.httpBase = `http://127.0.0.1:${server.port}`;
  server.wtUrl = `https://127.0.0.1:${server.port}/chorus`;
  server.wsUrl = `ws://127.0.0.1:${server.port}/chorus`;
  return server;
}

/** A port number free for TCP and UDP on both 127.0.0.1 and ::1 (for a localhost server). */
export async function freeDualStackPort() {
  const tryBind = (make) => new Promise((res) => {
    const s = make();
    s.once('error', () => res(false));
    s.once('listening', () => s.close(() => res(true)));
  });
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = 20000 + Math.floor(Math.random() * 40000);
    let free = true;
    for (const host of ['127.0.0.1', '::1']) {
      free &&= await tryBind(() => createTcpServer().listen(port, host));
      free &&= await tryBind(() => {
        const u = createSocket(host === '::1' ? 'udp6' : 'udp4');
        u.bind(port, host);
        return u;
      });
    }
    if (free) return port;
  }
  throw new Error('no port free on both loopback families');
}

/** The demo page's URL on `server` with these query parameters. */
export function demoUrl(server, params = {}, host = '127.0.0.1') {
  return `http://${host}:${server.port}/?${new URLSearchParams(params)}`;
}

// ------------------------------------------------------------------- Chromium

let playwright;
/** Launches Debian's Chromium headless; closed in t.after. */
export async function launchChromium(t) {
  playwright ??= await import('playwright-core');
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install -y chromium`);
  const browser = await playwright.chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    timeout: 30000,
  });
  t?.after(() => withTimeout(browser.close(), 10000, 'Chromium to close').catch(() => {}));
  return browser;
}

/** Opens `url` in a new page; collects console output and page errors for diagnostics. */
export async function openPage(browser, url) {
  const page = await browser.newPage();
  page.logs = [];
  page.on('console', (m) => page.logs.push(`[${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => page.logs.push(`[pageerror] ${e.message}`));
  await page.goto(url, { timeout: 20000 });
  return page;
}

/**
 * Opens the demo page and waits until it has joined its room. `page.demo` is
 * { transport, me, role, room }. Failures carry the page's console output.
 */
export async function openDemo(browser, url) {
  const page = await openPage(browser, url);
  try {
    await page.waitForFunction(() => window.chorusDemo !== undefined, null, { timeout: 15000 });
    page.demo = await page.evaluate(async () => {
      const { client, room } = await window.chorusDemo.joined;
      return { transport: client.transport, me: room.me, role: room.role, room: room.id };
    });
  } catch (e) {
    throw new Error(`the demo at ${url} did not join: ${e.message}\npage console:\n${page.logs.join('\n')}`);
  }
  return page;
}

// -------------------------------------------------------------------- Firefox

/** Prefs for a quiet, first-run-free headless profile. */
const FIREFOX_PREFS = {
  'browser.shell.checkDefaultBrowser': false,
  'browser.startup.homepage_override.mstone': 'ignore',
  'browser.startup.page': 0,
  'browser.aboutwelcome.enabled': false,
  'browser.newtabpage.enabled': false,
  'browser.sessionstore.resume_from_crash': false,
  'browser.tabs.warnOnClose': false,
  'browser.safebrowsing.malware.enabled': false,
  'browser.safebrowsing.phishing.enabled': false,
  'browser.safebrowsing.downloads.enabled': false,
  'browser.safebrowsing.blockedURIs.enabled': false,
  'browser.region.update.enabled': false,
  'browser.search.update': false,
  'app.update.auto': false,
  'app.update.enabled': false,
  'app.normandy.enabled': false,
  'app.shield.optoutstudies.enabled': false,
  'extensions.update.enabled': false,
  'extensions.getAddons.cache.enabled': false,
  'datareporting.policy.dataSubmissionEnabled': false,
  'datareporting.healthreport.uploadEnabled': false,
  'toolkit.telemetry.enabled': false,
  'toolkit.telemetry.unified': false,
  'toolkit.telemetry.reportingpolicy.firstRun': false,
  'toolkit.startup.max_resumed_crashes': -1,
  'network.captive-portal-service.enabled': false,
  'network.connectivity-service.enabled': false,
  'network.dns.disablePrefetch': true,
  'network.prefetch-next': false,
  'services.settings.poll_interval': 999999999,
  // WebTransport is on by default in ESR 153; say so anyway.
  'network.http.http3.enable': true,
  'network.webtransport.enabled': true,
  'network.webtransport.datagrams.enabled': true,
};

/**
 * Starts `firefox-esr --headless --no-remote --profile <new dir> URL`.
 * Killed (whole process group) and its profile removed in t.after.
 */
export function launchFirefox(t, url) {
  if (!existsSync(FIREFOX)) throw new Error(`${FIREFOX} is missing: apt-get install -y firefox-esr`);
  const profile = mkdtempSync(join(tmpdir(), 'chorus-firefox-'));
  writeFileSync(join(profile, 'user.js'),
    Object.entries(FIREFOX_PREFS).map(([k, v]) => `user_pref(${JSON.stringify(k)}, ${JSON.stringify(v)});\n`).join(''));
  const child = spawnGroup(FIREFOX, ['--headless', '--no-remote', '--profile', profile, url], {
    env: { ...process.env, MOZ_HEADLESS: '1', MOZ_CRASHREPORTER_DISABLE: '1' },
  });
  child.stdin.end();
  const firefox = {
    child,
    stdout: tail(child.stdout),
    stderr: tail(child.stderr),
    output() {
      return [...this.stdout, ...this.stderr].join('\n');
    },
    async stop() {
      await killGroup(child);
      rmSync(profile, { recursive: true, force: true });
    },
  };
  t?.after(() => firefox.stop());
  return firefox;
}

// --------------------------------------------------------- result listener

/**
 * An HTTP listener on 127.0.0.1 that pages POST JSON to (`{ kind: 'log' | 'result', ... }`).
 * Answers with CORS and CORP headers so a cross-origin-isolated page can read the reply.
 * `pages` maps GET paths to HTML served from here (for harness checks).
 */
export async function startListener(t, pages = {}) {
  const messages = [];
  const waiters = new Set();
  const headers = {
    'Access-Control-Allow-Origin': '*',
    'Access-Control-Allow-Methods': 'POST, GET, OPTIONS',
    'Access-Control-Allow-Headers': 'content-type',
    'Cross-Origin-Resource-Policy': 'cross-origin',
  };
  const server = createServer((req, res) => {
    if (req.method === 'OPTIONS') {
      res.writeHead(204, headers).end();
      return;
    }
    if (req.method === 'GET' && pages[req.url.split('?')[0]]) {
      res.writeHead(200, { ...headers, 'Content-Type': 'text/html; charset=utf-8' })
        .end(pages[req.url.split('?')[0]]);
      return;
    }
    if (req.method !== 'POST') {
      res.writeHead(404, headers).end();
      return;
    }
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk) => { body += chunk; });
    req.on('end', () => {
      let message;
      try { message = JSON.parse(body); } catch { message = { kind: 'unparsable', body }; }
      messages.push(message);
      for (const w of waiters) w();
      res.writeHead(204, headers).end();
    });
  });
  await new Promise((res) => server.listen(0, '127.0.0.1', res));
  const listener = {
    url: `http://127.0.0.1:${server.address().port}/report`,
    base: `http://127.0.0.1:${server.address().port}`,
    messages,
    logs() {
      return messages.filter((m) => m.kind === 'log').map((m) => m.text).join('\n');
    },
    /** The first message matching `pred`, waiting up to `ms`. */
    waitFor(pred, ms, what = 'a report from the page') {
      return withTimeout(new Promise((res) => {
        const check = () => {
          const m = messages.find(pred);
          if (m) { waiters.delete(check); res(m); }
        };
        waiters.add(check);
        check();
      }), ms, what);
    },
    close() {
      server.closeAllConnections?.();
      return new Promise((res) => server.close(() => res()));
    },
  };
  t?.after(() => listener.close());
  return listener;
}

// ---------------------------------------------------------------- native peer

/**
 * Starts the native browser_peer example. Resolves once it has joined.
 * { events, waitFor(pred, ms), send(obj), stop() }
 */
export async function startPeer(t, server, { room, name = 'native-peer', transport = 'webtransport', echo = true, extra = [] } = {}) {
  const url = transport === 'websocket' ? server.wsUrl : server.wtUrl;
  const args = ['--url', url, '--cert-hash', server.certHash, '--room', room, '--name', name, '--transport', transport, ...extra];
  if (!echo) args.push('--no-echo');
  const child = spawnGroup(PEER_BIN, args, { env: { ...process.env, RUST_BACKTRACE: '0' } });
  const events = [];
  const waiters = new Set();
  const stderr = tail(child.stderr);
  createInterface({ input: child.stdout }).on('line', (line) => {
    let event;
    try { event = JSON.parse(line); } catch { event = { event: 'unparsable', line }; }
    events.push(event);
    for (const w of waiters) w();
  });
  const peer = {
    child,
    events,
    stderr,
    waitFor(pred, ms = 10000, what = 'a peer event') {
      return withTimeout(new Promise((res, rej) => {
        const check = () => {
          const e = events.find(pred);
          if (e) { waiters.delete(check); res(e); }
        };
        waiters.add(check);
        check();
        child.exited.then(() => { check(); rej(new Error(`browser_peer exited before ${what}; stderr:\n${stderr.join('\n')}`)); });
      }), ms, `${what} (peer events: ${JSON.stringify(events.filter((e) => e.event !== 'tick').slice(-10))})`);
    },
    send(obj) {
      child.stdin.write(`${JSON.stringify(obj)}\n`);
    },
    async stop() {
      if (child.exitCode === null) {
        child.stdin.end(); // leaves the room and exits
        await Promise.race([child.exited, sleep(3000)]);
      }
      await killGroup(child);
    },
  };
  t?.after(() => peer.stop());
  const joined = await peer.waitFor((e) => e.event === 'joined' || e.event === 'fatal' || e.event === 'error', 15000, 'browser_peer to join');
  if (joined.event !== 'joined') throw new Error(`browser_peer could not join: ${JSON.stringify(joined)}`);
  peer.me = joined.me;
  return peer;
}

// ------------------------------------------------------------ demo self-test

/** The demo page in self-test mode, reporting to `listener`. */
export function selfTestUrl(server, listener, params) {
  return demoUrl(server, { ...params, report: listener.url });
}

/**
 * Waits for the page's self-test result; failures say what the page logged. A
 * page error (a module that failed to load) with no result 3 s later fails at once.
 */
export async function selfTestResult(listener, ms, context = () => '') {
  const isResult = (m) => m.kind === 'result';
  try {
    const first = await listener.waitFor((m) => isResult(m) || (m.kind === 'log' && m.text.startsWith('page error')), ms, 'the self-test result');
    if (isResult(first)) return first;
    return await listener.waitFor(isResult, 3000, 'the self-test result after a page error');
  } catch (e) {
    throw new Error(`${e.message}\npage logs:\n${listener.logs()}\n${context()}`);
  }
}

/** One line per self-test check, for t.diagnostic. */
export function summarize(result) {
  const detail = (c) => (!c.ok || c.name.includes('maxTickPayload') ? ` ${JSON.stringify(c.detail)}` : '');
  return (result.checks ?? []).map((c) => `${c.ok ? 'ok  ' : 'FAIL'} ${c.name}${detail(c)}`).join('\n');
}
