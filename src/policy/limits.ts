/**
 * MAXIMA connection limits: total, per source address, per door (listener), per user. Counters
 * live for the process; the limits come from the configuration in force when a connection asks,
 * so a reload applies at once to new connections. The caller logs a refusal (the 'refused' event
 * and sockstap.log name the limit).
 */
import type { Maxima } from '../config/types.js';

export type LimitName = 'conn' | 'persrc' | 'perdoor' | 'peruser' | `group:${string}`;

export class ConnectionLimits {
  private total = 0;
  private readonly bySource = new Map<string, number>();
  private readonly byDoor = new Map<string, number>();
  private readonly byUser = new Map<string, number>();
  /** MAXIMA=group:NAME:N: live connections of each group's members. */
  private readonly byGroup = new Map<string, number>();
  /** The groups each of a user's live connections counted in (released in turn). */
  private readonly userGroups = new Map<string, string[][]>();

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

  /** Count a user's connection (and, for MAXIMA=group:NAME:N, its groups' among `groups`). */
  acquireUser(maxima: Maxima, user: string, groups: readonly string[] = []): LimitName | null {
    const n = this.byUser.get(user) ?? 0;
    if (maxima.peruser > 0 && n >= maxima.peruser) return 'peruser';
    const limited = maxima.groups ? groups.filter((g) => (maxima.groups![g] ?? 0) > 0) : [];
    for (const g of limited) if ((this.byGroup.get(g) ?? 0) >= maxima.groups![g]!) return `group:${g}`;
    this.byUser.set(user, n + 1);
    for (const g of limited) this.byGroup.set(g, (this.byGroup.get(g) ?? 0) + 1);
    if (maxima.groups || this.userGroups.has(user)) {
      const list = this.userGroups.get(user) ?? [];
      list.push(limited);
      this.userGroups.set(user, list);
    }
    return null;
  }

  releaseUser(user: string): void {
    decrement(this.byUser, user);
    const list = this.userGroups.get(user);
    if (!list) return;
    for (const g of list.shift() ?? []) decrement(this.byGroup, g);
    if (list.length === 0) this.userGroups.delete(user);
  }

  /** Live connections of a group's members (MAXIMA=group:NAME:N). */
  ofGroup(group: string): number {
    return this.byGroup.get(group) ?? 0;
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
