/**
 * A real HAProxy (Debian's) in `mode tcp` for the PROXY protocol tests: a config in a temp dir,
 * frontends on free loopback ports, its log (`option tcplog`) on stdout, started in the foreground
 * (`-db`) and stopped by PID.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, killChild, waitForPort } from './dante.js';

export interface HaproxyFrontend {
  /** `bind` options, e.g. `accept-proxy`. */
  bind?: string;
  /** The backend server `HOST:PORT` and its options, e.g. `127.0.0.1:1080 send-proxy-v2 source 127.0.0.2`. */
  server: string;
}

export interface Haproxy {
  /** The frontends' ports, in the order given. */
  ports: number[];
  /** What HAProxy wrote (its tcplog lines among them). */
  output(): string;
  stop(): Promise<void>;
}

export function haproxyMissing(): string | null {
  return spawnSync('sh', ['-c', 'command -v haproxy']).status === 0 ? null : 'haproxy is not installed (apt-get install haproxy)';
}

/**
 * Start it; a port picked free but taken before HAProxy binds it (tests of other files bind port 0
 * meanwhile) is picked again, up to five times.
 */
export async function startHaproxy(frontends: HaproxyFrontend[]): Promise<Haproxy> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnce(frontends);
    } catch (err) {
      if (attempt >= 5 || !/Address already in use/.test((err as Error).message)) throw err;
    }
  }
}

async function startOnce(frontends: HaproxyFrontend[]): Promise<Haproxy> {
  const dir = mkdtempSync(join(tmpdir(), 'sockstap-haproxy-'));
  const ports: number[] = [];
  for (let i = 0; i < frontends.length; i++) ports.push(await freePort());
  const lines = [
    'global',
    '  log stdout format raw local0 info',
    '  maxconn 256',
    'defaults',
    '  mode tcp',
    '  log global',
    '  option tcplog',
    '  timeout connect 5s',
    '  timeout client 30s',
    '  timeout server 30s',
  ];
  frontends.forEach((f, i) => {
    lines.push(`frontend f${i}`, `  bind 127.0.0.1:${ports[i]}${f.bind ? ' ' + f.bind : ''}`, `  default_backend b${i}`);
    lines.push(`backend b${i}`, `  server s${i} ${f.server}`);
  });
  const conf = join(dir, 'haproxy.cfg');
  writeFileSync(conf, lines.join('\n') + '\n');
  const check = spawnSync('haproxy', ['-c', '-f', conf]);
  if (check.status !== 0) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`haproxy -c refused the config:\n${check.stdout}${check.stderr}\n${lines.join('\n')}`);
  }
  const child = spawn('haproxy', ['-db', '-f', conf], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  try {
    for (const p of ports) await waitForPort(p, '127.0.0.1', 10_000, child);
  } catch (err) {
    await killChild(child);
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`haproxy did not start: ${(err as Error).message}\n${out}`);
  }
  return {
    ports,
    output: () => out,
    async stop() {
      await killChild(child);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
