/**
 * The HTTP cache on real temp directories: storing, Vary, RFC 9111 storability, expiry and
 * revalidation, EXPIRE, LRU bounds, aborts, crash leftovers, collapsing, invalidation, streaming.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync, truncateSync, unlinkSync, writeFileSync } from 'node:fs';
import type { IncomingHttpHeaders } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { after, describe, test } from 'node:test';
import { HttpCache, type CacheHit, type CacheRequest, type HttpCacheOptions } from '../../src/cache/http-cache.js';
import { canonicalKey } from '../../src/cache/policy.js';
import type { Logger } from '../../src/observe/log.js';

const quiet: Logger = { debug() {}, info() {}, warn() {}, error() {} };

const dirs: string[] = [];
const caches: HttpCache[] = [];
after(async () => {
  for (const c of caches) await c.close();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'sockstap-cache-'));
  dirs.push(d);
  return d;
}

async function openCache(dir: string, over: Partial<HttpCacheOptions> = {}): Promise<HttpCache> {
  const c = new HttpCache({ dir, maxBytes: 64 * 1024 * 1024, log: quiet, ...over });
  caches.push(c);
  await c.open();
  return c;
}

function get(url: string, headers: IncomingHttpHeaders = {}, method = 'GET'): CacheRequest {
  return { method, url, headers: { host: new URL(url).host, ...headers } };
}

async function store(
  cache: HttpCache,
  req: CacheRequest,
  headers: IncomingHttpHeaders,
  body: string | Buffer,
  status = 200,
): Promise<boolean> {
  const w = cache.beginStore(req, { status, headers });
  assert.ok(w, 'response should be storable');
  const buf = typeof body === 'string' ? Buffer.from(body) : body;
  // two chunks, so the writer's batching is exercised
  w.write(buf.subarray(0, buf.length >> 1));
  w.write(buf.subarray(buf.length >> 1));
  return w.end();
}

async function readAll(stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of stream) parts.push(chunk as Buffer);
  return Buffer.concat(parts);
}

async function bodyOf(hit: CacheHit | null): Promise<string> {
  assert.ok(hit, 'expected a hit');
  return (await readAll(hit.body())).toString();
}

function files(dir: string, sub: string): string[] {
  return readdirSync(join(dir, sub)).sort();
}

const cacheable = { 'cache-control': 'max-age=3600', 'content-type': 'text/plain' };

describe('store and lookup', () => {
  test('a stored response is served, also to HEAD, and survives a restart', async () => {
    const dir = tempDir();
    const a = await openCache(dir);
    const req = get('http://origin.test/a?x=1');
    assert.equal(await a.lookup(req), null);
    assert.equal(await store(a, req, { ...cacheable, 'content-length': '11' }, 'hello world'), true);
    const hit = await a.lookup(req);
    assert.ok(hit);
    assert.equal(hit.fresh, true);
    assert.equal(hit.size, 11);
    assert.equal(hit.head.status, 200);
    assert.equal(hit.head.headers['content-type'], 'text/plain');
    assert.match(String(hit.head.headers.age), /^\d+$/);
    assert.equal(await bodyOf(hit), 'hello world');
    const head = await a.lookup(get('http://origin.test/a?x=1', {}, 'HEAD'));
    assert.ok(head?.fresh);
    assert.equal(a.beginStore(get('http://origin.test/h', {}, 'HEAD'), { status: 200, headers: cacheable }), null);
    await a.close();

    const b = await openCache(dir);
    assert.equal(b.stats().entries, 1);
    const again = await b.lookup(req);
    assert.equal(again?.fresh, true);
    assert.equal(await bodyOf(again), 'hello world');
    const opened = await again!.openBody();
    assert.ok(opened);
    assert.equal((await readAll(opened)).toString(), 'hello world');
    assert.equal(await b.lookup(get('http://origin.test/a?x=2')), null);
  });

  test('the key is the URL given: a forged Host header neither selects nor creates another entry', async () => {
    const c = await openCache(tempDir());
    assert.ok(await store(c, get('http://real.test/p', { host: 'victim.test' }), cacheable, 'from real'));
    assert.equal(await c.lookup(get('http://victim.test/p')), null);
    const hit = await c.lookup(get('http://real.test/p', { host: 'anything.test' }));
    assert.equal(await bodyOf(hit), 'from real');
    // equivalent spellings of one URL share the entry
    assert.ok(await c.lookup(get('http://REAL.test:80/p')));
  });

  test('Vary: one entry per variant, the matching one is served, a new response replaces its variant', async () => {
    const c = await openCache(tempDir());
    const url = 'http://origin.test/v';
    const vary = { ...cacheable, vary: 'Accept-Encoding' };
    assert.ok(await store(c, get(url, { 'accept-encoding': 'gzip' }), vary, 'gzip-1'));
    assert.ok(await store(c, get(url, { 'accept-encoding': 'identity' }), vary, 'identity'));
    assert.equal(c.stats().entries, 2);
    assert.equal(await bodyOf(await c.lookup(get(url, { 'accept-encoding': 'gzip' }))), 'gzip-1');
    assert.equal(await bodyOf(await c.lookup(get(url, { 'accept-encoding': 'identity' }))), 'identity');
    assert.equal(await c.lookup(get(url, { 'accept-encoding': 'br' })), null);
    assert.equal(await c.lookup(get(url)), null);
    assert.ok(await store(c, get(url, { 'accept-encoding': 'gzip' }), vary, 'gzip-2'));
    assert.equal(c.stats().entries, 2);
    assert.equal(await bodyOf(await c.lookup(get(url, { 'accept-encoding': 'gzip' }))), 'gzip-2');
    assert.equal(c.beginStore(get(url), { status: 200, headers: { ...cacheable, vary: '*' } }), null);
  });
});

describe('what is not stored (shared cache, RFC 9111 §3)', () => {
  const url = 'http://origin.test/s';
  const cases: [string, CacheRequest, IncomingHttpHeaders, number?][] = [
    ['response no-store', get(url), { 'cache-control': 'no-store, max-age=60' }],
    ['request no-store', get(url, { 'cache-control': 'no-store' }), cacheable],
    ['private', get(url), { 'cache-control': 'private, max-age=60' }],
    ['Authorization without public', get(url, { authorization: 'Basic dTpw' }), cacheable],
    ['POST', get(url, {}, 'POST'), cacheable],
    ['206', get(url, { range: 'bytes=0-1' }), { ...cacheable, 'content-range': 'bytes 0-1/10' }, 206],
    ['Set-Cookie', get(url), { ...cacheable, 'set-cookie': ['a=b'] }],
    ['500', get(url), { 'content-type': 'text/plain' }, 500],
    ['no freshness and no validator', get(url), { 'content-type': 'text/plain' }],
  ];
  for (const [name, req, headers, status] of cases) {
    test(name, async () => {
      const c = await openCache(tempDir());
      assert.equal(c.beginStore(req, { status: status ?? 200, headers }), null);
    });
  }

  test('Authorization with public is stored', async () => {
    const c = await openCache(tempDir());
    const req = get(url, { authorization: 'Basic dTpw' });
    assert.ok(await store(c, req, { 'cache-control': 'public, max-age=60' }, 'shared'));
    assert.equal((await c.lookup(req))?.fresh, true);
  });
});

describe('expiry and revalidation', () => {
  test('max-age expiry → stale → conditional headers → 304 merge → fresh, persisted', async () => {
    const dir = tempDir();
    const c = await openCache(dir);
    const req = get('http://origin.test/r');
    const lastModified = 'Tue, 01 Jan 2030 00:00:00 GMT';
    // Age 120 > max-age 60: stale from the start (RFC 9111 §4.2.3 counts the Age received).
    assert.ok(
      await store(c, req, { 'cache-control': 'max-age=60', age: '120', etag: '"v1"', 'last-modified': lastModified, 'content-type': 'text/css' }, 'body v1'),
    );
    const hit = await c.lookup(req);
    assert.ok(hit);
    assert.equal(hit.fresh, false);
    assert.deepEqual(hit.revalidationHeaders(req), { 'if-none-match': '"v1"', 'if-modified-since': lastModified });
    const merged = await hit.revalidated(req, { status: 304, headers: { etag: '"v1"', 'cache-control': 'max-age=3600', 'x-new': 'yes' } });
    assert.equal(merged.modified, false);
    assert.equal(merged.head.status, 200);
    assert.equal(merged.head.headers['content-type'], 'text/css');
    assert.equal(merged.head.headers['cache-control'], 'max-age=3600');
    assert.equal(await bodyOf(hit), 'body v1');
    const after304 = await c.lookup(req);
    assert.equal(after304?.fresh, true);
    await c.close();

    const reopened = await openCache(dir);
    const persisted = await reopened.lookup(req);
    assert.equal(persisted?.fresh, true);
    assert.equal(persisted.head.headers['cache-control'], 'max-age=3600');
    // A full response instead of a 304 means "modified": the caller relays and stores it again.
    const changed = await persisted.revalidated(req, { status: 200, headers: { etag: '"v2"', 'cache-control': 'max-age=60' } });
    assert.equal(changed.modified, true);
    assert.equal(changed.head.headers.etag, '"v2"');
  });

  test('a request with no-cache gets the stored response only after revalidation', async () => {
    const c = await openCache(tempDir());
    const url = 'http://origin.test/nc';
    assert.ok(await store(c, get(url), { ...cacheable, etag: '"e"' }, 'x'));
    const hit = await c.lookup(get(url, { 'cache-control': 'no-cache' }));
    assert.equal(hit?.fresh, false);
    assert.equal(hit.revalidationHeaders(get(url))['if-none-match'], '"e"');
  });

  test('a 304 with another validator does not update the stored response, which is kept as it was (RFC 9111 §4.3.4)', async () => {
    const c = await openCache(tempDir());
    const req = get('http://origin.test/other');
    assert.ok(await store(c, req, { 'cache-control': 'max-age=0', etag: '"a"' }, 'a'));
    const hit = await c.lookup(req);
    assert.equal(hit?.fresh, false);
    const r = await hit.revalidated(req, { status: 304, headers: { etag: '"b"', 'cache-control': 'max-age=600' } });
    assert.equal(r.modified, false);
    const again = await c.lookup(req);
    assert.equal(again?.fresh, false, 'not made fresh by a 304 for another representation');
    assert.equal(again.head.headers.etag, '"a"');
  });
});

describe('EXPIRE (heuristic freshness, RFC 9111 §4.2.2)', () => {
  const hour = 3_600_000;

  test('applies to responses without explicit freshness, also without Last-Modified', async () => {
    const c = await openCache(tempDir(), { heuristicMs: hour });
    const young = get('http://origin.test/young');
    const old = get('http://origin.test/old');
    assert.ok(await store(c, young, { 'content-type': 'text/plain', age: '1800' }, 'y'));
    assert.ok(await store(c, old, { 'content-type': 'text/plain', age: '7200', etag: '"o"' }, 'o'));
    assert.equal((await c.lookup(young))?.fresh, true);
    assert.equal((await c.lookup(old))?.fresh, false);
  });

  test('replaces the Last-Modified fraction rather than adding to it', async () => {
    const c = await openCache(tempDir(), { heuristicMs: hour });
    const req = get('http://origin.test/lm');
    // 10% of ten years would be a year; EXPIRE says one hour.
    const lm = new Date(Date.now() - 10 * 365 * 24 * hour).toUTCString();
    assert.ok(await store(c, req, { 'last-modified': lm, age: '7200' }, 'lm'));
    assert.equal((await c.lookup(req))?.fresh, false);
  });

  test('explicit freshness wins: max-age=0, an Expires in the past, no-cache', async () => {
    const c = await openCache(tempDir(), { heuristicMs: hour });
    const cases: IncomingHttpHeaders[] = [
      { 'cache-control': 'max-age=0', etag: '"1"' },
      { expires: 'Thu, 01 Jan 1970 00:00:00 GMT', etag: '"2"' },
      { 'cache-control': 'no-cache', etag: '"3"' },
    ];
    for (const [i, headers] of cases.entries()) {
      const req = get(`http://origin.test/explicit${i}`);
      assert.ok(await store(c, req, headers, 'e'));
      assert.equal((await c.lookup(req))?.fresh, false, JSON.stringify(headers));
    }
    // And a short explicit lifetime is not lengthened by EXPIRE.
    const short = get('http://origin.test/short');
    assert.ok(await store(c, short, { 'cache-control': 'max-age=10', age: '20', etag: '"s"' }, 's'));
    assert.equal((await c.lookup(short))?.fresh, false);
  });

  test('not for statuses that are not cacheable by default', async () => {
    const c = await openCache(tempDir(), { heuristicMs: hour });
    assert.equal(c.beginStore(get('http://origin.test/302'), { status: 302, headers: { location: '/x' } }), null);
  });

  test('the setting of the running cache applies to stored entries', async () => {
    const dir = tempDir();
    const a = await openCache(dir, { heuristicMs: hour });
    const req = get('http://origin.test/setting');
    assert.ok(await store(a, req, { 'content-type': 'text/plain', etag: '"x"' }, 'x'));
    assert.equal((await a.lookup(req))?.fresh, true);
    await a.close();
    const b = await openCache(dir); // no EXPIRE now
    assert.equal((await b.lookup(req))?.fresh, false);
  });
});

describe('bounds', () => {
  test('LRU eviction under a small CACHESIZE, recency updated by hits, files removed', async () => {
    const dir = tempDir();
    const c = await openCache(dir, { maxBytes: 64 * 1024 });
    const body = Buffer.alloc(6 * 1024, 0x61);
    const urls = Array.from({ length: 14 }, (_, i) => `http://origin.test/lru${i}`);
    for (const u of urls.slice(0, 8)) assert.ok(await store(c, get(u), cacheable, body));
    assert.equal(c.stats().entries, 8);
    assert.ok(await c.lookup(get(urls[0]!))); // lru0 is now the most recently used
    for (const u of urls.slice(8)) assert.ok(await store(c, get(u), cacheable, body));
    const s = c.stats();
    assert.ok(s.bytes <= s.maxBytes, `${s.bytes} > ${s.maxBytes}`);
    assert.ok(s.entries < 14);
    assert.ok(await c.lookup(get(urls[0]!)), 'recently used entry kept');
    assert.equal(await c.lookup(get(urls[1]!)), null, 'least recently used entry evicted');
    assert.ok(await c.lookup(get(urls[13]!)));
    await c.close();
    // Evicted entries' files are gone: two files per kept entry, nothing in tmp/.
    assert.equal(files(dir, 'entries').length, 2 * s.entries);
    assert.deepEqual(files(dir, 'tmp'), []);
  });

  test('a body larger than an eighth of CACHESIZE is not stored', async () => {
    const dir = tempDir();
    const c = await openCache(dir, { maxBytes: 64 * 1024 });
    assert.equal(c.beginStore(get('http://origin.test/big'), { status: 200, headers: { ...cacheable, 'content-length': String(9 * 1024) } }), null);
    const w = c.beginStore(get('http://origin.test/big2'), { status: 200, headers: cacheable });
    assert.ok(w);
    w.write(Buffer.alloc(6 * 1024));
    assert.equal(w.aborted, false);
    w.write(Buffer.alloc(6 * 1024));
    assert.equal(w.aborted, true);
    assert.equal(await w.end(), false);
    await c.close();
    assert.deepEqual(files(dir, 'entries'), []);
    assert.deepEqual(files(dir, 'tmp'), []);
  });

  test('abort leaves nothing; a body shorter than its Content-Length is not committed', async () => {
    const dir = tempDir();
    const c = await openCache(dir);
    const w = c.beginStore(get('http://origin.test/ab'), { status: 200, headers: cacheable });
    assert.ok(w);
    w.write(Buffer.from('partial'));
    await w.drained();
    w.abort();
    assert.equal(w.aborted, true);
    assert.equal(await w.end(), false);
    const short = c.beginStore(get('http://origin.test/short'), { status: 200, headers: { ...cacheable, 'content-length': '100' } });
    assert.ok(short);
    short.write(Buffer.from('only ten b'));
    assert.equal(await short.end(), false);
    assert.equal(await c.lookup(get('http://origin.test/ab')), null);
    assert.equal(await c.lookup(get('http://origin.test/short')), null);
    assert.equal(c.stats().writingBytes, 0);
    await c.close();
    assert.deepEqual(files(dir, 'entries'), []);
    assert.deepEqual(files(dir, 'tmp'), []);
  });

  test('a store that outruns the disk by more than its queue bound is abandoned, not buffered', async () => {
    const c = await openCache(tempDir(), { maxQueuedBytes: 256 * 1024 });
    const w = c.beginStore(get('http://origin.test/fast'), { status: 200, headers: cacheable });
    assert.ok(w);
    // Written synchronously, faster than any disk: the queue passes its bound within this loop.
    for (let i = 0; i < 8 && !w.aborted; i++) w.write(Buffer.alloc(64 * 1024));
    assert.equal(w.aborted, true);
    assert.ok(w.queuedBytes <= 256 * 1024);
    assert.equal(await w.end(), false);
  });
});

describe('crash leftovers', () => {
  test('metadata without body, truncated body, body without metadata, torn metadata, temp files: nothing served, all removed', async () => {
    const dir = tempDir();
    const a = await openCache(dir);
    const urls = ['nobody', 'truncated', 'nometa', 'torn', 'intact'].map((n) => `http://origin.test/${n}`);
    for (const u of urls) assert.ok(await store(a, get(u), cacheable, `body of ${u}`));
    await a.close();

    // Which files belong to which URL: the metadata names it.
    const ids = new Map<string, string>();
    for (const name of files(dir, 'entries').filter((f) => f.endsWith('.meta'))) {
      const { readFileSync } = await import('node:fs');
      const meta = JSON.parse(readFileSync(join(dir, 'entries', name), 'utf8')) as { url: string; id: string };
      ids.set(meta.url, meta.id);
    }
    const id = (n: string): string => ids.get(`http://origin.test/${n}`)!;
    unlinkSync(join(dir, 'entries', `${id('nobody')}.body`));
    truncateSync(join(dir, 'entries', `${id('truncated')}.body`), 3);
    unlinkSync(join(dir, 'entries', `${id('nometa')}.meta`));
    writeFileSync(join(dir, 'entries', `${id('torn')}.meta`), '{"v":1,"id":');
    writeFileSync(join(dir, 'tmp', `${'ab'.repeat(12)}.body.1234.tmp`), Buffer.alloc(1000));
    writeFileSync(join(dir, 'tmp', `${'ab'.repeat(12)}.meta.1234.tmp`), '{}');

    const b = await openCache(dir);
    assert.equal(b.stats().entries, 1);
    for (const n of ['nobody', 'truncated', 'nometa', 'torn']) {
      assert.equal(await b.lookup(get(`http://origin.test/${n}`)), null, n);
    }
    assert.equal(await bodyOf(await b.lookup(get('http://origin.test/intact'))), 'body of http://origin.test/intact');
    await b.close();
    assert.deepEqual(files(dir, 'entries'), [`${id('intact')}.body`, `${id('intact')}.meta`]);
    assert.deepEqual(files(dir, 'tmp'), []);
  });
});

describe('joinFetch', () => {
  test('the first caller leads, the others wait until done()', async () => {
    const c = await openCache(tempDir());
    const first = c.joinFetch('http://origin.test/j');
    assert.equal(first.leader, true);
    const second = c.joinFetch('http://origin.test/j');
    const third = c.joinFetch('http://origin.test/j');
    assert.equal(second.leader, false);
    assert.equal(third.leader, false);
    assert.equal(c.joinFetch('http://origin.test/other').leader, true);
    let released = 0;
    if (!second.leader) void second.wait.then(() => released++);
    if (!third.leader) void third.wait.then(() => released++);
    await new Promise((r) => setImmediate(r));
    assert.equal(released, 0);
    if (first.leader) first.done();
    if (!second.leader) await second.wait;
    if (!third.leader) await third.wait;
    assert.equal(released, 2);
    const next = c.joinFetch('http://origin.test/j');
    assert.equal(next.leader, true);
    if (next.leader) next.done();
  });
});

describe('invalidation (RFC 9111 §4.4)', () => {
  test('unsafe methods with a non-error response invalidate the URL and same-origin Location', async () => {
    const c = await openCache(tempDir());
    for (const p of ['a', 'b', 'c', 'd']) assert.ok(await store(c, get(`http://origin.test/${p}`), cacheable, p));
    assert.ok(await store(c, get('http://elsewhere.test/d'), cacheable, 'x'));
    await c.invalidateAfter(get('http://origin.test/a', {}, 'POST'), { status: 500, headers: {} });
    assert.ok(await c.lookup(get('http://origin.test/a')), 'an error response invalidates nothing');
    await c.invalidateAfter(get('http://origin.test/a', {}, 'POST'), {
      status: 201,
      headers: { location: '/b', 'content-location': 'http://elsewhere.test/d' },
    });
    assert.equal(await c.lookup(get('http://origin.test/a')), null);
    assert.equal(await c.lookup(get('http://origin.test/b')), null);
    assert.ok(await c.lookup(get('http://elsewhere.test/d')), 'another origin is not invalidated');
    await c.invalidateAfter(get('http://origin.test/c', {}, 'GET'), { status: 200, headers: {} });
    assert.ok(await c.lookup(get('http://origin.test/c')), 'safe methods invalidate nothing');
    await c.invalidate('http://origin.test/c');
    assert.equal(await c.lookup(get('http://origin.test/c')), null);
  });

  test('a store in progress when its URL is invalidated is not committed', async () => {
    const c = await openCache(tempDir());
    const req = get('http://origin.test/racing');
    const w = c.beginStore(req, { status: 200, headers: cacheable });
    assert.ok(w);
    w.write(Buffer.from('old'));
    await c.invalidate(req.url);
    assert.equal(await w.end(), false);
    assert.equal(await c.lookup(req), null);
  });
});

describe('streaming', () => {
  test('a 20 MiB body goes through write() without being held in memory', async () => {
    const dir = tempDir();
    const c = await openCache(dir, { maxBytes: 512 * 1024 * 1024 });
    const req = get('http://origin.test/big');
    const chunkSize = 64 * 1024;
    const chunks = (20 * 1024 * 1024) / chunkSize;
    const w = c.beginStore(req, { status: 200, headers: { ...cacheable, 'content-length': String(chunks * chunkSize) } });
    assert.ok(w);
    // One buffer, refilled only once the writer has drained it: any copy or retention by the
    // writer would show up in arrayBuffers, and a chunk written late would spoil the digest.
    const chunk = Buffer.alloc(chunkSize);
    const expected = createHash('sha256');
    const base = process.memoryUsage().arrayBuffers;
    let peak = 0;
    for (let i = 0; i < chunks; i++) {
      chunk.fill(i & 0xff);
      expected.update(chunk);
      w.write(chunk);
      await w.drained();
      if (i % 16 === 0) peak = Math.max(peak, process.memoryUsage().arrayBuffers - base);
    }
    assert.equal(w.aborted, false);
    assert.equal(await w.end(), true);
    assert.ok(peak < 4 * 1024 * 1024, `arrayBuffers grew by ${peak} bytes while writing 20 MiB`);
    const hit = await c.lookup(req);
    assert.ok(hit);
    assert.equal(hit.size, chunks * chunkSize);
    const actual = createHash('sha256');
    for await (const part of hit.body()) actual.update(part as Buffer);
    assert.equal(actual.digest('hex'), expected.digest('hex'));
  });
});

describe('canonicalKey', () => {
  test('authority canonical, path byte for byte as sent (issue 13, finding 2)', () => {
    const k = (u: string): string | undefined => canonicalKey(u)?.href;
    assert.equal(k('HTTP://Example.TEST:80/a/b?q=1#frag'), 'http://example.test/a/b?q=1');
    assert.equal(k('http://example.test:8080'), 'http://example.test:8080/');
    assert.equal(k('http://[::FFFF:127.0.0.1]:81/x'), 'http://[::ffff:7f00:1]:81/x');
    assert.equal(k('http://h/lit/attacker/%2e%2e/%2e%2e/lit/v1'), 'http://h/lit/attacker/%2e%2e/%2e%2e/lit/v1');
    assert.equal(k('http://h/a/../b/./c'), 'http://h/a/../b/./c');
    assert.equal(k('http://h/%2E%2e/x'), 'http://h/%2E%2e/x');
    assert.equal(k('http://h/a b"{}'), 'http://h/a b"{}');
    assert.equal(canonicalKey('http://h:8080/x')?.origin, 'http://h:8080');
    assert.equal(k('mailto:x@y'), undefined);
    assert.equal(k('http:///x'), undefined);
  });

  test('the split of http(s) URLs without the regular expression gives the regular expression\'s parts', () => {
    // The reference: the key as it was made before the fast split (KEY_URL and new URL() of the authority).
    const KEY_URL = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/?#]*)([^#]*)/;
    const reference = (u: string): unknown => {
      const m = KEY_URL.exec(u);
      if (!m) return null;
      const scheme = m[1]!.toLowerCase();
      if (!['http', 'https', 'ftp'].includes(scheme)) return null;
      let a: URL;
      try {
        a = new URL(`${scheme}://${m[2]!}/`);
      } catch {
        return null;
      }
      if (a.hostname === '') return null;
      let path = m[3]!;
      if (path === '') path = '/';
      else if (!path.startsWith('/')) path = `/${path}`;
      return { href: `${scheme}://${a.host}${path}`, host: a.host, origin: `${scheme}://${a.host}` };
    };
    for (const u of [
      'http://a/b', 'http://A:80/x?y#z', 'https://h:443', 'http://h?q', 'http://h#f', 'http://[::1]:8080/p#',
      'HTTP://x/', 'ftp://u:p@h/x', 'http:///x', 'http://h/a#b#c', 'https://ex.com/%2e%2e/a?b=c#d', 'http://a@b@c/',
      'xhttp://a/', 'http:/a', 'http://h/\u00e9', 'http://h:99999/', 'http://h:/x', 'https://[bad/x', 'http://h\n/x',
    ]) {
      assert.deepEqual(canonicalKey(u), reference(u), u);
    }
  });
});
