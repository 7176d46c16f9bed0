/**
 * A process that writes to an HttpCache until the test kills it with SIGKILL
 * (test/integration/cache-store-crash.test.ts). Usage: cache-writer-child.ts DIR MODE
 *
 *   large  store one complete entry (prints "committed"), then stream a large body and print
 *          "writing" once 8 MiB are on their way; never ends it.
 *   loop   store 256 KiB entries one after another, printing "committed N" after each, forever
 *          (bounded at 400 entries), so the kill lands anywhere in the write/commit cycle.
 */
import { HttpCache } from '../../src/cache/http-cache.js';
import type { Logger } from '../../src/observe/log.js';

const [dir, mode] = process.argv.slice(2);
if (!dir || (mode !== 'large' && mode !== 'loop')) {
  process.stderr.write('usage: cache-writer-child.ts DIR large|loop\n');
  process.exit(2);
}

const quiet: Logger = { debug() {}, info() {}, warn() {}, error() {} };
const cache = new HttpCache({ dir, maxBytes: 1024 * 1024 * 1024, log: quiet });
await cache.open();

const LOOP_ENTRY_BYTES = 256 * 1024;

function request(path: string): { method: string; url: string; headers: { host: string } } {
  return { method: 'GET', url: `http://origin.test/${path}`, headers: { host: 'origin.test' } };
}

async function storeWhole(path: string, body: Buffer): Promise<boolean> {
  const w = cache.beginStore(request(path), {
    status: 200,
    headers: { 'cache-control': 'max-age=3600', 'content-length': String(body.length) },
  });
  if (!w) throw new Error('not storable');
  for (let off = 0; off < body.length; off += 64 * 1024) {
    w.write(body.subarray(off, off + 64 * 1024));
    await w.drained();
  }
  return w.end();
}

if (mode === 'large') {
  if (!(await storeWhole('complete', Buffer.alloc(1024 * 1024, 0x43)))) throw new Error('commit failed');
  process.stdout.write('committed\n');
  const total = 96 * 1024 * 1024;
  const w = cache.beginStore(request('large'), {
    status: 200,
    headers: { 'cache-control': 'max-age=3600', 'content-length': String(total) },
  });
  if (!w) throw new Error('not storable');
  const chunk = Buffer.alloc(64 * 1024, 0x4c);
  let announced = false;
  // Stops short of the Content-Length, so even a slow kill never sees this body committed.
  while (w.bytes < total - chunk.length) {
    w.write(chunk);
    await w.drained();
    if (w.aborted) throw new Error('store abandoned');
    if (!announced && w.bytes >= 8 * 1024 * 1024) {
      announced = true;
      process.stdout.write('writing\n');
    }
  }
  setInterval(() => undefined, 60_000); // stay alive, mid-store, until killed
} else {
  for (let i = 0; i < 400; i++) {
    const ok = await storeWhole(`loop/${i}`, Buffer.alloc(LOOP_ENTRY_BYTES, i & 0xff));
    if (!ok) throw new Error(`commit ${i} failed`);
    process.stdout.write(`committed ${i}\n`);
  }
}
