/**
 * The pipeline: where every front door's tunnel goes. It asks policy at the destination
 * checkpoint, takes the tap decision, dials, lets the door reply in its own protocol, and relays.
 * Only this file and sockstap.ts see every layer (doors, policy, dialers, taps, services).
 */
import { srcifFor } from '../upstream/srcif.js';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { HttpCache } from '../cache/http-cache.js';
import type { Config, HostPort, TapRule } from '../config/types.js';
import type { DirectPlan, TunnelSink } from '../frontdoors/door.js';
import { runBind } from '../net/bind.js';
import { peekTunnel, type PeekResult } from '../net/peek.js';
import { relay, type RelayMode, type RelayShape } from '../net/relay.js';
import { runUdpAssociate } from '../net/udp-relay.js';
import type { ProxyEvents } from '../observe/events.js';
import type { Logger } from '../observe/log.js';
import { checkDestination, destinationAddresses, rulesNeedAddresses } from '../policy/acl.js';
import type { ConnectionLimits } from '../policy/limits.js';
import type { QuotaMeter, QuotaService } from '../policy/quota.js';
import { anyLimit, portOfListen, relayShape, type BandwidthShaper, type LimitSubject } from '../policy/shaping.js';
import { isShaped, shapeSocket } from '../net/shaped-socket.js';
import { claimFtpDataTunnel, ftpDataExpected } from '../taps/ftp/correlate.js';
import { serveFtpUrl } from '../taps/ftp/url.js';
import { TAPS } from '../taps/registry.js';
import { pickTapRule, ruleCaches, ruleStrategy } from '../taps/rules.js';
import { requestRulesMayApply } from '../policy/http-rules.js';
import { chooseStrategy, DestinationMemory } from './destinations.js';
import type { HttpTapContext } from '../taps/http/tap.js';
import type { TapContext } from '../taps/tap.js';
import { absoluteTarget, denyHttp } from '../taps/http/forward.js';
import { serveHttp } from '../taps/http/cached.js';
import { applyMounts, mountRequestOf } from '../taps/http/mount.js';
import { PROXY_VIA } from '../taps/http/headers.js';
import { dialSpoofed } from '../net/spoof.js';
import { dialRoute, httpRoutesFor, mayRouteHttpToProxy, queryFor, routesDirect, type HttpRoute } from '../upstream/router.js';
import { nameCache } from '../net/dns.js';
import {
  addressesOf,
  literalReach,
  normaliseDst,
  normaliseHost,
  ownDestination,
  pinnedResolution,
  reachedAddresses,
  resolveForSession,
  type OwnAddress,
  type Resolution,
} from '../net/destination.js';
import type { LookupFunction } from 'node:net';
import { isIP } from 'node:net';
import { ProxyError, toProxyError, type ProxyErrorCode } from './errors.js';
import { formatHostPort, type Session } from './session.js';
import type { Tunnel } from './tunnel.js';
import type { CertificateAuthority } from '../tls/ca.js';
import { canonicalKey } from '../cache/policy.js';
import { acceptClientTls, connectServerTls, PinnedNames, serveTlsFailurePage, stlsDecision } from '../tls/intercept.js';
import { groupsOf } from '../policy/groups.js';
import { udpUpstreamOptions } from '../upstream/udp-chain.js';

/** The most a peek reads from each direction: a TLS ClientHello of 16 KiB with its record headers. */
const SNIFF_MAX_BYTES = 17 * 1024;
/** A close this soon after the TLS handshake, with no request, is a client refusing the leaf. */
const PINNING_CLOSE_MS = 1000;

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
  /** sockstap's own listeners and admin address: never a destination (net/destination.ts). */
  ownAddresses?(): readonly OwnAddress[];
  /** The CA of TLS interception, loaded when an STLS=mitm rule needs it; absent or null: none. */
  ca?: () => CertificateAuthority | null;
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
  /** What tapped destinations spoke (the connect strategy's memory); one per running instance. */
  private readonly destinations = new DestinationMemory();
  private memoryConfig: Config | null = null;
  /** SNIs whose clients rejected the interception leaf (pinning): relayed untouched for a while. */
  private readonly pinned = new PinnedNames();

  constructor(private readonly deps: PipelineDeps) {}

  /**
   * Dial the next hop for a destination along its route (upstream/router.ts): the SOCKSTAP rule's
   * PROXY=/SOCKS= params, YAML routes, PROXY=/SOCKS=, else direct, with fallback in order.
   * Sets `session.route`. The tap rule is picked again here (the same pure decision as in run()),
   * so the dial-first dial, the cache-first dial and a tap's `ctx.dial()` all use its params.
   */
  dial(rawDst: HostPort, session: Session): Promise<Socket> {
    const config = this.deps.config();
    const dst = normaliseDst(rawDst);
    // Never to itself, whatever path led here (an FTP server's PASV address included).
    const own = this.ownOf(dst, literalReach(dst.host));
    if (own) return Promise.reject(own);
    if (session.door === 'transparent' && config.spoof) {
      // SPOOF=client: the server sees the client's own address (full transparency, TPROXY routing).
      session.route = 'direct (spoofed)';
      return dialSpoofed(dst, session.clientAddress, config.timeouts.connect, { signal: this.deps.shutdown });
    }
    const tapRule = pickTapRule(config, { clientAddress: session.clientAddress, user: session.user, dst });
    return dialRoute(config, dst, session, {
      timeoutMs: tapRule ? tapRule.timeouts.connect : config.timeouts.connect,
      signal: this.deps.shutdown,
      tapRule,
      lookup: this.lookupFor(session, config, dst),
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
    return (dst) => {
      // As in dial(): the SOCKSTAP rule for this destination may name its own PROXY= and TIMEOUT=.
      const tapRule = pickTapRule(config, { clientAddress: session.clientAddress, user: session.user, dst });
      return httpRoutesFor(config, dst, session, {
        timeoutMs: tapRule ? tapRule.timeouts.connect : config.timeouts.connect,
        signal: this.deps.shutdown,
        tapRule,
        lookup: this.lookupFor(session, config, normaliseDst(dst)),
        ...(proto !== undefined ? { proto } : {}),
      });
    };
  }

  /**
   * The lookup for a dial to `dst`: the answer authorize() checked for this session (pinned), else
   * one resolution through the name cache, which is then pinned, after the own-address check.
   */
  private lookupFor(session: Session, config: Config, dst: HostPort): LookupFunction {
    const names = nameCache(config.dns);
    return names.lookupFunction(async (host) => {
      const name = normaliseHost(host);
      if (name !== dst.host) return names.resolve(name); // an upstream hop's own name
      const r = await resolveForSession(session, names, name);
      if (r instanceof ProxyError) throw r;
      const own = this.ownOf(dst, reachedAddresses(addressesOf(r)));
      if (own) throw own;
      return r;
    });
  }

  /** EDENIED when `dst` (reaching these addresses) is sockstap's own listener or admin, else null. */
  private ownOf(dst: HostPort, reached: readonly string[]): ProxyError | null {
    const own = this.deps.ownAddresses ? ownDestination(this.deps.ownAddresses(), reached, dst.port) : null;
    if (!own) return null;
    const via = reached[0] !== undefined && reached[0] !== dst.host ? ` (${reached[0]})` : '';
    return new ProxyError('EDENIED', `destination ${formatHostPort(dst.host, dst.port)}${via} is sockstap's own ${own.what}: the proxy never relays to itself`);
  }

  /** Whether sockstap itself resolves and dials this destination (no upstream proxy on its route). */
  private resolvesHere(config: Config, session: Session, dst: HostPort): boolean {
    if (session.door === 'transparent' && config.spoof) return true;
    const tapRule = pickTapRule(config, { clientAddress: session.clientAddress, user: session.user, dst });
    return routesDirect(config, queryFor(session, dst, tapRule));
  }

  /**
   * Checkpoint 2 for a tunnel or request; throws EDENIED/ELIMIT when refused. A name is resolved
   * once for the connection through the name cache when sockstap dials it or a rule matches on
   * addresses; that answer is what the rules check and what the dialer dials (net/destination.ts).
   * Returns it (null when the name was not resolved here). `nameOnly`: a name the tunnel is not
   * dialed by (a TLS server name), checked by the rules only. `rule`: the SOCKSTAP rule that
   * picked the tunnel, whose PERMIT/REJECT come first and whose QUOTA= count too.
   */
  private async authorize(
    session: Session,
    tags: readonly string[],
    rawDst: HostPort,
    rule?: TapRule | null,
    nameOnly = false,
  ): Promise<Resolution | null> {
    const base = this.deps.config();
    const config = rule ? ruleView(base, rule) : base;
    const dst = normaliseDst(rawDst);
    let resolution: Resolution | null = null;
    let reached: string[] | undefined;
    if (isIP(dst.host) !== 0) {
      reached = reachedAddresses([dst.host]);
    } else if (rulesNeedAddresses(config) || (!nameOnly && this.resolvesHere(config, session, dst))) {
      resolution = await resolveForSession(session, nameCache(config.dns), dst.host);
      reached = reachedAddresses(addressesOf(resolution));
    }
    if (!nameOnly) {
      const own = this.ownOf(dst, reached ?? literalReach(dst.host));
      if (own) throw own;
    }
    const dstAddresses = rulesNeedAddresses(config) ? reached : undefined;
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
    this.deps.quotas?.check(base, limitSubject(session), rule);
    return resolution;
  }

  /** MAXIMA=peruser, counted once per session for its lifetime. */
  private acquireUser(session: Session): void {
    const user = session.user;
    if (!user || userCounted.has(session)) return;
    const broken = this.deps.limits.acquireUser(this.deps.config().maxima, user, groupsOf(this.deps.config(), user));
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
    let checked: Resolution | null;
    try {
      checked = await this.authorize(session, tags, dst);
    } catch (err) {
      const e = toProxyError(err);
      this.refused(session, e, 'connect');
      return { kind: 'refuse', error: e };
    }
    // The addresses authorize() checked are the ones dialed: one resolution per connection.
    let found;
    try {
      const r = checked ?? pinnedResolution(session, normaliseHost(dst.host)) ?? (await nameCache(config.dns).resolve(dst.host));
      if (r instanceof ProxyError) throw r;
      found = r;
    } catch (err) {
      const e = toProxyError(err);
      session.result = e.code;
      this.deps.log.info('connect failed', { session: session.id, client: session.clientLabel, dst: `${dst.host}:${dst.port}`, code: e.code, reason: e.message });
      return { kind: 'refuse', error: e };
    }
    // Two families: Node's Happy Eyeballs races them (upstream/direct.ts); the thread would not.
    const family = found[0]?.family;
    if (family === undefined || found.some((a) => a.family !== family)) return JAVASCRIPT;
    // SRCIF= binds the source address, which the thread's dial does not: JavaScript dials it.
    if (srcifFor(config.srcif, { dst, addresses: found, clientAddress: session.clientAddress, user: session.user })) return JAVASCRIPT;
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
    // The SOCKSTAP rule that picks the tunnel (a pure decision): its PERMIT/REJECT and QUOTA= apply from checkpoint 2 on.
    const rule = pickTapRule(config, { clientAddress: session.clientAddress, user: session.user, dst: tunnel.dst });
    try {
      this.acquireUser(session);
      await this.authorize(session, tunnel.tags, tunnel.dst, rule);
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
      // BANDWIDTH=/QUOTA= on what the BIND relays (an active-mode FTP transfer), as on a CONNECT.
      const limited = this.admitShape(session, config, rule);
      if (limited === 'refused') {
        tunnel.replyFailure('EQUOTA', 'a quota covering this connection is used up');
        ftpData?.finished({ up: 0, down: 0, result: 'EQUOTA' });
        return;
      }
      const r = await runBind(tunnel, {
        timeoutMs: (rule ?? config).timeouts.connect,
        idleMs: (rule ?? config).timeouts.idle,
        mode: relayMode(config),
        resolve: (host) => destinationAddresses(host, nameCache(config.dns)),
        ...(limited?.shape ? { shape: limited.shape } : {}),
      });
      limited?.meter?.release();
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
      // BANDWIDTH=/QUOTA= on the data the control session's tap relays itself.
      if (!this.shapeClient(session, tunnel.socket, config, rule)) {
        server.destroy();
        ftpData.finished({ up: 0, down: 0, result: session.result });
        return;
      }
      const r = await ftpData.run(tunnel.socket, server, session, (rule ?? config).timeouts.idle);
      session.bytesUp += r.up;
      session.bytesDown += r.down;
      return;
    }

    if (rule) {
      await this.runTapped(tunnel, rule, config);
      return;
    }
    const server = await this.dialForTunnel(tunnel);
    if (!server) return;
    tunnel.replySuccess({ address: server.localAddress ?? '0.0.0.0', port: server.localPort ?? 0 });
    await this.relayCounted(session, tunnel.socket, server, config);
  }

  /** A tap's dial: the socket belongs to the session (closed with it) and never throws late. */
  private async dialOwned(dst: HostPort, session: Session): Promise<Socket> {
    const s = await this.dial(dst, session);
    session.adopt(s);
    s.on('error', () => {}); // the tap records the error; never crash on a late one
    return s;
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

  /**
   * `config` is the tunnel's view (ruleView: its rule's timeouts); `rule` adds its BANDWIDTH=/QUOTA=.
   * A client socket a tap already shaped (shapeClient) is relayed through pipe(), which passes its hooks.
   */
  private async relayCounted(session: Session, client: Socket, server: Socket, config: Config, rule?: TapRule | null): Promise<void> {
    if (isShaped(client)) {
      const r = await relay(client, server, { idleMs: config.timeouts.idle, mode: 'pipe' });
      session.bytesUp += r.up;
      session.bytesDown += r.down;
      if (session.result === 'ok') session.result = r.result;
      return;
    }
    // BANDWIDTH=/QUOTA=: a shape only for a connection a limit covers; otherwise the fast relay.
    const limited = this.admitShape(session, config, rule);
    if (limited === 'refused') {
      // Used up between authorize() and here (another connection): the door has replied, so cut.
      client.destroy();
      server.destroy();
      return;
    }
    const shape = limited?.shape ?? null;
    const meter = limited?.meter ?? null;
    const mode = relayMode(config);
    const r = await relay(client, server, shape ? { idleMs: config.timeouts.idle, mode, shape } : { idleMs: config.timeouts.idle, mode });
    meter?.release();
    if (r.result === 'EQUOTA') this.deps.log.info('quota used up, connection cut', { session: session.id, user: session.user ?? undefined, up: r.up, down: r.down });
    session.bytesUp += r.up;
    session.bytesDown += r.down;
    if (session.result === 'ok') session.result = r.result;
  }

  /** The destination memory of the configuration in force: a reload forgets what was learnt. */
  private destinationsFor(config: Config): DestinationMemory {
    if (config !== this.memoryConfig) {
      this.memoryConfig = config;
      this.destinations.forget();
      this.pinned.forget();
    }
    return this.destinations;
  }

  /** What the connect strategy has learnt, for tests and the admin API. */
  get destinationMemory(): DestinationMemory {
    return this.destinationsFor(this.deps.config());
  }

  /**
   * A tunnel a SOCKSTAP rule picked. The connect strategy (DESIGN.md, core/destinations.ts):
   * - dial-first for a destination known (or, never seen, guessed by its port) to speak TLS, a
   *   server-first protocol or anything but HTTP, and whenever HTTP could not be answered without
   *   the server: dial, reply with the real outcome, then sniff both directions;
   * - cache-first for one known (or guessed) to speak HTTP when the cache is on or an HTTP
   *   upstream would take its requests in absolute-form: reply at once and sniff the client, so a
   *   fresh cached response is served with no connection to the server at all. A client silent
   *   for its share of the sniff window is a client waiting for a banner: dial then, and sniff
   *   the server's first bytes; a failure of that late dial is recorded as what it is.
   * Once the server is dialed, the peek waits for first bytes as long as the tunnel may idle, so
   * a client slower than the window is still recognised (per-request policy cannot be outwaited).
   */
  private async runTapped(tunnel: Tunnel, rule: TapRule, base: Config): Promise<void> {
    const { session } = tunnel;
    // What the rule's tunnels get: its TIMEOUT=, MOUNT=, PERMIT/REJECT over the global ones.
    const config = ruleView(base, rule);
    const want = new Set<string>(rule.protocols);
    const cache = ruleCaches(config, rule) ? this.deps.cache() : null;
    const httpRoutes = want.has('http') ? this.httpRoutes(config, session, 'http') : undefined;
    // Keyed on the configuration in force, not the rule's view of it: a reload forgets, a view does not.
    const memory = this.destinationsFor(base);
    const seen = memory.get(tunnel.dst.host, tunnel.dst.port);
    const httpWithoutServer = want.has('http') && (cache !== null || (httpRoutes !== undefined && httpRoutes(tunnel.dst) !== null));
    const strategy = chooseStrategy(seen, tunnel.dst.port, httpWithoutServer, ruleStrategy(rule), this.httpsFromCache(tunnel, rule, config, cache));
    const sniffMs = config.timeouts.sniff;
    // Request rules that could decide this tunnel's HTTP: then its stream must be read or refused.
    const requestRulesApply =
      want.has('http') &&
      requestRulesMayApply(config, { clientAddress: session.clientAddress, user: session.user, host: tunnel.dst.host, port: tunnel.dst.port });
    const peekOptions = {
      timeoutMs: sniffMs,
      maxBytes: SNIFF_MAX_BYTES,
      portHint: tunnel.dst.port,
      want,
      // Where request rules apply, a direction that has started gets the handshake's time to
      // finish its first line (a request line split across the window still meets the rules);
      // elsewhere the sniff window, so a short first message of another protocol (a one-byte
      // keepalive) is relayed at once rather than held.
      verdictMs: requestRulesApply ? Math.max(sniffMs, config.timeouts.handshake) : sniffMs,
    };
    let server: Socket | null = null;
    let peek: PeekResult;
    if (strategy === 'dial-first') {
      server = await this.dialForTunnel(tunnel);
      if (!server) return;
      tunnel.replySuccess({ address: server.localAddress ?? '0.0.0.0', port: server.localPort ?? 0 });
      peek = await peekTunnel(tunnel.socket, server, { ...peekOptions, firstBytesMs: config.timeouts.idle });
    } else {
      tunnel.replySuccess({ address: '0.0.0.0', port: 0 });
      // The client's share of the window: all of it for a destination known to speak HTTP; half
      // for one never seen, whose silence may mean it waits for a server's banner.
      const share = seen ? sniffMs : Math.ceil(sniffMs / 2);
      peek = await peekTunnel(tunnel.socket, null, { ...peekOptions, timeoutMs: share });
      if (peek.firstSpeaker === null) {
        if (peek.stoppedBy === 'closed' || tunnel.socket.destroyed) {
          if (session.result === 'ok') session.result = 'client-gone';
          return;
        }
        server = await this.dialLate(tunnel);
        if (!server) return;
        peek = await peekTunnel(tunnel.socket, server, { ...peekOptions, firstBytesMs: config.timeouts.idle });
      }
    }
    if (server && peek.firstSpeaker === null && peek.stoppedBy === 'timeout' && !peek.clientEnded && !peek.serverEnded) {
      // Nobody said anything for as long as a tunnel may idle: it ends as an idle relay would.
      if (session.result === 'ok') session.result = 'idle';
      tunnel.socket.destroy();
      server.destroy();
      return;
    }
    session.proto = peek.proto;
    learn(memory, tunnel.dst, peek);
    if (peek.proto === 'tls') {
      session.sections.tls = { sni: peek.info.sni ?? null, alpn: peek.info.alpn ?? [], intercepted: false, subject: null };
    }

    // TLS: the SNI names the server really asked for; PERMIT/REJECT may name it (checkpoint 3).
    if (peek.proto === 'tls' && peek.info.sni) {
      try {
        await this.authorize(session, ['tls', ...tunnel.tags], { host: peek.info.sni, port: tunnel.dst.port }, rule, true);
      } catch (err) {
        const e = toProxyError(err);
        this.refused(session, e, 'tls server name');
        tunnel.socket.destroy();
        server?.destroy();
        return;
      }
    }

    // STLS=mitm: the TLS is terminated on both sides and what it carries is tapped (tls/intercept.ts).
    if (peek.proto === 'tls' && want.has('tls') && (await this.intercept(tunnel, rule, config, peek, server, cache))) return;

    // Fail closed: a client stream the sniffers cannot read, where request rules could decide its
    // requests, is refused, not relayed past them.
    if (peek.proto === 'raw' && peek.firstSpeaker === 'client' && requestRulesApply) {
      const e = new ProxyError(
        'EPROTO',
        `the tunnel to ${tunnel.dst.host}:${tunnel.dst.port} does not carry a request the HTTP tap can read, and request rules apply to it (${peek.stoppedBy})`,
      );
      this.refused(session, e, 'uninterpreted tunnel');
      tunnel.noteFailure?.(e.code, e.message);
      tunnel.socket.destroy();
      server?.destroy();
      return;
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
      dial: () => this.dialOwned(tunnel.dst, session),
      dialTo: (dst) => this.dialOwned(dst, session),
      authorize: async (dst) => void (await this.authorize(session, [peek.proto, ...tunnel.tags], dst, rule)),
      relay: (c, s) => this.relayCounted(session, c, s, config, rule),
      ...(httpRoutes ? { httpRoutes } : {}),
    };
    const upgradeTls = peek.proto !== 'http' && peek.proto !== 'tls' ? this.starttlsUpgrade(tunnel, config) : undefined;
    if (upgradeTls) ctx.upgradeTls = upgradeTls;
    const tap = want.has(peek.proto) ? TAPS[peek.proto] : undefined;
    if (tap) {
      // Every byte the tap moves to and from the client passes BANDWIDTH=/QUOTA= (issue 12 item 5).
      if (!this.shapeClient(session, tunnel.socket, base, rule)) {
        server?.destroy();
        return;
      }
      await tap(ctx);
      return;
    }
    server ??= await this.dialLate(tunnel);
    if (!server) return;
    await this.relayCounted(session, tunnel.socket, server, config, rule);
  }

  /**
   * The relay shape and quota meter of a connection some BANDWIDTH=/QUOTA= covers (the global
   * limits and its SOCKSTAP rule's); null when none does (the fast relay), 'refused' when a quota
   * is used up (logged, session.result set).
   */
  private admitShape(session: Session, config: Config, rule: TapRule | null | undefined): { shape: RelayShape | null; meter: QuotaMeter | null } | null | 'refused' {
    if (!anyLimit(config, rule)) return null;
    const who = limitSubject(session);
    let meter: QuotaMeter | null;
    try {
      meter = this.deps.quotas?.admit(config, who, session, rule) ?? null;
    } catch (err) {
      this.refused(session, toProxyError(err), 'relay');
      return 'refused';
    }
    return { shape: relayShape(this.deps.shaper?.shapeFor(config, who, rule) ?? null, meter), meter };
  }

  /**
   * BANDWIDTH=/QUOTA= at a client socket that a tap or the HTTP door reads and writes itself
   * (net/shaped-socket.ts): the same buckets and quota meter as a relayed tunnel's. False when a
   * quota is used up (the session is refused and the socket destroyed).
   */
  private shapeClient(session: Session, client: Socket, config: Config, rule: TapRule | null): boolean {
    if (isShaped(client)) return true;
    const limited = this.admitShape(session, config, rule);
    if (limited === 'refused') {
      client.destroy();
      return false;
    }
    if (!limited?.shape) return true;
    const { shape, meter } = limited;
    shapeSocket(client, shape, () => {
      session.result = 'EQUOTA';
      this.deps.log.info('quota used up, connection cut', { session: session.id, user: session.user ?? undefined });
    });
    if (meter) client.once('close', () => meter.release());
    return true;
  }

  /**
   * STARTTLS/STLS in a line tap (SMTP, POP3, IMAP) under STLS=mitm: after the server accepted the
   * upgrade, TLS to the server (verified, named as the tunnel's host) and a leaf to the client,
   * and the tap goes on reading commands inside. Undefined when STLS does not intercept this
   * destination (the tap relays the rest, as without interception).
   */
  private starttlsUpgrade(tunnel: Tunnel, config: Config): TapContext['upgradeTls'] {
    const ca = this.deps.ca?.() ?? null;
    const { session } = tunnel;
    if (!ca || stlsDecision(config.tls, { clientAddress: session.clientAddress, user: session.user, dst: tunnel.dst, sni: null }) !== 'mitm') return undefined;
    const name = tunnel.dst.host;
    if (this.pinned.has(name)) return undefined;
    const log = this.deps.log;
    return async (client, server) => {
      let upstream;
      try {
        upstream = await connectServerTls(server, { config, name, offerHttp: false, port: tunnel.dst.port });
      } catch (err) {
        const e = toProxyError(err);
        log.warn('starttls server refused, connection closed', { session: session.id, client: session.clientLabel, name, reason: e.message });
        session.result = 'EUPSTREAM';
        throw e;
      }
      const context = await ca.leafContext(name, upstream.altNames);
      const accepted = await acceptClientTls(client, context, { alpn: false, handshakeMs: config.timeouts.handshake });
      if (!accepted.ok) {
        upstream.socket.destroy();
        if (accepted.rejected && this.pinned.add(name)) {
          log.info('tls client rejected the interception certificate; its tunnels are relayed untouched for a while', {
            session: session.id,
            client: session.clientLabel,
            name,
            reason: accepted.reason,
          });
        }
        if (session.result === 'ok') session.result = 'EPROTO';
        throw new ProxyError('EPROTO', accepted.reason);
      }
      session.sections.tls = { sni: null, alpn: [], intercepted: true, subject: upstream.subject };
      return { client: accepted.socket, server: upstream.socket };
    };
  }

  /**
   * Whether an intercepted HTTPS tunnel to this destination may be answered from the cache with
   * no server: the rule taps tls, STLS=mitm covers the destination, which is a name (the client's
   * SNI will have to name it too) not remembered as pinned, and the cache holds a fresh https://
   * response under it.
   */
  private httpsFromCache(tunnel: Tunnel, rule: TapRule, config: Config, cache: HttpCache | null): boolean {
    if (!cache || !rule.protocols.includes('tls') || !config.tls || !this.deps.ca?.()) return false;
    const dst = tunnel.dst;
    if (isIP(dst.host) !== 0 || this.pinned.has(dst.host)) return false;
    const session = tunnel.session;
    if (stlsDecision(config.tls, { clientAddress: session.clientAddress, user: session.user, dst, sni: null }) !== 'mitm') return false;
    const key = canonicalKey(`https://${dst.host}:${dst.port}/`);
    return key !== null && cache.hasFreshUnder(key.origin);
  }

  /**
   * TLS interception of a tapped tunnel whose ClientHello the peek holds, when the first STLS rule
   * that matches says mitm. False when it does not apply (the caller relays the TLS untouched):
   * no STLS rule or `-mitm`, no CA, a client offering ALPN without http/1.1, or a name whose
   * client rejected the leaf before. True when the tunnel was handled here, whatever the outcome.
   */
  private async intercept(
    tunnel: Tunnel,
    rule: TapRule,
    config: Config,
    peek: PeekResult,
    dialed: Socket | null,
    cache: HttpCache | null,
  ): Promise<boolean> {
    const { session } = tunnel;
    const sni = peek.info.sni ?? null;
    const decision = stlsDecision(config.tls, { clientAddress: session.clientAddress, user: session.user, dst: tunnel.dst, sni });
    if (decision !== 'mitm') return false;
    const ca = this.deps.ca?.() ?? null;
    if (!ca) return false;
    const alpn = peek.info.alpn ?? [];
    const http11 = alpn.includes('http/1.1');
    // The tap speaks HTTP/1.1 only: a client that cannot is left alone rather than broken.
    if (alpn.length > 0 && !http11) return false;
    const name = sni ?? tunnel.dst.host;
    if (this.pinned.has(name)) return false;
    // Cache-first (httpsFromCache): the SNI names the destination and the cache can still answer
    // under it, so the leaf is issued from the SNI alone and the server is dialed only when needed.
    const fromCache =
      dialed === null &&
      cache !== null &&
      sni !== null &&
      sni.toLowerCase().replace(/\.$/, '') === tunnel.dst.host.toLowerCase().replace(/\.$/, '') &&
      this.httpsFromCache(tunnel, rule, config, cache);
    if (fromCache) return this.interceptFromCache(tunnel, rule, config, peek, cache, ca, name, http11);
    const server = dialed ?? (await this.dialLate(tunnel));
    if (!server) return true;
    const section = session.sections.tls as { intercepted: boolean; subject: string | null };
    const raw = tunnel.socket;
    const readBase = raw.bytesRead - raw.readableLength;
    const writtenBase = raw.bytesWritten;
    const log = this.deps.log;
    const handshakeMs = config.timeouts.handshake;

    let upstream: Awaited<ReturnType<typeof connectServerTls>> | null = null;
    let failure: string | null = null;
    try {
      upstream = await connectServerTls(server, { config, name, offerHttp: http11, port: tunnel.dst.port });
    } catch (err) {
      failure = toProxyError(err).message;
    }
    let context;
    try {
      context = await ca.leafContext(name, upstream?.altNames ?? []);
    } catch (err) {
      log.error('tls leaf certificate could not be issued', { session: session.id, name, error: err instanceof Error ? err.message : String(err) });
      upstream?.socket.destroy();
      server.destroy();
      raw.destroy();
      session.result = 'EUPSTREAM';
      return true;
    }
    const accepted = await acceptClientTls(raw, context, { alpn: http11, handshakeMs });
    // At the end of every path: the raw connection's bytes (TLS records included) are the
    // session's, and the raw socket is closed with its TLS session (a destroyed TLSSocket does not
    // always close the socket it wraps).
    const countBytes = (): void => {
      session.bytesUp = Math.max(session.bytesUp, raw.bytesRead - readBase);
      session.bytesDown = Math.max(session.bytesDown, raw.bytesWritten - writtenBase);
      raw.destroy();
    };
    const rejectedLeaf = (why: string): void => {
      if (this.pinned.add(name)) {
        log.info('tls client rejected the interception certificate; its tunnels are relayed untouched for a while', {
          session: session.id,
          client: session.clientLabel,
          name,
          reason: why,
        });
      }
    };
    if (!accepted.ok) {
      upstream?.socket.destroy();
      server.destroy();
      if (accepted.rejected) rejectedLeaf(accepted.reason);
      if (session.result === 'ok') session.result = 'EPROTO';
      countBytes();
      return true;
    }
    const client = accepted.socket;
    if (!upstream) {
      server.destroy();
      log.warn('tls server refused, the client gets a 502 page', {
        session: session.id,
        client: session.clientLabel,
        dst: `${tunnel.dst.host}:${tunnel.dst.port}`,
        name,
        reason: failure ?? 'unknown',
      });
      session.result = 'EUPSTREAM';
      tunnel.noteFailure?.('EUPSTREAM', failure ?? 'the server could not be reached over TLS');
      const authority = tunnel.dst.port === 443 ? name : `${name}:${tunnel.dst.port}`;
      await serveTlsFailurePage(client, { session, events: this.deps.events, authority, reason: failure ?? 'unknown', handshakeMs });
      countBytes();
      return true;
    }
    section.intercepted = true;
    section.subject = upstream.subject;

    const sniffMs = config.timeouts.sniff;
    const inner = await peekTunnel(client, upstream.socket, {
      timeoutMs: sniffMs,
      maxBytes: SNIFF_MAX_BYTES,
      portHint: tunnel.dst.port,
      want: new Set([...rule.protocols, 'http']),
      verdictMs: Math.max(sniffMs, handshakeMs),
      firstBytesMs: config.timeouts.idle,
    });
    if (inner.firstSpeaker === null && (inner.clientEnded || client.destroyed)) {
      // A close right after the handshake, with nothing asked: a client that pins its servers.
      // A connection opened ahead and closed unused later (a browser's preconnect) is not one.
      if (inner.waitedMs < PINNING_CLOSE_MS) rejectedLeaf('the client closed the connection right after the TLS handshake');
      section.intercepted = false;
      client.destroy();
      upstream.socket.destroy();
      countBytes();
      return true;
    }
    const ctx = this.httpsContext(tunnel, rule, config, peek, cache, name, client, upstream.socket);
    const tap = inner.proto === 'http' || rule.protocols.includes(inner.proto) ? TAPS[inner.proto] : undefined;
    if (tap) await tap(ctx);
    else await this.relayCounted(session, client, upstream.socket, config);
    countBytes();
    return true;
  }

  /** The tap context of an intercepted tunnel: the two TLS sessions, https://, TLS dials. */
  private httpsContext(
    tunnel: Tunnel,
    rule: TapRule,
    config: Config,
    peek: PeekResult,
    cache: HttpCache | null,
    name: string,
    client: Socket,
    server: Socket | null,
  ): HttpTapContext {
    const { session } = tunnel;
    const dialTls = async (dst: HostPort): Promise<Socket> => {
      const s = await this.dialOwned(dst, session);
      const same = dst.host === tunnel.dst.host && dst.port === tunnel.dst.port;
      try {
        return (await connectServerTls(s, { config, name: same ? name : dst.host, offerHttp: true, port: dst.port })).socket;
      } catch (err) {
        s.destroy();
        throw err;
      }
    };
    return {
      session,
      client,
      server,
      dst: tunnel.dst,
      rule,
      info: peek.info,
      config,
      services: { events: this.deps.events, log: this.deps.log, cache },
      scheme: 'https',
      dial: () => dialTls(tunnel.dst),
      dialTo: async (dst, scheme) => {
        if (scheme === 'https') return dialTls(dst);
        return this.dialOwned(dst, session);
      },
      authorize: async (dst) => void (await this.authorize(session, ['tls', ...tunnel.tags], dst, rule)),
      relay: (c, s) => this.relayCounted(session, c, s, config, rule),
      // No httpRoutes: an HTTP upstream would get https:// requests in the clear; the TLS goes
      // through dial()'s route (CONNECT through it) instead.
    };
  }

  /**
   * An intercepted tunnel answered cache-first: the door has replied, no server is dialed. The
   * leaf names the SNI alone (the name was verified when the cached entries were stored); the
   * HTTP tap dials the server over TLS, verified, only for a request the cache cannot answer.
   */
  private async interceptFromCache(
    tunnel: Tunnel,
    rule: TapRule,
    config: Config,
    peek: PeekResult,
    cache: HttpCache,
    ca: CertificateAuthority,
    name: string,
    http11: boolean,
  ): Promise<boolean> {
    const { session } = tunnel;
    const raw = tunnel.socket;
    const readBase = raw.bytesRead - raw.readableLength;
    const writtenBase = raw.bytesWritten;
    // At the end of every path: the raw connection's bytes (TLS records included) are the
    // session's, and the raw socket is closed with its TLS session (a destroyed TLSSocket does not
    // always close the socket it wraps).
    const countBytes = (): void => {
      session.bytesUp = Math.max(session.bytesUp, raw.bytesRead - readBase);
      session.bytesDown = Math.max(session.bytesDown, raw.bytesWritten - writtenBase);
      raw.destroy();
    };
    let context;
    try {
      context = await ca.leafContext(name, [], true);
    } catch (err) {
      this.deps.log.error('tls leaf certificate could not be issued', { session: session.id, name, error: err instanceof Error ? err.message : String(err) });
      raw.destroy();
      session.result = 'EUPSTREAM';
      return true;
    }
    const accepted = await acceptClientTls(raw, context, { alpn: http11, handshakeMs: config.timeouts.handshake });
    if (!accepted.ok) {
      if (accepted.rejected && this.pinned.add(name)) {
        this.deps.log.info('tls client rejected the interception certificate; its tunnels are relayed untouched for a while', {
          session: session.id,
          client: session.clientLabel,
          name,
          reason: accepted.reason,
        });
      }
      if (session.result === 'ok') session.result = 'EPROTO';
      countBytes();
      return true;
    }
    const client = accepted.socket;
    const section = session.sections.tls as { intercepted: boolean; subject: string | null };
    section.intercepted = true;
    const sniffMs = config.timeouts.sniff;
    const inner = await peekTunnel(client, null, {
      timeoutMs: Math.max(sniffMs, config.timeouts.handshake),
      maxBytes: SNIFF_MAX_BYTES,
      portHint: tunnel.dst.port,
      want: new Set([...rule.protocols, 'http']),
    });
    const ctx = this.httpsContext(tunnel, rule, config, peek, cache, name, client, null);
    if (inner.proto === 'http') {
      await TAPS.http!(ctx);
    } else if (inner.firstSpeaker === null && (inner.clientEnded || client.destroyed)) {
      client.destroy();
    } else {
      // Not HTTP after all: the server is needed, over TLS, and the two sessions are relayed.
      let server: Socket;
      try {
        server = await ctx.dial();
      } catch (err) {
        const e = toProxyError(err);
        this.deps.log.info('connect failed', { session: session.id, client: session.clientLabel, dst: `${tunnel.dst.host}:${tunnel.dst.port}`, code: e.code, reason: e.message });
        session.result = e.code;
        client.destroy();
        countBytes();
        return true;
      }
      await this.relayCounted(session, client, server, config);
    }
    countBytes();
    return true;
  }

  /**
   * The dial of a cache-first tunnel that turned out to need its server: the door has said yes
   * already, so a failure is recorded (session result, log line, the door's own record of the
   * tunnel) and the client closed.
   */
  private async dialLate(tunnel: Tunnel): Promise<Socket | null> {
    const server = await this.dialForTunnel(tunnel, true);
    if (!server && tunnel.session.result !== 'client-gone') {
      tunnel.noteFailure?.(tunnel.session.result as ProxyErrorCode, `the server could not be reached (${tunnel.session.result})`);
    }
    return server;
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
      ...udpUpstreamOptions(config, session, this.deps.log),
      idleMs: config.timeouts.idle,
      // Checkpoint 2 for every datagram's destination; names are matched as names, an address
      // as what it reaches (0.0.0.0 is the local host).
      checkDestination: (host, port) =>
        checkDestination(this.deps.config(), {
          tags: [...tunnel.tags, 'udp'],
          clientAddress: session.clientAddress,
          user: session.user,
          dst: { host, port },
          ...(isIP(host) !== 0 ? { dstAddresses: reachedAddresses([host]) } : {}),
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
          this.shapeClient(session, req.socket, config, null) &&
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
    this.serveForwarded(req, res, session, target, this.deps.config(), false);
  }

  /** Origin-form requests a MOUNT maps (reverse proxy): served like forwardHttp's, to the real URL. */
  reverseHttp(req: IncomingMessage, res: ServerResponse, session: Session, virtual: HostPort & { path: string }): boolean {
    const config = this.deps.config();
    const mounted = applyMounts(config.mounts, virtual, mountRequestOf(req, session, true));
    if (!mounted) return false;
    session.dst ??= { host: mounted.host, port: mounted.port };
    this.serveForwarded(req, res, session, virtual, config, true);
    return true;
  }

  /**
   * Checkpoint 2 for an absolute-form target, then serveHttp. An origin-form (`reverse`) target is
   * virtual: serveHttp maps it and passes the real destination through checkpoint 2 itself.
   */
  private serveForwarded(
    req: IncomingMessage,
    res: ServerResponse,
    session: Session,
    target: HostPort & { path: string },
    config: Config,
    reverse: boolean,
  ): void {
    const dst: HostPort = { host: target.host, port: target.port };
    session.command = 'http';
    session.dst ??= dst;
    const routesFor = this.httpRoutes(config, session);
    Promise.resolve()
      .then(() => {
        this.acquireUser(session);
        return reverse ? undefined : this.authorize(session, ['http'], dst);
      })
      .then(
        () =>
          // BANDWIDTH=/QUOTA= on the door's client connection, from its first request on.
          this.shapeClient(session, req.socket, config, null) &&
          // The same path as tapped HTTP (taps/http/cached.ts): MOUNT, checkpoint 3, header
          // rules, the cache (CACHE=do) and access.log.
          serveHttp(req, res, {
            session,
            target,
            host: 'target',
            dial: (d) => this.dial(d, session),
            authorize: async (d) => void (await this.authorize(session, ['http'], d)),
            cache: config.cache.enabled ? this.deps.cache() : null,
            config,
            events: this.deps.events,
            log: this.deps.log,
            via: VIA,
            timeouts: config.timeouts,
            ...(routesFor ? { routesFor } : {}),
            ...(reverse ? { originForm: true } : {}),
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

/**
 * What a peek taught about its destination: the protocol and which side spoke first. A peek in
 * which nobody spoke, or that stopped before a verdict, teaches nothing.
 */
function learn(memory: DestinationMemory, dst: HostPort, peek: PeekResult): void {
  if (peek.firstSpeaker === null) return;
  if (peek.proto === 'raw' && peek.stoppedBy !== 'verdict' && peek.stoppedBy !== 'max-bytes') return;
  memory.remember(dst.host, dst.port, peek.proto, peek.firstSpeaker === 'server');
}

/**
 * The configuration as a SOCKSTAP rule's tunnels see it: the rule's compiled timeouts, mounts and
 * access rules (TapRule, filled at load) in place of the global ones, so taps, checkpoint 3 and
 * MOUNT need no per-rule code. One object per rule and configuration; nothing is parsed here.
 */
const views = new WeakMap<TapRule, { base: Config; view: Config }>();

export function ruleView(base: Config, rule: TapRule): Config {
  const known = views.get(rule);
  if (known && known.base === base) return known.view;
  const view: Config = { ...base, timeouts: rule.timeouts, mounts: rule.mounts, rules: rule.rules };
  if (rule.set.expire !== undefined) view.cache = { ...base.cache, expire: rule.set.expire };
  views.set(rule, { base, view });
  return view;
}
const JAVASCRIPT: DirectPlan = { kind: 'javascript' };

/** Who a session is for BANDWIDTH=/QUOTA= scopes. */
export function limitSubject(session: Session): LimitSubject {
  return { user: session.user, clientAddress: session.clientAddress, doorPort: portOfListen(session.listen) };
}

/** RELAY=splice|js as relay()'s mode: splice falls back to the JavaScript fast path by itself. */
function relayMode(config: Config): RelayMode {
  return config.relay === 'js' ? 'fast' : 'splice';
}
