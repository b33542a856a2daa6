// End to end over WebSocket against a real server: starts target/debug/chorus
// (or $CHORUS_BIN) on a free port and runs test/support/e2e-scenario.js in a
// child node with a global WebSocket. Skipped when the binary is missing
// (build it with `cargo build -p chorus-server`), and skipped at run time when
// the binary is stale: it answers this SDK's hello with VersionMismatch (it
// was built for an older protocol major version). Node has no WebTransport;
// the real-browser tests cover that transport.

import test from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const binary = process.env.CHORUS_BIN || fileURLToPath(new URL('../../../target/debug/chorus', import.meta.url));
const scenario = fileURLToPath(new URL('./support/e2e-scenario.js', import.meta.url));

/** Starts the server; resolves with its port once it prints its WebTransport URL. */
function startServer(t, extraArgs = []) {
  const certDir = mkdtempSync(join(tmpdir(), 'chorus-js-e2e-'));
  // Rooms are kept on disk, as by default, in a directory of this server's own.
  const dataDir = join(certDir, 'data');
  const server = spawn(binary, ['--listen', '127.0.0.1:0', '--cert-dir', certDir, '--data-dir', dataDir, '--log', 'warn', '--no-demo', ...extraArgs], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.after(() => {
    server.kill();
    rmSync(certDir, { recursive: true, force: true });
  });
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`the server printed no URL in time:\n${out}`)), 15_000);
    const onData = (chunk) => {
      out += chunk;
      const m = /WebTransport\s+https:\/\/127\.0\.0\.1:(\d+)\/chorus/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    };
    server.stdout.on('data', onData);
    server.stderr.on('data', (chunk) => {
      out += chunk;
    });
    server.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the server exited with ${code}:\n${out}`));
    });
  });
}

function runScenario(args) {
  const flags = typeof WebSocket === 'undefined' ? ['--experimental-websocket', '--no-warnings'] : [];
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [...flags, scenario, ...args.map(String)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

/** Runs one scenario and checks its result; a stale server binary skips the test. */
async function scenarioPasses(t, args) {
  const { code, stdout, stderr } = await runScenario(args);
  const last = stdout.trim().split('\n').at(-1) ?? '';
  let result;
  try {
    result = JSON.parse(last);
  } catch {
    assert.fail(`the scenario printed no result (exit ${code}):\n${stdout}\n${stderr}`);
  }
  assert.ok(result.ok, result.error);
  assert.equal(code, 0, stderr);
  if (result.skip) {
    t.skip(result.skip);
    return;
  }
  t.diagnostic(result.steps.join(', '));
}

const noBinary = !existsSync(binary) && `no server binary at ${binary}`;

test('WebSocket end to end against target/debug/chorus', { skip: noBinary, timeout: 60_000 }, async (t) => {
  const port = await startServer(t);
  await scenarioPasses(t, [port]);
});

test('access control end to end (API key, invite code, password, roles, kick, close, rate limit)', { skip: noBinary, timeout: 60_000 }, async (t) => {
  const apiKey = `e2e-key-${process.pid}`;
  let port;
  try {
    port = await startServer(t, ['--api-key', apiKey]);
  } catch (e) {
    // A binary from before access control has no --api-key flag.
    if (/unexpected argument '--api-key'/.test(e.message)) {
      t.skip('the server binary predates access control (no --api-key): rebuild it');
      return;
    }
    throw e;
  }
  await scenarioPasses(t, [port, 'access', apiKey]);
});

test('sync semantics end to end (presence, scheduled timeline, direct and broadcast, snapshot, ICE, pack, resume, leave on close)', { skip: noBinary, timeout: 60_000 }, async (t) => {
  const port = await startServer(t);
  await scenarioPasses(t, [port, 'sync']);
});
