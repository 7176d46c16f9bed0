/**
 * PROXYPROTOCOL=hostList and the `/proxy-v1|/proxy-v2` hop option against Debian's HAProxy
 * (docs/proxy-protocol.md). Every address is on loopback: clients bind 127.0.0.5..7, HAProxy
 * dials sockstap from 127.0.0.2 (`source`), so the balancer and the clients are told apart.
 *
 *   curl (127.0.0.5) → haproxy f0 (send-proxy) ─┐
 *   curl (127.0.0.5) → haproxy f1 (send-proxy-v2)┴→ S (PROXYPROTOCOL=127.0.0.2) → origin
 *   curl (127.0.0.5) → A (SOCKS=f2/5/proxy-v1) → haproxy f2 (accept-proxy, send-proxy-v2 from 127.0.0.3) → B → origin
 *   curl (127.0.0.5) → A2 (PROXY=B/proxy-v2, absolute-form) → B → origin
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { haproxyMissing, startHaproxy, type Haproxy } from '../helpers/haproxy.js';
import { curl, startOrigin, type Origin } from '../helpers/origin.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';
import { PROXY_V2_SIGNATURE } from '../../src/net/proxy-protocol.js';
import { loadConfig } from '../../src/config/load.js';

async function eventually<T>(fn: () => T | undefined | null | false, what: string, timeoutMs = 8000): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Connect from `localAddress`, write `bytes`, and collect what comes back until the server closes. */
function rawExchange(port: number, localAddress: string, bytes: Buffer | null): Promise<{ reply: Buffer; closedMs: number }> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const s = net.connect({ host: '127.0.0.1', port, localAddress });
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error('the connection was not closed by sockstap'));
    }, 10_000);
    s.on('connect', () => {
      if (bytes) s.write(bytes);
    });
    s.on('data', (d: Buffer) => chunks.push(d));
    s.on('error', () => {});
    s.on('close', () => {
      clearTimeout(timer);
      resolve({ reply: Buffer.concat(chunks), closedMs: Date.now() - started });
    });
  });
}

const CLIENT = '127.0.0.5';
const GREETING = Buffer.from([5, 1, 0]);

describe('PROXY protocol with HAProxy', { skip: haproxyMissing() ?? false }, () => {
  let origin: Origin;
  let s: TestProxy;
  let b: TestProxy;
  let a: TestProxy;
  let a2: TestProxy;
  let haproxy: Haproxy;

  before(async () => {
    origin = await startOrigin();
    s = await startProxy([
      '-P127.0.0.1:0/auto',
      'PROXYPROTOCOL=127.0.0.2',
      'RELIABLE=127.0.0.1,127.0.0.2,127.0.0.5,127.0.0.6',
      'REJECT=*:*:127.0.0.6',
      'TIMEOUT=handshake:1s',
    ]);
    b = await startProxy(['-P127.0.0.1:0/auto', 'PROXYPROTOCOL=127.0.0.3,127.0.0.1', 'RELIABLE=127.0.0.0/8']);
    haproxy = await startHaproxy([
      { server: `127.0.0.1:${s.port()} send-proxy source 127.0.0.2` },
      { server: `127.0.0.1:${s.port()} send-proxy-v2 source 127.0.0.2` },
      { bind: 'accept-proxy', server: `127.0.0.1:${b.port()} send-proxy-v2 source 127.0.0.3` },
    ]);
    a = await startProxy(['-P127.0.0.1:0/auto', `SOCKS=127.0.0.1:${haproxy.ports[2]}/5/proxy-v1`, 'RELIABLE=127.0.0.0/8']);
    a2 = await startProxy(['-P127.0.0.1:0/auto', `PROXY=127.0.0.1:${b.port()}/proxy-v2`, 'RELIABLE=127.0.0.0/8']);
  });

  after(async () => {
    await haproxy?.stop();
    for (const p of [a, a2, b, s]) {
      await p?.stop();
      p?.cleanup();
    }
    await origin?.close();
  });

  test('send-proxy (v1) and send-proxy-v2: sessions.jsonl and access.log name the real client', async () => {
    const v1 = await curl(['--interface', CLIENT, '--socks5', `127.0.0.1:${haproxy.ports[0]}`, origin.url('/via-v1')]);
    assert.equal(v1.code, 0, v1.stderr);
    const v2 = await curl(['--interface', CLIENT, '-x', `http://127.0.0.1:${haproxy.ports[1]}`, origin.url('/via-v2')]);
    assert.equal(v2.code, 0, v2.stderr);
    const r1 = await eventually(() => s.sessions().find((r) => r.door === 'socks5' && String(r.client).startsWith(`${CLIENT}:`)), 'the SOCKS5 record');
    assert.match(String(r1.client), /^127\.0\.0\.5:\d+$/);
    assert.equal(r1.dst, `127.0.0.1:${origin.port}`);
    const r2 = await eventually(() => s.sessions().find((r) => r.door === 'http' && String(r.client).startsWith(`${CLIENT}:`)), 'the HTTP record');
    assert.match(String(r2.client), /^127\.0\.0\.5:\d+$/);
    // The client's bytes only: the request head curl sent, not the balancer's header before it.
    const head = Buffer.byteLength(`GET ${origin.url('/via-v2')} HTTP/1.1\r\nHost: 127.0.0.1:${origin.port}\r\nUser-Agent: curl/x\r\nAccept: */*\r\nProxy-Connection: Keep-Alive\r\n\r\n`);
    assert.ok(Math.abs(Number(r2.bytesUp) - head) < 12, `bytesUp ${String(r2.bytesUp)} is the request head (${head} bytes, give or take curl's version)`);
    const line = await eventually(() => s.readLog('access.log').split('\n').find((l) => l.includes('/via-v2')), 'the access.log line');
    assert.match(line, /\b127\.0\.0\.5\b/);
    assert.doesNotMatch(line, /\b127\.0\.0\.2\b/, 'the balancer is not the client');
    // The balancer's own address is in no record of a proxied connection.
    assert.ok(!s.sessions().some((r) => String(r.client).startsWith('127.0.0.2:')));
  });

  test('RELIABLE and REJECT decide on the header\'s address, not the balancer\'s', async () => {
    const rejected = await curl(['--interface', '127.0.0.6', '--socks5', `127.0.0.1:${haproxy.ports[1]}`, origin.url('/rejected')]);
    assert.notEqual(rejected.code, 0);
    const r = await eventually(() => s.sessions().find((x) => String(x.client).startsWith('127.0.0.6:')), 'the rejected record');
    assert.equal(r.result, 'EDENIED');
    const unreliable = await curl(['--interface', '127.0.0.7', '--socks5', `127.0.0.1:${haproxy.ports[0]}`, origin.url('/unreliable')]);
    assert.notEqual(unreliable.code, 0);
    await eventually(() => s.readLog('sockstap.log').split('\n').find((l) => l.includes('source refused') && l.includes('127.0.0.7:')), 'RELIABLE refusing 127.0.0.7');
    assert.equal(origin.requests.filter((q) => q.url === '/rejected' || q.url === '/unreliable').length, 0);
  });

  test('a header from a source not in PROXYPROTOCOL is refused; that source without one is served', async () => {
    const v1 = await rawExchange(s.port(), '127.0.0.1', Buffer.concat([Buffer.from('PROXY TCP4 10.9.9.9 127.0.0.1 1111 80\r\n'), GREETING]));
    assert.equal(v1.reply.length, 0, 'no SOCKS reply');
    const v2 = Buffer.concat([PROXY_V2_SIGNATURE, Buffer.from([0x21, 0x11, 0, 12, 10, 9, 9, 9, 127, 0, 0, 1, 0, 1, 0, 2]), GREETING]);
    assert.equal((await rawExchange(s.port(), '127.0.0.1', v2)).reply.length, 0);
    const lines = await eventually(() => {
      const l = s.readLog('sockstap.log').split('\n').filter((x) => x.includes('proxy protocol header from a source not in PROXYPROTOCOL'));
      return l.length >= 2 && l;
    }, 'two refusals logged');
    assert.match(lines[0]!, /127\.0\.0\.1:/);
    assert.ok(!s.sessions().some((r) => String(r.client).startsWith('10.9.9.9')), 'the spoofed address is no client');
    // Their sessions (RELIABLE and MAXIMA came first, on the real address) end EDENIED.
    await eventually(() => s.sessions().filter((r) => r.result === 'EDENIED' && String(r.client).startsWith('127.0.0.1:')).length >= 2, 'two EDENIED records');
    const direct = await curl(['--socks5', `127.0.0.1:${s.port()}`, origin.url('/direct')]);
    assert.equal(direct.code, 0, direct.stderr);
  });

  test('a listed source without a header (or a bad one, or none in TIMEOUT=handshake) is refused; LOCAL keeps its address', async () => {
    const noHeader = await rawExchange(s.port(), '127.0.0.2', GREETING);
    assert.equal(noHeader.reply.length, 0);
    await eventually(() => s.readLog('sockstap.log').includes('proxy protocol: bad header'), 'the missing header logged');
    const bad = await rawExchange(s.port(), '127.0.0.2', Buffer.from('PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n'));
    assert.equal(bad.reply.length, 0);
    await eventually(() => s.readLog('sockstap.log').split('\n').some((l) => l.includes('bad header') && l.includes('ports')), 'the bad header logged');
    const silent = await rawExchange(s.port(), '127.0.0.2', null);
    assert.equal(silent.reply.length, 0);
    assert.ok(silent.closedMs >= 900, `closed after TIMEOUT=handshake (${silent.closedMs} ms)`);
    await eventually(() => s.readLog('sockstap.log').split('\n').some((l) => l.includes('proxy protocol: no header') && l.includes('timeout')), 'the silent one logged');
    // v2 LOCAL (a health check): the connection is the balancer's own, and is served as such.
    const local = Buffer.concat([PROXY_V2_SIGNATURE, Buffer.from([0x20, 0x00, 0, 0])]);
    const sock = net.connect({ host: '127.0.0.1', port: s.port(), localAddress: '127.0.0.2' });
    sock.on('error', () => {});
    const reply = await new Promise<Buffer>((resolve) => {
      sock.once('data', resolve);
      sock.write(Buffer.concat([local, GREETING]));
    });
    assert.deepEqual([...reply], [5, 0]);
    sock.destroy();
    const metrics = s.proxy.totals.refused;
    assert.ok(metrics >= 3, `refusals counted (${metrics})`);
  });

  test('SOCKS=…/proxy-v1 into HAProxy (accept-proxy) and on into sockstap: the client arrives', async () => {
    const r = await curl(['--interface', CLIENT, '--socks5', `127.0.0.1:${a.port()}`, origin.url('/chained')]);
    assert.equal(r.code, 0, r.stderr);
    const rec = await eventually(() => b.sessions().find((x) => x.dst === `127.0.0.1:${origin.port}` && String(x.client).startsWith(`${CLIENT}:`)), 'B\'s record');
    assert.match(String(rec.client), /^127\.0\.0\.5:\d+$/);
    const ra = await eventually(() => a.sessions().find((x) => x.dst === `127.0.0.1:${origin.port}`), 'A\'s record');
    // HAProxy read A's v1 header: its log names the client, and it passed it on in v2 to B.
    assert.match(haproxy.output(), /127\.0\.0\.5:\d+ \[[^\]]+\] f2 /);
    // The same client port all along: A's record, HAProxy's log, B's record.
    assert.equal(ra.client, rec.client);
    assert.ok(haproxy.output().includes(`${String(ra.client)} [`));
  });

  test('PROXY=…/proxy-v2 (an HTTP hop, absolute-form): the next sockstap records the client', async () => {
    const r = await curl(['--interface', CLIENT, '-x', `http://127.0.0.1:${a2.port()}`, origin.url('/absolute')]);
    assert.equal(r.code, 0, r.stderr);
    const line = await eventually(() => b.readLog('access.log').split('\n').find((l) => l.includes('/absolute')), 'B\'s access.log line');
    assert.match(line, /\b127\.0\.0\.5\b/);
    const again = await curl(['--interface', '127.0.0.6', '-x', `http://127.0.0.1:${a2.port()}`, origin.url('/absolute-2')]);
    assert.equal(again.code, 0, again.stderr);
    // A pooled connection to B carries one client's header: another client gets its own.
    const line2 = await eventually(() => b.readLog('access.log').split('\n').find((l) => l.includes('/absolute-2')), 'the second line');
    assert.match(line2, /\b127\.0\.0\.6\b/);
  });
});

/** A SOCKS5 greeting after `header`, from 127.0.0.1: the method reply, or null when closed unanswered. */
async function greetAfter(port: number, header: Buffer): Promise<{ socket: net.Socket; reply: Buffer | null }> {
  const socket = net.connect({ host: '127.0.0.1', port });
  socket.on('error', () => {});
  const reply = await new Promise<Buffer | null>((resolve) => {
    socket.once('data', resolve);
    socket.once('close', () => resolve(null));
    socket.write(Buffer.concat([header, GREETING]));
  });
  return { socket, reply };
}

/** Write `bytes` from 127.0.0.1 and resolve with the first reply, then close. */
async function rawExchangeFirst(port: number, bytes: Buffer): Promise<{ reply: Buffer }> {
  const socket = net.connect({ host: '127.0.0.1', port });
  socket.on('error', () => {});
  const reply = await new Promise<Buffer>((resolve, reject) => {
    socket.once('data', resolve);
    socket.once('close', () => reject(new Error('closed without a reply')));
    socket.write(bytes);
  });
  socket.destroy();
  return { reply };
}

const v1From = (address: string, port = 40000): Buffer => Buffer.from(`PROXY TCP4 ${address} 127.0.0.1 ${port} 1080\r\n`);

describe('PROXYPROTOCOL without a balancer in between', () => {
  test('MAXIMA=persrc counts the header\'s source', async () => {
    const p = await startProxy(['-P127.0.0.1:0/socks', 'PROXYPROTOCOL=127.0.0.1', 'RELIABLE=10.1.0.0/16', 'MAXIMA=persrc:1']);
    try {
      const first = await greetAfter(p.port(), v1From('10.1.0.1', 40001));
      assert.deepEqual([...first.reply!], [5, 0]);
      const second = await greetAfter(p.port(), v1From('10.1.0.1', 40002));
      assert.equal(second.reply, null, 'a second connection of 10.1.0.1 is over persrc:1');
      const other = await greetAfter(p.port(), v1From('10.1.0.2', 40003));
      assert.deepEqual([...other.reply!], [5, 0], 'another client behind the same balancer is not');
      await eventually(() => p.readLog('sockstap.log').split('\n').some((l) => l.includes('connection limit') && l.includes('10.1.0.1:40002')), 'the limit logged');
      // 127.0.0.1 itself is not RELIABLE: only the header's address was checked.
      for (const s of [first.socket, other.socket]) s.destroy();
      assert.ok(!p.readLog('sockstap.log').includes('accept=native'), 'the native accept path is off');
    } finally {
      await p.stop();
      p.cleanup();
    }
  });

  test('PROXYPROTOCOL set by a reload holds on a listener the native accept path serves', async () => {
    const p = await startProxy(['-P127.0.0.1:0/socks', 'RELIABLE=127.0.0.1,10.1.0.0/16']);
    try {
      // Served before: 127.0.0.1 is approved on the native path (where it has one).
      const before = await greetAfter(p.port(), Buffer.alloc(0));
      assert.deepEqual([...before.reply!], [5, 0]);
      before.socket.destroy();
      const origin = p.proxy.config().origin;
      await p.proxy.reload(loadConfig([...origin.argv, 'PROXYPROTOCOL=127.0.0.1'], { cwd: origin.cwd }));
      const bare = await greetAfter(p.port(), Buffer.alloc(0));
      assert.equal(bare.reply, null, 'no header from a listed source: refused');
      const proxied = await greetAfter(p.port(), v1From('10.1.0.9'));
      assert.deepEqual([...proxied.reply!], [5, 0]);
      proxied.socket.destroy();
      const rec = await eventually(() => p.sessions().find((r) => String(r.client).startsWith('10.1.0.9:')), 'the proxied record');
      assert.equal(rec.client, '10.1.0.9:40000');
    } finally {
      await p.stop();
      p.cleanup();
    }
  });

  test('IDENT=do asks the identd at the header\'s address about the client\'s ports', async () => {
    const queries: string[] = [];
    const identd = net.createServer((c) => {
      c.on('error', () => {});
      c.setEncoding('latin1');
      let buf = '';
      c.on('data', (d: string) => {
        buf += d;
        const eol = buf.indexOf('\r\n');
        if (eol < 0) return;
        const q = buf.slice(0, eol);
        queries.push(q);
        c.end(`${q} : USERID : UNIX : alice\r\n`);
      });
    });
    await new Promise<void>((r) => identd.listen(0, '127.0.0.9', r));
    const previous = process.env.SOCKSTAP_IDENT_PORT;
    process.env.SOCKSTAP_IDENT_PORT = String((identd.address() as net.AddressInfo).port);
    const origin = await startOrigin();
    const p = await startProxy(['-P127.0.0.1:0/socks', 'PROXYPROTOCOL=127.0.0.1', 'RELIABLE=127.0.0.9', 'IDENT=do', 'AUTHORIZER=-list{alice:secret}']);
    try {
      const request = Buffer.concat([Buffer.from([4, 1, origin.port >> 8, origin.port & 0xff, 127, 0, 0, 1]), Buffer.from('alice\0')]);
      const { reply } = await rawExchangeFirst(p.port(), Buffer.concat([v1From('127.0.0.9', 40100), request]));
      assert.equal(reply[1], 90, 'granted');
      assert.deepEqual(queries, ['40100 , 1080'], 'the client\'s port, and the balancer\'s port it reached');
      const rec = await eventually(() => p.sessions().find((r) => r.client === '127.0.0.9:40100'), 'the record');
      assert.equal(rec.user, 'alice');
    } finally {
      if (previous === undefined) delete process.env.SOCKSTAP_IDENT_PORT;
      else process.env.SOCKSTAP_IDENT_PORT = previous;
      await p.stop();
      p.cleanup();
      await origin.close();
      identd.close();
    }
  });

  test('a tcprelay door to a server that speaks first: its banner reaches a silent client, listed or not', async () => {
    const banner = net.createServer((c) => {
      c.on('error', () => {});
      c.end('220 banner.test ready\r\n');
    });
    await new Promise<void>((r) => banner.listen(0, '127.0.0.1', r));
    const port = (banner.address() as net.AddressInfo).port;
    const p = await startProxy(['-P127.0.0.1:0/tcprelay', `SERVER=tcprelay://127.0.0.1:${port}`, 'PROXYPROTOCOL=127.0.0.2', 'RELIABLE=127.0.0.0/8,10.3.0.0/16']);
    try {
      const unlisted = await rawExchange(p.port(), '127.0.0.1', null);
      assert.equal(unlisted.reply.toString(), '220 banner.test ready\r\n');
      const listed = await rawExchange(p.port(), '127.0.0.2', v1From('10.3.0.1'));
      assert.equal(listed.reply.toString(), '220 banner.test ready\r\n');
      await eventually(() => p.sessions().some((r) => r.client === '10.3.0.1:40000'), 'the proxied record');
    } finally {
      await p.stop();
      p.cleanup();
      banner.close();
    }
  });

  test('a tcprelay door: a header from an unlisted source closes the connection when it arrives', async () => {
    const origin = await startOrigin();
    const p = await startProxy([`-P127.0.0.1:0/tcprelay`, `SERVER=tcprelay://127.0.0.1:${origin.port}`, 'PROXYPROTOCOL=127.0.0.2', 'RELIABLE=127.0.0.0/8,10.2.0.0/16']);
    try {
      const spoof = await rawExchange(p.port(), '127.0.0.1', Buffer.from('PROXY TCP4 10.9.9.9 127.0.0.1 1 2\r\nGET / HTTP/1.0\r\n\r\n'));
      assert.equal(spoof.reply.length, 0);
      await eventually(() => p.readLog('sockstap.log').includes('proxy protocol header from a source not in PROXYPROTOCOL'), 'the refusal logged');
      const plain = await rawExchange(p.port(), '127.0.0.1', Buffer.from('GET / HTTP/1.0\r\n\r\n'));
      assert.match(plain.reply.toString('latin1'), /^HTTP\/1\.1 200/);
      // A listed balancer's header is taken off before the relay: the origin sees plain HTTP.
      const proxied = await rawExchange(p.port(), '127.0.0.2', Buffer.concat([v1From('10.2.0.1'), Buffer.from('GET / HTTP/1.0\r\n\r\n')]));
      assert.match(proxied.reply.toString('latin1'), /^HTTP\/1\.1 200/);
      const rec = await eventually(() => p.sessions().find((r) => String(r.client).startsWith('10.2.0.1:')), 'the relayed record');
      assert.equal(rec.door, 'tcprelay');
      assert.equal(origin.requests.length, 2);
    } finally {
      await p.stop();
      p.cleanup();
      await origin.close();
    }
  });
});
