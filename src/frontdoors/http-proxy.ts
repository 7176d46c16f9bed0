/**
 * The HTTP proxy front door: absolute-form requests (`GET http://host/path`, RFC 9112 §3.2.2) and
 * CONNECT (`CONNECT host:443`, RFC 9110 §9.3.6), parsed by Node's own HTTP server (llhttp), which
 * handles keep-alive, chunking and pipelining. The door checks `Proxy-Authorization: Basic` on
 * every request, hands absolute-form requests to the pipeline's `forwardHttp`, and turns CONNECT
 * into a `Tunnel`. It never dials.
 */
import http, { type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Accounts, HostPort } from '../config/types.js';
import { replyFor, type ProxyErrorCode } from '../core/errors.js';
import type { Session } from '../core/session.js';
import type { Tunnel } from '../core/tunnel.js';
import type { AccessRecord } from '../observe/events.js';
import type { DoorContext, DoorHandler } from './door.js';
import { socketBytes } from '../net/splice.js';
import { prepareShaping } from '../net/shaped-socket.js';
import { isPacPath, PAC_CONTENT_TYPE, servePac } from './pac.js';
import { parseAuthority, parseUrl } from '../http1/authority.js';

/** Largest request head accepted; a larger one gets 431 (RFC 6585 §5) and the connection closes. */
export const MAX_HEADER_BYTES = 64 * 1024;
/**
 * Node's field-count limit, set so that only the byte limit binds (the shortest field line is 4
 * bytes): Node's default count cuts a head of about 1,000 fields (issue 13, finding 10).
 */
const MAX_HEADER_FIELDS = MAX_HEADER_BYTES / 4;
/** How long an idle keep-alive client connection is kept between requests. */
const KEEP_ALIVE_TIMEOUT_MS = 5_000;
export const PROXY_REALM = 'sockstap';

/** What the door keeps about one client connection. */
interface ConnectionState {
  session: Session;
  ctx: DoorContext;
  /** Requests (and CONNECTs) whose exchange has not finished. */
  inFlight: number;
  /** Closes a connection whose next request head does not arrive in time. */
  headTimer: NodeJS.Timeout | null;
}

const connections = new WeakMap<Socket, ConnectionState>();
const servers = new WeakMap<DoorContext, Server>();
const answeredWithError = new WeakSet<Socket>();

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

function page(status: number, message: string): { head: string; body: string } {
  const reason = http.STATUS_CODES[status] ?? 'Error';
  const body = `sockstap: ${status} ${reason}\n${message}\n`;
  return { head: `HTTP/1.1 ${status} ${reason}`, body };
}

function armHeadTimer(socket: Socket, state: ConnectionState): void {
  if (state.headTimer) clearTimeout(state.headTimer);
  const ms = state.ctx.config().timeouts.handshake;
  state.headTimer = setTimeout(() => {
    state.headTimer = null;
    if (state.inFlight > 0 || socket.destroyed) return;
    state.ctx.log.info('http request head not received in time', {
      session: state.session.id,
      client: state.session.clientLabel,
      ms,
    });
    socket.destroy();
  }, ms);
  state.headTimer.unref();
}

function disarmHeadTimer(state: ConnectionState): void {
  if (state.headTimer) clearTimeout(state.headTimer);
  state.headTimer = null;
}

/** Counts a request, sets the session's view of it, and returns the connection state. */
function beginRequest(req: IncomingMessage, state: ConnectionState, dst: HostPort | null): void {
  const { session } = state;
  disarmHeadTimer(state);
  state.inFlight++;
  if (!session.dst && dst) session.dst = dst;
  const section = (session.sections.http ??= { requests: 0 }) as { requests: number };
  section.requests++;
  if (session.command === null) session.command = req.method === 'CONNECT' ? 'connect' : 'http';
}

function endRequest(socket: Socket, state: ConnectionState): void {
  state.inFlight = Math.max(0, state.inFlight - 1);
  if (state.inFlight === 0 && !socket.destroyed) armHeadTimer(socket, state);
}

function emitAccess(
  state: ConnectionState,
  req: IncomingMessage,
  fields: Pick<AccessRecord, 'resultCode' | 'status' | 'bytes' | 'url' | 'hierarchy' | 'contentType'>,
  started: number,
): void {
  const now = Date.now();
  const record: AccessRecord = {
    time: now,
    elapsedMs: now - started,
    clientAddress: state.session.clientAddress,
    method: req.method ?? '-',
    user: state.session.user,
    httpVersion: req.httpVersion,
    sessionId: state.session.id,
    ...fields,
  };
  const referer = req.headers.referer;
  const userAgent = req.headers['user-agent'];
  if (referer) record.referer = referer;
  if (userAgent) record.userAgent = userAgent;
  state.ctx.events.emit('access', record);
}

/** A door-made reply to a non-CONNECT request (400 not a proxy request, 407), recorded in access.log. */
function replyToRequest(
  state: ConnectionState,
  req: IncomingMessage,
  res: ServerResponse,
  status: number,
  message: string,
  resultCode: string,
): void {
  const started = Date.now();
  const { head, body } = page(status, message);
  const headers: Record<string, string | number> = {
    'Content-Type': 'text/plain; charset=utf-8',
    'Content-Length': Buffer.byteLength(body),
    'Cache-Control': 'no-store',
  };
  if (status === 407) headers['Proxy-Authenticate'] = `Basic realm="${PROXY_REALM}"`;
  // An unread request body would have to be drained first: close instead.
  if (!req.complete) headers.Connection = 'close';
  res.writeHead(status, http.STATUS_CODES[status], headers);
  res.end(req.method === 'HEAD' ? undefined : body);
  // `_header` is Node's serialized response head: not in the typings, stable since Node 0.x, and
  // the exact measure of what the head cost on the wire.
  const written = (res as unknown as { _header?: string | null })._header;
  const headBytes = typeof written === 'string' ? Buffer.byteLength(written, 'latin1') : Buffer.byteLength(head);
  const bytes = headBytes + (req.method === 'HEAD' ? 0 : Buffer.byteLength(body));
  emitAccess(state, req, { resultCode, status, bytes, url: req.url ?? '-', hierarchy: 'HIER_NONE/-', contentType: 'text/plain' }, started);
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

function onRequest(req: IncomingMessage, res: ServerResponse): void {
  const socket = req.socket;
  const state = connections.get(socket);
  if (!state) {
    res.destroy();
    return;
  }
  const target = req.url ?? '';
  // http:// is forwarded; ftp:// is fetched by sockstap's own FTP client (taps/ftp/url.ts).
  const isAbsolute = /^(http|ftp):\/\//i.test(target);
  const url = isAbsolute ? parseUrl(target) : null;
  const dst = url ? { host: url.host, port: url.port } : null;
  beginRequest(req, state, dst);
  res.once('close', () => endRequest(socket, state));
  const { session, ctx } = state;
  if (!session.frontProtocol) session.frontProtocol = 'http';

  if (!isAbsolute && isPacPath(target)) {
    // The PAC file (frontdoors/pac.ts): browsers fetch it without proxy credentials, so it is
    // served before the 407 check and before any MOUNT.
    const started = Date.now();
    const listeners = ctx.listeners?.() ?? [{ door: ctx.listen.door, host: ctx.listen.host, port: socket.localPort ?? ctx.listen.port }];
    const bytes = servePac(req, res, ctx.config(), listeners);
    const url = `http://${req.headers.host ?? socket.localAddress ?? '-'}${target}`;
    emitAccess(state, req, { resultCode: 'TCP_MISS', status: res.statusCode, bytes, url, hierarchy: 'HIER_NONE/-', contentType: PAC_CONTENT_TYPE }, started);
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
      replyToRequest(state!, req, res, 407, 'This proxy needs a user name and password (Proxy-Authorization: Basic).', 'TCP_DENIED');
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
      replyToRequest(state!, req, res, 400, message, 'TAG_NONE');
      return;
    }
    // What the dashboard and sessions.jsonl call this session: the protocol of its requests.
    if (session.proto === 'raw') session.proto = url?.scheme === 'ftp' ? 'ftp' : 'http';
    ctx.sink.forwardHttp(req, res, session);
  }
}

/**
 * Ends a client connection after a final error reply without losing the reply: the client may
 * still be sending (a CONNECT payload, the rest of an oversized head), and closing a socket with
 * unread input resets it, which can destroy our reply before the client reads it. So the input is
 * read and dropped until the client closes, for at most `graceMs`.
 */
function closeAfterReply(socket: Socket, graceMs: number): void {
  socket.removeAllListeners('data');
  socket.on('data', () => {});
  socket.resume();
  const timer = setTimeout(() => socket.destroy(), graceMs);
  timer.unref();
  socket.once('close', () => clearTimeout(timer));
}

function onConnect(req: IncomingMessage, socket: Socket, head: Buffer): void {
  const state = connections.get(socket);
  if (!state) {
    socket.destroy();
    return;
  }
  const started = Date.now();
  const { session, ctx } = state;
  const dst = parseAuthority(req.url ?? '');
  beginRequest(req, state, dst);
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
    const { head: statusLine, body } = page(status, message);
    const extra = code === 'EAUTH' ? `Proxy-Authenticate: Basic realm="${PROXY_REALM}"\r\n` : '';
    // After a non-2xx answer to CONNECT the connection closes after the empty line (RFC 9110 §9.3.6).
    closeAfterReply(socket, ctx.config().timeouts.handshake);
    socket.end(
      `${statusLine}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\n` +
        `Cache-Control: no-store\r\n${extra}Connection: close\r\n\r\n${body}`,
    );
  };
  const finish = (): void => {
    const hierarchy =
      status === 200 && session.dst ? session.hierarchy() : 'HIER_NONE/-';
    emitAccess(state, req, { resultCode, status, bytes: socketBytes(socket).written, url, hierarchy, contentType: '-' }, started);
    endRequest(socket, state);
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

/**
 * Node's server writes a bare status on parse errors; we answer with a readable page and log it
 * the way Squid logs unparsable requests (`NONE/400 ... NONE error:invalid-request`).
 */
function onClientError(err: NodeJS.ErrnoException, socket: Socket): void {
  const state = connections.get(socket);
  // Node may report a broken connection more than once; one answer is enough.
  if (answeredWithError.has(socket)) return;
  answeredWithError.add(socket);
  // A response already on its way cannot be followed by an error reply on the same connection.
  if (!socket.writable || (state && state.inFlight > 0)) {
    socket.destroy();
    return;
  }
  let status = 400;
  let message = 'The request could not be parsed as HTTP.';
  let url = 'error:invalid-request';
  if (err.code === 'HPE_HEADER_OVERFLOW') {
    status = 431;
    message = `The request head is larger than ${MAX_HEADER_BYTES} bytes.`;
    url = 'error:request-too-large';
  } else if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') {
    status = 408;
    message = 'The request did not arrive in time.';
    url = 'error:request-timeout';
  } else if (err.code === 'ECONNRESET' || err.code === 'EPIPE') {
    socket.destroy();
    return;
  }
  const { head, body } = page(status, message);
  closeAfterReply(socket, state ? state.ctx.config().timeouts.handshake : KEEP_ALIVE_TIMEOUT_MS);
  const reply =
    `${head}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\n` +
    `Connection: close\r\n\r\n${body}`;
  socket.end(reply);
  if (state) {
    const now = Date.now();
    state.ctx.events.emit('access', {
      time: now,
      elapsedMs: 0,
      clientAddress: state.session.clientAddress,
      resultCode: 'NONE',
      status,
      bytes: Buffer.byteLength(reply),
      method: 'NONE',
      url,
      user: state.session.user,
      hierarchy: 'HIER_NONE/-',
      contentType: '-',
      sessionId: state.session.id,
    });
    state.ctx.log.info('bad http request', { session: state.session.id, client: state.session.clientLabel, status, code: err.code });
  }
}

function serverFor(ctx: DoorContext): Server {
  let server = servers.get(ctx);
  if (server) return server;
  server = http.createServer({
    maxHeaderSize: MAX_HEADER_BYTES,
    keepAlive: true,
    // The door's own head timer enforces the handshake timeout: Node only runs its
    // headersTimeout check on servers that listen themselves.
    headersTimeout: 0,
    requestTimeout: 0,
  });
  server.keepAliveTimeout = KEEP_ALIVE_TIMEOUT_MS;
  // Every field within MAX_HEADER_BYTES (a larger head gets 431), never Node's default count.
  server.maxHeadersCount = MAX_HEADER_FIELDS;
  server.on('request', onRequest);
  // With a listener, Node does not answer `Expect: 100-continue` itself: the forwarder relays the
  // origin's 100 or its final answer (RFC 9110 §10.1.1).
  server.on('checkContinue', onRequest);
  server.on('connect', onConnect);
  server.on('clientError', onClientError);
  servers.set(ctx, server);
  return server;
}

export const httpProxyDoor: DoorHandler = (socket: Socket, session: Session, ctx: DoorContext): void => {
  const state: ConnectionState = { session, ctx, inFlight: 0, headTimer: null };
  connections.set(socket, state);
  if (!session.frontProtocol) session.frontProtocol = 'http';
  armHeadTimer(socket, state);
  socket.once('close', () => disarmHeadTimer(state));
  // BANDWIDTH=/QUOTA= will shape this connection once its first request names the user: the
  // parser must read through the stream for that (net/shaped-socket.ts).
  const { limits } = ctx.config();
  if (limits.bandwidth.length > 0 || limits.quota.length > 0) prepareShaping(socket);
  serverFor(ctx).emit('connection', socket);
  // Node's parser reads straight from the socket handle; resuming also delivers bytes that an
  // earlier peek unshifted into the stream buffer, ahead of anything newer.
  socket.resume();
};
