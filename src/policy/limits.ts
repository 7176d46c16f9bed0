/**
 * MAXIMA connection limits: total, per source address, per door (listener), per user. Counters
 * live for the process, and what other workers or nodes hold comes from `shared` (scale/); the limits come from the configuration in force when a connection asks,
 * so a reload applies at once to new connections. The caller logs a refusal (the 'refused' event
 * and sockstap.log name the limit).
 */
import type { Maxima } from '../config/types.js';
import { PROCESS_LIMITS, type SharedLimits } from '../scale/shared-limits.js';

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

  constructor(private readonly shared: SharedLimits = PROCESS_LIMITS) {}

  /**
   * Count a new connection from `source` on the listener `door` ("host:port"); returns the limit
   * it would break, or null.
   */
  acquireSource(maxima: Maxima, source: string, door = ''): LimitName | null {
    const shared = this.shared;
    if (maxima.conn > 0 && this.total + shared.elsewhere('conn') >= maxima.conn) return 'conn';
    const n = this.bySource.get(source) ?? 0;
    if (maxima.persrc > 0 && n + shared.elsewhere(`src:${source}`) >= maxima.persrc) return 'persrc';
    const d = this.byDoor.get(door) ?? 0;
    const perdoor = maxima.perdoor ?? 0;
    if (perdoor > 0 && d + shared.elsewhere(`door:${door}`) >= perdoor) return 'perdoor';
    this.total++;
    this.bySource.set(source, n + 1);
    this.byDoor.set(door, d + 1);
    this.report('conn', this.total, maxima.conn > 0);
    this.report(`src:${source}`, n + 1, maxima.persrc > 0);
    this.report(`door:${door}`, d + 1, perdoor > 0);
    return null;
  }

  releaseSource(source: string, door = ''): void {
    this.total--;
    const n = decrement(this.bySource, source);
    const d = decrement(this.byDoor, door);
    this.report('conn', this.total);
    this.report(`src:${source}`, n);
    this.report(`door:${door}`, d);
  }

  /** Count a user's connection (and, for MAXIMA=group:NAME:N, its groups' among `groups`). */
  acquireUser(maxima: Maxima, user: string, groups: readonly string[] = []): LimitName | null {
    const n = this.byUser.get(user) ?? 0;
    if (maxima.peruser > 0 && n + this.shared.elsewhere(`user:${user}`) >= maxima.peruser) return 'peruser';
    const limited = maxima.groups ? groups.filter((g) => (maxima.groups![g] ?? 0) > 0) : [];
    for (const g of limited) {
      if ((this.byGroup.get(g) ?? 0) + this.shared.elsewhere(`group:${g}`) >= maxima.groups![g]!) return `group:${g}`;
    }
    this.byUser.set(user, n + 1);
    this.report(`user:${user}`, n + 1, maxima.peruser > 0);
    for (const g of limited) {
      const k = (this.byGroup.get(g) ?? 0) + 1;
      this.byGroup.set(g, k);
      this.report(`group:${g}`, k, true);
    }
    if (maxima.groups || this.userGroups.has(user)) {
      const list = this.userGroups.get(user) ?? [];
      list.push(limited);
      this.userGroups.set(user, list);
    }
    return null;
  }

  releaseUser(user: string): void {
    this.report(`user:${user}`, decrement(this.byUser, user));
    const list = this.userGroups.get(user);
    if (!list) return;
    for (const g of list.shift() ?? []) this.report(`group:${g}`, decrement(this.byGroup, g));
    if (list.length === 0) this.userGroups.delete(user);
  }

  /** Live connections of a group's members (MAXIMA=group:NAME:N). */
  ofGroup(group: string): number {
    return this.byGroup.get(group) ?? 0;
  }

  /** Counters other processes hear of (only limited ones, so unlimited connections cost no message). */
  private readonly reported = new Set<string>();

  /** Tell the shared state a counter's new value, when it is limited or was reported before. */
  private report(key: string, n: number, limited = false): void {
    if (this.shared === PROCESS_LIMITS) return;
    if (!limited && !this.reported.has(key)) return;
    if (n > 0) this.reported.add(key);
    else this.reported.delete(key);
    this.shared.held(key, n);
  }

  get connections(): number {
    return this.total;
  }

  /** Live connections on one listener ("host:port"). */
  onDoor(door: string): number {
    return this.byDoor.get(door) ?? 0;
  }
}

function decrement(map: Map<string, number>, key: string): number {
  const n = (map.get(key) ?? 1) - 1;
  if (n <= 0) map.delete(key);
  else map.set(key, n);
  return Math.max(0, n);
}
