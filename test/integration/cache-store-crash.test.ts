/**
 * kill -9 of a process in the middle of storing: a fresh open() serves no partial entry, keeps
 * every entry whose commit had finished, and removes the leftovers.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { HttpCache } from '../../src/cache/http-cache.js';
import type { Logger } from '../../src/observe/log.js';

const CHILD = fileURLToPath(new URL('../helpers/cache-writer-child.ts', import.meta.url));
const quiet: Logger = { debug() {}, info() {}, warn() {}, error() {} };
const LOOP_ENTRY_BYTES = 256 * 1024;

const dirs: string[] = [];
const children: ChildProcess[] = [];
after(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function request(path: string): { method: string; url: string; headers: { host: string } } {
  return { method: 'GET', url: `http://origin.test/${path}`, headers: { host: 'origin.test' } };
}

/** Start the writer; resolve with its stdout once `until` matches it (or reject if it exits first). */
function runChild(dir: string, mode: string, until: RegExp): Promise<{ child: ChildProcess; out: () => string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', CHILD, dir, mode], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let out = '';
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`child did not print ${until} within 20 s:\n${out}\n${err}`)), 20_000);
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (until.test(out)) {
        clearTimeout(timer);
        resolve({ child, out: () => out });
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`child exited (${code}) before ${until}:\n${out}\n${err}`));
    });
  });
}

async function kill9(child: ChildProcess): Promise<void> {
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await exited;
}

async function readBody(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of stream) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

test('killed in the middle of a large store: the complete entry is served, the partial one is not', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sockstap-cache-crash-'));
  dirs.push(dir);
  const { child } = await runChild(dir, 'large', /writing\n/);
  await kill9(child);
  // The partial body is in tmp/ at the moment of the kill.
  assert.equal(readdirSync(join(dir, 'tmp')).length > 0, true);

  const cache = new HttpCache({ dir, maxBytes: 1024 * 1024 * 1024, log: quiet });
  await cache.open();
  try {
    assert.equal(cache.stats().entries, 1);
    assert.equal(await cache.lookup(request('large')), null);
    const hit = await cache.lookup(request('complete'));
    assert.ok(hit);
    assert.deepEqual(await readBody(hit.body()), Buffer.alloc(1024 * 1024, 0x43));
    assert.deepEqual(readdirSync(join(dir, 'tmp')), []);
  } finally {
    await cache.close();
  }
});

test('killed at an arbitrary point of a store/commit loop: every finished commit is served whole, nothing else', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sockstap-cache-crash-'));
  dirs.push(dir);
  const { child, out } = await runChild(dir, 'loop', /committed 11\n/);
  await kill9(child);
  const committed = [...out().matchAll(/committed (\d+)\n/g)].map((m) => Number(m[1]));
  const last = Math.max(...committed);

  const cache = new HttpCache({ dir, maxBytes: 1024 * 1024 * 1024, log: quiet });
  await cache.open();
  try {
    for (let i = 0; i <= last + 1; i++) {
      const hit = await cache.lookup(request(`loop/${i}`));
      if (i <= last) assert.ok(hit, `entry ${i} was committed before the kill`);
      if (!hit) continue; // the one in flight may or may not have finished its commit
      assert.equal(hit.size, LOOP_ENTRY_BYTES);
      assert.deepEqual(await readBody(hit.body()), Buffer.alloc(LOOP_ENTRY_BYTES, i & 0xff), `entry ${i}`);
    }
    assert.equal(await cache.lookup(request(`loop/${last + 2}`)), null);
    assert.deepEqual(readdirSync(join(dir, 'tmp')), []);
    // No orphan: every file in entries/ belongs to a served entry.
    assert.equal(readdirSync(join(dir, 'entries')).length, 2 * cache.stats().entries);
  } finally {
    await cache.close();
  }
});
