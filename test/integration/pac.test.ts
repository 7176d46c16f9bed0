/**
 * The PAC file (issue 19 item 6): `GET /proxy.pac` and `GET /wpad.dat` on the HTTP door (without
 * proxy credentials, ahead of MOUNT) and on the admin server (without ADMINAUTH), generated from the
 * listeners, RELIABLE and routes. The file is evaluated in a `vm` sandbox with the PAC helper
 * functions, and headless Chromium configured only by `--proxy-pac-url` fetches a page through
 * sockstap (the access.log line shows it).
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { networkInterfaces, tmpdir } from 'node:os';
import { join } from 'node:path';
import vm from 'node:vm';
import { after, before, describe, test } from 'node:test';
import { chromium, type BrowserContext } from 'playwright-core';
import { startOrigin, type Origin } from '../helpers/origin.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';

const CHROMIUM = '/usr/bin/chromium';
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
const noChromium = existsSync(CHROMIUM) ? false : `${CHROMIUM} is missing (apt-get install chromium)`;

interface Fetched {
  status: number;
  type: string;
  cacheControl: string;
  body: string;
}

function get(port: number, path: string, options: { localAddress?: string; method?: string; host?: string } = {}): Promise<Fetched> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        path,
        method: options.method ?? 'GET',
        agent: false,
        localAddress: options.localAddress,
        headers: options.host ? { host: options.host } : {},
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            type: String(res.headers['content-type'] ?? ''),
            cacheControl: String(res.headers['cache-control'] ?? ''),
            body: Buffer.concat(chunks).toString('utf8'),
          }),
        );
      },
    );
    req.on('error', reject);
    req.end();
  });
}

/** The PAC helper functions (Netscape's, as browsers define them), minimally, over a fixed DNS table. */
function pacSandbox(dns: Record<string, string>): vm.Context {
  const ipv4 = (s: string): number[] | null => {
    const m = /^(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(s);
    return m ? m.slice(1).map(Number) : null;
  };
  const dnsResolve = (h: string): string | null => (ipv4(h) ? h : (dns[h.toLowerCase()] ?? null));
  const sandbox = {
    isPlainHostName: (h: string) => !h.includes('.'),
    dnsDomainIs: (h: string, d: string) => h.toLowerCase().endsWith(d.toLowerCase()),
    localHostOrDomainIs: (h: string, d: string) => h === d || (!h.includes('.') && d.startsWith(h + '.')),
    isResolvable: (h: string) => dnsResolve(h) !== null,
    dnsResolve,
    myIpAddress: () => '127.0.0.1',
    shExpMatch: (s: string, glob: string) =>
      new RegExp(
        '^' +
          glob
            .split('')
            .map((c) => (c === '*' ? '.*' : c === '?' ? '.' : c.replace(/[.+^${}()|[\]\\/]/g, '\\$&')))
            .join('') +
          '$',
        'i',
      ).test(s),
    isInNet: (host: string, net: string, mask: string) => {
      const ip = ipv4(dnsResolve(host) ?? '');
      const n = ipv4(net)!;
      const m = ipv4(mask)!;
      if (!ip) return false;
      return ip.every((b, i) => (b & m[i]!) === (n[i]! & m[i]!));
    },
  };
  return vm.createContext(sandbox);
}

function evaluatePac(text: string, dns: Record<string, string> = {}): (url: string) => string {
  const context = pacSandbox(dns);
  vm.runInContext(text, context, { filename: 'proxy.pac', timeout: 1000 });
  const find = vm.runInContext('FindProxyForURL', context) as (url: string, host: string) => string;
  return (url: string) => find(url, new URL(url).hostname);
}

/** The log's text once `re` matches it (lines are written asynchronously); fails after 10 s. */
async function logMatching(proxy: TestProxy, re: RegExp): Promise<string> {
  for (let i = 0; i < 200; i++) {
    const text = proxy.readLog('access.log');
    if (re.test(text)) return text;
    await new Promise((r) => setTimeout(r, 50));
  }
  return proxy.readLog('access.log');
}

/** A non-loopback IPv4 address of this machine (a .localnet address), if it has one. */
function lanAddress(): string | null {
  for (const infos of Object.values(networkInterfaces())) {
    for (const i of infos ?? []) if (i.family === 'IPv4' && !i.internal) return i.address;
  }
  return null;
}

describe('PAC file from the HTTP door and the admin server', () => {
  let proxy: TestProxy;
  let dir: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'sockstap-pac-'));
    const file = join(dir, 'pac.yaml');
    // corp.test and its hosts are reached through an upstream: they stay on the proxy even when local.
    writeFileSync(file, ['routes:', '  - match: { dst: "*.corp.test" }', '    via: socks5://127.0.0.1:9', ''].join('\n'));
    proxy = await startProxy([
      '-f',
      file,
      '-P127.0.0.1:0/http',
      '-P127.0.0.1:0/socks',
      '-P127.0.0.1:0/auto',
      'ADMIN=127.0.0.1:0',
      'ADMINAUTH=-list{ops:ops-pw}',
      'AUTHORIZER=-list{alice:alice-pw}',
      'RELIABLE=127.0.0.1',
      // a MOUNT of everything: the PAC is still served by the door itself
      `MOUNT=/* http://127.0.0.1:9/*`,
    ]);
  });
  after(async () => {
    await proxy.stop();
    proxy.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  function expectedProxies(): string {
    const list = proxy.proxy.addresses();
    const port = (door: string) => list.find((l) => l.door === door)!.port;
    return `PROXY 127.0.0.1:${port('http')}; PROXY 127.0.0.1:${port('auto')}; SOCKS5 127.0.0.1:${port('socks')}`;
  }

  test('the HTTP door serves /proxy.pac without credentials, and its answers follow the listeners and routes', async () => {
    const r = await get(proxy.port('http'), '/proxy.pac');
    assert.equal(r.status, 200);
    assert.equal(r.type, 'application/x-ns-proxy-autoconfig');
    assert.match(r.cacheControl, /max-age=\d+/);
    const lan = lanAddress();
    const dns: Record<string, string> = { 'www.example.org': '198.51.100.7', 'printer.lan': '127.0.0.9' };
    if (lan) Object.assign(dns, { 'nas.lan': lan, 'db.corp.test': lan });
    const find = evaluatePac(r.body, dns);
    const proxies = expectedProxies();
    assert.equal(find('http://www.example.org/index.html'), proxies);
    assert.equal(find('https://unresolvable.example.com/'), proxies);
    assert.equal(find('http://intranet/'), 'DIRECT');
    assert.equal(find('http://localhost:8080/'), 'DIRECT');
    assert.equal(find('http://127.0.0.5/'), 'DIRECT');
    assert.equal(find('http://[::1]:3000/'), 'DIRECT');
    assert.equal(find('http://printer.lan/'), 'DIRECT', 'a name on loopback (127.0.0.0/8 is .localnet)');
    assert.equal(find('http://x.corp.test/'), proxies, 'a routed destination stays on the proxy');
    if (lan) {
      assert.equal(find(`http://${lan}/`), 'DIRECT', 'an address of the local network');
      assert.equal(find('http://nas.lan/'), 'DIRECT');
      assert.equal(find('http://db.corp.test/'), proxies, 'local, but routed through an upstream');
    }
    const log = await logMatching(proxy, /proxy\.pac/);
    assert.match(log, /TCP_MISS\/200 \d+ GET http:\/\/127\.0\.0\.1:\d+\/proxy\.pac - HIER_NONE\/- application\/x-ns-proxy-autoconfig/);
  });

  test('/wpad.dat on the auto door and on the admin server (no ADMINAUTH) is the same file', async () => {
    const fromAuto = await get(proxy.port('auto'), '/wpad.dat');
    assert.equal(fromAuto.status, 200);
    assert.equal(fromAuto.type, 'application/x-ns-proxy-autoconfig');
    const adminPort = Number(new URL(proxy.proxy.adminUrl!).port);
    const fromAdmin = await get(adminPort, '/wpad.dat');
    assert.equal(fromAdmin.status, 200);
    assert.equal(fromAdmin.type, 'application/x-ns-proxy-autoconfig');
    assert.equal(evaluatePac(fromAdmin.body)('http://www.example.org/'), expectedProxies());
    assert.equal(evaluatePac(fromAuto.body)('http://www.example.org/'), expectedProxies());
    const head = await get(adminPort, '/proxy.pac?x=1', { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(head.body, '');
    // Everything else on the admin server still needs ADMINAUTH.
    assert.equal((await get(adminPort, '/api/stats')).status, 401);
  });

  test('a client outside RELIABLE gets a PAC that goes direct', async () => {
    const adminPort = Number(new URL(proxy.proxy.adminUrl!).port);
    const r = await get(adminPort, '/proxy.pac', { localAddress: '127.0.0.2' });
    assert.equal(r.status, 200);
    assert.match(r.body, /127\.0\.0\.2 is not in RELIABLE/);
    assert.equal(evaluatePac(r.body)('http://www.example.org/'), 'DIRECT');
  });

  test('a hostile Host field is not written into the file', async () => {
    const r = await get(proxy.port('http'), '/proxy.pac', { host: '"; alert(1); "' });
    assert.equal(r.status, 200);
    assert.doesNotMatch(r.body, /alert/);
  });

  test('a listener on every interface is named by the host the client used', async () => {
    const p = await startProxy(['-P0/http', 'ADMIN=127.0.0.1:0']);
    try {
      const r = await get(p.port('http'), '/proxy.pac', { host: `proxy.example.test:${p.port('http')}` });
      assert.equal(evaluatePac(r.body)('http://www.example.org/'), `PROXY proxy.example.test:${p.port('http')}`);
      const bare = await get(p.port('http'), '/proxy.pac', { host: '' });
      assert.equal(evaluatePac(bare.body)('http://www.example.org/'), `PROXY 127.0.0.1:${p.port('http')}`);
    } finally {
      await p.stop();
      p.cleanup();
    }
  });
});

describe('headless Chromium configured only by --proxy-pac-url', { skip: noChromium }, () => {
  let origin: Origin;
  let proxy: TestProxy;
  let dir: string;
  let context: BrowserContext | null = null;

  before(async () => {
    origin = await startOrigin();
    dir = mkdtempSync(join(tmpdir(), 'sockstap-pac-chromium-'));
    const file = join(dir, 'pac.yaml');
    // The browser knows the origin only by a name it cannot resolve; sockstap's hosts table can.
    writeFileSync(file, ['dns: { hosts: { origin.pac.test: [127.0.0.1] } }', ''].join('\n'));
    proxy = await startProxy(['-f', file, '-P127.0.0.1:0/http', '-P127.0.0.1:0/socks']);
  });
  after(async () => {
    await context?.close();
    await proxy.stop();
    proxy.cleanup();
    await origin.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('fetches a page through sockstap', async () => {
    context = await chromium.launchPersistentContext(join(dir, 'profile'), {
      executablePath: CHROMIUM,
      headless: true,
      args: [
        ...CHROMIUM_ARGS,
        `--proxy-pac-url=http://127.0.0.1:${proxy.port('http')}/proxy.pac`,
        // The browser's own resolver knows no name: only the proxy can reach origin.pac.test.
        '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1',
      ],
    });
    const page = context.pages()[0] ?? (await context.newPage());
    const url = `http://origin.pac.test:${origin.port}/pac-page`;
    const response = await page.goto(url);
    assert.equal(response?.status(), 200);
    assert.match(await page.content(), /sockstap-origin/);
    assert.ok(origin.requests.some((r) => r.url === '/pac-page'));
    const log = await logMatching(proxy, /pac-page/);
    assert.match(log, /GET http:\/\/127\.0\.0\.1:\d+\/proxy\.pac /, 'Chromium fetched the PAC file from the door');
    assert.match(log, new RegExp(`GET http://origin\\.pac\\.test:${origin.port}/pac-page - HIER_DIRECT/`), 'and the page through the proxy');
  });
});
