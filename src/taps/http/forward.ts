/**
 * The HTTP forwarding engine: the one code path every proxied HTTP request takes to its origin
 * (absolute-form requests of the HTTP door now; tapped HTTP and the cache later).
 *
 * It streams both bodies, keeps chunked framing working (Node's parser removes it on the way in and
 * Node's writer adds it on the way out), removes hop-by-hop fields and appends Via in both
 * directions (RFC 9110 §7.6), relays `100 Continue` (RFC 9110 §10.1.1), reuses origin connections
 * through a bounded keep-alive pool whose sockets come from the pipeline's dialer, and emits one
 * access record per request. A failure before the response head becomes a readable 502/504 page;
 * after it, the client connection is cut so the client sees the truncation.
 *
 * When the router sends a request to an HTTP upstream (`routes`), it goes there in absolute-form
 * (RFC 9112 §3.2.2) over connections pooled per upstream, with the upstream's
 * Proxy-Authorization, and a route that cannot be reached gives way to the next (docs/routing.md).
 */
import http, { type ClientRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { HostPort, Timeouts } from '../../config/types.js';
import { codeFromSystemError, ProxyError, replyFor, type ProxyErrorCode } from '../../core/errors.js';
import type { Session } from '../../core/session.js';
import type { AccessRecord, ProxyEvents } from '../../observe/events.js';
import type { Logger } from '../../observe/log.js';
import type { HeaderEdits } from '../../config/types.js';
import { targetAuthority } from '../../http1/authority.js';
import { appendVia, applyHeaderEdits, MAX_HEAD_BYTES, MAX_HEAD_FIELDS, mediaType, requestBodyKind, withoutHopByHop } from './headers.js';

export interface ForwardTarget {
  /** Origin host: a DNS name or an IP literal (IPv6 without brackets). */
  host: string;
  port: number;
  /** origin-form request target: path and query, "/" at least. */
  path: string;
}

/**
 * One route of a request through the router (upstream/router.ts `HttpRoute`): `absolute` — to the
 * HTTP proxy `proxy` in absolute-form over a connection `dial()` makes to that proxy; `origin` —
 * `dial()` reaches the origin through another chain and the request goes in origin-form.
 */
export interface ForwardRoute {
  /** What `session.route` says while this route is used. */
  route: string;
  form: 'absolute' | 'origin';
  key: string;
  proxy?: HostPort;
  /** Proxy-Authorization for the proxy (never logged). */
  authorization?: string;
  dial(): Promise<Socket>;
}

export interface ForwardOptions {
  session: Session;
  target: ForwardTarget;
  /** The pipeline's dialer (routing, upstream proxies); rejects with a ProxyError. */
  dial(dst: HostPort): Promise<Socket>;
  events: ProxyEvents;
  log: Logger;
  /** This proxy's Via entry, e.g. "1.1 sockstap". */
  via: string;
  timeouts: Timeouts;
  /**
   * Origin connections are reused only between requests with the same key, because the route a
   * dial takes may depend on the user and the source. Default: user and client address. The
   * pipeline may pass its route name to share connections more widely.
   */
  poolKey?: string;
  /** Squid hierarchy code of a forwarded response; default HIER_DIRECT, or FIRSTUP_PARENT when the session's route is not direct. */
  hierarchyCode?: string;
  /** The URL access.log names; default `http://authority/path` of the target. */
  url?: string;
  /** The URL the client asked for, when MOUNT rewrote it (access.log's `vurl=`). */
  mountedFrom?: string;
  /** Maps the response head's fields before the header rules edit it (MOUNT's Location back to the vURL). */
  mapResponseHead?(raw: string[]): void;
  /**
   * Host of the forwarded request: `target` (default) replaces it with the target's authority
   * (RFC 9112 §3.2.2, absolute-form and MOUNT); `keep` forwards the client's own Host (a tapped
   * tunnel: the origin-form request goes where the tunnel goes), the target's when there is none.
   */
  host?: 'target' | 'keep';
  /** Request fields to forward instead of `req.rawHeaders` (header rules, replaced conditionals). */
  rawHeaders?: readonly string[];
  /** Edits of the response head sent to the client (header rules). */
  responseEdits?: HeaderEdits;
  /**
   * Routes to try in order instead of `dial` (the router found an HTTP upstream for this request);
   * a route whose connection cannot be made gives way to the next, as `dialRoute()` does.
   */
  routes?: readonly ForwardRoute[];
  /** How the origin's response is used (the cache decides); default: relayed as TCP_MISS. */
  onResponseHead?(response: IncomingMessage): ResponsePlan | Promise<ResponsePlan>;
  /** Called once when the exchange is over, whatever the outcome (after the access record, if any). */
  onFinished?(): void;
}

/** Where the body of a relayed response also goes (a cache store). Exactly one of end/abort is called. */
export interface BodySink {
  write(chunk: Buffer): void;
  /** The whole body arrived. */
  end(): void;
  /** The body was cut or the client went away. */
  abort(): void;
}

/**
 * What to do with the origin's response: relay it (recorded with `resultCode`, the body also fed to
 * `sink`), or leave it to the caller (`taken`: the forwarder drains it, writes nothing to the
 * client and records nothing; the caller answers and records).
 */
export type ResponsePlan = { kind: 'relay'; resultCode: string; sink?: BodySink | null } | { kind: 'taken' };

/** Per origin (host, port, pool key): at most this many connections at once; more requests queue. */
const MAX_SOCKETS_PER_ORIGIN = 64;
/** Idle keep-alive connections kept per origin. */
const MAX_FREE_SOCKETS_PER_ORIGIN = 16;
/** All origin connections of the pool together. */
const MAX_TOTAL_SOCKETS = 4096;
/**
 * How long an idle origin connection is kept. Node shortens it to the origin's own
 * `Keep-Alive: timeout=N` hint, so we rarely reuse a connection the origin is closing.
 */
const FREE_SOCKET_TIMEOUT_MS = 15_000;

/** How a request of the pool reaches its origin; carried inside the request options. */
interface PoolRoute {
  dial(dst: HostPort): Promise<Socket>;
  key: string;
}

const ROUTE = Symbol('sockstap.forward.route');

/** Errors of making a pool connection (nothing of the request was sent): a next route may be tried. */
const dialFailures = new WeakSet<Error>();

type RoutedArgs = http.ClientRequestArgs & { [ROUTE]?: PoolRoute };

/**
 * RFC 9110 §9.2.2: the methods a client (and so a proxy) may send again after a failure without
 * changing the effect; only these are retried, and only without a body (the body has been
 * streamed away).
 */
const IDEMPOTENT_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);

/**
 * A keep-alive agent whose connections come from the pipeline's dialer instead of
 * `net.connect`, pooled per origin and route.
 */
class DialingAgent extends http.Agent {
  override createConnection(
    options: http.ClientRequestArgs,
    callback?: (err: Error | null, stream: Duplex) => void,
  ): Duplex | null | undefined {
    const route = (options as RoutedArgs)[ROUTE];
    const host = String(options.host ?? '');
    const port = Number(options.port);
    if (!callback) throw new Error('DialingAgent needs the callback form of createConnection');
    if (!route) {
      callback(new ProxyError('EUPSTREAM', 'request without a route reached the forwarding pool'), undefined as never);
      return undefined;
    }
    route.dial({ host, port }).then(
      (socket) => callback(null, socket),
      (err: unknown) => {
        const e = err instanceof Error ? err : new Error(String(err));
        dialFailures.add(e);
        // Node's oncreate() only reads the socket argument when err is null.
        callback(e, undefined as never);
      },
    );
    return undefined;
  }

  override getName(options?: http.ClientRequestArgs): string {
    const route = options ? (options as RoutedArgs)[ROUTE] : undefined;
    return `${super.getName(options)}|${route?.key ?? ''}`;
  }

  /**
   * A connection goes back to the pool only while both directions are open. Origin connections
   * are dialed with `allowHalfOpen` (the tunnel relay forwards a FIN), so an origin that closes
   * an idle keep-alive connection (Apache after 5 s, announcing no `timeout=`) leaves it
   * half-closed rather than closed: reused, the request would be written into a connection
   * nobody reads, and neither an answer nor an error would ever come.
   */
  override keepSocketAlive(socket: Socket): boolean {
    if (!reusable(socket)) return false;
    // Node's own decision (the origin's `Keep-Alive: timeout=` hint); typed void, returns a boolean.
    if (!(super.keepSocketAlive(socket) as unknown as boolean)) return false;
    socket.once('end', dropIdle);
    return true;
  }

  override reuseSocket(socket: Socket, req: ClientRequest): void {
    socket.removeListener('end', dropIdle);
    super.reuseSocket(socket, req);
  }
}

function reusable(socket: Socket): boolean {
  return !socket.destroyed && !socket.readableEnded && socket.readable && socket.writable && !socket.errored;
}

/**
 * The origin ended an idle pooled connection: closed and out of the pool at once, the way Node
 * removes a free connection that errors (`agentRemove`), so no request can pick it in between.
 */
function dropIdle(this: Socket): void {
  this.destroy();
  this.emit('agentRemove');
}

let pool = newPool();

/**
 * The retry of a request that met a closed pooled connection goes through this agent: it keeps
 * nothing, so the retry always gets a connection of its own, never another pooled one that the
 * origin may have closed at the same moment.
 */
const freshAgent = new DialingAgent({ keepAlive: false, maxTotalSockets: MAX_TOTAL_SOCKETS });

function newPool(): DialingAgent {
  return new DialingAgent({
    keepAlive: true,
    maxSockets: MAX_SOCKETS_PER_ORIGIN,
    maxFreeSockets: MAX_FREE_SOCKETS_PER_ORIGIN,
    maxTotalSockets: MAX_TOTAL_SOCKETS,
    timeout: FREE_SOCKET_TIMEOUT_MS,
    scheduling: 'lifo',
  });
}

/** Closes every pooled origin connection (shutdown, tests). Later requests open new ones. */
export function closeForwardPool(): void {
  const old = pool;
  pool = newPool();
  old.destroy();
}

/** Bytes of the response head Node wrote or queued (status line and fields). */
function headBytes(res: ServerResponse): number {
  // `_header` is Node's serialized response head; it is not in the typings but has been stable
  // since Node 0.x and is the only exact measure of what the head cost on the wire.
  const head = (res as unknown as { _header?: string | null })._header;
  return typeof head === 'string' ? Buffer.byteLength(head, 'latin1') : 0;
}

function baseRecord(req: IncomingMessage, session: Session, url: string): Omit<AccessRecord, 'time' | 'elapsedMs' | 'resultCode' | 'status' | 'bytes' | 'hierarchy' | 'contentType'> {
  const record: Omit<AccessRecord, 'time' | 'elapsedMs' | 'resultCode' | 'status' | 'bytes' | 'hierarchy' | 'contentType'> = {
    clientAddress: session.clientAddress,
    method: req.method ?? '-',
    url,
    user: session.user,
    httpVersion: req.httpVersion,
    sessionId: session.id,
  };
  const referer = req.headers.referer;
  const userAgent = req.headers['user-agent'];
  if (referer) record.referer = referer;
  if (userAgent) record.userAgent = userAgent;
  return record;
}

/**
 * Writes a proxy-generated error page (status from the one reply table) unless a response head
 * was already sent, in which case the client connection is cut. Returns the bytes written.
 */
function writeErrorPage(
  req: IncomingMessage,
  res: ServerResponse,
  status: number,
  message: string,
  extra: Record<string, string> = {},
): number {
  if (res.headersSent || res.destroyed) {
    res.destroy();
    return 0;
  }
  const reason = http.STATUS_CODES[status] ?? 'Error';
  const body = `sockstap: ${status} ${reason}\n${message}\n`;
  const headers: Record<string, string | number> = {
    'Content-Type': 'text/plain; charset=utf-8',
    'Content-Length': Buffer.byteLength(body),
    'Cache-Control': 'no-store',
    ...extra,
  };
  // A request body we never read would have to be drained before the next request: close instead.
  if (!req.complete) headers.Connection = 'close';
  res.writeHead(status, reason, headers);
  res.end(req.method === 'HEAD' ? undefined : body);
  return headBytes(res) + (req.method === 'HEAD' ? 0 : Buffer.byteLength(body));
}

/**
 * Squid's result code for a request the proxy answered itself: TCP_DENIED when policy or
 * authentication refused it, NONE (Squid's TAG_NONE) for a request it could not make sense of,
 * TCP_MISS when it tried the origin and failed.
 */
function refusalResultCode(code: ProxyErrorCode): string {
  switch (code) {
    case 'EDENIED':
    case 'EAUTH':
    case 'ELIMIT':
    case 'EIDENTUNREACH':
    case 'EIDENTMISMATCH':
    case 'EBINDPEER':
    case 'EQUOTA':
      return 'TCP_DENIED';
    case 'EPROTO':
    case 'ECMDNOTSUP':
    case 'EATYPNOTSUP':
      return 'TAG_NONE';
    default:
      return 'TCP_MISS';
  }
}

/**
 * Refuses a request with the reply of `code` (403 for EDENIED, 407 with a Basic challenge for
 * EAUTH, 502/504 for dial failures, ...) and records it as TCP_DENIED (policy and authentication)
 * or TCP_MISS (anything else) in access.log. For the pipeline when policy or the dialer says no.
 */
export function denyHttp(
  req: IncomingMessage,
  res: ServerResponse,
  session: Session,
  events: ProxyEvents,
  code: ProxyErrorCode,
  message: string,
  url: string = req.url ?? '-',
  mountedFrom?: string,
): void {
  const started = Date.now();
  const status = replyFor(code).http;
  const extra: Record<string, string> =
    code === 'EAUTH' ? { 'Proxy-Authenticate': 'Basic realm="sockstap"' } : {};
  const bytes = writeErrorPage(req, res, status, message, extra);
  events.emit('access', {
    ...baseRecord(req, session, url),
    ...(mountedFrom !== undefined ? { mountedFrom } : {}),
    time: Date.now(),
    elapsedMs: Date.now() - started,
    resultCode: refusalResultCode(code),
    status,
    bytes,
    hierarchy: 'HIER_NONE/-',
    contentType: 'text/plain',
  });
}

/**
 * Request options for one route of the router: absolute-form to an HTTP proxy (RFC 9112 §3.2.2)
 * over connections pooled per proxy and credentials, whatever the origin; or origin-form through
 * another chain, pooled per origin, route and `poolKey`.
 */
function upstreamArgs(upstream: ForwardRoute, target: ForwardTarget, authority: string, headers: string[], poolKey: string): RoutedArgs {
  const dial = (): Promise<Socket> => upstream.dial();
  if (upstream.form === 'origin' || !upstream.proxy) {
    return { host: target.host, port: target.port, path: target.path, headers, [ROUTE]: { dial, key: `${poolKey}|${upstream.key}` } };
  }
  // RFC 9112 §3.2.4: an OPTIONS * travels to a proxy as the bare authority.
  const path = target.path === '*' ? `http://${authority}` : `http://${authority}${target.path}`;
  const withAuth = upstream.authorization ? [...headers, 'Proxy-Authorization', upstream.authorization] : headers;
  return { host: upstream.proxy.host, port: upstream.proxy.port, path, headers: withAuth, [ROUTE]: { dial, key: upstream.key } };
}

/** Reset errors of a reused keep-alive connection that the origin closed just before our request. */
const STALE_CONNECTION_ERRORS = new Set(['ECONNRESET', 'EPIPE', 'ECONNABORTED']);

/**
 * Forwards one request to its origin and streams the answer back. Never throws; every outcome
 * (response, origin failure, client abort) ends in exactly one access record.
 */
export function forwardHttpRequest(req: IncomingMessage, res: ServerResponse, opts: ForwardOptions): void {
  const { session, target, log, events } = opts;
  const started = Date.now();
  const authority = targetAuthority(target);
  const url = opts.url ?? `http://${authority}${target.path}`;
  const method = req.method ?? 'GET';
  const bodyKind = requestBodyKind(req.headers);

  // Request head for the origin: hop-by-hop fields out (RFC 9110 §7.6.1), Host from the target
  // (RFC 9112 §3.2.2: a proxy replaces the Host of an absolute-form request) unless a tapped
  // tunnel keeps the client's own, Via appended.
  const headers = withoutHopByHop(opts.rawHeaders ?? req.rawHeaders);
  let host = authority;
  for (let i = headers.length - 2; i >= 0; i -= 2) {
    if (headers[i]!.toLowerCase() !== 'host') continue;
    if (opts.host === 'keep') host = headers[i + 1]!;
    headers.splice(i, 2);
  }
  headers.unshift('Host', host);
  // Transfer-Encoding is hop-by-hop: a body of unknown length is re-framed as chunked.
  if (bodyKind === 'chunked') headers.push('Transfer-Encoding', 'chunked');
  appendVia(headers, req.httpVersion, opts.via);

  const route: PoolRoute = {
    dial: opts.dial,
    key: opts.poolKey ?? `${session.user ?? ''}@${session.clientAddress}`,
  };
  let hierarchyCode = opts.hierarchyCode ?? (session.route === 'direct' ? 'HIER_DIRECT' : 'FIRSTUP_PARENT');
  const routes = opts.routes && opts.routes.length > 0 ? opts.routes : null;
  let attempt = 0;

  let recorded = false;
  let finished = false;
  let resultCode = 'TCP_MISS';
  let sink: BodySink | null = null;
  let bodyBytes = 0;
  let status = 0;
  let contentType = '';
  let peer = '';
  let proxyReq: ClientRequest | null = null;
  let proxyRes: IncomingMessage | null = null;
  let retried = false;
  /** Whether the origin sent any byte of an answer on the connection of the current attempt. */
  let answered: () => boolean = () => false;
  /** The connection handed to this attempt was already ended by the origin (closed unused). */
  let metEnded = false;

  const finish = (): void => {
    if (finished) return;
    finished = true;
    opts.onFinished?.();
  };
  /** The body will not complete: the sink (if any) is abandoned. */
  const dropSink = (): void => {
    const s = sink;
    sink = null;
    s?.abort();
  };
  const record = (code: string, bytes: number): void => {
    if (recorded) return;
    recorded = true;
    const now = Date.now();
    events.emit('access', {
      ...baseRecord(req, session, url),
      ...(opts.mountedFrom !== undefined ? { mountedFrom: opts.mountedFrom } : {}),
      time: now,
      elapsedMs: now - started,
      resultCode: code,
      status,
      bytes,
      hierarchy: peer ? `${hierarchyCode}/${peer}` : 'HIER_NONE/-',
      contentType,
    });
    finish();
  };

  const fail = (err: unknown): void => {
    if (recorded) return;
    const code = codeFromSystemError(err);
    const message = err instanceof Error ? err.message : String(err);
    dropSink();
    if (res.headersSent) {
      // The head is out: all we can do is cut the connection so the client sees the truncation.
      log.info('origin failed mid-response', { session: session.id, url, code });
      res.destroy();
      record(`${resultCode}_ABORTED`, headBytes(res) + bodyBytes);
      return;
    }
    status = replyFor(code).http;
    contentType = 'text/plain';
    log.info('origin request failed', { session: session.id, url, code, status });
    req.unpipe();
    const bytes = writeErrorPage(req, res, status, `${code}: ${message}`);
    record('TCP_MISS', bytes);
  };

  // The client went away (or its connection was closed) before the response finished.
  res.once('close', () => {
    if (recorded) return;
    proxyReq?.destroy();
    proxyRes?.destroy();
    dropSink();
    record(`${resultCode}_ABORTED`, headBytes(res) + bodyBytes);
  });
  req.once('error', () => proxyReq?.destroy());

  const send = (): void => {
    const upstream = routes?.[attempt];
    if (upstream) {
      session.route = upstream.route;
      hierarchyCode = opts.hierarchyCode ?? (upstream.route === 'direct' ? 'HIER_DIRECT' : 'FIRSTUP_PARENT');
    }
    let request: ClientRequest;
    try {
      request = http.request(
        upstream
          ? ({ ...upstreamArgs(upstream, target, authority, headers, route.key), agent: retried ? freshAgent : pool, method, setHost: false, maxHeaderSize: MAX_HEAD_BYTES } as RoutedArgs)
          : ({
              agent: retried ? freshAgent : pool,
              maxHeaderSize: MAX_HEAD_BYTES,
              host: target.host,
              port: target.port,
              method,
              path: target.path,
              headers,
              setHost: false,
              [ROUTE]: route,
            } as RoutedArgs),
      );
    } catch (err) {
      // Node validates method, path and fields before sending anything.
      fail(new ProxyError('EPROTO', `cannot forward this request: ${err instanceof Error ? err.message : String(err)}`));
      return;
    }
    proxyReq = request;
    // The response's fields, all of them within MAX_HEAD_BYTES (Node's client default keeps about
    // 1,000 and drops the rest without a word); read when the parser is attached to the socket.
    request.maxHeadersCount = MAX_HEAD_FIELDS;
    request.setTimeout(opts.timeouts.idle, () => {
      request.destroy(new ProxyError('ETIMEDOUT', `no answer from ${authority} within ${opts.timeouts.idle} ms`));
    });
    request.once('socket', (socket) => {
      const s = socket as Socket;
      const readBefore = s.bytesRead;
      answered = () => s.bytesRead > readBefore;
      // Node hands a freed connection straight to a queued request without asking the pool
      // (keepSocketAlive): one the origin has ended would take the request and never answer.
      if (s.readableEnded && !s.destroyed) {
        metEnded = true;
        s.destroy();
        return;
      }
      // A tunnel's pre-dialed server socket arrives paused (the pipeline peeked it); Node's client
      // has installed its reader by the time 'socket' is emitted, so nothing is lost by resuming.
      if (s.isPaused()) s.resume();
      const remember = (): void => {
        // Squid's hierarchy names the parent a request went to (FIRSTUP_PARENT/host).
        peer = upstream?.proxy?.host ?? s.remoteAddress ?? target.host;
      };
      if (s.remoteAddress) remember();
      else s.once('connect', remember);
    });
    // RFC 9110 §10.1.1: the origin's 100 goes on to the client, which then sends the body.
    request.on('continue', () => {
      if (!res.headersSent && !res.destroyed) res.writeContinue();
    });
    // RFC 9110 §15.2: other 1xx interim responses (103 Early Hints, 102) are relayed as they come,
    // to HTTP/1.1 clients only, and never stored (the cache sees only the final response).
    request.on('information', (info) => {
      const code = info.statusCode;
      if (code === 101 || code < 102 || code > 199 || res.headersSent || res.destroyed || req.httpVersion === '1.0') return;
      let head = `HTTP/1.1 ${code} ${info.statusMessage || http.STATUS_CODES[code] || ''}\r\n`;
      const raw = info.rawHeaders;
      for (let i = 0; i + 1 < raw.length; i += 2) head += `${raw[i]}: ${raw[i + 1]}\r\n`;
      (res as unknown as { _writeRaw(data: string, encoding: BufferEncoding): void })._writeRaw(`${head}\r\n`, 'latin1');
    });
    request.once('error', (err: NodeJS.ErrnoException) => {
      if (recorded) return;
      if (proxyRes?.complete && typeof err.code === 'string' && err.code.startsWith('HPE_')) {
        // RFC 9112 §6.3: the message ended where its Content-Length said; bytes after it are not
        // a response. Node's parser complains about them and closes the origin connection (so it
        // is never reused); the complete response goes on to the client as it is.
        request.on('error', () => undefined);
        log.info('origin sent bytes past the end of its response; its connection is closed', { session: session.id, url, code: err.code });
        return;
      }
      // The route's connection could not be made, so nothing of the request left: the next
      // route gets it (dialRoute's fallback, request by request).
      if (upstream && !proxyRes && dialFailures.has(err) && err.code !== 'ESHUTDOWN' && tryNextRoute(upstream, codeFromSystemError(err), err.message)) return;
      if (
        (request.reusedSocket || metEnded) &&
        !retried &&
        !proxyRes &&
        !answered() &&
        bodyKind === 'none' &&
        IDEMPOTENT_METHODS.has(method.toUpperCase()) &&
        err.code !== undefined &&
        STALE_CONNECTION_ERRORS.has(err.code)
      ) {
        // The origin closed a pooled connection as we reused it, before any byte of an answer:
        // an idempotent request without a body is sent again, once, on a new connection (never
        // another pooled one: freshAgent).
        log.debug('pooled origin connection closed under the request, retrying on a new one', { session: session.id, url, code: err.code });
        retried = true;
        send();
        return;
      }
      fail(err);
    });
    request.once('response', (response) => onResponse(request, response, upstream));
    if (bodyKind === 'none') request.end();
    // Through routes the body waits for a connection, so it is still unread if the next route must take it.
    else if (upstream) request.once('socket', () => req.pipe(request));
    else req.pipe(request);
  };

  /** Sends the request along the next route, if there is one; false when none is left. */
  const tryNextRoute = (failed: ForwardRoute, code: ProxyErrorCode, reason: string): boolean => {
    const next = routes?.[attempt + 1];
    if (!next) return false;
    log.info('route failed, trying the next', { session: session.id, route: failed.route, code, reason, next: next.route });
    attempt++;
    proxyRes = null;
    peer = '';
    send();
    return true;
  };

  const onResponse = (request: ClientRequest, response: IncomingMessage, upstream: ForwardRoute | undefined): void => {
    proxyRes = response;
    if (res.destroyed) {
      response.destroy();
      return;
    }
    if (upstream?.form === 'absolute' && response.statusCode === 407) {
      // The upstream refused sockstap's own credentials (or wants some). The client cannot answer
      // that (its Proxy-Authorization was for sockstap), so, as for CONNECT, this is EUPSTREAMAUTH
      // and the next route is tried — unless the request body already went to this one.
      response.resume();
      const reason = `${upstream.route} refused sockstap's proxy credentials (407)`;
      if (bodyKind === 'none' && tryNextRoute(upstream, 'EUPSTREAMAUTH', reason)) return;
      request.destroy();
      fail(new ProxyError('EUPSTREAMAUTH', reason));
      return;
    }
    if (!opts.onResponseHead) {
      relayResponse(request, response);
      return;
    }
    let planned: ResponsePlan | Promise<ResponsePlan>;
    try {
      planned = opts.onResponseHead(response);
    } catch (err) {
      response.destroy();
      fail(err);
      return;
    }
    Promise.resolve(planned).then(
      (plan) => {
        if (recorded) {
          if (plan.kind === 'relay') plan.sink?.abort();
          response.destroy();
          return;
        }
        if (plan.kind === 'taken') {
          // The caller answers; this response only has to be read to its end so the origin
          // connection can go back to the pool.
          recorded = true;
          response.resume();
          finish();
          return;
        }
        resultCode = plan.resultCode;
        sink = plan.sink ?? null;
        relayResponse(request, response);
      },
      (err: unknown) => {
        response.destroy();
        fail(err);
      },
    );
  };

  const relayResponse = (request: ClientRequest, response: IncomingMessage): void => {
    status = response.statusCode ?? 502;
    contentType = mediaType(response.headers['content-type']);
    const out = withoutHopByHop(response.rawHeaders);
    opts.mapResponseHead?.(out);
    if (opts.responseEdits) applyHeaderEdits(out, opts.responseEdits);
    appendVia(out, response.httpVersion, opts.via);
    try {
      res.writeHead(status, response.statusMessage, out);
    } catch (err) {
      // A field Node refuses to send (it validates stricter on output than on input).
      response.destroy();
      request.destroy();
      status = 0;
      fail(new ProxyError('EUPSTREAM', `unusable response head from ${authority}: ${err instanceof Error ? err.message : String(err)}`));
      return;
    }
    response.on('data', (chunk: Buffer) => {
      bodyBytes += chunk.length;
      sink?.write(chunk);
    });
    response.pipe(res);
    response.once('end', () => {
      // Node emits 'end' only for a body that arrived whole (framing complete).
      const s = sink;
      sink = null;
      s?.end();
      // The origin answered before taking the whole request body (an error, or a final answer
      // to Expect: 100-continue): that origin connection cannot be reused.
      if (!request.writableFinished) {
        req.unpipe(request);
        request.destroy();
      }
    });
    response.once('error', (err) => fail(err));
    response.once('aborted', () => fail(new ProxyError('EUPSTREAM', `${authority} closed the connection mid-response`)));
  };

  res.once('finish', () => record(resultCode, headBytes(res) + bodyBytes));
  send();
}
