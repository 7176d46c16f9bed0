/**
 * BANDWIDTH= and QUOTA= on intercepted TLS (issue 15): the TLS session sockstap terminates reads
 * and writes the client connection through its shaping hooks (net/shaped-feed.ts), so an HTTPS
 * download through interception is held to BANDWIDTH=…:conn, cut by QUOTA=, and the session's
 * byte counts are the connection's (TLS records included). curl through SOCKS5 with --cacert.
 * Rates are curl's own (size_download / time_total); the bucket's burst is 50 ms.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { startProxy, type TestProxy } from '../helpers/proxy.js';
import { testPki, type TestPki } from '../helpers/tls.js';

const KiB = 1024;
const SIZE = 3 * 1024 * KiB;
const BODY = Buffer.alloc(SIZE, 0x61);

let pki: TestPki;
let origin: https.Server;
let port = 0;

before(async () => {
  pki = testPki();
  const { key, cert } = pki.issue(['localhost']);
  origin = https.createServer({ key, cert }, (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': BODY.length, 'cache-control': 'no-store' });
    res.end(BODY);
  });
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
  port = (origin.address() as AddressInfo).port;
});
after(async () => {
  origin.closeAllConnections();
  await new Promise<void>((r) => origin.close(() => r()));
  pki.cleanup();
});

function curl(proxy: TestProxy): Promise<{ code: number; size: number; seconds: number; issuer: string }> {
  const ca = join(proxy.stateDir, 'ca', 'ca.pem');
  return new Promise((resolve) => {
    execFile(
      'curl',
      ['-sS', '-o', '/dev/null', '--cacert', ca, '--socks5-hostname', `127.0.0.1:${proxy.port('socks')}`, '--max-time', '60',
        '-w', '%{size_download} %{time_total} %{certs}', '--http1.1', `https://localhost:${port}/big`],
      { timeout: 70_000, maxBuffer: 1 << 20 },
      (err, stdout) => {
        const [size, seconds] = stdout.split(' ');
        const issuer = /Issuer:[^\n]*/.exec(stdout)?.[0] ?? '';
        resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, size: Number(size), seconds: Number(seconds), issuer });
      },
    );
  });
}

test('BANDWIDTH=512k:conn holds an intercepted HTTPS download to 512 KiB/s; the session counts the connection', async (t) => {
  const proxy = await startProxy(['-P127.0.0.1:0/socks', 'SOCKSTAP=tls', 'STLS=mitm', `TLSCAFILE=${pki.caFile}`, 'BANDWIDTH=512k:conn']);
  try {
    const r = await curl(proxy);
    assert.equal(r.code, 0);
    assert.equal(r.size, SIZE);
    const rate = r.size / r.seconds / KiB;
    t.diagnostic(`${r.size} B in ${r.seconds.toFixed(2)} s: ${rate.toFixed(1)} KiB/s (limit 512)`);
    assert.ok(Math.abs(rate - 512) <= 0.15 * 512, `rate ${rate.toFixed(1)} KiB/s`);
    await proxy.stop();
    const s = proxy.sessions().find((x) => x.proto === 'tls' || x.tls);
    assert.ok(s, 'a session record');
    assert.equal((s.tls as { intercepted: boolean }).intercepted, true);
    const down = s.bytesDown as number;
    // The body, its TLS records and the handshake: a little more than the body, never less.
    assert.ok(down >= SIZE && down <= SIZE * 1.01 + 16 * KiB, `bytesDown ${down}`);
    assert.ok((s.bytesUp as number) > 0);
  } finally {
    await proxy.stop();
    proxy.cleanup();
  }
});

test('QUOTA=1m/day:all cuts an intercepted HTTPS download at 1 MiB', async () => {
  const proxy = await startProxy(['-P127.0.0.1:0/socks', 'SOCKSTAP=tls', 'STLS=mitm', `TLSCAFILE=${pki.caFile}`, 'QUOTA=1m/day:all']);
  try {
    const r = await curl(proxy);
    assert.notEqual(r.code, 0, 'curl sees the cut');
    assert.ok(r.size < 1024 * KiB + 128 * KiB, `curl got ${r.size} B`);
    await proxy.stop();
    const s = proxy.sessions().find((x) => x.tls);
    assert.ok(s, 'a session record');
    assert.equal(s.result, 'EQUOTA');
    const down = s.bytesDown as number;
    // One chunk (64 KiB) of overshoot at most, as for a relayed tunnel.
    assert.ok(down >= 1024 * KiB && down <= 1024 * KiB + 80 * KiB, `bytesDown ${down}`);
  } finally {
    await proxy.stop();
    proxy.cleanup();
  }
});
