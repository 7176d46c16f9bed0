/**
 * WORKERS=N: several processes behind the same listeners (Node cluster), so handshakes run on
 * every core. The primary only forks, forwards signals and keeps the count; each worker is an
 * ordinary sockstap process with the same command line. Workers accept from the shared sockets
 * themselves (SCHED_NONE): round-robin in the primary would make it the bottleneck.
 *
 * With ADMIN the admin endpoint runs here, in the primary, over what every worker reports
 * (cluster-admin.ts). A worker that dies is restarted and the primary says so in sockstap.log.
 * Other shared state registers its IPC handler with `onWorkerMessage` (one line each, below).
 */
import cluster, { type Worker } from 'node:cluster';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { startAdmin, type AdminServer } from './admin/server.js';
import { loadAdminToken } from './admin/token.js';
import { ClusterMirror } from './cluster-admin.js';
import { loadConfig } from './config/load.js';
import type { Config } from './config/types.js';
import { FileLogger, type Logger } from './observe/log.js';

/** A handler of worker messages in the primary: true when the message was its kind. */
export type WorkerMessageHandler = (worker: Worker, message: unknown, log: Logger) => boolean;
const workerMessageHandlers: WorkerMessageHandler[] = [];

/** Register a handler of worker messages in the primary (call before runPrimary). */
export function onWorkerMessage(handler: WorkerMessageHandler): void {
  workerMessageHandlers.push(handler);
}
import { attachLimitsPrimary } from './scale/workers-limits.js';

/** The index of this worker (1-based), or 0 outside a cluster. */
export function workerIndex(): number {
  return cluster.isWorker ? Number(process.env.SOCKSTAP_WORKER ?? '1') : 0;
}

/** A worker tells the primary it is listening. */
export function reportReady(): void {
  if (cluster.isWorker && process.send) process.send({ sockstap: 'ready' });
}

/** A worker that crashes after start is replaced, but not more often than this. */
const MAX_RESTARTS_PER_MINUTE = 5;

/**
 * Run as the primary: fork `count` workers on `args`, resolve with the exit status the process
 * should end with (0 after SIGTERM/SIGINT, or the status of a worker that could not start).
 */
export async function runPrimary(count: number, args: readonly string[], config?: Config): Promise<number> {
  cluster.schedulingPolicy = cluster.SCHED_NONE;
  cluster.setupPrimary({ args: [...args] });
  // The primary's own lines (workers that die, the admin) go to the same sockstap.log.
  const log = new FileLogger(config ? join(config.logDir, 'sockstap.log') : null, { echo: false, level: 'info' });
  const mirror = config?.admin ? new ClusterMirror() : null;
  let admin: AdminServer | null = null;
  if (config?.admin && mirror) {
    try {
      admin = await startPrimaryAdmin(config, args, mirror, () => signalWorkers('SIGHUP'));
    } catch (err) {
      process.stderr.write(`sockstap: ${err instanceof Error ? err.message : String(err)}\n`);
      await log.close();
      return 1;
    }
    log.info('admin', { url: admin.url, workers: count });
    process.stdout.write(`sockstap: admin on ${admin.url} for ${count} workers\n`);
    process.stdout.write(`sockstap: admin token in ${join(config.stateDir, 'admin.token')} (POST requests: Authorization: Bearer TOKEN)\n`);
  }
  const signalWorkers = (signal: NodeJS.Signals): void => {
    for (const w of Object.values(cluster.workers ?? {})) w?.process.kill(signal);
  };
  const status = await new Promise<number>((resolve) => {
    const workers = new Map<Worker, number>();
    let ready = 0;
    let stopping = false;
    /** What the primary exits with once every worker is gone. */
    let exitStatus = 0;
    const restarts: number[] = [];
    const finish = (): void => {
      if (workers.size === 0) resolve(exitStatus);
    };
    const stopAll = (status: number): void => {
      stopping = true;
      exitStatus = status;
      for (const other of workers.keys()) other.process.kill('SIGTERM');
      finish();
    };
    const fork = (index: number): void => {
      // The admin's address, for the first worker's ready line (the admin runs here).
      const w = cluster.fork({ SOCKSTAP_WORKER: String(index), ...(admin ? { SOCKSTAP_ADMIN_URL: admin.url } : {}) });
      workers.set(w, index);
      attachLimitsPrimary(w);
      let started = false;
      w.on('message', (m: unknown) => {
        if (mirror?.receive(w, m)) return;
        for (const h of workerMessageHandlers) if (h(w, m, log)) return;
        if ((m as { sockstap?: string } | null)?.sockstap !== 'ready' || started) return;
        started = true;
        if (++ready === count) process.stdout.write(`sockstap: ${count} workers ready (pids ${[...workers.keys()].map((x) => x.process.pid).join(', ')})\n`);
      });
      w.on('exit', (code, signal) => {
        workers.delete(w);
        mirror?.workerGone(w);
        if (stopping) return finish();
        // It could not start (a port in use, a bad file): the whole service cannot.
        if (!started) return stopAll(code && code > 0 ? code : 1);
        const now = Date.now();
        while (restarts.length > 0 && now - restarts[0]! > 60_000) restarts.shift();
        if (restarts.length >= MAX_RESTARTS_PER_MINUTE) {
          log.error('worker keeps dying; stopping', { worker: index, pid: w.process.pid ?? 0, exit: String(signal ?? code) });
          process.stderr.write(`sockstap: worker ${index} keeps dying (${signal ?? code}); stopping\n`);
          return stopAll(1);
        }
        restarts.push(now);
        // Its live sessions are lost; the listeners, the cache store and the other workers are not.
        log.warn('worker exited; starting another', { worker: index, pid: w.process.pid ?? 0, exit: String(signal ?? code) });
        process.stderr.write(`sockstap: worker ${index} exited (${signal ?? code}); starting another\n`);
        fork(index);
      });
    };
    for (let i = 1; i <= count; i++) fork(i);
    process.on('SIGHUP', () => {
      log.info('reload: signalling every worker', { workers: workers.size });
      for (const w of workers.keys()) w.process.kill('SIGHUP');
    });
    process.on('SIGUSR1', () => {
      log.reopen();
      for (const w of workers.keys()) w.process.kill('SIGUSR1');
    });
    const stop = (): void => {
      if (!stopping) stopAll(0);
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
  });
  await admin?.close();
  await log.close();
  return status;
}

/**
 * The admin endpoint in the primary, over the workers' reports. A reload (POST /api/reload) checks
 * the configuration here first, so a broken one is answered 400 as in one process, then signals
 * every worker.
 */
async function startPrimaryAdmin(config: Config, args: readonly string[], mirror: ClusterMirror, reloadWorkers: () => void): Promise<AdminServer> {
  const token = loadAdminToken(config.stateDir);
  const adminHost = config.admin!.host;
  return startAdmin(
    config.admin!,
    config.adminAuth,
    {
      sessions: mirror.sessions,
      totals: mirror.totals,
      startedAt: mirror.startedAt,
      events: mirror.events,
      cache: () => {
        const stats = mirror.cacheStats();
        return stats ? { stats: () => stats } : null;
      },
      native: () => mirror.nativeStats(),
      listeners: () => config.listen.map((l) => ({ door: l.door, host: l.host, port: l.port })),
      config: () => config,
      reload: async () => {
        loadConfig([...args], { cwd: process.cwd() });
        reloadWorkers();
      },
    },
    { token: token.value, names: adminHost && isIP(adminHost) === 0 ? [adminHost] : [] },
  );
}
