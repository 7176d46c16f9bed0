/**
 * The native accept path's JavaScript side: a SOCKS listener's descriptor is given to the splice
 * relay thread (native/door_*.c), which accepts, reads the SOCKS5 greeting and request itself
 * and asks here what to do with each CONNECT: dial it and splice it (nothing of the connection
 * then runs in JavaScript but the decision and the record), refuse it, or take it over as a
 * JavaScript socket. Everything else arrives here as a socket too, with the bytes the thread read,
 * at the stage it reached (see `HandoffStage`). frontdoors/native-socks.ts decides; this module
 * only speaks to the addon.
 *
 * A decision to dial may be remembered for a while (`door.connect`'s rememberMs): the thread then
 * dials the same source's same CONNECT at once and only tells JavaScript, through `request` with
 * the tunnel's live counts. A listener forgets them at a reload and on `forget()`.
 */
import { closeSync } from 'node:fs';
import net, { type Socket } from 'node:net';
import { native } from './addon.js';
import { nativeHitStats } from './hits.js';
import { initSplice, watchSplicedTunnel, type SpliceResult } from './splice.js';

/** May answer "no authentication" itself (no AUTHORIZER on this listener). */
export const DOOR_NOAUTH = 1;
/** An HTTP listener whose approved connections go to the native hit path (native/hit.h). */
export const DOOR_HTTP = 2;
/** An auto listener whose connections starting GET or HEAD go to the native hit path. */
export const DOOR_HTTP_AUTO = 4;

/**
 * Where the thread let go of a connection handed over: 0 nothing answered (the bytes are the
 * client's first), 1 the greeting answered with "no authentication" (the bytes start at the
 * request), 2 a CONNECT request read and announced through `request` (no bytes), 3 HTTP requests
 * answered by the hit path, announced through `hits` (the bytes start at the next request), 4 a
 * CONNECT given to the hit path by `door.tapHttp` (replied to; the bytes start at a request).
 */
export type HandoffStage = 0 | 1 | 2 | 3 | 4;

/** One request the native hit path answered (native/hit_machine.c packs them). */
export interface NativeHit {
  /** The connection, as the door's ids. */
  id: number;
  /** The object answered (native/hits.ts publish). */
  handle: number;
  status: number;
  head: boolean;
  /** Bytes written: head and body. */
  bytes: number;
  /** When the response was written (ms since the epoch), and how long after its head was read. */
  timeMs: number;
  elapsedMs: number;
  userAgent?: string;
  referer?: string;
  /** The connection's first hit: who it is, and when it was accepted. */
  first?: { peer: string; peerPort: number; acceptedMs: number };
}

export interface DoorEvents {
  /**
   * A SOCKS5 CONNECT: answer with connect(), reply() or take(). With `remembered` (the tunnel's
   * live [up, down] counts) the thread is already dialing it on a remembered decision: no answer
   * is wanted, and established() or failed() follows.
   */
  request(id: number, host: string, port: number, peer: string, peerPort: number, remembered: Float64Array | null, acceptedMs: number): void;
  /**
   * The connection is a JavaScript socket from now on (paused; the bytes read are unshifted).
   * Stage 3: `counts` are the bytes the hit path read and wrote on it.
   */
  handoff(socket: Socket, stage: HandoffStage, id: number, expired: boolean, counts: Float64Array | null): void;
  /** Requests the native hit path answered on this listener's connections. */
  hits?(hits: readonly NativeHit[]): void;
  /** A connection of the hit path with hits is over: [read, written] bytes; reason null when the client closed it. */
  httpEnd?(id: number, counts: Float64Array, reason: string | null): void;
  /** connect()'s dial (or a remembered decision's) failed with this errno name; answer again. */
  failed(id: number, code: string): void;
  /** Replied to and spliced; done() follows. */
  established(id: number): void;
  /** The tunnel's end, as the splice relay reports every tunnel's. */
  done(id: number, r: SpliceResult): void;
  /** The client went away before its reply. */
  gone(id: number, reason: string): void;
  /** accept() failed (EMFILE...): the thread waits 250 ms before it accepts again. */
  acceptError(reason: string): void;
}

interface DoorAddon {
  doorInit(onEvent: (...args: EventArgs) => void): void;
  doorListen(fd: number, flags: number, handshakeMs: number): number;
  doorConfigure(id: number, flags: number, handshakeMs: number): void;
  doorApprove(id: number, address: string): void;
  doorClose(id: number): void;
  doorConnect(id: number, address: string, port: number, timeoutMs: number, idleMs: number, counts: Float64Array, rememberMs: number): void;
  doorForget(id: number): void;
  doorReply(id: number, rep: number): void;
  doorTake(id: number): void;
  doorTapHttp(id: number, firstRequestMs: number): void;
  doorAbort(id: number): void;
  doorStats(): Omit<NativeDoorStats, 'hits'>;
}

/**
 * The thread's figures: listeners, handshakes under way, connections accepted, handed to
 * JavaScript, dialed on a remembered decision; HTTP requests the hit path answered (native/hits.ts).
 */
export interface NativeDoorStats {
  listeners: number;
  handshakes: number;
  accepted: number;
  handedOff: number;
  remembered: number;
  hits: number;
}

type EventArgs = [
  kind: number,
  id: number,
  doorId: number,
  host: string | null,
  port: number,
  peer: string,
  peerPort: number,
  fd: number,
  stage: number,
  bytes: Buffer | null,
  reason: string | null,
  counts: Float64Array | null,
  acceptedMs: number,
];

const addon: DoorAddon | null =
  native && typeof (native as unknown as Partial<DoorAddon>).doorListen === 'function' ? (native as unknown as DoorAddon) : null;

let initialised = false;
const listeners = new Map<number, DoorEvents>();
/**
 * Keeps the process alive while the thread listens, as an open server does (the thread's
 * callback queue must not: it is unref'd so finished tunnels never hold the process).
 */
let keepAlive: NodeJS.Timeout | null = null;

function holdProcess(): void {
  if (listeners.size > 0) keepAlive ??= setInterval(() => {}, 1 << 30);
  else if (keepAlive) {
    clearInterval(keepAlive);
    keepAlive = null;
  }
}
/** Connection id → its listener's events, from the request until the end. */
const owners = new Map<number, DoorEvents>();
/** Connection id → its listener's events, for the hit path's connections with hits. */
const hitOwners = new Map<number, DoorEvents>();

/** A connection of the hit path has a session in JavaScript now (its first hit): its end is this listener's. */
export function ownHitConnection(id: number, events: DoorEvents): void {
  hitOwners.set(id, events);
}

export function nativeDoorAvailable(): boolean {
  return addon !== null;
}

export function nativeDoorStats(): NativeDoorStats {
  const hits = nativeHitStats().served;
  return addon ? { ...addon.doorStats(), hits } : { listeners: 0, handshakes: 0, accepted: 0, handedOff: 0, remembered: 0, hits };
}

/** A connection's descriptor as a paused JavaScript socket, with the bytes already read put back. */
function adoptFd(fd: number, bytes: Buffer | null): Socket {
  const socket = new net.Socket({ fd, readable: true, writable: true, allowHalfOpen: true, pauseOnCreate: true } as net.SocketConstructorOpts);
  socket.setNoDelay(true);
  if (bytes && bytes.length > 0) socket.unshift(bytes);
  return socket;
}

/** The hit path's batch (native/hit_machine.c `report`), by listener. */
function unpackHits(b: Buffer): Map<number, NativeHit[]> {
  const byDoor = new Map<number, NativeHit[]>();
  const le = true;
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  let o = 0;
  while (o + 40 <= b.length) {
    const id = v.getUint32(o, le);
    const door = v.getUint32(o + 4, le);
    const hit: NativeHit = {
      id,
      handle: v.getUint32(o + 8, le),
      status: v.getUint16(o + 12, le),
      head: b[o + 14] === 1,
      bytes: v.getUint32(o + 16, le),
      timeMs: v.getFloat64(o + 20, le),
      elapsedMs: v.getFloat64(o + 28, le),
    };
    const first = b[o + 15] === 1;
    const nua = v.getUint16(o + 36, le);
    const nref = v.getUint16(o + 38, le);
    o += 40;
    if (first) {
      const np = b[o]!;
      hit.first = { peer: b.toString('latin1', o + 1, o + 1 + np), peerPort: v.getUint16(o + 1 + np, le), acceptedMs: v.getFloat64(o + 3 + np, le) };
      o += 11 + np;
    }
    if (nua > 0) hit.userAgent = b.toString('latin1', o, o + nua);
    if (nref > 0) hit.referer = b.toString('latin1', o + nua, o + nua + nref);
    o += nua + nref;
    let list = byDoor.get(door);
    if (!list) byDoor.set(door, (list = []));
    list.push(hit);
  }
  return byDoor;
}

function onEvent(...[kind, id, doorId, host, port, peer, peerPort, fd, stage, bytes, reason, counts, acceptedMs]: EventArgs): void {
  if (kind === 7) {
    if (bytes) for (const [door, hits] of unpackHits(bytes)) listeners.get(door)?.hits?.(hits);
    return;
  }
  if (kind === 8) {
    hitOwners.get(id)?.httpEnd?.(id, counts ?? new Float64Array(2), reason);
    hitOwners.delete(id);
    return;
  }
  if (kind === 2) {
    const events = listeners.get(doorId);
    if (!events) {
      closeSync(fd); // the listener closed meanwhile: nobody serves this connection
      return;
    }
    if (stage === 2) owners.delete(id);
    if (stage === 3 || stage === 4) hitOwners.delete(id);
    if (stage === 4) owners.delete(id);
    events.handoff(adoptFd(fd, bytes), stage as HandoffStage, id, reason === 'handshake-timeout', counts);
    return;
  }
  if (kind === 6) {
    listeners.get(doorId)?.acceptError(reason ?? 'accept failed');
    return;
  }
  const events = kind === 1 ? listeners.get(doorId) : owners.get(id);
  if (!events) return;
  switch (kind) {
    case 1:
      owners.set(id, events);
      events.request(id, host ?? '', port, peer, peerPort, stage === 1 ? counts : null, acceptedMs);
      break;
    case 3:
      events.failed(id, reason ?? 'EUPSTREAM');
      break;
    case 4:
      watchSplicedTunnel(id, (r) => {
        owners.delete(id);
        events.done(id, r);
      });
      events.established(id);
      break;
    case 5:
      owners.delete(id);
      events.gone(id, reason ?? 'client-gone');
      break;
  }
}

/** One listener served by the thread. */
export class NativeListener {
  /** The listener's id in the thread (hit grants name it). */
  readonly id: number;
  private readonly approved = new Set<string>();
  private closed = false;

  /** `fd` is the listening socket's; the thread works on a duplicate, so the caller may close its own. */
  constructor(fd: number, flags: number, handshakeMs: number, events: DoorEvents) {
    if (!addon || !initSplice()) throw new Error('the native accept path is not available');
    if (!initialised) {
      addon.doorInit(onEvent);
      initialised = true;
    }
    this.id = addon.doorListen(fd, flags, handshakeMs);
    listeners.set(this.id, events);
    holdProcess();
  }

  /** New settings (a reload): every source must be approved again, every decision made again. */
  configure(flags: number, handshakeMs: number): void {
    if (this.closed) return;
    this.approved.clear();
    addon!.doorConfigure(this.id, flags, handshakeMs);
  }

  /** Drop the remembered decisions: the next CONNECTs are decided again. */
  forget(): void {
    if (!this.closed) addon!.doorForget(this.id);
  }

  /** Connections from this address take the native path (its RELIABLE check passed). */
  approve(address: string): void {
    if (this.closed || this.approved.has(address) || net.isIP(address) === 0) return;
    this.approved.add(address);
    addon!.doorApprove(this.id, address);
  }

  /** Stop accepting; connections already accepted go on. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    listeners.delete(this.id);
    holdProcess();
    addon!.doorClose(this.id);
  }
}

/** The answers to `request` (and to `failed`). */
export const door = {
  /** Dial `address`; once it answers, the thread may dial this CONNECT again on its own for `rememberMs`. */
  connect(id: number, address: string, port: number, timeoutMs: number, idleMs: number, counts: Float64Array, rememberMs: number): void {
    addon!.doorConnect(id, address, port, timeoutMs, idleMs, counts, rememberMs);
  },
  /** The SOCKS5 failure reply `rep`, or none when negative, then close. */
  reply(id: number, rep: number): void {
    owners.delete(id);
    addon!.doorReply(id, rep);
  },
  take(id: number): void {
    addon!.doorTake(id);
  },
  /**
   * Reply success and let the hit path serve the tunnel's HTTP requests (a cache-first HTTP tap):
   * hits and httpEnd follow for it, or a handoff at stage 4.
   */
  tapHttp(id: number, firstRequestMs: number, events: DoorEvents): void {
    owners.delete(id);
    hitOwners.set(id, events);
    addon!.doorTapHttp(id, firstRequestMs);
  },
  /** End a connection (before or after its reply) now. */
  abort(id: number): void {
    owners.delete(id);
    // A hit path connection's end still comes (httpEnd), to its owner.
    addon!.doorAbort(id);
  },
};
