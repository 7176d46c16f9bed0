/**
 * The tunnel peek over real loopback sockets: client ↔ (peekTunnel, then relay) ↔ origin.
 * The property: whatever the peek reads and decides, both directions arrive byte-identical, in
 * order, with the half-close kept (each side still receives after it sent its FIN), for random
 * payloads in random chunkings, streams that start like HTTP, TLS, a 220 banner or nothing known,
 * and silent sides.
 */
import assert from 'node:assert/strict';
import net, { type AddressInfo, type Socket } from 'node:net';
import { after, describe, test } from 'node:test';
import tls from 'node:tls';
import { peekTunnel, type PeekOptions, type PeekResult } from '../../src/net/peek.js';
import { relay, type RelayResult } from '../../src/net/relay.js';
import { selfSignedCert } from '../helpers/tls.js';
import { rng, randomBytes } from '../helpers/random.js';



/** Every socket a test made, destroyed at the end so the runner exits by itself. */
const sockets = new Set<Socket>();
function track(s: Socket): Socket {
  sockets.add(s);
  s.on('error', () => {});
  s.once('close', () => sockets.delete(s));
  return s;
}
after(() => {
  for (const s of sockets) s.destroy();
});

/**
 * A connected loopback pair: `near` made by net.connect as sockstap's dialer makes it
 * (allowHalfOpen), `far` accepted as its listener accepts (allowHalfOpen, pauseOnConnect).
 */
async function socketPair(): Promise<{ near: Socket; far: Socket }> {
  const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true });
  const accepted = new Promise<Socket>((resolve) => server.once('connection', resolve));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const near = track(net.connect({ host: '127.0.0.1', port: (server.address() as AddressInfo).port, allowHalfOpen: true, noDelay: true }));
  const [far] = await Promise.all([accepted, new Promise((resolve) => near.once('connect', resolve))]);
  // Stops listening at once; close's callback would wait for the pair itself to close.
  server.close();
  return { near, far: track(far) };
}

interface Tunnel {
  client: Socket;
  origin: Socket;
  /** peekTunnel's result, as soon as it returns. */
  peeked: Promise<PeekResult>;
  /** peekTunnel's result, then relay's, with what the peek left on the sockets. */
  done: Promise<{ peek: PeekResult; relay: RelayResult; paused: boolean; listenersLeft: number }>;
}

/**
 * client ↔ [proxyClient (peek, relay) proxyServer] ↔ origin. proxyClient is accepted paused like
 * sockstap's listener does; proxyServer is connected like its dialer does, and paused as the
 * pipeline holds it until the peek.
 */
async function tunnel(options: PeekOptions, duringPeek?: (proxyClient: Socket, proxyServer: Socket) => void): Promise<Tunnel> {
  const front = await socketPair();
  const back = await socketPair();
  const proxyClient = front.far;
  const proxyServer = back.near;
  proxyServer.pause();
  // The origin is the accepted end (paused until a test reads it).
  const origin = back.far;
  const before = listenerCounts(proxyClient) + listenerCounts(proxyServer);
  const peeked = peekTunnel(proxyClient, proxyServer, options);
  duringPeek?.(proxyClient, proxyServer);
  const done = (async () => {
    const peek = await peeked;
    const paused = proxyClient.isPaused() && proxyServer.isPaused();
    const listenersLeft = listenerCounts(proxyClient) + listenerCounts(proxyServer) - before;
    const r = await relay(proxyClient, proxyServer, { idleMs: 0 });
    return { peek, relay: r, paused, listenersLeft };
  })();
  return { client: front.near, origin, peeked, done };
}

function listenerCounts(s: Socket): number {
  return ['data', 'readable', 'end', 'error', 'close'].reduce((n, e) => n + s.listenerCount(e), 0);
}

const pause = (rand: () => number): Promise<void> => {
  const r = rand();
  if (r < 0.5) return Promise.resolve();
  if (r < 0.8) return new Promise((resolve) => setImmediate(resolve));
  return new Promise((resolve) => setTimeout(resolve, Math.floor(rand() * 4)));
};

/** Writes `data` in random chunks with random gaps. */
async function writeChunked(s: Socket, data: Buffer, rand: () => number): Promise<void> {
  let at = 0;
  while (at < data.length) {
    const n = 1 + Math.floor(rand() * Math.min(data.length - at, rand() < 0.3 ? 8 : 4096));
    s.write(data.subarray(at, at + n));
    at += n;
    await pause(rand);
  }
}

/** Everything `s` receives until its FIN; rejects if it closes without one. */
function receiveAll(s: Socket): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    s.on('data', (c: Buffer) => chunks.push(c));
    s.once('end', () => resolve(Buffer.concat(chunks)));
    s.once('close', () => reject(new Error('closed without FIN')));
    // An accepted socket starts paused (pauseOnConnect): a 'data' listener alone does not resume it.
    s.resume();
  });
}

type Kind = 'http' | 'tls' | 'banner220' | 'pop3' | 'binary' | 'silent' | 'tiny';

function payload(kind: Kind, rand: () => number, side: 'client' | 'server'): Buffer {
  const body = randomBytes(rand, Math.floor(rand() * (rand() < 0.2 ? 200_000 : 3000)));
  switch (kind) {
    case 'http':
      return Buffer.concat([Buffer.from(`POST /p${Math.floor(rand() * 1e6)} HTTP/1.1\r\nHost: x\r\n\r\n`), body]);
    case 'tls':
      // A plausible record header, then random bytes: the ClientHello parser must not lose any.
      return Buffer.concat([Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc]), body]);
    case 'banner220':
      return Buffer.concat([
        Buffer.from(side === 'server' ? '220-welcome\r\n220 ready\r\n' : 'EHLO client.example\r\n'),
        body,
      ]);
    case 'pop3':
      return Buffer.concat([Buffer.from('+OK POP3 ready <1.2@x>\r\n'), body]);
    case 'binary':
      return body;
    case 'silent':
      return Buffer.alloc(0);
    case 'tiny':
      return randomBytes(rand, 1 + Math.floor(rand() * 5));
  }
}

const KINDS: readonly Kind[] = ['http', 'tls', 'banner220', 'pop3', 'binary', 'silent', 'tiny'];

describe('peekTunnel then relay: no byte lost, doubled or reordered', () => {
  const options: PeekOptions = { timeoutMs: 40, maxBytes: 16 * 1024, portHint: 25 };

  /**
   * One tunnel: the client sends its payload and FIN; the origin sends the first part of its
   * payload at once and the rest only after the client's FIN reached it (so the server → client
   * direction must outlive the client's half-close), then its own FIN.
   */
  async function runSeed(seed: number): Promise<void> {
    const rand = rng(seed);
    const clientKind = KINDS[Math.floor(rand() * KINDS.length)]!;
    const serverKind = KINDS[Math.floor(rand() * KINDS.length)]!;
    const up = payload(clientKind, rand, 'client');
    const down = payload(serverKind, rand, 'server');
    const split = Math.floor(rand() * (down.length + 1));
    const clientDelay = rand() < 0.3;
    const serverRand = rng(seed ^ 0x5eed);
    const label = `seed ${seed} (client ${clientKind}, server ${serverKind})`;

    const t = await tunnel(options);
    const atOrigin = receiveAll(t.origin);
    const atClient = receiveAll(t.client);
    const originWrites = (async () => {
      await writeChunked(t.origin, down.subarray(0, split), serverRand);
      await atOrigin.catch(() => {});
      await writeChunked(t.origin, down.subarray(split), serverRand);
      t.origin.end();
    })();
    // Sometimes the server speaks first.
    if (clientDelay) await new Promise((r) => setTimeout(r, 2));
    await writeChunked(t.client, up, rand);
    t.client.end();
    const [gotUp, gotDown, result] = await Promise.all([atOrigin, atClient, t.done, originWrites]);
    assert.ok(gotUp.equals(up), `${label}: client → server bytes differ (${gotUp.length} of ${up.length})`);
    assert.ok(gotDown.equals(down), `${label}: server → client bytes differ (${gotDown.length} of ${down.length})`);
    assert.equal(result.relay.up, up.length, `${label}: relay up count`);
    assert.equal(result.relay.down, down.length, `${label}: relay down count`);
    assert.ok(result.paused, `${label}: sockets paused after the peek`);
    assert.equal(result.listenersLeft, 0, `${label}: no listener left by the peek`);
    assert.equal(result.relay.result, 'ok', `${label}: relay result`);
  }

  test('200 random tunnels, 10 at a time', async () => {
    for (let first = 1; first <= 200; first += 10) {
      await Promise.all(Array.from({ length: 10 }, (_, i) => runSeed(first + i)));
    }
  });
});

/** Writes `reply` and FIN on `s` once its peer's FIN arrived; resolves with what it received. */
function replyAfterEnd(s: Socket, reply: string): Promise<Buffer> {
  return receiveAll(s).then((got) => {
    s.end(reply);
    return got;
  });
}

describe('peekTunnel: what it decides, and the tunnel still works', () => {
  const options: PeekOptions = { timeoutMs: 60, maxBytes: 4096, portHint: 80 };

  test('a client that sends 5 bytes and its FIN at once: bytes and FIN relayed, reply still delivered', async () => {
    const t = await tunnel(options);
    const atOrigin = replyAfterEnd(t.origin, 'reply after your FIN');
    const atClient = receiveAll(t.client);
    // "GET /" could still become a request line: the peek is waiting when the FIN comes.
    t.client.end('GET /');
    const [gotUp, gotDown, r] = await Promise.all([atOrigin, atClient, t.done]);
    assert.equal(gotUp.toString(), 'GET /');
    assert.equal(gotDown.toString(), 'reply after your FIN');
    assert.equal(r.peek.proto, 'raw');
    assert.equal(r.peek.clientEnded, true);
    assert.equal(r.peek.stoppedBy, 'ended');
    assert.equal(r.relay.result, 'ok');
  });

  test('a client that sends nothing but its FIN: the FIN is relayed', async () => {
    const t = await tunnel(options);
    const atOrigin = replyAfterEnd(t.origin, 'still here');
    const atClient = receiveAll(t.client);
    t.client.end();
    const [gotUp, gotDown, r] = await Promise.all([atOrigin, atClient, t.done]);
    assert.equal(gotUp.length, 0);
    assert.equal(gotDown.toString(), 'still here');
    assert.equal(r.peek.clientEnded, true);
  });

  test('a silent tunnel falls back to raw after the sniff window, then relays both ways', async () => {
    const t = await tunnel(options);
    const peek = await t.peeked;
    assert.equal(peek.proto, 'raw');
    assert.equal(peek.stoppedBy, 'timeout');
    const atOrigin = replyAfterEnd(t.origin, 'late reply');
    const atClient = receiveAll(t.client);
    t.client.end('late request');
    const [gotUp, gotDown] = await Promise.all([atOrigin, atClient, t.done]);
    assert.equal(gotUp.toString(), 'late request');
    assert.equal(gotDown.toString(), 'late reply');
  });

  test('an HTTP request line: method and target, request delivered whole', async () => {
    // A verdict is expected, not the window's end: a window a busy machine cannot miss.
    const t = await tunnel({ ...options, timeoutMs: 5000 });
    const request = 'GET /index.html?q=1 HTTP/1.1\r\nHost: example.com\r\n\r\n';
    const atOrigin = replyAfterEnd(t.origin, 'HTTP/1.1 204 No Content\r\n\r\n');
    const atClient = receiveAll(t.client);
    t.client.write(request);
    const peek = await t.peeked;
    assert.equal(peek.proto, 'http');
    assert.deepEqual(peek.info, { method: 'GET', target: '/index.html?q=1' });
    assert.equal(peek.stoppedBy, 'verdict');
    t.client.end();
    const [gotUp, gotDown] = await Promise.all([atOrigin, atClient, t.done]);
    assert.equal(gotUp.toString(), request);
    assert.equal(gotDown.toString(), 'HTTP/1.1 204 No Content\r\n\r\n');
  });

  test('a real TLS handshake through the tunnel: SNI and ALPN seen, handshake completes', async () => {
    const { key, cert } = selfSignedCert('tap.test');
    // The ClientHello comes after tls.connect's own work: with the 60 ms window a stalled event
    // loop (a busy core) let the timer fire first and the peek said raw. A verdict is expected here.
    const t = await tunnel({ ...options, timeoutMs: 5000 });
    const originTls = new tls.TLSSocket(t.origin, { isServer: true, key, cert, ALPNProtocols: ['h2'] });
    originTls.on('error', () => {});
    originTls.on('data', (d: Buffer) => originTls.end(`echo:${d.toString()}`));
    const clientTls = tls.connect({ socket: t.client, servername: 'tap.test', ALPNProtocols: ['h2', 'http/1.1'], ca: cert });
    clientTls.on('error', () => {});
    await new Promise<void>((resolve, reject) => {
      clientTls.once('secureConnect', resolve);
      clientTls.once('error', reject);
    });
    assert.equal(clientTls.alpnProtocol, 'h2');
    const peek = await t.peeked;
    assert.equal(peek.proto, 'tls');
    assert.deepEqual(peek.info, { sni: 'tap.test', alpn: ['h2', 'http/1.1'] });
    const reply = receiveAll(clientTls);
    clientTls.write('ping');
    assert.equal((await reply).toString(), 'echo:ping');
    clientTls.destroy();
    originTls.destroy();
  });

  test('a POP3 greeting with a silent client: the server spoke first', async () => {
    const t = await tunnel({ ...options, timeoutMs: 5000 });
    const atClient = receiveAll(t.client);
    t.origin.write('+OK Dovecot ready.\r\n');
    const peek = await t.peeked;
    assert.equal(peek.proto, 'pop3');
    assert.equal(peek.info.banner, '+OK Dovecot ready.');
    const atOrigin = replyAfterEnd(t.origin, '+OK bye\r\n');
    t.client.end('QUIT\r\n');
    const [gotUp, gotDown] = await Promise.all([atOrigin, atClient, t.done]);
    assert.equal(gotUp.toString(), 'QUIT\r\n');
    assert.equal(gotDown.toString(), '+OK Dovecot ready.\r\n+OK bye\r\n');
  });

  test('an ambiguous 220 is decided by the client\'s first command over the port', async () => {
    // Port 21 would say FTP; the client's EHLO says SMTP.
    const t = await tunnel({ ...options, timeoutMs: 5000, portHint: 21 }, (_c, proxyServer) => {
      // Runs after the peek's own listener has taken the banner: the client answers it.
      proxyServer.once('readable', () => t.client.write('EHLO client.example\r\n'));
    });
    const atClient = receiveAll(t.client);
    t.origin.write('220 host.example.net ready\r\n');
    const peek = await t.peeked;
    assert.equal(peek.proto, 'smtp');
    assert.equal(peek.info.ambiguous, 'ftp-or-smtp');
    assert.equal(peek.stoppedBy, 'verdict');
    const atOrigin = replyAfterEnd(t.origin, '221 bye\r\n');
    t.client.end('QUIT\r\n');
    const [gotUp, gotDown] = await Promise.all([atOrigin, atClient, t.done]);
    assert.equal(gotUp.toString(), 'EHLO client.example\r\nQUIT\r\n');
    assert.equal(gotDown.toString(), '220 host.example.net ready\r\n221 bye\r\n');
  });

  test('an ambiguous 220 and a silent client: the port decides after the window', async () => {
    const t = await tunnel({ ...options, portHint: 587 });
    t.origin.write('220 host.example.net ready\r\n');
    const peek = await t.peeked;
    assert.equal(peek.proto, 'smtp');
    assert.equal(peek.stoppedBy, 'timeout');
    t.client.destroy();
  });

  test('maxBytes: a long non-line stops the peek at the cap, every byte still delivered', async () => {
    const t = await tunnel({ ...options, timeoutMs: 5000, maxBytes: 1000 });
    const big = Buffer.from(`GET /${'a'.repeat(50_000)}`);
    const atOrigin = replyAfterEnd(t.origin, 'ok');
    const atClient = receiveAll(t.client);
    t.client.write(big);
    const peek = await t.peeked;
    assert.equal(peek.proto, 'raw');
    assert.equal(peek.stoppedBy, 'max-bytes');
    t.client.end();
    const [gotUp] = await Promise.all([atOrigin, atClient, t.done]);
    assert.ok(gotUp.equals(big));
  });

  test('want without a server-first protocol still watches the server: a banner ends the peek at once', async () => {
    // A client waiting for a banner must not wait for the peek's timer (here 5 s) either.
    const t = await tunnel({ ...options, timeoutMs: 5000, want: new Set(['http', 'tls']) });
    const atClient = receiveAll(t.client);
    t.origin.write('220 (vsFTPd 3.0.5)\r\n');
    const peek = await t.peeked;
    assert.equal(peek.proto, 'ftp');
    assert.equal(peek.stoppedBy, 'verdict');
    assert.equal(peek.firstSpeaker, 'server');
    const atOrigin = replyAfterEnd(t.origin, '221 bye\r\n');
    t.client.end('QUIT\r\n');
    const [, gotDown] = await Promise.all([atOrigin, atClient, t.done]);
    assert.equal(gotDown.toString(), '220 (vsFTPd 3.0.5)\r\n221 bye\r\n');
  });

  test('the server resets during the peek: stopped as closed, the client sees the tunnel end', async () => {
    const t = await tunnel({ ...options, timeoutMs: 5000 });
    const clientClosed = new Promise((resolve) => t.client.once('close', resolve));
    t.client.write('GET /');
    t.origin.resetAndDestroy();
    const peek = await t.peeked;
    assert.equal(peek.stoppedBy, 'closed');
    const r = await t.done;
    assert.notEqual(r.relay.result, 'ok');
    await clientClosed;
  });
});
