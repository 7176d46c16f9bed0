/**
 * The pipeline: where every front door's tunnel goes. It asks policy at the destination
 * checkpoint, takes the tap decision, dials, lets the door reply in its own protocol, and relays.
 * Only this file and sockstap.ts see every layer (doors, policy, dialers, taps, services).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Config, HostPort } from '../config/types.js';
import type { TunnelSink } from '../frontdoors/door.js';
import { runBind } from '../net/bind.js';
import { relay } from '../net/relay.js';
import { runUdpAssociate } from '../net/udp-relay.js';
import type { ProxyEvents } from '../observe/events.js';
import type { Logger } from '../observe/log.js';
import { checkDestination, destinationAddresses, rulesNeedAddresses } from '../policy/acl.js';
import type { ConnectionLimits } from '../policy/limits.js';
import { absoluteTarget, denyHttp, forwardHttpRequest } from '../taps/http/forward.js';
import { dialDirect } from '../upstream/direct.js';
import { ProxyError, toProxyError } from './errors.js';
import type { Session } from './session.js';
import type { Tunnel } from './tunnel.js';

export interface PipelineDeps {
  config(): Config;
  log: Logger;
  events: ProxyEvents;
  limits: ConnectionLimits;
  /** Aborted when the proxy stops: pending dials give up. */
  shutdown: AbortSignal;
}

export const VIA = '1.1 sockstap';

export class Pipeline implements TunnelSink {
  constructor(private readonly deps: PipelineDeps) {}

  /** Dial the next hop for a destination. Routing through upstreams plugs in here. */
  dial(dst: HostPort, session: Session): Promise<Socket> {
    session.route = 'direct';
    return dialDirect(dst, { timeoutMs: this.deps.config().timeouts.connect, signal: this.deps.shutdown });
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

    if (tunnel.command === 'bind') {
      const r = await runBind(tunnel, {
        timeoutMs: config.timeouts.connect,
        idleMs: config.timeouts.idle,
        resolve: destinationAddresses,
      });
      session.bytesUp = r.up;
      session.bytesDown = r.down;
      if (session.result === 'ok') session.result = r.result;
      return;
    }
    if (tunnel.command === 'udp') {
      await this.runUdp(tunnel);
      return;
    }

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
      tunnel.replyFailure(e.code, e.message);
      return;
    }
    if (tunnel.socket.destroyed) {
      // The client gave up while we were dialing.
      server.destroy();
      session.result = 'client-gone';
      return;
    }
    session.adopt(server);
    server.on('error', () => {}); // the relay records the error; never crash on a late one
    tunnel.replySuccess({ address: server.localAddress ?? '0.0.0.0', port: server.localPort ?? 0 });
    const r = await relay(tunnel.socket, server, { idleMs: config.timeouts.idle });
    session.bytesUp = r.up;
    session.bytesDown = r.down;
    if (session.result === 'ok') session.result = r.result;
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

  forwardHttp(req: IncomingMessage, res: ServerResponse, session: Session): void {
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
    Promise.resolve()
      .then(() => {
        this.acquireUser(session);
        return this.authorize(session, ['http'], dst);
      })
      .then(
        () =>
          forwardHttpRequest(req, res, {
            session,
            target,
            dial: (d) => this.dial(d, session),
            events: this.deps.events,
            log: this.deps.log,
            via: VIA,
            timeouts: config.timeouts,
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
