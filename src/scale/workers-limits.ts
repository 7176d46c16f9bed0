/**
 * WORKERS=N: MAXIMA counts and BANDWIDTH buckets across the workers, kept by the primary and
 * asked over cluster IPC (messages `{ sockstap: 'limits', ... }`).
 *
 *  - A worker reports a counter's new value when it changes (`held`, coalesced per turn of the
 *    event loop); the primary keeps every worker's counts and sends each worker what the others
 *    hold (`others`). A worker that exits loses its counts in the primary, and the others hear so.
 *  - A shared bucket takes its tokens from the primary's bucket of the same id in chunks
 *    (`take` → `took` with the wait), so a user's rate is the user's on every worker.
 *  - QUOTA usage: the usage database (STATEDIR/usage.sqlite) is already one for every worker; the
 *    quota service commits there every 250 ms, and reads the other workers' usage back.
 */
import cluster, { type Worker } from 'node:cluster';
import { TokenBucket } from '../net/throttle.js';
import { SharedBucket, type SharedLimits, type UsageBackend } from './shared-limits.js';

type ToPrimary =
  | { sockstap: 'limits'; op: 'held'; counts: Record<string, number> }
  | { sockstap: 'limits'; op: 'take'; seq: number; id: string; rate: number; burst: number; bytes: number };
type ToWorker =
  | { sockstap: 'limits'; op: 'others'; counts: Record<string, number>; workers: number }
  | { sockstap: 'limits'; op: 'took'; seq: number; wait: number };

/** How long a worker waits for the primary's tokens before shaping on its own. */
const TAKE_TIMEOUT_MS = 2000;

/** The worker's side. */
export class WorkerLimits implements SharedLimits {
  readonly kind = 'workers' as const;
  readonly commitMs = 250;
  private readonly others = new Map<string, number>();
  private pending: Record<string, number> | null = null;
  private seq = 0;
  private readonly waiting = new Map<number, { resolve: (wait: number) => void; timer: NodeJS.Timeout }>();
  private workers = 1;
  private readonly onMessage = (m: unknown): void => this.message(m as ToWorker);

  constructor() {
    process.on('message', this.onMessage);
  }

  elsewhere(key: string): number {
    return this.others.get(key) ?? 0;
  }

  held(key: string, n: number): void {
    if (!this.pending) {
      this.pending = {};
      setImmediate(() => {
        const counts = this.pending!;
        this.pending = null;
        send({ sockstap: 'limits', op: 'held', counts });
      });
    }
    this.pending[key] = n;
  }

  bucket(id: string, rate: number): TokenBucket {
    let local: TokenBucket | null = null;
    return new SharedBucket(id, rate, (bid, r, burst, bytes) => this.take(bid, r, burst, bytes), () => {
      const share = Math.max(1, Math.floor(rate / this.workers));
      if (local?.rate !== share) local = new TokenBucket(share);
      return local;
    });
  }

  usage(local: UsageBackend | null): UsageBackend | null {
    return local;
  }

  async ready(): Promise<void> {}

  registerMetrics(): void {}

  async close(): Promise<void> {
    process.off('message', this.onMessage);
    for (const w of this.waiting.values()) clearTimeout(w.timer);
    this.waiting.clear();
  }

  private take(id: string, rate: number, burst: number, bytes: number): Promise<number> {
    return new Promise((resolve, reject) => {
      const seq = ++this.seq;
      const timer = setTimeout(() => {
        this.waiting.delete(seq);
        reject(new Error('the primary did not answer'));
      }, TAKE_TIMEOUT_MS);
      timer.unref();
      this.waiting.set(seq, { resolve, timer });
      if (!send({ sockstap: 'limits', op: 'take', seq, id, rate, burst, bytes })) {
        clearTimeout(timer);
        this.waiting.delete(seq);
        reject(new Error('no channel to the primary'));
      }
    });
  }

  private message(m: ToWorker): void {
    if (m?.sockstap !== 'limits') return;
    if (m.op === 'others') {
      this.workers = Math.max(1, m.workers);
      for (const [k, n] of Object.entries(m.counts)) {
        if (n > 0) this.others.set(k, n);
        else this.others.delete(k);
      }
    } else if (m.op === 'took') {
      const w = this.waiting.get(m.seq);
      if (!w) return;
      this.waiting.delete(m.seq);
      clearTimeout(w.timer);
      w.resolve(m.wait);
    }
  }
}

function send(m: ToPrimary): boolean {
  if (!process.send || !process.connected) return false;
  try {
    process.send(m);
    return true;
  } catch {
    return false;
  }
}

/** The primary's side: every worker's counts and the central buckets. */
class PrimaryLimits {
  private readonly counts = new Map<Worker, Map<string, number>>();
  private readonly buckets = new Map<string, TokenBucket>();

  attach(worker: Worker): void {
    this.counts.set(worker, new Map());
    worker.on('message', (m: ToPrimary) => {
      if (m?.sockstap !== 'limits') return;
      if (m.op === 'held') this.held(worker, m.counts);
      else if (m.op === 'take') this.take(worker, m);
    });
    worker.on('exit', () => {
      const mine = this.counts.get(worker);
      this.counts.delete(worker);
      // Its connections are gone: the others hear the counters it held.
      this.broadcast(mine ? [...mine.keys()] : []);
    });
    // A new worker hears every count; the others hear how many workers there are now.
    worker.on('online', () => {
      this.broadcast(this.allKeys(), worker);
      this.broadcast([], undefined, worker);
    });
  }

  private held(worker: Worker, counts: Record<string, number>): void {
    const mine = this.counts.get(worker);
    if (!mine) return;
    for (const [k, n] of Object.entries(counts)) {
      if (n > 0) mine.set(k, n);
      else mine.delete(k);
    }
    this.broadcast(Object.keys(counts), undefined, worker);
  }

  private take(worker: Worker, m: Extract<ToPrimary, { op: 'take' }>): void {
    let b = this.buckets.get(m.id);
    if (!b || b.rate !== m.rate) {
      b = new TokenBucket(m.rate, m.burst);
      this.buckets.set(m.id, b);
    }
    const reply: ToWorker = { sockstap: 'limits', op: 'took', seq: m.seq, wait: b.take(m.bytes) };
    if (worker.isConnected()) worker.send(reply);
  }

  /** Tell each worker (or `only`) what the other workers hold on `keys`. */
  private broadcast(keys: readonly string[], only?: Worker, except?: Worker): void {
    for (const w of only ? [only] : this.counts.keys()) {
      if (w === except || !w.isConnected()) continue;
      const counts: Record<string, number> = {};
      for (const k of keys) {
        let n = 0;
        for (const [other, held] of this.counts) if (other !== w) n += held.get(k) ?? 0;
        counts[k] = n;
      }
      w.send({ sockstap: 'limits', op: 'others', counts, workers: this.counts.size } satisfies ToWorker);
    }
  }

  private allKeys(): string[] {
    const keys = new Set<string>();
    for (const held of this.counts.values()) for (const k of held.keys()) keys.add(k);
    return [...keys];
  }
}

let primary: PrimaryLimits | null = null;

/** The primary hooks each forked worker here (cluster.ts fork()). */
export function attachLimitsPrimary(worker: Worker): void {
  if (!cluster.isPrimary) return;
  (primary ??= new PrimaryLimits()).attach(worker);
}
