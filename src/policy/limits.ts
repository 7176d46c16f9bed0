/**
 * MAXIMA connection limits: total, per source address, per user. Counters live for the process;
 * the limits come from the configuration in force when a connection asks, so a reload applies at
 * once to new connections.
 */
import type { Maxima } from '../config/types.js';

export type LimitName = 'conn' | 'persrc' | 'peruser';

export class ConnectionLimits {
  private total = 0;
  private readonly bySource = new Map<string, number>();
  private readonly byUser = new Map<string, number>();

  /** Count a new connection from `source`; returns the limit it would break, or null. */
  acquireSource(maxima: Maxima, source: string): LimitName | null {
    if (maxima.conn > 0 && this.total >= maxima.conn) return 'conn';
    const n = this.bySource.get(source) ?? 0;
    if (maxima.persrc > 0 && n >= maxima.persrc) return 'persrc';
    this.total++;
    this.bySource.set(source, n + 1);
    return null;
  }

  releaseSource(source: string): void {
    this.total--;
    const n = (this.bySource.get(source) ?? 1) - 1;
    if (n <= 0) this.bySource.delete(source);
    else this.bySource.set(source, n);
  }

  acquireUser(maxima: Maxima, user: string): LimitName | null {
    const n = this.byUser.get(user) ?? 0;
    if (maxima.peruser > 0 && n >= maxima.peruser) return 'peruser';
    this.byUser.set(user, n + 1);
    return null;
  }

  releaseUser(user: string): void {
    const n = (this.byUser.get(user) ?? 1) - 1;
    if (n <= 0) this.byUser.delete(user);
    else this.byUser.set(user, n);
  }

  get connections(): number {
    return this.total;
  }
}
