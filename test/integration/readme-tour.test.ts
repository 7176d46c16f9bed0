/**
 * The README's quick tour, as written: its lines are read from README.md (never copied here) and
 * run against `sockstap demo` and `npm start` (package.json's start script, from the sources).
 * Only the fixed ports are swapped for the free ones the test's servers got. A line that breaks
 * (a command that fails, a page that is not the demo's, a log file missing) fails the test.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CLI = join(ROOT, 'src/cli.ts');
const TSX = join(ROOT, 'node_modules/tsx/dist/esm/index.mjs');
const NODE = `${process.execPath} --import file://${TSX} ${CLI}`;

/** The ```sh blocks of one README section. */
function shBlocks(readme: string, heading: string): string[][] {
  const start = readme.indexOf(`\n## ${heading}\n`);
  assert.ok(start >= 0, `README has no "## ${heading}" section`);
  const end = readme.indexOf('\n## ', start + 1);
  const section = readme.slice(start, end < 0 ? undefined : end);
  const blocks: string[][] = [];
  for (const m of section.matchAll(/```sh\n([\s\S]*?)```/g)) {
    blocks.push(
      m[1]!
        .split('\n')
        .map((l) => l.replace(/\s+#\s.*$/, '').trim())
        .filter((l) => l !== '' && !l.startsWith('#')),
    );
  }
  return blocks;
}

/** `npx sockstap` and `npm start --` as they run here: package.json's start, from the sources. */
function translate(line: string): string {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: { start: string } };
  const start = pkg.scripts.start.replace(/^node dist\/cli\.js/, NODE);
  return line.replace(/^npm start(?: --)?/, start).replace(/^npx sockstap\b/, NODE);
}

interface Proc {
  child: ChildProcess;
  out: () => string;
  err: () => string;
  waitFor(re: RegExp, ms?: number): Promise<RegExpMatchArray>;
  exited: Promise<number | null>;
}

function run(line: string, cwd: string): Proc {
  const child = spawn('sh', ['-c', `exec ${line}`], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  return {
    child,
    out: () => out,
    err: () => err,
    exited,
    waitFor: (re, ms = 30_000) =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`timed out waiting for ${re} from ${line}\nstdout: ${out}\nstderr: ${err}`)), ms);
        const check = (): void => {
          const m = (out + err).match(re);
          if (m) {
            clearTimeout(timer);
            resolve(m);
          } else if (child.exitCode !== null) {
            clearTimeout(timer);
            reject(new Error(`${line} exited ${child.exitCode} before ${re}\nstdout: ${out}\nstderr: ${err}`));
          }
        };
        child.stdout!.on('data', check);
        child.stderr!.on('data', check);
        child.once('exit', check);
        check();
      }),
  };
}

const curlAvailable = spawnSync('sh', ['-c', 'command -v curl'], { stdio: 'ignore' }).status === 0;

test('the README tour runs as written against sockstap demo and npm start', { skip: !curlAvailable && 'curl is not installed' }, async () => {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  // The first two command lines stay as they are: tools read them.
  const intro = readme.slice(0, readme.indexOf('\n## '));
  const first = [...intro.matchAll(/```sh\n([\s\S]*?)```/g)][0]![1]!.split('\n').map((l) => l.replace(/\s+#\s.*$/, '').trim());
  assert.deepEqual(first.slice(0, 2), ['npm ci && npm start', 'npm test']);

  const [servers, clients, commands] = shBlocks(readme, 'A quick tour');
  assert.ok(servers && clients && commands, 'the tour has three sh blocks: servers, clients, command lines');
  const demoLine = servers.find((l) => /^npx sockstap demo\b/.test(l));
  const startLine = servers.find((l) => /^npm start\b/.test(l));
  assert.ok(demoLine && startLine, `the first block starts the demo and the proxy: ${servers.join(' | ')}`);

  const dir = mkdtempSync(join(tmpdir(), 'sockstap-tour-'));
  symlinkSync(join(ROOT, 'contrib'), join(dir, 'contrib'));
  const procs: Proc[] = [];
  try {
    // Free ports instead of the fixed ones; everything else as written.
    const demo = run(`${translate(demoLine)} HTTP=0 FTP=0 BANNER=0`, dir);
    procs.push(demo);
    const d = await demo.waitFor(/example\.test:(\d+)\/ on .*ftp\.example\.test:(\d+)\/pub\/ .*mail\.example\.test:(\d+) on/);
    const [httpPort, ftpPort, smtpPort] = [d[1]!, d[2]!, d[3]!];
    // The demo says which HOSTS= to give; the README gives the same.
    const hosts = /npm start -- '([^']+)'/.exec(demo.out())?.[1];
    assert.ok(hosts && startLine.includes(hosts), `README's start line ${startLine} gives the demo's ${hosts}`);

    const proxy = run(`${translate(startLine)} -P127.0.0.1:0/auto ADMIN=127.0.0.1:0`, dir);
    procs.push(proxy);
    const ready = await proxy.waitFor(/sockstap: ready: auto door on 127\.0\.0\.1:(\d+); taps all; cache on [^;]*; admin http:\/\/127\.0\.0\.1:(\d+)\/; state \.\/var, logs \.\/var\/log/);
    const proxyPort = ready[1]!;
    const sub = (line: string): string =>
      line
        .replaceAll('127.0.0.1:1080', `127.0.0.1:${proxyPort}`)
        .replaceAll(':8000', `:${httpPort}`)
        .replaceAll(':2121', `:${ftpPort}`)
        .replaceAll(':2525', `:${smtpPort}`);

    for (const line of clients) {
      if (line.startsWith('tail -f')) {
        // Runs until interrupted: every file it follows must already exist and print its header.
        const files = line.split(/\s+/).slice(2);
        const tail = run(sub(line), dir);
        procs.push(tail);
        for (const f of files) await tail.waitFor(new RegExp(`==> ${f.replace(/[.]/g, '\\.')} <==`));
        tail.child.kill('SIGTERM');
        await tail.exited;
        assert.equal(tail.err(), '', `${line}: ${tail.err()}`);
        continue;
      }
      const p = run(sub(translate(line)), dir);
      const code = await p.exited;
      assert.equal(code, 0, `${line} exited ${code}: ${p.err()}`);
      if (line.startsWith('curl')) assert.match(p.out(), /sockstap demo|Index of ftp:\/\//, `${line} did not get the demo's answer: ${p.out().slice(0, 300)}`);
    }
    // What the tour promises: the second fetch of a cacheable page is a hit.
    const access = readFileSync(join(dir, 'var/log/access.log'), 'utf8');
    assert.match(access, /TCP_(MEM_)?HIT\/200 \d+ GET http:\/\/example\.test:\d+\//, access);
    assert.match(access, /GET ftp:\/\/ftp\.example\.test:\d+\/pub\//, access);

    // The command lines: the ones that would start a proxy are checked (`sockstap check`).
    for (const line of commands) {
      assert.match(line, /^npx sockstap\b/, line);
      const args = line.replace(/^npx sockstap\s*/, '');
      const checked = /^(--help|report|check)\b/.test(args) ? line : `npx sockstap check ${args}`;
      const p = run(translate(checked), dir);
      const code = await p.exited;
      assert.equal(code, 0, `${checked} exited ${code}: ${p.err()}`);
      if (checked !== line) assert.match(p.out(), /configuration OK/);
    }
  } finally {
    for (const p of procs) if (p.child.exitCode === null) p.child.kill('SIGTERM');
    await Promise.all(procs.map((p) => p.exited));
    rmSync(dir, { recursive: true, force: true });
  }
});
