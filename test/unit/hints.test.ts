/** "Did you mean", the brace-expansion reconstruction and HOSTS= (src/config/hints.ts, params.ts). */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { braceSplit, closest } from '../../src/config/hints.js';
import { loadConfig, withDefaultJob, DEFAULT_JOB } from '../../src/config/load.js';
import { PARAMETERS } from '../../src/config/params.js';
import { ConfigError } from '../../src/config/types.js';

test('closest finds typos, not unrelated words', () => {
  const names = Object.keys(PARAMETERS);
  assert.equal(closest('CAHCE', names), 'CACHE');
  assert.equal(closest('LOGDRI', names), 'LOGDIR');
  assert.equal(closest('REALIABLE', names), 'RELIABLE');
  assert.equal(closest('sokcs', ['socks', 'http', 'auto']), 'socks');
  assert.equal(closest('FOOBAR', names), undefined);
  assert.equal(closest('x', ['do', 'no']), undefined);
});

test('braceSplit gives back the argument bash split', () => {
  assert.equal(braceSplit(['AUTHORIZER=-lista:b', 'AUTHORIZER=-listc:d'], 'AUTHORIZER'), 'AUTHORIZER=-list{a:b,c:d}');
  assert.equal(braceSplit(['RELIABLE=10.0.0.1/32', 'RELIABLE=10.0.0.2/32'], 'RELIABLE'), 'RELIABLE=10.0.0.{1,2}/32');
  assert.equal(braceSplit(['CACHE=do'], 'CACHE'), undefined);
});

test('HOSTS= adds static names; repeatable; bad ones refused', () => {
  const c = loadConfig(['HOSTS={a.test,b.test}/127.0.0.1', 'HOSTS=c.test/::1,a.test/127.0.0.2'], { cwd: '/tmp' });
  assert.deepEqual(c.dns?.hosts, { 'a.test': ['127.0.0.1', '127.0.0.2'], 'b.test': ['127.0.0.1'], 'c.test': ['::1'] });
  assert.throws(() => loadConfig(['HOSTS=a.test'], { cwd: '/tmp' }), (e: unknown) => e instanceof ConfigError && /NAME\/ADDRESS/.test(e.message));
  assert.throws(() => loadConfig(['HOSTS=a.test/not-an-ip'], { cwd: '/tmp' }), /expected an IP address/);
});

test('CACHE and IDENT take do or no only', () => {
  for (const v of ['yes', 'on', 'true', 'off']) {
    assert.throws(() => loadConfig([`CACHE=${v}`], { cwd: '/tmp' }), /CACHE: expected do or no/);
  }
  assert.equal(loadConfig(['CACHE=DO'], { cwd: '/tmp' }).cache.enabled, true);
  assert.throws(() => loadConfig(['IDENT=yes'], { cwd: '/tmp' }), /IDENT: expected do or no/);
});

test('withDefaultJob: -f leaves the main job out', () => {
  assert.deepEqual(withDefaultJob(['-f', 'x.yaml']), ['-f', 'x.yaml']);
  assert.deepEqual(withDefaultJob(['SOCKSTAP=http']), [...DEFAULT_JOB.filter((a) => !a.startsWith('SOCKSTAP=')), 'SOCKSTAP=http']);
});
