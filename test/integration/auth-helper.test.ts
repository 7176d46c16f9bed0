/**
 * AUTHORIZER=-cmd{PROGRAM ARGS} (issue 19 item 1): a helper speaking Squid's basic-auth helper
 * protocol checks the accounts of every door (SOCKS5 user/password, HTTP Basic on absolute-form
 * requests and CONNECT); answers are cached for AUTHTTL; a helper that hangs is given up on at its
 * time limit (the client is refused, the others are served); a helper that dies is restarted; no
 * password reaches any log. With Squid's own basic_ncsa_auth against an htpasswd file when Debian's
 * squid package is installed.
 */
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { SocksClient } from 'socks';
import { loadConfig } from '../../src/config/load.js';
import { ConfigError } from '../../src/config/types.js';
import { apr1Crypt } from '../../src/policy/accounts.js';
import { startEcho, startOrigin, type EchoServer, type Origin } from '../helpers/origin.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';

const NCSA = '/usr/lib/squid/basic_ncsa_auth';
const PASSWORDS = { alice: 'wonder land%', 'bob@corp': 'p@ss:w0rd/+', chatty: 'Chatty-Secret-42' };

/**
 * The test's helper: Squid's protocol, serial or with channel IDs (argv[2] = "concurrent"). Each
 * question is appended to argv[1] (user only), so the test counts what reached the helper. User
 * "slow" is never answered; "crash" makes it exit; "chatty" gets its password echoed on stderr.
 */
const HELPER = `#!/usr/bin/python3
import sys, time, urllib.parse
count_file = sys.argv[1]
concurrent = len(sys.argv) > 2 and sys.argv[2] == 'concurrent'
accounts = ${JSON.stringify(PASSWORDS)}
for line in sys.stdin:
    words = line.rstrip('\\n').split(' ')
    channel = words.pop(0) + ' ' if concurrent else ''
    user = urllib.parse.unquote(words[0])
    password = urllib.parse.unquote(words[1]) if len(words) > 1 else ''
    with open(count_file, 'a') as f:
        f.write(user + '\\n')
    if user == 'slow':
        if concurrent:
            continue
        time.sleep(3600)
    if user == 'crash':
        sys.exit(3)
    if user == 'chatty':
        sys.stderr.write('checking chatty with password ' + password + '\\n')
        sys.stderr.flush()
    ok = accounts.get(user) == password
    sys.stdout.write(channel + ('OK' if ok else 'ERR message="no"') + '\\n')
    sys.stdout.flush()
`;

let dir: string;
let helperPath: string;
let echo: EchoServer;
let origin: Origin;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sockstap-authcmd-'));
  helperPath = join(dir, 'helper.py');
  writeFileSync(helperPath, HELPER);
  chmodSync(helperPath, 0o755);
  echo = await startEcho();
  origin = await startOrigin();
});
after(async () => {
  await echo.close();
  await origin.close();
  rmSync(dir, { recursive: true, force: true });
});

function asked(file: string): string[] {
  return existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter(Boolean) : [];
}

/** A SOCKS5 CONNECT to the echo server with these credentials: 'ok' when the echo answers. */
async function socks5(proxy: TestProxy, userId: string, password: string): Promise<'ok' | 'refused'> {
  try {
    const { socket } = await SocksClient.createConnection({
      proxy: { host: '127.0.0.1', port: proxy.port('socks'), type: 5, userId, password },
      command: 'connect',
      destination: { host: '127.0.0.1', port: echo.port },
      timeout: 20_000,
    });
    socket.write('ping');
    const got = await new Promise<string>((resolve) => socket.once('data', (d: Buffer) => resolve(d.toString())));
    socket.destroy();
    return got === 'ping' ? 'ok' : 'refused';
  } catch {
    return 'refused';
  }
}

function basic(user: string, password: string): string {
  return `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
}

/** An absolute-form GET through the HTTP door: the status. */
function httpGet(proxy: TestProxy, auth?: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port: proxy.port('http'), path: origin.url('/authcmd'), agent: false, headers: auth ? { 'proxy-authorization': auth } : {} },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

/** A CONNECT through the HTTP door: the status line. */
function connect(proxy: TestProxy, auth: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(proxy.port('http'), '127.0.0.1', () => {
      s.write(`CONNECT 127.0.0.1:${echo.port} HTTP/1.1\r\nHost: x\r\nProxy-Authorization: ${auth}\r\n\r\n`);
    });
    let buf = '';
    s.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      if (buf.includes('\r\n')) {
        s.destroy();
        resolve(buf.split('\r\n')[0]!);
      }
    });
    s.on('error', reject);
  });
}

/** Polls (logs and the helper's count file are written asynchronously); gives up after 10 s. */
async function until(check: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !check(); i++) await new Promise((r) => setTimeout(r, 50));
}

function assertNoPassword(proxy: TestProxy): void {
  for (const name of ['sockstap.log', 'access.log', 'sessions.jsonl']) {
    const text = proxy.readLog(name);
    for (const pw of [...Object.values(PASSWORDS), 'wrong-password-1', 'wrong-password-2']) {
      assert.ok(!text.includes(pw), `${name} holds a password`);
      assert.ok(!text.includes(encodeURIComponent(pw)), `${name} holds an escaped password`);
    }
  }
}

describe('AUTHORIZER=-cmd{} with a serial helper', () => {
  let proxy: TestProxy;
  let counts: string;

  before(async () => {
    counts = join(dir, 'serial.count');
    proxy = await startProxy([
      '-P127.0.0.1:0/socks',
      '-P127.0.0.1:0/http',
      `AUTHORIZER=-cmd{${helperPath} ${counts}},timeout=1500ms,children=1`,
      'AUTHTTL=60s/60s',
      'RELAY=js',
    ]);
  });
  after(async () => {
    await proxy.stop();
    proxy.cleanup();
  });

  test('SOCKS5 user/password and HTTP Basic are checked by the helper, with URL-escaped fields', async () => {
    assert.equal(await socks5(proxy, 'alice', PASSWORDS.alice), 'ok');
    assert.equal(await socks5(proxy, 'alice', 'wrong-password-1'), 'refused');
    assert.equal(await httpGet(proxy, basic('bob@corp', PASSWORDS['bob@corp'])), 200);
    assert.equal(await httpGet(proxy, basic('bob@corp', 'wrong-password-2')), 407);
    assert.equal(await httpGet(proxy), 407);
    assert.match(await connect(proxy, basic('alice', PASSWORDS.alice)), /^HTTP\/1\.1 200 /);
    assert.match(await connect(proxy, basic('alice', 'wrong-password-1')), /^HTTP\/1\.1 407 /);
  });

  test('answers are cached: a success and a failure each reached the helper once', async () => {
    const before = asked(counts).length;
    assert.equal(await socks5(proxy, 'alice', PASSWORDS.alice), 'ok');
    assert.equal(await httpGet(proxy, basic('alice', PASSWORDS.alice)), 200);
    assert.equal(await socks5(proxy, 'alice', 'wrong-password-1'), 'refused');
    assert.equal(asked(counts).length, before, 'no new question for cached answers');
    assert.equal(asked(counts).filter((u) => u === 'alice').length, 2, 'one success, one failure');
  });

  test('a helper that hangs: that client is refused at the time limit, the others are served', async () => {
    const slow = socks5(proxy, 'slow', 'x');
    await until(() => asked(counts).includes('slow'));
    // Asked while the helper is stuck on "slow": served once the stuck helper is replaced.
    const other = httpGet(proxy, basic('chatty', PASSWORDS.chatty));
    assert.equal(await slow, 'refused');
    assert.equal(await other, 200);
    await until(() => /auth helper stopped/.test(proxy.readLog('sockstap.log')));
    assert.match(proxy.readLog('sockstap.log'), /auth helper did not answer in time: refused user=slow/);
    assert.match(proxy.readLog('sockstap.log'), /auth helper stopped .*reason="did not answer in time"/);
  });

  test('a helper that dies is restarted; the question that killed it is refused', async () => {
    assert.equal(await socks5(proxy, 'crash', 'x'), 'refused');
    assert.equal(await socks5(proxy, 'bob@corp', PASSWORDS['bob@corp']), 'ok');
    await until(() => /auth helper exited .*code=3/.test(proxy.readLog('sockstap.log')));
    assert.match(proxy.readLog('sockstap.log'), /auth helper exited .*code=3/);
    assert.equal(asked(counts).filter((u) => u === 'crash').length, 2, 'asked once more after the first death');
  });

  test('SOCKS4 carries no password: refused with a helper', async () => {
    await assert.rejects(
      SocksClient.createConnection({
        proxy: { host: '127.0.0.1', port: proxy.port('socks'), type: 4, userId: 'alice' },
        command: 'connect',
        destination: { host: '127.0.0.1', port: echo.port },
        timeout: 10_000,
      }),
    );
  });

  test('no password in any log (the helper stderr is masked)', async () => {
    await until(() => /checking chatty/.test(proxy.readLog('sockstap.log')));
    const log = proxy.readLog('sockstap.log');
    assert.match(log, /auth helper stderr/);
    assert.match(log, /checking chatty with password \*\*\*/);
    assertNoPassword(proxy);
  });
});

describe('AUTHORIZER=-cmd{} with channel IDs (concurrency)', () => {
  let proxy: TestProxy;
  let counts: string;

  before(async () => {
    counts = join(dir, 'concurrent.count');
    proxy = await startProxy(['-P127.0.0.1:0/socks', `AUTHORIZER=-cmd{${helperPath} ${counts} concurrent},concurrency=8,timeout=1s`, 'AUTHTTL=0', 'RELAY=js']);
  });
  after(async () => {
    await proxy.stop();
    proxy.cleanup();
  });

  test('a question never answered times out alone; the same helper answers the others', async () => {
    const slow = socks5(proxy, 'slow', 'x');
    const good = await Promise.all([socks5(proxy, 'alice', PASSWORDS.alice), socks5(proxy, 'bob@corp', PASSWORDS['bob@corp']), socks5(proxy, 'alice', 'nope')]);
    assert.deepEqual(good, ['ok', 'ok', 'refused']);
    assert.equal(await slow, 'refused');
    // AUTHTTL=0: nothing cached, each question asked.
    assert.equal(await socks5(proxy, 'alice', PASSWORDS.alice), 'ok');
    assert.equal(asked(counts).filter((u) => u === 'alice').length, 3);
    assert.doesNotMatch(proxy.readLog('sockstap.log'), /auth helper stopped/);
  });
});

describe('ADMINAUTH=-cmd{}', () => {
  test('the admin server asks the helper too', async () => {
    const counts = join(dir, 'admin.count');
    const proxy = await startProxy(['-P127.0.0.1:0/socks', 'ADMIN=127.0.0.1:0', `ADMINAUTH=-cmd{${helperPath} ${counts}}`]);
    const status = (auth?: string): Promise<number> =>
      new Promise((resolve, reject) => {
        http
          .get(`${proxy.proxy.adminUrl!}api/stats`, { headers: auth ? { authorization: auth } : {} }, (res) => {
            res.resume();
            res.on('end', () => resolve(res.statusCode ?? 0));
          })
          .on('error', reject);
      });
    try {
      assert.equal(await status(basic('alice', PASSWORDS.alice)), 200);
      assert.equal(await status(basic('alice', 'wrong-password-1')), 401);
      assert.equal(await status(), 401);
      assert.deepEqual(asked(counts), ['alice', 'alice']);
    } finally {
      await proxy.stop();
      proxy.cleanup();
    }
  });
});

describe('AUTHTTL expiry', () => {
  test('an answer is asked again once its time is over', async () => {
    const counts = join(dir, 'ttl.count');
    const proxy = await startProxy(['-P127.0.0.1:0/socks', `AUTHORIZER=-cmd{${helperPath} ${counts}}`, 'AUTHTTL=200ms', 'RELAY=js']);
    try {
      assert.equal(await socks5(proxy, 'alice', PASSWORDS.alice), 'ok');
      assert.equal(await socks5(proxy, 'alice', PASSWORDS.alice), 'ok');
      assert.equal(asked(counts).length, 1);
      await new Promise((r) => setTimeout(r, 400));
      assert.equal(await socks5(proxy, 'alice', PASSWORDS.alice), 'ok');
      assert.equal(asked(counts).length, 2);
    } finally {
      await proxy.stop();
      proxy.cleanup();
    }
  });
});

describe('reload', () => {
  test('a reload starts a new helper with an empty cache; stop ends every helper', async () => {
    const counts = join(dir, 'reload.count');
    const proxy = await startProxy(['-P127.0.0.1:0/socks', `AUTHORIZER=-cmd{${helperPath} ${counts}}`, 'RELAY=js']);
    try {
      assert.equal(await socks5(proxy, 'alice', PASSWORDS.alice), 'ok');
      await proxy.proxy.reloadFromOrigin();
      assert.equal(await socks5(proxy, 'alice', PASSWORDS.alice), 'ok');
      assert.equal(asked(counts).length, 2, 'the new configuration asked its own helper');
      await proxy.stop();
      assert.equal((proxy.readLog('sockstap.log').match(/auth helper started/g) ?? []).length, 2);
    } finally {
      await proxy.stop();
      proxy.cleanup();
    }
  });
});

describe('Squid basic_ncsa_auth', { skip: existsSync(NCSA) ? false : `${NCSA} is missing (apt-get install squid)` }, () => {
  test('checks an htpasswd file through the helper protocol', async () => {
    const file = join(dir, 'ncsa.htpasswd');
    writeFileSync(file, `carol:${apr1Crypt('c@rol pw', 'sAlT1234')}\n`);
    const proxy = await startProxy(['-P127.0.0.1:0/socks', '-P127.0.0.1:0/http', `AUTHORIZER=-cmd{${NCSA} ${file}}`, 'RELAY=js']);
    try {
      assert.equal(await socks5(proxy, 'carol', 'c@rol pw'), 'ok');
      assert.equal(await socks5(proxy, 'carol', 'not it'), 'refused');
      assert.equal(await httpGet(proxy, basic('carol', 'c@rol pw')), 200);
      assert.equal(await httpGet(proxy, basic('mallory', 'c@rol pw')), 407);
      assert.ok(!proxy.readLog('sockstap.log').includes('c@rol pw'));
    } finally {
      await proxy.stop();
      proxy.cleanup();
    }
  });
});

describe('AUTHORIZER=-cmd{} configuration errors', () => {
  test('a program that is not there, or a bad option, is a configuration error', () => {
    assert.throws(() => loadConfig(['AUTHORIZER=-cmd{/nonexistent/helper -x}']), (e: unknown) => e instanceof ConfigError && /not an executable file/.test(e.message));
    assert.throws(() => loadConfig(['AUTHORIZER=-cmd{}']), (e: unknown) => e instanceof ConfigError && /names no program/.test(e.message));
    assert.throws(() => loadConfig([`AUTHORIZER=-cmd{${helperPath}},children=0`]), (e: unknown) => e instanceof ConfigError && /children/.test(e.message));
    assert.throws(() => loadConfig([`AUTHORIZER=-cmd{${helperPath}},bogus=1`]), (e: unknown) => e instanceof ConfigError && /unknown -cmd/.test(e.message));
    assert.throws(() => loadConfig(['AUTHTTL=1m/']), (e: unknown) => e instanceof ConfigError && /AUTHTTL/.test(e.message));
    const c = loadConfig([`AUTHORIZER=-cmd{${helperPath} a "b c"},concurrency=4`, 'AUTHTTL=2m/5s']);
    assert.equal(c.accounts?.source, `-cmd{${helperPath} a b c},concurrency=4`);
    assert.deepEqual(c.authTtl, { okMs: 120_000, errMs: 5_000 });
  });
});
