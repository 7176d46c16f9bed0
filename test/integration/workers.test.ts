/**
 * WORKERS=N: several processes behind the same listeners. The primary checks the configuration
 * (exit 2 before anything listens), forks the workers, forwards SIGHUP, SIGUSR1 and SIGTERM, and exits 1
 * when a worker cannot start (a port in use). CACHE and ADMIN: workers-shared.test.ts.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { curl, PAGE, startOrigin, type Origin } from '../helpers/origin.js';
import { runCli, freeFixedPort } from '../helpers/process.js';

let dir: string;
let origin: Origin;
before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sockstap-workers-'));
  origin = await startOrigin();
});
after(async () => {
  await origin.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('WORKERS', () => {
  test('two workers serve, reload on SIGHUP and stop on SIGTERM with status 0', async () => {
    const port = await freeFixedPort();
    const p = runCli([`-P127.0.0.1:${port}/socks`, 'WORKERS=2', `STATEDIR=${dir}/two`]);
    try {
      const m = await p.waitFor(/2 workers ready \(pids (\d+), (\d+)\)/, 60_000);
      assert.notEqual(m[1], m[2]);
      for (let i = 0; i < 10; i++) {
        const r = await curl(['--socks5', `127.0.0.1:${port}`, origin.url(`/w${i}`)]);
        assert.equal(r.code, 0, r.stderr);
        assert.ok(r.stdout.equals(PAGE));
      }
      p.kill('SIGHUP');
      // Both workers reload (each writes its own line to the shared log).
      const log = join(dir, 'two', 'log', 'sockstap.log');
      for (let i = 0; i < 100 && (readFileSync(log, 'utf8').match(/ reloaded /g) ?? []).length < 2; i++) {
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.equal((readFileSync(log, 'utf8').match(/ reloaded /g) ?? []).length, 2);
      // The primary is the one to signal (its pid in STATEDIR/sockstap.pid); SIGUSR1 reaches both workers.
      assert.equal(readFileSync(join(dir, 'two', 'sockstap.pid'), 'utf8'), `${p.child.pid}\n`);
      const reopened = (): number => (readFileSync(log, 'utf8').match(/ log files reopened /g) ?? []).length;
      const afterHup = reopened();
      p.kill('SIGUSR1');
      for (let i = 0; i < 100 && reopened() < afterHup + 2; i++) await new Promise((r) => setTimeout(r, 50));
      assert.equal(reopened(), afterHup + 2);
    } finally {
      p.kill('SIGTERM');
      assert.equal(await p.exited, 0);
    }
    const records = readFileSync(join(dir, 'two', 'log', 'sessions.jsonl'), 'utf8').trim().split('\n');
    assert.equal(records.length, 10);
  });

  test('a worker killed -9 is restarted and logged; with the native accept path in workers the new one listens too', async () => {
    const port = await freeFixedPort();
    const p = runCli([`-P127.0.0.1:${port}/socks`, 'WORKERS=2', `STATEDIR=${dir}/restart`]);
    const log = join(dir, 'restart', 'log', 'sockstap.log');
    try {
      const m = await p.waitFor(/2 workers ready \(pids (\d+), (\d+)\)/, 60_000);
      // Each worker's lines reach the shared log at the end of its turn: wait for both.
      const listeningLines = (): string[] => readFileSync(log, 'utf8').split('\n').filter((l) => / listening /.test(l));
      for (let i = 0; i < 100 && listeningLines().length < 2; i++) await new Promise((r) => setTimeout(r, 100));
      const listening = listeningLines();
      assert.equal(listening.length, 2);
      // Where the addon has it (Linux), both workers accept on the native path.
      const native = listening.every((l) => /accept=native/.test(l));
      for (const victim of [m[1], m[2]]) {
        process.kill(Number(victim), 'SIGKILL');
        await p.waitFor(new RegExp(`worker \\d exited \\(SIGKILL\\); starting another[\\s\\S]*`));
      }
      // Both replaced: each listens again on the shared socket (the threads of the dead ones held it no longer).
      for (let i = 0; i < 600 && (readFileSync(log, 'utf8').match(/ started /g) ?? []).length < 4; i++) await new Promise((r) => setTimeout(r, 100));
      const text = readFileSync(log, 'utf8');
      assert.equal((text.match(/ started /g) ?? []).length, 4, text);
      assert.equal((text.match(/ worker exited; starting another /g) ?? []).length, 2, text);
      if (native) assert.equal((text.match(/ listening .*accept=native/g) ?? []).length, 4, text);
      for (let i = 0; i < 6; i++) {
        const r = await curl(['--socks5', `127.0.0.1:${port}`, origin.url(`/r${i}`)]);
        assert.equal(r.code, 0, r.stderr);
        assert.ok(r.stdout.equals(PAGE));
      }
    } finally {
      p.kill('SIGTERM');
      assert.equal(await p.exited, 0);
    }
  });

  test('a port in use makes the whole service exit 1', async () => {
    const blocker = net.createServer();
    const port = await freeFixedPort();
    await new Promise<void>((r) => blocker.listen(port, '127.0.0.1', r));
    try {
      const p = runCli([`-P127.0.0.1:${port}/socks`, 'WORKERS=2', `STATEDIR=${dir}/busy`]);
      assert.equal(await p.exited, 1);
      assert.match(p.output(), /in use/);
    } finally {
      blocker.close();
    }
  });

  test('state one process must own is refused with exit 2; CACHE and ADMIN are not', async () => {
    const c = runCli(['check', '-P127.0.0.1:1/socks', 'WORKERS=2', 'CACHE=do', 'ADMIN=127.0.0.1:0', `STATEDIR=${dir}/cache`]);
    assert.equal(await c.exited, 0, c.output());
    const p = runCli(['-P127.0.0.1:0/socks', 'WORKERS=2', `STATEDIR=${dir}/zero`]);
    assert.equal(await p.exited, 2);
    assert.match(p.output(), /WORKERS: .*port 0 cannot be shared/);
    const q = runCli(['-P127.0.0.1:1/socks', 'WORKERS=two']);
    assert.equal(await q.exited, 2);
    assert.match(q.output(), /WORKERS: expected a number/);
  });
});
