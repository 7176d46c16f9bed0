/**
 * Every way in ends in the same tap decision: a tcprelay port to a web server is tapped, cached
 * and logged like the HTTP door; YAML header rules edit requests and responses on that path.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { curl, PAGE, startOrigin, type Origin } from '../helpers/origin.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';

let origin: Origin;
let proxy: TestProxy;
let dir: string;

before(async () => {
  origin = await startOrigin((req, res) => {
    res.writeHead(200, {
      'content-type': 'text/html',
      'content-length': PAGE.length,
      'cache-control': 'max-age=300',
      'x-internal': 'origin-secret',
      'x-seen-cookie': String(req.headers.cookie ?? 'none'),
      'x-seen-tag': String(req.headers['x-tag'] ?? 'none'),
    });
    res.end(PAGE);
  });
  dir = mkdtempSync(join(tmpdir(), 'sockstap-tcprelay-tap-'));
  const file = join(dir, 'relay.yaml');
  writeFileSync(
    file,
    [
      'http:',
      '  request: { set: { X-Tag: from-sockstap }, remove: [Cookie] }',
      '  response: { set: { X-Served-By: sockstap }, remove: [X-Internal] }',
      '',
    ].join('\n'),
  );
  proxy = await startProxy(['-f', file, `-P127.0.0.1:0/tcprelay://127.0.0.1:${origin.port}`, 'SOCKSTAP=http', 'CACHE=do']);
});
after(async () => {
  await proxy.stop();
  proxy.cleanup();
  await origin.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('a tcprelay port to a web server', () => {
  test('is tapped and cached like the HTTP door: the second fetch never reaches the origin', async () => {
    const url = `http://127.0.0.1:${proxy.port('tcprelay')}/mapped-page`;
    const first = await curl(['-i', '-H', 'Cookie: session=abc', url]);
    assert.equal(first.code, 0, first.stderr);
    const head = first.stdout.toString('latin1');
    // Header rules: the request lost its Cookie and gained X-Tag; the response lost X-Internal.
    assert.match(head, /x-seen-cookie: none/i);
    assert.match(head, /x-seen-tag: from-sockstap/i);
    assert.match(head, /x-served-by: sockstap/i);
    assert.doesNotMatch(head, /origin-secret/);
    assert.ok(first.stdout.subarray(first.stdout.length - PAGE.length).equals(PAGE));
    const acceptsAfterFirst = origin.accepts;
    // The store commits after the response; give it a moment, bounded.
    for (let i = 0; i < 100 && (proxy.proxy.httpCache?.stats().entries ?? 0) === 0; i++) await new Promise((r) => setTimeout(r, 20));
    const second = await curl(['-i', url]);
    assert.equal(second.code, 0, second.stderr);
    assert.match(second.stdout.toString('latin1'), /x-served-by: sockstap/i);
    assert.doesNotMatch(second.stdout.toString('latin1'), /origin-secret/);
    assert.equal(origin.accepts, acceptsAfterFirst, 'the hit connected to the origin');
    await proxy.stop();
    const log = proxy.readLog('access.log');
    assert.match(log, /TCP_MISS\/200 \d+ GET http:\/\/127\.0\.0\.1:\d+\/mapped-page /);
    assert.match(log, /TCP_(MEM_)?HIT\/200 \d+ GET http:\/\/127\.0\.0\.1:\d+\/mapped-page /);
    const rec = proxy.sessions().filter((s) => s.door === 'tcprelay');
    assert.equal(rec.length, 2);
    for (const s of rec) assert.equal(s.proto, 'http');
  });
});
