/**
 * An administrator's first hour (issue 18): what is in force is said, mistakes are answered with
 * a way out, unusable directories are refused before anything listens. The real command line, as
 * a child process.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { spawn } from 'node:child_process';
import { CLI, unreadableCheckout } from '../helpers/process.js';
import { withDefaultJob, DEFAULT_JOB } from '../../src/config/load.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
/** tsx by its path, so the command line runs from any working directory. */
const TSX = `file://${join(ROOT, 'node_modules/tsx/dist/esm/index.mjs')}`;

interface Child {
  exited: Promise<number>;
  output(): string;
  waitFor(re: RegExp): Promise<RegExpMatchArray>;
  kill(): void;
}

function runCli(args: string[], options: { cwd: string }): Child {
  const child = spawn(process.execPath, ['--import', TSX, CLI, ...args], { cwd: options.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const waiters = new Set<() => void>();
  const onData = (d: Buffer): void => {
    out += d.toString();
    for (const w of waiters) w();
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  const exited = new Promise<number>((r) => child.once('exit', (code) => r(code ?? 128)));
  return {
    exited,
    output: () => out,
    kill: () => void (child.exitCode === null && child.kill('SIGTERM')),
    waitFor: (re) =>
      new Promise((resolve, reject) => {
        const check = (): void => {
          const m = out.match(re);
          if (m) resolve(m);
          else if (child.exitCode !== null) reject(new Error(`exited before ${re}: ${out}`));
        };
        waiters.add(check);
        child.once('exit', check);
        check();
      }),
  };
}
const dir = mkdtempSync(join(tmpdir(), 'sockstap-firsthour-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** Run the command line to its end: status and everything it printed. */
async function cli(args: string[], cwd = dir): Promise<{ code: number; out: string }> {
  const p = runCli(args, { cwd });
  const code = await p.exited;
  return { code, out: p.output() };
}

/** A free port, closed again: what the proxy would have listened on. */
async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

test('a misspelt parameter name gets "did you mean"', async () => {
  const r = await cli(['check', 'CAHCE=do']);
  assert.equal(r.code, 2);
  assert.match(r.out, /CAHCE: unknown parameter; did you mean CACHE\?/);
});

test('a misspelt keyword gets "did you mean"; CACHE=yes is refused with the accepted words', async () => {
  const yes = await cli(['check', 'CACHE=yes']);
  assert.equal(yes.code, 2);
  assert.match(yes.out, /CACHE: expected do or no, got "yes" \(write do\)/);
  const door = await cli(['check', '-P1080/sokcs']);
  assert.equal(door.code, 2);
  assert.match(door.out, /unknown door "sokcs"; did you mean socks\?/);
  const fmt = await cli(['check', 'LOGFORMAT=comon']);
  assert.match(fmt.out, /did you mean common\?/);
});

test('an unquoted AUTHORIZER=-list{a:b,c:d} split by the shell gets the quoting hint, no password shown', async () => {
  // What bash hands over for the unquoted argument.
  const split = spawnSync('bash', ['-c', 'printf "%s\\n" AUTHORIZER=-list{alice:pw1,bob:pw2}'], { encoding: 'utf8' }).stdout.trim().split('\n');
  assert.deepEqual(split, ['AUTHORIZER=-listalice:pw1', 'AUTHORIZER=-listbob:pw2']);
  const r = await cli(['check', ...split]);
  assert.equal(r.code, 2);
  assert.match(r.out, /brace expansion/);
  assert.match(r.out, /quote the whole argument: 'AUTHORIZER=-list\{alice:\*\*\*,bob:\*\*\*\}'/);
  assert.doesNotMatch(r.out, /pw1|pw2/);
});

test('a YAML file with several errors reports every one, each with its path', async () => {
  const file = join(dir, 'bad.yaml');
  writeFileSync(file, 'listen:\n  - 127.0.0.1:1080/autoo\ncahce: do\ntimeouts:\n  conect: 2m\nsockstap:\n  - htp\n');
  const r = await cli(['check', '-f', file]);
  assert.equal(r.code, 2);
  assert.match(r.out, /problems:/);
  assert.match(r.out, /cahce: unknown key "cahce"/);
  assert.match(r.out, /timeouts\.conect: unknown key "conect"/);
  const values = join(dir, 'bad-values.yaml');
  writeFileSync(values, 'listen:\n  - 127.0.0.1:1080/autoo\nserver: sock\nsockstap:\n  - htp\n');
  const v = await cli(['check', '-f', values]);
  assert.equal(v.code, 2);
  assert.match(v.out, /3 problems/);
  assert.match(v.out, /listen\[0\]: unknown door "autoo"; did you mean auto\?/);
  assert.match(v.out, /server: did you mean socks\?/);
  assert.match(v.out, /sockstap\[0\]: unknown protocol "htp"; did you mean http\?/);
});

test('an unusable LOGDIR is refused at start, exit 1, naming the directory and the user, before anything listens', async () => {
  const port = await freePort();
  const r = await cli([`-P127.0.0.1:${port}`, 'LOGDIR=/etc/hostname/log', `STATEDIR=${join(dir, 'state-a')}`]);
  assert.equal(r.code, 1, r.out);
  assert.match(r.out, /LOGDIR \/etc\/hostname\/log cannot be used: \/etc\/hostname is not a directory; sockstap runs as user \S+ \(uid \d+\)/);
  assert.doesNotMatch(r.out, /listening|ready|\n\s+at /);
});

test('a root-owned STATEDIR is refused for an unprivileged user', { skip: ((process.getuid?.() !== 0 || !existsSync('/usr/bin/setpriv')) && 'needs root and setpriv') || unreadableCheckout() }, async () => {
  const owned = join(dir, 'root-owned');
  mkdirSync(owned);
  chmodSync(owned, 0o755);
  chmodSync(dir, 0o755);
  const p = spawnSync('/usr/bin/setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '--import', 'tsx', CLI, '-P127.0.0.1:0', `STATEDIR=${owned}`], {
    cwd: ROOT,
    encoding: 'utf8',
  });
  assert.equal(p.status, 1, p.stderr);
  assert.match(p.stderr, new RegExp(`STATEDIR ${owned.replace(/[.]/g, '\\.')} cannot be used: permission denied; sockstap runs as user nobody \\(uid 65534\\)`));
});

test('sockstap check prints the effective settings without listening; the start line says what is in force', async () => {
  const port = await freePort();
  const c = await cli(['check', `-P127.0.0.1:${port}/socks`, 'SOCKSTAP=http,ftp', 'CACHE=do', 'ADMIN=127.0.0.1:9']);
  assert.equal(c.code, 0, c.out);
  assert.match(c.out, /configuration OK/);
  assert.match(c.out, new RegExp(`doors +socks door on 127\\.0\\.0\\.1:${port}`));
  assert.match(c.out, /taps +http,ftp/);
  assert.match(c.out, /cache +on \(\.\/var\/cache, max 1g\)/);
  assert.match(c.out, /admin +http:\/\/127\.0\.0\.1:9\//);
  assert.ok(!existsSync(join(dir, 'var')), 'check creates nothing');

  const state = join(dir, 'state-b');
  const p = runCli(['-P127.0.0.1:0/socks', 'SOCKSTAP=http', `STATEDIR=${state}`], { cwd: dir });
  try {
    const m = await p.waitFor(/sockstap: ready: (.*)\n/);
    assert.match(m[1]!, /^socks door on 127\.0\.0\.1:\d+; taps http; cache off; admin off; state .*state-b, logs .*state-b\/log$/);
    // The log files exist from the start: `tail -f` works before the first request.
    for (const f of ['access.log', 'sessions.jsonl', 'sockstap.log']) assert.ok(existsSync(join(state, 'log', f)), f);
  } finally {
    p.kill();
    await p.exited;
  }
});

test('npm start -- NAME=VALUE adds to the main job; a -P there replaces only the port', () => {
  assert.deepEqual(withDefaultJob([]), DEFAULT_JOB);
  const extra = withDefaultJob(['HOSTS=a.test/127.0.0.1']);
  assert.deepEqual(extra, [...DEFAULT_JOB, 'HOSTS=a.test/127.0.0.1']);
  const port = withDefaultJob(['-P127.0.0.1:1081']);
  assert.ok(port.includes('-P127.0.0.1:1081') && !port.includes('-P127.0.0.1:1080/auto'));
  assert.ok(port.includes('SOCKSTAP=all') && port.includes('CACHE=do') && port.includes('ADMIN=127.0.0.1:9180'));
});
