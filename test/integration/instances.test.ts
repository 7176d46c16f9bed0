/**
 * Two sockstap instances in one process (as the tests run them) share no origin pool (issue 14
 * item 3): each HTTP door keeps its own keep-alive origin connections, and stopping one instance
 * closes its own and leaves the other's working.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import type { Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { PAGE, startOrigin, type Origin } from '../helpers/origin.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';

/** One absolute-form GET through the HTTP door at `port`, on a client connection of its own. */
function get(port: number, url: string): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: url, agent: false, headers: { Connection: 'close' } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

async function until(what: string, check: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !check(); i++) await new Promise((r) => setTimeout(r, 25));
  assert.ok(check(), what);
}

describe('two instances in one process', () => {
  let origin: Origin;
  let a: TestProxy;
  let b: TestProxy;
  const open = new Set<Socket>();

  before(async () => {
    origin = await startOrigin();
    // The origin keeps idle connections longer than the test takes.
    origin.server.keepAliveTimeout = 60_000;
    origin.server.on('connection', (s: Socket) => {
      open.add(s);
      s.on('close', () => open.delete(s));
    });
    a = await startProxy(['-P127.0.0.1:0/http']);
    b = await startProxy(['-P127.0.0.1:0/http']);
  });

  after(async () => {
    await a?.stop();
    await b?.stop();
    a?.cleanup();
    b?.cleanup();
    await origin?.close();
  });

  test('each keeps its own origin connections; stopping one leaves the other pool alone', async () => {
    const url = origin.url('/page');
    const first = await get(a.port(), url);
    assert.equal(first.status, 200);
    assert.deepEqual(first.body, PAGE);
    assert.equal(origin.accepts, 1);
    // A's second request reuses A's pooled origin connection.
    assert.equal((await get(a.port(), url)).status, 200);
    assert.equal(origin.accepts, 1, 'the first instance reuses its origin connection');
    // B never takes A's idle connection: it dials one of its own.
    assert.equal((await get(b.port(), url)).status, 200);
    assert.equal(origin.accepts, 2, 'the second instance has an origin connection of its own');
    await until('both origin connections are open', () => open.size === 2);

    await a.stop();
    await until("the stopped instance's origin connection is closed", () => open.size === 1);
    // B's pooled connection survived A's stop and is reused.
    const again = await get(b.port(), url);
    assert.equal(again.status, 200);
    assert.deepEqual(again.body, PAGE);
    assert.equal(origin.accepts, 2, "the second instance's origin connection was not touched by the first one's stop");
    assert.equal(open.size, 1);
  });
});
