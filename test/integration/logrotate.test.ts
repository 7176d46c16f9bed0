/**
 * contrib/logrotate.d/sockstap run by Debian's real logrotate (issue 18 item 4): while requests
 * keep coming through the HTTP door, `logrotate -f` renames every log file, its postrotate finds
 * the process through STATEDIR/sockstap.pid and sends SIGUSR1, and sockstap opens new files: the
 * lines after the signal are in the new files, the ones before in the rotated ones, none lost and
 * none twice. The shipped file is used as it is, with only its paths and unit name pointed at the
 * test's directories (and a unit name no system has, so that systemctl fails over to the pid file).
 */
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import { startOrigin, type Origin } from '../helpers/origin.js';
import { runCli } from '../helpers/process.js';

const CONTRIB = fileURLToPath(new URL('../../contrib/logrotate.d/sockstap', import.meta.url));
const LOGROTATE = spawnSync('sh', ['-c', 'command -v logrotate'], { encoding: 'utf8' }).stdout.trim();
const skip = LOGROTATE ? false : 'needs logrotate (Debian package logrotate)';

let origin: Origin;
let dir: string;
before(async () => {
  origin = await startOrigin();
  dir = mkdtempSync(join(tmpdir(), 'sockstap-logrotate-'));
});
after(async () => {
  await origin.close();
  rmSync(dir, { recursive: true, force: true });
});

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

test('logrotate renames, SIGUSR1 from its postrotate reopens; every line is in exactly one file', { skip }, async () => {
  const stateDir = join(dir, 'state');
  const logDir = join(dir, 'log');
  const p = runCli(['-P127.0.0.1:0/http', `STATEDIR=${stateDir}`, `LOGDIR=${logDir}`]);
  try {
    const port = Number((await p.waitFor(/http door on 127\.0\.0\.1:(\d+)/))[1]);
    const pidFile = join(stateDir, 'sockstap.pid');
    await until(() => read(pidFile) === `${p.child.pid}\n`, 'STATEDIR/sockstap.pid');
    const conf = readFileSync(CONTRIB, 'utf8')
      .replaceAll('/var/log/sockstap/', `${logDir}/`)
      .replaceAll('/var/lib/sockstap/', `${stateDir}/`)
      .replaceAll('sockstap.service', `sockstap-logrotate-test-${process.pid}.service`);
    assert.notEqual(conf, readFileSync(CONTRIB, 'utf8'));
    const confFile = join(dir, 'logrotate.conf');
    writeFileSync(confFile, conf, { mode: 0o644 });

    const N = 300;
    let done = 0;
    const load = (async () => {
      for (let i = 0; i < N; i++) {
        assert.equal(await get(port, origin.url(`/r-${i}`)), 200);
        done++;
      }
    })();
    await until(() => done >= 100 && read(join(logDir, 'access.log')).includes('/r-50 '), 'the first lines');
    const rotated = await new Promise<{ code: number; out: string }>((resolve) => {
      execFile(LOGROTATE, ['-v', '-f', '-s', join(dir, 'logrotate.state'), confFile], (err, stdout, stderr) =>
        resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, out: stdout + stderr }),
      );
    });
    assert.equal(rotated.code, 0, rotated.out);
    await until(() => read(join(logDir, 'sockstap.log')).includes('log files reopened'), `the reopen; logrotate said:\n${rotated.out}`);
    const atRotation = done;
    await load;
    assert.ok(atRotation < N, 'requests went on after the rotation');
    p.kill('SIGTERM');
    assert.equal(await p.exited, 0);
    assert.equal(existsSync(pidFile), false, 'the pid file is removed at a clean stop');

    for (const [name, count] of [
      ['access.log', (t: string, i: number) => t.split(` ${origin.url(`/r-${i}`)} `).length - 1],
      ['sessions.jsonl', (t: string, i: number) => (i === 0 ? t.split('\n').filter(Boolean).length : 0)],
    ] as const) {
      const before = read(join(logDir, `${name}.1`));
      const now = read(join(logDir, name));
      assert.ok(before.length > 0, `${name}.1 holds the lines before the rotation`);
      assert.ok(now.length > 0, `${name} holds the lines after it`);
      if (name === 'access.log') {
        const missing: number[] = [];
        for (let i = 0; i < N; i++) if (count(before, i) + count(now, i) !== 1) missing.push(i);
        assert.deepEqual(missing, [], 'every request is logged exactly once');
      } else {
        assert.equal(count(before, 0) + count(now, 0), N, 'one session record per request');
      }
    }
    assert.match(read(join(logDir, 'sockstap.log.1')), /started/);
    assert.doesNotMatch(p.output(), /^\s+at /m);
  } finally {
    p.kill('SIGKILL');
  }
});
