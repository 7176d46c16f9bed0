/**
 * The RFC corrections around http-cache-semantics (policy.ts) and the memory tier's fast path:
 * strict HTTP-dates, Cache-Control names, Age, and the fast freshness check giving the library's
 * answer for every kind of stored response the conformance tests cover.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import type { IncomingHttpHeaders } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { HttpCache, type CacheRequest } from '../../src/cache/http-cache.js';
import { MemoryTier } from '../../src/cache/memory.js';
import { parseCacheControl, parseHttpDate } from '../../src/cache/policy.js';
import type { Logger } from '../../src/observe/log.js';

const quiet: Logger = { debug() {}, info() {}, warn() {}, error() {}, child() { return quiet; } } as unknown as Logger;
const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('parseHttpDate (RFC 9110 §5.6.7)', () => {
  const t = Date.UTC(1994, 10, 6, 8, 49, 37);
  test('the three formats', () => {
    assert.equal(parseHttpDate('Sun, 06 Nov 1994 08:49:37 GMT'), t);
    assert.equal(parseHttpDate('Sunday, 06-Nov-94 08:49:37 GMT'), t);
    assert.equal(parseHttpDate('Sun Nov  6 08:49:37 1994'), t);
  });
  test('rfc850 two-digit years: more than 50 years ahead is the past century', () => {
    const year = new Date().getUTCFullYear();
    const ahead = (year + 10) % 100;
    const far = (year + 60) % 100;
    const two = (n: number): string => String(n).padStart(2, '0');
    assert.equal(new Date(parseHttpDate(`Monday, 01-Jan-${two(ahead)} 00:00:00 GMT`)).getUTCFullYear(), year + 10);
    assert.equal(new Date(parseHttpDate(`Monday, 01-Jan-${two(far)} 00:00:00 GMT`)).getUTCFullYear(), year + 60 - 100);
  });
  for (const bad of [
    'Sun, 06 Nov 1994 08:49:37 UTC',
    'Sun 06 Nov 1994 08:49:37 GMT',
    'Sun,  06 Nov 1994 08:49:37 GMT',
    'Sun, 06-Nov-1994 08:49:37 GMT',
    'Sun, 06 Nov 1994 8:49:37 GMT',
    'Sun, 06 Nov 1994 08:49:37 GMT x',
    'Sun, 31 Feb 1994 08:49:37 GMT',
    'Sun, 06 Nov 1994 24:00:00 GMT',
    '0',
    '',
    '784111777',
  ]) {
    test(`not an HTTP-date: ${JSON.stringify(bad)}`, () => assert.ok(Number.isNaN(parseHttpDate(bad))));
  }
});

test('Cache-Control names are case-insensitive, values kept', () => {
  assert.deepEqual(parseCacheControl('No-CaChE, MAX-AGE=60, Private="Set-Cookie"'), { 'no-cache': true, 'max-age': '60', private: 'Set-Cookie' });
  assert.deepEqual(parseCacheControl(undefined), {});
});

test('the memory tier is a bounded LRU', () => {
  const m = new MemoryTier<string>(10, 6);
  assert.equal(m.set('a', Buffer.alloc(4)), true);
  assert.equal(m.set('b', Buffer.alloc(4)), true);
  m.get('a'); // b is now the least recently used
  assert.equal(m.set('c', Buffer.alloc(4)), true);
  assert.equal(m.has('b'), false);
  assert.equal(m.has('a'), true);
  assert.equal(m.set('big', Buffer.alloc(7)), false, 'over the per-entry bound');
  assert.equal(m.bytes, 8);
  m.delete('a');
  assert.equal(m.bytes, 4);
});

describe('the fast freshness check gives the library’s answer', () => {
  const cases: Array<[string, IncomingHttpHeaders]> = [
    ['max-age', { 'cache-control': 'max-age=300' }],
    ['max-age=0 with a validator', { 'cache-control': 'max-age=0', etag: '"a"' }],
    ['s-maxage beats max-age', { 'cache-control': 'max-age=0, s-maxage=300' }],
    ['stale by Age', { 'cache-control': 'max-age=60', age: '120', etag: '"b"' }],
    ['fresh despite Age', { 'cache-control': 'max-age=600', age: '120' }],
    ['fractional Age ignored', { 'cache-control': 'max-age=600', age: '1200.5' }],
    ['must-revalidate, fresh', { 'cache-control': 'max-age=300, must-revalidate' }],
    ['must-revalidate, stale', { 'cache-control': 'max-age=1, must-revalidate', age: '10', etag: '"c"' }],
    ['proxy-revalidate, fresh', { 'cache-control': 'max-age=300, proxy-revalidate' }],
    ['no-cache', { 'cache-control': 'no-cache', etag: '"d"' }],
    ['No-CaChE', { 'cache-control': 'No-CaChE, max-age=300', etag: '"e"' }],
    ['Expires ahead', { expires: new Date(Date.now() + 600_000).toUTCString() }],
    ['Expires invalid', { expires: 'Thu, 18 Aug 2050 02:01:18 UTC', etag: '"f"' }],
    ['Expires with max-age', { expires: 'Thu, 01 Jan 1970 00:00:00 GMT', 'cache-control': 'max-age=300' }],
    ['Last-Modified heuristic', { 'last-modified': new Date(Date.now() - 10 * 86_400_000).toUTCString() }],
    ['stale-while-revalidate, stale', { 'cache-control': 'max-age=1, stale-while-revalidate=600', age: '5', etag: '"g"' }],
    ['stale-if-error, stale', { 'cache-control': 'max-age=1, stale-if-error=600', age: '5', etag: '"h"' }],
  ];
  for (const heuristicMs of [undefined, 3_600_000]) {
    for (const [name, headers] of cases) {
      test(`${name}${heuristicMs ? ' (EXPIRE=1h)' : ''}`, async () => {
        const dir = mkdtempSync(join(tmpdir(), 'sockstap-cache-rfc-'));
        dirs.push(dir);
        const c = new HttpCache({ dir, maxBytes: 1 << 24, log: quiet, ...(heuristicMs ? { heuristicMs } : {}) });
        await c.open();
        try {
          const req: CacheRequest = { method: 'GET', url: 'http://origin.test/x', headers: {} };
          const w = c.beginStore(req, { status: 200, headers: { 'content-type': 'text/plain', ...headers } });
          if (!w) return; // not stored: nothing to compare
          w.write(Buffer.from('body'));
          assert.equal(await w.end(), true);
          const fast = await c.lookup(req);
          // A Pragma that means nothing makes the cache ask the library (see needsEvaluation).
          const library = await c.lookup({ ...req, headers: { pragma: 'x-nothing' } });
          assert.equal(fast?.fresh, library?.fresh);
          assert.equal(fast?.head.status, library?.head.status);
          assert.deepEqual(fast?.head.headers, library?.head.headers);
        } finally {
          await c.close();
        }
      });
    }
  }
});
