/**
 * A real Debian redis-server for the fleet tests: started on a free loopback port in a temporary
 * directory (`--save ''`: no snapshots unless the test asks with SAVE), stopped by its PID.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, killChild, waitForPort } from './dante.js';

export function redisMissing(): string | null {
  return spawnSync('sh', ['-c', 'command -v redis-server'], { stdio: 'ignore' }).status === 0 ? null : 'redis-server is not installed (Debian package redis-server)';
}

export interface TestRedis {
  port: number;
  dir: string;
  url: string;
  /** Stop the server (SIGTERM to its PID, waits for the exit). */
  stop(): Promise<void>;
  /** Start it again on the same port and directory (loads dump.rdb if a SAVE wrote one). */
  start(): Promise<void>;
  cleanup(): Promise<void>;
}

export async function startRedis(): Promise<TestRedis> {
  const dir = mkdtempSync(join(tmpdir(), 'sockstap-redis-'));
  const port = await freePort();
  let child: ChildProcess | null = null;
  const r: TestRedis = {
    port,
    dir,
    url: `redis://127.0.0.1:${port}`,
    async start() {
      child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], { stdio: 'ignore' });
      await waitForPort(port, '127.0.0.1', 10_000, child);
    },
    async stop() {
      if (child) await killChild(child);
      child = null;
    },
    async cleanup() {
      await r.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  await r.start();
  return r;
}
