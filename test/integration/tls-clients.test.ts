/**
 * Intercepted HTTPS with more real clients: Python requests (`verify=` the exported CA, SOCKS5
 * with remote names through python3-socks) and headless Chromium with the CA in an NSS database
 * (certutil), both fetching a local HTTPS origin byte-identical through the interception (Python's
 * second fetch a TCP_HIT; Chromium keeps its own cache, so it is asked once).
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { chromium } from 'playwright-core';
import type { AccessRecord } from '../../src/observe/events.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';
import { testPki, type TestPki } from '../helpers/tls.js';

const CHROMIUM = '/usr/bin/chromium';
const hasPython = (() => {
  try {
    execFileSync('/usr/bin/python3', ['-c', 'import requests, socks'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();
const hasCertutil = (() => {
  try {
    execFileSync('sh', ['-c', 'command -v certutil'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

const BODY = Buffer.from(`<!DOCTYPE html><html><body><p id="x">${randomBytes(32 * 1024).toString('hex')}</p></body></html>\n`);
let pki: TestPki;
let server: https.Server;
let port = 0;
let proxy: TestProxy;
let caFile = '';
const records: AccessRecord[] = [];

before(async () => {
  pki = testPki();
  const { key, cert } = pki.issue(['localhost']);
  server = https.createServer({ key, cert }, (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/html', 'cache-control': 'max-age=300', 'content-length': BODY.length });
    res.end(BODY);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  port = (server.address() as AddressInfo).port;
  proxy = await startProxy(['-P127.0.0.1:0/socks', 'SOCKSTAP=all', 'CACHE=do', 'STLS=mitm', `TLSCAFILE=${pki.caFile}`]);
  proxy.proxy.events.on('access', (r) => records.push(r));
  caFile = join(proxy.stateDir, 'ca', 'ca.pem');
});
after(async () => {
  await proxy.stop();
  proxy.cleanup();
  server.closeAllConnections();
  server.close();
  pki.cleanup();
});

function python(script: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('/usr/bin/python3', ['-c', script, ...args], { timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? 1 : 0, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

const sha = (b: Buffer | string): string => createHash('sha256').update(b).digest('hex');

test('Python requests with verify= the exported CA, through SOCKS5 (socks5h)', { skip: hasPython ? false : 'python3-requests and python3-socks are missing' }, async () => {
  const script = [
    'import hashlib, sys, requests',
    "r = requests.get(sys.argv[1], verify=sys.argv[2], proxies={'https': sys.argv[3]}, timeout=20)",
    "print(r.status_code, hashlib.sha256(r.content).hexdigest())",
  ].join('\n');
  const url = `https://localhost:${port}/py`;
  const argv = [url, caFile, `socks5h://127.0.0.1:${proxy.port('socks')}`];
  const first = await python(script, argv);
  assert.equal(first.code, 0, first.stderr);
  assert.equal(first.stdout.trim(), `200 ${sha(BODY)}`);
  const second = await python(script, argv);
  assert.equal(second.stdout.trim(), `200 ${sha(BODY)}`);
  assert.deepEqual(
    records.filter((r) => r.url === url).map((r) => r.resultCode.replace('TCP_MEM_HIT', 'TCP_HIT')),
    ['TCP_MISS', 'TCP_HIT'],
  );
});

test('headless Chromium with the CA in its NSS database, through SOCKS5', { skip: existsSync(CHROMIUM) && hasCertutil ? false : 'chromium or certutil (libnss3-tools) is missing' }, async () => {
  const home = mkdtempSync(join(tmpdir(), 'sockstap-nss-'));
  try {
    const nss = join(home, '.pki', 'nssdb');
    mkdirSync(nss, { recursive: true });
    execFileSync('certutil', ['-d', `sql:${nss}`, '-N', '--empty-password'], { stdio: 'ignore' });
    execFileSync('certutil', ['-d', `sql:${nss}`, '-A', '-t', 'C,,', '-n', 'sockstap', '-i', caFile], { stdio: 'ignore' });
    const context = await chromium.launchPersistentContext(join(home, 'profile'), {
      executablePath: CHROMIUM,
      headless: true,
      env: { ...process.env, HOME: home },
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        `--proxy-server=socks5://127.0.0.1:${proxy.port('socks')}`,
        // Chromium never proxies loopback unless told to.
        '--proxy-bypass-list=<-loopback>',
      ],
    });
    try {
      const page = context.pages()[0] ?? (await context.newPage());
      const url = `https://localhost:${port}/chromium`;
      const response = await page.goto(url);
      assert.equal(response?.status(), 200);
      assert.equal(sha(await response!.body()), sha(BODY));
    } finally {
      await context.close();
    }
    const mine = records.filter((r) => r.url === `https://localhost:${port}/chromium`);
    assert.ok(mine.length >= 1 && mine[0]!.resultCode === 'TCP_MISS', JSON.stringify(mine.map((r) => r.resultCode)));
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});
