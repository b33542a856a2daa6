// Control-stream frames (PROTOCOL.md §3) and WebSocket lanes and chunks
// (§1.3), as pure functions.

import test from 'node:test';
import assert from 'node:assert/strict';
import {
  CodecError,
  FrameDecoder,
  WsReassembler,
  encodeClientMessage,
  encodeFrame,
  readFrameLength,
  wsCloseInfo,
  wtCloseInfo,
  wsControlMessages,
  wsTickMessage,
  WS_CHUNK_BYTES,
} from '../chorus.js';
import { hexToBytes } from './support/vectors.js';

function body(n, seed = 1) {
  return Uint8Array.from({ length: n }, (_, i) => (i * 7 + seed) & 0xff);
}

function concat(parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let pos = 0;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}

test('frames as in §3', () => {
  assert.deepEqual(encodeFrame(encodeClientMessage({ Leave: { request_id: 2, room: 1 } })), hexToBytes('03020201'));
  const join = hexToBytes('0101056c6f62627903416461107b22636f6c6f72223a2223653333227d02000108');
  assert.deepEqual(encodeFrame(join).subarray(0, 2), hexToBytes('2101'));
  assert.deepEqual(encodeFrame(body(300)).subarray(0, 2), hexToBytes('ac02'));
  assert.equal(encodeFrame(body(300)).length, 302);
  assert.deepEqual(encodeFrame(new Uint8Array(0)), Uint8Array.of(0));
});

test('frame length prefixes: incomplete, valid, overlong, overflowing', () => {
  assert.equal(readFrameLength(Uint8Array.of()), null);
  assert.equal(readFrameLength(Uint8Array.of(0x80, 0x80)), null);
  assert.deepEqual(readFrameLength(Uint8Array.of(0xac, 0x02, 9)), { value: 300, used: 2 });
  assert.deepEqual(readFrameLength(Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0x0f)), { value: 0xffffffff, used: 5 });
  assert.throws(() => readFrameLength(Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0x1f)), CodecError);
  assert.throws(() => readFrameLength(Uint8Array.of(0x80, 0x80, 0x80, 0x80, 0x80, 0x00)), CodecError);
});

test('the frame decoder splits frames across arbitrary chunks', () => {
  const bodies = Array.from({ length: 50 }, (_, i) => body(i * 7, i));
  const stream = concat(bodies.map(encodeFrame));
  for (const size of [1, 2, 3, 7, 64, 1000, stream.length]) {
    const decoder = new FrameDecoder(1 << 20);
    const out = [];
    for (let pos = 0; pos < stream.length; pos += size) {
      decoder.push(stream.subarray(pos, pos + size));
      let b;
      while ((b = decoder.next()) !== null) out.push(b);
    }
    assert.equal(out.length, bodies.length, `chunk size ${size}`);
    out.forEach((b, i) => assert.deepEqual(b, bodies[i]));
    assert.equal(decoder.buffered, 0);
  }
});

test('the frame decoder refuses an oversized frame before its body arrives', () => {
  const decoder = new FrameDecoder(1000);
  decoder.push(Uint8Array.of(0xe9, 0x07)); // 1001
  assert.throws(
    () => decoder.next(),
    (err) => err instanceof CodecError && err.kind === 'frame_too_large' && err.code === 102 && err.detail.limit === 1000 && err.detail.actual === 1001,
  );
  assert.ok(decoder.buf.length < 1000, 'nothing of the declared size was allocated');
  // A 4 GiB declaration with a tiny buffer: refused at once.
  const huge = new FrameDecoder();
  huge.push(Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0x0f));
  assert.throws(() => huge.next(), (err) => err.kind === 'frame_too_large');
  assert.ok(huge.buf.length < 1024);
});

test('the frame decoder accepts a frame exactly at the limit, and a bad prefix is malformed', () => {
  const decoder = new FrameDecoder(1000);
  decoder.push(encodeFrame(body(1000)));
  assert.equal(decoder.next().length, 1000);
  const bad = new FrameDecoder(1000);
  bad.push(Uint8Array.of(0x80, 0x80, 0x80, 0x80, 0x80));
  assert.throws(() => bad.next(), (err) => err.kind === 'malformed' && err.code === 100);
});

test('the frame decoder grows only with the bytes that arrived', () => {
  const decoder = new FrameDecoder();
  decoder.push(Uint8Array.of(0x80, 0x80, 0x80, 0x02)); // declares 4 MiB
  assert.equal(decoder.next(), null);
  decoder.push(body(100));
  assert.equal(decoder.next(), null);
  assert.ok(decoder.buf.length <= 1024, `buffer is ${decoder.buf.length}`);
});

test('control messages up to 16 KiB are one 0x00 message', () => {
  for (const n of [0, 1, WS_CHUNK_BYTES]) {
    const messages = wsControlMessages(body(n));
    assert.equal(messages.length, 1);
    assert.equal(messages[0][0], 0x00);
    assert.deepEqual(messages[0].subarray(1), body(n));
  }
  assert.deepEqual(wsControlMessages(hexToBytes('020201')), [hexToBytes('00020201')]);
});

test('larger control messages are 0x02 chunks and a closing 0x00 piece', () => {
  for (const n of [WS_CHUNK_BYTES + 1, 2 * WS_CHUNK_BYTES, 2 * WS_CHUNK_BYTES + 5, 100000]) {
    const b = body(n);
    const messages = wsControlMessages(b);
    assert.equal(messages.length, Math.ceil(n / WS_CHUNK_BYTES), `n=${n}`);
    messages.slice(0, -1).forEach((m) => {
      assert.equal(m[0], 0x02);
      assert.equal(m.length, 1 + WS_CHUNK_BYTES);
    });
    assert.equal(messages.at(-1)[0], 0x00);
    assert.deepEqual(concat(messages.map((m) => m.subarray(1))), b);
  }
  assert.deepEqual(
    wsControlMessages(Uint8Array.of(1, 2, 3, 4, 5), 2).map((m) => Array.from(m)),
    [[2, 1, 2], [2, 3, 4], [0, 5]],
  );
});

test('the reassembler joins chunks, with ticks between them', () => {
  const big = body(50000);
  const tick = wsTickMessage(hexToBytes('000102e80700'));
  assert.deepEqual(Array.from(tick.subarray(0, 2)), [1, 0]);
  const r = new WsReassembler(1 << 20);
  const [first, ...rest] = wsControlMessages(big);
  assert.equal(r.push(first), null);
  assert.deepEqual(r.push(tick), { lane: 'tick', body: hexToBytes('000102e80700') });
  let out = null;
  for (const m of rest) {
    assert.equal(out, null);
    out = r.push(m);
  }
  assert.equal(out.lane, 'control');
  assert.deepEqual(out.body, big);
  // Whole messages after it come through as they are.
  assert.deepEqual(r.push(hexToBytes('00020201')), { lane: 'control', body: hexToBytes('020201') });
  // An empty chunk still starts a chunked message.
  assert.equal(r.push(Uint8Array.of(2)), null);
  assert.deepEqual(r.push(Uint8Array.of(0, 9)), { lane: 'control', body: Uint8Array.of(9) });
});

test('the reassembler skips empty messages and unknown lanes', () => {
  const r = new WsReassembler();
  assert.equal(r.push(new Uint8Array(0)), null);
  assert.equal(r.push(Uint8Array.of(4, 1, 2)), null);
  assert.equal(r.push(Uint8Array.of(0xff)), null);
  // 0x03 is the pack lane: self-contained, even between the pieces of a control message.
  assert.deepEqual(r.push(Uint8Array.of(3, 1, 2)), { lane: 'pack', body: Uint8Array.of(1, 2) });
  assert.equal(r.push(Uint8Array.of(2, 9)), null);
  assert.deepEqual(r.push(Uint8Array.of(3, 5)), { lane: 'pack', body: Uint8Array.of(5) });
  assert.deepEqual(r.push(Uint8Array.of(0, 8)), { lane: 'control', body: Uint8Array.of(9, 8) });
  assert.deepEqual(r.push(Uint8Array.of(0, 7)), { lane: 'control', body: Uint8Array.of(7) });
});

test('the reassembled size counts against max_frame_bytes', () => {
  const r = new WsReassembler(10);
  assert.deepEqual(r.push(Uint8Array.of(0, ...body(10))).body.length, 10);
  assert.throws(() => r.push(Uint8Array.of(0, ...body(11))), (e) => e.kind === 'frame_too_large' && e.code === 102);
  const chunked = new WsReassembler(10);
  assert.equal(chunked.push(Uint8Array.of(2, ...body(6))), null);
  assert.throws(() => chunked.push(Uint8Array.of(0, ...body(5))), (e) => e.kind === 'frame_too_large');
  const chunks = new WsReassembler(10);
  chunks.push(Uint8Array.of(2, ...body(6)));
  assert.throws(() => chunks.push(Uint8Array.of(2, ...body(5))), (e) => e.detail.actual === 11);
});

test('close codes: WebSocket 1000/1001 normal, 4000+N error N, others lost; WebTransport code', () => {
  assert.deepEqual(wsCloseInfo(1000, 'bye'), { kind: 'normal', reason: 'bye' });
  assert.deepEqual(wsCloseInfo(1001, ''), { kind: 'normal', reason: '' });
  assert.deepEqual(wsCloseInfo(4400, 'slow'), { kind: 'error', code: 400, reason: 'slow' });
  assert.deepEqual(wsCloseInfo(4501, ''), { kind: 'error', code: 501, reason: '' });
  assert.equal(wsCloseInfo(1006, '').kind, 'lost');
  assert.equal(wsCloseInfo(3000, 'x').kind, 'lost');
  assert.deepEqual(wtCloseInfo({ closeCode: 0, reason: '' }), { kind: 'normal', reason: '' });
  assert.deepEqual(wtCloseInfo({ closeCode: 400, reason: 'slow' }), { kind: 'error', code: 400, reason: 'slow' });
  assert.deepEqual(wtCloseInfo(undefined), { kind: 'normal', reason: '' });
});
