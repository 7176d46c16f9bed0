/**
 * Plain HTTP through an HTTP upstream (PROXY=) in absolute-form, against a real Squid: through the
 * HTTP door (curl -x) and through a tapped SOCKS tunnel (SOCKSTAP=http). Squid's access.log shows
 * the absolute URL, sockstap's shows FIRSTUP_PARENT and the session's route names the upstream;
 * the cache stays in front (a fresh hit never reaches Squid); Basic credentials for the upstream
 * are sent and never logged; a dstHostList that does not match goes direct; a dead upstream falls
 * back to the next or gives the 502 page.
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { curl, PAGE, startOrigin, type Origin } from '../helpers/origin.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';
import { squidMissing, startSquid, type Squid } from '../helpers/squid.js';

const noSquid = squidMissing();
const NCSA = '/usr/lib/squid/basic_ncsa_auth';

/** A page any cache may keep for five minutes (RFC 9111 §5.2.2.1); a POST is echoed. */
async function startCacheableOrigin(): Promise<Origin> {
  return startOrigin((req, res) => {
    if (req.method === 'POST') {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        res.writeHead(200, { 'content-type': 'application/octet-stream' });
        res.end(Buffer.concat(chunks));
      });
      return;
    }
    res.writeHead(200, { 'content-type': 'text/html', 'content-length': PAGE.length, 'cache-control': 'max-age=300' });
    res.end(req.method === 'HEAD' ? undefined : PAGE);
  });
}

/** Squid writes its log a little after the answer: poll for it (bounded). */
async function waitUntil(check: () => boolean, message: string, timeoutMs = 10_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > until) assert.fail(message);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function count(text: string, needle: string): number {
  return text.split(needle).length - 1;
}

/** Every file under a directory, concatenated (what a password must never be found in). */
function allText(dir: string): string {
  if (!existsSync(dir)) return '';
  let out = '';
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    out += statSync(p).isDirectory() ? allText(p) : readFileSync(p, 'latin1');
  }
  return out;
}

/** An access.log line (Squid format) that names the URL. */
function accessLine(proxy: TestProxy, url: string): string[] {
  return proxy
    .readLog('access.log')
    .split('\n')
    .filter((l) => l.includes(` ${url} `));
}

/** A port nothing listens on (bound, then closed). */
async function deadPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise((r) => server.close(r));
  return port;
}

describe('HTTP through Squid in absolute-form', { skip: noSquid ?? false }, () => {
  let origin: Origin;
  let squid: Squid;
  let proxy: TestProxy;
  let cached: TestProxy;
  before(async () => {
    origin = await startCacheableOrigin();
    squid = await startSquid();
    proxy = await startProxy(['-P127.0.0.1:0/auto', 'SOCKSTAP=http', `PROXY=127.0.0.1:${squid.port}`]);
    cached = await startProxy(['-P127.0.0.1:0/auto', 'SOCKSTAP=http', 'CACHE=do', `PROXY=127.0.0.1:${squid.port}`]);
  });
  after(async () => {
    await proxy?.stop();
    proxy?.cleanup();
    await cached?.stop();
    cached?.cleanup();
    await squid?.stop();
    await origin?.close();
  });

  it('HTTP door: the page arrives whole; Squid logs the absolute URL; access.log says FIRSTUP_PARENT', async () => {
    // No query: Squid logs URLs without it (strip_query_terms).
    const url = origin.url('/door/page');
    const r = await curl(['-x', `http://127.0.0.1:${proxy.port()}`, url]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.equals(PAGE), 'page differs');
    await waitUntil(() => squid.accessLog().includes(`GET ${url} `), `squid logged no GET ${url}:\n${squid.accessLog()}`);
    // access.log is written by a buffered writer: wait for the line rather than race it.
    await waitUntil(() => accessLine(proxy, url).length > 0, `no access.log line for ${url}`);
    const lines = accessLine(proxy, url);
    assert.equal(lines.length, 1, proxy.readLog('access.log'));
    assert.match(lines[0]!, / TCP_MISS\/200 /);
    assert.match(lines[0]!, / FIRSTUP_PARENT\/127\.0\.0\.1 /);
  });

  it('tapped SOCKS tunnel: absolute-form to Squid, no CONNECT', async () => {
    const url = origin.url('/tap/page');
    const r = await curl(['--socks5-hostname', `127.0.0.1:${proxy.port()}`, url]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.equals(PAGE), 'page differs');
    await waitUntil(() => squid.accessLog().includes(`GET ${url} `), `squid logged no GET ${url}:\n${squid.accessLog()}`);
    assert.ok(!squid.accessLog().includes('CONNECT'), `squid saw a CONNECT:\n${squid.accessLog()}`);
    // access.log is written by a buffered writer: wait for the line rather than race it.
    await waitUntil(() => accessLine(proxy, url).length > 0, `no access.log line for ${url}`);
    const lines = accessLine(proxy, url);
    assert.equal(lines.length, 1, proxy.readLog('access.log'));
    assert.match(lines[0]!, / FIRSTUP_PARENT\/127\.0\.0\.1 /);
  });

  it('CACHE=do: a fresh hit is TCP_HIT and never reaches Squid (door and tunnel)', async () => {
    for (const [name, args] of [
      ['door', ['-x', `http://127.0.0.1:${cached.port()}`]],
      ['tunnel', ['--socks5-hostname', `127.0.0.1:${cached.port()}`]],
    ] as const) {
      const url = origin.url(`/cached/${name}`);
      const first = await curl([...args, url]);
      assert.equal(first.code, 0, first.stderr);
      assert.ok(first.stdout.equals(PAGE));
      await waitUntil(() => squid.accessLog().includes(`GET ${url} `), `squid logged no GET ${url}`);
      const second = await curl([...args, url]);
      assert.equal(second.code, 0, second.stderr);
      assert.ok(second.stdout.equals(PAGE));
      // Squid logs in order: once a later request is in its log, a hit that had reached it would be too.
      const marker = origin.url(`/cached/${name}-marker`);
      assert.equal((await curl([...args, marker])).code, 0);
      await waitUntil(() => squid.accessLog().includes(`GET ${marker} `), `squid logged no GET ${marker}`);
      assert.equal(count(squid.accessLog(), `GET ${url} `), 1, `the hit reached squid:\n${squid.accessLog()}`);
      await waitUntil(() => accessLine(cached, url).length >= 2, `fewer than two access.log lines for ${url}`);
      const lines = accessLine(cached, url);
      assert.equal(lines.length, 2, cached.readLog('access.log'));
      assert.match(lines[0]!, / TCP_MISS\/200 .* FIRSTUP_PARENT\/127\.0\.0\.1 /);
      assert.match(lines[1]!, / TCP_(MEM_)?HIT\/200 .* HIER_NONE\/- /);
    }
  });

  it('sessions.jsonl names the upstream as the route', async () => {
    await proxy.stop(2000);
    const sessions = proxy.sessions().filter((s) => s.result === 'ok');
    assert.ok(sessions.length >= 2, JSON.stringify(proxy.sessions()));
    for (const s of sessions) assert.equal(s.route, `http://127.0.0.1:${squid.port}`, JSON.stringify(s));
    assert.ok(sessions.some((s) => s.proto === 'http' && s.door !== undefined));
  });
});

describe('HTTP through Squid with Basic credentials', { skip: noSquid ?? (existsSync(NCSA) ? false : `${NCSA} is missing (squid's Basic auth helper)`) }, () => {
  const user = 'tapuser';
  const password = `pw-${Math.random().toString(36).slice(2, 10)}`;
  let origin: Origin;
  let squid: Squid;
  let good: TestProxy;
  let bad: TestProxy;
  before(async () => {
    origin = await startCacheableOrigin();
    squid = await startSquid({ user, password });
    good = await startProxy(['-P127.0.0.1:0/auto', 'SOCKSTAP=http', `PROXY=${user}:${password}@127.0.0.1:${squid.port}`]);
    bad = await startProxy(['-P127.0.0.1:0/http', `PROXY=${user}:wrong-${password}@127.0.0.1:${squid.port}`]);
  });
  after(async () => {
    await good?.stop();
    good?.cleanup();
    await bad?.stop();
    bad?.cleanup();
    await squid?.stop();
    await origin?.close();
  });

  it('sends Proxy-Authorization: Squid serves and logs the user (door and tunnel)', async () => {
    for (const [name, args] of [
      ['door', ['-x', `http://127.0.0.1:${good.port()}`]],
      ['tunnel', ['--socks5-hostname', `127.0.0.1:${good.port()}`]],
    ] as const) {
      const url = origin.url(`/auth/${name}`);
      const r = await curl([...args, url]);
      assert.equal(r.code, 0, r.stderr);
      assert.ok(r.stdout.equals(PAGE), `${name}: page differs: ${r.stdout.subarray(0, 200).toString()}`);
      await waitUntil(() => squid.accessLog().includes(`GET ${url} ${user} `), `squid logged no GET ${url} ${user}:\n${squid.accessLog()}`);
    }
    // The origin never sees the upstream's credentials.
    for (const req of origin.requests) assert.equal(req.headers['proxy-authorization'], undefined);
  });

  it("a 407 for sockstap's credentials is a 502 page (EUPSTREAMAUTH), not a challenge to the client", async () => {
    const r = await curl(['-x', `http://127.0.0.1:${bad.port()}`, '-w', '%{http_code}', '-o', '/dev/null', origin.url('/auth/bad')]);
    assert.equal(r.stdout.toString(), '502', r.stderr);
  });

  it('the password appears nowhere under LOGDIR', async () => {
    await good.stop(2000);
    await bad.stop(2000);
    assert.ok(good.readLog('access.log').includes('FIRSTUP_PARENT/127.0.0.1'));
    for (const p of [good, bad]) {
      const text = allText(p.logDir);
      assert.ok(!text.includes(password), `the upstream password reached ${p.logDir}`);
      assert.ok(!text.includes(Buffer.from(`${user}:`).toString('base64').slice(0, 8)), 'credentials (base64) reached a log');
    }
    assert.ok(good.sessions().some((s) => s.route === `http://127.0.0.1:${squid.port}`));
    assert.ok(!JSON.stringify(good.sessions()).includes(user + ':'));
  });
});

describe('which requests take the HTTP upstream', { skip: noSquid ?? false }, () => {
  let origin: Origin;
  let squid: Squid;
  let listed: TestProxy;
  let fallback: TestProxy;
  let dead: TestProxy;
  before(async () => {
    origin = await startCacheableOrigin();
    squid = await startSquid();
    const nobody = await deadPort();
    listed = await startProxy(['-P127.0.0.1:0/auto', 'SOCKSTAP=http', `PROXY=127.0.0.1:${squid.port}:localhost`]);
    fallback = await startProxy(['-P127.0.0.1:0/http', `PROXY=127.0.0.1:${nobody}`, `PROXY=127.0.0.1:${squid.port}`]);
    dead = await startProxy(['-P127.0.0.1:0/auto', 'SOCKSTAP=http', `PROXY=127.0.0.1:${nobody}`]);
  });
  after(async () => {
    for (const p of [listed, fallback, dead]) {
      await p?.stop();
      p?.cleanup();
    }
    await squid?.stop();
    await origin?.close();
  });

  it('PROXY=...:dstHostList: a destination not in the list goes direct, one in it through Squid', async () => {
    const direct = origin.url('/listed/direct');
    const through = `http://localhost:${origin.port}/listed/through`;
    for (const args of [['-x', `http://127.0.0.1:${listed.port()}`], ['--socks5-hostname', `127.0.0.1:${listed.port()}`]]) {
      const a = await curl([...args, direct]);
      assert.equal(a.code, 0, a.stderr);
      assert.ok(a.stdout.equals(PAGE));
      const b = await curl([...args, through]);
      assert.equal(b.code, 0, b.stderr);
      assert.ok(b.stdout.equals(PAGE));
    }
    await waitUntil(() => count(squid.accessLog(), `GET ${through} `) === 2, `squid logged no GET ${through}:\n${squid.accessLog()}`);
    assert.ok(!squid.accessLog().includes('/listed/direct'), `a direct request reached squid:\n${squid.accessLog()}`);
    await waitUntil(() => accessLine(listed, direct).length > 0 && accessLine(listed, through).length > 0, 'access.log lines');
    for (const line of accessLine(listed, direct)) assert.match(line, / HIER_DIRECT\/127\.0\.0\.1 /);
    for (const line of accessLine(listed, through)) assert.match(line, / FIRSTUP_PARENT\/127\.0\.0\.1 /);
    await listed.stop(2000);
    const routes = listed.sessions().map((s) => s.route);
    assert.ok(routes.includes('direct') && routes.includes(`http://127.0.0.1:${squid.port}`), JSON.stringify(routes));
  });

  it('a dead first upstream gives way to the next', async () => {
    const url = origin.url('/fallback');
    const r = await curl(['-x', `http://127.0.0.1:${fallback.port()}`, url]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.equals(PAGE));
    await waitUntil(() => squid.accessLog().includes(`GET ${url} `), `squid logged no GET ${url}`);
    // A request body waits for the connection, so it is whole when the next route takes it.
    const body = 'x'.repeat(100_000);
    const post = await curl(['-x', `http://127.0.0.1:${fallback.port()}`, '--data-binary', body, origin.url('/fallback-post')]);
    assert.equal(post.code, 0, post.stderr);
    assert.equal(post.stdout.toString(), body);
    await waitUntil(() => squid.accessLog().includes(`POST ${origin.url('/fallback-post')} `), 'squid logged no POST');
    await fallback.stop(2000);
    assert.match(fallback.readLog('sockstap.log'), /route failed, trying the next/);
    assert.ok(fallback.sessions().some((s) => s.route === `http://127.0.0.1:${squid.port}` && s.result === 'ok'));
  });

  it('a dead only upstream gives the 502 page (door and tunnel)', async () => {
    for (const args of [['-x', `http://127.0.0.1:${dead.port()}`], ['--socks5-hostname', `127.0.0.1:${dead.port()}`]]) {
      const r = await curl([...args, '-w', '\n%{http_code}', origin.url('/dead')]);
      const text = r.stdout.toString();
      assert.match(text, /sockstap: 502 Bad Gateway\nECONNREFUSED/, text);
      assert.match(text, /\n502$/);
    }
    assert.equal(origin.requests.filter((q) => q.url === '/dead').length, 0);
  });
});
