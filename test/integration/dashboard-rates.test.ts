/**
 * The dashboard tells the truth (issue 18): during a download shaped by BANDWIDTH= its "Download
 * now" shows the bytes moving (never 0 B/s while they move, never a spike far above the shape),
 * a spliced tunnel's bytes (counted by the relay thread) show up live too, and the protocol table
 * lists every protocol the taps saw (HTTP through the HTTP door, FTP and SMTP through SOCKS
 * tunnels). Real headless Chromium against `sockstap demo`'s origin; a screenshot is written to
 * SOCKSTAP_SCREENSHOT_DIR when set (docs/dashboard.png comes from there).
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { startDemo, type Demo } from '../../src/demo.js';
import { curl, startOrigin, type Origin } from '../helpers/origin.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';

const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run'];
const skip = existsSync(CHROMIUM) ? false : `${CHROMIUM} is missing (apt-get install chromium)`;
/** The shape of the download: 8 MiB at 2 MiB/s takes about four seconds. */
const RATE = 2 * 1024 * 1024;

let demo: Demo;
let shaped: TestProxy;
let plain: TestProxy;
/** Sends 8 MiB at about 1 MiB/s itself (curl's --limit-rate does not hold on loopback here). */
let slow: Origin;
let context: BrowserContext | null = null;
const profileDir = mkdtempSync(join(tmpdir(), 'sockstap-chromium-'));

before(async () => {
  if (skip) return;
  demo = await startDemo({ ports: { http: 0, ftp: 0, smtp: 0 } });
  slow = await startOrigin((_req, res) => {
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    let sent = 0;
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': 128 * chunk.length });
    const timer = setInterval(() => {
      if (res.destroyed) return clearInterval(timer);
      res.write(chunk);
      if (++sent === 128) {
        clearInterval(timer);
        res.end();
      }
    }, 62);
  });
  const common = ['ADMIN=127.0.0.1:0', 'HOSTS={example.test,ftp.example.test,mail.example.test}/127.0.0.1'];
  // HTTP in SOCKS tunnels is not tapped here, so BANDWIDTH shapes it in the relay.
  shaped = await startProxy(['-P127.0.0.1:0/auto', 'SOCKSTAP=ftp,smtp', `BANDWIDTH=2m/down:all`, ...common]);
  // Nothing shaped, nothing tapped: tunnels go to the splice thread.
  plain = await startProxy(['-P127.0.0.1:0/auto', 'RELAY=splice', ...common]);
});
after(async () => {
  await context?.close();
  await slow?.close();
  for (const p of [shaped, plain]) {
    await p?.stop();
    p?.cleanup();
  }
  await demo?.close();
  rmSync(profileDir, { recursive: true, force: true });
});

/** "2.00 MiB/s" → bytes per second. */
function parseRate(text: string): number {
  const m = /^([\d.]+) (B|KiB|MiB|GiB)\/s$/.exec(text.trim());
  assert.ok(m, `a rate: ${JSON.stringify(text)}`);
  return Number(m[1]) * 1024 ** ['B', 'KiB', 'MiB', 'GiB'].indexOf(m[2]!);
}

async function openDashboard(url: string): Promise<Page> {
  context ??= await chromium.launchPersistentContext(profileDir, {
    executablePath: CHROMIUM,
    args: CHROMIUM_ARGS,
    headless: true,
    viewport: { width: 1360, height: 1180 },
    colorScheme: 'light',
  });
  const page = await context.newPage();
  await page.goto(url);
  await page.getByRole('status').filter({ hasText: 'live' }).waitFor();
  return page;
}

/** Every "Download now" the page shows while `running` is pending. */
async function watchRates(page: Page, running: Promise<unknown>): Promise<number[]> {
  let done = false;
  void running.finally(() => (done = true));
  const seen: number[] = [];
  let last = '';
  while (!done) {
    const text = (await page.locator('#c-rdown').textContent()) ?? '';
    const live = await page.locator('#sessions tr').count();
    if (live > 0 && text !== last && text.includes('/s')) seen.push(parseRate(text));
    last = text;
    await page.waitForTimeout(200);
  }
  return seen;
}

test('live rates are true during a shaped download; every protocol the taps saw is listed', { skip }, async () => {
  const port = shaped.port();
  const page = await openDashboard(shaped.proxy.adminUrl!);
  // What the taps see: FTP and SMTP in SOCKS tunnels, HTTP on the HTTP door.
  const ftp = await curl(['--socks5-hostname', `127.0.0.1:${port}`, `ftp://ftp.example.test:${demo.ports.ftp}/pub/hello.txt`]);
  assert.equal(ftp.code, 0, ftp.stderr);
  const smtp = await curl(['--socks5-hostname', `127.0.0.1:${port}`, `smtp://mail.example.test:${demo.ports.smtp}/`]);
  assert.equal(smtp.code, 0, smtp.stderr);
  const web = await curl(['-x', `http://127.0.0.1:${port}`, `http://example.test:${demo.ports.http}/`]);
  assert.equal(web.code, 0, web.stderr);

  const download = curl(['--socks5-hostname', `127.0.0.1:${port}`, '-o', '/dev/null', '-w', '%{size_download}', `http://example.test:${demo.ports.http}/big.bin`], 60_000);
  const rates = await watchRates(page, download);
  const r = await download;
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.toString(), String(8 * 1024 * 1024));
  assert.ok(rates.length > 0, 'the page updated during the download');
  assert.ok(rates.some((x) => x > 0), `the download shows as moving: ${rates.join(', ')}`);
  // The bucket lets at most one second's burst through: no reading far above the shape.
  assert.ok(rates.every((x) => x <= 4 * RATE), `no spike above the shape: ${rates.join(', ')}`);

  const protos = page.locator('#protos');
  for (const p of ['ftp', 'smtp', 'http']) await protos.locator('.tag', { hasText: new RegExp(`^${p}$`) }).waitFor();
  if (process.env.SOCKSTAP_SCREENSHOT_DIR) {
    await page.screenshot({ path: join(process.env.SOCKSTAP_SCREENSHOT_DIR, 'dashboard-shaped.png'), fullPage: true });
  }
});

test('a spliced tunnel moves the live rate while the relay thread carries it', { skip }, async () => {
  const page = await openDashboard(plain.proxy.adminUrl!);
  // The origin sends at about 1 MiB/s: the tunnel lasts about eight seconds, all of it in the thread.
  const download = curl(['--socks4', `127.0.0.1:${plain.port()}`, '-o', '/dev/null', slow.url('/slow.bin')], 60_000);
  const rates = await watchRates(page, download);
  assert.equal((await download).code, 0);
  assert.ok(rates.some((x) => x > 0), `the spliced download shows as moving: ${rates.join(', ')}`);
});
