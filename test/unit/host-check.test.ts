/**
 * Host verification in tapped tunnels (src/taps/http/host-check.ts): which Host names which
 * destination, with names resolved through a NameCache of static entries only.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { DEFAULT_DNS, NameCache } from '../../src/net/dns.js';
import { canonicalAddress, parseHostField, verifyTunnelHost } from '../../src/taps/http/host-check.js';

const names = new NameCache({
  ...DEFAULT_DNS,
  hosts: { 'victim.test': ['127.0.0.1', '::1'], 'evil.test': ['127.0.0.1'], 'far.test': ['10.0.0.9'], 'mapped.test': ['::ffff:127.0.0.2'] },
});

const verify = (host: string | string[] | null, dst: string, port = 8080) =>
  verifyTunnelHost(host === null ? [] : (Array.isArray(host) ? host : [host]).flatMap((h) => ['Host', h]), { host: dst, port }, names);

describe('parseHostField', () => {
  test('authorities', () => {
    assert.deepEqual(parseHostField('Victim.Test:8080'), { host: 'Victim.Test', port: 8080 });
    assert.deepEqual(parseHostField('victim.test'), { host: 'victim.test', port: null });
    assert.deepEqual(parseHostField('victim.test:'), { host: 'victim.test', port: null });
    assert.deepEqual(parseHostField('[::1]:81'), { host: '::1', port: 81 });
    assert.deepEqual(parseHostField(' 127.0.0.1 '), { host: '127.0.0.1', port: null });
    for (const bad of ['a@b', 'victim.test@evil.test', 'a b', '[::1', '::1', 'h:99999', 'h:0', 'h/x', '', 'a..b', '-a']) {
      assert.equal(parseHostField(bad), null, bad);
    }
  });
  test('addresses in one spelling', () => {
    assert.equal(canonicalAddress('::FFFF:127.0.0.1'), '127.0.0.1');
    assert.equal(canonicalAddress('0:0:0:0:0:0:0:1'), '::1');
    assert.equal(canonicalAddress('10.1.2.3'), '10.1.2.3');
  });
});

describe('verifyTunnelHost', () => {
  test('a tunnel by name: only that name, on that port', async () => {
    assert.deepEqual(await verify('victim.test:8080', 'victim.test'), { ok: true, keyHost: null });
    assert.deepEqual(await verify('VICTIM.test.:8080', 'victim.test'), { ok: true, keyHost: null });
    assert.equal((await verify('evil.test:8080', 'victim.test')).ok, false);
    assert.equal((await verify('127.0.0.1:8080', 'victim.test')).ok, false);
    assert.equal((await verify('victim.test:8081', 'victim.test')).ok, false);
    assert.equal((await verify('victim.test', 'victim.test')).ok, false, 'no port is 80');
    assert.deepEqual(await verify('victim.test', 'victim.test', 80), { ok: true, keyHost: null });
  });
  test('a tunnel to an address: that address, or a name resolving to it (keyed by the name)', async () => {
    assert.deepEqual(await verify('127.0.0.1:8080', '127.0.0.1'), { ok: true, keyHost: null });
    assert.deepEqual(await verify('[::1]:8080', '::1'), { ok: true, keyHost: null });
    assert.deepEqual(await verify('Victim.Test:8080', '127.0.0.1'), { ok: true, keyHost: 'victim.test' });
    assert.deepEqual(await verify('victim.test:8080', '::1'), { ok: true, keyHost: 'victim.test' });
    assert.deepEqual(await verify('evil.test:8080', '127.0.0.1'), { ok: true, keyHost: 'evil.test' });
    assert.deepEqual(await verify('mapped.test:8080', '127.0.0.2'), { ok: true, keyHost: 'mapped.test' });
    assert.deepEqual(await verify('victim.test:8080', '::ffff:127.0.0.1'), { ok: true, keyHost: 'victim.test' });
    assert.equal((await verify('far.test:8080', '127.0.0.1')).ok, false);
    assert.equal((await verify('127.0.0.2:8080', '127.0.0.1')).ok, false);
  });
  test('a port relay: a Host naming the relay is accepted and rewritten', async () => {
    const relay = { host: '127.0.0.5', port: 9000 };
    const v = (h: string) => verifyTunnelHost(['Host', h], { host: 'victim.test', port: 8080 }, names, relay);
    assert.deepEqual(await v('127.0.0.5:9000'), { ok: true, keyHost: null, rewrite: true });
    assert.deepEqual(await v('victim.test:8080'), { ok: true, keyHost: null });
    assert.equal((await v('127.0.0.5:9001')).ok, false);
    assert.equal((await v('evil.test:9000')).ok, false);
  });
  test('no Host is the destination; two Hosts or a malformed one are refused', async () => {
    assert.deepEqual(await verify(null, 'victim.test'), { ok: true, keyHost: null });
    const two = await verify(['victim.test:8080', 'victim.test:8080'], 'victim.test');
    assert.equal(two.ok, false);
    assert.match(two.ok ? '' : two.reason, /2 Host fields/);
    assert.equal((await verify('victim.test@evil.test:8080', 'evil.test')).ok, false);
  });
});
