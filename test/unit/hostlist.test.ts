import assert from 'node:assert/strict';
import { networkInterfaces } from 'node:os';
import { test } from 'node:test';
import ipaddr from 'ipaddr.js';
import { parseHostList } from '../../src/config/hostlist.js';
import { ConfigError, type HostMatchTarget } from '../../src/config/types.js';

const m = (list: string, target: HostMatchTarget | string): boolean =>
  parseHostList(list, 'TEST').matches(typeof target === 'string' ? { host: target } : target);

test('* matches anything; names are exact and case-insensitive', () => {
  assert.ok(m('*', 'anything.example'));
  assert.ok(m('*', '10.1.2.3'));
  assert.ok(m('*', '::1'));
  assert.ok(m('www.example.com', 'WWW.Example.COM'));
  assert.ok(m('www.example.com', 'www.example.com.'));
  assert.ok(!m('www.example.com', 'example.com'));
});

test('globs and .domain', () => {
  assert.ok(m('*.example.com', 'a.b.example.com'));
  assert.ok(!m('*.example.com', 'example.com'));
  assert.ok(!m('*.example.com', 'badexample.com'));
  assert.ok(m('.example.com', 'example.com'));
  assert.ok(m('.example.com', 'x.EXAMPLE.com'));
  assert.ok(!m('.example.com', 'notexample.com'));
  assert.ok(m('host?.lan', 'host1.lan'));
  assert.ok(!m('host?.lan', 'host12.lan'));
});

test('addresses, CIDR blocks, IPv4-mapped IPv6', () => {
  assert.ok(m('10.0.0.0/8', '10.200.3.4'));
  assert.ok(!m('10.0.0.0/8', '11.0.0.1'));
  assert.ok(m('10.0.0.0/8', '::ffff:10.1.1.1'));
  assert.ok(m('::ffff:10.0.0.0/104', '10.9.9.9'));
  assert.ok(m('192.168.1.7', '192.168.1.7'));
  assert.ok(m('fe80::/10', 'fe80::1234'));
  assert.ok(!m('fe80::/10', '2001:db8::1'));
  assert.ok(m('[::1]', '::1'));
  assert.ok(m('::1', '0:0:0:0:0:0:0:1'));
});

test('names stay names unless addresses are given', () => {
  assert.ok(!m('127.0.0.1', 'localhost'));
  assert.ok(m('127.0.0.1', { host: 'localhost', addresses: ['127.0.0.1'] }));
  assert.ok(m('10.0.0.0/8', { host: 'intra.example', addresses: ['192.0.2.1', '::ffff:10.0.0.5'] }));
  assert.ok(!m('localhost', '127.0.0.1'));
  assert.equal(parseHostList('*.example.com,!x.example.com', 'T').needsAddresses, false);
  assert.equal(parseHostList('*.example.com,10.0.0.0/8', 'T').needsAddresses, true);
  assert.equal(parseHostList('.localnet', 'T').needsAddresses, true);
});

test('.localnet is loopback plus the interfaces of this host', () => {
  assert.ok(m('.localnet', '127.0.0.1'));
  assert.ok(m('.localnet', '127.255.0.9'));
  assert.ok(m('.localnet', '::1'));
  assert.ok(m('.localnet', '::ffff:127.0.0.1'));
  // A documentation address outside every network of this host, checked independently.
  const nets = Object.values(networkInterfaces()).flatMap((infos) => (infos ?? []).map((i) => ipaddr.parseCIDR(i.cidr!)));
  const outside = ['192.0.2.77', '198.51.100.77', '203.0.113.77'].find((a) => {
    const addr = ipaddr.parse(a);
    return !nets.some(([net, bits]) => net.kind() === 'ipv4' && addr.match(net, bits));
  })!;
  assert.ok(!m('.localnet', outside), outside);
  for (const infos of Object.values(networkInterfaces())) {
    for (const info of infos ?? []) {
      assert.ok(m('.localnet', info.address.split('%')[0]!), info.address);
    }
  }
});

test('first match decides; negations', () => {
  assert.ok(!m('!bad.example.com,*.example.com', 'bad.example.com'));
  assert.ok(m('!bad.example.com,*.example.com', 'good.example.com'));
  assert.ok(m('*.example.com,!bad.example.com', 'bad.example.com'), 'the earlier positive element decides');
  assert.ok(!m('!bad.example.com,*.example.com', 'other.org'), 'nothing matches: no');
  assert.ok(m('!bad.example.com', 'other.org'), 'only negations: everything but');
  assert.ok(m('!bad.example.com,!10.0.0.0/8', '192.0.2.1'));
  assert.ok(!m('!bad.example.com,!10.0.0.0/8', '10.0.0.1'));
});

test('ports: single, ranges, lists, IPv6 in brackets', () => {
  assert.ok(m('*:443', { host: 'a', port: 443 }));
  assert.ok(!m('*:443', { host: 'a', port: 80 }));
  assert.ok(!m('*:443', { host: 'a' }), 'a port element needs a port');
  assert.ok(m('{*:443,*:80}', { host: 'a', port: 80 }));
  assert.ok(m('host.lan:8000-8080', { host: 'host.lan', port: 8042 }));
  assert.ok(!m('host.lan:8000-8080', { host: 'host.lan', port: 8081 }));
  assert.ok(m('*:80/443/8000-8001', { host: 'x', port: 8001 }));
  assert.ok(m('[::1]:80', { host: '::1', port: 80 }));
  assert.ok(!m('[::1]:80', { host: '::1', port: 81 }));
  assert.ok(m('[fe80::/10]:22', { host: 'fe80::2', port: 22 }));
  assert.ok(m('10.0.0.0/8:25', { host: '10.1.1.1', port: 25 }));
  assert.ok(m('[2001:db8::]/32:443', { host: '2001:db8:1::5', port: 443 }));
  assert.ok(m('[2001:db8::]/32', '2001:db8::9') && !m('[2001:db8::]/32', '2001:db9::9'));
});

test('user@host elements match the user', () => {
  assert.ok(m('alice@*', { host: '127.0.0.1', user: 'alice' }));
  assert.ok(!m('alice@*', { host: '127.0.0.1', user: 'bob' }));
  assert.ok(!m('alice@*', { host: '127.0.0.1' }));
  assert.ok(m('*@.localnet', { host: '127.0.0.1', user: 'anyone' }));
  assert.ok(!m('*@.localnet', { host: '127.0.0.1' }), '*@ needs a known user');
  assert.ok(m('adm-*@10.0.0.0/8', { host: '10.0.0.1', user: 'adm-carol' }));
  assert.ok(m('blocked@example.test', { host: 'example.test', user: 'blocked' }));
  assert.ok(m('*@example.test', { host: 'EXAMPLE.test', user: 'x' }));
});

test('URL patterns and readonly match only per request', () => {
  const list = parseHostList('http://*.example.com/private/*', 'T');
  assert.ok(list.matches({ host: 'www.example.com', url: 'http://www.example.com/private/a.html' }));
  assert.ok(!list.matches({ host: 'www.example.com', url: 'http://www.example.com/public/a.html' }));
  assert.ok(!list.matches({ host: 'www.example.com' }), 'no URL: the destination alone does not match');
  assert.ok(m('http://site.example', { host: 'site.example', url: 'http://site.example/any/thing' }));
  assert.ok(m('readonly', { host: 'ftp.example' }));
  assert.ok(m('readonly', { host: 'ftp.example', access: 'read' }));
  assert.ok(!m('readonly', { host: 'ftp.example', access: 'write' }));
});

test('braces are stripped; source is kept', () => {
  const list = parseHostList('{a.example,b.example}', 'T');
  assert.equal(list.source, '{a.example,b.example}');
  assert.ok(list.matches({ host: 'b.example' }));
});

test('bad elements throw ConfigError naming the parameter', () => {
  for (const bad of ['', ',', 'a,,b', '!', 'a b', '10.0.0.0/33', '::1/129', '*:0', '*:70000', '*:90-80', '[::1', '[a]:80', 'x:y', 'a@', '@a', 'bad/host', 'host:', 'a;b', '1.2.3.4/x', '.', '.*.x']) {
    assert.throws(
      () => parseHostList(bad, 'RELIABLE'),
      (e: unknown) => e instanceof ConfigError && e.param === 'RELIABLE',
      JSON.stringify(bad),
    );
  }
});

test('fuzz: random text either parses or throws ConfigError', () => {
  let seed = 0x5eed;
  const rand = (n: number): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  const alphabet = 'ab.*?!,:/-[]{}@0123456789:f%\\ \u00e9\x00';
  const targets: HostMatchTarget[] = [{ host: 'a.b' }, { host: '10.0.0.1', port: 80, user: 'u' }, { host: '::1', addresses: ['::1'] }];
  for (let i = 0; i < 3000; i++) {
    let s = '';
    for (let j = rand(24); j > 0; j--) s += alphabet[rand(alphabet.length)];
    try {
      const list = parseHostList(s, 'FUZZ');
      for (const t of targets) assert.equal(typeof list.matches(t), 'boolean');
    } catch (e) {
      assert.ok(e instanceof ConfigError, `${JSON.stringify(s)} threw ${String(e)}`);
    }
  }
});

test('globs match in linear time: many * against a long client URL or name (found by the config fuzz target)', () => {
  // With the earlier regular expressions these took hours (each `*` a nested backtracking loop).
  const url = parseHostList('http://*.example.com/*/*/*/*.iso', 'URL');
  assert.equal(url.matches({ host: 'a.example.com', url: `http://a.example.com/${'/'.repeat(8000)}` }), false);
  assert.equal(url.matches({ host: 'a.example.com', url: `http://a.example.com/${'/'.repeat(8000)}x.ISO` }), true);
  const name = parseHostList('*a*a*a*a*a*.example.com', 'N');
  assert.equal(name.matches({ host: `${'a'.repeat(250)}.example.org` }), false);
  assert.equal(name.matches({ host: `${'a'.repeat(250)}.example.com` }), true);
  assert.ok(parseHostList('w?w.example.com', 'N').matches({ host: 'WXW.example.com' }));
  assert.ok(!parseHostList('http://h/a?b', 'U').matches({ host: 'h', url: 'http://h/axb' }), 'in a URL pattern ? is literal');
});
