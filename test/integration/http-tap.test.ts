/**
 * The HTTP tap inside SOCKS tunnels: keep-alive and pipelined requests, chunked upload, HEAD,
 * Expect: 100-continue, Upgrade passed through as a tunnel, smuggling shapes refused with 400 and
 * a close, and (cache-first) a dial failure turned into a readable 502 page.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { SocksClient } from 'socks';
import type { AccessRecord } from '../../src/observe/events.js';
import { curl, PAGE, startOrigin, type Origin } from '../helpers/origin.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';

let origin: Origin;
let proxy: TestProxy;
let cacheProxy: TestProxy;
const records: AccessRecord[] = [];

before(async () => {
  origin = await startOrigin();
  // Upgrade: answer 101, then echo raw bytes.
  origin.server.on('upgrade', (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
    socket.on('error', () => {});
    socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n');
    if (head.length > 0) socket.write(head);
    socket.pipe(socket);
  });
  proxy = await startProxy(['-P127.0.0.1:0/socks', 'SOCKSTAP=http']);
  cacheProxy = await startProxy(['-P127.0.0.1:0/socks', 'SOCKSTAP=http', 'CACHE=do']);
  proxy.proxy.events.on('access', (r) => records.push(r));
});
after(async () => {
  await proxy.stop();
  await cacheProxy.stop();
  proxy.cleanup();
  cacheProxy.cleanup();
  await origin.close();
});

async function tunnel(port = origin.port, p = proxy): Promise<net.Socket> {
  const { socket } = await SocksClient.createConnection({
    proxy: { host: '127.0.0.1', port: p.port(), type: 5 },
    command: 'connect',
    destination: { host: '127.0.0.1', port },
  });
  return socket;
}

/** Everything the peer sends until it closes, or until `until` matches what came. */
function readUntil(socket: net.Socket, until?: (text: string) => boolean): Promise<string> {
  return new Promise((resolve) => {
    let text = '';
    const done = (): void => {
      socket.removeAllListeners('data');
      resolve(text);
    };
    socket.on('data', (d: Buffer) => {
      text += d.toString('latin1');
      if (until?.(text)) done();
    });
    socket.once('close', done);
    socket.once('error', done);
  });
}

const via = (): string[] => ['--socks5-hostname', `127.0.0.1:${proxy.port()}`];

describe('HTTP tap', () => {
  test('keep-alive and pipelined requests on one tunnel', async () => {
    const s = await tunnel();
    const host = `127.0.0.1:${origin.port}`;
    const accepts = origin.accepts;
    s.write(`GET /a HTTP/1.1\r\nHost: ${host}\r\n\r\nGET /b HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
    const count = (t: string): number => t.split('</html>').length - 1;
    const text = await readUntil(s, (t) => count(t) >= 2);
    assert.equal(count(text), 2);
    assert.equal(text.match(/HTTP\/1\.1 200/g)?.length, 2);
    assert.match(text, /Via: 1\.1 sockstap/);
    // A third request on the same connection, after the first two.
    s.write(`GET /c HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
    const third = await readUntil(s);
    assert.match(third, /^HTTP\/1\.1 200/);
    assert.equal(origin.accepts, accepts + 1, 'one origin connection, reused');
    assert.ok(['/a', '/b', '/c'].every((p) => records.some((r) => r.url === `http://${host}${p}` && r.resultCode === 'TCP_MISS')));
  });

  test('chunked upload, streamed to the origin', async () => {
    const body = Buffer.alloc(100_000, 'x');
    const r = await curl([...via(), '-H', 'Transfer-Encoding: chunked', '--data-binary', body.toString(), origin.url('/echo')]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.length, body.length);
    const seen = origin.requests.filter((q) => q.url === '/echo').at(-1)!;
    assert.equal(seen.headers['transfer-encoding'], 'chunked');
  });

  test('HEAD', async () => {
    const r = await curl([...via(), '-I', origin.url('/head')]);
    assert.equal(r.code, 0, r.stderr);
    const text = r.stdout.toString();
    assert.match(text, /^HTTP\/1\.1 200/);
    assert.match(text, new RegExp(`content-length: ${PAGE.length}`, 'i'));
  });

  test('Expect: 100-continue', async () => {
    const body = 'y'.repeat(5000);
    const r = await curl([...via(), '-H', 'Expect: 100-continue', '--data-binary', body, '-w', '\n%{http_code}', origin.url('/echo')]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.toString(), `${body}\n200`);
  });

  test('Upgrade is forwarded and becomes a raw tunnel', async () => {
    const s = await tunnel();
    s.write(`GET /ws HTTP/1.1\r\nHost: 127.0.0.1:${origin.port}\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n`);
    const head = await readUntil(s, (t) => t.includes('\r\n\r\n'));
    assert.match(head, /^HTTP\/1\.1 101 /);
    s.write('ping-after-upgrade');
    const echoed = await readUntil(s, (t) => t.includes('ping-after-upgrade'));
    assert.ok(echoed.includes('ping-after-upgrade'));
    s.destroy();
  });

  for (const [name, head] of [
    ['Content-Length with Transfer-Encoding', 'POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n'],
    ['two Content-Length fields', 'POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde'],
    ['Transfer-Encoding not ending in chunked', 'POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n'],
  ] as const) {
    test(`smuggling shape refused: ${name} → 400 and close`, async () => {
      const s = await tunnel();
      const requests = origin.requests.length;
      s.write(head);
      const text = await readUntil(s);
      assert.match(text, /^HTTP\/1\.1 400 /);
      assert.match(text, /Connection: close/);
      assert.ok(s.destroyed || s.readableEnded);
      assert.equal(origin.requests.length, requests, 'nothing reached the origin');
    });
  }

  test('cache-first: a dial failure becomes a readable 502 page', async () => {
    const closed = net.createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const port = (closed.address() as net.AddressInfo).port;
    await new Promise((r) => closed.close(r));
    const r = await curl(['--socks5-hostname', `127.0.0.1:${cacheProxy.port()}`, '-i', `http://127.0.0.1:${port}/x`]);
    assert.equal(r.code, 0, r.stderr);
    const text = r.stdout.toString();
    assert.match(text, /^HTTP\/1\.1 502 /);
    assert.match(text, /ECONNREFUSED/);
  });
});
