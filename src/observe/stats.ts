/**
 * Running statistics of the proxy for the admin API, the dashboard and /metrics: totals per door
 * and per protocol, top destinations and users, results (refusals, errors), HTTP cache outcomes and
 * a per-second throughput history.
 *
 * Nothing here runs on the relay's data path. Byte counts are read from the sessions themselves:
 * a finished session's final counts at 'session-end', and for live sessions the client socket's
 * `bytesRead`/`bytesWritten`, sampled once a second and at every scrape (`sample()`). A session's
 * bytes are counted as the growth since its last sample, so every total only ever grows.
 */
import type { Socket } from 'node:net';
import { formatHostPort, type Session } from '../core/session.js';
import type { AccessRecord, ProxyEvents, RefusalRecord } from './events.js';
import { socketBytes } from '../native/splice.js';

/**
 * Session results that mean "policy said no" rather than "something failed": ACL and
 * authentication, connection limits, RFC 1413 ident, BIND's wrong peer, and the quota refusal.
 */
export const REFUSAL_CODES: ReadonlySet<string> = new Set(['EDENIED', 'EAUTH', 'ELIMIT', 'EIDENTUNREACH', 'EIDENTMISMATCH', 'EBINDPEER', 'EQUOTA']);

/** Session results that are neither a refusal nor an error. */
const CLEAN_RESULTS: ReadonlySet<string> = new Set(['ok', 'closed-by-admin']);

/** Squid's hit codes (its logTypeIsATcpHit): served from the cache, possibly after validation. */
const HIT_CODES: ReadonlySet<string> = new Set([
  'TCP_HIT',
  'TCP_MEM_HIT',
  'TCP_IMS_HIT',
  'TCP_NEGATIVE_HIT',
  'TCP_OFFLINE_HIT',
  'TCP_REFRESH_UNMODIFIED',
  'TCP_REFRESH_FAIL_OLD',
  'TCP_STALE_HIT',
]);

export type CacheOutcome = 'hit' | 'miss' | 'none';

/**
 * Whether an access.log result code is a cache hit, a miss (the origin answered), or no cache
 * lookup at all (TCP_TUNNEL, TCP_DENIED, NONE).
 */
export function cacheOutcome(resultCode: string): CacheOutcome {
  const code = resultCode.split('/')[0]!.toUpperCase();
  if (HIT_CODES.has(code) || /_HIT(_|$)/.test(code)) return 'hit';
  if (code.includes('MISS') || code.startsWith('TCP_REFRESH')) return 'miss';
  return 'none';
}

/** How a session's end is classed in the figures. */
export function resultClass(result: string): 'ok' | 'refusal' | 'error' {
  if (CLEAN_RESULTS.has(result)) return 'ok';
  return REFUSAL_CODES.has(result) ? 'refusal' : 'error';
}

export interface Figures {
  /** sessions seen (live ones included once their door is known) */
  sessions: number;
  bytesUp: number;
  bytesDown: number;
}

export interface TopRow extends Figures {
  name: string;
}

export interface ThroughputPoint {
  /** ms since the epoch */
  t: number;
  /** bytes per second from the client to the server over the last interval */
  up: number;
  /** bytes per second from the server to the client */
  down: number;
  live: number;
}

export interface HttpFigures {
  requests: number;
  byResultCode: Record<string, number>;
  cacheHits: number;
  cacheMisses: number;
  /** bytes sent to clients from cache hits */
  hitBytes: number;
  /** hits / (hits + misses), null before any cacheable request */
  hitRatio: number | null;
}

/** What a live session looks like to the API and the dashboard. */
export interface LiveSession {
  id: string;
  start: string;
  ageMs: number;
  client: string;
  user: string | null;
  door: string;
  dst: string | null;
  command: string | null;
  route: string;
  proto: string;
  bytesUp: number;
  bytesDown: number;
}

/** Per-session bookkeeping while the session is live. */
interface Tracked {
  client: Socket | undefined;
  /** bytes already counted into the totals */
  up: number;
  down: number;
  counted: boolean;
  /** the door sent its success reply (the 'established' event) */
  established: boolean;
  dstKey: string | null;
  userKey: string | null;
}

/** A bounded "top N" table: when it grows past `cap` rows, the smaller half is forgotten. */
export class TopTable {
  private readonly rows = new Map<string, Figures>();
  constructor(private readonly cap = 2000) {}

  add(name: string, sessions: number, up: number, down: number): void {
    let row = this.rows.get(name);
    if (!row) {
      row = { sessions: 0, bytesUp: 0, bytesDown: 0 };
      this.rows.set(name, row);
      if (this.rows.size > this.cap) this.prune();
    }
    row.sessions += sessions;
    row.bytesUp += up;
    row.bytesDown += down;
  }

  top(n: number): TopRow[] {
    return [...this.rows]
      .map(([name, f]) => ({ name, ...f }))
      .sort((a, b) => b.bytesUp + b.bytesDown - (a.bytesUp + a.bytesDown) || b.sessions - a.sessions || a.name.localeCompare(b.name))
      .slice(0, n);
  }

  get size(): number {
    return this.rows.size;
  }

  private prune(): void {
    const keep = this.top(Math.floor(this.cap / 2));
    this.rows.clear();
    for (const r of keep) this.rows.set(r.name, { sessions: r.sessions, bytesUp: r.bytesUp, bytesDown: r.bytesDown });
  }
}

export interface StatsSource {
  sessions: ReadonlyMap<string, Session>;
  events: ProxyEvents;
}

/** The door label of a session: the protocol the client spoke, else the listener's kind. */
export function doorOf(s: Session): string {
  return s.frontProtocol || s.door;
}

function bump(map: Map<string, number>, key: string, by = 1): void {
  map.set(key, (map.get(key) ?? 0) + by);
}

function figures(map: Map<string, Figures>, key: string): Figures {
  let f = map.get(key);
  if (!f) {
    f = { sessions: 0, bytesUp: 0, bytesDown: 0 };
    map.set(key, f);
  }
  return f;
}

export const HISTORY_SECONDS = 300;

export class ProxyStats {
  bytesUp = 0;
  bytesDown = 0;
  /** connections whose door is known, per door (counted once each) */
  readonly connections = new Map<string, number>();
  readonly byDoor = new Map<string, Figures>();
  readonly byProto = new Map<string, Figures>();
  /** finished sessions per "door proto" */
  readonly ended = new Map<string, { door: string; proto: string; count: number }>();
  /** refusals per "door code", from session results and from refusals at accept */
  readonly refusals = new Map<string, { door: string; code: string; count: number }>();
  readonly errors = new Map<string, number>();
  /** session.proto at the end of every established CONNECT tunnel: what the sniffer found ("raw": nothing or not tapped) */
  readonly sniffOutcomes = new Map<string, number>();
  readonly destinations = new TopTable();
  readonly users = new TopTable();
  readonly httpByResultCode = new Map<string, number>();
  httpRequests = 0;
  cacheHits = 0;
  cacheMisses = 0;
  hitBytes = 0;
  private readonly tracked = new Map<Session, Tracked>();
  private readonly history: ThroughputPoint[] = [];
  private lastTick: { t: number; up: number; down: number };
  private readonly timer: NodeJS.Timeout;
  private readonly unsubscribe: () => void;
  /** Called after every once-a-second sample (the SSE broadcast hangs here). */
  onTick: (() => void) | null = null;

  constructor(private readonly source: StatsSource) {
    const onStart = (s: Session): void => this.track(s);
    const onEnd = (s: Session): void => this.end(s);
    const onAccess = (r: AccessRecord): void => this.access(r);
    const onRefused = (r: RefusalRecord): void => this.refusedAtAccept(r);
    const onEstablished = (s: Session): void => {
      const t = this.tracked.get(s);
      if (t) t.established = true;
    };
    source.events.on('session-start', onStart);
    source.events.on('session-end', onEnd);
    source.events.on('access', onAccess);
    source.events.on('refused', onRefused);
    source.events.on('established', onEstablished);
    this.unsubscribe = () => {
      source.events.off('session-start', onStart);
      source.events.off('session-end', onEnd);
      source.events.off('access', onAccess);
      source.events.off('refused', onRefused);
      source.events.off('established', onEstablished);
    };
    // Sessions that were already live when the statistics started.
    for (const s of source.sessions.values()) this.track(s);
    this.lastTick = { t: Date.now(), up: 0, down: 0 };
    this.timer = setInterval(() => this.tick(), 1000);
    this.timer.unref();
  }

  close(): void {
    clearInterval(this.timer);
    this.unsubscribe();
    this.onTick = null;
  }

  private track(s: Session): void {
    if (this.tracked.has(s)) return;
    // The first socket a session adopts is the client's (sockstap.ts accept).
    const [client] = s.sockets;
    this.tracked.set(s, { client, up: 0, down: 0, counted: false, established: false, dstKey: null, userKey: null });
  }

  /** What the session has moved so far: its own counts once set, else its client socket's. */
  liveBytes(s: Session): { up: number; down: number } {
    const client = this.tracked.get(s)?.client ?? [...s.sockets][0];
    const b = client ? socketBytes(client) : s.live ? { read: s.live[0]!, written: s.live[1]! } : { read: 0, written: 0 };
    return {
      up: Math.max(s.bytesUp, b.read),
      down: Math.max(s.bytesDown, b.written),
    };
  }

  /** Count new bytes and newly identified connections of live sessions. Cheap: one pass, no I/O. */
  sample(): void {
    for (const s of this.source.sessions.values()) {
      const t = this.tracked.get(s);
      if (!t) continue;
      const b = this.liveBytes(s);
      this.account(s, t, b.up, b.down);
    }
  }

  private account(s: Session, t: Tracked, up: number, down: number): void {
    const door = doorOf(s);
    if (!t.counted && (s.frontProtocol || s.endMs)) {
      t.counted = true;
      bump(this.connections, door);
      figures(this.byDoor, door).sessions++;
    }
    if (t.dstKey === null && s.dst) {
      t.dstKey = s.dst.host;
      this.destinations.add(t.dstKey, 1, 0, 0);
    }
    if (t.userKey === null && t.counted) {
      t.userKey = s.user ?? '-';
      this.users.add(t.userKey, 1, 0, 0);
    }
    const du = Math.max(0, up - t.up);
    const dd = Math.max(0, down - t.down);
    if (du === 0 && dd === 0) return;
    t.up = Math.max(t.up, up);
    t.down = Math.max(t.down, down);
    this.bytesUp += du;
    this.bytesDown += dd;
    const fd = figures(this.byDoor, door);
    fd.bytesUp += du;
    fd.bytesDown += dd;
    const fp = figures(this.byProto, s.proto);
    fp.bytesUp += du;
    fp.bytesDown += dd;
    if (t.dstKey !== null) this.destinations.add(t.dstKey, 0, du, dd);
    if (t.userKey !== null) this.users.add(t.userKey, 0, du, dd);
  }

  private end(s: Session): void {
    this.track(s);
    const t = this.tracked.get(s)!;
    this.tracked.delete(s);
    this.account(s, t, s.bytesUp, s.bytesDown);
    const door = doorOf(s);
    figures(this.byProto, s.proto).sessions++;
    const key = `${door} ${s.proto}`;
    const e = this.ended.get(key);
    if (e) e.count++;
    else this.ended.set(key, { door, proto: s.proto, count: 1 });
    if (s.command === 'connect' && t.established) bump(this.sniffOutcomes, s.proto);
    const cls = resultClass(s.result);
    if (cls === 'refusal') this.refusal(door, s.result);
    else if (cls === 'error') bump(this.errors, s.result);
  }

  private refusal(door: string, code: string): void {
    const key = `${door} ${code}`;
    const r = this.refusals.get(key);
    if (r) r.count++;
    else this.refusals.set(key, { door, code, count: 1 });
  }

  private refusedAtAccept(r: RefusalRecord): void {
    this.refusal(r.door, r.code);
  }

  private access(r: AccessRecord): void {
    this.httpRequests++;
    bump(this.httpByResultCode, r.resultCode);
    const o = cacheOutcome(r.resultCode);
    if (o === 'hit') {
      this.cacheHits++;
      this.hitBytes += r.bytes;
    } else if (o === 'miss') this.cacheMisses++;
  }

  private tick(): void {
    this.sample();
    const now = Date.now();
    const dt = (now - this.lastTick.t) / 1000;
    if (dt > 0) {
      this.history.push({
        t: now,
        up: Math.round((this.bytesUp - this.lastTick.up) / dt),
        down: Math.round((this.bytesDown - this.lastTick.down) / dt),
        live: this.source.sessions.size,
      });
      if (this.history.length > HISTORY_SECONDS) this.history.splice(0, this.history.length - HISTORY_SECONDS);
    }
    this.lastTick = { t: now, up: this.bytesUp, down: this.bytesDown };
    this.onTick?.();
  }

  /** The last HISTORY_SECONDS seconds of throughput, oldest first. */
  throughput(): ThroughputPoint[] {
    return this.history.slice();
  }

  latest(): ThroughputPoint | null {
    return this.history.at(-1) ?? null;
  }

  http(): HttpFigures {
    const lookups = this.cacheHits + this.cacheMisses;
    return {
      requests: this.httpRequests,
      byResultCode: Object.fromEntries(this.httpByResultCode),
      cacheHits: this.cacheHits,
      cacheMisses: this.cacheMisses,
      hitBytes: this.hitBytes,
      hitRatio: lookups === 0 ? null : this.cacheHits / lookups,
    };
  }

  /** Live sessions per "door proto", for the gauge. */
  liveByDoorProto(): Array<{ door: string; proto: string; count: number }> {
    const m = new Map<string, { door: string; proto: string; count: number }>();
    for (const s of this.source.sessions.values()) {
      const door = doorOf(s);
      const key = `${door} ${s.proto}`;
      const e = m.get(key);
      if (e) e.count++;
      else m.set(key, { door, proto: s.proto, count: 1 });
    }
    return [...m.values()];
  }

  liveSession(s: Session, now: number): LiveSession {
    const b = this.liveBytes(s);
    return {
      id: s.id,
      start: new Date(s.startMs).toISOString(),
      ageMs: now - s.startMs,
      client: s.clientLabel,
      user: s.user,
      door: doorOf(s),
      dst: s.dst ? formatHostPort(s.dst.host, s.dst.port) : null,
      command: s.command,
      route: s.route,
      proto: s.proto,
      bytesUp: b.up,
      bytesDown: b.down,
    };
  }

  totalRefusals(): number {
    let n = 0;
    for (const r of this.refusals.values()) n += r.count;
    return n;
  }

  totalErrors(): number {
    let n = 0;
    for (const v of this.errors.values()) n += v;
    return n;
  }
}

/** Map → plain object for JSON. */
export function figuresObject(map: ReadonlyMap<string, Figures>): Record<string, Figures> {
  return Object.fromEntries([...map].map(([k, v]) => [k, { ...v }]));
}
