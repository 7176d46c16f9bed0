/**
 * A token bucket measured in bytes, for bandwidth shaping (BANDWIDTH=). Several connections may
 * share one bucket (a user's rate); each takes what it moved and, when the bucket is in debt,
 * pauses its reading for as long as the debt takes to pay off at the bucket's rate. Taking after
 * the fact (debt) rather than asking first keeps reads whole and costs one subtraction per chunk;
 * the overshoot is at most one read per connection, and it is paid back before the next read.
 */
export class TokenBucket {
  /** Tokens (bytes) available now; negative = debt. */
  private tokens: number;
  private last: number;

  /**
   * @param rate bytes per second
   * @param burst most bytes that may pass at once after a silence; small by default (50 ms of
   *   rate, at least 16 KiB) so a measured rate holds over a short window too.
   */
  constructor(
    readonly rate: number,
    readonly burst: number = Math.max(16 * 1024, Math.floor(rate / 20)),
    now: number = performance.now(),
  ) {
    this.tokens = burst;
    this.last = now;
  }

  /** Take `bytes`; returns how many milliseconds the taker should wait before it reads again. */
  take(bytes: number, now: number = performance.now()): number {
    const refill = ((now - this.last) * this.rate) / 1000;
    this.last = now;
    this.tokens = Math.min(this.burst, this.tokens + refill) - bytes;
    return this.tokens >= 0 ? 0 : Math.ceil((-this.tokens * 1000) / this.rate);
  }

  /** Milliseconds until the bucket is out of debt (0 when it is not in debt). */
  wait(now: number = performance.now()): number {
    return this.take(0, now);
  }
}
