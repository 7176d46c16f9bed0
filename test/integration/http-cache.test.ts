/**
 * The HTTP cache in the request path, through every way a request can arrive: SOCKS5 (hostname),
 * SOCKS4, the HTTP door (absolute-form) and CONNECT-then-plain-HTTP, all tapped with CACHE=do.
 * Fresh hits need no origin connection at all; no-store/private are never served from the cache;
 * Vary, revalidation (one conditional request), collapsed misses, a forged Host, a restart,
 * REJECT on a URL pattern and MOUNT.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe, test } from 'node:test';
import type { AccessRecord } from '../../src/observe/events.js';
import { curl, startOrigin, type Origin } from '../helpers/origin.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';

let counter = 0;

function handler(req: http.IncomingMessage, res: http.ServerResponse): void {
  const url = req.url ?? '/';
  const n = ++counter;
  if (url.startsWith('/nostore')) {
    res.writeHead(200, { 'cache-control': 'no-store', 'content-type': 'text/plain' });
    res.end(`nostore ${n}`);
  } else if (url.startsWith('/private')) {
    res.writeHead(200, { 'cache-control': 'private, max-age=300', 'content-type': 'text/plain' });
    res.end(`private ${n}`);
  } else if (url.startsWith('/vary')) {
    const lang = String(req.headers['accept-language'] ?? 'none');
    res.writeHead(200, { 'cache-control': 'max-age=300', vary: 'Accept-Language', 'content-type': 'text/plain' });
    res.end(`lang=${lang}`);
  } else if (url.startsWith('/etag')) {
    if (req.headers['if-none-match'] === '"v1"') {
      res.writeHead(304, { etag: '"v1"', 'cache-control': 'max-age=0, must-revalidate' });
      res.end();
      return;
    }
    res.writeHead(200, { etag: '"v1"', 'cache-control': 'max-age=0, must-revalidate', 'content-type': 'text/plain' });
    res.end('etag body');
  } else if (url.startsWith('/slow')) {
    // Delays its answer so that two clients are in flight at once.
    setTimeout(() => {
      res.writeHead(200, { 'cache-control': 'max-age=300', 'content-type': 'text/plain' });
      res.end(`slow ${n}`);
    }, 400);
  } else {
    res.writeHead(200, { 'cache-control': 'max-age=300', 'content-type': 'text/plain' });
    res.end(`page ${url} host=${req.headers.host ?? ''} n=${n}`);
  }
}

let origin: Origin;
let originB: Origin;
let proxy: TestProxy;
const records: AccessRecord[] = [];

async function startTestProxy(stateDir?: string): Promise<TestProxy> {
  const p = await startProxy([
    '-P127.0.0.1:0/socks',
    '-P127.0.0.1:0/http',
    'CACHE=do',
    'SOCKSTAP=http',
    'REJECT=http:{http://127.0.0.1:*/denied/*}:*',
    `MOUNT=/mnt/* http://127.0.0.1:${origin.port}/static/*`,
    ...(stateDir ? [`STATEDIR=${stateDir}`] : []),
  ]);
  p.proxy.events.on('access', (r) => records.push(r));
  return p;
}

before(async () => {
  origin = await startOrigin(handler);
  originB = await startOrigin(handler);
  proxy = await startTestProxy();
});
after(async () => {
  await proxy.stop();
  proxy.cleanup();
  await origin.close();
  await originB.close();
});

const socks5 = (): string[] => ['--socks5-hostname', `127.0.0.1:${proxy.port('socks')}`];
const socks4 = (): string[] => ['--socks4', `127.0.0.1:${proxy.port('socks')}`];
const door = (): string[] => ['-x', `http://127.0.0.1:${proxy.port('http')}`];
const connectDoor = (): string[] => ['-p', '-x', `http://127.0.0.1:${proxy.port('http')}`];

async function get(via: string[], url: string, extra: string[] = []): Promise<string> {
  const r = await curl([...via, ...extra, url]);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout.toString();
}

/** Result codes of a URL; TCP_MEM_HIT (from the memory tier) and TCP_HIT both mean a hit (INTERFACE.md). */
function codesFor(url: string): string[] {
  return records.filter((r) => r.url === url).map((r) => `${r.resultCode.replace(/^TCP_MEM_HIT/, 'TCP_HIT')}/${r.status}`);
}

describe('HTTP cache through every door', () => {
  const ways: Array<[string, () => string[]]> = [
    ['socks5-hostname', socks5],
    ['socks4', socks4],
    ['http door', door],
    ['CONNECT then plain HTTP', connectDoor],
  ];
  for (const [name, via] of ways) {
    test(`${name}: a fresh page is served from the cache with no origin connection`, async () => {
      const path = `/page-${name.replace(/\W+/g, '-')}`;
      const url = origin.url(path);
      const first = await get(via(), url);
      const accepts = origin.accepts;
      const requests = origin.requests.length;
      const second = await get(via(), url);
      assert.equal(second, first);
      assert.equal(origin.accepts, accepts, 'no origin connection for a hit');
      assert.equal(origin.requests.length, requests);
      assert.deepEqual(codesFor(url), ['TCP_MISS/200', 'TCP_HIT/200']);
    });
  }

  test('the hit survives the origin going away', async () => {
    const solo = await startOrigin(handler);
    const url = solo.url('/gone-later');
    const first = await get(socks5(), url);
    const accepts = solo.accepts;
    assert.equal(await get(socks5(), url), first);
    await solo.close();
    assert.equal(await get(socks5(), url), first);
    assert.equal(await get(door(), url), first);
    assert.equal(solo.accepts, accepts);
    assert.deepEqual(codesFor(url), ['TCP_MISS/200', 'TCP_HIT/200', 'TCP_HIT/200', 'TCP_HIT/200']);
  });

  test('no-store and private responses are never served from the cache', async () => {
    for (const path of ['/nostore', '/private']) {
      const url = origin.url(path);
      const before = origin.requests.filter((r) => r.url === path).length;
      const a = await get(socks5(), url);
      const b = await get(socks5(), url);
      const c = await get(door(), url);
      assert.notEqual(a, b);
      assert.notEqual(b, c);
      assert.equal(origin.requests.filter((r) => r.url === path).length, before + 3);
      assert.deepEqual(codesFor(url), ['TCP_MISS/200', 'TCP_MISS/200', 'TCP_MISS/200']);
    }
  });

  test('Vary: Accept-Language keeps two variants', async () => {
    const url = origin.url('/vary');
    assert.equal(await get(socks5(), url, ['-H', 'Accept-Language: de']), 'lang=de');
    assert.equal(await get(socks5(), url, ['-H', 'Accept-Language: fr']), 'lang=fr');
    assert.equal(await get(socks5(), url, ['-H', 'Accept-Language: de']), 'lang=de');
    assert.equal(await get(socks5(), url, ['-H', 'Accept-Language: fr']), 'lang=fr');
    assert.equal(origin.requests.filter((r) => r.url === '/vary').length, 2);
    assert.deepEqual(codesFor(url), ['TCP_MISS/200', 'TCP_MISS/200', 'TCP_HIT/200', 'TCP_HIT/200']);
  });

  test('a stale entry is revalidated with one conditional request', async () => {
    const url = origin.url('/etag');
    assert.equal(await get(socks5(), url), 'etag body');
    const before = origin.requests.length;
    assert.equal(await get(socks5(), url), 'etag body');
    const sent = origin.requests.slice(before);
    assert.equal(sent.length, 1);
    assert.equal(sent[0]!.headers['if-none-match'], '"v1"');
    assert.deepEqual(codesFor(url), ['TCP_MISS/200', 'TCP_REFRESH_UNMODIFIED/200']);
  });

  test('a client conditional request is answered 304 from a fresh entry', async () => {
    const url = origin.url('/conditional');
    await get(socks5(), url);
    const r = await curl([...socks5(), '-o', '/dev/null', '-w', '%{http_code}', '-H', 'If-Modified-Since: Fri, 01 Jan 2100 00:00:00 GMT', url]);
    // The stored page has no validator: the condition cannot hold, the full page comes back.
    assert.equal(r.stdout.toString(), '200');
    assert.deepEqual(codesFor(url), ['TCP_MISS/200', 'TCP_HIT/200']);
  });

  test('two clients asking for the same uncached URL cause one origin request', async () => {
    const url = origin.url('/slow');
    const [a, b] = await Promise.all([get(socks5(), url), get(door(), url)]);
    assert.equal(a, b);
    assert.equal(origin.requests.filter((r) => r.url === '/slow').length, 1);
    assert.deepEqual(codesFor(url).sort(), ['TCP_HIT/200', 'TCP_MISS/200']);
  });

  test('a forged Host header through a tunnel to A does not poison B', async () => {
    const path = '/shared-path';
    const hostB = `127.0.0.1:${originB.port}`;
    // Through a tunnel to A, claiming to be B: refused (the Host does not name the tunnel's
    // destination), so neither A's nor B's entry can be filled with the other's answer.
    const forged = await curl([...socks5(), '-s', '-o', '/dev/null', '-w', '%{http_code}', '-H', `Host: ${hostB}`, origin.url(path)]);
    assert.equal(forged.stdout.toString(), '400');
    assert.equal(origin.requests.filter((r) => r.url === path).length, 0);
    const real = await get(socks5(), originB.url(path));
    assert.match(real, new RegExp(`host=${hostB}`));
    assert.equal(originB.requests.filter((r) => r.url === path).length, 1);
    assert.deepEqual(codesFor(originB.url(path)), ['TCP_MISS/200']);
    assert.deepEqual(codesFor(origin.url(path)), ['TAG_NONE/400']);
  });

  test('REJECT on a URL pattern: 403 page and TCP_DENIED', async () => {
    const url = origin.url('/denied/secret');
    for (const via of [socks5(), door()]) {
      const r = await curl([...via, '-i', url]);
      assert.equal(r.code, 0, r.stderr);
      const text = r.stdout.toString();
      assert.match(text, /^HTTP\/1\.1 403/);
      assert.match(text, /<h1>403 Forbidden<\/h1>/);
    }
    assert.equal(origin.requests.filter((r) => r.url.startsWith('/denied')).length, 0);
    assert.deepEqual(codesFor(url), ['TCP_DENIED/403', 'TCP_DENIED/403']);
  });

  test('MOUNT rewrites the path before the origin and the cache', async () => {
    const body = await get(socks5(), origin.url('/mnt/a/b.txt?x=1'));
    assert.match(body, /^page \/static\/a\/b\.txt\?x=1 /);
    assert.ok(origin.requests.some((r) => r.url === '/static/a/b.txt?x=1'));
    assert.deepEqual(codesFor(origin.url('/static/a/b.txt?x=1')), ['TCP_MISS/200']);
  });
});

describe('the cache survives a restart', () => {
  test('a new proxy on the same STATEDIR serves the entry with the origin down', async () => {
    const solo = await startOrigin(handler);
    const url = solo.url('/persistent');
    const first = await get(socks5(), url);
    const stateDir = proxy.stateDir;
    await proxy.stop();
    await solo.close();
    proxy = await startTestProxy(stateDir);
    assert.equal(await get(socks5(), url), first);
    assert.deepEqual(codesFor(url), ['TCP_MISS/200', 'TCP_HIT/200']);
  });
});
