/**
 * REDIS=: a node killed with -9 (a child process) while it holds two MAXIMA=peruser:2
 * connections of one user and relays another user's download: its lease expires (3 s) and the
 * other node (in-process) admits the first user again; the quota usage Redis holds for the
 * download lacks at most one second of its rate (usage is pushed every 250 ms).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { freePort } from '../helpers/dante.js';
import { counter, eventually, MiB, sleep, startSender, type Endless } from '../helpers/fleet.js';
import { runCli } from '../helpers/process.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';
import { redisMissing, startRedis, type TestRedis } from '../helpers/redis.js';
import { socks5UserPass } from '../helpers/socks5-by-hand.js';

const missing = redisMissing();

describe('a fleet node killed with -9', { skip: missing ?? false }, () => {
  let redis: TestRedis;
  let endless: Endless;
  let node: TestProxy;
  let client: Redis;
  let dir: string;

  before(async () => {
    redis = await startRedis();
    endless = await startSender();
    dir = mkdtempSync(join(tmpdir(), 'sockstap-node-'));
    node = await startProxy(['-P127.0.0.1:0/socks', 'AUTHORIZER=-list{erin:e,gina:g}', 'MAXIMA=peruser:2', 'QUOTA=1g/day:user:gina', 'BANDWIDTH=1m:user:gina', `REDIS=${redis.url}`]);
    client = new Redis({ port: redis.port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 1 });
    client.on('error', () => {});
    await client.connect();
  });

  after(async () => {
    client?.disconnect();
    await node?.stop();
    node?.cleanup();
    endless?.close();
    await redis?.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  test('frees its MAXIMA counts when its lease expires and loses at most a second of quota usage', async (t) => {
    const port = await freePort();
    const child = runCli([`-P127.0.0.1:${port}/socks`, `STATEDIR=${dir}`, 'AUTHORIZER=-list{erin:e,gina:g}', 'MAXIMA=peruser:2', 'QUOTA=1g/day:user:gina', 'BANDWIDTH=1m:user:gina', `REDIS=${redis.url}`]);
    try {
      await child.waitFor(/ready: socks door/, 90_000);
      const held = [await socks5UserPass(port, 'erin', 'e', endless.port), await socks5UserPass(port, 'erin', 'e', endless.port)];
      for (const x of held) assert.equal(x.rep, 0);
      const download = await socks5UserPass(port, 'gina', 'g', endless.port);
      assert.equal(download.rep, 0);
      const got = counter(download.socket);
      await sleep(3000);
      const refused = await socks5UserPass(node.port(), 'erin', 'e', endless.port);
      assert.notEqual(refused.rep, 0, "the child node holds both of erin's connections");
      refused.socket.destroy();
      child.kill('SIGKILL');
      await child.exited;
      const t0 = Date.now();
      await got.closed;
      const back = await eventually('erin admitted again', async () => {
        const x = await socks5UserPass(node.port(), 'erin', 'e', endless.port);
        if (x.rep === 0) return x;
        x.socket.destroy();
        await sleep(200);
        return null;
      });
      t.diagnostic(`the killed node's counts were freed ${Date.now() - t0} ms after kill -9 (lease 3 s)`);
      back.socket.destroy();
      for (const x of held) x.socket.destroy();
      const h = await client.hgetall('sockstap:quota:user:gina');
      const stored = Object.values(h).reduce((n, v) => n + Number(v), 0);
      const lost = got.bytes() - stored;
      t.diagnostic(`gina received ${got.bytes()} bytes at 1 MiB/s; Redis holds ${stored}: ${lost} bytes (${(lost / MiB).toFixed(2)} s of the rate) lost with the node`);
      assert.ok(stored > 0 && lost <= MiB, `${lost} bytes lost`);
    } finally {
      child.kill('SIGKILL');
    }
  });
});
