/**
 * The native hit path (native/hit_*.c, frontdoors/native-http.ts): after JavaScript served a
 * plain fresh hit from the memory tier, the relay thread answers the same source's same request
 * itself. These tests show that it answers byte for byte what JavaScript answered, records each
 * hit as JavaScript does, hands everything else back at a request boundary on the same session,
 * and never answers what JavaScript would no longer answer so: another source, an invalidated or
 * revalidated entry, a reload that refuses the destination, accounts. Real sockets on loopback.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { after, afterEach, before, describe, test } from 'node:test';
import { SocksClient } from 'socks';
import { loadConfig } from '../../src/config/load.js';
import { nativeHitStats } from '../../src/native/hits.js';
import type { AccessRecord } from '../../src/observe/events.js';
import { startOrigin, type Origin } from '../helpers/origin.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';

/**
 * The addon is built on Linux only (binding.gyp); there these tests always run, and a missing or
 * broken addon fails them rather than skipping them.
 */
const LINUX_ONLY = process.platform !== 'linux' && 'the native addon is built on Linux only (binding.gyp)';

const BODY = Buffer.from('native hit body '.repeat(256));
const BIG = Buffer.alloc(1024 * 1024, 'B');
const DATE = new Date(Date.now() - 3000).toUTCString();
let version = 1;

function handler(req: http.IncomingMessage, res: http.ServerResponse): void {
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    req.resume();
    res.writeHead(200, { 'cache-control': 'no-store', 'content-length': 2 });
    res.end('ok');
    return;
  }
  const short = req.url?.startsWith('/short');
  const body = req.url?.startsWith('/big') ? BIG : short ? Buffer.from(`version ${version} `.repeat(100)) : BODY;
  const etag = `"v${short ? version : 1}"`;
  if (req.headers['if-none-match'] === etag) {
    res.writeHead(304, { etag, 'cache-control': short ? 'max-age=2' : 'max-age=600' });
    res.end();
    return;
  }
  res.writeHead(200, {
    date: short ? new Date().toUTCString() : DATE,
    // Version 1 of /short goes stale soon; what replaces it stays fresh (the test reads it after).
    'cache-control': short && version === 1 ? 'max-age=2' : 'max-age=600',
    etag,
    'content-type': 'text/plain',
    'content-length': body.length,
  });
  res.end(req.method === 'HEAD' ? undefined : body);
}

interface Answer {
  head: string;
  status: number;
  body: Buffer;
  raw: Buffer;
}

/** A keep-alive client on one raw socket: requests in order, answers framed by Content-Length. */
class Conn {
  readonly socket: net.Socket;
  private buf = Buffer.alloc(0);
  private waiting: Array<{ head: boolean; resolve: (a: Answer) => void; reject: (e: Error) => void }> = [];
  ended = false;

  constructor(port: number | net.Socket, localAddress = '127.0.0.1') {
    this.socket = typeof port === 'number' ? net.connect({ port, host: '127.0.0.1', localAddress }) : port;
    this.socket.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.parse();
    });
    this.socket.on('close', () => {
      this.ended = true;
      for (const w of this.waiting.splice(0)) w.reject(new Error('closed'));
    });
    this.socket.on('error', () => undefined);
  }

  private parse(): void {
    while (this.waiting.length > 0) {
      const end = this.buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const head = this.buf.subarray(0, end + 4).toString('latin1');
      const status = Number(head.slice(9, 12));
      const m = /\r\ncontent-length: *(\d+)/i.exec(head);
      const w = this.waiting[0]!;
      const length = w.head || status === 304 ? 0 : m ? Number(m[1]) : 0;
      if (this.buf.length < end + 4 + length) return;
      const raw = this.buf.subarray(0, end + 4 + length);
      this.buf = this.buf.subarray(end + 4 + length);
      this.waiting.shift();
      w.resolve({ head, status, body: raw.subarray(end + 4), raw: Buffer.from(raw) });
    }
  }

  /** Send `text` (one or more requests); one answer per `heads` entry (true: a HEAD's). */
  send(text: string, heads: boolean[] = [false]): Promise<Answer[]> {
    const answers = heads.map(
      (head) =>
        new Promise<Answer>((resolve, reject) => {
          this.waiting.push({ head, resolve, reject });
        }),
    );
    this.socket.write(text);
    this.parse();
    return Promise.all(answers);
  }

  async get(url: string, extra = '', method = 'GET', host = 'x'): Promise<Answer> {
    const [a] = await this.send(`${method} ${url} HTTP/1.1\r\nHost: ${host}\r\nUser-Agent: native-test/1\r\n${extra}\r\n`, [method === 'HEAD']);
    return a!;
  }

  close(): void {
    this.socket.destroy();
  }
}

/** The answer without its Age value (it counts seconds). */
function ageless(b: Buffer): string {
  return b.toString('latin1').replace(/\r\nage: \d+\r\n/i, '\r\nage: N\r\n');
}

const until = async (what: () => boolean, ms = 5000): Promise<void> => {
  const stop = Date.now() + ms;
  while (!what()) {
    if (Date.now() > stop) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 10));
  }
};

/** A suite's clean-up: its connections after each test, its proxy and origin after all. */
function cleanUp(conns: Conn[], parts: () => [TestProxy, Origin]): void {
  afterEach(() => {
    for (const c of conns.splice(0)) c.close();
  });
  after(async () => {
    const [proxy, origin] = parts();
    await proxy.stop();
    proxy.cleanup();
    await origin.close();
  });
}

describe('native hit path', { skip: LINUX_ONLY }, () => {
  let origin: Origin;
  let proxy: TestProxy;
  let port: number;
  const records: AccessRecord[] = [];
  const conns: Conn[] = [];
  const argv = ['-P127.0.0.1:0/http', 'CACHE=do'];

  const open = (local?: string): Conn => {
    const c = new Conn(port, local);
    conns.push(c);
    return c;
  };

  /**
   * A miss, then a JavaScript hit that publishes: the thread answers the next one. `head`: a
   * JavaScript HEAD hit too (a HEAD is granted apart from a GET).
   */
  async function warm(path: string, head = false): Promise<Answer> {
    const c = open();
    assert.equal((await c.get(origin.url(path))).status, 200);
    const js = await c.get(origin.url(path));
    if (head) assert.equal((await c.get(origin.url(path), '', 'HEAD')).status, 200);
    c.close();
    return js;
  }

  before(async () => {
    origin = await startOrigin(handler);
    proxy = await startProxy(argv);
    port = proxy.port();
    proxy.proxy.events.on('access', (r) => records.push(r));
  });
  cleanUp(conns, () => [proxy, origin]);

  test('the thread answers a repeated fresh hit, byte for byte what JavaScript answered, and records it', async () => {
    const js = await warm('/same');
    const before = nativeHitStats().served;
    const c = open();
    const native = await c.get(origin.url('/same'));
    assert.equal(nativeHitStats().served, before + 1, 'answered by the thread');
    assert.equal(ageless(native.raw), ageless(js.raw));
    assert.deepEqual(native.body, BODY);
    assert.equal(origin.requests.filter((r) => r.url === '/same').length, 1);
    const again = await c.get(origin.url('/same'));
    assert.equal(ageless(again.raw), ageless(js.raw));
    assert.equal(nativeHitStats().served, before + 2);
    await until(() => records.filter((r) => r.url === origin.url('/same')).length === 4);
    const last = records.filter((r) => r.url === origin.url('/same')).at(-1)!;
    assert.equal(last.resultCode, 'TCP_MEM_HIT');
    assert.equal(last.status, 200);
    assert.equal(last.bytes, again.raw.length);
    assert.equal(last.method, 'GET');
    assert.equal(last.userAgent, 'native-test/1');
    const sessionId = last.sessionId;
    c.close();
    await until(() => proxy.sessions().some((s) => s.id === sessionId));
    const s = proxy.sessions().find((x) => x.id === sessionId)!;
    assert.equal(s.bytesDown, native.raw.length + again.raw.length, 'the session counts what the thread wrote');
    assert.equal((s.http as { requests: number }).requests, 2);
  });

  test('HEAD is answered with the head alone', async () => {
    await warm('/head', true);
    const before = nativeHitStats().served;
    const c = open();
    const a = await c.get(origin.url('/head'), '', 'HEAD');
    assert.equal(nativeHitStats().served, before + 1);
    assert.equal(a.status, 200);
    assert.equal(a.body.length, 0);
    assert.match(a.head, new RegExp(`\\r\\ncontent-length: ${BODY.length}\\r\\n`, 'i'));
    const b = await c.get(origin.url('/head'));
    assert.deepEqual(b.body, BODY, 'the connection goes on after the HEAD');
  });

  test('a request the thread does not take goes to JavaScript on the same connection and session', async () => {
    await warm('/cond');
    const before = nativeHitStats();
    const c = open();
    const first = await c.get(origin.url('/cond'));
    const notModified = await c.get(origin.url('/cond'), 'If-None-Match: "v1"\r\n');
    assert.equal(notModified.status, 304);
    const after = await c.get(origin.url('/cond'));
    assert.deepEqual(after.body, BODY);
    const stats = nativeHitStats();
    assert.equal(stats.served, before.served + 1, 'only the first');
    assert.equal(stats.handedOff, before.handedOff + 1);
    await until(() => records.filter((r) => r.url === origin.url('/cond')).length === 5);
    const mine = records.filter((r) => r.url === origin.url('/cond')).slice(2);
    assert.deepEqual(
      mine.map((r) => r.resultCode),
      ['TCP_MEM_HIT', 'TCP_IMS_HIT', 'TCP_MEM_HIT'],
    );
    assert.equal(new Set(mine.map((r) => r.sessionId)).size, 1, 'one session from the thread to JavaScript');
    c.close();
    const id = mine[0]!.sessionId;
    await until(() => proxy.sessions().some((s) => s.id === id));
    const s = proxy.sessions().find((x) => x.id === id)!;
    assert.equal(s.bytesDown, first.raw.length + notModified.raw.length + after.raw.length);
  });

  test('pipelined requests are answered in order', async () => {
    await warm('/pipe', true);
    const before = nativeHitStats().served;
    const c = open();
    const one = `GET ${origin.url('/pipe')} HTTP/1.1\r\nHost: x\r\n\r\n`;
    const answers = await c.send(one + `HEAD ${origin.url('/pipe')} HTTP/1.1\r\nHost: x\r\n\r\n` + one, [false, true, false]);
    assert.deepEqual(answers.map((a) => a.body.length), [BODY.length, 0, BODY.length]);
    assert.equal(nativeHitStats().served, before + 3);
  });

  test('an unsafe request invalidates the entry: the thread does not answer with the old copy', async () => {
    await warm('/unsafe');
    const c = open();
    await c.get(origin.url('/unsafe'));
    const seen = origin.requests.filter((r) => r.url === '/unsafe' && r.method === 'GET').length;
    const post = await c.send(`POST ${origin.url('/unsafe')} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi`);
    assert.equal(post[0]!.status, 200);
    const d = open();
    const a = await d.get(origin.url('/unsafe'));
    assert.equal(a.status, 200);
    assert.equal(origin.requests.filter((r) => r.url === '/unsafe' && r.method === 'GET').length, seen + 1, 'fetched again after the POST');
  });

  test('an entry past its freshness is revalidated by JavaScript, and the new body is what the thread answers', async () => {
    version = 1;
    await warm('/short');
    const c = open();
    assert.match((await c.get(origin.url('/short'))).body.toString(), /version 1/);
    version = 2;
    await new Promise((r) => setTimeout(r, 2100));
    const fresh = await c.get(origin.url('/short'));
    assert.match(fresh.body.toString(), /version 2/, 'not the stale copy');
    // The new response is stored once its body is on disk (fsync, rename): until then a request revalidates again.
    await until(() => records.some((r) => r.url === origin.url('/short') && r.resultCode === 'TCP_REFRESH_MODIFIED'));
    await new Promise((r) => setTimeout(r, 300));
    assert.equal((await c.get(origin.url('/short'))).status, 200); // a JavaScript hit: publishes the new entry
    const before = nativeHitStats().served;
    const d = open();
    const native = await d.get(origin.url('/short'));
    assert.match(native.body.toString(), /version 2/);
    assert.equal(nativeHitStats().served, before + 1);
  });

  test('another source is not answered from a grant made for this one', async () => {
    await warm('/other');
    const before = nativeHitStats();
    const c = open('127.0.0.2');
    const a = await c.get(origin.url('/other'));
    assert.deepEqual(a.body, BODY);
    assert.equal(nativeHitStats().served, before.served, 'JavaScript answered 127.0.0.2');
  });

  test('a long or malformed head after native hits is JavaScript\'s to answer; others are served on', async () => {
    await warm('/bad');
    const c = open();
    await c.get(origin.url('/bad'));
    const [bad] = await c.send(`GET ${origin.url('/bad')} HTTP/1.1\r\nHost: x\r\nBad Field: y\r\n\r\n`);
    assert.equal(bad!.status, 400);
    const d = open();
    assert.deepEqual((await d.get(origin.url('/bad'))).body, BODY);
  });

  test('a client that stops reading a 1 MiB body gets all of it when it reads again', async () => {
    await warm('/big');
    await warm('/big'); // promoted to the memory tier by now, published by this hit
    const before = nativeHitStats().served;
    const c = open();
    c.socket.pause();
    const answer = c.get(origin.url('/big'));
    await new Promise((r) => setTimeout(r, 300));
    const d = open();
    assert.deepEqual((await d.get(origin.url('/same'))).body, BODY, 'another client is served meanwhile');
    c.socket.resume();
    const a = await answer;
    assert.equal(a.body.length, BIG.length);
    assert.ok(a.body.equals(BIG));
    assert.ok(nativeHitStats().served >= before + 1);
  });

  test('mutated request heads on a granted connection: every one answered or closed, and the proxy serves on', async () => {
    await warm('/fuzz');
    const before = nativeHitStats().served;
    const valid = Buffer.from(`GET ${origin.url('/fuzz')} HTTP/1.1\r\nHost: x\r\nUser-Agent: fuzz\r\nAccept: */*\r\n\r\n`);
    let seed = 1234567;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    const mutate = (): Buffer => {
      const b = Buffer.from(valid);
      switch (rand(5)) {
        case 0: // flip bytes
          for (let i = 0, n = 1 + rand(4); i < n; i++) b[rand(b.length)] = rand(256);
          return b;
        case 1: // cut short, then close
          return b.subarray(0, rand(b.length));
        case 2: // a huge field
          return Buffer.concat([b.subarray(0, b.length - 2), Buffer.from(`X-Big: ${'y'.repeat(rand(20_000))}\r\n\r\n`)]);
        case 3: // bare LFs
          return Buffer.from(b.toString('latin1').replace(/\r\n/g, rand(2) ? '\n' : '\r\n'), 'latin1');
        default: // two requests, the second mutated
          return Buffer.concat([valid, mutate()]);
      }
    };
    for (let i = 0; i < 120; i++) {
      const bytes = mutate();
      const got = await new Promise<Buffer>((resolve) => {
        const s = net.connect(port, '127.0.0.1');
        const chunks: Buffer[] = [];
        s.on('data', (d: Buffer) => chunks.push(d));
        s.on('error', () => undefined);
        s.on('close', () => resolve(Buffer.concat(chunks)));
        s.setTimeout(300, () => s.destroy()); // what keep-alive leaves open is ours to close
        s.write(bytes, () => s.end());
      });
      if (got.length > 0) assert.match(got.subarray(0, 12).toString('latin1'), /^HTTP\/1\.1 \d{3}/, `answer ${i}`);
    }
    const c = open();
    assert.deepEqual((await c.get(origin.url('/fuzz'))).body, BODY, 'still served');
    assert.ok(nativeHitStats().served > before, 'some of them reached the thread');
  });

  test('closing the session (admin) ends a connection the thread serves', async () => {
    await warm('/close');
    const c = open();
    await c.get(origin.url('/close'));
    await until(() => records.some((r) => r.url === origin.url('/close') && r.resultCode === 'TCP_MEM_HIT' && r.elapsedMs >= 0 && proxy.proxy.sessions.has(r.sessionId)));
    const id = records.filter((r) => r.url === origin.url('/close')).at(-1)!.sessionId;
    proxy.proxy.sessions.get(id)!.close();
    await until(() => c.ended);
  });

  test('a request rule that refuses one method: a GET\'s grant does not answer a HEAD', async () => {
    const local = await startProxy(['-P127.0.0.1:0/http', 'CACHE=do', 'REJECT=http/head:*:*']);
    try {
      const c = new Conn(local.port());
      assert.equal((await c.get(origin.url('/method'))).status, 200);
      assert.equal((await c.get(origin.url('/method'))).status, 200); // a JavaScript hit: the GET is granted
      c.close();
      const before = nativeHitStats().served;
      const d = new Conn(local.port());
      assert.equal((await d.get(origin.url('/method'))).status, 200);
      assert.equal(nativeHitStats().served, before + 1, 'the GET from the thread');
      assert.equal((await d.get(origin.url('/method'), '', 'HEAD')).status, 403, 'REJECT=http/head holds');
      d.close();
    } finally {
      await local.stop();
      local.cleanup();
    }
  });

  test('a reload that refuses the destination refuses it on the native path too', async () => {
    await warm('/reload');
    const c = open();
    await c.get(origin.url('/reload'));
    await proxy.proxy.reload(loadConfig([...argv, `STATEDIR=${proxy.stateDir}`, `REJECT=*:{127.0.0.1:${origin.port}}:*`], { cwd: proxy.stateDir }));
    const d = open();
    assert.equal((await d.get(origin.url('/reload'))).status, 403);
    await proxy.proxy.reload(loadConfig([...argv, `STATEDIR=${proxy.stateDir}`], { cwd: proxy.stateDir }));
  });
});

describe('native hit path: what keeps it off', { skip: LINUX_ONLY }, () => {
  /** A proxy started with `args` and an origin, for one test, stopped after it whatever happens. */
  async function withProxy(args: string[], run: (proxy: TestProxy, origin: Origin) => Promise<void>): Promise<void> {
    const origin = await startOrigin(handler);
    const proxy = await startProxy(args);
    try {
      await run(proxy, origin);
    } finally {
      await proxy.stop();
      proxy.cleanup();
      await origin.close();
    }
  }

  test('with accounts every request is checked in JavaScript', () =>
    withProxy(['-P127.0.0.1:0/http', 'CACHE=do', 'AUTHORIZER=-list{u:p}'], async (proxy, origin) => {
      const c = new Conn(proxy.port());
      const auth = `Proxy-Authorization: Basic ${Buffer.from('u:p').toString('base64')}\r\n`;
      for (let i = 0; i < 3; i++) assert.equal((await c.get(origin.url('/a'), auth)).status, 200);
      const before = nativeHitStats().served;
      assert.equal((await c.get(origin.url('/a'), auth)).status, 200);
      assert.equal((await c.get(origin.url('/a'))).status, 407, 'no credentials, no hit');
      const d = new Conn(proxy.port());
      assert.equal((await d.get(origin.url('/a'))).status, 407);
      assert.equal(nativeHitStats().served, before);
      c.close();
      d.close();
    }));

  test('the default job (SOCKSTAP=all CACHE=do on an auto door): a GET on the SOCKS port is answered by the thread', () =>
    withProxy(['-P127.0.0.1:0', 'SOCKSTAP=all', 'CACHE=do'], async (proxy, origin) => {
      const c = new Conn(proxy.port());
      await c.get(origin.url('/auto'));
      await c.get(origin.url('/auto'));
      c.close();
      const before = nativeHitStats().served;
      const d = new Conn(proxy.port());
      assert.deepEqual((await d.get(origin.url('/auto'))).body, BODY);
      assert.equal(nativeHitStats().served, before + 1);
      d.close();
    }));
});

describe('native hit path: requests in a tapped SOCKS5 tunnel', { skip: LINUX_ONLY }, () => {
  let origin: Origin;
  let proxy: TestProxy;
  const records: AccessRecord[] = [];
  const conns: Conn[] = [];

  async function tunnel(): Promise<Conn> {
    const { socket } = await SocksClient.createConnection({
      proxy: { host: '127.0.0.1', port: proxy.port(), type: 5 },
      command: 'connect',
      destination: { host: '127.0.0.1', port: origin.port },
    });
    const c = new Conn(socket);
    conns.push(c);
    return c;
  }
  const host = (): string => `127.0.0.1:${origin.port}`;

  before(async () => {
    origin = await startOrigin(handler);
    // The default job's shape: SOCKSTAP=all CACHE=do on an auto door.
    proxy = await startProxy(['-P127.0.0.1:0', 'SOCKSTAP=all', 'CACHE=do']);
    proxy.proxy.events.on('access', (r) => records.push(r));
    // A first tunnel: a miss, then a JavaScript hit that grants this source the tunnel's request.
    const c = await tunnel();
    assert.equal((await c.get('/t', '', 'GET', host())).status, 200);
    assert.equal((await c.get('/t', '', 'GET', host())).status, 200);
    assert.equal((await c.get('/t', '', 'HEAD', host())).status, 200); // HEAD is granted on its own
    c.close();
  });
  cleanUp(conns, () => [proxy, origin]);

  test('the thread replies to the CONNECT and answers the tunnel\'s fresh hits, byte for byte', async () => {
    const js = records.filter((r) => r.url === origin.url('/t'));
    assert.deepEqual(js.map((r) => [r.resultCode, r.method]), [['TCP_MISS', 'GET'], ['TCP_MEM_HIT', 'GET'], ['TCP_MEM_HIT', 'HEAD']]);
    const before = nativeHitStats().served;
    const c = await tunnel();
    const a = await c.get('/t', '', 'GET', host());
    const b = await c.get('/t', '', 'HEAD', host());
    assert.equal(nativeHitStats().served, before + 2);
    assert.deepEqual(a.body, BODY);
    assert.equal(b.body.length, 0);
    assert.equal(origin.requests.filter((r) => r.url === '/t').length, 1, 'the origin saw the first request only');
    await until(() => records.filter((r) => r.url === origin.url('/t')).length === 5);
    const mine = records.filter((r) => r.url === origin.url('/t')).slice(3);
    assert.deepEqual(mine.map((r) => [r.resultCode, r.method]), [['TCP_MEM_HIT', 'GET'], ['TCP_MEM_HIT', 'HEAD']]);
    assert.equal(mine[0]!.bytes, a.raw.length);
  });

  test('a request it does not take goes to the tap on the same tunnel and session', async () => {
    const before = nativeHitStats();
    const c = await tunnel();
    await c.get('/t', '', 'GET', host());
    const notModified = await c.get('/t', 'If-None-Match: "v1"\r\n', 'GET', host());
    assert.equal(notModified.status, 304);
    const other = await c.get('/other-in-tunnel', '', 'GET', host());
    assert.deepEqual(other.body, BODY);
    assert.equal(nativeHitStats().served, before.served + 1);
    assert.equal(nativeHitStats().handedOff, before.handedOff + 1);
    await until(() => records.some((r) => r.url === origin.url('/other-in-tunnel')));
    const ids = new Set(records.filter((r) => r.time >= Date.now() - 10_000 && (r.url === origin.url('/other-in-tunnel') || r.resultCode === 'TCP_IMS_HIT')).map((r) => r.sessionId));
    assert.equal(ids.size, 1);
    c.close();
    const [id] = [...ids];
    await until(() => proxy.sessions().some((s) => s.id === id));
    const s = proxy.sessions().find((x) => x.id === id)!;
    assert.equal(s.command, 'connect');
    assert.ok((s.bytesDown as number) >= notModified.raw.length + other.raw.length + BODY.length, 'the thread\'s bytes are counted in');
  });

  test('a Host naming another server is not answered from the grant', async () => {
    const before = nativeHitStats().served;
    const c = await tunnel();
    const a = await c.get('/t', '', 'GET', 'elsewhere.example');
    assert.notEqual(a.status, 200);
    assert.equal(nativeHitStats().served, before);
  });
});
