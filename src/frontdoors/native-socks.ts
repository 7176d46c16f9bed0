/**
 * The socks and auto doors on the native accept path (native/door.ts): the relay thread
 * accepts and reads the SOCKS5 handshake, and this door asks the pipeline for each CONNECT's plan
 * (TunnelSink.plan: the same planTunnel the JavaScript pipeline executes, nothing mirrored here).
 * A `direct` plan is dialed and spliced by the thread: its session has no JavaScript socket, only
 * its record. A refusal is replied here. Everything else becomes a JavaScript socket at the stage
 * the thread reached and is served by the usual doors: the whole handshake (SOCKS4, HTTP,
 * authentication, a source not approved yet), the request (BIND, UDP ASSOCIATE, anything
 * malformed), or the pipeline (any other plan: it plans the tunnel again and executes it).
 * A direct plan may be remembered by the thread for a while (its rememberMs): the same CONNECT
 * from the same source is then dialed before this door hears of it, and it only opens the
 * session; a remembered dial that fails is decided again here. When remembered plans are
 * forgotten is said in one place, pipeline/plan-memory.ts (TunnelSink.watchPlans).
 */
import type { Socket } from 'node:net';
import type { Config, HostPort } from '../config/types.js';
import { codeFromSystemError, ProxyError, replyFor, toProxyError, type ProxyErrorCode } from '../core/errors.js';
import type { Session } from '../core/session.js';
import { DOOR_HTTP, DOOR_HTTP_AUTO, DOOR_NOAUTH, door, NativeListener, type DoorEvents, type HandoffStage, type NativeHit } from '../native/door.js';
import { nativeHitsAvailable } from '../native/hits.js';
import { NativeHttp, nativeHitsAllowed } from './native-http.js';
import type { SpliceResult } from '../native/splice.js';
import type { Plan } from '../core/plan.js';
import type { DoorContext, DoorHandler } from './door.js';
import { handOver, socks5AfterGreeting, socks5RepliedTunnel, socks5Tunnel } from './socks5.js';

/** What the door needs of the proxy: checkpoint 1 and the session registry (sockstap.ts). */
export interface NativeHost {
  /** The JavaScript accept path for a socket handed over before its request; the session, or null when refused. */
  accept(socket: Socket, door: DoorHandler): Session | null;
  /** Checkpoint 1 (MAXIMA) for a request the thread read (accepted at `startMs`): a registered session, or null when refused (logged). */
  admit(peer: string, peerPort: number, startMs: number): Session | null;
  /**
   * The session's client socket from now on (a CONNECT the pipeline takes over, or an HTTP
   * connection the hit path served before: `carried` are the bytes it read and wrote).
   */
  attach(session: Session, socket: Socket, carried?: Float64Array | null): void;
  /** A session that never had a socket is over (its counts and result are set). */
  end(session: Session): void;
}

const TAGS = ['socks', 'socks5'] as const;
const JAVASCRIPT: Plan = { kind: 'route', why: 'relay-js' };

interface Pending {
  session: Session;
  dst: HostPort;
  state: 'deciding' | 'dialing' | 'taking' | 'spliced' | 'hits' | 'ended';
  addresses: string[];
  next: number;
  timeoutMs: number;
  idleMs: number;
  rememberMs: number;
}

/** A handshake the thread gave up on at its deadline: logged and closed as the JavaScript doors do. */
const timedOut: DoorHandler = (socket, session, ctx) => {
  ctx.log.info('handshake timeout', { session: session.id, client: session.clientLabel, door: session.door });
  session.result = 'handshake-timeout';
  socket.destroy();
};

/** The listener's flags: SOCKS5 without authentication answered by the thread; HTTP requests to the hit path. */
function flagsFor(config: Config, kind: string): number {
  const hits = kind !== 'socks' && nativeHitsAvailable() && nativeHitsAllowed(config) ? (kind === 'http' ? DOOR_HTTP : DOOR_HTTP_AUTO) : 0;
  return (config.accounts ? 0 : DOOR_NOAUTH) | hits;
}

/**
 * MAXIMA counts connections from their accept (conn, persrc, perdoor): then every connection is
 * handed over at once, so the JavaScript accept path counts and refuses it before any reply.
 */
function countsAtAccept(config: Config): boolean {
  const m = config.maxima;
  return m.conn > 0 || m.persrc > 0 || (m.perdoor ?? 0) > 0;
}

/**
 * A native listener: a socks or auto door's SOCKS5 CONNECTs, and an http or auto door's HTTP
 * connections served by the hit path (frontdoors/native-http.ts).
 */
export class NativeSocksDoor implements DoorEvents {
  private readonly listener: NativeListener;
  private readonly pending = new Map<number, Pending>();
  private readonly unwatch: () => void;
  /** The HTTP side (http and auto listeners). */
  private readonly http: NativeHttp | null;

  /** `fd`: the listening socket (the thread accepts on a duplicate). `door`: the JavaScript door for hand-overs. */
  constructor(
    fd: number,
    private readonly door: DoorHandler,
    private readonly ctx: DoorContext,
    private readonly host: NativeHost,
  ) {
    const config = ctx.config();
    this.listener = new NativeListener(fd, flagsFor(config, ctx.listen.door), config.timeouts.handshake, this);
    this.http = new NativeHttp(this.listener.id, ctx, host, this);
    this.unwatch =
      ctx.sink.watchPlans?.(() => {
        this.listener.forget(); // remembered plans and hit grants, in the thread
        this.http?.forget();
      }) ?? (() => {});
  }

  /** A reload: new settings, and every source is checked against RELIABLE again. */
  reconfigure(config: Config): void {
    this.listener.configure(flagsFor(config, this.ctx.listen.door), config.timeouts.handshake);
    this.http?.forget();
  }

  close(): void {
    this.unwatch();
    this.listener.close();
    this.http?.close();
  }

  hits(hits: readonly NativeHit[]): void {
    this.http?.hits(hits);
  }

  httpEnd(id: number, counts: Float64Array, reason: string | null): void {
    const p = this.pending.get(id);
    if (p && p.state === 'hits') {
      p.state = 'ended';
      this.pending.delete(id);
    }
    this.http?.httpEnd(id, counts, reason);
  }

  request(id: number, host: string, port: number, peer: string, peerPort: number, remembered: Float64Array | null, acceptedMs: number): void {
    const session = this.host.admit(peer, peerPort, acceptedMs);
    if (!session) {
      if (remembered) door.abort(id);
      else door.reply(id, -1); // as at accept: no reply, the connection is closed
      return;
    }
    const dst = { host, port };
    session.frontProtocol = 'socks5';
    session.command = 'connect';
    session.dst = dst;
    const p: Pending = { session, dst, state: 'deciding', addresses: [], next: 0, timeoutMs: 0, idleMs: 0, rememberMs: 0 };
    this.pending.set(id, p);
    session.onClose(() => this.abort(id));
    if (remembered) {
      // The thread is dialing it already; a failure comes back to failed() and is decided then.
      p.state = 'dialing';
      session.live = remembered;
      return;
    }
    this.decide(id, p);
  }

  private decide(id: number, p: Pending): void {
    const { session, dst } = p;
    const plan = this.ctx.sink.plan ? this.ctx.sink.plan(session, TAGS, dst) : Promise.resolve(JAVASCRIPT);
    plan.then(
      (r) => this.decided(id, p, r),
      (err: unknown) => {
        this.ctx.log.error('native door decision failed', { session: session.id, reason: err instanceof Error ? err.message : String(err) });
        const e = toProxyError(err);
        this.decided(id, p, { kind: 'refuse', code: e.code, reason: e.message });
      },
    );
  }

  private decided(id: number, p: Pending, plan: Plan): void {
    if (p.state !== 'deciding') return; // closed meanwhile
    if (plan.kind === 'refuse' || plan.kind === 'unreachable') {
      this.refuse(id, p, plan.code);
    } else if (plan.kind !== 'direct') {
      // A cache-first HTTP tap: the thread replies and answers the tunnel's granted hits itself.
      const firstMs = this.http && nativeHitsAllowed(this.ctx.config()) ? (this.ctx.sink.cacheFirstHttp?.(plan, p.dst) ?? null) : null;
      if (firstMs !== null && this.http) {
        p.state = 'hits';
        this.http.track(id, p.session);
        this.ctx.sink.established?.(p.session);
        door.tapHttp(id, firstMs, this);
        return;
      }
      p.state = 'taking';
      door.take(id);
    } else {
      p.state = 'dialing';
      p.addresses = plan.addresses;
      p.timeoutMs = plan.timeoutMs;
      p.idleMs = plan.idleMs;
      p.rememberMs = plan.rememberMs;
      p.session.live = new Float64Array(2);
      this.dial(id, p);
    }
  }

  private dial(id: number, p: Pending): void {
    door.connect(id, p.addresses[p.next++]!, p.dst.port, p.timeoutMs, p.idleMs, p.session.live!, p.rememberMs);
  }

  private refuse(id: number, p: Pending, code: ProxyErrorCode): void {
    p.session.settle(code);
    door.reply(id, replyFor(code).socks5);
    this.finish(id, p);
  }

  failed(id: number, errno: string): void {
    const p = this.pending.get(id);
    if (!p || p.state !== 'dialing') return;
    if (p.addresses.length === 0 && errno !== 'ETIMEDOUT') {
      // A remembered decision that no longer holds (the thread forgot it): decide afresh. Not
      // after a timeout: the fresh decision would most likely wait on the same address again.
      p.state = 'deciding';
      this.decide(id, p);
      return;
    }
    if (p.next < p.addresses.length) {
      this.dial(id, p);
      return;
    }
    const e = new ProxyError(codeFromSystemError({ code: errno }), `connect to ${p.dst.host}:${p.dst.port}: ${errno}`);
    this.ctx.log.info('connect failed', {
      session: p.session.id,
      client: p.session.clientLabel,
      dst: `${p.dst.host}:${p.dst.port}`,
      code: e.code,
      reason: e.message,
    });
    this.refuse(id, p, e.code);
  }

  established(id: number): void {
    const p = this.pending.get(id);
    if (!p || p.state !== 'dialing') return;
    p.state = 'spliced';
    this.ctx.sink.established?.(p.session);
  }

  done(id: number, r: SpliceResult): void {
    const p = this.pending.get(id);
    if (!p) return;
    p.session.bytesUp = r.up;
    p.session.bytesDown = r.down;
    p.session.settle(r.result);
    this.finish(id, p);
  }

  gone(id: number): void {
    const p = this.pending.get(id);
    if (!p) return;
    p.session.settle('client-gone');
    this.finish(id, p);
  }

  acceptError(reason: string): void {
    this.ctx.log.error('accept failed', { listen: this.ctx.listen.door, error: reason });
  }

  handoff(socket: Socket, stage: HandoffStage, id: number, expired: boolean, counts: Float64Array | null): void {
    if (stage === 3) {
      // Requests the hit path answered, then one it does not take: the HTTP door goes on with the session.
      const session = this.http?.takeOver(socket, id, counts, true) ?? null;
      if (session) this.door(socket, session, this.ctx);
      else socket.destroy();
      return;
    }
    if (stage === 4) {
      // A tunnel the hit path served (replied to): the pipeline taps it from its next request on.
      const p = this.pending.get(id);
      const session = p && p.state === 'hits' ? (this.http?.takeOver(socket, id, counts, false) ?? null) : null;
      if (!p || !session) {
        socket.destroy();
        if (p?.state === 'hits') {
          p.state = 'ended'; // closed meanwhile: takeOver ended the session
          this.pending.delete(id);
        }
        return;
      }
      p.state = 'ended';
      this.pending.delete(id);
      handOver(socks5RepliedTunnel(session, socket, p.dst, this.ctx), this.ctx);
      return;
    }
    if (stage === 2) {
      const p = this.pending.get(id);
      if (!p || p.state !== 'taking') {
        socket.destroy(); // closed while the thread let go of it
        return;
      }
      p.state = 'ended';
      this.pending.delete(id);
      this.host.attach(p.session, socket);
      this.http?.adopt(socket); // a tapped tunnel's hits may be offered to the hit path
      handOver(socks5Tunnel(p.session, socket, 'connect', p.dst, this.ctx), this.ctx);
      return;
    }
    const session = this.host.accept(socket, expired ? timedOut : stage === 1 ? socks5AfterGreeting : this.door);
    if (session && this.http) this.http.adopt(socket);
    // RELIABLE let this source in: its next connections may take the native path.
    if (session && !countsAtAccept(this.ctx.config())) this.listener.approve(session.clientAddress);
  }

  /** The session is closed from outside (admin, shutdown). */
  private abort(id: number): void {
    const p = this.pending.get(id);
    if (!p || p.state === 'ended') return;
    door.abort(id);
    // A spliced tunnel reports its end (done), a tunnel on the hit path too (httpEnd); anything
    // earlier has nothing more to report.
    if (p.state !== 'spliced' && p.state !== 'hits') this.finish(id, p);
  }

  private finish(id: number, p: Pending): void {
    if (p.state === 'ended') return;
    p.state = 'ended';
    this.pending.delete(id);
    this.host.end(p.session);
  }
}
