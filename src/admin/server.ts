/**
 * The admin endpoint (ADMIN=HOST:PORT): a small live page and the JSON API of INTERFACE.md
 * (`/api/stats`, `/api/sessions`, `POST /api/sessions/ID/close`, `POST /api/reload`). Protected by
 * ADMINAUTH (HTTP Basic) when given. Reads the proxy's state; never touches a relayed socket.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Accounts, HostPort } from '../config/types.js';
import type { Session } from '../core/session.js';
import { formatHostPort } from '../core/session.js';
import { DASHBOARD_HTML } from './page.js';

export interface AdminSource {
  sessions: ReadonlyMap<string, Session>;
  totals: { sessions: number; refused: number; bytesUp: number; bytesDown: number };
  startedAt: number;
  listeners(): Array<{ door: string; host: string; port: number }>;
  /** Rebuild the configuration from its origin and swap it in; rejects with the reason. */
  reload(): Promise<void>;
}

export interface AdminServer {
  address: HostPort;
  url: string;
  close(): Promise<void>;
}

function liveSession(s: Session, now: number): Record<string, unknown> {
  // Live byte counts come from the sockets themselves: no per-chunk accounting needed.
  let up = s.bytesUp;
  let down = s.bytesDown;
  const [client] = s.sockets;
  if (client && up === 0 && down === 0) {
    up = client.bytesRead;
    down = client.bytesWritten;
  }
  return {
    id: s.id,
    start: new Date(s.startMs).toISOString(),
    ageMs: now - s.startMs,
    client: s.clientLabel,
    user: s.user,
    door: s.frontProtocol || s.door,
    dst: s.dst ? formatHostPort(s.dst.host, s.dst.port) : null,
    command: s.command,
    route: s.route,
    proto: s.proto,
    bytesUp: up,
    bytesDown: down,
  };
}

function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  const data = Buffer.from(JSON.stringify(body, null, 1) + '\n');
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': data.length, 'cache-control': 'no-store' });
  res.end(data);
}

function authorized(req: http.IncomingMessage, auth: Accounts | null): boolean {
  if (!auth) return true;
  const h = req.headers.authorization ?? '';
  const m = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(h);
  if (!m) return false;
  const decoded = Buffer.from(m[1]!, 'base64').toString('utf8');
  const i = decoded.indexOf(':');
  if (i < 0) return false;
  return auth.verify(decoded.slice(0, i), decoded.slice(i + 1));
}

export function startAdmin(address: HostPort, auth: Accounts | null, source: AdminSource): Promise<AdminServer> {
  const server = http.createServer((req, res) => {
    if (!authorized(req, auth)) {
      res.writeHead(401, { 'www-authenticate': 'Basic realm="sockstap admin"', 'content-type': 'text/plain' });
      res.end('authentication required\n');
      return;
    }
    const url = new URL(req.url ?? '/', 'http://admin');
    const now = Date.now();
    if (req.method === 'GET' && url.pathname === '/') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
      res.end(DASHBOARD_HTML);
      return;
    }
    if (req.method === 'GET' && url.pathname === '/api/stats') {
      let liveUp = 0;
      let liveDown = 0;
      for (const s of source.sessions.values()) {
        const l = liveSession(s, now);
        liveUp += l.bytesUp as number;
        liveDown += l.bytesDown as number;
      }
      sendJson(res, 200, {
        uptimeMs: now - source.startedAt,
        sessionsTotal: source.totals.sessions,
        sessionsLive: source.sessions.size,
        refused: source.totals.refused,
        bytesUp: source.totals.bytesUp + liveUp,
        bytesDown: source.totals.bytesDown + liveDown,
        listeners: source.listeners(),
        rssBytes: process.memoryUsage.rss(),
      });
      return;
    }
    if (req.method === 'GET' && url.pathname === '/api/sessions') {
      sendJson(res, 200, [...source.sessions.values()].map((s) => liveSession(s, now)));
      return;
    }
    const close = /^\/api\/sessions\/([^/]+)\/close$/.exec(url.pathname);
    if (req.method === 'POST' && close) {
      const s = source.sessions.get(decodeURIComponent(close[1]!));
      if (!s) return sendJson(res, 404, { error: 'no such live session' });
      s.close('closed-by-admin');
      return sendJson(res, 200, { closed: s.id });
    }
    if (req.method === 'POST' && url.pathname === '/api/reload') {
      source.reload().then(
        () => sendJson(res, 200, { reloaded: true }),
        (err: unknown) => sendJson(res, 400, { reloaded: false, error: err instanceof Error ? err.message : String(err) }),
      );
      return;
    }
    sendJson(res, 404, { error: 'not found' });
  });
  server.on('clientError', (_err, socket) => socket.destroy());
  return new Promise((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(new Error(`cannot listen on ${formatHostPort(address.host, address.port)} (admin): ${err.code === 'EADDRINUSE' ? 'address already in use' : err.message}`)),
    );
    server.listen(address.port, address.host, () => {
      const a = server.address() as AddressInfo;
      resolve({
        address: { host: a.address, port: a.port },
        url: `http://${formatHostPort(a.address, a.port)}/`,
        close: () =>
          new Promise<void>((r) => {
            server.closeAllConnections();
            server.close(() => r());
          }),
      });
    });
  });
}
