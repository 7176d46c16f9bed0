/**
 * Routing rules from YAML with real upstreams: user alice leaves through Dante, user bob through
 * Squid, carol's first route is dead and she falls back to direct; sessions.jsonl says which.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { curl, PAGE, startOrigin, type Origin } from '../helpers/origin.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';
import { danteMissing, freePort, startDante, type Dante } from '../helpers/dante.js';
import { squidMissing, startSquid, type Squid } from '../helpers/squid.js';

const skip = danteMissing() ?? squidMissing() ?? false;

describe('routes by user, with fallback', { skip }, () => {
  let origin: Origin;
  let dante: Dante;
  let squid: Squid;
  let proxy: TestProxy;
  let dir: string;
  let dead: number;
  before(async () => {
    origin = await startOrigin();
    dante = await startDante({ auth: 'none' });
    squid = await startSquid();
    dead = await freePort();
    dir = mkdtempSync(join(tmpdir(), 'sockstap-route-'));
    const file = join(dir, 'routes.yaml');
    writeFileSync(
      file,
      [
        'listen: ["127.0.0.1:0/auto"]',
        'authorizer: { users: { alice: a-secret, bob: b-secret, carol: c-secret } }',
        'routes:',
        '  - match: { user: alice }',
        `    via: socks5://127.0.0.1:${dante.port}`,
        '  - match: { user: bob }',
        `    via: http://127.0.0.1:${squid.port}`,
        '  - match: { user: carol }',
        `    via: ["socks5://127.0.0.1:${dead}", direct]`,
        '',
      ].join('\n'),
    );
    proxy = await startProxy(['-f', file]);
  });
  after(async () => {
    await proxy.stop();
    proxy.cleanup();
    await squid.stop();
    await dante.stop();
    await origin.close();
    rmSync(dir, { recursive: true, force: true });
  });

  for (const user of ['alice', 'bob', 'carol']) {
    it(`${user} fetches the page`, async () => {
      const pass = `${user[0]}-secret`;
      const r = await curl(['-x', `socks5h://${user}:${pass}@127.0.0.1:${proxy.port()}`, `http://localhost:${origin.port}/${user}`]);
      assert.equal(r.code, 0, r.stderr);
      assert.ok(r.stdout.equals(PAGE));
    });
  }

  it('each left by its own route; carol fell back to direct after the dead upstream', async () => {
    await proxy.stop(2000);
    const routeOf = (user: string): unknown => proxy.sessions().find((s) => s.user === user && s.result === 'ok')?.route;
    assert.equal(routeOf('alice'), `socks5://127.0.0.1:${dante.port}`);
    assert.equal(routeOf('bob'), `http://127.0.0.1:${squid.port}`);
    assert.equal(routeOf('carol'), 'direct');
    assert.match(proxy.readLog('sockstap.log'), new RegExp(`route failed, trying the next.*socks5://127\\.0\\.0\\.1:${dead}`));
    assert.match(squid.accessLog(), new RegExp(`CONNECT localhost:${origin.port}`));
    for (const s of proxy.sessions()) assert.ok(!JSON.stringify(s).includes('secret'));
  });
});
