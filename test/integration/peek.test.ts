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
import { peekTunnel, type PeekOptions, type PeekResult } from '../../src/net/peek.js';
import { relay, type RelayResult } from '../../src/net/relay.js';

/** Deterministic PRNG (mulberry32) so a failing seed can be replayed. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function randomBytes(rand: () => number, n: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = Math.floor(rand() * 256);
  return b;
}

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
 * A connected loopback pair: `near` as net.connect makes it, `far` accepted as sockstap's
 * listener does (allowHalfOpen, pauseOnConnect), or as its dialer does when `dialer` is set.
 */
async function socketPair(): Promise<{ near: Socket; far: Socket }> {
  const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true });
  const accepted = new Promise<Socket>((resolve) => server.once('connection', resolve));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const near = track(net.connect({ host: '127.0.0.1', port: (server.address() as AddressInfo).port, allowHalfOpen: true, noDelay: true }));
  const [far] = await Promise.all([accepted, new Promise((resolve) => near.once('connect', resolve))]);
  await new Promise((resolve) => server.close(resolve));
  return { near, far: track(far) };
}

interface Tunnel {
  client: Socket;
  origin: Socket;
  /** peekTunnel's result, then relay's, with what the peek left on the sockets. */
  done: Promise<{ peek: PeekResult; relay: RelayResult; paused: boolean; listenersLeft: number }>;
}

/**
 * client ↔ [proxyClient (peek, relay) proxyServer] ↔ origin. proxyClient is accepted paused like
 * sockstap's listener does; proxyServer is connected like its dialer does, and paused as the
 * pipeline holds it until the peek.
 */
async function tunnel(options: PeekOptions): Promise<Tunnel> {
  const front = await socketPair();
  const back = await socketPair();
  const proxyClient = front.far;
  const proxyServer = back.near;
  proxyServer.pause();
  // The origin is the accepted end; resume it so its tests read with 'data'.
  const origin = back.far;
  origin.resume();
  const done = (async () => {
    const before = listenerCounts(proxyClient) + listenerCounts(proxyServer);
    const peek = await peekTunnel(proxyClient, proxyServer, options);
    const paused = proxyClient.isPaused() && proxyServer.isPaused();
    const listenersLeft = listenerCounts(proxyClient) + listenerCounts(proxyServer) - before;
    const r = await relay(proxyClient, proxyServer, { idleMs: 0 });
    return { peek, relay: r, paused, listenersLeft };
  })();
  return { client: front.near, origin, done };
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
