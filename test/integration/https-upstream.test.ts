/**
 * PROXY=https://[USER:PASS@]HOST:PORT (issue 19 item 3): an upstream HTTP proxy reached over TLS,
 * its certificate verified by default. The upstream is a second sockstap with an `https` door
 * (CERTFILE from a test CA, accounts); the first one trusts that CA through TLSCAFILE=. Without it
 * the tunnel fails (and the credentials are not sent); YAML `via: https://...` works the same.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { SocksClient } from 'socks';
import { loadConfig } from '../../src/config/load.js';
import { startEcho, type EchoServer } from '../helpers/origin.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';
import { testPki, type TestPki } from '../helpers/tls.js';

let pki: TestPki;
let echo: EchoServer;
let upstream: TestProxy;

before(async () => {
  pki = testPki();
  const { cert, key } = pki.issue(['localhost']);
  writeFileSync(join(pki.dir, 'up.pem'), Buffer.concat([cert, key]));
  echo = await startEcho();
  upstream = await startProxy(['-P127.0.0.1:0/https', `CERTFILE=${join(pki.dir, 'up.pem')}`, 'AUTHORIZER=-list{hop:hop-secret-pw}', 'RELAY=js']);
});
after(async () => {
  await upstream?.stop();
  upstream?.cleanup();
  await echo.close();
  pki.cleanup();
});

async function throughSocks(proxy: TestProxy): Promise<string> {
  const { socket } = await SocksClient.createConnection({
    proxy: { host: '127.0.0.1', port: proxy.port('socks'), type: 5 },
    command: 'connect',
    destination: { host: '127.0.0.1', port: echo.port },
    timeout: 15_000,
  });
  socket.write('through https hop');
  const got = await new Promise<string>((r) => socket.once('data', (d: Buffer) => r(d.toString())));
  socket.destroy();
  return got;
}

async function sessionCount(p: TestProxy, min: number): Promise<Array<Record<string, unknown>>> {
  for (let i = 0; i < 100 && p.sessions().length < min; i++) await new Promise((r) => setTimeout(r, 50));
  return p.sessions();
}

describe('PROXY=https://', () => {
  test('a SOCKS5 tunnel goes through the upstream reached over TLS, with credentials inside', async () => {
    const proxy = await startProxy(['-P127.0.0.1:0/socks', `PROXY=https://hop:hop-secret-pw@127.0.0.1:${upstream.port('http')}`, `TLSCAFILE=${pki.caFile}`, 'RELAY=js']);
    try {
      assert.equal(await throughSocks(proxy), 'through https hop');
      const [rec] = await sessionCount(proxy, 1);
      assert.equal(rec!.route, `https://127.0.0.1:${upstream.port('http')}`);
      const up = await sessionCount(upstream, 1);
      assert.equal(up.at(-1)!.user, 'hop', 'the upstream saw the credentials');
      assert.ok(!proxy.readLog('sockstap.log').includes('hop-secret-pw'));
    } finally {
      await proxy.stop();
      proxy.cleanup();
    }
  });

  test('verification is on by default: an upstream whose CA is not trusted is refused', async () => {
    const before = upstream.sessions().length;
    const proxy = await startProxy(['-P127.0.0.1:0/socks', `PROXY=https://hop:hop-secret-pw@127.0.0.1:${upstream.port('http')}`, 'RELAY=js']);
    try {
      await assert.rejects(throughSocks(proxy));
      for (let i = 0; i < 100 && !/self-signed|unable to verify|certificate/i.test(proxy.readLog('sockstap.log')); i++) await new Promise((r) => setTimeout(r, 50));
      assert.match(proxy.readLog('sockstap.log'), /https:\/\/127\.0\.0\.1:\d+: TLS: .*(certificate|self-signed)/i);
      await new Promise((r) => setTimeout(r, 200));
      assert.ok(!upstream.sessions().slice(before).some((s) => s.user === 'hop'), 'no credentials reached the unverified upstream');
    } finally {
      await proxy.stop();
      proxy.cleanup();
    }
  });

  test('YAML routes: via https://', async () => {
    const file = join(pki.dir, 'routes.yaml');
    writeFileSync(file, `routes:\n  - match: { dst: "*" }\n    via: "https://hop:hop-secret-pw@127.0.0.1:${upstream.port('http')}"\ntlscafile: ${pki.caFile}\n`);
    const proxy = await startProxy(['-f', file, '-P127.0.0.1:0/socks', 'RELAY=js']);
    try {
      assert.equal(await throughSocks(proxy), 'through https hop');
    } finally {
      await proxy.stop();
      proxy.cleanup();
    }
  });

  test('the parameter keeps its spelling and hides the password', () => {
    const c = loadConfig(['-P127.0.0.1:0', 'PROXY=https://u:p4ss@proxy.example:8443']);
    assert.equal(c.upstreams[0]!.source, 'PROXY=https://proxy.example:8443');
    assert.ok(c.upstreams[0]!.tls);
    assert.equal(loadConfig(['-P127.0.0.1:0', 'PROXY=proxy.example:3128']).upstreams[0]!.tls, undefined);
  });
});

describe('HTTP requests to an https:// upstream', () => {
  test('absolute-form requests of the HTTP door go to the upstream inside TLS', async () => {
    const { startOrigin, PAGE } = await import('../helpers/origin.js');
    const origin = await startOrigin();
    const proxy = await startProxy(['-P127.0.0.1:0/http', `PROXY=https://hop:hop-secret-pw@127.0.0.1:${upstream.port('http')}`, `TLSCAFILE=${pki.caFile}`]);
    try {
      const http = await import('node:http');
      const body = await new Promise<Buffer>((resolve, reject) => {
        http
          .get({ host: '127.0.0.1', port: proxy.port('http'), path: origin.url('/abs'), agent: false }, (res) => {
            const chunks: Buffer[] = [];
            res.on('data', (d: Buffer) => chunks.push(d));
            res.on('end', () => resolve(Buffer.concat(chunks)));
          })
          .on('error', reject);
      });
      assert.ok(body.equals(PAGE));
      for (let i = 0; i < 100 && !upstream.readLog('access.log').includes('/abs'); i++) await new Promise((r) => setTimeout(r, 50));
      assert.match(upstream.readLog('access.log'), /GET http:\/\/127\.0\.0\.1:\d+\/abs/);
    } finally {
      await proxy.stop();
      proxy.cleanup();
      await origin.close();
    }
  });
});
