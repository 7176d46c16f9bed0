/**
 * Upstream pools (upstream/pool.ts): the order each balance gives, dead-peer marking, probing back.
 */
import assert from 'node:assert/strict';
import { beforeEach, describe, test } from 'node:test';
import type { PoolSpec, RouteRule } from '../../src/config/types.js';
import { chainLabel, parseHop, type Chain } from '../../src/upstream/hop.js';
import { UpstreamHealthTable } from '../../src/upstream/pool.js';

let table = new UpstreamHealthTable();
const orderPool: UpstreamHealthTable['orderPool'] = (...a) => table.orderPool(...a);
const recordReach: UpstreamHealthTable['recordReach'] = (...a) => table.recordReach(...a);
const isDead: UpstreamHealthTable['isDead'] = (...a) => table.isDead(...a);

const A: Chain = [parseHop('socks5://127.0.0.1:1001', 'a')];
const B: Chain = [parseHop('socks5://127.0.0.1:1002', 'b')];
const C: Chain = [parseHop('http://127.0.0.1:1003', 'c')];

function rule(balance: PoolSpec['balance'], extra: Partial<PoolSpec> = {}, via: Chain[] = [A, B, C]): RouteRule {
  return { via, source: 'routes[0]', pool: { balance, weights: via.map(() => 1), maxfails: 1, failtimeoutMs: 1000, ...extra } };
}

const first = (r: RouteRule, clientAddress = '10.0.0.1', dstHost = 'example.org', now?: number): string =>
  chainLabel(orderPool(r, { clientAddress, dstHost }, now)[0]!);

describe('upstream pools', () => {
  beforeEach(() => {
    table = new UpstreamHealthTable();
  });

  test('round-robin takes each member in turn; the rest follow as fallbacks, dead ones last', () => {
    const r = rule('round-robin');
    assert.deepEqual([first(r), first(r), first(r), first(r)], [chainLabel(A), chainLabel(B), chainLabel(C), chainLabel(A)]);
    recordReach(B, false, r.pool);
    assert.equal(isDead(chainLabel(B)), true);
    const picks = new Set([first(r), first(r), first(r), first(r)]);
    assert.ok(!picks.has(chainLabel(B)));
    assert.equal(chainLabel(orderPool(r, { clientAddress: 'x', dstHost: 'y' }).at(-1)!), chainLabel(B));
  });

  test('weighted 3:1 gives three connections to one for every one to the other, interleaved', () => {
    const r = rule('weighted', { weights: [3, 1] }, [A, B]);
    const seq = Array.from({ length: 8 }, () => first(r));
    assert.equal(seq.filter((x) => x === chainLabel(A)).length, 6);
    assert.equal(seq.filter((x) => x === chainLabel(B)).length, 2);
    // Smooth weighted round-robin spreads them: A A B A, not A A A B.
    assert.deepEqual(seq.slice(0, 4), [chainLabel(A), chainLabel(A), chainLabel(B), chainLabel(A)]);
  });

  test('hash-src keeps a client on one member; only the clients of a dead member move', () => {
    const r = rule('hash-src');
    const clients = Array.from({ length: 60 }, (_, i) => `10.0.${i}.7`);
    const before = new Map(clients.map((c) => [c, first(r, c)]));
    for (const c of clients) assert.equal(first(r, c), before.get(c));
    assert.equal(new Set(before.values()).size, 3, 'spread over every member');
    recordReach(C, false, r.pool);
    for (const c of clients) {
      const now = first(r, c);
      if (before.get(c) !== chainLabel(C)) assert.equal(now, before.get(c));
      else assert.notEqual(now, chainLabel(C));
    }
  });

  test('hash-dst picks by destination host', () => {
    const r = rule('hash-dst');
    const hosts = Array.from({ length: 30 }, (_, i) => `h${i}.example`);
    for (const h of hosts) assert.equal(first(r, '1.1.1.1', h), first(r, '2.2.2.2', h.toUpperCase()));
    assert.ok(new Set(hosts.map((h) => first(r, '1.1.1.1', h))).size > 1);
  });

  test('first-up skips the dead, which are probed back after failtimeout; one more failure marks again', () => {
    const r = rule('first-up', { maxfails: 2, failtimeoutMs: 1000 });
    const t0 = 1_000_000;
    recordReach(A, false, r.pool, t0);
    assert.equal(first(r, 'c', 'd', t0), chainLabel(A), 'one failure of two allowed');
    recordReach(A, false, r.pool, t0);
    assert.equal(first(r, 'c', 'd', t0 + 1), chainLabel(B));
    assert.equal(first(r, 'c', 'd', t0 + 1001), chainLabel(A), 'probed back');
    recordReach(A, false, r.pool, t0 + 1001);
    assert.equal(first(r, 'c', 'd', t0 + 1002), chainLabel(B), 'dead again at once');
    recordReach(A, true, r.pool, t0 + 2100);
    recordReach(A, false, r.pool, t0 + 2100);
    assert.equal(first(r, 'c', 'd', t0 + 2101), chainLabel(A), 'a success resets the count');
  });

  test('every member dead: all are still tried, in order', () => {
    const r = rule('round-robin', {}, [A, B]);
    recordReach(A, false, r.pool);
    recordReach(B, false, r.pool);
    assert.deepEqual(orderPool(r, { clientAddress: 'x', dstHost: 'y' }).map(chainLabel), [chainLabel(A), chainLabel(B)]);
  });
});
