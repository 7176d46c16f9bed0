/**
 * The name cache: static hosts first, IP literals as themselves, families ordered and filtered,
 * bounded size (LRU), hits within the TTL, failures remembered for the negative TTL.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DEFAULT_DNS, NameCache } from '../../src/net/dns.js';

describe('NameCache', () => {
  it('answers IP literals and static hosts without a query', async () => {
    const c = new NameCache({ ...DEFAULT_DNS, hosts: { 'dual.test': ['::1', '127.0.0.1'] } });
    assert.deepEqual(await c.resolve('::1'), [{ address: '::1', family: 6 }]);
    assert.deepEqual((await c.resolve('DUAL.test.')).map((a) => a.address), ['::1', '127.0.0.1']);
    assert.equal(await c.resolveOne('dual.test', 4), '127.0.0.1');
    assert.equal(c.stats.misses, 0);
  });

  it('orders and filters families', async () => {
    const hosts = { 'dual.test': ['::1', '127.0.0.1'] };
    assert.deepEqual((await new NameCache({ ...DEFAULT_DNS, hosts, order: 'ipv4first' }).resolve('dual.test')).map((a) => a.family), [4, 6]);
    assert.deepEqual((await new NameCache({ ...DEFAULT_DNS, hosts, order: 'ipv6' }).resolve('dual.test')).map((a) => a.family), [6]);
    await assert.rejects(new NameCache({ ...DEFAULT_DNS, hosts: { 'v6.test': ['::1'] }, order: 'ipv4' }).resolve('v6.test'), { code: 'ENOTFOUND' });
  });

  it('caches within the TTL, stays bounded, and remembers failures', async () => {
    const c = new NameCache({ ...DEFAULT_DNS, cacheSize: 1, ttlMs: 60_000 });
    await c.resolve('localhost');
    await c.resolve('localhost');
    assert.equal(c.stats.hits, 1);
    await assert.rejects(c.resolve('no-such-name.invalid'), { code: 'ENOTFOUND' });
    assert.equal(c.size, 1, 'the cache grew past its bound');
    await assert.rejects(c.resolve('no-such-name.invalid'), { code: 'ENOTFOUND' });
    assert.equal(c.stats.hits, 2, 'the failure was not remembered');
    // localhost was evicted by the failure (LRU with one slot): a miss again.
    await c.resolve('localhost');
    assert.equal(c.stats.misses, 3);
  });

  it('with a zero TTL asks again every time', async () => {
    const c = new NameCache({ ...DEFAULT_DNS, ttlMs: 0 });
    await c.resolve('localhost');
    await c.resolve('localhost');
    assert.equal(c.stats.hits, 0);
  });
});
