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
 * local bucket it is taken after the fact. The centre answers each ask with when its tokens may
 * be spent (its debt at the fleet's rate); this bucket asks ahead, while it still holds less than
 * a chunk, so a round trip to the centre rarely stalls a reader, and a taker in debt waits until
 * the tokens that cover it are due. When the centre cannot answer, `fallback` (a local bucket at
 * the rate divided by the processes last seen) shapes instead, so the limit still roughly holds.
 */
export class SharedBucket extends TokenBucket {
  /** Tokens due and not yet taken (negative: debt). */
  private due = 0;
  /** Granted tokens that may be spent from `at` on, in that order. */
  private readonly future: { at: number; n: number }[] = [];
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
    while (this.future.length > 0 && this.future[0]!.at <= now) this.due += this.future.shift()!.n;
    this.due -= bytes;
    let ahead = this.due;
    for (const f of this.future) ahead += f.n;
    if (ahead < this.chunk && !this.asking) this.ask(2 * this.chunk - ahead);
    if (this.due >= 0) return 0;
    let need = -this.due;
    for (const f of this.future) {
      need -= f.n;
      if (need <= 0) return Math.max(1, Math.ceil(f.at - now));
    }
    return Math.max(2, Math.ceil((need * 1000) / this.rate));
  }

  override wait(now: number = performance.now()): number {
    return this.take(0, now);
  }

  private ask(want: number): void {
    this.asking = true;
    this.source(this.id, this.rate, this.burst, want).then(
      (waitMs) => {
        this.asking = false;
        const at = performance.now() + waitMs;
        let i = this.future.length;
        while (i > 0 && this.future[i - 1]!.at > at) i--;
        this.future.splice(i, 0, { at, n: want });
        // Readers in debt meanwhile may need more.
        this.take(0);
      },
      () => {
        this.asking = false;
        this.failedAt = performance.now();
        // What was granted or owed is forgotten: the fallback shapes from here.
        this.due = 0;
        this.future.length = 0;
      },
    );
  }
}
