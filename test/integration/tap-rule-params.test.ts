/**
 * Issue 12 item 3: every per-rule SOCKSTAP parameter applies to exactly the tunnels its rule
 * picks. One proxy as users run it (`SOCKSTAP=all CACHE=do`), preceded by one rule per parameter
 * that picks one origin port; for each parameter a tunnel to the picked origin and one to an
 * origin only `SOCKSTAP=all` picks must differ. (MAXSIZE is in smtp-tap.test.ts; TIMEOUT=drain,
 * which no tunnel can have of its own, is refused at start: test/unit/config.test.ts.)
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type http from 'node:http';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { SocksClient } from 'socks';
import { curl, startOrigin, type Origin } from '../helpers/origin.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';

const KiB = 1024;
const big = randomBytes(512 * KiB);
const huge = randomBytes(1024 * KiB);

/** Every origin answers the same: its name and path, in the ways the tests need. */
function handler(name: string) {
  return (req: http.IncomingMessage, res: http.ServerResponse): void => {
    const url = req.url ?? '/';
    if (url.startsWith('/etag')) {
      // No explicit freshness and no Last-Modified: only EXPIRE makes it fresh.
      if (req.headers['if-none-match'] === '"v1"') {
        res.writeHead(304, { etag: '"v1"' });
        res.end();
        return;
      }
      res.writeHead(200, { etag: '"v1"', 'content-type': 'text/plain' });
      res.end(`${name} etag\n`);
    } else if (url.startsWith('/cacheable')) {
      res.writeHead(200, { 'cache-control': 'max-age=3600', 'content-type': 'text/plain' });
      res.end(`${name} cacheable\n`);
    } else if (url.startsWith('/big')) {
      res.writeHead(200, { 'cache-control': 'no-store', 'content-length': big.length });
      res.end(big);
    } else if (url.startsWith('/huge')) {
      res.writeHead(200, { 'cache-control': 'no-store', 'content-length': huge.length });
      res.end(huge);
    } else {
      res.writeHead(200, { 'cache-control': 'no-store', 'content-type': 'text/plain' });
      res.end(`${name} ${url}\n`);
    }
  };
}

const NAMES = ['other', 'cache', 'expire', 'proxy', 'socks', 'mount', 'timeout', 'bandwidth', 'quota', 'reject', 'permit', 'permitOther', 'backend'] as const;
type Name = (typeof NAMES)[number];
const origins = {} as Record<Name, Origin>;
let proxy: TestProxy;
let upHttp: TestProxy;
let upSocks: TestProxy;

const at = (n: Name): string => `{127.0.0.1:${origins[n].port}}`;

before(async () => {
  for (const n of NAMES) origins[n] = await startOrigin(handler(n));
  upHttp = await startProxy(['-P127.0.0.1:0/http']);
  upSocks = await startProxy(['-P127.0.0.1:0/socks']);
  proxy = await startProxy([
    '-P127.0.0.1:0/auto',
    `SOCKSTAP=http:${at('cache')}::CACHE=no`,
    `SOCKSTAP=http:${at('expire')}::EXPIRE=1h`,
    `SOCKSTAP=http:${at('proxy')}::PROXY=127.0.0.1:${upHttp.port()}`,
    `SOCKSTAP=http:${at('socks')}::SOCKS=127.0.0.1:${upSocks.port()}`,
    `SOCKSTAP=http:${at('mount')}::MOUNT="/mnt/* http://127.0.0.1:${origins.backend.port}/static/*"`,
    `SOCKSTAP=http:${at('timeout')}::TIMEOUT=idle:1s`,
    `SOCKSTAP=http:${at('bandwidth')}::BANDWIDTH=256k:conn`,
    `SOCKSTAP=http:${at('quota')}::QUOTA=256k/day:all`,
    `SOCKSTAP=http:${at('reject')}::REJECT=*:*:*`,
    `SOCKSTAP=http:${at('permit')}::PERMIT=*:*:*`,
    'SOCKSTAP=all',
    'CACHE=do',
    // Refuses both permit origins; the `permit` rule's own PERMIT comes first for its tunnels.
    `REJECT=*:{127.0.0.1:${origins.permit.port},127.0.0.1:${origins.permitOther.port}}:*`,
  ]);
});

after(async () => {
  for (const p of [proxy, upHttp, upSocks]) {
    await p.stop();
    p.cleanup();
  }
  for (const n of NAMES) await origins[n].close();
});

const via = (): string[] => ['--socks5-hostname', `127.0.0.1:${proxy.port()}`];
const get = (n: Name, path: string, extra: string[] = []): ReturnType<typeof curl> => curl([...via(), ...extra, origins[n].url(path)]);

/** Requests an origin received for paths starting with `prefix`. */
const seen = (n: Name, prefix: string): number => origins[n].requests.filter((r) => r.url.startsWith(prefix)).length;

async function until(check: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (check()) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  assert.fail(`timed out waiting for ${what}`);
}

describe('per-rule SOCKSTAP parameters', () => {
  test('CACHE=no: the rule\'s tunnels are not cached, the others are', async () => {
    for (const n of ['cache', 'other'] as const) {
      for (let i = 0; i < 2; i++) assert.equal((await get(n, '/cacheable')).stdout.toString(), `${n} cacheable\n`);
    }
    assert.equal(seen('cache', '/cacheable'), 2);
    assert.equal(seen('other', '/cacheable'), 1);
  });

  test('EXPIRE=1h: a response without freshness is fresh for the rule\'s tunnels only', async () => {
    for (const n of ['expire', 'other'] as const) {
      for (let i = 0; i < 2; i++) assert.equal((await get(n, '/etag')).stdout.toString(), `${n} etag\n`);
    }
    // The rule's second request is a hit; the other tunnel revalidates (If-None-Match, 304).
    assert.equal(seen('expire', '/etag'), 1);
    assert.equal(seen('other', '/etag'), 2);
    await until(() => /TCP_(MEM_)?HIT\/200 \d+ GET http:\/\/127\.0\.0\.1:\d+\/etag/.test(proxy.readLog('access.log')), 'the TCP_HIT');
  });

  test('PROXY=: the rule\'s HTTP goes through the upstream HTTP proxy, the other\'s directly', async () => {
    assert.equal((await get('proxy', '/via-up')).stdout.toString(), 'proxy /via-up\n');
    assert.equal((await get('other', '/via-up')).stdout.toString(), 'other /via-up\n');
    await until(() => upHttp.readLog('access.log').includes(origins.proxy.url('/via-up')), 'the upstream access record');
    assert.ok(!upHttp.readLog('access.log').includes(origins.other.url('/via-up')));
  });

  test('SOCKS=: the rule\'s tunnels go through the upstream SOCKS proxy, the other\'s directly', async () => {
    assert.equal((await get('socks', '/via-socks')).stdout.toString(), 'socks /via-socks\n');
    assert.equal((await get('other', '/via-socks')).stdout.toString(), 'other /via-socks\n');
    const dst = (n: Name): string => `127.0.0.1:${origins[n].port}`;
    await until(() => upSocks.sessions().some((s) => s.dst === dst('socks')), 'the upstream session');
    assert.ok(!upSocks.sessions().some((s) => s.dst === dst('other')));
  });

  test('MOUNT=: the rule\'s /mnt/ goes to the backend, the other\'s stays on its origin', async () => {
    assert.equal((await get('mount', '/mnt/a.txt')).stdout.toString(), 'backend /static/a.txt\n');
    assert.equal((await get('other', '/mnt/a.txt')).stdout.toString(), 'other /mnt/a.txt\n');
    assert.equal(seen('mount', '/mnt/'), 0);
  });

  test('TIMEOUT=idle:1s: an idle keep-alive connection of the rule is closed, the other\'s stays', async () => {
    const open = async (n: Name): Promise<{ socket: net.Socket; closed: () => boolean }> => {
      const { socket } = await SocksClient.createConnection({
        proxy: { host: '127.0.0.1', port: proxy.port(), type: 5 },
        command: 'connect',
        destination: { host: '127.0.0.1', port: origins[n].port },
      });
      let closed = false;
      socket.on('close', () => (closed = true));
      socket.on('error', () => {});
      let text = '';
      await new Promise<void>((resolve) => {
        socket.on('data', (d: Buffer) => {
          text += d.toString();
          if (text.includes(`${n} /idle\n`)) resolve();
        });
        socket.write(`GET /idle HTTP/1.1\r\nHost: 127.0.0.1:${origins[n].port}\r\n\r\n`);
      });
      return { socket, closed: () => closed };
    };
    const picked = await open('timeout');
    const other = await open('other');
    await new Promise((r) => setTimeout(r, 2500));
    assert.equal(picked.closed(), true, 'the rule\'s idle connection is closed after 1 s');
    assert.equal(other.closed(), false, 'the other connection is still open');
    other.socket.destroy();
  });

  test('BANDWIDTH=256k:conn: the rule\'s download is shaped, the other\'s is not', async () => {
    const rate = async (n: Name): Promise<number> => {
      const r = await curl([...via(), '-o', '/dev/null', '-w', '%{size_download} %{time_pretransfer} %{time_total}', origins[n].url('/big')], 30_000);
      const [size = 0, start = 0, total = 0] = r.stdout.toString().split(' ').map(Number);
      assert.equal(size, big.length);
      return size / (total - start);
    };
    const shaped = await rate('bandwidth');
    const free = await rate('other');
    assert.ok(Math.abs(shaped / (256 * KiB) - 1) < 0.1, `the rule's tunnel ran at ${(shaped / KiB).toFixed(1)} KiB/s`);
    assert.ok(free > 4 * 256 * KiB, `the other tunnel ran at ${(free / KiB).toFixed(1)} KiB/s`);
  });

  test('QUOTA=256k/day:all: the rule\'s transfer is cut and the next refused, the other\'s completes', async () => {
    const cut = await get('quota', '/huge');
    assert.notEqual(cut.code, 0);
    assert.ok(cut.stdout.length < 512 * KiB, `${cut.stdout.length} bytes passed a 256 KiB quota`);
    const refused = await get('quota', '/after');
    assert.notEqual(refused.code, 0);
    assert.equal(seen('quota', '/after'), 0);
    const whole = await get('other', '/huge');
    assert.equal(whole.code, 0, whole.stderr);
    assert.ok(whole.stdout.equals(huge));
  });

  test('REJECT=: the rule\'s tunnels are refused, the others pass', async () => {
    const r = await get('reject', '/x');
    assert.notEqual(r.code, 0);
    assert.equal(seen('reject', '/'), 0);
    assert.equal((await get('other', '/x')).code, 0);
  });

  test('PERMIT=: the rule\'s own PERMIT comes before a global REJECT, for its tunnels only', async () => {
    assert.equal((await get('permit', '/x')).stdout.toString(), 'permit /x\n');
    const r = await get('permitOther', '/x');
    assert.notEqual(r.code, 0);
    assert.equal(seen('permitOther', '/'), 0);
  });
});
