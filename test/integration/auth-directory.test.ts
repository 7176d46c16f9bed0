/**
 * AUTHORIZER=-ldap{URL,BASEDN,FILTER} against a real slapd and AUTHORIZER=-radius{HOST:PORT,SECRET}
 * against a real FreeRADIUS (issue 19 item 1): every door's credentials (SOCKS5, HTTP Basic)
 * checked by the server, answers cached for AUTHTTL, a server that does not answer refused at the
 * time limit, SOCKS4 refused, no password (nor the RADIUS secret, nor the LDAP bind password) in
 * any log. The users' groups (memberOf / groupOfNames, RADIUS Filter-Id) as `group:NAME` scopes are
 * in groups.test.ts.
 */
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import http from 'node:http';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { SocksClient } from 'socks';
import { loadConfig } from '../../src/config/load.js';
import { ConfigError } from '../../src/config/types.js';
import { escapeFilterValue } from '../../src/policy/ldap-auth.js';
import { startEcho, startOrigin, type EchoServer, type Origin } from '../helpers/origin.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';
import { freeradiusMissing, startFreeRadius, type FreeRadius } from '../helpers/freeradius.js';
import { ROOT_DN, ROOT_PW, SUFFIX, slapdMissing, startSlapd, type Slapd } from '../helpers/slapd.js';
import { LDAP_USERS, RADIUS_SECRET, RADIUS_USERS, directoryLdif, radiusUsers } from '../helpers/directory.js';

let echo: EchoServer;
let origin: Origin;
before(async () => {
  echo = await startEcho();
  origin = await startOrigin();
});
after(async () => {
  await echo.close();
  await origin.close();
});

export async function socks5(port: number, dst: number, userId: string, password: string): Promise<'ok' | 'refused'> {
  try {
    const { socket } = await SocksClient.createConnection({
      proxy: { host: '127.0.0.1', port, type: 5, userId, password },
      command: 'connect',
      destination: { host: '127.0.0.1', port: dst },
      timeout: 20_000,
    });
    socket.write('ping');
    const got = await new Promise<string>((resolve) => {
      socket.once('data', (d: Buffer) => resolve(d.toString()));
      socket.once('close', () => resolve(''));
    });
    socket.destroy();
    return got === 'ping' ? 'ok' : 'refused';
  } catch {
    return 'refused';
  }
}

function basic(user: string, password: string): string {
  return `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
}

function httpGet(port: number, auth?: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port, path: origin.url('/dir'), agent: false, headers: auth ? { 'proxy-authorization': auth } : {} },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

/** Polls (the log is written asynchronously); gives up after 10 s. */
async function logMatches(proxy: TestProxy, re: RegExp): Promise<void> {
  for (let i = 0; i < 200 && !re.test(proxy.readLog('sockstap.log')); i++) await new Promise((r) => setTimeout(r, 50));
  assert.match(proxy.readLog('sockstap.log'), re);
}

function assertNoSecret(proxy: TestProxy, secrets: readonly string[]): void {
  for (const name of ['sockstap.log', 'access.log', 'sessions.jsonl']) {
    const text = proxy.readLog(name);
    for (const s of secrets) assert.ok(!text.includes(s), `${name} holds a secret`);
  }
}

describe('AUTHORIZER=-ldap{} against slapd', { skip: slapdMissing() ?? false }, () => {
  let slapd: Slapd;
  let proxy: TestProxy;
  before(async () => {
    slapd = await startSlapd();
    slapd.add(directoryLdif());
    proxy = await startProxy([
      '-P127.0.0.1:0/socks',
      '-P127.0.0.1:0/http',
      `AUTHORIZER=-ldap{${slapd.url},ou=people,${SUFFIX},(&(objectClass=inetOrgPerson)(uid=%s))},binddn={${ROOT_DN}},bindpass=${ROOT_PW},groupbase={ou=groups,${SUFFIX}}`,
      'AUTHTTL=60s/60s',
      'RELAY=js',
    ]);
  });
  after(async () => {
    await proxy?.stop();
    proxy?.cleanup();
    await slapd?.stop();
  });

  test('SOCKS5 and HTTP Basic are checked by an LDAP bind', async () => {
    assert.equal(await socks5(proxy.port('socks'), echo.port, 'alice', LDAP_USERS.alice), 'ok');
    assert.equal(await socks5(proxy.port('socks'), echo.port, 'alice', 'wrong-ldap-pw'), 'refused');
    assert.equal(await socks5(proxy.port('socks'), echo.port, 'nobody', 'x'), 'refused');
    // A filter injection does not match everybody: `*` is escaped.
    assert.equal(await socks5(proxy.port('socks'), echo.port, '*', LDAP_USERS.bob), 'refused');
    assert.equal(await httpGet(proxy.port('http'), basic('bob', LDAP_USERS.bob)), 200);
    assert.equal(await httpGet(proxy.port('http'), basic('bob', 'wrong-ldap-pw')), 407);
    // An empty password would be an unauthenticated bind, which slapd accepts: refused unasked.
    assert.equal(await httpGet(proxy.port('http'), basic('bob', '')), 407);
  });

  test('answers are cached: the same credentials with the server stopped still pass', async () => {
    const accounts = proxy.proxy.config().accounts as unknown as { stats: { asked: number; cached: number } };
    const asked = accounts.stats.asked;
    assert.equal(await socks5(proxy.port('socks'), echo.port, 'alice', LDAP_USERS.alice), 'ok');
    assert.equal(await socks5(proxy.port('socks'), echo.port, 'alice', 'wrong-ldap-pw'), 'refused');
    assert.equal(accounts.stats.asked, asked, 'both answers came from the cache');
  });

  test('no password and no bind password in any log', () => {
    assertNoSecret(proxy, [...Object.values(LDAP_USERS), 'wrong-ldap-pw', ROOT_PW]);
  });
});

describe('AUTHORIZER=-ldap{} with a server that never answers', () => {
  test('refused at the time limit, not cached; the log names the user only', async () => {
    const sockets: net.Socket[] = [];
    const silent = net.createServer((s) => sockets.push(s));
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const port = (silent.address() as net.AddressInfo).port;
    const proxy = await startProxy(['-P127.0.0.1:0/socks', `AUTHORIZER=-ldap{ldap://127.0.0.1:${port},${SUFFIX}},timeout=400ms`, 'RELAY=js']);
    try {
      assert.equal(await socks5(proxy.port('socks'), echo.port, 'alice', 'hanging-pw-1'), 'refused');
      await logMatches(proxy, /LDAP server did not answer in time: refused user=alice/);
      assert.ok(!proxy.readLog('sockstap.log').includes('hanging-pw-1'));
    } finally {
      await proxy.stop();
      proxy.cleanup();
      for (const s of sockets) s.destroy();
      silent.close();
    }
  });
});

describe('AUTHORIZER=-ldap{} and -radius{} syntax', () => {
  test('bad values are clear start errors', () => {
    const bad = (v: string, re: RegExp) => assert.throws(() => loadConfig(['-P127.0.0.1:0', `AUTHORIZER=${v}`]), (e: unknown) => e instanceof ConfigError && re.test(e.message));
    bad('-ldap{http://x,dc=a}', /ldap:\/\/HOST/);
    bad('-ldap{ldap://x}', /URL,BASEDN,FILTER/);
    bad('-ldap{ldap://x,dc=a,(cn=fixed)}', /%s/);
    bad('-ldap{ldap://x,dc=a},colour=red', /unknown -ldap\{\} option/);
    bad('-ldap{ldap://x,dc=a', /unclosed/);
    bad('-radius{127.0.0.1,secret}', /HOST:PORT/);
    bad('-radius{127.0.0.1:1812,}', /secret is empty/);
    bad('-radius{127.0.0.1:1812,s},retries=0', /1 to 10/);
  });

  test('the RADIUS secret and LDAP bind password are not in the printed source', () => {
    const r = loadConfig(['-P127.0.0.1:0', 'AUTHORIZER=-radius{127.0.0.1:1812,top-secret-r}']);
    assert.equal(r.accounts?.source, '-radius{127.0.0.1:1812,***}');
    const l = loadConfig(['-P127.0.0.1:0', 'AUTHORIZER=-ldap{ldap://127.0.0.1:389,dc=a,dc=b},binddn={cn=x,dc=a,dc=b},bindpass=top-secret-l']);
    assert.ok(!l.accounts!.source.includes('top-secret-l'));
    assert.match(l.accounts!.source, /^-ldap\{ldap:\/\/127\.0\.0\.1:389,dc=a,dc=b,\(uid=%s\)\},binddn=\{cn=x,dc=a,dc=b\}$/);
  });

  test('RFC 4515 escaping of the user name in the filter', () => {
    assert.equal(escapeFilterValue('a*b(c)\\d\0'), 'a\\2ab\\28c\\29\\5cd\\00');
  });
});

describe('AUTHORIZER=-radius{} against FreeRADIUS', { skip: freeradiusMissing() ?? false }, () => {
  let radius: FreeRadius;
  let proxy: TestProxy;
  before(async () => {
    radius = await startFreeRadius(RADIUS_SECRET, radiusUsers());
    proxy = await startProxy(['-P127.0.0.1:0/socks', '-P127.0.0.1:0/http', `AUTHORIZER=-radius{127.0.0.1:${radius.port},${RADIUS_SECRET}}`, 'RELAY=js']);
  });
  after(async () => {
    await proxy?.stop();
    proxy?.cleanup();
    await radius?.stop();
  });

  test('SOCKS5 and HTTP Basic are checked by a PAP Access-Request', async () => {
    assert.equal(await socks5(proxy.port('socks'), echo.port, 'dave', RADIUS_USERS.dave), 'ok');
    assert.equal(await socks5(proxy.port('socks'), echo.port, 'dave', 'wrong-radius-pw'), 'refused');
    assert.equal(await httpGet(proxy.port('http'), basic('erin', RADIUS_USERS.erin)), 200);
    assert.equal(await httpGet(proxy.port('http'), basic('erin', 'wrong-radius-pw')), 407);
    assert.equal(await httpGet(proxy.port('http'), basic('zed', 'x')), 407);
  });

  test('answers are cached (AUTHTTL default): asked once per credentials', async () => {
    const accounts = proxy.proxy.config().accounts as unknown as { stats: { asked: number } };
    const asked = accounts.stats.asked;
    assert.equal(await socks5(proxy.port('socks'), echo.port, 'dave', RADIUS_USERS.dave), 'ok');
    assert.equal(await httpGet(proxy.port('http'), basic('erin', 'wrong-radius-pw')), 407);
    assert.equal(accounts.stats.asked, asked);
  });

  test('SOCKS4 carries no password: refused', async () => {
    await assert.rejects(
      SocksClient.createConnection({ proxy: { host: '127.0.0.1', port: proxy.port('socks'), type: 4, userId: 'dave' }, command: 'connect', destination: { host: '127.0.0.1', port: echo.port }, timeout: 10_000 }),
    );
  });

  test('a wrong shared secret (the server drops the request): the client is refused at the time limit', async () => {
    const p = await startProxy(['-P127.0.0.1:0/socks', `AUTHORIZER=-radius{127.0.0.1:${radius.port},not-the-secret},timeout=600ms,retries=2`, 'RELAY=js']);
    try {
      assert.equal(await socks5(p.port('socks'), echo.port, 'dave', RADIUS_USERS.dave), 'refused');
      await logMatches(p, /RADIUS server did not answer in time: refused user=dave/);
      assertNoSecret(p, ['not-the-secret', RADIUS_USERS.dave]);
    } finally {
      await p.stop();
      p.cleanup();
    }
  });

  test('no password and no secret in any log', () => {
    assertNoSecret(proxy, [...Object.values(RADIUS_USERS), 'wrong-radius-pw', RADIUS_SECRET]);
  });
});

describe('AUTHORIZER=-radius{} with a server that never answers', () => {
  test('refused at the time limit', async () => {
    const silent = dgram.createSocket('udp4');
    await new Promise<void>((r) => silent.bind(0, '127.0.0.1', r));
    const proxy = await startProxy(['-P127.0.0.1:0/socks', `AUTHORIZER=-radius{127.0.0.1:${silent.address().port},s3cret},timeout=400ms`, 'RELAY=js']);
    try {
      assert.equal(await socks5(proxy.port('socks'), echo.port, 'dave', 'x'), 'refused');
      await logMatches(proxy, /RADIUS server did not answer in time/);
    } finally {
      await proxy.stop();
      proxy.cleanup();
      silent.close();
    }
  });
});
