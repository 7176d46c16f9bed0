/**
 * The HTTP forwarding engine: the one code path every proxied HTTP request takes to its origin
 * (the HTTP door's and the HTTP tap's, after MOUNT, policy and the cache: cached.ts), one
 * `OriginExchange` per request.
 *
 * It streams both bodies, keeps chunked framing working (Node's parser removes it on the way in and
 * Node's writer adds it on the way out), removes hop-by-hop fields and appends Via in both
 * directions (RFC 9110 §7.6), relays `100 Continue` (RFC 9110 §10.1.1), reuses origin connections
 * through the running instance's bounded keep-alive pool (origin-pool.ts) whose sockets come from
 * the pipeline's dialer, and emits one access record per request (http1/access.ts). A failure
 * before the response head becomes a readable 502/504 page (http1/error-page.ts);
 * after it, the client connection is cut so the client sees the truncation.
 *
 * When the router sends a request to an HTTP upstream (`routes`), it goes there in absolute-form
 * (RFC 9112 §3.2.2) over connections pooled per upstream, with the upstream's
 * Proxy-Authorization, and a route that cannot be reached gives way to the next (docs/routing.md).
 */
import http, { type ClientRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { HostPort, Timeouts } from '../../config/types.js';
import { codeFromSystemError, ProxyError, replyFor, type ProxyErrorCode } from '../../core/errors.js';
import type { Session } from '../../core/session.js';
import type { ProxyEvents } from '../../observe/events.js';
import type { Logger } from '../../observe/log.js';
import type { HeaderEdits } from '../../config/types.js';
import { targetAuthority } from '../../http1/authority.js';
import { accessRecord, headBytes } from '../../http1/access.js';
import { errorPage, writeErrorPage } from '../../http1/error-page.js';
import { MAX_HEAD_BYTES, MAX_HEAD_FIELDS } from '../../http1/server.js';
import { appendVia, applyHeaderEdits, mediaType, requestBodyKind, withoutHopByHop } from './headers.js';
import { ROUTE, type OriginPool, type PoolRoute, type RoutedArgs } from './origin-pool.js';

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
  /** The running instance's origin pool (origin-pool.ts). */
  origins: OriginPool;
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

/**
 * RFC 9110 §9.2.2: the methods a client (and so a proxy) may send again after a failure without
 * changing the effect; only these are retried, and only without a body (the body has been
 * streamed away).
 */
const IDEMPOTENT_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);

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
 * The request head for the origin: hop-by-hop fields out (RFC 9110 §7.6.1), Host from the target
 * (RFC 9112 §3.2.2: a proxy replaces the Host of an absolute-form request) unless a tapped tunnel
 * keeps the client's own, a body of unknown length re-framed as chunked, Via appended.
 */
function originHead(req: IncomingMessage, opts: ForwardOptions, authority: string, chunked: boolean): string[] {
  const headers = withoutHopByHop(opts.rawHeaders ?? req.rawHeaders);
  let host = authority;
  for (let i = headers.length - 2; i >= 0; i -= 2) {
    if (headers[i]!.toLowerCase() !== 'host') continue;
    if (opts.host === 'keep') host = headers[i + 1]!;
    headers.splice(i, 2);
  }
  headers.unshift('Host', host);
  // Transfer-Encoding is hop-by-hop: a body of unknown length is re-framed as chunked.
  if (chunked) headers.push('Transfer-Encoding', 'chunked');
  appendVia(headers, req.httpVersion, opts.via);
  return headers;
}

/**
 * RFC 9110 §15.2: a 1xx interim response other than 100 and 101 (103 Early Hints, 102) is relayed
 * as it comes, to HTTP/1.1 clients only, and never stored (the cache sees only the final response).
 */
function relayInterim(req: IncomingMessage, res: ServerResponse, info: http.InformationEvent): void {
  const code = info.statusCode;
  if (code === 101 || code < 102 || code > 199 || res.headersSent || res.destroyed || req.httpVersion === '1.0') return;
  let head = `HTTP/1.1 ${code} ${info.statusMessage || http.STATUS_CODES[code] || ''}\r\n`;
  const raw = info.rawHeaders;
  for (let i = 0; i + 1 < raw.length; i += 2) head += `${raw[i]}: ${raw[i + 1]}\r\n`;
  (res as unknown as { _writeRaw(data: string, encoding: BufferEncoding): void })._writeRaw(`${head}\r\n`, 'latin1');
}

/**
 * One request's exchange with its origin (or HTTP upstream): the attempts along the routes, the
 * one retry of a stale pooled connection, the response relayed (and fed to a sink), and exactly
 * one access record whatever the outcome.
 */
class OriginExchange {
  private readonly started = Date.now();
  private readonly authority: string;
  private readonly url: string;
  private readonly method: string;
  private readonly bodyKind: ReturnType<typeof requestBodyKind>;
  private readonly headers: string[];
  private readonly route: PoolRoute;
  private readonly routes: readonly ForwardRoute[] | null;
  private hierarchyCode: string;
  private attempt = 0;
  private recorded = false;
  private finished = false;
  private resultCode = 'TCP_MISS';
  private sink: BodySink | null = null;
  private bodyBytes = 0;
  private status = 0;
  private contentType = '';
  private peer = '';
  private proxyReq: ClientRequest | null = null;
  private proxyRes: IncomingMessage | null = null;
  private retried = false;
  /** Whether the origin sent any byte of an answer on the connection of the current attempt. */
  private answered: () => boolean = () => false;
  /** The connection handed to this attempt was already ended by the origin (closed unused). */
  private metEnded = false;

  constructor(
    private readonly req: IncomingMessage,
    private readonly res: ServerResponse,
    private readonly opts: ForwardOptions,
  ) {
    const { session, target } = opts;
    this.authority = targetAuthority(target);
    this.url = opts.url ?? `http://${this.authority}${target.path}`;
    this.method = req.method ?? 'GET';
    this.bodyKind = requestBodyKind(req.headers);
    this.headers = originHead(req, opts, this.authority, this.bodyKind === 'chunked');
    this.route = { dial: opts.dial, key: opts.poolKey ?? `${session.user ?? ''}@${session.clientAddress}` };
    this.hierarchyCode = opts.hierarchyCode ?? (session.route === 'direct' ? 'HIER_DIRECT' : 'FIRSTUP_PARENT');
    this.routes = opts.routes && opts.routes.length > 0 ? opts.routes : null;
  }

  start(): void {
    const { req, res } = this;
    // The client went away (or its connection was closed) before the response finished.
    res.once('close', () => {
      if (this.recorded) return;
      this.proxyReq?.destroy();
      this.proxyRes?.destroy();
      this.dropSink();
      this.record(`${this.resultCode}_ABORTED`, headBytes(res) + this.bodyBytes);
    });
    req.once('error', () => this.proxyReq?.destroy());
    res.once('finish', () => this.record(this.resultCode, headBytes(res) + this.bodyBytes));
    this.send();
  }

  private finish(): void {
    if (this.finished) return;
    this.finished = true;
    this.opts.onFinished?.();
  }

  /** The body will not complete: the sink (if any) is abandoned. */
  private dropSink(): void {
    const s = this.sink;
    this.sink = null;
    s?.abort();
  }

  private record(code: string, bytes: number): void {
    if (this.recorded) return;
    this.recorded = true;
    this.opts.events.emit(
      'access',
      accessRecord(this.req, this.opts.session, this.started, {
        resultCode: code,
        status: this.status,
        bytes,
        url: this.url,
        hierarchy: this.peer ? `${this.hierarchyCode}/${this.peer}` : 'HIER_NONE/-',
        contentType: this.contentType,
        mountedFrom: this.opts.mountedFrom,
      }),
    );
    this.finish();
  }

  private fail(err: unknown): void {
    if (this.recorded) return;
    const { req, res, opts } = this;
    const code = codeFromSystemError(err);
    const message = err instanceof Error ? err.message : String(err);
    this.dropSink();
    if (res.headersSent) {
      // The head is out: all we can do is cut the connection so the client sees the truncation.
      opts.log.info('origin failed mid-response', { session: opts.session.id, url: this.url, code });
      res.destroy();
      this.record(`${this.resultCode}_ABORTED`, headBytes(res) + this.bodyBytes);
      return;
    }
    this.status = replyFor(code).http;
    this.contentType = 'text/plain';
    opts.log.info('origin request failed', { session: opts.session.id, url: this.url, code, status: this.status });
    req.unpipe();
    this.record('TCP_MISS', writeErrorPage(req, res, errorPage(this.status, `${code}: ${message}`)));
  }

  /** The options of this attempt's request: along its route (router.ts), or to the target through `dial`. */
  private requestArgs(upstream: ForwardRoute | undefined): RoutedArgs {
    const { opts, method } = this;
    const common = { agent: opts.origins.agent(this.retried), method, setHost: false, maxHeaderSize: MAX_HEAD_BYTES };
    if (upstream) return { ...upstreamArgs(upstream, opts.target, this.authority, this.headers, this.route.key), ...common };
    return { ...common, host: opts.target.host, port: opts.target.port, path: opts.target.path, headers: this.headers, [ROUTE]: this.route };
  }

  private send(): void {
    const { req, res, opts } = this;
    const upstream = this.routes?.[this.attempt];
    if (upstream) {
      opts.session.route = upstream.route;
      this.hierarchyCode = opts.hierarchyCode ?? (upstream.route === 'direct' ? 'HIER_DIRECT' : 'FIRSTUP_PARENT');
    }
    let request: ClientRequest;
    try {
      request = http.request(this.requestArgs(upstream));
    } catch (err) {
      // Node validates method, path and fields before sending anything.
      this.fail(new ProxyError('EPROTO', `cannot forward this request: ${err instanceof Error ? err.message : String(err)}`));
      return;
    }
    this.proxyReq = request;
    // The response's fields, all of them within MAX_HEAD_BYTES (Node's client default keeps about
    // 1,000 and drops the rest without a word); read when the parser is attached to the socket.
    request.maxHeadersCount = MAX_HEAD_FIELDS;
    request.setTimeout(opts.timeouts.idle, () => {
      request.destroy(new ProxyError('ETIMEDOUT', `no answer from ${this.authority} within ${opts.timeouts.idle} ms`));
    });
    request.once('socket', (socket) => this.onSocket(socket as Socket, upstream));
    // RFC 9110 §10.1.1: the origin's 100 goes on to the client, which then sends the body.
    request.on('continue', () => {
      if (!res.headersSent && !res.destroyed) res.writeContinue();
    });
    request.on('information', (info) => relayInterim(req, res, info));
    request.once('error', (err: NodeJS.ErrnoException) => this.onRequestError(request, err, upstream));
    request.once('response', (response) => this.onResponse(request, response, upstream));
    if (this.bodyKind === 'none') request.end();
    // Through routes the body waits for a connection, so it is still unread if the next route must take it.
    else if (upstream) request.once('socket', () => req.pipe(request));
    else req.pipe(request);
  }

  private onSocket(s: Socket, upstream: ForwardRoute | undefined): void {
    const readBefore = s.bytesRead;
    this.answered = () => s.bytesRead > readBefore;
    // Node hands a freed connection straight to a queued request without asking the pool
    // (keepSocketAlive): one the origin has ended would take the request and never answer.
    if (s.readableEnded && !s.destroyed) {
      this.metEnded = true;
      s.destroy();
      return;
    }
    // A tunnel's pre-dialed server socket arrives paused (the pipeline peeked it); Node's client
    // has installed its reader by the time 'socket' is emitted, so nothing is lost by resuming.
    if (s.isPaused()) s.resume();
    const remember = (): void => {
      // Squid's hierarchy names the parent a request went to (FIRSTUP_PARENT/host).
      this.peer = upstream?.proxy?.host ?? s.remoteAddress ?? this.opts.target.host;
    };
    if (s.remoteAddress) remember();
    else s.once('connect', remember);
  }

  /**
   * The origin closed a pooled connection as we reused it, before any byte of an answer: an
   * idempotent request without a body may be sent again, once, on a new connection.
   */
  private mayRetry(request: ClientRequest, err: NodeJS.ErrnoException): boolean {
    return (
      (request.reusedSocket || this.metEnded) &&
      !this.retried &&
      !this.proxyRes &&
      !this.answered() &&
      this.bodyKind === 'none' &&
      IDEMPOTENT_METHODS.has(this.method.toUpperCase()) &&
      err.code !== undefined &&
      STALE_CONNECTION_ERRORS.has(err.code)
    );
  }

  private onRequestError(request: ClientRequest, err: NodeJS.ErrnoException, upstream: ForwardRoute | undefined): void {
    if (this.recorded) return;
    const { opts } = this;
    if (this.proxyRes?.complete && typeof err.code === 'string' && err.code.startsWith('HPE_')) {
      // RFC 9112 §6.3: the message ended where its Content-Length said; bytes after it are not
      // a response. Node's parser complains about them and closes the origin connection (so it
      // is never reused); the complete response goes on to the client as it is.
      request.on('error', () => undefined);
      opts.log.info('origin sent bytes past the end of its response; its connection is closed', { session: opts.session.id, url: this.url, code: err.code });
      return;
    }
    // The route's connection could not be made, so nothing of the request left: the next
    // route gets it (dialRoute's fallback, request by request).
    if (upstream && !this.proxyRes && opts.origins.isDialFailure(err) && err.code !== 'ESHUTDOWN' && this.tryNextRoute(upstream, codeFromSystemError(err), err.message)) return;
    if (this.mayRetry(request, err)) {
      // Never on another pooled connection (the pool's fresh agent).
      opts.log.debug('pooled origin connection closed under the request, retrying on a new one', { session: opts.session.id, url: this.url, code: err.code });
      this.retried = true;
      this.send();
      return;
    }
    this.fail(err);
  }

  /** Sends the request along the next route, if there is one; false when none is left. */
  private tryNextRoute(failed: ForwardRoute, code: ProxyErrorCode, reason: string): boolean {
    const next = this.routes?.[this.attempt + 1];
    if (!next) return false;
    this.opts.log.info('route failed, trying the next', { session: this.opts.session.id, route: failed.route, code, reason, next: next.route });
    this.attempt++;
    this.proxyRes = null;
    this.peer = '';
    this.send();
    return true;
  }

  private onResponse(request: ClientRequest, response: IncomingMessage, upstream: ForwardRoute | undefined): void {
    this.proxyRes = response;
    if (this.res.destroyed) {
      response.destroy();
      return;
    }
    if (upstream?.form === 'absolute' && response.statusCode === 407) {
      // The upstream refused sockstap's own credentials (or wants some). The client cannot answer
      // that (its Proxy-Authorization was for sockstap), so, as for CONNECT, this is EUPSTREAMAUTH
      // and the next route is tried — unless the request body already went to this one.
      response.resume();
      const reason = `${upstream.route} refused sockstap's proxy credentials (407)`;
      if (this.bodyKind === 'none' && this.tryNextRoute(upstream, 'EUPSTREAMAUTH', reason)) return;
      request.destroy();
      this.fail(new ProxyError('EUPSTREAMAUTH', reason));
      return;
    }
    const onHead = this.opts.onResponseHead;
    if (!onHead) {
      this.relayResponse(request, response);
      return;
    }
    let planned: ResponsePlan | Promise<ResponsePlan>;
    try {
      planned = onHead(response);
    } catch (err) {
      response.destroy();
      this.fail(err);
      return;
    }
    Promise.resolve(planned).then(
      (plan) => this.follow(plan, request, response),
      (err: unknown) => {
        response.destroy();
        this.fail(err);
      },
    );
  }

  /** Carries out the caller's plan for the response. */
  private follow(plan: ResponsePlan, request: ClientRequest, response: IncomingMessage): void {
    if (this.recorded) {
      if (plan.kind === 'relay') plan.sink?.abort();
      response.destroy();
      return;
    }
    if (plan.kind === 'taken') {
      // The caller answers; this response only has to be read to its end so the origin
      // connection can go back to the pool.
      this.recorded = true;
      response.resume();
      this.finish();
      return;
    }
    this.resultCode = plan.resultCode;
    this.sink = plan.sink ?? null;
    this.relayResponse(request, response);
  }

  private relayResponse(request: ClientRequest, response: IncomingMessage): void {
    const { req, res, opts } = this;
    this.status = response.statusCode ?? 502;
    this.contentType = mediaType(response.headers['content-type']);
    const out = withoutHopByHop(response.rawHeaders);
    opts.mapResponseHead?.(out);
    if (opts.responseEdits) applyHeaderEdits(out, opts.responseEdits);
    appendVia(out, response.httpVersion, opts.via);
    try {
      res.writeHead(this.status, response.statusMessage, out);
    } catch (err) {
      // A field Node refuses to send (it validates stricter on output than on input).
      response.destroy();
      request.destroy();
      this.status = 0;
      this.fail(new ProxyError('EUPSTREAM', `unusable response head from ${this.authority}: ${err instanceof Error ? err.message : String(err)}`));
      return;
    }
    response.on('data', (chunk: Buffer) => {
      this.bodyBytes += chunk.length;
      this.sink?.write(chunk);
    });
    response.pipe(res);
    response.once('end', () => {
      // Node emits 'end' only for a body that arrived whole (framing complete).
      const s = this.sink;
      this.sink = null;
      s?.end();
      // The origin answered before taking the whole request body (an error, or a final answer
      // to Expect: 100-continue): that origin connection cannot be reused.
      if (!request.writableFinished) {
        req.unpipe(request);
        request.destroy();
      }
    });
    response.once('error', (err) => this.fail(err));
    response.once('aborted', () => this.fail(new ProxyError('EUPSTREAM', `${this.authority} closed the connection mid-response`)));
  }
}

/**
 * Forwards one request to its origin and streams the answer back. Never throws; every outcome
 * (response, origin failure, client abort) ends in exactly one access record.
 */
export function forwardHttpRequest(req: IncomingMessage, res: ServerResponse, opts: ForwardOptions): void {
  new OriginExchange(req, res, opts).start();
}
