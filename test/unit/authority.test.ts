/**
 * The one authority parser (src/http1/authority.ts), table by table for each of its callers: the
 * CONNECT target, a Host field with port 80 by default, absolute-form request targets, MOUNT URLs
 * (scheme default ports, whether the port was written), request heads of the transparent door,
 * and HOST:PORT parameters (config/address.ts, which keeps its own messages).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  absoluteHttpTarget,
  formatAuthority,
  parseAuthority,
  parseUrl,
  readAuthority,
  requestHeadAuthority,
  splitAuthority,
} from '../../src/http1/authority.js';
import { parseHostPort } from '../../src/config/address.js';

describe('splitAuthority', () => {
  const table: [string, ReturnType<typeof splitAuthority>][] = [
    ['h', { ok: true, host: 'h', bracketed: false, port: null }],
    ['h:80', { ok: true, host: 'h', bracketed: false, port: '80' }],
    ['h:', { ok: true, host: 'h', bracketed: false, port: '' }],
    ['[::1]', { ok: true, host: '::1', bracketed: true, port: null }],
    ['[::1]:8080', { ok: true, host: '::1', bracketed: true, port: '8080' }],
    ['[::1', { ok: false, reason: 'unclosed-bracket' }],
    ['[::1]8080', { ok: false, reason: 'after-bracket' }],
    ['::1:80', { ok: false, reason: 'bare-ipv6' }],
  ];
  for (const [text, want] of table) test(JSON.stringify(text), () => assert.deepEqual(splitAuthority(text), want));
});

describe('parseAuthority: CONNECT (no default port) and Host (default 80)', () => {
  const table: [string, number | undefined, { host: string; port: number } | null][] = [
    ['example.com:443', undefined, { host: 'example.com', port: 443 }],
    ['Example.COM:443', undefined, { host: 'example.com', port: 443 }],
    ['10.0.0.1:8443', undefined, { host: '10.0.0.1', port: 8443 }],
    ['[2001:DB8::1]:443', undefined, { host: '2001:db8::1', port: 443 }],
    ['example.com', undefined, null],
    ['example.com:', undefined, null],
    ['[::1]', undefined, null],
    ['example.com', 80, { host: 'example.com', port: 80 }],
    ['example.com:', 80, { host: 'example.com', port: 80 }],
    ['[::1]', 80, { host: '::1', port: 80 }],
    ['[::1]:81', 80, { host: '::1', port: 81 }],
    ['h:0', 80, null],
    ['h:65535', 80, { host: 'h', port: 65535 }],
    ['h:65536', 80, null],
    ['h:000080', 80, null],
    ['h:44x', 80, null],
    [':443', 80, null],
    ['', 80, null],
    ['::1', 80, null],
    ['::1:443', 80, null],
    ['[::1]443', 80, null],
    ['[h]:1', 80, null],
    ['[1.2.3.4]:1', 80, null],
    ['a b:1', 80, null],
    ['h/x:1', 80, null],
    ['user@h:1', 80, null],
  ];
  for (const [text, def, want] of table) {
    test(`${JSON.stringify(text)} default ${def}`, () => assert.deepEqual(parseAuthority(text, def), want));
  }
  test('portGiven', () => {
    assert.equal(readAuthority('h', 80)?.portGiven, false);
    assert.equal(readAuthority('h:', 80)?.portGiven, false);
    assert.equal(readAuthority('h:80', 80)?.portGiven, true);
  });
});

describe('parseUrl and absoluteHttpTarget', () => {
  const table: [string, ReturnType<typeof parseUrl>][] = [
    ['http://Example.COM/a/../b?q=1#frag', { scheme: 'http', host: 'example.com', port: 80, portGiven: false, path: '/a/../b?q=1' }],
    ['HTTP://127.0.0.1:8080', { scheme: 'http', host: '127.0.0.1', port: 8080, portGiven: true, path: '/' }],
    ['https://h/x', { scheme: 'https', host: 'h', port: 443, portGiven: false, path: '/x' }],
    ['ftp://u:p@h/pub/', { scheme: 'ftp', host: 'h', port: 21, portGiven: false, path: '/pub/' }],
    ['http://h?x', { scheme: 'http', host: 'h', port: 80, portGiven: false, path: '/?x' }],
    ['http://[::1]:81/p*', { scheme: 'http', host: '::1', port: 81, portGiven: true, path: '/p*' }],
    ['http://', null],
    ['http://h:0/', null],
    ['http://[::1/', null],
    ['/path', null],
  ];
  for (const [text, want] of table) test(JSON.stringify(text), () => assert.deepEqual(parseUrl(text), want));
  test('only http for absolute-form', () => {
    assert.deepEqual(absoluteHttpTarget('http://h:82/'), { host: 'h', port: 82, path: '/' });
    assert.equal(absoluteHttpTarget('https://h/'), null);
    assert.equal(absoluteHttpTarget('ftp://h/'), null);
  });
});

describe('formatAuthority', () => {
  const table: [string, number, number | undefined, string][] = [
    ['h', 80, 80, 'h'],
    ['h', 8080, 80, 'h:8080'],
    ['::1', 443, 443, '[::1]'],
    ['::1', 80, 443, '[::1]:80'],
    ['h', 80, undefined, 'h:80'],
  ];
  for (const [host, port, omit, want] of table) test(want, () => assert.equal(formatAuthority(host, port, omit), want));
});

describe('requestHeadAuthority (transparent door)', () => {
  const table: [string, { host: string; port: number } | null][] = [
    ['GET / HTTP/1.1\r\nHost: Example.test', { host: 'example.test', port: 80 }],
    ['GET / HTTP/1.1\r\nhost:  [::1]:8080 ', { host: '::1', port: 8080 }],
    ['GET http://a.test:81/x HTTP/1.1\r\nHost: b.test', { host: 'a.test', port: 81 }],
    ['GET http://a.test:0/x HTTP/1.1\r\nHost: b.test', null],
    ['GET / HTTP/1.1\r\nHost: b.test:99999', null],
    ['GET / HTTP/1.1\r\nAccept: */*', null],
  ];
  for (const [head, want] of table) test(JSON.stringify(head), () => assert.deepEqual(requestHeadAuthority(head), want));
});

describe('parseHostPort (parameters) keeps its messages', () => {
  const good: [string, boolean, { host: string; port: number }][] = [
    ['127.0.0.1:1080', false, { host: '127.0.0.1', port: 1080 }],
    ['[::1]:1080', false, { host: '::1', port: 1080 }],
    ['proxy.test:3128', false, { host: 'proxy.test', port: 3128 }],
    ['1080', true, { host: '', port: 1080 }],
  ];
  for (const [text, optional, want] of good) test(text, () => assert.deepEqual(parseHostPort(text, 'P', optional), want));
  const bad: [string, boolean, RegExp][] = [
    ['[::1]', false, /IPv6 address in brackets/],
    ['[::1', false, /IPv6 address in brackets/],
    ['[zz]:1', false, /bad IPv6 address/],
    ['::1:1080', false, /needs brackets/],
    ['host', false, /expected HOST:PORT/],
    ['a b:1', false, /expected a host name/],
    ['h:99999', false, /./],
  ];
  for (const [text, optional, want] of bad) test(`refuses ${text}`, () => assert.throws(() => parseHostPort(text, 'P', optional), want));
});
