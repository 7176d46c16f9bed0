/**
 * The cache store shared by WORKERS=N (DIR/index.db), with two HttpCache instances on one
 * directory as two workers: an entry stored by one is found by the other, one LRU bound holds over
 * both (either evicts the other's entries), a body open in one survives its eviction by the other,
 * a store in progress is never visible, an invalidation reaches the other's variants, and a
 * single-process store is adopted by a worker.
 * (Collapsing across workers keys on the process id: workers-shared.test.ts, with real workers.)
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { HttpCache, type CacheRequest, type HttpCacheOptions } from '../../src/cache/http-cache.js';
import type { Logger } from '../../src/observe/log.js';

const quiet: Logger = { debug() {}, info() {}, warn() {}, error() {} };
const dirs: string[] = [];
const caches: HttpCache[] = [];
after(async () => {
  for (const c of caches) await c.close();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'sockstap-cache-shared-'));
  dirs.push(d);
  return d;
}

async function worker(dir: string, n: number, over: Partial<HttpCacheOptions> = {}): Promise<HttpCache> {
  const c = new HttpCache({ dir, maxBytes: 64 * 1024 * 1024, log: quiet, memBytes: 0, shared: { worker: n }, ...over });
  caches.push(c);
  await c.open();
  return c;
}

const get = (url: string): CacheRequest => ({ method: 'GET', url, headers: { host: new URL(url).host } });
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function store(cache: HttpCache, url: string, body: Buffer): Promise<boolean> {
  const w = cache.beginStore(get(url), { status: 200, headers: { 'cache-control': 'max-age=3600', 'content-length': String(body.length) } });
  assert.ok(w);
  w.write(body);
  return w.end();
}

async function bodyOf(cache: HttpCache, url: string): Promise<Buffer | null> {
  const hit = await cache.lookup(get(url));
  if (!hit) return null;
  const fh = await hit.openFile();
  if (!fh) return null;
  try {
    return await fh.readFile();
  } finally {
    await fh.close();
  }
}

describe('the cache store shared by workers', () => {
  test('an entry stored by one worker is a hit in the other; a store in progress is not', async () => {
    const dir = tempDir();
    const a = await worker(dir, 1);
    const b = await worker(dir, 2);
    const body = Buffer.alloc(4096, 'a');
    assert.equal(await b.lookup(get('http://o.test/a')), null);
    assert.equal(await store(a, 'http://o.test/a', body), true);
    const hit = await b.lookup(get('http://o.test/a'));
    assert.ok(hit?.fresh);
    assert.deepEqual(await bodyOf(b, 'http://o.test/a'), body);
    // Half a body, not ended: nothing for the other worker (nor for this one).
    const w = a.beginStore(get('http://o.test/partial'), { status: 200, headers: { 'cache-control': 'max-age=3600', 'content-length': '8192' } })!;
    w.write(Buffer.alloc(4096, 'p'));
    await w.drained();
    assert.equal(await b.lookup(get('http://o.test/partial')), null);
    assert.equal(await a.lookup(get('http://o.test/partial')), null);
    w.abort();
    // Each worker writes under its own tmp/wN.
    assert.deepEqual(readdirSync(join(dir, 'tmp')).sort(), ['w1', 'w2']);
    // Both count the one store.
    assert.equal(a.stats().entries, 1);
    assert.equal(b.stats().entries, 1);
  });

  test('one LRU bound over both workers: either evicts the least recently used, whoever stored it; an open body survives', async () => {
    const dir = tempDir();
    const over = { maxBytes: 64 * 1024, maxEntryBytes: 16 * 1024 };
    const a = await worker(dir, 1, over);
    const b = await worker(dir, 2, over);
    const body = (c: string): Buffer => Buffer.alloc(12 * 1024, c);
    for (const i of [0, 1, 2]) assert.equal(await store(a, `http://o.test/a${i}`, body(String(i))), true);
    // b opens a0's body before its eviction.
    const hit = await b.lookup(get('http://o.test/a0'));
    assert.ok(hit);
    const open = await hit.openFile();
    assert.ok(open);
    // (b's use of a0 makes it its most recent: the other entries of a go first, then it.)
    for (const i of [0, 1, 2, 3, 4]) assert.equal(await store(b, `http://o.test/b${i}`, body(String(i + 3))), true);
    assert.ok(a.stats().bytes <= over.maxBytes, `${a.stats().bytes} bytes stored`);
    assert.ok(b.stats().bytes <= over.maxBytes);
    // b's stores evicted a's entries: a sees them gone.
    await sleep(20);
    for (const i of [0, 1, 2]) assert.equal(await a.lookup(get(`http://o.test/a${i}`)), null, `a${i}`);
    assert.equal(await b.lookup(get('http://o.test/a0')), null);
    // The body b had open is still whole.
    assert.deepEqual(await open.readFile(), body('0'));
    await open.close();
    // The newest are there, for both.
    assert.deepEqual(await bodyOf(a, 'http://o.test/b4'), body('7'));
    assert.deepEqual(await bodyOf(b, 'http://o.test/b4'), body('7'));
  });

  test("a new response replaces the other worker's of the same variant; an invalidation reaches it", async () => {
    const dir = tempDir();
    const a = await worker(dir, 1);
    const b = await worker(dir, 2);
    assert.equal(await store(a, 'http://o.test/v', Buffer.from('old')), true);
    assert.deepEqual(await bodyOf(b, 'http://o.test/v'), Buffer.from('old'));
    assert.equal(await store(b, 'http://o.test/v', Buffer.from('new')), true);
    await sleep(20);
    assert.deepEqual(await bodyOf(a, 'http://o.test/v'), Buffer.from('new'));
    assert.equal(a.stats().entries, 1);
    // A POST through b: a's view is cleared too.
    assert.equal(await store(a, 'http://o.test/w', Buffer.from('w')), true);
    await b.invalidate('http://o.test/w');
    await sleep(20);
    assert.equal(await a.lookup(get('http://o.test/w')), null);
  });

  test('a store written by a single process is adopted by the workers', async () => {
    const dir = tempDir();
    const single = new HttpCache({ dir, maxBytes: 64 * 1024 * 1024, log: quiet });
    await single.open();
    assert.equal(await store(single, 'http://o.test/s', Buffer.from('single')), true);
    await single.close();
    // Files a moment old are adopted (younger ones may be another worker's commit in progress).
    await sleep(2100);
    const a = await worker(dir, 1);
    assert.deepEqual(await bodyOf(a, 'http://o.test/s'), Buffer.from('single'));
    const b = await worker(dir, 2);
    assert.deepEqual(await bodyOf(b, 'http://o.test/s'), Buffer.from('single'));
    assert.equal(b.stats().entries, 1);
  });
});
