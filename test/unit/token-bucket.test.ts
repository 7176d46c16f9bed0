/** TokenBucket with the clock passed in: rates, burst, debt shared by several takers. */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { TokenBucket } from '../../src/net/throttle.js';

it('lets the burst through, then asks to wait for the debt at the rate', () => {
  const b = new TokenBucket(1000, 100, 0);
  assert.equal(b.take(100, 0), 0);
  assert.equal(b.take(50, 0), 50); // 50 bytes of debt at 1000 B/s
  assert.equal(b.take(0, 50), 0); // paid by t=50 ms
});

it('holds the rate over a long run of takes that wait as told', () => {
  const b = new TokenBucket(1024 * 1024, 16 * 1024, 0);
  let t = 0;
  let moved = 0;
  while (t < 10_000) {
    moved += 64 * 1024;
    t += b.take(64 * 1024, t);
  }
  const rate = moved / (t / 1000);
  assert.ok(Math.abs(rate / (1024 * 1024) - 1) < 0.01, `rate ${rate}`);
});

it('never saves more than the burst over a silence', () => {
  const b = new TokenBucket(1000, 100, 0);
  assert.equal(b.take(100, 60_000), 0);
  assert.ok(b.take(1, 60_000) > 0);
});

it('two takers sharing a bucket each wait behind the debt they found', () => {
  const b = new TokenBucket(1000, 0, 0);
  const first = b.take(100, 0);
  const second = b.take(100, 0);
  assert.equal(first, 100);
  assert.equal(second, 200);
});
