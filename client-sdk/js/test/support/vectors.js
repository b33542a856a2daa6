// Golden vectors (protocol/golden/vectors.json) and helpers to compare codec
// values with their serde-JSON form. Imported by the tests; running it alone
// does nothing.

import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const VECTORS_PATH = fileURLToPath(new URL('../../../../protocol/golden/vectors.json', import.meta.url));

/**
 * A JSON parser that keeps integers exact: integers beyond 2^53 become
 * bigints (JSON.parse would round session_id 81985529216486895).
 */
export function parseJsonExact(text) {
  let i = 0;
  const ws = () => {
    while (/\s/.test(text[i])) i++;
  };
  const fail = (what) => {
    throw new SyntaxError(`JSON: ${what} at ${i}`);
  };
  function value() {
    ws();
    const c = text[i];
    if (c === '{') {
      i++;
      const out = {};
      ws();
      if (text[i] === '}') {
        i++;
        return out;
      }
      for (;;) {
        ws();
        const key = value();
        if (typeof key !== 'string') fail('object key');
        ws();
        if (text[i++] !== ':') fail('expected :');
        out[key] = value();
        ws();
        const sep = text[i++];
        if (sep === '}') return out;
        if (sep !== ',') fail('expected , or }');
      }
    }
    if (c === '[') {
      i++;
      const out = [];
      ws();
      if (text[i] === ']') {
        i++;
        return out;
      }
      for (;;) {
        out.push(value());
        ws();
        const sep = text[i++];
        if (sep === ']') return out;
        if (sep !== ',') fail('expected , or ]');
      }
    }
    if (c === '"') {
      const start = i;
      i++;
      while (text[i] !== '"') i += text[i] === '\\' ? 2 : 1;
      i++;
      return JSON.parse(text.slice(start, i));
    }
    const m = /^-?\d+(\.\d+)?([eE][+-]?\d+)?/.exec(text.slice(i, i + 64));
    if (m) {
      i += m[0].length;
      if (m[1] || m[2]) return Number(m[0]);
      const n = Number(m[0]);
      return Number.isSafeInteger(n) ? n : BigInt(m[0]);
    }
    for (const [word, v] of [['true', true], ['false', false], ['null', null]]) {
      if (text.startsWith(word, i)) {
        i += word.length;
        return v;
      }
    }
    return fail('unexpected character');
  }
  const result = value();
  ws();
  if (i !== text.length) fail('trailing characters');
  return result;
}

/** Every vector: `{ name, lane, hex, value }`. */
export function loadVectors() {
  return parseJsonExact(readFileSync(VECTORS_PATH, 'utf8'));
}

export function hexToBytes(hex) {
  return new Uint8Array(Buffer.from(hex, 'hex'));
}

export function bytesToHex(bytes) {
  return Buffer.from(bytes).toString('hex');
}

/**
 * A canonical form for comparing a decoded codec value with a JSON value:
 * every integer becomes a bigint, byte arrays (Uint8Array) become arrays.
 */
export function normalize(v) {
  if (typeof v === 'number') {
    if (!Number.isInteger(v)) throw new TypeError(`non-integer ${v}`);
    return BigInt(v);
  }
  if (v instanceof Uint8Array) return Array.from(v, (b) => BigInt(b));
  if (Array.isArray(v)) return v.map(normalize);
  if (v !== null && typeof v === 'object') {
    const out = {};
    for (const key of Object.keys(v).sort()) out[key] = normalize(v[key]);
    return out;
  }
  return v;
}
