/**
 * http1/end-soon.ts: responses ended at the end of the event loop's turn, in the order they were
 * made; one whose client went away meanwhile is left alone; past its bound the oldest go at once.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { endSoon } from '../../src/http1/end-soon.js';

test('responses are ended together at the end of the turn, in order, each with its body', async () => {
  const order: string[] = [];
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' });
    endSoon(res, Buffer.from(`body of ${req.url}`));
    // Not yet: the end waits for the end of this turn.
    assert.equal(res.writableEnded, false);
    res.on('finish', () => order.push(req.url ?? ''));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  try {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
    const get = (path: string): Promise<string> =>
      new Promise((resolve, reject) => {
        http
          .get({ host: '127.0.0.1', port, path, agent }, (res) => {
            let body = '';
            res.setEncoding('utf8');
            res.on('data', (c: string) => (body += c));
            res.on('end', () => resolve(body));
          })
          .on('error', reject);
      });
    const bodies = await Promise.all(['/a', '/b', '/c', '/d', '/e'].map(get));
    assert.deepEqual(bodies, ['/a', '/b', '/c', '/d', '/e'].map((p) => `body of ${p}`));
    assert.deepEqual([...order].sort(), ['/a', '/b', '/c', '/d', '/e']);
    // A bodiless end (HEAD, 304) too, on the same keep-alive connections.
    assert.equal(await get('/f'), 'body of /f');
    agent.destroy();
  } finally {
    server.close();
  }
});

test('a response whose client went away before the end of the turn is not ended', async () => {
  let destroyedEnded: boolean | null = null;
  const server = http.createServer((_req, res) => {
    res.writeHead(200);
    endSoon(res, Buffer.from('never'));
    res.destroy();
    setImmediate(() => setImmediate(() => (destroyedEnded = res.writableEnded)));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  try {
    await new Promise<void>((resolve) => {
      http.get({ host: '127.0.0.1', port, path: '/' }, () => resolve()).on('error', () => resolve());
    });
    for (let i = 0; i < 50 && destroyedEnded === null; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(destroyedEnded, false);
  } finally {
    server.close();
  }
});
