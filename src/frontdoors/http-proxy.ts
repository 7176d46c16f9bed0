/**
 * The HTTP proxy front door: absolute-form requests (`GET http://host/path`, RFC 9112 §3.2.2) and
 * CONNECT (`CONNECT host:443`, RFC 9110 §9.3.6), parsed by Node's own HTTP server (llhttp) made by
 * the HTTP/1 engine's factory (http1/server.ts: head limits, head timer, parse-error reply), one
 * per listener. The door checks `Proxy-Authorization: Basic` on
 * every request, hands absolute-form requests to the pipeline's `forwardHttp`, and turns CONNECT
 * into a `Tunnel`. It never dials.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Accounts, HostPort } from '../config/types.js';
import { replyFor, type ProxyErrorCode } from '../core/errors.js';
import type { Session } from '../core/session.js';
import type { Tunnel } from '../core/tunnel.js';
import type { DoorContext, DoorHandler } from './door.js';
import { socketBytes } from '../native/splice.js';
import { prepareShaping } from '../net/shaped-socket.js';
import { isPacPath, PAC_CONTENT_TYPE, servePac } from './pac.js';
import { parseAuthority, parseUrl } from '../http1/authority.js';
import { accessRecord } from '../http1/access.js';
import { errorPage, rawErrorPage, refuseRequest } from '../http1/error-page.js';
import { closeAfterReply, createInternalServer, Http1Connection, type InternalServer } from '../http1/server.js';

/** How long an idle keep-alive client connection is kept between requests. */
const KEEP_ALIVE_TIMEOUT_MS = 5_000;

/** One internal server per listener's door context (so per running instance). */
const servers = new WeakMap<DoorContext, InternalServer>();

/** The user and password of `Proxy-Authorization: Basic ...` (RFC 7617), or null. */
export function parseBasicCredentials(header: string | undefined): { user: string; password: string } | null {
  if (!header) return null;
  const m = /^\s*basic\s+([A-Za-z0-9+/=._~-]+)\s*$/i.exec(header);
  if (!m) return null;
  const decoded = Buffer.from(m[1]!, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return null;
  return { user: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

/**
 * Checks the request's credentials against the accounts. Returns the user, null when there are
 * no accounts to check, or false when the credentials are missing or wrong; a promise of the
 * answer when the accounts ask a helper (AUTHORIZER=-cmd{}), which fails closed.
 */
function authenticate(req: IncomingMessage, accounts: Accounts | null): string | null | false | Promise<string | false> {
  if (!accounts) return null;
  const creds = parseBasicCredentials(req.headers['proxy-authorization']);
  if (!creds) return false;
  const verdict = accounts.verify(creds.user, creds.password);
  if (typeof verdict === 'boolean') return verdict ? creds.user : false;
  return verdict.then(
    (ok) => (ok === true ? creds.user : false),
    () => false,
  );
}

/** Sets the session's view of a request. */
function noteRequest(req: IncomingMessage, session: Session, dst: HostPort | null): void {
  if (!session.dst && dst) session.dst = dst;
  const section = (session.sections.http ??= { requests: 0 }) as { requests: number };
  section.requests++;
  if (session.command === null) session.command = req.method === 'CONNECT' ? 'connect' : 'http';
}

/**
 * The virtual target of an origin-form request: the authority its Host field names or, without
 * one (HTTP/1.0), the address the client reached the door on. Null when Host is malformed.
 */
function reverseTarget(req: IncomingMessage, path: string): (HostPort & { path: string }) | null {
  const host = req.headers.host;
  if (host !== undefined) {
    const a = parseAuthority(host.trim(), 80);
    return a ? { host: a.host, port: a.port, path } : null;
  }
  const local = req.socket.localAddress;
  if (!local) return null;
  return { host: local.replace(/^::ffff:(?=\d+\.)/, ''), port: req.socket.localPort ?? 80, path };
}

function onRequest(req: IncomingMessage, res: ServerResponse, conn: Http1Connection, ctx: DoorContext): void {
  const socket = req.socket;
  const target = req.url ?? '';
  // http:// is forwarded; ftp:// is fetched by sockstap's own FTP client (taps/ftp/url.ts).
  const isAbsolute = /^(http|ftp):\/\//i.test(target);
  const url = isAbsolute ? parseUrl(target) : null;
  const dst = url ? { host: url.host, port: url.port } : null;
  const { session } = conn;
  noteRequest(req, session, dst);
  if (!session.frontProtocol) session.frontProtocol = 'http';

  if (!isAbsolute && isPacPath(target)) {
    // The PAC file (frontdoors/pac.ts): browsers fetch it without proxy credentials, so it is
    // served before the 407 check and before any MOUNT.
    const started = Date.now();
    const listeners = ctx.listeners?.() ?? [{ door: ctx.listen.door, host: ctx.listen.host, port: socket.localPort ?? ctx.listen.port }];
    const bytes = servePac(req, res, ctx.config(), listeners);
    const url = `http://${req.headers.host ?? socket.localAddress ?? '-'}${target}`;
    ctx.events.emit('access', accessRecord(req, session, started, { resultCode: 'TCP_MISS', status: res.statusCode, bytes, url, hierarchy: 'HIER_NONE/-', contentType: PAC_CONTENT_TYPE }));
    return;
  }

  const checked = authenticate(req, ctx.config().accounts);
  if (checked instanceof Promise) {
    checked.then(
      (user) => {
        if (!res.destroyed && !socket.destroyed) afterAuthentication(user);
      },
      () => res.destroy(),
    );
  } else afterAuthentication(checked);

  function afterAuthentication(user: string | null | false): void {
    if (user === false) {
      refuseRequest(req, res, session, ctx.events, 'EAUTH', 'This proxy needs a user name and password (Proxy-Authorization: Basic).');
      return;
    }
    if (user !== null) session.user = user;

    if (!isAbsolute && target.startsWith('/')) {
      // Origin-form (RFC 9112 §3.2.1): a reverse-proxy request, served when a MOUNT maps it.
      const virtual = reverseTarget(req, target);
      if (virtual && ctx.sink.reverseHttp?.(req, res, session, virtual)) return;
    }
    if (!isAbsolute || !dst) {
      const message = /^[a-z][a-z0-9+.-]*:\/\//i.test(target)
        ? `sockstap forwards http:// and ftp:// URLs only; use CONNECT for ${target.split(':', 1)[0]}.`
        : 'This is sockstap, an HTTP proxy: send the full URL (GET http://host/path) or CONNECT host:port.';
      refuseRequest(req, res, session, ctx.events, 'EPROTO', message);
      return;
    }
    // What the dashboard and sessions.jsonl call this session: the protocol of its requests.
    if (session.proto === 'raw') session.proto = url?.scheme === 'ftp' ? 'ftp' : 'http';
    ctx.sink.forwardHttp(req, res, session);
  }
}

function onConnect(req: IncomingMessage, socket: Socket, head: Buffer, conn: Http1Connection, ctx: DoorContext): void {
  const started = Date.now();
  const { session } = conn;
  const dst = parseAuthority(req.url ?? '');
  noteRequest(req, session, dst);
  // Node has detached its parser and listeners; from here the socket is ours (no keep-alive timer).
  socket.setTimeout(0);
  const url = req.url ?? '-';

  let replied = false;
  let status = 0;
  let resultCode = 'TCP_TUNNEL';
  const fail = (code: ProxyErrorCode, message: string, denied: boolean): void => {
    if (replied) return;
    replied = true;
    status = replyFor(code).http;
    if (denied) resultCode = 'TCP_DENIED';
    // After a non-2xx answer to CONNECT the connection closes after the empty line (RFC 9110 §9.3.6).
    closeAfterReply(socket, ctx.config().timeouts.handshake);
    socket.end(rawErrorPage(errorPage(status, message)));
  };
  const finish = (): void => {
    const hierarchy =
      status === 200 && session.dst ? session.hierarchy() : 'HIER_NONE/-';
    ctx.events.emit('access', accessRecord(req, session, started, { resultCode, status, bytes: socketBytes(socket).written, url, hierarchy, contentType: '-' }));
  };

  if (!session.frontProtocol || session.frontProtocol === 'http') session.frontProtocol = 'connect';
  session.command = 'connect';
  const checked = authenticate(req, ctx.config().accounts);
  if (checked instanceof Promise) {
    // Nothing may be read (and lost) while the helper answers.
    if (head.length > 0) socket.unshift(head);
    socket.pause();
    checked.then(
      (user) => {
        if (!socket.destroyed) afterAuthentication(user, Buffer.alloc(0));
      },
      () => socket.destroy(),
    );
  } else afterAuthentication(checked, head);

  function afterAuthentication(user: string | null | false, head: Buffer): void {
    if (user === false) {
      fail('EAUTH', 'This proxy needs a user name and password (Proxy-Authorization: Basic).', true);
      socket.once('close', finish);
      return;
    }
    if (user !== null) session.user = user;
    if (!dst) {
      fail('EPROTO', `CONNECT needs host:port (or [IPv6]:port), not "${url}".`, false);
      resultCode = 'TAG_NONE';
      socket.once('close', finish);
      return;
    }
    session.dst = dst;

    // Bytes the client sent right after the CONNECT head belong to the tunnel.
    if (head.length > 0) socket.unshift(head);
    socket.pause();

    const tunnel: Tunnel = {
      session,
      socket,
      command: 'connect',
      dst,
      tags: ['http', 'connect'],
      replySuccess: () => {
        if (replied) return;
        replied = true;
        status = 200;
        socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      },
      replyFailure: (code, message) => {
        fail(code, message, code === 'EDENIED' || code === 'EAUTH' || code === 'ELIMIT' || code.startsWith('EIDENT'));
      },
      noteFailure: (code) => {
        // 200 went out (a cache-first tunnel); the line says what became of it, as Squid's
        // _ABORTED tags do, with the status the failure would have had.
        status = replyFor(code).http;
        resultCode = 'TCP_TUNNEL_ABORTED';
      },
    };
    ctx.sink.handle(tunnel).then(
      () => {
        if (!replied) fail('EUPSTREAM', 'the tunnel ended before it was set up', false);
        finish();
      },
      (err: unknown) => {
        ctx.log.warn('CONNECT tunnel failed', {
          session: session.id,
          dst: url,
          error: err instanceof Error ? err.message : String(err),
        });
        if (!replied) fail('EUPSTREAM', 'internal error while setting up the tunnel', false);
        socket.destroy();
        finish();
      },
    );
  }
}

function serverFor(ctx: DoorContext): InternalServer {
  let server = servers.get(ctx);
  if (server) return server;
  server = createInternalServer({
    keepAliveTimeoutMs: KEEP_ALIVE_TIMEOUT_MS,
    request: (req, res, conn) => onRequest(req, res, conn, ctx),
    connect: (req, socket, head, conn) => onConnect(req, socket, head, conn, ctx),
  });
  servers.set(ctx, server);
  return server;
}

export const httpProxyDoor: DoorHandler = (socket: Socket, session: Session, ctx: DoorContext): void => {
  if (!session.frontProtocol) session.frontProtocol = 'http';
  // BANDWIDTH=/QUOTA= will shape this connection once its first request names the user: the
  // parser must read through the stream for that (net/shaped-socket.ts).
  const { limits } = ctx.config();
  if (limits.bandwidth.length > 0 || limits.quota.length > 0) prepareShaping(socket);
  serverFor(ctx).accept(
    new Http1Connection(socket, session, {
      events: ctx.events,
      log: ctx.log,
      handshakeMs: () => ctx.config().timeouts.handshake,
      headTimeoutLog: 'http request head not received in time',
      parseErrorLog: 'bad http request',
    }),
  );
};
