/**
 * Start sockstap in-process from a command line, with its state in a fresh temporary directory,
 * for integration tests. Listen on port 0 and ask `port()` for what was bound.
 */
import { mkdtempSync, readFileSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../../src/config/load.js';
import type { DoorKind } from '../../src/config/types.js';
import { startSockstap, type Sockstap } from '../../src/sockstap.js';

export interface TestProxy {
  proxy: Sockstap;
  stateDir: string;
  logDir: string;
  /** The port of the first listener (of that door, when given). */
  port(door?: DoorKind): number;
  /** Stop (drain 0 by default) and keep the state directory for reading logs. */
  stop(drainMs?: number): Promise<void>;
  /** Read a log file under LOGDIR ('' when missing). */
  readLog(name: 'access.log' | 'sessions.jsonl' | 'sockstap.log' | string): string;
  /** Parsed sessions.jsonl records. */
  sessions(): Array<Record<string, unknown>>;
  /** Remove the state directory. */
  cleanup(): void;
}

export async function startProxy(args: string[]): Promise<TestProxy> {
  const stateDir = mkdtempSync(join(tmpdir(), 'sockstap-test-'));
  const hasState = args.some((a) => /^STATEDIR=/i.test(a));
  const config = loadConfig(hasState ? args : [...args, `STATEDIR=${stateDir}`], { cwd: stateDir });
  const proxy = await startSockstap(config);
  let stopped = false;
  const t: TestProxy = {
    proxy,
    stateDir,
    logDir: config.logDir,
    port(door?: DoorKind): number {
      const l = proxy.addresses().find((a) => !door || a.door === door);
      if (!l) throw new Error(`no ${door ?? ''} listener`);
      return l.port;
    },
    async stop(drainMs = 0): Promise<void> {
      if (stopped) return;
      stopped = true;
      await proxy.stop(drainMs);
    },
    readLog(name: string): string {
      const p = join(config.logDir, name);
      return existsSync(p) ? readFileSync(p, 'utf8') : '';
    },
    sessions(): Array<Record<string, unknown>> {
      return t
        .readLog('sessions.jsonl')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, unknown>);
    },
    cleanup(): void {
      rmSync(stateDir, { recursive: true, force: true });
    },
  };
  return t;
}
