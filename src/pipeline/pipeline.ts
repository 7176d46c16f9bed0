/**
 * The pipeline: where every front door's tunnel goes. It asks for the tunnel's plan
 * (pipeline/plan.ts, the one decision for the JavaScript doors and the native accept path alike)
 * and executes it: a refusal through the door's reply; BIND and UDP ASSOCIATE; an expected tunnel
 * to its expecter (pipeline/expectations.ts); a SOCKSTAP rule's tunnel through the connect
 * strategy to a tap; anything else dialed (dial.ts), replied and relayed (accounting.ts). HTTP-door
 * requests go to http-door.ts, TLS interception to intercept.ts. Only this folder and sockstap.ts
 * see every layer (doors, policy, dialers, taps, services).
 */
import { udpUpstreamOptions } from '../upstream/udp-chain.js';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { isIP } from 'node:net';
import type { Config, HostPort, TapRule } from '../config/types.js';
import { chooseStrategy, DestinationMemory, type StrategyPin } from '../core/destinations.js';
import type { ExpectedTunnel } from '../core/expected.js';
import { ProxyError, toProxyError } from '../core/errors.js';
import type { Plan } from '../core/plan.js';
import type { Session } from '../core/session.js';
import type { Tunnel } from '../core/tunnel.js';
import type { TunnelSink } from '../frontdoors/door.js';
import { runBind } from '../net/bind.js';
import { reachedAddresses } from '../net/destination.js';
import { peekTunnel, type PeekResult } from '../net/peek.js';
import { runUdpAssociate } from '../net/udp-relay.js';
import { checkDestination, destinationAddresses } from '../policy/acl.js';
import { requestRulesMayApply } from '../policy/http-rules.js';
import type { HttpTapContext } from '../taps/http/tap.js';
import { ruleCaches, ruleStrategy } from '../taps/rules.js';
import { Accounting, relayMode } from './accounting.js';
import { Decider } from './decide.js';
import { SNIFF_MAX_BYTES, tapFor, type PipelineDeps } from './deps.js';
import { Dialer } from './dial.js';
import { Expectations } from './expectations.js';
import { HttpDoor } from './http-door.js';
import { Interceptor } from './intercept.js';
import { PlanMemory } from './plan-memory.js';
import { ruleView } from './plan.js';

export type { PipelineDeps } from './deps.js';
export { limitSubject } from './accounting.js';
export { ruleView } from './plan.js';

export class Pipeline implements TunnelSink {
  /** What tapped destinations spoke (the connect strategy's memory); one per running instance. */
  private readonly destinations = new DestinationMemory();
  private memoryConfig: Config | null = null;
  /** When remembered plans are forgotten (the native accept path's). */
  private readonly memory = new PlanMemory();
  /** The tunnels taps expect (FTP data connections), one registry per running instance. */
  readonly expectations = new Expectations(() => this.memory.announced());
  private readonly acct: Accounting;
  private readonly dialer: Dialer;
  private readonly decider: Decider;
  private readonly tls: Interceptor;
  private readonly httpDoor: HttpDoor;

  constructor(private readonly deps: PipelineDeps) {
    this.acct = new Accounting(deps);
    this.dialer = new Dialer(deps);
    this.decider = new Decider(deps, this.expectations);
    this.tls = new Interceptor(deps, this.dialer, this.acct, this.decider, this.expectations);
    this.httpDoor = new HttpDoor(deps, this.dialer, this.acct, this.decider);
  }

  /** Dial a destination along its route, as a tunnel's dial does (dial.ts). */
  dial(dst: HostPort, session: Session): Promise<Socket> {
    return this.dialer.dial(dst, session);
  }

  handle(tunnel: Tunnel): Promise<void> {
    return tunnel.session.hold(this.run(this.acct.observe(tunnel)));
  }

  /**
   * The native accept path's question (TunnelSink.plan): the plan of this CONNECT, the same one
   * run() executes. Refusals, and names that do not resolve, are logged here.
   */
  async plan(session: Session, tags: readonly string[], dst: HostPort): Promise<Plan> {
    let plan: Plan;
    try {
      ({ plan } = await this.decider.planFor(this.deps.config(), session, { command: 'connect', dst, tags }, false));
    } catch (err) {
      const e = toProxyError(err);
      plan = { kind: 'refuse', code: e.code, reason: e.message };
    }
    if (plan.kind === 'refuse') {
      this.acct.refused(session, new ProxyError(plan.code, plan.reason), 'connect');
    } else if (plan.kind === 'unreachable') {
      session.result = plan.code;
      this.deps.log.info('connect failed', { session: session.id, client: session.clientLabel, dst: `${dst.host}:${dst.port}`, code: plan.code, reason: plan.reason });
    }
    return plan;
  }

  /** `fn` runs whenever remembered plans may no longer hold (plan-memory.ts). Returns the undo. */
  watchPlans(fn: () => void): () => void {
    return this.memory.watch(() => fn());
  }

  /** TunnelSink.cacheFirstHttp: the same inputs runTapped's connect strategy reads. */
  cacheFirstHttp(plan: Plan, dst: HostPort): number | null {
    if (plan.kind !== 'tap' || plan.strategy === 'dial-first' || !plan.rule.protocols.includes('http')) return null;
    const base = this.deps.config();
    const config = ruleView(base, plan.rule);
    if (!ruleCaches(config, plan.rule) || !this.deps.cache()) return null;
    // Seen speaking HTTP: a silent client is not one waiting for a banner (see runTapped).
    const seen = this.destinationsFor(base).get(dst.host, dst.port);
    if (!seen || seen.proto !== 'http' || seen.serverFirst) return null;
    return config.timeouts.sniff;
  }

  /** A new configuration is in force: remembered plans are forgotten. */
  reloaded(): void {
    this.memory.reloaded();
  }

  /** A tunnel's success reply (the native accept path's thread replied): 'established', once. */
  established(session: Session): void {
    this.acct.established(session);
  }

  forwardHttp(req: IncomingMessage, res: ServerResponse, session: Session): void {
    this.httpDoor.forwardHttp(req, res, session);
  }

  reverseHttp(req: IncomingMessage, res: ServerResponse, session: Session, virtual: HostPort & { path: string }): boolean {
    return this.httpDoor.reverseHttp(req, res, session, virtual);
  }

  /** Execute the tunnel's plan. */
  private async run(tunnel: Tunnel): Promise<void> {
    const { session } = tunnel;
    session.command = tunnel.command;
    session.dst = tunnel.dst;
    const config = this.deps.config();
    let decided: { plan: Plan; claimed: ExpectedTunnel | null };
    try {
      this.acct.acquireUser(session);
      decided = await this.decider.planFor(config, session, tunnel, true);
    } catch (err) {
      const e = toProxyError(err);
      this.acct.refused(session, e, tunnel.command);
      tunnel.replyFailure(e.code, e.message);
      return;
    }
    const { plan, claimed } = decided;
    switch (plan.kind) {
      case 'refuse': {
        const e = new ProxyError(plan.code, plan.reason);
        this.acct.refused(session, e, tunnel.command);
        tunnel.replyFailure(e.code, e.message);
        return;
      }
      case 'bind':
        await this.runBind(tunnel, config, plan.rule, claimed);
        return;
      case 'udp':
        await this.runUdp(tunnel);
        return;
      case 'expected':
        // An FTP data connection that a tapped control session announced (PASV/EPSV): counted and
        // logged as that session's transfer. Claimed by another tunnel meanwhile: an ordinary one.
        if (claimed) {
          await this.runExpected(tunnel, config, plan.rule, claimed);
          return;
        }
        if (plan.rule) {
          await this.runTapped(tunnel, plan.rule, config);
          return;
        }
        break;
      case 'tap':
        await this.runTapped(tunnel, plan.rule, config, plan.strategy);
        return;
      case 'unreachable': // the dial fails as the name did, and says so
      case 'route':
      case 'direct':
        break;
    }
    const server = await this.dialer.dialForTunnel(tunnel);
    if (!server) return;
    tunnel.replySuccess({ address: server.localAddress ?? '0.0.0.0', port: server.localPort ?? 0 });
    await this.acct.relayCounted(session, tunnel.socket, server, config);
  }

  /** SOCKS BIND; an active-mode FTP transfer (`expected`) is counted as its control session's. */
  private async runBind(tunnel: Tunnel, config: Config, rule: TapRule | null, expected: ExpectedTunnel | null): Promise<void> {
    const { session } = tunnel;
    // BANDWIDTH=/QUOTA= on what the BIND relays (an active-mode FTP transfer), as on a CONNECT.
    const limited = this.acct.admitShape(session, config, rule);
    if (limited === 'refused') {
      tunnel.replyFailure('EQUOTA', 'a quota covering this connection is used up');
      expected?.finished({ up: 0, down: 0, result: 'EQUOTA' });
      return;
    }
    const r = await runBind(tunnel, {
      timeoutMs: (rule ?? config).timeouts.connect,
      idleMs: (rule ?? config).timeouts.idle,
      mode: relayMode(config),
      resolve: (host) => destinationAddresses(host, this.deps.runtime.names(config.dns)),
      ...(limited?.shape ? { shape: limited.shape } : {}),
    });
    limited?.meter?.release();
    expected?.finished(r);
    expected?.record(session);
    session.bytesUp = r.up;
    session.bytesDown = r.down;
    session.settle(r.result);
  }

  /** A CONNECT its expecter claimed (a passive-mode FTP data connection): dialed here, relayed by it. */
  private async runExpected(tunnel: Tunnel, config: Config, rule: TapRule | null, expected: ExpectedTunnel): Promise<void> {
    const { session } = tunnel;
    session.proto = expected.proto;
    const server = await this.dialer.dialForTunnel(tunnel);
    if (!server) {
      expected.finished({ up: 0, down: 0, result: session.result });
      return;
    }
    tunnel.replySuccess({ address: server.localAddress ?? '0.0.0.0', port: server.localPort ?? 0 });
    // BANDWIDTH=/QUOTA= on the data the control session's tap relays itself.
    if (!this.acct.shapeClient(session, tunnel.socket, config, rule)) {
      server.destroy();
      expected.finished({ up: 0, down: 0, result: session.result });
      return;
    }
    const r = await expected.run(tunnel.socket, server, session, (rule ?? config).timeouts.idle);
    session.countUp(r.up);
    session.countDown(r.down);
  }

  /** The destination memory of the configuration in force: a reload forgets what was learnt. */
  private destinationsFor(config: Config): DestinationMemory {
    if (config !== this.memoryConfig) {
      this.memoryConfig = config;
      this.destinations.forget();
      this.tls.forget();
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
  private async runTapped(tunnel: Tunnel, rule: TapRule, base: Config, pin: StrategyPin = ruleStrategy(rule)): Promise<void> {
    const { session } = tunnel;
    // What the rule's tunnels get: its TIMEOUT=, MOUNT=, PERMIT/REJECT over the global ones.
    const config = ruleView(base, rule);
    const want = new Set<string>(rule.protocols);
    const cache = ruleCaches(config, rule) ? this.deps.cache() : null;
    const httpRoutes = want.has('http') ? this.dialer.httpRoutes(config, session, 'http') : undefined;
    // Keyed on the configuration in force, not the rule's view of it: a reload forgets, a view does not.
    const memory = this.destinationsFor(base);
    const seen = memory.get(tunnel.dst.host, tunnel.dst.port);
    const httpWithoutServer = want.has('http') && (cache !== null || (httpRoutes !== undefined && httpRoutes(tunnel.dst) !== null));
    const strategy = chooseStrategy(seen, tunnel.dst.port, httpWithoutServer, pin, this.tls.httpsFromCache(tunnel, rule, config, cache));
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
      server = await this.dialer.dialForTunnel(tunnel);
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
          session.settle('client-gone');
          return;
        }
        server = await this.dialer.dialLate(tunnel);
        if (!server) return;
        peek = await peekTunnel(tunnel.socket, server, { ...peekOptions, firstBytesMs: config.timeouts.idle });
      }
    }
    if (server && peek.firstSpeaker === null && peek.stoppedBy === 'timeout' && !peek.clientEnded && !peek.serverEnded) {
      // Nobody said anything for as long as a tunnel may idle: it ends as an idle relay would.
      session.settle('idle');
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
        await this.decider.authorize(session, ['tls', ...tunnel.tags], { host: peek.info.sni, port: tunnel.dst.port }, rule, true);
      } catch (err) {
        const e = toProxyError(err);
        this.acct.refused(session, e, 'tls server name');
        tunnel.socket.destroy();
        server?.destroy();
        return;
      }
    }

    // STLS=mitm: the TLS is terminated on both sides and what it carries is tapped (tls/intercept.ts).
    if (peek.proto === 'tls' && want.has('tls') && (await this.tls.intercept(tunnel, rule, config, peek, server, cache))) return;

    // Fail closed: a client stream the sniffers cannot read, where request rules could decide its
    // requests, is refused, not relayed past them.
    if (peek.proto === 'raw' && peek.firstSpeaker === 'client' && requestRulesApply) {
      const e = new ProxyError(
        'EPROTO',
        `the tunnel to ${tunnel.dst.host}:${tunnel.dst.port} does not carry a request the HTTP tap can read, and request rules apply to it (${peek.stoppedBy})`,
      );
      this.acct.refused(session, e, 'uninterpreted tunnel');
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
      services: { events: this.deps.events, log: this.deps.log, cache, expectations: this.expectations, runtime: this.deps.runtime },
      dial: () => this.dialer.dialOwned(tunnel.dst, session),
      dialTo: (dst) => this.dialer.dialOwned(dst, session),
      authorize: async (dst) => void (await this.decider.authorize(session, [peek.proto, ...tunnel.tags], dst, rule)),
      relay: (c, s) => this.acct.relayCounted(session, c, s, config, rule),
      ...(httpRoutes ? { httpRoutes } : {}),
    };
    const upgradeTls = peek.proto !== 'http' && peek.proto !== 'tls' ? this.tls.starttlsUpgrade(tunnel, config) : undefined;
    if (upgradeTls) ctx.upgradeTls = upgradeTls;
    const tap = want.has(peek.proto) ? tapFor(this.deps, peek.proto) : undefined;
    if (tap) {
      // Every byte the tap moves to and from the client passes BANDWIDTH=/QUOTA= (issue 12 item 5).
      if (!this.acct.shapeClient(session, tunnel.socket, base, rule)) {
        server?.destroy();
        return;
      }
      await tap(ctx);
      return;
    }
    server ??= await this.dialer.dialLate(tunnel);
    if (!server) return;
    await this.acct.relayCounted(session, tunnel.socket, server, config, rule);
  }

  associateUdp(tunnel: Tunnel): Promise<void> {
    return tunnel.session.hold(this.runUdp(this.acct.observe(tunnel)));
  }

  private async runUdp(tunnel: Tunnel): Promise<void> {
    const { session } = tunnel;
    session.command = 'udp';
    session.dst = tunnel.dst;
    try {
      this.acct.acquireUser(session);
    } catch (err) {
      const e = toProxyError(err);
      this.acct.refused(session, e, 'udp');
      tunnel.replyFailure(e.code, e.message);
      return;
    }
    const config = this.deps.config();
    const r = await runUdpAssociate(tunnel, {
      ...udpUpstreamOptions(config, session, this.deps.log, this.deps.runtime.names(config.dns), this.deps.runtime.upstreams),
      idleMs: config.timeouts.idle,
      names: this.deps.runtime.names(config.dns),
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
    session.settle(r.result);
  }
}

/**
 * What a peek taught about its destination: the protocol and which side spoke first. A peek in
 * which nobody spoke, or that stopped before a verdict, teaches nothing.
 */
function learn(memory: DestinationMemory, dst: HostPort, peek: PeekResult): void {
  if (peek.firstSpeaker === null) return;
  if (peek.proto === 'raw' && peek.stoppedBy !== 'verdict' && peek.stoppedBy !== 'max-bytes') return;
  memory.remember(dst.host, dst.port, peek.proto, peek.firstSpeaker === 'server');
}
