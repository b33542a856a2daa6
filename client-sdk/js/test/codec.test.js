// Codec robustness (PROTOCOL.md §2): truncations, trailing bytes, unknown
// tags, bad varints, bools, options and UTF-8, huge declared lengths, and
// invalid values on the encoding side. Every failure is a CodecError.

import test from 'node:test';
import assert from 'node:assert/strict';
import {
  CodecError,
  ChorusError,
  ErrorCode,
  DEFAULT_LIMITS,
  decodeClientMessage,
  decodeDatagram,
  decodeServerMessage,
  encodeClientMessage,
  encodeDatagram,
  encodeServerMessage,
  validateClientMessage,
  utf8Length,
  splitPackMessage,
  CLIENT_MESSAGE_TAGS,
  SERVER_MESSAGE_TAGS,
} from '../chorus.js';
import { hexToBytes, loadVectors } from './support/vectors.js';

/** A framed pack header and nothing after it (content after a header is not an error, but these vectors hold none). */
function decodePackHeaderOnly(bytes) {
  const { header, content } = splitPackMessage(bytes);
  if (content.length > 0) throw new CodecError('trailing', `${content.length} bytes after the pack header`);
  return header;
}

const DECODERS = { client: decodeClientMessage, server: decodeServerMessage, datagram: decodeDatagram, pack: decodePackHeaderOnly };
const vectors = loadVectors();

/** Asserts `fn` throws a CodecError (and nothing else), optionally of `kind`; returns it. */
function codecFails(fn, kind) {
  let error;
  try {
    fn();
  } catch (e) {
    error = e;
  }
  assert.ok(error, 'expected a CodecError, nothing was thrown');
  assert.ok(error instanceof CodecError, `expected a CodecError, got ${error?.constructor?.name}: ${error?.message}`);
  assert.ok(error instanceof ChorusError);
  if (kind) assert.equal(error.kind, kind, error.message);
  return error;
}

test('every truncation of every vector fails with a CodecError', () => {
  for (const v of vectors) {
    const bytes = hexToBytes(v.hex);
    for (let end = 0; end < bytes.length; end++) {
      const e = codecFails(() => DECODERS[v.lane](bytes.subarray(0, end)));
      assert.equal(e.code, ErrorCode.Malformed, `${v.name}[..${end}]: ${e.message}`);
      assert.equal(e.kind, end === 0 ? 'empty' : 'malformed', `${v.name}[..${end}]`);
    }
  }
});

test('trailing bytes are refused', () => {
  for (const v of vectors) {
    const bytes = hexToBytes(v.hex + '00');
    const e = codecFails(() => DECODERS[v.lane](bytes), 'trailing');
    assert.equal(e.code, ErrorCode.Malformed);
  }
});

test('unknown tags are refused before the rest is read', () => {
  for (const [decode, first] of [
    [decodeClientMessage, CLIENT_MESSAGE_TAGS],
    [decodeServerMessage, SERVER_MESSAGE_TAGS],
    [decodeDatagram, 1],
  ]) {
    const e = codecFails(() => decode(Uint8Array.of(first)), 'unknown_tag');
    assert.equal(e.code, ErrorCode.UnknownMessage);
    assert.equal(e.name, 'unknown_message');
    assert.equal(e.tag, first);
    // A multi-byte tag (128) with garbage after it: still unknown_tag, not malformed.
    assert.equal(codecFails(() => decode(Uint8Array.of(0x80, 0x01, 0xff, 0xff)), 'unknown_tag').tag, 128);
  }
  // A tag that is not a valid u32 varint is malformed.
  codecFails(() => decodeServerMessage(Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0x1f)), 'malformed');
  codecFails(() => decodeServerMessage(Uint8Array.of(0x80)), 'malformed');
});

test('unknown nested enum indices, bad bools and option bytes are malformed', () => {
  // member_joined with role 3.
  codecFails(() => decodeServerMessage(hexToBytes('0301060303' + '0000')), 'malformed');
  // member_left with reason 4.
  codecFails(() => decodeServerMessage(hexToBytes('0401070304')), 'malformed');
  // join with JoinOption 8, and with RoomKind 2 and FailoverMode 3.
  codecFails(() => decodeClientMessage(hexToBytes('01010161000001' + '08')), 'malformed');
  codecFails(() => decodeClientMessage(hexToBytes('01010161000001' + '0602')), 'malformed');
  codecFails(() => decodeClientMessage(hexToBytes('01010161000001' + '0703')), 'malformed');
  // hello with HelloOption 2.
  codecFails(() => decodeClientMessage(hexToBytes('000200' + '0161' + '00' + '01' + '02')), 'malformed');
  // presence_changed with Presence 3; timeline with TimelineOp 5; broadcast with Audience 3.
  codecFails(() => decodeServerMessage(hexToBytes('0f010d0203')), 'malformed');
  codecFails(() => decodeClientMessage(hexToBytes('0b010101610500' + '0000')), 'malformed');
  codecFails(() => decodeClientMessage(hexToBytes('0d010103016b00')), 'malformed');
  // join with a policy rule for Action 10, and with role 3 in a rule.
  codecFails(() => decodeClientMessage(hexToBytes('01010161000001' + '04' + '01' + '0a' + '00' + '00')), 'malformed');
  codecFails(() => decodeClientMessage(hexToBytes('01010161000001' + '04' + '01' + '00' + '00' + '0103')), 'malformed');
  // set_role with role 3.
  codecFails(() => decodeClientMessage(hexToBytes('0801010303')), 'malformed');
  // error with ErrorDetail 6 (5 is Sequence, and needs its seq).
  codecFails(() => decodeServerMessage(hexToBytes('0a00900301' + '78' + '06')), 'malformed');
  codecFails(() => decodeServerMessage(hexToBytes('0a00900301' + '78' + '05')), 'malformed');
  assert.deepEqual(decodeServerMessage(hexToBytes('0a00900301' + '78' + '0507')).Error.detail, { Sequence: { current_seq: 7n } });
  // set_password with option byte 2.
  codecFails(() => decodeClientMessage(hexToBytes('09010102')), 'malformed');
  // command_ack with duplicate = 2.
  const e = codecFails(() => decodeServerMessage(hexToBytes('0806010a02')), 'malformed');
  assert.match(e.message, /duplicate/);
  // set_state with if_version option byte 2.
  codecFails(() => decodeClientMessage(hexToBytes('030301057469746c650548656c6c6f02')), 'malformed');
});

test('invalid UTF-8 is malformed; a leading BOM is kept', () => {
  // leave... no strings there; use join with room id bytes ff fe.
  const e = codecFails(() => decodeClientMessage(hexToBytes('010102fffe000000')), 'malformed');
  assert.match(e.message, /UTF-8/);
  assert.match(e.path, /room_id/);
  // Overlong encoding of '/' (c0 af) and a lone surrogate (ed a0 80) are invalid too.
  codecFails(() => decodeClientMessage(hexToBytes('010102c0af000000')), 'malformed');
  codecFails(() => decodeClientMessage(hexToBytes('010103eda080000000')), 'malformed');
  const bom = encodeClientMessage({ Join: { request_id: 1, room_id: '\uFEFFx', display: { name: '', meta: new Uint8Array() }, options: [] } });
  assert.equal(decodeClientMessage(bom).Join.room_id, '\uFEFFx');
});

test('a huge declared length fails without allocating', () => {
  // §2.2: a Join whose room_id claims 4 GiB.
  const e = codecFails(() => decodeClientMessage(Uint8Array.of(1, 9, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x61)), 'malformed');
  assert.match(e.message, /declared length 4294967295 exceeds the 1 bytes left/);
  // A u64-sized length (10 bytes) and a huge Vec count.
  codecFails(() => decodeClientMessage(Uint8Array.of(1, 9, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01)), 'malformed');
  codecFails(() => decodeServerMessage(Uint8Array.of(1, 1, 1, 0x61, 1, 1, 0, 0xff, 0xff, 0xff, 0xff, 0x0f)), 'malformed');
  // A length varint longer than 10 bytes, or over u64.
  codecFails(() => decodeClientMessage(Uint8Array.of(1, 9, ...new Array(10).fill(0x80), 0)), 'malformed');
  codecFails(() => decodeClientMessage(Uint8Array.of(1, 9, ...new Array(9).fill(0xff), 0x02)), 'malformed');
});

test('varints: range per type, padded forms within the length accepted', () => {
  // u16 code: 65535 ok (ff ff 03), 65536 (80 80 04) out of range, 4 bytes too long.
  const err = (code) => hexToBytes(`0a00${code}0000`);
  assert.equal(decodeServerMessage(err('ffff03')).Error.code, 65535);
  codecFails(() => decodeServerMessage(err('808004')), 'malformed');
  codecFails(() => decodeServerMessage(err('80808000')), 'malformed');
  // Padded u16 (81 80 00 = 1) decodes; the re-encoding is minimal.
  assert.equal(decodeServerMessage(err('818000')).Error.code, 1);
  // u32: ff ff ff ff 0f is u32::MAX; a last byte of 0x10 overflows; 6 bytes is too long.
  const leave = (room) => hexToBytes(`0201${room}`);
  assert.equal(decodeClientMessage(leave('ffffffff0f')).Leave.room, 0xffffffff);
  codecFails(() => decodeClientMessage(leave('ffffffff10')), 'malformed');
  codecFails(() => decodeClientMessage(leave('808080808000')), 'malformed');
  assert.equal(decodeClientMessage(leave('8100')).Leave.room, 1);
  // u64: 2^64 - 1 is ff x9 01; last byte 02 overflows.
  const ping = (t) => hexToBytes(`06${t}`);
  assert.equal(decodeClientMessage(ping('ffffffffffffffffff01')).Ping.client_time, (1n << 64n) - 1n);
  codecFails(() => decodeClientMessage(ping('ffffffffffffffffff02')), 'malformed');
  codecFails(() => decodeClientMessage(ping('ffffffffffffffffff8100')), 'malformed');
  assert.equal(decodeClientMessage(ping('8000')).Ping.client_time, 0n);
});

test('u64 values encode from bigints and safe numbers, round trip at the edges', () => {
  for (const t of [0n, 1n, 127n, 128n, 2n ** 53n - 1n, 2n ** 53n, 2n ** 56n, 2n ** 63n, 2n ** 64n - 1n]) {
    const bytes = encodeClientMessage({ Ping: { client_time: t } });
    assert.equal(decodeClientMessage(bytes).Ping.client_time, t);
  }
  assert.deepEqual(encodeClientMessage({ Ping: { client_time: 300 } }), Uint8Array.of(6, 0xac, 0x02));
});

test('encoding refuses values that do not fit the schema', () => {
  const bad = [
    { Leave: { request_id: -1, room: 1 } },
    { Leave: { request_id: 1.5, room: 1 } },
    { Leave: { request_id: 2 ** 32, room: 1 } },
    { Leave: { request_id: '1', room: 1 } },
    { Leave: { request_id: 1 } },
    { Ping: { client_time: -1n } },
    { Ping: { client_time: 2n ** 64n } },
    { Ping: { client_time: 2 ** 53 } },
    { Nope: {} },
    { Leave: { request_id: 1, room: 1 }, Ping: { client_time: 1 } },
    'Leave',
    { Join: { request_id: 1, room_id: 'x', display: { name: 'a', meta: 'not bytes' }, options: [] } },
    { Join: { request_id: 1, room_id: 'x', display: { name: 'a', meta: [256] }, options: [] } },
    { Join: { request_id: 1, room_id: 'x', display: { name: 'a', meta: [] }, options: ['MaxMembers'] } },
    { Join: { request_id: 1, room_id: 'x', display: { name: 'a', meta: [] }, options: [{ CreateIfMissing: null }] } },
    { Join: { request_id: 1, room_id: '\uD800', display: { name: 'a', meta: [] }, options: [] } },
    { Command: { request_id: 1, room: 1, kind: 'k', payload: [], idempotency_key: 5 } },
    null,
  ];
  for (const message of bad) {
    const e = codecFails(() => encodeClientMessage(message), 'invalid');
    assert.equal(e.code, null);
    assert.equal(e.name, 'invalid_argument');
  }
  codecFails(() => encodeServerMessage({ CommandAck: { request_id: 1, room: 1, seq: 1, duplicate: 1 } }), 'invalid');
  codecFails(() => encodeDatagram({ Tick: { room: 1, sender: 1, seq: 2 ** 32, payload: [] } }), 'invalid');
  // Error paths name the field.
  const e = codecFails(() => encodeClientMessage({ Join: { request_id: 1, room_id: 'x', display: { name: 7, meta: [] }, options: [] } }));
  assert.equal(e.path, 'Join.display.name');
});

test('decoding accepts ArrayBuffers and views, and refuses other inputs', () => {
  const bytes = hexToBytes('020201');
  assert.deepEqual(decodeClientMessage(bytes.buffer.slice(0)), { Leave: { request_id: 2, room: 1 } });
  const padded = new Uint8Array([9, 9, 2, 2, 1, 9]);
  assert.deepEqual(decodeClientMessage(padded.subarray(2, 5)), { Leave: { request_id: 2, room: 1 } });
  assert.deepEqual(decodeClientMessage(new DataView(padded.buffer, 2, 3)), { Leave: { request_id: 2, room: 1 } });
  codecFails(() => decodeClientMessage([2, 2, 1]), 'invalid');
  codecFails(() => decodeClientMessage('020201'), 'invalid');
});

test('decoded byte fields are copies, not views of the input', () => {
  const bytes = hexToBytes('050108057469746c65010248690402');
  const value = decodeServerMessage(bytes).StateChanged.value;
  bytes.fill(0);
  assert.deepEqual(Array.from(value), [0x48, 0x69]);
});

test('limits are checked when asked, inclusively', () => {
  const join = (roomId) => encodeClientMessage({ Join: { request_id: 9, room_id: roomId, display: { name: '', meta: [] }, options: [] } });
  decodeClientMessage(join('r'.repeat(128)), DEFAULT_LIMITS);
  const e = codecFails(() => decodeClientMessage(join('r'.repeat(129)), DEFAULT_LIMITS), 'limit_exceeded');
  assert.equal(e.code, ErrorCode.LimitExceeded);
  assert.deepEqual(e.detail, { limit: 128, actual: 129 });
  // Strings are measured in UTF-8 bytes: 64 two-byte characters are 128 bytes.
  decodeClientMessage(join('ü'.repeat(64)), DEFAULT_LIMITS);
  codecFails(() => decodeClientMessage(join('ü'.repeat(64) + 'x'), DEFAULT_LIMITS), 'limit_exceeded');
  const tick = (n) => encodeDatagram({ Tick: { room: 3, sender: 2, seq: 99, payload: new Uint8Array(n) } });
  decodeDatagram(tick(1000), DEFAULT_LIMITS);
  assert.deepEqual(codecFails(() => decodeDatagram(tick(1001), DEFAULT_LIMITS), 'limit_exceeded').detail, { limit: 1000, actual: 1001 });
  assert.deepEqual(
    validateClientMessage({ Command: { request_id: 1, room: 1, kind: 'chat', payload: [], idempotency_key: 'k'.repeat(65) } }, DEFAULT_LIMITS),
    { field: 'idempotency key', limit: 64, actual: 65 },
  );
  assert.equal(validateClientMessage({ Ping: { client_time: 1 } }, DEFAULT_LIMITS), null);
  // The messages of the sync semantics.
  const room = { request_id: 1, room: 1 };
  const cases = [
    [{ Timeline: { ...room, name: 't'.repeat(65), op: 'Play', at: null, expected_seq: null } }, 'timeline name', 64],
    [{ Direct: { ...room, to: 2, kind: 'k'.repeat(65), payload: [] } }, 'message kind', 64],
    [{ Broadcast: { ...room, audience: 'Others', kind: 'k', payload: new Uint8Array(65537) } }, 'message payload', 65536],
    [{ PackUpload: { ...room, hash: new Uint8Array(33), name: 'a.png', media_type: 'image/png', size: 1 } }, 'pack hash', 32],
    [{ PackUpload: { ...room, hash: new Uint8Array(32), name: 'n'.repeat(129), media_type: 'image/png', size: 1 } }, 'pack name', 128],
    [{ PackFetch: { ...room, hash: new Uint8Array(31).fill(1), offset: 0 } }, null, 0],
    [{ Hello: { version: { major: 2, minor: 0 }, client_name: 'c', capabilities: 0, options: [{ Resume: { token: 't', rooms: new Array(17).fill({ room: 1, last_seq: 1 }) } }] } }, 'resume rooms', 16],
  ];
  for (const [message, field, limit] of cases) {
    const v = validateClientMessage(message, DEFAULT_LIMITS);
    if (field === null) assert.equal(v, null);
    else assert.deepEqual([v?.field, v?.limit], [field, limit], JSON.stringify(Object.keys(message)));
  }
});

test('utf8Length agrees with TextEncoder', () => {
  for (const s of ['', 'abc', 'ü', '€', '😀', 'a😀b€ü', '\uD800', '\uDC00x', 'x\uD83D']) {
    assert.equal(utf8Length(s), new TextEncoder().encode(s).length, JSON.stringify(s));
  }
});

test('random and mutated inputs never throw anything but CodecError', () => {
  // Deterministic xorshift PRNG.
  let state = 0x2545f491;
  const rand = () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) / 2 ** 32;
  };
  const check = (decode, bytes) => {
    try {
      decode(bytes);
    } catch (e) {
      assert.ok(e instanceof CodecError, `${e?.constructor?.name}: ${e?.message}`);
    }
  };
  for (let i = 0; i < 3000; i++) {
    const bytes = Uint8Array.from({ length: Math.floor(rand() * 40) }, () => Math.floor(rand() * 256));
    for (const decode of Object.values(DECODERS)) check(decode, bytes);
  }
  for (const v of vectors) {
    const original = hexToBytes(v.hex);
    for (let i = 0; i < 200; i++) {
      const bytes = original.slice();
      const flips = 1 + Math.floor(rand() * 3);
      for (let f = 0; f < flips; f++) bytes[Math.floor(rand() * bytes.length)] = Math.floor(rand() * 256);
      check(DECODERS[v.lane], bytes);
    }
  }
});
