/**
 * net/destination.ts and checkDestination on addresses: names normalised, the addresses an address
 * reaches, sockstap's own addresses, and "every address must be permitted".
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { loadConfig } from '../../src/config/load.js';
import { literalReach, normaliseHost, ownDestination, reachedAddresses, type OwnAddress } from '../../src/net/destination.js';
import { checkDestination } from '../../src/policy/acl.js';

test('names are lower-cased and lose one trailing dot; addresses stay as written', () => {
  assert.equal(normaliseHost('LOCALHOST.'), 'localhost');
  assert.equal(normaliseHost('Example.ORG'), 'example.org');
  assert.equal(normaliseHost('[::1]'), '::1');
  assert.equal(normaliseHost('::FFFF:127.0.0.1'), '::FFFF:127.0.0.1');
});

test('what an address reaches: mapped forms as IPv4, the unspecified addresses as loopback too', () => {
  assert.deepEqual(reachedAddresses(['::ffff:127.0.0.1']), ['127.0.0.1']);
  assert.deepEqual(reachedAddresses(['0.0.0.0']), ['0.0.0.0', '127.0.0.1', '::1']);
  assert.deepEqual(reachedAddresses(['::ffff:0.0.0.0']), ['0.0.0.0', '127.0.0.1', '::1']);
  assert.deepEqual(reachedAddresses(['::']), ['::', '127.0.0.1', '::1']);
  assert.deepEqual(reachedAddresses(['192.0.2.1', 'not-an-address']), ['192.0.2.1']);
  assert.deepEqual(literalReach('localhost'), ['127.0.0.1', '::1']);
  assert.deepEqual(literalReach('a.localhost'), ['127.0.0.1', '::1']);
  assert.deepEqual(literalReach('example.org'), []);
});

test("sockstap's own addresses: exact, unspecified, and every local address behind a wildcard", () => {
  const own: OwnAddress[] = [
    { host: '127.0.0.1', port: 1080, what: 'listener' },
    { host: '0.0.0.0', port: 8080, what: 'wildcard' },
    { host: '::1', port: 9180, what: 'admin' },
  ];
  const hit = (a: string, port: number): string | undefined => ownDestination(own, reachedAddresses([a]), port)?.what;
  assert.equal(hit('127.0.0.1', 1080), 'listener');
  assert.equal(hit('::ffff:127.0.0.1', 1080), 'listener');
  assert.equal(hit('0.0.0.0', 1080), 'listener');
  assert.equal(hit('127.0.0.2', 1080), undefined, 'another loopback address is another socket');
  assert.equal(hit('127.0.0.1', 1081), undefined);
  assert.equal(hit('127.9.9.9', 8080), 'wildcard');
  assert.equal(hit('::1', 8080), 'wildcard');
  assert.equal(hit('192.0.2.1', 8080), undefined, 'not an address of this host');
  assert.equal(hit('::', 9180), 'admin');
  assert.equal(hit('::1', 9180), 'admin');
});

test('a destination with several addresses is permitted only when every one is', () => {
  const config = loadConfig(['REJECT=*:127.0.0.0/8:*'], { cwd: '/tmp' });
  const q = (addresses: string[]) =>
    checkDestination(config, { tags: ['socks5'], clientAddress: '127.0.0.1', user: null, dst: { host: 'mixed.test', port: 80 }, dstAddresses: addresses });
  assert.equal(q(['192.0.2.1']).allowed, true);
  assert.equal(q(['192.0.2.1', '127.0.0.1']).allowed, false);
  assert.equal(q(reachedAddresses(['0.0.0.0'])).allowed, false);
  const permitOnly = loadConfig(['PERMIT=*:192.0.2.0/24:*', 'REJECT=*:*:*'], { cwd: '/tmp' });
  const p = (addresses: string[]) =>
    checkDestination(permitOnly, { tags: ['socks5'], clientAddress: '127.0.0.1', user: null, dst: { host: 'mixed.test', port: 80 }, dstAddresses: addresses });
  assert.equal(p(['192.0.2.9']).allowed, true);
  assert.equal(p(['192.0.2.9', '198.51.100.1']).allowed, false, 'one address outside the PERMIT refuses');
  assert.equal(
    checkDestination(config, { tags: ['socks5'], clientAddress: '127.0.0.1', user: null, dst: { host: '0.0.0.0', port: 80 }, dstAddresses: reachedAddresses(['0.0.0.0']) }).allowed,
    false,
    'an address literal is checked as what it reaches',
  );
});
