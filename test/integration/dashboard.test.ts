/**
 * The live dashboard in a real browser: Debian's headless Chromium driven by playwright-core. It
 * loads behind ADMINAUTH with no console errors, shows a tunnel while a transfer runs through it,
 * its close button ends that session (the client's socket sees the close), and a screenshot is
 * written (to SOCKSTAP_SCREENSHOT_DIR when set, else a temporary directory that is removed).
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import type net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { chromium, type BrowserContext } from 'playwright-core';
import { SocksClient } from 'socks';
import { startEcho, startOrigin, type EchoServer, type Origin } from '../helpers/origin.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';

const CHROMIUM = '/usr/bin/chromium';
// Flags for a machine without internet: no background requests that hammer refused connections.
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
const skip = existsSync(CHROMIUM) ? false : `${CHROMIUM} is missing (apt-get install chromium)`;

let echo: EchoServer;
let origin: Origin;
let proxy: TestProxy;
let context: BrowserContext | null = null;
let profileDir = '';
const keepDir = process.env.SOCKSTAP_SCREENSHOT_DIR;
let shotDir = '';
const user = { name: 'ops', password: 'dash-board-pw' };

before(async () => {
  if (skip) return;
  echo = await startEcho();
  origin = await startOrigin();
  proxy = await startProxy([
    '-P127.0.0.1:0/socks',
    '-P127.0.0.1:0/http',
    'ADMIN=127.0.0.1:0',
    `ADMINAUTH=-list{${user.name}:${user.password}}`,
    'AUTHORIZER=-list{alice:alice-pw,bob:bob-pw}',
    'CACHE=do',
    'QUOTA=50m/day:user:alice',
    'QUOTA=2g/month:all',
  ]);
  profileDir = mkdtempSync(join(tmpdir(), 'sockstap-chromium-'));
  shotDir = keepDir ?? mkdtempSync(join(tmpdir(), 'sockstap-shot-'));
});
after(async () => {
  if (skip) return;
  await context?.close();
  await proxy.stop();
  proxy.cleanup();
  await echo.close();
  await origin.close();
  rmSync(profileDir, { recursive: true, force: true });
  if (!keepDir) rmSync(shotDir, { recursive: true, force: true });
});

function tunnel(userId: string, password: string): Promise<net.Socket> {
  return SocksClient.createConnection({
    proxy: { host: '127.0.0.1', port: proxy.port('socks'), type: 5, userId, password },
    command: 'connect',
    destination: { host: '127.0.0.1', port: echo.port },
  }).then((r) => r.socket);
}

function httpGet(path: string, userId: string, password: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: '127.0.0.1',
        port: proxy.port('http'),
        path: origin.url(path),
        agent: false,
        headers: { 'proxy-authorization': `Basic ${Buffer.from(`${userId}:${password}`).toString('base64')}` },
      },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

describe('dashboard in headless Chromium', { skip }, () => {
  test('shows a live transfer, closes it from its button, and is screenshotted', async (t) => {
    // Some finished traffic, so the tables have rows.
    for (const [u, p, n] of [['bob', 'bob-pw', 3], ['alice', 'alice-pw', 1]] as const) {
      for (let i = 0; i < n; i++) assert.equal(await httpGet(`/page-${i}`, u, p), 200);
    }
    // The transfer the dashboard must show: alice's tunnel, kept busy until the button ends it.
    const socket = await tunnel('alice', 'alice-pw');
    socket.on('error', () => {});
    socket.resume();
    const closed = new Promise<void>((r) => socket.once('close', () => r()));
    const chunk = Buffer.alloc(48 * 1024, 0x5a);
    const pump = setInterval(() => {
      if (!socket.destroyed && !socket.writableNeedDrain) socket.write(chunk);
    }, 50);
    try {
      const errors: string[] = [];
      context = await chromium.launchPersistentContext(profileDir, {
        executablePath: CHROMIUM,
        args: CHROMIUM_ARGS,
        headless: true,
        httpCredentials: { username: user.name, password: user.password },
        viewport: { width: 1360, height: 1180 },
        colorScheme: 'light',
      });
      const page = context.pages()[0] ?? (await context.newPage());
      page.on('console', (m) => {
        if (m.type() === 'error' || m.type() === 'warning') errors.push(`${m.type()}: ${m.text()}`);
      });
      page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
      const response = await page.goto(proxy.proxy.adminUrl!);
      assert.equal(response?.status(), 200);
      await page.getByRole('status').filter({ hasText: 'live' }).waitFor();

      const dst = `127.0.0.1:${echo.port}`;
      const row = page.locator('#sessions tr', { hasText: dst });
      await row.waitFor();
      assert.equal(await row.locator('td').nth(1).textContent(), 'alice');
      assert.equal(await row.locator('td').nth(2).textContent(), 'socks5');
      // Bytes are moving, and the chart has drawn several seconds of them (the screenshot shows a curve).
      await page.waitForFunction(() => !/^0 B\/s$/.test(document.getElementById('c-rup')?.textContent ?? ''));
      await page.waitForFunction(() => (document.querySelector('#chart path')?.getAttribute('d') ?? '').split('L').length > 8, null, { timeout: 20_000 });
      assert.match((await page.locator('#top-users').textContent()) ?? '', /alice/);
      assert.match((await page.locator('#top-users').textContent()) ?? '', /bob/);
      const quotaRow = page.locator('#quotas tr', { hasText: 'user:alice' });
      await quotaRow.waitFor();
      assert.match((await quotaRow.textContent()) ?? '', /day.*both.*of 50\.0 MiB/);
      assert.match((await page.locator('#cache').textContent()) ?? '', /entries/);

      const shot = join(shotDir, 'dashboard.png');
      await page.screenshot({ path: shot, fullPage: true });
      assert.deepEqual([...readFileSync(shot).subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
      t.diagnostic(`screenshot: ${shot}`);

      await row.getByRole('button', { name: /^Close session / }).click();
      await closed;
      await row.waitFor({ state: 'detached' });
      assert.equal(await page.locator('#sessions tr').count(), 0);
      assert.deepEqual(errors, []);
    } finally {
      clearInterval(pump);
      socket.destroy();
    }
  });
});

describe('dashboard without ADMINAUTH: the admin token', { skip }, () => {
  let plain: TestProxy;
  let ctx: BrowserContext | null = null;
  let dir = '';
  before(async () => {
    plain = await startProxy(['-P127.0.0.1:0/socks', 'ADMIN=127.0.0.1:0']);
    dir = mkdtempSync(join(tmpdir(), 'sockstap-chromium-token-'));
  });
  after(async () => {
    await ctx?.close();
    await plain.stop();
    plain.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  test('a close asks for the token once, keeps it in localStorage, and closes', async () => {
    const token = readFileSync(join(plain.stateDir, 'admin.token'), 'utf8').trim();
    const open = async (): Promise<{ socket: net.Socket; closed: Promise<void> }> => {
      const { socket } = await SocksClient.createConnection({
        proxy: { host: '127.0.0.1', port: plain.port('socks'), type: 5 },
        command: 'connect',
        destination: { host: '127.0.0.1', port: echo.port },
      });
      socket.on('error', () => {});
      socket.resume();
      return { socket, closed: new Promise<void>((r) => socket.once('close', () => r())) };
    };
    ctx = await chromium.launchPersistentContext(dir, { executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true });
    const page = ctx.pages()[0] ?? (await ctx.newPage());
    const prompts: string[] = [];
    page.on('dialog', (d) => {
      prompts.push(d.message());
      void d.accept(token);
    });
    await page.goto(plain.proxy.adminUrl!);
    await page.getByRole('status').filter({ hasText: 'live' }).waitFor();
    for (let round = 0; round < 2; round++) {
      const t = await open();
      try {
        const row = page.locator('#sessions tr', { hasText: `127.0.0.1:${echo.port}` });
        await row.waitFor();
        await row.getByRole('button', { name: /^Close session / }).click();
        await t.closed;
      } finally {
        t.socket.destroy();
      }
    }
    assert.equal(prompts.length, 1, 'asked once');
    assert.match(prompts[0]!, /admin\.token/);
    assert.equal(await page.evaluate(() => localStorage.getItem('sockstap-admin-token')), token);
  });
});
