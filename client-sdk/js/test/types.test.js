// chorus.d.ts stays in step with chorus.js: every runtime export is declared
// and every declared value exists; the package resolves by its name; and, when
// TypeScript is installed (npm install), the declarations type-check together
// with test/types/usage.ts.

import test from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, existsSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import * as sdk from '../chorus.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const dts = readFileSync(new URL('../chorus.d.ts', import.meta.url), 'utf8');

test('every runtime export is declared in chorus.d.ts, and every declared value exists', () => {
  const declared = new Set([...dts.matchAll(/^export declare (?:const|function|class) (\w+)/gm)].map((m) => m[1]));
  const runtime = new Set(Object.keys(sdk));
  assert.deepEqual([...runtime].filter((n) => !declared.has(n)).sort(), [], 'exported but not declared');
  assert.deepEqual([...declared].filter((n) => !runtime.has(n)).sort(), [], 'declared but not exported');
  for (const name of Object.keys(sdk.codec)) assert.match(dts, new RegExp(`^\\s+${name}: `, 'm'), `codec.${name} is not declared`);
});

test('the package resolves by its name to the same module', async () => {
  const byName = await import('@chorus/client');
  assert.equal(byName.connect, sdk.connect);
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
  assert.equal(pkg.name, '@chorus/client');
  assert.equal(pkg.type, 'module');
  assert.deepEqual(pkg.dependencies ?? {}, {}, 'no runtime dependencies');
});

test('chorus.js is one self-contained module', () => {
  const source = readFileSync(new URL('../chorus.js', import.meta.url), 'utf8');
  assert.doesNotMatch(source, /^\s*import\s/m, 'no static imports');
  assert.doesNotMatch(source, /\bimport\s*\(/, 'no dynamic imports');
  assert.doesNotMatch(source, /\brequire\s*\(/, 'no require');
});

const tsc = fileURLToPath(new URL('../node_modules/typescript/bin/tsc', import.meta.url));
test('chorus.d.ts type-checks with test/types/usage.ts', { skip: !existsSync(tsc) && 'TypeScript is not installed (npm install)' }, () => {
  const result = spawnSync(process.execPath, [tsc, '-p', 'tsconfig.json'], { cwd: root, encoding: 'utf8' });
  assert.equal(result.status, 0, `tsc failed:\n${result.stdout}${result.stderr}`);
});
