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
  DEFAULT_RATE_LIMITS,
  encodePackHeader,
  splitPackMessage,
} from '../chorus.js';
import { bytesToHex, hexToBytes, loadVectors, normalize } from './support/vectors.js';

const LANES = {
  client: { decode: decodeClientMessage, encode: encodeClientMessage, tags: CLIENT_MESSAGE_TAGS },
  server: { decode: decodeServerMessage, encode: encodeServerMessage, tags: SERVER_MESSAGE_TAGS },
  datagram: { decode: decodeDatagram, encode: encodeDatagram, tags: DATAGRAM_TAGS },
  // A framed PackStreamHeader, as it starts a pack stream or pack-lane message.
  pack: {
    decode(bytes) {
      const { header, content } = splitPackMessage(bytes);
      assert.equal(content.length, 0, 'a header vector holds no content');
      return header;
    },
    encode: encodePackHeader,
    tags: 2,
    tagOf: (bytes) => bytes[1], // after the one-byte length prefix
  },
};

const vectors = loadVectors();

test('the vectors file holds every lane', () => {
  assert.ok(vectors.length >= 63, `only ${vectors.length} vectors`);
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
    const tagOf = lane.tagOf ?? ((bytes) => bytes[0]);
    const seen = new Set(vectors.filter((v) => v.lane === laneName).map((v) => tagOf(hexToBytes(v.hex))));
    for (let tag = 0; tag < lane.tags; tag++) assert.ok(seen.has(tag), `${laneName} tag ${tag} has no vector`);
  }
});

test('u64 values above 2^53 decode exactly, as bigints', () => {
  const hello = decodeServerMessage(hexToBytes(vectors.find((v) => v.name === 'server_hello').hex)).Hello;
  assert.equal(hello.session_id, 81985529216486895n);
  assert.equal(hello.server_time, 1790000000000000n);
  assert.equal(hello.max_datagram_size, 1211);
  assert.deepEqual(hello.limits, { ...DEFAULT_LIMITS });
  assert.deepEqual(hello.rate_limits, JSON.parse(JSON.stringify(DEFAULT_RATE_LIMITS)));
});

test('client vectors pass the default limits', () => {
  for (const v of vectors.filter((x) => x.lane === 'client' || x.lane === 'datagram')) {
    LANES[v.lane].decode(hexToBytes(v.hex), DEFAULT_LIMITS);
  }
});

test('a pack message splits into its header and the content after it', () => {
  const header = { Upload: { hash: new Uint8Array(32).fill(7), offset: 1n << 20n } };
  const framed = encodePackHeader(header);
  const message = new Uint8Array([...framed, ...new TextEncoder().encode('content')]);
  const { header: back, content } = splitPackMessage(message);
  assert.deepEqual(normalize(back), normalize(header));
  assert.equal(new TextDecoder().decode(content), 'content');
  for (let end = 0; end < framed.length; end++) assert.throws(() => splitPackMessage(message.subarray(0, end)), { name: 'malformed' });
  const short = new Uint8Array([...encodePackHeader({ Upload: { hash: new Uint8Array(32), offset: 0 } })]);
  short[0] -= 1; // a 31-byte hash in a shorter frame
  short[2] = 31;
  assert.throws(() => splitPackMessage(short.subarray(0, short.length - 1)), (e) => e.kind === 'limit_exceeded' && e.detail.actual === 31);
  assert.throws(() => encodePackHeader({ Upload: { hash: new Uint8Array(31), offset: 0 } }), { name: 'invalid_argument' });
  assert.throws(() => splitPackMessage(Uint8Array.of(0xff, 0xff, 0x03)), (e) => e.kind === 'frame_too_large');
  assert.throws(() => splitPackMessage(Uint8Array.of(0x01, 0x05)), (e) => e.kind === 'unknown_tag');
});
