/**
 * HTTP proxy header rules (RFC 9110 §7.6: hop-by-hop fields, Via) and the request-target parsers
 * of the HTTP door and the forwarder, without sockets; the parsers also get random input.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import { parseBasicCredentials } from '../../src/frontdoors/http-proxy.js';
import { absoluteHttpTarget as absoluteTarget, parseAuthority, targetAuthority } from '../../src/http1/authority.js';
import {
  appendVia,
  connectionOptions,
  mediaType,
  requestBodyKind,
  viaEntry,
  withoutHopByHop,
} from '../../src/taps/http/headers.js';

describe('hop-by-hop fields (RFC 9110 §7.6.1)', () => {
  test('removes the fixed list and every field Connection names, keeps order and case of the rest', () => {
    const raw = [
      'Host', 'example.com',
      'Connection', 'keep-alive, X-Private',
      'connection', 'Upgrade',
      'X-Private', 'secret',
      'Keep-Alive', 'timeout=5',
      'Proxy-Connection', 'keep-alive',
      'Proxy-Authorization', 'Basic YTpi',
      'TE', 'trailers',
      'Trailer', 'X-Checksum',
      'Transfer-Encoding', 'chunked',
      'Upgrade', 'websocket',
      'Accept', 'text/html',
      'Set-Cookie', 'a=1',
      'Set-Cookie', 'b=2',
    ];
    assert.deepEqual(withoutHopByHop(raw), [
      'Host', 'example.com',
      'Accept', 'text/html',
      'Set-Cookie', 'a=1',
      'Set-Cookie', 'b=2',
    ]);
  });

  test('Connection options are tokens, case-insensitive, across repeated fields', () => {
    assert.deepEqual([...connectionOptions(['connection', ' Close ,X-A,, x-b ', 'CONNECTION', 'X-C'])], ['close', 'x-a', 'x-b', 'x-c']);
    assert.deepEqual([...connectionOptions(['Accept', '*/*'])], []);
  });

  test('a message without hop-by-hop fields passes unchanged', () => {
    const raw = ['Host', 'h', 'Content-Length', '3', 'Cache-Control', 'no-cache'];
    assert.deepEqual(withoutHopByHop(raw), raw);
  });
});

describe('Via (RFC 9110 §7.6.3)', () => {
  test('the received protocol version, then the pseudonym', () => {
    assert.equal(viaEntry('1.1', '1.1 sockstap'), '1.1 sockstap');
    assert.equal(viaEntry('1.0', '1.1 sockstap'), '1.0 sockstap');
    assert.equal(viaEntry('1.1', 'HTTP/1.1 proxy.example:3128'), '1.1 proxy.example:3128');
    assert.equal(viaEntry('1.1', 'sockstap'), '1.1 sockstap');
  });

  test('appended after any Via already there', () => {
    const raw = ['Via', '1.1 first'];
    appendVia(raw, '1.1', '1.1 sockstap');
    assert.deepEqual(raw, ['Via', '1.1 first', 'Via', '1.1 sockstap']);
  });
});

describe('message framing and media type', () => {
  test('request body by RFC 9112 §6.3', () => {
    assert.equal(requestBodyKind({}), 'none');
    assert.equal(requestBodyKind({ 'content-length': '0' }), 'none');
    assert.equal(requestBodyKind({ 'content-length': '12' }), 'length');
    assert.equal(requestBodyKind({ 'transfer-encoding': 'chunked' }), 'chunked');
  });

  test('media type without parameters, as Squid logs it', () => {
    assert.equal(mediaType('text/html; charset=utf-8'), 'text/html');
    assert.equal(mediaType('application/json'), 'application/json');
    assert.equal(mediaType(undefined), '');
  });
});

describe('absolute-form targets (RFC 9112 §3.2.2)', () => {
  test('host, port and the path byte for byte', () => {
    assert.deepEqual(absoluteTarget('http://Example.COM/a/../b?q=1#frag'), { host: 'example.com', port: 80, path: '/a/../b?q=1' });
    assert.deepEqual(absoluteTarget('HTTP://127.0.0.1:8080'), { host: '127.0.0.1', port: 8080, path: '/' });
    assert.deepEqual(absoluteTarget('http://h?x'), { host: 'h', port: 80, path: '/?x' });
    assert.deepEqual(absoluteTarget('http://[::1]:81/p'), { host: '::1', port: 81, path: '/p' });
    assert.deepEqual(absoluteTarget('http://user:pw@h:82/'), { host: 'h', port: 82, path: '/' });
  });

  test('not an http absolute-form target', () => {
    for (const t of ['/path', '*', 'https://h/', 'ftp://h/', 'http://', 'http://h:0/', 'http://h:65536/', 'http://h:x/', 'http://[::1/', 'http://[zz]/', 'http://a b/']) {
      assert.equal(absoluteTarget(t), null, t);
    }
  });

  test('Host spelling of a target', () => {
    assert.equal(targetAuthority({ host: 'h', port: 80 }), 'h');
    assert.equal(targetAuthority({ host: 'h', port: 8080 }), 'h:8080');
    assert.equal(targetAuthority({ host: '::1', port: 80 }), '[::1]');
    assert.equal(targetAuthority({ host: '::1', port: 81 }), '[::1]:81');
  });

  test('random input never throws and yields only valid targets', () => {
    for (let i = 0; i < 2000; i++) {
      const t = `http://${randomBytes(i % 24).toString(i % 2 ? 'latin1' : 'base64')}`;
      const r = absoluteTarget(t);
      if (r) {
        assert.ok(r.port >= 1 && r.port <= 65535, t);
        assert.ok(r.host.length > 0 && r.path.startsWith('/'), t);
        assert.ok(!/[\s/]/.test(r.host), t);
      }
    }
  });
});

describe('CONNECT authority (RFC 9110 §9.3.6)', () => {
  test('host:port and [v6]:port', () => {
    assert.deepEqual(parseAuthority('example.com:443'), { host: 'example.com', port: 443 });
    assert.deepEqual(parseAuthority('10.0.0.1:8443'), { host: '10.0.0.1', port: 8443 });
    assert.deepEqual(parseAuthority('[2001:db8::1]:443'), { host: '2001:db8::1', port: 443 });
    assert.deepEqual(parseAuthority('example.com', 80), { host: 'example.com', port: 80 });
    assert.deepEqual(parseAuthority('[::1]', 80), { host: '::1', port: 80 });
  });

  test('refuses what is not an authority', () => {
    for (const t of ['example.com', ':443', 'h:0', 'h:65536', 'h:44x', '::1:443', '[::1]443', '[::1', '[h]:1', 'a b:1', 'h/x:1', '']) {
      assert.equal(parseAuthority(t), null, t);
    }
  });

  test('random input never throws', () => {
    for (let i = 0; i < 2000; i++) {
      const r = parseAuthority(randomBytes(i % 20).toString(i % 2 ? 'latin1' : 'base64'));
      if (r) assert.ok(r.port >= 1 && r.port <= 65535 && r.host !== '');
    }
  });
});

describe('Proxy-Authorization: Basic (RFC 7617)', () => {
  const basic = (s: string): string => `Basic ${Buffer.from(s).toString('base64')}`;
  test('user and password, a colon allowed in the password', () => {
    assert.deepEqual(parseBasicCredentials(basic('alice:s3:cret')), { user: 'alice', password: 's3:cret' });
    assert.deepEqual(parseBasicCredentials(`basic  ${Buffer.from('bob:').toString('base64')} `), { user: 'bob', password: '' });
    assert.deepEqual(parseBasicCredentials(basic('jörg:pässword')), { user: 'jörg', password: 'pässword' });
  });

  test('missing, other schemes and no colon are refused', () => {
    assert.equal(parseBasicCredentials(undefined), null);
    assert.equal(parseBasicCredentials('Bearer abc'), null);
    assert.equal(parseBasicCredentials(basic('nocolon')), null);
    assert.equal(parseBasicCredentials('Basic'), null);
  });
});
