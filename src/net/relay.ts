/**
 * Two-way relay between the client socket and the server socket: byte counts, half-close
 * honoured (a side that ends its sending half still receives everything), an idle timeout, and
 * both sides torn down together. No per-chunk allocation or logging.
 *
 * Fast path (the default for plain TCP sockets): each direction reads through Node's `onread`
 * user-buffer mode instead of allocating a fresh buffer per read. Read size is what decides
 * throughput in JavaScript (docs/performance.md: 256 KiB reads ≈1.5× Dante, pipe() ≈0.96×), but
 * a 256 KiB buffer per socket would cost 5 GiB at 10,000 idle tunnels. So:
 *
 *  - every idle socket reads into ONE process-wide buffer (`idleBuffer`). Its bytes are always
 *    copied out inside the read callback, so no pending write ever points into it and any socket
 *    may read into it at any time;
 *  - a direction whose reads fill that buffer is busy: it leases an exclusive 256 KiB buffer from
 *    a small pool, reads straight into it and writes from it without copying, and gives it back
 *    after a short read (or when the tunnel falls silent holding it);
 *  - a leased buffer may be refilled only after the write of its previous contents completed, so
 *    a write that does not complete at once stops reading until its callback (back-pressure).
 *
 * Node 20 applies `onread` only to sockets it creates itself; accepted sockets are switched over
 * here through the Socket's own `kBuffer*` slots and the handle's `useUserBuffer()`, exactly what
 * Node does for `net.connect({ onread })`. When those internals are missing (another Node
 * version, a TLS socket, a non-TCP handle), the relay falls back to pipe() per direction.
 */
import type { Socket } from 'node:net';
import type { TokenBucket } from './throttle.js';
import { fastHandle, userBufferSlots, type StreamHandle } from '../native/internals.js';
import { spliceRelay } from '../native/splice.js';

/**
 * Shaping and metering of one direction (BANDWIDTH=, QUOTA=): only a direction that has one goes
 * through the metered path (data events, pause/resume); the other keeps the fast path.
 */
export interface DirectionShape {
  /** Every bucket that covers this direction (connection, user, source, door, all). */
  buckets: readonly TokenBucket[];
  /** Called with each chunk's size after it was written; false ends the tunnel (quota used up). */
  count?: (bytes: number) => boolean;
}

export interface RelayShape {
  up?: DirectionShape | null;
  down?: DirectionShape | null;
  /** The result recorded when a `count` ends the tunnel; default 'EQUOTA'. */
  cutResult?: string;
}

export interface RelayOptions {
  /** Close both sides after this long with no byte in either direction; 0 = never. */
  idleMs: number;
  /**
   * 'splice' (default): the native splice thread (native/splice.ts) when the addon has it and both
   * sockets qualify, else as 'fast'. 'fast' (RELAY=js): the user-buffer fast path where the
   * socket allows it, else pipe(). 'pipe': always pipe(), for comparison in tests and the bench.
   */
  mode?: RelayMode;
  /** Shaping/metering per direction; absent (the usual case) = nothing but the fast relay. */
  shape?: RelayShape;
}

export type RelayMode = 'splice' | 'fast' | 'pipe';

export interface RelayResult {
  /** client → server bytes */
  up: number;
  /** server → client bytes */
  down: number;
  /** 'ok' when both sides ended cleanly, 'idle' on idle timeout, or an error code. */
  result: string;
}

/** Size of the process-wide buffer idle sockets read into; a read that fills it means "busy". */
export const IDLE_READ_SIZE = 64 * 1024;
/** Size of the buffers leased to busy directions. */
export const BUSY_READ_SIZE = 256 * 1024;
/** Free busy buffers kept for reuse (8 MiB); more are left to the garbage collector. */
const POOL_KEEP = 32;
/** How often a silent tunnel is checked when no idle timeout is set (lease reclaim only). */
const RECLAIM_TICK_MS = 30_000;

const idleBuffer = Buffer.allocUnsafeSlow(IDLE_READ_SIZE);
const freeBuffers: Buffer[] = [];

function leaseBuffer(): Buffer {
  return freeBuffers.pop() ?? Buffer.allocUnsafeSlow(BUSY_READ_SIZE);
}

function returnBuffer(buf: Buffer): void {
  if (freeBuffers.length < POOL_KEEP) freeBuffers.push(buf);
}

/** How many directions took each path since start (tests, metrics): a silent fallback shows. */
export const relayCounters = { splice: 0, fast: 0, pipe: 0, metered: 0 };

/** Free busy buffers in the pool now (tests, metrics). */
export function relayPoolFree(): number {
  return freeBuffers.length;
}

/** The private parts of a net.Socket the fast path writes to (Node ≥ 12 through 22). */
/** The direction that reads a socket, kept on the socket so shared listeners find their state. */
const kReadDirection = Symbol('sockstap.relay.readDirection');
type RelaySocket = Socket & { [kReadDirection]?: Direction };

/** One direction of the tunnel: reads `src`, writes `dst`. */
class Direction {
  bytes = 0;
  /** Reads since the last sweep, to find silent directions that still hold a lease. */
  reads = 0;
  /** The buffer the next read lands in: the shared idle buffer or `lease`. */
  next: Buffer = idleBuffer;
  /** Exclusive busy buffer, while this direction holds one. */
  lease: Buffer | null = null;
  /** Reading is stopped until the pending write completes. */
  waiting = false;
  handle: StreamHandle | null = null;
  /** Metered path only (BANDWIDTH=/QUOTA=): the shape, and what reading waits for. */
  shape: DirectionShape | null = null;
  private blocked = 0;
  private meterTimer: NodeJS.Timeout | null = null;

  constructor(
    readonly src: Socket,
    readonly dst: Socket,
    readonly tunnel: RelayTunnel,
  ) {
    (src as RelaySocket)[kReadDirection] = this;
  }

  /** The user-buffer read: `buf` is the buffer the bytes landed in. */
  read(nread: number, buf: Buffer): boolean {
    this.bytes += nread;
    this.reads++;
    let out: Buffer;
    if (buf === idleBuffer) {
      // Copy out of the shared buffer at once: a pending write must never point into it.
      this.lease ??= leaseBuffer();
      idleBuffer.copy(this.lease, 0, 0, nread);
      out = this.lease;
    } else {
      out = buf;
    }
    const busy = nread >= IDLE_READ_SIZE;
    this.dst.write(nread === out.length ? out : out.subarray(0, nread), this.onWritten);
    this.next = busy ? this.lease! : idleBuffer;
    if (this.dst.writableLength === 0) {
      // Written synchronously: the lease is free again.
      if (!busy) this.releaseLease();
      return true;
    }
    // The write is pending and points into the lease: stop reading until it completes.
    this.waiting = true;
    return false;
  }

  /** The `kBufferGen` function: where the next read lands (Node calls it without `this`). */
  readonly nextBuffer = (): Buffer => this.next;

  /** Write callback; for synchronous writes it runs later, so it checks what is still pending. */
  readonly onWritten = (err?: Error | null): void => {
    if (!this.waiting || err || this.dst.writableLength !== 0) return;
    this.waiting = false;
    if (this.next === idleBuffer) this.releaseLease();
    if (!this.src.destroyed) this.src.resume();
  };

  releaseLease(): void {
    if (this.lease) {
      returnBuffer(this.lease);
      this.lease = null;
    }
  }

  /** A silent direction gives its lease back; the handle is pointed at the idle buffer again. */
  reclaimIfSilent(): void {
    if (this.reads === 0 && this.lease && !this.waiting && this.next === this.lease && this.handle) {
      const own = this.src as unknown as Record<symbol, unknown>;
      own[userBufferSlots(this.src)!.buffer] = idleBuffer;
      this.next = idleBuffer;
      // Pushes a new stream listener onto the handle (freed when the handle closes); this
      // happens at most once per sweep for a tunnel that fell silent right after a big read.
      this.handle.useUserBuffer(idleBuffer);
      this.releaseLease();
    }
    this.reads = 0;
  }

  /** Switches `src` to user-buffer reads; false if the socket does not allow it. */
  startFast(): boolean {
    const handle = fastHandle(this.src);
    if (!handle) return false;
    this.handle = handle;
    const own = this.src as unknown as Record<symbol, unknown>;
    const s = userBufferSlots(this.src)!;
    own[s.buffer] = idleBuffer;
    own[s.callback] = onUserBufferRead;
    own[s.generator] = this.nextBuffer;
    handle.useUserBuffer(idleBuffer);
    relayCounters.fast++;
    // Bytes that arrived before the relay (e.g. unshifted after the handshake) go first.
    this.drainBuffered();
    this.src.resume();
    return true;
  }

  startPipe(): void {
    relayCounters.pipe++;
    this.drainBuffered();
    this.src.on('data', countPiped);
    // 'end' is forwarded by the relay itself, as in the fast path.
    this.src.pipe(this.dst, { end: false });
  }

  /** The metered path: data events, write, count, then pause while a bucket is in debt or dst is full. */
  startMetered(shape: DirectionShape): void {
    relayCounters.metered++;
    this.shape = shape;
    let chunk: Buffer | null;
    while (this.src.readableLength > 0 && (chunk = this.src.read() as Buffer | null) !== null) this.metered(chunk);
    this.src.on('data', onMeteredData);
    this.src.resume();
  }

  metered(chunk: Buffer): void {
    const n = chunk.length;
    this.bytes += n;
    const writable = this.dst.write(chunk);
    const shape = this.shape!;
    if (shape.count && !shape.count(n)) {
      this.tunnel.cut();
      return;
    }
    let wait = 0;
    for (const b of shape.buckets) {
      const w = b.take(n);
      if (w > wait) wait = w;
    }
    if (writable && wait === 0) return;
    this.src.pause();
    if (!writable) {
      this.blocked++;
      this.dst.once('drain', this.unblock);
    }
    if (wait > 0) {
      this.blocked++;
      this.meterTimer = setTimeout(this.onMeterTimer, wait);
    }
  }

  /**
   * The debt this direction saw when it took has been paid: read again, even if connections that
   * share a bucket took since (their wait covers their own take). Each taker thus waits behind
   * everything taken before it, which is a fair queue, and the rate holds because every take
   * waits out the whole debt it found.
   */
  private readonly onMeterTimer = (): void => {
    this.meterTimer = null;
    this.unblock();
  };

  private readonly unblock = (): void => {
    if (--this.blocked === 0 && !this.src.destroyed) this.src.resume();
  };

  stopMeter(): void {
    if (this.meterTimer) clearTimeout(this.meterTimer);
    this.meterTimer = null;
  }

  private drainBuffered(): void {
    let chunk: Buffer | null;
    while (this.src.readableLength > 0 && (chunk = this.src.read() as Buffer | null) !== null) {
      this.bytes += chunk.length;
      this.dst.write(chunk);
    }
  }
}

// Listeners shared by every tunnel: Node calls them with `this` = the socket, which leads to the
// tunnel's state, so a tunnel costs no closures beyond two per direction (Node calls those without `this`).

function onUserBufferRead(this: RelaySocket, nread: number, buf: Buffer): boolean {
  return this[kReadDirection]!.read(nread, buf);
}

function onMeteredData(this: RelaySocket, chunk: Buffer): void {
  this[kReadDirection]!.metered(chunk);
}

function countPiped(this: RelaySocket, chunk: Buffer): void {
  this[kReadDirection]!.bytes += chunk.length;
}

/** FIN is forwarded only once everything read before it was written (end() queues behind). */
function forwardEnd(this: RelaySocket): void {
  const dst = this[kReadDirection]!.dst;
  if (!dst.destroyed) dst.end();
}

function onRelayError(this: RelaySocket, err: NodeJS.ErrnoException): void {
  const tunnel = this[kReadDirection]!.tunnel;
  if (tunnel.result === 'ok') tunnel.result = err.code ?? 'EUPSTREAM';
}

function onRelayClose(this: RelaySocket): void {
  this[kReadDirection]!.tunnel.closed(this);
}

function sweep(tunnel: RelayTunnel): void {
  tunnel.sweep();
}

class RelayTunnel {
  readonly up: Direction;
  readonly down: Direction;
  result = 'ok';
  private open = 2;
  private timer: NodeJS.Timeout | null = null;
  private torn = false;
  private lastUp = 0;
  private lastDown = 0;
  private idleSince = Date.now();

  constructor(
    readonly client: Socket,
    readonly server: Socket,
    private readonly idleMs: number,
    private readonly resolve: (r: RelayResult) => void,
  ) {
    this.up = new Direction(client, server, this);
    this.down = new Direction(server, client, this);
  }

  /** Set when a shape was given: what a count() that ends the tunnel records. */
  cutResult = 'EQUOTA';

  /** A metered direction's count() said stop (quota used up): end both sides now. */
  cut(): void {
    if (this.result === 'ok') this.result = this.cutResult;
    this.teardown();
  }

  start(mode: RelayOptions['mode'], shape?: RelayShape): void {
    for (const socket of [this.client, this.server]) {
      socket.on('error', onRelayError);
      // Half-close needs the socket to stay writable after its peer's FIN (a socket made
      // without allowHalfOpen would end itself and cut off the reply).
      socket.allowHalfOpen = true;
      if (socket.closed || socket.destroyed) this.open--;
      else socket.once('close', onRelayClose);
    }
    if (this.open < 2) {
      if (this.result === 'ok') this.result = 'EUPSTREAM';
      this.teardown();
      if (this.open === 0) this.settle();
      return;
    }
    this.client.once('end', forwardEnd);
    this.server.once('end', forwardEnd);
    if (shape?.cutResult) this.cutResult = shape.cutResult;
    for (const dir of [this.up, this.down]) {
      const metered = shape ? (dir === this.up ? shape.up : shape.down) : null;
      if (metered) dir.startMetered(metered);
      else if (mode === 'pipe' || !dir.startFast()) dir.startPipe();
    }
    // A side that ended before the relay started has no 'end' event left to forward.
    if (this.client.readableEnded) forwardEnd.call(this.client);
    if (this.server.readableEnded) forwardEnd.call(this.server);

    // Sample the counters instead of resetting a timer per chunk.
    const tick = this.idleMs > 0 ? Math.max(250, Math.min(this.idleMs / 4, RECLAIM_TICK_MS)) : RECLAIM_TICK_MS;
    this.timer = setInterval(sweep, tick, this);
    this.timer.unref();
  }

  sweep(): void {
    this.up.reclaimIfSilent();
    this.down.reclaimIfSilent();
    if (this.up.bytes !== this.lastUp || this.down.bytes !== this.lastDown) {
      this.lastUp = this.up.bytes;
      this.lastDown = this.down.bytes;
      this.idleSince = Date.now();
    } else if (this.idleMs > 0 && Date.now() - this.idleSince >= this.idleMs) {
      if (this.result === 'ok') this.result = 'idle';
      this.teardown();
    }
  }

  /**
   * A socket that closed after both its halves ended leaves the other to flush its own pending
   * writes and close by itself (it has received its FIN already); any other close (error, reset,
   * destroy from outside) takes the other side down with it.
   */
  closed(socket: Socket): void {
    const other = socket === this.client ? this.server : this.client;
    if (!(socket.readableEnded && socket.writableFinished && other.readableEnded)) this.teardown();
    if (--this.open === 0) this.settle();
  }

  private teardown(): void {
    if (this.torn) return;
    this.torn = true;
    this.stopTimer();
    this.client.destroy();
    this.server.destroy();
  }

  private stopTimer(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.up.stopMeter();
    this.down.stopMeter();
  }

  private settle(): void {
    this.stopTimer();
    // Both handles are closed: no write can still point into a lease.
    this.up.releaseLease();
    this.down.releaseLease();
    this.resolve({ up: this.up.bytes, down: this.down.bytes, result: this.result });
  }
}

export function relay(client: Socket, server: Socket, options: RelayOptions): Promise<RelayResult> {
  const mode = options.mode ?? 'splice';
  if (mode === 'splice' && !options.shape) {
    const spliced = spliceRelay(client, server, options.idleMs);
    if (spliced) {
      relayCounters.splice++;
      return spliced;
    }
  }
  return new Promise((resolve) => {
    const idleMs = options.idleMs > 0 ? options.idleMs : 0;
    new RelayTunnel(client, server, idleMs, resolve).start(options.mode, options.shape);
  });
}
