/**
 * LineFile survives its disk (issue 13 finding 8): a failed open or write keeps the lines, is
 * reported once, and is retried until the file can be written again; reopen() sends later lines to
 * a new file at the same path while earlier ones reach the moved file; close() flushes.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { LineFile, RETRY_MS } from '../../src/observe/log.js';

async function until(pred: () => boolean, what: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const read = (p: string): string => (existsSync(p) ? readFileSync(p, 'utf8') : '');

test('a directory that cannot be made (a file in its place) is retried, reported once, and the lines arrive once it can', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sockstap-linefile-'));
  try {
    const blocker = join(dir, 'log');
    writeFileSync(blocker, 'a file where the log directory should be\n');
    const path = join(blocker, 'access.log');
    const f = new LineFile(path, 0);
    const errors: Array<{ code?: string; first: boolean }> = [];
    let recovered = 0;
    f.hooks = { onError: (err, first) => errors.push({ code: err.code, first }), onRecover: () => recovered++ };
    for (let i = 0; i < 5; i++) f.write(`line ${i}\n`);
    await until(() => errors.length >= 2, 'two failed attempts', RETRY_MS * 5);
    // mkdir -p answers EEXIST for a file in the way, open(2) ENOTDIR.
    assert.match(errors[0]!.code ?? '', /^(ENOTDIR|EEXIST)$/);
    assert.deepEqual(errors.map((e) => e.first), [true, ...errors.slice(1).map(() => false)]);
    assert.ok(f.failing);
    f.write('line 5\n');
    rmSync(blocker);
    mkdirSync(blocker);
    await until(() => recovered === 1, 'the recovery', RETRY_MS * 5);
    await f.close();
    assert.equal(read(path), [0, 1, 2, 3, 4, 5].map((i) => `line ${i}\n`).join(''));
    assert.equal(f.failing, false);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('reopen(): lines before it go to the moved file, lines after it to a new one, none lost', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sockstap-linefile-'));
  try {
    const path = join(dir, 'access.log');
    const f = new LineFile(path);
    for (let i = 0; i < 100; i++) f.write(`a${i}\n`);
    await until(() => read(path).split('\n').length > 100, 'the first lines');
    renameSync(path, `${path}.1`);
    for (let i = 0; i < 50; i++) f.write(`b${i}\n`);
    f.reopen();
    for (let i = 0; i < 50; i++) f.write(`c${i}\n`);
    await f.close();
    const old = read(`${path}.1`);
    const now = read(path);
    assert.equal(old, [...Array(100).keys()].map((i) => `a${i}\n`).join('') + [...Array(50).keys()].map((i) => `b${i}\n`).join(''));
    assert.equal(now, [...Array(50).keys()].map((i) => `c${i}\n`).join(''));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

const isRoot = process.getuid?.() === 0;

test('a full file system (ENOSPC, a 64 KiB tmpfs): lines wait, partial writes go on, everything arrives when space returns', { skip: isRoot ? false : 'mounting a tmpfs needs root' }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'sockstap-linefile-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', dir]);
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    t.skip(`cannot mount a tmpfs: ${String(err)}`);
    return;
  }
  try {
    const path = join(dir, 'sessions.jsonl');
    const f = new LineFile(path, 0);
    const codes: string[] = [];
    let recovered = 0;
    f.hooks = { onError: (err) => codes.push(err.code ?? '?'), onRecover: () => recovered++ };
    // Fill the file system but for a few hundred bytes: the next batch is written in part.
    const filler = join(dir, 'filler');
    try {
      execFileSync('dd', ['if=/dev/zero', `of=${filler}`, 'bs=1k', 'count=1024'], { stdio: 'ignore' });
    } catch {
      // dd stops at ENOSPC: the file system is full
    }
    const lines = [...Array(200).keys()].map((i) => `{"n":${i},"pad":"${'x'.repeat(40)}"}\n`);
    for (const l of lines) f.write(l);
    await until(() => codes.length > 0, 'ENOSPC', RETRY_MS * 5);
    assert.equal(codes[0], 'ENOSPC');
    rmSync(filler);
    await until(() => recovered === 1, 'the recovery', RETRY_MS * 5);
    await f.close();
    assert.equal(read(path), lines.join(''));
  } finally {
    execFileSync('umount', [dir]);
    rmSync(dir, { recursive: true, force: true });
  }
});

test('lines reach the file byte for byte as UTF-8, in order: multi-byte text, lone surrogates, a line longer than a batch, batches past 64 KiB', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sockstap-linefile-'));
  try {
    const path = join(dir, 'access.log');
    const f = new LineFile(path);
    const lines: string[] = [];
    for (let i = 0; i < 3000; i++) {
      const kind = i % 5;
      const line =
        kind === 0 ? `ascii ${i} ${'x'.repeat(i % 97)}\n`
        : kind === 1 ? `café ${i} ünïcode\n`
        : kind === 2 ? `emoji ${i} \u{1F600}\u{1F4A9}\n`
        : kind === 3 ? `lone ${i} \uD800 \uDFFF\n`
        : `long ${i} ${'\u00e9'.repeat(i % 7 === 0 ? 9000 : 10)}\n`;
      lines.push(line);
      f.write(line);
    }
    const huge = `huge ${'\u20ac'.repeat(100_000)}\n`;
    lines.push(huge);
    f.write(huge);
    f.write('last\n');
    lines.push('last\n');
    await f.close();
    assert.ok(readFileSync(path).equals(Buffer.from(lines.join(''), 'utf8')));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
