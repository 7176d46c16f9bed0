/**
 * Run the sockstap command line as a child process (from the TypeScript sources through tsx),
 * read what it prints, wait for a line, send signals.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const CLI = fileURLToPath(new URL('../../src/cli.ts', import.meta.url));
const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/**
 * Why user `uid` (default 65534, nobody) cannot run the command line from this checkout, or false
 * when it can. Tests that run sockstap as an unprivileged user (root ignores file modes) need the
 * sources and node_modules readable by that user; a checkout below a directory closed to others
 * (root's home, a `mktemp -d` folder, both mode 0700) is not, and those tests skip with this
 * reason instead of failing on "Cannot find package 'tsx'". Only meaningful when running as root.
 */
export function unreadableCheckout(uid = 65534): string | false {
  const wanted = [CLI, join(ROOT, 'node_modules/tsx/package.json')];
  const dirs: string[] = [];
  for (let d = dirname(CLI); ; d = dirname(d)) {
    dirs.unshift(d);
    if (dirname(d) === d) break;
  }
  // As that user: the first directory on the way it cannot enter, else the first file it cannot read.
  const script = 'n=$1; shift; i=0; for p; do i=$((i+1)); if [ $i -le $n ]; then [ -x "$p" ] || { echo "$p"; exit 1; }; else [ -r "$p" ] || { echo "$p"; exit 1; }; fi; done';
  const r = spawnSync('/bin/sh', ['-c', script, 'sh', String(dirs.length), ...dirs, ...wanted], { uid, gid: uid, encoding: 'utf8', timeout: 10_000 });
  if (r.status === 0) return false;
  const blocked = r.stdout.trim() || (r.error?.message ?? `status ${r.status}`);
  return `uid ${uid} cannot read this checkout (${blocked} is closed to it): run the tests from a checkout other users can read`;
}

export interface CliProcess {
  child: ChildProcess;
  output(): string;
  /** Resolve with the first match of `re` in stdout+stderr; reject after timeoutMs. */
  waitFor(re: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
  /** Resolve with the exit status (signal exits map to 128+n). */
  exited: Promise<number>;
  kill(signal?: NodeJS.Signals): void;
}

export function runCli(args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv; uid?: number; gid?: number } = {}): CliProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', CLI, ...args], {
    cwd: options.cwd ?? ROOT,
    env: { ...process.env, ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
    ...(options.uid !== undefined ? { uid: options.uid, gid: options.gid ?? options.uid } : {}),
  });
  let out = '';
  const waiters = new Set<() => void>();
  const onData = (d: Buffer): void => {
    out += d.toString();
    for (const w of waiters) w();
  };
  child.stdout!.on('data', onData);
  child.stderr!.on('data', onData);
  const exited = new Promise<number>((resolve) => {
    child.once('exit', (code, signal) => {
      for (const w of waiters) w();
      resolve(code ?? (signal ? 128 + (signal === 'SIGKILL' ? 9 : 15) : 1));
    });
  });
  return {
    child,
    output: () => out,
    exited,
    kill: (signal = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    },
    waitFor(re, timeoutMs = 20_000) {
      return new Promise((resolve, reject) => {
        const check = (): void => {
          const m = out.match(re);
          if (m) {
            cleanup();
            resolve(m);
          } else if (child.exitCode !== null) {
            cleanup();
            reject(new Error(`process exited (${child.exitCode}) before ${re}; output:\n${out}`));
          }
        };
        const timer = setTimeout(() => {
          cleanup();
          reject(new Error(`timed out waiting for ${re}; output:\n${out}`));
        }, timeoutMs);
        const cleanup = (): void => {
          clearTimeout(timer);
          waiters.delete(check);
        };
        waiters.add(check);
        check();
      });
    },
  };
}

/** A free fixed port below the ephemeral range (WORKERS share a fixed port; port 0 cannot be shared). */
export async function freeFixedPort(): Promise<number> {
  for (let i = 0; i < 50; i++) {
    const port = 20000 + Math.floor(Math.random() * 10000);
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.createServer();
      s.once('error', () => resolve(false));
      s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
    });
    if (ok) return port;
  }
  throw new Error('no free port found');
}
