/**
 * The cache's memory tier (CACHEMEM): a hit from memory is byte for byte the hit from disk (after a
 * restart, when only the disk has the entry); conditional requests are answered 304 and HEAD
 * without a body from memory; bodies over its bound, and CACHEMEM=0, are served from disk.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { AccessRecord } from '../../src/observe/events.js';
import { startOrigin, type Origin } from '../helpers/origin.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';

const SMALL = Buffer.from('small body '.repeat(300));
const LARGE = Buffer.alloc(3 * 1024 * 1024, 'L');
const DATE = new Date(Date.now() - 5000).toUTCString();

function handler(req: http.IncomingMessage, res: http.ServerResponse): void {
  const body = req.url?.startsWith('/large') ? LARGE : SMALL;
  res.writeHead(200, {
    date: DATE,
    'cache-control': 'max-age=600',
    etag: '"m1"',
    'last-modified': 'Tue, 01 Dec 2026 10:00:00 GMT',
    'content-type': 'text/plain',
    'content-length': body.length,
  });
  res.end(req.method === 'HEAD' ? undefined : body);
}

let origin: Origin;
const stateDir = mkdtempSync(join(tmpdir(), 'sockstap-memtier-'));
const records: AccessRecord[] = [];

async function start(extra: string[] = []): Promise<TestProxy> {
  const p = await startProxy(['-P127.0.0.1:0/http', 'CACHE=do', `STATEDIR=${stateDir}`, ...extra]);
  p.proxy.events.on('access', (r) => records.push(r));
  return p;
}

/** One request through the door on a raw socket; the exact bytes of the answer (Connection: close). */
function raw(port: number, path: string, headers: Record<string, string> = {}, method = 'GET'): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    const extra = Object.entries(headers)
      .map(([k, v]) => `${k}: ${v}\r\n`)
      .join('');
    s.on('connect', () => s.write(`${method} ${origin.url(path)} HTTP/1.1\r\nHost: 127.0.0.1:${origin.port}\r\n${extra}Connection: close\r\n\r\n`));
    s.on('data', (d: Buffer) => chunks.push(d));
    s.on('end', () => resolve(Buffer.concat(chunks)));
    s.on('error', reject);
    s.setTimeout(15_000, () => s.destroy(new Error('timeout')));
  });
}

/** The answer with its Age value blanked (it counts seconds, so two answers may differ in it). */
const withoutAge = (b: Buffer): string => b.toString('latin1').replace(/\r\nage: \d+\r\n/i, '\r\nage: N\r\n');
const codes = (path: string): string[] => records.filter((r) => r.url === origin.url(path)).map((r) => `${r.resultCode}/${r.status}`);
async function settled(path: string, n: number): Promise<string[]> {
  for (let i = 0; i < 100 && codes(path).length < n; i++) await new Promise((r) => setTimeout(r, 20));
  return codes(path);
}

before(async () => {
  origin = await startOrigin(handler);
});
after(async () => {
  await origin.close();
  rmSync(stateDir, { recursive: true, force: true });
});

describe('memory tier', () => {
  test('a hit from memory and a hit from disk are byte-identical', async () => {
    let proxy = await start();
    const miss = await raw(proxy.port('http'), '/page');
    const memHit = await raw(proxy.port('http'), '/page');
    assert.deepEqual(await settled('/page', 2), ['TCP_MISS/200', 'TCP_MEM_HIT/200']);
    await proxy.stop();
    // A new process: only the disk has the entry; its first hit is read from disk (and promoted).
    records.length = 0;
    proxy = await start();
    try {
      const diskHit = await raw(proxy.port('http'), '/page');
      assert.deepEqual(await settled('/page', 1), ['TCP_HIT/200']);
      // The first disk hit reads the body into memory in the background: ask until it is there.
      let memAgain: Buffer = Buffer.alloc(0);
      for (let i = 0; i < 100 && !codes('/page').includes('TCP_MEM_HIT/200'); i++) {
        memAgain = await raw(proxy.port('http'), '/page');
        await settled('/page', i + 2);
      }
      assert.equal(codes('/page').at(-1), 'TCP_MEM_HIT/200');
      // From here on the record list reads as if the two had come in one request each.
      records.length = 0;
      records.push({ url: origin.url('/page'), resultCode: 'TCP_HIT', status: 200 } as AccessRecord, { url: origin.url('/page'), resultCode: 'TCP_MEM_HIT', status: 200 } as AccessRecord);
      assert.equal(withoutAge(diskHit), withoutAge(memHit));
      assert.equal(withoutAge(memAgain), withoutAge(memHit));
      assert.ok(memHit.subarray(memHit.length - SMALL.length).equals(SMALL));
      assert.match(memHit.toString('latin1'), new RegExp(`\r\ndate: ${DATE}\r\n`, 'i'), 'the stored Date');
      assert.ok(miss.subarray(miss.length - SMALL.length).equals(SMALL));
      assert.equal(origin.requests.filter((r) => r.url.endsWith('/page')).length, 1);

      // A conditional request answered 304 from memory, with the validators and no body.
      const before = origin.requests.length;
      const notModified = (await raw(proxy.port('http'), '/page', { 'if-none-match': '"m1"' })).toString('latin1');
      assert.match(notModified, /^HTTP\/1\.1 304 /);
      assert.match(notModified, /\r\netag: "m1"\r\n/i);
      assert.ok(notModified.endsWith('\r\n\r\n'), 'no body');
      const ims = (await raw(proxy.port('http'), '/page', { 'if-modified-since': 'Tue, 01 Dec 2026 10:00:00 GMT' })).toString('latin1');
      assert.match(ims, /^HTTP\/1\.1 304 /);
      // HEAD: the head of the stored GET, no body.
      const head = (await raw(proxy.port('http'), '/page', {}, 'HEAD')).toString('latin1');
      assert.match(head, /^HTTP\/1\.1 200 /);
      assert.match(head, new RegExp(`\r\ncontent-length: ${SMALL.length}\r\n`, 'i'));
      assert.ok(head.endsWith('\r\n\r\n'), 'no body');
      assert.equal(origin.requests.length, before, 'all from the cache');
      assert.deepEqual((await settled('/page', 5)).slice(2), ['TCP_IMS_HIT/304', 'TCP_IMS_HIT/304', 'TCP_MEM_HIT/200']);
    } finally {
      await proxy.stop();
    }
  });

  test('a body over the memory bound is served from disk, whole', async () => {
    records.length = 0;
    const proxy = await start(['CACHEMEM=8m']); // holds bodies up to 1 MiB
    try {
      await raw(proxy.port('http'), '/large');
      const hit = await raw(proxy.port('http'), '/large');
      assert.ok(hit.subarray(hit.length - LARGE.length).equals(LARGE));
      assert.deepEqual(await settled('/large', 2), ['TCP_MISS/200', 'TCP_HIT/200']);
      // A range across the big reads of the disk path (256 KiB each), from disk.
      const part = await raw(proxy.port('http'), '/large', { range: 'bytes=200000-1300000' });
      assert.match(part.toString('latin1'), /^HTTP\/1\.1 206 /);
      assert.match(part.toString('latin1'), new RegExp(`\r\ncontent-range: bytes 200000-1300000/${LARGE.length}\r\n`, 'i'));
      assert.ok(part.subarray(part.length - 1100001).equals(LARGE.subarray(200000, 1300001)));
      // A client that goes away in the middle of a disk body: the proxy goes on serving.
      await new Promise<void>((resolve) => {
        const s = net.connect(proxy.port('http'), '127.0.0.1', () => s.write(`GET ${origin.url('/large')} HTTP/1.1\r\nHost: x\r\n\r\n`));
        s.once('data', () => {
          s.destroy();
          resolve();
        });
        s.on('error', () => resolve());
      });
      const again = await raw(proxy.port('http'), '/large');
      assert.ok(again.subarray(again.length - LARGE.length).equals(LARGE));
    } finally {
      await proxy.stop();
    }
  });

  test('CACHEMEM=0: no memory tier, every hit from disk', async () => {
    records.length = 0;
    const proxy = await start(['CACHEMEM=0']);
    try {
      await raw(proxy.port('http'), '/page');
      await raw(proxy.port('http'), '/page');
      await raw(proxy.port('http'), '/page');
      assert.deepEqual(await settled('/page', 3), ['TCP_HIT/200', 'TCP_HIT/200', 'TCP_HIT/200']);
    } finally {
      await proxy.stop();
    }
  });
});
