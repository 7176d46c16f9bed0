/**
 * Policy at accept and at the destination, on every door: RELIABLE, PERMIT/REJECT by destination
 * and user, MAXIMA, credentials. Each refusal gets its door's reply (or a clean close at accept),
 * a log line, and a well-behaved client is served at the same moment. No password is ever logged.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { SocksClient } from 'socks';
import { curl, PAGE, startEcho, startOrigin, type EchoServer, type Origin } from '../helpers/origin.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';

let origin: Origin;
let echo: EchoServer;
before(async () => {
  origin = await startOrigin();
  echo = await startEcho();
});
after(async () => {
  await origin.close();
  await echo.close();
});

/** Open a TCP connection from a chosen loopback source address and see what the proxy does. */
function greetFrom(localAddress: string, port: number, bytes: Buffer): Promise<{ data: Buffer; closed: boolean }> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port, localAddress });
    const chunks: Buffer[] = [];
    s.on('data', (d) => chunks.push(d));
    s.on('error', (err: NodeJS.ErrnoException) => (err.code === 'ECONNRESET' ? undefined : reject(err)));
    s.on('close', () => resolve({ data: Buffer.concat(chunks), closed: true }));
    s.on('connect', () => s.write(bytes));
    setTimeout(() => {
      s.destroy();
      resolve({ data: Buffer.concat(chunks), closed: false });
    }, 3000).unref();
  });
}

function allFilesUnder(dir: string): string {
  let text = '';
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    text += e.isDirectory() ? allFilesUnder(p) : readFileSync(p, 'utf8');
  }
  return text;
}

describe('RELIABLE', () => {
  let proxy: TestProxy;
  before(async () => {
    proxy = await startProxy(['-P127.0.0.1:0/auto', 'RELIABLE=127.0.0.1']);
  });
  after(async () => {
    await proxy.stop();
    proxy.cleanup();
  });

  test('a source outside RELIABLE is closed and logged; a reliable one is served meanwhile', async () => {
    const [refused, served] = await Promise.all([
      greetFrom('127.0.0.2', proxy.port(), Buffer.from([5, 1, 0])),
      curl(['--socks5', `127.0.0.1:${proxy.port()}`, origin.url('/reliable')]),
    ]);
    assert.equal(refused.closed, true);
    assert.equal(refused.data.length, 0, 'a refused source got a SOCKS answer');
    assert.equal(served.code, 0, served.stderr);
    assert.ok(served.stdout.equals(PAGE));
    await proxy.stop();
    assert.match(proxy.readLog('sockstap.log'), /source refused client=127\.0\.0\.2:\d+ .*by="?RELIABLE=127\.0\.0\.1/);
  });
});

describe('PERMIT / REJECT and accounts', () => {
  let proxy: TestProxy;
  before(async () => {
    proxy = await startProxy([
      '-P127.0.0.1:0/socks',
      '-P127.0.0.1:0/http',
      'AUTHORIZER=-list{alice:wonder-pass-1,bob:builder-pass-2}',
      `REJECT=*:{127.0.0.1:${echo.port}}:bob@*`,
      'REJECT=*:blocked.example,*.blocked.example:*',
    ]);
  });
  after(async () => {
    await proxy.stop();
    proxy.cleanup();
  });

  test('SOCKS5 wrong password is refused (RFC 1929 status), right one served', async () => {
    await assert.rejects(
      SocksClient.createConnection({
        proxy: { host: '127.0.0.1', port: proxy.port('socks'), type: 5, userId: 'alice', password: 'nope' },
        command: 'connect',
        destination: { host: '127.0.0.1', port: echo.port },
        timeout: 5000,
      }),
    );
    const ok = await curl(['--socks5', `127.0.0.1:${proxy.port('socks')}`, '--proxy-user', 'alice:wonder-pass-1', origin.url('/alice')]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.ok(ok.stdout.equals(PAGE));
  });

  test('a REJECTed destination gets SOCKS5 REP 2 for bob but not for alice', async () => {
    await assert.rejects(
      SocksClient.createConnection({
        proxy: { host: '127.0.0.1', port: proxy.port('socks'), type: 5, userId: 'bob', password: 'builder-pass-2' },
        command: 'connect',
        destination: { host: '127.0.0.1', port: echo.port },
        timeout: 5000,
      }),
      /not allowed|ruleset|Socks5 proxy rejected/i,
    );
    const { socket } = await SocksClient.createConnection({
      proxy: { host: '127.0.0.1', port: proxy.port('socks'), type: 5, userId: 'alice', password: 'wonder-pass-1' },
      command: 'connect',
      destination: { host: '127.0.0.1', port: echo.port },
    });
    socket.destroy();
  });

  test('a REJECTed name gets 403 on the HTTP door, 407 without credentials', async () => {
    const noAuth = await curl(['-x', `http://127.0.0.1:${proxy.port('http')}`, '-o', '/dev/null', '-w', '%{http_code}', 'http://www.blocked.example/']);
    assert.equal(noAuth.stdout.toString(), '407');
    const denied = await curl([
      '-x', `http://127.0.0.1:${proxy.port('http')}`, '--proxy-user', 'alice:wonder-pass-1',
      '-o', '/dev/null', '-w', '%{http_code}', 'http://www.blocked.example/',
    ]);
    assert.equal(denied.stdout.toString(), '403');
    const deniedConnect = await curl([
      '-p', '-x', `http://127.0.0.1:${proxy.port('http')}`, '--proxy-user', 'alice:wonder-pass-1', 'http://blocked.example/',
    ]);
    assert.notEqual(deniedConnect.code, 0);
    assert.match(deniedConnect.stderr, /403/);
  });

  test('refusals are logged and no password appears in any log', async () => {
    await proxy.stop();
    const log = proxy.readLog('sockstap.log');
    assert.match(log, /refused .*user=bob .*code=EDENIED/);
    assert.match(proxy.readLog('access.log'), /TCP_DENIED\/403 .*http:\/\/www\.blocked\.example\//);
    const everything = allFilesUnder(proxy.logDir);
    for (const secret of ['wonder-pass-1', 'builder-pass-2', 'nope', Buffer.from('alice:wonder-pass-1').toString('base64')]) {
      assert.ok(!everything.includes(secret), `a log contains the credential ${secret}`);
    }
    const users = new Set(proxy.sessions().map((r) => r.user));
    assert.ok(users.has('alice') && users.has('bob'));
  });
});

describe('MAXIMA', () => {
  let proxy: TestProxy;
  before(async () => {
    proxy = await startProxy(['-P127.0.0.1:0/socks', 'MAXIMA=persrc:1']);
  });
  after(async () => {
    await proxy.stop();
    proxy.cleanup();
  });

  test('a second connection from the same source is closed while the first lives; others are served', async () => {
    const { socket } = await SocksClient.createConnection({
      proxy: { host: '127.0.0.1', port: proxy.port(), type: 5 },
      command: 'connect',
      destination: { host: '127.0.0.1', port: echo.port },
    });
    const [second, other] = await Promise.all([
      greetFrom('127.0.0.1', proxy.port(), Buffer.from([5, 1, 0])),
      greetFrom('127.0.0.3', proxy.port(), Buffer.from([5, 1, 0])),
    ]);
    assert.equal(second.closed, true);
    assert.equal(second.data.length, 0);
    assert.deepEqual([...other.data], [5, 0], 'another source was not served');
    socket.destroy();
    await proxy.stop();
    assert.match(proxy.readLog('sockstap.log'), /connection limit .*MAXIMA=persrc/);
  });
});
