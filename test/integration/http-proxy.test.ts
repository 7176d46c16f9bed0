/**
 * The HTTP proxy door end to end: curl and Node's own client through a real proxy (started from a
 * command line) to real origin and echo servers on loopback. Absolute-form forwarding, CONNECT,
 * keep-alive, chunked bodies, Expect: 100-continue, HEAD, hop-by-hop rules, Proxy-Authorization,
 * oversized heads, origin failures, and the access.log line each of them leaves.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { curl, startEcho, startOrigin, type EchoServer, type Origin } from '../helpers/origin.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';

/** Random bytes, so that any corruption or truncation shows. */
const BIG = randomBytes(300 * 1024);
const CHUNKS = ['first chunk;', 'second chunk, a bit longer;', 'third.'];

function originHandler(origin: () => Origin): (req: http.IncomingMessage, res: http.ServerResponse) => void {
  return (req, res) => {
    const url = req.url ?? '';
    if (url === '/big') {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': BIG.length });
      res.end(req.method === 'HEAD' ? undefined : BIG);
    } else if (url === '/chunked') {
      // No Content-Length: Node sends the body chunked.
      res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' });
      let i = 0;
      const next = (): void => {
        if (i === CHUNKS.length) return void res.end();
        res.write(CHUNKS[i++], () => setImmediate(next));
      };
      next();
    } else if (url === '/echo' || url === '/upload' || url === '/gate') {
      const parts: Buffer[] = [];
      req.on('data', (c: Buffer) => parts.push(c));
      req.on('end', () => {
        const body = Buffer.concat(parts);
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'x-received-bytes': String(body.length) });
        res.end(url !== '/echo' ? `got ${body.length}` : body);
      });
    } else if (url === '/hop') {
      res.writeHead(200, {
        'content-type': 'application/json',
        connection: 'X-Origin-Hop',
        'x-origin-hop': 'must not reach the client',
        'x-origin-end': 'reaches the client',
      });
      res.end(JSON.stringify(req.headers));
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end(`no ${url} on ${origin().port}`);
    }
  };
}

/** Writes raw bytes to a port and collects the answer until `done` says so or the peer closes. */
function rawExchange(
  port: number,
  request: Buffer | string,
  done: (received: Buffer) => boolean = () => false,
  host = '127.0.0.1',
): Promise<{ received: Buffer; closed: boolean; socket: net.Socket }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, host);
    let received = Buffer.alloc(0);
    let settled = false;
    const finish = (closed: boolean): void => {
      if (settled) return;
      settled = true;
      resolve({ received, closed, socket });
    };
    socket.on('error', (err: NodeJS.ErrnoException) => {
      // A reset after the answer arrived still counts as a close.
      if (received.length > 0) finish(true);
      else if (!settled) reject(err);
    });
    socket.on('data', (d: Buffer) => {
      received = Buffer.concat([received, d]);
      if (done(received)) finish(false);
    });
    socket.on('close', () => finish(true));
    // A safety net, not a timing assertion: an answer that never comes fails the test readably.
    socket.setTimeout(10_000, () => finish(false));
    socket.write(request);
  });
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/** One request through the proxy with Node's client, body collected. */
function viaProxy(
  proxyPort: number,
  options: http.RequestOptions & { url: string },
  body?: (req: http.ClientRequest) => void,
): Promise<{ res: http.IncomingMessage; body: Buffer; reused: boolean }> {
  return new Promise((resolve, reject) => {
    // No agent given: a connection of its own, closed after the answer (Node 20's global agent
    // would keep it open and make the proxy's drain wait for it).
    const req = http.request({ agent: false, ...options, host: '127.0.0.1', port: proxyPort, path: options.url }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (c: Buffer) => parts.push(c));
      res.on('end', () => resolve({ res, body: Buffer.concat(parts), reused: req.reusedSocket }));
      res.on('error', reject);
    });
    req.on('error', reject);
    if (body) body(req);
    else req.end();
  });
}

const SQUID_LINE =
  /^ *\d+\.\d{3} +\d+ (\S+) ([A-Z_]+)\/(\d{3}) (\d+) (\S+) (\S+) (\S+) ([A-Z_]+\/\S+) (\S+)$/;

interface SquidLine {
  client: string;
  code: string;
  status: number;
  bytes: number;
  method: string;
  url: string;
  user: string;
  hierarchy: string;
  type: string;
}

function parseSquid(text: string): SquidLine[] {
  return text
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const m = SQUID_LINE.exec(line);
      assert.ok(m, `not a squid access.log line: ${JSON.stringify(line)}`);
      return {
        client: m[1]!,
        code: m[2]!,
        status: Number(m[3]),
        bytes: Number(m[4]),
        method: m[5]!,
        url: m[6]!,
        user: m[7]!,
        hierarchy: m[8]!,
        type: m[9]!,
      };
    });
}

/** A promise with its resolver. */
function signal(): { promise: Promise<void>; fire: () => void } {
  let fire!: () => void;
  const promise = new Promise<void>((resolve) => (fire = resolve));
  return { promise, fire };
}

const arrivedSignal = signal();
const releaseSignal = signal();
const gate = { arrived: arrivedSignal.fire, released: releaseSignal.promise };

describe('HTTP proxy door', () => {
  let origin: Origin;
  let echo: EchoServer;
  let proxy: TestProxy;
  let port: number;
  let deadPort: number;
  let scratch: string;

  before(async () => {
    origin = await startOrigin(originHandler(() => origin));
    // Expect: 100-continue at the origin: /refuse answers 403 without ever asking for the body.
    origin.server.on('checkContinue', (req, res) => {
      if (req.url === '/gate') {
        // Holds the 100 until the test has looked at what the client received meanwhile.
        gate.arrived();
        void gate.released.then(() => {
          res.writeContinue();
          origin.server.emit('request', req, res);
        });
        return;
      }
      if (req.url === '/refuse') {
        origin.requests.push({ method: req.method ?? '', url: req.url, headers: req.headers });
        res.writeHead(403, { 'content-type': 'text/plain' });
        res.end('no uploads here');
        return;
      }
      res.writeContinue();
      origin.server.emit('request', req, res);
    });
    echo = await startEcho();
    deadPort = await freePort();
    proxy = await startProxy(['-P127.0.0.1:0/http']);
    port = proxy.port('http');
    scratch = mkdtempSync(join(tmpdir(), 'sockstap-http-test-'));
  });
  after(async () => {
    await proxy.stop();
    await origin.close();
    await echo.close();
    proxy.cleanup();
    rmSync(scratch, { recursive: true, force: true });
  });

  test('curl -x fetches a page byte-identical (absolute-form)', async () => {
    const r = await curl(['-x', `http://127.0.0.1:${port}`, origin.url('/big')]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.equals(BIG), `page differs: ${r.stdout.length} bytes instead of ${BIG.length}`);
    const seen = origin.requests.at(-1)!;
    assert.equal(seen.url, '/big', 'the origin gets origin-form');
    assert.equal(seen.headers.host, `127.0.0.1:${origin.port}`);
    assert.match(String(seen.headers.via), /1\.1 sockstap/);
    assert.equal(seen.headers['proxy-connection'], undefined);
  });

  test('curl -p -x fetches a page byte-identical (CONNECT)', async () => {
    const r = await curl(['-p', '-x', `http://127.0.0.1:${port}`, origin.url('/big')]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.equals(BIG), 'page differs');
  });

  test('HEAD gets the head and no body', async () => {
    const r = await curl(['-I', '-x', `http://127.0.0.1:${port}`, origin.url('/big')]);
    assert.equal(r.code, 0, r.stderr);
    const head = r.stdout.toString('latin1');
    assert.match(head, /^HTTP\/1\.1 200 /);
    assert.match(head, new RegExp(`content-length: ${BIG.length}\\r\\n`, 'i'));
    assert.match(head, /\r\nvia: 1\.1 sockstap\r\n/i);
    assert.ok(head.endsWith('\r\n\r\n'), 'nothing after the head');
  });

  test('keep-alive: two requests on one client connection and one origin connection', async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const acceptsBefore = origin.accepts;
      const first = await viaProxy(port, { agent, url: origin.url('/big') });
      const second = await viaProxy(port, { agent, url: origin.url('/chunked') });
      assert.equal(first.res.statusCode, 200);
      assert.ok(first.body.equals(BIG));
      assert.equal(second.body.toString(), CHUNKS.join(''));
      assert.equal(second.reused, true, 'the second request reused the client connection');
      assert.ok(origin.accepts - acceptsBefore <= 1, `origin accepted ${origin.accepts - acceptsBefore} connections`);
    } finally {
      agent.destroy();
    }
  });

  test('chunked request and response bodies stay chunked and intact', async () => {
    const { res, body } = await viaProxy(port, { method: 'POST', url: origin.url('/echo') }, (req) => {
      // No Content-Length: Node sends the request body chunked; write it in pieces.
      let i = 0;
      const next = (): void => {
        if (i === CHUNKS.length) return void req.end();
        req.write(CHUNKS[i++], () => setImmediate(next));
      };
      next();
    });
    assert.equal(res.statusCode, 200);
    assert.equal(body.toString(), CHUNKS.join(''));
    assert.equal(origin.requests.at(-1)!.headers['transfer-encoding'], 'chunked');

    const chunked = await viaProxy(port, { url: origin.url('/chunked') });
    assert.equal(chunked.res.headers['transfer-encoding'], 'chunked');
    assert.equal(chunked.res.headers['content-length'], undefined);
    assert.equal(chunked.body.toString(), CHUNKS.join(''));
  });

  test('hop-by-hop fields are removed in both directions, end-to-end ones kept', async () => {
    const { res, body } = await viaProxy(port, {
      url: origin.url('/hop'),
      headers: {
        Connection: 'keep-alive, X-Client-Hop',
        'X-Client-Hop': 'must not reach the origin',
        'Keep-Alive': 'timeout=5',
        'Proxy-Connection': 'keep-alive',
        TE: 'trailers',
        'X-Client-End': 'reaches the origin',
      },
    });
    const seen = JSON.parse(body.toString()) as Record<string, string>;
    for (const name of ['x-client-hop', 'keep-alive', 'proxy-connection', 'te', 'proxy-authorization']) {
      assert.equal(seen[name], undefined, `${name} reached the origin`);
    }
    assert.equal(seen['x-client-end'], 'reaches the origin');
    assert.equal(res.headers['x-origin-hop'], undefined, 'x-origin-hop reached the client');
    assert.equal(res.headers['x-origin-end'], 'reaches the client');
    assert.match(String(res.headers.via), /^1\.1 sockstap$/);
  });

  test('Expect: 100-continue upload: the origin asks for the body through the proxy', async () => {
    const file = join(scratch, 'upload.bin');
    writeFileSync(file, BIG);
    const r = await curl([
      '-v',
      '-x',
      `http://127.0.0.1:${port}`,
      '-H',
      'Expect: 100-continue',
      '--data-binary',
      `@${file}`,
      origin.url('/upload'),
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.toString(), `got ${BIG.length}`);
    assert.match(r.stderr, /< HTTP\/1\.1 100 Continue/, 'the 100 came through the proxy');
  });

  test('Expect: 100-continue: the client gets 100 only when the origin sends it', async () => {
    const client = net.connect(port, '127.0.0.1');
    client.on('error', () => {});
    let received = '';
    const waiters: Array<() => void> = [];
    client.on('data', (d: Buffer) => {
      received += d.toString();
      for (const w of waiters.splice(0)) w();
    });
    let closed = false;
    client.on('close', () => {
      closed = true;
      for (const w of waiters.splice(0)) w();
    });
    // A safety net, not a timing assertion: an answer that never comes fails the test readably.
    client.setTimeout(10_000, () => client.destroy());
    const until = async (pred: () => boolean): Promise<void> => {
      while (!pred()) {
        if (closed) assert.fail(`connection closed; received so far: ${JSON.stringify(received)}`);
        await new Promise<void>((resolve) => waiters.push(resolve));
      }
    };
    try {
      client.write(
        `POST ${origin.url('/gate')} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n`,
      );
      await arrivedSignal.promise;
      // Let every pending I/O callback run: a 100 the proxy made up itself would be here by now.
      for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
      assert.equal(received, '', 'the proxy answered before the origin did');
      releaseSignal.fire();
      await until(() => received.includes('\r\n\r\n'));
      assert.match(received, /^HTTP\/1\.1 100 Continue\r\n\r\n$/);
      client.write('hello');
      await until(() => received.endsWith('0\r\n\r\n'));
      assert.match(received, /\r\n\r\n5\r\ngot 5\r\n0\r\n\r\n$/);
      assert.match(received, /\r\n\r\nHTTP\/1\.1 200 OK\r\n/);
    } finally {
      client.destroy();
    }
  });

  test('Expect: 100-continue answered with a final status is relayed without the body', async () => {
    const file = join(scratch, 'refused.bin');
    writeFileSync(file, BIG);
    const r = await curl([
      '-x',
      `http://127.0.0.1:${port}`,
      '-H',
      'Expect: 100-continue',
      '--data-binary',
      `@${file}`,
      '-w',
      '\n%{http_code}',
      origin.url('/refuse'),
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.toString(), 'no uploads here\n403');
  });

  test('bytes sent with the CONNECT head reach the server', async () => {
    const payload = 'FIRST-BYTES-RIGHT-AFTER-THE-HEAD';
    const head = `CONNECT 127.0.0.1:${echo.port} HTTP/1.1\r\nHost: 127.0.0.1:${echo.port}\r\n\r\n`;
    const { received, socket } = await rawExchange(port, head + payload, (b) => b.toString().includes(payload));
    try {
      const text = received.toString();
      assert.ok(text.startsWith('HTTP/1.1 200 Connection Established\r\n\r\n'), text);
      assert.equal(text.slice(text.indexOf('\r\n\r\n') + 4), payload);
    } finally {
      socket.destroy();
    }
  });

  test('CONNECT to [::1]:port', async (t) => {
    let echo6: EchoServer;
    try {
      echo6 = await startEcho('::1');
    } catch {
      t.skip('no IPv6 loopback here');
      return;
    }
    try {
      const head = `CONNECT [::1]:${echo6.port} HTTP/1.1\r\nHost: [::1]:${echo6.port}\r\n\r\nping6`;
      const { received, socket } = await rawExchange(port, head, (b) => b.toString().includes('ping6'));
      socket.destroy();
      assert.match(received.toString(), /^HTTP\/1\.1 200 Connection Established\r\n\r\nping6$/);
    } finally {
      await echo6.close();
    }
  });

  test('a bad CONNECT target gets 400 and the connection closes', async () => {
    const { received, closed } = await rawExchange(port, 'CONNECT no-port-here HTTP/1.1\r\nHost: x\r\n\r\n');
    assert.equal(closed, true);
    assert.match(received.toString(), /^HTTP\/1\.1 400 Bad Request\r\n[^]*\r\n\r\nsockstap: 400 /);
  });

  test('an origin-form request gets 400 and a page saying this is a proxy', async () => {
    const r = await curl(['-w', '\n%{http_code}', `http://127.0.0.1:${port}/some/page`]);
    assert.equal(r.code, 0, r.stderr);
    const text = r.stdout.toString();
    assert.match(text, /HTTP proxy/);
    assert.ok(text.endsWith('\n400'), text);
  });

  test('a request head over 64 KiB gets 431; a client served at the same time is not disturbed', async () => {
    const bigHead =
      `GET ${origin.url('/big')} HTTP/1.1\r\nHost: 127.0.0.1\r\n` +
      `X-Filler: ${'a'.repeat(70 * 1024)}\r\n\r\n`;
    const [oversized, good] = await Promise.all([
      rawExchange(port, bigHead),
      curl(['-x', `http://127.0.0.1:${port}`, origin.url('/big')]),
    ]);
    const text = oversized.received.toString();
    assert.match(text, /^HTTP\/1\.1 431 Request Header Fields Too Large\r\n/);
    assert.match(text, /\r\n\r\nsockstap: 431 /);
    assert.equal(oversized.closed, true);
    assert.equal(good.code, 0, good.stderr);
    assert.ok(good.stdout.equals(BIG));
  });

  test('origin down: 502 with a readable body', async () => {
    const r = await curl(['-w', '\n%{http_code}', '-x', `http://127.0.0.1:${port}`, `http://127.0.0.1:${deadPort}/x`]);
    assert.equal(r.code, 0, r.stderr);
    const text = r.stdout.toString();
    assert.match(text, /^sockstap: 502 Bad Gateway\nECONNREFUSED/);
    assert.ok(text.endsWith('\n502'), text);
  });

  test('CONNECT to a closed port: 502 and close', async () => {
    const { received, closed } = await rawExchange(port, `CONNECT 127.0.0.1:${deadPort} HTTP/1.1\r\nHost: x\r\n\r\n`);
    assert.equal(closed, true);
    assert.match(received.toString(), /^HTTP\/1\.1 502 Bad Gateway\r\n[^]*Connection: close\r\n\r\nsockstap: 502 /);
  });

  test('access.log has one squid line per request with code, status, bytes and hierarchy', async () => {
    await proxy.stop(2000);
    const lines = parseSquid(proxy.readLog('access.log'));
    const find = (pred: (l: SquidLine) => boolean, what: string): SquidLine => {
      const l = lines.find(pred);
      assert.ok(l, `no access.log line for ${what}:\n${proxy.readLog('access.log')}`);
      return l;
    };
    const big = find((l) => l.method === 'GET' && l.url === origin.url('/big') && l.code === 'TCP_MISS' && l.status === 200, 'GET /big');
    assert.ok(big.bytes > BIG.length, 'bytes count head and body');
    assert.equal(big.client, '127.0.0.1');
    assert.equal(big.user, '-');
    assert.equal(big.hierarchy, 'HIER_DIRECT/127.0.0.1');
    assert.equal(big.type, 'application/octet-stream');
    const tunnel = find((l) => l.method === 'CONNECT' && l.url === `127.0.0.1:${origin.port}`, 'CONNECT');
    assert.equal(tunnel.code, 'TCP_TUNNEL');
    assert.equal(tunnel.status, 200);
    assert.ok(tunnel.bytes > BIG.length);
    find((l) => l.method === 'HEAD' && l.status === 200, 'HEAD');
    find((l) => l.method === 'POST' && l.url === origin.url('/echo'), 'chunked POST');
    find((l) => l.url === origin.url('/upload') && l.status === 200, '100-continue upload');
    find((l) => l.url === origin.url('/refuse') && l.status === 403, 'refused upload');
    find((l) => l.code === 'TAG_NONE' && l.status === 400 && l.url === '/some/page', 'origin-form 400');
    find((l) => l.code === 'NONE' && l.status === 431 && l.url === 'error:request-too-large', '431');
    const down = find((l) => l.url === `http://127.0.0.1:${deadPort}/x`, 'origin down');
    assert.equal(down.code, 'TCP_MISS');
    assert.equal(down.status, 502);
    assert.equal(down.hierarchy, 'HIER_NONE/-');
    find((l) => l.method === 'CONNECT' && l.url === `127.0.0.1:${deadPort}` && l.status === 502, 'CONNECT refused');
  });
});

describe('HTTP proxy door with accounts', () => {
  let origin: Origin;
  let proxy: TestProxy;
  let port: number;
  before(async () => {
    origin = await startOrigin(originHandler(() => origin));
    proxy = await startProxy(['-P127.0.0.1:0/http', 'AUTHORIZER=-list{alice:s3cret-pw}', 'TIMEOUT=handshake:1s']);
    port = proxy.port('http');
  });
  after(async () => {
    await proxy.stop();
    await origin.close();
    proxy.cleanup();
  });

  test('407 with a Basic challenge, then success with --proxy-user', async () => {
    const denied = await curl(['-i', '-x', `http://127.0.0.1:${port}`, origin.url('/big')]);
    assert.equal(denied.code, 0, denied.stderr);
    const text = denied.stdout.toString();
    assert.match(text, /^HTTP\/1\.1 407 Proxy Authentication Required\r\n/);
    assert.match(text, /\r\nProxy-Authenticate: Basic realm="sockstap"\r\n/i);
    assert.match(text, /\r\n\r\nsockstap: 407 /);

    const wrong = await curl(['-w', '%{http_code}', '-o', '/dev/null', '--proxy-user', 'alice:wrong', '-x', `http://127.0.0.1:${port}`, origin.url('/big')]);
    assert.equal(wrong.stdout.toString(), '407');

    const ok = await curl(['--proxy-user', 'alice:s3cret-pw', '-x', `http://127.0.0.1:${port}`, origin.url('/big')]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.ok(ok.stdout.equals(BIG));
    assert.equal(origin.requests.at(-1)!.headers['proxy-authorization'], undefined, 'credentials never reach the origin');

    const tunnel = await curl(['-p', '--proxy-user', 'alice:s3cret-pw', '-x', `http://127.0.0.1:${port}`, origin.url('/big')]);
    assert.equal(tunnel.code, 0, tunnel.stderr);
    assert.ok(tunnel.stdout.equals(BIG));
  });

  test('CONNECT without credentials gets 407 and the connection closes', async () => {
    const { received, closed } = await rawExchange(port, `CONNECT 127.0.0.1:${origin.port} HTTP/1.1\r\nHost: x\r\n\r\n`);
    assert.equal(closed, true);
    assert.match(received.toString(), /^HTTP\/1\.1 407 [^]*Proxy-Authenticate: Basic realm="sockstap"\r\n/);
  });

  test('every request on a keep-alive connection is checked', async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const auth = `Basic ${Buffer.from('alice:s3cret-pw').toString('base64')}`;
      const first = await viaProxy(port, { agent, url: origin.url('/big'), headers: { 'Proxy-Authorization': auth } });
      assert.equal(first.res.statusCode, 200);
      const second = await viaProxy(port, { agent, url: origin.url('/big') });
      assert.equal(second.res.statusCode, 407);
      assert.equal(second.reused, true);
    } finally {
      agent.destroy();
    }
  });

  test('a request head that never completes is closed after the handshake timeout', async () => {
    const { received, closed } = await rawExchange(port, `GET ${origin.url('/big')} HTTP/1.1\r\nHost: x\r\nX-Slow: `);
    assert.equal(closed, true);
    assert.equal(received.length, 0);
  });

  test('access.log names the user and never the password; refusals are TCP_DENIED/407', async () => {
    await proxy.stop(2000);
    const text = proxy.readLog('access.log');
    const lines = parseSquid(text);
    assert.ok(lines.some((l) => l.code === 'TCP_DENIED' && l.status === 407 && l.user === '-' && l.method === 'GET'));
    assert.ok(lines.some((l) => l.code === 'TCP_DENIED' && l.status === 407 && l.method === 'CONNECT'));
    assert.ok(lines.some((l) => l.code === 'TCP_MISS' && l.status === 200 && l.user === 'alice'));
    assert.ok(lines.some((l) => l.code === 'TCP_TUNNEL' && l.status === 200 && l.user === 'alice'));
    for (const name of ['access.log', 'sessions.jsonl', 'sockstap.log']) {
      assert.ok(!proxy.readLog(name).includes('s3cret-pw'), `the password is in ${name}`);
    }
    assert.ok(proxy.sessions().some((s) => s.user === 'alice' && (s.http as { requests: number } | undefined)?.requests === 1));
  });
});
