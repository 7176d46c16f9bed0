/**
 * MAXIMA connection limits: total, per source address, per door (listener), per user. Counters
 * live for the process; the limits come from the configuration in force when a connection asks,
 * so a reload applies at once to new connections. The caller logs a refusal (the 'refused' event
 * and sockstap.log name the limit).
 */
import type { Maxima } from '../config/types.js';

export type LimitName = 'conn' | 'persrc' | 'perdoor' | 'peruser';

export class ConnectionLimits {
  private total = 0;
  private readonly bySource = new Map<string, number>();
  private readonly byDoor = new Map<string, number>();
  private readonly byUser = new Map<string, number>();

  /**
   * Count a new connection from `source` on the listener `door` ("host:port"); returns the limit
   * it would break, or null.
   */
  acquireSource(maxima: Maxima, source: string, door = ''): LimitName | null {
    if (maxima.conn > 0 && this.total >= maxima.conn) return 'conn';
    const n = this.bySource.get(source) ?? 0;
    if (maxima.persrc > 0 && n >= maxima.persrc) return 'persrc';
    const d = this.byDoor.get(door) ?? 0;
    const perdoor = maxima.perdoor ?? 0;
    if (perdoor > 0 && d >= perdoor) return 'perdoor';
    this.total++;
    this.bySource.set(source, n + 1);
    this.byDoor.set(door, d + 1);
    return null;
  }

  releaseSource(source: string, door = ''): void {
    this.total--;
    decrement(this.bySource, source);
    decrement(this.byDoor, door);
  }

  acquireUser(maxima: Maxima, user: string): LimitName | null {
    const n = this.byUser.get(user) ?? 0;
    if (maxima.peruser > 0 && n >= maxima.peruser) return 'peruser';
    this.byUser.set(user, n + 1);
    return null;
  }

  releaseUser(user: string): void {
    decrement(this.byUser, user);
  }

  get connections(): number {
    return this.total;
  }

  /** Live connections on one listener ("host:port"). */
  onDoor(door: string): number {
    return this.byDoor.get(door) ?? 0;
  }
}

function decrement(map: Map<string, number>, key: string): void {
  const n = (map.get(key) ?? 1) - 1;
  if (n <= 0) map.delete(key);
  else map.set(key, n);
}
