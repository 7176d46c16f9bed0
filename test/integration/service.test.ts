/**
 * contrib/sockstap.service after the install steps of docs/service.md: the steps are read from
 * the doc (the package copied and linked into temporary directories instead of /opt and /usr),
 * `systemd-analyze verify` checks the unit, and its ExecStart line runs as an unprivileged user
 * (as DynamicUser would), with the unit's state and log directories in temporary ones.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const has = (cmd: string): boolean => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
const isRoot = process.getuid?.() === 0;
const built = existsSync(join(ROOT, 'dist/cli.js'));

/** The ```sh block of the doc's "## Install" section, comments removed. */
function installSteps(): string[] {
  const doc = readFileSync(join(ROOT, 'docs/service.md'), 'utf8');
  const start = doc.indexOf('\n## Install\n');
  const block = /```sh\n([\s\S]*?)```/.exec(doc.slice(start))![1]!;
  return block
    .split('\n')
    .map((l) => l.replace(/\s+#\s.*$/, '').trim())
    .filter(Boolean);
}

test(
  'the systemd unit verifies and its ExecStart line serves after the documented install',
  { skip: (!isRoot || !has('systemd-analyze') || !has('setpriv') || !has('npm') || !built) && 'needs root, systemd-analyze, setpriv, npm and a build (npm ci)' },
  async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sockstap-service-'));
    chmodSync(dir, 0o755); // as /opt and /etc are: the service user reads the installed package
    const child: { p?: ReturnType<typeof spawn> } = {};
    try {
      const opt = join(dir, 'opt/sockstap');
      const prefix = join(dir, 'usr');
      const etc = join(dir, 'etc');
      mkdirSync(etc, { recursive: true });
      const steps = installSteps();
      assert.ok(steps.includes('npm ci'), 'the steps start from npm ci');
      const unitPath = join(etc, 'sockstap.service');
      for (const step of steps) {
        if (step === 'npm ci' || /systemctl/.test(step)) continue; // done by the test run / needs a running systemd
        const places: Record<string, string> = { '/opt/sockstap': opt, '/etc/systemd/system/': `${etc}/`, '/etc/sockstap': join(etc, 'sockstap') };
        let cmd = step.replace(/^sudo /, '').replace(/\/opt\/sockstap|\/etc\/systemd\/system\/|\/etc\/sockstap/g, (m) => places[m]!);
        if (/^npm install -g\b/.test(cmd)) cmd = cmd.replace('npm install -g', `npm install -g --offline --prefix ${prefix}`);
        const r = spawnSync('sh', ['-c', cmd], { cwd: ROOT, encoding: 'utf8' });
        assert.equal(r.status, 0, `${cmd}: ${r.stdout}${r.stderr}`);
      }
      assert.ok(existsSync(unitPath), 'the unit is installed');
      const verify = spawnSync('systemd-analyze', ['verify', unitPath], { encoding: 'utf8' });
      assert.equal(verify.status, 0, verify.stderr);
      assert.doesNotMatch(verify.stderr, /sockstap\.service/, verify.stderr);

      const unit = readFileSync(unitPath, 'utf8');
      const execStart = /^ExecStart=(.*)$/m.exec(unit)![1]!;
      const workDir = /^WorkingDirectory=(.*)$/m.exec(unit)![1]!;
      assert.match(execStart, /^\/usr\/bin\/env sockstap /);
      // The unit's directories, made for the service user as StateDirectory/LogsDirectory do.
      const state = join(dir, 'var/lib/sockstap');
      const logs = join(dir, 'var/log/sockstap');
      for (const d of [state, logs]) {
        mkdirSync(d, { recursive: true });
        chownSync(d, 65534, 65534);
      }
      const line = execStart
        .replaceAll('/etc/sockstap/sockstap.yaml', join(etc, 'sockstap/sockstap.yaml'))
        .replaceAll('/var/lib/sockstap', state)
        .replaceAll('/var/log/sockstap', logs);
      assert.ok(existsSync(join(etc, 'sockstap/sockstap.yaml')));
      // Free ports instead of the example's fixed 1080 and 9180.
      const args = [...line.split(/\s+/), '-P127.0.0.1:0/auto', 'ADMIN=127.0.0.1:0'];
      const p = spawn('/usr/bin/setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', ...args], {
        cwd: workDir.replace('/var/lib/sockstap', state),
        // systemd's default PATH for services, with the temporary prefix in place of /usr.
        env: { PATH: `/usr/local/sbin:/usr/local/bin:${prefix}/bin:/usr/sbin:/usr/bin:/sbin:/bin`, NODE_ENV: 'production' },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      child.p = p;
      let out = '';
      p.stdout!.on('data', (d: Buffer) => (out += d.toString()));
      p.stderr!.on('data', (d: Buffer) => (out += d.toString()));
      const exited = new Promise<number | null>((r) => p.once('exit', (code) => r(code)));
      await new Promise<void>((resolve, reject) => {
        const check = (): void => {
          if (/sockstap: ready: /.test(out)) resolve();
          else if (p.exitCode !== null) reject(new Error(`ExecStart exited ${p.exitCode}: ${out}`));
        };
        p.stdout!.on('data', check);
        p.stderr!.on('data', check);
        p.once('exit', check);
      });
      assert.match(out, /ready: auto door on 127\.0\.0\.1:\d+; taps all; cache on/);
      assert.ok(existsSync(join(logs, 'access.log')), 'logs go to LOGDIR');
      p.kill('SIGTERM');
      assert.equal(await exited, 0, out);
      writeFileSync(join(dir, 'done'), '');
    } finally {
      if (child.p && child.p.exitCode === null) child.p.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  },
);
