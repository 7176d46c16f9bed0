/**
 * Issue 13's HTTP findings, each as a repro against real servers: a forged `Host` in a tapped
 * tunnel (SOCKS5 by name, SOCKS5 by address, CONNECT + tap) must not fill another host's cache
 * entry; dot segments (`..`, `%2e%2e`) are keyed as sent, at the door and in tunnels; header
 * fields past Node's maxHeadersCount are forwarded both ways (or 431, never dropped); a pooled
 * origin connection that the origin closed while idle is never reused.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { SocksClient } from 'socks';
import type { AccessRecord } from '../../src/observe/events.js';
import { curl, startOrigin, type Origin } from '../helpers/origin.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';

const MANY = 2000;

let n = 0;
function handler(req: http.IncomingMessage, res: http.ServerResponse): void {
  const url = req.url ?? '/';
  n++;
  if (url.startsWith('/count')) {
    // How many fields arrived, and whether the last one did.
    const names = req.rawHeaders.filter((_, i) => i % 2 === 0).map((h) => h.toLowerCase());
    res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'no-store' });
    res.end(`fields=${names.filter((h) => h.startsWith('x-f-')).length} last=${names.includes('x-last')}`);
    return;
  }
  if (url.startsWith('/many')) {
    const raw: string[] = [];
    for (let i = 0; i < MANY; i++) raw.push(`X-R-${i}`, 'v');
    raw.push('X-Last', 'yes', 'Content-Type', 'text/plain', 'Cache-Control', 'no-store');
    res.writeHead(200, raw);
    res.end('many');
    return;
  }
  if (url.startsWith('/huge-response')) {
    res.writeHead(200, { 'x-huge': 'h'.repeat(70 * 1024), 'cache-control': 'no-store' });
    res.end('huge');
    return;
  }
  res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'max-age=300' });
  res.end(`vhost=${req.headers.host ?? ''} path=${url} n=${n}`);
}

let origin: Origin;
let proxy: TestProxy;
let dir: string;
const records: AccessRecord[] = [];

before(async () => {
  origin = await startOrigin(handler);
  // The origin counts every field itself: lift Node's own limits on it.
  origin.server.maxHeadersCount = 0;
  (origin.server as unknown as { maxHeaderSize: number }).maxHeaderSize = 256 * 1024;
  dir = mkdtempSync(join(tmpdir(), 'sockstap-hostile-http-'));
  const file = join(dir, 'hostile.yaml');
  writeFileSync(
    file,
    [
      // victim.test and evil.test are two virtual hosts on one address; far.test is elsewhere.
      'dns: { hosts: { victim.test: [127.0.0.1], evil.test: [127.0.0.1], far.test: [127.0.0.9] } }',
      '',
    ].join('\n'),
  );
  proxy = await startProxy([
    '-f',
    file,
    '-P127.0.0.1:0/socks',
    '-P127.0.0.1:0/http',
    `-P127.0.0.1:0/tcprelay://victim.test:${origin.port}`,
    'CACHE=do',
    'SOCKSTAP=http',
  ]);
  proxy.proxy.events.on('access', (r) => records.push(r));
});
after(async () => {
  await proxy.stop();
  proxy.cleanup();
  await origin.close();
  rmSync(dir, { recursive: true, force: true });
});

const socks5h = (): string[] => ['--socks5-hostname', `127.0.0.1:${proxy.port('socks')}`];
const door = (): string[] => ['-x', `http://127.0.0.1:${proxy.port('http')}`];
const connectDoor = (): string[] => ['-p', '-x', `http://127.0.0.1:${proxy.port('http')}`];

/** Result codes of a URL; TCP_MEM_HIT (from the memory tier) and TCP_HIT both mean a hit (INTERFACE.md). */
function codesFor(url: string): string[] {
  return records.filter((r) => r.url === url).map((r) => `${r.resultCode.replace(/^TCP_MEM_HIT/, 'TCP_HIT')}/${r.status}`);
}

async function fetchText(args: string[]): Promise<{ status: number; body: string }> {
  const r = await curl(['-s', '-w', '\n%{http_code}', ...args]);
  assert.equal(r.code, 0, r.stderr);
  const text = r.stdout.toString();
  const cut = text.lastIndexOf('\n');
  return { status: Number(text.slice(cut + 1)), body: text.slice(0, cut) };
}

/** A SOCKS5 tunnel to `host:port` (an address: the client resolved the name itself). */
async function tunnel(host: string, port: number): Promise<net.Socket> {
  const { socket } = await SocksClient.createConnection({
    proxy: { host: '127.0.0.1', port: proxy.port('socks'), type: 5 },
    command: 'connect',
    destination: { host, port },
  });
  return socket;
}

interface Answer {
  status: number;
  rawHeaders: string[];
  body: string;
}

/** One request with Node's http client over a given socket (a tunnel), or to the HTTP door. */
function nodeRequest(opts: http.RequestOptions, socket?: net.Socket): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { ...opts, ...(socket ? { createConnection: () => socket } : { agent: false }), maxHeaderSize: 256 * 1024 },
      (res) => {
        let body = '';
        res.setEncoding('latin1');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, rawHeaders: res.rawHeaders, body }));
        res.on('error', reject);
      },
    );
    // Count every field of the answer (Node's client keeps about 1,000 by default).
    req.maxHeadersCount = 0;
    req.on('error', reject);
    req.end();
  });
}

describe('a forged Host in a tapped tunnel does not poison the cache (finding 1)', () => {
  test('SOCKS5 by name: Host naming another virtual host is refused, the real one is not poisoned', async () => {
    const url = `http://victim.test:${origin.port}/f1-socks`;
    const forged = await fetchText([...socks5h(), '-H', `Host: evil.test:${origin.port}`, url]);
    assert.equal(forged.status, 400);
    assert.match(forged.body, /Host/);
    const real = await fetchText([...socks5h(), url]);
    assert.equal(real.status, 200);
    assert.match(real.body, new RegExp(`^vhost=victim\\.test:${origin.port} path=/f1-socks `));
    assert.equal(origin.requests.filter((r) => r.url === '/f1-socks' && r.headers.host?.startsWith('evil.test')).length, 0);
    assert.deepEqual(codesFor(url), ['TAG_NONE/400', 'TCP_MISS/200']);
    assert.match(proxy.readLog('sockstap.log'), /Host.*does not name the tunnel/);
  });

  test('CONNECT + tap: the same', async () => {
    const url = `http://victim.test:${origin.port}/f1-connect`;
    const forged = await fetchText([...connectDoor(), '-H', `Host: evil.test:${origin.port}`, url]);
    assert.equal(forged.status, 400);
    const real = await fetchText([...connectDoor(), url]);
    assert.match(real.body, new RegExp(`^vhost=victim\\.test:${origin.port} path=/f1-connect `));
    assert.deepEqual(codesFor(url), ['TAG_NONE/400', 'TCP_MISS/200']);
  });

  test('a port that is not the tunnel\'s is refused too', async () => {
    const url = `http://victim.test:${origin.port}/f1-port`;
    const forged = await fetchText([...socks5h(), '-H', `Host: victim.test:${origin.port + 1}`, url]);
    assert.equal(forged.status, 400);
    const real = await fetchText([...socks5h(), url]);
    assert.match(real.body, /^vhost=victim\.test:\d+ path=\/f1-port /);
  });

  test('SOCKS5 by address: a Host whose name resolves to the destination is served and keyed by that name', async () => {
    const path = '/f1-ip';
    const socket = await tunnel('127.0.0.1', origin.port);
    const byAddress = await nodeRequest({ path, headers: { host: `victim.test:${origin.port}` }, setHost: false }, socket);
    socket.destroy();
    assert.equal(byAddress.status, 200);
    assert.match(byAddress.body, new RegExp(`^vhost=victim\\.test:${origin.port} `));
    // The same name asked for by name: the entry the address tunnel filled.
    const byName = await fetchText([...socks5h(), `http://victim.test:${origin.port}${path}`]);
    assert.equal(byName.body, byAddress.body);
    assert.deepEqual(codesFor(`http://victim.test:${origin.port}${path}`).slice(-1), ['TCP_HIT/200']);
    // evil.test has the same address: its own entry, never victim's.
    const evilSocket = await tunnel('127.0.0.1', origin.port);
    const evil = await nodeRequest({ path, headers: { host: `evil.test:${origin.port}` }, setHost: false }, evilSocket);
    evilSocket.destroy();
    assert.match(evil.body, new RegExp(`^vhost=evil\\.test:${origin.port} `));
    const again = await fetchText([...socks5h(), `http://victim.test:${origin.port}${path}`]);
    assert.equal(again.body, byAddress.body);
  });

  test('SOCKS5 by address: a Host whose name does not resolve to the destination is refused', async () => {
    const socket = await tunnel('127.0.0.1', origin.port);
    const far = await nodeRequest({ path: '/f1-far', headers: { host: `far.test:${origin.port}` }, setHost: false }, socket);
    socket.destroy();
    assert.equal(far.status, 400);
    assert.equal(origin.requests.filter((r) => r.url === '/f1-far').length, 0);
  });

  test('one tunnel, several requests: a verdict the tunnel keeps is for its Host value only', async () => {
    // The tap keeps the verdict of a Host decided without the name cache (an address here) for
    // the next requests of the tunnel sending the same value: another value is verified anew.
    const socket = await tunnel('127.0.0.1', origin.port);
    const good = `127.0.0.1:${origin.port}`;
    try {
      socket.write(`GET /f1-keep-a HTTP/1.1\r\nHost: ${good}\r\n\r\n`);
      assert.match(await readResponse(socket), /^HTTP\/1\.1 200/);
      socket.write(`GET /f1-keep-b HTTP/1.1\r\nHost: ${good}\r\n\r\n`);
      assert.match(await readResponse(socket), /^HTTP\/1\.1 200/);
      socket.write(`GET /f1-keep-c HTTP/1.1\r\nHost: 127.0.0.2:${origin.port}\r\n\r\n`);
      assert.match(await readResponse(socket), /^HTTP\/1\.1 400/);
      socket.write(`GET /f1-keep-d HTTP/1.1\r\nHost: ${good}\r\nHost: 127.0.0.2:${origin.port}\r\n\r\n`);
      assert.match(await readResponse(socket), /^HTTP\/1\.1 400/);
    } finally {
      socket.destroy();
    }
    assert.deepEqual(
      ['a', 'b', 'c', 'd'].map((x) => origin.requests.filter((r) => r.url === `/f1-keep-${x}`).length),
      [1, 1, 0, 0],
    );
  });
});

describe('a port relay (tcprelay): the Host names the relay', () => {
  test('a Host naming the relay is rewritten to the destination; another host is refused', async () => {
    const relay = `127.0.0.1:${proxy.port('tcprelay')}`;
    const viaRelay = await fetchText([`http://${relay}/f1-relay`]);
    assert.equal(viaRelay.status, 200);
    assert.match(viaRelay.body, new RegExp(`^vhost=victim\\.test:${origin.port} path=/f1-relay `));
    // The entry is the destination's: a tunnel by name finds it.
    const byName = await fetchText([...socks5h(), `http://victim.test:${origin.port}/f1-relay`]);
    assert.equal(byName.body, viaRelay.body);
    const forged = await fetchText(['-H', `Host: evil.test:${origin.port}`, `http://${relay}/f1-relay-evil`]);
    assert.equal(forged.status, 400);
    assert.equal(origin.requests.filter((r) => r.url === '/f1-relay-evil').length, 0);
  });
});

describe('dot segments are keyed as sent (finding 2)', () => {
  const ways: Array<[string, () => string[]]> = [
    ['http door', door],
    ['socks5 tunnel', socks5h],
    ['CONNECT + tap', connectDoor],
  ];
  for (const [name, via] of ways) {
    test(`${name}: /x/attacker/%2e%2e/%2e%2e/x/v1 and ../ never fill /x/v1`, async () => {
      const base = `/lit-${name.replace(/\W+/g, '-')}`;
      const root = `http://127.0.0.1:${origin.port}`;
      for (const evil of [`${base}/attacker/%2e%2e/%2e%2e${base}/v1`, `${base}/attacker/../..${base}/v1`, `${base}/attacker/%2E%2e/%2e%2E${base}/v1`]) {
        const r = await fetchText([...via(), '--path-as-is', `${root}${evil}`]);
        assert.equal(r.status, 200);
        assert.match(r.body, new RegExp(`path=${evil.replace(/[.?*+^$[\]\\(){}|-]/g, '\\$&')} `));
      }
      const real = await fetchText([...via(), `${root}${base}/v1`]);
      assert.match(real.body, new RegExp(`path=${base}/v1 `));
      assert.deepEqual(codesFor(`${root}${base}/v1`), ['TCP_MISS/200']);
    });
  }
});

describe('every header field is forwarded, or 431 (finding 10)', () => {
  const manyFields = (): Record<string, string> => {
    const h: Record<string, string> = {};
    for (let i = 0; i < MANY; i++) h[`X-F-${i}`] = 'v';
    h['X-Last'] = 'yes';
    return h;
  };

  test('2,000 request fields reach the origin: HTTP door', async () => {
    const r = await nodeRequest({
      host: '127.0.0.1',
      port: proxy.port('http'),
      path: `http://127.0.0.1:${origin.port}/count-door`,
      headers: { ...manyFields(), host: `127.0.0.1:${origin.port}` },
    });
    assert.equal(r.status, 200, r.body);
    assert.equal(r.body, `fields=${MANY} last=true`);
  });

  test('2,000 request fields reach the origin: tapped tunnel', async () => {
    const socket = await tunnel('127.0.0.1', origin.port);
    const r = await nodeRequest({ path: '/count-tap', headers: { ...manyFields(), host: `127.0.0.1:${origin.port}` } }, socket);
    socket.destroy();
    assert.equal(r.status, 200, r.body);
    assert.equal(r.body, `fields=${MANY} last=true`);
  });

  test('2,000 response fields reach the client: HTTP door and tapped tunnel', async () => {
    const viaDoor = await nodeRequest({
      host: '127.0.0.1',
      port: proxy.port('http'),
      path: `http://127.0.0.1:${origin.port}/many-door`,
    });
    const socket = await tunnel('127.0.0.1', origin.port);
    const viaTap = await nodeRequest({ path: '/many-tap', headers: { host: `127.0.0.1:${origin.port}` } }, socket);
    socket.destroy();
    for (const r of [viaDoor, viaTap]) {
      assert.equal(r.status, 200);
      assert.equal(r.body, 'many');
      const names = r.rawHeaders.filter((_, i) => i % 2 === 0);
      assert.equal(names.filter((h) => h.startsWith('X-R-')).length, MANY);
      assert.ok(names.includes('X-Last'));
    }
  });

  test('a request head past 64 KiB is answered 431, a response head past it 502', async () => {
    const big: Record<string, string> = {};
    for (let i = 0; i < 7000; i++) big[`X-F-${i}`] = 'vvvv';
    const r = await nodeRequest({
      host: '127.0.0.1',
      port: proxy.port('http'),
      path: `http://127.0.0.1:${origin.port}/count-big`,
      headers: big,
    });
    assert.equal(r.status, 431);
    const socket = await tunnel('127.0.0.1', origin.port);
    const t = await nodeRequest({ path: '/count-big', headers: { ...big, host: `127.0.0.1:${origin.port}` } }, socket);
    socket.destroy();
    assert.equal(t.status, 431);
    assert.equal(origin.requests.filter((q) => q.url === '/count-big').length, 0);
    const huge = await fetchText([...door(), `http://127.0.0.1:${origin.port}/huge-response`]);
    assert.equal(huge.status, 502);
  });
});

/**
 * An origin like Apache: keep-alive answers with `Keep-Alive: max=100` (no timeout=), idle
 * connections closed after `idleMs`; with `dropSecond`, the second request on a connection is
 * met by a close instead of an answer (a close racing the request).
 */
interface ClosingOrigin {
  port: number;
  requests: string[];
  idleClosed: number;
  close(): Promise<void>;
}

async function startClosingOrigin(idleMs: number, dropSecond = false): Promise<ClosingOrigin> {
  const sockets = new Set<net.Socket>();
  const o: ClosingOrigin = {
    port: 0,
    requests: [],
    idleClosed: 0,
    close: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => {});
    socket.on('close', () => sockets.delete(socket));
    let buf = '';
    let served = 0;
    let timer: NodeJS.Timeout | null = null;
    const arm = (): void => {
      if (timer) clearTimeout(timer);
      timer = setTimeout(() => {
        o.idleClosed++;
        socket.destroy();
      }, idleMs);
    };
    arm();
    socket.on('data', (d: Buffer) => {
      if (timer) clearTimeout(timer);
      buf += d.toString('latin1');
      let end: number;
      while ((end = buf.indexOf('\r\n\r\n')) >= 0) {
        const head = buf.slice(0, end);
        buf = buf.slice(end + 4);
        const line = head.split('\r\n')[0]!;
        o.requests.push(line);
        if (dropSecond && ++served === 2) {
          socket.destroy();
          return;
        }
        const body = `answer ${o.requests.length} to ${line.split(' ')[1]}`;
        socket.write(
          `HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nCache-Control: no-store\r\nContent-Length: ${body.length}\r\n` +
            `Connection: keep-alive\r\nKeep-Alive: max=100\r\n\r\n${body}`,
        );
      }
      arm();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  o.port = (server.address() as net.AddressInfo).port;
  return o;
}

async function until(what: string, pred: () => boolean, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Reads one response with a Content-Length from a raw socket. */
function readResponse(socket: net.Socket): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const onData = (d: Buffer): void => {
      buf += d.toString('latin1');
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const m = /content-length: *(\d+)/i.exec(buf.slice(0, end));
      const len = m ? Number(m[1]) : 0;
      if (buf.length >= end + 4 + len) {
        socket.removeListener('data', onData);
        socket.removeListener('close', onClose);
        resolve(buf.slice(0, end + 4 + len));
      }
    };
    const onClose = (): void => reject(new Error(`connection closed after ${JSON.stringify(buf)}`));
    socket.on('data', onData);
    socket.once('close', onClose);
  });
}

describe('a pooled origin connection the origin closed is not reused (the hang)', () => {
  let closing: ClosingOrigin;
  before(async () => {
    closing = await startClosingOrigin(300);
  });
  after(async () => {
    await closing.close();
  });

  test('HTTP door: the request after the origin closed the idle connection is answered', async () => {
    const url = `http://127.0.0.1:${closing.port}/door-a`;
    const first = await fetchText([...door(), url]);
    assert.match(first.body, /^answer \d+ to \/door-a$/);
    const closed = closing.idleClosed;
    await until('the origin closing the idle connection', () => closing.idleClosed > closed);
    // Let the FIN reach the proxy's pooled socket (loopback: well under this).
    await new Promise((r) => setTimeout(r, 100));
    const r = await curl([...door(), '-m', '5', `http://127.0.0.1:${closing.port}/door-b`]);
    assert.equal(r.code, 0, `the second request hung or failed: ${r.stderr}`);
    assert.match(r.stdout.toString(), /^answer \d+ to \/door-b$/);
  });

  test('tapped tunnel: the next request on the same client connection is answered', async () => {
    const socket = await tunnel('127.0.0.1', closing.port);
    const host = `127.0.0.1:${closing.port}`;
    socket.write(`GET /tap-a HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
    assert.match(await readResponse(socket), /answer \d+ to \/tap-a$/);
    const closed = closing.idleClosed;
    await until('the origin closing the idle connection', () => closing.idleClosed > closed);
    await new Promise((r) => setTimeout(r, 100));
    socket.write(`GET /tap-b HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
    const timer = setTimeout(() => socket.destroy(), 5000);
    try {
      assert.match(await readResponse(socket), /answer \d+ to \/tap-b$/);
    } finally {
      clearTimeout(timer);
      socket.destroy();
    }
  });

  test('a GET that meets a close before any answer byte is retried once on a fresh connection; a POST is not', async () => {
    const racing = await startClosingOrigin(5000, true);
    try {
      const root = `http://127.0.0.1:${racing.port}`;
      const a = await fetchText([...door(), `${root}/race-a`]);
      assert.match(a.body, /to \/race-a$/);
      // Reuses the pooled connection, which the origin closes on reading the request.
      const b = await fetchText([...door(), `${root}/race-b`]);
      assert.equal(b.status, 200);
      assert.match(b.body, /to \/race-b$/);
      assert.equal(racing.requests.filter((l) => l.startsWith('GET /race-b ')).length, 2);
      // A connection in the pool again (the retry's own is not kept), then a POST reuses it.
      const c = await fetchText([...door(), `${root}/race-c`]);
      assert.match(c.body, /to \/race-c$/);
      // Not idempotent: the origin may have acted on it, so the client hears of the failure.
      const p = await fetchText([...door(), '-X', 'POST', `${root}/race-post`]);
      assert.equal(p.status, 502);
      assert.equal(racing.requests.filter((l) => l.startsWith('POST /race-post ')).length, 1);
    } finally {
      await racing.close();
    }
  });
});
