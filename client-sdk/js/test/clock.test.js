// Clock sync arithmetic (PROTOCOL.md §9) as pure functions.

import test from 'node:test';
import assert from 'node:assert/strict';
import { ClockEstimator, MAX_SAMPLE_ROUND_TRIP_US, bestSample, clockSample, localNowUs } from '../chorus.js';

const sample = (...t) => {
  const s = clockSample(...t);
  assert.ok(s, `impossible sample ${t}`);
  return s;
};

test('the worked example of §9', () => {
  const t0 = 1790000000123456;
  const t1 = 1790000000200000;
  const s = sample(t0, t1, t1 + 12, t0 + 20000);
  assert.equal(s.rttUs, 19988);
  assert.equal(s.offsetUs, 66550);
  // The same from bigints, as the codec decodes them.
  const b = sample(BigInt(t0), BigInt(t1), BigInt(t1 + 12), t0 + 20000);
  assert.equal(b.offsetUs, 66550);
});

test('symmetric path gives the exact offset; a server behind gives a negative one', () => {
  const s = sample(100, 1000150, 1000160, 210);
  assert.equal(s.offsetUs, 1000000);
  assert.equal(s.rttUs, 100);
  const c0 = 10000000000;
  const n = sample(c0, c0 - 5000000 + 1000, c0 - 5000000 + 1000, c0 + 2000);
  assert.equal(n.offsetUs, -5000000);
  assert.equal(n.rttUs, 2000);
});

test('an asymmetric path errs by at most half the RTT', () => {
  const s = sample(0, 900, 900, 1000);
  assert.equal(s.rttUs, 1000);
  assert.equal(s.offsetUs, 400);
  assert.ok(Math.abs(s.offsetUs) <= s.rttUs / 2);
});

test('offsets truncate toward zero like integer division', () => {
  assert.equal(sample(0, 1, 2, 2).offsetUs, 0); // (1 + 0) / 2
  assert.equal(sample(0, 0, 0, 1).offsetUs, 0); // (0 - 1) / 2, and not -0
  assert.equal(sample(0, 0, 0, 3).offsetUs, -1); // -3 / 2
  assert.equal(sample(0, 3, 3, 3).offsetUs, 1); // 3 / 2
});

test('impossible samples are rejected', () => {
  assert.equal(clockSample(10, 5, 6, 9), null, 'reply before ping');
  assert.equal(clockSample(10, 6, 5, 20), null, 'server sent before receiving');
  assert.equal(clockSample(0, 1, 1, MAX_SAMPLE_ROUND_TRIP_US + 1), null, 'too old');
  assert.ok(clockSample(0, 1, 1, MAX_SAMPLE_ROUND_TRIP_US));
});

test('processing longer than the round trip clamps the RTT to 0', () => {
  const s = sample(1000, 5000, 5300, 1200);
  assert.equal(s.rttUs, 0);
  assert.equal(s.offsetUs, Math.trunc((4000 + 4100) / 2));
});

test('the best sample has the least RTT, the latest among equals', () => {
  const a = sample(0, 1050, 1050, 100); // rtt 100
  const b = sample(1000, 2020, 2020, 1040); // rtt 40
  const c = sample(2000, 3500, 3500, 3000); // rtt 1000
  const d = sample(4000, 5025, 5025, 4040); // rtt 40, later than b
  assert.equal(bestSample([a, b, c]), b);
  assert.equal(bestSample([a, b, c, d]), d);
  assert.equal(bestSample([]), null);
});

test('the estimator keeps a window and uses its min-RTT sample', () => {
  const est = new ClockEstimator(3);
  assert.deepEqual(est.estimate(), { offsetUs: 0, rttUs: 0, samples: 0 });
  est.add(sample(0, 510, 510, 20)); // offset 500, rtt 20
  est.add(sample(100, 900, 900, 300)); // offset 700, rtt 200
  est.add(sample(200, 1000, 1000, 400)); // offset 700, rtt 200
  assert.deepEqual(est.estimate(), { offsetUs: 500, rttUs: 20, samples: 3 });
  est.add(sample(300, 1050, 1050, 400)); // offset 700, rtt 100; the good one falls out
  assert.deepEqual(est.estimate(), { offsetUs: 700, rttUs: 100, samples: 3 });
  assert.equal(est.size, 3);
});

test('the local clock reads microseconds since the epoch, whole and monotonic', () => {
  const a = localNowUs();
  const b = localNowUs();
  assert.ok(Number.isInteger(a));
  assert.ok(b >= a);
  assert.ok(Math.abs(a - Date.now() * 1000) < 5_000_000, 'close to the wall clock');
});
