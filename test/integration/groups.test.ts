/**
 * Groups (issue 19 item 1): a user's groups — from LDAP (memberOf, groupOfNames, posixGroup, real
 * slapd), from RADIUS Filter-Id (real FreeRADIUS) or from YAML `users: {NAME: {groups: [...]}}` —
 * as `group:NAME` scopes in PERMIT/REJECT, BANDWIDTH, QUOTA and MAXIMA=group:NAME:N.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { loadConfig } from '../../src/config/load.js';
import { ConfigError } from '../../src/config/types.js';
import { BandwidthShaper } from '../../src/policy/shaping.js';
import { startEcho, type EchoServer } from '../helpers/origin.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';
import { socks5UserPass } from '../helpers/socks5-by-hand.js';
import { freeradiusMissing, startFreeRadius, type FreeRadius } from '../helpers/freeradius.js';
import { SUFFIX, slapdMissing, startSlapd, type Slapd } from '../helpers/slapd.js';
import { LDAP_USERS, RADIUS_USERS, directoryLdif, radiusUsers } from '../helpers/directory.js';

let echo: EchoServer;
let dir: string;
let yaml: string;
before(async () => {
  echo = await startEcho();
  dir = mkdtempSync(join(tmpdir(), 'sockstap-groups-'));
  yaml = join(dir, 'users.yaml');
  writeFileSync(
    yaml,
    [
      'authorizer:',
      '  users: { alice: pw-alice, carol: pw-carol, bob: pw-bob }',
      'users:',
      '  alice: { groups: [staff] }',
      '  carol: { groups: [staff, night] }',
      '  bob: { groups: [guests] }',
      '',
    ].join('\n'),
  );
});
after(async () => {
  await echo.close();
  rmSync(dir, { recursive: true, force: true });
});

/** A SOCKS5 CONNECT to the echo server: the REP (0 granted, 2 not allowed by the rules) and the socket. */
async function rep(proxy: TestProxy, user: string, password: string): Promise<{ rep: number; socket: net.Socket }> {
  return socks5UserPass(proxy.port('socks'), user, password, echo.port);
}

async function repOnly(proxy: TestProxy, user: string, password: string): Promise<number> {
  const r = await rep(proxy, user, password);
  r.socket.destroy();
  return r.rep;
}

describe('group:NAME in PERMIT/REJECT with LDAP groups (slapd)', { skip: slapdMissing() ?? false }, () => {
  let slapd: Slapd;
  let proxy: TestProxy;
  before(async () => {
    slapd = await startSlapd();
    slapd.add(directoryLdif());
    proxy = await startProxy([
      '-P127.0.0.1:0/socks',
      `AUTHORIZER=-ldap{${slapd.url},${SUFFIX},(uid=%s)}`,
      // alice: staff and admins (groupOfNames, memberOf); carol: staff; bob: guests (posixGroup).
      'REJECT=*:*:{group:guests}',
      'PERMIT=*:*:{group:staff}',
      'REJECT=*:*:*',
      'RELAY=js',
    ]);
  });
  after(async () => {
    await proxy?.stop();
    proxy?.cleanup();
    await slapd?.stop();
  });

  test('members of staff pass, guests and users of no group are refused', async () => {
    assert.equal(await repOnly(proxy, 'alice', LDAP_USERS.alice), 0);
    assert.equal(await repOnly(proxy, 'carol', LDAP_USERS.carol), 0);
    assert.equal(await repOnly(proxy, 'bob', LDAP_USERS.bob), 2, 'bob is in guests (posixGroup memberUid)');
    assert.deepEqual([...(proxy.proxy.config().accounts!.groupsOf!('alice'))].sort(), ['admins', 'staff']);
    assert.deepEqual(proxy.proxy.config().accounts!.groupsOf!('bob'), ['guests']);
  });
});

describe('group:NAME with RADIUS Filter-Id groups (FreeRADIUS)', { skip: freeradiusMissing() ?? false }, () => {
  let radius: FreeRadius;
  let proxy: TestProxy;
  before(async () => {
    radius = await startFreeRadius('groups-secret', radiusUsers());
    proxy = await startProxy(['-P127.0.0.1:0/socks', `AUTHORIZER=-radius{127.0.0.1:${radius.port},groups-secret}`, 'PERMIT=*:*:{group:staff}', 'REJECT=*:*:*', 'RELAY=js']);
  });
  after(async () => {
    await proxy?.stop();
    proxy?.cleanup();
    await radius?.stop();
  });

  test('dave (Filter-Id staff) passes, erin (no Filter-Id) is refused', async () => {
    assert.equal(await repOnly(proxy, 'dave', RADIUS_USERS.dave), 0);
    assert.equal(await repOnly(proxy, 'erin', RADIUS_USERS.erin), 2);
  });
});

describe('group:NAME from YAML users:', () => {
  test('REJECT by group', async () => {
    const proxy = await startProxy(['-f', yaml, '-P127.0.0.1:0/socks', 'REJECT=*:*:{group:night}', 'RELAY=js']);
    try {
      assert.equal(await repOnly(proxy, 'alice', 'pw-alice'), 0);
      assert.equal(await repOnly(proxy, 'carol', 'pw-carol'), 2);
      assert.equal(await repOnly(proxy, 'bob', 'pw-bob'), 0);
    } finally {
      await proxy.stop();
      proxy.cleanup();
    }
  });

  test('MAXIMA=group:staff:1: the members of staff share one connection at a time', async () => {
    const proxy = await startProxy(['-f', yaml, '-P127.0.0.1:0/socks', 'MAXIMA=group:staff:1', 'RELAY=js']);
    try {
      const held = await rep(proxy, 'alice', 'pw-alice');
      assert.equal(held.rep, 0);
      assert.notEqual(await repOnly(proxy, 'carol', 'pw-carol'), 0, 'carol (staff) is over the group limit');
      assert.equal(await repOnly(proxy, 'bob', 'pw-bob'), 0, 'bob is not in staff');
      held.socket.destroy();
      let again = -1;
      for (let i = 0; i < 100 && again !== 0; i++) {
        await new Promise((r) => setTimeout(r, 50));
        again = await repOnly(proxy, 'carol', 'pw-carol');
      }
      assert.equal(again, 0, 'carol gets in once alice has closed');
      assert.match(proxy.readLog('sockstap.log'), /MAXIMA=group:staff reached for user carol/);
    } finally {
      await proxy.stop();
      proxy.cleanup();
    }
  });

  test('QUOTA=SIZE/day:group:staff: usage shared by the members', async () => {
    const sized = net.createServer((s) => {
      s.on('error', () => {});
      s.end(Buffer.alloc(48 * 1024, 0x61));
    });
    await new Promise<void>((r) => sized.listen(0, '127.0.0.1', r));
    const port = (sized.address() as net.AddressInfo).port;
    const proxy = await startProxy(['-f', yaml, '-P127.0.0.1:0/socks', 'QUOTA=32k/day:group:staff', 'RELAY=js']);
    try {
      const first = await socks5UserPass(proxy.port('socks'), 'alice', 'pw-alice', port);
      assert.equal(first.rep, 0);
      await new Promise<void>((r) => {
        first.socket.resume();
        first.socket.once('close', () => r());
      });
      let carol = 0;
      for (let i = 0; i < 60 && carol === 0; i++) {
        const r = await socks5UserPass(proxy.port('socks'), 'carol', 'pw-carol', port);
        r.socket.destroy();
        carol = r.rep;
        if (carol === 0) await new Promise((res) => setTimeout(res, 100));
      }
      assert.equal(carol, 2, "carol is refused: alice used the group's quota");
      const bob = await socks5UserPass(proxy.port('socks'), 'bob', 'pw-bob', port);
      bob.socket.destroy();
      assert.equal(bob.rep, 0, 'bob is not in staff');
    } finally {
      await proxy.stop();
      proxy.cleanup();
      sized.close();
    }
  });

  test('BANDWIDTH=RATE:group:NAME: one bucket per group, shared by its members', () => {
    const config = loadConfig(['-f', yaml, '-P127.0.0.1:0/socks', 'BANDWIDTH=64k:group:staff', `STATEDIR=${dir}`]);
    const shaper = new BandwidthShaper();
    const who = (user: string | null) => ({ user, clientAddress: '127.0.0.1', doorPort: 1080 });
    const a = shaper.shapeFor(config, who('alice'));
    const c = shaper.shapeFor(config, who('carol'));
    assert.ok(a && c);
    assert.equal(a.up[0], c.up[0], 'alice and carol share the staff bucket');
    assert.equal(a.up[0]!.rate, 64 * 1024);
    assert.equal(shaper.shapeFor(config, who('bob')), null);
    assert.equal(shaper.shapeFor(config, who(null)), null);
  });

  test('bad group scopes are start errors', () => {
    assert.throws(() => loadConfig(['-P127.0.0.1:0', 'BANDWIDTH=1m:group:']), ConfigError);
    assert.throws(() => loadConfig(['-P127.0.0.1:0', 'PERMIT=*:*:{group:}']), ConfigError);
    assert.throws(() => loadConfig(['-P127.0.0.1:0', 'MAXIMA=group:staff:many']), ConfigError);
  });
});
