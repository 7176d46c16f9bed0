/**
 * The admin endpoint (ADMIN=HOST:PORT): the live dashboard (`GET /`), Prometheus metrics
 * (`GET /metrics`), the JSON API of INTERFACE.md (`/api/stats`, `/api/sessions`,
 * `POST /api/sessions/ID/close`, `POST /api/reload`, `/api/quotas`) and a Server-Sent Events stream
 * (`GET /api/events`, one snapshot a second) that the dashboard lives on. Everything is behind
 * ADMINAUTH (HTTP Basic) when given. It reads the proxy's state and closes sessions on request; it
 * never touches a relayed byte, and its once-a-second work is one pass over the live sessions.
 *
 * Hardening (issue 13 item 5): a request whose `Host` names anything but the admin's own address
 * (or `localhost`) is refused 421, so a DNS-rebound name cannot reach it from a browser; every
 * POST needs the ADMINAUTH credentials or the STATEDIR/admin.token token as a Bearer credential
 * (admin/token.ts); connections are bounded per source and overall, and a connection that sends
 * no complete head in time is closed, while a new connection over a bound evicts its source's
 * oldest idle one, so idle sockets cannot lock the admin out.
 */
import http from 'node:http';
import { isIP, type AddressInfo, type Socket } from 'node:net';
import { hostname, networkInterfaces } from 'node:os';
import ipaddr from 'ipaddr.js';
import type { HttpCache } from '../cache/http-cache.js';
import type { NativeDoorStats } from '../native/door.js';
import type { Accounts, Config, HostPort } from '../config/types.js';
import { isPacPath, servePac } from '../frontdoors/pac.js';
import type { Session } from '../core/session.js';
import { formatHostPort } from '../core/session.js';
import type { LogFileRecord, ProxyEvents } from '../observe/events.js';
import { createMetrics, type ProxyMetrics } from '../observe/metrics.js';
import { figuresObject, ProxyStats, type Figures, type LiveSession, type ThroughputPoint } from '../observe/stats.js';
import { DASHBOARD_HTML } from './page.js';
import { bearerMatches } from './token.js';
import type { UpstreamHealthTable } from '../upstream/pool.js';

/** One quota's use, as `GET /api/quotas` returns it (the quota service provides the list). */
export interface QuotaUse {
  /** what the quota covers: "user:alice", "src:10.0.0.0/8", "door:1080", "all" */
  scope: string;
  /** "hour", "day", "week", "month" (optionally "rolling-day" etc.) */
  period: string;
  direction: 'up' | 'down' | 'both';
  limitBytes: number;
  usedBytes: number;
}

export interface AdminSource {
  sessions: ReadonlyMap<string, Session>;
  totals: { sessions: number; refused: number; bytesUp: number; bytesDown: number };
  startedAt: number;
  events: ProxyEvents;
  listeners(): Array<{ door: string; host: string; port: number }>;
  /** Rebuild the configuration from its origin and swap it in; rejects with the reason. */
  reload(): Promise<void>;
  /** The HTTP cache in use, if any. */
  cache?(): Pick<HttpCache, 'stats'> | null;
  /** The native accept path's figures, when not this process's (WORKERS=N: the workers' sum). */
  native?(): NativeDoorStats;
  /** The configuration in force, for the PAC file (`GET /proxy.pac`); without it: 404. */
  config?(): Config;
  /** Quota use now; without it /api/quotas answers []. */
  quotas?(): QuotaUse[] | Promise<QuotaUse[]>;
  /** The instance's upstream health, for /metrics; without it no upstream figures. */
  upstreams?: UpstreamHealthTable;
}

export interface AdminServer {
  address: HostPort;
  url: string;
  /** The statistics behind the API, for tests and the CLI. */
  stats: ProxyStats;
  metrics: ProxyMetrics;
  close(): Promise<void>;
}

/** What guards the admin beyond ADMINAUTH. */
export interface AdminGuard {
  /** The STATEDIR/admin.token secret: a Bearer credential for every request. */
  token?: string;
  /** Names besides the bound address and `localhost` that `Host` may give (ADMIN=NAME:PORT). */
  names?: readonly string[];
}

/** Open admin connections at most, in all and from one source address. */
export const MAX_ADMIN_CONNECTIONS = 64;
export const MAX_ADMIN_PER_SOURCE = 32;
/** A request head must be complete this long after the connection opened (or the last response). */
export const ADMIN_HEAD_TIMEOUT_MS = 10_000;

/** At most this many dashboards (SSE streams) at once; more get 503. */
export const MAX_EVENT_CLIENTS = 16;
/** Live sessions one snapshot carries (the busiest ones); /api/sessions lists them all. */
export const SNAPSHOT_SESSIONS = 200;
const TOP_ROWS = 10;

function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  const data = Buffer.from(JSON.stringify(body, null, 1) + '\n');
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': data.length, 'cache-control': 'no-store' });
  res.end(data);
}

/** ADMINAUTH's Basic credentials, when they are given and right (an AUTHORIZER=-cmd helper answers later). */
function basicAuthorized(req: http.IncomingMessage, auth: Accounts | null): boolean | Promise<boolean> {
  if (!auth) return false;
  const h = req.headers.authorization ?? '';
  const m = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(h);
  if (!m) return false;
  const decoded = Buffer.from(m[1]!, 'base64').toString('utf8');
  const i = decoded.indexOf(':');
  if (i < 0) return false;
  return auth.verify(decoded.slice(0, i), decoded.slice(i + 1));
}

/** The host part of a Host header value, lower case, without brackets; null when malformed. */
function hostOfHeader(value: string): { host: string; port: number | null } | null {
  const m = /^(\[[0-9A-Fa-f:.]+\]|[^:\[\]]+)(?::(\d{1,5}))?$/.exec(value.trim());
  if (!m) return null;
  let host = m[1]!.toLowerCase();
  if (host.startsWith('[')) host = host.slice(1, -1);
  if (host.endsWith('.')) host = host.slice(0, -1);
  return { host, port: m[2] !== undefined ? Number(m[2]) : null };
}

/** The host's own addresses, canonical (for an admin bound to a wildcard address). */
function ownInterfaceAddresses(): Set<string> {
  const set = new Set<string>();
  for (const list of Object.values(networkInterfaces())) {
    for (const info of list ?? []) if (ipaddr.isValid(info.address)) set.add(ipaddr.process(info.address).toString());
  }
  return set;
}

/**
 * Whether `Host` names the admin itself: `localhost`, the bound address (any address of this host
 * when bound to a wildcard), a name ADMIN= gave or this host's name (os.hostname()); with the
 * bound port when it names one. No Host at all (HTTP/1.0) is not what a browser sends, so it
 * passes.
 */
function hostNamesAdmin(value: string | undefined, bound: HostPort, names: readonly string[]): boolean {
  if (value === undefined) return true;
  const h = hostOfHeader(value);
  if (!h) return false;
  if (h.port !== null && h.port !== bound.port) return false;
  if (h.host === 'localhost' || names.includes(h.host)) return true;
  if (isIP(h.host) === 0) return false;
  const asked = ipaddr.process(h.host);
  const b = ipaddr.process(bound.host);
  if (b.range() === 'unspecified') return asked.range() === 'loopback' || ownInterfaceAddresses().has(asked.toString());
  return asked.toString() === b.toString();
}

/**
 * A state-changing request from a browser must come from this page: browsers send Origin on every
 * POST, so a form or script on another site (riding on cached Basic credentials) is refused.
 */
function sameOrigin(req: http.IncomingMessage): boolean {
  const origin = req.headers.origin;
  if (origin === undefined) return true;
  try {
    return new URL(origin).host === req.headers.host;
  } catch {
    return false;
  }
}

type DoorFigures = Figures & { live: number };

function withLive(map: ReadonlyMap<string, Figures>, live: Map<string, number>): Record<string, DoorFigures> {
  const out: Record<string, DoorFigures> = {};
  for (const [k, f] of Object.entries(figuresObject(map))) out[k] = { ...f, live: live.get(k) ?? 0 };
  for (const [k, n] of live) out[k] ??= { sessions: 0, bytesUp: 0, bytesDown: 0, live: n };
  return out;
}

export function startAdmin(address: HostPort, auth: Accounts | null, source: AdminSource, guard: AdminGuard = {}): Promise<AdminServer> {
  const stats = new ProxyStats({ sessions: source.sessions, events: source.events });
  const metrics = createMetrics({
    stats,
    events: source.events,
    cache: () => source.cache?.() ?? null,
    ...(source.upstreams ? { upstreams: source.upstreams } : {}),
    ...(source.native ? { native: source.native } : {}),
  });
  const streams = new Set<http.ServerResponse>();
  // Log files that cannot be written now (observe/log.ts retries them): the dashboard says so.
  const failingLogs = new Map<string, string>();
  const onLogFile = (r: LogFileRecord): void => {
    if (r.event === 'error') failingLogs.set(r.file, r.code ?? 'EIO');
    else if (r.event === 'recovered') failingLogs.delete(r.file);
  };
  source.events.on('log-file', onLogFile);

  function statsBody(now: number): Record<string, unknown> {
    stats.sample();
    const liveDoors = new Map<string, number>();
    const liveProtos = new Map<string, number>();
    for (const r of stats.liveByDoorProto()) {
      liveDoors.set(r.door, (liveDoors.get(r.door) ?? 0) + r.count);
      liveProtos.set(r.proto, (liveProtos.get(r.proto) ?? 0) + r.count);
    }
    const latest = stats.latest();
    const cache = source.cache?.() ?? null;
    return {
      uptimeMs: now - source.startedAt,
      startedAt: new Date(source.startedAt).toISOString(),
      sessionsTotal: source.totals.sessions,
      sessionsLive: source.sessions.size,
      refused: stats.totalRefusals(),
      errors: stats.totalErrors(),
      bytesUp: stats.bytesUp,
      bytesDown: stats.bytesDown,
      throughput: { up: latest?.up ?? 0, down: latest?.down ?? 0 },
      doors: withLive(stats.byDoor, liveDoors),
      protocols: withLive(stats.byProto, liveProtos),
      refusalsByCode: Object.fromEntries([...stats.refusals.values()].reduce((m, r) => m.set(r.code, (m.get(r.code) ?? 0) + r.count), new Map<string, number>())),
      errorsByCode: Object.fromEntries(stats.errors),
      sniffOutcomes: Object.fromEntries(stats.sniffOutcomes),
      topDestinations: stats.destinations.top(TOP_ROWS),
      topUsers: stats.users.top(TOP_ROWS),
      http: stats.http(),
      cache: cache ? cache.stats() : null,
      listeners: source.listeners(),
      logFilesFailing: [...failingLogs].map(([file, code]) => ({ file, code })),
      rssBytes: process.memoryUsage.rss(),
    };
  }

  function liveSessions(now: number): LiveSession[] {
    return [...source.sessions.values()].map((s) => stats.liveSession(s, now));
  }

  /** The busiest SNAPSHOT_SESSIONS live sessions, oldest first (rows stay put on the page). */
  function snapshotSessions(now: number): LiveSession[] {
    let rows = liveSessions(now);
    if (rows.length > SNAPSHOT_SESSIONS) {
      rows = rows.sort((a, b) => b.bytesUp + b.bytesDown - (a.bytesUp + a.bytesDown)).slice(0, SNAPSHOT_SESSIONS);
    }
    return rows.sort((a, b) => b.ageMs - a.ageMs);
  }

  function snapshotEvent(): string {
    const now = Date.now();
    const body = {
      time: now,
      stats: statsBody(now),
      sessions: snapshotSessions(now),
      point: stats.latest(),
    };
    return `event: snapshot\ndata: ${JSON.stringify(body)}\n\n`;
  }

  function historyEvent(points: ThroughputPoint[]): string {
    return `event: history\ndata: ${JSON.stringify(points)}\n\n`;
  }

  // One snapshot a second, built once for all streams. A stream that cannot keep up (its socket
  // buffer still full) skips snapshots rather than growing our memory.
  stats.onTick = () => {
    if (streams.size === 0) return;
    const data = snapshotEvent();
    for (const res of streams) if (!res.writableNeedDrain) res.write(data);
  };

  function openStream(req: http.IncomingMessage, res: http.ServerResponse): void {
    if (streams.size >= MAX_EVENT_CLIENTS) {
      res.writeHead(503, { 'content-type': 'text/plain; charset=utf-8', 'retry-after': '10' });
      res.end(`too many dashboards open (at most ${MAX_EVENT_CLIENTS})\n`);
      return;
    }
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    });
    req.socket.setNoDelay(true);
    streams.add(res);
    res.once('close', () => streams.delete(res));
    res.write(`retry: 2000\n\n${historyEvent(stats.throughput())}${snapshotEvent()}`);
  }

  async function quotas(res: http.ServerResponse): Promise<void> {
    // No quota service: an empty list (the page says "no quotas configured"), not a 404 the
    // browser would log as an error.
    if (!source.quotas) return sendJson(res, 200, []);
    try {
      sendJson(res, 200, await source.quotas());
    } catch (err) {
      sendJson(res, 500, { error: err instanceof Error ? err.message : String(err) });
    }
  }

  async function serveMetrics(res: http.ServerResponse): Promise<void> {
    try {
      const text = await metrics.render();
      res.writeHead(200, { 'content-type': metrics.contentType, 'cache-control': 'no-store' });
      res.end(text);
    } catch (err) {
      res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' });
      res.end(`cannot collect metrics: ${err instanceof Error ? err.message : String(err)}\n`);
    }
  }

  const GET_PATHS = new Set(['/', '/index.html', '/metrics', '/api/stats', '/api/sessions', '/api/events', '/api/quotas']);

  const token = guard.token;
  // This host's own name too (a scraper's target `host:9180` for an admin on 0.0.0.0); exactly
  // that name, never a longer one that someone else's DNS could answer.
  const names = [...(guard.names ?? []), hostname()].filter(Boolean).map((n) => n.toLowerCase().replace(/\.$/, ''));
  let bound: HostPort = address;

  const server = http.createServer({ headersTimeout: ADMIN_HEAD_TIMEOUT_MS, requestTimeout: 60_000, connectionsCheckingInterval: 1_000 }, (req, res) => {
    busy.add(req.socket);
    res.once('close', () => idleAgain(req.socket));
    if (!hostNamesAdmin(req.headers.host, bound, names)) {
      return sendJson(res, 421, { error: `Host ${JSON.stringify(req.headers.host ?? '')} does not name this admin server; use ${formatHostPort(bound.host, bound.port)} or localhost` });
    }
    // The PAC file is what browsers fetch before they know any credential: served without ADMINAUTH.
    if (source.config && isPacPath(req.url)) {
      servePac(req, res, source.config(), source.listeners());
      return;
    }
    const basic = basicAuthorized(req, auth);
    if (typeof basic === 'boolean') return handle(req, res, basic);
    basic.then(
      (yes) => handle(req, res, yes === true),
      () => handle(req, res, false),
    );
  });

  /** `basicOk`: ADMINAUTH's credentials were given and right. */
  function handle(req: http.IncomingMessage, res: http.ServerResponse, basicOk: boolean): void {
    const credentialed = basicOk || (token !== undefined && bearerMatches(req.headers.authorization, token));
    const method0 = req.method ?? 'GET';
    // A state-changing request (every POST): the ADMINAUTH credentials or the token, always.
    if (method0 !== 'GET' && method0 !== 'HEAD' && !credentialed) {
      req.resume();
      res.writeHead(401, {
        'www-authenticate': auth ? 'Basic realm="sockstap admin", charset="UTF-8"' : 'Bearer realm="sockstap admin"',
        'content-type': 'application/json; charset=utf-8',
        'cache-control': 'no-store',
      });
      res.end(JSON.stringify({ error: 'a state-changing request needs Authorization: Bearer TOKEN (the token in STATEDIR/admin.token) or the ADMINAUTH credentials' }) + '\n');
      return;
    }
    // A read (GET/HEAD): open without ADMINAUTH; with it, its credentials or the token.
    if (auth && !credentialed) {
      res.writeHead(401, { 'www-authenticate': 'Basic realm="sockstap admin", charset="UTF-8"', 'content-type': 'text/plain; charset=utf-8' });
      res.end('authentication required\n');
      return;
    }
    const url = new URL(req.url ?? '/', 'http://admin');
    const path = url.pathname;
    const method = req.method ?? 'GET';
    if (method === 'GET' || method === 'HEAD') {
      if (path === '/' || path === '/index.html') {
        res.writeHead(200, {
          'content-type': 'text/html; charset=utf-8',
          'cache-control': 'no-store',
          // Everything the page needs comes from here: no CDN, no third party.
          'content-security-policy': "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'",
          'x-content-type-options': 'nosniff',
        });
        res.end(method === 'HEAD' ? undefined : DASHBOARD_HTML);
        return;
      }
      if (path === '/metrics') return void serveMetrics(res);
      if (path === '/api/stats') return sendJson(res, 200, statsBody(Date.now()));
      if (path === '/api/sessions') return sendJson(res, 200, liveSessions(Date.now()));
      if (path === '/api/events') return openStream(req, res);
      if (path === '/api/quotas') return void quotas(res);
    }
    const close = /^\/api\/sessions\/([^/]+)\/close$/.exec(path);
    if (method === 'POST' && (close || path === '/api/reload')) {
      if (!sameOrigin(req)) return sendJson(res, 403, { error: 'cross-origin request refused' });
      // The body, if any, is not used; drain it so the connection can be reused.
      req.resume();
      if (close) {
        let id: string;
        try {
          id = decodeURIComponent(close[1]!);
        } catch {
          return sendJson(res, 400, { error: 'bad session id' });
        }
        const s = source.sessions.get(id);
        if (!s) return sendJson(res, 404, { error: 'no such live session' });
        s.close('closed-by-admin');
        return sendJson(res, 200, { closed: s.id });
      }
      source.reload().then(
        () => sendJson(res, 200, { reloaded: true }),
        (err: unknown) => sendJson(res, 400, { reloaded: false, error: err instanceof Error ? err.message : String(err) }),
      );
      return;
    }
    if (GET_PATHS.has(path) || close || path === '/api/reload') {
      res.setHeader('allow', close || path === '/api/reload' ? 'POST' : 'GET, HEAD');
      return sendJson(res, 405, { error: `method ${method} not allowed here` });
    }
    sendJson(res, 404, { error: 'not found' });
  }
  // A few dashboards and a scraper need little; a flood of admin clients must not eat the proxy's
  // fds, nor lock the admin out: over a bound, a new connection evicts the oldest idle one (of its
  // source first); only when every connection is busy is the new one refused.
  const open = new Map<Socket, string>();
  const busy = new Set<Socket>();
  const idleAgain = (socket: Socket): void => {
    busy.delete(socket);
    // Idle and back at the end of the eviction order.
    const src = open.get(socket);
    if (src !== undefined) {
      open.delete(socket);
      if (!socket.destroyed) open.set(socket, src);
    }
  };
  const evictIdle = (src: string | null): boolean => {
    for (const [s, from] of open) {
      if (busy.has(s) || (src !== null && from !== src)) continue;
      open.delete(s);
      s.destroy();
      return true;
    }
    return false;
  };
  server.on('connection', (socket: Socket) => {
    const src = socket.remoteAddress ?? '';
    let fromSrc = 0;
    for (const from of open.values()) if (from === src) fromSrc++;
    if ((fromSrc >= MAX_ADMIN_PER_SOURCE && !evictIdle(src)) || (open.size >= MAX_ADMIN_CONNECTIONS && !evictIdle(null))) {
      socket.destroy();
      return;
    }
    open.set(socket, src);
    socket.once('close', () => {
      open.delete(socket);
      busy.delete(socket);
    });
  });
  server.on('clientError', (_err, socket) => socket.destroy());

  const shutdown = (): void => {
    stats.close();
    metrics.close();
    source.events.off('log-file', onLogFile);
    for (const res of streams) res.end();
    streams.clear();
  };

  return new Promise((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      shutdown();
      reject(new Error(`cannot listen on ${formatHostPort(address.host, address.port)} (admin): ${err.code === 'EADDRINUSE' ? 'address already in use' : err.message}`));
    });
    server.listen(address.port, address.host, () => {
      const a = server.address() as AddressInfo;
      bound = { host: a.address, port: a.port };
      resolve({
        address: { host: a.address, port: a.port },
        url: `http://${formatHostPort(a.address, a.port)}/`,
        stats,
        metrics,
        close: () =>
          new Promise<void>((r) => {
            shutdown();
            server.closeAllConnections();
            server.close(() => r());
          }),
      });
    });
  });
}
