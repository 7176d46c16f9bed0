/**
 * Issue 13, findings 4 and 5: address rules check the address that is dialed, and the proxy
 * never relays to itself.
 *
 * - `REJECT=*:127.0.0.0/8:*` holds for a name of YAML `dns.hosts`, a trailing-dot name
 *   (`LOCALHOST.`), `0.0.0.0`, `::`, `::ffff:0.0.0.0` and IPv4-mapped forms (Squid's
 *   `to_localhost`), on the SOCKS and HTTP doors;
 * - a name whose answer changes between two lookups (DNS rebinding) is resolved once per
 *   connection, checked and dialed as resolved: the OS resolver is replaced for one name by one
 *   that answers 127.0.0.1 first and 127.0.0.2 after (the sockets are real);
 * - the admin address and the proxy's own listeners are refused destinations on every door,
 *   with or without rules, on every local spelling, also behind a wildcard listener.
 */
import assert from 'node:assert/strict';
import { createRequire, syncBuiltinESMExports } from 'node:module';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { SocksClient } from 'socks';
import { curl, startEcho, type EchoServer } from '../helpers/origin.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';

/** A SOCKS5 CONNECT through `port`; resolves 'ok' after an echo round trip, else the error text. */
async function socks5(port: number, host: string, dstPort: number, type: 4 | 5 = 5): Promise<string> {
  try {
    const { socket } = await SocksClient.createConnection({
      proxy: { host: '127.0.0.1', port, type, ...(type === 4 ? { userId: '' } : {}) },
      command: 'connect',
      destination: { host, port: dstPort },
      timeout: 10_000,
    });
    socket.destroy();
    return 'ok';
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  }
}

/** An HTTP server on `host:port` (0: any) that answers its own name. */
function namedOrigin(name: string, host: string, port = 0): Promise<http.Server> {
  const server = http.createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', connection: 'close' });
    res.end(`${name}\n`);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve(server));
  });
}

function portOf(server: http.Server): number {
  return (server.address() as net.AddressInfo).port;
}

describe('address rules check the address that is dialed (finding 4)', () => {
  let echo: EchoServer;
  let proxy: TestProxy;
  let dir: string;
  before(async () => {
    echo = await startEcho('127.0.0.1');
    dir = mkdtempSync(join(tmpdir(), 'sockstap-addr-'));
    const file = join(dir, 'dns.yaml');
    writeFileSync(file, ['listen: ["127.0.0.1:0/auto"]', 'dns:', '  hosts:', '    inside.test: 127.0.0.1', ''].join('\n'));
    proxy = await startProxy(['-f', file, 'REJECT=*:127.0.0.0/8:*']);
  });
  after(async () => {
    await proxy.stop();
    proxy.cleanup();
    await echo.close();
    rmSync(dir, { recursive: true, force: true });
  });

  for (const host of ['127.0.0.1', 'inside.test', 'INSIDE.TEST.', 'LOCALHOST.', 'localhost', '0.0.0.0', '::ffff:0.0.0.0', '::ffff:127.0.0.1', '::']) {
    test(`SOCKS5 CONNECT ${host} is refused by the rule (NotAllowed), never dialed`, async () => {
      const r = await socks5(proxy.port(), host, echo.port);
      assert.match(r, /NotAllowed/, `${host}: ${r}`);
    });
  }

  test('SOCKS4a with a dns.hosts name is refused (91)', async () => {
    const r = await socks5(proxy.port(), 'inside.test', echo.port, 4);
    assert.match(r, /\(Failed\)/, r); // 91
  });

  test('the HTTP door: http://0.0.0.0:PORT/ and http://inside.test./ get 403', async () => {
    for (const host of ['0.0.0.0', 'inside.test.', '[::ffff:0.0.0.0]']) {
      const r = await curl(['-sS', '-o', '/dev/null', '-w', '%{http_code}', '-x', `http://127.0.0.1:${proxy.port()}`, `http://${host}:${echo.port}/`]);
      assert.equal(String(r.stdout), '403', `${host}: ${String(r.stdout)} ${r.stderr}`);
    }
  });

  test('each refusal is logged with the rule', () => {
    const log = proxy.readLog('sockstap.log');
    assert.match(log, /refused by REJECT=\*:127\.0\.0\.0\/8:\*/);
  });
});

describe('one resolution per connection: DNS rebinding cannot pass the rule (finding 4)', () => {
  let allowed: http.Server;
  let victim: http.Server | null = null;
  let proxy: TestProxy;
  const cjs = createRequire(import.meta.url);
  const dnsPromises = cjs('node:dns/promises') as typeof import('node:dns/promises');
  const realLookup = dnsPromises.lookup;
  let answers = 0;
  before(async () => {
    allowed = await namedOrigin('allowed', '127.0.0.1');
    // The victim listens on the same port of another loopback address, which the rule refuses.
    victim = await namedOrigin('victim', '127.0.0.2', portOf(allowed));
    // rebind.test answers 127.0.0.1 to the first question and 127.0.0.2 to every later one.
    const fake = ((name: string, options?: unknown): Promise<unknown> => {
      if (name === 'rebind.test') {
        const address = answers++ === 0 ? '127.0.0.1' : '127.0.0.2';
        return Promise.resolve([{ address, family: 4 }]);
      }
      return (realLookup as (n: string, o?: unknown) => Promise<unknown>)(name, options);
    }) as typeof realLookup;
    dnsPromises.lookup = fake;
    syncBuiltinESMExports();
    proxy = await startProxy(['-P127.0.0.1:0/auto', 'REJECT=*:127.0.0.2:*']);
  });
  after(async () => {
    dnsPromises.lookup = realLookup;
    syncBuiltinESMExports();
    await proxy.stop();
    proxy.cleanup();
    allowed.close();
    victim?.close();
  });

  test('the rule and the dial see the same answer: the allowed server is reached', async () => {
    const r = await curl(['-sS', '--socks5-hostname', `127.0.0.1:${proxy.port()}`, `http://rebind.test:${portOf(allowed)}/`]);
    assert.equal(String(r.stdout).trim(), 'allowed', `${String(r.stdout)} ${r.stderr}`);
    assert.equal(answers, 1, 'one resolution for the connection');
  });
});

// RELAY=splice: the native accept path decides SOCKS5 CONNECTs (planTunnel, src/pipeline/plan.ts); js: the JavaScript doors.
for (const relay of ['splice', 'js']) describe(`the proxy never relays to itself (finding 5), RELAY=${relay}`, () => {
  let echo: EchoServer;
  let proxy: TestProxy;
  let admin: number;
  before(async () => {
    echo = await startEcho('127.0.0.1');
    proxy = await startProxy(['-P127.0.0.1:0/auto', '-P127.0.0.1:0/http', 'ADMIN=127.0.0.1:0', `RELAY=${relay}`]);
    admin = Number(new URL(proxy.proxy.adminUrl!).port);
  });
  after(async () => {
    await proxy.stop();
    proxy.cleanup();
    await echo.close();
  });

  test('absolute-form GET and POST to the admin address through the auto door: 403, nothing reaches the admin', async () => {
    const base = ['-sS', '-o', '/dev/null', '-w', '%{http_code}', '-x', `http://127.0.0.1:${proxy.port('auto')}`];
    const get = await curl([...base, `http://127.0.0.1:${admin}/api/sessions`]);
    assert.equal(String(get.stdout), '403', get.stderr);
    const post = await curl([...base, '-X', 'POST', `http://127.0.0.1:${admin}/api/reload`]);
    assert.equal(String(post.stdout), '403', post.stderr);
    assert.doesNotMatch(proxy.readLog('sockstap.log'), /"reloaded"/);
  });

  test('HTTP CONNECT to the admin and to the proxy own listener: 403', async () => {
    for (const target of [`127.0.0.1:${admin}`, `localhost:${proxy.port('http')}`, `[::ffff:127.0.0.1]:${admin}`]) {
      const r = await curl(['-sS', '-o', '/dev/null', '-w', '%{http_connect}', '-p', '-x', `http://127.0.0.1:${proxy.port('http')}`, `http://${target}/`]);
      assert.equal(String(r.stdout), '403', `${target}: ${String(r.stdout)} ${r.stderr}`);
    }
  });

  test('SOCKS5 CONNECT to the admin, the listeners, on every local spelling: NotAllowed', async () => {
    for (const [host, port] of [
      ['127.0.0.1', admin],
      ['0.0.0.0', admin],
      ['::ffff:127.0.0.1', proxy.port('auto')],
      ['localhost', proxy.port('http')],
      ['LOCALHOST.', proxy.port('auto')],
    ] as const) {
      const r = await socks5(proxy.port('auto'), host, port);
      assert.match(r, /NotAllowed/, `${host}:${port}: ${r}`);
    }
  });

  test('a well-behaved client is served meanwhile', async () => {
    assert.equal(await socks5(proxy.port('auto'), '127.0.0.1', echo.port), 'ok');
  });

  test('the refusal says why in sockstap.log', () => {
    assert.match(proxy.readLog('sockstap.log'), /is sockstap's own (admin|listener)/);
  });
});

describe('never to itself: tapped HTTP and a wildcard listener (finding 5)', () => {
  let proxy: TestProxy;
  let admin: number;
  before(async () => {
    proxy = await startProxy(['-P0.0.0.0:0/auto', 'RELIABLE=127.0.0.1', 'SOCKSTAP=http', 'ADMIN=127.0.0.1:0']);
    admin = Number(new URL(proxy.proxy.adminUrl!).port);
  });
  after(async () => {
    await proxy.stop();
    proxy.cleanup();
  });

  test('a tapped SOCKS tunnel to the admin is refused', async () => {
    const r = await curl(['-sS', '-o', '/dev/null', '-w', '%{http_code}', '--socks5-hostname', `127.0.0.1:${proxy.port()}`, `http://127.0.0.1:${admin}/api/sessions`]);
    assert.notEqual(String(r.stdout), '200', r.stderr);
    assert.match(r.stderr, /SOCKS5 connection to 127.0.0.1. \(2\)/); // 2: not allowed
  });

  test('the wildcard listener is refused on any loopback address and on ::1', async () => {
    for (const host of ['127.0.0.5', '0.0.0.0', '::', '::1']) {
      const r = await socks5(proxy.port(), host, proxy.port());
      assert.match(r, /NotAllowed/, `${host}: ${r}`);
    }
  });
});
