/**
 * Route planning without sockets: hop URLs, chain labels without credentials, the order of
 * candidate sources (SOCKSTAP params, YAML routes, PROXY=/SOCKS=, direct), rule conditions, and
 * the mapping of upstream SOCKS errors to codes.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { loadConfig } from '../../src/config/load.js';
import { ConfigError } from '../../src/config/types.js';
import { chainLabel, parseChain, parseHop } from '../../src/upstream/hop.js';
import { planRoute, type RouteQuery } from '../../src/upstream/router.js';
import { codeForSocksError } from '../../src/upstream/socks.js';

function withYaml<T>(yaml: string, args: string[], f: (config: ReturnType<typeof loadConfig>) => T): T {
  const dir = mkdtempSync(join(tmpdir(), 'sockstap-router-'));
  try {
    writeFileSync(join(dir, 'c.yaml'), yaml);
    return f(loadConfig(['-f', join(dir, 'c.yaml'), ...args], { cwd: dir }));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const q = (over: Partial<RouteQuery> = {}): RouteQuery => ({
  dst: { host: 'www.example.test', port: 80 },
  clientAddress: '127.0.0.1',
  user: null,
  proto: null,
  door: 'socks5',
  ...over,
});

describe('hops', () => {
  it('parses schemes and keeps credentials out of labels', () => {
    const h = parseHop('socks5://u%40x:p%3Aw@[::1]:1080', 'via');
    assert.deepEqual(h, { kind: 'socks5', host: '::1', port: 1080, names: 'remote', user: 'u@x', password: 'p:w' });
    assert.equal(chainLabel([h]), 'socks5://[::1]:1080');
    assert.equal(parseHop('socks4://h:1', 'v').names, 'local');
    assert.equal(parseHop('socks4a://h:1', 'v').kind, 'socks4a');
    assert.equal(chainLabel(parseChain('http://a:pw@sq:3128, socks5h://b:1080', 'v')), 'http://sq:3128,socks5://b:1080');
    assert.equal(chainLabel(parseChain('direct', 'v')), 'direct');
  });
  it('refuses bad hops without echoing a password', () => {
    assert.throws(() => parseHop('ftp://h:1', 'via'), /unknown scheme/);
    assert.throws(() => parseHop('socks5://h', 'via'), ConfigError);
    assert.throws(() => parseHop('socks4://u:secret@h:1', 'via'), (e: Error) => !e.message.includes('secret'));
    assert.throws(() => parseChain('http://a:1,,http://b:2', 'v'), /empty hop/);
  });
});

describe('planRoute', () => {
  it('PROXY=/SOCKS= with dstHostList, first match, else direct', () => {
    const c = loadConfig(['PROXY=sq:3128:*.example.test', 'SOCKS=u:p@dn:1080/4a']);
    assert.deepEqual(planRoute(c, q()).chains.map(chainLabel), ['http://sq:3128', 'socks4a://dn:1080']);
    assert.deepEqual(planRoute(c, q({ dst: { host: 'other.test', port: 80 } })).chains.map(chainLabel), ['socks4a://dn:1080']);
    assert.deepEqual(planRoute(loadConfig([]), q()).chains.map(chainLabel), ['direct']);
  });

  it('YAML routes come before PROXY=, on user, source, protocol, door and time', () => {
    const yaml = [
      'routes:',
      '  - match: { user: alice }',
      '    via: ["socks5://a:1080", direct]',
      '  - match: { src: "10.0.0.0/8" }',
      '    via: http://b:3128',
      '  - match: { proto: tls }',
      '    via: socks5://t:1080',
      '  - match: { door: tcprelay, dst: "*.example.test" }',
      '    via: socks5://m:1080',
      '  - match: { when: "mon/0900-1000" }',
      '    via: socks5://monday:1080',
      '',
    ].join('\n');
    withYaml(yaml, ['PROXY=p:3128'], (c) => {
      const labels = (x: RouteQuery): string[] => planRoute(c, x).chains.map(chainLabel);
      assert.deepEqual(labels(q({ user: 'alice' })), ['socks5://a:1080', 'direct']);
      assert.deepEqual(labels(q({ clientAddress: '10.1.2.3' })), ['http://b:3128']);
      assert.deepEqual(labels(q({ proto: 'tls' })), ['socks5://t:1080']);
      assert.deepEqual(labels(q({ door: 'tcprelay' })), ['socks5://m:1080']);
      assert.deepEqual(labels(q({ door: 'tcprelay', dst: { host: 'x.other', port: 1 } })), ['http://p:3128']);
      // 2024-01-01 was a Monday (local time, as time windows are).
      const tuesday = new Date(2024, 0, 2, 9, 30);
      assert.deepEqual(labels(q({ user: 'bob', now: tuesday })), ['http://p:3128']);
      assert.deepEqual(labels(q({ now: new Date(2024, 0, 1, 9, 30) })), ['socks5://monday:1080']);
    });
  });

  it("a SOCKSTAP rule's PROXY=/SOCKS= params win", () => {
    const c = loadConfig(['SOCKSTAP=http:::PROXY=tap:3128', 'SOCKS=s:1080']);
    const rule = c.taps[0]!;
    assert.deepEqual(planRoute(c, q({ tapRule: rule })).chains.map(chainLabel), ['http://tap:3128']);
    assert.deepEqual(planRoute(c, q()).chains.map(chainLabel), ['socks5://s:1080']);
  });

  it('refuses bad routes and portmaps with their YAML path', () => {
    assert.throws(() => withYaml('routes:\n  - via: []\n', [], () => 0), /routes\[0\]\.via/);
    assert.throws(() => withYaml('routes:\n  - match: { proto: gopher }\n    via: direct\n', [], () => 0), /routes\[0\]\.match\.proto/);
    assert.throws(() => withYaml('portmap:\n  - { listen: "9000-9002", to: "h:80-81" }\n', [], () => 0), /portmap\[0\]\.to/);
    assert.throws(() => withYaml('portmap:\n  - { listen: "9005-9000", to: "h:80" }\n', [], () => 0), /backwards/);
  });

  it('expands portmap ranges into relay listeners', () => {
    withYaml('portmap:\n  - { listen: "127.0.0.1:9000-9001", to: "h:8000-8001" }\n  - { listen: "5353", to: "[::1]:53", proto: udp }\n', [], (c) => {
      assert.deepEqual(
        c.listen.map((l) => `${l.door} ${l.host}:${l.port} ${l.target?.host}:${l.target?.port}`),
        ['tcprelay 127.0.0.1:9000 h:8000', 'tcprelay 127.0.0.1:9001 h:8001', 'udprelay :5353 ::1:53'],
      );
    });
  });
});

describe('upstream SOCKS errors', () => {
  it('maps the reply names to codes', () => {
    assert.equal(codeForSocksError('Socks5 proxy rejected connection - ConnectionRefused'), 'ECONNREFUSED');
    assert.equal(codeForSocksError('Socks5 proxy rejected connection - NotAllowed'), 'EDENIED');
    assert.equal(codeForSocksError('Socks5 proxy rejected connection - HostUnreachable'), 'EHOSTUNREACH');
    assert.equal(codeForSocksError('Socks5 Authentication failed'), 'EUPSTREAMAUTH');
    assert.equal(codeForSocksError('Proxy connection timed out'), 'ETIMEDOUT');
    assert.equal(codeForSocksError('Socket closed'), 'EUPSTREAM');
  });
});
