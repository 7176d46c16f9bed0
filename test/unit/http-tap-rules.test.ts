/** Checkpoint 3 for HTTP (src/policy/http-rules.ts): URL patterns and http/METHOD elements. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { loadConfig } from '../../src/config/load.js';
import { checkHttpRequest } from '../../src/policy/http-rules.js';

const q = (method: string, url: string) => {
  const u = new URL(url);
  return { clientAddress: '127.0.0.1', user: null, method, url, host: u.hostname, port: Number(u.port || 80) };
};

test('URL pattern rules decide per request; other rules are left to checkpoint 2', () => {
  const config = loadConfig(['PERMIT=*:*:*', 'REJECT=http:{http://site.test/private/*}:*'], { cwd: '/tmp' });
  assert.equal(checkHttpRequest(config, q('GET', 'http://site.test/private/a')).allowed, false);
  assert.equal(checkHttpRequest(config, q('GET', 'http://site.test/public/a')).allowed, true);
  assert.equal(checkHttpRequest(config, q('GET', 'http://other.test/private/a')).allowed, true);
});

test('http/METHOD elements match those methods only', () => {
  const config = loadConfig(['REJECT=http/post,http/put:{http://wiki.test/*}:*'], { cwd: '/tmp' });
  assert.equal(checkHttpRequest(config, q('POST', 'http://wiki.test/page')).allowed, false);
  assert.equal(checkHttpRequest(config, q('PUT', 'http://wiki.test/page')).allowed, false);
  assert.equal(checkHttpRequest(config, q('GET', 'http://wiki.test/page')).allowed, true);
  assert.equal(checkHttpRequest(config, q('POST', 'http://else.test/page')).allowed, true);
});

test('first matching request rule wins', () => {
  const config = loadConfig(['PERMIT=http:{http://a.test/ok/*}:*', 'REJECT=http:{http://a.test/*}:*'], { cwd: '/tmp' });
  assert.equal(checkHttpRequest(config, q('GET', 'http://a.test/ok/1')).allowed, true);
  assert.equal(checkHttpRequest(config, q('GET', 'http://a.test/no/1')).allowed, false);
});

test('an unknown protocol is still refused; a method element needs http/', () => {
  assert.throws(() => loadConfig(['REJECT=ftp/post:*:*'], { cwd: '/tmp' }), /unknown protocol/);
});
