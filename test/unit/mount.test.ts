/** MOUNT matching and rewriting (src/taps/http/mount.ts), no sockets. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseMount } from '../../src/config/params.js';
import { applyMounts, mapBack, type MountRequest } from '../../src/taps/http/mount.js';

const m = (...texts: string[]) => texts.map((t, i) => parseMount(t, `MOUNT[${i}]`));
const at = (host: string, port: number, path: string) => ({ host, port, path });

test('a path-only prefix applies to every host and keeps the rest and the query', () => {
  const mounts = m('/mnt/* http://files.test:8080/static/*');
  const r = applyMounts(mounts, at('a.test', 80, '/mnt/x/y.txt?q=1'))!;
  assert.deepEqual({ host: r.host, port: r.port, path: r.path }, { host: 'files.test', port: 8080, path: '/static/x/y.txt?q=1' });
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

const req = (over: Partial<MountRequest> = {}): MountRequest => ({
  clientAddress: '127.0.0.1',
  user: null,
  method: 'GET',
  vhost: null,
  ...over,
});

test('origin-form: a portless full vURL matches its host on any port; with a port, that port only', () => {
  const mounts = m('http://site.test/* http://backend.test:8080/*', 'http://port.test:81/* http://backend.test/p/*');
  assert.equal(applyMounts(mounts, at('site.test', 8080, '/a'), req({ originForm: true }))!.host, 'backend.test');
  // Absolute-form keeps DeleGate's reading: no port is port 80.
  assert.equal(applyMounts(mounts, at('site.test', 8080, '/a'), req()), null);
  assert.equal(applyMounts(mounts, at('port.test', 8080, '/a'), req({ originForm: true })), null);
  assert.equal(applyMounts(mounts, at('port.test', 81, '/a'), req({ originForm: true }))!.path, '/p/a');
});

test('MountOptions conditions: from=, dst=, method=, vhost= must all hold', () => {
  const mounts = m(
    '/a/* http://one.test/* from={10.0.0.0/8,::1},method={get,HEAD}',
    '/a/* http://two.test/* dst={*.site.test}',
    '/a/* http://three.test/* vhost={-www.test}',
  );
  assert.equal(applyMounts(mounts, at('x', 80, '/a/b'), req({ clientAddress: '10.1.2.3' }))!.host, 'one.test');
  assert.equal(applyMounts(mounts, at('x', 80, '/a/b'), req({ clientAddress: '::1', method: 'HEAD' }))!.host, 'one.test');
  assert.equal(applyMounts(mounts, at('x', 80, '/a/b'), req({ clientAddress: '10.1.2.3', method: 'POST' })), null);
  assert.equal(applyMounts(mounts, at('w.site.test', 80, '/a/b'), req({ method: 'POST' }))!.host, 'two.test');
  assert.equal(applyMounts(mounts, at('x', 80, '/a/b'), req({ vhost: 'www.test' }))!.host, 'three.test');
  assert.equal(applyMounts(mounts, at('x', 80, '/a/b'), req({ vhost: 'other.test' })), null);
  // Without the request, a mount with conditions cannot be decided and does not apply.
  assert.equal(applyMounts(mounts, at('x', 80, '/a/b')), null);
});

test('MountOptions sockstap does not implement are refused, naming them', () => {
  assert.throws(() => m('/a/* http://b.test/* via={gw}'), /MountOption "via=\{gw\}" is not supported/);
  assert.throws(() => m('/a/* http://b.test/* nvhost=-thru'), /nvhost=-thru is not supported/);
  assert.throws(() => m('/a/* http://b.test/* direction=bo'), /direction=bo/);
  assert.throws(() => m('/a/* http://b.test/* from=a,b'), /unknown MountOption "b" \(a list value needs braces/);
  assert.throws(() => m('/a/* http://b.test/* method=GET,method=POST'), /given twice/);
  assert.throws(() => m('/a/* http://b.test/* method={G@T}'), /is not an HTTP method/);
  assert.throws(() => m('/a/* https://b.test/*'), /only http:\/\/ real URLs/);
  assert.deepEqual(m('/a/* http://b.test/* direction=fo')[0]!.forwardOnly, true);
  assert.deepEqual(m('/a/* http://b.test/* direction=fb')[0]!.options, ['direction=fb']);
});

test('mapBack: Location into the real URL goes back to the virtual one', () => {
  const [prefix, exact, fo] = [
    m('/mnt/* http://b.test:8080/static/*'),
    m('/robots.txt http://b.test/robots-public.txt'),
    m('/mnt/* http://b.test:8080/static/* direction=fo'),
  ];
  const asked = { host: 'proxy.test', port: 8080 };
  const mp = applyMounts(prefix, at('proxy.test', 8080, '/mnt/x'))!;
  assert.equal(mapBack(mp, 'http://b.test:8080/static/y?z', asked), 'http://proxy.test:8080/mnt/y?z');
  assert.equal(mapBack(mp, '/static/y', asked), '/mnt/y');
  assert.equal(mapBack(mp, 'http://b.test/static/y', asked), null, 'another port is another server');
  assert.equal(mapBack(mp, 'http://c.test:8080/static/y', asked), null);
  assert.equal(mapBack(mp, '/other/y', asked), null);
  assert.equal(mapBack(mp, 'relative/y', asked), null);
  const me = applyMounts(exact, at('proxy.test', 80, '/robots.txt'))!;
  assert.equal(mapBack(me, 'http://b.test/robots-public.txt', { host: 'proxy.test', port: 80 }), 'http://proxy.test/robots.txt');
  assert.equal(mapBack(me, 'http://b.test/robots-public.txt/more', { host: 'proxy.test', port: 80 }), null);
  const mf = applyMounts(fo, at('proxy.test', 8080, '/mnt/x'))!;
  assert.equal(mapBack(mf, 'http://b.test:8080/static/y', asked), null);
});
