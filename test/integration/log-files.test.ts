/**
 * Logs that survive (issue 13 finding 8): SIGUSR1 and SIGHUP reopen every log file, so after
 * `mv access.log access.log.1` new lines go to a new access.log and none is lost; a full file
 * system (ENOSPC on a 64 KiB tmpfs, as root) is counted in /metrics, said once in sockstap.log,
 * never a stack trace, and logging resumes by itself when space returns, every line kept; kill -9
 * loses nothing older than the batch window. sockstap runs as its command line.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, renameSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { FLUSH_MS } from '../../src/observe/log.js';
import { startOrigin, type Origin } from '../helpers/origin.js';
import { runCli, unreadableCheckout, type CliProcess } from '../helpers/process.js';

let origin: Origin;
const dirs: string[] = [];

before(async () => {
  origin = await startOrigin();
});
after(async () => {
  await origin.close();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'sockstap-logs-'));
  dirs.push(d);
  return d;
}

const read = (p: string): string => (existsSync(p) ? readFileSync(p, 'utf8') : '');

async function until<T>(fn: () => T | null | undefined | false, what: string, ms = 15_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** One GET through the HTTP door; resolves with the status. */
function get(proxyPort: number, url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: proxyPort, path: url, headers: { connection: 'close' } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end();
  });
}

async function start(args: string[]): Promise<{ p: CliProcess; port: number; admin: string | null }> {
  const p = runCli(args);
  const port = Number((await p.waitFor(/http door on 127\.0\.0\.1:(\d+)/))[1]);
  const admin = args.some((a) => a.startsWith('ADMIN=')) ? (await p.waitFor(/; admin (http:\/\/[^\s/;]+)\//))[1]! : null;
  return { p, port, admin };
}

async function stop(p: CliProcess): Promise<void> {
  p.kill('SIGTERM');
  await p.exited;
}

describe('reopening', () => {
  for (const signal of ['SIGUSR1', 'SIGHUP'] as const) {
    test(`${signal}: after mv, every log file is opened again by its name; no line lost`, async () => {
      const dir = tempDir();
      const logDir = join(dir, 'log');
      const { p, port } = await start(['-P127.0.0.1:0/http', `STATEDIR=${dir}`, `LOGDIR=${logDir}`]);
      try {
        const log = (name: string): string => read(join(logDir, name));
        assert.equal(await get(port, origin.url('/before')), 200);
        await until(() => log('access.log').includes('/before') && log('sessions.jsonl').includes('"result"'), 'the first lines');
        for (const f of ['access.log', 'sessions.jsonl', 'sockstap.log']) renameSync(join(logDir, f), join(logDir, `${f}.1`));
        p.kill(signal);
        await until(() => log('sockstap.log').includes('log files reopened'), `a new sockstap.log after ${signal}`);
        assert.equal(await get(port, origin.url('/after')), 200);
        await until(() => log('access.log').includes('/after') && log('sessions.jsonl').includes('"result"'), 'lines in the new files');
        const old = log('access.log.1');
        assert.match(old, /\/before /);
        assert.doesNotMatch(old, /\/after /);
        assert.doesNotMatch(log('access.log'), /\/before /);
        assert.equal(log('sessions.jsonl.1').trim().split('\n').length, 1);
        assert.equal(log('sessions.jsonl').trim().split('\n').length, 1);
        assert.doesNotMatch(p.output(), /^\s+at /m);
      } finally {
        await stop(p);
      }
    });
  }
});

const isRoot = process.getuid?.() === 0;

describe('a full log file system', { skip: isRoot ? false : 'mounting a tmpfs needs root' }, () => {
  test('ENOSPC is counted in /metrics, said once, never a stack trace; every line arrives when space returns', async (t) => {
    const dir = tempDir();
    const logDir = join(dir, 'log');
    try {
      execFileSync('mkdir', ['-p', logDir]);
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', logDir]);
    } catch (err) {
      t.skip(`cannot mount a tmpfs: ${String(err)}`);
      return;
    }
    const { p, port, admin } = await start(['-P127.0.0.1:0/http', 'ADMIN=127.0.0.1:0', `STATEDIR=${dir}`, `LOGDIR=${logDir}`]);
    const metric = async (name: string, file: string): Promise<number> => {
      const text = await new Promise<string>((resolve, reject) => {
        http.get(`${admin}/metrics`, (res) => {
          let body = '';
          res.on('data', (d: Buffer) => (body += d.toString()));
          res.on('end', () => resolve(body));
        }).on('error', reject);
      });
      const m = new RegExp(`^${name}\\{file="${file.replace('.', '\\.')}"\\} (\\d+)`, 'm').exec(text);
      return m ? Number(m[1]) : -1;
    };
    // What the dashboard shows: the files that cannot be written now.
    const failingOnDashboard = async (): Promise<string[]> => {
      const body = await new Promise<string>((resolve, reject) => {
        http.get(`${admin}/api/stats`, (res) => {
          let b = '';
          res.on('data', (d: Buffer) => (b += d.toString()));
          res.on('end', () => resolve(b));
        }).on('error', reject);
      });
      return (JSON.parse(body) as { logFilesFailing: Array<{ file: string; code: string }> }).logFilesFailing.map((f) => `${f.file} ${f.code}`);
    };
    const filler = join(logDir, 'filler');
    try {
      const log = (name: string): string => read(join(logDir, name));
      await until(() => log('sockstap.log').includes('started'), 'sockstap.log');
      assert.equal(await metric('sockstap_log_write_errors_total', 'access.log'), 0);
      try {
        execFileSync('dd', ['if=/dev/zero', `of=${filler}`, 'bs=1k', 'count=1024'], { stdio: 'ignore' });
      } catch {
        // dd stops at ENOSPC: the file system is full
      }
      const N = 20;
      for (let i = 0; i < N; i++) assert.equal(await get(port, origin.url(`/full-${i}`)), 200);
      // Failing, and retried (more than one failed attempt) while said only once.
      for (const end = Date.now() + 15_000; ; ) {
        if ((await metric('sockstap_log_write_errors_total', 'access.log')) >= 2) break;
        if (Date.now() > end) throw new Error(`access.log errors not counted; output:\n${p.output()}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.equal(await metric('sockstap_log_file_failing', 'access.log'), 1);
      assert.ok((await failingOnDashboard()).includes('access.log ENOSPC'), 'the dashboard names the failing file');
      assert.equal(p.output().match(/log file not writable[^\n]*access\.log/g)?.length, 1, p.output());
      assert.match(p.output(), /log file not writable[^\n]*error=ENOSPC/);
      rmSync(filler);
      await until(() => [...Array(N).keys()].every((i) => log('access.log').includes(`/full-${i} `)), 'every line in access.log');
      for (const end = Date.now() + 15_000; ; ) {
        if ((await metric('sockstap_log_file_failing', 'access.log')) === 0) break;
        if (Date.now() > end) throw new Error('access.log still failing');
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.equal(await metric('sockstap_log_lines_dropped_total', 'access.log'), 0);
      assert.ok(!(await failingOnDashboard()).some((f) => f.startsWith('access.log')), 'the dashboard no longer names it');
      await until(() => log('sockstap.log').includes('log file writable again'), 'the recovery in sockstap.log');
      assert.equal(log('sockstap.log').match(/log file not writable[^\n]*access\.log/g)?.length, 1, log('sockstap.log'));
      assert.equal(log('access.log').split('\n').filter(Boolean).length, N);
      assert.doesNotMatch(p.output(), /^\s+at /m);
      assert.equal(p.child.exitCode, null, 'still running');
    } finally {
      await stop(p);
      rmSync(filler, { force: true });
      execFileSync('umount', [logDir]);
    }
  });
});

// As root the proxy runs as nobody (below), who must be able to read this checkout.
describe('a log directory that refuses the new file', { skip: isRoot && unreadableCheckout() }, () => {
  test('EACCES after a rotation is counted and said once; the file appears when the directory can be written again', async () => {
    // Root ignores file modes: the proxy runs as nobody then.
    const uid = isRoot ? 65534 : undefined;
    const dir = tempDir();
    const logDir = join(dir, 'log');
    const stateDir = join(dir, 'state');
    execFileSync('mkdir', ['-p', logDir, stateDir]);
    if (uid !== undefined) execFileSync('chown', [`${uid}:${uid}`, dir, logDir, stateDir]);
    const p = runCli(['-P127.0.0.1:0/http', 'ADMIN=127.0.0.1:0', `STATEDIR=${stateDir}`, `LOGDIR=${logDir}`], { uid });
    try {
      const port = Number((await p.waitFor(/http door on 127\.0\.0\.1:(\d+)/))[1]);
      const admin = (await p.waitFor(/; admin (http:\/\/[^\s/;]+)\//))[1]!;
      const errors = async (): Promise<number> => {
        const text = await new Promise<string>((resolve, reject) => {
          http.get(`${admin}/metrics`, (res) => {
            let body = '';
            res.on('data', (d: Buffer) => (body += d.toString()));
            res.on('end', () => resolve(body));
          }).on('error', reject);
        });
        return Number(/^sockstap_log_write_errors_total\{file="access\.log"\} (\d+)/m.exec(text)?.[1] ?? -1);
      };
      const log = (name: string): string => read(join(logDir, name));
      assert.equal(await get(port, origin.url('/one')), 200);
      await until(() => log('access.log').includes('/one '), 'the first line');
      renameSync(join(logDir, 'access.log'), join(logDir, 'access.log.1'));
      execFileSync('chmod', ['0555', logDir]);
      p.kill('SIGUSR1');
      assert.equal(await get(port, origin.url('/two')), 200);
      for (const end = Date.now() + 15_000; (await errors()) < 2; ) {
        if (Date.now() > end) throw new Error(`no EACCES counted; output:\n${p.output()}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.equal(p.output().match(/log file not writable[^\n]*access\.log/g)?.length, 1, p.output());
      assert.match(p.output(), /log file not writable[^\n]*error=EACCES/);
      assert.equal(await get(port, origin.url('/three')), 200);
      execFileSync('chmod', ['0755', logDir]);
      await until(() => log('access.log').includes('/two ') && log('access.log').includes('/three '), 'the lines in the new access.log');
      assert.doesNotMatch(log('access.log.1'), /\/two /);
      assert.doesNotMatch(p.output(), /^\s+at /m);
    } finally {
      execFileSync('chmod', ['0755', logDir]);
      await stop(p);
    }
  });
});

test(`kill -9 loses no line older than the batch window (${FLUSH_MS} ms)`, async () => {
  const dir = tempDir();
  const logDir = join(dir, 'log');
  const { p, port } = await start(['-P127.0.0.1:0/http', `STATEDIR=${dir}`, `LOGDIR=${logDir}`]);
  const N = 50;
  for (let i = 0; i < N; i++) assert.equal(await get(port, origin.url(`/k-${i}`)), 200);
  // Ten windows after the last answer: every line is older than the window.
  await new Promise((r) => setTimeout(r, FLUSH_MS * 10));
  p.kill('SIGKILL');
  await p.exited;
  assert.equal(read(join(logDir, 'access.log')).split('\n').filter(Boolean).length, N);
});
