/**
 * RFC 9111 / RFC 9110 conformance of the HTTP cache (issue 16), each behaviour through the HTTP
 * door (absolute-form) and through a tapped SOCKS5 tunnel (SOCKSTAP=http, CACHE=do): the request,
 * what the origin answers, and what the client must see (and how often the origin is asked).
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { SocksClient } from 'socks';
import type { AccessRecord } from '../../src/observe/events.js';
import { startOrigin, type Origin } from '../helpers/origin.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';

/** What the origin answers for a path: set per test, keyed by path. */
const routes = new Map<string, (req: http.IncomingMessage, res: http.ServerResponse, n: number) => void>();
const hits = new Map<string, number>();

function handler(req: http.IncomingMessage, res: http.ServerResponse): void {
  const path = (req.url ?? '/').replace(/^https?:\/\/[^/]+/, '');
  const n = (hits.get(path) ?? 0) + 1;
  hits.set(path, n);
  const route = routes.get(path);
  if (!route) {
    res.writeHead(404);
    res.end();
    return;
  }
  route(req, res, n);
}

let origin: Origin;
/** A raw TCP origin for answers Node's server cannot produce (a body longer than Content-Length). */
let rawOrigin: net.Server;
let rawPort = 0;
let rawRequests = 0;
let proxy: TestProxy;
const records: AccessRecord[] = [];

before(async () => {
  origin = await startOrigin(handler);
  rawOrigin = net.createServer((s) => {
    s.on('error', () => undefined);
    let buf = '';
    s.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      while (buf.includes('\r\n\r\n')) {
        buf = buf.slice(buf.indexOf('\r\n\r\n') + 4);
        rawRequests++;
        s.write('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nCache-Control: max-age=300\r\nContent-Length: 5\r\n\r\nhelloEXTRA BYTES');
      }
    });
  });
  await new Promise<void>((r) => rawOrigin.listen(0, '127.0.0.1', r));
  rawPort = (rawOrigin.address() as net.AddressInfo).port;
  proxy = await startProxy(['-P127.0.0.1:0/socks', '-P127.0.0.1:0/http', 'CACHE=do', 'SOCKSTAP=http']);
  proxy.proxy.events.on('access', (r) => records.push(r));
});
after(async () => {
  await proxy.stop();
  proxy.cleanup();
  await origin.close();
  await new Promise((r) => rawOrigin.close(r));
});

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  raw: string[];
  body: Buffer;
  informational: number[];
}

type Way = 'door' | 'socks';

/** One request on a new client connection, through the door or a SOCKS5 tunnel; the whole answer. */
async function ask(way: Way, port: number, path: string, headers: Record<string, string> = {}, method = 'GET'): Promise<Answer> {
  let socket: net.Socket | undefined;
  if (way === 'socks') {
    ({ socket } = await SocksClient.createConnection({
      proxy: { host: '127.0.0.1', port: proxy.port('socks'), type: 5 },
      command: 'connect',
      destination: { host: '127.0.0.1', port },
    }));
  }
  return new Promise((resolve, reject) => {
    const informational: number[] = [];
    const req = http.request(
      {
        ...(socket
          ? { createConnection: () => socket!, path }
          : { host: '127.0.0.1', port: proxy.port('http'), path: `http://127.0.0.1:${port}${path}`, agent: false }),
        method,
        headers: { host: `127.0.0.1:${port}`, connection: 'close', ...headers },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, headers: res.headers, raw: res.rawHeaders, body: Buffer.concat(chunks), informational }),
        );
        res.on('error', reject);
      },
    );
    req.on('information', (info) => informational.push(info.statusCode));
    req.setTimeout(15_000, () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

const ways: Way[] = ['door', 'socks'];
let seq = 0;
/** A fresh path served by `route`. */
function serve(route: (req: http.IncomingMessage, res: http.ServerResponse, n: number) => void): string {
  const path = `/c${++seq}`;
  routes.set(path, route);
  return path;
}
const originHits = (path: string): number => hits.get(path) ?? 0;

describe('cache conformance (RFC 9111, RFC 9110)', () => {
  for (const way of ways) {
    describe(`through the ${way === 'door' ? 'HTTP door' : 'SOCKS5 tap'}`, () => {
      // RFC 9111 §5.3: an Expires that is not a valid HTTP-date (RFC 9110 §5.6.7) means already expired.
      const invalid = [
        'Thu, 18 Aug 2050 02:01:18 UTC',
        'Thu 18 Aug 2050 02:01:18 GMT',
        'Thu,  18 Aug 2050 02:01:18 GMT',
        'Thu, 18-Aug-2050 02:01:18 GMT',
        'Thu, 18 Aug 2050 2:01:18 GMT',
        'Thu, 18 Aug 2050 02:01:18 GMT junk',
      ];
      for (const value of invalid) {
        test(`an invalid Expires (${JSON.stringify(value)}) counts as expired`, async () => {
          const path = serve((_q, res, n) => {
            res.writeHead(200, { expires: value, 'content-type': 'text/plain' });
            res.end(`body ${n}`);
          });
          assert.equal((await ask(way, origin.port, path)).body.toString(), 'body 1');
          assert.equal((await ask(way, origin.port, path)).body.toString(), 'body 2');
          assert.equal(originHits(path), 2);
        });
      }
      const valid = ['Thu, 18 Aug 2050 02:01:18 GMT', 'Thursday, 18-Aug-50 02:01:18 GMT', 'Thu Aug 18 02:01:18 2050', 'Thu Aug  8 02:01:18 2050'];
      for (const value of valid) {
        test(`a valid Expires in any of the three formats (${JSON.stringify(value)}) gives freshness`, async () => {
          const path = serve((_q, res, n) => {
            res.writeHead(200, { expires: value, 'content-type': 'text/plain' });
            res.end(`body ${n}`);
          });
          await ask(way, origin.port, path);
          const second = await ask(way, origin.port, path);
          assert.equal(second.body.toString(), 'body 1');
          assert.equal(second.headers.expires, value, 'Expires kept as sent');
          assert.equal(originHits(path), 1);
        });
      }

      test('Cache-Control directive names are case-insensitive (RFC 9111 §5.2)', async () => {
        const noCache = serve((_q, res, n) => {
          res.writeHead(200, { 'cache-control': 'No-CaChE, Max-Age=300', etag: '"v"', 'content-type': 'text/plain' });
          res.end(`body ${n}`);
        });
        await ask(way, origin.port, noCache);
        await ask(way, origin.port, noCache);
        assert.equal(originHits(noCache), 2, 'No-CaChE: every reuse is validated');
        const maxAge = serve((_q, res, n) => {
          res.writeHead(200, { 'cache-control': 'MAX-AGE=300', 'content-type': 'text/plain' });
          res.end(`body ${n}`);
        });
        await ask(way, origin.port, maxAge);
        assert.equal((await ask(way, origin.port, maxAge)).body.toString(), 'body 1');
        assert.equal(originHits(maxAge), 1, 'MAX-AGE=300 is fresh');
        const noStore = serve((_q, res, n) => {
          res.writeHead(200, { 'cache-control': 'max-age=300, NO-STORE', 'content-type': 'text/plain' });
          res.end(`body ${n}`);
        });
        await ask(way, origin.port, noStore);
        await ask(way, origin.port, noStore);
        assert.equal(originHits(noStore), 2, 'NO-STORE is not stored');
        const reqNoCache = serve((_q, res, n) => {
          res.writeHead(200, { 'cache-control': 'max-age=300', 'content-type': 'text/plain' });
          res.end(`body ${n}`);
        });
        await ask(way, origin.port, reqNoCache);
        assert.equal((await ask(way, origin.port, reqNoCache, { 'cache-control': 'No-Cache' })).body.toString(), 'body 2');
      });

      test('a fresh must-revalidate response is reused; a stale one is never served stale (RFC 9111 §5.2.2.2)', async () => {
        const fresh = serve((_q, res, n) => {
          res.writeHead(200, { 'cache-control': 'max-age=300, must-revalidate', 'content-type': 'text/plain' });
          res.end(`body ${n}`);
        });
        await ask(way, origin.port, fresh);
        assert.equal((await ask(way, origin.port, fresh)).body.toString(), 'body 1');
        assert.equal(originHits(fresh), 1, 'served from the cache');
        const stale = serve((_q, res, n) => {
          if (n > 1) {
            res.writeHead(500, { 'content-type': 'text/plain' });
            res.end('origin error');
            return;
          }
          res.writeHead(200, { 'cache-control': 'max-age=5, must-revalidate, stale-if-error=600', age: '100', etag: '"s"', 'content-type': 'text/plain' });
          res.end(`body ${n}`);
        });
        await ask(way, origin.port, stale);
        const second = await ask(way, origin.port, stale);
        assert.equal(originHits(stale), 2);
        assert.equal(second.status, 500, 'not the stale 200');
      });

      test('stale-while-revalidate never serves past its window (RFC 5861 §3)', async () => {
        const path = serve((_q, res, n) => {
          res.writeHead(200, { 'cache-control': 'max-age=1, stale-while-revalidate=2', age: '10', etag: `"w${n}"`, 'content-type': 'text/plain' });
          res.end(`body ${n}`);
        });
        await ask(way, origin.port, path);
        assert.equal((await ask(way, origin.port, path)).body.toString(), 'body 2');
        assert.equal(originHits(path), 2);
      });

      test('the conditional request for a Vary entry carries the fields Vary names (RFC 9111 §4.3.1)', async () => {
        const seen: http.IncomingHttpHeaders[] = [];
        const path = serve((req, res) => {
          seen.push(req.headers);
          if (req.headers['if-none-match'] === '"v1"') {
            res.writeHead(304, { etag: '"v1"', 'cache-control': 'max-age=0', vary: 'Foo' });
            res.end();
            return;
          }
          res.writeHead(200, { etag: '"v1"', 'cache-control': 'max-age=0', vary: 'Foo', 'content-type': 'text/plain' });
          res.end(`foo=${String(req.headers.foo)}`);
        });
        await ask(way, origin.port, path, { foo: 'bar' });
        const second = await ask(way, origin.port, path, { foo: 'bar' });
        assert.equal(second.body.toString(), 'foo=bar');
        assert.equal(seen.length, 2);
        assert.equal(seen[1]!['if-none-match'], '"v1"');
        assert.equal(seen[1]!.foo, 'bar');
      });

      test('a stored response keeps Date, Content-Length, Set-Cookie and Content-Range as sent (RFC 9111 §3.1, RFC 9110 §6.6.1)', async () => {
        const date = new Date(Date.now() - 30_000).toUTCString();
        const path = serve((_q, res, n) => {
          res.writeHead(200, {
            date,
            'cache-control': 'max-age=300, public',
            'set-cookie': ['a=1; Path=/', 'b=2'],
            'content-range': 'bytes 0-5/6',
            'content-length': 6,
            'content-type': 'text/plain',
          });
          res.end(`body ${n}`);
        });
        const first = await ask(way, origin.port, path);
        const second = await ask(way, origin.port, path);
        assert.equal(second.body.toString(), 'body 1');
        assert.equal(originHits(path), 1);
        assert.equal(second.headers.date, date, 'Date never rewritten');
        assert.equal(second.headers['content-length'], '6');
        assert.equal(second.headers['content-range'], 'bytes 0-5/6');
        assert.deepEqual(second.headers['set-cookie'], first.headers['set-cookie']);
        assert.ok(Number(second.headers.age) >= 0);
      });

      test('a Range request on a stored complete response is answered 206 from the cache (RFC 9110 §14.2)', async () => {
        const body = 'abcdefghijklmnopqrstuvwxyz';
        const path = serve((_q, res) => {
          res.writeHead(200, { 'cache-control': 'max-age=300', etag: '"r"', 'content-type': 'text/plain', 'accept-ranges': 'bytes' });
          res.end(body);
        });
        await ask(way, origin.port, path);
        const r = await ask(way, origin.port, path, { range: 'bytes=2-5' });
        assert.equal(r.status, 206);
        assert.equal(r.body.toString(), 'cdef');
        assert.equal(r.headers['content-range'], `bytes 2-5/${body.length}`);
        assert.equal(r.headers['content-length'], '4');
        const suffix = await ask(way, origin.port, path, { range: 'bytes=-3' });
        assert.equal(suffix.status, 206);
        assert.equal(suffix.body.toString(), 'xyz');
        const open = await ask(way, origin.port, path, { range: 'bytes=20-' });
        assert.equal(open.body.toString(), 'uvwxyz');
        // If-Range with another validator: the whole representation (RFC 9110 §13.1.5).
        const other = await ask(way, origin.port, path, { range: 'bytes=2-5', 'if-range': '"other"' });
        assert.equal(other.status, 200);
        assert.equal(other.body.toString(), body);
        const unsatisfiable = await ask(way, origin.port, path, { range: 'bytes=100-200' });
        assert.equal(unsatisfiable.status, 416);
        assert.equal(unsatisfiable.headers['content-range'], `bytes */${body.length}`);
        assert.equal(originHits(path), 1, 'all from the cache');
      });

      test('an Age with a fractional value is ignored (RFC 9111 §5.1)', async () => {
        const path = serve((_q, res, n) => {
          res.writeHead(200, { 'cache-control': 'max-age=300', age: '7200.5', 'content-type': 'text/plain' });
          res.end(`body ${n}`);
        });
        await ask(way, origin.port, path);
        assert.equal((await ask(way, origin.port, path)).body.toString(), 'body 1');
        assert.equal(originHits(path), 1);
      });

      test('103 Early Hints are relayed and never stored (RFC 9110 §15.2)', async () => {
        const path = serve((_q, res, n) => {
          res.writeEarlyHints({ link: '</style.css>; rel=preload; as=style' });
          res.writeHead(200, { 'cache-control': 'max-age=300', 'content-type': 'text/plain' });
          res.end(`body ${n}`);
        });
        const first = await ask(way, origin.port, path);
        assert.deepEqual(first.informational, [103]);
        assert.equal(first.status, 200);
        const second = await ask(way, origin.port, path);
        assert.equal(second.status, 200);
        assert.equal(second.body.toString(), 'body 1');
        assert.deepEqual(second.informational, []);
      });

      test('a body longer than its Content-Length is cut at the length, not answered 502 (RFC 9112 §6.3)', async () => {
        const before = rawRequests;
        const r = await ask(way, rawPort, `/long-${way}`);
        assert.equal(r.status, 200);
        assert.equal(r.body.toString(), 'hello');
        assert.equal(rawRequests, before + 1);
      });

      test('a 304 that does not match the stored entry neither drops its body nor asks again unconditionally (RFC 9111 §4.3.4)', async () => {
        const path = serve((req, res, n) => {
          if (req.headers['if-none-match'] !== undefined) {
            res.writeHead(304, { etag: '"other"', 'cache-control': 'max-age=0' });
            res.end();
            return;
          }
          res.writeHead(200, { etag: '"mine"', 'cache-control': 'max-age=0', 'content-type': 'text/plain' });
          res.end(`body ${n}`);
        });
        await ask(way, origin.port, path);
        const second = await ask(way, origin.port, path);
        assert.equal(second.status, 200);
        assert.equal(second.body.toString(), 'body 1');
        assert.equal(originHits(path), 2, 'one conditional request, no unconditional one after it');
      });
    });
  }
});
