/**
 * Issue 13, finding 6: the admin server.
 *
 * - DNS rebinding: a request whose Host (and Origin) is `evil.test:PORT` is refused 421, GET or POST;
 * - without ADMINAUTH, every POST needs the token that sockstap writes at first start to
 *   STATEDIR/admin.token (mode 0600, path in sockstap.log), as `Authorization: Bearer TOKEN`;
 *   the same token is read at the next start;
 * - 64 idle connections from one source do not lock the admin out.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync, statSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { curl } from '../helpers/origin.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';

interface Reply {
  status: number;
  body: string;
}

function request(port: number, method: string, path: string, headers: Record<string, string> = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (d: Buffer) => chunks.push(d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('admin hardening (finding 6)', () => {
  let proxy: TestProxy;
  let port: number;
  let token: string;
  before(async () => {
    proxy = await startProxy(['-P127.0.0.1:0/socks', 'ADMIN=127.0.0.1:0']);
    port = Number(new URL(proxy.proxy.adminUrl!).port);
    const file = join(proxy.stateDir, 'admin.token');
    token = existsSync(file) ? readFileSync(file, 'utf8').trim() : '';
  });
  after(async () => {
    await proxy.stop();
    proxy.cleanup();
  });

  test('the token file is mode 0600 and its path (never the token) is in sockstap.log', async () => {
    const file = join(proxy.stateDir, 'admin.token');
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.ok(token.length >= 32);
    // The log is written in batches: wait for the start lines.
    for (let i = 0; i < 100 && !proxy.readLog('sockstap.log').includes('"started"'); i++) await new Promise((r) => setTimeout(r, 50));
    const log = proxy.readLog('sockstap.log');
    assert.ok(log.includes(file), 'the path is logged');
    assert.ok(!log.includes(token), 'the token is not');
  });

  test('a rebound name is refused: Host = Origin = evil.test:PORT gets 421, GET or POST, token or not', async () => {
    const evil = { host: `evil.test:${port}`, origin: `http://evil.test:${port}` };
    assert.equal((await request(port, 'POST', '/api/reload', evil)).status, 421);
    assert.equal((await request(port, 'POST', '/api/reload', { ...evil, authorization: `Bearer ${token}` })).status, 421);
    assert.equal((await request(port, 'POST', '/api/sessions/x/close', evil)).status, 421);
    assert.equal((await request(port, 'GET', '/api/sessions', evil)).status, 421);
    assert.equal((await request(port, 'GET', '/api/stats', { host: `127.0.0.1:${port + 1}` })).status, 421);
  });

  test("the admin's own address, localhost and this host's name are its names", async () => {
    assert.equal((await request(port, 'GET', '/api/stats', { host: `127.0.0.1:${port}` })).status, 200);
    assert.equal((await request(port, 'GET', '/api/stats', { host: `localhost:${port}` })).status, 200);
    assert.equal((await request(port, 'GET', '/api/stats', { host: `LOCALHOST.:${port}` })).status, 200);
    assert.equal((await request(port, 'GET', '/api/stats', { host: `${hostname()}:${port}` })).status, 200, 'this host\'s name');
    assert.equal((await request(port, 'GET', '/api/stats', { host: `${hostname()}.evil.test:${port}` })).status, 421, 'not a longer name');
  });

  test('a POST without the token gets 401, with a wrong one 401, with the token 200', async () => {
    const none = await request(port, 'POST', '/api/reload');
    assert.equal(none.status, 401);
    assert.match(none.body, /Bearer/);
    assert.equal((await request(port, 'POST', '/api/reload', { authorization: 'Bearer not-the-token' })).status, 401);
    assert.equal((await request(port, 'POST', '/api/sessions/x/close')).status, 401);
    const ok = await request(port, 'POST', '/api/reload', { authorization: `Bearer ${token}` });
    assert.equal(ok.status, 200, ok.body);
    assert.equal((await request(port, 'POST', '/api/sessions/no-such/close', { authorization: `Bearer ${token}` })).status, 404);
  });

  test('curl with the token reloads', async () => {
    const r = await curl(['-sS', '-o', '/dev/null', '-w', '%{http_code}', '-X', 'POST', '-H', `Authorization: Bearer ${token}`, `http://127.0.0.1:${port}/api/reload`]);
    assert.equal(String(r.stdout), '200', r.stderr);
  });

  test('64 idle connections from one source do not lock the admin out', async () => {
    const idle: net.Socket[] = [];
    try {
      for (let i = 0; i < 64; i++) {
        const s = net.connect({ host: '127.0.0.1', port });
        s.on('error', () => {});
        await new Promise<void>((r) => s.once('connect', () => r()));
        idle.push(s);
      }
      const r = await curl(['-sS', '-o', '/dev/null', '-w', '%{http_code}', `http://127.0.0.1:${port}/api/stats`]);
      assert.equal(String(r.stdout), '200', r.stderr);
      const again = await request(port, 'GET', '/api/sessions');
      assert.equal(again.status, 200);
    } finally {
      for (const s of idle) s.destroy();
    }
  });

  test('the next start reads the same token', async () => {
    const second = await startProxy(['-P127.0.0.1:0/socks', 'ADMIN=127.0.0.1:0', `STATEDIR=${proxy.stateDir}`]);
    try {
      assert.equal(readFileSync(join(proxy.stateDir, 'admin.token'), 'utf8').trim(), token);
      const p = Number(new URL(second.proxy.adminUrl!).port);
      assert.equal((await request(p, 'POST', '/api/reload', { authorization: `Bearer ${token}` })).status, 200);
    } finally {
      await second.stop();
    }
  });
});

describe('admin with ADMINAUTH', () => {
  let proxy: TestProxy;
  let port: number;
  const basic = `Basic ${Buffer.from('ops:ops-pw').toString('base64')}`;
  before(async () => {
    proxy = await startProxy(['-P127.0.0.1:0/socks', 'ADMIN=127.0.0.1:0', 'ADMINAUTH=-list{ops:ops-pw}']);
    port = Number(new URL(proxy.proxy.adminUrl!).port);
  });
  after(async () => {
    await proxy.stop();
    proxy.cleanup();
  });

  test('the credentials or the token may POST; nothing else', async () => {
    const token = readFileSync(join(proxy.stateDir, 'admin.token'), 'utf8').trim();
    assert.equal((await request(port, 'POST', '/api/reload', { authorization: basic })).status, 200);
    assert.equal((await request(port, 'POST', '/api/reload', { authorization: `Bearer ${token}` })).status, 200);
    assert.equal((await request(port, 'POST', '/api/reload')).status, 401);
    assert.equal((await request(port, 'GET', '/api/stats')).status, 401);
    assert.equal((await request(port, 'POST', '/api/reload', { authorization: basic, host: `evil.test:${port}` })).status, 421);
  });
});
