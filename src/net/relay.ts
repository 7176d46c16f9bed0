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

export interface RelayOptions {
  /** Close both sides after this long with no byte in either direction; 0 = never. */
  idleMs: number;
  /**
   * 'auto' (default): the user-buffer fast path where the socket allows it, pipe() otherwise.
   * 'pipe': always pipe(), for comparison in tests and the benchmark.
   */
  mode?: 'auto' | 'pipe';
}

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
export const relayCounters = { fast: 0, pipe: 0 };

/** Free busy buffers in the pool now (tests, metrics). */
export function relayPoolFree(): number {
  return freeBuffers.length;
}

/** The private parts of a net.Socket the fast path writes to (Node ≥ 12 through 22). */
interface UserBufferSlots {
  buffer: symbol;
  callback: symbol;
  generator: symbol;
}

/** The libuv stream handle's methods the fast path uses (TCPWrap / PipeWrap). */
interface StreamHandle {
  reading: boolean;
  useUserBuffer(buf: Uint8Array): void;
}

let slots: UserBufferSlots | null | undefined;

/** Finds the Socket's `kBuffer`, `kBufferCb`, `kBufferGen` symbols by their descriptions. */
function userBufferSlots(socket: Socket): UserBufferSlots | null {
  if (slots !== undefined) return slots;
  const found = new Map<string, symbol>();
  for (const sym of Object.getOwnPropertySymbols(socket)) {
    if (sym.description) found.set(sym.description, sym);
  }
  const buffer = found.get('kBuffer');
  const callback = found.get('kBufferCb');
  const generator = found.get('kBufferGen');
  slots = buffer && callback && generator ? { buffer, callback, generator } : null;
  return slots;
}

/** The socket's handle when the user-buffer fast path can read from it, else null. */
function fastHandle(socket: Socket): StreamHandle | null {
  // `_handle` is not in the typings; it is the libuv wrap every net.Socket has while open.
  const handle = (socket as unknown as { _handle?: unknown })._handle as Partial<StreamHandle> | null | undefined;
  if (!handle || typeof handle.useUserBuffer !== 'function') return null;
  // A TLSSocket's handle is a TLSWrap: its reads are decrypted bytes with their own buffering.
  if ('encrypted' in socket) return null;
  const name = (handle as object).constructor?.name;
  if (name !== 'TCP' && name !== 'Pipe') return null;
  if (!userBufferSlots(socket)) return null;
  // Somebody else already reads this socket through onread: leave it alone.
  const own = socket as unknown as Record<symbol, unknown>;
  if (own[slots!.buffer]) return null;
  return handle as StreamHandle;
}

/** One direction of the tunnel: reads `src`, writes `dst`. */
class Direction {
  bytes = 0;
  /** Reads since the last idle sweep, to find silent directions that still hold a lease. */
  reads = 0;
  /** The buffer the next read lands in: the shared idle buffer or `lease`. */
  next: Buffer = idleBuffer;
  /** Exclusive busy buffer, while this direction holds one. */
  lease: Buffer | null = null;
  /** Reading is stopped until the pending write completes. */
  waiting = false;
  handle: StreamHandle | null = null;

  constructor(
    readonly src: Socket,
    readonly dst: Socket,
  ) {}

  /** The user-buffer read callback: `buf` is the buffer the bytes landed in. */
  readonly onRead = (nread: number, buf: Buffer): boolean => {
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
    if (busy) {
      this.next = this.lease!;
    } else {
      this.next = idleBuffer;
    }
    if (this.dst.writableLength === 0) {
      // Written synchronously: the lease is free again.
      if (!busy) this.releaseLease();
      return true;
    }
    // The write is pending and points into the lease: stop reading until it completes.
    this.waiting = true;
    return false;
  };

  /** The `kBufferGen` function: where the next read lands. */
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
      own[slots!.buffer] = idleBuffer;
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
    const s = slots!;
    own[s.buffer] = idleBuffer;
    own[s.callback] = this.onRead;
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
    this.src.on('data', (chunk: Buffer) => {
      this.bytes += chunk.length;
    });
    // 'end' is forwarded by the relay itself, as in the fast path.
    this.src.pipe(this.dst, { end: false });
  }

  private drainBuffered(): void {
    let chunk: Buffer | null;
    while (this.src.readableLength > 0 && (chunk = this.src.read() as Buffer | null) !== null) {
      this.bytes += chunk.length;
      this.dst.write(chunk);
    }
  }
}

export function relay(client: Socket, server: Socket, options: RelayOptions): Promise<RelayResult> {
  return new Promise((resolve) => {
    const up = new Direction(client, server);
    const down = new Direction(server, client);
    let result = 'ok';
    let open = 2;
    let timer: NodeJS.Timeout | null = null;
    let torn = false;

    const settle = (): void => {
      if (timer) clearInterval(timer);
      timer = null;
      // Both handles are closed: no write can still point into a lease.
      up.releaseLease();
      down.releaseLease();
      resolve({ up: up.bytes, down: down.bytes, result });
    };
    const teardown = (): void => {
      if (torn) return;
      torn = true;
      if (timer) clearInterval(timer);
      timer = null;
      client.destroy();
      server.destroy();
    };
    const onClose = (socket: Socket, other: Socket) => (): void => {
      // A socket that closed after both its halves ended leaves the other to flush its own
      // pending writes and close by itself (it has received its FIN already); any other close
      // (error, reset, destroy from outside) takes the other side down with it.
      if (!(socket.readableEnded && socket.writableFinished) || other.readableEnded === false) teardown();
      if (--open === 0) settle();
    };
    const onError = (err: NodeJS.ErrnoException): void => {
      if (result === 'ok') result = err.code ?? 'EUPSTREAM';
    };

    for (const [socket, other] of [
      [client, server],
      [server, client],
    ] as const) {
      socket.on('error', onError);
      // Half-close needs the socket to stay writable after its peer's FIN (a socket made
      // without allowHalfOpen would end itself and cut off the reply).
      socket.allowHalfOpen = true;
      if (socket.closed || socket.destroyed) {
        open--;
        continue;
      }
      socket.once('close', onClose(socket, other));
    }
    if (open < 2) {
      if (result === 'ok') result = 'EUPSTREAM';
      teardown();
      if (open === 0) settle();
      return;
    }

    // FIN is forwarded only once everything read before it was written (end() queues behind).
    const forwardEnd = (dst: Socket) => (): void => {
      if (!dst.destroyed) dst.end();
    };
    client.once('end', forwardEnd(server));
    server.once('end', forwardEnd(client));

    const pipeOnly = options.mode === 'pipe';
    for (const dir of [up, down]) {
      if (pipeOnly || !dir.startFast()) dir.startPipe();
    }
    // A side that ended before the relay started has no 'end' event left to forward.
    if (client.readableEnded) forwardEnd(server)();
    if (server.readableEnded) forwardEnd(client)();

    // Sample the counters instead of resetting a timer per chunk.
    const idleMs = options.idleMs > 0 ? options.idleMs : 0;
    const tick = idleMs > 0 ? Math.max(250, Math.min(idleMs / 4, RECLAIM_TICK_MS)) : RECLAIM_TICK_MS;
    let lastUp = 0;
    let lastDown = 0;
    let idleSince = Date.now();
    timer = setInterval(() => {
      up.reclaimIfSilent();
      down.reclaimIfSilent();
      if (up.bytes !== lastUp || down.bytes !== lastDown) {
        lastUp = up.bytes;
        lastDown = down.bytes;
        idleSince = Date.now();
      } else if (idleMs > 0 && Date.now() - idleSince >= idleMs) {
        if (result === 'ok') result = 'idle';
        teardown();
      }
    }, tick);
    timer.unref();
  });
}
