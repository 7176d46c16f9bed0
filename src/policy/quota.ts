/**
 * QUOTA=SIZE/PERIOD[/up|/down]:SCOPE — bytes per user, source list, door or everything per
 * calendar hour, day, week (from Monday) or month, in the machine's time zone.
 *
 * A quota's usage is what the usage database holds for its scope since the period began (shared
 * by every process on the same STATEDIR) plus what this process counted and has not committed
 * yet. The relay counts each chunk of a covered connection (`QuotaMeter`), and a connection whose
 * count reaches a limit is cut; a new connection is refused (EQUOTA) while a quota covering it is
 * used up. Counts are committed at least every second (`tick`) and whenever a covered connection
 * closes, so `kill -9` loses at most the last second. A `conn` scope is a byte cap per connection
 * and is not stored.
 */
import type { Direction, QuotaLimit, QuotaPeriod } from '../config/limits.js';
import type { Config, TapRule } from '../config/types.js';
import { ProxyError } from '../core/errors.js';
import { groupedKey, scopeKey, withGroups, type LimitSubject } from './shaping.js';
import type { UsageBackend } from '../scale/shared-limits.js';
import { hourOf, type QuotaDelta, type TrafficDelta } from './usage.js';

/** What the admin API (`GET /api/quotas`) and the dashboard show, one entry per quota and scope. */
export interface QuotaStatus {
  /** `user:alice`, `src:10.0.0.0/8`, `door:1080`, `all`. */
  scope: string;
  period: QuotaPeriod;
  direction: Direction;
  limitBytes: number;
  usedBytes: number;
  /** ISO time the period started (local calendar). */
  periodStart: string;
  /** The QUOTA= text. */
  source: string;
}

/** Start of the calendar period holding `now`, in the machine's time zone. */
export function periodStart(period: QuotaPeriod, now: number): number {
  const d = new Date(now);
  d.setMinutes(0, 0, 0);
  if (period === 'hour') return d.getTime();
  d.setHours(0);
  if (period === 'week') d.setDate(d.getDate() - ((d.getDay() + 6) % 7));
  else if (period === 'month') d.setDate(1);
  return d.getTime();
}

/** Uncommitted bytes of one scope in this process. */
interface Pending {
  scope: string;
  up: number;
  down: number;
}

class QuotaCounter {
  /** Committed bytes of the scope in the current period (from the database), by direction. */
  baseUp = 0;
  baseDown = 0;
  start = 0;
  /** Live connections counting into it (they keep it refreshed every second). */
  refs = 0;
  refreshedAt = 0;

  constructor(
    readonly limit: QuotaLimit,
    readonly pending: Pending,
  ) {}

  used(): number {
    const up = this.baseUp + this.pending.up;
    const down = this.baseDown + this.pending.down;
    return this.limit.direction === 'up' ? up : this.limit.direction === 'down' ? down : up + down;
  }

  exhausted(): boolean {
    return this.used() >= this.limit.size;
  }
}

/** Counts of one connection: returns false once a quota covering it is used up. */
export interface QuotaMeter {
  up?: (bytes: number) => boolean;
  down?: (bytes: number) => boolean;
  /** Stop counting (the connection closed); commits what it counted. */
  release(): void;
}

/** The quotas covering a tunnel: the SOCKSTAP rule's (when one picked it), then the global ones. */
function quotasOf(config: Config, rule?: TapRule | null): readonly QuotaLimit[] {
  const own = rule?.set.quota ?? [];
  return own.length > 0 ? [...own, ...config.limits.quota] : config.limits.quota;
}

/** Every quota of the configuration, the rules' included (the admin's view). */
function allQuotas(config: Config): readonly QuotaLimit[] {
  return [...config.limits.quota, ...config.taps.flatMap((t) => t.set.quota ?? [])];
}

export class QuotaService {
  private readonly counters = new Map<string, QuotaCounter>();
  private readonly pending = new Map<string, Pending>();
  private traffic = new Map<string, TrafficDelta>();
  private readonly timer: NodeJS.Timeout;

  /**
   * @param store the usage database, or null when it could not open (quotas then count in this
   *   process only; the caller logs why).
   * @param onError a commit that failed (disk full, database locked past busy_timeout).
   */
  constructor(
    private readonly store: UsageBackend | null,
    private readonly onError: (err: unknown) => void = () => {},
    commitMs = 1000,
  ) {
    this.timer = setInterval(() => this.tick(), commitMs);
    this.timer.unref();
    // Fleet totals (REDIS=) came in: live counters read them at once.
    store?.onUpdate?.(() => {
      const now = Date.now();
      for (const c of this.counters.values()) this.refresh(c, now);
    });
  }

  /** Checkpoint 2: throws EQUOTA when a quota covering this connection is used up. */
  check(config: Config, who: LimitSubject, rule?: TapRule | null): void {
    who = withGroups(config, who);
    const limits = quotasOf(config, rule);
    if (limits.length === 0) return;
    const now = Date.now();
    for (const limit of limits) {
      const key = scopeKey(limit.scope, who);
      if (key === null || key === 'conn') continue;
      const c = this.counter(limit, key, now);
      if (c.exhausted()) {
        throw new ProxyError('EQUOTA', `quota ${limit.source} used up (${c.used()} of ${limit.size} bytes this ${limit.period})`);
      }
    }
  }

  /** Bytes the meters of `owner` (a session) counted, so its end adds only the rest (addUnmetered). */
  metered(owner: object): { up: number; down: number } {
    return this.meteredBy.get(owner) ?? { up: 0, down: 0 };
  }

  private readonly meteredBy = new WeakMap<object, { up: number; down: number }>();

  /**
   * Like check(), then the meter that counts the connection's bytes (null when no quota covers
   * it: the relay stays unmetered). `owner` (the session) remembers what its meters counted.
   */
  admit(config: Config, who: LimitSubject, owner?: object, rule?: TapRule | null): QuotaMeter | null {
    who = withGroups(config, who);
    const limits = quotasOf(config, rule);
    if (limits.length === 0) return null;
    const now = Date.now();
    const counters: QuotaCounter[] = [];
    const conn: { limit: QuotaLimit; used: { up: number; down: number } }[] = [];
    for (const limit of limits) {
      const key = scopeKey(limit.scope, who);
      if (key === null) continue;
      if (key === 'conn') {
        conn.push({ limit, used: { up: 0, down: 0 } });
        continue;
      }
      const c = this.counter(limit, key, now);
      if (c.exhausted()) {
        throw new ProxyError('EQUOTA', `quota ${limit.source} used up (${c.used()} of ${limit.size} bytes this ${limit.period})`);
      }
      counters.push(c);
    }
    if (counters.length === 0 && conn.length === 0) return null;
    for (const c of counters) c.refs++;
    const pendings = [...new Set(counters.map((c) => c.pending))];
    const wants = (dir: 'up' | 'down'): boolean =>
      counters.some((c) => c.limit.direction !== (dir === 'up' ? 'down' : 'up')) ||
      conn.some((c) => c.limit.direction !== (dir === 'up' ? 'down' : 'up'));
    let tally = owner ? this.meteredBy.get(owner) : undefined;
    if (owner && !tally) {
      tally = { up: 0, down: 0 };
      this.meteredBy.set(owner, tally);
    }
    const count =
      (dir: 'up' | 'down') =>
      (n: number): boolean => {
        for (const p of pendings) p[dir] += n;
        if (tally) tally[dir] += n;
        let ok = true;
        for (const c of counters) if (c.limit.direction !== opposite(dir) && c.exhausted()) ok = false;
        for (const c of conn) {
          c.used[dir] += n;
          const used = c.limit.direction === 'both' ? c.used.up + c.used.down : c.used[c.limit.direction];
          if (c.limit.direction !== opposite(dir) && used >= c.limit.size) ok = false;
        }
        return ok;
      };
    let released = false;
    const meter: QuotaMeter = {
      release: () => {
        if (released) return;
        released = true;
        for (const c of counters) c.refs--;
        // "Committed at every close."
        this.commit();
      },
    };
    // Bytes of a direction no quota limits still count toward the scope's other figures.
    if (wants('up') || pendings.length > 0) meter.up = count('up');
    if (wants('down') || pendings.length > 0) meter.down = count('down');
    return meter;
  }

  /**
   * Bytes a session moved outside a metered relay (the HTTP door, taps that answer themselves):
   * added at its end to the quotas covering it, so they count too.
   */
  addUnmetered(config: Config, who: LimitSubject, up: number, down: number): void {
    if (config.limits.quota.length === 0 || (up <= 0 && down <= 0)) return;
    who = withGroups(config, who);
    const now = Date.now();
    const seen = new Set<Pending>();
    for (const limit of quotasOf(config)) {
      const key = scopeKey(limit.scope, who);
      if (key === null || key === 'conn') continue;
      const p = this.counter(limit, key, now).pending;
      if (seen.has(p)) continue;
      seen.add(p);
      p.up += Math.max(0, up);
      p.down += Math.max(0, down);
    }
  }

  /** A finished session, for `sockstap report` (committed with the next tick). */
  recordSession(user: string | null, dst: string | null, up: number, down: number, endMs: number): void {
    const hour = hourOf(endMs);
    const id = `${hour}\u0000${user ?? ''}\u0000${dst ?? ''}`;
    let t = this.traffic.get(id);
    if (!t) {
      t = { hour, user: user ?? '', dst: dst ?? '', up: 0, down: 0, sessions: 0 };
      this.traffic.set(id, t);
    }
    t.up += up;
    t.down += down;
    t.sessions++;
  }

  /** Every quota of the configuration for every scope it has counted (admin `/api/quotas`). */
  status(config: Config): QuotaStatus[] {
    const out: QuotaStatus[] = [];
    const now = Date.now();
    const limits = allQuotas(config);
    const scopesSeen = new Set<string>();
    for (const c of this.counters.values()) scopesSeen.add(c.pending.scope);
    for (const limit of limits) {
      const keys: string[] = [];
      const s = limit.scope;
      if (s.kind === 'conn') continue;
      if (s.kind === 'all') keys.push('all');
      else if (s.kind === 'door') keys.push(`door:${s.port}`);
      else if (s.kind === 'src') keys.push(`src:${s.hosts.source}`);
      else if (s.kind === 'group') for (const g of s.groups) keys.push(`group:${g}`);
      else for (const u of s.users) keys.push(`user:${u}`);
      for (const key of keys) {
        const c = this.counter(limit, key, now);
        if (now - c.refreshedAt > 1000) this.refresh(c, now);
        out.push({
          scope: groupedKey(limit, key),
          period: limit.period,
          direction: limit.direction,
          limitBytes: limit.size,
          usedBytes: c.used(),
          periodStart: new Date(c.start).toISOString(),
          source: limit.source,
        });
      }
    }
    return out;
  }

  /** Commit every uncounted byte in one transaction, then read the shared totals again. */
  commit(): void {
    const now = Date.now();
    const hour = hourOf(now);
    const deltas: QuotaDelta[] = [];
    for (const p of this.pending.values()) {
      if (p.up === 0 && p.down === 0) continue;
      deltas.push({ scope: p.scope, hour, up: p.up, down: p.down });
    }
    const traffic = [...this.traffic.values()];
    if (deltas.length === 0 && traffic.length === 0) return;
    if (this.store) {
      try {
        this.store.commit(deltas, traffic);
      } catch (err) {
        // Keep the counts for the next try; the limits still hold from memory.
        this.onError(err);
        return;
      }
      for (const p of this.pending.values()) {
        p.up = 0;
        p.down = 0;
      }
      this.traffic = new Map();
      for (const c of this.counters.values()) {
        if (c.refs > 0 || deltas.some((d) => d.scope === c.pending.scope)) this.refresh(c, now);
      }
    } else {
      // No database: committed bytes move into the counters' bases.
      for (const c of this.counters.values()) {
        c.baseUp += c.pending.up;
        c.baseDown += c.pending.down;
      }
      for (const p of this.pending.values()) {
        p.up = 0;
        p.down = 0;
      }
      this.traffic = new Map();
    }
  }

  /** The one-second tick: commit, and notice other processes' usage and a new period. */
  tick(): void {
    this.commit();
    const now = Date.now();
    for (const c of this.counters.values()) if (c.refs > 0 && now - c.refreshedAt >= 1000) this.refresh(c, now);
  }

  /** Commit what is left and stop the tick. The store is the caller's to close. */
  close(): void {
    clearInterval(this.timer);
    this.commit();
  }

  private counter(limit: QuotaLimit, scopeKeyOfLimit: string, now: number): QuotaCounter {
    // A SOCKSTAP rule's quota counts (and is stored) apart from the global scope of the same name.
    const key = groupedKey(limit, scopeKeyOfLimit);
    const id = `${limit.source}\u0000${key}`;
    let c = this.counters.get(id);
    if (!c || c.limit.size !== limit.size) {
      let p = this.pending.get(key);
      if (!p) {
        p = { scope: key, up: 0, down: 0 };
        this.pending.set(key, p);
      }
      c = new QuotaCounter(limit, p);
      this.counters.set(id, c);
      this.refresh(c, now);
    } else if (now - c.refreshedAt > 1000 || periodStart(limit.period, now) !== c.start) {
      this.refresh(c, now);
    }
    return c;
  }

  private refresh(c: QuotaCounter, now: number): void {
    const start = periodStart(c.limit.period, now);
    if (this.store) {
      const used = this.store.quotaUsed(c.pending.scope, start);
      c.baseUp = used.up;
      c.baseDown = used.down;
    } else if (start !== c.start) {
      c.baseUp = 0;
      c.baseDown = 0;
    }
    c.start = start;
    c.refreshedAt = now;
  }
}

function opposite(dir: 'up' | 'down'): 'up' | 'down' {
  return dir === 'up' ? 'down' : 'up';
}
