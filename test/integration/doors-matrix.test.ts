/**
 * The door matrix: curl through every client mode it has (SOCKS4, SOCKS4a, SOCKS5, SOCKS5 with
 * proxy-side names, HTTP absolute-form, HTTP CONNECT) on each door that takes it and on the auto
 * door, fetching one page byte-identical; each connection leaves a sessions.jsonl record.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { curl, PAGE, startOrigin, type Origin } from '../helpers/origin.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';

const SOCKS_MODES = [
  ['--socks4', 'socks4'],
  ['--socks4a', 'socks4a'],
  ['--socks5', 'socks5'],
  ['--socks5-hostname', 'socks5'],
] as const;
const HTTP_MODES = [
  [['-x'], 'http'],
  [['-p', '-x'], 'connect'],
] as const;

describe('curl through every door', () => {
  let origin: Origin;
  let proxy: TestProxy;
  before(async () => {
    origin = await startOrigin();
    proxy = await startProxy(['-P127.0.0.1:0/auto', '-P127.0.0.1:0/socks', '-P127.0.0.1:0/http']);
  });
  after(async () => {
    await proxy.stop();
    await origin.close();
    proxy.cleanup();
  });

  for (const door of ['auto', 'socks'] as const) {
    for (const [flag, front] of SOCKS_MODES) {
      test(`${flag} on the ${door} door`, async () => {
        // localhost for the name-carrying modes: the proxy resolves it.
        const host = flag === '--socks4a' || flag === '--socks5-hostname' ? 'localhost' : '127.0.0.1';
        const r = await curl([flag, `127.0.0.1:${proxy.port(door)}`, `http://${host}:${origin.port}/page`]);
        assert.equal(r.code, 0, r.stderr);
        assert.ok(r.stdout.equals(PAGE), 'page differs');
        void front;
      });
    }
  }
  for (const door of ['auto', 'http'] as const) {
    for (const [flags, front] of HTTP_MODES) {
      test(`${flags.join(' ')} http:// on the ${door} door`, async () => {
        const r = await curl([...flags, `http://127.0.0.1:${proxy.port(door)}`, `http://localhost:${origin.port}/page`]);
        assert.equal(r.code, 0, r.stderr);
        assert.ok(r.stdout.equals(PAGE), 'page differs');
        void front;
      });
    }
  }

  test('every connection left a sessions.jsonl record with the interface fields', async () => {
    await proxy.stop(2000);
    const records = proxy.sessions();
    const fronts = new Set(records.map((r) => r.door));
    for (const f of ['socks4', 'socks4a', 'socks5', 'http', 'connect']) assert.ok(fronts.has(f), `no record for ${f}: ${[...fronts].join(',')}`);
    for (const r of records) {
      for (const field of ['id', 'start', 'end', 'client', 'user', 'door', 'dst', 'route', 'proto', 'bytesUp', 'bytesDown', 'result']) {
        assert.ok(field in r, `record lacks ${field}: ${JSON.stringify(r)}`);
      }
    }
    // Names given by 4a/5h clients are kept as names.
    assert.ok(records.some((r) => r.door === 'socks4a' && String(r.dst).startsWith('localhost:')));
    const tunnels = records.filter((r) => r.door === 'socks5' && r.result === 'ok');
    assert.ok(tunnels.length >= 2);
    for (const t of tunnels) assert.ok((t.bytesDown as number) > PAGE.length, `bytesDown ${t.bytesDown}`);
    const access = proxy.readLog('access.log');
    assert.match(access, /TCP_MISS\/200 \d+ GET http:\/\/localhost:\d+\/page /);
    assert.match(access, /TCP_TUNNEL\/200 \d+ CONNECT localhost:\d+ /);
  });
});
