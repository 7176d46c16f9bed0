/**
 * GET /metrics passes Prometheus's own linter, `promtool check metrics` (Debian's prometheus
 * package), after real traffic: a cached HTTP fetch through SOCKS5 (miss, then hit), a forwarded
 * request on the HTTP door, a CONNECT tunnel and a refused destination.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, before, test } from 'node:test';
import { curl, startOrigin, type Origin } from '../helpers/origin.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';

const promtool = spawnSync('sh', ['-c', 'command -v promtool'], { encoding: 'utf8' }).stdout.trim();

let origin: Origin;
let proxy: TestProxy;

before(async () => {
  origin = await startOrigin((req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'max-age=300', 'content-length': 6 });
    res.end('hello\n');
  });
  proxy = await startProxy(['-P127.0.0.1:0/auto', 'SOCKSTAP=all', 'CACHE=do', 'ADMIN=127.0.0.1:0', 'REJECT=*:*:*.refused.test']);
});
after(async () => {
  await proxy?.stop();
  proxy?.cleanup();
  await origin?.close();
});

test('/metrics passes promtool check metrics', { skip: !promtool && 'promtool is not installed (Debian package prometheus)' }, async () => {
  const p = `127.0.0.1:${proxy.port()}`;
  for (const args of [
    ['--socks5-hostname', p, origin.url('/a')],
    ['--socks5-hostname', p, origin.url('/a')],
    ['-x', `http://${p}`, origin.url('/b')],
    ['-p', '-x', `http://${p}`, origin.url('/c')],
  ]) {
    const r = await curl(args);
    assert.equal(r.code, 0, r.stderr);
  }
  const admin = proxy.proxy.adminUrl!;
  const metrics = await curl([`${admin}metrics`]);
  assert.equal(metrics.code, 0, metrics.stderr);
  const text = metrics.stdout.toString();
  assert.match(text, /sockstap_http_requests_total\{result_code="TCP_(MEM_)?HIT"\}/);
  const check = spawnSync(promtool, ['check', 'metrics'], { input: text, encoding: 'utf8' });
  assert.equal(check.status, 0, `promtool: ${check.stdout}${check.stderr}`);
});
