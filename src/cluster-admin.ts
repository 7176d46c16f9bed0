/**
 * ADMIN with WORKERS=N: the admin endpoint runs in the primary and shows every worker. Each worker
 * reports what its own admin would have read (the lifecycle events, its live sessions' figures,
 * its cache's figures) over the cluster IPC channel; the primary replays them into one event
 * stream and one map of live sessions, so /metrics, /api/* and the dashboard are computed by the
 * same code as in one process, over the sum of all workers. A close asked in the primary is
 * forwarded to the worker that owns the session.
 *
 * Bounds: a worker sends at most one batch per REPORT_MS (and at once when MAX_BATCH messages
 * wait); a live session is reported only when its figures changed; a worker that dies takes its
 * mirrored sessions with it (they end as `worker-exited`).
 */
import type { Worker } from 'node:cluster';
import cluster from 'node:cluster';
import type { CacheStats } from './cache/http-cache.js';
import type { HostPort } from './config/types.js';
import { Session } from './core/session.js';
import type { AccessRecord, LogFileRecord, ProxyEvents, RefusalRecord, XferRecord } from './observe/events.js';
import { ProxyEvents as Events } from './observe/events.js';
import { nativeDoorStats, type NativeDoorStats } from './native/door.js';

const REPORT_MS = 250;
const MAX_BATCH = 512;

/** What a worker reports of one session. */
interface SessionFigures {
  id: string;
  startMs: number;
  endMs: number;
  clientAddress: string;
  clientPort: number;
  door: string;
  listen: string;
  frontProtocol: string;
  user: string | null;
  dst: HostPort | null;
  command: Session['command'];
  route: string;
  proto: string;
  bytesUp: number;
  bytesDown: number;
  result: string;
  /** Bytes moved so far, as the worker's admin would count them. */
  up: number;
  down: number;
}

type Report =
  | { t: 'start' | 'update' | 'end' | 'established'; s: SessionFigures }
  | { t: 'access'; r: AccessRecord }
  | { t: 'refused'; r: RefusalRecord }
  | { t: 'xfer'; r: XferRecord }
  | { t: 'log-file'; r: LogFileRecord };

interface ReportMessage {
  sockstap: 'report';
  batch: Report[];
  cache: CacheStats | null;
  native: NativeDoorStats;
}

function figuresOf(s: Session): SessionFigures {
  const client = [...s.sockets][0];
  const read = client ? client.bytesRead : s.live ? s.live[0]! : 0;
  const written = client ? client.bytesWritten : s.live ? s.live[1]! : 0;
  return {
    id: s.id,
    startMs: s.startMs,
    endMs: s.endMs,
    clientAddress: s.clientAddress,
    clientPort: s.clientPort,
    door: s.door,
    listen: s.listen,
    frontProtocol: s.frontProtocol,
    user: s.user,
    dst: s.dst ? { host: s.dst.host, port: s.dst.port } : null,
    command: s.command,
    route: s.route,
    proto: s.proto,
    bytesUp: s.bytesUp,
    bytesDown: s.bytesDown,
    result: s.result,
    up: Math.max(s.bytesUp, read),
    down: Math.max(s.bytesDown, written),
  };
}

export interface ReportedProxy {
  events: ProxyEvents;
  sessions: ReadonlyMap<string, Session>;
  cacheStats(): CacheStats | null;
}

/** In a worker: report to the primary's admin; returns the function that stops it. */
export function reportToPrimary(proxy: ReportedProxy): () => void {
  if (!cluster.isWorker || !process.send) return () => {};
  let queue: Report[] = [];
  /** What was last sent of each live session (sent again only when it changed). */
  const sent = new Map<string, string>();
  const flush = (): void => {
    if (!process.connected) return;
    const msg: ReportMessage = { sockstap: 'report', batch: queue, cache: proxy.cacheStats(), native: nativeDoorStats() };
    queue = [];
    process.send!(msg);
  };
  const push = (r: Report): void => {
    queue.push(r);
    if (queue.length >= MAX_BATCH) flush();
  };
  const onStart = (s: Session): void => {
    const f = figuresOf(s);
    sent.set(s.id, JSON.stringify(f));
    push({ t: 'start', s: f });
  };
  const onEnd = (s: Session): void => {
    sent.delete(s.id);
    push({ t: 'end', s: figuresOf(s) });
  };
  const onEstablished = (s: Session): void => push({ t: 'established', s: figuresOf(s) });
  const onAccess = (r: AccessRecord): void => push({ t: 'access', r });
  const onRefused = (r: RefusalRecord): void => push({ t: 'refused', r });
  const onXfer = (r: XferRecord): void => push({ t: 'xfer', r });
  const onLogFile = (r: LogFileRecord): void => push({ t: 'log-file', r });
  proxy.events.on('session-start', onStart);
  proxy.events.on('session-end', onEnd);
  proxy.events.on('established', onEstablished);
  proxy.events.on('access', onAccess);
  proxy.events.on('refused', onRefused);
  proxy.events.on('xfer', onXfer);
  proxy.events.on('log-file', onLogFile);
  const timer = setInterval(() => {
    for (const s of proxy.sessions.values()) {
      const f = figuresOf(s);
      const text = JSON.stringify(f);
      if (sent.get(s.id) === text) continue;
      sent.set(s.id, text);
      push({ t: 'update', s: f });
    }
    flush();
  }, REPORT_MS);
  timer.unref();
  // The primary asks to close one of this worker's sessions.
  const onMessage = (m: unknown): void => {
    const msg = m as { sockstap?: string; id?: unknown } | null;
    if (msg?.sockstap !== 'close' || typeof msg.id !== 'string') return;
    proxy.sessions.get(msg.id)?.close('closed-by-admin');
  };
  process.on('message', onMessage);
  return () => {
    clearInterval(timer);
    flush();
    process.off('message', onMessage);
    proxy.events.off('session-start', onStart);
    proxy.events.off('session-end', onEnd);
    proxy.events.off('established', onEstablished);
    proxy.events.off('access', onAccess);
    proxy.events.off('refused', onRefused);
    proxy.events.off('xfer', onXfer);
    proxy.events.off('log-file', onLogFile);
  };
}

/** In the primary: every worker's reports as one proxy's events, sessions and cache figures. */
export class ClusterMirror {
  readonly events = new Events();
  readonly sessions = new Map<string, Session>();
  readonly totals = { sessions: 0, refused: 0, bytesUp: 0, bytesDown: 0 };
  readonly startedAt = Date.now();
  private readonly owner = new Map<string, { worker: Worker; figures: SessionFigures }>();
  private readonly caches = new Map<Worker, { at: number; stats: CacheStats }>();
  private readonly natives = new Map<Worker, NativeDoorStats>();
  /** The native figures of workers that died (their counters stay in the totals). */
  private readonly nativeGone: NativeDoorStats = { listeners: 0, handshakes: 0, accepted: 0, handedOff: 0, remembered: 0, hits: 0 };

  constructor() {
    this.events.setMaxListeners(0);
  }

  /** A message from a worker; false when it is not a report. */
  receive(worker: Worker, m: unknown): boolean {
    const msg = m as Partial<ReportMessage> | null;
    if (msg?.sockstap !== 'report' || !Array.isArray(msg.batch)) return false;
    if (msg.cache) this.caches.set(worker, { at: Date.now(), stats: msg.cache });
    if (msg.native) this.natives.set(worker, msg.native);
    for (const r of msg.batch) this.apply(worker, r);
    return true;
  }

  private session(worker: Worker, f: SessionFigures): Session {
    const known = this.sessions.get(f.id);
    if (known) return known;
    const s = new Session({ clientAddress: f.clientAddress, clientPort: f.clientPort, door: f.door as Session['door'], listen: f.listen, startMs: f.startMs });
    // The worker's id, so that a close names the right session.
    Object.defineProperty(s, 'id', { value: f.id });
    s.live = new Float64Array(2);
    s.onClose(() => {
      if (worker.isConnected()) worker.send({ sockstap: 'close', id: f.id });
    });
    this.sessions.set(f.id, s);
    this.owner.set(f.id, { worker, figures: f });
    return s;
  }

  private static update(s: Session, f: SessionFigures): void {
    s.frontProtocol = f.frontProtocol;
    s.user = f.user;
    s.dst = f.dst;
    s.command = f.command;
    s.route = f.route;
    s.proto = f.proto;
    s.live![0] = f.up;
    s.live![1] = f.down;
  }

  private apply(worker: Worker, r: Report): void {
    switch (r.t) {
      case 'start': {
        const s = this.session(worker, r.s);
        ClusterMirror.update(s, r.s);
        this.totals.sessions++;
        this.events.emit('session-start', s);
        return;
      }
      case 'update':
      case 'established': {
        const s = this.sessions.get(r.s.id);
        if (!s) return;
        ClusterMirror.update(s, r.s);
        if (r.t === 'established') this.events.emit('established', s);
        return;
      }
      case 'end': {
        const s = this.sessions.get(r.s.id);
        if (!s) return;
        ClusterMirror.update(s, r.s);
        this.end(s, r.s);
        return;
      }
      case 'access':
        this.events.emit('access', r.r);
        return;
      case 'refused':
        this.totals.refused++;
        this.events.emit('refused', r.r);
        return;
      case 'xfer':
        this.events.emit('xfer', r.r);
        return;
      case 'log-file':
        this.events.emit('log-file', r.r);
        return;
    }
  }

  private end(s: Session, f: Pick<SessionFigures, 'bytesUp' | 'bytesDown' | 'result' | 'endMs'>): void {
    s.bytesUp = f.bytesUp;
    s.bytesDown = f.bytesDown;
    s.result = f.result;
    s.endMs = f.endMs || Date.now();
    this.totals.bytesUp += s.bytesUp;
    this.totals.bytesDown += s.bytesDown;
    this.sessions.delete(s.id);
    this.owner.delete(s.id);
    this.events.emit('session-end', s);
  }

  /** A worker died: its live sessions are lost (counted with what they had moved). */
  workerGone(worker: Worker): void {
    this.caches.delete(worker);
    const n = this.natives.get(worker);
    if (n) {
      this.nativeGone.accepted += n.accepted;
      this.nativeGone.handedOff += n.handedOff;
      this.nativeGone.remembered += n.remembered;
      this.nativeGone.hits += n.hits ?? 0;
      this.natives.delete(worker);
    }
    for (const [id, o] of [...this.owner]) {
      if (o.worker !== worker) continue;
      const s = this.sessions.get(id);
      if (s) this.end(s, { bytesUp: s.live![0]!, bytesDown: s.live![1]!, result: 'worker-exited', endMs: Date.now() });
    }
  }

  /** The native accept path's figures over all workers (counters summed, with those of workers that died). */
  nativeStats(): NativeDoorStats {
    const sum = { ...this.nativeGone };
    for (const n of this.natives.values()) {
      sum.listeners += n.listeners;
      sum.handshakes += n.handshakes;
      sum.accepted += n.accepted;
      sum.handedOff += n.handedOff;
      sum.remembered += n.remembered;
      sum.hits += n.hits ?? 0;
    }
    return sum;
  }

  /**
   * The cache's figures: the store is one (entries and bytes as the latest report gives them), the
   * memory tiers and the stores in progress are each worker's (summed). Null without a cache.
   */
  cacheStats(): CacheStats | null {
    let latest: { at: number; stats: CacheStats } | null = null;
    let writers = 0;
    let writingBytes = 0;
    let memEntries = 0;
    let memBytes = 0;
    let memMaxBytes = 0;
    for (const c of this.caches.values()) {
      if (!latest || c.at > latest.at) latest = c;
      writers += c.stats.writers;
      writingBytes += c.stats.writingBytes;
      memEntries += c.stats.memEntries;
      memBytes += c.stats.memBytes;
      memMaxBytes += c.stats.memMaxBytes;
    }
    if (!latest) return null;
    return { ...latest.stats, writers, writingBytes, memEntries, memBytes, memMaxBytes };
  }
}
