/**
 * BANDWIDTH=RATE[/up|/down]:SCOPE — which token buckets cover a connection. A connection obeys
 * every limit whose scope covers it; connections covered by the same limit share one bucket:
 *
 *   conn          a bucket of its own for each connection
 *   user:A,B      one bucket per named user, shared by all of that user's connections
 *   src:hostList  one bucket for every source the list matches together (a network's rate)
 *   door:PORT     one bucket for the listener on PORT
 *   all           one bucket for everything
 *
 * A limit without /up or /down limits each direction to RATE separately. Buckets live as long as
 * the policy; a reload keeps the buckets of limits whose text did not change. With WORKERS or
 * REDIS the shared buckets take their tokens from one central bucket (scale/shared-limits.ts).
 */
import type { BandwidthLimit, LimitScope } from '../config/limits.js';
import type { Config, TapRule } from '../config/types.js';
import type { DirectionShape, RelayShape } from '../net/relay.js';
import { TokenBucket } from '../net/throttle.js';
import { groupsOf } from './groups.js';
import { PROCESS_LIMITS, type SharedLimits } from '../scale/shared-limits.js';

/** Who a connection is, for the scopes of BANDWIDTH= and QUOTA=. */
export interface LimitSubject {
  user: string | null;
  clientAddress: string;
  /** The port of the listener that accepted the connection. */
  doorPort: number;
  /** The user's groups (withGroups fills them in), for `group:NAME` scopes. */
  groups?: readonly string[];
}

/** `who` with the user's groups (policy/groups.ts), for `group:NAME` scopes. */
export function withGroups(config: Config, who: LimitSubject): LimitSubject {
  if (who.groups !== undefined || who.user === null) return who;
  return { ...who, groups: groupsOf(config, who.user) };
}

/** The port of a listener label "host:port" / "[v6]:port". */
export function portOfListen(listen: string): number {
  return Number(listen.slice(listen.lastIndexOf(':') + 1)) || 0;
}

/** The key of the shared counter (bucket or quota) of `scope` for `who`, or null if it does not cover it. */
export function scopeKey(scope: LimitScope, who: LimitSubject): string | null {
  switch (scope.kind) {
    case 'all':
      return 'all';
    case 'conn':
      return 'conn';
    case 'user':
      return who.user !== null && scope.users.includes(who.user) ? `user:${who.user}` : null;
    case 'src':
      return scope.hosts.matches({ host: who.clientAddress, addresses: [who.clientAddress], user: who.user ?? undefined })
        ? `src:${scope.hosts.source}`
        : null;
    case 'door':
      return scope.port === who.doorPort ? `door:${scope.port}` : null;
    case 'group': {
      // One counter per group, shared by its members; a user in several listed groups counts in the first.
      const g = scope.groups.find((name) => who.groups?.includes(name));
      return g === undefined ? null : `group:${g}`;
    }
  }
}

/** The key of a limit's shared counter: a SOCKSTAP rule's limits (`group`) count apart from the global ones. */
export function groupedKey(limit: { group?: string }, key: string): string {
  return limit.group === undefined ? key : `${key} in ${limit.group}`;
}

/** Whether any BANDWIDTH=/QUOTA= could cover a tunnel the rule (if any) picks. */
export function anyLimit(config: Config, rule?: TapRule | null): boolean {
  return (
    config.limits.bandwidth.length > 0 ||
    config.limits.quota.length > 0 ||
    (rule?.set.bandwidth?.length ?? 0) > 0 ||
    (rule?.set.quota?.length ?? 0) > 0
  );
}

export class BandwidthShaper {
  private readonly buckets = new Map<string, TokenBucket>();

  constructor(private readonly shared: SharedLimits = PROCESS_LIMITS) {}

  /**
   * The buckets covering a connection per direction (the global limits, and the SOCKSTAP rule's
   * when a rule picked it); null when no limit covers it (the fast path).
   */
  shapeFor(config: Config, who: LimitSubject, rule?: TapRule | null): { up: TokenBucket[]; down: TokenBucket[] } | null {
    const own = rule?.set.bandwidth ?? [];
    if (config.limits.bandwidth.length === 0 && own.length === 0) return null;
    const up: TokenBucket[] = [];
    const down: TokenBucket[] = [];
    who = withGroups(config, who);
    for (const limit of own.length > 0 ? [...own, ...config.limits.bandwidth] : config.limits.bandwidth) {
      const key = scopeKey(limit.scope, who);
      if (key === null) continue;
      for (const dir of ['up', 'down'] as const) {
        if (limit.direction !== 'both' && limit.direction !== dir) continue;
        (dir === 'up' ? up : down).push(this.bucket(limit, key, dir));
      }
    }
    return up.length > 0 || down.length > 0 ? { up, down } : null;
  }

  private bucket(limit: BandwidthLimit, key: string, dir: 'up' | 'down'): TokenBucket {
    if (key === 'conn') return new TokenBucket(limit.rate);
    const id = `${limit.source}\u0000${groupedKey(limit, key)}\u0000${dir}`;
    let b = this.buckets.get(id);
    if (!b || b.rate !== limit.rate) {
      b = this.shared.bucket(id, limit.rate) ?? new TokenBucket(limit.rate);
      this.buckets.set(id, b);
    }
    return b;
  }
}

/** Join buckets and quota counts into the relay's shape; null when neither applies. */
export function relayShape(
  buckets: { up: TokenBucket[]; down: TokenBucket[] } | null,
  count: { up?: (n: number) => boolean; down?: (n: number) => boolean } | null,
): RelayShape | null {
  if (!buckets && !count) return null;
  const side = (b: TokenBucket[] | undefined, c: ((n: number) => boolean) | undefined): DirectionShape | null => {
    if ((!b || b.length === 0) && !c) return null;
    const shape: DirectionShape = { buckets: b ?? [] };
    if (c) shape.count = c;
    return shape;
  };
  return { up: side(buckets?.up, count?.up), down: side(buckets?.down, count?.down), cutResult: 'EQUOTA' };
}
