/**
 * Dialing: the next hop of a destination along its route (upstream/router.ts), with the lookup
 * checkpoint 2 pinned (net/destination.ts), never to sockstap itself; the HTTP routes of a
 * request; the tunnel's dial whose failure the door replies, and a tap's dial the session owns.
 */
import type { LookupFunction, Socket } from 'node:net';
import type { Config, HostPort } from '../config/types.js';
import { ProxyError, toProxyError, type ProxyErrorCode } from '../core/errors.js';
import type { Session } from '../core/session.js';
import type { Tunnel } from '../core/tunnel.js';
import { addressesOf, literalReach, normaliseDst, normaliseHost, reachedAddresses, resolveForSession } from '../net/destination.js';
import { dialSpoofed } from '../net/spoof.js';
import { dialRoute, httpRoutesFor, mayRouteHttpToProxy, type HttpRoute } from '../upstream/router.js';
import type { PipelineDeps } from './deps.js';
import { ownRefusal, ruleFor } from './plan.js';

export class Dialer {
  constructor(private readonly deps: PipelineDeps) {}
  /**
   * Dial the next hop for a destination along its route (upstream/router.ts): the SOCKSTAP rule's
   * PROXY=/SOCKS= params, YAML routes, PROXY=/SOCKS=, else direct, with fallback in order.
   * Sets `session.route`. The tap rule is picked again here (the same pure decision as in planTunnel),
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
      return dialSpoofed(dst, session.clientAddress, config.timeouts.connect, { signal: this.deps.shutdown, names: this.deps.runtime.names(config.dns) });
    }
    const tapRule = ruleFor(config, session, dst);
    return dialRoute(config, dst, session, {
      timeoutMs: tapRule ? tapRule.timeouts.connect : config.timeouts.connect,
      signal: this.deps.shutdown,
      tapRule,
      lookup: this.lookupFor(session, config, dst),
      names: this.deps.runtime.names(config.dns),
      upstreams: this.deps.runtime.upstreams,
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
  httpRoutes(config: Config, session: Session, proto?: string): ((dst: HostPort) => HttpRoute[] | null) | undefined {
    if (!mayRouteHttpToProxy(config)) return undefined;
    // SPOOF=client connections leave directly with the client's address (see dial()).
    if (session.door === 'transparent' && config.spoof) return undefined;
    return (dst) => {
      // As in dial(): the SOCKSTAP rule for this destination may name its own PROXY= and TIMEOUT=.
      const tapRule = ruleFor(config, session, dst);
      return httpRoutesFor(config, dst, session, {
        timeoutMs: tapRule ? tapRule.timeouts.connect : config.timeouts.connect,
        signal: this.deps.shutdown,
        tapRule,
        lookup: this.lookupFor(session, config, normaliseDst(dst)),
        names: this.deps.runtime.names(config.dns),
        upstreams: this.deps.runtime.upstreams,
        ...(proto !== undefined ? { proto } : {}),
      });
    };
  }

  /**
   * The lookup for a dial to `dst`: the answer checkpoint 2 checked for this session (pinned), else
   * one resolution through the name cache, which is then pinned, after the own-address check.
   */
  lookupFor(session: Session, config: Config, dst: HostPort): LookupFunction {
    const names = this.deps.runtime.names(config.dns);
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
  ownOf(dst: HostPort, reached: readonly string[]): ProxyError | null {
    return ownRefusal(this.deps.ownAddresses?.() ?? [], dst, reached);
  }

  /** A tap's dial: the socket belongs to the session (closed with it) and never throws late. */
  async dialOwned(dst: HostPort, session: Session): Promise<Socket> {
    const s = await this.dial(dst, session);
    session.adopt(s);
    s.on('error', () => {}); // the tap records the error; never crash on a late one
    return s;
  }

  /** Dial the tunnel's destination; on failure the door replies and null is returned. */
  async dialForTunnel(tunnel: Tunnel, replied = false): Promise<Socket | null> {
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
   * The dial of a cache-first tunnel that turned out to need its server: the door has said yes
   * already, so a failure is recorded (session result, log line, the door's own record of the
   * tunnel) and the client closed.
   */
  async dialLate(tunnel: Tunnel): Promise<Socket | null> {
    const server = await this.dialForTunnel(tunnel, true);
    if (!server && tunnel.session.result !== 'client-gone') {
      tunnel.noteFailure?.(tunnel.session.result as ProxyErrorCode, `the server could not be reached (${tunnel.session.result})`);
    }
    return server;
  }
}
