/**
 * The HTTP tap: a tunnel a SOCKSTAP rule picked and the sniffer found HTTP in becomes an HTTP
 * proxy connection. The client socket (sniffed bytes unshifted) is handed to the instance's
 * internal HTTP/1 server (http1/server.ts). Every request then takes the one path of proxied HTTP
 * (`serveHttp`, cached.ts) towards the tunnel's destination, once its `Host` is verified to name
 * that destination (host-check.ts; else 400). The HTTP door's requests come in through
 * `serveDoorRequest`, the tap's one entry for them, and take the same path.
 *
 * One `HttpTap` per running sockstap: it owns the instance's origin pool (origin-pool.ts) and its
 * internal server, so one instance's stop() closes its own origin connections and no other's.
 *
 * Origin connections: the pre-dialed server socket when the connect strategy dialed first (for
 * the first origin request, then kept in the pool), otherwise dialed only when a request needs
 * the origin (cache-first: a fresh cached response needs none). `Upgrade` requests (WebSocket)
 * are forwarded as they are and the connection becomes a raw two-way relay.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { HttpCache } from '../../cache/http-cache.js';
import type { Config, HostPort } from '../../config/types.js';
import { toProxyError, replyFor, type ProxyError } from '../../core/errors.js';
import type { Session } from '../../core/session.js';
import type { ProxyEvents } from '../../observe/events.js';
import type { Logger } from '../../observe/log.js';
import { checkHttpRequest } from '../../policy/http-rules.js';
import type { Tap, TapContext } from '../tap.js';
import type { ForwardRoute, ForwardTarget } from './forward.js';
import { absoluteHttpTarget, targetAuthority, urlAuthority } from '../../http1/authority.js';
import { accessRecord } from '../../http1/access.js';
import { errorPage, rawErrorPage, refuseRequest } from '../../http1/error-page.js';
import { createInternalServer, Http1Connection, type InternalServer } from '../../http1/server.js';
import { PROXY_VIA } from './headers.js';
import { serveHttp } from './cached.js';
import { applyMounts, mountRequestOf } from './mount.js';
import { singleHostValue, verdictWithoutNames, verifyTunnelHost, type HostVerdict } from './host-check.js';
import { OriginPool } from './origin-pool.js';
import { socketBytes } from '../../native/splice.js';

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

/** What the pipeline lends one request of the HTTP door: its checkpoints, shaping, dialer and routes. */
export interface HttpDoorRequest {
  session: Session;
  /** The configuration the request is served under. */
  config: Config;
  /** The HTTP cache when CACHE=do, else null. */
  cache: HttpCache | null;
  /** The user's MAXIMA and (for a destination) checkpoint 2; rejects with a ProxyError. */
  admit(dst: HostPort | null): Promise<void>;
  /** BANDWIDTH=/QUOTA= on the client connection; false when refused (the connection is closed). */
  shape(): boolean;
  dial(dst: HostPort): Promise<Socket>;
  /** Checkpoint 2 for a destination MOUNT moved the request to. */
  authorize(dst: HostPort): Promise<void>;
  routesFor?(dst: HostPort): readonly ForwardRoute[] | null;
  /** The request was refused (logged and recorded on the session by the pipeline). */
  refused(err: ProxyError): void;
}

/** What the tap keeps about one tapped tunnel. */
interface TunnelState {
  ctx: TapContext;
  conn: Http1Connection;
  /** The pre-dialed server socket, used by the first origin request. */
  firstServer: Socket | null;
  /** Origin sockets this connection dialed: closed with it. */
  dialed: Set<Socket>;
  /** An Upgrade turned the connection into a relay; resolves when that is over. */
  upgraded: Promise<void> | null;
  /** The origin pool's key of this tunnel's connections (made once, not per request). */
  poolKey: string;
  /** The last Host value whose verdict needed no name lookup, and that verdict (knownVerdict). */
  hostSeen: { value: string; verdict: HostVerdict } | null;
}

function section(session: Session): { requests: number } {
  return (session.sections.http ??= { requests: 0 }) as { requests: number };
}

/** `https` inside an intercepted TLS tunnel, else `http`. */
function schemeOf(ctx: TapContext): 'http' | 'https' {
  return ctx.scheme ?? 'http';
}

/** The path of a request in the tunnel: origin-form as sent, or the path of an absolute-form one. */
function requestPath(url: string): string {
  if (url.startsWith('/') || url === '*') return url;
  const t = absoluteHttpTarget(url);
  return t ? t.path : url;
}

/** The port relay's own address, which counts for its destination (host-check.ts), or undefined. */
function relayOf(ctx: TapContext): HostPort | undefined {
  const local = ctx.client.localAddress;
  return ctx.session.door === 'tcprelay' && local && ctx.client.localPort ? { host: local, port: ctx.client.localPort } : undefined;
}

/** host-check.ts for a request of this tunnel; a port relay's own address counts for its destination. */
function verifyHost(req: IncomingMessage, ctx: TapContext): Promise<HostVerdict> {
  return verifyTunnelHost(req.rawHeaders, ctx.dst, ctx.services.runtime.names(ctx.config.dns), relayOf(ctx), ctx.scheme === 'https' ? 443 : 80);
}

/**
 * The verdict of this request's Host when the tunnel has decided it before without the name
 * cache (`TunnelState.hostSeen`), else null. The tunnel's destination, relay and default port
 * never change, so such a verdict holds for every request sending the same value.
 */
function knownVerdict(req: IncomingMessage, state: TunnelState): HostVerdict | null {
  const seen = state.hostSeen;
  if (!seen) return null;
  const value = singleHostValue(req.rawHeaders);
  return value !== null && value === seen.value ? seen.verdict : null;
}

/** Keeps the verdict of this request's one Host value when it was decided without the name cache. */
function rememberVerdict(req: IncomingMessage, state: TunnelState, verdict: HostVerdict): void {
  const value = singleHostValue(req.rawHeaders);
  if (value === null || !verdictWithoutNames(value, state.ctx.dst, relayOf(state.ctx))) return;
  state.hostSeen = { value, verdict };
}

function logWrongHost(ctx: TapContext, reason: string): void {
  ctx.services.log.warn('http Host does not name the tunnel destination, refused', {
    session: ctx.session.id,
    client: ctx.session.clientAddress,
    dst: targetAuthority(ctx.dst),
    reason,
  });
}

/** The tunnel's own dialer for its destination (first the pre-dialed socket), the pipeline's for another. */
function dialFor(state: TunnelState, dst: HostPort, scheme: 'http' | 'https' = schemeOf(state.ctx)): Promise<Socket> {
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

export class HttpTap {
  /** This instance's origin connections. */
  readonly origins = new OriginPool();
  private readonly server: InternalServer;
  private readonly tunnels = new WeakMap<Socket, TunnelState>();

  constructor(private readonly services: { events: ProxyEvents; log: Logger }) {
    this.server = createInternalServer({
      keepAliveTimeoutMs: 0,
      request: (req, res) => this.onTunnelRequest(req, res),
      upgrade: (req, socket, head) => this.onUpgrade(req, socket, head),
    });
  }

  /** Serves a tapped tunnel; resolves when its client connection is over. */
  readonly tunnel: Tap = (ctx: TapContext): Promise<void> => {
    const client = ctx.client;
    const session = ctx.session;
    session.proto = 'http';
    section(session);
    // The client connection's bytes from here on: what was read before the tap, minus the sniffed
    // bytes put back, belongs to the door's handshake.
    const readBase = client.bytesRead - client.readableLength;
    const writtenBase = client.bytesWritten;
    // What the session counted before the tap (the native hit path's part of a tunnel it gave back).
    const countedUp = session.bytesUp;
    const countedDown = session.bytesDown;
    const { timeouts } = ctx.config;
    const conn = new Http1Connection(client, session, {
      events: ctx.services.events,
      log: ctx.services.log,
      handshakeMs: () => timeouts.handshake,
      // The first head must come within the handshake time; later ones within the keep-alive time.
      headTimeoutMs: (c) => (c.served === 0 ? timeouts.handshake : Math.min(timeouts.idle, KEEP_ALIVE_MAX_MS)),
      parseErrorLog: 'bad http request in tunnel',
    });
    const poolKey = ctx.scheme ? `tap:${session.id}:${ctx.scheme}` : `tap:${session.id}`;
    const state: TunnelState = { ctx, conn, firstServer: ctx.server, dialed: new Set(), upgraded: null, poolKey, hostSeen: null };
    this.tunnels.set(client, state);
    return new Promise<void>((resolve) => {
      client.once('close', () => {
        const upgraded = state.upgraded ?? Promise.resolve();
        void upgraded.then(() => {
          // Origin connections of this tunnel end with it (pooled idle ones included).
          state.firstServer?.destroy();
          for (const s of state.dialed) s.destroy();
          // socketBytes: an Upgrade/CONNECT relayed by the splice thread is not in Node's counters.
          // An Upgrade's relay has counted its own part already; the rest is what the tap moved.
          const moved = socketBytes(client);
          session.countUp(moved.read - readBase - (session.bytesUp - countedUp));
          session.countDown(moved.written - writtenBase - (session.bytesDown - countedDown));
          resolve();
        });
      });
      this.server.accept(conn);
    });
  };

  /**
   * The one entry of the HTTP door's requests: absolute-form (`GET http://host/path`), or, with
   * `virtual`, an origin-form request that a MOUNT maps (reverse proxy; false when none does).
   * Checkpoint 2 for an absolute-form target, then the path of every proxied request (serveHttp).
   */
  serveDoorRequest(req: IncomingMessage, res: ServerResponse, door: HttpDoorRequest, virtual?: HostPort & { path: string }): boolean {
    const { session, config } = door;
    const { events, log } = this.services;
    let target: HostPort & { path: string };
    if (virtual) {
      const mounted = applyMounts(config.mounts, virtual, mountRequestOf(req, session, true));
      if (!mounted) return false;
      session.dst ??= { host: mounted.host, port: mounted.port };
      target = virtual;
    } else {
      // absoluteHttpTarget keeps the path byte for byte (new URL() would normalise it).
      const t = absoluteHttpTarget(req.url ?? '');
      if (!t) {
        refuseRequest(req, res, session, events, 'EPROTO', 'the HTTP door forwards absolute http:// URLs only');
        return true;
      }
      target = t;
    }
    const dst: HostPort = { host: target.host, port: target.port };
    session.command = 'http';
    session.dst ??= dst;
    // An origin-form (virtual) target was never a destination: serveHttp maps it and passes the
    // real destination through checkpoint 2 itself.
    door.admit(virtual ? null : dst).then(
      () => {
        // BANDWIDTH=/QUOTA= on the door's client connection, from its first request on.
        if (!door.shape()) return;
        // The same path as tapped HTTP (cached.ts): MOUNT, checkpoint 3, header rules, the cache
        // (CACHE=do) and access.log. Optional fields set only when present (no spread objects).
        const options: Parameters<typeof serveHttp>[2] = {
          session,
          origins: this.origins,
          target,
          host: 'target',
          dial: (d) => door.dial(d),
          authorize: (d) => door.authorize(d),
          cache: door.cache,
          config,
          events,
          log,
          via: PROXY_VIA,
          timeouts: config.timeouts,
        };
        if (door.routesFor) options.routesFor = (d: HostPort) => door.routesFor!(d);
        if (virtual) options.originForm = true;
        serveHttp(req, res, options);
      },
      (err: unknown) => {
        const e = toProxyError(err);
        door.refused(e);
        refuseRequest(req, res, session, events, e.code, e.message);
      },
    );
    return true;
  }

  /** Closes this instance's origin connections (stop). */
  close(): void {
    this.origins.close();
  }

  private onTunnelRequest(req: IncomingMessage, res: ServerResponse): void {
    const state = this.tunnels.get(req.socket);
    if (!state) {
      res.destroy();
      return;
    }
    const { ctx } = state;
    section(ctx.session).requests++;
    const target = { host: ctx.dst.host, port: ctx.dst.port, path: requestPath(req.url ?? '/') };
    // The Host is forwarded as sent, so it must name where the tunnel goes (host-check.ts).
    const known = knownVerdict(req, state);
    if (known) {
      if (!res.destroyed) this.afterHostCheck(req, res, state, target, known);
      return;
    }
    void verifyHost(req, ctx).then((verdict) => {
      rememberVerdict(req, state, verdict);
      if (res.destroyed) return;
      this.afterHostCheck(req, res, state, target, verdict);
    });
  }

  private afterHostCheck(req: IncomingMessage, res: ServerResponse, state: TunnelState, target: ForwardTarget, verdict: HostVerdict): void {
    const { ctx } = state;
    if (!verdict.ok) {
      // A request whose Host does not name the tunnel's destination: 400, access.log and sockstap.log.
      logWrongHost(ctx, verdict.reason);
      const url = `${schemeOf(ctx)}://${urlAuthority(schemeOf(ctx), ctx.dst)}${target.path}`;
      const message = `${verdict.reason}. sockstap forwards a request only to the host it names (the cache would store it for the wrong one).`;
      refuseRequest(req, res, ctx.session, ctx.services.events, 'EPROTO', message, url);
      return;
    }
    this.serveTunnelRequest(req, res, state, target, verdict.keyHost, verdict.rewrite === true);
  }

  private serveTunnelRequest(req: IncomingMessage, res: ServerResponse, state: TunnelState, target: ForwardTarget, keyHost: string | null, rewrite: boolean): void {
    const { ctx } = state;
    const routesFor = (ctx as HttpTapContext).httpRoutes;
    const options: Parameters<typeof serveHttp>[2] = {
      session: ctx.session,
      origins: this.origins,
      target,
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
      poolKey: state.poolKey,
    };
    // Optional fields set only when present (no spread objects per request).
    if (keyHost) options.keyHost = keyHost;
    if (ctx.scheme) options.scheme = ctx.scheme;
    // Through an HTTP upstream, requests go in absolute-form on connections pooled per upstream.
    if (routesFor) options.routesFor = routesFor;
    serveHttp(req, res, options);
  }

  /**
   * `Upgrade` (RFC 9110 §7.8), e.g. WebSocket: the request goes to the origin as it came (Upgrade and
   * Connection included, since they are what it asks for), then the connection is a raw relay both
   * ways, whatever the origin answered.
   */
  private onUpgrade(req: IncomingMessage, socket: Socket, head: Buffer): void {
    const state = this.tunnels.get(socket);
    if (!state) {
      socket.destroy();
      return;
    }
    const { ctx } = state;
    section(ctx.session).requests++;
    const started = Date.now();
    const path = requestPath(req.url ?? '/');
    const url = `${schemeOf(ctx)}://${urlAuthority(schemeOf(ctx), ctx.dst)}${path}`;
    let status = 0;
    let resultCode = 'TCP_TUNNEL';
    const record = (bytes: number): void => {
      const hierarchy = status > 0 && resultCode === 'TCP_TUNNEL' ? ctx.session.hierarchy() : 'HIER_NONE/-';
      ctx.services.events.emit('access', accessRecord(req, ctx.session, started, { resultCode, status, bytes, url, hierarchy, contentType: '-' }));
    };
    const refuse = (code: number, message: string): void => {
      status = code;
      const reply = rawErrorPage(errorPage(code, message));
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
        logWrongHost(ctx, verdict.reason);
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
}
