/**
 * The native addon on loopback (no namespaces): the original destination of a connection that was
 * not redirected, IP_TRANSPARENT on a listener, a spoofed source address (root only: 127.0.0.7 is
 * a loopback address the kernel lets a transparent socket use), and the Host/SNI fallback's peek,
 * which must give every byte back.
 */
import assert from 'node:assert/strict';
import net, { type AddressInfo, type Server, type Socket } from 'node:net';
import tls from 'node:tls';
import { after, before, describe, test } from 'node:test';
import { kernelDestination, peekServerName } from '../../src/frontdoors/transparent.js';
import { native, nativeUnavailable, NativeSocketError, originalDst, setTransparent, socketFd } from '../../src/native/addon.js';
import { dialSpoofed } from '../../src/net/spoof.js';
import { NameCache } from '../../src/net/dns.js';

const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
const noAddon = native ? false : `native addon unavailable: ${nativeUnavailable ?? ''}`;
if (noAddon) console.log(`original-dst: addon tests skipped: ${noAddon}`);

/** A listener on 127.0.0.1 and one accepted connection to it: [client, accepted]. */
async function connectedPair(server: Server): Promise<[Socket, Socket]> {
  const accepted = new Promise<Socket>((resolve) => server.once('connection', resolve));
  const client = net.connect((server.address() as AddressInfo).port, '127.0.0.1');
  await new Promise((r) => client.once('connect', r));
  return [client, await accepted];
}

describe('native addon', { skip: noAddon }, () => {
  let server: Server;
  before(async () => {
    server = net.createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  });
  after(() => new Promise<void>((r) => server.close(() => r())));

  test('socketFd reads the descriptor of a socket and a server', async () => {
    const [client, accepted] = await connectedPair(server);
    assert.ok(socketFd(client) > 2);
    assert.ok(socketFd(server) > 2);
    assert.notEqual(socketFd(client), socketFd(accepted));
    client.destroy();
    accepted.destroy();
  });

  test('a connection that was not redirected is not taken for an intercepted one', async () => {
    const [client, accepted] = await connectedPair(server);
    // conntrack either has no entry (ENOENT) or names the local address itself.
    try {
      const od = originalDst(accepted);
      assert.equal(od.address, '127.0.0.1');
      assert.equal(od.port, accepted.localPort);
      assert.equal(od.family, 4);
    } catch (err) {
      assert.ok(err instanceof NativeSocketError);
      assert.equal(err.code, 'ENOENT');
    }
    assert.equal(kernelDestination(accepted, accepted.localPort ?? 0), null);
    // A local port other than the listener's can only come from TPROXY: the local end is the destination.
    assert.deepEqual(kernelDestination(accepted, 1), { dst: { host: '127.0.0.1', port: accepted.localPort }, via: 'tproxy' });
    client.destroy();
    accepted.destroy();
  });

  test('an fd that is not a socket fails with an errno code', () => {
    assert.throws(() => native!.originalDst(0x7fff_fff0), (e: NodeJS.ErrnoException) => e.code === 'EBADF');
    assert.throws(() => native!.setTransparent(-1), TypeError);
  });

  test('setTransparent on a listener: works as root, EPERM otherwise', () => {
    if (isRoot) setTransparent(server);
    else assert.throws(() => setTransparent(server), (e: NativeSocketError) => e.code === 'EPERM');
  });

  test('dialSpoofed: the server sees the source address we chose', { skip: isRoot ? false : 'not root: IP_TRANSPARENT needs CAP_NET_ADMIN' }, async () => {
    const seen = new Promise<string>((resolve) => server.once('connection', (s: Socket) => {
      resolve(s.remoteAddress ?? '');
      s.end('hi');
    }));
    const s = await dialSpoofed({ host: '127.0.0.1', port: (server.address() as AddressInfo).port }, '127.0.0.7', 2000, { names: new NameCache() });
    assert.equal(s.localAddress, '127.0.0.7');
    assert.equal(await seen, '127.0.0.7');
    const data = await new Promise<string>((resolve) => s.once('data', (d: Buffer) => resolve(d.toString())));
    assert.equal(data, 'hi');
    s.destroy();
  });

  test('dialSpoofed: a refused connection is a ProxyError ECONNREFUSED', { skip: isRoot ? false : 'not root' }, async () => {
    const closed = net.createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((r) => closed.close(() => r()));
    await assert.rejects(dialSpoofed({ host: '127.0.0.1', port }, '127.0.0.7', 2000, { names: new NameCache() }), { code: 'ECONNREFUSED' });
  });

  test('dialSpoofed: families must agree', async () => {
    await assert.rejects(dialSpoofed({ host: '::1', port: 80 }, '127.0.0.7', 2000, { names: new NameCache() }), { code: 'EATYPNOTSUP' });
  });
});

describe('Host/SNI fallback peek', () => {
  let server: Server;
  before(async () => {
    server = net.createServer({ pauseOnConnect: true, allowHalfOpen: true });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  });
  after(() => new Promise<void>((r) => server.close(() => r())));

  async function peekWith(send: (client: Socket) => void, timeoutMs = 1000): Promise<{ found: Awaited<ReturnType<typeof peekServerName>>; rest: Buffer }> {
    const [client, accepted] = await connectedPair(server);
    send(client);
    const found = await peekServerName(accepted, timeoutMs);
    // Every byte must still be there for whoever reads next.
    client.end();
    const chunks: Buffer[] = [];
    accepted.on('data', (d: Buffer) => chunks.push(d));
    await new Promise((r) => accepted.once('end', r));
    accepted.destroy();
    return { found, rest: Buffer.concat(chunks) };
  }

  test('HTTP Host header, sent one byte at a time', async () => {
    const req = 'GET /x HTTP/1.1\r\nUser-Agent: t\r\nHost: Example.TEST:8080\r\n\r\n';
    const r = await peekWith((c) => {
      let i = 0;
      const next = (): void => {
        if (i < req.length) c.write(req[i++]!, next);
      };
      next();
    });
    assert.deepEqual(r.found, { dst: { host: 'example.test', port: 8080 }, via: 'host' });
    assert.equal(r.rest.toString(), req);
  });

  test('HTTP without a port is port 80; an IPv6 literal keeps its brackets out', async () => {
    const r = await peekWith((c) => c.write('GET / HTTP/1.1\r\nHost: [fd00::1]\r\n\r\nbody'));
    assert.deepEqual(r.found, { dst: { host: 'fd00::1', port: 80 }, via: 'host' });
    assert.equal(r.rest.toString(), 'GET / HTTP/1.1\r\nHost: [fd00::1]\r\n\r\nbody');
  });

  test('TLS SNI is port 443', async () => {
    const [client, accepted] = await connectedPair(server);
    const t = tls.connect({ socket: client, servername: 'sni.example.test', rejectUnauthorized: false });
    t.on('error', () => {});
    const found = await peekServerName(accepted, 1000);
    assert.deepEqual(found, { dst: { host: 'sni.example.test', port: 443 }, via: 'sni' });
    // The ClientHello is still readable: its first byte is the handshake record type.
    const first = await new Promise<Buffer>((resolve) => accepted.once('data', resolve));
    assert.equal(first[0], 0x16);
    t.destroy();
    accepted.destroy();
  });

  test('nothing that names a server: null, and the bytes stay', async () => {
    const r = await peekWith((c) => c.write('SSH-2.0-OpenSSH_9.0\r\n'));
    assert.equal(r.found, null);
    assert.equal(r.rest.toString(), 'SSH-2.0-OpenSSH_9.0\r\n');
  });

  test('a request without Host: null', async () => {
    const r = await peekWith((c) => c.write('GET / HTTP/1.0\r\n\r\n'));
    assert.equal(r.found, null);
    assert.equal(r.rest.toString(), 'GET / HTTP/1.0\r\n\r\n');
  });

  test('silence until the time is up: null', async () => {
    const r = await peekWith(() => {}, 100);
    assert.equal(r.found, null);
    assert.equal(r.rest.length, 0);
  });
});
