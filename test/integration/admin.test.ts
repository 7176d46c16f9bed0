/**
 * The admin endpoint of the foundation: the live page, /api/stats, /api/sessions, closing a live
 * session, reloading, and ADMINAUTH.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { SocksClient } from 'socks';
import { startEcho, type EchoServer } from '../helpers/origin.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';

let echo: EchoServer;
let proxy: TestProxy;
let base = '';
const auth = { authorization: `Basic ${Buffer.from('admin:admin-secret').toString('base64')}` };

before(async () => {
  echo = await startEcho();
  proxy = await startProxy(['-P127.0.0.1:0/socks', 'ADMIN=127.0.0.1:0', 'ADMINAUTH=-list{admin:admin-secret}']);
  base = proxy.proxy.adminUrl!;
});
after(async () => {
  await proxy.stop();
  proxy.cleanup();
  await echo.close();
});

describe('admin endpoint', () => {
  test('refuses without ADMINAUTH credentials', async () => {
    const r = await fetch(base + 'api/stats');
    assert.equal(r.status, 401);
    assert.match(r.headers.get('www-authenticate') ?? '', /Basic/);
  });

  test('serves the page', async () => {
    const r = await fetch(base, { headers: auth });
    assert.equal(r.status, 200);
    assert.match(await r.text(), /<title>sockstap<\/title>/);
  });

  test('lists a live tunnel with its bytes, closes it on request, counts it', async () => {
    const { socket } = await SocksClient.createConnection({
      proxy: { host: '127.0.0.1', port: proxy.port(), type: 5 },
      command: 'connect',
      destination: { host: '127.0.0.1', port: echo.port },
    });
    const closed = new Promise<void>((r) => socket.once('close', () => r()));
    socket.on('error', () => {});
    await new Promise<void>((resolve) => {
      socket.once('data', () => resolve());
      socket.write('hello admin');
    });
    const sessions = (await (await fetch(base + 'api/sessions', { headers: auth })).json()) as Array<Record<string, unknown>>;
    const live = sessions.find((s) => s.dst === `127.0.0.1:${echo.port}`);
    assert.ok(live, JSON.stringify(sessions));
    assert.equal(live.door, 'socks5');
    const r = await fetch(`${base}api/sessions/${live.id}/close`, { method: 'POST', headers: auth });
    assert.equal(r.status, 200);
    await closed;
    const missing = await fetch(`${base}api/sessions/no-such-id/close`, { method: 'POST', headers: auth });
    assert.equal(missing.status, 404);
    const stats = (await (await fetch(base + 'api/stats', { headers: auth })).json()) as Record<string, number>;
    assert.ok(stats.sessionsTotal >= 1);
    assert.ok(stats.bytesUp >= 'hello admin'.length);
  });

  test('POST /api/reload rebuilds the configuration', async () => {
    const r = await fetch(base + 'api/reload', { method: 'POST', headers: auth });
    assert.equal(r.status, 200);
    assert.deepEqual(await r.json(), { reloaded: true });
  });
});
