/**
 * Upstream proxies started by the test: sockstap → Dante (SOCKS5, no auth and, as root, with a
 * system user) → origin; sockstap → Squid (HTTP CONNECT, Squid's access.log shows it) → origin;
 * a chain Squid → Dante; the upstream's refusals mapped to the client's reply; the absolute-form
 * helper for HTTP upstreams (Squid logs the absolute URL).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { SocksClient } from 'socks';
import { curl, PAGE, startOrigin, type Origin } from '../helpers/origin.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';
import { createSystemUser, danteMissing, isRoot, startDante, type Dante } from '../helpers/dante.js';
import { squidMissing, startSquid, type Squid } from '../helpers/squid.js';
import { loadConfig } from '../../src/config/load.js';
import { Session } from '../../src/core/session.js';
import { httpUpstreamFor } from '../../src/upstream/router.js';
import { NameCache } from '../../src/net/dns.js';
import { UpstreamHealthTable } from '../../src/upstream/pool.js';

const noDante = danteMissing();
const noSquid = squidMissing();

describe('sockstap → Dante (SOCKS5) → origin', { skip: noDante ?? false }, () => {
  let origin: Origin;
  let dante: Dante;
  let proxy: TestProxy;
  before(async () => {
    origin = await startOrigin();
    dante = await startDante({ auth: 'none' });
    proxy = await startProxy(['-P127.0.0.1:0/socks', `SOCKS=127.0.0.1:${dante.port}`]);
  });
  after(async () => {
    await proxy.stop();
    proxy.cleanup();
    await dante.stop();
    await origin.close();
  });

  it('fetches the page through Dante, the name passed on unresolved', async () => {
    const r = await curl(['--socks5-hostname', `127.0.0.1:${proxy.port()}`, `http://localhost:${origin.port}/via-dante`]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.equals(PAGE));
    // Dante logged the connection; the origin saw Dante's connection.
    assert.match(dante.log(), new RegExp(`127\\.0\\.0\\.1\\.${origin.port}|localhost\\.${origin.port}`));
  });

  it("maps Dante's refusal (REP 2, not allowed) to the client's SOCKS5 REP 2", async () => {
    // Dante's config passes loopback destinations only.
    await assert.rejects(
      SocksClient.createConnection({
        command: 'connect',
        destination: { host: '192.0.2.1', port: 80 },
        proxy: { host: '127.0.0.1', port: proxy.port(), type: 5 },
        timeout: 10_000,
      }),
      /NotAllowed/,
    );
  });

  it("maps a refused destination behind Dante (REP 5) to ECONNREFUSED, REP 5", async () => {
    await assert.rejects(
      SocksClient.createConnection({
        command: 'connect',
        destination: { host: '127.0.0.1', port: 1 },
        proxy: { host: '127.0.0.1', port: proxy.port(), type: 5 },
        timeout: 10_000,
      }),
      /ConnectionRefused/,
    );
  });

  it('records the route without credentials in sessions.jsonl', async () => {
    await proxy.stop(2000);
    const ok = proxy.sessions().filter((s) => s.result === 'ok');
    assert.ok(ok.length > 0);
    for (const s of ok) assert.equal(s.route, `socks5://127.0.0.1:${dante.port}`);
    const refused = proxy.sessions().find((s) => s.result === 'ECONNREFUSED');
    assert.ok(refused, 'no ECONNREFUSED record');
  });
});

describe('sockstap → Dante with a SOCKS5 user (RFC 1929)', { skip: noDante ?? (isRoot() ? false : 'needs root: Dante checks system users, and useradd needs root') }, () => {
  const user = `sockstap${process.pid % 100000}`;
  const password = 'pw-' + Math.random().toString(36).slice(2, 10);
  let removeUser: () => void;
  let origin: Origin;
  let dante: Dante;
  let good: TestProxy;
  let bad: TestProxy;
  before(async () => {
    removeUser = createSystemUser(user, password);
    origin = await startOrigin();
    dante = await startDante({ auth: 'username' });
    good = await startProxy(['-P127.0.0.1:0/socks', `SOCKS=${user}:${password}@127.0.0.1:${dante.port}/5`]);
    bad = await startProxy(['-P127.0.0.1:0/socks', `SOCKS=${user}:wrong@127.0.0.1:${dante.port}/5`]);
  });
  after(async () => {
    await good?.stop();
    good?.cleanup();
    await bad?.stop();
    bad?.cleanup();
    await dante?.stop();
    await origin?.close();
    removeUser?.();
  });

  it('authenticates to Dante and fetches the page', async () => {
    const r = await curl(['--socks5-hostname', `127.0.0.1:${good.port()}`, `http://127.0.0.1:${origin.port}/user`]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.equals(PAGE));
  });

  it('a wrong upstream password is EUPSTREAMAUTH (general failure to the client), and never logged', async () => {
    await assert.rejects(
      SocksClient.createConnection({
        command: 'connect',
        destination: { host: '127.0.0.1', port: origin.port },
        proxy: { host: '127.0.0.1', port: bad.port(), type: 5 },
        timeout: 10_000,
      }),
      /Failure/,
    );
    await bad.stop(2000);
    assert.ok(bad.sessions().some((s) => s.result === 'EUPSTREAMAUTH'));
    const logs = bad.readLog('sockstap.log') + bad.readLog('sessions.jsonl');
    assert.ok(!logs.includes('wrong'), 'a password reached a log');
    await good.stop(2000);
    assert.ok(!(good.readLog('sockstap.log') + good.readLog('sessions.jsonl')).includes(password));
  });
});

describe('sockstap → Squid (HTTP CONNECT) → origin', { skip: noSquid ?? false }, () => {
  let origin: Origin;
  let squid: Squid;
  let proxy: TestProxy;
  before(async () => {
    origin = await startOrigin();
    squid = await startSquid();
    proxy = await startProxy(['-P127.0.0.1:0/auto', `PROXY=127.0.0.1:${squid.port}`]);
  });
  after(async () => {
    await proxy.stop();
    proxy.cleanup();
    await squid.stop();
    await origin.close();
  });

  it('tunnels through Squid; Squid logs the CONNECT', async () => {
    const r = await curl(['--socks5-hostname', `127.0.0.1:${proxy.port()}`, `http://localhost:${origin.port}/via-squid`]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.equals(PAGE));
    await waitUntil(() => squid.accessLog().includes(`CONNECT localhost:${origin.port}`), 'squid logged no CONNECT');
  });

  it("Squid's 403 becomes EDENIED (SOCKS5 REP 2)", async () => {
    await assert.rejects(
      SocksClient.createConnection({
        command: 'connect',
        destination: { host: 'www.blocked.test', port: 80 },
        proxy: { host: '127.0.0.1', port: proxy.port(), type: 5 },
        timeout: 10_000,
      }),
      /NotAllowed/,
    );
  });

  it('the absolute-form helper sends GET http://... to Squid, which logs the absolute URL', async () => {
    const config = loadConfig([`PROXY=127.0.0.1:${squid.port}`]);
    const session = new Session({ clientAddress: '127.0.0.1', clientPort: 1, door: 'http', listen: 'test' });
    session.command = 'http';
    const dst = { host: '127.0.0.1', port: origin.port };
    const up = httpUpstreamFor(config, dst, session, { timeoutMs: 10_000, names: new NameCache(), upstreams: new UpstreamHealthTable() });
    assert.ok(up);
    assert.equal(up.route, `http://127.0.0.1:${squid.port}`);
    const socket = await up.dial();
    const url = `http://127.0.0.1:${origin.port}/absolute-form`;
    socket.write(`GET ${url} HTTP/1.1\r\nHost: 127.0.0.1:${origin.port}\r\nConnection: close\r\n\r\n`);
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.resume();
    // allowHalfOpen sockets: Squid's FIN ends the reading side only.
    await new Promise((r) => socket.once('end', r));
    socket.destroy();
    const text = Buffer.concat(chunks).toString('latin1');
    assert.match(text, /^HTTP\/1\.1 200/);
    await waitUntil(() => squid.accessLog().includes(`GET ${url}`), 'squid logged no absolute URL');
  });
});

describe('a chain: sockstap → Squid → Dante → origin', { skip: noSquid ?? noDante ?? false }, () => {
  let origin: Origin;
  let squid: Squid;
  let dante: Dante;
  let proxy: TestProxy;
  let dir: string;
  before(async () => {
    origin = await startOrigin();
    squid = await startSquid();
    dante = await startDante({ auth: 'none' });
    const { mkdtempSync, writeFileSync } = await import('node:fs');
    const { join } = await import('node:path');
    const { tmpdir } = await import('node:os');
    dir = mkdtempSync(join(tmpdir(), 'sockstap-chain-'));
    const file = join(dir, 'chain.yaml');
    writeFileSync(
      file,
      [
        'listen: ["127.0.0.1:0/socks"]',
        'routes:',
        `  - via: ["http://127.0.0.1:${squid.port},socks5://127.0.0.1:${dante.port}"]`,
        '',
      ].join('\n'),
    );
    proxy = await startProxy(['-f', file]);
  });
  after(async () => {
    await proxy.stop();
    proxy.cleanup();
    await dante.stop();
    await squid.stop();
    await origin.close();
    const { rmSync } = await import('node:fs');
    rmSync(dir, { recursive: true, force: true });
  });

  it('fetches through both hops and records the chain', async () => {
    const r = await curl(['--socks5-hostname', `127.0.0.1:${proxy.port()}`, `http://localhost:${origin.port}/chain`]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.equals(PAGE));
    await waitUntil(() => squid.accessLog().includes(`CONNECT 127.0.0.1:${dante.port}`), 'squid logged no CONNECT to Dante');
    await proxy.stop(2000);
    const s = proxy.sessions().find((x) => x.result === 'ok');
    assert.equal(s?.route, `http://127.0.0.1:${squid.port},socks5://127.0.0.1:${dante.port}`);
  });
});

/** Squid writes its log a little after the answer: poll for it (bounded). */
async function waitUntil(check: () => boolean, message: string, timeoutMs = 10_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > until) assert.fail(message);
    await new Promise((r) => setTimeout(r, 100));
  }
}
