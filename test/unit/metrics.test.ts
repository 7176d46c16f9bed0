/**
 * The pure parts behind /metrics and /api/stats: how access.log result codes are classed as cache
 * hits and misses (Squid's own notion), how session results are classed, and the bounded top table.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { cacheOutcome, resultClass, TopTable } from '../../src/observe/stats.js';

describe('cacheOutcome', () => {
  test('Squid hit codes are hits, including a revalidated entry', () => {
    for (const code of ['TCP_HIT', 'TCP_MEM_HIT', 'TCP_IMS_HIT', 'TCP_REFRESH_UNMODIFIED', 'TCP_NEGATIVE_HIT', 'TCP_REFRESH_FAIL_OLD', 'TCP_HIT/200']) {
      assert.equal(cacheOutcome(code), 'hit', code);
    }
  });
  test('misses are what the origin answered', () => {
    for (const code of ['TCP_MISS', 'TCP_MISS_ABORTED', 'TCP_REFRESH_MODIFIED', 'TCP_CLIENT_REFRESH_MISS', 'TCP_REFRESH_FAIL_ERR']) {
      assert.equal(cacheOutcome(code), 'miss', code);
    }
  });
  test('tunnels, denials and NONE are no cache lookup', () => {
    for (const code of ['TCP_TUNNEL', 'TCP_DENIED', 'NONE', 'NONE_NONE']) assert.equal(cacheOutcome(code), 'none', code);
  });
});

describe('resultClass', () => {
  test('policy refusals, errors, and clean ends', () => {
    for (const r of ['EDENIED', 'EAUTH', 'ELIMIT', 'EQUOTA', 'EIDENTMISMATCH']) assert.equal(resultClass(r), 'refusal', r);
    for (const r of ['ECONNREFUSED', 'ETIMEDOUT', 'EUPSTREAM', 'idle', 'handshake-timeout', 'ECONNRESET']) assert.equal(resultClass(r), 'error', r);
    for (const r of ['ok', 'closed-by-admin']) assert.equal(resultClass(r), 'ok', r);
  });
});

describe('TopTable', () => {
  test('orders by bytes, then sessions, and adds up', () => {
    const t = new TopTable();
    t.add('a.example', 1, 10, 10);
    t.add('b.example', 1, 0, 500);
    t.add('a.example', 1, 0, 100);
    t.add('c.example', 3, 0, 0);
    assert.deepEqual(
      t.top(3).map((r) => [r.name, r.sessions, r.bytesUp + r.bytesDown]),
      [
        ['b.example', 1, 500],
        ['a.example', 2, 120],
        ['c.example', 3, 0],
      ],
    );
    assert.equal(t.top(1).length, 1);
  });
  test('stays bounded and keeps the largest rows', () => {
    const t = new TopTable(100);
    t.add('big', 1, 1_000_000, 0);
    for (let i = 0; i < 1000; i++) t.add(`host-${i}`, 1, i, 0);
    assert.ok(t.size <= 100, `size ${t.size}`);
    assert.equal(t.top(1)[0]!.name, 'big');
    assert.equal(t.top(2)[1]!.name, 'host-999');
  });
});
