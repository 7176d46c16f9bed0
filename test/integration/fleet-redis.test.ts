/**
 * REDIS=: three sockstap nodes (in-process instances, each its own STATEDIR) on one real Debian
 * redis-server started here on a free loopback port. MAXIMA=peruser holds across the nodes (and
 * a node's counts are given back when its connections close), a user's BANDWIDTH holds within
 * 10 % fleet-wide over three connections on three nodes, a user's QUOTA used up on one node is
 * refused on another, and through a real haproxy (`mode tcp`, round robin over the three nodes)
 * a user's quota is cut at its limit whichever node serves (a node killed with -9:
 * fleet-redis-kill.test.ts); with Redis stopped mid-test the nodes keep serving (sockstap.log and
 * /metrics say so) and push the usage they counted meanwhile when it returns.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { freePort, killChild, waitForPort } from '../helpers/dante.js';
import { counter, eventually, MiB, sleep, startSender, type Endless } from '../helpers/fleet.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';
import { redisMissing, startRedis, type TestRedis } from '../helpers/redis.js';
import { socks5UserPass } from '../helpers/socks5-by-hand.js';

const missing = redisMissing();
const WINDOW_MS = 6_000;

/** `p`, or a rejection naming `what` after `ms`. */
function within<T>(ms: number, p: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} took longer than ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

describe('a fleet on one Redis', { skip: missing ?? false }, () => {
  let redis: TestRedis;
  let endless: Endless;
  let nodes: TestProxy[] = [];
  let client: Redis;

  before(async () => {
    redis = await startRedis();
    endless = await startSender();
    const args = [
      '-P127.0.0.1:0/socks',
      'AUTHORIZER=-list{alice:a,bob:b,carol:c,dave:d,erin:e,frank:f}',
      'MAXIMA=peruser:2',
      'BANDWIDTH=1m:user:bob',
      'QUOTA=1m/day:user:carol',
      'QUOTA=100m/day:user:dave',
      'QUOTA=1m/day:user:frank',
      `REDIS=${redis.url}`,
      // haproxy below dials the nodes from 127.0.0.2 with send-proxy-v2; every other client is 127.0.0.1.
      'PROXYPROTOCOL=127.0.0.2',
    ];
    nodes = [await startProxy([...args, 'ADMIN=127.0.0.1:0']), await startProxy(args), await startProxy(args)];
    client = new Redis({ port: redis.port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 1 });
    client.on('error', () => {});
    await client.connect();
  });

  after(async () => {
    client?.disconnect();
    for (const n of nodes) await n.stop();
    for (const n of nodes) n.cleanup();
    endless?.close();
    await redis?.cleanup();
  });

  /** Bytes Redis holds for a quota scope (both directions, every hour). */
  async function usedInRedis(scope: string): Promise<number> {
    const h = await client.hgetall(`sockstap:quota:${scope}`);
    return Object.values(h).reduce((n, v) => n + Number(v), 0);
  }

  test('MAXIMA=peruser:2 holds across nodes, and a closed connection frees its count', async () => {
    const [a, b, c] = nodes as [TestProxy, TestProxy, TestProxy];
    const first = await socks5UserPass(a.port(), 'alice', 'a', endless.port);
    const second = await socks5UserPass(b.port(), 'alice', 'a', endless.port);
    assert.equal(first.rep, 0);
    assert.equal(second.rep, 0);
    // Each node renews its lease every 250 ms and reads the others' then.
    await sleep(800);
    const third = await socks5UserPass(c.port(), 'alice', 'a', endless.port);
    assert.notEqual(third.rep, 0, 'a third connection of alice on a third node is refused');
    third.socket.destroy();
    await eventually('the refusal in sockstap.log', () => /MAXIMA=peruser/.test(c.readLog('sockstap.log')));
    first.socket.destroy();
    await sleep(800);
    const again = await socks5UserPass(c.port(), 'alice', 'a', endless.port);
    assert.equal(again.rep, 0, 'the count node a held was given back');
    again.socket.destroy();
    second.socket.destroy();
  });

  test('BANDWIDTH=1m:user:bob holds within 10 % over three connections on three nodes', async (t) => {
    const conns = await Promise.all(nodes.map((n) => socks5UserPass(n.port(), 'bob', 'b', endless.port)));
    for (const x of conns) assert.equal(x.rep, 0);
    const counts = conns.map((x) => counter(x.socket));
    await sleep(1000);
    const start = counts.map((x) => x.bytes());
    const t0 = performance.now();
    await sleep(WINDOW_MS);
    const elapsed = (performance.now() - t0) / 1000;
    const moved = counts.map((x, i) => x.bytes() - start[i]!);
    for (const x of conns) x.socket.destroy();
    const rate = moved.reduce((s, n) => s + n, 0) / elapsed;
    t.diagnostic(`bob fleet-wide: ${(rate / MiB).toFixed(3)} MiB/s (${moved.map((n) => (n / elapsed / MiB).toFixed(2)).join(' + ')}) for a limit of 1 MiB/s`);
    assert.ok(rate > 0.9 * MiB && rate < 1.1 * MiB, `fleet rate ${rate} B/s is not within 10 % of 1 MiB/s`);
    for (const n of moved) assert.ok(n > 0.1 * MiB * elapsed, 'every node moves its share');
  });

  test('QUOTA=1m/day:user:carol used up through one node is refused on the others', async (t) => {
    const [a, b, c] = nodes as [TestProxy, TestProxy, TestProxy];
    const x = await socks5UserPass(a.port(), 'carol', 'c', endless.port);
    assert.equal(x.rep, 0);
    const got = counter(x.socket);
    await got.closed;
    t.diagnostic(`carol got ${got.bytes()} bytes through node a before the cut (quota 1 MiB)`);
    assert.ok(got.bytes() >= 0.9 * MiB && got.bytes() <= 1.1 * MiB, `cut at ${got.bytes()} bytes`);
    await eventually('carol usage in Redis', async () => (await usedInRedis('user:carol')) >= MiB);
    await sleep(600);
    for (const n of [b, c]) {
      const y = await socks5UserPass(n.port(), 'carol', 'c', endless.port);
      assert.notEqual(y.rep, 0, 'carol is refused on another node');
      y.socket.destroy();
      await eventually('the refusal in sockstap.log', () => /quota 1m\/day:user:carol used up/.test(n.readLog('sockstap.log')));
    }
    const status = b.proxy.quotaStatus().find((s) => s.scope === 'user:carol');
    assert.ok(status && status.usedBytes >= MiB, 'node b shows the fleet usage');
  });

  test('behind haproxy (mode tcp, send-proxy-v2, round robin over the three nodes) a quota is cut at its limit whichever node serves, and the records name the real client', { skip: spawnSync('sh', ['-c', 'command -v haproxy'], { stdio: 'ignore' }).status === 0 ? false : 'haproxy is not installed' }, async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'sockstap-haproxy-'));
    const port = await freePort();
    const cfg = join(dir, 'haproxy.cfg');
    writeFileSync(
      cfg,
      [
        'global',
        '  maxconn 100',
        'defaults',
        '  mode tcp',
        '  timeout connect 5s',
        '  timeout client 60s',
        '  timeout server 60s',
        'frontend socks',
        `  bind 127.0.0.1:${port}`,
        '  default_backend nodes',
        'backend nodes',
        '  balance roundrobin',
        ...nodes.map((n, i) => `  server n${i + 1} 127.0.0.1:${n.port()} source 127.0.0.2 send-proxy-v2`),
        '',
      ].join('\n'),
    );
    const haproxy = spawn('haproxy', ['-db', '-f', cfg], { stdio: 'ignore' });
    const sized = await startSender(256 * 1024);
    try {
      await waitForPort(port, '127.0.0.1', 10_000, haproxy);
      let total = 0;
      let served = 0;
      for (let i = 0; i < 12; i++) {
        // Bounded, so a stuck connection fails here with what it was doing, not as the file's timeout.
        const x = await within(15_000, socks5UserPass(port, 'frank', 'f', sized.port, '127.0.0.3'), `the SOCKS5 handshake of connection ${i + 1} through haproxy`);
        if (x.rep !== 0) {
          x.socket.destroy();
          break;
        }
        served++;
        const got = counter(x.socket);
        await within(15_000, got.closed, `the end of connection ${i + 1} through haproxy`).catch((err: unknown) => {
          x.socket.destroy();
          throw err;
        });
        total += got.bytes();
        // Usage is pushed within 250 ms and every node reads the fleet's total back then.
        await sleep(800);
      }
      t.diagnostic(`frank through haproxy: ${served} connections served, ${total} bytes in all, for a quota of 1 MiB`);
      assert.ok(served >= 4 && served <= 5, `${served} connections were served`);
      assert.ok(total >= MiB && total <= 1.1 * MiB, `${total} bytes passed a 1 MiB quota`);
      const refusedOn = nodes.filter((n) => /quota 1m\/day:user:frank used up/.test(n.readLog('sockstap.log'))).length;
      assert.ok(refusedOn >= 1);
      // The PROXY header named the client: every node that served frank recorded 127.0.0.3, not haproxy's 127.0.0.2.
      await eventually('the records of frank', () => nodes.flatMap((n) => n.sessions()).filter((r) => r.user === 'frank').length >= served || null, 5_000);
      const clients = new Set(nodes.flatMap((n) => n.sessions()).filter((r) => r.user === 'frank').map((r) => String(r.client).replace(/:\d+$/, '')));
      assert.deepEqual([...clients], ['127.0.0.3'], `frank's records name ${[...clients].join(', ')}`);
      assert.ok(nodes.filter((n) => n.sessions().some((r) => r.user === 'frank')).length >= 2, 'round robin reached several nodes');
    } finally {
      sized.close();
      await killChild(haproxy);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('with Redis stopped the nodes keep serving, say so, and push the usage when it returns', async (t) => {
    const [a, b] = nodes as [TestProxy, TestProxy];
    const before = await usedInRedis('user:dave');
    await client.save();
    await redis.stop();
    await eventually('the outage in sockstap.log', () => /redis unreachable; serving with the last known limits/.test(a.readLog('sockstap.log')));
    const metrics = (): Promise<string> =>
      new Promise((resolve, reject) => {
        http
          .get(new URL('metrics', a.proxy.adminUrl!), (res) => {
            let body = '';
            res.on('data', (d: Buffer) => (body += d.toString()));
            res.on('end', () => resolve(body));
          })
          .on('error', reject);
      });
    const down = await metrics();
    assert.match(down, /^sockstap_redis_up 0$/m);
    const failures = Number(/^sockstap_redis_failures_total (\d+)$/m.exec(down)?.[1] ?? 0);
    assert.ok(failures > 0, 'failures are counted');
    // dave downloads 2 MiB through node a while Redis is away.
    const sized = await startSender(2 * MiB);
    try {
      const x = await socks5UserPass(a.port(), 'dave', 'd', sized.port);
      assert.equal(x.rep, 0, 'node a serves without Redis');
      const got = counter(x.socket);
      await got.closed;
      assert.equal(got.bytes(), 2 * MiB);
    } finally {
      sized.close();
    }
    await eventually('unflushed usage in /metrics', async () => /^sockstap_redis_unflushed_bytes [1-9]\d*$/m.test(await metrics()));
    await redis.start();
    await eventually('the return in sockstap.log', () => /redis reachable again; usage pushed/.test(a.readLog('sockstap.log')), 15_000);
    const pushed = await eventually('dave usage pushed', async () => {
      const n = await usedInRedis('user:dave').catch(() => 0);
      return n - before >= 2 * MiB ? n - before : 0;
    }, 15_000);
    t.diagnostic(`pushed after the outage: ${pushed} bytes of dave's usage counted during the outage (2 MiB relayed)`);
    assert.match(await metrics(), /^sockstap_redis_up 1$/m);
    await eventually('node b sees dave usage', () => (b.proxy.quotaStatus().find((s) => s.scope === 'user:dave')?.usedBytes ?? 0) >= 2 * MiB);
  });
});
