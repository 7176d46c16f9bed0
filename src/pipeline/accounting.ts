/**
 * Accounting: what a tunnel is allowed to use and what it used. MAXIMA=peruser for the session's
 * lifetime, BANDWIDTH= shapes and QUOTA= meters on relays and on client sockets that taps and the
 * HTTP door move themselves, the relay that counts into the session, refusals logged, and the
 * 'established' event (the door's success reply: the metrics' relay latency), emitted here only,
 * for JavaScript tunnels and the native accept path's alike.
 */
import { groupsOf } from '../policy/groups.js';
import type { Socket } from 'node:net';
import type { Config, TapRule } from '../config/types.js';
import { ProxyError, toProxyError } from '../core/errors.js';
import type { Session } from '../core/session.js';
import type { Tunnel } from '../core/tunnel.js';
import { relay, type RelayMode, type RelayShape } from '../net/relay.js';
import { isShaped, shapeSocket } from '../net/shaped-socket.js';
import type { QuotaMeter } from '../policy/quota.js';
import { anyLimit, portOfListen, relayShape, type LimitSubject } from '../policy/shaping.js';
import type { PipelineDeps } from './deps.js';

/** Who a session is for BANDWIDTH=/QUOTA= scopes. */
export function limitSubject(session: Session): LimitSubject {
  return { user: session.user, clientAddress: session.clientAddress, doorPort: portOfListen(session.listen) };
}

/** RELAY=splice|js as relay()'s mode: splice falls back to the JavaScript fast path by itself. */
export function relayMode(config: Config): RelayMode {
  return config.relay === 'js' ? 'fast' : 'splice';
}

export class Accounting {
  /** Sessions whose user MAXIMA=peruser counts already. */
  private readonly userCounted = new WeakSet<Session>();
  /** Sessions whose 'established' was emitted. */
  private readonly establishedOnce = new WeakSet<Session>();

  constructor(private readonly deps: PipelineDeps) {}

  /**
   * The door replied with success (or the relay thread did): 'established', once per session,
   * from which the metrics take the relay latency (accept → reply). Nothing on the data path.
   */
  established(session: Session): void {
    if (this.establishedOnce.has(session)) return;
    this.establishedOnce.add(session);
    this.deps.events.emit('established', session);
  }

  /** The tunnel with its success reply observed (established()), as the pipeline executes it. */
  observe(tunnel: Tunnel): Tunnel {
    const reply = tunnel.replySuccess;
    tunnel.replySuccess = (bound) => {
      this.established(tunnel.session);
      reply.call(tunnel, bound);
    };
    return tunnel;
  }

  /** MAXIMA=peruser, counted once per session for its lifetime. */
  acquireUser(session: Session): void {
    const user = session.user;
    if (!user || this.userCounted.has(session)) return;
    const broken = this.deps.limits.acquireUser(this.deps.config().maxima, user, groupsOf(this.deps.config(), user));
    if (broken) throw new ProxyError('ELIMIT', `MAXIMA=${broken} reached for user ${user}`);
    this.userCounted.add(session);
    const release = (): void => this.deps.limits.releaseUser(user);
    const client = [...session.sockets][0];
    if (client) client.once('close', release);
    else release();
  }

  refused(session: Session, err: ProxyError, what: string): void {
    session.result = err.code;
    this.deps.log.info(`${what} refused`, {
      session: session.id,
      client: session.clientLabel,
      user: session.user ?? undefined,
      code: err.code,
      reason: err.message,
    });
  }

  /**
   * `config` is the tunnel's view (ruleView: its rule's timeouts); `rule` adds its BANDWIDTH=/QUOTA=.
   * A client socket a tap already shaped (shapeClient) is relayed through pipe(), which passes its hooks.
   */
  async relayCounted(session: Session, client: Socket, server: Socket, config: Config, rule?: TapRule | null): Promise<void> {
    if (isShaped(client)) {
      const r = await relay(client, server, { idleMs: config.timeouts.idle, mode: 'pipe' });
      session.countUp(r.up);
      session.countDown(r.down);
      session.settle(r.result);
      return;
    }
    // BANDWIDTH=/QUOTA=: a shape only for a connection a limit covers; otherwise the fast relay.
    const limited = this.admitShape(session, config, rule);
    if (limited === 'refused') {
      // Used up between checkpoint 2 and here (another connection): the door has replied, so cut.
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
    session.countUp(r.up);
    session.countDown(r.down);
    session.settle(r.result);
  }

  /**
   * The relay shape and quota meter of a connection some BANDWIDTH=/QUOTA= covers (the global
   * limits and its SOCKSTAP rule's); null when none does (the fast relay), 'refused' when a quota
   * is used up (logged, session.result set).
   */
  admitShape(session: Session, config: Config, rule: TapRule | null | undefined): { shape: RelayShape | null; meter: QuotaMeter | null } | null | 'refused' {
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
  shapeClient(session: Session, client: Socket, config: Config, rule: TapRule | null): boolean {
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
}
