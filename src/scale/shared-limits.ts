/**
 * The state that MAXIMA, BANDWIDTH and QUOTA share beyond one process: one abstraction, three
 * backends. Every check stays synchronous (a connection is admitted or shaped without a round
 * trip); what other processes hold is a local view the backend keeps fresh:
 *
 *  - process (the default): nothing is shared, today's behaviour;
 *  - workers (WORKERS=N, scale/workers-limits.ts): the primary holds every worker's MAXIMA counts
 *    and the central token buckets; a worker reports its counts when they change, learns the
 *    others' and takes bucket tokens in chunks over cluster IPC. QUOTA usage is the usage database
 *    the workers share already (STATEDIR/usage.sqlite, committed every 250 ms);
 *  - redis (REDIS=, scale/redis-limits.ts): every node's MAXIMA counts are a lease in Redis that
 *    expires when the node stops renewing it, buckets are a Lua script, quota usage is INCRBY'd
 *    there every 250 ms. While Redis is unreachable a node serves with its last known view.
 *
 * A count check that races another process's (two connections of one user in the same IPC
 * round trip / sync interval on two workers or nodes) may let one connection past the limit;
 * the next ones see it.
 */
import type { Registry } from 'prom-client';
import { TokenBucket } from '../net/throttle.js';
import type { QuotaDelta, TrafficDelta } from '../policy/usage.js';

/** What the quota service commits into and reads back (policy/usage.ts UsageStore is one). */
export interface UsageBackend {
  commit(quota: readonly QuotaDelta[], traffic: readonly TrafficDelta[]): void;
  quotaUsed(scope: string, since: number): { up: number; down: number };
  /** Called with a function to run when fleet totals changed (the quota service refreshes). */
  onUpdate?(refresh: () => void): void;
}

/** Asks the owner of a central bucket for `bytes`; resolves with the ms to wait before using them. */
export type TokenSource = (id: string, rate: number, burst: number, bytes: number) => Promise<number>;

export interface SharedLimits {
  readonly kind: 'process' | 'workers' | 'redis';
  /** MAXIMA: connections that other processes or nodes hold on a counter (last known). */
  elsewhere(key: string): number;
  /** MAXIMA: this process now holds `n` connections on the counter `key`. */
  held(key: string, n: number): void;
  /** BANDWIDTH: a bucket all processes share (null: an ordinary bucket of this process). */
  bucket(id: string, rate: number): TokenBucket | null;
  /** QUOTA: what the quota service commits into, around this process's usage database. */
  usage(local: UsageBackend | null): UsageBackend | null;
  /** How often the quota service should commit (ms). */
  readonly commitMs: number;
  /**
   * Ready to answer (the first sync with Redis), or given up waiting after `timeoutMs`;
   * `prefetch` runs first (it names the quota scopes to read).
   */
  ready(timeoutMs: number, prefetch?: () => unknown): Promise<void>;
  /** Add this backend's figures to /metrics. */
  registerMetrics(registry: Registry): void;
  close(): Promise<void>;
}

/** The default: this process alone. */
export const PROCESS_LIMITS: SharedLimits = {
  kind: 'process',
  elsewhere: () => 0,
  held: () => {},
  bucket: () => null,
  usage: (local) => local,
  commitMs: 1000,
  ready: async () => {},
  registerMetrics: () => {},
  close: async () => {},
};

/** Chunk of tokens a process asks for at once: 50 ms of the rate, 16 KiB to 256 KiB. */
export function chunkOf(rate: number): number {
  return Math.min(256 * 1024, Math.max(16 * 1024, Math.floor(rate / 20)));
}

/**
 * A bucket whose tokens come from a central one (the primary's or Redis's) in chunks. Like the
 * local bucket it is taken after the fact: a read that leaves it in debt asks the centre for the
 * debt plus a chunk, and the taker waits what the centre says (its debt at the fleet's rate).
 * When the centre cannot answer, `fallback` (a local bucket at the rate divided by the processes
 * last seen) shapes instead, so the limit still roughly holds.
 */
export class SharedBucket extends TokenBucket {
  private avail = 0;
  private readyAt = 0;
  private asking = false;
  private failedAt = -Infinity;
  private readonly chunk: number;

  constructor(
    private readonly id: string,
    rate: number,
    private readonly source: TokenSource,
    private readonly fallback: () => TokenBucket,
  ) {
    super(rate);
    this.chunk = chunkOf(rate);
  }

  override take(bytes: number, now: number = performance.now()): number {
    // Centre unreachable lately: shape locally, try the centre again after a second.
    if (now - this.failedAt < 1000) return this.fallback().take(bytes, now);
    this.avail -= bytes;
    if (this.avail < 0 && !this.asking) this.ask();
    if (now < this.readyAt) return Math.ceil(this.readyAt - now);
    if (this.avail < 0) return Math.max(2, Math.ceil((-this.avail * 1000) / this.rate));
    return 0;
  }

  override wait(now: number = performance.now()): number {
    return this.take(0, now);
  }

  private ask(): void {
    const want = -this.avail + this.chunk;
    this.asking = true;
    this.source(this.id, this.rate, this.burst, want).then(
      (waitMs) => {
        this.asking = false;
        this.avail += want;
        this.readyAt = performance.now() + waitMs;
        if (this.avail < 0) this.ask();
      },
      () => {
        this.asking = false;
        this.failedAt = performance.now();
        // What was taken is forgiven: the fallback shapes from here.
        this.avail = 0;
      },
    );
  }
}
