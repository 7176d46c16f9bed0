/**
 * The HTTP side of a native listener (an http door, or an auto door's GET and HEAD connections):
 * what the relay thread's hit path (native/hit_*.c) may answer, and the records of what it did.
 *
 * The thread answers a request only with a grant from here, and a grant only repeats an answer
 * JavaScript gave: the HTTP door's request for exactly that absolute-form target, from that
 * source, served by serveStored() as a plain fresh hit from the memory tier (`offer`). The head
 * the thread writes is the one Node wrote for it, Age apart; so a native hit and a JavaScript hit
 * are the same bytes. A grant lasts at most GRANT_MS and never past the entry's freshness; the
 * entry's change drops it (native/hits.ts), and so do a reload and every forgetting of remembered
 * plans (pipeline/plan-memory.ts). Nothing is granted while the configuration has anything that
 * could answer the same request differently another time or for another user: accounts, IDENT,
 * MOUNT, header rules, BANDWIDTH, QUOTA, time windows, MAXIMA counted at accept, PROXYPROTOCOL
 * (`nativeHitsAllowed`).
 *
 * Each hit the thread reports becomes the access.log record, metrics and session counts a
 * JavaScript hit makes (TCP_MEM_HIT), and touches the entry's recency. A connection's first hit
 * opens its session (MAXIMA's checkpoint as for a native CONNECT); its end or its handing over to
 * JavaScript (at a request boundary, stage 3) carries the session on.
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { Socket } from 'node:net';
import type { Config } from '../config/types.js';
import type { Session } from '../core/session.js';
import type { AccessRecord } from '../observe/events.js';
import { door, ownHitConnection, type DoorEvents, type NativeHit } from '../native/door.js';
import { hitObjects } from '../native/hits.js';
import { setHitPublisher, type HitOffer, type HitPublisher } from '../http1/hit-offer.js';
import { writtenHead } from '../http1/access.js';
import type { DoorContext } from './door.js';

/** How long a grant holds at most (a source's next JavaScript hit of the target renews it). */
const GRANT_MS = 60_000;
/** A grant is renewed by a JavaScript hit only once less than this is left of it. */
const RENEW_MS = 30_000;
/** Grants remembered per listener (to renew, not repeat); past it they are forgotten and made again. */
const GRANTS_MAX = 8192;

/** Request fields that keep a request off the native path (native/hit_wire.c refuses them too). */
const REFUSED_FIELDS = [
  'cache-control',
  'pragma',
  'if-match',
  'if-none-match',
  'if-modified-since',
  'if-unmodified-since',
  'if-range',
  'range',
  'authorization',
  'proxy-authorization',
  'content-length',
  'transfer-encoding',
  'expect',
  'upgrade',
];

const allowedFor = new WeakMap<Config, boolean>();

/** Whether nothing in this configuration could answer a plain hit differently for another request (see the module comment). */
export function nativeHitsAllowed(config: Config): boolean {
  let ok = allowedFor.get(config);
  if (ok !== undefined) return ok;
  const m = config.maxima;
  const headerRules = config.httpHeaders !== undefined && (config.httpHeaders.request.set.length > 0 || config.httpHeaders.request.remove.length > 0 || config.httpHeaders.response.set.length > 0 || config.httpHeaders.response.remove.length > 0);
  ok =
    config.cache.enabled &&
    config.cache.mem > 0 &&
    config.accounts === null &&
    !config.ident &&
    config.proxyProtocol === undefined &&
    config.mounts.length === 0 &&
    !headerRules &&
    config.limits.bandwidth.length === 0 &&
    config.limits.quota.length === 0 &&
    config.userWindows === undefined &&
    m.conn === 0 &&
    m.persrc === 0 &&
    (m.perdoor ?? 0) === 0 &&
    config.rules.every((r) => r.when === undefined) &&
    config.taps.every(
      (t) =>
        (t.set.mounts?.length ?? 0) === 0 &&
        (t.set.bandwidth?.length ?? 0) === 0 &&
        (t.set.quota?.length ?? 0) === 0 &&
        (t.set.rules ?? []).every((r) => r.when === undefined),
    );
  allowedFor.set(config, ok);
  return ok;
}

function plainRequest(headers: IncomingHttpHeaders): boolean {
  for (const name of REFUSED_FIELDS) if (headers[name] !== undefined) return false;
  const c = headers.connection;
  return c === undefined || c.toLowerCase() === 'keep-alive';
}

/** What the listener needs from the proxy: sessions for connections that only the thread served. */
export interface HitSessions {
  admit(peer: string, peerPort: number, startMs: number): Session | null;
  attach(session: Session, socket: Socket, carried: Float64Array | null): void;
  end(session: Session): void;
}

export class NativeHttp implements HitPublisher {
  private readonly sessions = new Map<number, Session>();
  private readonly granted = new Map<string, { handle: number; expires: number }>();

  constructor(
    private readonly doorId: number,
    private readonly ctx: DoorContext,
    private readonly host: HitSessions,
    private readonly events: DoorEvents,
  ) {}

  /** A socket of this listener handed to JavaScript: its hits may be offered here. */
  adopt(socket: Socket): void {
    setHitPublisher(socket, this);
  }

  /** A reload or a forgetting of plans: every grant is made again. */
  forget(): void {
    this.granted.clear();
  }

  offer(o: HitOffer): void {
    const now = Date.now();
    const config = this.ctx.config();
    const url = o.req.url ?? '';
    if (!nativeHitsAllowed(config) || o.session.user !== null || o.freshUntil <= now) return;
    if (o.req.httpVersion !== '1.1' || (o.req.method !== 'GET' && o.req.method !== 'HEAD') || !plainRequest(o.req.headers)) return;
    if (url.length > 2048) return;
    let target: string;
    if (o.tunnel) {
      // A tapped tunnel's origin-form request: named by the CONNECT's destination and the Host (native/hit.h).
      const host = o.req.headers.host;
      if (host === undefined || !/^[\x21-\x7e]{1,255}$/.test(host) || !/^\/[\x21-\x7e]*$/.test(url)) return;
      target = `T ${o.tunnel.host}:${o.tunnel.port} ${host} ${url}`;
    } else {
      if (!/^http:\/\/[\x21-\x7e]+$/.test(url)) return;
      target = url;
    }
    let published = hitObjects.find(o.source, o.entryId, o.freshUntil);
    if (!published) {
      const head = writtenHead(o.res);
      if (head === null) return;
      const at = head.lastIndexOf('\r\nage: ');
      const valueEnd = at < 0 ? -1 : head.indexOf('\r\n', at + 7);
      // The head Node wrote for a keep-alive HTTP/1.1 hit, with the stored Date (never a Date Node made now).
      if (valueEnd < 0 || head.slice(at + 7, valueEnd) !== o.age || !/\r\nconnection: keep-alive\r\n/i.test(head) || !/\r\ndate: /i.test(head)) return;
      if (/\r\ntransfer-encoding: /i.test(head)) return;
      published = hitObjects.publish(
        {
          source: o.source,
          entryId: o.entryId,
          status: o.status,
          pre: Buffer.from(head.slice(0, at + 7), 'latin1'),
          post: Buffer.from(head.slice(valueEnd), 'latin1'),
          body: o.body.length > 0 ? o.body : null,
          freshUntil: o.freshUntil,
          ageOriginMs: o.ageOriginMs,
          url: o.url,
          contentType: o.contentType,
          dst: o.dst,
        },
        config.cache.mem,
      ) ?? undefined;
      if (!published) return;
    }
    // A HEAD is granted apart from a GET of the same target: a request rule may name one method (http/head).
    if (o.req.method === 'HEAD') target = `HEAD ${target}`;
    const key = `${o.session.clientAddress} ${target}`;
    const had = this.granted.get(key);
    if (had && had.handle === published.handle && had.expires - now > RENEW_MS) return;
    const expires = Math.min(o.freshUntil, now + GRANT_MS);
    if (this.granted.size >= GRANTS_MAX) this.granted.clear();
    this.granted.set(key, { handle: published.handle, expires });
    hitObjects.grant(this.doorId, o.session.clientAddress, target, published, expires);
  }

  /** The thread's answers: access records, session counts, the entries' recency. */
  hits(list: readonly NativeHit[]): void {
    for (const h of list) {
      let session = this.sessions.get(h.id);
      if (!session) {
        if (!h.first) continue; // its session was closed meanwhile (the thread is told)
        const opened = this.host.admit(h.first.peer, h.first.peerPort, h.first.acceptedMs);
        if (!opened) {
          door.abort(h.id);
          continue;
        }
        session = opened;
        session.frontProtocol = 'http';
        session.command = 'http';
        session.proto = 'http';
        this.sessions.set(h.id, session);
        ownHitConnection(h.id, this.events);
        const id = h.id;
        session.onClose(() => {
          // Closed from outside (admin, shutdown): the thread ends the connection, and its httpEnd ends the session.
          if (this.sessions.has(id)) door.abort(id);
        });
      }
      const o = hitObjects.get(h.handle);
      if (!session.dst && o) session.dst = o.dst;
      const section = (session.sections.http ??= { requests: 0 }) as { requests: number };
      section.requests++;
      const record: AccessRecord = {
        time: h.timeMs,
        elapsedMs: Math.round(h.elapsedMs),
        clientAddress: session.clientAddress,
        method: h.head ? 'HEAD' : 'GET',
        user: null,
        sessionId: session.id,
        resultCode: 'TCP_MEM_HIT',
        status: h.status,
        bytes: h.bytes,
        url: o?.url ?? '-',
        hierarchy: 'HIER_NONE/-',
        contentType: o?.contentType ?? '-',
        httpVersion: '1.1',
      };
      if (h.referer) record.referer = h.referer;
      if (h.userAgent) record.userAgent = h.userAgent;
      this.ctx.events.emit('access', record);
      if (o) o.source.noteHit(o.entryId);
    }
  }

  /** A connection with hits ended on the thread. */
  httpEnd(id: number, counts: Float64Array, reason: string | null): void {
    const session = this.sessions.get(id);
    if (!session) return;
    this.sessions.delete(id);
    session.bytesUp = counts[0]!;
    session.bytesDown = counts[1]!;
    if (reason && reason !== 'aborted') session.settle(reason);
    this.host.end(session);
  }

  /**
   * A connection with hits handed over at a request boundary (stage 3, or 4 for a tunnel): its
   * session goes on with the socket; the bytes the thread moved are counted in (`carried` for a
   * session whose counts are its socket's, else added now).
   */
  takeOver(socket: Socket, id: number, counts: Float64Array | null, carried: boolean): Session | null {
    const session = this.sessions.get(id);
    if (!session) {
      socket.destroy(); // closed meanwhile
      return null;
    }
    this.sessions.delete(id);
    if (session.isClosed) {
      // Closed from outside while the thread was letting go of it: no httpEnd will come, so it ends here.
      socket.destroy();
      if (counts) {
        session.countUp(counts[0]!);
        session.countDown(counts[1]!);
      }
      this.host.end(session);
      return null;
    }
    this.adopt(socket);
    if (!carried && counts) {
      session.countUp(counts[0]!);
      session.countDown(counts[1]!);
    }
    this.host.attach(session, socket, carried ? counts : null);
    return session;
  }

  /** A tunnel given to the hit path (door.tapHttp): its session is the CONNECT's. */
  track(id: number, session: Session): void {
    session.proto = 'http';
    this.sessions.set(id, session);
  }

  /** The listener is closing: connections the thread still serves end with it (their sessions are closed by the proxy). */
  close(): void {
    this.granted.clear();
  }
}
