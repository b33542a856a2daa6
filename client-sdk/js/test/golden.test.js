// PROTOCOL.md §12: for every golden vector, decode its hex with its lane's
// decoder, compare with `value`, re-encode and get the same bytes back.

import test from 'node:test';
import assert from 'node:assert/strict';
import {
  decodeClientMessage,
  decodeDatagram,
  decodeServerMessage,
  encodeClientMessage,
  encodeDatagram,
  encodeServerMessage,
  CLIENT_MESSAGE_TAGS,
  SERVER_MESSAGE_TAGS,
  DATAGRAM_TAGS,
  DEFAULT_LIMITS,
} from '../chorus.js';
import { bytesToHex, hexToBytes, loadVectors, normalize } from './support/vectors.js';

const LANES = {
  client: { decode: decodeClientMessage, encode: encodeClientMessage, tags: CLIENT_MESSAGE_TAGS },
  server: { decode: decodeServerMessage, encode: encodeServerMessage, tags: SERVER_MESSAGE_TAGS },
  datagram: { decode: decodeDatagram, encode: encodeDatagram, tags: DATAGRAM_TAGS },
};

const vectors = loadVectors();

test('the vectors file holds every lane', () => {
  assert.ok(vectors.length >= 27, `only ${vectors.length} vectors`);
  for (const lane of Object.keys(LANES)) {
    assert.ok(vectors.some((v) => v.lane === lane), `no ${lane} vector`);
  }
  for (const v of vectors) assert.ok(LANES[v.lane], `vector ${v.name} has unknown lane ${v.lane}`);
});

for (const v of vectors) {
  test(`golden vector ${v.name} (${v.lane})`, () => {
    const lane = LANES[v.lane];
    const bytes = hexToBytes(v.hex);
    const decoded = lane.decode(bytes);
    assert.deepEqual(normalize(decoded), normalize(v.value));
    assert.equal(bytesToHex(lane.encode(decoded)), v.hex, 're-encoding the decoded value');
    // The serde-JSON value itself (numbers, arrays of numbers) encodes to the same bytes.
    assert.equal(bytesToHex(lane.encode(v.value)), v.hex, 'encoding the JSON value');
  });
}

test('the vectors cover every message tag', () => {
  for (const [laneName, lane] of Object.entries(LANES)) {
    const seen = new Set(vectors.filter((v) => v.lane === laneName).map((v) => hexToBytes(v.hex)[0]));
    for (let tag = 0; tag < lane.tags; tag++) assert.ok(seen.has(tag), `${laneName} tag ${tag} has no vector`);
  }
});

test('u64 values above 2^53 decode exactly, as bigints', () => {
  const hello = decodeServerMessage(hexToBytes(vectors.find((v) => v.name === 'server_hello').hex)).Hello;
  assert.equal(hello.session_id, 81985529216486895n);
  assert.equal(hello.server_time, 1790000000000000n);
  assert.equal(hello.max_datagram_size, 1211);
  assert.deepEqual(hello.limits, { ...DEFAULT_LIMITS });
});

test('client vectors pass the default limits', () => {
  for (const v of vectors.filter((x) => x.lane !== 'server')) {
    LANES[v.lane].decode(hexToBytes(v.hex), DEFAULT_LIMITS);
  }
});
