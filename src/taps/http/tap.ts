/**
 * The HTTP tap: a tunnel a SOCKSTAP rule picked and the sniffer found HTTP in becomes an HTTP
 * proxy connection. The client socket (sniffed bytes unshifted) is handed to an internal
 * `http.Server` with `emit('connection')`, so llhttp handles keep-alive, pipelining, chunked
 * bodies and refuses request-smuggling shapes (CL+TE, repeated Content-Length, bad
 * Transfer-Encoding → 400 and close; `insecureHTTPParser` stays off). Every request then takes
 * the one path of proxied HTTP (`serveHttp`, cached.ts) towards the tunnel's destination, once
 * its `Host` is verified to name that destination (host-check.ts; else 400).
 *
 * Origin connections: the pre-dialed server socket when the connect strategy dialed first (for
 * the first origin request, then kept in the pool), otherwise dialed only when a request needs
 * the origin (cache-first: a fresh cached response needs none). `Upgrade` requests (WebSocket)
 * are forwarded as they are and the connection becomes a raw two-way relay.
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { HostPort } from '../../config/types.js';
import { toProxyError, replyFor } from '../../core/errors.js';
import { checkHttpRequest } from '../../policy/http-rules.js';
import type { Tap, TapContext } from '../tap.js';
import { absoluteTarget, denyHttp, targetAuthority, urlAuthority, type ForwardRoute, type ForwardTarget } from './forward.js';
import { MAX_HEAD_BYTES, MAX_HEAD_FIELDS, PROXY_VIA } from './headers.js';
import { serveHttp } from './cached.js';
import { verifyTunnelHost, type HostVerdict } from './host-check.js';
import { socketBytes } from '../../net/splice.js';

/** Largest request head accepted; a larger one gets 431 (RFC 6585 §5), as at the HTTP door. */
const MAX_HEADER_BYTES = MAX_HEAD_BYTES;
/** Largest upgrade response head read before the relay starts. */
const MAX_UPGRADE_HEAD_BYTES = 64 * 1024;
/** Idle keep-alive time between requests of a tapped connection (bounded by TIMEOUT=idle). */
const KEEP_ALIVE_MAX_MS = 120_000;

/**
 * The tap context the pipeline builds for the HTTP tap: with `httpRoutes` when an HTTP upstream
 * may take the tunnel's requests in absolute-form (ServeOptions.routesFor in cached.ts).
 */
export interface HttpTapContext extends TapContext {
  httpRoutes?: (dst: HostPort) => readonly ForwardRoute[] | null;
}

interface TapState {
  ctx: TapContext;
  /** The pre-dialed server socket, used by the first origin request. */
  firstServer: Socket | null;
  /** Origin sockets this connection dialed: closed with it. */
  dialed: Set<Socket>;
  inFlight: number;
  served: number;
  headTimer: NodeJS.Timeout | null;
  /** An Upgrade turned the connection into a relay; resolves when that is over. */
  upgraded: Promise<void> | null;
  answeredWithError: boolean;
}

const states = new WeakMap<Socket, TapState>();

function section(state: TapState): { requests: number } {
  return (state.ctx.session.sections.http ??= { requests: 0 }) as { requests: number };
}

function armHeadTimer(socket: Socket, state: TapState): void {
  if (state.headTimer) clearTimeout(state.headTimer);
  const { timeouts } = state.ctx.config;
  // The first head must come within the handshake time; later ones within the keep-alive time.
  const ms = state.served === 0 ? timeouts.handshake : Math.min(timeouts.idle, KEEP_ALIVE_MAX_MS);
  state.headTimer = setTimeout(() => {
    state.headTimer = null;
    if (state.inFlight > 0 || state.upgraded || socket.destroyed) return;
    socket.destroy();
  }, ms);
  state.headTimer.unref();
}

function disarmHeadTimer(state: TapState): void {
  if (state.headTimer) clearTimeout(state.headTimer);
  state.headTimer = null;
}

/** The tunnel's own dialer for its destination (first the pre-dialed socket), the pipeline's for another. */
function dialFor(state: TapState, dst: HostPort, scheme: 'http' | 'https' = schemeOf(state.ctx)): Promise<Socket> {
  const { ctx } = state;
  const same = dst.host === ctx.dst.host && dst.port === ctx.dst.port && scheme === schemeOf(ctx);
  if (same && state.firstServer) {
    const s = state.firstServer;
    state.firstServer = null;
    // One the server has already ended (a FIN: sockets are half-open) would take the request and never answer.
    if (!s.destroyed && !s.readableEnded) return Promise.resolve(s);
    s.destroy();
  }
  const dialing = same ? ctx.dial() : ctx.dialTo(dst, scheme);
  return dialing.then((s) => {
    state.dialed.add(s);
    s.once('close', () => state.dialed.delete(s));
    return s;
  });
}

/** The path of a request in the tunnel: origin-form as sent, or the path of an absolute-form one. */
function requestPath(url: string): string {
  if (url.startsWith('/') || url === '*') return url;
  const t = absoluteTarget(url);
  return t ? t.path : url;
}

function onRequest(req: IncomingMessage, res: ServerResponse): void {
  const socket = req.socket;
  const state = states.get(socket);
  if (!state) {
    res.destroy();
    return;
  }
  const { ctx } = state;
  disarmHeadTimer(state);
  state.inFlight++;
  state.served++;
  section(state).requests++;
  res.once('close', () => {
    state.inFlight = Math.max(0, state.inFlight - 1);
    if (state.inFlight === 0 && !socket.destroyed) armHeadTimer(socket, state);
  });
  const target = { host: ctx.dst.host, port: ctx.dst.port, path: requestPath(req.url ?? '/') };
  // The Host is forwarded as sent, so it must name where the tunnel goes (host-check.ts).
  void verifyHost(req, ctx).then((verdict) => {
    if (res.destroyed) return;
    if (!verdict.ok) {
      refuseHost(req, res, state, `${schemeOf(ctx)}://${urlAuthority(schemeOf(ctx), ctx.dst)}${target.path}`, verdict.reason);
      return;
    }
    serve(req, res, state, target, verdict.keyHost, verdict.rewrite === true);
  });
}

/** `https` inside an intercepted TLS tunnel, else `http`. */
function schemeOf(ctx: TapContext): 'http' | 'https' {
  return ctx.scheme ?? 'http';
}

/** host-check.ts for a request of this tunnel; a port relay's own address counts for its destination. */
function verifyHost(req: IncomingMessage, ctx: TapContext): Promise<HostVerdict> {
  const local = ctx.client.localAddress;
  const relay = ctx.session.door === 'tcprelay' && local && ctx.client.localPort ? { host: local, port: ctx.client.localPort } : undefined;
  return verifyTunnelHost(req.rawHeaders, ctx.dst, ctx.services.runtime.names(ctx.config.dns), relay, ctx.scheme === 'https' ? 443 : 80);
}

/** A request whose Host does not name the tunnel's destination: 400, access.log and sockstap.log. */
function refuseHost(req: IncomingMessage, res: ServerResponse, state: TapState, url: string, reason: string): void {
  const { ctx } = state;
  ctx.services.log.warn('http Host does not name the tunnel destination, refused', {
    session: ctx.session.id,
    client: ctx.session.clientAddress,
    dst: targetAuthority(ctx.dst),
    reason,
  });
  denyHttp(req, res, ctx.session, ctx.services.events, 'EPROTO', `${reason}. sockstap forwards a request only to the host it names (the cache would store it for the wrong one).`, url);
}

function serve(req: IncomingMessage, res: ServerResponse, state: TapState, target: ForwardTarget, keyHost: string | null, rewrite: boolean): void {
  const { ctx } = state;
  const routesFor = (ctx as HttpTapContext).httpRoutes;
  serveHttp(req, res, {
    session: ctx.session,
    target,
    ...(keyHost ? { keyHost } : {}),
    // A Host naming the relay itself goes to the origin as the destination's.
    host: rewrite ? 'target' : 'keep',
    dial: (dst, scheme) => dialFor(state, dst, scheme),
    authorize: (dst) => ctx.authorize(dst),
    cache: ctx.services.cache,
    config: ctx.config,
    events: ctx.services.events,
    log: ctx.services.log,
    via: PROXY_VIA,
    timeouts: ctx.config.timeouts,
    // Origin connections of a tunnel belong to it (its route, its pre-dialed socket): not shared.
    poolKey: ctx.scheme ? `tap:${ctx.session.id}:${ctx.scheme}` : `tap:${ctx.session.id}`,
    ...(ctx.scheme ? { scheme: ctx.scheme } : {}),
    // Through an HTTP upstream, requests go in absolute-form on connections pooled per upstream.
    ...(routesFor ? { routesFor } : {}),
  });
}

function rawReply(status: number, message: string): string {
  const reason = http.STATUS_CODES[status] ?? 'Error';
  const body = `sockstap: ${status} ${reason}\n${message}\n`;
  return (
    `HTTP/1.1 ${status} ${reason}\r\nContent-Type: text/plain; charset=utf-8\r\n` +
    `Content-Length: ${Buffer.byteLength(body)}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n${body}`
  );
}

/**
 * `Upgrade` (RFC 9110 §7.8), e.g. WebSocket: the request goes to the origin as it came (Upgrade and
 * Connection included, since they are what it asks for), then the connection is a raw relay both
 * ways, whatever the origin answered.
 */
function onUpgrade(req: IncomingMessage, socket: Socket, head: Buffer): void {
  const state = states.get(socket);
  if (!state) {
    socket.destroy();
    return;
  }
  const { ctx } = state;
  disarmHeadTimer(state);
  state.served++;
  section(state).requests++;
  const started = Date.now();
  const path = requestPath(req.url ?? '/');
  const url = `${schemeOf(ctx)}://${urlAuthority(schemeOf(ctx), ctx.dst)}${path}`;
  let status = 0;
  let resultCode = 'TCP_TUNNEL';
  const record = (bytes: number): void => {
    ctx.services.events.emit('access', {
      time: Date.now(),
      elapsedMs: Date.now() - started,
      clientAddress: ctx.session.clientAddress,
      resultCode,
      status,
      bytes,
      method: req.method ?? '-',
      url,
      user: ctx.session.user,
      hierarchy: status > 0 && resultCode === 'TCP_TUNNEL' ? ctx.session.hierarchy() : 'HIER_NONE/-',
      contentType: '-',
      httpVersion: req.httpVersion,
      sessionId: ctx.session.id,
    });
  };
  const refuse = (code: number, message: string): void => {
    status = code;
    const reply = rawReply(code, message);
    socket.end(reply);
    record(Buffer.byteLength(reply));
  };
  const decision = checkHttpRequest(ctx.config, {
    clientAddress: ctx.session.clientAddress,
    user: ctx.session.user,
    method: (req.method ?? 'GET').toUpperCase(),
    url,
    host: ctx.dst.host,
    port: ctx.dst.port,
  });
  if (!decision.allowed) {
    resultCode = 'TCP_DENIED';
    refuse(403, `${url} is refused by ${decision.by}.`);
    return;
  }
  const writtenBefore = socket.bytesWritten;
  state.upgraded = (async () => {
    const verdict = await verifyHost(req, ctx);
    if (!verdict.ok) {
      ctx.services.log.warn('http Host does not name the tunnel destination, refused', {
        session: ctx.session.id,
        client: ctx.session.clientAddress,
        dst: targetAuthority(ctx.dst),
        reason: verdict.reason,
      });
      resultCode = 'TAG_NONE';
      refuse(400, `${verdict.reason}.`);
      return;
    }
    let server: Socket;
    try {
      server = await dialFor(state, ctx.dst);
    } catch (err) {
      const e = toProxyError(err);
      resultCode = 'TCP_MISS';
      refuse(replyFor(e.code).http, `${e.code}: ${e.message}`);
      return;
    }
    if (socket.destroyed) {
      server.destroy();
      return;
    }
    // The request head exactly as received (names' case, order, repeats), then what followed it.
    let text = `${req.method ?? 'GET'} ${req.url ?? '/'} HTTP/${req.httpVersion}\r\n`;
    for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
      const name = req.rawHeaders[i]!;
      // A Host naming a port relay itself goes on as the destination's (host-check.ts).
      const value = verdict.rewrite && name.toLowerCase() === 'host' ? targetAuthority(ctx.dst) : req.rawHeaders[i + 1]!;
      text += `${name}: ${value}\r\n`;
    }
    server.write(`${text}\r\n`);
    if (head.length > 0) server.write(head);
    server.resume();
    status = await readStatus(server);
    await ctx.relay(socket, server);
    record(socketBytes(socket).written - writtenBefore);
  })();
}

/**
 * Reads the origin's answer head (bounded) only to learn its status for access.log, and puts the
 * bytes back so the relay delivers them untouched.
 */
function readStatus(server: Socket): Promise<number> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const done = (): void => {
      server.removeListener('data', onData);
      server.removeListener('end', done);
      server.removeListener('close', done);
      server.pause();
      const all = Buffer.concat(chunks);
      if (all.length > 0) server.unshift(all);
      const m = /^HTTP\/\d\.\d (\d{3})/.exec(all.subarray(0, 16).toString('latin1'));
      resolve(m ? Number(m[1]) : 0);
    };
    const onData = (chunk: Buffer): void => {
      chunks.push(chunk);
      size += chunk.length;
      if (size >= MAX_UPGRADE_HEAD_BYTES || Buffer.concat(chunks).includes('\r\n\r\n')) done();
    };
    server.on('data', onData);
    server.once('end', done);
    server.once('close', done);
  });
}

/** Parse errors (smuggling shapes included): a readable 400/431 page, then the connection closes. */
function onClientError(err: NodeJS.ErrnoException, socket: Socket): void {
  const state = states.get(socket);
  if (!state || state.answeredWithError) {
    socket.destroy();
    return;
  }
  state.answeredWithError = true;
  if (!socket.writable || state.inFlight > 0 || err.code === 'ECONNRESET' || err.code === 'EPIPE') {
    socket.destroy();
    return;
  }
  const { ctx } = state;
  let status = 400;
  let message = `The request could not be parsed as HTTP (${err.code ?? 'parse error'}).`;
  let url = 'error:invalid-request';
  if (err.code === 'HPE_HEADER_OVERFLOW') {
    status = 431;
    message = `The request head is larger than ${MAX_HEADER_BYTES} bytes.`;
    url = 'error:request-too-large';
  }
  const reply = rawReply(status, message);
  // Unread input would turn our close into a reset that can destroy the reply: read and drop it
  // for a short while.
  socket.removeAllListeners('data');
  socket.on('data', () => {});
  socket.resume();
  const timer = setTimeout(() => socket.destroy(), ctx.config.timeouts.handshake);
  timer.unref();
  socket.once('close', () => clearTimeout(timer));
  socket.end(reply);
  ctx.services.events.emit('access', {
    time: Date.now(),
    elapsedMs: 0,
    clientAddress: ctx.session.clientAddress,
    resultCode: 'NONE',
    status,
    bytes: Buffer.byteLength(reply),
    method: 'NONE',
    url,
    user: ctx.session.user,
    hierarchy: 'HIER_NONE/-',
    contentType: '-',
    sessionId: ctx.session.id,
  });
  ctx.services.log.info('bad http request in tunnel', { session: ctx.session.id, status, code: err.code });
}

let server: http.Server | null = null;

function tapServer(): http.Server {
  if (server) return server;
  server = http.createServer({
    maxHeaderSize: MAX_HEADER_BYTES,
    keepAlive: true,
    insecureHTTPParser: false,
    // The tap's own head timer closes idle connections: Node runs its header/request timeouts
    // only on servers that listen themselves.
    headersTimeout: 0,
    requestTimeout: 0,
  });
  server.keepAliveTimeout = 0;
  // Every field within the byte limit, not Node's default count.
  server.maxHeadersCount = MAX_HEAD_FIELDS;
  server.on('request', onRequest);
  // With a listener Node does not answer `Expect: 100-continue` itself: the forwarder relays the
  // origin's 100 or its final answer (RFC 9110 §10.1.1).
  server.on('checkContinue', onRequest);
  server.on('upgrade', onUpgrade);
  server.on('clientError', onClientError);
  return server;
}

export const httpTap: Tap = (ctx: TapContext): Promise<void> => {
  const client = ctx.client;
  const session = ctx.session;
  session.proto = 'http';
  session.sections.http ??= { requests: 0 };
  // The client connection's bytes from here on: what was read before the tap, minus the sniffed
  // bytes put back, belongs to the door's handshake.
  const readBase = client.bytesRead - client.readableLength;
  const writtenBase = client.bytesWritten;
  const state: TapState = {
    ctx,
    firstServer: ctx.server,
    dialed: new Set(),
    inFlight: 0,
    served: 0,
    headTimer: null,
    upgraded: null,
    answeredWithError: false,
  };
  states.set(client, state);
  return new Promise<void>((resolve) => {
    client.once('close', () => {
      disarmHeadTimer(state);
      const upgraded = state.upgraded ?? Promise.resolve();
      void upgraded.then(() => {
        // Origin connections of this tunnel end with it (pooled idle ones included).
        state.firstServer?.destroy();
        for (const s of state.dialed) s.destroy();
        // socketBytes: an Upgrade/CONNECT relayed by the splice thread is not in Node's counters.
        const moved = socketBytes(client);
        session.bytesUp = moved.read - readBase;
        session.bytesDown = moved.written - writtenBase;
        resolve();
      });
    });
    armHeadTimer(client, state);
    tapServer().emit('connection', client);
    // Node's parser reads from the socket handle; resuming also delivers the unshifted sniffed bytes first.
    client.resume();
  });
};
