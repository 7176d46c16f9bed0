/**
 * The native accept path (native/door_*.c, native/door.ts, frontdoors/native-socks.ts):
 * the relay thread accepts on the SOCKS listener, reads the SOCKS5 handshake, lets TypeScript
 * decide each CONNECT and splices it; everything else reaches the JavaScript doors as a socket.
 * Real SOCKS5 clients written byte by byte here, real echo servers, on loopback.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { loadConfig } from '../../src/config/load.js';
import type { SessionRecord } from '../../src/core/session.js';
import { nativeDoorAvailable, nativeDoorStats } from '../../src/native/door.js';
import { ftpCorrelation, type FtpControlLink } from '../../src/taps/ftp/correlate.js';
import { nativeUnavailable } from '../../src/native/addon.js';
import { curl, startEcho, startOrigin, PAGE, type EchoServer, type Origin } from '../helpers/origin.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';
import { rng } from '../helpers/random.js';

const noNative = nativeDoorAvailable() ? false : `the addon has no native accept path (${nativeUnavailable ?? 'an older build'})`;

function greeting(): Buffer {
  return Buffer.from([5, 1, 0]);
}

function connectRequest(host: string, port: number): Buffer {
  const p = Buffer.from([port >> 8, port & 0xff]);
  if (net.isIPv4(host)) return Buffer.concat([Buffer.from([5, 1, 0, 1, ...host.split('.').map(Number)]), p]);
  return Buffer.concat([Buffer.from([5, 1, 0, 3, host.length]), Buffer.from(host), p]);
}

/** Read exactly n bytes (or fewer when the peer closes first). */
function readBytes(s: net.Socket, n: number, timeoutMs = 5000): Promise<Buffer> {
  return new Promise((resolve) => {
    let got = Buffer.alloc(0);
    const done = (): void => {
      clearTimeout(timer);
      s.off('data', onData);
      s.off('close', done);
      s.pause();
      const rest = got.subarray(n);
      if (rest.length > 0) s.unshift(rest);
      resolve(got.subarray(0, n));
    };
    const onData = (b: Buffer): void => {
      got = Buffer.concat([got, b]);
      if (got.length >= n) done();
    };
    const timer = setTimeout(done, timeoutMs);
    s.on('data', onData);
    s.once('close', done);
    s.resume();
  });
}

/** A SOCKS5 CONNECT written by hand: the reply code, and the socket (open when REP is 0). */
async function socks5(port: number, host: string, dstPort: number, from?: string): Promise<{ socket: net.Socket; rep: number }> {
  const socket = net.connect({ port, host: '127.0.0.1', ...(from ? { localAddress: from } : {}) });
  socket.on('error', () => {});
  await new Promise((r) => socket.once('connect', r));
  socket.write(greeting());
  const method = await readBytes(socket, 2);
  assert.deepEqual([...method], [5, 0], 'method selection');
  socket.write(connectRequest(host, dstPort));
  const head = await readBytes(socket, 10);
  return { socket, rep: head.length >= 2 ? head[1]! : -1 };
}

async function roundTrip(socket: net.Socket, size: number): Promise<void> {
  const data = randomBytes(size);
  socket.write(data);
  const back = await readBytes(socket, size);
  assert.ok(back.equals(data), `echoed ${back.length} of ${size} bytes`);
}

function closed(socket: net.Socket): Promise<void> {
  return socket.destroyed ? Promise.resolve() : new Promise((r) => socket.once('close', () => r()));
}

describe('native accept path', { skip: noNative }, () => {
  let echo: EchoServer;
  let rejected: EchoServer;
  let origin: Origin;
  let proxy: TestProxy;
  let closedPort = 0;
  const ended: SessionRecord[] = [];

  before(async () => {
    echo = await startEcho();
    rejected = await startEcho();
    origin = await startOrigin();
    const gone = await startEcho();
    closedPort = gone.port;
    await gone.close();
    proxy = await startProxy(['-P127.0.0.1:0/auto', 'TIMEOUT=handshake:1s', `REJECT=*:{127.0.0.1:${rejected.port}}:*`]);
    proxy.proxy.events.on('session-end', (s) => ended.push(s.toRecord()));
  });
  after(async () => {
    await proxy.stop();
    proxy.cleanup();
    await echo.close();
    await rejected.close();
    await origin.close();
  });

  test('a source is checked in JavaScript once, then its CONNECTs are handled by the thread and recorded', async () => {
    const first = nativeDoorStats();
    // The first connection is handed over: the JavaScript door checks RELIABLE and approves the source.
    const r0 = await curl(['--socks5', `127.0.0.1:${proxy.port()}`, origin.url('/first')]);
    assert.equal(r0.code, 0, r0.stderr);
    assert.ok(r0.stdout.equals(PAGE));
    const mid = nativeDoorStats();
    assert.ok(mid.handedOff > first.handedOff, 'the first connection was handed to JavaScript');
    for (let i = 0; i < 10; i++) {
      const r = await curl(['--socks5', `127.0.0.1:${proxy.port()}`, origin.url(`/n${i}`)]);
      assert.equal(r.code, 0, r.stderr);
      assert.ok(r.stdout.equals(PAGE), 'byte-identical page');
    }
    const last = nativeDoorStats();
    assert.equal(last.accepted - mid.accepted, 10);
    assert.equal(last.handedOff, mid.handedOff, 'no CONNECT of an approved source was handed over');
    const dst = `127.0.0.1:${origin.port}`;
    await eventually(() => ended.filter((s) => s.dst === dst).length >= 11);
    for (const s of ended.filter((r) => r.dst === dst)) {
      assert.equal(s.door, 'socks5');
      assert.equal(s.command, 'connect');
      assert.equal(s.route, 'direct');
      assert.equal(s.result, 'ok');
      assert.ok(s.bytesDown > PAGE.length && s.bytesUp > 0, `counted ${s.bytesUp}/${s.bytesDown}`);
    }
  });

  test('a spliced CONNECT moves 256 KiB each way and is counted exactly', async () => {
    const { socket, rep } = await socks5(proxy.port(), '127.0.0.1', echo.port);
    assert.equal(rep, 0);
    await roundTrip(socket, 256 * 1024);
    const local = socket.localPort;
    socket.end();
    await closed(socket);
    const client = `127.0.0.1:${local}`;
    await eventually(() => ended.some((s) => s.client === client));
    const s = ended.find((r) => r.client === client)!;
    assert.equal(s.bytesUp, 256 * 1024);
    assert.equal(s.bytesDown, 256 * 1024);
    assert.equal(s.result, 'ok');
  });

  test('a REJECTed destination gets REP 2 and a closed port REP 5, from the thread', async () => {
    const before = nativeDoorStats();
    const refused = await socks5(proxy.port(), '127.0.0.1', rejected.port);
    assert.equal(refused.rep, 2);
    await closed(refused.socket);
    const down = await socks5(proxy.port(), '127.0.0.1', closedPort);
    assert.equal(down.rep, 5);
    await closed(down.socket);
    assert.equal(nativeDoorStats().handedOff, before.handedOff);
    await eventually(() => ended.some((s) => s.dst === `127.0.0.1:${closedPort}`));
    assert.equal(ended.find((s) => s.dst === `127.0.0.1:${rejected.port}`)?.result, 'EDENIED');
    assert.equal(ended.find((s) => s.dst === `127.0.0.1:${closedPort}`)?.result, 'ECONNREFUSED');
  });

  test('bytes sent right after the request are kept (the request is handed over with them)', async () => {
    const socket = net.connect(proxy.port(), '127.0.0.1');
    socket.on('error', () => {});
    await new Promise((r) => socket.once('connect', r));
    const payload = randomBytes(3000);
    socket.write(Buffer.concat([greeting(), connectRequest('127.0.0.1', echo.port), payload]));
    const head = await readBytes(socket, 12);
    assert.deepEqual([...head.subarray(0, 4)], [5, 0, 5, 0]);
    const back = await readBytes(socket, payload.length);
    assert.ok(back.equals(payload));
    socket.destroy();
  });

  test('a handshake fed one byte at a time is read by the thread all the same', async () => {
    const socket = net.connect(proxy.port(), '127.0.0.1');
    socket.on('error', () => {});
    await new Promise((r) => socket.once('connect', r));
    const before = nativeDoorStats();
    const bytes = Buffer.concat([greeting(), connectRequest('127.0.0.1', echo.port)]);
    const replies = readBytes(socket, 12);
    for (const b of bytes) {
      socket.write(Buffer.from([b]));
      await new Promise((r) => setTimeout(r, 5));
    }
    const head = await replies;
    assert.deepEqual([...head.subarray(0, 4)], [5, 0, 5, 0]);
    await roundTrip(socket, 500);
    socket.destroy();
    assert.equal(nativeDoorStats().handedOff, before.handedOff, 'not handed over');
  });

  test('random handshakes get a reply or a clean close, and a good client is served after them', async () => {
    const rnd = rng(0x5eed);
    const clients: Promise<void>[] = [];
    for (let i = 0; i < 40; i++) {
      const len = 1 + Math.floor(rnd() * 40);
      const junk = Buffer.from(Array.from({ length: len }, () => Math.floor(rnd() * 256)));
      junk[0] = 5; // a SOCKS5 first byte, so the thread parses the rest
      clients.push(
        (async () => {
          const s = net.connect(proxy.port(), '127.0.0.1');
          s.on('error', () => {});
          s.on('data', () => {});
          await new Promise((r) => s.once('connect', r));
          s.end(junk);
          await closed(s);
        })(),
      );
    }
    await Promise.all(clients);
    const { socket, rep } = await socks5(proxy.port(), '127.0.0.1', echo.port);
    assert.equal(rep, 0);
    await roundTrip(socket, 2000);
    socket.destroy();
  });

  test('SOCKS4a, HTTP and BIND from an approved source reach the JavaScript doors', async () => {
    const s4 = await curl(['--socks4a', `127.0.0.1:${proxy.port()}`, origin.url('/s4')]);
    assert.equal(s4.code, 0, s4.stderr);
    assert.ok(s4.stdout.equals(PAGE));
    const h = await curl(['-x', `http://127.0.0.1:${proxy.port()}`, origin.url('/h')]);
    assert.equal(h.code, 0, h.stderr);
    assert.ok(h.stdout.equals(PAGE));
    // BIND: the greeting is answered by the thread, the request by the JavaScript door.
    const socket = net.connect(proxy.port(), '127.0.0.1');
    socket.on('error', () => {});
    await new Promise((r) => socket.once('connect', r));
    socket.write(greeting());
    assert.deepEqual([...(await readBytes(socket, 2))], [5, 0]);
    socket.write(Buffer.from([5, 2, 0, 1, 127, 0, 0, 1, 0, 0]));
    const first = await readBytes(socket, 10);
    assert.equal(first[1], 0, 'BIND first reply');
    const bindPort = first.readUInt16BE(8);
    assert.ok(bindPort > 0);
    const peer = net.connect(bindPort, '127.0.0.1');
    peer.on('error', () => {});
    const second = await readBytes(socket, 10);
    assert.equal(second[1], 0, 'BIND second reply');
    peer.write('through bind');
    assert.equal((await readBytes(socket, 12)).toString(), 'through bind');
    peer.destroy();
    socket.destroy();
  });

  test('a half greeting is closed at the handshake deadline while others are served', async () => {
    const stall = net.connect(proxy.port(), '127.0.0.1');
    stall.on('error', () => {});
    await new Promise((r) => stall.once('connect', r));
    stall.write(Buffer.from([5, 2]));
    const client = `127.0.0.1:${stall.localPort}`;
    const started = Date.now();
    const { socket, rep } = await socks5(proxy.port(), '127.0.0.1', echo.port);
    assert.equal(rep, 0);
    await roundTrip(socket, 1000);
    socket.destroy();
    await closed(stall);
    const waited = Date.now() - started;
    assert.ok(waited >= 900 && waited < 3000, `closed after ${waited} ms (TIMEOUT=handshake:1s)`);
    await eventually(() => ended.some((s) => s.client === client));
    assert.equal(ended.find((s) => s.client === client)?.result, 'handshake-timeout');
  });

  test('closing a spliced session from outside ends its tunnel', async () => {
    const { socket, rep } = await socks5(proxy.port(), '127.0.0.1', echo.port);
    assert.equal(rep, 0);
    await roundTrip(socket, 100);
    const client = `127.0.0.1:${socket.localPort}`;
    const live = [...proxy.proxy.sessions.values()].find((s) => s.clientLabel === client);
    assert.ok(live, 'the spliced tunnel is a live session');
    assert.ok(live.live && live.live[0] === 100, 'its live counts come from the thread');
    live.close('closed-by-admin');
    await closed(socket);
    await eventually(() => ended.some((s) => s.client === client));
    assert.equal(ended.find((s) => s.client === client)?.result, 'closed-by-admin');
  });

  /** One CONNECT through the proxy with 100 bytes echoed; its reply code. */
  async function once(port: number, dstPort: number, from?: string): Promise<number> {
    const { socket, rep } = await socks5(port, '127.0.0.1', dstPort, from);
    if (rep === 0) await roundTrip(socket, 100);
    socket.destroy();
    await closed(socket);
    return rep;
  }

  /** Two CONNECTs: the first decided in JavaScript, the second dialed on the remembered decision. The count before the second. */
  async function decidedThenRemembered(dstPort: number): Promise<number> {
    assert.equal(await once(proxy.port(), dstPort), 0);
    const r1 = nativeDoorStats().remembered;
    assert.equal(await once(proxy.port(), dstPort), 0);
    assert.equal(nativeDoorStats().remembered, r1 + 1, 'the second CONNECT was dialed on the remembered decision');
    return r1;
  }

  test('a CONNECT decided once is remembered for its source: the next one is dialed at once, and recorded', async () => {
    const memo = await startEcho();
    try {
      const r1 = await decidedThenRemembered(memo.port);
      // Another source is decided for itself: its first CONNECT on the thread is not remembered.
      assert.equal(await once(proxy.port(), memo.port, '127.0.0.2'), 0); // handed over: RELIABLE, approval
      assert.equal(await once(proxy.port(), memo.port, '127.0.0.2'), 0);
      assert.equal(nativeDoorStats().remembered, r1 + 1, 'not on the decision made for 127.0.0.1');
      assert.equal(await once(proxy.port(), memo.port, '127.0.0.2'), 0);
      assert.equal(nativeDoorStats().remembered, r1 + 2);
      const dst = `127.0.0.1:${memo.port}`;
      await eventually(() => ended.filter((r) => r.dst === dst).length >= 5);
      for (const r of ended.filter((x) => x.dst === dst)) {
        assert.equal(r.result, 'ok');
        assert.equal(r.bytesUp, 100);
        assert.equal(r.bytesDown, 100);
      }
    } finally {
      await memo.close();
    }
  });

  test('a remembered destination that stops answering is decided again: REP 5, then forgotten', async () => {
    const flaky = await startEcho();
    const port = flaky.port;
    await decidedThenRemembered(port);
    await flaky.close();
    const r1 = nativeDoorStats().remembered;
    assert.equal(await once(proxy.port(), port), 5, 'the remembered dial failed, and so did the fresh decision');
    assert.equal(nativeDoorStats().remembered, r1 + 1);
    assert.equal(await once(proxy.port(), port), 5);
    assert.equal(nativeDoorStats().remembered, r1 + 1, 'the failed decision was forgotten');
    await eventually(() => ended.filter((r) => r.dst === `127.0.0.1:${port}` && r.result === 'ECONNREFUSED').length >= 2);
  });

  test('an FTP data connection announced by a tapped session makes the door forget its decisions', async () => {
    const memo = await startEcho();
    const link: FtpControlLink = { sessionId: 'test', hosts: new Set(['127.0.0.1']), attach: () => {} };
    const ftp = ftpCorrelation(proxy.proxy.expectations);
    try {
      const r1 = (await decidedThenRemembered(memo.port)) + 1;
      ftp.expectPassive('127.0.0.9', ['127.0.0.1'], 9, link);
      ftp.forgetPassive(link);
      assert.equal(await once(proxy.port(), memo.port), 0);
      assert.equal(nativeDoorStats().remembered, r1, 'decided again after the announcement');
      assert.equal(await once(proxy.port(), memo.port), 0);
      assert.equal(nativeDoorStats().remembered, r1 + 1);
    } finally {
      ftp.forgetPassive(link);
      await memo.close();
    }
  });

  test('rules with a time window are decided for every CONNECT', async () => {
    const timed = await startProxy(['-P127.0.0.1:0/socks', 'PERMIT=*:*:*:0000-2400']);
    try {
      const r1 = nativeDoorStats().remembered;
      for (let i = 0; i < 3; i++) assert.equal(await once(timed.port(), echo.port), 0);
      assert.equal(nativeDoorStats().remembered, r1);
    } finally {
      await timed.stop();
      timed.cleanup();
    }
  });

  test('a reload forgets remembered decisions: a destination REJECTed since is refused', async () => {
    const later = await startEcho();
    try {
      const r1 = await decidedThenRemembered(later.port);
      const origin = proxy.proxy.config().origin;
      await proxy.proxy.reload(loadConfig([...origin.argv, `REJECT=*:{127.0.0.1:${later.port}}:*`], { cwd: origin.cwd }));
      assert.equal(await once(proxy.port(), later.port), 2, 'handed over (the source is checked again) and refused');
      assert.equal(await once(proxy.port(), later.port), 2, 'on the thread, decided again and refused');
      assert.equal(nativeDoorStats().remembered, r1 + 1);
    } finally {
      await later.close();
    }
  });

  test('a reload forgets the approved sources: RELIABLE is checked again', async () => {
    const origin = proxy.proxy.config().origin;
    await proxy.proxy.reload(loadConfig([...origin.argv, 'RELIABLE=127.0.0.2'], { cwd: origin.cwd }));
    const socket = net.connect(proxy.port(), '127.0.0.1');
    socket.on('error', () => {});
    await new Promise((r) => socket.once('connect', r));
    socket.write(greeting());
    const got = await readBytes(socket, 2);
    assert.equal(got.length, 0, 'no method selection for a source outside RELIABLE');
    await closed(socket);
  });
});

async function eventually(check: () => boolean, timeoutMs = 5000): Promise<void> {
  for (let waited = 0; !check(); waited += 20) {
    if (waited > timeoutMs) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
}
