/** MOUNT matching and rewriting (src/taps/http/mount.ts), no sockets. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseMount } from '../../src/config/params.js';
import { applyMounts } from '../../src/taps/http/mount.js';

const m = (...texts: string[]) => texts.map((t, i) => parseMount(t, `MOUNT[${i}]`));
const at = (host: string, port: number, path: string) => ({ host, port, path });

test('a path-only prefix applies to every host and keeps the rest and the query', () => {
  const mounts = m('/mnt/* http://files.test:8080/static/*');
  assert.deepEqual(
    { ...applyMounts(mounts, at('a.test', 80, '/mnt/x/y.txt?q=1'))!, mount: undefined },
    { host: 'files.test', port: 8080, path: '/static/x/y.txt?q=1', mount: undefined },
  );
  assert.equal(applyMounts(mounts, at('b.test', 81, '/mnt/'))!.path, '/static/');
  assert.equal(applyMounts(mounts, at('a.test', 80, '/mn')), null);
  assert.equal(applyMounts(mounts, at('a.test', 80, '/other/mnt/x')), null);
});

test('a full virtual URL applies to that host and port only', () => {
  const mounts = m('http://old.test/app/* http://new.test/v2/*');
  assert.equal(applyMounts(mounts, at('old.test', 80, '/app/a'))!.path, '/v2/a');
  assert.equal(applyMounts(mounts, at('old.test', 80, '/app/a'))!.host, 'new.test');
  assert.equal(applyMounts(mounts, at('old.test', 8080, '/app/a')), null);
  assert.equal(applyMounts(mounts, at('other.test', 80, '/app/a')), null);
});

test('without * the path must match exactly; the query is kept', () => {
  const mounts = m('/robots.txt http://files.test/robots-public.txt');
  assert.equal(applyMounts(mounts, at('a', 80, '/robots.txt?x'))!.path, '/robots-public.txt?x');
  assert.equal(applyMounts(mounts, at('a', 80, '/robots.txt.bak')), null);
});

test('the first matching mount wins; no mounts means null', () => {
  const mounts = m('/a/b/* http://one.test/1/*', '/a/* http://two.test/2/*');
  assert.equal(applyMounts(mounts, at('h', 80, '/a/b/c'))!.host, 'one.test');
  assert.equal(applyMounts(mounts, at('h', 80, '/a/c'))!.host, 'two.test');
  assert.equal(applyMounts([], at('h', 80, '/a/c')), null);
});
