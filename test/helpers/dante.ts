/**
 * A real Dante SOCKS server (Debian's dante-server) for upstream tests: a config in a temp dir,
 * loopback only, SOCKS5 with no auth or with a system user (Dante's `socksmethod: username`
 * checks system accounts, so the user is created with useradd, which needs root). Killed by PID.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface Dante {
  port: number;
  dir: string;
  log(): string;
  stop(): Promise<void>;
}

export function danteMissing(): string | null {
  const r = spawnSync('sh', ['-c', 'command -v danted']);
  return r.status === 0 ? null : 'danted is not installed (apt-get install dante-server)';
}

export function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

/** A port that was free a moment ago (the daemons need a number in their config). */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, host, () => {
      const a = s.address();
      const port = a && typeof a === 'object' ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

/** Resolve once something accepts on host:port, or reject after timeoutMs. */
export async function waitForPort(port: number, host = '127.0.0.1', timeoutMs = 10_000, child?: ChildProcess): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (child && child.exitCode !== null) throw new Error(`process exited with ${child.exitCode} before listening on ${port}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect({ host, port }, () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > until) throw new Error(`nothing listens on ${host}:${port} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export function killChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), 3_000);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

/** Create a system user with a password for Dante's username method (root only); returns a remover. */
export function createSystemUser(name: string, password: string): () => void {
  const add = spawnSync('useradd', ['--no-create-home', '--shell', '/usr/sbin/nologin', name]);
  if (add.status !== 0) throw new Error(`useradd ${name}: ${add.stderr.toString()}`);
  const pw = spawnSync('chpasswd', [], { input: `${name}:${password}\n` });
  if (pw.status !== 0) {
    spawnSync('userdel', [name]);
    throw new Error(`chpasswd: ${pw.stderr.toString()}`);
  }
  return () => {
    spawnSync('userdel', [name]);
  };
}

export async function startDante(options: { auth: 'none' | 'username'; udp?: boolean }): Promise<Dante> {
  const dir = mkdtempSync(join(tmpdir(), 'sockstap-dante-'));
  chmodSync(dir, 0o755);
  const port = await freePort();
  const logFile = join(dir, 'danted.log');
  const conf = join(dir, 'danted.conf');
  const root = isRoot();
  writeFileSync(
    conf,
    [
      `logoutput: ${logFile}`,
      `internal: 127.0.0.1 port = ${port}`,
      'external: 127.0.0.1',
      'clientmethod: none',
      `socksmethod: ${options.auth}`,
      ...(root ? ['user.privileged: root', 'user.unprivileged: nobody'] : []),
      'client pass { from: 127.0.0.0/8 to: 0.0.0.0/0 }',
      'socks pass {',
      '  from: 127.0.0.0/8 to: 127.0.0.0/8',
      `  command: connect${options.udp ? ' udpassociate udpreply' : ''}`,
      '  log: connect disconnect error',
      '}',
      // Everything else (another network) is refused with REP 2, which a test can check.
      'socks block {',
      '  from: 0.0.0.0/0 to: 0.0.0.0/0',
      '  log: connect error',
      '}',
      '',
    ].join('\n'),
  );
  const child = spawn('danted', ['-f', conf, '-p', join(dir, 'danted.pid'), '-N', '1'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  try {
    await waitForPort(port, '127.0.0.1', 10_000, child);
  } catch (err) {
    await killChild(child);
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`danted did not start: ${(err as Error).message}\n${out}`);
  }
  return {
    port,
    dir,
    log: () => (existsSync(logFile) ? readFileSync(logFile, 'utf8') : ''),
    async stop() {
      await killChild(child);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
