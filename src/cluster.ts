/**
 * WORKERS=N: several processes behind the same listeners (Node cluster), so handshakes run on
 * every core. The primary only forks, forwards signals and keeps the count; each worker is an
 * ordinary sockstap process with the same command line. Workers accept from the shared sockets
 * themselves (SCHED_NONE): round-robin in the primary would make it the bottleneck.
 */
import cluster, { type Worker } from 'node:cluster';
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
export function runPrimary(count: number, args: readonly string[]): Promise<number> {
  cluster.schedulingPolicy = cluster.SCHED_NONE;
  cluster.setupPrimary({ args: [...args] });
  return new Promise((resolve) => {
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
      const w = cluster.fork({ SOCKSTAP_WORKER: String(index) });
      workers.set(w, index);
      attachLimitsPrimary(w);
      let started = false;
      w.on('message', (m: unknown) => {
        if ((m as { sockstap?: string } | null)?.sockstap !== 'ready' || started) return;
        started = true;
        if (++ready === count) process.stdout.write(`sockstap: ${count} workers ready (pids ${[...workers.keys()].map((x) => x.process.pid).join(', ')})\n`);
      });
      w.on('exit', (code, signal) => {
        workers.delete(w);
        if (stopping) return finish();
        // It could not start (a port in use, a bad file): the whole service cannot.
        if (!started) return stopAll(code && code > 0 ? code : 1);
        const now = Date.now();
        while (restarts.length > 0 && now - restarts[0]! > 60_000) restarts.shift();
        if (restarts.length >= MAX_RESTARTS_PER_MINUTE) {
          process.stderr.write(`sockstap: worker ${index} keeps dying (${signal ?? code}); stopping\n`);
          return stopAll(1);
        }
        restarts.push(now);
        process.stderr.write(`sockstap: worker ${index} exited (${signal ?? code}); starting another\n`);
        fork(index);
      });
    };
    for (let i = 1; i <= count; i++) fork(i);
    process.on('SIGHUP', () => {
      for (const w of workers.keys()) w.process.kill('SIGHUP');
    });
    process.on('SIGUSR1', () => {
      for (const w of workers.keys()) w.process.kill('SIGUSR1');
    });
    const stop = (): void => {
      if (!stopping) stopAll(0);
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
  });
}
