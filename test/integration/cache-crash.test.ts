/**
 * kill -9 in the middle of a large cached download, then a restart on the same STATEDIR: the
 * partial response is never served from the cache. The origin is stopped before the second fetch,
 * so anything but an error page would have come from a partial entry.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { curl } from '../helpers/origin.js';
import { runCli } from '../helpers/process.js';

const SIZE = 64 * 1024 * 1024;
let dir: string;
let origin: http.Server;
let originPort = 0;
let sent = 0;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sockstap-crash-'));
  // A large cacheable body, written slowly enough that the kill lands in the middle.
  origin = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': SIZE, 'cache-control': 'max-age=3600' });
    const chunk = Buffer.alloc(256 * 1024, 'z');
    let left = SIZE;
    const pump = (): void => {
      if (left <= 0) return void res.end();
      left -= chunk.length;
      sent += chunk.length;
      res.write(chunk);
      setTimeout(pump, 5);
    };
    pump();
  });
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
  originPort = (origin.address() as net.AddressInfo).port;
});
after(async () => {
  origin.closeAllConnections();
  await new Promise((r) => origin.close(r));
  rmSync(dir, { recursive: true, force: true });
});

describe('cache and kill -9', () => {
  test('a download cut by kill -9 leaves no entry that is served after restart', async () => {
    const args = ['-P127.0.0.1:0/socks', 'CACHE=do', 'SOCKSTAP=http', `STATEDIR=${dir}`];
    const first = runCli(args);
    const m = await first.waitFor(/socks door on 127\.0\.0\.1:(\d+)/);
    const url = `http://127.0.0.1:${originPort}/big.bin`;
    const download = curl(['--socks5-hostname', `127.0.0.1:${m[1]}`, '-o', '/dev/null', url], 60_000);
    // Wait until a good part (but not all) of the body went through, then kill -9.
    for (let i = 0; i < 400 && sent < SIZE / 4; i++) await new Promise((r) => setTimeout(r, 25));
    assert.ok(sent > 0 && sent < SIZE, `sent ${sent}`);
    first.kill('SIGKILL');
    await first.exited;
    const cut = await download;
    assert.notEqual(cut.code, 0, 'the download was not cut');

    // The origin goes away: only the cache could answer now.
    origin.closeAllConnections();
    await new Promise((r) => origin.close(r));
    const second = runCli(args);
    try {
      const m2 = await second.waitFor(/socks door on 127\.0\.0\.1:(\d+)/);
      const r = await curl(['--socks5-hostname', `127.0.0.1:${m2[1]}`, '-o', '/dev/null', '-w', '%{http_code} %{size_download}', url]);
      const [status, size] = r.stdout.toString().split(' ');
      assert.notEqual(status, '200', `a partial entry was served: ${r.stdout}`);
      assert.ok(Number(size) < SIZE / 2 || status !== '200');
      assert.match(status!, /^50[24]$/);
    } finally {
      second.kill('SIGTERM');
      await second.exited;
      // Let after() close a server that is already closed without failing.
      origin = http.createServer();
      await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
    }
  });
});
