/**
 * The pipeline: where every front door's tunnel goes. It asks policy at the destination
 * checkpoint, takes the tap decision, dials, lets the door reply in its own protocol, and relays.
 * Only this file and sockstap.ts see every layer (doors, policy, dialers, taps, services).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { HttpCache } from '../cache/http-cache.js';
import type { Config, HostPort, TapRule } from '../config/types.js';
import type { DirectPlan, TunnelSink } from '../frontdoors/door.js';
import { runBind } from '../net/bind.js';
import { peekTunnel } from '../net/peek.js';
import { relay, type RelayMode } from '../net/relay.js';
import { runUdpAssociate } from '../net/udp-relay.js';
import type { ProxyEvents } from '../observe/events.js';
import type { Logger } from '../observe/log.js';
import { checkDestination, destinationAddresses, rulesNeedAddresses } from '../policy/acl.js';
import type { ConnectionLimits } from '../policy/limits.js';
import type { QuotaService } from '../policy/quota.js';
import { portOfListen, relayShape, type BandwidthShaper, type LimitSubject } from '../policy/shaping.js';
import { claimFtpDataTunnel, ftpDataExpected } from '../taps/ftp/correlate.js';
import { serveFtpUrl } from '../taps/ftp/url.js';
import { TAPS } from '../taps/registry.js';
import { pickTapRule, ruleCaches, SERVER_FIRST_PORTS } from '../taps/rules.js';
import type { HttpTapContext } from '../taps/http/tap.js';
import { absoluteTarget, denyHttp } from '../taps/http/forward.js';
import { serveHttp } from '../taps/http/cached.js';
import { PROXY_VIA } from '../taps/http/headers.js';
import { dialSpoofed } from '../net/spoof.js';
import { dialRoute, httpRoutesFor, mayRouteHttpToProxy, queryFor, routesDirect, type HttpRoute } from '../upstream/router.js';
import { nameCache } from '../net/dns.js';
import { ProxyError, toProxyError } from './errors.js';
import type { Session } from './session.js';
import type { Tunnel } from './tunnel.js';

/** The most a peek reads from each direction: a TLS ClientHello of 16 KiB with its record headers. */
const SNIFF_MAX_BYTES = 17 * 1024;

export interface PipelineDeps {
  config(): Config;
  /** The HTTP cache, when one is open. */
  cache(): HttpCache | null;
  log: Logger;
  events: ProxyEvents;
  limits: ConnectionLimits;
  /** BANDWIDTH= buckets; absent = no shaping. */
  shaper?: BandwidthShaper;
  /** QUOTA= counters and the usage database; absent = no quotas. */
  quotas?: QuotaService;
  /** Aborted when the proxy stops: pending dials give up. */
  shutdown: AbortSignal;
}

export const VIA = PROXY_VIA;

/**
 * Whether a direct plan stays true until the configuration changes (or its name's addresses do):
 * not when a rule or route depends on the time of day, nor when MAXIMA counts connections.
 * An FTP data connection expected later makes the native door forget them (TunnelSink.watchPlans).
 */
function decisionsKeep(config: Config): boolean {
  const m = config.maxima;
  if (m.conn > 0 || m.peruser > 0 || m.persrc > 0 || (m.perdoor ?? 0) > 0) return false;
  return !config.rules.some((r) => r.when) && !(config.routes ?? []).some((r) => r.when);
}

export class Pipeline implements TunnelSink {
  constructor(private readonly deps: PipelineDeps) {}

  /**
   * Dial the next hop for a destination along its route (upstream/router.ts): the SOCKSTAP rule's
   * PROXY=/SOCKS= params, YAML routes, PROXY=/SOCKS=, else direct, with fallback in order.
   * Sets `session.route`. The tap rule is picked again here (the same pure decision as in run()),
   * so the dial-first dial, the cache-first dial and a tap's `ctx.dial()` all use its params.
   */
  dial(dst: HostPort, session: Session): Promise<Socket> {
    const config = this.deps.config();
    if (session.door === 'transparent' && config.spoof) {
      // SPOOF=client: the server sees the client's own address (full transparency, TPROXY routing).
      session.route = 'direct (spoofed)';
      return dialSpoofed(dst, session.clientAddress, config.timeouts.connect, { signal: this.deps.shutdown });
    }
    const tapRule = pickTapRule(config, { clientAddress: session.clientAddress, user: session.user, dst });
    return dialRoute(config, dst, session, {
      timeoutMs: config.timeouts.connect,
      signal: this.deps.shutdown,
      tapRule,
      onFallback: (failed, err, next) =>
        this.deps.log.info('route failed, trying the next', { session: session.id, route: failed, code: err.code, reason: err.message, next }),
    });
  }

  /**
   * For the HTTP request path (serveHttp): the router's routes of a request when they start with an
   * HTTP upstream, which then gets the request in absolute-form (router.ts httpRoutesFor).
   * Undefined when no HTTP upstream is configured at all, so a direct request does no routing work.
   * `proto` routes a tunnel not sniffed yet as the HTTP it may turn out to be.
   */
  private httpRoutes(config: Config, session: Session, proto?: string): ((dst: HostPort) => HttpRoute[] | null) | undefined {
    if (!mayRouteHttpToProxy(config)) return undefined;
    // SPOOF=client connections leave directly with the client's address (see dial()).
    if (session.door === 'transparent' && config.spoof) return undefined;
    return (dst) =>
      httpRoutesFor(config, dst, session, {
        timeoutMs: config.timeouts.connect,
        signal: this.deps.shutdown,
        // As in dial(): the SOCKSTAP rule for this destination may name its own PROXY=.
        tapRule: pickTapRule(config, { clientAddress: session.clientAddress, user: session.user, dst }),
        ...(proto !== undefined ? { proto } : {}),
      });
  }

  /** Checkpoint 2 for a tunnel or request; throws EDENIED/ELIMIT when refused. */
  private async authorize(session: Session, tags: readonly string[], dst: HostPort): Promise<void> {
    const config = this.deps.config();
    const dstAddresses = rulesNeedAddresses(config) ? await destinationAddresses(dst.host) : undefined;
    const decision = checkDestination(config, {
      tags,
      clientAddress: session.clientAddress,
      user: session.user,
      dst,
      dstAddresses,
    });
    if (!decision.allowed) {
      throw new ProxyError('EDENIED', `destination ${dst.host}:${dst.port} refused by ${decision.by}`);
    }
    const window = session.user !== null ? config.userWindows?.[session.user] : undefined;
    if (window && !window.contains(new Date())) {
      throw new ProxyError('EDENIED', `user ${session.user} is outside their time window ${window.source}`);
    }
    this.deps.quotas?.check(config, limitSubject(session));
  }

  /** MAXIMA=peruser, counted once per session for its lifetime. */
  private acquireUser(session: Session): void {
    const user = session.user;
    if (!user || userCounted.has(session)) return;
    const broken = this.deps.limits.acquireUser(this.deps.config().maxima, user);
    if (broken) throw new ProxyError('ELIMIT', `MAXIMA=${broken} reached for user ${user}`);
    userCounted.add(session);
    const release = (): void => this.deps.limits.releaseUser(user);
    const client = [...session.sockets][0];
    if (client) client.once('close', release);
    else release();
  }

  private refused(session: Session, err: ProxyError, what: string): void {
    session.result = err.code;
    this.deps.log.info(`${what} refused`, {
      session: session.id,
      client: session.clientLabel,
      user: session.user ?? undefined,
      code: err.code,
      reason: err.message,
    });
  }

  handle(tunnel: Tunnel): Promise<void> {
    return tunnel.session.hold(this.run(tunnel));
  }

  /**
   * The native accept path's question (TunnelSink.planDirect): what run() would do with this
   * CONNECT, up to the dial. Everything that needs the JavaScript pipeline is checked first, so a
   * tunnel it takes over is authorized once, in run().
   */
  async planDirect(session: Session, tags: readonly string[], dst: HostPort): Promise<DirectPlan> {
    const config = this.deps.config();
    if (
      config.relay === 'js' ||
      config.bandwidth.length > 0 ||
      config.quota.length > 0 ||
      session.user !== null ||
      ftpDataExpected() ||
      pickTapRule(config, { clientAddress: session.clientAddress, user: null, dst }) !== null ||
      !routesDirect(config, queryFor(session, dst, null))
    ) {
      return JAVASCRIPT;
    }
    try {
      await this.authorize(session, tags, dst);
    } catch (err) {
      const e = toProxyError(err);
      this.refused(session, e, 'connect');
      return { kind: 'refuse', error: e };
    }
    let found;
    try {
      found = await nameCache(config.dns).resolve(dst.host);
    } catch (err) {
      const e = toProxyError(err);
      session.result = e.code;
      this.deps.log.info('connect failed', { session: session.id, client: session.clientLabel, dst: `${dst.host}:${dst.port}`, code: e.code, reason: e.message });
      return { kind: 'refuse', error: e };
    }
    // Two families: Node's Happy Eyeballs races them (upstream/direct.ts); the thread would not.
    const family = found[0]?.family;
    if (family === undefined || found.some((a) => a.family !== family)) return JAVASCRIPT;
    return {
      kind: 'direct',
      addresses: found.map((a) => a.address),
      timeoutMs: config.timeouts.connect,
      idleMs: config.timeouts.idle,
      rememberMs: decisionsKeep(config) ? nameCache(config.dns).remainingMs(dst.host) : 0,
    };
  }

  private async run(tunnel: Tunnel): Promise<void> {
    const { session } = tunnel;
    session.command = tunnel.command;
    session.dst = tunnel.dst;
    const config = this.deps.config();
    try {
      this.acquireUser(session);
      await this.authorize(session, tunnel.tags, tunnel.dst);
    } catch (err) {
      const e = toProxyError(err);
      this.refused(session, e, tunnel.command);
      tunnel.replyFailure(e.code, e.message);
      return;
    }

    // An FTP data connection that a tapped control session announced (PASV/EPSV) or asked for
    // (PORT/EPRT through BIND): counted and logged as that session's transfer.
    const ftpData = claimFtpDataTunnel({ clientAddress: session.clientAddress, dst: tunnel.dst, command: tunnel.command });

    if (tunnel.command === 'bind') {
      const r = await runBind(tunnel, {
        timeoutMs: config.timeouts.connect,
        idleMs: config.timeouts.idle,
        mode: relayMode(config),
        resolve: destinationAddresses,
      });
      ftpData?.finished(r);
      if (ftpData) session.sections['ftp-data'] = { control: ftpData.controlSessionId, mode: 'active' };
      session.bytesUp = r.up;
      session.bytesDown = r.down;
      if (session.result === 'ok') session.result = r.result;
      return;
    }
    if (tunnel.command === 'udp') {
      await this.runUdp(tunnel);
      return;
    }
    if (ftpData) {
      session.proto = 'ftp-data';
      const server = await this.dialForTunnel(tunnel);
      if (!server) {
        ftpData.finished({ up: 0, down: 0, result: session.result });
        return;
      }
      tunnel.replySuccess({ address: server.localAddress ?? '0.0.0.0', port: server.localPort ?? 0 });
      const r = await ftpData.run(tunnel.socket, server, session, config.timeouts.idle);
      session.bytesUp += r.up;
      session.bytesDown += r.down;
      return;
    }

    const rule = pickTapRule(config, { clientAddress: session.clientAddress, user: session.user, dst: tunnel.dst });
    if (rule) {
      await this.runTapped(tunnel, rule, config);
      return;
    }
    const server = await this.dialForTunnel(tunnel);
    if (!server) return;
    tunnel.replySuccess({ address: server.localAddress ?? '0.0.0.0', port: server.localPort ?? 0 });
    await this.relayCounted(session, tunnel.socket, server, config);
  }

  /** Dial the tunnel's destination; on failure the door replies and null is returned. */
  private async dialForTunnel(tunnel: Tunnel, replied = false): Promise<Socket | null> {
    const { session } = tunnel;
    let server: Socket;
    try {
      server = await this.dial(tunnel.dst, session);
    } catch (err) {
      const e = toProxyError(err);
      session.result = e.code;
      this.deps.log.info('connect failed', {
        session: session.id,
        client: session.clientLabel,
        dst: `${tunnel.dst.host}:${tunnel.dst.port}`,
        code: e.code,
        reason: e.message,
      });
      // In cache-first mode the door already said yes: all that is left is to close.
      if (replied) tunnel.socket.destroy();
      else tunnel.replyFailure(e.code, e.message);
      return null;
    }
    if (tunnel.socket.destroyed) {
      // The client gave up while we were dialing.
      server.destroy();
      session.result = 'client-gone';
      return null;
    }
    session.adopt(server);
    server.on('error', () => {}); // the relay records the error; never crash on a late one
    return server;
  }

  private async relayCounted(session: Session, client: Socket, server: Socket, config: Config): Promise<void> {
    // BANDWIDTH=/QUOTA=: a shape only for a connection a limit covers; otherwise the fast relay.
    let shape = null;
    let meter = null;
    if (config.bandwidth.length > 0 || config.quota.length > 0) {
      const who = limitSubject(session);
      try {
        meter = this.deps.quotas?.admit(config, who, session) ?? null;
      } catch (err) {
        // Used up between authorize() and here (another connection): the door has replied, so cut.
        this.refused(session, toProxyError(err), 'relay');
        client.destroy();
        server.destroy();
        return;
      }
      shape = relayShape(this.deps.shaper?.shapeFor(config, who) ?? null, meter);
    }
    const mode = relayMode(config);
    const r = await relay(client, server, shape ? { idleMs: config.timeouts.idle, mode, shape } : { idleMs: config.timeouts.idle, mode });
    meter?.release();
    if (r.result === 'EQUOTA') this.deps.log.info('quota used up, connection cut', { session: session.id, user: session.user ?? undefined, up: r.up, down: r.down });
    session.bytesUp += r.up;
    session.bytesDown += r.down;
    if (session.result === 'ok') session.result = r.result;
  }

  /**
   * A tunnel a SOCKSTAP rule picked. Connect strategy (DESIGN.md): dial first, reply with the real
   * outcome, then sniff both directions; but cache-first for HTTP when the cache is on and the
   * port is not a server-first one: reply at once and sniff the client, so a fresh cached
   * response is served with no connection to the server at all. The same when an HTTP upstream
   * would take this tunnel's HTTP in absolute-form: a CONNECT through it, dialed first, would go
   * unused (and Squid refuses CONNECT to port 80 by default).
   */
  private async runTapped(tunnel: Tunnel, rule: TapRule, config: Config): Promise<void> {
    const { session } = tunnel;
    const want = new Set<string>(rule.protocols);
    const cache = ruleCaches(config, rule) ? this.deps.cache() : null;
    const httpRoutes = want.has('http') ? this.httpRoutes(config, session, 'http') : undefined;
    const cacheFirst =
      want.has('http') &&
      !SERVER_FIRST_PORTS.has(tunnel.dst.port) &&
      (cache !== null || (httpRoutes !== undefined && httpRoutes(tunnel.dst) !== null));
    let server: Socket | null = null;
    if (cacheFirst) {
      tunnel.replySuccess({ address: '0.0.0.0', port: 0 });
    } else {
      server = await this.dialForTunnel(tunnel);
      if (!server) return;
      tunnel.replySuccess({ address: server.localAddress ?? '0.0.0.0', port: server.localPort ?? 0 });
    }
    const peek = await peekTunnel(tunnel.socket, server, {
      timeoutMs: config.timeouts.sniff,
      maxBytes: SNIFF_MAX_BYTES,
      portHint: tunnel.dst.port,
      want,
    });
    session.proto = peek.proto;
    if (peek.proto === 'tls') session.sections.tls = { sni: peek.info.sni ?? null, alpn: peek.info.alpn ?? [] };

    // TLS: the SNI names the server really asked for; PERMIT/REJECT may name it (checkpoint 3).
    if (peek.proto === 'tls' && peek.info.sni) {
      try {
        await this.authorize(session, ['tls', ...tunnel.tags], { host: peek.info.sni, port: tunnel.dst.port });
      } catch (err) {
        const e = toProxyError(err);
        this.refused(session, e, 'tls server name');
        tunnel.socket.destroy();
        server?.destroy();
        return;
      }
    }

    const ctx: HttpTapContext = {
      session,
      client: tunnel.socket,
      server,
      dst: tunnel.dst,
      rule,
      info: peek.info,
      config,
      services: { events: this.deps.events, log: this.deps.log, cache },
      dial: async () => {
        const s = await this.dial(tunnel.dst, session);
        session.adopt(s);
        s.on('error', () => {});
        return s;
      },
      dialTo: async (dst) => {
        const s = await this.dial(dst, session);
        session.adopt(s);
        s.on('error', () => {});
        return s;
      },
      authorize: (dst) => this.authorize(session, [peek.proto, ...tunnel.tags], dst),
      relay: (c, s) => this.relayCounted(session, c, s, config),
      ...(httpRoutes ? { httpRoutes } : {}),
    };
    const tap = want.has(peek.proto) ? TAPS[peek.proto] : undefined;
    if (tap) {
      await tap(ctx);
      return;
    }
    server ??= await this.dialForTunnel(tunnel, true);
    if (!server) return;
    await this.relayCounted(session, tunnel.socket, server, config);
  }

  associateUdp(tunnel: Tunnel): Promise<void> {
    return tunnel.session.hold(this.runUdp(tunnel));
  }

  private async runUdp(tunnel: Tunnel): Promise<void> {
    const { session } = tunnel;
    session.command = 'udp';
    session.dst = tunnel.dst;
    try {
      this.acquireUser(session);
    } catch (err) {
      const e = toProxyError(err);
      this.refused(session, e, 'udp');
      tunnel.replyFailure(e.code, e.message);
      return;
    }
    const config = this.deps.config();
    const r = await runUdpAssociate(tunnel, {
      idleMs: config.timeouts.idle,
      // Checkpoint 2 for every datagram's destination; names are matched as names.
      checkDestination: (host, port) =>
        checkDestination(this.deps.config(), {
          tags: [...tunnel.tags, 'udp'],
          clientAddress: session.clientAddress,
          user: session.user,
          dst: { host, port },
        }).allowed,
    });
    session.bytesUp = r.up;
    session.bytesDown = r.down;
    if (session.result === 'ok') session.result = r.result;
  }

  /** `GET ftp://host/path` through the HTTP door: sockstap's own FTP client, cached like HTTP. */
  private fetchFtpUrl(req: IncomingMessage, res: ServerResponse, session: Session): void {
    let url: URL;
    try {
      url = new URL(req.url ?? '');
    } catch {
      denyHttp(req, res, session, this.deps.events, 'EPROTO', 'the ftp:// URL is malformed');
      return;
    }
    const dst: HostPort = { host: url.hostname.replace(/^\[|\]$/g, ''), port: url.port ? Number(url.port) : 21 };
    session.command = 'http';
    session.dst ??= dst;
    const config = this.deps.config();
    Promise.resolve()
      .then(() => {
        this.acquireUser(session);
        return this.authorize(session, ['http', 'ftp'], dst);
      })
      .then(
        () =>
          serveFtpUrl(req, res, {
            session,
            cache: config.cache.enabled ? this.deps.cache() : null,
            dial: (d) => this.dial(d, session),
            events: this.deps.events,
            log: this.deps.log,
            timeouts: config.timeouts,
          }),
        (err: unknown) => {
          const e = toProxyError(err);
          this.refused(session, e, 'ftp url');
          denyHttp(req, res, session, this.deps.events, e.code, e.message);
        },
      );
  }

  forwardHttp(req: IncomingMessage, res: ServerResponse, session: Session): void {
    if (/^ftp:\/\//i.test(req.url ?? '')) {
      this.fetchFtpUrl(req, res, session);
      return;
    }
    // absoluteTarget keeps the path byte for byte (new URL() would normalise it).
    const target = absoluteTarget(req.url ?? '');
    if (!target) {
      denyHttp(req, res, session, this.deps.events, 'EPROTO', 'the HTTP door forwards absolute http:// URLs only');
      return;
    }
    const dst: HostPort = { host: target.host, port: target.port };
    session.command = 'http';
    session.dst ??= dst;
    const config = this.deps.config();
    const routesFor = this.httpRoutes(config, session);
    Promise.resolve()
      .then(() => {
        this.acquireUser(session);
        return this.authorize(session, ['http'], dst);
      })
      .then(
        () =>
          // The same path as tapped HTTP (taps/http/cached.ts): MOUNT, checkpoint 3, header
          // rules, the cache (CACHE=do) and access.log.
          serveHttp(req, res, {
            session,
            target,
            host: 'target',
            dial: (d) => this.dial(d, session),
            authorize: (d) => this.authorize(session, ['http'], d),
            cache: config.cache.enabled ? this.deps.cache() : null,
            config,
            events: this.deps.events,
            log: this.deps.log,
            via: VIA,
            timeouts: config.timeouts,
            ...(routesFor ? { routesFor } : {}),
          }),
        (err: unknown) => {
          const e = toProxyError(err);
          this.refused(session, e, 'http request');
          denyHttp(req, res, session, this.deps.events, e.code, e.message);
        },
      );
  }
}

const userCounted = new WeakSet<Session>();
const JAVASCRIPT: DirectPlan = { kind: 'javascript' };

/** Who a session is for BANDWIDTH=/QUOTA= scopes. */
export function limitSubject(session: Session): LimitSubject {
  return { user: session.user, clientAddress: session.clientAddress, doorPort: portOfListen(session.listen) };
}

/** RELAY=splice|js as relay()'s mode: splice falls back to the JavaScript fast path by itself. */
function relayMode(config: Config): RelayMode {
  return config.relay === 'js' ? 'fast' : 'splice';
}
