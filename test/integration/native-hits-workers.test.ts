/**
 * The native hit path with WORKERS=2: each worker's relay thread answers the hits it was granted,
 * and an entry one worker invalidates (an unsafe request through it) is never answered from an
 * old copy by the other's thread: the other worker's cache sees the shared index's change within
 * milliseconds (native/hits.ts polls while objects are held) and drops its grants.
 * The CLI as a child process, a real origin and curl on loopback.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { curl } from '../helpers/origin.js';
import { runCli, freeFixedPort } from '../helpers/process.js';

/**
 * The addon is built on Linux only (binding.gyp); there these tests always run, and a missing or
 * broken addon fails them rather than skipping them.
 */
const LINUX_ONLY = process.platform !== 'linux' && 'the native addon is built on Linux only (binding.gyp)';

let dir: string;
let origin: http.Server;
let originPort = 0;
let version = 1;
let gets = 0;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sockstap-native-workers-'));
  origin = http.createServer((req, res) => {
    if (req.method === 'POST') {
      req.resume();
      version++;
      res.writeHead(200, { 'cache-control': 'no-store', 'content-length': 2 });
      res.end('ok');
      return;
    }
    gets++;
    const body = Buffer.from(`version ${version}\n`.repeat(200));
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': body.length, 'cache-control': 'max-age=3600', date: new Date().toUTCString() });
    res.end(body);
  });
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
  originPort = (origin.address() as AddressInfo).port;
});
after(async () => {
  origin.closeAllConnections();
  await new Promise((r) => origin.close(r));
  rmSync(dir, { recursive: true, force: true });
});

test('WORKERS=2: hits answered by both threads; an invalidation through one worker reaches the other thread at once', { skip: LINUX_ONLY }, async () => {
  const port = await freeFixedPort();
  const p = runCli([`-P127.0.0.1:${port}/http`, 'WORKERS=2', 'CACHE=do', 'ADMIN=127.0.0.1:0', `STATEDIR=${join(dir, 'state')}`]);
  try {
    const a = await p.waitFor(/admin on (http:\/\/\S+\/) for 2 workers/);
    await p.waitFor(/2 workers ready/, 60_000);
    const url = `http://127.0.0.1:${originPort}/doc`;
    // Each curl is one connection with four requests: a hit in whichever worker took it grants
    // that worker's thread the next connection's requests.
    const fetchAll = async (): Promise<string[]> => {
      const c = await curl(['-s', '-x', `http://127.0.0.1:${port}`, url, url, url, url], 30_000);
      assert.equal(c.code, 0);
      return c.stdout.toString().split('\n').filter(Boolean);
    };
    for (let i = 0; i < 12; i++) for (const line of await fetchAll()) assert.equal(line, 'version 1');
    assert.equal(gets, 1, 'one store for both workers');
    const metric = async (): Promise<number> => {
      const text = await (await fetch(`${a[1]}metrics`)).text();
      return Number(/^sockstap_native_cache_hits_total (\d+)/m.exec(text)?.[1] ?? 0);
    };
    let native = 0;
    for (let i = 0; i < 50 && native === 0; i++) {
      native = await metric();
      if (native === 0) await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(native > 0, 'the threads answered some');
    // Invalidate through whichever worker takes the POST, then read through both.
    const post = await curl(['-s', '-x', `http://127.0.0.1:${port}`, '-d', 'x', url], 30_000);
    assert.equal(post.stdout.toString(), 'ok');
    await new Promise((r) => setTimeout(r, 100));
    for (let i = 0; i < 12; i++) for (const line of await fetchAll()) assert.equal(line, 'version 2', 'no old copy from either thread');
  } finally {
    p.kill('SIGTERM');
    await p.exited;
  }
});
