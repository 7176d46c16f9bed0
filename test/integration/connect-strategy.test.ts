/**
 * The connect strategy (DESIGN.md "Connect strategy", src/core/destinations.ts) as users run it:
 * under the default job (SOCKSTAP=all CACHE=do) and the seed's lines.
 * - A CONNECT to a closed port or a name that does not resolve on 443 (SOCKS5, SOCKS4/4a, HTTP
 *   CONNECT) gets the door's failure reply, and the record says why.
 * - A fresh HTTP hit through SOCKS opens no connection to the origin.
 * - What a destination spoke is remembered: a server-first destination seen once is dialed
 *   first next time (its closed port is then a SOCKS5 REP 5, not a success); a reload forgets.
 * - A cache-first tunnel whose late dial fails carries the failure in its record and access.log.
 * - STRATEGY=dial-first pins a rule's tunnels to the real outcome.
 * - Per-request policy cannot be outwaited: a request sent after the sniff window, one split
 *   across it, one ending in bare LFs, and a stream the tap cannot read all meet the rules.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { SocksClient } from 'socks';
import { loadConfig } from '../../src/config/load.js';
import { curl, startOrigin, type Origin } from '../helpers/origin.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- parsed JSON records
type Rec = Record<string, any>;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function eventually<T>(fn: () => T | undefined | null | false, what: string, timeoutMs = 5000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** A port nothing listens on (bound, then closed). */
async function closedPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** A server-first server: a banner, then an echo of each line. */
async function bannerServer(banner: string): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    s.write(banner);
    s.on('data', (d) => s.write(`echo:${d.toString()}`));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

function readUntil(socket: net.Socket, needle: string, timeoutMs = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    let got = '';
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`timed out waiting for ${JSON.stringify(needle)}; got ${JSON.stringify(got)}`));
    }, timeoutMs);
    const on = (d: Buffer): void => {
      got += d.toString('latin1');
      if (got.includes(needle)) {
        cleanup();
        resolve(got);
      }
    };
    const onEnd = (): void => {
      cleanup();
      resolve(got);
    };
    const cleanup = (): void => {
      clearTimeout(timer);
      socket.off('data', on);
      socket.off('end', onEnd);
      socket.off('close', onEnd);
    };
    socket.on('data', on);
    socket.on('end', onEnd);
    socket.on('close', onEnd);
  });
}

function closed(socket: net.Socket): Promise<void> {
  return new Promise((r) => (socket.destroyed ? r() : socket.once('close', () => r())));
}

/** A SOCKS5 CONNECT through the proxy on `proxyPort` to 127.0.0.1:`port` (rejects on a refusal). */
function socks5To(proxyPort: number, port: number) {
  return SocksClient.createConnection({
    proxy: { host: '127.0.0.1', port: proxyPort, type: 5 },
    command: 'connect',
    destination: { host: '127.0.0.1', port },
    timeout: 5000,
  });
}

const DEFAULT_JOB = ['-P127.0.0.1:0/auto', 'SOCKSTAP=all', 'CACHE=do'];
const SEED_HTTP_FTP = ['-P127.0.0.1:0', 'SERVER=socks', 'CACHE=do', 'SOCKSTAP=http,ftp'];
const SEED_ALL = ['-P127.0.0.1:0', 'SERVER=socks', 'CACHE=do', 'SOCKSTAP=all'];

describe('a CONNECT that cannot reach its server gets the failure reply (SOCKSTAP=all CACHE=do)', () => {
  let proxy: TestProxy;
  before(async () => {
    proxy = await startProxy(DEFAULT_JOB);
  });
  after(async () => {
    await proxy.stop();
    proxy.cleanup();
  });

  // 443 is a TLS port: dialed first as a first guess, so the client hears the real outcome.
  const cases: Array<[string, string[], string, number | RegExp, string]> = [
    ['SOCKS5, closed port', ['--socks5'], 'https://127.0.0.1:443/', 97, 'ECONNREFUSED'],
    ['SOCKS5 (proxy resolves), unresolvable name', ['--socks5-hostname'], 'https://nothing.invalid:443/', 97, 'ENOTFOUND'],
    ['SOCKS4, closed port', ['--socks4'], 'https://127.0.0.1:443/', 97, 'ECONNREFUSED'],
    ['SOCKS4a, unresolvable name', ['--socks4a'], 'https://nothing.invalid:443/', 97, 'ENOTFOUND'],
    ['HTTP CONNECT, closed port', ['-p', '-x'], 'https://127.0.0.1:443/', /CONNECT tunnel failed, response 502/, 'ECONNREFUSED'],
    ['HTTP CONNECT, unresolvable name', ['-p', '-x'], 'https://nothing.invalid:443/', /CONNECT tunnel failed, response 502/, 'ENOTFOUND'],
  ];
  for (const [name, flags, url, expected, result] of cases) {
    test(name, async () => {
      const proxyArg = flags.includes('-x') ? `http://127.0.0.1:${proxy.port()}` : `127.0.0.1:${proxy.port()}`;
      const r = await curl([...flags, proxyArg, '-k', url]);
      if (typeof expected === 'number') assert.equal(r.code, expected, r.stderr);
      else assert.match(r.stderr, expected);
      const host = new URL(url).hostname;
      const rec = await eventually(
        () => proxy.sessions().find((s: Rec) => s.dst === `${host}:443` && s.result === result && !s.counted && (s.counted = true)) as Rec,
        `a record with ${result}`,
      );
      assert.equal(rec.result, result);
    });
  }

  test('the HTTP CONNECT access.log line says 502, not TCP_TUNNEL/200', async () => {
    await eventually(() => /TCP_TUNNEL\/502 .*CONNECT 127\.0\.0\.1:443/.test(proxy.readLog('access.log')), 'a TCP_TUNNEL/502 line');
    assert.doesNotMatch(proxy.readLog('access.log'), /TCP_TUNNEL\/200 .*CONNECT 127\.0\.0\.1:443/);
  });
});

for (const [job, args] of [
  ['the default job', DEFAULT_JOB],
  ['the seed line SOCKSTAP=http,ftp', SEED_HTTP_FTP],
  ['the seed line SOCKSTAP=all', SEED_ALL],
] as const) {
  describe(`a fresh HTTP hit through SOCKS opens no connection to the origin (${job})`, () => {
    let proxy: TestProxy;
    let origin: Origin;
    before(async () => {
      origin = await startOrigin((req, res) => {
        res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'max-age=300' });
        res.end(`page ${req.url}\n`);
      });
      proxy = await startProxy([...args]);
    });
    after(async () => {
      await proxy.stop();
      proxy.cleanup();
      await origin.close();
    });

    test('second fetch: TCP_HIT, origin accepted one connection', async () => {
      const url = origin.url('/fresh');
      const first = await curl(['--socks5-hostname', `127.0.0.1:${proxy.port()}`, url]);
      assert.equal(first.stdout.toString(), 'page /fresh\n', first.stderr);
      await eventually(() => proxy.readLog('access.log').includes('TCP_MISS/200'), 'the miss line');
      const accepted = origin.accepts;
      const second = await curl(['--socks5-hostname', `127.0.0.1:${proxy.port()}`, url]);
      assert.equal(second.stdout.toString(), 'page /fresh\n', second.stderr);
      await eventually(() => /TCP_(MEM_)?HIT\/200 .*\/fresh/.test(proxy.readLog('access.log')), 'a hit line');
      assert.equal(origin.accepts, accepted, 'the hit opened a connection to the origin');
    });
  });
}

describe('what a destination spoke is remembered (the default job)', () => {
  let proxy: TestProxy;
  before(async () => {
    proxy = await startProxy(DEFAULT_JOB);
  });
  after(async () => {
    await proxy.stop();
    proxy.cleanup();
  });

  const connect = (port: number) => socks5To(proxy.port(), port);

  test('a banner on a never-seen port is tapped; once it is learnt, a closed port there is REP 5; a reload forgets', async () => {
    const srv = await bannerServer('200 news.test NNTP service ready\r\n');
    const { socket } = await connect(srv.port);
    assert.match(await readUntil(socket, '\r\n'), /^200 news\.test/);
    socket.end('QUIT\r\n');
    await closed(socket);
    const rec = await eventually(() => proxy.sessions().find((s: Rec) => s.dst === `127.0.0.1:${srv.port}`) as Rec, 'the first record');
    assert.equal(rec.proto, 'nntp');
    assert.ok(rec.nntp, JSON.stringify(rec));
    const port = srv.port;
    await srv.close();

    // Known to be server-first: dialed before the reply, so the client hears the refusal.
    await assert.rejects(connect(port), /ConnectionRefused|rejected/i);
    await eventually(() => proxy.sessions().some((s: Rec) => s.dst === `127.0.0.1:${port}` && s.result === 'ECONNREFUSED'), 'the refusal record');

    // A reload forgets: never seen again, port guessed HTTP, cache-first: the door says yes,
    // and the late dial's failure is what the record keeps.
    await proxy.proxy.reload(loadConfig([...DEFAULT_JOB, `STATEDIR=${proxy.stateDir}`], { cwd: proxy.stateDir }));
    const after = await connect(port);
    await closed(after.socket);
    const records = await eventually(
      () => {
        const r = proxy.sessions().filter((s: Rec) => s.dst === `127.0.0.1:${port}` && s.result === 'ECONNREFUSED');
        return r.length >= 2 ? r : null;
      },
      'the second refusal record',
    );
    assert.equal(records.length, 2);
  });

  test('a silent client through HTTP CONNECT on a never-seen closed port: access.log says what became of it', async () => {
    const port = await closedPort();
    const socket = net.connect(proxy.port(), '127.0.0.1');
    socket.write(`CONNECT 127.0.0.1:${port} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`);
    const reply = await readUntil(socket, '\r\n\r\n');
    assert.match(reply, /^HTTP\/1\.1 200/);
    await closed(socket);
    await eventually(() => new RegExp(`TCP_TUNNEL_ABORTED/502 .*CONNECT 127\\.0\\.0\\.1:${port}`).test(proxy.readLog('access.log')), 'the aborted line');
    const rec = await eventually(() => proxy.sessions().find((s: Rec) => s.dst === `127.0.0.1:${port}`) as Rec, 'the record');
    assert.equal(rec.result, 'ECONNREFUSED');
  });
});

describe('STRATEGY=dial-first pins a rule to the real outcome', () => {
  let proxy: TestProxy;
  let port: number;
  before(async () => {
    port = await closedPort();
    proxy = await startProxy(['-P127.0.0.1:0/socks', 'CACHE=do', `SOCKSTAP=http:{127.0.0.1:${port}}::STRATEGY=dial-first`, 'SOCKSTAP=http']);
  });
  after(async () => {
    await proxy.stop();
    proxy.cleanup();
  });

  test('the pinned destination is refused at once (REP 5); another closed port is answered cache-first', async () => {
    await assert.rejects(socks5To(proxy.port(), port), /ConnectionRefused|rejected/i);
    const other = await closedPort();
    const { socket } = await socks5To(proxy.port(), other);
    await closed(socket);
  });
});

/** Per-request rules cannot be outwaited, split or bypassed with a stream the tap cannot read. */
for (const [job, args] of [
  ['SOCKSTAP=http', ['-P127.0.0.1:0/socks', 'SOCKSTAP=http']],
  ['the default job', DEFAULT_JOB],
] as const) {
  describe(`request rules hold however the request arrives (${job})`, () => {
    let proxy: TestProxy;
    let origin: Origin;
    let other: Origin;
    const raw: string[] = [];
    let rawServer: net.Server;
    let rawPort: number;
    before(async () => {
      origin = await startOrigin((req, res) => res.end(`origin served ${req.url}\n`));
      other = await startOrigin((req, res) => res.end(`other served ${req.url}\n`));
      rawServer = net.createServer((s) => {
        s.on('error', () => {});
        s.on('data', (d) => {
          raw.push(d.toString('latin1'));
          s.write(d);
        });
      });
      await new Promise<void>((r) => rawServer.listen(0, '127.0.0.1', r));
      rawPort = (rawServer.address() as net.AddressInfo).port;
      proxy = await startProxy([...args, `REJECT=http:{http://127.0.0.1:${origin.port}/secret*}:*`]);
    });
    after(async () => {
      await proxy.stop();
      proxy.cleanup();
      await origin.close();
      await other.close();
      await new Promise<void>((r) => rawServer.close(() => r()));
    });

    const open = async (port: number): Promise<net.Socket> => (await socks5To(proxy.port(), port)).socket;
    const head = (path: string, eol = '\r\n'): string => `GET ${path} HTTP/1.1${eol}Host: 127.0.0.1:${origin.port}${eol}Connection: close${eol}${eol}`;

    test('a request sent after the sniff window is refused 403', async () => {
      const s = await open(origin.port);
      await sleep(800);
      s.write(head('/secret/late'));
      const reply = await readUntil(s, 'refused');
      assert.match(reply, /^HTTP\/1\.1 403/);
      s.destroy();
      assert.ok(!origin.requests.some((r) => r.url.startsWith('/secret')), 'the origin saw the refused URL');
    });

    test('a request line split across the window is refused 403', async () => {
      const s = await open(origin.port);
      s.write('GET /sec');
      await sleep(800);
      s.write(head('/secret/split').slice('GET /sec'.length));
      const reply = await readUntil(s, 'refused');
      assert.match(reply, /^HTTP\/1\.1 403/);
      s.destroy();
      assert.ok(!origin.requests.some((r) => r.url.startsWith('/secret')), 'the origin saw the refused URL');
    });

    test('a request ending in bare LFs goes to the tap (400), never past it', async () => {
      const s = await open(origin.port);
      s.write(head('/secret/lf', '\n'));
      const reply = await readUntil(s, '\r\n\r\n');
      assert.match(reply, /^HTTP\/1\.1 400/);
      s.destroy();
      assert.ok(!origin.requests.some((r) => r.url.startsWith('/secret')), 'the origin saw the refused URL');
    });

    test('a stream the tap cannot read, to a destination with request rules, is refused and recorded', async () => {
      const s = await open(origin.port);
      s.write('\x00\x01 not a request at all\r\n');
      await closed(s);
      const rec = await eventually(
        () => proxy.sessions().find((x: Rec) => x.dst === `127.0.0.1:${origin.port}` && x.result === 'EPROTO') as Rec,
        'the refusal record',
      );
      assert.equal(rec.proto, 'raw');
      assert.match(proxy.readLog('sockstap.log'), /uninterpreted tunnel refused/);
    });

    test('the same stream to a destination no request rule names is relayed', async () => {
      const s = await open(rawPort);
      s.write('\x00\x01 not a request at all\r\n');
      const echoed = await readUntil(s, 'at all\r\n');
      assert.ok(echoed.includes('not a request at all'));
      s.destroy();
      assert.ok(raw.some((r) => r.includes('not a request at all')));
    });
  });
}

/**
 * The no-loss property on the late-dial path: cache-first (never-seen port under the default
 * job), the client silent past its share of the window, the server dialed late and sniffed.
 * Every byte arrives once and in order both ways, whatever the server says first.
 */
describe('no byte lost on the late-dial path (the default job)', () => {
  const SERVER_FIRST = ['220 ftp.test FTP ready\r\n', '+OK POP3 ready\r\n', '* OK IMAP4rev1 ready\r\n', '200 news ready\r\n', 'SSH-2.0-x\r\n', 'HELLO 42\r\n', ''];
  let proxy: TestProxy;
  before(async () => {
    proxy = await startProxy([...DEFAULT_JOB, 'TIMEOUT=sniff:60ms']);
  });
  after(async () => {
    await proxy.stop();
    proxy.cleanup();
  });

  test('24 seeded streams: banner or silence first, random bytes both ways, random chunks', async () => {
    const { rng, randomBytes } = await import('../helpers/random.js');
    for (let seed = 1; seed <= 24; seed++) {
      const r = rng(seed);
      const banner = SERVER_FIRST[Math.floor(r() * SERVER_FIRST.length)]!;
      const down = Buffer.concat([Buffer.from(banner), randomBytes(r, Math.floor(r() * 50_000))]);
      const up = randomBytes(r, 1 + Math.floor(r() * 50_000));
      const serverDelay = Math.floor(r() * 80);
      const got: Buffer[] = [];
      let serverDone!: () => void;
      const serverFinished = new Promise<void>((res) => (serverDone = res));
      const srv = net.createServer({ allowHalfOpen: true }, (s) => {
        s.on('error', () => {});
        s.on('data', (d: Buffer) => got.push(d));
        s.on('end', () => serverDone());
        setTimeout(() => {
          let i = 0;
          const step = (): void => {
            if (i >= down.length) return void s.end();
            const n = 1 + Math.floor(r() * 9000);
            s.write(down.subarray(i, i + n), step);
            i += n;
          };
          step();
        }, serverDelay);
      });
      await new Promise<void>((res) => srv.listen(0, '127.0.0.1', res));
      const port = (srv.address() as net.AddressInfo).port;
      const { socket } = await socks5To(proxy.port(), port);
      socket.allowHalfOpen = true;
      const chunks: Buffer[] = [];
      socket.on('data', (d: Buffer) => chunks.push(d));
      const ended = new Promise<void>((res) => socket.once('end', () => res()));
      // Silent past the client's share of the window (30 ms), so the server is dialed late.
      await sleep(60 + Math.floor(r() * 60));
      for (let i = 0; i < up.length; ) {
        const n = 1 + Math.floor(r() * 7000);
        socket.write(up.subarray(i, i + n));
        i += n;
      }
      socket.end();
      await Promise.all([ended, serverFinished]);
      assert.ok(Buffer.concat(chunks).equals(down), `seed ${seed}: server→client differs (banner ${JSON.stringify(banner)})`);
      assert.ok(Buffer.concat(got).equals(up), `seed ${seed}: client→server differs`);
      socket.destroy();
      await new Promise<void>((res) => srv.close(() => res()));
    }
  });
});

describe('a tapped tunnel in which nobody speaks', () => {
  test('waits for first bytes as long as it may idle, then ends as idle (TIMEOUT=idle:1s)', async () => {
    const srv = net.createServer((s) => s.on('error', () => {}));
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const port = (srv.address() as net.AddressInfo).port;
    const proxy = await startProxy(['-P127.0.0.1:0/socks', 'SOCKSTAP=all', 'TIMEOUT=idle:1s,sniff:50ms']);
    try {
      const { socket } = await socks5To(proxy.port(), port);
      socket.on('error', () => {});
      // Well past the sniff window the tunnel is still open and a late request is still sniffed.
      await sleep(300);
      assert.equal(socket.destroyed, false);
      await closed(socket);
      const rec = await eventually(() => proxy.sessions().find((s: Rec) => s.dst === `127.0.0.1:${port}`) as Rec, 'the record');
      assert.equal(rec.result, 'idle');
    } finally {
      await proxy.stop();
      proxy.cleanup();
      await new Promise<void>((r) => srv.close(() => r()));
    }
  });
});

describe('a client that half-closes without a byte', () => {
  test('its FIN reaches a server that waits for it, within the sniff window (not after TIMEOUT=idle)', async () => {
    const srv = net.createServer({ allowHalfOpen: true }, (s) => {
      s.on('error', () => {});
      s.on('end', () => s.end('bye after your FIN\n'));
      s.resume();
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const port = (srv.address() as net.AddressInfo).port;
    const proxy = await startProxy(['-P127.0.0.1:0/socks', 'SOCKSTAP=all', 'TIMEOUT=sniff:100ms,idle:60s']);
    try {
      const { socket } = await socks5To(proxy.port(), port);
      socket.allowHalfOpen = true;
      const got = readUntil(socket, 'bye', 5000);
      socket.end();
      assert.match(await got, /bye after your FIN/);
      socket.destroy();
    } finally {
      await proxy.stop();
      proxy.cleanup();
      await new Promise<void>((r) => srv.close(() => r()));
    }
  });
});

describe('a short first message of another protocol, after the window', () => {
  test('a one-byte keepalive is relayed at once where no request rule applies (not held for TIMEOUT=handshake)', async () => {
    const srv = net.createServer((s) => {
      s.on('error', () => {});
      s.on('data', (d) => s.write(d));
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const port = (srv.address() as net.AddressInfo).port;
    // Held until the verdict, the byte would wait 30 s; the echo is awaited for 10.
    const proxy = await startProxy(['-P127.0.0.1:0/socks', 'SOCKSTAP=all', 'CACHE=do', 'TIMEOUT=sniff:100ms,handshake:30s']);
    try {
      const { socket } = await socks5To(proxy.port(), port);
      await sleep(300);
      const echoed = readUntil(socket, 'p', 10_000);
      socket.write('p');
      assert.equal(await echoed, 'p');
      socket.destroy();
    } finally {
      await proxy.stop();
      proxy.cleanup();
      await new Promise<void>((r) => srv.close(() => r()));
    }
  });
});
